//! Configuration: one TOML file, every key overridable by an environment variable `STRATUS_<SECTION>__<KEY>`
//! (e.g. `STRATUS_DATABASE__URL`, `STRATUS_SERVER__LISTEN`, `STRATUS_DATA_DIR`). Defaults make `stratus up` work
//! with no file at all. `etc/stratus.toml.example` documents every key.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

use crate::Error;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where embedded state lives: the SQLite database, Fernet keys, generated clouds.yaml/openrc.
    pub data_dir: PathBuf,
    /// The region every endpoint is registered in.
    pub region: String,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub bus: BusConfig,
    pub log: LogConfig,
    pub identity: IdentitySection,
    pub image: ImageSection,
    pub object: ObjectSection,
    pub placement: PlacementSection,
    pub compute: ComputeSection,
    /// The network service (Neutron): provider network types and ranges, the bootstrap external network.
    pub network: network::NetworkConfig,
    /// This host's compute agent (`stratus compute-agent`).
    pub compute_agent: ComputeAgentSection,
    /// The block-storage service (Cinder).
    pub volume: VolumeSection,
    /// This host's volume agent (`stratus volume-agent`).
    pub volume_agent: VolumeAgentSection,
    pub network_agent: NetworkAgentSection,
    /// Credentials services use to validate tokens over HTTP when identity runs in another process.
    pub auth: Option<ServiceAuth>,
    pub bootstrap: BootstrapSection,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The base URL clients reach this listener at; defaults to `http://<listen>`.
    pub public_url: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH`, `postgres://…` or `mysql://…`; defaults to SQLite under the data dir.
    pub url: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// `memory://` (one process) or `amqp://user:pass@host:5672/%2f`.
    pub url: String,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `info,identity=debug`.
    pub level: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentitySection {
    /// Fernet key repository; defaults to `<data_dir>/fernet-keys`.
    pub key_repository: Option<PathBuf>,
    /// Token lifetime in seconds.
    pub token_expiration: i64,
    /// Keys kept by rotation (staged + primary + secondaries).
    pub max_active_keys: usize,
    /// bcrypt cost for password hashes.
    pub password_hash_rounds: u32,
    /// Policy overrides (upstream's `policy.yaml` format); defaults are secure RBAC.
    pub policy_file: Option<PathBuf>,
    /// Consecutive failed password authentications that lock an account (0: no lockout).
    pub lockout_failure_attempts: u32,
    /// Seconds a locked account stays locked (0: until an administrator resets the password).
    pub lockout_duration: u32,
    /// A self-service password change must differ from this many most recent passwords (0: no history).
    pub unique_last_password_count: u32,
    /// Days a password must be in use before its owner may change it (0: any time).
    pub minimum_password_age: u32,
    /// Days after which passwords expire (unset: never).
    pub password_expires_days: Option<u32>,
    /// Passwords must match this regular expression (at their start, as upstream's `re.match`).
    pub password_regex: Option<String>,
    /// What clients are told when a password does not match `password_regex`.
    pub password_regex_description: Option<String>,
    /// Passwords set by an administrator must be changed by their owner before first use.
    pub change_password_upon_first_use: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageSection {
    /// Directory of the `file` image store; defaults to `<data_dir>/images`.
    pub images_dir: Option<PathBuf>,
    /// Most images one project may own; -1: unlimited (upstream's `image_count_total`).
    pub image_count_total: i64,
    /// Most image data one project may store, in MiB; -1: unlimited (upstream's `image_size_total`).
    pub image_size_total: i64,
    /// Largest single image, in bytes (upstream's `image_size_cap`).
    pub image_size_cap: u64,
    /// Import methods offered: `glance-direct` and/or `web-download` (upstream's `enabled_import_methods`).
    pub enabled_import_methods: Vec<String>,
    /// Policy overrides (upstream's `policy.yaml` format); defaults are secure RBAC.
    pub policy_file: Option<PathBuf>,
    /// Keep an image cache on this API node (the cache API and `stratus image cache`).
    pub cache: bool,
    /// Directory of the image cache; defaults to `<data_dir>/image-cache`.
    pub cache_dir: Option<PathBuf>,
    /// Bytes the cache may hold; the pruner evicts least recently used images beyond it
    /// (upstream's `image_cache_max_size`).
    pub cache_max_size: u64,
    /// Seconds between prune/clean passes and checks for images queued by another process.
    pub cache_prune_interval: u64,
    /// Seconds after which an unfinished cache file counts as abandoned (upstream's `image_cache_stall_time`).
    pub cache_stall_time: u64,
    /// The stores image data may go to (upstream's `enabled_backends`): `file` and/or `object`.
    pub enabled_backends: Vec<String>,
    /// The store uploads and imports use unless they name one (upstream's `default_backend`).
    pub default_backend: String,
    /// The `object` store's endpoint (without `/v1/AUTH_…`); defaults to this cloud's `/object-store`.
    pub object_url: Option<String>,
    /// The container of the `object` store (upstream's `swift_store_container`).
    pub object_container: String,
    /// Images of at least this many bytes, or of unknown size, are stored as segments plus a manifest
    /// (upstream's `swift_store_large_object_size`).
    pub object_large_object_size: u64,
    /// The size of those segments, in bytes (upstream's `swift_store_large_object_chunk_size`).
    pub object_chunk_size: u64,
}

/// The object store (Swift) on this node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectSection {
    /// Directory holding the device directories; defaults to `<data_dir>/object`.
    pub devices_dir: Option<PathBuf>,
    /// Directory holding the ring files (`object.ring.json`, `object-N.ring.json`); defaults to `<data_dir>/rings`.
    pub ring_dir: Option<PathBuf>,
    /// Storage policies (`[[object.policies]]`: index, name, aliases, default, deprecated); each has its own ring.
    /// Default: Swift's `Policy-0` alone.
    pub policies: Vec<object::policy::StoragePolicy>,
    /// The ring written on first start, when there is no ring file yet: device directory names, one ring device
    /// each (own zone) …
    pub devices: Vec<String>,
    /// … the partition power (2^n partitions) …
    pub part_power: u8,
    /// … and the copies of each object, on distinct devices (at most the number of devices). Later changes go
    /// through `stratus object ring`.
    pub replicas: usize,
    /// Seconds between checks of the ring file; a changed ring is loaded and data it placed elsewhere is moved
    /// (Swift's `reload_time` and object replicator).
    pub ring_check_interval: u64,
    /// Seconds between the expirer's passes, which remove objects whose `X-Delete-At` has come (Swift's
    /// object-expirer `interval`).
    pub expirer_interval: u64,
}

impl Default for ObjectSection {
    fn default() -> Self {
        ObjectSection {
            devices_dir: None,
            ring_dir: None,
            policies: Vec::new(),
            devices: vec!["d1".into()],
            part_power: 10,
            replicas: 1,
            ring_check_interval: 15,
            expirer_interval: 300,
        }
    }
}

/// The compute service's settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComputeSection {
    /// Policy overrides (upstream's `policy.yaml` format); defaults are Nova's secure-RBAC rules.
    pub policy_file: Option<PathBuf>,
    /// The placement endpoint the conductor uses; defaults to this listener's `/placement`.
    pub placement_url: Option<String>,
    /// The image endpoint the compute API uses; defaults to this listener's `/image`.
    pub image_url: Option<String>,
    /// The network endpoint compute makes ports in; defaults to this listener's `/networking` when the network
    /// service runs in this process (without either, servers boot with no network).
    pub network_url: Option<String>,
    /// The block storage endpoint compute attaches volumes from; defaults to this listener's `/volume` when the
    /// volume service runs in this process (without either, servers have no volumes).
    pub volume_url: Option<String>,
    /// Where the metadata service for instances listens (upstream's `metadata_listen`, port 8775); unset: not
    /// served. The data plane's metadata proxy forwards guests' requests to 169.254.169.254 here.
    pub metadata_listen: Option<std::net::SocketAddr>,
    /// The secret the metadata proxy signs instance ids with (`X-Instance-ID-Signature`, HMAC-SHA256); required
    /// with `metadata_listen`.
    pub metadata_proxy_shared_secret: String,
    /// Seconds without a heartbeat after which a compute service is down (upstream's `service_down_time`).
    pub service_down_time: u64,
    /// Hosts tried per build, the first included (upstream's `[scheduler] max_attempts`).
    pub max_attempts: usize,
    /// Pick randomly among this many best hosts (upstream's `[filter_scheduler] host_subset_size`).
    pub host_subset_size: usize,
    /// Allocation candidates asked of placement per decision (upstream's `max_placement_results`).
    pub max_placement_results: usize,
    /// The zone of hosts in no zone (upstream's `default_availability_zone`).
    pub default_availability_zone: String,
    /// Seconds a shelved server keeps its host before it is offloaded (upstream's `shelved_offload_time`): 0
    /// offloads at once, -1 never.
    pub shelved_offload_time: i64,
    /// The scheduler's filters, in order (upstream's `[filter_scheduler] enabled_filters`; its default restricted
    /// to the filters that exist here).
    pub enabled_filters: Vec<String>,
    /// The weighers' multipliers (upstream's `[filter_scheduler]` options of the same names): positive spreads,
    /// negative stacks, 0 turns a weigher off.
    pub ram_weight_multiplier: f64,
    pub cpu_weight_multiplier: f64,
    pub disk_weight_multiplier: f64,
    pub soft_affinity_weight_multiplier: f64,
    pub soft_anti_affinity_weight_multiplier: f64,
    pub build_failure_weight_multiplier: f64,
    /// The architecture `ImagePropertiesFilter` assumes for images without `hw_architecture`.
    pub image_properties_default_architecture: Option<String>,
}

impl ComputeSection {
    /// The scheduler's part of the section.
    pub fn scheduler(&self) -> scheduler::SchedulerConfig {
        scheduler::SchedulerConfig {
            enabled_filters: self.enabled_filters.clone(),
            ram_weight_multiplier: self.ram_weight_multiplier,
            cpu_weight_multiplier: self.cpu_weight_multiplier,
            disk_weight_multiplier: self.disk_weight_multiplier,
            soft_affinity_weight_multiplier: self.soft_affinity_weight_multiplier,
            soft_anti_affinity_weight_multiplier: self.soft_anti_affinity_weight_multiplier,
            build_failure_weight_multiplier: self.build_failure_weight_multiplier,
            image_properties_default_architecture: self.image_properties_default_architecture.clone(),
            host_subset_size: self.host_subset_size.max(1),
        }
    }
}

impl Default for ComputeSection {
    fn default() -> Self {
        ComputeSection {
            policy_file: None,
            placement_url: None,
            image_url: None,
            network_url: None,
            volume_url: None,
            metadata_listen: None,
            metadata_proxy_shared_secret: String::new(),
            service_down_time: 60,
            max_attempts: 3,
            host_subset_size: 1,
            max_placement_results: 1000,
            default_availability_zone: "nova".into(),
            shelved_offload_time: 0,
            enabled_filters: scheduler::DEFAULT_FILTERS.iter().map(|f| f.to_string()).collect(),
            ram_weight_multiplier: 1.0,
            cpu_weight_multiplier: 1.0,
            disk_weight_multiplier: 1.0,
            soft_affinity_weight_multiplier: 1.0,
            soft_anti_affinity_weight_multiplier: 1.0,
            build_failure_weight_multiplier: 1_000_000.0,
            image_properties_default_architecture: None,
        }
    }
}

/// The compute agent of this host: upstream's `nova-compute` settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComputeAgentSection {
    /// The host name the agent registers and serves as; defaults to this machine's host name.
    pub host: Option<String>,
    /// The address shown as the hypervisor's `host_ip` (upstream's `my_ip`); defaults to the address of the
    /// default route.
    pub my_ip: Option<String>,
    /// The hypervisor driver: `fake` (guests in memory), `qemu` (QEMU processes, `[compute_agent.qemu]`) or
    /// `container` (Linux containers from Docker images, `[compute_agent.container]`), or `qemu+container` (both
    /// on one node: builds from `container_format=docker` images become containers, the others VMs).
    pub driver: String,
    /// Seconds between heartbeats (upstream's `report_interval`).
    pub report_interval: u64,
    /// Seconds between resource reports.
    pub resource_audit_interval: u64,
    /// Overcommit ratios of the node's inventory. Upstream leaves them unset and then applies
    /// `initial_*_allocation_ratio`: 16.0, 1.5 and 1.0.
    pub cpu_allocation_ratio: f64,
    pub ram_allocation_ratio: f64,
    pub disk_allocation_ratio: f64,
    /// Kept back for the host itself (upstream's defaults: 0 CPUs, 512 MB of memory, 0 MB of disk).
    pub reserved_host_cpus: i64,
    pub reserved_host_memory_mb: i64,
    pub reserved_host_disk_mb: i64,
    /// The capacity the `fake` driver reports.
    pub fake: FakeDriverSection,
    /// Seconds between syncs of guests' power states to the database (upstream's `sync_power_state_interval`).
    pub sync_power_state_interval: u64,
    /// Seconds a build waits for the network service to report its ports plugged (`network-vif-plugged`) before
    /// the instance goes ACTIVE (upstream's `vif_plugging_timeout`); 0: no wait. Only ports bound on a host with
    /// a network agent are waited for.
    pub vif_plugging_timeout: u64,
    /// A build whose ports were not plugged in time fails (upstream's `vif_plugging_is_fatal`).
    pub vif_plugging_is_fatal: bool,
    /// The `qemu` driver's settings.
    pub qemu: QemuDriverSection,
    /// The `container` driver's settings.
    pub container: ContainerDriverSection,
}

/// The `container` driver's settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerDriverSection {
    /// Containers' directories, the image cache (`_base`) and the unpacked layers; defaults to
    /// `<data_dir>/containers`.
    pub instances_path: Option<PathBuf>,
    /// The OCI runtime, with runc's command line.
    pub runtime: String,
    /// Seconds a container has to stop after SIGTERM before it is killed.
    pub stop_timeout: u64,
    /// The most processes a container may have.
    pub pids_limit: i64,
    pub remove_unused_base_images: bool,
    /// Seconds a cached image must have been unused before it is removed.
    pub remove_unused_original_minimum_age_seconds: u64,
    /// The image endpoint images are fetched from; defaults as `[compute_agent.qemu] image_url`.
    pub image_url: Option<String>,
    /// The named network namespace the host ends of the containers' veth pairs go to; defaults to
    /// `[network_agent] host_namespace`.
    pub host_namespace: Option<String>,
}

impl Default for ContainerDriverSection {
    fn default() -> Self {
        ContainerDriverSection {
            instances_path: None,
            runtime: "runc".into(),
            stop_timeout: 10,
            pids_limit: 1024,
            remove_unused_base_images: true,
            remove_unused_original_minimum_age_seconds: 86_400,
            image_url: None,
            host_namespace: None,
        }
    }
}

/// The `qemu` driver's settings (upstream's `[libvirt]` and `[compute]` options of the same names).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QemuDriverSection {
    /// Instances' disks, consoles and sockets, and the `_base` image cache; defaults to `<data_dir>/instances`.
    pub instances_path: Option<PathBuf>,
    /// `auto` (KVM when it works, else TCG), `kvm` or `qemu` (TCG).
    pub virt_type: String,
    pub qemu_binary: String,
    pub qemu_img: String,
    /// Seconds a clean shutdown may take before the guest is stopped hard.
    pub shutdown_timeout: u64,
    /// Attach a config drive to every instance.
    pub force_config_drive: bool,
    pub remove_unused_base_images: bool,
    /// Seconds a base image must have been unused before it is removed.
    pub remove_unused_original_minimum_age_seconds: u64,
    /// The image endpoint images are fetched from; defaults to `[compute] image_url`, then this listener's
    /// `/image`. The driver authenticates as the `[auth]` service user (the bootstrap admin when identity runs
    /// in the same process).
    pub image_url: Option<String>,
    /// The named network namespace QEMU runs in, where the guests' tap devices appear; defaults to
    /// `[network_agent] host_namespace` (the network agent plugs the taps into its bridges there).
    pub host_namespace: Option<String>,
}

impl Default for QemuDriverSection {
    fn default() -> Self {
        QemuDriverSection {
            instances_path: None,
            virt_type: "auto".into(),
            qemu_binary: "qemu-system-x86_64".into(),
            qemu_img: "qemu-img".into(),
            shutdown_timeout: 60,
            force_config_drive: false,
            remove_unused_base_images: true,
            remove_unused_original_minimum_age_seconds: 86_400,
            image_url: None,
            host_namespace: None,
        }
    }
}

/// The `fake` driver's capacity.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FakeDriverSection {
    pub vcpus: i64,
    pub memory_mb: i64,
    pub local_gb: i64,
}

impl Default for ComputeAgentSection {
    fn default() -> Self {
        ComputeAgentSection {
            host: None,
            my_ip: None,
            driver: "fake".into(),
            report_interval: 10,
            resource_audit_interval: 60,
            cpu_allocation_ratio: 16.0,
            ram_allocation_ratio: 1.5,
            disk_allocation_ratio: 1.0,
            reserved_host_cpus: 0,
            reserved_host_memory_mb: 512,
            reserved_host_disk_mb: 0,
            fake: FakeDriverSection::default(),
            sync_power_state_interval: 600,
            vif_plugging_timeout: 300,
            vif_plugging_is_fatal: true,
            qemu: QemuDriverSection::default(),
            container: ContainerDriverSection::default(),
        }
    }
}

impl Default for FakeDriverSection {
    fn default() -> Self {
        FakeDriverSection { vcpus: 16, memory_mb: 32768, local_gb: 1000 }
    }
}

/// The block-storage service's settings (upstream's `cinder.conf` `[DEFAULT]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VolumeSection {
    /// Policy overrides (upstream's `policy.yaml` format); defaults are Cinder's secure-RBAC rules.
    pub policy_file: Option<PathBuf>,
    /// The image endpoint volumes are created from and uploaded to; defaults to this listener's `/image`.
    pub image_url: Option<String>,
    /// The object-store endpoint backups go to; defaults to this listener's `/object-store`.
    pub object_url: Option<String>,
    /// The container backups go to when the request names none (upstream's `backup_swift_container`).
    pub backup_container: String,
    /// Bytes per backup object (upstream's `backup_swift_object_size`).
    pub backup_object_size: u64,
    /// The zone of volumes that name none (upstream's `default_availability_zone`).
    pub default_availability_zone: String,
    /// Seconds without a report after which a volume service is down (upstream's `service_down_time`).
    pub service_down_time: u64,
}

impl Default for VolumeSection {
    fn default() -> Self {
        VolumeSection {
            policy_file: None,
            image_url: None,
            object_url: None,
            backup_container: "volumebackups".into(),
            backup_object_size: 52_428_800,
            default_availability_zone: "nova".into(),
            service_down_time: 60,
        }
    }
}

/// The volume agent of this host: upstream's `cinder-volume` settings for one backend.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VolumeAgentSection {
    /// The host name the agent serves as; defaults to this machine's host name.
    pub host: Option<String>,
    /// The backend's name (upstream's `volume_backend_name`); the agent serves as `<host>@<backend_name>`.
    pub backend_name: String,
    /// The zone the backend is in (upstream's `storage_availability_zone`).
    pub availability_zone: String,
    /// The driver: `file` (raw/qcow2 files through `qemu-img`), `iscsi` (raw files exported to other hosts by the
    /// userspace iSCSI target `tgt`, `[volume_agent.iscsi]`) or `fake` (volumes in memory).
    pub driver: String,
    /// Where the `file` driver keeps volumes; defaults to `<data_dir>/volumes`.
    pub volumes_dir: Option<PathBuf>,
    /// The `file` driver's format: `raw` (sparse files) or `qcow2`.
    pub format: String,
    /// The capacity reported, in GiB; default: the file system's (`file`) or 1000 (`fake`).
    pub capacity_gb: Option<f64>,
    /// Seconds between reports to the scheduler (upstream's `report_interval`).
    pub report_interval: u64,
    /// How much thin provisioning may promise beyond the capacity (upstream's `max_over_subscription_ratio`).
    pub max_over_subscription_ratio: f64,
    /// Percentage of the capacity kept free (upstream's `reserved_percentage`).
    pub reserved_percentage: u32,
    /// Extra capabilities reported to the scheduler, matched against volume type extra specs.
    pub capabilities: std::collections::BTreeMap<String, String>,
    /// The `iscsi` driver's target.
    pub iscsi: IscsiSection,
}

/// The `iscsi` volume driver's target (upstream's `target_ip_address`, `target_port`, `target_prefix`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IscsiSection {
    /// The address initiators reach the target at (the storage host's address on the storage network).
    pub target_ip_address: String,
    pub target_port: u16,
    /// The prefix of target names (an iSCSI qualified name).
    pub target_prefix: String,
    /// tgt's control port (`tgtadm -C`): 0 for the system's daemon.
    pub control_port: u16,
    /// Start `tgtd` on the portal when none answers (a host without a tgt service).
    pub start_daemon: bool,
}

impl Default for IscsiSection {
    fn default() -> Self {
        IscsiSection {
            target_ip_address: "127.0.0.1".into(),
            target_port: 3260,
            target_prefix: "iqn.2010-10.org.openstack:".into(),
            control_port: 0,
            start_daemon: true,
        }
    }
}

impl Default for VolumeAgentSection {
    fn default() -> Self {
        VolumeAgentSection {
            host: None,
            backend_name: "file".into(),
            availability_zone: "nova".into(),
            driver: "file".into(),
            volumes_dir: None,
            format: "raw".into(),
            capacity_gb: None,
            report_interval: 10,
            max_over_subscription_ratio: 20.0,
            reserved_percentage: 0,
            capabilities: Default::default(),
            iscsi: IscsiSection::default(),
        }
    }
}

/// The network agent of this host: upstream's Linux bridge and DHCP agent settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkAgentSection {
    /// Run the agent inside `stratus up` (it changes the host's networking: bridges, namespaces, dnsmasq).
    pub enabled: bool,
    /// The host name ports are bound to (`binding:host_id`); defaults to `[compute_agent] host`, else this
    /// machine's host name.
    pub host: Option<String>,
    /// The local end of VXLAN tunnels (upstream's `[vxlan] local_ip`); none: VXLAN networks stay on this host.
    pub local_ip: Option<std::net::Ipv4Addr>,
    /// The UDP port of VXLAN tunnels.
    pub vxlan_port: u16,
    /// `physnet:interface` pairs for flat networks (upstream's `physical_interface_mappings`).
    pub physical_interface_mappings: Vec<String>,
    /// Where the agent keeps DHCP files; defaults to `<data_dir>/network-agent`.
    pub state_dir: Option<PathBuf>,
    /// Prefixed to the names of the namespaces the agent makes (several agents on one machine, tests).
    pub namespace_prefix: String,
    /// The named network namespace the agent's bridges and devices live in (default: the agent's own).
    pub host_namespace: Option<String>,
    /// Seconds between looks for new tap devices (upstream's `polling_interval`).
    pub polling_interval: f64,
    /// Seconds between full resyncs without any change notice.
    pub resync_interval: f64,
    /// Serve DHCP for this host's networks.
    pub enable_dhcp: bool,
    /// The compute metadata API the metadata proxy in the DHCP namespaces forwards instances' requests for
    /// `http://169.254.169.254/` to (upstream's `nova_metadata_host`/`port`/`protocol`), e.g.
    /// `http://192.0.2.10:8775`. Unset: the in-process agent of `stratus up` uses `[compute] metadata_listen`, a
    /// standalone agent serves no metadata.
    pub metadata_url: Option<String>,
    /// The secret the proxy signs instance ids with, as `[compute] metadata_proxy_shared_secret` (whose value it
    /// takes when empty).
    pub metadata_proxy_shared_secret: String,
    /// Enforce security groups and anti-spoofing on this host's ports with nftables (upstream's
    /// `[securitygroup] enable_security_group`).
    pub enable_security_group: bool,
    /// The domain of instances' host names (upstream's `dns_domain`).
    pub dns_domain: String,
    pub dnsmasq: PathBuf,
    /// radvd, which advertises IPv6 subnets' prefixes from routers.
    pub radvd: PathBuf,
    /// conntrack (conntrack-tools), which cuts the connections of removed security group rules.
    pub conntrack: PathBuf,
    /// The `ip` command (iproute2), for namespaces.
    pub ip: PathBuf,
    /// Host routers (upstream's L3 agent on this host): the network service places routers on such hosts.
    pub enable_l3: bool,
    /// The `nft` command (nftables), for routers' NAT and security groups.
    pub nft: PathBuf,
}

impl Default for NetworkAgentSection {
    fn default() -> Self {
        NetworkAgentSection {
            enabled: false,
            host: None,
            local_ip: None,
            vxlan_port: 4789,
            physical_interface_mappings: vec![],
            state_dir: None,
            namespace_prefix: String::new(),
            host_namespace: None,
            polling_interval: 2.0,
            resync_interval: 60.0,
            enable_dhcp: true,
            metadata_url: None,
            metadata_proxy_shared_secret: String::new(),
            enable_security_group: true,
            dns_domain: "openstacklocal".into(),
            dnsmasq: "dnsmasq".into(),
            radvd: "radvd".into(),
            conntrack: "conntrack".into(),
            ip: "ip".into(),
            enable_l3: true,
            nft: "nft".into(),
        }
    }
}

/// The placement service's settings.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlacementSection {
    /// Policy overrides (upstream's `policy.yaml` format); defaults allow admins and services only, as upstream.
    pub policy_file: Option<PathBuf>,
}

impl Default for ImageSection {
    fn default() -> Self {
        ImageSection {
            images_dir: None,
            image_count_total: -1,
            image_size_total: -1,
            image_size_cap: 1 << 40,
            enabled_import_methods: vec!["glance-direct".into()],
            policy_file: None,
            cache: true,
            cache_dir: None,
            cache_max_size: 10 << 30,
            cache_prune_interval: 300,
            cache_stall_time: 86_400,
            enabled_backends: vec!["file".into()],
            default_backend: "file".into(),
            object_url: None,
            object_container: "glance".into(),
            object_large_object_size: 5 << 30,
            object_chunk_size: 200 << 20,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAuth {
    pub url: String,
    pub username: String,
    pub password: String,
    #[serde(default = "default_domain_name")]
    pub user_domain_name: String,
    pub project_name: String,
    #[serde(default = "default_domain_name")]
    pub project_domain_name: String,
}

fn default_domain_name() -> String {
    "Default".into()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BootstrapSection {
    pub admin_username: String,
    pub admin_project: String,
    /// The admin password; generated on first start (and kept in `<data_dir>/clouds.yaml`) when unset.
    pub admin_password: Option<String>,
    /// Whether `stratus up` creates the `demo` project and user.
    pub demo: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./stratus-data"),
            region: "RegionOne".into(),
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            bus: BusConfig::default(),
            log: LogConfig::default(),
            identity: IdentitySection::default(),
            image: ImageSection::default(),
            object: ObjectSection::default(),
            placement: PlacementSection::default(),
            compute: ComputeSection::default(),
            network: network::NetworkConfig::default(),
            compute_agent: ComputeAgentSection::default(),
            volume: VolumeSection::default(),
            volume_agent: VolumeAgentSection::default(),
            network_agent: NetworkAgentSection::default(),
            auth: None,
            bootstrap: BootstrapSection::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { listen: SocketAddr::from(([127, 0, 0, 1], 8800)), public_url: None }
    }
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig { url: "memory://".into() }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Human, level: "info".into() }
    }
}

impl Default for IdentitySection {
    fn default() -> Self {
        IdentitySection {
            key_repository: None,
            token_expiration: 3600,
            max_active_keys: 3,
            password_hash_rounds: 12,
            policy_file: None,
            lockout_failure_attempts: 5,
            lockout_duration: 300,
            unique_last_password_count: 4,
            minimum_password_age: 0,
            password_expires_days: None,
            password_regex: None,
            password_regex_description: None,
            change_password_upon_first_use: false,
        }
    }
}

impl Default for BootstrapSection {
    fn default() -> Self {
        BootstrapSection { admin_username: "admin".into(), admin_project: "admin".into(), admin_password: None, demo: true }
    }
}

/// Top-level keys that environment variables may set; other `STRATUS_*` variables belong to tools, not config.
const SECTIONS: &[&str] =
    &["data_dir", "region", "server", "database", "bus", "log", "identity", "image", "object", "placement", "compute", "compute_agent", "volume", "volume_agent", "network_agent", "auth", "bootstrap"];

impl IdentitySection {
    /// The security-compliance rules in the identity service's terms.
    pub fn security(&self) -> identity::service::SecurityCompliance {
        identity::service::SecurityCompliance {
            lockout_failure_attempts: self.lockout_failure_attempts,
            lockout_duration: self.lockout_duration,
            unique_last_password_count: self.unique_last_password_count,
            minimum_password_age: self.minimum_password_age,
            password_expires_days: self.password_expires_days,
            password_regex: self.password_regex.clone(),
            password_regex_description: self.password_regex_description.clone(),
            change_password_upon_first_use: self.change_password_upon_first_use,
        }
    }
}

impl Config {
    /// Defaults, then `file` (if any), then `STRATUS_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Config, Error> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(Error::Config(format!("configuration file {} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(
            Env::prefixed("STRATUS_")
                .filter(|key| {
                    let section = key.as_str().split("__").next().unwrap_or_default().to_ascii_lowercase();
                    SECTIONS.contains(&section.as_str())
                })
                .split("__"),
        );
        figment.extract().map_err(|e| Error::Config(e.to_string()))
    }

    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("stratus.db").display()),
        }
    }

    pub fn key_repository(&self) -> PathBuf {
        self.identity.key_repository.clone().unwrap_or_else(|| self.data_dir.join("fernet-keys"))
    }

    /// The object service's settings, with paths resolved against the data dir.
    pub fn object_config(&self) -> object::ObjectConfig {
        let mut c = object::ObjectConfig::new(&self.data_dir);
        if let Some(dir) = &self.object.devices_dir {
            c.devices_dir = dir.clone();
        }
        if let Some(dir) = &self.object.ring_dir {
            c.ring_dir = dir.clone();
        }
        c.policies = self.object.policies.clone();
        c.devices = self.object.devices.clone();
        c.part_power = self.object.part_power;
        c.replicas = self.object.replicas;
        c
    }

    /// The image service's settings, with paths resolved against the data dir.
    pub fn image_config(&self) -> image::ImageConfig {
        let mut c = image::ImageConfig::new(&self.data_dir);
        if let Some(dir) = &self.image.images_dir {
            c.images_dir = dir.clone();
            c.staging_dir = dir.join("staging");
        }
        c.image_count_total = self.image.image_count_total;
        c.image_size_total = self.image.image_size_total;
        c.image_size_cap = self.image.image_size_cap;
        c.import_methods = self.image.enabled_import_methods.clone();
        c.cache = self.image.cache.then(|| self.image_cache_config());
        c.enabled_backends = self.image.enabled_backends.clone();
        c.default_backend = self.image.default_backend.clone();
        c
    }

    /// The `object` image store's settings, for a cloud whose public URL is `public_url`.
    pub fn image_object_store_config(&self, public_url: &str) -> image::adapter::ObjectStoreConfig {
        let url = self.image.object_url.clone().unwrap_or_else(|| format!("{public_url}/object-store"));
        let mut c = image::adapter::ObjectStoreConfig::new(&url);
        c.container = self.image.object_container.clone();
        c.large_object_size = self.image.object_large_object_size;
        c.chunk_size = self.image.object_chunk_size;
        c
    }

    /// The volume service's settings, for a cloud whose public URL is `public_url`.
    pub fn volume_config(&self, public_url: &str) -> volume::VolumeConfig {
        let image = self.volume.image_url.clone().unwrap_or_else(|| format!("{public_url}/image"));
        let object = self.volume.object_url.clone().unwrap_or_else(|| format!("{public_url}/object-store"));
        let mut c = volume::VolumeConfig::new(&image, &object);
        c.backup_container = self.volume.backup_container.clone();
        c.backup_chunk_size = self.volume.backup_object_size.max(1);
        c.default_availability_zone = self.volume.default_availability_zone.clone();
        c.service_down_time = std::time::Duration::from_secs(self.volume.service_down_time.max(1));
        c.host = self.volume_agent.host.clone().unwrap_or_else(volume_agent::hostname);
        c
    }

    /// The image cache's settings (also used by `stratus image cache`).
    pub fn image_cache_config(&self) -> image::cache::CacheConfig {
        let dir = self.image.cache_dir.clone().unwrap_or_else(|| self.data_dir.join("image-cache"));
        let mut c = image::cache::CacheConfig::new(&dir);
        c.max_size = self.image.cache_max_size;
        c.stall_time = std::time::Duration::from_secs(self.image.cache_stall_time);
        c
    }

    pub fn public_url(&self, bound: SocketAddr) -> String {
        match &self.server.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{bound}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file() {
        let c = Config::default();
        assert_eq!(c.server.listen.port(), 8800);
        assert_eq!(c.bus.url, "memory://");
        assert!(c.database_url().starts_with("sqlite://"));
        assert!(c.database_url().ends_with("stratus.db"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // Jail's closure returns figment's error, as it must
    fn file_then_env_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stratus.toml");
        std::fs::write(&path, "region = \"RegionTwo\"\n[database]\nurl = \"sqlite://x.db\"\n[log]\nformat = \"json\"\n")
            .unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("STRATUS_DATABASE__URL", "postgres://db/stratus");
            jail.set_env("STRATUS_TEST_SOMETHING", "ignored");
            let c = Config::load(Some(&path)).map_err(|e| e.to_string())?;
            assert_eq!(c.region, "RegionTwo");
            assert_eq!(c.database_url(), "postgres://db/stratus");
            assert_eq!(c.log.format, LogFormat::Json);
            Ok(())
        });
    }

    #[test]
    fn network_section_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stratus.toml");
        let toml = "[network]\ntenant_network_types = [\"geneve\"]\nvni_ranges = [\"100:200\"]\npublic_network_name = \"\"\n";
        std::fs::write(&path, toml).unwrap();
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.network.tenant_network_types, vec!["geneve".to_string()]);
        assert_eq!(c.network.vni_ranges, vec!["100:200".to_string()]);
        assert_eq!(c.network.public_network_name, "");
        assert_eq!(c.network.global_physnet_mtu, 1500);
        std::fs::write(&path, "[network]\nvni_range = []\n").unwrap();
        assert!(Config::load(Some(&path)).is_err(), "unknown keys are rejected");
    }

    #[test]
    fn scheduler_options_from_file() {
        let c = Config::default();
        assert_eq!(c.compute.scheduler(), scheduler::SchedulerConfig::default());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stratus.toml");
        let toml = "[compute]\nenabled_filters = [\"ComputeFilter\", \"AggregateInstanceExtraSpecsFilter\"]\n\
                    ram_weight_multiplier = -1.0\nbuild_failure_weight_multiplier = 10.0\nhost_subset_size = 2\n";
        std::fs::write(&path, toml).unwrap();
        let s = Config::load(Some(&path)).unwrap().compute.scheduler();
        assert_eq!(s.enabled_filters, ["ComputeFilter", "AggregateInstanceExtraSpecsFilter"]);
        assert_eq!((s.ram_weight_multiplier, s.cpu_weight_multiplier, s.build_failure_weight_multiplier), (-1.0, 1.0, 10.0));
        assert_eq!(s.host_subset_size, 2);
        assert!(scheduler::Scheduler::from_config(&s).is_ok());
        let bad = scheduler::SchedulerConfig { enabled_filters: vec!["RetryFilter".into()], ..s };
        assert!(scheduler::Scheduler::from_config(&bad).is_err());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stratus.toml");
        std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("listne"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // Jail's closure returns figment's error, as it must
    fn compute_agent_settings_from_file_and_env() {
        let c = Config::default();
        assert_eq!(c.compute_agent.host, None);
        assert_eq!(c.compute_agent.driver, "fake");
        assert_eq!((c.compute_agent.report_interval, c.compute_agent.resource_audit_interval), (10, 60));
        assert_eq!(c.compute_agent.reserved_host_memory_mb, 512);
        let fake = &c.compute_agent.fake;
        assert_eq!((fake.vcpus, fake.memory_mb, fake.local_gb), (16, 32768, 1000));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stratus.toml");
        let toml = "[compute_agent]\nhost = \"cn1\"\ncpu_allocation_ratio = 4.0\n[compute_agent.fake]\nvcpus = 4\n";
        std::fs::write(&path, toml).unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("STRATUS_COMPUTE_AGENT__HOST", "cn2");
            jail.set_env("STRATUS_COMPUTE_AGENT__FAKE__MEMORY_MB", "2048");
            let c = Config::load(Some(&path)).map_err(|e| e.to_string())?;
            assert_eq!(c.compute_agent.host.as_deref(), Some("cn2"));
            assert_eq!(c.compute_agent.cpu_allocation_ratio, 4.0);
            assert_eq!((c.compute_agent.fake.vcpus, c.compute_agent.fake.memory_mb), (4, 2048));
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // Jail's closure returns figment's error, as it must
    fn image_stores_from_env() {
        let c = Config::default();
        assert_eq!((c.image.enabled_backends.as_slice(), c.image.default_backend.as_str()), (&["file".to_string()][..], "file"));
        figment::Jail::expect_with(|jail| {
            jail.set_env("STRATUS_IMAGE__ENABLED_BACKENDS", "[file, object]");
            jail.set_env("STRATUS_IMAGE__DEFAULT_BACKEND", "object");
            jail.set_env("STRATUS_IMAGE__OBJECT_CHUNK_SIZE", "1048576");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.image.enabled_backends, ["file", "object"]);
            let image = c.image_config();
            assert_eq!(image.default_backend, "object");
            let object = c.image_object_store_config("http://h:1");
            assert_eq!((object.url.as_str(), object.container.as_str()), ("http://h:1/object-store", "glance"));
            assert_eq!(object.chunk_size, 1 << 20);
            Ok(())
        });
    }

    #[test]
    fn example_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/stratus.toml.example");
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.region, "RegionOne");
        // The commented storage-policy example, uncommented, is valid too.
        let text = std::fs::read_to_string(&path).unwrap();
        let policies: String = text
            .lines()
            .skip_while(|l| !l.starts_with("# [[object.policies]]"))
            .take_while(|l| l.starts_with("# "))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policies.toml");
        std::fs::write(&file, policies).unwrap();
        let c = Config::load(Some(&file)).unwrap();
        let names: Vec<_> = c.object.policies.iter().map(|p| (p.index, p.name.as_str(), p.deprecated)).collect();
        assert_eq!(names, vec![(0, "silver", false), (1, "gold", false), (2, "old", true)]);
        assert!(object::policy::Policies::new(c.object.policies.clone()).is_ok());
    }
}
