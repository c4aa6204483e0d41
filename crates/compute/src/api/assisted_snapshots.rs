//! `os-assisted-volume-snapshots`: a file-based block storage driver asks compute to snapshot a volume attached to a
//! server (the guest's disk continues on a new qcow2 file) and later to merge such a file away, as upstream's
//! assisted volume snapshots. For services and administrators. The API finds the server by the volume's mapping
//! and hands the work to the conductor, which tells the block storage service how it went.

use ::auth::Context;
use api_common::{ApiError, RequestId};
use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    routing::{delete, post},
};
use compute_rpc::vm_state;
use serde_json::{Map, Value, json};

use super::{AppState, body, invalid, member, only};
use crate::store::InstanceRow;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/os-assisted-volume-snapshots", post(create))
        .route("/v2.1/os-assisted-volume-snapshots/{id}", delete(remove))
}

fn required_string<'a>(m: &'a Map<String, Value>, key: &str) -> Result<&'a str, ApiError> {
    match m.get(key) {
        Some(Value::String(t)) => Ok(t),
        Some(other) => Err(invalid(key, other, &format!("{other} is not of type 'string'"))),
        None => Err(ApiError::bad_request(format!("Invalid input for field/attribute {key}. Value: None. '{key}' is a required property"))),
    }
}

/// The server a volume is attached to: a 400 when it is attached to none (upstream's `VolumeBDMNotFound`), a 409
/// when the server has no host or is busy.
async fn server_of(s: &AppState, volume_id: &str) -> Result<InstanceRow, ApiError> {
    let not_attached = || ApiError::bad_request(format!("No volume Block Device Mapping with id {volume_id}."));
    let bdms = s.compute.store().bdms_of_volume(volume_id).await?;
    if bdms.len() > 1 {
        return Err(ApiError::bad_request(format!("Volume {volume_id} is attached to more than one instance.")));
    }
    let b = bdms.into_iter().next().ok_or_else(not_attached)?;
    let inst = s.compute.store().instance_get(&b.instance_uuid).await?.filter(|i| !i.deleted).ok_or_else(not_attached)?;
    if inst.host.is_none() || inst.vm_state == vm_state::SHELVED_OFFLOADED {
        return Err(ApiError::conflict(format!("Instance {} is not ready", inst.uuid)));
    }
    if inst.task_state.is_some() {
        return Err(ApiError::conflict(format!(
            "Cannot 'volume_snapshot' instance {} while it is in task_state {}",
            inst.uuid,
            inst.task_state.as_deref().unwrap_or_default()
        )));
    }
    Ok(inst)
}

/// `POST`: `{"snapshot": {"volume_id", "create_info": {"snapshot_id", "type": "qcow2", "new_file", "id"?}}}`;
/// answers `{"snapshot": {"id": create_info.id, "volumeId"}}` as upstream (the snapshot is made in the background).
async fn create(State(s): State<AppState>, ctx: Context, Extension(rid): Extension<RequestId>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-assisted-volume-snapshots:create")?;
    let b = body(&bytes)?;
    let snap = member(&b, "snapshot")?;
    only(snap, &["volume_id", "create_info"])?;
    let volume_id = required_string(snap, "volume_id")?.to_string();
    let info = match snap.get("create_info") {
        Some(Value::Object(m)) => m,
        Some(other) => return Err(invalid("create_info", other, &format!("{other} is not of type 'object'"))),
        None => return Err(ApiError::bad_request("Invalid input for field/attribute create_info. Value: None. 'create_info' is a required property")),
    };
    only(info, &["snapshot_id", "type", "new_file", "id"])?;
    required_string(info, "snapshot_id")?;
    required_string(info, "new_file")?;
    let kind = required_string(info, "type")?;
    if kind != "qcow2" {
        return Err(invalid("type", &json!(kind), &format!("'{kind}' is not one of ['qcow2']")));
    }
    let new_file = info["new_file"].as_str().unwrap_or_default();
    if new_file.is_empty() || new_file.contains('/') || new_file == ".." {
        return Err(invalid("new_file", &json!(new_file), "is not a file name"));
    }
    let inst = server_of(&s, &volume_id).await?;
    let conductor = s.compute.conductor()?;
    conductor.volume_snapshot_create(inst, volume_id.clone(), Value::Object(info.clone()), rid.0.clone());
    Ok(Json(json!({"snapshot": {"id": info.get("id").cloned().unwrap_or(Value::Null), "volumeId": volume_id}})))
}

/// `DELETE …/{snapshot id}?delete_info={"volume_id": …, "file_to_merge": …, "merge_target_file": …}`: 204.
async fn remove(
    State(s): State<AppState>,
    ctx: Context,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
    q: api_common::QueryPairs,
) -> Result<StatusCode, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-assisted-volume-snapshots:delete")?;
    let raw = q.get("delete_info").ok_or_else(|| ApiError::bad_request("'delete_info'"))?;
    let info: Value = serde_json::from_str(raw).map_err(|e| ApiError::bad_request(format!("delete_info is not JSON: {e}")))?;
    let volume_id = info.get("volume_id").and_then(Value::as_str).ok_or_else(|| ApiError::bad_request("'volume_id'"))?.to_string();
    for key in ["file_to_merge", "merge_target_file"] {
        if let Some(f) = info.get(key).and_then(Value::as_str)
            && (f.contains('/') || f == "..")
        {
            return Err(invalid(key, &json!(f), "is not a file name"));
        }
    }
    let inst = server_of(&s, &volume_id).await?;
    let conductor = s.compute.conductor()?;
    conductor.volume_snapshot_delete(inst, volume_id, id, info, rid.0.clone());
    Ok(StatusCode::NO_CONTENT)
}
