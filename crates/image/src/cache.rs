//! The image cache of an API node (upstream's `image_cache_dir`): full copies of image data on local disk, so
//! that later downloads through this node do not read the store again.
//!
//! Layout under the cache directory (`<data_dir>/image-cache` by default):
//! * `<image_id>` — the cached data, only ever created by renaming a complete, verified file;
//! * `<image_id>.json` — its [`CacheEntry`] (expected size and md5, hits, last access);
//! * `incomplete/` — data being written while a download streams to its client (or a queued image is fetched);
//! * `queue/<image_id>` — images queued for pre-caching; the service's maintenance task fetches them.
//!
//! Everything is plain files, so `stratus image cache …` works on the directory while the server runs.
//!
//! A cached file is served only when its size matches its entry and the image's size; anything else is removed
//! on sight. [`ImageCache::clean`] also verifies checksums and removes stalled incomplete files;
//! [`ImageCache::prune`] evicts least recently used entries until the cache fits its size limit.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use futures::StreamExt;
use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::adapter::{ByteRange, ByteStream, FileAdapter, StoreAdapter};

const INCOMPLETE: &str = "incomplete";
/// Chunks a cache fill may lag behind the download it copies (with the file store's 1 MiB reads: 8 MiB).
const TEE_DEPTH: usize = 8;
const QUEUE: &str = "queue";
const META_SUFFIX: &str = ".json";

/// How the cache runs.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    pub dir: PathBuf,
    /// Bytes the cache may hold before [`ImageCache::prune`] evicts (upstream's `image_cache_max_size`).
    pub max_size: u64,
    /// An incomplete file untouched this long is abandoned and [`ImageCache::clean`] removes it.
    pub stall_time: Duration,
}

impl CacheConfig {
    /// Upstream's defaults: 10 GiB, one day stall time.
    pub fn new(dir: &Path) -> Self {
        CacheConfig { dir: dir.to_path_buf(), max_size: 10 << 30, stall_time: Duration::from_secs(86_400) }
    }
}

/// One cached image, as `GET /v2/cache` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub image_id: String,
    pub size: u64,
    /// The md5 the data was verified against when cached.
    pub checksum: Option<String>,
    pub hits: u64,
    /// Unix seconds.
    pub last_accessed: f64,
    /// Unix seconds: when the entry was cached.
    pub last_modified: f64,
}

/// Hit and miss counters of this process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

/// What a prune or clean removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub entries: usize,
    pub bytes: u64,
}

/// The image cache. Cheap to clone.
#[derive(Clone)]
pub struct ImageCache {
    inner: Arc<Inner>,
}

struct Inner {
    config: CacheConfig,
    files: FileAdapter,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Images being written into the cache by this process.
    writing: Mutex<HashSet<String>>,
    /// Wakes the maintenance task when an image is queued.
    queued: tokio::sync::Notify,
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Image ids are uuids; anything else never names a cache file.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove image cache file");
    }
}

impl ImageCache {
    /// Opens (creating) the cache directory.
    pub fn open(config: CacheConfig) -> std::io::Result<ImageCache> {
        std::fs::create_dir_all(config.dir.join(INCOMPLETE))?;
        std::fs::create_dir_all(config.dir.join(QUEUE))?;
        let files = FileAdapter::new("cache", &config.dir)?;
        Ok(ImageCache {
            inner: Arc::new(Inner {
                config,
                files,
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                writing: Mutex::new(HashSet::new()),
                queued: tokio::sync::Notify::new(),
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.config.dir
    }

    pub fn max_size(&self) -> u64 {
        self.inner.config.max_size
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats { hits: self.inner.hits.load(Ordering::Relaxed), misses: self.inner.misses.load(Ordering::Relaxed) }
    }

    fn data_path(&self, id: &str) -> PathBuf {
        self.dir().join(id)
    }

    fn meta_path(&self, id: &str) -> PathBuf {
        self.dir().join(format!("{id}{META_SUFFIX}"))
    }

    fn read_meta(&self, id: &str) -> Option<CacheEntry> {
        let text = std::fs::read(self.meta_path(id)).ok()?;
        serde_json::from_slice::<CacheEntry>(&text).ok().filter(|e| e.image_id == id)
    }

    fn write_meta(&self, entry: &CacheEntry) -> std::io::Result<()> {
        let temp =
            self.dir().join(INCOMPLETE).join(format!("{}{META_SUFFIX}-{}", entry.image_id, uuid::Uuid::new_v4()));
        std::fs::write(&temp, serde_json::to_vec(entry).map_err(std::io::Error::other)?)?;
        std::fs::rename(&temp, self.meta_path(&entry.image_id)).inspect_err(|_| remove_quietly(&temp))
    }

    fn remove_entry(&self, id: &str) -> u64 {
        let size = std::fs::metadata(self.data_path(id)).map(|m| m.len()).unwrap_or(0);
        remove_quietly(&self.data_path(id));
        remove_quietly(&self.meta_path(id));
        size
    }

    /// The valid entry for `id`, if any. An entry whose file is missing or whose size does not match its record
    /// (or `expected_size`, when given) is invalid: it is removed.
    pub fn entry(&self, id: &str, expected_size: Option<u64>) -> Option<CacheEntry> {
        if !valid_id(id) {
            return None;
        }
        let data = std::fs::metadata(self.data_path(id));
        let meta = self.read_meta(id);
        match (data, meta) {
            (Err(_), None) => None,
            (Ok(d), Some(m)) if d.is_file() && d.len() == m.size && expected_size.is_none_or(|s| s == m.size) => {
                Some(m)
            }
            _ => {
                tracing::warn!(image_id = %id, "removing an invalid image cache entry");
                self.remove_entry(id);
                None
            }
        }
    }

    /// Serves `id` from the cache when it holds a valid copy of `expected_size` bytes; counts a hit or a miss.
    pub async fn serve(&self, id: &str, expected_size: u64, range: Option<ByteRange>) -> Option<ByteStream> {
        let served = match self.entry(id, Some(expected_size)) {
            Some(mut entry) => {
                let location = format!("file://{}", self.data_path(id).display());
                match self.inner.files.get(&location, range).await {
                    Ok(stream) => {
                        entry.hits += 1;
                        entry.last_accessed = now_secs();
                        if let Err(e) = self.write_meta(&entry) {
                            tracing::warn!(image_id = %id, error = %e, "cannot record an image cache hit");
                        }
                        Some(stream)
                    }
                    Err(e) => {
                        tracing::warn!(image_id = %id, error = %e, "cannot read the image cache");
                        None
                    }
                }
            }
            None => None,
        };
        let counter = if served.is_some() { &self.inner.hits } else { &self.inner.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        served
    }

    /// Starts writing `id` into the cache, unless it is cached already or being written by this process.
    pub async fn writer(&self, id: &str, size: u64, checksum: Option<&str>) -> Option<CacheWriter> {
        if !valid_id(id) || self.entry(id, Some(size)).is_some() {
            return None;
        }
        {
            let mut writing = self.inner.writing.lock().ok()?;
            if !writing.insert(id.to_string()) {
                return None;
            }
        }
        let temp = self.dir().join(INCOMPLETE).join(format!("{id}-{}", uuid::Uuid::new_v4().simple()));
        let guard = WriteGuard { cache: self.clone(), id: id.to_string(), temp: Some(temp.clone()) };
        match tokio::fs::File::create(&temp).await {
            Ok(file) => Some(CacheWriter {
                guard,
                file,
                md5: Md5::new(),
                written: 0,
                size,
                checksum: checksum.map(str::to_string),
            }),
            Err(e) => {
                tracing::warn!(image_id = %id, error = %e, "cannot create an image cache file");
                None
            }
        }
    }

    /// Passes `source` through to the client while a background task writes it into the cache; the entry is
    /// committed once all of the image's bytes are written and verified, and dropped if the client goes away or
    /// anything fails. The client's stream hands each chunk (a reference, not a copy) to the writer through a
    /// bounded channel, so it waits only when the cache's disk falls `TEE_DEPTH` chunks behind, and hashing and
    /// writing run beside it rather than between its chunks.
    pub fn tee(&self, writer: CacheWriter, source: ByteStream) -> ByteStream {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(TEE_DEPTH);
        tokio::spawn(async move {
            let mut writer = writer;
            while let Some(chunk) = rx.recv().await {
                if let Err(e) = writer.write(&chunk).await {
                    tracing::warn!(error = %e, "image cache write failed; not caching this download");
                    return;
                }
                // Commit with the last byte: the server may stop polling once Content-Length bytes went out.
                if writer.written == writer.size {
                    if let Err(e) = writer.commit().await {
                        tracing::warn!(error = %e, "image not cached");
                    }
                    return;
                }
            }
            if writer.written == writer.size
                && let Err(e) = writer.commit().await
            {
                tracing::warn!(error = %e, "image not cached");
            }
            // Otherwise the download stopped short: dropping the writer discards the partial file.
        });
        let stream = futures::stream::unfold((source, Some(tx)), |(mut source, mut tx)| async move {
            match source.next().await {
                Some(Ok(chunk)) => {
                    if let Some(sender) = &tx
                        && sender.send(chunk.clone()).await.is_err()
                    {
                        tx = None; // the writer gave up
                    }
                    Some((Ok(chunk), (source, tx)))
                }
                // A failed source: the writer sees the channel close short of the size and discards the file.
                Some(Err(e)) => Some((Err(e), (source, None))),
                None => None,
            }
        });
        Box::pin(stream)
    }

    /// Every valid entry (invalid ones are removed on the way).
    pub fn list(&self) -> std::io::Result<Vec<CacheEntry>> {
        let mut out = Vec::new();
        for id in self.ids()? {
            if let Some(e) = self.entry(&id, None) {
                out.push(e);
            }
        }
        out.sort_by(|a, b| a.image_id.cmp(&b.image_id));
        Ok(out)
    }

    /// Names of the cache's data and metadata files, as image ids.
    fn ids(&self) -> std::io::Result<Vec<String>> {
        let mut ids = HashSet::new();
        for entry in std::fs::read_dir(self.dir())? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().to_string();
            let id = name.strip_suffix(META_SUFFIX).unwrap_or(&name).to_string();
            if valid_id(&id) {
                ids.insert(id);
            }
        }
        Ok(ids.into_iter().collect())
    }

    /// Total bytes of valid entries.
    pub fn total_size(&self) -> std::io::Result<u64> {
        Ok(self.list()?.iter().map(|e| e.size).sum())
    }

    /// Removes `id` from the cache; whether it was cached.
    pub fn delete(&self, id: &str) -> bool {
        if !valid_id(id) {
            return false;
        }
        let cached = self.data_path(id).exists() || self.meta_path(id).exists();
        self.remove_entry(id);
        cached
    }

    /// Queues `id` for pre-caching.
    pub fn queue(&self, id: &str) -> std::io::Result<()> {
        if !valid_id(id) {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "invalid image id"));
        }
        std::fs::write(self.dir().join(QUEUE).join(id), b"")?;
        self.inner.queued.notify_one();
        Ok(())
    }

    /// Images queued for pre-caching.
    pub fn queued(&self) -> std::io::Result<Vec<String>> {
        let mut ids: Vec<String> = std::fs::read_dir(self.dir().join(QUEUE))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|id| valid_id(id))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Takes `id` off the queue; whether it was queued.
    pub fn dequeue(&self, id: &str) -> bool {
        valid_id(id) && std::fs::remove_file(self.dir().join(QUEUE).join(id)).is_ok()
    }

    /// Resolves when something was queued through this handle.
    pub async fn wait_queued(&self) {
        self.inner.queued.notified().await
    }

    /// Empties the cache and/or the queue; how many entries each lost.
    pub fn clear(&self, cache: bool, queue: bool) -> std::io::Result<(usize, usize)> {
        let mut cleared = (0, 0);
        if cache {
            for id in self.ids()? {
                if self.data_path(&id).exists() {
                    cleared.0 += 1;
                }
                self.remove_entry(&id);
            }
        }
        if queue {
            for id in self.queued()? {
                cleared.1 += usize::from(self.dequeue(&id));
            }
        }
        Ok(cleared)
    }

    /// Evicts least recently used entries until the cache holds at most its size limit.
    pub fn prune(&self) -> std::io::Result<Removed> {
        let mut entries = self.list()?;
        let mut total: u64 = entries.iter().map(|e| e.size).sum();
        let mut removed = Removed::default();
        entries.sort_by(|a, b| a.last_accessed.total_cmp(&b.last_accessed));
        for e in entries {
            if total <= self.max_size() {
                break;
            }
            self.remove_entry(&e.image_id);
            total -= e.size;
            removed.entries += 1;
            removed.bytes += e.size;
            tracing::info!(image_id = %e.image_id, size = e.size, "pruned from the image cache");
        }
        Ok(removed)
    }

    /// Removes invalid entries (missing or wrong-sized data, data without a record, data whose md5 does not
    /// match) and incomplete files untouched for the stall time.
    pub async fn clean(&self) -> std::io::Result<Removed> {
        let mut removed = Removed::default();
        for id in self.ids()? {
            let size = std::fs::metadata(self.data_path(&id)).map(|m| m.len()).unwrap_or(0);
            let valid = match self.entry(&id, None) {
                Some(e) => match &e.checksum {
                    Some(sum) => file_md5(&self.data_path(&id)).await.ok().as_deref() == Some(sum.as_str()),
                    None => true,
                },
                None => false,
            };
            if !valid {
                tracing::warn!(image_id = %id, "removing an invalid image cache entry");
                self.remove_entry(&id);
                removed.entries += 1;
                removed.bytes += size;
            }
        }
        let stall = self.inner.config.stall_time;
        for entry in std::fs::read_dir(self.dir().join(INCOMPLETE))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            let age = meta.modified().ok().and_then(|m| m.elapsed().ok()).unwrap_or_default();
            if age >= stall {
                remove_quietly(&entry.path());
                removed.entries += 1;
                removed.bytes += meta.len();
            }
        }
        Ok(removed)
    }
}

async fn file_md5(path: &Path) -> std::io::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path).await?;
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(hex(&md5.finalize()));
        }
        md5.update(&buf[..n]);
    }
}

/// Removes the temporary file unless committed, and releases the image for other writers.
struct WriteGuard {
    cache: ImageCache,
    id: String,
    temp: Option<PathBuf>,
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            remove_quietly(&temp);
        }
        if let Ok(mut writing) = self.cache.inner.writing.lock() {
            writing.remove(&self.id);
        }
    }
}

/// Writes one image into the cache: data goes to a temporary file, which becomes the entry only once its size
/// and md5 match the image's.
pub struct CacheWriter {
    guard: WriteGuard,
    file: tokio::fs::File,
    md5: Md5,
    written: u64,
    size: u64,
    checksum: Option<String>,
}

impl CacheWriter {
    pub async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.written += chunk.len() as u64;
        if self.written > self.size {
            return Err(std::io::Error::other("more data than the image's size"));
        }
        self.md5.update(chunk);
        self.file.write_all(chunk).await
    }

    /// Verifies and publishes the entry; on a mismatch nothing is cached.
    pub async fn commit(mut self) -> std::io::Result<CacheEntry> {
        self.file.flush().await?;
        let md5 = hex(&std::mem::take(&mut self.md5).finalize());
        if self.written != self.size {
            return Err(std::io::Error::other(format!("got {} of {} bytes", self.written, self.size)));
        }
        if let Some(expected) = &self.checksum
            && *expected != md5
        {
            return Err(std::io::Error::other("checksum mismatch"));
        }
        let cache = self.guard.cache.clone();
        let id = self.guard.id.clone();
        let Some(temp) = self.guard.temp.take() else {
            return Err(std::io::Error::other("cache writer already committed"));
        };
        let now = now_secs();
        let entry = CacheEntry {
            image_id: id.clone(),
            size: self.size,
            checksum: Some(md5),
            hits: 0,
            last_accessed: now,
            last_modified: now,
        };
        // The record first: data without a record is invalid, a record without data is ignored.
        if let Err(e) = cache.write_meta(&entry) {
            remove_quietly(&temp);
            return Err(e);
        }
        if let Err(e) = tokio::fs::rename(&temp, cache.data_path(&id)).await {
            remove_quietly(&temp);
            remove_quietly(&cache.meta_path(&id));
            return Err(e);
        }
        tracing::debug!(image_id = %id, size = entry.size, "image cached");
        if cache.total_size().unwrap_or(0) > cache.max_size()
            && let Err(e) = cache.prune()
        {
            tracing::warn!(error = %e, "image cache prune failed");
        }
        Ok(entry)
    }

    /// Drains `source` into the cache (pre-caching a queued image).
    pub async fn fill(mut self, mut source: ByteStream) -> std::io::Result<CacheEntry> {
        while let Some(chunk) = source.next().await {
            self.write(&chunk?).await?;
        }
        self.commit().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn stream(data: &'static [u8]) -> ByteStream {
        Box::pin(futures::stream::iter(data.chunks(3).map(|c| Ok(Bytes::from_static(c)))))
    }

    fn md5_of(data: &[u8]) -> String {
        hex(&Md5::digest(data))
    }

    #[tokio::test]
    async fn incomplete_or_wrong_data_is_never_published() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::open(CacheConfig::new(dir.path())).unwrap();
        let w = cache.writer("img-1", 11, Some(&md5_of(b"hello world"))).await.unwrap();
        // A second writer for the same image is refused while the first runs.
        assert!(cache.writer("img-1", 11, None).await.is_none());
        assert!(w.fill(stream(b"hello")).await.is_err());
        let w = cache.writer("img-1", 11, Some(&md5_of(b"hello world"))).await.unwrap();
        assert!(w.fill(stream(b"hello WORLD")).await.is_err());
        assert!(cache.list().unwrap().is_empty());
        assert_eq!(std::fs::read_dir(dir.path().join(INCOMPLETE)).unwrap().count(), 0);
        let w = cache.writer("img-1", 11, Some(&md5_of(b"hello world"))).await.unwrap();
        let entry = w.fill(stream(b"hello world")).await.unwrap();
        assert_eq!(cache.list().unwrap(), vec![entry]);
        assert!(cache.writer("img-1", 11, None).await.is_none(), "already cached");
    }

    #[tokio::test]
    async fn invalid_ids_name_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::open(CacheConfig::new(dir.path())).unwrap();
        assert!(cache.queue("../x").is_err());
        assert!(cache.writer("../x", 1, None).await.is_none());
        assert!(!cache.delete("../x"));
    }
}
