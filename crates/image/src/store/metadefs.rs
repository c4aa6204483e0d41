//! The metadata definitions catalog (`image_metadef_*`): namespaces, the resource types they apply to, and their
//! objects, properties and tags. Objects, properties and tags share one table, told apart by `kind`; their
//! definitions are kept as JSON text.

use db::{Bool, Migration};
use sqlx::{Row, any::AnyRow};

use super::{Store, now_micros};
use crate::error::Error;

pub(super) const METADEFS: Migration = Migration {
    version: 3,
    name: "metadata definitions",
    sql: "
CREATE TABLE image_metadef_namespace (
    namespace {name} PRIMARY KEY,
    display_name {name},
    description {text},
    visibility {id} NOT NULL,
    protected {bool} NOT NULL,
    owner {id},
    created_at {int} NOT NULL,
    updated_at {int} NOT NULL
);
CREATE TABLE image_metadef_resource_type (
    name {name} PRIMARY KEY,
    protected {bool} NOT NULL,
    created_at {int} NOT NULL,
    updated_at {int} NOT NULL
);
CREATE TABLE image_metadef_association (
    namespace {name} NOT NULL,
    resource_type {name} NOT NULL,
    prefix {name},
    properties_target {name},
    created_at {int} NOT NULL,
    updated_at {int} NOT NULL,
    PRIMARY KEY (namespace, resource_type)
);
CREATE TABLE image_metadef_item (
    namespace {name} NOT NULL,
    kind {id} NOT NULL,
    name {name} NOT NULL,
    body {text} NOT NULL,
    created_at {int} NOT NULL,
    updated_at {int} NOT NULL,
    PRIMARY KEY (namespace, kind, name)
)",
};

/// The resource types Glance ships definitions for; present from the start.
pub const DEFAULT_RESOURCE_TYPES: &[&str] = &[
    "OS::Glance::Image",
    "OS::Cinder::Volume",
    "OS::Nova::Flavor",
    "OS::Nova::Aggregate",
    "OS::Nova::Server",
    "OS::Trove::Instance",
    "OS::Cinder::Volumetype",
    "OS::Glance::Metadef",
];

#[derive(Clone, Debug, PartialEq)]
pub struct NamespaceRow {
    pub namespace: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    /// `public` or `private`.
    pub visibility: String,
    pub protected: bool,
    pub owner: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ResourceTypeRow {
    pub name: String,
    pub protected: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A namespace applying to a resource type.
#[derive(Clone, Debug, PartialEq)]
pub struct AssociationRow {
    pub namespace: String,
    pub name: String,
    pub prefix: Option<String>,
    pub properties_target: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An object, property or tag of a namespace (`kind`), its definition as JSON text.
#[derive(Clone, Debug, PartialEq)]
pub struct ItemRow {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub body: String,
    pub created_at: i64,
    pub updated_at: i64,
}

fn namespace_from_row(r: &AnyRow) -> Result<NamespaceRow, sqlx::Error> {
    Ok(NamespaceRow {
        namespace: r.try_get("namespace")?,
        display_name: r.try_get("display_name")?,
        description: r.try_get("description")?,
        visibility: r.try_get("visibility")?,
        protected: r.try_get::<Bool, _>("protected")?.into(),
        owner: r.try_get("owner")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn association_from_row(r: &AnyRow) -> Result<AssociationRow, sqlx::Error> {
    Ok(AssociationRow {
        namespace: r.try_get("namespace")?,
        name: r.try_get("resource_type")?,
        prefix: r.try_get("prefix")?,
        properties_target: r.try_get("properties_target")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn item_from_row(r: &AnyRow) -> Result<ItemRow, sqlx::Error> {
    Ok(ItemRow {
        namespace: r.try_get("namespace")?,
        kind: r.try_get("kind")?,
        name: r.try_get("name")?,
        body: r.try_get("body")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// Maps a unique violation to 409 with `message`.
fn conflict(e: sqlx::Error, message: impl FnOnce() -> String) -> Error {
    let e = db::Error::from(e);
    if e.is_unique_violation() { Error::Conflict(message()) } else { e.into() }
}

const NAMESPACE_COLUMNS: &str = "SELECT namespace, display_name, description, visibility, protected, owner, created_at, updated_at \
     FROM image_metadef_namespace";

impl Store {
    /// Adds the default resource types that are missing.
    pub(super) async fn metadef_seed_resource_types(&self) -> Result<(), Error> {
        let now = now_micros();
        for name in DEFAULT_RESOURCE_TYPES {
            if self.metadef_resource_type_get(name).await?.is_some() {
                continue;
            }
            let inserted = self
                .db
                .query(
                    "INSERT INTO image_metadef_resource_type (name, protected, created_at, updated_at) \
                     VALUES (?, ?, ?, ?)",
                )
                .bind(*name)
                .bind(true)
                .bind(now)
                .bind(now)
                .execute(self.db.pool())
                .await;
            // Another process seeding at the same time is fine.
            if let Err(e) = inserted {
                let e = db::Error::from(e);
                if !e.is_unique_violation() {
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    pub async fn metadef_resource_type_list(&self) -> Result<Vec<ResourceTypeRow>, Error> {
        let rows = self
            .db
            .query("SELECT name, protected, created_at, updated_at FROM image_metadef_resource_type ORDER BY name")
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ResourceTypeRow {
                    name: r.try_get("name")?,
                    protected: r.try_get::<Bool, _>("protected")?.into(),
                    created_at: r.try_get("created_at")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Error::from)
    }

    pub async fn metadef_resource_type_get(&self, name: &str) -> Result<Option<String>, Error> {
        Ok(self
            .db
            .query_scalar("SELECT name FROM image_metadef_resource_type WHERE name = ?")
            .bind(name)
            .fetch_optional(self.db.pool())
            .await?)
    }

    /// Inserts a namespace; a taken name is a conflict.
    pub async fn metadef_namespace_insert(&self, ns: &NamespaceRow) -> Result<(), Error> {
        self.db
            .query(
                "INSERT INTO image_metadef_namespace (namespace, display_name, description, visibility, protected, \
                 owner, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&ns.namespace)
            .bind(&ns.display_name)
            .bind(&ns.description)
            .bind(&ns.visibility)
            .bind(ns.protected)
            .bind(&ns.owner)
            .bind(ns.created_at)
            .bind(ns.updated_at)
            .execute(self.db.pool())
            .await
            .map_err(|e| conflict(e, || format!("Metadata definition namespace={} already exists.", ns.namespace)))?;
        Ok(())
    }

    pub async fn metadef_namespace_get(&self, namespace: &str) -> Result<Option<NamespaceRow>, Error> {
        let row = self
            .db
            .query(db::sqlx::AssertSqlSafe(format!("{NAMESPACE_COLUMNS} WHERE namespace = ?")))
            .bind(namespace)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.as_ref().map(namespace_from_row).transpose()?)
    }

    /// Every namespace, by name.
    pub async fn metadef_namespace_list(&self) -> Result<Vec<NamespaceRow>, Error> {
        let rows = self
            .db
            .query(db::sqlx::AssertSqlSafe(format!("{NAMESPACE_COLUMNS} ORDER BY namespace")))
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows.iter().map(namespace_from_row).collect::<Result<_, _>>()?)
    }

    /// Rewrites namespace `old` as `ns` (which may rename it, carrying its contents along). Returns whether it
    /// existed; a taken new name is a conflict.
    pub async fn metadef_namespace_update(&self, old: &str, ns: &NamespaceRow) -> Result<bool, Error> {
        let mut tx = self.db.begin().await?;
        let n = self
            .db
            .query(
                "UPDATE image_metadef_namespace SET namespace = ?, display_name = ?, description = ?, \
                 visibility = ?, protected = ?, owner = ?, updated_at = ? WHERE namespace = ?",
            )
            .bind(&ns.namespace)
            .bind(&ns.display_name)
            .bind(&ns.description)
            .bind(&ns.visibility)
            .bind(ns.protected)
            .bind(&ns.owner)
            .bind(ns.updated_at)
            .bind(old)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict(e, || format!("Metadata definition namespace={} already exists.", ns.namespace)))?
            .rows_affected();
        if n > 0 && old != ns.namespace {
            self.db
                .query("UPDATE image_metadef_association SET namespace = ? WHERE namespace = ?")
                .bind(&ns.namespace)
                .bind(old)
                .execute(&mut *tx)
                .await?;
            self.db
                .query("UPDATE image_metadef_item SET namespace = ? WHERE namespace = ?")
                .bind(&ns.namespace)
                .bind(old)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Deletes a namespace with everything in it. Returns whether it existed.
    pub async fn metadef_namespace_delete(&self, namespace: &str) -> Result<bool, Error> {
        let mut tx = self.db.begin().await?;
        self.db.query("DELETE FROM image_metadef_item WHERE namespace = ?").bind(namespace).execute(&mut *tx).await?;
        self.db
            .query("DELETE FROM image_metadef_association WHERE namespace = ?")
            .bind(namespace)
            .execute(&mut *tx)
            .await?;
        let n = self
            .db
            .query("DELETE FROM image_metadef_namespace WHERE namespace = ?")
            .bind(namespace)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Associates a namespace with a resource type; an existing association is a conflict.
    pub async fn metadef_association_insert(&self, a: &AssociationRow) -> Result<(), Error> {
        self.db
            .query(
                "INSERT INTO image_metadef_association (namespace, resource_type, prefix, properties_target, \
                 created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&a.namespace)
            .bind(&a.name)
            .bind(&a.prefix)
            .bind(&a.properties_target)
            .bind(a.created_at)
            .bind(a.updated_at)
            .execute(self.db.pool())
            .await
            .map_err(|e| {
                conflict(e, || {
                    format!("Resource type association of {} with namespace {} already exists.", a.name, a.namespace)
                })
            })?;
        Ok(())
    }

    /// The associations of one namespace, or (`namespace` = `None`) of all.
    pub async fn metadef_association_list(&self, namespace: Option<&str>) -> Result<Vec<AssociationRow>, Error> {
        let rows = match namespace {
            Some(ns) => {
                self.db
                    .query(
                        "SELECT namespace, resource_type, prefix, properties_target, created_at, updated_at \
                         FROM image_metadef_association WHERE namespace = ? ORDER BY resource_type",
                    )
                    .bind(ns)
                    .fetch_all(self.db.pool())
                    .await?
            }
            None => {
                self.db
                    .query(
                        "SELECT namespace, resource_type, prefix, properties_target, created_at, updated_at \
                         FROM image_metadef_association ORDER BY namespace, resource_type",
                    )
                    .fetch_all(self.db.pool())
                    .await?
            }
        };
        Ok(rows.iter().map(association_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn metadef_association_delete(&self, namespace: &str, resource_type: &str) -> Result<bool, Error> {
        let n = self
            .db
            .query("DELETE FROM image_metadef_association WHERE namespace = ? AND resource_type = ?")
            .bind(namespace)
            .bind(resource_type)
            .execute(self.db.pool())
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Inserts an object, property or tag; a taken name (of that kind, in that namespace) is a conflict.
    pub async fn metadef_item_insert(&self, item: &ItemRow) -> Result<(), Error> {
        self.db
            .query(
                "INSERT INTO image_metadef_item (namespace, kind, name, body, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&item.namespace)
            .bind(&item.kind)
            .bind(&item.name)
            .bind(&item.body)
            .bind(item.created_at)
            .bind(item.updated_at)
            .execute(self.db.pool())
            .await
            .map_err(|e| conflict(e, || item_exists(item)))?;
        Ok(())
    }

    pub async fn metadef_item_get(&self, namespace: &str, kind: &str, name: &str) -> Result<Option<ItemRow>, Error> {
        let row = self
            .db
            .query(
                "SELECT namespace, kind, name, body, created_at, updated_at FROM image_metadef_item \
                 WHERE namespace = ? AND kind = ? AND name = ?",
            )
            .bind(namespace)
            .bind(kind)
            .bind(name)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.as_ref().map(item_from_row).transpose()?)
    }

    /// The items of one kind in a namespace, by name.
    pub async fn metadef_item_list(&self, namespace: &str, kind: &str) -> Result<Vec<ItemRow>, Error> {
        let rows = self
            .db
            .query(
                "SELECT namespace, kind, name, body, created_at, updated_at FROM image_metadef_item \
                 WHERE namespace = ? AND kind = ? ORDER BY name",
            )
            .bind(namespace)
            .bind(kind)
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows.iter().map(item_from_row).collect::<Result<_, _>>()?)
    }

    /// Rewrites item `old` as `item` (possibly renamed). Returns whether it existed.
    pub async fn metadef_item_update(&self, old: &str, item: &ItemRow) -> Result<bool, Error> {
        let n = self
            .db
            .query(
                "UPDATE image_metadef_item SET name = ?, body = ?, updated_at = ? \
                 WHERE namespace = ? AND kind = ? AND name = ?",
            )
            .bind(&item.name)
            .bind(&item.body)
            .bind(item.updated_at)
            .bind(&item.namespace)
            .bind(&item.kind)
            .bind(old)
            .execute(self.db.pool())
            .await
            .map_err(|e| conflict(e, || item_exists(item)))?
            .rows_affected();
        Ok(n > 0)
    }

    pub async fn metadef_item_delete(&self, namespace: &str, kind: &str, name: &str) -> Result<bool, Error> {
        let n = self
            .db
            .query("DELETE FROM image_metadef_item WHERE namespace = ? AND kind = ? AND name = ?")
            .bind(namespace)
            .bind(kind)
            .bind(name)
            .execute(self.db.pool())
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Replaces every item of `kind` in a namespace with `items`, atomically.
    pub async fn metadef_item_replace_all(&self, namespace: &str, kind: &str, items: &[ItemRow]) -> Result<(), Error> {
        let mut tx = self.db.begin().await?;
        self.db
            .query("DELETE FROM image_metadef_item WHERE namespace = ? AND kind = ?")
            .bind(namespace)
            .bind(kind)
            .execute(&mut *tx)
            .await?;
        for item in items {
            self.db
                .query(
                    "INSERT INTO image_metadef_item (namespace, kind, name, body, created_at, updated_at) \
                     VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind(namespace)
                .bind(kind)
                .bind(&item.name)
                .bind(&item.body)
                .bind(item.created_at)
                .bind(item.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| conflict(e, || item_exists(item)))?;
        }
        tx.commit().await?;
        Ok(())
    }
}

fn item_exists(item: &ItemRow) -> String {
    format!(
        "A metadata definition {} with name={} already exists in namespace={}.",
        item.kind, item.name, item.namespace
    )
}
