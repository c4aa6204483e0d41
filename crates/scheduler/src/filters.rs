//! Host filters: a host passes or not, from its state and the request alone.

use crate::{HostState, RequestSpec};

/// One filter, as upstream's `BaseHostFilter.host_passes`.
pub trait Filter: Send + Sync {
    /// Upstream's class name, as operators list it in `enabled_filters`.
    fn name(&self) -> &'static str;
    fn passes(&self, host: &HostState, spec: &RequestSpec) -> bool;
}

/// Passes hosts whose compute service is enabled and up.
#[derive(Clone, Copy, Debug, Default)]
pub struct ComputeFilter;

impl Filter for ComputeFilter {
    fn name(&self) -> &'static str {
        "ComputeFilter"
    }
    fn passes(&self, host: &HostState, _spec: &RequestSpec) -> bool {
        host.enabled && host.up
    }
}

/// Passes hosts in the requested availability zone (every host when none was requested).
#[derive(Clone, Copy, Debug, Default)]
pub struct AvailabilityZoneFilter;

impl Filter for AvailabilityZoneFilter {
    fn name(&self) -> &'static str {
        "AvailabilityZoneFilter"
    }
    fn passes(&self, host: &HostState, spec: &RequestSpec) -> bool {
        spec.availability_zone.as_deref().is_none_or(|az| host.availability_zone == az)
    }
}

/// With an `anti-affinity` group: passes hosts holding no member of the group (upstream's
/// `max_server_per_host` of 1).
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerGroupAntiAffinityFilter;

impl Filter for ServerGroupAntiAffinityFilter {
    fn name(&self) -> &'static str {
        "ServerGroupAntiAffinityFilter"
    }
    fn passes(&self, host: &HostState, spec: &RequestSpec) -> bool {
        spec.group_policy.as_deref() != Some("anti-affinity") || spec.group_members_on(&host.host) < 1
    }
}

/// With an `affinity` group: passes the hosts of the group's members (any host while none is placed).
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerGroupAffinityFilter;

impl Filter for ServerGroupAffinityFilter {
    fn name(&self) -> &'static str {
        "ServerGroupAffinityFilter"
    }
    fn passes(&self, host: &HostState, spec: &RequestSpec) -> bool {
        spec.group_policy.as_deref() != Some("affinity")
            || spec.group_hosts.is_empty()
            || spec.group_hosts.contains(&host.host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::host;

    #[test]
    fn compute_filter_needs_enabled_and_up() {
        let spec = RequestSpec::default();
        let mut h = host("a", 1, 1, 1);
        assert!(ComputeFilter.passes(&h, &spec));
        h.enabled = false;
        assert!(!ComputeFilter.passes(&h, &spec));
        h.enabled = true;
        h.up = false;
        assert!(!ComputeFilter.passes(&h, &spec));
    }

    #[test]
    fn availability_zone_filter() {
        let h = host("a", 1, 1, 1);
        let mut spec = RequestSpec::default();
        assert!(AvailabilityZoneFilter.passes(&h, &spec));
        spec.availability_zone = Some("nova".into());
        assert!(AvailabilityZoneFilter.passes(&h, &spec));
        spec.availability_zone = Some("az2".into());
        assert!(!AvailabilityZoneFilter.passes(&h, &spec));
        assert_eq!(AvailabilityZoneFilter.name(), "AvailabilityZoneFilter");
    }

    #[test]
    fn server_group_filters() {
        let (a, b) = (host("a", 1, 1, 1), host("b", 1, 1, 1));
        let mut spec = RequestSpec { group_hosts: vec!["a".into()], ..Default::default() };
        // No group, or a soft policy: nothing is filtered.
        for policy in [None, Some("soft-affinity"), Some("soft-anti-affinity")] {
            spec.group_policy = policy.map(str::to_string);
            assert!(ServerGroupAffinityFilter.passes(&b, &spec) && ServerGroupAntiAffinityFilter.passes(&a, &spec));
        }
        spec.group_policy = Some("affinity".into());
        assert!(ServerGroupAffinityFilter.passes(&a, &spec));
        assert!(!ServerGroupAffinityFilter.passes(&b, &spec));
        assert!(ServerGroupAntiAffinityFilter.passes(&a, &spec), "anti-affinity ignores affinity groups");
        spec.group_policy = Some("anti-affinity".into());
        assert!(!ServerGroupAntiAffinityFilter.passes(&a, &spec));
        assert!(ServerGroupAntiAffinityFilter.passes(&b, &spec));
        spec.group_hosts.clear();
        spec.group_policy = Some("affinity".into());
        assert!(ServerGroupAffinityFilter.passes(&b, &spec), "the first member goes anywhere");
        assert_eq!(ServerGroupAffinityFilter.name(), "ServerGroupAffinityFilter");
        assert_eq!(ServerGroupAntiAffinityFilter.name(), "ServerGroupAntiAffinityFilter");
    }
}
