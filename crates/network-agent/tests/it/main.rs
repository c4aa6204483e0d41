//! The network agent against a whole cloud: its bridges and devices live in a network namespace the test makes
//! (`[network_agent] host_namespace`), its DHCP namespaces carry a prefix of the test's own, and an "instance" is a
//! veth end in another test namespace running busybox's DHCP client. Everything the test makes is removed when it
//! ends, passed or failed. Needs root, iproute2, dnsmasq and busybox (`scripts/host-tools`).

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::json;
use test_utils::TestCloud;

mod metadata;
mod ipv6;
mod router;
mod vif;
mod security_groups;

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn can_run() -> bool {
    let root = rustix_root();
    let tools = ["dnsmasq", "busybox"].iter().all(|t| {
        Command::new("sh").args(["-c", &format!("command -v {t} || test -x /usr/sbin/{t}")]).output().is_ok_and(|o| o.status.success())
    });
    if !root || !tools {
        eprintln!("skipped: needs root, dnsmasq and busybox (scripts/host-tools)");
    }
    root && tools
}

fn rustix_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// Removes every namespace whose name starts with the prefix, and what runs in them, when dropped.
struct Namespaces {
    prefix: String,
}

impl Namespaces {
    /// A short random tag and the namespaces named after it (`t<tag>-…`), removed when dropped.
    fn fresh() -> (String, Namespaces) {
        let tag = uuid::Uuid::new_v4().simple().to_string()[..6].to_string();
        let spaces = Namespaces { prefix: format!("t{tag}-") };
        (tag, spaces)
    }

    fn add(&self, suffix: &str) -> String {
        let name = format!("{}{suffix}", self.prefix);
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        name
    }

    fn present(&self) -> Vec<String> {
        std::fs::read_dir("/run/netns")
            .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.starts_with(&self.prefix)).collect())
            .unwrap_or_default()
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in self.present() {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "delete", &ns]).status();
        }
    }
}

/// A test cloud's network agent: it serves `host`, its devices in namespace `host_ns`, its own namespaces under
/// `prefix`, looking for new taps every 0.1 s.
fn on_host(c: &mut cloud::Config, host: String, host_ns: String, prefix: String) {
    c.network_agent.host = Some(host);
    c.network_agent.host_namespace = Some(host_ns);
    c.network_agent.namespace_prefix = prefix;
    c.network_agent.polling_interval = 0.1;
}

/// A cloud with the network agent and neither compute nor volume agent.
fn agent_only() -> cloud::StartOptions {
    cloud::StartOptions { compute_agent: false, volume_agent: false, network_agent: true, ..cloud::StartOptions::all_in_one() }
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens IPv4 ingress (optionally one protocol) on the security groups of `port`, as a user does for traffic from
/// outside the group; the agent's next pass has it in nftables.
async fn allow_ingress(client: &test_utils::Client, port: &serde_json::Value, protocol: Option<&str>) {
    for group in port["security_groups"].as_array().into_iter().flatten() {
        let mut rule = json!({"security_group_id": group, "direction": "ingress", "ethertype": "IPv4", "remote_ip_prefix": "0.0.0.0/0"});
        if let Some(p) = protocol {
            rule["protocol"] = json!(p);
        }
        let r = client.post("/networking/v2.0/security-group-rules", &json!({"security_group_rule": rule})).await;
        assert!(r.status == 201 || r.status == 409, "{}", r.text);
    }
}

fn dnsmasq_pids(ns: &str) -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else { return vec![] };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "dnsmasq"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_gets_its_fixed_ip_by_dhcp_and_deleting_the_network_leaves_nothing() {
    if !can_run() {
        return;
    }
    let (tag, spaces) = Namespaces::fresh();
    let host_ns = spaces.add("host");
    let vm_ns = spaces.add("vm");
    let host = format!("nethost-{tag}");

    let (h, hn, prefix) = (host.clone(), host_ns.clone(), spaces.prefix.clone());
    let cloud = TestCloud::start_with_options(
        move |c| {
            on_host(c, h, hn, prefix);
        },
        agent_only(),
    )
    .await;
    let admin = &cloud.admin;

    let r = admin.post("/networking/v2.0/networks", &json!({"network": {"name": "agent-net"}})).await;
    assert_eq!(r.status, 201, "{:?}", r.text);
    let net = r.json()["network"].clone();
    let net_id = net["id"].as_str().unwrap().to_string();
    let mtu = net["mtu"].as_u64().unwrap();
    assert_eq!(net["provider:network_type"], "vxlan");
    let r = admin
        .post(
            "/networking/v2.0/subnets",
            &json!({"subnet": {"network_id": net_id, "cidr": "10.77.0.0/24", "ip_version": 4,
                "dns_nameservers": ["192.0.2.53"],
                "host_routes": [{"destination": "10.99.0.0/16", "nexthop": "10.77.0.254"}]}}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.text);
    let r = admin
        .post("/networking/v2.0/ports", &json!({"port": {"network_id": net_id, "binding:host_id": host, "device_owner": "compute:nova"}}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.text);
    let port = r.json()["port"].clone();
    let port_id = port["id"].as_str().unwrap().to_string();
    let mac = port["mac_address"].as_str().unwrap().to_string();
    let fixed_ip = port["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string();

    // the agent wires the network: bridge, VXLAN-less (no local_ip) bridge, DHCP namespace and dnsmasq
    let dhcp_ns = format!("{}qdhcp-{net_id}", spaces.prefix);
    let bridge = format!("brq{}", &net_id[..11]);
    wait_for("the DHCP namespace and dnsmasq", Duration::from_secs(15), || {
        Path::new("/run/netns").join(&dhcp_ns).exists() && !dnsmasq_pids(&dhcp_ns).is_empty()
    })
    .await;
    assert!(ip(&["-n", &host_ns, "-o", "link", "show", "type", "bridge"]).contains(&bridge));
    // its DHCP port, in the network service
    let r = admin.get(&format!("/networking/v2.0/ports?network_id={net_id}&device_owner=network:dhcp")).await;
    let dhcp_ports = r.json()["ports"].as_array().cloned().unwrap_or_default();
    assert_eq!(dhcp_ports.len(), 1, "{:?}", r.text);
    assert_eq!(dhcp_ports[0]["binding:host_id"], json!(host));
    let dhcp_ip = dhcp_ports[0]["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string();
    let addrs = ip(&["-n", &dhcp_ns, "-o", "addr", "show"]);
    assert!(addrs.contains(&format!("{dhcp_ip}/24")), "{addrs}");

    // the "instance": a veth pair, tap end in the agent's namespace, the port's MAC inside
    let tap = format!("tap{}", &port_id[..11]);
    ip(&["-n", &host_ns, "link", "add", &tap, "type", "veth", "peer", "name", "eth0", "netns", &vm_ns]);
    ip(&["-n", &vm_ns, "link", "set", "eth0", "address", &mac, "up"]);
    wait_for("the tap on the bridge", Duration::from_secs(15), || {
        ip(&["-n", &host_ns, "-o", "link", "show", &tap]).contains(&format!("master {bridge}"))
    })
    .await;

    let dir = tempfile_dir();
    let script = dir.join("udhcpc.sh");
    let lease = dir.join("lease");
    std::fs::write(&script, format!("#!/bin/sh\n[ \"$1\" = bound ] && env > {}\nexit 0\n", lease.display())).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let client = tokio::process::Command::new("ip")
        .args(["netns", "exec", &vm_ns, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "15", "-T", "1"])
        .args(["-O", "mtu", "-O", "staticroutes", "-s"])
        .arg(&script)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), client).await.expect("udhcpc ends").expect("udhcpc runs");
    let env = std::fs::read_to_string(&lease).unwrap_or_default();
    if !out.status.success() || env.is_empty() {
        let files = cloud.running.data_dir.join("network-agent/dhcp").join(&net_id);
        let read = |f: &str| std::fs::read_to_string(files.join(f)).unwrap_or_default();
        panic!(
            "no lease: {}\nhosts:\n{}\nlog:\n{}\nhost links:\n{}\ndhcp addresses:\n{}",
            String::from_utf8_lossy(&out.stderr),
            read("host"),
            read("dnsmasq.log"),
            ip(&["-n", &host_ns, "-o", "link", "show"]),
            ip(&["-n", &dhcp_ns, "-o", "addr", "show"]),
        );
    }
    let var = |k: &str| env.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap_or("").to_string();
    assert_eq!(var("ip"), fixed_ip, "{env}");
    assert_eq!(var("router"), "10.77.0.1", "{env}");
    assert_eq!(var("dns"), "192.0.2.53", "{env}");
    assert_eq!(var("mtu"), mtu.to_string(), "{env}");
    assert_eq!(var("serverid"), dhcp_ip, "{env}");
    assert_eq!(var("hostname"), format!("host-{}", fixed_ip.replace('.', "-")), "{env}");
    assert!(var("staticroutes").contains("10.99.0.0/16 10.77.0.254"), "{env}");

    // the port goes, then the network: nothing of it stays on the host
    let r = admin.delete(&format!("/networking/v2.0/ports/{port_id}")).await;
    assert_eq!(r.status, 204);
    let r = admin.delete(&format!("/networking/v2.0/networks/{net_id}")).await;
    assert_eq!(r.status, 204, "{:?}", r.text);
    wait_for("the DHCP namespace to go", Duration::from_secs(15), || !Path::new("/run/netns").join(&dhcp_ns).exists()).await;
    let pid_file = cloud.running.data_dir.join("network-agent/dhcp").join(&net_id).join("pid");
    assert!(!pid_file.exists());
    wait_for("the bridge to go", Duration::from_secs(15), || {
        !ip(&["-n", &host_ns, "-o", "link", "show", "type", "bridge"]).contains(&bridge)
    })
    .await;
    let leftover: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&net_id))
        })
        .collect();
    assert!(leftover.is_empty(), "processes of the network remain: {leftover:?}");
    cloud.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vxlan_peers_get_flooding_entries_and_a_restarted_agent_keeps_dhcp_and_removes_orphans() {
    if !can_run() {
        return;
    }
    let (tag, spaces) = Namespaces::fresh();
    let host_ns = spaces.add("host");
    let host = format!("nethost-{tag}");
    let (h, hn, prefix) = (host.clone(), host_ns.clone(), spaces.prefix.clone());
    let mut cloud = TestCloud::start_with_options(
        move |c| {
            on_host(c, h, hn, prefix);
            c.network_agent.local_ip = Some("10.66.0.1".parse().unwrap());
        },
        agent_only(),
    )
    .await;
    let bus = cloud.running.cloud.bus.clone();
    // another host's agent, known by its tunnel endpoint
    let peer = format!("peer-{tag}");
    let report = network_rpc::AgentReport { tunnel_ip: Some("10.66.0.2".into()), interface_mappings: vec![], capabilities: vec![] };
    bus.call(&bus::Target::topic(network_rpc::PLUGIN_TOPIC), &network_rpc::GetHostState { host: peer.clone(), report }, Duration::from_secs(10))
        .await
        .unwrap();
    let admin = &cloud.admin;
    let r = admin.post("/networking/v2.0/networks", &json!({"network": {"name": "vx"}})).await;
    let net = r.json()["network"].clone();
    let net_id = net["id"].as_str().unwrap().to_string();
    let vni = net["provider:segmentation_id"].as_u64().unwrap();
    let r = admin.post("/networking/v2.0/subnets", &json!({"subnet": {"network_id": net_id, "cidr": "10.78.0.0/24", "ip_version": 4}})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    for h in [&host, &peer] {
        let r = admin.post("/networking/v2.0/ports", &json!({"port": {"network_id": net_id, "binding:host_id": h}})).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let (vxlan, bridge) = (format!("vxlan-{vni}"), format!("brq{}", &net_id[..11]));
    let dhcp_ns = format!("{}qdhcp-{net_id}", spaces.prefix);
    wait_for("the VXLAN device with its peer", Duration::from_secs(15), || {
        let fdb = Command::new("bridge").args(["-n", &host_ns, "fdb", "show", "dev", &vxlan]).output();
        fdb.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("00:00:00:00:00:00 dst 10.66.0.2"))
            && !dnsmasq_pids(&dhcp_ns).is_empty()
    })
    .await;
    let link = ip(&["-n", &host_ns, "-d", "-o", "link", "show", &vxlan]);
    assert!(link.contains(&format!("master {bridge}")) && link.contains(&format!("id {vni}")) && link.contains("local 10.66.0.1"), "{link}");
    assert!(link.contains("mtu 1450"), "{link}");
    let dnsmasq = dnsmasq_pids(&dhcp_ns);

    // the agent stops (its data plane stays); a crash leaves a namespace and a bridge of networks long gone
    cloud.running.network_agent.take().unwrap().stop().await;
    let orphan_ns = spaces.add(&format!("qdhcp-{}", uuid::Uuid::new_v4()));
    ip(&["-n", &host_ns, "link", "add", "brqdeadbeef000", "type", "bridge"]);
    let config = cloud::agent::network_agent_config(&cloud.running.cloud.config).unwrap();
    let agent = network_agent::Agent::start(config, bus.clone()).await.unwrap();
    wait_for("the orphans to go", Duration::from_secs(15), || {
        !Path::new("/run/netns").join(&orphan_ns).exists()
            && !ip(&["-n", &host_ns, "-o", "link", "show", "type", "bridge"]).contains("brqdeadbeef000")
    })
    .await;
    assert_eq!(dnsmasq_pids(&dhcp_ns), dnsmasq, "DHCP was not disturbed");
    assert!(ip(&["-n", &host_ns, "-o", "link", "show", "type", "bridge"]).contains(&bridge));

    // a teardown leaves nothing and gives the DHCP port back
    let outcome = agent.teardown().await.unwrap();
    assert!(outcome.errors.is_empty(), "{outcome:?}");
    assert!(!Path::new("/run/netns").join(&dhcp_ns).exists());
    assert!(dnsmasq.iter().all(|pid| !network_agent::dhcp::alive(pid.parse().unwrap())), "dnsmasq {dnsmasq:?} still runs");
    let links = ip(&["-n", &host_ns, "-o", "link", "show"]);
    assert!(!links.contains(&bridge) && !links.contains(&vxlan), "{links}");
    let r = admin.get(&format!("/networking/v2.0/ports?network_id={net_id}&device_owner=network:dhcp")).await;
    assert_eq!(r.json()["ports"], json!([]));
    cloud.shutdown().await;
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("netagent-it-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Whether this kernel makes 802.1Q devices (tried in a scratch namespace).
fn kernel_has_vlan(spaces: &Namespaces) -> bool {
    let ns = spaces.add("vlanprobe");
    let ok = Command::new("ip").args(["-n", &ns, "link", "add", "probe0", "type", "dummy"]).status().is_ok_and(|s| s.success())
        && Command::new("ip")
            .args(["-n", &ns, "link", "add", "link", "probe0", "name", "probe0.5", "type", "vlan", "id", "5"])
            .output()
            .is_ok_and(|o| o.status.success());
    let _ = Command::new("ip").args(["netns", "delete", &ns]).status();
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vlan_provider_network_gets_a_sub_interface_of_the_mapped_interface() {
    if !can_run() {
        return;
    }
    let (tag, spaces) = Namespaces::fresh();
    if !kernel_has_vlan(&spaces) {
        eprintln!("skipped: this kernel has no 802.1Q VLAN devices");
        return;
    }
    let host_ns = spaces.add("host");
    let host = format!("vlanhost-{tag}");
    ip(&["-n", &host_ns, "link", "add", "phys0", "type", "dummy"]);
    let (h, hn, prefix) = (host.clone(), host_ns.clone(), spaces.prefix.clone());
    let cloud = TestCloud::start_with_options(
        move |c| {
            on_host(c, h, hn, prefix);
            c.network_agent.physical_interface_mappings = vec!["public:phys0".into()];
            c.network_agent.enable_dhcp = false;
        },
        agent_only(),
    )
    .await;
    let admin = &cloud.admin;
    let body = json!({"network": {"name": "prov", "provider:network_type": "vlan", "provider:physical_network": "public",
        "provider:segmentation_id": 1234}});
    let r = admin.post("/networking/v2.0/networks", &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let net_id = r.json()["network"]["id"].as_str().unwrap().to_string();
    let r = admin.post("/networking/v2.0/ports", &json!({"port": {"network_id": net_id, "binding:host_id": host}})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let bridge = format!("brq{}", &net_id[..11]);
    wait_for("phys0.1234 on the network's bridge", Duration::from_secs(15), || {
        let links = ip(&["-n", &host_ns, "-o", "-d", "link", "show"]);
        links.lines().any(|l| l.contains("phys0.1234@phys0") && l.contains(&format!("master {bridge}")) && l.contains("vlan protocol 802.1Q id 1234"))
    })
    .await;
    let port_id = r.json()["port"]["id"].as_str().unwrap().to_string();
    assert_eq!(admin.delete(&format!("/networking/v2.0/ports/{port_id}")).await.status, 204);
    assert_eq!(admin.delete(&format!("/networking/v2.0/networks/{net_id}")).await.status, 204);
    wait_for("the sub-interface to go with the network", Duration::from_secs(15), || {
        !ip(&["-n", &host_ns, "-o", "link", "show"]).contains("phys0.1234")
    })
    .await;
    assert!(ip(&["-n", &host_ns, "-o", "link", "show"]).contains("phys0"), "the mapped interface itself stays");
    cloud.shutdown().await;
}
