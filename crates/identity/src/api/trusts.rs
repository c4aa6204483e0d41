//! Trusts (`/v3/OS-TRUST/trusts`), as Keystone's OS-TRUST extension: a trustor delegates some of their roles on a
//! project to a trustee, who then gets trust-scoped tokens (`"scope": {"OS-TRUST:trust": {"id": ...}}`) acting as
//! the trustee, or as the trustor with impersonation. Expired and used-up trusts answer 404, as upstream.

use api_common::{ApiError, Json, QueryPairs};
use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

use super::{
    AppState, authorize,
    application_credentials::{check_unrestricted, parse_expiry},
    caller, enforce,
};
use crate::{
    error::Error,
    service::{format_time, new_id},
    store::{RoleRow, TrustRow, kind},
};

/// Upstream's default `[trust] max_redelegation_count`.
const MAX_REDELEGATION_COUNT: i64 = 3;

const TRUSTOR_OR_TRUSTEE: &str =
    "rule:admin_required or rule:system_reader or user_id:%(target.trust.trustor_user_id)s or \
     user_id:%(target.trust.trustee_user_id)s";

/// Default policy rules (upstream names, secure-RBAC defaults; admins in any scope, as upstream's deprecated
/// `rule:admin_required` alternative allows).
pub(super) const POLICIES: &[(&str, &str)] = &[
    ("identity:create_trust", "rule:admin_required or user_id:%(target.trust.trustor_user_id)s"),
    ("identity:list_trusts", "rule:admin_required or rule:system_reader"),
    (
        "identity:list_trusts_for_trustor",
        "rule:admin_required or rule:system_reader or user_id:%(target.trust.trustor_user_id)s",
    ),
    (
        "identity:list_trusts_for_trustee",
        "rule:admin_required or rule:system_reader or user_id:%(target.trust.trustee_user_id)s",
    ),
    ("identity:list_roles_for_trust", TRUSTOR_OR_TRUSTEE),
    ("identity:get_role_for_trust", TRUSTOR_OR_TRUSTEE),
    ("identity:delete_trust", "rule:admin_required or rule:system_admin or user_id:%(target.trust.trustor_user_id)s"),
    ("identity:get_trust", TRUSTOR_OR_TRUSTEE),
];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/OS-TRUST/trusts", get(list).post(create))
        // Tempest's trusts client lists with a trailing slash; Keystone's router accepts both.
        .route("/v3/OS-TRUST/trusts/", get(list).post(create))
        .route("/v3/OS-TRUST/trusts/{trust_id}", get(show).delete(remove))
        .route("/v3/OS-TRUST/trusts/{trust_id}/roles", get(list_roles))
        .route("/v3/OS-TRUST/trusts/{trust_id}/roles/{role_id}", get(show_role))
}

fn role_json(s: &AppState, r: &RoleRow) -> Value {
    json!({
        "id": r.id, "name": r.name, "domain_id": r.domain_id, "description": null, "options": {},
        "links": {"self": s.url(&format!("roles/{}", r.id))},
    })
}

/// A trust as upstream shows it; `roles` only for single trusts, not in lists.
fn trust_json(s: &AppState, t: &TrustRow, roles: Option<&[RoleRow]>) -> Value {
    let mut v = json!({
        "id": t.id,
        "trustor_user_id": t.trustor_user_id,
        "trustee_user_id": t.trustee_user_id,
        "project_id": t.project_id,
        "impersonation": t.impersonation,
        "expires_at": t.expires_at.and_then(|us| Utc.timestamp_micros(us).single()).map(format_time),
        "remaining_uses": t.remaining_uses,
        "allow_redelegation": t.allow_redelegation,
        "redelegation_count": t.redelegation_count,
        "redelegated_trust_id": t.redelegated_trust_id,
        "links": {"self": s.url(&format!("OS-TRUST/trusts/{}", t.id))},
    });
    if let Some(roles) = roles {
        v["roles"] = roles.iter().filter(|r| t.role_ids.contains(&r.id)).map(|r| role_json(s, r)).collect();
        v["roles_links"] =
            json!({"self": s.url(&format!("OS-TRUST/trusts/{}/roles", t.id)), "previous": null, "next": null});
    }
    v
}

fn target(t: &TrustRow) -> Value {
    json!({
        "trust_id": t.id,
        "trust": {"id": t.id, "trustor_user_id": t.trustor_user_id, "trustee_user_id": t.trustee_user_id,
                  "project_id": t.project_id},
    })
}

fn forbidden(action: &str) -> Error {
    Error::Forbidden(format!("You are not authorized to perform the requested action: {action}."))
}

fn bad(field: &str, why: &str) -> Error {
    Error::BadRequest(format!("Invalid input for field '{field}': {why}"))
}

fn opt_int(body: &Value, field: &str, min: i64) -> Result<Option<i64>, Error> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if n >= min => Ok(Some(n)),
            Some(n) => Err(bad(field, &format!("{n} is less than the minimum of {min}"))),
            None => Err(bad(field, &format!("{v} is not of type 'integer'"))),
        },
    }
}

fn opt_bool(body: &Value, field: &str) -> Result<Option<bool>, Error> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(bad(field, &format!("{v} is not of type 'boolean'"))),
    }
}

fn opt_str<'a>(body: &'a Value, field: &str) -> Result<Option<&'a str>, Error> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= 64 => Ok(Some(s)),
        Some(v) => Err(bad(field, &format!("{v} is not a valid id"))),
    }
}

async fn create(State(s): State<AppState>, headers: HeaderMap, Json(body): Json<Value>) -> Result<Response, ApiError> {
    let body = body.get("trust").filter(|b| b.is_object()).cloned().unwrap_or_else(|| json!({}));
    let info = authorize(&s, &headers, "identity:create_trust", &json!({"trust": body})).await?;
    let trustor_id = opt_str(&body, "trustor_user_id")?.ok_or_else(|| bad("trustor_user_id", "is required"))?;
    let trustee_id = opt_str(&body, "trustee_user_id")?.ok_or_else(|| bad("trustee_user_id", "is required"))?;
    let impersonation = opt_bool(&body, "impersonation")?.ok_or_else(|| bad("impersonation", "is required"))?;
    let project_id = opt_str(&body, "project_id")?.filter(|p| !p.is_empty()).map(str::to_string);
    let remaining_uses = opt_int(&body, "remaining_uses", 1)?;
    let allow_redelegation = opt_bool(&body, "allow_redelegation")?.unwrap_or(false);
    let redelegation_count = opt_int(&body, "redelegation_count", 0)?;
    let role_refs = match body.get("roles") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(v) => return Err(bad("roles", &format!("{v} is not of type 'array'")).into()),
    };
    let expires_at = parse_expiry("expires_at", body.get("expires_at").unwrap_or(&Value::Null))?;
    check_unrestricted(&info, "trusts")?;
    if project_id.is_some() && role_refs.is_empty() {
        return Err(forbidden("At least one role should be specified").into());
    }
    if info.user.id != trustor_id {
        return Err(forbidden("The authenticated user should match the trustor").into());
    }
    let store = s.identity.store();
    store.user_get(trustee_id).await?.ok_or_else(|| Error::not_found("user", trustee_id))?;
    let all_roles = store.role_list().await?;
    let mut role_ids: Vec<String> = Vec::new();
    for r in &role_refs {
        let role = match (r.get("id").and_then(Value::as_str), r.get("name").and_then(Value::as_str)) {
            (Some(id), _) => all_roles.iter().find(|x| x.id == id).ok_or_else(|| Error::not_found("role", id))?,
            (None, Some(name)) => all_roles
                .iter()
                .find(|x| x.name == name && x.domain_id.is_none())
                .ok_or_else(|| Error::not_found("role", name))?,
            _ => return Err(bad("roles", "each role needs an id or a name").into()),
        };
        if !role_ids.contains(&role.id) {
            role_ids.push(role.id.clone());
        }
    }
    // The trustor must hold every delegated role on the project (effective roles count).
    let held: Vec<String> = match &project_id {
        Some(pid) => {
            store.project_get(pid).await?.ok_or_else(|| Error::not_found("project", pid))?;
            s.identity.roles_on(trustor_id, kind::USER_PROJECT, pid).await?.into_iter().map(|r| r.id).collect()
        }
        None => Vec::new(),
    };
    if let Some(missing) = role_ids.iter().find(|r| !held.contains(r)) {
        return Err(Error::not_found("role", missing).into());
    }
    // Redelegation: a trust-scoped caller creates a child of its trust, within what the parent allows.
    let (redelegated_trust_id, redelegation_count) = match &info.trust {
        Some(parent) => {
            let depth = parent.redelegation_count.unwrap_or(0);
            if !parent.allow_redelegation || depth < 1 {
                return Err(forbidden("Redelegation is not allowed for this trust").into());
            }
            if parent.project_id != project_id || role_ids.iter().any(|r| !parent.role_ids.contains(r)) {
                return Err(forbidden("Redelegated trusts may only narrow the project and roles of their parent").into());
            }
            let count = redelegation_count.unwrap_or(depth - 1);
            if count > depth - 1 {
                return Err(forbidden(&format!(
                    "Specified redelegation depth of {count} is out of allowed range of [0..{}]",
                    depth - 1
                ))
                .into());
            }
            (Some(parent.id.clone()), allow_redelegation.then_some(count))
        }
        None if allow_redelegation => {
            let count = redelegation_count.unwrap_or(MAX_REDELEGATION_COUNT);
            if count > MAX_REDELEGATION_COUNT {
                return Err(forbidden(&format!(
                    "Specified redelegation depth of {count} is out of allowed range of [0..{MAX_REDELEGATION_COUNT}]"
                ))
                .into());
            }
            (None, Some(count))
        }
        None => (None, None),
    };
    if allow_redelegation && remaining_uses.is_some() {
        return Err(bad("remaining_uses", "must not be set if redelegation is allowed").into());
    }
    let trust = TrustRow {
        id: new_id(),
        trustor_user_id: trustor_id.to_string(),
        trustee_user_id: trustee_id.to_string(),
        project_id,
        impersonation,
        expires_at: expires_at.map(|t| t.timestamp_micros()),
        remaining_uses,
        allow_redelegation,
        redelegation_count,
        redelegated_trust_id,
        role_ids,
    };
    store.trust_create(&trust).await?;
    Ok((StatusCode::CREATED, Json(json!({"trust": trust_json(&s, &trust, Some(&all_roles))}))).into_response())
}

async fn list(State(s): State<AppState>, q: QueryPairs, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let trustor = q.get("trustor_user_id").filter(|v| !v.is_empty());
    let trustee = q.get("trustee_user_id").filter(|v| !v.is_empty());
    match (trustor, trustee) {
        (Some(u), _) => {
            authorize(&s, &headers, "identity:list_trusts_for_trustor", &json!({"trust": {"trustor_user_id": u}}))
                .await?
        }
        (None, Some(u)) => {
            authorize(&s, &headers, "identity:list_trusts_for_trustee", &json!({"trust": {"trustee_user_id": u}}))
                .await?
        }
        (None, None) => authorize(&s, &headers, "identity:list_trusts", &json!({})).await?,
    };
    let now = Utc::now().timestamp_micros();
    let trusts = s.identity.store().trust_list(trustor, trustor.is_none().then_some(trustee).flatten()).await?;
    let items = trusts
        .iter()
        .filter(|t| t.expires_at.is_none_or(|e| e > now) && t.remaining_uses.is_none_or(|n| n > 0))
        .map(|t| trust_json(&s, t, None))
        .collect();
    Ok(s.collection("trusts", items, "OS-TRUST/trusts"))
}

/// Looks the trust up (404 first, as upstream), then enforces `rule` on it.
async fn authorized_trust(s: &AppState, headers: &HeaderMap, id: &str, rule: &str) -> Result<TrustRow, ApiError> {
    let info = caller(s, headers).await?;
    let trust = s.identity.active_trust(id).await?.ok_or_else(|| Error::not_found("trust", id))?;
    enforce(s, &info, rule, &target(&trust))?;
    Ok(trust)
}

async fn show(
    State(s): State<AppState>,
    Path(trust_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let trust = authorized_trust(&s, &headers, &trust_id, "identity:get_trust").await?;
    let roles = s.identity.store().role_list().await?;
    Ok(Json(json!({"trust": trust_json(&s, &trust, Some(&roles))})))
}

async fn remove(
    State(s): State<AppState>,
    Path(trust_id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let trust = authorized_trust(&s, &headers, &trust_id, "identity:delete_trust").await?;
    let info = caller(&s, &headers).await?;
    check_unrestricted(&info, "trusts")?;
    s.identity.store().trust_delete(&trust.id).await?;
    // Its tokens die with it: validation looks the trust up.
    s.identity.changed();
    Ok(StatusCode::NO_CONTENT)
}

async fn list_roles(
    State(s): State<AppState>,
    Path(trust_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let trust = authorized_trust(&s, &headers, &trust_id, "identity:list_roles_for_trust").await?;
    let roles = s.identity.store().role_list().await?;
    let items = roles.iter().filter(|r| trust.role_ids.contains(&r.id)).map(|r| role_json(&s, r)).collect();
    Ok(s.collection("roles", items, &format!("OS-TRUST/trusts/{trust_id}/roles")))
}

async fn show_role(
    State(s): State<AppState>,
    Path((trust_id, role_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let trust = authorized_trust(&s, &headers, &trust_id, "identity:get_role_for_trust").await?;
    let roles = s.identity.store().role_list().await?;
    let role = roles
        .iter()
        .find(|r| r.id == role_id && trust.role_ids.contains(&r.id))
        .ok_or_else(|| Error::not_found("role", &role_id))?;
    Ok(Json(json!({"role": role_json(&s, role)})))
}
