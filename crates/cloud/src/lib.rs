//! The assembly of a Stratus cloud: configuration, the services a process runs, their routes under one listener,
//! bootstrap, and the generated client configuration.
//!
//! `stratus up`, `stratus serve` and the test harness (`test-utils`) all go through [`start`]: one code path for a
//! laptop, a split deployment and the tests.

pub mod agent;
pub mod clients;
pub mod config;

use std::{net::SocketAddr, path::PathBuf, str::FromStr, sync::Arc};

use api_common::{ErrorStyle, WireConfig};
use auth::TokenValidator;
use axum::{Router, routing::get};
use bus::Bus;
use db::Database;
use identity::{BootstrapSpec, Identity, IdentityConfig};
use serde_json::json;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("database: {0}")]
    Db(#[from] db::Error),
    #[error("bus: {0}")]
    Bus(#[from] bus::Error),
    #[error("identity: {0}")]
    Identity(#[from] identity::Error),
    #[error("image: {0}")]
    Image(#[from] image::Error),
    #[error("object: {0}")]
    Object(#[from] object::Error),
    #[error("compute: {0}")]
    Compute(#[from] compute::Error),
    #[error("compute agent: {0}")]
    ComputeAgent(#[from] compute_agent::Error),
    #[error("network: {0}")]
    Network(#[from] network::Error),
    #[error("volume: {0}")]
    Volume(#[from] volume::Error),
    #[error("volume agent: {0}")]
    VolumeAgent(#[from] volume_agent::Error),
    #[error("network agent: {0}")]
    NetworkAgent(#[from] network_agent::Error),
    #[error("placement: {0}")]
    Placement(#[from] placement::Error),
    #[error("auth: {0}")]
    Auth(#[from] auth::AuthError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

/// The services Stratus can run. A process runs any subset (`stratus serve --services …`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    Identity,
    Image,
    Object,
    Placement,
    Compute,
    Network,
    Volume,
}

impl Service {
    /// Every implemented service, in start order.
    pub const ALL: &'static [Service] = &[Service::Identity, Service::Image, Service::Placement, Service::Compute, Service::Network, Service::Volume, Service::Object];

    pub fn name(self) -> &'static str {
        match self {
            Service::Identity => "identity",
            Service::Image => "image",
            Service::Object => "object",
            Service::Placement => "placement",
            Service::Compute => "compute",
            Service::Network => "network",
            Service::Volume => "volume",
        }
    }
    /// The catalog's service type.
    pub fn service_type(self) -> &'static str {
        match self {
            Service::Identity => "identity",
            Service::Image => "image",
            Service::Object => "object-store",
            Service::Placement => "placement",
            Service::Compute => "compute",
            Service::Network => "network",
            Service::Volume => "block-storage",
        }
    }
    /// The path prefix under the shared listener, as DevStack lays them out.
    pub fn prefix(self) -> &'static str {
        match self {
            Service::Identity => "/identity",
            Service::Image => "/image",
            Service::Object => "/object-store",
            Service::Placement => "/placement",
            Service::Compute => "/compute",
            Service::Network => "/networking",
            Service::Volume => "/volume",
        }
    }
    /// The catalog's service name (upstream's project names).
    pub fn catalog_name(self) -> &'static str {
        match self {
            Service::Identity => "keystone",
            Service::Image => "glance",
            Service::Object => "swift",
            Service::Placement => "placement",
            Service::Compute => "nova",
            Service::Network => "neutron",
            Service::Volume => "cinder",
        }
    }
    /// The path under the service's prefix that the catalog lists, as clients expect it (Nova's `/v2.1`, Swift's
    /// per-account `/v1/AUTH_%(project_id)s`, which identity renders for each token's project).
    pub fn catalog_path(self) -> &'static str {
        match self {
            Service::Object => "/v1/AUTH_%(project_id)s",
            Service::Compute => "/v2.1",
            Service::Volume => "/v3/%(project_id)s",
            _ => "",
        }
    }
}

/// Services that exist upstream and are planned here; asking for one is a clear error, not a silent no-op.
const PLANNED: &[&str] = &["orchestration"];

impl FromStr for Service {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim() {
            "identity" | "keystone" => Ok(Service::Identity),
            "image" | "glance" => Ok(Service::Image),
            "object" | "object-store" | "swift" => Ok(Service::Object),
            "placement" => Ok(Service::Placement),
            "compute" | "nova" => Ok(Service::Compute),
            "network" | "neutron" | "networking" => Ok(Service::Network),
            "volume" | "cinder" | "block-storage" | "volumev3" => Ok(Service::Volume),
            other if PLANNED.contains(&other) => {
                Err(Error::Config(format!("service '{other}' is not implemented yet in this release")))
            }
            other => Err(Error::Config(format!("unknown service '{other}'"))),
        }
    }
}

/// Parses `identity,compute,…`.
pub fn parse_services(list: &str) -> Result<Vec<Service>, Error> {
    let mut out = Vec::new();
    for item in list.split(',').filter(|s| !s.trim().is_empty()) {
        let s: Service = item.parse()?;
        if !out.contains(&s) {
            out.push(s);
        }
    }
    if out.is_empty() {
        return Err(Error::Config("no services selected".into()));
    }
    Ok(out)
}

/// The services of one process, connected to their database and bus.
pub struct Cloud {
    pub config: Config,
    pub services: Vec<Service>,
    pub db: Database,
    pub bus: Bus,
    pub identity: Option<Identity>,
    pub image: Option<image::Image>,
    pub object: Option<object::ObjectStore>,
    pub placement: Option<placement::Placement>,
    pub compute: Option<compute::Compute>,
    pub network: Option<network::Network>,
    pub volume: Option<volume::Volume>,
    pub validator: Arc<dyn TokenValidator>,
    pub public_url: String,
}

impl Cloud {
    /// Connects to the database and bus and constructs the selected services (no schema changes).
    pub async fn build(config: Config, services: Vec<Service>, public_url: String) -> Result<Cloud, Error> {
        if config.database.url.is_none() || config.key_repository().starts_with(&config.data_dir) {
            std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::Io {
                context: format!("cannot create data dir {}", config.data_dir.display()),
                source,
            })?;
        }
        let db = Database::connect(&config.database_url()).await?;
        let bus = Bus::connect(&config.bus.url).await?;
        let identity = if services.contains(&Service::Identity) {
            let mut ic = IdentityConfig::new(config.key_repository());
            ic.token_expiration = config.identity.token_expiration;
            ic.max_active_keys = config.identity.max_active_keys;
            ic.password_hash_rounds = config.identity.password_hash_rounds;
            ic.security = config.identity.security();
            Some(Identity::new(db.clone(), ic).await?)
        } else {
            None
        };
        let validator: Arc<dyn TokenValidator> = match (&identity, &config.auth) {
            (Some(identity), _) => Arc::new(identity.clone()),
            (None, Some(_)) => Arc::new(auth::CachingValidator::new(service_session(&config, &public_url, false)?)),
            (None, None) => {
                return Err(Error::Config(
                    "identity does not run in this process: the [auth] section must say how to reach it".into(),
                ));
            }
        };
        for method in &config.image.enabled_import_methods {
            if !["glance-direct", "web-download", "copy-image"].contains(&method.as_str()) {
                return Err(Error::Config(format!("[image] enabled_import_methods: unknown method '{method}'")));
            }
        }
        let image = if services.contains(&Service::Image) {
            let mut stores: Vec<Arc<dyn image::adapter::StoreAdapter>> = Vec::new();
            if config.image.enabled_backends.iter().any(|b| b == "object") {
                let session = Arc::new(service_session(&config, &public_url, identity.is_some())?);
                let adapter = image::adapter::ObjectAdapter::new("object", config.image_object_store_config(&public_url), session)
                    .map_err(|e| Error::Config(format!("[image] object store: {e}")))?;
                stores.push(Arc::new(adapter));
            }
            Some(image::Image::with_stores(db.clone(), config.image_config(), stores)?)
        } else {
            None
        };
        let object = if services.contains(&Service::Object) {
            Some(object::ObjectStore::new(db.clone(), &config.object_config())?)
        } else {
            None
        };
        let placement =
            if services.contains(&Service::Placement) { Some(placement::Placement::new(db.clone())) } else { None };
        let compute = if services.contains(&Service::Compute) {
            let session = Arc::new(service_session(&config, &public_url, identity.is_some())?);
            let placement_url =
                config.compute.placement_url.clone().unwrap_or_else(|| format!("{public_url}{}", Service::Placement.prefix()));
            let placement = compute::PlacementClient::new(&placement_url, session.clone())?;
            let c = &config.compute;
            scheduler::Scheduler::from_config(&c.scheduler()).map_err(|e| Error::Config(format!("[compute] {e}")))?;
            let settings = compute::ConductorSettings {
                service_down_time: std::time::Duration::from_secs(c.service_down_time.max(1)),
                max_attempts: c.max_attempts.max(1),
                max_placement_results: c.max_placement_results.max(1),
                host_subset_size: c.host_subset_size.max(1),
                scheduler: c.scheduler(),
                default_availability_zone: c.default_availability_zone.clone(),
                shelved_offload_time: c.shelved_offload_time.max(-1),
                ..Default::default()
            };
            let network_url = c.network_url.clone().or_else(|| {
                services.contains(&Service::Network).then(|| format!("{public_url}{}", Service::Network.prefix()))
            });
            let network = match network_url {
                Some(url) => Some(compute::network::NetworkClient::new(&url, Some(session.clone()))?),
                None => None,
            };
            let volume_url = c.volume_url.clone().or_else(|| {
                services.contains(&Service::Volume).then(|| format!("{public_url}{}", Service::Volume.prefix()))
            });
            let volume = match volume_url {
                Some(url) => Some(compute::volume::VolumeClient::new(&url, Some(session.clone()))?),
                None => None,
            };
            let compute = compute::Compute::with_conductor(db.clone(), bus.clone(), placement, network, volume, settings);
            let image_url = c.image_url.clone().unwrap_or_else(|| format!("{public_url}{}", Service::Image.prefix()));
            if let Ok(conductor) = compute.conductor() {
                let client = compute::images::ImageClient::new(&image_url)?;
                conductor.set_images(compute::conductor::ServiceImages { client, session: session.clone() });
            }
            Some(compute)
        } else {
            None
        };
        let network = if services.contains(&Service::Network) {
            let mut network = network::Network::new(db.clone(), config.network.clone()).with_bus(bus.clone());
            // Compute hears of ports of instances going up and down (network-vif-plugged), as upstream's notifier.
            let nova_url = config.network.nova_url.clone().or_else(|| {
                services.contains(&Service::Compute).then(|| format!("{public_url}{}", Service::Compute.prefix()))
            });
            if let (true, Some(url)) = (config.network.notify_nova_on_port_status_changes, nova_url)
                && let Some(credentials) = service_credentials(&config, &public_url, identity.is_some())?
            {
                let session = Arc::new(auth::HttpValidator::new(credentials)?);
                network = network.with_nova(network::nova::NovaNotifier::new(&url, session)?);
            }
            Some(network)
        } else {
            None
        };
        let volume = if services.contains(&Service::Volume) {
            Some(volume::Volume::new(db.clone(), bus.clone(), config.volume_config(&public_url))?)
        } else {
            None
        };
        Ok(Cloud { config, services, db, bus, identity, image, object, placement, compute, network, volume, validator, public_url })
    }

    /// Creates or upgrades every selected service's schema.
    pub async fn migrate(&self) -> Result<(), Error> {
        if let Some(identity) = &self.identity {
            identity.migrate().await?;
        }
        if let Some(image) = &self.image {
            image.migrate().await?;
        }
        if let Some(object) = &self.object {
            object.migrate().await?;
        }
        if let Some(placement) = &self.placement {
            placement.migrate().await?;
        }
        if let Some(compute) = &self.compute {
            compute.migrate().await?;
        }
        if let Some(network) = &self.network {
            network.migrate().await?;
        }
        if let Some(volume) = &self.volume {
            volume.migrate().await?;
        }
        Ok(())
    }

    /// The public URL of a service under this listener.
    pub fn service_url(&self, service: Service) -> String {
        format!("{}{}", self.public_url, service.prefix())
    }

    /// The URL the catalog lists for a service: its public URL and [`Service::catalog_path`].
    pub fn catalog_url(&self, service: Service) -> String {
        format!("{}{}", self.service_url(service), service.catalog_path())
    }

    /// Where clients authenticate: this process's identity service, or the one `[auth]` names.
    pub fn identity_url(&self) -> String {
        match (&self.identity, &self.config.auth) {
            (None, Some(a)) => a.url.clone(),
            _ => self.service_url(Service::Identity),
        }
    }

    /// One HTTP router for every service of this process, each under its prefix.
    pub fn router(&self) -> Result<Router, Error> {
        let mut router = Router::new();
        if let Some(identity) = &self.identity {
            let policy = identity::api::load_policy(self.config.identity.policy_file.as_deref())?;
            let api = identity::api::router_with_policy(identity.clone(), &self.service_url(Service::Identity), policy)?;
            router = nest_with_root(router, Service::Identity.prefix(), api);
        }
        if let Some(image) = &self.image {
            let policy = image::api::load_policy(self.config.image.policy_file.as_deref())?;
            let api = image::api::router(
                image.clone(),
                &self.service_url(Service::Image),
                policy,
                self.validator.clone(),
                &self.identity_url(),
            );
            router = nest_with_root(router, Service::Image.prefix(), api);
        }
        if let Some(object) = &self.object {
            let api = object::api::router(object.clone(), self.validator.clone(), &self.identity_url());
            router = nest_with_root(router, Service::Object.prefix(), api);
        }
        if let Some(placement) = &self.placement {
            let policy = placement::api::load_policy(self.config.placement.policy_file.as_deref())?;
            let api = placement::api::router(
                placement.clone(),
                &self.service_url(Service::Placement),
                policy,
                self.validator.clone(),
                &self.identity_url(),
            );
            router = nest_with_root(router, Service::Placement.prefix(), api);
        }
        if let Some(compute) = &self.compute {
            let policy = compute::api::load_policy(self.config.compute.policy_file.as_deref())?;
            let image_url = self.config.compute.image_url.clone().unwrap_or_else(|| self.service_url(Service::Image));
            let api = compute::api::router(
                compute.clone(),
                &self.service_url(Service::Compute),
                policy,
                self.validator.clone(),
                &self.identity_url(),
                Some(compute::images::ImageClient::new(&image_url)?),
            );
            router = nest_with_root(router, Service::Compute.prefix(), api);
        }
        if let Some(network) = &self.network {
            let policy = network::api::load_policy(self.config.network.policy_file.as_deref())?;
            let api = network::api::router(
                network.clone(),
                &self.service_url(Service::Network),
                policy,
                self.validator.clone(),
                &self.identity_url(),
            );
            router = nest_with_root(router, Service::Network.prefix(), api);
        }
        if let Some(volume) = &self.volume {
            let policy = volume::api::load_policy(self.config.volume.policy_file.as_deref())?;
            let api = volume::api::router(
                volume.clone(),
                &self.service_url(Service::Volume),
                policy,
                self.validator.clone(),
                &self.identity_url(),
            );
            router = nest_with_root(router, Service::Volume.prefix(), api);
        }
        let services: Vec<_> = self
            .services
            .iter()
            .map(|s| json!({"name": s.name(), "type": s.service_type(), "url": self.service_url(*s)}))
            .collect();
        let root = Router::new().route(
            "/",
            get(move || {
                let services = services.clone();
                async move { axum::Json(json!({"stratus": {"version": env!("CARGO_PKG_VERSION"), "services": services}})) }
            }),
        );
        // The root router's wire layer also renders the 404 of any path no service claims.
        Ok(router.merge(api_common::wire::apply(root, WireConfig::new(ErrorStyle::Keystone))))
    }

    /// Bootstraps the cloud as `keystone-manage bootstrap` does, registering this process's services.
    pub async fn bootstrap(&self, spec: BootstrapSpec) -> Result<(), Error> {
        let identity = self
            .identity
            .as_ref()
            .ok_or_else(|| Error::Config("bootstrap needs the identity service in this process".into()))?;
        identity.bootstrap(&spec).await?;
        // The external network floating IPs and router gateways come from, as DevStack creates it.
        if let Some(network) = &self.network
            && let Some(project) = identity.store().project_get_by_name("default", &spec.admin_project).await?
        {
            network.bootstrap_public_network(&project.id).await?;
        }
        Ok(())
    }

    /// Catalog entries for this process's services.
    pub fn catalog_entries(&self) -> Vec<(String, String, String)> {
        let mut entries: Vec<(String, String, String)> = self
            .services
            .iter()
            .map(|s| (s.service_type().to_string(), s.catalog_name().to_string(), self.catalog_url(*s)))
            .collect();
        // DevStack registers Cinder's v3 API under both types; older clients look for `volumev3`.
        if self.services.contains(&Service::Volume) {
            entries.push(("volumev3".into(), "cinderv3".into(), self.catalog_url(Service::Volume)));
        }
        entries
    }
}

/// How this process's services authenticate to other services (the conductor to placement): the `[auth]`
/// service user, or, when identity runs here and `[auth]` is not set, the bootstrap admin.
fn service_session(config: &Config, public_url: &str, identity_here: bool) -> Result<auth::HttpValidator, Error> {
    let credentials = service_credentials(config, public_url, identity_here)?.ok_or_else(|| {
        Error::Config("compute needs service credentials to reach placement: set the [auth] section".into())
    })?;
    Ok(auth::HttpValidator::new(credentials)?)
}

/// The credentials this process's services (and its compute agent) call other services with: the `[auth]`
/// service user, or, when identity runs here and `[auth]` is not set, the bootstrap admin; `None` otherwise.
pub(crate) fn service_credentials(
    config: &Config,
    public_url: &str,
    identity_here: bool,
) -> Result<Option<auth::ServiceCredentials>, Error> {
    Ok(match (&config.auth, identity_here) {
        (Some(a), _) => Some(auth::ServiceCredentials {
            auth_url: a.url.clone(),
            username: a.username.clone(),
            password: a.password.clone(),
            user_domain_name: a.user_domain_name.clone(),
            project_name: a.project_name.clone(),
            project_domain_name: a.project_domain_name.clone(),
        }),
        (None, true) => {
            let creds = clients::Credentials::load_or_generate(config)?;
            Some(auth::ServiceCredentials {
                auth_url: format!("{public_url}{}", Service::Identity.prefix()),
                username: config.bootstrap.admin_username.clone(),
                password: creds.admin_password,
                user_domain_name: "Default".into(),
                project_name: config.bootstrap.admin_project.clone(),
                project_domain_name: "Default".into(),
            })
        }
        (None, false) => None,
    })
}

/// Nests `api` at `prefix`, also answering `prefix/` with the API's root (axum's `nest` matches only `prefix`).
fn nest_with_root(router: Router, prefix: &str, api: Router) -> Router {
    use tower::ServiceExt;
    let root = api.clone().map_request(|mut req: axum::extract::Request| {
        *req.uri_mut() = axum::http::Uri::from_static("/");
        req
    });
    router.nest(prefix, api).route_service(&format!("{prefix}/"), root)
}

/// How a process starts.
#[derive(Clone, Debug)]
pub struct StartOptions {
    pub services: Vec<Service>,
    /// Apply schema migrations at start (`up` and tests do; split deployments run `stratus db migrate`).
    pub migrate: bool,
    /// Bootstrap the cloud and write `clouds.yaml`/`openrc` into the data dir (`up` and tests).
    pub bootstrap: bool,
    /// Run this host's compute agent in the process, next to the services (`up` and tests; split deployments run
    /// `stratus compute-agent` on each compute host).
    pub compute_agent: bool,
    /// Run this host's volume agent in the process (`up`; split deployments run `stratus volume-agent` on each
    /// storage host).
    pub volume_agent: bool,
    /// Run this host's network agent in the process. It changes the host's networking, so `stratus up` runs it
    /// only when `[network_agent] enabled` says so, and tests only when they ask (split deployments run
    /// `stratus network-agent` on each host).
    pub network_agent: bool,
}

impl StartOptions {
    /// What `stratus up` does: everything, in one process.
    pub fn all_in_one() -> Self {
        StartOptions { services: Service::ALL.to_vec(), migrate: true, bootstrap: true, compute_agent: true, volume_agent: true, network_agent: false }
    }
}

/// A cloud serving HTTP in the background.
pub struct RunningCloud {
    pub addr: SocketAddr,
    /// Where the metadata service for instances listens, when `[compute] metadata_listen` is set.
    pub metadata_addr: Option<SocketAddr>,
    pub url: String,
    pub cloud: Arc<Cloud>,
    /// Credentials written to `clouds.yaml` (when bootstrapped).
    pub credentials: Option<clients::Credentials>,
    pub data_dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    /// Background upkeep (the image cache's pruner and pre-caching, the object expirer), stopped on shutdown.
    maintenance: Vec<JoinHandle<()>>,
    /// Bus servers of this process (the conductor), stopped on shutdown.
    bus_servers: Vec<bus::ServerHandle>,
    /// The in-process compute agent, if any.
    pub agent: Option<compute_agent::AgentHandle>,
    /// The in-process volume agent, if any.
    pub volume_agent: Option<volume_agent::AgentHandle>,
    /// The in-process network agent, if any.
    pub network_agent: Option<network_agent::AgentHandle>,
}

impl RunningCloud {
    /// Stops accepting, finishes in-flight requests, closes the bus and database.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let result = (&mut self.task).await;
        for task in self.maintenance.drain(..) {
            task.abort();
        }
        if let Some(agent) = self.agent.take() {
            agent.stop().await;
        }
        if let Some(agent) = self.volume_agent.take() {
            agent.stop().await;
        }
        if let Some(agent) = self.network_agent.take() {
            agent.stop().await;
        }
        for server in self.bus_servers.drain(..) {
            server.stop().await;
        }
        self.cloud.bus.close().await;
        self.cloud.db.close().await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(Error::Io { context: "server".into(), source }),
            Err(e) => Err(Error::Io { context: "server task".into(), source: std::io::Error::other(e.to_string()) }),
        }
    }

    /// Waits until the server stops by itself (it does not, unless it fails).
    pub async fn wait(&mut self) -> Result<(), Error> {
        match (&mut self.task).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(Error::Io { context: "server".into(), source }),
            Err(e) => Err(Error::Io { context: "server task".into(), source: std::io::Error::other(e.to_string()) }),
        }
    }
}

/// Binds the listener, builds the services, migrates and bootstraps as asked, and serves in the background.
/// The caller decides when to stop ([`RunningCloud::shutdown`]).
pub async fn start(config: Config, opts: StartOptions) -> Result<RunningCloud, Error> {
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| Error::Listen { addr: config.server.listen, source })?;
    let addr = listener.local_addr().map_err(|source| Error::Io { context: "local address".into(), source })?;
    let public_url = config.public_url(addr);
    let data_dir = config.data_dir.clone();
    let cloud = Cloud::build(config, opts.services.clone(), public_url.clone()).await?;
    if opts.migrate {
        cloud.migrate().await?;
        // All-in-one: no other process can be mid-upload, so unfinished uploads of a crash go back to queued.
        if let Some(image) = &cloud.image {
            image.recover().await?;
        }
    }
    let credentials = if opts.bootstrap {
        let creds = clients::Credentials::load_or_generate(&cloud.config)?;
        cloud.bootstrap(creds.bootstrap_spec(&cloud.config, cloud.catalog_entries())).await?;
        creds.write_client_files(&cloud.config, &cloud.service_url(Service::Identity))?;
        Some(creds)
    } else {
        None
    };
    let router = cloud.router()?;
    let (tx, rx) = oneshot::channel::<()>();
    // Responses are written as headers, then body chunks: without TCP_NODELAY, Nagle's algorithm holds a small
    // body back until the client's delayed ACK (~40 ms) arrives.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    let mut maintenance = Vec::new();
    if let Some(image) = &cloud.image
        && image.cache().is_some()
    {
        let interval = std::time::Duration::from_secs(cloud.config.image.cache_prune_interval.max(1));
        maintenance.push(tokio::spawn(image.clone().maintain_cache(interval)));
    }
    if let Some(object) = &cloud.object {
        let interval = std::time::Duration::from_secs(cloud.config.object.expirer_interval.max(1));
        maintenance.push(tokio::spawn(object.clone().run_expirer(interval)));
        let interval = std::time::Duration::from_secs(cloud.config.object.ring_check_interval.max(1));
        maintenance.push(tokio::spawn(object.clone().run_replicator(interval)));
    }
    // The metadata service for instances, on its own listener.
    let mut metadata_addr = None;
    if let (Some(compute), Some(listen)) = (&cloud.compute, cloud.config.compute.metadata_listen) {
        let secret = &cloud.config.compute.metadata_proxy_shared_secret;
        if secret.is_empty() {
            return Err(Error::Config("[compute] metadata_listen needs metadata_proxy_shared_secret".into()));
        }
        let listener = TcpListener::bind(listen).await.map_err(|source| Error::Listen { addr: listen, source })?;
        metadata_addr = Some(listener.local_addr().map_err(|source| Error::Io { context: "local address".into(), source })?);
        let router = compute::metadata::router(compute.clone(), secret);
        maintenance.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "the metadata service stopped");
            }
        }));
    }
    let mut bus_servers = Vec::new();
    if let Some(compute) = &cloud.compute {
        bus_servers.push(compute.conductor()?.serve(&format!("conductor-{}", addr.port())).await?);
    }
    if let Some(volume) = &cloud.volume {
        bus_servers.push(volume.serve(&format!("scheduler-{}", addr.port())).await?);
    }
    if let Some(network) = &cloud.network {
        bus_servers.push(network.serve_agents(&cloud.bus, &format!("network-{}", addr.port())).await?);
    }
    let network_agent = if opts.network_agent {
        let config = agent::network_agent_config_in_process(&cloud.config, metadata_addr)?;
        Some(network_agent::Agent::start(config, cloud.bus.clone()).await?)
    } else {
        None
    };
    let volume_agent =
        if opts.volume_agent { Some(agent::start_volume_agent(&cloud.config, cloud.bus.clone()).await?) } else { None };
    let agent = if opts.compute_agent {
        let endpoints = agent::Endpoints {
            image_url: cloud.config.compute.image_url.clone().unwrap_or_else(|| cloud.service_url(Service::Image)),
            credentials: service_credentials(&cloud.config, &public_url, opts.services.contains(&Service::Identity))?,
        };
        Some(agent::start_agent(&cloud.config, cloud.bus.clone(), endpoints).await?)
    } else {
        None
    };
    let cloud = Arc::new(cloud);
    Ok(RunningCloud {
        addr,
        metadata_addr,
        url: public_url,
        cloud,
        credentials,
        data_dir,
        shutdown: Some(tx),
        task,
        maintenance,
        bus_servers,
        agent,
        volume_agent,
        network_agent,
    })
}
