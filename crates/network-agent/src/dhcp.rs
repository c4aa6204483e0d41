//! DHCP for one network: dnsmasq in the network's namespace, answering only the ports the network service knows
//! (static ranges, a hosts file MAC → fixed IP and host name), with the subnet's router, DNS servers, host routes
//! (and the route to the metadata address through the DHCP port when its namespace serves metadata) and MTU as
//! options, as upstream's DHCP agent runs it. IPv6 subnets in `dhcpv6-stateful` mode get DHCPv6 addresses the same
//! way (by MAC, which dnsmasq learns on the link); `dhcpv6-stateless` ones get options only (DNS servers), their
//! addresses coming from router advertisements; `slaac` subnets are not served here at all.
//!
//! Files live in `<state_dir>/dhcp/<network id>/`: `host`, `opts`, `args` (the command line the running dnsmasq was
//! started with) and `pid`. A changed hosts or options file is re-read on SIGHUP; a changed command line (a subnet
//! added or removed) restarts dnsmasq. dnsmasq daemonizes, so it outlives an agent restart and keeps answering;
//! the next agent finds it through its pid file.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use network_rpc::{DHCP_OWNER, NetworkState, PortState, SubnetState};

use crate::Error;

/// The lease time handed out, upstream's default.
pub const LEASE_SECONDS: u32 = 86400;

/// An IPv4 CIDR split into network address and prefix length.
pub fn parse_cidr4(cidr: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, p) = cidr.split_once('/')?;
    let a: Ipv4Addr = a.parse().ok()?;
    let p: u8 = p.parse().ok().filter(|p| *p <= 32)?;
    Some((a, p))
}

fn mask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) })
}

/// An IPv6 CIDR split into address and prefix length.
pub fn parse_cidr6(cidr: &str) -> Option<(Ipv6Addr, u8)> {
    let (a, p) = cidr.split_once('/')?;
    let a: Ipv6Addr = a.parse().ok()?;
    let p: u8 = p.parse().ok().filter(|p| *p <= 128)?;
    Some((a, p))
}

/// The IPv6 address modes DHCPv6 serves (upstream's `dhcpv6-stateful` and `dhcpv6-stateless`).
pub const DHCPV6_STATEFUL: &str = "dhcpv6-stateful";
pub const DHCPV6_STATELESS: &str = "dhcpv6-stateless";

fn is_dhcpv6(s: &SubnetState) -> bool {
    s.ip_version == 6
        && matches!(s.ipv6_address_mode.as_deref(), Some(DHCPV6_STATEFUL | DHCPV6_STATELESS))
        && parse_cidr6(&s.cidr).is_some()
}

/// The subnets dnsmasq serves: IPv4 with DHCP enabled, and IPv6 in a DHCPv6 mode with DHCP enabled.
pub fn dhcp_subnets(net: &NetworkState) -> Vec<&SubnetState> {
    net.subnets
        .iter()
        .filter(|s| s.enable_dhcp && ((s.ip_version == 4 && parse_cidr4(&s.cidr).is_some()) || is_dhcpv6(s)))
        .collect()
}

/// Whether `s` is a DNS label (letters, digits, inner hyphens; at most 63 characters).
fn is_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && !s.starts_with('-') && !s.ends_with('-') && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Whether a value may go into one of dnsmasq's files: no line breaks, no NULs (which would start a new entry).
fn is_safe(s: &str) -> bool {
    !s.contains(['\n', '\r', '\0'])
}

/// The host name a port gets: its `dns_name` when it is a valid label, else upstream's
/// `host-<address with dashes>`.
fn hostname(port: &PortState, ip: &str) -> String {
    if is_label(&port.dns_name) { port.dns_name.clone() } else { format!("host-{}", ip.replace(['.', ':'], "-")) }
}

/// The hosts file: one line per (port, IPv4 address on a served subnet), `mac,set:port-<id>,ip,hostname`, and per
/// (port, IPv6 address on a stateful DHCPv6 subnet) `mac,set:port-<id>,[ip],hostname`.
pub fn hosts_file(net: &NetworkState) -> String {
    let subnets = dhcp_subnets(net);
    let mut out = String::new();
    let mut ports: Vec<&PortState> = net.ports.iter().filter(|p| p.device_owner != DHCP_OWNER && p.admin_state_up).collect();
    ports.sort_by(|a, b| a.id.cmp(&b.id));
    for p in ports {
        if parse_mac_ok(&p.mac_address).is_none() || !is_safe(&p.id) || p.id.contains(',') {
            continue;
        }
        for ip in &p.fixed_ips {
            let Some(s) = subnets.iter().find(|s| s.id == ip.subnet_id) else { continue };
            if ip.ip_address.parse::<Ipv4Addr>().is_ok() {
                let _ = writeln!(out, "{},set:port-{},{},{}", p.mac_address, p.id, ip.ip_address, hostname(p, &ip.ip_address));
            } else if let Ok(v6) = ip.ip_address.parse::<Ipv6Addr>()
                && s.ipv6_address_mode.as_deref() == Some(DHCPV6_STATEFUL)
            {
                let _ = writeln!(out, "{},set:port-{},[{v6}],{}", p.mac_address, p.id, hostname(p, &ip.ip_address));
            }
        }
    }
    out
}

/// The host route to the metadata address, as upstream writes it.
pub const METADATA_CIDR: &str = "169.254.169.254/32";

/// The options file: per subnet the router, DNS servers, host routes (with the default route, since a client
/// that gets classless routes ignores the router option) and MTU; per port its extra DHCP options.
///
/// With `metadata_via` (the DHCP port, when its namespace serves metadata) each subnet also gets a route to
/// 169.254.169.254/32 through the DHCP port's address on it, unless the subnet routes that address itself.
pub fn opts_file(net: &NetworkState, metadata_via: Option<&PortState>) -> String {
    let mut out = String::new();
    for s in dhcp_subnets(net) {
        let tag = format!("tag:subnet-{}", s.id);
        if s.ip_version == 6 {
            // the router and the routes come from router advertisements
            let dns: Vec<String> = s.dns_nameservers.iter().filter_map(|d| d.parse::<Ipv6Addr>().ok()).map(|d| format!("[{d}]")).collect();
            if !dns.is_empty() {
                let _ = writeln!(out, "{tag},option6:dns-server,{}", dns.join(","));
            }
            continue;
        }
        match &s.gateway_ip {
            Some(gw) => {
                let _ = writeln!(out, "{tag},option:router,{gw}");
            }
            None => {
                let _ = writeln!(out, "{tag},option:router");
            }
        }
        if !s.dns_nameservers.is_empty() {
            let _ = writeln!(out, "{tag},option:dns-server,{}", s.dns_nameservers.join(","));
        }
        let mut routes: Vec<String> = s.host_routes.iter().map(|r| format!("{},{}", r.destination, r.nexthop)).collect();
        let own = |d: &str| d == METADATA_CIDR || d == "169.254.169.254";
        if let Some(dhcp) = metadata_via
            && !s.host_routes.iter().any(|r| own(&r.destination))
            && let Some(ip) = dhcp.fixed_ips.iter().find(|f| f.subnet_id == s.id && f.ip_address.parse::<Ipv4Addr>().is_ok())
        {
            routes.push(format!("{METADATA_CIDR},{}", ip.ip_address));
        }
        if !routes.is_empty() {
            if let Some(gw) = &s.gateway_ip {
                routes.push(format!("0.0.0.0/0,{gw}"));
            }
            let _ = writeln!(out, "{tag},option:classless-static-route,{}", routes.join(","));
            let _ = writeln!(out, "{tag},249,{}", routes.join(","));
        }
        let _ = writeln!(out, "{tag},option:mtu,{}", net.mtu);
    }
    let mut ports: Vec<&PortState> = net.ports.iter().filter(|p| !p.extra_dhcp_opts.is_empty()).collect();
    ports.sort_by(|a, b| a.id.cmp(&b.id));
    for p in ports {
        let safe = |o: &&network_rpc::DhcpOption| {
            o.ip_version == 4 && is_safe(&o.opt_value) && !o.opt_name.is_empty() && o.opt_name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        for o in p.extra_dhcp_opts.iter().filter(safe) {
            let name = if o.opt_name.chars().all(|c| c.is_ascii_digit()) { o.opt_name.clone() } else { format!("option:{}", o.opt_name) };
            let _ = writeln!(out, "tag:port-{},{name},{}", p.id, o.opt_value);
        }
    }
    out
}

fn parse_mac_ok(mac: &str) -> Option<()> {
    crate::netlink::parse_mac(mac).map(|_| ())
}

/// Where one network's DHCP files are.
#[derive(Clone, Debug)]
pub struct DhcpFiles {
    pub dir: PathBuf,
}

impl DhcpFiles {
    pub fn new(state_dir: &Path, network_id: &str) -> DhcpFiles {
        DhcpFiles { dir: state_dir.join("dhcp").join(network_id) }
    }
    pub fn pid(&self) -> PathBuf {
        self.dir.join("pid")
    }
    pub fn hosts(&self) -> PathBuf {
        self.dir.join("host")
    }
    pub fn opts(&self) -> PathBuf {
        self.dir.join("opts")
    }
    pub fn args(&self) -> PathBuf {
        self.dir.join("args")
    }
    /// dnsmasq's own log (DHCP transactions).
    pub fn log(&self) -> PathBuf {
        self.dir.join("dnsmasq.log")
    }
}

/// dnsmasq's arguments for a network served on `interface`.
pub fn dnsmasq_args(net: &NetworkState, files: &DhcpFiles, interface: &str, domain: &str) -> Vec<String> {
    let mut args = vec![
        "--no-hosts".to_string(),
        "--no-resolv".into(),
        "--conf-file=/dev/null".into(),
        // DHCP only; DNS for instances is the subnets' dns_nameservers
        "--port=0".into(),
        format!("--pid-file={}", files.pid().display()),
        format!("--dhcp-hostsfile={}", files.hosts().display()),
        format!("--dhcp-optsfile={}", files.opts().display()),
        format!("--log-facility={}", files.log().display()),
        "--leasefile-ro".into(),
        "--dhcp-authoritative".into(),
        format!("--interface={interface}"),
        "--bind-interfaces".into(),
        "--except-interface=lo".into(),
        format!("--domain={domain}"),
        // the files live in the agent's state directory, which need not be readable by an unprivileged user
        "--user=root".into(),
        "--group=root".into(),
    ];
    let subnets = dhcp_subnets(net);
    for s in &subnets {
        if let Some((addr, prefix)) = parse_cidr4(&s.cidr) {
            args.push(format!("--dhcp-range=set:subnet-{},{addr},static,{},{LEASE_SECONDS}s", s.id, mask(prefix)));
        } else if let Some((addr, prefix)) = parse_cidr6(&s.cidr) {
            args.push(format!("--dhcp-range=set:subnet-{},{addr},static,{prefix},{LEASE_SECONDS}s", s.id));
        }
    }
    let size: u64 = subnets.iter().filter_map(|s| parse_cidr4(&s.cidr)).map(|(_, p)| 1u64 << (32 - p as u32)).sum();
    args.push(format!("--dhcp-lease-max={}", size.clamp(16, 1 << 24)));
    args
}

/// The pid of the dnsmasq serving from `files`, if it runs: the pid file names a live process whose command line
/// has this pid file.
pub fn running_pid(files: &DhcpFiles) -> Option<i32> {
    daemon_pid(&files.pid(), &format!("--pid-file={}", files.pid().display()))
}

/// The pid a daemon wrote to `pid_file`, if that process runs and has the argument `marker` (its own pid file
/// option), so a reused pid is not taken for it.
pub fn daemon_pid(pid_file: &Path, marker: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    cmdline.split(|b| *b == 0).any(|a| a == marker.as_bytes()).then_some(pid)
}

/// Whether process `pid` runs in the named namespace as it is now (not in one deleted and made again, which the
/// process keeps alive).
pub fn runs_in(pid: i32, namespace: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: String| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let own = id(format!("/proc/{pid}/ns/net"));
    own.is_some() && own == id(format!("{}/{namespace}", crate::netlink::NETNS_DIR))
}

fn signal(pid: i32, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

pub fn reload(pid: i32) {
    signal(pid, rustix::process::Signal::HUP);
}

/// Whether process `pid` exists and has not exited (a zombie waiting for its parent has).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()))
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// Stops the dnsmasq serving from `files`: SIGTERM, up to two seconds, then SIGKILL, and waits (bounded) until it
/// has exited.
pub async fn stop(files: &DhcpFiles) {
    if let Some(pid) = running_pid(files) {
        stop_pid(pid, "dnsmasq").await;
    }
}

/// Ends daemon `pid` (`what` names it in the log): SIGTERM, up to two seconds, then SIGKILL, and waits (bounded)
/// until it has exited.
pub async fn stop_pid(pid: i32, what: &str) {
    signal(pid, rustix::process::Signal::TERM);
    for round in 0..60 {
        if !alive(pid) {
            return;
        }
        if round == 40 {
            signal(pid, rustix::process::Signal::KILL);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::warn!(pid, what, "a daemon did not exit");
}

/// Writes `content` to `path` through a temporary file; `Ok(true)` if it changed.
pub fn write_if_changed(path: &Path, content: &str) -> Result<bool, Error> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == content) {
        return Ok(false);
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).map_err(|e| Error::io(format!("cannot write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use network_rpc::{DhcpOption, FixedIp, HostRoute, Segment};

    use super::*;

    fn net() -> NetworkState {
        let subnet = |id: &str, cidr: &str, v: u8, dhcp: bool| SubnetState {
            id: id.into(),
            cidr: cidr.into(),
            ip_version: v,
            gateway_ip: Some(cidr.replace("0/24", "1")),
            enable_dhcp: dhcp,
            dns_nameservers: vec![],
            host_routes: vec![],
            ipv6_ra_mode: None,
            ipv6_address_mode: None,
        };
        let port = |id: &str, mac: &str, ips: &[(&str, &str)], owner: &str| PortState {
            id: id.into(),
            network_id: "n1".into(),
            mac_address: mac.into(),
            fixed_ips: ips.iter().map(|(s, ip)| FixedIp { subnet_id: (*s).into(), ip_address: (*ip).into() }).collect(),
            device_owner: owner.into(),
            device_id: String::new(),
            project_id: "p".into(),
            host: "cn1".into(),
            admin_state_up: true,
            dns_name: String::new(),
            extra_dhcp_opts: vec![],
            status: "ACTIVE".into(),
            port_security_enabled: true,
            security_groups: vec![],
            allowed_address_pairs: vec![],
        };
        let mut s1 = subnet("s1", "10.1.0.0/24", 4, true);
        s1.dns_nameservers = vec!["192.0.2.53".into(), "192.0.2.54".into()];
        s1.host_routes = vec![HostRoute { destination: "10.9.0.0/16".into(), nexthop: "10.1.0.254".into() }];
        let mut vm = port("p2", "fa:16:3e:00:00:02", &[("s1", "10.1.0.5"), ("s2", "10.2.0.5")], "compute:nova");
        vm.extra_dhcp_opts = vec![DhcpOption { opt_name: "tftp-server".into(), opt_value: "10.1.0.9".into(), ip_version: 4 }];
        let mut named = port("p1", "fa:16:3e:00:00:01", &[("s1", "10.1.0.6")], "compute:nova");
        named.dns_name = "web".into();
        NetworkState {
            id: "n1".into(),
            name: "net".into(),
            project_id: "p".into(),
            admin_state_up: true,
            mtu: 1450,
            segment: Segment { network_type: "vxlan".into(), physical_network: None, segmentation_id: Some(7) },
            subnets: vec![s1, subnet("s2", "10.2.0.0/24", 4, false), subnet("s6", "fd00::/64", 6, true)],
            ports: vec![vm, named, port("pd", "fa:16:3e:00:00:03", &[("s1", "10.1.0.2")], DHCP_OWNER)],
            peers: vec![],
        }
    }

    #[test]
    fn hosts_cover_served_subnets_only_and_skip_the_dhcp_port() {
        assert_eq!(
            hosts_file(&net()),
            "fa:16:3e:00:00:01,set:port-p1,10.1.0.6,web\nfa:16:3e:00:00:02,set:port-p2,10.1.0.5,host-10-1-0-5\n"
        );
    }

    #[test]
    fn dhcpv6_serves_stateful_addresses_and_stateless_options_but_not_slaac() {
        let mut n = net();
        // s6 (fd00::/64) has no address mode: SLAAC-only or unmanaged, not dnsmasq's
        assert!(!dnsmasq_args(&n, &DhcpFiles::new(Path::new("/s"), "n1"), "ns-x", "d").iter().any(|a| a.contains("fd00")));
        n.subnets[2].ipv6_address_mode = Some(DHCPV6_STATEFUL.into());
        n.subnets[2].dns_nameservers = vec!["fd00::53".into()];
        let mut stateless = n.subnets[2].clone();
        (stateless.id, stateless.cidr, stateless.ipv6_address_mode) = ("s7".into(), "fd07::/64".into(), Some(DHCPV6_STATELESS.into()));
        n.subnets.push(stateless);
        n.ports[0].fixed_ips.push(FixedIp { subnet_id: "s6".into(), ip_address: "fd00::5".into() });
        n.ports[0].fixed_ips.push(FixedIp { subnet_id: "s7".into(), ip_address: "fd07::f816:3eff:fe00:2".into() });
        assert_eq!(
            hosts_file(&n),
            "fa:16:3e:00:00:01,set:port-p1,10.1.0.6,web\n\
             fa:16:3e:00:00:02,set:port-p2,10.1.0.5,host-10-1-0-5\n\
             fa:16:3e:00:00:02,set:port-p2,[fd00::5],host-fd00--5\n"
        );
        let args = dnsmasq_args(&n, &DhcpFiles::new(Path::new("/s"), "n1"), "ns-x", "d");
        assert!(args.contains(&"--dhcp-range=set:subnet-s6,fd00::,static,64,86400s".to_string()), "{args:?}");
        assert!(args.contains(&"--dhcp-range=set:subnet-s7,fd07::,static,64,86400s".to_string()), "{args:?}");
        let o = opts_file(&n, None);
        assert!(o.contains("tag:subnet-s6,option6:dns-server,[fd00::53]\n"), "{o}");
        assert!(!o.contains("tag:subnet-s6,option:"), "no IPv4 options on an IPv6 subnet: {o}");
    }

    #[test]
    fn options_carry_router_dns_routes_mtu_and_port_options() {
        let o = opts_file(&net(), None);
        assert_eq!(
            o,
            "tag:subnet-s1,option:router,10.1.0.1\n\
             tag:subnet-s1,option:dns-server,192.0.2.53,192.0.2.54\n\
             tag:subnet-s1,option:classless-static-route,10.9.0.0/16,10.1.0.254,0.0.0.0/0,10.1.0.1\n\
             tag:subnet-s1,249,10.9.0.0/16,10.1.0.254,0.0.0.0/0,10.1.0.1\n\
             tag:subnet-s1,option:mtu,1450\n\
             tag:port-p2,option:tftp-server,10.1.0.9\n"
        );
    }

    #[test]
    fn metadata_is_routed_through_the_dhcp_port() {
        let n = net();
        let dhcp = n.ports.iter().find(|p| p.device_owner == DHCP_OWNER).unwrap();
        let o = opts_file(&n, Some(dhcp));
        let routes = "10.9.0.0/16,10.1.0.254,169.254.169.254/32,10.1.0.2,0.0.0.0/0,10.1.0.1";
        assert!(o.contains(&format!("tag:subnet-s1,option:classless-static-route,{routes}\n")), "{o}");
        assert!(o.contains(&format!("tag:subnet-s1,249,{routes}\n")), "{o}");
        // a subnet without other routes gets the metadata route and the default route
        let mut bare = net();
        bare.subnets[0].host_routes.clear();
        let o = opts_file(&bare, Some(dhcp));
        assert!(o.contains("option:classless-static-route,169.254.169.254/32,10.1.0.2,0.0.0.0/0,10.1.0.1\n"), "{o}");
        // a subnet that routes the address itself keeps its own route
        let mut own = net();
        own.subnets[0].host_routes = vec![HostRoute { destination: METADATA_CIDR.into(), nexthop: "10.1.0.7".into() }];
        let o = opts_file(&own, Some(dhcp));
        assert!(o.contains("classless-static-route,169.254.169.254/32,10.1.0.7,0.0.0.0/0,10.1.0.1\n"), "{o}");
        assert_eq!(o.matches("169.254.169.254").count(), 2, "{o}");
    }

    #[test]
    fn ranges_are_static_per_served_subnet() {
        let files = DhcpFiles::new(Path::new("/state"), "n1");
        let args = dnsmasq_args(&net(), &files, "ns-abc", "openstacklocal");
        assert!(args.contains(&"--dhcp-range=set:subnet-s1,10.1.0.0,static,255.255.255.0,86400s".to_string()), "{args:?}");
        assert_eq!(args.iter().filter(|a| a.starts_with("--dhcp-range")).count(), 1);
        assert!(args.contains(&"--pid-file=/state/dhcp/n1/pid".to_string()));
        assert!(args.contains(&"--interface=ns-abc".to_string()));
        assert!(args.contains(&"--dhcp-lease-max=256".to_string()));
    }

    #[test]
    fn values_that_would_break_the_files_are_left_out() {
        let mut n = net();
        n.ports[0].extra_dhcp_opts.push(DhcpOption { opt_name: "x\ndhcp-script".into(), opt_value: "1".into(), ip_version: 4 });
        n.ports[0].extra_dhcp_opts.push(DhcpOption { opt_name: "domain-name".into(), opt_value: "a\ntag:x".into(), ip_version: 4 });
        n.ports[1].dns_name = "bad,name\nx".into();
        n.ports[1].mac_address = "not-a-mac".into();
        n.ports[0].dns_name = "-bad".into();
        assert_eq!(hosts_file(&n), "fa:16:3e:00:00:02,set:port-p2,10.1.0.5,host-10-1-0-5\n");
        let o = opts_file(&n, None);
        assert!(!o.contains("dhcp-script") && !o.contains("tag:x"), "{o}");
        assert!(o.contains("tag:port-p2,option:tftp-server,10.1.0.9"));
    }

    #[test]
    fn cidrs_parse() {
        assert_eq!(parse_cidr4("10.0.0.0/8"), Some((Ipv4Addr::new(10, 0, 0, 0), 8)));
        assert_eq!(parse_cidr4("10.0.0.0/33"), None);
        assert_eq!(parse_cidr4("fd00::/64"), None);
        assert_eq!(mask(26), Ipv4Addr::new(255, 255, 255, 192));
        assert_eq!(mask(0), Ipv4Addr::new(0, 0, 0, 0));
    }
}
