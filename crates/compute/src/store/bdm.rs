//! An instance's block device mappings (upstream's `block_device_mapping`): the volumes it boots from or has
//! attached, with the block storage service's attachment of each, the guest's device name, its device tag and
//! whether the volume goes with the instance (`delete_on_termination`).

use std::collections::BTreeMap;

use db::{Bool, Migration};
use sqlx::Row;

use super::{Store, instances::now_us};
use crate::error::Error;

pub const MIGRATION: Migration = Migration {
    version: 11,
    name: "block device mappings",
    sql: "
CREATE TABLE compute_block_device_mapping (
    id {id} PRIMARY KEY,
    instance_uuid {id} NOT NULL,
    volume_id {id},
    attachment_id {id},
    device_name {name},
    boot_index {int},
    source_type {name} NOT NULL,
    destination_type {name} NOT NULL,
    image_id {id},
    volume_size {int},
    delete_on_termination {bool} NOT NULL,
    tag {name},
    connection_info {text},
    created_at {int} NOT NULL
);
CREATE INDEX compute_bdm_instance ON compute_block_device_mapping (instance_uuid);
CREATE UNIQUE INDEX compute_bdm_volume ON compute_block_device_mapping (instance_uuid, volume_id)",
};

/// One block device mapping of an instance.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bdm {
    pub id: String,
    pub instance_uuid: String,
    /// The volume; `None` until the one made from an image exists.
    pub volume_id: Option<String>,
    /// The block storage service's attachment, once made.
    pub attachment_id: Option<String>,
    /// The guest's device (`/dev/vdb`).
    pub device_name: Option<String>,
    /// `0` for the root disk; `None` for a disk not booted from.
    pub boot_index: Option<i64>,
    /// `volume`, `image`, `snapshot` or `blank`.
    pub source_type: String,
    pub destination_type: String,
    pub image_id: Option<String>,
    /// GiB of a volume compute creates.
    pub volume_size: Option<i64>,
    pub delete_on_termination: bool,
    pub tag: Option<String>,
    /// How the instance's host reaches the volume, as the block storage service said at the last connect.
    pub connection_info: Option<serde_json::Value>,
    pub created_at: i64,
}

const COLUMNS: &str = "id, instance_uuid, volume_id, attachment_id, device_name, boot_index, source_type, destination_type, \
    image_id, volume_size, delete_on_termination, tag, connection_info, created_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<Bdm, Error> {
    Ok(Bdm {
        id: r.try_get("id")?,
        instance_uuid: r.try_get("instance_uuid")?,
        volume_id: r.try_get("volume_id")?,
        attachment_id: r.try_get("attachment_id")?,
        device_name: r.try_get("device_name")?,
        boot_index: r.try_get("boot_index")?,
        source_type: r.try_get("source_type")?,
        destination_type: r.try_get("destination_type")?,
        image_id: r.try_get("image_id")?,
        volume_size: r.try_get("volume_size")?,
        delete_on_termination: r.try_get::<Bool, _>("delete_on_termination")?.0,
        tag: r.try_get("tag")?,
        connection_info: r.try_get::<Option<String>, _>("connection_info")?.and_then(|t| serde_json::from_str(&t).ok()),
        created_at: r.try_get("created_at")?,
    })
}

/// Root first, then in the order they were made.
fn sort(list: &mut [Bdm]) {
    list.sort_by_key(|b| (b.boot_index != Some(0), b.created_at, b.id.clone()));
}

impl Store {
    /// Records a mapping; `false` when the instance already has this volume.
    pub async fn bdm_insert(&self, b: &Bdm) -> Result<bool, Error> {
        let created = if b.created_at == 0 { now_us() } else { b.created_at };
        let r = self
            .db
            .query(db::sqlx::AssertSqlSafe(format!(
                "INSERT INTO compute_block_device_mapping ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            )))
            .bind(&b.id)
            .bind(&b.instance_uuid)
            .bind(&b.volume_id)
            .bind(&b.attachment_id)
            .bind(&b.device_name)
            .bind(b.boot_index)
            .bind(&b.source_type)
            .bind(&b.destination_type)
            .bind(&b.image_id)
            .bind(b.volume_size)
            .bind(b.delete_on_termination)
            .bind(&b.tag)
            .bind(b.connection_info.as_ref().map(|c| c.to_string()))
            .bind(created)
            .execute(self.db.pool())
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// An instance's mappings, root first.
    pub async fn bdm_list(&self, uuid: &str) -> Result<Vec<Bdm>, Error> {
        Ok(self.bdms_of(&[uuid]).await?.remove(uuid).unwrap_or_default())
    }

    /// The mappings of many instances at once.
    pub async fn bdms_of(&self, uuids: &[&str]) -> Result<BTreeMap<String, Vec<Bdm>>, Error> {
        let select = format!("SELECT {COLUMNS} FROM compute_block_device_mapping");
        let mut m = self.key_values(uuids, &select, from_row).await?;
        for list in m.values_mut() {
            sort(list);
        }
        Ok(m)
    }

    /// The mappings of a volume (more than one only for a multi-attach volume), oldest first.
    pub async fn bdms_of_volume(&self, volume_id: &str) -> Result<Vec<Bdm>, Error> {
        let rows = self
            .db
            .query(db::sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM compute_block_device_mapping WHERE volume_id = ?")))
            .bind(volume_id)
            .fetch_all(self.db.pool())
            .await?;
        let mut list = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
        list.sort_by_key(|b| (b.created_at, b.id.clone()));
        Ok(list)
    }

    /// Stores a mapping's volume, attachment, device and connection.
    pub async fn bdm_update(&self, b: &Bdm) -> Result<(), Error> {
        self.db
            .query(
                "UPDATE compute_block_device_mapping SET volume_id = ?, attachment_id = ?, device_name = ?, connection_info = ? \
                 WHERE id = ?",
            )
            .bind(&b.volume_id)
            .bind(&b.attachment_id)
            .bind(&b.device_name)
            .bind(b.connection_info.as_ref().map(|c| c.to_string()))
            .bind(&b.id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Changes whether a mapping's volume goes with the instance.
    pub async fn bdm_set_delete_on_termination(&self, id: &str, delete: bool) -> Result<(), Error> {
        self.db
            .query("UPDATE compute_block_device_mapping SET delete_on_termination = ? WHERE id = ?")
            .bind(delete)
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    pub async fn bdm_delete(&self, id: &str) -> Result<(), Error> {
        self.db.query("DELETE FROM compute_block_device_mapping WHERE id = ?").bind(id).execute(self.db.pool()).await?;
        Ok(())
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.is_unique_violation() || {
                let m = d.message().to_ascii_lowercase();
                m.contains("unique") || m.contains("duplicate")
            }
        }
        _ => false,
    }
}
