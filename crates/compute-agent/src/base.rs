//! The per-host cache of base images (upstream's `_base`): each image the host boots is fetched once from the
//! image service into `<instances_path>/_base/<image id>`, and instances' root disks are qcow2 overlays on it.
//! A base no instance uses any more is removed once it has been unused for the configured minimum age.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::Error;

/// Where images come from: the image service's public API with a service token.
pub struct ImageService {
    url: String,
    session: Arc<auth::HttpValidator>,
    http: reqwest::Client,
}

impl ImageService {
    /// The image service at `url` (e.g. `http://host/image`), called with tokens of `credentials`.
    pub fn new(url: &str, credentials: auth::ServiceCredentials) -> Result<ImageService, Error> {
        let session = auth::HttpValidator::new(credentials).map_err(|e| Error::Config(format!("image service credentials: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(ImageService { url: url.trim_end_matches('/').to_owned(), session: Arc::new(session), http })
    }

    /// Streams the data of image `id` into `dest`.
    async fn download(&self, id: &str, dest: &Path) -> Result<u64, Error> {
        let unavailable = |e: &dyn std::fmt::Display| Error::Hypervisor(format!("image service: {e}"));
        let mut token = self.session.service_token(None).await.map_err(|e| unavailable(&e))?;
        let mut retried = false;
        let resp = loop {
            let resp = self
                .http
                .get(format!("{}/v2/images/{id}/file", self.url))
                .header("x-auth-token", &token)
                .send()
                .await
                .map_err(|e| unavailable(&e))?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED && !retried {
                retried = true;
                token = self.session.service_token(Some(&token)).await.map_err(|e| unavailable(&e))?;
                continue;
            }
            break resp;
        };
        match resp.status() {
            s if s.is_success() => {}
            reqwest::StatusCode::NOT_FOUND => return Err(Error::Hypervisor(format!("image {id} could not be found"))),
            reqwest::StatusCode::NO_CONTENT => return Err(Error::Hypervisor(format!("image {id} has no data"))),
            s => return Err(Error::Hypervisor(format!("the image service answered {s} to the download of image {id}"))),
        }
        let io = |source| Error::Io { context: format!("writing {}", dest.display()), source };
        let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
        let mut body = resp.bytes_stream();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| unavailable(&e))?;
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)?;
        Ok(size)
    }
}

/// The `_base` directory and the downloads in progress.
pub(crate) struct BaseCache {
    dir: PathBuf,
    images: Option<ImageService>,
    /// One lock per image being fetched, so concurrent builds download it once.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl BaseCache {
    pub(crate) fn new(dir: PathBuf, images: Option<ImageService>) -> BaseCache {
        BaseCache { dir, images, fetching: Mutex::new(HashMap::new()) }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The base file of image `id`, fetched from the image service unless cached. Its modification time is set
    /// to now: the age of a base is the time since it was last used.
    pub(crate) async fn fetch(&self, id: &str) -> Result<PathBuf, Error> {
        if id.is_empty() || id.contains(['/', '.']) {
            return Err(Error::Hypervisor(format!("invalid image id {id:?}")));
        }
        let path = self.dir.join(id);
        let lock = self.fetching.lock().unwrap_or_else(PoisonError::into_inner).entry(id.to_owned()).or_default().clone();
        let _guard = lock.lock().await;
        if !path.exists() {
            let images = self.images.as_ref().ok_or_else(|| {
                Error::Config("the compute driver has no image service configured (image_url)".into())
            })?;
            tokio::fs::create_dir_all(&self.dir)
                .await
                .map_err(|source| Error::Io { context: format!("creating {}", self.dir.display()), source })?;
            let part = self.dir.join(format!("{id}.part"));
            let started = std::time::Instant::now();
            match images.download(id, &part).await {
                Ok(size) => {
                    tracing::info!(image = %id, size, elapsed_ms = started.elapsed().as_millis() as u64, "base image fetched");
                    tokio::fs::rename(&part, &path)
                        .await
                        .map_err(|source| Error::Io { context: format!("storing {}", path.display()), source })?;
                }
                Err(e) => {
                    let _ = tokio::fs::remove_file(&part).await;
                    return Err(e);
                }
            }
        } else if let Ok(f) = std::fs::File::options().append(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Ok(path)
    }

    /// Removes leftovers of interrupted downloads (on start-up).
    pub(crate) fn remove_partial(&self) {
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().ends_with(".part") {
                tracing::info!(file = %entry.path().display(), "removing an interrupted image download");
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Removes the bases not in `used` that have not been used for `min_age`; returns the removed image ids.
    pub(crate) fn remove_unused(&self, used: &BTreeSet<String>, min_age: Duration) -> Vec<String> {
        let mut removed = Vec::new();
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".part") || used.contains(&name) {
                continue;
            }
            let age = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
            if age.is_some_and(|age| age >= min_age) && !self.is_fetching(&name) && std::fs::remove_file(entry.path()).is_ok() {
                tracing::info!(image = %name, "removed an unused base image");
                removed.push(name);
            }
        }
        removed
    }

    fn is_fetching(&self, id: &str) -> bool {
        let map = self.fetching.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(id).is_some_and(|lock| lock.try_lock().is_err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unused_bases_go_after_their_minimum_age() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BaseCache::new(dir.path().to_path_buf(), None);
        for name in ["a", "b", "c.part"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let used: BTreeSet<String> = ["a".to_string()].into();
        assert!(cache.remove_unused(&used, Duration::from_secs(3600)).is_empty(), "b is too young");
        assert_eq!(cache.remove_unused(&used, Duration::ZERO), vec!["b".to_string()]);
        assert!(dir.path().join("a").exists());
        cache.remove_partial();
        assert!(!dir.path().join("c.part").exists());
        // A cached base is found without an image service; an uncached one needs it.
        assert_eq!(cache.fetch("a").await.unwrap(), dir.path().join("a"));
        let err = cache.fetch("zzz").await.unwrap_err().to_string();
        assert!(err.contains("image_url"), "{err}");
        assert!(cache.fetch("../etc").await.is_err());
    }
}
