//! The hosts side of the API: compute services (`/os-services`, up or down from heartbeats, enable/disable),
//! hypervisors (`/os-hypervisors`), availability zones (`/os-availability-zone`, from host aggregates) and the
//! deprecated `/os-hosts`, as at microversion 2.1.

use ::auth::Context;
use api_common::{ApiError, QueryPairs};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, put},
};
use serde_json::{Value, json};

use super::{AppState, body, only};
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
        .route("/v2.1/os-hypervisors/{pattern}/search", get(hypervisor_search))
        .route("/v2.1/os-hypervisors/{pattern}/servers", get(hypervisor_servers))
        .route("/v2.1/os-availability-zone", get(zones))
        .route("/v2.1/os-availability-zone/detail", get(zones_detail))
        .route("/v2.1/os-hosts", get(hosts_list))
        .route("/v2.1/os-hosts/{host}", get(host_show).put(host_update))
        .route("/v2.1/os-hosts/{host}/{action}", get(host_power))
}

fn time(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us).map(|t| t.format("%Y-%m-%dT%H:%M:%S.%6f").to_string()).unwrap_or_default()
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

fn service_view(s: &AppState, zones: &HostZones, svc: &ServiceRow) -> Value {
    json!({
        "id": svc.id,
        "binary": svc.binary,
        "host": svc.host,
        "zone": zone(zones, svc),
        "status": if svc.disabled { "disabled" } else { "enabled" },
        "state": if up(s, svc) { "up" } else { "down" },
        "updated_at": svc.last_seen_up.map(time),
        "disabled_reason": svc.disabled_reason,
    })
}

async fn services(State(s): State<AppState>, ctx: Context, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-services:list")?;
    let all = s.compute.store().service_list().await?;
    let zones = s.compute.host_zones().await?;
    let list: Vec<Value> = all
        .iter()
        .filter(|svc| q.get("host").is_none_or(|h| h == svc.host))
        .filter(|svc| q.get("binary").is_none_or(|b| b == svc.binary))
        .map(|svc| service_view(&s, &zones, svc))
        .collect();
    Ok(Json(json!({"services": list})))
}

/// `PUT /os-services/enable|disable|disable-log-reason` with `{"host", "binary"}`.
async fn service_update(
    State(s): State<AppState>,
    ctx: Context,
    Path(action): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-services:update")?;
    let v = body(&bytes)?;
    let m = v.as_object().cloned().unwrap_or_default();
    only(&m, &["host", "binary", "disabled_reason"])?;
    let field = |k: &str| -> Result<String, ApiError> {
        m.get(k).and_then(Value::as_str).map(str::to_string).ok_or_else(|| {
            ApiError::bad_request(format!("Invalid input for field/attribute {k}. Value: None. '{k}' is a required property"))
        })
    };
    let (host, binary) = (field("host")?, field("binary")?);
    let (disabled, reason) = match action.as_str() {
        "enable" => (false, None),
        "disable" => (true, None),
        "disable-log-reason" => {
            let reason = field("disabled_reason")?;
            if reason.is_empty() || reason.chars().count() > 255 {
                return Err(ApiError::bad_request("The string containing the reason for disabling the service contains invalid characters or is too long."));
            }
            (true, Some(reason))
        }
        other => return Err(ApiError::not_found(format!("Unknown action {other}"))),
    };
    let svc = s
        .compute
        .store()
        .service_find(&host, &binary)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Service {binary} on host {host} not found.")))?;
    s.compute.store().service_set(&svc.uuid, Some((disabled, reason.clone())), None).await?;
    if let Ok(c) = s.compute.conductor() {
        c.forget_hosts().await;
    }
    let mut out = json!({"host": host, "binary": binary, "status": if disabled { "disabled" } else { "enabled" }});
    if let Some(r) = reason {
        out["disabled_reason"] = json!(r);
    }
    Ok(Json(json!({"service": out})))
}

async fn service_delete(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-services:delete")?;
    let not_found = || ApiError::not_found(format!("Service {id} could not be found."));
    let n: i64 = id.parse().map_err(|_| ApiError::bad_request(format!("Invalid ID {id}")))?;
    let svc = s.compute.store().service_get(n).await?.ok_or_else(not_found)?;
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

fn hypervisor_summary(s: &AppState, n: &NodeRow, svc: Option<&ServiceRow>) -> Value {
    json!({
        "id": n.id,
        "hypervisor_hostname": n.info.node,
        "state": if svc.is_some_and(|x| up(s, x)) { "up" } else { "down" },
        "status": if svc.is_some_and(|x| x.disabled) { "disabled" } else { "enabled" },
    })
}

fn hypervisor_detail(s: &AppState, n: &NodeRow, svc: Option<&ServiceRow>) -> Value {
    let r = &n.info.resources;
    let mut v = hypervisor_summary(s, n, svc);
    let extra = json!({
        "cpu_info": n.info.cpu_info.to_string(),
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
        "service": {"host": n.info.host, "id": svc.map(|x| x.id), "disabled_reason": svc.and_then(|x| x.disabled_reason.clone())},
        "vcpus": r.vcpus,
        "vcpus_used": r.vcpus_used,
    });
    if let (Value::Object(a), Value::Object(b)) = (&mut v, extra) {
        a.extend(b);
    }
    v
}

async fn hypervisors(State(s): State<AppState>, ctx: Context) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-hypervisors:list")?;
    let all = nodes_with_services(&s).await?;
    Ok(Json(json!({"hypervisors": all.iter().map(|(n, svc)| hypervisor_summary(&s, n, svc.as_ref())).collect::<Vec<_>>()})))
}

async fn hypervisors_detail(State(s): State<AppState>, ctx: Context) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-hypervisors:list-detail")?;
    let all = nodes_with_services(&s).await?;
    Ok(Json(json!({"hypervisors": all.iter().map(|(n, svc)| hypervisor_detail(&s, n, svc.as_ref())).collect::<Vec<_>>()})))
}

async fn hypervisor_show(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-hypervisors:show")?;
    let not_found = || ApiError::not_found(format!("Hypervisor with ID '{id}' could not be found."));
    let n: i64 = id.parse().map_err(|_| not_found())?;
    let all = nodes_with_services(&s).await?;
    let (node, svc) = all.iter().find(|(x, _)| x.id == n).ok_or_else(not_found)?;
    Ok(Json(json!({"hypervisor": hypervisor_detail(&s, node, svc.as_ref())})))
}

async fn hypervisor_uptime(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-hypervisors:uptime")?;
    let not_found = || ApiError::not_found(format!("Hypervisor with ID '{id}' could not be found."));
    let n: i64 = id.parse().map_err(|_| not_found())?;
    let all = nodes_with_services(&s).await?;
    let (node, svc) = all.iter().find(|(x, _)| x.id == n).ok_or_else(not_found)?;
    let uptime = s.compute.conductor()?.host_uptime(&node.info.host).await?;
    let mut v = hypervisor_summary(&s, node, svc.as_ref());
    v["uptime"] = json!(uptime);
    Ok(Json(json!({"hypervisor": v})))
}

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
    Ok(Json(json!({"hypervisors": found.iter().map(|(n, svc)| hypervisor_summary(&s, n, svc.as_ref())).collect::<Vec<_>>()})))
}

async fn hypervisor_servers(State(s): State<AppState>, ctx: Context, Path(pattern): Path<String>) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-hypervisors:servers")?;
    let found = matching(&s, &pattern).await?;
    let mut out = Vec::new();
    for (n, svc) in &found {
        let filter = crate::store::InstanceFilter { host: Some(n.info.host.clone()), deleted: Some(false), ..Default::default() };
        let servers: Vec<Value> = s
            .compute
            .instances(&filter)
            .await?
            .iter()
            .filter(|i| i.node.as_deref() == Some(n.info.node.as_str()))
            .map(|i| json!({"uuid": i.uuid, "name": format!("instance-{}", &i.uuid[..8.min(i.uuid.len())])}))
            .collect();
        let mut v = hypervisor_summary(&s, n, svc.as_ref());
        if !servers.is_empty() {
            v["servers"] = json!(servers);
        }
        out.push(v);
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
        entry[&svc.binary] = json!({"available": up(&s, svc), "active": !svc.disabled, "updated_at": svc.last_seen_up.map(time)});
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
