//! The account and container databases: every query on the `object_account`, `object_container` and
//! `object_object` tables. Handlers never run SQL; the service calls these methods, named `resource_verb`.
//!
//! Names can be longer than an indexable column (containers 256 bytes, objects 1024), so rows are keyed by the
//! MD5 of the name (`name_hash`) and the name itself is `{text}`; listings order by the name. A container row
//! keeps its object count and bytes used, updated in the same transaction as the object rows. Timestamps are Unix
//! microseconds; metadata is a JSON object of header suffix → value.

use std::collections::BTreeMap;

use db::{Database, Migration};
use md5::{Digest as _, Md5};
use sqlx::{Row, any::AnyRow};

use crate::{error::Error, ring::hex};

/// Every object-service migration, in order.
pub const MIGRATIONS: &[Migration] = &[INITIAL, DELETE_AT, POLICY];

const INITIAL: Migration = Migration {
    version: 1,
    name: "initial object schema",
    sql: "
CREATE TABLE object_account (
    account {id} PRIMARY KEY,
    created_at {int} NOT NULL,
    updated_at {int} NOT NULL,
    metadata {text} NOT NULL
);
CREATE TABLE object_container (
    account {id} NOT NULL,
    name_hash {id} NOT NULL,
    name {text} NOT NULL,
    created_at {int} NOT NULL,
    updated_at {int} NOT NULL,
    metadata {text} NOT NULL,
    object_count {int} NOT NULL,
    bytes_used {int} NOT NULL,
    PRIMARY KEY (account, name_hash)
);
CREATE TABLE object_object (
    account {id} NOT NULL,
    container_hash {id} NOT NULL,
    name_hash {id} NOT NULL,
    name {text} NOT NULL,
    size {int} NOT NULL,
    etag {id} NOT NULL,
    content_type {text} NOT NULL,
    last_modified {int} NOT NULL,
    timestamp {id} NOT NULL,
    metadata {text} NOT NULL,
    PRIMARY KEY (account, container_hash, name_hash)
)",
};

/// The expiry of objects with `X-Delete-At`, indexed for the expirer (a copy of the `header:x-delete-at` metadata).
const DELETE_AT: Migration = Migration {
    version: 2,
    name: "object expiry index",
    sql: "
ALTER TABLE object_object ADD COLUMN delete_at {int};
CREATE INDEX object_object_delete_at ON object_object (delete_at)",
};

/// Storage policies: a container's policy index (fixed at creation), copied onto its objects so a read knows the
/// ring of its data without another lookup (as Swift's container databases do).
const POLICY: Migration = Migration {
    version: 3,
    name: "storage policies",
    sql: "
ALTER TABLE object_container ADD COLUMN policy_index {int} NOT NULL DEFAULT 0;
ALTER TABLE object_object ADD COLUMN policy_index {int} NOT NULL DEFAULT 0",
};

pub type Metadata = BTreeMap<String, String>;

/// The metadata key of an object's expiry (`X-Delete-At`, Unix seconds), a header it answers with.
pub const DELETE_AT_KEY: &str = "header:x-delete-at";

fn delete_at_of(m: &Metadata) -> Option<i64> {
    m.get(DELETE_AT_KEY).and_then(|v| v.parse().ok())
}

/// An account (`AUTH_<project_id>`).
#[derive(Clone, Debug, PartialEq)]
pub struct AccountRow {
    pub account: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub metadata: Metadata,
}

/// A container with its usage.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerRow {
    pub account: String,
    pub name: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub metadata: Metadata,
    pub object_count: i64,
    pub bytes_used: i64,
    /// The storage policy, by index.
    pub policy_index: i64,
}

/// An object's listing row: everything but its data.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectRow {
    pub account: String,
    pub container: String,
    pub name: String,
    pub size: i64,
    pub etag: String,
    pub content_type: String,
    pub last_modified: i64,
    /// The `X-Timestamp` of the data, which names its data file.
    pub timestamp: String,
    pub metadata: Metadata,
    /// The container's storage policy: whose ring placed the data.
    pub policy_index: i64,
}

/// Which way and from where a listing page reads.
#[derive(Clone, Debug, Default)]
pub struct Page<'a> {
    /// Exclusive: names after this one (before it when `reverse`).
    pub after: Option<&'a str>,
    /// Forward only: names at or after this one (a prefix).
    pub from: &'a str,
    pub reverse: bool,
    pub limit: i64,
}

fn name_hash(name: &str) -> String {
    hex(&Md5::digest(name.as_bytes()))
}

fn metadata_text(m: &Metadata) -> String {
    serde_json::to_string(m).unwrap_or_else(|_| "{}".into())
}

fn metadata_of(text: &str) -> Metadata {
    serde_json::from_str(text).unwrap_or_default()
}

fn container_row(r: &AnyRow) -> Result<ContainerRow, Error> {
    Ok(ContainerRow {
        account: r.try_get("account")?,
        name: r.try_get("name")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        metadata: metadata_of(&r.try_get::<String, _>("metadata")?),
        object_count: r.try_get("object_count")?,
        bytes_used: r.try_get("bytes_used")?,
        policy_index: r.try_get("policy_index")?,
    })
}

fn object_row(r: &AnyRow, container: &str) -> Result<ObjectRow, Error> {
    Ok(ObjectRow {
        account: r.try_get("account")?,
        container: container.to_string(),
        name: r.try_get("name")?,
        size: r.try_get("size")?,
        etag: r.try_get("etag")?,
        content_type: r.try_get("content_type")?,
        last_modified: r.try_get("last_modified")?,
        timestamp: r.try_get("timestamp")?,
        metadata: metadata_of(&r.try_get::<String, _>("metadata")?),
        policy_index: r.try_get("policy_index")?,
    })
}

/// The object service's datastore.
#[derive(Clone, Debug)]
pub struct Store {
    db: Database,
}

impl Store {
    pub fn new(db: Database) -> Self {
        Store { db }
    }

    pub async fn migrate(&self) -> Result<(), Error> {
        Ok(self.db.migrate("object", MIGRATIONS).await?)
    }

    // ---- accounts

    pub async fn account_get(&self, account: &str) -> Result<Option<AccountRow>, Error> {
        let row = self
            .db
            .query("SELECT account, created_at, updated_at, metadata FROM object_account WHERE account = ?")
            .bind(account)
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|r| {
            Ok(AccountRow {
                account: r.try_get("account")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
                metadata: metadata_of(&r.try_get::<String, _>("metadata")?),
            })
        })
        .transpose()
    }

    /// The account, created empty if it does not exist yet (Swift's account auto-creation).
    pub async fn account_ensure(&self, account: &str, now: i64) -> Result<AccountRow, Error> {
        if let Some(a) = self.account_get(account).await? {
            return Ok(a);
        }
        let inserted = self
            .db
            .query("INSERT INTO object_account (account, created_at, updated_at, metadata) VALUES (?, ?, ?, '{}')")
            .bind(account)
            .bind(now)
            .bind(now)
            .execute(self.db.pool())
            .await;
        if let Err(e) = inserted {
            let e = db::Error::from(e);
            if !e.is_unique_violation() {
                return Err(e.into());
            }
        }
        self.account_get(account).await?.ok_or_else(|| Error::NotFound("Account not found".into()))
    }

    pub async fn account_set_metadata(&self, account: &str, metadata: &Metadata, now: i64) -> Result<(), Error> {
        self.db
            .query("UPDATE object_account SET metadata = ?, updated_at = ? WHERE account = ?")
            .bind(metadata_text(metadata))
            .bind(now)
            .bind(account)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Container count, object count and bytes used of an account.
    pub async fn account_usage(&self, account: &str) -> Result<(i64, i64, i64), Error> {
        let mut usage = (0i64, 0i64, 0i64);
        for (_, c, o, b) in self.account_policy_usage(account).await? {
            usage = (usage.0 + c, usage.1 + o, usage.2 + b);
        }
        Ok(usage)
    }

    /// Per storage policy in use (by index, ascending): container count, object count and bytes used.
    pub async fn account_policy_usage(&self, account: &str) -> Result<Vec<(i64, i64, i64, i64)>, Error> {
        let rows = self
            .db
            .query("SELECT object_count, bytes_used, policy_index FROM object_container WHERE account = ?")
            .bind(account)
            .fetch_all(self.db.pool())
            .await?;
        let mut by_policy: BTreeMap<i64, (i64, i64, i64)> = BTreeMap::new();
        for r in rows {
            let u = by_policy.entry(r.try_get::<i64, _>("policy_index")?).or_default();
            u.0 += 1;
            u.1 += r.try_get::<i64, _>("object_count")?;
            u.2 += r.try_get::<i64, _>("bytes_used")?;
        }
        Ok(by_policy.into_iter().map(|(p, (c, o, b))| (p, c, o, b)).collect())
    }

    // ---- containers

    pub async fn container_get(&self, account: &str, name: &str) -> Result<Option<ContainerRow>, Error> {
        let row = self
            .db
            .query(
                "SELECT account, name, created_at, updated_at, metadata, object_count, bytes_used, policy_index \
                 FROM object_container WHERE account = ? AND name_hash = ?",
            )
            .bind(account)
            .bind(name_hash(name))
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(container_row).transpose()
    }

    /// Creates an empty container in a storage policy; `false` when it already exists.
    pub async fn container_create(
        &self,
        account: &str,
        name: &str,
        metadata: &Metadata,
        policy_index: i64,
        now: i64,
    ) -> Result<bool, Error> {
        let inserted = self
            .db
            .query(
                "INSERT INTO object_container (account, name_hash, name, created_at, updated_at, metadata, \
                 object_count, bytes_used, policy_index) VALUES (?, ?, ?, ?, ?, ?, 0, 0, ?)",
            )
            .bind(account)
            .bind(name_hash(name))
            .bind(name)
            .bind(now)
            .bind(now)
            .bind(metadata_text(metadata))
            .bind(policy_index)
            .execute(self.db.pool())
            .await;
        match inserted {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = db::Error::from(e);
                if e.is_unique_violation() { Ok(false) } else { Err(e.into()) }
            }
        }
    }

    pub async fn container_set_metadata(
        &self,
        account: &str,
        name: &str,
        metadata: &Metadata,
        now: i64,
    ) -> Result<(), Error> {
        self.db
            .query("UPDATE object_container SET metadata = ?, updated_at = ? WHERE account = ? AND name_hash = ?")
            .bind(metadata_text(metadata))
            .bind(now)
            .bind(account)
            .bind(name_hash(name))
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Deletes an empty container: `NotFound` if absent, `Conflict` if it still holds objects.
    pub async fn container_delete(&self, account: &str, name: &str) -> Result<(), Error> {
        let mut tx = self.db.begin().await?;
        let hash = name_hash(name);
        let objects: i64 = self
            .db
            .query_scalar("SELECT COUNT(*) FROM object_object WHERE account = ? AND container_hash = ?")
            .bind(account)
            .bind(&hash)
            .fetch_one(&mut *tx)
            .await?;
        if objects > 0 {
            return Err(Error::Conflict("There was a conflict when trying to complete your request.".into()));
        }
        let n = self
            .db
            .query("DELETE FROM object_container WHERE account = ? AND name_hash = ?")
            .bind(account)
            .bind(&hash)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        if n == 0 {
            return Err(Error::NotFound("The resource could not be found.".into()));
        }
        Ok(())
    }

    /// One page of an account's containers in name order.
    pub async fn container_page(&self, account: &str, page: &Page<'_>) -> Result<Vec<ContainerRow>, Error> {
        let q = match (page.reverse, page.after) {
            (false, _) => self
                .db
                .query(
                    "SELECT account, name, created_at, updated_at, metadata, object_count, bytes_used, policy_index \
                     FROM object_container WHERE account = ? AND name > ? AND name >= ? ORDER BY name LIMIT ?",
                )
                .bind(account)
                .bind(page.after.unwrap_or("").to_string())
                .bind(page.from.to_string()),
            (true, Some(after)) => self
                .db
                .query(
                    "SELECT account, name, created_at, updated_at, metadata, object_count, bytes_used, policy_index \
                     FROM object_container WHERE account = ? AND name < ? ORDER BY name DESC LIMIT ?",
                )
                .bind(account)
                .bind(after.to_string()),
            (true, None) => self
                .db
                .query(
                    "SELECT account, name, created_at, updated_at, metadata, object_count, bytes_used, policy_index \
                     FROM object_container WHERE account = ? ORDER BY name DESC LIMIT ?",
                )
                .bind(account),
        };
        let rows = q.bind(page.limit).fetch_all(self.db.pool()).await?;
        rows.iter().map(container_row).collect()
    }

    // ---- objects

    pub async fn object_get(&self, account: &str, container: &str, name: &str) -> Result<Option<ObjectRow>, Error> {
        let row = self
            .db
            .query(
                "SELECT account, name, size, etag, content_type, last_modified, timestamp, metadata, policy_index \
                 FROM object_object WHERE account = ? AND container_hash = ? AND name_hash = ?",
            )
            .bind(account)
            .bind(name_hash(container))
            .bind(name_hash(name))
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|r| object_row(&r, container)).transpose()
    }

    /// Lists an object (replacing the row of the same name) and updates the container's usage, in one
    /// transaction. Returns the row it replaced, whose data the caller removes. `NotFound` if the container is gone.
    pub async fn object_put(&self, row: &ObjectRow) -> Result<Option<ObjectRow>, Error> {
        let ch = name_hash(&row.container);
        let nh = name_hash(&row.name);
        let mut tx = self.db.begin().await?;
        let exists: i64 = self
            .db
            .query_scalar("SELECT COUNT(*) FROM object_container WHERE account = ? AND name_hash = ?")
            .bind(&row.account)
            .bind(&ch)
            .fetch_one(&mut *tx)
            .await?;
        if exists == 0 {
            return Err(Error::NotFound("The resource could not be found.".into()));
        }
        let old = self
            .db
            .query(
                "SELECT account, name, size, etag, content_type, last_modified, timestamp, metadata, policy_index \
                 FROM object_object WHERE account = ? AND container_hash = ? AND name_hash = ?",
            )
            .bind(&row.account)
            .bind(&ch)
            .bind(&nh)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| object_row(&r, &row.container))
            .transpose()?;
        if old.is_some() {
            self.db
                .query("DELETE FROM object_object WHERE account = ? AND container_hash = ? AND name_hash = ?")
                .bind(&row.account)
                .bind(&ch)
                .bind(&nh)
                .execute(&mut *tx)
                .await?;
        }
        self.db
            .query(
                "INSERT INTO object_object (account, container_hash, name_hash, name, size, etag, content_type, \
                 last_modified, timestamp, metadata, delete_at, policy_index) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&row.account)
            .bind(&ch)
            .bind(&nh)
            .bind(&row.name)
            .bind(row.size)
            .bind(&row.etag)
            .bind(&row.content_type)
            .bind(row.last_modified)
            .bind(&row.timestamp)
            .bind(metadata_text(&row.metadata))
            .bind(delete_at_of(&row.metadata))
            .bind(row.policy_index)
            .execute(&mut *tx)
            .await?;
        let (dc, db_) = match &old {
            Some(o) => (0i64, row.size - o.size),
            None => (1, row.size),
        };
        self.db
            .query(
                "UPDATE object_container SET object_count = object_count + ?, bytes_used = bytes_used + ?, \
                 updated_at = ? WHERE account = ? AND name_hash = ?",
            )
            .bind(dc)
            .bind(db_)
            .bind(row.last_modified)
            .bind(&row.account)
            .bind(&ch)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(old)
    }

    /// Replaces an object's metadata (and content type); `false` if the object is gone.
    pub async fn object_set_metadata(
        &self,
        account: &str,
        container: &str,
        name: &str,
        content_type: &str,
        metadata: &Metadata,
        now: i64,
    ) -> Result<bool, Error> {
        let n = self
            .db
            .query(
                "UPDATE object_object SET content_type = ?, metadata = ?, last_modified = ?, delete_at = ? \
                 WHERE account = ? AND container_hash = ? AND name_hash = ?",
            )
            .bind(content_type)
            .bind(metadata_text(metadata))
            .bind(now)
            .bind(delete_at_of(metadata))
            .bind(account)
            .bind(name_hash(container))
            .bind(name_hash(name))
            .execute(self.db.pool())
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Unlists an object and updates the container's usage; returns the removed row, whose data the caller removes.
    pub async fn object_delete(&self, account: &str, container: &str, name: &str) -> Result<Option<ObjectRow>, Error> {
        self.object_delete_version(account, container, name, None).await
    }

    /// Objects whose `X-Delete-At` is at or before `now`, soonest first, with their containers' names.
    pub async fn object_expired_page(&self, now: i64, limit: i64) -> Result<Vec<ObjectRow>, Error> {
        let rows = self
            .db
            .query(
                "SELECT o.account, c.name AS container, o.name, o.size, o.etag, o.content_type, o.last_modified, \
                 o.timestamp, o.metadata, o.policy_index FROM object_object o JOIN object_container c \
                 ON c.account = o.account AND c.name_hash = o.container_hash \
                 WHERE o.delete_at IS NOT NULL AND o.delete_at <= ? ORDER BY o.delete_at LIMIT ?",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| {
                let container: String = r.try_get("container")?;
                object_row(r, &container)
            })
            .collect()
    }

    /// Like [`Store::object_delete`], but only the version with this `timestamp` (when given): a newer object
    /// written meanwhile stays.
    pub async fn object_delete_version(
        &self,
        account: &str,
        container: &str,
        name: &str,
        timestamp: Option<&str>,
    ) -> Result<Option<ObjectRow>, Error> {
        let ch = name_hash(container);
        let nh = name_hash(name);
        let mut tx = self.db.begin().await?;
        let old = self
            .db
            .query(
                "SELECT account, name, size, etag, content_type, last_modified, timestamp, metadata, policy_index \
                 FROM object_object WHERE account = ? AND container_hash = ? AND name_hash = ?",
            )
            .bind(account)
            .bind(&ch)
            .bind(&nh)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| object_row(&r, container))
            .transpose()?;
        let Some(old) = old else {
            return Ok(None);
        };
        if timestamp.is_some_and(|t| t != old.timestamp) {
            return Ok(None);
        }
        self.db
            .query("DELETE FROM object_object WHERE account = ? AND container_hash = ? AND name_hash = ?")
            .bind(account)
            .bind(&ch)
            .bind(&nh)
            .execute(&mut *tx)
            .await?;
        self.db
            .query(
                "UPDATE object_container SET object_count = object_count - 1, bytes_used = bytes_used - ? \
                 WHERE account = ? AND name_hash = ?",
            )
            .bind(old.size)
            .bind(account)
            .bind(&ch)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(old))
    }

    /// One page of a container's objects in name order.
    pub async fn object_page(&self, account: &str, container: &str, page: &Page<'_>) -> Result<Vec<ObjectRow>, Error> {
        let ch = name_hash(container);
        let q = match (page.reverse, page.after) {
            (false, _) => self
                .db
                .query(
                    "SELECT account, name, size, etag, content_type, last_modified, timestamp, metadata, policy_index \
                     FROM object_object WHERE account = ? AND container_hash = ? AND name > ? AND name >= ? \
                     ORDER BY name LIMIT ?",
                )
                .bind(account)
                .bind(ch)
                .bind(page.after.unwrap_or("").to_string())
                .bind(page.from.to_string()),
            (true, Some(after)) => self
                .db
                .query(
                    "SELECT account, name, size, etag, content_type, last_modified, timestamp, metadata, policy_index \
                     FROM object_object WHERE account = ? AND container_hash = ? AND name < ? \
                     ORDER BY name DESC LIMIT ?",
                )
                .bind(account)
                .bind(ch)
                .bind(after.to_string()),
            (true, None) => self
                .db
                .query(
                    "SELECT account, name, size, etag, content_type, last_modified, timestamp, metadata, policy_index \
                     FROM object_object WHERE account = ? AND container_hash = ? ORDER BY name DESC LIMIT ?",
                )
                .bind(account)
                .bind(ch),
        };
        let rows = q.bind(page.limit).fetch_all(self.db.pool()).await?;
        rows.iter().map(|r| object_row(r, container)).collect()
    }
}
