//! The service catalog as an API resource: regions (with parents), services and endpoints, each with Keystone's
//! "extra" attributes (unknown fields a client sent, kept as a JSON object). The v1 tables come from the initial
//! schema; this module's migration adds the `extra` columns and the credential and limit tables.

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
            .query("INSERT INTO identity_service (id, type, name, description, enabled, extra) VALUES (?, ?, ?, ?, ?, ?)")
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
            .query("UPDATE identity_service SET type = ?, name = ?, description = ?, enabled = ?, extra = ? WHERE id = ?")
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
            .query("SELECT id, service_id, interface, region_id, url, enabled, extra FROM identity_endpoint WHERE id = ?")
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
            .query("SELECT id, service_id, interface, region_id, url, enabled, extra FROM identity_endpoint ORDER BY id")
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
}
