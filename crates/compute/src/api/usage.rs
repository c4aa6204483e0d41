//! Usage reports: `/os-simple-tenant-usage` (every project for admins, with `start`, `end` and `detailed`; one
//! project; paged from 2.40) and `/os-instance_usage_audit_log`.

use ::auth::Context;
use api_common::{ApiError, Microversion, Page, QueryPairs};
use axum::{
    Extension, Json, Router,
    extract::{Path, State},
    routing::get,
};
use serde_json::{Map, Value, json};

use super::{AppState, naive_time, v};
use crate::usage::{AuditLog, ServerUsage, TenantUsage};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/os-simple-tenant-usage", get(list))
        .route("/v2.1/os-simple-tenant-usage/{id}", get(show))
        .route("/v2.1/os-instance_usage_audit_log", get(audit_list))
        .route("/v2.1/os-instance_usage_audit_log/{before}", get(audit_show))
}

/// A `start`/`end` parameter in one of upstream's three formats (UTC); absent means now.
fn parse_datetime(v: Option<&str>) -> Result<i64, ApiError> {
    let Some(v) = v.filter(|v| !v.is_empty()) else { return Ok(crate::store::instances::now_us()) };
    ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(v, f).ok())
        .map(|t| t.and_utc().timestamp_micros())
        .ok_or_else(|| ApiError::bad_request("Invalid datetime string: Datetime is in invalid format"))
}

/// The period and `detailed` flag of a request.
fn period(q: &QueryPairs) -> Result<(i64, i64, bool), ApiError> {
    let start = parse_datetime(q.get("start"))?;
    let end = parse_datetime(q.get("end"))?;
    if start >= end {
        return Err(ApiError::bad_request("Invalid start time. The start time cannot occur after the end time."));
    }
    Ok((start, end, q.get("detailed") == Some("1")))
}

fn server_view(u: &ServerUsage) -> Value {
    json!({
        "instance_id": u.instance_id,
        "name": u.name,
        "tenant_id": u.tenant_id,
        "flavor": u.flavor,
        "hours": u.hours,
        "memory_mb": u.memory_mb,
        "local_gb": u.local_gb,
        "vcpus": u.vcpus,
        "started_at": naive_time(u.started_at),
        "ended_at": u.ended_at.map(naive_time),
        "state": u.state,
        "uptime": u.uptime,
    })
}

fn tenant_view(t: &TenantUsage, detailed: bool) -> Value {
    let mut v = json!({
        "tenant_id": t.tenant_id,
        "start": naive_time(t.start),
        "stop": naive_time(t.stop),
        "total_hours": t.total_hours,
        "total_local_gb_usage": t.total_local_gb_usage,
        "total_memory_mb_usage": t.total_memory_mb_usage,
        "total_vcpus_usage": t.total_vcpus_usage,
    });
    if detailed {
        v["server_usages"] = t.server_usages.iter().map(server_view).collect();
    }
    v
}

/// Paging over the instances that count (2.40): `limit` and `marker`; earlier versions ignore both but are
/// still capped at the largest page.
fn usage_page(q: &QueryPairs, mv: Microversion) -> Result<Page, ApiError> {
    if mv >= v(40) {
        super::page(q, MAX_LIMIT)
    } else {
        Ok(Page { limit: MAX_LIMIT, marker: None, explicit_limit: false })
    }
}

const MAX_LIMIT: usize = 1000;

async fn list(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    s.policy.enforce("os_compute_api:os-simple-tenant-usage:list", &ctx, &json!({}))?;
    let (start, end, detailed) = period(&q)?;
    let page = usage_page(&q, mv)?;
    let (usages, last) = s.compute.tenant_usage_page(None, start, end, Some(&page)).await?;
    let mut out = json!({"tenant_usages": usages.iter().map(|t| tenant_view(t, detailed)).collect::<Vec<_>>()});
    if let Some(last) = last.filter(|_| mv >= v(40)) {
        out["tenant_usages_links"] =
            json!([{"rel": "next", "href": Page::next_link(&s.url("/os-simple-tenant-usage"), &q, &last)}]);
    }
    Ok(Json(out))
}

async fn show(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    s.policy.enforce(
        "os_compute_api:os-simple-tenant-usage:show",
        &ctx,
        &json!({"project_id": id, "user_id": ctx.user_id}),
    )?;
    let (start, end, _) = period(&q)?;
    let page = usage_page(&q, mv)?;
    let (usage, last) = s.compute.tenant_usage_page(Some(&id), start, end, Some(&page)).await?;
    let view = usage.first().map(|t| tenant_view(t, true)).unwrap_or_else(|| json!({}));
    let mut out = json!({"tenant_usage": view});
    if let Some(last) = last.filter(|_| mv >= v(40)) {
        let path = format!("/os-simple-tenant-usage/{id}");
        out["tenant_usage_links"] = json!([{"rel": "next", "href": Page::next_link(&s.url(&path), &q, &last)}]);
    }
    Ok(Json(out))
}

// ----- instance usage audit log -----

fn audit_view(log: &AuditLog) -> Value {
    json!({
        "period_beginning": log.period_beginning,
        "period_ending": log.period_ending,
        "num_hosts": log.hosts.len(),
        "num_hosts_done": 0,
        "num_hosts_running": 0,
        "num_hosts_not_run": log.hosts.len(),
        "hosts_not_run": log.hosts,
        "total_instances": 0,
        "total_errors": 0,
        "overall_status": log.overall_status(),
        "log": Map::new(),
    })
}

async fn audit_list(State(s): State<AppState>, ctx: Context) -> Result<Json<Value>, ApiError> {
    s.policy.enforce("os_compute_api:os-instance-usage-audit-log:list", &ctx, &json!({}))?;
    let log = s.compute.usage_audit_log(chrono::Utc::now().naive_utc()).await?;
    Ok(Json(json!({"instance_usage_audit_logs": audit_view(&log)})))
}

async fn audit_show(State(s): State<AppState>, ctx: Context, Path(before): Path<String>) -> Result<Json<Value>, ApiError> {
    s.policy.enforce("os_compute_api:os-instance-usage-audit-log:show", &ctx, &json!({}))?;
    let format = if before.contains('.') { "%Y-%m-%d %H:%M:%S%.f" } else { "%Y-%m-%d %H:%M:%S" };
    let t = chrono::NaiveDateTime::parse_from_str(&before, format)
        .map_err(|_| ApiError::bad_request(format!("Invalid timestamp for date {before}")))?;
    let log = s.compute.usage_audit_log(t).await?;
    Ok(Json(json!({"instance_usage_audit_log": audit_view(&log)})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes() {
        assert_eq!(parse_datetime(Some("1970-01-01T00:00:01")).unwrap(), 1_000_000);
        assert_eq!(parse_datetime(Some("1970-01-01T00:00:01.5")).unwrap(), 1_500_000);
        assert_eq!(parse_datetime(Some("1970-01-01 00:00:02.000001")).unwrap(), 2_000_001);
        assert!(parse_datetime(Some("yesterday")).is_err());
        assert_eq!(naive_time(1_500_000), "1970-01-01T00:00:01.500000");
    }
}
