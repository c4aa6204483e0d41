//! Integration tests of the compute service: HTTP through the whole cloud, and the datastore on every database.

mod api;
mod servers;
mod store;
