//! Host filters: a host passes or not, from its state and the request alone.

use serde_json::Value;

use crate::{HostState, RequestSpec, extra_specs};

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

/// The extra specs scope of [`ComputeCapabilitiesFilter`].
const CAPABILITIES: &str = "capabilities";
/// The extra specs scope of [`AggregateInstanceExtraSpecsFilter`].
const AGGREGATE_SCOPE: &str = "aggregate_instance_extra_specs";

impl HostState {
    /// A host attribute by upstream's `HostState` name, as the capabilities filter reads it. `cpu_info` is the
    /// JSON text, as upstream keeps it.
    pub fn capability(&self, name: &str) -> Option<Value> {
        let free_ram = self.memory_mb_total - self.memory_mb_reserved - self.memory_mb_used;
        let free_disk_gb = self.disk_gb_total - self.disk_gb_reserved - self.disk_gb_used;
        Some(match name {
            "host" => Value::from(self.host.clone()),
            "nodename" | "hypervisor_hostname" => Value::from(self.node.clone()),
            "uuid" => Value::from(self.provider_uuid.clone()),
            "hypervisor_type" => Value::from(self.hypervisor_type.clone()),
            "hypervisor_version" => Value::from(self.hypervisor_version),
            "cpu_info" => Value::from(self.cpu_info.to_string()),
            "vcpus_total" => Value::from(self.vcpus_total),
            "vcpus_used" => Value::from(self.vcpus_used),
            "total_usable_ram_mb" => Value::from(self.memory_mb_total),
            "free_ram_mb" => Value::from(free_ram),
            "total_usable_disk_gb" => Value::from(self.disk_gb_total),
            "free_disk_mb" => Value::from(free_disk_gb * 1024),
            "disk_mb_used" => Value::from(self.disk_gb_used * 1024),
            "num_instances" => Value::from(self.num_instances),
            "cpu_allocation_ratio" => Value::from(self.cpu_allocation_ratio),
            "ram_allocation_ratio" => Value::from(self.ram_allocation_ratio),
            "disk_allocation_ratio" => Value::from(self.disk_allocation_ratio),
            "failed_builds" => Value::from(self.failed_builds),
            "supported_instances" => Value::from(
                self.supported_instances.iter().map(|t| Value::from(t.to_vec())).collect::<Vec<_>>(),
            ),
            _ => return None,
        })
    }
}

/// A value as Python's `str()` prints it, which is what upstream's operators compare against.
fn py_str(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 => format!("{f:.1}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Array(_) | Value::Object(_) => py_repr(v),
    }
}

fn py_repr(v: &Value) -> String {
    match v {
        Value::String(s) => format!("'{s}'"),
        Value::Array(items) => format!("[{}]", items.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => {
            format!("{{{}}}", m.iter().map(|(k, v)| format!("'{k}': {}", py_repr(v))).collect::<Vec<_>>().join(", "))
        }
        other => py_str(other),
    }
}

/// Upstream's walk down a scope (`cpu_info:features`): the first name is a host attribute, the next ones keys of
/// the dictionaries below it (text holding JSON is decoded first). `None` when a step finds nothing.
fn capability_at(host: &HostState, scope: &[&str]) -> Option<Value> {
    let (first, rest) = scope.split_first()?;
    let mut cap = host.capability(first)?;
    for key in rest {
        if let Value::String(text) = &cap {
            cap = serde_json::from_str(text).ok()?;
        }
        cap = match cap {
            Value::Object(mut m) => m.remove(*key)?,
            _ => return None,
        };
        if cap.is_null() {
            return None;
        }
    }
    (!cap.is_null()).then_some(cap)
}

/// Flavor extra specs against the host's capabilities: keys scoped `capabilities:` (the rest of the key a path
/// into the host's attributes, `capabilities:cpu_info:arch`), and unscoped keys that name a host attribute
/// (others are ignored, as are other scopes). Values use the [`extra_specs`] operators.
#[derive(Clone, Copy, Debug, Default)]
pub struct ComputeCapabilitiesFilter;

impl Filter for ComputeCapabilitiesFilter {
    fn name(&self) -> &'static str {
        "ComputeCapabilitiesFilter"
    }
    fn passes(&self, host: &HostState, spec: &RequestSpec) -> bool {
        spec.extra_specs.iter().all(|(key, req)| {
            let scope: Vec<&str> = key.split(':').collect();
            let path = match scope.as_slice() {
                [name] if host.capability(name).is_none() => return true,
                [_] => &scope[..],
                [first, rest @ ..] if *first == CAPABILITIES => rest,
                _ => return true,
            };
            match capability_at(host, path) {
                Some(cap) => extra_specs::matches(Some(&py_str(&cap)), req),
                None => false,
            }
        })
    }
}

/// Flavor extra specs scoped `aggregate_instance_extra_specs:` and unscoped ones against the metadata of the
/// host's aggregates: each key must be in some aggregate's metadata with a value satisfying the requirement
/// (the [`extra_specs`] operators). Keys of other scopes are ignored.
#[derive(Clone, Copy, Debug, Default)]
pub struct AggregateInstanceExtraSpecsFilter;

impl Filter for AggregateInstanceExtraSpecsFilter {
    fn name(&self) -> &'static str {
        "AggregateInstanceExtraSpecsFilter"
    }
    fn passes(&self, host: &HostState, spec: &RequestSpec) -> bool {
        spec.extra_specs.iter().all(|(key, req)| {
            let key = match key.split_once(':') {
                Some((scope, rest)) if scope == AGGREGATE_SCOPE => rest,
                Some(_) => return true,
                None => key.as_str(),
            };
            host.aggregate_metadata
                .get(key)
                .is_some_and(|values| values.iter().any(|v| extra_specs::matches(Some(v), req)))
        })
    }
}

/// Image properties against the `(architecture, hypervisor type, vm mode)` triples the host supports:
/// `hw_architecture` (`architecture`), `img_hv_type` (`hypervisor_type`), `hw_vm_mode` (`vm_mode`), each
/// canonicalised; the host passes when one triple has every property given, and its hypervisor version
/// satisfies `img_hv_requested_version` (`hypervisor_version_requires`), e.g. `>=2.0, <9`. An image asking
/// for none of them fits everywhere.
#[derive(Clone, Debug, Default)]
pub struct ImagePropertiesFilter {
    /// `image_properties_default_architecture`: assumed when the image names none.
    pub default_architecture: Option<String>,
}

/// An image property by its current name, else its legacy one.
fn image_prop<'a>(spec: &'a RequestSpec, name: &str, legacy: &str) -> Option<&'a str> {
    spec.image_properties
        .get(name)
        .or_else(|| spec.image_properties.get(legacy))
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}

/// Upstream's canonical architecture names (`amd64` is `x86_64`, `i386` is `i686`, …).
pub fn canonical_arch(a: &str) -> String {
    let a = a.to_ascii_lowercase();
    match a.as_str() {
        "i386" | "i486" | "i586" | "x86_32" => "i686".into(),
        "amd64" | "x64" => "x86_64".into(),
        _ => a,
    }
}

/// Upstream's canonical hypervisor types (`xapi` is `xen`).
pub fn canonical_hv_type(h: &str) -> String {
    let h = h.to_ascii_lowercase();
    if h == "xapi" { "xen".into() } else { h }
}

/// Upstream's canonical vm modes (`hv` and `baremetal` are `hvm`, `pv` is `xen`).
pub fn canonical_vm_mode(m: &str) -> String {
    let m = m.to_ascii_lowercase();
    match m.as_str() {
        "hv" | "baremetal" => "hvm".into(),
        "pv" => "xen".into(),
        _ => m,
    }
}

/// Upstream's text form of an integer version (1002003 is `1.2.3`).
fn version_parts(mut v: i64) -> Vec<i64> {
    let mut parts = Vec::new();
    while v > 0 {
        parts.insert(0, v % 1000);
        v /= 1000;
    }
    parts
}

fn parse_version(s: &str) -> Option<Vec<i64>> {
    s.split('.').map(|p| p.parse::<i64>().ok().filter(|n| *n >= 0)).collect()
}

/// Whether `version` satisfies every comparison of `predicate` (`>=2.0, <9`, `==1.0`). A predicate that does
/// not parse is not satisfied.
fn version_satisfies(version: &[i64], predicate: &str) -> bool {
    predicate.split(',').all(|clause| {
        let clause = clause.trim();
        let Some((op, rest)) = ["<=", ">=", "==", "!=", "<", ">"]
            .iter()
            .find_map(|op| clause.strip_prefix(op).map(|rest| (*op, rest.trim())))
        else {
            return false;
        };
        let Some(wanted) = parse_version(rest) else { return false };
        let len = version.len().max(wanted.len());
        let pad = |v: &[i64]| {
            let mut v = v.to_vec();
            v.resize(len, 0);
            v
        };
        let ord = pad(version).cmp(&pad(&wanted));
        match op {
            "<=" => ord.is_le(),
            ">=" => ord.is_ge(),
            "==" => ord.is_eq(),
            "!=" => ord.is_ne(),
            "<" => ord.is_lt(),
            _ => ord.is_gt(),
        }
    })
}

impl Filter for ImagePropertiesFilter {
    fn name(&self) -> &'static str {
        "ImagePropertiesFilter"
    }
    fn passes(&self, host: &HostState, spec: &RequestSpec) -> bool {
        let arch = image_prop(spec, "hw_architecture", "architecture")
            .map(str::to_string)
            .or_else(|| self.default_architecture.clone())
            .map(|a| canonical_arch(&a));
        let hv_type = image_prop(spec, "img_hv_type", "hypervisor_type").map(canonical_hv_type);
        let vm_mode = image_prop(spec, "hw_vm_mode", "vm_mode").map(canonical_vm_mode);
        let wanted = [arch, hv_type, vm_mode];
        if wanted.iter().all(Option::is_none) {
            return true;
        }
        let required = image_prop(spec, "img_hv_requested_version", "hypervisor_version_requires");
        let version_ok = || match required {
            Some(req) if host.hypervisor_version != 0 => {
                version_satisfies(&version_parts(host.hypervisor_version), req)
            }
            _ => true,
        };
        host.supported_instances.iter().any(|triple| {
            wanted.iter().all(|w| w.as_ref().is_none_or(|w| triple.iter().any(|t| t == w)))
        }) && version_ok()
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

    /// Key/value pairs of a test case.
    type Pairs = &'static [(&'static str, &'static str)];

    fn with_specs(specs: &[(&str, &str)]) -> RequestSpec {
        RequestSpec {
            extra_specs: specs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    fn capable_host() -> HostState {
        let mut h = host("node1", 1024, 4, 10);
        h.hypervisor_type = "QEMU".into();
        h.hypervisor_version = 8_002_002;
        h.cpu_info = serde_json::json!({"arch": "x86_64", "vendor": "QEMU", "topology": {"cores": 4}, "features": ["aes", "sse"]});
        h.supported_instances = vec![["x86_64".into(), "qemu".into(), "hvm".into()]];
        h.cpu_allocation_ratio = 16.0;
        h
    }

    #[test]
    fn compute_capabilities_filter() {
        let h = capable_host();
        // (extra specs, passes)
        let cases: &[(Pairs, bool)] = &[
            (&[], true),
            (&[("capabilities:hypervisor_type", "QEMU")], true),
            (&[("capabilities:hypervisor_type", "s== QEMU")], true),
            (&[("capabilities:hypervisor_type", "fake")], false),
            (&[("capabilities:hypervisor_type", "<or> fake <or> QEMU")], true),
            (&[("capabilities:hypervisor_version", ">= 8002000")], true),
            (&[("capabilities:hypervisor_version", "== 8002002")], true),
            (&[("capabilities:hypervisor_version", "<= 8000000")], false),
            (&[("capabilities:vcpus_total", "= 64")], true),
            (&[("capabilities:vcpus_total", "= 65")], false),
            (&[("capabilities:free_ram_mb", ">= 1024")], true),
            (&[("capabilities:free_ram_mb", ">= 1025")], false),
            (&[("capabilities:cpu_allocation_ratio", "16.0")], true),
            (&[("capabilities:cpu_allocation_ratio", "== 16")], true),
            // Nested: into cpu_info's JSON.
            (&[("capabilities:cpu_info:arch", "x86_64")], true),
            (&[("capabilities:cpu_info:arch", "aarch64")], false),
            (&[("capabilities:cpu_info:topology:cores", "4")], true),
            (&[("capabilities:cpu_info:features", "<all-in> aes sse")], true),
            (&[("capabilities:cpu_info:features", "<in> avx")], false),
            (&[("capabilities:cpu_info", "<in> x86_64")], true),
            (&[("capabilities:cpu_info:nothing", "x")], false),
            (&[("capabilities:cpu_info:arch:deeper", "x")], false),
            (&[("capabilities:no_such_attribute", "1")], false),
            (&[("capabilities:", "1")], false),
            // Unscoped keys count only when they name a host attribute.
            (&[("hypervisor_type", "QEMU")], true),
            (&[("hypervisor_type", "fake")], false),
            (&[("num_instances", "0")], true),
            (&[("unknown_key", "whatever")], true),
            // Other scopes are for other filters.
            (&[("hw:cpu_policy", "dedicated"), ("aggregate_instance_extra_specs:ssd", "true")], true),
            (&[("quota:disk_read_bytes_sec", "1")], true),
            // All must pass.
            (&[("capabilities:hypervisor_type", "QEMU"), ("capabilities:vcpus_used", "1")], false),
            (&[("capabilities:hypervisor_type", "QEMU"), ("capabilities:vcpus_used", "60")], true),
        ];
        for (specs, want) in cases {
            assert_eq!(ComputeCapabilitiesFilter.passes(&h, &with_specs(specs)), *want, "{specs:?}");
        }
        assert_eq!(ComputeCapabilitiesFilter.name(), "ComputeCapabilitiesFilter");
    }

    #[test]
    fn python_text_of_capabilities() {
        assert_eq!(py_str(&serde_json::json!(16.0)), "16.0");
        assert_eq!(py_str(&serde_json::json!(1.5)), "1.5");
        assert_eq!(py_str(&serde_json::json!(3)), "3");
        assert_eq!(py_str(&serde_json::json!(true)), "True");
        assert_eq!(py_str(&serde_json::json!(null)), "None");
        assert_eq!(py_str(&serde_json::json!(["a", 1])), "['a', 1]");
        assert_eq!(py_str(&serde_json::json!({"k": "v"})), "{'k': 'v'}");
    }

    #[test]
    fn aggregate_instance_extra_specs_filter() {
        let mut h = host("a", 1, 1, 1);
        h.aggregate_metadata = [
            ("ssd".to_string(), ["true".to_string()].into()),
            ("speed".to_string(), ["10".to_string(), "40".to_string()].into()),
        ]
        .into();
        let bare = host("b", 1, 1, 1);
        // (extra specs, passes on `a`, passes on `bare`)
        let cases: &[(Pairs, bool, bool)] = &[
            (&[], true, true),
            (&[("aggregate_instance_extra_specs:ssd", "true")], true, false),
            (&[("aggregate_instance_extra_specs:ssd", "false")], false, false),
            (&[("aggregate_instance_extra_specs:ssd", "<or> false <or> true")], true, false),
            // Any aggregate's value may satisfy it.
            (&[("aggregate_instance_extra_specs:speed", ">= 40")], true, false),
            (&[("aggregate_instance_extra_specs:speed", "== 10")], true, false),
            (&[("aggregate_instance_extra_specs:speed", ">= 41")], false, false),
            (&[("aggregate_instance_extra_specs:gpu", "true")], false, false),
            // Unscoped keys are matched too.
            (&[("ssd", "true")], true, false),
            (&[("ssd", "s!= true")], false, false),
            // Other scopes are not.
            (&[("capabilities:hypervisor_type", "QEMU"), ("hw:mem_page_size", "large")], true, true),
            (&[("aggregate_instance_extra_specs:ssd", "true"), ("aggregate_instance_extra_specs:speed", "s== 40")], true, false),
            (&[("aggregate_instance_extra_specs:ssd", "true"), ("aggregate_instance_extra_specs:speed", "s== 20")], false, false),
        ];
        for (specs, on_a, on_bare) in cases {
            let spec = with_specs(specs);
            assert_eq!(AggregateInstanceExtraSpecsFilter.passes(&h, &spec), *on_a, "{specs:?} on a");
            assert_eq!(AggregateInstanceExtraSpecsFilter.passes(&bare, &spec), *on_bare, "{specs:?} on bare");
        }
        assert_eq!(AggregateInstanceExtraSpecsFilter.name(), "AggregateInstanceExtraSpecsFilter");
    }

    #[test]
    fn image_properties_filter() {
        let h = capable_host();
        let mut fake = host("f", 1, 1, 1);
        fake.hypervisor_version = 1000;
        fake.supported_instances = vec![["x86_64".into(), "fake".into(), "hvm".into()]];
        let mut nothing = host("n", 1, 1, 1);
        nothing.hypervisor_version = 1000;
        let f = ImagePropertiesFilter::default();
        // (image properties, passes on the qemu host, on the fake host, on a host advertising nothing)
        let cases: &[(Pairs, bool, bool, bool)] = &[
            (&[], true, true, true),
            (&[("disk_format", "qcow2"), ("hw_disk_bus", "virtio")], true, true, true),
            (&[("hw_architecture", "x86_64")], true, true, false),
            (&[("hw_architecture", "amd64")], true, true, false),
            (&[("hw_architecture", "X86_64")], true, true, false),
            (&[("hw_architecture", "aarch64")], false, false, false),
            (&[("architecture", "x86_64")], true, true, false),
            (&[("hw_architecture", "aarch64"), ("architecture", "x86_64")], false, false, false),
            (&[("img_hv_type", "qemu")], true, false, false),
            (&[("img_hv_type", "QEMU")], true, false, false),
            (&[("hypervisor_type", "fake")], false, true, false),
            (&[("img_hv_type", "kvm")], false, false, false),
            (&[("hw_vm_mode", "hvm")], true, true, false),
            (&[("hw_vm_mode", "hv")], true, true, false),
            (&[("vm_mode", "xen")], false, false, false),
            (&[("hw_architecture", "x86_64"), ("img_hv_type", "qemu"), ("hw_vm_mode", "hvm")], true, false, false),
            // The hypervisor version: qemu is 8.2.2, fake 0.1.0 (1000).
            (&[("img_hv_type", "qemu"), ("img_hv_requested_version", ">=8.0")], true, false, false),
            (&[("img_hv_type", "qemu"), ("img_hv_requested_version", ">=8.0, <8.2.2")], false, false, false),
            (&[("img_hv_type", "qemu"), ("img_hv_requested_version", "==8.2.2")], true, false, false),
            (&[("hw_architecture", "x86_64"), ("img_hv_requested_version", ">= 1.0")], true, true, false),
            (&[("hw_architecture", "x86_64"), ("img_hv_requested_version", "< 1.0")], false, false, false),
            (&[("hw_architecture", "x86_64"), ("hypervisor_version_requires", "!=1.0")], true, false, false),
            (&[("hw_architecture", "x86_64"), ("img_hv_requested_version", "nonsense")], false, false, false),
            // A version alone does not constrain.
            (&[("img_hv_requested_version", "<1.0")], true, true, true),
        ];
        for (props, on_qemu, on_fake, on_nothing) in cases {
            let spec = RequestSpec {
                image_properties: props.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                ..Default::default()
            };
            assert_eq!(f.passes(&h, &spec), *on_qemu, "{props:?} on qemu");
            assert_eq!(f.passes(&fake, &spec), *on_fake, "{props:?} on fake");
            assert_eq!(f.passes(&nothing, &spec), *on_nothing, "{props:?} on a host advertising nothing");
        }
        // The default architecture applies to images naming none.
        let arm = ImagePropertiesFilter { default_architecture: Some("aarch64".into()) };
        assert!(!arm.passes(&h, &RequestSpec::default()));
        let x86 = RequestSpec { image_properties: [("hw_architecture".into(), "x86_64".into())].into(), ..Default::default() };
        assert!(arm.passes(&h, &x86));
        assert_eq!(f.name(), "ImagePropertiesFilter");
    }

    #[test]
    fn canonical_names_and_versions() {
        assert_eq!((canonical_arch("i386"), canonical_arch("AMD64"), canonical_arch("ppc64le")), ("i686".into(), "x86_64".into(), "ppc64le".into()));
        assert_eq!((canonical_hv_type("XAPI"), canonical_hv_type("QEMU")), ("xen".into(), "qemu".into()));
        assert_eq!((canonical_vm_mode("HV"), canonical_vm_mode("pv"), canonical_vm_mode("exe")), ("hvm".into(), "xen".into(), "exe".into()));
        assert_eq!(version_parts(1_002_003), [1, 2, 3]);
        assert_eq!(version_parts(1000), [1, 0]);
        assert!(version_satisfies(&[1, 2, 3], ">=1.2, <1.3"));
        assert!(!version_satisfies(&[1, 2, 3], ">1.2.3"));
        assert!(version_satisfies(&[1, 2], "==1.2.0"));
        assert!(!version_satisfies(&[1], "~1"));
    }
}
