//! The service's side of the network agents' bus contract (`network-rpc`): the desired state of a host, the DHCP
//! ports agents serve from, and the notices of change fanned out to them.
//!
//! Agents are recorded as `agent` documents (host, type, tunnel endpoint, last report), the rows upstream's agents
//! API lists; a host's tunnel endpoint is how the other hosts of a VXLAN network reach its ports. An agent that
//! reports the `l3` capability is also recorded as an `L3 agent` row, as upstream lists its L3 agents.
//!
//! Routers are placed on the hosts of those agents with [`network_rpc::l3_host`] (deterministic, nothing
//! stored); a router's interface and gateway ports count as bound to its host wherever a host's state is computed
//! (the networks a host wires, the tunnel peers of the others), so a router's networks are wired on its host even
//! without an instance there.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use bus::{Bus, Dispatcher, RemoteError, ServerHandle};
use network_rpc::{
    AGENT_TOPIC, AGENT_TYPE, AddressPair, AgentReport, CAP_L3, DHCP_OWNER, DhcpOption, FixedIp, FloatingIpState, GetDhcpPort,
    GetHostState, HostRoute, HostState, NetworkChanged, NetworkState, PLUGIN_TOPIC, Peer, PortState, ReleaseDhcpPort,
    RouterAddress, RouterChanged, RouterPort, RouterState, SecurityGroupChanged, SecurityGroupRuleState, SecurityGroupState,
    Segment, SubnetState, UpdateDeviceDown, UpdateDeviceUp, dhcp_device_id, l3_host,
};
use serde_json::{Value, json};

use super::{
    Caller, Kind, NETWORK, Network, PORT, SECURITY_GROUP, SECURITY_GROUP_RULE, SUBNET, bump, new_id, now, ports::IpRequest, str_of,
    subnets::subnet_cidr,
};
use crate::error::{Error, Result};

fn to_remote(e: Error) -> RemoteError {
    let kind = match &e {
        Error::NotFound { kind, .. } | Error::BadRequest { kind, .. } | Error::Conflict { kind, .. } => *kind,
        _ => "InternalError",
    };
    RemoteError::new(kind, e.to_string())
}

/// An agent whose last report is older than this is taken for dead (upstream's `agent_down_time`, 75 s): ports
/// bound to its host go `ACTIVE` at binding, as nothing would report them plugged.
const AGENT_DOWN_TIME: chrono::TimeDelta = chrono::TimeDelta::seconds(75);

fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect()
}

pub(crate) fn port_state(p: &Value) -> PortState {
    PortState {
        id: str_of(p, "id").into(),
        network_id: str_of(p, "network_id").into(),
        mac_address: str_of(p, "mac_address").into(),
        fixed_ips: p["fixed_ips"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| FixedIp { subnet_id: str_of(f, "subnet_id").into(), ip_address: str_of(f, "ip_address").into() })
            .collect(),
        device_owner: str_of(p, "device_owner").into(),
        device_id: str_of(p, "device_id").into(),
        project_id: str_of(p, "project_id").into(),
        host: str_of(p, "binding:host_id").into(),
        admin_state_up: p["admin_state_up"].as_bool().unwrap_or(true),
        dns_name: str_of(p, "dns_name").into(),
        extra_dhcp_opts: p["extra_dhcp_opts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| DhcpOption {
                opt_name: str_of(o, "opt_name").into(),
                opt_value: match &o["opt_value"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
                ip_version: o["ip_version"].as_u64().unwrap_or(4) as u8,
            })
            .collect(),
        status: str_of(p, "status").into(),
        port_security_enabled: p["port_security_enabled"].as_bool().unwrap_or(true),
        security_groups: strings(&p["security_groups"]),
        allowed_address_pairs: p["allowed_address_pairs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| AddressPair { ip_address: str_of(a, "ip_address").into(), mac_address: str_of(a, "mac_address").into() })
            .collect(),
    }
}

/// A rule as agents get it.
fn rule_state(r: &Value) -> SecurityGroupRuleState {
    let opt = |k: &str| r[k].as_str().filter(|s| !s.is_empty()).map(str::to_string);
    SecurityGroupRuleState {
        id: str_of(r, "id").into(),
        direction: str_of(r, "direction").into(),
        ethertype: str_of(r, "ethertype").into(),
        protocol: match &r["protocol"] {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        },
        port_range_min: r["port_range_min"].as_i64(),
        port_range_max: r["port_range_max"].as_i64(),
        remote_ip_prefix: opt("remote_ip_prefix"),
        remote_group_id: opt("remote_group_id"),
    }
}

/// The addresses a port may send from: its fixed IPs and its allowed address pairs' addresses.
fn port_addresses(p: &Value) -> impl Iterator<Item = String> + '_ {
    let fixed = p["fixed_ips"].as_array().into_iter().flatten().map(|f| str_of(f, "ip_address"));
    let pairs = p["allowed_address_pairs"].as_array().into_iter().flatten().map(|a| str_of(a, "ip_address"));
    fixed.chain(pairs).filter(|a| !a.is_empty()).map(str::to_string)
}

fn subnet_state(s: &Value) -> SubnetState {
    SubnetState {
        id: str_of(s, "id").into(),
        cidr: str_of(s, "cidr").into(),
        ip_version: s["ip_version"].as_u64().unwrap_or(4) as u8,
        gateway_ip: s["gateway_ip"].as_str().map(str::to_string),
        enable_dhcp: s["enable_dhcp"].as_bool().unwrap_or(true),
        dns_nameservers: strings(&s["dns_nameservers"]),
        host_routes: s["host_routes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| HostRoute { destination: str_of(r, "destination").into(), nexthop: str_of(r, "nexthop").into() })
            .collect(),
        ipv6_ra_mode: s["ipv6_ra_mode"].as_str().map(str::to_string),
        ipv6_address_mode: s["ipv6_address_mode"].as_str().map(str::to_string),
    }
}

/// Whether DHCP serves subnet `s` (given `enable_dhcp`): IPv4, and IPv6 in a DHCPv6 address mode (SLAAC addresses
/// come from router advertisements alone).
fn serves_dhcp(s: &Value) -> bool {
    s["ip_version"] == 4 || matches!(s["ipv6_address_mode"].as_str(), Some("dhcpv6-stateful" | "dhcpv6-stateless"))
}

/// An agent record as the API shows it: `alive` when it reported within [`AGENT_DOWN_TIME`] of `now`.
fn agent_view(mut a: Value, now: chrono::DateTime<chrono::Utc>) -> Value {
    let alive = chrono::DateTime::parse_from_rfc3339(str_of(&a, "heartbeat_timestamp"))
        .is_ok_and(|t| now.signed_duration_since(t) <= AGENT_DOWN_TIME);
    a["alive"] = json!(alive);
    for (k, default) in [("description", json!("")), ("availability_zone", json!(null)), ("resources_synced", json!(null))] {
        if a.get(k).is_none() {
            a[k] = default;
        }
    }
    if str_of(&a, "agent_type") == L3_AGENT_TYPE && a["availability_zone"].is_null() {
        a["availability_zone"] = json!("nova");
    }
    a
}

/// The agent type of a host that hosts routers, as upstream's L3 agent.
pub(crate) const L3_AGENT_TYPE: &str = "L3 agent";

const ROUTER_INTERFACE: &str = "network:router_interface";
const ROUTER_GATEWAY: &str = "network:router_gateway";

fn is_router_port(p: &Value) -> bool {
    matches!(str_of(p, "device_owner"), ROUTER_INTERFACE | ROUTER_GATEWAY)
}

fn router_port(p: &Value, subnets: &BTreeMap<String, Value>) -> RouterPort {
    RouterPort {
        port_id: str_of(p, "id").into(),
        network_id: str_of(p, "network_id").into(),
        mac_address: str_of(p, "mac_address").into(),
        addresses: p["fixed_ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| {
                let s = subnets.get(str_of(f, "subnet_id"))?;
                let c = subnet_cidr(s)?;
                Some(RouterAddress {
                    subnet_id: str_of(f, "subnet_id").into(),
                    ip_address: str_of(f, "ip_address").into(),
                    prefixlen: c.prefix,
                    cidr: str_of(s, "cidr").into(),
                    gateway_ip: s["gateway_ip"].as_str().map(str::to_string),
                })
            })
            .collect(),
    }
}

/// A router as its host realises it, from the router, every port, every subnet and every floating IP.
fn router_state(r: &Value, ports: &[Value], subnets: &BTreeMap<String, Value>, fips: &[Value]) -> RouterState {
    let id = str_of(r, "id");
    let mine = |owner: &'static str| ports.iter().filter(move |p| str_of(p, "device_id") == id && str_of(p, "device_owner") == owner);
    let mut interfaces: Vec<RouterPort> = mine(ROUTER_INTERFACE).map(|p| router_port(p, subnets)).collect();
    interfaces.sort_by(|a, b| a.port_id.cmp(&b.port_id));
    let gateway = if r["external_gateway_info"].is_null() { None } else { mine(ROUTER_GATEWAY).next().map(|p| router_port(p, subnets)) };
    let mut floating_ips: Vec<FloatingIpState> = fips
        .iter()
        .filter(|f| str_of(f, "router_id") == id && f["port_id"].is_string() && f["fixed_ip_address"].is_string())
        .map(|f| FloatingIpState {
            id: str_of(f, "id").into(),
            floating_ip_address: str_of(f, "floating_ip_address").into(),
            fixed_ip_address: str_of(f, "fixed_ip_address").into(),
            port_id: str_of(f, "port_id").into(),
        })
        .collect();
    floating_ips.sort_by(|a, b| a.id.cmp(&b.id));
    RouterState {
        id: id.into(),
        admin_state_up: r["admin_state_up"].as_bool().unwrap_or(true),
        interfaces,
        gateway,
        enable_snat: r["external_gateway_info"]["enable_snat"].as_bool().unwrap_or(true),
        routes: r["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| HostRoute { destination: str_of(x, "destination").into(), nexthop: str_of(x, "nexthop").into() })
            .collect(),
        floating_ips,
    }
}

impl Network {
    /// Fans a [`NetworkChanged`] out to the agents after a change of a network, subnet or port (a
    /// [`SecurityGroupChanged`] after one of a security group or rule). A lost notice only delays an agent until its
    /// next resync, so failures are logged, never returned.
    pub(crate) async fn notify_agents(&self, kind: Kind, doc: &Value) {
        let Some(bus) = &self.bus else { return };
        let network_id = match kind {
            NETWORK => str_of(doc, "id"),
            SUBNET | PORT => str_of(doc, "network_id"),
            SECURITY_GROUP => return self.notify_security_group(str_of(doc, "id")).await,
            SECURITY_GROUP_RULE => return self.notify_security_group(str_of(doc, "security_group_id")).await,
            _ => return,
        };
        if let Err(error) = bus.fanout(AGENT_TOPIC, &NetworkChanged { network_id: network_id.into() }).await {
            tracing::warn!(%error, network_id, "cannot notify the network agents");
        }
    }

    /// Fans a [`RouterChanged`] out to the agents after a change of router `router_id` (its interfaces, gateway,
    /// routes or floating IPs included). Failures are logged, as for networks.
    pub(crate) async fn notify_router_agents(&self, router_id: &str) {
        let Some(bus) = &self.bus else { return };
        if let Err(error) = bus.fanout(AGENT_TOPIC, &RouterChanged { router_id: router_id.into() }).await {
            tracing::warn!(%error, router_id, "cannot notify the network agents");
        }
    }

    /// Records (or refreshes) `host`'s agent, and its L3 agent when it reports the capability.
    async fn record_agent(&self, host: &str, report: &AgentReport) -> Result<Vec<Value>> {
        let configurations = json!({
            "tunneling_ip": report.tunnel_ip,
            "interface_mappings": report.interface_mappings,
            "tunnel_types": if report.tunnel_ip.is_some() { json!(["vxlan"]) } else { json!([]) },
            "capabilities": report.capabilities,
        });
        self.record_agent_row(host, AGENT_TYPE, "neutron-linuxbridge-agent", configurations).await?;
        if report.capabilities.iter().any(|c| c == CAP_L3) {
            let configurations = json!({"agent_mode": "legacy", "interface_driver": "linuxbridge", "external_network_bridge": ""});
            self.record_agent_row(host, L3_AGENT_TYPE, "neutron-l3-agent", configurations).await?;
        } else {
            // a host that stopped hosting routers gives them up
            for a in self.store.resource_list("agent").await? {
                if str_of(&a, "host") == host && str_of(&a, "agent_type") == L3_AGENT_TYPE {
                    self.store.resource_delete("agent", str_of(&a, "id")).await?;
                }
            }
        }
        self.store.resource_list("agent").await
    }

    async fn record_agent_row(&self, host: &str, agent_type: &str, binary: &str, configurations: Value) -> Result<()> {
        let agents = self.store.resource_list("agent").await?;
        let mine = agents.iter().find(|a| str_of(a, "host") == host && str_of(a, "agent_type") == agent_type).cloned();
        match mine {
            Some(mut a) => {
                a["configurations"] = configurations;
                a["heartbeat_timestamp"] = json!(now());
                self.store.resource_update("agent", str_of(&a, "id"), &a).await?;
            }
            None => {
                let id = new_id();
                let doc = json!({
                    "id": id,
                    "host": host,
                    "agent_type": agent_type,
                    "binary": binary,
                    "topic": "N/A",
                    "admin_state_up": true,
                    "configurations": configurations,
                    "created_at": now(),
                    "started_at": now(),
                    "heartbeat_timestamp": now(),
                });
                self.store.resource_insert("agent", &id, "", "", &doc).await?;
            }
        }
        Ok(())
    }

    /// `GET /v2.0/agents`: every agent for admins, with `alive` from its last report; others see none (upstream
    /// filters agents, which have no owner, by `get_agent`).
    pub async fn agent_list(&self, caller: &Caller<'_>) -> Result<Vec<Value>> {
        if !caller.allowed("get_agent", "") {
            return Ok(vec![]);
        }
        let now = chrono::Utc::now();
        Ok(self.store.resource_list("agent").await?.into_iter().map(|a| agent_view(a, now)).collect())
    }

    /// `GET /v2.0/agents/{id}`; an agent the caller may not see is not found.
    pub async fn agent_show(&self, caller: &Caller<'_>, id: &str) -> Result<Value> {
        let a = self.agent_fetch(caller, "get_agent", id).await?;
        Ok(agent_view(a, chrono::Utc::now()))
    }

    /// `PUT /v2.0/agents/{id}`: `admin_state_up` (an L3 agent that is down gets no routers) and `description`.
    pub async fn agent_update(&self, caller: &Caller<'_>, id: &str, body: &Value) -> Result<Value> {
        let mut a = self.agent_fetch(caller, "update_agent", id).await?;
        let Some(fields) = body.as_object() else { return Err(Error::invalid("the agent must be an object")) };
        for (k, v) in fields {
            match (k.as_str(), v) {
                ("admin_state_up", Value::Bool(_)) => a["admin_state_up"] = v.clone(),
                ("admin_state_up", _) => return Err(Error::invalid(format!("'{v}' is not a valid boolean value"))),
                ("description", Value::Null) => a["description"] = json!(""),
                ("description", Value::String(d)) if d.chars().count() <= 255 => a["description"] = v.clone(),
                ("description", _) => return Err(Error::invalid("description must be a string of at most 255 characters")),
                (other, _) => return Err(Error::bad("HTTPBadRequest", format!("Cannot update read-only attribute {other}"))),
            }
        }
        self.store.resource_update("agent", id, &a).await?;
        if str_of(&a, "agent_type") == L3_AGENT_TYPE {
            // routers move to or from this host
            for r in self.store.resource_list("router").await? {
                self.notify_router_agents(str_of(&r, "id")).await;
            }
        }
        Ok(agent_view(a, chrono::Utc::now()))
    }

    /// `DELETE /v2.0/agents/{id}`: the record goes; an agent still running records itself again on its next report.
    pub async fn agent_delete(&self, caller: &Caller<'_>, id: &str) -> Result<()> {
        self.agent_fetch(caller, "delete_agent", id).await?;
        self.store.resource_delete("agent", id).await?;
        Ok(())
    }

    async fn agent_fetch(&self, caller: &Caller<'_>, rule: &str, id: &str) -> Result<Value> {
        let not_found = || Error::not_found("AgentNotFound", format!("Agent {id} could not be found."));
        if !caller.allowed("get_agent", "") {
            return Err(not_found());
        }
        caller.enforce(rule, "")?;
        self.store.resource_get("agent", id).await?.ok_or_else(not_found)
    }

    /// Whether `host` has a network agent that reported within [`AGENT_DOWN_TIME`].
    pub(crate) async fn host_has_agent(&self, host: &str) -> Result<bool> {
        let agents = self.store.resource_list("agent").await?;
        let now = chrono::Utc::now();
        Ok(agents.iter().any(|a| {
            str_of(a, "host") == host
                && str_of(a, "agent_type") == AGENT_TYPE
                && chrono::DateTime::parse_from_rfc3339(str_of(a, "heartbeat_timestamp"))
                    .is_ok_and(|t| now.signed_duration_since(t) <= AGENT_DOWN_TIME)
        }))
    }

    /// `host`'s agent plugged (`up`) or lost (`!up`) the device of `port_id`: the port goes `ACTIVE` (if its admin
    /// state is up) or `DOWN`, and compute hears of an instance's port changing. A port bound to another host,
    /// or gone, is left alone (a late report after a move or a delete).
    pub async fn update_device(&self, port_id: &str, host: &str, up: bool) -> Result<()> {
        let Some(mut port) = self.store.resource_get("port", port_id).await? else {
            tracing::debug!(port_id, host, up, "device report for a port that is gone");
            return Ok(());
        };
        if str_of(&port, "binding:host_id") != host {
            tracing::debug!(port_id, host, up, "device report from a host the port is not bound to");
            return Ok(());
        }
        let old = str_of(&port, "status").to_string();
        let new = if up && port["admin_state_up"].as_bool().unwrap_or(true) { "ACTIVE" } else { "DOWN" };
        if old == new {
            return Ok(());
        }
        port["status"] = json!(new);
        bump(&mut port);
        self.save(PORT, &port).await?;
        tracing::info!(port_id, host, from = %old, to = new, "port status");
        self.notify_agents(PORT, &port).await;
        if self.config.notify_nova_on_port_status_changes
            && let Some(nova) = &self.nova
            && let Some(event) = crate::nova::event_for(&port, &old, new)
        {
            nova.send(event);
        }
        Ok(())
    }

    /// The desired state of `host`: every network with a non-DHCP port bound to it, with all its subnets and
    /// ports and the tunnel endpoints of the other hosts with ports on it; the routers placed on it, and their
    /// networks.
    pub async fn host_state(&self, host: &str, report: &AgentReport) -> Result<HostState> {
        let agents = self.record_agent(host, report).await?;
        let tunnel_of: BTreeMap<&str, &str> = agents
            .iter()
            .filter(|a| str_of(a, "agent_type") == AGENT_TYPE)
            .filter_map(|a| Some((str_of(a, "host"), a["configurations"]["tunneling_ip"].as_str()?)))
            .collect();
        let l3_hosts: Vec<&str> = agents
            .iter()
            .filter(|a| str_of(a, "agent_type") == L3_AGENT_TYPE && a["admin_state_up"].as_bool().unwrap_or(true))
            .map(|a| str_of(a, "host"))
            .collect();
        let routers = self.store.resource_list("router").await?;
        // router id → its host; only routers that are up wire their ports there (a router that is down goes to
        // its host too, which removes it)
        let router_host: BTreeMap<&str, &str> =
            routers.iter().filter_map(|r| Some((str_of(r, "id"), l3_host(str_of(r, "id"), l3_hosts.iter().copied())?))).collect();
        let up: HashSet<&str> = routers.iter().filter(|r| r["admin_state_up"].as_bool().unwrap_or(true)).map(|r| str_of(r, "id")).collect();
        let mut ports = self.store.resource_list("port").await?;
        for p in &mut ports {
            if is_router_port(p)
                && up.contains(str_of(p, "device_id"))
                && let Some(h) = router_host.get(str_of(p, "device_id"))
            {
                p["binding:host_id"] = json!(h);
            }
        }
        let wanted: HashSet<&str> = ports
            .iter()
            .filter(|p| str_of(p, "binding:host_id") == host && str_of(p, "device_owner") != DHCP_OWNER)
            .map(|p| str_of(p, "network_id"))
            .collect();
        let mut networks = Vec::new();
        for net_id in wanted {
            let Some(net) = self.store.resource_get("network", net_id).await? else { continue };
            let net_ports: Vec<&Value> = ports.iter().filter(|p| str_of(p, "network_id") == net_id).collect();
            let mut peers: BTreeMap<&str, Peer> = BTreeMap::new();
            for p in &net_ports {
                let h = str_of(p, "binding:host_id");
                if h.is_empty() || h == host {
                    continue;
                }
                let Some(ip) = tunnel_of.get(h) else { continue };
                peers
                    .entry(h)
                    .or_insert_with(|| Peer { host: h.into(), tunnel_ip: (*ip).into(), macs: vec![] })
                    .macs
                    .push(str_of(p, "mac_address").into());
            }
            networks.push(NetworkState {
                id: net_id.into(),
                name: str_of(&net, "name").into(),
                project_id: str_of(&net, "project_id").into(),
                admin_state_up: net["admin_state_up"].as_bool().unwrap_or(true),
                mtu: net["mtu"].as_u64().unwrap_or(1500) as u32,
                segment: Segment {
                    network_type: str_of(&net, "provider:network_type").into(),
                    physical_network: net["provider:physical_network"].as_str().map(str::to_string),
                    segmentation_id: net["provider:segmentation_id"].as_i64(),
                },
                subnets: self.store.resource_list_by_parent("subnet", net_id).await?.iter().map(subnet_state).collect(),
                ports: net_ports.into_iter().map(port_state).collect(),
                peers: peers.into_values().collect(),
            });
        }
        networks.sort_by(|a, b| a.id.cmp(&b.id));
        let mut host_routers = Vec::new();
        if router_host.values().any(|h| *h == host) {
            let subnets: BTreeMap<String, Value> =
                self.store.resource_list("subnet").await?.into_iter().map(|s| (str_of(&s, "id").to_string(), s)).collect();
            let fips = self.store.resource_list("floatingip").await?;
            for r in routers.iter().filter(|r| router_host.get(str_of(r, "id")) == Some(&host)) {
                host_routers.push(router_state(r, &ports, &subnets, &fips));
            }
        }
        let security_groups = self.host_security_groups(host, &ports).await?;
        Ok(HostState { networks, routers: host_routers, security_groups })
    }

    /// The security groups of the filtered ports bound to `host` with their rules, and the groups those rules name
    /// as remote groups with their members' addresses (ports anywhere, of any network).
    async fn host_security_groups(&self, host: &str, ports: &[Value]) -> Result<Vec<SecurityGroupState>> {
        let used: BTreeSet<&str> = ports
            .iter()
            .filter(|p| str_of(p, "binding:host_id") == host && p["port_security_enabled"].as_bool().unwrap_or(true))
            .flat_map(|p| p["security_groups"].as_array().into_iter().flatten().filter_map(Value::as_str))
            .collect();
        if used.is_empty() {
            return Ok(vec![]);
        }
        let rules = self.store.resource_list("security_group_rule").await?;
        let mut groups: BTreeMap<&str, SecurityGroupState> = BTreeMap::new();
        let mut remotes = BTreeSet::new();
        for id in &used {
            let Some(sg) = self.store.resource_get("security_group", id).await? else { continue };
            let rules: Vec<SecurityGroupRuleState> =
                rules.iter().filter(|r| str_of(r, "security_group_id") == *id).map(rule_state).collect();
            remotes.extend(rules.iter().filter_map(|r| r.remote_group_id.clone()));
            let stateful = sg["stateful"].as_bool().unwrap_or(true);
            groups.insert(id, SecurityGroupState { id: (*id).into(), stateful, rules, members: vec![] });
        }
        for remote in &remotes {
            let mut members: Vec<String> = ports
                .iter()
                .filter(|p| p["security_groups"].as_array().is_some_and(|g| g.iter().any(|g| g.as_str() == Some(remote))))
                .flat_map(port_addresses)
                .collect();
            members.sort();
            members.dedup();
            match groups.get_mut(remote.as_str()) {
                Some(g) => g.members = members,
                None => {
                    if self.store.resource_get("security_group", remote).await?.is_some() {
                        let g = SecurityGroupState { id: remote.clone(), stateful: true, rules: vec![], members };
                        groups.insert(remote, g);
                    }
                }
            }
        }
        Ok(groups.into_values().collect())
    }

    /// Fans a [`SecurityGroupChanged`] out to the agents after a change of a security group or its rules; as with
    /// [`NetworkChanged`], a lost notice only delays an agent until its next resync.
    pub(crate) async fn notify_security_group(&self, security_group_id: &str) {
        let Some(bus) = &self.bus else { return };
        let notice = SecurityGroupChanged { security_group_id: security_group_id.into() };
        if let Err(error) = bus.fanout(AGENT_TOPIC, &notice).await {
            tracing::warn!(%error, security_group_id, "cannot notify the network agents");
        }
    }

    /// The DHCP port of `host` on `network_id`: created when missing, given an address on each DHCP-enabled
    /// subnet that lacks one, bound to `host`.
    pub async fn dhcp_port(&self, network_id: &str, host: &str) -> Result<PortState> {
        let net = self.fetch(NETWORK, network_id).await?;
        let device_id = dhcp_device_id(host, network_id);
        let subnets = self.store.resource_list_by_parent("subnet", network_id).await?;
        let existing = self
            .store
            .resource_list_by_parent("port", network_id)
            .await?
            .into_iter()
            .find(|p| str_of(p, "device_owner") == DHCP_OWNER && str_of(p, "device_id") == device_id);
        let mut port = match existing {
            Some(p) => p,
            None => {
                let mut p = self
                    .create_internal_port(network_id, str_of(&net, "project_id"), DHCP_OWNER, &device_id, Some(&[]))
                    .await?;
                p["binding:host_id"] = json!(host);
                p["binding:vif_type"] = json!("bridge");
                p["binding:vif_details"] = json!({"port_filter": true, "connectivity": "l2"});
                self.save(PORT, &p).await?;
                p
            }
        };
        let keep: Vec<Value> = port["fixed_ips"].as_array().cloned().unwrap_or_default();
        let missing: Vec<IpRequest> = subnets
            .iter()
            .filter(|s| s["enable_dhcp"].as_bool().unwrap_or(true) && serves_dhcp(s))
            .filter(|s| !keep.iter().any(|f| str_of(f, "subnet_id") == str_of(s, "id")))
            .map(|s| IpRequest { subnet_id: Some(str_of(s, "id").into()), ip_address: None })
            .collect();
        if !missing.is_empty() {
            let id = str_of(&port, "id").to_string();
            let mac = str_of(&port, "mac_address").to_string();
            let mut ips = keep.clone();
            ips.extend(self.allocate_ips(network_id, &id, &mac, Some(&missing), DHCP_OWNER, &[]).await?);
            port["fixed_ips"] = json!(ips);
            bump(&mut port);
            self.save(PORT, &port).await?;
        }
        Ok(port_state(&port))
    }

    /// Deletes `host`'s DHCP port on `network_id`, if it has one.
    pub async fn release_dhcp_port(&self, network_id: &str, host: &str) -> Result<()> {
        let device_id = dhcp_device_id(host, network_id);
        for p in self.store.resource_list_by_parent("port", network_id).await? {
            if str_of(&p, "device_owner") == DHCP_OWNER && str_of(&p, "device_id") == device_id {
                let id = str_of(&p, "id").to_string();
                self.store.port_delete(&id).await?;
            }
        }
        Ok(())
    }

    /// Serves the agents' calls on [`PLUGIN_TOPIC`] as server `server`.
    pub async fn serve_agents(&self, bus: &Bus, server: &str) -> Result<ServerHandle> {
        let n = self.clone();
        let d = Dispatcher::new().on(move |m: GetHostState| {
            let n = n.clone();
            async move { n.host_state(&m.host, &m.report).await.map_err(to_remote) }
        });
        let n = self.clone();
        let d = d.on(move |m: GetDhcpPort| {
            let n = n.clone();
            async move { n.dhcp_port(&m.network_id, &m.host).await.map_err(to_remote) }
        });
        let n = self.clone();
        let d = d.on(move |m: ReleaseDhcpPort| {
            let n = n.clone();
            async move { n.release_dhcp_port(&m.network_id, &m.host).await.map_err(to_remote) }
        });
        let n = self.clone();
        let d = d.on(move |m: UpdateDeviceUp| {
            let n = n.clone();
            async move { n.update_device(&m.port_id, &m.host, true).await.map_err(to_remote) }
        });
        let n = self.clone();
        let d = d.on(move |m: UpdateDeviceDown| {
            let n = n.clone();
            async move { n.update_device(&m.port_id, &m.host, false).await.map_err(to_remote) }
        });
        Ok(bus.serve(PLUGIN_TOPIC, server, d).await?)
    }
}
