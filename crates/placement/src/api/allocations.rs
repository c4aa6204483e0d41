//! Allocations per consumer (`/allocations/{consumer}`, `POST /allocations`), per provider, usages, and
//! `GET /allocation_candidates`.

use std::collections::{BTreeMap, BTreeSet};

use ::auth::Context;
use api_common::{ApiError, Microversion, QueryPairs};
use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Serialize, Serializer, ser::SerializeMap};
use serde_json::{Map, Value, json};

use super::{
    AppState, at_least, bad, body,
    providers::{check_traits_exist, parse_member_of, parse_required},
};
use crate::{
    candidates::{ProviderView, Request, Snapshot},
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

async fn candidates(State(s): State<AppState>, ctx: Context, Extension(mv): Extension<Microversion>, q: QueryPairs) -> Result<Response, ApiError> {
    at_least(mv, 1, 10)?;
    s.enforce(&ctx, "placement:allocation_candidates:list")?;
    let (req, limit) = candidate_request(&s, &q, mv).await?;
    let (snapshot, picked) = s.placement.allocation_candidates(&req, limit).await?;
    let answer = CandidatesAnswer::new(&snapshot, &picked, &req, mv);
    let body = serde_json::to_vec(&answer).map_err(|e| ApiError::internal(format!("allocation candidates: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The body of `GET /allocation_candidates`, written straight from the snapshot: with upstream's default limit of
/// 1,000 it holds a thousand requests and summaries, and no intermediate JSON tree is built for them. Objects
/// keep the key order of a `serde_json::Map` (sorted), as the other answers have it.
struct CandidatesAnswer<'a> {
    providers: Vec<&'a ProviderView>,
    /// The requested amounts, sorted by class.
    resources: Vec<(&'a str, i64)>,
    mv: Microversion,
}

impl<'a> CandidatesAnswer<'a> {
    fn new(snapshot: &'a Snapshot, picked: &[usize], req: &'a Request, mv: Microversion) -> Self {
        let providers = picked.iter().filter_map(|i| snapshot.providers.get(*i)).collect();
        let mut resources: Vec<(&str, i64)> = req.resources.iter().map(|(c, n)| (c.as_str(), *n)).collect();
        resources.sort_unstable();
        CandidatesAnswer { providers, resources, mv }
    }
}

impl Serialize for CandidatesAnswer<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut top = ser.serialize_map(Some(2))?;
        top.serialize_entry("allocation_requests", &AllocationRequests(self))?;
        top.serialize_entry("provider_summaries", &ProviderSummaries(self))?;
        top.end()
    }
}

/// `{"CLASS": amount, ...}`
struct Amounts<'a>(&'a [(&'a str, i64)]);

impl Serialize for Amounts<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_map(self.0.iter().map(|(c, n)| (*c, *n)))
    }
}

struct AllocationRequests<'a>(&'a CandidatesAnswer<'a>);

impl Serialize for AllocationRequests<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let a = self.0;
        ser.collect_seq(a.providers.iter().map(|p| AllocationRequest { uuid: &p.row.uuid, resources: Amounts(&a.resources), mv: a.mv }))
    }
}

/// One allocation request: a dict keyed by provider (1.12+) or a list of provider/resources pairs.
struct AllocationRequest<'a> {
    uuid: &'a str,
    resources: Amounts<'a>,
    mv: Microversion,
}

impl Serialize for AllocationRequest<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Resources<'a> {
            resources: &'a Amounts<'a>,
        }
        #[derive(Serialize)]
        struct Uuid<'a> {
            uuid: &'a str,
        }
        #[derive(Serialize)]
        struct Listed<'a> {
            resource_provider: Uuid<'a>,
            resources: &'a Amounts<'a>,
        }
        let mut m = ser.serialize_map(Some(1))?;
        if self.mv >= v((1, 12)) {
            m.serialize_entry("allocations", &OneEntry(self.uuid, Resources { resources: &self.resources }))?;
        } else {
            m.serialize_entry("allocations", &[Listed { resource_provider: Uuid { uuid: self.uuid }, resources: &self.resources }])?;
        }
        m.end()
    }
}

/// A JSON object of one entry.
struct OneEntry<'a, T>(&'a str, T);

impl<T: Serialize> Serialize for OneEntry<'_, T> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut m = ser.serialize_map(Some(1))?;
        m.serialize_entry(self.0, &self.1)?;
        m.end()
    }
}

struct ProviderSummaries<'a>(&'a CandidatesAnswer<'a>);

impl Serialize for ProviderSummaries<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let a = self.0;
        // Snapshot order is uuid order, so the keys come out sorted; a provider picked twice is written once.
        let mut m = ser.serialize_map(None)?;
        let mut last: Option<&str> = None;
        for p in &a.providers {
            if last == Some(p.row.uuid.as_str()) {
                continue;
            }
            last = Some(&p.row.uuid);
            m.serialize_entry(&p.row.uuid, &ProviderSummary { p, answer: a })?;
        }
        m.end()
    }
}

/// `{"resources": {CLASS: {"capacity": n, "used": n}, ...}, "traits": [...]}` (traits 1.17+; every class of the
/// provider 1.27+, the requested ones before).
struct ProviderSummary<'a> {
    p: &'a ProviderView,
    answer: &'a CandidatesAnswer<'a>,
}

impl Serialize for ProviderSummary<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut m = ser.serialize_map(Some(2))?;
        m.serialize_entry("resources", &SummaryResources { p: self.p, answer: self.answer })?;
        if self.answer.mv >= v((1, 17)) {
            m.serialize_entry("traits", &self.p.traits)?;
        }
        m.end()
    }
}

struct SummaryResources<'a> {
    p: &'a ProviderView,
    answer: &'a CandidatesAnswer<'a>,
}

impl Serialize for SummaryResources<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Usage {
            capacity: i64,
            used: i64,
        }
        let (p, a) = (self.p, self.answer);
        let all = a.mv >= v((1, 27));
        ser.collect_map(
            p.inventories
                .iter()
                .filter(|(class, _)| all || a.resources.iter().any(|(c, _)| c == class))
                .map(|(class, inv)| (class, Usage { capacity: inv.capacity(), used: p.usages.get(class).copied().unwrap_or(0) })),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{model::Inventory, store::ProviderRow};

    fn provider(uuid: &str, classes: &[(&str, i64, i64)], traits: &[&str]) -> ProviderView {
        let mut p = ProviderView::new(ProviderRow {
            uuid: uuid.into(),
            name: uuid.into(),
            generation: 3,
            parent_uuid: None,
            root_uuid: uuid.into(),
            updated_at: 0,
        });
        for (class, total, used) in classes {
            p.inventories.insert(
                class.to_string(),
                Inventory {
                    resource_class: class.to_string(),
                    total: *total,
                    reserved: 1,
                    min_unit: 1,
                    max_unit: *total,
                    step_size: 1,
                    allocation_ratio: 1.5,
                },
            );
            p.usages.insert(class.to_string(), *used);
        }
        p.traits = traits.iter().map(|t| t.to_string()).collect();
        p
    }

    /// The answer as a tree of `serde_json` maps, as it was built before it was serialized from the snapshot.
    fn as_tree(snapshot: &Snapshot, picked: &[usize], req: &Request, mv: Microversion) -> Value {
        let mut requests = Vec::new();
        let mut summaries = Map::new();
        for i in picked {
            let p = &snapshot.providers[*i];
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
        json!({"allocation_requests": requests, "provider_summaries": summaries})
    }

    #[test]
    fn candidates_answer_matches_every_microversions_shape() {
        let snapshot = Snapshot {
            providers: vec![
                provider("a", &[("DISK_GB", 100, 10), ("MEMORY_MB", 4096, 512), ("VCPU", 8, 2)], &["HW_CPU_X86_AVX2", "CUSTOM_B"]),
                provider("b", &[("MEMORY_MB", 2048, 0), ("VCPU", 4, 0)], &[]),
                provider("c", &[("VCPU", 4, 4)], &[]),
            ],
        };
        // Requested out of class order, as a query string may give them.
        let req = Request { resources: vec![("VCPU".into(), 1), ("MEMORY_MB".into(), 256)], ..Default::default() };
        for mv in [(1, 10), (1, 12), (1, 17), (1, 27), (1, 28), (1, 36)] {
            let mv = v(mv);
            for picked in [vec![], vec![1], vec![0, 1]] {
                let written = serde_json::to_vec(&CandidatesAnswer::new(&snapshot, &picked, &req, mv)).unwrap();
                let tree = as_tree(&snapshot, &picked, &req, mv);
                // Same bytes, key order included.
                assert_eq!(String::from_utf8(written).unwrap(), tree.to_string(), "{mv:?} {picked:?}");
            }
        }
    }
}
