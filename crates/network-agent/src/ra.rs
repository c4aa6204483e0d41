//! IPv6 router advertisements of a router, as upstream's L3 agent sends them: radvd in the router's namespace,
//! advertising on each interface the prefixes of its IPv6 subnets that have an `ipv6_ra_mode`:
//!
//! * `slaac`: the prefix with the autonomous flag (instances make their own addresses from their MACs);
//! * `dhcpv6-stateless`: the same, plus the "other configuration" flag (options such as DNS from DHCPv6);
//! * `dhcpv6-stateful`: the prefix without the autonomous flag, and the "managed" flag (addresses from DHCPv6).
//!
//! The subnets' IPv6 DNS servers go out as RDNSS, and the link MTU is the network's. The configuration lives in
//! `<state_dir>/l3/<router id>.radvd.conf` (with `.radvd.pid` and `.radvd.log`); a changed one is re-read on SIGHUP,
//! and a router without such subnets runs no radvd. radvd dies with the router's namespace.

use std::{fmt::Write as _, net::Ipv6Addr, path::PathBuf};

use network_rpc::{HostState, RouterState};

use crate::{
    AgentConfig, Error,
    dhcp::{self, DHCPV6_STATEFUL, DHCPV6_STATELESS, parse_cidr6, write_if_changed},
    namespace,
    router::internal_device_name,
};

/// Upstream's advertisement intervals (`min_rtr_adv_interval`, `max_rtr_adv_interval`), in seconds. Instances
/// also get an answer at once when they solicit one.
const MIN_INTERVAL: u32 = 30;
const MAX_INTERVAL: u32 = 100;

/// radvd's configuration for router `r` (empty: nothing to advertise).
pub fn radvd_config(r: &RouterState, state: &HostState) -> String {
    let mut out = String::new();
    for itf in &r.interfaces {
        let Some(net) = state.networks.iter().find(|n| n.id == itf.network_id) else { continue };
        let (mut prefixes, mut dns) = (Vec::new(), Vec::new());
        let (mut managed, mut other) = (false, false);
        for a in &itf.addresses {
            let Some(s) = net.subnets.iter().find(|s| s.id == a.subnet_id && s.ip_version == 6) else { continue };
            let (Some(mode), Some((addr, prefix))) = (s.ipv6_ra_mode.as_deref(), parse_cidr6(&s.cidr)) else { continue };
            managed |= mode == DHCPV6_STATEFUL;
            other |= mode == DHCPV6_STATELESS;
            prefixes.push((addr, prefix, mode != DHCPV6_STATEFUL));
            dns.extend(s.dns_nameservers.iter().filter_map(|d| d.parse::<Ipv6Addr>().ok()));
        }
        if prefixes.is_empty() {
            continue;
        }
        let flag = |on: bool| if on { "on" } else { "off" };
        let _ = writeln!(out, "interface {}\n{{", internal_device_name(&itf.port_id));
        let _ = writeln!(out, "    AdvSendAdvert on;\n    IgnoreIfMissing on;");
        let _ = writeln!(out, "    MinRtrAdvInterval {MIN_INTERVAL};\n    MaxRtrAdvInterval {MAX_INTERVAL};");
        let _ = writeln!(out, "    AdvLinkMTU {};", net.mtu);
        let _ = writeln!(out, "    AdvManagedFlag {};\n    AdvOtherConfigFlag {};", flag(managed), flag(other));
        for (addr, prefix, autonomous) in prefixes {
            let _ = writeln!(out, "    prefix {addr}/{prefix}\n    {{\n        AdvOnLink on;\n        AdvAutonomous {};\n    }};", flag(autonomous));
        }
        dns.dedup();
        if !dns.is_empty() {
            let list: Vec<String> = dns.iter().map(Ipv6Addr::to_string).collect();
            let _ = writeln!(out, "    RDNSS {}\n    {{\n    }};", list.join(" "));
        }
        let _ = writeln!(out, "}};");
    }
    out
}

fn files(config: &AgentConfig, router_id: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = config.state_dir.join("l3");
    (dir.join(format!("{router_id}.radvd.conf")), dir.join(format!("{router_id}.radvd.pid")), dir.join(format!("{router_id}.radvd.log")))
}

/// Makes radvd in namespace `ns` advertise what [`radvd_config`] says for router `r`: started, reloaded after a
/// change, or stopped (with its files gone) when there is nothing to advertise.
pub async fn sync(config: &AgentConfig, ns: &str, r: &RouterState, state: &HostState) -> Result<(), Error> {
    let text = radvd_config(r, state);
    let (conf, pid_file, log) = files(config, &r.id);
    let marker = format!("--pidfile={}", pid_file.display());
    let running = dhcp::daemon_pid(&pid_file, &marker);
    if text.is_empty() {
        if let Some(pid) = running {
            dhcp::stop_pid(pid, "radvd").await;
        }
        for f in [&conf, &pid_file, &log] {
            let _ = std::fs::remove_file(f);
        }
        return Ok(());
    }
    let changed = write_if_changed(&conf, &text)?;
    match running {
        Some(pid) if dhcp::runs_in(pid, ns) => {
            if changed {
                dhcp::reload(pid);
            }
            return Ok(());
        }
        Some(pid) => dhcp::stop_pid(pid, "radvd").await,
        None => {}
    }
    let _ = std::fs::remove_file(&pid_file);
    let args = vec![
        format!("--config={}", conf.display()),
        marker,
        "--logmethod=logfile".to_string(),
        format!("--logfile={}", log.display()),
    ];
    namespace::exec(&config.ip, ns, &config.radvd, &args, &log.with_extension("start")).await?;
    tracing::info!(router = %r.id, "radvd started");
    Ok(())
}

#[cfg(test)]
mod tests {
    use network_rpc::{NetworkState, RouterAddress, RouterPort, Segment, SubnetState};

    use super::*;

    fn subnet(id: &str, cidr: &str, v: u8, ra: Option<&str>) -> SubnetState {
        SubnetState {
            id: id.into(),
            cidr: cidr.into(),
            ip_version: v,
            gateway_ip: None,
            enable_dhcp: true,
            dns_nameservers: if v == 6 { vec!["fd00::53".into()] } else { vec![] },
            host_routes: vec![],
            ipv6_ra_mode: ra.map(str::to_string),
            ipv6_address_mode: ra.map(str::to_string),
        }
    }

    fn address(subnet_id: &str, ip: &str, prefixlen: u8) -> RouterAddress {
        RouterAddress { subnet_id: subnet_id.into(), ip_address: ip.into(), prefixlen, cidr: String::new(), gateway_ip: None }
    }

    #[test]
    fn prefixes_and_flags_follow_the_ra_modes() {
        let subnets = vec![
            subnet("v4", "10.0.0.0/24", 4, None),
            subnet("slaac", "fd01::/64", 6, Some("slaac")),
            subnet("stateless", "fd02::/64", 6, Some(DHCPV6_STATELESS)),
            subnet("stateful", "fd03::/64", 6, Some(DHCPV6_STATEFUL)),
            subnet("none", "fd04::/64", 6, None),
        ];
        let state = HostState {
            networks: vec![NetworkState {
                id: "n".into(),
                name: "n".into(),
                project_id: "p".into(),
                admin_state_up: true,
                mtu: 1450,
                segment: Segment::default(),
                subnets,
                ports: vec![],
                peers: vec![],
            }],
            routers: vec![],
            security_groups: vec![],
        };
        let itf = |port: &str, addrs: Vec<RouterAddress>| RouterPort {
            port_id: port.into(),
            network_id: "n".into(),
            mac_address: "fa:16:3e:00:00:01".into(),
            addresses: addrs,
        };
        let mut r = RouterState {
            id: "r".into(),
            interfaces: vec![
                itf("11111111-aaaa", vec![address("v4", "10.0.0.1", 24), address("slaac", "fd01::1", 64), address("stateless", "fd02::1", 64)]),
                itf("22222222-bbbb", vec![address("stateful", "fd03::1", 64)]),
                itf("33333333-cccc", vec![address("none", "fd04::1", 64)]),
            ],
            admin_state_up: true,
            gateway: None,
            enable_snat: true,
            routes: vec![],
            floating_ips: vec![],
        };
        let text = radvd_config(&r, &state);
        let blocks: Vec<&str> = text.split("interface ").filter(|b| !b.is_empty()).collect();
        assert_eq!(blocks.len(), 2, "no RA on an interface without an ra mode: {text}");
        assert!(blocks[0].starts_with("qr-11111111-aa\n"), "{text}");
        for want in ["AdvManagedFlag off;", "AdvOtherConfigFlag on;", "AdvLinkMTU 1450;", "prefix fd01::/64", "prefix fd02::/64", "RDNSS fd00::53"] {
            assert!(blocks[0].contains(want), "{want}: {text}");
        }
        assert_eq!(blocks[0].matches("AdvAutonomous on;").count(), 2, "{text}");
        assert!(blocks[1].contains("AdvManagedFlag on;") && blocks[1].contains("AdvAutonomous off;"), "{text}");
        r.interfaces.truncate(0);
        assert_eq!(radvd_config(&r, &state), "");
    }
}
