//! The proxy logic: accounts, containers and objects over the account/container databases ([`Store`]) and the
//! storage servers the ring places data on ([`ObjectServer`]).
//!
//! An object PUT streams the body once, hashing it with MD5 and writing it to one [`crate::server::DataWriter`]
//! per replica; the data is committed (fsync, rename) on every replica only after the whole body arrived and its
//! ETag checks, and only then is the listing row written. A failure anywhere before that leaves nothing listed.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::SystemTime,
};

use futures::{StreamExt as _, future::BoxFuture};
use md5::{Digest as _, Md5};

use crate::{
    error::Error,
    policy::{Policies, StoragePolicy, ring_file_name},
    ring::{Device, Ring, RingBuilder, hex},
    server::{ByteRange, ByteStream, DataLocation, LocalServer, ObjectServer},
    store::{AccountRow, ContainerRow, Metadata, ObjectRow, Page, Store},
};

/// Swift's constraints (`swift.common.constraints`), as `/info` reports them.
pub mod limits {
    pub const MAX_FILE_SIZE: u64 = 5 * 1024 * 1024 * 1024 + 2;
    pub const MAX_META_NAME_LENGTH: usize = 128;
    pub const MAX_META_VALUE_LENGTH: usize = 256;
    pub const MAX_META_COUNT: usize = 90;
    pub const MAX_META_OVERALL_SIZE: usize = 4096;
    pub const MAX_OBJECT_NAME_LENGTH: usize = 1024;
    pub const MAX_CONTAINER_NAME_LENGTH: usize = 256;
    pub const MAX_ACCOUNT_NAME_LENGTH: usize = 256;
    pub const LISTING_LIMIT: usize = 10000;
}

/// How the object service runs on this node.
#[derive(Clone, Debug)]
pub struct ObjectConfig {
    /// Where the device directories live (`<data_dir>/object`).
    pub devices_dir: PathBuf,
    /// Where the ring files live (`<data_dir>/rings`): `object.ring.json` is storage policy 0's ring,
    /// `object-N.ring.json` policy N's.
    pub ring_dir: PathBuf,
    /// The storage policies (Swift's policy 0 alone when empty).
    pub policies: Vec<StoragePolicy>,
    /// The ring written on first start, when no ring file exists yet: partition power, replicas and device
    /// directory names (each a device of weight 100 in its own zone). Afterwards the ring file rules and
    /// `stratus object ring …` changes it.
    pub part_power: u8,
    pub replicas: usize,
    pub devices: Vec<String>,
}

impl ObjectConfig {
    /// One device, one replica, 2^10 partitions, under `<data_dir>/object`.
    pub fn new(data_dir: &std::path::Path) -> Self {
        ObjectConfig {
            devices_dir: data_dir.join("object"),
            ring_dir: data_dir.join("rings"),
            policies: Vec::new(),
            part_power: 10,
            replicas: 1,
            devices: vec!["d1".into()],
        }
    }

    /// The ring file of storage policy 0.
    pub fn ring_file(&self) -> PathBuf {
        self.ring_file_of(0)
    }

    /// The ring file of a storage policy.
    pub fn ring_file_of(&self, policy: u32) -> PathBuf {
        self.ring_dir.join(ring_file_name(policy))
    }

    /// The builder of a first-start ring.
    pub fn initial_builder(&self) -> Result<RingBuilder, Error> {
        let mut b = RingBuilder::new(self.part_power, self.replicas, 1)?;
        for (i, name) in self.devices.iter().enumerate() {
            b.add_device(Device::local(0, name, 1, i as u32 + 1, 100.0))?;
        }
        b.rebalance(0).map_err(|e| Error::Config(format!("ring: {e}")))?;
        Ok(b)
    }

    /// A policy's ring, written from the configuration first if its file does not exist.
    fn load_or_create_ring(&self, policy: u32) -> Result<(Ring, Option<SystemTime>), Error> {
        let path = self.ring_file_of(policy);
        if !path.exists() {
            self.initial_builder()?.save(&path)?;
            tracing::info!(ring = %path.display(), "object ring created");
        }
        let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        Ok((RingBuilder::load(&path)?.ring()?, mtime))
    }
}

/// A listing entry: an item, or a `subdir` rolled up by a delimiter.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry<T> {
    Item(T),
    Subdir(String),
}

/// Listing parameters, as the query string gives them.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub marker: Option<String>,
    pub end_marker: Option<String>,
    pub limit: usize,
    pub reverse: bool,
}

/// What a PUT carries besides its body.
#[derive(Clone, Debug, Default)]
pub struct PutRequest {
    pub content_type: String,
    /// The client's `ETag`: the body's MD5 must match it.
    pub expected_etag: Option<String>,
    pub metadata: Metadata,
    /// The declared length (`Content-Length`, or the source's size for a copy), checked against quotas up front;
    /// a body without one is checked as it streams.
    pub length: Option<u64>,
    /// A write the service makes on its own behalf (an archived or restored version): not held to quotas, and
    /// not itself versioned.
    pub internal: bool,
}

/// The container metadata keys of Swift's container quotas (`X-Container-Meta-Quota-Bytes`, `-Count`) and the
/// account's byte quota (`X-Account-Meta-Quota-Bytes`, set by resellers only).
pub const QUOTA_BYTES: &str = "quota-bytes";
pub const QUOTA_COUNT: &str = "quota-count";

fn over_quota() -> Error {
    Error::TooLarge("Upload exceeds quota.".into())
}

fn quota_of(m: &Metadata, key: &str) -> Option<i64> {
    m.get(key).filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())).and_then(|v| v.parse().ok())
}

trait Named {
    fn name(&self) -> &str;
}
impl Named for ContainerRow {
    fn name(&self) -> &str {
        &self.name
    }
}
impl Named for ObjectRow {
    fn name(&self) -> &str {
        &self.name
    }
}

/// Microseconds since the epoch.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Swift's `X-Timestamp` of a time in microseconds: seconds with five decimals.
pub fn x_timestamp(micros: i64) -> String {
    format!("{}.{:05}", micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000) / 10)
}

/// Body chunks queued between the hashing loop and the replica writer.
const WRITE_QUEUE: usize = 16;
/// The writer's write size: chunks are gathered up to this before each write.
const WRITE_SIZE: usize = 1 << 20;

/// Past this many bytes an upload's MD5 moves to a thread of its own, so receiving the body, hashing it and
/// writing it run side by side; smaller bodies hash in place, where a hand-over would cost more than the hash.
const HASH_APART: u64 = 1 << 20;

/// The MD5 of a body as it streams by: in place at first, on a blocking thread once the body is large.
enum BodyMd5 {
    InPlace(Md5),
    Apart(tokio::sync::mpsc::Sender<bytes::Bytes>, tokio::task::JoinHandle<Md5>),
}

impl BodyMd5 {
    fn new() -> Self {
        BodyMd5::InPlace(Md5::new())
    }

    /// Adds `chunk`; `seen` is the body's length so far, this chunk included.
    async fn update(&mut self, chunk: &bytes::Bytes, seen: u64) {
        match self {
            BodyMd5::InPlace(md5) if seen <= HASH_APART => md5.update(chunk),
            BodyMd5::InPlace(md5) => {
                let mut md5 = std::mem::take(md5);
                md5.update(chunk);
                let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(WRITE_QUEUE);
                let task = tokio::task::spawn_blocking(move || {
                    while let Some(c) = rx.blocking_recv() {
                        md5.update(&c);
                    }
                    md5
                });
                *self = BodyMd5::Apart(tx, task);
            }
            BodyMd5::Apart(tx, _) => {
                // The thread only ends when the sender is dropped, so a send cannot fail.
                let _ = tx.send(chunk.clone()).await;
            }
        }
    }

    async fn hex(self) -> Result<String, Error> {
        let md5 = match self {
            BodyMd5::InPlace(md5) => md5,
            BodyMd5::Apart(tx, task) => {
                drop(tx);
                task.await.map_err(|e| Error::Io(std::io::Error::other(e)))?
            }
        };
        Ok(hex(&md5.finalize()))
    }
}

/// Writes everything `rx` yields to every replica, in writes of up to [`WRITE_SIZE`]; returns the writers, ready
/// to commit.
async fn write_replicas(
    mut writers: Vec<Box<dyn crate::server::DataWriter>>,
    mut rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
) -> Result<Vec<Box<dyn crate::server::DataWriter>>, Error> {
    let mut pending = bytes::BytesMut::new();
    loop {
        let next = rx.recv().await;
        if let Some(chunk) = &next {
            pending.extend_from_slice(chunk);
        }
        if !pending.is_empty() && (next.is_none() || pending.len() >= WRITE_SIZE) {
            let block = pending.split().freeze();
            for w in writers.iter_mut() {
                w.write(&block).await?;
            }
        }
        if next.is_none() {
            return Ok(writers);
        }
    }
}

/// The object service of one process.
#[derive(Clone)]
pub struct ObjectStore {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    policies: Policies,
    /// Each policy's ring in use; replaced when its file changes (checked by [`ObjectStore::reload_ring`]).
    rings: RwLock<BTreeMap<u32, Arc<Ring>>>,
    ring_files: BTreeMap<u32, PathBuf>,
    ring_mtimes: Mutex<BTreeMap<u32, Option<SystemTime>>>,
    server: Arc<dyn ObjectServer>,
}

impl ObjectStore {
    /// The single-node service: data on local devices under `config.devices_dir`.
    pub fn new(db: db::Database, config: &ObjectConfig) -> Result<Self, Error> {
        let server = Arc::new(LocalServer::new(config.devices_dir.clone()));
        Self::with_server(db, config, server)
    }

    /// The service over any storage server.
    pub fn with_server(db: db::Database, config: &ObjectConfig, server: Arc<dyn ObjectServer>) -> Result<Self, Error> {
        let policies = Policies::new(config.policies.clone())?;
        let (mut rings, mut ring_files, mut ring_mtimes) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for p in policies.all() {
            let (ring, mtime) = config.load_or_create_ring(p.index)?;
            rings.insert(p.index, Arc::new(ring));
            ring_files.insert(p.index, config.ring_file_of(p.index));
            ring_mtimes.insert(p.index, mtime);
        }
        Ok(ObjectStore {
            inner: Arc::new(Inner {
                store: Store::new(db),
                policies,
                rings: RwLock::new(rings),
                ring_files,
                ring_mtimes: Mutex::new(ring_mtimes),
                server,
            }),
        })
    }

    pub async fn migrate(&self) -> Result<(), Error> {
        self.inner.store.migrate().await
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The storage policies.
    pub fn policies(&self) -> &Policies {
        &self.inner.policies
    }

    /// Storage policy 0's ring in use.
    pub fn ring(&self) -> Arc<Ring> {
        self.ring_of(0)
    }

    /// A storage policy's ring in use (policy 0's for an index no longer configured).
    pub fn ring_of(&self, policy: u32) -> Arc<Ring> {
        let rings = self.inner.rings.read().unwrap_or_else(|e| e.into_inner());
        rings.get(&policy).or_else(|| rings.get(&0)).cloned().expect("policy 0 always has a ring")
    }

    /// Loads the ring files again that changed since they were read (as Swift's proxy does every `reload_time`);
    /// returns whether a ring in use changed. A file that cannot be read keeps its ring in use.
    pub fn reload_ring(&self) -> Result<bool, Error> {
        let mut changed = false;
        let mut failure = None;
        let mut seen = self.inner.ring_mtimes.lock().unwrap_or_else(|e| e.into_inner());
        for (&policy, path) in &self.inner.ring_files {
            let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            if mtime.is_none() || seen.get(&policy) == Some(&mtime) {
                continue;
            }
            match RingBuilder::load(path).and_then(|b| b.ring()) {
                Ok(ring) => {
                    seen.insert(policy, mtime);
                    self.inner.rings.write().unwrap_or_else(|e| e.into_inner()).insert(policy, Arc::new(ring));
                    tracing::info!(ring = %path.display(), "object ring reloaded");
                    changed = true;
                }
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) if !changed => Err(e),
            Some(e) => {
                tracing::warn!(error = %e, "cannot reload an object ring");
                Ok(true)
            }
            None => Ok(changed),
        }
    }

    /// The replicator's pass over this node's devices: object data on a device that is not one of its
    /// partition's primaries in its policy's ring (after a rebalance, or on a removed device) is copied to the
    /// primaries that lack it and then removed. Returns how many data files moved.
    pub async fn relocate(&self) -> Result<usize, Error> {
        let server = &self.inner.server;
        let mut moved = 0;
        for policy in self.inner.policies.all().iter().map(|p| p.index) {
            let ring = self.ring_of(policy);
            for device in server.devices().await? {
                for partition in server.partitions(&device, policy).await? {
                    let primaries: Vec<String> = ring.nodes(partition).iter().map(|d| d.name.clone()).collect();
                    if primaries.contains(&device) {
                        continue;
                    }
                    for at in server.data_files(&device, policy, partition).await? {
                        let mut complete = true;
                        for target in &primaries {
                            let to = DataLocation { device: target.clone(), ..at.clone() };
                            if server.exists(&to).await? {
                                continue;
                            }
                            if let Err(e) = self.copy_data(&at, &to).await {
                                tracing::warn!(error = %e, from = %at.device, to = %to.device, "cannot move object data");
                                complete = false;
                            }
                        }
                        if complete {
                            server.delete(&at).await?;
                            moved += 1;
                        }
                    }
                }
            }
        }
        Ok(moved)
    }

    async fn copy_data(&self, from: &DataLocation, to: &DataLocation) -> Result<(), Error> {
        let mut body = self.inner.server.read(from, None).await?;
        let mut w = self.inner.server.create(to).await?;
        while let Some(chunk) = body.next().await {
            w.write(&chunk?).await?;
        }
        w.commit().await
    }

    /// Reloads the ring when its file changes and moves misplaced data, every `interval` (and once at start),
    /// until dropped: Swift's ring reload and object replicator on one node.
    pub async fn run_replicator(self, interval: std::time::Duration) {
        let mut first = true;
        loop {
            let changed = match self.reload_ring() {
                Ok(changed) => changed,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reload the object ring");
                    false
                }
            };
            if changed || first {
                match self.relocate().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(moved = n, "object data moved to its primary devices"),
                    Err(e) => tracing::warn!(error = %e, "object replication pass failed"),
                }
            }
            first = false;
            tokio::time::sleep(interval).await;
        }
    }

    // ---- accounts

    /// The account (if it was ever written) and its usage per storage policy in use: (policy index, containers,
    /// objects, bytes).
    pub async fn account(&self, account: &str) -> Result<(Option<AccountRow>, Vec<(i64, i64, i64, i64)>), Error> {
        let row = self.inner.store.account_get(account).await?;
        let usage = self.inner.store.account_policy_usage(account).await?;
        Ok((row, usage))
    }

    /// Applies metadata updates (an empty value removes a key); creates the account if needed.
    pub async fn update_account_metadata(&self, account: &str, updates: &[(String, String)]) -> Result<(), Error> {
        let now = now_micros();
        let row = self.inner.store.account_ensure(account, now).await?;
        let metadata = apply_updates(row.metadata, updates)?;
        self.inner.store.account_set_metadata(account, &metadata, now).await
    }

    pub async fn list_containers(&self, account: &str, q: &ListQuery) -> Result<Vec<Entry<ContainerRow>>, Error> {
        let store = self.inner.store.clone();
        let account = account.to_string();
        list(q, move |after, from, reverse, limit| {
            let (store, account) = (store.clone(), account.clone());
            Box::pin(async move {
                store.container_page(&account, &Page { after: after.as_deref(), from: &from, reverse, limit }).await
            })
        })
        .await
    }

    // ---- containers

    /// Creates a container (`true`) in the storage policy `policy` names (else the default one), or updates an
    /// existing one's metadata (`false`); an existing container asked for another policy is a conflict.
    pub async fn put_container(
        &self,
        account: &str,
        name: &str,
        policy: Option<&str>,
        updates: &[(String, String)],
    ) -> Result<bool, Error> {
        check_container_name(name)?;
        let now = now_micros();
        self.inner.store.account_ensure(account, now).await?;
        let metadata = apply_updates(Metadata::new(), updates)?;
        let existing = match policy {
            Some(requested) => {
                let asked = self.inner.policies.requested(requested)?;
                self.inner.store.container_get(account, name).await?.map(|c| (c, asked.index))
            }
            None => None,
        };
        if let Some((existing, asked)) = existing {
            if existing.policy_index != i64::from(asked) {
                return Err(Error::Conflict("There was a conflict when trying to complete your request.".into()));
            }
        } else {
            let index = i64::from(self.inner.policies.for_new_container(policy)?.index);
            if self.inner.store.container_create(account, name, &metadata, index, now).await? {
                return Ok(true);
            }
        }
        self.update_container_metadata(account, name, updates).await?;
        Ok(false)
    }

    pub async fn container(&self, account: &str, name: &str) -> Result<ContainerRow, Error> {
        check_container_name(name)?;
        self.inner.store.container_get(account, name).await?.ok_or_else(not_found)
    }

    pub async fn update_container_metadata(
        &self,
        account: &str,
        name: &str,
        updates: &[(String, String)],
    ) -> Result<(), Error> {
        let row = self.container(account, name).await?;
        let metadata = apply_updates(row.metadata, updates)?;
        self.inner.store.container_set_metadata(account, name, &metadata, now_micros()).await
    }

    pub async fn delete_container(&self, account: &str, name: &str) -> Result<(), Error> {
        check_container_name(name)?;
        self.inner.store.container_delete(account, name).await
    }

    pub async fn list_objects(&self, account: &str, container: &str, q: &ListQuery) -> Result<Vec<Entry<ObjectRow>>, Error> {
        self.container(account, container).await?;
        let store = self.inner.store.clone();
        let (account, container) = (account.to_string(), container.to_string());
        list(q, move |after, from, reverse, limit| {
            let (store, account, container) = (store.clone(), account.clone(), container.clone());
            Box::pin(async move {
                let page = Page { after: after.as_deref(), from: &from, reverse, limit };
                store.object_page(&account, &container, &page).await
            })
        })
        .await
    }

    // ---- objects

    fn locations(&self, policy: i64, account: &str, container: &str, name: &str, timestamp: &str) -> Vec<DataLocation> {
        self.placed(policy, account, container, name, timestamp, false)
    }

    /// The primaries' locations in the policy's ring, then (with `handoffs`) every other device's: where a
    /// replica may be found while data moves after a ring change.
    fn placed(&self, policy: i64, account: &str, container: &str, name: &str, timestamp: &str, handoffs: bool) -> Vec<DataLocation> {
        let policy = u32::try_from(policy).unwrap_or(0);
        let ring = self.ring_of(policy);
        let partition = ring.partition(account, Some(container), Some(name));
        let hash = Ring::hash_path(account, Some(container), Some(name));
        let mut devices = ring.nodes(partition);
        if handoffs {
            devices.extend(ring.handoffs(partition));
        }
        devices
            .into_iter()
            .map(|d| DataLocation { policy, device: d.name.clone(), partition, hash: hash.clone(), timestamp: timestamp.into() })
            .collect()
    }

    fn placed_row(&self, row: &ObjectRow, handoffs: bool) -> Vec<DataLocation> {
        self.placed(row.policy_index, &row.account, &row.container, &row.name, &row.timestamp, handoffs)
    }

    /// Stores an object from a stream, durable on a write quorum before it is listed.
    pub async fn put_object(
        &self,
        account: &str,
        container: &str,
        name: &str,
        mut body: ByteStream,
        req: PutRequest,
    ) -> Result<ObjectRow, Error> {
        check_object_name(name)?;
        check_metadata(&req.metadata)?;
        let target = self.container(account, container).await?;
        let room = if req.internal { None } else { self.quota_room(account, &target).await? };
        if let (Some(room), Some(len)) = (room, req.length)
            && len as i64 > room
        {
            return Err(over_quota());
        }
        if !req.internal {
            self.archive_current(&target, name).await?;
        }
        let micros = now_micros();
        let timestamp = format!("{}.{:06}", micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000));
        let locations = self.locations(target.policy_index, account, container, name, &timestamp);
        let mut writers = Vec::with_capacity(locations.len());
        for at in &locations {
            writers.push(self.inner.server.create(at).await?);
        }
        // Hashing here and writing in a task of its own overlap (two cores instead of one); the writer gathers
        // the body's small chunks into large writes. Dropped writers leave nothing behind.
        let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(WRITE_QUEUE);
        let writer = tokio::spawn(write_replicas(writers, rx));
        let mut md5 = BodyMd5::new();
        let mut size: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::UploadInterrupted(e.to_string()))?;
            size += chunk.len() as u64;
            if size > limits::MAX_FILE_SIZE {
                return Err(Error::TooLarge("Your request is too large.".into()));
            }
            if room.is_some_and(|room| size as i64 > room) {
                return Err(over_quota());
            }
            md5.update(&chunk, size).await;
            if tx.send(chunk).await.is_err() {
                break; // the writer failed: its error is reported below
            }
        }
        drop(tx);
        let etag = md5.hex().await?;
        let writers = writer.await.map_err(|e| Error::Io(std::io::Error::other(e)))??;
        if let Some(expected) = &req.expected_etag
            && !expected.trim_matches('"').eq_ignore_ascii_case(&etag)
        {
            return Err(Error::Unprocessable(
                "The server was unable to process the request because the ETag did not match the data.".into(),
            ));
        }
        let quorum = locations.len() / 2 + 1;
        let mut durable = 0;
        for w in writers {
            match w.commit().await {
                Ok(()) => durable += 1,
                Err(e) => tracing::error!(error = %e, "object replica write failed"),
            }
        }
        if durable < quorum {
            for at in &locations {
                let _ = self.inner.server.delete(at).await;
            }
            return Err(Error::Unavailable("The object could not be stored on enough replicas.".into()));
        }
        let row = ObjectRow {
            account: account.into(),
            container: container.into(),
            name: name.into(),
            size: size as i64,
            etag,
            content_type: req.content_type,
            last_modified: micros,
            timestamp: timestamp.clone(),
            metadata: req.metadata,
            policy_index: target.policy_index,
        };
        let listed = self.inner.store.object_put(&row).await;
        match listed {
            Ok(Some(old)) if old.timestamp != timestamp => self.remove_data(&old).await,
            Ok(_) => {}
            Err(e) => {
                for at in &locations {
                    let _ = self.inner.server.delete(at).await;
                }
                return Err(e);
            }
        }
        Ok(row)
    }

    /// How many bytes one more object may add under the container's and the account's quotas (`None`: no quota;
    /// negative when already over); `TooLarge` when the container's object count quota is reached.
    async fn quota_room(&self, account: &str, container: &ContainerRow) -> Result<Option<i64>, Error> {
        if quota_of(&container.metadata, QUOTA_COUNT).is_some_and(|max| container.object_count + 1 > max) {
            return Err(over_quota());
        }
        let mut room = quota_of(&container.metadata, QUOTA_BYTES).map(|max| max - container.bytes_used);
        let account_quota = self.inner.store.account_get(account).await?.and_then(|a| quota_of(&a.metadata, QUOTA_BYTES));
        if let Some(max) = account_quota {
            let (_, _, used) = self.inner.store.account_usage(account).await?;
            room = Some(room.map_or(max - used, |r| r.min(max - used)));
        }
        Ok(room)
    }

    async fn remove_data(&self, row: &ObjectRow) {
        for at in self.placed_row(row, true) {
            if let Err(e) = self.inner.server.delete(&at).await {
                tracing::warn!(error = %e, "cannot remove replaced object data");
            }
        }
    }

    pub async fn object(&self, account: &str, container: &str, name: &str) -> Result<ObjectRow, Error> {
        check_container_name(container)?;
        check_object_name(name)?;
        self.inner.store.object_get(account, container, name).await?.ok_or_else(not_found)
    }

    /// The object's data (or a range of it), from the first replica that has it: primaries first, then handoffs.
    pub async fn read_object(&self, row: &ObjectRow, range: Option<ByteRange>) -> Result<ByteStream, Error> {
        let mut last = None;
        for at in self.placed_row(row, true) {
            match self.inner.server.read(&at, range).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        tracing::error!(error = ?last, "no replica of a listed object could be read");
        Err(Error::Unavailable("The object data is not available.".into()))
    }

    /// Replaces an object's user metadata (and content type when given), as Swift's POST does.
    pub async fn post_object(
        &self,
        account: &str,
        container: &str,
        name: &str,
        content_type: Option<&str>,
        metadata: &Metadata,
    ) -> Result<(), Error> {
        check_metadata(metadata)?;
        let row = self.object(account, container, name).await?;
        let ct = content_type.unwrap_or(&row.content_type);
        // What the service keeps for itself (an SLO's size and ETag) outlives metadata updates.
        let mut metadata = metadata.clone();
        metadata.extend(row.metadata.iter().filter(|(k, _)| k.starts_with("sysmeta:")).map(|(k, v)| (k.clone(), v.clone())));
        if !self.inner.store.object_set_metadata(account, container, name, ct, &metadata, now_micros()).await? {
            return Err(not_found());
        }
        Ok(())
    }

    /// Deletes an object as a client asks: in a versioned container the previous version comes back (or, with a
    /// history location, the object is archived first).
    pub async fn delete_object(&self, account: &str, container: &str, name: &str) -> Result<(), Error> {
        check_container_name(container)?;
        check_object_name(name)?;
        if let Some(row) = self.inner.store.container_get(account, container).await?
            && self.delete_versioned(&row, name).await?
        {
            return Ok(());
        }
        self.remove_object(account, container, name).await
    }

    /// Deletes an object and its data, whatever the container's versioning says.
    pub async fn remove_object(&self, account: &str, container: &str, name: &str) -> Result<(), Error> {
        check_container_name(container)?;
        check_object_name(name)?;
        let row = self.inner.store.object_delete(account, container, name).await?.ok_or_else(not_found)?;
        self.remove_data(&row).await;
        Ok(())
    }

    /// The expirer's pass: deletes every object whose `X-Delete-At` has come, data included (readers stopped
    /// seeing it at once; this reclaims the space). Returns how many were removed.
    pub async fn expire_objects(&self, now: i64) -> Result<usize, Error> {
        let mut removed = 0;
        loop {
            let due = self.inner.store.object_expired_page(now, 100).await?;
            if due.is_empty() {
                return Ok(removed);
            }
            let mut progress = false;
            for row in due {
                // Only the expired version: an object written since stays.
                let gone = self
                    .inner
                    .store
                    .object_delete_version(&row.account, &row.container, &row.name, Some(&row.timestamp))
                    .await?;
                if let Some(gone) = gone {
                    self.remove_data(&gone).await;
                    removed += 1;
                    progress = true;
                }
            }
            if !progress {
                return Ok(removed);
            }
        }
    }

    /// Runs [`ObjectStore::expire_objects`] every `interval`, as Swift's object expirer does, until dropped.
    pub async fn run_expirer(self, interval: std::time::Duration) {
        loop {
            tokio::time::sleep(interval).await;
            match self.expire_objects(chrono::Utc::now().timestamp()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "expired objects removed"),
                Err(e) => tracing::warn!(error = %e, "object expirer pass failed"),
            }
        }
    }

    /// Copies an object server-side (streamed), merging `metadata` over the source's (over nothing when `fresh`,
    /// as `X-Fresh-Metadata: true` asks); returns the source and the copy.
    /// A large object is copied as its assembled content (a plain object), unless `manifest` asks for the manifest
    /// object itself (`?multipart-manifest=get`).
    pub async fn copy_object(
        &self,
        src: (&str, &str, &str),
        dest: (&str, &str, &str),
        content_type: Option<String>,
        metadata: Metadata,
        fresh: bool,
        manifest: bool,
    ) -> Result<(ObjectRow, ObjectRow), Error> {
        let source = self.object(src.0, src.1, src.2).await?;
        let large = if manifest { None } else { self.large_object(&source).await? };
        let mut merged = if fresh {
            source.metadata.iter().filter(|(k, _)| k.starts_with("sysmeta:")).map(|(k, v)| (k.clone(), v.clone())).collect()
        } else {
            source.metadata.clone()
        };
        merged.extend(metadata);
        let (body, expected_etag, length) = match &large {
            Some(large) => {
                crate::large::strip_manifest_metadata(&mut merged);
                (self.read_large(large, None), None, large.size)
            }
            None => (self.read_object(&source, None).await?, Some(source.etag.clone()), source.size as u64),
        };
        let req = PutRequest {
            content_type: content_type.unwrap_or(source.content_type.clone()),
            expected_etag,
            metadata: merged,
            length: Some(length),
            internal: false,
        };
        let copy = self.put_object(dest.0, dest.1, dest.2, body, req).await?;
        Ok((source, copy))
    }
}

fn not_found() -> Error {
    Error::NotFound("The resource could not be found.".into())
}

pub(crate) fn check_container_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.contains('/') {
        return Err(Error::BadRequest("Container name is invalid".into()));
    }
    if name.len() > limits::MAX_CONTAINER_NAME_LENGTH {
        return Err(Error::BadRequest(format!(
            "Container name length of {} longer than {}",
            name.len(),
            limits::MAX_CONTAINER_NAME_LENGTH
        )));
    }
    Ok(())
}

fn check_object_name(name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::BadRequest("Object name is invalid".into()));
    }
    if name.len() > limits::MAX_OBJECT_NAME_LENGTH {
        return Err(Error::BadRequest(format!(
            "Object name length of {} longer than {}",
            name.len(),
            limits::MAX_OBJECT_NAME_LENGTH
        )));
    }
    Ok(())
}

/// Swift's metadata constraints: name and value lengths, count, overall size.
pub fn check_metadata(m: &Metadata) -> Result<(), Error> {
    let mut total = 0;
    // Keys with a `:` are headers the API stores with an object (`header:content-disposition`), not user metadata.
    for (k, v) in m.iter().filter(|(k, _)| !k.contains(':')) {
        if k.is_empty() {
            return Err(Error::BadRequest("Metadata name cannot be empty".into()));
        }
        if k.len() > limits::MAX_META_NAME_LENGTH {
            return Err(Error::BadRequest(format!("Metadata name too long; max {}", limits::MAX_META_NAME_LENGTH)));
        }
        if v.len() > limits::MAX_META_VALUE_LENGTH {
            return Err(Error::BadRequest(format!("Metadata value longer than {}", limits::MAX_META_VALUE_LENGTH)));
        }
        total += k.len() + v.len();
    }
    if m.keys().filter(|k| !k.contains(':')).count() > limits::MAX_META_COUNT {
        return Err(Error::BadRequest(format!("Too many metadata items; max {}", limits::MAX_META_COUNT)));
    }
    if total > limits::MAX_META_OVERALL_SIZE {
        return Err(Error::BadRequest(format!("Total metadata too large; max {}", limits::MAX_META_OVERALL_SIZE)));
    }
    Ok(())
}

fn apply_updates(mut m: Metadata, updates: &[(String, String)]) -> Result<Metadata, Error> {
    for (k, v) in updates {
        if v.is_empty() {
            m.remove(k);
        } else {
            m.insert(k.clone(), v.clone());
        }
    }
    check_metadata(&m)?;
    Ok(m)
}

/// Swift's listing over name-ordered pages: prefix, delimiter roll-up into `subdir`s, markers, limit, reverse.
async fn list<T: Named>(
    q: &ListQuery,
    mut fetch: impl FnMut(Option<String>, String, bool, i64) -> BoxFuture<'static, Result<Vec<T>, Error>>,
) -> Result<Vec<Entry<T>>, Error> {
    if q.limit == 0 {
        return Ok(Vec::new());
    }
    let limit = q.limit.min(limits::LISTING_LIMIT);
    let batch = (limit + 1).clamp(100, limits::LISTING_LIMIT) as i64;
    let mut out: Vec<Entry<T>> = Vec::new();
    let mut cursor: Option<String> = q.marker.clone().filter(|m| !m.is_empty());
    let prefix = q.prefix.as_str();
    let delimiter = q.delimiter.as_deref().filter(|d| !d.is_empty());
    'pages: loop {
        let from = if q.reverse { "" } else { prefix };
        let rows = fetch(cursor.clone(), from.to_string(), q.reverse, batch).await?;
        let full = rows.len() as i64 == batch;
        let mut jumped = false;
        for row in rows {
            let name = row.name().to_string();
            cursor = Some(name.clone());
            if let Some(end) = q.end_marker.as_deref()
                && ((!q.reverse && name.as_str() >= end) || (q.reverse && name.as_str() <= end))
            {
                break 'pages;
            }
            if !name.starts_with(prefix) {
                if (!q.reverse && name.as_str() > prefix) || (q.reverse && name.as_str() < prefix) {
                    break 'pages;
                }
                continue;
            }
            if let Some(d) = delimiter
                && let Some(i) = name[prefix.len()..].find(d)
            {
                let subdir = name[..prefix.len() + i + d.len()].to_string();
                if !matches!(out.last(), Some(Entry::Subdir(s)) if *s == subdir) {
                    out.push(Entry::Subdir(subdir.clone()));
                }
                // Skip the rest of the rolled-up names.
                cursor = Some(if q.reverse { subdir } else { format!("{subdir}\u{10FFFF}") });
                jumped = true;
                if out.len() >= limit {
                    break 'pages;
                }
                break;
            }
            out.push(Entry::Item(row));
            if out.len() >= limit {
                break 'pages;
            }
        }
        if !full && !jumped {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small bodies hash in place, large ones move to a thread part-way; either way the ETag is the body's MD5.
    #[tokio::test]
    async fn a_streamed_body_md5_matches_the_whole_body_in_place_or_apart() {
        for (len, chunk) in [(0usize, 1usize), (1000, 333), (HASH_APART as usize, 4096), (3 * HASH_APART as usize + 5, 65_536)] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            let mut md5 = BodyMd5::new();
            let mut seen = 0u64;
            for c in data.chunks(chunk) {
                seen += c.len() as u64;
                md5.update(&bytes::Bytes::copy_from_slice(c), seen).await;
            }
            assert_eq!(matches!(md5, BodyMd5::Apart(..)), len as u64 > HASH_APART, "{len}");
            assert_eq!(md5.hex().await.unwrap(), hex(&Md5::digest(&data)), "{len}");
        }
    }

    #[test]
    fn x_timestamps_look_like_swifts() {
        assert_eq!(x_timestamp(1_700_000_000_123_456), "1700000000.12345");
        assert_eq!(x_timestamp(1_000_000), "1.00000");
    }

    #[test]
    fn metadata_limits() {
        let mut m = Metadata::new();
        m.insert("a".repeat(129), "v".into());
        assert!(check_metadata(&m).is_err());
        let m: Metadata = (0..91).map(|i| (format!("k{i}"), "v".to_string())).collect();
        assert!(check_metadata(&m).is_err());
        let m: Metadata = (0..20).map(|i| (format!("k{i}"), "v".repeat(250))).collect();
        assert!(check_metadata(&m).is_err(), "over 4096 bytes in total");
        assert!(check_metadata(&Metadata::from([("k".into(), "v".into())])).is_ok());
    }

    #[test]
    fn quotas_are_non_negative_integers() {
        let m = Metadata::from([("quota-bytes".into(), "10".into()), ("quota-count".into(), "-1".into())]);
        assert_eq!(quota_of(&m, QUOTA_BYTES), Some(10));
        assert_eq!(quota_of(&m, QUOTA_COUNT), None, "not a quota");
        assert_eq!(quota_of(&Metadata::new(), QUOTA_BYTES), None);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_container_name(&"c".repeat(256)).is_ok());
        assert!(check_container_name(&"c".repeat(257)).is_err());
        assert!(check_container_name("a/b").is_err());
        assert!(check_object_name(&"o".repeat(1025)).is_err());
    }
}
