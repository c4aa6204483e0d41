//! The container driver with the real OCI runtime (runc) and the test container image (`cargo xtask image build`).
//! The image archive is put in the driver's `_base` cache beforehand, as a fetch from the image service would.
//! Skipped when runc or the image is missing, unless `STRATUS_TEST_REQUIRE_CONTAINERS=1` (as CI sets) makes that a
//! failure. Each test's network namespaces and cgroups carry its own instance uuids.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use compute_agent::{ContainerConfig, ContainerDriver, Error, GuestContext, Hypervisor, NetworkInterface};
use compute_rpc::{InstanceSpec, PowerState, VifSpec};

const MARKER: &str = "STRATUS-TEST-CONTAINER-READY";

fn image() -> Option<PathBuf> {
    let dir = std::env::var_os("STRATUS_TEST_VM_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-image"));
    let archive = dir.join("stratus-test-container.tar");
    let have_runc = std::process::Command::new("runc").arg("--version").output().is_ok_and(|o| o.status.success());
    if have_runc && archive.exists() {
        return Some(archive);
    }
    assert!(
        std::env::var("STRATUS_TEST_REQUIRE_CONTAINERS").as_deref() != Ok("1"),
        "runc or the test container image is missing (scripts/host-tools, cargo xtask image build)"
    );
    eprintln!("skipped: runc or the test container image ({}) is missing", archive.display());
    None
}

struct Env {
    _dir: tempfile::TempDir,
    path: PathBuf,
    uuids: Vec<String>,
}

impl Env {
    fn new(archive: &Path, uuids: &[&str]) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let base = path.join("_base");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::copy(archive, base.join("ctr-image")).unwrap();
        std::fs::write(base.join("garbage-image"), vec![7u8; 65536]).unwrap();
        Env { _dir: dir, path, uuids: uuids.iter().map(|u| u.to_string()).collect() }
    }

    fn driver(&self) -> ContainerDriver {
        let mut config = ContainerConfig::new(&self.path);
        config.stop_timeout = Duration::from_secs(10);
        config.remove_unused_minimum_age = Duration::ZERO;
        ContainerDriver::new(config, None).unwrap()
    }
}

impl Drop for Env {
    /// A failed test leaves no container, mount or namespace behind.
    fn drop(&mut self) {
        let root = self.path.join("_runtime");
        for uuid in &self.uuids {
            let _ = std::process::Command::new("runc").arg("--root").arg(&root).args(["delete", "--force", uuid]).output();
            let _ = rustix::mount::unmount(self.path.join(uuid).join("rootfs"), rustix::mount::UnmountFlags::DETACH);
            let _ = std::process::Command::new("ip").args(["netns", "delete", &format!("ctr-{uuid}")]).output();
        }
    }
}

/// A unique uuid-like id for this run (namespaces and cgroups are host-wide).
fn uid(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

fn instance(uuid: &str, image: &str, container_format: &str) -> (InstanceSpec, GuestContext) {
    let mut spec = crate::support::instance(&format!("host-{uuid}"));
    spec.uuid = uuid.into();
    spec.flavor.memory_mb = 64;
    spec.image_ref = image.into();
    spec.image_properties =
        [("container_format", container_format), ("disk_format", "raw")].iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
    let context = GuestContext::for_instance(&spec, "req-test");
    (spec, context)
}

async fn wait_console(driver: &ContainerDriver, uuid: &str, needle: &str, count: usize) -> Duration {
    let started = Instant::now();
    loop {
        let out = driver.console_output(uuid).await.unwrap();
        if out.matches(needle).count() >= count {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no {needle:?} (x{count}) on the console:\n{out}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_power(driver: &ContainerDriver, uuid: &str, want: PowerState) {
    let started = Instant::now();
    while driver.power_state(uuid).await.unwrap() != want {
        assert!(started.elapsed() < Duration::from_secs(30), "power state never became {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of a v1 cgroup file of the container (`memory`, `memory.limit_in_bytes`), when that hierarchy exists.
fn cgroup_v1(controller: &str, file: &str, uuid: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/fs/cgroup/{controller}/stratus/{uuid}/{file}")).ok().map(|s| s.trim().to_owned())
}

fn netns_exists(uuid: &str) -> bool {
    Path::new("/run/netns").join(format!("ctr-{uuid}")).exists()
}

fn mounted(path: &Path) -> bool {
    let p = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|l| l.split_whitespace().nth(4) == Some(p.as_ref()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_runs_reads_its_config_drive_and_goes_through_its_lifecycle() {
    let Some(archive) = image() else { return };
    let (c1, c2) = (uid("c1"), uid("c2"));
    let env = Env::new(&archive, &[&c1, &c2]);
    let driver = env.driver();
    let (spec, ctx) = instance(&c1, "ctr-image", "docker");
    let started = Instant::now();
    driver.spawn(&spec, &ctx).await.unwrap();
    let spawned = started.elapsed();
    let ready = wait_console(&driver, &c1, &format!("hostname: host-{c1}"), 1).await;
    eprintln!("spawn (first, unpacking the image): {spawned:?}; then to the marker and host name: {ready:?}");
    let console = driver.console_output(&c1).await.unwrap();
    assert!(console.contains(MARKER) && console.contains("config drive found"), "{console}");
    assert_eq!(driver.power_state(&c1).await.unwrap(), PowerState::Running);
    let pid = driver.container_pid(&c1).await.unwrap();
    // The flavor's limits are the container's cgroup limits.
    if let Some(limit) = cgroup_v1("memory", "memory.limit_in_bytes", &c1) {
        assert_eq!(limit, (64 * 1024 * 1024).to_string());
        assert_eq!(cgroup_v1("cpu", "cpu.cfs_quota_us", &c1).unwrap(), "100000");
        assert_eq!(cgroup_v1("pids", "pids.max", &c1).unwrap(), "1024");
    }
    // Its host name is the instance's, its root filesystem the image's.
    let uts = std::fs::read_link(format!("/proc/{pid}/ns/uts")).unwrap();
    assert_ne!(uts, std::fs::read_link("/proc/self/ns/uts").unwrap(), "the container has its own UTS namespace");
    assert!(env.path.join(&c1).join("rootfs/bin/busybox").exists() && mounted(&env.path.join(&c1).join("rootfs")));

    driver.pause(&c1).await.unwrap();
    assert_eq!(driver.power_state(&c1).await.unwrap(), PowerState::Paused);
    if let Some(state) = cgroup_v1("freezer", "freezer.state", &c1) {
        assert_eq!(state, "FROZEN");
    }
    driver.unpause(&c1).await.unwrap();
    assert_eq!(driver.power_state(&c1).await.unwrap(), PowerState::Running);

    // A new driver over the same directory (an agent restart) finds the running container.
    let again = env.driver();
    assert_eq!(again.container_pid(&c1).await, Some(pid));
    assert_eq!(again.list_guests().await.unwrap()[0].power_state, PowerState::Running);

    // Stop: SIGTERM, which the image's init handles at once.
    let started = Instant::now();
    again.power_off(&c1).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "the container should stop on SIGTERM, took {:?}", started.elapsed());
    assert_eq!(again.power_state(&c1).await.unwrap(), PowerState::Shutdown);
    assert!(again.container_pid(&c1).await.is_none());
    assert!(driver.console_output(&c1).await.unwrap().contains("stratus-test-container: stopping"));
    assert!(cgroup_v1("memory", "memory.limit_in_bytes", &c1).is_none(), "a stopped container keeps no cgroup");

    // What the instance wrote stays across a stop and start.
    driver.power_on(&spec, &ctx).await.unwrap();
    wait_console(&driver, &c1, MARKER, 2).await;
    std::fs::write(env.path.join(&c1).join("rootfs/root/note"), b"kept").unwrap();
    driver.reboot(&spec, &ctx, true).await.unwrap();
    wait_console(&driver, &c1, MARKER, 3).await;
    driver.reboot(&spec, &ctx, false).await.unwrap();
    wait_console(&driver, &c1, MARKER, 4).await;
    assert_eq!(std::fs::read(env.path.join(&c1).join("rootfs/root/note")).unwrap(), b"kept");

    // Suspend freezes it; resume thaws it without a restart.
    driver.suspend(&c1).await.unwrap();
    assert_eq!(driver.power_state(&c1).await.unwrap(), PowerState::Suspended);
    driver.resume(&spec, &ctx).await.unwrap();
    assert_eq!(driver.power_state(&c1).await.unwrap(), PowerState::Running);
    assert_eq!(driver.console_output(&c1).await.unwrap().matches(MARKER).count(), 4, "resumed, not restarted");

    // Resizing changes the running container's limits.
    let mut bigger = spec.flavor.clone();
    bigger.memory_mb = 128;
    bigger.vcpus = 2;
    driver.resize(&spec, &bigger, &ctx).await.unwrap();
    if let Some(limit) = cgroup_v1("memory", "memory.limit_in_bytes", &c1) {
        assert_eq!(limit, (128 * 1024 * 1024).to_string());
        assert_eq!(cgroup_v1("cpu", "cpu.cfs_quota_us", &c1).unwrap(), "200000");
    }
    let diagnostics = driver.diagnostics(&spec).await.unwrap();
    assert!(diagnostics["memory-actual"].as_u64().unwrap() > 0, "{diagnostics:?}");

    // A snapshot is an image archive of the image's layers plus what the instance changed; it runs again.
    let snap = env.path.join("_base").join("snap-image");
    let format = driver.snapshot(&spec, &snap).await.unwrap();
    assert_eq!((format.disk_format.as_str(), format.container_format.as_str()), ("raw", "docker"));
    assert_eq!(driver.power_state(&c1).await.unwrap(), PowerState::Running, "the container runs on after its snapshot");
    let (spec2, ctx2) = instance(&c2, "snap-image", "docker");
    driver.spawn(&spec2, &ctx2).await.unwrap();
    wait_console(&driver, &c2, &format!("hostname: host-{c2}"), 1).await;
    assert_eq!(std::fs::read(env.path.join(&c2).join("rootfs/root/note")).unwrap(), b"kept");

    // A container whose process dies is shut off; the driver still expects it running (for the power-state sync).
    let pid2 = driver.container_pid(&c2).await.unwrap();
    std::process::Command::new("kill").args(["-9", &pid2.to_string()]).status().unwrap();
    wait_power(&driver, &c2, PowerState::Shutdown).await;
    assert_eq!(driver.expected_power_state(&c2).await, Some(PowerState::Running));

    // Nothing is left after delete: process, mount, namespace, cgroup, files; the snapshot's image goes with its
    // last user.
    for uuid in [&c1, &c2] {
        driver.destroy(uuid).await.unwrap();
        assert!(!env.path.join(uuid).exists());
        assert!(!netns_exists(uuid));
        assert!(cgroup_v1("memory", "memory.limit_in_bytes", uuid).is_none());
        assert!(matches!(driver.power_state(uuid).await, Err(Error::NotFound(_))));
    }
    driver.destroy(&c1).await.unwrap();
    assert!(!env.path.join("_base/snap-image").exists());
    assert!(driver.list_guests().await.unwrap().is_empty());
    assert_eq!(std::fs::read_dir(env.path.join("_layers")).unwrap().count(), 0, "no layer is left without a user");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_port_is_a_veth_pair_and_the_container_answers_on_it() {
    let Some(archive) = image() else { return };
    let c = uid("n1");
    let env = Env::new(&archive, &[&c]);
    // The host ends go to a namespace of the test's own (as to the network agent's `host_namespace`).
    let hostns = format!("ctrhost-{}", &c[3..]);
    assert!(std::process::Command::new("ip").args(["netns", "add", &hostns]).status().unwrap().success());
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip").args(["netns", "delete", &self.0]).output();
        }
    }
    let _ns = Ns(hostns.clone());
    let mut config = ContainerConfig::new(&env.path);
    config.host_namespace = Some(hostns.clone());
    let driver = ContainerDriver::new(config, None).unwrap();
    let (spec, mut ctx) = instance(&c, "ctr-image", "docker");
    let vif = VifSpec { port_id: format!("{c}-port"), network_id: "net".into(), mac_address: "fa:16:3e:12:34:56".into(), active: true, mtu: Some(1400) };
    ctx.network_interfaces = vec![NetworkInterface::of(&vif)];
    let tap = ctx.network_interfaces[0].devname.clone();
    driver.spawn(&spec, &ctx).await.unwrap();

    let ip = |args: &[&str]| {
        let out = std::process::Command::new("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let host_end = ip(&["-n", &hostns, "-d", "link", "show", &tap]);
    assert!(host_end.contains("mtu 1400") && host_end.contains("veth"), "{host_end}");
    let ctr_end = ip(&["-n", &format!("ctr-{c}"), "link", "show", "eth0"]);
    assert!(ctr_end.contains("fa:16:3e:12:34:56") && ctr_end.contains("mtu 1400"), "{ctr_end}");

    // The container asks for its address with DHCP, as a VM does: a DHCP server on the host end answers it.
    ip(&["-n", &hostns, "addr", "add", "10.251.7.1/24", "dev", &tap]);
    let conf = env.path.join("udhcpd.conf");
    std::fs::write(
        &conf,
        format!(
            "start 10.251.7.2\nend 10.251.7.2\ninterface {tap}\nlease_file {}\noption subnet 255.255.255.0\nstatic_lease fa:16:3e:12:34:56 10.251.7.2\n",
            env.path.join("leases").display()
        ),
    )
    .unwrap();
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Server(
        std::process::Command::new("ip")
            .args(["netns", "exec", &hostns, "busybox", "udhcpd", "-f"])
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_console(&driver, &c, "eth0: 10.251.7.2/24", 1).await;
    let started = Instant::now();
    let page = loop {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &hostns, "timeout", "3", "busybox", "wget", "-q", "-O", "-", "http://10.251.7.2/"])
            .output()
            .unwrap();
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the container never answered: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(page.trim(), format!("host-{c}"));

    // A second port, hot-plugged: the next free ethN inside, the port's MAC; detached, both ends go.
    let second = VifSpec { port_id: format!("2{c}"), network_id: "net".into(), mac_address: "fa:16:3e:12:34:57".into(), active: true, mtu: None };
    let nic = NetworkInterface::of(&second);
    driver.attach_interface(&c, &nic).await.unwrap();
    assert!(driver.attach_interface(&c, &nic).await.unwrap_err().to_string().contains("already attached"));
    let eth1 = ip(&["-n", &format!("ctr-{c}"), "link", "show", "eth1"]);
    assert!(eth1.contains("fa:16:3e:12:34:57"), "{eth1}");
    assert!(ip(&["-n", &hostns, "-d", "link", "show", &nic.devname]).contains("veth"));
    driver.detach_interface(&c, &second.port_id).await.unwrap();
    let gone = std::process::Command::new("ip").args(["-n", &format!("ctr-{c}"), "link", "show", "eth1"]).output().unwrap();
    assert!(!gone.status.success(), "eth1 goes with its host end");
    assert!(ip(&["-n", &format!("ctr-{c}"), "link", "show", "eth0"]).contains("fa:16:3e:12:34:56"), "eth0 stays");
    driver.detach_interface(&c, &second.port_id).await.unwrap();

    driver.destroy(&c).await.unwrap();
    assert!(!netns_exists(&c));
    let gone = std::process::Command::new("ip").args(["-n", &hostns, "link", "show", &tap]).output().unwrap();
    assert!(!gone.status.success(), "the host end goes with the container");
}

#[tokio::test(flavor = "multi_thread")]
async fn images_the_driver_cannot_run_fail_clearly_and_leave_nothing() {
    let Some(archive) = image() else { return };
    let (a, b, v) = (uid("bad1"), uid("bad2"), uid("bad3"));
    let env = Env::new(&archive, &[&a, &b, &v]);
    let driver = env.driver();

    let (spec, ctx) = instance(&a, "ctr-image", "bare");
    let err = driver.spawn(&spec, &ctx).await.unwrap_err().to_string();
    assert!(err.contains("container format bare"), "{err}");

    let (spec, ctx) = instance(&b, "garbage-image", "docker");
    let err = driver.spawn(&spec, &ctx).await.unwrap_err().to_string();
    assert!(err.contains("not a container image"), "{err}");

    let (mut spec, _) = instance(&v, "", "docker");
    spec.image_ref.clear();
    let ctx = GuestContext::for_instance(&spec, "req");
    let err = driver.spawn(&spec, &ctx).await.unwrap_err().to_string();
    assert!(err.contains("volume"), "{err}");

    for uuid in [&a, &b, &v] {
        driver.destroy(uuid).await.unwrap();
        assert!(!env.path.join(uuid).exists() && !netns_exists(uuid));
    }
    assert!(driver.list_guests().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn at_start_the_driver_removes_what_a_crash_left() {
    let Some(archive) = image() else { return };
    let (kept, lost) = (uid("keep"), uid("lost"));
    let env = Env::new(&archive, &[&kept, &lost]);
    let driver = env.driver();
    for uuid in [&kept, &lost] {
        let (spec, ctx) = instance(uuid, "ctr-image", "docker");
        driver.spawn(&spec, &ctx).await.unwrap();
        wait_console(&driver, uuid, MARKER, 1).await;
    }
    // A crash in the middle of a build leaves a directory without a definition, its container running.
    std::fs::remove_file(env.path.join(&lost).join("container.json")).unwrap();
    std::fs::create_dir_all(env.path.join("_layers").join("half.part")).unwrap();
    let again = env.driver();
    assert!(!env.path.join(&lost).exists(), "the half-made instance is removed");
    assert!(!netns_exists(&lost));
    assert!(cgroup_v1("memory", "memory.limit_in_bytes", &lost).is_none());
    assert!(!env.path.join("_layers/half.part").exists());
    assert_eq!(again.power_state(&kept).await.unwrap(), PowerState::Running, "the others run on");
    again.destroy(&kept).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn one_node_runs_vms_and_containers_side_by_side() {
    let Some(archive) = image() else { return };
    let (ctr, vm) = (uid("mix-c"), uid("mix-v"));
    let env = Env::new(&archive, &[&ctr]);
    let container = std::sync::Arc::new(env.driver());
    let fake = std::sync::Arc::new(compute_agent::FakeDriver::new(compute_agent::FakeConfig::default()));
    let node = compute_agent::MultiDriver::new(fake.clone(), container.clone());
    assert_eq!(node.name(), "qemu+container");

    // A docker image becomes a container, another image a VM (of the fake driver here).
    let (c_spec, c_ctx) = instance(&ctr, "ctr-image", "docker");
    node.spawn(&c_spec, &c_ctx).await.unwrap();
    let (v_spec, v_ctx) = instance(&vm, "vm-image", "bare");
    node.spawn(&v_spec, &v_ctx).await.unwrap();
    assert!(container.container_pid(&ctr).await.is_some());
    assert_eq!(fake.power_state(&vm).await.unwrap(), PowerState::Running);
    assert!(matches!(container.power_state(&vm).await, Err(Error::NotFound(_))));
    wait_console(&container, &ctr, MARKER, 1).await;

    let mut guests: Vec<String> = node.list_guests().await.unwrap().into_iter().map(|g| g.uuid).collect();
    guests.sort();
    let mut want = vec![ctr.clone(), vm.clone()];
    want.sort();
    assert_eq!(guests, want);
    let info = node.host_info().await.unwrap();
    assert_eq!(info.running_vms, 2);
    assert_eq!(info.memory_mb_used, 2 * 64);
    let supported = node.supported_instances().await;
    assert!(supported.iter().any(|s| s[1] == "docker") && supported.iter().any(|s| s[1] == "fake"), "{supported:?}");

    // Later operations go to the driver that has the instance.
    node.power_off(&ctr).await.unwrap();
    assert_eq!(node.power_state(&ctr).await.unwrap(), PowerState::Shutdown);
    assert_eq!(node.power_state(&vm).await.unwrap(), PowerState::Running);
    node.pause(&vm).await.unwrap();
    assert_eq!(fake.power_state(&vm).await.unwrap(), PowerState::Paused);
    assert!(node.console_output(&ctr).await.unwrap().contains(MARKER));
    for uuid in [&ctr, &vm] {
        node.destroy(uuid).await.unwrap();
        assert!(matches!(node.power_state(uuid).await, Err(Error::NotFound(_))));
    }
    assert!(!env.path.join(&ctr).exists());
}

/// Runs `args` inside the container with the runtime's `exec`.
fn exec(env: &Env, uuid: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("runc").arg("--root").arg(env.path.join("_runtime")).args(["exec", uuid]).args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_is_a_block_device_in_the_container_while_attached() {
    let Some(archive) = image() else { return };
    let c = uid("vol");
    let env = Env::new(&archive, &[&c]);
    let driver = env.driver();
    let (spec, ctx) = instance(&c, "ctr-image", "docker");
    driver.spawn(&spec, &ctx).await.unwrap();
    wait_console(&driver, &c, MARKER, 1).await;

    // A raw volume file of the file driver, with a marker at its start.
    let file = env.path.join("volume-v1");
    let mut data = b"stratus volume v1".to_vec();
    data.resize(4 << 20, 0);
    std::fs::write(&file, &data).unwrap();
    let device = compute_agent::hypervisor::BlockDeviceSpec {
        volume_id: "v1".into(),
        device_name: "/dev/vdb".into(),
        boot_index: None,
        connection_info: serde_json::json!({"driver_volume_type": "local", "data": {"device_path": file, "format": "raw"}}),
    };
    struct Loops(PathBuf);
    impl Drop for Loops {
        fn drop(&mut self) {
            let out = std::process::Command::new("losetup").arg("-j").arg(&self.0).output().unwrap();
            for dev in String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split(':').next()) {
                let _ = std::process::Command::new("losetup").args(["-d", dev]).output();
            }
        }
    }
    let _loops = Loops(file.clone());

    // Hot-attached: the running container reads and writes it.
    driver.attach_volume(&spec, &device).await.unwrap();
    let read = exec(&env, &c, &["dd", "if=/dev/vdb", "bs=17", "count=1"]);
    assert_eq!(String::from_utf8_lossy(&read.stdout), "stratus volume v1", "{}", String::from_utf8_lossy(&read.stderr));
    let wrote = exec(&env, &c, &["sh", "-c", "echo written-in-the-container | dd of=/dev/vdb bs=512 seek=1 conv=fsync"]);
    assert!(wrote.status.success(), "{}", String::from_utf8_lossy(&wrote.stderr));
    assert!(std::fs::read(&file).unwrap()[512..].starts_with(b"written-in-the-container"));
    // Other host disks stay out of reach.
    let other = exec(&env, &c, &["sh", "-c", "mknod /dev/other b 7 200 && dd if=/dev/other bs=1 count=1"]);
    assert!(!other.status.success(), "only the volume's device is allowed");

    // A restart keeps it; a detach takes it away and frees the loop device.
    driver.reboot(&spec, &ctx, true).await.unwrap();
    wait_console(&driver, &c, MARKER, 2).await;
    let read = exec(&env, &c, &["dd", "if=/dev/vdb", "bs=17", "count=1"]);
    assert_eq!(String::from_utf8_lossy(&read.stdout), "stratus volume v1");
    driver.detach_volume(&c, "v1").await.unwrap();
    assert!(!exec(&env, &c, &["test", "-b", "/dev/vdb"]).status.success(), "the device is gone");
    let loops = std::process::Command::new("losetup").arg("-j").arg(&file).output().unwrap();
    assert!(loops.stdout.is_empty(), "{}", String::from_utf8_lossy(&loops.stdout));
    // A volume the driver cannot attach says why.
    let iscsi = compute_agent::hypervisor::BlockDeviceSpec {
        connection_info: serde_json::json!({"driver_volume_type": "iscsi", "data": {}}),
        ..device.clone()
    };
    let err = driver.attach_volume(&spec, &iscsi).await.unwrap_err().to_string();
    assert!(err.contains("iscsi"), "{err}");
    driver.destroy(&c).await.unwrap();
}
