//! Instances' ports from binding to a guest on the wire: the compute agent's qemu driver starts QEMU in the test's
//! host namespace (where its taps appear), the network agent plugs the taps into the network's bridge and reports
//! them up, the network service sets the ports ACTIVE and tells compute (`network-vif-plugged`), and only then do
//! the instances go ACTIVE. The guests (the test image: DHCP on every NIC, httpd on port 80) get their fixed IPs
//! from the agent's dnsmasq and answer HTTP from the DHCP namespace. A port nobody plugs fails its build after
//! `vif_plugging_timeout`. Needs root, dnsmasq, busybox, QEMU and the test image (`cargo xtask image build`).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use test_utils::TestCloud;

use super::{Namespaces, can_run, ip, wait_for};

fn image_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("STRATUS_TEST_VM_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-image"));
    let have_qemu = Command::new("qemu-system-x86_64").arg("--version").output().is_ok_and(|o| o.status.success());
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

/// Kills the QEMU processes of a data directory's instances when dropped (a failed test leaves none running).
struct Guests(PathBuf);

impl Drop for Guests {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            if let Ok(pid) = std::fs::read_to_string(entry.path().join("qemu.pid")) {
                let _ = Command::new("kill").args(["-9", pid.trim()]).status();
            }
        }
    }
}

async fn upload_image(cloud: &TestCloud, file: &Path) -> String {
    let r = cloud
        .admin
        .post("/image/v2/images", &json!({"name": "stratus-test-vm", "disk_format": "qcow2", "container_format": "bare", "visibility": "public"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = reqwest::Client::new()
        .put(format!("{}/image/v2/images/{id}/file", cloud.url))
        .header("x-auth-token", cloud.admin.token.clone().unwrap())
        .header("content-type", "application/octet-stream")
        .body(std::fs::read(file).unwrap())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "image upload answered {}", r.status());
    id
}

async fn make_network(cloud: &TestCloud, cidr: &str) -> (String, u64) {
    let r = cloud.admin.post("/networking/v2.0/networks", &json!({"network": {"name": "vif-net"}})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let net = r.json()["network"].clone();
    let r = cloud
        .admin
        .post("/networking/v2.0/subnets", &json!({"subnet": {"network_id": net["id"], "cidr": cidr, "ip_version": 4}}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    (net["id"].as_str().unwrap().to_string(), net["mtu"].as_u64().unwrap())
}

async fn wait_hypervisor(cloud: &TestCloud) {
    let start = Instant::now();
    loop {
        let r = cloud.admin.get("/compute/v2.1/os-hypervisors").await;
        if r.json()["hypervisors"].as_array().is_some_and(|h| !h.is_empty()) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no hypervisor registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ports_of(cloud: &TestCloud, server: &str) -> Vec<Value> {
    cloud.admin.get(&format!("/networking/v2.0/ports?device_id={server}")).await.json()["ports"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn console_line(console: &str, nic: &str) -> Option<String> {
    let prefix = format!("stratus-test-vm: {nic}: ");
    console.lines().find_map(|l| l.trim().strip_prefix(&prefix).map(|s| s.trim().to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_get_their_ports_plugged_before_active_and_their_fixed_ips_by_dhcp() {
    if !can_run() {
        return;
    }
    let Some(images) = image_dir() else { return };
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let spaces = Namespaces { prefix: format!("v{tag}-") };
    let host_ns = spaces.add("host");
    let host = format!("vifhost-{tag}");
    let (h, hn, prefix) = (host.clone(), host_ns.clone(), spaces.prefix.clone());
    let cloud = TestCloud::start_with_options(
        move |c| {
            c.compute_agent.host = Some(h);
            c.compute_agent.driver = "qemu".into();
            c.compute_agent.qemu.virt_type = "qemu".into();
            c.compute_agent.qemu.shutdown_timeout = 5;
            c.compute_agent.vif_plugging_timeout = 120;
            c.network_agent.host_namespace = Some(hn);
            c.network_agent.namespace_prefix = prefix;
            c.network_agent.polling_interval = 0.1;
        },
        cloud::StartOptions {
            compute_agent: true,
            volume_agent: false,
            network_agent: true,
            ..cloud::StartOptions::all_in_one()
        },
    )
    .await;
    let _guests = Guests(cloud.running.data_dir.join("instances"));
    let image = upload_image(&cloud, &images.join("stratus-test-vm.qcow2")).await;
    let (net_id, mtu) = make_network(&cloud, "10.81.0.0/24").await;
    wait_hypervisor(&cloud).await;

    // Two servers on the network (their host names from the config drive); the flavor is m1.nano (id 42).
    let started = Instant::now();
    let mut servers = Vec::new();
    for name in ["vif-a", "vif-b"] {
        let body = json!({"server": {"name": name, "imageRef": image, "flavorRef": "42", "config_drive": true,
            "networks": [{"uuid": net_id}]}});
        let r = cloud.admin.post("/compute/v2.1/servers", &body).await;
        assert_eq!(r.status, 202, "{}", r.text);
        servers.push((name, r.json()["server"]["id"].as_str().unwrap().to_string()));
    }

    // Each port: DOWN while bound and unplugged, its tap in the host namespace, then ACTIVE; each server
    // ACTIVE only once its port is.
    let mut port_of = Vec::new();
    let mut tap_seen = vec![None; servers.len()];
    let mut port_active = vec![None; servers.len()];
    let mut server_active = vec![None; servers.len()];
    let deadline = Duration::from_secs(240);
    while server_active.iter().any(Option::is_none) {
        assert!(started.elapsed() < deadline, "servers not ACTIVE in time: {server_active:?}, ports {port_active:?}");
        for (i, (_, id)) in servers.iter().enumerate() {
            let ports = ports_of(&cloud, id).await;
            if let Some(p) = ports.first() {
                if port_of.len() <= i {
                    port_of.push(p.clone());
                }
                let tap = format!("tap{}", &p["id"].as_str().unwrap()[..11]);
                if tap_seen[i].is_none()
                    && Command::new("ip")
                        .args(["-n", &host_ns, "link", "show", &tap])
                        .output()
                        .is_ok_and(|o| o.status.success())
                {
                    tap_seen[i] = Some(started.elapsed());
                }
                if port_active[i].is_none() && p["status"] == "ACTIVE" {
                    port_active[i] = Some(started.elapsed());
                }
            }
            if server_active[i].is_none() {
                let s = cloud.admin.get(&format!("/compute/v2.1/servers/{id}")).await.json()["server"].clone();
                assert_ne!(s["status"], "ERROR", "{s}");
                if s["status"] == "ACTIVE" {
                    server_active[i] = Some(started.elapsed());
                    // the server is ACTIVE: its port went ACTIVE before (the event comes after the status)
                    let ports = ports_of(&cloud, id).await;
                    assert_eq!(ports.len(), 1);
                    assert_eq!(ports[0]["status"], "ACTIVE", "server ACTIVE with its port {}", ports[0]);
                    port_active[i].get_or_insert(started.elapsed());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // HTTP from outside the servers' group is opened in it (their default group admits only its own members).
    super::allow_ingress(&cloud.admin, &port_of[0], Some("tcp")).await;

    // DHCP: each console shows the port's fixed IP; each guest answers HTTP with its host name from the DHCP
    // namespace.
    let dhcp_ns = format!("{}qdhcp-{net_id}", spaces.prefix);
    let mut leased = Vec::new();
    for (i, (name, id)) in servers.iter().enumerate() {
        let fixed = port_of[i]["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string();
        let mac = port_of[i]["mac_address"].as_str().unwrap().to_string();
        let start = Instant::now();
        let line = loop {
            let r = cloud
                .admin
                .post(&format!("/compute/v2.1/servers/{id}/action"), &json!({"os-getConsoleOutput": {}}))
                .await;
            let out = r.json()["output"].as_str().unwrap_or_default().to_string();
            // the guest's httpd runs once it printed its boot marker, after the lease
            let ready = out.contains("STRATUS-TEST-VM-READY");
            if let Some(line) = console_line(&out, "eth0").filter(|_| ready) {
                break line;
            }
            if ready {
                let files = cloud.running.data_dir.join("network-agent/dhcp").join(&net_id);
                panic!(
                    "{name} booted without a lease:\n{out}\ndnsmasq log:\n{}\nhost links:\n{}",
                    std::fs::read_to_string(files.join("dnsmasq.log")).unwrap_or_default(),
                    ip(&["-n", &host_ns, "-o", "link", "show"])
                );
            }
            assert!(start.elapsed() < Duration::from_secs(120), "{name}: no DHCP line on the console:\n{out}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert_eq!(line, format!("{fixed}/24"), "{name}");
        leased.push(started.elapsed());
        // the guest's NIC is the port's MAC on the network's MTU
        let tap = format!("tap{}", &port_of[i]["id"].as_str().unwrap()[..11]);
        let link = ip(&["-n", &host_ns, "-o", "link", "show", &tap]);
        assert!(
            link.contains(&format!("master brq{}", &net_id[..11])) && link.contains(&format!("mtu {mtu}")),
            "{link}"
        );
        let http = Command::new("ip")
            .args([
                "netns",
                "exec",
                &dhcp_ns,
                "wget",
                "-q",
                "-T",
                "5",
                "-t",
                "2",
                "-O",
                "-",
                &format!("http://{fixed}/"),
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&http.stdout).trim(), *name, "{name} ({mac}) over HTTP: {http:?}");
    }
    // A hard reboot ends the guest's QEMU (its tap goes) and starts it again: the tap comes back on the bridge, the
    // port is ACTIVE again and the guest gets its address again.
    let (name, id) = &servers[0];
    let fixed = port_of[0]["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string();
    let r = cloud.admin.post(&format!("/compute/v2.1/servers/{id}/action"), &json!({"reboot": {"type": "HARD"}})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let start = Instant::now();
    loop {
        let s = cloud.admin.get(&format!("/compute/v2.1/servers/{id}")).await.json()["server"].clone();
        let r =
            cloud.admin.post(&format!("/compute/v2.1/servers/{id}/action"), &json!({"os-getConsoleOutput": {}})).await;
        let out = r.json()["output"].as_str().unwrap_or_default().to_string();
        let leases = out.lines().filter(|l| l.contains("stratus-test-vm: eth0: ")).count();
        let ready = out.matches("STRATUS-TEST-VM-READY").count();
        if s["status"] == "ACTIVE" && s["OS-EXT-STS:task_state"].is_null() && leases >= 2 && ready >= 2 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{name}: no second lease after a hard reboot: {s}\n{out}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rebooted = start.elapsed();
    let start = Instant::now();
    while ports_of(&cloud, id).await[0]["status"] != "ACTIVE" {
        assert!(start.elapsed() < Duration::from_secs(15), "{name}: its port is not ACTIVE after the reboot");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tap = format!("tap{}", &port_of[0]["id"].as_str().unwrap()[..11]);
    let link = ip(&["-n", &host_ns, "-o", "link", "show", &tap]);
    assert!(link.contains(&format!("master brq{}", &net_id[..11])), "{link}");
    let http = Command::new("ip")
        .args(["netns", "exec", &dhcp_ns, "wget", "-q", "-T", "5", "-t", "2", "-O", "-", &format!("http://{fixed}/")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&http.stdout).trim(), *name, "{name} after a reboot: {http:?}");
    eprintln!(
        "{name}: hard reboot to a new DHCP lease and the boot marker on the console {:.2} s",
        rebooted.as_secs_f64()
    );

    for (i, (name, _)) in servers.iter().enumerate() {
        let secs = |d: Option<Duration>| d.map(|d| format!("{:.2}", d.as_secs_f64())).unwrap_or("-".into());
        eprintln!(
            "{name}: tap seen {} s, port ACTIVE {} s, server ACTIVE {} s, DHCP lease and boot marker on the console {} s (since POST /servers)",
            secs(tap_seen[i]),
            secs(port_active[i]),
            secs(server_active[i]),
            secs(Some(leased[i]))
        );
    }

    // Deleting the servers takes their taps away; their ports go.
    for (_, id) in &servers {
        assert_eq!(cloud.admin.delete(&format!("/compute/v2.1/servers/{id}")).await.status, 204);
    }
    for p in &port_of {
        let tap = format!("tap{}", &p["id"].as_str().unwrap()[..11]);
        wait_for(&format!("{tap} to go"), Duration::from_secs(60), || {
            !Command::new("ip").args(["-n", &host_ns, "link", "show", &tap]).output().is_ok_and(|o| o.status.success())
        })
        .await;
    }
    cloud.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_never_plugged_fails_the_build_after_vif_plugging_timeout() {
    if !can_run() {
        return;
    }
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let spaces = Namespaces { prefix: format!("w{tag}-") };
    let host_ns = spaces.add("host");
    let host = format!("vifhost-{tag}");
    let (h, hn, prefix) = (host.clone(), host_ns.clone(), spaces.prefix.clone());
    // The fake driver makes no tap: the network agent of the host never sees the port's device.
    let cloud = TestCloud::start_with_options(
        move |c| {
            c.compute_agent.host = Some(h);
            c.compute_agent.vif_plugging_timeout = 3;
            c.network_agent.host_namespace = Some(hn);
            c.network_agent.namespace_prefix = prefix;
            c.network_agent.polling_interval = 0.1;
        },
        cloud::StartOptions {
            compute_agent: true,
            volume_agent: false,
            network_agent: true,
            ..cloud::StartOptions::all_in_one()
        },
    )
    .await;
    let (net_id, _) = make_network(&cloud, "10.82.0.0/24").await;
    wait_hypervisor(&cloud).await;
    // the network agent has reported in (its first pass): ports bound to its host wait for it
    let mut passes = cloud.running.network_agent.as_ref().unwrap().passes();
    tokio::time::timeout(Duration::from_secs(15), passes.wait_for(|n| *n > 0)).await.expect("a pass").unwrap();
    let r = cloud
        .admin
        .post("/image/v2/images", &json!({"name": "x", "disk_format": "raw", "container_format": "bare"}))
        .await;
    let image = r.json()["id"].as_str().unwrap().to_string();
    let r = reqwest::Client::new()
        .put(format!("{}/image/v2/images/{image}/file", cloud.url))
        .header("x-auth-token", cloud.admin.token.clone().unwrap())
        .header("content-type", "application/octet-stream")
        .body("data")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let started = Instant::now();
    let body =
        json!({"server": {"name": "never", "imageRef": image, "flavorRef": "42", "networks": [{"uuid": net_id}]}});
    let r = cloud.admin.post("/compute/v2.1/servers", &body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["server"]["id"].as_str().unwrap().to_string();
    let server = loop {
        let s = cloud.admin.get(&format!("/compute/v2.1/servers/{id}")).await.json()["server"].clone();
        assert_ne!(s["status"], "ACTIVE", "ACTIVE with an unplugged port: {s}");
        if s["status"] == "ERROR" {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no ERROR: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = started.elapsed();
    eprintln!("build failed {:.2} s after POST /servers (vif_plugging_timeout 3 s)", took.as_secs_f64());
    assert!(took >= Duration::from_secs(3), "failed before the timeout: {took:?}");
    let message = server["fault"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("Virtual Interface creation failed"), "{server}");
    // a failed build keeps no port
    assert!(ports_of(&cloud, &id).await.is_empty());
    cloud.shutdown().await;
}
