//! The logic every request path shares: state rules of each action (upstream's statuses and messages), quotas,
//! scheduling, and the calls to the volume agents. Handlers parse and shape; this module decides.
//!
//! Work on a backend (create, delete, extend, snapshot, upload, backup, restore) is a bus call to the agent of
//! the volume's `host@backend`, made in a background task after the request has been answered: the resource
//! sits in its transitional status (`creating`, `deleting`, `extending`, …) until the agent answers, then moves on
//! (`available`, gone) or to its error status (`error`, `error_deleting`, `error_extending`, …). Status changes
//! are compare-and-swap on the stored status, so concurrent actions cannot both start.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use auth::{Context, Policy};
use bus::{Bus, Dispatcher, ServerHandle, Target};
use db::Database;
use serde_json::{Map, Value, json};
use volume_rpc::{BackendReport, SCHEDULER_TOPIC, VOLUME_TOPIC, Secret, VolumeSource};

use crate::{
    error::{Error, Result},
    scheduler,
    store::Store,
};

mod groups;

pub use groups::{BACKUP_SERVICE, DEFAULT_GROUP_TYPE, ENCRYPTION, GROUP, GROUP_SNAPSHOT, GROUP_SNAPSHOT_STATUSES, GROUP_STATUSES, GROUP_TYPE};

pub const VOLUME: &str = "volume";
pub const SNAPSHOT: &str = "snapshot";
pub const BACKUP: &str = "backup";
pub const ATTACHMENT: &str = "attachment";
pub const TYPE: &str = "type";
pub const QOS: &str = "qos";
pub const QUOTA: &str = "quota";
pub const QUOTA_CLASS: &str = "quota_class";
pub const MESSAGE: &str = "message";
pub const TRANSFER: &str = "transfer";

/// The name of the type volumes get when none is asked for (upstream's `__DEFAULT__`).
pub const DEFAULT_TYPE: &str = "__DEFAULT__";

/// Upstream's quota resources and their defaults.
pub const QUOTA_DEFAULTS: &[(&str, i64)] = &[
    ("volumes", 10),
    ("snapshots", 10),
    ("gigabytes", 1000),
    ("backups", 10),
    ("backup_gigabytes", 1000),
    ("per_volume_gigabytes", -1),
    ("groups", 10),
];

/// The service's settings (`[volume]`).
#[derive(Clone, Debug)]
pub struct VolumeConfig {
    /// The image service's endpoint (without `/v2`).
    pub image_url: String,
    /// The object store's endpoint (without `/v1/AUTH_…`), where backups go.
    pub object_url: String,
    /// The container backups go to unless the request names one (upstream's `backup_swift_container`).
    pub backup_container: String,
    /// Bytes per backup object (upstream's `backup_swift_object_size`).
    pub backup_chunk_size: u64,
    /// The zone of volumes that name none (upstream's `default_availability_zone`).
    pub default_availability_zone: String,
    /// A service without a report for this long is down (upstream's `service_down_time`).
    pub service_down_time: Duration,
    /// How long a call to an agent may take (a copy of a large image).
    pub call_timeout: Duration,
    /// The host name the scheduler reports under.
    pub host: String,
}

impl VolumeConfig {
    pub fn new(image_url: &str, object_url: &str) -> Self {
        VolumeConfig {
            image_url: image_url.trim_end_matches('/').into(),
            object_url: object_url.trim_end_matches('/').into(),
            backup_container: "volumebackups".into(),
            backup_chunk_size: 52_428_800,
            default_availability_zone: "nova".into(),
            service_down_time: Duration::from_secs(60),
            call_timeout: Duration::from_secs(3600),
            host: "localhost".into(),
        }
    }
}

/// Who is asking: the token's context, its raw token (passed on to the image and object services), and whether
/// the policy deems it an administrator.
pub struct Caller<'a> {
    pub ctx: &'a Context,
    pub token: String,
    pub is_admin: bool,
}

impl Caller<'_> {
    pub fn project(&self) -> &str {
        self.ctx.project_id.as_deref().unwrap_or("")
    }
    pub fn new<'a>(ctx: &'a Context, token: &str, policy: &Policy) -> Caller<'a> {
        let is_admin = policy.check("context_is_admin", ctx, &json!({}));
        Caller { ctx, token: token.to_string(), is_admin }
    }
    fn can_see(&self, doc: &Value) -> bool {
        self.is_admin || doc["project_id"].as_str() == Some(self.project())
    }
}

/// The block-storage service. Cheap to clone.
#[derive(Clone)]
pub struct Volume {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    bus: Bus,
    config: VolumeConfig,
    http: reqwest::Client,
}

pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn not_found(what: &str, id: &str) -> Error {
    Error::NotFound(format!("{what} {id} could not be found."))
}

/// Parses a size as upstream does: an integer (or integer string) > 0.
pub fn parse_size(v: &Value, what: &str) -> Result<i64> {
    let n = match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n > 0 => Ok(n),
        _ => Err(Error::BadRequest(format!("Invalid input for field/attribute {what}. Value: {v}. {what} must be an integer and greater than 0"))),
    }
}

/// Metadata as upstream validates it: an object of strings, keys 1–255 characters, values at most 255.
pub fn parse_metadata(v: &Value) -> Result<Map<String, Value>> {
    let Some(m) = v.as_object() else {
        return Err(Error::BadRequest("Malformed request body: metadata must be an object".into()));
    };
    for (k, val) in m {
        if k.is_empty() || k.len() > 255 {
            return Err(Error::BadRequest("Invalid metadata: keys must be 1 to 255 characters".into()));
        }
        match val.as_str() {
            Some(s) if s.len() <= 255 => {}
            Some(_) => return Err(Error::BadRequest(format!("Invalid metadata: the value of {k} is longer than 255 characters"))),
            None => return Err(Error::BadRequest(format!("Invalid metadata: the value of {k} must be a string"))),
        }
    }
    Ok(m.clone())
}

fn text_field(body: &Value, keys: &[&str], max: usize) -> Result<Option<Value>> {
    for key in keys {
        if let Some(v) = body.get(*key) {
            return match v {
                Value::Null => Ok(Some(Value::Null)),
                Value::String(s) if s.chars().count() <= max => Ok(Some(Value::String(s.trim().to_string()))),
                Value::String(_) => Err(Error::BadRequest(format!("Invalid input for field/attribute {key}: longer than {max} characters"))),
                _ => Err(Error::BadRequest(format!("Invalid input for field/attribute {key}: must be a string"))),
            };
        }
    }
    Ok(None)
}

/// Statuses from which a volume may be deleted (upstream's `volume.delete`).
const DELETABLE: &[&str] = &["available", "error", "error_restoring", "error_extending", "error_managing"];
/// Every volume status upstream has.
pub const VOLUME_STATUSES: &[&str] = &[
    "creating", "available", "reserved", "attaching", "detaching", "in-use", "maintenance", "deleting", "awaiting-transfer",
    "error", "error_deleting", "backing-up", "restoring-backup", "error_backing-up", "error_restoring", "error_extending",
    "downloading", "uploading", "retyping", "extending", "reverting",
];

impl Volume {
    pub fn new(db: Database, bus: Bus, config: VolumeConfig) -> Result<Volume> {
        let http = reqwest::Client::builder().build().map_err(|e| Error::Config(e.to_string()))?;
        Ok(Volume { inner: Arc::new(Inner { store: Store::new(db), bus, config, http }) })
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn config(&self) -> &VolumeConfig {
        &self.inner.config
    }

    /// Creates or upgrades the schema, and the default volume type.
    pub async fn migrate(&self) -> Result<()> {
        self.store().migrate().await?;
        if self.type_by_name(DEFAULT_TYPE).await?.is_none() {
            let doc = json!({
                "id": new_id(), "name": DEFAULT_TYPE, "description": "Default Volume Type", "is_public": true,
                "extra_specs": {}, "qos_specs_id": null, "projects": [], "status": "active",
            });
            self.store().resource_insert(TYPE, doc["id"].as_str().unwrap_or_default(), "", "", &doc).await?;
        }
        self.ensure_default_group_type().await?;
        Ok(())
    }

    // ---------------------------------------------------------------- scheduler and agents

    /// Serves the scheduler topic (the agents' reports) as server `name`.
    pub async fn serve(&self, name: &str) -> Result<ServerHandle> {
        let me = self.clone();
        let d = Dispatcher::new().on(move |r: BackendReport| {
            let me = me.clone();
            async move {
                let body = serde_json::to_value(&r).unwrap_or(Value::Null);
                me.record_report(&r.host, body).await.map_err(|e| bus::RemoteError::new("VolumeError", e.to_string()))
            }
        });
        let handle = self.inner.bus.serve(SCHEDULER_TOPIC, name, d).await?;
        let host = self.inner.config.host.clone();
        self.store().service_upsert("cinder-scheduler", &host, &json!({"zone": self.config().default_availability_zone})).await?;
        Ok(handle)
    }

    async fn record_report(&self, host: &str, mut body: Value) -> Result<()> {
        // Keep an administrator's enable/disable across reports.
        let existing = self.store().service_list().await?.into_iter().find(|s| s.binary == "cinder-volume" && s.host == host);
        if let Some(s) = existing {
            for key in ["disabled", "disabled_reason"] {
                if let Some(v) = s.body.get(key) {
                    body[key] = v.clone();
                }
            }
        }
        self.store().service_upsert("cinder-volume", host, &body).await?;
        // The scheduler is alive while it handles reports: its row is refreshed with each.
        let me = self.inner.config.host.clone();
        let mut scheduler = json!({"zone": self.config().default_availability_zone});
        if let Some(s) = self.store().service_list().await?.into_iter().find(|s| s.binary == "cinder-scheduler" && s.host == me) {
            for key in ["disabled", "disabled_reason"] {
                if let Some(v) = s.body.get(key) {
                    scheduler[key] = v.clone();
                }
            }
        }
        self.store().service_upsert("cinder-scheduler", &me, &scheduler).await?;
        let zone = body["availability_zone"].clone();
        let backup_host = host.split('@').next().unwrap_or(host).to_string();
        let mut backup = json!({"zone": zone});
        if let Some(s) = self.store().service_list().await?.into_iter().find(|s| s.binary == "cinder-backup" && s.host == backup_host) {
            for key in ["disabled", "disabled_reason"] {
                if let Some(v) = s.body.get(key) {
                    backup[key] = v.clone();
                }
            }
        }
        self.store().service_upsert("cinder-backup", &backup_host, &backup).await
    }

    fn is_up(&self, updated_at: i64) -> bool {
        let age = chrono::Utc::now().timestamp_micros() - updated_at;
        age <= self.inner.config.service_down_time.as_micros() as i64
    }

    /// The backends that are up and enabled, with their last reports.
    pub async fn backends(&self) -> Result<Vec<BackendReport>> {
        Ok(self
            .store()
            .service_list()
            .await?
            .into_iter()
            .filter(|s| s.binary == "cinder-volume" && self.is_up(s.updated_at) && s.body["disabled"] != json!(true))
            .filter_map(|s| serde_json::from_value::<BackendReport>(s.body).ok())
            .collect())
    }

    /// Every service row with its state, for `os-services`.
    pub async fn services(&self) -> Result<Vec<Value>> {
        let rows = self.store().service_list().await?;
        Ok(rows
            .into_iter()
            .map(|s| {
                let updated = chrono::DateTime::from_timestamp_micros(s.updated_at).unwrap_or_default();
                let zone = s.body["availability_zone"].as_str().or(s.body["zone"].as_str()).unwrap_or("nova").to_string();
                json!({
                    "binary": s.binary,
                    "host": s.host,
                    "zone": zone,
                    "status": if s.body["disabled"] == json!(true) { "disabled" } else { "enabled" },
                    "state": if self.is_up(s.updated_at) { "up" } else { "down" },
                    "updated_at": updated.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
                    "disabled_reason": s.body.get("disabled_reason").cloned().unwrap_or(Value::Null),
                })
            })
            .collect())
    }

    /// Enables or disables services matching `host` and `binary`; the changed rows.
    pub async fn service_set(&self, host: &str, binary: &str, disabled: bool, reason: Option<&str>) -> Result<usize> {
        let mut n = 0;
        for s in self.store().service_list().await? {
            if s.host == host && (binary.is_empty() || s.binary == binary) {
                let mut body = s.body.clone();
                body["disabled"] = json!(disabled);
                body["disabled_reason"] = if disabled { reason.map(Value::from).unwrap_or(Value::Null) } else { Value::Null };
                self.store().service_set_body(&s.binary, &s.host, &body).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// The zones that have a backend up.
    pub async fn availability_zones(&self) -> Result<Vec<(String, bool)>> {
        let mut zones: BTreeMap<String, bool> = BTreeMap::new();
        for s in self.store().service_list().await? {
            if s.binary == "cinder-volume" {
                let zone = s.body["availability_zone"].as_str().unwrap_or("nova").to_string();
                let up = self.is_up(s.updated_at) && s.body["disabled"] != json!(true);
                *zones.entry(zone).or_default() |= up;
            }
        }
        if zones.is_empty() {
            zones.insert(self.config().default_availability_zone.clone(), false);
        }
        Ok(zones.into_iter().collect())
    }

    /// Calls the agent of `host` (`host@backend#pool`) in the background; `done` runs with the outcome.
    fn dispatch<M, F, Fut>(&self, host: &str, msg: M, done: F)
    where
        M: bus::Rpc + Sync,
        F: FnOnce(Volume, std::result::Result<M::Reply, String>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<()>> + Send + 'static,
    {
        let me = self.clone();
        let server = host.split('#').next().unwrap_or(host).to_string();
        tokio::spawn(async move {
            let timeout = me.inner.config.call_timeout;
            let outcome = me.inner.bus.call(&Target::server(VOLUME_TOPIC, &server), &msg, timeout).await.map_err(|e| e.to_string());
            if let Err(error) = &outcome {
                tracing::warn!(%error, method = M::METHOD, host = %server, "volume agent call failed");
            }
            if let Err(error) = done(me, outcome).await {
                tracing::error!(%error, "recording a volume operation's outcome failed");
            }
        });
    }

    /// Sets fields of a document if its status is still `expected`.
    async fn finish(&self, kind: &str, id: &str, expected: &str, changes: Value) -> Result<bool> {
        let Some(mut doc) = self.store().resource_get(kind, id).await? else { return Ok(false) };
        if doc["status"] != json!(expected) {
            return Ok(false);
        }
        if let (Some(d), Some(c)) = (doc.as_object_mut(), changes.as_object()) {
            for (k, v) in c {
                d.insert(k.clone(), v.clone());
            }
            d.insert("updated_at".into(), json!(now()));
        }
        self.store().resource_transition(kind, id, expected, &doc).await
    }

    /// Moves a document from one of `allowed` statuses to `to` (with extra changes), atomically; the new document.
    async fn transition(&self, kind: &str, doc: &Value, allowed: &[&str], to: &str, changes: Value, err: impl FnOnce(&str) -> Error) -> Result<Value> {
        let status = str_of(doc, "status").unwrap_or("").to_string();
        if !allowed.contains(&status.as_str()) {
            return Err(err(&status));
        }
        let mut new = doc.clone();
        if let (Some(d), Some(c)) = (new.as_object_mut(), changes.as_object()) {
            for (k, v) in c {
                d.insert(k.clone(), v.clone());
            }
        }
        new["status"] = json!(to);
        new["updated_at"] = json!(now());
        let id = str_of(doc, "id").unwrap_or_default();
        if !self.store().resource_transition(kind, id, &status, &new).await? {
            return Err(err(&status));
        }
        Ok(new)
    }

    // ---------------------------------------------------------------- quotas

    async fn quota_doc(&self, kind: &str, id: &str) -> Result<Map<String, Value>> {
        Ok(self.store().resource_get(kind, id).await?.and_then(|d| d.get("limits").and_then(Value::as_object).cloned()).unwrap_or_default())
    }

    /// The defaults: the `default` quota class over upstream's defaults.
    pub async fn quota_defaults(&self) -> Result<BTreeMap<String, i64>> {
        let mut out: BTreeMap<String, i64> = QUOTA_DEFAULTS.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        for (k, v) in self.quota_doc(QUOTA_CLASS, "default").await? {
            if let Some(n) = v.as_i64() {
                out.insert(k, n);
            }
        }
        Ok(out)
    }

    pub async fn quota_limits(&self, project: &str) -> Result<BTreeMap<String, i64>> {
        let mut out = self.quota_defaults().await?;
        for (k, v) in self.quota_doc(QUOTA, project).await? {
            if let Some(n) = v.as_i64() {
                out.insert(k, n);
            }
        }
        Ok(out)
    }

    /// What a project uses of each quota resource.
    pub async fn quota_usage(&self, project: &str) -> Result<BTreeMap<String, i64>> {
        let volumes = self.store().resource_list(VOLUME, Some(project)).await?;
        let snapshots = self.store().resource_list(SNAPSHOT, Some(project)).await?;
        let backups = self.store().resource_list(BACKUP, Some(project)).await?;
        let size = |d: &Value| d["size"].as_i64().unwrap_or(0);
        let mut out = BTreeMap::new();
        out.insert("volumes".into(), volumes.len() as i64);
        out.insert("snapshots".into(), snapshots.len() as i64);
        out.insert("gigabytes".into(), volumes.iter().map(size).sum::<i64>() + snapshots.iter().map(size).sum::<i64>());
        out.insert("backups".into(), backups.len() as i64);
        out.insert("backup_gigabytes".into(), backups.iter().map(size).sum());
        out.insert("per_volume_gigabytes".into(), 0);
        out.insert("groups".into(), self.store().resource_list(GROUP, Some(project)).await?.len() as i64);
        Ok(out)
    }

    /// Fails with upstream's 413 when adding `deltas` would exceed a limit.
    async fn quota_check(&self, project: &str, deltas: &[(&str, i64)]) -> Result<()> {
        let limits = self.quota_limits(project).await?;
        let usage = self.quota_usage(project).await?;
        for (resource, delta) in deltas {
            let limit = limits.get(*resource).copied().unwrap_or(-1);
            if limit < 0 || *delta <= 0 {
                continue;
            }
            let used = usage.get(*resource).copied().unwrap_or(0);
            if used + delta > limit {
                return Err(Error::OverQuota(match *resource {
                    "gigabytes" | "backup_gigabytes" => format!(
                        "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed {resource} quota. Requested {delta}G, quota is {limit}G and {used}G has been consumed."
                    ),
                    "volumes" => format!("VolumeLimitExceeded: Maximum number of volumes allowed ({limit}) exceeded for quota 'volumes'."),
                    "snapshots" => format!("SnapshotLimitExceeded: Maximum number of snapshots allowed ({limit}) exceeded"),
                    "backups" => format!("BackupLimitExceeded: Maximum number of backups allowed ({limit}) exceeded"),
                    other => format!("Quota exceeded for resources: ['{other}']"),
                }));
            }
        }
        Ok(())
    }

    /// Sets a project's (or, with `class`, a quota class's) limits; unknown keys and bad values are 400s.
    pub async fn quota_update(&self, kind: &str, id: &str, body: &Map<String, Value>) -> Result<()> {
        let mut limits = self.quota_doc(kind, id).await?;
        let usage = if kind == QUOTA { self.quota_usage(id).await? } else { BTreeMap::new() };
        for (k, v) in body {
            if k == "tenant_id" || k == "id" || k == "class_name" {
                continue;
            }
            let known = QUOTA_DEFAULTS.iter().any(|(r, _)| r == k)
                || ["volumes_", "gigabytes_", "snapshots_"].iter().any(|p| k.starts_with(p));
            if !known {
                return Err(Error::BadRequest(format!("Bad key(s) in quota set: {k}")));
            }
            let n = match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            };
            let Some(n) = n.filter(|n| *n >= -1) else {
                return Err(Error::BadRequest(format!("Quota limit {v} for {k} must be an integer greater than or equal to -1")));
            };
            if n >= 0 && usage.get(k).is_some_and(|used| *used > n) {
                return Err(Error::BadRequest(format!(
                    "Quota limit invalid for {k}: Quota limit {n} must be equal or greater than existing resources. Current usage is {}.",
                    usage[k]
                )));
            }
            limits.insert(k.clone(), json!(n));
        }
        let doc = json!({"id": id, "limits": limits, "status": ""});
        if !self.store().resource_update(kind, id, &doc).await? {
            self.store().resource_insert(kind, id, id, "", &doc).await?;
        }
        Ok(())
    }

    pub async fn quota_delete(&self, project: &str) -> Result<()> {
        self.store().resource_delete(QUOTA, project).await?;
        Ok(())
    }

    // ---------------------------------------------------------------- volume types

    pub async fn type_by_name(&self, name: &str) -> Result<Option<Value>> {
        Ok(self.store().resource_list(TYPE, None).await?.into_iter().find(|t| t["name"] == json!(name)))
    }

    fn type_visible(caller: &Caller<'_>, t: &Value) -> bool {
        caller.is_admin
            || t["is_public"] == json!(true)
            || t["projects"].as_array().is_some_and(|p| p.iter().any(|x| x.as_str() == Some(caller.project())))
    }

    /// A type by id or name, as the caller may see it.
    pub async fn type_get(&self, caller: &Caller<'_>, id: &str) -> Result<Value> {
        let t = match self.store().resource_get(TYPE, id).await? {
            Some(t) => Some(t),
            None => self.type_by_name(id).await?,
        };
        match t {
            Some(t) if Self::type_visible(caller, &t) => Ok(t),
            _ => Err(Error::NotFound(format!("Volume type {id} could not be found."))),
        }
    }

    pub async fn type_default(&self) -> Result<Value> {
        self.type_by_name(DEFAULT_TYPE).await?.ok_or_else(|| Error::NotFound("Default volume type can not be found.".into()))
    }

    pub async fn type_list(&self, caller: &Caller<'_>, is_public: Option<bool>) -> Result<Vec<Value>> {
        let types = self.store().resource_list(TYPE, None).await?;
        Ok(types
            .into_iter()
            .filter(|t| Self::type_visible(caller, t))
            .filter(|t| match is_public {
                // Upstream: admins see all types unless they filter; `is_public` narrows.
                Some(p) => t["is_public"] == json!(p) || (!caller.is_admin && !p),
                None => caller.is_admin || t["is_public"] == json!(true) || Self::type_visible(caller, t),
            })
            .collect())
    }

    pub async fn type_create(&self, body: &Value) -> Result<Value> {
        let name = match body.get("name") {
            Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= 255 => s.trim().to_string(),
            _ => return Err(Error::BadRequest("Invalid input for field/attribute name: Volume type name can not be empty.".into())),
        };
        let description = text_field(body, &["description"], 255)?.unwrap_or(Value::Null);
        let is_public = match body.get("os-volume-type-access:is_public").or(body.get("is_public")) {
            None | Some(Value::Null) => true,
            Some(v) => parse_bool_value(v).ok_or_else(|| Error::BadRequest(format!("Invalid value '{v}' for is_public. Accepted values: True or False.")))?,
        };
        let extra_specs = match body.get("extra_specs") {
            None | Some(Value::Null) => Map::new(),
            Some(v) => parse_specs(v)?,
        };
        if self.type_by_name(&name).await?.is_some() {
            return Err(Error::Conflict(format!("Volume Type {name} already exists.")));
        }
        let doc = json!({
            "id": new_id(), "name": name, "description": description, "is_public": is_public,
            "extra_specs": extra_specs, "qos_specs_id": null, "projects": [], "status": "active",
        });
        self.store().resource_insert(TYPE, doc["id"].as_str().unwrap_or_default(), "", "", &doc).await?;
        Ok(doc)
    }

    pub async fn type_update(&self, caller: &Caller<'_>, id: &str, body: &Value) -> Result<Value> {
        let mut t = self.type_get(caller, id).await?;
        if body.get("name").is_none() && body.get("description").is_none() && body.get("is_public").is_none() {
            return Err(Error::BadRequest("Specify volume type name, description, is_public or a combination thereof.".into()));
        }
        if let Some(v) = body.get("name") {
            let name = v.as_str().map(str::trim).unwrap_or_default().to_string();
            if name.is_empty() || name.chars().count() > 255 {
                return Err(Error::BadRequest("Volume type name can not be empty.".into()));
            }
            if name != t["name"] {
                if t["name"] == json!(DEFAULT_TYPE) {
                    return Err(Error::BadRequest("The default volume type can not be renamed.".into()));
                }
                if self.type_by_name(&name).await?.is_some() {
                    return Err(Error::Conflict(format!("Volume Type {name} already exists.")));
                }
            }
            t["name"] = json!(name);
        }
        if let Some(d) = text_field(body, &["description"], 255)? {
            t["description"] = d;
        }
        if let Some(v) = body.get("is_public") {
            t["is_public"] = json!(parse_bool_value(v).ok_or_else(|| Error::BadRequest(format!("Invalid value '{v}' for is_public.")))?);
        }
        self.store().resource_update(TYPE, t["id"].as_str().unwrap_or_default(), &t).await?;
        Ok(t)
    }

    pub async fn type_delete(&self, caller: &Caller<'_>, id: &str) -> Result<()> {
        let t = self.type_get(caller, id).await?;
        if t["name"] == json!(DEFAULT_TYPE) {
            return Err(Error::BadRequest("Default volume type can not be deleted.".into()));
        }
        let tid = t["id"].as_str().unwrap_or_default();
        let in_use = self.store().resource_list(VOLUME, None).await?.iter().any(|v| v["volume_type_id"] == json!(tid));
        if in_use {
            return Err(Error::BadRequest("Target volume type is still in use.".into()));
        }
        self.store().resource_delete(TYPE, tid).await?;
        self.store().resource_delete(ENCRYPTION, tid).await?;
        Ok(())
    }

    pub async fn type_set_specs(&self, caller: &Caller<'_>, id: &str, specs: &Value) -> Result<Map<String, Value>> {
        let mut t = self.type_get(caller, id).await?;
        let specs = parse_specs(specs)?;
        let tid = t["id"].as_str().unwrap_or_default().to_string();
        let in_use = self.store().resource_list(VOLUME, None).await?.iter().any(|v| v["volume_type_id"] == json!(tid));
        if in_use {
            return Err(Error::BadRequest(format!("Volume Type {tid} is in use and extra specs can not be changed.")));
        }
        let current = t["extra_specs"].as_object_mut().ok_or_else(|| Error::Config("bad type document".into()))?;
        for (k, v) in &specs {
            current.insert(k.clone(), v.clone());
        }
        self.store().resource_update(TYPE, &tid, &t).await?;
        Ok(specs)
    }

    pub async fn type_delete_spec(&self, caller: &Caller<'_>, id: &str, key: &str) -> Result<()> {
        let mut t = self.type_get(caller, id).await?;
        let tid = t["id"].as_str().unwrap_or_default().to_string();
        let removed = t["extra_specs"].as_object_mut().and_then(|m| m.remove(key));
        if removed.is_none() {
            return Err(Error::NotFound(format!("Volume Type {tid} has no extra specs with key {key}.")));
        }
        self.store().resource_update(TYPE, &tid, &t).await?;
        Ok(())
    }

    /// Grants or revokes a project's access to a private type.
    pub async fn type_access(&self, caller: &Caller<'_>, id: &str, project: &str, add: bool) -> Result<()> {
        let mut t = self.type_get(caller, id).await?;
        let tid = t["id"].as_str().unwrap_or_default().to_string();
        if t["is_public"] == json!(true) {
            return Err(Error::BadRequest("Invalid volume type: Type access modification is not applicable to public volume type.".to_string()));
        }
        let projects = t["projects"].as_array_mut().ok_or_else(|| Error::Config("bad type document".into()))?;
        let has = projects.iter().any(|p| p.as_str() == Some(project));
        match (add, has) {
            (true, true) => return Err(Error::Conflict(format!("Volume type access for {tid} / {project} combination already exists."))),
            (false, false) => return Err(Error::NotFound(format!("Volume type access not found for {tid} / {project} combination."))),
            (true, false) => projects.push(json!(project)),
            (false, true) => projects.retain(|p| p.as_str() != Some(project)),
        }
        self.store().resource_update(TYPE, &tid, &t).await?;
        Ok(())
    }

    // ---------------------------------------------------------------- QoS specs

    pub async fn qos_get(&self, id: &str) -> Result<Value> {
        self.store().resource_get(QOS, id).await?.ok_or_else(|| Error::NotFound(format!("QoS Specs {id} could not be found.")))
    }

    pub async fn qos_list(&self) -> Result<Vec<Value>> {
        self.store().resource_list(QOS, None).await
    }

    pub async fn qos_create(&self, body: &Value) -> Result<Value> {
        let Some(obj) = body.as_object() else { return Err(Error::BadRequest("Malformed request body".into())) };
        let name = match obj.get("name").and_then(Value::as_str).map(str::trim) {
            Some(n) if !n.is_empty() && n.len() <= 255 => n.to_string(),
            _ => return Err(Error::BadRequest("Please specify a name for QoS specs.".into())),
        };
        let consumer = obj.get("consumer").and_then(Value::as_str).unwrap_or("back-end").to_string();
        if !["front-end", "back-end", "both"].contains(&consumer.as_str()) {
            return Err(Error::BadRequest(format!("Invalid consumer: {consumer}. Valid consumer values are ['front-end', 'back-end', 'both'].")));
        }
        if self.qos_list().await?.iter().any(|q| q["name"] == json!(name)) {
            return Err(Error::Conflict(format!("QoS Specs {name} already exists.")));
        }
        let mut specs = Map::new();
        for (k, v) in obj {
            if k != "name" && k != "consumer" {
                specs.insert(k.clone(), Value::String(v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())));
            }
        }
        let doc = json!({"id": new_id(), "name": name, "consumer": consumer, "specs": specs, "status": ""});
        self.store().resource_insert(QOS, doc["id"].as_str().unwrap_or_default(), "", "", &doc).await?;
        Ok(doc)
    }

    pub async fn qos_set_keys(&self, id: &str, body: &Value) -> Result<Map<String, Value>> {
        let mut q = self.qos_get(id).await?;
        let Some(obj) = body.as_object() else { return Err(Error::BadRequest("Malformed request body".into())) };
        let mut changed = Map::new();
        for (k, v) in obj {
            let v = Value::String(v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
            if k == "consumer" {
                q["consumer"] = v.clone();
            } else if let Some(specs) = q["specs"].as_object_mut() {
                specs.insert(k.clone(), v.clone());
            }
            changed.insert(k.clone(), v);
        }
        self.store().resource_update(QOS, id, &q).await?;
        Ok(changed)
    }

    pub async fn qos_delete_keys(&self, id: &str, keys: &[String]) -> Result<()> {
        let mut q = self.qos_get(id).await?;
        for k in keys {
            if q["specs"].as_object_mut().and_then(|s| s.remove(k)).is_none() {
                return Err(Error::NotFound(format!("QoS spec {k} could not be found in {id}.")));
            }
        }
        self.store().resource_update(QOS, id, &q).await?;
        Ok(())
    }

    pub async fn qos_associations(&self, id: &str) -> Result<Vec<Value>> {
        self.qos_get(id).await?;
        Ok(self.store().resource_list(TYPE, None).await?.into_iter().filter(|t| t["qos_specs_id"] == json!(id)).collect())
    }

    pub async fn qos_associate(&self, id: &str, type_id: Option<&str>, associate: bool) -> Result<()> {
        self.qos_get(id).await?;
        let Some(type_id) = type_id else { return Err(Error::BadRequest("Volume Type id must not be None.".into())) };
        let Some(mut t) = self.store().resource_get(TYPE, type_id).await? else {
            return Err(Error::NotFound(format!("Volume type {type_id} could not be found.")));
        };
        if associate {
            if !t["qos_specs_id"].is_null() && t["qos_specs_id"] != json!(id) {
                return Err(Error::BadRequest(format!("Type {type_id} is already associated with another qos specs: {}", t["qos_specs_id"])));
            }
            t["qos_specs_id"] = json!(id);
        } else if t["qos_specs_id"] == json!(id) {
            t["qos_specs_id"] = Value::Null;
        }
        self.store().resource_update(TYPE, type_id, &t).await?;
        Ok(())
    }

    pub async fn qos_disassociate_all(&self, id: &str) -> Result<()> {
        for mut t in self.qos_associations(id).await? {
            t["qos_specs_id"] = Value::Null;
            self.store().resource_update(TYPE, t["id"].as_str().unwrap_or_default(), &t).await?;
        }
        Ok(())
    }

    pub async fn qos_delete(&self, id: &str, force: bool) -> Result<()> {
        let assoc = self.qos_associations(id).await?;
        if !assoc.is_empty() {
            if !force {
                return Err(Error::BadRequest(format!("QoS Specs {id} is still associated with entities.")));
            }
            self.qos_disassociate_all(id).await?;
        }
        self.store().resource_delete(QOS, id).await?;
        Ok(())
    }

    // ---------------------------------------------------------------- volumes

    /// A volume the caller may see.
    pub async fn volume_get(&self, caller: &Caller<'_>, id: &str) -> Result<Value> {
        match self.store().resource_get(VOLUME, id).await? {
            Some(v) if caller.can_see(&v) => Ok(v),
            _ => Err(not_found("Volume", id)),
        }
    }

    /// The volumes the caller may list: its project's, or with `all_tenants` (admins) everyone's.
    pub async fn volume_list(&self, caller: &Caller<'_>, all_tenants: bool, project: Option<&str>) -> Result<Vec<Value>> {
        if caller.is_admin && all_tenants {
            let all = self.store().resource_list(VOLUME, None).await?;
            return Ok(match project {
                Some(p) => all.into_iter().filter(|v| v["project_id"] == json!(p)).collect(),
                None => all,
            });
        }
        self.store().resource_list(VOLUME, Some(caller.project())).await
    }

    /// The attachments of a volume.
    pub async fn attachments_of(&self, volume_id: &str) -> Result<Vec<Value>> {
        self.store().resource_list_by_parent(ATTACHMENT, volume_id).await
    }

    async fn image_get(&self, caller: &Caller<'_>, image_id: &str) -> Result<Value> {
        let url = format!("{}/v2/images/{image_id}", self.config().image_url);
        let invalid = || Error::BadRequest("Invalid image identifier or unable to access requested image.".to_string());
        let resp = self.inner.http.get(&url).header("x-auth-token", &caller.token).send().await.map_err(|e| Error::Unavailable(format!("image service: {e}")))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND || resp.status() == reqwest::StatusCode::FORBIDDEN {
            return Err(invalid());
        }
        if !resp.status().is_success() {
            return Err(Error::Unavailable(format!("image service answered {}", resp.status())));
        }
        resp.json::<Value>().await.map_err(|_| invalid())
    }

    /// Creates a volume: validates, checks quotas, schedules, records it `creating` and asks the backend.
    pub async fn volume_create(&self, caller: &Caller<'_>, body: &Value) -> Result<Value> {
        self.volume_create_with(caller, body, &["available"]).await
    }

    /// [`Volume::volume_create`], into a group in one of `group_statuses` when the body names one (a group being
    /// made from a source takes its volumes while `creating`).
    async fn volume_create_with(&self, caller: &Caller<'_>, body: &Value, group_statuses: &[&str]) -> Result<Value> {
        let snapshot = match str_of(body, "snapshot_id") {
            Some(id) => Some(self.snapshot_get(caller, id).await?),
            None => None,
        };
        let source = match str_of(body, "source_volid") {
            Some(id) => Some(self.volume_get(caller, id).await?),
            None => None,
        };
        let backup = match str_of(body, "backup_id") {
            Some(id) => Some(self.backup_get(caller, id).await?),
            None => None,
        };
        let image_ref = str_of(body, "imageRef").or(str_of(body, "image_id")).map(str::to_string);
        let size = match body.get("size") {
            None | Some(Value::Null) => match (&snapshot, &source, &backup) {
                (Some(s), _, _) => s["size"].as_i64().unwrap_or(1),
                (_, Some(v), _) => v["size"].as_i64().unwrap_or(1),
                (_, _, Some(b)) => b["size"].as_i64().unwrap_or(1),
                _ => return Err(Error::BadRequest("Invalid input for field/attribute size. Value: None. size must be an integer and greater than 0".into())),
            },
            Some(v) => parse_size(v, "size")?,
        };
        if let Some(s) = &snapshot {
            if s["status"] != json!("available") {
                return Err(Error::BadRequest("Invalid snapshot: Originating snapshot status must be one of 'available' values".to_string()));
            }
            let ss = s["size"].as_i64().unwrap_or(0);
            if size < ss {
                return Err(Error::BadRequest(format!("Invalid input received: Volume size '{size}'GB cannot be smaller than the snapshot size {ss}GB. They must be >= original snapshot size.")));
            }
        }
        if let Some(v) = &source {
            if !["available", "in-use"].contains(&v["status"].as_str().unwrap_or("")) {
                return Err(Error::BadRequest("Invalid volume: Unable to create a volume from an originating source volume when its status is not 'available' or 'in-use'".into()));
            }
            let vs = v["size"].as_i64().unwrap_or(0);
            if size < vs {
                return Err(Error::BadRequest(format!("Invalid input received: Volume size '{size}'GB cannot be smaller than original volume size {vs}GB. They must be >= original volume size.")));
            }
        }
        let image = match &image_ref {
            Some(id) => {
                let image = self.image_get(caller, id).await?;
                if image["status"] != json!("active") {
                    return Err(Error::BadRequest(format!("Invalid image identifier or unable to access requested image. Image {id} is not active.")));
                }
                let min_disk = image["min_disk"].as_i64().unwrap_or(0);
                if size < min_disk {
                    return Err(Error::BadRequest(format!("Invalid input received: Volume size {size}GB cannot be smaller than the image minDisk size {min_disk}GB.")));
                }
                let bytes = image["size"].as_i64().unwrap_or(0);
                if bytes > size << 30 {
                    return Err(Error::BadRequest(format!("Invalid input received: Size of specified image {}GB is larger than volume size {size}GB.", (bytes + (1 << 30) - 1) >> 30)));
                }
                Some(image)
            }
            None => None,
        };
        let vtype = match str_of(body, "volume_type") {
            Some(t) => self.type_get(caller, t).await.map_err(|_| Error::NotFound(format!("Volume type with name {t} could not be found.")))?,
            None => match (&source, &snapshot) {
                (Some(v), _) | (None, Some(v)) => match self.store().resource_get(TYPE, v["volume_type_id"].as_str().unwrap_or("")).await? {
                    Some(t) => t,
                    None => self.type_default().await?,
                },
                _ => self.type_default().await?,
            },
        };
        let group = match str_of(body, "group_id").filter(|g| !g.is_empty()) {
            Some(g) => Some(self.group_for_volume(caller, g, vtype["id"].as_str().unwrap_or_default(), group_statuses).await?),
            None => None,
        };
        let encrypted = self.store().resource_get(ENCRYPTION, vtype["id"].as_str().unwrap_or_default()).await?.is_some();
        let name = text_field(body, &["name", "display_name"], 255)?.unwrap_or(Value::Null);
        let description = text_field(body, &["description", "display_description"], 255)?.unwrap_or(Value::Null);
        let metadata = match body.get("metadata") {
            None | Some(Value::Null) => Map::new(),
            Some(m) => parse_metadata(m)?,
        };
        let multiattach = match body.get("multiattach") {
            None | Some(Value::Null) => vtype["extra_specs"]["multiattach"] == json!("<is> True"),
            Some(v) => parse_bool_value(v).ok_or_else(|| Error::BadRequest(format!("Invalid value '{v}' for multiattach")))?,
        };
        let zones = self.availability_zones().await?;
        let zone = match str_of(body, "availability_zone") {
            Some(z) => {
                if !zones.iter().any(|(name, _)| name == z) {
                    return Err(Error::BadRequest(format!("Invalid input received: Availability zone '{z}' is invalid.")));
                }
                z.to_string()
            }
            None => match (&source, &snapshot) {
                _ if group.is_some() => group.as_ref().and_then(|g| g["availability_zone"].as_str()).unwrap_or_default().to_string(),
                (Some(v), _) => v["availability_zone"].as_str().unwrap_or_default().to_string(),
                (None, Some(s)) => self.store().resource_get(VOLUME, s["volume_id"].as_str().unwrap_or("")).await?
                    .and_then(|v| v["availability_zone"].as_str().map(str::to_string))
                    .unwrap_or_else(|| self.config().default_availability_zone.clone()),
                _ => self.config().default_availability_zone.clone(),
            },
        };
        let limits = self.quota_limits(caller.project()).await?;
        let per_volume = limits.get("per_volume_gigabytes").copied().unwrap_or(-1);
        if per_volume >= 0 && size > per_volume {
            return Err(Error::OverQuota(format!("VolumeSizeExceedsLimit: Requested volume size {size}G is larger than maximum allowed limit {per_volume}G.")));
        }
        self.quota_check(caller.project(), &[("volumes", 1), ("gigabytes", size)]).await?;

        let id = new_id();
        let created_at = now();
        let mut image_meta = Value::Null;
        if let Some(image) = &image {
            let mut m = Map::new();
            for key in ["checksum", "container_format", "disk_format", "min_disk", "min_ram", "size"] {
                if let Some(v) = image.get(key).filter(|v| !v.is_null()) {
                    m.insert(key.into(), Value::String(v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())));
                }
            }
            m.insert("image_id".into(), image["id"].clone());
            m.insert("image_name".into(), image.get("name").cloned().unwrap_or(Value::Null));
            image_meta = Value::Object(m);
        } else if let Some(src) = source.as_ref().or(snapshot.as_ref()) {
            let vol = if src.get("volume_id").is_some() {
                self.store().resource_get(VOLUME, src["volume_id"].as_str().unwrap_or("")).await?
            } else {
                Some(src.clone())
            };
            image_meta = vol.map(|v| v["volume_image_metadata"].clone()).unwrap_or(Value::Null);
        }
        let bootable = !image_meta.is_null();
        let mut doc = json!({
            "id": id,
            "project_id": caller.project(),
            "user_id": caller.ctx.user_id,
            "name": name,
            "description": description,
            "size": size,
            "status": "creating",
            "attach_status": "detached",
            "availability_zone": zone,
            "volume_type_id": vtype["id"],
            "volume_type": vtype["name"],
            "snapshot_id": snapshot.as_ref().map(|s| s["id"].clone()).unwrap_or(Value::Null),
            "source_volid": source.as_ref().map(|v| v["id"].clone()).unwrap_or(Value::Null),
            "backup_id": backup.as_ref().map(|b| b["id"].clone()).unwrap_or(Value::Null),
            "metadata": metadata,
            "volume_image_metadata": image_meta,
            "bootable": bootable,
            "multiattach": multiattach,
            "encrypted": encrypted,
            "group_id": group.as_ref().map(|g| g["id"].clone()).unwrap_or(Value::Null),
            "host": null,
            "migration_status": null,
            "created_at": created_at,
            "updated_at": null,
        });

        // Where the data lives decides the backend: a clone or snapshot copy stays next to its source.
        let host = match (&source, &snapshot) {
            (Some(v), _) => v["host"].as_str().map(str::to_string),
            (None, Some(s)) => self.store().resource_get(VOLUME, s["volume_id"].as_str().unwrap_or("")).await?
                .and_then(|v| v["host"].as_str().map(str::to_string)),
            _ => {
                let specs: BTreeMap<String, String> = vtype["extra_specs"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
                    .unwrap_or_default();
                let backends = self.backends().await?;
                let req = scheduler::Request { size_gb: size, availability_zone: Some(zone.clone()), extra_specs: specs };
                scheduler::select(&backends, &req).first().map(|b| format!("{}#{}", b.host, b.backend_name))
            }
        };
        let Some(host) = host else {
            doc["status"] = json!("error");
            self.store().resource_insert(VOLUME, &id, caller.project(), "", &doc).await?;
            tracing::warn!(volume = %id, "no valid backend was found");
            self.message_record(caller.project(), &id, "VOLUME_VOLUME_001_002", "schedule allocate volume:Could not find any available weighted backend.").await?;
            return Ok(doc);
        };
        doc["host"] = json!(host);
        self.store().resource_insert(VOLUME, &id, caller.project(), "", &doc).await?;

        if let Some(b) = backup {
            self.start_restore(caller, &b, &doc).await?;
            return Ok(doc);
        }
        let source = if let Some(s) = &snapshot {
            VolumeSource::Snapshot { snapshot_id: s["id"].as_str().unwrap_or_default().into() }
        } else if let Some(v) = &source {
            VolumeSource::Volume { volume_id: v["id"].as_str().unwrap_or_default().into() }
        } else if let Some(image) = &image {
            VolumeSource::Image {
                image_url: self.config().image_url.clone(),
                image_id: image["id"].as_str().unwrap_or_default().into(),
                disk_format: image["disk_format"].as_str().unwrap_or("raw").into(),
                auth_token: Secret(caller.token.clone()),
            }
        } else {
            VolumeSource::Empty
        };
        let msg = volume_rpc::CreateVolume { volume_id: id.clone(), size_gb: size, source };
        self.dispatch(&host, msg, move |me, outcome| async move {
            let status = if outcome.is_ok() { "available" } else { "error" };
            let mut changes = json!({"status": status});
            if outcome.is_ok() {
                changes["launched_at"] = json!(now());
            }
            me.finish(VOLUME, &id, "creating", changes).await?;
            Ok(())
        });
        Ok(doc)
    }

    pub async fn volume_update(&self, caller: &Caller<'_>, id: &str, body: &Value) -> Result<Value> {
        let mut v = self.volume_get(caller, id).await?;
        let Some(obj) = body.as_object() else { return Err(Error::BadRequest("Malformed request body".into())) };
        if obj.is_empty() {
            return Err(Error::BadRequest("Invalid input received: No volume attributes to update.".into()));
        }
        if let Some(n) = text_field(body, &["name", "display_name"], 255)? {
            v["name"] = n;
        }
        if let Some(d) = text_field(body, &["description", "display_description"], 255)? {
            v["description"] = d;
        }
        if let Some(m) = body.get("metadata") {
            v["metadata"] = Value::Object(parse_metadata(m)?);
        }
        v["updated_at"] = json!(now());
        self.store().resource_update(VOLUME, id, &v).await?;
        Ok(v)
    }

    /// Deletes a volume (`cascade`: its snapshots too; `force`: whatever its status, as `os-force_delete`).
    pub async fn volume_delete(&self, caller: &Caller<'_>, id: &str, cascade: bool, force: bool) -> Result<()> {
        let v = self.volume_get(caller, id).await?;
        if !force {
            if v["attach_status"] == json!("attached") || !self.attachments_of(id).await?.is_empty() {
                return Err(Error::BadRequest("Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer.".to_string()));
            }
            if !DELETABLE.contains(&v["status"].as_str().unwrap_or("")) {
                return Err(Error::BadRequest("Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer.".to_string()));
            }
        }
        let snapshots = self.store().resource_list_by_parent(SNAPSHOT, id).await?;
        if !snapshots.is_empty() {
            if !cascade && !force {
                return Err(Error::BadRequest(format!("Invalid volume: Volume {id} still has {} dependent snapshots.", snapshots.len())));
            }
            if snapshots.iter().any(|s| !["available", "error"].contains(&s["status"].as_str().unwrap_or(""))) && !force {
                return Err(Error::BadRequest("Invalid volume: Snapshot of the volume is not in an available or error status.".into()));
            }
        }
        let status = v["status"].as_str().unwrap_or("").to_string();
        let mut allowed: Vec<&str> = DELETABLE.to_vec();
        if force {
            allowed = VOLUME_STATUSES.to_vec();
        }
        let v = self.transition(VOLUME, &v, &allowed, "deleting", json!({}), |_| Error::BadRequest(format!("Invalid volume: Volume status must be available or error, but current status is: {status}."))).await?;
        for a in self.attachments_of(id).await? {
            self.store().resource_delete(ATTACHMENT, a["id"].as_str().unwrap_or_default()).await?;
        }
        for s in &snapshots {
            let sid = s["id"].as_str().unwrap_or_default().to_string();
            let mut s = s.clone();
            s["status"] = json!("deleting");
            self.store().resource_update(SNAPSHOT, &sid, &s).await?;
        }
        let Some(host) = v["host"].as_str().map(str::to_string) else {
            for s in &snapshots {
                self.store().resource_delete(SNAPSHOT, s["id"].as_str().unwrap_or_default()).await?;
            }
            self.store().resource_delete(VOLUME, id).await?;
            return Ok(());
        };
        let id = id.to_string();
        let snapshot_ids: Vec<String> = snapshots.iter().filter_map(|s| s["id"].as_str().map(str::to_string)).collect();
        let me = self.clone();
        tokio::spawn(async move {
            let server = host.split('#').next().unwrap_or(&host).to_string();
            let timeout = me.inner.config.call_timeout;
            for sid in &snapshot_ids {
                let msg = volume_rpc::DeleteSnapshot { snapshot_id: sid.clone() };
                if me.inner.bus.call(&Target::server(VOLUME_TOPIC, &server), &msg, timeout).await.is_ok() {
                    let _ = me.store().resource_delete(SNAPSHOT, sid).await;
                } else {
                    let _ = me.finish(SNAPSHOT, sid, "deleting", json!({"status": "error_deleting"})).await;
                }
            }
            let msg = volume_rpc::DeleteVolume { volume_id: id.clone() };
            match me.inner.bus.call(&Target::server(VOLUME_TOPIC, &server), &msg, timeout).await {
                Ok(()) => {
                    let _ = me.store().resource_delete(VOLUME, &id).await;
                }
                Err(error) => {
                    tracing::warn!(%error, volume = %id, "volume delete failed");
                    let _ = me.finish(VOLUME, &id, "deleting", json!({"status": "error_deleting"})).await;
                }
            }
        });
        Ok(())
    }

    /// Replaces (`replace`) or merges a volume's or snapshot's metadata; the resulting metadata.
    pub async fn metadata_set(&self, caller: &Caller<'_>, kind: &str, id: &str, m: &Value, replace: bool) -> Result<Map<String, Value>> {
        let mut doc = self.get_kind(caller, kind, id).await?;
        let m = parse_metadata(m)?;
        let current = doc["metadata"].as_object().cloned().unwrap_or_default();
        let mut new = if replace { Map::new() } else { current };
        for (k, v) in m {
            new.insert(k, v);
        }
        if kind == VOLUME
            && let Some(ro) = doc["metadata"].get("readonly").cloned()
            && replace
            && !new.contains_key("readonly")
        {
            // The readonly flag is the administrator's (upstream's admin metadata), not the user's to drop.
            new.insert("readonly".into(), ro);
        }
        doc["metadata"] = Value::Object(new.clone());
        doc["updated_at"] = json!(now());
        self.store().resource_update(kind, id, &doc).await?;
        Ok(new)
    }

    pub async fn metadata_delete(&self, caller: &Caller<'_>, kind: &str, id: &str, key: &str) -> Result<()> {
        let mut doc = self.get_kind(caller, kind, id).await?;
        if doc["metadata"].as_object_mut().and_then(|m| m.remove(key)).is_none() {
            return Err(Error::NotFound("Metadata item was not found".to_string()));
        }
        doc["updated_at"] = json!(now());
        self.store().resource_update(kind, id, &doc).await?;
        Ok(())
    }

    pub async fn get_kind(&self, caller: &Caller<'_>, kind: &str, id: &str) -> Result<Value> {
        match kind {
            SNAPSHOT => self.snapshot_get(caller, id).await,
            BACKUP => self.backup_get(caller, id).await,
            _ => self.volume_get(caller, id).await,
        }
    }

    pub async fn extend(&self, caller: &Caller<'_>, id: &str, new_size: &Value, allow_in_use: bool) -> Result<()> {
        let v = self.volume_get(caller, id).await?;
        let new_size = parse_size(new_size, "new_size")?;
        let size = v["size"].as_i64().unwrap_or(0);
        let status = v["status"].as_str().unwrap_or("").to_string();
        let allowed: &[&str] = if allow_in_use { &["available", "in-use"] } else { &["available"] };
        if !allowed.contains(&status.as_str()) {
            return Err(Error::BadRequest(format!("Invalid volume: Volume status must be 'available'{} to extend. Currently {status}.", if allow_in_use { " or 'in-use'" } else { "" })));
        }
        if new_size <= size {
            return Err(Error::BadRequest(format!("Invalid input received: New size for extend must be greater than current size. (current: {size}, extended: {new_size}).")));
        }
        let limits = self.quota_limits(caller.project()).await?;
        let per_volume = limits.get("per_volume_gigabytes").copied().unwrap_or(-1);
        if per_volume >= 0 && new_size > per_volume {
            return Err(Error::OverQuota(format!("VolumeSizeExceedsLimit: Requested volume size {new_size}G is larger than maximum allowed limit {per_volume}G.")));
        }
        self.quota_check(caller.project(), &[("gigabytes", new_size - size)]).await?;
        let v = self.transition(VOLUME, &v, allowed, "extending", json!({"previous_status": status}), |s| Error::BadRequest(format!("Invalid volume: Volume status must be 'available' to extend. Currently {s}."))).await?;
        let host = v["host"].as_str().unwrap_or_default().to_string();
        let id = id.to_string();
        self.dispatch(&host, volume_rpc::ExtendVolume { volume_id: id.clone(), new_size_gb: new_size }, move |me, outcome| async move {
            let changes = match outcome {
                Ok(()) => json!({"status": status, "size": new_size}),
                Err(_) => json!({"status": "error_extending"}),
            };
            me.finish(VOLUME, &id, "extending", changes).await?;
            Ok(())
        });
        Ok(())
    }

    pub async fn set_flag(&self, caller: &Caller<'_>, id: &str, flag: &str, value: &Value) -> Result<()> {
        let mut v = self.volume_get(caller, id).await?;
        let b = parse_bool_value(value).ok_or_else(|| Error::BadRequest(format!("Invalid value '{value}' for {flag}. Accepted values: True or False.")))?;
        match flag {
            "bootable" => {
                if !["available", "in-use"].contains(&v["status"].as_str().unwrap_or("")) {
                    return Err(Error::BadRequest("Invalid volume: Volume status must be available or in-use.".into()));
                }
                v["bootable"] = json!(b);
            }
            _ => {
                if !["available", "in-use"].contains(&v["status"].as_str().unwrap_or("")) {
                    return Err(Error::BadRequest("Invalid volume: Volume status must be available or in-use.".into()));
                }
                v["metadata"]["readonly"] = json!(if b { "True" } else { "False" });
            }
        }
        v["updated_at"] = json!(now());
        self.store().resource_update(VOLUME, id, &v).await?;
        Ok(())
    }

    /// Admin: sets a volume's status (and attach/migration status) as `os-reset_status` does.
    pub async fn reset_status(&self, caller: &Caller<'_>, kind: &str, id: &str, body: &Value) -> Result<()> {
        let mut doc = self.get_kind(caller, kind, id).await?;
        let mut changed = false;
        if let Some(s) = body.get("status") {
            let s = s.as_str().unwrap_or("").to_lowercase();
            let valid: &[&str] = if kind == SNAPSHOT {
                &["creating", "available", "deleting", "error", "error_deleting", "backing-up", "restoring"]
            } else if kind == BACKUP {
                &["available", "error"]
            } else {
                VOLUME_STATUSES
            };
            if !valid.contains(&s.as_str()) {
                return Err(Error::BadRequest("Must specify a valid status".to_string()));
            }
            doc["status"] = json!(s);
            changed = true;
        }
        if let Some(a) = body.get("attach_status") {
            let a = a.as_str().unwrap_or("");
            if !["attached", "detached"].contains(&a) {
                return Err(Error::BadRequest("Must specify a valid attach status".to_string()));
            }
            doc["attach_status"] = json!(a);
            changed = true;
        }
        if let Some(p) = body.get("progress").filter(|_| kind == SNAPSHOT) {
            doc["progress"] = p.clone();
        }
        if let Some(m) = body.get("migration_status") {
            doc["migration_status"] = m.clone();
            changed = true;
        }
        if !changed {
            return Err(Error::BadRequest("Must specify 'status', 'attach_status' or 'migration_status' for update.".into()));
        }
        doc["updated_at"] = json!(now());
        self.store().resource_update(kind, id, &doc).await?;
        Ok(())
    }

    /// `os-set_image_metadata`: merges keys into the volume's image metadata.
    pub async fn image_metadata_set(&self, caller: &Caller<'_>, id: &str, m: &Value) -> Result<Map<String, Value>> {
        let mut v = self.volume_get(caller, id).await?;
        let m = parse_metadata(m)?;
        let mut current = v["volume_image_metadata"].as_object().cloned().unwrap_or_default();
        for (k, val) in m {
            current.insert(k, val);
        }
        v["volume_image_metadata"] = Value::Object(current.clone());
        self.store().resource_update(VOLUME, id, &v).await?;
        Ok(current)
    }

    pub async fn image_metadata_unset(&self, caller: &Caller<'_>, id: &str, key: &str) -> Result<()> {
        let mut v = self.volume_get(caller, id).await?;
        if v["volume_image_metadata"].as_object_mut().and_then(|m| m.remove(key)).is_none() {
            return Err(Error::NotFound(format!("Glance metadata for volume {id} with key {key} could not be found.")));
        }
        self.store().resource_update(VOLUME, id, &v).await?;
        Ok(())
    }

    // ---------------------------------------------------------------- volume transfers

    fn key_hash(salt: &str, key: &str) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("{salt}{key}").as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Offers a volume to another project: the volume waits (`awaiting-transfer`) until the transfer is accepted
    /// with its key or deleted. The key is shown once and kept only as a salted hash.
    pub async fn transfer_create(&self, caller: &Caller<'_>, body: &Value) -> Result<Value> {
        let vid = str_of(body, "volume_id").ok_or_else(|| Error::BadRequest("Incorrect request body format: volume_id is required".into()))?.to_string();
        let v = self.volume_get(caller, &vid).await?;
        let name = text_field(body, &["name"], 255)?.unwrap_or(Value::Null);
        let status = v["status"].as_str().unwrap_or("").to_string();
        self.transition(VOLUME, &v, &["available"], "awaiting-transfer", json!({}), |s| Error::BadRequest(format!("Invalid volume: Status of volume {vid} must be available, but current status is: {s}."))).await?;
        let key: String = {
            use rand::Rng;
            let mut r = rand::rng();
            (0..16).map(|_| format!("{:x}", r.random_range(0..16u8))).collect()
        };
        let salt = new_id();
        let id = new_id();
        let doc = json!({
            "id": id, "volume_id": vid, "name": name, "project_id": v["project_id"], "salt": salt,
            "crypt_hash": Self::key_hash(&salt, &key), "created_at": now(), "status": "", "previous_status": status,
        });
        self.store().resource_insert(TRANSFER, &id, v["project_id"].as_str().unwrap_or_default(), &vid, &doc).await?;
        let mut out = doc;
        out["auth_key"] = json!(key);
        Ok(out)
    }

    pub async fn transfer_get(&self, caller: &Caller<'_>, id: &str) -> Result<Value> {
        match self.store().resource_get(TRANSFER, id).await? {
            Some(t) if caller.can_see(&t) => Ok(t),
            _ => Err(Error::NotFound(format!("Transfer {id} could not be found."))),
        }
    }

    pub async fn transfer_list(&self, caller: &Caller<'_>, all_tenants: bool) -> Result<Vec<Value>> {
        let project = if caller.is_admin && all_tenants { None } else { Some(caller.project()) };
        self.store().resource_list(TRANSFER, project).await
    }

    pub async fn transfer_delete(&self, caller: &Caller<'_>, id: &str) -> Result<()> {
        let t = self.transfer_get(caller, id).await?;
        self.store().resource_delete(TRANSFER, id).await?;
        let vid = t["volume_id"].as_str().unwrap_or_default();
        if let Some(v) = self.store().resource_get(VOLUME, vid).await? {
            self.transition(VOLUME, &v, &["awaiting-transfer"], "available", json!({}), |_| Error::Conflict("volume changed".into())).await.ok();
        }
        Ok(())
    }

    /// Accepts a transfer with its key: the volume (and its snapshots) move to the caller's project.
    pub async fn transfer_accept(&self, caller: &Caller<'_>, id: &str, key: &str) -> Result<Value> {
        let Some(t) = self.store().resource_get(TRANSFER, id).await? else {
            return Err(Error::NotFound(format!("Transfer {id} could not be found.")));
        };
        let salt = t["salt"].as_str().unwrap_or_default();
        if t["crypt_hash"].as_str() != Some(Self::key_hash(salt, key).as_str()) {
            return Err(Error::BadRequest(format!("Invalid auth key: Attempt to transfer {id} with invalid auth key.")));
        }
        let vid = t["volume_id"].as_str().unwrap_or_default().to_string();
        let v = self.store().resource_get(VOLUME, &vid).await?.ok_or_else(|| not_found("Volume", &vid))?;
        let size = v["size"].as_i64().unwrap_or(0);
        let snapshots = self.store().resource_list_by_parent(SNAPSHOT, &vid).await?;
        let snap_gb: i64 = snapshots.iter().map(|s| s["size"].as_i64().unwrap_or(0)).sum();
        self.quota_check(caller.project(), &[("volumes", 1), ("gigabytes", size + snap_gb), ("snapshots", snapshots.len() as i64)]).await?;
        if !self.store().resource_delete(TRANSFER, id).await? {
            return Err(Error::NotFound(format!("Transfer {id} could not be found.")));
        }
        let mut moved = v.clone();
        moved["project_id"] = json!(caller.project());
        moved["user_id"] = json!(caller.ctx.user_id);
        moved["status"] = json!("available");
        moved["updated_at"] = json!(now());
        self.store().resource_set_project(VOLUME, &vid, caller.project(), &moved).await?;
        for mut s in snapshots {
            s["project_id"] = json!(caller.project());
            s["user_id"] = json!(caller.ctx.user_id);
            self.store().resource_set_project(SNAPSHOT, s["id"].as_str().unwrap_or_default(), caller.project(), &s).await?;
        }
        Ok(json!({"id": id, "name": t["name"], "volume_id": vid, "project_id": caller.project()}))
    }

    // ---------------------------------------------------------------- user messages

    /// Records a user message about a resource (upstream's `messages` table), kept for 30 days.
    async fn message_record(&self, project: &str, resource: &str, event_id: &str, text: &str) -> Result<()> {
        let id = new_id();
        let now = chrono::Utc::now();
        let doc = json!({
            "id": id, "project_id": project, "request_id": format!("req-{}", new_id()), "message_level": "ERROR",
            "event_id": event_id, "user_message": text, "resource_type": "VOLUME", "resource_uuid": resource,
            "created_at": now.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
            "guaranteed_until": (now + chrono::Duration::days(30)).format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
            "status": "",
        });
        self.store().resource_insert(MESSAGE, &id, project, resource, &doc).await?;
        Ok(())
    }

    pub async fn message_list(&self, caller: &Caller<'_>) -> Result<Vec<Value>> {
        let project = if caller.is_admin { None } else { Some(caller.project()) };
        self.store().resource_list(MESSAGE, project).await
    }

    pub async fn message_get(&self, caller: &Caller<'_>, id: &str) -> Result<Value> {
        match self.store().resource_get(MESSAGE, id).await? {
            Some(m) if caller.can_see(&m) => Ok(m),
            _ => Err(Error::NotFound(format!("Message {id} could not be found."))),
        }
    }

    pub async fn message_delete(&self, caller: &Caller<'_>, id: &str) -> Result<()> {
        self.message_get(caller, id).await?;
        self.store().resource_delete(MESSAGE, id).await?;
        Ok(())
    }

    /// Per-host totals for `os-hosts/{host}`: (project, volume count, volume GiB, snapshot count, snapshot GiB).
    pub async fn host_usage(&self, host: &str) -> Result<Vec<(String, i64, i64, i64, i64)>> {
        let on_host = |v: &Value| v["host"].as_str().is_some_and(|h| h.split('@').next() == Some(host) || h.split('#').next() == Some(host));
        let volumes: Vec<Value> = self.store().resource_list(VOLUME, None).await?.into_iter().filter(on_host).collect();
        let snapshots = self.store().resource_list(SNAPSHOT, None).await?;
        let mut per: BTreeMap<String, (i64, i64, i64, i64)> = BTreeMap::new();
        for v in &volumes {
            let e = per.entry(v["project_id"].as_str().unwrap_or_default().to_string()).or_default();
            e.0 += 1;
            e.1 += v["size"].as_i64().unwrap_or(0);
        }
        for s in &snapshots {
            if volumes.iter().any(|v| v["id"] == s["volume_id"]) {
                let e = per.entry(s["project_id"].as_str().unwrap_or_default().to_string()).or_default();
                e.2 += 1;
                e.3 += s["size"].as_i64().unwrap_or(0);
            }
        }
        Ok(per.into_iter().map(|(p, (a, b, c, d))| (p, a, b, c, d)).collect())
    }

    // ---------------------------------------------------------------- legacy attach actions

    fn invalid_status(action: &str, status: &str, want: &str) -> Error {
        Error::BadRequest(format!("Invalid volume: Volume status must be {want} to {action}, but current status is: {status}."))
    }

    pub async fn reserve(&self, caller: &Caller<'_>, id: &str) -> Result<()> {
        let v = self.volume_get(caller, id).await?;
        let allowed: &[&str] = if v["multiattach"] == json!(true) { &["available", "in-use"] } else { &["available"] };
        self.transition(VOLUME, &v, allowed, "attaching", json!({}), |s| Self::invalid_status("reserve", s, "available")).await?;
        Ok(())
    }

    pub async fn unreserve(&self, caller: &Caller<'_>, id: &str) -> Result<()> {
        let v = self.volume_get(caller, id).await?;
        let back = if self.attachments_of(id).await?.iter().any(|a| a["attach_status"] == json!("attached")) { "in-use" } else { "available" };
        self.transition(VOLUME, &v, &["attaching", "reserved"], back, json!({}), |s| Self::invalid_status("unreserve", s, "attaching")).await?;
        Ok(())
    }

    pub async fn begin_detaching(&self, caller: &Caller<'_>, id: &str) -> Result<()> {
        let v = self.volume_get(caller, id).await?;
        self.transition(VOLUME, &v, &["in-use"], "detaching", json!({}), |s| Self::invalid_status("begin detaching", s, "in-use")).await?;
        Ok(())
    }

    pub async fn roll_detaching(&self, caller: &Caller<'_>, id: &str) -> Result<()> {
        let v = self.volume_get(caller, id).await?;
        if v["status"] == json!("detaching") {
            self.transition(VOLUME, &v, &["detaching"], "in-use", json!({}), |s| Self::invalid_status("roll detaching", s, "detaching")).await?;
        }
        Ok(())
    }

    /// `os-attach`: records an attachment to an instance (or host) and marks the volume in-use.
    pub async fn attach(&self, caller: &Caller<'_>, id: &str, body: &Value) -> Result<()> {
        let v = self.volume_get(caller, id).await?;
        let instance = str_of(body, "instance_uuid").map(str::to_string);
        let host_name = str_of(body, "host_name").map(str::to_string);
        if instance.is_none() && host_name.is_none() {
            return Err(Error::BadRequest("Invalid request to attach volume to an invalid target".into()));
        }
        let mountpoint = str_of(body, "mountpoint").ok_or_else(|| Error::BadRequest("Must specify 'mountpoint'".into()))?.to_string();
        let mode = str_of(body, "mode").unwrap_or("rw").to_string();
        if !["rw", "ro"].contains(&mode.as_str()) {
            return Err(Error::BadRequest("Invalid request to attach volume with an invalid mode. Attaching mode should be 'rw' or 'ro'".into()));
        }
        let allowed: &[&str] = if v["multiattach"] == json!(true) { &["available", "attaching", "reserved", "in-use"] } else { &["available", "attaching", "reserved"] };
        let attachment_id = new_id();
        let now = now();
        let v = self.transition(VOLUME, &v, allowed, "in-use", json!({"attach_status": "attached"}), |s| Self::invalid_status("attach", s, "available or attaching")).await?;
        let a = json!({
            "id": attachment_id, "volume_id": id, "instance_uuid": instance, "attached_host": host_name,
            "mountpoint": mountpoint, "attach_mode": mode, "attach_status": "attached", "status": "attached",
            "attach_time": now, "detach_time": null, "connector": null, "connection_info": null,
            "project_id": v["project_id"],
        });
        self.store().resource_insert(ATTACHMENT, &attachment_id, v["project_id"].as_str().unwrap_or_default(), id, &a).await?;
        Ok(())
    }

    /// `os-detach`: removes an attachment (the only one when none is named); the volume becomes available
    /// when it was the last.
    pub async fn detach(&self, caller: &Caller<'_>, id: &str, attachment_id: Option<&str>) -> Result<()> {
        let v = self.volume_get(caller, id).await?;
        let attachments = self.attachments_of(id).await?;
        let a = match attachment_id {
            Some(aid) => attachments.iter().find(|a| a["id"] == json!(aid)).cloned().ok_or_else(|| Error::NotFound(format!("Volume attachment {aid} could not be found.")))?,
            None if attachments.len() == 1 => attachments[0].clone(),
            None if attachments.is_empty() => {
                // Nothing left to detach (a forced detach came first): the volume is free again.
                let mut v = v;
                if ["in-use", "detaching", "attaching", "reserved", "error"].contains(&v["status"].as_str().unwrap_or("")) {
                    v["status"] = json!("available");
                    v["attach_status"] = json!("detached");
                    v["updated_at"] = json!(now());
                    self.store().resource_update(VOLUME, id, &v).await?;
                }
                return Ok(());
            }
            None => return Err(Error::BadRequest("Invalid volume: Volume has multiple attachments; specify attachment_id.".into())),
        };
        self.remove_attachment(&v, &a).await
    }

    /// `os-force_detach`: removes the named attachment, or every one, and makes the volume available.
    pub async fn force_detach(&self, caller: &Caller<'_>, id: &str, attachment_id: Option<&str>) -> Result<()> {
        let mut v = self.volume_get(caller, id).await?;
        let attachments = self.attachments_of(id).await?;
        for a in attachments.iter().filter(|a| attachment_id.is_none_or(|aid| a["id"] == json!(aid))) {
            // Forced: a backend that cannot withdraw its export does not keep the attachment.
            if a["connector"].is_object()
                && let Err(e) = self.terminate(&v, &a["connector"]).await
            {
                tracing::warn!(volume = %id, error = %e, "force-detach: the backend did not withdraw its export");
            }
            self.store().resource_delete(ATTACHMENT, a["id"].as_str().unwrap_or_default()).await?;
        }
        let left = self.attachments_of(id).await?;
        if left.is_empty() {
            v["status"] = json!("available");
            v["attach_status"] = json!("detached");
            v["updated_at"] = json!(now());
            self.store().resource_update(VOLUME, id, &v).await?;
        }
        Ok(())
    }

    async fn remove_attachment(&self, v: &Value, a: &Value) -> Result<()> {
        let vid = v["id"].as_str().unwrap_or_default();
        // The backend withdraws what it exported to the attachment's host first: a failure keeps the attachment.
        if a["connector"].is_object() {
            self.terminate(v, &a["connector"]).await?;
        }
        self.store().resource_delete(ATTACHMENT, a["id"].as_str().unwrap_or_default()).await?;
        let remaining = self.attachments_of(vid).await?;
        let attached = remaining.iter().any(|a| a["attach_status"] == json!("attached"));
        let status = if attached { "in-use" } else if remaining.is_empty() { "available" } else { "reserved" };
        let mut v = self.store().resource_get(VOLUME, vid).await?.ok_or_else(|| not_found("Volume", vid))?;
        v["status"] = json!(status);
        v["attach_status"] = json!(if attached { "attached" } else { "detached" });
        v["updated_at"] = json!(now());
        self.store().resource_update(VOLUME, vid, &v).await?;
        Ok(())
    }

    /// `os-initialize_connection`: the backend's connection info for the connector.
    pub async fn initialize_connection(&self, caller: &Caller<'_>, id: &str, connector: &Value) -> Result<Value> {
        let v = self.volume_get(caller, id).await?;
        if !connector.is_object() {
            return Err(Error::BadRequest("Must specify 'connector'".into()));
        }
        self.connection_info(&v, connector).await
    }

    /// `os-terminate_connection`: the backend withdraws what it exported for the connector.
    pub async fn terminate_connection(&self, caller: &Caller<'_>, id: &str, connector: &Value) -> Result<()> {
        let v = self.volume_get(caller, id).await?;
        if !connector.is_object() {
            return Err(Error::BadRequest("Must specify 'connector'".into()));
        }
        self.terminate(&v, connector).await
    }

    /// Has the volume's backend withdraw its export to `connector` (no backend, nothing exported).
    async fn terminate(&self, v: &Value, connector: &Value) -> Result<()> {
        let Some(host) = v["host"].as_str() else { return Ok(()) };
        let server = host.split('#').next().unwrap_or(host);
        let msg = volume_rpc::TerminateConnection { volume_id: v["id"].as_str().unwrap_or_default().into(), connector: connector.clone() };
        self.inner
            .bus
            .call(&Target::server(VOLUME_TOPIC, server), &msg, Duration::from_secs(60))
            .await
            .map_err(|e| Error::Unavailable(format!("Unable to terminate the volume connection: {e}")))
    }

    async fn connection_info(&self, v: &Value, connector: &Value) -> Result<Value> {
        let host = v["host"].as_str().ok_or_else(|| Error::BadRequest("Invalid volume: Volume has no backend.".into()))?;
        let server = host.split('#').next().unwrap_or(host);
        let msg = volume_rpc::InitializeConnection { volume_id: v["id"].as_str().unwrap_or_default().into(), connector: connector.clone() };
        let mut info = self
            .inner
            .bus
            .call(&Target::server(VOLUME_TOPIC, server), &msg, Duration::from_secs(60))
            .await
            .map_err(|e| Error::Unavailable(format!("Unable to fetch connection information from backend: {e}")))?;
        info["data"]["volume_id"] = v["id"].clone();
        info["data"]["access_mode"] = json!(if v["metadata"]["readonly"] == json!("True") { "ro" } else { "rw" });
        Ok(info)
    }

    // ---------------------------------------------------------------- attachments API (3.27+)

    pub async fn attachment_get(&self, caller: &Caller<'_>, id: &str) -> Result<Value> {
        match self.store().resource_get(ATTACHMENT, id).await? {
            Some(a) if caller.can_see(&a) => Ok(a),
            _ => Err(Error::NotFound(format!("Volume attachment {id} could not be found."))),
        }
    }

    pub async fn attachment_list(&self, caller: &Caller<'_>, all_tenants: bool) -> Result<Vec<Value>> {
        let project = if caller.is_admin && all_tenants { None } else { Some(caller.project()) };
        self.store().resource_list(ATTACHMENT, project).await
    }

    /// Creates an attachment: `reserved` without a connector, with one `attaching` and its connection info, as
    /// upstream's attachment_create. The volume becomes `reserved` (or stays `in-use` for multiattach).
    pub async fn attachment_create(&self, caller: &Caller<'_>, body: &Value) -> Result<Value> {
        let vid = str_of(body, "volume_uuid").ok_or_else(|| Error::BadRequest("Invalid input: volume_uuid is required".into()))?;
        let v = self.volume_get(caller, vid).await.map_err(|_| not_found("Volume", vid))?;
        let instance = str_of(body, "instance_uuid").map(str::to_string);
        let mode = str_of(body, "mode").unwrap_or("null").to_string();
        let mode = if mode == "null" { "rw".to_string() } else { mode };
        if !["rw", "ro"].contains(&mode.as_str()) {
            return Err(Error::BadRequest("Invalid attach mode; must be 'rw' or 'ro'".into()));
        }
        let status = v["status"].as_str().unwrap_or("").to_string();
        let existing = self.attachments_of(vid).await?;
        if v["multiattach"] != json!(true) && !existing.is_empty() && !(existing.len() == 1 && existing[0]["instance_uuid"] == json!(instance) && instance.is_some()) {
            return Err(Error::BadRequest(format!("Invalid volume: Volume {vid} status must be available or downloading to reserve, but the current status is {status}.")));
        }
        let allowed: &[&str] = &["available", "reserved", "in-use", "downloading"];
        let to = if status == "in-use" { "in-use" } else { "reserved" };
        let v = self.transition(VOLUME, &v, allowed, to, json!({}), |s| Error::BadRequest(format!("Invalid volume: Volume {vid} status must be available or downloading to reserve, but the current status is {s}."))).await?;
        let id = new_id();
        let mut a = json!({
            "id": id, "volume_id": vid, "instance_uuid": instance, "attached_host": null, "mountpoint": null,
            "attach_mode": mode, "attach_status": "reserved", "status": "reserved", "attach_time": null, "detach_time": null,
            "connector": null, "connection_info": null, "project_id": v["project_id"],
        });
        self.store().resource_insert(ATTACHMENT, &id, v["project_id"].as_str().unwrap_or_default(), vid, &a).await?;
        if let Some(connector) = body.get("connector").filter(|c| c.is_object()) {
            a = self.attachment_connect(&v, a, connector).await?;
        }
        Ok(a)
    }

    async fn attachment_connect(&self, v: &Value, mut a: Value, connector: &Value) -> Result<Value> {
        let info = self.connection_info(v, connector).await?;
        let mut info = info;
        info["data"]["attachment_id"] = a["id"].clone();
        a["connector"] = connector.clone();
        a["connection_info"] = info;
        a["attached_host"] = connector.get("host").cloned().unwrap_or(Value::Null);
        a["mountpoint"] = connector.get("mountpoint").cloned().unwrap_or(Value::Null);
        a["attach_status"] = json!("attaching");
        a["status"] = json!("attaching");
        self.store().resource_update(ATTACHMENT, a["id"].as_str().unwrap_or_default(), &a).await?;
        let vid = v["id"].as_str().unwrap_or_default();
        if let Some(mut v) = self.store().resource_get(VOLUME, vid).await?
            && v["status"] == json!("reserved")
        {
            v["status"] = json!("attaching");
            v["updated_at"] = json!(now());
            self.store().resource_transition(VOLUME, vid, "reserved", &v).await?;
        }
        Ok(a)
    }

    /// Updates an attachment with the host's connector (upstream's attachment_update): connection info.
    pub async fn attachment_update(&self, caller: &Caller<'_>, id: &str, body: &Value) -> Result<Value> {
        let a = self.attachment_get(caller, id).await?;
        let connector = body.get("connector").filter(|c| c.is_object()).ok_or_else(|| Error::BadRequest("Invalid input: connector is required".into()))?;
        let vid = a["volume_id"].as_str().unwrap_or_default().to_string();
        let v = self.volume_get(caller, &vid).await?;
        if a["attach_status"] == json!("attached") {
            return Err(Error::BadRequest(format!("Invalid volume: Attachment {id} is already attached.")));
        }
        self.attachment_connect(&v, a, connector).await
    }

    /// Marks an attachment attached and the volume in-use (`os-complete`, 3.44).
    pub async fn attachment_complete(&self, caller: &Caller<'_>, id: &str) -> Result<()> {
        let mut a = self.attachment_get(caller, id).await?;
        let vid = a["volume_id"].as_str().unwrap_or_default().to_string();
        a["attach_status"] = json!("attached");
        a["status"] = json!("attached");
        a["attach_time"] = json!(now());
        self.store().resource_update(ATTACHMENT, id, &a).await?;
        let mut v = self.store().resource_get(VOLUME, &vid).await?.ok_or_else(|| not_found("Volume", &vid))?;
        v["status"] = json!("in-use");
        v["attach_status"] = json!("attached");
        v["updated_at"] = json!(now());
        self.store().resource_update(VOLUME, &vid, &v).await?;
        Ok(())
    }

    pub async fn attachment_delete(&self, caller: &Caller<'_>, id: &str) -> Result<()> {
        let a = self.attachment_get(caller, id).await?;
        let vid = a["volume_id"].as_str().unwrap_or_default();
        let v = self.store().resource_get(VOLUME, vid).await?.ok_or_else(|| not_found("Volume", vid))?;
        self.remove_attachment(&v, &a).await
    }

    // ---------------------------------------------------------------- image upload

    /// `os-volume_upload_image`: creates the image (with the caller's token) and has the backend upload into it.
    pub async fn upload_to_image(&self, caller: &Caller<'_>, id: &str, body: &Value) -> Result<Value> {
        let v = self.volume_get(caller, id).await?;
        let image_name = str_of(body, "image_name").filter(|n| !n.is_empty()).ok_or_else(|| Error::BadRequest("No image_name was specified in request.".into()))?.to_string();
        let force = body.get("force").and_then(parse_bool_value).unwrap_or(false);
        let disk_format = str_of(body, "disk_format").unwrap_or("raw").to_string();
        let container_format = str_of(body, "container_format").unwrap_or("bare").to_string();
        if !["raw", "vmdk", "vdi", "qcow2", "vhd", "vhdx", "ploop"].contains(&disk_format.as_str()) {
            return Err(Error::BadRequest(format!("Invalid disk-format '{disk_format}' is specified. Allowed disk-formats are raw, vmdk, vdi, qcow2, vhd, vhdx, ploop.")));
        }
        let allowed: &[&str] = if force { &["available", "in-use"] } else { &["available"] };
        let status = v["status"].as_str().unwrap_or("").to_string();
        if !allowed.contains(&status.as_str()) {
            return Err(Error::BadRequest(format!("Invalid volume: Volume {id} status must be available{}, but current status is: {status}.", if force { " or in-use" } else { "" })));
        }
        let mut image = json!({"name": image_name, "disk_format": disk_format, "container_format": container_format, "min_disk": v["size"]});
        for key in ["visibility", "protected"] {
            if let Some(val) = body.get(key) {
                image[key] = val.clone();
            }
        }
        if let Some(m) = v["volume_image_metadata"].as_object() {
            for (k, val) in m {
                if !["checksum", "container_format", "disk_format", "min_disk", "size", "image_id", "image_name", "min_ram"].contains(&k.as_str()) {
                    image[k] = val.clone();
                }
            }
        }
        let url = format!("{}/v2/images", self.config().image_url);
        let resp = self.inner.http.post(&url).header("x-auth-token", &caller.token).json(&image).send().await.map_err(|e| Error::Unavailable(format!("image service: {e}")))?;
        let code = resp.status();
        let created: Value = resp.json().await.unwrap_or(Value::Null);
        if code == reqwest::StatusCode::PAYLOAD_TOO_LARGE || code == reqwest::StatusCode::FORBIDDEN && created.to_string().contains("quota") {
            return Err(Error::OverQuota("Image quota exceeded".to_string()));
        }
        if !code.is_success() {
            return Err(Error::BadRequest(format!("Failed to create the image: the image service answered {code}")));
        }
        let image_id = created["id"].as_str().unwrap_or_default().to_string();
        let v = match self.transition(VOLUME, &v, allowed, "uploading", json!({"previous_status": status}), |s| Error::BadRequest(format!("Invalid volume: Volume {id} status must be available, but current status is: {s}."))).await {
            Ok(v) => v,
            Err(e) => {
                let _ = self.inner.http.delete(format!("{url}/{image_id}")).header("x-auth-token", &caller.token).send().await;
                return Err(e);
            }
        };
        let host = v["host"].as_str().unwrap_or_default().to_string();
        let msg = volume_rpc::UploadToImage {
            volume_id: id.to_string(),
            image_url: self.config().image_url.clone(),
            image_id: image_id.clone(),
            disk_format: disk_format.clone(),
            auth_token: Secret(caller.token.clone()),
        };
        let vid = id.to_string();
        let back = status.clone();
        self.dispatch(&host, msg, move |me, _outcome| async move {
            me.finish(VOLUME, &vid, "uploading", json!({"status": back})).await?;
            Ok(())
        });
        let vtype = self.store().resource_get(TYPE, v["volume_type_id"].as_str().unwrap_or("")).await?;
        Ok(json!({
            "id": id,
            "updated_at": v["updated_at"],
            "status": "uploading",
            "display_description": v["description"],
            "size": v["size"],
            "volume_type": vtype,
            "image_id": image_id,
            "container_format": container_format,
            "disk_format": disk_format,
            "image_name": image_name,
        }))
    }

    /// `os-retype`: a type change that needs no data movement (same backend passes the new type's filters).
    pub async fn retype(&self, caller: &Caller<'_>, id: &str, body: &Value) -> Result<()> {
        let mut v = self.volume_get(caller, id).await?;
        let new = str_of(body, "new_type").ok_or_else(|| Error::BadRequest("New volume type must be specified.".into()))?;
        let t = self.type_get(caller, new).await?;
        if !["available", "in-use"].contains(&v["status"].as_str().unwrap_or("")) {
            return Err(Error::BadRequest("Invalid volume: Volume status must be available or in-use.".into()));
        }
        if t["id"] == v["volume_type_id"] {
            return Err(Error::BadRequest("Invalid volume type: New volume type must be different from the current one.".into()));
        }
        v["volume_type_id"] = t["id"].clone();
        v["volume_type"] = t["name"].clone();
        v["updated_at"] = json!(now());
        self.store().resource_update(VOLUME, id, &v).await?;
        Ok(())
    }

    // ---------------------------------------------------------------- snapshots

    pub async fn snapshot_get(&self, caller: &Caller<'_>, id: &str) -> Result<Value> {
        match self.store().resource_get(SNAPSHOT, id).await? {
            Some(s) if caller.can_see(&s) => Ok(s),
            _ => Err(Error::NotFound(format!("Snapshot {id} could not be found."))),
        }
    }

    pub async fn snapshot_list(&self, caller: &Caller<'_>, all_tenants: bool) -> Result<Vec<Value>> {
        let project = if caller.is_admin && all_tenants { None } else { Some(caller.project()) };
        self.store().resource_list(SNAPSHOT, project).await
    }

    pub async fn snapshot_create(&self, caller: &Caller<'_>, body: &Value) -> Result<Value> {
        let vid = match body.get("volume_id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(Error::NotFound("Volume None could not be found.".into())),
        };
        let v = self.volume_get(caller, &vid).await?;
        let force = match body.get("force") {
            None | Some(Value::Null) => false,
            Some(f) => parse_bool_value(f).ok_or_else(|| Error::BadRequest(format!("Invalid value '{f}' for force.")))?,
        };
        let status = v["status"].as_str().unwrap_or("");
        if !(status == "available" || (force && status == "in-use")) {
            return Err(Error::BadRequest(format!("Invalid volume: Volume {vid} status must be available{}, but current status is: {status}.", if force { " or in-use" } else { "" })));
        }
        let name = text_field(body, &["name", "display_name"], 255)?.unwrap_or(Value::Null);
        let description = text_field(body, &["description", "display_description"], 255)?.unwrap_or(Value::Null);
        let metadata = match body.get("metadata") {
            None | Some(Value::Null) => Map::new(),
            Some(m) => parse_metadata(m)?,
        };
        let size = v["size"].as_i64().unwrap_or(0);
        self.quota_check(caller.project(), &[("snapshots", 1), ("gigabytes", size)]).await?;
        let id = new_id();
        let doc = json!({
            "id": id, "volume_id": vid, "project_id": caller.project(), "user_id": caller.ctx.user_id,
            "name": name, "description": description, "size": size, "status": "creating", "progress": "0%",
            "metadata": metadata, "created_at": now(), "updated_at": null, "volume_type_id": v["volume_type_id"],
        });
        self.store().resource_insert(SNAPSHOT, &id, caller.project(), &vid, &doc).await?;
        let host = v["host"].as_str().unwrap_or_default().to_string();
        let sid = id.clone();
        self.dispatch(&host, volume_rpc::CreateSnapshot { snapshot_id: id.clone(), volume_id: vid }, move |me, outcome| async move {
            let changes = if outcome.is_ok() { json!({"status": "available", "progress": "100%"}) } else { json!({"status": "error"}) };
            me.finish(SNAPSHOT, &sid, "creating", changes).await?;
            Ok(())
        });
        Ok(doc)
    }

    pub async fn snapshot_update(&self, caller: &Caller<'_>, id: &str, body: &Value) -> Result<Value> {
        let mut s = self.snapshot_get(caller, id).await?;
        if body.as_object().is_none_or(|o| o.is_empty()) {
            return Err(Error::BadRequest("Invalid input received: No snapshot attributes to update.".into()));
        }
        if let Some(n) = text_field(body, &["name", "display_name"], 255)? {
            s["name"] = n;
        }
        if let Some(d) = text_field(body, &["description", "display_description"], 255)? {
            s["description"] = d;
        }
        s["updated_at"] = json!(now());
        self.store().resource_update(SNAPSHOT, id, &s).await?;
        Ok(s)
    }

    pub async fn snapshot_delete(&self, caller: &Caller<'_>, id: &str, force: bool) -> Result<()> {
        let s = self.snapshot_get(caller, id).await?;
        if !force && s["group_snapshot_id"].as_str().is_some_and(|g| !g.is_empty()) {
            return Err(Error::BadRequest(format!("Invalid snapshot: Snapshot {id} is part of a group snapshot and cannot be deleted by itself; delete the group snapshot.")));
        }
        let allowed: &[&str] = if force { &["creating", "available", "error", "error_deleting", "deleting", "backing-up", "restoring"] } else { &["available", "error"] };
        let s = self.transition(SNAPSHOT, &s, allowed, "deleting", json!({}), |st| Error::BadRequest(format!("Invalid snapshot: Volume Snapshot status must be available or error, but current status is: {st}."))).await?;
        let host = match self.store().resource_get(VOLUME, s["volume_id"].as_str().unwrap_or("")).await? {
            Some(v) => v["host"].as_str().map(str::to_string),
            None => None,
        };
        let Some(host) = host else {
            self.store().resource_delete(SNAPSHOT, id).await?;
            return Ok(());
        };
        let sid = id.to_string();
        self.dispatch(&host, volume_rpc::DeleteSnapshot { snapshot_id: sid.clone() }, move |me, outcome| async move {
            match outcome {
                Ok(()) => {
                    me.store().resource_delete(SNAPSHOT, &sid).await?;
                }
                Err(_) => {
                    me.finish(SNAPSHOT, &sid, "deleting", json!({"status": "error_deleting"})).await?;
                }
            }
            Ok(())
        });
        Ok(())
    }

    // ---------------------------------------------------------------- backups

    pub async fn backup_get(&self, caller: &Caller<'_>, id: &str) -> Result<Value> {
        match self.store().resource_get(BACKUP, id).await? {
            Some(b) if caller.can_see(&b) => Ok(b),
            _ => Err(Error::NotFound(format!("Backup {id} could not be found."))),
        }
    }

    pub async fn backup_list(&self, caller: &Caller<'_>, all_tenants: bool) -> Result<Vec<Value>> {
        let project = if caller.is_admin && all_tenants { None } else { Some(caller.project()) };
        self.store().resource_list(BACKUP, project).await
    }

    /// Where a backup's objects are: the account of the project that made them (an imported backup keeps its
    /// exporter's).
    fn backup_target(&self, caller: &Caller<'_>, b: &Value) -> volume_rpc::ObjectTarget {
        let project = b["object_project_id"].as_str().or(b["project_id"].as_str()).unwrap_or_default();
        self.object_target(caller, project, b["container"].as_str().unwrap_or_default())
    }

    fn object_target(&self, caller: &Caller<'_>, project: &str, container: &str) -> volume_rpc::ObjectTarget {
        volume_rpc::ObjectTarget {
            account_url: format!("{}/v1/AUTH_{project}", self.config().object_url),
            container: container.to_string(),
            auth_token: Secret(caller.token.clone()),
        }
    }

    /// Starts a backup of a volume (or one of its snapshots) into the caller's object-store account.
    pub async fn backup_create(&self, caller: &Caller<'_>, body: &Value) -> Result<Value> {
        let vid = str_of(body, "volume_id").ok_or_else(|| Error::BadRequest("Invalid input for field/attribute volume_id. 'volume_id' is a required property".into()))?.to_string();
        let v = self.volume_get(caller, &vid).await?;
        let force = body.get("force").and_then(parse_bool_value).unwrap_or(false);
        let incremental = body.get("incremental").and_then(parse_bool_value).unwrap_or(false);
        let snapshot = match str_of(body, "snapshot_id") {
            Some(s) => {
                let s = self.snapshot_get(caller, s).await?;
                if s["volume_id"] != json!(vid) {
                    return Err(Error::BadRequest("Invalid snapshot: the snapshot does not belong to the volume.".into()));
                }
                if s["status"] != json!("available") {
                    return Err(Error::BadRequest("Invalid snapshot: Snapshot to be backed up must be available".into()));
                }
                Some(s)
            }
            None => None,
        };
        let status = v["status"].as_str().unwrap_or("").to_string();
        let allowed: &[&str] = if force || snapshot.is_some() { &["available", "in-use"] } else { &["available"] };
        if !allowed.contains(&status.as_str()) {
            return Err(Error::BadRequest(format!("Invalid volume: Volume to be backed up must be available or in-use, but the current status is \"{status}\".")));
        }
        let size = v["size"].as_i64().unwrap_or(0);
        self.quota_check(caller.project(), &[("backups", 1), ("backup_gigabytes", size)]).await?;
        let container = str_of(body, "container").filter(|c| !c.is_empty()).unwrap_or(&self.config().backup_container).to_string();
        let name = text_field(body, &["name"], 255)?.unwrap_or(Value::Null);
        let description = text_field(body, &["description"], 255)?.unwrap_or(Value::Null);
        let metadata = match body.get("metadata") {
            None | Some(Value::Null) => Map::new(),
            Some(m) => parse_metadata(m)?,
        };
        let previous = self.store().resource_list_by_parent(BACKUP, &vid).await?;
        let has_dependent = previous.iter().any(|b| b["status"] == json!("available"));
        if incremental && !has_dependent {
            return Err(Error::BadRequest("Invalid backup: No backups available to do an incremental backup.".into()));
        }
        let id = new_id();
        let zone = v["availability_zone"].as_str().unwrap_or("nova").to_string();
        let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S");
        let prefix = format!("volume_{vid}/{stamp}/az_{zone}_backup_{id}");
        let now = now();
        let doc = json!({
            "id": id, "volume_id": vid, "snapshot_id": snapshot.as_ref().map(|s| s["id"].clone()).unwrap_or(Value::Null),
            "project_id": caller.project(), "user_id": caller.ctx.user_id, "name": name, "description": description,
            "size": size, "status": "creating", "availability_zone": zone, "container": container,
            "object_prefix": prefix, "object_count": 0, "fail_reason": null, "is_incremental": incremental,
            "has_dependent_backups": false, "created_at": now, "updated_at": now, "data_timestamp": now,
            "metadata": metadata,
            "volume_meta": {"metadata": v["metadata"], "bootable": v["bootable"], "volume_image_metadata": v["volume_image_metadata"]},
        });
        let back = status.clone();
        let v = self.transition(VOLUME, &v, allowed, "backing-up", json!({"previous_status": back}), |s| Error::BadRequest(format!("Invalid volume: Volume to be backed up must be available or in-use, but the current status is \"{s}\"."))).await?;
        self.store().resource_insert(BACKUP, &id, caller.project(), &vid, &doc).await?;
        let msg = volume_rpc::BackupVolume {
            backup_id: id.clone(),
            volume_id: vid.clone(),
            snapshot_id: snapshot.as_ref().and_then(|s| s["id"].as_str().map(str::to_string)),
            target: self.object_target(caller, caller.project(), &container),
            prefix,
            chunk_size: self.config().backup_chunk_size,
        };
        let host = v["host"].as_str().unwrap_or_default().to_string();
        let bid = id.clone();
        self.dispatch(&host, msg, move |me, outcome| async move {
            me.finish(VOLUME, &vid, "backing-up", json!({"status": back})).await?;
            let changes = match outcome {
                Ok(w) => json!({"status": "available", "object_count": w.object_count}),
                Err(e) => json!({"status": "error", "fail_reason": e}),
            };
            me.finish(BACKUP, &bid, "creating", changes).await?;
            Ok(())
        });
        Ok(doc)
    }

    /// Changes a backup's name, description or metadata (3.9, 3.43).
    pub async fn backup_update(&self, caller: &Caller<'_>, id: &str, body: &Value) -> Result<Value> {
        let mut b = self.backup_get(caller, id).await?;
        if body.as_object().is_none_or(|o| o.is_empty()) {
            return Err(Error::BadRequest("Invalid input received: No backup attributes to update.".into()));
        }
        if let Some(n) = text_field(body, &["name"], 255)? {
            b["name"] = n;
        }
        if let Some(d) = text_field(body, &["description"], 255)? {
            b["description"] = d;
        }
        if let Some(m) = body.get("metadata") {
            b["metadata"] = Value::Object(parse_metadata(m)?);
        }
        b["updated_at"] = json!(now());
        self.store().resource_update(BACKUP, id, &b).await?;
        Ok(b)
    }

    pub async fn backup_delete(&self, caller: &Caller<'_>, id: &str, force: bool) -> Result<()> {
        let b = self.backup_get(caller, id).await?;
        let allowed: &[&str] = if force { &["available", "error", "creating", "restoring", "deleting", "error_deleting"] } else { &["available", "error"] };
        let b = self.transition(BACKUP, &b, allowed, "deleting", json!({}), |s| Error::BadRequest(format!("Invalid backup: Backup status must be available or error, but current status is: {s}."))).await?;
        let host = self.backends().await?.into_iter().next().map(|r| r.host);
        let count = b["object_count"].as_i64().unwrap_or(0);
        let Some(host) = host.filter(|_| count > 0) else {
            self.store().resource_delete(BACKUP, id).await?;
            return Ok(());
        };
        let msg = volume_rpc::DeleteBackup {
            target: self.backup_target(caller, &b),
            prefix: b["object_prefix"].as_str().unwrap_or_default().to_string(),
            object_count: count,
        };
        let bid = id.to_string();
        self.dispatch(&host, msg, move |me, outcome| async move {
            match outcome {
                Ok(()) => {
                    me.store().resource_delete(BACKUP, &bid).await?;
                }
                Err(_) => {
                    me.finish(BACKUP, &bid, "deleting", json!({"status": "error_deleting"})).await?;
                }
            }
            Ok(())
        });
        Ok(())
    }

    /// Restores a backup into `volume_id`, or into a new volume of the backup's size.
    pub async fn backup_restore(&self, caller: &Caller<'_>, id: &str, body: &Value) -> Result<Value> {
        let b = self.backup_get(caller, id).await?;
        if b["status"] != json!("available") {
            return Err(Error::BadRequest(format!("Invalid backup: Backup status must be available but current status is: {}.", b["status"].as_str().unwrap_or(""))));
        }
        let v = match str_of(body, "volume_id") {
            Some(vid) => {
                let v = self.volume_get(caller, vid).await?;
                if v["status"] != json!("available") {
                    return Err(Error::BadRequest(format!("Invalid volume: Volume to be restored to must be available, but the current status is \"{}\".", v["status"].as_str().unwrap_or(""))));
                }
                if v["size"].as_i64() < b["size"].as_i64() {
                    return Err(Error::BadRequest(format!("Invalid volume: volume size {} is too small to restore backup of size {}.", v["size"], b["size"])));
                }
                self.start_restore(caller, &b, &v).await?;
                v
            }
            None => {
                let mut req = json!({"size": b["size"], "backup_id": b["id"]});
                req["name"] = body.get("name").cloned().unwrap_or_else(|| json!(format!("restore_backup_{id}")));
                if let Some(z) = b["availability_zone"].as_str() {
                    req["availability_zone"] = json!(z);
                }
                self.volume_create(caller, &req).await?
            }
        };
        Ok(json!({"backup_id": id, "volume_id": v["id"], "volume_name": v["name"]}))
    }

    async fn start_restore(&self, caller: &Caller<'_>, b: &Value, v: &Value) -> Result<()> {
        let vid = v["id"].as_str().unwrap_or_default().to_string();
        let bid = b["id"].as_str().unwrap_or_default().to_string();
        let from = v["status"].as_str().unwrap_or("").to_string();
        self.transition(VOLUME, v, &["available", "creating"], "restoring-backup", json!({}), |s| Error::BadRequest(format!("Invalid volume: status {s}"))).await?;
        self.transition(BACKUP, b, &["available"], "restoring", json!({}), |s| Error::BadRequest(format!("Invalid backup: Backup status must be available but current status is: {s}."))).await?;
        let host = v["host"].as_str().unwrap_or_default().to_string();
        let target = self.backup_target(caller, b);
        let prefix = b["object_prefix"].as_str().unwrap_or_default().to_string();
        let object_count = b["object_count"].as_i64().unwrap_or(0);
        let size = v["size"].as_i64().unwrap_or(1);
        let saved = b["volume_meta"].clone();
        let me = self.clone();
        tokio::spawn(async move {
            let server = host.split('#').next().unwrap_or(&host).to_string();
            let timeout = me.inner.config.call_timeout;
            let target_server = Target::server(VOLUME_TOPIC, &server);
            let mut outcome = Ok(());
            if from == "creating" {
                let msg = volume_rpc::CreateVolume { volume_id: vid.clone(), size_gb: size, source: VolumeSource::Empty };
                outcome = me.inner.bus.call(&target_server, &msg, timeout).await;
            }
            if outcome.is_ok() {
                let msg = volume_rpc::RestoreBackup { volume_id: vid.clone(), target, prefix, object_count };
                outcome = me.inner.bus.call(&target_server, &msg, timeout).await;
            }
            let (vs, bs) = if outcome.is_ok() { ("available", "available") } else { ("error_restoring", "available") };
            if let Err(error) = &outcome {
                tracing::warn!(%error, volume = %vid, "restore failed");
            }
            let mut changes = json!({"status": vs});
            if outcome.is_ok()
                && let Ok(Some(v)) = me.store().resource_get(VOLUME, &vid).await
            {
                // The volume gets the backed-up volume's metadata and image properties back, as upstream.
                let mut metadata = v["metadata"].as_object().cloned().unwrap_or_default();
                for (k, val) in saved["metadata"].as_object().cloned().unwrap_or_default() {
                    metadata.insert(k, val);
                }
                changes["metadata"] = Value::Object(metadata);
                if saved["bootable"] == json!(true) {
                    changes["bootable"] = json!(true);
                }
                if saved["volume_image_metadata"].is_object() {
                    changes["volume_image_metadata"] = saved["volume_image_metadata"].clone();
                }
            }
            let _ = me.finish(VOLUME, &vid, "restoring-backup", changes).await;
            let _ = me.finish(BACKUP, &bid, "restoring", json!({"status": bs})).await;
        });
        Ok(())
    }
}

fn parse_bool_value(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => api_common::query::parse_bool(s),
        _ => None,
    }
}

pub fn parse_bool_json(v: &Value) -> Option<bool> {
    parse_bool_value(v)
}

fn parse_specs(v: &Value) -> Result<Map<String, Value>> {
    let Some(m) = v.as_object() else { return Err(Error::BadRequest("Malformed request body: extra_specs must be an object".into())) };
    let mut out = Map::new();
    for (k, val) in m {
        if k.is_empty() || k.len() > 255 || !k.chars().all(|c| c.is_ascii_alphanumeric() || "-_:. /".contains(c)) {
            return Err(Error::BadRequest(format!("Invalid input received: Key name {k} contains invalid characters or is empty.")));
        }
        let s = match val {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => if *b { "True".into() } else { "False".into() },
            _ => return Err(Error::BadRequest(format!("Invalid input received: Value for {k} must be a string"))),
        };
        if s.len() > 255 {
            return Err(Error::BadRequest(format!("Invalid input received: Value for {k} is too long")));
        }
        out.insert(k.clone(), Value::String(s));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_metadata_are_validated_as_upstream() {
        assert_eq!(parse_size(&json!(3), "size").unwrap(), 3);
        assert_eq!(parse_size(&json!("4"), "size").unwrap(), 4);
        for bad in [json!(0), json!(-1), json!("#$%"), json!(""), json!(1.5), Value::Null] {
            assert!(parse_size(&bad, "size").is_err(), "{bad}");
        }
        assert!(parse_metadata(&json!({"a": "b"})).is_ok());
        assert!(parse_metadata(&json!({"a": 1})).is_err());
        assert!(parse_metadata(&json!({"": "x"})).is_err());
        assert!(parse_metadata(&json!({"k": "v".repeat(256)})).is_err());
        assert!(parse_specs(&json!({"volume_backend_name": "file", "n": 1})).is_ok());
        assert!(parse_specs(&json!({"bad\u{1}": "x"})).is_err());
    }
}
