//! The compute service (Nova's API v2.1) under `/compute`, and its conductor.
//!
//! * [`api`] — thin axum handlers, microversions (`OpenStack-API-Version: compute 2.x` or the legacy
//!   `X-OpenStack-Nova-API-Version`), Nova's error bodies and policy rules;
//! * [`service`] — [`Compute`]: flavor visibility and rules, extra specs, flavor access, key pairs;
//! * [`servers`] — instance visibility, creation with quotas, the state rules of each action;
//! * [`quotas`] — limits per project, user and quota class over Nova's defaults, usage, checks;
//! * [`aggregates`] — host aggregates, the availability zones they make, their mirror in placement;
//! * [`server_groups`] — server groups, their members and what the scheduler needs of them;
//! * [`usage`] — simple tenant usage and the instance usage audit log, from instance records;
//! * [`conductor`] — drives builds (placement pre-filter, scheduler, claim, reschedule), actions and deletes over
//!   the bus, and applies the agents' reports; the only writer of instance state;
//! * [`placement`] — the conductor's HTTP client of the Placement API;
//! * [`images`] — the API's HTTP client of the image service (with the caller's token);
//! * [`keys`] — SSH public key validation, MD5 fingerprints, key pair generation;
//! * [`store`] — the `compute_*` tables (portable SQL through `db`); the default flavors come with the schema.

pub mod aggregates;
pub mod api;
pub mod conductor;
mod error;
pub mod images;
pub mod keys;
pub mod metadata;
pub mod network;
pub mod placement;
pub mod quotas;
pub mod server_groups;
pub mod servers;
pub mod service;
pub mod service_http;
pub mod services;
pub mod store;
pub mod usage;
pub mod volume;

pub use conductor::{Conductor, ConductorSettings};
pub use error::Error;
pub use placement::PlacementClient;
pub use service::Compute;
