//! The `file` backend: each volume is a file `volume-<id>` (and each snapshot `snapshot-<id>`) in one directory,
//! local or shared, in `raw` (sparse) or `qcow2` format. Everything that touches image data goes through
//! `qemu-img` (`create`, `convert`, `resize`, `info`), so files stay thin: `convert` skips zeroes and `qcow2`
//! allocates on write. Capacity is the directory's file system (or a configured size); the provisioned capacity
//! is the sum of the volumes' virtual sizes.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::{Capacity, DataSource, Error, VolumeDriver};

const GIB: u64 = 1 << 30;

/// The `file` driver's settings.
#[derive(Clone, Debug)]
pub struct FileConfig {
    /// Where the volume files live.
    pub dir: PathBuf,
    /// `raw` or `qcow2`.
    pub format: String,
    /// The capacity to report, in GiB; `None`: the file system's.
    pub capacity_gb: Option<f64>,
    /// The `qemu-img` binary.
    pub qemu_img: PathBuf,
}

impl FileConfig {
    pub fn new(dir: &Path) -> Self {
        FileConfig { dir: dir.to_path_buf(), format: "raw".into(), capacity_gb: None, qemu_img: "qemu-img".into() }
    }
}

/// The `file` driver.
pub struct FileDriver {
    config: FileConfig,
}

impl FileDriver {
    /// Checks the settings and creates the directory.
    pub fn new(config: FileConfig) -> Result<Self, Error> {
        if !["raw", "qcow2"].contains(&config.format.as_str()) {
            return Err(Error::Config(format!("volume file format '{}' is not raw or qcow2", config.format)));
        }
        std::fs::create_dir_all(config.dir.join("tmp"))
            .map_err(|e| Error::Config(format!("cannot create {}: {e}", config.dir.display())))?;
        Ok(FileDriver { config })
    }

    fn volume_path(&self, id: &str) -> PathBuf {
        self.config.dir.join(format!("volume-{}", safe(id)))
    }

    /// The file of an existing volume.
    pub(crate) fn volume_file(&self, id: &str) -> Result<PathBuf, Error> {
        self.path_of(DataSource::Volume(id))
    }

    fn snapshot_path(&self, id: &str) -> PathBuf {
        self.config.dir.join(format!("snapshot-{}", safe(id)))
    }

    fn path_of(&self, source: DataSource<'_>) -> Result<PathBuf, Error> {
        let path = match source {
            DataSource::Volume(id) => self.volume_path(id),
            DataSource::Snapshot(id) => self.snapshot_path(id),
        };
        if path.exists() { Ok(path) } else { Err(Error::NotFound(format!("{} does not exist", path.display()))) }
    }

    async fn qemu_img(&self, args: &[&str]) -> Result<String, Error> {
        let out = Command::new(&self.config.qemu_img)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| Error::Backend(format!("cannot run {}: {e}", self.config.qemu_img.display())))?;
        if !out.status.success() {
            return Err(Error::Backend(format!(
                "qemu-img {} failed: {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The virtual size of an image file, in bytes.
    pub async fn virtual_size(&self, path: &Path, format: &str) -> Result<u64, Error> {
        let p = path.to_string_lossy();
        let out = self.qemu_img(&["info", "--output=json", "-f", format, &p]).await?;
        let v: Value = serde_json::from_str(&out).map_err(|e| Error::Backend(format!("qemu-img info: {e}")))?;
        v["virtual-size"].as_u64().ok_or_else(|| Error::Backend("qemu-img info: no virtual-size".into()))
    }

    /// Converts `source` into a new file at `dest` (via a temporary name), grown to `size_gb`.
    async fn convert_into(&self, source: &Path, format: &str, dest: &Path, size_gb: i64) -> Result<(), Error> {
        let size = self.virtual_size(source, format).await?;
        if size > size_gb as u64 * GIB {
            return Err(Error::Backend(format!(
                "Image virtual size is {}GB and doesn't fit in a volume of size {size_gb}GB.",
                size.div_ceil(GIB)
            )));
        }
        let tmp = self.temp_path();
        let (s, t) = (source.to_string_lossy(), tmp.to_string_lossy());
        let result = async {
            self.qemu_img(&["convert", "-q", "-f", format, "-O", &self.config.format, &s, &t]).await?;
            if size < size_gb as u64 * GIB {
                self.qemu_img(&["resize", "-q", "-f", &self.config.format, &t, &format!("{size_gb}G")]).await?;
            }
            tokio::fs::rename(&tmp, dest).await.map_err(|e| Error::io("renaming the volume file", e))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    fn temp_path(&self) -> PathBuf {
        self.config.dir.join("tmp").join(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The virtual size of one of this backend's files, read cheaply: a raw file's length, a qcow2 header's size.
    fn provisioned_bytes(path: &Path, format: &str) -> u64 {
        let Ok(meta) = std::fs::metadata(path) else { return 0 };
        if format == "qcow2" {
            use std::io::Read;
            let mut header = [0u8; 32];
            if let Ok(mut f) = std::fs::File::open(path)
                && f.read_exact(&mut header).is_ok()
                && &header[0..4] == b"QFI\xfb"
            {
                return u64::from_be_bytes(header[24..32].try_into().unwrap_or_default());
            }
        }
        meta.len()
    }
}

/// Ids come from the service (UUIDs); anything else is refused rather than used in a path.
pub(crate) fn safe(id: &str) -> String {
    id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect()
}

#[async_trait]
impl VolumeDriver for FileDriver {
    fn name(&self) -> &'static str {
        "file"
    }
    fn storage_protocol(&self) -> &'static str {
        "file"
    }
    fn thin_provisioning(&self) -> bool {
        true
    }
    fn scratch_dir(&self) -> PathBuf {
        self.config.dir.join("tmp")
    }

    async fn capacity(&self) -> Result<Capacity, Error> {
        let dir = self.config.dir.clone();
        let format = self.config.format.clone();
        let configured = self.config.capacity_gb;
        tokio::task::spawn_blocking(move || {
            let fs = rustix::fs::statvfs(&dir).map_err(|e| Error::Backend(format!("statvfs {}: {e}", dir.display())))?;
            let fs_total = (fs.f_blocks * fs.f_frsize) as f64 / GIB as f64;
            let fs_free = (fs.f_bavail * fs.f_frsize) as f64 / GIB as f64;
            let mut provisioned = 0u64;
            for entry in std::fs::read_dir(&dir).map_err(|e| Error::io("listing volumes", e))?.flatten() {
                if entry.file_name().to_string_lossy().starts_with("volume-") {
                    provisioned += Self::provisioned_bytes(&entry.path(), &format);
                }
            }
            let total = configured.unwrap_or(fs_total);
            Ok(Capacity {
                total_gb: (total * 100.0).floor() / 100.0,
                free_gb: (fs_free.min(total) * 100.0).floor() / 100.0,
                provisioned_gb: provisioned as f64 / GIB as f64,
            })
        })
        .await
        .map_err(|e| Error::Backend(e.to_string()))?
    }

    async fn create(&self, id: &str, size_gb: i64) -> Result<(), Error> {
        let tmp = self.temp_path();
        let t = tmp.to_string_lossy();
        self.qemu_img(&["create", "-q", "-f", &self.config.format, &t, &format!("{size_gb}G")]).await?;
        tokio::fs::rename(&tmp, self.volume_path(id)).await.map_err(|e| Error::io("renaming the volume file", e))
    }

    async fn create_from_file(&self, id: &str, size_gb: i64, source: &Path, format: &str) -> Result<(), Error> {
        self.convert_into(source, format, &self.volume_path(id), size_gb).await
    }

    async fn create_from(&self, id: &str, size_gb: i64, source: DataSource<'_>) -> Result<(), Error> {
        let src = self.path_of(source)?;
        self.convert_into(&src, &self.config.format, &self.volume_path(id), size_gb).await
    }

    async fn delete(&self, id: &str) -> Result<(), Error> {
        match tokio::fs::remove_file(self.volume_path(id)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("removing the volume", e)),
            _ => Ok(()),
        }
    }

    async fn extend(&self, id: &str, size_gb: i64) -> Result<(), Error> {
        let path = self.path_of(DataSource::Volume(id))?;
        let p = path.to_string_lossy();
        self.qemu_img(&["resize", "-q", "-f", &self.config.format, &p, &format!("{size_gb}G")]).await?;
        Ok(())
    }

    async fn create_snapshot(&self, snapshot_id: &str, volume_id: &str) -> Result<(), Error> {
        let src = self.path_of(DataSource::Volume(volume_id))?;
        let size = self.virtual_size(&src, &self.config.format).await?;
        self.convert_into(&src, &self.config.format, &self.snapshot_path(snapshot_id), size.div_ceil(GIB) as i64).await
    }

    async fn revert_to_snapshot(&self, volume_id: &str, snapshot_id: &str, size_gb: i64) -> Result<(), Error> {
        // Both must exist; the copy replaces the volume's file in one rename, so a failure leaves it as it was.
        let dest = self.path_of(DataSource::Volume(volume_id))?;
        let src = self.path_of(DataSource::Snapshot(snapshot_id))?;
        self.convert_into(&src, &self.config.format, &dest, size_gb).await
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), Error> {
        match tokio::fs::remove_file(self.snapshot_path(snapshot_id)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("removing the snapshot", e)),
            _ => Ok(()),
        }
    }

    async fn export(&self, source: DataSource<'_>, dest: &Path, format: &str) -> Result<(), Error> {
        let src = self.path_of(source)?;
        let (s, d) = (src.to_string_lossy(), dest.to_string_lossy());
        self.qemu_img(&["convert", "-q", "-f", &self.config.format, "-O", format, &s, &d]).await?;
        Ok(())
    }

    async fn import(&self, id: &str, source: &Path, format: &str) -> Result<(), Error> {
        let dest = self.path_of(DataSource::Volume(id))?;
        let size = self.virtual_size(&dest, &self.config.format).await?;
        self.convert_into(source, format, &dest, size.div_ceil(GIB) as i64).await
    }

    async fn connection_info(&self, id: &str, _connector: &Value) -> Result<Value, Error> {
        let path = self.path_of(DataSource::Volume(id))?;
        Ok(json!({
            "driver_volume_type": "local",
            "data": {"device_path": path, "format": self.config.format, "access_mode": "rw"},
        }))
    }
}
