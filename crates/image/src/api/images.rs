//! `/v2/images`: create, list, show, JSON Patch update, delete, deactivate/reactivate, tags.

use ::auth::Context;
use api_common::{ApiError, query::QueryPairs};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde_json::{Value, json};

use super::{AppState, authorized_image, image_target, parse_json};
use crate::{
    error::Error,
    model::{self, ListQuery, image_json},
    store::now_micros,
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/images", get(list).post(create))
        .route("/v2/images/{id}", get(show).patch(update).delete(delete))
        .route("/v2/images/{id}/actions/deactivate", post(deactivate))
        .route("/v2/images/{id}/actions/reactivate", post(reactivate))
        .route("/v2/images/{id}/tags/{tag}", put(add_tag).delete(delete_tag))
}

async fn create(State(s): State<AppState>, ctx: Context, body: Bytes) -> Result<Response, ApiError> {
    let body = parse_json(&body)?;
    let img = model::new_image(&body, ctx.project_id.clone(), now_micros())?;
    let target = json!({"project_id": ctx.project_id, "owner": img.owner, "visibility": img.visibility});
    s.enforce(&ctx, "add_image", &target)?;
    match img.visibility.as_str() {
        "public" => s.enforce(&ctx, "publicize_image", &image_target(&img, None))?,
        "community" => s.enforce(&ctx, "communitize_image", &image_target(&img, None))?,
        _ => {}
    }
    let img = s.image.create(img).await?;
    let location = format!("{}/v2/images/{}", s.base_url, img.id);
    let mut response = (StatusCode::CREATED, Json(image_json(&img))).into_response();
    if let Ok(v) = location.parse() {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

async fn list(State(s): State<AppState>, ctx: Context, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "get_images", &json!({"project_id": ctx.project_id}))?;
    let query = ListQuery::parse(&q)?;
    let caller = s.caller(&ctx);
    let (images, more) = s.image.list(&caller, &query).await?;
    let mut body = json!({
        "images": images.iter().map(image_json).collect::<Vec<_>>(),
        "schema": "/v2/schemas/images",
    });
    let without_marker: Vec<(String, String)> = q.0.iter().filter(|(k, _)| k != "marker").cloned().collect();
    body["first"] = json!(if without_marker.is_empty() {
        "/v2/images".to_string()
    } else {
        format!("/v2/images?{}", QueryPairs(without_marker).with("limit", &query.limit.to_string()))
    });
    if more && let Some(last) = images.last() {
        body["next"] = json!(format!("/v2/images?{}", q.with("marker", &last.id)));
    }
    Ok(Json(body))
}

async fn show(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (_, img) = authorized_image(&s, &ctx, &id, "get_image").await?;
    Ok(Json(image_json(&img)))
}

async fn update(
    State(s): State<AppState>,
    ctx: Context,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    let v20 = match media {
        model::PATCH_V21 => false,
        model::PATCH_V20 => true,
        _ => {
            return Err(Error::UnsupportedMediaType(format!(
                "Unsupported Content-Type {media:?}: use {} or {}",
                model::PATCH_V21,
                model::PATCH_V20
            ))
            .into());
        }
    };
    let (_, img) = authorized_image(&s, &ctx, &id, "modify_image").await?;
    let ops = model::parse_patch(&parse_json(&body)?)?;
    let mut changed = img.clone();
    model::apply_patch(&mut changed, &ops, v20)?;
    if changed.visibility != img.visibility {
        match changed.visibility.as_str() {
            "public" => s.enforce(&ctx, "publicize_image", &image_target(&img, None))?,
            "community" => s.enforce(&ctx, "communitize_image", &image_target(&img, None))?,
            _ => {}
        }
    }
    if changed.owner != img.owner {
        s.enforce(&ctx, "add_image", &json!({"project_id": ctx.project_id, "owner": changed.owner}))?;
    }
    for (field, before, after) in [
        ("container_format", &img.container_format, &changed.container_format),
        ("disk_format", &img.disk_format, &changed.disk_format),
    ] {
        if before != after && img.status != "queued" {
            return Err(Error::Forbidden(format!("Attribute {field} can be only replaced for a queued image.")).into());
        }
    }
    let updated = s.image.update(changed, &img.status).await?;
    Ok(Json(image_json(&updated)))
}

async fn delete(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let (_, img) = authorized_image(&s, &ctx, &id, "delete_image").await?;
    s.image.delete(&img).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn deactivate(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let (_, img) = authorized_image(&s, &ctx, &id, "deactivate").await?;
    s.image.deactivate(&img).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn reactivate(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let (_, img) = authorized_image(&s, &ctx, &id, "reactivate").await?;
    s.image.reactivate(&img).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn add_tag(
    State(s): State<AppState>,
    ctx: Context,
    Path((id, tag)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (_, img) = authorized_image(&s, &ctx, &id, "modify_image").await?;
    model::check_tag(&tag)?;
    s.image.add_tag(&img, &tag).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_tag(
    State(s): State<AppState>,
    ctx: Context,
    Path((id, tag)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (_, img) = authorized_image(&s, &ctx, &id, "modify_image").await?;
    s.image.delete_tag(&img, &tag).await?;
    Ok(StatusCode::NO_CONTENT)
}
