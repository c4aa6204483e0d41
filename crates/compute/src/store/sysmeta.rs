//! An instance's system metadata: what compute keeps of an instance beside its row and is not the user's
//! metadata (upstream's `instance_system_metadata`): `auto_disk_config` (`OS-DCF:diskConfig`) and the encrypted
//! admin `password` a guest posts through the metadata service.

use std::collections::BTreeMap;

use db::Migration;
use sqlx::Row;

use super::Store;
use crate::error::Error;

pub const MIGRATION: Migration = Migration {
    version: 10,
    name: "instance system metadata",
    sql: "
CREATE TABLE compute_instance_system_metadata (
    instance_uuid {id} NOT NULL,
    meta_key {name} NOT NULL,
    meta_value {text} NOT NULL,
    PRIMARY KEY (instance_uuid, meta_key)
)",
};

/// `auto_disk_config`: `OS-DCF:diskConfig` is `AUTO` when `"True"`.
pub const AUTO_DISK_CONFIG: &str = "auto_disk_config";
/// The guest's encrypted admin password (`os-server-password`).
pub const PASSWORD: &str = "password";

impl Store {
    /// System metadata of many instances at once.
    pub async fn sysmeta_of(&self, uuids: &[&str]) -> Result<BTreeMap<String, BTreeMap<String, String>>, Error> {
        self.key_values(uuids, "SELECT instance_uuid, meta_key, meta_value FROM compute_instance_system_metadata", |r| {
            Ok((r.try_get("meta_key")?, r.try_get("meta_value")?))
        })
        .await
        .map(|m| m.into_iter().map(|(k, v)| (k, v.into_iter().collect())).collect())
    }

    /// Sets (or with `None` removes) one system metadata item.
    pub async fn sysmeta_set(&self, uuid: &str, key: &str, value: Option<&str>) -> Result<(), Error> {
        let mut tx = self.db.begin().await?;
        self.db
            .query("DELETE FROM compute_instance_system_metadata WHERE instance_uuid = ? AND meta_key = ?")
            .bind(uuid)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        if let Some(v) = value {
            self.db
                .query("INSERT INTO compute_instance_system_metadata (instance_uuid, meta_key, meta_value) VALUES (?, ?, ?)")
                .bind(uuid)
                .bind(key)
                .bind(v)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
