//! The hosts side of the API: compute services (`/os-services`, up or down from heartbeats, enable/disable),
//! hypervisors (`/os-hypervisors`) and availability zones (`/os-availability-zone`), as at microversion 2.1.

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
use crate::store::{NodeRow, ServiceRow};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/os-services", get(services))
        .route("/v2.1/os-services/{action}", put(service_update).delete(service_delete))
        .route("/v2.1/os-hypervisors", get(hypervisors))
        .route("/v2.1/os-hypervisors/detail", get(hypervisors_detail))
        .route("/v2.1/os-hypervisors/statistics", get(statistics))
        .route("/v2.1/os-hypervisors/{id}", get(hypervisor_show))
        .route("/v2.1/os-hypervisors/{pattern}/search", get(hypervisor_search))
        .route("/v2.1/os-hypervisors/{pattern}/servers", get(hypervisor_servers))
        .route("/v2.1/os-availability-zone", get(zones))
        .route("/v2.1/os-availability-zone/detail", get(zones_detail))
}

fn time(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us).map(|t| t.format("%Y-%m-%dT%H:%M:%S.%6f").to_string()).unwrap_or_default()
}

fn up(s: &AppState, svc: &ServiceRow) -> bool {
    s.compute.conductor().map(|c| c.is_up(svc)).unwrap_or(false)
}

fn zone(s: &AppState, svc: &ServiceRow) -> String {
    if svc.binary == compute_rpc::COMPUTE_BINARY {
        s.compute.conductor().map(|c| c.settings().default_availability_zone.clone()).unwrap_or_else(|_| "nova".into())
    } else {
        "internal".into()
    }
}

fn service_view(s: &AppState, svc: &ServiceRow) -> Value {
    json!({
        "id": svc.id,
        "binary": svc.binary,
        "host": svc.host,
        "zone": zone(s, svc),
        "status": if svc.disabled { "disabled" } else { "enabled" },
        "state": if up(s, svc) { "up" } else { "down" },
        "updated_at": svc.last_seen_up.map(time),
        "disabled_reason": svc.disabled_reason,
    })
}

async fn services(State(s): State<AppState>, ctx: Context, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-services:list")?;
    let all = s.compute.store().service_list().await?;
    let list: Vec<Value> = all
        .iter()
        .filter(|svc| q.get("host").is_none_or(|h| h == svc.host))
        .filter(|svc| q.get("binary").is_none_or(|b| b == svc.binary))
        .map(|svc| service_view(&s, svc))
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
            return Err(ApiError::conflict(format!(
                "Unable to delete compute service that is hosting instances. Migrate or delete the instances first."
            )));
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

async fn zones(State(s): State<AppState>, ctx: Context) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-availability-zone:list")?;
    let services = s.compute.store().service_list().await?;
    let computes: Vec<&ServiceRow> = services.iter().filter(|x| x.binary == compute_rpc::COMPUTE_BINARY).collect();
    let mut info = Vec::new();
    if !computes.is_empty() {
        let available = computes.iter().any(|x| !x.disabled && up(&s, x));
        info.push(json!({"zoneName": zone(&s, computes[0]), "zoneState": {"available": available}, "hosts": null}));
    }
    Ok(Json(json!({"availabilityZoneInfo": info})))
}

async fn zones_detail(State(s): State<AppState>, ctx: Context) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-availability-zone:detail")?;
    let services = s.compute.store().service_list().await?;
    let mut by_zone: std::collections::BTreeMap<String, serde_json::Map<String, Value>> = Default::default();
    for svc in &services {
        let hosts = by_zone.entry(zone(&s, svc)).or_default();
        let entry = hosts.entry(svc.host.clone()).or_insert_with(|| json!({}));
        entry[&svc.binary] = json!({"available": up(&s, svc), "active": !svc.disabled, "updated_at": svc.last_seen_up.map(time)});
    }
    let info: Vec<Value> = by_zone
        .into_iter()
        .map(|(name, hosts)| {
            let available = hosts.values().any(|h| h.as_object().is_some_and(|o| o.values().any(|b| b["available"] == true)));
            json!({"zoneName": name, "zoneState": {"available": available}, "hosts": hosts})
        })
        .collect();
    Ok(Json(json!({"availabilityZoneInfo": info})))
}
