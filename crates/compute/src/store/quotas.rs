//! Quota limits: per project, per user within a project, and per quota class (`default` gives every project its
//! defaults). A missing row means "inherit": user → project → class `default` → the built-in default.

use std::collections::BTreeMap;

use db::Migration;
use sqlx::Row;

use super::Store;
use crate::error::Error;

pub const MIGRATION: Migration = Migration {
    version: 5,
    name: "quota limits and quota classes",
    sql: "
CREATE TABLE compute_quota (
    project_id {id} NOT NULL,
    user_id {id} NOT NULL,
    resource {name} NOT NULL,
    hard_limit {int} NOT NULL,
    PRIMARY KEY (project_id, user_id, resource)
);
CREATE TABLE compute_quota_class (
    class_name {name} NOT NULL,
    resource {name} NOT NULL,
    hard_limit {int} NOT NULL,
    PRIMARY KEY (class_name, resource)
)",
};

/// The `user_id` of a project-wide limit row.
const PROJECT_WIDE: &str = "";

fn limits_of(rows: &[sqlx::any::AnyRow]) -> Result<BTreeMap<String, i64>, Error> {
    rows.iter().map(|r| Ok((r.try_get("resource")?, r.try_get("hard_limit")?))).collect()
}

impl Store {
    /// The limits set for a project (`user_id` `None`) or for one user in it; resources not set are absent.
    pub async fn quota_get(&self, project_id: &str, user_id: Option<&str>) -> Result<BTreeMap<String, i64>, Error> {
        let rows = self
            .db
            .query("SELECT resource, hard_limit FROM compute_quota WHERE project_id = ? AND user_id = ?")
            .bind(project_id)
            .bind(user_id.unwrap_or(PROJECT_WIDE))
            .fetch_all(self.db.pool())
            .await?;
        limits_of(&rows)
    }

    /// The sum of the limits of `resource` set for users of a project other than `except_user`.
    pub async fn quota_users_sum(&self, project_id: &str, resource: &str, except_user: Option<&str>) -> Result<i64, Error> {
        let rows = self
            .db
            .query("SELECT user_id, hard_limit FROM compute_quota WHERE project_id = ? AND resource = ? AND user_id <> ?")
            .bind(project_id)
            .bind(resource)
            .bind(PROJECT_WIDE)
            .fetch_all(self.db.pool())
            .await?;
        let mut sum = 0;
        for r in &rows {
            let user: String = r.try_get("user_id")?;
            let limit: i64 = r.try_get("hard_limit")?;
            if Some(user.as_str()) != except_user && limit > 0 {
                sum += limit;
            }
        }
        Ok(sum)
    }

    /// Sets limits of a project (or of one user in it), in one transaction.
    pub async fn quota_set(
        &self,
        project_id: &str,
        user_id: Option<&str>,
        limits: &BTreeMap<String, i64>,
    ) -> Result<(), Error> {
        let user = user_id.unwrap_or(PROJECT_WIDE);
        let mut tx = self.db.begin().await?;
        for (resource, limit) in limits {
            self.db
                .query("DELETE FROM compute_quota WHERE project_id = ? AND user_id = ? AND resource = ?")
                .bind(project_id)
                .bind(user)
                .bind(resource)
                .execute(&mut *tx)
                .await?;
            self.db
                .query("INSERT INTO compute_quota (project_id, user_id, resource, hard_limit) VALUES (?, ?, ?, ?)")
                .bind(project_id)
                .bind(user)
                .bind(resource)
                .bind(*limit)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Forgets the limits of a whole project (its users' too), or of one user in it.
    pub async fn quota_delete(&self, project_id: &str, user_id: Option<&str>) -> Result<u64, Error> {
        let n = match user_id {
            Some(u) => {
                self.db
                    .query("DELETE FROM compute_quota WHERE project_id = ? AND user_id = ?")
                    .bind(project_id)
                    .bind(u)
                    .execute(self.db.pool())
                    .await?
            }
            None => self.db.query("DELETE FROM compute_quota WHERE project_id = ?").bind(project_id).execute(self.db.pool()).await?,
        };
        Ok(n.rows_affected())
    }

    /// The limits a quota class sets; resources not set are absent.
    pub async fn quota_class_get(&self, class_name: &str) -> Result<BTreeMap<String, i64>, Error> {
        let rows = self
            .db
            .query("SELECT resource, hard_limit FROM compute_quota_class WHERE class_name = ?")
            .bind(class_name)
            .fetch_all(self.db.pool())
            .await?;
        limits_of(&rows)
    }

    /// Sets limits of a quota class, in one transaction.
    pub async fn quota_class_set(&self, class_name: &str, limits: &BTreeMap<String, i64>) -> Result<(), Error> {
        let mut tx = self.db.begin().await?;
        for (resource, limit) in limits {
            self.db
                .query("DELETE FROM compute_quota_class WHERE class_name = ? AND resource = ?")
                .bind(class_name)
                .bind(resource)
                .execute(&mut *tx)
                .await?;
            self.db
                .query("INSERT INTO compute_quota_class (class_name, resource, hard_limit) VALUES (?, ?, ?)")
                .bind(class_name)
                .bind(resource)
                .bind(*limit)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// How many key pairs a user has.
    pub async fn keypair_count(&self, user_id: &str) -> Result<i64, Error> {
        let n: i64 = self
            .db
            .query_scalar("SELECT COUNT(*) FROM compute_keypair WHERE user_id = ?")
            .bind(user_id)
            .fetch_one(self.db.pool())
            .await?;
        Ok(n)
    }
}

impl Store {
    /// Live instances of one user in a project: (count, vcpus, ram), for user quotas.
    pub async fn instance_usage_of_user(&self, project_id: &str, user_id: &str) -> Result<(i64, i64, i64), Error> {
        let rows = self
            .db
            .query("SELECT flavor FROM compute_instance WHERE project_id = ? AND user_id = ? AND deleted = ?")
            .bind(project_id)
            .bind(user_id)
            .bind(false)
            .fetch_all(self.db.pool())
            .await?;
        let mut usage = (0, 0, 0);
        for r in &rows {
            let s: String = r.try_get("flavor")?;
            let f: compute_rpc::FlavorSpec =
                serde_json::from_str(&s).map_err(|e| Error::Config(format!("stored flavor: {e}")))?;
            usage.0 += 1;
            usage.1 += f.vcpus;
            usage.2 += f.memory_mb;
        }
        Ok(usage)
    }
}
