//! Key pairs (`/os-keypairs`): import an SSH public key or generate a key pair (the private key is returned
//! once), list, show and delete; each belongs to the user who created it.

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

use super::{AppState, body, invalid, member, only};
use crate::store::KeypairRow;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/os-keypairs", get(list).post(create))
        .route("/v2.1/os-keypairs/{name}", get(show).delete(delete))
}

fn enforce(s: &AppState, ctx: &Context, rule: &str) -> Result<(), ApiError> {
    let target = json!({"user_id": ctx.user_id, "project_id": ctx.project_id});
    s.policy.enforce(rule, ctx, &target)
}

fn time(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S.000000").to_string())
        .unwrap_or_default()
}

async fn list(State(s): State<AppState>, ctx: Context) -> Result<Json<Value>, ApiError> {
    enforce(&s, &ctx, "os_compute_api:os-keypairs:index")?;
    let all = s.compute.keypairs(&ctx.user_id).await?;
    let keypairs: Vec<Value> = all
        .iter()
        .map(|k| json!({"keypair": {"name": k.name, "public_key": k.public_key, "fingerprint": k.fingerprint}}))
        .collect();
    Ok(Json(json!({"keypairs": keypairs})))
}

fn full(k: &KeypairRow) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "user_id": k.user_id,
        "public_key": k.public_key,
        "fingerprint": k.fingerprint,
        "created_at": time(k.created_at),
        "updated_at": null,
        "deleted_at": null,
        "deleted": false,
    })
}

async fn show(State(s): State<AppState>, ctx: Context, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    enforce(&s, &ctx, "os_compute_api:os-keypairs:show")?;
    let k = s.compute.keypair(&ctx.user_id, &name).await?;
    Ok(Json(json!({"keypair": full(&k)})))
}

async fn create(State(s): State<AppState>, ctx: Context, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    enforce(&s, &ctx, "os_compute_api:os-keypairs:create")?;
    let v = body(&bytes)?;
    let m = member(&v, "keypair")?;
    only(m, &["name", "public_key"])?;
    let name = match m.get("name") {
        Some(Value::String(n)) => n.as_str(),
        Some(other) => return Err(invalid("name", other, &format!("{other} is not of type 'string'"))),
        None => {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute keypair. Value: {}. 'name' is a required property",
                Value::Object(m.clone())
            )));
        }
    };
    let public_key = match m.get("public_key") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(other) => return Err(invalid("public_key", other, &format!("{other} is not of type 'string'"))),
    };
    let project_id = ctx.project_id.clone().unwrap_or_default();
    let created = s.compute.keypair_create(&project_id, &ctx.user_id, name, "ssh", public_key).await?;
    let k = &created.keypair;
    let mut out = json!({
        "name": k.name,
        "public_key": k.public_key,
        "fingerprint": k.fingerprint,
        "user_id": k.user_id,
    });
    if let Some(private) = created.private_key {
        out["private_key"] = json!(private);
    }
    Ok(Json(json!({"keypair": out})))
}

async fn delete(State(s): State<AppState>, ctx: Context, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    enforce(&s, &ctx, "os_compute_api:os-keypairs:delete")?;
    s.compute.keypair_delete(&ctx.user_id, &name).await?;
    Ok(StatusCode::ACCEPTED)
}
