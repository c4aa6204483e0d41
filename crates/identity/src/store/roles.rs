//! Roles, implied roles and role assignments (`identity_role`, `identity_implied_role`, `identity_assignment`).
//!
//! Migration 5 adds the role's `options` and `extra` attributes (JSON text) and the indexes effective-role
//! computation needs.

use std::collections::{HashMap, HashSet};

use db::{Bool, Migration};
use sqlx::{Row, any::AnyRow};

use super::{GLOBAL_ROLE_DOMAIN, Store, kind};
use crate::error::Error;

pub(super) const MIGRATION: Migration = Migration {
    version: 5,
    name: "role options and assignment indexes",
    sql: "
ALTER TABLE identity_role ADD COLUMN options {text};
ALTER TABLE identity_role ADD COLUMN extra {text};
CREATE INDEX identity_assignment_actor ON identity_assignment (actor_id);
CREATE INDEX identity_assignment_target ON identity_assignment (target_id);
CREATE INDEX identity_assignment_role ON identity_assignment (role_id)",
};

/// A role with every attribute the API shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleRecord {
    pub id: String,
    pub name: String,
    /// `None` for a global role.
    pub domain_id: Option<String>,
    pub description: Option<String>,
    /// Resource options as a JSON object text (`{"immutable": true}`), `None` when unset.
    pub options: Option<String>,
    /// Extra attributes as a JSON object text, `None` when there are none.
    pub extra: Option<String>,
}

/// One row of `identity_assignment`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssignmentRow {
    /// One of the [`kind`] constants.
    pub kind: String,
    /// User or group id.
    pub actor_id: String,
    /// Project id, domain id, or [`super::SYSTEM_ALL`].
    pub target_id: String,
    pub role_id: String,
    /// Inherited to the target's projects (domain) or subtree (project), not effective on the target itself.
    pub inherited: bool,
}

/// A project's place in the hierarchy (what inheritance needs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectNode {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub parent_id: Option<String>,
}

fn role_record(row: &AnyRow) -> Result<RoleRecord, Error> {
    let domain_id: String = row.try_get("domain_id")?;
    Ok(RoleRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        domain_id: (domain_id != GLOBAL_ROLE_DOMAIN).then_some(domain_id),
        description: row.try_get("description")?,
        options: row.try_get("options")?,
        extra: row.try_get("extra")?,
    })
}

fn assignment(row: &AnyRow) -> Result<AssignmentRow, Error> {
    Ok(AssignmentRow {
        kind: row.try_get("kind")?,
        actor_id: row.try_get("actor_id")?,
        target_id: row.try_get("target_id")?,
        role_id: row.try_get("role_id")?,
        inherited: row.try_get::<Bool, _>("inherited")?.into(),
    })
}

macro_rules! role_cols {
    () => {
        "id, name, domain_id, description, options, extra"
    };
}

impl Store {
    // ---- roles

    pub async fn role_get(&self, id: &str) -> Result<Option<RoleRecord>, Error> {
        let sql = concat!("SELECT ", role_cols!(), " FROM identity_role WHERE id = ?");
        self.db.query(sql).bind(id).fetch_optional(self.db.pool()).await?.as_ref().map(role_record).transpose()
    }

    /// Roles of one domain (`Some`) or the global ones (`None`), optionally of one name, ordered by name.
    pub async fn role_list_in(&self, domain_id: Option<&str>, name: Option<&str>) -> Result<Vec<RoleRecord>, Error> {
        let domain = domain_id.unwrap_or(GLOBAL_ROLE_DOMAIN);
        let rows = match name {
            Some(name) => {
                let sql = concat!("SELECT ", role_cols!(), " FROM identity_role WHERE domain_id = ? AND name = ?");
                self.db.query(sql).bind(domain).bind(name).fetch_all(self.db.pool()).await?
            }
            None => {
                let sql = concat!("SELECT ", role_cols!(), " FROM identity_role WHERE domain_id = ? ORDER BY name");
                self.db.query(sql).bind(domain).fetch_all(self.db.pool()).await?
            }
        };
        rows.iter().map(role_record).collect()
    }

    /// Every role, global and domain-specific.
    pub async fn role_list_all(&self) -> Result<Vec<RoleRecord>, Error> {
        let sql = concat!("SELECT ", role_cols!(), " FROM identity_role ORDER BY name");
        let rows = self.db.query(sql).fetch_all(self.db.pool()).await?;
        rows.iter().map(role_record).collect()
    }

    /// Inserts a role; a duplicate name in the same domain is a unique violation ([`Error::Db`]).
    pub async fn role_insert(&self, r: &RoleRecord) -> Result<(), Error> {
        self.db
            .query("INSERT INTO identity_role (id, name, domain_id, description, options, extra) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(&r.id)
            .bind(&r.name)
            .bind(r.domain_id.as_deref().unwrap_or(GLOBAL_ROLE_DOMAIN))
            .bind(&r.description)
            .bind(&r.options)
            .bind(&r.extra)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Rewrites a role's name, description, options and extra attributes (its domain never changes).
    pub async fn role_update(&self, r: &RoleRecord) -> Result<(), Error> {
        self.db
            .query("UPDATE identity_role SET name = ?, description = ?, options = ?, extra = ? WHERE id = ?")
            .bind(&r.name)
            .bind(&r.description)
            .bind(&r.options)
            .bind(&r.extra)
            .bind(&r.id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Deletes a role with its assignments and the implication rules it takes part in, in one transaction.
    pub async fn role_delete(&self, id: &str) -> Result<bool, Error> {
        let mut tx = self.db.begin().await?;
        self.db.query("DELETE FROM identity_assignment WHERE role_id = ?").bind(id).execute(&mut *tx).await?;
        self.db
            .query("DELETE FROM identity_implied_role WHERE prior_role_id = ? OR implied_role_id = ?")
            .bind(id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = self.db.query("DELETE FROM identity_role WHERE id = ?").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- implied roles

    pub async fn implied_role_exists(&self, prior: &str, implied: &str) -> Result<bool, Error> {
        let row = self
            .db
            .query("SELECT prior_role_id FROM identity_implied_role WHERE prior_role_id = ? AND implied_role_id = ?")
            .bind(prior)
            .bind(implied)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.is_some())
    }

    pub async fn implied_role_delete(&self, prior: &str, implied: &str) -> Result<bool, Error> {
        let done = self
            .db
            .query("DELETE FROM identity_implied_role WHERE prior_role_id = ? AND implied_role_id = ?")
            .bind(prior)
            .bind(implied)
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- assignments

    /// Grants a role (with the inherited flag); granting one that exists already is not an error.
    pub async fn assignment_put(&self, a: &AssignmentRow) -> Result<(), Error> {
        let result = self
            .db
            .query(
                "INSERT INTO identity_assignment (kind, actor_id, target_id, role_id, inherited) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&a.kind)
            .bind(&a.actor_id)
            .bind(&a.target_id)
            .bind(&a.role_id)
            .bind(Bool(a.inherited))
            .execute(self.db.pool())
            .await;
        db::insert_unless_duplicate(result)?;
        Ok(())
    }

    pub async fn assignment_exists(&self, a: &AssignmentRow) -> Result<bool, Error> {
        let row = self
            .db
            .query(
                "SELECT role_id FROM identity_assignment WHERE kind = ? AND actor_id = ? AND target_id = ? \
                 AND role_id = ? AND inherited = ?",
            )
            .bind(&a.kind)
            .bind(&a.actor_id)
            .bind(&a.target_id)
            .bind(&a.role_id)
            .bind(Bool(a.inherited))
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.is_some())
    }

    /// Removes one grant; `false` if there was none.
    pub async fn assignment_delete(&self, a: &AssignmentRow) -> Result<bool, Error> {
        let done = self
            .db
            .query(
                "DELETE FROM identity_assignment WHERE kind = ? AND actor_id = ? AND target_id = ? \
                 AND role_id = ? AND inherited = ?",
            )
            .bind(&a.kind)
            .bind(&a.actor_id)
            .bind(&a.target_id)
            .bind(&a.role_id)
            .bind(Bool(a.inherited))
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The grants of one actor on one target with the given inherited flag (what `GET …/roles` lists).
    pub async fn assignment_list_for(
        &self,
        kind: &str,
        actor: &str,
        target: &str,
        inherited: bool,
    ) -> Result<Vec<AssignmentRow>, Error> {
        let rows = self
            .db
            .query(
                "SELECT kind, actor_id, target_id, role_id, inherited FROM identity_assignment \
                 WHERE kind = ? AND actor_id = ? AND target_id = ? AND inherited = ?",
            )
            .bind(kind)
            .bind(actor)
            .bind(target)
            .bind(Bool(inherited))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(assignment).collect()
    }

    /// Every assignment of a role (what deleting it affects).
    pub async fn assignment_list_for_role(&self, role_id: &str) -> Result<Vec<AssignmentRow>, Error> {
        let rows = self
            .db
            .query("SELECT kind, actor_id, target_id, role_id, inherited FROM identity_assignment WHERE role_id = ?")
            .bind(role_id)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(assignment).collect()
    }

    /// Every assignment, optionally only those of one actor (user or group id).
    pub async fn assignment_list_all(&self, actor: Option<&str>) -> Result<Vec<AssignmentRow>, Error> {
        let rows = match actor {
            Some(actor) => {
                self.db
                    .query(
                        "SELECT kind, actor_id, target_id, role_id, inherited FROM identity_assignment \
                         WHERE actor_id = ?",
                    )
                    .bind(actor)
                    .fetch_all(self.db.pool())
                    .await?
            }
            None => {
                self.db
                    .query("SELECT kind, actor_id, target_id, role_id, inherited FROM identity_assignment")
                    .fetch_all(self.db.pool())
                    .await?
            }
        };
        rows.iter().map(assignment).collect()
    }

    /// Role ids a user holds on a project in one round trip: direct and group grants on the project, grants
    /// inherited from its ancestors and its domain. Implications are not expanded here.
    pub async fn assignment_role_ids_on_project(&self, user_id: &str, project_id: &str) -> Result<Vec<String>, Error> {
        // `chain` is the project (depth 0) and its ancestors; `depth < 64` stops a corrupt parent cycle.
        let sql = "WITH RECURSIVE chain (id, parent_id, domain_id, depth) AS ( \
                 SELECT id, parent_id, domain_id, 0 FROM identity_project WHERE id = ? \
                 UNION ALL \
                 SELECT p.id, p.parent_id, p.domain_id, c.depth + 1 FROM identity_project p \
                 JOIN chain c ON p.id = c.parent_id WHERE c.depth < 64 ) \
             SELECT DISTINCT a.role_id FROM identity_assignment a WHERE \
             ((a.kind = ? AND a.actor_id = ?) OR \
              (a.kind = ? AND a.actor_id IN (SELECT group_id FROM identity_user_group WHERE user_id = ?))) \
             AND ((a.inherited = ? AND a.target_id IN (SELECT id FROM chain WHERE depth = 0)) \
               OR (a.inherited = ? AND a.target_id IN (SELECT id FROM chain WHERE depth > 0))) \
             UNION \
             SELECT a.role_id FROM identity_assignment a WHERE \
             ((a.kind = ? AND a.actor_id = ?) OR \
              (a.kind = ? AND a.actor_id IN (SELECT group_id FROM identity_user_group WHERE user_id = ?))) \
             AND a.inherited = ? AND a.target_id IN (SELECT domain_id FROM identity_project WHERE id = ?)";
        let rows = self
            .db
            .query(sql)
            .bind(project_id)
            .bind(kind::USER_PROJECT)
            .bind(user_id)
            .bind(kind::GROUP_PROJECT)
            .bind(user_id)
            .bind(Bool(false))
            .bind(Bool(true))
            .bind(kind::USER_DOMAIN)
            .bind(user_id)
            .bind(kind::GROUP_DOMAIN)
            .bind(user_id)
            .bind(Bool(true))
            .bind(project_id)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(|r| Ok(r.try_get("role_id")?)).collect()
    }

    /// Role ids a user holds on a domain or the system (`user_kind`/`group_kind` name which), directly or
    /// through a group, not inherited. One round trip.
    pub async fn assignment_role_ids_on(
        &self,
        user_id: &str,
        user_kind: &str,
        group_kind: &str,
        target: &str,
    ) -> Result<Vec<String>, Error> {
        let rows = self
            .db
            .query(
                "SELECT DISTINCT role_id FROM identity_assignment WHERE target_id = ? AND inherited = ? AND \
                 ((kind = ? AND actor_id = ?) OR \
                  (kind = ? AND actor_id IN (SELECT group_id FROM identity_user_group WHERE user_id = ?)))",
            )
            .bind(target)
            .bind(Bool(false))
            .bind(user_kind)
            .bind(user_id)
            .bind(group_kind)
            .bind(user_id)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(|r| Ok(r.try_get("role_id")?)).collect()
    }

    /// Assignments that reach a user: their own and their groups' (every kind and target).
    async fn assignment_list_reaching(&self, user_id: &str) -> Result<Vec<AssignmentRow>, Error> {
        let rows = self
            .db
            .query(
                "SELECT kind, actor_id, target_id, role_id, inherited FROM identity_assignment WHERE \
                 actor_id = ? OR actor_id IN (SELECT group_id FROM identity_user_group WHERE user_id = ?)",
            )
            .bind(user_id)
            .bind(user_id)
            .fetch_all(self.db.pool())
            .await?;
        let all: Vec<AssignmentRow> = rows.iter().map(assignment).collect::<Result<_, _>>()?;
        Ok(all
            .into_iter()
            .filter(|a| {
                let user_kind = [kind::USER_PROJECT, kind::USER_DOMAIN, kind::USER_SYSTEM].contains(&a.kind.as_str());
                (a.actor_id == user_id) == user_kind
            })
            .collect())
    }

    /// Ids of the projects a user has a role on, directly, through a group, or inherited from a parent project
    /// or the project's domain (what `GET /v3/auth/projects` lists).
    pub async fn assignment_project_ids_for_user(&self, user_id: &str) -> Result<HashSet<String>, Error> {
        let reaching = self.assignment_list_reaching(user_id).await?;
        let mut ids = HashSet::new();
        let mut inherited_from_projects = HashSet::new();
        let mut inherited_from_domains = HashSet::new();
        for a in &reaching {
            match (a.kind.as_str(), a.inherited) {
                (kind::USER_PROJECT | kind::GROUP_PROJECT, false) => {
                    ids.insert(a.target_id.clone());
                }
                (kind::USER_PROJECT | kind::GROUP_PROJECT, true) => {
                    inherited_from_projects.insert(a.target_id.clone());
                }
                (kind::USER_DOMAIN | kind::GROUP_DOMAIN, true) => {
                    inherited_from_domains.insert(a.target_id.clone());
                }
                _ => {}
            }
        }
        if inherited_from_projects.is_empty() && inherited_from_domains.is_empty() {
            return Ok(ids);
        }
        let nodes = self.project_nodes().await?;
        let parents: HashMap<&str, Option<&str>> =
            nodes.iter().map(|n| (n.id.as_str(), n.parent_id.as_deref())).collect();
        for n in &nodes {
            if inherited_from_domains.contains(&n.domain_id) {
                ids.insert(n.id.clone());
                continue;
            }
            // Walk up the ancestors (bounded, in case of a corrupt cycle).
            let mut cur = n.parent_id.as_deref();
            for _ in 0..64 {
                let Some(p) = cur else { break };
                if inherited_from_projects.contains(p) {
                    ids.insert(n.id.clone());
                    break;
                }
                cur = parents.get(p).copied().flatten();
            }
        }
        Ok(ids)
    }

    /// Ids of the domains a user has a role on, directly or through a group (not inherited).
    pub async fn assignment_domain_ids_for_user(&self, user_id: &str) -> Result<HashSet<String>, Error> {
        Ok(self
            .assignment_list_reaching(user_id)
            .await?
            .into_iter()
            .filter(|a| !a.inherited && (a.kind == kind::USER_DOMAIN || a.kind == kind::GROUP_DOMAIN))
            .map(|a| a.target_id)
            .collect())
    }

    // ---- what assignment listing needs

    /// Every (user id, group id) membership, optionally of one user only.
    pub async fn membership_list(&self, user_id: Option<&str>) -> Result<Vec<(String, String)>, Error> {
        let rows = match user_id {
            Some(u) => {
                self.db
                    .query("SELECT user_id, group_id FROM identity_user_group WHERE user_id = ?")
                    .bind(u)
                    .fetch_all(self.db.pool())
                    .await?
            }
            None => self.db.query("SELECT user_id, group_id FROM identity_user_group").fetch_all(self.db.pool()).await?,
        };
        rows.iter().map(|r| Ok((r.try_get("user_id")?, r.try_get("group_id")?))).collect()
    }

    /// Ids of a group's members (whose tokens an unassignment from the group revokes).
    pub async fn membership_user_ids(&self, group_id: &str) -> Result<Vec<String>, Error> {
        let rows = self
            .db
            .query("SELECT user_id FROM identity_user_group WHERE group_id = ?")
            .bind(group_id)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(|r| Ok(r.try_get("user_id")?)).collect()
    }

    /// Every project that is not a domain, with its parent and domain.
    pub async fn project_nodes(&self) -> Result<Vec<ProjectNode>, Error> {
        let rows = self
            .db
            .query("SELECT id, name, domain_id, parent_id FROM identity_project WHERE is_domain = ?")
            .bind(Bool(false))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ProjectNode {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    domain_id: r.try_get("domain_id")?,
                    parent_id: r.try_get("parent_id")?,
                })
            })
            .collect()
    }

    /// Every (id, name) of users, for `include_names`.
    pub async fn user_names(&self) -> Result<Vec<(String, String, String)>, Error> {
        let rows = self.db.query("SELECT id, name, domain_id FROM identity_user").fetch_all(self.db.pool()).await?;
        rows.iter().map(|r| Ok((r.try_get("id")?, r.try_get("name")?, r.try_get("domain_id")?))).collect()
    }

    /// Every (id, name, domain id) of groups, for `include_names`.
    pub async fn group_names(&self) -> Result<Vec<(String, String, String)>, Error> {
        let rows = self.db.query("SELECT id, name, domain_id FROM identity_group").fetch_all(self.db.pool()).await?;
        rows.iter().map(|r| Ok((r.try_get("id")?, r.try_get("name")?, r.try_get("domain_id")?))).collect()
    }

    /// Every (id, name) of domains, for `include_names`.
    pub async fn domain_names(&self) -> Result<Vec<(String, String)>, Error> {
        let rows = self.db.query("SELECT id, name FROM identity_domain").fetch_all(self.db.pool()).await?;
        rows.iter().map(|r| Ok((r.try_get("id")?, r.try_get("name")?))).collect()
    }
}
