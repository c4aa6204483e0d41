//! Security groups and anti-spoofing for the ports bound to this host, in nftables, as upstream's iptables and
//! nftables firewall drivers enforce them on a Linux bridge.
//!
//! # Why two tables
//! Connection tracking on bridged frames needs either `nf_conntrack_bridge` (the `bridge` family's `ct` expression)
//! or `br_netfilter` (bridged IP packets also traverse the `inet` hooks, with conntrack). Kernels without the former
//! built in answer `ct state` in a bridge chain with "Protocol error"; `br_netfilter` is the common case and what
//! upstream's drivers rely on (`net.bridge.bridge-nf-call-ip{,6}tables = 1`, which this module sets). Under
//! `br_netfilter`, an `inet` chain sees the bridge, not the bridge port, as the packet's interface, and nftables has
//! no `physdev` match. So the `bridge` table, which does see the ports, marks each frame with the ports it comes
//! from and goes to, and the stateful `inet` table filters by those marks:
//!
//! * `bridge stratus-sg`, hook prerouting: a frame from a filtered port's tap goes (verdict map `from-port`, by
//!   interface name) to `<tap>-spoof`, which sets the packet mark's low 16 bits to the port's index and drops what
//!   the port may not send: other source MACs, IPv4/IPv6 sources other than its fixed IPs, allowed address pairs
//!   (with their MACs) and its link-local address, ARP claiming other addresses (DHCP discovery from `0.0.0.0` and
//!   IPv6 duplicate address detection from `::` excepted). Hook forward: a frame to a filtered port (map
//!   `to-port`) gets that port's index in the mark's high 16 bits.
//! * `inet stratus-sg`: base chain `egress` (forward, priority -1) sends packets from a port (map `egress-ports`,
//!   by the mark's low half) to `<tap>-egress`, which jumps to `port-egress` (shared by all ports: DHCP and
//!   neighbour discovery out are always allowed, DHCP and router advertisement servers never, established and
//!   related traffic is) and then to the port's groups' egress chains `sg-<id>-egress` (no match: drop). Base
//!   chain `ingress` (forward, priority 0) does the same towards a port (map `ingress-ports`) with
//!   `<tap>-ingress` and `port-ingress`: DHCP replies, router advertisements and neighbour discovery always come
//!   in, established and related traffic too, the rest only as the groups' ingress chains allow. Remote groups are
//!   sets (`sg-<id>-v4` / `sg-<id>-v6`) of their members' addresses, shared by every rule and port that names them.
//!
//! A port with `port_security_enabled = false` gets none of it, nor do the network's own ports (`network:*`).
//! Conntrack entries outlive rule changes, so a replacement (or an agent restart) keeps established traffic; a rule
//! that is removed has the connections it may have admitted cut (`conntrack -D` in the port's zone, to or from its
//! address, by protocol and single destination port), as upstream does, so they do not outlive it. Each
//! network's connections are tracked in a zone of their own, as upstream does: base chain `zone` (prerouting,
//! priority raw, before conntrack) sets the zone by the bridge a packet crosses (map `zones`, from a stable hash of
//! the network id), so two networks on one host with the same addresses never see each other's flows as
//! established.
//!
//! # Applying
//! Each pass renders the whole ruleset from the host state; a port keeps its index from pass to pass (a new one
//! takes the lowest free). Nothing runs when the ruleset equals the last one applied (the tables' presence is
//! checked at start and then at most every resync interval: listing them costs as much as an update). Otherwise one
//! `nft -f` transaction makes, refills or deletes just the chains, sets and maps that differ: a rule added to a
//! group shared by many ports refills one chain, a member joining a remote group one set, a port coming or going
//! adds or deletes its chains and refills the four maps. The first pass of a process (or one that finds the tables
//! gone) deletes both tables and makes them again in one transaction, which is how a restarted agent converges and
//! how a crash's orphans go. Security groups are treated as stateful (`stateful = false` is not honoured).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use network_rpc::{DHCP_OWNER, HostState, PortState, SecurityGroupRuleState, SecurityGroupState};
use tokio::{io::AsyncWriteExt, process::Command, sync::Mutex};

use crate::{Error, netlink::NETNS_DIR, tap_name};

/// The name of the agent's tables (one `bridge`, one `inet`).
pub const TABLE: &str = "stratus-sg";

/// The most ports a host can filter (16 bits of the packet mark each way).
const MAX_PORTS: usize = 0xffff;

/// A chain: its base-chain header (none for a regular chain) and its rules.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Chain {
    base: Option<&'static str>,
    rules: Vec<String>,
}

/// A set or (verdict) map: its declaration and elements.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Set {
    /// `set` or `map`.
    kind: &'static str,
    decl: &'static str,
    elements: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Table {
    chains: BTreeMap<String, Chain>,
    sets: BTreeMap<String, Set>,
}

impl Table {
    /// Base chains and set declarations alike (regular chains and sets may come and go).
    fn compatible(&self, other: &Table) -> bool {
        let bases = |t: &Table| t.chains.iter().filter(|(_, c)| c.base.is_some()).map(|(n, c)| (n.clone(), c.base)).collect::<Vec<_>>();
        bases(self) == bases(other) && self.sets.iter().all(|(n, s)| other.sets.get(n).is_none_or(|o| o.kind == s.kind && o.decl == s.decl))
    }
}

/// The whole ruleset of a host: the `bridge` and `inet` tables (both empty: no tables at all).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    bridge: Table,
    inet: Table,
    /// The ports filtered, by tap, with their index in the packet mark (kept from pass to pass, so that a port
    /// coming or going changes only its own chains and the maps' elements).
    indexes: BTreeMap<String, u32>,
    /// The ports filtered.
    pub ports: usize,
}

impl Ruleset {
    fn is_empty(&self) -> bool {
        self.ports == 0
    }

    fn tables(&self) -> [(&'static str, &Table); 2] {
        [("bridge", &self.bridge), ("inet", &self.inet)]
    }

    /// The `nft -f` text that makes the tables exactly this, from whatever is there, in one transaction.
    pub fn replace_script(&self) -> String {
        let mut s = String::new();
        for (family, t) in self.tables() {
            let _ = writeln!(s, "table {family} {TABLE} {{}}\ndelete table {family} {TABLE}");
            if self.is_empty() {
                continue;
            }
            let _ = writeln!(s, "table {family} {TABLE} {{");
            for (name, set) in &t.sets {
                let _ = writeln!(s, "  {} {name} {{ {} }}", set.kind, set.decl);
            }
            for (name, chain) in &t.chains {
                let _ = writeln!(s, "  chain {name} {{");
                if let Some(base) = chain.base {
                    let _ = writeln!(s, "    {base}");
                }
                for r in &chain.rules {
                    let _ = writeln!(s, "    {r}");
                }
                let _ = writeln!(s, "  }}");
            }
            let _ = writeln!(s, "}}");
            for (name, set) in &t.sets {
                if !set.elements.is_empty() {
                    let _ = writeln!(s, "add element {family} {TABLE} {name} {{ {} }}", set.elements.join(", "));
                }
            }
        }
        s
    }

    /// The `nft -f` text that turns `old` into this in one transaction touching only what differs: chains and sets
    /// made, refilled or deleted, map elements replaced. `None` when base chains or declarations differ (or either
    /// side has no tables): then only a replacement will do.
    pub fn update_script(&self, old: &Ruleset) -> Option<String> {
        if self.is_empty() || old.is_empty() {
            return None;
        }
        let pairs = || self.tables().into_iter().zip(old.tables()).map(|((family, new), (_, old))| (family, new, old));
        if !pairs().all(|(_, new, old)| new.compatible(old)) {
            return None;
        }
        let mut s = String::new();
        // new chains first (empty), so that maps and jumps may name them; new sets next
        for (family, new, old) in pairs() {
            for name in new.chains.keys().filter(|n| !old.chains.contains_key(*n)) {
                let _ = writeln!(s, "add chain {family} {TABLE} {name}");
            }
            for (name, set) in new.sets.iter().filter(|(n, _)| !old.sets.contains_key(*n)) {
                let _ = writeln!(s, "add {} {family} {TABLE} {name} {{ {} }}", set.kind, set.decl);
            }
        }
        // sets and maps whose elements differ are refilled (a map no longer names the chains about to go)
        for (family, new, old) in pairs() {
            for (name, set) in &new.sets {
                let before = old.sets.get(name);
                if before.is_some_and(|o| o.elements == set.elements) {
                    continue;
                }
                if before.is_some() {
                    let _ = writeln!(s, "flush {} {family} {TABLE} {name}", set.kind);
                }
                if !set.elements.is_empty() {
                    let _ = writeln!(s, "add element {family} {TABLE} {name} {{ {} }}", set.elements.join(", "));
                }
            }
        }
        // chains whose rules differ are refilled, new ones filled
        for (family, new, old) in pairs() {
            for (name, chain) in &new.chains {
                let before = old.chains.get(name);
                if before.is_some_and(|o| o.rules == chain.rules) {
                    continue;
                }
                if before.is_some() {
                    let _ = writeln!(s, "flush chain {family} {TABLE} {name}");
                }
                for r in &chain.rules {
                    let _ = writeln!(s, "add rule {family} {TABLE} {name} {r}");
                }
            }
        }
        // chains gone: emptied first (they may jump to each other), then deleted; then sets gone
        for (family, new, old) in pairs() {
            let gone: Vec<&String> = old.chains.keys().filter(|n| !new.chains.contains_key(*n)).collect();
            for name in &gone {
                let _ = writeln!(s, "flush chain {family} {TABLE} {name}");
            }
            for name in &gone {
                let _ = writeln!(s, "delete chain {family} {TABLE} {name}");
            }
            for (name, set) in old.sets.iter().filter(|(n, _)| !new.sets.contains_key(*n)) {
                let _ = writeln!(s, "delete {} {family} {TABLE} {name}", set.kind);
            }
        }
        Some(s)
    }
}

/// Whether a port is filtered by this host: bound here, port security on, and not one of the network's own.
pub fn filtered(port: &PortState, host: &str) -> bool {
    port.host == host && port.port_security_enabled && port.device_owner != DHCP_OWNER && !port.device_owner.starts_with("network:")
}

/// Names nftables takes as identifiers without quoting.
fn plain(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Renders the ruleset `state` asks of `host`, from scratch.
pub fn render(state: &HostState, host: &str) -> Ruleset {
    render_after(state, host, None)
}

/// Renders the ruleset `state` asks of `host`; ports `previous` filtered keep their index.
pub fn render_after(state: &HostState, host: &str, previous: Option<&Ruleset>) -> Ruleset {
    let mut ports: Vec<&PortState> = state.networks.iter().flat_map(|n| &n.ports).filter(|p| filtered(p, host) && plain(&p.id)).collect();
    ports.sort_by(|a, b| a.id.cmp(&b.id));
    ports.dedup_by(|a, b| tap_name(&a.id) == tap_name(&b.id));
    if ports.len() > MAX_PORTS {
        tracing::warn!(ports = ports.len(), "more filtered ports than the firewall can mark: the rest go unfiltered");
        ports.truncate(MAX_PORTS);
    }
    let groups: BTreeMap<&str, &SecurityGroupState> =
        state.security_groups.iter().filter(|g| plain(&g.id)).map(|g| (g.id.as_str(), g)).collect();
    let mut rs = Ruleset { ports: ports.len(), ..Ruleset::default() };
    if ports.is_empty() {
        return rs;
    }

    // the groups the ports use: a chain per direction; and the remote groups their rules name: a set per family
    let used: BTreeSet<&str> =
        ports.iter().flat_map(|p| &p.security_groups).map(String::as_str).filter(|g| groups.contains_key(g)).collect();
    let mut remotes = BTreeSet::new();
    for id in &used {
        let g = groups[id];
        for direction in ["ingress", "egress"] {
            let rules = g.rules.iter().filter(|r| r.direction == direction).filter_map(|r| rule(r, &groups)).collect();
            rs.inet.chains.insert(format!("sg-{id}-{direction}"), Chain { base: None, rules });
        }
        remotes.extend(g.rules.iter().filter_map(|r| r.remote_group_id.as_deref()).filter(|r| groups.contains_key(r)));
    }
    for id in remotes {
        let (v4, v6) = split_prefixes(groups[id].members.iter().map(String::as_str));
        rs.inet.sets.insert(format!("sg-{id}-v4"), Set { kind: "set", decl: "type ipv4_addr; flags interval; auto-merge;", elements: v4 });
        rs.inet.sets.insert(format!("sg-{id}-v6"), Set { kind: "set", decl: "type ipv6_addr; flags interval; auto-merge;", elements: v6 });
    }

    // indexes: kept from the previous pass, the lowest free one for a new port
    let taps: Vec<String> = ports.iter().map(|p| tap_name(&p.id)).collect();
    for tap in &taps {
        if let Some(i) = previous.and_then(|r| r.indexes.get(tap)) {
            rs.indexes.insert(tap.clone(), *i);
        }
    }
    let mut taken: BTreeSet<u32> = rs.indexes.values().copied().collect();
    let mut next = 1;
    for tap in &taps {
        if !rs.indexes.contains_key(tap) {
            while taken.contains(&next) {
                next += 1;
            }
            rs.indexes.insert(tap.clone(), next);
            taken.insert(next);
        }
    }
    let (mut spoof_map, mut to_map, mut egress_map, mut ingress_map) = (vec![], vec![], vec![], vec![]);
    for (p, tap) in ports.iter().zip(&taps) {
        let idx = rs.indexes[tap];
        let tap = tap.clone();
        spoof_map.push(format!("\"{tap}\" : goto {tap}-spoof"));
        to_map.push(format!("\"{tap}\" : goto {tap}-to"));
        egress_map.push(format!("{idx:#010x} : goto {tap}-egress"));
        ingress_map.push(format!("{:#010x} : goto {tap}-ingress", idx << 16));
        rs.bridge.chains.insert(format!("{tap}-spoof"), Chain { base: None, rules: spoof_rules(p, idx) });
        let to = format!("meta mark set meta mark and 0x0000ffff or {:#010x}", idx << 16);
        rs.bridge.chains.insert(format!("{tap}-to"), Chain { base: None, rules: vec![to] });
        let jumps = |direction: &str| -> Vec<String> {
            p.security_groups.iter().filter(|g| used.contains(g.as_str())).map(|g| format!("jump sg-{g}-{direction}")).collect()
        };
        let mut egress = vec!["jump port-egress".to_string()];
        egress.extend(jumps("egress"));
        egress.push("drop".into());
        rs.inet.chains.insert(format!("{tap}-egress"), Chain { base: None, rules: egress });
        let mut ingress = vec!["jump port-ingress".to_string()];
        ingress.extend(jumps("ingress"));
        ingress.push("drop".into());
        rs.inet.chains.insert(format!("{tap}-ingress"), Chain { base: None, rules: ingress });
    }
    // what every filtered port may always send and receive, or never send (one copy, jumped to by all)
    let port_egress = [
        "meta nfproto ipv4 udp sport 68 udp dport 67 accept",
        "meta nfproto ipv6 udp sport 546 udp dport 547 accept",
        "meta nfproto ipv4 udp sport 67 udp dport 68 drop",
        "meta nfproto ipv6 udp sport 547 udp dport 546 drop",
        "icmpv6 type nd-router-advert drop",
        "icmpv6 type { mld-listener-report, mld2-listener-report, nd-neighbor-solicit, nd-neighbor-advert } accept",
        "ct state established,related accept",
        "ct state invalid drop",
    ];
    rs.inet.chains.insert("port-egress".into(), Chain { base: None, rules: port_egress.map(String::from).to_vec() });
    let port_ingress = [
        "meta nfproto ipv4 udp sport 67 udp dport 68 accept",
        "meta nfproto ipv6 udp sport 547 udp dport 546 accept",
        "icmpv6 type { mld-listener-query, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept",
        "ct state established,related accept",
        "ct state invalid drop",
    ];
    rs.inet.chains.insert("port-ingress".into(), Chain { base: None, rules: port_ingress.map(String::from).to_vec() });
    let base = |header: &'static str, rule: &str| Chain { base: Some(header), rules: vec![rule.to_string()] };
    let map = |decl: &'static str, mut elements: Vec<String>| {
        elements.sort();
        Set { kind: "map", decl, elements }
    };
    rs.bridge
        .chains
        .insert("prerouting".into(), base("type filter hook prerouting priority -200; policy accept;", "iifname vmap @from-port"));
    rs.bridge.chains.insert("forward".into(), base("type filter hook forward priority -200; policy accept;", "oifname vmap @to-port"));
    rs.bridge.sets.insert("from-port".into(), map("type ifname : verdict;", spoof_map));
    rs.bridge.sets.insert("to-port".into(), map("type ifname : verdict;", to_map));
    rs.inet.chains.insert(
        "egress".into(),
        base("type filter hook forward priority -1; policy accept;", "meta mark and 0x0000ffff vmap @egress-ports"),
    );
    rs.inet.chains.insert(
        "ingress".into(),
        base("type filter hook forward priority 0; policy accept;", "meta mark and 0xffff0000 vmap @ingress-ports"),
    );
    rs.inet.sets.insert("egress-ports".into(), map("type mark : verdict;", egress_map));
    rs.inet.sets.insert("ingress-ports".into(), map("type mark : verdict;", ingress_map));
    // each network's connections in a conntrack zone of their own, chosen by the bridge they cross (all its ports,
    // both directions), before connection tracking looks them up
    let zones = conntrack_zones(state.networks.iter().map(|n| n.id.as_str()));
    let zone_map = zones.iter().map(|(id, zone)| format!("\"{}\" : {zone}", crate::bridge_name(id))).collect();
    rs.inet.chains.insert("zone".into(), base("type filter hook prerouting priority raw; policy accept;", "ct zone set iifname map @zones"));
    rs.inet.sets.insert("zones".into(), map("typeof iifname : ct zone;", zone_map));
    rs
}

/// The `conntrack -D` arguments that cut the connections of the rules `before` had and `state` no longer has, for
/// each of `host`'s filtered ports in those rules' groups: in the port's network's zone, to the port's address
/// (ingress) or from it (egress), of the rule's family and protocol, and of its destination port when it names one.
/// Broader than the rule is fine: a connection another rule still admits starts again as new and passes.
pub fn cuts(before: &BTreeMap<String, Vec<SecurityGroupRuleState>>, state: &HostState, host: &str) -> Vec<Vec<String>> {
    let zones = conntrack_zones(state.networks.iter().map(|n| n.id.as_str()));
    let mut out = Vec::new();
    for g in &state.security_groups {
        let Some(old) = before.get(&g.id) else { continue };
        let removed: Vec<&SecurityGroupRuleState> = old.iter().filter(|r| !g.rules.iter().any(|n| n.id == r.id)).collect();
        if removed.is_empty() {
            continue;
        }
        let ports = state.networks.iter().flat_map(|n| &n.ports).filter(|p| filtered(p, host) && p.security_groups.contains(&g.id));
        for p in ports {
            let Some(zone) = zones.get(&p.network_id) else { continue };
            for r in &removed {
                let v6 = r.ethertype == "IPv6";
                let proto = match r.protocol.as_deref().map(str::to_ascii_lowercase).as_deref() {
                    None | Some("") | Some("any") => None,
                    Some("tcp" | "6") => Some("tcp"),
                    Some("udp" | "17") => Some("udp"),
                    Some("icmp" | "1") if !v6 => Some("icmp"),
                    Some("icmp" | "ipv6-icmp" | "icmpv6" | "58") if v6 => Some("icmpv6"),
                    Some("sctp" | "132") => Some("sctp"),
                    // a protocol conntrack cannot filter on: all the port's connections of the family
                    Some(_) => None,
                };
                for ip in p.fixed_ips.iter().filter(|f| f.ip_address.parse::<IpAddr>().is_ok_and(|a| a.is_ipv6() == v6)) {
                    let mut args = vec!["-D".to_string(), "-w".into(), zone.to_string(), "-f".into(), (if v6 { "ipv6" } else { "ipv4" }).into()];
                    let side = if r.direction == "ingress" { "--orig-dst" } else { "--orig-src" };
                    args.extend([side.to_string(), ip.ip_address.clone()]);
                    if let Some(proto) = proto {
                        args.extend(["-p".to_string(), proto.into()]);
                        if matches!(proto, "tcp" | "udp" | "sctp")
                            && let (Some(min), Some(max)) = (r.port_range_min, r.port_range_max)
                            && min == max
                        {
                            args.extend(["--dport".to_string(), min.to_string()]);
                        }
                    }
                    out.push(args);
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// A conntrack zone (1–65535) per network, from a hash of its id, so a network keeps its zone from pass to pass
/// and across agent restarts (established connections keep their state); a collision takes the next free zone,
/// in the order of the networks' ids.
pub fn conntrack_zones<'a>(networks: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, u16> {
    let mut ids: Vec<&str> = networks.into_iter().filter(|id| plain(id)).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut taken = BTreeSet::new();
    let mut out = BTreeMap::new();
    for id in ids {
        // FNV-1a: stable across builds and processes, unlike the standard library's hasher
        let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        let mut zone = (hash % 65535) as u16 + 1;
        while !taken.insert(zone) {
            zone = if zone == u16::MAX { 1 } else { zone + 1 };
        }
        out.insert(id.to_string(), zone);
    }
    out
}

/// What may leave a port: its MACs with their addresses, DHCP discovery and duplicate address detection, other
/// ethertypes than IP, ARP and VLAN tags from its MACs; nothing else. Marks the frame with the port's index.
fn spoof_rules(p: &PortState, idx: u32) -> Vec<String> {
    let mac = p.mac_address.to_ascii_lowercase();
    let mut by_mac: BTreeMap<String, Vec<String>> = BTreeMap::new();
    by_mac.entry(mac.clone()).or_default().extend(p.fixed_ips.iter().map(|f| f.ip_address.clone()));
    for pair in &p.allowed_address_pairs {
        let m = if pair.mac_address.is_empty() { mac.clone() } else { pair.mac_address.to_ascii_lowercase() };
        by_mac.entry(m).or_default().push(pair.ip_address.clone());
    }
    let mut rules = vec![format!("meta mark set {idx:#010x}")];
    let mut macs = vec![];
    for (m, addrs) in &by_mac {
        let Some(bytes) = parse_mac(m) else { continue };
        macs.push(m.clone());
        let (v4, mut v6) = split_prefixes(addrs.iter().map(String::as_str));
        v6.push(link_local(bytes).to_string());
        if !v4.is_empty() {
            rules.push(format!("ether saddr {m} ether type ip ip saddr {{ {} }} return", v4.join(", ")));
            // a pair's prefix admits ARP for any address in it
            rules.push(format!("ether saddr {m} ether type arp arp saddr ether {m} arp saddr ip {{ {} }} return", v4.join(", ")));
        }
        rules.push(format!("ether saddr {m} ether type ip6 ip6 saddr {{ {} }} return", v6.join(", ")));
    }
    if macs.is_empty() {
        rules.push("drop".into());
        return rules;
    }
    rules.push(format!("ether saddr {mac} ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 return"));
    rules.push(format!(
        "ether saddr {mac} ether type ip6 ip6 saddr :: icmpv6 type {{ nd-neighbor-solicit, mld-listener-report, mld2-listener-report }} return"
    ));
    rules.push(format!("ether saddr {{ {} }} ether type != {{ ip, ip6, arp, 8021q, 8021ad }} return", macs.join(", ")));
    rules.push("drop".into());
    rules
}

/// One security group rule as an nftables rule (verdict `accept`), or `None` for a rule that can match nothing
/// here (an unknown ethertype, a remote group the host was not told about, a prefix of the other family).
fn rule(r: &SecurityGroupRuleState, groups: &BTreeMap<&str, &SecurityGroupState>) -> Option<String> {
    let (v6, nfproto, ipkw) = match r.ethertype.as_str() {
        "IPv4" => (false, "ipv4", "ip"),
        "IPv6" => (true, "ipv6", "ip6"),
        _ => return None,
    };
    let dir = if r.direction == "ingress" { "saddr" } else { "daddr" };
    let mut m = vec![format!("meta nfproto {nfproto}")];
    if let Some(prefix) = &r.remote_ip_prefix {
        let (addr, len) = parse_prefix(prefix)?;
        if addr.is_ipv6() != v6 {
            return None;
        }
        if len > 0 {
            m.push(format!("{ipkw} {dir} {}", show_prefix(addr, len)));
        }
    } else if let Some(g) = &r.remote_group_id {
        if !groups.contains_key(g.as_str()) {
            return None;
        }
        m.push(format!("{ipkw} {dir} @sg-{g}-{}", if v6 { "v6" } else { "v4" }));
    }
    if let Some(proto) = r.protocol.as_deref().and_then(protocol_number) {
        let proto = if v6 && proto == 1 { 58 } else { proto };
        m.push(format!("meta l4proto {proto}"));
        match proto {
            1 | 58 => {
                let kw = if proto == 1 { "icmp" } else { "icmpv6" };
                if let Some(t) = r.port_range_min.filter(|t| (0..=255).contains(t)) {
                    m.push(format!("{kw} type {t}"));
                    if let Some(c) = r.port_range_max.filter(|c| (0..=255).contains(c)) {
                        m.push(format!("{kw} code {c}"));
                    }
                }
            }
            6 | 17 | 33 | 132 | 136 => {
                let lo = r.port_range_min.filter(|p| (1..=65535).contains(p));
                let hi = r.port_range_max.filter(|p| (1..=65535).contains(p));
                match (lo, hi) {
                    (Some(lo), Some(hi)) if hi > lo => m.push(format!("th dport {lo}-{hi}")),
                    (Some(lo), _) => m.push(format!("th dport {lo}")),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    m.push("accept".into());
    Some(m.join(" "))
}

/// A protocol by name or number; `None` for any.
fn protocol_number(p: &str) -> Option<u8> {
    let n = network_rpc::IP_PROTOCOLS.iter().find(|(n, _)| n.eq_ignore_ascii_case(p)).map(|(_, n)| *n).or_else(|| p.parse().ok())?;
    // 0 (`ip`, `hopopt`, "any") means every protocol, as upstream
    (n != 0).then_some(n)
}

fn parse_prefix(s: &str) -> Option<(IpAddr, u8)> {
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a.parse::<IpAddr>().ok()?, l.parse::<u8>().ok()?),
        None => {
            let a: IpAddr = s.parse().ok()?;
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if a.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((a, len))
}

/// The network of a prefix, as nftables wants it (host bits zero), without `/len` for a single address.
fn show_prefix(a: IpAddr, len: u8) -> String {
    match a {
        IpAddr::V4(v) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            let net = Ipv4Addr::from(u32::from(v) & mask);
            if len == 32 { net.to_string() } else { format!("{net}/{len}") }
        }
        IpAddr::V6(v) => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            let net = Ipv6Addr::from(u128::from(v) & mask);
            if len == 128 { net.to_string() } else { format!("{net}/{len}") }
        }
    }
}

/// Addresses and prefixes split by family, normalised, sorted and without duplicates (bad ones dropped).
fn split_prefixes<'a>(list: impl Iterator<Item = &'a str>) -> (Vec<String>, Vec<String>) {
    let (mut v4, mut v6) = (BTreeSet::new(), BTreeSet::new());
    for (a, len) in list.filter_map(parse_prefix) {
        if a.is_ipv4() { &mut v4 } else { &mut v6 }.insert(show_prefix(a, len));
    }
    (v4.into_iter().collect(), v6.into_iter().collect())
}

fn parse_mac(m: &str) -> Option<[u8; 6]> {
    let v = crate::netlink::parse_mac(m)?;
    v.try_into().ok()
}

/// The EUI-64 link-local address of a MAC.
fn link_local(m: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([m[0] ^ 2, m[1]]),
        u16::from_be_bytes([m[2], 0xff]),
        u16::from_be_bytes([0xfe, m[3]]),
        u16::from_be_bytes([m[4], m[5]]),
    )
}

/// The firewall of one host: renders and applies its ruleset, remembering the last one applied.
pub struct Firewall {
    nft: PathBuf,
    ip: PathBuf,
    conntrack: PathBuf,
    namespace: Option<String>,
    verify_every: Duration,
    applied: Mutex<Applied>,
}

/// What the last pass left in the kernel, as far as this process knows.
#[derive(Default)]
struct Applied {
    ruleset: Option<Ruleset>,
    /// The rules of the groups the last pass enforced, by group: the rules a later pass no longer has get their
    /// connections cut.
    rules: BTreeMap<String, Vec<SecurityGroupRuleState>>,
    /// When the tables' presence was last checked (listing them costs as much as a small update with big tables).
    checked: Option<Instant>,
}

impl Firewall {
    /// A firewall running `nft` (through `ip netns exec` in `namespace`, if given), which trusts its memory of what
    /// it applied and checks that its tables are still there at least every `verify_every`.
    pub fn new(nft: PathBuf, ip: PathBuf, namespace: Option<String>, verify_every: Duration) -> Firewall {
        Firewall { nft, ip, conntrack: "conntrack".into(), namespace, verify_every, applied: Mutex::new(Applied::default()) }
    }

    /// The `conntrack` command (conntrack-tools) that cuts the connections of removed rules.
    pub fn with_conntrack(mut self, conntrack: PathBuf) -> Firewall {
        self.conntrack = conntrack;
        self
    }

    /// Makes the host's tables match `state`; returns the number of ports filtered.
    pub async fn apply(&self, state: &HostState, host: &str) -> Result<usize, Error> {
        let (new, cuts) = {
            let applied = self.applied.lock().await;
            (render_after(state, host, applied.ruleset.as_ref()), cuts(&applied.rules, state, host))
        };
        let ports = self.apply_ruleset(new).await?;
        // the rules are gone from the kernel: connections only they admitted end now, as upstream deletes them
        for args in cuts {
            let mut c = self.conntrack_command();
            let out = c.args(&args).kill_on_drop(true).output().await;
            match out {
                Ok(o) if o.status.success() => tracing::info!(args = %args.join(" "), "connections of a removed rule cut"),
                // "0 flow entries have been deleted" exits 1
                Ok(o) => tracing::debug!(args = %args.join(" "), stderr = %String::from_utf8_lossy(&o.stderr).trim(), "no connections to cut"),
                Err(e) => tracing::warn!(error = %e, "cannot run conntrack: connections of removed rules last until they end"),
            }
        }
        self.applied.lock().await.rules =
            state.security_groups.iter().map(|g| (g.id.clone(), g.rules.clone())).collect();
        Ok(ports)
    }

    fn conntrack_command(&self) -> Command {
        match &self.namespace {
            Some(ns) => {
                let mut c = Command::new(&self.ip);
                c.args(["netns", "exec", ns]).arg(&self.conntrack);
                c
            }
            None => Command::new(&self.conntrack),
        }
    }

    /// Applies a rendered ruleset (see the module's notes).
    pub async fn apply_ruleset(&self, new: Ruleset) -> Result<usize, Error> {
        let mut applied = self.applied.lock().await;
        let due = applied.checked.is_none_or(|t| t.elapsed() >= self.verify_every);
        let present = if due {
            let present = match self.tables_present().await {
                Ok(p) => p,
                // without nft there are no tables to remove
                Err(e) if new.is_empty() => {
                    tracing::debug!(error = %e, "cannot list nftables tables");
                    false
                }
                Err(e) => return Err(e),
            };
            applied.checked = Some(Instant::now());
            Some(present)
        } else {
            None
        };
        // whether the kernel holds what this process last applied
        let intact = match (&applied.ruleset, present) {
            (Some(old), Some(present)) => present != old.is_empty(),
            (Some(_), None) => true,
            (None, _) => false,
        };
        let script = match &applied.ruleset {
            Some(old) if intact && *old == new => return Ok(new.ports),
            Some(old) if intact => new.update_script(old).unwrap_or_else(|| new.replace_script()),
            _ if new.is_empty() && present == Some(false) => {
                applied.ruleset = Some(new);
                return Ok(0);
            }
            _ => new.replace_script(),
        };
        if !new.is_empty() {
            self.enable_bridge_netfilter()?;
        }
        applied.ruleset = None;
        self.nft(&script).await?;
        let ports = new.ports;
        applied.ruleset = Some(new);
        Ok(ports)
    }

    /// Removes the tables.
    pub async fn clear(&self) -> Result<(), Error> {
        self.apply_ruleset(Ruleset::default()).await.map(|_| ())
    }

    fn command(&self) -> Command {
        match &self.namespace {
            Some(ns) => {
                let mut c = Command::new(&self.ip);
                c.args(["netns", "exec", ns]).arg(&self.nft);
                c
            }
            None => Command::new(&self.nft),
        }
    }

    /// Whether both of the agent's tables exist.
    async fn tables_present(&self) -> Result<bool, Error> {
        let out = self
            .command()
            .args(["list", "tables"])
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| Error::io(format!("cannot run {}", self.nft.display()), e))?;
        if !out.status.success() {
            return Err(Error::Command(format!("nft list tables: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let has = |family: &str| text.lines().any(|l| l.trim() == format!("table {family} {TABLE}"));
        Ok(has("bridge") && has("inet"))
    }

    async fn nft(&self, script: &str) -> Result<(), Error> {
        let mut child = self
            .command()
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::io(format!("cannot run {}", self.nft.display()), e))?;
        let mut stdin = child.stdin.take().ok_or_else(|| Error::Command("nft: no stdin".into()))?;
        stdin.write_all(script.as_bytes()).await.map_err(|e| Error::io("nft stdin", e))?;
        drop(stdin);
        let out = child.wait_with_output().await.map_err(|e| Error::io("nft", e))?;
        if !out.status.success() {
            return Err(Error::Command(format!("nft -f: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
        Ok(())
    }

    /// Bridged IP packets through the `inet` hooks (`br_netfilter`), in the agent's namespace.
    fn enable_bridge_netfilter(&self) -> Result<(), Error> {
        let namespace = self.namespace.clone();
        std::thread::spawn(move || {
            if let Some(ns) = &namespace {
                let path = format!("{NETNS_DIR}/{ns}");
                let fd = std::fs::File::open(&path).map_err(|e| Error::io(format!("cannot open {path}"), e))?;
                rustix::thread::move_into_link_name_space(std::os::fd::AsFd::as_fd(&fd), Some(rustix::thread::LinkNameSpaceType::Network))
                    .map_err(|e| Error::Netlink(format!("cannot enter {path}: {e}")))?;
            }
            for key in ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables"] {
                let path = format!("/proc/sys/net/bridge/{key}");
                match std::fs::read_to_string(&path) {
                    Ok(v) if v.trim() == "1" => {}
                    Ok(_) => std::fs::write(&path, "1").map_err(|e| Error::io(format!("cannot set {path}"), e))?,
                    Err(e) => return Err(Error::io(format!("{path} (the kernel needs br_netfilter)"), e)),
                }
            }
            Ok(())
        })
        .join()
        .map_err(|_| Error::Command("sysctl thread panicked".into()))?
    }
}

#[cfg(test)]
mod tests {
    use network_rpc::{AddressPair, FixedIp, NetworkState};

    use super::*;

    fn port(id: &str, mac: &str, ip: &str, groups: &[&str]) -> PortState {
        PortState {
            id: id.into(),
            network_id: "n1".into(),
            mac_address: mac.into(),
            fixed_ips: vec![FixedIp { subnet_id: "s1".into(), ip_address: ip.into() }],
            device_owner: "compute:nova".into(),
            device_id: String::new(),
            project_id: "p1".into(),
            host: "cn1".into(),
            admin_state_up: true,
            dns_name: String::new(),
            extra_dhcp_opts: vec![],
            status: "ACTIVE".into(),
            port_security_enabled: true,
            security_groups: groups.iter().map(|g| g.to_string()).collect(),
            allowed_address_pairs: vec![],
        }
    }

    fn rule(direction: &str, ethertype: &str, protocol: Option<&str>, range: (Option<i64>, Option<i64>)) -> SecurityGroupRuleState {
        SecurityGroupRuleState {
            id: "r".into(),
            direction: direction.into(),
            ethertype: ethertype.into(),
            protocol: protocol.map(str::to_string),
            port_range_min: range.0,
            port_range_max: range.1,
            ..Default::default()
        }
    }

    fn state(ports: Vec<PortState>, groups: Vec<SecurityGroupState>) -> HostState {
        let net = NetworkState {
            id: "n1".into(),
            name: "n".into(),
            project_id: "p".into(),
            admin_state_up: true,
            mtu: 1450,
            segment: Default::default(),
            subnets: vec![],
            ports,
            peers: vec![],
        };
        HostState { networks: vec![net], security_groups: groups, routers: vec![] }
    }

    #[test]
    fn rules_render_as_upstream_reads_them() {
        let groups = BTreeMap::new();
        let r = |r| super::rule(&r, &groups);
        assert_eq!(
            r(rule("ingress", "IPv4", Some("tcp"), (Some(22), Some(22)))).unwrap(),
            "meta nfproto ipv4 meta l4proto 6 th dport 22 accept"
        );
        assert_eq!(
            r(rule("ingress", "IPv4", Some("17"), (Some(1000), Some(2000)))).unwrap(),
            "meta nfproto ipv4 meta l4proto 17 th dport 1000-2000 accept"
        );
        assert_eq!(
            r(rule("ingress", "IPv4", Some("icmp"), (Some(8), Some(0)))).unwrap(),
            "meta nfproto ipv4 meta l4proto 1 icmp type 8 icmp code 0 accept"
        );
        assert_eq!(
            r(rule("ingress", "IPv6", Some("icmp"), (Some(128), None))).unwrap(),
            "meta nfproto ipv6 meta l4proto 58 icmpv6 type 128 accept"
        );
        assert_eq!(r(rule("egress", "IPv6", None, (None, None))).unwrap(), "meta nfproto ipv6 accept");
        assert_eq!(r(rule("egress", "IPv4", Some("vrrp"), (None, None))).unwrap(), "meta nfproto ipv4 meta l4proto 112 accept");
        let mut p = rule("ingress", "IPv4", None, (None, None));
        p.remote_ip_prefix = Some("10.1.2.3/16".into());
        assert_eq!(r(p.clone()).unwrap(), "meta nfproto ipv4 ip saddr 10.1.0.0/16 accept");
        p.direction = "egress".into();
        p.remote_ip_prefix = Some("0.0.0.0/0".into());
        assert_eq!(r(p.clone()).unwrap(), "meta nfproto ipv4 accept");
        p.remote_ip_prefix = Some("2001:db8::/32".into());
        assert_eq!(r(p.clone()), None, "a prefix of the other family matches nothing");
        p.remote_ip_prefix = None;
        p.remote_group_id = Some("gone".into());
        assert_eq!(r(p), None, "an unknown remote group matches nothing");
        assert_eq!(r(rule("ingress", "ARP", None, (None, None))), None);
    }

    #[test]
    fn a_host_ruleset_marks_ports_and_shares_groups() {
        let mut a = port("aaaaaaaaaaaa-1", "FA:16:3E:00:00:01", "10.0.0.5", &["g1"]);
        a.allowed_address_pairs = vec![AddressPair { ip_address: "10.0.1.0/24".into(), mac_address: "fa:16:3e:00:00:99".into() }];
        let b = port("bbbbbbbbbbbb-2", "fa:16:3e:00:00:02", "10.0.0.6", &["g1"]);
        let mut open = port("cccccccccccc-3", "fa:16:3e:00:00:03", "10.0.0.7", &[]);
        open.port_security_enabled = false;
        let mut remote = rule("ingress", "IPv4", Some("tcp"), (Some(80), Some(80)));
        remote.remote_group_id = Some("g1".into());
        let g1 = SecurityGroupState {
            id: "g1".into(),
            stateful: true,
            rules: vec![remote, rule("egress", "IPv4", None, (None, None))],
            members: vec!["10.0.0.6".into(), "10.0.0.5".into(), "10.0.1.0/24".into(), "2001:db8::5".into()],
        };
        let rs = render(&state(vec![a, b, open], vec![g1.clone()]), "cn1");
        assert_eq!(rs.ports, 2);
        let script = rs.replace_script();
        assert!(script.contains("iifname vmap @from-port"), "{script}");
        assert!(script.contains(
            "add element bridge stratus-sg from-port { \"tapaaaaaaaaaaa\" : goto tapaaaaaaaaaaa-spoof, \"tapbbbbbbbbbbb\" : goto tapbbbbbbbbbbb-spoof }"
        ));
        assert!(script.contains(
            "add element inet stratus-sg ingress-ports { 0x00010000 : goto tapaaaaaaaaaaa-ingress, 0x00020000 : goto tapbbbbbbbbbbb-ingress }"
        ));
        assert!(script.contains("ether saddr fa:16:3e:00:00:01 ether type ip ip saddr { 10.0.0.5 } return"));
        assert!(script.contains("ether saddr fa:16:3e:00:00:99 ether type ip ip saddr { 10.0.1.0/24 } return"));
        assert!(script.contains("ip6 saddr { fe80::f816:3eff:fe00:1 } return"), "{script}");
        assert!(script.contains("meta nfproto ipv4 ip saddr @sg-g1-v4 meta l4proto 6 th dport 80 accept"));
        assert!(script.contains("add element inet stratus-sg sg-g1-v4 { 10.0.0.5, 10.0.0.6, 10.0.1.0/24 }"));
        assert!(script.contains("add element inet stratus-sg sg-g1-v6 { 2001:db8::5 }"));
        assert!(!script.contains("tapccccccccccc"), "a port without port security is not filtered");

        // a member joining refills one set, a rule refills one chain; a port going changes the shape
        let mut g2 = g1.clone();
        g2.members.push("10.0.0.8".into());
        let again = |g: SecurityGroupState, ports: Vec<PortState>| render(&state(ports, vec![g]), "cn1");
        let base_ports = || {
            vec![
                port("aaaaaaaaaaaa-1", "fa:16:3e:00:00:01", "10.0.0.5", &["g1"]),
                port("bbbbbbbbbbbb-2", "fa:16:3e:00:00:02", "10.0.0.6", &["g1"]),
            ]
        };
        let before = again(g1.clone(), base_ports());
        let joined = again(g2, base_ports());
        assert_eq!(
            joined.update_script(&before).unwrap(),
            "flush set inet stratus-sg sg-g1-v4\nadd element inet stratus-sg sg-g1-v4 { 10.0.0.5, 10.0.0.6, 10.0.0.8, 10.0.1.0/24 }\n"
        );
        let mut g3 = g1.clone();
        g3.rules.push(rule("ingress", "IPv4", Some("icmp"), (None, None)));
        let update = again(g3, base_ports()).update_script(&before).unwrap();
        assert!(update.starts_with("flush chain inet stratus-sg sg-g1-ingress\n"), "{update}");
        assert_eq!(update.lines().count(), 3, "{update}");
        // a port going loses its chains and map elements, the others keep theirs
        let one = render_after(&state(base_ports()[..1].to_vec(), vec![g1.clone()]), "cn1", Some(&before));
        let update = one.update_script(&before).unwrap();
        assert!(update.contains(
            "flush map inet stratus-sg egress-ports\nadd element inet stratus-sg egress-ports { 0x00000001 : goto tapaaaaaaaaaaa-egress }"
        ));
        assert!(update.contains("flush chain bridge stratus-sg tapbbbbbbbbbbb-spoof\n"), "{update}");
        assert!(update.contains("delete chain inet stratus-sg tapbbbbbbbbbbb-ingress\n"), "{update}");
        assert!(!update.contains("tapaaaaaaaaaaa-spoof\n"), "{update}");
        // a port coming gets a free index; the others keep theirs
        let mut ports = base_ports();
        ports.push(port("000000000000-0", "fa:16:3e:00:00:10", "10.0.0.10", &["g1"]));
        let three = render_after(&state(ports.clone(), vec![g1.clone()]), "cn1", Some(&before));
        let update = three.update_script(&before).unwrap();
        assert!(update.starts_with("add chain bridge stratus-sg tap00000000000-spoof\n"), "{update}");
        assert!(update.contains(
            "add element inet stratus-sg egress-ports { 0x00000001 : goto tapaaaaaaaaaaa-egress, 0x00000002 : goto tapbbbbbbbbbbb-egress, 0x00000003 : goto tap00000000000-egress }"
        ));
        assert!(!update.contains("delete"), "{update}");
        assert_eq!(render(&state(ports, vec![g1.clone()]), "cn1").indexes["tap00000000000"], 1, "from scratch, by port id");
        assert_eq!(again(g1.clone(), base_ports()).update_script(&Ruleset::default()), None);
        assert_eq!(render(&HostState::default(), "cn1").replace_script().lines().filter(|l| l.starts_with("table")).count(), 2);
    }

    #[test]
    fn networks_get_stable_distinct_conntrack_zones() {
        let a = conntrack_zones(["net-a", "net-b", "net-c"]);
        assert_eq!(a.len(), 3);
        let zones: BTreeSet<u16> = a.values().copied().collect();
        assert_eq!(zones.len(), 3, "distinct: {a:?}");
        assert!(!zones.contains(&0), "zone 0 is everyone else's");
        // the same network keeps its zone whatever else is there
        let b = conntrack_zones(["net-b", "net-z"]);
        assert_eq!(a["net-b"], b["net-b"]);
        assert!(conntrack_zones(["bad id"]).is_empty());
    }

    #[test]
    fn removed_rules_cut_the_connections_of_their_groups_ports() {
        let web = port("p1", "fa:16:3e:00:00:01", "10.0.0.5", &["g"]);
        let mut other_host = port("p2", "fa:16:3e:00:00:02", "10.0.0.6", &["g"]);
        other_host.host = "cn2".into();
        let mut ssh = rule("ingress", "IPv4", Some("tcp"), (Some(22), Some(22)));
        ssh.id = "ssh".into();
        let mut out = rule("egress", "IPv4", Some("17"), (Some(1000), Some(2000)));
        out.id = "out".into();
        let mut v6 = rule("ingress", "IPv6", None, (None, None));
        v6.id = "v6".into();
        let group = |rules: Vec<SecurityGroupRuleState>| SecurityGroupState { id: "g".into(), stateful: true, rules, members: vec![] };
        let before = BTreeMap::from([("g".to_string(), vec![ssh.clone(), out.clone(), v6.clone()])]);
        let now = state(vec![web.clone(), other_host.clone()], vec![group(vec![v6.clone()])]);
        let zone = conntrack_zones(["n1"])["n1"].to_string();
        let args = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // this host's port only; its IPv4 address for the IPv4 rules; a single port is named, a range is not
        assert_eq!(
            cuts(&before, &now, "cn1"),
            vec![
                args(&["-D", "-w", &zone, "-f", "ipv4", "--orig-dst", "10.0.0.5", "-p", "tcp", "--dport", "22"]),
                args(&["-D", "-w", &zone, "-f", "ipv4", "--orig-src", "10.0.0.5", "-p", "udp"]),
            ]
        );
        // nothing removed, or a group first seen: nothing cut
        assert!(cuts(&BTreeMap::from([("g".to_string(), vec![v6.clone()])]), &now, "cn1").is_empty());
        assert!(cuts(&BTreeMap::new(), &now, "cn1").is_empty());
    }

    #[test]
    fn prefixes_and_link_local_addresses() {
        assert_eq!(show_prefix("10.1.2.3".parse().unwrap(), 24), "10.1.2.0/24");
        assert_eq!(show_prefix("2001:db8::1".parse().unwrap(), 128), "2001:db8::1");
        assert_eq!(split_prefixes(["10.0.0.1", "bad", "::1", "10.0.0.1/32"].into_iter()), (vec!["10.0.0.1".into()], vec!["::1".into()]));
        assert_eq!(link_local(parse_mac("fa:16:3e:12:34:56").unwrap()).to_string(), "fe80::f816:3eff:fe12:3456");
        assert_eq!(protocol_number("any"), None);
        assert_eq!(protocol_number("0"), None);
        assert_eq!(protocol_number("IPV6-ICMP"), Some(58));
    }
}
