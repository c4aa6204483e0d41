//! The hosts side of the API: compute services (`/os-services`, up or down from heartbeats, enable/disable),
//! hypervisors (`/os-hypervisors`), availability zones (`/os-availability-zone`, from host aggregates) and the
//! `/os-hosts` (removed at 2.43); integer ids before 2.53, uuids from it.

use ::auth::Context;
use api_common::{ApiError, Microversion, QueryPairs};
use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, put},
};
use serde_json::{Value, json};

use super::{AppState, body, naive_time, only, v};
use crate::{
    aggregates::HostZones,
    store::{NodeRow, ServiceRow},
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/os-services", get(services))
        .route("/v2.1/os-services/{action}", put(service_update).delete(service_delete))
        .route("/v2.1/os-hypervisors", get(hypervisors))
        .route("/v2.1/os-hypervisors/detail", get(hypervisors_detail))
        .route("/v2.1/os-hypervisors/statistics", get(statistics))
        .route("/v2.1/os-hypervisors/{id}", get(hypervisor_show))
        .route("/v2.1/os-hypervisors/{id}/uptime", get(hypervisor_uptime))
        // 2.53 replaced these by the `hypervisor_hostname_pattern` and `with_servers` parameters.
        .merge(super::until(
            Router::new()
                .route("/v2.1/os-hypervisors/{pattern}/search", get(hypervisor_search))
                .route("/v2.1/os-hypervisors/{pattern}/servers", get(hypervisor_servers)),
            v(53),
        ))
        .route("/v2.1/os-availability-zone", get(zones))
        .route("/v2.1/os-availability-zone/detail", get(zones_detail))
        .merge(super::until(
            Router::new()
                .route("/v2.1/os-hosts", get(hosts_list))
                .route("/v2.1/os-hosts/{host}", get(host_show).put(host_update))
                .route("/v2.1/os-hosts/{host}/{action}", get(host_power)),
            v(43),
        ))
}

fn up(s: &AppState, svc: &ServiceRow) -> bool {
    s.compute.conductor().map(|c| c.is_up(svc)).unwrap_or(false)
}

/// The zone of a service: its host's (aggregates, else the default zone) for compute services, `internal` for
/// the others (upstream's `internal_service_availability_zone`).
fn zone(zones: &HostZones, svc: &ServiceRow) -> String {
    if svc.binary == compute_rpc::COMPUTE_BINARY { zones.of(&svc.host).to_string() } else { INTERNAL_ZONE.into() }
}

const INTERNAL_ZONE: &str = "internal";

/// The service representation: ids are uuids from 2.53, `forced_down` is shown from 2.11.
fn service_view(s: &AppState, mv: Microversion, zones: &HostZones, svc: &ServiceRow) -> Value {
    let mut out = json!({
        "id": if mv >= v(53) { json!(svc.uuid) } else { json!(svc.id) },
        "binary": svc.binary,
        "host": svc.host,
        "zone": zone(zones, svc),
        "status": if svc.disabled { "disabled" } else { "enabled" },
        "state": if up(s, svc) && !svc.forced_down { "up" } else { "down" },
        "updated_at": svc.last_seen_up.map(naive_time),
        "disabled_reason": svc.disabled_reason,
    });
    if mv >= v(11) {
        out["forced_down"] = json!(svc.forced_down);
    }
    out
}

async fn services(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-services:list")?;
    let all = s.compute.store().service_list().await?;
    let zones = s.compute.host_zones().await?;
    let list: Vec<Value> = all
        .iter()
        .filter(|svc| q.get("host").is_none_or(|h| h == svc.host))
        .filter(|svc| q.get("binary").is_none_or(|b| b == svc.binary))
        .map(|svc| service_view(&s, mv, &zones, svc))
        .collect();
    Ok(Json(json!({"services": list})))
}

fn bool_field(m: &serde_json::Map<String, Value>, k: &str) -> Result<Option<bool>, ApiError> {
    match m.get(k) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v @ Value::String(t)) => api_common::query::parse_bool(t)
            .map(Some)
            .ok_or_else(|| super::invalid(k, v, &format!("{v} is not of type 'boolean'"))),
        Some(other) => Err(super::invalid(k, other, &format!("{other} is not of type 'boolean'"))),
    }
}

fn disabled_reason(m: &serde_json::Map<String, Value>) -> Result<Option<String>, ApiError> {
    match m.get("disabled_reason") {
        None => Ok(None),
        Some(Value::String(r)) if !r.trim().is_empty() && r.chars().count() <= 255 => Ok(Some(r.clone())),
        Some(_) => Err(ApiError::bad_request(
            "The string containing the reason for disabling the service contains invalid characters or is too long.",
        )),
    }
}

async fn forget_hosts(s: &AppState) {
    if let Ok(c) = s.compute.conductor() {
        c.forget_hosts().await;
    }
}

/// `PUT /os-services/enable|disable|disable-log-reason|force-down` with `{"host", "binary"}` before 2.53;
/// `PUT /os-services/{uuid}` with `status`, `disabled_reason` and `forced_down` from 2.53.
async fn service_update(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(action): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-services:update")?;
    let b = body(&bytes)?;
    let m = b.as_object().cloned().unwrap_or_default();
    if mv >= v(53) {
        return service_update_by_uuid(&s, mv, &action, &m).await;
    }
    let mut allowed = vec!["host", "binary", "disabled_reason"];
    if action == "force-down" {
        allowed.push("forced_down");
    }
    only(&m, &allowed)?;
    let field = |k: &str| -> Result<String, ApiError> {
        m.get(k).and_then(Value::as_str).map(str::to_string).ok_or_else(|| {
            ApiError::bad_request(format!("Invalid input for field/attribute {k}. Value: None. '{k}' is a required property"))
        })
    };
    let (host, binary) = (field("host")?, field("binary")?);
    let find = || async {
        s.compute
            .store()
            .service_find(&host, &binary)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("Service {binary} on host {host} not found.")))
    };
    if action == "force-down" && mv >= v(11) {
        let forced = bool_field(&m, "forced_down")?.ok_or_else(|| {
            ApiError::bad_request(
                "Invalid input for field/attribute forced_down. Value: None. 'forced_down' is a required property",
            )
        })?;
        let svc = find().await?;
        s.compute.store().service_set(&svc.uuid, None, Some(forced)).await?;
        forget_hosts(&s).await;
        return Ok(Json(json!({"service": {"host": host, "binary": binary, "forced_down": forced}})));
    }
    let (disabled, reason) = match action.as_str() {
        "enable" => (false, None),
        "disable" => (true, None),
        "disable-log-reason" => {
            let reason = disabled_reason(&m)?.ok_or_else(|| {
                ApiError::bad_request("The string containing the reason for disabling the service contains invalid characters or is too long.")
            })?;
            (true, Some(reason))
        }
        other => return Err(ApiError::not_found(format!("Unknown action {other}"))),
    };
    let svc = find().await?;
    s.compute.store().service_set(&svc.uuid, Some((disabled, reason.clone())), None).await?;
    forget_hosts(&s).await;
    let mut out = json!({"host": host, "binary": binary, "status": if disabled { "disabled" } else { "enabled" }});
    if let Some(r) = reason {
        out["disabled_reason"] = json!(r);
    }
    Ok(Json(json!({"service": out})))
}

/// `PUT /os-services/{uuid}` (2.53): the full service comes back.
async fn service_update_by_uuid(
    s: &AppState,
    mv: Microversion,
    id: &str,
    m: &serde_json::Map<String, Value>,
) -> Result<Json<Value>, ApiError> {
    only(m, &["status", "disabled_reason", "forced_down"])?;
    let status = match m.get("status") {
        None => None,
        Some(Value::String(t)) if t == "enabled" || t == "disabled" => Some(t.as_str()),
        Some(other) => {
            return Err(super::invalid("status", other, &format!("{other} is not one of ['enabled', 'disabled']")));
        }
    };
    let reason = disabled_reason(m)?;
    let forced = bool_field(m, "forced_down")?;
    if reason.is_some() && status != Some("disabled") {
        return Err(ApiError::bad_request(
            "Specifying 'disabled_reason' with status other than 'disabled' is invalid.",
        ));
    }
    if status.is_none() && forced.is_none() {
        return Err(ApiError::bad_request(
            "No updates were requested. Fields 'status' or 'forced_down' should be specified.",
        ));
    }
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(ApiError::bad_request(format!("Invalid uuid {id}")));
    }
    let svc = s
        .compute
        .store()
        .service_list()
        .await?
        .into_iter()
        .find(|x| x.uuid == id)
        .ok_or_else(|| ApiError::not_found(format!("Service {id} could not be found.")))?;
    if svc.binary != compute_rpc::COMPUTE_BINARY && (forced.is_some() || status.is_some()) {
        return Err(ApiError::bad_request(format!(
            "Updating a {} service is not supported. Only nova-compute services can be updated.",
            svc.binary
        )));
    }
    let disabled = status.map(|st| (st == "disabled", if st == "disabled" { reason } else { None }));
    s.compute.store().service_set(&svc.uuid, disabled, forced).await?;
    forget_hosts(s).await;
    let svc = s
        .compute
        .store()
        .service_list()
        .await?
        .into_iter()
        .find(|x| x.uuid == id)
        .ok_or_else(|| ApiError::not_found(format!("Service {id} could not be found.")))?;
    let zones = s.compute.host_zones().await?;
    Ok(Json(json!({"service": service_view(s, mv, &zones, &svc)})))
}

async fn service_delete(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-services:delete")?;
    let not_found = || ApiError::not_found(format!("Service {id} could not be found."));
    // Services are addressed by uuid from 2.53, by integer id before.
    let svc = if mv >= v(53) {
        if uuid::Uuid::parse_str(&id).is_err() {
            return Err(ApiError::bad_request(format!("Invalid uuid {id}")));
        }
        s.compute.store().service_list().await?.into_iter().find(|x| x.uuid == id).ok_or_else(not_found)?
    } else {
        let n: i64 = id.parse().map_err(|_| ApiError::bad_request(format!("Invalid ID {id}")))?;
        s.compute.store().service_get(n).await?.ok_or_else(not_found)?
    };
    if svc.binary == compute_rpc::COMPUTE_BINARY {
        let filter = crate::store::InstanceFilter { host: Some(svc.host.clone()), deleted: Some(false), ..Default::default() };
        if !s.compute.instances(&filter).await?.is_empty() {
            return Err(ApiError::conflict(
                "Unable to delete compute service that is hosting instances. Migrate or delete the instances first.",
            ));
        }
    }
    s.compute.store().service_delete(&svc.uuid).await?;
    if let Ok(c) = s.compute.conductor() {
        c.forget_hosts().await;
    }
    Ok(StatusCode::NO_CONTENT)
}

// ----- hypervisors -----

async fn nodes_with_services(s: &AppState) -> Result<Vec<(NodeRow, Option<ServiceRow>)>, ApiError> {
    let services = s.compute.store().service_list().await?;
    Ok(s.compute
        .store()
        .node_list()
        .await?
        .into_iter()
        .map(|n| {
            let svc = services.iter().find(|x| x.uuid == n.service_uuid).cloned();
            (n, svc)
        })
        .collect())
}

/// The hypervisor representation: every microversion-dependent field of a hypervisor is decided here (uuids from
/// 2.53, `cpu_info` an object from 2.28).
fn hypervisor_view(s: &AppState, mv: Microversion, n: &NodeRow, svc: Option<&ServiceRow>, full: bool) -> Value {
    let mut out = json!({
        "id": if mv >= v(53) { json!(n.uuid) } else { json!(n.id) },
        "hypervisor_hostname": n.info.node,
        "state": if svc.is_some_and(|x| up(s, x) && !x.forced_down) { "up" } else { "down" },
        "status": if svc.is_some_and(|x| x.disabled) { "disabled" } else { "enabled" },
    });
    if !full {
        return out;
    }
    let r = &n.info.resources;
    let service_id = if mv >= v(53) { json!(svc.map(|x| x.uuid.clone())) } else { json!(svc.map(|x| x.id)) };
    let cpu_info = if mv >= v(28) { n.info.cpu_info.clone() } else { json!(n.info.cpu_info.to_string()) };
    let extra = json!({
        "cpu_info": cpu_info,
        "current_workload": 0,
        "disk_available_least": r.local_gb - r.local_gb_used,
        "free_disk_gb": r.local_gb - r.local_gb_used,
        "free_ram_mb": r.memory_mb - r.memory_mb_used,
        "host_ip": n.info.host_ip,
        "hypervisor_type": n.info.hypervisor_type,
        "hypervisor_version": n.info.hypervisor_version,
        "local_gb": r.local_gb,
        "local_gb_used": r.local_gb_used,
        "memory_mb": r.memory_mb,
        "memory_mb_used": r.memory_mb_used,
        "running_vms": r.running_vms,
        "service": {"host": n.info.host, "id": service_id, "disabled_reason": svc.and_then(|x| x.disabled_reason.clone())},
        "vcpus": r.vcpus,
        "vcpus_used": r.vcpus_used,
    });
    if let (Value::Object(a), Value::Object(b)) = (&mut out, extra) {
        a.extend(b);
    }
    out
}

/// The servers on a node, as hypervisor views list them.
async fn servers_on(s: &AppState, n: &NodeRow) -> Result<Vec<Value>, ApiError> {
    let filter =
        crate::store::InstanceFilter { host: Some(n.info.host.clone()), deleted: Some(false), ..Default::default() };
    Ok(s.compute
        .instances(&filter)
        .await?
        .iter()
        .filter(|i| i.node.as_deref() == Some(n.info.node.as_str()))
        .map(|i| json!({"uuid": i.uuid, "name": format!("instance-{}", &i.uuid[..8.min(i.uuid.len())])}))
        .collect())
}

/// `with_servers` (2.53): the node's servers are listed; before 2.75 only when it has some.
async fn add_servers(s: &AppState, mv: Microversion, view: &mut Value, n: &NodeRow) -> Result<(), ApiError> {
    let servers = servers_on(s, n).await?;
    if !servers.is_empty() || mv >= v(75) {
        view["servers"] = json!(servers);
    }
    Ok(())
}

/// The `with_servers` query parameter of 2.53.
fn with_servers(q: &QueryPairs, mv: Microversion) -> Result<bool, ApiError> {
    if mv < v(53) {
        return Ok(false);
    }
    match q.get("with_servers") {
        None => Ok(false),
        Some(t) => api_common::query::parse_bool(t).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid input for query parameters with_servers. Value: {t}. '{t}' is not a boolean"
            ))
        }),
    }
}

async fn hypervisor_listing(
    s: &AppState,
    mv: Microversion,
    q: &QueryPairs,
    full: bool,
) -> Result<Json<Value>, ApiError> {
    let mut all = nodes_with_services(s).await?;
    let servers = with_servers(q, mv)?;
    let pattern = if mv >= v(53) { q.get("hypervisor_hostname_pattern") } else { None };
    if let Some(p) = pattern {
        // Paging does not combine with a name pattern.
        if q.contains("limit") || q.contains("marker") {
            return Err(ApiError::bad_request(
                "Paging over hypervisors with 'hypervisor_hostname_pattern' is not supported.",
            ));
        }
        all.retain(|(n, _)| n.info.node.contains(p));
        if all.is_empty() {
            return Err(ApiError::not_found(format!("No hypervisor matching '{p}' could be found.")));
        }
    }
    // Paging from 2.33: `limit` and `marker` (a hypervisor id: an integer before 2.53, a uuid from it).
    let mut next = None;
    if mv >= v(33) {
        let page = super::page(q, MAX_LIMIT)?;
        if let Some(m) = &page.marker
            && !all.iter().any(|(n, _)| if mv >= v(53) { &n.uuid == m } else { &n.id.to_string() == m })
        {
            return Err(ApiError::bad_request(format!("marker [{m}] not found")));
        }
        let ids: Vec<String> =
            all.iter().map(|(n, _)| if mv >= v(53) { n.uuid.clone() } else { n.id.to_string() }).collect();
        let mut items = Vec::new();
        let start = page.marker.as_ref().and_then(|m| ids.iter().position(|x| x == m)).map_or(0, |p| p + 1);
        for (i, item) in all.into_iter().enumerate() {
            if i >= start && items.len() < page.limit {
                items.push(item);
            }
        }
        if page.explicit_limit
            && items.len() == page.limit
            && let Some((last, _)) = items.last()
        {
            let id = if mv >= v(53) { last.uuid.clone() } else { last.id.to_string() };
            let path = if full { "/os-hypervisors/detail" } else { "/os-hypervisors" };
            next = Some(api_common::Page::next_link(&s.url(path), q, &id));
        }
        all = items;
    }
    let mut out = Vec::with_capacity(all.len());
    for (n, svc) in &all {
        let mut view = hypervisor_view(s, mv, n, svc.as_ref(), full);
        if servers {
            add_servers(s, mv, &mut view, n).await?;
        }
        out.push(view);
    }
    let mut body = json!({"hypervisors": out});
    if let Some(next) = next {
        body["hypervisors_links"] = json!([{"rel": "next", "href": next}]);
    }
    Ok(Json(body))
}

async fn hypervisors(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-hypervisors:list")?;
    hypervisor_listing(&s, mv, &q, false).await
}

async fn hypervisors_detail(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-hypervisors:list-detail")?;
    hypervisor_listing(&s, mv, &q, true).await
}

/// The node a hypervisor id names: an integer before 2.53, a uuid from 2.53.
async fn hypervisor_by_id(s: &AppState, mv: Microversion, id: &str) -> Result<(NodeRow, Option<ServiceRow>), ApiError> {
    let not_found = || ApiError::not_found(format!("Hypervisor with ID '{id}' could not be found."));
    let all = nodes_with_services(s).await?;
    if mv >= v(53) {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(ApiError::bad_request(format!("Invalid uuid {id}")));
        }
        return all.into_iter().find(|(x, _)| x.uuid == id).ok_or_else(not_found);
    }
    let n: i64 = id.parse().map_err(|_| not_found())?;
    all.into_iter().find(|(x, _)| x.id == n).ok_or_else(not_found)
}

async fn hypervisor_show(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-hypervisors:show")?;
    let servers = with_servers(&q, mv)?;
    let (node, svc) = hypervisor_by_id(&s, mv, &id).await?;
    let mut view = hypervisor_view(&s, mv, &node, svc.as_ref(), true);
    if servers {
        add_servers(&s, mv, &mut view, &node).await?;
    }
    Ok(Json(json!({"hypervisor": view})))
}

async fn hypervisor_uptime(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-hypervisors:uptime")?;
    let (node, svc) = hypervisor_by_id(&s, mv, &id).await?;
    let uptime = s.compute.conductor()?.host_uptime(&node.info.host).await?;
    let mut view = hypervisor_view(&s, mv, &node, svc.as_ref(), false);
    view["uptime"] = json!(uptime);
    Ok(Json(json!({"hypervisor": view})))
}

const MAX_LIMIT: usize = 1000;

async fn statistics(State(s): State<AppState>, ctx: Context) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-hypervisors:statistics")?;
    let all = nodes_with_services(&s).await?;
    let sum = |f: &dyn Fn(&compute_rpc::NodeResources) -> i64| all.iter().map(|(n, _)| f(&n.info.resources)).sum::<i64>();
    Ok(Json(json!({"hypervisor_statistics": {
        "count": all.len(),
        "current_workload": 0,
        "disk_available_least": sum(&|r| r.local_gb - r.local_gb_used),
        "free_disk_gb": sum(&|r| r.local_gb - r.local_gb_used),
        "free_ram_mb": sum(&|r| r.memory_mb - r.memory_mb_used),
        "local_gb": sum(&|r| r.local_gb),
        "local_gb_used": sum(&|r| r.local_gb_used),
        "memory_mb": sum(&|r| r.memory_mb),
        "memory_mb_used": sum(&|r| r.memory_mb_used),
        "running_vms": sum(&|r| r.running_vms),
        "vcpus": sum(&|r| r.vcpus),
        "vcpus_used": sum(&|r| r.vcpus_used),
    }})))
}

async fn matching(s: &AppState, pattern: &str) -> Result<Vec<(NodeRow, Option<ServiceRow>)>, ApiError> {
    let all = nodes_with_services(s).await?;
    let found: Vec<_> = all.into_iter().filter(|(n, _)| n.info.node.contains(pattern)).collect();
    if found.is_empty() {
        return Err(ApiError::not_found(format!("No hypervisor matching '{pattern}' could be found.")));
    }
    Ok(found)
}

async fn hypervisor_search(State(s): State<AppState>, ctx: Context, Path(pattern): Path<String>) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-hypervisors:search")?;
    let found = matching(&s, &pattern).await?;
    let views: Vec<Value> =
        found.iter().map(|(n, svc)| hypervisor_view(&s, super::MIN_VERSION, n, svc.as_ref(), false)).collect();
    Ok(Json(json!({"hypervisors": views})))
}

async fn hypervisor_servers(State(s): State<AppState>, ctx: Context, Path(pattern): Path<String>) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-hypervisors:servers")?;
    let found = matching(&s, &pattern).await?;
    let mut out = Vec::new();
    for (n, svc) in &found {
        // Search and servers exist only before 2.53, where ids are integers.
        let mut view = hypervisor_view(&s, super::MIN_VERSION, n, svc.as_ref(), false);
        add_servers(&s, super::MIN_VERSION, &mut view, n).await?;
        out.push(view);
    }
    Ok(Json(json!({"hypervisors": out})))
}

// ----- availability zones -----

/// Zones of enabled services (available) and zones only disabled services are in (not available), in order of
/// appearance, as upstream's `get_availability_zones`.
fn zone_lists(zones: &HostZones, services: &[ServiceRow]) -> (Vec<String>, Vec<String>) {
    let mut available: Vec<String> = Vec::new();
    for svc in services.iter().filter(|x| !x.disabled) {
        let z = zone(zones, svc);
        if !available.contains(&z) {
            available.push(z);
        }
    }
    let mut unavailable: Vec<String> = Vec::new();
    for svc in services.iter().filter(|x| x.disabled) {
        let z = zone(zones, svc);
        if !available.contains(&z) && !unavailable.contains(&z) {
            unavailable.push(z);
        }
    }
    (available, unavailable)
}

async fn zones(State(s): State<AppState>, ctx: Context) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-availability-zone:list")?;
    let services = s.compute.store().service_list().await?;
    let (available, unavailable) = zone_lists(&s.compute.host_zones().await?, &services);
    let info: Vec<Value> = available
        .iter()
        .map(|z| (z, true))
        .chain(unavailable.iter().map(|z| (z, false)))
        .filter(|(z, _)| z.as_str() != INTERNAL_ZONE)
        .map(|(z, up)| json!({"zoneName": z, "zoneState": {"available": up}, "hosts": null}))
        .collect();
    Ok(Json(json!({"availabilityZoneInfo": info})))
}

async fn zones_detail(State(s): State<AppState>, ctx: Context) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-availability-zone:detail")?;
    let services = s.compute.store().service_list().await?;
    let zones = s.compute.host_zones().await?;
    let (available, unavailable) = zone_lists(&zones, &services);
    let mut by_zone: std::collections::BTreeMap<String, serde_json::Map<String, Value>> = Default::default();
    for svc in services.iter().filter(|x| !x.disabled) {
        let hosts = by_zone.entry(zone(&zones, svc)).or_default();
        let entry = hosts.entry(svc.host.clone()).or_insert_with(|| json!({}));
        entry[&svc.binary] = json!({"available": up(&s, svc), "active": !svc.disabled, "updated_at": svc.last_seen_up.map(naive_time)});
    }
    let mut info: Vec<Value> = available
        .iter()
        .map(|z| json!({"zoneName": z, "zoneState": {"available": true}, "hosts": by_zone.remove(z).unwrap_or_default()}))
        .collect();
    info.extend(unavailable.iter().map(|z| json!({"zoneName": z, "zoneState": {"available": false}, "hosts": null})));
    Ok(Json(json!({"availabilityZoneInfo": info})))
}

// ----- hosts (os-hosts, deprecated since 2.43) -----

fn enforce_hosts(s: &AppState, ctx: &Context, action: &str) -> Result<(), ApiError> {
    s.policy.enforce(&format!("os_compute_api:os-hosts:{action}"), ctx, &json!({}))
}

/// `GET /os-hosts[?zone=]`: one entry per enabled service, with its topic and zone.
async fn hosts_list(State(s): State<AppState>, ctx: Context, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    enforce_hosts(&s, &ctx, "list")?;
    let zones = s.compute.host_zones().await?;
    let wanted = q.get("zone").filter(|z| !z.is_empty());
    let hosts: Vec<Value> = s
        .compute
        .store()
        .service_list()
        .await?
        .iter()
        .filter(|svc| !svc.disabled)
        .map(|svc| (svc, zone(&zones, svc)))
        .filter(|(_, z)| wanted.is_none_or(|w| w == z))
        .map(|(svc, z)| json!({"host_name": svc.host, "service": svc.topic, "zone": z}))
        .collect();
    Ok(Json(json!({"hosts": hosts})))
}

fn host_not_found(host: &str) -> ApiError {
    ApiError::not_found(format!("Compute host {host} could not be found."))
}

/// `GET /os-hosts/{host}`: the node's totals and use, and what its instances take, in all and per project.
async fn host_show(State(s): State<AppState>, ctx: Context, Path(host): Path<String>) -> Result<Json<Value>, ApiError> {
    enforce_hosts(&s, &ctx, "show")?;
    let nodes = s.compute.store().node_list().await?;
    let node = nodes.iter().find(|n| n.info.host == host).ok_or_else(|| host_not_found(&host))?;
    let r = &node.info.resources;
    let resource = |project: &str, cpu: i64, memory_mb: i64, disk_gb: i64| {
        json!({"resource": {"host": host, "project": project, "cpu": cpu, "memory_mb": memory_mb, "disk_gb": disk_gb}})
    };
    let filter = crate::store::InstanceFilter { host: Some(host.clone()), deleted: Some(false), ..Default::default() };
    let instances = s.compute.instances(&filter).await?;
    let mut per_project: std::collections::BTreeMap<&str, (i64, i64, i64)> = Default::default();
    let mut total = (0, 0, 0);
    for i in &instances {
        let f = &i.flavor;
        let e = per_project.entry(i.project_id.as_str()).or_default();
        for t in [&mut total, e] {
            t.0 += f.vcpus;
            t.1 += f.memory_mb;
            t.2 += f.root_gb + f.ephemeral_gb;
        }
    }
    let mut out = vec![
        resource("(total)", r.vcpus, r.memory_mb, r.local_gb),
        resource("(used_now)", r.vcpus_used, r.memory_mb_used, r.local_gb_used),
        resource("(used_max)", total.0, total.1, total.2),
    ];
    out.extend(per_project.iter().map(|(p, t)| resource(p, t.0, t.1, t.2)));
    Ok(Json(json!({"host": out})))
}

/// `enable`/`disable` in any case, as upstream's host update schema has them.
fn switch(m: &serde_json::Map<String, Value>, field: &str) -> Result<Option<bool>, ApiError> {
    match m.get(field) {
        None => Ok(None),
        Some(Value::String(v)) if ["enable", "Enable", "ENABLE"].contains(&v.as_str()) => Ok(Some(true)),
        Some(Value::String(v)) if ["disable", "Disable", "DISABLE"].contains(&v.as_str()) => Ok(Some(false)),
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute {field}. Value: {other}. {other} is not one of ['enable', 'disable', \
             'Enable', 'Disable', 'ENABLE', 'DISABLE']"
        ))),
    }
}

/// `PUT /os-hosts/{host}`: `status` enables or disables the host's compute service; maintenance mode is not
/// supported by this driver (501, as upstream's drivers answer).
async fn host_update(State(s): State<AppState>, ctx: Context, Path(host): Path<String>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    let v = body(&bytes)?;
    let m = v.as_object().cloned().unwrap_or_default();
    only(&m, &["status", "maintenance_mode"])?;
    let status = switch(&m, "status")?;
    let maintenance = switch(&m, "maintenance_mode")?;
    if status.is_none() && maintenance.is_none() {
        return Err(ApiError::bad_request(format!("Invalid input for field/attribute body. Value: {v}. {v} is not valid under any of the given schemas")));
    }
    enforce_hosts(&s, &ctx, "update")?;
    let svc = s
        .compute
        .store()
        .service_find(&host, compute_rpc::COMPUTE_BINARY)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Host {host} could not be found.")))?;
    let mut out = json!({"host": host});
    if let Some(enabled) = status {
        s.compute.store().service_set(&svc.uuid, Some((!enabled, None)), None).await?;
        out["status"] = json!(if enabled { "enabled" } else { "disabled" });
    }
    if maintenance.is_some() {
        return Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "The requested functionality is not supported."));
    }
    Ok(Json(out))
}

/// `GET /os-hosts/{host}/startup|shutdown|reboot`: host power actions are not supported by this driver.
async fn host_power(State(s): State<AppState>, ctx: Context, Path((host, action)): Path<(String, String)>) -> Result<Json<Value>, ApiError> {
    let rule = match action.as_str() {
        "startup" => "start",
        "shutdown" => "shutdown",
        "reboot" => "reboot",
        _ => return Err(ApiError::not_found("The resource could not be found.")),
    };
    enforce_hosts(&s, &ctx, rule)?;
    if s.compute.store().service_find(&host, compute_rpc::COMPUTE_BINARY).await?.is_none() {
        return Err(ApiError::not_found(format!("Host {host} could not be found.")));
    }
    Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "The requested functionality is not supported."))
}
