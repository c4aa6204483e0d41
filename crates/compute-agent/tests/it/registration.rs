//! Registration, heartbeats and resource reports.

use std::sync::Arc;
use std::time::Duration;

use bus::Bus;
use compute_agent::{Agent, FakeDriver};
use compute_rpc::*;
use tokio::time::timeout;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_describes_the_node() {
    bounded(async {
        let url = format!("memory://{}", unique("agent-it"));
        let bus = Bus::connect(&url).await.unwrap();
        let (conductor, mut recorder, _) = stub_conductor(&bus, CONDUCTOR_TOPIC).await;
        let host = unique("host");
        let mut config = agent_config(&host);
        config.my_ip = "192.0.2.7".into();
        config.reserved_host_cpus = 1;
        config.reserved_host_disk_mb = 2048;
        let agent =
            Agent::start(config, Arc::new(FakeDriver::new(fake_config())), Bus::connect(&url).await.unwrap()).unwrap();
        let seen = recorder.until("registration", |s| matches!(s, Seen::Register(_))).await;
        let Some(Seen::Register(register)) = seen.last() else { unreachable!() };
        let node = &register.node;
        assert_eq!((node.host.as_str(), node.node.as_str()), (host.as_str(), host.as_str()));
        assert_eq!((node.hypervisor_type.as_str(), node.hypervisor_version), ("fake", 1000));
        assert_eq!(node.host_ip, "192.0.2.7");
        assert_eq!(node.cpu_info["arch"], "x86_64");
        assert_eq!(
            node.resources,
            NodeResources {
                vcpus: 8,
                memory_mb: 16384,
                local_gb: 200,
                vcpus_used: 1,
                memory_mb_used: 512,
                local_gb_used: 2,
                running_vms: 0,
                cpu_allocation_ratio: 16.0,
                ram_allocation_ratio: 1.5,
                disk_allocation_ratio: 1.0,
                reserved_host_cpus: 1,
                reserved_host_memory_mb: 512,
                reserved_host_disk_mb: 2048,
                supported_instances: vec![["x86_64".into(), "fake".into(), "hvm".into()]],
                failed_builds: 0,
            }
        );
        assert_eq!(register.report_interval_secs, 1);
        let registered = timeout(WAIT, agent.registered()).await.unwrap().unwrap();
        assert_eq!(registered.node_uuid, NODE_UUID);
        assert_eq!(agent.registration(), Some(registered));
        timeout(WAIT, agent.stop()).await.unwrap();
        conductor.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_and_resource_reports_arrive() {
    bounded(async {
        let mut env = Env::start().await;
        let host = env.agent.host().to_owned();
        for _ in 0..2 {
            let seen = env.recorder.until("a heartbeat", |s| matches!(s, Seen::Heartbeat(_))).await;
            let Some(Seen::Heartbeat(beat)) = seen.last() else { unreachable!() };
            assert_eq!((beat.host.as_str(), beat.binary.as_str()), (host.as_str(), COMPUTE_BINARY));
        }
        let seen = env.recorder.until("a resource report", |s| matches!(s, Seen::Resources(_))).await;
        let Some(Seen::Resources(report)) = seen.last() else { unreachable!() };
        assert_eq!((report.host.as_str(), report.node.as_str()), (host.as_str(), host.as_str()));
        assert_eq!((report.resources.memory_mb_used, report.resources.running_vms), (512, 0));

        // A guest's flavor shows up in a later report.
        let vm = instance("counted");
        env.build(&vm).await;
        env.recorder
            .until("a report with the guest", |s| {
                matches!(s, Seen::Resources(r) if r.resources.running_vms == 1
                    && r.resources.memory_mb_used == 512 + 128
                    && r.resources.vcpus_used == 1
                    && r.resources.local_gb_used == 1)
            })
            .await;
        env.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_retried_until_a_conductor_appears() {
    bounded(async {
        let url = format!("memory://{}", unique("agent-it"));
        let agent_bus = Bus::connect(&url).await.unwrap();
        let agent =
            Agent::start(agent_config(&unique("host")), Arc::new(FakeDriver::new(fake_config())), agent_bus).unwrap();
        // No conductor yet: the agent keeps trying, and serves nothing.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(agent.registration(), None);

        let bus = Bus::connect(&url).await.unwrap();
        let (conductor, mut recorder, _) = stub_conductor(&bus, CONDUCTOR_TOPIC).await;
        let registered = timeout(WAIT, agent.registered()).await.expect("the agent registers").unwrap();
        assert_eq!(registered.node_uuid, NODE_UUID);
        recorder.until("registration", |s| matches!(s, Seen::Register(_))).await;
        recorder.until("a heartbeat", |s| matches!(s, Seen::Heartbeat(_))).await;
        timeout(WAIT, agent.stop()).await.unwrap();
        conductor.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_waiting_for_a_conductor_stops_cleanly() {
    bounded(async {
        let url = format!("memory://{}", unique("agent-it"));
        let agent = Agent::start(
            agent_config(&unique("host")),
            Arc::new(FakeDriver::new(fake_config())),
            Bus::connect(&url).await.unwrap(),
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        timeout(WAIT, agent.stop()).await.expect("stop does not wait for a conductor");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conductor_that_forgot_the_node_gets_it_registered_again() {
    bounded(async {
        let mut env = Env::start().await;
        env.recorder.until("a heartbeat", |s| matches!(s, Seen::Heartbeat(_))).await;
        env.behaviour.forget_node();
        env.recorder.until("a new registration", |s| matches!(s, Seen::Register(_))).await;
        // Heartbeats go on, and are accepted again.
        env.recorder.until("a heartbeat", |s| matches!(s, Seen::Heartbeat(_))).await;
        assert!(env.agent.registration().is_some());
        env.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_settings_are_refused_at_start() {
    let bus = Bus::connect(&format!("memory://{}", unique("agent-it"))).await.unwrap();
    let mut config = agent_config("h");
    config.report_interval = Duration::ZERO;
    let err = Agent::start(config, Arc::new(FakeDriver::new(fake_config())), bus).unwrap_err();
    assert!(err.to_string().contains("report_interval"), "{err}");
}
