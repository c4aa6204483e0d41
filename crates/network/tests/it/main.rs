//! Integration tests of the network service: the HTTP API through the whole-cloud harness, IP address management
//! under concurrency, and the datastore on every database backend.

mod agents;
mod ipam;
mod networks;
mod routers;
mod security_groups;
mod store;

use reqwest::Method;
use serde_json::{Value, json};
use test_utils::{Client, Response};

pub const V2: &str = "/networking/v2.0";

pub async fn put(client: &Client, path: &str, body: &Value) -> Response {
    client.request(Method::PUT, &format!("{V2}{path}"), Some(body), &[]).await
}

pub async fn get(client: &Client, path: &str) -> Response {
    client.get(&format!("{V2}{path}")).await
}

pub async fn post(client: &Client, path: &str, body: &Value) -> Response {
    client.post(&format!("{V2}{path}"), body).await
}

pub async fn delete(client: &Client, path: &str) -> Response {
    client.delete(&format!("{V2}{path}")).await
}

/// Creates `{key: body}` at `/collection`; panics unless 201; returns the resource.
pub async fn create(client: &Client, collection: &str, key: &str, body: Value) -> Value {
    let r = post(client, &format!("/{collection}"), &json!({key: body})).await;
    assert_eq!(r.status, 201, "create {key}: {}", r.text);
    r.json()[key].clone()
}

/// The Neutron error type of a response.
pub fn error_type(r: &Response) -> String {
    r.json()["NeutronError"]["type"].as_str().unwrap_or("").to_string()
}

/// A network with one IPv4 subnet of `cidr`: (network id, subnet id).
pub async fn net_with_subnet(client: &Client, cidr: &str) -> (String, String) {
    let net = create(client, "networks", "network", json!({"name": "n"})).await;
    let id = net["id"].as_str().unwrap().to_string();
    let sub = create(client, "subnets", "subnet", json!({"network_id": id, "ip_version": 4, "cidr": cidr})).await;
    (id, sub["id"].as_str().unwrap().to_string())
}
