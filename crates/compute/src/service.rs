//! The compute logic between the API and the store: flavor visibility (public flavors, private ones shared with
//! the caller's project), flavor creation rules, extra specs, flavor access, and key pairs per user.

use std::collections::BTreeMap;

use db::Database;

use crate::{
    conductor::{Conductor, ConductorSettings},
    error::Error,
    placement::PlacementClient,
    keys,
    store::{FlavorRow, KeypairRow, Store},
};

/// The compute service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Compute {
    store: Store,
    /// Present where servers can be built (a bus and placement are configured).
    conductor: Option<Conductor>,
    /// The placement client of the conductor, for what the API mirrors there (host aggregates).
    placement: Option<PlacementClient>,
}

/// Who is looking at flavors: admins see every flavor; others see public ones and private ones their project was
/// given access to, never disabled ones (as upstream).
#[derive(Clone, Debug)]
pub struct Viewer {
    pub admin: bool,
    pub project_id: Option<String>,
}

/// Filters of a flavor list.
#[derive(Clone, Debug, Default)]
pub struct FlavorFilter {
    /// `Some(true)`: public (and, for a project, shared with it); `Some(false)`: private only; `None`: both.
    pub is_public: Option<bool>,
    pub min_ram: Option<i64>,
    pub min_disk: Option<i64>,
}

/// A flavor to create; `id` `None` means a generated uuid.
#[derive(Clone, Debug)]
pub struct NewFlavor {
    pub id: Option<String>,
    pub name: String,
    pub memory_mb: i64,
    pub vcpus: i64,
    pub root_gb: i64,
    pub ephemeral_gb: i64,
    pub swap: i64,
    pub rxtx_factor: f64,
    pub is_public: bool,
    pub description: Option<String>,
}

/// A key pair as created: the private key is only known when the service generated it.
#[derive(Clone, Debug)]
pub struct CreatedKeypair {
    pub keypair: KeypairRow,
    pub private_key: Option<String>,
}

pub fn flavor_not_found(id: &str) -> Error {
    Error::NotFound(format!("Flavor {id} could not be found."))
}

impl Compute {
    pub fn new(db: Database) -> Self {
        Compute { store: Store::new(db), conductor: None, placement: None }
    }

    /// A compute service that builds servers: its conductor talks to agents over `bus` and to `placement`.
    pub fn with_conductor(
        db: Database,
        bus: bus::Bus,
        placement: PlacementClient,
        network: Option<crate::network::NetworkClient>,
        volume: Option<crate::volume::VolumeClient>,
        settings: ConductorSettings,
    ) -> Self {
        let store = Store::new(db);
        let conductor = Conductor::new(store.clone(), bus, placement.clone(), network, volume, settings);
        Compute { store, conductor: Some(conductor), placement: Some(placement) }
    }

    /// The conductor, or 503 where this process cannot build servers.
    pub fn conductor(&self) -> Result<&Conductor, Error> {
        self.conductor.as_ref().ok_or_else(|| Error::Unavailable("Servers cannot be managed by this compute API: it has no conductor.".into()))
    }

    /// The network service's client, where this process has a conductor and a network service is configured.
    pub fn network(&self) -> Option<&crate::network::NetworkClient> {
        self.conductor.as_ref().and_then(Conductor::network)
    }

    /// The block storage service's client, where one is configured.
    pub fn volume(&self) -> Option<&crate::volume::VolumeClient> {
        self.conductor.as_ref().and_then(Conductor::volume)
    }

    /// The placement client, where this process has a conductor.
    pub fn placement(&self) -> Option<&PlacementClient> {
        self.placement.as_ref()
    }

    /// The zone of compute hosts in no aggregate zone (`default_availability_zone`).
    pub fn default_availability_zone(&self) -> String {
        self.conductor.as_ref().map(|c| c.settings().default_availability_zone.clone()).unwrap_or_else(|| "nova".into())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Creates or upgrades the schema; the first migration also creates the default flavors.
    pub async fn migrate(&self) -> Result<(), Error> {
        self.store.migrate().await
    }

    // ----- flavors -----

    pub async fn flavor_create(&self, new: NewFlavor) -> Result<FlavorRow, Error> {
        let flavorid = new.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let row = FlavorRow {
            flavorid: flavorid.clone(),
            name: new.name.clone(),
            memory_mb: new.memory_mb,
            vcpus: new.vcpus,
            root_gb: new.root_gb,
            ephemeral_gb: new.ephemeral_gb,
            swap: new.swap,
            rxtx_factor: new.rxtx_factor,
            disabled: false,
            is_public: new.is_public,
            description: new.description,
            created_at: chrono::Utc::now().timestamp(),
        };
        if self.store.flavor_insert(&row).await? {
            return Ok(row);
        }
        if self.store.flavor_get(&flavorid).await?.is_some() {
            Err(Error::Conflict(format!("Flavor with ID {flavorid} already exists.")))
        } else {
            Err(Error::Conflict(format!("Flavor with name {} already exists.", new.name)))
        }
    }

    fn visible(viewer: &Viewer, f: &FlavorRow, shared: &[String]) -> bool {
        viewer.admin || (!f.disabled && (f.is_public || shared.contains(&f.flavorid)))
    }

    async fn shared_with(&self, viewer: &Viewer) -> Result<Vec<String>, Error> {
        match &viewer.project_id {
            Some(p) => self.store.access_flavors_of(p).await,
            None => Ok(Vec::new()),
        }
    }

    /// The flavors `viewer` may see that match `filter`, ordered by flavor id.
    pub async fn flavors(&self, viewer: &Viewer, filter: &FlavorFilter) -> Result<Vec<FlavorRow>, Error> {
        let shared = self.shared_with(viewer).await?;
        let all = self.store.flavor_list().await?;
        Ok(all
            .into_iter()
            .filter(|f| Self::visible(viewer, f, &shared))
            .filter(|f| match filter.is_public {
                None => true,
                Some(true) => f.is_public || shared.contains(&f.flavorid),
                Some(false) => !f.is_public,
            })
            .filter(|f| filter.min_ram.is_none_or(|m| f.memory_mb >= m))
            .filter(|f| filter.min_disk.is_none_or(|m| f.root_gb >= m))
            .collect())
    }

    /// One flavor, if `viewer` may see it (404 otherwise, as upstream).
    pub async fn flavor(&self, viewer: &Viewer, id: &str) -> Result<FlavorRow, Error> {
        let f = self.store.flavor_get(id).await?.ok_or_else(|| flavor_not_found(id))?;
        let shared = if viewer.admin || f.is_public { Vec::new() } else { self.shared_with(viewer).await? };
        if Self::visible(viewer, &f, &shared) { Ok(f) } else { Err(flavor_not_found(id)) }
    }

    /// The copy of a flavor an instance keeps (with its extra specs; none when they cannot be read).
    pub async fn flavor_spec(&self, f: &FlavorRow) -> compute_rpc::FlavorSpec {
        compute_rpc::FlavorSpec {
            flavorid: f.flavorid.clone(),
            name: f.name.clone(),
            vcpus: f.vcpus,
            memory_mb: f.memory_mb,
            root_gb: f.root_gb,
            ephemeral_gb: f.ephemeral_gb,
            swap: f.swap,
            extra_specs: self.extra_specs(&f.flavorid).await.unwrap_or_default(),
        }
    }

    pub async fn flavor_delete(&self, id: &str) -> Result<(), Error> {
        if self.store.flavor_delete(id).await? { Ok(()) } else { Err(flavor_not_found(id)) }
    }

    /// Sets a flavor's description (2.55), the only thing of a flavor that changes.
    pub async fn flavor_update(&self, id: &str, description: Option<&str>) -> Result<FlavorRow, Error> {
        if !self.store.flavor_set_description(id, description).await? {
            return Err(flavor_not_found(id));
        }
        self.existing(id).await
    }

    async fn existing(&self, id: &str) -> Result<FlavorRow, Error> {
        self.store.flavor_get(id).await?.ok_or_else(|| flavor_not_found(id))
    }

    pub async fn extra_specs(&self, id: &str) -> Result<BTreeMap<String, String>, Error> {
        self.existing(id).await?;
        self.store.extra_specs(id).await
    }

    pub async fn extra_spec(&self, id: &str, key: &str) -> Result<String, Error> {
        self.extra_specs(id)
            .await?
            .remove(key)
            .ok_or_else(|| Error::NotFound(format!("Flavor {id} has no extra specs with key {key}.")))
    }

    pub async fn extra_specs_set(&self, id: &str, specs: &BTreeMap<String, String>) -> Result<(), Error> {
        self.existing(id).await?;
        self.store.extra_specs_set(id, specs).await
    }

    pub async fn extra_spec_delete(&self, id: &str, key: &str) -> Result<(), Error> {
        self.existing(id).await?;
        if self.store.extra_spec_delete(id, key).await? {
            Ok(())
        } else {
            Err(Error::NotFound(format!("Flavor {id} has no extra specs with key {key}.")))
        }
    }

    /// Projects with access to a private flavor; public flavors have no access list.
    pub async fn access_list(&self, id: &str) -> Result<Vec<String>, Error> {
        let f = self.existing(id).await?;
        if f.is_public {
            return Err(Error::NotFound("Access list not available for public flavors.".into()));
        }
        self.store.access_list(id).await
    }

    pub async fn access_add(&self, id: &str, project_id: &str) -> Result<Vec<String>, Error> {
        let f = self.existing(id).await?;
        if f.is_public {
            return Err(Error::Conflict("Can not add access to a public flavor.".into()));
        }
        if !self.store.access_add(id, project_id).await? {
            return Err(Error::Conflict(format!(
                "Flavor access already exists for flavor {id} and project {project_id} combination."
            )));
        }
        self.store.access_list(id).await
    }

    pub async fn access_remove(&self, id: &str, project_id: &str) -> Result<Vec<String>, Error> {
        self.existing(id).await?;
        if !self.store.access_remove(id, project_id).await? {
            return Err(Error::NotFound(format!("Flavor access not found for {id} / {project_id} combination.")));
        }
        self.store.access_list(id).await
    }

    // ----- keypairs -----

    /// Imports `public_key` (validated, fingerprinted) or, without one, generates a key pair for `user_id`, within
    /// the user's `key_pairs` quota in `project_id`.
    pub async fn keypair_create(
        &self,
        project_id: &str,
        user_id: &str,
        name: &str,
        key_type: &str,
        public_key: Option<&str>,
    ) -> Result<CreatedKeypair, Error> {
        validate_keypair_name(name)?;
        if !self.quota_check(project_id, user_id, &[("key_pairs", 1)]).await?.is_empty() {
            return Err(Error::Forbidden("Maximum number of key pairs exceeded".into()));
        }
        let x509 = key_type == "x509";
        let (public_key, fingerprint, private_key) = match public_key {
            Some(pk) if x509 => (pk.trim().to_string(), keys::x509_fingerprint(pk)?, None),
            Some(pk) => (pk.trim().to_string(), keys::ssh_fingerprint(pk)?, None),
            None => {
                let g = if x509 { keys::generate_x509(name)? } else { keys::generate(name)? };
                (g.public_key, g.fingerprint, Some(g.private_key))
            }
        };
        let row = KeypairRow {
            id: 0,
            user_id: user_id.to_string(),
            name: name.to_string(),
            key_type: key_type.to_string(),
            public_key,
            fingerprint,
            created_at: chrono::Utc::now().timestamp(),
        };
        let keypair = self
            .store
            .keypair_insert(&row)
            .await?
            .ok_or_else(|| Error::Conflict(format!("Key pair '{name}' already exists.")))?;
        Ok(CreatedKeypair { keypair, private_key })
    }

    pub async fn keypairs(&self, user_id: &str) -> Result<Vec<KeypairRow>, Error> {
        self.store.keypair_list(user_id).await
    }

    pub async fn keypair(&self, user_id: &str, name: &str) -> Result<KeypairRow, Error> {
        self.store.keypair_get(user_id, name).await?.ok_or_else(|| keypair_not_found(user_id, name))
    }

    pub async fn keypair_delete(&self, user_id: &str, name: &str) -> Result<(), Error> {
        if self.store.keypair_delete(user_id, name).await? { Ok(()) } else { Err(keypair_not_found(user_id, name)) }
    }
}

fn keypair_not_found(user_id: &str, name: &str) -> Error {
    Error::NotFound(format!("Keypair {name} not found for user {user_id}"))
}

/// Upstream's rules before 2.92: 1–255 characters of letters, digits, `_`, `-` and space.
pub fn validate_keypair_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.chars().count() > 255 {
        return Err(Error::BadRequest(
            "Keypair data is invalid: Keypair name must be string and between 1 and 255 characters long".into(),
        ));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ' ')) {
        return Err(Error::BadRequest("Keypair data is invalid: Keypair name contains unsafe characters".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keypair_names() {
        assert!(validate_keypair_name("my key_1-a").is_ok());
        assert!(validate_keypair_name("").is_err());
        assert!(validate_keypair_name(&"a".repeat(256)).is_err());
        assert!(validate_keypair_name("a/b").is_err());
        assert!(validate_keypair_name("é").is_err());
    }
}
