//! Routers (external gateways with SNAT and fixed IPs, interfaces by subnet or port with upstream's conflict
//! checks, static routes) and floating IPs (allocation from external networks, association with a port's fixed
//! IP through a router that has a gateway on that network).

use serde_json::{Value, json};

use super::ports::{IpRequest, parse_fixed_ips};
use super::subnets::subnet_cidr;
use super::{Caller, FLOATINGIP, NETWORK, Network, PORT, ROUTER, SUBNET, bump, known_attrs, new_id, opt_bool, owner_of, standard, str_of, string_attr};
use crate::{
    agent::RouterState,
    error::{Error, Result},
    ipam::{Addr, Cidr},
};

const ROUTER_ATTRS: &[&str] = &[
    "name",
    "admin_state_up",
    "external_gateway_info",
    "routes",
    "description",
    "project_id",
    "tenant_id",
    "distributed",
    "ha",
    "availability_zone_hints",
    "flavor_id",
    "tags",
    "enable_ndp_proxy",
];
const FIP_ATTRS: &[&str] = &[
    "floating_network_id",
    "floating_ip_address",
    "subnet_id",
    "port_id",
    "fixed_ip_address",
    "description",
    "project_id",
    "tenant_id",
    "dns_name",
    "dns_domain",
    "qos_policy_id",
    "tags",
];

fn router_not_found(id: &str) -> Error {
    Error::not_found("RouterNotFound", format!("Router {id} could not be found"))
}

impl Network {
    /// Validates `external_gateway_info` and creates the gateway port; `Value::Null` when it removes the gateway.
    async fn set_gateway(&self, caller: &Caller<'_>, router: &mut Value, info: &Value, creating: bool) -> Result<()> {
        let rid = str_of(router, "id").to_string();
        let owner = str_of(router, "project_id").to_string();
        let action = if creating { "create_router" } else { "update_router" };
        let current = router["external_gateway_info"].clone();
        let wants_none = info.is_null() || info.as_object().is_some_and(|o| o.is_empty() || o.get("network_id").is_none_or(Value::is_null));
        if wants_none {
            if !current.is_null() {
                self.check_gateway_unused(&rid).await?;
                self.remove_gateway_port(caller, &rid).await?;
            }
            router["external_gateway_info"] = Value::Null;
            return Ok(());
        }
        let Some(obj) = info.as_object() else { return Err(Error::invalid(format!("Invalid data format for external_gateway_info: '{info}'"))) };
        for k in obj.keys() {
            if !["network_id", "enable_snat", "external_fixed_ips", "qos_policy_id"].contains(&k.as_str()) {
                return Err(Error::invalid(format!("Unexpected key {k} in external_gateway_info")));
            }
        }
        let net_id = obj.get("network_id").and_then(Value::as_str).unwrap_or("").to_string();
        let net = self.store.resource_get("network", &net_id).await?;
        let net = match net {
            Some(n) if self.visible(caller, NETWORK, &n).await? => n,
            _ => return Err(Error::not_found("NetworkNotFound", format!("Network {net_id} could not be found."))),
        };
        if net["router:external"].as_bool() != Some(true) {
            return Err(Error::bad("BadRequest", format!("Bad router request: Network {net_id} is not an external network.")));
        }
        if obj.contains_key("enable_snat") {
            caller.enforce(&format!("{action}:external_gateway_info:enable_snat"), &owner)?;
        }
        let enable_snat = opt_bool(info, "enable_snat")?.unwrap_or(current["enable_snat"].as_bool().unwrap_or(true));
        let requests = match obj.get("external_fixed_ips") {
            Some(v) if !v.is_null() => {
                caller.enforce(&format!("{action}:external_gateway_info:external_fixed_ips"), &owner)?;
                Some(parse_fixed_ips(v)?)
            }
            _ => None,
        };
        let same_net = current["network_id"].as_str() == Some(net_id.as_str());
        let fixed = if same_net && requests.is_none() {
            current["external_fixed_ips"].clone()
        } else {
            if !current.is_null() {
                if !same_net {
                    self.check_gateway_unused(&rid).await?;
                }
                self.remove_gateway_port(caller, &rid).await?;
            }
            // the gateway must not share a subnet's address space with the router's interfaces
            let port = self.create_internal_port(&net_id, "", "network:router_gateway", &rid, requests.as_deref()).await?;
            port["fixed_ips"].clone()
        };
        router["external_gateway_info"] = json!({"network_id": net_id, "enable_snat": enable_snat, "external_fixed_ips": fixed});
        Ok(())
    }

    async fn remove_gateway_port(&self, caller: &Caller<'_>, router_id: &str) -> Result<()> {
        for p in self.store.resource_list("port").await? {
            if str_of(&p, "device_id") == router_id && str_of(&p, "device_owner") == "network:router_gateway" {
                self.delete_port(caller, p, true).await?;
            }
        }
        Ok(())
    }

    async fn check_gateway_unused(&self, router_id: &str) -> Result<()> {
        for f in self.store.resource_list("floatingip").await? {
            if str_of(&f, "router_id") == router_id {
                return Err(Error::conflict(
                    "RouterExternalGatewayInUseByFloatingIp",
                    format!(
                        "Gateway cannot be updated for router {router_id}, since a gateway to external network {} is required by one or more floating IPs.",
                        str_of(&f, "floating_network_id")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The router's interface ports.
    async fn router_interfaces(&self, router_id: &str) -> Result<Vec<Value>> {
        Ok(self
            .store
            .resource_list("port")
            .await?
            .into_iter()
            .filter(|p| str_of(p, "device_id") == router_id && str_of(p, "device_owner") == "network:router_interface")
            .collect())
    }

    async fn notify_router(&self, router: &Value) -> Result<()> {
        let rid = str_of(router, "id");
        self.notify_router_agents(rid).await;
        let interfaces = self.router_interfaces(rid).await?;
        let fips = self.store.resource_list("floatingip").await?;
        self.driver.router_updated(&RouterState {
            router_id: rid.to_string(),
            interfaces: interfaces.iter().flat_map(|p| p["fixed_ips"].as_array().cloned().unwrap_or_default()).map(|i| str_of(&i, "ip_address").to_string()).collect(),
            gateway_ips: router["external_gateway_info"]["external_fixed_ips"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| str_of(i, "ip_address").to_string())
                .collect(),
            enable_snat: router["external_gateway_info"]["enable_snat"].as_bool().unwrap_or(false),
            floating_ips: fips
                .iter()
                .filter(|f| str_of(f, "router_id") == rid)
                .map(|f| (str_of(f, "floating_ip_address").to_string(), str_of(f, "fixed_ip_address").to_string()))
                .collect(),
        });
        Ok(())
    }

    pub(crate) async fn create_router(&self, caller: &Caller<'_>, body: &Value) -> Result<Value> {
        known_attrs(body, ROUTER_ATTRS)?;
        let owner = owner_of(caller, body)?;
        caller.enforce("create_router", &owner)?;
        for admin_only in ["distributed", "ha"] {
            if opt_bool(body, admin_only)? == Some(true) {
                caller.enforce(&format!("create_router:{admin_only}"), &owner)?;
            }
        }
        self.check_quota(&owner, "router").await?;
        let id = new_id();
        let mut doc = standard(&id, &owner, &string_attr(body, "description", 255)?.unwrap_or_default());
        doc.insert("name".into(), json!(string_attr(body, "name", 255)?.unwrap_or_default()));
        doc.insert("admin_state_up".into(), json!(opt_bool(body, "admin_state_up")?.unwrap_or(true)));
        doc.insert("status".into(), json!("ACTIVE"));
        doc.insert("external_gateway_info".into(), Value::Null);
        doc.insert("routes".into(), json!([]));
        doc.insert("distributed".into(), json!(false));
        doc.insert("ha".into(), json!(false));
        doc.insert("availability_zone_hints".into(), json!([]));
        doc.insert("availability_zones".into(), json!(["nova"]));
        doc.insert("flavor_id".into(), Value::Null);
        doc.insert("tags".into(), json!([]));
        let mut doc = Value::Object(doc);
        if let Some(info) = body.get("external_gateway_info")
            && !info.is_null()
        {
            self.set_gateway(caller, &mut doc, info, true).await?;
        }
        if let Err(e) = self.insert(ROUTER, &doc, "").await {
            self.remove_gateway_port(caller, &id).await?;
            return Err(e);
        }
        self.notify_router(&doc).await?;
        Ok(doc)
    }

    pub(crate) async fn update_router(&self, caller: &Caller<'_>, mut doc: Value, body: &Value) -> Result<Value> {
        known_attrs(body, ROUTER_ATTRS)?;
        if let Some(v) = string_attr(body, "name", 255)? {
            doc["name"] = json!(v);
        }
        if let Some(v) = string_attr(body, "description", 255)? {
            doc["description"] = json!(v);
        }
        if let Some(v) = opt_bool(body, "admin_state_up")? {
            doc["admin_state_up"] = json!(v);
        }
        if let Some(info) = body.get("external_gateway_info") {
            self.set_gateway(caller, &mut doc, info, false).await?;
        }
        if let Some(routes) = body.get("routes") {
            doc["routes"] = self.validate_routes(&doc, routes).await?;
        }
        bump(&mut doc);
        self.save(ROUTER, &doc).await?;
        self.notify_router(&doc).await?;
        Ok(doc)
    }

    async fn validate_routes(&self, router: &Value, routes: &Value) -> Result<Value> {
        if routes.is_null() {
            return Ok(json!([]));
        }
        let Some(list) = routes.as_array() else { return Err(Error::invalid(format!("Invalid data format for hostroute: '{routes}'"))) };
        let rid = str_of(router, "id");
        let mut cidrs: Vec<Cidr> = Vec::new();
        for p in self.router_interfaces(rid).await? {
            for ip in p["fixed_ips"].as_array().into_iter().flatten() {
                if let Some(s) = self.store.resource_get("subnet", str_of(ip, "subnet_id")).await?
                    && let Some(c) = subnet_cidr(&s)
                {
                    cidrs.push(c);
                }
            }
        }
        let mut out: Vec<Value> = Vec::new();
        for r in list {
            let (Some(d), Some(n)) = (r.get("destination").and_then(Value::as_str), r.get("nexthop").and_then(Value::as_str)) else {
                return Err(Error::invalid(format!("Invalid data format for hostroute: '{r}'")));
            };
            let (Some(dc), Some(na)) = (Cidr::parse(d), Addr::parse(n)) else {
                return Err(Error::invalid(format!("Invalid data format for hostroute: '{r}'")));
            };
            if !cidrs.iter().any(|c| c.contains(na)) {
                return Err(Error::bad(
                    "InvalidRoutes",
                    format!("Invalid format for routes: {routes}, the nexthop {n} is not connected with router"),
                ));
            }
            let route = json!({"destination": dc.normalized().to_string(), "nexthop": na.to_string()});
            if !out.contains(&route) {
                out.push(route);
            }
        }
        Ok(json!(out))
    }

    pub(crate) async fn delete_router(&self, caller: &Caller<'_>, doc: Value) -> Result<()> {
        let id = str_of(&doc, "id").to_string();
        if !self.router_interfaces(&id).await?.is_empty() {
            return Err(Error::conflict("RouterInUse", format!("Router {id} still has ports")));
        }
        self.check_gateway_unused(&id).await?;
        self.remove_gateway_port(caller, &id).await?;
        self.store.resource_delete("router", &id).await?;
        self.driver.router_deleted(&id);
        self.notify_router_agents(&id).await;
        Ok(())
    }

    /// A router the caller sees (else 404) and may change with `rule`.
    async fn interface_target(&self, caller: &Caller<'_>, router_id: &str, rule: &str) -> Result<Value> {
        let router = self.fetch(ROUTER, router_id).await.map_err(|_| router_not_found(router_id))?;
        if !self.visible(caller, ROUTER, &router).await? {
            return Err(router_not_found(router_id));
        }
        caller.enforce(rule, str_of(&router, "project_id"))?;
        Ok(router)
    }

    /// `PUT /routers/{id}/add_router_interface`.
    pub async fn add_router_interface(&self, caller: &Caller<'_>, router_id: &str, body: &Value) -> Result<Value> {
        let router = self.interface_target(caller, router_id, "add_router_interface").await?;
        let owner = str_of(&router, "project_id").to_string();
        let subnet_id = body.get("subnet_id").and_then(Value::as_str);
        let port_id = body.get("port_id").and_then(Value::as_str);
        let existing = self.router_interfaces(router_id).await?;
        let mut attached: Vec<(String, Cidr)> = Vec::new();
        for p in &existing {
            for ip in p["fixed_ips"].as_array().into_iter().flatten() {
                if let Some(s) = self.store.resource_get("subnet", str_of(ip, "subnet_id")).await?
                    && let Some(c) = subnet_cidr(&s)
                {
                    attached.push((str_of(&s, "id").to_string(), c));
                }
            }
        }
        let check_overlap = |sid: &str, c: &Cidr| -> Result<()> {
            for (other, oc) in &attached {
                if other == sid {
                    return Err(Error::bad("BadRequest", format!("Bad router request: Router already has a port on subnet {sid}.")));
                }
                if oc.overlaps(c) {
                    return Err(Error::bad(
                        "BadRequest",
                        format!("Bad router request: Cidr {} of subnet {sid} overlaps with cidr {} of subnet {other}.", c.normalized(), oc.normalized()),
                    ));
                }
            }
            Ok(())
        };
        let port = match (subnet_id, port_id) {
            (Some(_), Some(_)) => return Err(Error::bad("BadRequest", "Bad router request: Cannot specify both subnet-id and port-id.")),
            (None, None) => return Err(Error::bad("BadRequest", "Bad router request: Either subnet_id or port_id must be specified.")),
            (Some(sid), None) => {
                let subnet = self.fetch(SUBNET, sid).await?;
                if !self.visible(caller, SUBNET, &subnet).await? {
                    return Err(Error::not_found("SubnetNotFound", format!("Subnet {sid} could not be found.")));
                }
                let Some(gw) = subnet["gateway_ip"].as_str().map(str::to_string) else {
                    return Err(Error::bad("BadRequest", format!("Bad router request: Subnet {sid} does not have a gateway IP.")));
                };
                let cidr = subnet_cidr(&subnet).ok_or_else(|| Error::invalid("subnet without CIDR"))?;
                check_overlap(sid, &cidr)?;
                let net_id = str_of(&subnet, "network_id").to_string();
                let req = [IpRequest { subnet_id: Some(sid.to_string()), ip_address: Some(gw) }];
                self.create_internal_port(&net_id, &owner, "network:router_interface", router_id, Some(&req)).await?
            }
            (None, Some(pid)) => {
                let mut port = self.fetch(PORT, pid).await?;
                if !self.visible(caller, PORT, &port).await? {
                    return Err(Error::not_found("PortNotFound", format!("Port {pid} could not be found.")));
                }
                if !str_of(&port, "device_id").is_empty() || !str_of(&port, "device_owner").is_empty() {
                    return Err(Error::conflict(
                        "PortInUse",
                        format!(
                            "Unable to complete operation on port {pid} for network {}. Port already has an attached device {}.",
                            str_of(&port, "network_id"),
                            str_of(&port, "device_id")
                        ),
                    ));
                }
                let ips = port["fixed_ips"].as_array().cloned().unwrap_or_default();
                if ips.is_empty() {
                    return Err(Error::bad("BadRequest", "Bad router request: Router port must have at least one fixed IP."));
                }
                for ip in &ips {
                    let sid = str_of(ip, "subnet_id");
                    if let Some(s) = self.store.resource_get("subnet", sid).await?
                        && let Some(c) = subnet_cidr(&s)
                    {
                        check_overlap(sid, &c)?;
                    }
                }
                port["device_id"] = json!(router_id);
                port["device_owner"] = json!("network:router_interface");
                port["status"] = json!("ACTIVE");
                bump(&mut port);
                self.save(PORT, &port).await?;
                port
            }
        };
        let mut router = router;
        bump(&mut router);
        self.save(ROUTER, &router).await?;
        self.notify_router(&router).await?;
        let subnet_ids: Vec<String> = port["fixed_ips"].as_array().into_iter().flatten().map(|i| str_of(i, "subnet_id").to_string()).collect();
        Ok(json!({
            "id": router_id,
            "tenant_id": owner,
            "project_id": owner,
            "port_id": str_of(&port, "id"),
            "network_id": str_of(&port, "network_id"),
            "subnet_id": subnet_ids.first(),
            "subnet_ids": subnet_ids,
        }))
    }

    /// `PUT /routers/{id}/remove_router_interface`.
    pub async fn remove_router_interface(&self, caller: &Caller<'_>, router_id: &str, body: &Value) -> Result<Value> {
        let router = self.interface_target(caller, router_id, "remove_router_interface").await?;
        let owner = str_of(&router, "project_id").to_string();
        let subnet_id = body.get("subnet_id").and_then(Value::as_str);
        let port_id = body.get("port_id").and_then(Value::as_str);
        let interfaces = self.router_interfaces(router_id).await?;
        let port = match (subnet_id, port_id) {
            (None, None) => return Err(Error::bad("BadRequest", "Bad router request: Either subnet_id or port_id must be specified.")),
            (_, Some(pid)) => {
                let p = interfaces.into_iter().find(|p| str_of(p, "id") == pid).ok_or_else(|| {
                    Error::not_found("RouterInterfaceNotFound", format!("Router {router_id} does not have an interface with id {pid}"))
                })?;
                if let Some(sid) = subnet_id
                    && !p["fixed_ips"].as_array().into_iter().flatten().any(|i| str_of(i, "subnet_id") == sid)
                {
                    return Err(Error::conflict("SubnetMismatchForPort", format!("Subnet on port {pid} does not match the requested subnet {sid}.")));
                }
                p
            }
            (Some(sid), None) => {
                self.fetch(SUBNET, sid).await?;
                interfaces
                    .into_iter()
                    .find(|p| p["fixed_ips"].as_array().into_iter().flatten().any(|i| str_of(i, "subnet_id") == sid))
                    .ok_or_else(|| {
                        Error::not_found(
                            "RouterInterfaceNotFoundForSubnet",
                            format!("Router {router_id} has no interface on subnet {sid}"),
                        )
                    })?
            }
        };
        // routes through this interface, and floating IPs reaching ports behind it, keep it in use
        let subnets: Vec<String> = port["fixed_ips"].as_array().into_iter().flatten().map(|i| str_of(i, "subnet_id").to_string()).collect();
        let mut cidrs = Vec::new();
        for sid in &subnets {
            if let Some(s) = self.store.resource_get("subnet", sid).await?
                && let Some(c) = subnet_cidr(&s)
            {
                cidrs.push(c);
            }
        }
        for r in router["routes"].as_array().into_iter().flatten() {
            if let Some(n) = Addr::parse(str_of(r, "nexthop"))
                && cidrs.iter().any(|c| c.contains(n))
            {
                return Err(Error::conflict(
                    "RouterInterfaceInUseByRoute",
                    format!("Router interface for subnet {} on router {router_id} cannot be deleted, as it is required by one or more routes.", subnets.join(",")),
                ));
            }
        }
        for f in self.store.resource_list("floatingip").await? {
            if str_of(&f, "router_id") == router_id
                && let Some(a) = Addr::parse(str_of(&f, "fixed_ip_address"))
                && cidrs.iter().any(|c| c.contains(a))
            {
                return Err(Error::conflict(
                    "RouterInterfaceInUseByFloatingIP",
                    format!("Router interface for subnet {} on router {router_id} cannot be deleted, as it is required by one or more floating IPs.", subnets.join(",")),
                ));
            }
        }
        self.delete_port(caller, port.clone(), true).await?;
        let mut router = router;
        bump(&mut router);
        self.save(ROUTER, &router).await?;
        self.notify_router(&router).await?;
        Ok(json!({
            "id": router_id,
            "tenant_id": owner,
            "project_id": owner,
            "port_id": str_of(&port, "id"),
            "network_id": str_of(&port, "network_id"),
            "subnet_id": subnets.first(),
            "subnet_ids": subnets,
        }))
    }

    /// Finds the router that connects `fixed_ip` (on `port`'s network) to `ext_net`, as association requires.
    async fn router_for_floatingip(&self, port: &Value, fixed_ip: &str, ext_net: &str) -> Result<String> {
        let a = Addr::parse(fixed_ip);
        let subnet_id = port["fixed_ips"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| str_of(i, "ip_address") == fixed_ip)
            .map(|i| str_of(i, "subnet_id").to_string())
            .unwrap_or_default();
        for p in self.store.resource_list("port").await? {
            if str_of(&p, "device_owner") != "network:router_interface" {
                continue;
            }
            let on_subnet = p["fixed_ips"].as_array().into_iter().flatten().any(|i| str_of(i, "subnet_id") == subnet_id);
            if !on_subnet {
                continue;
            }
            if let Some(r) = self.store.resource_get("router", str_of(&p, "device_id")).await?
                && r["external_gateway_info"]["network_id"].as_str() == Some(ext_net)
            {
                return Ok(str_of(&r, "id").to_string());
            }
        }
        let _ = a;
        Err(Error::not_found(
            "ExternalGatewayForFloatingIPNotFound",
            format!(
                "External network {ext_net} is not reachable from subnet {subnet_id}.  Therefore, cannot associate Port {} with a Floating IP.",
                str_of(port, "id")
            ),
        ))
    }

    /// Resolves `port_id` (and `fixed_ip_address`) for an association: (port id, fixed IP, router id).
    async fn resolve_association(&self, caller: &Caller<'_>, fip: &Value, body: &Value) -> Result<Option<(String, String, String)>> {
        let port_id = match body.get("port_id") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(p)) => p.clone(),
            Some(v) => return Err(Error::invalid(format!("'{v}' is not a valid UUID"))),
        };
        let port = self.store.resource_get("port", &port_id).await?;
        let port = match port {
            Some(p) if self.visible(caller, PORT, &p).await? => p,
            _ => return Err(Error::not_found("PortNotFound", format!("Port {port_id} could not be found."))),
        };
        let ext_net = str_of(fip, "floating_network_id").to_string();
        if str_of(&port, "network_id") == ext_net {
            return Err(Error::bad("BadRequest", format!("Bad floatingip request: Port {port_id} is on the external network {ext_net}.")));
        }
        let v4: Vec<String> = port["fixed_ips"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| str_of(i, "ip_address").to_string())
            .filter(|ip| Addr::parse(ip).is_some_and(|a| a.version == 4))
            .collect();
        let fixed = match body.get("fixed_ip_address").and_then(Value::as_str) {
            Some(ip) => {
                if Addr::parse(ip).is_none() {
                    return Err(Error::invalid(format!("'{ip}' is not a valid IP address")));
                }
                if !v4.iter().any(|x| x == ip) {
                    return Err(Error::bad("BadRequest", format!("Bad floatingip request: Port {port_id} does not have fixed ip {ip}.")));
                }
                ip.to_string()
            }
            None => match v4.as_slice() {
                [] => {
                    return Err(Error::bad("BadRequest", format!("Bad floatingip request: Port {port_id} does not have any IPv4 address.")));
                }
                [one] => one.clone(),
                _ => {
                    return Err(Error::bad(
                        "BadRequest",
                        format!("Bad floatingip request: Port {port_id} has multiple fixed IPv4 addresses.  Must provide a specific IPv4 address when assigning a floating IP"),
                    ));
                }
            },
        };
        for other in self.store.resource_list("floatingip").await? {
            if str_of(&other, "id") != str_of(fip, "id")
                && str_of(&other, "port_id") == port_id
                && str_of(&other, "fixed_ip_address") == fixed
                && str_of(&other, "floating_network_id") == ext_net
            {
                return Err(Error::conflict(
                    "FloatingIPPortAlreadyAssociated",
                    format!(
                        "Cannot associate floating IP {} ({}) with port {port_id} using fixed IP {fixed}, as that fixed IP already has a floating IP on external network {ext_net}.",
                        str_of(fip, "floating_ip_address"),
                        str_of(fip, "id")
                    ),
                ));
            }
        }
        let router = self.router_for_floatingip(&port, &fixed, &ext_net).await?;
        Ok(Some((port_id, fixed, router)))
    }

    pub(crate) async fn create_floatingip(&self, caller: &Caller<'_>, body: &Value) -> Result<Value> {
        known_attrs(body, FIP_ATTRS)?;
        let owner = owner_of(caller, body)?;
        caller.enforce("create_floatingip", &owner)?;
        let Some(net_id) = body.get("floating_network_id").and_then(Value::as_str) else {
            return Err(Error::bad("BadRequest", "Failed to parse request. Required attribute 'floating_network_id' not specified"));
        };
        let net = self.store.resource_get("network", net_id).await?;
        let net = match net {
            Some(n) if self.visible(caller, NETWORK, &n).await? => n,
            _ => return Err(Error::not_found("NetworkNotFound", format!("Network {net_id} could not be found."))),
        };
        if net["router:external"].as_bool() != Some(true) {
            return Err(Error::bad("BadRequest", format!("Bad floatingip request: Network {net_id} is not a valid external network.")));
        }
        let ip = string_attr(body, "floating_ip_address", 64)?;
        if ip.is_some() {
            caller.enforce("create_floatingip:floating_ip_address", &owner)?;
        }
        if let Some(ip) = &ip
            && Addr::parse(ip).is_none()
        {
            return Err(Error::invalid(format!("'{ip}' is not a valid IP address")));
        }
        self.check_quota(&owner, "floatingip").await?;
        let id = new_id();
        let mut doc = standard(&id, &owner, &string_attr(body, "description", 255)?.unwrap_or_default());
        doc.insert("floating_network_id".into(), json!(net_id));
        doc.insert("port_id".into(), Value::Null);
        doc.insert("fixed_ip_address".into(), Value::Null);
        doc.insert("router_id".into(), Value::Null);
        doc.insert("status".into(), json!("DOWN"));
        doc.insert("tags".into(), json!([]));
        doc.insert("port_details".into(), Value::Null);
        let mut doc = Value::Object(doc);
        let assoc = self.resolve_association(caller, &doc, body).await?;
        let subnet_id = string_attr(body, "subnet_id", 64)?;
        let request = if ip.is_some() || subnet_id.is_some() {
            let subnet_id = match (&subnet_id, &ip) {
                (Some(s), _) => Some(s.clone()),
                (None, Some(ip)) => {
                    let a = Addr::parse(ip);
                    self.store
                        .resource_list_by_parent("subnet", net_id)
                        .await?
                        .iter()
                        .find(|s| a.is_some_and(|a| subnet_cidr(s).is_some_and(|c| c.contains(a))))
                        .map(|s| str_of(s, "id").to_string())
                }
                _ => None,
            };
            if subnet_id.is_none() {
                return Err(Error::bad("BadRequest", format!("Bad floatingip request: no subnet of network {net_id} contains the requested address.")));
            }
            Some(vec![IpRequest { subnet_id, ip_address: ip }])
        } else {
            // an IPv4 address from the first IPv4 subnet with room
            let v4: Vec<String> = self
                .store
                .resource_list_by_parent("subnet", net_id)
                .await?
                .iter()
                .filter(|s| s["ip_version"] == 4)
                .map(|s| str_of(s, "id").to_string())
                .collect();
            if v4.is_empty() {
                return Err(Error::bad("BadRequest", format!("Bad floatingip request: Network {net_id} does not contain any IPv4 subnet")));
            }
            None
        };
        let port = self.create_internal_port(net_id, "", "network:floatingip", &id, request.as_deref()).await?;
        let fixed = port["fixed_ips"].as_array().cloned().unwrap_or_default();
        let Some(first) = fixed.iter().find(|i| Addr::parse(str_of(i, "ip_address")).is_some_and(|a| a.version == 4)) else {
            self.delete_port(caller, port, true).await?;
            return Err(Error::conflict("IpAddressGenerationFailure", format!("No more IP addresses available on network {net_id}.")));
        };
        doc["floating_ip_address"] = json!(str_of(first, "ip_address"));
        if let Some((port_id, fixed_ip, router)) = assoc {
            doc["port_id"] = json!(port_id);
            doc["fixed_ip_address"] = json!(fixed_ip);
            doc["router_id"] = json!(router);
            doc["status"] = json!("ACTIVE");
        }
        if let Err(e) = self.insert(FLOATINGIP, &doc, net_id).await {
            self.delete_port(caller, port, true).await?;
            return Err(e);
        }
        self.notify_fip(&doc).await?;
        Ok(doc)
    }

    async fn notify_fip(&self, fip: &Value) -> Result<()> {
        if let Some(r) = fip["router_id"].as_str()
            && let Some(router) = self.store.resource_get("router", r).await?
        {
            self.notify_router(&router).await?;
        }
        Ok(())
    }

    pub(crate) async fn update_floatingip(&self, caller: &Caller<'_>, mut doc: Value, body: &Value) -> Result<Value> {
        known_attrs(body, FIP_ATTRS)?;
        for fixed in ["floating_network_id", "floating_ip_address", "subnet_id"] {
            if let Some(v) = body.get(fixed)
                && v != &doc[fixed]
            {
                return Err(Error::bad("HTTPBadRequest", format!("Cannot update read-only attribute {fixed}")));
            }
        }
        if let Some(v) = string_attr(body, "description", 255)? {
            doc["description"] = json!(v);
        }
        let old_router = doc["router_id"].clone();
        if body.get("port_id").is_some() {
            match self.resolve_association(caller, &doc, body).await? {
                Some((port_id, fixed_ip, router)) => {
                    doc["port_id"] = json!(port_id);
                    doc["fixed_ip_address"] = json!(fixed_ip);
                    doc["router_id"] = json!(router);
                    doc["status"] = json!("ACTIVE");
                }
                None => {
                    doc["port_id"] = Value::Null;
                    doc["fixed_ip_address"] = Value::Null;
                    doc["router_id"] = Value::Null;
                    doc["status"] = json!("DOWN");
                }
            }
        }
        bump(&mut doc);
        self.save(FLOATINGIP, &doc).await?;
        if let Some(r) = old_router.as_str()
            && let Some(router) = self.store.resource_get("router", r).await?
        {
            self.notify_router(&router).await?;
        }
        self.notify_fip(&doc).await?;
        Ok(doc)
    }

    pub(crate) async fn delete_floatingip(&self, doc: Value) -> Result<()> {
        let id = str_of(&doc, "id").to_string();
        for p in self.store.resource_list_by_parent("port", str_of(&doc, "floating_network_id")).await? {
            if str_of(&p, "device_id") == id && str_of(&p, "device_owner") == "network:floatingip" {
                let pid = str_of(&p, "id").to_string();
                self.store.port_delete(&pid).await?;
            }
        }
        self.store.resource_delete("floatingip", &id).await?;
        // the router that carried its NAT forgets it
        if let Some(r) = doc["router_id"].as_str()
            && let Some(router) = self.store.resource_get("router", r).await?
        {
            self.notify_router(&router).await?;
        }
        Ok(())
    }
}
