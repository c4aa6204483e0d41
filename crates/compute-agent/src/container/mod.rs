//! The `container` driver: instances as Linux containers (namespaces and cgroups) run by an OCI runtime, as
//! containerd and CRI-O run them (upstream's nova-docker and Zun run Docker images the same way).
//!
//! Images are `container_format=docker` images (a `docker save` archive or an OCI image layout), unpacked once per
//! host into read-only layers (`layers`). An instance's root filesystem is an overlay of its image's layers with
//! its own upper directory. Everything the driver knows of an instance is on disk under
//! `<instances_path>/<uuid>/`: `container.json` (the definition and the power state the driver last set), `upper/`
//! and `work/` (the overlay's writable half), `rootfs/` (the overlay's mount point), `config/` (upstream's config
//! drive tree, mounted read-only at `/mnt/config` in the container), `config.json` (the OCI bundle's
//! configuration, written at each start), `console.log` (the container's standard output and error) and
//! `runtime.log`. Containers are not the agent's children and keep running when it restarts.
//!
//! Flavors become cgroup limits: memory (and memory + swap) = `memory_mb`, CPU quota = `vcpus` CPUs per period,
//! a pids limit. Power: stop = SIGTERM to the first process, then SIGKILL after `stop_timeout`; start = the
//! image's entry point and command as the first process again (the upper directory keeps what the instance
//! wrote); pause and suspend = the freezer cgroup (a container's memory has nowhere else to go); reboot =
//! restart. Snapshots commit the upper directory as a new layer on the image's layers.
//!
//! Network: each port is a veth pair, `tap<port id[:11]>` on the host (in `host_namespace` when set; the network
//! agent plugs it into the network's bridge as it does a VM's tap) and `eth<n>` with the port's MAC in the
//! container's named network namespace `ctr-<uuid>`. The container brings its interfaces up with DHCP from the
//! network's DHCP server, as a VM does; it has CAP_NET_ADMIN and CAP_NET_RAW in its own network namespace for that.

mod layers;
mod runtime;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use compute_rpc::{FlavorSpec, InstanceSpec, PowerState};
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, MountBuilder, ProcessBuilder, RootBuilder, Spec, UserBuilder,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use self::layers::ImageRecord;
use self::runtime::Runtime;
use crate::Error;
use crate::base::{BaseCache, ImageService};
use crate::guest_dir::{GuestDirs, LocalHost, Nic, io_err, is_guest_name, with_power_states};
use crate::hypervisor::{BlockDeviceSpec, GuestContext, GuestInfo, Hypervisor, HypervisorInfo, ImageSource, NetworkInterface};

/// The CFS period CPU quotas are given in (100 ms, the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;
/// Where the config drive tree appears in the container.
const CONFIG_MOUNT: &str = "/mnt/config";

/// The container driver's settings.
#[derive(Clone, Debug)]
pub struct ContainerConfig {
    /// Where instances' directories, the `_base` image cache, `_layers` and `_images` live.
    pub instances_path: PathBuf,
    /// The OCI runtime (runc's command line).
    pub runtime: PathBuf,
    /// How long a container's first process has to end after SIGTERM before it is killed (Docker's stop timeout).
    pub stop_timeout: Duration,
    /// The most processes a container may have (the pids cgroup).
    pub pids_limit: i64,
    /// Remove cached images (and their layers) no instance uses, once unused for `remove_unused_minimum_age`.
    pub remove_unused_base_images: bool,
    pub remove_unused_minimum_age: Duration,
    /// The named network namespace the host ends of containers' veth pairs go to (the network agent's
    /// `host_namespace`); `None`: the agent's own.
    pub host_namespace: Option<String>,
    /// `ip` (iproute2), which makes network namespaces and veth pairs.
    pub ip: PathBuf,
    /// The host's capacity; the machine's own figures when `None`.
    pub vcpus: Option<i64>,
    pub memory_mb: Option<i64>,
    pub local_gb: Option<i64>,
}

impl ContainerConfig {
    pub fn new(instances_path: impl Into<PathBuf>) -> ContainerConfig {
        ContainerConfig {
            instances_path: instances_path.into(),
            runtime: "runc".into(),
            stop_timeout: Duration::from_secs(10),
            pids_limit: 1024,
            remove_unused_base_images: true,
            remove_unused_minimum_age: Duration::from_secs(86_400),
            host_namespace: None,
            ip: "ip".into(),
            vcpus: None,
            memory_mb: None,
            local_gb: None,
        }
    }
}

/// An instance's definition and the power state the driver last put it in, kept in `container.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct ContainerDef {
    uuid: String,
    hostname: String,
    flavor: FlavorSpec,
    image_id: String,
    image: ImageRecord,
    /// What the driver last did: `Running`, `Paused`, `Suspended` or `Shutdown`.
    state: PowerState,
    #[serde(default)]
    nics: Vec<Nic>,
    /// Attached volumes, as block devices in the container.
    #[serde(default)]
    volumes: Vec<Volume>,
}

/// A volume as the container has it: the raw file of a `local` connection behind a loop device, whose node the
/// container sees at `device_name` (`/dev/vdb`), allowed by its devices cgroup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Volume {
    volume_id: String,
    device_name: String,
    path: PathBuf,
    read_only: bool,
}

impl Volume {
    fn of(device: &BlockDeviceSpec) -> Result<Volume, Error> {
        let id = &device.volume_id;
        let info = &device.connection_info;
        let data = &info["data"];
        match info["driver_volume_type"].as_str().unwrap_or_default() {
            "local" => {}
            other => {
                return Err(Error::Hypervisor(format!(
                    "volume {id}: the container driver attaches local (file) volumes, not {other:?} (an iSCSI volume \
                     would need the host's kernel initiator)"
                )));
            }
        }
        let path = data["device_path"].as_str().filter(|p| p.starts_with('/')).ok_or_else(|| Error::Hypervisor(format!("volume {id}: its connection has no device_path")))?;
        let format = data["format"].as_str().unwrap_or("raw");
        if format != "raw" {
            return Err(Error::Hypervisor(format!("volume {id}: the container driver attaches raw volumes, not {format}")));
        }
        let name = device.device_name.strip_prefix("/dev/").unwrap_or_default();
        if name.is_empty() || name.len() > 16 || !name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
            return Err(Error::Hypervisor(format!("volume {id}: unusable device name {:?}", device.device_name)));
        }
        Ok(Volume { volume_id: id.clone(), device_name: device.device_name.clone(), path: PathBuf::from(path), read_only: data["access_mode"] == "ro" })
    }
}

/// Runs `losetup` with `args`; its standard output.
async fn losetup(args: &[&str]) -> Result<String, Error> {
    let out = tokio::process::Command::new("losetup").args(args).output().await.map_err(io_err("running losetup"))?;
    if !out.status.success() {
        return Err(Error::Hypervisor(format!("losetup {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The loop devices of `file` (`losetup -j FILE` lists them as `/dev/loop3: []: (/path)`).
async fn loops_of(file: &Path) -> Result<Vec<String>, Error> {
    let listed = losetup(&["-j", &file.to_string_lossy()]).await?;
    Ok(listed.lines().filter_map(|l| l.split(':').next()).filter(|d| d.starts_with("/dev/loop")).map(str::to_owned).collect())
}

/// A loop device's major and minor numbers.
fn device_numbers(node: &Path) -> Result<(i64, i64), Error> {
    let st = rustix::fs::stat(node).map_err(|e| Error::Hypervisor(format!("{}: {e}", node.display())))?;
    Ok((rustix::fs::major(st.st_rdev) as i64, rustix::fs::minor(st.st_rdev) as i64))
}

pub struct ContainerDriver {
    config: ContainerConfig,
    guests: GuestDirs,
    bases: BaseCache,
    runtime: Runtime,
    version: i64,
    /// One lock per image being unpacked, so concurrent builds unpack it once.
    unpacking: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The named network namespace of an instance's container.
fn netns(uuid: &str) -> String {
    format!("ctr-{uuid}")
}

impl ContainerDriver {
    /// A driver over `config.instances_path`, fetching images from `images`. Checks that the runtime runs, and
    /// removes what a crash left behind: half-made instance directories, containers without an instance,
    /// interrupted downloads and layers.
    pub fn new(mut config: ContainerConfig, images: Option<ImageService>) -> Result<ContainerDriver, Error> {
        std::fs::create_dir_all(&config.instances_path).map_err(io_err(format!("creating {}", config.instances_path.display())))?;
        // The runtime's bundles and the overlay's options need absolute paths.
        config.instances_path =
            std::fs::canonicalize(&config.instances_path).map_err(io_err(format!("resolving {}", config.instances_path.display())))?;
        let version = Runtime::version(&config.runtime)?;
        let runtime = Runtime::new(config.runtime.clone(), config.instances_path.join("_runtime"));
        let bases = BaseCache::new(config.instances_path.join("_base"), images);
        let guests = GuestDirs::new(config.instances_path.clone(), "container.json");
        let driver = ContainerDriver { config, guests, bases, runtime, version, unpacking: Mutex::new(HashMap::new()) };
        driver.bases.remove_partial();
        driver.remove_orphans();
        Ok(driver)
    }

    fn dir(&self, uuid: &str) -> PathBuf {
        self.guests.dir(uuid)
    }

    fn layers_dir(&self) -> PathBuf {
        self.config.instances_path.join("_layers")
    }

    fn images_dir(&self) -> PathBuf {
        self.config.instances_path.join("_images")
    }

    fn load(&self, uuid: &str) -> Result<ContainerDef, Error> {
        self.guests.load(uuid)
    }

    fn save(&self, def: &ContainerDef) -> Result<(), Error> {
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

    fn defs(&self) -> Vec<ContainerDef> {
        self.guests.all()
    }

    /// Start-up clean-up (blocking): containers the runtime has without an instance directory, and instance
    /// directories without a definition, with their mounts and network namespaces.
    fn remove_orphans(&self) {
        for id in self.runtime.list_blocking() {
            if !self.guests.is_defined(&self.dir(&id)) {
                tracing::info!(container = %id, "removing a container without an instance");
                self.runtime.delete_blocking(&id);
            }
        }
        for entry in std::fs::read_dir(&self.config.instances_path).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with('_') || !path.is_dir() || self.guests.is_defined(&path) {
                continue;
            }
            tracing::info!(dir = %path.display(), "removing a half-made instance directory");
            self.runtime.delete_blocking(&name);
            let _ = rustix::mount::unmount(path.join("rootfs"), rustix::mount::UnmountFlags::DETACH);
            let _ = std::process::Command::new(&self.config.ip).args(["netns", "delete", &netns(&name)]).output();
            let _ = std::fs::remove_dir_all(&path);
        }
        for dir in [self.layers_dir(), self.images_dir()] {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".part") || name.ends_with(".unpack") || name.ends_with(".tmp") {
                    let _ = std::fs::remove_dir_all(entry.path()).or_else(|_| std::fs::remove_file(entry.path()));
                }
            }
        }
    }

    /// Refuses images the driver cannot run (by their formats).
    fn check_runnable(image: &ImageSource) -> Result<(), Error> {
        let container_format = image.properties.get("container_format").and_then(Value::as_str).unwrap_or("bare");
        if container_format != "docker" {
            return Err(Error::Hypervisor(format!(
                "image {} has container format {container_format}, which the container driver cannot run (it runs \
                 container format docker: a docker save archive or an OCI image layout)",
                image.id
            )));
        }
        Ok(())
    }

    /// The image's layers and run configuration, fetched and unpacked unless cached.
    async fn image(&self, image: &ImageSource) -> Result<ImageRecord, Error> {
        let archive = self.bases.fetch(&image.id).await?;
        let lock = self.unpacking.lock().unwrap_or_else(PoisonError::into_inner).entry(image.id.clone()).or_default().clone();
        let _guard = lock.lock().await;
        let (id, layers, images) = (image.id.clone(), self.layers_dir(), self.images_dir());
        let started = Instant::now();
        let record = tokio::task::spawn_blocking(move || layers::unpack_image(&id, &archive, &layers, &images))
            .await
            .map_err(|e| Error::Hypervisor(format!("unpacking image {}: {e}", image.id)))??;
        tracing::debug!(image = %image.id, elapsed_ms = started.elapsed().as_millis() as u64, "image layers ready");
        Ok(record)
    }

    /// Creates the instance's directory and definition.
    async fn create(&self, instance: &InstanceSpec, context: &GuestContext) -> Result<(), Error> {
        let uuid = instance.uuid.as_str();
        if !is_guest_name(uuid) {
            return Err(Error::Hypervisor(format!("invalid instance uuid {uuid:?}")));
        }
        let Some(image) = context.image.as_ref() else {
            return Err(Error::Hypervisor(format!("instance {uuid} boots from a volume, which the container driver cannot do")));
        };
        Self::check_runnable(image)?;
        let nics = context.network_interfaces.iter().map(Nic::of).collect::<Result<Vec<_>, _>>()?;
        let record = self.image(image).await?;
        let dir = self.dir(uuid);
        if dir.exists() {
            return Err(Error::AlreadyExists(uuid.to_owned()));
        }
        for sub in ["upper", "work", "rootfs"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(io_err(format!("creating {}", dir.display())))?;
        }
        crate::config_drive::write_tree(instance, &dir.join("config"))?;
        let hostname = if instance.hostname.is_empty() { format!("instance-{}", &uuid[..uuid.len().min(8)]) } else { instance.hostname.clone() };
        let def = ContainerDef {
            uuid: uuid.to_owned(),
            hostname,
            flavor: instance.flavor.clone(),
            image_id: image.id.clone(),
            image: record,
            state: PowerState::Shutdown,
            nics,
            volumes: Vec::new(),
        };
        self.save(&def)
    }

    /// Mounts the instance's root overlay unless mounted.
    fn mount_rootfs(&self, def: &ContainerDef) -> Result<(), Error> {
        let dir = self.dir(&def.uuid);
        let rootfs = dir.join("rootfs");
        if is_mount_point(&rootfs) {
            return Ok(());
        }
        // overlayfs lists lower directories top first.
        let lower: Vec<String> = def.image.layers.iter().rev().map(|l| self.layers_dir().join(l).to_string_lossy().into_owned()).collect();
        if let Some(missing) = def.image.layers.iter().find(|l| !self.layers_dir().join(l).is_dir()) {
            return Err(Error::Hypervisor(format!("layer {missing} of instance {} is gone from the host", def.uuid)));
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            dir.join("upper").display(),
            dir.join("work").display()
        );
        let options = std::ffi::CString::new(options).map_err(|_| Error::Hypervisor(format!("instance {}: a path holds a NUL byte", def.uuid)))?;
        rustix::mount::mount("overlay", &rootfs, "overlay", rustix::mount::MountFlags::empty(), Some(options.as_c_str()))
            .map_err(|e| Error::Hypervisor(format!("mounting the root filesystem of instance {}: {e}", def.uuid)))
    }

    fn unmount_rootfs(&self, uuid: &str) {
        let rootfs = self.dir(uuid).join("rootfs");
        if is_mount_point(&rootfs) {
            let _ = rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::DETACH);
        }
    }

    async fn ip(&self, args: &[&str]) -> Result<(), Error> {
        let out = tokio::process::Command::new(&self.config.ip)
            .args(args)
            .output()
            .await
            .map_err(io_err(format!("running {}", self.config.ip.display())))?;
        if !out.status.success() {
            return Err(Error::Hypervisor(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())));
        }
        Ok(())
    }

    /// `ip` arguments acting in the host namespace.
    fn host_ip_args<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a str> {
        let mut args = Vec::new();
        if let Some(ns) = &self.config.host_namespace {
            args.extend(["-n", ns.as_str()]);
        }
        args.extend_from_slice(rest);
        args
    }

    /// The container's network namespace and one veth pair per port, unless there.
    async fn plug(&self, def: &ContainerDef) -> Result<(), Error> {
        let ns = netns(&def.uuid);
        if !Path::new("/run/netns").join(&ns).exists() {
            self.ip(&["netns", "add", &ns]).await?;
            self.ip(&["-n", &ns, "link", "set", "lo", "up"]).await?;
        }
        for (i, nic) in def.nics.iter().enumerate() {
            let peer = format!("eth{i}");
            if !self.has_link(&ns, &peer).await {
                self.plug_one(&ns, nic, &peer).await?;
            }
        }
        Ok(())
    }

    async fn has_link(&self, ns: &str, name: &str) -> bool {
        tokio::process::Command::new(&self.config.ip).args(["-n", ns, "link", "show", name]).output().await.is_ok_and(|o| o.status.success())
    }

    /// One veth pair: `nic.devname` on the host side, `peer` with the port's MAC in the container's namespace `ns`.
    async fn plug_one(&self, ns: &str, nic: &Nic, peer: &str) -> Result<(), Error> {
        let mtu = nic.mtu.unwrap_or(1500).to_string();
        // A host end left from an earlier pair would block the name.
        let _ = self.ip(&self.host_ip_args(&["link", "delete", &nic.devname])).await;
        self.ip(&self.host_ip_args(&[
            "link", "add", &nic.devname, "mtu", &mtu, "type", "veth", "peer", "name", peer, "address", &nic.mac_address, "mtu", &mtu, "netns", ns,
        ]))
        .await?;
        self.ip(&self.host_ip_args(&["link", "set", &nic.devname, "up"])).await
    }

    /// Removes the network namespace (and with it the veth pairs) and any host end left.
    async fn unplug(&self, def: &ContainerDef) {
        let _ = self.ip(&["netns", "delete", &netns(&def.uuid)]).await;
        for nic in &def.nics {
            let _ = self.ip(&self.host_ip_args(&["link", "delete", &nic.devname])).await;
        }
    }

    /// The loop device of a volume's file, set up unless it is.
    async fn loop_device(&self, volume: &Volume) -> Result<PathBuf, Error> {
        if let Some(dev) = loops_of(&volume.path).await?.into_iter().next() {
            return Ok(PathBuf::from(dev));
        }
        let mut args = vec!["--find", "--show"];
        if volume.read_only {
            args.push("--read-only");
        }
        let file = volume.path.to_string_lossy();
        args.push(&file);
        Ok(PathBuf::from(losetup(&args).await?.trim()))
    }

    /// Detaches the loop devices of a volume's file.
    async fn release_loop(&self, volume: &Volume) {
        for dev in loops_of(&volume.path).await.unwrap_or_default() {
            let _ = losetup(&["-d", &dev]).await;
        }
    }

    /// The volumes' devices: (volume, major, minor), their loop devices set up.
    async fn volume_devices(&self, def: &ContainerDef) -> Result<Vec<(Volume, i64, i64)>, Error> {
        let mut out = Vec::new();
        for v in &def.volumes {
            let (major, minor) = device_numbers(&self.loop_device(v).await?)?;
            out.push((v.clone(), major, minor));
        }
        Ok(out)
    }

    /// The OCI runtime configuration of the instance.
    fn spec(&self, def: &ContainerDef, volumes: &[(Volume, i64, i64)]) -> Result<Spec, Error> {
        let dir = self.dir(&def.uuid);
        let err = |e: oci_spec::OciSpecError| Error::Hypervisor(format!("the container configuration of instance {}: {e}", def.uuid));
        let image = &def.image;
        let mut env = image.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        env.push(format!("HOSTNAME={}", def.hostname));
        let (uid, gid) = numeric_user(&image.user);
        // Docker's default capabilities, and the network administration a container's own namespace needs for
        // DHCP.
        let caps: std::collections::HashSet<Capability> = [
            Capability::Chown,
            Capability::DacOverride,
            Capability::Fsetid,
            Capability::Fowner,
            Capability::Mknod,
            Capability::NetRaw,
            Capability::NetAdmin,
            Capability::Setgid,
            Capability::Setuid,
            Capability::Setfcap,
            Capability::Setpcap,
            Capability::NetBindService,
            Capability::SysChroot,
            Capability::Kill,
            Capability::AuditWrite,
        ]
        .into_iter()
        .collect();
        let capabilities = LinuxCapabilitiesBuilder::default()
            .bounding(caps.clone())
            .effective(caps.clone())
            .permitted(caps)
            .build()
            .map_err(err)?;
        let cwd = if image.working_dir.is_empty() { "/".to_owned() } else { image.working_dir.clone() };
        let process = ProcessBuilder::default()
            .terminal(false)
            .user(UserBuilder::default().uid(uid).gid(gid).build().map_err(err)?)
            .args(image.args())
            .env(env)
            .cwd(cwd)
            .capabilities(capabilities)
            .no_new_privileges(true)
            .build()
            .map_err(err)?;
        let mut mounts = oci_spec::runtime::get_default_mounts();
        mounts.push(
            MountBuilder::default()
                .destination(CONFIG_MOUNT)
                .typ("bind")
                .source(dir.join("config"))
                .options(vec!["rbind".to_owned(), "ro".to_owned(), "nosuid".to_owned(), "nodev".to_owned()])
                .build()
                .map_err(err)?,
        );
        let memory = memory_limit(&def.flavor);
        // Volumes are block devices in the container, and only they among the host's disks are allowed.
        let mut devices = Vec::new();
        let mut allowed = Vec::new();
        for (v, major, minor) in volumes {
            devices.push(
                LinuxDeviceBuilder::default()
                    .path(&v.device_name)
                    .typ(LinuxDeviceType::B)
                    .major(*major)
                    .minor(*minor)
                    .file_mode(0o660u32)
                    .uid(0u32)
                    .gid(0u32)
                    .build()
                    .map_err(err)?,
            );
            let access = if v.read_only { "r" } else { "rw" };
            allowed.push(
                LinuxDeviceCgroupBuilder::default().allow(true).typ(LinuxDeviceType::B).major(*major).minor(*minor).access(access).build().map_err(err)?,
            );
        }
        let resources = LinuxResourcesBuilder::default()
            .devices(allowed)
            .memory(LinuxMemoryBuilder::default().limit(memory).swap(memory).build().map_err(err)?)
            .cpu(LinuxCpuBuilder::default().period(CPU_PERIOD_US).quota(cpu_quota(def.flavor.vcpus)).build().map_err(err)?)
            .pids(LinuxPidsBuilder::default().limit(self.config.pids_limit).build().map_err(err)?)
            .build()
            .map_err(err)?;
        let mut namespaces = oci_spec::runtime::get_default_namespaces();
        namespaces.retain(|n| n.typ() != LinuxNamespaceType::Network);
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(Path::new("/run/netns").join(netns(&def.uuid)))
                .build()
                .map_err(err)?,
        );
        let linux = LinuxBuilder::default()
            .devices(devices)
            .namespaces(namespaces)
            .resources(resources)
            .cgroups_path(PathBuf::from(format!("/stratus/{}", def.uuid)))
            .masked_paths(oci_spec::runtime::get_default_maskedpaths())
            .readonly_paths(oci_spec::runtime::get_default_readonly_paths())
            .build()
            .map_err(err)?;
        let mut spec = Spec::default();
        spec.set_hostname(Some(def.hostname.clone()));
        spec.set_process(Some(process));
        spec.set_root(Some(RootBuilder::default().path(dir.join("rootfs")).readonly(false).build().map_err(err)?));
        spec.set_mounts(Some(mounts));
        spec.set_linux(Some(linux));
        Ok(spec)
    }

    /// Starts the instance's container (its overlay mounted, its ports plugged, a fresh runtime configuration).
    async fn start(&self, instance: &InstanceSpec) -> Result<(), Error> {
        let mut def = self.load(&instance.uuid)?;
        def.flavor = instance.flavor.clone();
        let uuid = def.uuid.clone();
        self.runtime.delete(&uuid).await?;
        self.mount_rootfs(&def)?;
        self.plug(&def).await?;
        let dir = self.dir(&uuid);
        let volumes = self.volume_devices(&def).await?;
        self.spec(&def, &volumes)?
            .save(dir.join("config.json"))
            .map_err(|e| Error::Hypervisor(format!("writing the container configuration of instance {uuid}: {e}")))?;
        def.state = PowerState::Running;
        self.save(&def)?;
        self.runtime.create(&uuid, &dir, &dir.join("console.log")).await?;
        self.runtime.start(&uuid).await
    }

    /// SIGTERM, up to `timeout` for the container to end, then SIGKILL; the container is removed from the runtime
    /// (its cgroups go with it).
    async fn stop(&self, uuid: &str, timeout: Duration) -> Result<(), Error> {
        let Some(state) = self.runtime.state(uuid).await? else { return Ok(()) };
        if matches!(state.status.as_str(), "running" | "paused") && !timeout.is_zero() {
            let _ = self.runtime.kill(uuid, "TERM").await;
            if state.status == "paused" {
                let _ = self.runtime.resume(uuid).await;
            }
            let deadline = Instant::now() + timeout;
            loop {
                match self.runtime.state(uuid).await? {
                    Some(s) if s.status != "stopped" => {}
                    _ => {
                        tracing::info!(instance = %uuid, "container stopped cleanly");
                        break;
                    }
                }
                if Instant::now() >= deadline {
                    tracing::info!(instance = %uuid, timeout_s = timeout.as_secs(), "container did not stop in time; killing it");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.runtime.delete(uuid).await
    }

    /// Freezes the container (unless frozen) and records `state` (`Paused` or `Suspended`).
    async fn freeze(&self, uuid: &str, state: PowerState) -> Result<(), Error> {
        self.load(uuid)?;
        if self.runtime.state(uuid).await?.is_none_or(|s| s.status != "paused") {
            self.runtime.pause(uuid).await?;
        }
        self.set_state(uuid, state)
    }

    /// Removes cached images no instance uses (once unused for the minimum age) and the layers no cached image
    /// or instance needs; returns the removed image ids.
    pub fn remove_unused_images(&self) -> Vec<String> {
        if !self.config.remove_unused_base_images {
            return Vec::new();
        }
        let defs = self.defs();
        let used: BTreeSet<String> = defs.iter().map(|d| d.image_id.clone()).collect();
        let removed = self.bases.remove_unused(&used, self.config.remove_unused_minimum_age);
        for id in &removed {
            let _ = std::fs::remove_file(self.images_dir().join(format!("{id}.json")));
        }
        let mut needed: BTreeSet<String> = defs.iter().flat_map(|d| d.image.layers.clone()).collect();
        for entry in std::fs::read_dir(self.images_dir()).into_iter().flatten().flatten() {
            if let Ok(text) = std::fs::read(entry.path())
                && let Ok(record) = serde_json::from_slice::<ImageRecord>(&text)
            {
                needed.extend(record.layers);
            }
        }
        let busy = self.unpacking.lock().unwrap_or_else(PoisonError::into_inner).values().any(|l| l.try_lock().is_err());
        if !busy {
            for entry in std::fs::read_dir(self.layers_dir()).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.ends_with(".part") && !needed.contains(&name) {
                    tracing::info!(layer = %name, "removing an unused image layer");
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        removed
    }

    /// The pid of the instance's first process, when its container runs.
    pub async fn container_pid(&self, uuid: &str) -> Option<i32> {
        self.runtime.state(uuid).await.ok().flatten().filter(runtime::State::alive).map(|s| s.pid)
    }
}

/// Writes a rule for block device `major:minor` to the container's v1 devices cgroup (`devices.allow` or
/// `devices.deny`). cgroup v2 has no such files (its device rules are eBPF programs the runtime installs at start):
/// there a volume reaches a running container at its next start.
fn cgroup_devices(uuid: &str, file: &str, major: i64, minor: i64, access: &str) -> Result<(), Error> {
    let dir = PathBuf::from(format!("/sys/fs/cgroup/devices/stratus/{uuid}"));
    if !dir.is_dir() {
        return Err(Error::Hypervisor(format!(
            "instance {uuid} runs without a v1 devices cgroup: its volume appears when it is started again"
        )));
    }
    std::fs::write(dir.join(file), format!("b {major}:{minor} {access}")).map_err(io_err(format!("writing {}/{file}", dir.display())))
}

/// The memory (and memory + swap) limit in bytes of a container of `flavor` (at least 4 MiB).
fn memory_limit(flavor: &FlavorSpec) -> i64 {
    flavor.memory_mb.max(4) * 1024 * 1024
}

/// The CPU quota per period for `vcpus` CPUs (at least one).
fn cpu_quota(vcpus: i64) -> i64 {
    vcpus.max(1) * CPU_PERIOD_US as i64
}

/// The image's `User` when numeric (`uid` or `uid:gid`); root otherwise (names would need the image's
/// `/etc/passwd`).
fn numeric_user(user: &str) -> (u32, u32) {
    let mut parts = user.splitn(2, ':');
    let uid = parts.next().and_then(|u| u.parse().ok()).unwrap_or(0);
    let gid = parts.next().and_then(|g| g.parse().ok()).unwrap_or(0);
    (uid, gid)
}

/// `path` is a mount point of this process's mount namespace (`/proc/self/mountinfo` lists it).
fn is_mount_point(path: &Path) -> bool {
    let target = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| t.lines().any(|l| l.split_whitespace().nth(4) == Some(target.as_ref())))
        .unwrap_or(false)
}

#[async_trait]
impl Hypervisor for ContainerDriver {
    fn name(&self) -> &'static str {
        "container"
    }

    async fn supported_instances(&self) -> Vec<[String; 3]> {
        // Upstream's hypervisor type and VM mode of containers run from Docker images.
        vec![[std::env::consts::ARCH.to_string(), "docker".into(), "exe".into()]]
    }

    async fn host_info(&self) -> Result<HypervisorInfo, Error> {
        let c = &self.config;
        let host = LocalHost {
            hypervisor_type: "docker",
            version: self.version,
            model: "host",
            vendor: "Linux",
            capacity: [c.vcpus, c.memory_mb, c.local_gb],
            instances_path: &c.instances_path,
        };
        Ok(host.info(self.defs().iter().map(|d| &d.flavor)))
    }

    async fn list_guests(&self) -> Result<Vec<GuestInfo>, Error> {
        Ok(with_power_states(self, self.defs().into_iter().map(|d| d.uuid)).await)
    }

    async fn spawn(&self, instance: &InstanceSpec, context: &GuestContext) -> Result<(), Error> {
        let started = Instant::now();
        self.create(instance, context).await?;
        self.start(instance).await?;
        tracing::info!(instance = %instance.uuid, elapsed_ms = started.elapsed().as_millis() as u64, "container spawned");
        Ok(())
    }

    async fn destroy(&self, uuid: &str) -> Result<(), Error> {
        if !is_guest_name(uuid) {
            return Ok(());
        }
        let dir = self.dir(uuid);
        if !dir.exists() {
            return Ok(());
        }
        self.stop(uuid, Duration::ZERO).await?;
        match self.load(uuid) {
            Ok(def) => {
                self.unplug(&def).await;
                for v in &def.volumes {
                    self.release_loop(v).await;
                }
            }
            Err(_) => {
                let _ = self.ip(&["netns", "delete", &netns(uuid)]).await;
            }
        }
        self.unmount_rootfs(uuid);
        if is_mount_point(&dir.join("rootfs")) {
            return Err(Error::Hypervisor(format!("the root filesystem of instance {uuid} stays mounted")));
        }
        std::fs::remove_dir_all(&dir).map_err(io_err(format!("removing {}", dir.display())))?;
        self.remove_unused_images();
        Ok(())
    }

    async fn power_off(&self, uuid: &str) -> Result<(), Error> {
        self.load(uuid)?;
        self.stop(uuid, self.config.stop_timeout).await?;
        self.unmount_rootfs(uuid);
        self.set_state(uuid, PowerState::Shutdown)
    }

    async fn power_on(&self, instance: &InstanceSpec, _context: &GuestContext) -> Result<(), Error> {
        if self.power_state(&instance.uuid).await? == PowerState::Running {
            return Ok(());
        }
        self.start(instance).await
    }

    async fn reboot(&self, instance: &InstanceSpec, _context: &GuestContext, hard: bool) -> Result<(), Error> {
        let timeout = if hard { Duration::ZERO } else { self.config.stop_timeout };
        self.load(&instance.uuid)?;
        self.stop(&instance.uuid, timeout).await?;
        self.start(instance).await
    }

    async fn pause(&self, uuid: &str) -> Result<(), Error> {
        self.freeze(uuid, PowerState::Paused).await
    }

    async fn unpause(&self, uuid: &str) -> Result<(), Error> {
        self.load(uuid)?;
        if self.runtime.state(uuid).await?.is_some_and(|s| s.status == "paused") {
            self.runtime.resume(uuid).await?;
        }
        self.set_state(uuid, PowerState::Running)
    }

    async fn suspend(&self, uuid: &str) -> Result<(), Error> {
        // A container's memory cannot be saved to disk without checkpointing (CRIU); it stays frozen in place.
        self.freeze(uuid, PowerState::Suspended).await
    }

    async fn resume(&self, instance: &InstanceSpec, _context: &GuestContext) -> Result<(), Error> {
        let uuid = instance.uuid.as_str();
        self.load(uuid)?;
        match self.runtime.state(uuid).await? {
            Some(s) if s.status == "paused" => self.runtime.resume(uuid).await?,
            Some(s) if s.status == "running" => {}
            // The host restarted while it was suspended: it starts afresh.
            _ => return self.start(instance).await,
        }
        self.set_state(uuid, PowerState::Running)
    }

    async fn resize(&self, instance: &InstanceSpec, flavor: &FlavorSpec, _context: &GuestContext) -> Result<(), Error> {
        let uuid = instance.uuid.as_str();
        let mut def = self.load(uuid)?;
        if self.runtime.state(uuid).await?.is_some_and(|s| s.alive()) {
            self.runtime.update(uuid, memory_limit(flavor), cpu_quota(flavor.vcpus), self.config.pids_limit).await?;
        }
        def.flavor = flavor.clone();
        self.save(&def)
    }

    async fn snapshot(&self, instance: &InstanceSpec, dest: &Path) -> Result<crate::hypervisor::SnapshotFormat, Error> {
        let uuid = instance.uuid.as_str();
        let def = self.load(uuid)?;
        let dir = self.dir(uuid);
        let work = dest.with_extension("layers");
        std::fs::create_dir_all(&work).map_err(io_err(format!("creating {}", work.display())))?;
        // The upper directory is read while the container is frozen (as `docker commit` pauses it).
        let frozen = self.runtime.state(uuid).await?.is_some_and(|s| s.status == "running");
        if frozen {
            self.runtime.pause(uuid).await?;
        }
        let sources: Vec<PathBuf> = def.image.layers.iter().map(|l| self.layers_dir().join(l)).chain([dir.join("upper")]).collect();
        let (work2, dest2, record) = (work.clone(), dest.to_owned(), def.image.clone());
        let tag = format!("{}:snapshot", def.hostname);
        let written = tokio::task::spawn_blocking(move || -> Result<(), Error> {
            let mut layers = Vec::new();
            for (i, source) in sources.iter().enumerate() {
                let tar = work2.join(format!("{i}.tar"));
                let id = layers::write_layer(source, &tar)?;
                layers.push((tar, id));
            }
            layers::write_archive(&dest2, &layers, &record, &tag)
        })
        .await
        .map_err(|e| Error::Hypervisor(format!("snapshot of instance {uuid}: {e}")));
        if frozen {
            self.runtime.resume(uuid).await?;
        }
        let _ = std::fs::remove_dir_all(&work);
        written??;
        Ok(crate::hypervisor::SnapshotFormat { disk_format: "raw".into(), container_format: "docker".into() })
    }

    async fn diagnostics(&self, instance: &InstanceSpec) -> Result<BTreeMap<String, Value>, Error> {
        let def = self.load(&instance.uuid)?;
        let mut out = BTreeMap::new();
        out.insert("memory".to_owned(), json!(def.flavor.memory_mb * 1024));
        if self.runtime.state(&instance.uuid).await?.is_some_and(|s| s.alive()) {
            let stats = self.runtime.stats(&instance.uuid).await?;
            out.insert("cpu0_time".to_owned(), stats["cpu"]["usage"]["total"].clone());
            out.insert("memory-actual".to_owned(), json!(stats["memory"]["usage"]["usage"].as_u64().unwrap_or(0) / 1024));
            out.insert("pids".to_owned(), stats["pids"]["current"].clone());
        }
        Ok(out)
    }

    async fn attach_volume(&self, instance: &InstanceSpec, device: &BlockDeviceSpec) -> Result<(), Error> {
        let uuid = instance.uuid.as_str();
        let mut def = self.load(uuid)?;
        let volume = Volume::of(device)?;
        if def.volumes.iter().any(|v| v.volume_id == volume.volume_id) {
            return Ok(());
        }
        if def.volumes.iter().any(|v| v.device_name == volume.device_name) {
            return Err(Error::Hypervisor(format!("instance {uuid} already has a device {}", volume.device_name)));
        }
        let (major, minor) = device_numbers(&self.loop_device(&volume).await?)?;
        // A running container gets the device at once: its devices cgroup allows it and the node appears in its
        // /dev (reached through its first process's root).
        if let Some(pid) = self.container_pid(uuid).await {
            let access = if volume.read_only { "r" } else { "rw" };
            let node = PathBuf::from(format!("/proc/{pid}/root{}", volume.device_name));
            let added = cgroup_devices(uuid, "devices.allow", major, minor, access).and_then(|()| {
                let _ = std::fs::remove_file(&node);
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &node,
                    rustix::fs::FileType::BlockDevice,
                    rustix::fs::Mode::from_raw_mode(0o660),
                    rustix::fs::makedev(major as u32, minor as u32),
                )
                .map_err(|e| Error::Hypervisor(format!("making {} in instance {uuid}: {e}", volume.device_name)))
            });
            if let Err(e) = added {
                self.release_loop(&volume).await;
                return Err(e);
            }
        }
        def.volumes.push(volume);
        self.save(&def)
    }

    async fn attach_interface(&self, uuid: &str, interface: &NetworkInterface) -> Result<(), Error> {
        let mut def = self.load(uuid)?;
        let nic = Nic::of(interface)?;
        if def.nics.iter().any(|n| n.port_id == nic.port_id || n.devname == nic.devname) {
            return Err(Error::Hypervisor(format!("port {} ({}) is already attached to instance {uuid}", nic.port_id, nic.devname)));
        }
        // A running container gets the pair now, as the first free ethN (a stopped one gets eth0… in order when it
        // starts); the network agent plugs the host end.
        let ns = netns(uuid);
        if self.container_pid(uuid).await.is_some() && Path::new("/run/netns").join(&ns).exists() {
            let mut n = 0;
            while self.has_link(&ns, &format!("eth{n}")).await {
                n += 1;
            }
            self.plug_one(&ns, &nic, &format!("eth{n}")).await?;
            tracing::info!(instance = %uuid, port = %nic.port_id, device = %format!("eth{n}"), "interface hot-added");
        }
        def.nics.push(nic);
        self.save(&def)
    }

    async fn detach_interface(&self, uuid: &str, port_id: &str) -> Result<(), Error> {
        let mut def = self.load(uuid)?;
        let Some(at) = def.nics.iter().position(|n| n.port_id == port_id) else { return Ok(()) };
        let nic = def.nics.remove(at);
        // Deleting the host end takes the container's end with it.
        let _ = self.ip(&self.host_ip_args(&["link", "delete", &nic.devname])).await;
        self.save(&def)
    }

    async fn detach_volume(&self, uuid: &str, volume_id: &str) -> Result<(), Error> {
        let mut def = self.load(uuid)?;
        let Some(at) = def.volumes.iter().position(|v| v.volume_id == volume_id) else { return Ok(()) };
        let volume = def.volumes.remove(at);
        if let Some(pid) = self.container_pid(uuid).await {
            let _ = std::fs::remove_file(format!("/proc/{pid}/root{}", volume.device_name));
            if let Ok(dev) = self.loop_device(&volume).await
                && let Ok((major, minor)) = device_numbers(&dev)
            {
                let _ = cgroup_devices(uuid, "devices.deny", major, minor, "rwm");
            }
        }
        self.save(&def)?;
        self.release_loop(&volume).await;
        Ok(())
    }

    async fn power_state(&self, uuid: &str) -> Result<PowerState, Error> {
        let def = self.load(uuid)?;
        Ok(match self.runtime.state(uuid).await?.map(|s| s.status) {
            Some(s) if s == "running" => PowerState::Running,
            Some(s) if s == "paused" => {
                if def.state == PowerState::Suspended {
                    PowerState::Suspended
                } else {
                    PowerState::Paused
                }
            }
            _ => PowerState::Shutdown,
        })
    }

    async fn console_output(&self, uuid: &str) -> Result<String, Error> {
        self.guests.console::<ContainerDef>(uuid).await
    }

    async fn expected_power_state(&self, uuid: &str) -> Option<PowerState> {
        self.load(uuid).ok().map(|d| d.state)
    }

    async fn maintain(&self) {
        self.remove_unused_images();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_quotas() {
        assert_eq!(numeric_user(""), (0, 0));
        assert_eq!(numeric_user("1000"), (1000, 0));
        assert_eq!(numeric_user("1000:100"), (1000, 100));
        assert_eq!(numeric_user("nobody"), (0, 0));
        assert_eq!(cpu_quota(2), 200_000);
        assert_eq!(cpu_quota(0), 100_000);
    }

    #[test]
    fn the_runtime_configuration_limits_and_isolates_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let config = ContainerConfig { runtime: "/bin/true".into(), ..ContainerConfig::new(dir.path()) };
        let driver = ContainerDriver {
            guests: GuestDirs::new(dir.path().to_path_buf(), "container.json"),
            runtime: Runtime::new(config.runtime.clone(), dir.path().join("_runtime")),
            bases: BaseCache::new(dir.path().join("_base"), None),
            version: 1,
            unpacking: Mutex::new(HashMap::new()),
            config,
        };
        let mut flavor = crate::qemu::tests::instance("u1").flavor;
        flavor.vcpus = 2;
        flavor.memory_mb = 64;
        let def = ContainerDef {
            uuid: "u1".into(),
            hostname: "web-1".into(),
            flavor,
            image_id: "i".into(),
            image: ImageRecord { layers: vec!["l".into()], entrypoint: vec!["/init".into()], cmd: vec!["a".into()], env: vec!["X=1".into()], working_dir: "/srv".into(), user: "7".into() },
            state: PowerState::Shutdown,
            nics: Vec::new(),
            volumes: vec![Volume { volume_id: "v1".into(), device_name: "/dev/vdb".into(), path: "/v".into(), read_only: false }],
        };
        let volumes = vec![(def.volumes[0].clone(), 7, 3)];
        let spec = serde_json::to_value(driver.spec(&def, &volumes).unwrap()).unwrap();
        assert!(spec["linux"]["devices"].as_array().unwrap().contains(&json!({"path": "/dev/vdb", "type": "b", "major": 7, "minor": 3, "fileMode": 0o660, "uid": 0, "gid": 0})));
        assert!(spec["linux"]["resources"]["devices"].as_array().unwrap().contains(&json!({"allow": true, "type": "b", "major": 7, "minor": 3, "access": "rw"})));
        assert_eq!(spec["hostname"], "web-1");
        assert_eq!(spec["process"]["args"], json!(["/init", "a"]));
        assert_eq!(spec["process"]["cwd"], "/srv");
        assert_eq!(spec["process"]["user"]["uid"], 7);
        let env = spec["process"]["env"].as_array().unwrap();
        assert!(env.contains(&json!("X=1")) && env.iter().any(|e| e.as_str().unwrap().starts_with("PATH=")));
        assert!(spec["process"]["capabilities"]["bounding"].as_array().unwrap().contains(&json!("CAP_NET_ADMIN")));
        assert!(!spec["process"]["capabilities"]["bounding"].as_array().unwrap().contains(&json!("CAP_SYS_ADMIN")));
        let r = &spec["linux"]["resources"];
        assert_eq!(r["memory"]["limit"], 64 * 1024 * 1024);
        assert_eq!((r["cpu"]["quota"].clone(), r["cpu"]["period"].clone()), (json!(200_000), json!(100_000)));
        assert_eq!(r["pids"]["limit"], 1024);
        let ns = spec["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.contains(&json!({"type": "network", "path": "/run/netns/ctr-u1"})));
        for t in ["pid", "mount", "ipc", "uts"] {
            assert!(ns.iter().any(|n| n["type"] == t), "{t}");
        }
        let mounts = spec["mounts"].as_array().unwrap();
        let config = mounts.iter().find(|m| m["destination"] == CONFIG_MOUNT).unwrap();
        assert!(config["options"].as_array().unwrap().contains(&json!("ro")));
        assert_eq!(spec["root"]["path"], dir.path().join("u1/rootfs").to_string_lossy().as_ref());
    }
}
