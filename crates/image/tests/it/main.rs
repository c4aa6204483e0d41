//! Integration tests of the image service: HTTP tests through the whole-cloud harness, and datastore tests on every
//! database backend.

mod cache;
mod data;
mod images;
mod members;
mod metadefs;
mod store;
mod stores;
mod tasks;

use reqwest::Method;
use serde_json::{Value, json};
use test_utils::{Client, Response, TestCloud};

pub const PATCH: &str = "application/openstack-images-v2.1-json-patch";

/// Creates an image as `client`; panics unless 201.
pub async fn create(client: &Client, body: Value) -> Value {
    let r = client.post("/image/v2/images", &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()
}

/// A queued raw/bare image named `name`.
pub async fn create_named(client: &Client, name: &str) -> Value {
    create(client, json!({"name": name, "disk_format": "raw", "container_format": "bare"})).await
}

pub async fn patch(cloud: &TestCloud, client: &Client, id: &str, ops: Value) -> Response {
    let path = format!("/image/v2/images/{id}");
    raw(cloud, client, Method::PATCH, &path, ops.to_string().into_bytes(), &[("Content-Type", PATCH)]).await
}

/// Uploads `data` to an image's file.
pub async fn upload(cloud: &TestCloud, client: &Client, id: &str, data: Vec<u8>) -> Response {
    raw(
        cloud,
        client,
        Method::PUT,
        &format!("/image/v2/images/{id}/file"),
        data,
        &[("Content-Type", "application/octet-stream")],
    )
    .await
}

pub async fn raw(
    cloud: &TestCloud,
    client: &Client,
    method: Method,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> Response {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", cloud.url)).body(body);
    if let Some(t) = &client.token {
        req = req.header("X-Auth-Token", t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    into_response(req.send().await.expect("request sent")).await
}

/// GET returning the raw bytes.
pub async fn get_bytes(
    cloud: &TestCloud,
    client: &Client,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = reqwest::Client::new().get(format!("{}{path}", cloud.url));
    if let Some(t) = &client.token {
        req = req.header("X-Auth-Token", t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request sent");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.bytes().await.expect("body").to_vec())
}

async fn into_response(r: reqwest::Response) -> Response {
    let status = r.status();
    let headers = r.headers().clone();
    Response { status, headers, text: r.text().await.unwrap_or_default() }
}

/// The project id of a client's token.
pub fn project_of(client: &Client) -> String {
    client.token_body["token"]["project"]["id"].as_str().expect("project-scoped token").to_string()
}

pub fn ids(list: &Value) -> Vec<String> {
    list["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| i["id"].as_str().unwrap_or_default().to_string())
        .collect()
}
