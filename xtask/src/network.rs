//! `cargo xtask bench network`: the network service's port path, in one release process built with `cloud::start`
//! (as `stratus up` assembles it, on SQLite and the in-process bus), driven over HTTP:
//!
//! * port create and delete on a /24 at 1 and 4 concurrent clients: ports/s and per-call p50/p99;
//! * a /16 filled with 10,000 ports by 4 clients, timed per 1,000: the allocation rate must not fall as the subnet
//!   fills; afterwards every port's address is checked (one address each, all distinct, all inside the subnet).

use std::{
    collections::HashSet,
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use anyhow::{Context, Result, anyhow, bail};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Ports created (then deleted) per concurrency level in the create/delete case.
    #[arg(long, default_value_t = 1000)]
    ports: usize,
    /// Ports put on the /16 in the fill case.
    #[arg(long, default_value_t = 10_000)]
    fill: usize,
    /// Ports per timed batch of the fill case.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Clients creating ports at once in the fill case.
    #[arg(long, default_value_t = 4)]
    fill_clients: usize,
    /// The database to run on (an empty one), instead of a SQLite file in a temporary directory.
    #[arg(long)]
    database_url: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let root = crate::workspace_root();
    if crate::reexec_in_release(&root)? {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let mut config = cloud::Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
        config.server.listen = "127.0.0.1:0".parse()?;
        config.bus.url = format!("memory://bench-network-{}", std::process::id());
        config.identity.password_hash_rounds = 4;
        config.database.url = args.database_url.clone();
        let running = cloud::start(config, cloud::StartOptions::all_in_one()).await.map_err(|e| anyhow!("cloud start: {e}"))?;
        let result = measure(&running, &args).await;
        running.shutdown().await.map_err(|e| anyhow!("{e}"))?;
        result
    })
}

async fn measure(running: &cloud::RunningCloud, args: &Args) -> Result<()> {
    let creds = running.credentials.clone().context("credentials")?;
    let admin = test_utils::Client::new(&running.url, None).login("admin", &creds.admin_password, "admin").await;
    let project = admin.token_body["token"]["project"]["id"].as_str().context("project id")?.to_string();
    // Neutron's default port quota (500) would end the fill case early.
    let r = admin.request(reqwest::Method::PUT, &format!("/networking/v2.0/quotas/{project}"), Some(&json!({"quota": {"port": -1}})), &[]).await;
    if r.status != StatusCode::OK {
        bail!("quota update answered {}: {}", r.status, r.text);
    }
    let admin = Arc::new(admin);

    println!();
    let database = args.database_url.as_deref().and_then(|u| u.split(':').next()).unwrap_or("sqlite");
    println!("network ({} cores; {database}; client-side latencies over HTTP, in one process)", crate::cores());
    println!("| case | clients | ports | ports/s | p50 ms | p99 ms | note |");
    println!("|---|---|---|---|---|---|---|");

    let (net, _) = network(&admin, "bench-small", "10.1.0.0/24").await?;
    for clients in [1, 4] {
        let (ids, mut times, rate) = create_ports(&admin, &net, args.ports.min(250), clients).await?;
        row("port create (/24)", clients, ids.len(), rate, &mut times, "");
        let (mut times, rate) = delete_ports(&admin, ids, clients).await?;
        row("port delete (/24)", clients, args.ports.min(250), rate, &mut times, "");
    }
    let (net, _) = network(&admin, "bench-churn", "10.2.0.0/16").await?;
    for clients in [1, 4] {
        let (ids, mut times, rate) = create_ports(&admin, &net, args.ports, clients).await?;
        row("port create (/16)", clients, ids.len(), rate, &mut times, "");
        let (mut times, rate) = delete_ports(&admin, ids, clients).await?;
        row("port delete (/16)", clients, args.ports, rate, &mut times, "");
    }

    let (net, cidr) = network(&admin, "bench-fill", "10.3.0.0/16").await?;
    let mut rates = Vec::new();
    let mut created = 0;
    while created < args.fill {
        let n = args.batch.min(args.fill - created);
        let (_, mut times, rate) = create_ports(&admin, &net, n, args.fill_clients).await?;
        created += n;
        rates.push(rate);
        row(&format!("fill /16: ports {}..{}", created - n, created), args.fill_clients, n, rate, &mut times, "");
    }
    let addresses = fill_check(&admin, &net, cidr).await?;
    let (first, last) = (rates[0], rates[rates.len() - 1]);
    println!(
        "\nfill /16: {} ports, {} distinct addresses, all inside {}; last batch at {:.0}% of the first's rate (goal: no slowdown, ≥ 80%: {})",
        created,
        addresses,
        "10.3.0.0/16",
        100.0 * last / first,
        crate::verdict(last >= 0.8 * first)
    );
    if addresses != created {
        bail!("{created} ports but {addresses} distinct addresses");
    }
    Ok(())
}

fn row(case: &str, clients: usize, ports: usize, rate: f64, times: &mut [f64], note: &str) {
    times.sort_by(f64::total_cmp);
    println!(
        "| {case} | {clients} | {ports} | {rate:.0} | {:.2} | {:.2} | {note} |",
        crate::percentile(times, 0.5),
        crate::percentile(times, 0.99)
    );
}

/// Creates a network with one IPv4 subnet; returns the network id and the subnet's prefix.
async fn network(admin: &test_utils::Client, name: &str, cidr: &str) -> Result<(String, (Ipv4Addr, u8))> {
    let r = admin.post("/networking/v2.0/networks", &json!({"network": {"name": name}})).await;
    let net = r.json()["network"]["id"].as_str().with_context(|| format!("network create: {}", r.text))?.to_string();
    let r = admin
        .post("/networking/v2.0/subnets", &json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": cidr, "name": name}}))
        .await;
    if r.status != StatusCode::CREATED {
        bail!("subnet create answered {}: {}", r.status, r.text);
    }
    let (addr, len) = cidr.split_once('/').context("cidr")?;
    Ok((net, (addr.parse()?, len.parse()?)))
}

/// Creates `n` ports on `net` over `clients` connections: their ids, per-call ms and ports/s.
async fn create_ports(admin: &Arc<test_utils::Client>, net: &str, n: usize, clients: usize) -> Result<(Vec<String>, Vec<f64>, f64)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (admin, next, net) = (admin.clone(), next.clone(), net.to_string());
        tasks.push(tokio::spawn(async move {
            let (mut ids, mut times) = (Vec::new(), Vec::new());
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let t = Instant::now();
                let r = admin.post("/networking/v2.0/ports", &json!({"port": {"network_id": net}})).await;
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                let id = r.json()["port"]["id"].as_str().map(str::to_string);
                ids.push(id.with_context(|| format!("port create answered {}: {}", r.status, r.text))?);
            }
            Ok::<_, anyhow::Error>((ids, times))
        }));
    }
    let (mut ids, mut times) = (Vec::new(), Vec::new());
    for t in tasks {
        let (i, l) = t.await??;
        ids.extend(i);
        times.extend(l);
    }
    let rate = ids.len() as f64 / started.elapsed().as_secs_f64();
    Ok((ids, times, rate))
}

/// Deletes `ids` over `clients` connections: per-call ms and ports/s.
async fn delete_ports(admin: &Arc<test_utils::Client>, ids: Vec<String>, clients: usize) -> Result<(Vec<f64>, f64)> {
    let total = ids.len();
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (admin, next, ids) = (admin.clone(), next.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else { return Ok::<_, anyhow::Error>(times) };
                let t = Instant::now();
                let r = admin.delete(&format!("/networking/v2.0/ports/{id}")).await;
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                if r.status != StatusCode::NO_CONTENT {
                    bail!("port delete answered {}: {}", r.status, r.text);
                }
            }
        }));
    }
    let mut times = Vec::new();
    for t in tasks {
        times.extend(t.await??);
    }
    Ok((times, total as f64 / started.elapsed().as_secs_f64()))
}

/// Reads every port of `net` (paged) and checks each has one address inside `cidr`, all distinct; returns how
/// many distinct addresses there are.
async fn fill_check(admin: &test_utils::Client, net: &str, (base, len): (Ipv4Addr, u8)) -> Result<usize> {
    let mask = u32::MAX << (32 - len);
    let mut seen = HashSet::new();
    let mut marker: Option<String> = None;
    loop {
        let mut path = format!("/networking/v2.0/ports?network_id={net}&limit=2000&fields=id&fields=fixed_ips");
        if let Some(m) = &marker {
            path.push_str(&format!("&marker={m}"));
        }
        let page = admin.get(&path).await.json();
        let ports = page["ports"].as_array().context("ports")?;
        for p in ports {
            let ips: Vec<&Value> = p["fixed_ips"].as_array().context("fixed_ips")?.iter().collect();
            if ips.len() != 1 {
                bail!("port {} has {} addresses", p["id"], ips.len());
            }
            let ip: Ipv4Addr = ips[0]["ip_address"].as_str().context("ip_address")?.parse()?;
            if u32::from(ip) & mask != u32::from(base) & mask {
                bail!("{ip} is outside {base}/{len}");
            }
            if !seen.insert(ip) {
                bail!("{ip} is handed out twice");
            }
        }
        match ports.last() {
            Some(p) if ports.len() == 2000 => marker = p["id"].as_str().map(str::to_string),
            _ => return Ok(seen.len()),
        }
    }
}
