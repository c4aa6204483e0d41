//! Application credentials and access rules (`/v3/users/{user_id}/application_credentials`,
//! `/v3/users/{user_id}/access_rules`), as Keystone's v3 API.
//!
//! A credential is created by its owner from a project-scoped token: it is bound to that project and to a subset of
//! the token's roles (all of them by default). Its secret is shown once, in the creation response, and stored only
//! as a bcrypt hash. Tokens of a restricted credential (the default) may not manage credentials or trusts.

use api_common::{ApiError, Json, QueryPairs};
use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde_json::{Value, json};

use super::{AppState, authorize};
use crate::{
    error::Error,
    service::{TokenInfo, new_id},
    store::{AccessRuleRow, AppCredRow, RoleRow},
};

/// Default policy rules (upstream names, secure-RBAC defaults; admins in any scope, as upstream's deprecated
/// `rule:admin_required` alternative allows).
pub(super) const POLICIES: &[(&str, &str)] = &[
    ("identity:get_application_credential", "rule:admin_required or rule:system_reader or rule:owner"),
    ("identity:list_application_credentials", "rule:admin_required or rule:system_reader or rule:owner"),
    ("identity:create_application_credential", "rule:admin_required or rule:owner"),
    ("identity:delete_application_credential", "rule:admin_required or rule:system_admin or rule:owner"),
    ("identity:get_access_rule", "rule:admin_required or rule:system_reader or rule:owner"),
    ("identity:list_access_rules", "rule:admin_required or rule:system_reader or rule:owner"),
    ("identity:delete_access_rule", "rule:admin_required or rule:system_admin or rule:owner"),
];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/users/{user_id}/application_credentials", get(list).post(create))
        .route("/v3/users/{user_id}/application_credentials/{id}", get(show).delete(remove))
        .route("/v3/users/{user_id}/access_rules", get(list_rules))
        .route("/v3/users/{user_id}/access_rules/{id}", get(show_rule).delete(remove_rule))
}

const METHODS: &[&str] = &["HEAD", "GET", "POST", "PUT", "PATCH", "DELETE"];

/// Parses an expiry as clients send it: RFC 3339, or ISO 8601 without a zone (taken as UTC).
pub(super) fn parse_expiry(field: &str, v: &Value) -> Result<Option<DateTime<Utc>>, Error> {
    let bad = || Error::BadRequest(format!("Invalid input for field '{field}': {v} is not a valid date-time."));
    match v {
        Value::Null => Ok(None),
        Value::String(s) => {
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Ok(Some(t.with_timezone(&Utc)));
            }
            let naive = s.trim_end_matches('Z');
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S%.f"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(naive, f).ok())
                .map(|n| Some(Utc.from_utc_datetime(&n)))
                .ok_or_else(bad)
        }
        _ => Err(bad()),
    }
}

/// Refuses tokens of restricted application credentials, as upstream does for credential and trust management.
pub(super) fn check_unrestricted(info: &TokenInfo, what: &str) -> Result<(), Error> {
    if info.is_restricted_application_credential() {
        return Err(Error::Forbidden(format!(
            "You are not authorized to perform the requested action: Using method 'application_credential' is not \
             allowed for managing {what}."
        )));
    }
    Ok(())
}

fn string_field<'a>(body: &'a Value, field: &str, max: usize) -> Result<Option<&'a str>, Error> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s)),
        Some(Value::String(_)) => Err(Error::BadRequest(format!("Invalid input for field '{field}': is too long"))),
        Some(other) => Err(Error::BadRequest(format!("Invalid input for field '{field}': {other} is not of type 'string'"))),
    }
}

fn rule_json(s: &AppState, r: &AccessRuleRow) -> Value {
    json!({
        "id": r.id, "service": r.service, "path": r.path, "method": r.method,
        "links": {"self": s.url(&format!("users/{}/access_rules/{}", r.user_id, r.id))},
    })
}

/// The credential as upstream shows it (never the secret, which only the creation response adds).
fn app_cred_json(s: &AppState, c: &AppCredRow, roles: &[RoleRow]) -> Value {
    let expires_at = c
        .expires_at
        .and_then(|us| Utc.timestamp_micros(us).single())
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string());
    json!({
        "id": c.id,
        "name": c.name,
        "description": c.description,
        "project_id": c.project_id,
        "expires_at": expires_at,
        "unrestricted": c.unrestricted,
        "roles": roles
            .iter()
            .filter(|r| c.role_ids.contains(&r.id))
            .map(|r| json!({"id": r.id, "name": r.name, "domain_id": r.domain_id}))
            .collect::<Vec<_>>(),
        "access_rules": c
            .access_rules
            .iter()
            .map(|r| json!({"id": r.id, "service": r.service, "path": r.path, "method": r.method}))
            .collect::<Vec<_>>(),
        "links": {"self": s.url(&format!("users/{}/application_credentials/{}", c.user_id, c.id))},
    })
}

/// 64 random bytes, URL-safe base64 without padding, as upstream generates secrets.
fn generate_secret() -> String {
    let bytes: Vec<u8> = (0..64).map(|_| rand::random::<u8>()).collect();
    URL_SAFE_NO_PAD.encode(bytes)
}

async fn create(
    State(s): State<AppState>,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    let info = authorize(&s, &headers, "identity:create_application_credential", &json!({"user_id": user_id})).await?;
    let body = body
        .get("application_credential")
        .filter(|b| b.is_object())
        .ok_or_else(|| Error::BadRequest("Invalid input for field 'application_credential': is required".into()))?;
    check_unrestricted(&info, "additional application credentials")?;
    if info.user.id != user_id {
        return Err(Error::Forbidden(
            "You are not authorized to perform the requested action: Cannot create an application credential for \
             another user."
                .into(),
        )
        .into());
    }
    let Some((project, _)) = &info.project else {
        return Err(Error::BadRequest(
            "Invalid application credential: an application credential must be created with a project-scoped token."
                .into(),
        )
        .into());
    };
    let name = string_field(body, "name", 255)?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::BadRequest("Invalid input for field 'name': 'name' is a required property".into()))?;
    let description = string_field(body, "description", 10_000)?.map(str::to_string);
    let secret = string_field(body, "secret", 4096)?.filter(|x| !x.is_empty()).map(str::to_string);
    let secret = secret.unwrap_or_else(generate_secret);
    let expires_at = parse_expiry("expires_at", body.get("expires_at").unwrap_or(&Value::Null))?;
    let unrestricted = match body.get("unrestricted") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(Error::BadRequest(format!("Invalid input for field 'unrestricted': {other} is not of type 'boolean'")).into());
        }
    };
    // Roles: by id or name, each one the creating token carries; all of the token's by default.
    let all_roles = s.identity.store().role_list().await?;
    let role_ids: Vec<String> = match body.get("roles") {
        None | Some(Value::Null) => info.roles.iter().map(|r| r.id.clone()).collect(),
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut ids = Vec::new();
            for item in items {
                let role = match (item.get("id").and_then(Value::as_str), item.get("name").and_then(Value::as_str)) {
                    (Some(id), _) => all_roles.iter().find(|r| r.id == id).ok_or_else(|| Error::not_found("role", id))?,
                    (None, Some(name)) => all_roles
                        .iter()
                        .find(|r| r.name == name && r.domain_id.is_none())
                        .ok_or_else(|| Error::not_found("role", name))?,
                    _ => {
                        return Err(Error::BadRequest("Invalid input for field 'roles': each role needs an id or a name".into()).into());
                    }
                };
                if !info.roles.iter().any(|r| r.id == role.id) {
                    return Err(Error::BadRequest(
                        "Invalid application credential: Cannot create an application credential with unassigned role"
                            .into(),
                    )
                    .into());
                }
                if !ids.contains(&role.id) {
                    ids.push(role.id.clone());
                }
            }
            ids
        }
        Some(Value::Array(_)) => info.roles.iter().map(|r| r.id.clone()).collect(),
        Some(other) => {
            return Err(Error::BadRequest(format!("Invalid input for field 'roles': {other} is not of type 'array'")).into());
        }
    };
    let access_rules = parse_access_rules(&s, &user_id, body.get("access_rules")).await?;
    let mut cred = AppCredRow {
        id: new_id(),
        name: name.to_string(),
        user_id: user_id.clone(),
        project_id: project.id.clone(),
        secret_hash: s.identity.hash_password(&secret).await?,
        description,
        expires_at: expires_at.map(|t| t.timestamp_micros()),
        unrestricted,
        role_ids,
        access_rules,
    };
    match s.identity.store().application_credential_create(&mut cred).await {
        Ok(()) => {}
        Err(Error::Db(e)) if e.is_unique_violation() => {
            return Err(Error::Conflict { kind: "application_credential", detail: "Duplicate entry".into() }.into());
        }
        Err(e) => return Err(e.into()),
    }
    let mut out = app_cred_json(&s, &cred, &all_roles);
    out["secret"] = Value::String(secret);
    Ok((StatusCode::CREATED, Json(json!({"application_credential": out}))).into_response())
}

async fn parse_access_rules(s: &AppState, user_id: &str, v: Option<&Value>) -> Result<Vec<AccessRuleRow>, Error> {
    let items = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(Error::BadRequest(format!("Invalid input for field 'access_rules': {other} is not of type 'array'")));
        }
    };
    let mut rules = Vec::with_capacity(items.len());
    for item in items {
        let field = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_string);
        match (field("id"), field("service"), field("path"), field("method")) {
            (Some(id), None, None, None) => {
                let rule = s.identity.store().access_rule_get(&id).await?.filter(|r| r.user_id == user_id);
                rules.push(rule.ok_or_else(|| Error::not_found("access_rule", id))?);
            }
            (_, Some(service), Some(path), Some(method)) => {
                if !METHODS.contains(&method.as_str()) {
                    return Err(Error::BadRequest(format!(
                        "Invalid input for field 'access_rules/method': '{method}' is not one of {METHODS:?}"
                    )));
                }
                if service.len() > 64 || path.len() > 255 || service.is_empty() || !path.starts_with('/') {
                    return Err(Error::BadRequest("Invalid input for field 'access_rules': bad service or path".into()));
                }
                rules.push(AccessRuleRow { id: new_id(), user_id: user_id.to_string(), service, path, method });
            }
            _ => {
                return Err(Error::BadRequest(
                    "Invalid input for field 'access_rules': each rule needs service, path and method, or an id".into(),
                ));
            }
        }
    }
    Ok(rules)
}

async fn list(
    State(s): State<AppState>,
    Path(user_id): Path<String>,
    q: QueryPairs,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:list_application_credentials", &json!({"user_id": user_id})).await?;
    let creds = s.identity.store().application_credential_list(&user_id, q.get("name")).await?;
    let roles = s.identity.store().role_list().await?;
    let items = creds.iter().map(|c| app_cred_json(&s, c, &roles)).collect();
    Ok(s.collection("application_credentials", items, &format!("users/{user_id}/application_credentials")))
}

async fn find(s: &AppState, user_id: &str, id: &str) -> Result<AppCredRow, Error> {
    s.identity
        .store()
        .application_credential_get(id)
        .await?
        .filter(|c| c.user_id == user_id)
        .ok_or_else(|| Error::not_found("application credential", id))
}

async fn show(
    State(s): State<AppState>,
    Path((user_id, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:get_application_credential", &json!({"user_id": user_id})).await?;
    let cred = find(&s, &user_id, &id).await?;
    let roles = s.identity.store().role_list().await?;
    Ok(Json(json!({"application_credential": app_cred_json(&s, &cred, &roles)})))
}

async fn remove(
    State(s): State<AppState>,
    Path((user_id, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let info = authorize(&s, &headers, "identity:delete_application_credential", &json!({"user_id": user_id})).await?;
    check_unrestricted(&info, "additional application credentials")?;
    find(&s, &user_id, &id).await?;
    s.identity.store().application_credential_delete(&id).await?;
    // Its tokens die with it: validation looks the credential up.
    s.identity.changed();
    Ok(StatusCode::NO_CONTENT)
}

async fn list_rules(
    State(s): State<AppState>,
    Path(user_id): Path<String>,
    q: QueryPairs,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:list_access_rules", &json!({"user_id": user_id})).await?;
    let rules = s.identity.store().access_rule_list(&user_id).await?;
    let items = rules
        .iter()
        .filter(|r| q.get("service").is_none_or(|v| v == r.service))
        .filter(|r| q.get("path").is_none_or(|v| v == r.path))
        .filter(|r| q.get("method").is_none_or(|v| v == r.method))
        .map(|r| rule_json(&s, r))
        .collect();
    Ok(s.collection("access_rules", items, &format!("users/{user_id}/access_rules")))
}

async fn find_rule(s: &AppState, user_id: &str, id: &str) -> Result<AccessRuleRow, Error> {
    s.identity
        .store()
        .access_rule_get(id)
        .await?
        .filter(|r| r.user_id == user_id)
        .ok_or_else(|| Error::not_found("access rule", id))
}

async fn show_rule(
    State(s): State<AppState>,
    Path((user_id, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:get_access_rule", &json!({"user_id": user_id})).await?;
    let rule = find_rule(&s, &user_id, &id).await?;
    Ok(Json(json!({"access_rule": rule_json(&s, &rule)})))
}

async fn remove_rule(
    State(s): State<AppState>,
    Path((user_id, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize(&s, &headers, "identity:delete_access_rule", &json!({"user_id": user_id})).await?;
    find_rule(&s, &user_id, &id).await?;
    if s.identity.store().access_rule_in_use(&id).await? {
        return Err(Error::Forbidden(format!(
            "You are not authorized to perform the requested action: cannot delete access rule {id}, it is in use \
             by an application credential."
        ))
        .into());
    }
    s.identity.store().access_rule_delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_formats_clients_send() {
        let want = Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap();
        for s in ["2030-01-02T03:04:05Z", "2030-01-02T03:04:05", "2030-01-02T03:04:05.000000", "2030-01-02T03:04:05+00:00"] {
            assert_eq!(parse_expiry("expires_at", &json!(s)).unwrap(), Some(want), "{s}");
        }
        assert_eq!(parse_expiry("expires_at", &Value::Null).unwrap(), None);
        for bad in [json!("bad.123Z"), json!(12), json!("2030-13-02T03:04:05")] {
            assert!(matches!(parse_expiry("expires_at", &bad), Err(Error::BadRequest(_))), "{bad}");
        }
    }

    #[test]
    fn generated_secrets_are_long_and_distinct() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_eq!(a.len(), 86);
        assert_ne!(a, b);
    }
}
