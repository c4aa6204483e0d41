//! Resource providers, their inventories, traits, aggregates and usages.

use std::collections::{BTreeMap, BTreeSet};

use ::auth::Context;
use api_common::{ApiError, Microversion, QueryPairs};
use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{AppState, at_least, bad, body, required_generation};
use crate::{
    candidates::Request,
    model::{Inventory, InventoryInput, parse_resources},
    service::normalize_uuid,
    store::ProviderRow,
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/resource_providers", get(list).post(create))
        .route("/resource_providers/{uuid}", get(show).put(update).delete(delete))
        .route(
            "/resource_providers/{uuid}/inventories",
            get(inventories_list).put(inventories_replace).post(inventory_create).delete(inventories_delete),
        )
        .route(
            "/resource_providers/{uuid}/inventories/{class}",
            get(inventory_show).put(inventory_update).delete(inventory_delete),
        )
        .route("/resource_providers/{uuid}/traits", get(traits_list).put(traits_replace).delete(traits_delete))
        .route("/resource_providers/{uuid}/aggregates", get(aggregates_list).put(aggregates_replace))
        .route("/resource_providers/{uuid}/usages", get(usages))
}

pub(crate) fn provider_json(s: &AppState, p: &ProviderRow, v: Microversion) -> Value {
    let base = s.link(&format!("/resource_providers/{}", p.uuid));
    let mut links = vec![json!({"rel": "self", "href": base})];
    if v >= Microversion::new(1, 1) {
        links.push(json!({"rel": "inventories", "href": format!("{base}/inventories")}));
        links.push(json!({"rel": "usages", "href": format!("{base}/usages")}));
        links.push(json!({"rel": "aggregates", "href": format!("{base}/aggregates")}));
    }
    if v >= Microversion::new(1, 6) {
        links.push(json!({"rel": "traits", "href": format!("{base}/traits")}));
    }
    if v >= Microversion::new(1, 11) {
        links.push(json!({"rel": "allocations", "href": format!("{base}/allocations")}));
    }
    let mut out = json!({"uuid": p.uuid, "name": p.name, "generation": p.generation, "links": links});
    if v >= Microversion::new(1, 14) {
        out["parent_provider_uuid"] = json!(p.parent_uuid);
        out["root_provider_uuid"] = json!(p.root_uuid);
    }
    out
}

fn inventory_json(i: &Inventory) -> Value {
    json!({
        "total": i.total, "reserved": i.reserved, "min_unit": i.min_unit, "max_unit": i.max_unit,
        "step_size": i.step_size, "allocation_ratio": i.allocation_ratio,
    })
}

/// Parses `required=A,!B` into required and forbidden traits (`!` since 1.22).
pub(crate) fn parse_required(value: &str, v: Microversion) -> Result<(BTreeSet<String>, BTreeSet<String>), ApiError> {
    let mut required = BTreeSet::new();
    let mut forbidden = BTreeSet::new();
    for t in value.split(',').map(str::trim) {
        if t.is_empty() {
            return Err(bad(format!("Invalid query string parameters: Expected 'required' parameter value of the form: HW_CPU_X86_VMX,CUSTOM_MAGIC. Got: {value}")));
        }
        match t.strip_prefix('!') {
            Some(f) if v >= Microversion::new(1, 22) => {
                forbidden.insert(f.to_string());
            }
            _ => {
                required.insert(t.to_string());
            }
        }
    }
    Ok((required, forbidden))
}

/// Parses one `member_of` value (`uuid` or `in:uuid,uuid`).
pub(crate) fn parse_member_of(value: &str) -> Result<BTreeSet<String>, ApiError> {
    let list = value.strip_prefix("in:").unwrap_or(value);
    list.split(',')
        .map(|a| normalize_uuid(a.trim()).ok_or_else(|| bad(format!("Invalid query string parameters: Expected 'member_of' parameter to contain valid UUID(s). Got: {value}"))))
        .collect()
}

/// Unknown traits in a filter are a 400, as upstream.
pub(crate) async fn check_traits_exist(s: &AppState, names: impl Iterator<Item = &String>) -> Result<(), ApiError> {
    let known: BTreeSet<String> = s.placement.traits().await?.into_iter().collect();
    let missing: Vec<&str> = names.filter(|t| !known.contains(*t)).map(String::as_str).collect();
    if missing.is_empty() { Ok(()) } else { Err(bad(format!("No such trait(s): {}.", missing.join(", ")))) }
}

async fn list(State(s): State<AppState>, ctx: Context, Extension(v): Extension<Microversion>, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "placement:resource_providers:list")?;
    let mut allowed = vec!["name", "uuid"];
    if v >= Microversion::new(1, 3) {
        allowed.push("member_of");
    }
    if v >= Microversion::new(1, 4) {
        allowed.push("resources");
    }
    if v >= Microversion::new(1, 14) {
        allowed.push("in_tree");
    }
    if v >= Microversion::new(1, 18) {
        allowed.push("required");
    }
    if let Some((k, _)) = q.0.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        return Err(bad(format!("Invalid query string parameters: Additional properties are not allowed ('{k}' was unexpected)")));
    }
    let mut req = Request::default();
    if let Some(r) = q.get("resources") {
        req.resources = parse_resources(r)?;
        for (class, _) in &req.resources {
            if !s.placement.class_exists(class).await? {
                return Err(bad(format!("Invalid resource class in resources parameter: No such resource class {class}.")));
            }
        }
    }
    if let Some(r) = q.get("required") {
        let (required, forbidden) = parse_required(r, v)?;
        check_traits_exist(&s, required.iter().chain(&forbidden)).await?;
        req.required = required;
        req.forbidden = forbidden;
    }
    let member_of: Vec<&str> = q.get_all("member_of").collect();
    if member_of.len() > 1 && v < Microversion::new(1, 24) {
        return Err(bad("Invalid query string parameters: multiple member_of parameters are not supported before 1.24"));
    }
    for m in member_of {
        req.member_of.push(parse_member_of(m)?);
    }
    if let Some(t) = q.get("in_tree") {
        let t = normalize_uuid(t).ok_or_else(|| bad(format!("Invalid uuid value: {t}")))?;
        let root = s.placement.store().provider_get(&t).await?.map(|p| p.root_uuid);
        req.in_tree = Some(root.unwrap_or(t));
    }
    let uuid = match q.get("uuid") {
        Some(u) => Some(normalize_uuid(u).ok_or_else(|| bad(format!("Invalid uuid value: {u}")))?),
        None => None,
    };
    let snapshot = s.placement.snapshot().await?;
    let providers: Vec<Value> = snapshot
        .providers
        .iter()
        .filter(|p| q.get("name").is_none_or(|n| p.row.name == n))
        .filter(|p| uuid.as_deref().is_none_or(|u| p.row.uuid == u))
        .filter(|p| req.matches(p))
        .map(|p| provider_json(&s, &p.row, v))
        .collect();
    Ok(Json(json!({"resource_providers": providers})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderBody {
    name: String,
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    parent_provider_uuid: Option<String>,
}

async fn create(State(s): State<AppState>, ctx: Context, Extension(v): Extension<Microversion>, bytes: Bytes) -> Result<Response, ApiError> {
    s.enforce(&ctx, "placement:resource_providers:create")?;
    let b: ProviderBody = body(&bytes)?;
    if b.parent_provider_uuid.is_some() && v < Microversion::new(1, 14) {
        return Err(bad("JSON does not validate: Additional properties are not allowed ('parent_provider_uuid' was unexpected)"));
    }
    let parent = match b.parent_provider_uuid {
        Some(p) => Some(normalize_uuid(&p).ok_or_else(|| bad(format!("JSON does not validate: '{p}' is not a 'uuid'")))?),
        None => None,
    };
    let p = s.placement.provider_create(b.uuid, &b.name, parent).await?;
    let location = s.link(&format!("/resource_providers/{}", p.uuid));
    let location = HeaderValue::from_str(&location).map_err(|_| ApiError::internal("bad location"))?;
    if v >= Microversion::new(1, 20) {
        Ok((StatusCode::OK, [(header::LOCATION, location)], Json(provider_json(&s, &p, v))).into_response())
    } else {
        Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
    }
}

async fn show(State(s): State<AppState>, ctx: Context, Extension(v): Extension<Microversion>, Path(uuid): Path<String>) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "placement:resource_providers:show")?;
    let p = s.placement.provider(&uuid).await?;
    Ok(Json(provider_json(&s, &p, v)))
}

async fn update(State(s): State<AppState>, ctx: Context, Extension(v): Extension<Microversion>, Path(uuid): Path<String>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "placement:resource_providers:update")?;
    let b: Value = body(&bytes)?;
    let name = b.get("name").and_then(Value::as_str).ok_or_else(|| bad("JSON does not validate: 'name' is a required property"))?;
    let parent = match b.get("parent_provider_uuid") {
        Some(_) if v < Microversion::new(1, 14) => {
            return Err(bad("JSON does not validate: Additional properties are not allowed ('parent_provider_uuid' was unexpected)"));
        }
        Some(Value::String(p)) => Some(normalize_uuid(p).ok_or_else(|| bad(format!("JSON does not validate: '{p}' is not a 'uuid'")))?),
        Some(Value::Null) | None => None,
        Some(_) => return Err(bad("JSON does not validate: 'parent_provider_uuid' must be a uuid or null")),
    };
    let p = s.placement.provider_update(&uuid, name, parent, None).await?;
    Ok(Json(provider_json(&s, &p, v)))
}

async fn delete(State(s): State<AppState>, ctx: Context, Path(uuid): Path<String>) -> Result<StatusCode, ApiError> {
    s.enforce(&ctx, "placement:resource_providers:delete")?;
    s.placement.provider_delete(&uuid).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn inventories_body(s: &AppState, uuid: &str) -> Result<Value, ApiError> {
    let p = s.placement.provider(uuid).await?;
    let invs = s.placement.store().inventories_get(uuid).await?;
    let map: Map<String, Value> = invs.iter().map(|i| (i.resource_class.clone(), inventory_json(i))).collect();
    Ok(json!({"inventories": map, "resource_provider_generation": p.generation}))
}

async fn inventories_list(State(s): State<AppState>, ctx: Context, Path(uuid): Path<String>) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "placement:resource_providers:inventories:list")?;
    Ok(Json(inventories_body(&s, &uuid).await?))
}

async fn inventories_replace(State(s): State<AppState>, ctx: Context, Path(uuid): Path<String>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "placement:resource_providers:inventories:update")?;
    let b: Value = body(&bytes)?;
    let generation = required_generation(&b)?;
    let map = b.get("inventories").and_then(Value::as_object).ok_or_else(|| bad("JSON does not validate: 'inventories' is a required property"))?;
    let mut invs = Vec::new();
    for (class, value) in map {
        let input: InventoryInput = body(value.to_string().as_bytes())?;
        invs.push(input.into_inventory(class)?);
    }
    s.placement.inventories_set(&uuid, generation, invs).await?;
    Ok(Json(inventories_body(&s, &uuid).await?))
}

async fn inventories_delete(State(s): State<AppState>, ctx: Context, Extension(v): Extension<Microversion>, Path(uuid): Path<String>) -> Result<StatusCode, ApiError> {
    at_least(v, 1, 5)?;
    s.enforce(&ctx, "placement:resource_providers:inventories:delete")?;
    let p = s.placement.provider(&uuid).await?;
    s.placement.inventories_set(&uuid, p.generation, Vec::new()).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn single_inventory(i: &Inventory, generation: i64) -> Value {
    let mut v = inventory_json(i);
    v["resource_provider_generation"] = json!(generation);
    v
}

async fn inventory_create(State(s): State<AppState>, ctx: Context, Path(uuid): Path<String>, bytes: Bytes) -> Result<Response, ApiError> {
    s.enforce(&ctx, "placement:resource_providers:inventories:create")?;
    let mut b: Value = body(&bytes)?;
    let class = b
        .as_object_mut()
        .and_then(|o| o.remove("resource_class"))
        .and_then(|c| c.as_str().map(str::to_string))
        .ok_or_else(|| bad("JSON does not validate: 'resource_class' is a required property"))?;
    let input: InventoryInput = body(b.to_string().as_bytes())?;
    let inv = input.into_inventory(&class)?;
    let p = s.placement.provider(&uuid).await?;
    if s.placement.store().inventories_get(&uuid).await?.iter().any(|i| i.resource_class == class) {
        return Err(ApiError::conflict(format!("Update conflict: Inventory for {class} on resource provider {uuid} already exists."))
            .with_code(crate::error::code::UNDEFINED));
    }
    let generation = s.placement.inventory_put(&uuid, p.generation, inv.clone()).await?;
    let location = HeaderValue::from_str(&s.link(&format!("/resource_providers/{uuid}/inventories/{class}")))
        .map_err(|_| ApiError::internal("bad location"))?;
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(single_inventory(&inv, generation))).into_response())
}

async fn inventory_show(State(s): State<AppState>, ctx: Context, Path((uuid, class)): Path<(String, String)>) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "placement:resource_providers:inventories:show")?;
    let p = s.placement.provider(&uuid).await?;
    let invs = s.placement.store().inventories_get(&uuid).await?;
    let inv = invs
        .iter()
        .find(|i| i.resource_class == class)
        .ok_or_else(|| ApiError::not_found(format!("No inventory of class {class} for {uuid}")).with_code(crate::error::code::UNDEFINED))?;
    Ok(Json(single_inventory(inv, p.generation)))
}

async fn inventory_update(State(s): State<AppState>, ctx: Context, Path((uuid, class)): Path<(String, String)>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "placement:resource_providers:inventories:update")?;
    let b: Value = body(&bytes)?;
    let generation = required_generation(&b)?;
    let input: InventoryInput = body(&bytes)?;
    let inv = input.into_inventory(&class)?;
    let generation = s.placement.inventory_put(&uuid, generation, inv.clone()).await?;
    Ok(Json(single_inventory(&inv, generation)))
}

async fn inventory_delete(State(s): State<AppState>, ctx: Context, Path((uuid, class)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    s.enforce(&ctx, "placement:resource_providers:inventories:delete")?;
    s.placement.inventory_delete(&uuid, &class).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn traits_list(State(s): State<AppState>, ctx: Context, Extension(v): Extension<Microversion>, Path(uuid): Path<String>) -> Result<Json<Value>, ApiError> {
    at_least(v, 1, 6)?;
    s.enforce(&ctx, "placement:resource_providers:traits:list")?;
    let p = s.placement.provider(&uuid).await?;
    let traits = s.placement.store().provider_traits(&uuid).await?;
    Ok(Json(json!({"traits": traits, "resource_provider_generation": p.generation})))
}

async fn traits_replace(State(s): State<AppState>, ctx: Context, Extension(v): Extension<Microversion>, Path(uuid): Path<String>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    at_least(v, 1, 6)?;
    s.enforce(&ctx, "placement:resource_providers:traits:update")?;
    let b: Value = body(&bytes)?;
    let generation = required_generation(&b)?;
    let traits: BTreeSet<String> = b
        .get("traits")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("JSON does not validate: 'traits' is a required property"))?
        .iter()
        .map(|t| t.as_str().map(str::to_string).ok_or_else(|| bad("JSON does not validate: traits must be strings")))
        .collect::<Result<_, _>>()?;
    let generation = s.placement.provider_traits_set(&uuid, generation, traits).await?;
    let traits = s.placement.store().provider_traits(&uuid).await?;
    Ok(Json(json!({"traits": traits, "resource_provider_generation": generation})))
}

async fn traits_delete(State(s): State<AppState>, ctx: Context, Extension(v): Extension<Microversion>, Path(uuid): Path<String>) -> Result<StatusCode, ApiError> {
    at_least(v, 1, 6)?;
    s.enforce(&ctx, "placement:resource_providers:traits:delete")?;
    let p = s.placement.provider(&uuid).await?;
    s.placement.provider_traits_set(&uuid, p.generation, BTreeSet::new()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn aggregates_body(s: &AppState, uuid: &str, v: Microversion) -> Result<Value, ApiError> {
    let p = s.placement.provider(uuid).await?;
    let aggs = s.placement.store().provider_aggregates(uuid).await?;
    let mut out = json!({"aggregates": aggs});
    if v >= Microversion::new(1, 19) {
        out["resource_provider_generation"] = json!(p.generation);
    }
    Ok(out)
}

async fn aggregates_list(State(s): State<AppState>, ctx: Context, Extension(v): Extension<Microversion>, Path(uuid): Path<String>) -> Result<Json<Value>, ApiError> {
    at_least(v, 1, 1)?;
    s.enforce(&ctx, "placement:resource_providers:aggregates:list")?;
    Ok(Json(aggregates_body(&s, &uuid, v).await?))
}

async fn aggregates_replace(State(s): State<AppState>, ctx: Context, Extension(v): Extension<Microversion>, Path(uuid): Path<String>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    at_least(v, 1, 1)?;
    s.enforce(&ctx, "placement:resource_providers:aggregates:update")?;
    let b: Value = body(&bytes)?;
    let (list, generation) = if v >= Microversion::new(1, 19) {
        (b.get("aggregates").cloned(), Some(required_generation(&b)?))
    } else {
        (Some(b), None)
    };
    let list = list.and_then(|l| l.as_array().cloned()).ok_or_else(|| bad("JSON does not validate: aggregates must be a list of uuids"))?;
    let aggs: BTreeSet<String> = list
        .iter()
        .map(|a| a.as_str().and_then(normalize_uuid).ok_or_else(|| bad(format!("JSON does not validate: {a} is not a 'uuid'"))))
        .collect::<Result<_, _>>()?;
    s.placement.provider_aggregates_set(&uuid, generation, &aggs).await?;
    Ok(Json(aggregates_body(&s, &uuid, v).await?))
}

async fn usages(State(s): State<AppState>, ctx: Context, Path(uuid): Path<String>) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "placement:resource_providers:usages")?;
    let (p, used) = s.placement.provider_usages(&uuid).await?;
    let mut all: BTreeMap<String, i64> =
        s.placement.store().inventories_get(&uuid).await?.into_iter().map(|i| (i.resource_class, 0)).collect();
    all.extend(used);
    Ok(Json(json!({"usages": all, "resource_provider_generation": p.generation})))
}
