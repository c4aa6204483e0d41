//! This host's compute agent, as `[compute_agent]` configures it: run by `stratus compute-agent`, or in-process
//! next to the services.

use std::time::Duration;

use bus::Bus;
use compute_agent::{Agent, AgentConfig, AgentHandle, DriverConfig, FakeConfig};

use crate::{Config, Error};

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
    c
}

/// The hypervisor driver `[compute_agent] driver` names, with its settings.
pub fn driver_config(config: &Config) -> Result<DriverConfig, Error> {
    let section = &config.compute_agent;
    let fake = FakeConfig {
        vcpus: section.fake.vcpus,
        memory_mb: section.fake.memory_mb,
        local_gb: section.fake.local_gb,
        ..FakeConfig::default()
    };
    Ok(DriverConfig::named(&section.driver, fake)?)
}

/// Starts this host's compute agent on `bus`. It registers with the conductor in the background (retrying until
/// one answers), so the conductor may start before or after it.
pub async fn start_agent(config: &Config, bus: Bus) -> Result<AgentHandle, Error> {
    let agent = agent_config(config);
    let driver = driver_config(config)?.build()?;
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

        let DriverConfig::Fake(fake) = driver_config(&config).unwrap();
        assert_eq!((fake.vcpus, fake.memory_mb, fake.local_gb), (16, 32768, 1000));
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
        let err = start_agent(&config, bus.clone()).await.unwrap_err().to_string();
        assert!(err.contains("hyperv"), "{err}");

        let mut config = Config::default();
        config.compute_agent.report_interval = 0;
        let err = start_agent(&config, bus.clone()).await.unwrap_err().to_string();
        assert!(err.contains("report_interval"), "{err}");

        let agent = start_agent(&Config::default(), bus).await.unwrap();
        assert_eq!(agent.host(), compute_agent::hostname());
        agent.stop().await;
    }
}
