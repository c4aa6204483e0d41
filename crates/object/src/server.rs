//! The proxy ↔ storage-server interface and its local implementation.
//!
//! A storage server keeps object data on its devices, addressed as Swift's object servers do by
//! `(device, partition, hash, timestamp)`. The proxy ([`crate::service`]) opens one [`DataWriter`] per replica the
//! ring chooses, streams the body to all of them, and commits only when the whole body arrived and its ETag
//! checks; only then is the listing row written. Over the network, an implementation of [`ObjectServer`] would
//! speak to remote nodes; [`LocalServer`] is the one node of `stratus up`.
//!
//! On disk (per device): `<root>/<device>/objects[-<policy>]/<partition>/<hash[29..]>/<hash>/<timestamp>.data`
//! (`objects` for storage policy 0, `objects-N` for policy N), written to
//! `<root>/<device>/tmp/` first, fsynced, renamed into place, and the directory fsynced. A server killed mid-write
//! leaves only a temp file, which no listing names.

use std::{
    path::{Path, PathBuf},
    pin::Pin,
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

use crate::error::Error;

/// A stream of body bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// Where one replica of an object lives.
#[derive(Clone, Debug, PartialEq)]
pub struct DataLocation {
    /// The storage policy (its ring chose the device).
    pub policy: u32,
    pub device: String,
    pub partition: u32,
    /// MD5 of the object path, hex.
    pub hash: String,
    /// The object's `X-Timestamp`, which names the data file.
    pub timestamp: String,
}

/// An inclusive byte range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A data file being written. Dropping it without [`DataWriter::commit`] discards what was written.
#[async_trait]
pub trait DataWriter: Send {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), Error>;
    /// Makes the data durable and visible at its location.
    async fn commit(self: Box<Self>) -> Result<(), Error>;
}

/// A storage server: object data by location.
#[async_trait]
pub trait ObjectServer: Send + Sync + 'static {
    async fn create(&self, at: &DataLocation) -> Result<Box<dyn DataWriter>, Error>;
    /// The data, or a range of it; `NotFound` when this replica is missing.
    async fn read(&self, at: &DataLocation, range: Option<ByteRange>) -> Result<ByteStream, Error>;
    /// Removes the data file; a missing one is not an error.
    async fn delete(&self, at: &DataLocation) -> Result<(), Error>;
    /// Whether this replica's data file is there.
    async fn exists(&self, at: &DataLocation) -> Result<bool, Error>;

    // What the replicator walks.
    /// The devices this server has data on.
    async fn devices(&self) -> Result<Vec<String>, Error>;
    /// The partitions a device holds data of, in one storage policy.
    async fn partitions(&self, device: &str, policy: u32) -> Result<Vec<u32>, Error>;
    /// The data files of one partition on one device.
    async fn data_files(&self, device: &str, policy: u32, partition: u32) -> Result<Vec<DataLocation>, Error>;
}

/// The storage server of this node: devices are directories under `root`.
#[derive(Clone, Debug)]
pub struct LocalServer {
    root: PathBuf,
}

impl LocalServer {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalServer { root: root.into() }
    }

    /// The path of a data file.
    pub fn data_path(&self, at: &DataLocation) -> Result<PathBuf, Error> {
        let dev = check_component(&at.device)?;
        let hash = check_component(&at.hash)?;
        let ts = check_component(&at.timestamp)?;
        let suffix = hash.get(hash.len().saturating_sub(3)..).unwrap_or(hash);
        Ok(self
            .root
            .join(dev)
            .join(crate::policy::data_dir_name(at.policy))
            .join(at.partition.to_string())
            .join(suffix)
            .join(hash)
            .join(format!("{ts}.data")))
    }
}

fn check_component(s: &str) -> Result<&str, Error> {
    if s.is_empty() || s.contains(['/', '\\']) || s == "." || s == ".." {
        return Err(Error::BadRequest(format!("invalid storage path component {s:?}")));
    }
    Ok(s)
}

struct LocalWriter {
    file: Option<tokio::fs::File>,
    tmp: PathBuf,
    dest: PathBuf,
}

#[async_trait]
impl DataWriter for LocalWriter {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), Error> {
        match self.file.as_mut() {
            Some(f) => Ok(f.write_all(chunk).await?),
            None => Err(Error::Io(std::io::Error::other("writer already finished"))),
        }
    }

    async fn commit(mut self: Box<Self>) -> Result<(), Error> {
        let Some(mut file) = self.file.take() else {
            return Err(Error::Io(std::io::Error::other("writer already finished")));
        };
        file.flush().await?;
        let file = file.into_std().await;
        let (tmp, dest) = (self.tmp.clone(), self.dest.clone());
        // One blocking task for the whole commit: each `tokio::fs` call is a trip to the blocking pool of its own.
        blocking(move || {
            file.sync_all()?;
            drop(file);
            let dir = dest.parent().map(Path::to_path_buf).unwrap_or_default();
            std::fs::create_dir_all(&dir)?;
            std::fs::rename(&tmp, &dest)?;
            // The rename is durable once the directory entry is.
            std::fs::File::open(&dir)?.sync_all()
        })
        .await?;
        self.tmp = PathBuf::new();
        Ok(())
    }
}

/// Runs file system work on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?.map_err(Error::Io)
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[async_trait]
impl ObjectServer for LocalServer {
    async fn create(&self, at: &DataLocation) -> Result<Box<dyn DataWriter>, Error> {
        let dest = self.data_path(at)?;
        let tmp_dir = self.root.join(check_component(&at.device)?).join("tmp");
        let tmp = tmp_dir.join(uuid::Uuid::new_v4().simple().to_string());
        let path = tmp.clone();
        let file = blocking(move || match std::fs::File::create(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&tmp_dir)?;
                std::fs::File::create(&path)
            }
            other => other,
        })
        .await?;
        Ok(Box::new(LocalWriter { file: Some(tokio::fs::File::from_std(file)), tmp, dest }))
    }

    async fn read(&self, at: &DataLocation, range: Option<ByteRange>) -> Result<ByteStream, Error> {
        let path = self.data_path(at)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound("object data is missing on this device".into()));
            }
            Err(e) => return Err(e.into()),
        };
        let reader: Pin<Box<dyn tokio::io::AsyncRead + Send>> = match range {
            Some(r) => {
                file.seek(std::io::SeekFrom::Start(r.start)).await?;
                Box::pin(file.take(r.len()))
            }
            None => Box::pin(file),
        };
        Ok(Box::pin(tokio_util_stream(reader)))
    }

    async fn delete(&self, at: &DataLocation) -> Result<(), Error> {
        let path = self.data_path(at)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        // Empty hash directories are left for a later cleaner; they hold nothing listable.
        Ok(())
    }

    async fn exists(&self, at: &DataLocation) -> Result<bool, Error> {
        Ok(tokio::fs::try_exists(self.data_path(at)?).await?)
    }

    async fn devices(&self) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        for (name, dir) in entries(&self.root).await? {
            if dir && entries(&self.root.join(&name)).await?.iter().any(|(n, d)| *d && n.starts_with("objects")) {
                out.push(name);
            }
        }
        Ok(out)
    }

    async fn partitions(&self, device: &str, policy: u32) -> Result<Vec<u32>, Error> {
        let dir = self.root.join(check_component(device)?).join(crate::policy::data_dir_name(policy));
        Ok(entries(&dir).await?.into_iter().filter(|(_, d)| *d).filter_map(|(n, _)| n.parse().ok()).collect())
    }

    async fn data_files(&self, device: &str, policy: u32, partition: u32) -> Result<Vec<DataLocation>, Error> {
        let dir = self.root.join(check_component(device)?).join(crate::policy::data_dir_name(policy)).join(partition.to_string());
        let mut out = Vec::new();
        for (suffix, is_dir) in entries(&dir).await? {
            if !is_dir {
                continue;
            }
            for (hash, is_dir) in entries(&dir.join(&suffix)).await? {
                if !is_dir || !hash.ends_with(&suffix) {
                    continue;
                }
                for (file, _) in entries(&dir.join(&suffix).join(&hash)).await? {
                    if let Some(timestamp) = file.strip_suffix(".data") {
                        out.push(DataLocation {
                            policy,
                            device: device.to_string(),
                            partition,
                            hash: hash.clone(),
                            timestamp: timestamp.to_string(),
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The entries of a directory (none when it does not exist), as (name, is a directory).
async fn entries(dir: &Path) -> Result<Vec<(String, bool)>, Error> {
    let mut rd = match tokio::fs::read_dir(dir).await {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    while let Some(e) = rd.next_entry().await? {
        if let Ok(name) = e.file_name().into_string() {
            out.push((name, e.file_type().await?.is_dir()));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads an `AsyncRead` as a stream of 64 KiB chunks.
fn tokio_util_stream(
    reader: Pin<Box<dyn tokio::io::AsyncRead + Send>>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures::stream::try_unfold(reader, |mut r| async move {
        let mut buf = vec![0u8; 64 * 1024];
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), r)))
    })
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt as _;

    use super::*;

    fn loc(ts: &str) -> DataLocation {
        DataLocation { policy: 0, device: "d1".into(), partition: 7, hash: "0123456789abcdef0123456789abcdef".into(), timestamp: ts.into() }
    }

    #[tokio::test]
    async fn committed_data_is_readable_and_uncommitted_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let server = LocalServer::new(dir.path());
        let mut w = server.create(&loc("1.00000")).await.unwrap();
        w.write(b"hello ").await.unwrap();
        w.write(b"world").await.unwrap();
        w.commit().await.unwrap();
        let path = server.data_path(&loc("1.00000")).unwrap();
        assert!(path.ends_with("d1/objects/7/def/0123456789abcdef0123456789abcdef/1.00000.data"), "{path:?}");
        let got: Vec<Bytes> = server.read(&loc("1.00000"), None).await.unwrap().try_collect().await.unwrap();
        assert_eq!(got.concat(), b"hello world");
        let part: Vec<Bytes> =
            server.read(&loc("1.00000"), Some(ByteRange { start: 6, end: 9 })).await.unwrap().try_collect().await.unwrap();
        assert_eq!(part.concat(), b"worl");

        let mut w = server.create(&loc("2.00000")).await.unwrap();
        w.write(b"partial").await.unwrap();
        drop(w);
        assert!(matches!(server.read(&loc("2.00000"), None).await, Err(Error::NotFound(_))));
        assert_eq!(std::fs::read_dir(dir.path().join("d1/tmp")).unwrap().count(), 0, "temp file removed");

        assert_eq!(server.devices().await.unwrap(), vec!["d1".to_string()]);
        assert_eq!(server.partitions("d1", 0).await.unwrap(), vec![7]);
        assert!(server.partitions("d1", 1).await.unwrap().is_empty());
        assert_eq!(server.data_files("d1", 0, 7).await.unwrap(), vec![loc("1.00000")]);
        assert!(server.data_files("d9", 0, 7).await.unwrap().is_empty());
        let gold = DataLocation { policy: 2, ..loc("3.00000") };
        let mut w = server.create(&gold).await.unwrap();
        w.write(b"gold").await.unwrap();
        w.commit().await.unwrap();
        assert!(server.data_path(&gold).unwrap().to_string_lossy().contains("/d1/objects-2/7/"));
        assert_eq!(server.data_files("d1", 2, 7).await.unwrap(), vec![gold.clone()]);
        assert!(server.exists(&loc("1.00000")).await.unwrap());
        server.delete(&loc("1.00000")).await.unwrap();
        server.delete(&loc("1.00000")).await.unwrap();
        assert!(!server.exists(&loc("1.00000")).await.unwrap());
        assert!(matches!(server.read(&loc("1.00000"), None).await, Err(Error::NotFound(_))));
        assert!(server.data_path(&DataLocation { device: "..".into(), ..loc("1") }).is_err());
    }
}
