//! Security groups on real nftables: "instances" are test namespaces behind veth pairs whose host ends are named
//! as the ports' taps, in the agent's namespace, with the ports' MACs and fixed IPs; traffic between them is ping.

use std::{process::Command, time::Duration};

use serde_json::{Value, json};
use test_utils::TestCloud;

use super::{Namespaces, can_run, ip, wait_for};

fn nft_ruleset(ns: &str) -> String {
    let out = Command::new("ip").args(["netns", "exec", ns, "nft", "list", "ruleset"]).output().expect("nft runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One ping from `from` (optionally with source address `src`) to `to`: whether it was answered.
fn ping(from: &str, src: Option<&str>, to: &str) -> bool {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", from, "busybox", "ping", "-c", "1", "-W", "1"]);
    if let Some(src) = src {
        c.args(["-I", src]);
    }
    c.arg(to).output().is_ok_and(|o| o.status.success())
}

/// Whether `from` reaches `to` within a few seconds (rules take a pass to arrive).
async fn reaches(from: &str, src: Option<&str>, to: &str) -> bool {
    for _ in 0..10 {
        if ping(from, src, to) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

struct Instance {
    port_id: String,
    ip: String,
    ns: String,
}

async fn instance(
    cloud: &TestCloud,
    spaces: &Namespaces,
    host_ns: &str,
    net_id: &str,
    host: &str,
    name: &str,
    groups: &[&str],
) -> Instance {
    let r = cloud
        .admin
        .post(
            "/networking/v2.0/ports",
            &json!({"port": {"network_id": net_id, "binding:host_id": host, "device_owner": "compute:nova", "security_groups": groups}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let port = r.json()["port"].clone();
    let port_id = port["id"].as_str().unwrap().to_string();
    let ip_address = port["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string();
    let ns = spaces.add(name);
    let tap = format!("tap{}", &port_id[..11]);
    ip(&["-n", host_ns, "link", "add", &tap, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
    ip(&["-n", &ns, "link", "set", "eth0", "address", port["mac_address"].as_str().unwrap(), "up"]);
    ip(&["-n", &ns, "addr", "add", &format!("{ip_address}/24"), "dev", "eth0"]);
    Instance { port_id, ip: ip_address, ns }
}

async fn put(client: &test_utils::Client, path: &str, body: Value) -> test_utils::Response {
    client.request(reqwest::Method::PUT, path, Some(&body), &[]).await
}

async fn group(cloud: &TestCloud, name: &str) -> String {
    let r = cloud.admin.post("/networking/v2.0/security-groups", &json!({"security_group": {"name": name}})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()["security_group"]["id"].as_str().unwrap().to_string()
}

async fn add_rule(cloud: &TestCloud, rule: Value) -> String {
    let r = cloud.admin.post("/networking/v2.0/security-group-rules", &json!({"security_group_rule": rule})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()["security_group_rule"]["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_groups_admit_by_rule_and_remote_group_drop_spoofing_and_go_with_their_ports() {
    if !can_run() {
        return;
    }
    let (tag, spaces) = Namespaces::fresh();
    let host_ns = spaces.add("host");
    let host = format!("sghost-{tag}");
    let (h, hn, prefix) = (host.clone(), host_ns.clone(), spaces.prefix.clone());
    let mut cloud = TestCloud::start_with_options(
        move |c| {
            crate::on_host(c, h, hn, prefix);
            c.network_agent.enable_dhcp = false;
        },
        crate::agent_only(),
    )
    .await;
    let admin = &cloud.admin;
    let r = admin.post("/networking/v2.0/networks", &json!({"network": {"name": "sg-net"}})).await;
    let net_id = r.json()["network"]["id"].as_str().unwrap().to_string();
    let r = admin
        .post(
            "/networking/v2.0/subnets",
            &json!({"subnet": {"network_id": net_id, "cidr": "10.81.0.0/24", "ip_version": 4, "enable_dhcp": false}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    // groups made by the API allow all egress and no ingress
    let (web, clients, others) = (group(&cloud, "web").await, group(&cloud, "clients").await, group(&cloud, "others").await);
    let server = instance(&cloud, &spaces, &host_ns, &net_id, &host, "server", &[&web]).await;
    let member = instance(&cloud, &spaces, &host_ns, &net_id, &host, "member", &[&clients]).await;
    let outsider = instance(&cloud, &spaces, &host_ns, &net_id, &host, "outsider", &[&others]).await;
    let taps: Vec<String> = [&server, &member, &outsider].iter().map(|i| format!("tap{}", &i.port_id[..11])).collect();
    // a port is reported up (ACTIVE) only once its filter is in force
    for i in [&server, &member, &outsider] {
        let start = std::time::Instant::now();
        while admin.get(&format!("/networking/v2.0/ports/{}", i.port_id)).await.json()["port"]["status"] != "ACTIVE" {
            assert!(start.elapsed() < Duration::from_secs(15), "port {} never went ACTIVE", i.port_id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let tap = format!("tap{}", &i.port_id[..11]);
        assert!(nft_ruleset(&host_ns).contains(&format!("chain {tap}-ingress")), "{tap} is ACTIVE without its filter");
    }

    // the network's connections are tracked in a zone of its own, set by its bridge before conntrack
    let rules = nft_ruleset(&host_ns);
    let zone = network_agent::firewall::conntrack_zones([net_id.as_str()])[&net_id];
    assert!(rules.contains("ct zone set iifname map @zones"), "{rules}");
    assert!(rules.contains(&format!("\"brq{}\" : {zone}", &net_id[..11])), "{rules}");

    // no ingress rule: nobody reaches the server
    assert!(!ping(&member.ns, None, &server.ip), "a group without ingress rules lets ping in");

    // a rule for the clients group admits its members only
    add_rule(
        &cloud,
        json!({"security_group_id": web, "direction": "ingress", "ethertype": "IPv4", "protocol": "icmp", "remote_group_id": clients}),
    )
    .await;
    // (the replies reach the member, whose group has no ingress rule, as established traffic)
    assert!(reaches(&member.ns, None, &server.ip).await, "a remote group member is let in: {}", nft_ruleset(&host_ns));
    assert!(!ping(&outsider.ns, None, &server.ip), "a non-member is let in");

    // a restarted agent replaces the tables in one transaction: a running flow, whose replies come in as
    // established traffic only, loses nothing
    let before = nft_ruleset(&host_ns);
    let flow = tokio::process::Command::new("ip")
        .args(["netns", "exec", &member.ns, "busybox", "ping", "-c", "20", "-i", "0.1", &server.ip])
        .kill_on_drop(true)
        .output();
    let flow = tokio::spawn(flow);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cloud.running.network_agent.take().unwrap().stop().await;
    let config = cloud::agent::network_agent_config(&cloud.running.cloud.config).unwrap();
    let agent = network_agent::Agent::start(config, cloud.running.cloud.bus.clone()).await.unwrap();
    let mut passes = agent.passes();
    tokio::time::timeout(Duration::from_secs(15), passes.wait_for(|n| *n > 0)).await.expect("a pass").unwrap();
    cloud.running.network_agent = Some(agent);
    let flow = tokio::time::timeout(Duration::from_secs(15), flow).await.expect("ping ends").unwrap().unwrap();
    let report = String::from_utf8_lossy(&flow.stdout);
    assert!(report.contains("20 packets received"), "{report}");
    // the same ruleset, but for the order of chains and the ports' indexes in the mark (a replacement numbers the
    // ports afresh, in the order of their ids; incremental changes kept the order in which they came)
    let lines = |text: String| {
        let mut l: Vec<String> = text
            .lines()
            .flat_map(|l| l.split(", "))
            .map(|l| {
                l.split_whitespace()
                    .filter(|w| !w.starts_with("0x") && !["{", "}", "elements", "="].contains(w))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        l.sort();
        l
    };
    let (now, before) = (lines(nft_ruleset(&host_ns)), lines(before));
    let only = |a: &[String], b: &[String]| a.iter().filter(|l| !b.contains(l)).cloned().collect::<Vec<_>>();
    assert!(
        now == before,
        "the restarted agent converges on the same ruleset: now {:?}, before {:?}",
        only(&now, &before),
        only(&before, &now)
    );

    // a rule for the subnet admits the outsider, but not from an address that is not its own
    let subnet_rule = add_rule(
        &cloud,
        json!({"security_group_id": web, "direction": "ingress", "ethertype": "IPv4", "protocol": "icmp", "remote_ip_prefix": "10.81.0.0/24"}),
    )
    .await;
    assert!(reaches(&outsider.ns, None, &server.ip).await, "a prefix rule lets the outsider in");
    // an address no port of the network has (IPAM picks ports' addresses at random)
    let taken = admin.get(&format!("/networking/v2.0/ports?network_id={net_id}")).await.json()["ports"].to_string();
    let spoofed = (200..254).map(|i| format!("10.81.0.{i}")).find(|a| !taken.contains(&format!("\"{a}\""))).unwrap();
    let spoofed = spoofed.as_str();
    ip(&["-n", &outsider.ns, "addr", "add", &format!("{spoofed}/24"), "dev", "eth0"]);
    assert!(!ping(&outsider.ns, Some(spoofed), &server.ip), "a spoofed source address gets through");
    // ... unless it is an allowed address pair of the port
    let r = put(
        admin,
        &format!("/networking/v2.0/ports/{}", outsider.port_id),
        json!({"port": {"allowed_address_pairs": [{"ip_address": spoofed}]}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(reaches(&outsider.ns, Some(spoofed), &server.ip).await, "an allowed address pair is let out");

    // without the prefix rule the outsider is out again, even a flow the rule let in (its connection is cut, as
    // upstream does: without that, its echo requests would go on as established traffic); without port security
    // on the server, it is in
    let flow = tokio::process::Command::new("ip")
        .args(["netns", "exec", &outsider.ns, "busybox", "ping", "-c", "100", "-i", "0.1", &server.ip])
        .kill_on_drop(true)
        .output();
    let flow = tokio::spawn(flow);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = admin.delete(&format!("/networking/v2.0/security-group-rules/{subnet_rule}")).await;
    assert_eq!(r.status, 204);
    wait_for("the rule to go", Duration::from_secs(15), || !nft_ruleset(&host_ns).contains("ip saddr 10.81.0.0/24")).await;
    assert!(!ping(&outsider.ns, None, &server.ip), "a deleted rule still lets the outsider in");
    let flow = tokio::time::timeout(Duration::from_secs(30), flow).await.expect("ping ends").unwrap().unwrap();
    let report = String::from_utf8_lossy(&flow.stdout).into_owned();
    let received: u32 = report
        .split(", ")
        .find_map(|part| part.strip_suffix(" packets received"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ping summary: {report}"));
    assert!(received > 0 && received < 90, "the flow of a deleted rule goes on ({received} of 100 answered): {report}");
    let r = put(
        admin,
        &format!("/networking/v2.0/ports/{}", server.port_id),
        json!({"port": {"port_security_enabled": false, "security_groups": []}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(reaches(&outsider.ns, None, &server.ip).await, "port security off lets everything in");
    assert!(!nft_ruleset(&host_ns).contains(&format!("{}-ingress", taps[0])), "an unfiltered port keeps chains");

    // a deleted port's rules go; the last port's, the tables
    let r = admin.delete(&format!("/networking/v2.0/ports/{}", member.port_id)).await;
    assert_eq!(r.status, 204);
    wait_for("the member's chains to go", Duration::from_secs(15), || !nft_ruleset(&host_ns).contains(&taps[1])).await;
    assert!(nft_ruleset(&host_ns).contains(&format!("chain {}-ingress", taps[2])));
    let r = admin.delete(&format!("/networking/v2.0/ports/{}", outsider.port_id)).await;
    assert_eq!(r.status, 204);
    wait_for("the tables to go", Duration::from_secs(15), || !nft_ruleset(&host_ns).contains("stratus-sg")).await;
    cloud.shutdown().await;
}

/// Every form a rule, a port or a group can take renders into a ruleset nftables accepts, first whole and then as
/// an update (IPv6 addresses, pairs with prefixes and other MACs, ICMP types and codes, port ranges, protocol
/// numbers, remote prefixes and groups of both families), and the tables go when nothing is filtered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_form_is_valid_nftables() {
    use network_agent::firewall::{Firewall, TABLE};
    use network_rpc::{AddressPair, FixedIp, HostState, NetworkState, PortState, SecurityGroupRuleState as Rule, SecurityGroupState};

    if !can_run() {
        return;
    }
    let (_, spaces) = Namespaces::fresh();
    let ns = spaces.add("fw");
    let port = PortState {
        id: "0a1b2c3d-0000-4000-8000-000000000001".into(),
        network_id: "n".into(),
        mac_address: "fa:16:3e:00:00:01".into(),
        fixed_ips: vec![
            FixedIp { subnet_id: "s4".into(), ip_address: "10.82.0.5".into() },
            FixedIp { subnet_id: "s6".into(), ip_address: "fd00:82::5".into() },
        ],
        device_owner: "compute:nova".into(),
        device_id: String::new(),
        project_id: String::new(),
        status: "ACTIVE".into(),
        host: "h".into(),
        admin_state_up: true,
        dns_name: String::new(),
        extra_dhcp_opts: vec![],
        port_security_enabled: true,
        security_groups: vec!["g1".into(), "g2".into()],
        allowed_address_pairs: vec![
            AddressPair { ip_address: "10.82.1.0/24".into(), mac_address: "fa:16:3e:00:00:99".into() },
            AddressPair { ip_address: "fd00:82:1::/64".into(), mac_address: "fa:16:3e:00:00:01".into() },
        ],
    };
    let rule = |direction: &str, ethertype: &str, protocol: Option<&str>, min: Option<i64>, max: Option<i64>| Rule {
        id: format!("{direction}-{ethertype}-{protocol:?}-{min:?}-{max:?}"),
        direction: direction.into(),
        ethertype: ethertype.into(),
        protocol: protocol.map(str::to_string),
        port_range_min: min,
        port_range_max: max,
        ..Default::default()
    };
    let mut rules = vec![
        rule("ingress", "IPv4", Some("tcp"), Some(22), Some(22)),
        rule("ingress", "IPv4", Some("udp"), Some(1000), Some(2000)),
        rule("ingress", "IPv4", Some("icmp"), Some(8), Some(0)),
        rule("ingress", "IPv4", Some("icmp"), Some(3), None),
        rule("ingress", "IPv6", Some("ipv6-icmp"), Some(128), Some(0)),
        rule("ingress", "IPv6", Some("icmp"), None, None),
        rule("ingress", "IPv4", Some("112"), None, None),
        rule("ingress", "IPv6", Some("sctp"), Some(9), Some(9)),
        rule("egress", "IPv4", None, None, None),
        rule("egress", "IPv6", None, None, None),
    ];
    let mut prefix = rule("ingress", "IPv6", Some("tcp"), Some(443), Some(443));
    prefix.remote_ip_prefix = Some("fd00:99::/48".into());
    let mut v4prefix = rule("egress", "IPv4", Some("udp"), Some(53), Some(53));
    v4prefix.remote_ip_prefix = Some("10.99.1.7/16".into());
    let mut remote4 = rule("ingress", "IPv4", None, None, None);
    remote4.remote_group_id = Some("g2".into());
    let mut remote6 = rule("ingress", "IPv6", Some("tcp"), None, None);
    remote6.remote_group_id = Some("g2".into());
    rules.extend([prefix, v4prefix, remote4, remote6]);
    let groups = vec![
        SecurityGroupState { id: "g1".into(), stateful: true, rules, members: vec![] },
        SecurityGroupState {
            id: "g2".into(),
            stateful: true,
            rules: vec![],
            members: vec!["10.82.0.5".into(), "10.82.1.0/24".into(), "10.82.1.9".into(), "fd00:82::5".into(), "fd00:82:1::/64".into()],
        },
    ];
    let state = |ports: Vec<PortState>, groups: Vec<SecurityGroupState>| HostState {
        routers: vec![],
        networks: vec![NetworkState {
            id: "n".into(),
            name: "n".into(),
            project_id: "p".into(),
            admin_state_up: true,
            mtu: 1500,
            segment: Default::default(),
            subnets: vec![],
            ports,
            peers: vec![],
        }],
        security_groups: groups,
    };
    let fw = Firewall::new("nft".into(), "ip".into(), Some(ns.clone()), Duration::from_secs(60));
    assert_eq!(fw.apply(&state(vec![port.clone()], groups.clone()), "h").await.unwrap(), 1);
    let rules = nft_ruleset(&ns);
    for want in
        ["icmp type echo-request icmp code net-unreachable accept", "ip6 saddr fd00:99::/48 tcp dport 443 accept", "udp dport 1000-2000"]
    {
        assert!(rules.contains(want), "{want} missing from\n{rules}");
    }
    // as an update: a second port, a member fewer
    let mut second = port.clone();
    second.id = "1a1b2c3d-0000-4000-8000-000000000002".into();
    second.mac_address = "fa:16:3e:00:00:02".into();
    second.allowed_address_pairs.clear();
    let mut fewer = groups.clone();
    fewer[1].members.pop();
    assert_eq!(fw.apply(&state(vec![port.clone(), second], fewer), "h").await.unwrap(), 2);
    assert!(nft_ruleset(&ns).contains("chain tap1a1b2c3d-00-spoof"));
    // nothing filtered: no tables
    fw.apply(&state(vec![], vec![]), "h").await.unwrap();
    assert!(!nft_ruleset(&ns).contains(TABLE));
}

/// IPv6 through the firewall: neighbour discovery passes anti-spoofing and the prelude chains, echo requests only
/// as a rule allows, a spoofed source never. The firewall alone, on a bridge the test makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_neighbour_discovery_passes_and_echo_follows_the_rules() {
    use network_agent::firewall::Firewall;
    use network_rpc::{FixedIp, HostState, NetworkState, PortState, SecurityGroupRuleState as Rule, SecurityGroupState};

    if !can_run() {
        return;
    }
    let (_, spaces) = Namespaces::fresh();
    let host = spaces.add("host6");
    ip(&["-n", &host, "link", "add", "br6", "type", "bridge"]);
    ip(&["-n", &host, "link", "set", "br6", "up"]);
    let mut ports = vec![];
    let mut vms = vec![];
    for (i, id) in ["6a000000-0000-4000-8000-000000000001", "6b000000-0000-4000-8000-000000000002"].iter().enumerate() {
        let vm = spaces.add(&format!("vm6{i}"));
        let (mac, addr) = (format!("fa:16:3e:00:06:0{i}"), format!("fd00:86::{}", i + 10));
        let tap = format!("tap{}", &id[..11]);
        ip(&["-n", &host, "link", "add", &tap, "type", "veth", "peer", "name", "eth0", "netns", &vm]);
        ip(&["-n", &host, "link", "set", &tap, "master", "br6", "up"]);
        ip(&["-n", &vm, "link", "set", "eth0", "address", &mac, "up"]);
        ip(&["-n", &vm, "addr", "add", &format!("{addr}/64"), "dev", "eth0", "nodad"]);
        ports.push(PortState {
            id: id.to_string(),
            network_id: "n6".into(),
            mac_address: mac,
            fixed_ips: vec![FixedIp { subnet_id: "s6".into(), ip_address: addr.clone() }],
            device_owner: "compute:nova".into(),
            device_id: String::new(),
            project_id: String::new(),
            status: "ACTIVE".into(),
            host: "h".into(),
            admin_state_up: true,
            dns_name: String::new(),
            extra_dhcp_opts: vec![],
            port_security_enabled: true,
            security_groups: vec!["g6".into()],
            allowed_address_pairs: vec![],
        });
        vms.push((vm, addr));
    }
    let egress = Rule { id: "e".into(), direction: "egress".into(), ethertype: "IPv6".into(), ..Default::default() };
    let echo = Rule {
        id: "i".into(),
        direction: "ingress".into(),
        ethertype: "IPv6".into(),
        protocol: Some("ipv6-icmp".into()),
        port_range_min: Some(128),
        remote_group_id: Some("g6".into()),
        ..Default::default()
    };
    let state = |rules: Vec<Rule>| HostState {
        routers: vec![],
        networks: vec![NetworkState {
            id: "n6".into(),
            name: "n6".into(),
            project_id: "p".into(),
            admin_state_up: true,
            mtu: 1500,
            segment: Default::default(),
            subnets: vec![],
            ports: ports.clone(),
            peers: vec![],
        }],
        security_groups: vec![SecurityGroupState {
            id: "g6".into(),
            stateful: true,
            rules,
            members: ports.iter().map(|p| p.fixed_ips[0].ip_address.clone()).collect(),
        }],
    };
    let ping6 = |from: &str, src: Option<&str>, to: &str| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", from, "busybox", "ping", "-6", "-c", "1", "-W", "1"]);
        if let Some(src) = src {
            c.args(["-I", src]);
        }
        c.arg(to).output().is_ok_and(|o| o.status.success())
    };
    let fw = Firewall::new("nft".into(), "ip".into(), Some(host.clone()), Duration::from_secs(60));
    fw.apply(&state(vec![egress.clone()]), "h").await.unwrap();
    assert!(!ping6(&vms[0].0, None, &vms[1].1), "an echo request without a rule");
    fw.apply(&state(vec![egress, echo]), "h").await.unwrap();
    let mut answered = false;
    for _ in 0..10 {
        if ping6(&vms[0].0, None, &vms[1].1) {
            answered = true;
            break;
        }
    }
    assert!(answered, "neighbour discovery and an allowed echo request:\n{}", nft_ruleset(&host));
    assert!(ping6(&vms[1].0, None, &vms[0].1));
    ip(&["-n", &vms[0].0, "addr", "add", "fd00:86::99/64", "dev", "eth0", "nodad"]);
    assert!(!ping6(&vms[0].0, Some("fd00:86::99"), &vms[1].1), "a spoofed IPv6 source");
    fw.clear().await.unwrap();
}
