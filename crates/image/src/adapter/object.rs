//! The `object` store: image data in the object-storage service (the Swift API), reached only through its public
//! HTTP API, as Glance's single-tenant swift store does.
//!
//! All images live in one account, the service's own project (from its token), in one container (`glance` by
//! default, created on first use), under the image id. Data streams through: an image whose announced size is
//! below `large_object_size` is one chunked `PUT`; a larger one, or one of unknown size, is written as segments of
//! at most `chunk_size` bytes (`<id>-<upload>-00001`, `<id>-<upload>-00002`, …) followed by a dynamic large object
//! manifest (`X-Object-Manifest: <container>/<id>-<upload>-`) under the image id, so images beyond the 5 GiB
//! object limit work. `<upload>` is random per upload, so segments a failed attempt could not delete never join a
//! later upload's image. The manifest is written last: until then the image has no location, and a failed or
//! dropped upload deletes the segments it wrote.
//!
//! Locations are `swift+http://host:port/object-store/v1/AUTH_<project>/<container>/<id>` (`swift+https` for an
//! https endpoint): the object's URL, no credentials. Requests that can be repeated are retried once with a new
//! token after a 401.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use reqwest::{Method, StatusCode};

use super::{AdapterError, ByteRange, ByteStream, StoreAdapter};

const AUTH_TOKEN: &str = "x-auth-token";

/// How the service authenticates to the object store: its own project-scoped token.
#[async_trait]
pub trait ServiceSession: Send + Sync {
    /// The service's token: the current one, or a new one when `rejected` is the current one.
    async fn token(&self, rejected: Option<&str>) -> Result<String, String>;
    /// The project `token` is scoped to.
    async fn project_of(&self, token: &str) -> Result<String, String>;
}

#[async_trait]
impl ServiceSession for auth::HttpValidator {
    async fn token(&self, rejected: Option<&str>) -> Result<String, String> {
        self.service_token(rejected).await.map_err(|e| e.to_string())
    }

    async fn project_of(&self, token: &str) -> Result<String, String> {
        let ctx = auth::TokenValidator::validate(self, token).await.map_err(|e| e.to_string())?;
        ctx.project_id.ok_or_else(|| "the service token is not project-scoped".to_string())
    }
}

/// Where and how the `object` store keeps image data (upstream's `swift_store_*` options).
#[derive(Clone, Debug)]
pub struct ObjectStoreConfig {
    /// The object-storage endpoint without the account, e.g. `http://127.0.0.1:8800/object-store`.
    pub url: String,
    /// The container holding the images (`swift_store_container`).
    pub container: String,
    /// Images of at least this many bytes (or of unknown size) are stored as segments
    /// (`swift_store_large_object_size`).
    pub large_object_size: u64,
    /// The largest segment (`swift_store_large_object_chunk_size`).
    pub chunk_size: u64,
}

impl ObjectStoreConfig {
    pub fn new(url: &str) -> Self {
        ObjectStoreConfig {
            url: url.trim_end_matches('/').to_string(),
            container: "glance".into(),
            large_object_size: 5 << 30,
            chunk_size: 200 << 20,
        }
    }
}

/// Stores image data as objects in one account and container of the object store. Cheap to clone.
#[derive(Clone)]
pub struct ObjectAdapter {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    client: reqwest::Client,
    config: ObjectStoreConfig,
    session: Arc<dyn ServiceSession>,
    account: tokio::sync::OnceCell<String>,
    container_ready: AtomicBool,
}

fn storage(e: impl std::fmt::Display) -> AdapterError {
    AdapterError::Storage(std::io::Error::other(e.to_string()))
}

fn valid_image_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// The source stream with at most one chunk pushed back (a chunk split at a segment boundary).
struct Source {
    stream: ByteStream,
    pending: Option<Bytes>,
}

impl Source {
    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if let Some(chunk) = self.pending.take() {
            return Some(Ok(chunk));
        }
        loop {
            match self.stream.next().await {
                Some(Ok(c)) if c.is_empty() => continue,
                other => return other,
            }
        }
    }
}

/// Why feeding one object's body stopped early.
enum FeedError {
    /// The source failed: the request body was aborted.
    Source(std::io::Error),
    /// The request ended before taking the whole body (the server answered early).
    Closed,
}

/// Objects written by an upload that has not committed: deleted on failure, or (in the background) when the
/// upload's future is dropped.
struct Written {
    adapter: ObjectAdapter,
    urls: Vec<String>,
}

impl Written {
    async fn remove(mut self) {
        let urls = std::mem::take(&mut self.urls);
        self.adapter.delete_objects(urls).await;
    }

    fn commit(mut self) {
        self.urls.clear();
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        let urls = std::mem::take(&mut self.urls);
        if !urls.is_empty()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let adapter = self.adapter.clone();
            handle.spawn(async move { adapter.delete_objects(urls).await });
        }
    }
}

impl ObjectAdapter {
    /// A store `id` over the object store described by `config`, authenticating with `session`.
    pub fn new(id: &str, config: ObjectStoreConfig, session: Arc<dyn ServiceSession>) -> Result<Self, AdapterError> {
        let url = reqwest::Url::parse(&config.url).map_err(|e| storage(format!("object store URL {}: {e}", config.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(storage(format!("object store URL {} is not http(s)", config.url)));
        }
        if config.container.is_empty() || config.container.contains('/') {
            return Err(storage(format!("invalid container name {:?}", config.container)));
        }
        if config.chunk_size == 0 {
            return Err(storage("the segment size must be positive"));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(storage)?;
        Ok(ObjectAdapter {
            inner: Arc::new(Inner {
                id: id.to_string(),
                client,
                config,
                session,
                account: tokio::sync::OnceCell::new(),
                container_ready: AtomicBool::new(false),
            }),
        })
    }

    fn config(&self) -> &ObjectStoreConfig {
        &self.inner.config
    }

    /// The account URL, `<url>/v1/AUTH_<project of the service token>`.
    async fn account_url(&self) -> Result<String, AdapterError> {
        let account = self
            .inner
            .account
            .get_or_try_init(|| async {
                let token = self.inner.session.token(None).await.map_err(storage)?;
                self.inner.session.project_of(&token).await.map_err(storage)
            })
            .await?;
        Ok(format!("{}/v1/AUTH_{account}", self.config().url))
    }

    fn container_url(account_url: &str, container: &str) -> String {
        format!("{account_url}/{}", segment(container))
    }

    /// The object URL behind one of our locations.
    fn object_url(&self, location: &str) -> Option<String> {
        let url = location.strip_prefix("swift+")?;
        let rest = url.strip_prefix(&self.config().url)?.strip_prefix("/v1/")?;
        let parts: Vec<&str> = rest.split('/').collect();
        let ok = parts.len() == 3
            && parts[0].starts_with("AUTH_")
            && parts.iter().all(|p| !p.is_empty() && *p != "." && *p != "..")
            && !rest.contains(['?', '#']);
        ok.then(|| url.to_string())
    }

    /// Sends a request that can be repeated, with the service token; after a 401, once more with a new token.
    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<reqwest::Response, AdapterError> {
        let mut token = self.inner.session.token(None).await.map_err(storage)?;
        for attempt in 0..2 {
            let mut req = self.inner.client.request(method.clone(), url).header(AUTH_TOKEN, &token);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let resp = req.send().await.map_err(storage)?;
            if resp.status() != StatusCode::UNAUTHORIZED || attempt == 1 {
                return Ok(resp);
            }
            token = self.inner.session.token(Some(&token)).await.map_err(storage)?;
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Creates the container unless this process already did.
    async fn ensure_container(&self, account_url: &str) -> Result<(), AdapterError> {
        if self.inner.container_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let url = Self::container_url(account_url, &self.config().container);
        let resp = self.send(Method::PUT, &url, &[("content-length", "0")]).await?;
        if !resp.status().is_success() {
            return Err(storage(format!("creating container {url} answered {}", resp.status())));
        }
        self.inner.container_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Streams one object from `source`: up to `limit` bytes (all that is left when `None`), starting with `first`.
    /// Returns the bytes written and whether the source ended.
    async fn put_object(
        &self,
        url: &str,
        first: Bytes,
        source: &mut Source,
        limit: Option<u64>,
    ) -> Result<(u64, bool), AdapterError> {
        let token = self.inner.session.token(None).await.map_err(storage)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
        let request = self.inner.client.put(url).header(AUTH_TOKEN, token).body(body).send();
        let feed = async move {
            let mut written = 0u64;
            let mut next = Some(first);
            loop {
                let mut chunk = match next.take() {
                    Some(c) => c,
                    None => match source.next().await {
                        None => return Ok((written, true)),
                        Some(Ok(c)) => c,
                        Some(Err(e)) => {
                            // Abort the body, so that the server keeps nothing of it.
                            let _ = tx.send(Err(std::io::Error::other("upload aborted"))).await;
                            return Err(FeedError::Source(e));
                        }
                    },
                };
                let mut full = false;
                if let Some(limit) = limit {
                    let room = limit - written;
                    if chunk.len() as u64 >= room {
                        let rest = chunk.split_off(room as usize);
                        if !rest.is_empty() {
                            source.pending = Some(rest);
                        }
                        full = true;
                    }
                }
                written += chunk.len() as u64;
                if !chunk.is_empty() {
                    tx.send(Ok(chunk)).await.map_err(|_| FeedError::Closed)?;
                }
                if full {
                    return Ok((written, false));
                }
            }
        };
        let (response, fed) = tokio::join!(request, feed);
        match fed {
            Err(FeedError::Source(e)) => Err(AdapterError::Source(e)),
            Err(FeedError::Closed) | Ok(_) => {
                let response = response.map_err(storage)?;
                if response.status() != StatusCode::CREATED {
                    return Err(storage(format!("PUT {url} answered {}", response.status())));
                }
                fed.map_err(|_| storage(format!("PUT {url} ended before its body")))
            }
        }
    }

    /// Deletes objects, logging (not failing on) what cannot be deleted.
    async fn delete_objects(&self, urls: Vec<String>) {
        for url in urls {
            match self.send(Method::DELETE, &url, &[]).await {
                Ok(r) if r.status().is_success() || r.status() == StatusCode::NOT_FOUND => {}
                Ok(r) => tracing::warn!(%url, status = %r.status(), "cannot delete an image object"),
                Err(e) => tracing::warn!(%url, error = %e, "cannot delete an image object"),
            }
        }
    }

    /// The names of the objects under `prefix` in the container at `container_url`.
    async fn list(&self, container_url: &str, prefix: &str) -> Result<Vec<String>, AdapterError> {
        let mut names = Vec::new();
        let mut marker = String::new();
        loop {
            let mut url = reqwest::Url::parse(container_url).map_err(storage)?;
            url.query_pairs_mut().append_pair("format", "json").append_pair("prefix", prefix);
            if !marker.is_empty() {
                url.query_pairs_mut().append_pair("marker", &marker);
            }
            let resp = self.send(Method::GET, url.as_str(), &[]).await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(names);
            }
            if !resp.status().is_success() {
                return Err(storage(format!("listing {container_url} answered {}", resp.status())));
            }
            if resp.status() == StatusCode::NO_CONTENT {
                return Ok(names);
            }
            let page: Vec<serde_json::Value> = resp.json().await.map_err(storage)?;
            let Some(last) = page.last().and_then(|o| o["name"].as_str()).map(str::to_string) else {
                return Ok(names);
            };
            names.extend(page.iter().filter_map(|o| o["name"].as_str()).map(str::to_string));
            marker = last;
        }
    }
}

/// `%`-encodes a path segment's reserved characters (image ids and container names are plain, but stay safe).
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[async_trait]
impl StoreAdapter for ObjectAdapter {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn description(&self) -> &str {
        "Image data in the object store (Swift API)."
    }

    fn store_type(&self) -> &str {
        "swift"
    }

    fn properties(&self) -> serde_json::Value {
        let c = self.config();
        serde_json::json!({
            "container": c.container,
            "large_object_size": c.large_object_size,
            "large_object_chunk_size": c.chunk_size,
        })
    }

    fn owns(&self, location: &str) -> bool {
        self.object_url(location).is_some()
    }

    async fn add(&self, image_id: &str, data: ByteStream, size: Option<u64>) -> Result<String, AdapterError> {
        if !valid_image_id(image_id) {
            return Err(storage("invalid image id"));
        }
        let account_url = self.account_url().await?;
        self.ensure_container(&account_url).await?;
        let container = &self.config().container;
        let container_url = Self::container_url(&account_url, container);
        let object_url = format!("{container_url}/{}", segment(image_id));
        let location = format!("swift+{object_url}");
        let mut source = Source { stream: data, pending: None };
        let mut written = Written { adapter: self.clone(), urls: Vec::new() };
        let first = match source.next().await {
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err(AdapterError::Source(e)),
            None => Bytes::new(),
        };
        if size.is_some_and(|s| s < self.config().large_object_size) {
            written.urls.push(object_url.clone());
            return match self.put_object(&object_url, first, &mut source, None).await {
                Ok(_) => {
                    written.commit();
                    Ok(location)
                }
                Err(e) => {
                    written.remove().await;
                    Err(e)
                }
            };
        }
        let upload = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let mut next = Some(first);
        let mut n = 1u32;
        while let Some(chunk) = next.take() {
            let url = format!("{object_url}-{upload}-{n:05}");
            written.urls.push(url.clone());
            match self.put_object(&url, chunk, &mut source, Some(self.config().chunk_size)).await {
                Ok((_, true)) => {}
                Ok((_, false)) => {
                    next = match source.next().await {
                        Some(Ok(c)) => Some(c),
                        Some(Err(e)) => {
                            written.remove().await;
                            return Err(AdapterError::Source(e));
                        }
                        None => None,
                    };
                }
                Err(e) => {
                    written.remove().await;
                    return Err(e);
                }
            }
            n += 1;
        }
        let manifest = format!("{}/{}-{upload}-", segment(container), segment(image_id));
        let committed = self
            .send(Method::PUT, &object_url, &[("x-object-manifest", &manifest), ("content-length", "0")])
            .await;
        match committed {
            Ok(r) if r.status() == StatusCode::CREATED => {
                written.commit();
                Ok(location)
            }
            other => {
                written.urls.push(object_url.clone());
                written.remove().await;
                Err(match other {
                    Ok(r) => storage(format!("PUT {object_url} (manifest) answered {}", r.status())),
                    Err(e) => e,
                })
            }
        }
    }

    async fn get(&self, location: &str, range: Option<ByteRange>) -> Result<ByteStream, AdapterError> {
        let url = self.object_url(location).ok_or_else(|| AdapterError::NotFound(location.to_string()))?;
        let range_header = range.map(|r| format!("bytes={}-{}", r.start, r.end));
        let headers: Vec<(&str, &str)> = range_header.iter().map(|r| ("range", r.as_str())).collect();
        let resp = self.send(Method::GET, &url, &headers).await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Err(AdapterError::NotFound(location.to_string()));
        }
        if !status.is_success() {
            return Err(storage(format!("GET {url} answered {status}")));
        }
        if range.is_some() && status != StatusCode::PARTIAL_CONTENT {
            return Err(storage(format!("GET {url} ignored the range")));
        }
        Ok(super::body_stream(resp))
    }

    async fn delete(&self, location: &str) -> Result<(), AdapterError> {
        let url = self.object_url(location).ok_or_else(|| AdapterError::NotFound(location.to_string()))?;
        let head = self.send(Method::HEAD, &url, &[]).await?;
        if head.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        if !head.status().is_success() {
            return Err(storage(format!("HEAD {url} answered {}", head.status())));
        }
        if let Some(manifest) = head.headers().get("x-object-manifest").and_then(|v| v.to_str().ok()) {
            // Segments are in `<container>/<prefix>` of the same account.
            let (container, prefix) = manifest.split_once('/').ok_or_else(|| storage("malformed manifest"))?;
            let account_url = url.rsplitn(3, '/').nth(2).ok_or_else(|| storage("malformed location"))?.to_string();
            let container_url = Self::container_url(&account_url, container);
            let prefix = percent_decode(prefix);
            let names = self.list(&container_url, &prefix).await?;
            let urls = names.iter().map(|n| format!("{container_url}/{}", segment(n))).collect();
            self.delete_objects(urls).await;
        }
        let resp = self.send(Method::DELETE, &url, &[]).await?;
        if resp.status().is_success() || resp.status() == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(storage(format!("DELETE {url} answered {}", resp.status())))
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok())
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoSession;

    #[async_trait]
    impl ServiceSession for NoSession {
        async fn token(&self, _: Option<&str>) -> Result<String, String> {
            Err("no identity here".into())
        }
        async fn project_of(&self, _: &str) -> Result<String, String> {
            Err("no identity here".into())
        }
    }

    fn adapter() -> ObjectAdapter {
        ObjectAdapter::new("object", ObjectStoreConfig::new("http://127.0.0.1:8800/object-store/"), Arc::new(NoSession))
            .unwrap()
    }

    #[test]
    fn locations_are_object_urls_of_this_endpoint() {
        let a = adapter();
        let loc = "swift+http://127.0.0.1:8800/object-store/v1/AUTH_p1/glance/0b4c";
        assert!(a.owns(loc));
        assert_eq!(a.object_url(loc).unwrap(), "http://127.0.0.1:8800/object-store/v1/AUTH_p1/glance/0b4c");
        assert!(!a.owns("http://127.0.0.1:8800/object-store/v1/AUTH_p1/glance/0b4c"));
        assert!(!a.owns("swift+http://elsewhere:8800/object-store/v1/AUTH_p1/glance/0b4c"));
        assert!(!a.owns("swift+http://127.0.0.1:8800/object-store/v1/AUTH_p1/glance"));
        assert!(!a.owns("swift+http://127.0.0.1:8800/object-store/v1/AUTH_p1/../x/y"));
        assert!(!a.owns("file:///var/lib/images/0b4c"));
    }

    #[test]
    fn config_is_checked() {
        let mut c = ObjectStoreConfig::new("ftp://host/x");
        assert!(ObjectAdapter::new("object", c.clone(), Arc::new(NoSession)).is_err());
        c.url = "http://host/object-store".into();
        c.container = "a/b".into();
        assert!(ObjectAdapter::new("object", c.clone(), Arc::new(NoSession)).is_err());
        c.container = "glance".into();
        c.chunk_size = 0;
        assert!(ObjectAdapter::new("object", c, Arc::new(NoSession)).is_err());
    }

    #[test]
    fn source_pushes_back_and_skips_empty_chunks() {
        let parts: Vec<Result<Bytes, std::io::Error>> =
            vec![Ok(Bytes::new()), Ok(Bytes::from_static(b"ab")), Ok(Bytes::new())];
        let mut s = Source { stream: Box::pin(futures::stream::iter(parts)), pending: Some(Bytes::from_static(b"x")) };
        futures::executor::block_on(async {
            assert_eq!(s.next().await.unwrap().unwrap(), Bytes::from_static(b"x"));
            assert_eq!(s.next().await.unwrap().unwrap(), Bytes::from_static(b"ab"));
            assert!(s.next().await.is_none());
        });
        assert_eq!(percent_decode("abc%2Fd-"), "abc/d-");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }

    #[tokio::test]
    async fn without_a_token_nothing_is_written() {
        let a = adapter();
        let data: ByteStream = Box::pin(futures::stream::iter(vec![Ok(Bytes::from_static(b"x"))]));
        assert!(matches!(a.add("img", data, Some(1)).await, Err(AdapterError::Storage(_))));
    }
}
