//! The conductor: drives builds, actions and deletes, and is the only writer of instance state. It serves
//! [`compute_rpc::CONDUCTOR_TOPIC`] for the agents (registration, heartbeats, resource audits, instance updates,
//! action events, build failures, terminations) and sends the agents their work on
//! [`compute_rpc::COMPUTE_TOPIC`].
//!
//! A build: allocation candidates from placement (the pre-filter) → host states from the agents' node reports →
//! the scheduler's filters and weighers → an atomic claim of the allocation in placement (the next host on a
//! conflict) → host recorded on the instance (only if it is still `scheduling`: a delete that came first wins and
//! the claim is freed) → `BuildAndRunInstance` cast to the host's agent. A failed spawn comes back as
//! `BuildFailed` and is retried on the alternates, up to `max_attempts` hosts in all.

mod volumes;

use std::{collections::HashMap, sync::Arc, time::Duration};

use bus::{Bus, Dispatcher, RemoteError, ServerHandle, Target};
use compute_rpc::{
    ActionEvent, BuildAndRunInstance, BuildFailed, COMPUTE_BINARY, COMPUTE_TOPIC, CONDUCTOR_TOPIC, EventPhase,
    GetConsoleOutput, Heartbeat, InstanceAction, InstanceSpec, InstanceTerminated, InstanceUpdate, NodeRegistered,
    PowerState, RegisterNode, ReportResources, TerminateInstance, task_state, vm_state,
};
use scheduler::{HostState, RequestSpec, Scheduler};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    error::Error,
    network::{NetworkClient, PortOwner},
    placement::{Candidate, PlacementClient, Resources},
    store::{InstanceRow, NodeRow, ServiceRow, Store, instances::Value},
};

/// The conductor's tunables, with upstream's defaults.
#[derive(Clone, Debug)]
pub struct ConductorSettings {
    /// A service whose last heartbeat is older than this is down (`[DEFAULT] service_down_time`, 60 s).
    pub service_down_time: Duration,
    /// Hosts tried per build, the first included (`[scheduler] max_attempts`, 3).
    pub max_attempts: usize,
    /// Allocation candidates asked of placement per decision (`[scheduler] max_placement_results`, 1000).
    pub max_placement_results: usize,
    /// `[filter_scheduler] host_subset_size`.
    pub host_subset_size: usize,
    /// `[filter_scheduler] enabled_filters` and the weighers' multipliers (its `host_subset_size` is the one
    /// above).
    pub scheduler: scheduler::SchedulerConfig,
    /// The zone of hosts in no zone (`[DEFAULT] default_availability_zone`, `nova`).
    pub default_availability_zone: String,
    /// How long to wait for an agent's answer to a call.
    pub call_timeout: Duration,
    /// The host this conductor reports its `nova-conductor` service on (this machine's name by default).
    pub host: String,
    /// `[DEFAULT] shelved_offload_time`: seconds a shelved instance keeps its host before it is offloaded; 0
    /// offloads at once, -1 never.
    pub shelved_offload_time: i64,
}

impl Default for ConductorSettings {
    fn default() -> Self {
        ConductorSettings {
            service_down_time: Duration::from_secs(60),
            max_attempts: 3,
            max_placement_results: 1000,
            host_subset_size: 1,
            scheduler: scheduler::SchedulerConfig::default(),
            default_availability_zone: "nova".into(),
            call_timeout: Duration::from_secs(60),
            host: crate::services::hostname(),
            shelved_offload_time: 0,
        }
    }
}

/// Cheap to clone.
#[derive(Clone)]
pub struct Conductor {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    bus: Bus,
    placement: PlacementClient,
    /// The network service, where one is configured: ports are made and bound in the `networking` task state.
    network: Option<NetworkClient>,
    volume: Option<crate::volume::VolumeClient>,
    settings: ConductorSettings,
    /// Compute nodes and services by uuid, as the scheduler reads them: refreshed when older than
    /// [`HOST_CACHE_TTL`] or after a registration (upstream's host manager caches them likewise). A refresh
    /// rereads only the rows changed since the last one (see [`Conductor::hosts`]).
    hosts: tokio::sync::Mutex<Option<HostCache>>,
    /// The image service with the service's credentials: shelved instances' images are removed through it.
    images: std::sync::OnceLock<ServiceImages>,
}

/// The image service as the conductor reaches it, with its own credentials.
pub struct ServiceImages {
    pub client: crate::images::ImageClient,
    pub session: Arc<auth::HttpValidator>,
}

impl ServiceImages {
    /// Deletes an image as the service; a missing image is not an error.
    async fn delete(&self, id: &str) -> Result<(), Error> {
        let token = self.session.service_token(None).await.map_err(|e| Error::Unavailable(e.to_string()))?;
        self.client.delete(&token, id).await.map(|_| ())
    }
}

struct HostCache {
    /// When the cache was last brought up to date; `None` after [`Conductor::forget_hosts`].
    refreshed: Option<std::time::Instant>,
    /// When every row was last read.
    full_load: std::time::Instant,
    /// The newest `updated_at` (unix µs) of the rows read.
    newest: i64,
    nodes: Arc<HashMap<String, NodeRow>>,
    services: Arc<HashMap<String, ServiceRow>>,
    zones: Arc<crate::aggregates::HostZones>,
}

/// Nodes and services by uuid, and each host's zone.
type HostView = (Arc<HashMap<String, NodeRow>>, Arc<HashMap<String, ServiceRow>>, Arc<crate::aggregates::HostZones>);

/// How stale the scheduler's view of nodes and services may get (heartbeats, enable/disable, audits).
const HOST_CACHE_TTL: Duration = Duration::from_secs(1);
/// A refresh rereads the rows whose `updated_at` is at most this much older than the newest one it has seen
/// (µs): a row is stamped before its transaction commits, and other processes' clocks may differ a little.
const HOST_CHANGE_SLACK_US: i64 = 5_000_000;
/// Every row is reread at least this often, whatever the refreshes found.
const HOST_FULL_RELOAD: Duration = Duration::from_secs(60);

/// What a refresh of the host cache read: the rows changed since the cache's newest one, and how many rows
/// there are now.
struct HostChanges {
    nodes: Vec<NodeRow>,
    services: Vec<ServiceRow>,
    node_count: i64,
    service_count: i64,
}

impl HostChanges {
    /// The newest `updated_at` among the changed rows (0 when none).
    fn newest(&self) -> i64 {
        self.nodes.iter().map(|n| n.updated_at).chain(self.services.iter().map(|s| s.updated_at)).max().unwrap_or(0)
    }

    /// Puts the changed rows into the cached maps. `false` when the counts then differ from the database's: rows
    /// were deleted since (or changed without being seen), and only a full reload is right.
    fn apply(self, nodes: &mut HashMap<String, NodeRow>, services: &mut HashMap<String, ServiceRow>) -> bool {
        for n in self.nodes {
            nodes.insert(n.uuid.clone(), n);
        }
        for s in self.services {
            services.insert(s.uuid.clone(), s);
        }
        nodes.len() as i64 == self.node_count && services.len() as i64 == self.service_count
    }
}

impl std::fmt::Debug for Conductor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conductor").field("settings", &self.inner.settings).finish_non_exhaustive()
    }
}

/// The system metadata key of a shelved instance's image, and all the keys a shelve records (upstream's).
pub const SHELVED_IMAGE: &str = "shelved_image_id";
pub const SHELVE_KEYS: [&str; 3] = ["shelved_at", "shelved_image_id", "shelved_host"];

/// A host the scheduler picked, kept on the instance for reschedules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    pub host: String,
    pub node: String,
    pub provider_uuid: String,
}

/// The decisions of one request so far (see [`Conductor::schedule_next`]).
pub struct Batch {
    prepared: Option<Prepared>,
    scheduler: Scheduler,
}

/// The candidates of a request as the scheduler sees them, kept up to date with the batch's own claims.
struct Prepared {
    spec: RequestSpec,
    /// What each instance claims.
    resources: crate::placement::Resources,
    states: Vec<HostState>,
    /// Per candidate provider: class → (capacity, used), from placement's summaries plus the batch's claims.
    room: HashMap<String, std::collections::BTreeMap<String, (i64, i64)>>,
    /// An anti-affinity group's `max_server_per_host` and the hosts of its members (one entry per member).
    max_per_host: Option<(i64, Vec<String>)>,
}

impl Prepared {
    /// Counts a claim on `sel` against its host: usage, instance count, the group's hosts.
    fn consume(&mut self, sel: &Selection) {
        let amount = |class: &str| self.resources.get(class).copied().unwrap_or(0);
        let (vcpu, ram, disk) = (amount("VCPU"), amount("MEMORY_MB"), amount("DISK_GB"));
        if let Some(h) = self.states.iter_mut().find(|h| h.provider_uuid == sel.provider_uuid) {
            h.vcpus_used += vcpu;
            h.memory_mb_used += ram;
            h.disk_gb_used += disk;
            h.num_instances += 1;
        }
        if let Some(room) = self.room.get_mut(&sel.provider_uuid) {
            for (class, n) in &self.resources {
                if let Some(r) = room.get_mut(class) {
                    r.1 += n;
                }
            }
        }
        if self.spec.group_policy.is_some() {
            self.spec.group_hosts.push(sel.host.clone());
        }
        if let Some((_, members)) = &mut self.max_per_host {
            members.push(sel.host.clone());
        }
        // Only the chosen node's room and its host's member count changed.
        let (full_node, full_host) = (!self.fits(&sel.provider_uuid), self.is_full_for_group(&sel.host));
        if full_node || full_host {
            self.states.retain(|h| !(full_node && h.provider_uuid == sel.provider_uuid || full_host && h.host == sel.host));
        }
    }

    /// Drops a host placement refused.
    fn forget(&mut self, provider_uuid: &str) {
        self.states.retain(|h| h.provider_uuid != provider_uuid);
    }

    /// Drops the hosts another instance of the request no longer fits: out of room by placement's summary, or
    /// holding `max_server_per_host` members of the group already.
    fn drop_full_hosts(&mut self) {
        let keep: Vec<bool> = self.states.iter().map(|h| self.fits(&h.provider_uuid) && !self.is_full_for_group(&h.host)).collect();
        let mut keep = keep.into_iter();
        self.states.retain(|_| keep.next().unwrap_or(false));
    }

    /// Another instance fits the provider's room.
    fn fits(&self, provider_uuid: &str) -> bool {
        self.room.get(provider_uuid).is_none_or(|r| {
            self.resources.iter().all(|(class, n)| r.get(class).is_none_or(|(capacity, used)| used + n <= *capacity))
        })
    }

    /// The host holds `max_server_per_host` members of the group already.
    fn is_full_for_group(&self, host: &str) -> bool {
        self.max_per_host.as_ref().is_some_and(|(max, members)| members.iter().filter(|m| *m == host).count() as i64 >= *max)
    }
}

/// What the conductor keeps on an instance while it builds (`InstanceRow::scheduling`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scheduling {
    pub request_id: String,
    pub attempts: usize,
    pub alternates: Vec<Selection>,
}

fn remote(e: Error) -> RemoteError {
    RemoteError::new("ConductorError", e.to_string())
}

/// Nova's fault record.
pub fn fault(code: u16, message: &str, details: Option<&str>) -> serde_json::Value {
    json!({
        "code": code,
        "message": message,
        "details": details,
        "created": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// The resources an instance's flavor needs in placement.
pub fn resources_of(f: &compute_rpc::FlavorSpec) -> Resources {
    let mut r = Resources::new();
    r.insert("VCPU".into(), f.vcpus);
    r.insert("MEMORY_MB".into(), f.memory_mb);
    let disk = f.root_gb + f.ephemeral_gb + (f.swap + 1023) / 1024;
    if disk > 0 {
        r.insert("DISK_GB".into(), disk);
    }
    r
}

/// What an agent needs of an instance.
pub fn spec_of(i: &InstanceRow, metadata: std::collections::BTreeMap<String, String>) -> InstanceSpec {
    InstanceSpec {
        uuid: i.uuid.clone(),
        display_name: i.display_name.clone(),
        hostname: i.hostname.clone(),
        project_id: i.project_id.clone(),
        user_id: i.user_id.clone(),
        flavor: i.flavor.clone(),
        image_ref: i.image_ref.clone(),
        image_properties: i.image_properties.clone(),
        key_name: i.key_name.clone(),
        key_data: i.key_data.clone(),
        user_data: i.user_data.clone(),
        metadata,
        config_drive: i.config_drive,
        availability_zone: i.availability_zone.clone(),
        launch_index: i.launch_index,
    }
}

impl Conductor {
    pub fn new(
        store: Store,
        bus: Bus,
        placement: PlacementClient,
        network: Option<NetworkClient>,
        volume: Option<crate::volume::VolumeClient>,
        settings: ConductorSettings,
    ) -> Self {
        Conductor {
            inner: Arc::new(Inner {
                store,
                bus,
                placement,
                network,
                volume,
                settings,
                hosts: tokio::sync::Mutex::new(None),
                images: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Gives the conductor the image service (set once, at start-up).
    pub fn set_images(&self, images: ServiceImages) {
        let _ = self.inner.images.set(images);
    }

    /// The block storage service's client, where one is configured.
    pub fn volume(&self) -> Option<&crate::volume::VolumeClient> {
        self.inner.volume.as_ref()
    }

    pub(crate) fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    /// The network service's client, where one is configured.
    pub fn network(&self) -> Option<&NetworkClient> {
        self.inner.network.as_ref()
    }

    pub fn settings(&self) -> &ConductorSettings {
        &self.inner.settings
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Whether a service is up: heartbeats within `service_down_time`, and not forced down.
    pub fn is_up(&self, s: &ServiceRow) -> bool {
        let window = self.inner.settings.service_down_time.as_micros() as i64;
        !s.forced_down && s.last_seen_up.is_some_and(|t| crate::store::instances::now_us() - t <= window)
    }

    /// Starts serving the conductor topic as server `name`.
    pub async fn serve(&self, name: &str) -> Result<ServerHandle, Error> {
        let c = self.clone();
        let d = Dispatcher::new()
            .on({
                let c = c.clone();
                move |m: RegisterNode| {
                    let c = c.clone();
                    async move { c.register_node(m).await.map_err(remote) }
                }
            })
            .on({
                let c = c.clone();
                move |m: ReportResources| {
                    let c = c.clone();
                    async move { c.report_resources(m).await.map_err(remote) }
                }
            })
            .on({
                let c = c.clone();
                move |m: Heartbeat| {
                    let c = c.clone();
                    async move {
                        match c.store().service_heartbeat(&m.host, &m.binary).await {
                            Ok(true) => Ok(()),
                            // Deleted by an operator (or never registered): the agent registers again.
                            Ok(false) => Err(RemoteError::new(
                                compute_rpc::HOST_NOT_FOUND,
                                format!("Compute host {} could not be found.", m.host),
                            )),
                            Err(e) => Err(remote(e)),
                        }
                    }
                }
            })
            .on({
                let c = c.clone();
                move |m: InstanceUpdate| {
                    let c = c.clone();
                    async move { c.instance_update(m).await.map_err(remote) }
                }
            })
            .on({
                let c = c.clone();
                move |m: ActionEvent| {
                    let c = c.clone();
                    async move { c.action_event(m).await.map_err(remote) }
                }
            })
            .on({
                let c = c.clone();
                move |m: BuildFailed| {
                    let c = c.clone();
                    async move { c.build_failed(m).await.map_err(remote) }
                }
            })
            .on({
                let c = c.clone();
                move |m: InstanceTerminated| {
                    let c = c.clone();
                    async move { c.terminated(&m.instance_uuid).await.map_err(remote) }
                }
            });
        let handle = self.inner.bus.serve(CONDUCTOR_TOPIC, name, d).await.map_err(Error::from)?;
        crate::services::report_conductor(Arc::downgrade(&self.inner), self.store().clone(), self.inner.settings.host.clone());
        Ok(handle)
    }

    // ----- agent messages -----

    async fn register_node(&self, m: RegisterNode) -> Result<NodeRegistered, Error> {
        let service = self.store().service_ensure(&m.node.host, COMPUTE_BINARY, COMPUTE_TOPIC).await?;
        self.store().service_heartbeat(&m.node.host, COMPUTE_BINARY).await?;
        let node = self.store().node_upsert(&service.uuid, &m.node).await?;
        self.inner.placement.ensure_node_provider(&node.uuid, &m.node.node, &m.node.resources).await?;
        self.forget_hosts().await;
        tracing::info!(host = %m.node.host, node = %m.node.node, uuid = %node.uuid, "compute node registered");
        Ok(NodeRegistered { node_uuid: node.uuid, service_id: service.uuid, disabled: service.disabled })
    }

    async fn report_resources(&self, m: ReportResources) -> Result<(), Error> {
        let Some(before) = self.store().node_find(&m.host, &m.node).await? else { return Ok(()) };
        self.store().node_resources(&m.host, &m.node, &m.resources).await?;
        let r = &before.info.resources;
        let inventory_changed = (r.vcpus, r.memory_mb, r.local_gb, r.reserved_host_cpus, r.reserved_host_memory_mb)
            != (m.resources.vcpus, m.resources.memory_mb, m.resources.local_gb, m.resources.reserved_host_cpus, m.resources.reserved_host_memory_mb)
            || r.reserved_host_disk_mb != m.resources.reserved_host_disk_mb
            || r.cpu_allocation_ratio != m.resources.cpu_allocation_ratio
            || r.ram_allocation_ratio != m.resources.ram_allocation_ratio
            || r.disk_allocation_ratio != m.resources.disk_allocation_ratio;
        if inventory_changed {
            self.inner.placement.set_inventory(&before.uuid, &m.resources).await?;
        }
        if (r.failed_builds, &r.supported_instances) != (m.resources.failed_builds, &m.resources.supported_instances) {
            // The scheduler weighs and filters on these: its next decision rereads them.
            self.forget_hosts().await;
        }
        Ok(())
    }

    async fn instance_update(&self, m: InstanceUpdate) -> Result<bool, Error> {
        let c = m.changes;
        let vm_state = c.vm_state.clone();
        let task_cleared = c.task_state == Some(None);
        let mut set: Vec<(&str, Value)> = Vec::new();
        if let Some(v) = c.vm_state {
            set.push(("vm_state", Value::S(Some(v))));
        }
        if let Some(t) = c.task_state {
            set.push(("task_state", Value::S(t)));
        }
        if let Some(p) = c.power_state {
            set.push(("power_state", Value::I(Some(p.code()))));
        }
        if c.launched {
            set.push(("launched_at", Value::I(Some(crate::store::instances::now_us()))));
            set.push(("scheduling", Value::Json(None)));
        }
        if let Some(image) = c.image_ref {
            set.push(("image_ref", Value::S(Some(image))));
        }
        if let Some(flavor) = c.flavor {
            set.push(("flavorid", Value::S(Some(flavor.flavorid.clone()))));
            set.push(("flavor", Value::Json(Some(serde_json::to_value(&flavor).unwrap_or_default()))));
        }
        if vm_state.as_deref() == Some(vm_state::SHELVED_OFFLOADED) {
            // Offloaded: the host's resources are given back before anyone sees the new state, and the instance
            // has no host until it is unshelved.
            self.inner.placement.free(&m.uuid).await?;
            set.extend([("host", Value::S(None)), ("node", Value::S(None)), ("node_uuid", Value::S(None))]);
        }
        let applied = self.store().instance_update(&m.uuid, m.expected_task_state.as_deref(), &set).await?;
        if applied {
            let expected = m.expected_task_state.unwrap_or_default();
            let from = |t: &str| expected.iter().any(|e| e.as_deref() == Some(t));
            match vm_state.as_deref() {
                Some(vm_state::SHELVED) => self.offload_later(&m.uuid),
                Some(vm_state::RESIZED) => self.resize_finished(&m.uuid, "finished").await?,
                // A resize the agent gave up on: the task is cleared and the vm state kept.
                None if task_cleared && from(task_state::RESIZE_MIGRATING) => self.resize_finished(&m.uuid, "error").await?,
                Some(vm_state::ACTIVE) if from(task_state::SPAWNING) || from(task_state::UNSHELVING) => {
                    self.unshelved(&m.uuid).await?
                }
                _ => {}
            }
        }
        Ok(applied)
    }

    /// The agent ended a resize: its migration waits for confirmation (`finished`), or failed (`error`).
    async fn resize_finished(&self, uuid: &str, status: &str) -> Result<(), Error> {
        let Some(inst) = self.store().instance_get(uuid).await? else { return Ok(()) };
        if let Ok((migration, _)) = Self::resize_of(&inst) {
            self.store().migration_set_status(&migration, &["migrating"], status).await?;
        }
        Ok(())
    }

    // ----- shelving -----

    /// A shelved instance is offloaded after `shelved_offload_time` seconds (when positive) if still shelved.
    fn offload_later(&self, uuid: &str) {
        let seconds = self.inner.settings.shelved_offload_time;
        if seconds <= 0 {
            return;
        }
        let (c, uuid) = (self.clone(), uuid.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(seconds.unsigned_abs())).await;
            let set = [("task_state", Value::S(Some(task_state::SHELVING_OFFLOADING.into())))];
            let Ok(Some(inst)) = c.store().instance_get(&uuid).await else { return };
            if inst.deleted || inst.vm_state != vm_state::SHELVED {
                return;
            }
            if !matches!(c.store().instance_update(&uuid, Some(&[None]), &set).await, Ok(true)) {
                return;
            }
            let Ok(Some(inst)) = c.store().instance_get(&uuid).await else { return };
            if let Err(e) = c.action(&inst, compute_rpc::Action::ShelveOffload, "").await {
                tracing::warn!(instance = %uuid, error = %e, "cannot offload a shelved instance");
            }
        });
    }

    /// The image a shelved instance was saved to, if it has one.
    async fn shelved_image(&self, uuid: &str) -> Result<Option<String>, Error> {
        Ok(self.store().sysmeta_of(&[uuid]).await?.remove(uuid).and_then(|mut m| m.remove(SHELVED_IMAGE)))
    }

    /// An instance is active again after an unshelve: its shelved image and the shelve records go.
    async fn unshelved(&self, uuid: &str) -> Result<(), Error> {
        let Some(image) = self.shelved_image(uuid).await? else { return Ok(()) };
        for key in SHELVE_KEYS {
            self.store().sysmeta_set(uuid, key, None).await?;
        }
        self.drop_image(image);
        Ok(())
    }

    /// Deletes an image in the background (the image service may be slower than the caller should wait).
    fn drop_image(&self, image: String) {
        let c = self.clone();
        tokio::spawn(async move {
            let Some(images) = c.inner.images.get() else { return };
            if let Err(e) = images.delete(&image).await {
                tracing::warn!(image_id = %image, error = %e, "cannot delete a shelved instance's image");
            }
        });
    }

    /// Unshelves an instance (task state `unshelving`, set by the API): a `shelved` one is powered on where it
    /// is; an offloaded one is scheduled again and built from its shelved image, in the background.
    pub async fn unshelve(&self, inst: &InstanceRow, request_id: &str) -> Result<(), Error> {
        if inst.vm_state == vm_state::SHELVED {
            return self.action(inst, compute_rpc::Action::Unshelve, request_id).await;
        }
        let (c, uuid, request_id) = (self.clone(), inst.uuid.clone(), request_id.to_string());
        tokio::spawn(async move {
            if let Err(e) = c.unshelve_offloaded(&uuid, &request_id).await {
                tracing::error!(instance = %uuid, error = %e, "unshelve failed");
                let expected = [Some(task_state::UNSHELVING.to_string())];
                let _ = c.store().instance_update(&uuid, Some(&expected), &[("task_state", Value::S(None))]).await;
            }
        });
        Ok(())
    }

    async fn unshelve_offloaded(&self, uuid: &str, request_id: &str) -> Result<(), Error> {
        let Some(inst) = self.store().instance_get(uuid).await? else { return Ok(()) };
        if inst.deleted {
            return Ok(());
        }
        const EVENT: &str = "conductor_unshelve_instance";
        self.store().action_event(uuid, request_id, EVENT, "conductor", None).await?;
        if let Some((sel, alternates)) = self.schedule(&inst).await? {
            self.store().action_event(uuid, request_id, EVENT, "conductor", Some((true, None))).await?;
            let scheduling = Scheduling { request_id: request_id.to_string(), attempts: 1, alternates };
            return self.dispatch(&inst, &sel, scheduling).await;
        }
        let message = "No valid host was found. There are not enough hosts available.";
        self.store().action_event(uuid, request_id, EVENT, "conductor", Some((false, Some(message)))).await?;
        let expected = [Some(task_state::UNSHELVING.to_string())];
        self.store().instance_update(uuid, Some(&expected), &[("task_state", Value::S(None))]).await?;
        Ok(())
    }

    async fn action_event(&self, m: ActionEvent) -> Result<(), Error> {
        let finish = match &m.phase {
            EventPhase::Start => None,
            EventPhase::Finish { success, details } => Some((*success, details.as_deref())),
        };
        self.store().action_event(&m.instance_uuid, &m.request_id, &m.event, &m.host, finish).await
    }

    async fn terminated(&self, uuid: &str) -> Result<(), Error> {
        self.inner.placement.free(uuid).await?;
        self.release_and_mark_deleted(uuid).await
    }

    /// Releases an instance's ports and volumes, then marks it deleted, as upstream deallocates before the
    /// instance disappears: a client that sees the server gone may delete its subnet or volume at once. They are
    /// read once more after the mark: a build binding ports concurrently checks for the deletion after recording
    /// them, so one of the two always releases them.
    async fn release_and_mark_deleted(&self, uuid: &str) -> Result<(), Error> {
        self.release_network(uuid).await?;
        self.release_volumes(uuid).await?;
        self.store().instance_mark_deleted(uuid).await?;
        self.release_network(uuid).await?;
        self.release_volumes(uuid).await
    }

    /// Deletes the ports compute made for an instance and unbinds the others; the info cache empties.
    pub async fn release_network(&self, uuid: &str) -> Result<(), Error> {
        let Some(net) = &self.inner.network else { return Ok(()) };
        let Some(info) = self.store().netinfo_get(uuid).await? else { return Ok(()) };
        if info.vifs.is_empty() {
            return Ok(());
        }
        net.deallocate(&info.vifs).await;
        self.store().netinfo_set_vifs(uuid, &[]).await
    }

    /// Makes or binds an instance's ports on `host` (task state `networking`); `Ok(None)` when the instance went
    /// away meanwhile (its ports released), `Err` when the network service refused (nothing left allocated).
    async fn setup_network(&self, inst: &InstanceRow, host: &str, zone: &str) -> Result<Option<Vec<compute_rpc::VifSpec>>, Error> {
        let Some(net) = &self.inner.network else { return Ok(Some(Vec::new())) };
        let Some(info) = self.store().netinfo_get(&inst.uuid).await? else { return Ok(Some(Vec::new())) };
        let vifs = if info.vifs.is_empty() {
            let owner = PortOwner { uuid: &inst.uuid, project_id: &inst.project_id, zone, host };
            let vifs = net.allocate(&owner, &info.requested, &info.security_groups).await?;
            self.store().netinfo_set_vifs(&inst.uuid, &vifs).await?;
            vifs
        } else {
            // A reschedule: the ports move to the new host.
            let mut vifs = info.vifs;
            net.rebind(&mut vifs, host).await?;
            vifs
        };
        let now = self.store().instance_get(&inst.uuid).await?;
        if now.is_none_or(|i| i.deleted) {
            net.deallocate(&vifs).await;
            self.store().netinfo_set_vifs(&inst.uuid, &[]).await?;
            return Ok(None);
        }
        Ok(Some(
            vifs.iter()
                .map(|v| compute_rpc::VifSpec {
                    port_id: v.port_id.clone(),
                    network_id: v.network_id.clone(),
                    mac_address: v.mac.clone(),
                    // a port the network service could not say about is not waited for
                    active: v.status.is_empty() || v.status == "ACTIVE",
                    mtu: v.mtu,
                })
                .collect(),
        ))
    }

    // ----- builds -----

    async fn set_error(&self, uuid: &str, code: u16, message: &str, details: Option<&str>) -> Result<bool, Error> {
        let set = [
            ("vm_state", Value::S(Some(vm_state::ERROR.into()))),
            ("task_state", Value::S(None)),
            ("fault", Value::Json(Some(fault(code, message, details)))),
            ("scheduling", Value::Json(None)),
        ];
        self.store().instance_update(uuid, None, &set).await
    }

    /// The placement client the conductor uses.
    pub fn placement(&self) -> &PlacementClient {
        &self.inner.placement
    }

    /// Nodes and services, from the cache when it is fresh. A stale cache is refreshed from the rows changed
    /// since its newest one (heartbeats, node reports and operator changes all stamp `updated_at`); deleted rows
    /// show as a count that no longer matches and force a full reload, as does [`HOST_FULL_RELOAD`]. Zones are
    /// reread on every refresh.
    async fn hosts(&self) -> Result<HostView, Error> {
        let mut cache = self.inner.hosts.lock().await;
        if let Some(c) = cache.as_ref()
            && c.refreshed.is_some_and(|at| at.elapsed() < HOST_CACHE_TTL)
        {
            return Ok((c.nodes.clone(), c.services.clone(), c.zones.clone()));
        }
        let started = std::time::Instant::now();
        let zones = Arc::new(
            crate::aggregates::host_zones_and_metadata(self.store(), &self.inner.settings.default_availability_zone).await?,
        );
        let refreshed = match cache.as_mut() {
            Some(c) if c.full_load.elapsed() < HOST_FULL_RELOAD => {
                let since = c.newest - HOST_CHANGE_SLACK_US;
                let nodes = self.store().nodes_changed_since(since).await?;
                let services = self.store().services_changed_since(since).await?;
                let (service_count, node_count) = self.store().host_counts().await?;
                let changes = HostChanges { nodes, services, node_count, service_count };
                let newest = changes.newest().max(c.newest);
                if changes.apply(Arc::make_mut(&mut c.nodes), Arc::make_mut(&mut c.services)) {
                    c.newest = newest;
                    c.refreshed = Some(started);
                    c.zones = zones.clone();
                    true
                } else {
                    false
                }
            }
            _ => false,
        };
        if !refreshed {
            let nodes: HashMap<String, NodeRow> =
                self.store().node_list().await?.into_iter().map(|n| (n.uuid.clone(), n)).collect();
            let services: HashMap<String, ServiceRow> =
                self.store().service_list().await?.into_iter().map(|s| (s.uuid.clone(), s)).collect();
            let newest = nodes.values().map(|n| n.updated_at).chain(services.values().map(|s| s.updated_at)).max().unwrap_or(0);
            *cache = Some(HostCache {
                refreshed: Some(started),
                full_load: started,
                newest,
                nodes: Arc::new(nodes),
                services: Arc::new(services),
                zones,
            });
        }
        let c = cache.as_ref().ok_or_else(|| Error::Unavailable("host cache".into()))?;
        Ok((c.nodes.clone(), c.services.clone(), c.zones.clone()))
    }

    /// Makes the scheduler's next decision reread nodes, services and zones (after an operator or an agent changed
    /// one).
    pub async fn forget_hosts(&self) {
        if let Some(c) = self.inner.hosts.lock().await.as_mut() {
            c.refreshed = None;
        }
    }

    /// Host states of the candidates: the agents' node reports, their services' state, placement's usage.
    async fn host_states(&self, candidates: &[Candidate]) -> Result<Vec<HostState>, Error> {
        let (nodes, services, zones) = self.hosts().await?;
        let mut out = Vec::with_capacity(candidates.len());
        for c in candidates {
            let Some(node) = nodes.get(&c.provider_uuid) else { continue };
            let service = services.get(&node.service_uuid);
            let r = &node.info.resources;
            let used = |class: &str| c.summary.get(class).map(|s| s.1).unwrap_or(0);
            out.push(HostState {
                host: node.info.host.clone(),
                node: node.info.node.clone(),
                provider_uuid: node.uuid.clone(),
                availability_zone: zones.of(&node.info.host).to_string(),
                enabled: service.is_some_and(|s| !s.disabled),
                up: service.is_some_and(|s| self.is_up(s)),
                vcpus_total: r.vcpus,
                vcpus_used: used("VCPU"),
                memory_mb_total: r.memory_mb,
                memory_mb_used: used("MEMORY_MB"),
                memory_mb_reserved: r.reserved_host_memory_mb,
                disk_gb_total: r.local_gb,
                disk_gb_used: used("DISK_GB"),
                disk_gb_reserved: (r.reserved_host_disk_mb + 1023) / 1024,
                cpu_allocation_ratio: r.cpu_allocation_ratio,
                ram_allocation_ratio: r.ram_allocation_ratio,
                disk_allocation_ratio: r.disk_allocation_ratio,
                num_instances: r.running_vms,
                hypervisor_type: node.info.hypervisor_type.clone(),
                hypervisor_version: node.info.hypervisor_version,
                cpu_info: node.info.cpu_info.clone(),
                supported_instances: r.supported_instances.clone(),
                aggregate_metadata: zones.metadata.get(&node.info.host).cloned().unwrap_or_default(),
                failed_builds: r.failed_builds,
            });
        }
        Ok(out)
    }

    fn scheduler(&self) -> Scheduler {
        let s = &self.inner.settings;
        let config = scheduler::SchedulerConfig { host_subset_size: s.host_subset_size, ..s.scheduler.clone() };
        // The configuration was checked at start; an unknown filter name cannot get here.
        Scheduler::from_config(&config).unwrap_or_default()
    }

    /// What every decision of one request shares: the candidates placement returned (as host states), the
    /// request spec and the group's placement.
    async fn prepare(&self, inst: &InstanceRow) -> Result<Prepared, Error> {
        let resources = resources_of(&inst.flavor);
        let candidates = self.inner.placement.candidates(&resources, self.inner.settings.max_placement_results).await?;
        let mut states = self.host_states(&candidates).await?;
        // A requested destination (2.74) narrows the hosts before the filters run.
        let destination: Option<crate::servers::Destination> =
            inst.scheduling.as_ref().and_then(|s| serde_json::from_value(s["destination"].clone()).ok());
        if let Some(d) = destination {
            states.retain(|h| {
                d.host.as_ref().is_none_or(|x| x == &h.host) && d.node.as_ref().is_none_or(|x| x == &h.node)
            });
        }
        let group = crate::server_groups::group_placement(self.store(), &inst.uuid).await?;
        let mut spec = RequestSpec {
            vcpus: inst.flavor.vcpus,
            memory_mb: inst.flavor.memory_mb,
            root_gb: inst.flavor.root_gb,
            ephemeral_gb: inst.flavor.ephemeral_gb,
            swap_mb: inst.flavor.swap,
            availability_zone: inst.availability_zone.clone(),
            num_instances: 1,
            group_policy: group.as_ref().map(|g| g.policy.clone()),
            group_hosts: group.as_ref().map(|g| g.hosts.clone()).unwrap_or_default(),
            extra_specs: inst.flavor.extra_specs.clone(),
            image_properties: inst
                .image_properties
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                .collect(),
        };
        // An anti-affinity group with `max_server_per_host` (2.64) allows that many members per host: such hosts
        // are kept by the batch and the scheduler's plain anti-affinity check is not applied.
        let mut max_per_host = None;
        if let Some(g) = &group
            && g.policy == "anti-affinity"
            && let Some(max) = g.max_server_per_host
        {
            max_per_host = Some((max, std::mem::take(&mut spec.group_hosts)));
            spec.group_policy = None;
        }
        let room = candidates.into_iter().map(|c| (c.provider_uuid, c.summary)).collect();
        let mut prepared = Prepared { spec, resources, states, room, max_per_host };
        prepared.drop_full_hosts();
        Ok(prepared)
    }

    /// A scheduling batch for the instances of one request (a multi-create), in the order they are built.
    pub fn batch(&self) -> Batch {
        Batch { prepared: None, scheduler: self.scheduler() }
    }

    /// One scheduling decision: picks hosts and claims the instance's resources on the first that still has room.
    /// Returns the chosen host and up to `max_attempts - 1` alternates, or `None` when no host fits.
    pub async fn schedule(&self, inst: &InstanceRow) -> Result<Option<(Selection, Vec<Selection>)>, Error> {
        self.schedule_next(&mut self.batch(), inst).await
    }

    /// The next decision of a batch. As upstream's scheduler does for a multi-create, the batch asks placement
    /// for candidates once and, after each claim, consumes the instance's resources from the chosen host's
    /// state (and adds the host to the group's), so the later instances are weighed against what the earlier
    /// ones took. When the batch's candidates no longer fit an instance, placement is asked afresh (the group's
    /// hosts are then reread: the earlier instances were dispatched, their hosts recorded).
    pub async fn schedule_next(&self, batch: &mut Batch, inst: &InstanceRow) -> Result<Option<(Selection, Vec<Selection>)>, Error> {
        let reused = batch.prepared.is_some();
        let mut prepared = match batch.prepared.take() {
            Some(p) => p,
            None => self.prepare(inst).await?,
        };
        let mut picked = self.claim_best(&mut prepared, &batch.scheduler, inst).await?;
        if picked.is_none() && reused {
            prepared = self.prepare(inst).await?;
            picked = self.claim_best(&mut prepared, &batch.scheduler, inst).await?;
        }
        batch.prepared = Some(prepared);
        Ok(picked)
    }

    /// Filters and weighs the prepared hosts, then claims on the best one that placement accepts.
    async fn claim_best(
        &self,
        prepared: &mut Prepared,
        scheduler: &Scheduler,
        inst: &InstanceRow,
    ) -> Result<Option<(Selection, Vec<Selection>)>, Error> {
        // The order as positions in the host states: only the hosts tried and the alternates become selections.
        let order: Vec<usize> = scheduler.select(&prepared.states, &prepared.spec).iter().map(|w| w.index).collect();
        let selection = |i: usize| {
            let h = &prepared.states[i];
            Selection { host: h.host.clone(), node: h.node.clone(), provider_uuid: h.provider_uuid.clone() }
        };
        let max = self.inner.settings.max_attempts.max(1);
        let mut refused = Vec::new();
        let mut picked = None;
        for (n, &i) in order.iter().enumerate() {
            let sel = selection(i);
            if self.inner.placement.claim(&inst.uuid, &sel.provider_uuid, &prepared.resources, &inst.project_id, &inst.user_id).await? {
                let alternates: Vec<Selection> = order[n + 1..].iter().take(max - 1).map(|&j| selection(j)).collect();
                picked = Some((sel, alternates));
                break;
            }
            // Placement refused: the host's room went to a concurrent claim.
            refused.push(sel.provider_uuid);
        }
        for uuid in &refused {
            prepared.forget(uuid);
        }
        if let Some((sel, _)) = &picked {
            prepared.consume(sel);
        }
        Ok(picked)
    }

    /// Schedules and starts building instances (all in task state `scheduling`) of one request, one after the
    /// other, in the background.
    pub fn build(&self, uuids: Vec<String>, request_id: String) {
        let c = self.clone();
        tokio::spawn(async move {
            let mut batch = c.batch();
            for uuid in uuids {
                if let Err(e) = c.schedule_and_build(&mut batch, &uuid, &request_id).await {
                    tracing::error!(instance = %uuid, error = %e, "build failed");
                    let _ = c.set_error(&uuid, 500, &e.to_string(), None).await;
                }
            }
        });
    }

    async fn schedule_and_build(&self, batch: &mut Batch, uuid: &str, request_id: &str) -> Result<(), Error> {
        let Some(inst) = self.store().instance_get(uuid).await? else { return Ok(()) };
        if inst.deleted {
            return Ok(());
        }
        self.store().action_event(uuid, request_id, "conductor_schedule_and_build_instances", "conductor", None).await?;
        if let Some((sel, alternates)) = self.schedule_next(batch, &inst).await? {
            let scheduling = Scheduling { request_id: request_id.to_string(), attempts: 1, alternates };
            self.store()
                .action_event(uuid, request_id, "conductor_schedule_and_build_instances", "conductor", Some((true, None)))
                .await?;
            return self.dispatch(&inst, &sel, scheduling).await;
        }
        self.store()
            .action_event(uuid, request_id, "conductor_schedule_and_build_instances", "conductor", Some((false, None)))
            .await?;
        self.set_error(uuid, 500, "No valid host was found. There are not enough hosts available.", None).await?;
        Ok(())
    }

    /// Records the claimed host on the instance and hands the build to its agent.
    async fn dispatch(&self, inst: &InstanceRow, sel: &Selection, scheduling: Scheduling) -> Result<(), Error> {
        let zones = crate::aggregates::host_zones(self.store(), &self.inner.settings.default_availability_zone).await?;
        let zone = zones.of(&sel.host).to_string();
        let set = [
            ("availability_zone", Value::S(Some(zone.clone()))),
            ("task_state", Value::S(Some(task_state::NETWORKING.into()))),
            ("host", Value::S(Some(sel.host.clone()))),
            ("node", Value::S(Some(sel.node.clone()))),
            ("node_uuid", Value::S(Some(sel.provider_uuid.clone()))),
            ("scheduling", Value::Json(Some(serde_json::to_value(&scheduling).unwrap_or_default()))),
        ];
        // A build, or the unshelve of an offloaded instance.
        let expected = [Some(task_state::SCHEDULING.to_string()), Some(task_state::UNSHELVING.to_string())];
        if !self.store().instance_update(&inst.uuid, Some(&expected), &set).await? {
            // Deleted (or otherwise moved on) while we scheduled: give the claim back.
            self.inner.placement.free(&inst.uuid).await?;
            return Ok(());
        }
        let vifs = match self.setup_network(inst, &sel.host, &zone).await {
            Ok(Some(vifs)) => vifs,
            Ok(None) => {
                self.inner.placement.free(&inst.uuid).await?;
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(instance = %inst.uuid, error = %e, "cannot set up the instance's network");
                self.inner.placement.free(&inst.uuid).await?;
                let message = format!("Build of instance {} aborted: {e}", inst.uuid);
                self.release_volumes(&inst.uuid).await?;
                self.set_error(&inst.uuid, 500, &message, Some(&e.to_string())).await?;
                return Ok(());
            }
        };
        let block_devices = match self.setup_volumes(inst, &sel.host).await {
            Ok(Some(devices)) => devices,
            Ok(None) => {
                self.inner.placement.free(&inst.uuid).await?;
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(instance = %inst.uuid, error = %e, "cannot attach the instance's volumes");
                self.inner.placement.free(&inst.uuid).await?;
                let message = format!("Build of instance {} aborted: {e}", inst.uuid);
                self.release_network(&inst.uuid).await?;
                self.release_volumes(&inst.uuid).await?;
                self.set_error(&inst.uuid, 500, &message, Some(&e.to_string())).await?;
                return Ok(());
            }
        };
        let metadata = self.store().metadata_of(&[&inst.uuid]).await?.remove(&inst.uuid).unwrap_or_default();
        let mut instance = spec_of(inst, metadata);
        // An offloaded instance comes back from the image it was shelved to.
        if inst.vm_state == vm_state::SHELVED_OFFLOADED
            && let Some(image) = self.shelved_image(&inst.uuid).await?
        {
            instance.image_ref = image;
        }
        let msg = BuildAndRunInstance {
            instance,
            node: sel.node.clone(),
            request_id: scheduling.request_id.clone(),
            vifs,
            block_devices,
        };
        if let Err(e) = self.inner.bus.cast(&Target::server(COMPUTE_TOPIC, &sel.host), &msg).await {
            tracing::warn!(host = %sel.host, error = %e, "cannot reach the compute agent; rescheduling");
            Box::pin(self.build_failed(BuildFailed {
                instance_uuid: inst.uuid.clone(),
                request_id: scheduling.request_id,
                host: sel.host.clone(),
                reason: format!("compute agent on {} unreachable: {e}", sel.host),
                reschedule: true,
            }))
            .await?;
        }
        Ok(())
    }

    /// A build failed on a host: free its claim and try the next alternate, or end in ERROR.
    async fn build_failed(&self, m: BuildFailed) -> Result<(), Error> {
        let uuid = &m.instance_uuid;
        self.inner.placement.free(uuid).await?;
        let Some(inst) = self.store().instance_get(uuid).await? else { return Ok(()) };
        if inst.deleted || inst.task_state.as_deref() == Some(task_state::DELETING) {
            return Ok(());
        }
        let mut scheduling: Scheduling =
            inst.scheduling.clone().and_then(|s| serde_json::from_value(s).ok()).unwrap_or_default();
        let max = self.inner.settings.max_attempts.max(1);
        let message = if m.reschedule {
            let building = [
                Some(task_state::SCHEDULING.to_string()),
                Some(task_state::NETWORKING.to_string()),
                Some(task_state::BLOCK_DEVICE_MAPPING.to_string()),
                Some(task_state::SPAWNING.to_string()),
            ];
            let back = [
                ("task_state", Value::S(Some(task_state::SCHEDULING.into()))),
                ("host", Value::S(None)),
                ("node", Value::S(None)),
                ("node_uuid", Value::S(None)),
            ];
            if !self.store().instance_update(uuid, Some(&building), &back).await? {
                return Ok(());
            }
            let resources = resources_of(&inst.flavor);
            while scheduling.attempts < max && !scheduling.alternates.is_empty() {
                let alt = scheduling.alternates.remove(0);
                scheduling.attempts += 1;
                if self.inner.placement.claim(uuid, &alt.provider_uuid, &resources, &inst.project_id, &inst.user_id).await? {
                    let inst = self.store().instance_get(uuid).await?.unwrap_or(inst);
                    return self.dispatch(&inst, &alt, scheduling).await;
                }
            }
            format!(
                "Exceeded maximum number of retries. Exceeded max scheduling attempts {} for instance {uuid}. \
                 Last exception: {}",
                scheduling.attempts.max(1),
                m.reason
            )
        } else {
            format!("Build of instance {uuid} aborted: {}", m.reason)
        };
        // A build that ends in ERROR keeps no ports and no volume attachments, released before the ERROR shows
        // (as upstream's cleanup of a failed build).
        self.release_network(uuid).await?;
        self.release_volumes(uuid).await?;
        self.set_error(uuid, 500, &message, Some(&m.reason)).await?;
        Ok(())
    }

    // ----- lifecycle -----

    /// The service of an instance's host, if it has one.
    async fn host_service(&self, inst: &InstanceRow) -> Result<Option<ServiceRow>, Error> {
        match &inst.host {
            Some(h) => self.store().service_find(h, COMPUTE_BINARY).await,
            None => Ok(None),
        }
    }

    /// Deletes an instance: through its agent when its host is up, else locally (as upstream's local delete).
    /// The caller has already checked locks and policy.
    pub async fn delete(&self, inst: &InstanceRow, request_id: &str) -> Result<(), Error> {
        // A shelved instance's image goes with it, as upstream.
        if let Some(image) = self.shelved_image(&inst.uuid).await? {
            self.drop_image(image);
        }
        let service = self.host_service(inst).await?;
        let agent_up = service.as_ref().is_some_and(|s| self.is_up(s));
        if !agent_up {
            self.inner.placement.free(&inst.uuid).await?;
            return self.release_and_mark_deleted(&inst.uuid).await;
        }
        let set = [("task_state", Value::S(Some(task_state::DELETING.into())))];
        if !self.store().instance_update(&inst.uuid, None, &set).await? {
            return Ok(());
        }
        let host = inst.host.clone().unwrap_or_default();
        let msg = TerminateInstance { uuid: inst.uuid.clone(), request_id: request_id.to_string() };
        if let Err(e) = self.inner.bus.cast(&Target::server(COMPUTE_TOPIC, &host), &msg).await {
            tracing::warn!(%host, error = %e, "cannot reach the compute agent; deleting locally");
            self.terminated(&inst.uuid).await?;
        }
        Ok(())
    }

    /// Sends a lifecycle action to an instance's agent (the API set its task state).
    pub async fn action(&self, inst: &InstanceRow, action: compute_rpc::Action, request_id: &str) -> Result<(), Error> {
        let host = inst.host.clone().ok_or_else(|| Error::Conflict(format!("Instance {} has no host", inst.uuid)))?;
        let metadata = self.store().metadata_of(&[&inst.uuid]).await?.remove(&inst.uuid).unwrap_or_default();
        let action = match action {
            compute_rpc::Action::Rebuild { image_ref, .. } => {
                compute_rpc::Action::Rebuild { image_ref, block_devices: self.attached_devices(&inst.uuid).await? }
            }
            other => other,
        };
        let msg = InstanceAction { instance: spec_of(inst, metadata), action, request_id: request_id.to_string() };
        if let Err(e) = self.inner.bus.cast(&Target::server(COMPUTE_TOPIC, &host), &msg).await {
            // Give the instance back its previous task state so it is not stuck.
            self.store().instance_update(&inst.uuid, None, &[("task_state", Value::S(None))]).await?;
            return Err(Error::Unavailable(format!("Compute service of {host} is unavailable at this time: {e}")));
        }
        Ok(())
    }

    /// Starts a resize in place (task state `resize_prep`, set by the API): the instance's allocation moves to a
    /// migration consumer, the new flavor is claimed on the same node, and the agent gives the guest the new
    /// flavor. With no room the instance goes back to its state without a task and the action records the error.
    pub async fn resize(&self, inst: &InstanceRow, flavor: compute_rpc::FlavorSpec, request_id: &str) -> Result<(), Error> {
        let node = inst.node_uuid.clone().ok_or_else(|| Error::Conflict(format!("Instance {} has no host", inst.uuid)))?;
        let migration = uuid::Uuid::new_v4().to_string();
        let p = &self.inner.placement;
        if !p.move_allocations(&inst.uuid, &migration, &inst.project_id, &inst.user_id).await? {
            self.store().instance_update(&inst.uuid, None, &[("task_state", Value::S(None))]).await?;
            return Err(Error::Conflict("The instance's allocation changed during the resize; try again.".into()));
        }
        if !p.claim(&inst.uuid, &node, &resources_of(&flavor), &inst.project_id, &inst.user_id).await? {
            p.move_allocations(&migration, &inst.uuid, &inst.project_id, &inst.user_id).await?;
            self.store().instance_update(&inst.uuid, None, &[("task_state", Value::S(None))]).await?;
            self.store().action_event(&inst.uuid, request_id, "conductor_migrate_server", "conductor", Some((false, Some("No valid host was found. No room for the new flavor on the instance's host.")))).await?;
            return Err(Error::BadRequest("No valid host was found. No room for the new flavor on the instance's host.".into()));
        }
        let record = crate::store::MigrationRow {
            id: 0,
            uuid: migration.clone(),
            instance_uuid: inst.uuid.clone(),
            project_id: inst.project_id.clone(),
            user_id: inst.user_id.clone(),
            migration_type: "resize".into(),
            status: "migrating".into(),
            source_compute: inst.host.clone(),
            source_node: inst.node.clone(),
            dest_compute: inst.host.clone(),
            dest_node: inst.node.clone(),
            dest_host: None,
            old_flavorid: Some(inst.flavor.flavorid.clone()),
            new_flavorid: Some(flavor.flavorid.clone()),
            created_at: crate::store::instances::now_us(),
            updated_at: None,
        };
        self.store().migration_create(&record).await?;
        let resize = json!({"migration": migration, "old_flavor": inst.flavor, "new_flavor": flavor});
        self.store().instance_update(&inst.uuid, None, &[("scheduling", Value::Json(Some(json!({"resize": resize}))))]).await?;
        self.action(inst, compute_rpc::Action::Resize { flavor }, request_id).await
    }

    fn resize_of(inst: &InstanceRow) -> Result<(String, compute_rpc::FlavorSpec), Error> {
        let r = inst.scheduling.as_ref().and_then(|s| s.get("resize")).cloned().unwrap_or_default();
        let migration = r["migration"].as_str().map(str::to_string);
        let old: Option<compute_rpc::FlavorSpec> = serde_json::from_value(r["old_flavor"].clone()).ok();
        match (migration, old) {
            (Some(m), Some(f)) => Ok((m, f)),
            _ => Err(Error::BadRequest(format!("Instance {} has not been resized.", inst.uuid))),
        }
    }

    /// Confirms a resize: the old flavor's allocation (held by the migration) is freed.
    pub async fn confirm_resize(&self, inst: &InstanceRow) -> Result<(), Error> {
        let (migration, _) = Self::resize_of(inst)?;
        self.inner.placement.free(&migration).await?;
        self.store().migration_set_status(&migration, &[], "confirmed").await?;
        let end = if inst.power_state == PowerState::Shutdown.code() { vm_state::STOPPED } else { vm_state::ACTIVE };
        let set = [("vm_state", Value::S(Some(end.into()))), ("task_state", Value::S(None)), ("scheduling", Value::Json(None))];
        self.store().instance_update(&inst.uuid, Some(&[None]), &set).await?;
        Ok(())
    }

    /// Reverts a resize (task state `resize_reverting`, set by the API): the new flavor's claim is freed, the
    /// migration's allocation goes back to the instance, and the agent restores the old flavor.
    pub async fn revert_resize(&self, inst: &InstanceRow, request_id: &str) -> Result<(), Error> {
        let (migration, old) = Self::resize_of(inst)?;
        self.store().migration_set_status(&migration, &[], "reverted").await?;
        let p = &self.inner.placement;
        p.free(&inst.uuid).await?;
        p.move_allocations(&migration, &inst.uuid, &inst.project_id, &inst.user_id).await?;
        self.store().instance_update(&inst.uuid, None, &[("scheduling", Value::Json(None))]).await?;
        self.action(inst, compute_rpc::Action::RevertResize { flavor: old }, request_id).await
    }

    /// The `uptime` line of a compute host, from its agent.
    pub async fn host_uptime(&self, host: &str) -> Result<String, Error> {
        self.inner
            .bus
            .call(&Target::server(COMPUTE_TOPIC, host), &compute_rpc::GetHostUptime {}, self.inner.settings.call_timeout)
            .await
            .map_err(|e| Error::BadRequest(format!("Compute service of {host} is unavailable at this time. ({e})")))
    }

    /// An instance's diagnostics, from its agent.
    pub async fn diagnostics(
        &self,
        inst: &InstanceRow,
    ) -> Result<std::collections::BTreeMap<String, serde_json::Value>, Error> {
        let host = inst.host.clone().ok_or_else(|| {
            Error::Conflict(format!("Cannot 'get_diagnostics' instance {} while it has no host", inst.uuid))
        })?;
        let metadata = self.store().metadata_of(&[&inst.uuid]).await?.remove(&inst.uuid).unwrap_or_default();
        let msg = compute_rpc::GetDiagnostics { instance: spec_of(inst, metadata) };
        self.inner
            .bus
            .call(&Target::server(COMPUTE_TOPIC, &host), &msg, self.inner.settings.call_timeout)
            .await
            .map_err(|e| Error::Unavailable(format!("Compute service of {host} is unavailable at this time: {e}")))
    }

    /// Hands an external event (`os-server-external-events`) to the agent of the instance's host, which ends a
    /// build's wait for `network-vif-plugged` with it.
    pub async fn external_event(&self, inst: &InstanceRow, name: &str, status: &str, tag: Option<&str>) -> Result<(), Error> {
        let Some(host) = inst.host.clone() else { return Ok(()) };
        let msg = compute_rpc::ExternalInstanceEvent {
            instance_uuid: inst.uuid.clone(),
            name: name.to_string(),
            status: status.to_string(),
            tag: tag.map(str::to_string),
        };
        self.inner
            .bus
            .cast(&Target::server(COMPUTE_TOPIC, &host), &msg)
            .await
            .map_err(|e| Error::Unavailable(format!("Compute service of {host} is unavailable at this time: {e}")))
    }

    /// Plugs port `vif` (bound to the instance's host) into the guest through its agent; an instance without a host
    /// (shelved, never built) gets it at its next build.
    pub async fn plug_interface(&self, inst: &InstanceRow, vif: &crate::network::Vif, request_id: &str) -> Result<(), Error> {
        if inst.host.is_none() {
            return Ok(());
        }
        let spec = compute_rpc::VifSpec {
            port_id: vif.port_id.clone(),
            network_id: vif.network_id.clone(),
            mac_address: vif.mac.clone(),
            active: true,
            mtu: vif.mtu,
        };
        let msg = compute_rpc::AttachInterface { uuid: inst.uuid.clone(), vif: spec, request_id: request_id.into() };
        self.agent_call(inst, &msg, "attach the interface").await
    }

    /// Unplugs port `port_id` from the guest through its agent.
    pub async fn unplug_interface(&self, inst: &InstanceRow, port_id: &str, request_id: &str) -> Result<(), Error> {
        if inst.host.is_none() {
            return Ok(());
        }
        let msg = compute_rpc::DetachInterface { uuid: inst.uuid.clone(), port_id: port_id.into(), request_id: request_id.into() };
        self.agent_call(inst, &msg, "detach the interface").await
    }

    /// The console log of an instance, from its agent.
    pub async fn console_output(&self, inst: &InstanceRow, length: Option<u64>) -> Result<String, Error> {
        let host = inst.host.clone().ok_or_else(|| {
            Error::Conflict(format!("Cannot 'get_console_output' instance {} while it has no host", inst.uuid))
        })?;
        let msg = GetConsoleOutput { uuid: inst.uuid.clone(), length };
        self.inner
            .bus
            .call(&Target::server(COMPUTE_TOPIC, &host), &msg, self.inner.settings.call_timeout)
            .await
            .map_err(|e| Error::Unavailable(format!("Compute service of {host} is unavailable at this time: {e}")))
    }
}

/// The power state an instance shows before its agent reports one.
pub const NO_STATE: PowerState = PowerState::NoState;

#[cfg(test)]
mod tests {
    use super::*;

    fn node(uuid: &str, updated_at: i64) -> NodeRow {
        NodeRow {
            id: 1,
            uuid: uuid.into(),
            service_uuid: format!("s-{uuid}"),
            info: compute_rpc::NodeInfo {
                host: uuid.into(),
                node: uuid.into(),
                hypervisor_type: "fake".into(),
                hypervisor_version: 1,
                host_ip: "127.0.0.1".into(),
                cpu_info: serde_json::json!({}),
                resources: Default::default(),
            },
            created_at: 0,
            updated_at,
        }
    }

    fn service(uuid: &str, updated_at: i64) -> ServiceRow {
        ServiceRow {
            id: 1,
            uuid: uuid.into(),
            host: uuid.into(),
            binary: COMPUTE_BINARY.into(),
            topic: COMPUTE_TOPIC.into(),
            disabled: false,
            disabled_reason: None,
            forced_down: false,
            report_count: 0,
            last_seen_up: Some(updated_at),
            created_at: 0,
            updated_at,
        }
    }

    #[test]
    fn host_changes_update_the_cache_or_ask_for_a_reload() {
        let mut nodes: HashMap<String, NodeRow> = [("a".to_string(), node("a", 10)), ("b".to_string(), node("b", 10))].into();
        let mut services: HashMap<String, ServiceRow> = [("s-a".to_string(), service("s-a", 10))].into();
        // A changed node, a new node and a heartbeat: merged, counts match.
        let mut disabled = service("s-a", 30);
        disabled.disabled = true;
        let changes = HostChanges {
            nodes: vec![node("b", 20), node("c", 25)],
            services: vec![disabled],
            node_count: 3,
            service_count: 1,
        };
        assert_eq!(changes.newest(), 30);
        assert!(changes.apply(&mut nodes, &mut services));
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes["b"].updated_at, 20);
        assert!(services["s-a"].disabled);
        // Nothing changed: nothing to do.
        let none = HostChanges { nodes: vec![], services: vec![], node_count: 3, service_count: 1 };
        assert_eq!(none.newest(), 0);
        assert!(none.apply(&mut nodes, &mut services));
        // A node was deleted: the count tells, and a full reload follows.
        let deleted = HostChanges { nodes: vec![], services: vec![], node_count: 2, service_count: 1 };
        assert!(!deleted.apply(&mut nodes, &mut services));
        // Deleted and another added in the same interval: still caught.
        let mut nodes: HashMap<String, NodeRow> = [("a".to_string(), node("a", 10))].into();
        let replaced = HostChanges { nodes: vec![node("z", 40)], services: vec![], node_count: 1, service_count: 1 };
        assert!(!replaced.apply(&mut nodes, &mut services));
    }

    fn prepared(hosts: &[(&str, i64)], max_per_host: Option<i64>) -> Prepared {
        let resources: crate::placement::Resources = [("VCPU".to_string(), 2), ("MEMORY_MB".to_string(), 1024)].into();
        let states = hosts
            .iter()
            .map(|(h, _)| HostState { host: h.to_string(), node: h.to_string(), provider_uuid: format!("rp-{h}"), ..Default::default() })
            .collect();
        let room = hosts
            .iter()
            .map(|(h, free_vcpus)| (format!("rp-{h}"), [("VCPU".to_string(), (*free_vcpus, 0)), ("MEMORY_MB".to_string(), (8192, 0))].into()))
            .collect();
        // As `prepare` leaves it for a group with `max_server_per_host`: no plain group policy.
        let spec = RequestSpec::default();
        Prepared { spec, resources, states, room, max_per_host: max_per_host.map(|m| (m, vec![])) }
    }

    fn sel(h: &str) -> Selection {
        Selection { host: h.into(), node: h.into(), provider_uuid: format!("rp-{h}") }
    }

    fn hosts(p: &Prepared) -> Vec<&str> {
        p.states.iter().map(|h| h.host.as_str()).collect()
    }

    #[test]
    fn a_batch_counts_its_claims_and_drops_hosts_that_are_full() {
        let mut p = prepared(&[("a", 4), ("b", 3)], None);
        p.consume(&sel("a"));
        let a = &p.states[0];
        assert_eq!((a.vcpus_used, a.memory_mb_used, a.num_instances), (2, 1024, 1));
        assert_eq!(p.room["rp-a"]["VCPU"], (4, 2));
        assert_eq!(hosts(&p), ["a", "b"]);
        // b has room for one instance (3 vCPUs, 2 each), a for one more.
        p.consume(&sel("b"));
        assert_eq!(hosts(&p), ["a"]);
        p.consume(&sel("a"));
        assert!(hosts(&p).is_empty());
        // The plain group policy records the hosts; placement's refusal drops a host.
        let mut p = prepared(&[("a", 8), ("b", 8)], None);
        p.spec.group_policy = Some("soft-anti-affinity".into());
        p.consume(&sel("b"));
        assert_eq!(p.spec.group_hosts, ["b"]);
        p.forget("rp-a");
        assert_eq!(hosts(&p), ["b"]);
    }

    #[test]
    fn max_server_per_host_is_counted_within_the_batch() {
        let mut p = prepared(&[("a", 100), ("b", 100)], Some(2));
        for _ in 0..2 {
            p.consume(&sel("a"));
        }
        assert_eq!(hosts(&p), ["b"]);
        p.consume(&sel("b"));
        assert_eq!(hosts(&p), ["b"]);
        p.consume(&sel("b"));
        assert!(hosts(&p).is_empty());
    }
}
