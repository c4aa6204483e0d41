//! `cargo xtask bench vm`: real virtual machines with the qemu driver, against bare QEMU.
//!
//! * bare QEMU — `qemu-system-x86_64` started by hand with the machine the driver defines (same accelerator,
//!   memory, virtio disks: a qcow2 overlay on the test image and a config drive), timed from exec to the boot
//!   marker on its serial console;
//! * through the cloud — one release process built with `cloud::start` (the in-process agent runs the qemu
//!   driver): `POST /servers` (m1.nano, config drive) → ACTIVE, and → the boot marker in `os-getConsoleOutput`.
//!
//! The ratio of the medians of "API → boot marker" and "bare exec → boot marker" is the driver's overhead.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;

const MARKER: &str = "STRATUS-TEST-VM-READY";
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How often both cases look at the console (through the API for the cloud; the file for bare QEMU).
const POLL: Duration = Duration::from_millis(100);

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Boots per case.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The accelerator: qemu (TCG), kvm or auto.
    #[arg(long, default_value = "qemu")]
    virt_type: String,
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

pub(crate) fn row(case: &str, v: &[f64]) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    println!("| {case} | {} | {:.2} | {min:.2} | {max:.2} |", v.len(), median(v.to_vec()));
}

pub fn run(args: Args) -> Result<()> {
    let root = crate::workspace_root();
    if crate::reexec_in_release(&root)? {
        return Ok(());
    }
    let dir = crate::vm_image::default_dir();
    let disk = crate::vm_image::build(&dir)?;
    let accel = match args.virt_type.as_str() {
        "qemu" => "tcg",
        "kvm" => "kvm",
        other => bail!("--virt-type {other}: use qemu or kvm for a like-for-like comparison"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    runtime.block_on(async {
        let (bare, active, marker) = cloud_boots(&disk, accel, &args).await?;
        println!("| case ({accel}) | runs | p50 s | min s | max s |");
        println!("|---|---|---|---|---|");
        row("bare qemu-system-x86_64: exec → boot marker", &bare);
        row("API POST /servers → ACTIVE", &active);
        row("API POST /servers → boot marker on the console", &marker);
        println!("overhead (API → marker p50 / bare → marker p50): {:.2}x (goal ≤ 1.2x)", median(marker) / median(bare));
        Ok(())
    })
}

/// One bare QEMU boot, timed from exec to the marker on the serial console.
async fn bare_boot(disk: &Path, accel: &str, i: usize) -> Result<f64> {
    let tmp = tempfile::tempdir()?;
    let overlay = tmp.path().join("disk");
    let status = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(disk)
        .arg(&overlay)
        .arg("1G")
        .status()?;
    if !status.success() {
        bail!("qemu-img create failed");
    }
    let tree = tmp.path().join("cd/openstack/latest");
    std::fs::create_dir_all(&tree)?;
    std::fs::write(tree.join("meta_data.json"), json!({"uuid": "bare", "hostname": format!("bare-{i}")}).to_string())?;
    let iso = tmp.path().join("disk.config");
    let status = std::process::Command::new("genisoimage")
        .args(["-quiet", "-J", "-r", "-V", "config-2", "-o"])
        .arg(&iso)
        .arg(tmp.path().join("cd"))
        .status()?;
    if !status.success() {
        bail!("genisoimage failed");
    }
    let console = tmp.path().join("console.log");
    let p = |f: &Path| f.to_string_lossy().into_owned();
    let started = Instant::now();
    let mut child = tokio::process::Command::new("qemu-system-x86_64")
        .args(["-machine", "pc", "-accel", accel, "-cpu", if accel == "kvm" { "host" } else { "max" }])
        .args(["-smp", "1", "-m", "128", "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none"])
        .args(["-chardev", &format!("file,id=console,path={}", p(&console)), "-serial", "chardev:console"])
        .args(["-blockdev", &format!("driver=file,filename={},node-name=root-file", p(&overlay))])
        .args(["-blockdev", "driver=qcow2,file=root-file,node-name=root", "-device", "virtio-blk-pci,drive=root,bootindex=1"])
        .args(["-blockdev", &format!("driver=file,filename={},node-name=cfg-file,read-only=on", p(&iso))])
        .args(["-blockdev", "driver=raw,file=cfg-file,node-name=cfg,read-only=on", "-device", "virtio-blk-pci,drive=cfg"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting qemu-system-x86_64")?;
    loop {
        if std::fs::read_to_string(&console).is_ok_and(|t| t.contains(MARKER)) {
            break;
        }
        if started.elapsed() > BOOT_TIMEOUT {
            bail!("the bare guest did not boot");
        }
        tokio::time::sleep(POLL).await;
    }
    let took = started.elapsed().as_secs_f64();
    child.kill().await.ok();
    Ok(took)
}

/// A cloud of one release process built with `cloud::start` whose in-process agent runs `driver` (configured by
/// `configure`), with an admin token.
pub(crate) struct BenchCloud {
    _dir: tempfile::TempDir,
    running: cloud::RunningCloud,
    pub base: String,
    pub token: String,
    /// The admin project the token is scoped to.
    pub project: String,
    pub http: reqwest::Client,
}

impl BenchCloud {
    pub(crate) async fn start(driver: &str, configure: impl FnOnce(&mut cloud::Config)) -> Result<BenchCloud> {
        let dir = tempfile::tempdir()?;
        let mut config = cloud::Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
        config.server.listen = "127.0.0.1:0".parse()?;
        config.bus.url = format!("memory://bench-{driver}-{}", std::process::id());
        config.identity.password_hash_rounds = 4;
        config.compute_agent.driver = driver.into();
        configure(&mut config);
        let opts = cloud::StartOptions { compute_agent: true, ..cloud::StartOptions::all_in_one() };
        let running = cloud::start(config, opts).await.map_err(|e| anyhow!("cloud start: {e}"))?;
        let base = running.url.clone();
        let (token, project) = crate::admin_token(&base, dir.path()).await?;
        let http = reqwest::Client::new();
        // Wait for the agent's node.
        for _ in 0..500 {
            let r: serde_json::Value =
                http.get(format!("{base}/compute/v2.1/os-hypervisors")).header("x-auth-token", &token).send().await?.json().await?;
            if r["hypervisors"].as_array().is_some_and(|h| !h.is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(BenchCloud { _dir: dir, running, base, token, project, http })
    }

    /// Lifts the admin project's compute quotas (instances, cores, RAM).
    pub(crate) async fn unlimited(&self) -> Result<()> {
        let r = self
            .http
            .put(format!("{}/compute/v2.1/os-quota-sets/{}", self.base, self.project))
            .header("x-auth-token", &self.token)
            .json(&json!({"quota_set": {"instances": -1, "cores": -1, "ram": -1}}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("quota update answered {}", r.status());
        }
        Ok(())
    }

    /// Uploads `file` as a public image; returns its id.
    pub(crate) async fn upload(&self, name: &str, disk_format: &str, container_format: &str, file: &Path) -> Result<String> {
        let r = self
            .http
            .post(format!("{}/image/v2/images", self.base))
            .header("x-auth-token", &self.token)
            .json(&json!({"name": name, "disk_format": disk_format, "container_format": container_format, "visibility": "public"}))
            .send()
            .await?;
        let image: serde_json::Value = r.json().await?;
        let image = image["id"].as_str().context("image id")?.to_string();
        let data = tokio::fs::read(file).await?;
        let r = self
            .http
            .put(format!("{}/image/v2/images/{image}/file", self.base))
            .header("x-auth-token", &self.token)
            .header("content-type", "application/octet-stream")
            .body(data)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("image upload answered {}", r.status());
        }
        Ok(image)
    }

    /// `POST /servers` with `server`; returns the server's URL.
    pub(crate) async fn create(&self, server: serde_json::Value) -> Result<String> {
        let r: serde_json::Value = self
            .http
            .post(format!("{}/compute/v2.1/servers", self.base))
            .header("x-auth-token", &self.token)
            .json(&json!({"server": server}))
            .send()
            .await?
            .json()
            .await?;
        let id = r["server"]["id"].as_str().with_context(|| format!("boot: {r}"))?;
        Ok(format!("{}/compute/v2.1/servers/{id}", self.base))
    }

    /// Polls the server at `url` every `poll` until ACTIVE.
    pub(crate) async fn wait_active(&self, url: &str, started: Instant, poll: Duration) -> Result<()> {
        loop {
            let s: serde_json::Value = self.http.get(url).header("x-auth-token", &self.token).send().await?.json().await?;
            match s["server"]["status"].as_str() {
                Some("ACTIVE") => return Ok(()),
                Some("ERROR") => bail!("server went to ERROR: {}", s["server"]["fault"]),
                _ if started.elapsed() > BOOT_TIMEOUT => bail!("server never became ACTIVE"),
                _ => tokio::time::sleep(poll).await,
            }
        }
    }

    /// Polls the server's console every `poll` until `marker` is on it.
    pub(crate) async fn wait_console(&self, url: &str, marker: &str, started: Instant, poll: Duration) -> Result<()> {
        loop {
            let r: serde_json::Value = self
                .http
                .post(format!("{url}/action"))
                .header("x-auth-token", &self.token)
                .json(&json!({"os-getConsoleOutput": {"length": 5}}))
                .send()
                .await?
                .json()
                .await?;
            if r["output"].as_str().is_some_and(|o| o.contains(marker)) {
                return Ok(());
            }
            if started.elapsed() > BOOT_TIMEOUT {
                bail!("no {marker} on the console");
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// The cloud's data directory.
    pub(crate) fn data_dir(&self) -> &Path {
        self._dir.path()
    }

    /// The last lines of the server's console.
    pub(crate) async fn console(&self, url: &str) -> Result<String> {
        let r: serde_json::Value = self
            .http
            .post(format!("{url}/action"))
            .header("x-auth-token", &self.token)
            .json(&json!({"os-getConsoleOutput": {"length": 50}}))
            .send()
            .await?
            .json()
            .await?;
        Ok(r["output"].as_str().unwrap_or_default().to_owned())
    }

    fn volumes_url(&self) -> String {
        format!("{}/volume/v3/{}/volumes", self.base, self.project)
    }

    /// `POST /volumes` with `volume`; returns its id.
    pub(crate) async fn volume_create(&self, volume: serde_json::Value) -> Result<String> {
        let r: serde_json::Value =
            self.http.post(self.volumes_url()).header("x-auth-token", &self.token).json(&json!({"volume": volume})).send().await?.json().await?;
        Ok(r["volume"]["id"].as_str().with_context(|| format!("volume create: {r}"))?.to_owned())
    }

    /// Polls volume `id` (every 20 ms) until `status`.
    pub(crate) async fn volume_wait(&self, id: &str, status: &str, started: Instant) -> Result<()> {
        loop {
            let v: serde_json::Value =
                self.http.get(format!("{}/{id}", self.volumes_url())).header("x-auth-token", &self.token).send().await?.json().await?;
            match v["volume"]["status"].as_str() {
                Some(s) if s == status => return Ok(()),
                Some(s) if s.starts_with("error") => bail!("volume {id} went to {s}"),
                _ if started.elapsed() > BOOT_TIMEOUT * 5 => bail!("volume {id} never became {status}"),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    pub(crate) async fn volume_delete(&self, id: &str) -> Result<()> {
        let r = self.http.delete(format!("{}/{id}", self.volumes_url())).header("x-auth-token", &self.token).send().await?;
        if !r.status().is_success() {
            bail!("volume delete answered {}", r.status());
        }
        Ok(())
    }

    /// Attaches volume `id` to the server at `url` (`os-volume_attachments`).
    pub(crate) async fn attach(&self, url: &str, id: &str) -> Result<()> {
        let r = self
            .http
            .post(format!("{url}/os-volume_attachments"))
            .header("x-auth-token", &self.token)
            .json(&json!({"volumeAttachment": {"volumeId": id}}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("attach answered {}: {}", r.status(), r.text().await.unwrap_or_default());
        }
        Ok(())
    }

    pub(crate) async fn detach(&self, url: &str, id: &str) -> Result<()> {
        let r = self.http.delete(format!("{url}/os-volume_attachments/{id}")).header("x-auth-token", &self.token).send().await?;
        if !r.status().is_success() {
            bail!("detach answered {}", r.status());
        }
        Ok(())
    }

    /// Deletes the server at `url` and waits until it is gone.
    pub(crate) async fn delete(&self, url: &str) -> Result<()> {
        self.http.delete(url).header("x-auth-token", &self.token).send().await?;
        for _ in 0..3000 {
            if self.http.get(url).header("x-auth-token", &self.token).send().await?.status() == 404 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bail!("server {url} was not deleted")
    }

    pub(crate) async fn shutdown(self) -> Result<()> {
        self.running.shutdown().await.map_err(|e| anyhow!("{e}"))
    }
}

/// Boots through the cloud's API, each after a bare boot (so both see the same machine load); returns (bare →
/// marker, API → ACTIVE, API → marker) in seconds per run.
async fn cloud_boots(disk: &Path, accel: &str, args: &Args) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let cloud = BenchCloud::start("qemu", |c| c.compute_agent.qemu.virt_type = args.virt_type.clone()).await?;
    let image = cloud.upload("stratus-test-vm", "qcow2", "bare", disk).await?;
    let (mut bare, mut active, mut marker) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..=args.runs {
        if i > 0 {
            bare.push(bare_boot(disk, accel, i).await?);
        }
        let started = Instant::now();
        let url = cloud.create(json!({"name": format!("bench-{i}"), "imageRef": image, "flavorRef": "42", "config_drive": true})).await?;
        cloud.wait_active(&url, started, Duration::from_millis(20)).await?;
        let to_active = started.elapsed().as_secs_f64();
        cloud.wait_console(&url, MARKER, started, POLL).await?;
        let to_marker = started.elapsed().as_secs_f64();
        // The first boot also downloads the image into the host's base cache: reported, not counted.
        if i == 0 {
            println!("first boot (image download into _base): → ACTIVE {to_active:.2} s, → marker {to_marker:.2} s");
        } else {
            active.push(to_active);
            marker.push(to_marker);
        }
        cloud.delete(&url).await?;
    }
    cloud.shutdown().await?;
    Ok((bare, active, marker))
}
