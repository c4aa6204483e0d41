//! `cargo xtask bench dataplane`: the network agent's data plane from a port's binding to a DHCP lease, and the
//! start-up of an agent on a host with many bound ports (issue 9). One release process built with `cloud::start`
//! (SQLite, the in-process bus); the agents are started on their own (`network_agent::Agent::start` with the
//! process's `[network_agent]` settings), their devices in a network namespace the benchmark makes
//! (`xb<pid>-host`), their namespaces under the prefix `xb<pid>-`. An "instance" is a veth pair as the container
//! driver makes it: `tap<port id[:11]>` in the host namespace, the other end with the port's MAC in the
//! benchmark's client namespace (`xb<pid>-clients`), where busybox `udhcpc` asks for a lease. Every namespace
//! with the prefix, and what runs in it, is removed at the end, whatever the outcome. Needs root, iproute2,
//! nftables, dnsmasq and busybox.
//!
//! * **port bound → DHCP lease** (`--ports`, one after another, on one network whose bridge and dnsmasq are
//!   already there): the clock starts before `POST /ports` with `binding:host_id` = the agent's host (as compute
//!   binds it); then the tap appears (the container driver's `ip link add … type veth`) and `udhcpc` starts on
//!   the other end at once, as a guest's client would. Timed from the POST: the tap on the network's bridge
//!   (netlink), the port `ACTIVE` over the API (the agent's `update_device_up`), its MAC in dnsmasq's hosts file,
//!   and the lease (`udhcpc` bound with the port's fixed IP). `udhcpc` sends a DISCOVER at most once a second (`-T 1`), so a lease that misses the
//!   first one lands on the next second. Also: the first port of the network (the bridge, DHCP namespace and
//!   dnsmasq made for it), and a second lease on a port already plugged (dnsmasq's own answer).
//! * **agent start-up with many ports** (`--startup-ports` over `--networks`, each with a DHCP subnet): the ports
//!   are bound to a host whose agent has reported in (so they wait `DOWN` for it, as after a host restart), their
//!   taps made, every client end up; then a fresh agent starts, and the clock runs until its first pass is done
//!   (security groups included), every tap is on its bridge, every dnsmasq hosts file has all its entries, one
//!   client per network has its lease, and every port is `ACTIVE` — each milestone is reported, and the whole.
//!   Once no pass has finished for 3 s, idle passes (nothing to change) are timed.
//!
//! The agent's `polling_interval` (how often it looks for new taps) is its 2 s default unless `--polling-interval`
//! says otherwise; change notices drive the other passes.

use std::{
    collections::HashMap,
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use network_agent::{Agent, AgentHandle, bridge_name, dhcp::DhcpFiles, netlink::Netlink, tap_name};
use reqwest::Method;
use serde_json::{Value, json};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Ports bound one after another, each timed to its DHCP lease.
    #[arg(long, default_value_t = 20)]
    ports: usize,
    /// Ports bound to the host before a fresh agent starts (start-up convergence); 0 skips the case.
    #[arg(long, default_value_t = 1000)]
    startup_ports: usize,
    /// Networks (one DHCP subnet, a /22, each) the start-up ports are spread over.
    #[arg(long, default_value_t = 4)]
    networks: usize,
    /// The agent's `polling_interval` in seconds (how often it looks for new tap devices).
    #[arg(long, default_value_t = 2.0)]
    polling_interval: f64,
}

/// Removes the benchmark's namespaces (and what runs in them, and their devices) when dropped: on success, on an
/// error and on a panic alike.
struct Namespaces(String);

impl Drop for Namespaces {
    fn drop(&mut self) {
        crate::remove_namespaces(&self.0);
    }
}

pub fn run(args: Args) -> Result<()> {
    let root = crate::workspace_root();
    if crate::reexec_in_release(&root)? {
        return Ok(());
    }
    if !crate::is_root() {
        bail!("bench dataplane needs root (network namespaces, nftables, dnsmasq)");
    }
    for tool in ["busybox", "dnsmasq", "nft"] {
        let found = Command::new("sh").args(["-c", &format!("command -v {tool} || test -x /usr/sbin/{tool}")]).output();
        if !found.is_ok_and(|o| o.status.success()) {
            bail!("bench dataplane needs {tool}");
        }
    }
    if args.ports == 0 || args.networks == 0 || args.networks > 100 || !(0.01..=60.0).contains(&args.polling_interval) {
        bail!("--ports and --networks (at most 100) must be positive, --polling-interval between 0.01 and 60 s");
    }
    if args.startup_ports > 0 && (args.startup_ports < args.networks || args.startup_ports.div_ceil(args.networks) > 1000) {
        bail!("--startup-ports must be at least --networks and at most 1,000 per network (a /22 each)");
    }
    let started = Instant::now();
    let load_before = crate::loadavg();
    let prefix = format!("xb{}-", std::process::id());
    let _guard = Namespaces(prefix.clone());
    let ns = Spaces { prefix: prefix.clone(), host: format!("{prefix}host"), clients: format!("{prefix}clients") };
    for n in [&ns.host, &ns.clients] {
        crate::ip(&["netns", "add", n])?;
        crate::ip(&["-n", n, "link", "set", "lo", "up"])?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    let report = runtime.block_on(async {
        tokio::select! {
            r = bench(&args, &ns) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    });
    // the agents' background tasks, the cloud's and the clients go before the namespaces do
    runtime.shutdown_timeout(Duration::from_secs(10));
    let report = report?;

    println!();
    println!(
        "data plane ({} cores, {} build, load average {load_before} before and {} after; agent polling_interval {} s; \
         udhcpc sends a DISCOVER at most once a second; run took {:.0} s)",
        crate::cores(),
        if cfg!(debug_assertions) { "debug" } else { "release" },
        crate::loadavg(),
        args.polling_interval,
        started.elapsed().as_secs_f64()
    );
    println!("| case | samples | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    for (case, mut times) in report {
        times.sort_by(f64::total_cmp);
        println!(
            "| {case} | {} | {:.1} | {:.1} | {:.1} |",
            times.len(),
            crate::percentile(&times, 0.5),
            crate::percentile(&times, 0.99),
            times.last().copied().unwrap_or_default()
        );
    }
    Ok(())
}

/// The benchmark's namespaces.
struct Spaces {
    prefix: String,
    /// Where the agents' bridges and the taps are.
    host: String,
    /// Where the other ends of the taps are, and the DHCP clients.
    clients: String,
}

/// Table rows: the case and its times in ms.
type Report = Vec<(String, Vec<f64>)>;

/// Runs `ip [-n ns] -batch -` with the commands in `batch`, one per line.
fn ip_batch(ns: &str, batch: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("run ip -batch")?;
    child.stdin.take().context("ip's stdin")?.write_all(batch.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("ip -n {ns} -batch: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

async fn call(admin: &test_utils::Client, method: Method, path: &str, body: Option<Value>, want: u16) -> Result<Value> {
    let r = admin.request(method, &format!("/networking/v2.0/{path}"), body.as_ref(), &[]).await;
    if r.status.as_u16() != want {
        bail!("{path} answered {}: {}", r.status, r.text);
    }
    Ok(if r.text.is_empty() { Value::Null } else { r.json() })
}

fn str_at(v: &Value, what: &str) -> Result<String> {
    v.as_str().map(str::to_string).with_context(|| format!("no {what}"))
}

/// A network with one IPv4 subnet (DHCP on): its id and MTU.
async fn network(admin: &test_utils::Client, name: &str, cidr: &str) -> Result<(String, u64)> {
    let net = call(admin, Method::POST, "networks", Some(json!({"network": {"name": name}})), 201).await?["network"].clone();
    let id = str_at(&net["id"], "network id")?;
    let body = json!({"subnet": {"network_id": id, "cidr": cidr, "ip_version": 4}});
    call(admin, Method::POST, "subnets", Some(body), 201).await?;
    Ok((id, net["mtu"].as_u64().unwrap_or(1450)))
}

/// A bound port as the benchmark needs it.
struct Port {
    id: String,
    mac: String,
    ip: String,
}

async fn bound_port(admin: &test_utils::Client, net: &str, host: &str) -> Result<Port> {
    let body = json!({"port": {"network_id": net, "binding:host_id": host, "device_owner": "compute:nova"}});
    let p = call(admin, Method::POST, "ports", Some(body), 201).await?["port"].clone();
    Ok(Port { id: str_at(&p["id"], "port id")?, mac: str_at(&p["mac_address"], "MAC")?, ip: str_at(&p["fixed_ips"][0]["ip_address"], "fixed IP")? })
}

/// The `ip link` commands of a tap whose other end, `peer`, has the port's MAC in the client namespace (as the
/// container driver plugs a port), the tap up (the other end is brought up in its namespace).
fn tap_commands(port: &Port, peer: &str, mtu: u64, clients: &str) -> String {
    let tap = tap_name(&port.id);
    format!(
        "link add {tap} mtu {mtu} type veth peer name {peer} address {mac} mtu {mtu} netns {clients}\nlink set {tap} up\n",
        mac = port.mac
    )
}

/// busybox `udhcpc` on `iface` in the client namespace: one DISCOVER a second, at most `tries`; on a lease its
/// script writes the lease's variables to `<dir>/lease-<iface>`. Killed when dropped.
fn dhcp_client(dir: &Path, clients: &str, iface: &str, tries: u32) -> Result<tokio::process::Child> {
    let script = dir.join("udhcpc.sh");
    if !script.exists() {
        let body = format!("#!/bin/sh\n[ \"$1\" = bound ] && env > \"{}/lease-$interface\"\nexit 0\n", dir.display());
        std::fs::write(&script, body)?;
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let _ = std::fs::remove_file(dir.join(format!("lease-{iface}")));
    let log = std::fs::File::create(dir.join(format!("udhcpc-{iface}.log")))?;
    let err = log.try_clone()?;
    tokio::process::Command::new("ip")
        .args(["netns", "exec", clients, "busybox", "udhcpc", "-i", iface, "-n", "-q", "-f", "-T", "1", "-t", &tries.to_string(), "-s"])
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .context("run udhcpc")
}

/// The address `udhcpc` on `iface` was given, once its client has exited.
fn leased(dir: &Path, iface: &str, status: std::process::ExitStatus) -> Result<String> {
    let env = std::fs::read_to_string(dir.join(format!("lease-{iface}"))).unwrap_or_default();
    match env.lines().find_map(|l| l.strip_prefix("ip=")) {
        Some(ip) if status.success() => Ok(ip.to_string()),
        _ => {
            let log = std::fs::read_to_string(dir.join(format!("udhcpc-{iface}.log"))).unwrap_or_default();
            bail!("no lease on {iface} ({status}):\n{log}")
        }
    }
}

/// The settings of this process's `[network_agent]`, as a standalone agent of `host`.
fn agent_config(running: &cloud::RunningCloud, host: &str) -> Result<network_agent::AgentConfig> {
    let mut c = cloud::agent::network_agent_config(&running.cloud.config).map_err(|e| anyhow!("{e}"))?;
    c.host = host.into();
    Ok(c)
}

async fn bench(args: &Args, ns: &Spaces) -> Result<Report> {
    let dir = tempfile::tempdir()?;
    let mut config = cloud::Config { data_dir: dir.path().join("data"), ..Default::default() };
    config.server.listen = "127.0.0.1:0".parse()?;
    config.bus.url = format!("memory://bench-dataplane-{}", std::process::id());
    config.identity.password_hash_rounds = 4;
    config.network_agent.host_namespace = Some(ns.host.clone());
    config.network_agent.namespace_prefix = ns.prefix.clone();
    config.network_agent.polling_interval = args.polling_interval;
    let opts = cloud::StartOptions { compute_agent: false, volume_agent: false, network_agent: false, ..cloud::StartOptions::all_in_one() };
    let running = cloud::start(config, opts).await.map_err(|e| anyhow!("cloud start: {e}"))?;
    let result = measure(&running, args, ns, dir.path()).await;
    running.shutdown().await.map_err(|e| anyhow!("{e}"))?;
    result
}

async fn measure(running: &cloud::RunningCloud, args: &Args, ns: &Spaces, dir: &Path) -> Result<Report> {
    let creds = running.credentials.clone().context("credentials")?;
    let admin = test_utils::Client::new(&running.url, None).login("admin", &creds.admin_password, "admin").await;
    let project = admin.token_body["token"]["project"]["id"].as_str().context("project id")?.to_string();
    let body = json!({"quota": {"network": -1, "subnet": -1, "port": -1}});
    call(&admin, Method::PUT, &format!("quotas/{project}"), Some(body), 200).await?;
    let mut report = Report::new();
    bound_to_lease(running, &admin, args, ns, dir, &mut report).await?;
    if args.startup_ports > 0 {
        startup(running, &admin, args, ns, dir, &mut report).await?;
    }
    Ok(report)
}

/// Waits (bounded) for the agent's first pass: it has reported in, so ports bound to its host wait for it.
async fn first_pass(agent: &AgentHandle) -> Result<()> {
    let mut passes = agent.passes();
    tokio::time::timeout(Duration::from_secs(60), passes.wait_for(|n| *n > 0))
        .await
        .context("no pass of the agent within 60 s")?
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Case 1: ports bound one after another on a network already served on the host, each to its lease.
async fn bound_to_lease(
    running: &cloud::RunningCloud,
    admin: &test_utils::Client,
    args: &Args,
    ns: &Spaces,
    dir: &Path,
    report: &mut Report,
) -> Result<()> {
    let host = "bench-dp-lease";
    let agent = Agent::start(agent_config(running, host)?, running.cloud.bus.clone()).await.map_err(|e| anyhow!("agent start: {e}"))?;
    first_pass(&agent).await?;
    let (net, mtu) = network(admin, "dp-lease", "10.95.0.0/22").await?;
    let nl = Netlink::open(Some(&ns.host)).await.map_err(|e| anyhow!("{e}"))?;
    let bridge = bridge_name(&net);
    let hosts_file = DhcpFiles::new(&running.data_dir.join("network-agent"), &net).hosts();
    let (mut plugged, mut active, mut in_hosts, mut lease, mut again) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut cold = None;
    let mut taps = Vec::new();
    for i in 0..=args.ports.min(1000) {
        let peer = format!("c{i}");
        let start = Instant::now();
        let port = bound_port(admin, &net, host).await?;
        taps.push(tap_name(&port.id));
        ip_batch(&ns.host, &tap_commands(&port, &peer, mtu, &ns.clients))?;
        crate::ip(&["-n", &ns.clients, "link", "set", &peer, "up"])?;
        let mut client = dhcp_client(dir, &ns.clients, &peer, 60)?;
        let (mut on_bridge, mut is_active, mut hosts, mut got) = (None, None, None, None);
        while on_bridge.is_none() || is_active.is_none() || hosts.is_none() || got.is_none() {
            if start.elapsed() > Duration::from_secs(90) {
                bail!("port {i}: tap on the bridge {on_bridge:?}, ACTIVE {is_active:?}, hosts file {hosts:?}, lease {got:?} after 90 s");
            }
            if hosts.is_none() && std::fs::read_to_string(&hosts_file).is_ok_and(|h| h.contains(&port.mac)) {
                hosts = Some(ms(start));
            }
            if on_bridge.is_none() {
                let tap = nl.link(&tap_name(&port.id)).await.map_err(|e| anyhow!("{e}"))?;
                let br = nl.link(&bridge).await.map_err(|e| anyhow!("{e}"))?;
                if let (Some(tap), Some(br)) = (tap, br)
                    && tap.controller == Some(br.index)
                {
                    on_bridge = Some(ms(start));
                }
            }
            if is_active.is_none() && call(admin, Method::GET, &format!("ports/{}", port.id), None, 200).await?["port"]["status"] == "ACTIVE" {
                is_active = Some(ms(start));
            }
            if got.is_none()
                && let Some(status) = client.try_wait()?
            {
                let addr = leased(dir, &peer, status)?;
                if addr != port.ip {
                    bail!("port {i} leased {addr}, its fixed IP is {}", port.ip);
                }
                got = Some(ms(start));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // a second lease on the plugged port: dnsmasq's own answer, the first DISCOVER answered
        let t = Instant::now();
        let mut client = dhcp_client(dir, &ns.clients, &peer, 10)?;
        let status = tokio::time::timeout(Duration::from_secs(20), client.wait()).await.context("udhcpc did not end")??;
        leased(dir, &peer, status)?;
        let second = ms(t);
        let (b, a, h, l) = (on_bridge.unwrap_or_default(), is_active.unwrap_or_default(), hosts.unwrap_or_default(), got.unwrap_or_default());
        if i == 0 {
            cold = Some((b, a, l));
        } else {
            plugged.push(b);
            active.push(a);
            in_hosts.push(h);
            lease.push(l);
            again.push(second);
        }
    }
    let (cb, ca, cl) = cold.context("no first port")?;
    report.push(("first port of a network → its tap on the bridge (bridge made)".into(), vec![cb]));
    report.push(("first port of a network → ACTIVE".into(), vec![ca]));
    report.push(("first port of a network → DHCP lease (DHCP namespace, dnsmasq started)".into(), vec![cl]));
    report.push(("port bound → its tap on the network's bridge".into(), plugged));
    report.push(("port bound → ACTIVE over the API (update_device_up)".into(), active));
    report.push(("port bound → its MAC in the network's dnsmasq hosts file".into(), in_hosts));
    report.push(("port bound → DHCP lease (client from the tap's creation)".into(), lease));
    report.push(("lease on a port already plugged (dnsmasq's answer)".into(), again));
    // the next case has a host of its own: this agent goes with what it made, then the taps
    agent.teardown().await.map_err(|e| anyhow!("agent teardown: {e}"))?;
    ip_batch(&ns.host, &taps.iter().map(|t| format!("link delete {t}\n")).collect::<String>())?;
    Ok(())
}

/// Case 2: a fresh agent on a host with `startup_ports` bound ports over `networks` networks.
async fn startup(
    running: &cloud::RunningCloud,
    admin: &test_utils::Client,
    args: &Args,
    ns: &Spaces,
    dir: &Path,
    report: &mut Report,
) -> Result<()> {
    use network_rpc::{AgentReport, CAP_L3, GetHostState, PLUGIN_TOPIC};
    let host = "bench-dp-start";
    let (n, nets) = (args.startup_ports, args.networks);
    // the host's agent has reported before (its ports wait DOWN for it, as after a host restart)
    let bus = &running.cloud.bus;
    let report_in = AgentReport { tunnel_ip: None, interface_mappings: vec![], capabilities: vec![CAP_L3.to_string()] };
    bus.call(&bus::Target::topic(PLUGIN_TOPIC), &GetHostState { host: host.into(), report: report_in }, Duration::from_secs(30))
        .await
        .map_err(|e| anyhow!("agent report: {e}"))?;
    let mut networks = Vec::new();
    for k in 0..nets {
        networks.push(network(admin, &format!("dp-start-{k}"), &format!("10.{}.{}.0/22", 96 + k / 64, (k % 64) * 4)).await?);
    }
    // the ports, by 4 clients; port i on network i % networks
    let t = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let networks = Arc::new(networks);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (admin, next, networks) = (admin.clone(), next.clone(), networks.clone());
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(made);
                }
                made.push((i, bound_port(&admin, &networks[i % nets].0, host).await?));
            }
        }));
    }
    let mut ports: Vec<(usize, Port)> = Vec::new();
    for task in tasks {
        ports.extend(task.await??);
    }
    ports.sort_by_key(|(i, _)| *i);
    let created = ms(t);
    // every tap, the other ends up with the ports' MACs
    let t = Instant::now();
    let batch: String = ports.iter().map(|(i, p)| tap_commands(p, &format!("d{i}"), networks[i % nets].1, &ns.clients)).collect();
    ip_batch(&ns.host, &batch)?;
    ip_batch(&ns.clients, &ports.iter().map(|(i, _)| format!("link set d{i} up\n")).collect::<String>())?;
    let tapped = ms(t);
    let early = call(admin, Method::GET, &format!("ports?binding:host_id={host}&device_owner=compute:nova&status=ACTIVE&fields=id"), None, 200).await?["ports"]
        .as_array()
        .map_or(0, Vec::len);
    if early != 0 {
        bail!("{early} ports ACTIVE before their host's agent started");
    }
    let tap_net: HashMap<String, String> = ports.iter().map(|(i, p)| (tap_name(&p.id), bridge_name(&networks[i % nets].0))).collect();
    let per_net: Vec<usize> = (0..nets).map(|k| ports.iter().filter(|(i, _)| i % nets == k).count()).collect();
    let state_dir = running.data_dir.join("network-agent");
    let nl = Netlink::open(Some(&ns.host)).await.map_err(|e| anyhow!("{e}"))?;

    // the agent starts; one client per network asks for a lease from then on
    let start = Instant::now();
    let mut clients: Vec<(String, String, tokio::process::Child)> = Vec::new();
    let config = agent_config(running, host)?;
    let agent = Agent::start(config, bus.clone()).await.map_err(|e| anyhow!("agent start: {e}"))?;
    let mut passes = agent.passes();
    for k in 0..nets {
        let (i, p) = ports.iter().find(|(i, _)| i % nets == k).context("a port per network")?;
        let peer = format!("d{i}");
        clients.push((peer.clone(), p.ip.clone(), dhcp_client(dir, &ns.clients, &peer, 600)?));
    }
    let (mut first, mut on_bridges, mut hosts, mut leases, mut active) = (None, None, None, None, None);
    let mut leased_nets = 0;
    let mut round = 0u64;
    while first.is_none() || on_bridges.is_none() || hosts.is_none() || leases.is_none() || active.is_none() {
        if start.elapsed() > Duration::from_secs(600) {
            bail!("no convergence in 600 s: first pass {first:?}, taps {on_bridges:?}, hosts files {hosts:?}, leases {leases:?}, ACTIVE {active:?}");
        }
        if first.is_none() && *passes.borrow_and_update() > 0 {
            first = Some(ms(start));
        }
        if on_bridges.is_none() {
            let links = nl.links().await.map_err(|e| anyhow!("{e}"))?;
            let index: HashMap<&str, u32> = links.iter().filter(|l| l.kind == "bridge").map(|l| (l.name.as_str(), l.index)).collect();
            let plugged = links
                .iter()
                .filter(|l| tap_net.get(&l.name).is_some_and(|br| l.controller.is_some() && l.controller == index.get(br.as_str()).copied()))
                .count();
            if plugged == n {
                on_bridges = Some(ms(start));
            }
        }
        if hosts.is_none() {
            let complete = networks.iter().zip(&per_net).all(|((id, _), want)| {
                let files = DhcpFiles::new(&state_dir, id);
                std::fs::read_to_string(files.hosts()).is_ok_and(|h| h.lines().count() == *want)
            });
            if complete {
                hosts = Some(ms(start));
            }
        }
        for (peer, want, client) in clients.iter_mut() {
            if !want.is_empty()
                && let Some(status) = client.try_wait()?
            {
                let addr = leased(dir, peer, status)?;
                if addr != *want {
                    bail!("{peer} leased {addr}, its fixed IP is {want}");
                }
                want.clear();
                leased_nets += 1;
            }
        }
        if leases.is_none() && leased_nets == nets {
            leases = Some(ms(start));
        }
        // the API lists every port: asked every fifth round (about 100 ms), not to load the machine more than the
        // agent does
        if active.is_none() && round.is_multiple_of(5) {
            let up = call(admin, Method::GET, &format!("ports?binding:host_id={host}&device_owner=compute:nova&status=ACTIVE&fields=id"), None, 200).await?["ports"]
                .as_array()
                .map_or(0, Vec::len);
            if up == n {
                active = Some(ms(start));
            }
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let converged = ms(start);
    let passes_done = *passes.borrow();
    // the passes the devices' reports called for end before idle passes are timed (a pass of the agent's own loop
    // would run alongside them): no pass finished for 3 s
    let (settle, mut since, mut last) = (Instant::now(), Instant::now(), passes_done);
    while since.elapsed() < Duration::from_secs(3) {
        if settle.elapsed() > Duration::from_secs(120) {
            bail!("the agent still runs passes 120 s after converging");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = *passes.borrow();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }    let mut idle = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let outcome = agent.sync_now().await.map_err(|e| anyhow!("{e}"))?;
        idle.push(ms(t));
        if !outcome.errors.is_empty() || outcome.taps != n || outcome.dhcp != nets || !outcome.plugged.is_empty() {
            bail!("the idle pass: {outcome:?}");
        }
    }
    let case = format!("start-up, {n} ports on {nets} networks");
    report.push((format!("{case}: setup, ports created over HTTP by 4 clients (not timed below)"), vec![created]));
    report.push((format!("{case}: setup, {n} taps made with ip -batch (not timed below)"), vec![tapped]));
    report.push((format!("{case}: agent start → its first pass done (security groups included)"), vec![first.unwrap_or_default()]));
    report.push((format!("{case}: agent start → every tap on its bridge"), vec![on_bridges.unwrap_or_default()]));
    report.push((format!("{case}: agent start → every hosts file complete"), vec![hosts.unwrap_or_default()]));
    report.push((format!("{case}: agent start → a lease on every network"), vec![leases.unwrap_or_default()]));
    report.push((format!("{case}: agent start → every port ACTIVE over the API"), vec![active.unwrap_or_default()]));
    report.push((format!("{case}: agent start → converged (all of the above; {passes_done} passes by then)"), vec![converged]));
    report.push((format!("{case}: idle pass"), idle));
    agent.stop().await;
    Ok(())
}
