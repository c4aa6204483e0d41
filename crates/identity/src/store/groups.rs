//! Groups and group membership (`identity_group`, `identity_user_group`).

use db::Migration;
use sqlx::{Row, any::AnyRow};

use super::Store;
use crate::error::Error;

pub(super) const MIGRATION: Migration = Migration {
    version: 2,
    name: "groups and memberships",
    sql: "
CREATE TABLE identity_group (
    id {id} PRIMARY KEY,
    name {name} NOT NULL,
    domain_id {id} NOT NULL,
    description {text},
    UNIQUE (domain_id, name)
);
CREATE TABLE identity_user_group (
    user_id {id} NOT NULL,
    group_id {id} NOT NULL,
    PRIMARY KEY (user_id, group_id)
)",
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRow {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub description: Option<String>,
}

fn group(row: &AnyRow) -> Result<GroupRow, Error> {
    Ok(GroupRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        domain_id: row.try_get("domain_id")?,
        description: row.try_get("description")?,
    })
}

impl Store {
    pub async fn group_get(&self, id: &str) -> Result<Option<GroupRow>, Error> {
        self.db
            .query("SELECT id, name, domain_id, description FROM identity_group WHERE id = ?")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .as_ref()
            .map(group)
            .transpose()
    }

    pub async fn group_create(&self, g: &GroupRow) -> Result<(), Error> {
        self.db
            .query("INSERT INTO identity_group (id, name, domain_id, description) VALUES (?, ?, ?, ?)")
            .bind(&g.id)
            .bind(&g.name)
            .bind(&g.domain_id)
            .bind(&g.description)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Adds a user to a group; adding twice is not an error.
    pub async fn group_add_user(&self, group_id: &str, user_id: &str) -> Result<(), Error> {
        let r = self
            .db
            .query("INSERT INTO identity_user_group (user_id, group_id) VALUES (?, ?)")
            .bind(user_id)
            .bind(group_id)
            .execute(self.db.pool())
            .await;
        db::insert_unless_duplicate(r)?;
        Ok(())
    }

    /// Ids of the groups a user belongs to (what effective role computation needs).
    pub async fn group_ids_for_user(&self, user_id: &str) -> Result<Vec<String>, Error> {
        let rows = self
            .db
            .query("SELECT group_id FROM identity_user_group WHERE user_id = ? ORDER BY group_id")
            .bind(user_id)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(|r| Ok(r.try_get("group_id")?)).collect()
    }
}

impl Store {
    pub async fn group_get_by_name(&self, domain_id: &str, name: &str) -> Result<Option<GroupRow>, Error> {
        self.db
            .query("SELECT id, name, domain_id, description FROM identity_group WHERE domain_id = ? AND name = ?")
            .bind(domain_id)
            .bind(name)
            .fetch_optional(self.db.pool())
            .await?
            .as_ref()
            .map(group)
            .transpose()
    }

    /// Groups, optionally of one domain and/or with one name, ordered by name.
    pub async fn group_list(&self, domain_id: Option<&str>, name: Option<&str>) -> Result<Vec<GroupRow>, Error> {
        let rows = self
            .db
            .query(
                "SELECT id, name, domain_id, description FROM identity_group \
                 WHERE (? IS NULL OR domain_id = ?) AND (? IS NULL OR name = ?) ORDER BY name, id",
            )
            .bind(domain_id)
            .bind(domain_id)
            .bind(name)
            .bind(name)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(group).collect()
    }

    /// Writes name and description.
    pub async fn group_update(&self, g: &GroupRow) -> Result<(), Error> {
        self.db
            .query("UPDATE identity_group SET name = ?, description = ? WHERE id = ?")
            .bind(&g.name)
            .bind(&g.description)
            .bind(&g.id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Deletes a group with its memberships and role assignments. False if there was none.
    pub async fn group_delete(&self, id: &str) -> Result<bool, Error> {
        let mut tx = self.db.begin().await?;
        let n = self.db.query("DELETE FROM identity_group WHERE id = ?").bind(id).execute(&mut *tx).await?;
        if n.rows_affected() == 0 {
            return Ok(false);
        }
        self.db.query("DELETE FROM identity_user_group WHERE group_id = ?").bind(id).execute(&mut *tx).await?;
        self.db.query("DELETE FROM identity_assignment WHERE actor_id = ?").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Removes a user from a group. False if they were not a member.
    pub async fn group_remove_user(&self, group_id: &str, user_id: &str) -> Result<bool, Error> {
        let n = self
            .db
            .query("DELETE FROM identity_user_group WHERE group_id = ? AND user_id = ?")
            .bind(group_id)
            .bind(user_id)
            .execute(self.db.pool())
            .await?;
        Ok(n.rows_affected() > 0)
    }

    pub async fn group_has_user(&self, group_id: &str, user_id: &str) -> Result<bool, Error> {
        Ok(self
            .db
            .query("SELECT user_id FROM identity_user_group WHERE group_id = ? AND user_id = ?")
            .bind(group_id)
            .bind(user_id)
            .fetch_optional(self.db.pool())
            .await?
            .is_some())
    }

    /// The groups a user belongs to, ordered by name.
    pub async fn group_list_for_user(&self, user_id: &str) -> Result<Vec<GroupRow>, Error> {
        let rows = self
            .db
            .query(
                "SELECT g.id, g.name, g.domain_id, g.description FROM identity_group g \
                 JOIN identity_user_group m ON m.group_id = g.id WHERE m.user_id = ? ORDER BY g.name, g.id",
            )
            .bind(user_id)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(group).collect()
    }
}
