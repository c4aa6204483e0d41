//! `cargo xtask bench compute`: the compute control plane, in one release process built with `cloud::start` (as
//! `stratus up` assembles it, on SQLite and the in-process bus):
//!
//! * scheduling — N fake compute nodes registered through the conductor's own `RegisterNode` handler (service,
//!   node, placement provider and inventory), then 1,000 decisions through `Conductor::schedule` (allocation
//!   candidates from placement over HTTP, host states, filters and weighers, the allocation claim over HTTP):
//!   placements/s and per-decision p50/p99; then 1,000 instances of one multi-create request through one
//!   `Conductor::batch` (candidates asked once, each instance weighed over the hosts as the earlier claims left
//!   them and claimed), as upstream's scheduler handles `min_count`;
//! * API → ACTIVE — `POST /servers` until the server shows ACTIVE, through the conductor and the in-process agent
//!   with the `fake` driver (polled every 2 ms);
//! * `GET /servers/detail` with 1,000 servers of one project.

use std::time::{Duration, Instant};

use crate::percentile;
use anyhow::{Context, Result, anyhow};
use bus::Target;
use compute_rpc::{CONDUCTOR_TOPIC, NodeInfo, NodeResources, RegisterNode};
use serde_json::json;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Host counts to schedule over.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    hosts: Vec<usize>,
    /// Scheduling decisions per host count.
    #[arg(long, default_value_t = 1000)]
    decisions: usize,
    /// Allocation candidates asked of placement per decision (upstream's default is 1,000).
    #[arg(long, value_delimiter = ',', default_value = "1000,50")]
    candidates: Vec<usize>,
    /// Boots measured API → ACTIVE.
    #[arg(long, default_value_t = 100)]
    boots: usize,
    /// Servers listed by `GET /servers/detail`.
    #[arg(long, default_value_t = 1000)]
    servers: usize,
}

pub fn run(args: Args) -> Result<()> {
    let root = crate::workspace_root();
    if crate::reexec_in_release(&root)? {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    runtime.block_on(async {
        println!("| case | hosts | candidates | placements/s | p50 ms | p99 ms | goal |");
        println!("|---|---|---|---|---|---|---|");
        for &hosts in &args.hosts {
            for &limit in &args.candidates {
                scheduling(hosts, limit, args.decisions).await?;
            }
        }
        boots(args.boots).await?;
        detail(args.servers).await?;
        Ok(())
    })
}

async fn start(agent: bool, candidates: usize) -> Result<(cloud::RunningCloud, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let mut config = cloud::Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
    config.server.listen = "127.0.0.1:0".parse()?;
    config.bus.url = format!("memory://bench-{}", std::process::id());
    config.identity.password_hash_rounds = 4;
    config.compute.max_placement_results = candidates;
    config.compute.service_down_time = 3600;
    let opts = cloud::StartOptions { compute_agent: agent, ..cloud::StartOptions::all_in_one() };
    let running = cloud::start(config, opts).await.map_err(|e| anyhow!("cloud start: {e}"))?;
    Ok((running, dir))
}

fn node(host: &str) -> NodeInfo {
    NodeInfo {
        host: host.into(),
        node: host.into(),
        hypervisor_type: "fake".into(),
        hypervisor_version: 1000,
        host_ip: "127.0.0.1".into(),
        cpu_info: json!({}),
        resources: NodeResources {
            vcpus: 64,
            memory_mb: 262144,
            local_gb: 4000,
            cpu_allocation_ratio: 16.0,
            ram_allocation_ratio: 1.5,
            disk_allocation_ratio: 1.0,
            reserved_host_memory_mb: 512,
            ..Default::default()
        },
    }
}

fn instance(uuid: String) -> compute::store::InstanceRow {
    let flavor = compute_rpc::FlavorSpec {
        flavorid: "1".into(),
        name: "m1.tiny".into(),
        vcpus: 1,
        memory_mb: 512,
        root_gb: 1,
        ephemeral_gb: 0,
        swap: 0,
        extra_specs: Default::default(),
    };
    compute::store::InstanceRow {
        reservation_id: "r-bench".into(),
        vm_state: "active".into(),
        task_state: None,
        power_state: 1,
        ..compute::store::InstanceRow::new(uuid, "bench", "bench-project", "bench-user", flavor, "image", 0)
    }
}

async fn scheduling(hosts: usize, candidates: usize, decisions: usize) -> Result<()> {
    let (running, _dir) = start(false, candidates).await?;
    let bus = running.cloud.bus.clone();
    let setup = Instant::now();
    let mut pending = futures::stream::FuturesUnordered::new();
    use futures::StreamExt;
    for i in 0..hosts {
        let bus = bus.clone();
        pending.push(async move {
            let msg = RegisterNode { node: node(&format!("bench-{i:05}")), report_interval_secs: 3600 };
            bus.call(&Target::topic(CONDUCTOR_TOPIC), &msg, Duration::from_secs(120)).await
        });
        if pending.len() >= 16 {
            pending.next().await.transpose().map_err(|e| anyhow!("register: {e}"))?;
        }
    }
    while let Some(r) = pending.next().await {
        r.map_err(|e| anyhow!("register: {e}"))?;
    }
    eprintln!("registered {hosts} nodes in {:.1} s", setup.elapsed().as_secs_f64());
    let compute = running.cloud.compute.clone().context("compute")?;
    let conductor = compute.conductor().map_err(|e| anyhow!("{e}"))?.clone();
    let goal = if hosts >= 10_000 { "≥ 1,000/s" } else { "" };
    // One request per instance (each decision asks placement for candidates), then one multi-create request of
    // `decisions` instances (candidates once, then each instance weighed and claimed).
    for one_request in [false, true] {
        let mut batch = conductor.batch();
        let mut latencies = Vec::with_capacity(decisions);
        let started = Instant::now();
        let mut placed = 0;
        for _ in 0..decisions {
            if !one_request {
                batch = conductor.batch();
            }
            let inst = instance(uuid_v4());
            let t = Instant::now();
            if conductor.schedule_next(&mut batch, &inst).await.map_err(|e| anyhow!("schedule: {e}"))?.is_some() {
                placed += 1;
            }
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let rate = placed as f64 / started.elapsed().as_secs_f64();
        latencies.sort_by(|a, b| a.total_cmp(b));
        let case = if one_request {
            format!("schedule + claim, {decisions} instances in one request")
        } else {
            "schedule + claim, 1 instance per request".to_string()
        };
        println!(
            "| {case} | {hosts} | {candidates} | {rate:.0} | {:.2} | {:.2} | {goal} |",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99)
        );
    }
    running.shutdown().await.map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

fn uuid_v4() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn member(running: &cloud::RunningCloud) -> Result<test_utils::Client> {
    let creds = running.credentials.clone().context("credentials")?;
    Ok(test_utils::Client::new(&running.url, None).login("demo", &creds.demo_password, "demo").await)
}

async fn boot_image(c: &test_utils::Client) -> Result<String> {
    let r = c.post("/image/v2/images", &json!({"name": "boot", "disk_format": "raw", "container_format": "bare"})).await;
    let id = r.json()["id"].as_str().context("image id")?.to_string();
    c.request(reqwest::Method::PUT, &format!("/image/v2/images/{id}/file"), None, &[("content-type", "application/octet-stream")])
        .await;
    Ok(id)
}

async fn boots(n: usize) -> Result<()> {
    let (running, _dir) = start(true, 1000).await?;
    let c = member(&running).await?;
    let image = boot_image(&c).await?;
    // Wait for the agent's node.
    for _ in 0..500 {
        if let Some(compute) = &running.cloud.compute
            && !compute.store().node_list().await.map_err(|e| anyhow!("{e}"))?.is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut latencies = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        let r = c.post("/compute/v2.1/servers", &json!({"server": {"name": format!("b{i}"), "imageRef": image, "flavorRef": "1"}})).await;
        let id = r.json()["server"]["id"].as_str().with_context(|| format!("boot: {}", r.text))?.to_string();
        loop {
            let s = c.get(&format!("/compute/v2.1/servers/{id}")).await.json();
            match s["server"]["status"].as_str() {
                Some("ACTIVE") => break,
                Some("ERROR") => return Err(anyhow!("server went to ERROR: {s}")),
                _ => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        // Stay under the default quota.
        c.delete(&format!("/compute/v2.1/servers/{id}")).await;
        for _ in 0..500 {
            if c.get(&format!("/compute/v2.1/servers/{id}")).await.status == 404 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    println!(
        "| API → ACTIVE (fake driver) | 1 | 1000 | | {:.2} | {:.2} | |",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    running.shutdown().await.map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

async fn detail(n: usize) -> Result<()> {
    let (running, _dir) = start(false, 1000).await?;
    let c = member(&running).await?;
    let project = c.token_body["token"]["project"]["id"].as_str().context("project")?.to_string();
    let compute = running.cloud.compute.clone().context("compute")?;
    let now = chrono::Utc::now().timestamp_micros();
    let rows: Vec<_> = (0..n)
        .map(|i| {
            let mut r = instance(uuid_v4());
            r.project_id = project.clone();
            r.display_name = format!("server-{i}");
            r.created_at = now + i as i64;
            r.updated_at = now + i as i64;
            r.host = Some("bench-host".into());
            r
        })
        .collect();
    let metadata = [("role".to_string(), "bench".to_string())].into();
    compute.store().instances_insert(&rows, &metadata, "req-bench").await.map_err(|e| anyhow!("{e}"))?;
    let mut latencies = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let r = c.get("/compute/v2.1/servers/detail").await;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        let listed = r.json()["servers"].as_array().map(|a| a.len()).unwrap_or(0);
        if listed != n {
            return Err(anyhow!("listed {listed} servers, expected {n}"));
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    println!(
        "| GET /servers/detail | {n} servers | | | {:.2} | {:.2} | |",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    running.shutdown().await.map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
