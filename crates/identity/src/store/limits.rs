//! Unified limits: registered limits (defaults per service/region/resource) and project limits that override
//! them (`identity_registered_limit`, `identity_limit`; created by the catalog migration, v6). The enforcement
//! model is upstream's `flat`.

use sqlx::{Row, any::AnyRow};

use super::Store;
use crate::error::Error;

#[derive(Clone, Debug, PartialEq)]
pub struct RegisteredLimitRow {
    pub id: String,
    pub service_id: String,
    pub region_id: Option<String>,
    pub resource_name: String,
    pub default_limit: i64,
    pub description: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LimitRow {
    pub id: String,
    pub project_id: Option<String>,
    pub domain_id: Option<String>,
    pub service_id: String,
    pub region_id: Option<String>,
    pub resource_name: String,
    pub resource_limit: i64,
    pub description: Option<String>,
}

fn registered(row: &AnyRow) -> Result<RegisteredLimitRow, Error> {
    Ok(RegisteredLimitRow {
        id: row.try_get("id")?,
        service_id: row.try_get("service_id")?,
        region_id: row.try_get("region_id")?,
        resource_name: row.try_get("resource_name")?,
        default_limit: row.try_get("default_limit")?,
        description: row.try_get("description")?,
    })
}

fn limit(row: &AnyRow) -> Result<LimitRow, Error> {
    Ok(LimitRow {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        domain_id: row.try_get("domain_id")?,
        service_id: row.try_get("service_id")?,
        region_id: row.try_get("region_id")?,
        resource_name: row.try_get("resource_name")?,
        resource_limit: row.try_get("resource_limit")?,
        description: row.try_get("description")?,
    })
}

impl Store {
    // ---- registered limits

    pub async fn registered_limit_get(&self, id: &str) -> Result<Option<RegisteredLimitRow>, Error> {
        self.db
            .query(
                "SELECT id, service_id, region_id, resource_name, default_limit, description \
                 FROM identity_registered_limit WHERE id = ?",
            )
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .as_ref()
            .map(registered)
            .transpose()
    }

    pub async fn registered_limit_list(&self) -> Result<Vec<RegisteredLimitRow>, Error> {
        let rows = self
            .db
            .query(
                "SELECT id, service_id, region_id, resource_name, default_limit, description \
                 FROM identity_registered_limit ORDER BY id",
            )
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(registered).collect()
    }

    /// Inserts several registered limits atomically (the API creates them as a list).
    pub async fn registered_limit_create_all(&self, items: &[RegisteredLimitRow]) -> Result<(), Error> {
        let mut tx = self.db.begin().await?;
        for r in items {
            self.db
                .query(
                    "INSERT INTO identity_registered_limit (id, service_id, region_id, resource_name, default_limit, \
                     description) VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind(&r.id)
                .bind(&r.service_id)
                .bind(&r.region_id)
                .bind(&r.resource_name)
                .bind(r.default_limit)
                .bind(&r.description)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn registered_limit_update(&self, r: &RegisteredLimitRow) -> Result<(), Error> {
        self.db
            .query(
                "UPDATE identity_registered_limit SET service_id = ?, region_id = ?, resource_name = ?, \
                 default_limit = ?, description = ? WHERE id = ?",
            )
            .bind(&r.service_id)
            .bind(&r.region_id)
            .bind(&r.resource_name)
            .bind(r.default_limit)
            .bind(&r.description)
            .bind(&r.id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    pub async fn registered_limit_delete(&self, id: &str) -> Result<bool, Error> {
        let n = self
            .db
            .query("DELETE FROM identity_registered_limit WHERE id = ?")
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(n.rows_affected() > 0)
    }

    // ---- project (and domain) limits

    pub async fn limit_get(&self, id: &str) -> Result<Option<LimitRow>, Error> {
        self.db
            .query(
                "SELECT id, project_id, domain_id, service_id, region_id, resource_name, resource_limit, description \
                 FROM identity_limit WHERE id = ?",
            )
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .as_ref()
            .map(limit)
            .transpose()
    }

    pub async fn limit_list(&self) -> Result<Vec<LimitRow>, Error> {
        let rows = self
            .db
            .query(
                "SELECT id, project_id, domain_id, service_id, region_id, resource_name, resource_limit, description \
                 FROM identity_limit ORDER BY id",
            )
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(limit).collect()
    }

    pub async fn limit_create_all(&self, items: &[LimitRow]) -> Result<(), Error> {
        let mut tx = self.db.begin().await?;
        for l in items {
            self.db
                .query(
                    "INSERT INTO identity_limit (id, project_id, domain_id, service_id, region_id, resource_name, \
                     resource_limit, description) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&l.id)
                .bind(&l.project_id)
                .bind(&l.domain_id)
                .bind(&l.service_id)
                .bind(&l.region_id)
                .bind(&l.resource_name)
                .bind(l.resource_limit)
                .bind(&l.description)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn limit_update(&self, l: &LimitRow) -> Result<(), Error> {
        self.db
            .query("UPDATE identity_limit SET resource_limit = ?, description = ? WHERE id = ?")
            .bind(l.resource_limit)
            .bind(&l.description)
            .bind(&l.id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    pub async fn limit_delete(&self, id: &str) -> Result<bool, Error> {
        let n = self.db.query("DELETE FROM identity_limit WHERE id = ?").bind(id).execute(self.db.pool()).await?;
        Ok(n.rows_affected() > 0)
    }
}
