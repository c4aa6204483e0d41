//! The logic of every Neutron resource: validation in upstream's words, visibility (own project, shared and
//! external networks, RBAC grants), quotas, IP address management and the calls into the data-plane driver.
//!
//! Resources are JSON documents (see [`crate::store`]); each module here owns one family and shapes its documents
//! exactly as the API returns them, so the API layer only filters, pages and trims them.

mod agents;
mod auto_allocate;
mod networks;
mod other;
mod ports;
mod routers;
mod security_groups;
mod subnets;

use std::sync::Arc;

use auth::{Context, Policy};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::{
    agent::{FakeDriver, NetworkDriver},
    error::{Error, Result},
    store::Store,
};

pub use other::{EXTENSIONS, QUOTA_RESOURCES, TagOp};

/// The `[network]` configuration section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Policy overrides (upstream's `policy.yaml` format) over Neutron's secure-RBAC defaults.
    pub policy_file: Option<std::path::PathBuf>,
    /// Network types that may be created (`provider:network_type`).
    pub type_drivers: Vec<String>,
    /// The type of project networks created without provider attributes, first one first.
    pub tenant_network_types: Vec<String>,
    /// Physical networks that may carry flat networks.
    pub flat_networks: Vec<String>,
    /// `physnet:min:max` VLAN ranges (a bare `physnet` allows provider VLANs but no allocation).
    pub network_vlan_ranges: Vec<String>,
    /// `min:max` VXLAN VNI ranges.
    pub vni_ranges: Vec<String>,
    /// `min:max` Geneve VNI ranges.
    pub geneve_vni_ranges: Vec<String>,
    /// The MTU of the physical networks; overlay networks get it minus their encapsulation overhead.
    pub global_physnet_mtu: i64,
    /// The external network `stratus up` creates on bootstrap (none when empty).
    pub public_network_name: String,
    pub public_physical_network: String,
    pub public_subnet_cidr: String,
    /// The prefix of the default IPv4 subnet pool `stratus up` creates on bootstrap, which "get me a network"
    /// (`auto-allocated-topology`) carves project subnets from (none when empty).
    pub default_subnetpool_prefix: String,
    /// The size of the subnets carved from it.
    pub default_subnetpool_prefixlen: i64,
    /// Tell compute when a port of an instance goes `ACTIVE` or `DOWN` (`network-vif-plugged` /
    /// `network-vif-unplugged`), as upstream's `notify_nova_on_port_status_changes`.
    pub notify_nova_on_port_status_changes: bool,
    /// The compute endpoint the events go to (`…/compute`); defaults to this listener's `/compute` when compute
    /// runs in this process (without either, compute is not told).
    pub nova_url: Option<String>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            policy_file: None,
            type_drivers: ["flat", "vlan", "vxlan", "geneve", "local"].map(String::from).to_vec(),
            tenant_network_types: vec!["vxlan".into()],
            flat_networks: vec!["public".into()],
            network_vlan_ranges: vec!["public:1000:2999".into()],
            vni_ranges: vec!["1:65536".into()],
            geneve_vni_ranges: vec!["1:65536".into()],
            global_physnet_mtu: 1500,
            public_network_name: "public".into(),
            public_physical_network: "public".into(),
            public_subnet_cidr: "172.24.4.0/24".into(),
            default_subnetpool_prefix: "10.0.0.0/16".into(),
            default_subnetpool_prefixlen: 26,
            notify_nova_on_port_status_changes: true,
            nova_url: None,
        }
    }
}

/// The caller of one request and the policy that judges it.
pub struct Caller<'a> {
    pub ctx: &'a Context,
    pub policy: &'a Policy,
}

impl Caller<'_> {
    pub fn project(&self) -> String {
        self.ctx.project_id.clone().unwrap_or_default()
    }
    pub fn is_admin(&self) -> bool {
        self.policy.check("context_is_admin", self.ctx, &json!({}))
    }
    pub fn allowed(&self, rule: &str, owner: &str) -> bool {
        self.policy.check(rule, self.ctx, &json!({"project_id": owner, "tenant_id": owner}))
    }
    /// 403 unless `rule` allows the caller on a resource of `owner`.
    pub fn enforce(&self, rule: &str, owner: &str) -> Result<()> {
        if self.allowed(rule, owner) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!("(rule:{rule}) is disallowed by policy")))
        }
    }
}

/// A resource family: the document kind and Neutron's names for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    /// Document kind and singular JSON key (`network`).
    pub singular: &'static str,
    /// URL collection and plural JSON key (`networks`, `security-groups` → `security_groups`).
    pub collection: &'static str,
    pub plural_key: &'static str,
    pub not_found: &'static str,
    /// How messages name it (`Network`).
    pub label: &'static str,
}

pub const NETWORK: Kind = Kind { singular: "network", collection: "networks", plural_key: "networks", not_found: "NetworkNotFound", label: "Network" };
pub const SUBNET: Kind = Kind { singular: "subnet", collection: "subnets", plural_key: "subnets", not_found: "SubnetNotFound", label: "Subnet" };
pub const PORT: Kind = Kind { singular: "port", collection: "ports", plural_key: "ports", not_found: "PortNotFound", label: "Port" };
pub const ROUTER: Kind = Kind { singular: "router", collection: "routers", plural_key: "routers", not_found: "RouterNotFound", label: "Router" };
pub const FLOATINGIP: Kind = Kind {
    singular: "floatingip",
    collection: "floatingips",
    plural_key: "floatingips",
    not_found: "FloatingIPNotFound",
    label: "Floating IP",
};
pub const SECURITY_GROUP: Kind = Kind {
    singular: "security_group",
    collection: "security-groups",
    plural_key: "security_groups",
    not_found: "SecurityGroupNotFound",
    label: "Security group",
};
pub const SECURITY_GROUP_RULE: Kind = Kind {
    singular: "security_group_rule",
    collection: "security-group-rules",
    plural_key: "security_group_rules",
    not_found: "SecurityGroupRuleNotFound",
    label: "Security group rule",
};
pub const SUBNETPOOL: Kind = Kind {
    singular: "subnetpool",
    collection: "subnetpools",
    plural_key: "subnetpools",
    not_found: "SubnetPoolNotFound",
    label: "Subnet pool",
};
pub const RBAC_POLICY: Kind = Kind {
    singular: "rbac_policy",
    collection: "rbac-policies",
    plural_key: "rbac_policies",
    not_found: "RbacPolicyNotFound",
    label: "RBAC policy",
};

/// Every resource family with the standard CRUD API.
pub const KINDS: &[Kind] = &[NETWORK, SUBNET, PORT, ROUTER, FLOATINGIP, SECURITY_GROUP, SECURITY_GROUP_RULE, SUBNETPOOL, RBAC_POLICY];

/// The families that carry tags (`/v2.0/<collection>/<id>/tags`).
pub const TAGGABLE: &[Kind] = &[NETWORK, SUBNET, PORT, ROUTER, FLOATINGIP, SECURITY_GROUP, SUBNETPOOL];

pub fn kind_by_collection(collection: &str) -> Option<Kind> {
    KINDS.iter().copied().find(|k| k.collection == collection)
}

/// The network service.
#[derive(Clone)]
pub struct Network {
    pub(crate) store: Store,
    pub(crate) config: Arc<NetworkConfig>,
    pub(crate) driver: Arc<dyn NetworkDriver>,
    /// Where network agents are told of changes (none: no agents to tell).
    pub(crate) bus: Option<bus::Bus>,
    /// Where compute hears of ports going up and down (none: it is not told).
    pub(crate) nova: Option<Arc<crate::nova::NovaNotifier>>,
}

pub(crate) fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The standard attributes every resource carries.
pub(crate) fn standard(id: &str, project_id: &str, description: &str) -> Map<String, Value> {
    let ts = now();
    let mut m = Map::new();
    m.insert("id".into(), json!(id));
    m.insert("project_id".into(), json!(project_id));
    m.insert("tenant_id".into(), json!(project_id));
    m.insert("description".into(), json!(description));
    m.insert("created_at".into(), json!(ts));
    m.insert("updated_at".into(), json!(ts));
    m.insert("revision_number".into(), json!(0));
    m
}

/// Marks a document changed: a new revision and `updated_at`.
pub(crate) fn bump(doc: &mut Value) {
    let rev = doc["revision_number"].as_i64().unwrap_or(0);
    doc["revision_number"] = json!(rev + 1);
    doc["updated_at"] = json!(now());
}

pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Reads an optional string attribute (400 if it is not a string).
pub(crate) fn opt_string(body: &Value, key: &str) -> Result<Option<String>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Error::invalid(format!("'{other}' is not a valid string"))),
    }
}

/// Reads a string attribute of at most `max` characters.
pub(crate) fn string_attr(body: &Value, key: &str, max: usize) -> Result<Option<String>> {
    let v = opt_string(body, key)?;
    if let Some(s) = &v
        && s.chars().count() > max
    {
        return Err(Error::invalid(format!("'{s}' exceeds maximum length of {max}")));
    }
    Ok(v)
}

/// Reads an optional boolean attribute, accepting Neutron's string forms.
pub(crate) fn opt_bool(body: &Value, key: &str) -> Result<Option<bool>> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => api_common::query::parse_bool(s)
            .map(Some)
            .ok_or_else(|| Error::invalid(format!("'{s}' cannot be converted to boolean"))),
        Some(other) => Err(Error::invalid(format!("'{other}' cannot be converted to boolean"))),
    }
}

/// Rejects attributes the resource does not know, as Neutron does (400 "Unrecognized attribute(s)").
impl Network {
    /// The network a new port or subnet names in `network_id` (required), if the caller sees it (else 404).
    pub(crate) async fn requested_network<'b>(&self, caller: &Caller<'_>, body: &'b Value) -> Result<(&'b str, Value)> {
        let Some(net_id) = body.get("network_id").and_then(Value::as_str) else {
            return Err(Error::bad("BadRequest", "Failed to parse request. Required attribute 'network_id' not specified"));
        };
        let net = self.fetch(NETWORK, net_id).await?;
        if !self.visible(caller, NETWORK, &net).await? {
            return Err(Error::not_found("NetworkNotFound", format!("Network {net_id} could not be found.")));
        }
        Ok((net_id, net))
    }
}

pub(crate) fn known_attrs(body: &Value, allowed: &[&str]) -> Result<()> {
    let Some(obj) = body.as_object() else {
        return Err(Error::bad("BadRequest", "Body contains invalid data"));
    };
    let unknown: Vec<&str> = obj.keys().map(String::as_str).filter(|k| !allowed.contains(k)).collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(Error::bad("HTTPBadRequest", format!("Unrecognized attribute(s) '{}'", unknown.join(", "))))
    }
}

/// The owner a create request names (`project_id`/`tenant_id`, which must agree), else the caller's project.
pub(crate) fn owner_of(caller: &Caller, body: &Value) -> Result<String> {
    let p = opt_string(body, "project_id")?;
    let t = opt_string(body, "tenant_id")?;
    match (p, t) {
        (Some(p), Some(t)) if p != t => Err(Error::invalid("'project_id' and 'tenant_id' do not match")),
        (Some(p), _) | (None, Some(p)) => Ok(p),
        (None, None) => Ok(caller.project()),
    }
}

impl Network {
    /// A service with the in-memory [`FakeDriver`] data plane.
    pub fn new(db: db::Database, config: NetworkConfig) -> Network {
        Network::with_driver(db, config, Arc::new(FakeDriver::default()))
    }

    pub fn with_driver(db: db::Database, config: NetworkConfig, driver: Arc<dyn NetworkDriver>) -> Network {
        Network { store: Store::new(db), config: Arc::new(config), driver, bus: None, nova: None }
    }

    /// Tells the network agents on `bus` of every change of a network, subnet or port, and lets them fetch their
    /// hosts' state ([`Network::serve_agents`]).
    pub fn with_bus(mut self, bus: bus::Bus) -> Network {
        self.bus = Some(bus);
        self
    }

    /// Tells compute (through `notifier`) when ports of instances go up and down.
    pub fn with_nova(mut self, notifier: crate::nova::NovaNotifier) -> Network {
        self.nova = Some(Arc::new(notifier));
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub async fn migrate(&self) -> Result<()> {
        self.store.migrate().await
    }

    /// A document by id, or Neutron's 404 for its kind.
    pub(crate) async fn fetch(&self, kind: Kind, id: &str) -> Result<Value> {
        self.store
            .resource_get(kind.singular, id)
            .await?
            .ok_or_else(|| Error::not_found(kind.not_found, format!("{} {id} could not be found.", kind.label)))
    }

    pub(crate) async fn save(&self, kind: Kind, doc: &Value) -> Result<()> {
        self.store.resource_update(kind.singular, str_of(doc, "id"), doc).await?;
        Ok(())
    }

    pub(crate) async fn insert(&self, kind: Kind, doc: &Value, parent: &str) -> Result<()> {
        let inserted =
            self.store.resource_insert(kind.singular, str_of(doc, "id"), str_of(doc, "project_id"), parent, doc).await?;
        if !inserted {
            return Err(Error::conflict("Conflict", format!("{} {} already exists.", kind.label, str_of(doc, "id"))));
        }
        Ok(())
    }

    /// Whether the caller may see `doc` of `kind` (404 otherwise, never 403: other projects' resources do not exist
    /// for it).
    pub(crate) async fn visible(&self, caller: &Caller<'_>, kind: Kind, doc: &Value) -> Result<bool> {
        if caller.is_admin() || str_of(doc, "project_id") == caller.project() {
            return Ok(true);
        }
        Ok(match kind {
            NETWORK => self.network_visible_via_share(caller, doc).await?,
            SUBNET => match self.store.resource_get("network", str_of(doc, "network_id")).await? {
                Some(net) => self.network_visible_via_share(caller, &net).await?,
                None => false,
            },
            SUBNETPOOL => doc["shared"].as_bool().unwrap_or(false),
            RBAC_POLICY => {
                let t = str_of(doc, "target_tenant");
                t == caller.project()
            }
            _ => false,
        })
    }

    /// The ids of the networks the caller sees: its own, shared, external, and those granted to it by RBAC.
    async fn visible_network_ids(&self, caller: &Caller<'_>) -> Result<std::collections::HashSet<String>> {
        let project = caller.project();
        let grants: std::collections::HashSet<String> = self
            .store
            .resource_list("rbac_policy")
            .await?
            .iter()
            .filter(|r| str_of(r, "target_tenant") == project || str_of(r, "target_tenant") == "*")
            .map(|r| str_of(r, "object_id").to_string())
            .collect();
        Ok(self
            .store
            .resource_list("network")
            .await?
            .iter()
            .filter(|n| {
                str_of(n, "project_id") == project
                    || n["shared"].as_bool() == Some(true)
                    || n["router:external"].as_bool() == Some(true)
                    || grants.contains(str_of(n, "id"))
            })
            .map(|n| str_of(n, "id").to_string())
            .collect())
    }

    /// One resource as the caller may see it.
    pub async fn show(&self, caller: &Caller<'_>, kind: Kind, id: &str) -> Result<Value> {
        if kind == SECURITY_GROUP || kind == SECURITY_GROUP_RULE {
            self.ensure_default_sg(&caller.project()).await?;
        }
        let doc = self.fetch(kind, id).await?;
        if !self.visible(caller, kind, &doc).await? {
            return Err(Error::not_found(kind.not_found, format!("{} {id} could not be found.", kind.label)));
        }
        let owner = self.read_owner(caller, kind, &doc);
        caller.enforce(&format!("get_{}", kind.singular), &owner)?;
        let mut out = self.decorate(caller, kind, vec![doc]).await?;
        Ok(out.pop().unwrap_or(Value::Null))
    }

    /// The project a read is judged against: the owner, or the caller's own when the resource is shared with it.
    fn read_owner(&self, caller: &Caller<'_>, _kind: Kind, doc: &Value) -> String {
        let owner = str_of(doc, "project_id");
        if owner == caller.project() || caller.is_admin() { owner.to_string() } else { caller.project() }
    }

    /// Every resource of `kind` the caller may see, rendered.
    pub async fn list(&self, caller: &Caller<'_>, kind: Kind) -> Result<Vec<Value>> {
        if kind == SECURITY_GROUP || kind == SECURITY_GROUP_RULE {
            self.ensure_default_sg(&caller.project()).await?;
        }
        caller.enforce(&format!("get_{}", kind.singular), &caller.project())?;
        let docs = self.store.resource_list(kind.singular).await?;
        let mut out = Vec::with_capacity(docs.len());
        if (kind == NETWORK || kind == SUBNET) && !caller.is_admin() {
            // one pass over networks and grants instead of a lookup per document
            let nets = self.visible_network_ids(caller).await?;
            let key = if kind == NETWORK { "id" } else { "network_id" };
            out.extend(docs.into_iter().filter(|d| str_of(d, "project_id") == caller.project() || nets.contains(str_of(d, key))));
        } else {
            for d in docs {
                if self.visible(caller, kind, &d).await? {
                    out.push(d);
                }
            }
        }
        self.decorate(caller, kind, out).await
    }

    /// Adds computed attributes and hides what the caller may not read.
    pub(crate) async fn decorate(&self, caller: &Caller<'_>, kind: Kind, docs: Vec<Value>) -> Result<Vec<Value>> {
        match kind {
            NETWORK => self.decorate_networks(caller, docs).await,
            SECURITY_GROUP => self.decorate_security_groups(docs).await,
            PORT => Ok(docs.into_iter().map(|d| ports::hide_binding(caller, d)).collect()),
            FLOATINGIP => {
                let mut out = Vec::with_capacity(docs.len());
                for mut d in docs {
                    let details = match d["port_id"].as_str() {
                        Some(p) => self.store.resource_get("port", p).await?.map(|port| {
                            json!({
                                "name": port["name"],
                                "network_id": port["network_id"],
                                "mac_address": port["mac_address"],
                                "admin_state_up": port["admin_state_up"],
                                "status": port["status"],
                                "device_id": port["device_id"],
                                "device_owner": port["device_owner"],
                            })
                        }),
                        None => None,
                    };
                    d["port_details"] = details.unwrap_or(Value::Null);
                    out.push(d);
                }
                Ok(out)
            }
            SUBNET => {
                let external: std::collections::HashSet<String> = self
                    .store
                    .resource_list("network")
                    .await?
                    .iter()
                    .filter(|n| n["router:external"].as_bool() == Some(true))
                    .map(|n| str_of(n, "id").to_string())
                    .collect();
                Ok(docs
                    .into_iter()
                    .map(|mut d| {
                        d["router:external"] = json!(external.contains(str_of(&d, "network_id")));
                        d
                    })
                    .collect())
            }
            _ => Ok(docs),
        }
    }

    pub async fn create(&self, caller: &Caller<'_>, kind: Kind, body: &Value) -> Result<Value> {
        let doc = match kind {
            NETWORK => self.create_network(caller, body).await?,
            SUBNET => self.create_subnet(caller, body).await?,
            PORT => self.create_port(caller, body).await?,
            ROUTER => self.create_router(caller, body).await?,
            FLOATINGIP => self.create_floatingip(caller, body).await?,
            SECURITY_GROUP => self.create_security_group(caller, body).await?,
            SECURITY_GROUP_RULE => self.create_security_group_rule(caller, body).await?,
            SUBNETPOOL => self.create_subnetpool(caller, body).await?,
            RBAC_POLICY => self.create_rbac_policy(caller, body).await?,
            _ => return Err(Error::bad("BadRequest", "unsupported resource")),
        };
        self.notify_agents(kind, &doc).await;
        let mut out = self.decorate(caller, kind, vec![doc]).await?;
        Ok(out.pop().unwrap_or(Value::Null))
    }

    /// Looks a resource up for a write: 404 if invisible, then the `rule` against its owner.
    pub(crate) async fn fetch_for_write(&self, caller: &Caller<'_>, kind: Kind, id: &str, rule: &str) -> Result<Value> {
        let doc = self.fetch(kind, id).await?;
        if !self.visible(caller, kind, &doc).await? {
            return Err(Error::not_found(kind.not_found, format!("{} {id} could not be found.", kind.label)));
        }
        caller.enforce(rule, str_of(&doc, "project_id"))?;
        Ok(doc)
    }

    pub async fn update(&self, caller: &Caller<'_>, kind: Kind, id: &str, body: &Value) -> Result<Value> {
        if !body.is_object() {
            return Err(Error::bad("BadRequest", "Body contains invalid data"));
        }
        let rule = format!("update_{}", kind.singular);
        let doc = self.fetch_for_write(caller, kind, id, &rule).await?;
        let doc = match kind {
            NETWORK => self.update_network(caller, doc, body).await?,
            SUBNET => self.update_subnet(caller, doc, body).await?,
            PORT => self.update_port(caller, doc, body).await?,
            ROUTER => self.update_router(caller, doc, body).await?,
            FLOATINGIP => self.update_floatingip(caller, doc, body).await?,
            SECURITY_GROUP => self.update_security_group(caller, doc, body).await?,
            SUBNETPOOL => self.update_subnetpool(caller, doc, body).await?,
            RBAC_POLICY => self.update_rbac_policy(caller, doc, body).await?,
            _ => {
                return Err(Error::bad("BadRequest", format!("Resource {} does not support update", kind.singular)));
            }
        };
        self.notify_agents(kind, &doc).await;
        let mut out = self.decorate(caller, kind, vec![doc]).await?;
        Ok(out.pop().unwrap_or(Value::Null))
    }

    pub async fn delete(&self, caller: &Caller<'_>, kind: Kind, id: &str) -> Result<()> {
        let rule = format!("delete_{}", kind.singular);
        let doc = self.fetch_for_write(caller, kind, id, &rule).await?;
        let notice = doc.clone();
        let result = self.delete_doc(caller, kind, doc).await;
        if result.is_ok() {
            self.notify_agents(kind, &notice).await;
        }
        result
    }

    async fn delete_doc(&self, caller: &Caller<'_>, kind: Kind, doc: Value) -> Result<()> {
        match kind {
            NETWORK => self.delete_network(caller, doc).await,
            SUBNET => self.delete_subnet(caller, doc).await,
            PORT => self.delete_port(caller, doc, false).await,
            ROUTER => self.delete_router(caller, doc).await,
            FLOATINGIP => self.delete_floatingip(doc).await,
            SECURITY_GROUP => self.delete_security_group(caller, doc).await,
            SECURITY_GROUP_RULE => self.delete_security_group_rule(doc).await,
            SUBNETPOOL => self.delete_subnetpool(doc).await,
            RBAC_POLICY => self.delete_rbac_policy(doc).await,
            _ => Ok(()),
        }
    }
}
