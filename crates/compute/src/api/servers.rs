//! Servers (`/servers`, `/servers/detail`, `/servers/{id}`), server actions (`/servers/{id}/action`), server
//! metadata, console output and instance actions (`/servers/{id}/os-instance-actions`).

use std::collections::BTreeMap;

use ::auth::Context;
use api_common::{ApiError, Page, QueryPairs, RequestId};
use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use compute_rpc::Action;
use serde_json::{Map, Value, json};
use sha2::Digest;

use super::{AppState, body, invalid, member, only};
use crate::{
    servers::{Boot, Caller, status_of, vm_states_of_status},
    service::Viewer,
    store::{InstanceFilter, InstanceRow},
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/servers", get(list).post(create))
        .route("/v2.1/servers/detail", get(list_detail))
        .route("/v2.1/servers/{id}", get(show).put(update).delete(delete))
        .route("/v2.1/servers/{id}/action", post(action))
        .route("/v2.1/servers/{id}/metadata", get(meta_list).put(meta_replace).post(meta_merge))
        .route("/v2.1/servers/{id}/metadata/{key}", get(meta_show).put(meta_put).delete(meta_delete))
        .route("/v2.1/servers/{id}/os-instance-actions", get(actions_list))
        .route("/v2.1/servers/{id}/diagnostics", get(diagnostics))
        .route("/v2.1/os-server-external-events", post(external_events))
        .route("/v2.1/servers/{id}/os-instance-actions/{request_id}", get(action_show))
}

const MAX_LIMIT: usize = 1000;

fn caller(s: &AppState, ctx: &Context) -> Caller {
    Caller { user_id: ctx.user_id.clone(), project_id: ctx.project_id.clone().unwrap_or_default(), admin: s.is_admin(ctx) }
}

/// Checks `rule` against the instance's project (Nova's target for server policies).
fn enforce_on(s: &AppState, ctx: &Context, rule: &str, project_id: &str) -> Result<(), ApiError> {
    s.policy.enforce(rule, ctx, &json!({"project_id": project_id, "user_id": ctx.user_id}))
}

fn iso(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us).map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default()
}

/// `launched_at`/`terminated_at` as Nova renders them (microseconds, no zone).
fn iso_us(us: Option<i64>) -> Value {
    us.and_then(chrono::DateTime::from_timestamp_micros)
        .map(|t| json!(t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()))
        .unwrap_or(Value::Null)
}

/// Nova's `hostId`: an opaque hash of the project and host, empty without a host.
fn host_id(project_id: &str, host: Option<&str>) -> String {
    match host {
        Some(h) if !h.is_empty() => hex(&sha2::Sha224::digest(format!("{project_id}{h}").as_bytes())),
        _ => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn summary(s: &AppState, i: &InstanceRow) -> Value {
    json!({"id": i.uuid, "name": i.display_name, "links": s.links(&format!("/servers/{}", i.uuid))})
}

/// The full server view at 2.1.
fn detail(s: &AppState, admin: bool, i: &InstanceRow, metadata: BTreeMap<String, String>) -> Value {
    let bookmark = |path: String| json!([{"rel": "bookmark", "href": format!("{}{path}", s.base_url)}]);
    let image = if i.image_ref.is_empty() {
        json!("")
    } else {
        json!({"id": i.image_ref, "links": bookmark(format!("/images/{}", i.image_ref))})
    };
    let mut v = json!({
        "id": i.uuid,
        "name": i.display_name,
        "status": status_of(&i.vm_state, i.task_state.as_deref()),
        "tenant_id": i.project_id,
        "user_id": i.user_id,
        "metadata": metadata,
        "hostId": host_id(&i.project_id, i.host.as_deref()),
        "image": image,
        "flavor": {"id": i.flavor.flavorid, "links": bookmark(format!("/flavors/{}", i.flavor.flavorid))},
        "created": iso(i.created_at),
        "updated": iso(i.updated_at),
        "addresses": {},
        "accessIPv4": i.access_ip_v4.clone().unwrap_or_default(),
        "accessIPv6": i.access_ip_v6.clone().unwrap_or_default(),
        "links": s.links(&format!("/servers/{}", i.uuid)),
        "key_name": i.key_name,
        "progress": i.progress,
        "config_drive": if i.config_drive { "True" } else { "" },
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": i.availability_zone.clone().unwrap_or_else(|| if i.host.is_some() { "nova".into() } else { String::new() }),
        "OS-EXT-STS:vm_state": i.vm_state,
        "OS-EXT-STS:task_state": i.task_state,
        "OS-EXT-STS:power_state": i.power_state,
        "OS-SRV-USG:launched_at": iso_us(i.launched_at),
        "OS-SRV-USG:terminated_at": iso_us(i.terminated_at),
        "os-extended-volumes:volumes_attached": [],
        "security_groups": [{"name": "default"}],
    });
    if admin {
        v["OS-EXT-SRV-ATTR:host"] = json!(i.host);
        v["OS-EXT-SRV-ATTR:hypervisor_hostname"] = json!(i.node);
        v["OS-EXT-SRV-ATTR:instance_name"] = json!(format!("instance-{}", &i.uuid[..8.min(i.uuid.len())]));
    }
    if let Some(f) = &i.fault
        && matches!(i.vm_state.as_str(), "error" | "deleted")
    {
        let mut fault = json!({"code": f["code"], "message": f["message"], "created": f["created"]});
        // Details of 500s only for admins, as upstream.
        if (admin || f["code"] != 500) && !f["details"].is_null() {
            fault["details"] = f["details"].clone();
        }
        v["fault"] = fault;
    }
    v
}

// ----- create -----

fn string_field(m: &Map<String, Value>, field: &str, max: usize) -> Result<Option<String>, ApiError> {
    match m.get(field) {
        None => Ok(None),
        Some(Value::String(t)) if t.chars().count() <= max => Ok(Some(t.clone())),
        Some(v @ Value::String(_)) => Err(invalid(field, v, &format!("{v} is too long"))),
        Some(v) => Err(invalid(field, v, &format!("{v} is not of type 'string'"))),
    }
}

/// A server name: 1–255 characters, no leading or trailing whitespace.
fn name_field(m: &Map<String, Value>, required: bool) -> Result<Option<String>, ApiError> {
    let Some(v) = m.get("name") else {
        return if required {
            Err(ApiError::bad_request("Invalid input for field/attribute server. Value: None. 'name' is a required property"))
        } else {
            Ok(None)
        };
    };
    let Value::String(n) = v else { return Err(invalid("name", v, &format!("{v} is not of type 'string'"))) };
    if n.is_empty() {
        return Err(invalid("name", v, &format!("{v} is too short")));
    }
    if n.chars().count() > 255 {
        return Err(invalid("name", v, &format!("{v} is too long")));
    }
    if n.trim() != n {
        return Err(invalid("name", v, "Leading/trailing whitespace not allowed"));
    }
    Ok(Some(n.clone()))
}

fn count_field(m: &Map<String, Value>, field: &str) -> Result<Option<i64>, ApiError> {
    match m.get(field) {
        None => Ok(None),
        Some(v) => {
            let n = match v {
                Value::Number(n) => n.as_i64(),
                Value::String(t) => t.trim().parse().ok(),
                _ => None,
            }
            .ok_or_else(|| invalid(field, v, &format!("{v} is not of type 'integer', 'string'")))?;
            if n < 1 {
                return Err(invalid(field, v, &format!("{v} is less than the minimum of 1")));
            }
            Ok(Some(n))
        }
    }
}

fn metadata_field(v: &Value, field: &str) -> Result<BTreeMap<String, String>, ApiError> {
    let Value::Object(m) = v else { return Err(invalid(field, v, &format!("{v} is not of type 'object'"))) };
    let mut out = BTreeMap::new();
    for (k, val) in m {
        if k.is_empty() || k.chars().count() > 255 {
            return Err(invalid(field, v, &format!("'{k}' does not match any of the regexes: '^[a-zA-Z0-9-_:. ]{{1,255}}$'")));
        }
        let Value::String(s) = val else {
            return Err(invalid(&format!("{field}/{k}"), val, &format!("{val} is not of type 'string'")));
        };
        if s.chars().count() > 255 {
            return Err(invalid(&format!("{field}/{k}"), val, &format!("{val} is too long")));
        }
        out.insert(k.clone(), s.clone());
    }
    Ok(out)
}

/// A flavor or image reference: an id, or a URL ending in one.
fn ref_id(v: &str) -> String {
    v.trim_end_matches('/').rsplit('/').next().unwrap_or(v).to_string()
}

const CREATE_FIELDS: &[&str] = &[
    "name", "imageRef", "flavorRef", "adminPass", "metadata", "networks", "OS-DCF:diskConfig", "accessIPv4",
    "accessIPv6", "personality", "key_name", "user_data", "availability_zone", "block_device_mapping",
    "block_device_mapping_v2", "config_drive", "security_groups", "min_count", "max_count", "return_reservation_id",
    "description",
];

async fn create(
    State(s): State<AppState>,
    ctx: Context,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let project = ctx.project_id.clone().unwrap_or_default();
    enforce_on(&s, &ctx, "os_compute_api:servers:create", &project)?;
    let v = body(&bytes)?;
    if let Some(extra) = v.as_object().and_then(|o| o.keys().find(|k| !["server", "os:scheduler_hints", "OS-SCH-HNT:scheduler_hints"].contains(&k.as_str()))) {
        return Err(ApiError::bad_request(format!("Additional properties are not allowed ('{extra}' was unexpected)")));
    }
    let m = member(&v, "server")?;
    only(m, CREATE_FIELDS)?;
    let name = name_field(m, true)?.unwrap_or_default();
    let flavor_ref = match m.get("flavorRef") {
        Some(Value::String(f)) if !f.is_empty() => ref_id(f),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => return Err(invalid("flavorRef", other, &format!("{other} is not of type 'string', 'integer'"))),
        None => {
            return Err(ApiError::bad_request(
                "Invalid input for field/attribute server. Value: None. 'flavorRef' is a required property",
            ));
        }
    };
    let image_ref = match m.get("imageRef") {
        Some(Value::String(i)) => ref_id(i),
        Some(other) => return Err(invalid("imageRef", other, &format!("{other} is not of type 'string'"))),
        None => String::new(),
    };
    let metadata = match m.get("metadata") {
        Some(md) => metadata_field(md, "metadata")?,
        None => BTreeMap::new(),
    };
    let min_count = count_field(m, "min_count")?.unwrap_or(1);
    let max_count = count_field(m, "max_count")?.unwrap_or(min_count);
    if min_count > max_count {
        return Err(ApiError::bad_request("min_count must be <= max_count"));
    }
    let user_data = string_field(m, "user_data", 65535)?;
    if let Some(ud) = &user_data {
        use base64::Engine;
        if base64::engine::general_purpose::STANDARD.decode(ud.trim()).is_err() {
            return Err(ApiError::bad_request("User data needs to be valid base 64."));
        }
    }
    let key_name = string_field(m, "key_name", 255)?;
    let availability_zone = string_field(m, "availability_zone", 255)?.filter(|z| !z.is_empty());
    let access_ip_v4 = string_field(m, "accessIPv4", 255)?.filter(|a| !a.is_empty());
    if let Some(a) = &access_ip_v4
        && a.parse::<std::net::Ipv4Addr>().is_err()
    {
        return Err(invalid("accessIPv4", &json!(a), &format!("'{a}' is not a 'ipv4'")));
    }
    let access_ip_v6 = match string_field(m, "accessIPv6", 255)?.filter(|a| !a.is_empty()) {
        // Stored in canonical form, as upstream's IP address fields normalise it.
        Some(a) => match a.parse::<std::net::Ipv6Addr>() {
            Ok(ip) => Some(ip.to_string()),
            Err(_) => return Err(invalid("accessIPv6", &json!(a), &format!("'{a}' is not a 'ipv6'"))),
        },
        None => None,
    };
    let config_drive = match m.get("config_drive") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(t)) => api_common::query::parse_bool(t).unwrap_or(!t.is_empty()),
        Some(other) => return Err(invalid("config_drive", other, &format!("{other} is not of type 'boolean', 'string'"))),
    };
    let bdms = m.get("block_device_mapping_v2").and_then(Value::as_array).cloned().unwrap_or_default();
    let is_root = |d: &Value| d["boot_index"] == json!(0) || d["boot_index"] == json!("0");
    let boot_from_volume = bdms.iter().any(|d| is_root(d) && d["destination_type"] == "volume")
        || bdms.iter().any(|d| d["destination_type"] == "volume" || d["source_type"] == "volume");
    // An image copied to a local disk as the root device is an image boot, as `openstack server create --image`
    // may send it.
    let image_ref = match bdms.iter().find(|d| is_root(d) && d["source_type"] == "image") {
        Some(d) if image_ref.is_empty() && d["destination_type"] != "volume" => {
            d["uuid"].as_str().map(ref_id).unwrap_or_default()
        }
        _ => image_ref,
    };
    if boot_from_volume {
        return Err(ApiError::bad_request(
            "Block Device Mapping is Invalid: volumes need the block storage service, which this cloud does not run yet.",
        ));
    }
    if image_ref.is_empty() {
        return Err(ApiError::bad_request("Block Device Mapping is Invalid: Boot sequence for the instance and image/block device mapping combination is not valid."));
    }
    let caller = caller(&s, &ctx);
    let viewer = Viewer { admin: caller.admin, project_id: ctx.project_id.clone() };
    let flavor = match s.compute.flavor(&viewer, &flavor_ref).await {
        Ok(f) => f,
        Err(crate::Error::NotFound(_)) => return Err(ApiError::bad_request(format!("Flavor {flavor_ref} could not be found."))),
        Err(e) => return Err(e.into()),
    };
    let token = headers.get("x-auth-token").and_then(|t| t.to_str().ok()).unwrap_or_default();
    let images = s.images.as_ref().ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "The image service is not configured."))?;
    let image = images
        .get(token, &image_ref)
        .await?
        .ok_or_else(|| ApiError::bad_request(format!("Image {image_ref} could not be found.")))?;
    if image.status != "active" {
        return Err(ApiError::bad_request(format!("Image {image_ref} is not active.")));
    }
    if image.min_ram > flavor.memory_mb {
        return Err(ApiError::bad_request("Flavor's memory is too small for requested image."));
    }
    if flavor.root_gb > 0 {
        if image.min_disk > flavor.root_gb {
            return Err(ApiError::bad_request("Flavor's disk is too small for requested image."));
        }
        if let Some(size) = image.size
            && size > flavor.root_gb * 1024 * 1024 * 1024
        {
            return Err(ApiError::bad_request(format!(
                "Flavor's disk is too small for requested image. Flavor disk is {} bytes, image is {size} bytes.",
                flavor.root_gb * 1024 * 1024 * 1024
            )));
        }
    }
    let key_data = match &key_name {
        Some(k) => match s.compute.keypair(&ctx.user_id, k).await {
            Ok(kp) => Some(kp.public_key),
            Err(crate::Error::NotFound(_)) => return Err(ApiError::bad_request("Invalid key_name provided.")),
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    if let Some(az) = &availability_zone
        && !s.compute.available_zones().await?.contains(az.split(':').next().unwrap_or_default())
    {
        return Err(ApiError::bad_request("The requested availability zone is not available"));
    }
    let boot = Boot {
        name,
        description: None,
        flavor: Some(s.compute.flavor_spec(&flavor).await),
        image_ref,
        image_properties: image.properties,
        key_name,
        user_data,
        metadata,
        availability_zone: availability_zone.map(|z| z.split(':').next().unwrap_or_default().to_string()),
        config_drive,
        min_count,
        max_count,
        access_ip_v4,
        access_ip_v6,
        tags: Vec::new(),
        group: super::server_groups::group_hint(&v)?,
    };
    let (rows, reservation_id) = s.compute.servers_create(&caller, boot, key_data, &rid.0).await?;
    if m.get("return_reservation_id").and_then(|r| r.as_bool().or_else(|| r.as_str().and_then(api_common::query::parse_bool))) == Some(true) {
        return Ok((StatusCode::ACCEPTED, Json(json!({"reservation_id": reservation_id}))).into_response());
    }
    let first = &rows[0];
    let admin_pass = match m.get("adminPass") {
        Some(Value::String(p)) => p.clone(),
        _ => admin_password(),
    };
    let self_href = s.url(&format!("/servers/{}", first.uuid));
    let out = json!({"server": {
        "id": first.uuid,
        "links": s.links(&format!("/servers/{}", first.uuid)),
        "OS-DCF:diskConfig": "MANUAL",
        "security_groups": [{"name": "default"}],
        "adminPass": admin_pass,
    }});
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, self_href)], Json(out)).into_response())
}

/// A generated admin password (12 characters without look-alikes), as upstream's `generate_password`.
fn admin_password() -> String {
    crate::servers::random_string(12)
}

// ----- list and show -----

fn parse_time(field: &str, v: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_micros())
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc().timestamp_micros())
        })
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S").map(|t| t.and_utc().timestamp_micros()))
        .map_err(|_| ApiError::bad_request(format!("Invalid input for query parameters {field}. Value: {v}. '{v}' is not a 'date-time'")))
}

async fn listing(s: &AppState, ctx: &Context, q: &QueryPairs, path: &str, full: bool) -> Result<Json<Value>, ApiError> {
    let project = ctx.project_id.clone().unwrap_or_default();
    let rule = if full { "os_compute_api:servers:detail" } else { "os_compute_api:servers:index" };
    enforce_on(s, ctx, rule, &project)?;
    let admin = s.is_admin(ctx);
    let all_tenants = match q.get("all_tenants") {
        None => false,
        Some(v) => api_common::query::parse_bool(v).unwrap_or(true),
    };
    let mut filter = InstanceFilter { deleted: Some(false), ..Default::default() };
    if all_tenants {
        enforce_on(s, ctx, &format!("{rule}:get_all_tenants"), &project)?;
        filter.project_id = q.get("project_id").or(q.get("tenant_id")).map(str::to_string);
    } else {
        filter.project_id = Some(project.clone());
    }
    if let Some(cs) = q.get("changes-since") {
        filter.changes_since = Some(parse_time("changes-since", cs)?);
        filter.deleted = None;
    }
    if admin {
        filter.host = q.get("host").map(str::to_string);
        if let Some(d) = q.get("deleted") {
            filter.deleted = api_common::query::parse_bool(d).or(filter.deleted);
        }
        filter.user_id = q.get("user_id").map(str::to_string);
    }
    filter.flavorid = q.get("flavor").map(ref_id);
    filter.image_ref = q.get("image").map(ref_id);
    filter.reservation_id = q.get("reservation_id").map(str::to_string);
    if let Some(status) = q.get("status") {
        match vm_states_of_status(status) {
            Some(states) => {
                if states.contains(&"deleted") && !admin {
                    // Only admins list deleted servers.
                    filter.vm_states = Some(Vec::new());
                } else {
                    if states.contains(&"deleted") {
                        filter.deleted = None;
                    }
                    filter.vm_states = Some(states.into_iter().map(str::to_string).collect());
                }
            }
            None if admin => return Err(ApiError::bad_request(format!("Invalid server status : {status}"))),
            None => filter.vm_states = Some(Vec::new()),
        }
    }
    let page = super::page(q, MAX_LIMIT)?;
    let mut all = s.compute.instances(&filter).await?;
    if let Some(pattern) = q.get("name") {
        let re = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|_| ApiError::bad_request(format!("Invalid regular expression for name: {pattern}")))?;
        all.retain(|i| re.is_match(&i.display_name));
    }
    let (items, _) = page.apply(all, |i| i.uuid.as_str())?;
    let rendered: Vec<Value> = if full {
        let uuids: Vec<&str> = items.iter().map(|i| i.uuid.as_str()).collect();
        let mut metadata = s.compute.store().metadata_of(&uuids).await?;
        items.iter().map(|i| detail(s, admin, i, metadata.remove(&i.uuid).unwrap_or_default())).collect()
    } else {
        items.iter().map(|i| summary(s, i)).collect()
    };
    let mut out = json!({"servers": rendered});
    if let Some(last) = items.last().filter(|_| items.len() == page.limit && page.explicit_limit) {
        out["servers_links"] = json!([{"rel": "next", "href": Page::next_link(&s.url(path), q, &last.uuid)}]);
    }
    Ok(Json(out))
}

async fn list(State(s): State<AppState>, ctx: Context, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    listing(&s, &ctx, &q, "/servers", false).await
}

async fn list_detail(State(s): State<AppState>, ctx: Context, q: QueryPairs) -> Result<Json<Value>, ApiError> {
    listing(&s, &ctx, &q, "/servers/detail", true).await
}

/// The instance `id` if the caller may see it, with policy `rule` checked against its project.
async fn visible(s: &AppState, ctx: &Context, id: &str, rule: &str) -> Result<InstanceRow, ApiError> {
    let inst = s.compute.instance(&caller(s, ctx), id).await?;
    enforce_on(s, ctx, rule, &inst.project_id)?;
    Ok(inst)
}

async fn show(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let inst = visible(&s, &ctx, &id, "os_compute_api:servers:show").await?;
    let metadata = s.compute.store().metadata_of(&[&inst.uuid]).await?.remove(&inst.uuid).unwrap_or_default();
    Ok(Json(json!({"server": detail(&s, s.is_admin(&ctx), &inst, metadata)})))
}

async fn update(
    State(s): State<AppState>,
    ctx: Context,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let inst = visible(&s, &ctx, &id, "os_compute_api:servers:update").await?;
    let v = body(&bytes)?;
    let m = member(&v, "server")?;
    only(m, &["name", "accessIPv4", "accessIPv6", "OS-DCF:diskConfig"])?;
    let name = name_field(m, false)?;
    let ip = |field: &str, v6: bool| -> Result<Option<Option<String>>, ApiError> {
        match m.get(field) {
            None => Ok(None),
            Some(Value::String(a)) if a.is_empty() => Ok(Some(None)),
            Some(val @ Value::String(a)) => {
                let parsed = if v6 {
                    a.parse::<std::net::Ipv6Addr>().map(|ip| ip.to_string()).ok()
                } else {
                    a.parse::<std::net::Ipv4Addr>().map(|ip| ip.to_string()).ok()
                };
                match parsed {
                    Some(ip) => Ok(Some(Some(ip))),
                    None => Err(invalid(field, val, &format!("'{a}' is not a '{}'", if v6 { "ipv6" } else { "ipv4" }))),
                }
            }
            Some(other) => Err(invalid(field, other, &format!("{other} is not of type 'string'"))),
        }
    };
    let (v4, v6) = (ip("accessIPv4", false)?, ip("accessIPv6", true)?);
    let updated = s.compute.server_update(&caller(&s, &ctx), &inst.uuid, name, None, v4, v6).await?;
    let metadata = s.compute.store().metadata_of(&[&updated.uuid]).await?.remove(&updated.uuid).unwrap_or_default();
    Ok(Json(json!({"server": detail(&s, s.is_admin(&ctx), &updated, metadata)})))
}

async fn delete(
    State(s): State<AppState>,
    ctx: Context,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    visible(&s, &ctx, &id, "os_compute_api:servers:delete").await?;
    s.compute.server_delete(&caller(&s, &ctx), &id, &rid.0).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- actions -----

async fn action(
    State(s): State<AppState>,
    ctx: Context,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let v = body(&bytes)?;
    let o = v.as_object().cloned().unwrap_or_default();
    let Some((name, arg)) = o.iter().next() else {
        return Err(ApiError::bad_request("There is no such action: None"));
    };
    if o.len() > 1 {
        return Err(ApiError::bad_request("Additional properties are not allowed"));
    }
    let c = caller(&s, &ctx);
    let simple = |rule: &'static str, action: Action| (rule, action);
    let (rule, act) = match name.as_str() {
        "os-stop" => simple("os_compute_api:servers:stop", Action::Stop),
        "os-start" => simple("os_compute_api:servers:start", Action::Start),
        "pause" => simple("os_compute_api:os-pause-server:pause", Action::Pause),
        "unpause" => simple("os_compute_api:os-pause-server:unpause", Action::Unpause),
        "suspend" => simple("os_compute_api:os-suspend-server:suspend", Action::Suspend),
        "resume" => simple("os_compute_api:os-suspend-server:resume", Action::Resume),
        "reboot" => {
            let kind = arg.get("type").and_then(Value::as_str).map(str::to_uppercase);
            let hard = match kind.as_deref() {
                Some("HARD") => true,
                Some("SOFT") => false,
                _ => {
                    return Err(invalid("reboot/type", &arg["type"], &format!("{} is not one of ['HARD', 'Hard', 'hard', 'SOFT', 'Soft', 'soft']", arg["type"])));
                }
            };
            simple("os_compute_api:servers:reboot", Action::Reboot { hard })
        }
        "rebuild" => {
            let m = arg.as_object().ok_or_else(|| invalid("rebuild", arg, &format!("{arg} is not of type 'object'")))?;
            let image = m.get("imageRef").and_then(Value::as_str).map(ref_id).ok_or_else(|| {
                ApiError::bad_request("Invalid input for field/attribute rebuild. Value: None. 'imageRef' is a required property")
            })?;
            visible(&s, &ctx, &id, "os_compute_api:servers:rebuild").await?;
            let token = headers.get("x-auth-token").and_then(|t| t.to_str().ok()).unwrap_or_default();
            let images = s.images.as_ref().ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "The image service is not configured."))?;
            match images.get(token, &image).await? {
                Some(i) if i.status == "active" => {}
                Some(_) => return Err(ApiError::bad_request(format!("Image {image} is not active."))),
                None => return Err(ApiError::bad_request(format!("Image {image} could not be found."))),
            }
            let name = name_field(m, false)?;
            if let Some(md) = m.get("metadata") {
                let md = metadata_field(md, "metadata")?;
                s.compute.metadata_set(&c.project_id, &id, &md, true).await?;
            }
            if name.is_some() {
                s.compute.server_update(&c, &id, name, None, None, None).await?;
            }
            ("os_compute_api:servers:rebuild", Action::Rebuild { image_ref: image })
        }
        "resize" => {
            let m = arg.as_object().ok_or_else(|| invalid("resize", arg, &format!("{arg} is not of type 'object'")))?;
            only(m, &["flavorRef", "OS-DCF:diskConfig"])?;
            let flavor_ref = match m.get("flavorRef") {
                Some(Value::String(f)) if !f.is_empty() => ref_id(f),
                Some(Value::Number(n)) => n.to_string(),
                Some(other) => return Err(invalid("flavorRef", other, &format!("{other} is not of type 'string', 'integer'"))),
                None => {
                    return Err(ApiError::bad_request(
                        "Invalid input for field/attribute resize. Value: None. 'flavorRef' is a required property",
                    ));
                }
            };
            let inst = visible(&s, &ctx, &id, "os_compute_api:servers:resize").await?;
            let viewer = Viewer { admin: c.admin, project_id: ctx.project_id.clone() };
            let flavor = match s.compute.flavor(&viewer, &flavor_ref).await {
                Ok(f) => f,
                Err(crate::Error::NotFound(_)) => return Err(ApiError::bad_request(format!("Unable to find flavor {flavor_ref}"))),
                Err(e) => return Err(e.into()),
            };
            if flavor.flavorid == inst.flavor.flavorid {
                return Err(ApiError::bad_request("When resizing, instances must change flavor!"));
            }
            if flavor.root_gb < inst.flavor.root_gb && flavor.root_gb != 0 {
                return Err(ApiError::bad_request("Resize error: Unable to resize disk down."));
            }
            ("os_compute_api:servers:resize", Action::Resize { flavor: s.compute.flavor_spec(&flavor).await })
        }
        "confirmResize" => {
            let inst = visible(&s, &ctx, &id, "os_compute_api:servers:confirm_resize").await?;
            s.compute.server_confirm_resize(&c, &inst.uuid, &rid.0).await?;
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        "revertResize" => {
            let inst = visible(&s, &ctx, &id, "os_compute_api:servers:revert_resize").await?;
            let old = inst.scheduling.as_ref().and_then(|x| x.get("resize")).and_then(|r| serde_json::from_value::<compute_rpc::FlavorSpec>(r["old_flavor"].clone()).ok());
            let Some(old) = old else {
                return Err(ApiError::conflict(format!("Cannot 'revertResize' instance {} while it is in vm_state {}", inst.uuid, inst.vm_state)));
            };
            ("os_compute_api:servers:revert_resize", Action::RevertResize { flavor: old })
        }
        "createImage" => {
            let m = arg.as_object().ok_or_else(|| invalid("createImage", arg, &format!("{arg} is not of type 'object'")))?;
            only(m, &["name", "metadata"])?;
            let name = match m.get("name") {
                Some(Value::String(n)) if n.chars().count() <= 255 && n.trim() == n => n.clone(),
                Some(v @ Value::String(_)) => return Err(invalid("name", v, "is too long or has leading/trailing whitespace")),
                Some(v) => return Err(invalid("name", v, &format!("{v} is not of type 'string'"))),
                None => {
                    return Err(ApiError::bad_request(
                        "Invalid input for field/attribute createImage. Value: None. 'name' is a required property",
                    ));
                }
            };
            let metadata = match m.get("metadata") {
                Some(md) => metadata_field(md, "metadata")?,
                None => BTreeMap::new(),
            };
            let inst = visible(&s, &ctx, &id, "os_compute_api:servers:create_image").await?;
            let token = headers.get("x-auth-token").and_then(|t| t.to_str().ok()).unwrap_or_default().to_string();
            let images = s.images.as_ref().ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "The image service is not configured."))?;
            let image_id = s.compute.server_snapshot(&c, &inst.uuid, images, &token, &name, &metadata, &rid.0).await?;
            let location = s.url(&format!("/images/{image_id}"));
            return Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)]).into_response());
        }
        "os-getConsoleOutput" => {
            let inst = visible(&s, &ctx, &id, "os_compute_api:os-console-output").await?;
            let length = match arg.get("length") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n >= -1) => n.as_i64().filter(|n| *n >= 0).map(|n| n as u64),
                Some(Value::String(t)) if t.parse::<i64>().is_ok_and(|n| n >= -1) => t.parse::<i64>().ok().filter(|n| *n >= 0).map(|n| n as u64),
                Some(other) => return Err(invalid("length", other, &format!("{other} is not of type 'integer', 'string'"))),
            };
            let output = s.compute.console_output(&c, &inst.uuid, length).await?;
            return Ok(Json(json!({"output": output})).into_response());
        }
        "lock" => {
            let inst = visible(&s, &ctx, &id, "os_compute_api:os-lock-server:lock").await?;
            s.compute.server_lock(&c, &inst.uuid, true, None, &rid.0).await?;
            return Ok(StatusCode::ACCEPTED.into_response());
        }
        "unlock" => {
            let inst = visible(&s, &ctx, &id, "os_compute_api:os-lock-server:unlock").await?;
            if inst.locked_by.as_deref() == Some("admin") && inst.project_id == c.project_id {
                enforce_on(&s, &ctx, "os_compute_api:os-lock-server:unlock:unlock_override", &inst.project_id)?;
            }
            s.compute.server_lock(&c, &inst.uuid, false, None, &rid.0).await?;
            return Ok(StatusCode::ACCEPTED.into_response());
        }
        "os-resetState" => {
            let inst = visible(&s, &ctx, &id, "os_compute_api:os-admin-actions:reset_state").await?;
            let state = match arg.get("state").and_then(Value::as_str) {
                Some(st @ ("active" | "error")) => st.to_string(),
                _ => {
                    return Err(invalid("state", &arg["state"], &format!("{} is not one of ['active', 'error']", arg["state"])));
                }
            };
            s.compute.server_reset_state(&c, &inst.uuid, &state, &rid.0).await?;
            return Ok(StatusCode::ACCEPTED.into_response());
        }
        "forceDelete" => {
            visible(&s, &ctx, &id, "os_compute_api:os-deferred-delete:force").await?;
            s.compute.server_delete(&c, &id, &rid.0).await?;
            return Ok(StatusCode::ACCEPTED.into_response());
        }
        "restore" => {
            let inst = visible(&s, &ctx, &id, "os_compute_api:os-deferred-delete:restore").await?;
            // Soft delete is not configured, so nothing is ever in the state restore needs.
            return Err(ApiError::conflict(format!(
                "Cannot 'restore' instance {} while it is in vm_state {}",
                inst.uuid, inst.vm_state
            )));
        }
        other => {
            // An unknown server is a 404 whatever the action, as upstream routes actions per server.
            s.compute.instance(&c, &id).await?;
            return Err(ApiError::bad_request(format!("There is no such action: {other}")));
        }
    };
    visible(&s, &ctx, &id, rule).await?;
    let rebuild = matches!(act, Action::Rebuild { .. });
    s.compute.server_action(&c, &id, act, &rid.0).await?;
    if rebuild {
        let inst = s.compute.instance(&c, &id).await?;
        let metadata = s.compute.store().metadata_of(&[&inst.uuid]).await?.remove(&inst.uuid).unwrap_or_default();
        let mut view = detail(&s, s.is_admin(&ctx), &inst, metadata);
        // The rebuild response carries the base server view only.
        if let Value::Object(o) = &mut view {
            o.retain(|k, _| !k.starts_with("OS-EXT-") && !k.starts_with("OS-SRV-USG") && !k.starts_with("os-extended-volumes"));
            for k in ["key_name", "config_drive", "security_groups", "fault"] {
                o.remove(k);
            }
        }
        view["adminPass"] = match arg.get("adminPass") {
            Some(Value::String(p)) => json!(p),
            _ => json!(admin_password()),
        };
        return Ok((StatusCode::ACCEPTED, Json(json!({"server": view}))).into_response());
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `GET /servers/{id}/diagnostics`: the guest's counters from its agent (admins).
async fn diagnostics(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let inst = visible(&s, &ctx, &id, "os_compute_api:os-server-diagnostics").await?;
    Ok(Json(json!(s.compute.conductor()?.diagnostics(&inst).await?)))
}

// ----- metadata -----

async fn meta_of(s: &AppState, uuid: &str) -> Result<BTreeMap<String, String>, ApiError> {
    Ok(s.compute.store().metadata_of(&[uuid]).await?.remove(uuid).unwrap_or_default())
}

async fn meta_list(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let inst = visible(&s, &ctx, &id, "os_compute_api:server-metadata:index").await?;
    Ok(Json(json!({"metadata": meta_of(&s, &inst.uuid).await?})))
}

async fn meta_write(s: &AppState, ctx: &Context, id: &str, bytes: &[u8], replace: bool) -> Result<Json<Value>, ApiError> {
    let rule = if replace { "os_compute_api:server-metadata:update_all" } else { "os_compute_api:server-metadata:create" };
    let inst = visible(s, ctx, id, rule).await?;
    if inst.locked_by.is_some() && !s.is_admin(ctx) {
        return Err(ApiError::conflict(format!("Instance {} is locked", inst.uuid)));
    }
    let v = body(bytes)?;
    let md = match v.get("metadata") {
        Some(md) => metadata_field(md, "metadata")?,
        None => return Err(ApiError::bad_request("Invalid input for field/attribute metadata. Value: None. 'metadata' is a required property")),
    };
    s.compute.metadata_set(&inst.project_id, &inst.uuid, &md, replace).await?;
    Ok(Json(json!({"metadata": meta_of(s, &inst.uuid).await?})))
}

async fn meta_replace(State(s): State<AppState>, ctx: Context, Path(id): Path<String>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    meta_write(&s, &ctx, &id, &bytes, true).await
}

async fn meta_merge(State(s): State<AppState>, ctx: Context, Path(id): Path<String>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    meta_write(&s, &ctx, &id, &bytes, false).await
}

async fn meta_show(
    State(s): State<AppState>,
    ctx: Context,
    Path((id, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let inst = visible(&s, &ctx, &id, "os_compute_api:server-metadata:show").await?;
    let md = meta_of(&s, &inst.uuid).await?;
    let value = md.get(&key).ok_or_else(|| ApiError::not_found("Metadata item was not found"))?;
    Ok(Json(json!({"meta": {key: value}})))
}

async fn meta_put(
    State(s): State<AppState>,
    ctx: Context,
    Path((id, key)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let inst = visible(&s, &ctx, &id, "os_compute_api:server-metadata:update").await?;
    let v = body(&bytes)?;
    let meta = match v.get("meta") {
        Some(m) => metadata_field(m, "meta")?,
        None => return Err(ApiError::bad_request("Invalid input for field/attribute meta. Value: None. 'meta' is a required property")),
    };
    if meta.len() != 1 {
        return Err(ApiError::bad_request("Request body contains too many items"));
    }
    if !meta.contains_key(&key) {
        return Err(ApiError::bad_request("Request body and URI mismatch"));
    }
    s.compute.metadata_set(&inst.project_id, &inst.uuid, &meta, false).await?;
    Ok(Json(json!({"meta": meta})))
}

async fn meta_delete(
    State(s): State<AppState>,
    ctx: Context,
    Path((id, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let inst = visible(&s, &ctx, &id, "os_compute_api:server-metadata:delete").await?;
    if !s.compute.store().metadata_delete(&inst.uuid, &key).await? {
        return Err(ApiError::not_found("Metadata item was not found"));
    }
    Ok(StatusCode::NO_CONTENT)
}

// ----- instance actions -----

fn action_view(a: &crate::store::ActionRow) -> Value {
    json!({
        "action": a.action,
        "instance_uuid": a.instance_uuid,
        "request_id": a.request_id,
        "user_id": a.user_id,
        "project_id": a.project_id,
        "start_time": iso_us(Some(a.start_time)),
        "message": a.message,
    })
}

/// Instance actions stay readable after the server is deleted, as upstream.
async fn any_instance(s: &AppState, ctx: &Context, id: &str, rule: &str) -> Result<InstanceRow, ApiError> {
    let c = caller(s, ctx);
    let inst = match s.compute.store().instance_get(id).await? {
        Some(i) if c.admin || i.project_id == c.project_id => i,
        _ => return Err(crate::servers::instance_not_found(id).into()),
    };
    enforce_on(s, ctx, rule, &inst.project_id)?;
    Ok(inst)
}

async fn actions_list(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let inst = any_instance(&s, &ctx, &id, "os_compute_api:os-instance-actions:list").await?;
    let actions = s.compute.store().actions(&inst.uuid).await?;
    Ok(Json(json!({"instanceActions": actions.iter().map(action_view).collect::<Vec<_>>()})))
}

async fn action_show(
    State(s): State<AppState>,
    ctx: Context,
    Path((id, request_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let inst = any_instance(&s, &ctx, &id, "os_compute_api:os-instance-actions:show").await?;
    let a = s
        .compute
        .store()
        .action(&inst.uuid, &request_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Action for request_id {request_id} on instance {id} not found")))?;
    let mut view = action_view(&a);
    if s.policy.check("os_compute_api:os-instance-actions:events", &ctx, &json!({"project_id": inst.project_id})) {
        let admin = s.is_admin(&ctx);
        let events: Vec<Value> = s
            .compute
            .store()
            .action_events(a.id)
            .await?
            .iter()
            .map(|e| {
                let mut ev = json!({
                    "event": e.event,
                    "start_time": iso_us(Some(e.start_time)),
                    "finish_time": iso_us(e.finish_time),
                    "result": e.result,
                    "traceback": e.details,
                });
                if admin {
                    ev["host"] = json!(e.host);
                }
                ev
            })
            .collect();
        view["events"] = json!(events);
    }
    Ok(Json(json!({"instanceAction": view})))
}

// ----- external events -----

/// `POST /os-server-external-events`: other services (the network and volume services) tell compute about an
/// instance. Events for unknown instances, or instances without a host, are 404 each; the call is 200 when all were
/// accepted, 207 when some were, 404 when none were.
async fn external_events(State(s): State<AppState>, ctx: Context, bytes: Bytes) -> Result<Response, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-server-external-events:create")?;
    let v = body(&bytes)?;
    let events = v.get("events").and_then(Value::as_array).ok_or_else(|| {
        ApiError::bad_request("Invalid input for field/attribute events. Value: None. 'events' is a required property")
    })?;
    if events.is_empty() {
        return Err(invalid("events", &json!([]), "[] is too short"));
    }
    const NAMES: &[&str] = &[
        "network-changed", "network-vif-plugged", "network-vif-unplugged", "network-vif-deleted",
        "volume-extended", "power-update", "accelerator-request-bound", "volume-reimaged",
    ];
    let mut out = Vec::new();
    let mut accepted = 0;
    for e in events {
        let Some(m) = e.as_object() else { return Err(invalid("events", e, &format!("{e} is not of type 'object'"))) };
        only(m, &["name", "server_uuid", "status", "tag"])?;
        let name = m.get("name").and_then(Value::as_str).unwrap_or_default();
        if !NAMES.contains(&name) {
            return Err(invalid("name", &m["name"], &format!("{} is not one of {NAMES:?}", m["name"])));
        }
        let uuid = m.get("server_uuid").and_then(Value::as_str).unwrap_or_default().to_string();
        let status = m.get("status").and_then(Value::as_str).unwrap_or("completed");
        if !["failed", "completed", "in-progress"].contains(&status) {
            return Err(invalid("status", &m["status"], "is not one of ['failed', 'completed', 'in-progress']"));
        }
        let found = s.compute.store().instance_get(&uuid).await?.filter(|i| !i.deleted && i.host.is_some());
        let mut r = json!({"name": name, "server_uuid": uuid, "status": status});
        if let Some(tag) = m.get("tag") {
            r["tag"] = tag.clone();
        }
        if found.is_some() {
            accepted += 1;
            r["code"] = json!(200);
        } else {
            r["code"] = json!(404);
            r["status"] = json!("failed");
        }
        out.push(r);
    }
    let code = if accepted == events.len() {
        StatusCode::OK
    } else if accepted > 0 {
        StatusCode::MULTI_STATUS
    } else {
        return Err(ApiError::not_found("No instances found for any event"));
    };
    Ok((code, Json(json!({"events": out}))).into_response())
}
