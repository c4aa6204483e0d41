//! IPv6 through the whole cloud: a router with interfaces on a SLAAC subnet and on a stateful DHCPv6 subnet. The
//! "instance" on the SLAAC network makes its address from the router's advertisements (the kernel's own SLAAC in
//! its namespace), the one on the DHCPv6 network gets its address from the agent's dnsmasq (ISC dhclient), both
//! the addresses the network service chose, and they reach each other through the router.

use std::{path::Path, process::Command, time::Duration};

use serde_json::{Value, json};
use test_utils::TestCloud;

use super::{Namespaces, can_run, ip, wait_for};

fn has(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool} || test -x /usr/sbin/{tool}")]).output().is_ok_and(|o| o.status.success())
}

fn in_ns(ns: &str, script: &str) -> bool {
    Command::new("ip").args(["netns", "exec", ns, "sh", "-c", script]).status().is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slaac_and_dhcpv6_subnets_behind_a_router_get_their_addresses_and_route() {
    if !can_run() || !has("radvd") || !has("dhclient") {
        eprintln!("skipped: needs radvd and dhclient (scripts/host-tools)");
        return;
    }
    let (tag, spaces) = Namespaces::fresh();
    let host_ns = spaces.add("host");
    let host = format!("v6host-{tag}");
    let (h, hn, prefix) = (host.clone(), host_ns.clone(), spaces.prefix.clone());
    let cloud = TestCloud::start_with_options(
        move |c| {
            crate::on_host(c, h, hn, prefix);
        },
        crate::agent_only(),
    )
    .await;
    let admin = &cloud.admin;
    let post = |path: &'static str, body: Value| async move {
        let r = admin.post(&format!("/networking/v2.0/{path}"), &body).await;
        assert_eq!(r.status, 201, "{path}: {}", r.text);
        r.json()
    };
    let mut subnets = vec![];
    for (name, cidr, mode) in [("slaac", "fd61::/64", "slaac"), ("stateful", "fd62::/64", "dhcpv6-stateful")] {
        let net = post("networks", json!({"network": {"name": name}})).await["network"].clone();
        let subnet = post("subnets", json!({"subnet": {"network_id": net["id"], "cidr": cidr, "ip_version": 6,
            "ipv6_ra_mode": mode, "ipv6_address_mode": mode}}))
        .await["subnet"]
            .clone();
        subnets.push((net, subnet));
    }
    let router = post("routers", json!({"router": {"name": "r6"}})).await["router"].clone();
    let router_id = router["id"].as_str().unwrap().to_string();
    for (_, subnet) in &subnets {
        let r = admin.request(reqwest::Method::PUT, &format!("/networking/v2.0/routers/{router_id}/add_router_interface"), Some(&json!({"subnet_id": subnet["id"]})), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    // the router's namespace has both gateways, and radvd advertises both prefixes
    let router_ns = format!("{}qrouter-{router_id}", spaces.prefix);
    let l3 = cloud.running.data_dir.join("network-agent/l3");
    let pid_file = l3.join(format!("{router_id}.radvd.pid"));
    let conf_file = l3.join(format!("{router_id}.radvd.conf"));
    // (a pass may have run between the two interfaces: wait for the one with both)
    wait_for("the router's radvd with both interfaces", Duration::from_secs(20), || {
        let conf = std::fs::read_to_string(&conf_file).unwrap_or_default();
        pid_file.exists()
            && conf.contains("prefix fd61::/64")
            && conf.contains("prefix fd62::/64")
            && Path::new("/run/netns").join(&router_ns).exists()
            && ip(&["-n", &router_ns, "-o", "addr", "show"]).contains("fd62::1/64")
    })
    .await;
    let addrs = ip(&["-n", &router_ns, "-o", "addr", "show"]);
    assert!(addrs.contains("fd61::1/64") && addrs.contains("fd62::1/64"), "{addrs}");
    let conf = std::fs::read_to_string(&conf_file).unwrap();
    assert!(conf.contains("AdvManagedFlag on;"), "{conf}");

    // the instances: a port on each network, a veth whose host end is the port's tap
    let mut vms = vec![];
    for (i, (net, subnet)) in subnets.iter().enumerate() {
        let port = post("ports", json!({"port": {"network_id": net["id"], "binding:host_id": host, "device_owner": "compute:nova"}}))
            .await["port"]
            .clone();
        let fixed = port["fixed_ips"].as_array().unwrap().iter().find(|f| f["subnet_id"] == subnet["id"]).unwrap()["ip_address"]
            .as_str()
            .unwrap()
            .to_string();
        let vm = spaces.add(&format!("vm{i}"));
        assert!(in_ns(&vm, "echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad && echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad"));
        let port_id = port["id"].as_str().unwrap();
        ip(&["-n", &host_ns, "link", "add", &format!("tap{}", &port_id[..11]), "type", "veth", "peer", "name", "eth0", "netns", &vm]);
        ip(&["-n", &vm, "link", "set", "eth0", "address", port["mac_address"].as_str().unwrap(), "up"]);
        vms.push((vm, fixed));
    }
    // SLAAC: the kernel makes the address the network service computed from the MAC, with a default route
    let (slaac_vm, slaac_ip) = &vms[0];
    wait_for("the SLAAC address", Duration::from_secs(30), || {
        ip(&["-n", slaac_vm, "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"]).contains(&format!("{slaac_ip}/64"))
    })
    .await;
    assert!(ip(&["-n", slaac_vm, "-6", "route", "show", "default"]).contains("via fe80::"), "a default route from the RA");

    // DHCPv6: dnsmasq in the DHCP namespace leases the port's address
    let (dhcp_vm, dhcp_ip) = &vms[1];
    wait_for("a link-local address to ask from", Duration::from_secs(10), || {
        ip(&["-n", dhcp_vm, "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"]).contains("fe80::")
    })
    .await;
    let dir = super::tempfile_dir();
    let lease = dir.join("lease6");
    let client = tokio::process::Command::new("ip")
        .args(["netns", "exec", dhcp_vm, "dhclient", "-6", "-1", "-v", "-sf", "/bin/true", "-lf"])
        .arg(&lease)
        .arg("-pf")
        .arg(dir.join("pid"))
        .arg("eth0")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), client).await.expect("dhclient ends").expect("dhclient runs");
    let leased = std::fs::read_to_string(&lease).unwrap_or_default();
    let net_id = subnets[1].0["id"].as_str().unwrap();
    let dhcp_log = std::fs::read_to_string(cloud.running.data_dir.join("network-agent/dhcp").join(net_id).join("dnsmasq.log")).unwrap_or_default();
    assert!(leased.contains(&format!("iaaddr {dhcp_ip} ")), "no lease of {dhcp_ip}: {}\n{leased}\n{dhcp_log}", String::from_utf8_lossy(&out.stderr));
    let _ = Command::new("sh").args(["-c", &format!("kill $(cat {}) 2>/dev/null", dir.join("pid").display())]).status();
    ip(&["-n", dhcp_vm, "addr", "add", &format!("{dhcp_ip}/64"), "dev", "eth0"]);
    wait_for("a default route from the RA", Duration::from_secs(30), || ip(&["-n", dhcp_vm, "-6", "route", "show", "default"]).contains("via fe80::"))
        .await;

    // both are in the project's default group, which admits its own members: they reach each other through the router
    let mut reached = false;
    for _ in 0..20 {
        if in_ns(dhcp_vm, &format!("busybox ping -6 -c 1 -W 1 {slaac_ip} >/dev/null 2>&1")) {
            reached = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(reached, "the DHCPv6 instance does not reach the SLAAC one through the router");

    // the router goes: its namespace, radvd and files with it
    for (_, subnet) in &subnets {
        let r = admin.request(reqwest::Method::PUT, &format!("/networking/v2.0/routers/{router_id}/remove_router_interface"), Some(&json!({"subnet_id": subnet["id"]})), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    wait_for("radvd to stop once nothing is advertised", Duration::from_secs(20), || !pid_file.exists()).await;
    assert_eq!(admin.delete(&format!("/networking/v2.0/routers/{router_id}")).await.status, 204);
    wait_for("the router's namespace to go", Duration::from_secs(20), || !Path::new("/run/netns").join(&router_ns).exists()).await;
    cloud.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
