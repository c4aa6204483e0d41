//! Unified limits: `/v3/registered_limits`, `/v3/limits` and `/v3/limits/model`, as Keystone's v3 API with the
//! `flat` enforcement model.
//!
//! Both are created as lists (`{"registered_limits": [...]}`), all or none. A registered limit is unique per
//! service, region and resource (409 otherwise); a project limit needs a registered limit for the same triple (403,
//! upstream's "no corresponding registered limit"), and is unique per project (or domain) and triple. A registered
//! limit that project limits refer to cannot be deleted or re-pointed (403). Unknown fields are a 400: upstream's
//! schemas forbid additional properties here.

use api_common::{ApiError, Json, QueryPairs};
use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Map, Value, json};

use super::{
    AppState, authorize, caller,
    catalog::{expecting, int_field, invalid, required, string_field},
    enforce,
};
use crate::{
    error::Error,
    service::{TokenInfo, new_id},
    store::{LimitRow, RegisteredLimitRow},
    token::Scope,
};

/// Default policy rules (upstream names, secure-RBAC defaults; admin in any scope writes).
pub(super) const POLICIES: &[(&str, &str)] = &[
    ("identity:get_registered_limit", ""),
    ("identity:list_registered_limits", ""),
    ("identity:create_registered_limits", "rule:admin_required"),
    ("identity:update_registered_limit", "rule:admin_required"),
    ("identity:delete_registered_limit", "rule:admin_required"),
    ("identity:get_limit_model", ""),
    (
        "identity:get_limit",
        "rule:admin_required or (role:reader and system_scope:all) or \
         (role:reader and project_id:%(target.limit.project_id)s) or \
         (role:reader and domain_id:%(target.limit.domain_id)s)",
    ),
    ("identity:list_limits", ""),
    ("identity:create_limits", "rule:admin_required"),
    ("identity:update_limit", "rule:admin_required"),
    ("identity:delete_limit", "rule:admin_required"),
];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/registered_limits", get(registered_list).post(registered_create))
        .route(
            "/v3/registered_limits/{registered_limit_id}",
            get(registered_get).patch(registered_update).delete(registered_delete),
        )
        .route("/v3/limits/model", get(limit_model))
        .route("/v3/limits", get(limit_list).post(limit_create))
        .route("/v3/limits/{limit_id}", get(limit_get).patch(limit_update).delete(limit_delete))
}

/// Upstream's bounds for limit values (-1: unlimited).
const LIMIT_MIN: i64 = -1;
const LIMIT_MAX: i64 = 2_147_483_647;

const REGISTERED_FIELDS: &[&str] = &["service_id", "region_id", "resource_name", "default_limit", "description"];
const LIMIT_FIELDS: &[&str] =
    &["project_id", "domain_id", "service_id", "region_id", "resource_name", "resource_limit", "description"];

fn no_additional(m: &Map<String, Value>, allowed: &[&str]) -> Result<(), Error> {
    let extra: Vec<String> = m.keys().filter(|k| !allowed.contains(&k.as_str())).map(|k| format!("'{k}'")).collect();
    if extra.is_empty() {
        return Ok(());
    }
    let verb = if extra.len() == 1 { "was" } else { "were" };
    Err(Error::BadRequest(format!("Additional properties are not allowed ({} {verb} unexpected)", extra.join(", "))))
}

/// The list under `key`, every item an object; 400 otherwise.
fn items(body: Value, key: &str) -> Result<Vec<Map<String, Value>>, Error> {
    let Value::Object(mut m) = body else { return Err(Error::BadRequest("the body must be an object".into())) };
    let Some(list) = m.remove(key) else { return Err(Error::BadRequest(format!("'{key}' is a required property"))) };
    let Value::Array(list) = list else { return Err(invalid(key, "is not of type 'array'")) };
    if list.is_empty() {
        return Err(invalid(key, "[] is too short"));
    }
    list.into_iter()
        .map(|v| match v {
            Value::Object(o) => Ok(o),
            other => Err(invalid(key, format!("{other} is not of type 'object'"))),
        })
        .collect()
}

fn created(v: Value) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

/// Service and region of a limit must exist (400 as upstream's `ValidationError`).
async fn check_refs(s: &AppState, service_id: &str, region_id: Option<&str>, target: &str) -> Result<(), Error> {
    let store = s.identity.store();
    if store.service_get(service_id).await?.is_none() {
        return Err(expecting("service_id", target));
    }
    if let Some(r) = region_id
        && store.region_get(r).await?.is_none()
    {
        return Err(expecting("region_id", target));
    }
    Ok(())
}

// ---- registered limits

fn registered_json(s: &AppState, r: &RegisteredLimitRow) -> Value {
    json!({
        "id": r.id,
        "service_id": r.service_id,
        "region_id": r.region_id,
        "resource_name": r.resource_name,
        "default_limit": r.default_limit,
        "description": r.description,
        "links": {"self": s.url(&format!("registered_limits/{}", r.id))},
    })
}

fn same_triple(a: (&str, Option<&str>, &str), b: (&str, Option<&str>, &str)) -> bool {
    a == b
}

fn duplicate(kind: &'static str, service_id: &str, region_id: Option<&str>, resource: &str) -> Error {
    Error::Conflict {
        kind,
        detail: format!(
            "Duplicate entry found with resource_name: {resource}, service_id: {service_id}, region_id: {}",
            region_id.unwrap_or("None")
        ),
    }
}

async fn registered_list(
    State(s): State<AppState>,
    headers: HeaderMap,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:list_registered_limits", &json!({})).await?;
    let all = s.identity.store().registered_limit_list().await?;
    let (svc, region, res) = (q.get("service_id"), q.get("region_id"), q.get("resource_name"));
    let items = all
        .iter()
        .filter(|r| {
            svc.is_none_or(|x| r.service_id == x)
                && region.is_none_or(|x| r.region_id.as_deref() == Some(x))
                && res.is_none_or(|x| r.resource_name == x)
        })
        .map(|r| registered_json(&s, r))
        .collect();
    Ok(s.collection("registered_limits", items, "registered_limits"))
}

async fn registered_get(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:get_registered_limit", &json!({"registered_limit_id": id})).await?;
    let r =
        s.identity.store().registered_limit_get(&id).await?.ok_or_else(|| Error::not_found("registered limit", &id))?;
    Ok(Json(json!({"registered_limit": registered_json(&s, &r)})))
}

fn registered_from(m: &Map<String, Value>) -> Result<RegisteredLimitRow, Error> {
    no_additional(m, REGISTERED_FIELDS)?;
    for f in ["service_id", "resource_name", "default_limit"] {
        required(m, f)?;
    }
    Ok(RegisteredLimitRow {
        id: new_id(),
        service_id: string_field(m, "service_id", false, false, 64)?.flatten().unwrap_or_default(),
        region_id: string_field(m, "region_id", true, false, 255)?.flatten(),
        resource_name: string_field(m, "resource_name", false, false, 255)?.flatten().unwrap_or_default(),
        default_limit: int_field(m, "default_limit", LIMIT_MIN, LIMIT_MAX)?.unwrap_or_default(),
        description: string_field(m, "description", true, true, 255)?.flatten(),
    })
}

async fn registered_create(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers, "identity:create_registered_limits", &json!({})).await?;
    let rows = items(body, "registered_limits")?.iter().map(registered_from).collect::<Result<Vec<_>, _>>()?;
    let existing = s.identity.store().registered_limit_list().await?;
    for (i, r) in rows.iter().enumerate() {
        check_refs(&s, &r.service_id, r.region_id.as_deref(), "registered_limit").await?;
        let triple = (r.service_id.as_str(), r.region_id.as_deref(), r.resource_name.as_str());
        let clash = existing
            .iter()
            .chain(&rows[..i])
            .any(|x| same_triple(triple, (x.service_id.as_str(), x.region_id.as_deref(), x.resource_name.as_str())));
        if clash {
            return Err(duplicate("registered_limit", triple.0, triple.1, triple.2).into());
        }
    }
    s.identity.store().registered_limit_create_all(&rows).await?;
    let out: Vec<Value> = rows.iter().map(|r| registered_json(&s, r)).collect();
    Ok(created(json!({"registered_limits": out})))
}

/// Project limits that refer to this registered limit (same service, region and resource).
async fn referring_limits(s: &AppState, r: &RegisteredLimitRow) -> Result<bool, Error> {
    let limits = s.identity.store().limit_list().await?;
    Ok(limits
        .iter()
        .any(|l| l.service_id == r.service_id && l.region_id == r.region_id && l.resource_name == r.resource_name))
}

fn registered_in_use(id: &str) -> Error {
    Error::Forbidden(format!(
        "Unable to update or delete registered limit {id} because there are project limits associated with it."
    ))
}

async fn registered_update(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:update_registered_limit", &json!({"registered_limit_id": id})).await?;
    let m = super::catalog::entity(body, "registered_limit")?;
    no_additional(&m, REGISTERED_FIELDS)?;
    if m.is_empty() {
        return Err(Error::BadRequest("{} does not have enough properties".into()).into());
    }
    let store = s.identity.store();
    let old = store.registered_limit_get(&id).await?.ok_or_else(|| Error::not_found("registered limit", &id))?;
    let mut r = old.clone();
    if let Some(Some(v)) = string_field(&m, "service_id", false, false, 64)? {
        r.service_id = v;
    }
    if let Some(v) = string_field(&m, "region_id", true, false, 255)? {
        r.region_id = v;
    }
    if let Some(Some(v)) = string_field(&m, "resource_name", false, false, 255)? {
        r.resource_name = v;
    }
    if let Some(v) = int_field(&m, "default_limit", LIMIT_MIN, LIMIT_MAX)? {
        r.default_limit = v;
    }
    if let Some(v) = string_field(&m, "description", true, true, 255)? {
        r.description = v;
    }
    let moved =
        (r.service_id != old.service_id) || (r.region_id != old.region_id) || (r.resource_name != old.resource_name);
    if moved {
        check_refs(&s, &r.service_id, r.region_id.as_deref(), "registered_limit").await?;
        if referring_limits(&s, &old).await? {
            return Err(registered_in_use(&id).into());
        }
        let existing = store.registered_limit_list().await?;
        if existing.iter().any(|x| {
            x.id != r.id
                && x.service_id == r.service_id
                && x.region_id == r.region_id
                && x.resource_name == r.resource_name
        }) {
            return Err(duplicate("registered_limit", &r.service_id, r.region_id.as_deref(), &r.resource_name).into());
        }
    }
    store.registered_limit_update(&r).await?;
    Ok(Json(json!({"registered_limit": registered_json(&s, &r)})))
}

async fn registered_delete(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&s, &headers, "identity:delete_registered_limit", &json!({"registered_limit_id": id})).await?;
    let store = s.identity.store();
    let r = store.registered_limit_get(&id).await?.ok_or_else(|| Error::not_found("registered limit", &id))?;
    if referring_limits(&s, &r).await? {
        return Err(registered_in_use(&id).into());
    }
    store.registered_limit_delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- limits

async fn limit_model(State(s): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:get_limit_model", &json!({})).await?;
    Ok(Json(json!({"model": {
        "name": "flat",
        "description": "Limit enforcement and validation does not take project hierarchy into consideration.",
    }})))
}

fn limit_json(s: &AppState, l: &LimitRow) -> Value {
    json!({
        "id": l.id,
        "project_id": l.project_id,
        "domain_id": l.domain_id,
        "service_id": l.service_id,
        "region_id": l.region_id,
        "resource_name": l.resource_name,
        "resource_limit": l.resource_limit,
        "description": l.description,
        "links": {"self": s.url(&format!("limits/{}", l.id))},
    })
}

fn limit_target(l: &LimitRow) -> Value {
    json!({"limit_id": l.id, "limit": {"project_id": l.project_id, "domain_id": l.domain_id}})
}

/// Whether the caller sees every limit: admins and system-scoped readers do; others see their project's or
/// domain's.
fn sees(s: &AppState, info: &TokenInfo, l: &LimitRow) -> bool {
    if enforce(s, info, "admin_required", &json!({})).is_ok() {
        return true;
    }
    match &info.payload.scope {
        Scope::System => true,
        Scope::Domain(d) => l.domain_id.as_deref() == Some(d.as_str()),
        Scope::Project(p)
        | Scope::ApplicationCredential { project_id: p, .. }
        | Scope::Trust { project_id: p, .. } => l.project_id.as_deref() == Some(p.as_str()),
        Scope::Unscoped => false,
    }
}

async fn limit_list(State(s): State<AppState>, headers: HeaderMap, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    let info = caller(&s, &headers).await?;
    enforce(&s, &info, "identity:list_limits", &json!({}))?;
    let all = s.identity.store().limit_list().await?;
    let f = |k: &str| q.get(k);
    let items = all
        .iter()
        .filter(|l| {
            f("service_id").is_none_or(|x| l.service_id == x)
                && f("region_id").is_none_or(|x| l.region_id.as_deref() == Some(x))
                && f("resource_name").is_none_or(|x| l.resource_name == x)
                && f("project_id").is_none_or(|x| l.project_id.as_deref() == Some(x))
                && f("domain_id").is_none_or(|x| l.domain_id.as_deref() == Some(x))
                && sees(&s, &info, l)
        })
        .map(|l| limit_json(&s, l))
        .collect();
    Ok(s.collection("limits", items, "limits"))
}

async fn limit_get(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let l = s.identity.store().limit_get(&id).await?;
    let target = l.as_ref().map(limit_target).unwrap_or_else(|| json!({"limit_id": id}));
    authorize(&s, &headers, "identity:get_limit", &target).await?;
    let l = l.ok_or_else(|| Error::not_found("limit", &id))?;
    Ok(Json(json!({"limit": limit_json(&s, &l)})))
}

fn limit_from(m: &Map<String, Value>) -> Result<LimitRow, Error> {
    no_additional(m, LIMIT_FIELDS)?;
    for f in ["service_id", "resource_name", "resource_limit"] {
        required(m, f)?;
    }
    let project_id = string_field(m, "project_id", true, false, 64)?.flatten();
    let domain_id = string_field(m, "domain_id", true, false, 64)?.flatten();
    if project_id.is_some() == domain_id.is_some() {
        return Err(Error::BadRequest("A limit needs exactly one of 'project_id' and 'domain_id'".into()));
    }
    Ok(LimitRow {
        id: new_id(),
        project_id,
        domain_id,
        service_id: string_field(m, "service_id", false, false, 64)?.flatten().unwrap_or_default(),
        region_id: string_field(m, "region_id", true, false, 255)?.flatten(),
        resource_name: string_field(m, "resource_name", false, false, 255)?.flatten().unwrap_or_default(),
        resource_limit: int_field(m, "resource_limit", LIMIT_MIN, LIMIT_MAX)?.unwrap_or_default(),
        description: string_field(m, "description", true, true, 255)?.flatten(),
    })
}

async fn limit_create(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers, "identity:create_limits", &json!({})).await?;
    let rows = items(body, "limits")?.iter().map(limit_from).collect::<Result<Vec<_>, _>>()?;
    let store = s.identity.store();
    let registered = store.registered_limit_list().await?;
    let existing = store.limit_list().await?;
    for (i, l) in rows.iter().enumerate() {
        check_refs(&s, &l.service_id, l.region_id.as_deref(), "limit").await?;
        if let Some(p) = &l.project_id
            && store.project_get(p).await?.is_none()
        {
            return Err(expecting("project_id", "limit").into());
        }
        if let Some(d) = &l.domain_id
            && store.domain_get(d).await?.is_none()
        {
            return Err(expecting("domain_id", "limit").into());
        }
        if !registered
            .iter()
            .any(|r| r.service_id == l.service_id && r.region_id == l.region_id && r.resource_name == l.resource_name)
        {
            return Err(Error::Forbidden(
                "Unable to create a limit that has no corresponding registered limit.".into(),
            )
            .into());
        }
        let clash = existing.iter().chain(&rows[..i]).any(|x| {
            x.project_id == l.project_id
                && x.domain_id == l.domain_id
                && x.service_id == l.service_id
                && x.region_id == l.region_id
                && x.resource_name == l.resource_name
        });
        if clash {
            return Err(duplicate("project_limit", &l.service_id, l.region_id.as_deref(), &l.resource_name).into());
        }
    }
    store.limit_create_all(&rows).await?;
    let out: Vec<Value> = rows.iter().map(|l| limit_json(&s, l)).collect();
    Ok(created(json!({"limits": out})))
}

async fn limit_update(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:update_limit", &json!({"limit_id": id})).await?;
    let m = super::catalog::entity(body, "limit")?;
    no_additional(&m, &["resource_limit", "description"])?;
    if m.is_empty() {
        return Err(Error::BadRequest("{} does not have enough properties".into()).into());
    }
    let store = s.identity.store();
    let mut l = store.limit_get(&id).await?.ok_or_else(|| Error::not_found("limit", &id))?;
    if let Some(v) = int_field(&m, "resource_limit", LIMIT_MIN, LIMIT_MAX)? {
        l.resource_limit = v;
    }
    if let Some(v) = string_field(&m, "description", true, true, 255)? {
        l.description = v;
    }
    store.limit_update(&l).await?;
    Ok(Json(json!({"limit": limit_json(&s, &l)})))
}

async fn limit_delete(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&s, &headers, "identity:delete_limit", &json!({"limit_id": id})).await?;
    if !s.identity.store().limit_delete(&id).await? {
        return Err(Error::not_found("limit", &id).into());
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_refused() {
        let m: Map<String, Value> = serde_json::from_value(json!({"service_id": "s", "bogus": 1})).unwrap();
        let err = no_additional(&m, REGISTERED_FIELDS).unwrap_err().to_string();
        assert_eq!(err, "Additional properties are not allowed ('bogus' was unexpected)");
    }

    #[test]
    fn limits_need_one_owner_and_bounded_values() {
        let base = json!({"service_id": "s", "resource_name": "cores", "resource_limit": 5});
        let mut both = base.clone();
        both["project_id"] = json!("p");
        both["domain_id"] = json!("d");
        assert!(limit_from(both.as_object().unwrap()).is_err());
        assert!(limit_from(base.as_object().unwrap()).is_err());
        let mut ok = base.clone();
        ok["project_id"] = json!("p");
        assert_eq!(limit_from(ok.as_object().unwrap()).unwrap().resource_limit, 5);
        ok["resource_limit"] = json!(-2);
        assert!(limit_from(ok.as_object().unwrap()).is_err());
    }
}
