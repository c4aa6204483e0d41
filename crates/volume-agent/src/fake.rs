//! A backend in memory, for API tests: volumes and snapshots are sizes plus whatever bytes were written into
//! them (an image, a restored backup); capacity is configured.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Mutex,
};

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::{Capacity, DataSource, Error, VolumeDriver};

#[derive(Clone, Debug, Default)]
struct Blob {
    size_gb: i64,
    data: Vec<u8>,
}

/// The `fake` driver.
pub struct FakeDriver {
    total_gb: f64,
    scratch: PathBuf,
    volumes: Mutex<HashMap<String, Blob>>,
    snapshots: Mutex<HashMap<String, Blob>>,
}

impl FakeDriver {
    /// A backend of `total_gb` GiB; temporary files go to `scratch`.
    pub fn new(total_gb: f64, scratch: &Path) -> Self {
        FakeDriver { total_gb, scratch: scratch.to_path_buf(), volumes: Mutex::default(), snapshots: Mutex::default() }
    }

    /// The bytes written into a volume (tests).
    pub fn data(&self, id: &str) -> Option<Vec<u8>> {
        self.volumes.lock().unwrap().get(id).map(|b| b.data.clone())
    }

    /// The ids of the volumes (tests).
    pub fn volume_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.volumes.lock().unwrap().keys().cloned().collect();
        ids.sort();
        ids
    }

    fn get(&self, source: DataSource<'_>) -> Result<Blob, Error> {
        match source {
            DataSource::Volume(id) => self.volumes.lock().unwrap().get(id).cloned(),
            DataSource::Snapshot(id) => self.snapshots.lock().unwrap().get(id).cloned(),
        }
        .ok_or_else(|| Error::NotFound(format!("{source:?} not found")))
    }
}

#[async_trait]
impl VolumeDriver for FakeDriver {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn storage_protocol(&self) -> &'static str {
        "fake"
    }
    fn thin_provisioning(&self) -> bool {
        true
    }
    fn scratch_dir(&self) -> PathBuf {
        self.scratch.clone()
    }

    async fn capacity(&self) -> Result<Capacity, Error> {
        let provisioned: i64 = self.volumes.lock().unwrap().values().map(|b| b.size_gb).sum();
        Ok(Capacity { total_gb: self.total_gb, free_gb: (self.total_gb - provisioned as f64).max(0.0), provisioned_gb: provisioned as f64 })
    }

    async fn create(&self, id: &str, size_gb: i64) -> Result<(), Error> {
        self.volumes.lock().unwrap().insert(id.into(), Blob { size_gb, data: Vec::new() });
        Ok(())
    }

    async fn create_from_file(&self, id: &str, size_gb: i64, source: &Path, _format: &str) -> Result<(), Error> {
        let data = tokio::fs::read(source).await.map_err(|e| Error::io("reading the source", e))?;
        self.volumes.lock().unwrap().insert(id.into(), Blob { size_gb, data });
        Ok(())
    }

    async fn create_from(&self, id: &str, size_gb: i64, source: DataSource<'_>) -> Result<(), Error> {
        let blob = self.get(source)?;
        self.volumes.lock().unwrap().insert(id.into(), Blob { size_gb, data: blob.data });
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<(), Error> {
        self.volumes.lock().unwrap().remove(id);
        Ok(())
    }

    async fn extend(&self, id: &str, size_gb: i64) -> Result<(), Error> {
        let mut volumes = self.volumes.lock().unwrap();
        let blob = volumes.get_mut(id).ok_or_else(|| Error::NotFound(format!("volume {id} not found")))?;
        blob.size_gb = size_gb;
        Ok(())
    }

    async fn create_snapshot(&self, snapshot_id: &str, volume_id: &str) -> Result<(), Error> {
        let blob = self.get(DataSource::Volume(volume_id))?;
        self.snapshots.lock().unwrap().insert(snapshot_id.into(), blob);
        Ok(())
    }

    async fn revert_to_snapshot(&self, volume_id: &str, snapshot_id: &str, size_gb: i64) -> Result<(), Error> {
        let snap = self.get(DataSource::Snapshot(snapshot_id))?;
        self.get(DataSource::Volume(volume_id))?;
        self.volumes.lock().unwrap().insert(volume_id.into(), Blob { size_gb, data: snap.data });
        Ok(())
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), Error> {
        self.snapshots.lock().unwrap().remove(snapshot_id);
        Ok(())
    }

    async fn export(&self, source: DataSource<'_>, dest: &Path, _format: &str) -> Result<(), Error> {
        let blob = self.get(source)?;
        tokio::fs::write(dest, &blob.data).await.map_err(|e| Error::io("writing the export", e))
    }

    async fn import(&self, id: &str, source: &Path, _format: &str) -> Result<(), Error> {
        let data = tokio::fs::read(source).await.map_err(|e| Error::io("reading the source", e))?;
        let mut volumes = self.volumes.lock().unwrap();
        let blob = volumes.get_mut(id).ok_or_else(|| Error::NotFound(format!("volume {id} not found")))?;
        blob.data = data;
        Ok(())
    }

    async fn connection_info(&self, id: &str, _connector: &Value) -> Result<Value, Error> {
        self.get(DataSource::Volume(id))?;
        Ok(json!({"driver_volume_type": "fake", "data": {"volume_id": id, "access_mode": "rw"}}))
    }
}
