//! The image service's logic: visibility, image life cycle (queued → saving → active ⇄ deactivated; queued →
//! uploading → importing → active), data streaming with hashing and quotas, members.
//!
//! Policy is enforced by the API layer; this layer enforces what is not policy: who can see an image, state
//! transitions, protection, quotas.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use futures::StreamExt;
use md5::Md5;
use sha2::Sha512;

use crate::{
    adapter::{AdapterError, ByteRange, ByteStream, FileAdapter, HttpAdapter, StoreAdapter},
    cache::{CacheConfig, ImageCache},
    error::Error,
    model::{ListQuery, sort_images},
    store::{DataRecord, ImageRow, MemberRow, Store, TaskRow, now_micros},
};

/// How the image service runs.
#[derive(Clone, Debug)]
pub struct ImageConfig {
    /// Directory of the `file` store.
    pub images_dir: PathBuf,
    /// Directory where `glance-direct` imports stage their data.
    pub staging_dir: PathBuf,
    /// Most images a project may own; negative: unlimited.
    pub image_count_total: i64,
    /// Most image data (MiB) a project may store; negative: unlimited.
    pub image_size_total: i64,
    /// Largest single image, in bytes.
    pub image_size_cap: u64,
    /// Import methods offered (`glance-direct`, `web-download`), as upstream's `enabled_import_methods`.
    pub import_methods: Vec<String>,
    /// The API node's image cache; `None` disables it.
    pub cache: Option<CacheConfig>,
    /// The stores image data may go to, by id (upstream's `enabled_backends`): `file`, and any store handed to
    /// [`Image::with_stores`] (such as `object`).
    pub enabled_backends: Vec<String>,
    /// The store uploads and imports go to unless they name one (upstream's `default_backend`).
    pub default_backend: String,
}

impl ImageConfig {
    pub fn new(data_dir: &std::path::Path) -> Self {
        ImageConfig {
            images_dir: data_dir.join("images"),
            staging_dir: data_dir.join("images").join("staging"),
            image_count_total: -1,
            image_size_total: -1,
            image_size_cap: 1 << 40,
            import_methods: vec!["glance-direct".into()],
            cache: Some(CacheConfig::new(&data_dir.join("image-cache"))),
            enabled_backends: vec!["file".into()],
            default_backend: "file".into(),
        }
    }
}

/// An import request: the method, and what the task records about it.
#[derive(Clone, Debug)]
pub struct ImportRequest {
    pub method: String,
    /// The source URL of a `web-download` import.
    pub uri: Option<String>,
    /// The request body, kept as the task's input.
    pub input: serde_json::Value,
    pub request_id: Option<String>,
    pub user_id: Option<String>,
    /// The stores to import into (empty: the default store).
    pub stores: Vec<String>,
    /// Whether a failure in any of `stores` fails the whole import (upstream's `all_stores_must_succeed`).
    pub all_stores_must_succeed: bool,
}

/// Who is asking, as far as visibility goes.
#[derive(Clone, Debug)]
pub struct Caller {
    pub project_id: Option<String>,
    /// The `context_is_admin` outcome: admins see every image.
    pub is_admin: bool,
}

impl Caller {
    pub fn owns(&self, img: &ImageRow) -> bool {
        self.project_id.is_some() && self.project_id == img.owner
    }
}

/// The image service. Cheap to clone.
#[derive(Clone)]
pub struct Image {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// The enabled stores, in configuration order.
    stores: Vec<Arc<dyn StoreAdapter>>,
    default_store: Arc<dyn StoreAdapter>,
    staging: FileAdapter,
    http: HttpAdapter,
    cache: Option<ImageCache>,
    config: ImageConfig,
}

/// Counts bytes as they stream through, keeps the first ones, and cuts the stream off past a size limit.
#[derive(Default)]
struct Meter {
    size: u64,
    head: Vec<u8>,
    over_limit: bool,
}

const HEAD_BYTES: usize = 512;

impl Meter {
    fn record(&mut self, chunk: &[u8], limit: u64) -> Result<(), std::io::Error> {
        self.size += chunk.len() as u64;
        if self.size > limit {
            self.over_limit = true;
            return Err(std::io::Error::other("image size limit exceeded"));
        }
        if self.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        Ok(())
    }
}

/// Chunks a hashing thread may lag behind the upload.
const HASH_DEPTH: usize = 16;

/// A digest computed on its own blocking thread from the chunks sent to it (references, not copies), so that
/// md5 and sha512 run beside each other and beside the transfer instead of between its chunks.
fn hash_thread<D: md5::Digest + Send + 'static>() -> (
    tokio::sync::mpsc::Sender<Bytes>,
    tokio::task::JoinHandle<String>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(HASH_DEPTH);
    let handle = tokio::task::spawn_blocking(move || {
        let mut digest = D::new();
        while let Some(chunk) = rx.blocking_recv() {
            digest.update(&chunk);
        }
        hex(&digest.finalize())
    });
    (tx, handle)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The virtual size of a disk image from its first bytes: qcow2's header field, or the data size for raw images.
pub fn virtual_size(head: &[u8], size: u64, disk_format: Option<&str>) -> Option<i64> {
    if head.len() >= 32 && head.starts_with(b"QFI\xfb") {
        let mut field = [0u8; 8];
        field.copy_from_slice(&head[24..32]);
        return i64::try_from(u64::from_be_bytes(field)).ok();
    }
    match disk_format {
        Some("raw") | Some("iso") => i64::try_from(size).ok(),
        _ => None,
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("No image found with ID {id}"))
}

impl Image {
    /// The service over `db`, with the `file` store in `config.images_dir`.
    pub fn new(db: db::Database, config: ImageConfig) -> Result<Image, Error> {
        Self::with_stores(db, config, Vec::new())
    }

    /// The service over `db` with the stores `config.enabled_backends` names: `file` in `config.images_dir`, the
    /// others from `extra` (by id).
    pub fn with_stores(
        db: db::Database,
        config: ImageConfig,
        extra: Vec<Arc<dyn StoreAdapter>>,
    ) -> Result<Image, Error> {
        let mut stores: Vec<Arc<dyn StoreAdapter>> = Vec::new();
        for id in &config.enabled_backends {
            if stores.iter().any(|s| s.id() == id) {
                return Err(Error::Config(format!("enabled_backends: store '{id}' is listed twice")));
            }
            let store: Arc<dyn StoreAdapter> = match extra.iter().find(|s| s.id() == id) {
                Some(s) => s.clone(),
                None if id == "file" => Arc::new(FileAdapter::new("file", &config.images_dir)?),
                None => return Err(Error::Config(format!("enabled_backends: store '{id}' is not configured"))),
            };
            stores.push(store);
        }
        let default_store = stores
            .iter()
            .find(|s| s.id() == config.default_backend)
            .cloned()
            .ok_or_else(|| {
                Error::Config(format!("default_backend '{}' is not in enabled_backends", config.default_backend))
            })?;
        let staging = FileAdapter::new("staging", &config.staging_dir)?;
        let http = HttpAdapter::new().map_err(|e| Error::Config(e.to_string()))?;
        let cache = config.cache.clone().map(ImageCache::open).transpose()?;
        Ok(Image { inner: Arc::new(Inner { store: Store::new(db), stores, default_store, staging, http, cache, config }) })
    }

    /// The API node's image cache, when enabled.
    pub fn cache(&self) -> Option<&ImageCache> {
        self.inner.cache.as_ref()
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The enabled stores, in configuration order.
    pub fn adapters(&self) -> Vec<Arc<dyn StoreAdapter>> {
        self.inner.stores.clone()
    }

    /// The id of the store data goes to unless a request names one.
    pub fn default_store(&self) -> &str {
        self.inner.default_store.id()
    }

    /// An enabled store by id.
    fn enabled_store(&self, id: &str) -> Option<&Arc<dyn StoreAdapter>> {
        self.inner.stores.iter().find(|s| s.id() == id)
    }

    /// The store an upload goes to: `requested` (it must be enabled and writable), else the default store.
    pub fn target_store(&self, requested: Option<&str>) -> Result<Arc<dyn StoreAdapter>, Error> {
        let Some(id) = requested else { return Ok(self.inner.default_store.clone()) };
        match self.enabled_store(id) {
            Some(s) if s.read_only() => Err(Error::Forbidden(format!("Store {id} is read-only."))),
            Some(s) => Ok(s.clone()),
            None => Err(Error::BadRequest(format!("Store for identifier {id} not found"))),
        }
    }

    /// The stores an import goes to: every writable store (`all_stores`), the listed `stores`, the store named
    /// by the `X-Image-Meta-Store` header, or else the default one. Checked before anything starts.
    pub fn import_stores(
        &self,
        all_stores: bool,
        stores: Option<Vec<String>>,
        header: Option<&str>,
    ) -> Result<Vec<String>, Error> {
        if all_stores && stores.is_some() {
            return Err(Error::BadRequest("Only one of 'all_stores' and 'stores' may be given.".into()));
        }
        let ids: Vec<String> = if all_stores {
            self.inner.stores.iter().filter(|s| !s.read_only()).map(|s| s.id().to_string()).collect()
        } else if let Some(list) = stores {
            if list.is_empty() {
                return Err(Error::BadRequest("'stores' must name at least one store.".into()));
            }
            list
        } else {
            vec![header.unwrap_or(self.default_store()).to_string()]
        };
        let mut out: Vec<String> = Vec::new();
        for id in ids {
            self.target_store(Some(&id))?;
            if !out.contains(&id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// The store behind a recorded location.
    fn store_of(&self, store_id: &str, location: &str) -> Option<Arc<dyn StoreAdapter>> {
        self.enabled_store(store_id)
            .filter(|s| s.owns(location))
            .or_else(|| self.inner.stores.iter().find(|s| s.owns(location)))
            .cloned()
    }

    /// Opens an image's data from the first of its locations that serves it.
    async fn open_data(&self, img: &ImageRow, range: Option<ByteRange>) -> Result<ByteStream, Error> {
        let mut last = None;
        for (store_id, location) in img.locations() {
            let Some(store) = self.store_of(&store_id, &location) else {
                tracing::warn!(image_id = %img.id, store = %store_id, "image data in a store that is not enabled");
                continue;
            };
            match store.get(&location, range).await {
                Ok(stream) => return Ok(stream),
                Err(e) => {
                    tracing::warn!(image_id = %img.id, store = %store_id, error = %e, "cannot read image data");
                    last = Some(e);
                }
            }
        }
        match last {
            Some(AdapterError::NotFound(_)) | None => {
                Err(Error::NotFound(format!("Image data for {} is missing.", img.id)))
            }
            Some(e) => Err(Error::Io(std::io::Error::other(e.to_string()))),
        }
    }

    /// The import methods this service offers.
    pub fn import_methods(&self) -> &[String] {
        &self.inner.config.import_methods
    }

    pub async fn migrate(&self) -> Result<(), Error> {
        self.inner.store.migrate().await
    }

    /// After a restart: uploads that were in flight did not finish, so their images go back to `queued`.
    pub async fn recover(&self) -> Result<(), Error> {
        for (from, to) in [("saving", "queued"), ("importing", "queued"), ("uploading", "queued")] {
            for id in self.inner.store.image_ids_with_status(from).await? {
                if self.inner.store.image_transition(&id, from, to).await? {
                    tracing::warn!(image_id = %id, from, "interrupted image upload reset to queued");
                }
            }
        }
        Ok(())
    }

    /// The caller's membership status on `img`, if any.
    pub async fn membership(&self, caller: &Caller, img: &ImageRow) -> Result<Option<String>, Error> {
        match &caller.project_id {
            Some(p) => Ok(self.inner.store.member_get(&img.id, p).await?.map(|m| m.status)),
            None => Ok(None),
        }
    }

    /// An image the caller may see; 404 otherwise, as upstream hides what one may not see.
    pub async fn get_visible(&self, caller: &Caller, id: &str) -> Result<ImageRow, Error> {
        let img = self.inner.store.image_get(id).await?.ok_or_else(|| not_found(id))?;
        if caller.is_admin || caller.owns(&img) || matches!(img.visibility.as_str(), "public" | "community") {
            return Ok(img);
        }
        if img.visibility == "shared" && self.membership(caller, &img).await?.is_some() {
            return Ok(img);
        }
        Err(not_found(id))
    }

    /// Creates an image after checking the owner's image-count quota.
    pub async fn create(&self, img: ImageRow) -> Result<ImageRow, Error> {
        if let Some(owner) = &img.owner {
            let limit = self.inner.config.image_count_total;
            if limit >= 0 {
                let (count, _) = self.inner.store.project_usage(owner).await?;
                if count + 1 > limit {
                    return Err(Error::TooLarge(format!(
                        "Resource image_count_total is over limit of {limit} due to current usage {count} and delta 1"
                    )));
                }
            }
        }
        self.inner.store.image_insert(&img).await?;
        Ok(img)
    }

    /// The caller's view of the image list: visibility rules, then filters, sorting and the page.
    /// Returns the page and whether more follow.
    pub async fn list(&self, caller: &Caller, q: &ListQuery) -> Result<(Vec<ImageRow>, bool), Error> {
        let scope = if caller.is_admin { None } else { caller.project_id.as_deref() };
        if !caller.is_admin && scope.is_none() {
            return Ok((Vec::new(), false));
        }
        let images = self.inner.store.image_list(scope).await?;
        let memberships = match &caller.project_id {
            Some(p) => self.inner.store.member_statuses(p).await?,
            None => Default::default(),
        };
        let member_ok = |img: &ImageRow| {
            memberships.get(&img.id).is_some_and(|s| q.member_status == "all" || *s == q.member_status)
        };
        let mut out: Vec<ImageRow> = images
            .into_iter()
            .filter(|img| {
                let owned = caller.owns(img);
                let listed = match q.visibility.as_deref() {
                    None => {
                        if img.visibility == "community" {
                            owned
                        } else if caller.is_admin || owned || img.visibility == "public" {
                            true
                        } else {
                            img.visibility == "shared" && member_ok(img)
                        }
                    }
                    Some(v) => {
                        let vis_ok = v == "all" || img.visibility == v;
                        vis_ok
                            && (caller.is_admin
                                || owned
                                || matches!(img.visibility.as_str(), "public" | "community")
                                || (img.visibility == "shared" && member_ok(img)))
                    }
                };
                listed && q.matches(img)
            })
            .collect();
        sort_images(&mut out, &q.sort);
        let start = match &q.marker {
            None => 0,
            Some(m) => {
                out.iter()
                    .position(|i| &i.id == m)
                    .ok_or_else(|| Error::BadRequest(format!("marker [{m}] not found")))?
                    + 1
            }
        };
        let rest: Vec<ImageRow> = out.into_iter().skip(start).collect();
        let more = rest.len() > q.limit;
        Ok((rest.into_iter().take(q.limit).collect(), more))
    }

    /// Writes changed metadata, unless an upload changed the image's status meanwhile.
    pub async fn update(&self, mut img: ImageRow, status_seen: &str) -> Result<ImageRow, Error> {
        img.updated_at = now_micros();
        if !self.inner.store.image_update(&img, status_seen).await? {
            return Err(Error::Conflict(format!("Image {} was changed by another request; retry.", img.id)));
        }
        self.inner.store.image_get(&img.id).await?.ok_or_else(|| not_found(&img.id))
    }

    /// Deletes an image and its data. Protected images cannot be deleted.
    pub async fn delete(&self, img: &ImageRow) -> Result<(), Error> {
        if img.protected {
            return Err(Error::Forbidden(format!("Image {} is protected and cannot be deleted.", img.id)));
        }
        if !self.inner.store.image_delete(&img.id).await? {
            return Err(not_found(&img.id));
        }
        for (store_id, location) in img.locations() {
            let result = match self.store_of(&store_id, &location) {
                Some(store) => store.delete(&location).await,
                None => Err(AdapterError::NotFound(location.clone())),
            };
            if let Err(e) = result {
                tracing::warn!(image_id = %img.id, store = %store_id, error = %e, "cannot delete image data");
            }
        }
        let _ = self.inner.staging.delete(&staging_location(&self.inner.staging, &img.id)).await;
        if let Some(cache) = &self.inner.cache {
            cache.delete(&img.id);
            cache.dequeue(&img.id);
        }
        Ok(())
    }

    pub async fn deactivate(&self, img: &ImageRow) -> Result<(), Error> {
        match img.status.as_str() {
            "deactivated" => Ok(()),
            "active" => {
                if self.inner.store.image_transition(&img.id, "active", "deactivated").await? {
                    Ok(())
                } else {
                    Err(Error::Conflict("The image changed state meanwhile; retry.".into()))
                }
            }
            s => Err(Error::Forbidden(format!("Not allowed to deactivate image in status '{s}'"))),
        }
    }

    pub async fn reactivate(&self, img: &ImageRow) -> Result<(), Error> {
        match img.status.as_str() {
            "active" => Ok(()),
            "deactivated" => {
                if self.inner.store.image_transition(&img.id, "deactivated", "active").await? {
                    Ok(())
                } else {
                    Err(Error::Conflict("The image changed state meanwhile; retry.".into()))
                }
            }
            s => Err(Error::Forbidden(format!("Not allowed to reactivate image in status '{s}'"))),
        }
    }

    /// Bytes the owner may still store, under both the size cap and the project's total-size quota.
    async fn upload_limit(&self, img: &ImageRow) -> Result<u64, Error> {
        let mut limit = self.inner.config.image_size_cap;
        let quota = self.inner.config.image_size_total;
        if quota >= 0 {
            let owner = img.owner.as_deref().unwrap_or_default();
            let (_, used) = self.inner.store.project_usage(owner).await?;
            let remaining = (quota.saturating_mul(1024 * 1024) - used).max(0);
            limit = limit.min(remaining as u64);
        }
        Ok(limit)
    }

    fn check_formats(img: &ImageRow) -> Result<(), Error> {
        if img.disk_format.is_none() || img.container_format.is_none() {
            return Err(Error::BadRequest(
                "Properties disk_format, container_format must be set prior to saving data.".into(),
            ));
        }
        Ok(())
    }

    /// `DELETE /v2/stores/{store_id}/{image_id}`: removes an active image's data from one store; its data must
    /// remain in another.
    pub async fn delete_from_store(&self, img: &ImageRow, store_id: &str) -> Result<(), Error> {
        let store = self
            .enabled_store(store_id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("The selected store {store_id} is not available on this node.")))?;
        if img.status != "active" {
            return Err(Error::Conflict(format!(
                "It's not allowed to remove image data from store if image status is not 'active'; image {} is {}.",
                img.id, img.status
            )));
        }
        let locations = img.locations();
        let Some((_, location)) = locations.iter().find(|(s, _)| s == store_id).cloned() else {
            return Err(Error::NotFound(format!("Image {} is not present in store {store_id}.", img.id)));
        };
        if locations.len() == 1 {
            return Err(Error::Conflict(
                "Cannot delete image data from the only store containing it. Consider deleting the image instead."
                    .into(),
            ));
        }
        if store.read_only() {
            return Err(Error::Forbidden(format!("Store {store_id} is read-only.")));
        }
        let rest: Vec<(String, String)> = locations.into_iter().filter(|(s, _)| s != store_id).collect();
        if !self.inner.store.image_set_locations(img, &rest).await? {
            return Err(Error::Conflict(format!("Image {} was changed by another request; retry.", img.id)));
        }
        if let Err(e) = store.delete(&location).await {
            tracing::warn!(image_id = %img.id, store = %store_id, error = %e, "cannot delete image data");
        }
        Ok(())
    }

    /// `PUT /v2/images/{id}/file`: streams `data` into `store` (or the default store) while hashing it. The image
    /// goes queued → saving → active; on any failure it returns to queued and no data is kept. A second upload is
    /// a conflict. `size` is the announced size, if any.
    pub async fn upload(
        &self,
        img: &ImageRow,
        data: ByteStream,
        store: Option<&str>,
        size: Option<u64>,
    ) -> Result<(), Error> {
        let target = self.target_store(store)?;
        Self::check_formats(img)?;
        if img.status != "queued" {
            return Err(Error::Conflict(format!(
                "Image status transition from {} to saving is not allowed",
                img.status
            )));
        }
        let limit = self.upload_limit(img).await?;
        if !self.inner.store.image_transition(&img.id, "queued", "saving").await? {
            return Err(Error::Conflict("Image status transition from saving to saving is not allowed".into()));
        }
        self.store_data(img.clone(), data, limit, "saving", target, size).await
    }

    /// Streams `data` to the store and activates the image (status `from` → active), or puts it back to queued.
    /// Runs as its own task, so a client that disconnects cannot leave the image half-way.
    async fn store_data(
        &self,
        img: ImageRow,
        data: ByteStream,
        limit: u64,
        from: &'static str,
        adapter: Arc<dyn StoreAdapter>,
        size: Option<u64>,
    ) -> Result<(), Error> {
        let this = self.clone();
        let task = tokio::spawn(async move {
            let meter = Arc::new(Mutex::new(Meter::default()));
            let m = meter.clone();
            let (md5_tx, md5) = hash_thread::<Md5>();
            let (sha_tx, sha512) = hash_thread::<Sha512>();
            let metered: ByteStream = Box::pin(data.then(move |chunk| {
                let (m, md5_tx, sha_tx) = (m.clone(), md5_tx.clone(), sha_tx.clone());
                async move {
                    let chunk: Bytes = chunk?;
                    m.lock().map_err(|_| std::io::Error::other("meter poisoned"))?.record(&chunk, limit)?;
                    let gone = || std::io::Error::other("image hashing stopped");
                    md5_tx.send(chunk.clone()).await.map_err(|_| gone())?;
                    sha_tx.send(chunk.clone()).await.map_err(|_| gone())?;
                    Ok(chunk)
                }
            }));
            let stored = adapter.add(&img.id, metered, size).await;
            let finished = {
                let mut meter = meter.lock().map_err(|_| Error::Io(std::io::Error::other("meter poisoned")))?;
                let meter = std::mem::take(&mut *meter);
                (meter.over_limit, meter)
            };
            let (over_limit, meter) = finished;
            let joined = |h: tokio::task::JoinHandle<String>| async move {
                h.await.map_err(|e| Error::Io(std::io::Error::other(e.to_string())))
            };
            match stored {
                Ok(location) => {
                    // The stream (and with it the hashers' senders) is gone once `add` returned.
                    let (checksum, os_hash_value) = (joined(md5).await?, joined(sha512).await?);
                    let record = DataRecord {
                        size: meter.size as i64,
                        virtual_size: virtual_size(&meter.head, meter.size, img.disk_format.as_deref()),
                        checksum,
                        os_hash_algo: "sha512".into(),
                        os_hash_value,
                        store_id: adapter.id().to_string(),
                        location: location.clone(),
                    };
                    if this.inner.store.image_activate(&img.id, from, &record).await? {
                        Ok(())
                    } else {
                        // Deleted (or otherwise moved on) while uploading: drop the data.
                        let _ = adapter.delete(&location).await;
                        Err(Error::Conflict(format!("Image {} was deleted or changed during the upload.", img.id)))
                    }
                }
                Err(e) => {
                    this.inner.store.image_transition(&img.id, from, "queued").await?;
                    Err(match e {
                        AdapterError::Source(_) if over_limit => Error::TooLarge(format!(
                            "Image exceeds the storage quota: at most {limit} more bytes may be stored."
                        )),
                        AdapterError::Source(e) => Error::UploadInterrupted(e.to_string()),
                        AdapterError::Storage(e) => Error::Io(e),
                        other => Error::Io(std::io::Error::other(other.to_string())),
                    })
                }
            }
        });
        task.await.map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?
    }

    /// Streams an image's data (or a range of it). `None` when the image has no data yet.
    /// With the cache enabled, a cached copy is served instead of the store's, and a whole-image download of an
    /// uncached image is written into the cache as it streams.
    pub async fn download(&self, img: &ImageRow, range: Option<ByteRange>) -> Result<Option<ByteStream>, Error> {
        if img.location.is_none() {
            return Ok(None);
        }
        let size = img.size.and_then(|s| u64::try_from(s).ok());
        let mut writer = None;
        if let (Some(cache), Some(size)) = (&self.inner.cache, size) {
            if let Some(stream) = cache.serve(&img.id, size, range).await {
                return Ok(Some(stream));
            }
            if range.is_none() && img.status == "active" {
                writer = cache.writer(&img.id, size, img.checksum.as_deref()).await;
            }
        }
        let s = self.open_data(img, range).await?;
        match (writer, &self.inner.cache) {
            (Some(w), Some(cache)) => Ok(Some(cache.tee(w, s))),
            _ => Ok(Some(s)),
        }
    }

    /// `PUT /v2/cache/{id}`: queues an active image for pre-caching. 404 for an unknown image, 400 unless active.
    pub async fn cache_queue(&self, id: &str) -> Result<(), Error> {
        let cache = self.inner.cache.as_ref().ok_or_else(cache_disabled)?;
        let img = self.inner.store.image_get(id).await?.ok_or_else(|| not_found(id))?;
        if img.status != "active" {
            return Err(Error::BadRequest(format!(
                "Only images with status active can be targeted for queueing; image {id} is {}.",
                img.status
            )));
        }
        cache.queue(id)?;
        Ok(())
    }

    /// Fetches every queued image into the cache (images gone or not active are dropped from the queue);
    /// how many were cached.
    pub async fn precache_queued(&self) -> Result<usize, Error> {
        let Some(cache) = &self.inner.cache else {
            return Ok(0);
        };
        let mut cached = 0;
        for id in cache.queued()? {
            let img = self.inner.store.image_get(&id).await?;
            if let Some(img) = img.filter(|i| i.status == "active")
                && let (Some(_), Some(size)) = (&img.location, img.size.and_then(|s| u64::try_from(s).ok()))
                && let Some(writer) = cache.writer(&id, size, img.checksum.as_deref()).await
            {
                let result = match self.open_data(&img, None).await {
                    Ok(source) => writer.fill(source).await.map(|_| ()),
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                };
                match result {
                    Ok(()) => cached += 1,
                    Err(e) => tracing::warn!(image_id = %id, error = %e, "cannot pre-cache image"),
                }
            }
            cache.dequeue(&id);
        }
        Ok(cached)
    }

    /// The cache's upkeep, forever: pre-caches queued images as soon as they are queued (and every `interval`,
    /// for images queued by another process), prunes to the size limit and cleans stalled files every `interval`.
    pub async fn maintain_cache(self, interval: std::time::Duration) {
        let Some(cache) = self.inner.cache.clone() else {
            return;
        };
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let periodic = tokio::select! {
                _ = tick.tick() => true,
                _ = cache.wait_queued() => false,
            };
            if let Err(e) = self.precache_queued().await {
                tracing::warn!(error = %e, "image pre-caching failed");
            }
            if periodic {
                if let Err(e) = cache.prune() {
                    tracing::warn!(error = %e, "image cache prune failed");
                }
                if let Err(e) = cache.clean().await {
                    tracing::warn!(error = %e, "image cache clean failed");
                }
            }
        }
    }

    /// `PUT /v2/images/{id}/stage`: keeps the data in the staging area; the image goes queued → uploading.
    pub async fn stage(&self, img: &ImageRow, data: ByteStream) -> Result<(), Error> {
        if img.status != "queued" {
            return Err(Error::Conflict(format!(
                "Image status transition from {} to uploading is not allowed",
                img.status
            )));
        }
        if !self.inner.store.image_transition(&img.id, "queued", "uploading").await? {
            return Err(Error::Conflict("Image status transition from uploading to uploading is not allowed".into()));
        }
        let limit = self.upload_limit(img).await?;
        let this = self.clone();
        let id = img.id.clone();
        let task = tokio::spawn(async move {
            let mut size = 0u64;
            let limited: ByteStream = Box::pin(data.map(move |c| {
                let c = c?;
                size += c.len() as u64;
                if size > limit { Err(std::io::Error::other("image size limit exceeded")) } else { Ok(c) }
            }));
            match this.inner.staging.add(&id, limited, None).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    this.inner.store.image_transition(&id, "uploading", "queued").await?;
                    Err(match e {
                        AdapterError::Source(e) if e.to_string().contains("limit") => {
                            Error::TooLarge("Image exceeds the storage quota.".into())
                        }
                        AdapterError::Source(e) => Error::UploadInterrupted(e.to_string()),
                        other => Error::Io(std::io::Error::other(other.to_string())),
                    })
                }
            }
        });
        task.await.map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?
    }

    /// `POST /v2/images/{id}/import`: `glance-direct` moves staged data (uploading → importing → active),
    /// `web-download` fetches `uri` through the `http` store (queued → importing → active), both into the
    /// requested stores (else the default one); `copy-image` copies an active image's data into more stores. All
    /// run in the background, recorded as an `api_image_import` task, with the image's `os_glance_importing_to_stores`
    /// and `os_glance_failed_import` properties telling which stores are left and which failed.
    pub async fn import(&self, img: &ImageRow, request: ImportRequest) -> Result<(), Error> {
        let method = request.method.as_str();
        if !self.inner.config.import_methods.iter().any(|m| m == method) {
            return Err(Error::BadRequest(format!("Import method {method} is not supported.")));
        }
        if method == "copy-image" {
            return self.copy_image(img, request).await;
        }
        Self::check_formats(img)?;
        let from = if method == "web-download" { "queued" } else { "uploading" };
        if img.status != from {
            return Err(Error::Conflict(format!(
                "Image status {} is not valid for the {method} import: it must be {from}.",
                img.status
            )));
        }
        let uri = match (method, &request.uri) {
            ("web-download", Some(uri)) if self.inner.http.owns(uri) => Some(uri.clone()),
            ("web-download", _) => {
                return Err(Error::BadRequest("web-download needs a 'uri' with an http or https URL.".into()));
            }
            _ => None,
        };
        let stores = if request.stores.is_empty() { vec![self.default_store().to_string()] } else { request.stores };
        for id in &stores {
            self.target_store(Some(id))?;
        }
        if !self.inner.store.image_transition(&img.id, from, "importing").await? {
            return Err(Error::Conflict("The image changed state meanwhile; retry.".into()));
        }
        self.import_progress(&img.id, &stores, &[]).await?;
        let limit = self.upload_limit(img).await?;
        let task = self.import_task(img, request.user_id, request.request_id, &request.input).await?;
        let import = Import {
            uri,
            limit,
            task_id: task.id,
            delete_on_failure: false,
            stores,
            all_must_succeed: request.all_stores_must_succeed,
            copy: false,
        };
        self.spawn_import(img.clone(), import);
        Ok(())
    }

    /// `copy-image`: copies an active image's data into the requested stores it is not in yet.
    async fn copy_image(&self, img: &ImageRow, request: ImportRequest) -> Result<(), Error> {
        if img.status != "active" {
            return Err(Error::Conflict(format!(
                "Image status {} is not valid for the copy-image import: it must be active.",
                img.status
            )));
        }
        let present: Vec<String> = img.locations().into_iter().map(|(s, _)| s).collect();
        let stores: Vec<String> = request.stores.into_iter().filter(|s| !present.contains(s)).collect();
        for id in &stores {
            self.target_store(Some(id))?;
        }
        self.import_progress(&img.id, &stores, &[]).await?;
        let task = self.import_task(img, request.user_id, request.request_id, &request.input).await?;
        let import = Import {
            uri: None,
            limit: 0,
            task_id: task.id,
            delete_on_failure: false,
            stores,
            all_must_succeed: request.all_stores_must_succeed,
            copy: true,
        };
        self.spawn_import(img.clone(), import);
        Ok(())
    }

    /// Records which stores an import has left to do and which failed, as upstream's reserved properties.
    async fn import_progress(&self, id: &str, left: &[String], failed: &[String]) -> Result<(), Error> {
        let (left, failed) = (left.join(","), failed.join(","));
        let properties = [("os_glance_importing_to_stores", left.as_str()), ("os_glance_failed_import", failed.as_str())];
        self.inner.store.properties_put(id, &properties).await
    }

    async fn import_task(
        &self,
        img: &ImageRow,
        user_id: Option<String>,
        request_id: Option<String>,
        input: &serde_json::Value,
    ) -> Result<TaskRow, Error> {
        let now = now_micros();
        let task = TaskRow {
            id: uuid::Uuid::new_v4().to_string(),
            image_id: img.id.clone(),
            kind: "api_image_import".into(),
            status: "processing".into(),
            owner: img.owner.clone(),
            user_id,
            request_id,
            input: input.to_string(),
            message: String::new(),
            created_at: now,
            updated_at: now,
        };
        self.inner.store.task_insert(&task).await?;
        Ok(task)
    }

    /// Copies an active image's data into `target` from one of its locations, and records the new location.
    async fn copy_to_store(&self, id: &str, target: Arc<dyn StoreAdapter>) -> Result<(), Error> {
        let img = self.inner.store.image_get(id).await?.ok_or_else(|| not_found(id))?;
        if img.locations().iter().any(|(s, _)| s == target.id()) {
            return Ok(());
        }
        let size = img.size.and_then(|s| u64::try_from(s).ok());
        let data = self.open_data(&img, None).await?;
        let location = target.add(id, data, size).await.map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
        let mut locations = img.locations();
        locations.push((target.id().to_string(), location.clone()));
        if self.inner.store.image_set_locations(&img, &locations).await? {
            return Ok(());
        }
        let _ = target.delete(&location).await;
        Err(Error::Conflict(format!("Image {id} was deleted or changed during the import.")))
    }

    /// Fetches an import's data (from `uri`, or else the staging area) into its first store in the background,
    /// which makes the image active, then copies it into the other stores, and records the task's outcome. A
    /// failed legacy `import` task (`delete_on_failure`) deletes its image, as upstream does; a failed
    /// interoperable import puts the image back to `queued`, and so does a failure in a later store when all
    /// stores must succeed (the data is removed from the others); otherwise the image stays in the stores that
    /// took it.
    fn spawn_import(&self, img: ImageRow, import: Import) {
        let this = self.clone();
        tokio::spawn(async move {
            let Import { uri, limit, task_id, delete_on_failure, stores, all_must_succeed, copy } = import;
            let result = if copy {
                Ok(())
            } else {
                let source = match &uri {
                    Some(uri) => this.inner.http.get(uri, None).await,
                    None => this.inner.staging.get(&staging_location(&this.inner.staging, &img.id), None).await,
                };
                let first = stores.first().and_then(|id| this.enabled_store(id).cloned());
                match (source, first) {
                    (Ok(data), Some(first)) => {
                        this.store_data(img.clone(), data, limit, "importing", first, None).await
                    }
                    (source, _) => match this.inner.store.image_transition(&img.id, "importing", "queued").await {
                        Ok(_) => Err(match source {
                            Err(e) => Error::BadRequest(format!("Cannot read the data to import: {e}")),
                            Ok(_) => Error::BadRequest("The import's store is no longer enabled.".into()),
                        }),
                        Err(db) => Err(db),
                    },
                }
            };
            let mut failed: Vec<String> = Vec::new();
            let mut copied_to: Vec<String> = Vec::new();
            match &result {
                Ok(()) => {
                    let done = if copy { 0 } else { 1 };
                    let _ = this.import_progress(&img.id, &stores[done.min(stores.len())..], &failed).await;
                    for (i, id) in stores.iter().enumerate().skip(done) {
                        let copied = match this.enabled_store(id).cloned() {
                            Some(target) => this.copy_to_store(&img.id, target).await,
                            None => Err(Error::BadRequest(format!("Store {id} is no longer enabled."))),
                        };
                        match copied {
                            Ok(()) => copied_to.push(id.clone()),
                            Err(e) => {
                                tracing::warn!(image_id = %img.id, store = %id, error = %e, "image import into a store failed");
                                failed.push(id.clone());
                            }
                        }
                        if !failed.is_empty() && all_must_succeed {
                            break; // progress is recorded once the other stores' copies are undone
                        }
                        let _ = this.import_progress(&img.id, &stores[i + 1..], &failed).await;
                    }
                }
                Err(_) => {
                    let _ = this.import_progress(&img.id, &[], &stores).await;
                }
            }
            let result = match result {
                Ok(()) if !failed.is_empty() && all_must_succeed && copy => {
                    this.drop_copies(&img.id, &copied_to).await;
                    let _ = this.import_progress(&img.id, &[], &failed).await;
                    Err(Error::Conflict(format!("Copy into store(s) {} failed.", failed.join(","))))
                }
                Ok(()) if !failed.is_empty() && all_must_succeed => {
                    this.undo_import(&img.id).await;
                    let _ = this.import_progress(&img.id, &[], &failed).await;
                    Err(Error::Conflict(format!("Import into store(s) {} failed.", failed.join(","))))
                }
                Ok(()) if !failed.is_empty() => {
                    Err(Error::Conflict(format!("Import into store(s) {} failed.", failed.join(","))))
                }
                other => other,
            };
            let (status, message) = match &result {
                Ok(()) => ("success", "Import complete".to_string()),
                Err(e) => {
                    tracing::warn!(image_id = %img.id, error = %e, "image import failed");
                    ("failure", e.to_string())
                }
            };
            if result.is_err()
                && delete_on_failure
                && let Err(e) = this.inner.store.image_delete(&img.id).await
            {
                tracing::error!(image_id = %img.id, error = %e, "cannot delete the image of a failed import task");
            }
            if let Err(e) = this.inner.store.task_finish(&task_id, status, &message).await {
                tracing::error!(task_id = %task_id, error = %e, "cannot record the end of an import task");
            }
            let _ = this.inner.staging.delete(&staging_location(&this.inner.staging, &img.id)).await;
        });
    }

    /// Removes the copies a failed `copy-image` made (all had to succeed).
    async fn drop_copies(&self, id: &str, stores: &[String]) {
        for store_id in stores {
            if let Ok(Some(img)) = self.inner.store.image_get(id).await {
                let _ = self.delete_from_store(&img, store_id).await;
            }
        }
    }

    /// Removes the data of an import that had to succeed everywhere, and puts its image back to `queued`.
    async fn undo_import(&self, id: &str) {
        let Ok(Some(img)) = self.inner.store.image_get(id).await else { return };
        match self.inner.store.image_reset_data(id).await {
            Ok(true) => {
                for (store_id, location) in img.locations() {
                    if let Some(store) = self.store_of(&store_id, &location) {
                        let _ = store.delete(&location).await;
                    }
                }
            }
            Ok(false) => {}
            Err(e) => tracing::error!(image_id = %id, error = %e, "cannot undo a failed import"),
        }
    }

    /// `POST /v2/tasks` (type `import`): creates `img` (queued) and imports it from the http(s) URL `uri` in the
    /// background. The task, whose id is returned, records the outcome and outlives a failed image.
    pub async fn create_import_task(&self, img: ImageRow, uri: &str, mut task: TaskRow) -> Result<TaskRow, Error> {
        if !self.inner.http.owns(uri) {
            return Err(Error::BadRequest(format!(
                "Invalid import_from {uri}: only http and https URLs are supported."
            )));
        }
        Self::check_formats(&img)?;
        let img = self.create(img).await?;
        let limit = self.upload_limit(&img).await?;
        if !self.inner.store.image_transition(&img.id, "queued", "importing").await? {
            return Err(Error::Conflict("The image changed state meanwhile; retry.".into()));
        }
        task.image_id = img.id.clone();
        self.inner.store.task_insert(&task).await?;
        let import = Import {
            uri: Some(uri.to_string()),
            limit,
            task_id: task.id.clone(),
            delete_on_failure: true,
            stores: vec![self.default_store().to_string()],
            all_must_succeed: true,
            copy: false,
        };
        self.spawn_import(img, import);
        Ok(task)
    }

    /// A task by id; only admins and the task's owner see it.
    pub async fn task(&self, caller: &Caller, id: &str) -> Result<TaskRow, Error> {
        match self.inner.store.task_get(id).await? {
            Some(t) if caller.is_admin || (caller.project_id.is_some() && caller.project_id == t.owner) => Ok(t),
            _ => Err(Error::NotFound(format!("Task with identifier {id} not found"))),
        }
    }

    /// The tasks the caller may see (admins: all), newest first.
    pub async fn task_list(&self, caller: &Caller) -> Result<Vec<TaskRow>, Error> {
        let owner = if caller.is_admin { None } else { Some(caller.project_id.as_deref().unwrap_or_default()) };
        self.inner.store.task_list_all(owner).await
    }

    /// The tasks run on an image, oldest first.
    pub async fn tasks(&self, img: &ImageRow) -> Result<Vec<TaskRow>, Error> {
        self.inner.store.task_list(&img.id).await
    }

    pub async fn add_tag(&self, img: &ImageRow, tag: &str) -> Result<(), Error> {
        self.inner.store.tag_add(&img.id, tag).await
    }

    pub async fn delete_tag(&self, img: &ImageRow, tag: &str) -> Result<(), Error> {
        if self.inner.store.tag_delete(&img.id, tag).await? {
            Ok(())
        } else {
            Err(Error::NotFound(format!("Tag {tag} not found.")))
        }
    }

    /// Shares a `shared` image with another project (status `pending`).
    pub async fn add_member(&self, img: &ImageRow, member_id: &str) -> Result<MemberRow, Error> {
        if img.visibility != "shared" {
            return Err(Error::Forbidden(format!(
                "Image members can only be added to images with visibility 'shared'; image {} is '{}'.",
                img.id, img.visibility
            )));
        }
        if member_id.is_empty() || member_id.chars().count() > 255 {
            return Err(Error::BadRequest("Invalid member id.".into()));
        }
        let now = now_micros();
        let member = MemberRow {
            image_id: img.id.clone(),
            member_id: member_id.to_string(),
            status: "pending".into(),
            created_at: now,
            updated_at: now,
        };
        self.inner.store.member_insert(&member).await?;
        Ok(member)
    }

    /// Members the caller may see: all for the owner and admins, its own membership for a member.
    pub async fn members(&self, caller: &Caller, img: &ImageRow) -> Result<Vec<MemberRow>, Error> {
        if img.visibility != "shared" {
            return Err(Error::Forbidden("Only shared images have members.".into()));
        }
        let all = self.inner.store.member_list(&img.id).await?;
        if caller.is_admin || caller.owns(img) {
            return Ok(all);
        }
        Ok(all.into_iter().filter(|m| Some(&m.member_id) == caller.project_id.as_ref()).collect())
    }

    pub async fn member(&self, caller: &Caller, img: &ImageRow, member_id: &str) -> Result<MemberRow, Error> {
        let missing = || Error::NotFound(format!("{member_id} is not a member of image {}", img.id));
        if !(caller.is_admin || caller.owns(img) || caller.project_id.as_deref() == Some(member_id)) {
            return Err(missing());
        }
        self.inner.store.member_get(&img.id, member_id).await?.ok_or_else(missing)
    }

    pub async fn update_member(&self, img: &ImageRow, member_id: &str, status: &str) -> Result<MemberRow, Error> {
        if !crate::model::MEMBER_STATUSES.contains(&status) {
            return Err(Error::BadRequest(format!("Invalid status: {status}")));
        }
        if !self.inner.store.member_update(&img.id, member_id, status).await? {
            return Err(Error::NotFound(format!("{member_id} is not a member of image {}", img.id)));
        }
        self.inner.store.member_get(&img.id, member_id).await?.ok_or_else(|| not_found(&img.id))
    }

    pub async fn delete_member(&self, img: &ImageRow, member_id: &str) -> Result<(), Error> {
        if self.inner.store.member_delete(&img.id, member_id).await? {
            Ok(())
        } else {
            Err(Error::NotFound(format!("{member_id} is not a member of image {}", img.id)))
        }
    }
}

/// What a background import does.
struct Import {
    /// The source URL (`web-download`, legacy tasks); `None`: the staging area.
    uri: Option<String>,
    limit: u64,
    task_id: String,
    delete_on_failure: bool,
    /// The stores to import into, the first one first.
    stores: Vec<String>,
    all_must_succeed: bool,
    /// `copy-image`: the image is active; its data is copied into every store of `stores`.
    copy: bool,
}

fn cache_disabled() -> Error {
    Error::NotFound("The image cache is not enabled on this node.".into())
}

fn staging_location(staging: &FileAdapter, id: &str) -> String {
    format!("file://{}", staging.dir().join(id).display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qcow2_virtual_size_from_header() {
        let mut head = vec![0u8; 64];
        head[..4].copy_from_slice(b"QFI\xfb");
        head[24..32].copy_from_slice(&(10u64 << 30).to_be_bytes());
        assert_eq!(virtual_size(&head, 1234, Some("qcow2")), Some(10 << 30));
        assert_eq!(virtual_size(b"plain", 5, Some("raw")), Some(5));
        assert_eq!(virtual_size(b"plain", 5, Some("vmdk")), None);
    }

    #[test]
    fn meter_counts_and_limits() {
        let mut m = Meter::default();
        m.record(b"abc", 10).unwrap();
        assert_eq!((m.size, m.head.as_slice()), (3, b"abc".as_slice()));
        assert!(m.record(b"12345678", 10).is_err());
        assert!(m.over_limit);
    }

    #[tokio::test]
    async fn hash_threads_digest_what_they_are_sent() {
        let (tx, md5) = hash_thread::<Md5>();
        for part in [&b"a"[..], b"bc"] {
            tx.send(Bytes::copy_from_slice(part)).await.unwrap();
        }
        drop(tx);
        assert_eq!(md5.await.unwrap(), "900150983cd24fb0d6963f7d28e17f72");
    }
}
