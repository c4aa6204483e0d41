//! Domains and projects beyond the v1 basics: listing with filters, updates, deletes (a domain's delete cascades
//! to everything it owns), extra attributes (`extra`, a JSON object as text) and project tags
//! (`identity_project_tag`), and domain-specific configuration (`identity_domain_config`, one JSON document per
//! domain).

use chrono::Utc;
use db::{Bool, Migration, sqlx::AssertSqlSafe};
use sqlx::{Row, any::AnyRow};

use super::{DomainRow, ProjectRow, Store, UserFilter, domain, project};
use crate::error::Error;

pub(super) const MIGRATION: Migration = Migration {
    version: 3,
    name: "project tags, domain and project extra attributes",
    sql: "
ALTER TABLE identity_domain ADD COLUMN extra {text};
ALTER TABLE identity_project ADD COLUMN extra {text};
CREATE TABLE identity_project_tag (
    project_id {id} NOT NULL,
    name {name} NOT NULL,
    PRIMARY KEY (project_id, name)
);
CREATE TABLE identity_domain_config (
    domain_id {id} PRIMARY KEY,
    config {text} NOT NULL
)",
};

/// A domain with its extra attributes (a JSON object as text, absent when none were ever set).
#[derive(Clone, Debug)]
pub struct DomainRecord {
    pub row: DomainRow,
    pub extra: Option<String>,
}

/// A project with its extra attributes and tags.
#[derive(Clone, Debug)]
pub struct ProjectRecord {
    pub row: ProjectRow,
    pub extra: Option<String>,
    pub tags: Vec<String>,
}

/// Filters of `GET /v3/projects` that the database applies (tags are matched on the loaded records).
#[derive(Clone, Debug, Default)]
pub struct ProjectFilter {
    pub name: Option<String>,
    pub domain_id: Option<String>,
    pub parent_id: Option<String>,
    pub enabled: Option<bool>,
}

/// What a domain's delete removed, for revoking tokens.
#[derive(Clone, Debug, Default)]
pub struct DomainDeletion {
    pub project_ids: Vec<String>,
    pub user_ids: Vec<String>,
}

macro_rules! domain_cols {
    () => {
        "id, name, description, enabled, extra"
    };
}
macro_rules! project_cols {
    () => {
        "id, name, domain_id, parent_id, is_domain, description, enabled, extra"
    };
}

fn domain_record(row: &AnyRow) -> Result<DomainRecord, Error> {
    Ok(DomainRecord { row: domain(row)?, extra: row.try_get("extra")? })
}

fn project_record(row: &AnyRow) -> Result<ProjectRecord, Error> {
    Ok(ProjectRecord { row: project(row)?, extra: row.try_get("extra")?, tags: Vec::new() })
}

impl Store {
    // ---- domains

    /// Domains by name and/or enabled state, ordered by name.
    pub async fn domain_list(&self, name: Option<&str>, enabled: Option<bool>) -> Result<Vec<DomainRecord>, Error> {
        let mut sql = String::from(concat!("SELECT ", domain_cols!(), " FROM identity_domain WHERE 1 = 1"));
        if name.is_some() {
            sql.push_str(" AND name = ?");
        }
        if enabled.is_some() {
            sql.push_str(" AND enabled = ?");
        }
        sql.push_str(" ORDER BY name");
        // Only constant fragments above; every value is bound.
        let mut q = self.db.query(AssertSqlSafe(sql));
        if let Some(n) = name {
            q = q.bind(n.to_string());
        }
        if let Some(e) = enabled {
            q = q.bind(Bool(e));
        }
        let rows = q.fetch_all(self.db.pool()).await?;
        rows.iter().map(domain_record).collect()
    }

    pub async fn domain_record_get(&self, id: &str) -> Result<Option<DomainRecord>, Error> {
        let sql = concat!("SELECT ", domain_cols!(), " FROM identity_domain WHERE id = ?");
        self.db.query(sql).bind(id).fetch_optional(self.db.pool()).await?.as_ref().map(domain_record).transpose()
    }

    pub async fn domain_record_create(&self, d: &DomainRecord) -> Result<(), Error> {
        self.db
            .query(
                "INSERT INTO identity_domain (id, name, description, enabled, created_at, extra) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&d.row.id)
            .bind(&d.row.name)
            .bind(&d.row.description)
            .bind(Bool(d.row.enabled))
            .bind(Utc::now().timestamp())
            .bind(&d.extra)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    pub async fn domain_update(&self, d: &DomainRecord) -> Result<(), Error> {
        self.db
            .query("UPDATE identity_domain SET name = ?, description = ?, enabled = ?, extra = ? WHERE id = ?")
            .bind(&d.row.name)
            .bind(&d.row.description)
            .bind(Bool(d.row.enabled))
            .bind(&d.extra)
            .bind(&d.row.id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Deletes a domain and everything it owns: its users and groups (through their own deletes), then in one
    /// transaction its projects (with their tags and role assignments), its domain-specific roles (with their
    /// assignments and implications), and assignments on the domain itself.
    pub async fn domain_delete_cascade(&self, id: &str) -> Result<DomainDeletion, Error> {
        // Users and groups go through their own deletes (memberships, grants, password history, …).
        let user_ids: Vec<String> = self
            .user_detail_list(&UserFilter { domain_id: Some(id.to_string()), ..Default::default() })
            .await?
            .into_iter()
            .map(|u| u.user.id)
            .collect();
        for u in &user_ids {
            self.user_delete(u).await?;
        }
        for g in self.group_list(Some(id), None).await? {
            self.group_delete(&g.id).await?;
        }
        let mut tx = self.db.begin().await?;
        let project_ids: Vec<String> = self
            .db
            .query("SELECT id FROM identity_project WHERE domain_id = ?")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        let statements = [
            // Grants on the domain's projects and on the domain itself, and their tags.
            "DELETE FROM identity_assignment WHERE target_id IN (SELECT id FROM identity_project WHERE domain_id = ?)",
            "DELETE FROM identity_project_tag WHERE project_id IN (SELECT id FROM identity_project WHERE domain_id = ?)",
            "DELETE FROM identity_assignment WHERE target_id = ?",
            "DELETE FROM identity_project_tag WHERE project_id = ?",
            // Domain-specific roles, their grants and implications.
            "DELETE FROM identity_assignment WHERE role_id IN (SELECT id FROM identity_role WHERE domain_id = ?)",
            "DELETE FROM identity_implied_role WHERE prior_role_id IN (SELECT id FROM identity_role WHERE domain_id = ?)",
            "DELETE FROM identity_implied_role WHERE implied_role_id IN (SELECT id FROM identity_role WHERE domain_id = ?)",
            "DELETE FROM identity_role WHERE domain_id = ?",
            "DELETE FROM identity_project WHERE domain_id = ?",
            "DELETE FROM identity_domain_config WHERE domain_id = ?",
            "DELETE FROM identity_domain WHERE id = ?",
        ];
        for sql in statements {
            self.db.query(sql).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(DomainDeletion { project_ids, user_ids })
    }

    // ---- projects

    /// Regular projects (not domains) matching `f`, ordered by name, with their tags.
    pub async fn project_list(&self, f: &ProjectFilter) -> Result<Vec<ProjectRecord>, Error> {
        let mut sql = String::from(concat!("SELECT ", project_cols!(), " FROM identity_project WHERE is_domain = ?"));
        let mut binds: Vec<String> = Vec::new();
        for (value, fragment) in [
            (&f.name, " AND name = ?"),
            (&f.domain_id, " AND domain_id = ?"),
            (&f.parent_id, " AND parent_id = ?"),
        ] {
            if let Some(v) = value {
                sql.push_str(fragment);
                binds.push(v.clone());
            }
        }
        if f.enabled.is_some() {
            sql.push_str(" AND enabled = ?");
        }
        sql.push_str(" ORDER BY name, id");
        // Only constant fragments above; every value is bound.
        let mut q = self.db.query(AssertSqlSafe(sql)).bind(Bool(false));
        for b in binds {
            q = q.bind(b);
        }
        if let Some(e) = f.enabled {
            q = q.bind(Bool(e));
        }
        let rows = q.fetch_all(self.db.pool()).await?;
        let mut records: Vec<ProjectRecord> = rows.iter().map(project_record).collect::<Result<_, _>>()?;
        let mut tags = self.project_tag_pairs().await?;
        for r in &mut records {
            if let Some(t) = tags.remove(&r.row.id) {
                r.tags = t;
            }
        }
        Ok(records)
    }

    /// Every project of a domain (for hierarchy walks), unordered, without tags.
    pub async fn project_list_in_domain(&self, domain_id: &str) -> Result<Vec<ProjectRow>, Error> {
        let sql = concat!("SELECT ", project_cols!(), " FROM identity_project WHERE domain_id = ?");
        let rows = self.db.query(sql).bind(domain_id).fetch_all(self.db.pool()).await?;
        rows.iter().map(project).collect()
    }

    pub async fn project_record_get(&self, id: &str) -> Result<Option<ProjectRecord>, Error> {
        let sql = concat!("SELECT ", project_cols!(), " FROM identity_project WHERE id = ?");
        let Some(row) = self.db.query(sql).bind(id).fetch_optional(self.db.pool()).await? else { return Ok(None) };
        let mut record = project_record(&row)?;
        record.tags = self.project_tags(id).await?;
        Ok(Some(record))
    }

    /// Creates a project with its tags, in one transaction.
    pub async fn project_record_create(&self, p: &ProjectRecord) -> Result<(), Error> {
        let mut tx = self.db.begin().await?;
        self.db
            .query(
                "INSERT INTO identity_project (id, name, domain_id, parent_id, is_domain, description, enabled, \
                 created_at, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&p.row.id)
            .bind(&p.row.name)
            .bind(&p.row.domain_id)
            .bind(&p.row.parent_id)
            .bind(Bool(p.row.is_domain))
            .bind(&p.row.description)
            .bind(Bool(p.row.enabled))
            .bind(Utc::now().timestamp())
            .bind(&p.extra)
            .execute(&mut *tx)
            .await?;
        for t in &p.tags {
            self.db
                .query("INSERT INTO identity_project_tag (project_id, name) VALUES (?, ?)")
                .bind(&p.row.id)
                .bind(t)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Updates name, description, enabled and extra (id, domain and parent never change).
    pub async fn project_update(&self, p: &ProjectRecord) -> Result<(), Error> {
        self.db
            .query("UPDATE identity_project SET name = ?, description = ?, enabled = ?, extra = ? WHERE id = ?")
            .bind(&p.row.name)
            .bind(&p.row.description)
            .bind(Bool(p.row.enabled))
            .bind(&p.extra)
            .bind(&p.row.id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Deletes a project with its tags, every role assignment on it and the application credentials bound to it.
    pub async fn project_delete(&self, id: &str) -> Result<(), Error> {
        let mut tx = self.db.begin().await?;
        for sql in [
            "DELETE FROM identity_assignment WHERE target_id = ?",
            "DELETE FROM identity_project_tag WHERE project_id = ?",
            "DELETE FROM identity_project WHERE id = ?",
        ] {
            self.db.query(sql).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        self.application_credential_delete_for(None, Some(id)).await?;
        Ok(())
    }

    pub async fn project_has_children(&self, id: &str) -> Result<bool, Error> {
        let row = self
            .db
            .query("SELECT id FROM identity_project WHERE parent_id = ? LIMIT 1")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.is_some())
    }

    // ---- project tags (domains may carry tags too: keyed by the domain's id)

    pub async fn project_tags(&self, project_id: &str) -> Result<Vec<String>, Error> {
        let rows = self
            .db
            .query("SELECT name FROM identity_project_tag WHERE project_id = ? ORDER BY name")
            .bind(project_id)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(|r| Ok(r.try_get("name")?)).collect()
    }

    /// All tags, by project id.
    async fn project_tag_pairs(&self) -> Result<std::collections::HashMap<String, Vec<String>>, Error> {
        let rows = self
            .db
            .query("SELECT project_id, name FROM identity_project_tag ORDER BY project_id, name")
            .fetch_all(self.db.pool())
            .await?;
        let mut out: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
        for r in &rows {
            out.entry(r.try_get("project_id")?).or_default().push(r.try_get("name")?);
        }
        Ok(out)
    }

    /// Replaces a project's tags.
    pub async fn project_tags_set(&self, project_id: &str, tags: &[String]) -> Result<(), Error> {
        let mut tx = self.db.begin().await?;
        self.db.query("DELETE FROM identity_project_tag WHERE project_id = ?").bind(project_id).execute(&mut *tx).await?;
        for t in tags {
            self.db
                .query("INSERT INTO identity_project_tag (project_id, name) VALUES (?, ?)")
                .bind(project_id)
                .bind(t)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Adds one tag; adding a tag the project has already is not an error.
    pub async fn project_tag_add(&self, project_id: &str, tag: &str) -> Result<(), Error> {
        let r = self
            .db
            .query("INSERT INTO identity_project_tag (project_id, name) VALUES (?, ?)")
            .bind(project_id)
            .bind(tag)
            .execute(self.db.pool())
            .await;
        db::insert_unless_duplicate(r)?;
        Ok(())
    }

    /// Removes one tag; `false` if the project did not have it.
    pub async fn project_tag_delete(&self, project_id: &str, tag: &str) -> Result<bool, Error> {
        let done = self
            .db
            .query("DELETE FROM identity_project_tag WHERE project_id = ? AND name = ?")
            .bind(project_id)
            .bind(tag)
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- domain-specific configuration

    /// A domain's configuration document (JSON text), if it has one.
    pub async fn domain_config_get(&self, domain_id: &str) -> Result<Option<String>, Error> {
        let row = self
            .db
            .query("SELECT config FROM identity_domain_config WHERE domain_id = ?")
            .bind(domain_id)
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|r| Ok(r.try_get("config")?)).transpose()
    }

    /// Stores (creates or replaces) a domain's configuration document.
    pub async fn domain_config_set(&self, domain_id: &str, config: &str) -> Result<(), Error> {
        let mut tx = self.db.begin().await?;
        self.db.query("DELETE FROM identity_domain_config WHERE domain_id = ?").bind(domain_id).execute(&mut *tx).await?;
        self.db
            .query("INSERT INTO identity_domain_config (domain_id, config) VALUES (?, ?)")
            .bind(domain_id)
            .bind(config)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a domain's configuration; `false` if it had none.
    pub async fn domain_config_delete(&self, domain_id: &str) -> Result<bool, Error> {
        let done = self
            .db
            .query("DELETE FROM identity_domain_config WHERE domain_id = ?")
            .bind(domain_id)
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
