//! Quotas: `/os-quota-sets/{project_id}` (show, `detail`, `defaults`, update and delete, per user with
//! `?user_id=`), `/os-quota-class-sets/{class}` and the absolute limits of `/limits`, with the entries each
//! microversion dropped (network 2.36/2.50, image metadata 2.39, injected files 2.57).

use ::auth::Context;
use api_common::{ApiError, Microversion, QueryPairs};
use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    routing::get,
};
use serde_json::{Map, Value, json};

use super::{AppState, body, invalid, member, v};
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
/// Which of the two quota APIs a view or body is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Sets,
    Classes,
}

const NETWORK: &[&str] = &["floating_ips", "fixed_ips", "security_groups", "security_group_rules", "networks"];
const INJECTED: &[&str] = &["injected_files", "injected_file_content_bytes", "injected_file_path_bytes"];

/// Whether `resource` is part of the API at `mv`: the network quotas left quota sets at 2.36 and quota classes at
/// 2.50 (which is also when the server group quotas joined quota classes), the injected file quotas left both at
/// 2.57.
fn shown(resource: &str, mv: Microversion, api: Api) -> bool {
    let network_gone = match api {
        Api::Sets => v(36),
        Api::Classes => v(50),
    };
    if NETWORK.contains(&resource) && mv >= network_gone {
        return false;
    }
    if INJECTED.contains(&resource) && mv >= v(57) {
        return false;
    }
    if api == Api::Classes && resource.starts_with("server_group") && mv < v(50) {
        return false;
    }
    true
}

fn quota_view(id: Option<&str>, limits: &Limits, mv: Microversion, api: Api) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(id) = id {
        out.insert("id".into(), json!(id));
    }
    for (resource, _) in RESOURCES.iter().filter(|(r, _)| shown(r, mv, api)) {
        if let Some(v) = limits.get(*resource) {
            out.insert(resource.to_string(), json!(v));
        }
    }
    out
}

fn user_param(q: &QueryPairs) -> Option<String> {
    q.get("user_id").filter(|u| !u.is_empty()).map(str::to_string)
}

async fn show(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    enforce_project(&s, &ctx, "os_compute_api:os-quota-sets:show", &id)?;
    let limits = s.compute.quota_limits(&id, user_param(&q).as_deref()).await?;
    Ok(Json(json!({"quota_set": quota_view(Some(&id), &limits, mv, Api::Sets)})))
}

async fn detail(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    enforce_project(&s, &ctx, "os_compute_api:os-quota-sets:detail", &id)?;
    let details = s.compute.quota_detail(&id, user_param(&q).as_deref()).await?;
    let mut out = Map::new();
    out.insert("id".into(), json!(id));
    for (resource, _) in RESOURCES.iter().filter(|(r, _)| shown(r, mv, Api::Sets)) {
        if let Some(d) = details.get(*resource) {
            out.insert(resource.to_string(), json!({"limit": d.limit, "in_use": d.in_use, "reserved": 0}));
        }
    }
    Ok(Json(json!({"quota_set": out})))
}

async fn defaults(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    enforce_project(&s, &ctx, "os_compute_api:os-quota-sets:defaults", &id)?;
    let limits = s.compute.quota_defaults().await?;
    Ok(Json(json!({"quota_set": quota_view(Some(&id), &limits, mv, Api::Sets)})))
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
fn parse_limits(bytes: &[u8], api: Api, mv: Microversion) -> Result<(Limits, bool), ApiError> {
    let (key, allow_force) = match api {
        Api::Sets => ("quota_set", true),
        Api::Classes => ("quota_class_set", false),
    };
    let b = body(bytes)?;
    if let Some(extra) = b.as_object().and_then(|o| o.keys().find(|k| k.as_str() != key)) {
        return Err(ApiError::bad_request(format!("Additional properties are not allowed ('{extra}' was unexpected)")));
    }
    let m = member(&b, key)?;
    let mut limits = Limits::new();
    let mut force = false;
    for (k, val) in m {
        if allow_force && k == "force" {
            force = bool_value(k, val)?;
        } else if is_resource(k) && shown(k, mv, api) {
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
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
    q: QueryPairs,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (values, force) = parse_limits(&bytes, Api::Sets, mv)?;
    enforce_project(&s, &ctx, "os_compute_api:os-quota-sets:update", &id)?;
    let limits = s.compute.quota_update(&id, user_param(&q).as_deref(), &values, force).await?;
    // No `id` in the update's answer, as upstream.
    Ok(Json(json!({"quota_set": quota_view(None, &limits, mv, Api::Sets)})))
}

async fn delete(State(s): State<AppState>, ctx: Context, Path(id): Path<String>, q: QueryPairs) -> Result<StatusCode, ApiError> {
    enforce_project(&s, &ctx, "os_compute_api:os-quota-sets:delete", &id)?;
    s.compute.quota_delete(&id, user_param(&q).as_deref()).await?;
    Ok(StatusCode::ACCEPTED)
}

// ----- quota classes -----

async fn class_show(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.policy.enforce("os_compute_api:os-quota-class-sets:show", &ctx, &json!({"quota_class": id}))?;
    let limits = s.compute.quota_class(&id).await?;
    Ok(Json(json!({"quota_class_set": quota_view(Some(&id), &limits, mv, Api::Classes)})))
}

async fn class_update(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (values, _) = parse_limits(&bytes, Api::Classes, mv)?;
    s.policy.enforce("os_compute_api:os-quota-class-sets:update", &ctx, &json!({"quota_class": id}))?;
    let limits = s.compute.quota_class_update(&id, &values).await?;
    Ok(Json(json!({"quota_class_set": quota_view(None, &limits, mv, Api::Classes)})))
}

// ----- limits -----

/// `GET /limits[?tenant_id=]`: the absolute limits of the project and what it uses; no rate limits.
async fn limits(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    s.policy.enforce("os_compute_api:limits", &ctx, &json!({}))?;
    let mut project = ctx.project_id.clone().unwrap_or_default();
    if let Some(t) = q.get("tenant_id") {
        project = t.to_string();
        enforce_project(&s, &ctx, "os_compute_api:limits:other_project", &project)?;
    }
    let details = s.compute.quota_detail(&project, None).await?;
    let limit = |r: &str| details.get(r).map_or(-1, |d| d.limit);
    let used = |r: &str| details.get(r).map_or(0, |d| d.in_use);
    let mut absolute = json!({
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
    // The network limits left at 2.36, the image metadata limit at 2.39, the personality limits at 2.57.
    let mut gone: Vec<&str> = Vec::new();
    if mv >= v(36) {
        gone.extend([
            "maxTotalFloatingIps",
            "maxSecurityGroups",
            "maxSecurityGroupRules",
            "totalFloatingIpsUsed",
            "totalSecurityGroupsUsed",
        ]);
    }
    if mv >= v(39) {
        gone.push("maxImageMeta");
    }
    if mv >= v(57) {
        gone.extend(["maxPersonality", "maxPersonalitySize"]);
    }
    if let Value::Object(o) = &mut absolute {
        o.retain(|k, _| !gone.contains(&k.as_str()));
    }
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
        let at = |b: &[u8], api: Api, minor: u32| parse_limits(b, api, v(minor));
        let (l, force) = at(br#"{"quota_set": {"ram": "10", "force": true}}"#, Api::Sets, 1).unwrap();
        assert_eq!((l["ram"], force), (10, true));
        assert!(at(br#"{"quota_set": {"bogus": 1}}"#, Api::Sets, 1).is_err());
        assert!(at(br#"{"quota_class_set": {"force": true}}"#, Api::Classes, 1).is_err());
        assert!(at(br#"{"quota_set": {}, "x": 1}"#, Api::Sets, 1).is_err());
        assert!(at(br#"{}"#, Api::Sets, 1).is_err());
        // Network quotas leave quota sets at 2.36, injected files at 2.57.
        assert!(at(br#"{"quota_set": {"floating_ips": 1}}"#, Api::Sets, 35).is_ok());
        assert!(at(br#"{"quota_set": {"floating_ips": 1}}"#, Api::Sets, 36).is_err());
        assert!(at(br#"{"quota_set": {"injected_files": 1}}"#, Api::Sets, 57).is_err());
        assert!(at(br#"{"quota_class_set": {"server_groups": 1}}"#, Api::Classes, 49).is_err());
        assert!(at(br#"{"quota_class_set": {"server_groups": 1}}"#, Api::Classes, 50).is_ok());
    }
}
