//! `/v2/images/{id}/members`: sharing `shared` images with other projects, who accept or reject them.

use ::auth::Context;
use api_common::ApiError;
use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    routing::get,
};
use serde_json::{Value, json};

use super::{AppState, image_target, parse_json};
use crate::{error::Error, model::member_json, service::Caller, store::ImageRow};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/images/{id}/members", get(list).post(create))
        .route("/v2/images/{id}/members/{member_id}", get(show).put(update).delete(delete))
}

/// The image (404 if invisible) and the policy check of `rule` with `member_id` in the target.
async fn authorize(
    s: &AppState,
    ctx: &Context,
    id: &str,
    rule: &str,
    member_id: Option<&str>,
) -> Result<(Caller, ImageRow), ApiError> {
    let caller = s.caller(ctx);
    let img = s.image.get_visible(&caller, id).await?;
    s.enforce(ctx, rule, &image_target(&img, member_id))?;
    Ok((caller, img))
}

fn string_field<'a>(body: &'a Value, field: &str) -> Result<&'a str, Error> {
    body.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::BadRequest(format!("Request body must contain the string '{field}'.")))
}

async fn create(
    State(s): State<AppState>,
    ctx: Context,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (_, img) = authorize(&s, &ctx, &id, "add_member", None).await?;
    let body = parse_json(&body)?;
    let member = s.image.add_member(&img, string_field(&body, "member")?).await?;
    Ok(Json(member_json(&member)))
}

async fn list(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let member = ctx.project_id.clone();
    let (caller, img) = authorize(&s, &ctx, &id, "get_members", member.as_deref()).await?;
    let members = s.image.members(&caller, &img).await?;
    Ok(Json(json!({
        "members": members.iter().map(member_json).collect::<Vec<_>>(),
        "schema": "/v2/schemas/members",
    })))
}

async fn show(
    State(s): State<AppState>,
    ctx: Context,
    Path((id, member_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (caller, img) = authorize(&s, &ctx, &id, "get_member", ctx.project_id.as_deref()).await?;
    Ok(Json(member_json(&s.image.member(&caller, &img, &member_id).await?)))
}

async fn update(
    State(s): State<AppState>,
    ctx: Context,
    Path((id, member_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (caller, img) = authorize(&s, &ctx, &id, "get_member", ctx.project_id.as_deref()).await?;
    s.image.member(&caller, &img, &member_id).await?;
    s.enforce(&ctx, "modify_member", &image_target(&img, Some(&member_id)))?;
    let body = parse_json(&body)?;
    let member = s.image.update_member(&img, &member_id, string_field(&body, "status")?).await?;
    Ok(Json(member_json(&member)))
}

async fn delete(
    State(s): State<AppState>,
    ctx: Context,
    Path((id, member_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (_, img) = authorize(&s, &ctx, &id, "delete_member", Some(&member_id)).await?;
    s.image.delete_member(&img, &member_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
