//! Where image data lives: the [`StoreAdapter`] trait and its implementations.
//!
//! An adapter stores and serves opaque bytes under a *location* string it chooses (`file:///…`, `http://…`,
//! `swift+http://…/v1/AUTH_<project>/<container>/<image id>`). The service keeps the location in the image's row and hands it back to the same
//! adapter to read or delete the data; adapters know nothing of image metadata, hashing or quotas, which the
//! service does while the bytes stream through.
//!
//! Contract every adapter keeps:
//! * [`StoreAdapter::add`] consumes the stream to its end and returns the location only when all bytes are durably
//!   stored. If the stream yields an error, or the future is dropped, nothing remains under any location.
//! * [`StoreAdapter::get`] streams bytes, optionally a sub-range, without buffering the whole image.
//! * Read-only adapters (such as `http`) refuse `add` and `delete` with [`AdapterError::ReadOnly`].

mod file;
mod http;
mod object;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

pub use file::FileAdapter;
pub use http::HttpAdapter;
pub use object::{ObjectAdapter, ObjectStoreConfig, ServiceSession};

/// A stream of data chunks. Errors end the stream.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// An HTTP response's body as a [`ByteStream`], chunk by chunk as it arrives.
fn body_stream(resp: reqwest::Response) -> ByteStream {
    Box::pin(futures::stream::try_unfold(resp, |mut resp| async move {
        match resp.chunk().await {
            Ok(Some(chunk)) => Ok(Some((chunk, resp))),
            Ok(None) => Ok(None),
            Err(e) => Err(std::io::Error::other(e)),
        }
    }))
}

#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The source stream failed (the client went away, a quota cut it short, …); nothing was kept.
    #[error("the data stream failed: {0}")]
    Source(std::io::Error),
    /// The adapter's own storage failed.
    #[error("storage failure: {0}")]
    Storage(std::io::Error),
    #[error("the location {0} does not belong to this store or has no data")]
    NotFound(String),
    #[error("the store {0} is read-only")]
    ReadOnly(String),
}

/// A byte range `start..=end` (inclusive, as HTTP's `Range` header), already checked against the data size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }
    pub fn is_empty(&self) -> bool {
        self.end < self.start
    }
}

/// A backend holding image data.
#[async_trait]
pub trait StoreAdapter: Send + Sync {
    /// The store's id as `/v2/info/stores` lists it, e.g. `file`.
    fn id(&self) -> &str;
    /// A human description for `/v2/info/stores`.
    fn description(&self) -> &str;
    /// The store's type as `/v2/info/stores/detail` shows it (upstream's driver names: `file`, `swift`, `http`).
    fn store_type(&self) -> &str {
        self.id()
    }
    /// The store's settings as `/v2/info/stores/detail` shows them (no secrets).
    fn properties(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    /// Whether the store only serves data (cannot be uploaded to).
    fn read_only(&self) -> bool {
        false
    }
    /// Whether `location` belongs to this store.
    fn owns(&self, location: &str) -> bool;
    /// Stores all of `data` for image `image_id` and returns its location. `size` is the announced data size, when
    /// known (a hint: the stream decides).
    async fn add(&self, image_id: &str, data: ByteStream, size: Option<u64>) -> Result<String, AdapterError>;
    /// Streams the data at `location`, or the part of it in `range`.
    async fn get(&self, location: &str, range: Option<ByteRange>) -> Result<ByteStream, AdapterError>;
    /// Removes the data at `location`; removing what is already gone is not an error.
    async fn delete(&self, location: &str) -> Result<(), AdapterError>;
}
