//! The in-memory [`Snapshot`] behind allocation candidates and provider listings.
//!
//! The snapshot is tagged with the value of the database's change counter (`placement_change`, bumped in the
//! transaction of every write candidates can see) that was read *before* it was loaded. Each read compares that
//! tag with the counter (one single-row query): equal means nothing was committed since, by this process or any
//! other sharing the database; different means a full reload. So a committed write is never missed, whoever made
//! it.
//!
//! Writes made through this process avoid the full reload: after committing, the writer reads the counter; if it is
//! exactly the cached tag + 1, the only change since the snapshot is its own, and it refreshes just the providers
//! it touched (from the database, after its commit) and advances the tag. Otherwise (another write slipped in) it
//! drops the snapshot and the next read reloads. Allocation writes, the hot path of scheduling, need no query for
//! this: the store hands back the counter value read inside their transaction (their own bump) and the touched
//! providers' generations and usages as the transaction left them.

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::{
    candidates::Snapshot,
    error::Error,
    store::{AllocationsCommitted, Store},
};

#[derive(Debug)]
struct Tagged {
    counter: i64,
    snapshot: Arc<Snapshot>,
}

/// A snapshot shared by every clone of the service.
#[derive(Clone, Debug, Default)]
pub(crate) struct SnapshotCache {
    inner: Arc<Mutex<Option<Tagged>>>,
}

/// What a local write changed.
pub(crate) enum Touched<'a> {
    /// Everything about these providers (created, deleted, inventories, traits, aggregates, renamed).
    Providers(&'a [String]),
    /// Only usages and generations of providers (allocation writes), as committed.
    Usages(&'a AllocationsCommitted),
}

impl SnapshotCache {
    /// The current snapshot: the cached one if the database's counter still matches it, else a fresh load.
    pub(crate) async fn get(&self, store: &Store) -> Result<Arc<Snapshot>, Error> {
        let counter = store.change_counter().await?;
        let mut guard = self.inner.lock().await;
        if let Some(t) = guard.as_ref()
            && t.counter >= counter
        {
            // `>`: a local writer advanced the tag after our read of the counter; its snapshot is newer still.
            return Ok(t.snapshot.clone());
        }
        // Read the counter again under the lock, before loading: a write committed during the load moves the
        // counter past the tag and forces the next read to reload.
        let counter = store.change_counter().await?;
        let snapshot = Arc::new(store.snapshot().await?);
        *guard = Some(Tagged { counter, snapshot: snapshot.clone() });
        Ok(snapshot)
    }

    /// Called after a local write committed: applies it to the snapshot when it is the only change since, else
    /// drops the snapshot. Never fails: on a database error the snapshot is dropped.
    pub(crate) async fn committed(&self, store: &Store, touched: Touched<'_>) {
        let mut guard = self.inner.lock().await;
        let Some(tagged) = guard.as_mut() else { return };
        let result = async {
            let counter = match &touched {
                Touched::Usages(c) => c.counter,
                Touched::Providers(_) => store.change_counter().await?,
            };
            if counter <= tagged.counter {
                return Ok(true); // a reload after the commit already holds it
            }
            if counter != tagged.counter + 1 {
                return Ok(false);
            }
            let snapshot = Arc::make_mut(&mut tagged.snapshot);
            match touched {
                Touched::Providers(uuids) => {
                    for uuid in uuids {
                        let view = store.provider_view(uuid).await?;
                        let at = snapshot.providers.binary_search_by(|p| p.row.uuid.as_str().cmp(uuid));
                        match (at, view) {
                            (Ok(i), Some(v)) => snapshot.providers[i] = v,
                            (Err(i), Some(v)) => snapshot.providers.insert(i, v),
                            (Ok(i), None) => {
                                snapshot.providers.remove(i);
                            }
                            (Err(_), None) => {}
                        }
                    }
                }
                Touched::Usages(committed) => {
                    for after in &committed.providers {
                        let Ok(i) = snapshot.providers.binary_search_by(|p| p.row.uuid.as_str().cmp(&after.uuid)) else {
                            return Ok(false);
                        };
                        let p = &mut snapshot.providers[i];
                        p.row.generation = after.generation;
                        p.row.updated_at = after.updated_at;
                        p.usages = after.usages.clone();
                    }
                }
            }
            tagged.counter = counter;
            Ok::<bool, Error>(true)
        }
        .await;
        match result {
            Ok(true) => {}
            Ok(false) => *guard = None,
            Err(e) => {
                tracing::warn!(error = %e, "placement snapshot refresh failed; dropping the cached snapshot");
                *guard = None;
            }
        }
    }
}
