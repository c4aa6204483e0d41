//! Swift's ring: `2^part_power` partitions, each assigned to `replicas` distinct devices; devices carry a region,
//! a zone and a weight. Placement hashes the object's path (`/account/container/object`) with MD5 and takes the top
//! `part_power` bits as the partition, as Swift does; replicas of one partition go to different devices and, as
//! far as the devices allow, to different zones, with each device holding partitions in proportion to its weight.

use md5::{Digest as _, Md5};

use crate::error::Error;

/// Largest partition power accepted (Swift's practical limit is 32; tables of 2^24 entries per replica are plenty).
pub const MAX_PART_POWER: u8 = 24;

/// One storage device (a directory under `<data_dir>/object/` on a single node).
#[derive(Clone, Debug, PartialEq)]
pub struct Device {
    pub id: u32,
    /// Directory name under the node's device root, e.g. `d1`.
    pub name: String,
    pub region: u32,
    pub zone: u32,
    pub weight: f64,
}

/// A built ring: the partition → devices table.
#[derive(Clone, Debug)]
pub struct Ring {
    part_power: u8,
    replicas: usize,
    devices: Vec<Device>,
    /// `table[replica][partition]` = index into `devices`.
    table: Vec<Vec<u32>>,
}

impl Ring {
    /// Builds a balanced ring. Every replica of a partition lands on a different device; among the devices with
    /// room, one in a zone the partition does not use yet is preferred, then the one furthest below its share.
    pub fn build(part_power: u8, replicas: usize, devices: Vec<Device>) -> Result<Ring, Error> {
        if part_power > MAX_PART_POWER {
            return Err(Error::Config(format!("ring: partition power {part_power} exceeds {MAX_PART_POWER}")));
        }
        if replicas == 0 {
            return Err(Error::Config("ring: at least one replica is needed".into()));
        }
        if devices.iter().any(|d| !(d.weight.is_finite() && d.weight >= 0.0)) {
            return Err(Error::Config("ring: device weights must be finite and not negative".into()));
        }
        let usable: Vec<usize> = (0..devices.len()).filter(|&i| devices[i].weight > 0.0).collect();
        if usable.len() < replicas {
            return Err(Error::Config(format!(
                "ring: {replicas} replicas need at least as many devices with weight, found {}",
                usable.len()
            )));
        }
        let parts = 1usize << part_power;
        let total_weight: f64 = usable.iter().map(|&i| devices[i].weight).sum();
        let wanted: Vec<f64> =
            devices.iter().map(|d| d.weight / total_weight * (parts * replicas) as f64).collect();
        let mut assigned = vec![0usize; devices.len()];
        let mut table = vec![vec![0u32; parts]; replicas];
        for part in 0..parts {
            let mut chosen: Vec<usize> = Vec::with_capacity(replicas);
            for row in table.iter_mut() {
                let best = usable
                    .iter()
                    .copied()
                    .filter(|i| !chosen.contains(i))
                    .max_by(|&a, &b| {
                        let new_zone = |i: usize| {
                            !chosen.iter().any(|&c| (devices[c].region, devices[c].zone) == (devices[i].region, devices[i].zone))
                        };
                        let room = |i: usize| wanted[i] - assigned[i] as f64;
                        new_zone(a)
                            .cmp(&new_zone(b))
                            .then(room(a).total_cmp(&room(b)))
                            .then(b.cmp(&a))
                    })
                    .ok_or_else(|| Error::Config("ring: no device left for a replica".into()))?;
                chosen.push(best);
                assigned[best] += 1;
                row[part] = best as u32;
            }
        }
        Ok(Ring { part_power, replicas, devices, table })
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
        Device { id, name: format!("d{id}"), region: 1, zone, weight }
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
        assert_eq!(zero.parts_per_device(), vec![0, 64]);
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
}
