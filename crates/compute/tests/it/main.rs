//! Integration tests of the compute service: HTTP through the whole cloud, and the datastore on every database.

mod aggregates;
mod api;
mod metadata;
mod microversions;
mod network;
mod quotas;
mod scheduling;
mod server_groups;
mod servers;
mod store;
mod usage;
mod volumes;
