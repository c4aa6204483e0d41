//! The cache API (Image API 2.14+): `GET /v2/cache`, `PUT`/`DELETE /v2/cache/{image_id}`, `DELETE /v2/cache`
//! (with `x-image-cache-clear-target: cache|queue|""`). Admin-only by default (`cache_list`, `cache_image`,
//! `cache_delete`).

use ::auth::Context;
use api_common::ApiError;
use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::{delete, get},
};
use serde_json::{Value, json};

use super::AppState;
use crate::{cache::ImageCache, error::Error};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/cache", get(list).delete(clear))
        .route("/v2/cache/{image_id}", delete(delete_entry).put(queue))
}

fn cache(s: &AppState) -> Result<&ImageCache, Error> {
    s.image.cache().ok_or_else(|| Error::NotFound("The image cache is not enabled on this node.".into()))
}

/// `GET /v2/cache`: cached and queued images. `stats` (this process's hits and misses) is Stratus' addition.
async fn list(State(s): State<AppState>, ctx: Context) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "cache_list", &json!({}))?;
    let cache = cache(&s)?;
    let cached = cache.list().map_err(Error::from)?;
    let queued = cache.queued().map_err(Error::from)?;
    let cached: Vec<Value> = cached
        .iter()
        .map(|e| {
            json!({"image_id": e.image_id, "hits": e.hits, "last_accessed": e.last_accessed,
                   "last_modified": e.last_modified, "size": e.size})
        })
        .collect();
    Ok(Json(json!({"cached_images": cached, "queued_images": queued, "stats": cache.stats()})))
}

async fn queue(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    s.enforce(&ctx, "cache_image", &json!({"image_id": id}))?;
    s.image.cache_queue(&id).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `DELETE /v2/cache/{image_id}`: drops the image from the cache and the queue. 404 for an unknown image.
async fn delete_entry(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    s.enforce(&ctx, "cache_delete", &json!({"image_id": id}))?;
    let cache = cache(&s)?;
    if s.image.store().image_get(&id).await?.is_none() && !cache.delete(&id) && !cache.dequeue(&id) {
        return Err(Error::NotFound(format!("No image found with ID {id}")).into());
    }
    cache.delete(&id);
    cache.dequeue(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v2/cache`: clears the cache, the queue, or (no header or empty) both.
async fn clear(State(s): State<AppState>, ctx: Context, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    s.enforce(&ctx, "cache_delete", &json!({}))?;
    let target = headers.get("x-image-cache-clear-target").map(|v| v.to_str().unwrap_or("?").trim().to_string());
    let (cache_too, queue_too) = match target.as_deref() {
        None | Some("") => (true, true),
        Some("cache") => (true, false),
        Some("queue") => (false, true),
        Some(_) => {
            return Err(Error::BadRequest(
                "If provided 'x-image-cache-clear-target' must be 'cache', 'queue' or empty string.".into(),
            )
            .into());
        }
    };
    cache(&s)?.clear(cache_too, queue_too).map_err(Error::from)?;
    Ok(StatusCode::NO_CONTENT)
}
