//! The interface between the agent and a hypervisor driver, as `nova.virt.driver.ComputeDriver` is upstream.
//!
//! A driver owns the guests of one host: it creates them from an [`InstanceSpec`] and a [`GuestContext`], changes
//! their power state, reports their console and the host's capacity. It knows nothing of the bus or of instance
//! records: the agent decides what to do and reports the outcome to the conductor.
//!
//! Drivers keep whatever they need to act on a guest later (disk paths, the generated machine definition, tap
//! devices) themselves, keyed by instance uuid: operations that only ever get a uuid over the bus (destroy, power
//! state, console) take only that. Operations that (re)create the guest's process — spawn, power on, hard reboot,
//! resume — also get the instance and its context, so a driver can regenerate its definition from them.

use std::collections::BTreeMap;
use std::path::Path;

use async_trait::async_trait;
pub use compute_rpc::BlockDeviceSpec;
use compute_rpc::{InstanceSpec, PowerState};

use crate::Error;

/// The hypervisor of one host: identity and capacity, and what its guests use (without any reservation for the
/// host itself; the agent adds that).
#[derive(Clone, Debug, PartialEq)]
pub struct HypervisorInfo {
    /// `hypervisor_type` as the API shows it (`fake`, `QEMU`).
    pub hypervisor_type: String,
    /// The hypervisor's version as an integer, upstream's encoding (`1.2.3` is 1002003).
    pub hypervisor_version: i64,
    /// CPU model, vendor, topology and features, as upstream's `cpu_info`.
    pub cpu_info: serde_json::Value,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub local_gb: i64,
    pub vcpus_used: i64,
    pub memory_mb_used: i64,
    pub local_gb_used: i64,
    /// Guests on the host, whatever their power state.
    pub running_vms: i64,
}

/// One guest as the hypervisor sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestInfo {
    pub uuid: String,
    pub power_state: PowerState,
}

/// What a driver needs beyond the instance itself to create or re-create its guest. Built by the agent; new
/// needs (block devices, injected files, …) become new fields.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct GuestContext {
    /// The request the work is done for, for logs.
    pub request_id: String,
    /// The image the root disk is made from; `None` for an instance booted from a volume.
    pub image: Option<ImageSource>,
    /// Network interfaces to plug (tap devices on QEMU): the ports bound to this host for the instance.
    pub network_interfaces: Vec<NetworkInterface>,
    /// Volumes attached at boot (`connection_info` as the block storage service gave it), the root one
    /// (`boot_index` 0) when the instance boots from a volume.
    pub block_devices: Vec<BlockDeviceSpec>,
}

impl GuestContext {
    /// The context for `instance`: its image (unless it boots from a volume), no network interfaces.
    pub fn for_instance(instance: &InstanceSpec, request_id: &str) -> GuestContext {
        let image = (!instance.image_ref.is_empty())
            .then(|| ImageSource { id: instance.image_ref.clone(), properties: instance.image_properties.clone() });
        GuestContext { request_id: request_id.to_owned(), image, network_interfaces: Vec::new(), block_devices: Vec::new() }
    }
}

/// The image a guest's root disk comes from. A driver that needs the bytes fetches them by `id` through its own
/// image cache (a base file that qcow2 overlays point at).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ImageSource {
    pub id: String,
    /// The image's properties (`disk_format`, `hw_*`, `os_*`), as the image service showed them at boot.
    pub properties: BTreeMap<String, serde_json::Value>,
}

impl ImageSource {
    pub fn new(id: impl Into<String>, properties: BTreeMap<String, serde_json::Value>) -> ImageSource {
        ImageSource { id: id.into(), properties }
    }
}

/// A virtual NIC, as upstream's VIF.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetworkInterface {
    /// The network port's id.
    pub port_id: String,
    pub mac_address: String,
    /// The host device to create (upstream names taps `tap` + the first 11 characters of the port id).
    pub devname: String,
    pub mtu: Option<u32>,
}

impl NetworkInterface {
    /// The interface of a port the conductor bound to this host.
    pub fn of(v: &compute_rpc::VifSpec) -> NetworkInterface {
        let short: String = v.port_id.chars().take(11).collect();
        NetworkInterface { port_id: v.port_id.clone(), mac_address: v.mac_address.clone(), devname: format!("tap{short}"), mtu: v.mtu }
    }
}

/// The machine's memory in MiB (`/proc/meminfo`).
pub(crate) fn meminfo_mb() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<i64>().ok()))
        .map_or(0, |kb| kb / 1024)
}

/// The size in GiB of the filesystem holding `path`.
pub(crate) fn disk_gb(path: &Path) -> i64 {
    rustix::fs::statvfs(path).map_or(0, |s| (s.f_blocks as i64 * s.f_frsize as i64) / (1024 * 1024 * 1024))
}

/// The formats of a snapshot a driver wrote, as the image service records them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFormat {
    /// `qcow2`, `raw`.
    pub disk_format: String,
    /// `bare`; `docker` for a container image archive.
    pub container_format: String,
}

impl SnapshotFormat {
    /// A bare disk image in `disk_format`.
    pub fn disk(disk_format: &str) -> SnapshotFormat {
        SnapshotFormat { disk_format: disk_format.to_owned(), container_format: "bare".to_owned() }
    }
}

/// A hypervisor driver. Every method is safe to call concurrently for different instances; the agent never
/// runs two operations on one instance at once.
#[async_trait]
pub trait Hypervisor: Send + Sync + 'static {
    /// The driver's name, for logs (`fake`, `qemu`).
    fn name(&self) -> &'static str;

    /// The host's capacity and what its guests use.
    async fn host_info(&self) -> Result<HypervisorInfo, Error>;

    /// The `(architecture, hypervisor type, vm mode)` triples guests can have here, lower case (upstream's
    /// `supported_instances`); the scheduler matches images' `hw_architecture`, `img_hv_type` and `hw_vm_mode`
    /// against them. None by default: images asking for any of these then do not land here.
    async fn supported_instances(&self) -> Vec<[String; 3]> {
        Vec::new()
    }

    /// Every guest on the host, with its power state.
    async fn list_guests(&self) -> Result<Vec<GuestInfo>, Error>;

    /// Creates and boots the guest of `instance`. On failure the driver may leave parts behind; the agent calls
    /// [`Hypervisor::destroy`] to clean up.
    async fn spawn(&self, instance: &InstanceSpec, context: &GuestContext) -> Result<(), Error>;

    /// Stops the guest and removes everything the driver created for it. A guest that does not exist is not an
    /// error: destroying twice, or after a failed spawn, succeeds.
    async fn destroy(&self, uuid: &str) -> Result<(), Error>;

    /// Powers the guest off (a shut-off guest stays off).
    async fn power_off(&self, uuid: &str) -> Result<(), Error>;

    /// Powers a shut-off guest on (a running guest stays on).
    async fn power_on(&self, instance: &InstanceSpec, context: &GuestContext) -> Result<(), Error>;

    /// Restarts the guest: a soft reboot asks the guest OS, a hard one resets the machine (re-creating it from
    /// `instance` and `context`). Either ends with the guest running.
    async fn reboot(&self, instance: &InstanceSpec, context: &GuestContext, hard: bool) -> Result<(), Error>;

    /// Freezes a running guest in memory.
    async fn pause(&self, uuid: &str) -> Result<(), Error>;

    /// Continues a paused guest.
    async fn unpause(&self, uuid: &str) -> Result<(), Error>;

    /// Saves a running or paused guest's memory to disk and stops it.
    async fn suspend(&self, uuid: &str) -> Result<(), Error>;

    /// Restores a suspended guest.
    async fn resume(&self, instance: &InstanceSpec, context: &GuestContext) -> Result<(), Error>;

    /// Gives a guest the resources of `flavor` in place (same host), keeping its disk and power state.
    async fn resize(&self, instance: &InstanceSpec, flavor: &compute_rpc::FlavorSpec, context: &GuestContext) -> Result<(), Error>;

    /// Writes a copy of the guest's root disk, as a standalone image, to `dest` (a VM driver converts its disk
    /// with qemu-img, a container driver writes an image archive; the guest keeps running). Returns the formats
    /// written.
    async fn snapshot(&self, instance: &InstanceSpec, dest: &std::path::Path) -> Result<SnapshotFormat, Error>;

    /// Counters of a guest, as upstream's pre-2.48 diagnostics (`cpu0_time`, `memory`, `vda_read`, …).
    async fn diagnostics(&self, instance: &InstanceSpec) -> Result<std::collections::BTreeMap<String, serde_json::Value>, Error>;

    /// Attaches a volume to the guest (hot-plugged when it runs) and keeps it in the guest's definition, so
    /// later restarts have it. [`Error::NotFound`] when there is no guest.
    async fn attach_volume(&self, instance: &InstanceSpec, device: &BlockDeviceSpec) -> Result<(), Error>;

    /// Detaches a volume from the guest and its definition. A volume the guest does not have is not an error.
    async fn detach_volume(&self, uuid: &str, volume_id: &str) -> Result<(), Error>;

    /// Plugs a network interface into the guest (hot-plugged when it runs) and keeps it in the guest's definition,
    /// so later starts have it. Drivers without guest NICs accept it and do nothing.
    async fn attach_interface(&self, _uuid: &str, _interface: &NetworkInterface) -> Result<(), Error> {
        Ok(())
    }

    /// Unplugs a network interface from the guest and its definition. One the guest does not have is not an error.
    async fn detach_interface(&self, _uuid: &str, _port_id: &str) -> Result<(), Error> {
        Ok(())
    }

    /// Continues an attached volume's disk on a new qcow2 file (`create_info.new_file`, beside the volume's current
    /// file) over the current one, for the block storage service's file-based snapshots (upstream's assisted
    /// volume snapshots). Drivers that cannot say so.
    async fn volume_snapshot_create(&self, _uuid: &str, _volume_id: &str, _create_info: &serde_json::Value) -> Result<(), Error> {
        Err(Error::Hypervisor(format!("the {} driver cannot snapshot volumes", self.name())))
    }

    /// Removes `delete_info.file_to_merge` from an attached volume's chain: committed into `merge_target_file`
    /// when given, else pulled into the file above it.
    async fn volume_snapshot_delete(&self, _uuid: &str, _volume_id: &str, _delete_info: &serde_json::Value) -> Result<(), Error> {
        Err(Error::Hypervisor(format!("the {} driver cannot snapshot volumes", self.name())))
    }

    /// The guest's power state; [`Error::NotFound`] when there is no guest.
    async fn power_state(&self, uuid: &str) -> Result<PowerState, Error>;

    /// Everything the guest wrote to its serial console that the driver kept (lines separated by `\n`).
    async fn console_output(&self, uuid: &str) -> Result<String, Error>;

    /// The power state the driver's last operation left the guest in, when the driver keeps it (a real driver
    /// does, so the power-state sync can tell a guest that stopped on its own, as upstream's
    /// `_sync_power_states` does). `None`: the driver's guests change only through its operations.
    async fn expected_power_state(&self, _uuid: &str) -> Option<PowerState> {
        None
    }

    /// Periodic upkeep of the driver's host state (removing unused base images, …); called by the agent's
    /// periodic task.
    async fn maintain(&self) {}

    /// Boots the guest from `rescue` (a rescue image) with its own disks attached after the rescue disk, as
    /// upstream's rescue: the user repairs the guest's disk from a working system.
    async fn rescue(&self, _instance: &InstanceSpec, _rescue: &ImageSource, _context: &GuestContext) -> Result<(), Error> {
        Err(Error::Hypervisor(format!("the {} driver cannot rescue instances", self.name())))
    }

    /// Boots a rescued guest from its own disk again; the rescue disk is removed.
    async fn unrescue(&self, _instance: &InstanceSpec, _context: &GuestContext) -> Result<(), Error> {
        Err(Error::Hypervisor(format!("the {} driver cannot rescue instances", self.name())))
    }
}
