//! Quotas: `/os-quota-sets/{project_id}` (show, `detail`, `defaults`, update and delete, per user with
//! `?user_id=`), `/os-quota-class-sets/{class}` and the absolute limits of `/limits`, as at microversion 2.1.

use ::auth::Context;
use api_common::{ApiError, QueryPairs};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    routing::get,
};
use serde_json::{Map, Value, json};

use super::{AppState, body, invalid, member};
use crate::quotas::{Limits, MAX_LIMIT, RESOURCES, is_resource};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/os-quota-sets/{id}", get(show).put(update).delete(delete))
        .route("/v2.1/os-quota-sets/{id}/detail", get(detail))
        .route("/v2.1/os-quota-sets/{id}/defaults", get(defaults))
        .route("/v2.1/os-quota-class-sets/{id}", get(class_show).put(class_update))
        .route("/v2.1/limits", get(limits))
}

fn enforce_project(s: &AppState, ctx: &Context, rule: &str, project_id: &str) -> Result<(), ApiError> {
    s.policy.enforce(rule, ctx, &json!({"project_id": project_id, "user_id": ctx.user_id}))
}

/// Every resource's limit, with `id` when given.
fn quota_view(id: Option<&str>, limits: &Limits) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(id) = id {
        out.insert("id".into(), json!(id));
    }
    for (resource, _) in RESOURCES {
        if let Some(v) = limits.get(*resource) {
            out.insert(resource.to_string(), json!(v));
        }
    }
    out
}

fn user_param(q: &QueryPairs) -> Option<String> {
    q.get("user_id").filter(|u| !u.is_empty()).map(str::to_string)
}

async fn show(State(s): State<AppState>, ctx: Context, Path(id): Path<String>, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    enforce_project(&s, &ctx, "os_compute_api:os-quota-sets:show", &id)?;
    let limits = s.compute.quota_limits(&id, user_param(&q).as_deref()).await?;
    Ok(Json(json!({"quota_set": quota_view(Some(&id), &limits)})))
}

async fn detail(State(s): State<AppState>, ctx: Context, Path(id): Path<String>, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    enforce_project(&s, &ctx, "os_compute_api:os-quota-sets:detail", &id)?;
    let details = s.compute.quota_detail(&id, user_param(&q).as_deref()).await?;
    let mut out = Map::new();
    out.insert("id".into(), json!(id));
    for (resource, _) in RESOURCES {
        if let Some(d) = details.get(*resource) {
            out.insert(resource.to_string(), json!({"limit": d.limit, "in_use": d.in_use, "reserved": 0}));
        }
    }
    Ok(Json(json!({"quota_set": out})))
}

async fn defaults(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    enforce_project(&s, &ctx, "os_compute_api:os-quota-sets:defaults", &id)?;
    let limits = s.compute.quota_defaults().await?;
    Ok(Json(json!({"quota_set": quota_view(Some(&id), &limits)})))
}

/// One limit of an update body: an integer, or a string of digits, in `-1..=MAX_LIMIT`.
fn limit_value(field: &str, v: &Value) -> Result<i64, ApiError> {
    let n = match v {
        Value::Number(n) => match n.as_i64() {
            Some(n) => n,
            None if n.is_f64() => return Err(invalid(field, v, &format!("{v} is not of type 'integer', 'string'"))),
            None => return Err(invalid(field, v, &format!("{v} is greater than the maximum of {MAX_LIMIT}"))),
        },
        Value::String(t) => {
            let digits = t.strip_prefix('-').unwrap_or(t);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(field, v, &format!("'{t}' does not match '^-?[0-9]+$'")));
            }
            // The schema bounds numbers only: a string is taken as written (and checked against usage later).
            return t.parse::<i64>().map_err(|_| invalid(field, v, &format!("'{t}' does not match '^-?[0-9]+$'")));
        }
        other => return Err(invalid(field, other, &format!("{other} is not of type 'integer', 'string'"))),
    };
    if n < -1 {
        return Err(invalid(field, v, &format!("{n} is less than the minimum of -1")));
    }
    if n > MAX_LIMIT {
        return Err(invalid(field, v, &format!("{n} is greater than the maximum of {MAX_LIMIT}")));
    }
    Ok(n)
}

/// oslo's boolean strings, as Nova's `parameter_types.boolean` accepts them.
fn bool_value(field: &str, v: &Value) -> Result<bool, ApiError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(t) => match t.as_str() {
            "True" | "TRUE" | "true" | "1" | "ON" | "On" | "on" | "YES" | "Yes" | "yes" | "y" | "t" => Ok(true),
            "False" | "FALSE" | "false" | "0" | "OFF" | "Off" | "off" | "NO" | "No" | "no" | "n" | "f" => Ok(false),
            _ => Err(invalid(field, v, &format!("'{t}' is not one of the accepted boolean values"))),
        },
        other => Err(invalid(field, other, &format!("{other} is not of type 'boolean', 'string'"))),
    }
}

/// The limits of an update body (`{"<key>": {...}}`), and `force` where allowed.
fn parse_limits(bytes: &[u8], key: &str, allow_force: bool) -> Result<(Limits, bool), ApiError> {
    let v = body(bytes)?;
    if let Some(extra) = v.as_object().and_then(|o| o.keys().find(|k| k.as_str() != key)) {
        return Err(ApiError::bad_request(format!("Additional properties are not allowed ('{extra}' was unexpected)")));
    }
    let m = member(&v, key)?;
    let mut limits = Limits::new();
    let mut force = false;
    for (k, val) in m {
        if allow_force && k == "force" {
            force = bool_value(k, val)?;
        } else if is_resource(k) {
            limits.insert(k.clone(), limit_value(k, val)?);
        } else {
            return Err(ApiError::bad_request(format!("Additional properties are not allowed ('{k}' was unexpected)")));
        }
    }
    Ok((limits, force))
}

async fn update(
    State(s): State<AppState>,
    ctx: Context,
    Path(id): Path<String>,
    q: QueryPairs,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (values, force) = parse_limits(&bytes, "quota_set", true)?;
    enforce_project(&s, &ctx, "os_compute_api:os-quota-sets:update", &id)?;
    let limits = s.compute.quota_update(&id, user_param(&q).as_deref(), &values, force).await?;
    // No `id` in the update's answer, as upstream.
    Ok(Json(json!({"quota_set": quota_view(None, &limits)})))
}

async fn delete(State(s): State<AppState>, ctx: Context, Path(id): Path<String>, q: QueryPairs) -> Result<StatusCode, ApiError> {
    enforce_project(&s, &ctx, "os_compute_api:os-quota-sets:delete", &id)?;
    s.compute.quota_delete(&id, user_param(&q).as_deref()).await?;
    Ok(StatusCode::ACCEPTED)
}

// ----- quota classes -----

async fn class_show(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    s.policy.enforce("os_compute_api:os-quota-class-sets:show", &ctx, &json!({"quota_class": id}))?;
    let limits = s.compute.quota_class(&id).await?;
    Ok(Json(json!({"quota_class_set": quota_view(Some(&id), &limits)})))
}

async fn class_update(
    State(s): State<AppState>,
    ctx: Context,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (values, _) = parse_limits(&bytes, "quota_class_set", false)?;
    s.policy.enforce("os_compute_api:os-quota-class-sets:update", &ctx, &json!({"quota_class": id}))?;
    let limits = s.compute.quota_class_update(&id, &values).await?;
    Ok(Json(json!({"quota_class_set": quota_view(None, &limits)})))
}

// ----- limits -----

/// `GET /limits[?tenant_id=]`: the absolute limits of the project and what it uses; no rate limits.
async fn limits(State(s): State<AppState>, ctx: Context, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    s.policy.enforce("os_compute_api:limits", &ctx, &json!({}))?;
    let mut project = ctx.project_id.clone().unwrap_or_default();
    if let Some(t) = q.get("tenant_id") {
        project = t.to_string();
        enforce_project(&s, &ctx, "os_compute_api:limits:other_project", &project)?;
    }
    let details = s.compute.quota_detail(&project, None).await?;
    let limit = |r: &str| details.get(r).map_or(-1, |d| d.limit);
    let used = |r: &str| details.get(r).map_or(0, |d| d.in_use);
    let absolute = json!({
        "maxTotalRAMSize": limit("ram"),
        "maxTotalInstances": limit("instances"),
        "maxTotalCores": limit("cores"),
        "maxTotalKeypairs": limit("key_pairs"),
        "maxTotalFloatingIps": limit("floating_ips"),
        "maxServerMeta": limit("metadata_items"),
        "maxImageMeta": limit("metadata_items"),
        "maxPersonality": limit("injected_files"),
        "maxPersonalitySize": limit("injected_file_content_bytes"),
        "maxSecurityGroups": limit("security_groups"),
        "maxSecurityGroupRules": limit("security_group_rules"),
        "maxServerGroups": limit("server_groups"),
        "maxServerGroupMembers": limit("server_group_members"),
        "totalRAMUsed": used("ram"),
        "totalCoresUsed": used("cores"),
        "totalInstancesUsed": used("instances"),
        "totalFloatingIpsUsed": used("floating_ips"),
        "totalSecurityGroupsUsed": used("security_groups"),
        "totalServerGroupsUsed": used("server_groups"),
    });
    Ok(Json(json!({"limits": {"rate": [], "absolute": absolute}})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_values_follow_the_schema() {
        assert_eq!(limit_value("ram", &json!(5)).unwrap(), 5);
        assert_eq!(limit_value("ram", &json!("5120")).unwrap(), 5120);
        assert_eq!(limit_value("ram", &json!(-1)).unwrap(), -1);
        for bad in [json!(-2), json!("abc"), json!(true), json!(null), json!(1.5), json!(MAX_LIMIT + 1), json!("")] {
            assert!(limit_value("ram", &bad).is_err(), "{bad}");
        }
        assert!(bool_value("force", &json!("True")).unwrap());
        assert!(!bool_value("force", &json!(false)).unwrap());
        assert!(bool_value("force", &json!("maybe")).is_err());
    }

    #[test]
    fn update_bodies() {
        let (l, force) = parse_limits(br#"{"quota_set": {"ram": "10", "force": true}}"#, "quota_set", true).unwrap();
        assert_eq!((l["ram"], force), (10, true));
        assert!(parse_limits(br#"{"quota_set": {"bogus": 1}}"#, "quota_set", true).is_err());
        assert!(parse_limits(br#"{"quota_class_set": {"force": true}}"#, "quota_class_set", false).is_err());
        assert!(parse_limits(br#"{"quota_set": {}, "x": 1}"#, "quota_set", true).is_err());
        assert!(parse_limits(br#"{}"#, "quota_set", true).is_err());
    }
}
