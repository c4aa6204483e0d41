//! The qemu driver with real QEMU (TCG) and the test VM image (`cargo xtask image build`). The image's bases are
//! put in the driver's `_base` cache beforehand, as a fetch from the image service would. Skipped when QEMU or
//! the image is missing, unless `STRATUS_TEST_REQUIRE_QEMU=1` (as CI sets) makes that a failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use compute_agent::{Error, GuestContext, Hypervisor, ImageSource, QemuConfig, QemuDriver, VirtType};
use compute_rpc::{FlavorSpec, InstanceSpec, PowerState};

const MARKER: &str = "STRATUS-TEST-VM-READY";

fn image_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("STRATUS_TEST_VM_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-image"));
    let have_qemu = std::process::Command::new("qemu-system-x86_64").arg("--version").output().is_ok();
    if have_qemu && dir.join("stratus-test-vm.qcow2").exists() {
        return Some(dir);
    }
    assert!(
        std::env::var("STRATUS_TEST_REQUIRE_QEMU").as_deref() != Ok("1"),
        "QEMU or the test VM image is missing (scripts/install-qemu, cargo xtask image build)"
    );
    eprintln!("skipped: QEMU or the test VM image ({}) is missing", dir.display());
    None
}

struct Env {
    _dir: tempfile::TempDir,
    path: PathBuf,
    images: PathBuf,
}

impl Env {
    fn new(images: PathBuf) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let base = path.join("_base");
        std::fs::create_dir_all(&base).unwrap();
        for (id, file) in [
            ("disk-image", "stratus-test-vm.qcow2"),
            ("kernel-image", "stratus-test-vm.vmlinuz"),
            ("ramdisk-image", "stratus-test-vm.initrd"),
            ("uec-image", "stratus-test-vm-root.img"),
        ] {
            std::fs::copy(images.join(file), base.join(id)).unwrap();
        }
        std::fs::write(base.join("garbage-image"), vec![7u8; 65536]).unwrap();
        Env { _dir: dir, path, images }
    }

    /// A driver that removes unused bases at once.
    fn driver(&self) -> QemuDriver {
        self.driver_keeping_bases(Duration::ZERO)
    }

    fn driver_keeping_bases(&self, min_age: Duration) -> QemuDriver {
        let mut config = QemuConfig::new(&self.path);
        config.virt_type = VirtType::Qemu;
        config.shutdown_timeout = Duration::from_secs(20);
        config.remove_unused_minimum_age = min_age;
        QemuDriver::new(config, None).unwrap()
    }
}

impl Drop for Env {
    /// A failed test leaves no QEMU running.
    fn drop(&mut self) {
        for entry in std::fs::read_dir(&self.path).into_iter().flatten().flatten() {
            if let Ok(pid) = std::fs::read_to_string(entry.path().join("qemu.pid")) {
                let _ = std::process::Command::new("kill").args(["-9", pid.trim()]).status();
            }
        }
    }
}

fn instance(uuid: &str, image: &str, properties: &[(&str, &str)]) -> (InstanceSpec, GuestContext) {
    let mut spec = crate::support::instance(&format!("host-{uuid}"));
    spec.uuid = uuid.into();
    spec.display_name = format!("server {uuid}");
    spec.flavor = FlavorSpec { memory_mb: 192, ephemeral_gb: 1, ..spec.flavor };
    spec.image_ref = image.into();
    spec.image_properties = properties.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
    spec.config_drive = true;
    let context = GuestContext::for_instance(&spec, "req-test");
    (spec, context)
}

async fn wait_console(driver: &QemuDriver, uuid: &str, needle: &str, count: usize) -> Duration {
    let started = Instant::now();
    loop {
        let out = driver.console_output(uuid).await.unwrap();
        if out.matches(needle).count() >= count {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no {needle:?} (x{count}) on the console:\n{out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_power(driver: &QemuDriver, uuid: &str, want: PowerState) {
    let started = Instant::now();
    while driver.power_state(uuid).await.unwrap() != want {
        assert!(started.elapsed() < Duration::from_secs(30), "power state never became {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_boots_reads_its_config_drive_and_goes_through_its_lifecycle() {
    let Some(images) = image_dir() else { return };
    let env = Env::new(images);
    let driver = env.driver();
    let (spec, ctx) = instance("vm1", "disk-image", &[("disk_format", "qcow2"), ("container_format", "bare")]);
    driver.spawn(&spec, &ctx).await.unwrap();
    // The host name comes from the config drive; it is printed just after the marker.
    let boot = wait_console(&driver, "vm1", "hostname: host-vm1", 1).await;
    eprintln!("spawn to boot marker and host name: {boot:?}");
    let console = driver.console_output("vm1").await.unwrap();
    assert!(console.contains(MARKER) && console.contains("config drive found"), "{console}");
    assert_eq!(driver.power_state("vm1").await.unwrap(), PowerState::Running);
    let pid = driver.guest_pid("vm1").unwrap();

    driver.pause("vm1").await.unwrap();
    assert_eq!(driver.power_state("vm1").await.unwrap(), PowerState::Paused);
    driver.unpause("vm1").await.unwrap();
    assert_eq!(driver.power_state("vm1").await.unwrap(), PowerState::Running);

    // A new driver over the same directory (an agent restart) adopts the running guest.
    let again = env.driver();
    assert_eq!(again.guest_pid("vm1"), Some(pid));
    assert_eq!(again.list_guests().await.unwrap()[0].power_state, PowerState::Running);

    // A clean shutdown through the ACPI power button.
    let started = Instant::now();
    again.power_off("vm1").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(15), "the guest should power off on ACPI, took {:?}", started.elapsed());
    assert_eq!(again.power_state("vm1").await.unwrap(), PowerState::Shutdown);
    assert!(again.guest_pid("vm1").is_none());
    assert!(driver.console_output("vm1").await.unwrap().contains("power button pressed"));

    driver.power_on(&spec, &ctx).await.unwrap();
    wait_console(&driver, "vm1", MARKER, 2).await;
    driver.reboot(&spec, &ctx, true).await.unwrap();
    wait_console(&driver, "vm1", MARKER, 3).await;

    // Suspend saves the memory and ends the process; resume continues from it without booting again.
    driver.suspend("vm1").await.unwrap();
    assert_eq!(driver.power_state("vm1").await.unwrap(), PowerState::Suspended);
    assert!(driver.guest_pid("vm1").is_none());
    driver.resume(&spec, &ctx).await.unwrap();
    assert_eq!(driver.power_state("vm1").await.unwrap(), PowerState::Running);
    assert_eq!(driver.console_output("vm1").await.unwrap().matches(MARKER).count(), 3, "resumed, not rebooted");

    // A snapshot of the running guest is a standalone qcow2 that boots.
    let snap = env.path.join("_base").join("snap-image");
    assert_eq!(driver.snapshot(&spec, &snap).await.unwrap().disk_format, "qcow2");
    assert_eq!(driver.power_state("vm1").await.unwrap(), PowerState::Running);
    let (spec2, ctx2) = instance("vm2", "snap-image", &[("disk_format", "qcow2")]);
    driver.spawn(&spec2, &ctx2).await.unwrap();
    wait_console(&driver, "vm2", "hostname: host-vm2", 1).await;

    // A guest that dies is shut off; the driver still expects it running (for the power-state sync).
    let pid2 = driver.guest_pid("vm2").unwrap();
    std::process::Command::new("kill").args(["-9", &pid2.to_string()]).status().unwrap();
    wait_power(&driver, "vm2", PowerState::Shutdown).await;
    assert_eq!(driver.expected_power_state("vm2").await, Some(PowerState::Running));

    // Nothing is left after delete; the snapshot's base goes with its last user.
    for uuid in ["vm1", "vm2"] {
        driver.destroy(uuid).await.unwrap();
        assert!(!env.path.join(uuid).exists());
        assert!(matches!(driver.power_state(uuid).await, Err(Error::NotFound(_))));
    }
    driver.destroy("vm1").await.unwrap();
    assert!(!env.path.join("_base/snap-image").exists());
    assert!(driver.list_guests().await.unwrap().is_empty());
    let _ = env.images;
}

#[tokio::test(flavor = "multi_thread")]
async fn images_with_a_kernel_and_ramdisk_boot_directly() {
    let Some(images) = image_dir() else { return };
    let env = Env::new(images);
    let driver = env.driver();
    let props = [("disk_format", "ami"), ("container_format", "ami"), ("kernel_id", "kernel-image"), ("ramdisk_id", "ramdisk-image")];
    let (mut spec, ctx) = instance("uec1", "uec-image", &props);
    spec.config_drive = false;
    driver.spawn(&spec, &ctx).await.unwrap();
    wait_console(&driver, "uec1", MARKER, 1).await;
    let info = driver.host_info().await.unwrap();
    assert_eq!((info.hypervisor_type.as_str(), info.running_vms, info.memory_mb_used), ("QEMU", 1, 192));
    assert!(info.hypervisor_version >= 10_000_000);
    driver.destroy("uec1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn images_the_driver_cannot_boot_fail_clearly() {
    let Some(images) = image_dir() else { return };
    let env = Env::new(images);
    let driver = env.driver_keeping_bases(Duration::from_secs(3600));
    /// Instance, image, image properties, expected error.
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 4] = [
        ("bad1", "disk-image", &[("disk_format", "vhdx")], "cannot boot"),
        ("bad2", "disk-image", &[("disk_format", "raw"), ("container_format", "docker")], "cannot boot"),
        ("bad3", "garbage-image", &[("disk_format", "qcow2")], "corrupt"),
        ("bad4", "disk-image", &[("disk_format", "raw")], "corrupt or mislabelled"),
    ];
    for (uuid, image, props, expected) in cases {
        let (spec, ctx) = instance(uuid, image, props);
        let err = driver.spawn(&spec, &ctx).await.unwrap_err().to_string();
        assert!(err.contains(expected), "{uuid}: {err}");
        driver.destroy(uuid).await.unwrap();
        assert!(!env.path.join(uuid).exists());
    }
    // A root disk smaller than the image's virtual size.
    let (mut spec, ctx) = instance("small", "disk-image", &[("disk_format", "qcow2")]);
    std::process::Command::new("qemu-img")
        .args(["resize", "-q", "-f", "qcow2"])
        .arg(env.path.join("_base/disk-image"))
        .arg("2G")
        .status()
        .unwrap();
    spec.flavor.root_gb = 1;
    let err = driver.spawn(&spec, &ctx).await.unwrap_err().to_string();
    assert!(err.contains("Flavor's disk is too small"), "{err}");
    driver.destroy("small").await.unwrap();
}

/// A guest definition as the driver writes it, for a guest whose QEMU is not running.
fn write_definition(path: &Path, uuid: &str, state: &str) {
    let dir = path.join(uuid);
    std::fs::create_dir_all(&dir).unwrap();
    let flavor = serde_json::to_value(instance(uuid, "disk-image", &[]).0.flavor).unwrap();
    let def = serde_json::json!({
        "uuid": uuid, "name": uuid, "flavor": flavor, "bases": ["disk-image"], "base_format": "qcow2",
        "kernel": null, "ramdisk": null, "cmdline": null, "config_drive": false, "state": state,
    });
    std::fs::write(dir.join("guest.json"), def.to_string()).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn at_start_the_agent_destroys_orphans_and_stops_instances_whose_guest_died() {
    use crate::support::{Seen, agent_config, stub_conductor, unique};
    use compute_agent::Agent;
    use compute_rpc::vm_state;
    let Some(images) = image_dir() else { return };
    let env = Env::new(images);
    let (orphan, dead) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    write_definition(&env.path, &orphan, "Running");
    write_definition(&env.path, &dead, "Running");
    std::fs::create_dir_all(env.path.join("half-made")).unwrap();

    let url = format!("memory://{}", unique("qemu-agent"));
    let bus = bus::Bus::connect(&url).await.unwrap();
    let config = agent_config(&unique("host"));
    let (_conductor, mut recorder, behaviour) = stub_conductor(&bus, &config.conductor_topic).await;
    let refused = orphan.clone();
    behaviour.refuse_updates(move |u| u.uuid == refused);
    let driver = std::sync::Arc::new(env.driver());
    assert!(!env.path.join("half-made").exists(), "a directory without a definition goes when the driver starts");
    let agent = Agent::start(config, driver.clone(), bus::Bus::connect(&url).await.unwrap()).unwrap();
    // The dead guest's instance is stopped, with the expected task state "none".
    let seen = recorder
        .until("the dead guest's sync", |s| matches!(s, Seen::Update(u, true) if u.uuid == dead && u.changes.vm_state.is_some()))
        .await;
    let Some(Seen::Update(update, _)) = seen.last() else { unreachable!() };
    assert_eq!(update.changes.vm_state.as_deref(), Some(vm_state::STOPPED));
    assert_eq!(update.changes.power_state, Some(PowerState::Shutdown));
    assert_eq!(update.expected_task_state, Some(vec![None]));
    assert_eq!(driver.expected_power_state(&dead).await, Some(PowerState::Shutdown));
    // The orphan (its instance is gone) is destroyed.
    let started = Instant::now();
    while env.path.join(&orphan).exists() {
        assert!(started.elapsed() < Duration::from_secs(20), "the orphan was not destroyed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(env.path.join(&dead).exists());
    agent.stop().await;
}

/// A `local` volume connection, as the volume agent's `file` driver gives it.
fn local_volume(id: &str, path: &Path, format: &str, device: &str, boot_index: Option<i64>) -> compute_rpc::BlockDeviceSpec {
    compute_rpc::BlockDeviceSpec {
        volume_id: id.into(),
        device_name: device.into(),
        boot_index,
        connection_info: serde_json::json!({
            "driver_volume_type": "local",
            "data": {"device_path": path, "format": format, "access_mode": "rw"},
        }),
    }
}

/// The qdev ids of a running guest's block devices, asked over its QMP socket.
fn block_devices(dir: &Path) -> Vec<String> {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::os::unix::net::UnixStream::connect(dir.join("qmp.sock")).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut reply = |cmd: Option<&str>| -> serde_json::Value {
        if let Some(c) = cmd {
            writer.write_all(format!("{{\"execute\": \"{c}\"}}\n").as_bytes()).unwrap();
        }
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if cmd.is_none() || v.get("return").is_some() {
                return v;
            }
        }
    };
    reply(None);
    reply(Some("qmp_capabilities"));
    let blocks = reply(Some("query-block"));
    blocks["return"].as_array().unwrap().iter().filter_map(|b| b["qdev"].as_str().map(str::to_string)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_boots_from_a_volume_and_hot_plugs_another() {
    let Some(images) = image_dir() else { return };
    let env = Env::new(images.clone());
    let driver = env.driver();
    // The root volume: a standalone copy of the test image; the data volume: an empty raw file.
    let volumes = env.path.join("volumes");
    std::fs::create_dir_all(&volumes).unwrap();
    let root = volumes.join("volume-root");
    std::fs::copy(images.join("stratus-test-vm.qcow2"), &root).unwrap();
    let data = volumes.join("volume-data");
    std::fs::File::create(&data).unwrap().set_len(64 << 20).unwrap();

    let (mut spec, mut ctx) = instance("bfv1", "", &[]);
    spec.config_drive = false;
    spec.flavor.ephemeral_gb = 0;
    ctx.block_devices = vec![local_volume("11111111-2222-3333-4444-555555555555", &root, "qcow2", "/dev/vda", Some(0))];
    driver.spawn(&spec, &ctx).await.unwrap();
    wait_console(&driver, "bfv1", MARKER, 1).await;
    assert!(!env.path.join("bfv1").join("disk").exists(), "a volume-backed guest has no root overlay");

    let vol = local_volume("99999999-8888-7777-6666-555555555555", &data, "raw", "/dev/vdb", None);
    driver.attach_volume(&spec, &vol).await.unwrap();
    let err = driver.attach_volume(&spec, &vol).await.unwrap_err();
    assert!(err.to_string().contains("already attached"), "{err}");
    let guest = env.path.join("bfv1");
    let devices = block_devices(&guest);
    assert!(devices.iter().any(|d| d.contains("/vol99999999")), "{devices:?}");
    let def = std::fs::read_to_string(env.path.join("bfv1").join("guest.json")).unwrap();
    assert!(def.contains("volume-data"), "the definition keeps the volume for later starts: {def}");

    // The guest released the device (PCI unplug through its ACPI) before the nodes could go.
    driver.detach_volume("bfv1", &vol.volume_id).await.unwrap();
    let devices = block_devices(&guest);
    assert!(!devices.iter().any(|d| d.contains("/vol99999999")), "{devices:?}");
    let def = std::fs::read_to_string(env.path.join("bfv1").join("guest.json")).unwrap();
    assert!(!def.contains("volume-data"), "{def}");
    // Detaching what the guest does not have is not an error.
    driver.detach_volume("bfv1", &vol.volume_id).await.unwrap();

    // A volume attached while the guest is off is there when it starts again.
    driver.power_off("bfv1").await.unwrap();
    driver.attach_volume(&spec, &vol).await.unwrap();
    driver.power_on(&spec, &ctx).await.unwrap();
    wait_console(&driver, "bfv1", MARKER, 2).await;
    let devices = block_devices(&guest);
    assert!(devices.iter().any(|d| d.contains("/vol99999999")), "{devices:?}");
    driver.destroy("bfv1").await.unwrap();
    assert!(root.exists() && data.exists(), "volumes belong to the block storage service, not the guest");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rescued_guest_boots_the_rescue_image_with_its_disks_after_it() {
    let Some(images) = image_dir() else { return };
    let env = Env::new(images);
    let driver = env.driver();
    let (spec, ctx) = instance("resc1", "disk-image", &[("disk_format", "qcow2")]);
    driver.spawn(&spec, &ctx).await.unwrap();
    let console = {
        wait_console(&driver, "resc1", MARKER, 1).await;
        driver.console_output("resc1").await.unwrap()
    };
    // Root, ephemeral disk, config drive: the config drive is the third disk.
    assert!(console.contains("config drive found on /dev/vdc"), "{console}");

    // Rescued, the rescue image's disk comes first and the guest's own disks follow.
    let props = BTreeMap::from([("disk_format".to_string(), serde_json::json!("qcow2"))]);
    let rescue = ImageSource::new("disk-image", props);
    driver.rescue(&spec, &rescue, &ctx).await.unwrap();
    wait_console(&driver, "resc1", MARKER, 2).await;
    let console = driver.console_output("resc1").await.unwrap();
    assert!(console.contains("config drive found on /dev/vdd"), "{console}");
    assert!(env.path.join("resc1").join("disk.rescue").exists());
    assert!(driver.rescue(&spec, &rescue, &ctx).await.is_err(), "a rescued guest is not rescued again");

    // Unrescued, it boots its own disk again and the rescue disk is gone.
    driver.unrescue(&spec, &ctx).await.unwrap();
    wait_console(&driver, "resc1", MARKER, 3).await;
    let console = driver.console_output("resc1").await.unwrap();
    assert_eq!(console.matches("config drive found on /dev/vdc").count(), 2, "{console}");
    assert!(!env.path.join("resc1").join("disk.rescue").exists());
    assert!(driver.unrescue(&spec, &ctx).await.is_err());
    driver.destroy("resc1").await.unwrap();
}

/// The backing chain of a disk file, active first: (file name, format).
fn chain_of(path: &Path) -> Vec<(String, String)> {
    let out = std::process::Command::new("qemu-img")
        .args(["info", "--backing-chain", "--output=json", "-U"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    v.iter()
        .map(|c| {
            let name = Path::new(c["filename"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into_owned();
            (name, c["format"].as_str().unwrap().to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn assisted_volume_snapshots_stack_and_merge_the_files_of_a_stopped_guest() {
    let Some(images) = image_dir() else { return };
    let env = Env::new(images);
    let driver = env.driver();
    let volumes = env.path.join("volumes");
    std::fs::create_dir_all(&volumes).unwrap();
    let data = volumes.join("volume-snap");
    std::fs::File::create(&data).unwrap().set_len(64 << 20).unwrap();
    let (spec, ctx) = instance("avs1", "disk-image", &[("disk_format", "qcow2")]);
    driver.spawn(&spec, &ctx).await.unwrap();
    wait_console(&driver, "avs1", MARKER, 1).await;
    let vol = local_volume("77777777-8888-7777-6666-555555555555", &data, "raw", "/dev/vdd", None);
    driver.attach_volume(&spec, &vol).await.unwrap();
    let id = vol.volume_id.as_str();
    let info = |f: &str| serde_json::json!({"snapshot_id": "s", "type": "qcow2", "new_file": f});

    // A running guest's volume files are left alone.
    let err = driver.volume_snapshot_create("avs1", id, &info("volume-snap.s1")).await.unwrap_err();
    assert!(err.to_string().contains("stopped"), "{err}");
    assert!(!volumes.join("volume-snap.s1").exists());

    driver.power_off("avs1").await.unwrap();
    driver.volume_snapshot_create("avs1", id, &info("volume-snap.s1")).await.unwrap();
    driver.volume_snapshot_create("avs1", id, &info("volume-snap.s2")).await.unwrap();
    let def = std::fs::read_to_string(env.path.join("avs1").join("guest.json")).unwrap();
    assert!(def.contains("volume-snap.s2"), "the guest continues on the newest file: {def}");
    let names = |c: Vec<(String, String)>| c.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(names(chain_of(&volumes.join("volume-snap.s2"))), ["volume-snap.s2", "volume-snap.s1", "volume-snap"]);
    assert!(driver.volume_snapshot_create("avs1", id, &info("volume-snap.s1")).await.is_err(), "an existing file");
    assert!(driver.volume_snapshot_create("avs1", id, &info("../escape")).await.is_err(), "a path");

    // s1 pulled into the active file (no target), then the active file committed into the volume's own file.
    let del = |f: &str, t: Option<&str>| serde_json::json!({"volume_id": id, "file_to_merge": f, "merge_target_file": t});
    driver.volume_snapshot_delete("avs1", id, &del("volume-snap.s1", None)).await.unwrap();
    assert_eq!(names(chain_of(&volumes.join("volume-snap.s2"))), ["volume-snap.s2", "volume-snap"]);
    driver.volume_snapshot_delete("avs1", id, &del("volume-snap.s2", Some("volume-snap"))).await.unwrap();
    let def = std::fs::read_to_string(env.path.join("avs1").join("guest.json")).unwrap();
    assert!(!def.contains("volume-snap.s"), "back on the volume's own file: {def}");
    assert!(driver.volume_snapshot_delete("avs1", id, &del("volume-snap.s9", Some("volume-snap"))).await.is_err());

    // It boots with the volume again.
    driver.power_on(&spec, &ctx).await.unwrap();
    wait_console(&driver, "avs1", MARKER, 2).await;
    assert!(block_devices(&env.path.join("avs1")).iter().any(|d| d.contains("/vol77777777")));
    driver.destroy("avs1").await.unwrap();
}

/// The test's own iSCSI target daemon (tgt), on its own control port and loopback portal; ended on drop.
struct Target {
    control: String,
    portal: String,
}

impl Target {
    fn start() -> Option<Target> {
        if std::process::Command::new("tgtadm").arg("--help").output().is_err() {
            assert!(std::env::var("STRATUS_TEST_REQUIRE_QEMU").as_deref() != Ok("1"), "tgt is required with QEMU");
            return None;
        }
        let control = 900 + (std::process::id() % 90) as u16;
        let t = Target { control: control.to_string(), portal: format!("127.0.0.1:{}", 34000 + control) };
        let ok = std::process::Command::new("tgtd")
            .args(["-C", &t.control, "--iscsi", &format!("portal={}", t.portal)])
            .status()
            .unwrap()
            .success();
        assert!(ok, "tgtd");
        for _ in 0..50 {
            if t.adm(&["--op", "show", "--mode", "system"]) {
                return Some(t);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("tgtd did not come up");
    }

    fn adm(&self, args: &[&str]) -> bool {
        std::process::Command::new("tgtadm")
            .args(["-C", &self.control, "--lld", "iscsi"])
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for Target {
    /// tgtd ignores SIGTERM and refuses to stop while it has targets: they go first, then the daemon (killed if it
    /// still runs).
    fn drop(&mut self) {
        let _ = self.adm(&["--op", "delete", "--mode", "target", "--tid", "1", "--force"]);
        let _ = std::process::Command::new("tgtadm").args(["-C", &self.control, "--op", "delete", "--mode", "system"]).output();
        let _ = std::process::Command::new("pkill").args(["-9", "-f", &format!("tgtd -C {} ", self.control)]).output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_reaches_an_iscsi_volume_through_qemus_initiator() {
    let Some(images) = image_dir() else { return };
    let Some(target) = Target::start() else { return };
    let env = Env::new(images);
    let driver = env.driver();
    let file = env.path.join("lun.raw");
    std::fs::File::create(&file).unwrap().set_len(32 << 20).unwrap();
    let iqn = "iqn.2010-10.org.openstack:volume-cccccccc";
    assert!(target.adm(&["--op", "new", "--mode", "target", "--tid", "1", "-T", iqn]));
    assert!(target.adm(&["--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "-b", &file.to_string_lossy()]));
    // Only this host's initiator may log in (the driver's default is the machine's host name, as the connector's).
    let me = compute_agent::iscsi_initiator(&compute_agent::hostname());
    assert!(target.adm(&["--op", "bind", "--mode", "target", "--tid", "1", "-Q", &me]));

    let (spec, ctx) = instance("isc1", "disk-image", &[("disk_format", "qcow2")]);
    driver.spawn(&spec, &ctx).await.unwrap();
    wait_console(&driver, "isc1", MARKER, 1).await;
    let lun = compute_rpc::BlockDeviceSpec {
        volume_id: "cccccccc-1111-2222-3333-444444444444".into(),
        device_name: "/dev/vdd".into(),
        boot_index: None,
        connection_info: serde_json::json!({"driver_volume_type": "iscsi", "data": {"target_portal": target.portal, "target_iqn": iqn, "target_lun": 1}}),
    };
    driver.attach_volume(&spec, &lun).await.unwrap();
    let guest = env.path.join("isc1");
    assert!(block_devices(&guest).iter().any(|d| d.contains("/volcccccccc")), "hot-added over iSCSI");

    // Restarted, QEMU logs in again from its command line.
    driver.power_off("isc1").await.unwrap();
    driver.power_on(&spec, &ctx).await.unwrap();
    wait_console(&driver, "isc1", MARKER, 2).await;
    assert!(block_devices(&guest).iter().any(|d| d.contains("/volcccccccc")));
    driver.detach_volume("isc1", &lun.volume_id).await.unwrap();
    assert!(!block_devices(&guest).iter().any(|d| d.contains("/volcccccccc")));

    // Another initiator is refused by the target: the attach fails and the guest is unchanged.
    assert!(target.adm(&["--op", "unbind", "--mode", "target", "--tid", "1", "-Q", &me]));
    assert!(driver.attach_volume(&spec, &lun).await.is_err(), "not allowed to log in");
    assert!(!block_devices(&guest).iter().any(|d| d.contains("/volcccccccc")));
    driver.destroy("isc1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_guest_gets_a_nic_hot_plugged_and_unplugged_and_keeps_it_across_restarts() {
    let Some(images) = image_dir() else { return };
    let env = Env::new(images);
    // QEMU runs in a namespace of the test's own (the network agent's `host_namespace`), where its taps appear.
    let uuid = "nic1";
    let ns = format!("qnic-{}", std::process::id());
    assert!(std::process::Command::new("ip").args(["netns", "add", &ns]).status().unwrap().success());
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip").args(["netns", "delete", &self.0]).output();
        }
    }
    let _ns = Ns(ns.clone());
    let mut config = QemuConfig::new(&env.path);
    config.virt_type = VirtType::Qemu;
    config.shutdown_timeout = Duration::from_secs(20);
    config.host_namespace = Some(ns.clone());
    let driver = QemuDriver::new(config, None).unwrap();
    let (spec, ctx) = instance(uuid, "disk-image", &[("disk_format", "qcow2")]);
    driver.spawn(&spec, &ctx).await.unwrap();
    wait_console(&driver, uuid, MARKER, 1).await;

    let vif = compute_rpc::VifSpec {
        port_id: format!("9a7c{}-0000-4000-8000-000000000001", std::process::id() % 10000),
        network_id: "net".into(),
        mac_address: "fa:16:3e:00:9a:01".into(),
        active: true,
        mtu: Some(1450),
    };
    let nic = compute_agent::NetworkInterface::of(&vif);
    let tap_present = || std::process::Command::new("ip").args(["-n", &ns, "link", "show", &nic.devname]).output().unwrap().status.success();
    assert!(!tap_present());
    driver.attach_interface(uuid, &nic).await.unwrap();
    assert!(tap_present(), "QEMU made the tap in its namespace");
    assert!(driver.attach_interface(uuid, &nic).await.unwrap_err().to_string().contains("already attached"));
    let def = std::fs::read_to_string(env.path.join(uuid).join("guest.json")).unwrap();
    assert!(def.contains(&vif.port_id), "the definition keeps the NIC for later starts: {def}");

    // Unplugged, the guest releases the device (PCI unplug through its ACPI) and the tap goes with the netdev.
    driver.detach_interface(uuid, &vif.port_id).await.unwrap();
    assert!(!tap_present());
    let def = std::fs::read_to_string(env.path.join(uuid).join("guest.json")).unwrap();
    assert!(!def.contains(&vif.port_id), "{def}");
    driver.detach_interface(uuid, &vif.port_id).await.unwrap();

    // One attached while the guest is off is there when it starts.
    driver.power_off(uuid).await.unwrap();
    driver.attach_interface(uuid, &nic).await.unwrap();
    assert!(!tap_present());
    driver.power_on(&spec, &ctx).await.unwrap();
    wait_console(&driver, uuid, MARKER, 2).await;
    assert!(tap_present(), "the started guest has the NIC");
    driver.destroy(uuid).await.unwrap();
    assert!(!tap_present());
}
