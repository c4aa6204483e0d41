//! Host aggregates: named groups of compute hosts with metadata; the `availability_zone` key of an aggregate's
//! metadata puts its hosts in that zone. Times are unix microseconds.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use db::Migration;
use sqlx::Row;

use super::Store;
use super::instances::now_us;
use crate::error::Error;

pub const MIGRATION: Migration = Migration {
    version: 6,
    name: "host aggregates",
    sql: "
CREATE TABLE compute_aggregate (
    id {serial},
    uuid {id} NOT NULL,
    name {name} NOT NULL,
    created_at {int} NOT NULL,
    updated_at {int}
);
CREATE UNIQUE INDEX compute_aggregate_uuid ON compute_aggregate (uuid);
CREATE UNIQUE INDEX compute_aggregate_name ON compute_aggregate (name);
CREATE TABLE compute_aggregate_host (
    aggregate_id {int} NOT NULL,
    host {name} NOT NULL,
    PRIMARY KEY (aggregate_id, host)
);
CREATE INDEX compute_aggregate_host_host ON compute_aggregate_host (host);
CREATE TABLE compute_aggregate_metadata (
    aggregate_id {int} NOT NULL,
    meta_key {name} NOT NULL,
    meta_value {name} NOT NULL,
    PRIMARY KEY (aggregate_id, meta_key)
)",
};

/// The metadata key that makes an aggregate an availability zone.
pub const AZ_KEY: &str = "availability_zone";

/// One aggregate with its hosts and metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateRow {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    /// Sorted.
    pub hosts: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub created_at: i64,
    pub updated_at: Option<i64>,
}

impl AggregateRow {
    pub fn availability_zone(&self) -> Option<&str> {
        self.metadata.get(AZ_KEY).map(String::as_str)
    }
}

impl Store {
    /// Creates an aggregate with its initial metadata; `Ok(None)` if the name is taken.
    pub async fn aggregate_insert(
        &self,
        name: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Option<AggregateRow>, Error> {
        let uuid = uuid::Uuid::new_v4().to_string();
        let mut tx = self.db.begin().await?;
        let r = self
            .db
            .query("INSERT INTO compute_aggregate (uuid, name, created_at) VALUES (?, ?, ?)")
            .bind(&uuid)
            .bind(name)
            .bind(now_us())
            .execute(&mut *tx)
            .await;
        if !db::insert_unless_duplicate(r)? {
            return Ok(None);
        }
        let id: i64 = self
            .db
            .query_scalar("SELECT id FROM compute_aggregate WHERE uuid = ?")
            .bind(&uuid)
            .fetch_one(&mut *tx)
            .await?;
        for (k, v) in metadata {
            self.db
                .query("INSERT INTO compute_aggregate_metadata (aggregate_id, meta_key, meta_value) VALUES (?, ?, ?)")
                .bind(id)
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.aggregate_get(id).await
    }

    pub async fn aggregate_get(&self, id: i64) -> Result<Option<AggregateRow>, Error> {
        Ok(self.aggregates_where(Some(id)).await?.pop())
    }

    /// Every aggregate, by id.
    pub async fn aggregate_list(&self) -> Result<Vec<AggregateRow>, Error> {
        self.aggregates_where(None).await
    }

    async fn aggregates_where(&self, id: Option<i64>) -> Result<Vec<AggregateRow>, Error> {
        let (rows, hosts, meta) = match id {
            Some(id) => (
                self.db
                    .query("SELECT id, uuid, name, created_at, updated_at FROM compute_aggregate WHERE id = ?")
                    .bind(id)
                    .fetch_all(self.db.pool())
                    .await?,
                self.db
                    .query("SELECT aggregate_id, host FROM compute_aggregate_host WHERE aggregate_id = ?")
                    .bind(id)
                    .fetch_all(self.db.pool())
                    .await?,
                self.db
                    .query("SELECT aggregate_id, meta_key, meta_value FROM compute_aggregate_metadata WHERE aggregate_id = ?")
                    .bind(id)
                    .fetch_all(self.db.pool())
                    .await?,
            ),
            None => (
                self.db
                    .query("SELECT id, uuid, name, created_at, updated_at FROM compute_aggregate ORDER BY id")
                    .fetch_all(self.db.pool())
                    .await?,
                self.db.query("SELECT aggregate_id, host FROM compute_aggregate_host").fetch_all(self.db.pool()).await?,
                self.db
                    .query("SELECT aggregate_id, meta_key, meta_value FROM compute_aggregate_metadata")
                    .fetch_all(self.db.pool())
                    .await?,
            ),
        };
        let mut host_map: HashMap<i64, Vec<String>> = HashMap::new();
        for r in &hosts {
            host_map.entry(r.try_get("aggregate_id")?).or_default().push(r.try_get("host")?);
        }
        let mut meta_map: HashMap<i64, BTreeMap<String, String>> = HashMap::new();
        for r in &meta {
            meta_map.entry(r.try_get("aggregate_id")?).or_default().insert(r.try_get("meta_key")?, r.try_get("meta_value")?);
        }
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get("id")?;
                let mut hosts = host_map.remove(&id).unwrap_or_default();
                hosts.sort();
                Ok(AggregateRow {
                    id,
                    uuid: r.try_get("uuid")?,
                    name: r.try_get("name")?,
                    hosts,
                    metadata: meta_map.remove(&id).unwrap_or_default(),
                    created_at: r.try_get("created_at")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    /// Renames an aggregate; `Ok(false)` if the name is taken.
    pub async fn aggregate_rename(&self, id: i64, name: &str) -> Result<bool, Error> {
        let r = self
            .db
            .query("UPDATE compute_aggregate SET name = ?, updated_at = ? WHERE id = ?")
            .bind(name)
            .bind(now_us())
            .bind(id)
            .execute(self.db.pool())
            .await;
        Ok(db::insert_unless_duplicate(r)?)
    }

    /// Merges metadata into an aggregate: a `None` value removes its key.
    pub async fn aggregate_metadata_update(&self, id: i64, changes: &BTreeMap<String, Option<String>>) -> Result<(), Error> {
        let mut tx = self.db.begin().await?;
        for (k, v) in changes {
            self.db
                .query("DELETE FROM compute_aggregate_metadata WHERE aggregate_id = ? AND meta_key = ?")
                .bind(id)
                .bind(k)
                .execute(&mut *tx)
                .await?;
            if let Some(v) = v {
                self.db
                    .query("INSERT INTO compute_aggregate_metadata (aggregate_id, meta_key, meta_value) VALUES (?, ?, ?)")
                    .bind(id)
                    .bind(k)
                    .bind(v)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        self.db.query("UPDATE compute_aggregate SET updated_at = ? WHERE id = ?").bind(now_us()).bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds a host; `Ok(false)` if it was a member already.
    pub async fn aggregate_host_add(&self, id: i64, host: &str) -> Result<bool, Error> {
        let r = self
            .db
            .query("INSERT INTO compute_aggregate_host (aggregate_id, host) VALUES (?, ?)")
            .bind(id)
            .bind(host)
            .execute(self.db.pool())
            .await;
        let added = db::insert_unless_duplicate(r)?;
        if added {
            self.db.query("UPDATE compute_aggregate SET updated_at = ? WHERE id = ?").bind(now_us()).bind(id).execute(self.db.pool()).await?;
        }
        Ok(added)
    }

    /// Removes a host; `Ok(false)` if it was not a member.
    pub async fn aggregate_host_remove(&self, id: i64, host: &str) -> Result<bool, Error> {
        let n = self
            .db
            .query("DELETE FROM compute_aggregate_host WHERE aggregate_id = ? AND host = ?")
            .bind(id)
            .bind(host)
            .execute(self.db.pool())
            .await?;
        if n.rows_affected() > 0 {
            self.db.query("UPDATE compute_aggregate SET updated_at = ? WHERE id = ?").bind(now_us()).bind(id).execute(self.db.pool()).await?;
        }
        Ok(n.rows_affected() > 0)
    }

    /// Deletes an aggregate with its hosts and metadata; `Ok(false)` if there was none.
    pub async fn aggregate_delete(&self, id: i64) -> Result<bool, Error> {
        let mut tx = self.db.begin().await?;
        self.db.query("DELETE FROM compute_aggregate_host WHERE aggregate_id = ?").bind(id).execute(&mut *tx).await?;
        self.db.query("DELETE FROM compute_aggregate_metadata WHERE aggregate_id = ?").bind(id).execute(&mut *tx).await?;
        let n = self.db.query("DELETE FROM compute_aggregate WHERE id = ?").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(n.rows_affected() > 0)
    }

    /// The metadata of every host's aggregates, for the scheduler: each key with the values its aggregates give
    /// it. Hosts in no aggregate with metadata are absent.
    pub async fn aggregate_host_metadata(&self) -> Result<HashMap<String, BTreeMap<String, BTreeSet<String>>>, Error> {
        let rows = self
            .db
            .query(
                "SELECT h.host, m.meta_key, m.meta_value FROM compute_aggregate_host h JOIN compute_aggregate_metadata m \
                 ON m.aggregate_id = h.aggregate_id",
            )
            .fetch_all(self.db.pool())
            .await?;
        let mut out: HashMap<String, BTreeMap<String, BTreeSet<String>>> = HashMap::new();
        for r in &rows {
            out.entry(r.try_get("host")?)
                .or_default()
                .entry(r.try_get("meta_key")?)
                .or_default()
                .insert(r.try_get("meta_value")?);
        }
        Ok(out)
    }

    /// The availability zone of every host in an aggregate that names one: the zones of its aggregates, sorted
    /// and joined by `,` (a host is normally in one zone only). Hosts in no zone are absent.
    pub async fn aggregate_host_zones(&self) -> Result<HashMap<String, String>, Error> {
        let rows = self
            .db
            .query(
                "SELECT h.host, m.meta_value FROM compute_aggregate_host h JOIN compute_aggregate_metadata m \
                 ON m.aggregate_id = h.aggregate_id WHERE m.meta_key = ?",
            )
            .bind(AZ_KEY)
            .fetch_all(self.db.pool())
            .await?;
        let mut zones: HashMap<String, Vec<String>> = HashMap::new();
        for r in &rows {
            zones.entry(r.try_get("host")?).or_default().push(r.try_get("meta_value")?);
        }
        Ok(zones
            .into_iter()
            .map(|(host, mut z)| {
                z.sort();
                z.dedup();
                (host, z.join(","))
            })
            .collect())
    }
}
