//! Host aggregates and the availability zones they make: the rules of upstream's `AggregateAPI` (a host is in
//! one zone at most, a zone cannot change under instances, only empty aggregates are deleted), the mirror of each
//! aggregate's membership into placement (an aggregate of the host's resource providers, best effort as
//! upstream), and the zone of every compute host.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::{
    error::Error,
    service::Compute,
    store::{AggregateRow, aggregates::AZ_KEY},
};

pub fn aggregate_not_found(id: i64) -> Error {
    Error::NotFound(format!("Aggregate {id} could not be found."))
}

/// Which request an availability zone rule refused (upstream's `InvalidAggregateAction*` messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Add,
    Update,
    UpdateMeta,
}

fn invalid(action: Action, id: i64, reason: &str) -> Error {
    let m = match action {
        Action::Add => format!("Cannot add host to aggregate {id}. Reason: {reason}."),
        Action::Update => format!("Cannot update aggregate {id}. Reason: {reason}."),
        Action::UpdateMeta => format!("Cannot update metadata of aggregate {id}. Reason: {reason}."),
    };
    // Adding a host is a conflict; updates are bad requests (as upstream's API maps them).
    if action == Action::Add { Error::Conflict(m) } else { Error::BadRequest(m) }
}

/// A Python list of strings as upstream prints it in messages (`['a', 'b']`).
fn py_list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|i| format!("'{i}'")).collect::<Vec<_>>().join(", "))
}

impl Compute {
    /// Creates an aggregate, in availability zone `zone` when given.
    pub async fn aggregate_create(&self, name: &str, zone: Option<&str>) -> Result<AggregateRow, Error> {
        let mut metadata = BTreeMap::new();
        if let Some(z) = zone {
            metadata.insert(AZ_KEY.to_string(), z.to_string());
        }
        self.store()
            .aggregate_insert(name, &metadata)
            .await?
            .ok_or_else(|| Error::Conflict(format!("Aggregate {name} already exists.")))
    }

    pub async fn aggregates(&self) -> Result<Vec<AggregateRow>, Error> {
        self.store().aggregate_list().await
    }

    pub async fn aggregate(&self, id: i64) -> Result<AggregateRow, Error> {
        self.store().aggregate_get(id).await?.ok_or_else(|| aggregate_not_found(id))
    }

    /// Renames an aggregate and/or moves it to another zone (`Some(None)`: the API's `null`, refused as upstream).
    pub async fn aggregate_update(
        &self,
        id: i64,
        name: Option<&str>,
        zone: Option<Option<&str>>,
    ) -> Result<AggregateRow, Error> {
        let agg = self.aggregate(id).await?;
        if let Some(n) = name
            && !self.store().aggregate_rename(id, n).await?
        {
            return Err(Error::Conflict(format!("Aggregate {n} already exists.")));
        }
        if let Some(z) = zone {
            self.check_zone_change(&agg, z, &agg.hosts, Action::Update, true).await?;
            let changes = BTreeMap::from([(AZ_KEY.to_string(), z.map(str::to_string))]);
            self.store().aggregate_metadata_update(id, &changes).await?;
            self.zones_changed().await;
        }
        self.aggregate(id).await
    }

    /// Merges metadata into an aggregate (`None` removes a key).
    pub async fn aggregate_set_metadata(
        &self,
        id: i64,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<AggregateRow, Error> {
        let agg = self.aggregate(id).await?;
        if let Some(z) = changes.get(AZ_KEY) {
            self.check_zone_change(&agg, z.as_deref(), &agg.hosts, Action::UpdateMeta, true).await?;
        }
        self.store().aggregate_metadata_update(id, changes).await?;
        self.zones_changed().await;
        self.aggregate(id).await
    }

    /// Hosts changed zones: the scheduler rereads them on its next decision.
    async fn zones_changed(&self) {
        if let Ok(c) = self.conductor() {
            c.forget_hosts().await;
        }
    }

    /// Deletes an aggregate without hosts.
    pub async fn aggregate_delete(&self, id: i64) -> Result<(), Error> {
        let agg = self.aggregate(id).await?;
        if !agg.hosts.is_empty() {
            // Upstream's wording for this refusal.
            return Err(Error::BadRequest(format!(
                "Cannot remove host from aggregate {id}. Reason: Host aggregate is not empty."
            )));
        }
        if self.store().aggregate_delete(id).await? { Ok(()) } else { Err(aggregate_not_found(id)) }
    }

    /// Adds a compute host to an aggregate (and its resource providers to the placement aggregate).
    pub async fn aggregate_add_host(&self, id: i64, host: &str) -> Result<AggregateRow, Error> {
        if self.store().service_find(host, compute_rpc::COMPUTE_BINARY).await?.is_none() {
            return Err(Error::NotFound(format!("Compute host {host} could not be found.")));
        }
        let agg = self.aggregate(id).await?;
        if let Some(z) = agg.metadata.get(AZ_KEY) {
            self.check_zone_change(&agg, Some(z), &[host.to_string()], Action::Add, false).await?;
        }
        if !self.store().aggregate_host_add(id, host).await? {
            return Err(Error::Conflict(format!("Aggregate {id} already has host {host}.")));
        }
        self.mirror_to_placement(&agg.uuid, host, true).await;
        self.zones_changed().await;
        self.aggregate(id).await
    }

    /// Removes a host from an aggregate (and from the placement aggregate).
    pub async fn aggregate_remove_host(&self, id: i64, host: &str) -> Result<AggregateRow, Error> {
        let cannot = || Error::NotFound(format!("Cannot remove host {host} in aggregate {id}"));
        if self.store().service_find(host, compute_rpc::COMPUTE_BINARY).await?.is_none() {
            return Err(cannot());
        }
        let agg = self.store().aggregate_get(id).await?.ok_or_else(cannot)?;
        if !self.store().aggregate_host_remove(id, host).await? {
            return Err(cannot());
        }
        self.mirror_to_placement(&agg.uuid, host, false).await;
        self.zones_changed().await;
        self.aggregate(id).await
    }

    /// Upstream's `is_safe_to_update_az`: a zone must have a name, `hosts` may not be in another zone already,
    /// and (for updates) the zone of hosts with instances does not change.
    async fn check_zone_change(
        &self,
        agg: &AggregateRow,
        zone: Option<&str>,
        hosts: &[String],
        action: Action,
        check_instances: bool,
    ) -> Result<(), Error> {
        let Some(zone) = zone.filter(|z| !z.is_empty()) else {
            return Err(invalid(
                action,
                agg.id,
                &format!("Aggregate {} does not support empty named availability zone", agg.name),
            ));
        };
        let mut conflicting = Vec::new();
        for other in self.store().aggregate_list().await? {
            if other.id == agg.id || !other.hosts.iter().any(|h| hosts.contains(h)) {
                continue;
            }
            if let Some(z) = other.availability_zone()
                && z != zone
            {
                conflicting.push(z.to_string());
            }
        }
        if !conflicting.is_empty() {
            return Err(invalid(action, agg.id, &format!("One or more hosts already in availability zone(s) {}", py_list(&conflicting))));
        }
        if check_instances && agg.availability_zone() != Some(zone) {
            for host in hosts {
                let filter =
                    crate::store::InstanceFilter { host: Some(host.clone()), deleted: Some(false), ..Default::default() };
                if !self.store().instance_list(&filter).await?.is_empty() {
                    return Err(invalid(action, agg.id, "One or more hosts contain instances in this zone"));
                }
            }
        }
        Ok(())
    }

    /// Puts the resource providers of `host` in (or out of) the placement aggregate of the same uuid. Failures
    /// only warn, as upstream (an operator re-syncs).
    async fn mirror_to_placement(&self, aggregate_uuid: &str, host: &str, member: bool) {
        let Some(placement) = self.placement() else { return };
        let nodes = match self.store().node_list().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(%host, error = %e, "cannot list the host's compute nodes for placement aggregates");
                return;
            }
        };
        for node in nodes.iter().filter(|n| n.info.host == host) {
            if let Err(e) = placement.provider_aggregate(&node.uuid, aggregate_uuid, member).await {
                tracing::warn!(%host, aggregate = %aggregate_uuid, error = %e, "cannot mirror a host aggregate into placement");
            }
        }
    }

    // ----- availability zones -----

    /// The availability zone of every compute host: its aggregates' zone, else `default_availability_zone`.
    /// Hosts absent from the map are in the default zone.
    pub async fn host_zones(&self) -> Result<HostZones, Error> {
        Ok(HostZones {
            zones: self.store().aggregate_host_zones().await?,
            default: self.default_availability_zone(),
            metadata: HashMap::new(),
        })
    }

    /// The zones a server may be created in: those of enabled compute services.
    pub async fn available_zones(&self) -> Result<BTreeSet<String>, Error> {
        let zones = self.host_zones().await?;
        Ok(self
            .store()
            .service_list()
            .await?
            .iter()
            .filter(|s| s.binary == compute_rpc::COMPUTE_BINARY && !s.disabled)
            .map(|s| zones.of(&s.host).to_string())
            .collect())
    }
}

/// Compute hosts' availability zones, as [`Compute::host_zones`] reads them.
#[derive(Clone, Debug, Default)]
pub struct HostZones {
    pub zones: HashMap<String, String>,
    pub default: String,
    /// The metadata of each host's aggregates (key → values), where the scheduler's view was asked for
    /// ([`host_zones_and_metadata`]).
    pub metadata: HashMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl HostZones {
    /// The zone of a compute host.
    pub fn of(&self, host: &str) -> &str {
        self.zones.get(host).map(String::as_str).unwrap_or(&self.default)
    }
}

/// [`Compute::host_zones`] on a store, for the conductor.
pub async fn host_zones(store: &crate::store::Store, default: &str) -> Result<HostZones, Error> {
    Ok(HostZones { zones: store.aggregate_host_zones().await?, default: default.to_string(), metadata: HashMap::new() })
}

/// [`host_zones`] with every host's aggregate metadata, for the scheduler's view.
pub async fn host_zones_and_metadata(store: &crate::store::Store, default: &str) -> Result<HostZones, Error> {
    Ok(HostZones { metadata: store.aggregate_host_metadata().await?, ..host_zones(store, default).await? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_follow_upstream() {
        assert_eq!(py_list(&["a".into(), "b".into()]), "['a', 'b']");
        assert!(matches!(invalid(Action::Add, 3, "x"), Error::Conflict(m) if m == "Cannot add host to aggregate 3. Reason: x."));
        assert!(matches!(invalid(Action::UpdateMeta, 3, "x"), Error::BadRequest(m) if m.starts_with("Cannot update metadata")));
        let z = HostZones { zones: [("h1".to_string(), "az1".to_string())].into(), default: "nova".into(), ..Default::default() };
        assert_eq!((z.of("h1"), z.of("h2")), ("az1", "nova"));
    }
}
