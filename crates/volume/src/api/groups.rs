//! Group types and their specs (3.11), groups (3.13; from a source 3.14; reset-status 3.20), group snapshots
//! (3.14; reset-status 3.19), volume type encryption, and backup records (export/import).

use api_common::{ApiError, Microversion, QueryPairs};
use auth::Context;
use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};

use super::{AppState, Params, body, entity, listing, p, param, views};
use crate::service::{GROUP, GROUP_SNAPSHOT};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(&p("/group_types"), get(group_type_list).post(group_type_create))
        .route(&p("/group_types/{id}"), get(group_type_show).put(group_type_update).delete(group_type_delete))
        .route(&p("/group_types/{id}/group_specs"), get(group_specs_list).post(group_specs_set))
        .route(&p("/group_types/{id}/group_specs/{key}"), get(group_spec_show).put(group_spec_update).delete(group_spec_delete))
        .route(&p("/groups"), get(group_list).post(group_create))
        .route(&p("/groups/detail"), get(group_list_detail))
        .route(&p("/groups/action"), post(group_create_from_src))
        .route(&p("/groups/{id}"), get(group_show).put(group_update))
        .route(&p("/groups/{id}/action"), post(group_action))
        .route(&p("/group_snapshots"), get(group_snapshot_list).post(group_snapshot_create))
        .route(&p("/group_snapshots/detail"), get(group_snapshot_list_detail))
        .route(&p("/group_snapshots/{id}"), get(group_snapshot_show).delete(group_snapshot_delete))
        .route(&p("/group_snapshots/{id}/action"), post(group_snapshot_action))
        .route(&p("/types/{id}/encryption"), get(encryption_show).post(encryption_create))
        .route(&p("/types/{id}/encryption/{key}"), get(encryption_item).put(encryption_update).delete(encryption_delete))
        .route(&p("/backups/{id}/export_record"), get(backup_export))
        .route(&p("/backups/import_record"), post(backup_import))
}

fn since(v: Microversion, minor: u32) -> Result<(), ApiError> {
    if v < Microversion::new(3, minor) { Err(ApiError::not_found("The resource could not be found.")) } else { Ok(()) }
}

/// `is_public` as the group type list takes it: a boolean, or `None`/absent for every type.
fn is_public_filter(q: &QueryPairs) -> Result<Option<bool>, ApiError> {
    match q.get("is_public") {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("none") || v.is_empty() => Ok(None),
        Some(_) => q.get_bool("is_public"),
    }
}

// ------------------------------------------------------------------------------------------------ group types

async fn group_type_list(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    since(mv, 11)?;
    let caller = s.caller(&ctx, &headers);
    let mut is_public = is_public_filter(&q)?;
    if !caller.is_admin {
        // Users see the public types and the ones shared with them, whatever they ask.
        is_public = None;
    }
    let types: Vec<Value> = s.volume.group_type_list(&caller, is_public).await?.iter().map(|t| views::group_type(t, caller.is_admin)).collect();
    let mut q2 = q.clone();
    if q2.get("sort").is_none() && !q2.contains("sort_key") {
        q2.0.push(("sort".into(), "name:asc".into()));
    }
    let types = listing::filter(types, &q2, &[]);
    let (page, _) = listing::page(types, &q2, "")?;
    Ok(Json(json!({"group_types": page})))
}

async fn group_type_show(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params) -> Result<Json<Value>, ApiError> {
    since(mv, 11)?;
    let caller = s.caller(&ctx, &headers);
    let id = param(&path, "id");
    let t = if id == "default" { s.volume.group_type_default().await? } else { s.volume.group_type_get(&caller, id).await? };
    Ok(Json(json!({"group_type": views::group_type(&t, caller.is_admin)})))
}

async fn group_type_create(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, bytes: Bytes) -> Result<Response, ApiError> {
    since(mv, 11)?;
    s.enforce(&ctx, "group:group_types_manage", None)?;
    let b = body(&bytes)?;
    let req = entity(&b, "group_type")?;
    let caller = s.caller(&ctx, &headers);
    let t = s.volume.group_type_create(req).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"group_type": views::group_type(&t, caller.is_admin)}))).into_response())
}

async fn group_type_update(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    since(mv, 11)?;
    s.enforce(&ctx, "group:group_types_manage", None)?;
    let b = body(&bytes)?;
    let req = entity(&b, "group_type")?;
    let caller = s.caller(&ctx, &headers);
    let t = s.volume.group_type_update(&caller, param(&path, "id"), req).await?;
    Ok(Json(json!({"group_type": views::group_type(&t, caller.is_admin)})))
}

async fn group_type_delete(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params) -> Result<StatusCode, ApiError> {
    since(mv, 11)?;
    s.enforce(&ctx, "group:group_types_manage", None)?;
    let caller = s.caller(&ctx, &headers);
    s.volume.group_type_delete(&caller, param(&path, "id")).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn group_specs_list(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params) -> Result<Json<Value>, ApiError> {
    since(mv, 11)?;
    s.enforce(&ctx, "group:group_types_specs", None)?;
    let caller = s.caller(&ctx, &headers);
    let t = s.volume.group_type_get(&caller, param(&path, "id")).await?;
    let specs = if t["group_specs"].is_object() { t["group_specs"].clone() } else { json!({}) };
    Ok(Json(json!({"group_specs": specs})))
}

async fn group_specs_set(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params, bytes: Bytes) -> Result<Response, ApiError> {
    since(mv, 11)?;
    s.enforce(&ctx, "group:group_types_specs", None)?;
    let b = body(&bytes)?;
    let specs = entity(&b, "group_specs")?;
    let caller = s.caller(&ctx, &headers);
    let out = s.volume.group_type_set_specs(&caller, param(&path, "id"), specs).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"group_specs": out}))).into_response())
}

async fn group_spec_show(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params) -> Result<Json<Value>, ApiError> {
    since(mv, 11)?;
    s.enforce(&ctx, "group:group_types_specs", None)?;
    let caller = s.caller(&ctx, &headers);
    let t = s.volume.group_type_get(&caller, param(&path, "id")).await?;
    let key = param(&path, "key");
    match t["group_specs"].get(key) {
        Some(v) => Ok(Json(json!({key: v}))),
        None => Err(ApiError::not_found(format!("Group Type {} has no specs with key {key}.", t["id"].as_str().unwrap_or_default()))),
    }
}

async fn group_spec_update(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    since(mv, 11)?;
    s.enforce(&ctx, "group:group_types_specs", None)?;
    let b = body(&bytes)?;
    let key = param(&path, "key");
    let Some(obj) = b.as_object() else { return Err(ApiError::bad_request("Malformed request body")) };
    if obj.len() > 1 {
        return Err(ApiError::bad_request("Request body contains too many items."));
    }
    if !obj.contains_key(key) {
        return Err(ApiError::bad_request("Request body and URI mismatch"));
    }
    let caller = s.caller(&ctx, &headers);
    let out = s.volume.group_type_set_specs(&caller, param(&path, "id"), &b).await?;
    Ok(Json(Value::Object(out)))
}

async fn group_spec_delete(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params) -> Result<StatusCode, ApiError> {
    since(mv, 11)?;
    s.enforce(&ctx, "group:group_types_specs", None)?;
    let caller = s.caller(&ctx, &headers);
    s.volume.group_type_delete_spec(&caller, param(&path, "id"), param(&path, "key")).await?;
    Ok(StatusCode::ACCEPTED)
}

// ------------------------------------------------------------------------------------------------ groups

async fn group_view(s: &AppState, g: &Value, mv: Microversion, detail: bool, list_volume: bool) -> Result<Value, ApiError> {
    let volumes = if detail && list_volume && mv >= Microversion::new(3, 25) {
        Some(s.volume.group_volumes(g["id"].as_str().unwrap_or_default()).await?.iter().map(|v| v["id"].clone()).collect::<Vec<_>>())
    } else {
        None
    };
    Ok(views::group(g, mv, detail, volumes))
}

async fn group_listing(s: &AppState, ctx: &Context, headers: &HeaderMap, q: &QueryPairs, mv: Microversion, detail: bool) -> Result<Json<Value>, ApiError> {
    since(mv, 13)?;
    s.enforce(ctx, "group:get_all", None)?;
    listing::check_sort(q, &["id", "name", "description", "status", "created_at", "availability_zone", "group_type"])?;
    let caller = s.caller(ctx, headers);
    let all = q.get_bool("all_tenants")?.unwrap_or(false);
    let list_volume = q.get_bool("list_volume")?.unwrap_or(false);
    let docs = s.volume.group_list(&caller, all).await?;
    let full: Vec<Value> = docs.iter().map(|g| views::group(g, mv, true, None)).collect();
    let mut q2 = q.clone();
    q2.0.retain(|(k, _)| k != "list_volume");
    let full = listing::filter(full, &q2, &[]);
    let project = ctx.project_id.clone().unwrap_or_default();
    let path = if detail { "groups/detail" } else { "groups" };
    let (page, links) = listing::page(full, &q2, &format!("{}/v3/{project}/{path}", s.base_url))?;
    let mut out = Vec::new();
    for v in &page {
        if let Some(d) = docs.iter().find(|d| d["id"] == v["id"]) {
            out.push(group_view(s, d, mv, detail, list_volume).await?);
        }
    }
    let mut body = json!({"groups": out});
    if !links.is_empty() {
        body["group_links"] = json!(links);
    }
    Ok(Json(body))
}

async fn group_list(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    group_listing(&s, &ctx, &headers, &q, mv, false).await
}

async fn group_list_detail(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    group_listing(&s, &ctx, &headers, &q, mv, true).await
}

async fn group_show(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    since(mv, 13)?;
    let caller = s.caller(&ctx, &headers);
    let g = s.volume.group_get(&caller, param(&path, "id")).await?;
    s.enforce(&ctx, "group:get", g["project_id"].as_str())?;
    let list_volume = q.get_bool("list_volume")?.unwrap_or(false);
    Ok(Json(json!({"group": group_view(&s, &g, mv, true, list_volume).await?})))
}

async fn group_create(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, bytes: Bytes) -> Result<Response, ApiError> {
    since(mv, 13)?;
    s.enforce(&ctx, "group:create", None)?;
    let b = body(&bytes)?;
    let req = entity(&b, "group")?;
    let caller = s.caller(&ctx, &headers);
    let g = s.volume.group_create(&caller, req).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"group": views::group(&g, mv, false, None)}))).into_response())
}

async fn group_create_from_src(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, bytes: Bytes) -> Result<Response, ApiError> {
    since(mv, 14)?;
    s.enforce(&ctx, "group:create", None)?;
    let b = body(&bytes)?;
    let req = entity(&b, "create-from-src")?;
    let caller = s.caller(&ctx, &headers);
    let g = s.volume.group_create_from_source(&caller, req).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"group": views::group(&g, mv, false, None)}))).into_response())
}

async fn group_update(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params, bytes: Bytes) -> Result<StatusCode, ApiError> {
    since(mv, 13)?;
    let b = body(&bytes)?;
    let req = entity(&b, "group")?;
    let caller = s.caller(&ctx, &headers);
    let id = param(&path, "id");
    let g = s.volume.group_get(&caller, id).await?;
    s.enforce(&ctx, "group:update", g["project_id"].as_str())?;
    s.volume.group_update(&caller, id, req).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `POST /groups/{id}/action`: `delete` (with `delete-volumes`) or `reset_status` (3.20).
async fn group_action(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params, bytes: Bytes) -> Result<StatusCode, ApiError> {
    since(mv, 13)?;
    let b = body(&bytes)?;
    let caller = s.caller(&ctx, &headers);
    let id = param(&path, "id");
    let g = s.volume.group_get(&caller, id).await?;
    if let Some(arg) = b.get("delete") {
        s.enforce(&ctx, "group:delete", g["project_id"].as_str())?;
        let delete_volumes = match arg.get("delete-volumes") {
            None | Some(Value::Null) => false,
            Some(v) => crate::service::parse_bool_json(v).ok_or_else(|| ApiError::bad_request(format!("Invalid value '{v}' for delete-volumes flag.")))?,
        };
        s.volume.group_delete(&caller, id, delete_volumes).await?;
        return Ok(StatusCode::ACCEPTED);
    }
    if let Some(arg) = b.get("reset_status") {
        since(mv, 20)?;
        s.enforce(&ctx, "group:reset_status", g["project_id"].as_str())?;
        s.volume.group_reset_status(&caller, GROUP, id, arg).await?;
        return Ok(StatusCode::ACCEPTED);
    }
    Err(ApiError::bad_request("There is no such action"))
}

// ------------------------------------------------------------------------------------------------ group snapshots

async fn group_snapshot_listing(s: &AppState, ctx: &Context, headers: &HeaderMap, q: &QueryPairs, mv: Microversion, detail: bool) -> Result<Json<Value>, ApiError> {
    since(mv, 14)?;
    s.enforce(ctx, "group:get_all_group_snapshots", None)?;
    listing::check_sort(q, &["id", "name", "description", "status", "created_at", "group_id"])?;
    let caller = s.caller(ctx, headers);
    let all = q.get_bool("all_tenants")?.unwrap_or(false);
    let docs = s.volume.group_snapshot_list(&caller, all).await?;
    let full: Vec<Value> = docs.iter().map(|g| views::group_snapshot(g, true)).collect();
    let full = listing::filter(full, q, &[]);
    let project = ctx.project_id.clone().unwrap_or_default();
    let path = if detail { "group_snapshots/detail" } else { "group_snapshots" };
    let (page, links) = listing::page(full, q, &format!("{}/v3/{project}/{path}", s.base_url))?;
    let out: Vec<Value> = page.iter().filter_map(|v| docs.iter().find(|d| d["id"] == v["id"])).map(|d| views::group_snapshot(d, detail)).collect();
    let mut body = json!({"group_snapshots": out});
    if !links.is_empty() {
        body["group_snapshots_links"] = json!(links);
    }
    Ok(Json(body))
}

async fn group_snapshot_list(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    group_snapshot_listing(&s, &ctx, &headers, &q, mv, false).await
}

async fn group_snapshot_list_detail(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    group_snapshot_listing(&s, &ctx, &headers, &q, mv, true).await
}

async fn group_snapshot_show(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params) -> Result<Json<Value>, ApiError> {
    since(mv, 14)?;
    let caller = s.caller(&ctx, &headers);
    let g = s.volume.group_snapshot_get(&caller, param(&path, "id")).await?;
    s.enforce(&ctx, "group:get_group_snapshot", g["project_id"].as_str())?;
    Ok(Json(json!({"group_snapshot": views::group_snapshot(&g, true)})))
}

async fn group_snapshot_create(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, bytes: Bytes) -> Result<Response, ApiError> {
    since(mv, 14)?;
    s.enforce(&ctx, "group:create_group_snapshot", None)?;
    let b = body(&bytes)?;
    let req = entity(&b, "group_snapshot")?;
    let caller = s.caller(&ctx, &headers);
    let g = s.volume.group_snapshot_create(&caller, req).await?;
    // The create answer names the group type too.
    let mut out = views::group_snapshot(&g, false);
    out["group_type_id"] = g["group_type_id"].clone();
    Ok((StatusCode::ACCEPTED, Json(json!({"group_snapshot": out}))).into_response())
}

async fn group_snapshot_delete(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params) -> Result<StatusCode, ApiError> {
    since(mv, 14)?;
    let caller = s.caller(&ctx, &headers);
    let id = param(&path, "id");
    let g = s.volume.group_snapshot_get(&caller, id).await?;
    s.enforce(&ctx, "group:delete_group_snapshot", g["project_id"].as_str())?;
    s.volume.group_snapshot_delete(&caller, id).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn group_snapshot_action(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params, bytes: Bytes) -> Result<StatusCode, ApiError> {
    since(mv, 14)?;
    let b = body(&bytes)?;
    let caller = s.caller(&ctx, &headers);
    let id = param(&path, "id");
    let g = s.volume.group_snapshot_get(&caller, id).await?;
    if let Some(arg) = b.get("reset_status") {
        since(mv, 19)?;
        s.enforce(&ctx, "group:reset_group_snapshot_status", g["project_id"].as_str())?;
        s.volume.group_reset_status(&caller, GROUP_SNAPSHOT, id, arg).await?;
        return Ok(StatusCode::ACCEPTED);
    }
    Err(ApiError::bad_request("There is no such action"))
}

// ------------------------------------------------------------------------------------------------ encryption types

fn encryption_view(e: &Value) -> Value {
    json!({
        "volume_type_id": e["volume_type_id"], "encryption_id": e["encryption_id"], "key_size": e["key_size"],
        "provider": e["provider"], "control_location": e["control_location"], "cipher": e["cipher"],
    })
}

/// `GET /types/{id}/encryption`: the record with its timestamps, or `{}` when the type has none.
async fn encryption_show(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:volume_type_encryption:get", None)?;
    let caller = s.caller(&ctx, &headers);
    Ok(Json(match s.volume.encryption_get(&caller, param(&path, "id")).await? {
        Some(e) => {
            let mut out = encryption_view(&e);
            for key in ["deleted", "created_at", "updated_at", "deleted_at"] {
                out[key] = e[key].clone();
            }
            out
        }
        None => json!({}),
    }))
}

/// `GET /types/{id}/encryption/{key}`: one field of the record (`encryption_key_id`'s show of upstream).
async fn encryption_item(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:volume_type_encryption:get", None)?;
    let caller = s.caller(&ctx, &headers);
    let key = param(&path, "key");
    let e = s.volume.encryption_get(&caller, param(&path, "id")).await?;
    match e.as_ref().map(encryption_view).and_then(|v| v.get(key).cloned()) {
        Some(v) => Ok(Json(json!({key: v}))),
        None => Err(ApiError::not_found("The resource could not be found.")),
    }
}

async fn encryption_create(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:volume_type_encryption:create", None)?;
    let b = body(&bytes)?;
    let req = entity(&b, "encryption")?;
    let caller = s.caller(&ctx, &headers);
    let e = s.volume.encryption_create(&caller, param(&path, "id"), req).await?;
    Ok(Json(json!({"encryption": encryption_view(&e)})))
}

async fn encryption_update(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:volume_type_encryption:update", None)?;
    let b = body(&bytes)?;
    let req = entity(&b, "encryption")?;
    let caller = s.caller(&ctx, &headers);
    let out = s.volume.encryption_update(&caller, param(&path, "id"), param(&path, "key"), req).await?;
    Ok(Json(json!({"encryption": out})))
}

async fn encryption_delete(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params) -> Result<StatusCode, ApiError> {
    s.enforce(&ctx, "volume_extension:volume_type_encryption:delete", None)?;
    let caller = s.caller(&ctx, &headers);
    s.volume.encryption_delete(&caller, param(&path, "id"), param(&path, "key")).await?;
    Ok(StatusCode::ACCEPTED)
}

// ------------------------------------------------------------------------------------------------ backup records

async fn backup_export(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "backup:export-import", None)?;
    let caller = s.caller(&ctx, &headers);
    let record = s.volume.backup_export(&caller, param(&path, "id")).await?;
    Ok(Json(json!({"backup-record": record})))
}

async fn backup_import(State(s): State<AppState>, ctx: Context, headers: HeaderMap, bytes: Bytes) -> Result<Response, ApiError> {
    s.enforce(&ctx, "backup:backup-import", None)?;
    let b = body(&bytes)?;
    let req = entity(&b, "backup-record")?;
    let caller = s.caller(&ctx, &headers);
    let d = s.volume.backup_import(&caller, req).await?;
    let project = d["project_id"].as_str().unwrap_or_default();
    let links = s.link(project, "backups", d["id"].as_str().unwrap_or_default());
    Ok((StatusCode::CREATED, Json(json!({"backup": {"id": d["id"], "name": d["name"], "links": links}}))).into_response())
}
