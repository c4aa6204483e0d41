//! `os-interface`: a server's ports (`interfaceAttachments`), attached and detached while it runs. The ports are
//! made or bound in the network service (to the server's host) and the info cache follows; the agent plugs what
//! the cache lists when the data plane exists.

use ::auth::Context;
use api_common::{ApiError, Microversion, RequestId};
use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    routing::get,
};
use compute_rpc::vm_state;
use serde_json::{Value, json};

use super::{AppState, body, invalid, member, only, v};
use crate::network::{As, NetworkRequest, PortOwner, Vif};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/servers/{id}/os-interface", get(list).post(attach))
        .route("/v2.1/servers/{id}/os-interface/{port_id}", get(show).delete(detach))
}

fn view(p: &Value, mv: Microversion, tag: Option<&str>) -> Value {
    let fixed: Vec<Value> = p["fixed_ips"]
        .as_array()
        .map(|a| a.iter().map(|f| json!({"subnet_id": f["subnet_id"], "ip_address": f["ip_address"]})).collect())
        .unwrap_or_default();
    let mut out = json!({
        "port_state": p["status"],
        "fixed_ips": fixed,
        "port_id": p["id"],
        "net_id": p["network_id"],
        "mac_addr": p["mac_address"],
    });
    if mv >= v(70) {
        out["tag"] = json!(tag);
    }
    out
}

async fn tags(s: &AppState, uuid: &str) -> Result<Vec<Vif>, ApiError> {
    Ok(s.compute.store().netinfo_get(uuid).await?.map(|i| i.vifs).unwrap_or_default())
}

fn tag_of<'a>(vifs: &'a [Vif], port_id: &str) -> Option<&'a str> {
    vifs.iter().find(|v| v.port_id == port_id).and_then(|v| v.tag.as_deref())
}

async fn list(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let inst = super::servers::visible_server(&s, &ctx, &id, "os_compute_api:os-attach-interfaces:list").await?;
    let n = super::proxies::network(&s)?;
    let ports = n.list(As::Service, "ports", &[("device_id", inst.uuid.as_str())]).await?;
    let vifs = tags(&s, &inst.uuid).await?;
    let items: Vec<Value> = ports.iter().map(|p| view(p, mv, tag_of(&vifs, p["id"].as_str().unwrap_or_default()))).collect();
    Ok(Json(json!({"interfaceAttachments": items})))
}

fn port_not_found(port_id: &str) -> ApiError {
    ApiError::not_found(format!("Port {port_id} is not attached"))
}

async fn show(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Path((id, port_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let inst = super::servers::visible_server(&s, &ctx, &id, "os_compute_api:os-attach-interfaces:show").await?;
    let n = super::proxies::network(&s)?;
    let port = n.show(As::Service, "ports", &port_id).await?.filter(|p| p["device_id"] == json!(inst.uuid));
    let port = port.ok_or_else(|| port_not_found(&port_id))?;
    let vifs = tags(&s, &inst.uuid).await?;
    Ok(Json(json!({"interfaceAttachment": view(&port, mv, tag_of(&vifs, &port_id))})))
}

/// The states a server may gain or lose interfaces in.
fn attachable(inst: &crate::store::InstanceRow, action: &str) -> Result<(), ApiError> {
    let ok = [vm_state::ACTIVE, vm_state::PAUSED, vm_state::STOPPED, vm_state::SUSPENDED].contains(&inst.vm_state.as_str())
        && inst.task_state.is_none();
    if ok {
        Ok(())
    } else {
        Err(ApiError::conflict(format!(
            "Cannot '{action}' instance {} while it is in vm_state {}",
            inst.uuid, inst.vm_state
        )))
    }
}

async fn attach(
    State(s): State<AppState>,
    ctx: Context,
    Extension(mv): Extension<Microversion>,
    Extension(rid): Extension<RequestId>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let inst = super::servers::visible_server(&s, &ctx, &id, "os_compute_api:os-attach-interfaces:create").await?;
    let b = body(&bytes)?;
    let m = member(&b, "interfaceAttachment")?;
    let mut allowed = vec!["net_id", "port_id", "fixed_ips"];
    if mv >= v(49) {
        allowed.push("tag");
    }
    only(m, &allowed)?;
    let str_of = |k: &str| m.get(k).and_then(Value::as_str).filter(|x| !x.is_empty()).map(str::to_string);
    let (net_id, port_id, tag) = (str_of("net_id"), str_of("port_id"), str_of("tag"));
    if net_id.is_some() && port_id.is_some() {
        return Err(ApiError::bad_request("Must not input both network_id and port_id"));
    }
    let fixed_ip = match m.get("fixed_ips") {
        None => None,
        Some(Value::Array(list)) if list.len() <= 1 => {
            let ip = list.first().and_then(|f| f["ip_address"].as_str()).map(str::to_string);
            if let Some(a) = &ip
                && a.parse::<std::net::IpAddr>().is_err()
            {
                return Err(invalid("fixed_ips", &json!(list), &format!("'{a}' is not a 'ip-address'")));
            }
            ip
        }
        Some(other) => return Err(invalid("fixed_ips", other, &format!("{other} is not valid under any of the given schemas"))),
    };
    if fixed_ip.is_some() && net_id.is_none() {
        return Err(ApiError::bad_request("Invalid input: fixed_ips requires net_id."));
    }
    attachable(&inst, "attach_interface")?;
    let n = super::proxies::network(&s)?;
    let tok = headers.get("x-auth-token").and_then(|t| t.to_str().ok()).unwrap_or_default();
    // What to attach: the port, the network, or the one network the project may use.
    let request = if let Some(pid) = port_id {
        let port = n.show(As::User(tok), "ports", &pid).await?.ok_or_else(|| ApiError::not_found(format!("Port id {pid} could not be found.")))?;
        if port["device_id"].as_str().is_some_and(|d| !d.is_empty()) {
            return Err(ApiError::conflict(format!("Port {pid} is still in use.")));
        }
        NetworkRequest { port_id: Some(pid), tag, ..Default::default() }
    } else if let Some(nid) = net_id {
        if n.show(As::User(tok), "networks", &nid).await?.is_none() {
            return Err(ApiError::not_found(format!("Network {nid} could not be found.")));
        }
        NetworkRequest { network_id: Some(nid), fixed_ip, tag, ..Default::default() }
    } else {
        let nets = n.available_networks(As::User(tok), &inst.project_id).await?;
        match nets.as_slice() {
            [one] => NetworkRequest { network_id: one["id"].as_str().map(str::to_string), tag, ..Default::default() },
            [] => return Err(ApiError::bad_request(format!("No networks are available to attach to instance {}", inst.uuid))),
            _ => return Err(ApiError::bad_request("Multiple possible networks found, use a Network ID to be more specific.")),
        }
    };
    let host = inst.host.clone().unwrap_or_default();
    let zone = inst.availability_zone.clone().unwrap_or_else(|| s.compute.default_availability_zone());
    let owner = PortOwner { uuid: &inst.uuid, project_id: &inst.project_id, zone: &zone, host: &host };
    let groups = s.compute.store().netinfo_get(&inst.uuid).await?.map(|i| i.security_groups).unwrap_or_default();
    let made = n.allocate(&owner, std::slice::from_ref(&request), &groups).await.map_err(|e| match e {
        crate::Error::Conflict(m) => ApiError::conflict(m),
        crate::Error::BadRequest(m) => ApiError::bad_request(m),
        other => other.into(),
    })?;
    let vif = made.first().ok_or_else(|| ApiError::internal("no port was made"))?;
    // The guest gets its NIC before the API answers; a failure gives the port back, as upstream.
    if let Err(e) = s.compute.conductor()?.plug_interface(&inst, vif, &rid.0).await {
        tracing::warn!(instance = %inst.uuid, port = %vif.port_id, error = %e, "cannot plug the interface");
        n.release(vif).await?;
        return Err(ApiError::internal(format!("Failed to attach network adapter device to {}", inst.uuid)));
    }
    let mut vifs = tags(&s, &inst.uuid).await?;
    vifs.extend(made.iter().cloned());
    s.compute.store().netinfo_set_vifs(&inst.uuid, &vifs).await?;
    let port = n.show(As::Service, "ports", &vif.port_id).await?.unwrap_or(Value::Null);
    Ok(Json(json!({"interfaceAttachment": view(&port, mv, vif.tag.as_deref())})))
}

async fn detach(
    State(s): State<AppState>,
    ctx: Context,
    Extension(rid): Extension<RequestId>,
    Path((id, port_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let inst = super::servers::visible_server(&s, &ctx, &id, "os_compute_api:os-attach-interfaces:delete").await?;
    let n = super::proxies::network(&s)?;
    let port = n.show(As::Service, "ports", &port_id).await?.filter(|p| p["device_id"] == json!(inst.uuid));
    let port = port.ok_or_else(|| port_not_found(&port_id))?;
    attachable(&inst, "detach_interface")?;
    let mut vifs = tags(&s, &inst.uuid).await?;
    let vif = match vifs.iter().position(|v| v.port_id == port_id) {
        Some(i) => vifs.remove(i),
        // A port bound from outside: unbound, not deleted.
        None => n.vif_of(&port, true).await?,
    };
    s.compute.conductor()?.unplug_interface(&inst, &port_id, &rid.0).await.map_err(|e| {
        tracing::warn!(instance = %inst.uuid, port = %port_id, error = %e, "cannot unplug the interface");
        ApiError::internal(format!("Failed to detach network adapter device from {}", inst.uuid))
    })?;
    n.release(&vif).await?;
    s.compute.store().netinfo_set_vifs(&inst.uuid, &vifs).await?;
    Ok(StatusCode::ACCEPTED)
}
