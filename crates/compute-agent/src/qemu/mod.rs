//! The `qemu` driver: one QEMU process per instance, driven over QMP, as upstream's libvirt driver does through
//! libvirt.
//!
//! Everything the driver knows of a guest is on disk under `<instances_path>/<uuid>/`: `guest.json` (the machine
//! definition and the power state the driver last set), `disk` (a qcow2 overlay on the image's base in `_base/`),
//! `disk.eph0`/`disk.swap`, `disk.config` (the config drive), `console.log` (the serial console), `qmp.sock` and
//! `qemu.pid`. QEMU runs daemonised (its parent is init, not the agent), so the guests outlive an agent restart
//! and a new agent re-adopts them from these files; nothing of a guest lives only in the agent's memory.
//!
//! Power actions: power off = ACPI power button (`system_powerdown`) and a wait of `shutdown_timeout`, then
//! `quit` and SIGKILL; pause/unpause = `stop`/`cont`; suspend = upstream's managed save (the guest's memory is
//! migrated to `memory.state` and the process ends; resume starts QEMU with `-incoming` from it); soft reboot =
//! clean power off and start, hard reboot = kill and start from a freshly generated definition.
//!
//! NICs: a virtio-net device per port on a tap device `tap<port id[:11]>` that QEMU creates when it starts and
//! that goes when it ends (`-netdev tap,ifname=…,script=no`); the network agent puts it on the network's bridge.
//! With `host_namespace` QEMU runs in that named network namespace, where the taps then appear.
//!
//! Acceleration: `virt_type = kvm` or `qemu` (TCG), or `auto`, which probes KVM once by running the BIOS under it
//! with a timeout (a `/dev/kvm` that cannot run guests in practice is too slow to get through it) and falls back
//! to TCG.

mod qmp;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use compute_rpc::{FlavorSpec, InstanceSpec, PowerState};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use crate::base::ImageService;
use crate::base::BaseCache;
use crate::config_drive;
use crate::guest_dir::{GuestDirs, LocalHost, Nic, io_err, with_power_states};
use qmp::Qmp;

use crate::Error;
use crate::hypervisor::{BlockDeviceSpec, GuestContext, GuestInfo, Hypervisor, HypervisorInfo, ImageSource, NetworkInterface, SnapshotFormat};

/// The disk formats the driver boots.
const BOOTABLE_FORMATS: &[&str] = &["qcow2", "raw", "ami"];

/// Which accelerator guests run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VirtType {
    /// KVM when the probe shows it works, TCG otherwise.
    Auto,
    Kvm,
    /// TCG, QEMU's emulator (upstream's `virt_type = qemu`).
    Qemu,
}

impl std::str::FromStr for VirtType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "auto" => Ok(VirtType::Auto),
            "kvm" => Ok(VirtType::Kvm),
            "qemu" | "tcg" => Ok(VirtType::Qemu),
            other => Err(Error::Config(format!("unknown virt_type {other:?} (auto, kvm or qemu)"))),
        }
    }
}

/// The qemu driver's settings.
#[derive(Clone, Debug)]
pub struct QemuConfig {
    /// Where instances' directories and the `_base` cache live (upstream's `instances_path`).
    pub instances_path: PathBuf,
    pub virt_type: VirtType,
    pub qemu_binary: PathBuf,
    pub qemu_img: PathBuf,
    /// How long a clean shutdown may take before the guest is stopped hard (upstream's `shutdown_timeout`, 60 s).
    pub shutdown_timeout: Duration,
    /// How long the KVM probe of `virt_type = auto` may take.
    pub kvm_probe_timeout: Duration,
    /// Attach a config drive to every instance (upstream's `force_config_drive`).
    pub force_config_drive: bool,
    /// Remove bases no instance uses (upstream's `remove_unused_base_images`) once unused for this long
    /// (`remove_unused_original_minimum_age_seconds`, 24 h).
    pub remove_unused_base_images: bool,
    pub remove_unused_minimum_age: Duration,
    /// How long a guest may take to release a volume's disk on detach (upstream's device detach retries).
    pub volume_detach_timeout: Duration,
    /// The iSCSI name QEMU logs in to volumes' targets with (the host's, as the connector names it).
    pub iscsi_initiator: String,
    /// The named network namespace (`/run/netns/<name>`) QEMU runs in, so the guests' tap devices are made there:
    /// where the network agent's bridges are (its `host_namespace`; several hosts on one machine, tests).
    /// `None`: the agent's own namespace.
    pub host_namespace: Option<String>,
    /// `nsenter`, which enters that namespace.
    pub nsenter: PathBuf,
    /// The host's capacity; the machine's own figures when `None`.
    pub vcpus: Option<i64>,
    pub memory_mb: Option<i64>,
    pub local_gb: Option<i64>,
}

impl QemuConfig {
    pub fn new(instances_path: impl Into<PathBuf>) -> QemuConfig {
        QemuConfig {
            instances_path: instances_path.into(),
            virt_type: VirtType::Auto,
            qemu_binary: "qemu-system-x86_64".into(),
            qemu_img: "qemu-img".into(),
            shutdown_timeout: Duration::from_secs(60),
            kvm_probe_timeout: Duration::from_secs(3),
            force_config_drive: false,
            remove_unused_base_images: true,
            remove_unused_minimum_age: Duration::from_secs(86_400),
            volume_detach_timeout: Duration::from_secs(30),
            iscsi_initiator: compute_rpc::iscsi_initiator(&crate::config::hostname()),
            host_namespace: None,
            nsenter: "nsenter".into(),
            vcpus: None,
            memory_mb: None,
            local_gb: None,
        }
    }
}

/// A guest's definition and the power state the driver last put it in, kept in `guest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct GuestDef {
    uuid: String,
    name: String,
    flavor: FlavorSpec,
    /// The images whose bases this guest uses (root, kernel, ramdisk).
    bases: Vec<String>,
    /// The format of the root overlay's backing file.
    base_format: Option<String>,
    kernel: Option<PathBuf>,
    ramdisk: Option<PathBuf>,
    cmdline: Option<String>,
    config_drive: bool,
    /// What the driver last did to the guest: `Running`, `Paused`, `Shutdown` or `Suspended`.
    state: PowerState,
    /// While rescued: the rescue image the guest boots from (`disk.rescue`, an overlay on its base), before its
    /// own disks.
    #[serde(default)]
    rescue: Option<RescueDef>,
    /// Attached volumes, in attach order (the root one first when the guest boots from a volume).
    #[serde(default)]
    volumes: Vec<VolumeDisk>,
    /// Network interfaces, in the order the guest sees them (eth0 first).
    #[serde(default)]
    nics: Vec<Nic>,
}

/// A volume as the guest has it: a file (raw or qcow2) the block storage service's `local` connection names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct VolumeDisk {
    volume_id: String,
    device_name: String,
    /// The file of a `local` connection (empty for an iSCSI one).
    path: PathBuf,
    /// The LUN of an `iscsi` connection, reached by QEMU's own initiator.
    #[serde(default)]
    iscsi: Option<IscsiLun>,
    format: String,
    read_only: bool,
    /// The guest boots from it (no root overlay).
    boot: bool,
}

impl VolumeDisk {
    /// The disk of a volume, from its `connection_info`: `local` (a file on this host) or `iscsi` (a LUN QEMU
    /// logs in to as `initiator`).
    fn of(device: &BlockDeviceSpec, initiator: &str) -> Result<VolumeDisk, Error> {
        let info = &device.connection_info;
        let kind = info["driver_volume_type"].as_str().unwrap_or_default();
        let data = &info["data"];
        let id = &device.volume_id;
        // Values end up in QEMU's key=value options: no commas, no spaces.
        let plain = |what: &str, v: &str| -> Result<(), Error> {
            if v.is_empty() || v.contains([',', ' ', '=']) {
                return Err(Error::Hypervisor(format!("volume {id}: unsupported {what} {v:?}")));
            }
            Ok(())
        };
        let (path, iscsi) = match kind {
            "local" => {
                let path = data["device_path"].as_str().filter(|p| p.starts_with('/')).ok_or_else(|| {
                    Error::Hypervisor(format!("volume {id}: its connection has no device_path"))
                })?;
                plain("path", path)?;
                (PathBuf::from(path), None)
            }
            "iscsi" => {
                let portal = data["target_portal"].as_str().unwrap_or_default();
                let target = data["target_iqn"].as_str().unwrap_or_default();
                let lun = data["target_lun"].as_u64().unwrap_or(0);
                plain("portal", portal)?;
                plain("target", target)?;
                plain("initiator", initiator)?;
                let lun = IscsiLun { portal: portal.into(), target: target.into(), lun, initiator: initiator.into() };
                (PathBuf::new(), Some(lun))
            }
            other => {
                return Err(Error::Hypervisor(format!(
                    "volume {id}: the qemu driver attaches local (file) and iscsi volumes, not {other:?}"
                )));
            }
        };
        let format = if iscsi.is_some() { "raw" } else { data["format"].as_str().unwrap_or("raw") };
        if !["raw", "qcow2"].contains(&format) {
            return Err(Error::Hypervisor(format!("volume {id}: unsupported format {format}")));
        }
        Ok(VolumeDisk {
            volume_id: id.clone(),
            device_name: device.device_name.clone(),
            path,
            iscsi,
            format: format.to_owned(),
            read_only: data["access_mode"] == json!("ro"),
            boot: device.boot_index == Some(0),
        })
    }

    /// The options of the volume's protocol node (`-blockdev` key=value syntax, without its node name).
    fn protocol_options(&self) -> String {
        match &self.iscsi {
            Some(l) => format!(
                "driver=iscsi,transport=tcp,portal={},target={},lun={},initiator-name={}",
                l.portal, l.target, l.lun, l.initiator
            ),
            None => format!("driver=file,filename={}", self.path.to_string_lossy()),
        }
    }

    /// The protocol node for QMP `blockdev-add`.
    fn protocol_json(&self) -> Value {
        match &self.iscsi {
            Some(l) => json!({"driver": "iscsi", "transport": "tcp", "portal": l.portal, "target": l.target, "lun": l.lun, "initiator-name": l.initiator}),
            None => json!({"driver": "file", "filename": self.path}),
        }
    }

    /// The QEMU node name of the volume's format layer (`vol` and 20 hex digits of its id); its protocol layer
    /// is `<node>-file`, its device `<node>-disk`.
    fn node(&self) -> String {
        let hex: String = self.volume_id.chars().filter(char::is_ascii_alphanumeric).take(20).collect();
        format!("vol{hex}")
    }
}

/// An iSCSI LUN as QEMU's built-in initiator reaches it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct IscsiLun {
    /// `address:port`.
    portal: String,
    target: String,
    lun: u64,
    initiator: String,
}

/// The rescue disk's image, as [`GuestDef`] keeps the root disk's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct RescueDef {
    bases: Vec<String>,
    base_format: String,
    kernel: Option<PathBuf>,
    ramdisk: Option<PathBuf>,
    cmdline: Option<String>,
}

/// An image ready to back a disk: its cached base and format, and the kernel and ramdisk it names.
struct BootSource {
    base: PathBuf,
    format: &'static str,
    virtual_size: i64,
    bases: Vec<String>,
    kernel: Option<PathBuf>,
    ramdisk: Option<PathBuf>,
    cmdline: Option<String>,
}

/// The qemu hypervisor driver.
pub struct QemuDriver {
    config: QemuConfig,
    guests: GuestDirs,
    bases: BaseCache,
    accel: tokio::sync::OnceCell<&'static str>,
    version: i64,
}

impl QemuDriver {
    /// A driver over `config.instances_path`, fetching images from `images`. Checks that QEMU runs, and removes
    /// what a crash left half-made (interrupted downloads, instance directories without a definition).
    pub fn new(config: QemuConfig, images: Option<ImageService>) -> Result<QemuDriver, Error> {
        std::fs::create_dir_all(&config.instances_path).map_err(io_err(format!("creating {}", config.instances_path.display())))?;
        let out = std::process::Command::new(&config.qemu_binary).arg("--version").output().map_err(|e| {
            Error::Config(format!("cannot run {} ({e}); scripts/install-qemu installs QEMU", config.qemu_binary.display()))
        })?;
        let version = parse_version(&String::from_utf8_lossy(&out.stdout))
            .ok_or_else(|| Error::Config(format!("cannot read the version of {}", config.qemu_binary.display())))?;
        let bases = BaseCache::new(config.instances_path.join("_base"), images);
        let guests = GuestDirs::new(config.instances_path.clone(), "guest.json");
        let driver = QemuDriver { config, guests, bases, accel: tokio::sync::OnceCell::new(), version };
        driver.bases.remove_partial();
        driver.remove_half_made();
        Ok(driver)
    }

    fn dir(&self, uuid: &str) -> PathBuf {
        self.guests.dir(uuid)
    }

    fn remove_half_made(&self) {
        for entry in std::fs::read_dir(&self.config.instances_path).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('_') || !path.is_dir() || self.guests.is_defined(&path) {
                continue;
            }
            if let Some(pid) = read_pid(&path, &name) {
                kill(pid);
            }
            tracing::info!(dir = %path.display(), "removing a half-made instance directory");
            let _ = std::fs::remove_dir_all(&path);
        }
    }

    fn load(&self, uuid: &str) -> Result<GuestDef, Error> {
        self.guests.load(uuid)
    }

    fn save(&self, def: &GuestDef) -> Result<(), Error> {
        self.guests.save(&def.uuid, def)
    }

    fn set_state(&self, uuid: &str, state: PowerState) -> Result<(), Error> {
        let mut def = self.load(uuid)?;
        if def.state != state {
            def.state = state;
            self.save(&def)?;
        }
        Ok(())
    }

    /// The guest's QEMU process, if it runs.
    fn pid(&self, uuid: &str) -> Option<i32> {
        read_pid(&self.dir(uuid), uuid)
    }

    /// Whether the guest's process runs with the guest up (running or paused): what hot-plugging and live changes
    /// need; otherwise a change waits for the next start.
    fn live(&self, uuid: &str, def: &GuestDef) -> bool {
        self.pid(uuid).is_some() && matches!(def.state, PowerState::Running | PowerState::Paused)
    }

    async fn qmp(&self, uuid: &str) -> Result<Qmp, Error> {
        Qmp::connect(&self.dir(uuid).join("qmp.sock")).await
    }

    /// The accelerator to run guests on, probed once for `auto`.
    async fn accel(&self) -> &'static str {
        *self
            .accel
            .get_or_init(|| async {
                match self.config.virt_type {
                    VirtType::Kvm => "kvm",
                    VirtType::Qemu => "tcg",
                    VirtType::Auto => {
                        let accel = if probe_kvm(&self.config.qemu_binary, self.config.kvm_probe_timeout).await { "kvm" } else { "tcg" };
                        tracing::info!(accel, "virt_type auto: guests run on {accel}");
                        accel
                    }
                }
            })
            .await
    }

    /// Creates the guest's files: definition, root overlay, ephemeral and swap disks, config drive.
    async fn create(&self, instance: &InstanceSpec, context: &GuestContext) -> Result<(), Error> {
        let uuid = instance.uuid.as_str();
        let dir = self.dir(uuid);
        let volumes = context.block_devices.iter().map(|d| VolumeDisk::of(d, &self.config.iscsi_initiator)).collect::<Result<Vec<_>, _>>()?;
        let nics = context.network_interfaces.iter().map(Nic::of).collect::<Result<Vec<_>, _>>()?;
        let Some(image) = context.image.as_ref() else {
            // Booted from a volume: no root overlay, no bases.
            if !volumes.iter().any(|v| v.boot) {
                return Err(Error::Hypervisor(format!("instance {uuid} has neither an image nor a root volume")));
            }
            if dir.exists() {
                return Err(Error::AlreadyExists(uuid.to_owned()));
            }
            std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
            let config_drive = instance.config_drive || self.config.force_config_drive;
            if config_drive {
                config_drive::build(instance, &dir.join("disk.config")).await?;
            }
            let def = GuestDef {
                uuid: uuid.to_owned(),
                name: instance.display_name.clone(),
                flavor: instance.flavor.clone(),
                bases: Vec::new(),
                base_format: None,
                kernel: None,
                ramdisk: None,
                cmdline: None,
                config_drive,
                state: PowerState::Shutdown,
                rescue: None,
                volumes,
                nics,
            };
            return self.save(&def);
        };
        Self::check_bootable(image)?;
        if dir.exists() {
            return Err(Error::AlreadyExists(uuid.to_owned()));
        }
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;

        let source = self.boot_source(image).await?;
        let root_bytes = instance.flavor.root_gb * 1024 * 1024 * 1024;
        if instance.flavor.root_gb > 0 && source.virtual_size > root_bytes {
            return Err(Error::Hypervisor(format!(
                "Flavor's disk is too small for requested image: the image's virtual size is {} bytes, \
                 the flavor's root disk {root_bytes} bytes",
                source.virtual_size
            )));
        }
        self.overlay(&source, &dir.join("disk"), (root_bytes > source.virtual_size).then_some(root_bytes)).await?;
        for (name, gb, mb) in [("disk.eph0", instance.flavor.ephemeral_gb, 0), ("disk.swap", 0, instance.flavor.swap)] {
            let bytes = gb * 1024 * 1024 * 1024 + mb * 1024 * 1024;
            if bytes > 0 {
                let path = dir.join(name).to_string_lossy().into_owned();
                self.qemu_img(&["create".into(), "-q".into(), "-f".into(), "qcow2".into(), path, bytes.to_string()]).await?;
            }
        }
        let config_drive = instance.config_drive || self.config.force_config_drive;
        if config_drive {
            config_drive::build(instance, &dir.join("disk.config")).await?;
        }
        let def = GuestDef {
            uuid: uuid.to_owned(),
            name: instance.display_name.clone(),
            flavor: instance.flavor.clone(),
            bases: source.bases,
            base_format: Some(source.format.to_owned()),
            kernel: source.kernel,
            ramdisk: source.ramdisk,
            cmdline: source.cmdline,
            config_drive,
            state: PowerState::Shutdown,
            rescue: None,
            volumes,
            nics,
        };
        self.save(&def)
    }

    /// Refuses images the driver cannot boot (by their disk and container formats).
    fn check_bootable(image: &ImageSource) -> Result<(), Error> {
        let prop = |k: &str| image.properties.get(k).and_then(Value::as_str).map(str::to_owned);
        let disk_format = prop("disk_format").unwrap_or_else(|| "qcow2".into());
        let container_format = prop("container_format").unwrap_or_else(|| "bare".into());
        if !BOOTABLE_FORMATS.contains(&disk_format.as_str()) || !["bare", "ami"].contains(&container_format.as_str()) {
            return Err(Error::Hypervisor(format!(
                "image {} has disk format {disk_format} and container format {container_format}, which the qemu driver \
                 cannot boot (it boots qcow2, raw and ami disks in bare or ami containers)",
                image.id
            )));
        }
        Ok(())
    }

    /// Fetches an image's base (and the kernel and ramdisk it names) into the cache and checks its data.
    async fn boot_source(&self, image: &ImageSource) -> Result<BootSource, Error> {
        let prop = |k: &str| image.properties.get(k).and_then(Value::as_str).map(str::to_owned);
        let disk_format = prop("disk_format").unwrap_or_else(|| "qcow2".into());
        let base = self.bases.fetch(&image.id).await?;
        let format = if disk_format == "qcow2" { "qcow2" } else { "raw" };
        let info = self.inspect(&base, &image.id, format).await?;
        let virtual_size = info.get("virtual-size").and_then(Value::as_i64).unwrap_or(0);
        let mut bases = vec![image.id.clone()];
        let (mut kernel, mut ramdisk) = (None, None);
        for (key, slot) in [("kernel_id", &mut kernel), ("ramdisk_id", &mut ramdisk)] {
            if let Some(id) = prop(key).filter(|id| !id.is_empty()) {
                *slot = Some(self.bases.fetch(&id).await?);
                bases.push(id);
            }
        }
        let cmdline = kernel.as_ref().map(|_| prop("os_command_line").unwrap_or_else(|| "root=/dev/vda console=tty0 console=ttyS0".into()));
        Ok(BootSource { base, format, virtual_size, bases, kernel, ramdisk, cmdline })
    }

    /// A qcow2 overlay at `path` on `source`'s base, grown to `size` bytes if given.
    async fn overlay(&self, source: &BootSource, path: &Path, size: Option<i64>) -> Result<(), Error> {
        let mut args: Vec<String> = vec!["create".into(), "-q".into(), "-f".into(), "qcow2".into(), "-F".into(), source.format.into(), "-b".into()];
        args.push(source.base.to_string_lossy().into_owned());
        args.push(path.to_string_lossy().into_owned());
        if let Some(size) = size {
            args.push(size.to_string());
        }
        self.qemu_img(&args).await
    }

    /// `qemu-img info` of a downloaded base: its data must be what the image claims (`expected`), and a qcow2
    /// must be consistent and stand alone (no backing file).
    async fn inspect(&self, base: &Path, id: &str, expected: &str) -> Result<Value, Error> {
        let path = base.to_string_lossy().into_owned();
        let out = self.qemu_img_output(&["info".into(), "--output=json".into(), path.clone()]).await;
        let info: Value = match out {
            Ok(text) => serde_json::from_str(&text).map_err(|e| Error::Hypervisor(format!("qemu-img info: {e}")))?,
            Err(e) => return Err(Error::Hypervisor(format!("image {id} is corrupt: {e}"))),
        };
        let found = info.get("format").and_then(Value::as_str).unwrap_or_default();
        if found != expected {
            return Err(Error::Hypervisor(format!(
                "image {id} is corrupt or mislabelled: its disk format is {expected} but its data is {found}"
            )));
        }
        if found == "qcow2" {
            if info.get("backing-filename").is_some() {
                return Err(Error::Hypervisor(format!("image {id} is a qcow2 with a backing file, which is refused")));
            }
            if let Err(e) = self.qemu_img(&["check".into(), "-q".into(), "-f".into(), "qcow2".into(), path]).await {
                return Err(Error::Hypervisor(format!("image {id} is corrupt: {e}")));
            }
        }
        Ok(info)
    }

    async fn qemu_img(&self, args: &[String]) -> Result<(), Error> {
        self.qemu_img_output(args).await.map(|_| ())
    }

    async fn qemu_img_output(&self, args: &[String]) -> Result<String, Error> {
        let out = tokio::process::Command::new(&self.config.qemu_img)
            .args(args)
            .output()
            .await
            .map_err(io_err(format!("running {}", self.config.qemu_img.display())))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(Error::Hypervisor(format!("qemu-img {}: {}", args[0], stderr.trim())));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// QEMU's command line for `def` (and `incoming`, the memory state a suspended guest resumes from).
    fn command_line(&self, def: &GuestDef, accel: &str, incoming: Option<&Path>) -> Vec<String> {
        let dir = self.dir(&def.uuid);
        let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        push(&["-name", &format!("guest=instance-{},debug-threads=on", def.uuid)]);
        if is_uuid(&def.uuid) {
            push(&["-uuid", &def.uuid]);
        }
        push(&["-machine", "pc", "-accel", accel, "-cpu", if accel == "kvm" { "host" } else { "max" }]);
        push(&["-smp", &def.flavor.vcpus.max(1).to_string(), "-m", &def.flavor.memory_mb.max(16).to_string()]);
        push(&["-nodefaults", "-no-user-config", "-display", "none", "-vga", "none"]);
        push(&["-chardev", &format!("socket,id=qmp,path={},server=on,wait=off", p("qmp.sock")), "-mon", "chardev=qmp,mode=control"]);
        push(&["-chardev", &format!("file,id=console,path={},append=on", p("console.log")), "-serial", "chardev:console"]);
        let mut disk = |node: &str, protocol: &str, format: &str, read_only: bool, boot: bool, serial: Option<&str>| {
            let ro = if read_only { ",read-only=on" } else { "" };
            push(&["-blockdev", &format!("{protocol},node-name={node}-file{ro}")]);
            push(&["-blockdev", &format!("driver={format},file={node}-file,node-name={node}{ro}")]);
            let boot = if boot { ",bootindex=1" } else { "" };
            let serial = serial.map(|s| format!(",serial={s}")).unwrap_or_default();
            push(&["-device", &format!("virtio-blk-pci,drive={node},id={node}-disk{serial}{boot}")]);
        };
        let volume = |disk: &mut DiskArgs<'_>, v: &VolumeDisk, boot: bool| {
            disk(&v.node(), &v.protocol_options(), &v.format, v.read_only, boot, Some(&serial(&v.volume_id)));
        };
        // The root disk comes first (the guest's vda): the overlay, or the boot volume of a guest without one.
        let from_volume = def.base_format.is_none();
        // A rescued guest boots from the rescue disk, with its own disks after it (upstream's rescue layout).
        if def.rescue.is_some() {
            disk("rescue", &file_options(&p("disk.rescue")), "qcow2", false, true, None);
        }
        let own_boot = def.rescue.is_none();
        if from_volume {
            for v in def.volumes.iter().filter(|v| v.boot) {
                volume(&mut disk, v, own_boot);
            }
        } else {
            disk("root", &file_options(&p("disk")), "qcow2", false, own_boot, None);
        }
        if dir.join("disk.eph0").exists() {
            disk("eph0", &file_options(&p("disk.eph0")), "qcow2", false, false, None);
        }
        if dir.join("disk.swap").exists() {
            disk("swap", &file_options(&p("disk.swap")), "qcow2", false, false, None);
        }
        if def.config_drive {
            disk("config", &file_options(&p("disk.config")), "raw", true, false, None);
        }
        for v in def.volumes.iter().filter(|v| !(from_volume && v.boot)) {
            volume(&mut disk, v, false);
        }
        for nic in &def.nics {
            let (netdev, device) = nic_ids(nic);
            push(&["-netdev", &format!("tap,id={netdev},ifname={},script=no,downscript=no", nic.devname)]);
            let mtu = nic.mtu.map(|m| format!(",host_mtu={m}")).unwrap_or_default();
            push(&["-device", &format!("virtio-net-pci,netdev={netdev},id={device},mac={}{mtu}", nic.mac_address)]);
        }
        let (kernel, ramdisk, cmdline) = match &def.rescue {
            Some(r) => (&r.kernel, &r.ramdisk, &r.cmdline),
            None => (&def.kernel, &def.ramdisk, &def.cmdline),
        };
        if let (Some(kernel), Some(cmdline)) = (kernel, cmdline) {
            push(&["-kernel", &kernel.to_string_lossy(), "-append", cmdline]);
            if let Some(ramdisk) = ramdisk {
                push(&["-initrd", &ramdisk.to_string_lossy()]);
            }
        }
        if let Some(state) = incoming {
            push(&["-incoming", &format!("file:{}", state.to_string_lossy())]);
        }
        push(&["-pidfile", &p("qemu.pid"), "-daemonize"]);
        a
    }

    /// Starts the guest's QEMU (which daemonises once the machine is set up).
    async fn launch(&self, uuid: &str, incoming: Option<&Path>) -> Result<(), Error> {
        let def = self.load(uuid)?;
        let dir = self.dir(uuid);
        let _ = std::fs::remove_file(dir.join("qmp.sock"));
        let accel = self.accel().await;
        let args = self.command_line(&def, accel, incoming);
        let started = std::time::Instant::now();
        let mut command = match &self.config.host_namespace {
            Some(ns) => {
                let mut c = tokio::process::Command::new(&self.config.nsenter);
                c.arg(format!("--net=/run/netns/{ns}")).arg("--").arg(&self.config.qemu_binary);
                c
            }
            None => tokio::process::Command::new(&self.config.qemu_binary),
        };
        let out = command
            .args(&args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(false)
            .output()
            .await
            .map_err(io_err(format!("running {}", self.config.qemu_binary.display())))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(Error::Hypervisor(format!("QEMU failed to start: {}", stderr.trim())));
        }
        tracing::info!(instance = %uuid, accel, elapsed_ms = started.elapsed().as_millis() as u64, "QEMU started");
        Ok(())
    }

    /// Ends the guest's process: `quit` over QMP, then SIGKILL; waits until it is gone.
    async fn kill_guest(&self, uuid: &str) {
        let Some(pid) = self.pid(uuid) else { return };
        if let Ok(mut qmp) = self.qmp(uuid).await {
            let _ = qmp.execute("quit", None).await;
        }
        if !wait_gone(pid, uuid, &self.dir(uuid), Duration::from_secs(3)).await {
            kill(pid);
            wait_gone(pid, uuid, &self.dir(uuid), Duration::from_secs(5)).await;
        }
    }

    /// A clean shutdown (ACPI power button, `shutdown_timeout`), then a hard one.
    async fn shutdown(&self, uuid: &str, timeout: Duration) {
        let Some(pid) = self.pid(uuid) else { return };
        if !timeout.is_zero()
            && let Ok(mut qmp) = self.qmp(uuid).await
            && qmp.status().await.is_ok_and(|s| s == "running")
            && qmp.execute("system_powerdown", None).await.is_ok()
        {
            drop(qmp);
            if wait_gone(pid, uuid, &self.dir(uuid), timeout).await {
                tracing::info!(instance = %uuid, "guest shut down cleanly");
                return;
            }
            tracing::info!(instance = %uuid, timeout_s = timeout.as_secs(), "guest did not shut down in time; stopping it");
        }
        self.kill_guest(uuid).await;
    }

    /// Starts a shut-off guest with `instance`'s current flavor.
    async fn start(&self, instance: &InstanceSpec) -> Result<(), Error> {
        let mut def = self.load(&instance.uuid)?;
        def.flavor = instance.flavor.clone();
        def.state = PowerState::Running;
        self.save(&def)?;
        self.launch(&instance.uuid, None).await
    }

    fn guests(&self) -> Vec<GuestDef> {
        self.guests.all()
    }

    /// Removes unused bases (when configured); returns their image ids.
    pub fn remove_unused_bases(&self) -> Vec<String> {
        if !self.config.remove_unused_base_images {
            return Vec::new();
        }
        let used: BTreeSet<String> = self
            .guests()
            .into_iter()
            .flat_map(|g| g.bases.into_iter().chain(g.rescue.into_iter().flat_map(|r| r.bases)))
            .collect();
        self.bases.remove_unused(&used, self.config.remove_unused_minimum_age)
    }

    /// The base cache's directory.
    pub fn base_dir(&self) -> &Path {
        self.bases.dir()
    }

    /// The QEMU process id of a guest, if it runs.
    pub fn guest_pid(&self, uuid: &str) -> Option<i32> {
        self.pid(uuid)
    }
}

/// Whether `s` is a UUID in its hyphenated form (QEMU's `-uuid` takes nothing else).
/// Adds one disk's arguments: node name, file, format, read-only, boot, serial.
type DiskArgs<'a> = dyn FnMut(&str, &str, &str, bool, bool, Option<&str>) + 'a;

/// The options of a plain file's protocol node.
fn file_options(path: &str) -> String {
    format!("driver=file,filename={path}")
}

/// Hot-adds a volume's disk to a running QEMU: its protocol and format nodes (`blockdev-add`), then a
/// virtio-blk-pci device on them (`device_add`); what was added is removed again when a later step fails.
/// The disk of an attached volume in a guest's definition.
fn attached_disk<'a>(def: &'a mut GuestDef, uuid: &str, volume_id: &str) -> Result<&'a mut VolumeDisk, Error> {
    def.volumes
        .iter_mut()
        .find(|v| v.volume_id == volume_id)
        .ok_or_else(|| Error::Hypervisor(format!("volume {volume_id} is not attached to instance {uuid}")))
}

/// A file name without a directory (the files of an assisted snapshot live beside the volume's file).
fn plain_file_name(name: Option<&str>) -> Result<&str, Error> {
    match name {
        Some(n) if !n.is_empty() && !n.contains('/') && n != "." && n != ".." => Ok(n),
        other => Err(Error::Hypervisor(format!("{other:?} is not a file name"))),
    }
}

async fn hot_add(qmp: &mut Qmp, disk: &VolumeDisk) -> Result<(), Error> {
    let node = disk.node();
    let file = format!("{node}-file");
    qmp.execute(
        "blockdev-add",
        Some({
            let mut node = disk.protocol_json();
            node["node-name"] = json!(file);
            node["read-only"] = json!(disk.read_only);
            node
        }),
    )
    .await?;
    let format = json!({"driver": disk.format, "file": file, "node-name": node, "read-only": disk.read_only});
    if let Err(e) = qmp.execute("blockdev-add", Some(format)).await {
        let _ = qmp.execute("blockdev-del", Some(json!({"node-name": file}))).await;
        return Err(e);
    }
    let device = json!({"driver": "virtio-blk-pci", "drive": node, "id": format!("{node}-disk"), "serial": serial(&disk.volume_id)});
    if let Err(e) = qmp.execute("device_add", Some(device)).await {
        let _ = qmp.execute("blockdev-del", Some(json!({"node-name": node}))).await;
        let _ = qmp.execute("blockdev-del", Some(json!({"node-name": file}))).await;
        return Err(e);
    }
    Ok(())
}

/// The QEMU ids of a NIC's netdev and device, by its tap (so a hot-unplug finds NICs the command line made).
fn nic_ids(nic: &Nic) -> (String, String) {
    (format!("net-{}", nic.devname), format!("nic-{}", nic.devname))
}

/// Hot-adds a NIC: a tap netdev QEMU creates (in its own network namespace, where the network agent's bridges
/// are), then the virtio-net device; the netdev goes again if the device cannot be added.
async fn hot_add_nic(qmp: &mut Qmp, nic: &Nic) -> Result<(), Error> {
    let (netdev, device) = nic_ids(nic);
    let tap = json!({"type": "tap", "id": netdev, "ifname": nic.devname, "script": "no", "downscript": "no"});
    qmp.execute("netdev_add", Some(tap)).await?;
    let mut dev = json!({"driver": "virtio-net-pci", "netdev": netdev, "id": device, "mac": nic.mac_address});
    if let Some(mtu) = nic.mtu {
        dev["host_mtu"] = json!(mtu);
    }
    if let Err(e) = qmp.execute("device_add", Some(dev)).await {
        let _ = qmp.execute("netdev_del", Some(json!({"id": netdev}))).await;
        return Err(e);
    }
    Ok(())
}

/// Hot-removes a NIC: `device_del`, then (once the guest released the device, within `timeout`) the netdev, which
/// takes the tap with it.
async fn hot_remove_nic(qmp: &mut Qmp, nic: &Nic, timeout: Duration) -> Result<(), Error> {
    let (netdev, device) = nic_ids(nic);
    if let Err(e) = qmp.execute("device_del", Some(json!({"id": device}))).await
        && !e.to_string().contains("not found")
    {
        return Err(e);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let present = qmp.execute("qom-list", Some(json!({"path": "/machine/peripheral"}))).await?;
        let gone = !present.as_array().is_some_and(|l| l.iter().any(|p| p["name"] == json!(device)));
        if gone {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Hypervisor(format!("port {}: the guest did not release its NIC within {} s", nic.port_id, timeout.as_secs())));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    match qmp.execute("netdev_del", Some(json!({"id": netdev}))).await {
        Err(e) if !e.to_string().contains("not found") => Err(e),
        _ => Ok(()),
    }
}

/// Hot-removes a volume's disk: `device_del` (the guest must release the device: PCI unplug goes through its
/// ACPI), then the format and protocol nodes once the device is gone, waiting up to `timeout`.
async fn hot_remove(qmp: &mut Qmp, disk: &VolumeDisk, timeout: Duration) -> Result<(), Error> {
    let node = disk.node();
    let id = format!("{node}-disk");
    if let Err(e) = qmp.execute("device_del", Some(json!({"id": id}))).await {
        // Already gone (an earlier detach that timed out later completed) is fine.
        if !e.to_string().contains("not found") {
            return Err(e);
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match qmp.execute("blockdev-del", Some(json!({"node-name": node}))).await {
            Ok(_) => break,
            // Still in use by the device the guest has not released yet.
            Err(e) if tokio::time::Instant::now() < deadline && !e.to_string().contains("Failed to find node") => {
                tracing::debug!(node = %node, error = %e, "waiting for the guest to release the disk");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) if e.to_string().contains("Failed to find node") => break,
            Err(e) => {
                return Err(Error::Hypervisor(format!(
                    "volume {}: the guest did not release the disk within {} s: {e}",
                    disk.volume_id,
                    timeout.as_secs()
                )));
            }
        }
    }
    match qmp.execute("blockdev-del", Some(json!({"node-name": format!("{node}-file")}))).await {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("Failed to find node") => Ok(()),
        Err(e) => Err(e),
    }
}

/// A volume's disk serial as the guest sees it (`/dev/disk/by-id/virtio-<serial>`): its id, at most 20
/// characters as virtio-blk allows, as upstream.
fn serial(volume_id: &str) -> String {
    volume_id.chars().take(20).collect()
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
}

/// `QEMU emulator version 10.0.2 (…)` → 10000002.
fn parse_version(text: &str) -> Option<i64> {
    let v = text.split("version ").nth(1)?.split_whitespace().next()?;
    let mut parts = v.split('.').map(|p| p.parse::<i64>().ok());
    let (a, b, c) = (parts.next()??, parts.next().flatten().unwrap_or(0), parts.next().flatten().unwrap_or(0));
    Some(a * 1_000_000 + b * 1000 + c)
}

/// The pid in `dir/qemu.pid` if that process runs and is this guest's QEMU (its command line names `uuid`).
fn read_pid(dir: &Path, uuid: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join("qemu.pid")).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let needle = format!("instance-{uuid}");
    cmdline.split(|b| *b == 0).any(|arg| String::from_utf8_lossy(arg).contains(&needle)).then_some(pid)
}

fn kill(pid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// Waits up to `timeout` for the guest's process to end; whether it did.
async fn wait_gone(pid: i32, uuid: &str, dir: &Path, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if read_pid(dir, uuid) != Some(pid) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether KVM runs guests at a usable speed here: the BIOS must get through its POST (to "No bootable device")
/// within `timeout` under `-accel kvm`. A KVM that cannot run stock guests crawls through it, or fails.
async fn probe_kvm(qemu: &Path, timeout: Duration) -> bool {
    if !Path::new("/dev/kvm").exists() {
        return false;
    }
    let Ok(dir) = tempfile::tempdir() else { return false };
    let log = dir.path().join("bios.log");
    let child = tokio::process::Command::new(qemu)
        .args(["-accel", "kvm", "-machine", "pc", "-nodefaults", "-no-user-config", "-display", "none", "-m", "32"])
        .args(["-chardev", &format!("file,id=dbg,path={}", log.display()), "-device", "isa-debugcon,iobase=0x402,chardev=dbg"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let Ok(mut child) = child else { return false };
    let deadline = tokio::time::Instant::now() + timeout;
    let ok = loop {
        if std::fs::read_to_string(&log).is_ok_and(|t| t.contains("No bootable device")) {
            break true;
        }
        if tokio::time::Instant::now() >= deadline || child.try_wait().ok().flatten().is_some() {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill().await;
    ok
}

#[async_trait]
impl Hypervisor for QemuDriver {
    fn name(&self) -> &'static str {
        "qemu"
    }

    async fn supported_instances(&self) -> Vec<[String; 3]> {
        // Full virtualisation of this machine's architecture: emulated always, KVM when guests run on it.
        let arch = std::env::consts::ARCH.to_string();
        let mut out = vec![[arch.clone(), "qemu".into(), "hvm".into()]];
        if self.accel().await == "kvm" {
            out.push([arch, "kvm".into(), "hvm".into()]);
        }
        out
    }

    async fn host_info(&self) -> Result<HypervisorInfo, Error> {
        let c = &self.config;
        let host = LocalHost {
            hypervisor_type: "QEMU",
            version: self.version,
            model: if self.accel().await == "kvm" { "host" } else { "max" },
            vendor: "QEMU",
            capacity: [c.vcpus, c.memory_mb, c.local_gb],
            instances_path: &c.instances_path,
        };
        Ok(host.info(self.guests().iter().map(|g| &g.flavor)))
    }

    async fn list_guests(&self) -> Result<Vec<GuestInfo>, Error> {
        Ok(with_power_states(self, self.guests().into_iter().map(|g| g.uuid)).await)
    }

    async fn spawn(&self, instance: &InstanceSpec, context: &GuestContext) -> Result<(), Error> {
        let started = std::time::Instant::now();
        self.create(instance, context).await?;
        self.start(instance).await?;
        tracing::info!(instance = %instance.uuid, elapsed_ms = started.elapsed().as_millis() as u64, "guest spawned");
        Ok(())
    }

    async fn destroy(&self, uuid: &str) -> Result<(), Error> {
        if !crate::guest_dir::is_guest_name(uuid) {
            return Ok(());
        }
        let dir = self.dir(uuid);
        if !dir.exists() {
            return Ok(());
        }
        self.kill_guest(uuid).await;
        if let Some(pid) = self.pid(uuid) {
            return Err(Error::Hypervisor(format!("the QEMU process {pid} of instance {uuid} does not end")));
        }
        std::fs::remove_dir_all(&dir).map_err(io_err(format!("removing {}", dir.display())))?;
        self.remove_unused_bases();
        Ok(())
    }

    async fn rescue(&self, instance: &InstanceSpec, rescue: &ImageSource, _context: &GuestContext) -> Result<(), Error> {
        let uuid = instance.uuid.as_str();
        let mut def = self.load(uuid)?;
        if def.rescue.is_some() {
            return Err(Error::Hypervisor(format!("instance {uuid} is already rescued")));
        }
        Self::check_bootable(rescue)?;
        let source = self.boot_source(rescue).await?;
        self.shutdown(uuid, self.config.shutdown_timeout).await;
        let _ = std::fs::remove_file(self.dir(uuid).join("memory.state"));
        let path = self.dir(uuid).join("disk.rescue");
        let _ = std::fs::remove_file(&path);
        self.overlay(&source, &path, None).await?;
        def.rescue = Some(RescueDef {
            bases: source.bases,
            base_format: source.format.to_owned(),
            kernel: source.kernel,
            ramdisk: source.ramdisk,
            cmdline: source.cmdline,
        });
        def.state = PowerState::Running;
        self.save(&def)?;
        self.launch(uuid, None).await
    }

    async fn unrescue(&self, instance: &InstanceSpec, _context: &GuestContext) -> Result<(), Error> {
        let uuid = instance.uuid.as_str();
        let mut def = self.load(uuid)?;
        if def.rescue.is_none() {
            return Err(Error::Hypervisor(format!("instance {uuid} is not rescued")));
        }
        self.kill_guest(uuid).await;
        def.rescue = None;
        self.save(&def)?;
        let _ = std::fs::remove_file(self.dir(uuid).join("disk.rescue"));
        self.start(instance).await
    }

    async fn power_off(&self, uuid: &str) -> Result<(), Error> {
        self.load(uuid)?;
        self.shutdown(uuid, self.config.shutdown_timeout).await;
        let _ = std::fs::remove_file(self.dir(uuid).join("memory.state"));
        self.set_state(uuid, PowerState::Shutdown)
    }

    async fn power_on(&self, instance: &InstanceSpec, _context: &GuestContext) -> Result<(), Error> {
        if self.pid(&instance.uuid).is_some() {
            return Ok(());
        }
        self.start(instance).await
    }

    async fn reboot(&self, instance: &InstanceSpec, _context: &GuestContext, hard: bool) -> Result<(), Error> {
        let uuid = instance.uuid.as_str();
        self.load(uuid)?;
        let timeout = if hard { Duration::ZERO } else { self.config.shutdown_timeout };
        self.shutdown(uuid, timeout).await;
        let _ = std::fs::remove_file(self.dir(uuid).join("memory.state"));
        self.start(instance).await
    }

    async fn pause(&self, uuid: &str) -> Result<(), Error> {
        let state = self.power_state(uuid).await?;
        if state != PowerState::Running && state != PowerState::Paused {
            return Err(Error::InvalidState { uuid: uuid.to_owned(), operation: "pause", state });
        }
        self.qmp(uuid).await?.execute("stop", None).await?;
        self.set_state(uuid, PowerState::Paused)
    }

    async fn unpause(&self, uuid: &str) -> Result<(), Error> {
        let state = self.power_state(uuid).await?;
        if state != PowerState::Running && state != PowerState::Paused {
            return Err(Error::InvalidState { uuid: uuid.to_owned(), operation: "unpause", state });
        }
        self.qmp(uuid).await?.execute("cont", None).await?;
        self.set_state(uuid, PowerState::Running)
    }

    async fn suspend(&self, uuid: &str) -> Result<(), Error> {
        let state = self.power_state(uuid).await?;
        if state != PowerState::Running && state != PowerState::Paused {
            return Err(Error::InvalidState { uuid: uuid.to_owned(), operation: "suspend", state });
        }
        let file = self.dir(uuid).join("memory.state");
        let mut qmp = self.qmp(uuid).await?;
        qmp.execute("stop", None).await?;
        qmp.execute("migrate", Some(json!({"uri": format!("file:{}", file.display())}))).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let status = qmp.execute("query-migrate", None).await?;
            match status.get("status").and_then(Value::as_str).unwrap_or_default() {
                "completed" => break,
                "failed" | "cancelled" => {
                    let _ = qmp.execute("cont", None).await;
                    let why = status.get("error-desc").and_then(Value::as_str).unwrap_or("migration failed");
                    return Err(Error::Hypervisor(format!("saving the guest's memory failed: {why}")));
                }
                _ if tokio::time::Instant::now() >= deadline => {
                    let _ = qmp.execute("migrate_cancel", None).await;
                    let _ = qmp.execute("cont", None).await;
                    return Err(Error::Hypervisor("saving the guest's memory timed out".into()));
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        drop(qmp);
        self.set_state(uuid, PowerState::Suspended)?;
        self.kill_guest(uuid).await;
        Ok(())
    }

    async fn resume(&self, instance: &InstanceSpec, _context: &GuestContext) -> Result<(), Error> {
        let uuid = instance.uuid.as_str();
        let state = self.power_state(uuid).await?;
        if state != PowerState::Suspended {
            return Err(Error::InvalidState { uuid: uuid.to_owned(), operation: "resume", state });
        }
        let file = self.dir(uuid).join("memory.state");
        self.launch(uuid, Some(&file)).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let mut qmp = self.qmp(uuid).await?;
            let status = qmp.status().await?;
            if status == "running" {
                break;
            }
            // The memory was saved from a stopped guest, so it arrives stopped: continue it.
            if status == "paused" {
                qmp.execute("cont", None).await?;
                continue;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Hypervisor(format!("the guest did not resume (QEMU status {status})")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = std::fs::remove_file(&file);
        self.set_state(uuid, PowerState::Running)
    }

    async fn resize(&self, instance: &InstanceSpec, flavor: &FlavorSpec, _context: &GuestContext) -> Result<(), Error> {
        let uuid = instance.uuid.as_str();
        let mut def = self.load(uuid)?;
        let was_running = self.pid(uuid).is_some();
        self.kill_guest(uuid).await;
        if flavor.root_gb > def.flavor.root_gb {
            let disk = self.dir(uuid).join("disk").to_string_lossy().into_owned();
            let size = format!("{}G", flavor.root_gb);
            self.qemu_img(&["resize".into(), "-q".into(), "-f".into(), "qcow2".into(), disk, size]).await?;
        }
        def.flavor = flavor.clone();
        def.state = if was_running { PowerState::Running } else { PowerState::Shutdown };
        self.save(&def)?;
        if was_running {
            self.launch(uuid, None).await?;
        }
        Ok(())
    }

    async fn snapshot(&self, instance: &InstanceSpec, dest: &Path) -> Result<SnapshotFormat, Error> {
        let uuid = instance.uuid.as_str();
        self.load(uuid)?;
        // A running guest is paused while its disk is copied, so the copy is consistent.
        let mut paused = None;
        if self.power_state(uuid).await? == PowerState::Running {
            let mut qmp = self.qmp(uuid).await?;
            qmp.execute("stop", None).await?;
            paused = Some(qmp);
        }
        let disk = self.dir(uuid).join("disk").to_string_lossy().into_owned();
        let dest = dest.to_string_lossy().into_owned();
        let args = ["convert", "-q", "-U", "-f", "qcow2", "-O", "qcow2", &disk, &dest].map(String::from);
        let result = self.qemu_img(&args).await;
        if let Some(mut qmp) = paused {
            qmp.execute("cont", None).await?;
        }
        result?;
        Ok(SnapshotFormat::disk("qcow2"))
    }

    async fn diagnostics(&self, instance: &InstanceSpec) -> Result<BTreeMap<String, Value>, Error> {
        let uuid = instance.uuid.as_str();
        let def = self.load(uuid)?;
        let mut out = BTreeMap::new();
        out.insert("memory".into(), json!(def.flavor.memory_mb * 1024));
        if self.pid(uuid).is_some()
            && let Ok(mut qmp) = self.qmp(uuid).await
            && let Ok(stats) = qmp.execute("query-blockstats", None).await
        {
            for dev in stats.as_array().into_iter().flatten() {
                let name = match dev.get("qdev").and_then(Value::as_str).unwrap_or_default() {
                    q if q.contains("root") => "vda",
                    q if q.contains("eph0") => "vdb",
                    _ => continue,
                };
                let s = &dev["stats"];
                out.insert(format!("{name}_read"), s["rd_bytes"].clone());
                out.insert(format!("{name}_read_req"), s["rd_operations"].clone());
                out.insert(format!("{name}_write"), s["wr_bytes"].clone());
                out.insert(format!("{name}_write_req"), s["wr_operations"].clone());
            }
        }
        Ok(out)
    }

    async fn attach_volume(&self, instance: &InstanceSpec, device: &BlockDeviceSpec) -> Result<(), Error> {
        let uuid = instance.uuid.as_str();
        let mut def = self.load(uuid)?;
        let disk = VolumeDisk::of(device, &self.config.iscsi_initiator)?;
        if def.volumes.iter().any(|v| v.volume_id == disk.volume_id) {
            return Err(Error::Hypervisor(format!("volume {} is already attached to instance {uuid}", disk.volume_id)));
        }
        // A guest whose process runs gets the disk now; one that is off gets it at its next start.
        if self.live(uuid, &def) {
            let mut qmp = self.qmp(uuid).await?;
            hot_add(&mut qmp, &disk).await?;
            tracing::info!(instance = %uuid, volume = %disk.volume_id, node = %disk.node(), "volume hot-added");
        }
        def.volumes.push(disk);
        self.save(&def)
    }

    async fn detach_volume(&self, uuid: &str, volume_id: &str) -> Result<(), Error> {
        let mut def = self.load(uuid)?;
        let Some(disk) = def.volumes.iter().find(|v| v.volume_id == volume_id).cloned() else { return Ok(()) };
        if self.live(uuid, &def) {
            let mut qmp = self.qmp(uuid).await?;
            hot_remove(&mut qmp, &disk, self.config.volume_detach_timeout).await?;
            tracing::info!(instance = %uuid, volume = %volume_id, "volume hot-removed");
        }
        def.volumes.retain(|v| v.volume_id != volume_id);
        self.save(&def)
    }

    async fn attach_interface(&self, uuid: &str, interface: &NetworkInterface) -> Result<(), Error> {
        let mut def = self.load(uuid)?;
        let nic = Nic::of(interface)?;
        if def.nics.iter().any(|n| n.port_id == nic.port_id || n.devname == nic.devname) {
            return Err(Error::Hypervisor(format!("port {} ({}) is already attached to instance {uuid}", nic.port_id, nic.devname)));
        }
        // A guest whose process runs gets the NIC now; one that is off gets it at its next start.
        if self.live(uuid, &def) {
            let mut qmp = self.qmp(uuid).await?;
            hot_add_nic(&mut qmp, &nic).await?;
            tracing::info!(instance = %uuid, port = %nic.port_id, tap = %nic.devname, "NIC hot-added");
        }
        def.nics.push(nic);
        self.save(&def)
    }

    async fn detach_interface(&self, uuid: &str, port_id: &str) -> Result<(), Error> {
        let mut def = self.load(uuid)?;
        let Some(nic) = def.nics.iter().find(|n| n.port_id == port_id).cloned() else { return Ok(()) };
        if self.live(uuid, &def) {
            let mut qmp = self.qmp(uuid).await?;
            hot_remove_nic(&mut qmp, &nic, self.config.volume_detach_timeout).await?;
            tracing::info!(instance = %uuid, port = %port_id, "NIC hot-removed");
        }
        def.nics.retain(|n| n.port_id != port_id);
        self.save(&def)
    }

    async fn volume_snapshot_create(&self, uuid: &str, volume_id: &str, create_info: &Value) -> Result<(), Error> {
        let mut def = self.load(uuid)?;
        let running = self.live(uuid, &def);
        let disk = attached_disk(&mut def, uuid, volume_id)?;
        if disk.iscsi.is_some() {
            return Err(Error::Hypervisor(format!("volume {volume_id} is an iSCSI LUN: its backend snapshots it")));
        }
        let new_file = plain_file_name(create_info["new_file"].as_str())?;
        let dir = disk.path.parent().ok_or_else(|| Error::Hypervisor(format!("volume {volume_id} has no directory")))?;
        let new_path = dir.join(new_file);
        if new_path.exists() {
            return Err(Error::Hypervisor(format!("{} exists already", new_path.display())));
        }
        if running {
            return Err(Error::Hypervisor(format!(
                "instance {uuid} is running: the qemu driver snapshots the volumes of stopped guests only"
            )));
        }
        let (old, format) = (disk.path.to_string_lossy().into_owned(), disk.format.clone());
        let new = new_path.to_string_lossy().into_owned();
        self.qemu_img(&["create".into(), "-q".into(), "-f".into(), "qcow2".into(), "-F".into(), format, "-b".into(), old, new]).await?;
        disk.path = new_path;
        disk.format = "qcow2".into();
        self.save(&def)
    }

    async fn volume_snapshot_delete(&self, uuid: &str, volume_id: &str, delete_info: &Value) -> Result<(), Error> {
        let mut def = self.load(uuid)?;
        let running = self.live(uuid, &def);
        let disk = attached_disk(&mut def, uuid, volume_id)?;
        // No file to merge: the snapshot is the volume's own base file, which stays (as upstream).
        let Some(merge) = delete_info["file_to_merge"].as_str() else { return Ok(()) };
        let merge = plain_file_name(Some(merge))?;
        if running {
            return Err(Error::Hypervisor(format!(
                "instance {uuid} is running: the qemu driver merges the volume files of stopped guests only"
            )));
        }
        // The chain from the active file down: (path, format).
        let active = disk.path.to_string_lossy().into_owned();
        let text = self.qemu_img_output(&["info".into(), "--backing-chain".into(), "--output=json".into(), "-U".into(), active.clone()]).await?;
        let chain: Vec<Value> = serde_json::from_str(&text).map_err(|e| Error::Hypervisor(format!("qemu-img info: {e}")))?;
        let chain: Vec<(String, String)> = chain
            .iter()
            .map(|c| (c["filename"].as_str().unwrap_or_default().to_owned(), c["format"].as_str().unwrap_or("raw").to_owned()))
            .collect();
        let name = |p: &str| Path::new(p).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let i = chain.iter().position(|(p, _)| name(p) == merge).ok_or_else(|| {
            Error::Hypervisor(format!("{merge} is not in the chain of volume {volume_id}"))
        })?;
        match delete_info["merge_target_file"].as_str() {
            // Commit the file into its backing file (the target); the file above it, or the disk, then uses the target.
            Some(target) => {
                let target = plain_file_name(Some(target))?;
                let Some((base, base_format)) = chain.get(i + 1).cloned().filter(|(p, _)| name(p) == target) else {
                    return Err(Error::Hypervisor(format!("{target} is not the backing file of {merge}")));
                };
                let (file, format) = chain[i].clone();
                self.qemu_img(&["commit".into(), "-q".into(), "-f".into(), format, "-d".into(), file]).await?;
                if i == 0 {
                    disk.path = PathBuf::from(base);
                    disk.format = base_format;
                } else {
                    let (child, child_format) = chain[i - 1].clone();
                    self.qemu_img(&["rebase".into(), "-q".into(), "-u".into(), "-f".into(), child_format, "-F".into(), base_format, "-b".into(), base, child])
                        .await?;
                }
            }
            // Pull the file's data into the active file, which then sits on the file's own backing file.
            None => {
                if i == 0 {
                    return Err(Error::Hypervisor(format!("{merge} is the active file of volume {volume_id}: it needs a merge target")));
                }
                let mut args: Vec<String> = vec!["rebase".into(), "-q".into(), "-f".into(), chain[0].1.clone()];
                match chain.get(i + 1) {
                    Some((base, base_format)) => args.extend(["-F".into(), base_format.clone(), "-b".into(), base.clone()]),
                    None => args.extend(["-b".into(), String::new()]),
                }
                args.push(active);
                self.qemu_img(&args).await?;
            }
        }
        self.save(&def)
    }

    async fn power_state(&self, uuid: &str) -> Result<PowerState, Error> {
        let def = self.load(uuid)?;
        if self.pid(uuid).is_none() {
            let suspended = def.state == PowerState::Suspended && self.dir(uuid).join("memory.state").exists();
            return Ok(if suspended { PowerState::Suspended } else { PowerState::Shutdown });
        }
        let status = match self.qmp(uuid).await {
            Ok(mut qmp) => qmp.status().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        Ok(match status.as_str() {
            "running" => PowerState::Running,
            "paused" | "suspended" | "prelaunch" | "inmigrate" | "postmigrate" | "finish-migrate" | "restore-vm" | "save-vm" => {
                PowerState::Paused
            }
            "shutdown" => PowerState::Shutdown,
            "guest-panicked" | "internal-error" | "io-error" => PowerState::Crashed,
            _ => PowerState::NoState,
        })
    }

    async fn console_output(&self, uuid: &str) -> Result<String, Error> {
        self.guests.console::<GuestDef>(uuid).await
    }

    async fn expected_power_state(&self, uuid: &str) -> Option<PowerState> {
        self.load(uuid).ok().map(|d| d.state)
    }

    async fn maintain(&self) {
        self.remove_unused_bases();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn instance(uuid: &str) -> InstanceSpec {
        InstanceSpec {
            uuid: uuid.into(),
            display_name: format!("vm {uuid}"),
            hostname: format!("vm-{uuid}"),
            project_id: "p".into(),
            user_id: "u".into(),
            flavor: FlavorSpec {
                flavorid: "1".into(),
                name: "m1.tiny".into(),
                vcpus: 1,
                memory_mb: 128,
                root_gb: 1,
                ephemeral_gb: 0,
                swap: 0,
                extra_specs: BTreeMap::new(),
            },
            image_ref: "img".into(),
            image_properties: BTreeMap::new(),
            key_name: None,
            key_data: None,
            user_data: None,
            metadata: BTreeMap::new(),
            config_drive: false,
            availability_zone: None,
            launch_index: 0,
        }
    }

    #[test]
    fn versions_and_virt_types_parse() {
        assert_eq!(parse_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)\n"), Some(10_000_002));
        assert_eq!(parse_version("nonsense"), None);
        assert!(is_uuid("0b7c1a5e-3e2f-4c1d-9a0b-1c2d3e4f5a6b") && !is_uuid("vm1"));
        assert_eq!("qemu".parse::<VirtType>().unwrap(), VirtType::Qemu);
        assert_eq!("auto".parse::<VirtType>().unwrap(), VirtType::Auto);
        assert!("xen".parse::<VirtType>().is_err());
    }

    #[test]
    fn the_command_line_boots_the_definition() {
        let dir = tempfile::tempdir().unwrap();
        let driver = QemuDriver {
            guests: GuestDirs::new(dir.path().to_path_buf(), "guest.json"),
            config: QemuConfig::new(dir.path()),
            bases: BaseCache::new(dir.path().join("_base"), None),
            accel: tokio::sync::OnceCell::new(),
            version: 1,
        };
        let def = GuestDef {
            uuid: "u1".into(),
            name: "vm".into(),
            flavor: FlavorSpec { vcpus: 2, memory_mb: 256, ..instance("u1").flavor },
            bases: vec!["img".into()],
            base_format: Some("qcow2".into()),
            kernel: Some("/k".into()),
            ramdisk: Some("/r".into()),
            cmdline: Some("console=ttyS0".into()),
            config_drive: true,
            state: PowerState::Shutdown,
            rescue: None,
            volumes: Vec::new(),
            nics: vec![
                Nic { port_id: "p1".into(), mac_address: "fa:16:3e:00:00:01".into(), devname: "tapp1".into(), mtu: Some(1450) },
                Nic { port_id: "p2".into(), mac_address: "fa:16:3e:00:00:02".into(), devname: "tapp2".into(), mtu: None },
            ],
        };
        let args = driver.command_line(&def, "tcg", None).join(" ");
        // NICs on taps QEMU makes (and takes away when it ends), eth0 first, with the network's MTU when known.
        assert!(args.contains("-netdev tap,id=net-tapp1,ifname=tapp1,script=no,downscript=no"), "{args}");
        assert!(args.contains("-device virtio-net-pci,netdev=net-tapp1,id=nic-tapp1,mac=fa:16:3e:00:00:01,host_mtu=1450"), "{args}");
        assert!(args.contains("-device virtio-net-pci,netdev=net-tapp2,id=nic-tapp2,mac=fa:16:3e:00:00:02 "), "{args}");
        assert!(args.find("ifname=tapp1") < args.find("ifname=tapp2"), "{args}");
        for part in ["-accel tcg", "-cpu max", "-smp 2", "-m 256", "-kernel /k -append console=ttyS0", "-initrd /r", "-daemonize"] {
            assert!(args.contains(part), "{part} in {args}");
        }
        assert!(args.contains("node-name=config,read-only=on"), "{args}");
        assert!(args.contains("guest=instance-u1"), "{args}");
        assert!(!args.contains("-incoming"));
        let args = driver.command_line(&def, "kvm", Some(Path::new("/s"))).join(" ");
        assert!(args.contains("-cpu host") && args.contains("-incoming file:/s"), "{args}");
        // Rescued, the guest boots the rescue disk and its kernel; its own disk follows without a boot index.
        let rescue = RescueDef {
            bases: vec!["rescue-img".into()],
            base_format: "qcow2".into(),
            kernel: Some("/rk".into()),
            ramdisk: None,
            cmdline: Some("root=/dev/vda".into()),
        };
        let args = driver.command_line(&GuestDef { rescue: Some(rescue), ..def }, "tcg", None).join(" ");
        assert!(args.contains("drive=rescue,id=rescue-disk,bootindex=1"), "{args}");
        assert!(args.contains("drive=root,id=root-disk ") || args.ends_with("drive=root,id=root-disk"), "{args}");
        assert!(args.find("node-name=rescue-file") < args.find("node-name=root-file"), "{args}");
        assert!(args.contains("-kernel /rk -append root=/dev/vda") && !args.contains("-initrd"), "{args}");
    }

    #[test]
    fn nics_take_only_tap_names_and_macs_that_cannot_inject_options() {
        let iface = |dev: &str, mac: &str, mtu: Option<u32>| {
            let v = compute_rpc::VifSpec {
                port_id: "0123456789abcdef".into(),
                network_id: "n".into(),
                mac_address: mac.into(),
                active: true,
                mtu,
            };
            let mut i = crate::hypervisor::NetworkInterface::of(&v);
            if !dev.is_empty() {
                i.devname = dev.into();
            }
            i
        };
        let nic = Nic::of(&iface("", "FA:16:3E:00:00:0A", Some(1450))).unwrap();
        assert_eq!((nic.devname.as_str(), nic.mac_address.as_str(), nic.mtu), ("tap0123456789a", "fa:16:3e:00:00:0a", Some(1450)));
        assert_eq!(Nic::of(&iface("", "fa:16:3e:00:00:0a", Some(10))).unwrap().mtu, None, "an impossible MTU is left out");
        assert!(Nic::of(&iface("tap,x=y", "fa:16:3e:00:00:0a", None)).is_err());
        assert!(Nic::of(&iface("tap0123456789abcdef", "fa:16:3e:00:00:0a", None)).is_err(), "longer than IFNAMSIZ");
        assert!(Nic::of(&iface("", "fa:16:3e:00:00:0a,id=x", None)).is_err());
        assert!(Nic::of(&iface("", "fa:16:3e:00:00", None)).is_err());
    }

    #[test]
    fn volumes_come_from_local_connections_and_a_root_volume_boots() {
        let device = |id: &str, kind: &str, path: &str, boot: Option<i64>| BlockDeviceSpec {
            volume_id: id.into(),
            device_name: "/dev/vdb".into(),
            boot_index: boot,
            connection_info: json!({"driver_volume_type": kind, "data": {"device_path": path, "format": "qcow2"}}),
        };
        let of = |d: &BlockDeviceSpec| VolumeDisk::of(d, "iqn.2010-10.org.openstack.stratus:h1");
        let root = of(&device("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "local", "/v/volume-a", Some(0))).unwrap();
        assert!(root.boot && root.format == "qcow2" && !root.read_only);
        assert_eq!(root.node(), "volaaaaaaaabbbbccccdddd");
        assert!(of(&device("b", "rbd", "/v/b", None)).is_err(), "local and iscsi connections only");
        assert!(of(&device("b", "iscsi", "/v/b", None)).is_err(), "an iscsi connection names its target");
        let lun = BlockDeviceSpec {
            connection_info: json!({"driver_volume_type": "iscsi", "data": {"target_portal": "10.0.0.5:3260", "target_iqn": "iqn.2010-10.org.openstack:volume-c", "target_lun": 1}}),
            ..device("c", "iscsi", "", None)
        };
        let iscsi = of(&lun).unwrap();
        assert_eq!(iscsi.format, "raw");
        assert_eq!(
            iscsi.protocol_options(),
            "driver=iscsi,transport=tcp,portal=10.0.0.5:3260,target=iqn.2010-10.org.openstack:volume-c,lun=1,initiator-name=iqn.2010-10.org.openstack.stratus:h1"
        );
        let mut bad = lun.clone();
        bad.connection_info["data"]["target_iqn"] = json!("iqn.x,file=/etc/shadow");
        assert!(of(&bad).is_err(), "no option injection");
        assert!(of(&device("b", "local", "relative", None)).is_err());
        assert!(of(&device("b", "local", "/v/a,b", None)).is_err(), "no option injection");
        let data = of(&device("ffffffff-0000", "local", "/v/volume-f", None)).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let driver = QemuDriver {
            guests: GuestDirs::new(dir.path().to_path_buf(), "guest.json"),
            config: QemuConfig::new(dir.path()),
            bases: BaseCache::new(dir.path().join("_base"), None),
            accel: tokio::sync::OnceCell::new(),
            version: 1,
        };
        let def = GuestDef {
            uuid: "u2".into(),
            name: "vm".into(),
            flavor: instance("u2").flavor,
            bases: Vec::new(),
            base_format: None,
            kernel: None,
            ramdisk: None,
            cmdline: None,
            config_drive: false,
            state: PowerState::Shutdown,
            rescue: None,
            volumes: vec![data, root],
            nics: Vec::new(),
        };
        let args = driver.command_line(&def, "tcg", None).join(" ");
        assert!(!args.contains("node-name=root"), "no root overlay: {args}");
        let root_at = args.find("drive=volaaaaaaaabbbbccccdddd").unwrap();
        let data_at = args.find("drive=volffffffff0000").unwrap();
        assert!(root_at < data_at, "the root volume is the first disk: {args}");
        assert!(args.contains("id=volaaaaaaaabbbbccccdddd-disk,serial=aaaaaaaa-bbbb-cccc-d,bootindex=1"), "{args}");
        assert!(args.contains("driver=file,filename=/v/volume-f,node-name=volffffffff0000-file"), "{args}");
    }
}
