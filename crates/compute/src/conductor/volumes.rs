//! The conductor's part of volumes, as upstream's compute manager does it with Cinder's attachments API: a
//! build's `block_device_mapping` phase, attach and detach of a running server's volumes (the agent plugs the disk
//! with its hypervisor driver in between), and the release of an instance's volumes when it goes.

use std::time::Duration;

use bus::Target;
use compute_rpc::{AttachVolume, BlockDeviceSpec, COMPUTE_TOPIC, DetachVolume, VolumeSnapshotCreate, VolumeSnapshotDelete, task_state};
use serde_json::json;

use super::{Conductor, spec_of};
use crate::{
    error::Error,
    store::{InstanceRow, bdm::Bdm, instances::Value},
    volume::{As, VolumeClient, connector, next_device},
};

/// How long a build waits for a volume it had made (from an image) to become available.
const VOLUME_CREATE_TIMEOUT: Duration = Duration::from_secs(600);

impl Conductor {
    fn volumes(&self) -> Result<&VolumeClient, Error> {
        self.volume().ok_or_else(|| Error::Unavailable("The block storage service is not available to compute.".into()))
    }

    /// A volume's attachment connected to `host`: its `connection_info`.
    async fn connect(&self, v: &VolumeClient, project: &str, b: &Bdm, host: &str) -> Result<serde_json::Value, Error> {
        let attachment = b.attachment_id.as_deref().unwrap_or_default();
        v.attachment_update(project, attachment, &connector(host, b.device_name.as_deref())).await
    }

    /// The `block_device_mapping` phase of a build on `host` (after `networking`): each volume of the instance
    /// is waited for (one made from an image), reserved, connected to the host and completed. `Ok(None)` when the
    /// instance went away meanwhile; `Err` when a volume cannot be attached (the caller releases them all).
    pub(super) async fn setup_volumes(&self, inst: &InstanceRow, host: &str) -> Result<Option<Vec<BlockDeviceSpec>>, Error> {
        let bdms = self.store().bdm_list(&inst.uuid).await?;
        if bdms.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let expected = [Some(task_state::NETWORKING.to_string())];
        let set = [("task_state", Value::S(Some(task_state::BLOCK_DEVICE_MAPPING.into())))];
        if !self.store().instance_update(&inst.uuid, Some(&expected), &set).await? {
            return Ok(None);
        }
        let v = self.volumes()?;
        let mut devices = Vec::new();
        let mut named: Vec<Bdm> = bdms.iter().filter(|b| b.device_name.is_some()).cloned().collect();
        for mut b in bdms {
            // A volume attached while the instance was offloaded gets its device now that it has a host.
            if b.device_name.is_none() {
                b.device_name = Some(next_device(&inst.flavor, inst.config_drive, &named, None));
                self.store().bdm_update(&b).await?;
                named.push(b.clone());
            }
            let Some(volume_id) = b.volume_id.clone() else {
                return Err(Error::BadRequest(format!("Block device mapping {} has no volume", b.id)));
            };
            // A reschedule: the attachment made for the last host goes, a new one is made for this one.
            if let Some(old) = b.attachment_id.take() {
                v.attachment_delete(&inst.project_id, &old).await?;
                self.store().bdm_update(&b).await?;
            }
            {
                match v.wait_settled(&inst.project_id, &volume_id, VOLUME_CREATE_TIMEOUT).await?.as_deref() {
                    Some("available") => {}
                    Some(status) => {
                        return Err(Error::BadRequest(format!(
                            "Volume {volume_id} did not finish being created and is in status {status}."
                        )));
                    }
                    None => return Err(Error::BadRequest(format!("Volume {volume_id} could not be found."))),
                }
                let a = v.attachment_create(As::Service, &inst.project_id, &volume_id, &inst.uuid).await?;
                b.attachment_id = a["id"].as_str().map(str::to_string);
                self.store().bdm_update(&b).await?;
            }
            let info = self.connect(v, &inst.project_id, &b, host).await?;
            v.attachment_complete(&inst.project_id, b.attachment_id.as_deref().unwrap_or_default()).await?;
            b.connection_info = Some(info.clone());
            self.store().bdm_update(&b).await?;
            devices.push(BlockDeviceSpec {
                volume_id,
                device_name: b.device_name.clone().unwrap_or_default(),
                boot_index: b.boot_index,
                connection_info: info,
            });
        }
        let now = self.store().instance_get(&inst.uuid).await?;
        if now.is_none_or(|i| i.deleted) {
            self.release_volumes(&inst.uuid).await?;
            return Ok(None);
        }
        Ok(Some(devices))
    }

    /// Attaches a reserved volume (its attachment made by the API) to a built instance: connect it to the
    /// instance's host, have the agent plug it, complete the attachment. Runs in the background; a failure
    /// deletes the attachment and the mapping (the volume is available again).
    pub fn attach_volume(&self, inst: InstanceRow, b: Bdm, request_id: String) {
        let c = self.clone();
        tokio::spawn(async move {
            if let Err(e) = c.attach_volume_now(&inst, &b, &request_id).await {
                tracing::warn!(instance = %inst.uuid, volume = ?b.volume_id, error = %e, "attaching a volume failed");
                if let Ok(v) = c.volumes()
                    && let Some(a) = &b.attachment_id
                    && let Err(e) = v.attachment_delete(&inst.project_id, a).await
                {
                    tracing::warn!(attachment = %a, error = %e, "cannot delete the attachment of a failed attach");
                }
                if let Err(e) = c.store().bdm_delete(&b.id).await {
                    tracing::warn!(bdm = %b.id, error = %e, "cannot forget the mapping of a failed attach");
                }
            }
        });
    }

    async fn attach_volume_now(&self, inst: &InstanceRow, b: &Bdm, request_id: &str) -> Result<(), Error> {
        let v = self.volumes()?;
        let host = inst.host.clone().ok_or_else(|| Error::Conflict(format!("Instance {} has no host", inst.uuid)))?;
        let info = self.connect(v, &inst.project_id, b, &host).await?;
        let metadata = self.store().metadata_of(&[&inst.uuid]).await?.remove(&inst.uuid).unwrap_or_default();
        let msg = AttachVolume {
            instance: spec_of(inst, metadata),
            block_device: BlockDeviceSpec {
                volume_id: b.volume_id.clone().unwrap_or_default(),
                device_name: b.device_name.clone().unwrap_or_default(),
                boot_index: b.boot_index,
                connection_info: info,
            },
            request_id: request_id.to_string(),
        };
        self.agent_call(inst, &msg, "attach the volume").await?;
        v.attachment_complete(&inst.project_id, b.attachment_id.as_deref().unwrap_or_default()).await?;
        let mut b = b.clone();
        b.connection_info = Some(msg.block_device.connection_info);
        self.store().bdm_update(&b).await?;
        tracing::info!(instance = %inst.uuid, volume = ?b.volume_id, "volume attached");
        Ok(())
    }

    /// Detaches a volume (in `detaching`, set by the API) from an instance: the agent unplugs it, then the
    /// attachment and the mapping go (the volume is available). Runs in the background; when the agent cannot
    /// unplug it the volume goes back to `in-use` and the mapping stays.
    pub fn detach_volume(&self, inst: InstanceRow, b: Bdm, request_id: String) {
        let c = self.clone();
        tokio::spawn(async move {
            if let Err(e) = c.detach_volume_now(&inst, &b, &request_id).await {
                tracing::warn!(instance = %inst.uuid, volume = ?b.volume_id, error = %e, "detaching a volume failed");
                if let (Ok(v), Some(vid)) = (c.volumes(), &b.volume_id) {
                    let _ = v.action(As::Service, &inst.project_id, vid, &json!({"os-roll_detaching": {}})).await;
                }
            }
        });
    }

    async fn detach_volume_now(&self, inst: &InstanceRow, b: &Bdm, request_id: &str) -> Result<(), Error> {
        let v = self.volumes()?;
        let volume_id = b.volume_id.clone().unwrap_or_default();
        if inst.host.is_some() {
            let msg = DetachVolume { uuid: inst.uuid.clone(), volume_id: volume_id.clone(), request_id: request_id.to_string() };
            self.agent_call(inst, &msg, "detach the volume").await?;
        }
        if let Some(a) = &b.attachment_id {
            v.attachment_delete(&inst.project_id, a).await?;
        }
        self.store().bdm_delete(&b.id).await?;
        tracing::info!(instance = %inst.uuid, volume = %volume_id, "volume detached");
        Ok(())
    }

    /// An assisted volume snapshot (the API checked the volume's server): the agent continues the volume's disk on
    /// `create_info.new_file`, then the block storage service's snapshot `create_info.snapshot_id` is told how it
    /// went (`os-update_snapshot_status`: `creating` at 90% or `error`, as upstream). Runs in the background.
    pub fn volume_snapshot_create(&self, inst: InstanceRow, volume_id: String, create_info: serde_json::Value, request_id: String) {
        let c = self.clone();
        tokio::spawn(async move {
            let snapshot_id = create_info["snapshot_id"].as_str().unwrap_or_default().to_string();
            let msg = VolumeSnapshotCreate { uuid: inst.uuid.clone(), volume_id: volume_id.clone(), create_info, request_id };
            let status = match c.agent_call(&inst, &msg, "snapshot the volume").await {
                Ok(()) => json!({"status": "creating", "progress": "90%"}),
                Err(e) => {
                    tracing::warn!(instance = %inst.uuid, volume = %volume_id, error = %e, "assisted volume snapshot failed");
                    json!({"status": "error", "progress": "90%"})
                }
            };
            c.snapshot_status(&inst, &snapshot_id, status).await;
        });
    }

    /// An assisted snapshot's file is merged away (`delete_info` as the API received it); the block storage
    /// service's snapshot is told (`deleting` at 90% or `error_deleting`). Runs in the background.
    pub fn volume_snapshot_delete(&self, inst: InstanceRow, volume_id: String, snapshot_id: String, delete_info: serde_json::Value, request_id: String) {
        let c = self.clone();
        tokio::spawn(async move {
            let msg = VolumeSnapshotDelete { uuid: inst.uuid.clone(), volume_id: volume_id.clone(), snapshot_id: snapshot_id.clone(), delete_info, request_id };
            let status = match c.agent_call(&inst, &msg, "merge the volume's files").await {
                Ok(()) => json!({"status": "deleting", "progress": "90%"}),
                Err(e) => {
                    tracing::warn!(instance = %inst.uuid, volume = %volume_id, error = %e, "deleting an assisted volume snapshot failed");
                    json!({"status": "error_deleting", "progress": "90%"})
                }
            };
            c.snapshot_status(&inst, &snapshot_id, status).await;
        });
    }

    /// Calls the agent of the instance's host; `action` names the work in the error.
    pub(super) async fn agent_call<M: bus::Rpc<Reply = ()>>(&self, inst: &InstanceRow, msg: &M, action: &str) -> Result<(), Error> {
        let host = inst.host.clone().ok_or_else(|| Error::Conflict(format!("Instance {} has no host", inst.uuid)))?;
        self.bus()
            .call(&Target::server(COMPUTE_TOPIC, &host), msg, self.settings().call_timeout)
            .await
            .map_err(|e| Error::Unavailable(format!("Compute service of {host} cannot {action}: {e}")))
    }

    /// Reports an assisted snapshot's progress to the block storage service; a snapshot it does not know (a
    /// caller that made up the id) is only logged.
    async fn snapshot_status(&self, inst: &InstanceRow, snapshot_id: &str, status: serde_json::Value) {
        let Ok(v) = self.volumes() else { return };
        let path = format!("/snapshots/{snapshot_id}/action");
        let body = json!({"os-update_snapshot_status": status});
        match v.send(As::Service, reqwest::Method::POST, &inst.project_id, &path, Some(&body)).await {
            Ok((s, _)) if s.is_success() => {}
            Ok((s, _)) => tracing::info!(snapshot = %snapshot_id, status = %s, "the block storage service did not take the snapshot's status"),
            Err(e) => tracing::warn!(snapshot = %snapshot_id, error = %e, "cannot report an assisted snapshot's status"),
        }
    }

    /// The volumes a re-created guest (a rebuild) gets: those attached, as they were connected.
    pub(super) async fn attached_devices(&self, uuid: &str) -> Result<Vec<BlockDeviceSpec>, Error> {
        Ok(self
            .store()
            .bdm_list(uuid)
            .await?
            .into_iter()
            .filter_map(|b| {
                Some(BlockDeviceSpec {
                    volume_id: b.volume_id?,
                    device_name: b.device_name.unwrap_or_default(),
                    boot_index: b.boot_index,
                    connection_info: b.connection_info?,
                })
            })
            .collect())
    }

    /// An instance is gone (or its build failed): its attachments are deleted, the volumes marked
    /// `delete_on_termination` deleted, and its mappings forgotten. Failures are logged.
    pub async fn release_volumes(&self, uuid: &str) -> Result<(), Error> {
        let bdms = self.store().bdm_list(uuid).await?;
        if bdms.is_empty() {
            return Ok(());
        }
        let project = self.store().instance_get(uuid).await?.map(|i| i.project_id).unwrap_or_default();
        let Some(v) = self.volume() else { return Ok(()) };
        for b in bdms {
            if let Some(a) = &b.attachment_id
                && let Err(e) = v.attachment_delete(&project, a).await
            {
                tracing::warn!(instance = %uuid, attachment = %a, error = %e, "cannot delete an attachment");
            }
            if b.delete_on_termination
                && let Some(vid) = &b.volume_id
                && let Err(e) = v.delete(As::Service, &project, vid).await
            {
                tracing::warn!(instance = %uuid, volume = %vid, error = %e, "cannot delete a volume of a deleted instance");
            }
            self.store().bdm_delete(&b.id).await?;
        }
        Ok(())
    }
}
