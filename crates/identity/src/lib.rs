//! Identity: OpenStack Keystone's v3 API.
//!
//! - [`api`]: HTTP handlers (thin), nested at `/identity`.
//! - [`service`]: authentication, Fernet token issue/validation/revocation, catalog, bootstrap.
//! - [`store`]: the `identity_*` tables and every query on them.
//! - [`token`]: the Fernet key repository and Keystone's msgpack token payloads.
//!
//! Other services never call into this crate's internals: in one process they validate tokens through
//! [`auth::TokenValidator`], which [`Identity`] implements; split apart, over HTTP.

pub mod api;
pub mod error;
pub mod service;
pub mod store;
pub mod token;

pub use error::Error;
pub use service::{BootstrapSpec, Identity, IdentityConfig};
