//! Volumes of servers: `os-volume_attachments` (list, show, attach, detach; swap is not offered), and upstream's
//! deprecated proxies to the block storage service `os-volumes` and `os-snapshots` (removed at 2.36), with the
//! caller's own token.
//!
//! An attach reserves the volume in the block storage service (an attachment) with the caller's token and records
//! the mapping; the conductor then connects it to the server's host, has the agent plug it and completes the
//! attachment (volume `attaching`, then `in-use`). A detach starts the volume `detaching`; the conductor has the
//! agent unplug it and deletes the attachment (volume `available`).

use ::auth::Context;
use api_common::{ApiError, Microversion, RequestId};
use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::get,
};
use compute_rpc::vm_state;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{AppState, body, invalid, member, only, v};
use crate::{
    store::{InstanceRow, bdm::Bdm},
    volume::{As, VolumeClient, error_message, next_device, safe},
};

pub(super) fn routes() -> Router<AppState> {
    let removed = Router::new()
        .route("/v2.1/os-volumes", get(volume_list).post(volume_create))
        .route("/v2.1/os-volumes/detail", get(volume_list))
        .route("/v2.1/os-volumes/{id}", get(volume_show).delete(volume_delete))
        .route("/v2.1/os-snapshots", get(snapshot_list).post(snapshot_create))
        .route("/v2.1/os-snapshots/detail", get(snapshot_list))
        .route("/v2.1/os-snapshots/{id}", get(snapshot_show).delete(snapshot_delete));
    super::until(removed, v(36))
        .route("/v2.1/servers/{id}/os-volume_attachments", get(list).post(attach))
        .route("/v2.1/servers/{id}/os-volume_attachments/{volume_id}", get(show).put(swap).delete(detach))
}

fn token(headers: &HeaderMap) -> &str {
    headers.get("x-auth-token").and_then(|t| t.to_str().ok()).unwrap_or_default()
}

/// The block storage service's client, or 404 where compute has none.
fn volumes(s: &AppState) -> Result<&VolumeClient, ApiError> {
    s.compute.volume().ok_or_else(|| ApiError::not_found("The block storage service is not available to compute."))
}

fn project(ctx: &Context) -> String {
    ctx.project_id.clone().unwrap_or_default()
}

/// A failed call to the block storage service, passed on with its message.
fn passed_on(status: reqwest::StatusCode, body: &Value) -> ApiError {
    let message = error_message(body);
    let message = if message.is_empty() { format!("The block storage service answered {status}") } else { message };
    match status.as_u16() {
        404 => ApiError::not_found(message),
        409 => ApiError::conflict(message),
        403 | 413 | 429 => ApiError::forbidden(message),
        _ => ApiError::bad_request(message),
    }
}

// ----- os-volume_attachments -----

/// One attachment, as upstream's `volumeAttachment` (its `id` is the volume's).
fn view(b: &Bdm, mv: Microversion) -> Value {
    let mut out = json!({
        "id": b.volume_id,
        "serverId": b.instance_uuid,
        "volumeId": b.volume_id,
        "device": b.device_name,
    });
    if mv >= v(70) {
        out["tag"] = json!(b.tag);
    }
    if mv >= v(79) {
        out["delete_on_termination"] = json!(b.delete_on_termination);
    }
    out
}

/// The mappings of an instance that have a volume.
async fn attached(s: &AppState, uuid: &str) -> Result<Vec<Bdm>, ApiError> {
    Ok(s.compute.store().bdm_list(uuid).await?.into_iter().filter(|b| b.volume_id.is_some()).collect())
}

async fn list(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
    q: api_common::QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let inst = super::servers::visible_server(&s, &ctx, &id, "os_compute_api:os-volumes-attachments:index").await?;
    let all = attached(&s, &inst.uuid).await?;
    let limit = match q.get("limit") {
        None => usize::MAX,
        Some(l) => l.parse::<usize>().map_err(|_| ApiError::bad_request(format!("Invalid input for query parameters limit. Value: {l}. '{l}' does not match '^[0-9]*$'")))?,
    };
    let offset = match q.get("offset") {
        None => 0,
        Some(o) => o.parse::<usize>().map_err(|_| ApiError::bad_request(format!("Invalid input for query parameters offset. Value: {o}. '{o}' does not match '^[0-9]*$'")))?,
    };
    let items: Vec<Value> = all.iter().skip(offset).take(limit).map(|b| view(b, mv)).collect();
    Ok(Json(json!({"volumeAttachments": items})))
}

fn not_attached(uuid: &str, volume_id: &str) -> ApiError {
    ApiError::not_found(format!("Volume {volume_id} is not attached to instance {uuid}."))
}

async fn show(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path((id, volume_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let inst = super::servers::visible_server(&s, &ctx, &id, "os_compute_api:os-volumes-attachments:show").await?;
    let b = attached(&s, &inst.uuid).await?.into_iter().find(|b| b.volume_id.as_deref() == Some(volume_id.as_str()));
    let b = b.ok_or_else(|| not_attached(&inst.uuid, &volume_id))?;
    Ok(Json(json!({"volumeAttachment": view(&b, mv)})))
}

/// The states a server may gain or lose volumes in (upstream's `attach_volume`/`detach_volume`); shelved ones from
/// 2.20. An offloaded server has no host: its mappings are only recorded, and connected when it is unshelved.
fn attachable(s: &AppState, ctx: &Context, inst: &InstanceRow, action: &str, mv: Microversion) -> Result<(), ApiError> {
    if inst.locked_by.is_some() && !s.is_admin(ctx) {
        return Err(ApiError::conflict(format!("Instance {} is locked", inst.uuid)));
    }
    let mut states = vec![vm_state::ACTIVE, vm_state::PAUSED, vm_state::STOPPED, vm_state::RESIZED, vm_state::SOFT_DELETED];
    if mv >= v(20) {
        states.extend([vm_state::SHELVED, vm_state::SHELVED_OFFLOADED]);
    }
    if !states.contains(&inst.vm_state.as_str()) || inst.task_state.is_some() {
        return Err(ApiError::conflict(format!(
            "Cannot '{action}' instance {} while it is in vm_state {}",
            inst.uuid, inst.vm_state
        )));
    }
    if inst.host.is_none() && inst.vm_state != vm_state::SHELVED_OFFLOADED {
        return Err(ApiError::conflict(format!("Cannot '{action}' instance {} while it has no host", inst.uuid)));
    }
    Ok(())
}

/// Upstream's device name pattern (`/dev/vdb`, `vdc`, `/dev/xvda1`).
fn valid_device(d: &str) -> bool {
    let name = d.strip_prefix("/dev/").unwrap_or(d);
    let letters: String = name.chars().take_while(|c| c.is_ascii_lowercase()).collect();
    let rest = &name[letters.len()..];
    letters.len() >= 2 && rest.chars().all(|c| c.is_ascii_digit())
}

fn bool_field(m: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(t)) => match api_common::query::parse_bool(t) {
            Some(b) => Ok(Some(b)),
            None => Err(invalid(key, &json!(t), &format!("{t:?} is not of type 'boolean'"))),
        },
        Some(other) => Err(invalid(key, other, &format!("{other} is not of type 'boolean'"))),
    }
}

/// A device tag (2.49): 1–60 characters, no `/` or `,`.
pub(crate) fn tag_field(m: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    match m.get("tag") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(t)) if !t.is_empty() && t.chars().count() <= 60 && !t.contains(['/', ',']) => Ok(Some(t.clone())),
        Some(other) => Err(invalid("tag", other, &format!("{other} does not match '^[^,/]*$'"))),
    }
}

async fn attach(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let inst = super::servers::visible_server(&s, &ctx, &id, "os_compute_api:os-volumes-attachments:create").await?;
    let b = body(&bytes)?;
    let m = member(&b, "volumeAttachment")?;
    let mut allowed = vec!["volumeId", "device"];
    if mv >= v(49) {
        allowed.push("tag");
    }
    if mv >= v(79) {
        allowed.push("delete_on_termination");
    }
    only(m, &allowed)?;
    let volume_id = match m.get("volumeId") {
        Some(Value::String(t)) if uuid::Uuid::parse_str(t).is_ok() => t.clone(),
        Some(other) => return Err(invalid("volumeId", other, &format!("{other} is not a 'uuid'"))),
        None => return Err(ApiError::bad_request("Invalid input for field/attribute volumeAttachment. Value: {}. 'volumeId' is a required property")),
    };
    let device = match m.get("device") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) if valid_device(d) => Some(d.clone()),
        Some(other) => return Err(invalid("device", other, &format!("{other} does not match the device name pattern"))),
    };
    let tag = tag_field(m)?;
    let delete_on_termination = bool_field(m, "delete_on_termination")?.unwrap_or(false);
    attachable(&s, &ctx, &inst, "attach_volume", mv)?;
    let c = volumes(&s)?;
    let conductor = s.compute.conductor()?;
    let tok = token(&headers);
    let volume = c
        .get(As::User(tok), &inst.project_id, &volume_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Volume {volume_id} could not be found.")))?;
    let bdms = s.compute.store().bdm_list(&inst.uuid).await?;
    if bdms.iter().any(|b| b.volume_id.as_deref() == Some(volume_id.as_str())) {
        return Err(ApiError::bad_request(format!(
            "Invalid volume: volume {volume_id} already attached to instance {}",
            inst.uuid
        )));
    }
    if volume["status"] != json!("available") && volume["multiattach"] != json!(true) {
        return Err(ApiError::bad_request(format!(
            "Invalid volume: volume '{volume_id}' status must be 'available'. Currently in '{}'",
            volume["status"].as_str().unwrap_or_default()
        )));
    }
    // An offloaded server's devices are named when it is unshelved onto a host (as upstream): only a requested one
    // is kept.
    let offloaded = inst.vm_state == vm_state::SHELVED_OFFLOADED;
    let device_name = if offloaded {
        device.map(|d| if d.starts_with("/dev/") { d } else { format!("/dev/{d}") })
    } else {
        Some(next_device(&inst.flavor, inst.config_drive, &bdms, device.as_deref()))
    };
    let mut b = Bdm {
        id: uuid::Uuid::new_v4().to_string(),
        instance_uuid: inst.uuid.clone(),
        volume_id: Some(volume_id.clone()),
        attachment_id: None,
        device_name,
        boot_index: None,
        source_type: "volume".into(),
        destination_type: "volume".into(),
        delete_on_termination,
        tag,
        ..Default::default()
    };
    if !s.compute.store().bdm_insert(&b).await? {
        return Err(ApiError::bad_request(format!(
            "Invalid volume: volume {volume_id} already attached to instance {}",
            inst.uuid
        )));
    }
    let owner = volume["os-vol-tenant-attr:tenant_id"].as_str().map(str::to_string).unwrap_or_else(|| inst.project_id.clone());
    let a = match c.attachment_create(As::User(tok), &owner, &volume_id, &inst.uuid).await {
        Ok(a) => a,
        Err(e) => {
            s.compute.store().bdm_delete(&b.id).await?;
            return Err(e.into());
        }
    };
    b.attachment_id = a["id"].as_str().map(str::to_string);
    s.compute.store().bdm_update(&b).await?;
    if offloaded {
        // No host to connect to: the reservation is completed at once (the volume is `in-use`), as upstream.
        if let Err(e) = c.attachment_complete(&owner, b.attachment_id.as_deref().unwrap_or_default()).await {
            let _ = c.attachment_delete(&owner, b.attachment_id.as_deref().unwrap_or_default()).await;
            s.compute.store().bdm_delete(&b.id).await?;
            return Err(e.into());
        }
    } else {
        conductor.attach_volume(inst, b.clone(), rid.0.clone());
    }
    Ok(Json(json!({"volumeAttachment": view(&b, mv)})))
}

async fn detach(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    Path((id, volume_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let inst = super::servers::visible_server(&s, &ctx, &id, "os_compute_api:os-volumes-attachments:delete").await?;
    let b = attached(&s, &inst.uuid).await?.into_iter().find(|b| b.volume_id.as_deref() == Some(volume_id.as_str()));
    let b = b.ok_or_else(|| not_attached(&inst.uuid, &volume_id))?;
    attachable(&s, &ctx, &inst, "detach_volume", mv)?;
    if b.boot_index == Some(0) {
        return Err(ApiError::bad_request("Cannot detach a root device volume"));
    }
    let c = volumes(&s)?;
    let conductor = s.compute.conductor()?;
    c.action(As::User(token(&headers)), &inst.project_id, &volume_id, &json!({"os-begin_detaching": {}})).await?;
    conductor.detach_volume(inst, b, rid.0.clone());
    Ok(StatusCode::ACCEPTED)
}

/// `PUT`: swapping a server's volume for another (upstream's admin-only `swap_volume`) needs a driver that can
/// copy a live disk; no driver here can.
async fn swap(
    State(s): State<AppState>,
    ctx: Context,
    Path((id, volume_id)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<StatusCode, ApiError> {
    let inst = super::servers::visible_server(&s, &ctx, &id, "os_compute_api:os-volumes-attachments:swap").await?;
    let b = body(&bytes)?;
    let m = member(&b, "volumeAttachment")?;
    only(m, &["volumeId", "device", "tag", "delete_on_termination", "id", "serverId"])?;
    if !matches!(m.get("volumeId"), Some(Value::String(t)) if uuid::Uuid::parse_str(t).is_ok()) {
        return Err(invalid("volumeId", m.get("volumeId").unwrap_or(&Value::Null), "is not a 'uuid'"));
    }
    if !attached(&s, &inst.uuid).await?.iter().any(|b| b.volume_id.as_deref() == Some(volume_id.as_str())) {
        return Err(not_attached(&inst.uuid, &volume_id));
    }
    Err(ApiError::bad_request("Feature not supported: swapping volumes is not supported by this cloud's hypervisor drivers."))
}

// ----- os-volumes -----

/// A volume in Nova's shape (upstream's `_translate_volume_detail_view`).
fn volume_view(vol: &Value) -> Value {
    let attachments: Vec<Value> = vol["attachments"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| json!({"id": vol["id"], "volumeId": vol["id"], "serverId": x["server_id"], "device": x["device"]}))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "id": vol["id"],
        "status": vol["status"],
        "size": vol["size"],
        "availabilityZone": vol["availability_zone"],
        "createdAt": vol["created_at"],
        "displayName": vol["name"],
        "displayDescription": vol["description"],
        "volumeType": vol["volume_type"],
        "snapshotId": vol["snapshot_id"],
        "metadata": if vol["metadata"].is_object() { vol["metadata"].clone() } else { json!({}) },
        "attachments": if attachments.is_empty() { json!([{}]) } else { json!(attachments) },
    })
}

fn enforce(s: &AppState, ctx: &Context, rule: &str) -> Result<(), ApiError> {
    s.policy.enforce(rule, ctx, &json!({"project_id": project(ctx), "user_id": ctx.user_id}))
}

fn paged(items: Vec<Value>, q: &api_common::QueryPairs) -> Result<Vec<Value>, ApiError> {
    let num = |key: &str| -> Result<Option<usize>, ApiError> {
        match q.get(key) {
            None => Ok(None),
            Some(t) => t.parse::<usize>().map(Some).map_err(|_| ApiError::bad_request(format!("{key} param must be an integer"))),
        }
    };
    let offset = num("offset")?.unwrap_or(0);
    let limit = num("limit")?.unwrap_or(usize::MAX);
    Ok(items.into_iter().skip(offset).take(limit).collect())
}

async fn volume_list(
    State(s): State<AppState>,
    ctx: Context,
    headers: HeaderMap,
    q: api_common::QueryPairs,
) -> Result<Json<Value>, ApiError> {
    enforce(&s, &ctx, "os_compute_api:os-volumes:list")?;
    let c = volumes(&s)?;
    let (status, v) = c.send(As::User(token(&headers)), Method::GET, &project(&ctx), "/volumes/detail", None).await?;
    if !status.is_success() {
        return Err(passed_on(status, &v));
    }
    let items = v["volumes"].as_array().map(|a| a.iter().map(volume_view).collect()).unwrap_or_default();
    Ok(Json(json!({"volumes": paged(items, &q)?})))
}

async fn volume_show(
    State(s): State<AppState>,
    ctx: Context,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    enforce(&s, &ctx, "os_compute_api:os-volumes:show")?;
    let c = volumes(&s)?;
    let vol = c
        .get(As::User(token(&headers)), &project(&ctx), &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Volume {id} could not be found.")))?;
    Ok(Json(json!({"volume": volume_view(&vol)})))
}

async fn volume_create(
    State(s): State<AppState>,
    ctx: Context,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    enforce(&s, &ctx, "os_compute_api:os-volumes:create")?;
    let b = body(&bytes)?;
    let m = member(&b, "volume")?;
    only(m, &["size", "display_name", "display_description", "volume_type", "metadata", "availability_zone", "snapshot_id"])?;
    let size = match m.get("size") {
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n > 0) => json!(n),
        Some(Value::String(t)) if t.parse::<i64>().is_ok_and(|n| n > 0) => json!(t.parse::<i64>().unwrap_or(1)),
        Some(other) => return Err(invalid("size", other, &format!("{other} is not a positive integer"))),
        None => return Err(ApiError::bad_request("Invalid input for field/attribute volume. 'size' is a required property")),
    };
    let mut vol = json!({"size": size});
    for (from, to) in [
        ("display_name", "name"),
        ("display_description", "description"),
        ("volume_type", "volume_type"),
        ("metadata", "metadata"),
        ("availability_zone", "availability_zone"),
        ("snapshot_id", "snapshot_id"),
    ] {
        if let Some(x) = m.get(from).filter(|x| !x.is_null()) {
            vol[to] = x.clone();
        }
    }
    let c = volumes(&s)?;
    let (status, v) = c.send(As::User(token(&headers)), Method::POST, &project(&ctx), "/volumes", Some(&json!({"volume": vol}))).await?;
    if !status.is_success() {
        return Err(passed_on(status, &v));
    }
    Ok(Json(json!({"volume": volume_view(&v["volume"])})))
}

async fn volume_delete(
    State(s): State<AppState>,
    ctx: Context,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    enforce(&s, &ctx, "os_compute_api:os-volumes:delete")?;
    if !safe(&id) {
        return Err(ApiError::not_found(format!("Volume {id} could not be found.")));
    }
    let c = volumes(&s)?;
    let (status, v) = c.send(As::User(token(&headers)), Method::DELETE, &project(&ctx), &format!("/volumes/{id}"), None).await?;
    if !status.is_success() {
        return Err(passed_on(status, &v));
    }
    Ok(StatusCode::ACCEPTED)
}

// ----- os-snapshots -----

fn snapshot_view(sn: &Value) -> Value {
    json!({
        "id": sn["id"],
        "volumeId": sn["volume_id"],
        "status": sn["status"],
        "size": sn["size"],
        "createdAt": sn["created_at"],
        "displayName": sn["name"],
        "displayDescription": sn["description"],
    })
}

async fn snapshot_list(
    State(s): State<AppState>,
    ctx: Context,
    headers: HeaderMap,
    q: api_common::QueryPairs,
) -> Result<Json<Value>, ApiError> {
    enforce(&s, &ctx, "os_compute_api:os-volumes:snapshots:list")?;
    let c = volumes(&s)?;
    let (status, v) = c.send(As::User(token(&headers)), Method::GET, &project(&ctx), "/snapshots/detail", None).await?;
    if !status.is_success() {
        return Err(passed_on(status, &v));
    }
    let items = v["snapshots"].as_array().map(|a| a.iter().map(snapshot_view).collect()).unwrap_or_default();
    Ok(Json(json!({"snapshots": paged(items, &q)?})))
}

async fn snapshot_show(
    State(s): State<AppState>,
    ctx: Context,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    enforce(&s, &ctx, "os_compute_api:os-volumes:snapshots:show")?;
    let not_found = || ApiError::not_found(format!("Snapshot {id} could not be found."));
    if !safe(&id) {
        return Err(not_found());
    }
    let c = volumes(&s)?;
    let (status, v) = c.send(As::User(token(&headers)), Method::GET, &project(&ctx), &format!("/snapshots/{id}"), None).await?;
    if status.as_u16() == 404 || status.as_u16() == 400 {
        return Err(not_found());
    }
    if !status.is_success() {
        return Err(passed_on(status, &v));
    }
    Ok(Json(json!({"snapshot": snapshot_view(&v["snapshot"])})))
}

async fn snapshot_create(
    State(s): State<AppState>,
    ctx: Context,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    enforce(&s, &ctx, "os_compute_api:os-volumes:snapshots:create")?;
    let b = body(&bytes)?;
    let m = member(&b, "snapshot")?;
    only(m, &["volume_id", "force", "display_name", "display_description"])?;
    let volume_id = match m.get("volume_id") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        Some(other) => return Err(invalid("volume_id", other, &format!("{other} is not of type 'string'"))),
        None => return Err(ApiError::bad_request("Invalid input for field/attribute snapshot. 'volume_id' is a required property")),
    };
    let force = bool_field(m, "force")?.unwrap_or(false);
    let mut sn = json!({"volume_id": volume_id, "force": force});
    if let Some(n) = m.get("display_name").filter(|x| !x.is_null()) {
        sn["name"] = n.clone();
    }
    if let Some(d) = m.get("display_description").filter(|x| !x.is_null()) {
        sn["description"] = d.clone();
    }
    let c = volumes(&s)?;
    let (status, v) = c.send(As::User(token(&headers)), Method::POST, &project(&ctx), "/snapshots", Some(&json!({"snapshot": sn}))).await?;
    if !status.is_success() {
        return Err(passed_on(status, &v));
    }
    Ok(Json(json!({"snapshot": snapshot_view(&v["snapshot"])})))
}

async fn snapshot_delete(
    State(s): State<AppState>,
    ctx: Context,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    enforce(&s, &ctx, "os_compute_api:os-volumes:snapshots:delete")?;
    if !safe(&id) {
        return Err(ApiError::not_found(format!("Snapshot {id} could not be found.")));
    }
    let c = volumes(&s)?;
    let (status, v) = c.send(As::User(token(&headers)), Method::DELETE, &project(&ctx), &format!("/snapshots/{id}"), None).await?;
    if !status.is_success() {
        return Err(passed_on(status, &v));
    }
    Ok(StatusCode::ACCEPTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_follow_upstreams_pattern() {
        assert!(valid_device("/dev/vdb"));
        assert!(valid_device("vdc"));
        assert!(valid_device("/dev/xvda1"));
        assert!(!valid_device("/dev/"));
        assert!(!valid_device("/dev/vd-b"));
        assert!(!valid_device("b"));
    }

    #[test]
    fn unattached_volumes_show_one_empty_attachment_as_upstream() {
        let v = volume_view(&json!({"id": "v1", "status": "available", "size": 1, "name": "n", "attachments": []}));
        assert_eq!(v["attachments"], json!([{}]));
        assert_eq!(v["displayName"], "n");
        let v = volume_view(&json!({"id": "v1", "attachments": [{"server_id": "s", "device": "/dev/vdb"}]}));
        assert_eq!(v["attachments"][0]["serverId"], "s");
        assert_eq!(v["attachments"][0]["volumeId"], "v1");
    }
}

// ----- block_device_mapping_v2 of a create -----

/// One entry of a create's `block_device_mapping_v2` that becomes a volume: the mapping (without instance) and,
/// for a volume compute makes (from an image, a snapshot, or blank), the volume to create.
#[derive(Clone, Debug)]
pub(crate) struct PlannedVolume {
    pub bdm: Bdm,
    pub create: Option<Value>,
}

/// A create's block devices, checked: the volumes to attach (root first), and the image a local root disk
/// comes from (an image boot).
#[derive(Clone, Debug, Default)]
pub(crate) struct BdmPlan {
    pub volumes: Vec<PlannedVolume>,
    pub local_root_image: Option<String>,
}

impl BdmPlan {
    /// The instance boots from a volume.
    pub(crate) fn boots_from_volume(&self) -> bool {
        self.volumes.iter().any(|p| p.bdm.boot_index == Some(0))
    }
}

fn bdm_invalid(reason: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Block Device Mapping is Invalid: {reason}"))
}

fn boot_index(d: &Map<String, Value>) -> Result<Option<i64>, ApiError> {
    match d.get("boot_index") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64().filter(|i| *i >= 0)),
        Some(Value::String(t)) if t.parse::<i64>().is_ok() => Ok(t.parse::<i64>().ok().filter(|i| *i >= 0)),
        Some(other) => Err(invalid("boot_index", other, &format!("{other} is not of type 'integer', 'string', 'null'"))),
    }
}

/// Checks a create's `block_device_mapping_v2` (upstream's rules, in its words); volumes named must exist and be
/// available to the caller. Nothing is created here.
pub(crate) async fn plan_bdms(
    s: &AppState,
    token: &str,
    project: &str,
    list: &[Value],
    mv: Microversion,
    max_count: i64,
) -> Result<BdmPlan, ApiError> {
    let mut plan = BdmPlan::default();
    let mut allowed = vec![
        "source_type", "destination_type", "uuid", "boot_index", "volume_size", "delete_on_termination", "device_name",
        "guest_format", "disk_bus", "device_type", "no_device", "connection_info", "snapshot_id", "volume_id", "image_id",
    ];
    if (v(32)..v(37)).contains(&mv) || mv >= v(42) {
        allowed.push("tag");
    }
    if mv >= v(67) {
        allowed.push("volume_type");
    }
    let mut boot_indexes = Vec::new();
    for item in list {
        let Value::Object(d) = item else {
            return Err(invalid("block_device_mapping_v2", item, &format!("{item} is not of type 'object'")));
        };
        only(d, &allowed)?;
        let text = |k: &str| d.get(k).and_then(Value::as_str).filter(|t| !t.is_empty()).map(str::to_string);
        let source = text("source_type").unwrap_or_else(|| "volume".into());
        if !["volume", "image", "snapshot", "blank"].contains(&source.as_str()) {
            return Err(invalid("source_type", &json!(source), &format!("'{source}' is not one of ['volume', 'image', 'snapshot', 'blank']")));
        }
        let destination = text("destination_type").unwrap_or_else(|| if source == "volume" || source == "snapshot" { "volume".into() } else { "local".into() });
        if !["local", "volume"].contains(&destination.as_str()) {
            return Err(invalid("destination_type", &json!(destination), &format!("'{destination}' is not one of ['local', 'volume']")));
        }
        let index = boot_index(d)?;
        if let Some(i) = index {
            boot_indexes.push(i);
        }
        let uuid = text("uuid");
        if let Some(u) = &uuid
            && !safe(u)
        {
            return Err(invalid("uuid", &json!(u), &format!("'{u}' does not match '^[a-zA-Z0-9._-]*$'")));
        }
        let size = match d.get("volume_size") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n >= 0) => n.as_i64(),
            Some(Value::String(t)) if t.parse::<i64>().is_ok_and(|n| n >= 0) => t.parse::<i64>().ok(),
            Some(other) => return Err(invalid("volume_size", other, &format!("{other} is not of type 'integer', 'string'"))),
        };
        let delete_on_termination = bool_field(d, "delete_on_termination")?.unwrap_or(false);
        let tag = tag_field(d)?;
        if destination == "local" {
            if source == "image" && index == Some(0) {
                plan.local_root_image = uuid.clone();
            } else if source == "volume" || source == "snapshot" {
                return Err(bdm_invalid("Mapping image to local is not supported."));
            }
            // Ephemeral and swap disks come from the flavor.
            continue;
        }
        let mut bdm = Bdm {
            id: uuid::Uuid::new_v4().to_string(),
            boot_index: index,
            source_type: source.clone(),
            destination_type: destination,
            volume_size: size,
            delete_on_termination,
            tag,
            device_name: if index == Some(0) { Some("/dev/vda".into()) } else { text("device_name") },
            ..Default::default()
        };
        let c = volumes(s).map_err(|_| bdm_invalid("volumes need the block storage service, which compute cannot reach."))?;
        let create = match source.as_str() {
            "volume" => {
                let id = uuid.ok_or_else(|| bdm_invalid("a volume mapping needs the volume's uuid."))?;
                let vol = c
                    .get(As::User(token), project, &id)
                    .await?
                    .ok_or_else(|| bdm_invalid(format!("failed to get volume {id}.")))?;
                if vol["status"] != json!("available") {
                    return Err(ApiError::bad_request(format!(
                        "Invalid volume: volume '{id}' status must be 'available'. Currently in '{}'",
                        vol["status"].as_str().unwrap_or_default()
                    )));
                }
                // A volume the server boots from must be bootable (upstream's `InvalidBDMVolumeNotBootable`).
                if index == Some(0) && vol["bootable"] != json!("true") && vol["bootable"] != json!(true) {
                    return Err(bdm_invalid(format!("Block Device {id} is not bootable.")));
                }
                bdm.volume_id = Some(id);
                None
            }
            "image" => {
                let id = uuid.ok_or_else(|| bdm_invalid("an image mapping needs the image's uuid."))?;
                let size = size.filter(|n| *n > 0).ok_or_else(|| {
                    bdm_invalid("Images with destination_type 'volume' need to have a non-zero size specified")
                })?;
                bdm.image_id = Some(id.clone());
                Some(json!({"size": size, "imageRef": id}))
            }
            "snapshot" => {
                let id = uuid.ok_or_else(|| bdm_invalid("a snapshot mapping needs the snapshot's uuid."))?;
                let mut vol = json!({"snapshot_id": id});
                if let Some(n) = size.filter(|n| *n > 0) {
                    vol["size"] = json!(n);
                }
                Some(vol)
            }
            _ => {
                let size = size.filter(|n| *n > 0).ok_or_else(|| bdm_invalid("a blank volume needs a non-zero volume_size."))?;
                Some(json!({"size": size}))
            }
        };
        let create = create.map(|mut vol| {
            if let Some(vt) = text("volume_type") {
                vol["volume_type"] = json!(vt);
            }
            vol
        });
        plan.volumes.push(PlannedVolume { bdm, create });
    }
    if !plan.volumes.is_empty() && max_count > 1 {
        return Err(ApiError::bad_request("Cannot attach one or more volumes to multiple instances"));
    }
    boot_indexes.sort_unstable();
    if boot_indexes.iter().enumerate().any(|(i, b)| *b != i as i64) {
        return Err(bdm_invalid("Boot sequence for the instance and image/block device mapping combination is not valid."));
    }
    plan.volumes.sort_by_key(|p| (p.bdm.boot_index != Some(0), p.bdm.boot_index.unwrap_or(i64::MAX)));
    Ok(plan)
}

/// Creates the volumes a plan makes (with the caller's token, in the caller's project); on a failure those
/// made so far are deleted again. Returns the mappings with their volumes.
pub(crate) async fn make_volumes(s: &AppState, token: &str, project: &str, plan: &BdmPlan) -> Result<Vec<Bdm>, ApiError> {
    let mut out: Vec<Bdm> = Vec::new();
    let mut made: Vec<String> = Vec::new();
    for p in &plan.volumes {
        let mut b = p.bdm.clone();
        if let Some(vol) = &p.create {
            let c = volumes(s)?;
            match c.create(As::User(token), project, vol).await {
                Ok(v) => {
                    let id = v["id"].as_str().unwrap_or_default().to_string();
                    made.push(id.clone());
                    b.volume_id = Some(id);
                }
                Err(e) => {
                    for id in &made {
                        let _ = c.delete(As::User(token), project, id).await;
                    }
                    return Err(match e {
                        crate::Error::BadRequest(m) => bdm_invalid(m),
                        other => other.into(),
                    });
                }
            }
        }
        out.push(b);
    }
    Ok(out)
}

/// Gives the mappings of a create their guest devices: the root volume `/dev/vda`, the others the next free ones.
pub(crate) fn assign_devices(bdms: &mut [Bdm], flavor: &compute_rpc::FlavorSpec, config_drive: bool) {
    for i in 0..bdms.len() {
        if bdms[i].boot_index == Some(0) {
            bdms[i].device_name = Some("/dev/vda".into());
            continue;
        }
        let requested = bdms[i].device_name.take();
        let others: Vec<Bdm> = bdms[..i].to_vec();
        bdms[i].device_name = Some(next_device(flavor, config_drive, &others, requested.as_deref()));
    }
}

/// Deletes volumes [`make_volumes`] made for a create that then failed.
pub(crate) async fn unmake_volumes(s: &AppState, token: &str, project: &str, plan: &BdmPlan, bdms: &[Bdm]) {
    let Ok(c) = volumes(s) else { return };
    for (p, b) in plan.volumes.iter().zip(bdms) {
        if p.create.is_some()
            && let Some(id) = &b.volume_id
        {
            let _ = c.delete(As::User(token), project, id).await;
        }
    }
}
