//! `cargo xtask bench placement`: `GET /allocation_candidates` latency and `PUT /allocations/{consumer}`
//! throughput against a release `stratus up` on a fresh data dir, at 1,000 and 10,000 resource providers (each with
//! VCPU, MEMORY_MB and DISK_GB inventory, created through the HTTP API by several concurrent clients), at 1 and 4
//! concurrent clients. Latencies are client-side (reqwest, keep-alive, one connection per client).
//!
//! Like `bench identity`, a debug build of xtask builds the release binaries and re-executes itself as
//! `target/release/xtask`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{percentile, verdict};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

const MICROVERSION: &str = "placement 1.20";
const CANDIDATES: &str = "/allocation_candidates?resources=VCPU:1,MEMORY_MB:512,DISK_GB:10&limit=50";
const CONCURRENCY: [usize; 2] = [1, 4];

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// The stratus binary (default: builds and uses target/release/stratus).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Provider counts to measure at, in increasing order.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    providers: Vec<usize>,
    /// Requests per candidates case.
    #[arg(long, default_value_t = 500)]
    reads: usize,
    /// Allocation writes per write case.
    #[arg(long, default_value_t = 2000)]
    writes: usize,
    /// Time limit per case in seconds.
    #[arg(long, default_value_t = 20)]
    case_seconds: u64,
    /// Concurrent clients creating providers.
    #[arg(long, default_value_t = 8)]
    setup_clients: usize,
}

/// One measured row.
struct Row {
    providers: usize,
    case: &'static str,
    clients: usize,
    /// Sorted client-side latencies in ms.
    latencies: Vec<f64>,
    throughput: f64,
}

pub fn run(args: Args) -> Result<()> {
    let root = crate::workspace_root();
    if crate::reexec_in_release(&root)? {
        return Ok(());
    }
    let bin = crate::release_stratus(&root, args.bin.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    runtime.block_on(async {
        let work = std::env::temp_dir().join(format!("stratus-bench-placement-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        let (mut process, api) = start(&bin, &work).await?;
        let result = measure(&Arc::new(api), &args).await;
        let _ = process.kill();
        let _ = process.wait();
        let _ = std::fs::remove_dir_all(&work);
        report(&bin, &result?);
        Ok(())
    })
}


/// The placement API of the server under test, with an admin token.
struct Api {
    /// `http://127.0.0.1:PORT`
    base: String,
    token: String,
}

/// Starts `stratus up` on a fresh data dir and gets an admin token.
async fn start(bin: &Path, work: &Path) -> Result<(Child, Api)> {
    let port = crate::free_port()?;
    let data = work.join("data");
    let mut process = Command::new(bin)
        .args(["up", "--data-dir"])
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("STRATUS_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("stratus.log"))?)
        .spawn()
        .context("spawn stratus")?;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{base}/placement/")).send().await
            && r.status().is_success()
        {
            break;
        }
        if let Some(status) = process.try_wait()? {
            bail!("stratus exited early: {status}");
        }
        if Instant::now() > deadline {
            let _ = process.kill();
            bail!("stratus was not ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (token, _) = crate::admin_token(&base, &data).await?;
    Ok((process, Api { base, token }))
}

impl Api {

    /// One placement call; fails unless the status is `expect`.
    async fn call(&self, client: &reqwest::Client, method: reqwest::Method, path: &str, body: Option<&Value>, expect: u16) -> Result<()> {
        let mut req = client
            .request(method, format!("{}/placement{path}", self.base))
            .header("X-Auth-Token", &self.token)
            .header("OpenStack-API-Version", MICROVERSION);
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await?;
        if r.status().as_u16() != expect {
            bail!("{path}: answered {} (expected {expect}): {}", r.status(), r.text().await.unwrap_or_default());
        }
        let _ = r.bytes().await?;
        Ok(())
    }
}

fn provider_uuid(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// Creates providers `from..to` with inventory, `clients` at a time.
async fn create_providers(server: &Arc<Api>, from: usize, to: usize, clients: usize) -> Result<()> {
    let next = Arc::new(AtomicUsize::new(from));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (server, next) = (server.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= to {
                    return Ok::<_, anyhow::Error>(());
                }
                let uuid = provider_uuid(i);
                let body = json!({"uuid": uuid, "name": format!("bench-node-{i}")});
                server.call(&client, reqwest::Method::POST, "/resource_providers", Some(&body), 200).await?;
                let inv = json!({"resource_provider_generation": 0, "inventories": {
                    "VCPU": {"total": 64, "allocation_ratio": 4.0},
                    "MEMORY_MB": {"total": 262144, "allocation_ratio": 1.0},
                    "DISK_GB": {"total": 4000, "allocation_ratio": 1.0}}});
                server.call(&client, reqwest::Method::PUT, &format!("/resource_providers/{uuid}/inventories"), Some(&inv), 200).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn measure(server: &Arc<Api>, args: &Args) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut have = 0;
    let consumers = Arc::new(AtomicUsize::new(0));
    for &n in &args.providers {
        if n > have {
            let t = Instant::now();
            create_providers(server, have, n, args.setup_clients).await?;
            eprintln!("created providers {have}..{n} in {:.1} s", t.elapsed().as_secs_f64());
            have = n;
        }
        for clients in CONCURRENCY {
            let (latencies, throughput) = run_case(server, clients, args.reads, args.case_seconds, |server, client| {
                Box::pin(async move { server.call(&client, reqwest::Method::GET, CANDIDATES, None, 200).await })
            })
            .await?;
            rows.push(Row { providers: n, case: "GET /allocation_candidates (limit=50)", clients, latencies, throughput });
        }
        for clients in CONCURRENCY {
            let consumers = consumers.clone();
            let (latencies, throughput) = run_case(server, clients, args.writes, args.case_seconds, move |server, client| {
                let c = consumers.fetch_add(1, Ordering::Relaxed);
                Box::pin(async move {
                    let consumer = format!("10000000-0000-4000-8000-{c:012}");
                    let rp = provider_uuid(c % n);
                    let body = json!({
                        "allocations": {rp: {"resources": {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 10}}},
                        "project_id": "bench-project", "user_id": "bench-user"});
                    server.call(&client, reqwest::Method::PUT, &format!("/allocations/{consumer}"), Some(&body), 204).await
                })
            })
            .await?;
            rows.push(Row { providers: n, case: "PUT /allocations/{consumer}", clients, latencies, throughput });
        }
    }
    Ok(rows)
}

type Call = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// Runs `total` calls (or until the time limit) over `clients` connections; returns sorted latencies in ms and
/// calls per second.
async fn run_case<F>(server: &Arc<Api>, clients: usize, total: usize, seconds: u64, call: F) -> Result<(Vec<f64>, f64)>
where
    F: Fn(Arc<Api>, reqwest::Client) -> Call + Send + Sync + 'static,
{
    let call = Arc::new(call);
    let clients: Vec<reqwest::Client> = (0..clients).map(|_| reqwest::Client::new()).collect();
    for client in &clients {
        for _ in 0..3 {
            call(server.clone(), client.clone()).await?; // warm-up: connections, caches
        }
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for client in clients {
        let (server, next, call) = (server.clone(), next.clone(), call.clone());
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                let t = Instant::now();
                call(server.clone(), client.clone()).await?;
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, anyhow::Error>(times)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let wall = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let rate = all.len() as f64 / wall;
    Ok((all, rate))
}

fn report(bin: &Path, rows: &[Row]) {
    println!();
    println!("placement ({}; {} cores; client-side latencies)", bin.display(), std::thread::available_parallelism().map_or(1, |n| n.get()));
    println!("| providers | case                                  | clients |  p50 ms |  p99 ms |   req/s | goal                  |");
    println!("|-----------|---------------------------------------|---------|---------|---------|---------|-----------------------|");
    for r in rows {
        let goal = match (r.case.starts_with("GET"), r.providers, r.clients) {
            (true, 10_000, _) => format!("p50 < 5 ms: {}", verdict(percentile(&r.latencies, 0.5) < 5.0)),
            (false, _, _) => format!("≥ 2000/s: {}", verdict(r.throughput >= 2000.0)),
            _ => String::new(),
        };
        println!(
            "| {:>9} | {:<37} | {:>7} | {:>7.3} | {:>7.3} | {:>7.0} | {:<21} |",
            r.providers,
            r.case,
            r.clients,
            percentile(&r.latencies, 0.5),
            percentile(&r.latencies, 0.99),
            r.throughput,
            goal
        );
    }
}
