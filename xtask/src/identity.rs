//! `cargo xtask bench identity`: latency and throughput of token issue (password), token validation
//! (`GET /v3/auth/tokens` with `X-Subject-Token`) and `GET /v3/users` with 1,000 users, at 1 and 4 concurrent
//! clients, against `stratus up` on a fresh data dir and — when `bench/keystone/setup` has been run — against
//! upstream Keystone on the same machine (one after the other, so they never share the CPU).
//!
//! Client-side numbers come from reqwest with keep-alive (one connection per client). Server-side numbers come
//! from the servers' own logs: Stratus's `request served` lines (`elapsed_ms`, JSON log format) and gunicorn's
//! access log (request time in µs) for Keystone. Each case is bounded by a request count and a time limit.
//!
//! The benchmark client must be optimised (it measures sub-millisecond latencies), so a debug build of xtask builds
//! the release binaries and re-executes itself as `target/release/xtask`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{cores, loadavg, percentile, verdict};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// Set in the environment of the re-executed release xtask: the binaries are already built.
const USER_PREFIX: &str = "bench-user-";

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Run `bench/keystone/setup` (idempotent) and benchmark upstream Keystone too. Without this flag Keystone is
    /// benchmarked when bench/keystone/.work is already set up.
    #[arg(long, conflicts_with = "no_keystone")]
    keystone: bool,
    /// Benchmark Stratus only.
    #[arg(long)]
    no_keystone: bool,
    /// The stratus binary (default: builds and uses target/release/stratus).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Users that exist for the list case.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Requests per validate case.
    #[arg(long, default_value_t = 2000)]
    validates: usize,
    /// Requests per issue case.
    #[arg(long, default_value_t = 200)]
    issues: usize,
    /// Requests per user-list case.
    #[arg(long, default_value_t = 200)]
    lists: usize,
    /// Time limit per case in seconds (a case stops early when it is reached).
    #[arg(long, default_value_t = 20)]
    case_seconds: u64,
    /// Keystone's gunicorn sync workers.
    #[arg(long, default_value_t = 4)]
    keystone_workers: usize,
}

const CONCURRENCY: [usize; 2] = [1, 4];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    Issue,
    Validate,
    ListUsers,
}

impl Case {
    const ALL: [Case; 3] = [Case::Issue, Case::Validate, Case::ListUsers];

    fn label(self) -> &'static str {
        match self {
            Case::Issue => "token issue (password)",
            Case::Validate => "token validate",
            Case::ListUsers => "GET /v3/users",
        }
    }

    /// Method and path suffix as they appear in the server logs.
    fn route(self) -> (&'static str, &'static str) {
        match self {
            Case::Issue => ("POST", "/v3/auth/tokens"),
            Case::Validate => ("GET", "/v3/auth/tokens"),
            Case::ListUsers => ("GET", "/v3/users"),
        }
    }
}

/// One server under test.
struct Target {
    name: &'static str,
    /// `http://127.0.0.1:PORT/.../v3`
    base: String,
    password: String,
    log: PathBuf,
    process: Child,
}

/// The results of one case at one concurrency.
struct Sample {
    /// Client-side latencies in ms, sorted.
    client: Vec<f64>,
    /// Server-side latencies in ms, sorted.
    server: Vec<f64>,
    /// Requests per second over the wall time of the case.
    throughput: f64,
}

/// What a target produced: a sample per (case, concurrency), or why a case is missing.
struct Results {
    samples: Vec<(Case, usize, Sample)>,
    pending: Vec<(Case, String)>,
}

impl Results {
    fn get(&self, case: Case, concurrency: usize) -> Option<&Sample> {
        self.samples
            .iter()
            .find(|(c, n, _)| *c == case && *n == concurrency)
            .map(|(_, _, s)| s)
    }

    fn pending(&self, case: Case) -> Option<&str> {
        self.pending
            .iter()
            .find(|(c, _)| *c == case)
            .map(|(_, why)| why.as_str())
    }
}

pub fn run(args: Args) -> Result<()> {
    let root = crate::workspace_root();
    let keystone_dir = root.join("bench/keystone");
    if crate::reexec_in_release(&root)? {
        return Ok(());
    }
    let bin = crate::release_stratus(&root, args.bin.clone())?;
    if args.keystone {
        let status = Command::new(keystone_dir.join("setup"))
            .status()
            .context("run bench/keystone/setup")?;
        if !status.success() {
            bail!("bench/keystone/setup failed ({status})");
        }
    }
    let with_keystone = !args.no_keystone
        && keystone_dir.join(".work/venv/bin/gunicorn").exists()
        && keystone_dir.join(".work/keystone.db").exists();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(async {
        let started = Instant::now();
        let bcrypt_ms = bcrypt_cost(12, 5).await?;
        let work =
            std::env::temp_dir().join(format!("stratus-bench-identity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;

        let stratus = start_stratus(&bin, &work, None).await?;
        let stratus_results = measure(stratus, &args).await;
        let _ = std::fs::remove_dir_all(&work);
        let stratus_results = stratus_results?;
        let overhead = issue_overhead(&bin, &work, &args).await?;
        let _ = std::fs::remove_dir_all(&work);

        let keystone = if with_keystone {
            let target = start_keystone(&keystone_dir, args.keystone_workers).await?;
            Some(measure(target, &args).await?)
        } else {
            None
        };
        let keystone_version = with_keystone
            .then(|| keystone_version(&keystone_dir))
            .flatten();
        report(
            &args,
            &bin,
            bcrypt_ms,
            &stratus_results,
            overhead,
            keystone.as_ref(),
            keystone_version.as_deref(),
            with_keystone,
        );
        println!(
            "\n(benchmark took {:.0} s)",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    })
}


/// The bcrypt cost of the overhead measurement: low enough that bcrypt's own spread (several ms at cost 12) does
/// not hide the rest of the request.
const LOW_COST: u32 = 4;

/// Token issue minus bcrypt, server-side p50 at one client, measured on a cloud whose passwords are hashed at
/// [`LOW_COST`]: (issue p50, bcrypt p50) in ms.
async fn issue_overhead(bin: &Path, work: &Path, args: &Args) -> Result<(f64, f64)> {
    std::fs::create_dir_all(work)?;
    let bcrypt_ms = bcrypt_cost(LOW_COST, 200).await?;
    let target = start_stratus(bin, work, Some(LOW_COST)).await?;
    let request = Request {
        case: Case::Issue,
        base: target.base.clone(),
        admin: String::new(),
        subject: String::new(),
        body: Arc::new(serde_json::to_vec(&password_body(&target.password))?),
    };
    eprintln!("Stratus: token issue at bcrypt cost {LOW_COST} × 1…");
    let sample = run_case(&target, &request, 1, args.issues.max(500), Duration::from_secs(args.case_seconds)).await;
    let pid = target.process.id();
    let stopped = tokio::task::spawn_blocking(move || crate::stop(target.process)).await?;
    let sample = sample?;
    stopped.with_context(|| format!("stopping Stratus (pid {pid})"))?;
    Ok((percentile(&sample.server, 0.5), bcrypt_ms))
}

/// Median wall time of one bcrypt hash at `cost`, in ms, measured in this process.
async fn bcrypt_cost(cost: u32, runs: usize) -> Result<f64> {
    tokio::task::spawn_blocking(move || {
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            bcrypt::hash("correct horse battery staple", cost)?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        Ok(percentile(&times, 0.5))
    })
    .await?
}

/// Starts `stratus up` on a fresh data dir under `work`; `hash_rounds` overrides the bcrypt cost of its passwords.
async fn start_stratus(bin: &Path, work: &Path, hash_rounds: Option<u32>) -> Result<Target> {
    let port = crate::free_port()?;
    let data = work.join("data");
    let log = work.join("stratus.log");
    let mut command = Command::new(bin);
    if let Some(rounds) = hash_rounds {
        command.env("STRATUS_IDENTITY__PASSWORD_HASH_ROUNDS", rounds.to_string());
    }
    let process = command
        .args(["up", "--data-dir"])
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("STRATUS_LOG__FORMAT", "json")
        .env("STRATUS_LOG__LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("spawn stratus")?;
    let base = format!("http://127.0.0.1:{port}/identity/v3");
    let mut target = Target {
        name: "Stratus",
        base,
        password: String::new(),
        log,
        process,
    };
    wait_ready(&mut target).await?;
    target.password = crate::admin_password(&data)?;
    Ok(target)
}

async fn start_keystone(dir: &Path, workers: usize) -> Result<Target> {
    let port = crate::free_port()?;
    let log = dir.join(".work/log/access.log");
    let process = Command::new(dir.join("serve"))
        .args([port.to_string(), workers.to_string()])
        .stdout(std::fs::File::create(&log)?)
        .stderr(Stdio::null())
        .spawn()
        .context("spawn bench/keystone/serve")?;
    let password = std::fs::read_to_string(dir.join(".work/admin-password"))
        .context("read Keystone admin password")?;
    let base = format!("http://127.0.0.1:{port}/v3");
    let mut target = Target {
        name: "Keystone",
        base,
        password: password.trim().to_string(),
        log,
        process,
    };
    wait_ready(&mut target).await?;
    Ok(target)
}

fn keystone_version(dir: &Path) -> Option<String> {
    let site = dir.join(".work/venv/lib");
    for py in std::fs::read_dir(site).ok()?.flatten() {
        for entry in std::fs::read_dir(py.path().join("site-packages"))
            .ok()?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(v) = name
                .strip_prefix("keystone-")
                .and_then(|n| n.strip_suffix(".dist-info"))
            {
                return Some(v.to_string());
            }
        }
    }
    None
}

async fn wait_ready(target: &mut Target) -> Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(&target.base).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if let Some(status) = target.process.try_wait()? {
            bail!(
                "{} exited early: {status} (log: {})",
                target.name,
                target.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = target.process.kill();
    bail!("{} was not ready within 60 s", target.name)
}

fn password_body(password: &str) -> Value {
    json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}
    }})
}

async fn issue_token(client: &reqwest::Client, target: &Target) -> Result<String> {
    let r = client
        .post(format!("{}/auth/tokens", target.base))
        .json(&password_body(&target.password))
        .send()
        .await?;
    if r.status() != 201 {
        bail!(
            "{}: token issue answered {}: {}",
            target.name,
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    let token = r
        .headers()
        .get("x-subject-token")
        .context("no X-Subject-Token")?
        .to_str()?
        .to_string();
    Ok(token)
}

/// Makes sure `count` users named `bench-user-NNNN` exist. Users get no password: creation then costs no bcrypt.
/// Returns Err(reason) when the server has no users API.
async fn ensure_users(
    client: &reqwest::Client,
    target: &Target,
    token: &str,
    count: usize,
) -> Result<Result<(), String>> {
    let r = client
        .get(format!("{}/users", target.base))
        .header("x-auth-token", token)
        .send()
        .await?;
    let status = r.status();
    if status == 404 || status == 405 || status == 501 {
        return Ok(Err(format!("pending: GET /v3/users answers {status}")));
    }
    if !status.is_success() {
        bail!("{}: GET /v3/users answered {status}", target.name);
    }
    let body: Value = r.json().await?;
    let existing: std::collections::HashSet<String> = body["users"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u["name"].as_str().map(str::to_string))
        .collect();
    let missing: Vec<String> = (0..count)
        .map(|i| format!("{USER_PREFIX}{i:04}"))
        .filter(|n| !existing.contains(n))
        .collect();
    let missing = Arc::new(missing);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (client, missing, next) = (client.clone(), missing.clone(), next.clone());
        let (url, token) = (format!("{}/users", target.base), token.to_string());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(name) = missing.get(i) else {
                    return Ok::<_, anyhow::Error>(None);
                };
                let body = json!({"user": {"name": name, "domain_id": "default", "enabled": true}});
                let r = client
                    .post(&url)
                    .header("x-auth-token", &token)
                    .json(&body)
                    .send()
                    .await?;
                let status = r.status();
                if status == 404 || status == 405 || status == 501 {
                    return Ok(Some(format!("pending: POST /v3/users answers {status}")));
                }
                // 409: left by an earlier run whose list we could not see in full.
                if status != 201 && status != 409 {
                    bail!(
                        "POST /v3/users answered {status}: {}",
                        r.text().await.unwrap_or_default()
                    );
                }
            }
        }));
    }
    for task in tasks {
        if let Some(why) = task.await?? {
            return Ok(Err(why));
        }
    }
    // The list must really hold them all (no silent truncation).
    let r = client
        .get(format!("{}/users", target.base))
        .header("x-auth-token", token)
        .send()
        .await?;
    let body: Value = r.json().await?;
    let listed = body["users"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|u| {
            u["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(USER_PREFIX))
        })
        .count();
    if listed < count {
        bail!(
            "{}: GET /v3/users lists {listed} of the {count} benchmark users (truncated?)",
            target.name
        );
    }
    Ok(Ok(()))
}

/// Runs every case against `target` and stops it.
async fn measure(target: Target, args: &Args) -> Result<Results> {
    let result = measure_inner(&target, args).await;
    let pid = target.process.id();
    let stopped = tokio::task::spawn_blocking(move || crate::stop(target.process)).await?;
    let results = result?;
    stopped.with_context(|| format!("stopping {} (pid {pid})", target.name))?;
    Ok(results)
}

async fn measure_inner(target: &Target, args: &Args) -> Result<Results> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let admin = issue_token(&client, target).await?;
    let subject = issue_token(&client, target).await?;
    eprintln!("{}: creating {} users…", target.name, args.users);
    let users = ensure_users(&client, target, &admin, args.users).await?;
    let mut results = Results {
        samples: Vec::new(),
        pending: Vec::new(),
    };
    if let Err(why) = &users {
        results.pending.push((Case::ListUsers, why.clone()));
    }
    let body = Arc::new(serde_json::to_vec(&password_body(&target.password))?);
    for case in Case::ALL {
        if case == Case::ListUsers && users.is_err() {
            continue;
        }
        let total = match case {
            Case::Issue => args.issues,
            Case::Validate => args.validates,
            Case::ListUsers => args.lists,
        };
        for concurrency in CONCURRENCY {
            eprintln!("{}: {} × {concurrency}…", target.name, case.label());
            let request = Request {
                case,
                base: target.base.clone(),
                admin: admin.clone(),
                subject: subject.clone(),
                body: body.clone(),
            };
            let sample = run_case(
                target,
                &request,
                concurrency,
                total,
                Duration::from_secs(args.case_seconds),
            )
            .await?;
            results.samples.push((case, concurrency, sample));
        }
    }
    Ok(results)
}

/// Everything a worker needs to send one request of a case.
#[derive(Clone)]
struct Request {
    case: Case,
    base: String,
    admin: String,
    subject: String,
    body: Arc<Vec<u8>>,
}

impl Request {
    async fn send(&self, client: &reqwest::Client) -> Result<()> {
        let (builder, expect) = match self.case {
            Case::Issue => (
                client
                    .post(format!("{}/auth/tokens", self.base))
                    .header("content-type", "application/json")
                    .body(self.body.as_ref().clone()),
                201,
            ),
            Case::Validate => (
                client
                    .get(format!("{}/auth/tokens", self.base))
                    .header("x-auth-token", &self.admin)
                    .header("x-subject-token", &self.subject),
                200,
            ),
            Case::ListUsers => (
                client
                    .get(format!("{}/users", self.base))
                    .header("x-auth-token", &self.admin),
                200,
            ),
        };
        let r = builder.send().await?;
        let status = r.status();
        let body = r.bytes().await?;
        if status != expect {
            bail!(
                "{:?} answered {status}: {}",
                self.case,
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }
}

async fn run_case(
    target: &Target,
    request: &Request,
    concurrency: usize,
    total: usize,
    limit: Duration,
) -> Result<Sample> {
    let clients: Vec<reqwest::Client> = (0..concurrency)
        .map(|_| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
        })
        .collect::<Result<_, _>>()?;
    // Warm-up: open the connections and fill caches; not measured.
    let warmup = match request.case {
        Case::Issue => 2,
        Case::Validate => 50,
        Case::ListUsers => 3,
    };
    for client in &clients {
        for _ in 0..warmup {
            request.send(client).await?;
        }
    }
    let log_start = std::fs::metadata(&target.log)?.len();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + limit;
    let mut tasks = Vec::new();
    for client in clients {
        let (request, next) = (request.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                let t = Instant::now();
                request.send(&client).await?;
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, anyhow::Error>(times)
        }));
    }
    let mut client_ms = Vec::new();
    for task in tasks {
        client_ms.extend(task.await??);
    }
    let wall = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = std::fs::read(&target.log)?;
    let section = log.get(log_start as usize..).unwrap_or_default();
    let mut server_ms = server_times(target.name, section, request.case);
    client_ms.sort_by(f64::total_cmp);
    server_ms.sort_by(f64::total_cmp);
    Ok(Sample {
        throughput: client_ms.len() as f64 / wall,
        client: client_ms,
        server: server_ms,
    })
}

/// Server-side latencies (ms) of `case` requests in a slice of the server's log.
fn server_times(target: &str, log: &[u8], case: Case) -> Vec<f64> {
    let (method, suffix) = case.route();
    let text = String::from_utf8_lossy(log);
    let mut out = Vec::new();
    for line in text.lines() {
        if target == "Stratus" {
            // {"fields":{"message":"request served","status":200,"elapsed_ms":0.1},"span":{"method":..,"path":..},..}
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v["fields"]["message"] != "request served" {
                continue;
            }
            let spans =
                std::iter::once(&v["span"]).chain(v["spans"].as_array().into_iter().flatten());
            let matches = spans.into_iter().any(|s| {
                s["method"] == method && s["path"].as_str().is_some_and(|p| p.ends_with(suffix))
            });
            if let (true, Some(ms)) = (matches, v["fields"]["elapsed_ms"].as_f64()) {
                out.push(ms);
            }
        } else {
            // gunicorn access log: METHOD PATH STATUS MICROSECONDS
            let parts: Vec<&str> = line.split_whitespace().collect();
            if let [m, path, _status, us] = parts[..]
                && m == method
                && path.ends_with(suffix)
                && let Ok(us) = us.parse::<f64>()
            {
                out.push(us / 1000.0);
            }
        }
    }
    out
}

fn fmt_ms(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v < 10.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.1}")
    }
}

fn fmt_rate(v: f64) -> String {
    if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn latency(values: &[f64]) -> String {
    if values.is_empty() {
        return "–".into();
    }
    format!(
        "{} / {}",
        fmt_ms(percentile(values, 0.5)),
        fmt_ms(percentile(values, 0.99))
    )
}

fn report(
    args: &Args,
    bin: &Path,
    bcrypt_ms: f64,
    stratus: &Results,
    (low_issue, low_bcrypt): (f64, f64),
    keystone: Option<&Results>,
    keystone_version: Option<&str>,
    with_keystone: bool,
) {
    println!();
    println!("## Identity benchmark");
    println!();
    println!(
        "- machine: {} cores, load average at the end {}",
        cores(),
        loadavg()
    );
    println!(
        "- Stratus: `{} up` on a fresh data dir, 127.0.0.1, SQLite, JSON info logging",
        bin.display()
    );
    match keystone_version {
        Some(v) => println!(
            "- Keystone {v}: gunicorn, {} sync workers, SQLite, fernet tokens, in-process token cache \
             (bench/keystone/setup)",
            args.keystone_workers
        ),
        None if with_keystone => println!("- Keystone: bench/keystone (version unknown)"),
        None => println!("- Keystone: not set up (run `cargo xtask bench identity --keystone`)"),
    }
    println!(
        "- client: reqwest, keep-alive, one connection per client; per case at most {} issues / {} validates / {} \
         lists or {} s; {} users; admin project-scoped tokens",
        args.issues, args.validates, args.lists, args.case_seconds, args.users
    );
    println!();
    println!("Client-side latency (ms) and throughput; ratio = Stratus req/s ÷ Keystone req/s.");
    println!();
    println!(
        "| case | concurrency | Stratus p50/p99 ms | Stratus req/s | Keystone p50/p99 ms | Keystone req/s | ratio |"
    );
    println!("|---|---|---|---|---|---|---|");
    let pending = |r: Option<&Results>, case| -> String {
        match r {
            None => "–".into(),
            Some(r) => r.pending(case).unwrap_or("–").to_string(),
        }
    };
    for case in Case::ALL {
        for c in CONCURRENCY {
            let s = stratus.get(case, c);
            let k = keystone.and_then(|k| k.get(case, c));
            let (s_lat, s_tp) = match s {
                Some(s) => (latency(&s.client), fmt_rate(s.throughput)),
                None => (pending(Some(stratus), case), "–".into()),
            };
            let (k_lat, k_tp) = match k {
                Some(k) => (latency(&k.client), fmt_rate(k.throughput)),
                None => (pending(keystone, case), "–".into()),
            };
            let ratio = match (s, k) {
                (Some(s), Some(k)) if k.throughput > 0.0 => {
                    format!("{:.1}×", s.throughput / k.throughput)
                }
                _ => "–".into(),
            };
            println!(
                "| {} | {c} | {s_lat} | {s_tp} | {k_lat} | {k_tp} | {ratio} |",
                case.label()
            );
        }
    }
    println!();
    println!(
        "Server-side latency (ms): Stratus `request served` elapsed_ms; Keystone gunicorn request time."
    );
    println!();
    println!("| case | concurrency | Stratus p50/p99 ms | Keystone p50/p99 ms |");
    println!("|---|---|---|---|");
    for case in Case::ALL {
        for c in CONCURRENCY {
            let s = stratus
                .get(case, c)
                .map(|s| latency(&s.server))
                .unwrap_or_else(|| pending(Some(stratus), case));
            let k = keystone
                .and_then(|k| k.get(case, c))
                .map(|k| latency(&k.server))
                .unwrap_or_else(|| pending(keystone, case));
            println!("| {} | {c} | {s} | {k} |", case.label());
        }
    }
    println!();
    println!("bcrypt cost 12, one hash in-process (median of 5): {bcrypt_ms:.1} ms");
    if let Some(issue) = stratus.get(Case::Issue, 1) {
        let client = percentile(&issue.client, 0.5) - bcrypt_ms;
        let server = percentile(&issue.server, 0.5) - bcrypt_ms;
        println!("token issue p50 − bcrypt (c=1, cost 12): client {client:.2} ms, server {server:.2} ms");
    }
    let overhead = low_issue - low_bcrypt;
    println!(
        "token issue p50 − bcrypt (c=1, server-side, cost {LOW_COST}: issue {low_issue:.2} ms, bcrypt {low_bcrypt:.2} ms): \
         {overhead:.2} ms (goal ≤ 2 ms: {})",
        verdict(overhead <= 2.0)
    );
    if let Some(v) = stratus.get(Case::Validate, 1) {
        let p50 = percentile(&v.server, 0.5);
        println!(
            "token validate server-side p50 (c=1): {p50:.3} ms (goal < 0.2 ms: {})",
            verdict(p50 < 0.2)
        );
    }
    for c in CONCURRENCY {
        if let (Some(s), Some(k)) = (
            stratus.get(Case::Validate, c),
            keystone.and_then(|k| k.get(Case::Validate, c)),
        ) {
            let ratio = s.throughput / k.throughput;
            println!(
                "token validate throughput vs Keystone (c={c}): {ratio:.0}× (goal ≥ 200×: {})",
                verdict(ratio >= 200.0)
            );
        }
    }
}
