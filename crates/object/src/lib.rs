//! Object storage: OpenStack Swift's API v1, single node, laid out as Swift is so that more nodes can follow.
//!
//! * [`api`] — the proxy: thin axum handlers under `/object-store` (`/info`, `/v1/AUTH_<project>/…`), Keystone
//!   authentication (optional: anonymous requests reach the ACL check), Swift's status codes, headers and short HTML
//!   error bodies;
//! * [`large`] — dynamic and static large objects (`X-Object-Manifest`, `?multipart-manifest=`), streamed segment
//!   by segment;
//! * [`versions`] — object versioning (`X-Versions-Location`, `X-History-Location`);
//! * [`tar`] — a streaming reader of (compressed) tar archives, for archive extraction;
//! * [`signature`] — the HMAC signatures of temporary URLs and form posts;
//! * [`acl`] — container ACLs (`X-Container-Read`/`-Write`) and keystoneauth's decision of who may do what;
//! * [`service`] — [`ObjectStore`], the proxy logic: accounts, containers, objects, listings, streaming PUT/GET
//!   fanned out to the replicas the ring chooses;
//! * [`policy`] — storage policies, each with its own object ring;
//! * [`ring`] — Swift's ring: partition power, replicas, weighted devices in regions and zones, placement, and the
//!   builder that `stratus object ring` edits (minimal-movement rebalance, persisted atomically);
//! * [`server`] — the proxy ↔ storage-server interface ([`server::ObjectServer`]) and the local implementation that
//!   keeps object data files on device directories under `<data_dir>/object/<device>/`, written crash-safely;
//! * [`store`] — the account and container databases: the `object_account`, `object_container` and
//!   `object_object` tables (portable SQL through `db`).
//!
//! Tokens are validated through the `auth::TokenValidator` the process hands in.

pub mod api;
pub mod acl;
mod error;
pub mod large;
pub mod policy;
pub mod ring;
pub mod server;
pub mod service;
pub mod signature;
pub mod store;
pub mod tar;
pub mod versions;

pub use error::Error;
pub use service::{ObjectConfig, ObjectStore};
