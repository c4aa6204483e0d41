//! The interface between the agent and its storage (upstream's volume driver API).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::Value;

use crate::Error;

/// What a backend holds and promised, in GiB.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Capacity {
    pub total_gb: f64,
    pub free_gb: f64,
    /// The sum of the sizes of the volumes (thin provisioning may promise more than is there).
    pub provisioned_gb: f64,
}

/// Data to read out of the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataSource<'a> {
    Volume(&'a str),
    Snapshot(&'a str),
}

/// A storage backend. Sizes are GiB; formats are `qemu-img`'s names (`raw`, `qcow2`, `vmdk`, …).
#[async_trait]
pub trait VolumeDriver: Send + Sync {
    /// The driver's name in reports (`file`, `fake`).
    fn name(&self) -> &'static str;
    /// Upstream's `storage_protocol` capability.
    fn storage_protocol(&self) -> &'static str;
    /// Whether volumes take only the space their data uses.
    fn thin_provisioning(&self) -> bool;
    /// Where the agent keeps temporary files (downloads, exports).
    fn scratch_dir(&self) -> PathBuf;

    async fn capacity(&self) -> Result<Capacity, Error>;
    /// A new, zeroed volume.
    async fn create(&self, id: &str, size_gb: i64) -> Result<(), Error>;
    /// A new volume holding `source` (a file in `format`), grown to `size_gb`.
    async fn create_from_file(&self, id: &str, size_gb: i64, source: &Path, format: &str) -> Result<(), Error>;
    /// A new volume holding a copy of another volume's or a snapshot's data, grown to `size_gb`.
    async fn create_from(&self, id: &str, size_gb: i64, source: DataSource<'_>) -> Result<(), Error>;
    /// Removes a volume; a missing one is not an error.
    async fn delete(&self, id: &str) -> Result<(), Error>;
    /// Grows a volume to `size_gb`.
    async fn extend(&self, id: &str, size_gb: i64) -> Result<(), Error>;
    /// A point-in-time copy of a volume.
    async fn create_snapshot(&self, snapshot_id: &str, volume_id: &str) -> Result<(), Error>;
    /// Replaces a volume's data with a copy of one of its snapshots, the volume keeping `size_gb`.
    async fn revert_to_snapshot(&self, volume_id: &str, snapshot_id: &str, size_gb: i64) -> Result<(), Error>;
    /// Removes a snapshot; a missing one is not an error.
    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), Error>;
    /// Writes a volume's or snapshot's data to `dest` in `format`.
    async fn export(&self, source: DataSource<'_>, dest: &Path, format: &str) -> Result<(), Error>;
    /// Replaces an existing volume's data with `source` (a file in `format`), keeping the volume's size.
    async fn import(&self, id: &str, source: &Path, format: &str) -> Result<(), Error>;
    /// How the host of `connector` reaches the volume (upstream's `initialize_connection`: the export is made for
    /// that host if the backend exports per host).
    async fn connection_info(&self, id: &str, connector: &Value) -> Result<Value, Error>;
    /// The host of `connector` no longer reaches the volume (upstream's `terminate_connection`): what was exported
    /// for it is withdrawn. Nothing to do for backends that export nothing.
    async fn terminate_connection(&self, _id: &str, _connector: &Value) -> Result<(), Error> {
        Ok(())
    }
}

/// `qemu-img`'s name for an image service `disk_format`.
pub fn qemu_format(disk_format: &str) -> &str {
    match disk_format {
        "vhd" => "vpc",
        "iso" | "ami" | "ari" | "aki" | "" => "raw",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn image_formats_map_to_qemu_names() {
        assert_eq!(super::qemu_format("vhd"), "vpc");
        assert_eq!(super::qemu_format("qcow2"), "qcow2");
        assert_eq!(super::qemu_format("iso"), "raw");
    }
}
