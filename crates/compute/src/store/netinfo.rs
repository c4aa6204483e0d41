//! What an instance is attached to (Nova's network info cache): the networks its create asked for (resolved by
//! the API), the security groups it boots with, and its interfaces ([`Vif`]) once the conductor made its ports.
//! One row per instance; the JSON columns are compatibility boundaries.

use std::collections::BTreeMap;

use db::Migration;
use sqlx::Row;

use super::{Store, instances::now_us};
use crate::{
    error::Error,
    network::{NetworkRequest, Vif},
};

pub const MIGRATION: Migration = Migration {
    version: 9,
    name: "instance network info",
    sql: "
CREATE TABLE compute_instance_network (
    instance_uuid {id} PRIMARY KEY,
    requested {text} NOT NULL,
    security_groups {text} NOT NULL,
    vifs {text} NOT NULL,
    updated_at {int} NOT NULL
)",
};

/// An instance's network info.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetInfo {
    pub requested: Vec<NetworkRequest>,
    /// Security group names (or ids) the instance's new ports get; empty means the project's `default`.
    pub security_groups: Vec<String>,
    pub vifs: Vec<Vif>,
}

fn from_row(r: &sqlx::any::AnyRow) -> Result<NetInfo, Error> {
    let requested: String = r.try_get("requested")?;
    let groups: String = r.try_get("security_groups")?;
    let vifs: String = r.try_get("vifs")?;
    Ok(NetInfo {
        requested: serde_json::from_str(&requested).unwrap_or_default(),
        security_groups: serde_json::from_str(&groups).unwrap_or_default(),
        vifs: serde_json::from_str(&vifs).unwrap_or_default(),
    })
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

impl Store {
    /// Records what an instance's create asked for (no interfaces yet).
    pub async fn netinfo_insert(&self, uuid: &str, info: &NetInfo) -> Result<(), Error> {
        self.db
            .query(
                "INSERT INTO compute_instance_network (instance_uuid, requested, security_groups, vifs, updated_at) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(uuid)
            .bind(json(&info.requested))
            .bind(json(&info.security_groups))
            .bind(json(&info.vifs))
            .bind(now_us())
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// An instance's network info (`None` for instances made before it was kept, or none at all).
    pub async fn netinfo_get(&self, uuid: &str) -> Result<Option<NetInfo>, Error> {
        let row = self
            .db
            .query("SELECT requested, security_groups, vifs FROM compute_instance_network WHERE instance_uuid = ?")
            .bind(uuid)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The network info of many instances at once.
    pub async fn netinfo_of(&self, uuids: &[&str]) -> Result<BTreeMap<String, NetInfo>, Error> {
        let m = self
            .key_values(uuids, "SELECT instance_uuid, requested, security_groups, vifs FROM compute_instance_network", from_row)
            .await?;
        Ok(m.into_iter().filter_map(|(k, mut v)| v.pop().map(|i| (k, i))).collect())
    }

    /// Replaces an instance's interfaces.
    pub async fn netinfo_set_vifs(&self, uuid: &str, vifs: &[Vif]) -> Result<(), Error> {
        let r = self
            .db
            .query("UPDATE compute_instance_network SET vifs = ?, updated_at = ? WHERE instance_uuid = ?")
            .bind(json(&vifs))
            .bind(now_us())
            .bind(uuid)
            .execute(self.db.pool())
            .await?;
        if r.rows_affected() == 0 {
            self.netinfo_insert(uuid, &NetInfo { vifs: vifs.to_vec(), ..Default::default() }).await?;
        }
        Ok(())
    }

    /// Replaces an instance's security group names.
    pub async fn netinfo_set_groups(&self, uuid: &str, groups: &[String]) -> Result<(), Error> {
        let r = self
            .db
            .query("UPDATE compute_instance_network SET security_groups = ?, updated_at = ? WHERE instance_uuid = ?")
            .bind(json(&groups))
            .bind(now_us())
            .bind(uuid)
            .execute(self.db.pool())
            .await?;
        if r.rows_affected() == 0 {
            self.netinfo_insert(uuid, &NetInfo { security_groups: groups.to_vec(), ..Default::default() }).await?;
        }
        Ok(())
    }
}
