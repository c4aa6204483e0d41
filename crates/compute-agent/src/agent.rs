//! The agent's life: register the node, serve the compute topic, heartbeat and audit resources until stopped.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bus::{Bus, Rpc, Target};
use compute_rpc::{COMPUTE_BINARY, Heartbeat, NodeInfo, NodeRegistered, NodeResources, RegisterNode, ReportResources};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, interval_at};

use crate::hypervisor::{Hypervisor, HypervisorInfo};
use crate::manager::{self, InstanceLocks};
use crate::{AgentConfig, Error};

/// The first wait between registration attempts; it doubles up to [`AgentConfig::register_backoff_max`].
const REGISTER_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// A heartbeat call waits at least this long for the conductor (and at most the report interval beyond it).
const HEARTBEAT_TIMEOUT_MIN: Duration = Duration::from_secs(5);

/// Remote error kinds the bus itself produces when the conductor cannot decode or does not know a message:
/// registering again would not help.
const BUS_ERROR_KINDS: &[&str] = &["NoSuchMethod", "InvalidArguments"];

/// A compute agent: the per-host service that plays upstream's `nova-compute`.
pub struct Agent;

impl Agent {
    /// Starts the agent in the background and returns at once. It registers its node with the conductor
    /// (retrying with backoff until a conductor answers), then serves its compute topic as server `<host>`,
    /// sends heartbeats every `report_interval` and resource reports every `resource_audit_interval`.
    pub fn start(config: AgentConfig, driver: Arc<dyn Hypervisor>, bus: Bus) -> Result<AgentHandle, Error> {
        config.validate()?;
        let (registration, registered) = watch::channel(Phase::Starting);
        let inner = Arc::new(Inner {
            config,
            driver,
            bus,
            locks: InstanceLocks::default(),
            registration,
            synced: std::sync::Mutex::new(std::collections::HashMap::new()),
            failed_builds: std::sync::atomic::AtomicI64::new(0),
            events: crate::events::InstanceEvents::default(),
        });
        let (stop, stopped) = watch::channel(false);
        tracing::info!(host = %inner.config.host, driver = inner.driver.name(), "compute agent starting");
        let task = tokio::spawn(run(inner.clone(), Stopped(stopped)));
        Ok(AgentHandle { inner, stop, registered, task: Some(task) })
    }
}

/// A running agent. [`AgentHandle::stop`] stops it; dropping the handle also stops it, in the background.
#[must_use = "dropping the handle stops the agent"]
pub struct AgentHandle {
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    registered: watch::Receiver<Phase>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHandle").field("host", &self.inner.config.host).finish_non_exhaustive()
    }
}

impl AgentHandle {
    /// The host the agent serves as.
    pub fn host(&self) -> &str {
        &self.inner.config.host
    }

    /// The conductor's answer to the latest registration, if the agent has registered.
    pub fn registration(&self) -> Option<NodeRegistered> {
        match &*self.registered.borrow() {
            Phase::Registered(r) => Some(r.clone()),
            Phase::Starting | Phase::Stopped => None,
        }
    }

    /// Waits until the agent has registered (and serves its topic); `None` if it stopped first.
    pub async fn registered(&self) -> Option<NodeRegistered> {
        let mut registered = self.registered.clone();
        let phase = registered.wait_for(|p| !matches!(p, Phase::Starting)).await.ok()?.clone();
        match phase {
            Phase::Registered(r) => Some(r),
            Phase::Starting | Phase::Stopped => None,
        }
    }

    /// Stops heartbeats, audits and registration attempts, stops serving, and waits for the messages being
    /// handled to finish.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
        {
            tracing::error!(%error, "compute agent task failed");
        }
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// Everything the agent's tasks share.
pub(crate) struct Inner {
    pub(crate) config: AgentConfig,
    pub(crate) driver: Arc<dyn Hypervisor>,
    pub(crate) bus: Bus,
    pub(crate) locks: InstanceLocks,
    registration: watch::Sender<Phase>,
    /// The power state last written to each instance by the power-state sync.
    synced: std::sync::Mutex<std::collections::HashMap<String, compute_rpc::PowerState>>,
    /// Builds that failed here since the last successful one (upstream's `failed_builds` stat), reported with
    /// the resources.
    failed_builds: std::sync::atomic::AtomicI64,
    /// Builds waiting for external events (`network-vif-plugged`).
    pub(crate) events: crate::events::InstanceEvents,
}

/// Where the agent is in its life.
#[derive(Clone, Debug)]
enum Phase {
    Starting,
    Registered(NodeRegistered),
    Stopped,
}

impl Inner {
    pub(crate) fn synced_power(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, compute_rpc::PowerState>> {
        self.synced.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn conductor(&self) -> Target {
        Target::topic(self.config.conductor_topic.clone())
    }

    /// Calls the conductor, waiting up to the RPC timeout.
    pub(crate) async fn call<M: Rpc>(&self, msg: &M) -> Result<M::Reply, bus::Error> {
        self.bus.call(&self.conductor(), msg, self.config.rpc_timeout).await
    }

    /// The node as the conductor records it: the driver's figures plus this host's reservations and ratios.
    /// Like upstream's resource tracker, the `_used` figures include what is reserved for the host.
    async fn node_info(&self) -> Result<NodeInfo, Error> {
        let info = self.driver.host_info().await?;
        let resources = self.resources(&info, self.driver.supported_instances().await);
        Ok(NodeInfo {
            host: self.config.host.clone(),
            node: self.config.host.clone(),
            hypervisor_type: info.hypervisor_type,
            hypervisor_version: info.hypervisor_version,
            host_ip: self.config.my_ip.clone(),
            cpu_info: info.cpu_info,
            resources,
        })
    }

    fn resources(&self, info: &HypervisorInfo, supported_instances: Vec<[String; 3]>) -> NodeResources {
        let c = &self.config;
        NodeResources {
            vcpus: info.vcpus,
            memory_mb: info.memory_mb,
            local_gb: info.local_gb,
            vcpus_used: c.reserved_host_cpus + info.vcpus_used,
            memory_mb_used: c.reserved_host_memory_mb + info.memory_mb_used,
            local_gb_used: c.reserved_host_disk_mb / 1024 + info.local_gb_used,
            running_vms: info.running_vms,
            cpu_allocation_ratio: c.cpu_allocation_ratio,
            ram_allocation_ratio: c.ram_allocation_ratio,
            disk_allocation_ratio: c.disk_allocation_ratio,
            reserved_host_cpus: c.reserved_host_cpus,
            reserved_host_memory_mb: c.reserved_host_memory_mb,
            reserved_host_disk_mb: c.reserved_host_disk_mb,
            supported_instances,
            failed_builds: self.failed_builds.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Counts a build's outcome as upstream's compute manager does: a failure adds one, a success resets the
    /// count. A change is reported at once, so the scheduler sees it on its next decision.
    pub(crate) async fn build_outcome(&self, success: bool) {
        use std::sync::atomic::Ordering;
        let changed = if success {
            self.failed_builds.swap(0, Ordering::Relaxed) != 0
        } else {
            self.failed_builds.fetch_add(1, Ordering::Relaxed);
            true
        };
        if changed {
            self.audit().await;
        }
    }

    /// One registration attempt; the caller publishes the result.
    async fn register(&self) -> Result<NodeRegistered, Error> {
        let msg = RegisterNode {
            node: self.node_info().await?,
            report_interval_secs: self.config.report_interval.as_secs().max(1),
        };
        let reply = self.call(&msg).await?;
        tracing::info!(
            host = %self.config.host, node_uuid = %reply.node_uuid, disabled = reply.disabled,
            "compute node registered"
        );
        Ok(reply)
    }

    /// Sends a heartbeat. The conductor answers a host it has no record of with an error; the agent then
    /// registers again (registering is idempotent, so any rejection other than the bus's own is answered so).
    async fn heartbeat(&self) {
        let msg = Heartbeat { host: self.config.host.clone(), binary: COMPUTE_BINARY.into() };
        let timeout = self.config.report_interval.max(HEARTBEAT_TIMEOUT_MIN).min(self.config.rpc_timeout);
        match self.bus.call(&self.conductor(), &msg, timeout).await {
            Ok(()) => tracing::trace!("heartbeat sent"),
            Err(bus::Error::Remote { kind, message }) if !BUS_ERROR_KINDS.contains(&kind.as_str()) => {
                tracing::warn!(%kind, %message, "the conductor rejected a heartbeat; registering again");
                match self.register().await {
                    Ok(registered) => {
                        self.registration.send_replace(Phase::Registered(registered));
                    }
                    Err(error) => tracing::warn!(%error, "cannot register again; retrying with the next heartbeat"),
                }
            }
            Err(error) => tracing::warn!(%error, "cannot send a heartbeat"),
        }
    }

    /// Reports the node's current resources.
    async fn audit(&self) {
        let report = match self.driver.host_info().await {
            Ok(info) => ReportResources {
                host: self.config.host.clone(),
                node: self.config.host.clone(),
                resources: self.resources(&info, self.driver.supported_instances().await),
            },
            Err(error) => {
                tracing::warn!(%error, "cannot read the hypervisor's resources");
                return;
            }
        };
        if let Err(error) = self.bus.cast(&self.conductor(), &report).await {
            tracing::warn!(%error, "cannot report resources");
        }
    }
}

/// Resolves when the agent is asked to stop (or its handle is gone).
#[derive(Clone)]
struct Stopped(watch::Receiver<bool>);

impl Stopped {
    async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Runs `work` unless a stop comes first.
    async fn unless<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            _ = self.wait() => None,
            out = work => Some(out),
        }
    }
}

async fn run(inner: Arc<Inner>, stopped: Stopped) {
    serve_until_stopped(&inner, stopped).await;
    inner.registration.send_replace(Phase::Stopped);
    tracing::info!(host = %inner.config.host, "compute agent stopped");
}

async fn serve_until_stopped(inner: &Arc<Inner>, mut stopped: Stopped) {
    let Some(Some(server)) = stopped.unless(register_and_serve(inner)).await else { return };
    let c = &inner.config;
    let mut heartbeat = interval_at(Instant::now() + c.report_interval, c.report_interval);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut audit = interval_at(Instant::now() + c.resource_audit_interval, c.resource_audit_interval);
    audit.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Guests that outlived a previous agent are re-adopted: their power states are synced at once, and those of
    // instances deleted meanwhile are destroyed.
    if stopped.unless(inner.sync_power_states(true)).await.is_none() {
        server.stop().await;
        return;
    }
    let mut sync = interval_at(Instant::now() + c.sync_power_state_interval, c.sync_power_state_interval);
    sync.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let work = async {
            tokio::select! {
                _ = heartbeat.tick() => inner.heartbeat().await,
                _ = audit.tick() => inner.audit().await,
                _ = sync.tick() => inner.sync_power_states(false).await,
            }
        };
        if stopped.unless(work).await.is_none() {
            break;
        }
    }
    server.stop().await;
}

/// Registers and starts serving, retrying with capped exponential backoff. `None` when the bus is closed.
async fn register_and_serve(inner: &Arc<Inner>) -> Option<bus::ServerHandle> {
    let c = &inner.config;
    let mut backoff = REGISTER_BACKOFF_MIN.min(c.register_backoff_max);
    loop {
        let error = match inner.register().await {
            Ok(registered) => {
                match inner.bus.serve(&c.compute_topic, &c.host, manager::dispatcher(inner.clone())).await {
                    Ok(server) => {
                        tracing::info!(topic = %c.compute_topic, server = %c.host, "serving");
                        inner.registration.send_replace(Phase::Registered(registered));
                        return Some(server);
                    }
                    Err(error) => Error::Bus(error),
                }
            }
            Err(error) => error,
        };
        if matches!(error, Error::Bus(bus::Error::Closed)) {
            tracing::error!("the message bus is closed; the compute agent cannot start");
            return None;
        }
        tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "cannot register the compute node yet");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(c.register_backoff_max);
    }
}
