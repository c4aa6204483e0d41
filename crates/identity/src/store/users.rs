//! Users beyond what authentication needs (v4): extra attributes, options, password history and expiry, and the
//! failed-authentication counter behind account lockout. [`super::UserRow`] stays the slim row tokens use; a
//! [`UserDetail`] adds everything the users API shows and the security-compliance rules read.

use chrono::Utc;
use db::{Bool, Migration};
use serde_json::{Map, Value};
use sqlx::{Row, any::AnyRow};

use super::{Store, UserRow, user};
use crate::error::Error;

pub(super) const MIGRATION: Migration = Migration {
    version: 4,
    name: "user attributes and security compliance",
    sql: "
ALTER TABLE identity_user ADD COLUMN extra {text};
ALTER TABLE identity_user ADD COLUMN options {text};
ALTER TABLE identity_user ADD COLUMN password_created_at {int};
ALTER TABLE identity_user ADD COLUMN password_expires_at {int};
ALTER TABLE identity_user ADD COLUMN password_self_service {bool};
ALTER TABLE identity_user ADD COLUMN failed_auth_count {int};
ALTER TABLE identity_user ADD COLUMN failed_auth_at {int};
CREATE TABLE identity_password_history (
    id {serial},
    user_id {id} NOT NULL,
    password_hash {name} NOT NULL,
    created_at {int} NOT NULL
);
CREATE INDEX identity_password_history_user ON identity_password_history (user_id)",
};

/// A user with everything the API shows and the security rules need.
#[derive(Clone, Debug)]
pub struct UserDetail {
    pub user: UserRow,
    /// Attributes Keystone keeps as "extra": `description`, `email`, and whatever else clients send.
    pub extra: Map<String, Value>,
    /// Resource options (`ignore_lockout_failure_attempts`, `lock_password`, …).
    pub options: Map<String, Value>,
    /// Unix seconds the current password was set; `None` for users created before v4 or without a password.
    pub password_created_at: Option<i64>,
    /// Unix seconds the current password expires; `None`: never.
    pub password_expires_at: Option<i64>,
    /// Whether the owner set the current password (self-service change) rather than an administrator.
    pub password_self_service: bool,
    /// Consecutive failed password authentications.
    pub failed_auth_count: i64,
    /// Unix seconds of the latest failure.
    pub failed_auth_at: Option<i64>,
}

/// Filters of `GET /v3/users` that SQL applies; the rest are applied by the caller.
#[derive(Clone, Debug, Default)]
pub struct UserFilter {
    pub domain_id: Option<String>,
    pub name: Option<String>,
    pub enabled: Option<bool>,
}

fn json_map(row: &AnyRow, col: &str) -> Result<Map<String, Value>, Error> {
    let text: Option<String> = row.try_get(col)?;
    Ok(match text.as_deref().map(serde_json::from_str::<Value>) {
        Some(Ok(Value::Object(m))) => m,
        _ => Map::new(),
    })
}

fn detail(row: &AnyRow) -> Result<UserDetail, Error> {
    Ok(UserDetail {
        user: user(row)?,
        extra: json_map(row, "extra")?,
        options: json_map(row, "options")?,
        password_created_at: row.try_get("password_created_at")?,
        password_expires_at: row.try_get("password_expires_at")?,
        password_self_service: row.try_get::<Option<Bool>, _>("password_self_service")?.is_some_and(bool::from),
        failed_auth_count: row.try_get::<Option<i64>, _>("failed_auth_count")?.unwrap_or(0),
        failed_auth_at: row.try_get("failed_auth_at")?,
    })
}

fn json_text(m: &Map<String, Value>) -> String {
    Value::Object(m.clone()).to_string()
}

macro_rules! detail_cols {
    () => {
        "id, name, domain_id, enabled, password_hash, default_project_id, extra, options, password_created_at, \
         password_expires_at, password_self_service, failed_auth_count, failed_auth_at"
    };
}

/// The user columns prefixed with `u.` (for joins).
macro_rules! detail_cols_u {
    () => {
        "u.id, u.name, u.domain_id, u.enabled, u.password_hash, u.default_project_id, u.extra, u.options, \
         u.password_created_at, u.password_expires_at, u.password_self_service, u.failed_auth_count, \
         u.failed_auth_at"
    };
}

impl Store {
    pub async fn user_detail_get(&self, id: &str) -> Result<Option<UserDetail>, Error> {
        let sql = concat!("SELECT ", detail_cols!(), " FROM identity_user WHERE id = ?");
        self.db.query(sql).bind(id).fetch_optional(self.db.pool()).await?.as_ref().map(detail).transpose()
    }

    /// Users matching `f`, ordered by name then id.
    pub async fn user_detail_list(&self, f: &UserFilter) -> Result<Vec<UserDetail>, Error> {
        // Every optional filter is bound twice: `(? IS NULL OR col = ?)` keeps the SQL constant.
        let sql = concat!(
            "SELECT ",
            detail_cols!(),
            " FROM identity_user WHERE (? IS NULL OR domain_id = ?) AND (? IS NULL OR name = ?) ORDER BY name, id"
        );
        let rows = self
            .db
            .query(sql)
            .bind(f.domain_id.clone())
            .bind(f.domain_id.clone())
            .bind(f.name.clone())
            .bind(f.name.clone())
            .fetch_all(self.db.pool())
            .await?;
        let all = rows.iter().map(detail).collect::<Result<Vec<_>, _>>()?;
        Ok(all.into_iter().filter(|u| f.enabled.is_none_or(|e| u.user.enabled == e)).collect())
    }

    /// Inserts a user with all its attributes; a password hash in `u.user` is recorded in the history too.
    pub async fn user_detail_create(&self, u: &UserDetail) -> Result<(), Error> {
        let now = Utc::now().timestamp();
        let mut tx = self.db.begin().await?;
        self.db
            .query(
                "INSERT INTO identity_user (id, name, domain_id, enabled, password_hash, default_project_id, \
                 created_at, extra, options, password_created_at, password_expires_at, password_self_service, \
                 failed_auth_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&u.user.id)
            .bind(&u.user.name)
            .bind(&u.user.domain_id)
            .bind(Bool(u.user.enabled))
            .bind(&u.user.password_hash)
            .bind(&u.user.default_project_id)
            .bind(now)
            .bind(json_text(&u.extra))
            .bind(json_text(&u.options))
            .bind(u.password_created_at)
            .bind(u.password_expires_at)
            .bind(Bool(u.password_self_service))
            .bind(0_i64)
            .execute(&mut *tx)
            .await?;
        if let Some(hash) = &u.user.password_hash {
            self.db
                .query("INSERT INTO identity_password_history (user_id, password_hash, created_at) VALUES (?, ?, ?)")
                .bind(&u.user.id)
                .bind(hash)
                .bind(u.password_created_at.unwrap_or(now))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Writes name, enabled, default project, extra attributes and options (not the password).
    pub async fn user_detail_update(&self, u: &UserDetail) -> Result<(), Error> {
        self.db
            .query(
                "UPDATE identity_user SET name = ?, enabled = ?, default_project_id = ?, extra = ?, options = ? \
                 WHERE id = ?",
            )
            .bind(&u.user.name)
            .bind(Bool(u.user.enabled))
            .bind(&u.user.default_project_id)
            .bind(json_text(&u.extra))
            .bind(json_text(&u.options))
            .bind(&u.user.id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Deletes a user with its memberships, role assignments, password history, application credentials, trusts and
    /// credentials. False if there was none.
    pub async fn user_delete(&self, id: &str) -> Result<bool, Error> {
        let mut tx = self.db.begin().await?;
        let n = self.db.query("DELETE FROM identity_user WHERE id = ?").bind(id).execute(&mut *tx).await?;
        if n.rows_affected() == 0 {
            return Ok(false);
        }
        self.db.query("DELETE FROM identity_user_group WHERE user_id = ?").bind(id).execute(&mut *tx).await?;
        self.db.query("DELETE FROM identity_assignment WHERE actor_id = ?").bind(id).execute(&mut *tx).await?;
        self.db.query("DELETE FROM identity_password_history WHERE user_id = ?").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        // What the user owned goes with them, as upstream: application credentials, trusts, credentials.
        self.application_credential_delete_for(Some(id), None).await?;
        self.trust_delete_for_user(id).await?;
        self.credential_delete_for_user(id).await?;
        Ok(true)
    }

    /// Sets a new password: the hash, when it was set, when it expires and whether its owner set it; records it in
    /// the history, keeping the `keep` most recent entries (at least one); and clears the failed-authentication
    /// counter.
    pub async fn user_password_set(
        &self,
        id: &str,
        hash: &str,
        expires_at: Option<i64>,
        self_service: bool,
        keep: usize,
    ) -> Result<(), Error> {
        let now = Utc::now().timestamp();
        let mut tx = self.db.begin().await?;
        self.db
            .query(
                "UPDATE identity_user SET password_hash = ?, password_created_at = ?, password_expires_at = ?, \
                 password_self_service = ?, failed_auth_count = 0, failed_auth_at = NULL WHERE id = ?",
            )
            .bind(hash)
            .bind(now)
            .bind(expires_at)
            .bind(Bool(self_service))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.db
            .query("INSERT INTO identity_password_history (user_id, password_hash, created_at) VALUES (?, ?, ?)")
            .bind(id)
            .bind(hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let ids: Vec<i64> = self
            .db
            .query_scalar("SELECT id FROM identity_password_history WHERE user_id = ? ORDER BY id DESC")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
        for old in ids.iter().skip(keep.max(1)) {
            self.db.query("DELETE FROM identity_password_history WHERE id = ?").bind(*old).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Hashes of the user's `n` most recent passwords (the current one first).
    pub async fn user_password_history(&self, id: &str, n: usize) -> Result<Vec<String>, Error> {
        let rows = self
            .db
            .query("SELECT password_hash FROM identity_password_history WHERE user_id = ? ORDER BY id DESC")
            .bind(id)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().take(n).map(|r| Ok(r.try_get("password_hash")?)).collect()
    }

    /// Counts one more failed password authentication at `now`; returns the new count.
    pub async fn user_auth_failure_record(&self, id: &str, now: i64) -> Result<i64, Error> {
        self.db
            .query(
                "UPDATE identity_user SET failed_auth_count = COALESCE(failed_auth_count, 0) + 1, failed_auth_at = ? \
                 WHERE id = ?",
            )
            .bind(now)
            .bind(id)
            .execute(self.db.pool())
            .await?;
        let count: Option<i64> = self
            .db
            .query_scalar("SELECT failed_auth_count FROM identity_user WHERE id = ?")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .flatten();
        Ok(count.unwrap_or(0))
    }

    /// Forgets failed authentications (after a success, or when a lockout has run out).
    pub async fn user_auth_failure_reset(&self, id: &str) -> Result<(), Error> {
        self.db
            .query(
                "UPDATE identity_user SET failed_auth_count = 0, failed_auth_at = NULL \
                 WHERE id = ? AND (failed_auth_count <> 0 OR failed_auth_at IS NOT NULL)",
            )
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Members of a group, ordered by name.
    pub async fn user_list_in_group(&self, group_id: &str) -> Result<Vec<UserDetail>, Error> {
        let sql = concat!(
            "SELECT ",
            detail_cols_u!(),
            " FROM identity_user u JOIN identity_user_group m ON m.user_id = u.id WHERE m.group_id = ? \
             ORDER BY u.name, u.id"
        );
        let rows = self.db.query(sql).bind(group_id).fetch_all(self.db.pool()).await?;
        rows.iter().map(detail).collect()
    }

    /// Ids of the projects on which the user holds a role directly or through one of their groups.
    pub async fn user_project_ids(&self, user_id: &str) -> Result<Vec<String>, Error> {
        let rows = self
            .db
            .query(
                "SELECT DISTINCT target_id FROM identity_assignment WHERE (kind = ? AND actor_id = ?) OR \
                 (kind = ? AND actor_id IN (SELECT group_id FROM identity_user_group WHERE user_id = ?)) \
                 ORDER BY target_id",
            )
            .bind(super::kind::USER_PROJECT)
            .bind(user_id)
            .bind(super::kind::GROUP_PROJECT)
            .bind(user_id)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(|r| Ok(r.try_get("target_id")?)).collect()
    }
}
