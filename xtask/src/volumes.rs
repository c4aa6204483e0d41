//! `cargo xtask bench volumes`: block storage with real VMs, in one release process built with `cloud::start` (the
//! `file` volume driver, the qemu compute driver under TCG).
//!
//! * volume create from a 1 GiB image: cold (the volume agent fetches the image) and a second time;
//! * attach and detach latency: `POST os-volume_attachments` → volume `in-use`, `DELETE` → `available`, on a running
//!   guest (QMP hot-plug);
//! * sequential write throughput inside the guest to the attached volume (a user-data script runs `dd` with
//!   `conv=fsync` and prints the guest's own clock), against the same `dd` on the host into a file beside the volumes.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde_json::json;

use crate::vm::{BenchCloud, median};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Attach/detach cycles.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// MiB written by `dd`, in the guest and on the host.
    #[arg(long, default_value_t = 256)]
    write_mib: u64,
}

pub fn run(args: Args) -> Result<()> {
    let root = crate::workspace_root();
    if crate::reexec_in_release(&root)? {
        return Ok(());
    }
    let disk = crate::vm_image::build(&crate::vm_image::default_dir())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    runtime.block_on(async {
        let cloud = BenchCloud::start("qemu", |c| c.compute_agent.qemu.virt_type = "qemu".into()).await?;
        cloud.unlimited().await?;
        let vm_image = cloud.upload("stratus-test-vm", "qcow2", "bare", &disk).await?;
        let scratch = tempfile::tempdir()?;
        let source = scratch.path().join("one-gib.raw");
        crate::image::write_source(&source, 1 << 30)?;
        let big = cloud.upload("one-gib", "raw", "bare", &source).await?;
        drop(scratch);

        // Volumes from the 1 GiB image.
        let mut from_image = Vec::new();
        for _ in 0..2 {
            let started = Instant::now();
            let id = cloud.volume_create(json!({"size": 1, "imageRef": big})).await?;
            cloud.volume_wait(&id, "available", started).await?;
            from_image.push(started.elapsed().as_secs_f64());
            cloud.volume_delete(&id).await?;
        }

        // A guest whose user data writes to the bench volume once it appears, timed by the guest's clock.
        let target = cloud.volume_create(json!({"size": 1})).await?;
        cloud.volume_wait(&target, "available", Instant::now()).await?;
        let serial: String = target.chars().take(20).collect();
        let script = format!(
            "#!/bin/sh\nwhile true; do\n  for s in /sys/block/vd*/serial; do [ \"$(cat \"$s\" 2>/dev/null)\" = \"{serial}\" ] && break 2; done\n  sleep 0.2\ndone\n\
             name=${{s#/sys/block/}}\nt0=$(cut -d' ' -f1 /proc/uptime)\n\
             dd if=/dev/zero of=/dev/${{name%/serial}} bs=1M count={mib} conv=fsync 2>/dev/null\n\
             t1=$(cut -d' ' -f1 /proc/uptime)\necho \"BENCH-DD $t0 $t1\"\n",
            mib = args.write_mib
        );
        let user_data = base64::engine::general_purpose::STANDARD.encode(script);
        let started = Instant::now();
        let server = cloud
            .create(json!({"name": "bench-vol", "imageRef": vm_image, "flavorRef": "42", "config_drive": true, "user_data": user_data}))
            .await?;
        cloud.wait_active(&server, started, Duration::from_millis(50)).await?;
        cloud.wait_console(&server, "running user data", started, Duration::from_millis(100)).await?;

        // Attach and detach cycles on the running guest; the last attach stays for the write.
        let (mut attach, mut detach) = (Vec::new(), Vec::new());
        for i in 0..args.runs {
            let started = Instant::now();
            cloud.attach(&server, &target).await?;
            cloud.volume_wait(&target, "in-use", started).await?;
            attach.push(started.elapsed().as_secs_f64());
            if i + 1 == args.runs {
                break;
            }
            let started = Instant::now();
            cloud.detach(&server, &target).await?;
            cloud.volume_wait(&target, "available", started).await?;
            detach.push(started.elapsed().as_secs_f64());
        }
        let guest_mbs = guest_write(&cloud, &server, args.write_mib).await?;
        let host_mbs = host_write(&cloud, args.write_mib)?;

        println!("| case | runs | p50 s | min s | max s |");
        println!("|---|---|---|---|---|");
        crate::vm::row("volume create from a 1 GiB raw image, first (the agent fetches it)", &from_image[..1]);
        crate::vm::row("volume create from the same image again", &from_image[1..]);
        crate::vm::row("attach to a running guest: POST → volume in-use", &attach);
        crate::vm::row("detach: DELETE → available", &detach);
        println!();
        println!("| sequential write, {} MiB, conv=fsync | MB/s |", args.write_mib);
        println!("|---|---|");
        println!("| inside the TCG guest, to the attached volume | {guest_mbs:.1} |");
        println!("| on the host, into a file beside the volumes | {host_mbs:.1} |");
        println!("guest / host: {:.2}; attach p50 {:.2} s, detach p50 {:.2} s", guest_mbs / host_mbs, median(attach), median(detach));
        cloud.delete(&server).await?;
        cloud.volume_wait(&target, "available", Instant::now()).await?;
        cloud.volume_delete(&target).await?;
        cloud.shutdown().await
    })
}

/// The guest's `dd` rate, from the two uptimes its script prints.
async fn guest_write(cloud: &BenchCloud, server: &str, mib: u64) -> Result<f64> {
    let started = Instant::now();
    loop {
        let out = cloud.console(server).await?;
        if let Some(line) = out.lines().find(|l| l.starts_with("BENCH-DD ")) {
            let parts: Vec<f64> = line.split_whitespace().skip(1).filter_map(|p| p.parse().ok()).collect();
            let [t0, t1] = parts[..] else { bail!("unreadable dd line {line:?}") };
            return Ok(mib as f64 * 1.048_576 / (t1 - t0).max(0.01));
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the guest never reported its write");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The same `dd` on the host, into the volumes' directory.
fn host_write(cloud: &BenchCloud, mib: u64) -> Result<f64> {
    let file = cloud.data_dir().join("volumes").join("bench-host-write");
    let started = Instant::now();
    let ok = std::process::Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args(["bs=1M", &format!("count={mib}"), "conv=fsync", "status=none"])
        .status()?
        .success();
    let took = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&file);
    if !ok {
        bail!("dd on the host failed");
    }
    Ok(mib as f64 * 1.048_576 / took)
}
