//! Integration tests of the placement service: HTTP tests through the whole-cloud harness, and datastore tests on
//! every database backend.

mod api;
mod cache;
mod store;

use serde_json::Value;
use test_utils::{Client, Response};

/// The microversion header for `version`.
pub fn mv(version: &str) -> String {
    format!("placement {version}")
}

pub async fn call(client: &Client, method: &str, path: &str, body: Option<&Value>, version: &str) -> Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    client.request(method, &format!("/placement{path}"), body, &[("OpenStack-API-Version", &mv(version))]).await
}
