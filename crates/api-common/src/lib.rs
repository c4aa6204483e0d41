//! The OpenStack wire layer every Stratus service shares.
//!
//! - [`error`]: [`ApiError`], rendered in each service's upstream style ([`ErrorStyle`]).
//! - [`wire`]: the middleware stack: request ids, logging, JSON 404/405/413, body limits, panic containment.
//! - [`json`]: a JSON extractor whose failures are 400s naming the field.
//! - [`microversion`]: `OpenStack-API-Version` negotiation.
//! - [`query`]: repeated query keys, `limit`/`marker` pagination, sorting.
//! - [`version`]: version-discovery documents.
//!
//! Nothing here knows any particular service; services pick a style and a version range.

pub mod error;
pub mod json;
pub mod microversion;
pub mod query;
pub mod version;
pub mod wire;

pub use error::{ApiError, ErrorStyle};
pub use json::Json;
pub use microversion::{Microversion, VersionRange};
pub use query::{Page, QueryPairs, SortDir};
pub use wire::{RequestId, WireConfig};
