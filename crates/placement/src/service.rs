//! The placement logic between the API and the store: validation that is not wire syntax, provider trees,
//! resource class and trait existence, and retries of allocation writes that lost a generation race. Reads for
//! candidates and provider listings go through the cached snapshot of `cache`; every write here reports what it
//! touched to that cache.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use db::Database;

use crate::{
    cache::{SnapshotCache, Touched},
    candidates::{self, Request, Snapshot},
    error::Error,
    model::{self, Inventory},
    store::{AllocationRow, ConsumerRow, ConsumerWrite, ProviderRow, Store, provider_not_found},
};

/// How many times an allocation write is retried when a provider's generation moved underneath it (upstream
/// retries likewise: clients never supply provider generations for allocations).
const ALLOCATION_RETRIES: usize = 10;

/// The placement service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Placement {
    store: Store,
    cache: SnapshotCache,
}

impl Placement {
    pub fn new(db: Database) -> Self {
        Placement { store: Store::new(db), cache: SnapshotCache::default() }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub async fn migrate(&self) -> Result<(), Error> {
        self.store.migrate().await
    }

    // ----- providers -----

    /// Creates a provider (generation 0), under `parent_uuid` if given.
    pub async fn provider_create(&self, uuid: Option<String>, name: &str, parent_uuid: Option<String>) -> Result<ProviderRow, Error> {
        validate_provider_name(name)?;
        let uuid = match uuid {
            Some(u) => normalize_uuid(&u).ok_or_else(|| Error::BadRequest(format!("JSON does not validate: '{u}' is not a 'uuid'")))?,
            None => uuid::Uuid::new_v4().to_string(),
        };
        let root_uuid = match &parent_uuid {
            Some(parent) => {
                let p = self.store.provider_get(parent).await?.ok_or_else(|| {
                    Error::BadRequest(format!("parent provider UUID {parent} does not exist."))
                })?;
                p.root_uuid
            }
            None => uuid.clone(),
        };
        let row = ProviderRow { uuid: uuid.clone(), name: name.to_string(), generation: 0, parent_uuid, root_uuid, updated_at: 0 };
        self.store.provider_insert(&row).await?;
        self.touched(&uuid).await;
        self.provider(&uuid).await
    }

    pub async fn provider(&self, uuid: &str) -> Result<ProviderRow, Error> {
        self.store.provider_get(uuid).await?.ok_or_else(|| provider_not_found(uuid))
    }

    /// Renames and/or re-parents a provider. Upstream allows un-parenting and moving only since later versions;
    /// here a parent may be set when there was none, and must otherwise stay.
    pub async fn provider_update(&self, uuid: &str, name: &str, parent_uuid: Option<String>, generation: Option<i64>) -> Result<ProviderRow, Error> {
        validate_provider_name(name)?;
        let current = self.provider(uuid).await?;
        let generation = generation.unwrap_or(current.generation);
        let (parent, root) = match (&current.parent_uuid, parent_uuid) {
            (Some(old), Some(new)) if *old != new => {
                return Err(Error::BadRequest("Unable to save resource provider: re-parenting a provider is not currently allowed.".into()));
            }
            (Some(old), None) => {
                return Err(Error::BadRequest(format!(
                    "Unable to save resource provider {uuid}: un-parenting a provider is not currently allowed (parent {old})."
                )));
            }
            (None, Some(new)) => {
                if new == uuid {
                    return Err(Error::BadRequest("Unable to save resource provider: creating loop in the provider tree is not allowed.".into()));
                }
                let p = self.store.provider_get(&new).await?.ok_or_else(|| Error::BadRequest(format!("parent provider UUID {new} does not exist.")))?;
                if p.root_uuid == current.uuid {
                    return Err(Error::BadRequest("Unable to save resource provider: creating loop in the provider tree is not allowed.".into()));
                }
                (Some(new), p.root_uuid)
            }
            (parent, _) => (parent.clone(), current.root_uuid.clone()),
        };
        self.store.provider_update(uuid, generation, name, parent.as_deref(), &root).await?;
        self.touched(uuid).await;
        self.provider(uuid).await
    }

    pub async fn provider_delete(&self, uuid: &str) -> Result<(), Error> {
        self.store.provider_delete(uuid).await?;
        self.touched(uuid).await;
        Ok(())
    }

    // ----- inventories -----

    /// Replaces the inventories of a provider at `generation`; every class must exist.
    pub async fn inventories_set(&self, uuid: &str, generation: i64, inventories: Vec<Inventory>) -> Result<i64, Error> {
        self.provider(uuid).await?;
        for inv in &inventories {
            self.require_class(&inv.resource_class).await?;
        }
        let generation = self.store.inventories_replace(uuid, generation, &inventories).await?;
        self.touched(uuid).await;
        Ok(generation)
    }

    /// Sets or replaces one class's inventory, keeping the others.
    pub async fn inventory_put(&self, uuid: &str, generation: i64, inventory: Inventory) -> Result<i64, Error> {
        let mut all = self.store.inventories_get(uuid).await?;
        all.retain(|i| i.resource_class != inventory.resource_class);
        all.push(inventory);
        self.inventories_set(uuid, generation, all).await
    }

    /// Removes one class's inventory; 404 if there is none.
    pub async fn inventory_delete(&self, uuid: &str, class: &str) -> Result<(), Error> {
        let p = self.provider(uuid).await?;
        let mut all = self.store.inventories_get(uuid).await?;
        let before = all.len();
        all.retain(|i| i.resource_class != class);
        if all.len() == before {
            return Err(Error::NotFound(format!("No inventory of class {class} found for delete")));
        }
        self.store.inventories_replace(uuid, p.generation, &all).await?;
        self.touched(uuid).await;
        Ok(())
    }

    // ----- resource classes and traits -----

    pub async fn class_exists(&self, name: &str) -> Result<bool, Error> {
        Ok(model::is_standard_class(name) || self.store.custom_classes().await?.iter().any(|c| c == name))
    }

    async fn require_class(&self, name: &str) -> Result<(), Error> {
        if self.class_exists(name).await? {
            Ok(())
        } else {
            Err(Error::BadRequest(format!("No such resource class {name}.")))
        }
    }

    /// Standard classes first, then custom ones.
    pub async fn classes(&self) -> Result<Vec<String>, Error> {
        let mut all: Vec<String> = model::STANDARD_CLASSES.iter().map(|s| s.to_string()).collect();
        all.extend(self.store.custom_classes().await?);
        Ok(all)
    }

    pub async fn traits(&self) -> Result<Vec<String>, Error> {
        let mut all: Vec<String> = model::STANDARD_TRAITS.iter().map(|s| s.to_string()).collect();
        all.extend(self.store.custom_traits().await?);
        all.sort();
        Ok(all)
    }

    pub async fn trait_exists(&self, name: &str) -> Result<bool, Error> {
        Ok(model::is_standard_trait(name) || self.store.custom_traits().await?.iter().any(|t| t == name))
    }

    /// Replaces a provider's traits; every trait must exist.
    pub async fn provider_traits_set(&self, uuid: &str, generation: i64, traits: BTreeSet<String>) -> Result<i64, Error> {
        self.provider(uuid).await?;
        let known: BTreeSet<String> = self.traits().await?.into_iter().collect();
        let missing: Vec<&str> = traits.iter().filter(|t| !known.contains(*t)).map(String::as_str).collect();
        if !missing.is_empty() {
            return Err(Error::BadRequest(format!("No such trait(s): {}.", missing.join(", "))));
        }
        let generation = self.store.provider_traits_replace(uuid, generation, &traits).await?;
        self.touched(uuid).await;
        Ok(generation)
    }

    /// Replaces a provider's aggregates, checking and bumping `generation` when given; returns the generation
    /// afterwards.
    pub async fn provider_aggregates_set(&self, uuid: &str, generation: Option<i64>, aggregates: &BTreeSet<String>) -> Result<i64, Error> {
        self.provider(uuid).await?;
        let generation = self.store.provider_aggregates_replace(uuid, generation, aggregates).await?;
        self.touched(uuid).await;
        Ok(generation)
    }

    /// Brings the cached snapshot up to date with a committed write to one provider.
    async fn touched(&self, uuid: &str) {
        self.cache.committed(&self.store, Touched::Providers(&[uuid.to_string()])).await;
    }

    // ----- allocations -----

    /// Writes allocations for several consumers at once, retrying provider-generation races.
    pub async fn allocations_write(&self, writes: Vec<ConsumerWrite>) -> Result<(), Error> {
        for w in &writes {
            for (provider, resources) in &w.allocations {
                if resources.is_empty() {
                    return Err(Error::BadRequest(format!(
                        "JSON does not validate: resources of provider {provider} must not be empty"
                    )));
                }
                for (class, amount) in resources {
                    if *amount < 1 {
                        return Err(Error::BadRequest(format!(
                            "JSON does not validate: {amount} is less than the minimum of 1 ({class})"
                        )));
                    }
                }
            }
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.store.allocations_write(&writes).await {
                Err(e) if e.is_provider_race() && attempt < ALLOCATION_RETRIES => {
                    tracing::debug!(attempt, "allocation write lost a provider generation race; retrying");
                }
                Err(e) => return Err(e),
                Ok(committed) => {
                    self.cache.committed(&self.store, Touched::Usages(&committed)).await;
                    return Ok(());
                }
            }
        }
    }

    pub async fn consumer(&self, uuid: &str) -> Result<Option<ConsumerRow>, Error> {
        self.store.consumer_get(uuid).await
    }

    pub async fn allocations_of_consumer(&self, uuid: &str) -> Result<Vec<AllocationRow>, Error> {
        self.store.allocations_of_consumer(uuid).await
    }

    pub async fn allocations_on_provider(&self, uuid: &str) -> Result<(ProviderRow, Vec<AllocationRow>), Error> {
        let p = self.provider(uuid).await?;
        Ok((p, self.store.allocations_on_provider(uuid).await?))
    }

    pub async fn provider_usages(&self, uuid: &str) -> Result<(ProviderRow, BTreeMap<String, i64>), Error> {
        let p = self.provider(uuid).await?;
        Ok((p, self.store.provider_usages(uuid).await?))
    }

    // ----- candidates -----

    /// Every provider as candidates see it, current as of the last write committed by any process.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, Error> {
        self.cache.get(&self.store).await
    }

    /// Allocation candidates: the matching providers (at most `limit`) and the snapshot they came from.
    pub async fn allocation_candidates(&self, request: &Request, limit: Option<usize>) -> Result<(Arc<Snapshot>, Vec<usize>), Error> {
        let snapshot = self.snapshot().await?;
        let picked = candidates::candidates(&snapshot, request, limit);
        Ok((snapshot, picked))
    }
}

/// Provider names: 1–200 characters.
fn validate_provider_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Error::BadRequest(format!(
            "JSON does not validate: '{name}' is {} for 'name' (1 to 200 characters)",
            if name.is_empty() { "too short" } else { "too long" }
        )));
    }
    Ok(())
}

/// A uuid in canonical dashed lower-case form, as upstream stores them.
pub fn normalize_uuid(s: &str) -> Option<String> {
    uuid::Uuid::parse_str(s).ok().map(|u| u.hyphenated().to_string())
}
