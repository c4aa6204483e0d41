//! `cargo xtask bench security-groups`: how fast a rule change reaches the data plane for a security group shared
//! by many ports of one host (500 by default), in a release build like the other suites (the table says which
//! build ran). Needs root and nftables; everything happens in network namespaces the benchmark makes and removes.
//!
//! * the agent's firewall alone, in one namespace, on a synthetic host state (every port in one group whose
//!   ingress rule names the group itself, as `default` does): render, the first (full) apply, a pass with nothing
//!   to do, a rule added to the group, a member joining it, a port coming or going, and a full replacement for
//!   comparison;
//! * end to end, with the network service and agent as `stratus up` assembles them (SQLite, in-process bus, the
//!   agent's devices in a namespace): the ports are created over HTTP, then each rule is timed from the API call
//!   until `nft` lists it in the group's chain, and a member from the API call until it is in the group's set.

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use network_agent::firewall::{Firewall, render};
use network_rpc::{FixedIp, HostState, NetworkState, PortState, SecurityGroupRuleState, SecurityGroupState};
use reqwest::StatusCode;
use serde_json::json;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Ports sharing the group.
    #[arg(long, default_value_t = 500)]
    ports: usize,
    /// Rule changes (and member changes) timed per case.
    #[arg(long, default_value_t = 10)]
    updates: usize,
}

/// A namespace, removed when dropped.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Result<Netns> {
        crate::ip(&["netns", "add", &name])?;
        Ok(Netns(name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

fn nft_list(ns: &str, what: &[&str]) -> String {
    crate::ip(&[&["netns", "exec", ns, "nft", "list"], what].concat()).unwrap_or_default()
}

pub fn run(args: Args) -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")) {
        bail!("the security group benchmark needs root (network namespaces, nftables)");
    }
    if crate::reexec_in_release(&crate::workspace_root())? {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    println!();
    println!(
        "security groups: one group shared by {} ports on one host ({} cores, {} build)",
        args.ports,
        crate::cores(),
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    println!("| case | samples | p50 ms | max ms |");
    println!("|---|---|---|---|");
    runtime.block_on(async {
        firewall_only(&args).await?;
        end_to_end(&args).await
    })
}

fn row(case: &str, times: &mut [f64]) {
    times.sort_by(f64::total_cmp);
    println!("| {case} | {} | {:.1} | {:.1} |", times.len(), crate::percentile(times, 0.5), times.last().copied().unwrap_or(0.0));
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn synthetic(ports: usize, extra_rules: usize, extra_members: usize) -> HostState {
    let group = "bench-group";
    let port = |i: usize| PortState {
        id: format!("{i:08x}-0000-4000-8000-000000000000"),
        network_id: "bench-net".into(),
        mac_address: format!("fa:16:3e:00:{:02x}:{:02x}", i >> 8, i & 0xff),
        fixed_ips: vec![FixedIp { subnet_id: "s".into(), ip_address: format!("10.90.{}.{}", i / 250, i % 250 + 2) }],
        device_owner: "compute:nova".into(),
        device_id: String::new(),
        project_id: String::new(),
        host: "bench-host".into(),
        admin_state_up: true,
        dns_name: String::new(),
        extra_dhcp_opts: vec![],
        status: "ACTIVE".into(),
        port_security_enabled: true,
        security_groups: vec![group.into()],
        allowed_address_pairs: vec![],
    };
    let ports: Vec<PortState> = (0..ports).map(port).collect();
    let mut rules = vec![
        SecurityGroupRuleState { id: "e4".into(), direction: "egress".into(), ethertype: "IPv4".into(), ..Default::default() },
        SecurityGroupRuleState { id: "e6".into(), direction: "egress".into(), ethertype: "IPv6".into(), ..Default::default() },
        SecurityGroupRuleState {
            id: "self".into(),
            direction: "ingress".into(),
            ethertype: "IPv4".into(),
            remote_group_id: Some(group.into()),
            ..Default::default()
        },
    ];
    rules.extend((0..extra_rules).map(|i| SecurityGroupRuleState {
        id: format!("tcp{i}"),
        direction: "ingress".into(),
        ethertype: "IPv4".into(),
        protocol: Some("tcp".into()),
        port_range_min: Some(1000 + i as i64),
        port_range_max: Some(1000 + i as i64),
        ..Default::default()
    }));
    let mut members: Vec<String> = ports.iter().map(|p| p.fixed_ips[0].ip_address.clone()).collect();
    members.extend((0..extra_members).map(|i| format!("10.91.0.{}", i + 2)));
    let net = NetworkState {
        id: "bench-net".into(),
        name: "bench".into(),
        project_id: "p".into(),
        admin_state_up: true,
        mtu: 1450,
        segment: Default::default(),
        subnets: vec![],
        ports,
        peers: vec![],
    };
    HostState { networks: vec![net], security_groups: vec![SecurityGroupState { id: group.into(), stateful: true, rules, members }], routers: vec![] }
}

async fn firewall_only(args: &Args) -> Result<()> {
    let ns = Netns::new(format!("sgbench-fw-{}", std::process::id()))?;
    let fw = Firewall::new("nft".into(), "ip".into(), Some(ns.0.clone()), Duration::from_secs(60));
    let state = synthetic(args.ports, 0, 0);
    let mut times = Vec::new();
    for _ in 0..args.updates {
        let t = Instant::now();
        std::hint::black_box(render(&state, "bench-host"));
        times.push(ms(t));
    }
    row("firewall: render the host's ruleset", &mut times);
    let t = Instant::now();
    let filtered = fw.apply(&state, "bench-host").await.map_err(|e| anyhow!("{e}"))?;
    if filtered != args.ports {
        bail!("{filtered} ports filtered of {}", args.ports);
    }
    row("firewall: first pass (both tables made)", &mut [ms(t)]);
    let mut times = Vec::new();
    for _ in 0..args.updates {
        let t = Instant::now();
        fw.apply(&state, "bench-host").await.map_err(|e| anyhow!("{e}"))?;
        times.push(ms(t));
    }
    row("firewall: pass with nothing to change", &mut times);
    let mut times = Vec::new();
    for i in 1..=args.updates {
        let t = Instant::now();
        fw.apply(&synthetic(args.ports, i, 0), "bench-host").await.map_err(|e| anyhow!("{e}"))?;
        times.push(ms(t));
    }
    let chain = nft_list(&ns.0, &["chain", "inet", "stratus-sg", "sg-bench-group-ingress"]);
    if !chain.contains(&format!("dport {} accept", 1000 + args.updates - 1)) {
        bail!("the last rule is not in the group's chain:\n{chain}");
    }
    row("firewall: rule added to the group (one chain refilled)", &mut times);
    let mut times = Vec::new();
    for i in 1..=args.updates {
        let t = Instant::now();
        fw.apply(&synthetic(args.ports, args.updates, i), "bench-host").await.map_err(|e| anyhow!("{e}"))?;
        times.push(ms(t));
    }
    row("firewall: member joins the group (one set refilled)", &mut times);
    let mut times = Vec::new();
    for i in 1..=args.updates {
        // a port comes (its chains, the maps' elements, the group's set), then goes again
        let state = synthetic(args.ports + i % 2, args.updates, args.updates);
        let t = Instant::now();
        fw.apply(&state, "bench-host").await.map_err(|e| anyhow!("{e}"))?;
        times.push(ms(t));
    }
    row("firewall: port added or removed (its chains, map elements)", &mut times);
    let mut times = Vec::new();
    for _ in 0..args.updates.min(5) {
        let fresh = Firewall::new("nft".into(), "ip".into(), Some(ns.0.clone()), Duration::from_secs(60));
        let t = Instant::now();
        fresh.apply(&synthetic(args.ports, args.updates, args.updates), "bench-host").await.map_err(|e| anyhow!("{e}"))?;
        times.push(ms(t));
    }
    row("firewall: full replacement (agent restart)", &mut times);
    Ok(())
}

async fn end_to_end(args: &Args) -> Result<()> {
    let host_ns = Netns::new(format!("sgbench-host-{}", std::process::id()))?;
    let dir = tempfile::tempdir()?;
    let mut config = cloud::Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
    config.server.listen = "127.0.0.1:0".parse()?;
    config.bus.url = format!("memory://bench-sg-{}", std::process::id());
    config.identity.password_hash_rounds = 4;
    config.network_agent.host = Some("bench-host".into());
    config.network_agent.host_namespace = Some(host_ns.0.clone());
    config.network_agent.namespace_prefix = format!("sgbench{}-", std::process::id());
    config.network_agent.enable_dhcp = false;
    let opts = cloud::StartOptions { compute_agent: false, volume_agent: false, network_agent: true, ..cloud::StartOptions::all_in_one() };
    let running = cloud::start(config, opts).await.map_err(|e| anyhow!("cloud start: {e}"))?;
    let result = measure(&running, &host_ns.0, args).await;
    running.shutdown().await.map_err(|e| anyhow!("{e}"))?;
    result
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > Duration::from_secs(120) {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

async fn measure(running: &cloud::RunningCloud, ns: &str, args: &Args) -> Result<()> {
    let creds = running.credentials.clone().context("credentials")?;
    let admin = test_utils::Client::new(&running.url, None).login("admin", &creds.admin_password, "admin").await;
    let project = admin.token_body["token"]["project"]["id"].as_str().context("project id")?.to_string();
    let quota = json!({"quota": {"port": -1, "security_group_rule": -1}});
    let r = admin.request(reqwest::Method::PUT, &format!("/networking/v2.0/quotas/{project}"), Some(&quota), &[]).await;
    if r.status != StatusCode::OK {
        bail!("quota update answered {}: {}", r.status, r.text);
    }
    let r = admin.post("/networking/v2.0/networks", &json!({"network": {"name": "sg-bench"}})).await;
    let net = r.json()["network"]["id"].as_str().with_context(|| format!("network create: {}", r.text))?.to_string();
    let r = admin
        .post(
            "/networking/v2.0/subnets",
            &json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.92.0.0/20", "enable_dhcp": false}}),
        )
        .await;
    if r.status != StatusCode::CREATED {
        bail!("subnet create answered {}: {}", r.status, r.text);
    }
    let r = admin.post("/networking/v2.0/security-groups", &json!({"security_group": {"name": "shared"}})).await;
    let group = r.json()["security_group"]["id"].as_str().with_context(|| format!("group create: {}", r.text))?.to_string();
    let rule =
        json!({"security_group_rule": {"security_group_id": group, "direction": "ingress", "ethertype": "IPv4", "remote_group_id": group}});
    let r = admin.post("/networking/v2.0/security-group-rules", &rule).await;
    if r.status != StatusCode::CREATED {
        bail!("rule create answered {}: {}", r.status, r.text);
    }

    let admin = Arc::new(admin);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (admin, next, net, group, n) = (admin.clone(), next.clone(), net.clone(), group.clone(), args.ports);
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let body = json!({"port": {"network_id": net, "binding:host_id": "bench-host", "device_owner": "compute:nova",
                    "security_groups": [group]}});
                let r = admin.post("/networking/v2.0/ports", &body).await;
                if r.status != StatusCode::CREATED {
                    return Err(anyhow!("port create answered {}: {}", r.status, r.text));
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let created = ms(started);
    let want = args.ports;
    wait_for("every port's filter", || nft_list(ns, &["map", "inet", "stratus-sg", "egress-ports"]).matches(" : goto ").count() == want)
        .await?;
    println!(
        "| end to end: {want} ports created over HTTP (4 clients), then all filtered | 1 | {:.0} | {created:.0} (created) |",
        ms(started)
    );

    let chain = format!("sg-{group}-ingress");
    let mut times = Vec::new();
    for i in 0..args.updates {
        let port = 2000 + i;
        let rule = json!({"security_group_rule": {"security_group_id": group, "direction": "ingress", "ethertype": "IPv4",
            "protocol": "tcp", "port_range_min": port, "port_range_max": port}});
        let t = Instant::now();
        let r = admin.post("/networking/v2.0/security-group-rules", &rule).await;
        if r.status != StatusCode::CREATED {
            bail!("rule create answered {}: {}", r.status, r.text);
        }
        let needle = format!("dport {port} accept");
        wait_for("the rule in nftables", || nft_list(ns, &["chain", "inet", "stratus-sg", &chain]).contains(&needle)).await?;
        times.push(ms(t));
    }
    row("end to end: rule create → in the group's chain", &mut times);

    let set = format!("sg-{group}-v4");
    let mut times = Vec::new();
    for _ in 0..args.updates {
        let t = Instant::now();
        let body = json!({"port": {"network_id": net, "security_groups": [group]}});
        let r = admin.post("/networking/v2.0/ports", &body).await;
        let addr = r.json()["port"]["fixed_ips"][0]["ip_address"].as_str().with_context(|| format!("port create: {}", r.text))?.to_string();
        // (adjacent members merge into ranges in the listing: ask for the element)
        let element = format!("{{ {addr} }}");
        wait_for("the member in the set", || {
            crate::ip(&["netns", "exec", ns, "nft", "get", "element", "inet", "stratus-sg", &set, &element]).is_ok()
        })
        .await?;
        times.push(ms(t));
    }
    row("end to end: member port create → in the group's set", &mut times);
    Ok(())
}
