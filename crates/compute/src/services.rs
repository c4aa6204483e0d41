//! The services this process records besides the agents' compute services: the conductor reports itself as a
//! `nova-conductor` service of its host (zone `internal`), heartbeating as upstream's services do, so that
//! `os-services` and `os-hosts` list it.

use std::{sync::Weak, time::Duration};

use crate::store::Store;

/// The conductor's service binary and topic, as upstream.
pub const CONDUCTOR_BINARY: &str = "nova-conductor";
pub const CONDUCTOR_TOPIC: &str = "conductor";

/// How often a service heartbeats (upstream's `report_interval`).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// This machine's host name, `localhost` when it has none.
pub fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim();
    if name.is_empty() { "localhost".to_owned() } else { name.to_owned() }
}

/// Records the conductor's service on `host` and heartbeats it every [`REPORT_INTERVAL`] while `alive` lives (the
/// record is created again if an operator deleted it).
pub fn report_conductor<T: Send + Sync + 'static>(alive: Weak<T>, store: Store, host: String) {
    tokio::spawn(async move {
        while alive.strong_count() > 0 {
            let beat = async {
                store.service_ensure(&host, CONDUCTOR_BINARY, CONDUCTOR_TOPIC).await?;
                store.service_heartbeat(&host, CONDUCTOR_BINARY).await
            };
            if let Err(e) = beat.await {
                tracing::warn!(%host, error = %e, "cannot record the conductor's heartbeat");
            }
            tokio::time::sleep(REPORT_INTERVAL).await;
        }
    });
}
