//! The placement service's tables and every query on them; handlers never run SQL. Tables are prefixed
//! `placement_`. Usage sums are computed in Rust (portable SQL has no decodable `SUM`), except one provider's usage,
//! on the allocation write path, which casts its sums per backend.
//!
//! Writes that change what a provider offers or what is allocated on it bump the provider's `generation` with
//! `UPDATE … WHERE generation = ?` inside the writing transaction, so two writers that read the same state can
//! never both commit: the loser gets [`Error::generation_conflict`].
//!
//! Every write that changes what allocation candidates see (providers, inventories, traits, aggregates,
//! allocations) also bumps the single row of `placement_change` in the same transaction, so any process can tell
//! with one tiny query ([`Store::change_counter`]) whether its cached [`Snapshot`] is still current.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use db::{Backend, Database, Migration};
use sqlx::{AnyConnection, Row};

use crate::{
    candidates::{ProviderView, Snapshot},
    error::{Error, code},
    model::Inventory,
};

/// Every placement migration, in order.
pub const MIGRATIONS: &[Migration] = &[INITIAL, CHANGE_COUNTER];

const CHANGE_COUNTER: Migration = Migration {
    version: 2,
    name: "placement change counter",
    sql: "
CREATE TABLE placement_change (
    id {int} PRIMARY KEY,
    counter {int} NOT NULL
);
INSERT INTO placement_change (id, counter) VALUES (1, 0)",
};

const INITIAL: Migration = Migration {
    version: 1,
    name: "initial placement schema",
    sql: "
CREATE TABLE placement_provider (
    uuid {id} PRIMARY KEY,
    name {name} NOT NULL,
    generation {int} NOT NULL,
    parent_uuid {id},
    root_uuid {id} NOT NULL,
    created_at {int} NOT NULL,
    updated_at {int} NOT NULL
);
CREATE UNIQUE INDEX placement_provider_name ON placement_provider (name);
CREATE INDEX placement_provider_parent ON placement_provider (parent_uuid);
CREATE TABLE placement_resource_class (
    name {name} PRIMARY KEY,
    created_at {int} NOT NULL
);
CREATE TABLE placement_inventory (
    provider_uuid {id} NOT NULL,
    resource_class {name} NOT NULL,
    total {int} NOT NULL,
    reserved {int} NOT NULL,
    min_unit {int} NOT NULL,
    max_unit {int} NOT NULL,
    step_size {int} NOT NULL,
    allocation_ratio {id} NOT NULL,
    PRIMARY KEY (provider_uuid, resource_class)
);
CREATE INDEX placement_inventory_class ON placement_inventory (resource_class);
CREATE TABLE placement_trait (
    name {name} PRIMARY KEY,
    created_at {int} NOT NULL
);
CREATE TABLE placement_provider_trait (
    provider_uuid {id} NOT NULL,
    trait {name} NOT NULL,
    PRIMARY KEY (provider_uuid, trait)
);
CREATE INDEX placement_provider_trait_trait ON placement_provider_trait (trait);
CREATE TABLE placement_provider_aggregate (
    provider_uuid {id} NOT NULL,
    aggregate_uuid {id} NOT NULL,
    PRIMARY KEY (provider_uuid, aggregate_uuid)
);
CREATE INDEX placement_provider_aggregate_agg ON placement_provider_aggregate (aggregate_uuid);
CREATE TABLE placement_consumer (
    uuid {id} PRIMARY KEY,
    project_id {id} NOT NULL,
    user_id {id} NOT NULL,
    generation {int} NOT NULL,
    created_at {int} NOT NULL,
    updated_at {int} NOT NULL
);
CREATE INDEX placement_consumer_project ON placement_consumer (project_id);
CREATE TABLE placement_allocation (
    provider_uuid {id} NOT NULL,
    consumer_uuid {id} NOT NULL,
    resource_class {name} NOT NULL,
    used {int} NOT NULL,
    PRIMARY KEY (consumer_uuid, provider_uuid, resource_class)
);
CREATE INDEX placement_allocation_provider ON placement_allocation (provider_uuid)",
};

/// Now, in Unix microseconds.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProviderRow {
    pub uuid: String,
    pub name: String,
    pub generation: i64,
    pub parent_uuid: Option<String>,
    pub root_uuid: String,
    pub updated_at: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConsumerRow {
    pub uuid: String,
    pub project_id: String,
    pub user_id: String,
    pub generation: i64,
}

/// One allocation line: `used` of `resource_class` on `provider_uuid` for `consumer_uuid`.
#[derive(Clone, Debug, PartialEq)]
pub struct AllocationRow {
    pub consumer_uuid: String,
    pub provider_uuid: String,
    pub resource_class: String,
    pub used: i64,
}

/// What one consumer's allocations become in an allocation write.
#[derive(Clone, Debug)]
pub struct ConsumerWrite {
    pub consumer_uuid: String,
    pub project_id: String,
    pub user_id: String,
    /// `None`: no consumer-generation check (before 1.28). `Some(None)`: the consumer must not exist yet.
    /// `Some(Some(g))`: it must exist at generation `g`.
    pub expected_generation: Option<Option<i64>>,
    /// provider uuid → class → amount. Empty: the consumer's allocations are removed.
    pub allocations: BTreeMap<String, BTreeMap<String, i64>>,
}

/// What an allocation write committed, as the snapshot cache needs it: the change counter's value after the write
/// (read inside its transaction, so it is this write's own), and each touched provider's generation, update time
/// and usage afterwards.
#[derive(Clone, Debug, PartialEq)]
pub struct AllocationsCommitted {
    pub counter: i64,
    pub providers: Vec<ProviderUsage>,
}

/// A provider's state after an allocation write touched it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderUsage {
    pub uuid: String,
    pub generation: i64,
    pub updated_at: i64,
    pub usages: BTreeMap<String, i64>,
}

fn provider_from_row(row: &sqlx::any::AnyRow) -> Result<ProviderRow, sqlx::Error> {
    Ok(ProviderRow {
        uuid: row.try_get("uuid")?,
        name: row.try_get("name")?,
        generation: row.try_get("generation")?,
        parent_uuid: row.try_get("parent_uuid")?,
        root_uuid: row.try_get("root_uuid")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn inventory_from_row(row: &sqlx::any::AnyRow) -> Result<Inventory, Error> {
    let ratio: String = row.try_get("allocation_ratio")?;
    Ok(Inventory {
        resource_class: row.try_get("resource_class")?,
        total: row.try_get("total")?,
        reserved: row.try_get("reserved")?,
        min_unit: row.try_get("min_unit")?,
        max_unit: row.try_get("max_unit")?,
        step_size: row.try_get("step_size")?,
        allocation_ratio: ratio.parse().map_err(|_| Error::Config(format!("stored allocation ratio '{ratio}'")))?,
    })
}

/// The placement datastore.
#[derive(Clone, Debug)]
pub struct Store {
    db: Database,
}

impl Store {
    pub fn new(db: Database) -> Self {
        Store { db }
    }

    pub async fn migrate(&self) -> Result<(), Error> {
        self.db.migrate("placement", MIGRATIONS).await?;
        Ok(())
    }

    pub async fn begin(&self) -> Result<db::Tx, Error> {
        Ok(self.db.begin().await?)
    }

    // ----- providers -----

    /// Inserts a provider; a duplicate name or uuid is a 409 as upstream words it.
    pub async fn provider_insert(&self, p: &ProviderRow) -> Result<(), Error> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        let r = self
            .db
            .query(
                "INSERT INTO placement_provider (uuid, name, generation, parent_uuid, root_uuid, created_at, \
                 updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&p.uuid)
            .bind(&p.name)
            .bind(p.generation)
            .bind(&p.parent_uuid)
            .bind(&p.root_uuid)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await;
        match r {
            Ok(_) => {
                bump_change(&self.db, &mut tx).await?;
                tx.commit().await?;
                Ok(())
            }
            Err(e) => {
                drop(tx);
                let e = db::Error::from(e);
                if e.is_unique_violation() {
                    let by_uuid = self.provider_get(&p.uuid).await?.is_some();
                    let what = if by_uuid { format!("uuid: {}", p.uuid) } else { format!("name: {}", p.name) };
                    Err(Error::conflict(
                        code::DUPLICATE_NAME,
                        format!("Conflicting resource provider {what} already exists."),
                    ))
                } else {
                    Err(e.into())
                }
            }
        }
    }

    pub async fn provider_get(&self, uuid: &str) -> Result<Option<ProviderRow>, Error> {
        let row = self
            .db
            .query(
                "SELECT uuid, name, generation, parent_uuid, root_uuid, updated_at FROM placement_provider \
                 WHERE uuid = ?",
            )
            .bind(uuid)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.as_ref().map(provider_from_row).transpose()?)
    }

    pub async fn provider_list(&self) -> Result<Vec<ProviderRow>, Error> {
        let rows = self
            .db
            .query(
                "SELECT uuid, name, generation, parent_uuid, root_uuid, updated_at FROM placement_provider \
                 ORDER BY created_at, uuid",
            )
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows.iter().map(provider_from_row).collect::<Result<_, _>>()?)
    }

    /// Renames / re-parents a provider at `generation` (bumping it).
    pub async fn provider_update(
        &self,
        uuid: &str,
        generation: i64,
        name: &str,
        parent_uuid: Option<&str>,
        root_uuid: &str,
    ) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        bump_generation(&self.db, &mut tx, uuid, generation).await?;
        let r = self
            .db
            .query("UPDATE placement_provider SET name = ?, parent_uuid = ?, root_uuid = ? WHERE uuid = ?")
            .bind(name)
            .bind(parent_uuid)
            .bind(root_uuid)
            .bind(uuid)
            .execute(&mut *tx)
            .await;
        if let Err(e) = r {
            let e = db::Error::from(e);
            return Err(if e.is_unique_violation() {
                Error::conflict(code::DUPLICATE_NAME, format!("Conflicting resource provider name: {name} already exists."))
            } else {
                e.into()
            });
        }
        bump_change(&self.db, &mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a provider with its inventories, traits and aggregates; 409 if it has allocations or children.
    pub async fn provider_delete(&self, uuid: &str) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        let children: i64 = self
            .db
            .query_scalar("SELECT COUNT(*) FROM placement_provider WHERE parent_uuid = ?")
            .bind(uuid)
            .fetch_one(&mut *tx)
            .await?;
        if children > 0 {
            return Err(Error::conflict(
                code::CANNOT_DELETE_PARENT,
                format!("Unable to delete parent resource provider {uuid}: It has child resource providers."),
            ));
        }
        let used: i64 = self
            .db
            .query_scalar("SELECT COUNT(*) FROM placement_allocation WHERE provider_uuid = ?")
            .bind(uuid)
            .fetch_one(&mut *tx)
            .await?;
        if used > 0 {
            return Err(Error::conflict(
                code::PROVIDER_INUSE,
                format!("Unable to delete resource provider {uuid}: Resource provider has allocations."),
            ));
        }
        for q in [
            "DELETE FROM placement_inventory WHERE provider_uuid = ?",
            "DELETE FROM placement_provider_trait WHERE provider_uuid = ?",
            "DELETE FROM placement_provider_aggregate WHERE provider_uuid = ?",
        ] {
            self.db.query(db::sqlx::AssertSqlSafe(q)).bind(uuid).execute(&mut *tx).await?;
        }
        let r = self.db.query("DELETE FROM placement_provider WHERE uuid = ?").bind(uuid).execute(&mut *tx).await?;
        if r.rows_affected() == 0 {
            return Err(provider_not_found(uuid));
        }
        bump_change(&self.db, &mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    // ----- inventories -----

    pub async fn inventories_get(&self, uuid: &str) -> Result<Vec<Inventory>, Error> {
        let rows = self
            .db
            .query(
                "SELECT resource_class, total, reserved, min_unit, max_unit, step_size, allocation_ratio \
                 FROM placement_inventory WHERE provider_uuid = ? ORDER BY resource_class",
            )
            .bind(uuid)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(inventory_from_row).collect()
    }

    /// Replaces a provider's whole inventory at `generation`. Removing a class that has allocations is a 409.
    pub async fn inventories_replace(&self, uuid: &str, generation: i64, inventories: &[Inventory]) -> Result<i64, Error> {
        let mut tx = self.begin().await?;
        let new_generation = bump_generation(&self.db, &mut tx, uuid, generation).await?;
        let used = usage_of_provider(&self.db, &mut tx, uuid).await?;
        for class in used.keys() {
            if !inventories.iter().any(|i| &i.resource_class == class) {
                return Err(Error::conflict(
                    code::INVENTORY_INUSE,
                    format!(
                        "update conflict: Inventory for '{class}' on resource provider '{uuid}' in use."
                    ),
                ));
            }
        }
        self.db.query("DELETE FROM placement_inventory WHERE provider_uuid = ?").bind(uuid).execute(&mut *tx).await?;
        for inv in inventories {
            if let Some(u) = used.get(&inv.resource_class)
                && *u > inv.capacity()
            {
                tracing::warn!(provider = uuid, class = %inv.resource_class, "resource provider is now over-capacity");
            }
            self.db
                .query(
                    "INSERT INTO placement_inventory (provider_uuid, resource_class, total, reserved, min_unit, \
                     max_unit, step_size, allocation_ratio) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(uuid)
                .bind(&inv.resource_class)
                .bind(inv.total)
                .bind(inv.reserved)
                .bind(inv.min_unit)
                .bind(inv.max_unit)
                .bind(inv.step_size)
                .bind(inv.allocation_ratio.to_string())
                .execute(&mut *tx)
                .await?;
        }
        bump_change(&self.db, &mut tx).await?;
        tx.commit().await?;
        Ok(new_generation)
    }

    // ----- custom resource classes and traits -----

    pub async fn custom_classes(&self) -> Result<Vec<String>, Error> {
        Ok(self
            .db
            .query_scalar("SELECT name FROM placement_resource_class ORDER BY name")
            .fetch_all(self.db.pool())
            .await?)
    }

    /// Inserts a custom class; returns false if it already existed.
    pub async fn custom_class_insert(&self, name: &str) -> Result<bool, Error> {
        insert_name(&self.db, "INSERT INTO placement_resource_class (name, created_at) VALUES (?, ?)", name).await
    }

    /// Deletes a custom class; 409 if inventories or allocations use it. Returns false if it did not exist.
    pub async fn custom_class_delete(&self, name: &str) -> Result<bool, Error> {
        let mut tx = self.begin().await?;
        let used: i64 = self
            .db
            .query_scalar(
                "SELECT (SELECT COUNT(*) FROM placement_inventory WHERE resource_class = ?) + \
                 (SELECT COUNT(*) FROM placement_allocation WHERE resource_class = ?)",
            )
            .bind(name)
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        if used > 0 {
            return Err(Error::conflict(
                code::UNDEFINED,
                format!("Unable to delete resource class {name}. Resource class is in use in inventory."),
            ));
        }
        let r = self.db.query("DELETE FROM placement_resource_class WHERE name = ?").bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn custom_traits(&self) -> Result<Vec<String>, Error> {
        Ok(self.db.query_scalar("SELECT name FROM placement_trait ORDER BY name").fetch_all(self.db.pool()).await?)
    }

    /// Inserts a custom trait; returns false if it already existed.
    pub async fn custom_trait_insert(&self, name: &str) -> Result<bool, Error> {
        insert_name(&self.db, "INSERT INTO placement_trait (name, created_at) VALUES (?, ?)", name).await
    }

    /// Deletes a custom trait; 409 if a provider has it. Returns false if it did not exist.
    pub async fn custom_trait_delete(&self, name: &str) -> Result<bool, Error> {
        let mut tx = self.begin().await?;
        let used: i64 = self
            .db
            .query_scalar("SELECT COUNT(*) FROM placement_provider_trait WHERE trait = ?")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        if used > 0 {
            return Err(Error::conflict(
                code::UNDEFINED,
                format!("The trait {name} is in use by a resource provider."),
            ));
        }
        let r = self.db.query("DELETE FROM placement_trait WHERE name = ?").bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn provider_traits(&self, uuid: &str) -> Result<Vec<String>, Error> {
        Ok(self
            .db
            .query_scalar("SELECT trait FROM placement_provider_trait WHERE provider_uuid = ? ORDER BY trait")
            .bind(uuid)
            .fetch_all(self.db.pool())
            .await?)
    }

    /// Replaces a provider's traits at `generation`; returns the new generation.
    pub async fn provider_traits_replace(&self, uuid: &str, generation: i64, traits: &BTreeSet<String>) -> Result<i64, Error> {
        let mut tx = self.begin().await?;
        let new_generation = bump_generation(&self.db, &mut tx, uuid, generation).await?;
        self.db.query("DELETE FROM placement_provider_trait WHERE provider_uuid = ?").bind(uuid).execute(&mut *tx).await?;
        for t in traits {
            self.db
                .query("INSERT INTO placement_provider_trait (provider_uuid, trait) VALUES (?, ?)")
                .bind(uuid)
                .bind(t)
                .execute(&mut *tx)
                .await?;
        }
        bump_change(&self.db, &mut tx).await?;
        tx.commit().await?;
        Ok(new_generation)
    }

    pub async fn provider_aggregates(&self, uuid: &str) -> Result<Vec<String>, Error> {
        Ok(self
            .db
            .query_scalar(
                "SELECT aggregate_uuid FROM placement_provider_aggregate WHERE provider_uuid = ? ORDER BY aggregate_uuid",
            )
            .bind(uuid)
            .fetch_all(self.db.pool())
            .await?)
    }

    /// Replaces a provider's aggregates, checking and bumping `generation` when given (1.19+); returns the
    /// provider's generation afterwards.
    pub async fn provider_aggregates_replace(
        &self,
        uuid: &str,
        generation: Option<i64>,
        aggregates: &BTreeSet<String>,
    ) -> Result<i64, Error> {
        let mut tx = self.begin().await?;
        let current = match generation {
            Some(g) => bump_generation(&self.db, &mut tx, uuid, g).await?,
            None => {
                let g: Option<i64> = self
                    .db
                    .query_scalar("SELECT generation FROM placement_provider WHERE uuid = ?")
                    .bind(uuid)
                    .fetch_optional(&mut *tx)
                    .await?;
                g.ok_or_else(|| provider_not_found(uuid))?
            }
        };
        self.db
            .query("DELETE FROM placement_provider_aggregate WHERE provider_uuid = ?")
            .bind(uuid)
            .execute(&mut *tx)
            .await?;
        for a in aggregates {
            self.db
                .query("INSERT INTO placement_provider_aggregate (provider_uuid, aggregate_uuid) VALUES (?, ?)")
                .bind(uuid)
                .bind(a)
                .execute(&mut *tx)
                .await?;
        }
        bump_change(&self.db, &mut tx).await?;
        tx.commit().await?;
        Ok(current)
    }

    // ----- consumers, allocations, usages -----

    pub async fn consumer_get(&self, uuid: &str) -> Result<Option<ConsumerRow>, Error> {
        let row = self
            .db
            .query("SELECT uuid, project_id, user_id, generation FROM placement_consumer WHERE uuid = ?")
            .bind(uuid)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(match row {
            Some(r) => Some(ConsumerRow {
                uuid: r.try_get("uuid")?,
                project_id: r.try_get("project_id")?,
                user_id: r.try_get("user_id")?,
                generation: r.try_get("generation")?,
            }),
            None => None,
        })
    }

    pub async fn allocations_of_consumer(&self, uuid: &str) -> Result<Vec<AllocationRow>, Error> {
        let rows = self
            .db
            .query(
                "SELECT consumer_uuid, provider_uuid, resource_class, used FROM placement_allocation \
                 WHERE consumer_uuid = ? ORDER BY provider_uuid, resource_class",
            )
            .bind(uuid)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(allocation_from_row).collect()
    }

    pub async fn allocations_on_provider(&self, uuid: &str) -> Result<Vec<AllocationRow>, Error> {
        let rows = self
            .db
            .query(
                "SELECT consumer_uuid, provider_uuid, resource_class, used FROM placement_allocation \
                 WHERE provider_uuid = ? ORDER BY consumer_uuid, resource_class",
            )
            .bind(uuid)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(allocation_from_row).collect()
    }

    /// Usage per class on one provider.
    pub async fn provider_usages(&self, uuid: &str) -> Result<BTreeMap<String, i64>, Error> {
        let mut conn = self.db.pool().acquire().await?;
        usage_of_provider(&self.db, &mut conn, uuid).await
    }

    /// Usage per class of a project's (and optionally one user's) consumers.
    pub async fn project_usages(&self, project_id: &str, user_id: Option<&str>) -> Result<BTreeMap<String, i64>, Error> {
        let rows = match user_id {
            Some(user) => {
                self.db
                    .query(
                        "SELECT a.resource_class, a.used FROM placement_allocation a JOIN placement_consumer c \
                         ON c.uuid = a.consumer_uuid WHERE c.project_id = ? AND c.user_id = ?",
                    )
                    .bind(project_id)
                    .bind(user)
                    .fetch_all(self.db.pool())
                    .await?
            }
            None => {
                self.db
                    .query(
                        "SELECT a.resource_class, a.used FROM placement_allocation a JOIN placement_consumer c \
                         ON c.uuid = a.consumer_uuid WHERE c.project_id = ?",
                    )
                    .bind(project_id)
                    .fetch_all(self.db.pool())
                    .await?
            }
        };
        let mut out = BTreeMap::new();
        for r in rows {
            *out.entry(r.try_get::<String, _>("resource_class")?).or_insert(0) += r.try_get::<i64, _>("used")?;
        }
        Ok(out)
    }

    /// Writes the allocations of several consumers atomically: consumer-generation checks, capacity checks
    /// against every touched provider's inventory (its other consumers' usage included), and a generation bump of
    /// every touched provider. Nothing is written unless everything passes.
    /// Returns every provider whose usage changed (those losing allocations included) with its state afterwards.
    pub async fn allocations_write(&self, writes: &[ConsumerWrite]) -> Result<AllocationsCommitted, Error> {
        let mut tx = self.begin().await?;
        let now = now_micros();
        let mut touched: BTreeMap<String, i64> = BTreeMap::new(); // provider → generation read
        for w in writes {
            let existing: Option<i64> = self
                .db
                .query_scalar("SELECT generation FROM placement_consumer WHERE uuid = ?")
                .bind(&w.consumer_uuid)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(expected) = w.expected_generation
                && expected != existing
            {
                let show = |g: Option<i64>| g.map_or("None".to_string(), |g| g.to_string());
                return Err(Error::conflict(
                    code::CONCURRENT_UPDATE,
                    format!(
                        "consumer generation conflict - expected {} but got {}",
                        show(expected),
                        show(existing)
                    ),
                ));
            }
            // Providers losing allocations change too. A consumer has allocations only while its row exists (both
            // are written here, together), so a new consumer has none to read or remove.
            let old: Vec<String> = if existing.is_some() {
                self.db
                    .query_scalar("SELECT DISTINCT provider_uuid FROM placement_allocation WHERE consumer_uuid = ?")
                    .bind(&w.consumer_uuid)
                    .fetch_all(&mut *tx)
                    .await?
            } else {
                Vec::new()
            };
            for p in old.into_iter().chain(w.allocations.keys().cloned()) {
                if let std::collections::btree_map::Entry::Vacant(slot) = touched.entry(p) {
                    let g: Option<i64> = self
                        .db
                        .query_scalar("SELECT generation FROM placement_provider WHERE uuid = ?")
                        .bind(slot.key())
                        .fetch_optional(&mut *tx)
                        .await?;
                    let g = g.ok_or_else(|| {
                        Error::BadRequest(format!(
                            "Unable to allocate inventory: Resource provider {} not found",
                            slot.key()
                        ))
                    })?;
                    slot.insert(g);
                }
            }
            if existing.is_some() {
                self.db
                    .query("DELETE FROM placement_allocation WHERE consumer_uuid = ?")
                    .bind(&w.consumer_uuid)
                    .execute(&mut *tx)
                    .await?;
            }
            match (existing, w.allocations.is_empty()) {
                (Some(_), true) => {
                    self.db.query("DELETE FROM placement_consumer WHERE uuid = ?").bind(&w.consumer_uuid).execute(&mut *tx).await?;
                }
                (Some(g), false) => {
                    let r = self
                        .db
                        .query(
                            "UPDATE placement_consumer SET generation = generation + 1, project_id = ?, user_id = ?, \
                             updated_at = ? WHERE uuid = ? AND generation = ?",
                        )
                        .bind(&w.project_id)
                        .bind(&w.user_id)
                        .bind(now)
                        .bind(&w.consumer_uuid)
                        .bind(g)
                        .execute(&mut *tx)
                        .await?;
                    if r.rows_affected() != 1 {
                        return Err(Error::conflict(code::CONCURRENT_UPDATE, "consumer generation conflict"));
                    }
                }
                (None, true) => {}
                (None, false) => {
                    let r = self
                        .db
                        .query(
                            "INSERT INTO placement_consumer (uuid, project_id, user_id, generation, created_at, \
                             updated_at) VALUES (?, ?, ?, 1, ?, ?)",
                        )
                        .bind(&w.consumer_uuid)
                        .bind(&w.project_id)
                        .bind(&w.user_id)
                        .bind(now)
                        .bind(now)
                        .execute(&mut *tx)
                        .await;
                    if let Err(e) = r {
                        let e = db::Error::from(e);
                        return Err(if e.is_unique_violation() {
                            Error::conflict(code::CONCURRENT_UPDATE, "consumer generation conflict")
                        } else {
                            e.into()
                        });
                    }
                }
            }
        }
        // Capacity checks, per touched provider, with every rewritten consumer's old allocations gone: one query
        // reads a provider's inventories with their usage, one statement inserts its allocations.
        let mut usages_after: HashMap<String, BTreeMap<String, i64>> = HashMap::new();
        for w in writes {
            for (provider, resources) in &w.allocations {
                let rows = self.db.query(inventory_with_usage_sql(self.db.backend())).bind(provider).fetch_all(&mut *tx).await?;
                let mut inventories: HashMap<String, Inventory> = HashMap::with_capacity(rows.len());
                let mut used: BTreeMap<String, i64> = BTreeMap::new();
                for r in &rows {
                    let inv = inventory_from_row(r)?;
                    let u: i64 = r.try_get("used")?;
                    if u > 0 {
                        used.insert(inv.resource_class.clone(), u);
                    }
                    inventories.insert(inv.resource_class.clone(), inv);
                }
                let mut after = used.clone();
                for (class, amount) in resources {
                    let inv = inventories.get(class).ok_or_else(|| {
                        Error::BadRequest(format!(
                            "Unable to allocate inventory: Inventory for '{class}' on resource provider \
                             '{provider}' invalid."
                        ))
                    })?;
                    if *amount < inv.min_unit || *amount > inv.max_unit || *amount % inv.step_size != 0 {
                        return Err(Error::BadRequest(format!(
                            "Unable to allocate inventory: Unable to allocate {amount} {class}: the amount must be \
                             between {} and {} in steps of {} on resource provider '{provider}'.",
                            inv.min_unit, inv.max_unit, inv.step_size
                        )));
                    }
                    let already = used.get(class).copied().unwrap_or(0);
                    if already + amount > inv.capacity() {
                        return Err(Error::conflict(
                            code::UNDEFINED,
                            format!(
                                "Unable to allocate inventory: Unable to create allocation for '{class}' on \
                                 resource provider '{provider}'. The requested amount would exceed the capacity."
                            ),
                        ));
                    }
                    *after.entry(class.clone()).or_insert(0) += amount;
                }
                if !resources.is_empty() {
                    let rows = vec!["(?, ?, ?, ?)"; resources.len()].join(", ");
                    // Only placeholders are spliced in.
                    let sql = format!(
                        "INSERT INTO placement_allocation (provider_uuid, consumer_uuid, resource_class, used) VALUES {rows}"
                    );
                    let mut q = self.db.query(db::sqlx::AssertSqlSafe(sql));
                    for (class, amount) in resources {
                        q = q.bind(provider).bind(&w.consumer_uuid).bind(class).bind(amount);
                    }
                    q.execute(&mut *tx).await?;
                }
                // Exact as of this insert; a later consumer of this write on the same provider rereads and
                // replaces it.
                usages_after.insert(provider.clone(), after);
            }
        }
        let mut providers = Vec::with_capacity(touched.len());
        for (provider, generation) in &touched {
            let now = now_micros();
            let generation = bump_generation_at(&self.db, &mut tx, provider, *generation, now).await?;
            // Providers that only lost allocations were not read above.
            let usages = match usages_after.remove(provider) {
                Some(u) => u,
                None => usage_of_provider(&self.db, &mut tx, provider).await?,
            };
            providers.push(ProviderUsage { uuid: provider.clone(), generation, updated_at: now, usages });
        }
        let counter = bump_change_returning(&self.db, &mut tx).await?;
        tx.commit().await?;
        Ok(AllocationsCommitted { counter, providers })
    }

    /// The change counter: it moves with every committed write that candidates can see.
    pub async fn change_counter(&self) -> Result<i64, Error> {
        Ok(self.db.query_scalar("SELECT counter FROM placement_change WHERE id = 1").fetch_one(self.db.pool()).await?)
    }

    /// One provider as candidates see it, or `None` if it does not exist.
    pub async fn provider_view(&self, uuid: &str) -> Result<Option<ProviderView>, Error> {
        let Some(row) = self.provider_get(uuid).await? else { return Ok(None) };
        let mut view = ProviderView::new(row);
        view.inventories = self.inventories_get(uuid).await?.into_iter().map(|i| (i.resource_class.clone(), i)).collect();
        view.usages = self.provider_usages(uuid).await?;
        view.traits = self.provider_traits(uuid).await?.into_iter().collect();
        view.aggregates = self.provider_aggregates(uuid).await?.into_iter().collect();
        Ok(Some(view))
    }

    /// Everything allocation candidates and provider filters read, in five queries.
    pub async fn snapshot(&self) -> Result<Snapshot, Error> {
        let mut providers: BTreeMap<String, ProviderView> = BTreeMap::new();
        for p in self.provider_list().await? {
            providers.insert(p.uuid.clone(), ProviderView::new(p));
        }
        let rows = self
            .db
            .query(
                "SELECT provider_uuid, resource_class, total, reserved, min_unit, max_unit, step_size, \
                 allocation_ratio FROM placement_inventory",
            )
            .fetch_all(self.db.pool())
            .await?;
        for r in &rows {
            let uuid: String = r.try_get("provider_uuid")?;
            let inv = inventory_from_row(r)?;
            if let Some(p) = providers.get_mut(&uuid) {
                p.inventories.insert(inv.resource_class.clone(), inv);
            }
        }
        let rows = self
            .db
            .query("SELECT provider_uuid, resource_class, used FROM placement_allocation")
            .fetch_all(self.db.pool())
            .await?;
        for r in &rows {
            let uuid: String = r.try_get("provider_uuid")?;
            if let Some(p) = providers.get_mut(&uuid) {
                *p.usages.entry(r.try_get("resource_class")?).or_insert(0) += r.try_get::<i64, _>("used")?;
            }
        }
        let rows = self.db.query("SELECT provider_uuid, trait FROM placement_provider_trait").fetch_all(self.db.pool()).await?;
        for r in &rows {
            let uuid: String = r.try_get("provider_uuid")?;
            if let Some(p) = providers.get_mut(&uuid) {
                p.traits.insert(r.try_get("trait")?);
            }
        }
        let rows = self
            .db
            .query("SELECT provider_uuid, aggregate_uuid FROM placement_provider_aggregate")
            .fetch_all(self.db.pool())
            .await?;
        for r in &rows {
            let uuid: String = r.try_get("provider_uuid")?;
            if let Some(p) = providers.get_mut(&uuid) {
                p.aggregates.insert(r.try_get("aggregate_uuid")?);
            }
        }
        Ok(Snapshot { providers: providers.into_values().collect() })
    }
}

fn allocation_from_row(r: &sqlx::any::AnyRow) -> Result<AllocationRow, Error> {
    Ok(AllocationRow {
        consumer_uuid: r.try_get("consumer_uuid")?,
        provider_uuid: r.try_get("provider_uuid")?,
        resource_class: r.try_get("resource_class")?,
        used: r.try_get("used")?,
    })
}

pub(crate) fn provider_not_found(uuid: &str) -> Error {
    Error::NotFound(format!("No resource provider with uuid {uuid} found"))
}

async fn insert_name(db: &Database, sql: &'static str, name: &str) -> Result<bool, Error> {
    match db.query(sql).bind(name).bind(now_micros()).execute(db.pool()).await {
        Ok(_) => Ok(true),
        Err(e) => {
            let e = db::Error::from(e);
            if e.is_unique_violation() { Ok(false) } else { Err(e.into()) }
        }
    }
}

/// Bumps a provider's generation if it is still `generation`; returns the new one. 404 if the provider is gone,
/// 409 `placement.concurrent_update` if it moved.
async fn bump_generation(db: &Database, conn: &mut AnyConnection, uuid: &str, generation: i64) -> Result<i64, Error> {
    bump_generation_at(db, conn, uuid, generation, now_micros()).await
}

/// [`bump_generation`] with the update time given.
async fn bump_generation_at(db: &Database, conn: &mut AnyConnection, uuid: &str, generation: i64, now: i64) -> Result<i64, Error> {
    let r = db
        .query("UPDATE placement_provider SET generation = generation + 1, updated_at = ? WHERE uuid = ? AND generation = ?")
        .bind(now)
        .bind(uuid)
        .bind(generation)
        .execute(&mut *conn)
        .await?;
    if r.rows_affected() == 1 {
        return Ok(generation + 1);
    }
    let exists: Option<i64> =
        db.query_scalar("SELECT generation FROM placement_provider WHERE uuid = ?").bind(uuid).fetch_optional(&mut *conn).await?;
    Err(match exists {
        Some(_) => Error::generation_conflict(uuid),
        None => provider_not_found(uuid),
    })
}

/// Bumps the change counter inside a writing transaction.
async fn bump_change(db: &Database, conn: &mut AnyConnection) -> Result<(), Error> {
    db.query("UPDATE placement_change SET counter = counter + 1 WHERE id = 1").execute(&mut *conn).await?;
    Ok(())
}

/// Bumps the change counter inside a writing transaction and returns its new value (in the same statement where
/// the database can: MariaDB's `UPDATE` has no `RETURNING`).
async fn bump_change_returning(db: &Database, conn: &mut AnyConnection) -> Result<i64, Error> {
    if db.backend() == Backend::MySql {
        bump_change(db, conn).await?;
        return Ok(db.query_scalar("SELECT counter FROM placement_change WHERE id = 1").fetch_one(&mut *conn).await?);
    }
    Ok(db
        .query_scalar("UPDATE placement_change SET counter = counter + 1 WHERE id = 1 RETURNING counter")
        .fetch_one(&mut *conn)
        .await?)
}

/// A provider's inventories, each with the amount allocated of its class (summed by the database, cast as in
/// [`usage_of_provider`]).
fn inventory_with_usage_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::MySql => {
            "SELECT i.resource_class, i.total, i.reserved, i.min_unit, i.max_unit, i.step_size, i.allocation_ratio, \
             CAST(COALESCE((SELECT SUM(a.used) FROM placement_allocation a WHERE a.provider_uuid = i.provider_uuid \
             AND a.resource_class = i.resource_class), 0) AS SIGNED) AS used \
             FROM placement_inventory i WHERE i.provider_uuid = ?"
        }
        Backend::Sqlite | Backend::Postgres => {
            "SELECT i.resource_class, i.total, i.reserved, i.min_unit, i.max_unit, i.step_size, i.allocation_ratio, \
             CAST(COALESCE((SELECT SUM(a.used) FROM placement_allocation a WHERE a.provider_uuid = i.provider_uuid \
             AND a.resource_class = i.resource_class), 0) AS BIGINT) AS used \
             FROM placement_inventory i WHERE i.provider_uuid = ?"
        }
    }
}

/// Usage per class on one provider, summed by the database: a provider holding many consumers' allocations (every
/// instance of a busy host) answers with one row per class, not one per allocation. The sum is cast to a 64-bit
/// integer, which every backend decodes (a bare `SUM` is `NUMERIC`/`DECIMAL` on PostgreSQL and MariaDB).
async fn usage_of_provider(db: &Database, conn: &mut AnyConnection, uuid: &str) -> Result<BTreeMap<String, i64>, Error> {
    let sql = match db.backend() {
        Backend::MySql => {
            "SELECT resource_class, CAST(SUM(used) AS SIGNED) AS used FROM placement_allocation WHERE provider_uuid = ? \
             GROUP BY resource_class"
        }
        Backend::Sqlite | Backend::Postgres => {
            "SELECT resource_class, CAST(SUM(used) AS BIGINT) AS used FROM placement_allocation WHERE provider_uuid = ? \
             GROUP BY resource_class"
        }
    };
    let rows = db.query(sql).bind(uuid).fetch_all(&mut *conn).await?;
    let mut out = BTreeMap::new();
    for r in rows {
        *out.entry(r.try_get::<String, _>("resource_class")?).or_insert(0) += r.try_get::<i64, _>("used")?;
    }
    Ok(out)
}
