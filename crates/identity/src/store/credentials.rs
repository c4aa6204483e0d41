//! Credentials (`identity_credential`): EC2-style access/secret pairs and generic blobs owned by a user.
//!
//! Blobs are encrypted at rest, as upstream does, with Fernet keys from a separate credential key repository:
//! `credential-keys` next to the token key repository (`<data dir>/credential-keys` by default), created on first
//! use with the same machinery as the token keys ([`TokenKeys`]). The store only sees ciphertext; the
//! [`Identity`] methods here encrypt and decrypt.

use std::path::PathBuf;

use sha2::{Digest, Sha256};
use sqlx::{Row, any::AnyRow};

use super::{
    Store,
    catalog::{extra, extra_text},
};
use crate::{error::Error, service::Identity, token::TokenKeys};

/// A credential as stored: the blob is ciphertext.
#[derive(Clone, Debug, PartialEq)]
pub struct CredentialRow {
    pub id: String,
    pub user_id: String,
    pub project_id: Option<String>,
    pub cred_type: String,
    pub encrypted_blob: String,
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A credential with its blob in clear (what the API shows).
#[derive(Clone, Debug, PartialEq)]
pub struct Credential {
    pub id: String,
    pub user_id: String,
    pub project_id: Option<String>,
    pub cred_type: String,
    pub blob: String,
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// An EC2 credential resolved by access key: what a signature check (S3, `ec2tokens`) needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Ec2Credential {
    pub credential_id: String,
    pub user_id: String,
    pub project_id: Option<String>,
    pub access: String,
    pub secret: String,
}

/// Credential type whose id derives from its access key.
pub const EC2: &str = "ec2";

/// Upstream's id of an EC2 credential: the SHA-256 hex digest of its access key.
pub fn ec2_credential_id(access: &str) -> String {
    Sha256::digest(access.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn credential(row: &AnyRow) -> Result<CredentialRow, Error> {
    Ok(CredentialRow {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        project_id: row.try_get("project_id")?,
        cred_type: row.try_get("type")?,
        encrypted_blob: row.try_get("encrypted_blob")?,
        extra: extra(row)?,
    })
}

impl Store {
    pub async fn credential_get(&self, id: &str) -> Result<Option<CredentialRow>, Error> {
        self.db
            .query("SELECT id, user_id, project_id, type, encrypted_blob, extra FROM identity_credential WHERE id = ?")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .as_ref()
            .map(credential)
            .transpose()
    }

    /// All credentials, or one user's.
    pub async fn credential_list(&self, user_id: Option<&str>) -> Result<Vec<CredentialRow>, Error> {
        let rows = match user_id {
            Some(u) => {
                self.db
                    .query(
                        "SELECT id, user_id, project_id, type, encrypted_blob, extra FROM identity_credential \
                         WHERE user_id = ? ORDER BY id",
                    )
                    .bind(u)
                    .fetch_all(self.db.pool())
                    .await?
            }
            None => {
                self.db
                    .query(
                        "SELECT id, user_id, project_id, type, encrypted_blob, extra FROM identity_credential \
                         ORDER BY id",
                    )
                    .fetch_all(self.db.pool())
                    .await?
            }
        };
        rows.iter().map(credential).collect()
    }

    pub async fn credential_create(&self, c: &CredentialRow) -> Result<(), Error> {
        self.db
            .query(
                "INSERT INTO identity_credential (id, user_id, project_id, type, encrypted_blob, extra, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&c.id)
            .bind(&c.user_id)
            .bind(&c.project_id)
            .bind(&c.cred_type)
            .bind(&c.encrypted_blob)
            .bind(extra_text(&c.extra))
            .bind(chrono::Utc::now().timestamp())
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    pub async fn credential_update(&self, c: &CredentialRow) -> Result<(), Error> {
        self.db
            .query(
                "UPDATE identity_credential SET user_id = ?, project_id = ?, type = ?, encrypted_blob = ?, extra = ? \
                 WHERE id = ?",
            )
            .bind(&c.user_id)
            .bind(&c.project_id)
            .bind(&c.cred_type)
            .bind(&c.encrypted_blob)
            .bind(extra_text(&c.extra))
            .bind(&c.id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Returns whether the credential existed.
    pub async fn credential_delete(&self, id: &str) -> Result<bool, Error> {
        let n = self.db.query("DELETE FROM identity_credential WHERE id = ?").bind(id).execute(self.db.pool()).await?;
        Ok(n.rows_affected() > 0)
    }

    /// Deletes every credential of a user (upstream does when the user is deleted).
    pub async fn credential_delete_for_user(&self, user_id: &str) -> Result<(), Error> {
        self.db
            .query("DELETE FROM identity_credential WHERE user_id = ?")
            .bind(user_id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }
}

impl Identity {
    /// The credential key repository: `credential-keys` beside the token key repository.
    pub fn credential_key_repository(&self) -> PathBuf {
        let tokens = &self.config().key_repository;
        match tokens.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.join("credential-keys"),
            _ => tokens.join("credential-keys"),
        }
    }

    /// Loaded per use, so a rotation by another process is seen at once (credential calls are rare).
    pub(crate) fn credential_keys(&self) -> Result<TokenKeys, Error> {
        TokenKeys::load_or_create(&self.credential_key_repository())
    }

    fn decrypt_credential(&self, keys: &TokenKeys, row: CredentialRow) -> Result<Credential, Error> {
        let blob = String::from_utf8(keys.decrypt(&row.encrypted_blob)?)
            .map_err(|_| Error::Internal(format!("credential {} has a blob that is not UTF-8", row.id)))?;
        Ok(Credential {
            id: row.id,
            user_id: row.user_id,
            project_id: row.project_id,
            cred_type: row.cred_type,
            blob,
            extra: row.extra,
        })
    }

    fn encrypt_credential(&self, keys: &TokenKeys, c: &Credential) -> CredentialRow {
        CredentialRow {
            id: c.id.clone(),
            user_id: c.user_id.clone(),
            project_id: c.project_id.clone(),
            cred_type: c.cred_type.clone(),
            encrypted_blob: keys.encrypt(c.blob.as_bytes()),
            extra: c.extra.clone(),
        }
    }

    pub async fn credential_get(&self, id: &str) -> Result<Option<Credential>, Error> {
        match self.store().credential_get(id).await? {
            Some(row) => Ok(Some(self.decrypt_credential(&self.credential_keys()?, row)?)),
            None => Ok(None),
        }
    }

    pub async fn credential_list(&self, user_id: Option<&str>) -> Result<Vec<Credential>, Error> {
        let rows = self.store().credential_list(user_id).await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.credential_keys()?;
        rows.into_iter().map(|r| self.decrypt_credential(&keys, r)).collect()
    }

    pub async fn credential_create(&self, c: &Credential) -> Result<(), Error> {
        let row = self.encrypt_credential(&self.credential_keys()?, c);
        self.store().credential_create(&row).await
    }

    pub async fn credential_update(&self, c: &Credential) -> Result<(), Error> {
        let row = self.encrypt_credential(&self.credential_keys()?, c);
        self.store().credential_update(&row).await
    }

    /// Resolves an EC2 access key to its owner and secret (for S3 signatures and `ec2tokens`), as upstream: by the
    /// credential id derived from the access key. `None` if there is no such EC2 credential.
    pub async fn ec2_credential(&self, access: &str) -> Result<Option<Ec2Credential>, Error> {
        let Some(c) = self.credential_get(&ec2_credential_id(access)).await? else { return Ok(None) };
        if c.cred_type != EC2 {
            return Ok(None);
        }
        let blob: serde_json::Value = serde_json::from_str(&c.blob).unwrap_or_default();
        let field = |k: &str| blob.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let (Some(access), Some(secret)) = (field("access"), field("secret")) else { return Ok(None) };
        Ok(Some(Ec2Credential { credential_id: c.id, user_id: c.user_id, project_id: c.project_id, access, secret }))
    }
}
