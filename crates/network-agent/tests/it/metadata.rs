//! Metadata through the DHCP namespace: a server built by the compute service (fake driver) on a network this
//! agent serves; its "instance" is a veth end in a test namespace with the port's MAC, which takes its address and
//! the route to 169.254.169.254 from DHCP and fetches its metadata with curl through the agent's proxy from the
//! real compute metadata API. An address that is no port's gets a 404; an agent restart serves again.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use test_utils::TestCloud;

use crate::{Namespaces, can_run, dnsmasq_pids, ip, tempfile_dir, wait_for};

const SECRET: &str = "metadata-proxy-secret";

/// `curl` in namespace `ns`: (HTTP status, body, seconds taken); status 0 when no answer came.
async fn curl(ns: &str, url: &str, extra: &[&str]) -> (u16, String, f64) {
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-s", "-m", "10", "-w", "\n%{http_code} %{time_total}"])
        .args(extra)
        .arg(url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out).await.expect("curl ends").expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut tail = tail.split_whitespace();
    let code = tail.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let secs = tail.next().and_then(|c| c.parse().ok()).unwrap_or(f64::NAN);
    (code, body.to_string(), secs)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn image(c: &test_utils::Client) -> String {
    let r = c.post("/image/v2/images", &json!({"name": "boot", "disk_format": "raw", "container_format": "bare"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = c
        .request(reqwest::Method::PUT, &format!("/image/v2/images/{id}/file"), None, &[("content-type", "application/octet-stream")])
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    id
}

async fn server_status(c: &test_utils::Client, id: &str, want: &str) -> Value {
    let start = Instant::now();
    loop {
        let s = c.get(&format!("/compute/v2.1/servers/{id}")).await.json()["server"].clone();
        if s["status"] == want && s["OS-EXT-STS:task_state"].is_null() {
            return s;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "server {id} never became {want}: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A server of the member's named `name` on network `net_id`, once the compute agent registered: its id and its
/// view when ACTIVE.
async fn boot_on(cloud: &TestCloud, name: &str, net_id: &str) -> (String, Value) {
    let start = Instant::now();
    while cloud.admin.get("/compute/v2.1/os-hypervisors").await.json()["hypervisors"].as_array().is_none_or(|h| h.is_empty()) {
        assert!(start.elapsed() < Duration::from_secs(20), "the compute agent never registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = &cloud.member;
    let img = image(m).await;
    let body = json!({"server": {"name": name, "imageRef": img, "flavorRef": "1", "networks": [{"uuid": net_id}]}});
    let r = m.post("/compute/v2.1/servers", &body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let server_id = r.json()["server"]["id"].as_str().unwrap().to_string();
    let server = server_status(m, &server_id, "ACTIVE").await;
    (server_id, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_gets_its_own_metadata_through_the_dhcp_namespace() {
    if !can_run() {
        return;
    }
    let (tag, spaces) = Namespaces::fresh();
    let host_ns = spaces.add("host");
    let vm_ns = spaces.add("vm");
    let host = format!("mdhost-{tag}");
    let (h, hn, prefix) = (host.clone(), host_ns.clone(), spaces.prefix.clone());
    let mut cloud = TestCloud::start_with_options(
        move |c| {
            c.compute_agent.host = Some(h.clone());
            crate::on_host(c, h, hn, prefix);
            c.compute.metadata_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
            c.compute.metadata_proxy_shared_secret = SECRET.into();
            // The fake driver plugs no tap (the instance's NIC is the veth the test makes once the port exists):
            // builds do not wait for network-vif-plugged.
            c.compute_agent.vif_plugging_timeout = 0;
        },
        cloud::StartOptions { volume_agent: false, network_agent: true, ..cloud::StartOptions::all_in_one() },
    )
    .await;
    let metadata_addr = cloud.running.metadata_addr.expect("a metadata listener");
    let m = &cloud.member;

    // a project network and a server on it, bound to this host
    let r = m.post("/networking/v2.0/networks", &json!({"network": {"name": "md-net"}})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let net_id = r.json()["network"]["id"].as_str().unwrap().to_string();
    let r = m.post("/networking/v2.0/subnets", &json!({"subnet": {"network_id": net_id, "cidr": "10.79.0.0/24", "ip_version": 4}})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    // a port of no instance keeps the network on this host when the server goes
    let r = cloud.admin.post("/networking/v2.0/ports", &json!({"port": {"network_id": net_id, "binding:host_id": host}})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let (server_id, server) = boot_on(&cloud, "md-vm", &net_id).await;
    let r = cloud.admin.get(&format!("/networking/v2.0/ports?device_id={server_id}")).await;
    let port = r.json()["ports"][0].clone();
    assert_eq!(port["binding:host_id"], json!(host), "{port}");
    let (port_id, mac) = (port["id"].as_str().unwrap().to_string(), port["mac_address"].as_str().unwrap().to_string());
    let fixed_ip = port["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string();

    // the DHCP namespace carries the metadata address and dnsmasq runs
    let dhcp_ns = format!("{}qdhcp-{net_id}", spaces.prefix);
    wait_for("DHCP with the metadata address", Duration::from_secs(20), || {
        Path::new("/run/netns").join(&dhcp_ns).exists()
            && !dnsmasq_pids(&dhcp_ns).is_empty()
            && ip(&["-n", &dhcp_ns, "-o", "addr", "show"]).contains("169.254.169.254/32")
    })
    .await;
    let r = cloud.admin.get(&format!("/networking/v2.0/ports?network_id={net_id}&device_owner=network:dhcp")).await;
    let dhcp_ip = r.json()["ports"][0]["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string();
    let opts = std::fs::read_to_string(cloud.running.data_dir.join("network-agent/dhcp").join(&net_id).join("opts")).unwrap();
    assert!(opts.contains(&format!("option:classless-static-route,169.254.169.254/32,{dhcp_ip},0.0.0.0/0,10.79.0.1")), "{opts}");
    assert!(opts.contains(&format!(",249,169.254.169.254/32,{dhcp_ip},0.0.0.0/0,10.79.0.1")), "{opts}");

    // the instance: the port's MAC on a veth whose other end is the port's tap
    let tap = format!("tap{}", &port_id[..11]);
    ip(&["-n", &host_ns, "link", "add", &tap, "type", "veth", "peer", "name", "eth0", "netns", &vm_ns]);
    ip(&["-n", &vm_ns, "link", "set", "eth0", "address", &mac, "up"]);
    let bridge = format!("brq{}", &net_id[..11]);
    wait_for("the tap on the bridge", Duration::from_secs(15), || {
        ip(&["-n", &host_ns, "-o", "link", "show", &tap]).contains(&format!("master {bridge}"))
    })
    .await;

    // its lease carries the route to the metadata address through the DHCP port; it applies it as a guest does
    let dir = tempfile_dir();
    let (script, lease) = (dir.join("udhcpc.sh"), dir.join("lease"));
    std::fs::write(&script, format!("#!/bin/sh\n[ \"$1\" = bound ] && env > {}\nexit 0\n", lease.display())).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let client = tokio::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &vm_ns,
            "busybox",
            "udhcpc",
            "-i",
            "eth0",
            "-n",
            "-q",
            "-f",
            "-t",
            "15",
            "-T",
            "1",
            "-O",
            "staticroutes",
            "-s",
        ])
        .arg(&script)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), client).await.expect("udhcpc ends").expect("udhcpc runs");
    let env = std::fs::read_to_string(&lease).unwrap_or_default();
    assert!(out.status.success() && !env.is_empty(), "no lease: {}", String::from_utf8_lossy(&out.stderr));
    let var = |k: &str| env.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap_or("").to_string();
    assert_eq!(var("ip"), fixed_ip, "{env}");
    let routes: Vec<String> = var("staticroutes").split_whitespace().map(str::to_string).collect();
    let pairs: Vec<(&str, &str)> = routes.chunks(2).map(|c| (c[0].as_str(), c.get(1).map_or("", |s| s.as_str()))).collect();
    assert!(pairs.contains(&("169.254.169.254/32", dhcp_ip.as_str())), "{env}");
    ip(&["-n", &vm_ns, "addr", "add", &format!("{fixed_ip}/{}", var("mask")), "dev", "eth0"]);
    for (dst, via) in &pairs {
        let dst = if *dst == "0.0.0.0/0" { "default" } else { dst };
        ip(&["-n", &vm_ns, "route", "add", dst, "via", via]);
    }

    // the instance's own metadata, from the compute service
    let url = "http://169.254.169.254/openstack/latest/meta_data.json";
    let (code, body, _) = curl(&vm_ns, url, &[]).await;
    assert_eq!(code, 200, "{body}");
    let md: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(md["uuid"], json!(server_id), "{md}");
    assert_eq!(md["name"], "md-vm");
    assert_eq!(md["hostname"], "md-vm", "{md}");
    assert_eq!(md["project_id"], server["tenant_id"], "{md}");
    let (code, ec2_ip, _) = curl(&vm_ns, "http://169.254.169.254/latest/meta-data/local-ipv4", &[]).await;
    assert_eq!((code, ec2_ip.as_str()), (200, fixed_ip.as_str()));
    // the metadata API's own answers pass through: an unknown item is its 404
    let (code, _, _) = curl(&vm_ns, "http://169.254.169.254/openstack/latest/nothing-here", &[]).await;
    assert_eq!(code, 404);
    // POST is forwarded with its body: the guest leaves its (encrypted) password once, and reads it back
    let password_url = "http://169.254.169.254/openstack/latest/password";
    let (code, body, _) = curl(&vm_ns, password_url, &["-X", "POST", "--data-binary", "c2VjcmV0"]).await;
    assert_eq!(code, 200, "{body}");
    let (code, body, _) = curl(&vm_ns, password_url, &[]).await;
    assert_eq!((code, body.as_str()), (200, "c2VjcmV0"));
    let (code, _, _) = curl(&vm_ns, password_url, &["-X", "POST", "--data-binary", "again"]).await;
    assert_eq!(code, 409, "a password is left once");
    // other methods are not
    let (code, _, _) = curl(&vm_ns, password_url, &["-X", "DELETE"]).await;
    assert_eq!(code, 405);

    // latency: through the proxy, and straight to the metadata API with the headers the proxy adds, alternately
    let sig = network_agent::metadata::sign(SECRET, &server_id);
    let tenant = server["tenant_id"].as_str().unwrap().to_string();
    let direct_url = format!("http://{metadata_addr}/openstack/latest/meta_data.json");
    let headers = [
        "-H".to_string(),
        format!("X-Instance-ID: {server_id}"),
        "-H".into(),
        format!("X-Tenant-ID: {tenant}"),
        "-H".into(),
        format!("X-Instance-ID-Signature: {sig}"),
    ];
    let (mut proxied, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..30 {
        let (code, _, secs) = curl(&vm_ns, url, &[]).await;
        assert_eq!(code, 200);
        proxied.push(secs * 1000.0);
        let out = tokio::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-m", "10", "-w", "%{http_code} %{time_total}"])
            .args(&headers)
            .arg(&direct_url)
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (code, secs) = text.split_once(' ').unwrap();
        assert_eq!(code, "200");
        direct.push(secs.parse::<f64>().unwrap() * 1000.0);
    }
    let extra: Vec<f64> = proxied.iter().zip(&direct).map(|(p, d)| p - d).collect();
    eprintln!(
        "metadata fetch, median of 30 (curl time_total): through the proxy {:.2} ms, straight to the API {:.2} ms, \
         the proxy's share {:.2} ms",
        median(proxied),
        median(direct),
        median(extra)
    );

    // an address that is no port's gets a 404 from the proxy (anti-spoofing would drop it first: the port's
    // security is turned off for this)
    let r = cloud
        .admin
        .request(
            reqwest::Method::PUT,
            &format!("/networking/v2.0/ports/{port_id}"),
            Some(&json!({"port": {"port_security_enabled": false, "security_groups": []}})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // an address no port of the network has (IPAM picks ports' addresses at random)
    let taken = cloud.admin.get(&format!("/networking/v2.0/ports?network_id={net_id}")).await.json()["ports"].to_string();
    let stranger = (200..254).map(|i| format!("10.79.0.{i}")).find(|a| !taken.contains(&format!("\"{a}\""))).unwrap();
    ip(&["-n", &vm_ns, "addr", "add", &format!("{stranger}/24"), "dev", "eth0"]);
    let start = Instant::now();
    let (code, body) = loop {
        let (code, body, _) = curl(&vm_ns, url, &["--interface", &stranger, "--max-time", "2"]).await;
        if code != 0 || start.elapsed() > Duration::from_secs(20) {
            break (code, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(code, 404, "{body}");

    // a restarted agent serves again (its listener went with the old one)
    cloud.running.network_agent.take().unwrap().stop().await;
    let (code, _, _) = curl(&vm_ns, url, &[]).await;
    assert_eq!(code, 0, "nothing answers while no agent runs");
    let config = cloud::agent::network_agent_config_in_process(&cloud.running.cloud.config, Some(metadata_addr)).unwrap();
    let agent = network_agent::Agent::start(config, cloud.running.cloud.bus.clone()).await.unwrap();
    let start = Instant::now();
    loop {
        let (code, body, _) = curl(&vm_ns, url, &[]).await;
        if code == 200 {
            assert!(body.contains(&server_id), "{body}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the restarted agent never served metadata: {code} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let outcome = agent.sync_now().await.unwrap();
    assert_eq!((outcome.dhcp, outcome.metadata), (1, 1), "{outcome:?}");

    // a DHCP namespace made anew gets a listener and a dnsmasq of its own (the old ones keep the old namespace)
    let old_dnsmasq = dnsmasq_pids(&dhcp_ns);
    ip(&["netns", "delete", &dhcp_ns]);
    let outcome = agent.sync_now().await.unwrap();
    assert!(outcome.errors.is_empty(), "{outcome:?}");
    let new_dnsmasq = dnsmasq_pids(&dhcp_ns);
    assert!(!new_dnsmasq.is_empty() && new_dnsmasq != old_dnsmasq, "{old_dnsmasq:?} {new_dnsmasq:?}");
    assert!(old_dnsmasq.iter().all(|pid| !network_agent::dhcp::alive(pid.parse().unwrap())), "{old_dnsmasq:?} still runs");
    let (code, body, _) = curl(&vm_ns, url, &[]).await;
    assert_eq!(code, 200, "{body}");

    // the server goes: its address no longer gets metadata
    assert_eq!(m.delete(&format!("/compute/v2.1/servers/{server_id}")).await.status, 204);
    let start = Instant::now();
    loop {
        let (code, _, _) = curl(&vm_ns, url, &[]).await;
        if code == 404 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "a deleted server's address still gets {code}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outcome = agent.teardown().await.unwrap();
    assert!(outcome.errors.is_empty(), "{outcome:?}");
    assert!(!Path::new("/run/netns").join(&dhcp_ns).exists());
    cloud.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_on_a_network_without_dhcp_gets_its_metadata_through_its_router() {
    if !can_run() {
        return;
    }
    let (tag, spaces) = Namespaces::fresh();
    let host_ns = spaces.add("host");
    let vm_ns = spaces.add("vm");
    let host = format!("mdrhost-{tag}");
    let (h, hn, prefix) = (host.clone(), host_ns.clone(), spaces.prefix.clone());
    let cloud = TestCloud::start_with_options(
        move |c| {
            c.compute_agent.host = Some(h.clone());
            crate::on_host(c, h, hn, prefix);
            c.compute.metadata_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
            c.compute.metadata_proxy_shared_secret = SECRET.into();
            c.compute_agent.vif_plugging_timeout = 0;
        },
        cloud::StartOptions { volume_agent: false, network_agent: true, ..cloud::StartOptions::all_in_one() },
    )
    .await;
    let m = &cloud.member;
    // a network whose subnet has no DHCP, behind a router
    let r = m.post("/networking/v2.0/networks", &json!({"network": {"name": "mdr-net"}})).await;
    let net_id = r.json()["network"]["id"].as_str().unwrap().to_string();
    let body = json!({"subnet": {"network_id": net_id, "cidr": "10.78.0.0/24", "ip_version": 4, "enable_dhcp": false}});
    let r = m.post("/networking/v2.0/subnets", &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let subnet_id = r.json()["subnet"]["id"].as_str().unwrap().to_string();
    let r = m.post("/networking/v2.0/routers", &json!({"router": {"name": "mdr"}})).await;
    let router_id = r.json()["router"]["id"].as_str().unwrap().to_string();
    let path = format!("/networking/v2.0/routers/{router_id}/add_router_interface");
    let r = m.request(reqwest::Method::PUT, &path, Some(&json!({"subnet_id": subnet_id})), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (server_id, _) = boot_on(&cloud, "mdr-vm", &net_id).await;
    let port = cloud.admin.get(&format!("/networking/v2.0/ports?device_id={server_id}")).await.json()["ports"][0].clone();
    let (port_id, mac) = (port["id"].as_str().unwrap().to_string(), port["mac_address"].as_str().unwrap().to_string());
    let fixed_ip = port["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string();

    // no DHCP namespace; the router's namespace holds the metadata address
    let router_ns = format!("{}qrouter-{router_id}", spaces.prefix);
    wait_for("the router with the metadata address", Duration::from_secs(20), || {
        Path::new("/run/netns").join(&router_ns).exists() && ip(&["-n", &router_ns, "-o", "addr", "show", "dev", "lo"]).contains("169.254.169.254/32")
    })
    .await;
    assert!(!Path::new("/run/netns").join(format!("{}qdhcp-{net_id}", spaces.prefix)).exists());

    // the instance, configured by hand as a guest without DHCP is: its default route is the router
    let tap = format!("tap{}", &port_id[..11]);
    ip(&["-n", &host_ns, "link", "add", &tap, "type", "veth", "peer", "name", "eth0", "netns", &vm_ns]);
    ip(&["-n", &vm_ns, "link", "set", "eth0", "address", &mac, "up"]);
    ip(&["-n", &vm_ns, "addr", "add", &format!("{fixed_ip}/24"), "dev", "eth0"]);
    ip(&["-n", &vm_ns, "route", "add", "default", "via", "10.78.0.1"]);
    let url = "http://169.254.169.254/openstack/latest/meta_data.json";
    let start = Instant::now();
    let body = loop {
        let (code, body, _) = curl(&vm_ns, url, &["--max-time", "2"]).await;
        if code == 200 {
            break body;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no metadata through the router: {code} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let md: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(md["uuid"], json!(server_id), "{md}");

    // the router goes: its listener with it
    let path = format!("/networking/v2.0/routers/{router_id}/remove_router_interface");
    let r = m.request(reqwest::Method::PUT, &path, Some(&json!({"subnet_id": subnet_id})), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(m.delete(&format!("/networking/v2.0/routers/{router_id}")).await.status, 204);
    wait_for("the router's namespace to go", Duration::from_secs(20), || !Path::new("/run/netns").join(&router_ns).exists()).await;
    let agent = cloud.running.network_agent.as_ref().unwrap();
    assert!(agent.metadata_namespaces().iter().all(|n| n != &router_ns), "the router's metadata listener stopped");
    cloud.shutdown().await;
}
