//! Instances with their metadata, tags, faults and instance actions. Times are unix microseconds.

use std::collections::BTreeMap;

use compute_rpc::FlavorSpec;
use db::{Bool, Migration};
use sqlx::Row;

use super::Store;
use crate::error::Error;

pub const MIGRATION: Migration = Migration {
    version: 3,
    name: "instances and instance actions",
    sql: "
CREATE TABLE compute_instance (
    uuid {id} PRIMARY KEY,
    display_name {name} NOT NULL,
    hostname {name} NOT NULL,
    description {text},
    project_id {id} NOT NULL,
    user_id {id} NOT NULL,
    flavorid {name} NOT NULL,
    flavor {text} NOT NULL,
    image_ref {id} NOT NULL,
    image_properties {text} NOT NULL,
    key_name {name},
    key_data {text},
    user_data {text},
    config_drive {bool} NOT NULL,
    availability_zone {name},
    launch_index {int} NOT NULL,
    reservation_id {id} NOT NULL,
    vm_state {id} NOT NULL,
    task_state {id},
    power_state {int} NOT NULL,
    host {name},
    node {name},
    node_uuid {id},
    locked_by {id},
    locked_reason {text},
    access_ip_v4 {name},
    access_ip_v6 {name},
    progress {int} NOT NULL,
    fault {text},
    scheduling {text},
    created_at {int} NOT NULL,
    updated_at {int} NOT NULL,
    launched_at {int},
    terminated_at {int},
    deleted_at {int},
    deleted {bool} NOT NULL
);
CREATE INDEX compute_instance_project ON compute_instance (project_id, deleted);
CREATE INDEX compute_instance_host ON compute_instance (host, deleted);
CREATE INDEX compute_instance_updated ON compute_instance (updated_at);
CREATE TABLE compute_instance_metadata (
    instance_uuid {id} NOT NULL,
    meta_key {name} NOT NULL,
    meta_value {text} NOT NULL,
    PRIMARY KEY (instance_uuid, meta_key)
);
CREATE TABLE compute_instance_tag (
    instance_uuid {id} NOT NULL,
    tag {name} NOT NULL,
    PRIMARY KEY (instance_uuid, tag)
);
CREATE TABLE compute_instance_action (
    id {serial},
    instance_uuid {id} NOT NULL,
    request_id {id} NOT NULL,
    action_name {id} NOT NULL,
    project_id {id} NOT NULL,
    user_id {id} NOT NULL,
    start_time {int} NOT NULL,
    finish_time {int},
    message {text},
    updated_at {int} NOT NULL
);
CREATE UNIQUE INDEX compute_instance_action_request ON compute_instance_action (instance_uuid, request_id);
CREATE TABLE compute_instance_action_event (
    id {serial},
    action_id {int} NOT NULL,
    event_name {name} NOT NULL,
    host {name},
    start_time {int} NOT NULL,
    finish_time {int},
    result {id},
    details {text}
);
CREATE INDEX compute_instance_action_event_action ON compute_instance_action_event (action_id)",
};

/// One instance as stored (without metadata and tags, which have their own tables).
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceRow {
    pub uuid: String,
    pub display_name: String,
    pub hostname: String,
    pub description: Option<String>,
    pub project_id: String,
    pub user_id: String,
    pub flavor: FlavorSpec,
    pub image_ref: String,
    pub image_properties: BTreeMap<String, serde_json::Value>,
    pub key_name: Option<String>,
    pub key_data: Option<String>,
    pub user_data: Option<String>,
    pub config_drive: bool,
    pub availability_zone: Option<String>,
    pub launch_index: i64,
    pub reservation_id: String,
    pub vm_state: String,
    pub task_state: Option<String>,
    pub power_state: i64,
    pub host: Option<String>,
    pub node: Option<String>,
    pub node_uuid: Option<String>,
    pub locked_by: Option<String>,
    pub locked_reason: Option<String>,
    pub access_ip_v4: Option<String>,
    pub access_ip_v6: Option<String>,
    pub progress: i64,
    /// `{"code", "message", "details", "created"}` of the last failure.
    pub fault: Option<serde_json::Value>,
    /// The conductor's scheduling state (alternates, attempts).
    pub scheduling: Option<serde_json::Value>,
    pub created_at: i64,
    pub updated_at: i64,
    pub launched_at: Option<i64>,
    pub terminated_at: Option<i64>,
    pub deleted_at: Option<i64>,
    pub deleted: bool,
}

impl InstanceRow {
    /// A new instance as the API records it before scheduling: `building` in task `scheduling`, no host, no power
    /// state, no options; callers set the rest with struct update syntax.
    pub fn new(uuid: String, name: &str, project_id: &str, user_id: &str, flavor: FlavorSpec, image_ref: &str, now: i64) -> Self {
        InstanceRow {
            uuid,
            display_name: name.to_string(),
            hostname: name.to_string(),
            description: None,
            project_id: project_id.to_string(),
            user_id: user_id.to_string(),
            flavor,
            image_ref: image_ref.to_string(),
            image_properties: BTreeMap::new(),
            key_name: None,
            key_data: None,
            user_data: None,
            config_drive: false,
            availability_zone: None,
            launch_index: 0,
            reservation_id: String::new(),
            vm_state: compute_rpc::vm_state::BUILDING.to_string(),
            task_state: Some(compute_rpc::task_state::SCHEDULING.to_string()),
            power_state: 0,
            host: None,
            node: None,
            node_uuid: None,
            locked_by: None,
            locked_reason: None,
            access_ip_v4: None,
            access_ip_v6: None,
            progress: 0,
            fault: None,
            scheduling: None,
            created_at: now,
            updated_at: now,
            launched_at: None,
            terminated_at: None,
            deleted_at: None,
            deleted: false,
        }
    }
}

const COLUMNS: &str = "uuid, display_name, hostname, description, project_id, user_id, flavorid, flavor, image_ref, \
    image_properties, key_name, key_data, user_data, config_drive, availability_zone, launch_index, reservation_id, \
    vm_state, task_state, power_state, host, node, node_uuid, locked_by, locked_reason, access_ip_v4, access_ip_v6, \
    progress, fault, scheduling, created_at, updated_at, launched_at, terminated_at, deleted_at, deleted";

fn json_col<T: serde::de::DeserializeOwned>(row: &sqlx::any::AnyRow, col: &str) -> Result<T, Error> {
    let s: String = row.try_get(col)?;
    serde_json::from_str(&s).map_err(|e| Error::Config(format!("stored {col}: {e}")))
}

fn opt_json_col(row: &sqlx::any::AnyRow, col: &str) -> Result<Option<serde_json::Value>, Error> {
    let s: Option<String> = row.try_get(col)?;
    s.map(|s| serde_json::from_str(&s).map_err(|e| Error::Config(format!("stored {col}: {e}")))).transpose()
}

fn instance_from_row(row: &sqlx::any::AnyRow) -> Result<InstanceRow, Error> {
    Ok(InstanceRow {
        uuid: row.try_get("uuid")?,
        display_name: row.try_get("display_name")?,
        hostname: row.try_get("hostname")?,
        description: row.try_get("description")?,
        project_id: row.try_get("project_id")?,
        user_id: row.try_get("user_id")?,
        flavor: json_col(row, "flavor")?,
        image_ref: row.try_get("image_ref")?,
        image_properties: json_col(row, "image_properties")?,
        key_name: row.try_get("key_name")?,
        key_data: row.try_get("key_data")?,
        user_data: row.try_get("user_data")?,
        config_drive: row.try_get::<Bool, _>("config_drive")?.0,
        availability_zone: row.try_get("availability_zone")?,
        launch_index: row.try_get("launch_index")?,
        reservation_id: row.try_get("reservation_id")?,
        vm_state: row.try_get("vm_state")?,
        task_state: row.try_get("task_state")?,
        power_state: row.try_get("power_state")?,
        host: row.try_get("host")?,
        node: row.try_get("node")?,
        node_uuid: row.try_get("node_uuid")?,
        locked_by: row.try_get("locked_by")?,
        locked_reason: row.try_get("locked_reason")?,
        access_ip_v4: row.try_get("access_ip_v4")?,
        access_ip_v6: row.try_get("access_ip_v6")?,
        progress: row.try_get("progress")?,
        fault: opt_json_col(row, "fault")?,
        scheduling: opt_json_col(row, "scheduling")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        launched_at: row.try_get("launched_at")?,
        terminated_at: row.try_get("terminated_at")?,
        deleted_at: row.try_get("deleted_at")?,
        deleted: row.try_get::<Bool, _>("deleted")?.0,
    })
}

/// What a list narrows by in SQL; the API applies the rest (name regex, tags, status mapping) in memory.
#[derive(Clone, Debug, Default)]
pub struct InstanceFilter {
    /// Only this project's instances (`None`: every project, for admins with `all_tenants`).
    pub project_id: Option<String>,
    pub user_id: Option<String>,
    /// Include deleted instances (admins' `deleted=true`, and `changes-since` lists).
    pub deleted: Option<bool>,
    pub host: Option<String>,
    pub flavorid: Option<String>,
    pub image_ref: Option<String>,
    pub vm_states: Option<Vec<String>>,
    pub reservation_id: Option<String>,
    /// `updated_at >= changes_since` (microseconds).
    pub changes_since: Option<i64>,
    pub changes_before: Option<i64>,
}

/// One instance action (`create`, `stop`, …) of one request.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionRow {
    pub id: i64,
    pub instance_uuid: String,
    pub request_id: String,
    pub action: String,
    pub project_id: String,
    pub user_id: String,
    pub start_time: i64,
    pub finish_time: Option<i64>,
    pub message: Option<String>,
    pub updated_at: i64,
}

/// One event of an instance action.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionEventRow {
    pub event: String,
    pub host: Option<String>,
    pub start_time: i64,
    pub finish_time: Option<i64>,
    pub result: Option<String>,
    pub details: Option<String>,
}

fn to_json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// `?, ?, …` for `n` binds.
pub(super) fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Store {
    /// Inserts new instances with their metadata and their `create` action, in one transaction.
    pub async fn instances_insert(
        &self,
        rows: &[InstanceRow],
        metadata: &BTreeMap<String, String>,
        request_id: &str,
    ) -> Result<(), Error> {
        let mut tx = self.db.begin().await?;
        let sql = format!("INSERT INTO compute_instance ({COLUMNS}) VALUES ({})", placeholders(36));
        for r in rows {
            self.db
                .query(db::sqlx::AssertSqlSafe(sql.clone()))
                .bind(&r.uuid)
                .bind(&r.display_name)
                .bind(&r.hostname)
                .bind(&r.description)
                .bind(&r.project_id)
                .bind(&r.user_id)
                .bind(&r.flavor.flavorid)
                .bind(to_json(&r.flavor))
                .bind(&r.image_ref)
                .bind(to_json(&r.image_properties))
                .bind(&r.key_name)
                .bind(&r.key_data)
                .bind(&r.user_data)
                .bind(r.config_drive)
                .bind(&r.availability_zone)
                .bind(r.launch_index)
                .bind(&r.reservation_id)
                .bind(&r.vm_state)
                .bind(&r.task_state)
                .bind(r.power_state)
                .bind(&r.host)
                .bind(&r.node)
                .bind(&r.node_uuid)
                .bind(&r.locked_by)
                .bind(&r.locked_reason)
                .bind(&r.access_ip_v4)
                .bind(&r.access_ip_v6)
                .bind(r.progress)
                .bind(r.fault.as_ref().map(to_json))
                .bind(r.scheduling.as_ref().map(to_json))
                .bind(r.created_at)
                .bind(r.updated_at)
                .bind(r.launched_at)
                .bind(r.terminated_at)
                .bind(r.deleted_at)
                .bind(r.deleted)
                .execute(&mut *tx)
                .await?;
            for (k, v) in metadata {
                self.db
                    .query("INSERT INTO compute_instance_metadata (instance_uuid, meta_key, meta_value) VALUES (?, ?, ?)")
                    .bind(&r.uuid)
                    .bind(k)
                    .bind(v)
                    .execute(&mut *tx)
                    .await?;
            }
            self.db
                .query(
                    "INSERT INTO compute_instance_action (instance_uuid, request_id, action_name, project_id, user_id, \
                     start_time, updated_at) VALUES (?, ?, 'create', ?, ?, ?, ?)",
                )
                .bind(&r.uuid)
                .bind(request_id)
                .bind(&r.project_id)
                .bind(&r.user_id)
                .bind(r.created_at)
                .bind(r.created_at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// One instance, deleted or not.
    pub async fn instance_get(&self, uuid: &str) -> Result<Option<InstanceRow>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM compute_instance WHERE uuid = ?");
        let row = self.db.query(db::sqlx::AssertSqlSafe(sql)).bind(uuid).fetch_optional(self.db.pool()).await?;
        row.as_ref().map(instance_from_row).transpose()
    }

    /// Instances matching `f`, newest first (upstream's default `created_at desc`, then uuid).
    pub async fn instance_list(&self, f: &InstanceFilter) -> Result<Vec<InstanceRow>, Error> {
        let mut sql = format!("SELECT {COLUMNS} FROM compute_instance WHERE 1 = 1");
        let mut binds: Vec<Bind> = Vec::new();
        let mut eq = |col: &str, v: &Option<String>, binds: &mut Vec<Bind>| {
            if let Some(v) = v {
                sql.push_str(&format!(" AND {col} = ?"));
                binds.push(Bind::S(v.clone()));
            }
        };
        eq("project_id", &f.project_id, &mut binds);
        eq("user_id", &f.user_id, &mut binds);
        eq("host", &f.host, &mut binds);
        eq("flavorid", &f.flavorid, &mut binds);
        eq("image_ref", &f.image_ref, &mut binds);
        eq("reservation_id", &f.reservation_id, &mut binds);
        if let Some(d) = f.deleted {
            sql.push_str(" AND deleted = ?");
            binds.push(Bind::B(d));
        }
        if let Some(states) = &f.vm_states {
            if states.is_empty() {
                return Ok(Vec::new());
            }
            sql.push_str(&format!(" AND vm_state IN ({})", placeholders(states.len())));
            binds.extend(states.iter().cloned().map(Bind::S));
        }
        if let Some(t) = f.changes_since {
            sql.push_str(" AND updated_at >= ?");
            binds.push(Bind::I(t));
        }
        if let Some(t) = f.changes_before {
            sql.push_str(" AND updated_at <= ?");
            binds.push(Bind::I(t));
        }
        sql.push_str(" ORDER BY created_at DESC, uuid DESC");
        let mut q = self.db.query(db::sqlx::AssertSqlSafe(sql));
        for b in binds {
            q = match b {
                Bind::S(s) => q.bind(s),
                Bind::I(i) => q.bind(i),
                Bind::B(b) => q.bind(b),
            };
        }
        let rows = q.fetch_all(self.db.pool()).await?;
        rows.iter().map(instance_from_row).collect()
    }

    /// Applies `set` (column → value) if the instance is not deleted and, when given, its task state is one of
    /// `expected` (`None` in the list matches no task state). Bumps `updated_at`. `Ok(false)` if nothing matched.
    pub async fn instance_update(
        &self,
        uuid: &str,
        expected: Option<&[Option<String>]>,
        set: &[(&str, Value)],
    ) -> Result<bool, Error> {
        let mut sql = String::from("UPDATE compute_instance SET updated_at = ?");
        for (col, _) in set {
            sql.push_str(&format!(", {col} = ?"));
        }
        sql.push_str(" WHERE uuid = ? AND deleted = ?");
        if let Some(expected) = expected {
            let named: Vec<&String> = expected.iter().flatten().collect();
            let mut alts = Vec::new();
            if !named.is_empty() {
                alts.push(format!("task_state IN ({})", placeholders(named.len())));
            }
            if expected.iter().any(|e| e.is_none()) {
                alts.push("task_state IS NULL".to_string());
            }
            if alts.is_empty() {
                return Ok(false);
            }
            sql.push_str(&format!(" AND ({})", alts.join(" OR ")));
        }
        let mut q = self.db.query(db::sqlx::AssertSqlSafe(sql)).bind(now_us());
        for (_, v) in set {
            q = match v {
                Value::S(s) => q.bind(s.clone()),
                Value::I(i) => q.bind(*i),
                Value::B(b) => q.bind(*b),
                Value::Json(j) => q.bind(j.as_ref().map(to_json)),
            };
        }
        q = q.bind(uuid).bind(false);
        if let Some(expected) = expected {
            for e in expected.iter().flatten() {
                q = q.bind(e.clone());
            }
        }
        let n = q.execute(self.db.pool()).await?;
        Ok(n.rows_affected() > 0)
    }

    /// Marks an instance deleted (vm_state `deleted`, no task, no host's power), keeping the row for `changes-since`
    /// and instance actions, and drops its metadata and tags.
    pub async fn instance_mark_deleted(&self, uuid: &str) -> Result<bool, Error> {
        let now = now_us();
        let mut tx = self.db.begin().await?;
        let n = self
            .db
            .query(
                "UPDATE compute_instance SET deleted = ?, deleted_at = ?, terminated_at = ?, updated_at = ?, \
                 vm_state = 'deleted', task_state = NULL, power_state = 0 WHERE uuid = ? AND deleted = ?",
            )
            .bind(true)
            .bind(now)
            .bind(now)
            .bind(now)
            .bind(uuid)
            .bind(false)
            .execute(&mut *tx)
            .await?;
        self.db.query("DELETE FROM compute_instance_metadata WHERE instance_uuid = ?").bind(uuid).execute(&mut *tx).await?;
        self.db.query("DELETE FROM compute_instance_tag WHERE instance_uuid = ?").bind(uuid).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(n.rows_affected() > 0)
    }

    /// Live instances per project: (count, vcpus, ram) for quotas.
    pub async fn instance_usage(&self, project_id: &str) -> Result<(i64, i64, i64), Error> {
        let rows = self
            .db
            .query("SELECT flavor FROM compute_instance WHERE project_id = ? AND deleted = ?")
            .bind(project_id)
            .bind(false)
            .fetch_all(self.db.pool())
            .await?;
        let mut usage = (0, 0, 0);
        for r in &rows {
            let f: FlavorSpec = json_col(r, "flavor")?;
            usage.0 += 1;
            usage.1 += f.vcpus;
            usage.2 += f.memory_mb;
        }
        Ok(usage)
    }

    // ----- metadata and tags -----

    /// Metadata of many instances at once.
    pub async fn metadata_of(&self, uuids: &[&str]) -> Result<BTreeMap<String, BTreeMap<String, String>>, Error> {
        self.key_values(uuids, "SELECT instance_uuid, meta_key, meta_value FROM compute_instance_metadata", |r| {
            Ok((r.try_get("meta_key")?, r.try_get("meta_value")?))
        })
        .await
        .map(|m| m.into_iter().map(|(k, v)| (k, v.into_iter().collect())).collect())
    }

    /// Tags of many instances at once, sorted.
    pub async fn tags_of(&self, uuids: &[&str]) -> Result<BTreeMap<String, Vec<String>>, Error> {
        self.key_values(uuids, "SELECT instance_uuid, tag FROM compute_instance_tag", |r| r.try_get("tag").map_err(Error::from))
            .await
    }

    pub(super) async fn key_values<T>(
        &self,
        uuids: &[&str],
        select: &str,
        map: impl Fn(&sqlx::any::AnyRow) -> Result<T, Error>,
    ) -> Result<BTreeMap<String, Vec<T>>, Error> {
        let mut out: BTreeMap<String, Vec<T>> = BTreeMap::new();
        for chunk in uuids.chunks(500) {
            let sql = format!("{select} WHERE instance_uuid IN ({})", placeholders(chunk.len()));
            let mut q = self.db.query(db::sqlx::AssertSqlSafe(sql));
            for u in chunk {
                q = q.bind(u.to_string());
            }
            for r in q.fetch_all(self.db.pool()).await? {
                out.entry(r.try_get("instance_uuid")?).or_default().push(map(&r)?);
            }
        }
        Ok(out)
    }

    /// Replaces all metadata (`replace`) or merges `items` into it.
    pub async fn metadata_set(&self, uuid: &str, items: &BTreeMap<String, String>, replace: bool) -> Result<(), Error> {
        let mut tx = self.db.begin().await?;
        if replace {
            self.db.query("DELETE FROM compute_instance_metadata WHERE instance_uuid = ?").bind(uuid).execute(&mut *tx).await?;
        }
        for (k, v) in items {
            if !replace {
                self.db
                    .query("DELETE FROM compute_instance_metadata WHERE instance_uuid = ? AND meta_key = ?")
                    .bind(uuid)
                    .bind(k)
                    .execute(&mut *tx)
                    .await?;
            }
            self.db
                .query("INSERT INTO compute_instance_metadata (instance_uuid, meta_key, meta_value) VALUES (?, ?, ?)")
                .bind(uuid)
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await?;
        }
        self.db.query("UPDATE compute_instance SET updated_at = ? WHERE uuid = ?").bind(now_us()).bind(uuid).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn metadata_delete(&self, uuid: &str, key: &str) -> Result<bool, Error> {
        let n = self
            .db
            .query("DELETE FROM compute_instance_metadata WHERE instance_uuid = ? AND meta_key = ?")
            .bind(uuid)
            .bind(key)
            .execute(self.db.pool())
            .await?;
        Ok(n.rows_affected() > 0)
    }

    /// Replaces every tag of an instance.
    pub async fn tags_set(&self, uuid: &str, tags: &[String]) -> Result<(), Error> {
        let mut tx = self.db.begin().await?;
        self.db.query("DELETE FROM compute_instance_tag WHERE instance_uuid = ?").bind(uuid).execute(&mut *tx).await?;
        for t in tags {
            self.db
                .query("INSERT INTO compute_instance_tag (instance_uuid, tag) VALUES (?, ?)")
                .bind(uuid)
                .bind(t)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Adds one tag; `Ok(false)` if it was there.
    pub async fn tag_add(&self, uuid: &str, tag: &str) -> Result<bool, Error> {
        let r = self
            .db
            .query("INSERT INTO compute_instance_tag (instance_uuid, tag) VALUES (?, ?)")
            .bind(uuid)
            .bind(tag)
            .execute(self.db.pool())
            .await;
        Ok(db::insert_unless_duplicate(r)?)
    }

    pub async fn tag_delete(&self, uuid: &str, tag: &str) -> Result<bool, Error> {
        let n = self
            .db
            .query("DELETE FROM compute_instance_tag WHERE instance_uuid = ? AND tag = ?")
            .bind(uuid)
            .bind(tag)
            .execute(self.db.pool())
            .await?;
        Ok(n.rows_affected() > 0)
    }

    // ----- instance actions -----

    /// Records the start of an action of request `request_id` (`Ok(false)` if that request already has one).
    pub async fn action_start(&self, a: &ActionRow) -> Result<bool, Error> {
        let r = self
            .db
            .query(
                "INSERT INTO compute_instance_action (instance_uuid, request_id, action_name, project_id, user_id, \
                 start_time, message, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&a.instance_uuid)
            .bind(&a.request_id)
            .bind(&a.action)
            .bind(&a.project_id)
            .bind(&a.user_id)
            .bind(a.start_time)
            .bind(&a.message)
            .bind(a.updated_at)
            .execute(self.db.pool())
            .await;
        Ok(db::insert_unless_duplicate(r)?)
    }

    fn action_from_row(r: &sqlx::any::AnyRow) -> Result<ActionRow, Error> {
        Ok(ActionRow {
            id: r.try_get("id")?,
            instance_uuid: r.try_get("instance_uuid")?,
            request_id: r.try_get("request_id")?,
            action: r.try_get("action_name")?,
            project_id: r.try_get("project_id")?,
            user_id: r.try_get("user_id")?,
            start_time: r.try_get("start_time")?,
            finish_time: r.try_get("finish_time")?,
            message: r.try_get("message")?,
            updated_at: r.try_get("updated_at")?,
        })
    }

    /// An instance's actions, newest first.
    pub async fn actions(&self, uuid: &str) -> Result<Vec<ActionRow>, Error> {
        let rows = self
            .db
            .query(
                "SELECT id, instance_uuid, request_id, action_name, project_id, user_id, start_time, finish_time, \
                 message, updated_at FROM compute_instance_action WHERE instance_uuid = ? ORDER BY start_time DESC, id DESC",
            )
            .bind(uuid)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(Self::action_from_row).collect()
    }

    pub async fn action(&self, uuid: &str, request_id: &str) -> Result<Option<ActionRow>, Error> {
        let row = self
            .db
            .query(
                "SELECT id, instance_uuid, request_id, action_name, project_id, user_id, start_time, finish_time, \
                 message, updated_at FROM compute_instance_action WHERE instance_uuid = ? AND request_id = ?",
            )
            .bind(uuid)
            .bind(request_id)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(Self::action_from_row).transpose()
    }

    /// Records an event's start, or its finish (updating the started event, or adding a finished one).
    pub async fn action_event(
        &self,
        uuid: &str,
        request_id: &str,
        event: &str,
        host: &str,
        finish: Option<(bool, Option<&str>)>,
    ) -> Result<(), Error> {
        let Some(action) = self.action(uuid, request_id).await? else { return Ok(()) };
        let now = now_us();
        match finish {
            None => {
                self.db
                    .query(
                        "INSERT INTO compute_instance_action_event (action_id, event_name, host, start_time) \
                         VALUES (?, ?, ?, ?)",
                    )
                    .bind(action.id)
                    .bind(event)
                    .bind(host)
                    .bind(now)
                    .execute(self.db.pool())
                    .await?;
            }
            Some((ok, details)) => {
                let result = if ok { "Success" } else { "Error" };
                let n = self
                    .db
                    .query(
                        "UPDATE compute_instance_action_event SET finish_time = ?, result = ?, details = ? \
                         WHERE action_id = ? AND event_name = ? AND finish_time IS NULL",
                    )
                    .bind(now)
                    .bind(result)
                    .bind(details)
                    .bind(action.id)
                    .bind(event)
                    .execute(self.db.pool())
                    .await?;
                if n.rows_affected() == 0 {
                    self.db
                        .query(
                            "INSERT INTO compute_instance_action_event (action_id, event_name, host, start_time, \
                             finish_time, result, details) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        )
                        .bind(action.id)
                        .bind(event)
                        .bind(host)
                        .bind(now)
                        .bind(now)
                        .bind(result)
                        .bind(details)
                        .execute(self.db.pool())
                        .await?;
                }
                let message = if ok { None } else { Some("Error") };
                self.db
                    .query("UPDATE compute_instance_action SET finish_time = ?, updated_at = ?, message = COALESCE(?, message) WHERE id = ?")
                    .bind(now)
                    .bind(now)
                    .bind(message)
                    .bind(action.id)
                    .execute(self.db.pool())
                    .await?;
            }
        }
        Ok(())
    }

    pub async fn action_events(&self, action_id: i64) -> Result<Vec<ActionEventRow>, Error> {
        let rows = self
            .db
            .query(
                "SELECT event_name, host, start_time, finish_time, result, details FROM compute_instance_action_event \
                 WHERE action_id = ? ORDER BY id",
            )
            .bind(action_id)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ActionEventRow {
                    event: r.try_get("event_name")?,
                    host: r.try_get("host")?,
                    start_time: r.try_get("start_time")?,
                    finish_time: r.try_get("finish_time")?,
                    result: r.try_get("result")?,
                    details: r.try_get("details")?,
                })
            })
            .collect()
    }
}

enum Bind {
    S(String),
    I(i64),
    B(bool),
}

/// A value for [`Store::instance_update`].
#[derive(Clone, Debug)]
pub enum Value {
    S(Option<String>),
    I(Option<i64>),
    B(bool),
    Json(Option<serde_json::Value>),
}
