//! Resource classes (standard and `CUSTOM_*`) and traits.

use ::auth::Context;
use api_common::{ApiError, Microversion, QueryPairs};
use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};

use super::{AppState, at_least, bad, body};
use crate::{error::code, model};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/resource_classes", get(classes_list).post(class_create))
        .route("/resource_classes/{name}", get(class_show).put(class_put).delete(class_delete))
        .route("/traits", get(traits_list))
        .route("/traits/{name}", get(trait_show).put(trait_put).delete(trait_delete))
}

fn not_found(message: String) -> ApiError {
    ApiError::not_found(message).with_code(code::UNDEFINED)
}

fn class_json(s: &AppState, name: &str) -> Value {
    json!({"name": name, "links": [{"rel": "self", "href": s.link(&format!("/resource_classes/{name}"))}]})
}

fn location(s: &AppState, path: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(&s.link(path)).map_err(|_| ApiError::internal("bad location"))
}

async fn classes_list(State(s): State<AppState>, ctx: Context, Extension(v): Extension<Microversion>) -> Result<Json<Value>, ApiError> {
    at_least(v, 1, 2)?;
    s.enforce(&ctx, "placement:resource_classes:list")?;
    let all: Vec<Value> = s.placement.classes().await?.iter().map(|c| class_json(&s, c)).collect();
    Ok(Json(json!({"resource_classes": all})))
}

async fn class_create(State(s): State<AppState>, ctx: Context, Extension(v): Extension<Microversion>, bytes: Bytes) -> Result<Response, ApiError> {
    at_least(v, 1, 2)?;
    s.enforce(&ctx, "placement:resource_classes:create")?;
    let b: Value = body(&bytes)?;
    let name = b.get("name").and_then(Value::as_str).ok_or_else(|| bad("JSON does not validate: 'name' is a required property"))?;
    model::validate_custom_class(name)?;
    if !s.placement.store().custom_class_insert(name).await? {
        return Err(ApiError::conflict(format!("Conflicting resource class already exists: {name}")).with_code(code::DUPLICATE_NAME));
    }
    Ok((StatusCode::CREATED, [(header::LOCATION, location(&s, &format!("/resource_classes/{name}"))?)]).into_response())
}

async fn class_show(State(s): State<AppState>, ctx: Context, Extension(v): Extension<Microversion>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    at_least(v, 1, 2)?;
    s.enforce(&ctx, "placement:resource_classes:show")?;
    if !s.placement.class_exists(&name).await? {
        return Err(not_found(format!("No such resource class {name}.")));
    }
    Ok(Json(class_json(&s, &name)))
}

/// Since 1.7: creates a custom class if missing (201), or confirms it (204).
async fn class_put(State(s): State<AppState>, ctx: Context, Extension(v): Extension<Microversion>, Path(name): Path<String>) -> Result<Response, ApiError> {
    at_least(v, 1, 7)?;
    s.enforce(&ctx, "placement:resource_classes:update")?;
    model::validate_custom_class(&name)?;
    let loc = location(&s, &format!("/resource_classes/{name}"))?;
    if s.placement.store().custom_class_insert(&name).await? {
        Ok((StatusCode::CREATED, [(header::LOCATION, loc)]).into_response())
    } else {
        Ok((StatusCode::NO_CONTENT, [(header::LOCATION, loc)]).into_response())
    }
}

async fn class_delete(State(s): State<AppState>, ctx: Context, Extension(v): Extension<Microversion>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    at_least(v, 1, 2)?;
    s.enforce(&ctx, "placement:resource_classes:delete")?;
    if model::is_standard_class(&name) {
        return Err(bad(format!("Cannot delete standard resource class {name}: resource class is a standard class.")));
    }
    if !s.placement.store().custom_class_delete(&name).await? {
        return Err(not_found(format!("No such resource class {name}.")));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn traits_list(State(s): State<AppState>, ctx: Context, Extension(v): Extension<Microversion>, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    at_least(v, 1, 6)?;
    s.enforce(&ctx, "placement:traits:list")?;
    let mut traits = s.placement.traits().await?;
    if let Some(name) = q.get("name") {
        if let Some(prefix) = name.strip_prefix("startswith:") {
            traits.retain(|t| t.starts_with(prefix));
        } else if let Some(list) = name.strip_prefix("in:") {
            let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
            traits.retain(|t| wanted.contains(&t.as_str()));
        } else {
            return Err(bad(format!(
                "Badly formatted name parameter. Expected name query string parameter in form: \
                 ?name=[in|startswith]:[name1,name2|prefix]. Got: \"{name}\""
            )));
        }
    }
    if let Some(associated) = q.get_bool("associated").map_err(|e| bad(e.message))? {
        let snapshot = s.placement.snapshot().await?;
        let used: std::collections::BTreeSet<&String> = snapshot.providers.iter().flat_map(|p| p.traits.iter()).collect();
        traits.retain(|t| used.contains(t) == associated);
    }
    Ok(Json(json!({"traits": traits})))
}

async fn trait_show(State(s): State<AppState>, ctx: Context, Extension(v): Extension<Microversion>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    at_least(v, 1, 6)?;
    s.enforce(&ctx, "placement:traits:show")?;
    if s.placement.trait_exists(&name).await? { Ok(StatusCode::NO_CONTENT) } else { Err(not_found(format!("No such trait(s): {name}."))) }
}

async fn trait_put(State(s): State<AppState>, ctx: Context, Extension(v): Extension<Microversion>, Path(name): Path<String>) -> Result<Response, ApiError> {
    at_least(v, 1, 6)?;
    s.enforce(&ctx, "placement:traits:update")?;
    let loc = location(&s, &format!("/traits/{name}"))?;
    if model::is_standard_trait(&name) {
        return Ok((StatusCode::NO_CONTENT, [(header::LOCATION, loc)]).into_response());
    }
    if !name.starts_with("CUSTOM_") {
        return Err(bad("The trait is invalid. A valid trait must include prefix \"CUSTOM_\"."));
    }
    model::validate_custom_trait(&name)?;
    let status = if s.placement.store().custom_trait_insert(&name).await? { StatusCode::CREATED } else { StatusCode::NO_CONTENT };
    Ok((status, [(header::LOCATION, loc)]).into_response())
}

async fn trait_delete(State(s): State<AppState>, ctx: Context, Extension(v): Extension<Microversion>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    at_least(v, 1, 6)?;
    s.enforce(&ctx, "placement:traits:delete")?;
    if model::is_standard_trait(&name) {
        return Err(bad(format!("Cannot delete standard trait {name}.")));
    }
    if !s.placement.store().custom_trait_delete(&name).await? {
        return Err(not_found(format!("No such trait(s): {name}.")));
    }
    Ok(StatusCode::NO_CONTENT)
}
