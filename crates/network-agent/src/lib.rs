//! The per-host network agent: the data plane of the networks whose ports are bound to this host, on Linux
//! bridges, as upstream's Linux bridge agent and DHCP agent.
//!
//! * [`agent`] — [`Agent`]: serves `q-agent-notifier` as server `<host>`, fetches the host's desired state from the
//!   network service (`network-rpc`) at start, on every change notice and when the set of tap devices changes,
//!   and hands it to the reconciler;
//! * [`reconcile`] — makes the host match a desired state and removes what no network wants (orphans of a crash
//!   included): a bridge `brq<network id[:11]>` per network, a VXLAN device `vxlan-<vni>` on it for VXLAN networks
//!   with a flooding entry per peer host, the physical interface for flat networks, the bound ports' taps
//!   `tap<port id[:11]>` as bridge ports (reported to the network service as plugged, `update_device_up`, or
//!   gone, `update_device_down`), and DHCP;
//! * [`dhcp`] — dnsmasq's files and process for one network, run in the namespace `qdhcp-<network id>` behind a
//!   veth pair (`tap<dhcp port[:11]>` on the bridge, `ns-<dhcp port[:11]>` inside);
//! * [`metadata`] — the metadata proxy: `169.254.169.254:80` inside a namespace, each source address mapped to its
//!   port's instance and the request forwarded, signed, to the compute metadata API;
//! * [`router`] — routers (upstream's L3 agent): a namespace `qrouter-<router id>` per router placed on this
//!   host, its interfaces and gateway as veth pairs on the networks' bridges, routes, and NAT in one nftables
//!   table;
//! * [`firewall`] — security groups and anti-spoofing per bound port in nftables (a `bridge` table that marks
//!   frames by port, a stateful `inet` table under `br_netfilter` that filters by the marks);
//! * [`netlink`] — links, addresses and forwarding entries over rtnetlink, in any namespace.
//!
//! The agent never touches a database.

pub mod agent;
pub mod dhcp;
pub mod metadata;
pub mod firewall;
pub mod namespace;
pub mod netlink;
pub mod ra;
pub mod reconcile;
pub mod router;

use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

pub use agent::{Agent, AgentHandle};

/// The network agent's one error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("{0}")]
    Command(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("bus: {0}")]
    Bus(#[from] bus::Error),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }
}

/// The agent's settings (upstream's `[DEFAULT] host`, `[vxlan]`, `[linux_bridge]` and DHCP agent options).
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub host: String,
    /// The local end of VXLAN tunnels (`[vxlan] local_ip`); without it VXLAN networks get a bridge but no tunnel.
    pub tunnel_ip: Option<Ipv4Addr>,
    /// The UDP port of VXLAN tunnels (IANA's 4789).
    pub vxlan_port: u16,
    /// `physnet:interface` pairs for flat networks (`[linux_bridge] physical_interface_mappings`).
    pub interface_mappings: Vec<(String, String)>,
    /// Where DHCP files live.
    pub state_dir: PathBuf,
    /// Prefixed to the names of the namespaces the agent makes (`<prefix>qdhcp-<network id>`); it only ever
    /// removes namespaces with its prefix.
    pub namespace_prefix: String,
    /// The namespace the agent's bridges and devices live in (its own when `None`).
    pub host_namespace: Option<String>,
    /// How often the agent looks for new tap devices (upstream's `polling_interval`).
    pub polling_interval: Duration,
    /// A full resync happens at least this often, notices or not.
    pub resync_interval: Duration,
    /// Serve DHCP for the networks of this host.
    pub enable_dhcp: bool,
    /// Serve `http://169.254.169.254/` from the DHCP namespaces, forwarded to the compute metadata API (upstream's
    /// `enable_isolated_metadata` with `nova_metadata_host` and `metadata_proxy_shared_secret`); none: no metadata.
    pub metadata: Option<metadata::MetadataConfig>,
    /// Host routers (report the `l3` capability, so the network service places routers here).
    pub enable_l3: bool,
    /// Enforce security groups and anti-spoofing on the bound ports (upstream's
    /// `[securitygroup] enable_security_group`).
    pub enable_security_group: bool,
    /// The `nft` command (nftables), for routers' NAT and security groups.
    pub nft: PathBuf,
    pub dns_domain: String,
    pub dnsmasq: PathBuf,
    /// radvd, the router advertisements of IPv6 subnets behind routers.
    pub radvd: PathBuf,
    /// conntrack (conntrack-tools), which cuts the connections of removed security group rules.
    pub conntrack: PathBuf,
    pub ip: PathBuf,
    /// How long a call to the network service may take.
    pub rpc_timeout: Duration,
}

impl AgentConfig {
    pub fn new(host: impl Into<String>, state_dir: impl Into<PathBuf>) -> AgentConfig {
        AgentConfig {
            host: host.into(),
            tunnel_ip: None,
            vxlan_port: 4789,
            interface_mappings: vec![],
            state_dir: state_dir.into(),
            namespace_prefix: String::new(),
            host_namespace: None,
            polling_interval: Duration::from_secs(2),
            resync_interval: Duration::from_secs(60),
            enable_dhcp: true,
            metadata: None,
            enable_l3: true,
            enable_security_group: true,
            nft: "nft".into(),
            dns_domain: "openstacklocal".into(),
            dnsmasq: "dnsmasq".into(),
            radvd: "radvd".into(),
            conntrack: "conntrack".into(),
            ip: "ip".into(),
            rpc_timeout: Duration::from_secs(30),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.host.is_empty() || self.host.contains(char::is_whitespace) {
            return Err(Error::Config("host must be a non-empty name without spaces".into()));
        }
        if self.polling_interval.is_zero() || self.resync_interval.is_zero() {
            return Err(Error::Config("polling_interval and resync_interval must be positive".into()));
        }
        if !self.namespace_prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(Error::Config("namespace_prefix may hold only letters, digits, '-' and '_'".into()));
        }
        if let Some(m) = &self.metadata {
            m.validate()?;
        }
        for (physnet, iface) in &self.interface_mappings {
            if physnet.is_empty() || iface.is_empty() || iface.len() > 15 {
                return Err(Error::Config(format!("bad interface mapping '{physnet}:{iface}'")));
            }
        }
        Ok(())
    }

    /// The DHCP namespace of a network.
    pub fn dhcp_namespace(&self, network_id: &str) -> String {
        format!("{}qdhcp-{network_id}", self.namespace_prefix)
    }

    /// The namespace of a router.
    pub fn router_namespace(&self, router_id: &str) -> String {
        format!("{}qrouter-{router_id}", self.namespace_prefix)
    }
}

/// Parses `physnet:interface` pairs.
pub fn parse_mappings(list: &[String]) -> Result<Vec<(String, String)>, Error> {
    list.iter()
        .map(|m| match m.split_once(':') {
            Some((p, i)) if !p.trim().is_empty() && !i.trim().is_empty() => Ok((p.trim().to_string(), i.trim().to_string())),
            _ => Err(Error::Config(format!("interface mapping '{m}' is not physnet:interface"))),
        })
        .collect()
}

pub(crate) fn short(id: &str) -> &str {
    id.get(..11).unwrap_or(id)
}

/// A network's bridge, as upstream names it.
pub fn bridge_name(network_id: &str) -> String {
    format!("brq{}", short(network_id))
}

/// A port's tap device (the host end of its veth pair for DHCP ports).
pub fn tap_name(port_id: &str) -> String {
    format!("tap{}", short(port_id))
}

/// The namespace end of a DHCP port's veth pair.
pub fn ns_device_name(port_id: &str) -> String {
    format!("ns-{}", short(port_id))
}

/// A VXLAN segment's device.
pub fn vxlan_name(vni: u32) -> String {
    format!("vxlan-{vni}")
}

/// The 802.1Q sub-interface of mapped interface `iface` for VLAN `vid`, as upstream's Linux bridge agent names it
/// (`<interface>.<vid>`, the interface's name shortened to fit the kernel's 15 characters).
pub fn vlan_name(iface: &str, vid: u16) -> String {
    let suffix = format!(".{vid}");
    let keep = 15usize.saturating_sub(suffix.len());
    format!("{}{suffix}", iface.chars().take(keep).collect::<String>())
}

/// This machine's host name.
pub fn hostname() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn vlan_sub_interfaces_are_named_as_upstream_within_15_characters() {
        assert_eq!(super::vlan_name("eth1", 100), "eth1.100");
        assert_eq!(super::vlan_name("enp0s31f6-long", 4094), "enp0s31f6-.4094");
        assert!(super::vlan_name("a-very-long-interface-name", 1).len() <= 15);
    }

    use super::*;

    #[test]
    fn device_names_fit_the_kernel_limit() {
        let id = "0123456789abcdef-0123-4567-89ab-cdef01234567";
        assert_eq!(bridge_name(id), "brq0123456789a");
        assert_eq!(tap_name(id), "tap0123456789a");
        assert_eq!(ns_device_name(id), "ns-0123456789a");
        assert_eq!(vxlan_name(16_777_215), "vxlan-16777215");
        for n in [bridge_name(id), tap_name(id), ns_device_name(id), vxlan_name(16_777_215)] {
            assert!(n.len() <= 15, "{n}");
        }
    }

    #[test]
    fn mappings_and_settings_are_checked() {
        assert_eq!(parse_mappings(&["public:eth1".into()]).unwrap(), vec![("public".into(), "eth1".into())]);
        assert!(parse_mappings(&["eth1".into()]).is_err());
        let mut c = AgentConfig::new("cn1", "/tmp/x");
        assert!(c.validate().is_ok());
        assert_eq!(c.dhcp_namespace("n1"), "qdhcp-n1");
        c.namespace_prefix = "t1-".into();
        assert_eq!(c.dhcp_namespace("n1"), "t1-qdhcp-n1");
        assert_eq!(c.router_namespace("r1"), "t1-qrouter-r1");
        c.namespace_prefix = "a/b".into();
        assert!(c.validate().is_err());
        let mut c = AgentConfig::new("cn1", "/tmp/x");
        c.polling_interval = Duration::ZERO;
        assert!(c.validate().is_err());
    }
}
