//! The Image service: OpenStack Glance's v2 API.
//!
//! * [`api`] — thin axum handlers under `/image`, Glance's error bodies and policy rules;
//! * [`service`] — [`Image`], the logic: visibility, the image life cycle, streaming uploads with hashing and
//!   quotas, members, `glance-direct` and `web-download` imports (as tasks), and the legacy `/v2/tasks` imports;
//! * [`store`] — the `image_*` tables (portable SQL through `db`);
//! * [`adapter`] — where image data lives: the [`adapter::StoreAdapter`] trait, the `file` store, and the read-only
//!   `http` store that `web-download` imports read from;
//! * [`cache`] — the API node's image cache: downloads fill it, later downloads are served from it, an LRU pruner
//!   keeps it under its size limit, and queued images are pre-cached;
//! * [`metadefs`] — metadata definitions: namespaces, resource types, objects, properties and tags;
//! * [`model`] — wire validation and representations (create bodies, JSON Patch, list queries).
//!
//! Tokens are validated through the `auth::TokenValidator` the process hands in; this crate never reaches into the
//! identity service.

pub mod adapter;
pub mod api;
pub mod cache;
mod error;
pub mod metadefs;
pub mod model;
pub mod service;
pub mod store;

pub use error::Error;
pub use service::{Caller, Image, ImageConfig, ImportRequest};
