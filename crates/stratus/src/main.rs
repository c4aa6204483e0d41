//! `stratus`: the one binary. Every service, agent and admin command of the cloud is a subcommand.

use std::{net::SocketAddr, path::PathBuf, time::Instant};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use cloud::{Config, Service, StartOptions, config::LogFormat};

#[derive(Parser)]
#[command(name = "stratus", version, about = "An OpenStack-compatible cloud in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every service in one process, in the foreground, with embedded defaults.
    Up {
        /// Where the database, keys and client files live.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Address of the HTTP listener.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Optional configuration file (see etc/stratus.toml.example).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run some services of a split deployment (database and bus from the configuration).
    Serve {
        #[arg(long)]
        config: PathBuf,
        /// Comma-separated services to run, e.g. `identity`. Default: all.
        #[arg(long)]
        services: Option<String>,
    },
    /// Run this host's compute agent (upstream's nova-compute) on the configured message bus.
    ComputeAgent {
        #[arg(long)]
        config: Option<PathBuf>,
        /// The host name to register as (default: [compute_agent] host, else this machine's host name).
        #[arg(long)]
        host: Option<String>,
    },
    /// Run this host's volume agent (upstream's cinder-volume and cinder-backup) on the configured message bus.
    VolumeAgent {
        #[arg(long)]
        config: Option<PathBuf>,
        /// The host name to serve as (default: [volume_agent] host, else this machine's host name).
        #[arg(long)]
        host: Option<String>,
    },
    /// Run this host's network agent (upstream's Linux bridge and DHCP agents) on the configured message bus.
    NetworkAgent {
        #[arg(long)]
        config: Option<PathBuf>,
        /// The host name ports are bound to (default: [network_agent] host, else this machine's host name).
        #[arg(long)]
        host: Option<String>,
    },
    /// Database administration.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Bootstrap identity: admin user, project and roles, region, and catalog endpoints (like keystone-manage).
    Bootstrap {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Admin password (or STRATUS_BOOTSTRAP__ADMIN_PASSWORD).
        #[arg(long = "bootstrap-password")]
        password: Option<String>,
        #[arg(long = "bootstrap-username")]
        username: Option<String>,
        #[arg(long = "bootstrap-project-name")]
        project: Option<String>,
        #[arg(long = "bootstrap-region-id")]
        region: Option<String>,
        /// Base URL of the listener the services are reached at (default: server.public_url or http://<listen>).
        #[arg(long = "bootstrap-public-url")]
        public_url: Option<String>,
    },
    /// Identity administration.
    Identity {
        #[command(subcommand)]
        command: IdentityCommand,
    },
    /// Image service administration.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Object storage administration.
    Object {
        #[command(subcommand)]
        command: ObjectCommand,
    },
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum ObjectCommand {
    /// The object ring (`[object] ring_dir`/object.ring.json), edited as swift-ring-builder edits a builder file;
    /// a running server loads a rebalanced ring within `[object] ring_check_interval` and moves the data.
    Ring {
        #[command(subcommand)]
        command: RingCommand,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// The data dir (overrides the configuration's).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        /// The storage policy whose ring to edit (its index).
        #[arg(long, global = true, default_value_t = 0)]
        policy: u32,
    },
}

#[derive(Subcommand)]
enum RingCommand {
    /// Start a new ring: 2^PART_POWER partitions, REPLICAS copies, a partition moved at most once per MIN_PART_HOURS.
    Create {
        part_power: u8,
        replicas: usize,
        min_part_hours: u32,
        /// Replace an existing ring.
        #[arg(long)]
        force: bool,
    },
    /// Add devices: `r<region>z<zone>-<ip>:<port>/<device>[_<meta>] <weight>`, one or more pairs.
    Add {
        #[arg(num_args = 2.., required = true, value_names = ["DEVICE", "WEIGHT"])]
        devices: Vec<String>,
    },
    /// Change the weight of the devices matching SEARCH (`d<id>` or `/<device name>`).
    SetWeight { search: String, weight: f64 },
    /// Mark the devices matching SEARCH (`d<id>` or `/<device name>`) for removal; the next rebalance moves
    /// their partitions away.
    Remove { search: String },
    /// Reassign partitions to follow the devices' weights, moving as few as possible.
    Rebalance,
    /// Show the ring: partitions, replicas, balance and devices.
    Show,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// The image cache of this API node (`[image] cache_dir`, default `<data_dir>/image-cache`).
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// The data dir (overrides the configuration's).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Cached and queued images.
    List,
    /// Queue images for pre-caching; the running server fetches them on its next maintenance pass.
    Queue { image_ids: Vec<String> },
    /// Remove images from the cache and the queue.
    Delete { image_ids: Vec<String> },
    /// Evict least recently used images until the cache fits `[image] cache_max_size`.
    Prune,
    /// Remove invalid entries (wrong size or checksum) and abandoned incomplete files.
    Clean,
}

#[derive(Subcommand)]
enum DbCommand {
    /// Create or upgrade the schema of the selected services.
    Migrate {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        services: Option<String>,
    },
}

#[derive(Subcommand)]
enum IdentityCommand {
    /// Rotate the Fernet key repository: the staged key becomes primary; old tokens stay valid.
    FernetRotate {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Up { data_dir, listen, config } => {
            let started = Instant::now();
            let mut config = Config::load(config.as_deref())?;
            if let Some(dir) = data_dir {
                config.data_dir = dir;
            }
            if let Some(listen) = listen {
                config.server.listen = listen;
            }
            init_logging(&config);
            let data_dir = config.data_dir.clone();
            let network_agent = config.network_agent.enabled;
            let mut running = cloud::start(config, StartOptions { network_agent, ..StartOptions::all_in_one() }).await?;
            let clouds = data_dir.join("clouds.yaml");
            tracing::info!(url = %running.url, elapsed_ms = started.elapsed().as_millis() as u64, "stratus is ready");
            println!("Stratus is ready at {}", running.url);
            println!("  identity: {}/identity/v3", running.url);
            println!("Point the openstack CLI at it with:");
            println!("  export OS_CLIENT_CONFIG_FILE={}", clouds.display());
            println!("  openstack --os-cloud stratus-admin token issue    # admin");
            println!("  openstack --os-cloud stratus catalog list         # demo user");
            tokio::select! {
                r = running.wait() => r?,
                _ = shutdown_signal() => {
                    tracing::info!("shutting down");
                    running.shutdown().await?;
                }
            }
            Ok(())
        }
        Command::Serve { config, services } => {
            let config = Config::load(Some(&config))?;
            init_logging(&config);
            let services = match services {
                Some(list) => cloud::parse_services(&list)?,
                None => Service::ALL.to_vec(),
            };
            let names: Vec<_> = services.iter().map(|s| s.name()).collect();
            let mut running =
                cloud::start(config, StartOptions { services, migrate: false, bootstrap: false, compute_agent: false, volume_agent: false, network_agent: false }).await?;
            tracing::info!(url = %running.url, services = ?names, "serving");
            println!("Serving {} at {}", names.join(", "), running.url);
            tokio::select! {
                r = running.wait() => r?,
                _ = shutdown_signal() => running.shutdown().await?,
            }
            Ok(())
        }
        Command::ComputeAgent { config, host } => {
            let mut config = Config::load(config.as_deref())?;
            if let Some(host) = host {
                config.compute_agent.host = Some(host);
            }
            init_logging(&config);
            if config.bus.url.starts_with("memory://") {
                anyhow::bail!(
                    "the compute agent needs a bus shared with the conductor: set [bus] url (or STRATUS_BUS__URL) to \
                     an amqp:// URL; memory:// only reaches services in the same process"
                );
            }
            let bus = bus::Bus::connect(&config.bus.url).await.context("cannot connect to the message bus")?;
            let endpoints = cloud::agent::Endpoints::standalone(&config)?;
            let agent = cloud::agent::start_agent(&config, bus.clone(), endpoints).await?;
            println!("Compute agent of host {} started.", agent.host());
            shutdown_signal().await;
            tracing::info!("shutting down");
            agent.stop().await;
            bus.close().await;
            Ok(())
        }
        Command::VolumeAgent { config, host } => {
            let mut config = Config::load(config.as_deref())?;
            if let Some(host) = host {
                config.volume_agent.host = Some(host);
            }
            init_logging(&config);
            if config.bus.url.starts_with("memory://") {
                anyhow::bail!(
                    "the volume agent needs a bus shared with the volume service: set [bus] url (or STRATUS_BUS__URL) \
                     to an amqp:// URL; memory:// only reaches services in the same process"
                );
            }
            let bus = bus::Bus::connect(&config.bus.url).await.context("cannot connect to the message bus")?;
            let agent = cloud::agent::start_volume_agent(&config, bus.clone()).await?;
            println!("Volume agent {} started.", agent.service_host());
            shutdown_signal().await;
            tracing::info!("shutting down");
            agent.stop().await;
            bus.close().await;
            Ok(())
        }
        Command::NetworkAgent { config, host } => {
            let mut config = Config::load(config.as_deref())?;
            if let Some(host) = host {
                config.network_agent.host = Some(host);
            }
            init_logging(&config);
            if config.bus.url.starts_with("memory://") {
                anyhow::bail!(
                    "the network agent needs a bus shared with the network service: set [bus] url (or \
                     STRATUS_BUS__URL) to an amqp:// URL; memory:// only reaches services in the same process"
                );
            }
            let bus = bus::Bus::connect(&config.bus.url).await.context("cannot connect to the message bus")?;
            let agent = cloud::agent::start_network_agent(&config, bus.clone()).await?;
            println!("Network agent of host {} started.", agent.host());
            shutdown_signal().await;
            tracing::info!("shutting down");
            agent.stop().await;
            bus.close().await;
            Ok(())
        }
        Command::Db { command: DbCommand::Migrate { config, services } } => {
            let config = Config::load(config.as_deref())?;
            init_logging(&config);
            let services = match services {
                Some(list) => cloud::parse_services(&list)?,
                None => Service::ALL.to_vec(),
            };
            let public = config.public_url(config.server.listen);
            let cloud = cloud::Cloud::build(config, services, public).await?;
            cloud.migrate().await?;
            println!("Schema is up to date.");
            Ok(())
        }
        Command::Bootstrap { config, password, username, project, region, public_url } => {
            let mut config = Config::load(config.as_deref())?;
            init_logging(&config);
            if let Some(p) = password {
                config.bootstrap.admin_password = Some(p);
            }
            if let Some(u) = username {
                config.bootstrap.admin_username = u;
            }
            if let Some(p) = project {
                config.bootstrap.admin_project = p;
            }
            if let Some(r) = region {
                config.region = r;
            }
            let Some(admin_password) = config.bootstrap.admin_password.clone() else {
                anyhow::bail!("an admin password is required: --bootstrap-password or STRATUS_BOOTSTRAP__ADMIN_PASSWORD");
            };
            let public = public_url.unwrap_or_else(|| config.public_url(config.server.listen));
            let cloud = cloud::Cloud::build(config.clone(), Service::ALL.to_vec(), public).await?;
            cloud.migrate().await?;
            let creds = cloud::clients::Credentials { admin_password, demo_password: String::new() };
            let mut spec = creds.bootstrap_spec(&config, cloud.catalog_entries());
            spec.members.clear();
            cloud.bootstrap(spec).await?;
            println!("Bootstrapped: admin user '{}', project '{}', region '{}'.", config.bootstrap.admin_username, config.bootstrap.admin_project, config.region);
            Ok(())
        }
        Command::Identity { command: IdentityCommand::FernetRotate { config } } => {
            let config = Config::load(config.as_deref())?;
            identity::token::TokenKeys::rotate(&config.key_repository(), config.identity.max_active_keys)?;
            println!("Rotated the Fernet keys in {}.", config.key_repository().display());
            Ok(())
        }
        Command::Image { command: ImageCommand::Cache { command, config, data_dir } } => {
            let mut config = Config::load(config.as_deref())?;
            if let Some(dir) = data_dir {
                config.data_dir = dir;
            }
            image_cache(&config, command).await
        }
        Command::Object { command: ObjectCommand::Ring { command, config, data_dir, policy } } => {
            let mut config = Config::load(config.as_deref())?;
            if let Some(dir) = data_dir {
                config.data_dir = dir;
            }
            object_ring(&config, policy, command)
        }
        Command::Version => {
            println!("stratus {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}

async fn image_cache(config: &Config, command: CacheCommand) -> Result<()> {
    let settings = config.image_cache_config();
    let cache = image::cache::ImageCache::open(settings.clone())
        .with_context(|| format!("cannot open the image cache in {}", settings.dir.display()))?;
    match command {
        CacheCommand::List => {
            let entries = cache.list()?;
            let total: u64 = entries.iter().map(|e| e.size).sum();
            println!("{:<36}  {:>14}  {:>6}  last accessed", "image", "size", "hits");
            for e in &entries {
                let accessed = format_time(e.last_accessed);
                println!("{:<36}  {:>14}  {:>6}  {accessed}", e.image_id, e.size, e.hits);
            }
            println!("{} cached, {total} of {} bytes", entries.len(), cache.max_size());
            for id in cache.queued()? {
                println!("queued: {id}");
            }
        }
        CacheCommand::Queue { image_ids } => {
            for id in image_ids {
                cache.queue(&id).with_context(|| format!("cannot queue {id}"))?;
                println!("Queued {id}.");
            }
        }
        CacheCommand::Delete { image_ids } => {
            for id in image_ids {
                let cached = cache.delete(&id);
                let queued = cache.dequeue(&id);
                if !cached && !queued {
                    anyhow::bail!("{id} is neither cached nor queued");
                }
                println!("Deleted {id}.");
            }
        }
        CacheCommand::Prune => {
            let removed = cache.prune()?;
            println!(
                "Pruned {} images ({} bytes); {} bytes cached.",
                removed.entries,
                removed.bytes,
                cache.total_size()?
            );
        }
        CacheCommand::Clean => {
            let removed = cache.clean().await?;
            println!("Removed {} invalid or abandoned files ({} bytes).", removed.entries, removed.bytes);
        }
    }
    Ok(())
}

fn object_ring(config: &Config, policy: u32, command: RingCommand) -> Result<()> {
    use object::ring::{Device, RingBuilder, hours_now};
    let object = config.object_config();
    let policies = object::policy::Policies::new(object.policies.clone())?;
    if policies.by_index(i64::from(policy)).is_none() {
        anyhow::bail!("no storage policy has index {policy} ([[object.policies]] in the configuration)");
    }
    let path = object.ring_file_of(policy);
    let load = || RingBuilder::load(&path).with_context(|| format!("no usable ring at {} (create one first)", path.display()));
    match command {
        RingCommand::Create { part_power, replicas, min_part_hours, force } => {
            if path.exists() && !force {
                anyhow::bail!("{} exists; pass --force to replace it", path.display());
            }
            RingBuilder::new(part_power, replicas, min_part_hours)?.save(&path)?;
            println!("Created {} ({} partitions, {replicas} replicas); add devices and rebalance.", path.display(), 1u64 << part_power);
        }
        RingCommand::Add { devices } => {
            if devices.len() % 2 != 0 {
                anyhow::bail!("devices come in pairs: DEVICE WEIGHT");
            }
            let mut b = load()?;
            for pair in devices.chunks(2) {
                let weight: f64 = pair[1].parse().with_context(|| format!("invalid weight {:?}", pair[1]))?;
                let device = Device::parse(&pair[0], weight)?;
                let shown = format!("r{}z{}-{}:{}/{}", device.region, device.zone, device.ip, device.port, device.name);
                let id = b.add_device(device)?;
                println!("Device d{id} {shown} with weight {weight} added; rebalance to use it.");
            }
            b.save(&path)?;
        }
        RingCommand::SetWeight { search, weight } => {
            let mut b = load()?;
            let n = b.set_weight(&search, weight)?;
            b.save(&path)?;
            println!("Weight of {n} device(s) set to {weight}; rebalance to apply it.");
        }
        RingCommand::Remove { search } => {
            let mut b = load()?;
            let n = b.remove(&search)?;
            b.save(&path)?;
            println!("{n} device(s) marked for removal; rebalance to move their partitions.");
        }
        RingCommand::Rebalance => {
            let mut b = load()?;
            let r = b.rebalance(hours_now())?;
            let slots = (1usize << b.part_power) * b.replicas;
            if r.moved == 0 {
                println!("No partitions reassigned. Balance is {:.2}.", r.balance);
                if r.balance > 1.0 {
                    println!("A partition moves at most once per {} hours (min_part_hours).", b.min_part_hours);
                }
            } else {
                println!(
                    "Reassigned {} ({:.2}%) partitions. Balance is now {:.2}.",
                    r.moved,
                    r.moved as f64 * 100.0 / slots as f64,
                    r.balance
                );
            }
            b.save(&path)?;
        }
        RingCommand::Show => {
            let b = load()?;
            let live: Vec<_> = b.devices.iter().filter(|d| !d.removed).collect();
            let regions: std::collections::BTreeSet<_> = live.iter().map(|d| d.device.region).collect();
            let zones: std::collections::BTreeSet<_> = live.iter().map(|d| (d.device.region, d.device.zone)).collect();
            println!("{}, build version {}", path.display(), b.version);
            println!(
                "{} partitions, {} replicas, {} regions, {} zones, {} devices, {:.2} balance",
                1u64 << b.part_power,
                b.replicas,
                regions.len(),
                zones.len(),
                live.len(),
                b.balance()
            );
            println!("The minimum number of hours before a partition can be reassigned is {}", b.min_part_hours);
            println!("Devices:   id region zone      ip address:port  name       weight partitions meta");
            for d in &b.devices {
                let dev = &d.device;
                println!(
                    "         {:>4} {:>6} {:>4} {:>21} {:<8} {:>8.2} {:>10} {}{}",
                    dev.id,
                    dev.region,
                    dev.zone,
                    format!("{}:{}", dev.ip, dev.port),
                    dev.name,
                    dev.weight,
                    b.parts_of(dev.id),
                    dev.meta,
                    if d.removed { " (removing)" } else { "" }
                );
            }
        }
    }
    Ok(())
}

/// Unix seconds as `YYYY-MM-DD hh:mm:ss` UTC.
fn format_time(secs: f64) -> String {
    chrono::DateTime::from_timestamp(secs as i64, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn init_logging(config: &Config) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_new(&config.log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
