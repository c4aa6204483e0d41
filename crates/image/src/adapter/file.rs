//! The `file` store: image data as files in one directory (`<data_dir>/images` by default).
//!
//! Uploads go to a hidden temporary file in the same directory, which is fsynced and then renamed to the image id
//! (and the directory fsynced), so a crash or an interrupted upload never leaves a partial file under an image's
//! name. A temporary file is removed when its upload fails or its future is dropped; [`FileAdapter::new`] removes
//! any left behind by a crash.
//!
//! The disk work runs on a blocking thread per transfer, a few chunks ahead of (or behind) the network side through
//! a bounded channel: reads fill 1 MiB buffers straight from the file (no intermediate copy) while the
//! previous chunk is being sent, and writes take the received chunks as they are.

use std::{
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::{AdapterError, ByteRange, ByteStream, StoreAdapter};

const TEMP_PREFIX: &str = ".upload-";
/// Bytes per read: large enough that per-chunk costs (a system call, a channel hop, an HTTP frame) vanish.
const READ_CHUNK: usize = 1 << 20;
/// Chunks a transfer's disk thread may run ahead of, or lag behind, the network side.
const PIPELINE_DEPTH: usize = 4;

/// Stores image data as files under one directory.
#[derive(Debug, Clone)]
pub struct FileAdapter {
    id: String,
    dir: PathBuf,
}

/// Removes a temporary file unless the upload committed it.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl FileAdapter {
    /// A store `id` over `dir` (created if missing). Leftover temporary files of interrupted uploads are removed.
    pub fn new(id: &str, dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(FileAdapter { id: id.to_string(), dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn location(&self, image_id: &str) -> String {
        format!("file://{}", self.dir.join(image_id).display())
    }

    /// The file behind a location of this store; `None` if the location is not one of ours.
    fn path_of(&self, location: &str) -> Option<PathBuf> {
        let path = PathBuf::from(location.strip_prefix("file://")?);
        let name = path.file_name()?.to_str()?;
        (path.parent() == Some(self.dir.as_path()) && !name.starts_with('.')).then_some(path)
    }
}

/// Reads `want` bytes (fewer only at the end of the file).
fn read_chunk(file: &mut std::fs::File, want: usize) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(want);
    let mut total = 0;
    while total < want {
        match file.read(&mut buf[total..]) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(total);
    Ok(buf.freeze())
}

fn valid_image_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[async_trait]
impl StoreAdapter for FileAdapter {
    fn id(&self) -> &str {
        &self.id
    }

    fn description(&self) -> &str {
        "Image data in files on the local disk."
    }

    fn store_type(&self) -> &str {
        "file"
    }

    fn properties(&self) -> serde_json::Value {
        serde_json::json!({"datadir": self.dir.display().to_string()})
    }

    fn owns(&self, location: &str) -> bool {
        self.path_of(location).is_some()
    }

    async fn add(&self, image_id: &str, mut data: ByteStream, _size: Option<u64>) -> Result<String, AdapterError> {
        if !valid_image_id(image_id) {
            return Err(AdapterError::Storage(std::io::Error::other("invalid image id")));
        }
        let temp = self.dir.join(format!("{TEMP_PREFIX}{image_id}-{}", uuid::Uuid::new_v4().simple()));
        let mut guard = TempGuard(Some(temp.clone()));
        let file = std::fs::File::create(&temp).map_err(AdapterError::Storage)?;
        // The writer thread takes chunks as they arrive and ends with an fsync; closing the channel early (a failed
        // source) makes it stop, and the guard removes the file.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(PIPELINE_DEPTH);
        let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut file = file;
            while let Some(chunk) = rx.blocking_recv() {
                file.write_all(&chunk)?;
            }
            file.sync_all()
        });
        let mut failed = None;
        while let Some(chunk) = data.next().await {
            match chunk {
                Ok(chunk) => {
                    if tx.send(chunk).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let written = writer.await.map_err(|e| AdapterError::Storage(std::io::Error::other(e)))?;
        if let Some(e) = failed {
            return Err(AdapterError::Source(e));
        }
        written.map_err(AdapterError::Storage)?;
        let target = self.dir.join(image_id);
        tokio::fs::rename(&temp, &target).await.map_err(AdapterError::Storage)?;
        guard.0 = None;
        let dir = self.dir.clone();
        // Make the rename itself durable.
        tokio::task::spawn_blocking(move || std::fs::File::open(dir).and_then(|d| d.sync_all()))
            .await
            .map_err(|e| AdapterError::Storage(std::io::Error::other(e)))?
            .map_err(AdapterError::Storage)?;
        Ok(self.location(image_id))
    }

    async fn get(&self, location: &str, range: Option<ByteRange>) -> Result<ByteStream, AdapterError> {
        let path = self.path_of(location).ok_or_else(|| AdapterError::NotFound(location.to_string()))?;
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AdapterError::NotFound(location.to_string()));
            }
            Err(e) => return Err(AdapterError::Storage(e)),
        };
        let mut remaining = match range {
            Some(r) => {
                file.seek(SeekFrom::Start(r.start)).map_err(AdapterError::Storage)?;
                Some(r.len())
            }
            None => None,
        };
        // A reader thread keeps up to PIPELINE_DEPTH chunks ready; it stops when the stream is dropped.
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(PIPELINE_DEPTH);
        tokio::task::spawn_blocking(move || {
            loop {
                let want = match remaining {
                    Some(0) => return,
                    Some(n) => READ_CHUNK.min(usize::try_from(n).unwrap_or(READ_CHUNK)),
                    None => READ_CHUNK,
                };
                let item = match read_chunk(&mut file, want) {
                    Ok(chunk) if chunk.is_empty() => return,
                    Ok(chunk) => {
                        remaining = remaining.map(|r| r - chunk.len() as u64);
                        Ok(chunk)
                    }
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if tx.blocking_send(item).is_err() || failed {
                    return;
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        Ok(Box::pin(stream))
    }

    async fn delete(&self, location: &str) -> Result<(), AdapterError> {
        let path = self.path_of(location).ok_or_else(|| AdapterError::NotFound(location.to_string()))?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(AdapterError::Storage(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: Vec<Result<&'static [u8], std::io::Error>>) -> ByteStream {
        Box::pin(futures::stream::iter(parts.into_iter().map(|p| p.map(Bytes::from_static))))
    }

    async fn read_all(s: ByteStream) -> Vec<u8> {
        s.map(|c| c.unwrap().to_vec()).concat().await
    }

    #[tokio::test]
    async fn add_get_range_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileAdapter::new("file", dir.path()).unwrap();
        let loc = store.add("img-1", chunks(vec![Ok(b"hello "), Ok(b"world")]), None).await.unwrap();
        assert!(store.owns(&loc));
        assert_eq!(read_all(store.get(&loc, None).await.unwrap()).await, b"hello world");
        let part = store.get(&loc, Some(ByteRange { start: 2, end: 7 })).await.unwrap();
        assert_eq!(read_all(part).await, b"llo wo");
        store.delete(&loc).await.unwrap();
        assert!(matches!(store.get(&loc, None).await, Err(AdapterError::NotFound(_))));
        store.delete(&loc).await.unwrap();
    }

    #[tokio::test]
    async fn reads_span_chunks_and_stop_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileAdapter::new("file", dir.path()).unwrap();
        let data: Vec<u8> = (0..READ_CHUNK * 5 / 2).map(|i| (i % 253) as u8).collect();
        let parts: Vec<Result<Bytes, std::io::Error>> =
            data.chunks(100_000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let loc = store.add("img-3", Box::pin(futures::stream::iter(parts)), None).await.unwrap();
        let whole = store.get(&loc, None).await.unwrap();
        let sizes: Vec<usize> = whole.map(|c| c.unwrap().len()).collect().await;
        assert_eq!(sizes, [READ_CHUNK, READ_CHUNK, READ_CHUNK / 2]);
        let start = READ_CHUNK as u64 - 10;
        let part = store.get(&loc, Some(ByteRange { start, end: start + 19 })).await.unwrap();
        assert_eq!(read_all(part).await, data[start as usize..start as usize + 20]);
        // A reader whose stream is dropped early ends; the file can then go.
        let mut early = store.get(&loc, None).await.unwrap();
        assert!(early.next().await.is_some());
        drop(early);
        store.delete(&loc).await.unwrap();
    }

    #[tokio::test]
    async fn failed_stream_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileAdapter::new("file", dir.path()).unwrap();
        let err = store.add("img-2", chunks(vec![Ok(b"part"), Err(std::io::Error::other("gone"))]), None).await.unwrap_err();
        assert!(matches!(err, AdapterError::Source(_)));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn foreign_locations_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileAdapter::new("file", dir.path()).unwrap();
        assert!(!store.owns("file:///etc/passwd"));
        assert!(!store.owns("http://example.com/x"));
        assert!(matches!(store.get("file:///etc/passwd", None).await, Err(AdapterError::NotFound(_))));
        assert!(store.add("../escape", chunks(vec![]), None).await.is_err());
    }
}
