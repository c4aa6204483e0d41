//! The `stratus` binary in a split deployment: a controller (API, conductor, placement, identity, image) on
//! PostgreSQL and RabbitMQ, and two `stratus compute-agent` processes on the same bus. Servers spread over the
//! hosts by the weighers; a killed agent's service goes down once its heartbeats stop.

mod object_ring;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use test_utils::Client;

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent(host: &str, amqp: &str, data_dir: &std::path::Path) -> Agent {
    let child = Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args(["compute-agent", "--host", host])
        .env("STRATUS_DATA_DIR", data_dir)
        .env("STRATUS_BUS__URL", amqp)
        .env("STRATUS_COMPUTE_AGENT__REPORT_INTERVAL", "1")
        .env("STRATUS_COMPUTE_AGENT__FAKE__MEMORY_MB", "8192")
        .env("STRATUS_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("stratus compute-agent starts");
    Agent(child)
}

async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if let Some(v) = probe().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn service_state(admin: &Client, host: &str) -> Option<String> {
    let services = admin.get("/compute/v2.1/os-services?binary=nova-compute").await.json();
    services["services"].as_array()?.iter().find(|s| s["host"] == host).map(|s| s["state"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_and_two_agents_over_rabbitmq_and_postgresql() {
    let amqp = std::env::var("STRATUS_TEST_AMQP_URL").unwrap_or_else(|_| AMQP.into());
    let Some(test_db) = db::testing::test_database(db::Backend::Postgres).await else {
        assert!(std::env::var_os("STRATUS_TEST_REQUIRE_ALL_DBS").is_none(), "PostgreSQL is required");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = cloud::Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.database.url = Some(test_db.url().to_string());
    config.bus.url = amqp.clone();
    config.identity.password_hash_rounds = 4;
    config.compute.service_down_time = 5;
    let opts = cloud::StartOptions { compute_agent: false, ..cloud::StartOptions::all_in_one() };
    let controller = match cloud::start(config, opts).await {
        Ok(c) => c,
        Err(e) => {
            assert!(std::env::var_os("STRATUS_TEST_REQUIRE_AMQP").is_none(), "RabbitMQ is required: {e}");
            return;
        }
    };
    let creds = controller.credentials.clone().unwrap();
    let admin = Client::new(&controller.url, None).login("admin", &creds.admin_password, "admin").await;
    let member = Client::new(&controller.url, None).login("demo", &creds.demo_password, "demo").await;

    let suffix = uuid_suffix();
    let hosts = [format!("split-a-{suffix}"), format!("split-b-{suffix}")];
    let agent_dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut agents: Vec<Agent> = hosts.iter().zip(&agent_dirs).map(|(h, d)| agent(h, &amqp, d.path())).collect();
    for h in &hosts {
        eventually("the agents to register and heartbeat", async || (service_state(&admin, h).await.as_deref() == Some("up")).then_some(())).await;
    }
    let hypervisors = admin.get("/compute/v2.1/os-hypervisors").await.json();
    assert_eq!(hypervisors["hypervisors"].as_array().unwrap().len(), 2, "{hypervisors}");

    // Four servers of 1 GiB over two 8 GiB hosts: the RAM weigher spreads them two and two.
    let r = member.post("/image/v2/images", &json!({"name": "boot", "disk_format": "raw", "container_format": "bare"})).await;
    let image = r.json()["id"].as_str().unwrap().to_string();
    member.request(reqwest::Method::PUT, &format!("/image/v2/images/{image}/file"), None, &[("content-type", "application/octet-stream")]).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let body = json!({"server": {"name": format!("spread-{i}"), "imageRef": image, "flavorRef": "d2"}});
        let r = member.post("/compute/v2.1/servers", &body).await;
        assert_eq!(r.status, 202, "{}", r.text);
        let id = r.json()["server"]["id"].as_str().unwrap().to_string();
        // One at a time, so each decision sees the previous claim.
        eventually("a server to become ACTIVE", async || {
            let s = admin.get(&format!("/compute/v2.1/servers/{id}")).await.json()["server"].clone();
            assert_ne!(s["status"], "ERROR", "{s}");
            (s["status"] == "ACTIVE").then_some(())
        })
        .await;
        ids.push(id);
    }
    let mut per_host = std::collections::BTreeMap::<String, usize>::new();
    for id in &ids {
        let s: Value = admin.get(&format!("/compute/v2.1/servers/{id}")).await.json()["server"].clone();
        *per_host.entry(s["OS-EXT-SRV-ATTR:host"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(per_host.values().copied().collect::<Vec<_>>(), [2, 2], "{per_host:?}");

    // Kill one agent: its service goes down after service_down_time without heartbeats.
    let killed = agents.remove(0);
    drop(killed);
    eventually("the killed agent's service to go down", async || {
        (service_state(&admin, &hosts[0]).await.as_deref() == Some("down")).then_some(())
    })
    .await;
    assert_eq!(service_state(&admin, &hosts[1]).await.as_deref(), Some("up"));

    for id in &ids {
        assert_eq!(member.delete(&format!("/compute/v2.1/servers/{id}")).await.status, 204);
    }
    drop(agents);
    controller.shutdown().await.unwrap();
    test_db.cleanup().await;
}

fn uuid_suffix() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{:x}", t & 0xffff_ffff)
}
