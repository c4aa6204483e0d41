//! The `fake` driver: guests that exist only in memory, as upstream's `nova.virt.fake`.
//!
//! It keeps each guest's power state, flavor and a console log that reads like a Linux boot, enforces the power
//! state transitions a real hypervisor would, and reports the capacity it was configured with and the sum of its
//! guests' flavors as use. Failures can be injected for tests through [`FakeFailures`], never through anything a
//! user of the API controls.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use compute_rpc::{FlavorSpec, InstanceSpec, PowerState};
use serde_json::json;

use crate::Error;
use crate::hypervisor::{BlockDeviceSpec, GuestContext, GuestInfo, Hypervisor, HypervisorInfo, ImageSource, NetworkInterface};

/// Console lines kept per guest; older ones are dropped.
const CONSOLE_LINES: usize = 1000;

/// The fake hypervisor's capacity, and failures to inject.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeConfig {
    pub vcpus: i64,
    pub memory_mb: i64,
    pub local_gb: i64,
    pub failures: FakeFailures,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig { vcpus: 16, memory_mb: 32768, local_gb: 1000, failures: FakeFailures::default() }
    }
}

/// Operations the fake driver fails on purpose, for tests. Instances are named by uuid or display name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FakeFailures {
    /// Every spawn fails.
    pub spawn: bool,
    /// Spawns and power operations of these instances fail.
    pub instances: BTreeSet<String>,
    /// Destroying these instances fails.
    pub destroy: BTreeSet<String>,
}

impl FakeFailures {
    fn names(set: &BTreeSet<String>, uuid: &str, name: &str) -> bool {
        set.contains(uuid) || set.contains(name)
    }
}

struct Guest {
    name: String,
    hostname: String,
    flavor: FlavorSpec,
    power: PowerState,
    /// The rescue image the guest runs from, while rescued.
    rescue: Option<String>,
    console: Vec<String>,
    /// Seconds since the guest's last boot, for the kernel-style timestamps of its console.
    clock: f64,
    /// The volumes attached to the guest, in attach order.
    volumes: Vec<BlockDeviceSpec>,
    /// The file chain of each volume's disk after assisted snapshots, oldest first (the volume's own file is `""`).
    chains: BTreeMap<String, Vec<String>>,
}

impl Guest {
    fn log(&mut self, line: impl Into<String>) {
        self.console.push(line.into());
        if self.console.len() > CONSOLE_LINES {
            let excess = self.console.len() - CONSOLE_LINES;
            self.console.drain(..excess);
        }
    }

    fn kernel(&mut self, step: f64, message: &str) {
        self.clock += step;
        let line = format!("[{:>12.6}] {message}", self.clock);
        self.log(line);
    }

    /// What a cloud image prints from power-on to its login prompt.
    fn boot(&mut self, uuid: &str) {
        self.clock = 0.0;
        let memory_kb = self.flavor.memory_mb * 1024;
        let vcpus = self.flavor.vcpus;
        let sectors = self.flavor.root_gb * 2 * 1024 * 1024;
        let hostname = self.hostname.clone();
        self.kernel(0.0, "Linux version 6.1.0-stratus-fake (builder@stratus) (gcc 12.2.0) #1 SMP PREEMPT_DYNAMIC");
        self.kernel(
            0.0,
            "Command line: BOOT_IMAGE=/boot/vmlinuz root=LABEL=cloudimg-rootfs ro console=tty1 console=ttyS0",
        );
        self.kernel(0.0, "DMI: OpenStack Foundation OpenStack Nova, BIOS 1.16.2-debian-1.16.2-1 04/01/2014");
        self.kernel(0.004, &format!("Memory: {memory_kb}K available"));
        self.kernel(0.008, &format!("smpboot: Allowing {vcpus} CPUs, 0 hotplug CPUs"));
        self.kernel(0.312, &format!("virtio_blk virtio1: [vda] {sectors} 512-byte logical blocks"));
        self.kernel(0.021, "virtio_net virtio0 ens3: renamed from eth0");
        self.kernel(0.874, "EXT4-fs (vda1): mounted filesystem with ordered data mode. Quota mode: none.");
        self.kernel(0.902, &format!("systemd[1]: Set hostname to <{hostname}>."));
        self.kernel(1.337, &format!("cloud-init[412]: Cloud-init v. 23.1 running 'init' at instance-id {uuid}."));
        self.kernel(0.218, "cloud-init[412]: ci-info: ++++++++++++++++++++Net device info+++++++++++++++++++++");
        self.kernel(0.001, "cloud-init[412]: ci-info: | ens3 | True | . | . | global |");
        self.kernel(0.655, "cloud-init[560]: Cloud-init v. 23.1 running 'modules:config'.");
        self.kernel(0.431, "cloud-init[601]: Cloud-init v. 23.1 finished. Datasource DataSourceOpenStackLocal.");
        self.log("");
        self.log(format!("Ubuntu 22.04.4 LTS {hostname} ttyS0"));
        self.log("");
        self.log(format!("{hostname} login: "));
    }
}

/// The in-memory hypervisor.
pub struct FakeDriver {
    vcpus: i64,
    memory_mb: i64,
    local_gb: i64,
    state: Mutex<State>,
}

struct State {
    guests: BTreeMap<String, Guest>,
    failures: FakeFailures,
}

impl FakeDriver {
    pub fn new(config: FakeConfig) -> FakeDriver {
        FakeDriver {
            vcpus: config.vcpus,
            memory_mb: config.memory_mb,
            local_gb: config.local_gb,
            state: Mutex::new(State { guests: BTreeMap::new(), failures: config.failures }),
        }
    }

    /// Replaces the failures to inject from now on.
    pub fn set_failures(&self, failures: FakeFailures) {
        self.state().failures = failures;
    }

    /// The file chain of a volume's disk after assisted snapshots (`""` is the volume's own file), for tests.
    pub fn volume_chain(&self, uuid: &str, volume_id: &str) -> Option<Vec<String>> {
        self.state().guests.get(uuid).and_then(|g| g.chains.get(volume_id).cloned())
    }

    /// The volumes attached to a guest (`None` when there is no guest), for tests.
    pub fn volumes(&self, uuid: &str) -> Option<Vec<BlockDeviceSpec>> {
        self.state().guests.get(uuid).map(|g| g.volumes.clone())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `change` on the guest of `uuid`, unless the operation is set to fail for it.
    fn with_guest<T>(
        &self,
        uuid: &str,
        operation: &'static str,
        change: impl FnOnce(&mut Guest) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut state = self.state();
        let State { guests, failures } = &mut *state;
        let guest = guests.get_mut(uuid).ok_or_else(|| Error::NotFound(uuid.to_owned()))?;
        if FakeFailures::names(&failures.instances, uuid, &guest.name) {
            return Err(Error::Hypervisor(format!("injected failure: {operation} of instance {uuid}")));
        }
        change(guest)
    }
}

fn invalid(uuid: &str, operation: &'static str, state: PowerState) -> Error {
    Error::InvalidState { uuid: uuid.to_owned(), operation, state }
}

#[async_trait]
impl Hypervisor for FakeDriver {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn supported_instances(&self) -> Vec<[String; 3]> {
        // As upstream's fake driver.
        vec![["x86_64".into(), "fake".into(), "hvm".into()]]
    }

    async fn host_info(&self) -> Result<HypervisorInfo, Error> {
        let state = self.state();
        let flavors = state.guests.values().map(|g| &g.flavor);
        let (mut vcpus_used, mut memory_mb_used, mut local_gb_used) = (0, 0, 0);
        for f in flavors {
            vcpus_used += f.vcpus;
            memory_mb_used += f.memory_mb;
            local_gb_used += f.root_gb + f.ephemeral_gb;
        }
        Ok(HypervisorInfo {
            hypervisor_type: "fake".into(),
            hypervisor_version: 1000,
            cpu_info: json!({
                "arch": "x86_64",
                "model": "fake-cpu",
                "vendor": "Stratus",
                "topology": {"sockets": 1, "cores": self.vcpus, "threads": 1},
                "features": [],
            }),
            vcpus: self.vcpus,
            memory_mb: self.memory_mb,
            local_gb: self.local_gb,
            vcpus_used,
            memory_mb_used,
            local_gb_used,
            running_vms: state.guests.len() as i64,
        })
    }

    async fn list_guests(&self) -> Result<Vec<GuestInfo>, Error> {
        Ok(self.state().guests.iter().map(|(uuid, g)| GuestInfo { uuid: uuid.clone(), power_state: g.power }).collect())
    }

    async fn spawn(&self, instance: &InstanceSpec, context: &GuestContext) -> Result<(), Error> {
        let uuid = &instance.uuid;
        let mut state = self.state();
        let failures = &state.failures;
        if failures.spawn || FakeFailures::names(&failures.instances, uuid, &instance.display_name) {
            return Err(Error::Hypervisor(format!("injected failure: spawn of instance {uuid}")));
        }
        if state.guests.contains_key(uuid) {
            return Err(Error::AlreadyExists(uuid.clone()));
        }
        let mut guest = Guest {
            name: instance.display_name.clone(),
            hostname: instance.hostname.clone(),
            flavor: instance.flavor.clone(),
            power: PowerState::Running,
            rescue: None,
            console: Vec::new(),
            clock: 0.0,
            volumes: context.block_devices.clone(),
            chains: BTreeMap::new(),
        };
        guest.boot(uuid);
        state.guests.insert(uuid.clone(), guest);
        Ok(())
    }

    async fn destroy(&self, uuid: &str) -> Result<(), Error> {
        let mut state = self.state();
        let Some(guest) = state.guests.get(uuid) else { return Ok(()) };
        if FakeFailures::names(&state.failures.destroy, uuid, &guest.name) {
            return Err(Error::Hypervisor(format!("injected failure: destroy of instance {uuid}")));
        }
        state.guests.remove(uuid);
        Ok(())
    }

    async fn power_off(&self, uuid: &str) -> Result<(), Error> {
        self.with_guest(uuid, "power off", |g| {
            if g.power != PowerState::Shutdown {
                g.kernel(0.5, "reboot: Power down");
                g.power = PowerState::Shutdown;
            }
            Ok(())
        })
    }

    async fn power_on(&self, instance: &InstanceSpec, _context: &GuestContext) -> Result<(), Error> {
        let uuid = &instance.uuid;
        self.with_guest(uuid, "power on", |g| match g.power {
            PowerState::Running => Ok(()),
            PowerState::Shutdown | PowerState::Crashed | PowerState::NoState => {
                g.boot(uuid);
                g.power = PowerState::Running;
                Ok(())
            }
            state => Err(invalid(uuid, "power on", state)),
        })
    }

    async fn reboot(&self, instance: &InstanceSpec, _context: &GuestContext, hard: bool) -> Result<(), Error> {
        let uuid = &instance.uuid;
        self.with_guest(uuid, "reboot", |g| {
            if g.power == PowerState::Running && !hard {
                g.kernel(0.5, "reboot: Restarting system");
            }
            g.boot(uuid);
            g.power = PowerState::Running;
            Ok(())
        })
    }

    async fn pause(&self, uuid: &str) -> Result<(), Error> {
        self.with_guest(uuid, "pause", |g| match g.power {
            PowerState::Running => {
                g.power = PowerState::Paused;
                Ok(())
            }
            state => Err(invalid(uuid, "pause", state)),
        })
    }

    async fn unpause(&self, uuid: &str) -> Result<(), Error> {
        self.with_guest(uuid, "unpause", |g| match g.power {
            PowerState::Paused => {
                g.power = PowerState::Running;
                Ok(())
            }
            state => Err(invalid(uuid, "unpause", state)),
        })
    }

    async fn suspend(&self, uuid: &str) -> Result<(), Error> {
        self.with_guest(uuid, "suspend", |g| match g.power {
            PowerState::Running | PowerState::Paused => {
                g.power = PowerState::Suspended;
                Ok(())
            }
            state => Err(invalid(uuid, "suspend", state)),
        })
    }

    async fn resume(&self, instance: &InstanceSpec, _context: &GuestContext) -> Result<(), Error> {
        let uuid = &instance.uuid;
        self.with_guest(uuid, "resume", |g| match g.power {
            PowerState::Suspended => {
                g.power = PowerState::Running;
                Ok(())
            }
            state => Err(invalid(uuid, "resume", state)),
        })
    }

    async fn resize(&self, instance: &InstanceSpec, flavor: &FlavorSpec, _context: &GuestContext) -> Result<(), Error> {
        let uuid = &instance.uuid;
        self.with_guest(uuid, "resize", |g| {
            let running = g.power == PowerState::Running;
            g.flavor = flavor.clone();
            if running {
                // The guest restarts with its new resources, as a resize's power cycle.
                g.boot(uuid);
            }
            Ok(())
        })
    }

    async fn snapshot(&self, instance: &InstanceSpec, dest: &std::path::Path) -> Result<crate::hypervisor::SnapshotFormat, Error> {
        let uuid = &instance.uuid;
        // The fake guest has no disk: its snapshot is a small raw image naming it.
        let data = self.with_guest(uuid, "snapshot", |g| {
            Ok(format!("stratus fake snapshot of {uuid} ({} MB RAM, {} GB disk)\n", g.flavor.memory_mb, g.flavor.root_gb))
        })?;
        tokio::fs::write(dest, data.as_bytes())
            .await
            .map_err(|source| Error::Io { context: format!("writing the snapshot of {uuid}"), source })?;
        Ok(crate::hypervisor::SnapshotFormat::disk("raw"))
    }

    async fn rescue(&self, instance: &InstanceSpec, rescue: &ImageSource, _context: &GuestContext) -> Result<(), Error> {
        let uuid = &instance.uuid;
        self.with_guest(uuid, "rescue", |g| match (g.power, &g.rescue) {
            (_, Some(_)) => Err(Error::Hypervisor(format!("instance {uuid} is already rescued"))),
            (PowerState::Running | PowerState::Shutdown | PowerState::Crashed | PowerState::NoState, None) => {
                g.rescue = Some(rescue.id.clone());
                g.boot(uuid);
                g.log(format!("rescue: booted from image {}, the instance's disk is the second disk", rescue.id));
                g.power = PowerState::Running;
                Ok(())
            }
            (state, None) => Err(invalid(uuid, "rescue", state)),
        })
    }

    async fn unrescue(&self, instance: &InstanceSpec, _context: &GuestContext) -> Result<(), Error> {
        let uuid = &instance.uuid;
        self.with_guest(uuid, "unrescue", |g| match g.rescue.take() {
            Some(_) => {
                g.boot(uuid);
                g.power = PowerState::Running;
                Ok(())
            }
            None => Err(Error::Hypervisor(format!("instance {uuid} is not rescued"))),
        })
    }

    async fn diagnostics(&self, instance: &InstanceSpec) -> Result<std::collections::BTreeMap<String, serde_json::Value>, Error> {
        let uuid = &instance.uuid;
        self.with_guest(uuid, "diagnostics", |g| {
            // The fake guest's counters grow with its console, so they move as it is used.
            let activity = g.console.len() as i64;
            let memory_kb = g.flavor.memory_mb * 1024;
            Ok([
                ("cpu0_time", serde_json::json!(activity * 1_000_000)),
                ("memory", serde_json::json!(memory_kb)),
                ("memory-actual", serde_json::json!(memory_kb)),
                ("vda_read", serde_json::json!(activity * 4096)),
                ("vda_read_req", serde_json::json!(activity)),
                ("vda_write", serde_json::json!(activity * 512)),
                ("vda_write_req", serde_json::json!(activity / 2)),
                ("vda_errors", serde_json::json!(-1)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect())
        })
    }

    async fn attach_volume(&self, instance: &InstanceSpec, device: &BlockDeviceSpec) -> Result<(), Error> {
        let uuid = instance.uuid.as_str();
        self.with_guest(uuid, "attach volume", |g| {
            if g.volumes.iter().any(|v| v.volume_id == device.volume_id || v.device_name == device.device_name) {
                return Err(Error::Hypervisor(format!(
                    "volume {} or device {} is already attached to instance {uuid}",
                    device.volume_id, device.device_name
                )));
            }
            g.volumes.push(device.clone());
            g.kernel(0.5, &format!("virtio_blk: [{}] attached", device.device_name.trim_start_matches("/dev/")));
            Ok(())
        })
    }

    async fn detach_volume(&self, uuid: &str, volume_id: &str) -> Result<(), Error> {
        self.with_guest(uuid, "detach volume", |g| {
            g.volumes.retain(|v| v.volume_id != volume_id);
            g.chains.remove(volume_id);
            Ok(())
        })
    }

    async fn attach_interface(&self, uuid: &str, interface: &NetworkInterface) -> Result<(), Error> {
        self.with_guest(uuid, "attach interface", |g| {
            g.kernel(0.5, &format!("virtio_net: {} attached ({})", interface.mac_address, interface.port_id));
            Ok(())
        })
    }

    async fn detach_interface(&self, uuid: &str, port_id: &str) -> Result<(), Error> {
        self.with_guest(uuid, "detach interface", |g| {
            g.kernel(0.5, &format!("virtio_net: {port_id} detached"));
            Ok(())
        })
    }

    async fn volume_snapshot_create(&self, uuid: &str, volume_id: &str, create_info: &serde_json::Value) -> Result<(), Error> {
        let new_file = create_info["new_file"].as_str().unwrap_or_default().to_owned();
        self.with_guest(uuid, "volume snapshot", |g| {
            if !g.volumes.iter().any(|v| v.volume_id == volume_id) {
                return Err(Error::Hypervisor(format!("volume {volume_id} is not attached to instance {uuid}")));
            }
            let chain = g.chains.entry(volume_id.to_owned()).or_insert_with(|| vec![String::new()]);
            if chain.contains(&new_file) {
                return Err(Error::Hypervisor(format!("file {new_file} is already in the chain of volume {volume_id}")));
            }
            chain.push(new_file);
            Ok(())
        })
    }

    async fn volume_snapshot_delete(&self, uuid: &str, volume_id: &str, delete_info: &serde_json::Value) -> Result<(), Error> {
        let merge = delete_info["file_to_merge"].as_str().map(str::to_owned);
        self.with_guest(uuid, "volume snapshot delete", |g| {
            if !g.volumes.iter().any(|v| v.volume_id == volume_id) {
                return Err(Error::Hypervisor(format!("volume {volume_id} is not attached to instance {uuid}")));
            }
            let chain = g.chains.entry(volume_id.to_owned()).or_insert_with(|| vec![String::new()]);
            // No file to merge: the snapshot's file is the base itself, nothing leaves the chain (as upstream).
            if let Some(f) = merge {
                chain.retain(|x| *x != f);
            }
            Ok(())
        })
    }

    async fn power_state(&self, uuid: &str) -> Result<PowerState, Error> {
        self.state().guests.get(uuid).map(|g| g.power).ok_or_else(|| Error::NotFound(uuid.to_owned()))
    }

    async fn console_output(&self, uuid: &str) -> Result<String, Error> {
        self.state().guests.get(uuid).map(|g| g.console.join("\n")).ok_or_else(|| Error::NotFound(uuid.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(uuid: &str, name: &str, vcpus: i64, memory_mb: i64, root_gb: i64) -> InstanceSpec {
        InstanceSpec {
            uuid: uuid.into(),
            display_name: name.into(),
            hostname: name.into(),
            project_id: "p".into(),
            user_id: "u".into(),
            flavor: FlavorSpec {
                flavorid: "1".into(),
                name: "m1.test".into(),
                vcpus,
                memory_mb,
                root_gb,
                ephemeral_gb: 1,
                swap: 0,
                extra_specs: Default::default(),
            },
            image_ref: "img".into(),
            image_properties: Default::default(),
            key_name: None,
            key_data: None,
            user_data: None,
            metadata: Default::default(),
            config_drive: false,
            availability_zone: None,
            launch_index: 0,
        }
    }

    fn ctx() -> GuestContext {
        GuestContext::default()
    }

    #[tokio::test]
    async fn capacity_comes_from_config_and_use_from_guests() {
        let fake = FakeDriver::new(FakeConfig { vcpus: 8, memory_mb: 4096, local_gb: 100, ..Default::default() });
        let info = fake.host_info().await.unwrap();
        assert_eq!((info.hypervisor_type.as_str(), info.hypervisor_version), ("fake", 1000));
        assert_eq!((info.vcpus, info.memory_mb, info.local_gb), (8, 4096, 100));
        assert_eq!((info.vcpus_used, info.memory_mb_used, info.local_gb_used, info.running_vms), (0, 0, 0, 0));

        fake.spawn(&instance("a", "a", 2, 512, 10), &ctx()).await.unwrap();
        fake.spawn(&instance("b", "b", 1, 256, 5), &ctx()).await.unwrap();
        fake.power_off("b").await.unwrap();
        let info = fake.host_info().await.unwrap();
        assert_eq!((info.vcpus_used, info.memory_mb_used, info.local_gb_used, info.running_vms), (3, 768, 17, 2));

        fake.destroy("a").await.unwrap();
        let info = fake.host_info().await.unwrap();
        assert_eq!((info.vcpus_used, info.memory_mb_used, info.local_gb_used, info.running_vms), (1, 256, 6, 1));
    }

    #[tokio::test]
    async fn power_operations_follow_a_real_guest() {
        let fake = FakeDriver::new(FakeConfig::default());
        let vm = instance("a", "a", 1, 512, 1);
        fake.spawn(&vm, &ctx()).await.unwrap();
        assert_eq!(fake.power_state("a").await.unwrap(), PowerState::Running);
        assert!(matches!(fake.spawn(&vm, &ctx()).await, Err(Error::AlreadyExists(_))));

        fake.pause("a").await.unwrap();
        assert_eq!(fake.power_state("a").await.unwrap(), PowerState::Paused);
        assert!(matches!(fake.pause("a").await, Err(Error::InvalidState { .. })));
        fake.unpause("a").await.unwrap();
        fake.suspend("a").await.unwrap();
        assert_eq!(fake.power_state("a").await.unwrap(), PowerState::Suspended);
        assert!(matches!(fake.unpause("a").await, Err(Error::InvalidState { .. })));
        fake.resume(&vm, &ctx()).await.unwrap();
        fake.power_off("a").await.unwrap();
        fake.power_off("a").await.unwrap();
        assert_eq!(fake.power_state("a").await.unwrap(), PowerState::Shutdown);
        assert!(matches!(fake.suspend("a").await, Err(Error::InvalidState { .. })));
        fake.power_on(&vm, &ctx()).await.unwrap();
        fake.reboot(&vm, &ctx(), false).await.unwrap();
        fake.power_off("a").await.unwrap();
        fake.reboot(&vm, &ctx(), true).await.unwrap();
        assert_eq!(fake.power_state("a").await.unwrap(), PowerState::Running);

        assert_eq!(
            fake.list_guests().await.unwrap(),
            vec![GuestInfo { uuid: "a".into(), power_state: PowerState::Running }]
        );
    }

    #[tokio::test]
    async fn destroy_is_idempotent_and_unknown_guests_are_not_found() {
        let fake = FakeDriver::new(FakeConfig::default());
        fake.destroy("nope").await.unwrap();
        fake.spawn(&instance("a", "a", 1, 512, 1), &ctx()).await.unwrap();
        fake.destroy("a").await.unwrap();
        fake.destroy("a").await.unwrap();
        assert!(matches!(fake.power_state("a").await, Err(Error::NotFound(_))));
        assert!(matches!(fake.power_off("a").await, Err(Error::NotFound(_))));
        assert!(matches!(fake.console_output("a").await, Err(Error::NotFound(_))));
    }

    #[tokio::test]
    async fn console_reads_like_a_boot_and_grows_with_reboots() {
        let fake = FakeDriver::new(FakeConfig::default());
        let vm = instance("a", "web-1", 2, 2048, 20);
        fake.spawn(&vm, &ctx()).await.unwrap();
        let boot = fake.console_output("a").await.unwrap();
        let lines: Vec<_> = boot.split('\n').collect();
        assert!(lines.len() >= 10, "{boot}");
        assert!(lines[0].starts_with("[    0.000000] Linux version"), "{boot}");
        assert!(boot.contains("Allowing 2 CPUs"), "{boot}");
        assert!(boot.contains("Memory: 2097152K available"), "{boot}");
        assert!(boot.contains("instance-id a"), "{boot}");
        assert_eq!(*lines.last().unwrap(), "web-1 login: ");

        fake.reboot(&vm, &ctx(), false).await.unwrap();
        let after = fake.console_output("a").await.unwrap();
        assert!(after.starts_with(&boot), "the log keeps what came before");
        assert!(after.contains("reboot: Restarting system"));
        assert_eq!(after.matches("Linux version").count(), 2);
    }

    #[tokio::test]
    async fn console_keeps_a_bounded_tail() {
        let fake = FakeDriver::new(FakeConfig::default());
        let vm = instance("a", "a", 1, 512, 1);
        fake.spawn(&vm, &ctx()).await.unwrap();
        for _ in 0..100 {
            fake.reboot(&vm, &ctx(), true).await.unwrap();
        }
        let out = fake.console_output("a").await.unwrap();
        assert_eq!(out.split('\n').count(), CONSOLE_LINES);
        assert!(out.ends_with("a login: "));
    }

    #[tokio::test]
    async fn failures_are_injected_only_where_configured() {
        let failures = FakeFailures { instances: ["doomed".to_owned()].into(), ..Default::default() };
        let fake = FakeDriver::new(FakeConfig { failures, ..Default::default() });
        fake.spawn(&instance("a", "fine", 1, 512, 1), &ctx()).await.unwrap();
        let err = fake.spawn(&instance("b", "doomed", 1, 512, 1), &ctx()).await.unwrap_err();
        assert!(matches!(err, Error::Hypervisor(_)), "{err}");
        assert!(matches!(fake.power_state("b").await, Err(Error::NotFound(_))));

        fake.set_failures(FakeFailures { instances: ["a".to_owned()].into(), ..Default::default() });
        assert!(matches!(fake.pause("a").await, Err(Error::Hypervisor(_))));
        assert_eq!(fake.power_state("a").await.unwrap(), PowerState::Running);

        fake.set_failures(FakeFailures { destroy: ["fine".to_owned()].into(), ..Default::default() });
        assert!(matches!(fake.destroy("a").await, Err(Error::Hypervisor(_))));
        fake.set_failures(FakeFailures { spawn: true, ..Default::default() });
        assert!(fake.spawn(&instance("c", "c", 1, 512, 1), &ctx()).await.is_err());
        fake.set_failures(FakeFailures::default());
        fake.destroy("a").await.unwrap();
        fake.spawn(&instance("c", "c", 1, 512, 1), &ctx()).await.unwrap();
    }
}
