//! The network service: Neutron's Networking API v2.0 under `/networking`.
//!
//! * [`api`] — thin axum handlers, Neutron's error bodies and policy rules (secure-RBAC defaults);
//! * [`service`] — [`Network`]: networks with provider segments, subnets and subnet pools, ports with IPAM,
//!   security groups, routers and floating IPs, quotas, tags, RBAC policies, IP availability;
//! * [`ipam`] — address arithmetic (pools, EUI-64, MACs, prefix carving);
//! * [`listing`] — filters, `fields`, sorting and pagination as Neutron answers list calls;
//! * [`agent`] — the data-plane interface ([`agent::NetworkDriver`]) and its in-memory `fake`;
//! * [`store`] — the `network_*` tables.

pub mod agent;
pub mod api;
mod error;
pub mod ipam;
pub mod listing;
pub mod nova;
pub mod service;
pub mod store;

pub use error::Error;
pub use service::{Caller, Network, NetworkConfig};
