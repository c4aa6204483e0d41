//! What servers ask of the network service: the `networks` and `security_groups` of a create, resolved against
//! the network service with the caller's token (unknown networks and ports are 400s, ports in use 409s, as Nova's
//! `validate_networks`), and `/servers/{id}/ips`.

use api_common::{ApiError, Microversion};
use axum::{
    Json, Router,
    extract::{Path, State},
    routing::get,
};
use serde_json::{Map, Value, json};

use super::{AppState, invalid, v};
use crate::network::{As, NetworkClient, NetworkRequest};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2.1/servers/{id}/ips", get(ips))
        .route("/v2.1/servers/{id}/ips/{network}", get(ips_of_network))
}

/// The security group names of a create (`[{"name": …}]`).
pub(super) fn security_groups_field(m: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let Some(v) = m.get("security_groups") else { return Ok(Vec::new()) };
    let Value::Array(items) = v else { return Err(invalid("security_groups", v, &format!("{v} is not of type 'array'"))) };
    let mut out: Vec<String> = Vec::new();
    for g in items {
        let name = match g.get("name") {
            Some(Value::String(n)) if !n.trim().is_empty() && n.chars().count() <= 255 => n.clone(),
            Some(n) => return Err(invalid("security_groups/name", n, &format!("{n} is not a valid security group name"))),
            None => {
                return Err(invalid("security_groups", g, "'name' is a required property"));
            }
        };
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

fn ambiguous() -> ApiError {
    ApiError::conflict("Multiple possible networks found, use a Network ID to be more specific.")
}

fn network_request_of(net: &Value) -> NetworkRequest {
    NetworkRequest { network_id: net["id"].as_str().map(str::to_string), ..Default::default() }
}

/// A network an instance may be attached to: it has a subnet, and is not another project's external network
/// (unless the caller is an admin).
fn usable(net: &Value, admin: bool) -> Result<(), ApiError> {
    let id = net["id"].as_str().unwrap_or_default();
    if net["router:external"] == json!(true) && net["shared"] != json!(true) && !admin {
        return Err(ApiError::forbidden(format!("It is not allowed to create an interface on external network {id}")));
    }
    if net["subnets"].as_array().is_some_and(Vec::is_empty) {
        return Err(ApiError::bad_request(format!("Network {id} requires a subnet in order to boot instances on.")));
    }
    Ok(())
}

/// Resolves the `networks` of a create: `None` when there is no network service. Requests keep their order.
pub(super) async fn resolve(
    net: Option<&NetworkClient>,
    token: &str,
    project_id: &str,
    m: &Map<String, Value>,
    mv: Microversion,
    max_count: i64,
    admin: bool,
) -> Result<Option<Vec<NetworkRequest>>, ApiError> {
    let Some(net) = net else { return Ok(None) };
    let who = As::User(token);
    match m.get("networks") {
        Some(Value::String(t)) if t == "none" => Ok(Some(Vec::new())),
        None | Some(Value::String(_)) => {
            let auto = m.get("networks").is_some();
            let nets = net.available_networks(who, project_id).await?;
            match nets.as_slice() {
                // "Get me a network": the network service makes the project one (or says why it cannot).
                [] if auto && mv >= v(37) => match net.auto_allocate(who, project_id).await? {
                    Some(id) => Ok(Some(vec![NetworkRequest { network_id: Some(id), ..Default::default() }])),
                    None => Err(ApiError::bad_request(format!(
                        "Unable to automatically allocate a network for project {project_id}"
                    ))),
                },
                [] => Ok(Some(Vec::new())),
                [one] => {
                    usable(one, admin)?;
                    Ok(Some(vec![network_request_of(one)]))
                }
                _ => Err(ambiguous()),
            }
        }
        Some(Value::Array(list)) => {
            let mut out = Vec::new();
            for item in list {
                let str_of = |k: &str| item.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
                let mut r = NetworkRequest { tag: str_of("tag"), ..Default::default() };
                if let Some(ip) = str_of("fixed_ip") {
                    if ip.parse::<std::net::IpAddr>().is_err() {
                        return Err(ApiError::bad_request(format!("Invalid fixed IP address ({ip})")));
                    }
                    if max_count > 1 {
                        return Err(ApiError::bad_request(
                            "max_count cannot be greater than 1 if an fixed_ip is specified.",
                        ));
                    }
                    r.fixed_ip = Some(ip);
                }
                if let Some(port_id) = str_of("port") {
                    if max_count > 1 {
                        return Err(ApiError::bad_request(
                            "Unable to launch multiple instances with a single configured port ID. Please launch your \
                             instance one by one with different ports.",
                        ));
                    }
                    let port = net
                        .show(who, "ports", &port_id)
                        .await?
                        .ok_or_else(|| ApiError::bad_request(format!("Port id {port_id} could not be found.")))?;
                    if port["device_id"].as_str().is_some_and(|d| !d.is_empty()) {
                        return Err(ApiError::conflict(format!("Port {port_id} is still in use.")));
                    }
                    if port["fixed_ips"].as_array().is_some_and(Vec::is_empty) {
                        return Err(ApiError::bad_request(format!(
                            "Port {port_id} requires a FixedIP in order to be used."
                        )));
                    }
                    r.network_id = port["network_id"].as_str().map(str::to_string);
                    r.port_id = Some(port_id);
                    r.fixed_ip = None;
                } else {
                    let Some(id) = str_of("uuid") else {
                        return Err(ApiError::bad_request(
                            "Bad networks format: network uuid is not in proper format ()",
                        ));
                    };
                    let network = net
                        .show(who, "networks", &id)
                        .await?
                        .ok_or_else(|| ApiError::bad_request(format!("Network {id} could not be found.")))?;
                    usable(&network, admin)?;
                    r.network_id = Some(id);
                }
                out.push(r);
            }
            Ok(Some(out))
        }
        Some(other) => Err(invalid("networks", other, &format!("{other} is not valid under any of the given schemas"))),
    }
}

/// Checks that the security groups named exist for the project (400 otherwise, as Nova).
pub(super) async fn check_security_groups(
    net: Option<&NetworkClient>,
    token: &str,
    project_id: &str,
    names: &[String],
) -> Result<(), ApiError> {
    if let Some(net) = net {
        // Every project has a `default` group (made on its first use).
        let named: Vec<String> = names.iter().filter(|g| g.as_str() != "default").cloned().collect();
        net.security_group_ids(As::User(token), project_id, &named).await?;
    }
    Ok(())
}

// ----- /servers/{id}/ips -----

async fn ips(State(s): State<AppState>, ctx: auth::Context, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let inst = super::servers::visible_server(&s, &ctx, &id, "os_compute_api:ips:index").await?;
    let vifs = s.compute.store().netinfo_get(&inst.uuid).await?.map(|i| i.vifs).unwrap_or_default();
    Ok(Json(json!({"addresses": crate::network::addresses(&vifs)})))
}

async fn ips_of_network(
    State(s): State<AppState>,
    ctx: auth::Context,
    Path((id, network)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let inst = super::servers::visible_server(&s, &ctx, &id, "os_compute_api:ips:show").await?;
    let vifs = s.compute.store().netinfo_get(&inst.uuid).await?.map(|i| i.vifs).unwrap_or_default();
    let all = crate::network::addresses(&vifs);
    match all.get(&network) {
        Some(list) => Ok(Json(json!({ network: list }))),
        None => Err(ApiError::not_found("Instance is not a member of specified network")),
    }
}
