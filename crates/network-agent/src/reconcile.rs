//! Makes the host match a desired [`HostState`], idempotently: every pass creates what is missing, corrects what
//! differs and removes what no network wants any more — also what a crashed agent left behind, since the pass looks
//! at the devices and namespaces that exist, not at a memory of what it made.
//!
//! First the security groups of all bound ports (`firewall`: its own nftables tables, rendered whole from the state,
//! so ports gone lose their rules), so a port is filtered before its tap joins a bridge or it is reported up.
//! Then per network: the bridge, then the segment's uplink (VXLAN device or physical interface), then the bound ports'
//! taps (the network's MTU, on the bridge, up; a plugged port that is not `ACTIVE` is reported up to the network
//! service, an `ACTIVE` one whose tap is gone down — judged from the port's status and the devices present, so a
//! restarted agent reports what changed while it was away), then DHCP with, when configured, the metadata proxy in
//! the DHCP namespace (169.254.169.254/32 on the namespace's device, a listener on port 80 answering for the
//! network's ports), then routers (`qrouter-…` namespaces, an nftables table each).

use std::{
    collections::{BTreeSet, HashSet},
    net::{IpAddr, Ipv4Addr},
};

use bus::{Bus, Target};
use network_rpc::{DHCP_OWNER, GetDhcpPort, HostState, NetworkState, PLUGIN_TOPIC, ReleaseDhcpPort, UpdateDeviceDown, UpdateDeviceUp};

use crate::{
    AgentConfig, Error, bridge_name,
    dhcp::{self, DhcpFiles},
    metadata::{self, METADATA_IP, MetadataProxy},
    firewall::Firewall,
    namespace,
    netlink::{Link, Netlink, parse_mac},
    ns_device_name, tap_name, vlan_name, vxlan_name,
};

/// What one pass did, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Networks wired (bridge present).
    pub networks: usize,
    /// Tap devices on their bridges.
    pub taps: usize,
    /// Networks with DHCP running.
    pub dhcp: usize,
    /// Namespaces serving metadata.
    pub metadata: usize,
    /// Routers in place.
    pub routers: usize,
    /// Ports reported plugged (`update_device_up`) and unplugged (`update_device_down`) by this pass.
    pub plugged: Vec<String>,
    pub unplugged: Vec<String>,
    /// Ports filtered by security groups.
    pub filtered: usize,
    /// Things removed: bridges, VXLAN devices, namespaces.
    pub removed: Vec<String>,
    /// Per-network failures (the pass goes on with the other networks).
    pub errors: Vec<String>,
}

pub struct Reconciler {
    config: AgentConfig,
    bus: Bus,
    nl: Netlink,
    metadata: Option<MetadataProxy>,
    firewall: Firewall,
}

impl Reconciler {
    pub async fn new(config: AgentConfig, bus: Bus) -> Result<Reconciler, Error> {
        let nl = Netlink::open(config.host_namespace.as_deref()).await?;
        std::fs::create_dir_all(config.state_dir.join("dhcp"))
            .map_err(|e| Error::io(format!("cannot create {}", config.state_dir.display()), e))?;
        let metadata = config.metadata.as_ref().map(MetadataProxy::new).transpose()?;
        let firewall = Firewall::new(config.nft.clone(), config.ip.clone(), config.host_namespace.clone(), config.resync_interval)
            .with_conntrack(config.conntrack.clone());
        Ok(Reconciler { config, bus, nl, metadata, firewall })
    }

    pub fn netlink(&self) -> &Netlink {
        &self.nl
    }

    /// The metadata proxy, when metadata is served.
    pub fn metadata(&self) -> Option<&MetadataProxy> {
        self.metadata.as_ref()
    }

    /// The names of the tap devices present (their appearance calls for a pass).
    pub async fn taps(&self) -> Result<BTreeSet<String>, Error> {
        Ok(self.nl.links().await?.into_iter().map(|l| l.name).filter(|n| n.starts_with("tap")).collect())
    }

    /// One pass towards `state`.
    pub async fn apply(&self, state: &HostState) -> Result<Outcome, Error> {
        let mut out = Outcome::default();
        let mut bridges = HashSet::new();
        let mut vxlans = HashSet::new();
        let mut vlans = HashSet::new();
        let mut dhcp_networks = HashSet::new();
        // security groups first: a port's filter is in force before its tap joins a bridge and before it is
        // reported up (as upstream's agent prepares a device's filter before plugging it); the nftables maps name
        // taps, so they may come later. Everything else's filters go.
        let firewall = if self.config.enable_security_group { state } else { &HostState::default() };
        match self.firewall.apply(firewall, &self.config.host).await {
            Ok(n) => out.filtered = n,
            Err(e) => out.errors.push(format!("security groups: {e}")),
        }
        for net in &state.networks {
            bridges.insert(bridge_name(&net.id));
            if let Some(vni) = vni(net) {
                vxlans.insert(vxlan_name(vni));
            }
            if let Some((iface, vid)) = self.vlan(net) {
                vlans.insert(vlan_name(iface, vid));
            }
            if self.config.enable_dhcp && !dhcp::dhcp_subnets(net).is_empty() {
                dhcp_networks.insert(net.id.clone());
            }
            match self.wire_network(net, &mut out).await {
                Ok(()) => out.networks += 1,
                Err(e) => out.errors.push(format!("network {}: {e}", net.id)),
            }
        }
        crate::router::sync(&self.config, &self.nl, state, self.metadata.as_ref(), &mut out).await;
        // DHCP of networks no longer served, and orphaned namespaces
        let prefix = self.config.dhcp_namespace("");
        if let Some(proxy) = &self.metadata {
            for ns in proxy.namespaces() {
                if ns.strip_prefix(&prefix).is_some_and(|id| !dhcp_networks.contains(id)) {
                    proxy.stop(&ns).await;
                }
            }
        }
        for ns in namespace::list(&prefix) {
            let id = &ns[prefix.len()..];
            if !dhcp_networks.contains(id) {
                match self.stop_dhcp(id).await {
                    Ok(()) => out.removed.push(ns.clone()),
                    Err(e) => out.errors.push(format!("DHCP of {id}: {e}")),
                }
            }
        }
        if let Ok(dir) = std::fs::read_dir(self.config.state_dir.join("dhcp")) {
            for e in dir.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                if !dhcp_networks.contains(&id) {
                    dhcp::stop(&DhcpFiles::new(&self.config.state_dir, &id)).await;
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        // bridges, VXLAN devices and VLAN sub-interfaces (of mapped interfaces) of networks gone
        let mapped: Vec<&str> = self.config.interface_mappings.iter().map(|(_, i)| i.as_str()).collect();
        for l in self.nl.links().await? {
            let of_mapped = |n: &str| {
                n.rsplit_once('.').and_then(|(_, v)| v.parse::<u16>().ok()).is_some_and(|vid| mapped.iter().any(|m| vlan_name(m, vid) == n))
            };
            let stale = (l.kind == "bridge" && l.name.starts_with("brq") && !bridges.contains(&l.name))
                || (l.kind == "vxlan" && l.name.starts_with("vxlan-") && !vxlans.contains(&l.name))
                || (l.kind == "vlan" && of_mapped(&l.name) && !vlans.contains(&l.name));
            if stale {
                self.nl.delete(l.index, &l.name).await?;
                out.removed.push(l.name);
            }
        }
        Ok(out)
    }

    async fn wire_network(&self, net: &NetworkState, out: &mut Outcome) -> Result<(), Error> {
        let bridge = self.nl.ensure_bridge(&bridge_name(&net.id), net.mtu).await?;
        match net.segment.network_type.as_str() {
            "vxlan" => self.wire_vxlan(net, &bridge).await?,
            "flat" => {
                let physnet = net.segment.physical_network.as_deref().unwrap_or_default();
                match self.config.interface_mappings.iter().find(|(p, _)| p == physnet) {
                    Some((_, iface)) => match self.nl.link(iface).await? {
                        Some(l) => self.nl.attach(&l, bridge.index).await?,
                        None => tracing::warn!(network = %net.id, %iface, "the mapped interface does not exist"),
                    },
                    None => tracing::debug!(network = %net.id, physnet, "no interface mapped: the bridge stays local"),
                }
            }
            "vlan" => match self.vlan(net) {
                Some((iface, vid)) => match self.nl.link(iface).await? {
                    Some(base) => {
                        let sub = self.nl.ensure_vlan(&vlan_name(iface, vid), &base, vid, net.mtu).await?;
                        if !base.up {
                            self.nl.set_up(base.index, iface).await?;
                        }
                        self.nl.attach(&sub, bridge.index).await?;
                    }
                    None => tracing::warn!(network = %net.id, %iface, "the mapped interface does not exist"),
                },
                None => tracing::debug!(network = %net.id, "no interface mapped or no VLAN id: the bridge stays local"),
            },
            other => tracing::debug!(network = %net.id, network_type = other, "segment type not wired on this host"),
        }
        for p in net.ports.iter().filter(|p| p.host == self.config.host && p.device_owner != DHCP_OWNER) {
            match self.nl.link(&tap_name(&p.id)).await? {
                Some(tap) => {
                    // the network's MTU before the bridge: a bridge takes its ports' smallest
                    if tap.mtu != Some(net.mtu) {
                        self.nl.set_mtu(tap.index, net.mtu, &tap.name).await?;
                    }
                    self.nl.attach(&tap, bridge.index).await?;
                    out.taps += 1;
                    if p.status != "ACTIVE" && p.admin_state_up && !p.device_owner.starts_with("network:") {
                        self.report_device(&p.id, true).await?;
                        out.plugged.push(p.id.clone());
                    }
                }
                // network-owned ports (routers) get their own devices in later steps: not judged by a tap
                None if p.status == "ACTIVE" && !p.device_owner.starts_with("network:") => {
                    self.report_device(&p.id, false).await?;
                    out.unplugged.push(p.id.clone());
                }
                None => {}
            }
        }
        if self.config.enable_dhcp && !dhcp::dhcp_subnets(net).is_empty() {
            self.ensure_dhcp(net, &bridge, out).await?;
            out.dhcp += 1;
        }
        Ok(())
    }

    /// Tells the network service that a bound port's device is on its bridge (`up`) or gone.
    async fn report_device(&self, port_id: &str, up: bool) -> Result<(), Error> {
        let (port_id, host) = (port_id.to_string(), self.config.host.clone());
        let target = Target::topic(PLUGIN_TOPIC);
        if up {
            self.bus.call(&target, &UpdateDeviceUp { port_id, host }, self.config.rpc_timeout).await?;
        } else {
            self.bus.call(&target, &UpdateDeviceDown { port_id, host }, self.config.rpc_timeout).await?;
        }
        Ok(())
    }

    async fn wire_vxlan(&self, net: &NetworkState, bridge: &Link) -> Result<(), Error> {
        let (Some(vni), Some(local)) = (vni(net), self.config.tunnel_ip) else {
            tracing::debug!(network = %net.id, "no VNI or no local tunnel address: the bridge stays local");
            return Ok(());
        };
        let vx = self.nl.ensure_vxlan(&vxlan_name(vni), vni, local, self.config.vxlan_port, net.mtu).await?;
        self.nl.attach(&vx, bridge.index).await?;
        let wanted: HashSet<Ipv4Addr> = net.peers.iter().filter_map(|p| p.tunnel_ip.parse().ok()).filter(|ip| *ip != local).collect();
        let have = self.nl.flood_entries(vx.index).await?;
        for ip in &wanted {
            if !have.contains(&IpAddr::V4(*ip)) {
                self.nl.add_flood_entry(vx.index, *ip).await?;
            }
        }
        for ip in have {
            if let IpAddr::V4(ip) = ip
                && !wanted.contains(&ip)
            {
                self.nl.remove_flood_entry(vx.index, ip).await?;
            }
        }
        Ok(())
    }

    async fn ensure_dhcp(&self, net: &NetworkState, bridge: &Link, out: &mut Outcome) -> Result<(), Error> {
        let port = self
            .bus
            .call(
                &Target::topic(PLUGIN_TOPIC),
                &GetDhcpPort { network_id: net.id.clone(), host: self.config.host.clone() },
                self.config.rpc_timeout,
            )
            .await?;
        let ns = self.config.dhcp_namespace(&net.id);
        let ip = &self.config.ip;
        namespace::ensure(ip, &ns).await?;
        namespace::set_sysctls(&ns, namespace::NO_DAD)?;
        let inner_nl = Netlink::open(Some(&ns)).await?;
        if let Some(lo) = inner_nl.link("lo").await?
            && !lo.up
        {
            inner_nl.set_up(lo.index, "lo").await?;
        }
        let (tap, inner) = (tap_name(&port.id), ns_device_name(&port.id));
        if inner_nl.link(&inner).await?.is_none() {
            // a half-made pair (a crash between creating and moving it) is made again
            if let Some(old) = self.nl.link(&tap).await? {
                self.nl.delete(old.index, &tap).await?;
            }
            self.nl.ensure_veth(&tap, &inner).await?;
            let peer = self.nl.link(&inner).await?.ok_or_else(|| Error::Netlink(format!("{inner} vanished")))?;
            self.nl.move_to(peer.index, &ns, &inner).await?;
        }
        let tap_link = self.nl.link(&tap).await?.ok_or_else(|| Error::Netlink(format!("{tap} vanished")))?;
        if tap_link.mtu != Some(net.mtu) {
            self.nl.set_mtu(tap_link.index, net.mtu, &tap).await?;
        }
        self.nl.attach(&tap_link, bridge.index).await?;
        let dev = inner_nl.link(&inner).await?.ok_or_else(|| Error::Netlink(format!("{inner} vanished")))?;
        let mac = parse_mac(&port.mac_address).ok_or_else(|| Error::Netlink(format!("bad MAC {}", port.mac_address)))?;
        if dev.mac != mac || dev.mtu != Some(net.mtu) {
            inner_nl.set_mac_mtu(dev.index, mac, net.mtu, &inner).await?;
        }
        let mut addrs = Vec::new();
        for f in &port.fixed_ips {
            let Some(s) = net.subnets.iter().find(|s| s.id == f.subnet_id) else { continue };
            match (f.ip_address.parse::<IpAddr>(), dhcp::parse_cidr4(&s.cidr), dhcp::parse_cidr6(&s.cidr)) {
                (Ok(a @ IpAddr::V4(_)), Some((_, prefix)), _) | (Ok(a @ IpAddr::V6(_)), _, Some((_, prefix))) => addrs.push((a, prefix)),
                _ => {}
            }
        }
        if self.metadata.is_some() {
            addrs.push((IpAddr::V4(METADATA_IP), 32));
        }
        inner_nl.sync_addresses(dev.index, &addrs, &inner).await?;
        if !dev.up {
            inner_nl.set_up(dev.index, &inner).await?;
        }
        // files, then the process
        let files = DhcpFiles::new(&self.config.state_dir, &net.id);
        std::fs::create_dir_all(&files.dir).map_err(|e| Error::io(format!("cannot create {}", files.dir.display()), e))?;
        let hosts_changed = dhcp::write_if_changed(&files.hosts(), &dhcp::hosts_file(net))?;
        let metadata_via = self.metadata.is_some().then_some(&port);
        let opts_changed = dhcp::write_if_changed(&files.opts(), &dhcp::opts_file(net, metadata_via))?;
        let args = dhcp::dnsmasq_args(net, &files, &inner, &self.config.dns_domain);
        let args_changed = dhcp::write_if_changed(&files.args(), &args.join("\n"))?;
        match dhcp::running_pid(&files) {
            // a changed command line, or a namespace made anew (the old dnsmasq serves a device no bridge has)
            Some(pid) if args_changed || !dhcp::runs_in(pid, &ns) => {
                dhcp::stop(&files).await;
                self.start_dnsmasq(&ns, &files, &args).await?;
            }
            Some(pid) if hosts_changed || opts_changed => dhcp::reload(pid),
            Some(_) => {}
            None => self.start_dnsmasq(&ns, &files, &args).await?,
        }
        if let Some(proxy) = &self.metadata {
            proxy.serve(&ns, metadata::instances(&net.ports)).await?;
            out.metadata += 1;
        }
        Ok(())
    }

    async fn start_dnsmasq(&self, ns: &str, files: &DhcpFiles, args: &[String]) -> Result<(), Error> {
        let _ = std::fs::remove_file(files.pid());
        namespace::exec(&self.config.ip, ns, &self.config.dnsmasq, args, &files.dir.join("start.log")).await?;
        tracing::info!(namespace = ns, "dnsmasq started");
        Ok(())
    }

    /// Stops DHCP for `network_id`: dnsmasq, the namespace (and the veth pair with it), the files and the port.
    async fn stop_dhcp(&self, network_id: &str) -> Result<(), Error> {
        let files = DhcpFiles::new(&self.config.state_dir, network_id);
        if let Some(proxy) = &self.metadata {
            proxy.stop(&self.config.dhcp_namespace(network_id)).await;
        }
        dhcp::stop(&files).await;
        namespace::delete(&self.config.ip, &self.config.dhcp_namespace(network_id)).await?;
        let _ = std::fs::remove_dir_all(&files.dir);
        self.bus
            .call(
                &Target::topic(PLUGIN_TOPIC),
                &ReleaseDhcpPort { network_id: network_id.into(), host: self.config.host.clone() },
                self.config.rpc_timeout,
            )
            .await?;
        tracing::info!(network_id, "DHCP stopped");
        Ok(())
    }

    /// Removes everything this agent made: DHCP and router namespaces with its prefix, its bridges and VXLAN
    /// devices, its nftables tables.
    pub async fn teardown(&self) -> Result<Outcome, Error> {
        self.apply(&HostState::default()).await
    }
}

impl Reconciler {
    /// The mapped interface and VLAN id of a `vlan` network, when this host maps its physical network.
    fn vlan<'a>(&'a self, net: &NetworkState) -> Option<(&'a str, u16)> {
        if net.segment.network_type != "vlan" {
            return None;
        }
        let vid = net.segment.segmentation_id.and_then(|v| u16::try_from(v).ok()).filter(|v| (1..4095).contains(v))?;
        let physnet = net.segment.physical_network.as_deref()?;
        let (_, iface) = self.config.interface_mappings.iter().find(|(p, _)| p == physnet)?;
        Some((iface.as_str(), vid))
    }
}

fn vni(net: &NetworkState) -> Option<u32> {
    if net.segment.network_type != "vxlan" {
        return None;
    }
    net.segment.segmentation_id.and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0 && *v < (1 << 24))
}
