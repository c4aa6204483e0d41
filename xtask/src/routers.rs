//! `cargo xtask bench routers`: router convergence in the network agent, in one release process built with
//! `cloud::start` (SQLite, the in-process bus) with the network agent on, its devices in a network namespace the
//! benchmark makes (`xb<pid>-host`) and its namespaces under the prefix `xb<pid>-`, all removed at the end. Needs
//! root, iproute2 and nftables. Per router, in sequence:
//!
//! * router create (gateway on `public`) + tenant network interface → the NAT table in force in the router's
//!   namespace (the agent's `<state_dir>/l3/<router>.nft`, renamed only after `nft -f` took it);
//! * floating IP create → its DNAT in force;
//! * with every router in place, an idle pass (nothing to change);
//! * router delete (after its floating IP and interface went) → its namespace gone.
//!
//! Change notices drive the passes (`polling_interval` stays at its 2 s default); DHCP is off so dnsmasq start-up
//! does not count.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Routers made (each with one interface and one floating IP), then deleted.
    #[arg(long, default_value_t = 20)]
    routers: usize,
}

pub fn run(args: Args) -> Result<()> {
    let root = crate::workspace_root();
    if crate::reexec_in_release(&root)? {
        return Ok(());
    }
    if !crate::is_root() {
        bail!("bench routers needs root (network namespaces, nftables)");
    }
    let prefix = format!("xb{}-", std::process::id());
    let host_ns = format!("{prefix}host");
    crate::ip(&["netns", "add", &host_ns])?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    let result = runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let mut config = cloud::Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
        config.server.listen = "127.0.0.1:0".parse()?;
        config.bus.url = format!("memory://bench-routers-{}", std::process::id());
        config.identity.password_hash_rounds = 4;
        config.network_agent.host = Some("bench-l3".into());
        config.network_agent.host_namespace = Some(host_ns.clone());
        config.network_agent.namespace_prefix = prefix.clone();
        config.network_agent.enable_dhcp = false;
        let opts =
            cloud::StartOptions { compute_agent: false, volume_agent: false, network_agent: true, ..cloud::StartOptions::all_in_one() };
        let running = cloud::start(config, opts).await.map_err(|e| anyhow!("cloud start: {e}"))?;
        let result = measure(&running, &args, &prefix).await;
        running.shutdown().await.map_err(|e| anyhow!("{e}"))?;
        result
    });
    crate::remove_namespaces(&prefix);
    result
}

/// Waits (bounded, 10 ms steps) until `f` holds; the time since `start`, in ms.
async fn until(what: &str, start: Instant, mut f: impl FnMut() -> bool) -> Result<f64> {
    while !f() {
        if start.elapsed() > Duration::from_secs(60) {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

fn rules(state: &Path, router: &str) -> String {
    std::fs::read_to_string(state.join(format!("{router}.nft"))).unwrap_or_default()
}

async fn call(admin: &test_utils::Client, method: reqwest::Method, path: &str, body: Option<Value>, want: u16) -> Result<Value> {
    let r = admin.request(method, &format!("/networking/v2.0/{path}"), body.as_ref(), &[]).await;
    if r.status.as_u16() != want {
        bail!("{path} answered {}: {}", r.status, r.text);
    }
    Ok(if r.text.is_empty() { Value::Null } else { r.json() })
}

async fn measure(running: &cloud::RunningCloud, args: &Args, prefix: &str) -> Result<()> {
    use reqwest::Method;
    let creds = running.credentials.clone().context("credentials")?;
    let admin = test_utils::Client::new(&running.url, None).login("admin", &creds.admin_password, "admin").await;
    let state: PathBuf = running.data_dir.join("network-agent/l3");
    // Neutron's default quotas (10 routers, 50 floating IPs) would end the run early.
    let project = admin.token_body["token"]["project"]["id"].as_str().context("project id")?.to_string();
    let body = json!({"quota": {"router": -1, "floatingip": -1, "network": -1, "subnet": -1, "port": -1}});
    call(&admin, Method::PUT, &format!("quotas/{project}"), Some(body), 200).await?;
    let public = call(&admin, Method::GET, "networks?name=public", None, 200).await?["networks"][0]["id"]
        .as_str()
        .context("the public network")?
        .to_string();
    let (mut create, mut fip, mut delete) = (Vec::new(), Vec::new(), Vec::new());
    let mut made = Vec::new();
    for i in 0..args.routers {
        let net =
            call(&admin, Method::POST, "networks", Some(json!({"network": {"name": format!("bench-{i}")}})), 201).await?["network"]["id"]
                .as_str()
                .context("network id")?
                .to_string();
        let cidr = format!("10.{}.{}.0/24", 100 + i / 250, i % 250);
        let body = json!({"subnet": {"network_id": net, "cidr": cidr, "ip_version": 4, "enable_dhcp": false}});
        let subnet =
            call(&admin, Method::POST, "subnets", Some(body), 201).await?["subnet"]["id"].as_str().context("subnet id")?.to_string();
        let body = json!({"port": {"network_id": net, "binding:host_id": "bench-l3", "device_owner": "compute:nova"}});
        let port = call(&admin, Method::POST, "ports", Some(body), 201).await?["port"].clone();
        let fixed = port["fixed_ips"][0]["ip_address"].as_str().context("fixed ip")?.to_string();

        let start = Instant::now();
        let body = json!({"router": {"name": format!("bench-{i}"), "external_gateway_info": {"network_id": public}}});
        let router =
            call(&admin, Method::POST, "routers", Some(body), 201).await?["router"]["id"].as_str().context("router id")?.to_string();
        call(&admin, Method::PUT, &format!("routers/{router}/add_router_interface"), Some(json!({"subnet_id": subnet})), 200).await?;
        let want = format!("{{ {cidr} }} snat to");
        create.push(until("the router's NAT", start, || rules(&state, &router).contains(&want)).await?);

        let start = Instant::now();
        let body = json!({"floatingip": {"floating_network_id": public, "port_id": port["id"]}});
        let f =
            call(&admin, Method::POST, "floatingips", Some(body), 201).await?["floatingip"]["id"].as_str().context("fip id")?.to_string();
        let want = format!("dnat to {fixed}");
        fip.push(until("the floating IP's DNAT", start, || rules(&state, &router).contains(&want)).await?);
        made.push((router, subnet, f));
    }
    let agent = running.network_agent.as_ref().context("the network agent")?;
    let mut idle = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let outcome = agent.sync_now().await.map_err(|e| anyhow!("{e}"))?;
        idle.push(start.elapsed().as_secs_f64() * 1000.0);
        if !outcome.errors.is_empty() || outcome.routers != args.routers {
            bail!("the idle pass: {outcome:?}");
        }
    }
    for (router, subnet, f) in &made {
        call(&admin, Method::DELETE, &format!("floatingips/{f}"), None, 204).await?;
        call(&admin, Method::PUT, &format!("routers/{router}/remove_router_interface"), Some(json!({"subnet_id": subnet})), 200).await?;
        let start = Instant::now();
        call(&admin, Method::DELETE, &format!("routers/{router}"), None, 204).await?;
        let ns = PathBuf::from(format!("/run/netns/{prefix}qrouter-{router}"));
        delete.push(until("the router namespace to go", start, || !ns.exists()).await?);
    }

    println!();
    println!("routers ({} cores; one agent, notices drive its passes, DHCP off; times from the API call)", crate::cores());
    println!("| case | routers | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    let n = args.routers;
    row("router create + interface → NAT in force", n, &mut create);
    row("floating IP create → DNAT in force", n, &mut fip);
    row(&format!("idle pass with {n} routers"), n, &mut idle);
    row("router delete → namespace gone", n, &mut delete);
    Ok(())
}

fn row(case: &str, n: usize, times: &mut [f64]) {
    times.sort_by(f64::total_cmp);
    println!(
        "| {case} | {n} | {:.1} | {:.1} | {:.1} |",
        crate::percentile(times, 0.5),
        crate::percentile(times, 0.99),
        times.last().copied().unwrap_or_default()
    );
}
