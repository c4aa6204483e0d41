//! Host weighers: a raw weight per host, normalised over the candidates and scaled by a multiplier by the
//! scheduler. Positive multipliers spread instances over hosts, negative ones stack them, as upstream.

use crate::{HostState, RequestSpec};

/// One weigher, as upstream's `BaseHostWeigher`.
pub trait Weigher: Send + Sync {
    fn name(&self) -> &'static str;
    fn multiplier(&self) -> f64;
    /// The raw weight of `host` (more is better before the multiplier).
    fn weigh(&self, host: &HostState, spec: &RequestSpec) -> f64;
}

macro_rules! weigher {
    ($(#[$doc:meta])* $ty:ident, $name:literal, |$h:ident| $raw:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $ty {
            pub multiplier: f64,
        }

        impl $ty {
            pub fn new(multiplier: f64) -> Self {
                Self { multiplier }
            }
        }

        impl Weigher for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn multiplier(&self) -> f64 {
                self.multiplier
            }
            fn weigh(&self, $h: &HostState, _spec: &RequestSpec) -> f64 {
                $raw
            }
        }
    };
}

weigher!(
    /// Free RAM (`ram_weight_multiplier`).
    RamWeigher, "RAMWeigher", |h| h.free_ram_mb()
);
weigher!(
    /// Free vCPUs (`cpu_weight_multiplier`).
    CpuWeigher, "CPUWeigher", |h| h.free_vcpus()
);
weigher!(
    /// Free disk (`disk_weight_multiplier`).
    DiskWeigher, "DiskWeigher", |h| h.free_disk_mb()
);

weigher!(
    /// Minus the builds that failed on the host since its last success (`build_failure_weight_multiplier`,
    /// upstream's default 1000000.0 making such hosts the last choice).
    BuildFailureWeigher, "BuildFailureWeigher", |h| -(h.failed_builds as f64)
);

/// With a `soft-affinity` group: the number of the group's members on the host
/// (`soft_affinity_weight_multiplier`).
#[derive(Clone, Copy, Debug)]
pub struct ServerGroupSoftAffinityWeigher {
    pub multiplier: f64,
}

impl ServerGroupSoftAffinityWeigher {
    pub fn new(multiplier: f64) -> Self {
        Self { multiplier }
    }
}

impl Weigher for ServerGroupSoftAffinityWeigher {
    fn name(&self) -> &'static str {
        "ServerGroupSoftAffinityWeigher"
    }
    fn multiplier(&self) -> f64 {
        self.multiplier
    }
    fn weigh(&self, host: &HostState, spec: &RequestSpec) -> f64 {
        if spec.group_policy.as_deref() == Some("soft-affinity") { spec.group_members_on(&host.host) as f64 } else { 0.0 }
    }
}

/// With a `soft-anti-affinity` group: minus the number of the group's members on the host
/// (`soft_anti_affinity_weight_multiplier`).
#[derive(Clone, Copy, Debug)]
pub struct ServerGroupSoftAntiAffinityWeigher {
    pub multiplier: f64,
}

impl ServerGroupSoftAntiAffinityWeigher {
    pub fn new(multiplier: f64) -> Self {
        Self { multiplier }
    }
}

impl Weigher for ServerGroupSoftAntiAffinityWeigher {
    fn name(&self) -> &'static str {
        "ServerGroupSoftAntiAffinityWeigher"
    }
    fn multiplier(&self) -> f64 {
        self.multiplier
    }
    fn weigh(&self, host: &HostState, spec: &RequestSpec) -> f64 {
        if spec.group_policy.as_deref() == Some("soft-anti-affinity") {
            -(spec.group_members_on(&host.host) as f64)
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::host;

    #[test]
    fn raw_weights_are_free_resources() {
        let h = host("a", 2048, 3, 7);
        let spec = RequestSpec::default();
        assert_eq!(RamWeigher::new(1.0).weigh(&h, &spec), 2048.0);
        assert_eq!(CpuWeigher::new(1.0).weigh(&h, &spec), 3.0);
        assert_eq!(DiskWeigher::new(1.0).weigh(&h, &spec), 7.0 * 1024.0);
        assert_eq!(DiskWeigher::new(-2.0).multiplier(), -2.0);
        assert_eq!(RamWeigher::new(1.0).name(), "RAMWeigher");
    }

    #[test]
    fn build_failures_weigh_hosts_down() {
        let spec = RequestSpec::default();
        let w = BuildFailureWeigher::new(1_000_000.0);
        let mut a = host("a", 2048, 3, 7);
        assert_eq!(w.weigh(&a, &spec), 0.0);
        a.failed_builds = 3;
        assert_eq!(w.weigh(&a, &spec), -3.0);
        assert_eq!((w.name(), w.multiplier()), ("BuildFailureWeigher", 1_000_000.0));
    }

    #[test]
    fn group_weights_count_members_on_the_host() {
        let (a, b) = (host("a", 1, 1, 1), host("b", 1, 1, 1));
        let mut spec = RequestSpec { group_hosts: vec!["a".into(), "a".into()], ..Default::default() };
        let (aff, anti) = (ServerGroupSoftAffinityWeigher::new(1.0), ServerGroupSoftAntiAffinityWeigher::new(1.0));
        assert_eq!((aff.weigh(&a, &spec), anti.weigh(&a, &spec)), (0.0, 0.0), "no group, no weight");
        spec.group_policy = Some("soft-affinity".into());
        assert_eq!((aff.weigh(&a, &spec), aff.weigh(&b, &spec), anti.weigh(&a, &spec)), (2.0, 0.0, 0.0));
        spec.group_policy = Some("soft-anti-affinity".into());
        assert_eq!((anti.weigh(&a, &spec), anti.weigh(&b, &spec), aff.weigh(&a, &spec)), (-2.0, 0.0, 0.0));
        assert_eq!(aff.name(), "ServerGroupSoftAffinityWeigher");
        assert_eq!(anti.name(), "ServerGroupSoftAntiAffinityWeigher");
        assert_eq!(anti.multiplier(), 1.0);
    }
}
