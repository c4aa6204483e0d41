//! The volume service's tables and every query on them; handlers never run SQL. Tables are prefixed `volume_`.
//!
//! Resources (volumes, snapshots, backups, attachments, types, QoS specs, quota sets) are JSON documents in
//! `volume_resource`, keyed by kind and id, with the owning project, the parent (a snapshot's or attachment's
//! volume) and the status as columns. A status change is a compare-and-swap on the status column
//! ([`Store::resource_transition`]): two requests racing to act on one volume cannot both win, so no action is
//! applied to a volume in a state it does not allow. `volume_service` holds the services' heartbeats and the
//! backends' last reports.

use db::{Database, Migration};
use serde_json::Value;
use sqlx::Row;

use crate::error::Result;

/// Every volume migration, in order.
pub const MIGRATIONS: &[Migration] = &[INITIAL];

const INITIAL: Migration = Migration {
    version: 1,
    name: "initial volume schema",
    sql: "
CREATE TABLE volume_resource (
    kind {name} NOT NULL,
    id {id} NOT NULL,
    project_id {id} NOT NULL,
    parent_id {id} NOT NULL,
    status {name} NOT NULL,
    body {text} NOT NULL,
    created_at {int} NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX volume_resource_parent ON volume_resource (kind, parent_id);
CREATE INDEX volume_resource_project ON volume_resource (kind, project_id);
CREATE TABLE volume_service (
    binary_name {name} NOT NULL,
    host {name} NOT NULL,
    body {text} NOT NULL,
    updated_at {int} NOT NULL,
    PRIMARY KEY (binary_name, host)
)",
};

/// One service's row: its last report and when it came.
#[derive(Clone, Debug)]
pub struct ServiceRow {
    pub binary: String,
    pub host: String,
    pub body: Value,
    /// Microseconds since the epoch.
    pub updated_at: i64,
}

#[derive(Clone)]
pub struct Store {
    db: Database,
}

fn decode(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

fn status_of(body: &Value) -> &str {
    body.get("status").and_then(Value::as_str).unwrap_or("")
}

impl Store {
    pub fn new(db: Database) -> Store {
        Store { db }
    }

    pub async fn migrate(&self) -> Result<()> {
        self.db.migrate("volume", MIGRATIONS).await?;
        Ok(())
    }

    /// Inserts a document; `Ok(false)` if the id is taken.
    pub async fn resource_insert(&self, kind: &str, id: &str, project_id: &str, parent_id: &str, body: &Value) -> Result<bool> {
        let r = self
            .db
            .query("INSERT INTO volume_resource (kind, id, project_id, parent_id, status, body, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .bind(kind)
            .bind(id)
            .bind(project_id)
            .bind(parent_id)
            .bind(status_of(body))
            .bind(body.to_string())
            .bind(chrono::Utc::now().timestamp_micros())
            .execute(self.db.pool())
            .await;
        Ok(db::insert_unless_duplicate(r)?)
    }

    pub async fn resource_get(&self, kind: &str, id: &str) -> Result<Option<Value>> {
        let row = self
            .db
            .query("SELECT body FROM volume_resource WHERE kind = ? AND id = ?")
            .bind(kind)
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| decode(&r.get::<String, _>(0))))
    }

    /// Every document of `kind`, oldest first; of one project when `project_id` is given.
    pub async fn resource_list(&self, kind: &str, project_id: Option<&str>) -> Result<Vec<Value>> {
        let rows = match project_id {
            Some(p) => {
                self.db
                    .query("SELECT body FROM volume_resource WHERE kind = ? AND project_id = ? ORDER BY created_at, id")
                    .bind(kind)
                    .bind(p)
                    .fetch_all(self.db.pool())
                    .await?
            }
            None => {
                self.db
                    .query("SELECT body FROM volume_resource WHERE kind = ? ORDER BY created_at, id")
                    .bind(kind)
                    .fetch_all(self.db.pool())
                    .await?
            }
        };
        Ok(rows.iter().map(|r| decode(&r.get::<String, _>(0))).collect())
    }

    /// The documents of `kind` under `parent_id` (a volume's snapshots, attachments or backups), oldest first.
    pub async fn resource_list_by_parent(&self, kind: &str, parent_id: &str) -> Result<Vec<Value>> {
        let rows = self
            .db
            .query("SELECT body FROM volume_resource WHERE kind = ? AND parent_id = ? ORDER BY created_at, id")
            .bind(kind)
            .bind(parent_id)
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows.iter().map(|r| decode(&r.get::<String, _>(0))).collect())
    }

    /// Replaces a document whatever its status; `Ok(false)` if it is gone.
    pub async fn resource_update(&self, kind: &str, id: &str, body: &Value) -> Result<bool> {
        let r = self
            .db
            .query("UPDATE volume_resource SET body = ?, status = ? WHERE kind = ? AND id = ?")
            .bind(body.to_string())
            .bind(status_of(body))
            .bind(kind)
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Replaces a document only if its status is still `expected`: `Ok(false)` if another writer changed it
    /// first (or it is gone).
    pub async fn resource_transition(&self, kind: &str, id: &str, expected: &str, body: &Value) -> Result<bool> {
        let r = self
            .db
            .query("UPDATE volume_resource SET body = ?, status = ? WHERE kind = ? AND id = ? AND status = ?")
            .bind(body.to_string())
            .bind(status_of(body))
            .bind(kind)
            .bind(id)
            .bind(expected)
            .execute(self.db.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Moves a document to another project (a volume transfer).
    pub async fn resource_set_project(&self, kind: &str, id: &str, project_id: &str, body: &Value) -> Result<bool> {
        let r = self
            .db
            .query("UPDATE volume_resource SET body = ?, status = ?, project_id = ? WHERE kind = ? AND id = ?")
            .bind(body.to_string())
            .bind(status_of(body))
            .bind(project_id)
            .bind(kind)
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn resource_delete(&self, kind: &str, id: &str) -> Result<bool> {
        let r = self
            .db
            .query("DELETE FROM volume_resource WHERE kind = ? AND id = ?")
            .bind(kind)
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Records a service's report (insert or replace).
    pub async fn service_upsert(&self, binary: &str, host: &str, body: &Value) -> Result<()> {
        let now = chrono::Utc::now().timestamp_micros();
        let r = self
            .db
            .query("UPDATE volume_service SET body = ?, updated_at = ? WHERE binary_name = ? AND host = ?")
            .bind(body.to_string())
            .bind(now)
            .bind(binary)
            .bind(host)
            .execute(self.db.pool())
            .await?;
        if r.rows_affected() == 0 {
            let r = self
                .db
                .query("INSERT INTO volume_service (binary_name, host, body, updated_at) VALUES (?, ?, ?, ?)")
                .bind(binary)
                .bind(host)
                .bind(body.to_string())
                .bind(now)
                .execute(self.db.pool())
                .await;
            if !db::insert_unless_duplicate(r)? {
                // Another writer inserted it first: ours is as recent.
                self.db
                    .query("UPDATE volume_service SET body = ?, updated_at = ? WHERE binary_name = ? AND host = ?")
                    .bind(body.to_string())
                    .bind(now)
                    .bind(binary)
                    .bind(host)
                    .execute(self.db.pool())
                    .await?;
            }
        }
        Ok(())
    }

    /// Changes a service's document without touching its heartbeat time (enable/disable).
    pub async fn service_set_body(&self, binary: &str, host: &str, body: &Value) -> Result<bool> {
        let r = self
            .db
            .query("UPDATE volume_service SET body = ? WHERE binary_name = ? AND host = ?")
            .bind(body.to_string())
            .bind(binary)
            .bind(host)
            .execute(self.db.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn service_list(&self) -> Result<Vec<ServiceRow>> {
        let rows = self
            .db
            .query("SELECT binary_name, host, body, updated_at FROM volume_service ORDER BY binary_name, host")
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|r| ServiceRow {
                binary: r.get::<String, _>(0),
                host: r.get::<String, _>(1),
                body: decode(&r.get::<String, _>(2)),
                updated_at: r.get::<i64, _>(3),
            })
            .collect())
    }
}
