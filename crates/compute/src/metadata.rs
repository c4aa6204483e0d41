//! Nova's metadata API for instances (`nova-api-metadata`): the OpenStack format (`/openstack/<version>/
//! meta_data.json`, `user_data`, `network_data.json`, `vendor_data.json`, `vendor_data2.json`, `password`) and the
//! EC2 format (`/<version>/meta-data/...`, `/<version>/user-data`). It listens on its own address
//! (`[compute] metadata_listen`, upstream's port 8775), never on the API listener: the data plane's metadata proxy
//! forwards a guest's requests to 169.254.169.254 here, naming the instance as upstream's Neutron proxy does —
//! `X-Instance-ID`, `X-Tenant-ID` and `X-Instance-ID-Signature`, the hex HMAC-SHA256 of the instance id under
//! `[compute] metadata_proxy_shared_secret`. A wrong signature is a 403; an instance of another project a 404.

// Handlers return `ApiError` by value, as axum takes it.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;

use api_common::{ApiError, ErrorStyle, WireConfig};
use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use base64::Engine;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::{
    service::Compute,
    store::{InstanceRow, netinfo::NetInfo, sysmeta},
};

/// The OpenStack metadata versions served (upstream's list), newest last.
pub const OPENSTACK_VERSIONS: &[&str] = &[
    "2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30", "2016-10-06", "2017-02-22", "2018-08-27",
    "2020-10-14",
];

/// The EC2 metadata versions served.
pub const EC2_VERSIONS: &[&str] =
    &["1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15", "2008-02-01", "2008-09-01", "2009-04-04"];

#[derive(Clone)]
struct MetaState {
    compute: Compute,
    secret: std::sync::Arc<str>,
}

/// The metadata service's router, for its own listener.
pub fn router(compute: Compute, shared_secret: &str) -> Router {
    let state = MetaState { compute, secret: shared_secret.into() };
    let r = Router::new()
        .route("/", get(root))
        .route("/openstack", get(openstack_versions))
        .route("/openstack/", get(openstack_versions))
        .route("/openstack/{version}", get(openstack_index))
        .route("/openstack/{version}/", get(openstack_index))
        .route("/openstack/{version}/{item}", get(openstack_item).post(openstack_post))
        .route("/{version}", get(ec2_index))
        .route("/{version}/", get(ec2_index))
        .route("/{version}/user-data", get(ec2_user_data))
        .route("/{version}/meta-data", get(ec2_meta_root))
        .route("/{version}/meta-data/", get(ec2_meta_root))
        .route("/{version}/meta-data/{*path}", get(ec2_meta))
        .with_state(state);
    api_common::wire::apply(r, WireConfig::new(ErrorStyle::Nova))
}

fn text(body: impl Into<String>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=UTF-8")], body.into()).into_response()
}

fn json_response(v: &Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn not_found() -> ApiError {
    ApiError::not_found("The resource could not be found.")
}

/// The hex HMAC-SHA256 of `instance_id` under `secret` (what the metadata proxy sends as the signature).
pub fn sign(secret: &str, instance_id: &str) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(instance_id.as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time comparison of two signatures.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The instance a request is for, from the proxy's headers.
async fn instance(s: &MetaState, headers: &HeaderMap) -> Result<InstanceRow, ApiError> {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let Some(id) = h("x-instance-id") else {
        return Err(ApiError::bad_request("X-Instance-ID header is missing from request."));
    };
    let Some(tenant) = h("x-tenant-id") else {
        return Err(ApiError::bad_request("X-Tenant-ID header is missing from request."));
    };
    let signature = h("x-instance-id-signature").unwrap_or_default();
    if !same(&sign(&s.secret, &id), &signature) {
        tracing::warn!(instance = %id, "metadata request with a bad signature");
        return Err(ApiError::forbidden("Invalid proxy request signature."));
    }
    let inst = s.compute.store().instance_get(&id).await?.filter(|i| !i.deleted).ok_or_else(not_found)?;
    if inst.project_id != tenant {
        tracing::warn!(instance = %id, "metadata request for an instance of another project");
        return Err(not_found());
    }
    Ok(inst)
}

async fn root(State(s): State<MetaState>, headers: HeaderMap) -> Result<Response, ApiError> {
    instance(&s, &headers).await?;
    let mut versions: Vec<&str> = EC2_VERSIONS.to_vec();
    versions.push("latest");
    Ok(text(versions.join("\n")))
}

async fn openstack_versions(State(s): State<MetaState>, headers: HeaderMap) -> Result<Response, ApiError> {
    instance(&s, &headers).await?;
    let mut versions: Vec<&str> = OPENSTACK_VERSIONS.to_vec();
    versions.push("latest");
    Ok(text(versions.join("\n")))
}

fn openstack_version(v: &str) -> Result<(), ApiError> {
    if v == "latest" || OPENSTACK_VERSIONS.contains(&v) { Ok(()) } else { Err(not_found()) }
}

async fn openstack_index(
    State(s): State<MetaState>,
    headers: HeaderMap,
    Path(version): Path<String>,
) -> Result<Response, ApiError> {
    openstack_version(&version)?;
    let inst = instance(&s, &headers).await?;
    let mut items = vec!["meta_data.json", "network_data.json"];
    if inst.user_data.is_some() {
        items.push("user_data");
    }
    items.extend(["vendor_data.json", "vendor_data2.json", "password"]);
    Ok(text(items.join("\n")))
}

struct Facts {
    metadata: BTreeMap<String, String>,
    net: NetInfo,
    sysmeta: BTreeMap<String, String>,
}

async fn facts(s: &MetaState, inst: &InstanceRow) -> Result<Facts, ApiError> {
    let store = s.compute.store();
    Ok(Facts {
        metadata: store.metadata_of(&[&inst.uuid]).await?.remove(&inst.uuid).unwrap_or_default(),
        net: store.netinfo_get(&inst.uuid).await?.unwrap_or_default(),
        sysmeta: store.sysmeta_of(&[&inst.uuid]).await?.remove(&inst.uuid).unwrap_or_default(),
    })
}

/// `meta_data.json`.
pub fn meta_data(inst: &InstanceRow, metadata: &BTreeMap<String, String>) -> Value {
    let mut out = json!({
        "uuid": inst.uuid,
        "meta": metadata,
        "hostname": inst.hostname,
        "name": inst.display_name,
        "launch_index": inst.launch_index,
        "availability_zone": inst.availability_zone,
        "project_id": inst.project_id,
        "devices": [],
        "dedicated_cpus": [],
    });
    if let (Some(name), Some(key)) = (&inst.key_name, &inst.key_data) {
        out["public_keys"] = json!({name: key});
        out["keys"] = json!([{"name": name, "type": "ssh", "data": key}]);
    }
    out
}

fn tap(port_id: &str) -> String {
    format!("tap{}", port_id.chars().take(11).collect::<String>())
}

/// `network_data.json`: a link per port, a network per address family on it (addresses are leased by DHCP or
/// SLAAC until the data plane gives guests their static configuration).
pub fn network_data(net: &NetInfo) -> Value {
    let mut links = Vec::new();
    let mut networks = Vec::new();
    for v in &net.vifs {
        links.push(json!({
            "id": tap(&v.port_id),
            "vif_id": v.port_id,
            "type": "ovs",
            "mtu": Value::Null,
            "ethernet_mac_address": v.mac,
        }));
        for ip in v.ips.iter().filter(|i| i.kind == "fixed") {
            networks.push(json!({
                "id": format!("network{}", networks.len()),
                "type": if ip.version == 6 { "ipv6_dhcp" } else { "ipv4_dhcp" },
                "link": tap(&v.port_id),
                "network_id": v.network_id,
            }));
        }
    }
    json!({"links": links, "networks": networks, "services": []})
}

fn user_data(inst: &InstanceRow) -> Option<Vec<u8>> {
    let ud = inst.user_data.as_ref()?;
    base64::engine::general_purpose::STANDARD.decode(ud.trim()).ok()
}

async fn openstack_item(
    State(s): State<MetaState>,
    headers: HeaderMap,
    Path((version, item)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    openstack_version(&version)?;
    let inst = instance(&s, &headers).await?;
    let f = facts(&s, &inst).await?;
    match item.as_str() {
        "meta_data.json" => Ok(json_response(&meta_data(&inst, &f.metadata))),
        "network_data.json" => Ok(json_response(&network_data(&f.net))),
        "vendor_data.json" | "vendor_data2.json" => Ok(json_response(&json!({}))),
        "user_data" => user_data(&inst).map(|b| (StatusCode::OK, b).into_response()).ok_or_else(not_found),
        "password" => Ok(text(f.sysmeta.get(sysmeta::PASSWORD).cloned().unwrap_or_default())),
        _ => Err(not_found()),
    }
}

/// `POST /openstack/<version>/password`: the guest leaves its encrypted admin password once (409 after that),
/// for `os-server-password`.
async fn openstack_post(
    State(s): State<MetaState>,
    headers: HeaderMap,
    Path((version, item)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    openstack_version(&version)?;
    if item != "password" {
        return Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "The method is not allowed for this resource."));
    }
    let inst = instance(&s, &headers).await?;
    if body.len() > 256 {
        return Err(ApiError::bad_request("Request is too large."));
    }
    let f = facts(&s, &inst).await?;
    if f.sysmeta.get(sysmeta::PASSWORD).is_some_and(|p| !p.is_empty()) {
        return Err(ApiError::conflict("Password already set."));
    }
    let password = String::from_utf8_lossy(&body).to_string();
    s.compute.store().sysmeta_set(&inst.uuid, sysmeta::PASSWORD, Some(&password)).await?;
    Ok(StatusCode::OK.into_response())
}

// ----- EC2 -----

fn ec2_version(v: &str) -> Result<(), ApiError> {
    if v == "latest" || EC2_VERSIONS.contains(&v) { Ok(()) } else { Err(not_found()) }
}

async fn ec2_index(State(s): State<MetaState>, headers: HeaderMap, Path(version): Path<String>) -> Result<Response, ApiError> {
    ec2_version(&version)?;
    let inst = instance(&s, &headers).await?;
    let mut items = vec!["meta-data/"];
    if inst.user_data.is_some() {
        items.push("user-data");
    }
    Ok(text(items.join("\n")))
}

async fn ec2_user_data(State(s): State<MetaState>, headers: HeaderMap, Path(version): Path<String>) -> Result<Response, ApiError> {
    ec2_version(&version)?;
    let inst = instance(&s, &headers).await?;
    user_data(&inst).map(|b| (StatusCode::OK, b).into_response()).ok_or_else(not_found)
}

/// The EC2 `meta-data` tree of an instance: leaves are strings, branches maps.
pub fn ec2_tree(inst: &InstanceRow, net: &NetInfo) -> Value {
    let first = |kind: &str, version: u8| {
        net.vifs
            .iter()
            .flat_map(|v| v.ips.iter())
            .find(|i| i.kind == kind && i.version == version)
            .map(|i| i.address.clone())
            .unwrap_or_default()
    };
    let short = inst.uuid.split('-').next().unwrap_or_default();
    let mut tree = json!({
        "ami-id": format!("ami-{}", &inst.image_ref.chars().take(8).collect::<String>()),
        "ami-launch-index": inst.launch_index.to_string(),
        "ami-manifest-path": "FIXME",
        "block-device-mapping": {"ami": "vda", "root": "/dev/vda"},
        "hostname": inst.hostname,
        "instance-action": "none",
        "instance-id": format!("i-{short}"),
        "instance-type": inst.flavor.name,
        "local-hostname": inst.hostname,
        "local-ipv4": first("fixed", 4),
        "placement": {"availability-zone": inst.availability_zone.clone().unwrap_or_default()},
        "public-hostname": inst.hostname,
        "public-ipv4": first("floating", 4),
        "reservation-id": inst.reservation_id,
        "security-groups": net.security_groups.join("\n"),
    });
    if let (Some(name), Some(key)) = (&inst.key_name, &inst.key_data) {
        tree["public-keys"] = json!({"0": {"openssh-key": key, "_name": format!("0={name}")}});
    }
    tree
}

fn listing(node: &Value) -> String {
    let Some(map) = node.as_object() else { return String::new() };
    let mut lines = Vec::new();
    for (k, v) in map {
        if k == "_name" {
            continue;
        }
        if let Some(named) = v.get("_name").and_then(Value::as_str) {
            lines.push(named.to_string());
        } else if v.is_object() {
            lines.push(format!("{k}/"));
        } else {
            lines.push(k.clone());
        }
    }
    lines.join("\n")
}

async fn ec2_meta_root(State(s): State<MetaState>, headers: HeaderMap, Path(version): Path<String>) -> Result<Response, ApiError> {
    ec2_version(&version)?;
    let inst = instance(&s, &headers).await?;
    let f = facts(&s, &inst).await?;
    Ok(text(listing(&ec2_tree(&inst, &f.net))))
}

async fn ec2_meta(
    State(s): State<MetaState>,
    headers: HeaderMap,
    Path((version, path)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    ec2_version(&version)?;
    let inst = instance(&s, &headers).await?;
    let f = facts(&s, &inst).await?;
    let mut node = ec2_tree(&inst, &f.net);
    for part in path.split('/').filter(|p| !p.is_empty()) {
        // `public-keys/0=name` is also reachable as `public-keys/0`.
        let key = part.split('=').next().unwrap_or(part);
        node = node.get(key).cloned().ok_or_else(not_found)?;
    }
    match node {
        Value::String(t) => Ok(text(t)),
        other => Ok(text(listing(&other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(sign("Jefe", "what do ya want for nothing?"), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }

    #[test]
    fn ec2_listing_marks_branches() {
        let tree = json!({"a": "1", "b": {"c": "2"}, "public-keys": {"0": {"openssh-key": "k", "_name": "0=key"}}});
        assert_eq!(listing(&tree), "a\nb/\npublic-keys/");
        assert_eq!(listing(&tree["public-keys"]), "0=key");
    }
}
