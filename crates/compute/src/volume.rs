//! The compute service's client of the block storage service (Cinder's API v3), over HTTP only, as Nova's
//! `nova.volume.cinder`: the API checks and reserves volumes with the caller's token (a volume the caller cannot
//! see does not exist); the conductor connects, completes and deletes attachments and deletes the volumes that go
//! with their instance with the service's token (an admin, who sees every project's volumes).
//!
//! An attachment follows the attachments API (3.27+): created (volume `reserved`), updated with the host's
//! connector (its `connection_info`, volume `attaching`), completed once the guest has the disk (3.44, volume
//! `in-use`), deleted after the guest let it go (volume `available`).

use std::{sync::Arc, time::Duration};

use auth::HttpValidator;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::error::Error;
pub use crate::service_http::{As, safe};
use crate::service_http::ServiceHttp;

/// The microversion compute speaks: the attachments API with `os-complete`.
pub const MICROVERSION: &str = "volume 3.44";

/// Where the block storage service is and how the service authenticates to it.
#[derive(Clone)]
pub struct VolumeClient {
    http: ServiceHttp,
    /// The block storage endpoint without the version (e.g. `http://host/volume`).
    url: Arc<str>,
}

impl std::fmt::Debug for VolumeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeClient").field("url", &self.url).finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("block storage service: {e}"))
}

/// The message of a Cinder error body (`{"badRequest": {"message": …}}`).
pub fn error_message(body: &Value) -> String {
    body.as_object()
        .and_then(|o| o.values().find_map(|v| v["message"].as_str()))
        .map(str::to_string)
        .unwrap_or_default()
}

/// The device a new disk gets: the requested one when free, else the next free `/dev/vdX` after the root disk
/// and the flavor's ephemeral and swap disks.
pub fn next_device(flavor: &compute_rpc::FlavorSpec, config_drive: bool, bdms: &[crate::store::bdm::Bdm], requested: Option<&str>) -> String {
    let mut used: Vec<String> = bdms.iter().filter_map(|b| b.device_name.clone()).collect();
    used.push("/dev/vda".into());
    let mut extra = 0;
    if flavor.ephemeral_gb > 0 {
        extra += 1;
    }
    if flavor.swap > 0 {
        extra += 1;
    }
    if config_drive {
        extra += 1;
    }
    for i in 0..extra {
        used.push(format!("/dev/vd{}", (b'b' + i) as char));
    }
    if let Some(r) = requested {
        let full = if r.starts_with("/dev/") { r.to_string() } else { format!("/dev/{r}") };
        if !used.contains(&full) {
            return full;
        }
    }
    for c in b'b'..=b'z' {
        let d = format!("/dev/vd{}", c as char);
        if !used.contains(&d) {
            return d;
        }
    }
    format!("/dev/vd{}", bdms.len() + 1)
}

/// The connector this host's guests reach volumes through (as os-brick's: the `local` file connections and the
/// `iscsi` ones, for which `initiator` is the host's iSCSI name).
pub fn connector(host: &str, device_name: Option<&str>) -> Value {
    json!({
        "host": host,
        "platform": "x86_64",
        "os_type": "linux",
        "multipath": false,
        "do_local_attach": false,
        "initiator": compute_rpc::iscsi_initiator(host),
        "mountpoint": device_name,
    })
}

impl VolumeClient {
    /// `url` is the block storage endpoint (`…/volume`, with or without a trailing `/v3/…`).
    pub fn new(url: &str, session: Option<Arc<HttpValidator>>) -> Result<Self, Error> {
        let http = ServiceHttp::new("block storage", Duration::from_secs(60), session)?;
        let mut base = url.trim_end_matches('/').to_string();
        if let Some(i) = base.find("/v3") {
            base.truncate(i);
        }
        Ok(VolumeClient { http, url: base.into() })
    }

    /// One request under `/v3/{project}`; with the service token it is retried once with a fresh token on 401.
    pub async fn send(
        &self,
        who: As<'_>,
        method: Method,
        project: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), Error> {
        let url = format!("{}/v3/{project}{path}", self.url);
        self.http.send(who, method, &url, path, &[("openstack-api-version", MICROVERSION)], body).await
    }

    /// A volume, `None` when the caller cannot see it.
    pub async fn get(&self, who: As<'_>, project: &str, id: &str) -> Result<Option<Value>, Error> {
        if !safe(id) {
            return Ok(None);
        }
        let (status, v) = self.send(who, Method::GET, project, &format!("/volumes/{id}"), None).await?;
        match status {
            s if s.is_success() => Ok(Some(v["volume"].clone())),
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN => Ok(None),
            s => Err(unavailable(format!("GET /volumes/{id} answered {s}: {v}"))),
        }
    }

    /// Creates an attachment of `volume_id` for `instance_uuid` (volume `reserved`); a volume that cannot be
    /// reserved is a 400 in the block storage service's words.
    pub async fn attachment_create(&self, who: As<'_>, project: &str, volume_id: &str, instance_uuid: &str) -> Result<Value, Error> {
        let body = json!({"attachment": {"volume_uuid": volume_id, "instance_uuid": instance_uuid}});
        let (status, v) = self.send(who, Method::POST, project, "/attachments", Some(&body)).await?;
        match status {
            s if s.is_success() => Ok(v["attachment"].clone()),
            StatusCode::NOT_FOUND => Err(Error::NotFound(format!("Volume {volume_id} could not be found."))),
            _ => Err(Error::BadRequest(non_empty(error_message(&v), status))),
        }
    }

    /// Gives an attachment the host's connector; returns its `connection_info`.
    pub async fn attachment_update(&self, project: &str, id: &str, connector: &Value) -> Result<Value, Error> {
        let body = json!({"attachment": {"connector": connector}});
        let (status, v) = self.send(As::Service, Method::PUT, project, &format!("/attachments/{id}"), Some(&body)).await?;
        if !status.is_success() {
            return Err(Error::BadRequest(non_empty(error_message(&v), status)));
        }
        Ok(v["attachment"]["connection_info"].clone())
    }

    /// Marks an attachment attached (volume `in-use`).
    pub async fn attachment_complete(&self, project: &str, id: &str) -> Result<(), Error> {
        let body = json!({"os-complete": null});
        let (status, v) = self.send(As::Service, Method::POST, project, &format!("/attachments/{id}/action"), Some(&body)).await?;
        if !status.is_success() {
            return Err(Error::BadRequest(non_empty(error_message(&v), status)));
        }
        Ok(())
    }

    /// Deletes an attachment (an attachment already gone is fine).
    pub async fn attachment_delete(&self, project: &str, id: &str) -> Result<(), Error> {
        let (status, v) = self.send(As::Service, Method::DELETE, project, &format!("/attachments/{id}"), None).await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(unavailable(format!("deleting attachment {id} answered {status}: {v}")))
        }
    }

    /// A volume action (`os-begin_detaching`, `os-roll_detaching`, …).
    pub async fn action(&self, who: As<'_>, project: &str, volume_id: &str, body: &Value) -> Result<(), Error> {
        let (status, v) = self.send(who, Method::POST, project, &format!("/volumes/{volume_id}/action"), Some(body)).await?;
        match status {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Err(Error::NotFound(format!("Volume {volume_id} could not be found."))),
            _ => Err(Error::BadRequest(non_empty(error_message(&v), status))),
        }
    }

    /// Creates a volume (with the caller's token, so the caller's project owns it); returns it.
    pub async fn create(&self, who: As<'_>, project: &str, volume: &Value) -> Result<Value, Error> {
        let (status, v) = self.send(who, Method::POST, project, "/volumes", Some(&json!({"volume": volume}))).await?;
        match status {
            s if s.is_success() => Ok(v["volume"].clone()),
            StatusCode::FORBIDDEN | StatusCode::PAYLOAD_TOO_LARGE => {
                Err(Error::Forbidden(non_empty(error_message(&v), status)))
            }
            _ => Err(Error::BadRequest(non_empty(error_message(&v), status))),
        }
    }

    /// Deletes a volume (one already gone is fine).
    pub async fn delete(&self, who: As<'_>, project: &str, id: &str) -> Result<(), Error> {
        let (status, v) = self.send(who, Method::DELETE, project, &format!("/volumes/{id}"), None).await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(Error::BadRequest(non_empty(error_message(&v), status)))
        }
    }

    /// Waits until a volume leaves `creating`/`downloading`; `Ok(status)` with the status it reached (`None` when
    /// it is gone), after at most `timeout`.
    pub async fn wait_settled(&self, project: &str, id: &str, timeout: Duration) -> Result<Option<String>, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.get(As::Service, project, id).await?.map(|v| v["status"].as_str().unwrap_or_default().to_string());
            match status.as_deref() {
                Some("creating" | "downloading" | "uploading") if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                _ => return Ok(status),
            }
        }
    }
}

fn non_empty(message: String, status: StatusCode) -> String {
    if message.is_empty() { format!("The block storage service answered {status}") } else { message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cinder_error_messages_are_read_from_any_fault_key() {
        let body = json!({"badRequest": {"message": "Invalid volume: in use", "code": 400}});
        assert_eq!(error_message(&body), "Invalid volume: in use");
        assert_eq!(error_message(&json!(null)), "");
    }

    #[test]
    fn the_endpoint_may_carry_the_project_path() {
        let c = VolumeClient::new("http://h/volume/v3/abc", None).unwrap();
        assert_eq!(&*c.url, "http://h/volume");
        let c = VolumeClient::new("http://h/volume/", None).unwrap();
        assert_eq!(&*c.url, "http://h/volume");
    }
}
