//! Integration tests of the volume service: Cinder's API through the whole-cloud harness, with the in-process
//! volume agent (the `fake` driver for the API's rules, the `file` driver for data that must survive copies,
//! backups and restores).

mod api;
mod data;
mod groups;
mod store;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use test_utils::{Client, Response, TestCloud};

/// A cloud whose volume agent keeps volumes in memory.
pub async fn fake_cloud() -> TestCloud {
    TestCloud::start_with(|c| {
        c.volume_agent.driver = "fake".into();
        c.volume_agent.report_interval = 1;
    })
    .await
}

pub fn project(client: &Client) -> String {
    client.token_body["token"]["project"]["id"].as_str().unwrap_or_default().to_string()
}

/// `/volume/v3/<project>` + `path`.
pub fn url(client: &Client, path: &str) -> String {
    format!("/volume/v3/{}{path}", project(client))
}

pub async fn call(client: &Client, method: Method, path: &str, body: Option<&Value>, version: &str) -> Response {
    let header = format!("volume {version}");
    client.request(method, &url(client, path), body, &[("OpenStack-API-Version", &header)]).await
}

pub async fn get(client: &Client, path: &str) -> Response {
    call(client, Method::GET, path, None, "3.0").await
}

pub async fn post(client: &Client, path: &str, body: &Value) -> Response {
    call(client, Method::POST, path, Some(body), "3.0").await
}

pub async fn put(client: &Client, path: &str, body: &Value) -> Response {
    call(client, Method::PUT, path, Some(body), "3.0").await
}

pub async fn delete(client: &Client, path: &str) -> Response {
    call(client, Method::DELETE, path, None, "3.0").await
}

/// Waits until `path`'s `key` resource has `status` (panics on an error status or after 60 s).
pub async fn wait_status(client: &Client, path: &str, key: &str, status: &str) -> Value {
    for _ in 0..600 {
        let r = get(client, path).await;
        let doc = r.json()[key].clone();
        if doc["status"] == json!(status) {
            return doc;
        }
        let now = doc["status"].as_str().unwrap_or("");
        assert!(!now.starts_with("error") || status.starts_with("error"), "{path} went to {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never reached {status}");
}

/// Waits until `path` answers 404.
pub async fn wait_gone(client: &Client, path: &str) {
    for _ in 0..600 {
        if get(client, path).await.status == 404 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never went away");
}

/// Waits until the volume agent has reported (the scheduler needs a backend).
pub async fn wait_backend(admin: &Client) {
    for _ in 0..100 {
        let r = get(admin, "/os-services?binary=cinder-volume").await;
        if r.json()["services"].as_array().is_some_and(|s| s.iter().any(|s| s["state"] == "up")) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no volume backend reported");
}

/// Creates a volume and waits for it to be available.
pub async fn volume(client: &Client, body: Value) -> Value {
    let r = post(client, "/volumes", &json!({"volume": body})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["volume"]["id"].as_str().unwrap().to_string();
    wait_status(client, &format!("/volumes/{id}"), "volume", "available").await
}
