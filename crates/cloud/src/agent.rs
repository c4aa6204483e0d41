//! This host's compute agent, as `[compute_agent]` configures it: run by `stratus compute-agent`, or in-process
//! next to the services.

use std::time::Duration;

use bus::Bus;
use compute_agent::{Agent, AgentConfig, AgentHandle, ContainerConfig, ContainerSettings, DriverConfig, FakeConfig, QemuConfig, QemuSettings};

use crate::{Config, Error};

/// Where the agent's driver reaches other services: the image service it fetches images from, as whom.
#[derive(Clone, Debug, Default)]
pub struct Endpoints {
    pub image_url: String,
    pub credentials: Option<auth::ServiceCredentials>,
}

impl Endpoints {
    /// The endpoints of an agent running on its own (`stratus compute-agent`): `[compute] image_url` (or this
    /// configuration's public URL's `/image`) and the `[auth]` service user.
    pub fn standalone(config: &Config) -> Result<Endpoints, Error> {
        let public = config.public_url(config.server.listen);
        Ok(Endpoints {
            image_url: config.compute.image_url.clone().unwrap_or_else(|| format!("{public}{}", crate::Service::Image.prefix())),
            credentials: crate::service_credentials(config, &public, false)?,
        })
    }
}

/// The agent's settings from `[compute_agent]`, with the host name and address found when not configured.
pub fn agent_config(config: &Config) -> AgentConfig {
    let section = &config.compute_agent;
    let host = section.host.clone().unwrap_or_else(compute_agent::hostname);
    let mut c = AgentConfig::new(host);
    c.my_ip = section.my_ip.clone().unwrap_or_else(|| compute_agent::default_ip().to_string());
    c.report_interval = Duration::from_secs(section.report_interval);
    c.resource_audit_interval = Duration::from_secs(section.resource_audit_interval);
    c.cpu_allocation_ratio = section.cpu_allocation_ratio;
    c.ram_allocation_ratio = section.ram_allocation_ratio;
    c.disk_allocation_ratio = section.disk_allocation_ratio;
    c.reserved_host_cpus = section.reserved_host_cpus;
    c.reserved_host_memory_mb = section.reserved_host_memory_mb;
    c.reserved_host_disk_mb = section.reserved_host_disk_mb;
    c.sync_power_state_interval = Duration::from_secs(section.sync_power_state_interval);
    c.vif_plugging_timeout = Duration::from_secs(section.vif_plugging_timeout);
    c.vif_plugging_is_fatal = section.vif_plugging_is_fatal;
    c
}

/// The hypervisor driver `[compute_agent] driver` names, with its settings.
pub fn driver_config(config: &Config, endpoints: Endpoints) -> Result<DriverConfig, Error> {
    let section = &config.compute_agent;
    let fake = FakeConfig {
        vcpus: section.fake.vcpus,
        memory_mb: section.fake.memory_mb,
        local_gb: section.fake.local_gb,
        ..FakeConfig::default()
    };
    let q = &section.qemu;
    let mut qemu = QemuConfig::new(q.instances_path.clone().unwrap_or_else(|| config.data_dir.join("instances")));
    qemu.virt_type = q.virt_type.parse()?;
    qemu.qemu_binary = q.qemu_binary.clone().into();
    qemu.qemu_img = q.qemu_img.clone().into();
    qemu.shutdown_timeout = Duration::from_secs(q.shutdown_timeout);
    qemu.force_config_drive = q.force_config_drive;
    qemu.remove_unused_base_images = q.remove_unused_base_images;
    qemu.remove_unused_minimum_age = Duration::from_secs(q.remove_unused_original_minimum_age_seconds);
    qemu.iscsi_initiator = compute_agent::iscsi_initiator(&agent_config(config).host);
    qemu.host_namespace = q.host_namespace.clone().or_else(|| config.network_agent.host_namespace.clone());
    let k = &section.container;
    let mut container = ContainerConfig::new(k.instances_path.clone().unwrap_or_else(|| config.data_dir.join("containers")));
    container.runtime = k.runtime.clone().into();
    container.stop_timeout = Duration::from_secs(k.stop_timeout);
    container.pids_limit = k.pids_limit;
    container.remove_unused_base_images = k.remove_unused_base_images;
    container.remove_unused_minimum_age = Duration::from_secs(k.remove_unused_original_minimum_age_seconds);
    container.host_namespace = k.host_namespace.clone().or_else(|| config.network_agent.host_namespace.clone());
    let container = ContainerSettings {
        container,
        image_url: Some(k.image_url.clone().unwrap_or_else(|| endpoints.image_url.clone())),
        credentials: endpoints.credentials.clone(),
    };
    let qemu = QemuSettings {
        qemu,
        image_url: Some(q.image_url.clone().unwrap_or(endpoints.image_url)),
        credentials: endpoints.credentials,
    };
    Ok(DriverConfig::named(&section.driver, fake, qemu, container)?)
}

/// The volume agent's settings from `[volume_agent]`.
pub fn volume_agent_config(config: &Config) -> volume_agent::AgentConfig {
    let section = &config.volume_agent;
    let host = section.host.clone().unwrap_or_else(volume_agent::hostname);
    let mut c = volume_agent::AgentConfig::new(host);
    c.backend_name = section.backend_name.clone();
    c.availability_zone = section.availability_zone.clone();
    c.report_interval = Duration::from_secs(section.report_interval);
    c.max_over_subscription_ratio = section.max_over_subscription_ratio;
    c.reserved_percentage = section.reserved_percentage;
    c.capabilities = section.capabilities.clone();
    c
}

/// The volume driver `[volume_agent] driver` names: `file` (the default), `iscsi` or `fake`.
pub fn volume_driver(config: &Config) -> Result<std::sync::Arc<dyn volume_agent::VolumeDriver>, Error> {
    let section = &config.volume_agent;
    let dir = section.volumes_dir.clone().unwrap_or_else(|| config.data_dir.join("volumes"));
    match section.driver.as_str() {
        "file" => {
            let mut c = volume_agent::FileConfig::new(&dir);
            c.format = section.format.clone();
            c.capacity_gb = section.capacity_gb;
            Ok(std::sync::Arc::new(volume_agent::FileDriver::new(c)?))
        }
        "iscsi" => {
            let mut file = volume_agent::FileConfig::new(&dir);
            file.capacity_gb = section.capacity_gb;
            let i = &section.iscsi;
            let mut c = volume_agent::IscsiConfig::new(file);
            c.portal = format!("{}:{}", i.target_ip_address, i.target_port);
            c.target_prefix = i.target_prefix.clone();
            c.control_port = i.control_port;
            c.start_daemon = i.start_daemon;
            Ok(std::sync::Arc::new(volume_agent::IscsiDriver::new(c)?))
        }
        "fake" => {
            std::fs::create_dir_all(&dir).map_err(|source| Error::Io { context: format!("cannot create {}", dir.display()), source })?;
            Ok(std::sync::Arc::new(volume_agent::FakeDriver::new(section.capacity_gb.unwrap_or(1000.0), &dir)))
        }
        other => Err(Error::Config(format!("[volume_agent] driver: unknown driver '{other}' (file, iscsi or fake)"))),
    }
}

/// Starts this host's volume agent on `bus`: it serves its backend and reports it to the scheduler.
pub async fn start_volume_agent(config: &Config, bus: Bus) -> Result<volume_agent::AgentHandle, Error> {
    let driver = volume_driver(config)?;
    Ok(volume_agent::Agent::start(volume_agent_config(config), driver, bus).await?)
}

/// The network agent's settings from `[network_agent]`.
pub fn network_agent_config(config: &Config) -> Result<network_agent::AgentConfig, Error> {
    let s = &config.network_agent;
    let host = s.host.clone().or_else(|| config.compute_agent.host.clone()).unwrap_or_else(network_agent::hostname);
    let mut c = network_agent::AgentConfig::new(host, s.state_dir.clone().unwrap_or_else(|| config.data_dir.join("network-agent")));
    let seconds = |what: &str, v: f64| {
        if v.is_finite() && v > 0.0 && v < 86400.0 {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(Error::Config(format!("[network_agent] {what} must be between 0 and 86400 seconds")))
        }
    };
    c.tunnel_ip = s.local_ip;
    c.vxlan_port = s.vxlan_port;
    c.interface_mappings = network_agent::parse_mappings(&s.physical_interface_mappings)?;
    c.namespace_prefix = s.namespace_prefix.clone();
    c.host_namespace = s.host_namespace.clone();
    c.polling_interval = seconds("polling_interval", s.polling_interval)?;
    c.resync_interval = seconds("resync_interval", s.resync_interval)?;
    c.enable_dhcp = s.enable_dhcp;
    if let Some(url) = &s.metadata_url {
        c.metadata = Some(network_agent::metadata::MetadataConfig::new(url.clone(), metadata_secret(config)));
    }
    c.enable_security_group = s.enable_security_group;
    c.dns_domain = s.dns_domain.clone();
    c.dnsmasq = s.dnsmasq.clone();
    c.radvd = s.radvd.clone();
    c.conntrack = s.conntrack.clone();
    c.ip = s.ip.clone();
    c.enable_l3 = s.enable_l3;
    c.nft = s.nft.clone();
    Ok(c)
}

fn metadata_secret(config: &Config) -> String {
    let own = &config.network_agent.metadata_proxy_shared_secret;
    if own.is_empty() { config.compute.metadata_proxy_shared_secret.clone() } else { own.clone() }
}

/// The settings of a network agent in the same process as the compute service: without `[network_agent]
/// metadata_url` its metadata proxy forwards to the metadata listener of this process, at `metadata_addr`.
pub fn network_agent_config_in_process(
    config: &Config,
    metadata_addr: Option<std::net::SocketAddr>,
) -> Result<network_agent::AgentConfig, Error> {
    let mut c = network_agent_config(config)?;
    if c.metadata.is_none()
        && let Some(mut addr) = metadata_addr
    {
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
        }
        c.metadata = Some(network_agent::metadata::MetadataConfig::new(format!("http://{addr}"), metadata_secret(config)));
    }
    Ok(c)
}

/// Starts this host's network agent on `bus`: it fetches its host's state from the network service and wires it.
pub async fn start_network_agent(config: &Config, bus: Bus) -> Result<network_agent::AgentHandle, Error> {
    Ok(network_agent::Agent::start(network_agent_config(config)?, bus).await?)
}

/// Starts this host's compute agent on `bus`. It registers with the conductor in the background (retrying until
/// one answers), so the conductor may start before or after it.
pub async fn start_agent(config: &Config, bus: Bus, endpoints: Endpoints) -> Result<AgentHandle, Error> {
    let agent = agent_config(config);
    let driver = driver_config(config, endpoints)?.build()?;
    Ok(Agent::start(agent, driver, bus)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_come_from_the_section() {
        let mut config = Config::default();
        config.compute_agent.host = Some("cn1".into());
        config.compute_agent.my_ip = Some("192.0.2.5".into());
        config.compute_agent.report_interval = 30;
        config.compute_agent.ram_allocation_ratio = 1.0;
        let c = agent_config(&config);
        assert_eq!((c.host.as_str(), c.my_ip.as_str()), ("cn1", "192.0.2.5"));
        assert_eq!(c.report_interval, Duration::from_secs(30));
        assert_eq!(c.resource_audit_interval, Duration::from_secs(60));
        assert_eq!((c.cpu_allocation_ratio, c.ram_allocation_ratio), (16.0, 1.0));
        assert_eq!(c.reserved_host_memory_mb, 512);

        let DriverConfig::Fake(fake) = driver_config(&config, Endpoints::default()).unwrap() else {
            panic!("the default driver is fake")
        };
        assert_eq!((fake.vcpus, fake.memory_mb, fake.local_gb), (16, 32768, 1000));

        config.compute_agent.driver = "qemu".into();
        config.compute_agent.qemu.virt_type = "qemu".into();
        config.compute_agent.qemu.shutdown_timeout = 5;
        let DriverConfig::Qemu(qemu) = driver_config(&config, Endpoints::default()).unwrap() else {
            panic!("qemu was asked for")
        };
        assert_eq!(qemu.qemu.virt_type, compute_agent::VirtType::Qemu);
        assert_eq!(qemu.qemu.shutdown_timeout, Duration::from_secs(5));
        assert!(qemu.qemu.instances_path.ends_with("instances"));

        config.compute_agent.driver = "container".into();
        config.compute_agent.container.stop_timeout = 3;
        config.network_agent.host_namespace = Some("hostns".into());
        let DriverConfig::Container(container) = driver_config(&config, Endpoints::default()).unwrap() else {
            panic!("container was asked for")
        };
        assert_eq!(container.container.stop_timeout, Duration::from_secs(3));
        assert_eq!(container.container.host_namespace.as_deref(), Some("hostns"));
        assert!(container.container.instances_path.ends_with("containers"));
        config.compute_agent.qemu.virt_type = "xen".into();
        assert!(driver_config(&config, Endpoints::default()).is_err());
    }

    #[test]
    fn network_agent_settings_come_from_the_section() {
        let mut config = Config::default();
        config.compute_agent.host = Some("cn1".into());
        config.network_agent.local_ip = Some("192.0.2.7".parse().unwrap());
        config.network_agent.physical_interface_mappings = vec!["public:eth1".into()];
        config.network_agent.polling_interval = 0.25;
        let c = network_agent_config(&config).unwrap();
        assert_eq!(c.host, "cn1");
        assert_eq!(c.tunnel_ip, Some("192.0.2.7".parse().unwrap()));
        assert_eq!(c.interface_mappings, vec![("public".to_string(), "eth1".to_string())]);
        assert_eq!(c.polling_interval, Duration::from_millis(250));
        assert!(c.state_dir.ends_with("network-agent"));
        assert!(c.enable_l3, "routers are hosted unless turned off");
        config.network_agent.enable_l3 = false;
        config.network_agent.nft = "/usr/sbin/nft".into();
        let c = network_agent_config(&config).unwrap();
        assert!(!c.enable_l3);
        assert_eq!(c.nft, std::path::PathBuf::from("/usr/sbin/nft"));
        config.network_agent.polling_interval = 0.0;
        assert!(network_agent_config(&config).unwrap_err().to_string().contains("polling_interval"));
        config.network_agent.polling_interval = 1.0;
        config.network_agent.physical_interface_mappings = vec!["eth1".into()];
        assert!(network_agent_config(&config).is_err());
    }

    #[tokio::test]
    async fn the_metadata_proxy_forwards_to_the_configured_or_the_local_metadata_api() {
        let mut config = Config::default();
        assert!(network_agent_config(&config).unwrap().metadata.is_none());
        assert!(network_agent_config_in_process(&config, None).unwrap().metadata.is_none());
        config.compute.metadata_proxy_shared_secret = "s3".into();
        let local = network_agent_config_in_process(&config, Some("0.0.0.0:8775".parse().unwrap())).unwrap().metadata.unwrap();
        assert_eq!((local.url.as_str(), local.shared_secret.as_str()), ("http://127.0.0.1:8775", "s3"));
        let local = network_agent_config_in_process(&config, Some("[::]:8775".parse().unwrap())).unwrap().metadata.unwrap();
        assert_eq!(local.url, "http://[::1]:8775");
        config.network_agent.metadata_url = Some("http://192.0.2.10:8775".into());
        config.network_agent.metadata_proxy_shared_secret = "own".into();
        let elsewhere = network_agent_config_in_process(&config, Some("127.0.0.1:1".parse().unwrap())).unwrap();
        for c in [network_agent_config(&config).unwrap(), elsewhere] {
            let m = c.metadata.unwrap();
            assert_eq!((m.url.as_str(), m.shared_secret.as_str()), ("http://192.0.2.10:8775", "own"));
        }
        config.network_agent.metadata_url = Some("ftp://x".into());
        let bus = Bus::connect("memory://").await.unwrap();
        let err = network_agent::Agent::start(network_agent_config(&config).unwrap(), bus).await.unwrap_err();
        assert!(err.to_string().contains("metadata URL"), "{err}");
    }

    #[test]
    fn the_host_defaults_to_the_machines_name() {
        let c = agent_config(&Config::default());
        assert_eq!(c.host, compute_agent::hostname());
        assert!(!c.my_ip.is_empty());
    }

    #[tokio::test]
    async fn bad_settings_are_reported_at_start() {
        let bus = Bus::connect("memory://cloud-agent-settings").await.unwrap();
        let mut config = Config::default();
        config.compute_agent.driver = "hyperv".into();
        let err = start_agent(&config, bus.clone(), Endpoints::default()).await.unwrap_err().to_string();
        assert!(err.contains("hyperv"), "{err}");

        let mut config = Config::default();
        config.compute_agent.report_interval = 0;
        let err = start_agent(&config, bus.clone(), Endpoints::default()).await.unwrap_err().to_string();
        assert!(err.contains("report_interval"), "{err}");

        let agent = start_agent(&Config::default(), bus, Endpoints::default()).await.unwrap();
        assert_eq!(agent.host(), compute_agent::hostname());
        agent.stop().await;
    }
}
