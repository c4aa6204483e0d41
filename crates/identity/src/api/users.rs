//! `/v3/users`: user CRUD with extra attributes and resource options, self-service password change, and the
//! projects and groups of a user. Password rules (strength, history, age, expiry, lockout) live in
//! [`crate::service::Identity`]; this module only parses, authorizes and shapes.

use api_common::{ApiError, Json, QueryPairs};
use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value, json};

use super::{AppState, authorize, caller, enforce, groups::group_json};
use crate::{
    error::Error,
    service::{DEFAULT_DOMAIN_ID, format_time, new_id},
    store::{ProjectRow, UserDetail, UserFilter, UserRow},
};

/// Reads of a user: admins, system readers, readers of the user's domain, and the user themself.
const READ_USER: &str = "rule:admin_required or (role:reader and system_scope:all) or \
     (role:reader and domain_id:%(target.user.domain_id)s) or user_id:%(target.user.id)s";

/// Default policy rules (upstream names, secure-RBAC defaults; admin in any scope may do everything).
pub(super) const POLICIES: &[(&str, &str)] = &[
    ("identity:get_user", READ_USER),
    (
        "identity:list_users",
        "rule:admin_required or (role:reader and system_scope:all) or (role:reader and domain_id:%(target.domain_id)s)",
    ),
    ("identity:create_user", "rule:admin_required"),
    ("identity:update_user", "rule:admin_required"),
    ("identity:delete_user", "rule:admin_required"),
    ("identity:change_password", "rule:admin_required or user_id:%(user_id)s"),
    ("identity:list_projects_for_user", READ_USER),
    ("identity:list_groups_for_user", READ_USER),
];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/users", get(list).post(create))
        .route("/v3/users/{user_id}", get(show).patch(update).delete(remove))
        .route("/v3/users/{user_id}/password", post(change_password))
        .route("/v3/users/{user_id}/projects", get(list_projects))
        .route("/v3/users/{user_id}/groups", get(list_groups))
}

/// Resource options upstream knows for users, and whether each takes a boolean (else a list of rule lists).
const OPTIONS: &[(&str, bool)] = &[
    ("ignore_change_password_upon_first_use", true),
    ("ignore_password_expiry", true),
    ("ignore_lockout_failure_attempts", true),
    ("lock_password", true),
    ("ignore_user_inactivity", true),
    ("multi_factor_auth_enabled", true),
    ("multi_factor_auth_rules", false),
];

/// Body keys that are attributes of their own, never "extra".
const RESERVED: &[&str] =
    &["id", "name", "domain_id", "enabled", "default_project_id", "password", "options", "links", "password_expires_at"];

/// The user as Keystone shows it: its attributes, extra attributes, options and links.
pub(super) fn user_json(s: &AppState, u: &UserDetail) -> Value {
    let mut m = u.extra.clone();
    m.insert("id".into(), json!(u.user.id));
    m.insert("name".into(), json!(u.user.name));
    m.insert("domain_id".into(), json!(u.user.domain_id));
    m.insert("enabled".into(), json!(u.user.enabled));
    m.insert("password_expires_at".into(), json!(u.password_expires_at.and_then(time).map(format_time)));
    m.insert("options".into(), Value::Object(u.options.clone()));
    if let Some(p) = &u.user.default_project_id {
        m.insert("default_project_id".into(), json!(p));
    }
    m.insert("links".into(), json!({"self": s.url(&format!("users/{}", u.user.id))}));
    Value::Object(m)
}

fn time(secs: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(secs, 0).single()
}

fn project_json(s: &AppState, p: &ProjectRow) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "domain_id": p.domain_id,
        "description": p.description.clone().unwrap_or_default(),
        "enabled": p.enabled,
        "parent_id": p.parent_id,
        "is_domain": p.is_domain,
        "tags": [],
        "options": {},
        "links": {"self": s.url(&format!("projects/{}", p.id))},
    })
}

fn invalid(field: &str, why: impl std::fmt::Display) -> Error {
    Error::BadRequest(format!("Invalid input for field '{field}': {why}"))
}

/// The object under `key` of a request body.
fn entity(body: Value, key: &str) -> Result<Map<String, Value>, Error> {
    match body {
        Value::Object(mut m) => match m.remove(key) {
            Some(Value::Object(e)) => Ok(e),
            Some(other) => Err(invalid(key, format!("{other} is not of type 'object'"))),
            None => Err(Error::BadRequest(format!("Invalid input for field '{key}': '{key}' is a required property"))),
        },
        _ => Err(Error::BadRequest("Expecting to find a JSON object in the request body.".into())),
    }
}

fn name_field(field: &str, v: &Value) -> Result<String, Error> {
    match v.as_str() {
        Some(n) if n.trim().is_empty() => Err(invalid(field, format!("'{n}' is too short"))),
        Some(n) if n.chars().count() > 255 => Err(invalid(field, "is too long")),
        Some(n) => Ok(n.to_string()),
        None => Err(invalid(field, format!("{v} is not of type 'string'"))),
    }
}

fn id_field(field: &str, v: &Value) -> Result<Option<String>, Error> {
    match v {
        Value::Null => Ok(None),
        Value::String(id) if !id.is_empty() && id.len() <= 64 => Ok(Some(id.clone())),
        other => Err(invalid(field, format!("{other} is not a valid id"))),
    }
}

fn bool_field(field: &str, v: &Value) -> Result<bool, Error> {
    v.as_bool().ok_or_else(|| invalid(field, format!("{v} is not of type 'boolean'")))
}

fn password_field(v: &Value) -> Result<Option<String>, Error> {
    match v {
        Value::Null => Ok(None),
        Value::String(p) if p.len() <= 4096 => Ok(Some(p.clone())),
        other => Err(invalid("password", format!("{} is not of type 'string'", kind_of(other)))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Merges `update` into `options`: known names only, booleans (or rule lists), `null` removes.
fn merge_options(options: &mut Map<String, Value>, update: &Value) -> Result<(), Error> {
    let Value::Object(update) = update else {
        return Err(invalid("options", format!("{update} is not of type 'object'")));
    };
    for (name, value) in update {
        let Some((_, boolean)) = OPTIONS.iter().find(|(n, _)| n == name) else {
            return Err(invalid("options", format!("Additional properties are not allowed ('{name}' was unexpected)")));
        };
        match value {
            Value::Null => {
                options.remove(name);
            }
            Value::Bool(_) if *boolean => {
                options.insert(name.clone(), value.clone());
            }
            Value::Array(rules)
                if !boolean
                    && rules.iter().all(|r| r.as_array().is_some_and(|r| r.iter().all(Value::is_string))) =>
            {
                options.insert(name.clone(), value.clone());
            }
            other => return Err(invalid(&format!("options.{name}"), format!("{other} is not valid"))),
        }
    }
    Ok(())
}

/// Everything else in a user body is an extra attribute (`description`, `email`, …).
fn merge_extra(extra: &mut Map<String, Value>, body: &Map<String, Value>) -> Result<(), Error> {
    if let Some(d) = body.get("description")
        && !(d.is_string() || d.is_null())
    {
        return Err(invalid("description", format!("{d} is not of type 'string'")));
    }
    for (k, v) in body {
        if !RESERVED.contains(&k.as_str()) && k != "original_password" {
            extra.insert(k.clone(), v.clone());
        }
    }
    Ok(())
}

/// The policy target of a request on one user.
fn user_target(user_id: &str, u: Option<&UserDetail>) -> Value {
    match u {
        Some(u) => json!({"user_id": user_id, "user": {"id": u.user.id, "domain_id": u.user.domain_id}}),
        None => json!({"user_id": user_id}),
    }
}

/// Loads a user, authorizes `rule` on it (policy first, as upstream: 403 before 404), then 404s if missing.
async fn authorized_user(s: &AppState, headers: &HeaderMap, rule: &str, id: &str) -> Result<UserDetail, ApiError> {
    let info = caller(s, headers).await?;
    let user = s.identity.store().user_detail_get(id).await?;
    enforce(s, &info, rule, &user_target(id, user.as_ref()))?;
    Ok(user.ok_or_else(|| Error::not_found("user", id))?)
}

fn conflict(name: &str, domain_id: &str) -> Error {
    Error::Conflict { kind: "user", detail: format!("Duplicate entry found with name {name} at domain ID {domain_id}") }
}

async fn create(State(s): State<AppState>, headers: HeaderMap, Json(body): Json<Value>) -> Result<Response, ApiError> {
    let info = caller(&s, &headers).await?;
    let body = entity(body, "user")?;
    let name = name_field("name", body.get("name").ok_or_else(|| invalid("user", "'name' is a required property"))?)?;
    let default_domain = info.domain.as_ref().map_or(DEFAULT_DOMAIN_ID.to_string(), |d| d.id.clone());
    let domain_id = match body.get("domain_id") {
        Some(v) => id_field("domain_id", v)?.unwrap_or(default_domain),
        None => default_domain,
    };
    enforce(&s, &info, "identity:create_user", &json!({"user": {"domain_id": domain_id}}))?;

    let enabled = body.get("enabled").map(|v| bool_field("enabled", v)).transpose()?.unwrap_or(true);
    let default_project_id = body.get("default_project_id").map(|v| id_field("default_project_id", v)).transpose()?.flatten();
    let password = body.get("password").map(password_field).transpose()?.flatten();
    let mut options = Map::new();
    if let Some(o) = body.get("options") {
        merge_options(&mut options, o)?;
    }
    let mut extra = Map::new();
    merge_extra(&mut extra, &body)?;

    let store = s.identity.store();
    if store.domain_get(&domain_id).await?.is_none() {
        return Err(Error::not_found("domain", &domain_id).into());
    }
    check_default_project(&s, default_project_id.as_deref()).await?;
    if store.user_get_by_name(&domain_id, &name).await?.is_some() {
        return Err(conflict(&name, &domain_id).into());
    }
    let (password_hash, password_created_at, password_expires_at) = match &password {
        Some(p) => {
            s.identity.validate_password_rules(p)?;
            let expires = s.identity.password_expiry(&options, true);
            (Some(s.identity.hash_password(p).await?), Some(Utc::now().timestamp()), expires)
        }
        None => (None, None, None),
    };
    let user = UserDetail {
        user: UserRow { id: new_id(), name: name.clone(), domain_id: domain_id.clone(), enabled, password_hash, default_project_id },
        extra,
        options,
        password_created_at,
        password_expires_at,
        password_self_service: false,
        failed_auth_count: 0,
        failed_auth_at: None,
    };
    store.user_detail_create(&user).await.map_err(|e| match e {
        Error::Db(d) if d.is_unique_violation() => conflict(&name, &domain_id),
        other => other,
    })?;
    s.identity.changed();
    Ok((StatusCode::CREATED, Json(json!({"user": user_json(&s, &user)}))).into_response())
}

/// Upstream refuses a domain as default project; a missing project is accepted (backward compatibility).
async fn check_default_project(s: &AppState, id: Option<&str>) -> Result<(), Error> {
    if let Some(id) = id
        && s.identity.store().project_get(id).await?.is_some_and(|p| p.is_domain)
    {
        return Err(Error::BadRequest(format!("User's default project ID cannot be a domain ID: {id}")));
    }
    Ok(())
}

/// `password_expires_at` filter: `[op:]timestamp` with op one of lt, lte, gt, gte, eq, neq (default eq).
fn expiry_filter(q: &str) -> Result<impl Fn(Option<i64>) -> bool, Error> {
    let (op, ts) = match q.split_once(':') {
        Some((op @ ("lt" | "lte" | "gt" | "gte" | "eq" | "neq"), rest)) => (op.to_string(), rest),
        _ => ("eq".to_string(), q),
    };
    let t = DateTime::parse_from_rfc3339(ts)
        .or_else(|_| DateTime::parse_from_rfc3339(&format!("{ts}Z")))
        .map_err(|_| Error::BadRequest(format!("Invalid input for field 'password_expires_at': {q}")))?
        .timestamp();
    Ok(move |v: Option<i64>| match (op.as_str(), v) {
        (_, None) => false,
        ("lt", Some(v)) => v < t,
        ("lte", Some(v)) => v <= t,
        ("gt", Some(v)) => v > t,
        ("gte", Some(v)) => v >= t,
        ("neq", Some(v)) => v != t,
        (_, Some(v)) => v == t,
    })
}

async fn list(State(s): State<AppState>, headers: HeaderMap, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    let info = caller(&s, &headers).await?;
    let mut filter = UserFilter {
        domain_id: q.get("domain_id").map(str::to_string),
        name: q.get("name").map(str::to_string),
        enabled: q.get_bool("enabled")?,
    };
    enforce(&s, &info, "identity:list_users", &json!({"domain_id": filter.domain_id}))?;
    // Domain-scoped callers see their domain's users only, as upstream.
    if filter.domain_id.is_none() && let Some(d) = &info.domain {
        filter.domain_id = Some(d.id.clone());
    }
    let mut users = s.identity.store().user_detail_list(&filter).await?;
    if let Some(expiry) = q.get("password_expires_at") {
        let keep = expiry_filter(expiry)?;
        users.retain(|u| keep(u.password_expires_at));
    }
    // Federated attributes: no user here comes from an identity provider.
    if ["idp_id", "protocol_id", "unique_id"].iter().any(|k| q.contains(k)) {
        users.clear();
    }
    let items = users.iter().map(|u| user_json(&s, u)).collect();
    Ok(s.collection("users", items, "users"))
}

async fn show(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let user = authorized_user(&s, &headers, "identity:get_user", &id).await?;
    Ok(Json(json!({"user": user_json(&s, &user)})))
}

async fn update(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    let mut user = authorized_user(&s, &headers, "identity:update_user", &id).await?;
    let body = entity(body, "user")?;
    if let Some(v) = body.get("id")
        && v.as_str() != Some(id.as_str())
    {
        return Err(Error::BadRequest("Cannot change user ID".into()).into());
    }
    if let Some(v) = body.get("domain_id")
        && v.as_str() != Some(user.user.domain_id.as_str())
    {
        return Err(Error::BadRequest("Cannot change Domain ID".into()).into());
    }
    let was_enabled = user.user.enabled;
    if let Some(v) = body.get("name") {
        user.user.name = name_field("name", v)?;
    }
    if let Some(v) = body.get("enabled") {
        user.user.enabled = bool_field("enabled", v)?;
    }
    if let Some(v) = body.get("default_project_id") {
        user.user.default_project_id = id_field("default_project_id", v)?;
        check_default_project(&s, user.user.default_project_id.as_deref()).await?;
    }
    let password = body.get("password").map(password_field).transpose()?.flatten();
    if let Some(o) = body.get("options") {
        merge_options(&mut user.options, o)?;
    }
    merge_extra(&mut user.extra, &body)?;

    let store = s.identity.store();
    if let Some(other) = store.user_get_by_name(&user.user.domain_id, &user.user.name).await?
        && other.id != id
    {
        return Err(conflict(&user.user.name, &user.user.domain_id).into());
    }
    if let Some(p) = &password {
        s.identity.validate_password_rules(p)?;
    }
    store.user_detail_update(&user).await.map_err(|e| match e {
        Error::Db(d) if d.is_unique_violation() => conflict(&user.user.name, &user.user.domain_id),
        other => other,
    })?;
    if let Some(p) = &password {
        s.identity.set_password_by_admin(&user, p).await?;
    }
    if password.is_some() || (was_enabled && !user.user.enabled) {
        s.identity.revoke_user(&id).await?;
    }
    s.identity.changed();
    let user = store.user_detail_get(&id).await?.ok_or_else(|| Error::not_found("user", &id))?;
    Ok(Json(json!({"user": user_json(&s, &user)})))
}

async fn remove(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    authorized_user(&s, &headers, "identity:delete_user", &id).await?;
    if !s.identity.store().user_delete(&id).await? {
        return Err(Error::not_found("user", &id).into());
    }
    s.identity.revoke_user(&id).await?;
    s.identity.changed();
    Ok(StatusCode::NO_CONTENT)
}

/// Self-service password change. As upstream, the original password is what authenticates the request (so users
/// whose password has expired can still change it); a token, when sent, must pass `identity:change_password`.
async fn change_password(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<StatusCode, ApiError> {
    if super::header(&headers, "x-auth-token").is_some() {
        authorize(&s, &headers, "identity:change_password", &json!({"user_id": id})).await?;
    }
    let body = entity(body, "user")?;
    let field = |name: &str| match body.get(name) {
        Some(Value::String(p)) => Ok(p.clone()),
        Some(other) => Err(invalid(name, format!("{} is not of type 'string'", kind_of(other)))),
        None => Err(invalid("user", format!("'{name}' is a required property"))),
    };
    let (new, original) = (field("password")?, field("original_password")?);
    s.identity.change_password(&id, &original, &new).await?;
    s.identity.changed();
    Ok(StatusCode::NO_CONTENT)
}

async fn list_projects(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    authorized_user(&s, &headers, "identity:list_projects_for_user", &id).await?;
    let store = s.identity.store();
    let enabled = q.get_bool("enabled")?;
    let mut items = Vec::new();
    for pid in store.user_project_ids(&id).await? {
        let Some(p) = store.project_get(&pid).await? else { continue };
        let wanted = enabled.is_none_or(|e| p.enabled == e)
            && q.get("name").is_none_or(|n| n == p.name)
            && q.get("domain_id").is_none_or(|d| d == p.domain_id);
        if wanted {
            items.push(project_json(&s, &p));
        }
    }
    Ok(s.collection("projects", items, &format!("users/{id}/projects")))
}

async fn list_groups(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorized_user(&s, &headers, "identity:list_groups_for_user", &id).await?;
    let groups = s.identity.store().group_list_for_user(&id).await?;
    let items = groups
        .iter()
        .map(|g| {
            let mut v = group_json(&s, g);
            if let Some(m) = v.as_object_mut() {
                m.insert("membership_expires_at".into(), Value::Null);
            }
            v
        })
        .collect();
    Ok(s.collection("groups", items, &format!("users/{id}/groups")))
}
