//! The service catalog as an API resource: regions (with parents), services and endpoints, each with Keystone's
//! "extra" attributes (unknown fields a client sent, kept as a JSON object). The v1 tables come from the initial
//! schema; this module's migrations add the `extra` columns, the credential and limit tables (v6), and policy
//! blobs and endpoint groups (v8).
//!
//! Also policy blobs (`/v3/policies`, opaque documents stored for other services) and endpoint groups.

use db::{Bool, Migration};
use serde_json::{Map, Value};
use sqlx::{Row, any::AnyRow};

use super::{Store, flag};
use crate::error::Error;

/// Catalog extras, credentials and unified limits.
pub(super) const MIGRATION: Migration = Migration {
    version: 6,
    name: "catalog extras, credentials, limits",
    sql: "
ALTER TABLE identity_region ADD COLUMN extra {text};
ALTER TABLE identity_service ADD COLUMN extra {text};
ALTER TABLE identity_endpoint ADD COLUMN extra {text};
CREATE TABLE identity_credential (
    id {id} PRIMARY KEY,
    user_id {id} NOT NULL,
    project_id {id},
    type {name} NOT NULL,
    encrypted_blob {text} NOT NULL,
    extra {text},
    created_at {int} NOT NULL
);
CREATE TABLE identity_registered_limit (
    id {id} PRIMARY KEY,
    service_id {id} NOT NULL,
    region_id {name},
    resource_name {name} NOT NULL,
    default_limit {int} NOT NULL,
    description {text}
);
CREATE TABLE identity_limit (
    id {id} PRIMARY KEY,
    project_id {id},
    domain_id {id},
    service_id {id} NOT NULL,
    region_id {name},
    resource_name {name} NOT NULL,
    resource_limit {int} NOT NULL,
    description {text}
)",
};

/// Policy blobs (`/v3/policies`) and endpoint groups (OS-EP-FILTER).
pub(super) const MIGRATION_POLICIES: Migration = Migration {
    version: 8,
    name: "policy blobs and endpoint groups",
    sql: "
CREATE TABLE identity_policy (
    id {id} PRIMARY KEY,
    type {name} NOT NULL,
    policy_blob {text} NOT NULL,
    extra {text}
);
CREATE TABLE identity_endpoint_group (
    id {id} PRIMARY KEY,
    name {name} NOT NULL,
    description {text},
    filters {text} NOT NULL
)",
};

/// A policy blob as upstream's policy API stores it (opaque to the service).
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyRow {
    pub id: String,
    pub policy_type: String,
    pub blob: String,
    pub extra: Map<String, Value>,
}

/// An endpoint group: a named filter (`interface`, `service_id`, `region_id`) over endpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointGroupRow {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub filters: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RegionRow {
    pub id: String,
    pub description: Option<String>,
    pub parent_region_id: Option<String>,
    pub extra: Map<String, Value>,
}

/// A service with everything the API shows (bootstrap and tokens use the narrower [`super::ServiceRow`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceRecord {
    pub id: String,
    pub service_type: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub enabled: bool,
    pub extra: Map<String, Value>,
}

/// An endpoint with everything the API shows.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointRecord {
    pub id: String,
    pub service_id: String,
    pub interface: String,
    pub region_id: Option<String>,
    pub url: String,
    pub enabled: bool,
    pub extra: Map<String, Value>,
}

/// Reads an `extra` column (absent or garbled → empty).
pub(super) fn extra(row: &AnyRow) -> Result<Map<String, Value>, Error> {
    let raw: Option<String> = row.try_get("extra")?;
    Ok(raw.and_then(|s| serde_json::from_str::<Map<String, Value>>(&s).ok()).unwrap_or_default())
}

/// Encodes an `extra` column (empty → NULL).
pub(super) fn extra_text(extra: &Map<String, Value>) -> Option<String> {
    (!extra.is_empty()).then(|| Value::Object(extra.clone()).to_string())
}

fn region(row: &AnyRow) -> Result<RegionRow, Error> {
    Ok(RegionRow {
        id: row.try_get("id")?,
        description: row.try_get("description")?,
        parent_region_id: row.try_get("parent_region_id")?,
        extra: extra(row)?,
    })
}

fn service(row: &AnyRow) -> Result<ServiceRecord, Error> {
    Ok(ServiceRecord {
        id: row.try_get("id")?,
        service_type: row.try_get("type")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        enabled: flag(row, "enabled")?,
        extra: extra(row)?,
    })
}

fn endpoint(row: &AnyRow) -> Result<EndpointRecord, Error> {
    Ok(EndpointRecord {
        id: row.try_get("id")?,
        service_id: row.try_get("service_id")?,
        interface: row.try_get("interface")?,
        region_id: row.try_get("region_id")?,
        url: row.try_get("url")?,
        enabled: flag(row, "enabled")?,
        extra: extra(row)?,
    })
}

fn policy(row: &AnyRow) -> Result<PolicyRow, Error> {
    Ok(PolicyRow {
        id: row.try_get("id")?,
        policy_type: row.try_get("type")?,
        blob: row.try_get("policy_blob")?,
        extra: extra(row)?,
    })
}

fn endpoint_group(row: &AnyRow) -> Result<EndpointGroupRow, Error> {
    let filters: String = row.try_get("filters")?;
    Ok(EndpointGroupRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        filters: serde_json::from_str(&filters).unwrap_or_default(),
    })
}

impl Store {
    // ---- regions

    pub async fn region_get(&self, id: &str) -> Result<Option<RegionRow>, Error> {
        self.db
            .query("SELECT id, description, parent_region_id, extra FROM identity_region WHERE id = ?")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .as_ref()
            .map(region)
            .transpose()
    }

    pub async fn region_list(&self) -> Result<Vec<RegionRow>, Error> {
        let rows = self
            .db
            .query("SELECT id, description, parent_region_id, extra FROM identity_region ORDER BY id")
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(region).collect()
    }

    pub async fn region_create(&self, r: &RegionRow) -> Result<(), Error> {
        self.db
            .query("INSERT INTO identity_region (id, description, parent_region_id, extra) VALUES (?, ?, ?, ?)")
            .bind(&r.id)
            .bind(&r.description)
            .bind(&r.parent_region_id)
            .bind(extra_text(&r.extra))
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    pub async fn region_update(&self, r: &RegionRow) -> Result<(), Error> {
        self.db
            .query("UPDATE identity_region SET description = ?, parent_region_id = ?, extra = ? WHERE id = ?")
            .bind(&r.description)
            .bind(&r.parent_region_id)
            .bind(extra_text(&r.extra))
            .bind(&r.id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Deletes regions by id, in one transaction.
    pub async fn region_delete_all(&self, ids: &[String]) -> Result<(), Error> {
        let mut tx = self.db.begin().await?;
        for id in ids {
            self.db.query("DELETE FROM identity_region WHERE id = ?").bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- services

    pub async fn service_get(&self, id: &str) -> Result<Option<ServiceRecord>, Error> {
        self.db
            .query("SELECT id, type, name, description, enabled, extra FROM identity_service WHERE id = ?")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .as_ref()
            .map(service)
            .transpose()
    }

    pub async fn service_list_full(&self) -> Result<Vec<ServiceRecord>, Error> {
        let rows = self
            .db
            .query("SELECT id, type, name, description, enabled, extra FROM identity_service ORDER BY id")
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(service).collect()
    }

    pub async fn service_insert(&self, s: &ServiceRecord) -> Result<(), Error> {
        self.db
            .query(
                "INSERT INTO identity_service (id, type, name, description, enabled, extra) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&s.id)
            .bind(&s.service_type)
            .bind(&s.name)
            .bind(&s.description)
            .bind(Bool(s.enabled))
            .bind(extra_text(&s.extra))
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    pub async fn service_update(&self, s: &ServiceRecord) -> Result<(), Error> {
        self.db
            .query(
                "UPDATE identity_service SET type = ?, name = ?, description = ?, enabled = ?, extra = ? WHERE id = ?",
            )
            .bind(&s.service_type)
            .bind(&s.name)
            .bind(&s.description)
            .bind(Bool(s.enabled))
            .bind(extra_text(&s.extra))
            .bind(&s.id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Deletes a service and its endpoints (as upstream), in one transaction. Returns whether it existed.
    pub async fn service_delete(&self, id: &str) -> Result<bool, Error> {
        let mut tx = self.db.begin().await?;
        self.db.query("DELETE FROM identity_endpoint WHERE service_id = ?").bind(id).execute(&mut *tx).await?;
        let n = self.db.query("DELETE FROM identity_service WHERE id = ?").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(n.rows_affected() > 0)
    }

    // ---- endpoints

    pub async fn endpoint_get(&self, id: &str) -> Result<Option<EndpointRecord>, Error> {
        self.db
            .query(
                "SELECT id, service_id, interface, region_id, url, enabled, extra FROM identity_endpoint WHERE id = ?",
            )
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .as_ref()
            .map(endpoint)
            .transpose()
    }

    pub async fn endpoint_list_full(&self) -> Result<Vec<EndpointRecord>, Error> {
        let rows = self
            .db
            .query(
                "SELECT id, service_id, interface, region_id, url, enabled, extra FROM identity_endpoint ORDER BY id",
            )
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(endpoint).collect()
    }

    pub async fn endpoint_insert(&self, e: &EndpointRecord) -> Result<(), Error> {
        self.db
            .query(
                "INSERT INTO identity_endpoint (id, service_id, interface, region_id, url, enabled, extra) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&e.id)
            .bind(&e.service_id)
            .bind(&e.interface)
            .bind(&e.region_id)
            .bind(&e.url)
            .bind(Bool(e.enabled))
            .bind(extra_text(&e.extra))
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    pub async fn endpoint_update(&self, e: &EndpointRecord) -> Result<(), Error> {
        self.db
            .query(
                "UPDATE identity_endpoint SET service_id = ?, interface = ?, region_id = ?, url = ?, enabled = ?, \
                 extra = ? WHERE id = ?",
            )
            .bind(&e.service_id)
            .bind(&e.interface)
            .bind(&e.region_id)
            .bind(&e.url)
            .bind(Bool(e.enabled))
            .bind(extra_text(&e.extra))
            .bind(&e.id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Returns whether the endpoint existed.
    pub async fn endpoint_delete(&self, id: &str) -> Result<bool, Error> {
        let n = self.db.query("DELETE FROM identity_endpoint WHERE id = ?").bind(id).execute(self.db.pool()).await?;
        Ok(n.rows_affected() > 0)
    }

    // ---- policy blobs

    pub async fn policy_get(&self, id: &str) -> Result<Option<PolicyRow>, Error> {
        self.db
            .query("SELECT id, type, policy_blob, extra FROM identity_policy WHERE id = ?")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .as_ref()
            .map(policy)
            .transpose()
    }

    pub async fn policy_list(&self) -> Result<Vec<PolicyRow>, Error> {
        let rows = self
            .db
            .query("SELECT id, type, policy_blob, extra FROM identity_policy ORDER BY id")
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(policy).collect()
    }

    /// Inserts or replaces (by id).
    pub async fn policy_save(&self, p: &PolicyRow, new: bool) -> Result<(), Error> {
        let sql = if new {
            "INSERT INTO identity_policy (type, policy_blob, extra, id) VALUES (?, ?, ?, ?)"
        } else {
            "UPDATE identity_policy SET type = ?, policy_blob = ?, extra = ? WHERE id = ?"
        };
        self.db
            .query(db::sqlx::AssertSqlSafe(sql))
            .bind(&p.policy_type)
            .bind(&p.blob)
            .bind(extra_text(&p.extra))
            .bind(&p.id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    pub async fn policy_delete(&self, id: &str) -> Result<bool, Error> {
        let n = self.db.query("DELETE FROM identity_policy WHERE id = ?").bind(id).execute(self.db.pool()).await?;
        Ok(n.rows_affected() > 0)
    }

    // ---- endpoint groups

    pub async fn endpoint_group_get(&self, id: &str) -> Result<Option<EndpointGroupRow>, Error> {
        self.db
            .query("SELECT id, name, description, filters FROM identity_endpoint_group WHERE id = ?")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .as_ref()
            .map(endpoint_group)
            .transpose()
    }

    pub async fn endpoint_group_list(&self) -> Result<Vec<EndpointGroupRow>, Error> {
        let rows = self
            .db
            .query("SELECT id, name, description, filters FROM identity_endpoint_group ORDER BY id")
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(endpoint_group).collect()
    }

    /// Inserts or replaces (by id).
    pub async fn endpoint_group_save(&self, g: &EndpointGroupRow, new: bool) -> Result<(), Error> {
        let sql = if new {
            "INSERT INTO identity_endpoint_group (name, description, filters, id) VALUES (?, ?, ?, ?)"
        } else {
            "UPDATE identity_endpoint_group SET name = ?, description = ?, filters = ? WHERE id = ?"
        };
        self.db
            .query(db::sqlx::AssertSqlSafe(sql))
            .bind(&g.name)
            .bind(&g.description)
            .bind(Value::Object(g.filters.clone()).to_string())
            .bind(&g.id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    pub async fn endpoint_group_delete(&self, id: &str) -> Result<bool, Error> {
        let n =
            self.db.query("DELETE FROM identity_endpoint_group WHERE id = ?").bind(id).execute(self.db.pool()).await?;
        Ok(n.rows_affected() > 0)
    }
}
