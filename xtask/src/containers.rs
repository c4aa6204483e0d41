//! `cargo xtask bench containers`: real containers with the container driver.
//!
//! * bare runc — `runc create` + `runc start` by hand on a copy of the test container's root filesystem, timed from
//!   exec to the ready marker in its output (no cloud, no overlay, no network namespace);
//! * through the cloud — one release process built with `cloud::start` whose in-process agent runs the container
//!   driver: `POST /servers` (m1.nano) → ACTIVE, and → the ready marker in `os-getConsoleOutput`;
//! * density — `--density` idle containers at once: memory per container (the machine's `MemAvailable` before and
//!   after, and the containers' own cgroup usage), and the cloud process's RSS growth.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::vm::{BenchCloud, median};

const MARKER: &str = "STRATUS-TEST-CONTAINER-READY";

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Containers per timed case.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Idle containers started at once for the density figure.
    #[arg(long, default_value_t = 50)]
    density: usize,
}

fn row_ms(case: &str, v: &[f64]) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    println!("| {case} | {} | {:.0} | {:.0} | {:.0} |", v.len(), median(v.to_vec()) * 1e3, min * 1e3, max * 1e3);
}

pub fn run(args: Args) -> Result<()> {
    let root = crate::workspace_root();
    if crate::reexec_in_release(&root)? {
        return Ok(());
    }
    let dir = crate::vm_image::default_dir();
    crate::vm_image::build(&dir)?;
    let archive = dir.join("stratus-test-container.tar");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    runtime.block_on(async {
        let rootfs = tempfile::tempdir()?;
        unpack_rootfs(&archive, rootfs.path())?;
        let cloud = BenchCloud::start("container", |c| {
            c.compute_agent.container.stop_timeout = 2;
            // Room for the density run on a small machine: containers share the CPUs.
            c.compute_agent.cpu_allocation_ratio = 64.0;
        })
        .await?;
        let image = cloud.upload("stratus-test-container", "raw", "docker", &archive).await?;
        cloud.unlimited().await?;
        let (mut bare, mut active, mut marker) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..=args.runs {
            if i > 0 {
                bare.push(bare_run(rootfs.path(), i).await?);
            }
            let started = Instant::now();
            let url = cloud.create(json!({"name": format!("bench-{i}"), "imageRef": image, "flavorRef": "42"})).await?;
            cloud.wait_active(&url, started, Duration::from_millis(2)).await?;
            let to_active = started.elapsed().as_secs_f64();
            cloud.wait_console(&url, MARKER, started, Duration::from_millis(5)).await?;
            let to_marker = started.elapsed().as_secs_f64();
            if i == 0 {
                println!("first container (image download and unpack): → ACTIVE {:.0} ms, → marker {:.0} ms", to_active * 1e3, to_marker * 1e3);
            } else {
                active.push(to_active);
                marker.push(to_marker);
            }
            cloud.delete(&url).await?;
        }
        println!("| case | runs | p50 ms | min ms | max ms |");
        println!("|---|---|---|---|---|");
        row_ms("bare runc create + start → ready marker", &bare);
        row_ms("API POST /servers → ACTIVE", &active);
        row_ms("API POST /servers → ready marker on the console", &marker);
        println!("ACTIVE p50 {:.0} ms (goal < 150 ms); API → marker p50 / bare p50: {:.2}x", median(active.clone()) * 1e3, median(marker) / median(bare));
        density(&cloud, &image, args.density).await?;
        cloud.shutdown().await
    })
}

/// Unpacks the archive's single layer into `dest`.
fn unpack_rootfs(archive: &Path, dest: &Path) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let ok = std::process::Command::new("tar").arg("-xf").arg(archive).arg("-C").arg(tmp.path()).status()?.success();
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(tmp.path().join("manifest.json"))?)?;
    let layer = manifest[0]["Layers"][0].as_str().context("a layer")?;
    let ok = ok && std::process::Command::new("tar").arg("-xf").arg(tmp.path().join(layer)).arg("-C").arg(dest).status()?.success();
    if !ok {
        bail!("unpacking {} failed", archive.display());
    }
    Ok(())
}

/// One container run by hand with runc, timed from exec to the marker.
async fn bare_run(rootfs: &Path, i: usize) -> Result<f64> {
    let bundle = tempfile::tempdir()?;
    let copy = bundle.path().join("rootfs");
    if !std::process::Command::new("cp").arg("-a").arg(rootfs).arg(&copy).status()?.success() {
        bail!("copying the root filesystem failed");
    }
    let state = bundle.path().join("state");
    let runc = |args: &[&str]| {
        let mut c = tokio::process::Command::new("runc");
        c.arg("--root").arg(&state).args(args);
        c
    };
    if !runc(&["spec", "--bundle", &bundle.path().to_string_lossy()]).status().await?.success() {
        bail!("runc spec failed");
    }
    let path = bundle.path().join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = json!(["/init"]);
    spec["root"]["readonly"] = json!(false);
    spec["hostname"] = json!(format!("bare-{i}"));
    std::fs::write(&path, serde_json::to_vec(&spec)?)?;
    let log = bundle.path().join("console.log");
    let id = format!("bench-bare-{}-{i}", std::process::id());
    let started = Instant::now();
    let out = std::fs::File::create(&log)?;
    let created = runc(&["create", "--bundle", &bundle.path().to_string_lossy(), &id]).stdout(out.try_clone()?).stderr(out).status().await?;
    if !created.success() || !runc(&["start", &id]).status().await?.success() {
        bail!("runc could not run the container");
    }
    loop {
        if std::fs::read_to_string(&log).is_ok_and(|t| t.contains(MARKER)) {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the bare container printed no marker");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = started.elapsed().as_secs_f64();
    runc(&["delete", "--force", &id]).status().await?;
    Ok(took)
}

fn mem_available_kb() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:")).context("MemAvailable")?;
    line.split_whitespace().nth(1).context("MemAvailable value")?.parse().context("MemAvailable number")
}

/// `count` idle containers at once: memory per container.
async fn density(cloud: &BenchCloud, image: &str, count: usize) -> Result<()> {
    let rss_before = crate::rss_kib(std::process::id())?;
    let before = mem_available_kb()?;
    let started = Instant::now();
    let mut urls = Vec::new();
    let ready = async {
        for i in 0..count {
            urls.push(cloud.create(json!({"name": format!("idle-{i}"), "imageRef": image, "flavorRef": "42"})).await?);
        }
        for url in &urls {
            cloud.wait_console(url, MARKER, started, Duration::from_millis(20)).await?;
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = ready {
        // Containers outlive the cloud process: the ones made so far go before the error is reported.
        for url in &urls {
            let _ = cloud.delete(url).await;
        }
        return Err(e);
    }
    let all_ready = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = mem_available_kb()?;
    let rss_after = crate::rss_kib(std::process::id())?;
    let mut cgroup_kb = 0u64;
    let mut counted = 0;
    for entry in std::fs::read_dir("/sys/fs/cgroup/memory/stratus").into_iter().flatten().flatten() {
        if let Ok(v) = std::fs::read_to_string(entry.path().join("memory.usage_in_bytes")) {
            cgroup_kb += v.trim().parse::<u64>().unwrap_or(0) / 1024;
            counted += 1;
        }
    }
    println!();
    println!("| density ({count} idle containers, all ready in {all_ready:.1} s) | per container |");
    println!("|---|---|");
    println!("| machine memory (MemAvailable before − after) | {:.2} MiB |", before.saturating_sub(after) as f64 / 1024.0 / count as f64);
    if counted > 0 {
        println!("| the containers' own memory cgroup usage ({counted} cgroups) | {:.2} MiB |", cgroup_kb as f64 / 1024.0 / counted as f64);
    }
    println!("| cloud process RSS growth | {:.1} KiB |", rss_after.saturating_sub(rss_before) as f64 / count as f64);
    for url in &urls {
        cloud.delete(url).await?;
    }
    Ok(())
}
