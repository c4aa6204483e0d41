//! The bus contract between the block-storage service (`volume`: API and scheduler) and the per-host volume agents
//! (`volume-agent`), as `cinder/volume/rpcapi.py` and `cinder/backup/rpcapi.py` are upstream.
//!
//! * Agents serve [`VOLUME_TOPIC`] as server `<host>@<backend>` (upstream's `host@backend` service name); the
//!   service calls them with [`CreateVolume`], [`DeleteVolume`], [`ExtendVolume`], [`CreateSnapshot`],
//!   [`DeleteSnapshot`], [`RevertToSnapshot`], [`UploadToImage`], [`InitializeConnection`], [`BackupVolume`], [`RestoreBackup`] and
//!   [`DeleteBackup`]. Each call returns when the work is done; the service alone writes the resulting state.
//! * The service serves [`SCHEDULER_TOPIC`]; agents cast [`BackendReport`] to it every report interval: the
//!   heartbeat (`openstack volume service list`) and the capacity and capabilities the scheduler filters on.
//!
//! Agents never touch the database. Method names are part of the wire format and must stay stable.

use std::collections::BTreeMap;

use bus::Rpc;
use serde::{Deserialize, Serialize};

/// The topic volume agents serve, one server per `host@backend`.
pub const VOLUME_TOPIC: &str = "cinder-volume";
/// The topic the service's scheduler serves.
pub const SCHEDULER_TOPIC: &str = "cinder-scheduler";
/// The binary name agents report under, as upstream.
pub const VOLUME_BINARY: &str = "cinder-volume";

/// A token passed on to another service on the caller's behalf; never printed.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One backend's state, as upstream's `get_volume_stats` reports it to the scheduler.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BackendReport {
    /// `host@backend`, the server name the agent serves under.
    pub host: String,
    pub backend_name: String,
    pub availability_zone: String,
    /// The driver (`file`, `fake`).
    pub driver: String,
    pub vendor_name: String,
    pub storage_protocol: String,
    pub total_capacity_gb: f64,
    pub free_capacity_gb: f64,
    /// The sum of the sizes of the volumes on the backend (what thin provisioning promised).
    pub provisioned_capacity_gb: f64,
    pub thin_provisioning_support: bool,
    pub max_over_subscription_ratio: f64,
    pub reserved_percentage: u32,
    /// Extra capabilities matched against volume type extra specs.
    pub capabilities: BTreeMap<String, String>,
}

impl Rpc for BackendReport {
    const METHOD: &'static str = "volume_backend_report";
    type Reply = ();
}

/// Where a new volume's data comes from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum VolumeSource {
    /// Zeroes (a sparse file).
    Empty,
    /// An image of the image service, downloaded with the caller's token and converted.
    Image { image_url: String, image_id: String, disk_format: String, auth_token: Secret },
    /// A snapshot on the same backend.
    Snapshot { snapshot_id: String },
    /// Another volume on the same backend.
    Volume { volume_id: String },
}

/// Creates a volume of `size_gb` GiB from `source`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateVolume {
    pub volume_id: String,
    pub size_gb: i64,
    pub source: VolumeSource,
}

impl Rpc for CreateVolume {
    const METHOD: &'static str = "create_volume";
    type Reply = ();
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeleteVolume {
    pub volume_id: String,
}

impl Rpc for DeleteVolume {
    const METHOD: &'static str = "delete_volume";
    type Reply = ();
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExtendVolume {
    pub volume_id: String,
    pub new_size_gb: i64,
}

impl Rpc for ExtendVolume {
    const METHOD: &'static str = "extend_volume";
    type Reply = ();
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateSnapshot {
    pub snapshot_id: String,
    pub volume_id: String,
}

impl Rpc for CreateSnapshot {
    const METHOD: &'static str = "create_snapshot";
    type Reply = ();
}

/// Puts a volume's data back to one of its snapshots' (3.40's revert), keeping the volume's size.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RevertToSnapshot {
    pub volume_id: String,
    pub snapshot_id: String,
    pub size_gb: i64,
}

impl Rpc for RevertToSnapshot {
    const METHOD: &'static str = "revert_to_snapshot";
    type Reply = ();
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeleteSnapshot {
    pub snapshot_id: String,
}

impl Rpc for DeleteSnapshot {
    const METHOD: &'static str = "delete_snapshot";
    type Reply = ();
}

/// Uploads a volume's data into an existing (queued) image, converted to `disk_format`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UploadToImage {
    pub volume_id: String,
    pub image_url: String,
    pub image_id: String,
    pub disk_format: String,
    pub auth_token: Secret,
}

impl Rpc for UploadToImage {
    const METHOD: &'static str = "copy_volume_to_image";
    type Reply = ();
}

/// What a host needs to reach a volume (upstream's `initialize_connection`), for an attachment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InitializeConnection {
    pub volume_id: String,
    /// The connector the host sent (`host`, `ip`, `initiator`, …).
    pub connector: serde_json::Value,
}

impl Rpc for InitializeConnection {
    const METHOD: &'static str = "initialize_connection";
    /// Upstream's `connection_info`: `driver_volume_type` and `data`.
    type Reply = serde_json::Value;
}

/// A host no longer reaches a volume (upstream's `terminate_connection` + `remove_export`): the backend withdraws
/// what it exported for that connector (an iSCSI target's access rule, the target once nobody uses it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TerminateConnection {
    pub volume_id: String,
    /// The connector the attachment was made with.
    pub connector: serde_json::Value,
}

impl Rpc for TerminateConnection {
    const METHOD: &'static str = "terminate_connection";
    type Reply = ();
}

/// Where backups go: a container of the caller's object-store account, reached with the caller's token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ObjectTarget {
    /// The account URL, e.g. `http://host/object-store/v1/AUTH_<project>`.
    pub account_url: String,
    pub container: String,
    pub auth_token: Secret,
}

/// Copies a volume (or a snapshot of it) into the object store as chunks, as Cinder's swift backup driver.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupVolume {
    pub backup_id: String,
    pub volume_id: String,
    pub snapshot_id: Option<String>,
    pub target: ObjectTarget,
    /// Object name prefix: `volume_<id>/<timestamp>/az_<zone>_backup_<backup id>`.
    pub prefix: String,
    pub chunk_size: u64,
}

/// What a backup wrote.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BackupWritten {
    pub object_count: i64,
    pub bytes: u64,
}

impl Rpc for BackupVolume {
    const METHOD: &'static str = "create_backup";
    type Reply = BackupWritten;
}

/// Writes a backup's chunks back into a volume.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RestoreBackup {
    pub volume_id: String,
    pub target: ObjectTarget,
    pub prefix: String,
    pub object_count: i64,
}

impl Rpc for RestoreBackup {
    const METHOD: &'static str = "restore_backup";
    type Reply = ();
}

/// Removes a backup's objects.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeleteBackup {
    pub target: ObjectTarget,
    pub prefix: String,
    pub object_count: i64,
}

impl Rpc for DeleteBackup {
    const METHOD: &'static str = "delete_backup";
    type Reply = ();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_not_printed_and_sources_are_tagged() {
        let s = VolumeSource::Image {
            image_url: "u".into(),
            image_id: "i".into(),
            disk_format: "qcow2".into(),
            auth_token: Secret("tok123".into()),
        };
        assert!(!format!("{s:?}").contains("tok123"));
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["type"], "image");
        assert_eq!(serde_json::from_value::<VolumeSource>(v).unwrap(), s);
        assert_eq!(serde_json::to_value(VolumeSource::Empty).unwrap()["type"], "empty");
    }
}
