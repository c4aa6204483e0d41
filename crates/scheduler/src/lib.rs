//! The compute scheduler's decision core: filters and weighers as upstream Nova has them, as pure code over a
//! snapshot of host states (no IO), so they are unit-testable and cheap per decision.
//!
//! A decision ([`Scheduler::select`]) runs every configured [`Filter`], then every [`Weigher`]: each weigher's raw
//! weights are normalised to `0.0..=1.0` over the surviving hosts, multiplied by the weigher's multiplier and
//! summed; hosts are ordered by weight, and the pick is random among the best `host_subset_size` (upstream's
//! `[filter_scheduler] host_subset_size`), the rest of the order being the alternates.
//!
//! The placement pre-filter (allocation candidates) and the claim of allocations happen before and after this, in
//! the conductor; hosts given here are the candidates placement returned.

pub mod extra_specs;
pub mod filters;
pub mod weighers;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use filters::{
    AggregateInstanceExtraSpecsFilter, AvailabilityZoneFilter, ComputeCapabilitiesFilter, ComputeFilter, Filter,
    ImagePropertiesFilter, ServerGroupAffinityFilter, ServerGroupAntiAffinityFilter,
};
pub use weighers::{
    BuildFailureWeigher, CpuWeigher, DiskWeigher, RamWeigher, ServerGroupSoftAffinityWeigher,
    ServerGroupSoftAntiAffinityWeigher, Weigher,
};

/// What the scheduler knows about one compute host (one node, one resource provider).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostState {
    pub host: String,
    pub node: String,
    /// The host's resource provider in placement.
    pub provider_uuid: String,
    pub availability_zone: String,
    /// The compute service is not disabled by an operator.
    pub enabled: bool,
    /// The compute service heartbeats recently enough.
    pub up: bool,
    pub vcpus_total: i64,
    pub vcpus_used: i64,
    pub memory_mb_total: i64,
    pub memory_mb_used: i64,
    pub memory_mb_reserved: i64,
    pub disk_gb_total: i64,
    pub disk_gb_used: i64,
    pub disk_gb_reserved: i64,
    pub cpu_allocation_ratio: f64,
    pub ram_allocation_ratio: f64,
    pub disk_allocation_ratio: f64,
    pub num_instances: i64,
    /// The hypervisor as its compute node reports it (`fake`, `QEMU`).
    #[serde(default)]
    pub hypervisor_type: String,
    /// Upstream's integer encoding (`1.2.3` is 1002003).
    #[serde(default)]
    pub hypervisor_version: i64,
    /// The compute node's `cpu_info` (arch, model, vendor, topology, features).
    #[serde(default)]
    pub cpu_info: serde_json::Value,
    /// `(architecture, hypervisor type, vm mode)` triples the host can run, canonical and lower case
    /// (`x86_64`, `qemu`, `hvm`).
    #[serde(default)]
    pub supported_instances: Vec<[String; 3]>,
    /// The metadata of the host's aggregates: each key with the values the aggregates give it.
    #[serde(default)]
    pub aggregate_metadata: BTreeMap<String, BTreeSet<String>>,
    /// Builds that failed on the host since its last successful one, as its agent counts them.
    #[serde(default)]
    pub failed_builds: i64,
}

impl HostState {
    /// Free RAM counting overcommit, as Nova's `free_ram_mb` after the allocation ratio.
    pub fn free_ram_mb(&self) -> f64 {
        (self.memory_mb_total - self.memory_mb_reserved) as f64 * self.ram_allocation_ratio - self.memory_mb_used as f64
    }
    /// Free vCPUs counting overcommit.
    pub fn free_vcpus(&self) -> f64 {
        self.vcpus_total as f64 * self.cpu_allocation_ratio - self.vcpus_used as f64
    }
    /// Free disk in MB counting overcommit.
    pub fn free_disk_mb(&self) -> f64 {
        ((self.disk_gb_total - self.disk_gb_reserved) as f64 * self.disk_allocation_ratio - self.disk_gb_used as f64)
            * 1024.0
    }
}

/// The part of a boot request the filters and weighers read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestSpec {
    pub vcpus: i64,
    pub memory_mb: i64,
    pub root_gb: i64,
    pub ephemeral_gb: i64,
    pub swap_mb: i64,
    /// The zone the user asked for, if any.
    pub availability_zone: Option<String>,
    pub num_instances: u32,
    /// The policy of the server group the instance is in (`affinity`, `anti-affinity`, `soft-affinity`,
    /// `soft-anti-affinity`), if any.
    #[serde(default)]
    pub group_policy: Option<String>,
    /// The hosts of the group's other members, one entry per member: a host holding two members is listed twice.
    #[serde(default)]
    pub group_hosts: Vec<String>,
    /// The flavor's extra specs.
    #[serde(default)]
    pub extra_specs: BTreeMap<String, String>,
    /// The image's properties, values as text (`hw_architecture`, `img_hv_type`, …).
    #[serde(default)]
    pub image_properties: BTreeMap<String, String>,
}

impl RequestSpec {
    /// How many members of the instance's group `host` holds.
    pub fn group_members_on(&self, host: &str) -> usize {
        self.group_hosts.iter().filter(|h| *h == host).count()
    }
}

/// A host with its total weight.
#[derive(Clone, Debug, PartialEq)]
pub struct Weighed<'a> {
    pub host: &'a HostState,
    pub weight: f64,
    /// The host's position in the slice given to [`Scheduler::select`] (or to [`Scheduler::weigh`]).
    pub index: usize,
}

/// Filters, weighers and the subset size: one scheduler configuration.
pub struct Scheduler {
    pub filters: Vec<Box<dyn Filter>>,
    pub weighers: Vec<Box<dyn Weigher>>,
    /// Pick randomly among this many best hosts (at least 1).
    pub host_subset_size: usize,
}

/// Filter names [`Scheduler::from_config`] knows, as upstream's classes are named.
pub const FILTERS: &[&str] = &[
    "ComputeFilter",
    "AvailabilityZoneFilter",
    "ComputeCapabilitiesFilter",
    "ImagePropertiesFilter",
    "ServerGroupAntiAffinityFilter",
    "ServerGroupAffinityFilter",
    "AggregateInstanceExtraSpecsFilter",
];

/// Upstream's `[filter_scheduler] enabled_filters` default, restricted to the filters that exist here (the
/// availability zone is not a placement pre-filter here, so its filter stays on).
pub const DEFAULT_FILTERS: &[&str] = &[
    "ComputeFilter",
    "AvailabilityZoneFilter",
    "ComputeCapabilitiesFilter",
    "ImagePropertiesFilter",
    "ServerGroupAntiAffinityFilter",
    "ServerGroupAffinityFilter",
];

/// The operator's choice of filters and weigher multipliers (upstream's `[filter_scheduler]` options, same
/// names and defaults). Every weigher runs; a multiplier of 0 turns one off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// Filters to run, in order, by upstream's class name.
    pub enabled_filters: Vec<String>,
    pub ram_weight_multiplier: f64,
    pub cpu_weight_multiplier: f64,
    pub disk_weight_multiplier: f64,
    pub soft_affinity_weight_multiplier: f64,
    pub soft_anti_affinity_weight_multiplier: f64,
    /// Upstream's default (1000000.0) outweighs every other weigher: a host whose builds fail is the last resort.
    pub build_failure_weight_multiplier: f64,
    /// The architecture assumed for images without `hw_architecture` (none by default).
    pub image_properties_default_architecture: Option<String>,
    /// Pick randomly among this many best hosts.
    pub host_subset_size: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            enabled_filters: DEFAULT_FILTERS.iter().map(|f| f.to_string()).collect(),
            ram_weight_multiplier: 1.0,
            cpu_weight_multiplier: 1.0,
            disk_weight_multiplier: 1.0,
            soft_affinity_weight_multiplier: 1.0,
            soft_anti_affinity_weight_multiplier: 1.0,
            build_failure_weight_multiplier: 1_000_000.0,
            image_properties_default_architecture: None,
            host_subset_size: 1,
        }
    }
}

impl Default for Scheduler {
    /// Upstream's defaults for what exists here (see [`SchedulerConfig::default`]).
    fn default() -> Self {
        Scheduler::from_config(&SchedulerConfig::default()).unwrap_or_else(|_| unreachable!("the defaults are known"))
    }
}

impl Scheduler {
    /// The scheduler an operator configured; an unknown filter name is an error naming it.
    pub fn from_config(c: &SchedulerConfig) -> Result<Scheduler, String> {
        let mut filters: Vec<Box<dyn Filter>> = Vec::with_capacity(c.enabled_filters.len());
        for name in &c.enabled_filters {
            filters.push(match name.as_str() {
                "ComputeFilter" => Box::new(ComputeFilter),
                "AvailabilityZoneFilter" => Box::new(AvailabilityZoneFilter),
                "ComputeCapabilitiesFilter" => Box::new(ComputeCapabilitiesFilter),
                "ImagePropertiesFilter" => Box::new(ImagePropertiesFilter {
                    default_architecture: c.image_properties_default_architecture.clone(),
                }),
                "ServerGroupAntiAffinityFilter" => Box::new(ServerGroupAntiAffinityFilter),
                "ServerGroupAffinityFilter" => Box::new(ServerGroupAffinityFilter),
                "AggregateInstanceExtraSpecsFilter" => Box::new(AggregateInstanceExtraSpecsFilter),
                other => {
                    return Err(format!("unknown scheduler filter {other:?} (known: {})", FILTERS.join(", ")));
                }
            });
        }
        Ok(Scheduler {
            filters,
            weighers: vec![
                Box::new(RamWeigher::new(c.ram_weight_multiplier)),
                Box::new(CpuWeigher::new(c.cpu_weight_multiplier)),
                Box::new(DiskWeigher::new(c.disk_weight_multiplier)),
                Box::new(ServerGroupSoftAffinityWeigher::new(c.soft_affinity_weight_multiplier)),
                Box::new(ServerGroupSoftAntiAffinityWeigher::new(c.soft_anti_affinity_weight_multiplier)),
                Box::new(BuildFailureWeigher::new(c.build_failure_weight_multiplier)),
            ],
            host_subset_size: c.host_subset_size.max(1),
        })
    }

    /// Hosts passing every filter.
    pub fn filter<'a>(&self, hosts: &'a [HostState], spec: &RequestSpec) -> Vec<&'a HostState> {
        hosts.iter().filter(|h| self.passes(h, spec)).collect()
    }

    /// Whether `host` passes every filter.
    fn passes(&self, host: &HostState, spec: &RequestSpec) -> bool {
        self.filters.iter().all(|f| f.passes(host, spec))
    }

    /// Hosts ordered by total weight, best first (ties keep input order).
    pub fn weigh<'a>(&self, hosts: &[&'a HostState], spec: &RequestSpec) -> Vec<Weighed<'a>> {
        let mut out: Vec<Weighed<'a>> = hosts.iter().enumerate().map(|(index, h)| Weighed { host: h, weight: 0.0, index }).collect();
        for w in &self.weighers {
            let raw: Vec<f64> = hosts.iter().map(|h| w.weigh(h, spec)).collect();
            for (entry, n) in out.iter_mut().zip(normalize(&raw)) {
                entry.weight += w.multiplier() * n;
            }
        }
        out.sort_by(|a, b| b.weight.total_cmp(&a.weight));
        out
    }

    /// Filters and weighs, then moves a random one of the best `host_subset_size` hosts to the front; the rest
    /// are alternates in weight order. `pick(n)` returns an index below `n` (random in production).
    pub fn select_with<'a>(
        &self,
        hosts: &'a [HostState],
        spec: &RequestSpec,
        pick: impl FnOnce(usize) -> usize,
    ) -> Vec<Weighed<'a>> {
        let passing: Vec<usize> = hosts.iter().enumerate().filter(|(_, h)| self.passes(h, spec)).map(|(i, _)| i).collect();
        let refs: Vec<&HostState> = passing.iter().map(|&i| &hosts[i]).collect();
        let mut weighed = self.weigh(&refs, spec);
        for w in &mut weighed {
            w.index = passing[w.index];
        }
        let subset = self.host_subset_size.max(1).min(weighed.len());
        if subset > 1 {
            let chosen = pick(subset).min(subset - 1);
            let best = weighed.remove(chosen);
            weighed.insert(0, best);
        }
        weighed
    }

    /// [`Scheduler::select_with`] with a random pick.
    pub fn select<'a>(&self, hosts: &'a [HostState], spec: &RequestSpec) -> Vec<Weighed<'a>> {
        self.select_with(hosts, spec, |n| rand::random_range(0..n))
    }
}

/// Nova's normalisation: `(w - min) / (max - min)`, or all zeros when every weight is equal.
pub fn normalize(weights: &[f64]) -> Vec<f64> {
    let min = weights.iter().copied().fold(f64::INFINITY, f64::min);
    let max = weights.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let range = max - min;
    if weights.is_empty() || range <= 0.0 || !range.is_finite() {
        return vec![0.0; weights.len()];
    }
    weights.iter().map(|w| (w - min) / range).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn host(name: &str, free_ram: i64, free_vcpus: i64, free_disk_gb: i64) -> HostState {
        HostState {
            host: name.into(),
            node: name.into(),
            provider_uuid: format!("rp-{name}"),
            availability_zone: "nova".into(),
            enabled: true,
            up: true,
            vcpus_total: 64,
            vcpus_used: 64 - free_vcpus,
            memory_mb_total: 65536,
            memory_mb_used: 65536 - free_ram,
            memory_mb_reserved: 0,
            disk_gb_total: 1000,
            disk_gb_used: 1000 - free_disk_gb,
            disk_gb_reserved: 0,
            cpu_allocation_ratio: 1.0,
            ram_allocation_ratio: 1.0,
            disk_allocation_ratio: 1.0,
            num_instances: 0,
            ..Default::default()
        }
    }

    fn names(w: &[Weighed<'_>]) -> Vec<String> {
        w.iter().map(|w| w.host.host.clone()).collect()
    }

    #[test]
    fn normalisation() {
        assert_eq!(normalize(&[1.0, 3.0, 2.0]), vec![0.0, 1.0, 0.5]);
        assert_eq!(normalize(&[5.0, 5.0]), vec![0.0, 0.0]);
        assert!(normalize(&[]).is_empty());
    }

    #[test]
    fn spreads_by_default_and_stacks_with_negative_multipliers() {
        let hosts = vec![host("a", 1024, 8, 100), host("b", 8192, 8, 100), host("c", 4096, 8, 100)];
        let spec = RequestSpec { vcpus: 1, memory_mb: 512, ..Default::default() };
        let s = Scheduler::default();
        assert_eq!(names(&s.select_with(&hosts, &spec, |_| 0)), ["b", "c", "a"]);
        let stack = Scheduler { weighers: vec![Box::new(RamWeigher::new(-1.0))], ..Scheduler::default() };
        assert_eq!(names(&stack.select_with(&hosts, &spec, |_| 0)), ["a", "c", "b"]);
    }

    #[test]
    fn multipliers_trade_weighers_off() {
        // a: most RAM, b: most CPU. CPU counts double.
        let hosts = vec![host("a", 8192, 2, 100), host("b", 1024, 32, 100)];
        let spec = RequestSpec::default();
        let s = Scheduler {
            weighers: vec![Box::new(RamWeigher::new(1.0)), Box::new(CpuWeigher::new(2.0))],
            ..Scheduler::default()
        };
        let w = s.select_with(&hosts, &spec, |_| 0);
        assert_eq!(names(&w), ["b", "a"]);
        assert_eq!(w[0].weight, 2.0);
        assert_eq!(w[1].weight, 1.0);
    }

    #[test]
    fn host_subset_size_picks_among_the_best() {
        let hosts = vec![host("a", 1024, 8, 100), host("b", 8192, 8, 100), host("c", 4096, 8, 100)];
        let spec = RequestSpec::default();
        let s = Scheduler { host_subset_size: 2, ..Scheduler::default() };
        let mut asked = 0;
        let w = s.select_with(&hosts, &spec, |n| {
            asked = n;
            1
        });
        assert_eq!(asked, 2);
        assert_eq!(names(&w), ["c", "b", "a"]);
        // Larger than the host count: clamped; random picks stay in range.
        let s = Scheduler { host_subset_size: 10, ..Scheduler::default() };
        for _ in 0..20 {
            let w = s.select(&hosts, &spec);
            assert_eq!(w.len(), 3);
        }
    }

    #[test]
    fn filtered_hosts_are_not_selected() {
        let mut down = host("down", 65536, 64, 1000);
        down.up = false;
        let hosts = vec![down, host("ok", 1024, 1, 1)];
        assert_eq!(names(&Scheduler::default().select(&hosts, &RequestSpec::default())), ["ok"]);
    }

    #[test]
    fn server_groups_steer_the_choice() {
        // b has the most free RAM; a already holds a member of the group.
        let hosts = vec![host("a", 1024, 8, 100), host("b", 8192, 8, 100), host("c", 4096, 8, 100)];
        let group = |policy: &str| RequestSpec {
            group_policy: Some(policy.into()),
            group_hosts: vec!["a".into()],
            ..Default::default()
        };
        let s = Scheduler::default();
        assert_eq!(names(&s.select_with(&hosts, &group("affinity"), |_| 0)), ["a"]);
        assert_eq!(names(&s.select_with(&hosts, &group("anti-affinity"), |_| 0)), ["b", "c"]);
        // Soft affinity outweighs the free RAM of b; soft anti-affinity keeps away from a.
        let soft = Scheduler {
            weighers: vec![Box::new(RamWeigher::new(1.0)), Box::new(ServerGroupSoftAffinityWeigher::new(2.0))],
            ..Scheduler::default()
        };
        assert_eq!(names(&soft.select_with(&hosts, &group("soft-affinity"), |_| 0)), ["a", "b", "c"]);
        let anti = Scheduler {
            weighers: vec![Box::new(RamWeigher::new(1.0)), Box::new(ServerGroupSoftAntiAffinityWeigher::new(2.0))],
            ..Scheduler::default()
        };
        let on_b = RequestSpec { group_hosts: vec!["b".into()], ..group("soft-anti-affinity") };
        assert_eq!(names(&anti.select_with(&hosts, &on_b, |_| 0)), ["c", "a", "b"]);
        // The soft policies filter nothing out.
        assert_eq!(s.filter(&hosts, &on_b).len(), 3);
        // A group with no member placed yet does not constrain.
        let first = RequestSpec { group_policy: Some("affinity".into()), ..Default::default() };
        assert_eq!(s.select_with(&hosts, &first, |_| 0).len(), 3);
    }

    #[test]
    fn configuration_picks_filters_and_multipliers() {
        let s = Scheduler::default();
        let filters: Vec<&str> = s.filters.iter().map(|f| f.name()).collect();
        assert_eq!(filters, DEFAULT_FILTERS);
        let weighers: Vec<(&str, f64)> = s.weighers.iter().map(|w| (w.name(), w.multiplier())).collect();
        assert_eq!(weighers.last(), Some(&("BuildFailureWeigher", 1_000_000.0)));
        let c = SchedulerConfig {
            enabled_filters: vec!["AggregateInstanceExtraSpecsFilter".into(), "ComputeFilter".into()],
            ram_weight_multiplier: -1.0,
            host_subset_size: 0,
            ..Default::default()
        };
        let s = Scheduler::from_config(&c).unwrap();
        assert_eq!(s.filters.iter().map(|f| f.name()).collect::<Vec<_>>(), ["AggregateInstanceExtraSpecsFilter", "ComputeFilter"]);
        assert_eq!(s.weighers[0].multiplier(), -1.0);
        assert_eq!(s.host_subset_size, 1);
        let bad = SchedulerConfig { enabled_filters: vec!["RamFilter".into()], ..Default::default() };
        let e = Scheduler::from_config(&bad).err().unwrap();
        assert!(e.contains("\"RamFilter\""), "{e}");
        for name in FILTERS {
            let one = SchedulerConfig { enabled_filters: vec![name.to_string()], ..Default::default() };
            assert_eq!(Scheduler::from_config(&one).unwrap().filters[0].name(), *name);
        }
    }

    #[test]
    fn hosts_with_failed_builds_come_last() {
        // b has the most of everything but its builds fail; it stays an alternate.
        let mut b = host("b", 8192, 32, 500);
        b.failed_builds = 2;
        let mut c = host("c", 4096, 8, 100);
        c.failed_builds = 1;
        let hosts = vec![host("a", 1024, 8, 100), b, c];
        let s = Scheduler::default();
        assert_eq!(names(&s.select_with(&hosts, &RequestSpec::default(), |_| 0)), ["a", "c", "b"]);
        let off = Scheduler::from_config(&SchedulerConfig { build_failure_weight_multiplier: 0.0, ..Default::default() }).unwrap();
        assert_eq!(names(&off.select_with(&hosts, &RequestSpec::default(), |_| 0)), ["b", "c", "a"]);
    }

    #[test]
    fn free_resources_count_overcommit_and_reserved() {
        let mut h = host("a", 1024, 0, 10);
        h.ram_allocation_ratio = 1.5;
        h.memory_mb_reserved = 512;
        assert_eq!(h.free_ram_mb(), (65536.0 - 512.0) * 1.5 - 64512.0);
        h.cpu_allocation_ratio = 16.0;
        assert_eq!(h.free_vcpus(), 64.0 * 16.0 - 64.0);
        assert_eq!(h.free_disk_mb(), 10.0 * 1024.0);
    }
}
