//! `cargo xtask bench object`: the object store through a release `stratus up`.
//!
//! * Small objects: 1 KiB PUT, GET and DELETE, each op a request on a kept-alive connection, at 1 and 4 concurrent
//!   clients (ops/s and p50/p99 latency). Upstream Swift on this machine (SAIO, one replica) does 118 PUT / 233 GET /
//!   128 DELETE per second sequentially; the goal is at least 20 times that.
//! * Large objects: one 100 MiB and one 1 GiB object PUT (`curl -T`) and GET (`curl -o /dev/null`), against
//!   `md5sum` of the same file in the same run (the MD5 ETag is the per-core limit of a PUT); goal ≥ 90 % of it.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    cores,
    image::{curl, write_source},
    loadavg,
};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Small-object operations per case (split over the clients).
    #[arg(long, default_value_t = 4000)]
    ops: usize,
    /// Large object sizes in MiB.
    #[arg(long, value_delimiter = ',', default_value = "100,1024")]
    large_mib: Vec<u64>,
    /// The binary to measure (default: builds and uses target/release/stratus).
    #[arg(long)]
    bin: Option<PathBuf>,
}

/// Upstream Swift's sequential small-object rates on this machine (ops/s), from the issue.
const SWIFT_SEQUENTIAL: [(&str, f64); 3] = [("PUT", 118.0), ("GET", 233.0), ("DELETE", 128.0)];

pub fn run(args: Args) -> Result<()> {
    let root = crate::workspace_root();
    let bin = crate::release_stratus(&root, args.bin.clone())?;
    let work = std::env::temp_dir().join(format!("stratus-bench-object-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let port = crate::free_port()?;
    let data = work.join("data");
    let server = Command::new(&bin)
        .args(["up", "--data-dir"])
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("STRATUS_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("stratus.log"))?)
        .spawn()
        .context("spawn stratus")?;
    let result = measure(server, port, &data, &work, &args);
    let _ = std::fs::remove_dir_all(&work);
    let (small, large) = result?;
    report(&small, &large, &bin);
    Ok(())
}

struct Small {
    op: &'static str,
    clients: usize,
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

struct Large {
    mib: u64,
    md5sum_secs: f64,
    put_secs: f64,
    get_secs: f64,
}

fn measure(mut server: Child, port: u16, data: &Path, work: &Path, args: &Args) -> Result<(Vec<Small>, Vec<Large>)> {
    let outcome = (|| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while crate::http_status(port, "/identity/v3").ok() != Some(200) {
            if let Some(s) = server.try_wait()? {
                bail!("stratus exited early: {s}");
            }
            if Instant::now() > deadline {
                bail!("stratus was not ready within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let base = format!("http://127.0.0.1:{port}");
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build()?;
        let (token, project) = runtime.block_on(crate::admin_token(&base, data))?;
        let account = format!("AUTH_{project}");
        let container = format!("{base}/object-store/v1/{account}/bench");
        runtime.block_on(async {
            let r = reqwest::Client::new().put(&container).header("x-auth-token", &token).send().await?;
            if !r.status().is_success() {
                bail!("container PUT answered {}", r.status());
            }
            Ok(())
        })?;
        let mut small = Vec::new();
        for clients in [1usize, 4] {
            for op in ["PUT", "GET", "DELETE"] {
                small.push(runtime.block_on(small_case(&container, &token, op, clients, args.ops))?);
            }
        }
        let mut large = Vec::new();
        for &mib in &args.large_mib {
            let file = work.join(format!("large-{mib}"));
            write_source(&file, mib << 20)?;
            md5sum(&file)?; // warm the page cache: every case reads the file hot
            let md5sum_secs = md5sum(&file)?;
            let url = format!("{container}/large-{mib}");
            let started = Instant::now();
            curl(&token, &["-X", "PUT", "-T"], Some(&file), &url, 201, None)?;
            let put_secs = started.elapsed().as_secs_f64();
            let started = Instant::now();
            curl(&token, &[], None, &url, 200, Some(mib << 20))?;
            let get_secs = started.elapsed().as_secs_f64();
            let _ = std::fs::remove_file(&file);
            large.push(Large { mib, md5sum_secs, put_secs, get_secs });
        }
        Ok((small, large))
    })();
    let _ = crate::stop(server);
    outcome
}

/// `ops` operations of one kind over `clients` concurrent clients, each on its own kept-alive connection; object
/// names are shared across the PUT, GET and DELETE cases of one client count.
async fn small_case(container: &str, token: &str, op: &'static str, clients: usize, ops: usize) -> Result<Small> {
    let body = bytes::Bytes::from(vec![b'x'; 1024]);
    let per_client = ops / clients;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (container, token, body) = (container.to_string(), token.to_string(), body.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().pool_max_idle_per_host(1).build()?;
            let mut latencies = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let url = format!("{container}/c{clients}-{c}-{i}");
                let t = Instant::now();
                let req = match op {
                    "PUT" => client.put(&url).body(body.clone()),
                    "GET" => client.get(&url),
                    _ => client.delete(&url),
                };
                let r = req.header("x-auth-token", &token).send().await?;
                let status = r.status().as_u16();
                let got = r.bytes().await?;
                let ok = match op {
                    "PUT" => status == 201,
                    "GET" => status == 200 && got.len() == 1024,
                    _ => status == 204,
                };
                if !ok {
                    bail!("{op} {url}: HTTP {status}");
                }
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut all = Vec::with_capacity(ops);
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Ok(Small { op, clients, ops_per_sec: all.len() as f64 / secs, p50_ms: pct(0.50), p99_ms: pct(0.99) })
}

fn md5sum(file: &Path) -> Result<f64> {
    let started = Instant::now();
    let status = Command::new("md5sum").arg(file).stdout(Stdio::null()).status().context("run md5sum")?;
    if !status.success() {
        bail!("md5sum failed: {status}");
    }
    Ok(started.elapsed().as_secs_f64())
}

fn report(small: &[Small], large: &[Large], bin: &Path) {
    println!();
    println!("object store, {} ({} cores, load {})", bin.display(), cores(), loadavg());
    println!("| 1 KiB op | clients |    ops/s | p50 ms | p99 ms | vs Swift sequential |");
    println!("|----------|---------|----------|--------|--------|---------------------|");
    for s in small {
        let swift = SWIFT_SEQUENTIAL.iter().find(|(op, _)| *op == s.op).map(|(_, r)| *r).unwrap_or(f64::NAN);
        println!(
            "| {:<8} | {:>7} | {:>8.0} | {:>6.2} | {:>6.2} | {:>18.1}× |",
            s.op,
            s.clients,
            s.ops_per_sec,
            s.p50_ms,
            s.p99_ms,
            s.ops_per_sec / swift
        );
    }
    println!("goal: ≥ 20× upstream Swift's sequential rates (118 PUT / 233 GET / 128 DELETE per second)");
    println!();
    println!("| object   | md5sum MB/s | PUT MB/s | PUT vs md5sum | GET MB/s |");
    println!("|----------|-------------|----------|---------------|----------|");
    for l in large {
        let mb = (l.mib << 20) as f64 / 1e6;
        println!(
            "| {:>5} MiB | {:>11.0} | {:>8.0} | {:>12.0} % | {:>8.0} |",
            l.mib,
            mb / l.md5sum_secs,
            mb / l.put_secs,
            100.0 * l.md5sum_secs / l.put_secs,
            mb / l.get_secs
        );
    }
    println!("goal: PUT and GET ≥ 90 % of md5sum's rate (the MD5 ETag is the per-core limit)");
}
