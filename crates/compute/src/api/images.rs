//! The image proxy of API 2.1 (`/images`, `/images/detail`, `/images/{id}`, image metadata): the image service's
//! images in Nova's shape, on the caller's own token. Removed at 2.36 (image metadata at 2.39), as upstream.

use ::auth::Context;
use api_common::{ApiError, Page, QueryPairs};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::get,
};
use serde_json::{Map, Value, json};

use super::{AppState, body};
use crate::images::{ImageClient, is_core};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .merge(super::until(
            Router::new()
                .route("/v2.1/images", get(list))
                .route("/v2.1/images/detail", get(list_detail))
                .route("/v2.1/images/{id}", get(show).delete(delete)),
            super::v(36),
        ))
        .merge(super::until(
            Router::new()
                .route("/v2.1/images/{id}/metadata", get(meta_list).put(meta_replace).post(meta_merge))
                .route("/v2.1/images/{id}/metadata/{key}", get(meta_show).put(meta_put).delete(meta_delete)),
            super::v(39),
        ))
}

fn client(s: &AppState) -> Result<&ImageClient, ApiError> {
    s.images.as_ref().ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "The image service is not configured."))
}

fn token(headers: &HeaderMap) -> &str {
    headers.get("x-auth-token").and_then(|t| t.to_str().ok()).unwrap_or_default()
}

fn not_found() -> ApiError {
    ApiError::not_found("Image not found.")
}

/// Nova's status and progress of a Glance status.
fn status(glance: &str) -> (&'static str, i64) {
    match glance {
        "active" => ("ACTIVE", 100),
        "queued" => ("SAVING", 25),
        "saving" | "importing" | "uploading" => ("SAVING", 50),
        "deleted" | "pending_delete" => ("DELETED", 0),
        "killed" => ("ERROR", 0),
        _ => ("UNKNOWN", 0),
    }
}

fn metadata(v: &Value) -> Map<String, Value> {
    v.as_object()
        .map(|o| o.iter().filter(|(k, _)| !is_core(k) && k.as_str() != "container_format" && k.as_str() != "disk_format").map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn links(s: &AppState, id: &str) -> Value {
    let mut l = s.links(&format!("/images/{id}"));
    if let Value::Array(a) = &mut l {
        a.push(json!({"rel": "alternate", "type": "application/vnd.openstack.image", "href": format!("{}/images/{id}", s.base_url.trim_end_matches("/compute"))}));
    }
    l
}

fn summary(s: &AppState, v: &Value) -> Value {
    let id = v["id"].as_str().unwrap_or_default();
    json!({"id": id, "name": v["name"], "links": links(s, id)})
}

fn detail(s: &AppState, v: &Value) -> Value {
    let id = v["id"].as_str().unwrap_or_default();
    let (st, progress) = status(v["status"].as_str().unwrap_or_default());
    let mut out = json!({
        "id": id,
        "name": v["name"],
        "minRam": v["min_ram"].as_i64().unwrap_or(0),
        "minDisk": v["min_disk"].as_i64().unwrap_or(0),
        "metadata": metadata(v),
        "created": v["created_at"],
        "updated": v["updated_at"],
        "status": st,
        "progress": progress,
        "OS-EXT-IMG-SIZE:size": v["size"],
        "links": links(s, id),
    });
    if let Some(server) = v["instance_uuid"].as_str() {
        out["server"] = json!({"id": server, "links": s.links(&format!("/servers/{server}"))});
    }
    out
}

async fn listing(s: &AppState, headers: &HeaderMap, q: &QueryPairs, path: &str, full: bool) -> Result<Json<Value>, ApiError> {
    let mut query = Vec::new();
    for (k, v) in &q.0 {
        match k.as_str() {
            "name" => query.push(("name".to_string(), v.clone())),
            "status" => {
                let glance = match v.to_uppercase().as_str() {
                    "ACTIVE" => "active",
                    "SAVING" => "saving",
                    "DELETED" => "deleted",
                    "ERROR" => "killed",
                    _ => "unknown",
                };
                query.push(("status".to_string(), glance.to_string()));
            }
            "server" => query.push(("instance_uuid".to_string(), v.rsplit('/').next().unwrap_or(v).to_string())),
            "type" => query.push(("image_type".to_string(), v.clone())),
            _ => {}
        }
    }
    let mut images = client(s)?.list(token(headers), &query).await?;
    if let Some(since) = q.get("changes-since") {
        let t = chrono::DateTime::parse_from_rfc3339(since)
            .map_err(|_| ApiError::bad_request("Invalid changes-since value"))?;
        images.retain(|i| i["updated_at"].as_str().and_then(|u| chrono::DateTime::parse_from_rfc3339(u).ok()).is_some_and(|u| u >= t));
    }
    for (key, field) in [("minRam", "min_ram"), ("minDisk", "min_disk")] {
        if let Some(min) = q.get(key) {
            let min: i64 = min.parse().map_err(|_| ApiError::bad_request(format!("Invalid {key} filter [{min}]")))?;
            images.retain(|i| i[field].as_i64().unwrap_or(0) >= min);
        }
    }
    let page = super::page(q, 1000)?;
    let (items, _) = page.apply(images, |i| i["id"].as_str().unwrap_or_default())?;
    let rendered: Vec<Value> = items.iter().map(|i| if full { detail(s, i) } else { summary(s, i) }).collect();
    let mut out = json!({"images": rendered});
    if let Some(last) = items.last().filter(|_| page.explicit_limit && items.len() == page.limit) {
        out["images_links"] = json!([{"rel": "next", "href": Page::next_link(&s.url(path), q, last["id"].as_str().unwrap_or_default())}]);
    }
    Ok(Json(out))
}

async fn list(State(s): State<AppState>, _ctx: Context, headers: HeaderMap, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    listing(&s, &headers, &q, "/images", false).await
}

async fn list_detail(State(s): State<AppState>, _ctx: Context, headers: HeaderMap, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    listing(&s, &headers, &q, "/images/detail", true).await
}

async fn fetch(s: &AppState, headers: &HeaderMap, id: &str) -> Result<Value, ApiError> {
    client(s)?.raw(token(headers), id).await?.ok_or_else(not_found)
}

async fn show(State(s): State<AppState>, _ctx: Context, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let v = fetch(&s, &headers, &id).await?;
    Ok(Json(json!({"image": detail(&s, &v)})))
}

async fn delete(State(s): State<AppState>, _ctx: Context, headers: HeaderMap, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    if client(&s)?.delete(token(&headers), &id).await? { Ok(StatusCode::NO_CONTENT) } else { Err(not_found()) }
}

async fn meta_list(State(s): State<AppState>, _ctx: Context, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let v = fetch(&s, &headers, &id).await?;
    Ok(Json(json!({"metadata": metadata(&v)})))
}

fn string_map(v: &Value, field: &str) -> Result<Map<String, Value>, ApiError> {
    let m = v.get(field).and_then(Value::as_object).ok_or_else(|| ApiError::bad_request("Malformed request body"))?;
    for (k, val) in m {
        if k.is_empty() || k.chars().count() > 255 || !val.is_string() {
            return Err(ApiError::bad_request("Invalid metadata"));
        }
    }
    Ok(m.clone())
}

/// Sets properties (replacing all others with `replace`) through a JSON patch.
async fn write(s: &AppState, headers: &HeaderMap, id: &str, items: &Map<String, Value>, replace: bool) -> Result<Value, ApiError> {
    let current = fetch(s, headers, id).await?;
    let existing = metadata(&current);
    let mut ops = Vec::new();
    if replace {
        for k in existing.keys().filter(|k| !items.contains_key(*k)) {
            ops.push(json!({"op": "remove", "path": format!("/{}", k.replace('~', "~0").replace('/', "~1"))}));
        }
    }
    for (k, v) in items {
        let op = if existing.contains_key(k) || is_core(k) { "replace" } else { "add" };
        ops.push(json!({"op": op, "path": format!("/{}", k.replace('~', "~0").replace('/', "~1")), "value": v}));
    }
    let updated = client(s)?.patch(token(headers), id, &Value::Array(ops)).await?.ok_or_else(not_found)?;
    Ok(Value::Object(metadata(&updated)))
}

async fn meta_replace(State(s): State<AppState>, _ctx: Context, headers: HeaderMap, Path(id): Path<String>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    let items = string_map(&body(&bytes)?, "metadata")?;
    Ok(Json(json!({"metadata": write(&s, &headers, &id, &items, true).await?})))
}

async fn meta_merge(State(s): State<AppState>, _ctx: Context, headers: HeaderMap, Path(id): Path<String>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    let items = string_map(&body(&bytes)?, "metadata")?;
    Ok(Json(json!({"metadata": write(&s, &headers, &id, &items, false).await?})))
}

async fn meta_show(State(s): State<AppState>, _ctx: Context, headers: HeaderMap, Path((id, key)): Path<(String, String)>) -> Result<Json<Value>, ApiError> {
    let v = fetch(&s, &headers, &id).await?;
    let md = metadata(&v);
    let value = md.get(&key).ok_or_else(|| ApiError::not_found(format!("Image {id} has no metadata with key {key}")))?;
    Ok(Json(json!({"meta": {key: value}})))
}

async fn meta_put(State(s): State<AppState>, _ctx: Context, headers: HeaderMap, Path((id, key)): Path<(String, String)>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    let items = string_map(&body(&bytes)?, "meta")?;
    if items.len() != 1 {
        return Err(ApiError::bad_request("Request body contains too many items"));
    }
    if !items.contains_key(&key) {
        return Err(ApiError::bad_request("Request body and URI mismatch"));
    }
    write(&s, &headers, &id, &items, false).await?;
    Ok(Json(json!({"meta": items})))
}

async fn meta_delete(State(s): State<AppState>, _ctx: Context, headers: HeaderMap, Path((id, key)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    let v = fetch(&s, &headers, &id).await?;
    if !metadata(&v).contains_key(&key) {
        return Err(ApiError::not_found(format!("Image {id} has no metadata with key {key}")));
    }
    let ops = json!([{"op": "remove", "path": format!("/{}", key.replace('~', "~0").replace('/', "~1"))}]);
    client(&s)?.patch(token(&headers), &id, &ops).await?.ok_or_else(not_found)?;
    Ok(StatusCode::NO_CONTENT)
}
