//! The agent's life: serve the `q-agent-notifier` topic as `<host>`, and run reconciliation passes — at start, after
//! a change notice (of a network or of a security group), when tap devices appear or vanish, after a failed pass and at least every resync interval —
//! until stopped. Notices that arrive during a pass coalesce into one more pass.

use std::{sync::Arc, time::Instant};

use bus::{Bus, Dispatcher, RemoteError, ServerHandle, Target};
use network_rpc::{AGENT_TOPIC, AgentReport, CAP_L3, GetHostState, NetworkChanged, PLUGIN_TOPIC, RouterChanged, SecurityGroupChanged};
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};

use crate::{
    AgentConfig, Error,
    reconcile::{Outcome, Reconciler},
};

/// The network agent.
pub struct Agent;

struct Inner {
    config: AgentConfig,
    bus: Bus,
    reconciler: Reconciler,
    wake: Notify,
    passes: watch::Sender<u64>,
    /// Held for the whole of a pass: the background loop and `sync_now` never reconcile at the same time.
    pass: tokio::sync::Mutex<()>,
}

impl Agent {
    /// Starts serving and reconciling in the background.
    pub async fn start(config: AgentConfig, bus: Bus) -> Result<AgentHandle, Error> {
        config.validate()?;
        let reconciler = Reconciler::new(config.clone(), bus.clone()).await?;
        let (passes, _) = watch::channel(0);
        let inner = Arc::new(Inner { config, bus, reconciler, wake: Notify::new(), passes, pass: Default::default() });
        let i = inner.clone();
        let dispatcher = Dispatcher::new().on(move |m: NetworkChanged| {
            let i = i.clone();
            async move {
                tracing::debug!(network_id = %m.network_id, "network changed");
                i.wake.notify_one();
                Ok::<_, RemoteError>(())
            }
        });
        let i = inner.clone();
        let dispatcher = dispatcher.on(move |m: RouterChanged| {
            let i = i.clone();
            async move {
                tracing::debug!(router_id = %m.router_id, "router changed");
                i.wake.notify_one();
                Ok::<_, RemoteError>(())
            }
        });
        let i = inner.clone();
        let dispatcher = dispatcher.on(move |m: SecurityGroupChanged| {
            let i = i.clone();
            async move {
                tracing::debug!(security_group_id = %m.security_group_id, "security group changed");
                i.wake.notify_one();
                Ok::<_, RemoteError>(())
            }
        });
        let server = inner.bus.serve(AGENT_TOPIC, &inner.config.host, dispatcher).await?;
        let (stop, stopped) = watch::channel(false);
        tracing::info!(host = %inner.config.host, "network agent started");
        let task = tokio::spawn(run(inner.clone(), stopped));
        Ok(AgentHandle { inner, stop, task: Some(task), server: Some(server) })
    }
}

/// A running agent; [`AgentHandle::stop`] stops it (the data plane stays as it is, as upstream's agents leave it;
/// only the metadata listeners, served by the agent itself, close).
#[must_use = "dropping the handle stops the agent"]
pub struct AgentHandle {
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    server: Option<ServerHandle>,
}

impl std::fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHandle").field("host", &self.inner.config.host).finish_non_exhaustive()
    }
}

impl AgentHandle {
    pub fn host(&self) -> &str {
        &self.inner.config.host
    }

    /// Runs a pass now and returns what it did (the background loop keeps running).
    pub async fn sync_now(&self) -> Result<Outcome, Error> {
        sync(&self.inner).await
    }

    /// The namespaces the metadata proxy serves in now (DHCP and router namespaces).
    pub fn metadata_namespaces(&self) -> Vec<String> {
        self.inner.reconciler.metadata().map(|p| p.namespaces()).unwrap_or_default()
    }

    /// The number of passes finished so far, to wait on.
    pub fn passes(&self) -> watch::Receiver<u64> {
        self.inner.passes.subscribe()
    }

    /// Stops the agent and removes everything it made on this host (bridges, VXLAN devices, DHCP namespaces and
    /// processes), giving its DHCP ports back.
    pub async fn teardown(self) -> Result<Outcome, Error> {
        let inner = self.inner.clone();
        self.stop().await;
        inner.reconciler.teardown().await
    }

    /// Stops the agent. Bridges, namespaces and dnsmasq stay; the metadata listeners, which live in this process,
    /// close (the next agent binds them again).
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        if let Some(proxy) = self.inner.reconciler.metadata() {
            proxy.stop_all().await;
        }
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

async fn sync(inner: &Inner) -> Result<Outcome, Error> {
    let _pass = inner.pass.lock().await;
    let c = &inner.config;
    let report = AgentReport {
        tunnel_ip: c.tunnel_ip.map(|ip| ip.to_string()),
        interface_mappings: c.interface_mappings.iter().map(|(p, i)| format!("{p}:{i}")).collect(),
        capabilities: if c.enable_l3 { vec![CAP_L3.to_string()] } else { vec![] },
    };
    let state = inner
        .bus
        .call(&Target::topic(PLUGIN_TOPIC), &GetHostState { host: c.host.clone(), report }, c.rpc_timeout)
        .await?;
    let outcome = inner.reconciler.apply(&state).await?;
    inner.passes.send_modify(|n| *n += 1);
    Ok(outcome)
}

async fn run(inner: Arc<Inner>, mut stopped: watch::Receiver<bool>) {
    let mut dirty = true;
    let mut last_full = Instant::now();
    let mut taps = Default::default();
    loop {
        if *stopped.borrow() {
            return;
        }
        let current = inner.reconciler.taps().await.unwrap_or_default();
        if dirty || current != taps || last_full.elapsed() >= inner.config.resync_interval {
            match sync(&inner).await {
                Ok(outcome) => {
                    dirty = !outcome.errors.is_empty();
                    if dirty {
                        tracing::warn!(errors = ?outcome.errors, "network agent pass incomplete");
                    } else {
                        tracing::debug!(?outcome, "network agent pass");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "network agent pass failed");
                    dirty = true;
                }
            }
            // the devices seen before the pass: one that appears during it calls for another pass
            taps = current;
            last_full = Instant::now();
        }
        tokio::select! {
            _ = inner.wake.notified() => dirty = true,
            _ = tokio::time::sleep(inner.config.polling_interval) => {}
            _ = stopped.changed() => return,
        }
    }
}
