//! Identity's integration tests: the service and its datastore on every database backend (SQLite always;
//! PostgreSQL and MariaDB when reachable, required in CI), and the HTTP API through the whole-cloud harness.
//! One module per resource family.

mod appcreds;
mod catalog;
mod oauth;
mod projects;
mod service;
mod roles;
mod users;
