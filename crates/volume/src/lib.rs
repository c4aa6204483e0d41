//! The block-storage service: Cinder's Block Storage API v3 under `/volume`.
//!
//! * [`api`] — axum handlers, Cinder's error bodies, microversions and policy rule names;
//! * [`service`] — [`Volume`]: the state rules of volumes, snapshots, backups and attachments, types, QoS
//!   specs, quotas, and the calls to the volume agents over the bus;
//! * [`scheduler`] — backend selection (filters and weigher) as pure functions;
//! * [`store`] — the `volume_*` tables.

pub mod api;
mod error;
pub mod scheduler;
pub mod service;
pub mod store;

pub use error::Error;
pub use service::{Caller, Volume, VolumeConfig};
