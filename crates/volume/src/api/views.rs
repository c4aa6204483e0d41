//! One view per resource, deciding every field by microversion, purpose and role.

use api_common::Microversion;
use serde_json::{Value, json};

use super::AppState;

/// What a volume view is for: the create/update answers carry no extended (`os-vol-*`) attributes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Summary,
    Create,
    Show,
}

fn mv(major: u32, minor: u32) -> Microversion {
    Microversion::new(major, minor)
}

/// The attachments a volume shows (upstream's summary: `id` is the volume's id).
pub fn attachment_summaries(attachments: &[Value]) -> Value {
    json!(attachments
        .iter()
        .filter(|a| a["attach_status"] == json!("attached"))
        .map(|a| json!({
            "server_id": a["instance_uuid"],
            "attachment_id": a["id"],
            "attached_at": a["attach_time"],
            "host_name": a["attached_host"],
            "volume_id": a["volume_id"],
            "device": a["mountpoint"],
            "id": a["volume_id"],
        }))
        .collect::<Vec<_>>())
}

pub fn volume(s: &AppState, v: &Value, attachments: &[Value], version: Microversion, purpose: Purpose, is_admin: bool) -> Value {
    let project = v["project_id"].as_str().unwrap_or_default();
    let id = v["id"].as_str().unwrap_or_default();
    let links = s.link(project, "volumes", id);
    if purpose == Purpose::Summary {
        return json!({"id": id, "name": v["name"], "links": links});
    }
    let mut out = json!({
        "id": id,
        "name": v["name"],
        "description": v["description"],
        "size": v["size"],
        "status": v["status"],
        "availability_zone": v["availability_zone"],
        "created_at": v["created_at"],
        "updated_at": v["updated_at"],
        "attachments": attachment_summaries(attachments),
        "links": links,
        "metadata": v["metadata"],
        "bootable": if v["bootable"] == json!(true) { "true" } else { "false" },
        "encrypted": v["encrypted"] == json!(true),
        "multiattach": v["multiattach"] == json!(true),
        "replication_status": null,
        "snapshot_id": v["snapshot_id"],
        "source_volid": v["source_volid"],
        "consistencygroup_id": null,
        "user_id": v["user_id"],
        "volume_type": v["volume_type"],
        "migration_status": v["migration_status"],
    });
    if version >= mv(3, 13) {
        out["group_id"] = v.get("group_id").cloned().unwrap_or(Value::Null);
    }
    if purpose == Purpose::Show {
        out["os-vol-tenant-attr:tenant_id"] = json!(project);
        if v["volume_image_metadata"].is_object() {
            out["volume_image_metadata"] = v["volume_image_metadata"].clone();
        }
        if is_admin {
            out["os-vol-host-attr:host"] = v["host"].clone();
            out["os-vol-mig-status-attr:migstat"] = v["migration_status"].clone();
            out["os-vol-mig-status-attr:name_id"] = Value::Null;
            if version >= mv(3, 21) {
                out["provider_id"] = Value::Null;
            }
        }
    }
    out
}

pub fn snapshot(s: &SnapshotCtx, doc: &Value, detail: bool) -> Value {
    let mut out = json!({
        "id": doc["id"],
        "volume_id": doc["volume_id"],
        "name": doc["name"],
        "description": doc["description"],
        "size": doc["size"],
        "status": doc["status"],
        "metadata": doc["metadata"],
        "created_at": doc["created_at"],
        "updated_at": doc["updated_at"],
    });
    if detail {
        out["os-extended-snapshot-attributes:progress"] = doc["progress"].clone();
        out["os-extended-snapshot-attributes:project_id"] = doc["project_id"].clone();
    }
    if s.version >= mv(3, 41) {
        out["user_id"] = doc["user_id"].clone();
    }
    if s.version >= mv(3, 14) {
        out["group_snapshot_id"] = doc.get("group_snapshot_id").cloned().unwrap_or(Value::Null);
    }
    out
}

/// What a snapshot view depends on.
pub struct SnapshotCtx {
    pub version: Microversion,
}

pub fn volume_type(t: &Value, is_admin: bool) -> Value {
    let mut out = json!({
        "id": t["id"],
        "name": t["name"],
        "description": t["description"],
        "is_public": t["is_public"],
        "os-volume-type-access:is_public": t["is_public"],
    });
    if !t["qos_specs_id"].is_null() {
        out["qos_specs_id"] = t["qos_specs_id"].clone();
    }
    if is_admin {
        out["extra_specs"] = t["extra_specs"].clone();
    } else {
        // Users see the specs that describe the type, not the ones that steer the scheduler.
        let visible: serde_json::Map<String, Value> = t["extra_specs"]
            .as_object()
            .map(|m| m.iter().filter(|(k, _)| ["multiattach", "RESKEY:availability_zones", "replication_enabled"].contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        out["extra_specs"] = Value::Object(visible);
    }
    out
}

pub fn qos(q: &Value) -> Value {
    json!({"id": q["id"], "name": q["name"], "consumer": q["consumer"], "specs": q["specs"]})
}

pub fn backup(s: &AppState, b: &Value, detail: bool, version: Microversion, is_admin: bool) -> Value {
    let project = b["project_id"].as_str().unwrap_or_default();
    let links = s.link(project, "backups", b["id"].as_str().unwrap_or_default());
    if !detail {
        return json!({"id": b["id"], "name": b["name"], "links": links});
    }
    let mut out = json!({
        "id": b["id"],
        "name": b["name"],
        "description": b["description"],
        "status": b["status"],
        "size": b["size"],
        "volume_id": b["volume_id"],
        "snapshot_id": b["snapshot_id"],
        "availability_zone": b["availability_zone"],
        "container": b["container"],
        "object_count": b["object_count"],
        "fail_reason": b["fail_reason"],
        "created_at": b["created_at"],
        "updated_at": b["updated_at"],
        "data_timestamp": b["data_timestamp"],
        "is_incremental": b["is_incremental"],
        "has_dependent_backups": b["has_dependent_backups"],
        "links": links,
    });
    if version >= mv(3, 18) && is_admin {
        out["os-backup-project-attr:project_id"] = json!(project);
    }
    if version >= mv(3, 43) {
        out["metadata"] = if b["metadata"].is_object() { b["metadata"].clone() } else { json!({}) };
    }
    out
}

pub fn attachment(a: &Value, detail: bool) -> Value {
    let mut out = json!({
        "id": a["id"],
        "status": a["status"],
        "instance": a["instance_uuid"],
        "volume_id": a["volume_id"],
    });
    if detail {
        out["attach_mode"] = a["attach_mode"].clone();
        out["attached_at"] = a["attach_time"].clone();
        out["detached_at"] = a["detach_time"].clone();
        out["connection_info"] = a["connection_info"].clone();
    }
    out
}

pub fn group_type(t: &Value, is_admin: bool) -> Value {
    let mut out = json!({
        "id": t["id"],
        "name": t["name"],
        "description": t["description"],
        "is_public": t["is_public"],
    });
    // Upstream shows the specs to those allowed to manage them.
    if is_admin {
        out["group_specs"] = if t["group_specs"].is_object() { t["group_specs"].clone() } else { json!({}) };
    }
    out
}

/// A group: `id` and `name` alone in summaries; `volumes` when asked for (3.25, `list_volume`).
pub fn group(g: &Value, version: Microversion, detail: bool, volumes: Option<Vec<Value>>) -> Value {
    if !detail {
        return json!({"id": g["id"], "name": g["name"]});
    }
    let mut out = json!({
        "id": g["id"],
        "name": g["name"],
        "description": g["description"],
        "status": g["status"],
        "availability_zone": g["availability_zone"],
        "created_at": g["created_at"],
        "group_type": g["group_type"],
        "volume_types": g["volume_types"],
    });
    if version >= mv(3, 14) {
        out["group_snapshot_id"] = g["group_snapshot_id"].clone();
        out["source_group_id"] = g["source_group_id"].clone();
    }
    if version >= mv(3, 38) {
        out["replication_status"] = g["replication_status"].clone();
    }
    if let Some(v) = volumes {
        out["volumes"] = json!(v);
    }
    out
}

/// A group snapshot: `id` and `name` alone in summaries.
pub fn group_snapshot(s: &Value, detail: bool) -> Value {
    if !detail {
        return json!({"id": s["id"], "name": s["name"]});
    }
    json!({
        "id": s["id"],
        "group_id": s["group_id"],
        "name": s["name"],
        "description": s["description"],
        "status": s["status"],
        "created_at": s["created_at"],
        "group_type_id": s["group_type_id"],
    })
}
