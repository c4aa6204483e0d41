//! The compute service (Nova's API v2.1) under `/compute`: flavors (extra specs, access to private flavors) and key
//! pairs so far.
//!
//! * [`api`] — thin axum handlers, microversions (`OpenStack-API-Version: compute 2.x` or the legacy
//!   `X-OpenStack-Nova-API-Version`), Nova's error bodies and policy rules;
//! * [`service`] — [`Compute`]: flavor visibility and rules, extra specs, flavor access, key pairs;
//! * [`keys`] — SSH public key validation, MD5 fingerprints, key pair generation;
//! * [`store`] — the `compute_*` tables (portable SQL through `db`); the default flavors come with the schema.

pub mod api;
mod error;
pub mod keys;
pub mod service;
pub mod store;

pub use error::Error;
pub use service::Compute;
