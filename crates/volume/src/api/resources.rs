//! Everything beside `/volumes`: snapshots, types (extra specs, access), QoS specs, quotas and quota classes,
//! limits, availability zones, services, extensions, capabilities and pools, backups, attachments.

use api_common::{ApiError, Microversion, QueryPairs};
use auth::Context;
use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde_json::{Map, Value, json};

use super::{AppState, Params, body, entity, listing, p, param, views};
use crate::service::{QUOTA, QUOTA_CLASS, SNAPSHOT};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(&p("/snapshots"), get(snapshot_list).post(snapshot_create))
        .route(&p("/snapshots/detail"), get(snapshot_list_detail))
        .route(&p("/snapshots/{id}"), get(snapshot_show).put(snapshot_update).delete(snapshot_delete))
        .route(&p("/snapshots/{id}/action"), post(snapshot_action))
        .route(&p("/types"), get(type_list).post(type_create))
        .route(&p("/types/{id}"), get(type_show).put(type_update).delete(type_delete))
        .route(&p("/types/{id}/extra_specs"), get(specs_list).post(specs_set))
        .route(&p("/types/{id}/extra_specs/{key}"), get(spec_show).put(spec_update).delete(spec_delete))
        .route(&p("/types/{id}/os-volume-type-access"), get(type_access_list))
        .route(&p("/types/{id}/action"), post(type_action))
        .route(&p("/qos-specs"), get(qos_list).post(qos_create))
        .route(&p("/qos-specs/{id}"), get(qos_show).put(qos_set).delete(qos_delete))
        .route(&p("/qos-specs/{id}/delete_keys"), put(qos_delete_keys))
        .route(&p("/qos-specs/{id}/associations"), get(qos_associations))
        .route(&p("/qos-specs/{id}/associate"), get(qos_associate))
        .route(&p("/qos-specs/{id}/disassociate"), get(qos_disassociate))
        .route(&p("/qos-specs/{id}/disassociate_all"), get(qos_disassociate_all))
        .route(&p("/os-quota-sets/{target}"), get(quota_show).put(quota_update).delete(quota_delete))
        .route(&p("/os-quota-sets/{target}/defaults"), get(quota_defaults))
        .route(&p("/os-quota-class-sets/{class}"), get(quota_class_show).put(quota_class_update))
        .route(&p("/limits"), get(limits))
        .route(&p("/os-availability-zone"), get(availability_zones))
        .route(&p("/os-services"), get(services))
        .route(&p("/os-services/{action}"), put(service_update))
        .route(&p("/os-hosts"), get(hosts))
        .route(&p("/os-hosts/{host}"), get(host_show))
        .route(&p("/os-volume-transfer"), get(transfer_list).post(transfer_create))
        .route(&p("/os-volume-transfer/detail"), get(transfer_list_detail))
        .route(&p("/os-volume-transfer/{id}"), get(transfer_show).delete(transfer_delete))
        .route(&p("/os-volume-transfer/{id}/accept"), post(transfer_accept))
        .route(&p("/volume-transfers"), get(transfer_list).post(transfer_create))
        .route(&p("/volume-transfers/detail"), get(transfer_list_detail))
        .route(&p("/volume-transfers/{id}"), get(transfer_show).delete(transfer_delete))
        .route(&p("/volume-transfers/{id}/accept"), post(transfer_accept))
        .route(&p("/messages"), get(message_list))
        .route(&p("/messages/{id}"), get(message_show).delete(message_delete))
        .route(&p("/extensions"), get(extensions))
        .route(&p("/capabilities/{host}"), get(capabilities))
        .route(&p("/scheduler-stats/get_pools"), get(pools))
        .route(&p("/backups"), get(backup_list).post(backup_create))
        .route(&p("/backups/detail"), get(backup_list_detail))
        .route(&p("/backups/{id}"), get(backup_show).put(backup_update).delete(backup_delete))
        .route(&p("/backups/{id}/restore"), post(backup_restore))
        .route(&p("/backups/{id}/action"), post(backup_action))
        .route(&p("/attachments"), get(attachment_list).post(attachment_create))
        .route(&p("/attachments/detail"), get(attachment_list_detail))
        .route(&p("/attachments/{id}"), get(attachment_show).put(attachment_update).delete(attachment_delete))
        .route(&p("/attachments/{id}/action"), post(attachment_action))
}

fn since(v: Microversion, minor: u32) -> Result<(), ApiError> {
    if v < Microversion::new(3, minor) { Err(ApiError::not_found("The resource could not be found.")) } else { Ok(()) }
}

// ------------------------------------------------------------------------------------------------ snapshots

async fn snapshot_listing(s: &AppState, ctx: &Context, headers: &HeaderMap, q: &QueryPairs, mv: Microversion, detail: bool) -> Result<Json<Value>, ApiError> {
    s.enforce(ctx, "volume:get_all", None)?;
    listing::check_sort(q, &["id", "name", "description", "status", "size", "created_at", "updated_at", "volume_id"])?;
    let caller = s.caller(ctx, headers);
    let all = q.get_bool("all_tenants")?.unwrap_or(false);
    let docs = s.volume.snapshot_list(&caller, all).await?;
    let sc = views::SnapshotCtx { version: mv };
    let full: Vec<Value> = docs.iter().map(|d| views::snapshot(&sc, d, true)).collect();
    let full = listing::filter(full, q, &[("display_name", "name")]);
    let project = ctx.project_id.clone().unwrap_or_default();
    let path = if detail { "snapshots/detail" } else { "snapshots" };
    let (page, links) = listing::page(full, q, &format!("{}/v3/{project}/{path}", s.base_url))?;
    let out: Vec<Value> = page
        .iter()
        .filter_map(|v| docs.iter().find(|d| d["id"] == v["id"]))
        .map(|d| views::snapshot(&sc, d, detail))
        .collect();
    let mut body = json!({"snapshots": out});
    if !links.is_empty() {
        body["snapshots_links"] = json!(links);
    }
    Ok(Json(body))
}

async fn snapshot_list(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    snapshot_listing(&s, &ctx, &headers, &q, mv, false).await
}

async fn snapshot_list_detail(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    snapshot_listing(&s, &ctx, &headers, &q, mv, true).await
}

async fn snapshot_show(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params) -> Result<Json<Value>, ApiError> {
    let caller = s.caller(&ctx, &headers);
    let d = s.volume.snapshot_get(&caller, param(&path, "id")).await?;
    s.enforce(&ctx, "volume:get", d["project_id"].as_str())?;
    Ok(Json(json!({"snapshot": views::snapshot(&views::SnapshotCtx { version: mv }, &d, true)})))
}

async fn snapshot_create(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, bytes: Bytes) -> Result<Response, ApiError> {
    s.enforce(&ctx, "volume:create", None)?;
    let b = body(&bytes)?;
    let req = entity(&b, "snapshot")?;
    let caller = s.caller(&ctx, &headers);
    let d = s.volume.snapshot_create(&caller, req).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"snapshot": views::snapshot(&views::SnapshotCtx { version: mv }, &d, false)}))).into_response())
}

async fn snapshot_update(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    let b = body(&bytes)?;
    let req = entity(&b, "snapshot")?;
    let caller = s.caller(&ctx, &headers);
    let cur = s.volume.snapshot_get(&caller, param(&path, "id")).await?;
    s.enforce(&ctx, "volume:update", cur["project_id"].as_str())?;
    let d = s.volume.snapshot_update(&caller, param(&path, "id"), req).await?;
    Ok(Json(json!({"snapshot": views::snapshot(&views::SnapshotCtx { version: mv }, &d, false)})))
}

async fn snapshot_delete(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params) -> Result<StatusCode, ApiError> {
    let caller = s.caller(&ctx, &headers);
    let cur = s.volume.snapshot_get(&caller, param(&path, "id")).await?;
    s.enforce(&ctx, "volume:delete", cur["project_id"].as_str())?;
    s.volume.snapshot_delete(&caller, param(&path, "id"), false).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn snapshot_action(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params, bytes: Bytes) -> Result<StatusCode, ApiError> {
    let b = body(&bytes)?;
    let caller = s.caller(&ctx, &headers);
    let id = param(&path, "id");
    let cur = s.volume.snapshot_get(&caller, id).await?;
    let project = cur["project_id"].as_str();
    if let Some(arg) = b.get("os-reset_status") {
        s.enforce(&ctx, "volume_extension:snapshot_admin_actions:reset_status", project)?;
        s.volume.reset_status(&caller, SNAPSHOT, id, arg).await?;
    } else if b.get("os-force_delete").is_some() {
        s.enforce(&ctx, "volume_extension:snapshot_admin_actions:force_delete", project)?;
        s.volume.snapshot_delete(&caller, id, true).await?;
    } else if let Some(arg) = b.get("os-update_snapshot_status") {
        s.enforce(&ctx, "snapshot_extension:snapshot_actions:update_snapshot_status", project)?;
        s.volume.reset_status(&caller, SNAPSHOT, id, arg).await?;
    } else {
        return Err(ApiError::bad_request("There is no such action"));
    }
    Ok(StatusCode::ACCEPTED)
}

// ------------------------------------------------------------------------------------------------ types

async fn type_list(State(s): State<AppState>, ctx: Context, headers: HeaderMap, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    let caller = s.caller(&ctx, &headers);
    let is_public = q.get_bool("is_public")?;
    let mut types: Vec<Value> = s.volume.type_list(&caller, is_public).await?.iter().map(|t| views::volume_type(t, caller.is_admin)).collect();
    let mut q2 = q.clone();
    if q2.get("sort").is_none() && !q2.contains("sort_key") {
        q2.0.push(("sort".into(), "name:asc".into()));
    }
    types = listing::filter(types, &q2, &[]);
    let (page, _) = listing::page(types, &q2, "")?;
    Ok(Json(json!({"volume_types": page})))
}

async fn type_show(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params) -> Result<Json<Value>, ApiError> {
    let caller = s.caller(&ctx, &headers);
    let id = param(&path, "id");
    let t = if id == "default" { s.volume.type_default().await? } else { s.volume.type_get(&caller, id).await? };
    Ok(Json(json!({"volume_type": views::volume_type(&t, caller.is_admin)})))
}

async fn type_create(State(s): State<AppState>, ctx: Context, headers: HeaderMap, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:types_manage", None)?;
    let b = body(&bytes)?;
    let req = entity(&b, "volume_type")?;
    let caller = s.caller(&ctx, &headers);
    let t = s.volume.type_create(req).await?;
    Ok(Json(json!({"volume_type": views::volume_type(&t, caller.is_admin)})))
}

async fn type_update(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:types_manage", None)?;
    let b = body(&bytes)?;
    let req = entity(&b, "volume_type")?;
    let caller = s.caller(&ctx, &headers);
    let t = s.volume.type_update(&caller, param(&path, "id"), req).await?;
    let mut out = views::volume_type(&t, caller.is_admin);
    // Upstream's update answer has no access attribute.
    out.as_object_mut().map(|m| m.remove("os-volume-type-access:is_public"));
    Ok(Json(json!({"volume_type": out})))
}

async fn type_delete(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params) -> Result<StatusCode, ApiError> {
    s.enforce(&ctx, "volume_extension:types_manage", None)?;
    let caller = s.caller(&ctx, &headers);
    s.volume.type_delete(&caller, param(&path, "id")).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn specs_list(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:types_extra_specs:index", None)?;
    let caller = s.caller(&ctx, &headers);
    let t = s.volume.type_get(&caller, param(&path, "id")).await?;
    Ok(Json(json!({"extra_specs": views::volume_type(&t, caller.is_admin)["extra_specs"]})))
}

async fn specs_set(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:types_extra_specs:create", None)?;
    let b = body(&bytes)?;
    let specs = entity(&b, "extra_specs")?;
    let caller = s.caller(&ctx, &headers);
    let out = s.volume.type_set_specs(&caller, param(&path, "id"), specs).await?;
    Ok(Json(json!({"extra_specs": out})))
}

async fn spec_show(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:types_extra_specs:show", None)?;
    let caller = s.caller(&ctx, &headers);
    let t = s.volume.type_get(&caller, param(&path, "id")).await?;
    let key = param(&path, "key");
    match views::volume_type(&t, caller.is_admin)["extra_specs"].get(key) {
        Some(v) => Ok(Json(json!({key: v}))),
        None => Err(ApiError::not_found(format!("Volume Type {} has no extra specs with key {key}.", t["id"].as_str().unwrap_or_default()))),
    }
}

async fn spec_update(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:types_extra_specs:update", None)?;
    let b = body(&bytes)?;
    let key = param(&path, "key");
    let Some(obj) = b.as_object() else { return Err(ApiError::bad_request("Malformed request body")) };
    if obj.len() > 1 {
        return Err(ApiError::bad_request("Request body contains too many items."));
    }
    if !obj.contains_key(key) {
        return Err(ApiError::bad_request("Request body and URI mismatch"));
    }
    let caller = s.caller(&ctx, &headers);
    let out = s.volume.type_set_specs(&caller, param(&path, "id"), &b).await?;
    Ok(Json(Value::Object(out)))
}

async fn spec_delete(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params) -> Result<StatusCode, ApiError> {
    s.enforce(&ctx, "volume_extension:types_extra_specs:delete", None)?;
    let caller = s.caller(&ctx, &headers);
    s.volume.type_delete_spec(&caller, param(&path, "id"), param(&path, "key")).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn type_access_list(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:volume_type_access:get_all_for_type", None)?;
    let caller = s.caller(&ctx, &headers);
    let t = s.volume.type_get(&caller, param(&path, "id")).await?;
    if t["is_public"] == json!(true) {
        return Err(ApiError::not_found(format!("Volume type access not found for public type {}.", t["id"].as_str().unwrap_or_default())));
    }
    let access: Vec<Value> = t["projects"].as_array().cloned().unwrap_or_default().into_iter().map(|p| json!({"volume_type_id": t["id"], "project_id": p})).collect();
    Ok(Json(json!({"volume_type_access": access})))
}

async fn type_action(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params, bytes: Bytes) -> Result<StatusCode, ApiError> {
    let b = body(&bytes)?;
    let caller = s.caller(&ctx, &headers);
    let (add, arg, rule) = if let Some(a) = b.get("addProjectAccess") {
        (true, a, "volume_extension:volume_type_access:addProjectAccess")
    } else if let Some(a) = b.get("removeProjectAccess") {
        (false, a, "volume_extension:volume_type_access:removeProjectAccess")
    } else {
        return Err(ApiError::bad_request("There is no such action"));
    };
    s.enforce(&ctx, rule, None)?;
    let project = arg.get("project").and_then(Value::as_str).ok_or_else(|| ApiError::bad_request("Access list not available for public volume types: missing 'project'"))?;
    s.volume.type_access(&caller, param(&path, "id"), project, add).await?;
    Ok(StatusCode::ACCEPTED)
}

// ------------------------------------------------------------------------------------------------ QoS specs

async fn qos_list(State(s): State<AppState>, ctx: Context, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:qos_specs_manage:get_all", None)?;
    let list: Vec<Value> = s.volume.qos_list().await?.iter().map(views::qos).collect();
    let mut q = q.clone();
    if q.get("sort").is_none() && !q.contains("sort_key") {
        q.0.push(("sort".into(), "id:asc".into()));
    }
    let (page, _) = listing::page(list, &q, "")?;
    Ok(Json(json!({"qos_specs": page})))
}

async fn qos_show(State(s): State<AppState>, ctx: Context, path: Params) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:qos_specs_manage:get", None)?;
    let q = s.volume.qos_get(param(&path, "id")).await?;
    Ok(Json(json!({"qos_specs": views::qos(&q), "links": []})))
}

async fn qos_create(State(s): State<AppState>, ctx: Context, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:qos_specs_manage:create", None)?;
    let b = body(&bytes)?;
    let req = entity(&b, "qos_specs")?;
    let q = s.volume.qos_create(req).await?;
    Ok(Json(json!({"qos_specs": views::qos(&q), "links": []})))
}

async fn qos_set(State(s): State<AppState>, ctx: Context, path: Params, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:qos_specs_manage:update", None)?;
    let b = body(&bytes)?;
    let req = entity(&b, "qos_specs")?;
    let out = s.volume.qos_set_keys(param(&path, "id"), req).await?;
    Ok(Json(json!({"qos_specs": out})))
}

async fn qos_delete_keys(State(s): State<AppState>, ctx: Context, path: Params, bytes: Bytes) -> Result<StatusCode, ApiError> {
    s.enforce(&ctx, "volume_extension:qos_specs_manage:update", None)?;
    let b = body(&bytes)?;
    let keys: Vec<String> = b.get("keys").and_then(Value::as_array).ok_or_else(|| ApiError::bad_request("Malformed request body: missing 'keys'"))?
        .iter().filter_map(|k| k.as_str().map(str::to_string)).collect();
    s.volume.qos_delete_keys(param(&path, "id"), &keys).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn qos_delete(State(s): State<AppState>, ctx: Context, path: Params, q: QueryPairs) -> Result<StatusCode, ApiError> {
    s.enforce(&ctx, "volume_extension:qos_specs_manage:delete", None)?;
    s.volume.qos_delete(param(&path, "id"), q.get_bool("force")?.unwrap_or(false)).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn qos_associations(State(s): State<AppState>, ctx: Context, path: Params) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:qos_specs_manage:get", None)?;
    let list: Vec<Value> = s.volume.qos_associations(param(&path, "id")).await?.iter()
        .map(|t| json!({"association_type": "volume_type", "name": t["name"], "id": t["id"]})).collect();
    Ok(Json(json!({"qos_associations": list})))
}

async fn qos_associate(State(s): State<AppState>, ctx: Context, path: Params, q: QueryPairs) -> Result<StatusCode, ApiError> {
    s.enforce(&ctx, "volume_extension:qos_specs_manage:update", None)?;
    s.volume.qos_associate(param(&path, "id"), q.get("vol_type_id"), true).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn qos_disassociate(State(s): State<AppState>, ctx: Context, path: Params, q: QueryPairs) -> Result<StatusCode, ApiError> {
    s.enforce(&ctx, "volume_extension:qos_specs_manage:update", None)?;
    s.volume.qos_associate(param(&path, "id"), q.get("vol_type_id"), false).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn qos_disassociate_all(State(s): State<AppState>, ctx: Context, path: Params) -> Result<StatusCode, ApiError> {
    s.enforce(&ctx, "volume_extension:qos_specs_manage:update", None)?;
    s.volume.qos_disassociate_all(param(&path, "id")).await?;
    Ok(StatusCode::ACCEPTED)
}

// ------------------------------------------------------------------------------------------------ quotas

fn quota_set(id: &str, limits: &std::collections::BTreeMap<String, i64>) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(id));
    for (k, v) in limits {
        m.insert(k.clone(), json!(v));
    }
    Value::Object(m)
}

async fn quota_show(State(s): State<AppState>, ctx: Context, path: Params, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    let target = param(&path, "target");
    s.enforce(&ctx, "volume_extension:quotas:show", Some(target))?;
    let limits = s.volume.quota_limits(target).await?;
    if q.get_bool("usage")?.unwrap_or(false) {
        let usage = s.volume.quota_usage(target).await?;
        let mut m = Map::new();
        m.insert("id".into(), json!(target));
        for (k, limit) in &limits {
            m.insert(k.clone(), json!({"limit": limit, "in_use": usage.get(k).copied().unwrap_or(0), "reserved": 0, "allocated": 0}));
        }
        return Ok(Json(json!({"quota_set": m})));
    }
    Ok(Json(json!({"quota_set": quota_set(target, &limits)})))
}

async fn quota_defaults(State(s): State<AppState>, ctx: Context, path: Params) -> Result<Json<Value>, ApiError> {
    let target = param(&path, "target");
    s.enforce(&ctx, "volume_extension:quotas:show", Some(target))?;
    Ok(Json(json!({"quota_set": quota_set(target, &s.volume.quota_defaults().await?)})))
}

async fn quota_update(State(s): State<AppState>, ctx: Context, path: Params, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    let target = param(&path, "target");
    s.enforce(&ctx, "volume_extension:quotas:update", Some(target))?;
    let b = body(&bytes)?;
    let req = entity(&b, "quota_set")?.as_object().cloned().unwrap_or_default();
    s.volume.quota_update(QUOTA, target, &req).await?;
    let mut out = quota_set(target, &s.volume.quota_limits(target).await?);
    out.as_object_mut().map(|m| m.remove("id"));
    Ok(Json(json!({"quota_set": out})))
}

async fn quota_delete(State(s): State<AppState>, ctx: Context, path: Params) -> Result<StatusCode, ApiError> {
    let target = param(&path, "target");
    s.enforce(&ctx, "volume_extension:quotas:delete", Some(target))?;
    s.volume.quota_delete(target).await?;
    Ok(StatusCode::OK)
}

async fn quota_class_show(State(s): State<AppState>, ctx: Context, path: Params) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:quota_classes", None)?;
    let class = param(&path, "class");
    let mut limits = s.volume.quota_defaults().await?;
    if class != "default" {
        let own = s.volume.store().resource_get(QUOTA_CLASS, class).await.map_err(ApiError::from)?;
        for (k, v) in own.and_then(|d| d["limits"].as_object().cloned()).unwrap_or_default() {
            if let Some(n) = v.as_i64() {
                limits.insert(k, n);
            }
        }
    }
    Ok(Json(json!({"quota_class_set": quota_set(class, &limits)})))
}

async fn quota_class_update(State(s): State<AppState>, ctx: Context, path: Params, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:quota_classes:update", None)?;
    let class = param(&path, "class");
    let b = body(&bytes)?;
    let req = entity(&b, "quota_class_set")?.as_object().cloned().unwrap_or_default();
    s.volume.quota_update(QUOTA_CLASS, class, &req).await?;
    let mut limits = s.volume.quota_defaults().await?;
    let own = s.volume.store().resource_get(QUOTA_CLASS, class).await.map_err(ApiError::from)?;
    for (k, v) in own.and_then(|d| d["limits"].as_object().cloned()).unwrap_or_default() {
        if let Some(n) = v.as_i64() {
            limits.insert(k, n);
        }
    }
    let mut out = quota_set(class, &limits);
    out.as_object_mut().map(|m| m.remove("id"));
    Ok(Json(json!({"quota_class_set": out})))
}

async fn limits(State(s): State<AppState>, ctx: Context) -> Result<Json<Value>, ApiError> {
    let project = ctx.project_id.clone().unwrap_or_default();
    let l = s.volume.quota_limits(&project).await?;
    let u = s.volume.quota_usage(&project).await?;
    let g = |m: &std::collections::BTreeMap<String, i64>, k: &str| m.get(k).copied().unwrap_or(0);
    Ok(Json(json!({"limits": {"rate": [], "absolute": {
        "maxTotalVolumes": g(&l, "volumes"),
        "maxTotalSnapshots": g(&l, "snapshots"),
        "maxTotalVolumeGigabytes": g(&l, "gigabytes"),
        "maxTotalBackups": g(&l, "backups"),
        "maxTotalBackupGigabytes": g(&l, "backup_gigabytes"),
        "totalVolumesUsed": g(&u, "volumes"),
        "totalSnapshotsUsed": g(&u, "snapshots"),
        "totalGigabytesUsed": g(&u, "gigabytes"),
        "totalBackupsUsed": g(&u, "backups"),
        "totalBackupGigabytesUsed": g(&u, "backup_gigabytes"),
    }}})))
}

// ------------------------------------------------------------------------------------------------ zones, services, extensions

async fn availability_zones(State(s): State<AppState>, _ctx: Context) -> Result<Json<Value>, ApiError> {
    let zones: Vec<Value> = s.volume.availability_zones().await?.into_iter().map(|(name, up)| json!({"zoneName": name, "zoneState": {"available": up}})).collect();
    Ok(Json(json!({"availabilityZoneInfo": zones})))
}

async fn services(State(s): State<AppState>, ctx: Context, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:services:index", None)?;
    let list: Vec<Value> = s
        .volume
        .services()
        .await?
        .into_iter()
        .filter(|sv| q.get("host").is_none_or(|h| sv["host"] == json!(h) || sv["host"].as_str().is_some_and(|x| x.split('@').next() == Some(h))))
        .filter(|sv| q.get("binary").is_none_or(|b| sv["binary"] == json!(b)))
        .collect();
    Ok(Json(json!({"services": list})))
}

async fn service_update(State(s): State<AppState>, ctx: Context, path: Params, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:services:update", None)?;
    let b = body(&bytes)?;
    let host = b.get("host").and_then(Value::as_str).ok_or_else(|| ApiError::bad_request("Missing required element 'host' in request body."))?;
    let binary = b.get("binary").and_then(Value::as_str).unwrap_or("");
    let (disabled, reason) = match param(&path, "action") {
        "enable" => (false, None),
        "disable" => (true, None),
        "disable-log-reason" => (true, Some(b.get("disabled_reason").and_then(Value::as_str).ok_or_else(|| ApiError::bad_request("Missing disabled reason field"))?)),
        "freeze" | "thaw" => {
            // Replication failover is not offered: no backend of this host can be frozen or thawed.
            let known = s.volume.services().await?.iter().any(|sv| sv["binary"] == "cinder-volume" && sv["host"].as_str().is_some_and(|h| h == host || h.split('@').next() == Some(host)));
            return Err(if known {
                ApiError::bad_request(format!("Host {host} does not support replication failover."))
            } else {
                ApiError::bad_request(format!("Invalid host: {host} is not a known volume host."))
            });
        }
        _ => return Err(ApiError::not_found("Unknown action")),
    };
    if s.volume.service_set(host, binary, disabled, reason).await? == 0 {
        return Err(ApiError::not_found(format!("Service {binary} on host {host} could not be found.")));
    }
    let mut out = json!({"host": host, "service": binary, "binary": binary, "disabled": disabled, "status": if disabled { "disabled" } else { "enabled" }});
    if reason.is_some() || !disabled {
        out["disabled_reason"] = reason.map(Value::from).unwrap_or(Value::Null);
    }
    Ok(Json(out))
}

const EXTENSIONS: &[(&str, &str, &str)] = &[
    ("os-admin-actions", "AdminActions", "Enable admin actions."),
    ("os-availability-zone", "AvailabilityZones", "Describe Availability Zones."),
    ("backups", "Backups", "Backups support."),
    ("capabilities", "Capabilities", "Capabilities support."),
    ("encryption", "VolumeTypeEncryption", "Encryption support for volume types."),
    ("os-extended-snapshot-attributes", "ExtendedSnapshotAttributes", "Extended SnapshotAttributes support."),
    ("os-extended-services", "ExtendedServices", "Extended services support."),
    ("os-hosts", "Hosts", "Admin-only host administration."),
    ("os-vol-image-meta", "VolumeImageMetadata", "Show image metadata associated with the volume."),
    ("os-quota-class-sets", "QuotaClasses", "Quota classes management support."),
    ("os-quota-sets", "Quotas", "Quota management support."),
    ("qos-specs", "Qos_specs_manage", "QoS specs support."),
    ("scheduler-stats", "Scheduler_stats", "Scheduler stats support."),
    ("os-services", "Services", "Services support."),
    ("os-snapshot-actions", "SnapshotActions", "Enable snapshot manager actions."),
    ("os-types-extra-specs", "TypesExtraSpecs", "Type extra specs support."),
    ("os-types-manage", "TypesManage", "Types manage support."),
    ("os-volume-actions", "VolumeActions", "Enable volume actions."),
    ("os-vol-host-attr", "VolumeHostAttribute", "Expose host as an attribute of a volume."),
    ("os-vol-mig-status-attr", "VolumeMigStatusAttribute", "Expose migration_status as an attribute of a volume."),
    ("os-vol-tenant-attr", "VolumeTenantAttribute", "Expose the internal project_id as an attribute of a volume."),
    ("os-volume-type-access", "VolumeTypeAccess", "Volume type access support."),
    ("os-used-limits", "UsedLimits", "Provide data on limited resources that are being used."),
];

async fn extensions(_ctx: Context) -> Json<Value> {
    let list: Vec<Value> = EXTENSIONS
        .iter()
        .map(|(alias, name, description)| json!({"alias": alias, "name": name, "description": description, "updated": "2013-04-18T00:00:00+00:00", "links": []}))
        .collect();
    Json(json!({"extensions": list}))
}

async fn capabilities(State(s): State<AppState>, ctx: Context, path: Params) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:capabilities", None)?;
    let host = param(&path, "host");
    let b = s.volume.backends().await?.into_iter().find(|b| b.host == host || b.host.split('@').next() == Some(host))
        .ok_or_else(|| ApiError::not_found(format!("Service {host} could not be found.")))?;
    Ok(Json(json!({
        "namespace": format!("OS::Storage::Capabilities::{}", b.host),
        "vendor_name": b.vendor_name,
        "volume_backend_name": b.backend_name,
        "pool_name": b.backend_name,
        "driver_version": "1.0",
        "storage_protocol": b.storage_protocol,
        "display_name": null,
        "description": null,
        "visibility": null,
        "replication_targets": [],
        "properties": {
            "thin_provisioning": {"title": "Thin Provisioning", "description": "Sets thin provisioning.", "type": "boolean"},
        },
    })))
}

async fn pools(State(s): State<AppState>, ctx: Context, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:scheduler_stats:get_pools", None)?;
    let detail = q.get_bool("detail")?.unwrap_or(false);
    let list: Vec<Value> = s.volume.backends().await?.into_iter().map(|b| {
        let name = format!("{}#{}", b.host, b.backend_name);
        if !detail {
            return json!({"name": name});
        }
        let mut caps = json!({
            "volume_backend_name": b.backend_name, "vendor_name": b.vendor_name, "driver_version": "1.0",
            "storage_protocol": b.storage_protocol, "total_capacity_gb": b.total_capacity_gb,
            "free_capacity_gb": b.free_capacity_gb, "provisioned_capacity_gb": b.provisioned_capacity_gb,
            "reserved_percentage": b.reserved_percentage, "max_over_subscription_ratio": b.max_over_subscription_ratio,
            "thin_provisioning_support": b.thin_provisioning_support, "thick_provisioning_support": !b.thin_provisioning_support,
            "multiattach": true, "timestamp": super::super::service::now(), "pool_name": b.backend_name,
        });
        for (k, v) in &b.capabilities {
            caps[k] = json!(v);
        }
        json!({"name": name, "capabilities": caps})
    }).collect();
    Ok(Json(json!({"pools": list})))
}

async fn hosts(State(s): State<AppState>, ctx: Context) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:services:index", None)?;
    let list: Vec<Value> = s
        .volume
        .services()
        .await?
        .into_iter()
        .filter(|sv| sv["binary"] != "cinder-scheduler")
        .map(|sv| json!({
            "service-status": if sv["state"] == "up" { "available" } else { "unavailable" },
            "service": sv["binary"],
            "zone": sv["zone"],
            "service-state": sv["status"],
            "host_name": sv["host"],
            "last-update": sv["updated_at"],
        }))
        .collect();
    Ok(Json(json!({"hosts": list})))
}

async fn host_show(State(s): State<AppState>, ctx: Context, path: Params) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "volume_extension:services:index", None)?;
    let host = param(&path, "host");
    let known = s.volume.services().await?.iter().any(|sv| sv["binary"] == "cinder-volume" && sv["host"].as_str().is_some_and(|h| h == host || h.split('@').next() == Some(host)));
    if !known {
        return Err(ApiError::not_found(format!("Host {host} could not be found.")));
    }
    let usage = s.volume.host_usage(host).await?;
    let resource = |project: &str, vc: i64, vg: i64, sc: i64, sg: i64| json!({"resource": {
        "host": host, "project": project, "volume_count": vc.to_string(), "total_volume_gb": vg.to_string(),
        "snapshot_count": sc.to_string(), "total_snapshot_gb": sg.to_string(),
    }});
    let (tv, tg, ts, tsg) = usage.iter().fold((0, 0, 0, 0), |a, u| (a.0 + u.1, a.1 + u.2, a.2 + u.3, a.3 + u.4));
    let mut list = vec![resource("(total)", tv, tg, ts, tsg)];
    list.extend(usage.iter().map(|(p, a, b, c, d)| resource(p, *a, *b, *c, *d)));
    Ok(Json(json!({"host": list})))
}

fn transfer_view(s: &AppState, t: &Value, detail: bool) -> Value {
    let project = t["project_id"].as_str().unwrap_or_default();
    let mut out = json!({
        "id": t["id"], "name": t["name"], "volume_id": t["volume_id"],
        "links": s.link(project, "os-volume-transfer", t["id"].as_str().unwrap_or_default()),
    });
    if detail {
        out["created_at"] = t["created_at"].clone();
    }
    out
}

async fn transfer_create(State(s): State<AppState>, ctx: Context, headers: HeaderMap, bytes: Bytes) -> Result<Response, ApiError> {
    s.enforce(&ctx, "volume:create_transfer", None)?;
    let b = body(&bytes)?;
    let req = entity(&b, "transfer")?;
    let caller = s.caller(&ctx, &headers);
    let t = s.volume.transfer_create(&caller, req).await?;
    let mut out = transfer_view(&s, &t, true);
    out["auth_key"] = t["auth_key"].clone();
    Ok((StatusCode::ACCEPTED, Json(json!({"transfer": out}))).into_response())
}

async fn transfer_listing(s: &AppState, ctx: &Context, headers: &HeaderMap, q: &QueryPairs, detail: bool) -> Result<Json<Value>, ApiError> {
    let caller = s.caller(ctx, headers);
    let all = q.get_bool("all_tenants")?.unwrap_or(false);
    let list: Vec<Value> = s.volume.transfer_list(&caller, all).await?.iter().map(|t| transfer_view(s, t, true)).collect();
    let list = listing::filter(list, q, &[]);
    let (page, _) = listing::page(list, q, "")?;
    let out: Vec<Value> = page.into_iter().map(|mut t| {
        if !detail {
            t.as_object_mut().map(|m| m.remove("created_at"));
        }
        t
    }).collect();
    Ok(Json(json!({"transfers": out})))
}

async fn transfer_list(State(s): State<AppState>, ctx: Context, headers: HeaderMap, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    transfer_listing(&s, &ctx, &headers, &q, false).await
}

async fn transfer_list_detail(State(s): State<AppState>, ctx: Context, headers: HeaderMap, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    transfer_listing(&s, &ctx, &headers, &q, true).await
}

async fn transfer_show(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params) -> Result<Json<Value>, ApiError> {
    let caller = s.caller(&ctx, &headers);
    let t = s.volume.transfer_get(&caller, param(&path, "id")).await?;
    Ok(Json(json!({"transfer": transfer_view(&s, &t, true)})))
}

async fn transfer_delete(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params) -> Result<StatusCode, ApiError> {
    let caller = s.caller(&ctx, &headers);
    s.volume.transfer_delete(&caller, param(&path, "id")).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn transfer_accept(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params, bytes: Bytes) -> Result<Response, ApiError> {
    s.enforce(&ctx, "volume:accept_transfer", None)?;
    let b = body(&bytes)?;
    let req = entity(&b, "accept")?;
    let key = req.get("auth_key").and_then(Value::as_str).ok_or_else(|| ApiError::bad_request("Incorrect request body format: auth_key is required"))?;
    let caller = s.caller(&ctx, &headers);
    let t = s.volume.transfer_accept(&caller, param(&path, "id"), key).await?;
    let out = json!({"id": t["id"], "name": t["name"], "volume_id": t["volume_id"], "links": s.link(caller.project(), "os-volume-transfer", t["id"].as_str().unwrap_or_default())});
    Ok((StatusCode::ACCEPTED, Json(json!({"transfer": out}))).into_response())
}

fn message_view(s: &AppState, m: &Value) -> Value {
    let project = m["project_id"].as_str().unwrap_or_default();
    json!({
        "id": m["id"], "request_id": m["request_id"], "message_level": m["message_level"], "event_id": m["event_id"],
        "user_message": m["user_message"], "resource_type": m["resource_type"], "resource_uuid": m["resource_uuid"],
        "created_at": m["created_at"], "guaranteed_until": m["guaranteed_until"],
        "links": s.link(project, "messages", m["id"].as_str().unwrap_or_default()),
    })
}

async fn message_list(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    since(mv, 3)?;
    let caller = s.caller(&ctx, &headers);
    let list: Vec<Value> = s.volume.message_list(&caller).await?.iter().map(|m| message_view(&s, m)).collect();
    let list = listing::filter(list, &q, &[]);
    let (page, _) = listing::page(list, &q, "")?;
    Ok(Json(json!({"messages": page})))
}

async fn message_show(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params) -> Result<Json<Value>, ApiError> {
    since(mv, 3)?;
    let caller = s.caller(&ctx, &headers);
    let m = s.volume.message_get(&caller, param(&path, "id")).await?;
    Ok(Json(json!({"message": message_view(&s, &m)})))
}

async fn message_delete(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params) -> Result<StatusCode, ApiError> {
    since(mv, 3)?;
    let caller = s.caller(&ctx, &headers);
    s.volume.message_delete(&caller, param(&path, "id")).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------------------------------------ backups

async fn backup_listing(s: &AppState, ctx: &Context, headers: &HeaderMap, q: &QueryPairs, mv: Microversion, detail: bool) -> Result<Json<Value>, ApiError> {
    s.enforce(ctx, "backup:get_all", None)?;
    let caller = s.caller(ctx, headers);
    let all = q.get_bool("all_tenants")?.unwrap_or(false);
    let docs = s.volume.backup_list(&caller, all).await?;
    let full: Vec<Value> = docs.iter().map(|b| views::backup(s, b, true, mv, true)).collect();
    let full = listing::filter(full, q, &[]);
    let project = ctx.project_id.clone().unwrap_or_default();
    let (page, links) = listing::page(full, q, &format!("{}/v3/{project}/backups", s.base_url))?;
    let out: Vec<Value> = page.iter().filter_map(|v| docs.iter().find(|d| d["id"] == v["id"])).map(|d| views::backup(s, d, detail, mv, caller.is_admin)).collect();
    let mut body = json!({"backups": out});
    if !links.is_empty() {
        body["backups_links"] = json!(links);
    }
    Ok(Json(body))
}

async fn backup_list(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    backup_listing(&s, &ctx, &headers, &q, mv, false).await
}

async fn backup_list_detail(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    backup_listing(&s, &ctx, &headers, &q, mv, true).await
}

async fn backup_show(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params) -> Result<Json<Value>, ApiError> {
    let caller = s.caller(&ctx, &headers);
    let b = s.volume.backup_get(&caller, param(&path, "id")).await?;
    s.enforce(&ctx, "backup:get", b["project_id"].as_str())?;
    Ok(Json(json!({"backup": views::backup(&s, &b, true, mv, caller.is_admin)})))
}

async fn backup_create(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, bytes: Bytes) -> Result<Response, ApiError> {
    s.enforce(&ctx, "backup:create", None)?;
    let b = body(&bytes)?;
    let req = entity(&b, "backup")?;
    let caller = s.caller(&ctx, &headers);
    let out = s.volume.backup_create(&caller, req).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"backup": views::backup(&s, &out, false, mv, caller.is_admin)}))).into_response())
}

async fn backup_update(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    since(mv, 9)?;
    let b = body(&bytes)?;
    let req = entity(&b, "backup")?;
    let caller = s.caller(&ctx, &headers);
    let cur = s.volume.backup_get(&caller, param(&path, "id")).await?;
    s.enforce(&ctx, "backup:update", cur["project_id"].as_str())?;
    let out = s.volume.backup_update(&caller, param(&path, "id"), req).await?;
    Ok(Json(json!({"backup": views::backup(&s, &out, false, mv, caller.is_admin)})))
}

async fn backup_delete(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params) -> Result<StatusCode, ApiError> {
    let caller = s.caller(&ctx, &headers);
    let b = s.volume.backup_get(&caller, param(&path, "id")).await?;
    s.enforce(&ctx, "backup:delete", b["project_id"].as_str())?;
    s.volume.backup_delete(&caller, param(&path, "id"), false).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn backup_restore(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params, bytes: Bytes) -> Result<Response, ApiError> {
    let caller = s.caller(&ctx, &headers);
    let b = s.volume.backup_get(&caller, param(&path, "id")).await?;
    s.enforce(&ctx, "backup:restore", b["project_id"].as_str())?;
    let req = if bytes.is_empty() { json!({}) } else { body(&bytes)? };
    let restore = req.get("restore").cloned().unwrap_or_else(|| json!({}));
    let out = s.volume.backup_restore(&caller, param(&path, "id"), &restore).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"restore": out}))).into_response())
}

async fn backup_action(State(s): State<AppState>, ctx: Context, headers: HeaderMap, path: Params, bytes: Bytes) -> Result<StatusCode, ApiError> {
    let b = body(&bytes)?;
    let caller = s.caller(&ctx, &headers);
    let id = param(&path, "id");
    let cur = s.volume.backup_get(&caller, id).await?;
    if let Some(arg) = b.get("os-reset_status") {
        s.enforce(&ctx, "volume_extension:backup_admin_actions:reset_status", cur["project_id"].as_str())?;
        s.volume.reset_status(&caller, crate::service::BACKUP, id, arg).await?;
    } else if b.get("os-force_delete").is_some() {
        s.enforce(&ctx, "volume_extension:backup_admin_actions:force_delete", cur["project_id"].as_str())?;
        s.volume.backup_delete(&caller, id, true).await?;
    } else {
        return Err(ApiError::bad_request("There is no such action"));
    }
    Ok(StatusCode::ACCEPTED)
}

// ------------------------------------------------------------------------------------------------ attachments

async fn attachment_listing(s: &AppState, ctx: &Context, headers: &HeaderMap, q: &QueryPairs, mv: Microversion, detail: bool) -> Result<Json<Value>, ApiError> {
    since(mv, 27)?;
    let caller = s.caller(ctx, headers);
    let all = q.get_bool("all_tenants")?.unwrap_or(false);
    let docs = s.volume.attachment_list(&caller, all).await?;
    let full: Vec<Value> = docs.iter().map(|a| {
        let mut v = views::attachment(a, true);
        v["created_at"] = a["attach_time"].clone();
        v
    }).collect();
    let full = listing::filter(full, q, &[("instance_id", "instance")]);
    let (page, _) = listing::page(full, q, "")?;
    let out: Vec<Value> = page.iter().filter_map(|v| docs.iter().find(|d| d["id"] == v["id"])).map(|a| views::attachment(a, detail)).collect();
    Ok(Json(json!({"attachments": out})))
}

async fn attachment_list(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    attachment_listing(&s, &ctx, &headers, &q, mv, false).await
}

async fn attachment_list_detail(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    attachment_listing(&s, &ctx, &headers, &q, mv, true).await
}

async fn attachment_show(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params) -> Result<Json<Value>, ApiError> {
    since(mv, 27)?;
    let caller = s.caller(&ctx, &headers);
    let a = s.volume.attachment_get(&caller, param(&path, "id")).await?;
    Ok(Json(json!({"attachment": views::attachment(&a, true)})))
}

async fn attachment_create(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    since(mv, 27)?;
    s.enforce(&ctx, "volume:attachment_create", None)?;
    let b = body(&bytes)?;
    let req = entity(&b, "attachment")?;
    let caller = s.caller(&ctx, &headers);
    let a = s.volume.attachment_create(&caller, req).await?;
    Ok(Json(json!({"attachment": views::attachment(&a, true)})))
}

async fn attachment_update(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    since(mv, 27)?;
    s.enforce(&ctx, "volume:attachment_update", None)?;
    let b = body(&bytes)?;
    let req = entity(&b, "attachment")?;
    let caller = s.caller(&ctx, &headers);
    let a = s.volume.attachment_update(&caller, param(&path, "id"), req).await?;
    Ok(Json(json!({"attachment": views::attachment(&a, true)})))
}

async fn attachment_delete(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params) -> Result<Json<Value>, ApiError> {
    since(mv, 27)?;
    s.enforce(&ctx, "volume:attachment_delete", None)?;
    let caller = s.caller(&ctx, &headers);
    s.volume.attachment_delete(&caller, param(&path, "id")).await?;
    Ok(Json(json!({"attachments": []})))
}

async fn attachment_action(State(s): State<AppState>, ctx: Context, headers: HeaderMap, Extension(mv): Extension<Microversion>, path: Params, bytes: Bytes) -> Result<StatusCode, ApiError> {
    since(mv, 44)?;
    let b = body(&bytes)?;
    if b.get("os-complete").is_none() {
        return Err(ApiError::bad_request("There is no such action"));
    }
    s.enforce(&ctx, "volume:attachment_complete", None)?;
    let caller = s.caller(&ctx, &headers);
    s.volume.attachment_complete(&caller, param(&path, "id")).await?;
    Ok(StatusCode::NO_CONTENT)
}
