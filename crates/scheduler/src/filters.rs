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
}
