//! Repository chores: `cargo xtask bench` (start-up and memory benchmark of `stratus up`) and
//! `cargo xtask bench identity` (token issue/validate and user-list latency and throughput, against upstream
//! Keystone too when `bench/keystone/setup` has been run; see [`identity`]) and `cargo xtask bench image` (image
//! upload/download throughput against `cat`, and the server's peak RSS; see [`image`]) and `cargo xtask bench
//! placement` (allocation candidates latency and allocation write throughput; see [`placement`]) and `cargo xtask
//! bench object` (small-object ops/s and large-object MB/s against md5sum; see [`object`]) and `cargo xtask bench
//! network` (port create/delete throughput and a /16 filled with 10,000 ports; see [`network`]), `cargo xtask bench
//! routers` (router and floating IP convergence in the network agent; see [`routers`]), `cargo xtask bench
//! security-groups` (rule and member changes of a group shared by 500 ports, to nftables; see [`security_groups`]),
//! `cargo xtask bench dataplane` (port bound → DHCP lease, agent start-up with 1,000 ports; see [`dataplane`])
//! and `cargo xtask bench vm` (real VMs through the API against bare QEMU; see [`vm`]). `cargo xtask image build` builds the test VM image
//! from Debian packages (see [`vm_image`]).

mod compute;
mod containers;
mod dataplane;
mod identity;
mod image;
mod network;
mod object;
mod placement;
mod routers;
mod security_groups;
mod vm;
mod vm_image;
mod volumes;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Benchmarks `stratus up`: exec → ready on a new and an existing data dir, and idle resident memory.
    #[command(args_conflicts_with_subcommands = true)]
    Bench {
        #[command(subcommand)]
        suite: Option<Suite>,
        /// Runs per case.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// The binary to measure (default: builds and uses target/release/stratus).
        #[arg(long)]
        bin: Option<PathBuf>,
    },
    /// Test images built from Debian packages only.
    Image {
        #[command(subcommand)]
        command: vm_image::Command,
    },
}

#[derive(Subcommand)]
enum Suite {
    /// Token issue, token validation and `GET /v3/users` (1,000 users) at 1 and 4 clients, Stratus vs Keystone.
    Identity(identity::Args),
    /// Upload and download of a 1 GiB image (cold, image-cache hit cold and hot) vs `cat`, and peak RSS.
    Image(image::Args),
    /// Allocation candidates latency and allocation write throughput at 1,000 and 10,000 providers, 1 and 4 clients.
    Placement(placement::Args),
    /// Scheduling decisions over 1,000 and 10,000 fake hosts, API → ACTIVE with the fake driver, server listing.
    Compute(compute::Args),
    /// 1 KiB PUT/GET/DELETE at 1 and 4 clients; 100 MiB and 1 GiB PUT/GET against md5sum.
    Object(object::Args),
    /// Port create/delete at 1 and 4 clients; a /16 filled with 10,000 ports (rate per 1,000, no duplicates).
    Network(network::Args),
    /// Router and floating IP convergence in the network agent (root: namespaces, nftables).
    Routers(routers::Args),
    /// A security group shared by 500 ports of one host: rule and member changes until nftables has them (root).
    SecurityGroups(security_groups::Args),
    /// The network agent's data plane: port bound → DHCP lease, and agent start-up with 1,000 bound ports (root).
    Dataplane(dataplane::Args),
    /// Real VMs with the qemu driver: API → ACTIVE and API → boot marker, against a bare QEMU launch.
    Vm(vm::Args),
    /// Real containers with the container driver: API → ACTIVE and → ready marker against bare runc; density.
    Containers(containers::Args),
    /// Block storage with real VMs: volume from a 1 GiB image, attach/detach latency, guest vs host write rate.
    Volumes(volumes::Args),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::Image { command } => vm_image::run(command),
        Task::Bench {
            suite: Some(Suite::Identity(args)),
            ..
        } => identity::run(args),
        Task::Bench {
            suite: Some(Suite::Image(args)),
            ..
        } => image::run(args),
        Task::Bench {
            suite: Some(Suite::Placement(args)),
            ..
        } => placement::run(args),
        Task::Bench {
            suite: Some(Suite::Compute(args)),
            ..
        } => compute::run(args),
        Task::Bench {
            suite: Some(Suite::Object(args)),
            ..
        } => object::run(args),
        Task::Bench {
            suite: Some(Suite::Network(args)),
            ..
        } => network::run(args),
        Task::Bench {
            suite: Some(Suite::Routers(args)),
            ..
        } => routers::run(args),
        Task::Bench {
            suite: Some(Suite::SecurityGroups(args)),
            ..
        } => security_groups::run(args),
        Task::Bench {
            suite: Some(Suite::Dataplane(args)),
            ..
        } => dataplane::run(args),
        Task::Bench {
            suite: Some(Suite::Vm(args)),
            ..
        } => vm::run(args),
        Task::Bench {
            suite: Some(Suite::Containers(args)),
            ..
        } => containers::run(args),
        Task::Bench {
            suite: Some(Suite::Volumes(args)),
            ..
        } => volumes::run(args),
        Task::Bench {
            suite: None,
            runs,
            bin,
        } => bench(runs, bin),
    }
}

/// Nearest-rank percentile of sorted values.
/// Whether this process runs as root (the data-plane benchmarks make namespaces and devices).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// Runs `ip` with `args`; its output, or an error with its stderr.
fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip").args(args).output().context("run ip")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes every network namespace whose name starts with `prefix`, killing what runs in them (dnsmasq, DHCP
/// clients) first.
fn remove_namespaces(prefix: &str) {
    let Ok(dir) = std::fs::read_dir("/run/netns") else { return };
    for ns in dir.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.starts_with(prefix)) {
        if let Ok(pids) = ip(&["netns", "pids", &ns]) {
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = ip(&["netns", "delete", &ns]);
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The 1/5/15-minute load averages: other work on the machine skews every number.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The admin password `stratus up` wrote to `<data>/credentials.toml`.
fn admin_password(data: &Path) -> Result<String> {
    let creds = std::fs::read_to_string(data.join("credentials.toml")).context("read credentials.toml")?;
    let creds: toml::Table = toml::from_str(&creds).context("parse credentials.toml")?;
    Ok(creds.get("admin_password").and_then(|v| v.as_str()).context("admin_password in credentials.toml")?.to_string())
}

/// A token of user `admin` on project `admin` from the cloud at `base` (data dir `data`), and the project's id.
async fn admin_token(base: &str, data: &Path) -> Result<(String, String)> {
    let password = admin_password(data)?;
    let r = reqwest::Client::new()
        .post(format!("{base}/identity/v3/auth/tokens"))
        .json(&serde_json::json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": "admin", "domain": {"id": "default"}, "password": password}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}
        }}))
        .send()
        .await?;
    if r.status() != 201 {
        bail!("token issue answered {}", r.status());
    }
    let token = r.headers().get("x-subject-token").context("no X-Subject-Token")?.to_str()?.to_string();
    let body: serde_json::Value = r.json().await?;
    let project = body["token"]["project"]["id"].as_str().context("no project id in the token")?.to_string();
    Ok((token, project))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Builds `package` in release mode.
fn cargo_release(root: &Path, package: &str) -> Result<()> {
    let status = Command::new("cargo")
        .args(["build", "--release", "-p", package])
        .current_dir(root)
        .status()
        .context("cargo build")?;
    if !status.success() {
        bail!("release build of {package} failed");
    }
    Ok(())
}

/// The server binary to measure: `bin` when given, otherwise a fresh release build of `stratus`.
fn release_stratus(root: &Path, bin: Option<PathBuf>) -> Result<PathBuf> {
    match bin {
        Some(b) => Ok(b),
        None => {
            cargo_release(root, "stratus")?;
            Ok(root.join("target/release/stratus"))
        }
    }
}

/// Set in the environment of an xtask re-run in release mode.
const REEXEC_ENV: &str = "XTASK_BENCH_RELEASE";

/// Sub-millisecond requests need an optimised load generator: a debug xtask builds the release xtask and runs the
/// same command with it. Returns true when it did, and the caller is done.
fn reexec_in_release(root: &Path) -> Result<bool> {
    if !cfg!(debug_assertions) || std::env::var_os(REEXEC_ENV).is_some() {
        return Ok(false);
    }
    cargo_release(root, "xtask")?;
    let status = Command::new(root.join("target/release/xtask"))
        .args(std::env::args_os().skip(1))
        .env(REEXEC_ENV, "1")
        .status()
        .context("run the release xtask")?;
    if !status.success() {
        bail!("benchmark failed ({status})");
    }
    Ok(true)
}

fn bench(runs: usize, bin: Option<PathBuf>) -> Result<()> {
    let root = workspace_root();
    let bin = release_stratus(&root, bin)?;
    let work = std::env::temp_dir().join(format!("stratus-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;

    let mut fresh = Vec::new();
    let mut existing = Vec::new();
    let mut rss = Vec::new();
    for i in 0..runs {
        let dir = work.join(format!("run{i}"));
        // New data dir: schema, keys, bootstrap (bcrypt at the configured cost), client files.
        let (t, child) = start_and_wait(&bin, &dir)?;
        fresh.push(t);
        stop(child)?;
        // Existing data dir: everything is there already.
        let (t, child) = start_and_wait(&bin, &dir)?;
        existing.push(t);
        std::thread::sleep(Duration::from_millis(1000));
        rss.push(rss_kib(child.id())? as f64 / 1024.0);
        stop(child)?;
    }
    let _ = std::fs::remove_dir_all(&work);

    println!();
    println!("stratus up ({} runs each, {})", runs, bin.display());
    println!("| case                            |    min |    p50 |    max | goal     |");
    println!("|---------------------------------|--------|--------|--------|----------|");
    row("exec → ready, new data dir (ms)", &mut fresh, "< 1000");
    row("exec → ready, existing dir (ms)", &mut existing, "< 1000");
    row("idle RSS after start (MiB)", &mut rss, "< 64");
    Ok(())
}

fn row(name: &str, values: &mut [f64], goal: &str) {
    values.sort_by(|a, b| a.total_cmp(b));
    let p50 = values[values.len() / 2];
    println!(
        "| {name:<31} | {:>6.1} | {p50:>6.1} | {:>6.1} | {goal:<8} |",
        values[0],
        values[values.len() - 1]
    );
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts `stratus up` and returns the milliseconds until `GET /identity/v3` answers 200.
fn start_and_wait(bin: &Path, dir: &Path) -> Result<(f64, Child)> {
    let port = free_port()?;
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(["up", "--data-dir"])
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("STRATUS_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawn stratus")?;
    let deadline = started + Duration::from_secs(30);
    while Instant::now() < deadline {
        if http_status(port, "/identity/v3").ok() == Some(200) {
            return Ok((started.elapsed().as_secs_f64() * 1000.0, child));
        }
        if let Some(status) = child.try_wait()? {
            bail!("stratus exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    bail!("stratus was not ready within 30 s")
}

fn http_status(port: u16, path: &str) -> Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf)?;
    let text = std::str::from_utf8(&buf)?;
    Ok(text.get(9..12).context("short status line")?.parse()?)
}

pub(crate) fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

/// SIGTERM, then wait (bounded) for a clean exit.
fn stop(mut child: Child) -> Result<()> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("stratus exited with {status} on SIGTERM");
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill()?;
    bail!("stratus did not stop within 10 s of SIGTERM")
}
