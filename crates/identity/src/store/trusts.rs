//! Trusts and their delegated roles (`identity_trust`, `identity_trust_role`; created by migration 7 in
//! [`super::application_credentials`]).

use db::Bool;
use sqlx::{Row, any::AnyRow};

use super::{Store, flag};
use crate::error::Error;

/// A trust: the trustor delegates `role_ids` on `project_id` to the trustee. `expires_at` is Unix microseconds;
/// `remaining_uses` `None` means unlimited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustRow {
    pub id: String,
    pub trustor_user_id: String,
    pub trustee_user_id: String,
    pub project_id: Option<String>,
    pub impersonation: bool,
    pub expires_at: Option<i64>,
    pub remaining_uses: Option<i64>,
    pub allow_redelegation: bool,
    pub redelegation_count: Option<i64>,
    pub redelegated_trust_id: Option<String>,
    pub role_ids: Vec<String>,
}

macro_rules! trust_cols {
    () => {
        "id, trustor_user_id, trustee_user_id, project_id, impersonation, expires_at, remaining_uses, \
         allow_redelegation, redelegation_count, redelegated_trust_id"
    };
}

fn trust(row: &AnyRow) -> Result<TrustRow, Error> {
    Ok(TrustRow {
        id: row.try_get("id")?,
        trustor_user_id: row.try_get("trustor_user_id")?,
        trustee_user_id: row.try_get("trustee_user_id")?,
        project_id: row.try_get("project_id")?,
        impersonation: flag(row, "impersonation")?,
        expires_at: row.try_get("expires_at")?,
        remaining_uses: row.try_get("remaining_uses")?,
        allow_redelegation: flag(row, "allow_redelegation")?,
        redelegation_count: row.try_get("redelegation_count")?,
        redelegated_trust_id: row.try_get("redelegated_trust_id")?,
        role_ids: Vec::new(),
    })
}

impl Store {
    /// Stores a trust and its roles in one transaction.
    pub async fn trust_create(&self, t: &TrustRow) -> Result<(), Error> {
        let mut tx = self.db.begin().await?;
        self.db
            .query(concat!("INSERT INTO identity_trust (", trust_cols!(), ", created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"))
            .bind(&t.id)
            .bind(&t.trustor_user_id)
            .bind(&t.trustee_user_id)
            .bind(&t.project_id)
            .bind(Bool(t.impersonation))
            .bind(t.expires_at)
            .bind(t.remaining_uses)
            .bind(Bool(t.allow_redelegation))
            .bind(t.redelegation_count)
            .bind(&t.redelegated_trust_id)
            .bind(chrono::Utc::now().timestamp())
            .execute(&mut *tx)
            .await?;
        for role_id in &t.role_ids {
            self.db
                .query("INSERT INTO identity_trust_role (trust_id, role_id) VALUES (?, ?)")
                .bind(&t.id)
                .bind(role_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// One trust with its role ids, whatever its expiry or remaining uses.
    pub async fn trust_get(&self, id: &str) -> Result<Option<TrustRow>, Error> {
        let sql = concat!("SELECT ", trust_cols!(), " FROM identity_trust WHERE id = ?");
        let row = self.db.query(sql).bind(id).fetch_optional(self.db.pool()).await?;
        match row.as_ref().map(trust).transpose()? {
            Some(t) => Ok(Some(self.trust_fill(t).await?)),
            None => Ok(None),
        }
    }

    /// Trusts, optionally only those of one trustor and/or one trustee.
    pub async fn trust_list(&self, trustor: Option<&str>, trustee: Option<&str>) -> Result<Vec<TrustRow>, Error> {
        let rows = match (trustor, trustee) {
            (Some(u), _) => {
                let sql = concat!("SELECT ", trust_cols!(), " FROM identity_trust WHERE trustor_user_id = ? ORDER BY id");
                self.db.query(sql).bind(u).fetch_all(self.db.pool()).await?
            }
            (None, Some(u)) => {
                let sql = concat!("SELECT ", trust_cols!(), " FROM identity_trust WHERE trustee_user_id = ? ORDER BY id");
                self.db.query(sql).bind(u).fetch_all(self.db.pool()).await?
            }
            (None, None) => {
                let sql = concat!("SELECT ", trust_cols!(), " FROM identity_trust ORDER BY id");
                self.db.query(sql).fetch_all(self.db.pool()).await?
            }
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let t = trust(row)?;
            if trustee.is_none_or(|u| u == t.trustee_user_id) {
                out.push(self.trust_fill(t).await?);
            }
        }
        Ok(out)
    }

    async fn trust_fill(&self, mut t: TrustRow) -> Result<TrustRow, Error> {
        let rows = self
            .db
            .query("SELECT role_id FROM identity_trust_role WHERE trust_id = ? ORDER BY role_id")
            .bind(&t.id)
            .fetch_all(self.db.pool())
            .await?;
        t.role_ids = rows.iter().map(|r| r.try_get("role_id")).collect::<Result<_, _>>()?;
        Ok(t)
    }

    /// Consumes one use of a limited trust. `false` when none is left (or the trust is gone); unlimited trusts
    /// always succeed. Atomic: concurrent consumers never overdraw.
    pub async fn trust_consume_use(&self, id: &str) -> Result<bool, Error> {
        let limited = self
            .db
            .query("UPDATE identity_trust SET remaining_uses = remaining_uses - 1 WHERE id = ? AND remaining_uses > 0")
            .bind(id)
            .execute(self.db.pool())
            .await?;
        if limited.rows_affected() > 0 {
            return Ok(true);
        }
        let unlimited: i64 = self
            .db
            .query_scalar("SELECT COUNT(*) FROM identity_trust WHERE id = ? AND remaining_uses IS NULL")
            .bind(id)
            .fetch_one(self.db.pool())
            .await?;
        Ok(unlimited > 0)
    }

    /// Deletes every trust a user is trustor or trustee of (upstream's clean-up when a user is deleted).
    pub async fn trust_delete_for_user(&self, user_id: &str) -> Result<usize, Error> {
        let mut n = 0;
        for t in self.trust_list(Some(user_id), None).await?.into_iter().chain(self.trust_list(None, Some(user_id)).await?) {
            n += usize::from(self.trust_delete(&t.id).await?);
        }
        Ok(n)
    }

    /// Deletes a trust and its roles; returns whether it existed.
    pub async fn trust_delete(&self, id: &str) -> Result<bool, Error> {
        let mut tx = self.db.begin().await?;
        self.db.query("DELETE FROM identity_trust_role WHERE trust_id = ?").bind(id).execute(&mut *tx).await?;
        let done = self.db.query("DELETE FROM identity_trust WHERE id = ?").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }
}
