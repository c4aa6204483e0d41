//! The bus contract between the network service (`network`) and the per-host network agents (`network-agent`), the
//! part upstream's plugin RPC (`q-plugin`) and agent notifier (`q-agent-notifier`) topics play.
//!
//! * The service serves [`PLUGIN_TOPIC`]. An agent asks it for the desired state of its host with
//!   [`GetHostState`] (every network with a port bound to the host, its subnets and ports, and the tunnel
//!   endpoints of the other hosts on it), and for the port its DHCP server uses on a network with
//!   [`GetDhcpPort`] / [`ReleaseDhcpPort`] (device owner `network:dhcp`, one per network and host).
//! * An agent tells the service when a bound port's tap device is on its network's bridge ([`UpdateDeviceUp`]) and
//!   when it is gone ([`UpdateDeviceDown`]), as upstream's `update_device_up`/`update_device_down`: the port goes
//!   `ACTIVE` / `DOWN`, and compute hears of it (`network-vif-plugged` / `network-vif-unplugged`).
//! * Agents serve [`AGENT_TOPIC`] as server `<host>`; the service fans [`NetworkChanged`] out to them after every
//!   change of a network, subnet or port, [`RouterChanged`] after every change of a router, its interfaces, its
//!   gateway or its floating IPs, and [`SecurityGroupChanged`] after every change of a security group or its
//!   rules. The host state carries the security groups of the host's ports (rules, and the member addresses of
//!   the groups rules name as remote groups). An agent answers either by fetching its host's state again, so a lost
//!   notification costs only time until the next one or the agent's periodic resync.
//! * Routers travel inside [`HostState`] (`routers`), not through an RPC of their own: a router's interfaces
//!   and gateway make their networks part of the host's state (their bridges are needed even without an
//!   instance), so one answer computed from one reading of the database keeps networks and routers consistent,
//!   and one round trip per pass is all an agent spends. An agent that reports [`CAP_L3`] is eligible to host
//!   routers; the service places each router on one of them (see [`l3_host`]).
//!
//! Agents never touch the database. Method names and field names are part of the wire format and must stay stable.

use bus::Rpc;
use serde::{Deserialize, Serialize};

/// The topic the network service serves for agents.
pub const PLUGIN_TOPIC: &str = "q-plugin";
/// The topic network agents serve, one server per host.
pub const AGENT_TOPIC: &str = "q-agent-notifier";
/// The device owner of a DHCP server's port.
pub const DHCP_OWNER: &str = "network:dhcp";
/// The agent type network agents report, as upstream's Linux bridge agent.
pub const AGENT_TYPE: &str = "Linux bridge agent";

/// The IP protocol names security group rules accept (Neutron's), with their numbers; `ip` and `hopopt` (0) mean
/// every protocol. The service validates rules with it and the agent turns names into numbers with it.
pub const IP_PROTOCOLS: &[(&str, u8)] = &[
    ("ah", 51),
    ("dccp", 33),
    ("egp", 8),
    ("esp", 50),
    ("gre", 47),
    ("hopopt", 0),
    ("icmp", 1),
    ("igmp", 2),
    ("ip", 0),
    ("ipip", 4),
    ("ipv6-encap", 41),
    ("ipv6-frag", 44),
    ("ipv6-icmp", 58),
    ("icmpv6", 58),
    ("ipv6-nonxt", 59),
    ("ipv6-opts", 60),
    ("ipv6-route", 43),
    ("ospf", 89),
    ("pgm", 113),
    ("rsvp", 46),
    ("sctp", 132),
    ("tcp", 6),
    ("udp", 17),
    ("udplite", 136),
    ("vrrp", 112),
];

/// A network's segment, as the agent wires it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// `flat`, `vlan`, `vxlan`, `geneve` or `local`.
    pub network_type: String,
    pub physical_network: Option<String>,
    /// The VLAN id or VNI.
    pub segmentation_id: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoute {
    pub destination: String,
    pub nexthop: String,
}

/// A subnet, with what DHCP hands out on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetState {
    pub id: String,
    pub cidr: String,
    pub ip_version: u8,
    pub gateway_ip: Option<String>,
    pub enable_dhcp: bool,
    pub dns_nameservers: Vec<String>,
    pub host_routes: Vec<HostRoute>,
    pub ipv6_ra_mode: Option<String>,
    pub ipv6_address_mode: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedIp {
    pub subnet_id: String,
    pub ip_address: String,
}

/// One extra DHCP option of a port (`extra_dhcp_opts`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpOption {
    pub opt_name: String,
    pub opt_value: String,
    pub ip_version: u8,
}

/// A port of a network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortState {
    pub id: String,
    pub network_id: String,
    pub mac_address: String,
    pub fixed_ips: Vec<FixedIp>,
    pub device_owner: String,
    /// The instance's uuid for a `compute:*` port.
    pub device_id: String,
    /// The port's project, which the metadata proxy names the instance's project by (empty from a service that
    /// predates it).
    #[serde(default)]
    pub project_id: String,
    /// `binding:host_id` (empty when unbound).
    pub host: String,
    pub admin_state_up: bool,
    /// `dns_name`, empty when unset.
    pub dns_name: String,
    pub extra_dhcp_opts: Vec<DhcpOption>,
    /// The port's `status` (`ACTIVE`, `DOWN`, `BUILD`); the agent reports a plugged port that is not `ACTIVE`
    /// and an `ACTIVE` one whose device is gone.
    #[serde(default)]
    pub status: String,
    /// Whether the port is filtered (security groups and anti-spoofing); off when the service does not say.
    #[serde(default)]
    pub port_security_enabled: bool,
    /// The ids of the port's security groups.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// More addresses (and MACs) the port may send from.
    #[serde(default)]
    pub allowed_address_pairs: Vec<AddressPair>,
}

/// An allowed address pair of a port: an address or prefix, and the MAC it may come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPair {
    /// An address or a CIDR.
    pub ip_address: String,
    pub mac_address: String,
}

/// One rule of a security group, as the API shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroupRuleState {
    pub id: String,
    /// `ingress` or `egress`.
    pub direction: String,
    /// `IPv4` or `IPv6`.
    pub ethertype: String,
    /// A name (`tcp`, `icmp`, `ipv6-icmp`, …) or a decimal number; `None` for any protocol.
    pub protocol: Option<String>,
    /// The port range, or for ICMP the type (min) and code (max).
    pub port_range_min: Option<i64>,
    pub port_range_max: Option<i64>,
    pub remote_ip_prefix: Option<String>,
    pub remote_group_id: Option<String>,
}

/// A security group a host needs: one its ports are in, or one their rules name as a remote group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroupState {
    pub id: String,
    pub stateful: bool,
    /// Its rules (empty for a group the host needs only as a remote group).
    pub rules: Vec<SecurityGroupRuleState>,
    /// For a group some rule names as its remote group: the fixed IPs and allowed address pair addresses
    /// (addresses or CIDRs) of every port in it, wherever bound.
    pub members: Vec<String>,
}

/// Another host with ports on a network: where the network's tunnel reaches them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub host: String,
    pub tunnel_ip: String,
    /// The MACs of the network's ports bound to that host.
    pub macs: Vec<String>,
}

/// One network as a host must realise it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkState {
    pub id: String,
    pub name: String,
    pub project_id: String,
    pub admin_state_up: bool,
    pub mtu: u32,
    pub segment: Segment,
    pub subnets: Vec<SubnetState>,
    /// Every port of the network (DHCP answers for all of them, wherever they are bound).
    pub ports: Vec<PortState>,
    /// The other hosts with ports on the network and a known tunnel endpoint.
    pub peers: Vec<Peer>,
}

/// An agent's report of itself, sent with each [`GetHostState`] (upstream's agent state report).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReport {
    /// The local end of this host's VXLAN tunnels, if it has any.
    pub tunnel_ip: Option<String>,
    /// `physnet:interface` pairs this host can wire flat and VLAN networks to.
    pub interface_mappings: Vec<String>,
    /// What else the agent does besides layer 2 and DHCP: [`CAP_L3`] when it hosts routers.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// The capability of an agent that hosts routers (upstream's L3 agent on the same host).
pub const CAP_L3: &str = "l3";

/// The desired state of `host`: every network with a port bound to it (DHCP ports aside).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetHostState {
    pub host: String,
    pub report: AgentReport,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    /// The networks of the host's ports, and those of the routers it hosts.
    pub networks: Vec<NetworkState>,
    /// Every security group of the ports bound to the host, and every group their rules name as a remote group.
    #[serde(default)]
    pub security_groups: Vec<SecurityGroupState>,
    /// The routers placed on this host (only for an agent that reports [`CAP_L3`]).
    #[serde(default)]
    pub routers: Vec<RouterState>,
}

/// An address of a router port on one subnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterAddress {
    pub subnet_id: String,
    pub ip_address: String,
    /// The subnet's prefix length.
    pub prefixlen: u8,
    /// The subnet's CIDR.
    pub cidr: String,
    /// The subnet's gateway (on the external network: the router's next hop).
    pub gateway_ip: Option<String>,
}

/// A router port: an interface on a tenant network (`network:router_interface`) or the external gateway
/// (`network:router_gateway`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterPort {
    pub port_id: String,
    pub network_id: String,
    pub mac_address: String,
    pub addresses: Vec<RouterAddress>,
}

/// A floating IP associated with a port behind the router.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingIpState {
    pub id: String,
    pub floating_ip_address: String,
    pub fixed_ip_address: String,
    pub port_id: String,
}

/// A router as its host realises it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterState {
    pub id: String,
    pub admin_state_up: bool,
    pub interfaces: Vec<RouterPort>,
    pub gateway: Option<RouterPort>,
    /// Source NAT of the tenant subnets to the gateway's address (`external_gateway_info.enable_snat`).
    pub enable_snat: bool,
    /// Static routes (`routes`).
    pub routes: Vec<HostRoute>,
    pub floating_ips: Vec<FloatingIpState>,
}

impl Rpc for GetHostState {
    const METHOD: &'static str = "get_host_state";
    type Reply = HostState;
}

/// The DHCP port of `host` on `network_id`, created (or given an address on every DHCP-enabled subnet that lacks
/// one) as needed and bound to `host`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetDhcpPort {
    pub network_id: String,
    pub host: String,
}

impl Rpc for GetDhcpPort {
    const METHOD: &'static str = "get_dhcp_port";
    type Reply = PortState;
}

/// `host` no longer serves DHCP on `network_id`: its DHCP port goes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReleaseDhcpPort {
    pub network_id: String,
    pub host: String,
}

impl Rpc for ReleaseDhcpPort {
    const METHOD: &'static str = "release_dhcp_port";
    type Reply = ();
}

/// Fanned out to every agent after a change of network `network_id` (its subnets or ports).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetworkChanged {
    pub network_id: String,
}

impl Rpc for NetworkChanged {
    const METHOD: &'static str = "network_changed";
    type Reply = ();
}

/// Fanned out to every agent after a change of router `router_id`: its attributes, interfaces, gateway or
/// floating IPs, or its deletion.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RouterChanged {
    pub router_id: String,
}

impl Rpc for RouterChanged {
    const METHOD: &'static str = "router_changed";
    type Reply = ();
}

/// The host of `router_id` among the hosts whose agents report [`CAP_L3`]: the one with the highest hash of
/// (router id, host) — rendezvous hashing, so the choice needs no stored state, is the same in every process and
/// moves only the routers of a host that joins or leaves. Upstream schedules a router to one L3 agent too (its
/// chance and least-routers schedulers); this one is deterministic.
pub fn l3_host<'a>(router_id: &str, hosts: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    hosts.into_iter().max_by_key(|h| (fnv1a(&[router_id.as_bytes(), b"/", h.as_bytes()]), *h))
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The tap device of port `port_id`, bound to `host`, is plugged into its network's bridge: the port becomes
/// `ACTIVE` (upstream's `update_device_up`). A port bound elsewhere, or gone, is left alone.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UpdateDeviceUp {
    pub port_id: String,
    pub host: String,
}

impl Rpc for UpdateDeviceUp {
    const METHOD: &'static str = "update_device_up";
    type Reply = ();
}

/// The tap device of port `port_id`, bound to `host`, is gone: the port becomes `DOWN` (upstream's
/// `update_device_down`). A port bound elsewhere, or gone, is left alone.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UpdateDeviceDown {
    pub port_id: String,
    pub host: String,
}

impl Rpc for UpdateDeviceDown {
    const METHOD: &'static str = "update_device_down";
    type Reply = ();
}

/// Fanned out to every agent after a change of security group `security_group_id` or of its rules (changes of
/// its member ports come as [`NetworkChanged`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SecurityGroupChanged {
    pub security_group_id: String,
}

impl Rpc for SecurityGroupChanged {
    const METHOD: &'static str = "security_group_changed";
    type Reply = ();
}

/// The device owner's DHCP port id for `host` on a network: upstream's `dhcp<host uuid>-<network id>`, with the
/// host name itself (device ids are free text).
pub fn dhcp_device_id(host: &str, network_id: &str) -> String {
    format!("dhcp-{host}-{network_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_are_stable() {
        assert_eq!(GetHostState::METHOD, "get_host_state");
        assert_eq!(GetDhcpPort::METHOD, "get_dhcp_port");
        assert_eq!(ReleaseDhcpPort::METHOD, "release_dhcp_port");
        assert_eq!(NetworkChanged::METHOD, "network_changed");
        assert_eq!(RouterChanged::METHOD, "router_changed");
        assert_eq!(UpdateDeviceUp::METHOD, "update_device_up");
        assert_eq!(UpdateDeviceDown::METHOD, "update_device_down");
        assert_eq!(SecurityGroupChanged::METHOD, "security_group_changed");
        assert_eq!(dhcp_device_id("cn1", "n1"), "dhcp-cn1-n1");
    }

    #[test]
    fn routers_go_to_one_l3_host_and_stay_there() {
        assert_eq!(l3_host("r1", []), None);
        assert_eq!(l3_host("r1", ["a"]), Some("a"));
        let hosts = ["a", "b", "c", "d"];
        let placed: Vec<&str> = (0..40).map(|i| l3_host(&format!("r{i}"), hosts).unwrap()).collect();
        // the same everywhere, whatever the order of the hosts
        let reversed: Vec<&str> = (0..40).map(|i| l3_host(&format!("r{i}"), hosts.iter().rev().copied()).unwrap()).collect();
        assert_eq!(placed, reversed);
        assert!(hosts.iter().all(|h| placed.contains(h)), "{placed:?}");
        // a host leaving moves only its own routers
        for (i, p) in placed.iter().enumerate() {
            let without_d = l3_host(&format!("r{i}"), ["a", "b", "c"]).unwrap();
            if *p != "d" {
                assert_eq!(without_d, *p);
            }
        }
    }

    #[test]
    fn older_peers_interoperate() {
        // a report and a state without the router fields still parse
        let r: AgentReport = serde_json::from_str(r#"{"tunnel_ip":null,"interface_mappings":[]}"#).unwrap();
        assert!(r.capabilities.is_empty());
        let s: HostState = serde_json::from_str(r#"{"networks":[]}"#).unwrap();
        assert!(s.routers.is_empty());
    }
}
