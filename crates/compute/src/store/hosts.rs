//! Compute services (one per agent binary and host) and compute nodes (one per hypervisor), as the agents report
//! them. Times are unix microseconds.

use compute_rpc::{NodeInfo, NodeResources};
use db::{Bool, Migration};
use sqlx::Row;

use super::Store;
use super::instances::now_us;
use crate::error::Error;

pub const MIGRATION: Migration = Migration {
    version: 4,
    name: "services and compute nodes",
    sql: "
CREATE TABLE compute_service (
    id {serial},
    uuid {id} NOT NULL,
    host {name} NOT NULL,
    binary_name {name} NOT NULL,
    topic {name} NOT NULL,
    disabled {bool} NOT NULL,
    disabled_reason {text},
    forced_down {bool} NOT NULL,
    report_count {int} NOT NULL,
    last_seen_up {int},
    created_at {int} NOT NULL,
    updated_at {int} NOT NULL
);
CREATE UNIQUE INDEX compute_service_uuid ON compute_service (uuid);
CREATE UNIQUE INDEX compute_service_host_binary ON compute_service (host, binary_name);
CREATE TABLE compute_node (
    id {serial},
    uuid {id} NOT NULL,
    service_uuid {id} NOT NULL,
    host {name} NOT NULL,
    hypervisor_hostname {name} NOT NULL,
    hypervisor_type {name} NOT NULL,
    hypervisor_version {int} NOT NULL,
    host_ip {name} NOT NULL,
    cpu_info {text} NOT NULL,
    resources {text} NOT NULL,
    created_at {int} NOT NULL,
    updated_at {int} NOT NULL
);
CREATE UNIQUE INDEX compute_node_uuid ON compute_node (uuid);
CREATE UNIQUE INDEX compute_node_host_node ON compute_node (host, hypervisor_hostname)",
};

/// One service record.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceRow {
    /// The integer id the API shows before microversion 2.53.
    pub id: i64,
    pub uuid: String,
    pub host: String,
    pub binary: String,
    pub topic: String,
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    pub forced_down: bool,
    pub report_count: i64,
    /// The last heartbeat.
    pub last_seen_up: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One compute node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeRow {
    /// The integer id the API shows before microversion 2.53.
    pub id: i64,
    pub uuid: String,
    pub service_uuid: String,
    pub info: NodeInfo,
    pub created_at: i64,
    pub updated_at: i64,
}

const SERVICE_COLUMNS: &str = "id, uuid, host, binary_name, topic, disabled, disabled_reason, forced_down, report_count, \
                               last_seen_up, created_at, updated_at";
const NODE_COLUMNS: &str = "id, uuid, service_uuid, host, hypervisor_hostname, hypervisor_type, hypervisor_version, host_ip, \
                            cpu_info, resources, created_at, updated_at";

fn service_from_row(r: &sqlx::any::AnyRow) -> Result<ServiceRow, Error> {
    Ok(ServiceRow {
        id: r.try_get("id")?,
        uuid: r.try_get("uuid")?,
        host: r.try_get("host")?,
        binary: r.try_get("binary_name")?,
        topic: r.try_get("topic")?,
        disabled: r.try_get::<Bool, _>("disabled")?.0,
        disabled_reason: r.try_get("disabled_reason")?,
        forced_down: r.try_get::<Bool, _>("forced_down")?.0,
        report_count: r.try_get("report_count")?,
        last_seen_up: r.try_get("last_seen_up")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn node_from_row(r: &sqlx::any::AnyRow) -> Result<NodeRow, Error> {
    let cpu_info: String = r.try_get("cpu_info")?;
    let resources: String = r.try_get("resources")?;
    Ok(NodeRow {
        id: r.try_get("id")?,
        uuid: r.try_get("uuid")?,
        service_uuid: r.try_get("service_uuid")?,
        info: NodeInfo {
            host: r.try_get("host")?,
            node: r.try_get("hypervisor_hostname")?,
            hypervisor_type: r.try_get("hypervisor_type")?,
            hypervisor_version: r.try_get("hypervisor_version")?,
            host_ip: r.try_get("host_ip")?,
            cpu_info: serde_json::from_str(&cpu_info).unwrap_or(serde_json::Value::Null),
            resources: serde_json::from_str(&resources)
                .map_err(|e| Error::Config(format!("stored node resources: {e}")))?,
        },
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Store {
    /// Creates the service record of `host`/`binary` if missing; returns it.
    pub async fn service_ensure(&self, host: &str, binary: &str, topic: &str) -> Result<ServiceRow, Error> {
        if let Some(s) = self.service_find(host, binary).await? {
            return Ok(s);
        }
        let now = now_us();
        let r = self
            .db
            .query(
                "INSERT INTO compute_service (uuid, host, binary_name, topic, disabled, forced_down, report_count, \
                 last_seen_up, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
            )
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(host)
            .bind(binary)
            .bind(topic)
            .bind(false)
            .bind(false)
            .bind(now)
            .bind(now)
            .bind(now)
            .execute(self.db.pool())
            .await;
        db::insert_unless_duplicate(r)?;
        self.service_find(host, binary).await?.ok_or_else(|| Error::Config("service vanished".into()))
    }

    pub async fn service_find(&self, host: &str, binary: &str) -> Result<Option<ServiceRow>, Error> {
        let sql = format!("SELECT {SERVICE_COLUMNS} FROM compute_service WHERE host = ? AND binary_name = ?");
        let row = self.db.query(db::sqlx::AssertSqlSafe(sql)).bind(host).bind(binary).fetch_optional(self.db.pool()).await?;
        row.as_ref().map(service_from_row).transpose()
    }

    pub async fn service_get(&self, id: i64) -> Result<Option<ServiceRow>, Error> {
        let sql = format!("SELECT {SERVICE_COLUMNS} FROM compute_service WHERE id = ?");
        let row = self.db.query(db::sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(self.db.pool()).await?;
        row.as_ref().map(service_from_row).transpose()
    }

    /// Every service, by host and binary.
    pub async fn service_list(&self) -> Result<Vec<ServiceRow>, Error> {
        let sql = format!("SELECT {SERVICE_COLUMNS} FROM compute_service ORDER BY host, binary_name");
        let rows = self.db.query(db::sqlx::AssertSqlSafe(sql)).fetch_all(self.db.pool()).await?;
        rows.iter().map(service_from_row).collect()
    }

    /// Services whose row changed at or after `since` (unix µs; every write sets `updated_at`).
    pub async fn services_changed_since(&self, since: i64) -> Result<Vec<ServiceRow>, Error> {
        let sql = format!("SELECT {SERVICE_COLUMNS} FROM compute_service WHERE updated_at >= ?");
        let rows = self.db.query(db::sqlx::AssertSqlSafe(sql)).bind(since).fetch_all(self.db.pool()).await?;
        rows.iter().map(service_from_row).collect()
    }

    /// How many services and compute nodes there are.
    pub async fn host_counts(&self) -> Result<(i64, i64), Error> {
        let services: i64 = self.db.query_scalar("SELECT COUNT(*) FROM compute_service").fetch_one(self.db.pool()).await?;
        let nodes: i64 = self.db.query_scalar("SELECT COUNT(*) FROM compute_node").fetch_one(self.db.pool()).await?;
        Ok((services, nodes))
    }

    /// Records a heartbeat; `Ok(false)` if the service is unknown (deleted by an operator, or never registered).
    pub async fn service_heartbeat(&self, host: &str, binary: &str) -> Result<bool, Error> {
        let now = now_us();
        let n = self
            .db
            .query(
                "UPDATE compute_service SET report_count = report_count + 1, last_seen_up = ?, updated_at = ? \
                 WHERE host = ? AND binary_name = ?",
            )
            .bind(now)
            .bind(now)
            .bind(host)
            .bind(binary)
            .execute(self.db.pool())
            .await?;
        Ok(n.rows_affected() > 0)
    }

    /// Sets the operator's switches of a service (`None` leaves one alone).
    pub async fn service_set(
        &self,
        uuid: &str,
        disabled: Option<(bool, Option<String>)>,
        forced_down: Option<bool>,
    ) -> Result<bool, Error> {
        let mut n = 0;
        if let Some((d, reason)) = disabled {
            n += self
                .db
                .query("UPDATE compute_service SET disabled = ?, disabled_reason = ?, updated_at = ? WHERE uuid = ?")
                .bind(d)
                .bind(reason)
                .bind(now_us())
                .bind(uuid)
                .execute(self.db.pool())
                .await?
                .rows_affected();
        }
        if let Some(f) = forced_down {
            n += self
                .db
                .query("UPDATE compute_service SET forced_down = ?, updated_at = ? WHERE uuid = ?")
                .bind(f)
                .bind(now_us())
                .bind(uuid)
                .execute(self.db.pool())
                .await?
                .rows_affected();
        }
        Ok(n > 0)
    }

    /// Deletes a service with its compute nodes.
    pub async fn service_delete(&self, uuid: &str) -> Result<bool, Error> {
        let mut tx = self.db.begin().await?;
        self.db.query("DELETE FROM compute_node WHERE service_uuid = ?").bind(uuid).execute(&mut *tx).await?;
        let n = self.db.query("DELETE FROM compute_service WHERE uuid = ?").bind(uuid).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(n.rows_affected() > 0)
    }

    /// Creates or refreshes the node `info.host`/`info.node` of a service; returns it (its uuid is stable).
    pub async fn node_upsert(&self, service_uuid: &str, info: &NodeInfo) -> Result<NodeRow, Error> {
        let now = now_us();
        let resources = serde_json::to_string(&info.resources).unwrap_or_default();
        let cpu_info = info.cpu_info.to_string();
        let n = self
            .db
            .query(
                "UPDATE compute_node SET service_uuid = ?, hypervisor_type = ?, hypervisor_version = ?, host_ip = ?, \
                 cpu_info = ?, resources = ?, updated_at = ? WHERE host = ? AND hypervisor_hostname = ?",
            )
            .bind(service_uuid)
            .bind(&info.hypervisor_type)
            .bind(info.hypervisor_version)
            .bind(&info.host_ip)
            .bind(&cpu_info)
            .bind(&resources)
            .bind(now)
            .bind(&info.host)
            .bind(&info.node)
            .execute(self.db.pool())
            .await?;
        if n.rows_affected() == 0 {
            let r = self
                .db
                .query(
                    "INSERT INTO compute_node (uuid, service_uuid, host, hypervisor_hostname, hypervisor_type, \
                     hypervisor_version, host_ip, cpu_info, resources, created_at, updated_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(uuid::Uuid::new_v4().to_string())
                .bind(service_uuid)
                .bind(&info.host)
                .bind(&info.node)
                .bind(&info.hypervisor_type)
                .bind(info.hypervisor_version)
                .bind(&info.host_ip)
                .bind(&cpu_info)
                .bind(&resources)
                .bind(now)
                .bind(now)
                .execute(self.db.pool())
                .await;
            db::insert_unless_duplicate(r)?;
        }
        self.node_find(&info.host, &info.node).await?.ok_or_else(|| Error::Config("compute node vanished".into()))
    }

    /// Updates a node's resources; `Ok(false)` if the node is unknown.
    pub async fn node_resources(&self, host: &str, node: &str, resources: &NodeResources) -> Result<bool, Error> {
        let n = self
            .db
            .query("UPDATE compute_node SET resources = ?, updated_at = ? WHERE host = ? AND hypervisor_hostname = ?")
            .bind(serde_json::to_string(resources).unwrap_or_default())
            .bind(now_us())
            .bind(host)
            .bind(node)
            .execute(self.db.pool())
            .await?;
        Ok(n.rows_affected() > 0)
    }

    pub async fn node_find(&self, host: &str, node: &str) -> Result<Option<NodeRow>, Error> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM compute_node WHERE host = ? AND hypervisor_hostname = ?");
        let row = self.db.query(db::sqlx::AssertSqlSafe(sql)).bind(host).bind(node).fetch_optional(self.db.pool()).await?;
        row.as_ref().map(node_from_row).transpose()
    }

    pub async fn node_get(&self, id: i64) -> Result<Option<NodeRow>, Error> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM compute_node WHERE id = ?");
        let row = self.db.query(db::sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(self.db.pool()).await?;
        row.as_ref().map(node_from_row).transpose()
    }

    /// Compute nodes whose row changed at or after `since` (unix µs; every write sets `updated_at`).
    pub async fn nodes_changed_since(&self, since: i64) -> Result<Vec<NodeRow>, Error> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM compute_node WHERE updated_at >= ?");
        let rows = self.db.query(db::sqlx::AssertSqlSafe(sql)).bind(since).fetch_all(self.db.pool()).await?;
        rows.iter().map(node_from_row).collect()
    }

    /// Every compute node, by host and node name.
    pub async fn node_list(&self) -> Result<Vec<NodeRow>, Error> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM compute_node ORDER BY host, hypervisor_hostname");
        let rows = self.db.query(db::sqlx::AssertSqlSafe(sql)).fetch_all(self.db.pool()).await?;
        rows.iter().map(node_from_row).collect()
    }
}
