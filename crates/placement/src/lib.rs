//! The Placement service: OpenStack Placement's 1.x API, as its own service under `/placement`.
//!
//! * [`api`] — thin axum handlers, microversions (`OpenStack-API-Version: placement 1.x`), Placement's error
//!   bodies and policy rules;
//! * [`service`] — [`Placement`]: resource providers, inventories, traits, aggregates, allocations with capacity and
//!   generation checks, usages;
//! * [`candidates`] — allocation candidates, a pure function over a [`candidates::Snapshot`] kept in memory by
//!   `cache` (coherent across processes through a change counter in the database);
//! * [`model`] — resource classes and traits (standard and `CUSTOM_*`), inventory records and their validation;
//! * [`store`] — the `placement_*` tables (portable SQL through `db`).

pub mod api;
mod cache;
pub mod candidates;
mod error;
pub mod model;
pub mod service;
pub mod store;

pub use error::Error;
pub use service::Placement;
