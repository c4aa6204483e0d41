//! Networks: provider attributes and segmentation ids from the configured ranges, MTU per network type, sharing
//! (the `shared` flag and RBAC grants), external networks, deletion rules.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{Caller, NETWORK, Network, bump, known_attrs, new_id, opt_bool, owner_of, standard, str_of, string_attr};
use crate::error::{Error, Result};

const NETWORK_ATTRS: &[&str] = &[
    "name",
    "admin_state_up",
    "shared",
    "router:external",
    "mtu",
    "description",
    "port_security_enabled",
    "provider:network_type",
    "provider:physical_network",
    "provider:segmentation_id",
    "project_id",
    "tenant_id",
    "availability_zone_hints",
    "tags",
    "is_default",
    "qos_policy_id",
    "dns_domain",
];

/// Encapsulation overhead per type, as upstream subtracts it from the physical MTU.
fn overhead(network_type: &str) -> i64 {
    match network_type {
        "vxlan" => 50,
        "geneve" => 58,
        "gre" => 42,
        _ => 0,
    }
}

/// Parses `min:max` (or `physnet:min:max` with `physnet` given) ranges.
fn ranges(entries: &[String], physnet: Option<&str>) -> Vec<(i64, i64)> {
    entries
        .iter()
        .filter_map(|e| {
            let parts: Vec<&str> = e.split(':').collect();
            let (p, lo, hi) = match parts.as_slice() {
                [p, lo, hi] => (Some(*p), *lo, *hi),
                [lo, hi] => (None, *lo, *hi),
                _ => return None,
            };
            if p != physnet {
                return None;
            }
            Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?))
        })
        .collect()
}

impl Network {
    /// Validates the provider attributes (or picks the project network type) and claims a segment.
    async fn claim_segment(&self, body: &Value, network_id: &str) -> Result<(String, Option<String>, Option<i64>)> {
        let cfg = &self.config;
        let ntype = string_attr(body, "provider:network_type", 255)?;
        let physnet = string_attr(body, "provider:physical_network", 64)?;
        let seg = match body.get("provider:segmentation_id") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| Error::invalid(format!("'{v}' is not an integer")))?,
            ),
        };
        let ntype = match ntype {
            Some(t) => t,
            None => {
                if physnet.is_some() || seg.is_some() {
                    return Err(Error::invalid("provider:network_type required"));
                }
                cfg.tenant_network_types.first().cloned().unwrap_or_else(|| "local".into())
            }
        };
        if !cfg.type_drivers.contains(&ntype) {
            return Err(Error::invalid(format!("Unknown network type {ntype} specified")));
        }
        match ntype.as_str() {
            "flat" => {
                let Some(p) = physnet else { return Err(Error::invalid("physical_network required for flat provider network")) };
                if seg.is_some() {
                    return Err(Error::invalid("segmentation_id specified for flat provider network"));
                }
                if !cfg.flat_networks.iter().any(|f| f == &p || f == "*") {
                    return Err(Error::invalid(format!("physical_network '{p}' unknown for flat provider network")));
                }
                if !self.store.segment_insert("flat", &p, 0, network_id).await? {
                    return Err(Error::conflict(
                        "FlatNetworkInUse",
                        format!("Unable to create the flat network. Physical network {p} is in use."),
                    ));
                }
                Ok((ntype, Some(p), None))
            }
            "vlan" => {
                let Some(p) = physnet else { return Err(Error::invalid("physical_network required for VLAN provider network")) };
                let known = cfg.network_vlan_ranges.iter().any(|e| e.split(':').next() == Some(p.as_str()));
                if !known {
                    return Err(Error::invalid(format!("physical_network '{p}' unknown for VLAN provider network")));
                }
                let id = match seg {
                    Some(s) if (1..=4094).contains(&s) => {
                        if !self.store.segment_insert("vlan", &p, s, network_id).await? {
                            return Err(Error::conflict(
                                "VlanIdInUse",
                                format!("Unable to create the network. The VLAN {s} on physical network {p} is in use."),
                            ));
                        }
                        s
                    }
                    Some(s) => return Err(Error::invalid(format!("segmentation_id out of range ({s} is not in 1..4094)"))),
                    None => self.allocate_segment("vlan", &p, &ranges(&cfg.network_vlan_ranges, Some(&p)), network_id).await?,
                };
                Ok((ntype, Some(p), Some(id)))
            }
            "vxlan" | "geneve" => {
                if physnet.is_some() {
                    return Err(Error::invalid(format!("provider:physical_network specified for {ntype} network")));
                }
                let conf = if ntype == "vxlan" { &cfg.vni_ranges } else { &cfg.geneve_vni_ranges };
                let id = match seg {
                    Some(s) if (1..=16_777_215).contains(&s) => {
                        if !self.store.segment_insert(&ntype, "", s, network_id).await? {
                            return Err(Error::conflict(
                                "TunnelIdInUse",
                                format!("Unable to create the network. The tunnel ID {s} is in use."),
                            ));
                        }
                        s
                    }
                    Some(s) => return Err(Error::invalid(format!("segmentation_id out of range ({s})"))),
                    None => self.allocate_segment(&ntype, "", &ranges(conf, None), network_id).await?,
                };
                Ok((ntype, None, Some(id)))
            }
            _ => {
                if physnet.is_some() || seg.is_some() {
                    return Err(Error::invalid(format!("{ntype} networks take no physical network or segmentation id")));
                }
                Ok((ntype, None, None))
            }
        }
    }

    /// The lowest free id of the ranges, claimed through the segment table's key (a lost race tries the next).
    async fn allocate_segment(&self, ntype: &str, physnet: &str, ranges: &[(i64, i64)], network_id: &str) -> Result<i64> {
        for _ in 0..32 {
            let used: std::collections::HashSet<i64> = self.store.segment_used(ntype, physnet).await?.into_iter().collect();
            let candidate = ranges.iter().flat_map(|(lo, hi)| *lo..=*hi).find(|id| !used.contains(id));
            let Some(id) = candidate else { break };
            if self.store.segment_insert(ntype, physnet, id, network_id).await? {
                return Ok(id);
            }
        }
        Err(Error::conflict(
            "NoNetworkAvailable",
            "Unable to create the network. No tenant network is available for allocation.",
        ))
    }

    pub(crate) async fn create_network(&self, caller: &Caller<'_>, body: &Value) -> Result<Value> {
        known_attrs(body, NETWORK_ATTRS)?;
        let owner = owner_of(caller, body)?;
        caller.enforce("create_network", &owner)?;
        let shared = opt_bool(body, "shared")?.unwrap_or(false);
        let external = opt_bool(body, "router:external")?.unwrap_or(false);
        if shared {
            caller.enforce("create_network:shared", &owner)?;
        }
        if body.get("router:external").is_some() {
            caller.enforce("create_network:router:external", &owner)?;
        }
        for attr in ["provider:network_type", "provider:physical_network", "provider:segmentation_id"] {
            if body.get(attr).is_some() {
                caller.enforce(&format!("create_network:{attr}"), &owner)?;
            }
        }
        self.check_quota(&owner, "network").await?;
        let name = string_attr(body, "name", 255)?.unwrap_or_default();
        let description = string_attr(body, "description", 255)?.unwrap_or_default();
        let admin_state_up = opt_bool(body, "admin_state_up")?.unwrap_or(true);
        let port_security = opt_bool(body, "port_security_enabled")?.unwrap_or(true);
        let id = new_id();
        let (ntype, physnet, seg) = self.claim_segment(body, &id).await?;
        let max_mtu = self.config.global_physnet_mtu - overhead(&ntype);
        let mtu = match body.get("mtu") {
            None | Some(Value::Null) => max_mtu,
            Some(v) => {
                let m = v.as_i64().ok_or_else(|| Error::invalid(format!("'{v}' is not an integer")))?;
                if m < 68 || m > max_mtu {
                    self.store.segment_delete_network(&id).await?;
                    return Err(Error::invalid(format!(
                        "Requested MTU is too big, maximum is {max_mtu}"
                    )));
                }
                m
            }
        };
        let mut doc = standard(&id, &owner, &description);
        doc.insert("name".into(), json!(name));
        doc.insert("admin_state_up".into(), json!(admin_state_up));
        doc.insert("status".into(), json!("ACTIVE"));
        doc.insert("shared".into(), json!(shared));
        doc.insert("router:external".into(), json!(external));
        doc.insert("mtu".into(), json!(mtu));
        doc.insert("port_security_enabled".into(), json!(port_security));
        doc.insert("provider:network_type".into(), json!(ntype));
        doc.insert("provider:physical_network".into(), json!(physnet));
        doc.insert("provider:segmentation_id".into(), json!(seg));
        doc.insert("availability_zone_hints".into(), json!([]));
        doc.insert("availability_zones".into(), json!(["nova"]));
        doc.insert("ipv4_address_scope".into(), json!(null));
        doc.insert("ipv6_address_scope".into(), json!(null));
        doc.insert("l2_adjacency".into(), json!(true));
        doc.insert("is_default".into(), json!(false));
        doc.insert("tags".into(), json!([]));
        doc.insert("subnets".into(), json!([]));
        let doc = Value::Object(doc);
        if let Err(e) = self.insert(NETWORK, &doc, "").await {
            self.store.segment_delete_network(&id).await?;
            return Err(e);
        }
        if !shared {
            self.ensure_default_sg(&owner).await?;
        }
        Ok(doc)
    }

    pub(crate) async fn update_network(&self, caller: &Caller<'_>, mut doc: Value, body: &Value) -> Result<Value> {
        known_attrs(body, NETWORK_ATTRS)?;
        let owner = str_of(&doc, "project_id").to_string();
        for attr in ["provider:network_type", "provider:physical_network", "provider:segmentation_id"] {
            if body.get(attr).is_some() {
                caller.enforce(&format!("update_network:{attr}"), &owner)?;
                if body[attr] != doc[attr] {
                    return Err(Error::invalid("Plugin does not support updating provider attributes"));
                }
            }
        }
        if let Some(v) = string_attr(body, "name", 255)? {
            doc["name"] = json!(v);
        }
        if let Some(v) = string_attr(body, "description", 255)? {
            doc["description"] = json!(v);
        }
        if let Some(v) = opt_bool(body, "admin_state_up")? {
            doc["admin_state_up"] = json!(v);
        }
        if let Some(v) = opt_bool(body, "port_security_enabled")? {
            doc["port_security_enabled"] = json!(v);
        }
        if let Some(v) = opt_bool(body, "shared")? {
            caller.enforce("update_network:shared", &owner)?;
            if !v && doc["shared"].as_bool() == Some(true) {
                let id = str_of(&doc, "id").to_string();
                let foreign = self
                    .store
                    .resource_list_by_parent("port", &id)
                    .await?
                    .iter()
                    .any(|p| str_of(p, "project_id") != owner && !str_of(p, "device_owner").starts_with("network:"));
                if foreign {
                    return Err(Error::conflict(
                        "InvalidSharedSetting",
                        format!("Unable to reconfigure sharing settings for network {id}. Multiple tenants are using it."),
                    ));
                }
            }
            doc["shared"] = json!(v);
        }
        if let Some(v) = opt_bool(body, "router:external")? {
            caller.enforce("update_network:router:external", &owner)?;
            doc["router:external"] = json!(v);
        }
        if let Some(v) = body.get("mtu").filter(|v| !v.is_null()) {
            let m = v.as_i64().ok_or_else(|| Error::invalid(format!("'{v}' is not an integer")))?;
            let max = self.config.global_physnet_mtu - overhead(str_of(&doc, "provider:network_type"));
            if m < 68 || m > max {
                return Err(Error::invalid(format!("Requested MTU is too big, maximum is {max}")));
            }
            doc["mtu"] = json!(m);
        }
        bump(&mut doc);
        self.save(NETWORK, &doc).await?;
        Ok(doc)
    }

    pub(crate) async fn delete_network(&self, caller: &Caller<'_>, doc: Value) -> Result<()> {
        let id = str_of(&doc, "id").to_string();
        let ports = self.store.resource_list_by_parent("port", &id).await?;
        let removable = |p: &Value| matches!(str_of(p, "device_owner"), "network:dhcp" | "network:floatingip");
        if ports.iter().any(|p| !removable(p)) {
            return Err(Error::conflict(
                "NetworkInUse",
                format!("Unable to complete operation on network {id}. There are one or more ports still in use on the network."),
            ));
        }
        // unassociated floating IPs go with their external network
        for f in self.store.resource_list_by_parent("floatingip", &id).await? {
            self.store.resource_delete("floatingip", str_of(&f, "id")).await?;
        }
        for p in ports {
            self.delete_port(caller, p, true).await?;
        }
        for s in self.store.resource_list_by_parent("subnet", &id).await? {
            self.store.resource_delete("subnet", str_of(&s, "id")).await?;
        }
        for r in self.store.resource_list("rbac_policy").await? {
            if str_of(&r, "object_id") == id {
                self.store.resource_delete("rbac_policy", str_of(&r, "id")).await?;
            }
        }
        self.store.segment_delete_network(&id).await?;
        self.store.resource_delete("network", &id).await?;
        Ok(())
    }

    /// Whether a network of another project is visible to the caller: shared, external, or granted by RBAC.
    pub(crate) async fn network_visible_via_share(&self, caller: &Caller<'_>, net: &Value) -> Result<bool> {
        if net["shared"].as_bool() == Some(true) || net["router:external"].as_bool() == Some(true) {
            return Ok(true);
        }
        let id = str_of(net, "id");
        let project = caller.project();
        Ok(self.store.resource_list("rbac_policy").await?.iter().any(|r| {
            str_of(r, "object_id") == id && (str_of(r, "target_tenant") == project || str_of(r, "target_tenant") == "*")
        }))
    }

    /// Adds `subnets` and hides provider attributes from non-admins.
    pub(crate) async fn decorate_networks(&self, caller: &Caller<'_>, docs: Vec<Value>) -> Result<Vec<Value>> {
        let mut by_net: HashMap<String, Vec<String>> = HashMap::new();
        for s in self.store.resource_list("subnet").await? {
            by_net.entry(str_of(&s, "network_id").to_string()).or_default().push(str_of(&s, "id").to_string());
        }
        let admin = caller.is_admin();
        let project = caller.project();
        let grants: Vec<Value> = self.store.resource_list("rbac_policy").await?;
        Ok(docs
            .into_iter()
            .map(|mut d| {
                let id = str_of(&d, "id").to_string();
                d["subnets"] = json!(by_net.remove(&id).unwrap_or_default());
                if d["shared"].as_bool() != Some(true)
                    && grants.iter().any(|g| {
                        str_of(g, "object_id") == id
                            && str_of(g, "action") == "access_as_shared"
                            && (str_of(g, "target_tenant") == project || str_of(g, "target_tenant") == "*")
                    })
                {
                    d["shared"] = json!(true);
                }
                if !admin && let Some(m) = d.as_object_mut() {
                    m.remove("provider:network_type");
                    m.remove("provider:physical_network");
                    m.remove("provider:segmentation_id");
                }
                d
            })
            .collect())
    }

    /// Creates the external network and its subnet of `[network] public_*` in `project_id` unless a network of that
    /// name exists; returns its id.
    pub async fn bootstrap_public_network(&self, project_id: &str) -> Result<Option<String>> {
        let name = self.config.public_network_name.clone();
        if name.is_empty() {
            return Ok(None);
        }
        if let Some(n) = self.store.resource_list("network").await?.into_iter().find(|n| str_of(n, "name") == name) {
            return Ok(Some(str_of(&n, "id").to_string()));
        }
        let ctx = system_context(project_id);
        let policy = auth::Policy::new(&crate::api::policies()).map_err(|e| Error::Config(e.to_string()))?;
        let caller = Caller { ctx: &ctx, policy: &policy };
        let net = self
            .create_network(
                &caller,
                &json!({
                    "name": name,
                    "router:external": true,
                    "shared": false,
                    "provider:network_type": "flat",
                    "provider:physical_network": self.config.public_physical_network,
                }),
            )
            .await?;
        let id = str_of(&net, "id").to_string();
        self.create_subnet(
            &caller,
            &json!({
                "name": format!("{name}-subnet"),
                "network_id": id,
                "ip_version": 4,
                "cidr": self.config.public_subnet_cidr,
                "enable_dhcp": false,
            }),
        )
        .await?;
        // The default external network (`is_default`), and the default subnet pool, for "get me a network".
        let mut doc = self.fetch(NETWORK, &id).await?;
        doc["is_default"] = json!(true);
        self.save(NETWORK, &doc).await?;
        let pools = self.store.resource_list("subnetpool").await?;
        if !self.config.default_subnetpool_prefix.is_empty() && !pools.iter().any(|p| p["is_default"] == json!(true)) {
            self.create_subnetpool(
                &caller,
                &json!({
                    "name": "shared-default-subnetpool-v4",
                    "prefixes": [self.config.default_subnetpool_prefix],
                    "default_prefixlen": self.config.default_subnetpool_prefixlen,
                    "shared": true,
                    "is_default": true,
                }),
            )
            .await?;
        }
        Ok(Some(id))
    }
}

/// An admin context for work the service does on its own (bootstrap).
fn system_context(project_id: &str) -> auth::Context {
    auth::Context {
        user_id: "stratus".into(),
        user_name: "stratus".into(),
        user_domain_id: "default".into(),
        user_domain_name: "Default".into(),
        project_id: Some(project_id.to_string()),
        project_name: None,
        project_domain_id: None,
        project_domain_name: None,
        domain_id: None,
        domain_name: None,
        system_scope: None,
        roles: vec!["admin".into(), "member".into(), "reader".into()],
        role_ids: vec![],
        is_admin_project: true,
        audit_ids: vec![],
        expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
        auth_methods: vec![],
        application_credential_id: None,
        trust_id: None,
    }
}
