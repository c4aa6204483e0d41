//! Ports: fixed IPs from IPAM (each address claimed through the allocation table's key, so concurrent creates
//! never share one), SLAAC addresses, MAC addresses unique per network, security groups, allowed address pairs,
//! port security, extra DHCP options and host binding through the driver.

use std::collections::HashSet;

use rand::seq::IndexedRandom;
use serde_json::{Value, json};

use super::subnets::{is_auto_address, subnet_cidr, subnet_pools};
use super::{Caller, NETWORK, Network, PORT, SECURITY_GROUP, bump, known_attrs, new_id, opt_bool, owner_of, standard, str_of, string_attr};
use crate::{
    agent::{PortBinding, Segment},
    error::{Error, Result},
    ipam::{self, Addr},
    store::{IpAllocation, NewPort, PortInsert},
};

const PORT_ATTRS: &[&str] = &[
    "name",
    "network_id",
    "admin_state_up",
    "mac_address",
    "fixed_ips",
    "device_id",
    "device_owner",
    "security_groups",
    "allowed_address_pairs",
    "port_security_enabled",
    "binding:host_id",
    "binding:vnic_type",
    "binding:profile",
    "extra_dhcp_opts",
    "description",
    "project_id",
    "tenant_id",
    "tags",
    "dns_name",
    "qos_policy_id",
    "propagate_uplink_status",
];

const VNIC_TYPES: &[&str] =
    &["normal", "direct", "macvtap", "baremetal", "direct-physical", "virtio-forwarder", "smart-nic", "vdpa", "remote-managed"];

/// A requested fixed IP: a subnet, an address, or both.
#[derive(Clone, Debug)]
pub(crate) struct IpRequest {
    pub subnet_id: Option<String>,
    pub ip_address: Option<String>,
}

pub(crate) fn parse_fixed_ips(v: &Value) -> Result<Vec<IpRequest>> {
    let Some(list) = v.as_array() else { return Err(Error::invalid(format!("Invalid data format for fixed IP: '{v}'"))) };
    let mut out = Vec::new();
    for f in list {
        let Some(obj) = f.as_object() else { return Err(Error::invalid(format!("Invalid data format for fixed IP: '{f}'"))) };
        for k in obj.keys() {
            if k != "subnet_id" && k != "ip_address" {
                return Err(Error::invalid(format!("Invalid data format for fixed IP: '{f}'")));
            }
        }
        let ip = obj.get("ip_address").and_then(Value::as_str).map(str::to_string);
        if let Some(ip) = &ip
            && Addr::parse(ip).is_none()
        {
            return Err(Error::invalid(format!("'{ip}' is not a valid IP address")));
        }
        out.push(IpRequest { subnet_id: obj.get("subnet_id").and_then(Value::as_str).map(str::to_string), ip_address: ip });
    }
    Ok(out)
}

/// Hides the admin-only binding attributes from other callers.
pub(crate) fn hide_binding(caller: &Caller<'_>, mut doc: Value) -> Value {
    if !caller.is_admin()
        && let Some(m) = doc.as_object_mut()
    {
        for k in ["binding:host_id", "binding:profile", "binding:vif_type", "binding:vif_details"] {
            m.remove(k);
        }
    }
    doc
}

fn is_router_owner(owner: &str) -> bool {
    matches!(owner, "network:router_interface" | "network:router_gateway" | "network:router_interface_distributed" | "network:ha_router_replicated_interface")
}

fn exhausted(net_id: &str) -> Error {
    Error::conflict("IpAddressGenerationFailure", format!("No more IP addresses available on network {net_id}."))
}

/// How often a port's writes are tried again after a concurrent port took one of its candidates.
const CLAIM_ATTEMPTS: usize = 16;

/// The addresses a port is to hold, chosen but not yet claimed.
struct IpPlan {
    /// The port's `fixed_ips`, in order, kept ones included.
    fixed: Vec<Value>,
    /// The new claims.
    claims: Vec<IpAllocation>,
    /// Beside each claim: whether the request named the address (a conflict is then the caller's error, not a
    /// lost race).
    named: Vec<bool>,
    /// Addresses not to pick: the plan's own and those lost to other ports in earlier attempts.
    avoid: HashSet<String>,
}

impl IpPlan {
    fn new(avoid: HashSet<String>) -> IpPlan {
        IpPlan { fixed: Vec::new(), claims: Vec::new(), named: Vec::new(), avoid }
    }

    fn claim(&mut self, subnet: &Value, port_id: &str, ip: String, named: bool) {
        let sid = str_of(subnet, "id");
        self.fixed.push(json!({"subnet_id": sid, "ip_address": ip}));
        self.avoid.insert(ip.clone());
        let alloc = IpAllocation { network_id: str_of(subnet, "network_id").into(), ip_address: ip, subnet_id: sid.into(), port_id: port_id.into() };
        self.claims.push(alloc);
        self.named.push(named);
    }
}

fn already_allocated(a: &IpAllocation) -> Error {
    Error::conflict("IpAddressAlreadyAllocated", format!("IP address {} already allocated in subnet {}", a.ip_address, a.subnet_id))
}

fn mac_in_use(net_id: &str, mac: &str) -> Error {
    Error::conflict("MacAddressInUse", format!("Unable to complete operation for network {net_id}. The mac address {mac} is in use."))
}

/// A MAC the caller asked for, checked and in canonical form.
fn requested_mac(m: &str) -> Result<String> {
    let bytes = ipam::parse_mac(m).ok_or_else(|| Error::invalid(format!("'{m}' is not a valid MAC address")))?;
    if bytes[0] & 1 == 1 || bytes == [0; 6] {
        return Err(Error::invalid(format!("'{m}' is not a valid MAC address")));
    }
    Ok(ipam::format_mac(bytes))
}

impl Network {
    /// Picks a free address of `subnet`'s pools that is not in `avoid`; `None` if the pools are exhausted.
    ///
    /// Addresses sampled in growing windows from the pools' low end are checked in one query and a free one from
    /// the earliest window is taken, so the cost does not grow with the number of ports. Only when no sample is
    /// free (a nearly full subnet) are all allocations read. The pick is claimed later, through the allocation
    /// table's key, which settles races between ports.
    async fn pick_from_pools(&self, subnet: &Value, avoid: &HashSet<String>) -> Result<Option<String>> {
        let Some(cidr) = subnet_cidr(subnet) else { return Ok(None) };
        let pools = subnet_pools(subnet);
        let gateway = subnet["gateway_ip"].as_str().and_then(Addr::parse).map(|g| g.value);
        let text = |v: u128| Addr::new(cidr.version, v).to_string();
        let levels = ipam::sample_candidates(&pools, 8, 8, &mut rand::rng());
        let strings: Vec<String> = levels.iter().flatten().filter(|v| Some(**v) != gateway).map(|v| text(*v)).collect();
        let taken = self.store.ip_taken(str_of(subnet, "network_id"), &strings).await?;
        let free = levels
            .iter()
            .map(|l| {
                l.iter().filter(|v| Some(**v) != gateway).map(|v| text(*v)).filter(|t| !taken.contains(t) && !avoid.contains(t)).collect::<Vec<_>>()
            })
            .find(|l| !l.is_empty());
        if let Some(free) = free {
            return Ok(free.choose(&mut rand::rng()).cloned());
        }
        // Nearly full: read every allocation and take one of the first free addresses.
        let mut taken: HashSet<u128> =
            self.store.ip_list_subnet(str_of(subnet, "id")).await?.iter().filter_map(|a| Addr::parse(&a.ip_address)).map(|a| a.value).collect();
        taken.extend(gateway);
        taken.extend(avoid.iter().filter_map(|a| Addr::parse(a)).map(|a| a.value));
        let mut candidates = Vec::new();
        'pools: for p in &pools {
            let mut v = p.start;
            while v <= p.end {
                if !taken.contains(&v) {
                    candidates.push(v);
                    if candidates.len() >= 16 {
                        break 'pools;
                    }
                }
                if v == u128::MAX {
                    break;
                }
                v += 1;
            }
        }
        Ok(candidates.choose(&mut rand::rng()).map(|v| text(*v)))
    }

    /// Allocates the fixed IPs of an existing port (the added ones of an update, a DHCP port's missing ones):
    /// each new address is claimed through the allocation table's key, and a lost race picks again.
    pub(crate) async fn allocate_ips(
        &self,
        net_id: &str,
        port_id: &str,
        mac: &str,
        requests: Option<&[IpRequest]>,
        device_owner: &str,
        keep: &[Value],
    ) -> Result<Vec<Value>> {
        let subnets = self.store.resource_list_by_parent("subnet", net_id).await?;
        let mut avoid = HashSet::new();
        for _ in 0..CLAIM_ATTEMPTS {
            let plan = self.plan_ips(net_id, port_id, mac, requests, device_owner, keep, &subnets, avoid.clone()).await?;
            let mut claimed = Vec::new();
            let mut lost = None;
            for (a, named) in plan.claims.iter().zip(&plan.named) {
                if !self.store.ip_insert(a).await? {
                    lost = Some((a, *named));
                    break;
                }
                claimed.push(a);
            }
            let Some((a, named)) = lost else { return Ok(plan.fixed) };
            for c in claimed {
                self.store.ip_delete(net_id, &c.ip_address).await?;
            }
            if named {
                return Err(already_allocated(a));
            }
            avoid.insert(a.ip_address.clone());
        }
        Err(exhausted(net_id))
    }

    /// Stores a new port: plans its addresses, then writes its MAC, addresses and document in one transaction.
    /// When a concurrent port took a candidate the port picks again; a MAC or address the request named is a 409.
    /// `doc` is complete but for `fixed_ips`; `named_mac` says its MAC is the caller's, not one to pick again;
    /// `bind` (the network) asks for a host binding.
    async fn store_new_port(
        &self,
        mut doc: Value,
        named_mac: bool,
        requests: Option<&[IpRequest]>,
        bind: Option<&Value>,
    ) -> Result<Value> {
        let id = str_of(&doc, "id").to_string();
        let net_id = str_of(&doc, "network_id").to_string();
        let subnets = self.store.resource_list_by_parent("subnet", &net_id).await?;
        let owner = str_of(&doc, "project_id").to_string();
        let device_owner = str_of(&doc, "device_owner").to_string();
        let mut mac = str_of(&doc, "mac_address").to_string();
        let mut avoid = HashSet::new();
        for _ in 0..CLAIM_ATTEMPTS {
            let plan = self.plan_ips(&net_id, &id, &mac, requests, &device_owner, &[], &subnets, avoid.clone()).await?;
            doc["mac_address"] = json!(mac);
            doc["fixed_ips"] = json!(plan.fixed);
            if let Some(net) = bind {
                self.apply_binding(net, &mut doc, false).await?;
            }
            let port = NewPort { id: &id, network_id: &net_id, project_id: &owner, mac_address: &mac, ips: &plan.claims, doc: &doc };
            match self.store.port_insert(&port).await? {
                PortInsert::Done => return Ok(doc),
                PortInsert::MacTaken if named_mac => return Err(mac_in_use(&net_id, &mac)),
                PortInsert::MacTaken => {
                    // address pairs without a MAC of their own carry the port's
                    let fresh = ipam::random_mac();
                    for p in doc["allowed_address_pairs"].as_array_mut().into_iter().flatten() {
                        if p["mac_address"] == json!(mac) {
                            p["mac_address"] = json!(fresh);
                        }
                    }
                    mac = fresh;
                }
                PortInsert::IpTaken(i) => {
                    let a = &plan.claims[i];
                    if plan.named[i] {
                        return Err(already_allocated(a));
                    }
                    avoid.insert(a.ip_address.clone());
                }
                PortInsert::IdTaken => return Err(Error::conflict("Conflict", format!("Port {id} already exists."))),
            }
        }
        Err(exhausted(&net_id))
    }

    /// Chooses the fixed IPs of a port (or the added ones of an update, around `keep`) without claiming them.
    #[allow(clippy::too_many_arguments)]
    async fn plan_ips(
        &self,
        net_id: &str,
        port_id: &str,
        mac: &str,
        requests: Option<&[IpRequest]>,
        device_owner: &str,
        keep: &[Value],
        subnets: &[Value],
        avoid: HashSet<String>,
    ) -> Result<IpPlan> {
        let mut plan = IpPlan::new(avoid);
        let router = is_router_owner(device_owner);
        let mac_bytes = ipam::parse_mac(mac).unwrap_or([0xfa, 0x16, 0x3e, 0, 0, 0]);
        match requests {
            None => {
                for version in [4, 6] {
                    let mut tried = false;
                    let mut got = false;
                    for s in subnets.iter().filter(|s| s["ip_version"] == version && !(version == 6 && is_auto_address(s))) {
                        tried = true;
                        if let Some(ip) = self.pick_from_pools(s, &plan.avoid).await? {
                            plan.claim(s, port_id, ip, false);
                            got = true;
                            break;
                        }
                    }
                    if tried && !got {
                        return Err(exhausted(net_id));
                    }
                }
            }
            Some(reqs) => {
                for r in reqs {
                    let subnet = match (&r.subnet_id, &r.ip_address) {
                        (Some(sid), _) => subnets.iter().find(|s| str_of(s, "id") == sid).ok_or_else(|| {
                            Error::invalid(format!(
                                "Failed to create port on network {net_id}, because fixed_ips included invalid subnet {sid}."
                            ))
                        })?,
                        (None, Some(ip)) => {
                            let a = Addr::parse(ip).ok_or_else(|| Error::invalid(format!("'{ip}' is not a valid IP address")))?;
                            subnets.iter().find(|s| subnet_cidr(s).is_some_and(|c| c.contains(a))).ok_or_else(|| {
                                Error::invalid(format!("IP address {ip} is not a valid IP for any of the subnets on the specified network."))
                            })?
                        }
                        (None, None) => return Err(Error::invalid("Invalid data format for fixed IP: '{}'")),
                    };
                    let sid = str_of(subnet, "id").to_string();
                    let cidr = subnet_cidr(subnet).ok_or_else(|| Error::invalid("subnet without CIDR"))?;
                    match &r.ip_address {
                        Some(ip) => {
                            let a = Addr::parse(ip).ok_or_else(|| Error::invalid(format!("'{ip}' is not a valid IP address")))?;
                            if !cidr.contains(a) || (cidr.version == 4 && cidr.size() > 2 && (a.value == cidr.first() || a.value == cidr.last())) {
                                return Err(Error::bad(
                                    "InvalidIpForSubnet",
                                    format!("IP address {ip} is not a valid IP for the specified subnet."),
                                ));
                            }
                            let ip = a.to_string();
                            let existing = json!({"subnet_id": sid, "ip_address": ip});
                            if keep.contains(&existing) {
                                plan.fixed.push(existing);
                                continue;
                            }
                            if is_auto_address(subnet) && !router && ip != ipam::eui64(&cidr, mac_bytes).to_string() {
                                return Err(Error::invalid(format!(
                                    "IPv6 address {ip} cannot be directly assigned to a port on subnet {sid} as the subnet is configured for automatic addresses"
                                )));
                            }
                            plan.claim(subnet, port_id, ip, true);
                        }
                        None => {
                            if let Some(k) = keep.iter().find(|k| str_of(k, "subnet_id") == sid && !plan.fixed.contains(k)) {
                                plan.fixed.push(k.clone());
                                continue;
                            }
                            if is_auto_address(subnet) && !router {
                                plan.claim(subnet, port_id, ipam::eui64(&cidr, mac_bytes).to_string(), true);
                            } else {
                                let ip = self.pick_from_pools(subnet, &plan.avoid).await?.ok_or_else(|| exhausted(net_id))?;
                                plan.claim(subnet, port_id, ip, false);
                            }
                        }
                    }
                }
            }
        }
        if !router {
            for s in subnets.iter().filter(|s| is_auto_address(s)) {
                let sid = str_of(s, "id");
                if plan.fixed.iter().any(|o| str_of(o, "subnet_id") == sid) {
                    continue;
                }
                if let Some(k) = keep.iter().find(|k| str_of(k, "subnet_id") == sid) {
                    plan.fixed.push(k.clone());
                    continue;
                }
                if !keep.is_empty() {
                    continue;
                }
                let Some(cidr) = subnet_cidr(s) else { continue };
                plan.claim(s, port_id, ipam::eui64(&cidr, mac_bytes).to_string(), true);
            }
        }
        Ok(plan)
    }

    async fn check_security_groups(&self, caller: &Caller<'_>, v: &Value, owner: &str) -> Result<Vec<String>> {
        let Some(list) = v.as_array() else { return Err(Error::invalid(format!("'{v}' is not a list"))) };
        let mut out = Vec::new();
        for g in list {
            let id = g.as_str().ok_or_else(|| Error::invalid(format!("'{g}' is not a valid UUID")))?;
            let sg = self.store.resource_get("security_group", id).await?;
            let ok = match &sg {
                Some(sg) => str_of(sg, "project_id") == owner || caller.is_admin() || self.visible(caller, SECURITY_GROUP, sg).await?,
                None => false,
            };
            if !ok {
                return Err(Error::not_found("SecurityGroupNotFound", format!("Security group {id} does not exist")));
            }
            if !out.contains(&id.to_string()) {
                out.push(id.to_string());
            }
        }
        Ok(out)
    }

    fn parse_address_pairs(v: &Value, mac: &str) -> Result<Vec<Value>> {
        let Some(list) = v.as_array() else { return Err(Error::invalid(format!("'{v}' is not a list"))) };
        let mut out: Vec<Value> = Vec::new();
        for p in list {
            let Some(ip) = p.get("ip_address").and_then(Value::as_str) else {
                return Err(Error::bad("AllowedAddressPairsMissingIP", "AllowedAddressPair must contain ip_address"));
            };
            if ipam::Cidr::parse(ip).is_none() {
                return Err(Error::invalid(format!("'{ip}' is not a valid IP address")));
            }
            let m = match p.get("mac_address").and_then(Value::as_str) {
                Some(m) => ipam::format_mac(ipam::parse_mac(m).ok_or_else(|| Error::invalid(format!("'{m}' is not a valid MAC address")))?),
                None => mac.to_string(),
            };
            let pair = json!({"ip_address": ip, "mac_address": m});
            if out.contains(&pair) {
                return Err(Error::bad("DuplicateAddressPairInRequest", format!("Request contains duplicate address pair: mac_address {m} ip_address {ip}.")));
            }
            out.push(pair);
        }
        Ok(out)
    }

    fn parse_dhcp_opts(v: &Value) -> Result<Vec<Value>> {
        let Some(list) = v.as_array() else { return Err(Error::invalid(format!("'{v}' is not a list"))) };
        let mut out = Vec::new();
        for o in list {
            let Some(name) = o.get("opt_name").and_then(Value::as_str) else {
                return Err(Error::invalid(format!("Invalid data format for extra DHCP option: '{o}'")));
            };
            let version = o.get("ip_version").and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))).unwrap_or(4);
            if version != 4 && version != 6 {
                return Err(Error::invalid(format!("Invalid data format for extra DHCP option: '{o}'")));
            }
            out.push(json!({"opt_name": name, "opt_value": o.get("opt_value").cloned().unwrap_or(Value::Null), "ip_version": version}));
        }
        Ok(out)
    }

    /// The network's segment, as the driver wires it.
    fn segment_of(net: &Value) -> Segment {
        Segment {
            network_type: str_of(net, "provider:network_type").to_string(),
            physical_network: net["provider:physical_network"].as_str().map(str::to_string),
            segmentation_id: net["provider:segmentation_id"].as_i64(),
        }
    }

    /// Binds or unbinds `port` per its `binding:host_id`, updating the binding attributes and status. On a host
    /// with a live network agent the port is `DOWN` until the agent reports its device plugged
    /// (`update_device_up`), as upstream's Linux bridge mechanism driver binds it (`same_host`: a port that stays
    /// on its host keeps its status); elsewhere the driver's binding makes it `ACTIVE` at once.
    async fn apply_binding(&self, net: &Value, port: &mut Value, same_host: bool) -> Result<()> {
        let host = str_of(port, "binding:host_id").to_string();
        let id = str_of(port, "id").to_string();
        if host.is_empty() {
            self.driver.unbind_port(&id);
            port["binding:vif_type"] = json!("unbound");
            port["binding:vif_details"] = json!({});
            port["status"] = json!("DOWN");
            return Ok(());
        }
        let binding = PortBinding {
            port_id: id,
            network_id: str_of(port, "network_id").into(),
            host,
            mac_address: str_of(port, "mac_address").into(),
            fixed_ips: port["fixed_ips"].as_array().into_iter().flatten().map(|i| str_of(i, "ip_address").to_string()).collect(),
            vnic_type: str_of(port, "binding:vnic_type").into(),
            segment: Self::segment_of(net),
            admin_state_up: port["admin_state_up"].as_bool().unwrap_or(true),
        };
        let agent = self.host_has_agent(&binding.host).await?;
        match self.driver.bind_port(&binding) {
            Some(_) if agent => {
                port["binding:vif_type"] = json!("bridge");
                port["binding:vif_details"] = json!({"port_filter": true, "connectivity": "l2"});
                let keep = same_host && binding.admin_state_up && str_of(port, "status") == "ACTIVE";
                port["status"] = json!(if keep { "ACTIVE" } else { "DOWN" });
            }
            Some(r) => {
                port["binding:vif_type"] = json!(r.vif_type);
                port["binding:vif_details"] = r.vif_details;
                port["status"] = json!(if binding.admin_state_up { "ACTIVE" } else { "DOWN" });
            }
            None => {
                port["binding:vif_type"] = json!("binding_failed");
                port["binding:vif_details"] = json!({});
                port["status"] = json!("DOWN");
            }
        }
        Ok(())
    }

    pub(crate) async fn create_port(&self, caller: &Caller<'_>, body: &Value) -> Result<Value> {
        known_attrs(body, PORT_ATTRS)?;
        let (net_id, net) = self.requested_network(caller, body).await?;
        let owner = owner_of(caller, body)?;
        caller.enforce("create_port", &owner)?;
        let net_owner = str_of(&net, "project_id").to_string();
        if body.get("mac_address").is_some() {
            caller.enforce("create_port:mac_address", &net_owner)?;
        }
        if body["fixed_ips"].as_array().is_some_and(|f| f.iter().any(|i| i.get("ip_address").is_some())) {
            caller.enforce("create_port:fixed_ips:ip_address", &net_owner)?;
        }
        for b in ["binding:host_id", "binding:profile"] {
            if body.get(b).is_some() {
                caller.enforce(&format!("create_port:{b}"), &owner)?;
            }
        }
        let device_owner = string_attr(body, "device_owner", 255)?.unwrap_or_default();
        if device_owner.starts_with("network:") && !device_owner.is_empty() && net_owner != owner {
            caller.enforce("create_port:device_owner", &net_owner)?;
        }
        self.check_quota(&owner, "port").await?;
        let port_security = opt_bool(body, "port_security_enabled")?.unwrap_or(net["port_security_enabled"].as_bool().unwrap_or(true));
        let requests = match body.get("fixed_ips") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_fixed_ips(v)?),
        };
        let vnic = string_attr(body, "binding:vnic_type", 64)?.unwrap_or_else(|| "normal".into());
        if !VNIC_TYPES.contains(&vnic.as_str()) {
            return Err(Error::invalid(format!("'{vnic}' is not in {VNIC_TYPES:?}")));
        }
        let profile = match body.get("binding:profile") {
            None | Some(Value::Null) => json!({}),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(v) => return Err(Error::invalid(format!("'{v}' is not a dictionary"))),
        };
        let sgs = match body.get("security_groups") {
            Some(v) if !v.is_null() => Some(self.check_security_groups(caller, v, &owner).await?),
            _ => None,
        };
        let id = new_id();
        let named_mac = string_attr(body, "mac_address", 64)?.map(|m| requested_mac(&m)).transpose()?;
        let mac = named_mac.clone().unwrap_or_else(ipam::random_mac);
        let pairs = match body.get("allowed_address_pairs") {
            Some(v) if !v.is_null() => Self::parse_address_pairs(v, &mac)?,
            _ => vec![],
        };
        let sgs = match sgs {
            Some(s) => s,
            None if port_security && !device_owner.starts_with("network:") => vec![self.ensure_default_sg(&owner).await?],
            None => vec![],
        };
        if !port_security && (!sgs.is_empty() || !pairs.is_empty()) {
            return Err(if !pairs.is_empty() {
                Error::conflict("AddressPairAndPortSecurityRequired", "Port Security must be enabled in order to have allowed address pairs on a port.")
            } else {
                Error::bad("PortSecurityAndIPRequiredForSecurityGroups", "Port security must be enabled and port must have an IP address in order to use security groups.")
            });
        }
        let dhcp_opts = match body.get("extra_dhcp_opts") {
            Some(v) if !v.is_null() => Self::parse_dhcp_opts(v)?,
            _ => vec![],
        };
        let mut doc = standard(&id, &owner, &string_attr(body, "description", 255)?.unwrap_or_default());
        doc.insert("name".into(), json!(string_attr(body, "name", 255)?.unwrap_or_default()));
        doc.insert("network_id".into(), json!(net_id));
        doc.insert("admin_state_up".into(), json!(opt_bool(body, "admin_state_up")?.unwrap_or(true)));
        doc.insert("status".into(), json!("DOWN"));
        doc.insert("mac_address".into(), json!(mac));
        doc.insert("fixed_ips".into(), json!([]));
        doc.insert("device_id".into(), json!(string_attr(body, "device_id", 255)?.unwrap_or_default()));
        doc.insert("device_owner".into(), json!(device_owner));
        doc.insert("security_groups".into(), json!(sgs));
        doc.insert("allowed_address_pairs".into(), json!(pairs));
        doc.insert("extra_dhcp_opts".into(), json!(dhcp_opts));
        doc.insert("port_security_enabled".into(), json!(port_security));
        doc.insert("binding:host_id".into(), json!(string_attr(body, "binding:host_id", 255)?.unwrap_or_default()));
        doc.insert("binding:vnic_type".into(), json!(vnic));
        doc.insert("binding:profile".into(), profile);
        doc.insert("binding:vif_type".into(), json!("unbound"));
        doc.insert("binding:vif_details".into(), json!({}));
        doc.insert("tags".into(), json!([]));
        doc.insert("propagate_uplink_status".into(), json!(false));
        self.store_new_port(Value::Object(doc), named_mac.is_some(), requests.as_deref(), Some(&net)).await
    }

    /// Creates a port on behalf of the service (router interfaces and gateways, floating IPs).
    pub(crate) async fn create_internal_port(
        &self,
        net_id: &str,
        owner: &str,
        device_owner: &str,
        device_id: &str,
        requests: Option<&[IpRequest]>,
    ) -> Result<Value> {
        let mut doc = standard(&new_id(), owner, "");
        for (k, v) in [
            ("name", json!("")),
            ("network_id", json!(net_id)),
            ("admin_state_up", json!(true)),
            ("status", json!(if device_owner == "network:floatingip" { "N/A" } else { "ACTIVE" })),
            ("mac_address", json!(ipam::random_mac())),
            ("fixed_ips", json!([])),
            ("device_id", json!(device_id)),
            ("device_owner", json!(device_owner)),
            ("security_groups", json!([])),
            ("allowed_address_pairs", json!([])),
            ("extra_dhcp_opts", json!([])),
            ("port_security_enabled", json!(false)),
            ("binding:host_id", json!("")),
            ("binding:vnic_type", json!("normal")),
            ("binding:profile", json!({})),
            ("binding:vif_type", json!("unbound")),
            ("binding:vif_details", json!({})),
            ("tags", json!([])),
            ("propagate_uplink_status", json!(false)),
        ] {
            doc.insert(k.into(), v);
        }
        self.store_new_port(Value::Object(doc), false, requests, None).await
    }

    pub(crate) async fn update_port(&self, caller: &Caller<'_>, mut doc: Value, body: &Value) -> Result<Value> {
        known_attrs(body, PORT_ATTRS)?;
        if let Some(v) = body.get("network_id")
            && v.as_str() != doc["network_id"].as_str()
        {
            return Err(Error::bad("HTTPBadRequest", "Cannot update read-only attribute network_id"));
        }
        let owner = str_of(&doc, "project_id").to_string();
        let net_id = str_of(&doc, "network_id").to_string();
        let net = self.fetch(NETWORK, &net_id).await?;
        let id = str_of(&doc, "id").to_string();
        for b in ["binding:host_id", "binding:profile"] {
            if body.get(b).is_some() {
                caller.enforce(&format!("update_port:{b}"), &owner)?;
            }
        }
        if let Some(v) = string_attr(body, "name", 255)? {
            doc["name"] = json!(v);
        }
        if let Some(v) = string_attr(body, "description", 255)? {
            doc["description"] = json!(v);
        }
        if let Some(v) = opt_bool(body, "admin_state_up")? {
            doc["admin_state_up"] = json!(v);
        }
        if let Some(v) = string_attr(body, "device_id", 255)? {
            doc["device_id"] = json!(v);
        }
        if let Some(v) = string_attr(body, "device_owner", 255)? {
            doc["device_owner"] = json!(v);
        }
        if let Some(m) = string_attr(body, "mac_address", 64)? {
            caller.enforce("update_port:mac_address", &owner)?;
            let m = requested_mac(&m)?;
            if m != str_of(&doc, "mac_address") {
                if !str_of(&doc, "binding:host_id").is_empty() && str_of(&doc, "binding:vif_type") != "unbound" {
                    return Err(Error::conflict("PortBound", format!("Unable to complete operation on port {id}, port is already bound")));
                }
                // claim the new address first (its key refuses a MAC in use), then drop the port's old one
                let old = str_of(&doc, "mac_address").to_string();
                if !self.store.mac_insert(&net_id, &m, &id).await? {
                    return Err(mac_in_use(&net_id, &m));
                }
                self.store.mac_delete(&net_id, &old).await?;
                doc["mac_address"] = json!(m);
            }
        }
        if let Some(v) = opt_bool(body, "port_security_enabled")? {
            doc["port_security_enabled"] = json!(v);
        }
        if let Some(v) = body.get("security_groups") {
            doc["security_groups"] = json!(if v.is_null() { vec![] } else { self.check_security_groups(caller, v, &owner).await? });
        }
        if let Some(v) = body.get("allowed_address_pairs") {
            doc["allowed_address_pairs"] =
                json!(if v.is_null() { vec![] } else { Self::parse_address_pairs(v, str_of(&doc, "mac_address"))? });
        }
        if doc["port_security_enabled"].as_bool() == Some(false) {
            if doc["allowed_address_pairs"].as_array().is_some_and(|a| !a.is_empty()) {
                return Err(Error::conflict(
                    "AddressPairAndPortSecurityRequired",
                    "Port Security must be enabled in order to have allowed address pairs on a port.",
                ));
            }
            if doc["security_groups"].as_array().is_some_and(|a| !a.is_empty()) {
                if body.get("security_groups").is_some() || body.get("port_security_enabled").is_none() {
                    return Err(Error::conflict(
                        "PortSecurityAndIPRequiredForSecurityGroups",
                        "Port security must be enabled and port must have an IP address in order to use security groups.",
                    ));
                }
                return Err(Error::conflict(
                    "PortSecurityPortHasSecurityGroup",
                    "Port has security group associated. Cannot disable port security or ip address until security group is removed",
                ));
            }
        }
        if let Some(v) = body.get("extra_dhcp_opts") {
            let new = if v.is_null() { vec![] } else { Self::parse_dhcp_opts(v)? };
            let mut merged: Vec<Value> = doc["extra_dhcp_opts"].as_array().cloned().unwrap_or_default();
            for o in new {
                merged.retain(|m| !(m["opt_name"] == o["opt_name"] && m["ip_version"] == o["ip_version"]));
                if !o["opt_value"].is_null() {
                    merged.push(o);
                }
            }
            doc["extra_dhcp_opts"] = json!(merged);
        }
        if let Some(v) = body.get("fixed_ips") {
            caller.enforce("update_port:fixed_ips", &owner)?;
            let reqs = if v.is_null() { vec![] } else { parse_fixed_ips(v)? };
            let keep: Vec<Value> = doc["fixed_ips"].as_array().cloned().unwrap_or_default();
            let new = self
                .allocate_ips(&net_id, &id, str_of(&doc, "mac_address"), Some(&reqs), str_of(&doc, "device_owner"), &keep)
                .await?;
            for old in &keep {
                if !new.contains(old) {
                    self.store.ip_delete(&net_id, str_of(old, "ip_address")).await?;
                }
            }
            doc["fixed_ips"] = json!(new);
        }
        if let Some(v) = string_attr(body, "binding:vnic_type", 64)? {
            if !VNIC_TYPES.contains(&v.as_str()) {
                return Err(Error::invalid(format!("'{v}' is not in {VNIC_TYPES:?}")));
            }
            doc["binding:vnic_type"] = json!(v);
        }
        if let Some(v) = body.get("binding:profile") {
            doc["binding:profile"] = if v.is_null() { json!({}) } else { v.clone() };
        }
        let old_host = str_of(&doc, "binding:host_id").to_string();
        if let Some(v) = body.get("binding:host_id") {
            doc["binding:host_id"] = json!(v.as_str().unwrap_or(""));
        }
        let rebind = body.get("binding:host_id").is_some() || body.get("admin_state_up").is_some() || body.get("fixed_ips").is_some();
        if rebind && !str_of(&doc, "device_owner").starts_with("network:") {
            let same_host = old_host == str_of(&doc, "binding:host_id");
            self.apply_binding(&net, &mut doc, same_host).await?;
        }
        bump(&mut doc);
        self.save(PORT, &doc).await?;
        Ok(doc)
    }

    /// Deletes a port, releasing its addresses and MAC; `internal` allows router and floating IP ports.
    pub(crate) async fn delete_port(&self, _caller: &Caller<'_>, doc: Value, internal: bool) -> Result<()> {
        let id = str_of(&doc, "id").to_string();
        let owner = str_of(&doc, "device_owner");
        if !internal && (is_router_owner(owner) || owner == "network:floatingip") && !str_of(&doc, "device_id").is_empty() {
            let device = str_of(&doc, "device_id");
            let exists = self.store.resource_get("router", device).await?.is_some()
                || self.store.resource_get("floatingip", device).await?.is_some();
            if exists {
                return Err(Error::conflict(
                    "L3PortInUse",
                    format!("Port {id} cannot be deleted directly via the port API: has device owner {owner}."),
                ));
            }
        }
        // floating IPs lose their association (and their router its NAT)
        for mut f in self.store.resource_list("floatingip").await? {
            if str_of(&f, "port_id") == id {
                let router = f["router_id"].as_str().map(str::to_string);
                f["port_id"] = Value::Null;
                f["fixed_ip_address"] = Value::Null;
                f["router_id"] = Value::Null;
                f["status"] = json!("DOWN");
                bump(&mut f);
                self.save(super::FLOATINGIP, &f).await?;
                if let Some(router) = router {
                    self.notify_router_agents(&router).await;
                }
            }
        }
        self.driver.unbind_port(&id);
        self.store.port_delete(&id).await?;
        Ok(())
    }
}
