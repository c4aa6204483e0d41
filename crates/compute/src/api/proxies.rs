//! Nova's proxies to the network service, with the caller's own token: `os-security-groups`,
//! `os-security-group-rules`, `os-floating-ips`, `os-floating-ip-pools`, `os-networks` and `os-tenant-networks`
//! (all removed at 2.36, as upstream), `/servers/{id}/os-security-groups`, and the server actions
//! `addSecurityGroup`/`removeSecurityGroup` and `addFloatingIp`/`removeFloatingIp` (the latter until 2.44).

use ::auth::Context;
use api_common::{ApiError, Microversion};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{AppState, body, member, v};
use crate::network::{As, NetworkClient, neutron_error};

pub(super) fn routes() -> Router<AppState> {
    let removed = Router::new()
        .route("/v2.1/os-security-groups", get(sg_list).post(sg_create))
        .route("/v2.1/os-security-groups/{id}", get(sg_show).put(sg_update).delete(sg_delete))
        .route("/v2.1/os-security-group-rules", post(rule_create))
        .route("/v2.1/os-security-group-rules/{id}", axum::routing::delete(rule_delete))
        .route("/v2.1/os-floating-ips", get(fip_list).post(fip_create))
        .route("/v2.1/os-floating-ips/{id}", get(fip_show).delete(fip_delete))
        .route("/v2.1/os-floating-ip-pools", get(pools))
        .route("/v2.1/os-networks", get(networks_list))
        .route("/v2.1/os-networks/{id}", get(network_show))
        .route("/v2.1/os-tenant-networks", get(tenant_networks_list))
        .route("/v2.1/os-tenant-networks/{id}", get(tenant_network_show));
    super::until(removed, v(36)).route("/v2.1/servers/{id}/os-security-groups", get(server_groups))
}

fn token(headers: &HeaderMap) -> &str {
    headers.get("x-auth-token").and_then(|t| t.to_str().ok()).unwrap_or_default()
}

/// The network service's client, or 404 where compute has none.
pub(super) fn network(s: &AppState) -> Result<&NetworkClient, ApiError> {
    net(s)
}

fn net(s: &AppState) -> Result<&NetworkClient, ApiError> {
    s.compute.network().ok_or_else(|| ApiError::not_found("The network service is not available to compute."))
}

fn project(ctx: &Context) -> String {
    ctx.project_id.clone().unwrap_or_default()
}

fn is_uuid(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok()
}

/// A failed call to the network service, passed on with the network service's message.
fn passed_on(status: StatusCode, body: &Value) -> ApiError {
    let (_, message) = neutron_error(body);
    let message = if message.is_empty() { format!("The network service answered {status}") } else { message };
    match status.as_u16() {
        404 => ApiError::not_found(message),
        409 => ApiError::conflict(message),
        403 => ApiError::forbidden(message),
        413 | 429 => ApiError::forbidden(message),
        _ => ApiError::bad_request(message),
    }
}

// ----- security groups -----

fn rule_view(r: &Value, groups: &[Value]) -> Value {
    let mut out = json!({
        "id": r["id"],
        "parent_group_id": r["security_group_id"],
        "ip_protocol": r["protocol"],
        "from_port": r["port_range_min"],
        "to_port": r["port_range_max"],
        "group": {},
        "ip_range": {},
    });
    if let Some(remote) = r["remote_group_id"].as_str() {
        let g = groups.iter().find(|g| g["id"] == json!(remote));
        out["group"] = json!({
            "name": g.and_then(|g| g["name"].as_str()).unwrap_or_default(),
            "tenant_id": g.and_then(|g| g["project_id"].as_str()).unwrap_or_default(),
        });
    } else {
        let cidr = match r["remote_ip_prefix"].as_str() {
            Some(c) => c.to_string(),
            None if r["ethertype"] == "IPv6" => "::/0".into(),
            None => "0.0.0.0/0".into(),
        };
        out["ip_range"] = json!({"cidr": cidr});
    }
    out
}

/// A security group in Nova's shape: its ingress rules only.
fn sg_view(g: &Value, groups: &[Value]) -> Value {
    let rules: Vec<Value> = g["security_group_rules"]
        .as_array()
        .map(|rs| rs.iter().filter(|r| r["direction"] == "ingress").map(|r| rule_view(r, groups)).collect())
        .unwrap_or_default();
    json!({
        "id": g["id"],
        "name": g["name"],
        "description": g["description"].as_str().unwrap_or_default(),
        "tenant_id": g["project_id"],
        "rules": rules,
    })
}

fn sg_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Security group {id} not found."))
}

/// `name` and `description` of a security group body: strings, not blank, at most 255 characters.
fn sg_fields(m: &Map<String, Value>, required: bool) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    for field in ["name", "description"] {
        match m.get(field) {
            None | Some(Value::Null) if required => {
                return Err(ApiError::bad_request(format!("Security group {field} is not a string or unicode")));
            }
            None | Some(Value::Null) => {}
            Some(Value::String(t)) => {
                if field == "name" && t.trim().is_empty() {
                    return Err(ApiError::bad_request("Security group name cannot be empty."));
                }
                if t.chars().count() > 255 {
                    return Err(ApiError::bad_request(format!(
                        "Security group {field} should not be greater than 255 characters."
                    )));
                }
                out.insert(field.into(), json!(t));
            }
            Some(_) => {
                return Err(ApiError::bad_request(format!("Security group {field} is not a string or unicode")));
            }
        }
    }
    Ok(out)
}

async fn all_groups(n: &NetworkClient, tok: &str, query: &[(&str, &str)]) -> Result<Vec<Value>, ApiError> {
    Ok(n.list(As::User(tok), "security-groups", query).await?)
}

async fn sg_list(
    State(s): State<AppState>,
    ctx: Context,
    headers: HeaderMap,
    q: api_common::QueryPairs,
) -> Result<Json<Value>, ApiError> {
    let n = net(&s)?;
    let all_tenants = q.get("all_tenants").is_some_and(|v| api_common::query::parse_bool(v).unwrap_or(true));
    let p = project(&ctx);
    let query: Vec<(&str, &str)> = if all_tenants && s.is_admin(&ctx) { Vec::new() } else { vec![("project_id", p.as_str())] };
    let groups = all_groups(n, token(&headers), &query).await?;
    let page = super::page(&q, 1000)?;
    let views: Vec<Value> = groups.iter().map(|g| sg_view(g, &groups)).collect();
    let (items, _) = page.apply(views, |g| g["id"].as_str().unwrap_or_default())?;
    Ok(Json(json!({"security_groups": items})))
}

async fn sg_show(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let n = net(&s)?;
    if !is_uuid(&id) {
        return Err(sg_not_found(&id));
    }
    let g = n.show(As::User(token(&headers)), "security-groups", &id).await?.ok_or_else(|| sg_not_found(&id))?;
    let groups = all_groups(n, token(&headers), &[]).await?;
    Ok(Json(json!({"security_group": sg_view(&g, &groups)})))
}

async fn sg_create(State(s): State<AppState>, headers: HeaderMap, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    let n = net(&s)?;
    let b = body(&bytes)?;
    let fields = sg_fields(member(&b, "security_group")?, true)?;
    let (status, v) =
        n.send(As::User(token(&headers)), Method::POST, "/security-groups", Some(&json!({"security_group": fields}))).await?;
    if !status.is_success() {
        return Err(passed_on(status, &v));
    }
    Ok(Json(json!({"security_group": sg_view(&v["security_group"], &[])})))
}

async fn sg_update(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let n = net(&s)?;
    let b = body(&bytes)?;
    let fields = sg_fields(member(&b, "security_group")?, false)?;
    if !is_uuid(&id) {
        return Err(sg_not_found(&id));
    }
    let path = format!("/security-groups/{id}");
    let (status, v) = n.send(As::User(token(&headers)), Method::PUT, &path, Some(&json!({"security_group": fields}))).await?;
    if status == StatusCode::NOT_FOUND {
        return Err(sg_not_found(&id));
    }
    if !status.is_success() {
        return Err(passed_on(status, &v));
    }
    let groups = all_groups(n, token(&headers), &[]).await?;
    Ok(Json(json!({"security_group": sg_view(&v["security_group"], &groups)})))
}

async fn sg_delete(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let n = net(&s)?;
    if !is_uuid(&id) {
        return Err(sg_not_found(&id));
    }
    let tok = token(&headers);
    let g = n.show(As::User(tok), "security-groups", &id).await?.ok_or_else(|| sg_not_found(&id))?;
    if g["name"] == "default" {
        return Err(ApiError::bad_request("Removing default security group not allowed."));
    }
    let (status, v) = n.send(As::User(tok), Method::DELETE, &format!("/security-groups/{id}"), None).await?;
    match status {
        s if s.is_success() => Ok(StatusCode::ACCEPTED),
        StatusCode::NOT_FOUND => Err(sg_not_found(&id)),
        StatusCode::CONFLICT => Err(ApiError::bad_request(format!("Security group {id} is in use: {}", neutron_error(&v).1))),
        s => Err(passed_on(s, &v)),
    }
}

fn port_of(v: &Value, field: &str) -> Result<Option<i64>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_i64().map(Some).ok_or_else(|| ApiError::bad_request(format!("Invalid {field} value"))),
        Value::String(t) if t.trim().is_empty() => Ok(None),
        Value::String(t) => t
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("{field} must be an integer: {t}"))),
        _ => Err(ApiError::bad_request(format!("{field} must be an integer"))),
    }
}

/// A Nova rule request as a Neutron ingress rule (Nova's `new_cidr_ingress_rule` / `new_group_ingress_rule`).
fn neutron_rule(m: &Map<String, Value>) -> Result<Value, ApiError> {
    let parent = m.get("parent_group_id").and_then(Value::as_str).unwrap_or_default().to_string();
    if !is_uuid(&parent) {
        return Err(ApiError::bad_request(format!("Security group id should be uuid: {parent}")));
    }
    let protocol = match m.get("ip_protocol") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if p.is_empty() => None,
        Some(Value::String(p)) => {
            let p = p.to_lowercase();
            if !["tcp", "udp", "icmp"].contains(&p.as_str()) && p.parse::<u8>().is_err() {
                return Err(ApiError::bad_request(format!("Invalid IP protocol {p}.")));
            }
            Some(p)
        }
        Some(other) => return Err(ApiError::bad_request(format!("Invalid IP protocol {other}."))),
    };
    let from = port_of(m.get("from_port").unwrap_or(&Value::Null), "from_port")?;
    let to = port_of(m.get("to_port").unwrap_or(&Value::Null), "to_port")?;
    let range_error = |why: &str| {
        ApiError::bad_request(format!(
            "Invalid port range {}:{}. {why}",
            from.map(|f| f.to_string()).unwrap_or_default(),
            to.map(|t| t.to_string()).unwrap_or_default()
        ))
    };
    let (min, max) = match protocol.as_deref() {
        Some("tcp") | Some("udp") => {
            let (Some(f), Some(t)) = (from, to) else {
                return Err(range_error("Valid TCP ports should be between 1-65535"));
            };
            if !(1..=65535).contains(&f) || !(1..=65535).contains(&t) {
                return Err(range_error("Valid TCP ports should be between 1-65535"));
            }
            if f > t {
                return Err(range_error("Former value cannot be greater than the later"));
            }
            (Some(f), Some(t))
        }
        Some("icmp") => {
            let (f, t) = (from.unwrap_or(-1), to.unwrap_or(-1));
            if !(-1..=255).contains(&f) || !(-1..=255).contains(&t) {
                return Err(range_error("For ICMP, the type:code must be valid"));
            }
            ((f != -1).then_some(f), (t != -1).then_some(t))
        }
        _ => (None, None),
    };
    let mut rule = json!({
        "security_group_id": parent,
        "direction": "ingress",
        "protocol": protocol,
        "port_range_min": min,
        "port_range_max": max,
        "ethertype": "IPv4",
    });
    match (m.get("group_id").and_then(Value::as_str).filter(|g| !g.is_empty()), m.get("cidr").and_then(Value::as_str)) {
        (Some(g), _) => {
            if !is_uuid(g) {
                return Err(ApiError::bad_request(format!("Security group id should be uuid: {g}")));
            }
            rule["remote_group_id"] = json!(g);
        }
        (None, Some(c)) if !c.is_empty() => {
            let net: Option<(std::net::IpAddr, u8)> =
                c.split_once('/').and_then(|(a, p)| Some((a.parse().ok()?, p.parse().ok()?)));
            let Some((addr, _)) = net else {
                return Err(ApiError::bad_request(format!("Invalid cidr {c}.")));
            };
            if addr.is_ipv6() {
                rule["ethertype"] = json!("IPv6");
            }
            if network_of(c).is_none() {
                return Err(ApiError::bad_request(format!("Invalid cidr {c}.")));
            }
            rule["remote_ip_prefix"] = json!(c);
        }
        _ => rule["remote_ip_prefix"] = json!("0.0.0.0/0"),
    }
    Ok(rule)
}

/// A CIDR with its host bits cleared (`10.2.3.124/24` → `10.2.3.0/24`); `None` if it is not a CIDR.
fn network_of(cidr: &str) -> Option<String> {
    let (a, p) = cidr.split_once('/')?;
    let prefix: u32 = p.parse().ok()?;
    match a.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(v4) if prefix <= 32 => {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
            Some(format!("{}/{prefix}", std::net::Ipv4Addr::from(u32::from(v4) & mask)))
        }
        std::net::IpAddr::V6(v6) if prefix <= 128 => {
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
            Some(format!("{}/{prefix}", std::net::Ipv6Addr::from(u128::from(v6) & mask)))
        }
        _ => None,
    }
}

async fn rule_create(State(s): State<AppState>, headers: HeaderMap, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    let n = net(&s)?;
    let b = body(&bytes)?;
    let rule = neutron_rule(member(&b, "security_group_rule")?)?;
    let tok = token(&headers);
    let parent = rule["security_group_id"].as_str().unwrap_or_default().to_string();
    if n.show(As::User(tok), "security-groups", &parent).await?.is_none() {
        return Err(sg_not_found(&parent));
    }
    let (status, v) =
        n.send(As::User(tok), Method::POST, "/security-group-rules", Some(&json!({"security_group_rule": rule}))).await?;
    match status {
        s if s.is_success() => {
            let groups = all_groups(n, tok, &[]).await?;
            let mut view = rule_view(&v["security_group_rule"], &groups);
            // The CIDR as asked for (the network service keeps it without host bits), as Nova answers.
            if let Some(c) = rule["remote_ip_prefix"].as_str() {
                view["ip_range"] = json!({"cidr": c});
            }
            Ok(Json(json!({"security_group_rule": view})))
        }
        StatusCode::CONFLICT => {
            Err(ApiError::bad_request(format!("Security group rule already exists. Group id is {parent}.")))
        }
        StatusCode::NOT_FOUND => Err(ApiError::not_found(neutron_error(&v).1)),
        s => Err(ApiError::bad_request(format!("{} ({s})", neutron_error(&v).1))),
    }
}

async fn rule_delete(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let n = net(&s)?;
    let not_found = || ApiError::not_found(format!("Security group rule {id} could not be found."));
    if !is_uuid(&id) {
        return Err(not_found());
    }
    let (status, v) = n.send(As::User(token(&headers)), Method::DELETE, &format!("/security-group-rules/{id}"), None).await?;
    match status {
        s if s.is_success() => Ok(StatusCode::ACCEPTED),
        StatusCode::NOT_FOUND => Err(not_found()),
        s => Err(passed_on(s, &v)),
    }
}

/// `GET /servers/{id}/os-security-groups`: the groups of the server's ports.
async fn server_groups(
    State(s): State<AppState>,
    ctx: Context,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let inst = super::servers::visible_server(&s, &ctx, &id, "os_compute_api:os-security-groups:list").await?;
    let n = net(&s)?;
    let ports = n.list(As::Service, "ports", &[("device_id", inst.uuid.as_str())]).await?;
    let mut ids: Vec<String> = Vec::new();
    for p in &ports {
        for g in p["security_groups"].as_array().into_iter().flatten() {
            if let Some(g) = g.as_str()
                && !ids.iter().any(|x| x == g)
            {
                ids.push(g.to_string());
            }
        }
    }
    let groups = all_groups(n, token(&headers), &[]).await?;
    let out: Vec<Value> =
        ids.iter().filter_map(|i| groups.iter().find(|g| g["id"] == json!(i))).map(|g| sg_view(g, &groups)).collect();
    Ok(Json(json!({"security_groups": out})))
}

/// `addSecurityGroup` / `removeSecurityGroup`: every port of the server gains or loses the group.
pub(super) async fn server_security_group(
    s: &AppState,
    ctx: &Context,
    headers: &HeaderMap,
    inst: &crate::store::InstanceRow,
    args: &Value,
    add: bool,
) -> Result<StatusCode, ApiError> {
    let n = net(s)?;
    let action = if add { "addSecurityGroup" } else { "removeSecurityGroup" };
    let name = match args.get("name") {
        Some(Value::String(t)) if !t.trim().is_empty() => t.clone(),
        _ => return Err(ApiError::bad_request(format!("Missing parameter name in {action}"))),
    };
    let tok = token(headers);
    let p = project(ctx);
    let groups = n.list(As::User(tok), "security-groups", &[("project_id", p.as_str())]).await?;
    let group = groups
        .iter()
        .find(|g| g["id"] == json!(name))
        .or_else(|| groups.iter().find(|g| g["name"] == json!(name)))
        .ok_or_else(|| ApiError::not_found(format!("Security group {name} not found for project {p}.")))?;
    let gid = group["id"].as_str().unwrap_or_default().to_string();
    let ports = n.list(As::Service, "ports", &[("device_id", inst.uuid.as_str())]).await?;
    if ports.is_empty() {
        return Err(ApiError::bad_request(format!("Instance {} has no network ports to apply security groups to.", inst.uuid)));
    }
    let mut touched = false;
    for port in &ports {
        let mut current: Vec<String> = port["security_groups"]
            .as_array()
            .map(|a| a.iter().filter_map(|g| g.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let has = current.contains(&gid);
        if add && has {
            continue;
        }
        if !add && !has {
            continue;
        }
        if add {
            if port["port_security_enabled"] == json!(false) {
                return Err(ApiError::bad_request("Port security must be enabled and port must have an IP address in order to use security groups."));
            }
            current.push(gid.clone());
        } else {
            current.retain(|g| g != &gid);
        }
        let pid = port["id"].as_str().unwrap_or_default();
        let (status, v) = n
            .send(As::Service, Method::PUT, &format!("/ports/{pid}"), Some(&json!({"port": {"security_groups": current}})))
            .await?;
        if !status.is_success() {
            return Err(passed_on(status, &v));
        }
        touched = true;
    }
    if !add && !touched {
        return Err(ApiError::bad_request(format!(
            "Security group {name} not associated with the instance {}",
            inst.uuid
        )));
    }
    // The names the server shows follow its ports.
    let mut names: Vec<String> = Vec::new();
    for port in n.list(As::Service, "ports", &[("device_id", inst.uuid.as_str())]).await? {
        for g in port["security_groups"].as_array().into_iter().flatten() {
            let name = groups
                .iter()
                .find(|x| x["id"] == *g)
                .and_then(|x| x["name"].as_str())
                .or_else(|| g.as_str())
                .unwrap_or_default()
                .to_string();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    s.compute.store().netinfo_set_groups(&inst.uuid, &names).await?;
    Ok(StatusCode::ACCEPTED)
}

// ----- floating IPs -----

async fn external_networks(n: &NetworkClient, tok: &str) -> Result<Vec<Value>, ApiError> {
    Ok(n.list(As::User(tok), "networks", &[("router:external", "true")]).await?)
}

fn fip_view(f: &Value, pools: &[Value], ports: &[Value]) -> Value {
    let pool = pools.iter().find(|p| p["id"] == f["floating_network_id"]).map(|p| p["name"].clone()).unwrap_or(Value::Null);
    let instance = f["port_id"]
        .as_str()
        .and_then(|pid| ports.iter().find(|p| p["id"] == json!(pid)))
        .and_then(|p| p["device_id"].as_str())
        .filter(|d| !d.is_empty())
        .map(|d| json!(d))
        .unwrap_or(Value::Null);
    json!({
        "id": f["id"],
        "ip": f["floating_ip_address"],
        "pool": pool,
        "fixed_ip": f["fixed_ip_address"],
        "instance_id": instance,
    })
}

async fn fip_context(n: &NetworkClient, tok: &str, fips: &[Value]) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let pools = external_networks(n, tok).await?;
    let mut ports = Vec::new();
    for f in fips {
        if let Some(pid) = f["port_id"].as_str()
            && let Some(p) = n.show(As::User(tok), "ports", pid).await?
        {
            ports.push(p);
        }
    }
    Ok((pools, ports))
}

async fn fip_list(State(s): State<AppState>, ctx: Context, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let n = net(&s)?;
    let tok = token(&headers);
    let p = project(&ctx);
    let fips = n.list(As::User(tok), "floatingips", &[("project_id", p.as_str())]).await?;
    let (pools, ports) = fip_context(n, tok, &fips).await?;
    Ok(Json(json!({"floating_ips": fips.iter().map(|f| fip_view(f, &pools, &ports)).collect::<Vec<_>>()})))
}

fn fip_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Floating IP {id} could not be found."))
}

async fn fip_show(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let n = net(&s)?;
    let tok = token(&headers);
    let f = n.show(As::User(tok), "floatingips", &id).await?.ok_or_else(|| fip_not_found(&id))?;
    let (pools, ports) = fip_context(n, tok, std::slice::from_ref(&f)).await?;
    Ok(Json(json!({"floating_ip": fip_view(&f, &pools, &ports)})))
}

async fn fip_create(State(s): State<AppState>, ctx: Context, headers: HeaderMap, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    let n = net(&s)?;
    let tok = token(&headers);
    let b = if bytes.is_empty() { json!({}) } else { body(&bytes)? };
    let pools = external_networks(n, tok).await?;
    let pool = match b.get("pool").and_then(Value::as_str) {
        Some(name) => pools.iter().find(|p| p["id"] == json!(name)).or_else(|| pools.iter().find(|p| p["name"] == json!(name))),
        None => pools.iter().find(|p| p["name"] == "public").or(pools.first()),
    }
    .ok_or_else(|| ApiError::not_found("Floating IP pool not found."))?;
    let body = json!({"floatingip": {"floating_network_id": pool["id"], "project_id": project(&ctx)}});
    let (status, v) = n.send(As::User(tok), Method::POST, "/floatingips", Some(&body)).await?;
    match status {
        s if s.is_success() => Ok(Json(json!({"floating_ip": fip_view(&v["floatingip"], &pools, &[])}))),
        StatusCode::CONFLICT => Err(ApiError::not_found(format!("No more floating IPs in pool {}.", pool["name"].as_str().unwrap_or_default()))),
        s => Err(passed_on(s, &v)),
    }
}

async fn fip_delete(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let n = net(&s)?;
    let tok = token(&headers);
    if n.show(As::User(tok), "floatingips", &id).await?.is_none() {
        return Err(fip_not_found(&id));
    }
    let (status, v) = n.send(As::User(tok), Method::DELETE, &format!("/floatingips/{id}"), None).await?;
    match status {
        s if s.is_success() => Ok(StatusCode::ACCEPTED),
        StatusCode::NOT_FOUND => Err(fip_not_found(&id)),
        s => Err(passed_on(s, &v)),
    }
}

async fn pools(State(s): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let n = net(&s)?;
    let pools = external_networks(n, token(&headers)).await?;
    Ok(Json(json!({"floating_ip_pools": pools.iter().map(|p| json!({"name": p["name"]})).collect::<Vec<_>>()})))
}

/// The floating IP with `address`, as the caller sees it.
async fn fip_by_address(n: &NetworkClient, tok: &str, address: &str) -> Result<Value, ApiError> {
    n.list(As::User(tok), "floatingips", &[("floating_ip_address", address)])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found(format!("Floating IP not found for address {address}.")))
}

/// `addFloatingIp` (until 2.44): associates the floating IP with the server's port that has `fixed_address`
/// (the first port with an IPv4 address otherwise).
pub(super) async fn add_floating_ip(
    s: &AppState,
    headers: &HeaderMap,
    inst: &crate::store::InstanceRow,
    args: &Value,
) -> Result<StatusCode, ApiError> {
    let n = net(s)?;
    let tok = token(headers);
    let address = match args.get("address") {
        Some(Value::String(a)) if !a.is_empty() => a.clone(),
        _ => return Err(ApiError::bad_request("Invalid input for field/attribute address. Value: None. 'address' is a required property")),
    };
    let fixed = args.get("fixed_address").and_then(Value::as_str).map(str::to_string);
    let fip = fip_by_address(n, tok, &address).await?;
    let ports = n.list(As::Service, "ports", &[("device_id", inst.uuid.as_str())]).await?;
    let ip_of = |p: &Value| -> Vec<String> {
        p["fixed_ips"].as_array().into_iter().flatten().filter_map(|f| f["ip_address"].as_str().map(str::to_string)).collect()
    };
    let (port, ip) = match &fixed {
        Some(a) => ports
            .iter()
            .find(|p| ip_of(p).contains(a))
            .map(|p| (p.clone(), a.clone()))
            .ok_or_else(|| ApiError::bad_request(format!("Specified fixed address '{a}' not found.")))?,
        None => ports
            .iter()
            .find_map(|p| ip_of(p).into_iter().find(|a| !a.contains(':')).map(|a| (p.clone(), a)))
            .ok_or_else(|| ApiError::bad_request("No nw_info cache associated with instance"))?,
    };
    let fid = fip["id"].as_str().unwrap_or_default();
    let body = json!({"floatingip": {"port_id": port["id"], "fixed_ip_address": ip}});
    let (status, v) = n.send(As::User(tok), Method::PUT, &format!("/floatingips/{fid}"), Some(&body)).await?;
    if !status.is_success() {
        return Err(match status {
            StatusCode::NOT_FOUND => ApiError::not_found(neutron_error(&v).1),
            _ => ApiError::bad_request(format!("Unable to associate floating IP {address} to fixed IP {ip} for instance {}. Error: {}", inst.uuid, neutron_error(&v).1)),
        });
    }
    refresh_cache(s, inst).await;
    Ok(StatusCode::ACCEPTED)
}

/// `removeFloatingIp` (until 2.44).
pub(super) async fn remove_floating_ip(
    s: &AppState,
    headers: &HeaderMap,
    inst: &crate::store::InstanceRow,
    args: &Value,
) -> Result<StatusCode, ApiError> {
    let n = net(s)?;
    let tok = token(headers);
    let address = match args.get("address") {
        Some(Value::String(a)) if !a.is_empty() => a.clone(),
        _ => return Err(ApiError::bad_request("Invalid input for field/attribute address. Value: None. 'address' is a required property")),
    };
    let fip = fip_by_address(n, tok, &address).await?;
    let attached_here = match fip["port_id"].as_str() {
        Some(pid) => n.show(As::Service, "ports", pid).await?.is_some_and(|p| p["device_id"] == json!(inst.uuid)),
        None => false,
    };
    if !attached_here {
        return Err(ApiError::conflict(format!(
            "Floating IP {address} is not associated with instance {}.",
            inst.uuid
        )));
    }
    let fid = fip["id"].as_str().unwrap_or_default();
    let (status, v) =
        n.send(As::User(tok), Method::PUT, &format!("/floatingips/{fid}"), Some(&json!({"floatingip": {"port_id": null}}))).await?;
    if !status.is_success() {
        return Err(passed_on(status, &v));
    }
    refresh_cache(s, inst).await;
    Ok(StatusCode::ACCEPTED)
}

/// Re-reads an instance's interfaces into its info cache (after a change made through compute).
pub(super) async fn refresh_cache(s: &AppState, inst: &crate::store::InstanceRow) {
    let Some(n) = s.compute.network() else { return };
    let known = s.compute.store().netinfo_get(&inst.uuid).await.ok().flatten().map(|i| i.vifs).unwrap_or_default();
    match n.refresh(&inst.uuid, &known).await {
        Ok(vifs) => {
            if let Err(e) = s.compute.store().netinfo_set_vifs(&inst.uuid, &vifs).await {
                tracing::warn!(instance = %inst.uuid, error = %e, "cannot save the network info cache");
            }
        }
        Err(e) => tracing::warn!(instance = %inst.uuid, error = %e, "cannot refresh the network info cache"),
    }
}

// ----- networks -----

fn network_view(n: &Value, subnets: &[Value], admin: bool) -> Value {
    let cidr = n["subnets"]
        .as_array()
        .and_then(|ids| ids.first())
        .and_then(|id| subnets.iter().find(|s| s["id"] == *id))
        .map(|s| s["cidr"].clone())
        .unwrap_or(Value::Null);
    if !admin {
        return json!({"id": n["id"], "label": n["name"], "cidr": cidr});
    }
    let mut out = json!({"id": n["id"], "label": n["name"], "cidr": cidr});
    for k in [
        "bridge", "bridge_interface", "broadcast", "cidr_v6", "created_at", "deleted", "deleted_at", "dhcp_server",
        "dhcp_start", "dns1", "dns2", "enable_dhcp", "gateway", "gateway_v6", "host", "injected", "mtu", "multi_host",
        "netmask", "netmask_v6", "priority", "project_id", "rxtx_base", "share_address", "updated_at", "vlan",
        "vpn_private_address", "vpn_public_address", "vpn_public_port",
    ] {
        out[k] = Value::Null;
    }
    out["mtu"] = n["mtu"].clone();
    out["project_id"] = n["project_id"].clone();
    out
}

async fn networks_of(s: &AppState, ctx: &Context, headers: &HeaderMap, admin_view: bool) -> Result<Vec<Value>, ApiError> {
    let n = net(s)?;
    let tok = token(headers);
    let nets = if admin_view {
        n.list(As::User(tok), "networks", &[]).await?
    } else {
        n.available_networks(As::User(tok), &project(ctx)).await?
    };
    let subnets = n.list(As::User(tok), "subnets", &[]).await?;
    Ok(nets.iter().map(|x| network_view(x, &subnets, admin_view)).collect())
}

async fn networks_list(State(s): State<AppState>, ctx: Context, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-networks:list")?;
    Ok(Json(json!({"networks": networks_of(&s, &ctx, &headers, true).await?})))
}

async fn network_show(
    State(s): State<AppState>,
    ctx: Context,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-networks:show")?;
    let all = networks_of(&s, &ctx, &headers, true).await?;
    let found = all.into_iter().find(|n| n["id"] == json!(id)).ok_or_else(|| ApiError::not_found(format!("Network {id} could not be found.")))?;
    Ok(Json(json!({"network": found})))
}

async fn tenant_networks_list(State(s): State<AppState>, ctx: Context, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-tenant-networks:list")?;
    Ok(Json(json!({"networks": networks_of(&s, &ctx, &headers, false).await?})))
}

async fn tenant_network_show(
    State(s): State<AppState>,
    ctx: Context,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.enforce(&ctx, "os_compute_api:os-tenant-networks:show")?;
    let n = net(&s)?;
    let tok = token(&headers);
    let found = n.show(As::User(tok), "networks", &id).await?.ok_or_else(|| ApiError::not_found(format!("Network {id} could not be found.")))?;
    let subnets = n.list(As::User(tok), "subnets", &[("network_id", id.as_str())]).await?;
    Ok(Json(json!({"network": network_view(&found, &subnets, false)})))
}

/// Whether the server actions on floating IPs exist at `mv` (removed at 2.44).
pub(super) fn floating_ip_actions(mv: Microversion) -> bool {
    mv < v(44)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cidrs_lose_their_host_bits() {
        assert_eq!(super::network_of("10.2.3.124/24").as_deref(), Some("10.2.3.0/24"));
        assert_eq!(super::network_of("0.0.0.0/0").as_deref(), Some("0.0.0.0/0"));
        assert_eq!(super::network_of("2001:db8::5/64").as_deref(), Some("2001:db8::/64"));
        assert_eq!(super::network_of("10.0.0.1/33"), None);
    }
}
