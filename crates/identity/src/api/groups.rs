//! `/v3/groups`: group CRUD and membership. Removing a member, or deleting a group, revokes the tokens of the users
//! who lose it (their roles through the group end), as upstream.

use api_common::{ApiError, Json, QueryPairs};
use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, put},
};
use serde_json::{Value, json};

use super::{AppState, caller, enforce, users::user_json};
use crate::{
    error::Error,
    service::{DEFAULT_DOMAIN_ID, new_id},
    store::{GroupRow, UserDetail},
};

/// Reads of groups: admins, system readers and readers of the group's domain.
const READ_GROUP: &str = "rule:admin_required or (role:reader and system_scope:all) or \
     (role:reader and domain_id:%(target.group.domain_id)s)";

/// Default policy rules (upstream names, secure-RBAC defaults; admin in any scope may do everything).
pub(super) const POLICIES: &[(&str, &str)] = &[
    ("identity:get_group", READ_GROUP),
    (
        "identity:list_groups",
        "rule:admin_required or (role:reader and system_scope:all) or (role:reader and domain_id:%(target.domain_id)s)",
    ),
    ("identity:create_group", "rule:admin_required"),
    ("identity:update_group", "rule:admin_required"),
    ("identity:delete_group", "rule:admin_required"),
    ("identity:list_users_in_group", READ_GROUP),
    ("identity:check_user_in_group", READ_GROUP),
    ("identity:add_user_to_group", "rule:admin_required"),
    ("identity:remove_user_from_group", "rule:admin_required"),
];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/groups", get(list).post(create))
        .route("/v3/groups/{group_id}", get(show).patch(update).delete(remove))
        .route("/v3/groups/{group_id}/users", get(list_users))
        .route("/v3/groups/{group_id}/users/{user_id}", put(add_user).head(check_user).delete(remove_user))
}

pub(super) fn group_json(s: &AppState, g: &GroupRow) -> Value {
    json!({
        "id": g.id,
        "name": g.name,
        "domain_id": g.domain_id,
        "description": g.description.clone().unwrap_or_default(),
        "links": {"self": s.url(&format!("groups/{}", g.id))},
    })
}

fn invalid(field: &str, why: impl std::fmt::Display) -> Error {
    Error::BadRequest(format!("Invalid input for field '{field}': {why}"))
}

fn group_body(body: Value) -> Result<serde_json::Map<String, Value>, Error> {
    match body {
        Value::Object(mut m) => match m.remove("group") {
            Some(Value::Object(g)) => Ok(g),
            _ => Err(invalid("group", "'group' is a required property")),
        },
        _ => Err(Error::BadRequest("Expecting to find a JSON object in the request body.".into())),
    }
}

fn name_field(v: &Value) -> Result<String, Error> {
    match v.as_str() {
        Some(n) if n.trim().is_empty() => Err(invalid("name", format!("'{n}' is too short"))),
        Some(n) if n.chars().count() > 255 => Err(invalid("name", "is too long")),
        Some(n) => Ok(n.to_string()),
        None => Err(invalid("name", format!("{v} is not of type 'string'"))),
    }
}

fn description_field(v: &Value) -> Result<Option<String>, Error> {
    match v {
        Value::Null => Ok(None),
        Value::String(d) => Ok(Some(d.clone())),
        other => Err(invalid("description", format!("{other} is not of type 'string'"))),
    }
}

fn conflict(name: &str, domain_id: &str) -> Error {
    Error::Conflict { kind: "group", detail: format!("Duplicate entry found with name {name} at domain ID {domain_id}") }
}

fn group_target(id: &str, g: Option<&GroupRow>) -> Value {
    match g {
        Some(g) => json!({"group_id": id, "group": {"id": g.id, "domain_id": g.domain_id}}),
        None => json!({"group_id": id}),
    }
}

/// Loads a group, authorizes `rule` on it (403 before 404, as upstream), then 404s if missing.
async fn authorized_group(s: &AppState, headers: &HeaderMap, rule: &str, id: &str) -> Result<GroupRow, ApiError> {
    let info = caller(s, headers).await?;
    let group = s.identity.store().group_get(id).await?;
    enforce(s, &info, rule, &group_target(id, group.as_ref()))?;
    Ok(group.ok_or_else(|| Error::not_found("group", id))?)
}

/// Loads a group and a user and authorizes a membership `rule` on both.
async fn authorized_membership(
    s: &AppState,
    headers: &HeaderMap,
    rule: &str,
    group_id: &str,
    user_id: &str,
) -> Result<(GroupRow, UserDetail), ApiError> {
    let info = caller(s, headers).await?;
    let store = s.identity.store();
    let group = store.group_get(group_id).await?;
    let user = store.user_detail_get(user_id).await?;
    let mut target = group_target(group_id, group.as_ref());
    if let (Some(t), Some(u)) = (target.as_object_mut(), &user) {
        t.insert("user_id".into(), json!(user_id));
        t.insert("user".into(), json!({"id": u.user.id, "domain_id": u.user.domain_id}));
    }
    enforce(s, &info, rule, &target)?;
    let group = group.ok_or_else(|| Error::not_found("group", group_id))?;
    let user = user.ok_or_else(|| Error::not_found("user", user_id))?;
    Ok((group, user))
}

async fn create(State(s): State<AppState>, headers: HeaderMap, Json(body): Json<Value>) -> Result<Response, ApiError> {
    let info = caller(&s, &headers).await?;
    let body = group_body(body)?;
    let name = name_field(body.get("name").ok_or_else(|| invalid("group", "'name' is a required property"))?)?;
    let domain_id = match body.get("domain_id") {
        Some(Value::String(d)) if !d.is_empty() => d.clone(),
        Some(Value::Null) | None => info.domain.as_ref().map_or(DEFAULT_DOMAIN_ID.to_string(), |d| d.id.clone()),
        Some(other) => return Err(invalid("domain_id", format!("{other} is not a valid id")).into()),
    };
    enforce(&s, &info, "identity:create_group", &json!({"group": {"domain_id": domain_id}}))?;
    let description = body.get("description").map(description_field).transpose()?.flatten();
    let store = s.identity.store();
    if store.domain_get(&domain_id).await?.is_none() {
        return Err(Error::not_found("domain", &domain_id).into());
    }
    if store.group_get_by_name(&domain_id, &name).await?.is_some() {
        return Err(conflict(&name, &domain_id).into());
    }
    let group = GroupRow { id: new_id(), name: name.clone(), domain_id: domain_id.clone(), description };
    store.group_create(&group).await.map_err(|e| match e {
        Error::Db(d) if d.is_unique_violation() => conflict(&name, &domain_id),
        other => other,
    })?;
    s.identity.changed();
    Ok((StatusCode::CREATED, Json(json!({"group": group_json(&s, &group)}))).into_response())
}

async fn list(State(s): State<AppState>, headers: HeaderMap, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    let info = caller(&s, &headers).await?;
    let mut domain_id = q.get("domain_id").map(str::to_string);
    enforce(&s, &info, "identity:list_groups", &json!({"domain_id": domain_id}))?;
    if domain_id.is_none() && let Some(d) = &info.domain {
        domain_id = Some(d.id.clone());
    }
    let groups = s.identity.store().group_list(domain_id.as_deref(), q.get("name")).await?;
    let items = groups.iter().map(|g| group_json(&s, g)).collect();
    Ok(s.collection("groups", items, "groups"))
}

async fn show(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let group = authorized_group(&s, &headers, "identity:get_group", &id).await?;
    Ok(Json(json!({"group": group_json(&s, &group)})))
}

async fn update(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    let mut group = authorized_group(&s, &headers, "identity:update_group", &id).await?;
    let body = group_body(body)?;
    if let Some(v) = body.get("domain_id")
        && v.as_str() != Some(group.domain_id.as_str())
    {
        return Err(Error::BadRequest("Cannot change Domain ID".into()).into());
    }
    if let Some(v) = body.get("id")
        && v.as_str() != Some(id.as_str())
    {
        return Err(Error::BadRequest("Cannot change group ID".into()).into());
    }
    if let Some(v) = body.get("name") {
        group.name = name_field(v)?;
    }
    if let Some(v) = body.get("description") {
        group.description = description_field(v)?;
    }
    let store = s.identity.store();
    if let Some(other) = store.group_get_by_name(&group.domain_id, &group.name).await?
        && other.id != id
    {
        return Err(conflict(&group.name, &group.domain_id).into());
    }
    store.group_update(&group).await.map_err(|e| match e {
        Error::Db(d) if d.is_unique_violation() => conflict(&group.name, &group.domain_id),
        other => other,
    })?;
    s.identity.changed();
    Ok(Json(json!({"group": group_json(&s, &group)})))
}

async fn remove(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    authorized_group(&s, &headers, "identity:delete_group", &id).await?;
    let store = s.identity.store();
    let members = store.user_list_in_group(&id).await?;
    if !store.group_delete(&id).await? {
        return Err(Error::not_found("group", &id).into());
    }
    for m in &members {
        s.identity.revoke_user(&m.user.id).await?;
    }
    s.identity.changed();
    Ok(StatusCode::NO_CONTENT)
}

async fn list_users(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorized_group(&s, &headers, "identity:list_users_in_group", &id).await?;
    let users = s.identity.store().user_list_in_group(&id).await?;
    let items = users.iter().map(|u| user_json(&s, u)).collect();
    Ok(s.collection("users", items, &format!("groups/{id}/users")))
}

async fn add_user(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((group_id, user_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    authorized_membership(&s, &headers, "identity:add_user_to_group", &group_id, &user_id).await?;
    s.identity.store().group_add_user(&group_id, &user_id).await?;
    s.identity.changed();
    Ok(StatusCode::NO_CONTENT)
}

fn not_member(group_id: &str, user_id: &str) -> Error {
    Error::NotFound { kind: "membership", id: format!("user {user_id} in group {group_id}") }
}

async fn check_user(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((group_id, user_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    authorized_membership(&s, &headers, "identity:check_user_in_group", &group_id, &user_id).await?;
    if !s.identity.store().group_has_user(&group_id, &user_id).await? {
        return Err(not_member(&group_id, &user_id).into());
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_user(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((group_id, user_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    authorized_membership(&s, &headers, "identity:remove_user_from_group", &group_id, &user_id).await?;
    if !s.identity.store().group_remove_user(&group_id, &user_id).await? {
        return Err(not_member(&group_id, &user_id).into());
    }
    s.identity.revoke_user(&user_id).await?;
    s.identity.changed();
    Ok(StatusCode::NO_CONTENT)
}
