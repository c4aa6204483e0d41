//! Group types (3.11), generic volume groups (3.13) and group snapshots (3.14), volume type encryption records
//! and backup records (export/import).
//!
//! A group is a record: its volumes carry its id (`group_id`), it lives on no backend of its own (upstream's
//! default generic-group implementation). A group snapshot is one snapshot per volume of the group, taken on each
//! volume's backend, the snapshots carrying `group_snapshot_id`; the group snapshot is `available` once all are.
//! A group made from a group snapshot or a source group gets one volume per member, made on the backend like any
//! volume from a snapshot or clone, and turns `available` once they all are (`error` if one fails).

use std::time::Duration;

use base64::Engine;
use bus::Target;
use serde_json::{Map, Value, json};
use volume_rpc::VOLUME_TOPIC;

use super::{
    BACKUP, Caller, DELETABLE, SNAPSHOT, VOLUME, Volume, new_id, now, parse_bool_value, parse_specs,
    str_of, text_field,
};
use crate::error::{Error, Result};

pub const GROUP_TYPE: &str = "group_type";
pub const GROUP: &str = "group";
pub const GROUP_SNAPSHOT: &str = "group_snapshot";
pub const ENCRYPTION: &str = "encryption";

/// The name of the group type `GET /group_types/default` answers (created at migration).
pub const DEFAULT_GROUP_TYPE: &str = "default_group_type";
/// Upstream's name of the backup driver whose records are exported (backups go to an object store).
pub const BACKUP_SERVICE: &str = "cinder.backup.drivers.swift.SwiftBackupDriver";

/// Every group status upstream has.
pub const GROUP_STATUSES: &[&str] = &["error", "available", "creating", "deleting", "deleted", "updating", "in-use", "error_deleting"];
/// Every group snapshot status upstream has.
pub const GROUP_SNAPSHOT_STATUSES: &[&str] = &["error", "available", "creating", "deleting", "deleted", "updating", "error_deleting"];

/// How long a group waits for its volumes (made or deleted in the background) before it gives up on them.
const MEMBER_POLL: Duration = Duration::from_millis(200);

/// Volume ids of a comma-separated list (`add_volumes`, `remove_volumes`).
fn id_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

impl Volume {
    // ---------------------------------------------------------------- group types

    pub(super) async fn ensure_default_group_type(&self) -> Result<()> {
        if self.group_type_by_name(DEFAULT_GROUP_TYPE).await?.is_none() {
            let doc = json!({
                "id": new_id(), "name": DEFAULT_GROUP_TYPE, "description": "Default group type", "is_public": true,
                "group_specs": {}, "projects": [], "status": "active",
            });
            self.store().resource_insert(GROUP_TYPE, doc["id"].as_str().unwrap_or_default(), "", "", &doc).await?;
        }
        Ok(())
    }

    pub async fn group_type_by_name(&self, name: &str) -> Result<Option<Value>> {
        Ok(self.store().resource_list(GROUP_TYPE, None).await?.into_iter().find(|t| t["name"] == json!(name)))
    }

    fn group_type_visible(caller: &Caller<'_>, t: &Value) -> bool {
        caller.is_admin
            || t["is_public"] == json!(true)
            || t["projects"].as_array().is_some_and(|p| p.iter().any(|x| x.as_str() == Some(caller.project())))
    }

    /// A group type by id or name, as the caller may see it.
    pub async fn group_type_get(&self, caller: &Caller<'_>, id: &str) -> Result<Value> {
        let t = match self.store().resource_get(GROUP_TYPE, id).await? {
            Some(t) => Some(t),
            None => self.group_type_by_name(id).await?,
        };
        match t {
            Some(t) if Self::group_type_visible(caller, &t) => Ok(t),
            _ => Err(Error::NotFound(format!("Group type {id} could not be found."))),
        }
    }

    pub async fn group_type_default(&self) -> Result<Value> {
        self.group_type_by_name(DEFAULT_GROUP_TYPE).await?.ok_or_else(|| Error::NotFound("Default group type can not be found.".into()))
    }

    /// The group types the caller sees; `is_public` narrows (administrators see every type unless they filter).
    pub async fn group_type_list(&self, caller: &Caller<'_>, is_public: Option<bool>) -> Result<Vec<Value>> {
        let types = self.store().resource_list(GROUP_TYPE, None).await?;
        Ok(types
            .into_iter()
            .filter(|t| Self::group_type_visible(caller, t))
            .filter(|t| match is_public {
                Some(p) => t["is_public"] == json!(p),
                None => true,
            })
            .collect())
    }

    pub async fn group_type_create(&self, body: &Value) -> Result<Value> {
        let name = match body.get("name") {
            Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= 255 => s.trim().to_string(),
            _ => return Err(Error::BadRequest("Invalid input for field/attribute name: Group type name can not be empty.".into())),
        };
        let description = text_field(body, &["description"], 255)?.unwrap_or(Value::Null);
        let is_public = match body.get("is_public") {
            None | Some(Value::Null) => true,
            Some(v) => parse_bool_value(v).ok_or_else(|| Error::BadRequest(format!("Invalid value '{v}' for is_public. Accepted values: True or False.")))?,
        };
        let group_specs = match body.get("group_specs") {
            None | Some(Value::Null) => Map::new(),
            Some(v) => parse_specs(v)?,
        };
        if self.group_type_by_name(&name).await?.is_some() {
            return Err(Error::Conflict(format!("Group Type {name} already exists.")));
        }
        let doc = json!({
            "id": new_id(), "name": name, "description": description, "is_public": is_public,
            "group_specs": group_specs, "projects": [], "status": "active",
        });
        self.store().resource_insert(GROUP_TYPE, doc["id"].as_str().unwrap_or_default(), "", "", &doc).await?;
        Ok(doc)
    }

    pub async fn group_type_update(&self, caller: &Caller<'_>, id: &str, body: &Value) -> Result<Value> {
        let mut t = self.group_type_get(caller, id).await?;
        if body.get("name").is_none() && body.get("description").is_none() && body.get("is_public").is_none() {
            return Err(Error::BadRequest("Specify group type name, description or a combination thereof.".into()));
        }
        if let Some(v) = body.get("name") {
            let name = v.as_str().map(str::trim).unwrap_or_default().to_string();
            if name.is_empty() || name.chars().count() > 255 {
                return Err(Error::BadRequest("Group type name can not be empty.".into()));
            }
            if name != t["name"] {
                if t["name"] == json!(DEFAULT_GROUP_TYPE) {
                    return Err(Error::BadRequest("The default group type can not be renamed.".into()));
                }
                if self.group_type_by_name(&name).await?.is_some() {
                    return Err(Error::Conflict(format!("Group Type {name} already exists.")));
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
        self.store().resource_update(GROUP_TYPE, t["id"].as_str().unwrap_or_default(), &t).await?;
        Ok(t)
    }

    pub async fn group_type_delete(&self, caller: &Caller<'_>, id: &str) -> Result<()> {
        let t = self.group_type_get(caller, id).await?;
        let tid = t["id"].as_str().unwrap_or_default().to_string();
        if t["name"] == json!(DEFAULT_GROUP_TYPE) {
            return Err(Error::BadRequest("Default group type can not be deleted.".into()));
        }
        if self.store().resource_list(GROUP, None).await?.iter().any(|g| g["group_type"] == json!(tid)) {
            return Err(Error::BadRequest(format!("Target group type {tid} is still in use.")));
        }
        self.store().resource_delete(GROUP_TYPE, &tid).await?;
        Ok(())
    }

    /// Merges group specs into a type; the specs given.
    pub async fn group_type_set_specs(&self, caller: &Caller<'_>, id: &str, specs: &Value) -> Result<Map<String, Value>> {
        let mut t = self.group_type_get(caller, id).await?;
        let specs = parse_specs(specs)?;
        let tid = t["id"].as_str().unwrap_or_default().to_string();
        if !t["group_specs"].is_object() {
            t["group_specs"] = json!({});
        }
        if let Some(current) = t["group_specs"].as_object_mut() {
            for (k, v) in &specs {
                current.insert(k.clone(), v.clone());
            }
        }
        self.store().resource_update(GROUP_TYPE, &tid, &t).await?;
        Ok(specs)
    }

    pub async fn group_type_delete_spec(&self, caller: &Caller<'_>, id: &str, key: &str) -> Result<()> {
        let mut t = self.group_type_get(caller, id).await?;
        let tid = t["id"].as_str().unwrap_or_default().to_string();
        if t["group_specs"].as_object_mut().and_then(|m| m.remove(key)).is_none() {
            return Err(Error::NotFound(format!("Group Type {tid} has no specs with key {key}.")));
        }
        self.store().resource_update(GROUP_TYPE, &tid, &t).await?;
        Ok(())
    }

    // ---------------------------------------------------------------- groups

    pub async fn group_get(&self, caller: &Caller<'_>, id: &str) -> Result<Value> {
        match self.store().resource_get(GROUP, id).await? {
            Some(g) if caller.can_see(&g) => Ok(g),
            _ => Err(Error::NotFound(format!("Group {id} could not be found."))),
        }
    }

    pub async fn group_list(&self, caller: &Caller<'_>, all_tenants: bool) -> Result<Vec<Value>> {
        let project = if caller.is_admin && all_tenants { None } else { Some(caller.project()) };
        self.store().resource_list(GROUP, project).await
    }

    /// The volumes of a group.
    pub async fn group_volumes(&self, group_id: &str) -> Result<Vec<Value>> {
        Ok(self.store().resource_list(VOLUME, None).await?.into_iter().filter(|v| v["group_id"] == json!(group_id)).collect())
    }

    /// The checks a volume created into a group passes: the group is the caller's, in `allowed` statuses, and
    /// takes the volume's type.
    pub(super) async fn group_for_volume(&self, caller: &Caller<'_>, group_id: &str, volume_type_id: &str, allowed: &[&str]) -> Result<Value> {
        let g = self.group_get(caller, group_id).await?;
        let status = g["status"].as_str().unwrap_or("");
        if !allowed.contains(&status) {
            return Err(Error::BadRequest(format!("Invalid group: Group {group_id} status must be available, but current status is: {status}.")));
        }
        if !g["volume_types"].as_array().is_some_and(|t| t.iter().any(|t| t.as_str() == Some(volume_type_id))) {
            return Err(Error::BadRequest(format!("Invalid input received: Invalid volume_type provided: {volume_type_id} (requested type must be supported by this group).")));
        }
        Ok(g)
    }

    async fn group_quota_check(&self, project: &str) -> Result<()> {
        let limit = self.quota_limits(project).await?.get("groups").copied().unwrap_or(-1);
        let used = self.store().resource_list(GROUP, Some(project)).await?.len() as i64;
        if limit >= 0 && used + 1 > limit {
            return Err(Error::OverQuota(format!("GroupLimitExceeded: Maximum number of groups allowed ({limit}) exceeded")));
        }
        Ok(())
    }

    /// The volume types a group is for, by id or name, resolved to their ids.
    async fn group_volume_types(&self, caller: &Caller<'_>, v: Option<&Value>) -> Result<Vec<Value>> {
        let names: Vec<String> = match v {
            Some(Value::Array(a)) => a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
            Some(Value::String(s)) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect(),
            _ => Vec::new(),
        };
        if names.is_empty() {
            return Err(Error::BadRequest("volume_types must be provided to create group.".into()));
        }
        let mut out = Vec::new();
        for n in names {
            let t = self.type_get(caller, &n).await.map_err(|_| Error::NotFound(format!("Volume type {n} could not be found.")))?;
            if !out.contains(&t["id"]) {
                out.push(t["id"].clone());
            }
        }
        Ok(out)
    }

    fn new_group_doc(caller: &Caller<'_>, name: Value, description: Value, group_type: &Value, volume_types: Vec<Value>, zone: &str, status: &str) -> Value {
        json!({
            "id": new_id(), "project_id": caller.project(), "user_id": caller.ctx.user_id,
            "name": name, "description": description, "status": status, "availability_zone": zone,
            "group_type": group_type, "volume_types": volume_types, "group_snapshot_id": null,
            "source_group_id": null, "replication_status": "disabled", "created_at": now(), "updated_at": null,
        })
    }

    /// Creates an empty group (3.13): `group_type` and `volume_types` are required.
    pub async fn group_create(&self, caller: &Caller<'_>, body: &Value) -> Result<Value> {
        let gt = match str_of(body, "group_type") {
            Some(t) if !t.is_empty() => t.to_string(),
            _ => return Err(Error::BadRequest("group_type must be provided to create group.".into())),
        };
        let volume_types = self.group_volume_types(caller, body.get("volume_types")).await?;
        let group_type = self.group_type_get(caller, &gt).await?;
        let name = text_field(body, &["name"], 255)?.unwrap_or(Value::Null);
        let description = text_field(body, &["description"], 255)?.unwrap_or(Value::Null);
        let zones = self.availability_zones().await?;
        let zone = match str_of(body, "availability_zone") {
            Some(z) => {
                if !zones.iter().any(|(n, _)| n == z) {
                    return Err(Error::BadRequest(format!("Invalid input received: Availability zone '{z}' is invalid.")));
                }
                z.to_string()
            }
            None => self.config().default_availability_zone.clone(),
        };
        self.group_quota_check(caller.project()).await?;
        let doc = Self::new_group_doc(caller, name, description, &group_type["id"], volume_types, &zone, "available");
        self.store().resource_insert(GROUP, doc["id"].as_str().unwrap_or_default(), caller.project(), "", &doc).await?;
        Ok(doc)
    }

    /// Renames a group, or adds and removes volumes (by comma-separated ids).
    pub async fn group_update(&self, caller: &Caller<'_>, id: &str, body: &Value) -> Result<Value> {
        let mut g = self.group_get(caller, id).await?;
        let add = id_list(body.get("add_volumes"));
        let remove = id_list(body.get("remove_volumes"));
        let name = text_field(body, &["name"], 255)?;
        let description = text_field(body, &["description"], 255)?;
        if name.is_none() && description.is_none() && add.is_empty() && remove.is_empty() {
            return Err(Error::BadRequest("Name, description, add_volumes, and remove_volumes can not be all empty in the request body.".into()));
        }
        let status = g["status"].as_str().unwrap_or("").to_string();
        if (!add.is_empty() || !remove.is_empty()) && status != "available" {
            return Err(Error::BadRequest(format!("Invalid group: Group {id} status must be available, but current status is: {status}.")));
        }
        let member_ok = ["available", "in-use", "error", "error_deleting"];
        let mut to_add = Vec::new();
        for vid in &add {
            let v = match self.store().resource_get(VOLUME, vid).await? {
                Some(v) if v["project_id"] == g["project_id"] => v,
                _ => return Err(Error::BadRequest(format!("Invalid volume: Cannot add volume {vid} to group {id} because volume cannot be found."))),
            };
            if v["group_id"] == json!(id) {
                return Err(Error::BadRequest(format!("Invalid volume: Cannot add volume {vid} to group {id} because it is already in group {id}.")));
            }
            if v["group_id"].as_str().is_some_and(|o| !o.is_empty()) {
                return Err(Error::BadRequest(format!("Invalid volume: Cannot add volume {vid} to group {id} because it is already in group {}.", v["group_id"].as_str().unwrap_or_default())));
            }
            if !["available", "in-use"].contains(&v["status"].as_str().unwrap_or("")) {
                return Err(Error::BadRequest(format!("Invalid volume: Cannot add volume {vid} to group {id} because volume is in an invalid state: {}. Valid states are: ('available', 'in-use').", v["status"].as_str().unwrap_or(""))));
            }
            if !g["volume_types"].as_array().is_some_and(|t| t.contains(&v["volume_type_id"])) {
                return Err(Error::BadRequest(format!("Invalid volume: Cannot add volume {vid} to group {id} because volume type {} is not supported by the group.", v["volume_type_id"].as_str().unwrap_or_default())));
            }
            to_add.push(v);
        }
        let mut to_remove = Vec::new();
        for vid in &remove {
            let v = match self.store().resource_get(VOLUME, vid).await? {
                Some(v) if v["group_id"] == json!(id) => v,
                _ => return Err(Error::BadRequest(format!("Invalid volume: Cannot remove volume {vid} from group {id} because it is not in the group."))),
            };
            if !member_ok.contains(&v["status"].as_str().unwrap_or("")) {
                return Err(Error::BadRequest(format!("Invalid volume: Cannot remove volume {vid} from group {id} because volume is in an invalid state: {}.", v["status"].as_str().unwrap_or(""))));
            }
            to_remove.push(v);
        }
        for mut v in to_add {
            v["group_id"] = json!(id);
            v["updated_at"] = json!(now());
            self.store().resource_update(VOLUME, v["id"].as_str().unwrap_or_default(), &v).await?;
        }
        for mut v in to_remove {
            v["group_id"] = Value::Null;
            v["updated_at"] = json!(now());
            self.store().resource_update(VOLUME, v["id"].as_str().unwrap_or_default(), &v).await?;
        }
        if let Some(n) = name {
            g["name"] = n;
        }
        if let Some(d) = description {
            g["description"] = d;
        }
        g["updated_at"] = json!(now());
        self.store().resource_update(GROUP, id, &g).await?;
        Ok(g)
    }

    /// Deletes a group; its volumes too with `delete_volumes` (else it must be empty).
    pub async fn group_delete(&self, caller: &Caller<'_>, id: &str, delete_volumes: bool) -> Result<()> {
        let g = self.group_get(caller, id).await?;
        let status = g["status"].as_str().unwrap_or("").to_string();
        if !["available", "error", "error_deleting"].contains(&status.as_str()) {
            return Err(Error::BadRequest(format!("Invalid group: Group status must be available or error, but current status is: {status}")));
        }
        let volumes = self.group_volumes(id).await?;
        if !volumes.is_empty() && !delete_volumes {
            return Err(Error::BadRequest(format!("Invalid group: Group {id} still contains volumes. The delete-volumes flag is required to delete it.")));
        }
        let snaps = self.store().resource_list(GROUP_SNAPSHOT, None).await?;
        if snaps.iter().any(|s| s["group_id"] == json!(id)) {
            return Err(Error::BadRequest(format!("Invalid group: Group {id} has dependent group snapshots.")));
        }
        for v in &volumes {
            let vid = v["id"].as_str().unwrap_or_default();
            if v["attach_status"] == json!("attached") || !self.attachments_of(vid).await?.is_empty() {
                return Err(Error::BadRequest(format!("Invalid volume: Volume {vid} in group {id} is attached. Need to detach first.")));
            }
            if !DELETABLE.contains(&v["status"].as_str().unwrap_or("")) && v["status"] != json!("error_deleting") {
                return Err(Error::BadRequest(format!("Invalid volume: Volume {vid} in group {id} has an invalid status: {}.", v["status"].as_str().unwrap_or(""))));
            }
            if !self.store().resource_list_by_parent(SNAPSHOT, vid).await?.is_empty() {
                return Err(Error::BadRequest(format!("Invalid volume: Volume in group {id} still has dependent snapshots.")));
            }
        }
        self.transition(GROUP, &g, &["available", "error", "error_deleting"], "deleting", json!({}), |s| {
            Error::BadRequest(format!("Invalid group: Group status must be available or error, but current status is: {s}"))
        })
        .await?;
        let mut ids = Vec::new();
        for v in &volumes {
            let vid = v["id"].as_str().unwrap_or_default().to_string();
            // A volume in error_deleting is deleted again, as upstream's group delete does.
            if v["status"] == json!("error_deleting") {
                let mut v = v.clone();
                v["status"] = json!("error");
                self.store().resource_update(VOLUME, &vid, &v).await?;
            }
            if let Err(error) = self.volume_delete(caller, &vid, false, false).await {
                self.finish(GROUP, id, "deleting", json!({"status": "error_deleting"})).await?;
                return Err(error);
            }
            ids.push(vid);
        }
        let me = self.clone();
        let gid = id.to_string();
        let rounds = (self.config().call_timeout.as_millis() / MEMBER_POLL.as_millis()).max(1) as usize + 1;
        tokio::spawn(async move {
            for _ in 0..rounds {
                let mut pending = false;
                let mut failed = false;
                for vid in &ids {
                    match me.store().resource_get(VOLUME, vid).await {
                        Ok(Some(v)) if v["status"] == json!("error_deleting") => failed = true,
                        Ok(None) => {}
                        _ => pending = true,
                    }
                }
                if failed {
                    let _ = me.finish(GROUP, &gid, "deleting", json!({"status": "error_deleting"})).await;
                    return;
                }
                if !pending {
                    let _ = me.store().resource_delete(GROUP, &gid).await;
                    return;
                }
                tokio::time::sleep(MEMBER_POLL).await;
            }
            let _ = me.finish(GROUP, &gid, "deleting", json!({"status": "error_deleting"})).await;
        });
        Ok(())
    }

    /// A group with a copy of each volume of a group snapshot or of a source group (3.14).
    pub async fn group_create_from_source(&self, caller: &Caller<'_>, body: &Value) -> Result<Value> {
        let gs_id = str_of(body, "group_snapshot_id").filter(|s| !s.is_empty());
        let src_id = str_of(body, "source_group_id").filter(|s| !s.is_empty());
        let name = text_field(body, &["name"], 255)?.unwrap_or(Value::Null);
        let description = text_field(body, &["description"], 255)?.unwrap_or(Value::Null);
        // (source document, what each new volume is made from: (source key, source id, type id, size, name))
        let (source, members): (Value, Vec<(&str, String, String, i64)>) = match (gs_id, src_id) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(Error::BadRequest("Invalid input received: Either 'group_snapshot_id' or 'source_group_id' must be provided to create group from source.".into()));
            }
            (Some(gs), None) => {
                let s = self.group_snapshot_get(caller, gs).await?;
                if s["status"] != json!("available") {
                    return Err(Error::BadRequest(format!("Invalid group snapshot: Group snapshot {gs} status must be available, but current status is: {}.", s["status"].as_str().unwrap_or(""))));
                }
                let snaps = self.group_snapshot_members(gs).await?;
                let members = snaps
                    .iter()
                    .map(|m| ("snapshot_id", m["id"].as_str().unwrap_or_default().to_string(), m["volume_type_id"].as_str().unwrap_or_default().to_string(), m["size"].as_i64().unwrap_or(1)))
                    .collect();
                let g = self.store().resource_get(GROUP, s["group_id"].as_str().unwrap_or_default()).await?;
                let mut src = s.clone();
                src["source_group"] = g.unwrap_or(Value::Null);
                (src, members)
            }
            (None, Some(sg)) => {
                let g = self.group_get(caller, sg).await?;
                if g["status"] != json!("available") {
                    return Err(Error::BadRequest(format!("Invalid group: Source group {sg} status must be available, but current status is: {}.", g["status"].as_str().unwrap_or(""))));
                }
                let vols = self.group_volumes(sg).await?;
                let members = vols
                    .iter()
                    .map(|v| ("source_volid", v["id"].as_str().unwrap_or_default().to_string(), v["volume_type_id"].as_str().unwrap_or_default().to_string(), v["size"].as_i64().unwrap_or(1)))
                    .collect();
                let mut src = g.clone();
                src["source_group"] = g;
                (src, members)
            }
        };
        let sg = &source["source_group"];
        let (group_type, volume_types, zone) = if sg.is_object() {
            (sg["group_type"].clone(), sg["volume_types"].as_array().cloned().unwrap_or_default(), sg["availability_zone"].as_str().unwrap_or_default().to_string())
        } else {
            // The group of the snapshot is gone: its types come from the snapshot.
            let types: Vec<Value> = members.iter().map(|m| json!(m.2)).collect();
            (source["group_type_id"].clone(), types, self.config().default_availability_zone.clone())
        };
        self.group_quota_check(caller.project()).await?;
        let mut doc = Self::new_group_doc(caller, name, description, &group_type, volume_types, &zone, "creating");
        doc["group_snapshot_id"] = gs_id.map(|s| json!(s)).unwrap_or(Value::Null);
        doc["source_group_id"] = src_id.map(|s| json!(s)).unwrap_or(Value::Null);
        let gid = doc["id"].as_str().unwrap_or_default().to_string();
        self.store().resource_insert(GROUP, &gid, caller.project(), "", &doc).await?;
        let mut ids = Vec::new();
        for (key, src, type_id, size) in &members {
            let mut req = json!({"size": size, "group_id": gid, "volume_type": type_id});
            req[*key] = json!(src);
            match self.volume_create_with(caller, &req, &["creating"]).await {
                Ok(v) => ids.push(v["id"].as_str().unwrap_or_default().to_string()),
                Err(error) => {
                    tracing::warn!(%error, group = %gid, "a volume of a group from source could not be created");
                    self.finish(GROUP, &gid, "creating", json!({"status": "error"})).await?;
                    return Ok(self.store().resource_get(GROUP, &gid).await?.unwrap_or(doc));
                }
            }
        }
        let me = self.clone();
        let rounds = (self.config().call_timeout.as_millis() / MEMBER_POLL.as_millis()).max(1) as usize + 1;
        let group_id = gid.clone();
        tokio::spawn(async move {
            for _ in 0..rounds {
                let mut pending = false;
                let mut failed = false;
                for vid in &ids {
                    match me.store().resource_get(VOLUME, vid).await {
                        Ok(Some(v)) if v["status"] == json!("available") => {}
                        Ok(Some(v)) if v["status"] == json!("creating") => pending = true,
                        Ok(_) => failed = true,
                        Err(_) => pending = true,
                    }
                }
                if !pending {
                    let status = if failed { "error" } else { "available" };
                    let _ = me.finish(GROUP, &group_id, "creating", json!({"status": status})).await;
                    return;
                }
                tokio::time::sleep(MEMBER_POLL).await;
            }
            let _ = me.finish(GROUP, &group_id, "creating", json!({"status": "error"})).await;
        });
        Ok(doc)
    }

    /// Sets a group's or group snapshot's status (3.20, 3.19; administrators).
    pub async fn group_reset_status(&self, caller: &Caller<'_>, kind: &str, id: &str, body: &Value) -> Result<()> {
        let mut doc = if kind == GROUP { self.group_get(caller, id).await? } else { self.group_snapshot_get(caller, id).await? };
        let valid = if kind == GROUP { GROUP_STATUSES } else { GROUP_SNAPSHOT_STATUSES };
        let status = match body.get("status").and_then(Value::as_str) {
            Some(s) => s.to_lowercase(),
            None => return Err(Error::BadRequest("Must specify 'status'".into())),
        };
        if !valid.contains(&status.as_str()) {
            return Err(Error::BadRequest(format!("Invalid input received: Group status: {status} is invalid.")));
        }
        doc["status"] = json!(status);
        doc["updated_at"] = json!(now());
        self.store().resource_update(kind, id, &doc).await?;
        Ok(())
    }

    // ---------------------------------------------------------------- group snapshots

    pub async fn group_snapshot_get(&self, caller: &Caller<'_>, id: &str) -> Result<Value> {
        match self.store().resource_get(GROUP_SNAPSHOT, id).await? {
            Some(s) if caller.can_see(&s) => Ok(s),
            _ => Err(Error::NotFound(format!("GroupSnapshot {id} could not be found."))),
        }
    }

    pub async fn group_snapshot_list(&self, caller: &Caller<'_>, all_tenants: bool) -> Result<Vec<Value>> {
        let project = if caller.is_admin && all_tenants { None } else { Some(caller.project()) };
        self.store().resource_list(GROUP_SNAPSHOT, project).await
    }

    /// The snapshots a group snapshot is made of.
    pub async fn group_snapshot_members(&self, id: &str) -> Result<Vec<Value>> {
        Ok(self.store().resource_list(SNAPSHOT, None).await?.into_iter().filter(|s| s["group_snapshot_id"] == json!(id)).collect())
    }

    /// Snapshots every volume of a group, each on its backend.
    pub async fn group_snapshot_create(&self, caller: &Caller<'_>, body: &Value) -> Result<Value> {
        let gid = match str_of(body, "group_id") {
            Some(g) if !g.is_empty() => g.to_string(),
            _ => return Err(Error::BadRequest("Invalid input received: 'group_id' must be specified".into())),
        };
        let g = self.group_get(caller, &gid).await?;
        if g["status"] != json!("available") {
            return Err(Error::BadRequest(format!("Invalid group: Group {gid} status must be available, but current status is: {}.", g["status"].as_str().unwrap_or(""))));
        }
        let volumes = self.group_volumes(&gid).await?;
        for v in &volumes {
            if !["available", "in-use"].contains(&v["status"].as_str().unwrap_or("")) {
                return Err(Error::BadRequest(format!("Invalid volume: Volume {} status must be available or in-use, but current status is: {}.", v["id"].as_str().unwrap_or_default(), v["status"].as_str().unwrap_or(""))));
            }
        }
        let name = text_field(body, &["name"], 255)?.unwrap_or(Value::Null);
        let description = text_field(body, &["description"], 255)?.unwrap_or(Value::Null);
        let size: i64 = volumes.iter().map(|v| v["size"].as_i64().unwrap_or(0)).sum();
        self.quota_check(caller.project(), &[("snapshots", volumes.len() as i64), ("gigabytes", size)]).await?;
        let id = new_id();
        let doc = json!({
            "id": id, "group_id": gid, "project_id": caller.project(), "user_id": caller.ctx.user_id,
            "name": name, "description": description, "status": "creating", "group_type_id": g["group_type"],
            "created_at": now(), "updated_at": null,
        });
        self.store().resource_insert(GROUP_SNAPSHOT, &id, caller.project(), &gid, &doc).await?;
        let mut work = Vec::new();
        for v in &volumes {
            let sid = new_id();
            let vid = v["id"].as_str().unwrap_or_default().to_string();
            let snap = json!({
                "id": sid, "volume_id": vid, "project_id": caller.project(), "user_id": caller.ctx.user_id,
                "name": format!("snapshot-{sid}"), "description": null, "size": v["size"], "status": "creating", "progress": "0%",
                "metadata": {}, "created_at": now(), "updated_at": null, "volume_type_id": v["volume_type_id"],
                "group_snapshot_id": id,
            });
            self.store().resource_insert(SNAPSHOT, &sid, caller.project(), &vid, &snap).await?;
            let host = v["host"].as_str().unwrap_or_default().to_string();
            work.push((sid, vid, host));
        }
        let me = self.clone();
        let gsid = id.clone();
        tokio::spawn(async move {
            let timeout = me.config().call_timeout;
            let mut ok = true;
            for (sid, vid, host) in work {
                let server = host.split('#').next().unwrap_or(&host).to_string();
                let msg = volume_rpc::CreateSnapshot { snapshot_id: sid.clone(), volume_id: vid };
                let outcome = me.inner.bus.call(&Target::server(VOLUME_TOPIC, &server), &msg, timeout).await;
                let changes = if outcome.is_ok() { json!({"status": "available", "progress": "100%"}) } else { json!({"status": "error"}) };
                if let Err(error) = outcome {
                    tracing::warn!(%error, snapshot = %sid, "a snapshot of a group snapshot failed");
                    ok = false;
                }
                let _ = me.finish(SNAPSHOT, &sid, "creating", changes).await;
            }
            let _ = me.finish(GROUP_SNAPSHOT, &gsid, "creating", json!({"status": if ok { "available" } else { "error" }})).await;
        });
        Ok(doc)
    }

    /// Deletes a group snapshot and its snapshots.
    pub async fn group_snapshot_delete(&self, caller: &Caller<'_>, id: &str) -> Result<()> {
        let s = self.group_snapshot_get(caller, id).await?;
        let members = self.group_snapshot_members(id).await?;
        let in_use = self.store().resource_list(VOLUME, None).await?.into_iter().any(|v| {
            v["snapshot_id"].as_str().is_some_and(|sid| members.iter().any(|m| m["id"] == json!(sid))) && v["status"] == json!("creating")
        });
        if in_use {
            return Err(Error::BadRequest(format!("Invalid group snapshot: Group snapshot {id} is being used to create volumes.")));
        }
        self.transition(GROUP_SNAPSHOT, &s, &["available", "error", "error_deleting"], "deleting", json!({}), |st| {
            Error::BadRequest(format!("Invalid group snapshot: Group snapshot status must be available or error, and no Group can be currently using it as source for its creation, but current status is: {st}."))
        })
        .await?;
        let mut work = Vec::new();
        for m in &members {
            let sid = m["id"].as_str().unwrap_or_default().to_string();
            let mut m = m.clone();
            m["status"] = json!("deleting");
            self.store().resource_update(SNAPSHOT, &sid, &m).await?;
            let host = self.store().resource_get(VOLUME, m["volume_id"].as_str().unwrap_or_default()).await?.and_then(|v| v["host"].as_str().map(str::to_string));
            work.push((sid, host));
        }
        let me = self.clone();
        let gsid = id.to_string();
        tokio::spawn(async move {
            let timeout = me.config().call_timeout;
            let mut ok = true;
            for (sid, host) in work {
                let done = match host {
                    Some(host) => {
                        let server = host.split('#').next().unwrap_or(&host).to_string();
                        let msg = volume_rpc::DeleteSnapshot { snapshot_id: sid.clone() };
                        me.inner.bus.call(&Target::server(VOLUME_TOPIC, &server), &msg, timeout).await.is_ok()
                    }
                    None => true,
                };
                if done {
                    let _ = me.store().resource_delete(SNAPSHOT, &sid).await;
                } else {
                    ok = false;
                    let _ = me.finish(SNAPSHOT, &sid, "deleting", json!({"status": "error_deleting"})).await;
                }
            }
            if ok {
                let _ = me.store().resource_delete(GROUP_SNAPSHOT, &gsid).await;
            } else {
                let _ = me.finish(GROUP_SNAPSHOT, &gsid, "deleting", json!({"status": "error_deleting"})).await;
            }
        });
        Ok(())
    }

    // ---------------------------------------------------------------- volume type encryption

    /// A volume type's encryption record, if it has one.
    pub async fn encryption_get(&self, caller: &Caller<'_>, type_id: &str) -> Result<Option<Value>> {
        let t = self.type_get(caller, type_id).await?;
        self.store().resource_get(ENCRYPTION, t["id"].as_str().unwrap_or_default()).await
    }

    fn parse_encryption(body: &Value, create: bool) -> Result<Map<String, Value>> {
        let Some(obj) = body.as_object() else { return Err(Error::BadRequest("Malformed request body: 'encryption' must be an object".into())) };
        let mut out = Map::new();
        for (k, v) in obj {
            match k.as_str() {
                "provider" => match v {
                    Value::String(s) if !s.is_empty() && s.len() <= 255 => {
                        out.insert(k.clone(), v.clone());
                    }
                    _ => return Err(Error::BadRequest("Invalid input for field/attribute provider.".into())),
                },
                "cipher" => match v {
                    Value::Null => {
                        out.insert(k.clone(), Value::Null);
                    }
                    Value::String(s) if s.len() <= 255 => {
                        out.insert(k.clone(), v.clone());
                    }
                    _ => return Err(Error::BadRequest("Invalid input for field/attribute cipher.".into())),
                },
                "key_size" => match v {
                    Value::Null => {
                        out.insert(k.clone(), Value::Null);
                    }
                    _ => {
                        let n = v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()));
                        match n {
                            Some(n) if n >= 0 => {
                                out.insert(k.clone(), json!(n));
                            }
                            _ => return Err(Error::BadRequest("Invalid input for field/attribute key_size.".into())),
                        }
                    }
                },
                "control_location" => match v.as_str() {
                    Some("front-end") | Some("back-end") => {
                        out.insert(k.clone(), v.clone());
                    }
                    _ => return Err(Error::BadRequest(format!("Invalid input received: Valid control location are: ['front-end', 'back-end'], not {v}."))),
                },
                other => return Err(Error::BadRequest(format!("Invalid input for field/attribute encryption. Additional properties are not allowed ('{other}' was unexpected)"))),
            }
        }
        if create && !out.contains_key("provider") {
            return Err(Error::BadRequest("Invalid input for field/attribute encryption. 'provider' is a required property".into()));
        }
        Ok(out)
    }

    async fn type_in_use(&self, type_id: &str) -> Result<bool> {
        Ok(self.store().resource_list(VOLUME, None).await?.iter().any(|v| v["volume_type_id"] == json!(type_id)))
    }

    /// Records how volumes of a type are encrypted (API-only bookkeeping, as upstream).
    pub async fn encryption_create(&self, caller: &Caller<'_>, type_id: &str, body: &Value) -> Result<Value> {
        let t = self.type_get(caller, type_id).await?;
        let tid = t["id"].as_str().unwrap_or_default().to_string();
        let spec = Self::parse_encryption(body, true)?;
        if self.store().resource_get(ENCRYPTION, &tid).await?.is_some() {
            return Err(Error::BadRequest(format!("Volume type encryption for type {tid} already exists.")));
        }
        if self.type_in_use(&tid).await? {
            return Err(Error::BadRequest("Cannot create encryption specs. Volume type in use.".into()));
        }
        let mut doc = json!({
            "volume_type_id": tid, "encryption_id": new_id(), "key_size": null, "provider": null,
            "control_location": "front-end", "cipher": null, "deleted": false, "created_at": now(),
            "updated_at": null, "deleted_at": null, "status": "active",
        });
        for (k, v) in spec {
            doc[k] = v;
        }
        self.store().resource_insert(ENCRYPTION, &tid, "", &tid, &doc).await?;
        Ok(doc)
    }

    /// Changes a type's encryption record; the fields changed.
    pub async fn encryption_update(&self, caller: &Caller<'_>, type_id: &str, encryption_id: &str, body: &Value) -> Result<Map<String, Value>> {
        let t = self.type_get(caller, type_id).await?;
        let tid = t["id"].as_str().unwrap_or_default().to_string();
        let spec = Self::parse_encryption(body, false)?;
        let mut doc = match self.store().resource_get(ENCRYPTION, &tid).await? {
            Some(d) if d["encryption_id"] == json!(encryption_id) => d,
            _ => return Err(Error::NotFound(format!("Volume type encryption for type {tid} does not exist."))),
        };
        if self.type_in_use(&tid).await? {
            return Err(Error::BadRequest("Cannot update encryption specs. Volume type in use.".into()));
        }
        for (k, v) in &spec {
            doc[k] = v.clone();
        }
        doc["updated_at"] = json!(now());
        self.store().resource_update(ENCRYPTION, &tid, &doc).await?;
        Ok(spec)
    }

    pub async fn encryption_delete(&self, caller: &Caller<'_>, type_id: &str, encryption_id: &str) -> Result<()> {
        let t = self.type_get(caller, type_id).await?;
        let tid = t["id"].as_str().unwrap_or_default().to_string();
        match self.store().resource_get(ENCRYPTION, &tid).await? {
            Some(d) if d["encryption_id"] == json!(encryption_id) => {}
            _ => return Err(Error::NotFound(format!("Volume type encryption for type {tid} does not exist."))),
        }
        if self.type_in_use(&tid).await? {
            return Err(Error::BadRequest("Cannot delete encryption specs. Volume type in use.".into()));
        }
        self.store().resource_delete(ENCRYPTION, &tid).await?;
        Ok(())
    }

    // ---------------------------------------------------------------- backup records

    /// A backup's record for re-import elsewhere: the driver's name and the record, base64 JSON.
    pub async fn backup_export(&self, caller: &Caller<'_>, id: &str) -> Result<Value> {
        let b = self.backup_get(caller, id).await?;
        if b["status"] != json!("available") {
            return Err(Error::BadRequest(format!("Invalid backup: Backup status must be available and not restoring, but current status is: {}.", b["status"].as_str().unwrap_or(""))));
        }
        let mut record = b.clone();
        // Where the objects are: the account of the project that made them.
        if record["object_project_id"].is_null() {
            record["object_project_id"] = b["project_id"].clone();
        }
        let url = base64::engine::general_purpose::STANDARD.encode(record.to_string());
        Ok(json!({"backup_service": BACKUP_SERVICE, "backup_url": url}))
    }

    /// Records a backup from an exported record, under the caller's project, with the record's id.
    pub async fn backup_import(&self, caller: &Caller<'_>, body: &Value) -> Result<Value> {
        let service = str_of(body, "backup_service").ok_or_else(|| Error::BadRequest("Incorrect request body format.".into()))?;
        let url = str_of(body, "backup_url").ok_or_else(|| Error::BadRequest("Incorrect request body format.".into()))?;
        if service != BACKUP_SERVICE {
            return Err(Error::BadRequest(format!("Invalid input received: Import record failed, cannot find backup service to perform the import. Request service {service}.")));
        }
        let invalid = || Error::BadRequest("Invalid input received: Can't parse backup record.".into());
        let raw = base64::engine::general_purpose::STANDARD.decode(url.trim()).map_err(|_| invalid())?;
        let record: Value = serde_json::from_slice(&raw).map_err(|_| invalid())?;
        let id = match str_of(&record, "id") {
            Some(i) if uuid::Uuid::parse_str(i).is_ok() => i.to_string(),
            _ => return Err(invalid()),
        };
        let (Some(prefix), Some(container)) = (str_of(&record, "object_prefix"), str_of(&record, "container")) else {
            return Err(Error::BadRequest("Invalid input received: Backup record is missing the backup's location.".into()));
        };
        if let Some(existing) = self.store().resource_get(BACKUP, &id).await? {
            if existing["status"] != json!("error") {
                return Err(Error::BadRequest("Invalid backup: Backup already exists in database.".into()));
            }
            self.store().resource_delete(BACKUP, &id).await?;
        }
        let now = now();
        let object_project = record.get("object_project_id").filter(|p| p.is_string()).or(record.get("project_id")).cloned().unwrap_or(Value::Null);
        let vid = str_of(&record, "volume_id").unwrap_or_default().to_string();
        let doc = json!({
            "id": id, "volume_id": vid, "snapshot_id": record.get("snapshot_id").cloned().unwrap_or(Value::Null),
            "project_id": caller.project(), "user_id": caller.ctx.user_id,
            "name": record.get("name").cloned().unwrap_or(Value::Null),
            "description": record.get("description").cloned().unwrap_or(Value::Null),
            "size": record["size"].as_i64().unwrap_or(0), "status": "available",
            "availability_zone": record.get("availability_zone").cloned().unwrap_or(Value::Null),
            "container": container, "object_prefix": prefix, "object_count": record["object_count"].as_i64().unwrap_or(0),
            "object_project_id": object_project, "fail_reason": null,
            "is_incremental": record["is_incremental"] == json!(true), "has_dependent_backups": false,
            "created_at": record.get("created_at").cloned().unwrap_or_else(|| json!(now)), "updated_at": now,
            "data_timestamp": record.get("data_timestamp").cloned().unwrap_or_else(|| json!(now)),
            "metadata": record.get("metadata").filter(|m| m.is_object()).cloned().unwrap_or_else(|| json!({})),
            "volume_meta": record.get("volume_meta").cloned().unwrap_or(Value::Null),
        });
        // Keyed by the original volume so that volume's backups include it, as upstream's record does.
        if !self.store().resource_insert(BACKUP, &id, caller.project(), &vid, &doc).await? {
            return Err(Error::BadRequest("Invalid backup: Backup already exists in database.".into()));
        }
        Ok(doc)
    }

    // ---------------------------------------------------------------- revert to snapshot

    /// Puts a volume's data back to its latest snapshot (3.40): both available, the volume detached, the
    /// snapshot the volume's newest and no larger than the volume.
    pub async fn revert_to_snapshot(&self, caller: &Caller<'_>, id: &str, snapshot_id: &str) -> Result<()> {
        let v = self.volume_get(caller, id).await?;
        let s = self.snapshot_get(caller, snapshot_id).await?;
        if s["volume_id"] != json!(id) {
            return Err(Error::BadRequest(format!("Invalid snapshot: Snapshot {snapshot_id} is not a snapshot of volume {id}.")));
        }
        let snapshots = self.store().resource_list_by_parent(SNAPSHOT, id).await?;
        let latest = snapshots.iter().filter(|x| x["status"] == json!("available")).max_by(|a, b| {
            let ka = (a["created_at"].as_str().unwrap_or(""), a["id"].as_str().unwrap_or(""));
            let kb = (b["created_at"].as_str().unwrap_or(""), b["id"].as_str().unwrap_or(""));
            ka.cmp(&kb)
        });
        if latest.map(|l| &l["id"]) != Some(&s["id"]) {
            return Err(Error::BadRequest(format!("Invalid snapshot: Volume {id} doesn't have any snapshot or the specified snapshot {snapshot_id} isn't the latest one.")));
        }
        if v["status"] != json!("available") {
            return Err(Error::BadRequest(format!("Invalid volume: Volume status must be available, but current status is: {}.", v["status"].as_str().unwrap_or(""))));
        }
        if s["status"] != json!("available") {
            return Err(Error::BadRequest(format!("Invalid snapshot: Snapshot status must be available, but current status is: {}.", s["status"].as_str().unwrap_or(""))));
        }
        if v["group_id"].as_str().is_some_and(|g| !g.is_empty()) {
            return Err(Error::BadRequest(format!("Invalid volume: Volume {id} belongs to a group; revert of a grouped volume is not supported.")));
        }
        let size = v["size"].as_i64().unwrap_or(0);
        if s["size"].as_i64().unwrap_or(0) > size {
            return Err(Error::BadRequest(format!("Invalid volume: Volume {id}'s size is smaller than the size of snapshot {snapshot_id}.")));
        }
        let v = self
            .transition(VOLUME, &v, &["available"], "reverting", json!({}), |st| Error::BadRequest(format!("Invalid volume: Volume status must be available, but current status is: {st}.")))
            .await?;
        if let Err(e) = self.transition(SNAPSHOT, &s, &["available"], "restoring", json!({}), |st| Error::BadRequest(format!("Invalid snapshot: Snapshot status must be available, but current status is: {st}."))).await {
            self.finish(VOLUME, id, "reverting", json!({"status": "available"})).await?;
            return Err(e);
        }
        let host = v["host"].as_str().unwrap_or_default().to_string();
        let vid = id.to_string();
        let sid = snapshot_id.to_string();
        let msg = volume_rpc::RevertToSnapshot { volume_id: vid.clone(), snapshot_id: sid.clone(), size_gb: size };
        self.dispatch(&host, msg, move |me, outcome| async move {
            let vs = if outcome.is_ok() { "available" } else { "error" };
            me.finish(VOLUME, &vid, "reverting", json!({"status": vs})).await?;
            me.finish(SNAPSHOT, &sid, "restoring", json!({"status": "available"})).await?;
            Ok(())
        });
        Ok(())
    }
}
