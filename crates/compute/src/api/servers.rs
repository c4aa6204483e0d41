//! Servers (`/servers`, `/servers/detail`, `/servers/{id}`), server actions (`/servers/{id}/action`), server
//! metadata, console output and instance actions (`/servers/{id}/os-instance-actions`).

use std::collections::BTreeMap;

use ::auth::Context;
use api_common::{ApiError, Microversion, Page, QueryPairs, RequestId};
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

use super::{AppState, body, invalid, member, only, v};
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
        .route("/v2.1/servers/{id}/tags", get(tags_list).put(tags_replace).delete(tags_clear))
        .route("/v2.1/servers/{id}/tags/{tag}", get(tag_check).put(tag_add).delete(tag_remove))
        .route("/v2.1/servers/{id}/topology", get(topology))
        .route("/v2.1/servers/{id}/os-instance-actions", get(actions_list))
        .route("/v2.1/servers/{id}/diagnostics", get(diagnostics))
        .route("/v2.1/servers/{id}/os-server-password", get(password_show).delete(password_clear))
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

/// Which response a server view is for: upstream renders list entries, `GET`, `PUT` and rebuild differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Purpose {
    List,
    Show,
    Update,
    Rebuild,
}

/// What a server view depends on besides the instance: the microversion and what the caller may see.
pub(super) struct ViewCtx {
    pub mv: Microversion,
    pub admin: bool,
    /// `os_compute_api:servers:show:host_status` (2.16).
    pub host_status: bool,
    /// `os_compute_api:os-flavor-extra-specs:index`, for the embedded flavor (2.47).
    pub extra_specs: bool,
    /// Host → `host_status` value, filled when `host_status` is.
    pub hosts: BTreeMap<String, &'static str>,
}

impl ViewCtx {
    pub(super) async fn new(s: &AppState, ctx: &Context, mv: Microversion) -> Result<Self, ApiError> {
        let project = json!({"project_id": ctx.project_id, "user_id": ctx.user_id});
        let host_status = mv >= v(16) && s.policy.check("os_compute_api:servers:show:host_status", ctx, &project);
        let mut hosts = BTreeMap::new();
        if host_status {
            let conductor = s.compute.conductor().ok();
            for svc in s.compute.store().service_list().await? {
                if svc.binary != compute_rpc::COMPUTE_BINARY {
                    continue;
                }
                let up = conductor.as_ref().is_some_and(|c| c.is_up(&svc));
                let status = if svc.forced_down {
                    "DOWN"
                } else if !up {
                    "UNKNOWN"
                } else if svc.disabled {
                    "MAINTENANCE"
                } else {
                    "UP"
                };
                hosts.insert(svc.host, status);
            }
        }
        Ok(ViewCtx {
            mv,
            admin: s.is_admin(ctx),
            host_status,
            extra_specs: s.policy.check("os_compute_api:os-flavor-extra-specs:index", ctx, &project),
            hosts,
        })
    }
}

/// What a server view shows from other tables.
#[derive(Default)]
pub(super) struct Extras {
    pub metadata: BTreeMap<String, String>,
    pub tags: Vec<String>,
    /// The server group of the instance (2.71, not in lists).
    pub group: Option<String>,
    /// The network info cache (addresses, security groups).
    pub net: Option<crate::store::netinfo::NetInfo>,
    /// `OS-DCF:diskConfig` is `AUTO`.
    pub auto_disk_config: bool,
    /// The block device mappings (`os-extended-volumes:volumes_attached`).
    pub volumes: Vec<crate::store::bdm::Bdm>,
}

/// Whether an instance's system metadata asks for `AUTO` disk configuration.
fn auto_disk(sysmeta: Option<&BTreeMap<String, String>>) -> bool {
    sysmeta.and_then(|m| m.get(crate::store::sysmeta::AUTO_DISK_CONFIG)).is_some_and(|v| v == "True")
}

/// `OS-DCF:diskConfig` of a create, rebuild, resize or update: `Some(true)` for `AUTO`.
pub(super) fn disk_config_field(m: &Map<String, Value>) -> Result<Option<bool>, ApiError> {
    match m.get("OS-DCF:diskConfig") {
        None => Ok(None),
        Some(Value::String(t)) if t == "AUTO" => Ok(Some(true)),
        Some(Value::String(t)) if t == "MANUAL" => Ok(Some(false)),
        Some(other) => Err(invalid("OS-DCF:diskConfig", other, &format!("{other} is not one of ['AUTO', 'MANUAL']"))),
    }
}

/// Records an instance's disk configuration.
async fn set_disk_config(s: &AppState, uuid: &str, auto: Option<bool>) -> Result<(), ApiError> {
    if let Some(a) = auto {
        let v = if a { "True" } else { "False" };
        s.compute.store().sysmeta_set(uuid, crate::store::sysmeta::AUTO_DISK_CONFIG, Some(v)).await?;
    }
    Ok(())
}

fn disk_config_view(auto: bool) -> &'static str {
    if auto { "AUTO" } else { "MANUAL" }
}

impl Extras {
    pub(super) async fn of(s: &AppState, uuid: &str, mv: Microversion, purpose: Purpose) -> Result<Self, ApiError> {
        let store = s.compute.store();
        Ok(Extras {
            metadata: store.metadata_of(&[uuid]).await?.remove(uuid).unwrap_or_default(),
            tags: if mv >= v(26) { store.tags_of(&[uuid]).await?.remove(uuid).unwrap_or_default() } else { Vec::new() },
            group: if mv >= v(71) && purpose != Purpose::List {
                store.server_group_of_instance(uuid).await?.map(|g| g.uuid)
            } else {
                None
            },
            net: store.netinfo_get(uuid).await?,
            auto_disk_config: auto_disk(store.sysmeta_of(&[uuid]).await?.get(uuid)),
            volumes: store.bdm_list(uuid).await?,
        })
    }
}

/// The server representation: every microversion-dependent field of a server is decided here.
pub(super) fn server_view(s: &AppState, vc: &ViewCtx, i: &InstanceRow, x: Extras, purpose: Purpose) -> Value {
    let mv = vc.mv;
    let bookmark = |path: String| json!([{"rel": "bookmark", "href": format!("{}{path}", s.base_url)}]);
    let image = if i.image_ref.is_empty() {
        json!("")
    } else {
        let mut image = json!({"id": i.image_ref, "links": bookmark(format!("/images/{}", i.image_ref))});
        if mv >= v(98) {
            image["properties"] = json!(i.image_properties);
        }
        image
    };
    let flavor = if mv >= v(47) {
        let f = &i.flavor;
        let mut flavor = json!({
            "vcpus": f.vcpus,
            "ram": f.memory_mb,
            "disk": f.root_gb,
            "ephemeral": f.ephemeral_gb,
            "swap": f.swap,
            "original_name": f.name,
        });
        if vc.extra_specs {
            flavor["extra_specs"] = json!(f.extra_specs);
        }
        flavor
    } else {
        json!({"id": i.flavor.flavorid, "links": bookmark(format!("/flavors/{}", i.flavor.flavorid))})
    };
    // The base view: what every response carries.
    let mut out = json!({
        "id": i.uuid,
        "name": i.display_name,
        "status": status_of(&i.vm_state, i.task_state.as_deref()),
        "tenant_id": i.project_id,
        "user_id": i.user_id,
        "metadata": x.metadata,
        "hostId": host_id(&i.project_id, i.host.as_deref()),
        "image": image,
        "flavor": flavor,
        "created": iso(i.created_at),
        "updated": iso(i.updated_at),
        "addresses": x
            .net
            .as_ref()
            .map(|n| crate::network::addresses_view(&n.vifs, matches!(purpose, Purpose::List | Purpose::Show)))
            .unwrap_or_else(|| json!({})),
        "accessIPv4": i.access_ip_v4.clone().unwrap_or_default(),
        "accessIPv6": i.access_ip_v6.clone().unwrap_or_default(),
        "links": s.links(&format!("/servers/{}", i.uuid)),
        "OS-DCF:diskConfig": disk_config_view(x.auto_disk_config),
    });
    // `progress` only in the statuses that make progress, as upstream.
    let status = status_of(&i.vm_state, i.task_state.as_deref());
    if ["ACTIVE", "BUILD", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING"].contains(&status) {
        out["progress"] = json!(i.progress);
    }
    if mv >= v(9) {
        out["locked"] = json!(i.locked_by.is_some());
    }
    if mv >= v(19) {
        out["description"] = json!(i.description);
    }
    if mv >= v(26) {
        out["tags"] = json!(x.tags);
    }
    if mv >= v(63) {
        out["trusted_image_certificates"] = Value::Null;
    }
    if mv >= v(73) {
        out["locked_reason"] = json!(i.locked_reason);
    }
    if mv >= v(71) && purpose != Purpose::List {
        out["server_groups"] = json!(x.group.into_iter().collect::<Vec<_>>());
    }
    if mv >= v(96) {
        out["pinned_availability_zone"] = json!(i.availability_zone);
    }
    if let Some(f) = &i.fault
        && matches!(i.vm_state.as_str(), "error" | "deleted")
    {
        let mut fault = json!({"code": f["code"], "message": f["message"], "created": f["created"]});
        // Details of 500s only for admins, as upstream.
        if (vc.admin || f["code"] != 500) && !f["details"].is_null() {
            fault["details"] = f["details"].clone();
        }
        out["fault"] = fault;
    }
    // The extended attributes: in lists and `GET` always, in `PUT` and rebuild responses from 2.75.
    let extended = matches!(purpose, Purpose::List | Purpose::Show) || mv >= v(75);
    if extended {
        let az =
            i.availability_zone.clone().unwrap_or_else(|| if i.host.is_some() { "nova".into() } else { String::new() });
        let volumes_attached: Vec<Value> = x
            .volumes
            .iter()
            .filter_map(|b| b.volume_id.as_ref().map(|id| (id, b.delete_on_termination)))
            .map(|(id, dot)| if mv >= v(3) { json!({"id": id, "delete_on_termination": dot}) } else { json!({"id": id}) })
            .collect();
        let ext = json!({
            "key_name": i.key_name,
            "config_drive": if i.config_drive { "True" } else { "" },
            "OS-EXT-AZ:availability_zone": az,
            "OS-EXT-STS:vm_state": i.vm_state,
            "OS-EXT-STS:task_state": i.task_state,
            "OS-EXT-STS:power_state": i.power_state,
            "OS-SRV-USG:launched_at": iso_us(i.launched_at),
            "OS-SRV-USG:terminated_at": iso_us(i.terminated_at),
            "os-extended-volumes:volumes_attached": volumes_attached,
        });
        merge(&mut out, ext);
        if let Some(groups) = security_groups_view(x.net.as_ref()) {
            out["security_groups"] = groups;
        }
        if vc.admin {
            out["OS-EXT-SRV-ATTR:host"] = json!(i.host);
            out["OS-EXT-SRV-ATTR:hypervisor_hostname"] = json!(i.node);
            out["OS-EXT-SRV-ATTR:instance_name"] = json!(instance_name(&i.uuid));
            if mv >= v(3) {
                merge(
                    &mut out,
                    json!({
                        "OS-EXT-SRV-ATTR:reservation_id": i.reservation_id,
                        "OS-EXT-SRV-ATTR:launch_index": i.launch_index,
                        "OS-EXT-SRV-ATTR:hostname": i.hostname,
                        "OS-EXT-SRV-ATTR:kernel_id": i.image_properties.get("kernel_id").and_then(Value::as_str).unwrap_or_default(),
                        "OS-EXT-SRV-ATTR:ramdisk_id": i.image_properties.get("ramdisk_id").and_then(Value::as_str).unwrap_or_default(),
                        "OS-EXT-SRV-ATTR:root_device_name": if i.host.is_some() { json!("/dev/vda") } else { Value::Null },
                        "OS-EXT-SRV-ATTR:user_data": i.user_data,
                    }),
                );
            }
        } else if mv >= v(90) {
            // From 2.90 the hostname is shown to everyone who sees the server.
            out["OS-EXT-SRV-ATTR:hostname"] = json!(i.hostname);
        }
        if vc.host_status {
            out["host_status"] =
                json!(i.host.as_ref().map(|h| vc.hosts.get(h).copied().unwrap_or("UNKNOWN")).unwrap_or(""));
        }
    }
    if purpose == Purpose::Rebuild {
        if mv >= v(54) {
            out["key_name"] = json!(i.key_name);
        }
        if mv >= v(57) {
            if let Value::Object(o) = &mut out {
                o.remove("OS-EXT-SRV-ATTR:user_data");
            }
            out["user_data"] = json!(i.user_data);
        }
    }
    out
}

/// `security_groups` of a server: the groups of its ports (`None`: the member is left out, as upstream does for
/// a server whose ports have none).
fn security_groups_view(net: Option<&crate::store::netinfo::NetInfo>) -> Option<Value> {
    match net {
        Some(n) if n.security_groups.is_empty() => None,
        Some(n) => Some(Value::Array(n.security_groups.iter().map(|g| json!({"name": g})).collect())),
        None => Some(json!([{"name": "default"}])),
    }
}

fn merge(v: &mut Value, extra: Value) {
    if let (Value::Object(a), Value::Object(b)) = (v, extra) {
        a.extend(b);
    }
}

/// The instance's name on its hypervisor.
fn instance_name(uuid: &str) -> String {
    format!("instance-{}", &uuid[..8.min(uuid.len())])
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

/// The members of a server create body at microversion `mv`.
fn create_fields(mv: Microversion) -> Vec<&'static str> {
    let mut f = vec![
        "name",
        "imageRef",
        "flavorRef",
        "adminPass",
        "metadata",
        "networks",
        "OS-DCF:diskConfig",
        "accessIPv4",
        "accessIPv6",
        "key_name",
        "user_data",
        "availability_zone",
        "block_device_mapping",
        "block_device_mapping_v2",
        "config_drive",
        "security_groups",
        "min_count",
        "max_count",
        "return_reservation_id",
    ];
    if mv < v(57) {
        f.push("personality");
    }
    if mv >= v(19) {
        f.push("description");
    }
    if mv >= v(52) {
        f.push("tags");
    }
    if mv >= v(63) {
        f.push("trusted_image_certificates");
    }
    if mv >= v(74) {
        f.extend(["host", "hypervisor_hostname"]);
    }
    if mv >= v(90) {
        f.push("hostname");
    }
    f
}

/// A server description (2.19): up to 255 printable characters, or null.
fn description_field(m: &Map<String, Value>) -> Result<Option<Option<String>>, ApiError> {
    match m.get("description") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(d @ Value::String(t)) => {
            if t.chars().count() > 255 {
                return Err(invalid("description", d, &format!("{d} is too long")));
            }
            if t.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
                return Err(invalid("description", d, &format!("{d} does not match the printable characters pattern")));
            }
            Ok(Some(Some(t.clone())))
        }
        Some(other) => Err(invalid("description", other, &format!("{other} is not of type 'string', 'null'"))),
    }
}

/// A server hostname (2.90; a fully qualified name from 2.94): 1–63 characters of letters, digits, `-` and
/// `.` (2.94: up to 255), not starting with `-` or `.`.
fn hostname_field(m: &Map<String, Value>, mv: Microversion) -> Result<Option<String>, ApiError> {
    let Some(h) = m.get("hostname") else {
        return Ok(None);
    };
    let Value::String(t) = h else {
        return Err(invalid("hostname", h, &format!("{h} is not of type 'string'")));
    };
    let max = if mv >= v(94) { 255 } else { 63 };
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || (mv >= v(94) && c == '.');
    if t.is_empty() || t.len() > max || !t.chars().all(ok_char) || t.starts_with(['-', '.']) || t.ends_with(['-', '.'])
    {
        return Err(invalid("hostname", h, &format!("{h} does not match the hostname pattern")));
    }
    Ok(Some(t.clone()))
}

/// Server tags (2.26): at most 50, each 1–60 characters without `/` or `,`.
pub(super) const MAX_TAGS: usize = 50;

fn tag_valid(t: &str) -> bool {
    !t.is_empty() && t.chars().count() <= 60 && !t.contains(['/', ','])
}

fn tags_field(v: &Value, field: &str) -> Result<Vec<String>, ApiError> {
    let Value::Array(items) = v else {
        return Err(invalid(field, v, &format!("{v} is not of type 'array'")));
    };
    if items.len() > MAX_TAGS {
        return Err(invalid(field, v, &format!("{v} is too long")));
    }
    let mut out: Vec<String> = Vec::new();
    for t in items {
        match t {
            Value::String(tag) if tag_valid(tag) => {
                if out.contains(tag) {
                    return Err(invalid(field, v, &format!("{v} has non-unique elements")));
                }
                out.push(tag.clone());
            }
            Value::String(_) => {
                return Err(invalid(field, t, &format!("{t} does not match \"^[^,/]*$\" or its length is not 1-60")));
            }
            other => {
                return Err(invalid(field, other, &format!("{other} is not of type 'string'")));
            }
        }
    }
    Ok(out)
}

/// `networks` of a server create: from 2.37 required, either `"auto"`, `"none"` or a list of requests whose `uuid`
/// must be a uuid. No network is attached either way while this cloud has no network service.
fn networks_field(m: &Map<String, Value>, mv: Microversion) -> Result<(), ApiError> {
    let nets = match m.get("networks") {
        None if mv >= v(37) => {
            return Err(ApiError::bad_request(
                "Invalid input for field/attribute server. Value: None. 'networks' is a required property",
            ));
        }
        None => return Ok(()),
        Some(n) => n,
    };
    match nets {
        Value::String(t) if mv >= v(37) && (t == "auto" || t == "none") => Ok(()),
        Value::Array(list) => {
            let mut allowed = vec!["uuid", "port", "fixed_ip"];
            if (v(32)..v(37)).contains(&mv) || mv >= v(42) {
                allowed.push("tag");
            }
            for n in list {
                let Value::Object(o) = n else {
                    return Err(invalid("networks", n, &format!("{n} is not of type 'object'")));
                };
                only(o, &allowed)?;
                if mv >= v(37)
                    && let Some(u) = o.get("uuid")
                    && u.as_str().is_none_or(|u| uuid::Uuid::parse_str(u).is_err())
                {
                    return Err(invalid("uuid", u, &format!("{u} is not a 'uuid'")));
                }
            }
            Ok(())
        }
        other if mv >= v(37) => {
            Err(invalid("networks", other, &format!("{other} is not valid under any of the given schemas")))
        }
        other => Err(invalid("networks", other, &format!("{other} is not of type 'array'"))),
    }
}

async fn create(
    State(s): State<AppState>,
    ctx: Context,
    Extension(rid): Extension<RequestId>,
    Extension(mv): Extension<Microversion>,
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
    only(m, &create_fields(mv))?;
    let name = name_field(m, true)?.unwrap_or_default();
    networks_field(m, mv)?;
    let description = description_field(m)?.flatten();
    let tags = match m.get("tags") {
        Some(t) => tags_field(t, "tags")?,
        None => Vec::new(),
    };
    let hostname = hostname_field(m, mv)?;
    if m.contains_key("trusted_image_certificates") {
        return Err(ApiError::bad_request(
            "Image signature certificate validation is not enabled in this cloud, so trusted_image_certificates \
             cannot be honoured.",
        ));
    }
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
    let bdm_list = m.get("block_device_mapping_v2").and_then(Value::as_array).cloned().unwrap_or_default();
    if let Some(old) = m.get("block_device_mapping").and_then(Value::as_array)
        && !old.is_empty()
    {
        return Err(ApiError::bad_request(
            "Block Device Mapping is Invalid: the legacy block_device_mapping is not supported; use block_device_mapping_v2.",
        ));
    }
    let token = headers.get("x-auth-token").and_then(|t| t.to_str().ok()).unwrap_or_default();
    let plan = super::volumes::plan_bdms(&s, token, &project, &bdm_list, mv, max_count).await?;
    let boot_from_volume = plan.boots_from_volume();
    // An image copied to a local disk as the root device is an image boot, as `openstack server create --image`
    // may send it.
    let image_ref = match &plan.local_root_image {
        Some(id) if image_ref.is_empty() => ref_id(id),
        _ => image_ref,
    };
    if boot_from_volume && plan.local_root_image.is_some() {
        return Err(ApiError::bad_request("Block Device Mapping is Invalid: Boot sequence for the instance and image/block device mapping combination is not valid."));
    }
    // A server booted from a volume has no image (as upstream's volume-backed instances).
    let image_ref = if boot_from_volume { String::new() } else { image_ref };
    if image_ref.is_empty() && !boot_from_volume {
        return Err(ApiError::bad_request("Block Device Mapping is Invalid: Boot sequence for the instance and image/block device mapping combination is not valid."));
    }
    let caller = caller(&s, &ctx);
    let viewer = Viewer { admin: caller.admin, project_id: ctx.project_id.clone() };
    let flavor = match s.compute.flavor(&viewer, &flavor_ref).await {
        Ok(f) => f,
        Err(crate::Error::NotFound(_)) => return Err(ApiError::bad_request(format!("Flavor {flavor_ref} could not be found."))),
        Err(e) => return Err(e.into()),
    };
    let images = s.images.as_ref().ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "The image service is not configured."))?;
    // The image the root disk comes from: the server's, or the one a root volume is made from.
    let root_image = if boot_from_volume {
        plan.volumes.iter().find(|p| p.bdm.boot_index == Some(0)).and_then(|p| p.bdm.image_id.clone())
    } else {
        Some(image_ref.clone())
    };
    let image = match &root_image {
        Some(id) => Some(images.get(token, id).await?.ok_or_else(|| ApiError::bad_request(format!("Image {id} could not be found.")))?),
        None => None,
    };
    if let Some(image) = &image {
        let image_ref = root_image.clone().unwrap_or_default();
        if image.status != "active" {
            return Err(ApiError::bad_request(format!("Image {image_ref} is not active.")));
        }
        if image.min_ram > flavor.memory_mb {
            return Err(ApiError::bad_request("Flavor's memory is too small for requested image."));
        }
        // A volume-backed server's root disk is its volume, not the flavor's.
        if flavor.root_gb > 0 && !boot_from_volume {
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
    let destination = requested_destination(&s, &ctx, m).await?;
    let security_groups = super::network::security_groups_field(m)?;
    let auto_disk_config = disk_config_field(m)?;
    let networks =
        super::network::resolve(s.compute.network(), token, &project, m, mv, max_count, caller.admin).await?;
    super::network::check_security_groups(s.compute.network(), token, &project, &security_groups).await?;
    if hostname.is_some() && max_count > 1 {
        return Err(ApiError::bad_request("Cannot set a hostname when creating more than one server."));
    }
    let flavor_spec = s.compute.flavor_spec(&flavor).await;
    let mut block_devices = super::volumes::make_volumes(&s, token, &project, &plan).await?;
    super::volumes::assign_devices(&mut block_devices, &flavor_spec, config_drive);
    let boot = Boot {
        block_devices: block_devices.clone(),
        name,
        description,
        hostname,
        destination,
        flavor: Some(flavor_spec),
        image_ref,
        image_properties: image.map(|i| i.properties).unwrap_or_default(),
        key_name,
        user_data,
        metadata,
        availability_zone: availability_zone.map(|z| z.split(':').next().unwrap_or_default().to_string()),
        config_drive,
        min_count,
        max_count,
        access_ip_v4,
        access_ip_v6,
        tags,
        group: super::server_groups::group_hint(&v)?,
        networks,
        // The groups the new ports get, and the names the server shows: the project's `default` unless named.
        security_groups: if security_groups.is_empty() { vec!["default".to_string()] } else { security_groups.clone() },
    };
    let (rows, reservation_id) = match s.compute.servers_create(&caller, boot, key_data, &rid.0).await {
        Ok(made) => made,
        Err(e) => {
            super::volumes::unmake_volumes(&s, token, &project, &plan, &block_devices).await;
            return Err(e.into());
        }
    };
    for r in &rows {
        set_disk_config(&s, &r.uuid, auto_disk_config).await?;
    }
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
        "OS-DCF:diskConfig": disk_config_view(auto_disk_config.unwrap_or(false)),
        "security_groups": if security_groups.is_empty() { json!([{"name": "default"}]) } else {
            Value::Array(security_groups.iter().map(|g| json!({"name": g})).collect())
        },
        "adminPass": admin_pass,
    }});
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, self_href)], Json(out)).into_response())
}

/// The compute host and node a server create asks for, which must exist; the scheduler's filters still run on them.
/// Either `host` and `hypervisor_hostname` (2.74, admins), or upstream's older forced destination in the zone:
/// `availability_zone` = `zone:host`, `zone:host:node` or `zone::node` (admins).
async fn requested_destination(
    s: &AppState,
    ctx: &Context,
    m: &Map<String, Value>,
) -> Result<Option<crate::servers::Destination>, ApiError> {
    let project = ctx.project_id.clone().unwrap_or_default();
    let mut host = string_field(m, "host", 255)?;
    let mut node = string_field(m, "hypervisor_hostname", 255)?;
    let forced = m.get("availability_zone").and_then(Value::as_str).and_then(forced_destination);
    match (host.is_some() || node.is_some(), forced) {
        (false, None) => return Ok(None),
        (true, Some(_)) => {
            return Err(ApiError::bad_request(
                "The requested availability zone host and node may not be combined with the host or \
                 hypervisor_hostname fields.",
            ));
        }
        (true, None) => enforce_on(s, ctx, "compute:servers:create:requested_destination", &project)?,
        (false, Some((h, n))) => {
            enforce_on(s, ctx, "os_compute_api:servers:create:forced_host", &project)?;
            (host, node) = (h, n);
        }
    }
    let nodes = s.compute.store().node_list().await?;
    if let Some(h) = &host
        && !nodes.iter().any(|n| &n.info.host == h)
    {
        return Err(ApiError::bad_request(format!("Compute host {h} could not be found.")));
    }
    if let Some(n) = &node
        && !nodes.iter().any(|x| &x.info.node == n && host.as_ref().is_none_or(|h| &x.info.host == h))
    {
        return Err(ApiError::bad_request(format!(
            "Compute host {} could not be found.",
            host.as_deref().unwrap_or(n)
        )));
    }
    Ok(Some(crate::servers::Destination { host, node }))
}

/// The host and node of a forced `zone:host[:node]` availability zone (empty parts are unset); none without a `:`.
fn forced_destination(zone: &str) -> Option<(Option<String>, Option<String>)> {
    let (_, rest) = zone.split_once(':')?;
    let (host, node) = rest.split_once(':').unwrap_or((rest, ""));
    let part = |p: &str| (!p.is_empty()).then(|| p.to_string());
    let (host, node) = (part(host), part(node));
    (host.is_some() || node.is_some()).then_some((host, node))
}

/// A generated admin password (12 characters without look-alikes), as upstream's `generate_password`.
fn admin_password() -> String {
    crate::servers::random_string(12)
}

// ----- list and show -----

pub(super) fn parse_time(field: &str, v: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_micros())
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc().timestamp_micros())
        })
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S").map(|t| t.and_utc().timestamp_micros()))
        .map_err(|_| ApiError::bad_request(format!("Invalid input for query parameters {field}. Value: {v}. '{v}' is not a 'date-time'")))
}

/// The query parameters `GET /servers` accepts from 2.75 (earlier, unknown ones are ignored).
const LIST_PARAMS: &[&str] = &[
    "user_id",
    "project_id",
    "tenant_id",
    "launch_index",
    "image_ref",
    "image",
    "kernel_id",
    "ramdisk_id",
    "hostname",
    "key_name",
    "power_state",
    "vm_state",
    "task_state",
    "host",
    "node",
    "flavor",
    "reservation_id",
    "launched_at",
    "terminated_at",
    "availability_zone",
    "name",
    "display_name",
    "description",
    "created_at",
    "updated_at",
    "changes-since",
    "changes-before",
    "deleted",
    "locked",
    "locked_by",
    "config_drive",
    "uuid",
    "root_device_name",
    "access_ip_v4",
    "access_ip_v6",
    "accessIPv4",
    "accessIPv6",
    "ip",
    "ip6",
    "status",
    "all_tenants",
    "sort_key",
    "sort_dir",
    "limit",
    "marker",
    "progress",
    "tags",
    "tags-any",
    "not-tags",
    "not-tags-any",
    "block_device_mapping",
    "services",
    "metadata",
    "system_metadata",
    "info_cache",
    "security_groups",
    "pci_devices",
    "auto_disk_config",
    "default_ephemeral_device",
    "default_swap_device",
    "shutdown_terminate",
    "cleaned",
    "vm_mode",
    "ephemeral_gb",
    "ephemeral_key_uuid",
    "disable_terminate",
    "architecture",
    "os_type",
    "root_gb",
    "memory_mb",
    "vcpus",
    "instance_type_id",
    "ramdisk_id",
];

/// Comma-separated tags of a list filter.
fn tag_list(q: &QueryPairs, key: &str) -> Option<Vec<String>> {
    let all: Vec<String> = q
        .get_all(key)
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    (!all.is_empty() || q.get(key).is_some()).then_some(all)
}

async fn listing(
    s: &AppState,
    ctx: &Context,
    mv: Microversion,
    q: &QueryPairs,
    path: &str,
    full: bool,
) -> Result<Json<Value>, ApiError> {
    let project = ctx.project_id.clone().unwrap_or_default();
    let rule = if full { "os_compute_api:servers:detail" } else { "os_compute_api:servers:index" };
    enforce_on(s, ctx, rule, &project)?;
    if mv >= v(75)
        && let Some(k) = q.0.iter().map(|(k, _)| k.as_str()).find(|k| !LIST_PARAMS.contains(k))
    {
        return Err(ApiError::bad_request(format!("Additional properties are not allowed ('{k}' was unexpected)")));
    }
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
    if mv >= v(66)
        && let Some(cb) = q.get("changes-before")
    {
        let before = parse_time("changes-before", cb)?;
        if filter.changes_since.is_some_and(|since| since > before) {
            return Err(ApiError::bad_request(
                "The value of changes-since must be less than or equal to changes-before.",
            ));
        }
        filter.changes_before = Some(before);
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
            // From 2.38 an unknown status is a 400; before, it matches nothing.
            None if mv >= v(38) => {
                return Err(ApiError::bad_request("Invalid status value"));
            }
            None => filter.vm_states = Some(Vec::new()),
        }
    }
    let locked = match q.get("locked") {
        Some(l) if mv >= v(73) => Some(api_common::query::parse_bool(l).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid input for query parameters locked. Value: {l}. '{l}' is not a boolean"
            ))
        })?),
        _ => None,
    };
    let page = super::page(q, MAX_LIMIT)?;
    let mut all = s.compute.instances(&filter).await?;
    if let Some(pattern) = q.get("name") {
        let re = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|_| ApiError::bad_request(format!("Invalid regular expression for name: {pattern}")))?;
        all.retain(|i| re.is_match(&i.display_name));
    }
    if let Some(locked) = locked {
        all.retain(|i| i.locked_by.is_some() == locked);
    }
    // `ip` and `ip6`: regular expressions over the instance's addresses, from the info cache.
    for (key, version) in [("ip", 4u8), ("ip6", 6u8)] {
        let Some(pattern) = q.get(key) else { continue };
        let re = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|_| ApiError::bad_request(format!("Invalid regular expression for {key}: {pattern}")))?;
        let uuids: Vec<&str> = all.iter().map(|i| i.uuid.as_str()).collect();
        let nets = s.compute.store().netinfo_of(&uuids).await?;
        all.retain(|i| {
            nets.get(&i.uuid).is_some_and(|n| {
                n.vifs.iter().flat_map(|v| v.ips.iter()).any(|ip| ip.version == version && re.is_match(&ip.address))
            })
        });
    }
    // Tag filters (2.26): all of `tags`, any of `tags-any`, not all of `not-tags`, none of `not-tags-any`.
    if mv >= v(26) {
        let filters: Vec<(&str, Vec<String>)> = ["tags", "tags-any", "not-tags", "not-tags-any"]
            .into_iter()
            .filter_map(|k| tag_list(q, k).map(|t| (k, t)))
            .collect();
        if !filters.is_empty() {
            let uuids: Vec<&str> = all.iter().map(|i| i.uuid.as_str()).collect();
            let tags = s.compute.store().tags_of(&uuids).await?;
            let empty = Vec::new();
            all.retain(|i| {
                let have = tags.get(&i.uuid).unwrap_or(&empty);
                filters.iter().all(|(k, want)| {
                    let has = |t: &String| have.contains(t);
                    match *k {
                        "tags" => want.iter().all(has),
                        "tags-any" => want.iter().any(has),
                        "not-tags" => !want.iter().all(has),
                        _ => !want.iter().any(has),
                    }
                })
            });
        }
    }
    let (items, _) = page.apply(all, |i| i.uuid.as_str())?;
    let rendered: Vec<Value> = if full {
        let vc = ViewCtx::new(s, ctx, mv).await?;
        let uuids: Vec<&str> = items.iter().map(|i| i.uuid.as_str()).collect();
        let mut metadata = s.compute.store().metadata_of(&uuids).await?;
        let mut tags = if mv >= v(26) { s.compute.store().tags_of(&uuids).await? } else { BTreeMap::new() };
        let mut nets = s.compute.store().netinfo_of(&uuids).await?;
        let sysmeta = s.compute.store().sysmeta_of(&uuids).await?;
        let mut bdms = s.compute.store().bdms_of(&uuids).await?;
        items
            .iter()
            .map(|i| {
                let x = Extras {
                    metadata: metadata.remove(&i.uuid).unwrap_or_default(),
                    tags: tags.remove(&i.uuid).unwrap_or_default(),
                    group: None,
                    net: nets.remove(&i.uuid),
                    auto_disk_config: auto_disk(sysmeta.get(&i.uuid)),
                    volumes: bdms.remove(&i.uuid).unwrap_or_default(),
                };
                server_view(s, &vc, i, x, Purpose::List)
            })
            .collect()
    } else {
        items.iter().map(|i| summary(s, i)).collect()
    };
    let mut out = json!({"servers": rendered});
    if let Some(last) = items.last().filter(|_| items.len() == page.limit && page.explicit_limit) {
        out["servers_links"] = json!([{"rel": "next", "href": Page::next_link(&s.url(path), q, &last.uuid)}]);
    }
    Ok(Json(out))
}

async fn list(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    listing(&s, &ctx, mv, &q, "/servers", false).await
}

async fn list_detail(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    listing(&s, &ctx, mv, &q, "/servers/detail", true).await
}

/// The instance `id` if the caller may see it, with policy `rule` checked against its project.
pub(super) async fn visible_server(s: &AppState, ctx: &Context, id: &str, rule: &str) -> Result<InstanceRow, ApiError> {
    visible(s, ctx, id, rule).await
}

/// The instance `id` if the caller may see it, with policy `rule` checked against its project.
async fn visible(s: &AppState, ctx: &Context, id: &str, rule: &str) -> Result<InstanceRow, ApiError> {
    let inst = s.compute.instance(&caller(s, ctx), id).await?;
    enforce_on(s, ctx, rule, &inst.project_id)?;
    Ok(inst)
}

async fn show(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let inst = visible(&s, &ctx, &id, "os_compute_api:servers:show").await?;
    let vc = ViewCtx::new(&s, &ctx, mv).await?;
    let mut x = Extras::of(&s, &inst.uuid, mv, Purpose::Show).await?;
    // A server's own page refreshes its info cache from the network service (floating IPs associated and ports
    // changed there since the build), as upstream's `network-changed` events and cache healing do.
    if let (Some(net), Some(info)) = (s.compute.network(), x.net.as_mut())
        && !inst.deleted
        && inst.host.is_some()
        && inst.task_state.is_none()
    {
        match net.refresh(&inst.uuid, &info.vifs).await {
            Ok(vifs) if vifs != info.vifs => {
                s.compute.store().netinfo_set_vifs(&inst.uuid, &vifs).await?;
                info.vifs = vifs;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(instance = %inst.uuid, error = %e, "cannot refresh the network info cache"),
        }
    }
    Ok(Json(json!({"server": server_view(&s, &vc, &inst, x, Purpose::Show)})))
}

async fn update(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let inst = visible(&s, &ctx, &id, "os_compute_api:servers:update").await?;
    let b = body(&bytes)?;
    let m = member(&b, "server")?;
    let mut allowed = vec!["name", "accessIPv4", "accessIPv6", "OS-DCF:diskConfig"];
    if mv >= v(19) {
        allowed.push("description");
    }
    if mv >= v(90) {
        allowed.push("hostname");
    }
    only(m, &allowed)?;
    let name = name_field(m, false)?;
    let description = description_field(m)?;
    let hostname = hostname_field(m, mv)?;
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
    let auto_disk_config = disk_config_field(m)?;
    let c = caller(&s, &ctx);
    let mut updated = s.compute.server_update(&c, &inst.uuid, name, description, v4, v6).await?;
    if let Some(h) = hostname {
        updated = s.compute.server_set_hostname(&c, &inst.uuid, &h).await?;
    }
    set_disk_config(&s, &inst.uuid, auto_disk_config).await?;
    let vc = ViewCtx::new(&s, &ctx, mv).await?;
    let x = Extras::of(&s, &updated.uuid, mv, Purpose::Update).await?;
    Ok(Json(json!({"server": server_view(&s, &vc, &updated, x, Purpose::Update)})))
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
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let b = body(&bytes)?;
    let o = b.as_object().cloned().unwrap_or_default();
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
            let m =
                arg.as_object().ok_or_else(|| invalid("rebuild", arg, &format!("{arg} is not of type 'object'")))?;
            let mut allowed = vec![
                "imageRef",
                "name",
                "adminPass",
                "metadata",
                "OS-DCF:diskConfig",
                "accessIPv4",
                "accessIPv6",
                "preserve_ephemeral",
            ];
            for (since, field) in [
                (19, "description"),
                (54, "key_name"),
                (57, "user_data"),
                (63, "trusted_image_certificates"),
                (90, "hostname"),
            ] {
                if mv >= v(since) {
                    allowed.push(field);
                }
            }
            if mv < v(57) {
                allowed.push("personality");
            }
            only(m, &allowed)?;
            let image = m.get("imageRef").and_then(Value::as_str).map(ref_id).ok_or_else(|| {
                ApiError::bad_request("Invalid input for field/attribute rebuild. Value: None. 'imageRef' is a required property")
            })?;
            let name = name_field(m, false)?;
            let description = description_field(m)?;
            let hostname = hostname_field(m, mv)?;
            let user_data = match m.get("user_data") {
                None => None,
                Some(Value::Null) => Some(None),
                Some(_) => Some(string_field(m, "user_data", 65535)?),
            };
            if let Some(Some(ud)) = &user_data {
                use base64::Engine;
                if base64::engine::general_purpose::STANDARD.decode(ud.trim()).is_err() {
                    return Err(ApiError::bad_request("User data needs to be valid base 64."));
                }
            }
            if m.get("trusted_image_certificates").is_some_and(|c| !c.is_null()) {
                return Err(ApiError::bad_request(
                    "Image signature certificate validation is not enabled in this cloud, so \
                     trusted_image_certificates cannot be honoured.",
                ));
            }
            let key = match m.get("key_name") {
                None => None,
                Some(Value::Null) => Some(None),
                Some(Value::String(k)) => match s.compute.keypair(&ctx.user_id, k).await {
                    Ok(kp) => Some(Some((k.clone(), kp.public_key))),
                    Err(crate::Error::NotFound(_)) => {
                        return Err(ApiError::bad_request("Invalid key_name provided."));
                    }
                    Err(e) => return Err(e.into()),
                },
                Some(other) => {
                    return Err(invalid("key_name", other, &format!("{other} is not of type 'string', 'null'")));
                }
            };
            let metadata = m.get("metadata").map(|md| metadata_field(md, "metadata")).transpose()?;
            let auto_disk_config = disk_config_field(m)?;
            visible(&s, &ctx, &id, "os_compute_api:servers:rebuild").await?;
            let token = headers.get("x-auth-token").and_then(|t| t.to_str().ok()).unwrap_or_default();
            let images = s.images.as_ref().ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "The image service is not configured."))?;
            match images.get(token, &image).await? {
                Some(i) if i.status == "active" => {}
                Some(_) => return Err(ApiError::bad_request(format!("Image {image} is not active."))),
                None => return Err(ApiError::bad_request(format!("Image {image} could not be found."))),
            }
            if let Some(md) = metadata {
                s.compute.metadata_set(&c.project_id, &id, &md, true).await?;
            }
            if name.is_some() || description.is_some() {
                s.compute.server_update(&c, &id, name, description, None, None).await?;
            }
            if let Some(h) = hostname {
                s.compute.server_set_hostname(&c, &id, &h).await?;
            }
            if key.is_some() || user_data.is_some() {
                s.compute.server_set_boot_data(&c, &id, key, user_data).await?;
            }
            set_disk_config(&s, &id, auto_disk_config).await?;
            ("os_compute_api:servers:rebuild", Action::Rebuild { image_ref: image, block_devices: Vec::new() })
        }
        "resize" => {
            let m = arg.as_object().ok_or_else(|| invalid("resize", arg, &format!("{arg} is not of type 'object'")))?;
            only(m, &["flavorRef", "OS-DCF:diskConfig"])?;
            let auto_disk_config = disk_config_field(m)?;
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
            set_disk_config(&s, &id, auto_disk_config).await?;
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
            // From 2.45 the image id is in the body instead of a `Location` header.
            if mv >= v(45) {
                return Ok((StatusCode::ACCEPTED, Json(json!({"image_id": image_id}))).into_response());
            }
            let location = s.url(&format!("/images/{image_id}"));
            return Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)]).into_response());
        }
        "createBackup" => {
            let m = arg.as_object().ok_or_else(|| invalid("createBackup", arg, &format!("{arg} is not of type 'object'")))?;
            only(m, &["name", "backup_type", "rotation", "metadata"])?;
            let required = |field: &str| {
                ApiError::bad_request(format!(
                    "Invalid input for field/attribute createBackup. Value: {arg}. '{field}' is a required property"
                ))
            };
            let name = match m.get("name") {
                Some(Value::String(n)) if !n.is_empty() && n.chars().count() <= 255 && n.trim() == n => n.clone(),
                Some(v @ Value::String(_)) => return Err(invalid("name", v, "is empty, too long or has leading/trailing whitespace")),
                Some(v) => return Err(invalid("name", v, &format!("{v} is not of type 'string'"))),
                None => return Err(required("name")),
            };
            let backup_type = match m.get("backup_type") {
                Some(Value::String(t)) => t.clone(),
                Some(v) => return Err(invalid("backup_type", v, &format!("{v} is not of type 'string'"))),
                None => return Err(required("backup_type")),
            };
            let rotation = match m.get("rotation") {
                Some(r @ Value::Number(n)) => n.as_u64().ok_or_else(|| invalid("rotation", r, &format!("{r} is less than the minimum of 0")))?,
                Some(r @ Value::String(t)) => t.parse::<u64>().map_err(|_| invalid("rotation", r, &format!("{r} does not match '^[0-9]+$'")))?,
                Some(r) => return Err(invalid("rotation", r, &format!("{r} is not of type 'integer', 'string'"))),
                None => return Err(required("rotation")),
            };
            let metadata = match m.get("metadata") {
                Some(md) => metadata_field(md, "metadata")?,
                None => BTreeMap::new(),
            };
            let inst = visible(&s, &ctx, &id, "os_compute_api:os-create-backup").await?;
            let token = headers.get("x-auth-token").and_then(|t| t.to_str().ok()).unwrap_or_default().to_string();
            let images = s.images.as_ref().ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "The image service is not configured."))?;
            let image = s.compute.server_backup(&c, &inst.uuid, images, &token, &name, &metadata, &backup_type, rotation, &rid.0).await?;
            return Ok(match image {
                // As createImage: the image id in the body from 2.45, in a `Location` header before.
                Some(image_id) if mv >= v(45) => (StatusCode::ACCEPTED, Json(json!({"image_id": image_id}))).into_response(),
                Some(image_id) => {
                    (StatusCode::ACCEPTED, [(header::LOCATION, s.url(&format!("/images/{image_id}")))]).into_response()
                }
                None => StatusCode::ACCEPTED.into_response(),
            });
        }
        "shelve" => {
            let inst = visible(&s, &ctx, &id, "os_compute_api:os-shelve:shelve").await?;
            let token = headers.get("x-auth-token").and_then(|t| t.to_str().ok()).unwrap_or_default().to_string();
            let images = s.images.as_ref().ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "The image service is not configured."))?;
            s.compute.server_shelve(&c, &inst.uuid, images, &token, &rid.0).await?;
            return Ok(StatusCode::ACCEPTED.into_response());
        }
        "shelveOffload" => ("os_compute_api:os-shelve:shelve_offload", Action::ShelveOffload),
        "rescue" => {
            let (pass, rescue_image) = match arg {
                Value::Null => (None, None),
                Value::Object(m) => {
                    only(m, &["adminPass", "rescue_image_ref"])?;
                    let pass = match m.get("adminPass") {
                        Some(Value::String(p)) => Some(p.clone()),
                        Some(other) => return Err(invalid("adminPass", other, &format!("{other} is not of type 'string'"))),
                        None => None,
                    };
                    let image = match m.get("rescue_image_ref") {
                        Some(Value::String(r)) if uuid::Uuid::parse_str(r).is_ok() => Some(r.clone()),
                        Some(other) => return Err(invalid("rescue_image_ref", other, &format!("{other} is not a 'uuid'"))),
                        None => None,
                    };
                    (pass, image)
                }
                other => return Err(invalid("rescue", other, &format!("{other} is not of type 'object', 'null'"))),
            };
            let inst = visible(&s, &ctx, &id, "os_compute_api:os-rescue").await?;
            if inst.image_ref.is_empty() {
                return Err(ApiError::bad_request(format!("Instance {} cannot be rescued: it boots from a volume.", inst.uuid)));
            }
            let token = headers.get("x-auth-token").and_then(|t| t.to_str().ok()).unwrap_or_default().to_string();
            let images = s.images.as_ref().ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "The image service is not configured."))?;
            // The rescue image is the one asked for, else the instance's own.
            let image_ref = rescue_image.unwrap_or_else(|| inst.image_ref.clone());
            let image = match images.get(&token, &image_ref).await? {
                Some(i) if i.status == "active" => i,
                Some(_) => return Err(ApiError::bad_request(format!("Image {image_ref} is not active."))),
                None => return Err(ApiError::bad_request(format!("Image {image_ref} could not be found."))),
            };
            let pass = pass.unwrap_or_else(admin_password);
            let action = Action::Rescue {
                image_ref: image.id,
                image_properties: image.properties,
                admin_pass: compute_rpc::Secret(pass.clone()),
            };
            s.compute.server_action(&c, &inst.uuid, action, &rid.0).await?;
            return Ok(Json(json!({"adminPass": pass})).into_response());
        }
        "unrescue" => ("os_compute_api:os-unrescue", Action::Unrescue),
        "unshelve" => {
            // From 2.77 the body may name the zone to unshelve into; before, it is ignored.
            let zone = match arg {
                Value::Object(m) if mv >= v(77) => {
                    only(m, &["availability_zone"])?;
                    match m.get("availability_zone") {
                        Some(Value::String(z)) if !z.is_empty() && z.chars().count() <= 255 => Some(z.clone()),
                        Some(other) => return Err(invalid("availability_zone", other, &format!("{other} is not a valid zone name"))),
                        None => None,
                    }
                }
                Value::Null | Value::Object(_) => None,
                other if mv >= v(77) => return Err(invalid("unshelve", other, &format!("{other} is not of type 'object', 'null'"))),
                _ => None,
            };
            let inst = visible(&s, &ctx, &id, "os_compute_api:os-shelve:unshelve").await?;
            s.compute.server_unshelve(&c, &inst.uuid, zone, &rid.0).await?;
            return Ok(StatusCode::ACCEPTED.into_response());
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
            // A reason may be given from 2.73; before, the body is `{"lock": null}`.
            let reason = match arg {
                Value::Object(m) if mv >= v(73) => {
                    only(m, &["locked_reason"])?;
                    string_field(m, "locked_reason", 255)?
                }
                Value::Null => None,
                other if mv >= v(73) => {
                    return Err(invalid("lock", other, &format!("{other} is not of type 'object', 'null'")));
                }
                _ => None,
            };
            let inst = visible(&s, &ctx, &id, "os_compute_api:os-lock-server:lock").await?;
            s.compute.server_lock(&c, &inst.uuid, true, reason, &rid.0).await?;
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
        "trigger_crash_dump" if mv >= v(17) => {
            let inst = visible(&s, &ctx, &id, "os_compute_api:servers:trigger_crash_dump").await?;
            s.compute.server_crash_dump_check(&c, &inst)?;
            // No hypervisor here can inject an NMI, which upstream answers as a driver without the feature.
            return Err(ApiError::bad_request(
                "Triggering a crash dump is not supported by this compute host's driver.",
            ));
        }
        "injectNetworkInfo" => {
            let inst = visible(&s, &ctx, &id, "os_compute_api:os-admin-actions:inject_network_info").await?;
            // The guest's network configuration comes from the metadata service; the info cache is refreshed.
            super::proxies::refresh_cache(&s, &inst).await;
            return Ok(StatusCode::ACCEPTED.into_response());
        }
        act @ ("addSecurityGroup" | "removeSecurityGroup") => {
            let add = act == "addSecurityGroup";
            let rule = if add { "os_compute_api:os-security-groups:add" } else { "os_compute_api:os-security-groups:remove" };
            let inst = visible(&s, &ctx, &id, rule).await?;
            let status = super::proxies::server_security_group(&s, &ctx, &headers, &inst, arg, add).await?;
            return Ok(status.into_response());
        }
        act @ ("addFloatingIp" | "removeFloatingIp") if super::proxies::floating_ip_actions(mv) => {
            let inst = visible(&s, &ctx, &id, "os_compute_api:os-floating-ips:add").await?;
            let status = if act == "addFloatingIp" {
                super::proxies::add_floating_ip(&s, &headers, &inst, arg).await?
            } else {
                super::proxies::remove_floating_ip(&s, &headers, &inst, arg).await?
            };
            return Ok(status.into_response());
        }
        removed @ ("addFixedIp" | "removeFixedIp" | "addFloatingIp" | "removeFloatingIp") if mv >= v(44) => {
            s.compute.instance(&c, &id).await?;
            return Err(ApiError::not_found(format!("There is no such action: {removed}")));
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
        let vc = ViewCtx::new(&s, &ctx, mv).await?;
        let x = Extras::of(&s, &inst.uuid, mv, Purpose::Rebuild).await?;
        let mut view = server_view(&s, &vc, &inst, x, Purpose::Rebuild);
        view["adminPass"] = match arg.get("adminPass") {
            Some(Value::String(p)) => json!(p),
            _ => json!(admin_password()),
        };
        return Ok((StatusCode::ACCEPTED, Json(json!({"server": view}))).into_response());
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `GET /servers/{id}/diagnostics`: the guest's counters from its agent (admins); from 2.48 in upstream's
/// standard form instead of the driver's own keys.
async fn diagnostics(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let inst = visible(&s, &ctx, &id, "os_compute_api:os-server-diagnostics").await?;
    let raw = s.compute.conductor()?.diagnostics(&inst).await?;
    if mv < v(48) {
        return Ok(Json(json!(raw)));
    }
    let node = s.compute.store().node_list().await?.into_iter().find(|n| Some(&n.info.node) == inst.node.as_ref());
    Ok(Json(standard_diagnostics(&inst, &raw, node.map(|n| n.info.hypervisor_type.to_lowercase()))))
}

/// Upstream's standard diagnostics (2.48) from a driver's libvirt-style counters (`cpuN_time`, `memory`,
/// `memory-actual`, `<disk>_read`/`_read_req`/`_write`/`_write_req`/`_errors`, `<nic>_rx`/`_tx`…).
fn standard_diagnostics(
    inst: &InstanceRow,
    raw: &std::collections::BTreeMap<String, Value>,
    hypervisor: Option<String>,
) -> Value {
    let int = |k: &str| raw.get(k).and_then(Value::as_i64);
    let state = match inst.power_state {
        1 => "running",
        3 => "paused",
        4 => "shutdown",
        6 => "crashed",
        7 => "suspended",
        _ => "pending",
    };
    let mut cpus: Vec<(i64, i64)> = raw
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("cpu")?.strip_suffix("_time")?.parse().ok()?, v.as_i64()?)))
        .collect();
    cpus.sort();
    let mut disks: Vec<&str> = raw.keys().filter_map(|k| k.strip_suffix("_read_req")).collect();
    disks.sort();
    let disk_details: Vec<Value> = disks
        .iter()
        .map(|d| {
            json!({
                "read_bytes": int(&format!("{d}_read")),
                "read_requests": int(&format!("{d}_read_req")),
                "write_bytes": int(&format!("{d}_write")),
                "write_requests": int(&format!("{d}_write_req")),
                "errors_count": int(&format!("{d}_errors")),
            })
        })
        .collect();
    let mut nics: Vec<&str> = raw.keys().filter_map(|k| k.strip_suffix("_rx_packets")).collect();
    nics.sort();
    let nic_details: Vec<Value> = nics
        .iter()
        .map(|n| {
            json!({
                "mac_address": null,
                "rx_octets": int(&format!("{n}_rx")), "rx_errors": int(&format!("{n}_rx_errors")),
                "rx_drop": int(&format!("{n}_rx_drop")), "rx_packets": int(&format!("{n}_rx_packets")), "rx_rate": null,
                "tx_octets": int(&format!("{n}_tx")), "tx_errors": int(&format!("{n}_tx_errors")),
                "tx_drop": int(&format!("{n}_tx_drop")), "tx_packets": int(&format!("{n}_tx_packets")), "tx_rate": null,
            })
        })
        .collect();
    let uptime = inst.launched_at.map(|t| (crate::store::instances::now_us() - t) / 1_000_000);
    json!({
        "state": state,
        // The driver drives QEMU guests as upstream's libvirt driver does, the only such value upstream knows.
        "driver": "libvirt",
        "hypervisor": hypervisor,
        "hypervisor_os": "linux",
        "uptime": uptime,
        "config_drive": inst.config_drive,
        "num_cpus": inst.flavor.vcpus,
        "num_nics": nic_details.len(),
        "num_disks": disk_details.len(),
        "memory_details": {
            "maximum": int("memory").map(|kb| kb / 1024),
            "used": int("memory-actual").map(|kb| kb / 1024),
        },
        "cpu_details": cpus.iter().map(|(id, t)| json!({"id": id, "time": t, "utilisation": null})).collect::<Vec<_>>(),
        "nic_details": nic_details,
        "disk_details": disk_details,
    })
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

// ----- tags (2.26) -----

/// The tags API exists from 2.26.
fn tags_api(mv: Microversion) -> Result<(), ApiError> {
    if mv < v(26) { Err(ApiError::not_found("The resource could not be found.")) } else { Ok(()) }
}

/// Tags change only while the server is in a settled state, as upstream.
fn tags_writable(inst: &InstanceRow) -> Result<(), ApiError> {
    let ok =
        ["active", "paused", "suspended", "stopped", "shelved", "shelved_offloaded"].contains(&inst.vm_state.as_str());
    if ok && inst.task_state.is_none() {
        return Ok(());
    }
    Err(ApiError::conflict(format!(
        "Cannot 'update tags' instance {} while it is in {} {}",
        inst.uuid,
        if ok { "task_state" } else { "vm_state" },
        if ok { inst.task_state.clone().unwrap_or_default() } else { inst.vm_state.clone() }
    )))
}

async fn tags_of(s: &AppState, uuid: &str) -> Result<Vec<String>, ApiError> {
    Ok(s.compute.store().tags_of(&[uuid]).await?.remove(uuid).unwrap_or_default())
}

async fn tags_list(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    tags_api(mv)?;
    let inst = visible(&s, &ctx, &id, "os_compute_api:os-server-tags:index").await?;
    Ok(Json(json!({"tags": tags_of(&s, &inst.uuid).await?})))
}

async fn tags_replace(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    tags_api(mv)?;
    let inst = visible(&s, &ctx, &id, "os_compute_api:os-server-tags:update_all").await?;
    let b = body(&bytes)?;
    if let Some(o) = b.as_object() {
        only(o, &["tags"])?;
    }
    let tags = match b.get("tags") {
        Some(t) => tags_field(t, "tags")?,
        None => {
            return Err(ApiError::bad_request(
                "Invalid input for field/attribute tags. Value: None. 'tags' is a required property",
            ));
        }
    };
    tags_writable(&inst)?;
    s.compute.store().tags_set(&inst.uuid, &tags).await?;
    Ok(Json(json!({"tags": tags_of(&s, &inst.uuid).await?})))
}

async fn tags_clear(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    tags_api(mv)?;
    let inst = visible(&s, &ctx, &id, "os_compute_api:os-server-tags:delete_all").await?;
    tags_writable(&inst)?;
    s.compute.store().tags_set(&inst.uuid, &[]).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn tag_not_found(uuid: &str, tag: &str) -> ApiError {
    ApiError::not_found(format!("Tag {tag} does not exist for instance {uuid}"))
}

async fn tag_check(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path((id, tag)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    tags_api(mv)?;
    let inst = visible(&s, &ctx, &id, "os_compute_api:os-server-tags:show").await?;
    if tags_of(&s, &inst.uuid).await?.contains(&tag) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(tag_not_found(&inst.uuid, &tag))
    }
}

async fn tag_add(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path((id, tag)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    tags_api(mv)?;
    let inst = visible(&s, &ctx, &id, "os_compute_api:os-server-tags:update").await?;
    if !tag_valid(&tag) {
        return Err(invalid(
            "tag",
            &json!(tag),
            &format!("'{tag}' does not match \"^[^,/]*$\" or its length is not 1-60"),
        ));
    }
    tags_writable(&inst)?;
    let tags = tags_of(&s, &inst.uuid).await?;
    if tags.contains(&tag) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    if tags.len() >= MAX_TAGS {
        return Err(ApiError::bad_request(format!("The number of tags exceeded the per-server limit {MAX_TAGS}")));
    }
    s.compute.store().tag_add(&inst.uuid, &tag).await?;
    let location = s.url(&format!("/servers/{}/tags/{tag}", inst.uuid));
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

async fn tag_remove(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path((id, tag)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    tags_api(mv)?;
    let inst = visible(&s, &ctx, &id, "os_compute_api:os-server-tags:delete").await?;
    tags_writable(&inst)?;
    if s.compute.store().tag_delete(&inst.uuid, &tag).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(tag_not_found(&inst.uuid, &tag))
    }
}

// ----- topology (2.78) -----

/// `GET /servers/{id}/topology`: the guest's NUMA layout. Guests here have no NUMA topology, which upstream
/// answers with an empty node list.
async fn topology(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if mv < v(78) {
        return Err(ApiError::not_found("The resource could not be found."));
    }
    visible(&s, &ctx, &id, "compute:server:topology:index").await?;
    Ok(Json(json!({"nodes": [], "pagesize_kb": null})))
}

// ----- instance actions -----

/// The instance action representation; `updated_at` is shown from 2.58.
fn action_view(a: &crate::store::ActionRow, mv: Microversion) -> Value {
    let mut out = json!({
        "action": a.action,
        "instance_uuid": a.instance_uuid,
        "request_id": a.request_id,
        "user_id": a.user_id,
        "project_id": a.project_id,
        "start_time": iso_us(Some(a.start_time)),
        "message": a.message,
    });
    if mv >= v(58) {
        out["updated_at"] = iso_us(Some(a.updated_at));
    }
    out
}

/// Instance actions stay readable after the server is deleted from 2.21, as upstream.
async fn any_instance(s: &AppState, ctx: &Context, mv: Microversion, id: &str, rule: &str) -> Result<InstanceRow, ApiError> {
    let c = caller(s, ctx);
    let inst = match s.compute.store().instance_get(id).await? {
        Some(i) if (c.admin || i.project_id == c.project_id) && (!i.deleted || mv >= v(21)) => i,
        _ => return Err(crate::servers::instance_not_found(id).into()),
    };
    enforce_on(s, ctx, rule, &inst.project_id)?;
    Ok(inst)
}

async fn actions_list(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
    q: QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let inst = any_instance(&s, &ctx, mv, &id, "os_compute_api:os-instance-actions:list").await?;
    let mut actions = s.compute.store().actions(&inst.uuid).await?;
    if mv < v(58) {
        return Ok(Json(json!({"instanceActions": actions.iter().map(|a| action_view(a, mv)).collect::<Vec<_>>()})));
    }
    // 2.58: `changes-since` (and from 2.66 `changes-before`) on `updated_at`, `limit` and `marker` (a request id).
    let since = q.get("changes-since").map(|t| parse_time("changes-since", t)).transpose()?;
    let before =
        if mv >= v(66) { q.get("changes-before").map(|t| parse_time("changes-before", t)).transpose()? } else { None };
    if let (Some(a), Some(b)) = (since, before)
        && a > b
    {
        return Err(ApiError::bad_request("The value of changes-since must be less than or equal to changes-before."));
    }
    actions.retain(|a| since.is_none_or(|t| a.updated_at >= t) && before.is_none_or(|t| a.updated_at <= t));
    let page = super::page(&q, MAX_LIMIT)?;
    if let Some(m) = &page.marker
        && !actions.iter().any(|a| &a.request_id == m)
    {
        return Err(ApiError::bad_request(format!("Marker {m} could not be found.")));
    }
    let (items, _) = page.apply(actions, |a| a.request_id.as_str())?;
    let mut out = json!({"instanceActions": items.iter().map(|a| action_view(a, mv)).collect::<Vec<_>>()});
    if let Some(last) = items.last().filter(|_| items.len() == page.limit) {
        let path = format!("/servers/{}/os-instance-actions", inst.uuid);
        out["links"] = json!([{"rel": "next", "href": Page::next_link(&s.url(&path), &q, &last.request_id)}]);
    }
    Ok(Json(out))
}

async fn action_show(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path((id, request_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let inst = any_instance(&s, &ctx, mv, &id, "os_compute_api:os-instance-actions:show").await?;
    let a =
        s.compute.store().action(&inst.uuid, &request_id).await?.ok_or_else(|| {
            ApiError::not_found(format!("Action for request_id {request_id} on instance {id} not found"))
        })?;
    let mut view = action_view(&a, mv);
    // Events are shown to those the events policy allows; from 2.51 to everyone, with the traceback only for
    // the former. The host is shown from 2.62 (its name to the former, its hash to all).
    let details =
        s.policy.check("os_compute_api:os-instance-actions:events", &ctx, &json!({"project_id": inst.project_id}));
    if details || mv >= v(51) {
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
                });
                if details {
                    ev["traceback"] = json!(e.details);
                }
                if mv >= v(62) {
                    if details {
                        ev["host"] = json!(e.host);
                    }
                    ev["hostId"] = json!(host_id(&inst.project_id, e.host.as_deref()));
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
/// instance; each accepted event goes on to the agent of the instance's host. Events for unknown instances, or instances without a host, are 404 each; the call is 200 when all were
/// accepted, 207 when some were, 404 when none were.
async fn external_events(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-server-external-events:create")?;
    let v = body(&bytes)?;
    let events = v.get("events").and_then(Value::as_array).ok_or_else(|| {
        ApiError::bad_request("Invalid input for field/attribute events. Value: None. 'events' is a required property")
    })?;
    if events.is_empty() {
        return Err(invalid("events", &json!([]), "[] is too short"));
    }
    // Event names by the microversion that added them.
    const NAMES: &[(u32, &str)] = &[
        (1, "network-changed"),
        (1, "network-vif-plugged"),
        (1, "network-vif-unplugged"),
        (1, "network-vif-deleted"),
        (51, "volume-extended"),
        (76, "power-update"),
        (82, "accelerator-request-bound"),
        (93, "volume-reimaged"),
    ];
    let names: Vec<&str> = NAMES.iter().filter(|(since, _)| mv >= super::v(*since)).map(|(_, n)| *n).collect();
    let mut out = Vec::new();
    let mut accepted = 0;
    for e in events {
        let Some(m) = e.as_object() else { return Err(invalid("events", e, &format!("{e} is not of type 'object'"))) };
        only(m, &["name", "server_uuid", "status", "tag"])?;
        let name = m.get("name").and_then(Value::as_str).unwrap_or_default();
        if !names.contains(&name) {
            return Err(invalid("name", &m["name"], &format!("{} is not one of {names:?}", m["name"])));
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
        if let Some(inst) = &found {
            accepted += 1;
            r["code"] = json!(200);
            // The network service says a port of the instance changed: the info cache is read again.
            if name == "network-changed" {
                super::proxies::refresh_cache(&s, inst).await;
            }
            // The instance's host hears of it (a build waits for `network-vif-plugged`), as upstream casts
            // `external_instance_event` to it; a host that cannot be told loses only the event.
            if let Ok(conductor) = s.compute.conductor() {
                let tag = m.get("tag").and_then(Value::as_str);
                if let Err(e) = conductor.external_event(inst, name, status, tag).await {
                    tracing::warn!(instance = %inst.uuid, event = name, error = %e, "cannot pass an external event on");
                }
            }
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

// ----- os-server-password -----

/// `GET /servers/{id}/os-server-password`: the encrypted password the guest posted to the metadata service
/// (empty until it does).
async fn password_show(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let inst = visible(&s, &ctx, &id, "os_compute_api:os-server-password:show").await?;
    let meta = s.compute.store().sysmeta_of(&[&inst.uuid]).await?;
    let password = meta.get(&inst.uuid).and_then(|m| m.get(crate::store::sysmeta::PASSWORD)).cloned().unwrap_or_default();
    Ok(Json(json!({"password": password})))
}

/// `DELETE /servers/{id}/os-server-password`: forgets the password (204).
async fn password_clear(State(s): State<AppState>, ctx: Context, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let inst = visible(&s, &ctx, &id, "os_compute_api:os-server-password:clear").await?;
    s.compute.store().sysmeta_set(&inst.uuid, crate::store::sysmeta::PASSWORD, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::forced_destination;

    #[test]
    fn forced_destinations_in_the_zone() {
        let some = |h: Option<&str>, n: Option<&str>| Some((h.map(str::to_string), n.map(str::to_string)));
        assert_eq!(forced_destination("nova"), None);
        assert_eq!(forced_destination("nova:"), None);
        assert_eq!(forced_destination("nova:host1"), some(Some("host1"), None));
        assert_eq!(forced_destination("nova:host1:node1"), some(Some("host1"), Some("node1")));
        assert_eq!(forced_destination("nova::node1"), some(None, Some("node1")));
    }
}
