//! The identity service's tables and every query on them. Handlers never run SQL; they call these methods, named
//! `resource_verb`. All tables are prefixed `identity_`; no other service reads them.

use chrono::Utc;
use db::{Bool, Database, Migration};
use sqlx::{Row, any::AnyRow};

use crate::error::Error;

mod application_credentials;
mod catalog;
mod credentials;
mod groups;
mod limits;
mod oauth;
mod projects;
mod roles;
mod trusts;
mod users;

pub use application_credentials::{AccessRuleRow, AppCredRow};
pub use catalog::{EndpointGroupRow, EndpointRecord, PolicyRow, RegionRow, ServiceRecord};
pub use credentials::{Credential, CredentialRow, EC2, Ec2Credential, ec2_credential_id};
pub use groups::GroupRow;
pub use limits::{LimitRow, RegisteredLimitRow};
pub use oauth::ConsumerRow;
pub use projects::{DomainDeletion, DomainRecord, ProjectFilter, ProjectRecord};
pub use roles::{AssignmentRow, ProjectNode, RoleRecord};
pub use trusts::TrustRow;
pub use users::{UserDetail, UserFilter};

/// Every identity migration, in order. Each resource module owns its migration; versions are unique and increasing.
pub const MIGRATIONS: &[Migration] = &[
    INITIAL,
    groups::MIGRATION,
    projects::MIGRATION,
    users::MIGRATION,
    roles::MIGRATION,
    catalog::MIGRATION,
    application_credentials::MIGRATION,
    catalog::MIGRATION_POLICIES,
    oauth::MIGRATION,
];

const INITIAL: Migration = Migration {
    version: 1,
    name: "initial identity schema",
    sql: "
CREATE TABLE identity_domain (
    id {id} PRIMARY KEY,
    name {name} NOT NULL UNIQUE,
    description {text},
    enabled {bool} NOT NULL,
    created_at {int} NOT NULL
);
CREATE TABLE identity_project (
    id {id} PRIMARY KEY,
    name {name} NOT NULL,
    domain_id {id} NOT NULL,
    parent_id {id},
    is_domain {bool} NOT NULL,
    description {text},
    enabled {bool} NOT NULL,
    created_at {int} NOT NULL,
    UNIQUE (domain_id, name)
);
CREATE TABLE identity_user (
    id {id} PRIMARY KEY,
    name {name} NOT NULL,
    domain_id {id} NOT NULL,
    enabled {bool} NOT NULL,
    password_hash {name},
    default_project_id {id},
    created_at {int} NOT NULL,
    UNIQUE (domain_id, name)
);
CREATE TABLE identity_role (
    id {id} PRIMARY KEY,
    name {name} NOT NULL,
    domain_id {id} NOT NULL,
    description {text},
    UNIQUE (domain_id, name)
);
CREATE TABLE identity_implied_role (
    prior_role_id {id} NOT NULL,
    implied_role_id {id} NOT NULL,
    PRIMARY KEY (prior_role_id, implied_role_id)
);
CREATE TABLE identity_assignment (
    kind {id} NOT NULL,
    actor_id {id} NOT NULL,
    target_id {id} NOT NULL,
    role_id {id} NOT NULL,
    inherited {bool} NOT NULL,
    PRIMARY KEY (kind, actor_id, target_id, role_id, inherited)
);
CREATE TABLE identity_region (
    id {name} PRIMARY KEY,
    description {text},
    parent_region_id {name}
);
CREATE TABLE identity_service (
    id {id} PRIMARY KEY,
    type {name} NOT NULL,
    name {name},
    description {text},
    enabled {bool} NOT NULL
);
CREATE TABLE identity_endpoint (
    id {id} PRIMARY KEY,
    service_id {id} NOT NULL,
    interface {id} NOT NULL,
    region_id {name},
    url {text} NOT NULL,
    enabled {bool} NOT NULL
);
CREATE TABLE identity_revocation_event (
    id {serial},
    audit_id {id},
    user_id {id},
    project_id {id},
    issued_before {int} NOT NULL,
    revoked_at {int} NOT NULL
)",
};

/// The empty-string domain id that marks a global role (a NULL would defeat the unique constraint).
pub const GLOBAL_ROLE_DOMAIN: &str = "";

/// Assignment kinds, as upstream's assignment table names them.
pub mod kind {
    pub const USER_PROJECT: &str = "UserProject";
    pub const USER_DOMAIN: &str = "UserDomain";
    pub const USER_SYSTEM: &str = "UserSystem";
    pub const GROUP_PROJECT: &str = "GroupProject";
    pub const GROUP_DOMAIN: &str = "GroupDomain";
    pub const GROUP_SYSTEM: &str = "GroupSystem";
}

/// The system scope's target id in assignments.
pub const SYSTEM_ALL: &str = "system";

#[derive(Clone, Debug)]
pub struct DomainRow {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub enabled: bool,
}

#[derive(Clone, Debug)]
pub struct ProjectRow {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub parent_id: Option<String>,
    pub is_domain: bool,
    pub description: Option<String>,
    pub enabled: bool,
}

#[derive(Clone, Debug)]
pub struct UserRow {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub enabled: bool,
    pub password_hash: Option<String>,
    pub default_project_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleRow {
    pub id: String,
    pub name: String,
    pub domain_id: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ServiceRow {
    pub id: String,
    pub service_type: String,
    pub name: Option<String>,
    pub enabled: bool,
}

#[derive(Clone, Debug)]
pub struct EndpointRow {
    pub id: String,
    pub service_id: String,
    pub interface: String,
    pub region_id: Option<String>,
    pub url: String,
    pub enabled: bool,
}

#[derive(Clone, Debug)]
pub struct RevocationRow {
    pub audit_id: Option<String>,
    pub user_id: Option<String>,
    pub project_id: Option<String>,
    pub issued_before: i64,
}

fn flag(row: &AnyRow, col: &str) -> Result<bool, Error> {
    Ok(row.try_get::<Bool, _>(col)?.into())
}

fn domain(row: &AnyRow) -> Result<DomainRow, Error> {
    Ok(DomainRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        enabled: flag(row, "enabled")?,
    })
}

fn project(row: &AnyRow) -> Result<ProjectRow, Error> {
    Ok(ProjectRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        domain_id: row.try_get("domain_id")?,
        parent_id: row.try_get("parent_id")?,
        is_domain: flag(row, "is_domain")?,
        description: row.try_get("description")?,
        enabled: flag(row, "enabled")?,
    })
}

fn user(row: &AnyRow) -> Result<UserRow, Error> {
    Ok(UserRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        domain_id: row.try_get("domain_id")?,
        enabled: flag(row, "enabled")?,
        password_hash: row.try_get("password_hash")?,
        default_project_id: row.try_get("default_project_id")?,
    })
}

fn role(row: &AnyRow) -> Result<RoleRow, Error> {
    let domain_id: String = row.try_get("domain_id")?;
    Ok(RoleRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        domain_id: (domain_id != GLOBAL_ROLE_DOMAIN).then_some(domain_id),
    })
}

// Column lists as macros so queries stay compile-time constant strings (`concat!`).
macro_rules! domain_cols {
    () => {
        "id, name, description, enabled"
    };
}
macro_rules! project_cols {
    () => {
        "id, name, domain_id, parent_id, is_domain, description, enabled"
    };
}
macro_rules! user_cols {
    () => {
        "id, name, domain_id, enabled, password_hash, default_project_id"
    };
}

/// The identity datastore.
#[derive(Clone)]
pub struct Store {
    db: Database,
}

impl Store {
    pub fn new(db: Database) -> Self {
        Store { db }
    }

    pub async fn migrate(&self) -> Result<(), Error> {
        Ok(self.db.migrate("identity", MIGRATIONS).await?)
    }

    // ---- domains

    pub async fn domain_get(&self, id: &str) -> Result<Option<DomainRow>, Error> {
        let sql = concat!("SELECT ", domain_cols!(), " FROM identity_domain WHERE id = ?");
        self.db.query(sql).bind(id).fetch_optional(self.db.pool()).await?.as_ref().map(domain).transpose()
    }

    pub async fn domain_get_by_name(&self, name: &str) -> Result<Option<DomainRow>, Error> {
        let sql = concat!("SELECT ", domain_cols!(), " FROM identity_domain WHERE name = ?");
        self.db.query(sql).bind(name).fetch_optional(self.db.pool()).await?.as_ref().map(domain).transpose()
    }

    pub async fn domain_create(&self, d: &DomainRow) -> Result<(), Error> {
        self.db
            .query("INSERT INTO identity_domain (id, name, description, enabled, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(&d.id)
            .bind(&d.name)
            .bind(&d.description)
            .bind(Bool(d.enabled))
            .bind(Utc::now().timestamp())
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    // ---- projects

    pub async fn project_get(&self, id: &str) -> Result<Option<ProjectRow>, Error> {
        let sql = concat!("SELECT ", project_cols!(), " FROM identity_project WHERE id = ?");
        self.db.query(sql).bind(id).fetch_optional(self.db.pool()).await?.as_ref().map(project).transpose()
    }

    pub async fn project_get_by_name(&self, domain_id: &str, name: &str) -> Result<Option<ProjectRow>, Error> {
        let sql = concat!("SELECT ", project_cols!(), " FROM identity_project WHERE domain_id = ? AND name = ?");
        self.db
            .query(sql)
            .bind(domain_id)
            .bind(name)
            .fetch_optional(self.db.pool())
            .await?
            .as_ref()
            .map(project)
            .transpose()
    }

    pub async fn project_create(&self, p: &ProjectRow) -> Result<(), Error> {
        self.db
            .query(
                "INSERT INTO identity_project (id, name, domain_id, parent_id, is_domain, description, enabled, \
                 created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&p.id)
            .bind(&p.name)
            .bind(&p.domain_id)
            .bind(&p.parent_id)
            .bind(Bool(p.is_domain))
            .bind(&p.description)
            .bind(Bool(p.enabled))
            .bind(Utc::now().timestamp())
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Projects on which the user holds any role: directly, through a group, or inherited.
    pub async fn project_list_for_user(&self, user_id: &str) -> Result<Vec<ProjectRow>, Error> {
        let ids = self.assignment_project_ids_for_user(user_id).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = concat!("SELECT ", project_cols!(), " FROM identity_project WHERE is_domain = ? ORDER BY name");
        let rows = self.db.query(sql).bind(Bool(false)).fetch_all(self.db.pool()).await?;
        rows.iter().map(project).filter(|p| p.as_ref().map_or(true, |p| ids.contains(&p.id))).collect()
    }

    /// Domains on which the user holds any role, directly or through a group.
    pub async fn domain_list_for_user(&self, user_id: &str) -> Result<Vec<DomainRow>, Error> {
        let ids = self.assignment_domain_ids_for_user(user_id).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = concat!("SELECT ", domain_cols!(), " FROM identity_domain ORDER BY name");
        let rows = self.db.query(sql).fetch_all(self.db.pool()).await?;
        rows.iter().map(domain).filter(|d| d.as_ref().map_or(true, |d| ids.contains(&d.id))).collect()
    }

    // ---- users

    pub async fn user_get(&self, id: &str) -> Result<Option<UserRow>, Error> {
        let sql = concat!("SELECT ", user_cols!(), " FROM identity_user WHERE id = ?");
        self.db.query(sql).bind(id).fetch_optional(self.db.pool()).await?.as_ref().map(user).transpose()
    }

    pub async fn user_get_by_name(&self, domain_id: &str, name: &str) -> Result<Option<UserRow>, Error> {
        let sql = concat!("SELECT ", user_cols!(), " FROM identity_user WHERE domain_id = ? AND name = ?");
        self.db
            .query(sql)
            .bind(domain_id)
            .bind(name)
            .fetch_optional(self.db.pool())
            .await?
            .as_ref()
            .map(user)
            .transpose()
    }

    pub async fn user_create(&self, u: &UserRow) -> Result<(), Error> {
        self.db
            .query(
                "INSERT INTO identity_user (id, name, domain_id, enabled, password_hash, default_project_id, \
                 created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&u.id)
            .bind(&u.name)
            .bind(&u.domain_id)
            .bind(Bool(u.enabled))
            .bind(&u.password_hash)
            .bind(&u.default_project_id)
            .bind(Utc::now().timestamp())
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    pub async fn user_set_password_hash(&self, id: &str, hash: &str) -> Result<(), Error> {
        self.db
            .query("UPDATE identity_user SET password_hash = ? WHERE id = ?")
            .bind(hash)
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    // ---- roles

    pub async fn role_get_by_name(&self, name: &str) -> Result<Option<RoleRow>, Error> {
        self.db
            .query("SELECT id, name, domain_id FROM identity_role WHERE name = ? AND domain_id = ?")
            .bind(name)
            .bind(GLOBAL_ROLE_DOMAIN)
            .fetch_optional(self.db.pool())
            .await?
            .as_ref()
            .map(role)
            .transpose()
    }

    pub async fn role_create(&self, r: &RoleRow) -> Result<(), Error> {
        self.db
            .query("INSERT INTO identity_role (id, name, domain_id) VALUES (?, ?, ?)")
            .bind(&r.id)
            .bind(&r.name)
            .bind(r.domain_id.as_deref().unwrap_or(GLOBAL_ROLE_DOMAIN))
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    pub async fn role_list(&self) -> Result<Vec<RoleRow>, Error> {
        let rows = self.db.query("SELECT id, name, domain_id FROM identity_role").fetch_all(self.db.pool()).await?;
        rows.iter().map(role).collect()
    }

    /// All (prior, implied) pairs.
    pub async fn implied_role_list(&self) -> Result<Vec<(String, String)>, Error> {
        let rows = self
            .db
            .query("SELECT prior_role_id, implied_role_id FROM identity_implied_role")
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(|r| Ok((r.try_get("prior_role_id")?, r.try_get("implied_role_id")?))).collect()
    }

    pub async fn implied_role_create(&self, prior: &str, implied: &str) -> Result<(), Error> {
        self.db
            .query("INSERT INTO identity_implied_role (prior_role_id, implied_role_id) VALUES (?, ?)")
            .bind(prior)
            .bind(implied)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    // ---- assignments

    /// Grants a role; granting one that exists already is not an error.
    pub async fn assignment_create(&self, kind: &str, actor: &str, target: &str, role_id: &str) -> Result<(), Error> {
        let result = self
            .db
            .query(
                "INSERT INTO identity_assignment (kind, actor_id, target_id, role_id, inherited) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(kind)
            .bind(actor)
            .bind(target)
            .bind(role_id)
            .bind(Bool(false))
            .execute(self.db.pool())
            .await;
        db::insert_unless_duplicate(result)?;
        Ok(())
    }

    /// Role ids granted directly to the user on a target.
    pub async fn assignment_role_ids(&self, kind: &str, actor: &str, target: &str) -> Result<Vec<String>, Error> {
        let rows = self
            .db
            .query("SELECT role_id FROM identity_assignment WHERE kind = ? AND actor_id = ? AND target_id = ?")
            .bind(kind)
            .bind(actor)
            .bind(target)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(|r| Ok(r.try_get("role_id")?)).collect()
    }

    // ---- catalog

    pub async fn region_ensure(&self, id: &str) -> Result<(), Error> {
        let exists = self
            .db
            .query("SELECT id FROM identity_region WHERE id = ?")
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .is_some();
        if !exists {
            self.db.query("INSERT INTO identity_region (id) VALUES (?)").bind(id).execute(self.db.pool()).await?;
        }
        Ok(())
    }

    pub async fn service_list(&self) -> Result<Vec<ServiceRow>, Error> {
        let rows = self
            .db
            .query("SELECT id, type, name, enabled FROM identity_service ORDER BY type")
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ServiceRow {
                    id: r.try_get("id")?,
                    service_type: r.try_get("type")?,
                    name: r.try_get("name")?,
                    enabled: flag(r, "enabled")?,
                })
            })
            .collect()
    }

    pub async fn service_create(&self, s: &ServiceRow) -> Result<(), Error> {
        self.db
            .query("INSERT INTO identity_service (id, type, name, enabled) VALUES (?, ?, ?, ?)")
            .bind(&s.id)
            .bind(&s.service_type)
            .bind(&s.name)
            .bind(Bool(s.enabled))
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    pub async fn endpoint_list(&self) -> Result<Vec<EndpointRow>, Error> {
        let rows = self
            .db
            .query("SELECT id, service_id, interface, region_id, url, enabled FROM identity_endpoint ORDER BY id")
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(EndpointRow {
                    id: r.try_get("id")?,
                    service_id: r.try_get("service_id")?,
                    interface: r.try_get("interface")?,
                    region_id: r.try_get("region_id")?,
                    url: r.try_get("url")?,
                    enabled: flag(r, "enabled")?,
                })
            })
            .collect()
    }

    pub async fn endpoint_create(&self, e: &EndpointRow) -> Result<(), Error> {
        self.db
            .query(
                "INSERT INTO identity_endpoint (id, service_id, interface, region_id, url, enabled) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&e.id)
            .bind(&e.service_id)
            .bind(&e.interface)
            .bind(&e.region_id)
            .bind(&e.url)
            .bind(Bool(e.enabled))
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    pub async fn endpoint_set_url(&self, id: &str, url: &str) -> Result<(), Error> {
        self.db.query("UPDATE identity_endpoint SET url = ? WHERE id = ?").bind(url).bind(id).execute(self.db.pool()).await?;
        Ok(())
    }

    // ---- revocations

    pub async fn revocation_create(&self, ev: &RevocationRow) -> Result<(), Error> {
        self.db
            .query(
                "INSERT INTO identity_revocation_event (audit_id, user_id, project_id, issued_before, revoked_at) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&ev.audit_id)
            .bind(&ev.user_id)
            .bind(&ev.project_id)
            .bind(ev.issued_before)
            .bind(Utc::now().timestamp())
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Events younger than `since` (older ones can only match tokens that have expired anyway).
    pub async fn revocation_list(&self, since: i64) -> Result<Vec<RevocationRow>, Error> {
        let rows = self
            .db
            .query("SELECT audit_id, user_id, project_id, issued_before FROM identity_revocation_event WHERE revoked_at >= ?")
            .bind(since)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(RevocationRow {
                    audit_id: r.try_get("audit_id")?,
                    user_id: r.try_get("user_id")?,
                    project_id: r.try_get("project_id")?,
                    issued_before: r.try_get("issued_before")?,
                })
            })
            .collect()
    }
}
