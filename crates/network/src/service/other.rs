//! Subnet pools, RBAC policies, quotas, tags, IP availability and the extension list.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::subnets::{subnet_cidr, subnet_pools};
use super::{Caller, Kind, NETWORK, Network, RBAC_POLICY, SUBNETPOOL, bump, known_attrs, new_id, opt_bool, owner_of, standard, str_of, string_attr};
use crate::{
    error::{Error, Result},
    ipam::Cidr,
};

/// The quota resources and Neutron's defaults (`-1`: unlimited).
pub const QUOTA_RESOURCES: &[(&str, i64)] = &[
    ("network", 100),
    ("subnet", 100),
    ("port", 500),
    ("router", 10),
    ("floatingip", 50),
    ("security_group", 10),
    ("security_group_rule", 100),
    ("subnetpool", -1),
    ("rbac_policy", 10),
];

/// The extensions this service implements: (alias, name, description).
pub const EXTENSIONS: &[(&str, &str, &str)] = &[
    ("agent", "agent", "The agent management extension."),
    ("allowed-address-pairs", "Allowed Address Pairs", "Provides allowed address pairs"),
    ("auto-allocated-topology", "Auto Allocated Topology Services", "Auto Allocated Topology Services."),
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external application"),
    ("default-subnetpools", "Default Subnetpools", "Provides ability to mark and use a subnetpool as the default."),
    ("external-net", "Neutron external network", "Adds external network attribute to network resource."),
    ("ext-gw-mode", "Neutron L3 Configurable external gateway mode", "Extension of the router abstraction for specifying whether SNAT should occur on the external gateway"),
    ("extra_dhcp_opt", "Neutron Extra DHCP options", "Extra options configuration for DHCP."),
    ("extraroute", "Neutron Extra Route", "Extra routes configuration for L3 router"),
    ("fip-port-details", "Floating IP Port Details Extension", "Add port_details attribute to Floating IP resource"),
    ("ip-substring-filtering", "IP address substring filtering", "Provides IP address substring filtering when listing ports"),
    ("network-ip-availability", "Network IP Availability", "Provides IP availability data for each network and subnet."),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource."),
    ("net-mtu-writable", "Network MTU (writable)", "Provides a writable MTU attribute for a network resource."),
    ("pagination", "Pagination support", "Extension that indicates that pagination is enabled."),
    ("port-security", "Port Security", "Provides port security"),
    ("project-id", "project_id field enabled", "Extension that indicates that project_id field is enabled."),
    ("provider", "Provider Network", "Expose mapping of virtual networks to physical networks"),
    ("quotas", "Quota management support", "Expose functions for quotas management per project"),
    ("quota_details", "Quota details management support", "Expose functions for quotas usage statistics per project"),
    ("rbac-policies", "RBAC Policies", "Allows creation and modification of policies that control tenant access to resources."),
    ("router", "Neutron L3 Router", "Router abstraction for basic L3 forwarding between L2 Neutron networks and access to external networks via a NAT gateway."),
    ("security-group", "security-group", "The security groups extension."),
    ("service-type", "Neutron Service Type Management", "API for retrieving service providers for Neutron advanced services"),
    ("sorting", "Sorting support", "Extension that indicates that sorting is enabled."),
    ("standard-attr-description", "standard-attr-description", "Extension to add descriptions to standard attributes"),
    ("standard-attr-revisions", "Resource revision numbers", "This extension will display the revision number of neutron resources."),
    ("standard-attr-tag", "Tag support for resources with standard attribute: subnet, trunk, network_segment_range, router, network, policy, subnetpool, port, security_group, floatingip", "Enables to set tag on resources with standard attribute."),
    ("standard-attr-timestamp", "Resource timestamps", "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes."),
    ("subnet-external-network", "Subnet External Network", "Informs if the subnet is associated to an external network."),
    ("subnet_allocation", "Subnet Allocation", "Enables allocation of subnets from a subnet pool"),
    ("tag", "Tag support", "Enables to set tag on resources."),
    ("tag-ext", "Tag support for resources: subnet, subnetpool, port, router", "Extends tag support to more L2 and L3 resources."),
];

const POOL_ATTRS: &[&str] = &[
    "name",
    "prefixes",
    "default_prefixlen",
    "min_prefixlen",
    "max_prefixlen",
    "shared",
    "is_default",
    "default_quota",
    "address_scope_id",
    "description",
    "project_id",
    "tenant_id",
    "tags",
];
const RBAC_ATTRS: &[&str] = &["object_type", "object_id", "action", "target_tenant", "target_project", "project_id", "tenant_id"];

fn int_attr(body: &Value, key: &str) -> Result<Option<i64>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .map(Some)
            .ok_or_else(|| Error::invalid(format!("'{v}' is not an integer"))),
    }
}

fn parse_prefixes(v: &Value) -> Result<Vec<Cidr>> {
    let Some(list) = v.as_array() else { return Err(Error::invalid(format!("'{v}' is not a list"))) };
    let mut out: Vec<Cidr> = Vec::new();
    for p in list {
        let s = p.as_str().unwrap_or("");
        let c = Cidr::parse(s).filter(|_| s.contains('/')).ok_or_else(|| Error::invalid(format!("'{s}' is not a valid IP subnet")))?;
        out.push(c.normalized());
    }
    if out.is_empty() {
        return Err(Error::invalid("Subnet pool must have at least one prefix"));
    }
    if out.iter().any(|c| c.version != out[0].version) {
        return Err(Error::bad("PrefixVersionMismatch", "Cannot mix IPv4 and IPv6 prefixes in a subnet pool."));
    }
    // merge prefixes covered by others
    let mut merged: Vec<Cidr> = Vec::new();
    for c in &out {
        if !out.iter().any(|o| o != c && o.covers(c)) && !merged.contains(c) {
            merged.push(*c);
        }
    }
    Ok(merged)
}

impl Network {
    pub(crate) async fn create_subnetpool(&self, caller: &Caller<'_>, body: &Value) -> Result<Value> {
        known_attrs(body, POOL_ATTRS)?;
        let owner = owner_of(caller, body)?;
        caller.enforce("create_subnetpool", &owner)?;
        let shared = opt_bool(body, "shared")?.unwrap_or(false);
        if shared {
            caller.enforce("create_subnetpool:shared", &owner)?;
        }
        let is_default = opt_bool(body, "is_default")?.unwrap_or(false);
        if is_default {
            caller.enforce("create_subnetpool:is_default", &owner)?;
        }
        let Some(pv) = body.get("prefixes") else {
            return Err(Error::bad("BadRequest", "Failed to parse request. Required attribute 'prefixes' not specified"));
        };
        let prefixes = parse_prefixes(pv)?;
        let version = prefixes[0].version;
        let maxbits: i64 = if version == 4 { 32 } else { 128 };
        let min = int_attr(body, "min_prefixlen")?.unwrap_or(if version == 4 { 8 } else { 64 });
        let max = int_attr(body, "max_prefixlen")?.unwrap_or(maxbits);
        let default = int_attr(body, "default_prefixlen")?.unwrap_or(min);
        if !(0..=maxbits).contains(&min) || !(0..=maxbits).contains(&max) || min > max || default < min || default > max {
            return Err(Error::bad(
                "BadRequest",
                format!("Illegal prefix bounds: default_prefixlen={default}, min_prefixlen={min}, max_prefixlen={max}."),
            ));
        }
        let id = new_id();
        let mut doc = standard(&id, &owner, &string_attr(body, "description", 255)?.unwrap_or_default());
        doc.insert("name".into(), json!(string_attr(body, "name", 255)?.unwrap_or_default()));
        doc.insert("prefixes".into(), json!(prefixes.iter().map(|c| c.to_string()).collect::<Vec<_>>()));
        doc.insert("ip_version".into(), json!(version));
        doc.insert("min_prefixlen".into(), json!(min));
        doc.insert("max_prefixlen".into(), json!(max));
        doc.insert("default_prefixlen".into(), json!(default));
        doc.insert("shared".into(), json!(shared));
        doc.insert("is_default".into(), json!(is_default));
        doc.insert("default_quota".into(), json!(int_attr(body, "default_quota")?));
        doc.insert("address_scope_id".into(), json!(null));
        doc.insert("tags".into(), json!([]));
        let doc = Value::Object(doc);
        self.insert(SUBNETPOOL, &doc, "").await?;
        Ok(doc)
    }

    pub(crate) async fn update_subnetpool(&self, _caller: &Caller<'_>, mut doc: Value, body: &Value) -> Result<Value> {
        known_attrs(body, POOL_ATTRS)?;
        if let Some(v) = string_attr(body, "name", 255)? {
            doc["name"] = json!(v);
        }
        if let Some(v) = string_attr(body, "description", 255)? {
            doc["description"] = json!(v);
        }
        if let Some(pv) = body.get("prefixes") {
            let new = parse_prefixes(pv)?;
            let old: Vec<Cidr> = doc["prefixes"].as_array().into_iter().flatten().filter_map(|p| p.as_str().and_then(Cidr::parse)).collect();
            if new[0].version != old.first().map_or(new[0].version, |c| c.version) {
                return Err(Error::bad("PrefixVersionMismatch", "Cannot mix IPv4 and IPv6 prefixes in a subnet pool."));
            }
            if !old.iter().all(|o| new.iter().any(|n| n.covers(o))) {
                return Err(Error::bad("IllegalSubnetPoolPrefixUpdate", "Illegal update to prefixes: existing prefixes cannot be removed or shrunk."));
            }
            doc["prefixes"] = json!(new.iter().map(|c| c.to_string()).collect::<Vec<_>>());
        }
        for k in ["min_prefixlen", "max_prefixlen", "default_prefixlen", "default_quota"] {
            if let Some(v) = int_attr(body, k)? {
                doc[k] = json!(v);
            }
        }
        if let Some(v) = opt_bool(body, "is_default")? {
            doc["is_default"] = json!(v);
        }
        let (min, max, def) = (doc["min_prefixlen"].as_i64().unwrap_or(0), doc["max_prefixlen"].as_i64().unwrap_or(0), doc["default_prefixlen"].as_i64().unwrap_or(0));
        if min > max || def < min || def > max {
            return Err(Error::bad("BadRequest", format!("Illegal prefix bounds: default_prefixlen={def}, min_prefixlen={min}, max_prefixlen={max}.")));
        }
        bump(&mut doc);
        self.save(SUBNETPOOL, &doc).await?;
        Ok(doc)
    }

    pub(crate) async fn delete_subnetpool(&self, doc: Value) -> Result<()> {
        let id = str_of(&doc, "id").to_string();
        if self.store.resource_list("subnet").await?.iter().any(|s| str_of(s, "subnetpool_id") == id) {
            return Err(Error::conflict("SubnetPoolInUse", format!("Unable to complete operation on subnetpool {id}. Subnets are still allocated from it.")));
        }
        self.store.resource_delete("subnetpool", &id).await?;
        Ok(())
    }

    pub(crate) async fn create_rbac_policy(&self, caller: &Caller<'_>, body: &Value) -> Result<Value> {
        known_attrs(body, RBAC_ATTRS)?;
        let owner = owner_of(caller, body)?;
        caller.enforce("create_rbac_policy", &owner)?;
        let object_type = string_attr(body, "object_type", 255)?.unwrap_or_default();
        if object_type != "network" {
            return Err(Error::invalid(format!("'{object_type}' is not in ['network']")));
        }
        let action = string_attr(body, "action", 255)?.unwrap_or_default();
        if action != "access_as_shared" && action != "access_as_external" {
            return Err(Error::invalid(format!("'{action}' is not in ['access_as_shared', 'access_as_external']")));
        }
        let target = string_attr(body, "target_tenant", 255)?
            .or(string_attr(body, "target_project", 255)?)
            .ok_or_else(|| Error::bad("BadRequest", "Failed to parse request. Required attribute 'target_tenant' not specified"))?;
        let object_id = string_attr(body, "object_id", 64)?.unwrap_or_default();
        let net = self.store.resource_get("network", &object_id).await?;
        let net = match net {
            Some(n) if str_of(&n, "project_id") == caller.project() || caller.is_admin() => n,
            _ => return Err(Error::not_found("NetworkNotFound", format!("Network {object_id} could not be found."))),
        };
        if target == "*" && !caller.is_admin() {
            caller.enforce("create_rbac_policy:target_tenant", &owner)?;
        }
        for r in self.store.resource_list("rbac_policy").await? {
            if str_of(&r, "object_id") == object_id && str_of(&r, "action") == action && str_of(&r, "target_tenant") == target {
                return Err(Error::conflict("DuplicateRbacPolicy", "An RBAC policy already exists with those values."));
            }
        }
        self.check_quota(&owner, "rbac_policy").await?;
        let id = new_id();
        let mut doc = standard(&id, &owner, "");
        doc.remove("description");
        doc.remove("revision_number");
        doc.remove("created_at");
        doc.remove("updated_at");
        doc.insert("object_type".into(), json!("network"));
        doc.insert("object_id".into(), json!(object_id));
        doc.insert("action".into(), json!(action));
        doc.insert("target_tenant".into(), json!(target));
        doc.insert("target_project".into(), json!(target));
        let doc = Value::Object(doc);
        self.insert(RBAC_POLICY, &doc, &object_id).await?;
        if target == "*" {
            let mut net = net;
            if action == "access_as_shared" {
                net["shared"] = json!(true);
            } else {
                net["router:external"] = json!(true);
            }
            bump(&mut net);
            self.save(NETWORK, &net).await?;
        }
        Ok(doc)
    }

    pub(crate) async fn update_rbac_policy(&self, _caller: &Caller<'_>, mut doc: Value, body: &Value) -> Result<Value> {
        known_attrs(body, RBAC_ATTRS)?;
        if let Some(t) = string_attr(body, "target_tenant", 255)?.or(string_attr(body, "target_project", 255)?) {
            doc["target_tenant"] = json!(t);
            doc["target_project"] = json!(t);
        }
        self.save(RBAC_POLICY, &doc).await?;
        Ok(doc)
    }

    pub(crate) async fn delete_rbac_policy(&self, doc: Value) -> Result<()> {
        let net_id = str_of(&doc, "object_id").to_string();
        let target = str_of(&doc, "target_tenant").to_string();
        if let Some(mut net) = self.store.resource_get("network", &net_id).await? {
            let owner = str_of(&net, "project_id").to_string();
            let users = self.store.resource_list_by_parent("port", &net_id).await?;
            let in_use = users.iter().any(|p| {
                let pp = str_of(p, "project_id");
                pp != owner && !pp.is_empty() && (target == "*" || pp == target)
            });
            if in_use && str_of(&doc, "action") == "access_as_shared" {
                return Err(Error::conflict(
                    "RbacPolicyInUse",
                    format!("RBAC policy on object {net_id} cannot be removed because other objects depend on it."),
                ));
            }
            if target == "*" {
                if str_of(&doc, "action") == "access_as_shared" {
                    net["shared"] = json!(false);
                } else {
                    net["router:external"] = json!(false);
                }
                bump(&mut net);
                self.save(NETWORK, &net).await?;
            }
        }
        self.store.resource_delete("rbac_policy", str_of(&doc, "id")).await?;
        Ok(())
    }

    /// The limits of a project: its overrides over Neutron's defaults.
    pub async fn quota_limits(&self, project_id: &str) -> Result<BTreeMap<String, i64>> {
        let mut out: BTreeMap<String, i64> = QUOTA_RESOURCES.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        if let Some(doc) = self.store.resource_get("quota", project_id).await?
            && let Some(limits) = doc["limits"].as_object()
        {
            for (k, v) in limits {
                if let Some(n) = v.as_i64() {
                    out.insert(k.clone(), n);
                }
            }
        }
        Ok(out)
    }

    /// 409 OverQuota when one more `resource` would exceed the project's limit.
    pub(crate) async fn check_quota(&self, project_id: &str, resource: &str) -> Result<()> {
        let limit = self.quota_limits(project_id).await?.get(resource).copied().unwrap_or(-1);
        if limit < 0 {
            return Ok(());
        }
        let used = self.store.resource_count_by_project(resource, project_id).await?;
        if used >= limit {
            return Err(Error::conflict("OverQuota", format!("Quota exceeded for resources: ['{resource}'].")));
        }
        Ok(())
    }

    /// `GET /quotas/{project}/details`.
    pub async fn quota_details(&self, project_id: &str) -> Result<Value> {
        let mut out = serde_json::Map::new();
        for (k, limit) in self.quota_limits(project_id).await? {
            let used = self.store.resource_count_by_project(&k, project_id).await?;
            out.insert(k, json!({"limit": limit, "used": used, "reserved": 0}));
        }
        Ok(Value::Object(out))
    }

    pub async fn quota_update(&self, project_id: &str, body: &Value) -> Result<BTreeMap<String, i64>> {
        let Some(obj) = body.as_object() else { return Err(Error::bad("BadRequest", "Body contains invalid data")) };
        let mut limits = match self.store.resource_get("quota", project_id).await? {
            Some(d) => d["limits"].as_object().cloned().unwrap_or_default(),
            None => serde_json::Map::new(),
        };
        for (k, v) in obj {
            if !QUOTA_RESOURCES.iter().any(|(r, _)| r == k) {
                return Err(Error::invalid(format!("Unrecognized attribute(s) '{k}'")));
            }
            let n = v
                .as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .filter(|n| *n >= -1)
                .ok_or_else(|| Error::invalid(format!("'{v}' is not a valid quota limit for {k}")))?;
            limits.insert(k.clone(), json!(n));
        }
        let doc = json!({"id": project_id, "project_id": project_id, "limits": limits});
        if !self.store.resource_update("quota", project_id, &doc).await? {
            self.store.resource_insert("quota", project_id, project_id, "", &doc).await?;
        }
        self.quota_limits(project_id).await
    }

    pub async fn quota_delete(&self, project_id: &str) -> Result<()> {
        self.store.resource_delete("quota", project_id).await?;
        Ok(())
    }

    /// Projects with quota overrides and their limits.
    pub async fn quota_list(&self) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for d in self.store.resource_list("quota").await? {
            let p = str_of(&d, "project_id").to_string();
            let mut q = serde_json::Map::new();
            for (k, v) in self.quota_limits(&p).await? {
                q.insert(k, json!(v));
            }
            q.insert("project_id".into(), json!(p));
            q.insert("tenant_id".into(), json!(p));
            out.push(Value::Object(q));
        }
        Ok(out)
    }

    /// A taggable resource for a tag operation (404 if invisible; writes need the update rule).
    async fn tag_target(&self, caller: &Caller<'_>, kind: Kind, id: &str, write: bool) -> Result<Value> {
        if write {
            self.fetch_for_write(caller, kind, id, &format!("update_{}", kind.singular)).await
        } else {
            self.show(caller, kind, id).await
        }
    }

    pub async fn tags_get(&self, caller: &Caller<'_>, kind: Kind, id: &str) -> Result<Vec<String>> {
        let doc = self.tag_target(caller, kind, id, false).await?;
        Ok(doc["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_string)).collect())
    }

    pub async fn tag_exists(&self, caller: &Caller<'_>, kind: Kind, id: &str, tag: &str) -> Result<()> {
        if self.tags_get(caller, kind, id).await?.iter().any(|t| t == tag) {
            Ok(())
        } else {
            Err(Error::not_found("TagNotFound", format!("Tag {tag} could not be found for {} {id}.", kind.singular)))
        }
    }

    /// Replaces (`Some(list)`), adds one, or removes one/all tags.
    pub async fn tags_set(&self, caller: &Caller<'_>, kind: Kind, id: &str, op: TagOp) -> Result<Vec<String>> {
        let mut doc = self.tag_target(caller, kind, id, true).await?;
        let mut tags: Vec<String> = doc["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_string)).collect();
        let check = |t: &str| -> Result<()> {
            if t.is_empty() || t.chars().count() > 255 || t.contains(',') || t.contains('/') {
                return Err(Error::invalid(format!("'{t}' is not a valid tag")));
            }
            Ok(())
        };
        match op {
            TagOp::Replace(list) => {
                for t in &list {
                    check(t)?;
                }
                tags.clear();
                for t in list {
                    if !tags.contains(&t) {
                        tags.push(t);
                    }
                }
            }
            TagOp::Add(t) => {
                check(&t)?;
                if !tags.contains(&t) {
                    tags.push(t);
                }
            }
            TagOp::Remove(t) => {
                if !tags.contains(&t) {
                    return Err(Error::not_found("TagNotFound", format!("Tag {t} could not be found for {} {id}.", kind.singular)));
                }
                tags.retain(|x| x != &t);
            }
            TagOp::Clear => tags.clear(),
        }
        doc["tags"] = json!(tags);
        bump(&mut doc);
        // the stored document carries no computed attributes
        if let Some(m) = doc.as_object_mut() {
            if kind == NETWORK {
                m.remove("subnets");
            }
            if kind == super::SECURITY_GROUP {
                m.remove("security_group_rules");
            }
        }
        let mut stored = self.fetch(kind, id).await?;
        stored["tags"] = doc["tags"].clone();
        stored["revision_number"] = doc["revision_number"].clone();
        stored["updated_at"] = doc["updated_at"].clone();
        self.save(kind, &stored).await?;
        Ok(tags)
    }

    /// `GET /network-ip-availabilities[/{id}]`: total and used addresses per network and subnet.
    pub async fn ip_availability(&self, caller: &Caller<'_>, network_id: Option<&str>) -> Result<Vec<Value>> {
        caller.enforce("get_network_ip_availability", &caller.project())?;
        let nets = match network_id {
            Some(id) => vec![self.fetch(NETWORK, id).await?],
            None => self.store.resource_list("network").await?,
        };
        let mut out = Vec::new();
        for n in nets {
            let nid = str_of(&n, "id").to_string();
            let mut subnets = Vec::new();
            let (mut total, mut used) = (0u128, 0u128);
            for s in self.store.resource_list_by_parent("subnet", &nid).await? {
                let t: u128 = subnet_pools(&s).iter().map(|p| p.len()).sum();
                let u = self.store.ip_list_subnet(str_of(&s, "id")).await?.len() as u128;
                total = total.saturating_add(t);
                used += u;
                subnets.push(json!({
                    "subnet_id": str_of(&s, "id"),
                    "subnet_name": str_of(&s, "name"),
                    "cidr": subnet_cidr(&s).map(|c| c.to_string()),
                    "ip_version": s["ip_version"],
                    "total_ips": total_json(t),
                    "used_ips": u as u64,
                }));
            }
            out.push(json!({
                "network_id": nid,
                "network_name": str_of(&n, "name"),
                "project_id": str_of(&n, "project_id"),
                "tenant_id": str_of(&n, "project_id"),
                "total_ips": total_json(total),
                "used_ips": used as u64,
                "subnet_ip_availability": subnets,
            }));
        }
        Ok(out)
    }
}

fn total_json(n: u128) -> Value {
    if n <= u64::MAX as u128 { json!(n as u64) } else { json!(n as f64) }
}

/// A tag change.
pub enum TagOp {
    Replace(Vec<String>),
    Add(String),
    Remove(String),
    Clear,
}
