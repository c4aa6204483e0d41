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
}
