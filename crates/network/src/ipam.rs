//! Address arithmetic for IP address management: CIDRs and addresses of both families as integers, allocation
//! pools (default pools, validation), SLAAC addresses from the EUI-64 of a MAC, MAC generation with upstream's
//! `fa:16:3e` prefix, and prefix carving for subnet pools. Pure functions; the store enforces uniqueness.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address of either family as an integer, with its version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Addr {
    pub version: u8,
    pub value: u128,
}

impl Addr {
    pub fn parse(s: &str) -> Option<Addr> {
        match s.trim().parse::<IpAddr>().ok()? {
            IpAddr::V4(a) => Some(Addr { version: 4, value: u32::from(a) as u128 }),
            IpAddr::V6(a) => Some(Addr { version: 6, value: u128::from(a) }),
        }
    }
    pub fn new(version: u8, value: u128) -> Addr {
        Addr { version, value }
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.version == 4 {
            write!(f, "{}", Ipv4Addr::from(self.value as u32))
        } else {
            write!(f, "{}", Ipv6Addr::from(self.value))
        }
    }
}

fn bits(version: u8) -> u8 {
    if version == 4 { 32 } else { 128 }
}

/// A network in CIDR notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub version: u8,
    /// The address as written (its host bits may be set).
    pub addr: u128,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n` or `x::/n`; a bare address is a host route (`/32`, `/128`).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = Addr::parse(a)?;
        let max = bits(addr.version);
        let prefix = match p {
            Some(p) => {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                p.parse::<u8>().ok().filter(|p| *p <= max)?
            }
            None => max,
        };
        Some(Cidr { version: addr.version, addr: addr.value, prefix })
    }
    fn host_mask(&self) -> u128 {
        let host_bits = bits(self.version) - self.prefix;
        if host_bits >= 128 { u128::MAX } else { (1u128 << host_bits) - 1 }
    }
    pub fn first(&self) -> u128 {
        self.addr & !self.host_mask()
    }
    pub fn last(&self) -> u128 {
        self.first() | self.host_mask()
    }
    /// Whether the address as written is the network address.
    pub fn is_normalized(&self) -> bool {
        self.addr == self.first()
    }
    pub fn normalized(&self) -> Cidr {
        Cidr { addr: self.first(), ..*self }
    }
    pub fn contains(&self, a: Addr) -> bool {
        a.version == self.version && a.value >= self.first() && a.value <= self.last()
    }
    pub fn overlaps(&self, o: &Cidr) -> bool {
        self.version == o.version && self.first() <= o.last() && o.first() <= self.last()
    }
    /// Whether `o` lies entirely within this network.
    pub fn covers(&self, o: &Cidr) -> bool {
        self.version == o.version && self.first() <= o.first() && o.last() <= self.last()
    }
    /// Number of addresses, saturating.
    pub fn size(&self) -> u128 {
        self.host_mask().saturating_add(1)
    }
    /// The default gateway: the first address after the network address.
    pub fn default_gateway(&self) -> Option<Addr> {
        (self.size() > 1).then(|| Addr::new(self.version, self.first() + 1))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Addr::new(self.version, self.addr), self.prefix)
    }
}

/// An inclusive range of addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    pub start: u128,
    pub end: u128,
}

impl Pool {
    pub fn len(&self) -> u128 {
        self.end - self.start + 1
    }
    pub fn is_empty(&self) -> bool {
        false
    }
    pub fn contains(&self, v: u128) -> bool {
        v >= self.start && v <= self.end
    }
}

/// Upstream's default pools: the whole network but its network address (and IPv4's broadcast address), split
/// around the gateway.
pub fn default_pools(cidr: &Cidr, gateway: Option<Addr>) -> Vec<Pool> {
    let (first, last) = (cidr.first(), cidr.last());
    if first == last {
        return vec![Pool { start: first, end: last }];
    }
    let start = first + 1;
    let end = if cidr.version == 4 { last - 1 } else { last };
    if start > end {
        return vec![];
    }
    let whole = Pool { start, end };
    match gateway {
        Some(g) if whole.contains(g.value) => {
            let mut out = Vec::new();
            if g.value > start {
                out.push(Pool { start, end: g.value - 1 });
            }
            if g.value < end {
                out.push(Pool { start: g.value + 1, end });
            }
            out
        }
        _ => vec![whole],
    }
}

/// Why a set of allocation pools is invalid, in upstream's words.
pub fn validate_pools(cidr: &Cidr, pools: &[Pool], gateway: Option<Addr>) -> Result<(), String> {
    let net = Cidr { addr: cidr.first(), ..*cidr };
    for p in pools {
        if p.start > p.end {
            return Err(format!(
                "The allocation pool {}-{} spans beyond the subnet cidr {net}.",
                Addr::new(cidr.version, p.start),
                Addr::new(cidr.version, p.end)
            ));
        }
        let inside = p.start >= cidr.first() && p.end <= cidr.last();
        let reserved_v4 = cidr.version == 4 && cidr.prefix < 31 && (p.start == cidr.first() || p.end == cidr.last());
        if !inside || reserved_v4 {
            return Err(format!(
                "The allocation pool {}-{} spans beyond the subnet cidr {net}.",
                Addr::new(cidr.version, p.start),
                Addr::new(cidr.version, p.end)
            ));
        }
        if let Some(g) = gateway
            && p.contains(g.value)
        {
            return Err(format!(
                "Gateway ip {g} conflicts with allocation pool {}-{}.",
                Addr::new(cidr.version, p.start),
                Addr::new(cidr.version, p.end)
            ));
        }
    }
    for (i, a) in pools.iter().enumerate() {
        for b in &pools[i + 1..] {
            if a.start <= b.end && b.start <= a.end {
                return Err(format!(
                    "Found overlapping allocation pools: {}-{} and {}-{}.",
                    Addr::new(cidr.version, a.start),
                    Addr::new(cidr.version, a.end),
                    Addr::new(cidr.version, b.start),
                    Addr::new(cidr.version, b.end)
                ));
            }
        }
    }
    Ok(())
}

/// Parses a MAC address `aa:bb:cc:dd:ee:ff` (or with dashes) into its six bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut out = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return None;
        }
        out[i] = u8::from_str_radix(p, 16).ok()?;
    }
    Some(out)
}

pub fn format_mac(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A random MAC with upstream's base `fa:16:3e`.
pub fn random_mac() -> String {
    let tail: [u8; 3] = rand::random();
    format_mac([0xfa, 0x16, 0x3e, tail[0], tail[1], tail[2]])
}

/// The SLAAC address of `mac` in the /64 `cidr`: the prefix and the modified EUI-64 interface identifier.
pub fn eui64(cidr: &Cidr, mac: [u8; 6]) -> Addr {
    let iid: u64 = u64::from_be_bytes([mac[0] ^ 0x02, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]]);
    Addr::new(6, (cidr.first() & !(u64::MAX as u128)) | iid as u128)
}

/// Addresses sampled from `pools` for a new allocation, in growing windows: `per_level` from the lowest 1,024
/// addresses of the pools (taken in order, as one range), `per_level` from the lowest 2,048, and so on up to
/// `levels` windows, then `per_level` from the whole range. The caller takes a free one from the earliest window
/// that has one, so addresses fill from the low end (as upstream's pick among the first free addresses) while the
/// cost stays independent of how many are already allocated. Duplicates are dropped.
pub fn sample_candidates(pools: &[Pool], per_level: usize, levels: u32, rng: &mut impl rand::Rng) -> Vec<Vec<u128>> {
    let total: u128 = pools.iter().map(Pool::len).sum();
    if total == 0 {
        return vec![];
    }
    let at = |mut i: u128| -> u128 {
        for p in pools {
            if i < p.len() {
                return p.start + i;
            }
            i -= p.len();
        }
        unreachable!("index inside the pools' total")
    };
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut window: u128 = 1024;
    for level in 0..=levels {
        let last = level == levels || window >= total;
        let size = if last { total } else { window };
        let mut picks = Vec::new();
        if size <= per_level as u128 {
            picks.extend((0..size).map(at).filter(|v| seen.insert(*v)));
        } else {
            for _ in 0..per_level {
                let v = at(rng.random_range(0..size));
                if seen.insert(v) {
                    picks.push(v);
                }
            }
        }
        out.push(picks);
        if last {
            break;
        }
        window *= 2;
    }
    out
}

/// The first free block of `prefixlen` inside any of `prefixes` that overlaps none of `used`.
pub fn carve(prefixes: &[Cidr], used: &[Cidr], prefixlen: u8) -> Option<Cidr> {
    for p in prefixes {
        if prefixlen < p.prefix || prefixlen > bits(p.version) {
            continue;
        }
        let step = Cidr { version: p.version, addr: 0, prefix: prefixlen }.size();
        let mut at = p.first();
        while at <= p.last() {
            let candidate = Cidr { version: p.version, addr: at, prefix: prefixlen };
            match used.iter().filter(|u| u.overlaps(&candidate)).map(|u| u.last()).max() {
                None => return Some(candidate),
                Some(end) => {
                    // skip past the blocking network, aligned to the block size
                    let next = end.checked_add(1)?;
                    let aligned = next.div_ceil(step).checked_mul(step)?;
                    if aligned <= at {
                        return None;
                    }
                    at = aligned;
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        Cidr::parse(s).unwrap()
    }

    #[test]
    fn parses_and_normalizes() {
        assert!(c("10.0.0.0/24").is_normalized());
        assert!(!c("10.0.0.5/24").is_normalized());
        assert_eq!(c("10.0.0.5/24").normalized().to_string(), "10.0.0.0/24");
        assert_eq!(c("2001:db8::/64").to_string(), "2001:db8::/64");
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("10.0.0/24").is_none());
        assert!(Cidr::parse("bad").is_none());
        assert_eq!(c("10.1.1.1").prefix, 32);
    }

    #[test]
    fn overlaps_and_contains() {
        assert!(c("10.0.0.0/16").overlaps(&c("10.0.5.0/24")));
        assert!(!c("10.0.0.0/24").overlaps(&c("10.0.1.0/24")));
        assert!(!c("10.0.0.0/24").overlaps(&c("::/0")));
        assert!(c("10.0.0.0/24").contains(Addr::parse("10.0.0.255").unwrap()));
        assert!(!c("10.0.0.0/24").contains(Addr::parse("10.0.1.0").unwrap()));
    }

    #[test]
    fn default_pools_skip_network_broadcast_and_gateway() {
        let net = c("10.0.0.0/24");
        let pools = default_pools(&net, net.default_gateway());
        assert_eq!(pools.len(), 1);
        assert_eq!(Addr::new(4, pools[0].start).to_string(), "10.0.0.2");
        assert_eq!(Addr::new(4, pools[0].end).to_string(), "10.0.0.254");
        let pools = default_pools(&net, Addr::parse("10.0.0.100"));
        assert_eq!(pools.len(), 2);
        let v6 = c("2001:db8::/64");
        let pools = default_pools(&v6, v6.default_gateway());
        assert_eq!(Addr::new(6, pools[0].start).to_string(), "2001:db8::2");
        assert_eq!(Addr::new(6, pools[0].end).to_string(), "2001:db8::ffff:ffff:ffff:ffff");
    }

    #[test]
    fn pool_validation() {
        let net = c("10.0.0.0/24");
        let p = |a: &str, b: &str| Pool { start: Addr::parse(a).unwrap().value, end: Addr::parse(b).unwrap().value };
        assert!(validate_pools(&net, &[p("10.0.0.10", "10.0.0.20")], Addr::parse("10.0.0.1")).is_ok());
        assert!(validate_pools(&net, &[p("10.0.0.10", "10.0.1.20")], None).is_err());
        assert!(validate_pools(&net, &[p("10.0.0.0", "10.0.0.20")], None).is_err());
        assert!(validate_pools(&net, &[p("10.0.0.10", "10.0.0.20")], Addr::parse("10.0.0.15")).is_err());
        assert!(validate_pools(&net, &[p("10.0.0.10", "10.0.0.20"), p("10.0.0.20", "10.0.0.30")], None).is_err());
        assert!(validate_pools(&net, &[p("10.0.0.30", "10.0.0.20")], None).is_err());
    }

    #[test]
    fn macs_and_eui64() {
        let m = random_mac();
        assert!(m.starts_with("fa:16:3e:"));
        let bytes = parse_mac(&m).unwrap();
        assert_eq!(format_mac(bytes), m);
        assert!(parse_mac("zz:16:3e:00:00:00").is_none());
        let a = eui64(&c("2003::/64"), parse_mac("fa:16:3e:12:34:56").unwrap());
        assert_eq!(a.to_string(), "2003::f816:3eff:fe12:3456");
    }

    #[test]
    fn candidates_fill_from_the_low_end_and_cover_every_pool() {
        let mut rng = rand::rng();
        let pools = [Pool { start: 100, end: 199 }, Pool { start: 1000, end: 66_999 }];
        let levels = sample_candidates(&pools, 8, 8, &mut rng);
        // windows 1024, 2048, …, 65536, then the whole 66,100 addresses
        assert_eq!(levels.len(), 8);
        let index = |v: u128| if v < 200 { v - 100 } else { v - 1000 + 100 };
        for (k, level) in levels.iter().enumerate() {
            assert!(!level.is_empty());
            let window = if k == levels.len() - 1 { 66_100 } else { 1024u128 << k };
            for &v in level {
                assert!(pools.iter().any(|p| p.contains(v)), "{v} outside the pools");
                assert!(index(v) < window, "{v} outside window {window}");
            }
        }
        // a pool smaller than a level is listed whole, once
        let small = sample_candidates(&[Pool { start: 10, end: 14 }], 8, 8, &mut rng);
        assert_eq!(small, vec![vec![10, 11, 12, 13, 14]]);
        assert!(sample_candidates(&[], 8, 8, &mut rng).is_empty());
    }

    #[test]
    fn carving_prefixes() {
        let pool = [c("10.10.0.0/16")];
        let first = carve(&pool, &[], 24).unwrap();
        assert_eq!(first.to_string(), "10.10.0.0/24");
        let second = carve(&pool, &[first], 24).unwrap();
        assert_eq!(second.to_string(), "10.10.1.0/24");
        let big = carve(&pool, &[first], 20).unwrap();
        assert_eq!(big.to_string(), "10.10.16.0/20");
        assert!(carve(&pool, &[c("10.10.0.0/16")], 24).is_none());
        assert!(carve(&pool, &[], 8).is_none());
    }
}
