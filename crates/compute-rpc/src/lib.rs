//! The bus contract between the compute controller (the conductor, in `compute`) and the per-host compute agents
//! (`compute-agent`), as `nova/compute/rpcapi.py` and `nova/conductor/rpcapi.py` are upstream.
//!
//! * Agents serve [`COMPUTE_TOPIC`] as server `<host>`; the conductor sends them [`BuildAndRunInstance`],
//!   [`TerminateInstance`], [`InstanceAction`], [`AttachVolume`], [`DetachVolume`], [`AttachInterface`],
//!   [`DetachInterface`], [`VolumeSnapshotCreate`],
//!   [`VolumeSnapshotDelete`] and [`GetConsoleOutput`].
//! * The conductor serves [`CONDUCTOR_TOPIC`]; agents send it [`RegisterNode`], [`ReportResources`],
//!   [`Heartbeat`], [`InstanceUpdate`], [`ActionEvent`], [`BuildFailed`] and [`InstanceTerminated`].
//!
//! Agents never touch the database: every change to an instance goes through the conductor, which applies it
//! only if the instance is still in the task state the agent expects ([`InstanceUpdate::expected_task_state`]),
//! so a delete that raced a build wins cleanly.
//!
//! Method names are part of the wire format and must stay stable.

use std::collections::BTreeMap;

use bus::Rpc;
use serde::{Deserialize, Serialize};

/// The topic compute agents serve, one server per host.
pub const COMPUTE_TOPIC: &str = "compute";
/// The topic the conductor serves.
pub const CONDUCTOR_TOPIC: &str = "conductor";
/// The binary name agents register under, as upstream (`openstack compute service list` shows it).
pub const COMPUTE_BINARY: &str = "nova-compute";
/// The remote error kind the conductor answers a [`Heartbeat`] with when it has no record of the host (upstream's
/// `ComputeHostNotFound`); the agent then sends [`RegisterNode`] again.
pub const HOST_NOT_FOUND: &str = "ComputeHostNotFound";

/// Upstream's `vm_state` values.
pub mod vm_state {
    pub const ACTIVE: &str = "active";
    pub const BUILDING: &str = "building";
    pub const PAUSED: &str = "paused";
    pub const SUSPENDED: &str = "suspended";
    pub const STOPPED: &str = "stopped";
    pub const RESCUED: &str = "rescued";
    pub const RESIZED: &str = "resized";
    pub const SOFT_DELETED: &str = "soft-delete";
    pub const DELETED: &str = "deleted";
    pub const ERROR: &str = "error";
    pub const SHELVED: &str = "shelved";
    pub const SHELVED_OFFLOADED: &str = "shelved_offloaded";
}

/// Upstream's `task_state` values.
pub mod task_state {
    pub const SCHEDULING: &str = "scheduling";
    pub const BLOCK_DEVICE_MAPPING: &str = "block_device_mapping";
    pub const NETWORKING: &str = "networking";
    pub const SPAWNING: &str = "spawning";
    pub const IMAGE_SNAPSHOT: &str = "image_snapshot";
    pub const IMAGE_SNAPSHOT_PENDING: &str = "image_snapshot_pending";
    pub const IMAGE_PENDING_UPLOAD: &str = "image_pending_upload";
    pub const IMAGE_UPLOADING: &str = "image_uploading";
    pub const UPDATING_PASSWORD: &str = "updating_password";
    pub const RESIZE_PREP: &str = "resize_prep";
    pub const RESIZE_MIGRATING: &str = "resize_migrating";
    pub const RESIZE_MIGRATED: &str = "resize_migrated";
    pub const RESIZE_FINISH: &str = "resize_finish";
    pub const RESIZE_REVERTING: &str = "resize_reverting";
    pub const RESIZE_CONFIRMING: &str = "resize_confirming";
    pub const REBOOTING: &str = "rebooting";
    pub const REBOOT_PENDING: &str = "reboot_pending";
    pub const REBOOT_STARTED: &str = "reboot_started";
    pub const REBOOTING_HARD: &str = "rebooting_hard";
    pub const REBOOT_PENDING_HARD: &str = "reboot_pending_hard";
    pub const REBOOT_STARTED_HARD: &str = "reboot_started_hard";
    pub const PAUSING: &str = "pausing";
    pub const UNPAUSING: &str = "unpausing";
    pub const SUSPENDING: &str = "suspending";
    pub const RESUMING: &str = "resuming";
    pub const POWERING_OFF: &str = "powering-off";
    pub const POWERING_ON: &str = "powering-on";
    pub const REBUILDING: &str = "rebuilding";
    pub const REBUILD_BLOCK_DEVICE_MAPPING: &str = "rebuild_block_device_mapping";
    pub const REBUILD_SPAWNING: &str = "rebuild_spawning";
    pub const DELETING: &str = "deleting";
    pub const SHELVING: &str = "shelving";
    pub const SHELVING_IMAGE_PENDING_UPLOAD: &str = "shelving_image_pending_upload";
    pub const SHELVING_IMAGE_UPLOADING: &str = "shelving_image_uploading";
    pub const SHELVING_OFFLOADING: &str = "shelving_offloading";
    pub const UNSHELVING: &str = "unshelving";
    pub const RESCUING: &str = "rescuing";
    pub const UNRESCUING: &str = "unrescuing";
}

/// Upstream's power states (the numbers the API shows as `OS-EXT-STS:power_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(i64)]
pub enum PowerState {
    NoState = 0,
    Running = 1,
    Paused = 3,
    Shutdown = 4,
    Crashed = 6,
    Suspended = 7,
}

impl PowerState {
    pub fn code(self) -> i64 {
        self as i64
    }
    pub fn from_code(code: i64) -> PowerState {
        match code {
            1 => PowerState::Running,
            3 => PowerState::Paused,
            4 => PowerState::Shutdown,
            6 => PowerState::Crashed,
            7 => PowerState::Suspended,
            _ => PowerState::NoState,
        }
    }
}

// ----- shared records -----

/// A flavor as an instance was built with (a copy: later flavor changes do not touch running instances).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlavorSpec {
    pub flavorid: String,
    pub name: String,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub root_gb: i64,
    pub ephemeral_gb: i64,
    pub swap: i64,
    #[serde(default)]
    pub extra_specs: BTreeMap<String, String>,
}

/// What an agent needs to build or act on an instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceSpec {
    pub uuid: String,
    pub display_name: String,
    pub hostname: String,
    pub project_id: String,
    pub user_id: String,
    pub flavor: FlavorSpec,
    /// The image the root disk comes from (empty when booted from a volume).
    pub image_ref: String,
    /// The image's properties, as the image service showed them at boot.
    #[serde(default)]
    pub image_properties: BTreeMap<String, serde_json::Value>,
    pub key_name: Option<String>,
    pub key_data: Option<String>,
    /// Base64, as the user gave it.
    pub user_data: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub config_drive: bool,
    pub availability_zone: Option<String>,
    pub launch_index: i64,
}

/// A compute node's capacity and use, as its agent measures it. As in upstream's `compute_nodes` records, the
/// `_used` figures include what is reserved for the host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeResources {
    pub vcpus: i64,
    pub memory_mb: i64,
    pub local_gb: i64,
    pub vcpus_used: i64,
    pub memory_mb_used: i64,
    pub local_gb_used: i64,
    pub running_vms: i64,
    pub cpu_allocation_ratio: f64,
    pub ram_allocation_ratio: f64,
    pub disk_allocation_ratio: f64,
    pub reserved_host_cpus: i64,
    pub reserved_host_memory_mb: i64,
    pub reserved_host_disk_mb: i64,
    /// `(architecture, hypervisor type, vm mode)` triples the hypervisor runs, lower case (upstream's
    /// `supported_instances`: `x86_64`, `qemu`, `hvm`).
    #[serde(default)]
    pub supported_instances: Vec<[String; 3]>,
    /// Builds that failed on the node since its last successful one (upstream's `failed_builds` stat); the
    /// scheduler's build failure weigher keeps new builds away from such nodes.
    #[serde(default)]
    pub failed_builds: i64,
}

/// A compute node: one hypervisor of one host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub host: String,
    /// The hypervisor host name (the node name), usually the host's.
    pub node: String,
    pub hypervisor_type: String,
    pub hypervisor_version: i64,
    pub host_ip: String,
    pub cpu_info: serde_json::Value,
    pub resources: NodeResources,
}

// ----- agent -> conductor -----

/// An agent announces its service and node at start (and again after the conductor forgot it). The conductor
/// creates or updates the service record, the compute node and its resource provider with inventory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterNode {
    pub node: NodeInfo,
    pub report_interval_secs: u64,
}

/// The conductor's answer: the node's stable uuid (also its resource provider's) and whether an operator
/// disabled the service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRegistered {
    pub node_uuid: String,
    pub service_id: String,
    pub disabled: bool,
}

impl Rpc for RegisterNode {
    const METHOD: &'static str = "register_node";
    type Reply = NodeRegistered;
}

/// The periodic resource audit's result; the conductor refreshes the node and its inventory when it changed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReportResources {
    pub host: String,
    pub node: String,
    pub resources: NodeResources,
}

impl Rpc for ReportResources {
    const METHOD: &'static str = "report_resources";
    type Reply = ();
}

/// A service's liveness report, every `report_interval` seconds. Agents send it as a call: a conductor that has
/// no record of the host rejects it (with [`HOST_NOT_FOUND`]), and the agent registers again.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Heartbeat {
    pub host: String,
    pub binary: String,
}

impl Rpc for Heartbeat {
    const METHOD: &'static str = "heartbeat";
    type Reply = ();
}

/// Changes to one instance. `None` leaves a field alone; `task_state: Some(None)` clears it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceChanges {
    pub vm_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub task_state: Option<Option<String>>,
    pub power_state: Option<PowerState>,
    /// Set `launched_at` to now.
    #[serde(default)]
    pub launched: bool,
    /// Replaces the image the instance runs (rebuild).
    pub image_ref: Option<String>,
    /// Replaces the instance's flavor (resize, revert).
    #[serde(default)]
    pub flavor: Option<FlavorSpec>,
}

/// Applies `changes` if the instance's task state is one of `expected_task_state` (any when `None`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceUpdate {
    pub uuid: String,
    pub expected_task_state: Option<Vec<Option<String>>>,
    pub changes: InstanceChanges,
}

/// Whether the update applied; `false` when the instance is gone or in another task state.
impl Rpc for InstanceUpdate {
    const METHOD: &'static str = "instance_update";
    type Reply = bool;
}

/// Where an instance action event is: started, or finished with `Success`/`Error`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EventPhase {
    Start,
    Finish { success: bool, details: Option<String> },
}

/// An instance action event (`compute__do_build_and_run_instance`, `compute_stop_instance`, …) of the action
/// the request `request_id` started.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActionEvent {
    pub instance_uuid: String,
    pub request_id: String,
    pub event: String,
    pub host: String,
    pub phase: EventPhase,
}

impl Rpc for ActionEvent {
    const METHOD: &'static str = "action_event";
    type Reply = ();
}

/// A build failed on `host`. With `reschedule` the conductor tries the next alternate host (freeing this
/// host's allocation); otherwise, or with none left, the instance goes to ERROR with `reason` as its fault.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BuildFailed {
    pub instance_uuid: String,
    pub request_id: String,
    pub host: String,
    pub reason: String,
    pub reschedule: bool,
}

impl Rpc for BuildFailed {
    const METHOD: &'static str = "build_failed";
    type Reply = ();
}

/// An instance's guest is gone from `host`: the conductor frees its allocations and marks it deleted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceTerminated {
    pub instance_uuid: String,
    pub host: String,
}

impl Rpc for InstanceTerminated {
    const METHOD: &'static str = "instance_terminated";
    type Reply = ();
}

/// A member that is present (even as `null`) is `Some`; an absent one is `None` through `#[serde(default)]`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

// ----- conductor -> agent -----

/// Build and boot an instance the scheduler placed on this host (`node`). The instance is in task state
/// `scheduling`; the agent walks it through `networking`, `block_device_mapping`, `spawning` to ACTIVE, or sends
/// [`BuildFailed`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BuildAndRunInstance {
    pub instance: InstanceSpec,
    pub node: String,
    pub request_id: String,
    /// The ports the conductor bound to this host for the instance (task state `networking`), to plug.
    #[serde(default)]
    pub vifs: Vec<VifSpec>,
    /// The volumes the conductor attached for the instance (task state `block_device_mapping`): the root disk
    /// when it boots from a volume, and the others in boot order.
    #[serde(default)]
    pub block_devices: Vec<BlockDeviceSpec>,
}

/// A volume as a host reaches it: the block storage service's `connection_info` for this host's connector
/// (`driver_volume_type` and its `data`), and where the guest sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockDeviceSpec {
    pub volume_id: String,
    /// The guest's device name (`/dev/vdb`).
    pub device_name: String,
    /// `0` for the root disk; `None` for a disk that is not booted from.
    #[serde(default)]
    pub boot_index: Option<i64>,
    pub connection_info: serde_json::Value,
}

/// The iSCSI initiator name of a compute host: the connector the conductor sends for the host names it, and the
/// host's QEMU logs in with it (block storage exports a volume to the initiators of the hosts it is connected to).
pub fn iscsi_initiator(host: &str) -> String {
    let name: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c.to_ascii_lowercase() } else { '-' })
        .collect();
    format!("iqn.2010-10.org.openstack.stratus:{name}")
}

/// A port bound to the instance's host, as the agent plugs it: the port, its network and MAC (the network
/// service bound the port to the host and the network's segment).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VifSpec {
    pub port_id: String,
    pub network_id: String,
    pub mac_address: String,
    /// The port was `ACTIVE` after binding; the agent waits for `network-vif-plugged` of the others before the
    /// instance goes ACTIVE (upstream's `vif_plugging_timeout`). Older conductors did not say: no wait.
    #[serde(default = "yes")]
    pub active: bool,
    /// The network's MTU, when known.
    #[serde(default)]
    pub mtu: Option<u32>,
}

fn yes() -> bool {
    true
}

impl Rpc for BuildAndRunInstance {
    const METHOD: &'static str = "build_and_run_instance";
    type Reply = ();
}

/// Destroy an instance's guest (task state `deleting`), then send [`InstanceTerminated`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TerminateInstance {
    pub uuid: String,
    pub request_id: String,
}

impl Rpc for TerminateInstance {
    const METHOD: &'static str = "terminate_instance";
    type Reply = ();
}

/// A lifecycle action on a built instance. The API has already checked the state and set the task state the
/// action starts in; the agent performs it and reports the end state through [`InstanceUpdate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Action {
    Stop,
    Start,
    Reboot { hard: bool },
    Pause,
    Unpause,
    Suspend,
    Resume,
    /// Re-create the guest from `image_ref` (empty for a volume-backed server, which keeps its root volume),
    /// with the volumes it has attached (`connection_info` as at their attach).
    Rebuild {
        image_ref: String,
        #[serde(default)]
        block_devices: Vec<BlockDeviceSpec>,
    },
    /// Resize in place to `flavor` (the conductor has claimed it on this host); ends in `resized`
    /// (VERIFY_RESIZE) until the user confirms or reverts.
    Resize { flavor: FlavorSpec },
    /// Back to the old `flavor` after a resize; ends as the guest's power state says (active or stopped).
    RevertResize { flavor: FlavorSpec },
    /// Snapshot the root disk into the image `image_id` (created, queued, by the API) of the image service at
    /// `image_url`, uploading on the user's behalf with `auth_token` (as upstream's RPC carries the request's
    /// context). The vm state is left as it is.
    Snapshot { image_id: String, image_url: String, auth_token: Secret },
    /// Shelve: power the guest off and snapshot its root disk into `image_id` (as [`Action::Snapshot`]); the
    /// instance ends `shelved`, or, with `offload`, the guest is destroyed and it ends `shelved_offloaded` (the
    /// conductor then frees its host).
    Shelve { image_id: String, image_url: String, auth_token: Secret, offload: bool },
    /// Destroy the guest of a `shelved` instance; it ends `shelved_offloaded`.
    ShelveOffload,
    /// Power a `shelved` (not offloaded) instance's guest back on; it ends `active`.
    Unshelve,
    /// Boot the guest from the rescue image `image_ref` (with `image_properties`, as the image service showed
    /// them) with its own disks attached after the rescue disk; it ends `rescued`.
    Rescue { image_ref: String, image_properties: BTreeMap<String, serde_json::Value>, admin_pass: Secret },
    /// Boot a rescued guest from its own disk again; it ends `active`.
    Unrescue,
}

/// A credential carried in a message: serialised as is, never printed by `Debug`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Action {
    /// The instance action event name upstream records for it.
    pub fn event_name(&self) -> &'static str {
        match self {
            Action::Stop => "compute_stop_instance",
            Action::Start => "compute_start_instance",
            Action::Reboot { .. } => "compute_reboot_instance",
            Action::Pause => "compute_pause_instance",
            Action::Unpause => "compute_unpause_instance",
            Action::Suspend => "compute_suspend_instance",
            Action::Resume => "compute_resume_instance",
            Action::Rebuild { .. } => "compute_rebuild_instance",
            Action::Resize { .. } => "compute_resize_instance",
            Action::RevertResize { .. } => "compute_revert_resize",
            Action::Snapshot { .. } => "compute_snapshot_instance",
            Action::Shelve { .. } => "compute_shelve_instance",
            Action::ShelveOffload => "compute_shelve_offload_instance",
            Action::Unshelve => "compute_unshelve_instance",
            Action::Rescue { .. } => "compute_rescue_instance",
            Action::Unrescue => "compute_unrescue_instance",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceAction {
    pub instance: InstanceSpec,
    pub action: Action,
    pub request_id: String,
}

impl Rpc for InstanceAction {
    const METHOD: &'static str = "instance_action";
    type Reply = ();
}

/// Attach a volume to a built instance's guest (hot-plugged when it runs; part of its definition either way).
/// A call: the conductor completes the volume's attachment only when the agent answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttachVolume {
    pub instance: InstanceSpec,
    pub block_device: BlockDeviceSpec,
    pub request_id: String,
}

impl Rpc for AttachVolume {
    const METHOD: &'static str = "attach_volume";
    type Reply = ();
}

/// Detach a volume from an instance's guest. A call: the conductor deletes the volume's attachment only when
/// the agent answers. A volume the guest does not have is not an error.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DetachVolume {
    pub uuid: String,
    pub volume_id: String,
    pub request_id: String,
}

impl Rpc for DetachVolume {
    const METHOD: &'static str = "detach_volume";
    type Reply = ();
}

/// Plug a port bound to the instance's host into its guest (upstream's `attach_interface`): at once when the guest
/// runs, at its next start otherwise. A call: the API answers once the agent has.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttachInterface {
    pub uuid: String,
    pub vif: VifSpec,
    pub request_id: String,
}

impl Rpc for AttachInterface {
    const METHOD: &'static str = "attach_interface";
    type Reply = ();
}

/// Unplug a port from an instance's guest. A call; a port the guest does not have is not an error.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DetachInterface {
    pub uuid: String,
    pub port_id: String,
    pub request_id: String,
}

impl Rpc for DetachInterface {
    const METHOD: &'static str = "detach_interface";
    type Reply = ();
}

/// Snapshot a volume attached to an instance's guest for a file-based block storage driver (upstream's assisted
/// volume snapshots): the guest's disk continues on a new qcow2 file over the old one. `create_info` is what the
/// API received (`snapshot_id`, `type` (`qcow2`), `new_file`, the name of the new file beside the volume's). A
/// call: the conductor reports the outcome to the block storage service.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VolumeSnapshotCreate {
    pub uuid: String,
    pub volume_id: String,
    pub create_info: serde_json::Value,
    pub request_id: String,
}

impl Rpc for VolumeSnapshotCreate {
    const METHOD: &'static str = "volume_snapshot_create";
    type Reply = ();
}

/// Remove a file from the chain of an attached volume's disk (upstream's assisted snapshot delete): `delete_info`
/// names `file_to_merge` and, when it is merged into its backing file, `merge_target_file`; without a target the
/// file's data is pulled into the file above it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VolumeSnapshotDelete {
    pub uuid: String,
    pub volume_id: String,
    pub snapshot_id: String,
    pub delete_info: serde_json::Value,
    pub request_id: String,
}

impl Rpc for VolumeSnapshotDelete {
    const METHOD: &'static str = "volume_snapshot_delete";
    type Reply = ();
}

/// An event another service sent about an instance on this host (`POST /os-server-external-events`, as
/// upstream's `external_instance_event`): `network-vif-plugged` ends the wait of a build for its port (`tag`).
/// Cast: nobody waits for the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalInstanceEvent {
    pub instance_uuid: String,
    /// `network-vif-plugged`, `network-vif-unplugged`, …
    pub name: String,
    /// `completed`, `failed` or `in-progress`.
    pub status: String,
    /// The port id for network events.
    #[serde(default)]
    pub tag: Option<String>,
}

impl Rpc for ExternalInstanceEvent {
    const METHOD: &'static str = "external_instance_event";
    type Reply = ();
}

/// The tail of an instance's console log (`length` lines, all when `None`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetConsoleOutput {
    pub uuid: String,
    pub length: Option<u64>,
}

impl Rpc for GetConsoleOutput {
    const METHOD: &'static str = "get_console_output";
    type Reply = String;
}

/// The host's `uptime` line (time, days up, users, load averages), as upstream's `os-hypervisors/{id}/uptime`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetHostUptime {}

impl Rpc for GetHostUptime {
    const METHOD: &'static str = "get_host_uptime";
    type Reply = String;
}

/// A guest's diagnostics (CPU time, memory, disk and interface counters), as upstream's `/servers/{id}/diagnostics`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetDiagnostics {
    pub instance: InstanceSpec,
}

impl Rpc for GetDiagnostics {
    const METHOD: &'static str = "get_diagnostics";
    type Reply = BTreeMap<String, serde_json::Value>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_state_codes_round_trip() {
        for p in [
            PowerState::NoState,
            PowerState::Running,
            PowerState::Paused,
            PowerState::Shutdown,
            PowerState::Crashed,
            PowerState::Suspended,
        ] {
            assert_eq!(PowerState::from_code(p.code()), p);
        }
        assert_eq!(PowerState::Shutdown.code(), 4);
        assert_eq!(PowerState::from_code(99), PowerState::NoState);
    }

    #[test]
    fn secrets_do_not_print() {
        let a = Action::Snapshot { image_id: "i".into(), image_url: "u".into(), auth_token: Secret("tok123".into()) };
        assert!(!format!("{a:?}").contains("tok123"));
        assert!(serde_json::to_string(&a).unwrap().contains("tok123"));
    }

    #[test]
    fn clearing_a_task_state_is_distinct_from_leaving_it() {
        let clear = InstanceChanges { task_state: Some(None), ..Default::default() };
        let json = serde_json::to_string(&clear).unwrap();
        let back: InstanceChanges = serde_json::from_str(&json).unwrap();
        assert_eq!(back.task_state, Some(None));
        let leave: InstanceChanges = serde_json::from_str("{}").unwrap();
        assert_eq!(leave.task_state, None);
    }

    #[test]
    fn a_vif_from_an_older_conductor_is_not_waited_for() {
        let old: VifSpec = serde_json::from_str(r#"{"port_id": "p", "network_id": "n", "mac_address": "fa:16:3e:00:00:01"}"#).unwrap();
        assert!(old.active);
        assert_eq!(old.mtu, None);
        assert_eq!(ExternalInstanceEvent::METHOD, "external_instance_event");
    }
}
