//! The compute service's tables and every query on them; handlers never run SQL. Tables are prefixed `compute_`.

use std::collections::BTreeMap;

use db::{Bool, Database, Migration};
use sqlx::Row;

use crate::error::Error;

pub mod aggregates;
pub mod bdm;
pub mod hosts;
pub mod instances;
pub mod migrations;
pub mod netinfo;
pub mod sysmeta;
pub mod quotas;
pub mod server_groups;

pub use aggregates::AggregateRow;
pub use hosts::{NodeRow, ServiceRow};
pub use instances::{ActionEventRow, ActionRow, InstanceFilter, InstanceRow};
pub use migrations::{MigrationFilter, MigrationRow};
pub use server_groups::{GroupMember, ServerGroupRow};

/// Every compute migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    INITIAL,
    DEFAULT_FLAVORS,
    instances::MIGRATION,
    hosts::MIGRATION,
    quotas::MIGRATION,
    aggregates::MIGRATION,
    server_groups::MIGRATION,
    server_groups::RULES_MIGRATION,
    netinfo::MIGRATION,
    sysmeta::MIGRATION,
    bdm::MIGRATION,
    migrations::MIGRATION,
];

const INITIAL: Migration = Migration {
    version: 1,
    name: "flavors and keypairs",
    sql: "
CREATE TABLE compute_flavor (
    flavorid {name} PRIMARY KEY,
    name {name} NOT NULL,
    memory_mb {int} NOT NULL,
    vcpus {int} NOT NULL,
    root_gb {int} NOT NULL,
    ephemeral_gb {int} NOT NULL,
    swap {int} NOT NULL,
    rxtx_factor {id} NOT NULL,
    disabled {bool} NOT NULL,
    is_public {bool} NOT NULL,
    description {text},
    created_at {int} NOT NULL
);
CREATE UNIQUE INDEX compute_flavor_name ON compute_flavor (name);
CREATE TABLE compute_flavor_extra_spec (
    flavorid {name} NOT NULL,
    spec_key {name} NOT NULL,
    spec_value {name} NOT NULL,
    PRIMARY KEY (flavorid, spec_key)
);
CREATE TABLE compute_flavor_access (
    flavorid {name} NOT NULL,
    project_id {id} NOT NULL,
    PRIMARY KEY (flavorid, project_id)
);
CREATE INDEX compute_flavor_access_project ON compute_flavor_access (project_id);
CREATE TABLE compute_keypair (
    id {serial},
    user_id {id} NOT NULL,
    name {name} NOT NULL,
    key_type {id} NOT NULL,
    public_key {text} NOT NULL,
    fingerprint {name} NOT NULL,
    created_at {int} NOT NULL
);
CREATE UNIQUE INDEX compute_keypair_user_name ON compute_keypair (user_id, name)",
};

/// DevStack's flavors (m1.tiny … m1.xlarge and the small ones its tests use), created once with the schema: a
/// flavor an operator deletes later stays deleted.
const DEFAULT_FLAVORS: Migration = Migration {
    version: 2,
    name: "default flavors",
    sql: "
INSERT INTO compute_flavor (flavorid, name, memory_mb, vcpus, root_gb, ephemeral_gb, swap, rxtx_factor, disabled, is_public, description, created_at) VALUES ('1', 'm1.tiny', 512, 1, 1, 0, 0, '1', FALSE, TRUE, NULL, 0);
INSERT INTO compute_flavor (flavorid, name, memory_mb, vcpus, root_gb, ephemeral_gb, swap, rxtx_factor, disabled, is_public, description, created_at) VALUES ('2', 'm1.small', 2048, 1, 20, 0, 0, '1', FALSE, TRUE, NULL, 0);
INSERT INTO compute_flavor (flavorid, name, memory_mb, vcpus, root_gb, ephemeral_gb, swap, rxtx_factor, disabled, is_public, description, created_at) VALUES ('3', 'm1.medium', 4096, 2, 40, 0, 0, '1', FALSE, TRUE, NULL, 0);
INSERT INTO compute_flavor (flavorid, name, memory_mb, vcpus, root_gb, ephemeral_gb, swap, rxtx_factor, disabled, is_public, description, created_at) VALUES ('4', 'm1.large', 8192, 4, 80, 0, 0, '1', FALSE, TRUE, NULL, 0);
INSERT INTO compute_flavor (flavorid, name, memory_mb, vcpus, root_gb, ephemeral_gb, swap, rxtx_factor, disabled, is_public, description, created_at) VALUES ('5', 'm1.xlarge', 16384, 8, 160, 0, 0, '1', FALSE, TRUE, NULL, 0);
INSERT INTO compute_flavor (flavorid, name, memory_mb, vcpus, root_gb, ephemeral_gb, swap, rxtx_factor, disabled, is_public, description, created_at) VALUES ('42', 'm1.nano', 128, 1, 1, 0, 0, '1', FALSE, TRUE, NULL, 0);
INSERT INTO compute_flavor (flavorid, name, memory_mb, vcpus, root_gb, ephemeral_gb, swap, rxtx_factor, disabled, is_public, description, created_at) VALUES ('84', 'm1.micro', 192, 1, 1, 0, 0, '1', FALSE, TRUE, NULL, 0);
INSERT INTO compute_flavor (flavorid, name, memory_mb, vcpus, root_gb, ephemeral_gb, swap, rxtx_factor, disabled, is_public, description, created_at) VALUES ('c1', 'cirros256', 256, 1, 1, 0, 0, '1', FALSE, TRUE, NULL, 0);
INSERT INTO compute_flavor (flavorid, name, memory_mb, vcpus, root_gb, ephemeral_gb, swap, rxtx_factor, disabled, is_public, description, created_at) VALUES ('d1', 'ds512M', 512, 1, 5, 0, 0, '1', FALSE, TRUE, NULL, 0);
INSERT INTO compute_flavor (flavorid, name, memory_mb, vcpus, root_gb, ephemeral_gb, swap, rxtx_factor, disabled, is_public, description, created_at) VALUES ('d2', 'ds1G', 1024, 1, 10, 0, 0, '1', FALSE, TRUE, NULL, 0);
INSERT INTO compute_flavor (flavorid, name, memory_mb, vcpus, root_gb, ephemeral_gb, swap, rxtx_factor, disabled, is_public, description, created_at) VALUES ('d3', 'ds2G', 2048, 2, 10, 0, 0, '1', FALSE, TRUE, NULL, 0);
INSERT INTO compute_flavor (flavorid, name, memory_mb, vcpus, root_gb, ephemeral_gb, swap, rxtx_factor, disabled, is_public, description, created_at) VALUES ('d4', 'ds4G', 4096, 4, 20, 0, 0, '1', FALSE, TRUE, NULL, 0)",
};

/// One flavor as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct FlavorRow {
    pub flavorid: String,
    pub name: String,
    pub memory_mb: i64,
    pub vcpus: i64,
    pub root_gb: i64,
    pub ephemeral_gb: i64,
    pub swap: i64,
    pub rxtx_factor: f64,
    pub disabled: bool,
    pub is_public: bool,
    pub description: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// One key pair as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct KeypairRow {
    pub id: i64,
    pub user_id: String,
    pub name: String,
    pub key_type: String,
    pub public_key: String,
    pub fingerprint: String,
    /// Unix seconds.
    pub created_at: i64,
}

const FLAVOR_COLUMNS: &str = "flavorid, name, memory_mb, vcpus, root_gb, ephemeral_gb, swap, rxtx_factor, disabled, \
                              is_public, description, created_at";

fn flavor_from_row(row: &sqlx::any::AnyRow) -> Result<FlavorRow, Error> {
    let rxtx: String = row.try_get("rxtx_factor")?;
    Ok(FlavorRow {
        flavorid: row.try_get("flavorid")?,
        name: row.try_get("name")?,
        memory_mb: row.try_get("memory_mb")?,
        vcpus: row.try_get("vcpus")?,
        root_gb: row.try_get("root_gb")?,
        ephemeral_gb: row.try_get("ephemeral_gb")?,
        swap: row.try_get("swap")?,
        rxtx_factor: rxtx.parse().map_err(|_| Error::Config(format!("stored rxtx_factor '{rxtx}'")))?,
        disabled: row.try_get::<Bool, _>("disabled")?.0,
        is_public: row.try_get::<Bool, _>("is_public")?.0,
        description: row.try_get("description")?,
        created_at: row.try_get("created_at")?,
    })
}

fn keypair_from_row(row: &sqlx::any::AnyRow) -> Result<KeypairRow, Error> {
    Ok(KeypairRow {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        key_type: row.try_get("key_type")?,
        public_key: row.try_get("public_key")?,
        fingerprint: row.try_get("fingerprint")?,
        created_at: row.try_get("created_at")?,
    })
}

/// The compute datastore.
#[derive(Clone, Debug)]
pub struct Store {
    db: Database,
}

impl Store {
    pub fn new(db: Database) -> Self {
        Store { db }
    }

    pub async fn migrate(&self) -> Result<(), Error> {
        self.db.migrate("compute", MIGRATIONS).await?;
        Ok(())
    }

    // ----- flavors -----

    /// Inserts a flavor; `Ok(false)` if its id or name is taken.
    pub async fn flavor_insert(&self, f: &FlavorRow) -> Result<bool, Error> {
        let r = self
            .db
            .query(
                "INSERT INTO compute_flavor (flavorid, name, memory_mb, vcpus, root_gb, ephemeral_gb, swap, \
                 rxtx_factor, disabled, is_public, description, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&f.flavorid)
            .bind(&f.name)
            .bind(f.memory_mb)
            .bind(f.vcpus)
            .bind(f.root_gb)
            .bind(f.ephemeral_gb)
            .bind(f.swap)
            .bind(f.rxtx_factor.to_string())
            .bind(f.disabled)
            .bind(f.is_public)
            .bind(&f.description)
            .bind(f.created_at)
            .execute(self.db.pool())
            .await;
        Ok(db::insert_unless_duplicate(r)?)
    }

    pub async fn flavor_get(&self, flavorid: &str) -> Result<Option<FlavorRow>, Error> {
        let sql = format!("SELECT {FLAVOR_COLUMNS} FROM compute_flavor WHERE flavorid = ?");
        let row = self.db.query(db::sqlx::AssertSqlSafe(sql)).bind(flavorid).fetch_optional(self.db.pool()).await?;
        row.as_ref().map(flavor_from_row).transpose()
    }

    pub async fn flavor_get_by_name(&self, name: &str) -> Result<Option<FlavorRow>, Error> {
        let sql = format!("SELECT {FLAVOR_COLUMNS} FROM compute_flavor WHERE name = ?");
        let row = self.db.query(db::sqlx::AssertSqlSafe(sql)).bind(name).fetch_optional(self.db.pool()).await?;
        row.as_ref().map(flavor_from_row).transpose()
    }

    /// Every flavor, ordered by flavor id.
    pub async fn flavor_list(&self) -> Result<Vec<FlavorRow>, Error> {
        let sql = format!("SELECT {FLAVOR_COLUMNS} FROM compute_flavor ORDER BY flavorid");
        let rows = self.db.query(db::sqlx::AssertSqlSafe(sql)).fetch_all(self.db.pool()).await?;
        rows.iter().map(flavor_from_row).collect()
    }

    /// Sets a flavor's description; `Ok(false)` if there is no such flavor.
    pub async fn flavor_set_description(&self, flavorid: &str, description: Option<&str>) -> Result<bool, Error> {
        let n = self
            .db
            .query("UPDATE compute_flavor SET description = ? WHERE flavorid = ?")
            .bind(description)
            .bind(flavorid)
            .execute(self.db.pool())
            .await?;
        Ok(n.rows_affected() > 0)
    }

    /// Deletes a flavor with its extra specs and access list; `Ok(false)` if there was none.
    pub async fn flavor_delete(&self, flavorid: &str) -> Result<bool, Error> {
        let mut tx = self.db.begin().await?;
        let n = self.db.query("DELETE FROM compute_flavor WHERE flavorid = ?").bind(flavorid).execute(&mut *tx).await?;
        self.db.query("DELETE FROM compute_flavor_extra_spec WHERE flavorid = ?").bind(flavorid).execute(&mut *tx).await?;
        self.db.query("DELETE FROM compute_flavor_access WHERE flavorid = ?").bind(flavorid).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(n.rows_affected() > 0)
    }

    pub async fn extra_specs(&self, flavorid: &str) -> Result<BTreeMap<String, String>, Error> {
        let rows = self
            .db
            .query("SELECT spec_key, spec_value FROM compute_flavor_extra_spec WHERE flavorid = ?")
            .bind(flavorid)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(|r| Ok((r.try_get("spec_key")?, r.try_get("spec_value")?))).collect()
    }

    /// Creates or replaces extra specs.
    pub async fn extra_specs_set(&self, flavorid: &str, specs: &BTreeMap<String, String>) -> Result<(), Error> {
        let mut tx = self.db.begin().await?;
        for (k, v) in specs {
            self.db
                .query("DELETE FROM compute_flavor_extra_spec WHERE flavorid = ? AND spec_key = ?")
                .bind(flavorid)
                .bind(k)
                .execute(&mut *tx)
                .await?;
            self.db
                .query("INSERT INTO compute_flavor_extra_spec (flavorid, spec_key, spec_value) VALUES (?, ?, ?)")
                .bind(flavorid)
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn extra_spec_delete(&self, flavorid: &str, key: &str) -> Result<bool, Error> {
        let n = self
            .db
            .query("DELETE FROM compute_flavor_extra_spec WHERE flavorid = ? AND spec_key = ?")
            .bind(flavorid)
            .bind(key)
            .execute(self.db.pool())
            .await?;
        Ok(n.rows_affected() > 0)
    }

    /// Projects with access to a (private) flavor.
    pub async fn access_list(&self, flavorid: &str) -> Result<Vec<String>, Error> {
        let rows = self
            .db
            .query("SELECT project_id FROM compute_flavor_access WHERE flavorid = ? ORDER BY project_id")
            .bind(flavorid)
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows.iter().map(|r| r.try_get("project_id")).collect::<Result<_, _>>()?)
    }

    /// Flavor ids a project was given access to.
    pub async fn access_flavors_of(&self, project_id: &str) -> Result<Vec<String>, Error> {
        let rows = self
            .db
            .query("SELECT flavorid FROM compute_flavor_access WHERE project_id = ?")
            .bind(project_id)
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows.iter().map(|r| r.try_get("flavorid")).collect::<Result<_, _>>()?)
    }

    /// `Ok(false)` if the project already had access.
    pub async fn access_add(&self, flavorid: &str, project_id: &str) -> Result<bool, Error> {
        let r = self
            .db
            .query("INSERT INTO compute_flavor_access (flavorid, project_id) VALUES (?, ?)")
            .bind(flavorid)
            .bind(project_id)
            .execute(self.db.pool())
            .await;
        Ok(db::insert_unless_duplicate(r)?)
    }

    pub async fn access_remove(&self, flavorid: &str, project_id: &str) -> Result<bool, Error> {
        let n = self
            .db
            .query("DELETE FROM compute_flavor_access WHERE flavorid = ? AND project_id = ?")
            .bind(flavorid)
            .bind(project_id)
            .execute(self.db.pool())
            .await?;
        Ok(n.rows_affected() > 0)
    }

    // ----- keypairs -----

    /// Inserts a key pair; `Ok(None)` if the user already has one by that name.
    pub async fn keypair_insert(&self, k: &KeypairRow) -> Result<Option<KeypairRow>, Error> {
        let r = self
            .db
            .query(
                "INSERT INTO compute_keypair (user_id, name, key_type, public_key, fingerprint, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&k.user_id)
            .bind(&k.name)
            .bind(&k.key_type)
            .bind(&k.public_key)
            .bind(&k.fingerprint)
            .bind(k.created_at)
            .execute(self.db.pool())
            .await;
        if !db::insert_unless_duplicate(r)? {
            return Ok(None);
        }
        self.keypair_get(&k.user_id, &k.name).await
    }

    pub async fn keypair_get(&self, user_id: &str, name: &str) -> Result<Option<KeypairRow>, Error> {
        let row = self
            .db
            .query(
                "SELECT id, user_id, name, key_type, public_key, fingerprint, created_at FROM compute_keypair \
                 WHERE user_id = ? AND name = ?",
            )
            .bind(user_id)
            .bind(name)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(keypair_from_row).transpose()
    }

    /// A user's key pairs, by name.
    pub async fn keypair_list(&self, user_id: &str) -> Result<Vec<KeypairRow>, Error> {
        let rows = self
            .db
            .query(
                "SELECT id, user_id, name, key_type, public_key, fingerprint, created_at FROM compute_keypair \
                 WHERE user_id = ? ORDER BY name",
            )
            .bind(user_id)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(keypair_from_row).collect()
    }

    pub async fn keypair_delete(&self, user_id: &str, name: &str) -> Result<bool, Error> {
        let n = self
            .db
            .query("DELETE FROM compute_keypair WHERE user_id = ? AND name = ?")
            .bind(user_id)
            .bind(name)
            .execute(self.db.pool())
            .await?;
        Ok(n.rows_affected() > 0)
    }
}
