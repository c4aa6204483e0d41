//! The agent's settings and driver selection.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use compute_rpc::{COMPUTE_TOPIC, CONDUCTOR_TOPIC};

use crate::Error;
use crate::fake::{FakeConfig, FakeDriver};
use crate::hypervisor::Hypervisor;
use crate::container::{ContainerConfig, ContainerDriver};
use crate::qemu::{ImageService, QemuConfig, QemuDriver};

/// How an agent runs. [`AgentConfig::new`] gives upstream's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// The host this agent serves as (`compute.<host>`) and registers; also the node name.
    pub host: String,
    /// The host's address as the API shows it (`host_ip`; upstream's `my_ip`).
    pub my_ip: String,
    /// Between heartbeats (upstream's `report_interval`, 10 s).
    pub report_interval: Duration,
    /// Between resource audits (upstream's `update_resources_interval`, whose 0 means the 60 s periodic task).
    pub resource_audit_interval: Duration,
    /// Overcommit ratios the node's inventory gets. Upstream leaves these unset and then uses
    /// `initial_*_allocation_ratio` (16.0, 1.5 and 1.0) for a new node.
    pub cpu_allocation_ratio: f64,
    pub ram_allocation_ratio: f64,
    pub disk_allocation_ratio: f64,
    /// Kept back for the host itself (upstream's `reserved_host_*`: 0 CPUs, 512 MB, 0 MB of disk).
    pub reserved_host_cpus: i64,
    pub reserved_host_memory_mb: i64,
    pub reserved_host_disk_mb: i64,
    /// How long a call to the conductor may take (upstream's `rpc_response_timeout`, 60 s).
    pub rpc_timeout: Duration,
    /// The longest wait between registration attempts while the conductor does not answer.
    pub register_backoff_max: Duration,
    /// The topic the agent serves ([`COMPUTE_TOPIC`]); deployments sharing one broker keep the default.
    pub compute_topic: String,
    /// The topic the conductor serves ([`CONDUCTOR_TOPIC`]).
    pub conductor_topic: String,
    /// Between syncs of guests' power states to their instances (upstream's `sync_power_state_interval`, 600 s).
    pub sync_power_state_interval: Duration,
    /// How long a build waits for `network-vif-plugged` of the ports that were not `ACTIVE` when bound
    /// (upstream's `vif_plugging_timeout`, 300 s; zero: no wait).
    pub vif_plugging_timeout: Duration,
    /// A build whose ports were not plugged in time fails (upstream's `vif_plugging_is_fatal`, true); otherwise
    /// the instance goes ACTIVE anyway.
    pub vif_plugging_is_fatal: bool,
}

impl AgentConfig {
    pub fn new(host: impl Into<String>) -> AgentConfig {
        AgentConfig {
            host: host.into(),
            my_ip: Ipv4Addr::LOCALHOST.to_string(),
            report_interval: Duration::from_secs(10),
            resource_audit_interval: Duration::from_secs(60),
            cpu_allocation_ratio: 16.0,
            ram_allocation_ratio: 1.5,
            disk_allocation_ratio: 1.0,
            reserved_host_cpus: 0,
            reserved_host_memory_mb: 512,
            reserved_host_disk_mb: 0,
            rpc_timeout: Duration::from_secs(60),
            register_backoff_max: Duration::from_secs(30),
            compute_topic: COMPUTE_TOPIC.into(),
            conductor_topic: CONDUCTOR_TOPIC.into(),
            sync_power_state_interval: Duration::from_secs(600),
            vif_plugging_timeout: Duration::from_secs(300),
            vif_plugging_is_fatal: true,
        }
    }

    /// Rejects settings the agent cannot run with.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: &str| Err(Error::Config(what.to_owned()));
        if self.host.is_empty() || self.host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("the host name must be non-empty, without whitespace");
        }
        for (name, d) in [
            ("report_interval", self.report_interval),
            ("resource_audit_interval", self.resource_audit_interval),
            ("rpc_timeout", self.rpc_timeout),
            ("register_backoff_max", self.register_backoff_max),
            ("sync_power_state_interval", self.sync_power_state_interval),
        ] {
            if d.is_zero() {
                return bad(&format!("{name} must be positive"));
            }
        }
        for (name, r) in [
            ("cpu_allocation_ratio", self.cpu_allocation_ratio),
            ("ram_allocation_ratio", self.ram_allocation_ratio),
            ("disk_allocation_ratio", self.disk_allocation_ratio),
        ] {
            if !(r.is_finite() && r > 0.0) {
                return bad(&format!("{name} must be a positive number"));
            }
        }
        for (name, n) in [
            ("reserved_host_cpus", self.reserved_host_cpus),
            ("reserved_host_memory_mb", self.reserved_host_memory_mb),
            ("reserved_host_disk_mb", self.reserved_host_disk_mb),
        ] {
            if n < 0 {
                return bad(&format!("{name} must not be negative"));
            }
        }
        Ok(())
    }
}

/// The hypervisor driver to run, with its settings.
#[derive(Clone, Debug)]
pub enum DriverConfig {
    Fake(FakeConfig),
    Qemu(Box<QemuSettings>),
    Container(Box<ContainerSettings>),
    /// VMs and containers on one node (`qemu+container`).
    QemuAndContainer(Box<QemuSettings>, Box<ContainerSettings>),
}

/// The container driver's settings and where it fetches images from.
#[derive(Clone, Debug)]
pub struct ContainerSettings {
    pub container: ContainerConfig,
    /// The image service's endpoint and the service user the driver downloads images as.
    pub image_url: Option<String>,
    pub credentials: Option<auth::ServiceCredentials>,
}

/// The qemu driver's settings and where it fetches images from.
#[derive(Clone, Debug)]
pub struct QemuSettings {
    pub qemu: QemuConfig,
    /// The image service's endpoint (`http://host/image`) and the service user the driver downloads images as.
    pub image_url: Option<String>,
    pub credentials: Option<auth::ServiceCredentials>,
}

impl DriverConfig {
    /// The driver called `name` (`fake`, `qemu` or `container`), with its settings.
    pub fn named(name: &str, fake: FakeConfig, qemu: QemuSettings, container: ContainerSettings) -> Result<DriverConfig, Error> {
        match name {
            "fake" => Ok(DriverConfig::Fake(fake)),
            "qemu" => Ok(DriverConfig::Qemu(Box::new(qemu))),
            "container" => Ok(DriverConfig::Container(Box::new(container))),
            "qemu+container" => Ok(DriverConfig::QemuAndContainer(Box::new(qemu), Box::new(container))),
            other => Err(Error::Config(format!("unknown compute driver {other:?} (available: fake, qemu, container, qemu+container)"))),
        }
    }

    pub fn build(self) -> Result<Arc<dyn Hypervisor>, Error> {
        match self {
            DriverConfig::Fake(config) => {
                if config.vcpus < 0 || config.memory_mb < 0 || config.local_gb < 0 {
                    return Err(Error::Config("the fake driver's capacity must not be negative".into()));
                }
                Ok(Arc::new(FakeDriver::new(config)))
            }
            DriverConfig::Qemu(settings) => {
                let settings = *settings;
                let images = image_service("qemu", settings.image_url, settings.credentials)?;
                Ok(Arc::new(QemuDriver::new(settings.qemu, images)?))
            }
            DriverConfig::Container(settings) => {
                let settings = *settings;
                let images = image_service("container", settings.image_url, settings.credentials)?;
                Ok(Arc::new(ContainerDriver::new(settings.container, images)?))
            }
            DriverConfig::QemuAndContainer(qemu, container) => {
                let vm = DriverConfig::Qemu(qemu).build()?;
                let container = DriverConfig::Container(container).build()?;
                Ok(Arc::new(crate::multi::MultiDriver::new(vm, container)))
            }
        }
    }
}

/// The image service a driver fetches images from, when configured.
fn image_service(driver: &str, url: Option<String>, credentials: Option<auth::ServiceCredentials>) -> Result<Option<ImageService>, Error> {
    match (url, credentials) {
        (Some(url), Some(credentials)) => Ok(Some(ImageService::new(&url, credentials)?)),
        (None, _) => Ok(None),
        (Some(_), None) => Err(Error::Config(format!("the {driver} driver needs service credentials to fetch images"))),
    }
}

/// This machine's host name, `localhost` when it has none.
pub fn hostname() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy();
    let name = name.trim();
    if name.is_empty() { "localhost".to_owned() } else { name.to_owned() }
}

/// The address this machine reaches other hosts from (the source address of its default route), loopback when
/// it has no route. No packet is sent.
pub fn default_ip() -> IpAddr {
    let probe = || -> std::io::Result<IpAddr> {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
        Ok(socket.local_addr()?.ip())
    };
    match probe() {
        Ok(ip) if !ip.is_unspecified() => ip,
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_upstreams() {
        let c = AgentConfig::new("h1");
        assert_eq!(c.report_interval, Duration::from_secs(10));
        assert_eq!(c.resource_audit_interval, Duration::from_secs(60));
        assert_eq!((c.cpu_allocation_ratio, c.ram_allocation_ratio, c.disk_allocation_ratio), (16.0, 1.5, 1.0));
        assert_eq!((c.reserved_host_cpus, c.reserved_host_memory_mb, c.reserved_host_disk_mb), (0, 512, 0));
        assert_eq!((c.compute_topic.as_str(), c.conductor_topic.as_str()), ("compute", "conductor"));
        c.validate().unwrap();
    }

    #[test]
    fn unusable_settings_are_rejected() {
        let base = AgentConfig::new("h1");
        type Change = Box<dyn Fn(&mut AgentConfig)>;
        let cases: Vec<(&str, Change)> = vec![
            ("host", Box::new(|c| c.host = "a b".into())),
            ("host", Box::new(|c| c.host.clear())),
            ("report_interval", Box::new(|c| c.report_interval = Duration::ZERO)),
            ("resource_audit_interval", Box::new(|c| c.resource_audit_interval = Duration::ZERO)),
            ("cpu_allocation_ratio", Box::new(|c| c.cpu_allocation_ratio = 0.0)),
            ("ram_allocation_ratio", Box::new(|c| c.ram_allocation_ratio = f64::NAN)),
            ("reserved_host_memory_mb", Box::new(|c| c.reserved_host_memory_mb = -1)),
        ];
        for (what, change) in cases {
            let mut c = base.clone();
            change(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(what), "{what}: {err}");
        }
    }

    #[test]
    fn drivers_by_name() {
        let qemu = || QemuSettings { qemu: QemuConfig::new("/nonexistent/instances"), image_url: None, credentials: None };
        let container = || ContainerSettings { container: ContainerConfig::new("/nonexistent/instances"), image_url: None, credentials: None };
        assert!(DriverConfig::named("fake", FakeConfig::default(), qemu(), container()).unwrap().build().is_ok());
        assert!(matches!(DriverConfig::named("qemu", FakeConfig::default(), qemu(), container()).unwrap(), DriverConfig::Qemu(_)));
        assert!(matches!(DriverConfig::named("container", FakeConfig::default(), qemu(), container()).unwrap(), DriverConfig::Container(_)));
        assert!(matches!(
            DriverConfig::named("qemu+container", FakeConfig::default(), qemu(), container()).unwrap(),
            DriverConfig::QemuAndContainer(..)
        ));
        let err = DriverConfig::named("xen", FakeConfig::default(), qemu(), container()).unwrap_err().to_string();
        assert!(err.contains("xen"), "{err}");
        let negative = FakeConfig { vcpus: -1, ..Default::default() };
        assert!(DriverConfig::Fake(negative).build().is_err());
    }

    #[test]
    fn host_name_and_address_are_found() {
        assert!(!hostname().is_empty());
        assert!(!default_ip().is_unspecified());
    }
}
