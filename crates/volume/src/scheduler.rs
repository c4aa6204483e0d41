//! Backend selection as cinder-scheduler's filter scheduler does it: pure functions over the backends' last
//! reports (no IO). Filters: availability zone, capacity (thick: free space less the reserve; thin: the
//! over-subscription ratio bounds what may be promised), capabilities (the volume type's extra specs against the
//! backend's reported capabilities). Weigher: free capacity (virtual free capacity for thin backends), highest
//! first.

use std::collections::BTreeMap;

use volume_rpc::BackendReport;

/// What a new volume asks of its backend.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub size_gb: i64,
    pub availability_zone: Option<String>,
    /// The volume type's extra specs.
    pub extra_specs: BTreeMap<String, String>,
}

/// Upstream's CapacityFilter.
pub fn capacity_passes(b: &BackendReport, size_gb: i64) -> bool {
    let size = size_gb as f64;
    let total = b.total_capacity_gb;
    if total <= 0.0 {
        return false;
    }
    let reserved = total * f64::from(b.reserved_percentage) / 100.0;
    let free = b.free_capacity_gb - reserved;
    if b.thin_provisioning_support && b.max_over_subscription_ratio >= 1.0 {
        let provisioned_ratio = (b.provisioned_capacity_gb + size) / total;
        if provisioned_ratio > b.max_over_subscription_ratio {
            return false;
        }
        free * b.max_over_subscription_ratio >= size
    } else {
        free >= size
    }
}

/// Upstream's CapabilitiesFilter: every extra spec without a scope, or scoped `capabilities:`, must match the
/// backend (operators `<is>`, `<in>`, `<or>`, `==`, `!=`, `>=`, `<=`, `s==`; a plain value compares as a string).
pub fn capabilities_pass(b: &BackendReport, specs: &BTreeMap<String, String>) -> bool {
    specs.iter().all(|(key, want)| {
        let key = match key.split_once(':') {
            Some(("capabilities", k)) => k,
            Some(_) => return true,
            None => key.as_str(),
        };
        match capability(b, key) {
            Some(have) => matches(&have, want),
            None => false,
        }
    })
}

fn capability(b: &BackendReport, key: &str) -> Option<String> {
    Some(match key {
        "volume_backend_name" => b.backend_name.clone(),
        "storage_protocol" => b.storage_protocol.clone(),
        "vendor_name" => b.vendor_name.clone(),
        "driver_version" => "1.0".into(),
        "thin_provisioning_support" => if b.thin_provisioning_support { "True" } else { "False" }.into(),
        "thick_provisioning_support" => if b.thin_provisioning_support { "False" } else { "True" }.into(),
        "multiattach" => "True".into(),
        other => return b.capabilities.get(other).cloned(),
    })
}

/// oslo's extra-spec operator matching.
pub fn matches(have: &str, want: &str) -> bool {
    let mut words = want.split_whitespace();
    let Some(op) = words.next() else { return have.is_empty() };
    let rest: Vec<&str> = words.collect();
    let num = |s: &str| s.parse::<f64>().ok();
    match op {
        "<is>" => rest.first().is_some_and(|w| w.eq_ignore_ascii_case(have)),
        "<in>" => rest.first().is_some_and(|w| have.contains(w)),
        "<or>" => std::iter::once(rest.first().copied().unwrap_or("")).chain(rest.iter().skip(1).filter(|w| **w != "<or>").copied()).any(|w| w == have),
        "s==" => rest.first() == Some(&have),
        "s!=" => rest.first() != Some(&have),
        "==" | "=" => matches!((num(have), rest.first().and_then(|w| num(w))), (Some(a), Some(b)) if a == b),
        "!=" => matches!((num(have), rest.first().and_then(|w| num(w))), (Some(a), Some(b)) if a != b),
        ">=" => matches!((num(have), rest.first().and_then(|w| num(w))), (Some(a), Some(b)) if a >= b),
        "<=" => matches!((num(have), rest.first().and_then(|w| num(w))), (Some(a), Some(b)) if a <= b),
        _ => want == have,
    }
}

/// Upstream's CapacityWeigher: free capacity, virtual for thin backends.
pub fn weight(b: &BackendReport) -> f64 {
    let total = b.total_capacity_gb;
    let reserved = total * f64::from(b.reserved_percentage) / 100.0;
    if b.thin_provisioning_support && b.max_over_subscription_ratio >= 1.0 {
        total * b.max_over_subscription_ratio - b.provisioned_capacity_gb - reserved
    } else {
        b.free_capacity_gb - reserved
    }
}

/// The backends that pass every filter, best first.
pub fn select<'a>(backends: &'a [BackendReport], req: &Request) -> Vec<&'a BackendReport> {
    let mut passing: Vec<&BackendReport> = backends
        .iter()
        .filter(|b| req.availability_zone.as_deref().is_none_or(|z| z == b.availability_zone))
        .filter(|b| capacity_passes(b, req.size_gb))
        .filter(|b| capabilities_pass(b, &req.extra_specs))
        .collect();
    passing.sort_by(|a, b| weight(b).total_cmp(&weight(a)).then_with(|| a.host.cmp(&b.host)));
    passing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(host: &str, zone: &str, total: f64, free: f64, provisioned: f64, thin: bool) -> BackendReport {
        BackendReport {
            host: host.into(),
            backend_name: "file".into(),
            availability_zone: zone.into(),
            driver: "file".into(),
            vendor_name: "Stratus".into(),
            storage_protocol: "file".into(),
            total_capacity_gb: total,
            free_capacity_gb: free,
            provisioned_capacity_gb: provisioned,
            thin_provisioning_support: thin,
            max_over_subscription_ratio: 2.0,
            reserved_percentage: 0,
            capabilities: BTreeMap::new(),
        }
    }

    #[test]
    fn thick_backends_need_the_free_space_and_thin_ones_the_ratio() {
        let thick = backend("a@file", "nova", 100.0, 10.0, 90.0, false);
        assert!(capacity_passes(&thick, 10));
        assert!(!capacity_passes(&thick, 11));
        let thin = backend("b@file", "nova", 100.0, 10.0, 150.0, true);
        assert!(capacity_passes(&thin, 20), "ratio 2.0: 170 of 200 promised, 20 of 20 virtual free");
        assert!(!capacity_passes(&thin, 51), "201 > 200 promised");
        assert!(!capacity_passes(&backend("c@file", "nova", 100.0, 1.0, 0.0, true), 3), "free * ratio < size");
    }

    #[test]
    fn zones_and_capabilities_filter_and_free_capacity_weighs() {
        let mut gold = backend("a@gold", "nova", 100.0, 50.0, 0.0, false);
        gold.backend_name = "gold".into();
        gold.capabilities.insert("tier".into(), "1".into());
        let big = backend("b@file", "nova", 1000.0, 900.0, 0.0, false);
        let other_zone = backend("c@file", "az2", 5000.0, 5000.0, 0.0, false);
        let all = [gold.clone(), big.clone(), other_zone];
        let hosts = |req: &Request| select(&all, req).iter().map(|b| b.host.clone()).collect::<Vec<_>>();
        assert_eq!(hosts(&Request { size_gb: 1, availability_zone: Some("nova".into()), ..Default::default() }), ["b@file", "a@gold"]);
        let mut specs = BTreeMap::new();
        specs.insert("volume_backend_name".to_string(), "gold".to_string());
        specs.insert("capabilities:tier".to_string(), ">= 1".to_string());
        specs.insert("qos:read_iops".to_string(), "ignored".to_string());
        assert_eq!(hosts(&Request { size_gb: 1, availability_zone: None, extra_specs: specs }), ["a@gold"]);
        assert!(matches("True", "<is> True") && !matches("False", "<is> True"));
        assert!(matches("file", "<or> iscsi <or> file"));
    }
}
