//! `cargo xtask bench image`: upload and download throughput of one large image (1 GiB by default) through a
//! release `stratus up`, against reading the same file from disk with `cat file > /dev/null` in the same run.
//!
//! Cases: `cat` cold (page cache dropped) and hot; upload (source file cold); download that misses the image cache
//! (store file cold; the download also fills the cache); download served by the image cache, cold and hot. Transfers
//! run through `curl` (streaming both ways, as a real client). The server's peak RSS is sampled every 5 ms during
//! each transfer. Dropping the page cache needs root (`/proc/sys/vm/drop_caches`); without it, "cold" rows are
//! marked as such.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{cores, loadavg};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Image size in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// The binary to measure (default: builds and uses target/release/stratus).
    #[arg(long)]
    bin: Option<PathBuf>,
}

struct Row {
    case: &'static str,
    secs: f64,
    peak_rss_mib: Option<f64>,
    /// The `cat` row this one is compared with.
    baseline: Option<usize>,
}

pub fn run(args: Args) -> Result<()> {
    let root = crate::workspace_root();
    let bin = crate::release_stratus(&root, args.bin)?;
    let work = std::env::temp_dir().join(format!("stratus-bench-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let result = measure(&bin, &work, args.size_mib);
    let _ = std::fs::remove_dir_all(&work);
    let (rows, can_drop, idle_rss) = result?;
    report(&rows, args.size_mib, can_drop, idle_rss, &bin);
    Ok(())
}

fn measure(bin: &Path, work: &Path, size_mib: u64) -> Result<(Vec<Row>, bool, f64)> {
    let file = work.join("image.raw");
    write_source(&file, size_mib << 20)?;
    let can_drop = drop_caches();

    let mut rows = Vec::new();
    drop_caches();
    rows.push(Row {
        case: "cat file > /dev/null, cold",
        secs: cat(&file)?,
        peak_rss_mib: None,
        baseline: None,
    });
    cat(&file)?;
    rows.push(Row {
        case: "cat file > /dev/null, hot",
        secs: cat(&file)?,
        peak_rss_mib: None,
        baseline: None,
    });

    let data = work.join("data");
    let port = crate::free_port()?;
    let mut server = Command::new(bin)
        .args(["up", "--data-dir"])
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("STRATUS_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("stratus.log"))?)
        .spawn()
        .context("spawn stratus")?;
    let outcome = transfers(&mut server, port, &data, &file, size_mib, &mut rows);
    let _ = crate::stop(server);
    let idle = outcome?;
    Ok((rows, can_drop, idle))
}

fn transfers(
    server: &mut Child,
    port: u16,
    data: &Path,
    file: &Path,
    size_mib: u64,
    rows: &mut Vec<Row>,
) -> Result<f64> {
    let base = format!("http://127.0.0.1:{port}");
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (token, image_id) = runtime.block_on(prepare(&base, data))?;
    let pid = server.id();
    std::thread::sleep(Duration::from_millis(500));
    let idle = crate::rss_kib(pid)? as f64 / 1024.0;
    let size = size_mib << 20;
    let url = format!("{base}/image/v2/images/{image_id}/file");

    drop_caches();
    let (secs, rss) = sampled(pid, || {
        curl(
            &token,
            &[
                "-X",
                "PUT",
                "-H",
                "Content-Type: application/octet-stream",
                "-T",
            ],
            Some(file),
            &url,
            204,
            None,
        )
    })?;
    rows.push(Row {
        case: "upload (source cold)",
        secs,
        peak_rss_mib: Some(rss),
        baseline: Some(0),
    });

    drop_caches();
    let (secs, rss) = sampled(pid, || curl(&token, &[], None, &url, 200, Some(size)))?;
    rows.push(Row {
        case: "download, cache miss (cold)",
        secs,
        peak_rss_mib: Some(rss),
        baseline: Some(0),
    });
    let cache = data.join("image-cache").join(&image_id);
    // The cache copy is written beside the download and published just after it ends.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&cache).map(|m| m.len()).unwrap_or(0) != size && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if std::fs::metadata(&cache).map(|m| m.len()).unwrap_or(0) != size {
        bail!(
            "the first download did not fill the image cache ({})",
            cache.display()
        );
    }

    drop_caches();
    let (secs, rss) = sampled(pid, || curl(&token, &[], None, &url, 200, Some(size)))?;
    rows.push(Row {
        case: "download, cache hit (cold)",
        secs,
        peak_rss_mib: Some(rss),
        baseline: Some(0),
    });
    curl(&token, &[], None, &url, 200, Some(size))?;
    let (secs, rss) = sampled(pid, || curl(&token, &[], None, &url, 200, Some(size)))?;
    rows.push(Row {
        case: "download, cache hit (hot)",
        secs,
        peak_rss_mib: Some(rss),
        baseline: Some(1),
    });

    let stats = runtime.block_on(cache_stats(&base, &token))?;
    if stats != (3, 1) {
        bail!("expected 3 cache hits and 1 miss, the server counted {stats:?}");
    }
    Ok(idle)
}

/// Logs in as admin and creates a raw image; returns the token and the image id.
async fn prepare(base: &str, data: &Path) -> Result<(String, String)> {
    let (token, _) = crate::admin_token(base, data).await?;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{base}/image/v2/images"))
        .header("x-auth-token", &token)
        .json(&json!({"name": "bench", "disk_format": "raw", "container_format": "bare"}))
        .send()
        .await?;
    if r.status() != 201 {
        bail!("image create answered {}", r.status());
    }
    let img: Value = r.json().await?;
    let id = img["id"].as_str().context("image id")?.to_string();
    Ok((token, id))
}

async fn cache_stats(base: &str, token: &str) -> Result<(u64, u64)> {
    let r = reqwest::Client::new()
        .get(format!("{base}/image/v2/cache"))
        .header("x-auth-token", token)
        .send()
        .await?;
    let v: Value = r.json().await?;
    Ok((
        v["stats"]["hits"].as_u64().unwrap_or(0),
        v["stats"]["misses"].as_u64().unwrap_or(0),
    ))
}

/// Runs one `curl` transfer; checks the status and, for downloads, the byte count.
pub(crate) fn curl(
    token: &str,
    args: &[&str],
    file: Option<&Path>,
    url: &str,
    want: u16,
    size: Option<u64>,
) -> Result<()> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download}",
        "-H",
    ])
    .arg(format!("X-Auth-Token: {token}"))
    .args(args);
    if let Some(f) = file {
        cmd.arg(f);
    }
    let out = cmd.arg(url).output().context("run curl")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut parts = text.split_whitespace();
    let status: u16 = parts.next().unwrap_or("0").parse().unwrap_or(0);
    let got: u64 = parts.next().unwrap_or("0").parse().unwrap_or(0);
    if status != want || size.is_some_and(|s| s != got) {
        bail!(
            "curl {url}: HTTP {status}, {got} bytes ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Times `f` while sampling the server's RSS; returns seconds and peak RSS in MiB.
fn sampled(pid: u32, f: impl FnOnce() -> Result<()>) -> Result<(f64, f64)> {
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(crate::rss_kib(pid)?));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Ok(kib) = crate::rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let started = Instant::now();
    let result = f();
    let secs = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    result?;
    Ok((secs, peak.load(Ordering::Relaxed) as f64 / 1024.0))
}

fn cat(file: &Path) -> Result<f64> {
    let started = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg("cat \"$1\" > /dev/null")
        .arg("sh")
        .arg(file)
        .status()?;
    if !status.success() {
        bail!("cat failed: {status}");
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Writes `size` pseudo-random bytes (xorshift; incompressible enough, and cheap).
pub(crate) fn write_source(path: &Path, size: u64) -> Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    out.get_ref().sync_all()?;
    Ok(())
}

/// Flushes dirty pages and drops the page cache; false without the privilege.
pub(crate) fn drop_caches() -> bool {
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", b"3\n").is_ok()
}

fn report(rows: &[Row], size_mib: u64, can_drop: bool, idle_rss: f64, bin: &Path) {
    println!();
    println!(
        "image transfer, {size_mib} MiB, {} ({} cores, load {})",
        bin.display(),
        cores(),
        loadavg()
    );
    if !can_drop {
        println!("(no privilege to drop the page cache: \"cold\" rows are not cold)");
    }
    println!("server idle RSS before the transfers: {idle_rss:.1} MiB");
    println!("| case                          |   time s |    MiB/s | vs cat  | vs disk | peak RSS MiB |");
    println!("|-------------------------------|----------|----------|---------|---------|--------------|");
    for r in rows {
        let rate = size_mib as f64 / r.secs;
        let vs = r
            .baseline
            .map(|b| format!("{:.0} %", 100.0 * rows[b].secs / r.secs))
            .unwrap_or_default();
        // Against the disk read rate itself: the cold `cat` (row 0).
        let vs_disk = r
            .baseline
            .map(|_| format!("{:.0} %", 100.0 * rows[0].secs / r.secs))
            .unwrap_or_default();
        let rss = r
            .peak_rss_mib
            .map(|m| format!("{m:.1}"))
            .unwrap_or_default();
        println!(
            "| {:<29} | {:>8.2} | {rate:>8.0} | {vs:>7} | {vs_disk:>7} | {rss:>12} |",
            r.case, r.secs
        );
    }
    println!(
        "goal: transfers ≥ 80 % of the disk read rate, RSS flat in image size; \"vs cat\" compares with `cat` in the \
         same cold/hot state, \"vs disk\" with the cold `cat`"
    );
}
