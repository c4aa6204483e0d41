//! `/v3/domains`: create, list (filters `name`, `enabled`), show, update, delete. A domain must be disabled before
//! it can be deleted; deleting it removes everything it owns. Disabling one invalidates tokens scoped to it or to
//! its projects (validation refuses disabled domains; the cache is dropped here).
//!
//! The operations also serve `/v3/projects` for projects acting as domains (`is_domain: true`), which Stratus keeps
//! in the domain table only.

use api_common::{ApiError, Json, QueryPairs};
use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::Utc;
use serde_json::{Map, Value, json};

use super::{
    AppState, authorize,
    projects::{Body, extra_map, filter_flag, reject_id_change},
};
use crate::{
    error::Error,
    service::new_id,
    store::{DomainRecord, DomainRow, RevocationRow},
};

/// Default policy rules (upstream names; secure-RBAC defaults plus upstream's `rule:admin_required` alternative).
pub(super) const POLICIES: &[(&str, &str)] = &[
    (
        "identity:get_domain",
        "rule:admin_required or (role:reader and system_scope:all) or domain_id:%(target.domain.id)s or \
         project_domain_id:%(target.domain.id)s",
    ),
    ("identity:list_domains", "rule:admin_required or (role:reader and system_scope:all)"),
    ("identity:create_domain", "rule:admin_required"),
    ("identity:update_domain", "rule:admin_required"),
    ("identity:delete_domain", "rule:admin_required"),
];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/domains", get(list).post(create))
        .route("/v3/domains/{domain_id}", get(show).patch(update).delete(delete))
}

/// A domain as `/v3/domains` shows it.
pub(super) fn domain_json(s: &AppState, d: &DomainRecord, tags: &[String]) -> Value {
    let mut m = extra_map(d.extra.as_deref());
    m.entry("options").or_insert_with(|| json!({}));
    m.insert("id".into(), json!(d.row.id));
    m.insert("name".into(), json!(d.row.name));
    m.insert("description".into(), json!(d.row.description));
    m.insert("enabled".into(), json!(d.row.enabled));
    m.insert("tags".into(), json!(tags));
    m.insert("links".into(), json!({"self": s.url(&format!("domains/{}", d.row.id))}));
    Value::Object(m)
}

async fn with_tags(s: &AppState, d: DomainRecord) -> Result<(DomainRecord, Vec<String>), Error> {
    let tags = s.identity.store().project_tags(&d.row.id).await?;
    Ok((d, tags))
}

/// Creates a domain from a create body (of `/v3/domains`, or of `/v3/projects` with `is_domain: true`).
pub(super) async fn create_domain(s: &AppState, body: &Map<String, Value>) -> Result<(DomainRecord, Vec<String>), Error> {
    let b = Body::parse(body, DOMAIN_FIELDS)?;
    let name = b.name.ok_or_else(|| Error::BadRequest("Invalid input for field 'name': 'name' is a required property".into()))?;
    let id = match body.get("explicit_domain_id").or_else(|| body.get("id")) {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= 64 => id.clone(),
        Some(Value::Null) | None => new_id(),
        Some(other) => return Err(Error::BadRequest(format!("Invalid input for field 'explicit_domain_id': {other} is not a valid id"))),
    };
    let store = s.identity.store();
    if store.domain_get_by_name(&name).await?.is_some() {
        return Err(duplicate(&name));
    }
    if store.domain_get(&id).await?.is_some() || store.project_get(&id).await?.is_some() {
        return Err(Error::Conflict { kind: "domain", detail: format!("Duplicate ID, {id}") });
    }
    let record = DomainRecord {
        row: DomainRow {
            id,
            name,
            description: b.description.unwrap_or(Some(String::new())),
            enabled: b.enabled.unwrap_or(true),
        },
        extra: b.extra,
    };
    store.domain_record_create(&record).await.map_err(|e| match e {
        Error::Db(ref d) if d.is_unique_violation() => duplicate(&record.row.name),
        other => other,
    })?;
    let tags = b.tags.unwrap_or_default();
    if !tags.is_empty() {
        store.project_tags_set(&record.row.id, &tags).await?;
    }
    Ok((record, tags))
}

/// Fields that are not extra attributes (a domain-as-project body also carries the project ones).
const DOMAIN_FIELDS: &[&str] =
    &["id", "name", "description", "enabled", "tags", "links", "explicit_domain_id", "domain_id", "parent_id", "is_domain"];

fn duplicate(name: &str) -> Error {
    Error::Conflict {
        kind: "project",
        detail: format!("it is not permitted to have two projects acting as domains with the same name: {name}"),
    }
}

/// Applies an update body to a domain (for `/v3/domains/{id}` and `/v3/projects/{id}` of a domain).
pub(super) async fn update_domain(
    s: &AppState,
    mut d: DomainRecord,
    body: &Map<String, Value>,
) -> Result<(DomainRecord, Vec<String>), Error> {
    reject_id_change(body, &d.row.id)?;
    let b = Body::parse(body, DOMAIN_FIELDS)?;
    if body.get("is_domain").is_some_and(|v| v != &Value::Bool(true)) {
        return Err(Error::BadRequest("Update of `is_domain` is not allowed.".into()));
    }
    if body.get("parent_id").is_some_and(|v| !v.is_null()) {
        return Err(Error::Forbidden("Update of `parent_id` is not allowed.".into()));
    }
    let store = s.identity.store();
    if let Some(name) = b.name {
        if name != d.row.name && store.domain_get_by_name(&name).await?.is_some() {
            return Err(duplicate(&name));
        }
        d.row.name = name;
    }
    if let Some(desc) = b.description {
        d.row.description = desc;
    }
    if let Some(enabled) = b.enabled {
        d.row.enabled = enabled;
    }
    d.extra = merge_extra(d.extra.as_deref(), b.extra.as_deref());
    store.domain_update(&d).await.map_err(|e| match e {
        Error::Db(ref x) if x.is_unique_violation() => duplicate(&d.row.name),
        other => other,
    })?;
    if let Some(tags) = b.tags {
        store.project_tags_set(&d.row.id, &tags).await?;
    }
    // Names show in token bodies and a disabled domain invalidates its tokens: drop cached validations.
    s.identity.changed();
    with_tags(s, d).await
}

/// Extra attributes of an update merged over the stored ones.
pub(super) fn merge_extra(old: Option<&str>, new: Option<&str>) -> Option<String> {
    let Some(new) = new else { return old.map(str::to_string) };
    let mut m = extra_map(old);
    m.extend(extra_map(Some(new)));
    if m.is_empty() { None } else { Some(Value::Object(m).to_string()) }
}

/// Deletes a disabled domain and everything it owns; 403 while it is enabled.
pub(super) async fn delete_domain(s: &AppState, d: &DomainRecord) -> Result<(), Error> {
    if d.row.enabled {
        return Err(Error::Forbidden("Cannot delete a domain that is enabled, please disable it first.".into()));
    }
    let gone = s.identity.store().domain_delete_cascade(&d.row.id).await?;
    let now = Utc::now().timestamp();
    for p in gone.project_ids {
        s.identity
            .revoke_event(RevocationRow { audit_id: None, user_id: None, project_id: Some(p), issued_before: now })
            .await?;
    }
    for u in gone.user_ids {
        s.identity
            .revoke_event(RevocationRow { audit_id: None, user_id: Some(u), project_id: None, issued_before: now })
            .await?;
    }
    s.identity.changed();
    Ok(())
}

fn domain_target(id: &str, d: Option<&DomainRecord>) -> Value {
    match d {
        Some(d) => json!({"domain_id": id, "domain": {"id": d.row.id, "name": d.row.name, "enabled": d.row.enabled}}),
        None => json!({"domain_id": id}),
    }
}

async fn find(s: &AppState, id: &str) -> Result<Option<DomainRecord>, Error> {
    s.identity.store().domain_record_get(id).await
}

async fn create(State(s): State<AppState>, headers: HeaderMap, Json(body): Json<Value>) -> Result<Response, ApiError> {
    let domain = body.get("domain").and_then(Value::as_object).cloned().ok_or_else(|| {
        Error::BadRequest("Invalid input for field 'domain': 'domain' is a required property".into())
    })?;
    authorize(&s, &headers, "identity:create_domain", &json!({"domain": domain})).await?;
    let (d, tags) = create_domain(&s, &domain).await?;
    Ok((StatusCode::CREATED, Json(json!({"domain": domain_json(&s, &d, &tags)}))).into_response())
}

async fn list(State(s): State<AppState>, headers: HeaderMap, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    let mut target = Map::new();
    for key in ["name", "enabled"] {
        if let Some(v) = q.get(key) {
            target.insert(key.into(), json!(v));
        }
    }
    authorize(&s, &headers, "identity:list_domains", &Value::Object(target)).await?;
    let enabled = q.get("enabled").map(filter_flag);
    let domains = s.identity.store().domain_list(q.get("name"), enabled).await?;
    let mut items = Vec::with_capacity(domains.len());
    for d in domains {
        let (d, tags) = with_tags(&s, d).await?;
        items.push(domain_json(&s, &d, &tags));
    }
    Ok(s.collection("domains", items, "domains"))
}

async fn show(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let d = find(&s, &id).await?;
    authorize(&s, &headers, "identity:get_domain", &domain_target(&id, d.as_ref())).await?;
    let d = d.ok_or_else(|| Error::not_found("domain", &id))?;
    let (d, tags) = with_tags(&s, d).await?;
    Ok(Json(json!({"domain": domain_json(&s, &d, &tags)})))
}

async fn update(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    let d = find(&s, &id).await?;
    authorize(&s, &headers, "identity:update_domain", &domain_target(&id, d.as_ref())).await?;
    let d = d.ok_or_else(|| Error::not_found("domain", &id))?;
    let patch = body.get("domain").and_then(Value::as_object).cloned().ok_or_else(|| {
        Error::BadRequest("Invalid input for field 'domain': 'domain' is a required property".into())
    })?;
    if patch.is_empty() {
        return Err(Error::BadRequest("Invalid input for field 'domain': {} does not have enough properties".into()).into());
    }
    let (d, tags) = update_domain(&s, d, &patch).await?;
    Ok(Json(json!({"domain": domain_json(&s, &d, &tags)})))
}

async fn delete(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let d = find(&s, &id).await?;
    authorize(&s, &headers, "identity:delete_domain", &domain_target(&id, d.as_ref())).await?;
    let d = d.ok_or_else(|| Error::not_found("domain", &id))?;
    delete_domain(&s, &d).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_merges_over_stored_values() {
        let merged = merge_extra(Some(r#"{"a":1,"b":2}"#), Some(r#"{"b":3}"#)).unwrap();
        let v: Value = serde_json::from_str(&merged).unwrap();
        assert_eq!(v, json!({"a": 1, "b": 3}));
        assert_eq!(merge_extra(Some(r#"{"a":1}"#), None).as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(merge_extra(None, None), None);
    }
}
