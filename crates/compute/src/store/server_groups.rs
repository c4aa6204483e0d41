//! Server groups (upstream's instance groups): a policy (affinity, anti-affinity and their soft variants) and the
//! instances created into the group. Times are unix microseconds.

use db::Migration;
use sqlx::Row;

use super::Store;
use super::instances::now_us;
use crate::error::Error;

pub const MIGRATION: Migration = Migration {
    version: 7,
    name: "server groups",
    sql: "
CREATE TABLE compute_server_group (
    id {serial},
    uuid {id} NOT NULL,
    name {name} NOT NULL,
    project_id {id} NOT NULL,
    user_id {id} NOT NULL,
    policy {id} NOT NULL,
    created_at {int} NOT NULL
);
CREATE UNIQUE INDEX compute_server_group_uuid ON compute_server_group (uuid);
CREATE INDEX compute_server_group_project ON compute_server_group (project_id);
CREATE TABLE compute_server_group_member (
    group_uuid {id} NOT NULL,
    instance_uuid {id} NOT NULL,
    PRIMARY KEY (group_uuid, instance_uuid)
);
CREATE INDEX compute_server_group_member_instance ON compute_server_group_member (instance_uuid)",
};

/// One server group; `members` are every instance ever created into it (deleted ones included: views drop them).
#[derive(Clone, Debug, PartialEq)]
pub struct ServerGroupRow {
    pub uuid: String,
    pub name: String,
    pub project_id: String,
    pub user_id: String,
    pub policy: String,
    /// Rules of the policy (2.64): `max_server_per_host` of an anti-affinity group.
    pub max_server_per_host: Option<i64>,
    pub members: Vec<String>,
    pub created_at: i64,
}

/// Policy rules of server groups (microversion 2.64).
pub const RULES_MIGRATION: Migration = Migration {
    version: 8,
    name: "server group rules",
    sql: "ALTER TABLE compute_server_group ADD COLUMN max_server_per_host {int}",
};

/// A live member of a group, with the host it runs on (if scheduled).
#[derive(Clone, Debug, PartialEq)]
pub struct GroupMember {
    pub instance_uuid: String,
    pub host: Option<String>,
    pub user_id: String,
}

impl Store {
    pub async fn server_group_insert(&self, g: &ServerGroupRow) -> Result<(), Error> {
        self.db
            .query(
                "INSERT INTO compute_server_group (uuid, name, project_id, user_id, policy, max_server_per_host, \
                 created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&g.uuid)
            .bind(&g.name)
            .bind(&g.project_id)
            .bind(&g.user_id)
            .bind(&g.policy)
            .bind(g.max_server_per_host)
            .bind(if g.created_at == 0 { now_us() } else { g.created_at })
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    pub async fn server_group_get(&self, uuid: &str) -> Result<Option<ServerGroupRow>, Error> {
        Ok(self.server_groups_where(Some(uuid), None).await?.pop())
    }

    /// The groups of one project (`Some`) or of every project, oldest first.
    pub async fn server_group_list(&self, project_id: Option<&str>) -> Result<Vec<ServerGroupRow>, Error> {
        self.server_groups_where(None, project_id).await
    }

    async fn server_groups_where(
        &self,
        uuid: Option<&str>,
        project_id: Option<&str>,
    ) -> Result<Vec<ServerGroupRow>, Error> {
        let base =
            "SELECT uuid, name, project_id, user_id, policy, max_server_per_host, created_at FROM compute_server_group";
        let rows = match (uuid, project_id) {
            (Some(u), _) => {
                self.db.query(db::sqlx::AssertSqlSafe(format!("{base} WHERE uuid = ?"))).bind(u).fetch_all(self.db.pool()).await?
            }
            (None, Some(p)) => {
                self.db
                    .query(db::sqlx::AssertSqlSafe(format!("{base} WHERE project_id = ? ORDER BY id")))
                    .bind(p)
                    .fetch_all(self.db.pool())
                    .await?
            }
            (None, None) => {
                self.db.query(db::sqlx::AssertSqlSafe(format!("{base} ORDER BY id"))).fetch_all(self.db.pool()).await?
            }
        };
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let uuid: String = r.try_get("uuid")?;
            let members: Vec<String> = self
                .db
                .query_scalar("SELECT instance_uuid FROM compute_server_group_member WHERE group_uuid = ? ORDER BY instance_uuid")
                .bind(&uuid)
                .fetch_all(self.db.pool())
                .await?;
            out.push(ServerGroupRow {
                uuid,
                name: r.try_get("name")?,
                project_id: r.try_get("project_id")?,
                user_id: r.try_get("user_id")?,
                policy: r.try_get("policy")?,
                max_server_per_host: r.try_get("max_server_per_host")?,
                members,
                created_at: r.try_get("created_at")?,
            });
        }
        Ok(out)
    }

    /// Deletes a group and its member list; `Ok(false)` if there was none.
    pub async fn server_group_delete(&self, uuid: &str) -> Result<bool, Error> {
        let mut tx = self.db.begin().await?;
        self.db.query("DELETE FROM compute_server_group_member WHERE group_uuid = ?").bind(uuid).execute(&mut *tx).await?;
        let n = self.db.query("DELETE FROM compute_server_group WHERE uuid = ?").bind(uuid).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(n.rows_affected() > 0)
    }

    /// How many groups a project (and, when given, one of its users) has.
    pub async fn server_group_count(&self, project_id: &str, user_id: Option<&str>) -> Result<i64, Error> {
        let n: i64 = match user_id {
            Some(u) => {
                self.db
                    .query_scalar("SELECT COUNT(*) FROM compute_server_group WHERE project_id = ? AND user_id = ?")
                    .bind(project_id)
                    .bind(u)
                    .fetch_one(self.db.pool())
                    .await?
            }
            None => {
                self.db
                    .query_scalar("SELECT COUNT(*) FROM compute_server_group WHERE project_id = ?")
                    .bind(project_id)
                    .fetch_one(self.db.pool())
                    .await?
            }
        };
        Ok(n)
    }

    /// Records instances as members of a group.
    pub async fn server_group_add_members(&self, group_uuid: &str, instance_uuids: &[String]) -> Result<(), Error> {
        let mut tx = self.db.begin().await?;
        for i in instance_uuids {
            self.db
                .query("INSERT INTO compute_server_group_member (group_uuid, instance_uuid) VALUES (?, ?)")
                .bind(group_uuid)
                .bind(i)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The live (not deleted) members of a group with their hosts, by instance uuid.
    pub async fn server_group_live_members(&self, group_uuid: &str) -> Result<Vec<GroupMember>, Error> {
        let rows = self
            .db
            .query(
                "SELECT i.uuid, i.host, i.user_id FROM compute_server_group_member m JOIN compute_instance i \
                 ON i.uuid = m.instance_uuid WHERE m.group_uuid = ? AND i.deleted = ? ORDER BY i.uuid",
            )
            .bind(group_uuid)
            .bind(false)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| Ok(GroupMember { instance_uuid: r.try_get("uuid")?, host: r.try_get("host")?, user_id: r.try_get("user_id")? }))
            .collect()
    }

    /// The group an instance was created into, if any.
    pub async fn server_group_of_instance(&self, instance_uuid: &str) -> Result<Option<ServerGroupRow>, Error> {
        let group: Option<String> = self
            .db
            .query_scalar("SELECT group_uuid FROM compute_server_group_member WHERE instance_uuid = ?")
            .bind(instance_uuid)
            .fetch_optional(self.db.pool())
            .await?;
        match group {
            Some(g) => self.server_group_get(&g).await,
            None => Ok(None),
        }
    }
}
