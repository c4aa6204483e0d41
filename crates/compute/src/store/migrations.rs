//! Instance migrations (upstream's `migrations` table): one record per resize, with its hosts, flavors and
//! status, listed by `/os-migrations`.

use db::Migration;
use sqlx::Row;

use super::Store;
use super::instances::now_us;
use crate::error::Error;

pub const MIGRATION: Migration = Migration {
    version: 12,
    name: "instance migrations",
    sql: "
CREATE TABLE compute_migration (
    id {serial},
    uuid {id} NOT NULL,
    instance_uuid {id} NOT NULL,
    project_id {id} NOT NULL,
    user_id {id} NOT NULL,
    migration_type {name} NOT NULL,
    status {name} NOT NULL,
    source_compute {name},
    source_node {name},
    dest_compute {name},
    dest_node {name},
    dest_host {name},
    old_flavorid {name},
    new_flavorid {name},
    created_at {int} NOT NULL,
    updated_at {int}
);
CREATE UNIQUE INDEX compute_migration_uuid ON compute_migration (uuid);
CREATE INDEX compute_migration_instance ON compute_migration (instance_uuid)",
};

/// One migration as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct MigrationRow {
    pub id: i64,
    pub uuid: String,
    pub instance_uuid: String,
    pub project_id: String,
    pub user_id: String,
    /// `resize`, `migration`, `live-migration` or `evacuation`.
    pub migration_type: String,
    pub status: String,
    pub source_compute: Option<String>,
    pub source_node: Option<String>,
    pub dest_compute: Option<String>,
    pub dest_node: Option<String>,
    pub dest_host: Option<String>,
    pub old_flavorid: Option<String>,
    pub new_flavorid: Option<String>,
    pub created_at: i64,
    pub updated_at: Option<i64>,
}

/// `/os-migrations`' filters; `None` matches everything.
#[derive(Clone, Debug, Default)]
pub struct MigrationFilter {
    pub instance_uuid: Option<String>,
    pub status: Option<String>,
    pub migration_type: Option<String>,
    /// The source or the destination compute host.
    pub host: Option<String>,
    pub source_compute: Option<String>,
    pub project_id: Option<String>,
    pub user_id: Option<String>,
    /// Changed at or after (µs).
    pub changes_since: Option<i64>,
    /// Changed at or before (µs).
    pub changes_before: Option<i64>,
    /// Only migrations older (in list order, newest first) than the one with this uuid.
    pub marker_id: Option<i64>,
    pub limit: Option<i64>,
}

const COLUMNS: &str = "id, uuid, instance_uuid, project_id, user_id, migration_type, status, source_compute, source_node, \
                       dest_compute, dest_node, dest_host, old_flavorid, new_flavorid, created_at, updated_at";

impl Store {
    /// Records a new migration; returns it with its id.
    pub async fn migration_create(&self, m: &MigrationRow) -> Result<MigrationRow, Error> {
        self.db
            // Only the constant column list is spliced in.
            .query(db::sqlx::AssertSqlSafe(format!(
                "INSERT INTO compute_migration ({}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                COLUMNS.trim_start_matches("id, ")
            )))
            .bind(&m.uuid)
            .bind(&m.instance_uuid)
            .bind(&m.project_id)
            .bind(&m.user_id)
            .bind(&m.migration_type)
            .bind(&m.status)
            .bind(&m.source_compute)
            .bind(&m.source_node)
            .bind(&m.dest_compute)
            .bind(&m.dest_node)
            .bind(&m.dest_host)
            .bind(&m.old_flavorid)
            .bind(&m.new_flavorid)
            .bind(m.created_at)
            .bind(m.updated_at)
            .execute(self.db.pool())
            .await?;
        self.migration_get(&m.uuid).await?.ok_or_else(|| Error::NotFound(format!("Migration {} not found", m.uuid)))
    }

    pub async fn migration_get(&self, uuid: &str) -> Result<Option<MigrationRow>, Error> {
        let row = self
            .db
            .query(db::sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM compute_migration WHERE uuid = ?")))
            .bind(uuid)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(Self::migration_from_row).transpose()
    }

    /// Moves a migration to `status` if it is in one of `from` (any when empty); returns whether it changed.
    pub async fn migration_set_status(&self, uuid: &str, from: &[&str], status: &str) -> Result<bool, Error> {
        let guard = if from.is_empty() {
            String::new()
        } else {
            format!(" AND status IN ({})", vec!["?"; from.len()].join(", "))
        };
        let sql = format!("UPDATE compute_migration SET status = ?, updated_at = ? WHERE uuid = ?{guard}");
        // Placeholders only: every value is bound.
        let mut q = self.db.query(db::sqlx::AssertSqlSafe(sql)).bind(status).bind(now_us()).bind(uuid);
        for s in from {
            q = q.bind(*s);
        }
        Ok(q.execute(self.db.pool()).await?.rows_affected() > 0)
    }

    /// Migrations matching `f`, newest first.
    pub async fn migration_list(&self, f: &MigrationFilter) -> Result<Vec<MigrationRow>, Error> {
        let mut sql = format!("SELECT {COLUMNS} FROM compute_migration WHERE 1 = 1");
        let mut texts: Vec<String> = Vec::new();
        let mut ints: Vec<i64> = Vec::new();
        // Text conditions first, then integer ones: binds follow that order.
        for (column, value) in [
            ("instance_uuid", &f.instance_uuid),
            ("status", &f.status),
            ("migration_type", &f.migration_type),
            ("source_compute", &f.source_compute),
            ("project_id", &f.project_id),
            ("user_id", &f.user_id),
        ] {
            if let Some(v) = value {
                sql.push_str(&format!(" AND {column} = ?"));
                texts.push(v.clone());
            }
        }
        if let Some(h) = &f.host {
            sql.push_str(" AND (source_compute = ? OR dest_compute = ?)");
            texts.push(h.clone());
            texts.push(h.clone());
        }
        let changed = "COALESCE(updated_at, created_at)";
        if let Some(t) = f.changes_since {
            sql.push_str(&format!(" AND {changed} >= ?"));
            ints.push(t);
        }
        if let Some(t) = f.changes_before {
            sql.push_str(&format!(" AND {changed} <= ?"));
            ints.push(t);
        }
        if let Some(id) = f.marker_id {
            sql.push_str(" AND id < ?");
            ints.push(id);
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC");
        if let Some(limit) = f.limit {
            sql.push_str(" LIMIT ?");
            ints.push(limit);
        }
        // Constant column names and placeholders only: every value is bound.
        let mut q = self.db.query(db::sqlx::AssertSqlSafe(sql));
        for t in &texts {
            q = q.bind(t);
        }
        for i in &ints {
            q = q.bind(*i);
        }
        let rows = q.fetch_all(self.db.pool()).await?;
        rows.iter().map(Self::migration_from_row).collect()
    }

    fn migration_from_row(r: &sqlx::any::AnyRow) -> Result<MigrationRow, Error> {
        Ok(MigrationRow {
            id: r.try_get("id")?,
            uuid: r.try_get("uuid")?,
            instance_uuid: r.try_get("instance_uuid")?,
            project_id: r.try_get("project_id")?,
            user_id: r.try_get("user_id")?,
            migration_type: r.try_get("migration_type")?,
            status: r.try_get("status")?,
            source_compute: r.try_get("source_compute")?,
            source_node: r.try_get("source_node")?,
            dest_compute: r.try_get("dest_compute")?,
            dest_node: r.try_get("dest_node")?,
            dest_host: r.try_get("dest_host")?,
            old_flavorid: r.try_get("old_flavorid")?,
            new_flavorid: r.try_get("new_flavorid")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}
