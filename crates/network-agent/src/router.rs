//! Routers, as upstream's L3 agent makes them with the Linux bridge interface driver: one namespace
//! `<prefix>qrouter-<router id>` per router, and in it
//!
//! * per interface a veth pair, `qr-<port id[:11]>` inside with the port's MAC and addresses, `tap<port id[:11]>` on
//!   the network's bridge;
//! * for the external gateway the same with `qg-<port id[:11]>`, holding the gateway's addresses and each floating
//!   IP as a /32 (so the router answers ARP for them on the external network);
//! * IPv4 forwarding on, the default route via the external subnet's gateway and the router's static routes (routes
//!   the agent adds carry `proto static`; others of that kind are removed; all over rtnetlink);
//! * one nftables table, `ip stratus-l3`, replaced atomically (`nft -f`, a create-delete-define transaction) when its
//!   text changes: per floating IP DNAT floating → fixed (prerouting, and output for the router itself) and SNAT
//!   fixed → floating leaving through the gateway; with `enable_snat`, SNAT of the tenant subnets to the gateway's
//!   address leaving through the gateway; traffic from the inside to a floating IP of the same router (hairpin) is
//!   SNATed to the gateway's address so the answer comes back through the router, as upstream does. Other traffic
//!   between the router's own subnets is never translated. Flows
//!   translated earlier to an address the router no longer has (a floating IP disassociated or deleted, SNAT
//!   turned off, the gateway changed) are dropped in the forward hook by their conntrack tuples, so an established
//!   connection does not outlive its floating IP — what upstream gets by deleting the conntrack entries.
//!
//! The text last applied is kept in `<state_dir>/l3/<router id>.nft`; it is applied again whenever it changed or
//! the namespace was made by this pass. A router that is down, no longer placed here or gone loses its namespace
//! (the veth pairs go with it), and namespaces with the agent's `qrouter-` prefix that no router wants are removed
//! the same way, whatever left them. Interfaces on IPv6 subnets get their addresses too (IPv6 forwarding is on), and
//! [`crate::ra`] advertises their prefixes; the gateway, NAT, floating IPs and static routes are IPv4 only.

use std::{
    collections::{BTreeSet, HashSet},
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use network_rpc::{HostState, RouterPort, RouterState};

use crate::{
    AgentConfig, Error, bridge_name,
    metadata::{METADATA_IP, MetadataProxy},
    dhcp::{parse_cidr4, write_if_changed},
    namespace::{self, NO_DAD},
    netlink::{Netlink, parse_mac},
    reconcile::Outcome,
    short, tap_name,
};

/// A router forwards IPv4 and IPv6.
const FORWARDING: &[(&str, &str)] = &[("ipv4/ip_forward", "1"), ("ipv6/conf/all/forwarding", "1")];

/// The nftables table the agent owns in each router namespace.
pub const NFT_TABLE: &str = "stratus-l3";

/// A router interface's device inside the namespace.
pub fn internal_device_name(port_id: &str) -> String {
    format!("qr-{}", short(port_id))
}

/// A router gateway's device inside the namespace.
pub fn gateway_device_name(port_id: &str) -> String {
    format!("qg-{}", short(port_id))
}

/// Makes the routers of `state` (those up) true on this host and removes every other router namespace of the
/// agent's prefix. Failures of one router are recorded in `out` and do not stop the others.
///
/// With `metadata`, each router also serves `http://169.254.169.254/` to the instances of its networks (upstream's
/// metadata proxy in the router namespace): the address on the namespace's loopback, so requests an instance routes
/// through its gateway end there.
pub async fn sync(config: &AgentConfig, nl: &Netlink, state: &HostState, metadata: Option<&MetadataProxy>, out: &mut Outcome) {
    let wanted: Vec<&RouterState> = if config.enable_l3 { state.routers.iter().filter(|r| r.admin_state_up).collect() } else { vec![] };
    let names: HashSet<String> = wanted.iter().map(|r| config.router_namespace(&r.id)).collect();
    for r in &wanted {
        match ensure(config, nl, state, r, metadata).await {
            Ok(()) => out.routers += 1,
            Err(e) => out.errors.push(format!("router {}: {e}", r.id)),
        }
    }
    let prefix = config.router_namespace("");
    if let Some(proxy) = metadata {
        for ns in proxy.namespaces() {
            if ns.starts_with(&prefix) && !names.contains(&ns) {
                proxy.stop(&ns).await;
            }
        }
    }
    for ns in namespace::list(&prefix) {
        if !names.contains(&ns) {
            match namespace::delete(&config.ip, &ns).await {
                Ok(()) => {
                    tracing::info!(namespace = %ns, "router removed");
                    out.removed.push(ns);
                }
                Err(e) => out.errors.push(format!("router namespace {ns}: {e}")),
            }
        }
    }
    let ids: HashSet<&str> = wanted.iter().map(|r| r.id.as_str()).collect();
    if let Ok(dir) = std::fs::read_dir(config.state_dir.join("l3")) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // `<router id>.nft`, `<router id>.radvd.conf`, …: files of routers no longer here go
            if name.split_once('.').is_none_or(|(id, _)| !ids.contains(id)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The IPv6 addresses (with prefix lengths) of a router port.
fn v6_addresses(port: &RouterPort) -> Vec<(Ipv6Addr, u8)> {
    port.addresses.iter().filter_map(|a| Some((a.ip_address.parse().ok()?, a.prefixlen)).filter(|(_, p)| *p <= 128)).collect()
}

/// The IPv4 addresses (with prefix lengths) of a router port.
fn v4_addresses(port: &RouterPort) -> Vec<(Ipv4Addr, u8)> {
    port.addresses.iter().filter_map(|a| Some((a.ip_address.parse().ok()?, a.prefixlen)).filter(|(_, p)| *p <= 32)).collect()
}

/// Whether `name` is safe to write into an nftables file or a command line.
fn plain(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

async fn ensure(config: &AgentConfig, nl: &Netlink, state: &HostState, r: &RouterState, metadata: Option<&MetadataProxy>) -> Result<(), Error> {
    let ns = config.router_namespace(&r.id);
    if !plain(&r.id) {
        return Err(Error::Config(format!("router id '{}' cannot name a namespace", r.id)));
    }
    let fresh = !namespace::exists(&ns);
    namespace::ensure(&config.ip, &ns).await?;
    let inner = Netlink::open(Some(&ns)).await?;
    if let Some(lo) = inner.link("lo").await? {
        if !lo.up {
            inner.set_up(lo.index, "lo").await?;
        }
        let mut addrs = vec![(IpAddr::V4(Ipv4Addr::LOCALHOST), 8), (IpAddr::V6(Ipv6Addr::LOCALHOST), 128)];
        if metadata.is_some() {
            addrs.push((IpAddr::V4(METADATA_IP), 32));
        }
        inner.sync_addresses(lo.index, &addrs, "lo").await?;
    }
    namespace::set_sysctls(&ns, &[NO_DAD, FORWARDING].concat())?;
    let mut devices = HashSet::new();
    for itf in &r.interfaces {
        let dev = internal_device_name(&itf.port_id);
        let mut addrs: Vec<(IpAddr, u8)> = v4_addresses(itf).into_iter().map(|(a, p)| (IpAddr::V4(a), p)).collect();
        addrs.extend(v6_addresses(itf).into_iter().map(|(a, p)| (IpAddr::V6(a), p)));
        plug(nl, &inner, state, &ns, itf, &dev, &addrs).await?;
        devices.insert(dev);
    }
    let gateway = r.gateway.as_ref().filter(|g| !v4_addresses(g).is_empty());
    if let Some(gw) = gateway {
        let dev = gateway_device_name(&gw.port_id);
        let mut addrs: Vec<(IpAddr, u8)> = v4_addresses(gw).into_iter().map(|(a, p)| (IpAddr::V4(a), p)).collect();
        for f in &r.floating_ips {
            if let Ok(a) = f.floating_ip_address.parse::<Ipv4Addr>() {
                addrs.push((IpAddr::V4(a), 32));
            }
        }
        addrs.dedup();
        plug(nl, &inner, state, &ns, gw, &dev, &addrs).await?;
        devices.insert(dev);
    }
    // interfaces removed and a gateway cleared or replaced: their veth pairs go (both ends)
    for l in inner.links().await? {
        if (l.name.starts_with("qr-") || l.name.starts_with("qg-")) && !devices.contains(&l.name) {
            inner.delete(l.index, &l.name).await?;
        }
    }
    sync_routes(&inner, r, gateway).await?;
    let rules = ruleset(r, gateway);
    let dir = config.state_dir.join("l3");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let file = dir.join(format!("{}.nft", r.id));
    let applied = std::fs::read_to_string(&file).ok();
    if fresh || applied.as_deref() != Some(rules.as_str()) {
        // the file names what is in force only once nft has taken it
        let staged = dir.join(format!("{}.nft.new", r.id));
        write_if_changed(&staged, &rules)?;
        let nft = config.nft.to_string_lossy().into_owned();
        let path = staged.to_string_lossy().into_owned();
        namespace::run(&config.ip, &["netns", "exec", &ns, &nft, "-f", &path]).await?;
        std::fs::rename(&staged, &file).map_err(|e| Error::io(format!("cannot write {}", file.display()), e))?;
        tracing::info!(router = %r.id, "router NAT rules applied");
    }
    crate::ra::sync(config, &ns, r, state).await?;
    if let Some(proxy) = metadata {
        let networks: HashSet<&str> = r.interfaces.iter().map(|i| i.network_id.as_str()).collect();
        let ports = state.networks.iter().filter(|n| networks.contains(n.id.as_str())).flat_map(|n| &n.ports);
        proxy.serve(&ns, crate::metadata::instances(ports)).await?;
    }
    Ok(())
}

/// One router port: the veth pair (made again if half of it is missing), the host end on the network's bridge,
/// the inside end with the port's MAC, the network's MTU and `addrs`, up.
async fn plug(
    nl: &Netlink,
    inner: &Netlink,
    state: &HostState,
    ns: &str,
    port: &RouterPort,
    dev: &str,
    addrs: &[(IpAddr, u8)],
) -> Result<(), Error> {
    let net = state.networks.iter().find(|n| n.id == port.network_id);
    let mtu = net.map_or(1500, |n| n.mtu);
    let bridge = nl
        .link(&bridge_name(&port.network_id))
        .await?
        .ok_or_else(|| Error::Netlink(format!("network {} of port {} is not wired", port.network_id, port.port_id)))?;
    let tap = tap_name(&port.port_id);
    if inner.link(dev).await?.is_none() {
        if let Some(old) = nl.link(&tap).await? {
            nl.delete(old.index, &tap).await?;
        }
        nl.ensure_veth(&tap, dev).await?;
        let peer = nl.link(dev).await?.ok_or_else(|| Error::Netlink(format!("{dev} vanished")))?;
        nl.move_to(peer.index, ns, dev).await?;
    }
    let tap_link = nl.link(&tap).await?.ok_or_else(|| Error::Netlink(format!("{tap} vanished")))?;
    nl.attach(&tap_link, bridge.index).await?;
    let link = inner.link(dev).await?.ok_or_else(|| Error::Netlink(format!("{dev} vanished")))?;
    let mac = parse_mac(&port.mac_address).ok_or_else(|| Error::Netlink(format!("bad MAC {}", port.mac_address)))?;
    if link.mac != mac || link.mtu != Some(mtu) {
        inner.set_mac_mtu(link.index, mac, mtu, dev).await?;
    }
    inner.sync_addresses(link.index, addrs, dev).await?;
    if !link.up {
        inner.set_up(link.index, dev).await?;
    }
    Ok(())
}

/// A destination as the kernel keeps it: the network address (host bits cleared) and the prefix length.
fn route_key(destination: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = parse_cidr4(destination)?;
    Some((Ipv4Addr::from(if prefix == 0 { 0 } else { u32::from(addr) & (u32::MAX << (32 - prefix)) }), prefix))
}

/// The routes the router wants: (destination, prefix length, next hop).
pub fn wanted_routes(r: &RouterState, gateway: Option<&RouterPort>) -> BTreeSet<(Ipv4Addr, u8, Ipv4Addr)> {
    let mut out = BTreeSet::new();
    if let Some(gw) = gateway
        && let Some(next) = gw.addresses.iter().filter_map(|a| a.gateway_ip.as_deref()?.parse::<Ipv4Addr>().ok()).next()
    {
        out.insert((Ipv4Addr::UNSPECIFIED, 0, next));
    }
    for route in &r.routes {
        if let (Some((dst, prefix)), Ok(next)) = (route_key(&route.destination), route.nexthop.parse::<Ipv4Addr>()) {
            out.insert((dst, prefix, next));
        }
    }
    out
}

/// Makes the namespace's `proto static` routes the wanted ones.
async fn sync_routes(inner: &Netlink, r: &RouterState, gateway: Option<&RouterPort>) -> Result<(), Error> {
    let wanted = wanted_routes(r, gateway);
    let have: BTreeSet<(Ipv4Addr, u8, Ipv4Addr)> = inner.static_routes().await?.into_iter().collect();
    for (dst, prefix, next) in have.difference(&wanted) {
        inner.delete_route(*dst, *prefix, *next).await?;
    }
    for (dst, prefix, next) in wanted.difference(&have) {
        if let Err(e) = inner.replace_route(*dst, *prefix, *next).await {
            // a next hop not (yet) on a connected subnet: the service checks routes, so log it and go on
            tracing::warn!(router = %r.id, %dst, prefix, %next, error = %e, "cannot add a route");
        }
    }
    Ok(())
}

/// The router's nftables table, as one transaction that replaces the table whole.
pub fn ruleset(r: &RouterState, gateway: Option<&RouterPort>) -> String {
    let mut dnat = String::new();
    let mut snat = String::new();
    // the addresses flows may still be translated to: destinations of DNAT, sources of SNAT
    let mut dnat_to: Vec<Ipv4Addr> = Vec::new();
    let mut snat_to: Vec<Ipv4Addr> = Vec::new();
    if let Some(gw) = gateway {
        let qg = gateway_device_name(&gw.port_id);
        let mut fips: Vec<(Ipv4Addr, Ipv4Addr)> =
            r.floating_ips.iter().filter_map(|f| Some((f.floating_ip_address.parse().ok()?, f.fixed_ip_address.parse().ok()?))).collect();
        fips.sort();
        fips.dedup();
        if plain(&qg) {
            for (floating, fixed) in &fips {
                let _ = writeln!(dnat, "\t\tip daddr {floating} dnat to {fixed}");
                let _ = writeln!(snat, "\t\toifname \"{qg}\" ip saddr {fixed} snat to {floating}");
                dnat_to.push(*floating);
                snat_to.push(*floating);
            }
            let gw_ip = v4_addresses(gw).first().map(|(a, _)| *a);
            let mut tenant: Vec<String> = r
                .interfaces
                .iter()
                .flat_map(|i| i.addresses.iter())
                .filter_map(|a| parse_cidr4(&a.cidr))
                .map(|(n, p)| format!("{}/{p}", Ipv4Addr::from(if p == 0 { 0 } else { u32::from(n) & (u32::MAX << (32 - p)) })))
                .collect();
            tenant.sort();
            tenant.dedup();
            if r.enable_snat
                && let Some(gw_ip) = gw_ip
                && !tenant.is_empty()
            {
                let _ = writeln!(snat, "\t\toifname \"{qg}\" ip saddr {{ {} }} snat to {gw_ip}", tenant.join(", "));
                snat_to.push(gw_ip);
            }
            // hairpin: an instance reaching a floating IP behind the same router gets the answer through the router
            if let Some(gw_ip) = gw_ip
                && !fips.is_empty()
            {
                let _ = writeln!(snat, "\t\tiifname != \"{qg}\" oifname != \"{qg}\" ct status dnat snat to {gw_ip}");
                snat_to.push(gw_ip);
            }
        }
    }
    let set = |v: &mut Vec<Ipv4Addr>| {
        v.sort();
        v.dedup();
        v.iter().map(Ipv4Addr::to_string).collect::<Vec<_>>().join(", ")
    };
    let (d, s) = (set(&mut dnat_to), set(&mut snat_to));
    let mut stale = String::new();
    let _ = match d.is_empty() {
        true => writeln!(stale, "\t\tct status dnat drop"),
        false => writeln!(stale, "\t\tct status dnat ct original ip daddr != {{ {d} }} drop"),
    };
    let _ = match s.is_empty() {
        true => writeln!(stale, "\t\tct status snat drop"),
        false => writeln!(stale, "\t\tct status snat ct reply ip daddr != {{ {s} }} drop"),
    };
    format!(
        "table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\ntable ip {NFT_TABLE} {{\n\
         \tchain prerouting {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n{dnat}\t}}\n\
         \tchain output {{\n\t\ttype nat hook output priority -100; policy accept;\n{dnat}\t}}\n\
         \tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n{snat}\t}}\n\
         \tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;\n{stale}\t}}\n}}\n"
    )
}

#[cfg(test)]
mod tests {
    use network_rpc::{FloatingIpState, HostRoute, RouterAddress};

    use super::*;

    fn port(id: &str, net: &str, ip: &str, cidr: &str, gw: Option<&str>) -> RouterPort {
        RouterPort {
            port_id: id.into(),
            network_id: net.into(),
            mac_address: "fa:16:3e:00:00:01".into(),
            addresses: vec![RouterAddress {
                subnet_id: format!("s-{id}"),
                ip_address: ip.into(),
                prefixlen: cidr.split('/').nth(1).unwrap().parse().unwrap(),
                cidr: cidr.into(),
                gateway_ip: gw.map(String::from),
            }],
        }
    }

    fn router(snat: bool) -> RouterState {
        RouterState {
            id: "r1".into(),
            admin_state_up: true,
            interfaces: vec![port("int00000000-1", "n1", "10.1.0.1", "10.1.0.0/24", Some("10.1.0.1"))],
            gateway: Some(port("ext00000000-1", "ext", "172.24.4.10", "172.24.4.0/24", Some("172.24.4.1"))),
            enable_snat: snat,
            routes: vec![HostRoute { destination: "10.9.0.0/16".into(), nexthop: "10.1.0.254".into() }],
            floating_ips: vec![FloatingIpState {
                id: "f1".into(),
                floating_ip_address: "172.24.4.20".into(),
                fixed_ip_address: "10.1.0.5".into(),
                port_id: "p1".into(),
            }],
        }
    }

    #[test]
    fn names_follow_upstream_and_fit() {
        let id = "0123456789abcdef-0123";
        assert_eq!(internal_device_name(id), "qr-0123456789a");
        assert_eq!(gateway_device_name(id), "qg-0123456789a");
        assert!(internal_device_name(id).len() <= 15);
    }

    #[test]
    fn the_ruleset_translates_floating_ips_and_tenant_subnets_through_the_gateway_only() {
        let r = router(true);
        let text = ruleset(&r, r.gateway.as_ref());
        assert!(text.starts_with("table ip stratus-l3\ndelete table ip stratus-l3\n"), "{text}");
        assert_eq!(text.matches("ip daddr 172.24.4.20 dnat to 10.1.0.5").count(), 2, "{text}");
        assert!(text.contains("oifname \"qg-ext00000000\" ip saddr 10.1.0.5 snat to 172.24.4.20"), "{text}");
        assert!(text.contains("oifname \"qg-ext00000000\" ip saddr { 10.1.0.0/24 } snat to 172.24.4.10"), "{text}");
        // the floating IP's own SNAT comes first
        assert!(text.find("snat to 172.24.4.20").unwrap() < text.find("snat to 172.24.4.10").unwrap());
        let text = ruleset(&router(false), r.gateway.as_ref());
        assert!(text.contains("snat to 172.24.4.20") && !text.contains("ip saddr { 10.1.0.0/24 }"), "{text}");
        assert!(text.contains("iifname != \"qg-ext00000000\" oifname != \"qg-ext00000000\" ct status dnat snat to 172.24.4.10"), "{text}");
        // flows translated to addresses no longer in use are dropped
        let text = ruleset(&r, r.gateway.as_ref());
        assert!(text.contains("ct status dnat ct original ip daddr != { 172.24.4.20 } drop"), "{text}");
        assert!(text.contains("ct status snat ct reply ip daddr != { 172.24.4.10, 172.24.4.20 } drop"), "{text}");
        // no gateway: no translation, and none of earlier flows
        let text = ruleset(&r, None);
        assert!(!text.contains("nat to"), "{text}");
        assert!(text.contains("ct status dnat drop") && text.contains("ct status snat drop"), "{text}");
    }

    #[test]
    fn routes_are_the_default_via_the_external_gateway_and_the_static_ones() {
        let r = router(true);
        let routes = wanted_routes(&r, r.gateway.as_ref());
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let want: BTreeSet<(Ipv4Addr, u8, Ipv4Addr)> =
            [(ip("0.0.0.0"), 0, ip("172.24.4.1")), (ip("10.9.0.0"), 16, ip("10.1.0.254"))].into();
        assert_eq!(routes, want);
        assert_eq!(route_key("10.9.1.7/32"), Some((ip("10.9.1.7"), 32)));
        assert_eq!(route_key("10.9.1.7/16"), Some((ip("10.9.0.0"), 16)));
        assert_eq!(wanted_routes(&r, None).len(), 1);
    }
}
