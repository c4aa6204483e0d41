//! The agent over RabbitMQ. Uses `STRATUS_TEST_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2F`); skipped
//! with a note when RabbitMQ is unreachable, unless `STRATUS_TEST_REQUIRE_AMQP=1`. The agent's topics are unique
//! to the test, so it shares the broker with anything else.

use std::time::Duration;

use bus::Bus;
use compute_rpc::*;
use tokio::time::timeout;

use crate::support::*;

const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2F";

/// The AMQP URL if RabbitMQ answers there; `None` (skip) if not, unless AMQP is required.
async fn reachable_amqp_url() -> Option<String> {
    let url = std::env::var("STRATUS_TEST_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned());
    let why = match timeout(Duration::from_secs(15), Bus::connect(&url)).await {
        Ok(Ok(bus)) => {
            bus.close().await;
            return Some(url);
        }
        Ok(Err(error)) => error.to_string(),
        Err(_) => "connecting timed out".to_owned(),
    };
    let required = std::env::var("STRATUS_TEST_REQUIRE_AMQP").is_ok_and(|v| v == "1");
    assert!(!required, "STRATUS_TEST_REQUIRE_AMQP=1 but RabbitMQ is unreachable ({why})");
    eprintln!(
        "note: skipping AMQP test: RabbitMQ is unreachable ({why}) (set STRATUS_TEST_REQUIRE_AMQP=1 to fail instead)"
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_rabbitmq_builds_reports_and_terminates() {
    let Some(url) = reachable_amqp_url().await else { return };
    bounded(async {
        let mut config = agent_config(&unique("host"));
        config.compute_topic = unique("compute");
        config.conductor_topic = unique("conductor");
        let mut env = Env::start_with(&url, config).await;
        env.recorder.until("a heartbeat", |s| matches!(s, Seen::Heartbeat(_))).await;

        let vm = instance("rabbit");
        let seen = env.build(&vm).await;
        let (last, _, applied) = updates(&seen).pop().unwrap();
        assert!(applied);
        assert_eq!(last.vm_state.as_deref(), Some(vm_state::ACTIVE));

        let seen = env.act(&vm, Action::Stop).await;
        assert_eq!(updates(&seen)[0].0.power_state, Some(PowerState::Shutdown));

        let tail = env.call(&GetConsoleOutput { uuid: vm.uuid.clone(), length: Some(1) }).await.unwrap();
        assert!(tail.ends_with("] reboot: Power down") && !tail.contains('\n'), "{tail}");

        let seen = env.terminate(&vm.uuid).await;
        assert!(seen.iter().any(|s| matches!(s, Seen::Terminated(_))), "{seen:#?}");
        env.stop().await;
    })
    .await
}
