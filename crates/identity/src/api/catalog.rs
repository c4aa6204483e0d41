//! The service catalog: `/v3/regions`, `/v3/services`, `/v3/endpoints`, as Keystone's v3 API.
//!
//! Regions form a tree (`parent_region_id`; cycles are refused, deleting a region deletes its sub-regions unless
//! endpoints use any of them). Deleting a service deletes its endpoints. An endpoint given `region` (rather than
//! `region_id`) creates that region when missing, as upstream does for v2-style clients; an unknown `region_id` is
//! a 400. Every change invalidates cached token validations and the catalog (`Identity::changed`).
//!
//! Also policy blobs (`/v3/policies`: opaque documents with a type, kept for other services) and endpoint groups
//! (`/v3/OS-EP-FILTER/endpoint_groups`: named endpoint filters; project associations are not implemented).
//!
//! Also home of the small body-validation helpers the credential and limit modules share: they produce Keystone's
//! JSON-schema style messages ("Invalid input for field 'enabled': 'False' is not of type 'boolean'").

use std::collections::BTreeSet;

use api_common::{ApiError, Json, QueryPairs};
use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Map, Value, json};

use super::{AppState, authorize};
use crate::{
    error::Error,
    service::new_id,
    store::{EndpointGroupRow, EndpointRecord, PolicyRow, RegionRow, ServiceRecord},
};

/// Default policy rules (upstream names, secure-RBAC defaults; admin in any scope writes).
pub(super) const POLICIES: &[(&str, &str)] = &[
    ("admin_or_system_reader", "rule:admin_required or (role:reader and system_scope:all)"),
    ("identity:get_region", ""),
    ("identity:list_regions", ""),
    ("identity:create_region", "rule:admin_required"),
    ("identity:update_region", "rule:admin_required"),
    ("identity:delete_region", "rule:admin_required"),
    ("identity:get_service", "rule:admin_or_system_reader"),
    ("identity:list_services", "rule:admin_or_system_reader"),
    ("identity:create_service", "rule:admin_required"),
    ("identity:update_service", "rule:admin_required"),
    ("identity:delete_service", "rule:admin_required"),
    ("identity:get_endpoint", "rule:admin_or_system_reader"),
    ("identity:list_endpoints", "rule:admin_or_system_reader"),
    ("identity:create_endpoint", "rule:admin_required"),
    ("identity:update_endpoint", "rule:admin_required"),
    ("identity:delete_endpoint", "rule:admin_required"),
    ("identity:get_policy", "rule:admin_or_system_reader"),
    ("identity:list_policies", "rule:admin_or_system_reader"),
    ("identity:create_policy", "rule:admin_required"),
    ("identity:update_policy", "rule:admin_required"),
    ("identity:delete_policy", "rule:admin_required"),
    ("identity:get_endpoint_group", "rule:admin_or_system_reader"),
    ("identity:list_endpoint_groups", "rule:admin_or_system_reader"),
    ("identity:create_endpoint_group", "rule:admin_required"),
    ("identity:update_endpoint_group", "rule:admin_required"),
    ("identity:delete_endpoint_group", "rule:admin_required"),
];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/regions", get(region_list).post(region_create))
        .route("/v3/regions/{region_id}", get(region_get).put(region_put).patch(region_update).delete(region_delete))
        .route("/v3/services", get(service_list).post(service_create))
        .route("/v3/services/{service_id}", get(service_get).patch(service_update).delete(service_delete))
        .route("/v3/endpoints", get(endpoint_list).post(endpoint_create))
        .route("/v3/endpoints/{endpoint_id}", get(endpoint_get).patch(endpoint_update).delete(endpoint_delete))
        .route("/v3/policies", get(policy_list).post(policy_create))
        .route("/v3/policies/{policy_id}", get(policy_get).patch(policy_update).delete(policy_delete))
        .route("/v3/OS-EP-FILTER/endpoint_groups", get(group_list).post(group_create))
        .route(
            "/v3/OS-EP-FILTER/endpoint_groups/{endpoint_group_id}",
            get(group_get).head(group_check).patch(group_update).delete(group_delete),
        )
}

const INTERFACES: &[&str] = &["public", "internal", "admin"];

// ---- body helpers (shared with the credential and limit modules)

/// A JSON value as Python's `repr` shows it in jsonschema messages.
fn repr(v: &Value) -> String {
    match v {
        Value::String(s) => format!("'{s}'"),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

pub(super) fn invalid(field: &str, message: impl std::fmt::Display) -> Error {
    Error::BadRequest(format!("Invalid input for field '{field}': {message}"))
}

/// The object under `key` (`{"region": {...}}`); 400 when missing or not an object.
pub(super) fn entity(body: Value, key: &str) -> Result<Map<String, Value>, Error> {
    match body {
        Value::Object(mut m) => match m.remove(key) {
            Some(Value::Object(inner)) => Ok(inner),
            Some(other) => Err(invalid(key, format!("{} is not of type 'object'", repr(&other)))),
            None => Err(Error::BadRequest(format!("'{key}' is a required property"))),
        },
        other => Err(Error::BadRequest(format!("{} is not of type 'object'", repr(&other)))),
    }
}

pub(super) fn required(m: &Map<String, Value>, field: &str) -> Result<(), Error> {
    if m.contains_key(field) { Ok(()) } else { Err(Error::BadRequest(format!("'{field}' is a required property"))) }
}

/// A string field: `None` if absent, `Some(None)` if null (only when `nullable`), `Some(Some(s))` otherwise.
/// Strings must be 1..=`max` characters long (0 allowed when `max_empty`).
pub(super) fn string_field(
    m: &Map<String, Value>,
    field: &str,
    nullable: bool,
    allow_empty: bool,
    max: usize,
) -> Result<Option<Option<String>>, Error> {
    match m.get(field) {
        None => Ok(None),
        Some(Value::Null) if nullable => Ok(Some(None)),
        Some(Value::String(s)) => {
            if s.is_empty() && !allow_empty {
                return Err(invalid(field, format!("'{s}' is too short")));
            }
            if s.chars().count() > max {
                return Err(invalid(field, format!("'{s}' is too long")));
            }
            Ok(Some(Some(s.clone())))
        }
        Some(other) => {
            let t = if nullable { "['string', 'null']" } else { "'string'" };
            Err(invalid(field, format!("{} is not of type {t}", repr(other))))
        }
    }
}

pub(super) fn bool_field(m: &Map<String, Value>, field: &str) -> Result<Option<bool>, Error> {
    match m.get(field) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(invalid(field, format!("{} is not of type 'boolean'", repr(other)))),
    }
}

/// An integer field within `min..=max`.
pub(super) fn int_field(m: &Map<String, Value>, field: &str, min: i64, max: i64) -> Result<Option<i64>, Error> {
    match m.get(field) {
        None => Ok(None),
        Some(v @ Value::Number(n)) => match n.as_i64() {
            Some(i) if i < min => Err(invalid(field, format!("{i} is less than the minimum of {min}"))),
            Some(i) if i > max => Err(invalid(field, format!("{i} is greater than the maximum of {max}"))),
            Some(i) => Ok(Some(i)),
            None => Err(invalid(field, format!("{} is not of type 'integer'", repr(v)))),
        },
        Some(other) => Err(invalid(field, format!("{} is not of type 'integer'", repr(other)))),
    }
}

/// Every field not in `known` (Keystone's "extra" attributes), minus `id` and `links`.
pub(super) fn extras(m: &Map<String, Value>, known: &[&str]) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !known.contains(&k.as_str()) && k.as_str() != "id" && k.as_str() != "links")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Upstream's `ValidationError(attribute, target)` message.
pub(super) fn expecting(attribute: &str, target: &str) -> Error {
    Error::BadRequest(format!(
        "Expecting to find {attribute} in {target}. The server could not comply with the request since it is either \
         malformed or otherwise incorrect. The client is assumed to be in error."
    ))
}

pub(super) fn created(v: Value) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

/// The body after `entity` with the extras merged in at top level, as upstream renders them.
pub(super) fn with_extra(mut v: Value, extra: &Map<String, Value>) -> Value {
    if let Value::Object(m) = &mut v {
        for (k, x) in extra {
            m.entry(k.clone()).or_insert_with(|| x.clone());
        }
    }
    v
}

// ---- regions

fn region_json(s: &AppState, r: &RegionRow) -> Value {
    with_extra(
        json!({
            "id": r.id,
            "description": r.description.clone().unwrap_or_default(),
            "parent_region_id": r.parent_region_id,
            "links": {"self": s.url(&format!("regions/{}", r.id))},
        }),
        &r.extra,
    )
}

const REGION_FIELDS: &[&str] = &["description", "parent_region_id"];

async fn region_list(State(s): State<AppState>, headers: HeaderMap, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:list_regions", &json!({})).await?;
    let parent = q.get("parent_region_id");
    let regions = s.identity.store().region_list().await?;
    let items = regions
        .iter()
        .filter(|r| parent.is_none_or(|p| r.parent_region_id.as_deref() == Some(p)))
        .map(|r| region_json(&s, r))
        .collect();
    Ok(s.collection("regions", items, "regions"))
}

async fn region_get(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:get_region", &json!({"region_id": id})).await?;
    let r = s.identity.store().region_get(&id).await?.ok_or_else(|| Error::not_found("region", &id))?;
    Ok(Json(json!({"region": region_json(&s, &r)})))
}

async fn region_create(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers, "identity:create_region", &json!({})).await?;
    let m = entity(body, "region")?;
    let id = match string_field(&m, "id", true, false, 255)? {
        Some(Some(id)) => id,
        _ => new_id(),
    };
    let r = create_region(&s, id, &m).await?;
    Ok(created(json!({"region": region_json(&s, &r)})))
}

async fn region_put(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers, "identity:create_region", &json!({"region_id": id})).await?;
    let m = entity(body, "region")?;
    if let Some(Some(body_id)) = string_field(&m, "id", true, false, 255)?
        && body_id != id
    {
        return Err(Error::BadRequest(format!("Conflicting region IDs specified: \"{id}\" and \"{body_id}\"")).into());
    }
    let r = create_region(&s, id, &m).await?;
    Ok(created(json!({"region": region_json(&s, &r)})))
}

async fn create_region(s: &AppState, id: String, m: &Map<String, Value>) -> Result<RegionRow, Error> {
    if id.chars().count() > 255 {
        return Err(invalid("id", format!("'{id}' is too long")));
    }
    let description = string_field(m, "description", true, true, 255)?.flatten();
    let parent = string_field(m, "parent_region_id", true, false, 255)?.flatten();
    let store = s.identity.store();
    if store.region_get(&id).await?.is_some() {
        return Err(Error::Conflict { kind: "region", detail: format!("Duplicate ID, {id}") });
    }
    if let Some(p) = &parent {
        if p == &id {
            return Err(circular(p));
        }
        if store.region_get(p).await?.is_none() {
            return Err(Error::not_found("region", p));
        }
    }
    let r = RegionRow { id, description, parent_region_id: parent, extra: extras(m, REGION_FIELDS) };
    store.region_create(&r).await?;
    s.identity.changed();
    Ok(r)
}

fn circular(parent: &str) -> Error {
    Error::BadRequest(format!("The specified parent region {parent} would create a circular region hierarchy."))
}

async fn region_update(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:update_region", &json!({"region_id": id})).await?;
    let m = entity(body, "region")?;
    if let Some(Some(body_id)) = string_field(&m, "id", true, false, 255)?
        && body_id != id
    {
        return Err(Error::BadRequest("Cannot change region ID".into()).into());
    }
    let description = string_field(&m, "description", true, true, 255)?;
    let parent = string_field(&m, "parent_region_id", true, false, 255)?;
    let store = s.identity.store();
    let mut r = store.region_get(&id).await?.ok_or_else(|| Error::not_found("region", &id))?;
    if let Some(d) = description {
        r.description = d;
    }
    if let Some(p) = parent {
        if let Some(p) = &p {
            let all = store.region_list().await?;
            if !all.iter().any(|x| &x.id == p) {
                return Err(Error::not_found("region", p).into());
            }
            // Walk up from the new parent: reaching this region would close a cycle.
            let mut seen = BTreeSet::new();
            let mut cur = Some(p.clone());
            while let Some(c) = cur {
                if c == id || !seen.insert(c.clone()) {
                    return Err(circular(p).into());
                }
                cur = all.iter().find(|x| x.id == c).and_then(|x| x.parent_region_id.clone());
            }
        }
        r.parent_region_id = p;
    }
    for (k, v) in extras(&m, REGION_FIELDS) {
        r.extra.insert(k, v);
    }
    store.region_update(&r).await?;
    s.identity.changed();
    Ok(Json(json!({"region": region_json(&s, &r)})))
}

async fn region_delete(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&s, &headers, "identity:delete_region", &json!({"region_id": id})).await?;
    let store = s.identity.store();
    let all = store.region_list().await?;
    if !all.iter().any(|r| r.id == id) {
        return Err(Error::not_found("region", &id).into());
    }
    // The region and every descendant (upstream deletes sub-regions along), unless an endpoint uses any of them.
    let mut doomed = vec![id.clone()];
    let mut i = 0;
    while i < doomed.len() {
        let cur = doomed[i].clone();
        for r in &all {
            if r.parent_region_id.as_deref() == Some(cur.as_str()) && !doomed.contains(&r.id) {
                doomed.push(r.id.clone());
            }
        }
        i += 1;
    }
    let endpoints = store.endpoint_list_full().await?;
    if endpoints.iter().any(|e| e.region_id.as_ref().is_some_and(|r| doomed.contains(r))) {
        return Err(Error::Forbidden(format!(
            "Unable to delete region {id} because it or its child regions have associated endpoints."
        ))
        .into());
    }
    store.region_delete_all(&doomed).await?;
    s.identity.changed();
    Ok(StatusCode::NO_CONTENT)
}

// ---- services

fn service_json(s: &AppState, r: &ServiceRecord) -> Value {
    let mut v = json!({
        "id": r.id,
        "type": r.service_type,
        "enabled": r.enabled,
        "links": {"self": s.url(&format!("services/{}", r.id))},
    });
    if let Value::Object(m) = &mut v {
        if let Some(n) = &r.name {
            m.insert("name".into(), json!(n));
        }
        if let Some(d) = &r.description {
            m.insert("description".into(), json!(d));
        }
    }
    with_extra(v, &r.extra)
}

const SERVICE_FIELDS: &[&str] = &["type", "name", "description", "enabled"];

async fn service_list(State(s): State<AppState>, headers: HeaderMap, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:list_services", &json!({})).await?;
    let services = s.identity.store().service_list_full().await?;
    let (ty, name) = (q.get("type"), q.get("name"));
    let items = services
        .iter()
        .filter(|r| ty.is_none_or(|t| r.service_type == t) && name.is_none_or(|n| r.name.as_deref() == Some(n)))
        .map(|r| service_json(&s, r))
        .collect();
    Ok(s.collection("services", items, "services"))
}

async fn service_get(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:get_service", &json!({"service_id": id})).await?;
    let r = s.identity.store().service_get(&id).await?.ok_or_else(|| Error::not_found("service", &id))?;
    Ok(Json(json!({"service": service_json(&s, &r)})))
}

async fn service_create(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers, "identity:create_service", &json!({})).await?;
    let m = entity(body, "service")?;
    required(&m, "type")?;
    let r = ServiceRecord {
        id: new_id(),
        service_type: string_field(&m, "type", false, false, 255)?.flatten().unwrap_or_default(),
        name: string_field(&m, "name", false, true, 255)?.flatten(),
        description: string_field(&m, "description", true, true, 255)?.flatten(),
        enabled: bool_field(&m, "enabled")?.unwrap_or(true),
        extra: extras(&m, SERVICE_FIELDS),
    };
    s.identity.store().service_insert(&r).await?;
    s.identity.changed();
    Ok(created(json!({"service": service_json(&s, &r)})))
}

async fn service_update(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:update_service", &json!({"service_id": id})).await?;
    let m = entity(body, "service")?;
    if m.is_empty() {
        return Err(Error::BadRequest("{} does not have enough properties".into()).into());
    }
    let ty = string_field(&m, "type", false, false, 255)?;
    let name = string_field(&m, "name", false, true, 255)?;
    let description = string_field(&m, "description", true, true, 255)?;
    let enabled = bool_field(&m, "enabled")?;
    if let Some(Value::String(body_id)) = m.get("id")
        && body_id != &id
    {
        return Err(Error::BadRequest("Cannot change service ID".into()).into());
    }
    let store = s.identity.store();
    let mut r = store.service_get(&id).await?.ok_or_else(|| Error::not_found("service", &id))?;
    if let Some(Some(t)) = ty {
        r.service_type = t;
    }
    if let Some(n) = name {
        r.name = n;
    }
    if let Some(d) = description {
        r.description = d;
    }
    if let Some(e) = enabled {
        r.enabled = e;
    }
    for (k, v) in extras(&m, SERVICE_FIELDS) {
        r.extra.insert(k, v);
    }
    store.service_update(&r).await?;
    s.identity.changed();
    Ok(Json(json!({"service": service_json(&s, &r)})))
}

async fn service_delete(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&s, &headers, "identity:delete_service", &json!({"service_id": id})).await?;
    if !s.identity.store().service_delete(&id).await? {
        return Err(Error::not_found("service", &id).into());
    }
    s.identity.changed();
    Ok(StatusCode::NO_CONTENT)
}

// ---- endpoints

fn endpoint_json(s: &AppState, e: &EndpointRecord) -> Value {
    with_extra(
        json!({
            "id": e.id,
            "interface": e.interface,
            "region_id": e.region_id,
            "region": e.region_id,
            "service_id": e.service_id,
            "url": e.url,
            "enabled": e.enabled,
            "links": {"self": s.url(&format!("endpoints/{}", e.id))},
        }),
        &e.extra,
    )
}

const ENDPOINT_FIELDS: &[&str] = &["service_id", "interface", "region_id", "region", "url", "enabled"];

async fn endpoint_list(State(s): State<AppState>, headers: HeaderMap, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:list_endpoints", &json!({})).await?;
    let endpoints = s.identity.store().endpoint_list_full().await?;
    let (interface, service, region) = (q.get("interface"), q.get("service_id"), q.get("region_id"));
    let items = endpoints
        .iter()
        .filter(|e| {
            interface.is_none_or(|i| e.interface == i)
                && service.is_none_or(|x| e.service_id == x)
                && region.is_none_or(|r| e.region_id.as_deref() == Some(r))
        })
        .map(|e| endpoint_json(&s, e))
        .collect();
    Ok(s.collection("endpoints", items, "endpoints"))
}

async fn endpoint_get(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:get_endpoint", &json!({"endpoint_id": id})).await?;
    let e = s.identity.store().endpoint_get(&id).await?.ok_or_else(|| Error::not_found("endpoint", &id))?;
    Ok(Json(json!({"endpoint": endpoint_json(&s, &e)})))
}

/// Validated endpoint fields of a create or update body (`None`: not given).
struct EndpointInput {
    service_id: Option<String>,
    interface: Option<String>,
    /// `Some(None)`: region cleared.
    region: Option<Option<String>>,
    /// Whether the region came as `region` (legacy: created when missing) rather than `region_id`.
    legacy_region: bool,
    url: Option<String>,
    enabled: Option<bool>,
}

fn endpoint_input(m: &Map<String, Value>) -> Result<EndpointInput, Error> {
    let service_id = string_field(m, "service_id", false, false, 64)?.flatten();
    let interface = string_field(m, "interface", false, false, 255)?.flatten();
    if let Some(i) = &interface
        && !INTERFACES.contains(&i.as_str())
    {
        return Err(invalid("interface", format!("'{i}' is not one of ['admin', 'internal', 'public']")));
    }
    let url = string_field(m, "url", false, false, 225 * 1024)?.flatten();
    let region_id = string_field(m, "region_id", true, false, 255)?;
    let region = string_field(m, "region", true, false, 255)?;
    let enabled = bool_field(m, "enabled")?;
    let legacy_region = region_id.as_ref().is_none_or(Option::is_none) && matches!(region, Some(Some(_)));
    Ok(EndpointInput {
        service_id,
        interface,
        region: if legacy_region { region } else { region_id.or(region) },
        legacy_region,
        url,
        enabled,
    })
}

/// Checks that the endpoint's service and region exist (creating a region named by legacy `region`).
async fn check_endpoint_refs(s: &AppState, e: &EndpointRecord, legacy_region: bool) -> Result<(), Error> {
    let store = s.identity.store();
    if let Some(r) = &e.region_id
        && store.region_get(r).await?.is_none()
    {
        if !legacy_region {
            return Err(expecting("endpoint region_id", "region table"));
        }
        store
            .region_create(&RegionRow { id: r.clone(), description: None, parent_region_id: None, extra: Map::new() })
            .await?;
    }
    if store.service_get(&e.service_id).await?.is_none() {
        return Err(expecting("endpoint service", "service table"));
    }
    Ok(())
}

async fn endpoint_create(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers, "identity:create_endpoint", &json!({})).await?;
    let m = entity(body, "endpoint")?;
    for f in ["service_id", "interface", "url"] {
        required(&m, f)?;
    }
    let input = endpoint_input(&m)?;
    let e = EndpointRecord {
        id: new_id(),
        service_id: input.service_id.unwrap_or_default(),
        interface: input.interface.unwrap_or_default(),
        region_id: input.region.flatten(),
        url: input.url.unwrap_or_default(),
        enabled: input.enabled.unwrap_or(true),
        extra: extras(&m, ENDPOINT_FIELDS),
    };
    check_endpoint_refs(&s, &e, input.legacy_region).await?;
    s.identity.store().endpoint_insert(&e).await?;
    s.identity.changed();
    Ok(created(json!({"endpoint": endpoint_json(&s, &e)})))
}

async fn endpoint_update(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:update_endpoint", &json!({"endpoint_id": id})).await?;
    let m = entity(body, "endpoint")?;
    if m.is_empty() {
        return Err(Error::BadRequest("{} does not have enough properties".into()).into());
    }
    let input = endpoint_input(&m)?;
    if let Some(Value::String(body_id)) = m.get("id")
        && body_id != &id
    {
        return Err(Error::BadRequest("Cannot change endpoint ID".into()).into());
    }
    let mut e = s.identity.store().endpoint_get(&id).await?.ok_or_else(|| Error::not_found("endpoint", &id))?;
    if let Some(v) = input.service_id {
        e.service_id = v;
    }
    if let Some(v) = input.interface {
        e.interface = v;
    }
    if let Some(v) = input.region {
        e.region_id = v;
    }
    if let Some(v) = input.url {
        e.url = v;
    }
    if let Some(v) = input.enabled {
        e.enabled = v;
    }
    for (k, v) in extras(&m, ENDPOINT_FIELDS) {
        e.extra.insert(k, v);
    }
    check_endpoint_refs(&s, &e, input.legacy_region).await?;
    s.identity.store().endpoint_update(&e).await?;
    s.identity.changed();
    Ok(Json(json!({"endpoint": endpoint_json(&s, &e)})))
}

async fn endpoint_delete(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&s, &headers, "identity:delete_endpoint", &json!({"endpoint_id": id})).await?;
    if !s.identity.store().endpoint_delete(&id).await? {
        return Err(Error::not_found("endpoint", &id).into());
    }
    s.identity.changed();
    Ok(StatusCode::NO_CONTENT)
}

// ---- policy blobs

fn policy_json(s: &AppState, p: &PolicyRow) -> Value {
    with_extra(
        json!({
            "id": p.id,
            "type": p.policy_type,
            "blob": p.blob,
            "links": {"self": s.url(&format!("policies/{}", p.id))},
        }),
        &p.extra,
    )
}

const POLICY_FIELDS: &[&str] = &["type", "blob"];

async fn policy_list(State(s): State<AppState>, headers: HeaderMap, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:list_policies", &json!({})).await?;
    let ty = q.get("type");
    let items = s
        .identity
        .store()
        .policy_list()
        .await?
        .iter()
        .filter(|p| ty.is_none_or(|t| p.policy_type == t))
        .map(|p| policy_json(&s, p))
        .collect();
    Ok(s.collection("policies", items, "policies"))
}

async fn policy_get(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:get_policy", &json!({"policy_id": id})).await?;
    let p = s.identity.store().policy_get(&id).await?.ok_or_else(|| Error::not_found("policy", &id))?;
    Ok(Json(json!({"policy": policy_json(&s, &p)})))
}

async fn policy_create(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers, "identity:create_policy", &json!({})).await?;
    let m = entity(body, "policy")?;
    required(&m, "blob")?;
    required(&m, "type")?;
    let p = PolicyRow {
        id: new_id(),
        policy_type: string_field(&m, "type", false, false, 255)?.flatten().unwrap_or_default(),
        blob: string_field(&m, "blob", false, true, usize::MAX)?.flatten().unwrap_or_default(),
        extra: extras(&m, POLICY_FIELDS),
    };
    s.identity.store().policy_save(&p, true).await?;
    Ok(created(json!({"policy": policy_json(&s, &p)})))
}

async fn policy_update(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:update_policy", &json!({"policy_id": id})).await?;
    let m = entity(body, "policy")?;
    let ty = string_field(&m, "type", false, false, 255)?.flatten();
    let blob = string_field(&m, "blob", false, true, usize::MAX)?.flatten();
    let store = s.identity.store();
    let mut p = store.policy_get(&id).await?.ok_or_else(|| Error::not_found("policy", &id))?;
    if let Some(t) = ty {
        p.policy_type = t;
    }
    if let Some(b) = blob {
        p.blob = b;
    }
    for (k, v) in extras(&m, POLICY_FIELDS) {
        p.extra.insert(k, v);
    }
    store.policy_save(&p, false).await?;
    Ok(Json(json!({"policy": policy_json(&s, &p)})))
}

async fn policy_delete(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&s, &headers, "identity:delete_policy", &json!({"policy_id": id})).await?;
    if !s.identity.store().policy_delete(&id).await? {
        return Err(Error::not_found("policy", &id).into());
    }
    Ok(StatusCode::NO_CONTENT)
}

// ---- endpoint groups (OS-EP-FILTER)

const GROUP_FILTERS: &[&str] = &["interface", "service_id", "region_id"];

fn group_json(s: &AppState, g: &EndpointGroupRow) -> Value {
    json!({
        "id": g.id,
        "name": g.name,
        "description": g.description,
        "filters": g.filters,
        "links": {"self": s.url(&format!("OS-EP-FILTER/endpoint_groups/{}", g.id))},
    })
}

/// `filters` must be a non-empty object over `interface`, `service_id` and `region_id` (400 otherwise).
fn group_filters(m: &Map<String, Value>) -> Result<Option<Map<String, Value>>, Error> {
    match m.get("filters") {
        None => Ok(None),
        Some(Value::Object(f)) => {
            if f.is_empty() {
                return Err(invalid("filters", "{} does not have enough properties"));
            }
            if let Some(k) = f.keys().find(|k| !GROUP_FILTERS.contains(&k.as_str())) {
                return Err(Error::BadRequest(format!(
                    "Invalid input for field 'filters': '{k}' is not a valid endpoint group filter: expected \
                     interface, service_id or region_id."
                )));
            }
            if let Some(Value::String(i)) = f.get("interface")
                && !INTERFACES.contains(&i.as_str())
            {
                return Err(invalid("filters", format!("'{i}' is not one of ['admin', 'internal', 'public']")));
            }
            Ok(Some(f.clone()))
        }
        Some(other) => Err(invalid("filters", format!("{} is not of type 'object'", repr(other)))),
    }
}

async fn group_list(State(s): State<AppState>, headers: HeaderMap, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:list_endpoint_groups", &json!({})).await?;
    let name = q.get("name");
    let items = s
        .identity
        .store()
        .endpoint_group_list()
        .await?
        .iter()
        .filter(|g| name.is_none_or(|n| g.name == n))
        .map(|g| group_json(&s, g))
        .collect();
    Ok(s.collection("endpoint_groups", items, "OS-EP-FILTER/endpoint_groups"))
}

async fn group_get(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:get_endpoint_group", &json!({"endpoint_group_id": id})).await?;
    let g = s.identity.store().endpoint_group_get(&id).await?.ok_or_else(|| Error::not_found("endpoint group", &id))?;
    Ok(Json(json!({"endpoint_group": group_json(&s, &g)})))
}

async fn group_check(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&s, &headers, "identity:get_endpoint_group", &json!({"endpoint_group_id": id})).await?;
    s.identity.store().endpoint_group_get(&id).await?.ok_or_else(|| Error::not_found("endpoint group", &id))?;
    Ok(StatusCode::OK)
}

async fn group_create(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers, "identity:create_endpoint_group", &json!({})).await?;
    let m = entity(body, "endpoint_group")?;
    required(&m, "name")?;
    required(&m, "filters")?;
    let g = EndpointGroupRow {
        id: new_id(),
        name: string_field(&m, "name", false, false, 255)?.flatten().unwrap_or_default(),
        description: string_field(&m, "description", true, true, 255)?.flatten(),
        filters: group_filters(&m)?.unwrap_or_default(),
    };
    s.identity.store().endpoint_group_save(&g, true).await?;
    Ok(created(json!({"endpoint_group": group_json(&s, &g)})))
}

async fn group_update(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, "identity:update_endpoint_group", &json!({"endpoint_group_id": id})).await?;
    let m = entity(body, "endpoint_group")?;
    let name = string_field(&m, "name", false, false, 255)?.flatten();
    let description = string_field(&m, "description", true, true, 255)?;
    let filters = group_filters(&m)?;
    let store = s.identity.store();
    let mut g = store.endpoint_group_get(&id).await?.ok_or_else(|| Error::not_found("endpoint group", &id))?;
    if let Some(n) = name {
        g.name = n;
    }
    if let Some(d) = description {
        g.description = d;
    }
    if let Some(f) = filters {
        g.filters = f;
    }
    store.endpoint_group_save(&g, false).await?;
    Ok(Json(json!({"endpoint_group": group_json(&s, &g)})))
}

async fn group_delete(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&s, &headers, "identity:delete_endpoint_group", &json!({"endpoint_group_id": id})).await?;
    if !s.identity.store().endpoint_group_delete(&id).await? {
        return Err(Error::not_found("endpoint group", &id).into());
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_fields_validate_type_length_and_null() {
        let m: Map<String, Value> =
            serde_json::from_value(json!({"a": "x", "b": null, "c": 3, "d": "", "e": "toolong"})).unwrap();
        assert_eq!(string_field(&m, "a", false, false, 5).unwrap(), Some(Some("x".into())));
        assert_eq!(string_field(&m, "b", true, false, 5).unwrap(), Some(None));
        assert!(string_field(&m, "b", false, false, 5).is_err());
        let err = string_field(&m, "c", false, false, 5).unwrap_err().to_string();
        assert_eq!(err, "Invalid input for field 'c': 3 is not of type 'string'");
        assert!(string_field(&m, "d", false, false, 5).is_err());
        assert_eq!(string_field(&m, "d", false, true, 5).unwrap(), Some(Some(String::new())));
        assert!(string_field(&m, "e", false, false, 5).is_err());
        assert_eq!(string_field(&m, "z", false, false, 5).unwrap(), None);
    }

    #[test]
    fn booleans_must_be_json_booleans() {
        let m: Map<String, Value> = serde_json::from_value(json!({"t": true, "s": "False"})).unwrap();
        assert_eq!(bool_field(&m, "t").unwrap(), Some(true));
        let err = bool_field(&m, "s").unwrap_err().to_string();
        assert_eq!(err, "Invalid input for field 's': 'False' is not of type 'boolean'");
    }

    #[test]
    fn legacy_region_is_preferred_only_without_region_id() {
        let m: Map<String, Value> = serde_json::from_value(json!({"region": "r1"})).unwrap();
        let i = endpoint_input(&m).unwrap();
        assert!(i.legacy_region);
        assert_eq!(i.region, Some(Some("r1".into())));
        let m: Map<String, Value> = serde_json::from_value(json!({"region": "r1", "region_id": "r2"})).unwrap();
        let i = endpoint_input(&m).unwrap();
        assert!(!i.legacy_region);
        assert_eq!(i.region, Some(Some("r2".into())));
        let m: Map<String, Value> = serde_json::from_value(json!({"interface": "private"})).unwrap();
        assert!(endpoint_input(&m).is_err());
    }
}
