//! The handlers of the compute topic, as upstream's `nova.compute.manager.ComputeManager`: build, terminate,
//! lifecycle actions and console output.
//!
//! Every change to an instance goes to the conductor as an [`InstanceUpdate`] that names the task state the
//! agent expects the instance in; a `false` answer means the instance was deleted (or moved on) meanwhile, and
//! the agent stops what it was doing. Messages for one instance are handled one at a time ([`InstanceLocks`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bus::{Dispatcher, RemoteError};
use compute_rpc::{
    Action, ActionEvent, AttachInterface, AttachVolume, BuildAndRunInstance, DetachInterface, DetachVolume, BuildFailed, EventPhase, ExternalInstanceEvent, GetConsoleOutput, GetDiagnostics, GetHostUptime, InstanceAction,
    InstanceChanges, InstanceSpec, InstanceTerminated, InstanceUpdate, PowerState, TerminateInstance, VolumeSnapshotCreate, VolumeSnapshotDelete, task_state,
    vm_state,
};

use crate::Error;
use crate::agent::Inner;
use crate::events::VIF_PLUGGED;
use crate::hypervisor::{GuestContext, ImageSource, NetworkInterface};

/// Why a build whose ports were not plugged fails, upstream's `VirtualInterfaceCreateException`.
pub const VIF_FAILED: &str = "Virtual Interface creation failed";

/// The instance action event of a build, upstream's name.
pub const BUILD_EVENT: &str = "compute__do_build_and_run_instance";
/// The instance action event of a delete, upstream's name.
pub const TERMINATE_EVENT: &str = "compute_terminate_instance";

pub(crate) fn dispatcher(inner: Arc<Inner>) -> Dispatcher {
    let (build, terminate, action, console, diagnostics) =
        (inner.clone(), inner.clone(), inner.clone(), inner.clone(), inner.clone());
    let (attach, detach, snapshot_create, snapshot_delete, events) = (inner.clone(), inner.clone(), inner.clone(), inner.clone(), inner.clone());
    let (plug, unplug) = (inner.clone(), inner);
    Dispatcher::new()
        .on(move |m: BuildAndRunInstance| {
            let inner = build.clone();
            async move {
                inner.build_and_run(m).await;
                Ok::<_, RemoteError>(())
            }
        })
        .on(move |m: TerminateInstance| {
            let inner = terminate.clone();
            async move {
                inner.terminate(m).await;
                Ok(())
            }
        })
        .on(move |m: InstanceAction| {
            let inner = action.clone();
            async move {
                inner.instance_action(m).await;
                Ok(())
            }
        })
        .on(move |m: GetConsoleOutput| {
            let inner = console.clone();
            async move { inner.console_output(m).await.map_err(|e| e.to_remote()) }
        })
        .on(move |m: GetDiagnostics| {
            let inner = diagnostics.clone();
            async move { inner.driver.diagnostics(&m.instance).await.map_err(|e| e.to_remote()) }
        })
        .on(move |m: AttachVolume| {
            let inner = attach.clone();
            async move {
                let _guard = inner.locks.lock(&m.instance.uuid).await;
                tracing::info!(instance = %m.instance.uuid, volume = %m.block_device.volume_id, request_id = %m.request_id, "attaching volume");
                inner.driver.attach_volume(&m.instance, &m.block_device).await.map_err(|e| e.to_remote())
            }
        })
        .on(move |m: DetachVolume| {
            let inner = detach.clone();
            async move {
                let _guard = inner.locks.lock(&m.uuid).await;
                tracing::info!(instance = %m.uuid, volume = %m.volume_id, request_id = %m.request_id, "detaching volume");
                match inner.driver.detach_volume(&m.uuid, &m.volume_id).await {
                    // No guest, no disk to take away.
                    Ok(()) | Err(Error::NotFound(_)) => Ok(()),
                    Err(e) => Err(e.to_remote()),
                }
            }
        })
        .on(move |m: AttachInterface| {
            let inner = plug.clone();
            async move {
                let _guard = inner.locks.lock(&m.uuid).await;
                tracing::info!(instance = %m.uuid, port = %m.vif.port_id, request_id = %m.request_id, "attaching interface");
                inner.driver.attach_interface(&m.uuid, &NetworkInterface::of(&m.vif)).await.map_err(|e| e.to_remote())
            }
        })
        .on(move |m: DetachInterface| {
            let inner = unplug.clone();
            async move {
                let _guard = inner.locks.lock(&m.uuid).await;
                tracing::info!(instance = %m.uuid, port = %m.port_id, request_id = %m.request_id, "detaching interface");
                match inner.driver.detach_interface(&m.uuid, &m.port_id).await {
                    // No guest, no interface to take away.
                    Ok(()) | Err(Error::NotFound(_)) => Ok(()),
                    Err(e) => Err(e.to_remote()),
                }
            }
        })
        .on(move |m: VolumeSnapshotCreate| {
            let inner = snapshot_create.clone();
            async move {
                let _guard = inner.locks.lock(&m.uuid).await;
                tracing::info!(instance = %m.uuid, volume = %m.volume_id, request_id = %m.request_id, "snapshotting volume");
                inner.driver.volume_snapshot_create(&m.uuid, &m.volume_id, &m.create_info).await.map_err(|e| e.to_remote())
            }
        })
        .on(move |m: VolumeSnapshotDelete| {
            let inner = snapshot_delete.clone();
            async move {
                let _guard = inner.locks.lock(&m.uuid).await;
                tracing::info!(instance = %m.uuid, volume = %m.volume_id, snapshot = %m.snapshot_id, request_id = %m.request_id, "deleting volume snapshot");
                inner.driver.volume_snapshot_delete(&m.uuid, &m.volume_id, &m.delete_info).await.map_err(|e| e.to_remote())
            }
        })
        .on(|_: GetHostUptime| async move { host_uptime().map_err(|e| e.to_remote()) })
        .on(move |m: ExternalInstanceEvent| {
            // Never behind the instance's lock: the build that waits for it holds that.
            let inner = events.clone();
            async move {
                let delivered = inner.events.deliver(&m.instance_uuid, &m.name, m.tag.as_deref(), &m.status);
                tracing::info!(instance = %m.instance_uuid, event = %m.name, tag = ?m.tag, status = %m.status, delivered, "external event");
                Ok(())
            }
        })
}

/// This host's `uptime` line, from `/proc/uptime` and `/proc/loadavg`.
pub(crate) fn host_uptime() -> Result<String, Error> {
    let read = |path: &str| {
        std::fs::read_to_string(path).map_err(|source| Error::Io { context: format!("reading {path}"), source })
    };
    let up: f64 = read("/proc/uptime")?.split_whitespace().next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let load: Vec<String> = read("/proc/loadavg")?.split_whitespace().take(3).map(str::to_string).collect();
    Ok(format_uptime(up as u64, &load, chrono_now_hms()))
}

fn chrono_now_hms() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let day = secs % 86_400;
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}

/// `uptime`'s format: ` 08:32:11 up 93 days, 18:25,  0 users,  load average: 0.20, 0.12, 0.14`.
pub(crate) fn format_uptime(up_secs: u64, load: &[String], now: String) -> String {
    let days = up_secs / 86_400;
    let (h, m) = (up_secs % 86_400 / 3600, up_secs % 3600 / 60);
    let span = match days {
        0 => format!("{h:2}:{m:02}"),
        1 => format!("1 day, {h:2}:{m:02}"),
        d => format!("{d} days, {h:2}:{m:02}"),
    };
    format!(" {now} up {span},  0 users,  load average: {}", load.join(", "))
}

/// One lock per instance uuid, held while a message for that instance is handled. Entries go away with their
/// last user.
#[derive(Default)]
pub(crate) struct InstanceLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

pub(crate) struct InstanceGuard<'a> {
    locks: &'a InstanceLocks,
    uuid: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl InstanceLocks {
    pub(crate) async fn lock(&self, uuid: &str) -> InstanceGuard<'_> {
        let lock = self.map().entry(uuid.to_owned()).or_default().clone();
        let guard = lock.lock_owned().await;
        InstanceGuard { locks: self, uuid: uuid.to_owned(), guard: Some(guard) }
    }

    /// The lock of `uuid` if nobody holds it.
    pub(crate) fn try_lock(&self, uuid: &str) -> Option<InstanceGuard<'_>> {
        let lock = self.map().entry(uuid.to_owned()).or_default().clone();
        let guard = lock.try_lock_owned().ok();
        guard.map(|guard| InstanceGuard { locks: self, uuid: uuid.to_owned(), guard: Some(guard) })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.locks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

impl Drop for InstanceGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.locks.map();
        // Only the map holds it: nobody has or waits for the lock.
        if map.get(&self.uuid).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            map.remove(&self.uuid);
        }
    }
}

/// How an operation on an instance ended, short of success.
enum Stop {
    /// An update was refused: the instance was deleted or changed task state meanwhile.
    Gone,
    /// The conductor could not be reached.
    Bus(bus::Error),
    /// The hypervisor failed; `guest_lost` when the instance's guest is gone because of it.
    Driver { error: Error, guest_lost: bool },
    /// The build cannot succeed on any host: it fails without a reschedule (upstream's `BuildAbortException`).
    Abort(String),
}

impl From<bus::Error> for Stop {
    fn from(error: bus::Error) -> Self {
        Stop::Bus(error)
    }
}

fn driver(error: Error) -> Stop {
    Stop::Driver { error, guest_lost: false }
}

fn set_task(state: &str) -> InstanceChanges {
    InstanceChanges { task_state: Some(Some(state.to_owned())), ..Default::default() }
}

/// The end of an action: a new vm state and power state, no task.
fn settled(vm: &str, power: PowerState) -> InstanceChanges {
    InstanceChanges {
        vm_state: Some(vm.to_owned()),
        task_state: Some(None),
        power_state: Some(power),
        ..Default::default()
    }
}

/// The task states an instance may be in while the agent performs `action`: what the API set, and what the
/// agent moves it through.
fn action_task_states(action: &Action) -> &'static [&'static str] {
    use task_state::*;
    match action {
        Action::Stop => &[POWERING_OFF],
        Action::Start => &[POWERING_ON],
        Action::Reboot { hard: false } => &[REBOOTING, REBOOT_PENDING, REBOOT_STARTED],
        Action::Reboot { hard: true } => &[REBOOTING_HARD, REBOOT_PENDING_HARD, REBOOT_STARTED_HARD],
        Action::Pause => &[PAUSING],
        Action::Unpause => &[UNPAUSING],
        Action::Suspend => &[SUSPENDING],
        Action::Resume => &[RESUMING],
        Action::Rebuild { .. } => &[REBUILDING, REBUILD_BLOCK_DEVICE_MAPPING, REBUILD_SPAWNING],
        Action::Resize { .. } => &[RESIZE_PREP, RESIZE_MIGRATING, RESIZE_MIGRATED, RESIZE_FINISH],
        Action::RevertResize { .. } => &[RESIZE_REVERTING],
        Action::Snapshot { .. } => &[IMAGE_SNAPSHOT, IMAGE_PENDING_UPLOAD, IMAGE_UPLOADING],
        Action::Shelve { .. } => {
            &[SHELVING, SHELVING_IMAGE_PENDING_UPLOAD, SHELVING_IMAGE_UPLOADING, SHELVING_OFFLOADING]
        }
        Action::ShelveOffload => &[SHELVING_OFFLOADING],
        Action::Unshelve => &[UNSHELVING],
        Action::Rescue { .. } => &[RESCUING],
        Action::Unrescue => &[UNRESCUING],
    }
}

/// The last `length` lines of `output` (all when `None`), as upstream: lines split at `\n`, and bytes outside
/// ASCII shown as U+FFFD.
pub(crate) fn tail(output: &str, length: Option<u64>) -> String {
    let kept = match length {
        None => output,
        Some(0) => "",
        Some(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            let starts: Vec<usize> = std::iter::once(0).chain(output.match_indices('\n').map(|(i, _)| i + 1)).collect();
            &output[starts[starts.len().saturating_sub(n)]..]
        }
    };
    kept.bytes().map(|b| if b.is_ascii() { b as char } else { char::REPLACEMENT_CHARACTER }).collect()
}

impl Inner {
    /// Applies `changes` if the instance is in one of the `expected` task states.
    async fn update(&self, uuid: &str, expected: &[&str], changes: InstanceChanges) -> Result<bool, bus::Error> {
        let msg = InstanceUpdate {
            uuid: uuid.to_owned(),
            expected_task_state: Some(expected.iter().map(|s| Some((*s).to_owned())).collect()),
            changes,
        };
        let applied = self.call(&msg).await?;
        if !applied {
            tracing::info!(instance = %uuid, ?expected, "instance update refused: deleted or in another task state");
        }
        Ok(applied)
    }

    /// Like [`Inner::update`], with a refusal as [`Stop::Gone`].
    async fn advance(&self, uuid: &str, expected: &[&str], changes: InstanceChanges) -> Result<(), Stop> {
        if self.update(uuid, expected, changes).await? { Ok(()) } else { Err(Stop::Gone) }
    }

    async fn event(&self, uuid: &str, request_id: &str, event: &str, phase: EventPhase) {
        let msg = ActionEvent {
            instance_uuid: uuid.to_owned(),
            request_id: request_id.to_owned(),
            event: event.to_owned(),
            host: self.config.host.clone(),
            phase,
        };
        if let Err(error) = self.call(&msg).await {
            tracing::warn!(instance = %uuid, %event, %error, "cannot record an instance action event");
        }
    }

    fn finish(success: bool, details: Option<String>) -> EventPhase {
        EventPhase::Finish { success, details }
    }

    /// The guest's power state, or `nominal` if the hypervisor cannot tell.
    async fn power_or(&self, uuid: &str, nominal: PowerState) -> PowerState {
        self.driver.power_state(uuid).await.unwrap_or(nominal)
    }

    // ----- build -----

    pub(crate) async fn build_and_run(&self, msg: BuildAndRunInstance) {
        let BuildAndRunInstance { instance, request_id, vifs, block_devices, .. } = msg;
        let uuid = instance.uuid.as_str();
        let _guard = self.locks.lock(uuid).await;
        tracing::info!(instance = %uuid, request_id = %request_id, "building instance");
        self.event(uuid, &request_id, BUILD_EVENT, EventPhase::Start).await;
        let phase = match self.build(&instance, &request_id, &vifs, &block_devices).await {
            Ok(()) => {
                tracing::info!(instance = %uuid, "instance is active");
                self.build_outcome(true).await;
                Self::finish(true, None)
            }
            Err(Stop::Gone) => {
                // As upstream: the build ends without error, its guest removed.
                tracing::info!(instance = %uuid, "instance disappeared during build");
                if let Err(error) = self.driver.destroy(uuid).await {
                    tracing::error!(instance = %uuid, %error, "cannot destroy the guest of a deleted instance");
                }
                Self::finish(true, None)
            }
            Err(Stop::Bus(error)) => self.build_failed(&instance, &request_id, format!("{error}"), true).await,
            Err(Stop::Driver { error, .. }) => self.build_failed(&instance, &request_id, error.to_string(), true).await,
            Err(Stop::Abort(reason)) => self.build_failed(&instance, &request_id, reason, false).await,
        };
        self.event(uuid, &request_id, BUILD_EVENT, phase).await;
    }

    async fn build(
        &self,
        instance: &InstanceSpec,
        request_id: &str,
        vifs: &[compute_rpc::VifSpec],
        block_devices: &[compute_rpc::BlockDeviceSpec],
    ) -> Result<(), Stop> {
        use task_state::*;
        let uuid = instance.uuid.as_str();
        // The conductor binds the ports in `networking` and attaches the volumes in `block_device_mapping` before
        // it sends the build; an older one sent it in `scheduling`.
        self.advance(uuid, &[SCHEDULING, NETWORKING, BLOCK_DEVICE_MAPPING], set_task(BLOCK_DEVICE_MAPPING)).await?;
        self.advance(uuid, &[BLOCK_DEVICE_MAPPING], set_task(SPAWNING)).await?;
        let mut context = GuestContext::for_instance(instance, request_id);
        context.network_interfaces = vifs.iter().map(NetworkInterface::of).collect();
        context.block_devices = block_devices.to_vec();
        // The waits are registered before the guest starts plugging its ports, as upstream's
        // `wait_for_instance_event`: an event that comes while the guest starts is not lost.
        let timeout = self.config.vif_plugging_timeout;
        let unplugged: Vec<String> =
            if timeout.is_zero() { Vec::new() } else { vifs.iter().filter(|v| !v.active).map(|v| v.port_id.clone()).collect() };
        let waits = self.events.prepare(uuid, VIF_PLUGGED, &unplugged);
        let spawned = self.driver.spawn(instance, &context).await.map_err(driver);
        let plugged = match spawned {
            Ok(()) => self.wait_for_plugging(uuid, waits).await,
            Err(e) => Err(e),
        };
        self.events.clear(uuid);
        plugged?;
        let power = self.power_or(uuid, PowerState::Running).await;
        let active = InstanceChanges { launched: true, ..settled(vm_state::ACTIVE, power) };
        self.advance(uuid, &[SPAWNING], active).await
    }

    /// Waits for `network-vif-plugged` of each port in `waits` (registered before the guest started), up to
    /// `vif_plugging_timeout` in all. A `failed` event, or a timeout when `vif_plugging_is_fatal`, aborts the
    /// build (upstream's `VirtualInterfaceCreateException`); a timeout otherwise only warns.
    async fn wait_for_plugging(&self, uuid: &str, waits: Vec<(String, tokio::sync::oneshot::Receiver<String>)>) -> Result<(), Stop> {
        if waits.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let deadline = tokio::time::Instant::now() + self.config.vif_plugging_timeout;
        for (port, rx) in waits {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(status)) if status == "failed" => {
                    tracing::warn!(instance = %uuid, %port, "the network service failed to plug a port");
                    if self.config.vif_plugging_is_fatal {
                        return Err(Stop::Abort(VIF_FAILED.into()));
                    }
                }
                Ok(Ok(_)) => tracing::info!(instance = %uuid, %port, waited_ms = started.elapsed().as_millis() as u64, "port plugged"),
                // the waits were cleared (the instance is being deleted): the next update finds it gone
                Ok(Err(_)) => return Ok(()),
                Err(_) if self.config.vif_plugging_is_fatal => {
                    tracing::warn!(instance = %uuid, %port, timeout_s = self.config.vif_plugging_timeout.as_secs_f64(), "timed out waiting for network-vif-plugged");
                    return Err(Stop::Abort(VIF_FAILED.into()));
                }
                Err(_) => {
                    tracing::warn!(instance = %uuid, %port, "timed out waiting for network-vif-plugged; going on (vif_plugging_is_fatal is false)");
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Cleans up after a failed build and asks the conductor to reschedule it (when `reschedule`); only a guest
    /// that cannot be removed keeps the instance here (no reschedule). Returns the build event's end.
    async fn build_failed(&self, instance: &InstanceSpec, request_id: &str, reason: String, reschedule: bool) -> EventPhase {
        let uuid = instance.uuid.as_str();
        tracing::warn!(instance = %uuid, %reason, "build failed");
        let (reason, reschedule) = match self.driver.destroy(uuid).await {
            Ok(()) => (reason, reschedule),
            Err(error) => {
                tracing::error!(instance = %uuid, %error, "cannot destroy the guest of a failed build");
                (format!("{reason}; cleaning up failed: {error}"), false)
            }
        };
        self.build_outcome(false).await;
        let msg = BuildFailed {
            instance_uuid: uuid.to_owned(),
            request_id: request_id.to_owned(),
            host: self.config.host.clone(),
            reason: reason.clone(),
            reschedule,
        };
        if let Err(error) = self.call(&msg).await {
            tracing::error!(instance = %uuid, %error, "cannot report a failed build");
        }
        Self::finish(false, Some(reason))
    }

    // ----- terminate -----

    pub(crate) async fn terminate(&self, msg: TerminateInstance) {
        let TerminateInstance { uuid, request_id } = msg;
        // A build waiting for its ports stops waiting (as upstream clears an instance's events before it takes the
        // lock): it finds the instance deleting and gives way.
        self.events.clear(&uuid);
        let _guard = self.locks.lock(&uuid).await;
        tracing::info!(instance = %uuid, request_id = %request_id, "terminating instance");
        self.event(&uuid, &request_id, TERMINATE_EVENT, EventPhase::Start).await;
        let phase = match self.driver.destroy(&uuid).await {
            Ok(()) => {
                let msg = InstanceTerminated { instance_uuid: uuid.clone(), host: self.config.host.clone() };
                match self.call(&msg).await {
                    Ok(()) => Self::finish(true, None),
                    Err(error) => {
                        tracing::error!(instance = %uuid, %error, "cannot report a terminated instance");
                        Self::finish(false, Some(error.to_string()))
                    }
                }
            }
            Err(error) => {
                // As upstream, an instance whose guest cannot be removed goes to ERROR.
                tracing::error!(instance = %uuid, %error, "cannot destroy a guest");
                let changes = InstanceChanges {
                    vm_state: Some(vm_state::ERROR.to_owned()),
                    task_state: Some(None),
                    power_state: self.driver.power_state(&uuid).await.ok(),
                    ..Default::default()
                };
                if let Err(error) = self.update(&uuid, &[task_state::DELETING], changes).await {
                    tracing::error!(instance = %uuid, %error, "cannot set a failed delete's instance to ERROR");
                }
                Self::finish(false, Some(error.to_string()))
            }
        };
        self.event(&uuid, &request_id, TERMINATE_EVENT, phase).await;
    }

    // ----- actions -----

    pub(crate) async fn instance_action(&self, msg: InstanceAction) {
        let InstanceAction { instance, action, request_id } = msg;
        let uuid = instance.uuid.as_str();
        let event = action.event_name();
        let _guard = self.locks.lock(uuid).await;
        tracing::info!(instance = %uuid, request_id = %request_id, ?action, "instance action");
        self.event(uuid, &request_id, event, EventPhase::Start).await;
        let phase = match self.act(&instance, &action, &request_id).await {
            Ok(()) => Self::finish(true, None),
            Err(Stop::Gone) => {
                Self::finish(false, Some(format!("instance {uuid} was deleted or changed task state during {event}")))
            }
            Err(Stop::Bus(error)) => {
                tracing::error!(instance = %uuid, %error, "cannot report an action's progress");
                Self::finish(false, Some(error.to_string()))
            }
            Err(Stop::Abort(reason)) => Self::finish(false, Some(reason)),
            Err(Stop::Driver { error, guest_lost }) => {
                tracing::warn!(instance = %uuid, %error, ?action, "instance action failed");
                self.revert(uuid, &action, guest_lost).await;
                Self::finish(false, Some(error.to_string()))
            }
        };
        self.event(uuid, &request_id, event, phase).await;
    }

    async fn act(&self, instance: &InstanceSpec, action: &Action, request_id: &str) -> Result<(), Stop> {
        use vm_state::*;
        let uuid = instance.uuid.as_str();
        let expected = action_task_states(action);
        let context = GuestContext::for_instance(instance, request_id);
        let (end, nominal) = match action {
            Action::Rebuild { image_ref, block_devices } => return self.rebuild(instance, image_ref, block_devices, request_id).await,
            Action::Resize { flavor } => return self.resize(instance, flavor, request_id).await,
            Action::RevertResize { flavor } => return self.revert_resize(instance, flavor, request_id).await,
            Action::Snapshot { image_id, image_url, auth_token } => {
                return self.snapshot(instance, image_id, image_url, &auth_token.0).await;
            }
            Action::Shelve { image_id, image_url, auth_token, offload } => {
                return self.shelve(instance, image_id, image_url, &auth_token.0, *offload).await;
            }
            Action::ShelveOffload => return self.shelve_offload(uuid, task_state::SHELVING_OFFLOADING).await,
            Action::Stop => (STOPPED, PowerState::Shutdown),
            Action::Pause => (PAUSED, PowerState::Paused),
            Action::Suspend => (SUSPENDED, PowerState::Suspended),
            Action::Start
            | Action::Reboot { .. }
            | Action::Unpause
            | Action::Resume
            | Action::Unshelve
            | Action::Unrescue => (ACTIVE, PowerState::Running),
            Action::Rescue { .. } => (RESCUED, PowerState::Running),
        };
        let done = match action {
            Action::Stop => self.driver.power_off(uuid).await,
            Action::Start | Action::Unshelve => self.driver.power_on(instance, &context).await,
            Action::Reboot { hard } => self.driver.reboot(instance, &context, *hard).await,
            Action::Pause => self.driver.pause(uuid).await,
            Action::Unpause => self.driver.unpause(uuid).await,
            Action::Suspend => self.driver.suspend(uuid).await,
            Action::Resume => self.driver.resume(instance, &context).await,
            Action::Rescue { image_ref, image_properties, .. } => {
                let rescue = ImageSource { id: image_ref.clone(), properties: image_properties.clone() };
                self.driver.rescue(instance, &rescue, &context).await
            }
            Action::Unrescue => self.driver.unrescue(instance, &context).await,
            Action::Rebuild { .. }
            | Action::Resize { .. }
            | Action::RevertResize { .. }
            | Action::Snapshot { .. }
            | Action::Shelve { .. }
            | Action::ShelveOffload => unreachable!("handled above"),
        };
        done.map_err(driver)?;
        let power = self.power_or(uuid, nominal).await;
        self.advance(uuid, expected, settled(end, power)).await
    }

    /// Upstream's rebuild: record the power state, remove the guest, walk the task states, spawn from the new
    /// image, and end ACTIVE on it.
    async fn rebuild(
        &self,
        instance: &InstanceSpec,
        image_ref: &str,
        block_devices: &[compute_rpc::BlockDeviceSpec],
        request_id: &str,
    ) -> Result<(), Stop> {
        use task_state::*;
        let uuid = instance.uuid.as_str();
        let power = self.driver.power_state(uuid).await.ok();
        self.advance(uuid, &[REBUILDING], InstanceChanges { power_state: power, ..set_task(REBUILDING) }).await?;
        self.driver.destroy(uuid).await.map_err(driver)?;
        self.advance(uuid, &[REBUILDING], set_task(REBUILD_BLOCK_DEVICE_MAPPING)).await?;
        self.advance(uuid, &[REBUILD_BLOCK_DEVICE_MAPPING], set_task(REBUILD_SPAWNING)).await?;
        let mut rebuilt = instance.clone();
        if rebuilt.image_ref != image_ref {
            // The properties were the old image's.
            rebuilt.image_ref = image_ref.to_owned();
            rebuilt.image_properties.clear();
        }
        let mut context = GuestContext::for_instance(&rebuilt, request_id);
        context.block_devices = block_devices.to_vec();
        if let Err(error) = self.driver.spawn(&rebuilt, &context).await {
            return Err(Stop::Driver { error, guest_lost: true });
        }
        // A server stopped before its rebuild is stopped after it, as upstream.
        let was_stopped = power == Some(PowerState::Shutdown);
        if was_stopped && let Err(error) = self.driver.power_off(uuid).await {
            return Err(Stop::Driver { error, guest_lost: false });
        }
        let end = if was_stopped { vm_state::STOPPED } else { vm_state::ACTIVE };
        let power = self.power_or(uuid, if was_stopped { PowerState::Shutdown } else { PowerState::Running }).await;
        let changes = InstanceChanges {
            launched: true,
            image_ref: Some(image_ref.to_owned()),
            ..settled(end, power)
        };
        self.advance(uuid, &[REBUILD_SPAWNING], changes).await
    }

    /// A resize in place: `resize_prep` → `resize_migrating` → `resize_migrated` → `resize_finish`, the driver
    /// gives the guest the new flavor, and the instance waits in `resized` (VERIFY_RESIZE) for confirm or revert.
    async fn resize(&self, instance: &InstanceSpec, flavor: &compute_rpc::FlavorSpec, request_id: &str) -> Result<(), Stop> {
        use task_state::*;
        let uuid = instance.uuid.as_str();
        self.advance(uuid, &[RESIZE_PREP], set_task(RESIZE_MIGRATING)).await?;
        let context = GuestContext::for_instance(instance, request_id);
        self.driver.resize(instance, flavor, &context).await.map_err(driver)?;
        self.advance(uuid, &[RESIZE_MIGRATING], set_task(RESIZE_MIGRATED)).await?;
        self.advance(uuid, &[RESIZE_MIGRATED], set_task(RESIZE_FINISH)).await?;
        let power = self.power_or(uuid, PowerState::Running).await;
        let changes = InstanceChanges { flavor: Some(flavor.clone()), ..settled(vm_state::RESIZED, power) };
        self.advance(uuid, &[RESIZE_FINISH], changes).await
    }

    /// A snapshot: `image_snapshot` → `image_pending_upload` → `image_uploading`, the driver writes the root disk
    /// to a temporary file, which is streamed to the image service's `PUT /v2/images/{id}/file` with the user's
    /// token; the task state is cleared and the vm state left alone.
    async fn snapshot(&self, instance: &InstanceSpec, image_id: &str, image_url: &str, token: &str) -> Result<(), Stop> {
        use task_state::*;
        let tasks = [IMAGE_SNAPSHOT, IMAGE_PENDING_UPLOAD, IMAGE_UPLOADING];
        self.upload_root_disk(instance, image_id, image_url, token, tasks).await?;
        let changes = InstanceChanges { task_state: Some(None), ..Default::default() };
        self.advance(&instance.uuid, &[IMAGE_UPLOADING], changes).await
    }

    /// Moves the instance from `tasks[0]` through `tasks[1]` (the driver writes the root disk to a temporary
    /// file) to `tasks[2]` (the file is streamed to the image `image_id` with the user's token).
    async fn upload_root_disk(
        &self,
        instance: &InstanceSpec,
        image_id: &str,
        image_url: &str,
        token: &str,
        [from, pending, uploading]: [&str; 3],
    ) -> Result<(), Stop> {
        let uuid = instance.uuid.as_str();
        self.advance(uuid, &[from], set_task(pending)).await?;
        let dir = std::env::temp_dir().join(format!("stratus-snapshot-{image_id}"));
        let _ = tokio::fs::create_dir_all(&dir).await;
        let file = dir.join("disk");
        let result = async {
            let format = self.driver.snapshot(instance, &file).await?;
            self.advance(uuid, &[pending], set_task(uploading)).await.map_err(|_| {
                Error::Hypervisor(format!("instance {uuid} was deleted during its snapshot"))
            })?;
            crate::images::upload(image_url, token, image_id, &file, &format).await
        }
        .await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        result.map_err(driver)
    }

    /// Upstream's shelve: the guest is powered off (`shelving`), its root disk uploaded to the shelved image
    /// (`shelving_image_pending_upload` → `shelving_image_uploading`), and the instance ends `shelved`; with
    /// `offload` the guest is then destroyed as [`Self::shelve_offload`] does.
    async fn shelve(&self, instance: &InstanceSpec, image_id: &str, image_url: &str, token: &str, offload: bool) -> Result<(), Stop> {
        use task_state::*;
        let uuid = instance.uuid.as_str();
        match self.driver.power_state(uuid).await {
            Ok(PowerState::Shutdown | PowerState::Crashed | PowerState::NoState) => {}
            _ => self.driver.power_off(uuid).await.map_err(driver)?,
        }
        let tasks = [SHELVING, SHELVING_IMAGE_PENDING_UPLOAD, SHELVING_IMAGE_UPLOADING];
        self.upload_root_disk(instance, image_id, image_url, token, tasks).await?;
        if offload {
            self.advance(uuid, &[SHELVING_IMAGE_UPLOADING], set_task(SHELVING_OFFLOADING)).await?;
            return self.shelve_offload(uuid, SHELVING_OFFLOADING).await;
        }
        let power = self.power_or(uuid, PowerState::Shutdown).await;
        self.advance(uuid, &[SHELVING_IMAGE_UPLOADING], settled(vm_state::SHELVED, power)).await
    }

    /// Destroys a shelved instance's guest (task state `from`); it ends `shelved_offloaded` with no power state,
    /// and the conductor gives its host's resources back.
    async fn shelve_offload(&self, uuid: &str, from: &str) -> Result<(), Stop> {
        match self.driver.destroy(uuid).await {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(error) => return Err(driver(error)),
        }
        self.advance(uuid, &[from], settled(vm_state::SHELVED_OFFLOADED, PowerState::NoState)).await
    }

    /// Back to the old flavor; the instance ends active, or stopped if its guest is off.
    async fn revert_resize(&self, instance: &InstanceSpec, flavor: &compute_rpc::FlavorSpec, request_id: &str) -> Result<(), Stop> {
        let uuid = instance.uuid.as_str();
        let context = GuestContext::for_instance(instance, request_id);
        self.driver.resize(instance, flavor, &context).await.map_err(driver)?;
        let power = self.power_or(uuid, PowerState::Running).await;
        let end = if power == PowerState::Shutdown { vm_state::STOPPED } else { vm_state::ACTIVE };
        let changes = InstanceChanges { flavor: Some(flavor.clone()), ..settled(end, power) };
        self.advance(uuid, &[task_state::RESIZE_REVERTING], changes).await
    }

    /// After a failed action: clear the task state, record the guest's real power state, and leave the vm
    /// state, unless the guest is gone (a failed rebuild), which puts the instance in ERROR.
    async fn revert(&self, uuid: &str, action: &Action, guest_lost: bool) {
        let power = match self.driver.power_state(uuid).await {
            Ok(power) => Some(power),
            Err(Error::NotFound(_)) => Some(PowerState::NoState),
            Err(_) => None,
        };
        let changes = InstanceChanges {
            vm_state: guest_lost.then(|| vm_state::ERROR.to_owned()),
            task_state: Some(None),
            power_state: power,
            ..Default::default()
        };
        if let Err(error) = self.update(uuid, action_task_states(action), changes).await {
            tracing::error!(instance = %uuid, %error, "cannot clear the task state of a failed action");
        }
    }

    // ----- power-state sync -----

    /// Upstream's `_sync_power_states`: every guest's power state is written to its instance when it changed,
    /// and an instance whose guest stopped on its own (it was running or paused as far as the driver knew) is
    /// stopped, as upstream does. Instances in the middle of an operation (a task state, or a message being
    /// handled here) are left alone. On `startup`, guests of instances the cloud no longer has (deleted while
    /// the agent was down) are destroyed.
    pub(crate) async fn sync_power_states(&self, startup: bool) {
        let guests = match self.driver.list_guests().await {
            Ok(guests) => guests,
            Err(error) => {
                tracing::warn!(%error, "cannot list the guests for the power-state sync");
                return;
            }
        };
        for guest in guests {
            let uuid = guest.uuid.as_str();
            let Some(_guard) = self.locks.try_lock(uuid) else { continue };
            if startup {
                let probe = InstanceUpdate { uuid: uuid.to_owned(), expected_task_state: None, changes: InstanceChanges::default() };
                match self.call(&probe).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::info!(instance = %uuid, "destroying the guest of an instance that no longer exists");
                        if let Err(error) = self.driver.destroy(uuid).await {
                            tracing::error!(instance = %uuid, %error, "cannot destroy an orphaned guest");
                        }
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot reach the conductor for the power-state sync");
                        return;
                    }
                }
            }
            let power = guest.power_state;
            let expected = self.driver.expected_power_state(uuid).await;
            let stopped_itself = matches!(expected, Some(PowerState::Running | PowerState::Paused))
                && matches!(power, PowerState::Shutdown | PowerState::Crashed);
            let last = self.synced_power().get(uuid).copied();
            if !startup && !stopped_itself && last == Some(power) {
                continue;
            }
            let mut changes = InstanceChanges { power_state: Some(power), ..Default::default() };
            if stopped_itself {
                tracing::info!(instance = %uuid, ?power, "the guest stopped on its own; stopping the instance");
                if let Err(error) = self.driver.power_off(uuid).await {
                    tracing::warn!(instance = %uuid, %error, "cannot record a guest that stopped on its own");
                }
                changes.vm_state = Some(vm_state::STOPPED.to_owned());
            }
            let msg = InstanceUpdate { uuid: uuid.to_owned(), expected_task_state: Some(vec![None]), changes };
            match self.call(&msg).await {
                Ok(true) => {
                    self.synced_power().insert(uuid.to_owned(), power);
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(instance = %uuid, %error, "cannot sync a power state");
                    return;
                }
            }
        }
        self.driver.maintain().await;
    }

    // ----- console -----

    pub(crate) async fn console_output(&self, msg: GetConsoleOutput) -> Result<String, Error> {
        let output = self.driver.console_output(&msg.uuid).await?;
        Ok(tail(&output, msg.length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_reads_like_uptime() {
        let load = ["0.20".to_string(), "0.12".into(), "0.14".into()];
        let line = format_uptime(93 * 86_400 + 18 * 3600 + 25 * 60, &load, "08:32:11".into());
        assert_eq!(line, " 08:32:11 up 93 days, 18:25,  0 users,  load average: 0.20, 0.12, 0.14");
        assert!(format_uptime(61, &load, "00:00:00".into()).contains("up  0:01,"));
        assert!(host_uptime().unwrap().contains("load average"));
    }

    #[test]
    fn tail_counts_lines_as_upstream() {
        let log = "one\ntwo\nthree";
        assert_eq!(tail(log, None), log);
        assert_eq!(tail(log, Some(0)), "");
        assert_eq!(tail(log, Some(1)), "three");
        assert_eq!(tail(log, Some(2)), "two\nthree");
        assert_eq!(tail(log, Some(3)), log);
        assert_eq!(tail(log, Some(u64::MAX)), log);
        // A trailing newline ends in an empty last line.
        assert_eq!(tail("a\nb\n", Some(1)), "");
        assert_eq!(tail("a\nb\n", Some(2)), "b\n");
        assert_eq!(tail("", Some(5)), "");
    }

    #[test]
    fn tail_replaces_bytes_outside_ascii() {
        assert_eq!(tail("caf\u{e9}\nok", None), "caf\u{fffd}\u{fffd}\nok");
    }

    #[test]
    fn every_action_expects_the_task_state_the_api_sets() {
        use task_state::*;
        let api_sets = [
            (Action::Stop, POWERING_OFF),
            (Action::Start, POWERING_ON),
            (Action::Reboot { hard: false }, REBOOTING),
            (Action::Reboot { hard: true }, REBOOTING_HARD),
            (Action::Pause, PAUSING),
            (Action::Unpause, UNPAUSING),
            (Action::Suspend, SUSPENDING),
            (Action::Resume, RESUMING),
            (Action::Rebuild { image_ref: "i".into(), block_devices: Vec::new() }, REBUILDING),
        ];
        for (action, state) in api_sets {
            assert!(action_task_states(&action).contains(&state), "{action:?}");
        }
    }

    #[tokio::test]
    async fn instance_locks_serialise_one_uuid_and_clean_up() {
        let locks = Arc::new(InstanceLocks::default());
        let first = locks.lock("a").await;
        let _other = locks.lock("b").await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _second = locks.lock("a").await;
                tx.send(()).unwrap();
            })
        };
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err(), "the second holder waits for the first");
        drop(first);
        waiter.await.unwrap();
        assert!(rx.try_recv().is_ok());
        assert_eq!(locks.len(), 1, "only b's lock is left");
        drop(_other);
        assert_eq!(locks.len(), 0);
    }
}
