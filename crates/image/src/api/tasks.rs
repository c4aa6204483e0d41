//! `/v2/tasks`: Glance's legacy tasks API. `import` tasks create an image from `input.image_properties` and fetch
//! its data from the http(s) URL `input.import_from` in the background; the task reports `success` (with
//! `result.image_id`) or `failure`. Admin-only by default (`tasks_api_access`).

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

use super::{AppState, parse_json};
use crate::{
    model::{self, task_json},
    store::{TaskRow, now_micros},
};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/v2/tasks", get(list).post(create)).route("/v2/tasks/{id}", get(show))
}

/// A task as `/v2/tasks` shows it.
fn legacy_task_json(t: &TaskRow) -> Value {
    let mut v = task_json(t);
    v["self"] = json!(format!("/v2/tasks/{}", t.id));
    v["schema"] = json!("/v2/schemas/task");
    if t.kind == "import" && t.status == "success" {
        v["result"] = json!({"image_id": t.image_id});
    }
    v
}

fn enforce(s: &AppState, ctx: &Context, rule: &str) -> Result<(), ApiError> {
    let target = json!({"project_id": ctx.project_id});
    s.enforce(ctx, "tasks_api_access", &target)?;
    s.enforce(ctx, rule, &target)
}

fn bad(m: &str) -> ApiError {
    ApiError::bad_request(m.to_string())
}

async fn create(State(s): State<AppState>, ctx: Context, body: Bytes) -> Result<(StatusCode, Json<Value>), ApiError> {
    enforce(&s, &ctx, "add_task")?;
    let body = parse_json(&body)?;
    match body.get("type").and_then(Value::as_str) {
        Some("import") => {}
        Some(t) => return Err(bad(&format!("Invalid type value: {t}"))),
        None => return Err(bad("'type' is a required property")),
    }
    let input = body.get("input").filter(|i| i.is_object()).ok_or_else(|| bad("'input' is a required property"))?;
    let uri = input
        .get("import_from")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("Input does not contain 'import_from' field"))?;
    let props = input
        .get("image_properties")
        .filter(|p| p.is_object())
        .ok_or_else(|| bad("Input does not contain 'image_properties' field"))?;
    let now = now_micros();
    let img = model::new_image(props, ctx.project_id.clone(), now)?;
    let task = TaskRow {
        id: uuid::Uuid::new_v4().to_string(),
        image_id: String::new(),
        kind: "import".into(),
        status: "pending".into(),
        owner: ctx.project_id.clone(),
        user_id: Some(ctx.user_id.clone()),
        request_id: None,
        input: input.to_string(),
        message: String::new(),
        created_at: now,
        updated_at: now,
    };
    let task = s.image.create_import_task(img, uri, task).await?;
    Ok((StatusCode::CREATED, Json(legacy_task_json(&task))))
}

async fn list(State(s): State<AppState>, ctx: Context) -> Result<Json<Value>, ApiError> {
    enforce(&s, &ctx, "get_tasks")?;
    let tasks = s.image.task_list(&s.caller(&ctx)).await?;
    let tasks: Vec<Value> = tasks
        .iter()
        .map(|t| {
            let mut v = legacy_task_json(t);
            if let Some(m) = v.as_object_mut() {
                m.remove("input");
                m.remove("result");
                m.remove("message");
            }
            v
        })
        .collect();
    Ok(Json(json!({"tasks": tasks, "first": "/v2/tasks", "schema": "/v2/schemas/tasks"})))
}

async fn show(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    enforce(&s, &ctx, "get_task")?;
    Ok(Json(legacy_task_json(&s.image.task(&s.caller(&ctx), &id).await?)))
}
