//! `/volumes`: create, list and detail, show, update, delete, metadata, summary, and the actions.

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
use crate::service::{SNAPSHOT, VOLUME};

/// The keys volume lists sort on.
const VOLUME_SORT_KEYS: &[&str] = &["id", "name", "description", "status", "size", "created_at", "updated_at", "availability_zone", "bootable", "volume_type", "user_id", "os-vol-tenant-attr:tenant_id", "os-vol-host-attr:host"];

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(&p("/volumes"), get(list).post(create))
        .route(&p("/volumes/detail"), get(list_detail))
        .route(&p("/volumes/summary"), get(summary))
        .route(&p("/volumes/{id}"), get(show).put(update).delete(delete))
        .route(&p("/volumes/{id}/action"), post(action))
        .route(&p("/volumes/{id}/metadata"), get(metadata_get).post(metadata_merge).put(metadata_replace))
        .route(&p("/volumes/{id}/metadata/{key}"), get(metadata_item).put(metadata_item_set).delete(metadata_item_delete))
        .route(&p("/snapshots/{id}/metadata"), get(metadata_get).post(metadata_merge).put(metadata_replace))
        .route(&p("/snapshots/{id}/metadata/{key}"), get(metadata_item).put(metadata_item_set).delete(metadata_item_delete))
}

async fn views_of(s: &AppState, docs: &[Value], version: Microversion, purpose: views::Purpose, is_admin: bool) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::with_capacity(docs.len());
    for v in docs {
        let attachments = if purpose == views::Purpose::Summary { Vec::new() } else { s.volume.attachments_of(v["id"].as_str().unwrap_or_default()).await? };
        out.push(views::volume(s, v, &attachments, version, purpose, is_admin));
    }
    Ok(out)
}

async fn listing(s: &AppState, ctx: &Context, headers: &HeaderMap, q: &QueryPairs, version: Microversion, purpose: views::Purpose, path: &str) -> Result<Json<Value>, ApiError> {
    s.enforce(ctx, "volume:get_all", None)?;
    listing::check_sort(q, VOLUME_SORT_KEYS)?;
    let caller = s.caller(ctx, headers);
    let all = q.get_bool("all_tenants")?.unwrap_or(false) || q.contains("all_tenants") && q.get("all_tenants") == Some("");
    let docs = s.volume.volume_list(&caller, all, q.get("project_id")).await?;
    // Filter and sort on the full view, then answer in the asked shape.
    let full = views_of(s, &docs, version, views::Purpose::Show, true).await?;
    let full = listing::filter(full, q, &[("display_name", "name"), ("display_description", "description")]);
    let project = ctx.project_id.clone().unwrap_or_default();
    let (page, links) = listing::page(full, q, &format!("{}/v3/{project}/{path}", s.base_url))?;
    let ids: Vec<&Value> = page.iter().map(|v| &v["id"]).collect();
    let chosen: Vec<Value> = ids.iter().filter_map(|id| docs.iter().find(|d| &&d["id"] == id).cloned()).collect();
    let out = views_of(s, &chosen, version, purpose, caller.is_admin).await?;
    let mut body = json!({"volumes": out});
    if !links.is_empty() {
        body["volumes_links"] = json!(links);
    }
    Ok(Json(body))
}

async fn list(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(v): Extension<Microversion>, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    listing(&s, &ctx, &headers, &q, v, views::Purpose::Summary, "volumes").await
}

async fn list_detail(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(v): Extension<Microversion>, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    listing(&s, &ctx, &headers, &q, v, views::Purpose::Show, "volumes/detail").await
}

async fn summary(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(v): Extension<Microversion>, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    if v < Microversion::new(3, 12) {
        return Err(ApiError::not_found("The resource could not be found."));
    }
    s.enforce(&ctx, "volume:get_all", None)?;
    let caller = s.caller(&ctx, &headers);
    let all = q.get_bool("all_tenants")?.unwrap_or(false);
    let docs = s.volume.volume_list(&caller, all, None).await?;
    let total: i64 = docs.iter().map(|d| d["size"].as_i64().unwrap_or(0)).sum();
    let mut summary = json!({"total_size": total, "total_count": docs.len()});
    if v >= Microversion::new(3, 36) {
        // Every metadata key with the values it has across the volumes.
        let mut metadata: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
        for d in &docs {
            for (k, val) in d["metadata"].as_object().into_iter().flatten() {
                let values = metadata.entry(k.clone()).or_default();
                if !values.contains(val) {
                    values.push(val.clone());
                }
            }
        }
        summary["metadata"] = json!(metadata);
    }
    Ok(Json(json!({"volume-summary": summary})))
}

async fn show(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params) -> Result<Json<Value>, ApiError> {
    let caller = s.caller(&ctx, &headers);
    let v = s.volume.volume_get(&caller, param(&path, "id")).await?;
    s.enforce(&ctx, "volume:get", v["project_id"].as_str())?;
    let attachments = s.volume.attachments_of(param(&path, "id")).await?;
    Ok(Json(json!({"volume": views::volume(&s, &v, &attachments, mv, views::Purpose::Show, caller.is_admin)})))
}

async fn create(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, bytes: Bytes) -> Result<Response, ApiError> {
    s.enforce(&ctx, "volume:create", None)?;
    let b = body(&bytes)?;
    let mut req = entity(&b, "volume")?.clone();
    if mv < Microversion::new(3, 13) {
        // Volumes go into groups from 3.13 on; before, the key means nothing.
        req.as_object_mut().map(|m| m.remove("group_id"));
    }
    let caller = s.caller(&ctx, &headers);
    let v = s.volume.volume_create(&caller, &req).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"volume": views::volume(&s, &v, &[], mv, views::Purpose::Create, caller.is_admin)}))).into_response())
}

async fn update(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    let b = body(&bytes)?;
    let req = entity(&b, "volume")?;
    let caller = s.caller(&ctx, &headers);
    let id = param(&path, "id");
    let current = s.volume.volume_get(&caller, id).await?;
    s.enforce(&ctx, "volume:update", current["project_id"].as_str())?;
    let v = s.volume.volume_update(&caller, id, req).await?;
    let attachments = s.volume.attachments_of(id).await?;
    Ok(Json(json!({"volume": views::volume(&s, &v, &attachments, mv, views::Purpose::Create, caller.is_admin)})))
}

async fn delete(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params, q: QueryPairs) -> Result<StatusCode, ApiError> {
    let caller = s.caller(&ctx, &headers);
    let id = param(&path, "id");
    let v = s.volume.volume_get(&caller, id).await?;
    s.enforce(&ctx, "volume:delete", v["project_id"].as_str())?;
    let cascade = q.get_bool("cascade")?.unwrap_or(false);
    let force = q.get_bool("force")?.unwrap_or(false);
    if force {
        s.enforce(&ctx, "volume_extension:volume_admin_actions:force_delete", v["project_id"].as_str())?;
    }
    s.volume.volume_delete(&caller, id, cascade, force).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `POST /volumes/{id}/action`: one action per body, named by its only key.
async fn action(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params, bytes: Bytes) -> Result<Response, ApiError> {
    let b = body(&bytes)?;
    let Some((name, arg)) = b.as_object().and_then(|o| o.iter().next()).map(|(k, v)| (k.clone(), v.clone())) else {
        return Err(ApiError::bad_request("There is no such action"));
    };
    let caller = s.caller(&ctx, &headers);
    let id = param(&path, "id");
    let v = s.volume.volume_get(&caller, id).await?;
    let project = v["project_id"].as_str().map(str::to_string);
    let project = project.as_deref();
    let vol = &s.volume;
    let accepted = || Ok::<Response, ApiError>(StatusCode::ACCEPTED.into_response());
    match name.as_str() {
        "revert" | "os-revert" if mv >= Microversion::new(3, 40) => {
            s.enforce(&ctx, "volume:revert_to_snapshot", project)?;
            let snapshot_id = arg.get("snapshot_id").and_then(Value::as_str).ok_or_else(|| ApiError::bad_request("Invalid input for field/attribute snapshot_id. 'snapshot_id' is a required property"))?;
            vol.revert_to_snapshot(&caller, id, snapshot_id).await?;
            accepted()
        }
        "os-extend" => {
            s.enforce(&ctx, "volume:extend", project)?;
            let new_size = arg.get("new_size").cloned().unwrap_or(Value::Null);
            vol.extend(&caller, id, &new_size, mv >= Microversion::new(3, 42)).await?;
            accepted()
        }
        "os-set_bootable" => {
            s.enforce(&ctx, "volume:update", project)?;
            let flag = arg.get("bootable").cloned().unwrap_or(Value::Null);
            vol.set_flag(&caller, id, "bootable", &flag).await?;
            Ok(StatusCode::OK.into_response())
        }
        "os-update_readonly_flag" => {
            s.enforce(&ctx, "volume:update_readonly_flag", project)?;
            let flag = arg.get("readonly").cloned().unwrap_or(Value::Null);
            vol.set_flag(&caller, id, "readonly", &flag).await?;
            accepted()
        }
        "os-reserve" => {
            s.enforce(&ctx, "volume:update", project)?;
            vol.reserve(&caller, id).await?;
            accepted()
        }
        "os-unreserve" => {
            s.enforce(&ctx, "volume:update", project)?;
            vol.unreserve(&caller, id).await?;
            accepted()
        }
        "os-begin_detaching" => {
            s.enforce(&ctx, "volume:update", project)?;
            vol.begin_detaching(&caller, id).await?;
            accepted()
        }
        "os-roll_detaching" => {
            s.enforce(&ctx, "volume:update", project)?;
            vol.roll_detaching(&caller, id).await?;
            accepted()
        }
        "os-attach" => {
            s.enforce(&ctx, "volume:update", project)?;
            vol.attach(&caller, id, &arg).await?;
            accepted()
        }
        "os-detach" => {
            s.enforce(&ctx, "volume:update", project)?;
            vol.detach(&caller, id, arg.get("attachment_id").and_then(Value::as_str)).await?;
            accepted()
        }
        "os-force_detach" => {
            s.enforce(&ctx, "volume_extension:volume_admin_actions:force_detach", project)?;
            vol.force_detach(&caller, id, arg.get("attachment_id").and_then(Value::as_str)).await?;
            accepted()
        }
        "os-initialize_connection" => {
            s.enforce(&ctx, "volume:update", project)?;
            let connector = arg.get("connector").cloned().unwrap_or(Value::Null);
            let info = vol.initialize_connection(&caller, id, &connector).await?;
            Ok(Json(json!({"connection_info": info})).into_response())
        }
        "os-terminate_connection" => {
            s.enforce(&ctx, "volume:update", project)?;
            vol.terminate_connection(&caller, id, &arg["connector"]).await?;
            accepted()
        }
        "os-reset_status" => {
            s.enforce(&ctx, "volume_extension:volume_admin_actions:reset_status", project)?;
            vol.reset_status(&caller, VOLUME, id, &arg).await?;
            accepted()
        }
        "os-force_delete" => {
            s.enforce(&ctx, "volume_extension:volume_admin_actions:force_delete", project)?;
            vol.volume_delete(&caller, id, true, true).await?;
            accepted()
        }
        "os-volume_upload_image" => {
            s.enforce(&ctx, "volume_extension:volume_actions:upload_image", project)?;
            let out = vol.upload_to_image(&caller, id, &arg).await?;
            Ok((StatusCode::ACCEPTED, Json(json!({"os-volume_upload_image": out}))).into_response())
        }
        "os-retype" => {
            s.enforce(&ctx, "volume:retype", project)?;
            vol.retype(&caller, id, &arg).await?;
            accepted()
        }
        "os-set_image_metadata" => {
            s.enforce(&ctx, "volume:update", project)?;
            let out = vol.image_metadata_set(&caller, id, arg.get("metadata").unwrap_or(&Value::Null)).await?;
            Ok(Json(json!({"metadata": out})).into_response())
        }
        "os-unset_image_metadata" => {
            s.enforce(&ctx, "volume:update", project)?;
            vol.image_metadata_unset(&caller, id, arg.get("key").and_then(Value::as_str).unwrap_or_default()).await?;
            Ok(StatusCode::OK.into_response())
        }
        "os-show_image_metadata" => {
            s.enforce(&ctx, "volume:get", project)?;
            let v = vol.volume_get(&caller, id).await?;
            Ok(Json(json!({"metadata": if v["volume_image_metadata"].is_object() { v["volume_image_metadata"].clone() } else { json!({}) }})).into_response())
        }
        _ => Err(ApiError::bad_request("There is no such action")),
    }
}

fn kind_of(headers_path: &axum::http::Uri) -> &'static str {
    if headers_path.path().contains("/snapshots/") { SNAPSHOT } else { VOLUME }
}

async fn metadata_get(State(s): State<AppState>, ctx: Context, headers: HeaderMap, uri: axum::http::Uri, path: Params) -> Result<Json<Value>, ApiError> {
    let caller = s.caller(&ctx, &headers);
    let doc = s.volume.get_kind(&caller, kind_of(&uri), param(&path, "id")).await?;
    Ok(Json(json!({"metadata": doc["metadata"]})))
}

async fn metadata_write(s: &AppState, ctx: &Context, headers: &HeaderMap, uri: &axum::http::Uri, path: &Params, bytes: &Bytes, replace: bool) -> Result<Json<Value>, ApiError> {
    let b = body(bytes)?;
    let m = b.get("metadata").ok_or_else(|| ApiError::bad_request("Malformed request body: missing 'metadata'"))?;
    let caller = s.caller(ctx, headers);
    let kind = kind_of(uri);
    let doc = s.volume.get_kind(&caller, kind, param(path, "id")).await?;
    s.enforce(ctx, "volume:update", doc["project_id"].as_str())?;
    let out = s.volume.metadata_set(&caller, kind, param(path, "id"), m, replace).await?;
    Ok(Json(json!({"metadata": out})))
}

async fn metadata_merge(State(s): State<AppState>, ctx: Context, headers: HeaderMap, uri: axum::http::Uri, path: Params, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    metadata_write(&s, &ctx, &headers, &uri, &path, &bytes, false).await
}

async fn metadata_replace(State(s): State<AppState>, ctx: Context, headers: HeaderMap, uri: axum::http::Uri, path: Params, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    metadata_write(&s, &ctx, &headers, &uri, &path, &bytes, true).await
}

async fn metadata_item(State(s): State<AppState>, ctx: Context, headers: HeaderMap, uri: axum::http::Uri, path: Params) -> Result<Json<Value>, ApiError> {
    let caller = s.caller(&ctx, &headers);
    let doc = s.volume.get_kind(&caller, kind_of(&uri), param(&path, "id")).await?;
    let key = param(&path, "key");
    match doc["metadata"].get(key) {
        Some(v) => Ok(Json(json!({"meta": {key: v}}))),
        None => Err(ApiError::not_found("Metadata item was not found")),
    }
}

async fn metadata_item_set(State(s): State<AppState>, ctx: Context, headers: HeaderMap, uri: axum::http::Uri, path: Params, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    let b = body(&bytes)?;
    let key = param(&path, "key");
    let Some(meta) = b.get("meta").and_then(Value::as_object) else {
        return Err(ApiError::bad_request("Malformed request body: missing 'meta'"));
    };
    if meta.len() != 1 {
        return Err(ApiError::bad_request("Request body contains too many items"));
    }
    if !meta.contains_key(key) {
        return Err(ApiError::bad_request("Request body and URI mismatch"));
    }
    let caller = s.caller(&ctx, &headers);
    let kind = kind_of(&uri);
    let doc = s.volume.get_kind(&caller, kind, param(&path, "id")).await?;
    s.enforce(&ctx, "volume:update", doc["project_id"].as_str())?;
    s.volume.metadata_set(&caller, kind, param(&path, "id"), &Value::Object(meta.clone()), false).await?;
    Ok(Json(json!({"meta": meta})))
}

async fn metadata_item_delete(State(s): State<AppState>, ctx: Context, headers: HeaderMap, uri: axum::http::Uri, path: Params) -> Result<StatusCode, ApiError> {
    let caller = s.caller(&ctx, &headers);
    let kind = kind_of(&uri);
    let doc = s.volume.get_kind(&caller, kind, param(&path, "id")).await?;
    s.enforce(&ctx, "volume:update", doc["project_id"].as_str())?;
    s.volume.metadata_delete(&caller, kind, param(&path, "id"), param(&path, "key")).await?;
    Ok(StatusCode::OK)
}
