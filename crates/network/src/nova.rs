//! Tells compute about instances' ports, as upstream's nova notifier: when a port of an instance (device owner
//! `compute:*`) goes `ACTIVE` its instance gets `network-vif-plugged`, when it goes `DOWN` from `ACTIVE`
//! `network-vif-unplugged`, through compute's public `POST /v2.1/os-server-external-events` with the service's
//! token (renewed and retried once on a 401). Events are sent in the background: a port's status change never
//! waits for compute, and a lost event only costs the waiting build its timeout.

use std::{sync::Arc, time::Duration};

use auth::HttpValidator;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// How many times an event is sent when compute cannot be reached or fails (5xx).
const ATTEMPTS: u32 = 3;

/// An external event for compute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerEvent {
    /// `network-vif-plugged`, `network-vif-unplugged`.
    pub name: &'static str,
    pub server_uuid: String,
    /// `completed` or `failed`.
    pub status: &'static str,
    /// The port's id.
    pub tag: String,
}

impl ServerEvent {
    fn to_json(&self) -> Value {
        json!({"name": self.name, "server_uuid": self.server_uuid, "status": self.status, "tag": self.tag})
    }
}

/// The event a port's status change means for its instance, if any: only ports of instances (`compute:*`
/// owners with a device id) count, and only a change to `ACTIVE` (plugged) or from `ACTIVE` to `DOWN`
/// (unplugged), as upstream.
pub fn event_for(port: &Value, old_status: &str, new_status: &str) -> Option<ServerEvent> {
    let owner = port["device_owner"].as_str().unwrap_or_default();
    let device = port["device_id"].as_str().unwrap_or_default();
    if !owner.starts_with("compute:") || device.is_empty() || old_status == new_status {
        return None;
    }
    let name = match (old_status, new_status) {
        (_, "ACTIVE") => "network-vif-plugged",
        ("ACTIVE", "DOWN") => "network-vif-unplugged",
        _ => return None,
    };
    let tag = port["id"].as_str().unwrap_or_default().to_string();
    Some(ServerEvent { name, server_uuid: device.to_string(), status: "completed", tag })
}

/// Sends events to compute's external events API.
pub struct NovaNotifier {
    http: reqwest::Client,
    /// `…/v2.1/os-server-external-events`.
    url: String,
    session: Arc<HttpValidator>,
}

impl std::fmt::Debug for NovaNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NovaNotifier").field("url", &self.url).finish_non_exhaustive()
    }
}

impl NovaNotifier {
    /// A notifier for the compute endpoint `compute_url` (e.g. `http://host/compute`), authenticating with
    /// `session`'s service token.
    pub fn new(compute_url: &str, session: Arc<HttpValidator>) -> Result<NovaNotifier> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        let url = format!("{}/v2.1/os-server-external-events", compute_url.trim_end_matches('/'));
        Ok(NovaNotifier { http, url, session })
    }

    /// Sends `event` in the background.
    pub fn send(self: &Arc<Self>, event: ServerEvent) {
        let me = self.clone();
        tokio::spawn(async move {
            for attempt in 1..=ATTEMPTS {
                match me.post(&event).await {
                    Ok(status) => {
                        tracing::info!(event = event.name, server = %event.server_uuid, port = %event.tag, %status, "compute told");
                        return;
                    }
                    Err(error) if attempt < ATTEMPTS => {
                        tracing::debug!(%error, attempt, "cannot tell compute yet");
                        tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                    }
                    Err(error) => {
                        tracing::warn!(%error, event = event.name, server = %event.server_uuid, "cannot tell compute")
                    }
                }
            }
        });
    }

    /// One POST; compute's 404 (the instance is gone) and 207 are answers, not failures.
    async fn post(&self, event: &ServerEvent) -> std::result::Result<StatusCode, String> {
        let body = json!({"events": [event.to_json()]});
        let mut token = self.session.service_token(None).await.map_err(|e| e.to_string())?;
        for attempt in 0..2 {
            let resp = self
                .http
                .post(&self.url)
                .header("x-auth-token", &token)
                .header("accept", "application/json")
                .json(&body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                token = self.session.service_token(Some(&token)).await.map_err(|e| e.to_string())?;
                continue;
            }
            if status.is_server_error() {
                return Err(format!("{} answered {status}", self.url));
            }
            return Ok(status);
        }
        Err("the service token was refused twice".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_instance_ports_going_active_or_down_make_events() {
        let port = json!({"id": "p1", "device_owner": "compute:nova", "device_id": "i1"});
        let e = event_for(&port, "DOWN", "ACTIVE").unwrap();
        assert_eq!(
            e.to_json(),
            json!({"name": "network-vif-plugged", "server_uuid": "i1", "status": "completed", "tag": "p1"})
        );
        assert_eq!(event_for(&port, "BUILD", "ACTIVE").unwrap().name, "network-vif-plugged");
        assert_eq!(event_for(&port, "ACTIVE", "DOWN").unwrap().name, "network-vif-unplugged");
        assert_eq!(event_for(&port, "ACTIVE", "ACTIVE"), None);
        assert_eq!(event_for(&port, "BUILD", "DOWN"), None);
        assert_eq!(
            event_for(&json!({"id": "p", "device_owner": "network:dhcp", "device_id": "d"}), "DOWN", "ACTIVE"),
            None
        );
        assert_eq!(
            event_for(&json!({"id": "p", "device_owner": "compute:nova", "device_id": ""}), "DOWN", "ACTIVE"),
            None
        );
    }
}
