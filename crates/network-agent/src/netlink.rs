//! Links, addresses, static routes and bridge forwarding entries over rtnetlink, in the agent's own network namespace or in a
//! named one (`/run/netns/<name>`): the socket is opened on a short-lived thread that entered the namespace, and a
//! netlink socket stays in the namespace it was created in.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::{
    Handle, LinkBridge, LinkUnspec, LinkVeth, LinkVlan, LinkVxlan, RouteMessageBuilder,
    packet_core::{NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST},
    packet_route::{
        AddressFamily, RouteNetlinkMessage,
        address::AddressAttribute,
        link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState},
        route::{RouteAddress, RouteAttribute, RouteHeader, RouteProtocol},
    },
};

use crate::Error;

/// Where named namespaces are mounted, as `ip netns` does.
pub const NETNS_DIR: &str = "/run/netns";

/// One link as the agent sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `bridge`, `vxlan`, `veth`, `tun`, … (empty for plain devices).
    pub kind: String,
    /// The bridge it is a port of.
    pub controller: Option<u32>,
    pub up: bool,
    pub mac: Vec<u8>,
    pub mtu: Option<u32>,
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

fn nl(what: impl std::fmt::Display, e: rtnetlink::Error) -> Error {
    Error::Netlink(format!("{what}: {e}"))
}

/// Whether a failed request failed because the object exists already.
pub fn is_exists(e: &rtnetlink::Error) -> bool {
    errno(e) == Some(libc_eexist())
}

const fn libc_eexist() -> i32 {
    17
}

fn link_of(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        kind: String::new(),
        controller: None,
        up: m.header.flags.contains(LinkFlags::Up),
        mac: vec![],
        mtu: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Controller(c) => l.controller = Some(*c),
            LinkAttribute::Address(a) => l.mac = a.clone(),
            LinkAttribute::Mtu(m) => l.mtu = Some(*m),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        l.kind = match k {
                            InfoKind::Bridge => "bridge".into(),
                            InfoKind::Vxlan => "vxlan".into(),
                            InfoKind::Veth => "veth".into(),
                            InfoKind::Tun => "tun".into(),
                            other => other.to_string(),
                        };
                    }
                }
            }
            _ => {}
        }
    }
    l
}

/// A MAC address `aa:bb:cc:dd:ee:ff` as bytes.
pub fn parse_mac(s: &str) -> Option<Vec<u8>> {
    let bytes: Vec<u8> = s.split(':').map(|b| u8::from_str_radix(b, 16)).collect::<Result<_, _>>().ok()?;
    (bytes.len() == 6).then_some(bytes)
}

/// Runs `f` on a short-lived thread that entered the named network namespace (`/run/netns/<name>`; the process's
/// own when `None`). Sockets `f` opens stay in that namespace after the thread ends.
pub fn in_namespace<T: Send>(namespace: Option<&str>, f: impl FnOnce() -> Result<T, Error> + Send) -> Result<T, Error> {
    let path = namespace.map(|n| format!("{NETNS_DIR}/{n}"));
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(path) = &path {
                let fd = std::fs::File::open(path).map_err(|e| Error::Netlink(format!("cannot open {path}: {e}")))?;
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&fd),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .map_err(|e| Error::Netlink(format!("cannot enter {path}: {e}")))?;
            }
            f()
        })
        .join()
        .map_err(|_| Error::Netlink("namespace thread panicked".into()))?
    })
}

/// A netlink connection in one namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// A connection in the process's own namespace, or in the named one (`/run/netns/<name>`).
    pub async fn open(namespace: Option<&str>) -> Result<Netlink, Error> {
        let runtime = tokio::runtime::Handle::current();
        let (conn, handle) = in_namespace(namespace, || {
            let _guard = runtime.enter();
            let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| Error::Netlink(format!("socket: {e}")))?;
            Ok((conn, handle))
        })?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    pub async fn links(&self) -> Result<Vec<Link>, Error> {
        let msgs: Vec<LinkMessage> = self.handle.link().get().execute().try_collect().await.map_err(|e| nl("list links", e))?;
        Ok(msgs.iter().map(link_of).collect())
    }

    pub async fn link(&self, name: &str) -> Result<Option<Link>, Error> {
        let mut s = self.handle.link().get().match_name(name.to_string()).execute();
        match s.try_next().await {
            Ok(m) => Ok(m.as_ref().map(link_of)),
            Err(e) if errno(&e) == Some(19) => Ok(None),
            Err(e) => Err(nl(format!("get link {name}"), e)),
        }
    }

    async fn add(&self, what: &str, msg: LinkMessage) -> Result<(), Error> {
        match self.handle.link().add(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_exists(&e) => Ok(()),
            Err(e) => Err(nl(format!("create {what}"), e)),
        }
    }

    /// Creates bridge `name` (no STP, forwarding at once) unless it exists, sets its MTU and brings it up.
    pub async fn ensure_bridge(&self, name: &str, mtu: u32) -> Result<Link, Error> {
        if self.link(name).await?.is_none() {
            self.add(name, LinkBridge::new(name).forward_delay(0).stp_state(rtnetlink::packet_route::link::BridgeStpState::Disabled).build())
                .await?;
        }
        let l = self.link(name).await?.ok_or_else(|| Error::Netlink(format!("bridge {name} vanished")))?;
        self.set(LinkUnspec::new_with_index(l.index).mtu(mtu).up().build(), name).await?;
        Ok(l)
    }

    /// Creates VXLAN device `name` with `vni` from `local` (UDP `port`, learning on) unless it exists.
    pub async fn ensure_vxlan(&self, name: &str, vni: u32, local: Ipv4Addr, port: u16, mtu: u32) -> Result<Link, Error> {
        if self.link(name).await?.is_none() {
            self.add(name, LinkVxlan::new(name, vni).local(local).port(port).learning(true).mtu(mtu).build()).await?;
        }
        self.link(name).await?.ok_or_else(|| Error::Netlink(format!("vxlan {name} vanished")))
    }

    /// Creates the 802.1Q sub-interface `name` of `base` for VLAN `vid` unless it exists. Kernels without 802.1Q
    /// refuse it.
    pub async fn ensure_vlan(&self, name: &str, base: &Link, vid: u16, mtu: u32) -> Result<Link, Error> {
        if self.link(name).await?.is_none() {
            self.add(name, LinkVlan::new(name, base.index, vid).mtu(mtu).build()).await?;
        }
        self.link(name).await?.ok_or_else(|| Error::Netlink(format!("vlan {name} vanished")))
    }

    /// Creates the veth pair `name`/`peer` unless `name` exists.
    pub async fn ensure_veth(&self, name: &str, peer: &str) -> Result<(), Error> {
        if self.link(name).await?.is_none() {
            self.add(name, LinkVeth::new(name, peer).build()).await?;
        }
        Ok(())
    }

    async fn set(&self, msg: LinkMessage, what: &str) -> Result<(), Error> {
        self.handle.link().set(msg).execute().await.map_err(|e| nl(format!("set {what}"), e))
    }

    /// Makes `link` a port of `bridge` and brings it up.
    pub async fn attach(&self, link: &Link, bridge: u32) -> Result<(), Error> {
        if link.controller != Some(bridge) {
            self.set(LinkUnspec::new_with_index(link.index).controller(bridge).build(), &link.name).await?;
        }
        if !link.up {
            self.set(LinkUnspec::new_with_index(link.index).up().build(), &link.name).await?;
        }
        Ok(())
    }

    pub async fn set_up(&self, index: u32, what: &str) -> Result<(), Error> {
        self.set(LinkUnspec::new_with_index(index).up().build(), what).await
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32, what: &str) -> Result<(), Error> {
        self.set(LinkUnspec::new_with_index(index).mtu(mtu).build(), what).await
    }

    pub async fn set_mac_mtu(&self, index: u32, mac: Vec<u8>, mtu: u32, what: &str) -> Result<(), Error> {
        self.set(LinkUnspec::new_with_index(index).address(mac).mtu(mtu).build(), what).await
    }

    /// Moves link `index` into the named namespace.
    pub async fn move_to(&self, index: u32, namespace: &str, what: &str) -> Result<(), Error> {
        let path = format!("{NETNS_DIR}/{namespace}");
        let fd = std::fs::File::open(&path).map_err(|e| Error::Netlink(format!("cannot open {path}: {e}")))?;
        self.set(LinkUnspec::new_with_index(index).setns_by_fd(std::os::fd::AsRawFd::as_raw_fd(&fd)).build(), what).await
    }

    pub async fn delete(&self, index: u32, what: &str) -> Result<(), Error> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(19) => Ok(()),
            Err(e) => Err(nl(format!("delete {what}"), e)),
        }
    }

    /// The addresses (with prefix lengths) of link `index`.
    pub async fn addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>, Error> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl("list addresses", e))?;
        let mut out = Vec::new();
        for m in msgs {
            for a in &m.attributes {
                if let AddressAttribute::Address(ip) = a {
                    out.push((*ip, m.header.prefix_len));
                }
            }
        }
        Ok(out)
    }

    /// Makes `wanted` the addresses of link `index` (link-local IPv6 addresses are left alone).
    pub async fn sync_addresses(&self, index: u32, wanted: &[(IpAddr, u8)], what: &str) -> Result<(), Error> {
        let have = self.addresses(index).await?;
        for w in wanted {
            if !have.contains(w) {
                match self.handle.address().add(index, w.0, w.1).execute().await {
                    Ok(()) => {}
                    Err(e) if is_exists(&e) => {}
                    Err(e) => return Err(nl(format!("add address {} to {what}", w.0), e)),
                }
            }
        }
        let msgs: Vec<_> =
            self.handle.address().get().set_link_index_filter(index).execute().try_collect().await.map_err(|e| nl("list addresses", e))?;
        for m in msgs {
            let stale = m.attributes.iter().any(|a| match a {
                AddressAttribute::Address(IpAddr::V4(ip)) => !wanted.contains(&(IpAddr::V4(*ip), m.header.prefix_len)),
                AddressAttribute::Address(IpAddr::V6(ip)) => {
                    (ip.segments()[0] & 0xffc0) != 0xfe80 && !wanted.contains(&(IpAddr::V6(*ip), m.header.prefix_len))
                }
                _ => false,
            });
            if stale {
                self.handle.address().del(m).execute().await.map_err(|e| nl(format!("remove an address of {what}"), e))?;
            }
        }
        Ok(())
    }

    /// The IPv4 routes of the main table with protocol `static` and a gateway: (destination, prefix length,
    /// gateway).
    pub async fn static_routes(&self) -> Result<Vec<(Ipv4Addr, u8, Ipv4Addr)>, Error> {
        let msgs: Vec<_> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl("list routes", e))?;
        let mut out = Vec::new();
        for m in msgs {
            if m.header.table != RouteHeader::RT_TABLE_MAIN || m.header.protocol != RouteProtocol::Static {
                continue;
            }
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut gw = None;
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(*g),
                    _ => {}
                }
            }
            if let Some(gw) = gw {
                out.push((dst, m.header.destination_prefix_length, gw));
            }
        }
        Ok(out)
    }

    /// Adds (or replaces) the `static` route to `dst/prefix` via `gateway` in the main table.
    pub async fn replace_route(&self, dst: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> Result<(), Error> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(dst, prefix).gateway(gateway).build();
        self.handle.route().add(msg).replace().execute().await.map_err(|e| nl(format!("add route {dst}/{prefix} via {gateway}"), e))
    }

    /// Removes the `static` route to `dst/prefix` via `gateway` (gone already is fine).
    pub async fn delete_route(&self, dst: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> Result<(), Error> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(dst, prefix).gateway(gateway).build();
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(3) => Ok(()),
            Err(e) => Err(nl(format!("remove route {dst}/{prefix} via {gateway}"), e)),
        }
    }

    /// The remote endpoints of the all-zero (flooding) forwarding entries of VXLAN device `index`.
    pub async fn flood_entries(&self, index: u32) -> Result<Vec<IpAddr>, Error> {
        let msgs: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl("list forwarding entries", e))?;
        let mut out = Vec::new();
        for m in msgs.iter().filter(|m| m.header.ifindex == index) {
            let zero = m.attributes.iter().any(|a| matches!(a, NeighbourAttribute::LinkLayerAddress(l) if l.iter().all(|b| *b == 0)));
            if !zero {
                continue;
            }
            for a in &m.attributes {
                if let NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) = a {
                    out.push(IpAddr::V4(*ip));
                }
            }
        }
        Ok(out)
    }

    fn flood_message(index: u32, dst: Ipv4Addr) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = index;
        m.header.state = NeighbourState::Permanent;
        m.header.flags = NeighbourFlags::Own;
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(vec![0; 6]));
        m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
        m
    }

    /// `bridge fdb append 00:00:00:00:00:00 dev <index> dst <dst>`: flood broadcast and unknown traffic to `dst`.
    pub async fn add_flood_entry(&self, index: u32, dst: Ipv4Addr) -> Result<(), Error> {
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(Self::flood_message(index, dst)));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
        let mut handle = self.handle.clone();
        let mut resp = handle.request(req).map_err(|e| nl("add forwarding entry", e))?;
        while let Some(msg) = futures::StreamExt::next(&mut resp).await {
            if let NetlinkPayload::Error(err) = msg.payload
                && err.raw_code() != -libc_eexist()
            {
                return Err(Error::Netlink(format!("add forwarding entry to {dst}: {}", err.to_io())));
            }
        }
        Ok(())
    }

    pub async fn remove_flood_entry(&self, index: u32, dst: Ipv4Addr) -> Result<(), Error> {
        match self.handle.neighbours().del(Self::flood_message(index, dst)).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(2) => Ok(()),
            Err(e) => Err(nl(format!("remove forwarding entry to {dst}"), e)),
        }
    }
}
