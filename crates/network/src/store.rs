//! The network service's tables and every query on them; handlers never run SQL. Tables are prefixed `network_`.
//!
//! Resources (networks, subnets, ports, routers, …) are JSON documents in `network_resource`, keyed by kind and id,
//! with the owning project and parent (a subnet's or port's network) as indexed columns; filtering, sorting and
//! paging happen in the service over the documents of one kind. What must be unique under concurrency is not left
//! to read-then-write: it has its own table with a primary key, and a writer that loses the race gets
//! `Ok(false)` (or, for a new port written whole by [`Store::port_insert`], the name of the claim it lost) and
//! tries the next candidate:
//!
//! * `network_ip_allocation` — one row per (network, address): no address is ever handed out twice;
//! * `network_mac` — one row per (network, MAC);
//! * `network_segment` — one row per (type, physical network, segmentation id);
//! * `network_default_sg` — one `default` security group per project.

use std::collections::HashSet;

use db::{Database, Migration};
use serde_json::Value;
use sqlx::Row;

use crate::error::Result;

/// Every network migration, in order.
pub const MIGRATIONS: &[Migration] = &[INITIAL, ADDRESS_FIRST];

/// The check of sampled candidate addresses (`ip_taken`: `network_id = ? AND ip_address IN (…)`) must find them
/// by address. With the key led by `network_id`, PostgreSQL's generic plan used the key's first column alone and
/// read every allocation of the network for each new port (the fill benchmark fell from 736 to 112 ports/s); led
/// by the address, every plan looks the addresses up. No query reads allocations by network alone.
const ADDRESS_FIRST: Migration = Migration {
    version: 2,
    name: "ip allocations keyed by address first",
    sql: "
CREATE TABLE network_ip_allocation_v2 (
    network_id {id} NOT NULL,
    ip_address {name} NOT NULL,
    subnet_id {id} NOT NULL,
    port_id {id} NOT NULL,
    PRIMARY KEY (ip_address, network_id)
);
INSERT INTO network_ip_allocation_v2 (network_id, ip_address, subnet_id, port_id)
    SELECT network_id, ip_address, subnet_id, port_id FROM network_ip_allocation;
DROP TABLE network_ip_allocation;
ALTER TABLE network_ip_allocation_v2 RENAME TO network_ip_allocation;
CREATE INDEX network_ip_allocation_subnet_v2 ON network_ip_allocation (subnet_id);
CREATE INDEX network_ip_allocation_port_v2 ON network_ip_allocation (port_id)",
};

const INITIAL: Migration = Migration {
    version: 1,
    name: "initial network schema",
    sql: "
CREATE TABLE network_resource (
    kind {name} NOT NULL,
    id {id} NOT NULL,
    project_id {id} NOT NULL,
    parent_id {id} NOT NULL,
    body {text} NOT NULL,
    created_at {int} NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX network_resource_parent ON network_resource (kind, parent_id);
CREATE INDEX network_resource_project ON network_resource (kind, project_id);
CREATE TABLE network_ip_allocation (
    network_id {id} NOT NULL,
    ip_address {name} NOT NULL,
    subnet_id {id} NOT NULL,
    port_id {id} NOT NULL,
    PRIMARY KEY (network_id, ip_address)
);
CREATE INDEX network_ip_allocation_subnet ON network_ip_allocation (subnet_id);
CREATE INDEX network_ip_allocation_port ON network_ip_allocation (port_id);
CREATE TABLE network_mac (
    network_id {id} NOT NULL,
    mac_address {name} NOT NULL,
    port_id {id} NOT NULL,
    PRIMARY KEY (network_id, mac_address)
);
CREATE INDEX network_mac_port ON network_mac (port_id);
CREATE TABLE network_segment (
    network_type {name} NOT NULL,
    physical_network {name} NOT NULL,
    segmentation_id {int} NOT NULL,
    network_id {id} NOT NULL,
    PRIMARY KEY (network_type, physical_network, segmentation_id)
);
CREATE INDEX network_segment_network ON network_segment (network_id);
CREATE TABLE network_default_sg (
    project_id {id} PRIMARY KEY,
    security_group_id {id} NOT NULL
)",
};

/// One address held by a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpAllocation {
    pub network_id: String,
    pub ip_address: String,
    pub subnet_id: String,
    pub port_id: String,
}

/// A port to store with [`Store::port_insert`].
pub struct NewPort<'a> {
    pub id: &'a str,
    pub network_id: &'a str,
    pub project_id: &'a str,
    pub mac_address: &'a str,
    pub ips: &'a [IpAllocation],
    pub doc: &'a Value,
}

/// What [`Store::port_insert`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum PortInsert {
    Done,
    /// Another port of the network has the MAC.
    MacTaken,
    /// The network already hands out `ips[i]`.
    IpTaken(usize),
    /// A port with this id exists.
    IdTaken,
}

#[derive(Clone)]
pub struct Store {
    db: Database,
}

fn decode(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

type Query = db::sqlx::query::Query<'static, db::sqlx::Any, db::sqlx::any::AnyArguments>;

/// The inserts that run both alone and inside a new port's transaction.
impl Store {
    fn insert_resource(&self, kind: &str, id: &str, project_id: &str, parent_id: &str, body: &Value) -> Query {
        self.db
            .query("INSERT INTO network_resource (kind, id, project_id, parent_id, body, created_at) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(kind)
            .bind(id)
            .bind(project_id)
            .bind(parent_id)
            .bind(body.to_string())
            .bind(chrono::Utc::now().timestamp_micros())
    }

    fn insert_ip(&self, a: &IpAllocation) -> Query {
        self.db
            .query("INSERT INTO network_ip_allocation (network_id, ip_address, subnet_id, port_id) VALUES (?, ?, ?, ?)")
            .bind(&a.network_id)
            .bind(&a.ip_address)
            .bind(&a.subnet_id)
            .bind(&a.port_id)
    }

    fn insert_mac(&self, network_id: &str, mac: &str, port_id: &str) -> Query {
        self.db
            .query("INSERT INTO network_mac (network_id, mac_address, port_id) VALUES (?, ?, ?)")
            .bind(network_id)
            .bind(mac)
            .bind(port_id)
    }
}

impl Store {
    pub fn new(db: Database) -> Store {
        Store { db }
    }

    pub async fn migrate(&self) -> Result<()> {
        self.db.migrate("network", MIGRATIONS).await?;
        Ok(())
    }

    /// Inserts a resource document; `Ok(false)` if the id is taken.
    pub async fn resource_insert(&self, kind: &str, id: &str, project_id: &str, parent_id: &str, body: &Value) -> Result<bool> {
        let r = self.insert_resource(kind, id, project_id, parent_id, body).execute(self.db.pool()).await;
        Ok(db::insert_unless_duplicate(r)?)
    }

    pub async fn resource_get(&self, kind: &str, id: &str) -> Result<Option<Value>> {
        let row = self
            .db
            .query("SELECT body FROM network_resource WHERE kind = ? AND id = ?")
            .bind(kind)
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| decode(&r.get::<String, _>(0))))
    }

    /// Every resource of `kind`, oldest first.
    pub async fn resource_list(&self, kind: &str) -> Result<Vec<Value>> {
        let rows = self
            .db
            .query("SELECT body FROM network_resource WHERE kind = ? ORDER BY created_at, id")
            .bind(kind)
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows.iter().map(|r| decode(&r.get::<String, _>(0))).collect())
    }

    /// The resources of `kind` under `parent_id` (a network's subnets or ports), oldest first.
    pub async fn resource_list_by_parent(&self, kind: &str, parent_id: &str) -> Result<Vec<Value>> {
        let rows = self
            .db
            .query("SELECT body FROM network_resource WHERE kind = ? AND parent_id = ? ORDER BY created_at, id")
            .bind(kind)
            .bind(parent_id)
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows.iter().map(|r| decode(&r.get::<String, _>(0))).collect())
    }

    /// The resources of `kind` owned by `project_id`.
    pub async fn resource_count_by_project(&self, kind: &str, project_id: &str) -> Result<i64> {
        let n: i64 = self
            .db
            .query_scalar("SELECT COUNT(*) FROM network_resource WHERE kind = ? AND project_id = ?")
            .bind(kind)
            .bind(project_id)
            .fetch_one(self.db.pool())
            .await?;
        Ok(n)
    }

    /// Replaces a document; `Ok(false)` if it is gone.
    pub async fn resource_update(&self, kind: &str, id: &str, body: &Value) -> Result<bool> {
        let r = self
            .db
            .query("UPDATE network_resource SET body = ? WHERE kind = ? AND id = ?")
            .bind(body.to_string())
            .bind(kind)
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn resource_delete(&self, kind: &str, id: &str) -> Result<bool> {
        let r = self
            .db
            .query("DELETE FROM network_resource WHERE kind = ? AND id = ?")
            .bind(kind)
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Writes a new port in one transaction: its MAC, its addresses, then its document. The first claim another
    /// port already holds ends the transaction, rolled back, and is named in the answer, so the caller can pick
    /// another candidate or refuse; nothing of the port is then stored. One transaction per port takes SQLite's
    /// write lock once instead of once per row.
    pub async fn port_insert(&self, port: &NewPort<'_>) -> Result<PortInsert> {
        let mut tx = self.db.begin_unqueued().await?;
        let r = self.insert_mac(port.network_id, port.mac_address, port.id).execute(&mut *tx).await;
        if !db::insert_unless_duplicate(r)? {
            return Ok(PortInsert::MacTaken);
        }
        for (i, a) in port.ips.iter().enumerate() {
            let r = self.insert_ip(a).execute(&mut *tx).await;
            if !db::insert_unless_duplicate(r)? {
                return Ok(PortInsert::IpTaken(i));
            }
        }
        let r = self.insert_resource("port", port.id, port.project_id, port.network_id, port.doc).execute(&mut *tx).await;
        if !db::insert_unless_duplicate(r)? {
            return Ok(PortInsert::IdTaken);
        }
        tx.commit().await?;
        Ok(PortInsert::Done)
    }

    /// Removes a port with its addresses and MAC, in one transaction.
    pub async fn port_delete(&self, port_id: &str) -> Result<()> {
        let mut tx = self.db.begin_unqueued().await?;
        for sql in [
            "DELETE FROM network_ip_allocation WHERE port_id = ?",
            "DELETE FROM network_mac WHERE port_id = ?",
            "DELETE FROM network_resource WHERE kind = 'port' AND id = ?",
        ] {
            self.db.query(sql).bind(port_id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records that `port_id` holds `ip_address`; `Ok(false)` if the network already hands it out.
    pub async fn ip_insert(&self, a: &IpAllocation) -> Result<bool> {
        let r = self.insert_ip(a).execute(self.db.pool()).await;
        Ok(db::insert_unless_duplicate(r)?)
    }

    pub async fn ip_delete(&self, network_id: &str, ip_address: &str) -> Result<()> {
        self.db
            .query("DELETE FROM network_ip_allocation WHERE network_id = ? AND ip_address = ?")
            .bind(network_id)
            .bind(ip_address)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Which of `ips` network `network_id` already hands out.
    pub async fn ip_taken(&self, network_id: &str, ips: &[String]) -> Result<HashSet<String>> {
        if ips.is_empty() {
            return Ok(HashSet::new());
        }
        let sql = format!(
            "SELECT ip_address FROM network_ip_allocation WHERE network_id = ? AND ip_address IN ({})",
            vec!["?"; ips.len()].join(", ")
        );
        // Planned on every run on PostgreSQL (not kept as a prepared statement): after five runs a kept statement
        // may switch to a generic plan made while the table was nearly empty (a sequential scan) and keep it
        // until autovacuum next analyses the table, which made each new port read every allocation of its
        // network (filling a /16 slowed from 759 to 123 ports/s).
        let keep = self.db.backend() != db::Backend::Postgres;
        let mut q = self.db.query(db::sqlx::AssertSqlSafe(sql)).persistent(keep).bind(network_id);
        for ip in ips {
            q = q.bind(ip);
        }
        Ok(q.fetch_all(self.db.pool()).await?.iter().map(|r| r.get(0)).collect())
    }

    pub async fn ip_list_subnet(&self, subnet_id: &str) -> Result<Vec<IpAllocation>> {
        let rows = self
            .db
            .query("SELECT network_id, ip_address, subnet_id, port_id FROM network_ip_allocation WHERE subnet_id = ?")
            .bind(subnet_id)
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|r| IpAllocation {
                network_id: r.get(0),
                ip_address: r.get(1),
                subnet_id: r.get(2),
                port_id: r.get(3),
            })
            .collect())
    }

    /// Records a MAC on a network; `Ok(false)` if another port of the network has it.
    pub async fn mac_insert(&self, network_id: &str, mac: &str, port_id: &str) -> Result<bool> {
        let r = self.insert_mac(network_id, mac, port_id).execute(self.db.pool()).await;
        Ok(db::insert_unless_duplicate(r)?)
    }

    pub async fn mac_delete(&self, network_id: &str, mac: &str) -> Result<()> {
        self.db
            .query("DELETE FROM network_mac WHERE network_id = ? AND mac_address = ?")
            .bind(network_id)
            .bind(mac)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Claims a segmentation id; `Ok(false)` if another network holds it.
    pub async fn segment_insert(&self, network_type: &str, physnet: &str, seg_id: i64, network_id: &str) -> Result<bool> {
        let r = self
            .db
            .query("INSERT INTO network_segment (network_type, physical_network, segmentation_id, network_id) VALUES (?, ?, ?, ?)")
            .bind(network_type)
            .bind(physnet)
            .bind(seg_id)
            .bind(network_id)
            .execute(self.db.pool())
            .await;
        Ok(db::insert_unless_duplicate(r)?)
    }

    /// The segmentation ids of `network_type` in use on `physnet`.
    pub async fn segment_used(&self, network_type: &str, physnet: &str) -> Result<Vec<i64>> {
        let rows = self
            .db
            .query("SELECT segmentation_id FROM network_segment WHERE network_type = ? AND physical_network = ?")
            .bind(network_type)
            .bind(physnet)
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows.iter().map(|r| r.get::<i64, _>(0)).collect())
    }

    pub async fn segment_delete_network(&self, network_id: &str) -> Result<()> {
        self.db.query("DELETE FROM network_segment WHERE network_id = ?").bind(network_id).execute(self.db.pool()).await?;
        Ok(())
    }

    /// Records a project's default security group; `Ok(false)` if it already has one.
    pub async fn default_sg_insert(&self, project_id: &str, sg_id: &str) -> Result<bool> {
        let r = self
            .db
            .query("INSERT INTO network_default_sg (project_id, security_group_id) VALUES (?, ?)")
            .bind(project_id)
            .bind(sg_id)
            .execute(self.db.pool())
            .await;
        Ok(db::insert_unless_duplicate(r)?)
    }

    pub async fn default_sg_get(&self, project_id: &str) -> Result<Option<String>> {
        let row = self
            .db
            .query("SELECT security_group_id FROM network_default_sg WHERE project_id = ?")
            .bind(project_id)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    pub async fn default_sg_delete(&self, project_id: &str) -> Result<()> {
        self.db.query("DELETE FROM network_default_sg WHERE project_id = ?").bind(project_id).execute(self.db.pool()).await?;
        Ok(())
    }
}
