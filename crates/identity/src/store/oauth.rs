//! OAuth 1.0a consumers (`identity_oauth_consumer`, upstream's OS-OAUTH1 extension). The consumer secret is kept
//! encrypted with the credential keys: signing OAuth requests needs it back in clear, so it cannot be hashed.

use db::Migration;
use serde_json::{Map, Value};
use sqlx::{Row, any::AnyRow};

use super::{
    Store,
    catalog::{extra, extra_text},
};
use crate::error::Error;

pub(super) const MIGRATION: Migration = Migration {
    version: 9,
    name: "oauth consumers",
    sql: "
CREATE TABLE identity_oauth_consumer (
    id {id} PRIMARY KEY,
    description {text},
    encrypted_secret {text} NOT NULL,
    extra {text}
)",
};

#[derive(Clone, Debug, PartialEq)]
pub struct ConsumerRow {
    pub id: String,
    pub description: Option<String>,
    pub encrypted_secret: String,
    pub extra: Map<String, Value>,
}

fn consumer(row: &AnyRow) -> Result<ConsumerRow, Error> {
    Ok(ConsumerRow {
        id: row.try_get("id")?,
        description: row.try_get("description")?,
        encrypted_secret: row.try_get("encrypted_secret")?,
        extra: extra(row)?,
    })
}

impl Store {
    pub async fn consumer_get(&self, id: &str) -> Result<Option<ConsumerRow>, Error> {
        self.db
            .query("SELECT id, description, encrypted_secret, extra FROM identity_oauth_consumer WHERE id = ?")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .as_ref()
            .map(consumer)
            .transpose()
    }

    pub async fn consumer_list(&self) -> Result<Vec<ConsumerRow>, Error> {
        let rows = self
            .db
            .query("SELECT id, description, encrypted_secret, extra FROM identity_oauth_consumer ORDER BY id")
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(consumer).collect()
    }

    pub async fn consumer_create(&self, c: &ConsumerRow) -> Result<(), Error> {
        self.db
            .query("INSERT INTO identity_oauth_consumer (id, description, encrypted_secret, extra) VALUES (?, ?, ?, ?)")
            .bind(&c.id)
            .bind(&c.description)
            .bind(&c.encrypted_secret)
            .bind(extra_text(&c.extra))
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    pub async fn consumer_update(&self, c: &ConsumerRow) -> Result<(), Error> {
        self.db
            .query("UPDATE identity_oauth_consumer SET description = ?, extra = ? WHERE id = ?")
            .bind(&c.description)
            .bind(extra_text(&c.extra))
            .bind(&c.id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Deletes a consumer; false if there was none.
    pub async fn consumer_delete(&self, id: &str) -> Result<bool, Error> {
        let done = self.db.query("DELETE FROM identity_oauth_consumer WHERE id = ?").bind(id).execute(self.db.pool()).await?;
        Ok(done.rows_affected() > 0)
    }
}
