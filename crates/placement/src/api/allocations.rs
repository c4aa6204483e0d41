//! Allocations per consumer (`/allocations/{consumer}`, `POST /allocations`), per provider, usages, and
//! `GET /allocation_candidates`.

use std::collections::{BTreeMap, BTreeSet};

use ::auth::Context;
use api_common::{ApiError, Microversion, QueryPairs};
use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
};
use serde_json::{Map, Value, json};

use super::{
    AppState, at_least, bad, body,
    providers::{check_traits_exist, parse_member_of, parse_required},
};
use crate::{
    candidates::Request,
    error::code,
    model::parse_resources,
    service::normalize_uuid,
    store::ConsumerWrite,
};

/// Project and user recorded for consumers written before 1.8 (upstream's `incomplete_consumer_*_id`).
const INCOMPLETE_CONSUMER: &str = "00000000-0000-0000-0000-000000000000";

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/allocations", post(post_allocations))
        .route("/allocations/{consumer}", get(show).put(put).delete(delete))
        .route("/resource_providers/{uuid}/allocations", get(on_provider))
        .route("/usages", get(usages))
        .route("/allocation_candidates", get(candidates))
}

fn v(major_minor: (u32, u32)) -> Microversion {
    Microversion::new(major_minor.0, major_minor.1)
}

fn as_amounts(resources: &Value, provider: &str) -> Result<BTreeMap<String, i64>, ApiError> {
    let obj = resources.as_object().ok_or_else(|| bad(format!("JSON does not validate: resources of {provider} must be an object")))?;
    obj.iter()
        .map(|(class, n)| {
            n.as_i64().map(|n| (class.clone(), n)).ok_or_else(|| bad(format!("JSON does not validate: {n} is not of type 'integer'")))
        })
        .collect()
}

/// Parses one consumer's allocation body (any microversion's shape) into a write.
fn parse_consumer(consumer: &str, b: &Value, mv: Microversion) -> Result<ConsumerWrite, ApiError> {
    let consumer = normalize_uuid(consumer).ok_or_else(|| bad(format!("Malformed consumer_uuid: {consumer}")))?;
    let mut allocations: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    let raw = b.get("allocations").ok_or_else(|| bad("JSON does not validate: 'allocations' is a required property"))?;
    if mv >= v((1, 12)) {
        let obj = raw.as_object().ok_or_else(|| bad("JSON does not validate: 'allocations' must be an object"))?;
        for (rp, entry) in obj {
            let rp_uuid = normalize_uuid(rp).ok_or_else(|| bad(format!("JSON does not validate: '{rp}' is not a 'uuid'")))?;
            let resources = entry.get("resources").ok_or_else(|| bad("JSON does not validate: 'resources' is a required property"))?;
            allocations.insert(rp_uuid, as_amounts(resources, rp)?);
        }
    } else {
        let list = raw.as_array().ok_or_else(|| bad("JSON does not validate: 'allocations' must be a list"))?;
        for entry in list {
            let rp = entry
                .pointer("/resource_provider/uuid")
                .and_then(Value::as_str)
                .and_then(normalize_uuid)
                .ok_or_else(|| bad("JSON does not validate: 'resource_provider' needs a 'uuid'"))?;
            let resources = entry.get("resources").ok_or_else(|| bad("JSON does not validate: 'resources' is a required property"))?;
            allocations.entry(rp.clone()).or_default().extend(as_amounts(resources, &rp)?);
        }
    }
    if allocations.is_empty() && mv < v((1, 28)) {
        return Err(bad("JSON does not validate: 'allocations' does not have enough properties"));
    }
    let ids = |key: &str| -> Result<String, ApiError> {
        match b.get(key) {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => Ok(s.clone()),
            Some(_) => Err(bad(format!("JSON does not validate: '{key}' must be a non-empty string"))),
            None if mv >= v((1, 8)) => Err(bad(format!("JSON does not validate: '{key}' is a required property"))),
            None => Ok(INCOMPLETE_CONSUMER.to_string()),
        }
    };
    let expected_generation = if mv >= v((1, 28)) {
        match b.get("consumer_generation") {
            Some(Value::Null) => Some(None),
            Some(g) => Some(Some(g.as_i64().ok_or_else(|| bad("JSON does not validate: 'consumer_generation' must be an integer or null"))?)),
            None => return Err(bad("JSON does not validate: 'consumer_generation' is a required property")),
        }
    } else {
        None
    };
    Ok(ConsumerWrite { consumer_uuid: consumer, project_id: ids("project_id")?, user_id: ids("user_id")?, expected_generation, allocations })
}

async fn put(State(s): State<AppState>, ctx: Context, Extension(mv): Extension<Microversion>, Path(consumer): Path<String>, bytes: Bytes) -> Result<StatusCode, ApiError> {
    s.enforce(&ctx, "placement:allocations:update")?;
    let b: Value = body(&bytes)?;
    let write = parse_consumer(&consumer, &b, mv)?;
    s.placement.allocations_write(vec![write]).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn post_allocations(State(s): State<AppState>, ctx: Context, Extension(mv): Extension<Microversion>, bytes: Bytes) -> Result<StatusCode, ApiError> {
    at_least(mv, 1, 13)?;
    s.enforce(&ctx, "placement:allocations:manage")?;
    let b: Value = body(&bytes)?;
    let obj = b.as_object().filter(|o| !o.is_empty()).ok_or_else(|| bad("JSON does not validate: the body must map consumer uuids to allocations"))?;
    let writes = obj.iter().map(|(consumer, entry)| parse_consumer(consumer, entry, mv)).collect::<Result<Vec<_>, _>>()?;
    s.placement.allocations_write(writes).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn show(State(s): State<AppState>, ctx: Context, Extension(mv): Extension<Microversion>, Path(consumer): Path<String>) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "placement:allocations:list")?;
    let consumer = normalize_uuid(&consumer).unwrap_or(consumer);
    let rows = s.placement.allocations_of_consumer(&consumer).await?;
    let mut by_provider: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for r in &rows {
        by_provider.entry(r.provider_uuid.clone()).or_default().insert(r.resource_class.clone(), json!(r.used));
    }
    let mut allocations = Map::new();
    for (rp, resources) in by_provider {
        let generation = s.placement.store().provider_get(&rp).await?.map(|p| p.generation);
        allocations.insert(rp, json!({"generation": generation, "resources": resources}));
    }
    let mut out = json!({"allocations": allocations});
    if !allocations_empty(&out)
        && mv >= v((1, 12))
        && let Some(c) = s.placement.consumer(&consumer).await?
    {
        out["project_id"] = json!(c.project_id);
        out["user_id"] = json!(c.user_id);
        if mv >= v((1, 28)) {
            out["consumer_generation"] = json!(c.generation);
        }
    }
    Ok(Json(out))
}

fn allocations_empty(v: &Value) -> bool {
    v["allocations"].as_object().is_none_or(Map::is_empty)
}

async fn delete(State(s): State<AppState>, ctx: Context, Path(consumer): Path<String>) -> Result<StatusCode, ApiError> {
    s.enforce(&ctx, "placement:allocations:delete")?;
    let consumer = normalize_uuid(&consumer).unwrap_or(consumer);
    let Some(c) = s.placement.consumer(&consumer).await? else {
        return Err(ApiError::not_found(format!("No allocations for consumer '{consumer}'")).with_code(code::UNDEFINED));
    };
    let write = ConsumerWrite {
        consumer_uuid: consumer,
        project_id: c.project_id,
        user_id: c.user_id,
        expected_generation: None,
        allocations: BTreeMap::new(),
    };
    s.placement.allocations_write(vec![write]).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn on_provider(State(s): State<AppState>, ctx: Context, Path(uuid): Path<String>) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "placement:resource_providers:allocations:list")?;
    let (p, rows) = s.placement.allocations_on_provider(&uuid).await?;
    let mut by_consumer: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for r in rows {
        by_consumer.entry(r.consumer_uuid).or_default().insert(r.resource_class, json!(r.used));
    }
    let allocations: Map<String, Value> = by_consumer.into_iter().map(|(c, res)| (c, json!({"resources": res}))).collect();
    Ok(Json(json!({"allocations": allocations, "resource_provider_generation": p.generation})))
}

async fn usages(State(s): State<AppState>, ctx: Context, Extension(mv): Extension<Microversion>, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    at_least(mv, 1, 9)?;
    s.enforce(&ctx, "placement:usages")?;
    let project = q.get("project_id").ok_or_else(|| bad("Invalid query string parameters: 'project_id' is a required property"))?;
    let usages = s.placement.store().project_usages(project, q.get("user_id")).await?;
    Ok(Json(json!({"usages": usages})))
}

/// Parses the candidate query: the unnumbered group and (1.25+) numbered groups, merged into one request.
async fn candidate_request(s: &AppState, q: &QueryPairs, mv: Microversion) -> Result<(Request, Option<usize>), ApiError> {
    let mut req = Request::default();
    let mut groups: BTreeSet<String> = BTreeSet::new();
    let mut resource_groups = 0;
    for (key, value) in &q.0 {
        let (base, suffix) = split_suffix(key);
        if !suffix.is_empty() && mv < v((1, 25)) {
            return Err(bad(format!("Invalid query string parameters: Additional properties are not allowed ('{key}' was unexpected)")));
        }
        match base {
            "resources" => {
                if !groups.insert(format!("r{suffix}")) {
                    return Err(bad(format!("Invalid query string parameters: '{key}' given more than once")));
                }
                if !suffix.is_empty() {
                    resource_groups += 1;
                }
                for (class, amount) in parse_resources(value)? {
                    if !s.placement.class_exists(&class).await? {
                        return Err(bad(format!("Invalid resource class in resources parameter: No such resource class {class}.")));
                    }
                    match req.resources.iter_mut().find(|(c, _)| *c == class) {
                        Some((_, n)) => *n += amount,
                        None => req.resources.push((class, amount)),
                    }
                }
            }
            "required" if mv >= v((1, 17)) => {
                let (required, forbidden) = parse_required(value, mv)?;
                check_traits_exist(s, required.iter().chain(&forbidden)).await?;
                req.required.extend(required);
                req.forbidden.extend(forbidden);
            }
            "member_of" if mv >= v((1, 21)) => {
                if suffix.is_empty() && mv < v((1, 24)) && !groups.insert("member_of".into()) {
                    return Err(bad("Invalid query string parameters: multiple member_of parameters are not supported before 1.24"));
                }
                req.member_of.push(parse_member_of(value)?);
            }
            "limit" if mv >= v((1, 16)) && suffix.is_empty() => {}
            "group_policy" if mv >= v((1, 25)) && suffix.is_empty() => {
                if value != "none" && value != "isolate" {
                    return Err(bad(format!("Invalid query string parameters: '{value}' is not one of ['none', 'isolate']")));
                }
            }
            _ => return Err(bad(format!("Invalid query string parameters: Additional properties are not allowed ('{key}' was unexpected)"))),
        }
    }
    if req.resources.is_empty() {
        return Err(bad("Invalid query string parameters: 'resources' is a required property"));
    }
    if resource_groups > 1 && !q.contains("group_policy") {
        return Err(bad(
            "The \"group_policy\" parameter is required when specifying more than one \"resources{N}\" parameter.",
        ));
    }
    let limit = match q.get("limit") {
        Some(l) if mv >= v((1, 16)) => {
            Some(l.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| bad(format!("Invalid query string parameters: '{l}' does not match '^[1-9][0-9]*$'")))?)
        }
        _ => None,
    };
    Ok((req, limit))
}

fn split_suffix(key: &str) -> (&str, &str) {
    for base in ["resources", "required", "member_of"] {
        if let Some(rest) = key.strip_prefix(base)
            && (rest.is_empty() || rest.bytes().all(|b| b.is_ascii_digit()))
        {
            return (base, rest);
        }
    }
    (key, "")
}

async fn candidates(State(s): State<AppState>, ctx: Context, Extension(mv): Extension<Microversion>, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    at_least(mv, 1, 10)?;
    s.enforce(&ctx, "placement:allocation_candidates:list")?;
    let (req, limit) = candidate_request(&s, &q, mv).await?;
    let (snapshot, picked) = s.placement.allocation_candidates(&req, limit).await?;
    let mut requests = Vec::with_capacity(picked.len());
    let mut summaries = Map::new();
    for i in picked {
        let Some(p) = snapshot.providers.get(i) else { continue };
        let resources: Map<String, Value> = req.resources.iter().map(|(c, n)| (c.clone(), json!(n))).collect();
        if mv >= v((1, 12)) {
            requests.push(json!({"allocations": {p.row.uuid.clone(): {"resources": resources}}}));
        } else {
            requests.push(json!({"allocations": [{"resource_provider": {"uuid": p.row.uuid}, "resources": resources}]}));
        }
        let mut summary_resources = Map::new();
        for (class, inv) in &p.inventories {
            if mv >= v((1, 27)) || req.resources.iter().any(|(c, _)| c == class) {
                summary_resources.insert(
                    class.clone(),
                    json!({"capacity": inv.capacity(), "used": p.usages.get(class).copied().unwrap_or(0)}),
                );
            }
        }
        let mut summary = json!({"resources": summary_resources});
        if mv >= v((1, 17)) {
            summary["traits"] = json!(p.traits);
        }
        summaries.insert(p.row.uuid.clone(), summary);
    }
    Ok(Json(json!({"allocation_requests": requests, "provider_summaries": summaries})))
}
