//! Where the real drivers keep their guests: `<instances_path>/<uuid>/`, with the guest's definition in a JSON
//! file (written whole, through a temporary file and a rename) and its console log. Names starting with `_` are the
//! drivers' own directories (caches, runtime state), never guests.

use std::path::{Path, PathBuf};

use compute_rpc::{FlavorSpec, PowerState};
use serde::{Deserialize, Serialize};
use serde::de::DeserializeOwned;

use crate::Error;
use crate::hypervisor::{GuestInfo, Hypervisor, HypervisorInfo, NetworkInterface, disk_gb, meminfo_mb};

/// The most console output returned (upstream's `MAX_CONSOLE_BYTES`, 100 KiB).
pub(crate) const MAX_CONSOLE_BYTES: usize = 100 * 1024;

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// A name that can be a guest's directory: an instance uuid (letters, digits, dashes), not a driver's own.
pub(crate) fn is_guest_name(uuid: &str) -> bool {
    !uuid.is_empty() && !uuid.starts_with('_') && uuid.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
}

/// A guest's network interface as a driver keeps it: the host device the network agent plugs (`tap<port id[:11]>`:
/// the tap QEMU creates, or the host end of a container's veth pair) and the port's MAC and MTU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Nic {
    pub port_id: String,
    pub mac_address: String,
    pub devname: String,
    /// The network's MTU, when known.
    pub mtu: Option<u32>,
}

impl Nic {
    /// The interface of a bound port. Only device names and MACs that are what they claim are taken: both end up on
    /// QEMU's and `ip`'s command lines.
    pub(crate) fn of(interface: &NetworkInterface) -> Result<Nic, Error> {
        let dev = &interface.devname;
        if dev.is_empty() || dev.len() > 15 || !dev.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(Error::Hypervisor(format!("port {}: unusable tap device name {dev:?}", interface.port_id)));
        }
        let mac = &interface.mac_address;
        let parts: Vec<&str> = mac.split(':').collect();
        if parts.len() != 6 || !parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit())) {
            return Err(Error::Hypervisor(format!("port {}: bad MAC address {mac:?}", interface.port_id)));
        }
        Ok(Nic {
            port_id: interface.port_id.clone(),
            mac_address: mac.to_ascii_lowercase(),
            devname: dev.clone(),
            mtu: interface.mtu.filter(|m| (68..=65535).contains(m)),
        })
    }
}

/// The guests' directories under one root, each with a definition file named `definition`.
pub(crate) struct GuestDirs {
    root: PathBuf,
    definition: &'static str,
}

impl GuestDirs {
    pub(crate) fn new(root: PathBuf, definition: &'static str) -> GuestDirs {
        GuestDirs { root, definition }
    }

    pub(crate) fn dir(&self, uuid: &str) -> PathBuf {
        self.root.join(uuid)
    }

    /// The definition file of `dir` exists (the guest was made whole).
    pub(crate) fn is_defined(&self, dir: &Path) -> bool {
        dir.join(self.definition).exists()
    }

    /// The guest's definition; [`Error::NotFound`] when there is none.
    pub(crate) fn load<T: DeserializeOwned>(&self, uuid: &str) -> Result<T, Error> {
        if !is_guest_name(uuid) {
            return Err(Error::NotFound(uuid.to_owned()));
        }
        let path = self.dir(uuid).join(self.definition);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotFound(uuid.to_owned())),
            Err(e) => return Err(io_err(format!("reading {}", path.display()))(e)),
        };
        serde_json::from_slice(&text).map_err(|e| Error::Hypervisor(format!("{} is damaged: {e}", path.display())))
    }

    pub(crate) fn save<T: Serialize>(&self, uuid: &str, definition: &T) -> Result<(), Error> {
        let dir = self.dir(uuid);
        let tmp = dir.join(format!("{}.tmp", self.definition));
        std::fs::write(&tmp, serde_json::to_vec_pretty(definition).unwrap_or_default()).map_err(io_err(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, dir.join(self.definition)).map_err(io_err(format!("writing {}", dir.display())))
    }

    /// Every guest's definition.
    pub(crate) fn all<T: DeserializeOwned>(&self) -> Vec<T> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.root).into_iter().flatten().flatten() {
            if let Ok(def) = self.load(&entry.file_name().to_string_lossy()) {
                out.push(def);
            }
        }
        out
    }

    /// The last [`MAX_CONSOLE_BYTES`] of the guest's `console.log` (lines separated by `\n`); the guest must exist.
    pub(crate) async fn console<T: DeserializeOwned>(&self, uuid: &str) -> Result<String, Error> {
        self.load::<T>(uuid)?;
        let path = self.dir(uuid).join("console.log");
        let data = match tokio::fs::read(&path).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(format!("reading {}", path.display()))(e)),
        };
        let start = data.len().saturating_sub(MAX_CONSOLE_BYTES);
        Ok(String::from_utf8_lossy(&data[start..]).replace("\r\n", "\n"))
    }
}

/// A host as a real driver reports it: the configured capacity (`vcpus`, `memory_mb`, `local_gb`), else the
/// machine's own (its CPUs, memory, and the filesystem of `instances_path`), and what guests of `flavors` use.
pub(crate) struct LocalHost<'a> {
    pub hypervisor_type: &'a str,
    pub version: i64,
    /// `cpu_info`'s `model` and `vendor`.
    pub model: &'a str,
    pub vendor: &'a str,
    pub capacity: [Option<i64>; 3],
    pub instances_path: &'a Path,
}

impl LocalHost<'_> {
    pub(crate) fn info<'f>(&self, flavors: impl IntoIterator<Item = &'f FlavorSpec>) -> HypervisorInfo {
        let (mut vcpus_used, mut memory_mb_used, mut local_gb_used, mut running_vms) = (0, 0, 0, 0);
        for f in flavors {
            vcpus_used += f.vcpus;
            memory_mb_used += f.memory_mb;
            local_gb_used += f.root_gb + f.ephemeral_gb;
            running_vms += 1;
        }
        let [vcpus, memory_mb, local_gb] = self.capacity;
        let vcpus = vcpus.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as i64));
        HypervisorInfo {
            hypervisor_type: self.hypervisor_type.to_owned(),
            hypervisor_version: self.version,
            cpu_info: serde_json::json!({
                "arch": std::env::consts::ARCH,
                "model": self.model,
                "vendor": self.vendor,
                "topology": {"sockets": 1, "cores": vcpus, "threads": 1},
                "features": [],
            }),
            vcpus,
            memory_mb: memory_mb.unwrap_or_else(meminfo_mb),
            local_gb: local_gb.unwrap_or_else(|| disk_gb(self.instances_path)),
            vcpus_used,
            memory_mb_used,
            local_gb_used,
            running_vms,
        }
    }
}

/// The guests `uuids` with the power states `driver` reports (`NoState` when it cannot tell).
pub(crate) async fn with_power_states(driver: &dyn Hypervisor, uuids: impl IntoIterator<Item = String>) -> Vec<GuestInfo> {
    let mut out = Vec::new();
    for uuid in uuids {
        let power_state = driver.power_state(&uuid).await.unwrap_or(PowerState::NoState);
        out.push(GuestInfo { uuid, power_state });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nics_take_only_names_and_macs_that_cannot_inject_options() {
        let good = NetworkInterface { port_id: "p".into(), mac_address: "fa:16:3e:00:00:01".into(), devname: "tapabc".into(), mtu: Some(1450) };
        assert!(Nic::of(&good).is_ok());
        for (mac, dev) in [("fa:16:3e:00:00:01 x", "tapabc"), ("fa:16:3e:00:00:01", "tap abc"), ("fa:16:3e:00:00:01", "tap-with-a-very-long-name")] {
            let bad = NetworkInterface { mac_address: mac.into(), devname: dev.into(), ..good.clone() };
            assert!(Nic::of(&bad).is_err(), "{mac} {dev}");
        }
    }

}
