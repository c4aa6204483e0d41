//! Integration tests of the database layer, run against every reachable backend (SQLite always;
//! PostgreSQL and MariaDB per `db::testing`).

mod connect;
mod fixture;
mod migrations;
mod queries;
mod transactions;
mod types;
