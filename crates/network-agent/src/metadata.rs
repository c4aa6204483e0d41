//! The metadata proxy: `http://169.254.169.254/` for instances, served from inside a namespace on the instances'
//! network and forwarded to the compute service's metadata API, as upstream's namespace metadata proxy and
//! metadata agent do together.
//!
//! A listener on `169.254.169.254:80` is bound by a thread that entered the namespace (the socket stays there), and
//! served by the agent's own runtime. Each listener answers for a set of [`Instances`] — the addresses of the ports
//! reachable from that namespace, each naming its instance (the port's `device_id`) and project — which the caller
//! replaces on every pass. A request from a known address is forwarded (path and query as given) to
//! the metadata API with `X-Instance-ID`, `X-Tenant-ID`, `X-Instance-ID-Signature` (the hex HMAC-SHA256 of the
//! instance id under the shared secret) and `X-Forwarded-For`; its answer goes back as it came. `POST` is forwarded
//! too, with its body (at most [`MAX_BODY`]): guests leave their encrypted password that way. Other methods get a
//! 405, and any other source address a 404.
//!
//! The DHCP step serves the `qdhcp-` namespaces with one network's ports; a router step can serve a `qrouter-`
//! namespace with the ports of the router's networks through the same [`MetadataProxy::serve`].

use std::{
    collections::HashMap,
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::fs::MetadataExt,
    pin::Pin,
    sync::{Arc, Mutex, RwLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use hmac::{KeyInit, Mac};
use network_rpc::PortState;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
};

use crate::{
    Error,
    netlink::{NETNS_DIR, in_namespace},
};

/// The metadata address instances ask.
pub const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The port the proxy listens on.
pub const METADATA_PORT: u16 = 80;
/// Connections one listener holds at once (guests are not trusted: the agent's descriptors are bounded); more wait
/// in the listen backlog.
pub const MAX_CONNECTIONS: usize = 128;
/// The largest request body forwarded (a guest's `POST` of its encrypted password is a few hundred bytes).
pub const MAX_BODY: usize = 64 * 1024;
/// How long a connection may stay open, idle or not (a metadata request takes milliseconds).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Where the proxy forwards to (upstream's `nova_metadata_host`/`port`/`protocol` as one URL) and how it signs.
#[derive(Clone)]
pub struct MetadataConfig {
    /// The compute metadata API, e.g. `http://192.0.2.10:8775`.
    pub url: String,
    /// `metadata_proxy_shared_secret`, as the compute service has it.
    pub shared_secret: String,
    /// How long a forwarded request may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for MetadataConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataConfig").field("url", &self.url).field("shared_secret", &"***").finish_non_exhaustive()
    }
}

impl MetadataConfig {
    pub fn new(url: impl Into<String>, shared_secret: impl Into<String>) -> MetadataConfig {
        MetadataConfig { url: url.into(), shared_secret: shared_secret.into(), timeout: Duration::from_secs(30) }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let rest = self.url.strip_prefix("http://").unwrap_or_default();
        if rest.is_empty() || rest.contains(char::is_whitespace) {
            return Err(Error::Config(format!("metadata URL '{}' is not http://host[:port][/path]", self.url)));
        }
        if self.shared_secret.is_empty() {
            return Err(Error::Config("the metadata proxy needs metadata_proxy_shared_secret".into()));
        }
        Ok(())
    }
}

/// The instance a source address belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub instance_id: String,
    pub project_id: String,
}

/// Source address → instance, for one listener.
pub type Instances = HashMap<IpAddr, Instance>;

/// The instances behind `ports`: every fixed address of a port with a device (not a network's own port: DHCP,
/// router interfaces and gateways, floating IPs).
pub fn instances<'a>(ports: impl IntoIterator<Item = &'a PortState>) -> Instances {
    let mut out = Instances::new();
    for p in ports {
        if p.device_id.is_empty() || p.device_owner.starts_with("network:") {
            continue;
        }
        for f in &p.fixed_ips {
            if let Ok(ip) = f.ip_address.parse::<IpAddr>() {
                out.insert(ip, Instance { instance_id: p.device_id.clone(), project_id: p.project_id.clone() });
            }
        }
    }
    out
}

/// The hex HMAC-SHA256 of `instance_id` under `secret`: `X-Instance-ID-Signature`.
pub fn sign(secret: &str, instance_id: &str) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(instance_id.as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// What every listener shares: where to forward and the client that does it.
struct Upstream {
    base: String,
    secret: String,
    client: reqwest::Client,
}

/// One listener's view: its namespace and who it answers.
struct Scope {
    namespace: String,
    instances: RwLock<Arc<Instances>>,
}

struct Listener {
    scope: Arc<Scope>,
    /// The namespace's identity (device, inode) when bound: a namespace deleted and made again is a new one.
    netns: (u64, u64),
    addr: SocketAddr,
    task: JoinHandle<()>,
}

/// The metadata listeners of this agent, by namespace.
pub struct MetadataProxy {
    upstream: Arc<Upstream>,
    listeners: Mutex<HashMap<String, Listener>>,
}

fn netns_id(namespace: &str) -> Option<(u64, u64)> {
    let m = std::fs::metadata(format!("{NETNS_DIR}/{namespace}")).ok()?;
    Some((m.dev(), m.ino()))
}

impl MetadataProxy {
    pub fn new(config: &MetadataConfig) -> Result<MetadataProxy, Error> {
        config.validate()?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(config.timeout)
            .build()
            .map_err(|e| Error::Config(format!("metadata client: {e}")))?;
        let upstream = Upstream { base: config.url.trim_end_matches('/').to_string(), secret: config.shared_secret.clone(), client };
        Ok(MetadataProxy { upstream: Arc::new(upstream), listeners: Mutex::new(HashMap::new()) })
    }

    /// Serves metadata on `169.254.169.254:80` in `namespace` (which must have that address on a device) for
    /// `instances`: binds a listener there unless one serves that very namespace, else only replaces whom it
    /// answers.
    pub async fn serve(&self, namespace: &str, instances: Instances) -> Result<(), Error> {
        self.serve_on(namespace, SocketAddr::from((METADATA_IP, METADATA_PORT)), instances).await
    }

    /// As [`MetadataProxy::serve`], on `addr` (a router namespace may listen elsewhere and redirect port 80 to
    /// it). A namespace has one listener: a different address replaces it.
    pub async fn serve_on(&self, namespace: &str, addr: SocketAddr, instances: Instances) -> Result<(), Error> {
        let id = netns_id(namespace).ok_or_else(|| Error::Config(format!("no namespace {namespace}")))?;
        {
            let mut listeners = self.listeners.lock().expect("metadata listeners");
            if let Some(l) = listeners.get(namespace) {
                if l.netns == id && l.addr == addr && !l.task.is_finished() {
                    *l.scope.instances.write().expect("metadata instances") = Arc::new(instances);
                    return Ok(());
                }
                // the namespace was made again, or the listener died: bind anew
                if let Some(old) = listeners.remove(namespace) {
                    old.task.abort();
                }
            }
        }
        let std_listener = in_namespace(Some(namespace), || {
            let l = std::net::TcpListener::bind(addr).map_err(|e| Error::io(format!("cannot listen on {addr} in {namespace}"), e))?;
            l.set_nonblocking(true).map_err(|e| Error::io("metadata listener", e))?;
            Ok(l)
        })?;
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(|e| Error::io("metadata listener", e))?;
        let listener = Limited::new(listener, MAX_CONNECTIONS, CONNECTION_LIFETIME);
        let scope = Arc::new(Scope { namespace: namespace.to_string(), instances: RwLock::new(Arc::new(instances)) });
        let app = Router::new()
            .fallback(handle)
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
            .with_state((self.upstream.clone(), scope.clone()));
        let ns = namespace.to_string();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>()).await {
                tracing::warn!(namespace = %ns, error = %e, "metadata proxy stopped");
            }
        });
        tracing::info!(namespace, "metadata proxy listening on {addr}");
        let old =
            self.listeners.lock().expect("metadata listeners").insert(namespace.to_string(), Listener { scope, netns: id, addr, task });
        if let Some(old) = old {
            old.task.abort();
        }
        Ok(())
    }

    /// The namespaces served.
    pub fn namespaces(&self) -> Vec<String> {
        let mut out: Vec<String> = self.listeners.lock().expect("metadata listeners").keys().cloned().collect();
        out.sort();
        out
    }

    /// Stops serving in `namespace`; returns once its listening socket is closed.
    pub async fn stop(&self, namespace: &str) {
        let l = self.listeners.lock().expect("metadata listeners").remove(namespace);
        if let Some(l) = l {
            l.task.abort();
            let _ = l.task.await;
            tracing::info!(namespace, "metadata proxy stopped");
        }
    }

    /// Stops every listener (the agent stops; the next one binds again).
    pub async fn stop_all(&self) {
        for ns in self.namespaces() {
            self.stop(&ns).await;
        }
    }
}

impl Drop for MetadataProxy {
    fn drop(&mut self) {
        if let Ok(listeners) = self.listeners.get_mut() {
            for l in listeners.values() {
                l.task.abort();
            }
        }
    }
}

/// A listener that holds at most a number of connections at once, each for a bounded time.
pub struct Limited {
    inner: tokio::net::TcpListener,
    permits: Arc<Semaphore>,
    lifetime: Duration,
}

impl Limited {
    pub fn new(inner: tokio::net::TcpListener, connections: usize, lifetime: Duration) -> Limited {
        Limited { inner, permits: Arc::new(Semaphore::new(connections.max(1))), lifetime }
    }
}

impl axum::serve::Listener for Limited {
    type Io = Bounded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Bounded, SocketAddr) {
        let permit = self.permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let deadline = Box::pin(tokio::time::sleep(self.lifetime));
                    return (Bounded { stream, deadline, _permit: permit }, addr);
                }
                Err(e) => {
                    // out of descriptors, a connection reset before it was accepted: wait, then go on
                    tracing::debug!(error = %e, "metadata proxy accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection of a [`Limited`] listener: it fails once its time is up, and gives its place back when dropped.
pub struct Bounded {
    stream: tokio::net::TcpStream,
    deadline: Pin<Box<tokio::time::Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl Bounded {
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn time_is_up<T>() -> Poll<std::io::Result<T>> {
    Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the connection's time is up")))
}

impl AsyncRead for Bounded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.expired(cx) {
            return time_is_up();
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.expired(cx) {
            return time_is_up();
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The client's address, as the handler gets it.
#[derive(Clone, Copy, Debug)]
struct Peer(SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Limited>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Limited>) -> Self {
        Peer(*stream.remote_addr())
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")], body).into_response()
}

async fn handle(
    State((upstream, scope)): State<(Arc<Upstream>, Arc<Scope>)>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    method: Method,
    uri: Uri,
    body: axum::body::Bytes,
) -> Response {
    if method != Method::GET && method != Method::POST {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "The method is not allowed for this resource.\n");
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
        return r;
    }
    // an IPv4 client of a dual-stack socket shows as ::ffff:a.b.c.d
    let ip = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    let instance = scope.instances.read().expect("metadata instances").get(&ip).cloned();
    let Some(instance) = instance else {
        tracing::debug!(namespace = %scope.namespace, %ip, "metadata request from an address that is no instance's");
        return plain(StatusCode::NOT_FOUND, "The resource could not be found.\n");
    };
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let started = Instant::now();
    let request = if method == Method::POST {
        upstream.client.post(format!("{}{path}", upstream.base)).body(body)
    } else {
        upstream.client.get(format!("{}{path}", upstream.base))
    };
    let sent = request
        .header("X-Forwarded-For", ip.to_string())
        .header("X-Instance-ID", &instance.instance_id)
        .header("X-Tenant-ID", &instance.project_id)
        .header("X-Instance-ID-Signature", sign(&upstream.secret, &instance.instance_id))
        .send()
        .await;
    let answer = match sent {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut headers = HeaderMap::new();
            if let Some(ct) = r.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()) {
                headers.insert(header::CONTENT_TYPE, ct);
            }
            match r.bytes().await {
                Ok(body) => (status, headers, Body::from(body)).into_response(),
                Err(e) => {
                    tracing::warn!(namespace = %scope.namespace, error = %e, "metadata answer cut short");
                    plain(StatusCode::INTERNAL_SERVER_ERROR, "An unknown error has occurred.\n")
                }
            }
        }
        Err(e) => {
            tracing::warn!(namespace = %scope.namespace, error = %e, "the metadata API did not answer");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "An unknown error has occurred.\n")
        }
    };
    tracing::debug!(
        namespace = %scope.namespace,
        instance = %instance.instance_id,
        path,
        status = answer.status().as_u16(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "metadata request"
    );
    answer
}

#[cfg(test)]
mod tests {
    use network_rpc::FixedIp;

    use super::*;

    fn port(id: &str, owner: &str, device: &str, ips: &[&str]) -> PortState {
        PortState {
            id: id.into(),
            network_id: "n1".into(),
            mac_address: "fa:16:3e:00:00:01".into(),
            fixed_ips: ips.iter().map(|ip| FixedIp { subnet_id: "s1".into(), ip_address: (*ip).into() }).collect(),
            device_owner: owner.into(),
            device_id: device.into(),
            project_id: "p1".into(),
            host: "cn1".into(),
            admin_state_up: true,
            dns_name: String::new(),
            extra_dhcp_opts: vec![],
            status: "ACTIVE".into(),
            port_security_enabled: true,
            security_groups: vec![],
            allowed_address_pairs: vec![],
        }
    }

    #[test]
    fn instances_are_the_devices_ports_by_address() {
        let ports = [
            port("a", "compute:nova", "vm-1", &["10.0.0.5", "fd00::5"]),
            port("b", "network:dhcp", "dhcp-cn1-n1", &["10.0.0.2"]),
            port("c", "network:router_interface", "r1", &["10.0.0.1"]),
            port("d", "", "", &["10.0.0.9"]),
            port("e", "compute:az1", "vm-2", &["10.0.0.6", "not-an-ip"]),
        ];
        let got = instances(&ports);
        let vm1 = Instance { instance_id: "vm-1".into(), project_id: "p1".into() };
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[&"10.0.0.5".parse::<IpAddr>().unwrap()], vm1);
        assert_eq!(got[&"fd00::5".parse::<IpAddr>().unwrap()], vm1);
        assert_eq!(got[&"10.0.0.6".parse::<IpAddr>().unwrap()].instance_id, "vm-2");
    }

    #[test]
    fn signatures_are_hex_hmac_sha256() {
        // RFC 4231, test case 2
        assert_eq!(sign("Jefe", "what do ya want for nothing?"), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[tokio::test]
    async fn a_listener_holds_a_bounded_number_of_connections_for_a_bounded_time() {
        use axum::serve::Listener;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut l = Limited::new(tcp, 1, Duration::from_millis(300));
        let _c1 = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut first, _) = l.accept().await;
        let _c2 = tokio::net::TcpStream::connect(addr).await.unwrap();
        // the second waits while the first is held
        assert!(tokio::time::timeout(Duration::from_millis(100), l.accept()).await.is_err());
        // the first's time runs out: reads and writes fail
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let err = first.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(150), "{:?}", started.elapsed());
        assert!(first.write_all(b"x").await.is_err());
        // once it is gone, the second is accepted
        drop(first);
        let (second, peer) = tokio::time::timeout(Duration::from_secs(5), l.accept()).await.expect("the second connection");
        assert_eq!(peer.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        drop(second);
    }

    #[test]
    fn the_upstream_is_checked() {
        assert!(MetadataConfig::new("http://127.0.0.1:8775", "s").validate().is_ok());
        assert!(MetadataConfig::new("http://meta.example/nova/", "s").validate().is_ok());
        assert!(MetadataConfig::new("https://127.0.0.1:8775", "s").validate().is_err());
        assert!(MetadataConfig::new("http://", "s").validate().is_err());
        assert!(MetadataConfig::new("http://127.0.0.1:8775", "").validate().is_err());
        assert!(!format!("{:?}", MetadataConfig::new("http://x", "hush")).contains("hush"));
    }
}
