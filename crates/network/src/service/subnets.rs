//! Subnets: CIDR and gateway validation, allocation pools, DNS servers and host routes, the IPv6 RA and address
//! modes with upstream's combination rules, prefixes from subnet pools, and the in-use rule on deletion.

use serde_json::{Value, json};

use super::{Caller, NETWORK, Network, SUBNET, SUBNETPOOL, bump, known_attrs, new_id, opt_bool, owner_of, standard, str_of, string_attr};
use crate::{
    error::{Error, Result},
    ipam::{self, Addr, Cidr, Pool},
};

const SUBNET_ATTRS: &[&str] = &[
    "name",
    "network_id",
    "ip_version",
    "cidr",
    "gateway_ip",
    "allocation_pools",
    "dns_nameservers",
    "host_routes",
    "enable_dhcp",
    "ipv6_ra_mode",
    "ipv6_address_mode",
    "subnetpool_id",
    "prefixlen",
    "use_default_subnetpool",
    "description",
    "project_id",
    "tenant_id",
    "service_types",
    "segment_id",
    "tags",
    "dns_publish_fixed_ip",
];

const V6_MODES: &[&str] = &["slaac", "dhcpv6-stateful", "dhcpv6-stateless"];

/// Whether a subnet hands out addresses by SLAAC (EUI-64 of the port's MAC) rather than from its pools.
pub(crate) fn is_auto_address(subnet: &Value) -> bool {
    matches!(subnet["ipv6_address_mode"].as_str(), Some("slaac") | Some("dhcpv6-stateless"))
}

pub(crate) fn subnet_cidr(subnet: &Value) -> Option<Cidr> {
    Cidr::parse(str_of(subnet, "cidr"))
}

pub(crate) fn subnet_pools(subnet: &Value) -> Vec<Pool> {
    subnet["allocation_pools"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    Some(Pool { start: Addr::parse(str_of(p, "start"))?.value, end: Addr::parse(str_of(p, "end"))?.value })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn render_pools(version: u8, pools: &[Pool]) -> Value {
    json!(pools
        .iter()
        .map(|p| json!({"start": Addr::new(version, p.start).to_string(), "end": Addr::new(version, p.end).to_string()}))
        .collect::<Vec<_>>())
}

fn parse_pools(v: &Value, version: u8) -> Result<Vec<Pool>> {
    let Some(list) = v.as_array() else { return Err(Error::invalid(format!("Invalid data format for IP pool: '{v}'"))) };
    let mut out = Vec::new();
    for p in list {
        let (Some(s), Some(e)) = (p.get("start").and_then(Value::as_str), p.get("end").and_then(Value::as_str)) else {
            return Err(Error::invalid(format!("Invalid data format for IP pool: '{p}'")));
        };
        let (Some(s), Some(e)) = (Addr::parse(s), Addr::parse(e)) else {
            return Err(Error::invalid(format!("Invalid data format for IP pool: '{p}'")));
        };
        if s.version != version || e.version != version {
            return Err(Error::invalid(format!("Invalid data format for IP pool: '{p}'")));
        }
        out.push(Pool { start: s.value, end: e.value });
    }
    Ok(out)
}

fn parse_dns(v: &Value) -> Result<Vec<String>> {
    let Some(list) = v.as_array() else { return Err(Error::invalid(format!("'{v}' is not a list"))) };
    let mut out: Vec<String> = Vec::new();
    for d in list {
        let s = d.as_str().unwrap_or("");
        let Some(a) = Addr::parse(s) else { return Err(Error::invalid(format!("'{d}' is not a valid nameserver")) )};
        let a = a.to_string();
        if out.contains(&a) {
            return Err(Error::invalid(format!("Duplicate nameserver '{a}'")));
        }
        out.push(a);
    }
    if out.len() > 5 {
        return Err(Error::bad("DNSNameServersExhausted", "Unable to complete operation for subnet. The number of DNS nameservers exceeds the limit 5."));
    }
    Ok(out)
}

fn parse_routes(v: &Value, version: u8) -> Result<Vec<Value>> {
    let Some(list) = v.as_array() else { return Err(Error::invalid(format!("'{v}' is not a list"))) };
    let mut out: Vec<Value> = Vec::new();
    for r in list {
        let (Some(d), Some(n)) = (r.get("destination").and_then(Value::as_str), r.get("nexthop").and_then(Value::as_str)) else {
            return Err(Error::invalid(format!("Invalid data format for hostroute: '{r}'")));
        };
        let (Some(dc), Some(na)) = (Cidr::parse(d), Addr::parse(n)) else {
            return Err(Error::invalid(format!("Invalid data format for hostroute: '{r}'")));
        };
        if dc.version != version || na.version != version {
            return Err(Error::invalid(format!("Invalid data format for hostroute: '{r}'")));
        }
        let route = json!({"destination": dc.normalized().to_string(), "nexthop": na.to_string()});
        if out.contains(&route) {
            return Err(Error::invalid(format!("Duplicate hostroute '{r}'")));
        }
        out.push(route);
    }
    Ok(out)
}

fn parse_mode(body: &Value, key: &str) -> Result<Option<String>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if V6_MODES.contains(&s.as_str()) => Ok(Some(s.clone())),
        Some(v) => Err(Error::invalid(format!("'{}' is not in {V6_MODES:?}", v.as_str().unwrap_or(&v.to_string())))),
    }
}

/// Neutron's gateway rules: inside the CIDR, not its network address, nor IPv4's broadcast address.
fn check_gateway(cidr: &Cidr, gw: Addr) -> Result<()> {
    let bad = !cidr.contains(gw)
        || (cidr.size() > 2 && gw.value == cidr.first() && cidr.version == 4)
        || (cidr.version == 4 && cidr.size() > 2 && gw.value == cidr.last());
    if bad {
        return Err(Error::invalid(format!("Gateway is not valid on subnet: gateway {gw} is not in {}", cidr.normalized())));
    }
    Ok(())
}

impl Network {
    pub(crate) async fn create_subnet(&self, caller: &Caller<'_>, body: &Value) -> Result<Value> {
        known_attrs(body, SUBNET_ATTRS)?;
        let (net_id, net) = self.requested_network(caller, body).await?;
        let owner = owner_of(caller, body)?;
        caller.enforce("create_subnet", &owner)?;
        if str_of(&net, "project_id") != owner && !caller.is_admin() && net["shared"].as_bool() != Some(true) {
            return Err(Error::Forbidden("(rule:create_subnet) is disallowed by policy".into()));
        }
        if str_of(&net, "project_id") != owner && !caller.is_admin() {
            caller.enforce("create_subnet:network_owner", str_of(&net, "project_id"))?;
        }
        self.check_quota(&owner, "subnet").await?;
        let mut pool_id = match body.get("subnetpool_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => return Err(Error::invalid(format!("'{v}' is not a valid UUID"))),
        };
        if opt_bool(body, "use_default_subnetpool")? == Some(true) {
            if pool_id.is_some() {
                return Err(Error::bad("BadRequest", "Bad subnet request: subnetpool_id and use_default_subnetpool cannot both be specified"));
            }
            let want = body.get("ip_version").and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))).unwrap_or(4);
            let default = self
                .store
                .resource_list("subnetpool")
                .await?
                .into_iter()
                .find(|p| p["is_default"].as_bool() == Some(true) && p["ip_version"].as_i64() == Some(want));
            match default {
                Some(p) => pool_id = Some(str_of(&p, "id").to_string()),
                None => {
                    return Err(Error::bad("BadRequest", format!("Bad subnet request: No default subnetpool found for IPv{want}")));
                }
            }
        }
        let mut version = match body.get("ip_version") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())) {
                Some(4) => Some(4u8),
                Some(6) => Some(6u8),
                _ => return Err(Error::invalid(format!("{v} is not in [4, 6]"))),
            },
        };
        let prefixlen = match body.get("prefixlen") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .filter(|p| (0..=128).contains(p))
                    .ok_or_else(|| Error::invalid(format!("'{v}' is not an integer")))? as u8,
            ),
        };
        let cidr = match (body.get("cidr").and_then(Value::as_str), &pool_id) {
            (Some(c), _) => {
                let parsed = Cidr::parse(c).ok_or_else(|| Error::invalid(format!("'{c}' is not a valid IP subnet")))?;
                if !c.contains('/') {
                    return Err(Error::invalid(format!("'{c}' is not a valid IP subnet")));
                }
                if !parsed.is_normalized() {
                    return Err(Error::invalid(format!(
                        "'{c}' isn't a recommended CIDR, use '{}' instead",
                        parsed.normalized()
                    )));
                }
                if let Some(v) = version
                    && v != parsed.version
                {
                    return Err(Error::invalid("Cidr and ip_version mismatch".to_string()));
                }
                if prefixlen.is_some() {
                    return Err(Error::bad("BadRequest", "Bad subnet request: cidr and prefixlen must not be supplied together"));
                }
                if let Some(pid) = &pool_id {
                    let pool = self.fetch(SUBNETPOOL, pid).await?;
                    let prefixes: Vec<Cidr> = pool["prefixes"].as_array().into_iter().flatten().filter_map(|p| p.as_str().and_then(Cidr::parse)).collect();
                    if !prefixes.iter().any(|p| p.covers(&parsed)) {
                        return Err(Error::bad("BadRequest", format!("Cidr {c} is not within the prefixes of subnet pool {pid}")));
                    }
                    self.check_pool_overlap(pid, &parsed).await?;
                }
                parsed
            }
            (None, Some(pid)) => {
                let pool = self.fetch(SUBNETPOOL, pid).await?;
                if !self.visible(caller, SUBNETPOOL, &pool).await? {
                    return Err(Error::not_found("SubnetPoolNotFound", format!("Subnet pool {pid} could not be found.")));
                }
                let pv = pool["ip_version"].as_i64().unwrap_or(4) as u8;
                if let Some(v) = version
                    && v != pv
                {
                    return Err(Error::bad("BadRequest", "Bad subnet request: ip_version does not match the subnet pool"));
                }
                version = Some(pv);
                let len = prefixlen.unwrap_or(pool["default_prefixlen"].as_i64().unwrap_or(24) as u8);
                let (min, max) = (pool["min_prefixlen"].as_i64().unwrap_or(0) as u8, pool["max_prefixlen"].as_i64().unwrap_or(128) as u8);
                if len < min || len > max {
                    return Err(Error::bad(
                        "BadRequest",
                        format!("Illegal prefix bounds: prefixlen={len}, min_prefixlen={min}, max_prefixlen={max}."),
                    ));
                }
                let prefixes: Vec<Cidr> = pool["prefixes"].as_array().into_iter().flatten().filter_map(|p| p.as_str().and_then(Cidr::parse)).collect();
                let used: Vec<Cidr> = self
                    .store
                    .resource_list("subnet")
                    .await?
                    .iter()
                    .filter(|s| str_of(s, "subnetpool_id") == pid)
                    .filter_map(subnet_cidr)
                    .collect();
                ipam::carve(&prefixes, &used, len).ok_or_else(|| {
                    Error::conflict("SubnetAllocationError", format!("Failed to allocate subnet: Insufficient prefix space to allocate subnet size /{len}."))
                })?
            }
            (None, None) => {
                return Err(Error::bad("BadRequest", "Bad subnet request: a cidr or a subnetpool_id must be specified"));
            }
        };
        let version = version.unwrap_or(cidr.version);
        if body.get("ip_version").is_none() && body.get("cidr").is_some() && pool_id.is_none() {
            return Err(Error::bad("BadRequest", "Failed to parse request. Required attribute 'ip_version' not specified"));
        }
        let (ra_mode, addr_mode) = (parse_mode(body, "ipv6_ra_mode")?, parse_mode(body, "ipv6_address_mode")?);
        let enable_dhcp = opt_bool(body, "enable_dhcp")?.unwrap_or(true);
        validate_v6_modes(version, &cidr, ra_mode.as_deref(), addr_mode.as_deref(), enable_dhcp)?;
        // no overlap with the network's other subnets
        let siblings = self.store.resource_list_by_parent("subnet", net_id).await?;
        for s in &siblings {
            if let Some(other) = subnet_cidr(s)
                && other.overlaps(&cidr)
            {
                return Err(Error::invalid(format!(
                    "Requested subnet with cidr: {cidr} for network: {net_id} overlaps with another subnet"
                )));
            }
        }
        let gateway = match body.get("gateway_ip") {
            None => cidr.default_gateway(),
            Some(Value::Null) => None,
            Some(Value::String(g)) if g.is_empty() => None,
            Some(Value::String(g)) => {
                let a = Addr::parse(g).ok_or_else(|| Error::invalid(format!("'{g}' is not a valid IP address")))?;
                if a.version != version {
                    return Err(Error::invalid(format!("'{g}' is not a valid IP address")));
                }
                check_gateway(&cidr, a)?;
                Some(a)
            }
            Some(v) => return Err(Error::invalid(format!("'{v}' is not a valid IP address"))),
        };
        let pools = match body.get("allocation_pools") {
            None | Some(Value::Null) => ipam::default_pools(&cidr, gateway),
            Some(v) => {
                let p = parse_pools(v, version)?;
                ipam::validate_pools(&cidr, &p, gateway).map_err(|m| Error::bad("BadRequest", m))?;
                if p.is_empty() { ipam::default_pools(&cidr, gateway) } else { p }
            }
        };
        let dns = match body.get("dns_nameservers") {
            None | Some(Value::Null) => vec![],
            Some(v) => parse_dns(v)?,
        };
        let routes = match body.get("host_routes") {
            None | Some(Value::Null) => vec![],
            Some(v) => parse_routes(v, version)?,
        };
        let id = new_id();
        let mut doc = standard(&id, &owner, &string_attr(body, "description", 255)?.unwrap_or_default());
        doc.insert("name".into(), json!(string_attr(body, "name", 255)?.unwrap_or_default()));
        doc.insert("network_id".into(), json!(net_id));
        doc.insert("ip_version".into(), json!(version));
        doc.insert("cidr".into(), json!(cidr.to_string()));
        doc.insert("gateway_ip".into(), json!(gateway.map(|g| g.to_string())));
        doc.insert("allocation_pools".into(), render_pools(version, &pools));
        doc.insert("dns_nameservers".into(), json!(dns));
        doc.insert("host_routes".into(), json!(routes));
        doc.insert("enable_dhcp".into(), json!(enable_dhcp));
        doc.insert("ipv6_ra_mode".into(), json!(ra_mode));
        doc.insert("ipv6_address_mode".into(), json!(addr_mode));
        doc.insert("subnetpool_id".into(), json!(pool_id));
        doc.insert("service_types".into(), json!([]));
        doc.insert("segment_id".into(), json!(null));
        doc.insert("dns_publish_fixed_ip".into(), json!(false));
        doc.insert("tags".into(), json!([]));
        let doc = Value::Object(doc);
        self.insert(SUBNET, &doc, net_id).await?;
        // a concurrent create may have slipped an overlapping subnet in: the one created later yields
        let mine = (doc["created_at"].as_str().unwrap_or("").to_string(), id.clone());
        for s in self.store.resource_list_by_parent("subnet", net_id).await? {
            let theirs = (str_of(&s, "created_at").to_string(), str_of(&s, "id").to_string());
            if theirs.1 != id && subnet_cidr(&s).is_some_and(|o| o.overlaps(&cidr)) && theirs < mine {
                self.store.resource_delete("subnet", &id).await?;
                return Err(Error::invalid(format!(
                    "Requested subnet with cidr: {cidr} for network: {net_id} overlaps with another subnet"
                )));
            }
        }
        let mut net = net;
        bump(&mut net);
        self.save(NETWORK, &net).await?;
        Ok(doc)
    }

    async fn check_pool_overlap(&self, pool_id: &str, cidr: &Cidr) -> Result<()> {
        for s in self.store.resource_list("subnet").await? {
            if str_of(&s, "subnetpool_id") == pool_id && subnet_cidr(&s).is_some_and(|c| c.overlaps(cidr)) {
                return Err(Error::bad("BadRequest", format!("Cidr {cidr} overlaps with another subnet of subnet pool {pool_id}")));
            }
        }
        Ok(())
    }

    pub(crate) async fn update_subnet(&self, _caller: &Caller<'_>, mut doc: Value, body: &Value) -> Result<Value> {
        known_attrs(body, SUBNET_ATTRS)?;
        for fixed in ["network_id", "ip_version", "cidr", "subnetpool_id", "prefixlen", "ipv6_ra_mode", "ipv6_address_mode"] {
            if let Some(v) = body.get(fixed)
                && v != &doc[fixed]
                && !(fixed == "cidr" && v.as_str() == doc[fixed].as_str())
            {
                return Err(Error::bad("HTTPBadRequest", format!("Cannot update read-only attribute {fixed}")));
            }
        }
        let cidr = subnet_cidr(&doc).ok_or_else(|| Error::invalid("stored subnet has no CIDR"))?;
        let version = cidr.version;
        if let Some(v) = string_attr(body, "name", 255)? {
            doc["name"] = json!(v);
        }
        if let Some(v) = string_attr(body, "description", 255)? {
            doc["description"] = json!(v);
        }
        if let Some(v) = opt_bool(body, "enable_dhcp")? {
            doc["enable_dhcp"] = json!(v);
        }
        let mut gateway = doc["gateway_ip"].as_str().and_then(Addr::parse);
        if let Some(g) = body.get("gateway_ip") {
            gateway = match g {
                Value::Null => None,
                Value::String(s) => {
                    let a = Addr::parse(s).filter(|a| a.version == version).ok_or_else(|| Error::invalid(format!("'{s}' is not a valid IP address")))?;
                    check_gateway(&cidr, a)?;
                    Some(a)
                }
                v => return Err(Error::invalid(format!("'{v}' is not a valid IP address"))),
            };
        }
        let pools = match body.get("allocation_pools") {
            Some(v) if !v.is_null() => parse_pools(v, version)?,
            _ => subnet_pools(&doc),
        };
        if body.get("allocation_pools").is_some() || body.get("gateway_ip").is_some() {
            ipam::validate_pools(&cidr, &pools, gateway).map_err(|m| Error::bad("BadRequest", m))?;
        }
        doc["gateway_ip"] = json!(gateway.map(|g| g.to_string()));
        doc["allocation_pools"] = render_pools(version, &pools);
        if let Some(v) = body.get("dns_nameservers") {
            doc["dns_nameservers"] = json!(if v.is_null() { vec![] } else { parse_dns(v)? });
        }
        if let Some(v) = body.get("host_routes") {
            doc["host_routes"] = json!(if v.is_null() { vec![] } else { parse_routes(v, version)? });
        }
        bump(&mut doc);
        self.save(SUBNET, &doc).await?;
        Ok(doc)
    }

    pub(crate) async fn delete_subnet(&self, _caller: &Caller<'_>, doc: Value) -> Result<()> {
        let id = str_of(&doc, "id").to_string();
        let auto = is_auto_address(&doc);
        let allocations = self.store.ip_list_subnet(&id).await?;
        let mut to_strip = Vec::new();
        for a in &allocations {
            let Some(port) = self.store.resource_get("port", &a.port_id).await? else { continue };
            let owner = str_of(&port, "device_owner");
            let releasable = owner == "network:dhcp" || (auto && !owner.starts_with("network:router"));
            if !releasable {
                return Err(Error::conflict(
                    "SubnetInUse",
                    format!("Unable to complete operation on subnet {id}: One or more ports have an IP allocation from this subnet."),
                ));
            }
            to_strip.push(port);
        }
        for mut port in to_strip {
            if let Some(ips) = port["fixed_ips"].as_array_mut() {
                ips.retain(|ip| str_of(ip, "subnet_id") != id);
            }
            bump(&mut port);
            self.save(super::PORT, &port).await?;
        }
        for a in allocations {
            self.store.ip_delete(&a.network_id, &a.ip_address).await?;
        }
        self.store.resource_delete("subnet", &id).await?;
        Ok(())
    }
}

/// Upstream's rules for `ipv6_ra_mode` and `ipv6_address_mode`.
pub(crate) fn validate_v6_modes(version: u8, cidr: &Cidr, ra: Option<&str>, addr: Option<&str>, enable_dhcp: bool) -> Result<()> {
    if version == 4 {
        if ra.is_some() || addr.is_some() {
            return Err(Error::invalid("ipv6_ra_mode or ipv6_address_mode cannot be set when ip_version is 4"));
        }
        return Ok(());
    }
    if let (Some(r), Some(a)) = (ra, addr)
        && r != a
    {
        return Err(Error::invalid(format!(
            "ipv6_ra_mode set to '{r}' with ipv6_address_mode set to '{a}' is not valid. If both attributes are set, they must be the same value"
        )));
    }
    if !enable_dhcp && (ra.is_some() || addr.is_some()) && (addr != Some("slaac") && ra != Some("slaac")) {
        return Err(Error::invalid(
            "ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False",
        ));
    }
    let auto = matches!(addr, Some("slaac") | Some("dhcpv6-stateless"));
    if auto && cidr.prefix != 64 {
        return Err(Error::invalid(format!(
            "Invalid CIDR {} for IPv6 address mode. OpenStack uses the EUI-64 address format, which requires the prefix to be /64",
            cidr.normalized()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v6_mode_combinations() {
        let c64 = Cidr::parse("2001:db8::/64").unwrap();
        let c80 = Cidr::parse("2001:db8::/80").unwrap();
        let v4 = Cidr::parse("10.0.0.0/24").unwrap();
        for (r, a) in [
            ("dhcpv6-stateless", "dhcpv6-stateful"),
            ("dhcpv6-stateless", "slaac"),
            ("slaac", "dhcpv6-stateful"),
            ("dhcpv6-stateful", "dhcpv6-stateless"),
            ("dhcpv6-stateful", "slaac"),
            ("slaac", "dhcpv6-stateless"),
        ] {
            assert!(validate_v6_modes(6, &c64, Some(r), Some(a), true).is_err(), "{r} {a}");
        }
        assert!(validate_v6_modes(6, &c64, Some("slaac"), Some("slaac"), true).is_ok());
        assert!(validate_v6_modes(6, &c64, None, Some("dhcpv6-stateless"), true).is_ok());
        assert!(validate_v6_modes(6, &c80, Some("slaac"), Some("slaac"), true).is_err());
        assert!(validate_v6_modes(6, &c80, Some("dhcpv6-stateful"), Some("dhcpv6-stateful"), true).is_ok());
        assert!(validate_v6_modes(4, &v4, Some("slaac"), None, true).is_err());
    }
}
