//! Key pairs (`/os-keypairs`): import an SSH public key or generate a key pair (the private key is returned
//! once), list, show and delete; each belongs to the user who created it.

use ::auth::Context;
use api_common::{ApiError, Microversion, QueryPairs};
use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};

use super::{AppState, body, invalid, member, only, v};
use crate::store::KeypairRow;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/os-keypairs", get(list).post(create))
        .route("/v2.1/os-keypairs/{name}", get(show).delete(delete))
}

/// The user whose key pairs a request is about: the caller, or from 2.10 the `user_id` an admin names; checked
/// against `rule` with that user as the target.
fn target_user(
    s: &AppState,
    ctx: &Context,
    mv: Microversion,
    asked: Option<&str>,
    rule: &str,
) -> Result<String, ApiError> {
    let user = match asked {
        Some(u) if mv >= v(10) => u.to_string(),
        _ => ctx.user_id.clone(),
    };
    let target = json!({"user_id": user, "project_id": ctx.project_id});
    s.policy.enforce(rule, ctx, &target)?;
    Ok(user)
}

fn time(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S.000000").to_string())
        .unwrap_or_default()
}

/// The key pair representation: every microversion-dependent field of a key pair is decided here.
fn view(k: &KeypairRow, mv: Microversion, purpose: Purpose) -> Value {
    let mut out = json!({"name": k.name, "public_key": k.public_key, "fingerprint": k.fingerprint});
    match purpose {
        Purpose::List => {}
        Purpose::Create => out["user_id"] = json!(k.user_id),
        Purpose::Show => {
            merge(
                &mut out,
                json!({
                    "id": k.id,
                    "user_id": k.user_id,
                    "created_at": time(k.created_at),
                    "updated_at": null,
                    "deleted_at": null,
                    "deleted": false,
                }),
            );
        }
    }
    if mv >= v(2) {
        out["type"] = json!(k.key_type);
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    List,
    Show,
    Create,
}

fn merge(v: &mut Value, extra: Value) {
    if let (Value::Object(a), Value::Object(b)) = (v, extra) {
        a.extend(b);
    }
}

/// Largest page (2.35), as Nova's `max_limit`.
const MAX_LIMIT: usize = 1000;

async fn list(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let user = target_user(&s, &ctx, mv, q.get("user_id"), "os_compute_api:os-keypairs:index")?;
    let mut all = s.compute.keypairs(&user).await?;
    all.sort_by(|a, b| a.name.cmp(&b.name));
    // Paging from 2.35: `limit` and `marker` (a key pair name).
    let (items, full_page) = if mv >= v(35) {
        let page = super::page(&q, MAX_LIMIT)?;
        let (items, _) = page.apply(all, |k| k.name.as_str())?;
        let full = items.len() == page.limit;
        (items, full)
    } else {
        (all, false)
    };
    let keypairs: Vec<Value> = items.iter().map(|k| json!({"keypair": view(k, mv, Purpose::List)})).collect();
    let mut out = json!({"keypairs": keypairs});
    if mv >= v(35)
        && let Some(last) = items.last().filter(|_| full_page)
    {
        let next = api_common::Page::next_link(&s.url("/os-keypairs"), &q, &last.name);
        out["keypairs_links"] = json!([{"rel": "next", "href": next}]);
    }
    Ok(Json(out))
}

async fn show(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(name): Path<String>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let user = target_user(&s, &ctx, mv, q.get("user_id"), "os_compute_api:os-keypairs:show")?;
    let k = s.compute.keypair(&user, &name).await?;
    Ok(Json(json!({"keypair": view(&k, mv, Purpose::Show)})))
}

async fn create(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let b = body(&bytes)?;
    let m = member(&b, "keypair")?;
    let mut allowed = vec!["name", "public_key"];
    if mv >= v(2) {
        allowed.push("type");
    }
    if mv >= v(10) {
        allowed.push("user_id");
    }
    only(m, &allowed)?;
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
    let key_type = match m.get("type") {
        None => "ssh",
        Some(Value::String(t)) if t == "ssh" || t == "x509" => t.as_str(),
        Some(other) => {
            return Err(invalid("type", other, &format!("{other} is not one of ['ssh', 'x509']")));
        }
    };
    let asked = match m.get("user_id") {
        None => None,
        Some(Value::String(u)) => Some(u.as_str()),
        Some(other) => {
            return Err(invalid("user_id", other, &format!("{other} is not of type 'string'")));
        }
    };
    let user = target_user(&s, &ctx, mv, asked, "os_compute_api:os-keypairs:create")?;
    let project_id = ctx.project_id.clone().unwrap_or_default();
    let created = s.compute.keypair_create(&project_id, &user, name, key_type, public_key).await?;
    let mut out = view(&created.keypair, mv, Purpose::Create);
    if let Some(private) = created.private_key {
        out["private_key"] = json!(private);
    }
    // 2.2 fixed the status of a create to 201.
    let status = if mv >= v(2) { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({"keypair": out}))).into_response())
}

async fn delete(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(name): Path<String>,
    q: QueryPairs,
) -> Result<StatusCode, ApiError> {
    let user = target_user(&s, &ctx, mv, q.get("user_id"), "os_compute_api:os-keypairs:delete")?;
    s.compute.keypair_delete(&user, &name).await?;
    // 2.2 fixed the status of a delete to 204.
    Ok(if mv >= v(2) { StatusCode::NO_CONTENT } else { StatusCode::ACCEPTED })
}
