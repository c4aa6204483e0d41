//! Routers through the whole cloud: the network service places the router on the agent's host (it reports `l3`),
//! the agent makes its namespace, veth pairs and NAT. An "instance" is a test namespace behind a veth whose host
//! end is the port's tap on the tenant bridge; the "outside host" is a test namespace behind the veth the agent
//! maps to the physical network of the cloud's flat external network `public` (172.24.4.0/24), holding the
//! external subnet's gateway address. Connections are real TCP between the two namespaces, and
//! the address each side sees is what the test asserts.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsFd,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::json;
use test_utils::TestCloud;

use super::{Namespaces, can_run, ip, wait_for};

/// Runs `f` on a thread inside namespace `ns` (sockets made there stay there).
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = std::fs::File::open(&path).expect("namespace exists");
            rustix::thread::move_into_link_name_space(fd.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network)).expect("setns");
            f()
        })
        .join()
        .expect("namespace thread")
    })
}

fn listen(ns: &str) -> TcpListener {
    let l = in_ns(ns, || TcpListener::bind("0.0.0.0:0")).expect("bind");
    l.set_nonblocking(true).unwrap();
    l
}

/// Connects from namespace `from` to `dst` on `listener`'s port; the source address the listener saw, if the
/// connection got through.
async fn probe(from: &str, listener: &TcpListener, dst: Ipv4Addr) -> Option<IpAddr> {
    let port = listener.local_addr().unwrap().port();
    let ns = from.to_string();
    let stream = tokio::task::spawn_blocking(move || {
        in_ns(&ns, || TcpStream::connect_timeout(&SocketAddr::new(dst.into(), port), Duration::from_millis(1500)))
    })
    .await
    .unwrap()
    .ok()?;
    let seen = accept(listener).await.map(|(_, peer)| peer.ip());
    drop(stream);
    seen
}

/// The next connection on `listener` (waiting up to a second), blocking.
async fn accept(listener: &TcpListener) -> Option<(TcpStream, SocketAddr)> {
    for _ in 0..100 {
        match listener.accept() {
            Ok((s, peer)) => {
                s.set_nonblocking(false).unwrap();
                return Some((s, peer));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("accept: {e}"),
        }
    }
    None
}

/// Sends a byte on `from` and reads it on `to` (1.5 s at most): whether it arrived.
async fn carries(from: &TcpStream, to: &TcpStream) -> bool {
    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
    tokio::task::spawn_blocking(move || {
        if from.write_all(b"x").is_err() {
            return false;
        }
        to.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
        let mut b = [0u8; 1];
        matches!(to.read(&mut b), Ok(1))
    })
    .await
    .unwrap()
}

/// Probes until the connection gets through (bounded); the source seen and how long it took.
async fn probe_until(what: &str, from: &str, listener: &TcpListener, dst: Ipv4Addr, timeout: Duration) -> (IpAddr, Duration) {
    let start = Instant::now();
    loop {
        if let Some(src) = probe(from, listener, dst).await {
            return (src, start.elapsed());
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ns_has(ns: &str, what: &[&str], needle: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
        && Command::new("ip").args(["-n", ns]).args(what).output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(needle))
}

fn nft_table(ns: &str) -> String {
    let out = Command::new("ip").args(["netns", "exec", ns, "nft", "list", "table", "ip", "stratus-l3"]).output().expect("nft runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn has_nft() -> bool {
    let ok = Command::new("sh").args(["-c", "command -v nft || test -x /usr/sbin/nft"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: needs nft (scripts/host-tools)");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_gives_instances_snat_and_floating_ips_and_deleting_it_leaves_nothing() {
    if !can_run() || !has_nft() {
        return;
    }
    let (tag, spaces) = Namespaces::fresh();
    let host_ns = spaces.add("host");
    let vm_ns = spaces.add("vm");
    let out_ns = spaces.add("out");
    let host = format!("l3host-{tag}");
    // the "outside host", on the uplink of physical network `public`
    let uplink = format!("o{tag}");
    ip(&["-n", &host_ns, "link", "add", &uplink, "type", "veth", "peer", "name", "eth0", "netns", &out_ns]);
    ip(&["-n", &out_ns, "addr", "add", "172.24.4.1/24", "dev", "eth0"]);
    ip(&["-n", &out_ns, "link", "set", "eth0", "up"]);
    let (h, hn, prefix, mapping) = (host.clone(), host_ns.clone(), spaces.prefix.clone(), format!("public:{uplink}"));
    let cloud = TestCloud::start_with_options(
        move |c| {
            crate::on_host(c, h, hn, prefix);
            c.network_agent.physical_interface_mappings = vec![mapping];
        },
        crate::agent_only(),
    )
    .await;
    let admin = &cloud.admin;
    let post = |path: &'static str, body: serde_json::Value| async move {
        let r = admin.post(&format!("/networking/v2.0/{path}"), &body).await;
        assert_eq!(r.status, 201, "{path}: {}", r.text);
        r.json()
    };
    let put = |path: String, body: serde_json::Value| async move {
        let r = admin.request(reqwest::Method::PUT, &format!("/networking/v2.0/{path}"), Some(&body), &[]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        r.json()
    };

    // the external network (no instance of it on this host) and a tenant network
    let r = admin.get("/networking/v2.0/networks?name=public").await;
    let ext = r.json()["networks"][0]["id"].as_str().expect("the public network").to_string();
    let net = post("networks", json!({"network": {"name": "inside"}})).await["network"]["id"].as_str().unwrap().to_string();
    let subnet = post("subnets", json!({"subnet": {"network_id": net, "cidr": "10.81.0.0/24", "ip_version": 4, "enable_dhcp": false}}))
        .await["subnet"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let port =
        post("ports", json!({"port": {"network_id": net, "binding:host_id": host, "device_owner": "compute:nova"}})).await["port"].clone();
    // the outside may reach the instance (its default group admits only its own members)
    super::allow_ingress(admin, &port, None).await;
    let port_id = port["id"].as_str().unwrap().to_string();
    let fixed: Ipv4Addr = port["fixed_ips"][0]["ip_address"].as_str().unwrap().parse().unwrap();

    // the "instance", with the port's MAC and address, the subnet's gateway as its router
    let tap = format!("tap{}", &port_id[..11]);
    ip(&["-n", &host_ns, "link", "add", &tap, "type", "veth", "peer", "name", "eth0", "netns", &vm_ns]);
    ip(&["-n", &vm_ns, "link", "set", "eth0", "address", port["mac_address"].as_str().unwrap(), "up"]);
    ip(&["-n", &vm_ns, "addr", "add", &format!("{fixed}/24"), "dev", "eth0"]);
    ip(&["-n", &vm_ns, "route", "add", "default", "via", "10.81.0.1"]);

    // the router, its gateway and its interface
    let start = Instant::now();
    let router = post("routers", json!({"router": {"name": "r", "external_gateway_info": {"network_id": ext}}})).await["router"].clone();
    let router_id = router["id"].as_str().unwrap().to_string();
    let gw_ip: Ipv4Addr = router["external_gateway_info"]["external_fixed_ips"][0]["ip_address"].as_str().unwrap().parse().unwrap();
    let itf = put(format!("routers/{router_id}/add_router_interface"), json!({"subnet_id": subnet})).await;
    let itf_port = itf["port_id"].as_str().unwrap().to_string();
    let api_done = start.elapsed();
    let qrouter = format!("{}qrouter-{router_id}", spaces.prefix);
    let (ext_bridge, bridge) = (format!("brq{}", &ext[..11]), format!("brq{}", &net[..11]));
    wait_for("the router namespace with its devices", Duration::from_secs(20), || {
        ns_has(&qrouter, &["-o", "addr", "show"], &format!("{gw_ip}/24")) && ns_has(&qrouter, &["-o", "addr", "show"], "10.81.0.1/24")
    })
    .await;
    let ready = start.elapsed();
    // the external network is wired here for the router alone; the router ports' host ends are on the bridges
    let links = ip(&["-n", &host_ns, "-o", "link", "show"]);
    assert!(links.contains(&format!("tap{}", &itf_port[..11])) && links.contains(&format!("master {ext_bridge}")), "{links}");
    let inside = ip(&["-n", &qrouter, "-o", "link", "show"]);
    assert!(inside.contains(&format!("qr-{}", &itf_port[..11])) && inside.contains("qg-"), "{inside}");
    let fwd = Command::new("ip").args(["netns", "exec", &qrouter, "cat", "/proc/sys/net/ipv4/ip_forward"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&fwd.stdout).trim(), "1");
    assert!(ip(&["-n", &qrouter, "route", "show"]).contains("default via 172.24.4.1"));

    assert!(ip(&["-n", &host_ns, "-o", "link", "show", &uplink]).contains(&format!("master {ext_bridge}")));
    wait_for("the instance's tap on its bridge", Duration::from_secs(15), || {
        ip(&["-n", &host_ns, "-o", "link", "show", &tap]).contains(&format!("master {bridge}"))
    })
    .await;

    // out through SNAT: the outside sees the router's gateway address
    let outside = listen(&out_ns);
    let outside_ip: Ipv4Addr = "172.24.4.1".parse().unwrap();
    let (src, _) = probe_until("the instance to reach the outside", &vm_ns, &outside, outside_ip, Duration::from_secs(15)).await;
    assert_eq!(src, IpAddr::V4(gw_ip));
    assert!(nft_table(&qrouter).contains(&format!("snat to {gw_ip}")));

    // a floating IP: the outside reaches the instance through it, and sees it as the instance's source
    let start_fip = Instant::now();
    let fip = post("floatingips", json!({"floatingip": {"floating_network_id": ext, "port_id": port_id}})).await["floatingip"].clone();
    let fip_id = fip["id"].as_str().unwrap().to_string();
    let fip_ip: Ipv4Addr = fip["floating_ip_address"].as_str().unwrap().parse().unwrap();
    wait_for("the floating IP on the gateway and in the NAT table", Duration::from_secs(15), || {
        ns_has(&qrouter, &["-o", "addr", "show"], &format!("{fip_ip}/32")) && nft_table(&qrouter).contains(&format!("dnat to {fixed}"))
    })
    .await;
    let fip_ready = start_fip.elapsed();
    let instance = listen(&vm_ns);
    let (src, _) = probe_until("the outside to reach the floating IP", &out_ns, &instance, fip_ip, Duration::from_secs(15)).await;
    assert_eq!(src, IpAddr::V4(outside_ip), "DNAT keeps the outside's address");
    let fip_reachable = start_fip.elapsed();
    assert_eq!(probe(&vm_ns, &outside, outside_ip).await, Some(IpAddr::V4(fip_ip)));
    // hairpin: the instance reaches its own floating IP, through the router
    assert_eq!(probe(&vm_ns, &instance, fip_ip).await, Some(IpAddr::V4(gw_ip)));

    // a pass with nothing to do changes nothing
    let agent = cloud.running.network_agent.as_ref().unwrap();
    let before = (ip(&["-n", &qrouter, "-o", "addr", "show"]), nft_table(&qrouter), ip(&["-n", &qrouter, "route", "show"]));
    let t = Instant::now();
    let outcome = agent.sync_now().await.unwrap();
    let idle_pass = t.elapsed();
    assert!(outcome.errors.is_empty() && outcome.removed.is_empty() && outcome.routers == 1, "{outcome:?}");
    assert_eq!(before, (ip(&["-n", &qrouter, "-o", "addr", "show"]), nft_table(&qrouter), ip(&["-n", &qrouter, "route", "show"])));

    // an orphan (a router namespace of the agent's prefix no router wants) goes on the next pass
    let orphan = spaces.add(&format!("qrouter-{}", uuid::Uuid::new_v4()));
    let outcome = agent.sync_now().await.unwrap();
    // (a background pass, woken meanwhile, may have been first)
    assert!(outcome.removed == vec![orphan.clone()] || outcome.removed.is_empty(), "{outcome:?}");
    assert!(!Path::new("/run/netns").join(&orphan).exists());

    // a connection made through the floating IP, open across the disassociation
    let port = instance.local_addr().unwrap().port();
    let ns = out_ns.clone();
    let client = tokio::task::spawn_blocking(move || {
        in_ns(&ns, || TcpStream::connect_timeout(&SocketAddr::new(fip_ip.into(), port), Duration::from_secs(3)))
    })
    .await
    .unwrap()
    .expect("a connection through the floating IP");
    let (served, _) = accept(&instance).await.expect("the instance accepts it");
    assert!(carries(&client, &served).await && carries(&served, &client).await);

    // disassociated: the path from the outside is cut (the open connection too), the instance goes out through
    // SNAT again
    put(format!("floatingips/{fip_id}"), json!({"floatingip": {"port_id": null}})).await;
    wait_for("the floating IP to leave the gateway", Duration::from_secs(15), || {
        !ns_has(&qrouter, &["-o", "addr", "show"], &format!("{fip_ip}/32")) && !nft_table(&qrouter).contains(&fip_ip.to_string())
    })
    .await;
    assert_eq!(probe(&out_ns, &instance, fip_ip).await, None, "the floating IP still reaches the instance");
    assert!(!carries(&client, &served).await, "the connection through the floating IP outlived it");
    assert!(!carries(&served, &client).await, "the connection through the floating IP outlived it");
    drop((client, served));
    assert_eq!(probe(&vm_ns, &outside, outside_ip).await, Some(IpAddr::V4(gw_ip)));

    // a router set down leaves the host, and comes back when set up
    put(format!("routers/{router_id}"), json!({"router": {"admin_state_up": false}})).await;
    wait_for("the router namespace to go", Duration::from_secs(15), || !Path::new("/run/netns").join(&qrouter).exists()).await;
    put(format!("routers/{router_id}"), json!({"router": {"admin_state_up": true}})).await;
    let (src, _) = probe_until("the router to come back", &vm_ns, &outside, outside_ip, Duration::from_secs(15)).await;
    assert_eq!(src, IpAddr::V4(gw_ip));

    // the interface goes: its veth pair with it, and the instance is cut off
    let r = admin.delete(&format!("/networking/v2.0/floatingips/{fip_id}")).await;
    assert_eq!(r.status, 204, "{}", r.text);
    put(format!("routers/{router_id}/remove_router_interface"), json!({"subnet_id": subnet})).await;
    wait_for("the router interface to go", Duration::from_secs(15), || {
        !ns_has(&qrouter, &["-o", "link", "show"], "qr-")
            && !ip(&["-n", &host_ns, "-o", "link", "show"]).contains(&format!("tap{}", &itf_port[..11]))
    })
    .await;
    assert_eq!(probe(&vm_ns, &outside, outside_ip).await, None);

    // the router goes: its namespace, its NAT state and the external network's bridge (no port of it here now)
    let r = admin.delete(&format!("/networking/v2.0/routers/{router_id}")).await;
    assert_eq!(r.status, 204, "{}", r.text);
    wait_for("the router namespace and the external bridge to go", Duration::from_secs(15), || {
        !Path::new("/run/netns").join(&qrouter).exists() && !ip(&["-n", &host_ns, "-o", "link", "show"]).contains(&ext_bridge)
    })
    .await;
    let state = cloud.running.data_dir.join("network-agent/l3");
    let left: Vec<_> = std::fs::read_dir(&state).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let links = ip(&["-n", &host_ns, "-o", "link", "show"]);
    assert!(links.contains(&bridge) && !links.contains("qg-") && !links.contains("qr-"), "{links}");
    eprintln!(
        "router convergence: API calls {api_done:?}, router namespace ready {ready:?} after the first call; \
         floating IP in the data plane {fip_ready:?} and reachable {fip_reachable:?} after its create; idle pass {idle_pass:?}"
    );
    cloud.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_on_another_host_reaches_the_outside_through_the_router_host_over_vxlan() {
    if !can_run() || !has_nft() {
        return;
    }
    let (tag, spaces) = Namespaces::fresh();
    let (host_a, host_b) = (spaces.add("ha"), spaces.add("hb"));
    let (vm_ns, out_ns) = (spaces.add("vm"), spaces.add("out"));
    // the underlay between the two hosts, and the outside on the router host's uplink
    ip(&["-n", &host_a, "link", "add", "ua", "type", "veth", "peer", "name", "ub", "netns", &host_b]);
    ip(&["-n", &host_a, "addr", "add", "10.67.0.1/24", "dev", "ua"]);
    ip(&["-n", &host_b, "addr", "add", "10.67.0.2/24", "dev", "ub"]);
    ip(&["-n", &host_a, "link", "set", "ua", "up"]);
    ip(&["-n", &host_b, "link", "set", "ub", "up"]);
    let uplink = format!("o{tag}");
    ip(&["-n", &host_a, "link", "add", &uplink, "type", "veth", "peer", "name", "eth0", "netns", &out_ns]);
    ip(&["-n", &out_ns, "addr", "add", "172.24.4.1/24", "dev", "eth0"]);
    ip(&["-n", &out_ns, "link", "set", "eth0", "up"]);

    // host A: the cloud's agent, with l3; host B: a second agent without
    let (a, b) = (format!("l3a-{tag}"), format!("cmp-{tag}"));
    let (h, hn, prefix, mapping) = (a.clone(), host_a.clone(), format!("{}a-", spaces.prefix), format!("public:{uplink}"));
    let cloud = TestCloud::start_with_options(
        move |c| {
            crate::on_host(c, h, hn, prefix);
            c.network_agent.local_ip = Some("10.67.0.1".parse().unwrap());
            c.network_agent.physical_interface_mappings = vec![mapping];
        },
        crate::agent_only(),
    )
    .await;
    let mut config = cloud::agent::network_agent_config(&cloud.running.cloud.config).unwrap();
    config.host = b.clone();
    config.host_namespace = Some(host_b.clone());
    config.namespace_prefix = format!("{}b-", spaces.prefix);
    config.tunnel_ip = Some("10.67.0.2".parse().unwrap());
    config.interface_mappings = vec![];
    config.enable_l3 = false;
    config.state_dir = cloud.running.data_dir.join("network-agent-b");
    let agent_b = network_agent::Agent::start(config, cloud.running.cloud.bus.clone()).await.unwrap();

    let admin = &cloud.admin;
    let post = |path: &'static str, body: serde_json::Value| async move {
        let r = admin.post(&format!("/networking/v2.0/{path}"), &body).await;
        assert_eq!(r.status, 201, "{path}: {}", r.text);
        r.json()
    };
    let r = admin.get("/networking/v2.0/networks?name=public").await;
    let ext = r.json()["networks"][0]["id"].as_str().expect("the public network").to_string();
    let net = post("networks", json!({"network": {"name": "inside"}})).await["network"].clone();
    let (net_id, vni) = (net["id"].as_str().unwrap().to_string(), net["provider:segmentation_id"].as_u64().unwrap());
    let subnet = post("subnets", json!({"subnet": {"network_id": net_id, "cidr": "10.82.0.0/24", "ip_version": 4, "enable_dhcp": false}}))
        .await["subnet"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let port =
        post("ports", json!({"port": {"network_id": net_id, "binding:host_id": b, "device_owner": "compute:nova"}})).await["port"].clone();
    super::allow_ingress(admin, &port, None).await;
    let port_id = port["id"].as_str().unwrap().to_string();
    let fixed: Ipv4Addr = port["fixed_ips"][0]["ip_address"].as_str().unwrap().parse().unwrap();
    let tap = format!("tap{}", &port_id[..11]);
    ip(&["-n", &host_b, "link", "add", &tap, "type", "veth", "peer", "name", "eth0", "netns", &vm_ns]);
    ip(&["-n", &vm_ns, "link", "set", "eth0", "address", port["mac_address"].as_str().unwrap(), "up"]);
    ip(&["-n", &vm_ns, "addr", "add", &format!("{fixed}/24"), "dev", "eth0"]);
    ip(&["-n", &vm_ns, "route", "add", "default", "via", "10.82.0.1"]);

    let router = post("routers", json!({"router": {"name": "r", "external_gateway_info": {"network_id": ext}}})).await["router"].clone();
    let router_id = router["id"].as_str().unwrap().to_string();
    let gw_ip: Ipv4Addr = router["external_gateway_info"]["external_fixed_ips"][0]["ip_address"].as_str().unwrap().parse().unwrap();
    let r = admin
        .request(
            reqwest::Method::PUT,
            &format!("/networking/v2.0/routers/{router_id}/add_router_interface"),
            Some(&json!({"subnet_id": subnet})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // the router is on host A only; each host floods the tenant network to the other
    let vxlan = format!("vxlan-{vni}");
    let flooded = |ns: &str, peer: &str| {
        Command::new("bridge")
            .args(["-n", ns, "fdb", "show", "dev", &vxlan])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("00:00:00:00:00:00 dst {peer}")))
    };
    wait_for("the router on host A and the tunnels both ways", Duration::from_secs(20), || {
        Path::new("/run/netns").join(format!("{}a-qrouter-{router_id}", spaces.prefix)).exists()
            && flooded(&host_a, "10.67.0.2")
            && flooded(&host_b, "10.67.0.1")
    })
    .await;
    assert!(!Path::new("/run/netns").join(format!("{}b-qrouter-{router_id}", spaces.prefix)).exists());

    let outside = listen(&out_ns);
    let outside_ip: Ipv4Addr = "172.24.4.1".parse().unwrap();
    let (src, _) = probe_until("the instance on host B to reach the outside", &vm_ns, &outside, outside_ip, Duration::from_secs(15)).await;
    assert_eq!(src, IpAddr::V4(gw_ip));
    let fip = post("floatingips", json!({"floatingip": {"floating_network_id": ext, "port_id": port_id}})).await["floatingip"].clone();
    let fip_ip: Ipv4Addr = fip["floating_ip_address"].as_str().unwrap().parse().unwrap();
    let instance = listen(&vm_ns);
    let (src, _) = probe_until("the outside to reach the instance on host B", &out_ns, &instance, fip_ip, Duration::from_secs(15)).await;
    assert_eq!(src, IpAddr::V4(outside_ip));

    let outcome = agent_b.teardown().await.unwrap();
    assert!(outcome.errors.is_empty(), "{outcome:?}");
    cloud.shutdown().await;
}
