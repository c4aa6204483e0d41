//! Swift's ring: `2^part_power` partitions, each assigned to `replicas` distinct devices; devices carry a region,
//! a zone and a weight. Placement hashes the object's path (`/account/container/object`) with MD5 and takes the top
//! `part_power` bits as the partition, as Swift does; replicas of one partition go to different devices and, as
//! far as the devices allow, to different zones, with each device holding partitions in proportion to its weight.
//!
//! A [`RingBuilder`] is what `stratus object ring create|add|set-weight|remove|rebalance|show` edits, as
//! `swift-ring-builder` edits a builder file: devices are added, reweighted or marked for removal, and
//! [`RingBuilder::rebalance`] then moves as few partitions as it can, never moving two replicas of one partition
//! within `min_part_hours`. The builder is persisted as JSON (written to a temporary file, fsynced and renamed, so
//! a running proxy never reads half a ring) and its last rebalanced table is the [`Ring`] the proxy places data with.

use std::path::Path;

use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Largest partition power accepted (Swift's practical limit is 32; tables of 2^24 entries per replica are plenty).
pub const MAX_PART_POWER: u8 = 24;

/// One storage device: a directory under the device root of the node at `ip:port`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub id: u32,
    /// Directory name under the node's device root, e.g. `d1`.
    pub name: String,
    pub region: u32,
    pub zone: u32,
    pub weight: f64,
    /// The storage node's address (one node so far: every device is local).
    #[serde(default = "default_ip")]
    pub ip: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub meta: String,
}

/// A device weight: finite and not negative.
fn check_weight(weight: f64) -> Result<(), Error> {
    if weight.is_finite() && weight >= 0.0 {
        Ok(())
    } else {
        Err(Error::BadRequest("device weight must be a finite number not below 0".into()))
    }
}

fn default_ip() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    6200
}

impl Device {
    /// A device on the local node.
    pub fn local(id: u32, name: &str, region: u32, zone: u32, weight: f64) -> Device {
        Device { id, name: name.into(), region, zone, weight, ip: default_ip(), port: default_port(), meta: String::new() }
    }

    /// Parses swift-ring-builder's device syntax, `r<region>z<zone>-<ip>:<port>/<device>[_<meta>]` (the `r<region>`
    /// part is optional and defaults to region 1). The id is assigned by the builder.
    pub fn parse(spec: &str, weight: f64) -> Result<Device, Error> {
        let bad = || Error::BadRequest(format!("invalid device {spec:?}: expected r<region>z<zone>-<ip>:<port>/<device>"));
        let rest = spec.strip_prefix('r');
        let (region, rest) = match rest {
            Some(r) => {
                let end = r.find('z').ok_or_else(bad)?;
                (r[..end].parse::<u32>().map_err(|_| bad())?, &r[end..])
            }
            None => (1, spec),
        };
        let rest = rest.strip_prefix('z').ok_or_else(bad)?;
        let (zone, rest) = rest.split_once('-').ok_or_else(bad)?;
        let zone = zone.parse::<u32>().map_err(|_| bad())?;
        let (addr, device) = rest.split_once('/').ok_or_else(bad)?;
        let (ip, port) = match addr.strip_prefix('[') {
            Some(v6) => {
                let (ip, port) = v6.split_once("]:").ok_or_else(bad)?;
                (ip, port)
            }
            None => addr.rsplit_once(':').ok_or_else(bad)?,
        };
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(bad());
        }
        let port = port.parse::<u16>().map_err(|_| bad())?;
        let (name, meta) = device.split_once('_').unwrap_or((device, ""));
        if name.is_empty() || name == "." || name == ".." || name.contains(['\\', '/']) {
            return Err(bad());
        }
        check_weight(weight)?;
        Ok(Device { id: 0, name: name.into(), region, zone, weight, ip: ip.into(), port, meta: meta.into() })
    }
}

/// A built ring: the partition → devices table the proxy places data with.
#[derive(Clone, Debug)]
pub struct Ring {
    part_power: u8,
    replicas: usize,
    devices: Vec<Device>,
    /// `table[replica][partition]` = index into `devices`.
    table: Vec<Vec<u32>>,
}

impl Ring {
    /// Builds a balanced ring from scratch (a new builder, rebalanced once).
    pub fn build(part_power: u8, replicas: usize, devices: Vec<Device>) -> Result<Ring, Error> {
        let mut builder = RingBuilder::new(part_power, replicas, 0)?;
        for d in devices {
            builder.add_device(d)?;
        }
        builder.rebalance(0)?;
        builder.ring()
    }

    pub fn part_power(&self) -> u8 {
        self.part_power
    }
    pub fn replicas(&self) -> usize {
        self.replicas
    }
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }
    /// How many partitions (over all replicas) each device holds, in device order.
    pub fn parts_per_device(&self) -> Vec<usize> {
        let mut counts = vec![0; self.devices.len()];
        for row in &self.table {
            for &d in row {
                counts[d as usize] += 1;
            }
        }
        counts
    }

    /// The MD5 of a path, hex-encoded: the object's hash (its directory name on a device).
    pub fn hash_path(account: &str, container: Option<&str>, object: Option<&str>) -> String {
        hex(&Self::digest(account, container, object))
    }

    fn digest(account: &str, container: Option<&str>, object: Option<&str>) -> [u8; 16] {
        let mut h = Md5::new();
        h.update(b"/");
        h.update(account.as_bytes());
        if let Some(c) = container {
            h.update(b"/");
            h.update(c.as_bytes());
            if let Some(o) = object {
                h.update(b"/");
                h.update(o.as_bytes());
            }
        }
        h.finalize().into()
    }

    /// The partition of a path: the top `part_power` bits of its MD5.
    pub fn partition(&self, account: &str, container: Option<&str>, object: Option<&str>) -> u32 {
        let d = Self::digest(account, container, object);
        let top = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        if self.part_power == 0 { 0 } else { top >> (32 - u32::from(self.part_power)) }
    }

    /// The devices holding a partition's replicas, in replica order.
    pub fn nodes(&self, partition: u32) -> Vec<&Device> {
        self.table
            .iter()
            .filter_map(|row| row.get(partition as usize))
            .filter_map(|&d| self.devices.get(d as usize))
            .collect()
    }

    /// Handoff devices of a partition: every other device, nearest zones last, in a per-partition order (Swift's
    /// proxy asks them when primaries miss an object, e.g. while data moves after a rebalance).
    pub fn handoffs(&self, partition: u32) -> Vec<&Device> {
        let primaries: Vec<u32> = self.nodes(partition).iter().map(|d| d.id).collect();
        let n = self.devices.len().max(1);
        let start = partition as usize % n;
        (0..self.devices.len())
            .map(|i| &self.devices[(start + i) % n])
            .filter(|d| !primaries.contains(&d.id))
            .collect()
    }
}

/// What a rebalance did.
#[derive(Clone, Debug, PartialEq)]
pub struct Rebalanced {
    /// Partition replicas assigned to a different device (or, on a first rebalance, assigned at all).
    pub moved: usize,
    /// Swift's balance: the largest deviation of a device's partition count from its weight's share, in percent.
    pub balance: f64,
}

/// Hours since the epoch, the builder's clock for `min_part_hours`.
pub fn hours_now() -> u64 {
    (chrono::Utc::now().timestamp().max(0) as u64) / 3600
}

/// The editable ring, persisted as a JSON file (one per storage policy).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RingBuilder {
    pub part_power: u8,
    pub replicas: usize,
    /// A partition is not moved again (one replica at a time) within this many hours of its last move.
    pub min_part_hours: u32,
    /// Devices, including added ones not yet rebalanced in and removed ones not yet rebalanced out.
    pub devices: Vec<BuilderDevice>,
    /// `table[replica][partition]` = device id; empty until the first rebalance.
    #[serde(default)]
    table: Vec<Vec<u32>>,
    /// Per partition: the hour its last replica move happened (0 = never).
    #[serde(default)]
    last_moved: Vec<u64>,
    /// Bumped by every rebalance that changed the table.
    #[serde(default)]
    pub version: u64,
}

/// A device as the builder keeps it: removal is pending until the next rebalance drains it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuilderDevice {
    #[serde(flatten)]
    pub device: Device,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
}

impl RingBuilder {
    pub fn new(part_power: u8, replicas: usize, min_part_hours: u32) -> Result<RingBuilder, Error> {
        if part_power > MAX_PART_POWER {
            return Err(Error::BadRequest(format!("partition power {part_power} exceeds {MAX_PART_POWER}")));
        }
        if replicas == 0 {
            return Err(Error::BadRequest("at least one replica is needed".into()));
        }
        Ok(RingBuilder { part_power, replicas, min_part_hours, devices: Vec::new(), table: Vec::new(), last_moved: Vec::new(), version: 0 })
    }

    fn parts(&self) -> usize {
        1usize << self.part_power
    }

    /// Adds a device (its id: the next free one); the name must be new on its node.
    pub fn add_device(&mut self, mut device: Device) -> Result<u32, Error> {
        check_weight(device.weight)?;
        if self.devices.iter().any(|d| !d.removed && d.device.ip == device.ip && d.device.port == device.port && d.device.name == device.name) {
            return Err(Error::Conflict(format!("device {} already exists on {}:{}", device.name, device.ip, device.port)));
        }
        device.id = self.devices.iter().map(|d| d.device.id + 1).max().unwrap_or(0);
        let id = device.id;
        self.devices.push(BuilderDevice { device, removed: false });
        Ok(id)
    }

    /// The devices a search value names, in swift-ring-builder's syntax: `d<id>`, or `/<device name>`.
    fn find(&mut self, search: &str) -> Result<Vec<&mut BuilderDevice>, Error> {
        let by_id = search.strip_prefix('d').and_then(|n| n.parse::<u32>().ok());
        let by_name = search.strip_prefix('/');
        if by_id.is_none() && by_name.is_none() {
            return Err(Error::BadRequest(format!("invalid search value {search:?}: use d<id> or /<device name>")));
        }
        let found: Vec<&mut BuilderDevice> = self
            .devices
            .iter_mut()
            .filter(|d| !d.removed && (Some(d.device.id) == by_id || Some(d.device.name.as_str()) == by_name))
            .collect();
        if found.is_empty() {
            return Err(Error::NotFound(format!("no device matches {search:?}")));
        }
        Ok(found)
    }

    pub fn set_weight(&mut self, search: &str, weight: f64) -> Result<usize, Error> {
        check_weight(weight)?;
        let found = self.find(search)?;
        let n = found.len();
        for d in found {
            d.device.weight = weight;
        }
        Ok(n)
    }

    /// Marks devices for removal; the next rebalance moves their partitions away and drops them.
    pub fn remove(&mut self, search: &str) -> Result<usize, Error> {
        let found = self.find(search)?;
        let n = found.len();
        for d in found {
            d.removed = true;
        }
        Ok(n)
    }

    /// Partition replicas each device id holds in the current table.
    fn assigned(&self) -> std::collections::HashMap<u32, usize> {
        let mut counts = std::collections::HashMap::new();
        for row in &self.table {
            for &d in row {
                *counts.entry(d).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Each active device's share of the `parts × replicas` assignments.
    fn wanted(&self) -> std::collections::HashMap<u32, f64> {
        let live: Vec<&Device> = self.devices.iter().filter(|d| !d.removed && d.device.weight > 0.0).map(|d| &d.device).collect();
        let total: f64 = live.iter().map(|d| d.weight).sum();
        let slots = (self.parts() * self.replicas) as f64;
        live.iter().map(|d| (d.id, d.weight / total * slots)).collect()
    }

    /// Swift's balance of the current table, in percent.
    pub fn balance(&self) -> f64 {
        if self.table.is_empty() {
            return 0.0;
        }
        let assigned = self.assigned();
        self.wanted()
            .iter()
            .map(|(id, want)| {
                let have = assigned.get(id).copied().unwrap_or(0) as f64;
                if *want > 0.0 { (have - want).abs() / want * 100.0 } else { 0.0 }
            })
            .fold(0.0, f64::max)
    }

    /// Moves the fewest partitions needed to follow the devices' weights: replicas on removed or weightless devices
    /// move first, then devices above their share give up partitions not moved within `min_part_hours`; each freed
    /// replica goes to a device without that partition, preferring a zone the partition does not use yet, then the
    /// device furthest below its share. Removed devices leave the builder once they hold nothing.
    pub fn rebalance(&mut self, now_hours: u64) -> Result<Rebalanced, Error> {
        let live: Vec<Device> = self.devices.iter().filter(|d| !d.removed && d.device.weight > 0.0).map(|d| d.device.clone()).collect();
        if live.len() < self.replicas {
            return Err(Error::BadRequest(format!(
                "{} replicas need at least as many devices with weight, found {}",
                self.replicas,
                live.len()
            )));
        }
        let parts = self.parts();
        const NONE: u32 = u32::MAX;
        let first = self.table.is_empty();
        if first {
            self.table = vec![vec![NONE; parts]; self.replicas];
            self.last_moved = vec![0; parts];
        }
        let mut moved_now = vec![false; parts];
        // Replicas on devices that left (removed, weight 0) must move, min_part_hours or not.
        for row in self.table.iter_mut() {
            for (part, d) in row.iter_mut().enumerate() {
                if *d != NONE && !live.iter().any(|l| l.id == *d) {
                    *d = NONE;
                    moved_now[part] = true;
                }
            }
        }
        let wanted = self.wanted();
        let mut assigned = self.assigned();
        assigned.remove(&NONE);
        // Devices above their share give up partitions, spread over the partition space, one replica per
        // partition, none moved within min_part_hours.
        let movable = |part: usize, last: &[u64]| last[part] == 0 || last[part] + u64::from(self.min_part_hours) <= now_hours;
        let mut order: Vec<usize> = (0..parts).collect();
        order.sort_by_key(|&p| (p as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17));
        for dev in &live {
            let limit = wanted[&dev.id].ceil() as usize;
            let mut have = assigned.get(&dev.id).copied().unwrap_or(0);
            if have <= limit {
                continue;
            }
            for &part in &order {
                if have <= limit {
                    break;
                }
                if moved_now[part] || !movable(part, &self.last_moved) {
                    continue;
                }
                if let Some(row) = self.table.iter_mut().find(|row| row[part] == dev.id) {
                    row[part] = NONE;
                    moved_now[part] = true;
                    have -= 1;
                }
            }
            assigned.insert(dev.id, have);
        }
        // Place every free replica.
        let mut moved = 0;
        for part in 0..parts {
            for r in 0..self.replicas {
                if self.table[r][part] != NONE {
                    continue;
                }
                let holders: Vec<u32> = (0..self.replicas).map(|x| self.table[x][part]).filter(|&d| d != NONE).collect();
                let zone_of = |id: u32| live.iter().find(|d| d.id == id).map(|d| (d.region, d.zone));
                let used_zones: Vec<(u32, u32)> = holders.iter().filter_map(|&h| zone_of(h)).collect();
                let best = live
                    .iter()
                    .filter(|d| !holders.contains(&d.id))
                    .max_by(|a, b| {
                        let new_zone = |d: &Device| !used_zones.contains(&(d.region, d.zone));
                        let room = |d: &Device| wanted[&d.id] - assigned.get(&d.id).copied().unwrap_or(0) as f64;
                        new_zone(a).cmp(&new_zone(b)).then(room(a).total_cmp(&room(b))).then(b.id.cmp(&a.id))
                    })
                    .ok_or_else(|| Error::BadRequest("no device left for a replica".into()))?;
                self.table[r][part] = best.id;
                *assigned.entry(best.id).or_insert(0) += 1;
                moved += 1;
                if !first {
                    self.last_moved[part] = now_hours;
                }
            }
        }
        // Removed devices that hold nothing leave the builder.
        let still = self.assigned();
        self.devices.retain(|d| !d.removed || still.contains_key(&d.device.id));
        if moved > 0 {
            self.version += 1;
        }
        Ok(Rebalanced { moved, balance: self.balance() })
    }

    /// The ring of the last rebalance: the devices holding partitions, in the builder's order, indices remapped.
    pub fn ring(&self) -> Result<Ring, Error> {
        if self.table.is_empty() {
            return Err(Error::Config("the ring has not been rebalanced yet".into()));
        }
        let held = self.assigned();
        let devices: Vec<Device> = self.devices.iter().filter(|d| held.contains_key(&d.device.id)).map(|d| d.device.clone()).collect();
        let index: std::collections::HashMap<u32, u32> = devices.iter().enumerate().map(|(i, d)| (d.id, i as u32)).collect();
        let table = self
            .table
            .iter()
            .map(|row| {
                row.iter()
                    .map(|id| index.get(id).copied().ok_or_else(|| Error::Config(format!("ring table names unknown device {id}"))))
                    .collect::<Result<Vec<u32>, Error>>()
            })
            .collect::<Result<_, _>>()?;
        Ok(Ring { part_power: self.part_power, replicas: self.replicas, devices, table })
    }

    /// Partitions per device id in the current table.
    pub fn parts_of(&self, id: u32) -> usize {
        self.assigned().get(&id).copied().unwrap_or(0)
    }

    /// Reads a builder file, checking that its table fits its partition power, replicas and devices.
    pub fn load(path: &Path) -> Result<RingBuilder, Error> {
        let text = std::fs::read(path).map_err(|e| Error::Config(format!("cannot read ring {}: {e}", path.display())))?;
        let b: RingBuilder =
            serde_json::from_slice(&text).map_err(|e| Error::Config(format!("ring {} is not valid: {e}", path.display())))?;
        let invalid = |why: &str| Error::Config(format!("ring {} is not valid: {why}", path.display()));
        if b.part_power > MAX_PART_POWER || b.replicas == 0 {
            return Err(invalid("partition power or replica count out of range"));
        }
        if !b.table.is_empty() {
            if b.table.len() != b.replicas || b.table.iter().any(|row| row.len() != b.parts()) || b.last_moved.len() != b.parts() {
                return Err(invalid("table size does not match partition power and replicas"));
            }
            if b.table.iter().flatten().any(|id| !b.devices.iter().any(|d| d.device.id == *id)) {
                return Err(invalid("table names an unknown device"));
            }
        }
        Ok(b)
    }

    /// Writes the builder atomically: temporary file, fsync, rename, directory fsync.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
        let result = (|| -> std::io::Result<()> {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        Ok(result?)
    }
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: u32, zone: u32, weight: f64) -> Device {
        Device::local(id, &format!("d{id}"), 1, zone, weight)
    }

    /// Replica slots whose device differs between two rings of the same shape.
    fn moved_between(a: &Ring, b: &Ring) -> usize {
        (0..1u32 << a.part_power())
            .map(|p| {
                let x: Vec<u32> = a.nodes(p).iter().map(|d| d.id).collect();
                let y: Vec<u32> = b.nodes(p).iter().map(|d| d.id).collect();
                x.iter().filter(|d| !y.contains(d)).count()
            })
            .sum()
    }

    #[test]
    fn replicas_land_on_distinct_devices_and_zones() {
        let devices = vec![dev(0, 1, 1.0), dev(1, 1, 1.0), dev(2, 2, 1.0), dev(3, 3, 1.0)];
        let ring = Ring::build(8, 3, devices).unwrap();
        for part in 0..256 {
            let nodes = ring.nodes(part);
            assert_eq!(nodes.len(), 3);
            let mut ids: Vec<_> = nodes.iter().map(|d| d.id).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), 3, "partition {part}: {ids:?}");
            let mut zones: Vec<_> = nodes.iter().map(|d| d.zone).collect();
            zones.sort();
            zones.dedup();
            assert_eq!(zones.len(), 3, "three zones exist, every partition uses all of them");
            let handoffs = ring.handoffs(part);
            assert_eq!(handoffs.len(), 1);
            assert!(!ids.contains(&handoffs[0].id));
        }
    }

    #[test]
    fn partitions_follow_weights() {
        let devices = vec![dev(0, 1, 1.0), dev(1, 2, 3.0)];
        let ring = Ring::build(10, 1, devices).unwrap();
        let counts = ring.parts_per_device();
        assert_eq!(counts.iter().sum::<usize>(), 1024);
        assert_eq!(counts, vec![256, 768]);
        let zero = Ring::build(6, 1, vec![dev(0, 1, 0.0), dev(1, 1, 1.0)]).unwrap();
        assert_eq!(zero.devices().iter().map(|d| d.id).collect::<Vec<_>>(), vec![1], "a weightless device holds nothing");
        assert_eq!(zero.parts_per_device(), vec![64]);
    }

    #[test]
    fn placement_is_swifts_md5_top_bits() {
        let ring = Ring::build(10, 1, vec![dev(0, 1, 1.0)]).unwrap();
        // md5("/AUTH_a/c/o")
        let h = Ring::hash_path("AUTH_a", Some("c"), Some("o"));
        let expected = u32::from_str_radix(&h[..8], 16).unwrap() >> 22;
        assert_eq!(ring.partition("AUTH_a", Some("c"), Some("o")), expected);
        assert!(ring.partition("AUTH_a", Some("c"), Some("o")) < 1024);
        assert_eq!(Ring::hash_path("a", None, None), hex(&Md5::digest(b"/a")));
        assert_eq!(Ring::build(0, 1, vec![dev(0, 1, 1.0)]).unwrap().partition("x", None, None), 0);
    }

    #[test]
    fn bad_rings_are_refused() {
        assert!(Ring::build(8, 3, vec![dev(0, 1, 1.0), dev(1, 1, 1.0)]).is_err());
        assert!(Ring::build(8, 0, vec![dev(0, 1, 1.0)]).is_err());
        assert!(Ring::build(30, 1, vec![dev(0, 1, 1.0)]).is_err());
        assert!(Ring::build(8, 1, vec![dev(0, 1, f64::NAN)]).is_err());
    }

    #[test]
    fn device_syntax_is_swift_ring_builders() {
        let d = Device::parse("r2z3-10.0.0.5:6200/sdb1_ssd", 100.0).unwrap();
        assert_eq!((d.region, d.zone, d.ip.as_str(), d.port, d.name.as_str(), d.meta.as_str()), (2, 3, "10.0.0.5", 6200, "sdb1", "ssd"));
        let d = Device::parse("z1-[::1]:6201/d2", 1.0).unwrap();
        assert_eq!((d.region, d.zone, d.ip.as_str(), d.port, d.name.as_str()), (1, 1, "::1", 6201, "d2"));
        for bad in ["r1z1-127.0.0.1/d1", "r1-127.0.0.1:6200/d1", "rxz1-127.0.0.1:6200/d1", "r1z1-nohost:6200/d1", "r1z1-127.0.0.1:6200/..", "r1z1-127.0.0.1:99999/d1"] {
            assert!(Device::parse(bad, 1.0).is_err(), "{bad}");
        }
        assert!(Device::parse("r1z1-127.0.0.1:6200/d1", -1.0).is_err());
    }

    #[test]
    fn adding_a_device_moves_only_its_share() {
        let mut b = RingBuilder::new(10, 3, 1).unwrap();
        for z in 1..=3 {
            b.add_device(Device::local(0, &format!("d{z}"), 1, z, 100.0)).unwrap();
        }
        let first = b.rebalance(1000).unwrap();
        assert_eq!(first.moved, 3 * 1024);
        assert!(first.balance < 0.01, "{first:?}");
        let before = b.ring().unwrap();
        b.add_device(Device::local(0, "d4", 1, 4, 100.0)).unwrap();
        assert_eq!(b.ring().unwrap().devices().len(), 3, "an added device joins at the next rebalance");
        let r = b.rebalance(1000).unwrap();
        let after = b.ring().unwrap();
        // The new device's share is a quarter of the 3072 replica slots; nothing else moves.
        assert_eq!(r.moved, 768, "{r:?}");
        assert_eq!(moved_between(&before, &after), 768);
        assert!(r.balance < 1.0, "{r:?}");
        assert_eq!(b.parts_of(3), 768);
        for p in 0..1024 {
            let zones: std::collections::HashSet<_> = after.nodes(p).iter().map(|d| d.zone).collect();
            assert_eq!(zones.len(), 3, "replicas stay in distinct zones");
        }
        assert_eq!(b.version, 2);
    }

    #[test]
    fn min_part_hours_holds_back_a_second_move() {
        let mut b = RingBuilder::new(8, 2, 24).unwrap();
        b.add_device(Device::local(0, "d1", 1, 1, 1.0)).unwrap();
        b.add_device(Device::local(0, "d2", 1, 2, 1.0)).unwrap();
        b.rebalance(100).unwrap();
        b.add_device(Device::local(0, "d3", 1, 3, 1.0)).unwrap();
        let r = b.rebalance(100).unwrap();
        // 512 slots, a third each: d3 takes 170 or 171 and every move touches a different partition.
        assert!((170..=171).contains(&r.moved), "{r:?}");
        b.add_device(Device::local(0, "d4", 1, 4, 1.0)).unwrap();
        let mut c = b.clone();
        let held = b.rebalance(110).unwrap();
        let later = c.rebalance(200).unwrap();
        assert!(later.moved > held.moved, "partitions moved at hour 100 wait until hour 124: {held:?} vs {later:?}");
        assert!(later.balance < held.balance);
    }

    #[test]
    fn removed_and_reweighted_devices() {
        let mut b = RingBuilder::new(8, 1, 0).unwrap();
        for z in 1..=4 {
            b.add_device(Device::local(0, &format!("d{z}"), 1, z, 1.0)).unwrap();
        }
        b.rebalance(1).unwrap();
        assert_eq!(b.remove("/d2").unwrap(), 1);
        let r = b.rebalance(1).unwrap();
        assert_eq!(r.moved, 64, "only the removed device's partitions move");
        assert!(b.devices.iter().all(|d| d.device.name != "d2"), "a drained device leaves the builder");
        assert!(b.ring().unwrap().devices().iter().all(|d| d.name != "d2"));
        assert_eq!(b.set_weight("d0", 2.0).unwrap(), 1, "d0 is d1's id");
        b.rebalance(1).unwrap();
        assert_eq!(b.parts_of(0), 128);
        assert!(matches!(b.remove("/nope"), Err(Error::NotFound(_))));
        assert!(matches!(b.remove("nope"), Err(Error::BadRequest(_))));
        assert!(matches!(b.add_device(Device::local(0, "d1", 1, 1, 1.0)), Err(Error::Conflict(_))));
        b.remove("/d1").unwrap();
        b.remove("d2").unwrap();
        assert!(b.rebalance(1).is_ok(), "one device is enough for one replica");
        b.remove("/d4").unwrap();
        assert!(b.rebalance(1).is_err(), "no device left");
    }

    #[test]
    fn builders_persist_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("object.ring.json");
        let mut b = RingBuilder::new(6, 2, 1).unwrap();
        b.add_device(Device::parse("r1z1-127.0.0.1:6200/d1", 10.0).unwrap()).unwrap();
        b.add_device(Device::parse("r1z2-127.0.0.1:6200/d2", 10.0).unwrap()).unwrap();
        b.rebalance(5).unwrap();
        b.save(&path).unwrap();
        let back = RingBuilder::load(&path).unwrap();
        assert_eq!(back.devices, b.devices);
        let (x, y) = (back.ring().unwrap(), b.ring().unwrap());
        assert_eq!(moved_between(&x, &y), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left");
        std::fs::write(&path, r#"{"part_power": 6, "replicas": 2, "min_part_hours": 1, "devices": [], "table": [[0]], "last_moved": [0]}"#).unwrap();
        assert!(RingBuilder::load(&path).is_err());
        std::fs::write(&path, "{").unwrap();
        assert!(RingBuilder::load(&path).is_err());
    }
}
