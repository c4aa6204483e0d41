//! Application credentials, their roles and access rules (`identity_application_credential`,
//! `identity_application_credential_role`, `identity_access_rule`, `identity_application_credential_access_rule`).
//!
//! Migration 7 also creates the trust tables queried in [`super::trusts`]: both families of delegation landed
//! together.

use db::{Bool, Migration};
use sqlx::{Row, any::AnyRow};

use super::{Store, flag};
use crate::error::Error;

pub(super) const MIGRATION: Migration = Migration {
    version: 7,
    name: "application credentials, access rules and trusts",
    sql: "
CREATE TABLE identity_application_credential (
    id {id} PRIMARY KEY,
    name {name} NOT NULL,
    user_id {id} NOT NULL,
    project_id {id} NOT NULL,
    secret_hash {name} NOT NULL,
    description {text},
    expires_at {int},
    unrestricted {bool} NOT NULL,
    created_at {int} NOT NULL,
    UNIQUE (user_id, name)
);
CREATE TABLE identity_application_credential_role (
    application_credential_id {id} NOT NULL,
    role_id {id} NOT NULL,
    PRIMARY KEY (application_credential_id, role_id)
);
CREATE TABLE identity_access_rule (
    id {id} PRIMARY KEY,
    user_id {id} NOT NULL,
    service {name} NOT NULL,
    path {name} NOT NULL,
    method {id} NOT NULL
);
CREATE INDEX identity_access_rule_user ON identity_access_rule (user_id);
CREATE TABLE identity_application_credential_access_rule (
    application_credential_id {id} NOT NULL,
    access_rule_id {id} NOT NULL,
    PRIMARY KEY (application_credential_id, access_rule_id)
);
CREATE TABLE identity_trust (
    id {id} PRIMARY KEY,
    trustor_user_id {id} NOT NULL,
    trustee_user_id {id} NOT NULL,
    project_id {id},
    impersonation {bool} NOT NULL,
    expires_at {int},
    remaining_uses {int},
    allow_redelegation {bool} NOT NULL,
    redelegation_count {int},
    redelegated_trust_id {id},
    created_at {int} NOT NULL
);
CREATE INDEX identity_trust_trustor ON identity_trust (trustor_user_id);
CREATE INDEX identity_trust_trustee ON identity_trust (trustee_user_id);
CREATE TABLE identity_trust_role (
    trust_id {id} NOT NULL,
    role_id {id} NOT NULL,
    PRIMARY KEY (trust_id, role_id)
)",
};

/// An application credential. `expires_at` is Unix microseconds; the secret is kept only as a bcrypt hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppCredRow {
    pub id: String,
    pub name: String,
    pub user_id: String,
    pub project_id: String,
    pub secret_hash: String,
    pub description: Option<String>,
    pub expires_at: Option<i64>,
    pub unrestricted: bool,
    /// Role ids delegated to the credential.
    pub role_ids: Vec<String>,
    pub access_rules: Vec<AccessRuleRow>,
}

/// An access rule: which API calls an application credential may make. Owned by a user, shared between that user's
/// credentials when identical.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRuleRow {
    pub id: String,
    pub user_id: String,
    pub service: String,
    pub path: String,
    pub method: String,
}

macro_rules! app_cred_cols {
    () => {
        "id, name, user_id, project_id, secret_hash, description, expires_at, unrestricted"
    };
}

fn app_cred(row: &AnyRow) -> Result<AppCredRow, Error> {
    Ok(AppCredRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        user_id: row.try_get("user_id")?,
        project_id: row.try_get("project_id")?,
        secret_hash: row.try_get("secret_hash")?,
        description: row.try_get("description")?,
        expires_at: row.try_get("expires_at")?,
        unrestricted: flag(row, "unrestricted")?,
        role_ids: Vec::new(),
        access_rules: Vec::new(),
    })
}

fn access_rule(row: &AnyRow) -> Result<AccessRuleRow, Error> {
    Ok(AccessRuleRow {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        service: row.try_get("service")?,
        path: row.try_get("path")?,
        method: row.try_get("method")?,
    })
}

impl Store {
    /// Stores a credential with its roles and access rules in one transaction. Access rules identical to one the
    /// user already has (same service, path and method) reuse it; the row's ids are rewritten accordingly.
    /// A duplicate name for the same user is a unique violation.
    pub async fn application_credential_create(&self, c: &mut AppCredRow) -> Result<(), Error> {
        let mut tx = self.db.begin().await?;
        self.db
            .query(concat!(
                "INSERT INTO identity_application_credential (",
                app_cred_cols!(),
                ", created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .bind(&c.id)
            .bind(&c.name)
            .bind(&c.user_id)
            .bind(&c.project_id)
            .bind(&c.secret_hash)
            .bind(&c.description)
            .bind(c.expires_at)
            .bind(Bool(c.unrestricted))
            .bind(chrono::Utc::now().timestamp())
            .execute(&mut *tx)
            .await?;
        for role_id in &c.role_ids {
            self.db
                .query("INSERT INTO identity_application_credential_role (application_credential_id, role_id) VALUES (?, ?)")
                .bind(&c.id)
                .bind(role_id)
                .execute(&mut *tx)
                .await?;
        }
        for rule in &mut c.access_rules {
            let existing = self
                .db
                .query(
                    "SELECT id, user_id, service, path, method FROM identity_access_rule \
                     WHERE user_id = ? AND service = ? AND path = ? AND method = ?",
                )
                .bind(&c.user_id)
                .bind(&rule.service)
                .bind(&rule.path)
                .bind(&rule.method)
                .fetch_optional(&mut *tx)
                .await?;
            match existing.as_ref().map(access_rule).transpose()? {
                Some(found) => *rule = found,
                None => {
                    rule.user_id = c.user_id.clone();
                    self.db
                        .query("INSERT INTO identity_access_rule (id, user_id, service, path, method) VALUES (?, ?, ?, ?, ?)")
                        .bind(&rule.id)
                        .bind(&rule.user_id)
                        .bind(&rule.service)
                        .bind(&rule.path)
                        .bind(&rule.method)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            self.db
                .query(
                    "INSERT INTO identity_application_credential_access_rule (application_credential_id, \
                     access_rule_id) VALUES (?, ?)",
                )
                .bind(&c.id)
                .bind(&rule.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// One credential with its roles and access rules.
    pub async fn application_credential_get(&self, id: &str) -> Result<Option<AppCredRow>, Error> {
        let sql = concat!("SELECT ", app_cred_cols!(), " FROM identity_application_credential WHERE id = ?");
        let row = self.db.query(sql).bind(id).fetch_optional(self.db.pool()).await?;
        match row.as_ref().map(app_cred).transpose()? {
            Some(c) => Ok(Some(self.application_credential_fill(c).await?)),
            None => Ok(None),
        }
    }

    pub async fn application_credential_get_by_name(&self, user_id: &str, name: &str) -> Result<Option<AppCredRow>, Error> {
        let sql =
            concat!("SELECT ", app_cred_cols!(), " FROM identity_application_credential WHERE user_id = ? AND name = ?");
        let row = self.db.query(sql).bind(user_id).bind(name).fetch_optional(self.db.pool()).await?;
        match row.as_ref().map(app_cred).transpose()? {
            Some(c) => Ok(Some(self.application_credential_fill(c).await?)),
            None => Ok(None),
        }
    }

    /// A user's credentials, by name, optionally only the one named `name`.
    pub async fn application_credential_list(&self, user_id: &str, name: Option<&str>) -> Result<Vec<AppCredRow>, Error> {
        let rows = match name {
            Some(name) => {
                let sql = concat!(
                    "SELECT ",
                    app_cred_cols!(),
                    " FROM identity_application_credential WHERE user_id = ? AND name = ? ORDER BY name"
                );
                self.db.query(sql).bind(user_id).bind(name).fetch_all(self.db.pool()).await?
            }
            None => {
                let sql = concat!(
                    "SELECT ",
                    app_cred_cols!(),
                    " FROM identity_application_credential WHERE user_id = ? ORDER BY name"
                );
                self.db.query(sql).bind(user_id).fetch_all(self.db.pool()).await?
            }
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(self.application_credential_fill(app_cred(row)?).await?);
        }
        Ok(out)
    }

    async fn application_credential_fill(&self, mut c: AppCredRow) -> Result<AppCredRow, Error> {
        let roles = self
            .db
            .query("SELECT role_id FROM identity_application_credential_role WHERE application_credential_id = ? ORDER BY role_id")
            .bind(&c.id)
            .fetch_all(self.db.pool())
            .await?;
        c.role_ids = roles.iter().map(|r| r.try_get("role_id")).collect::<Result<_, _>>()?;
        let rules = self
            .db
            .query(
                "SELECT r.id, r.user_id, r.service, r.path, r.method FROM identity_access_rule r \
                 JOIN identity_application_credential_access_rule l ON l.access_rule_id = r.id \
                 WHERE l.application_credential_id = ? ORDER BY r.id",
            )
            .bind(&c.id)
            .fetch_all(self.db.pool())
            .await?;
        c.access_rules = rules.iter().map(access_rule).collect::<Result<_, _>>()?;
        Ok(c)
    }

    /// Deletes a credential and its role and access-rule links (the access rules themselves stay with the user).
    /// Returns whether it existed.
    pub async fn application_credential_delete(&self, id: &str) -> Result<bool, Error> {
        let mut tx = self.db.begin().await?;
        self.db
            .query("DELETE FROM identity_application_credential_role WHERE application_credential_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.db
            .query("DELETE FROM identity_application_credential_access_rule WHERE application_credential_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done =
            self.db.query("DELETE FROM identity_application_credential WHERE id = ?").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes every credential a user owns, or every credential bound to a project (upstream's clean-up when a
    /// user or project is deleted). Returns how many went.
    pub async fn application_credential_delete_for(&self, user_id: Option<&str>, project_id: Option<&str>) -> Result<usize, Error> {
        let mut ids: Vec<String> = Vec::new();
        if let Some(u) = user_id {
            ids.extend(self.application_credential_list(u, None).await?.into_iter().map(|c| c.id));
        }
        if let Some(p) = project_id {
            let rows = self
                .db
                .query("SELECT id FROM identity_application_credential WHERE project_id = ?")
                .bind(p)
                .fetch_all(self.db.pool())
                .await?;
            for r in &rows {
                ids.push(r.try_get("id")?);
            }
        }
        let mut n = 0;
        for id in ids {
            n += usize::from(self.application_credential_delete(&id).await?);
        }
        Ok(n)
    }

    pub async fn access_rule_list(&self, user_id: &str) -> Result<Vec<AccessRuleRow>, Error> {
        let rows = self
            .db
            .query("SELECT id, user_id, service, path, method FROM identity_access_rule WHERE user_id = ? ORDER BY id")
            .bind(user_id)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(access_rule).collect()
    }

    pub async fn access_rule_get(&self, id: &str) -> Result<Option<AccessRuleRow>, Error> {
        self.db
            .query("SELECT id, user_id, service, path, method FROM identity_access_rule WHERE id = ?")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .as_ref()
            .map(access_rule)
            .transpose()
    }

    /// Whether any application credential still uses the access rule.
    pub async fn access_rule_in_use(&self, id: &str) -> Result<bool, Error> {
        let n: i64 = self
            .db
            .query_scalar("SELECT COUNT(*) FROM identity_application_credential_access_rule WHERE access_rule_id = ?")
            .bind(id)
            .fetch_one(self.db.pool())
            .await?;
        Ok(n > 0)
    }

    pub async fn access_rule_delete(&self, id: &str) -> Result<bool, Error> {
        let done = self.db.query("DELETE FROM identity_access_rule WHERE id = ?").bind(id).execute(self.db.pool()).await?;
        Ok(done.rows_affected() > 0)
    }
}
