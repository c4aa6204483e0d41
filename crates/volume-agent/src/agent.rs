//! The agent's life: serve the `cinder-volume` topic as `<host>@<backend>`, report the backend to the scheduler
//! every report interval, until stopped. Each call runs the driver and answers when the work is done.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use bus::{Bus, Dispatcher, RemoteError, ServerHandle, Target};
use tokio::{sync::watch, task::JoinHandle};
use volume_rpc::{
    BackendReport, BackupVolume, BackupWritten, CreateSnapshot, CreateVolume, DeleteBackup, DeleteSnapshot,
    DeleteVolume, ExtendVolume, InitializeConnection, RestoreBackup, RevertToSnapshot, SCHEDULER_TOPIC, TerminateConnection, UploadToImage, VOLUME_TOPIC,
    VolumeSource,
};

use crate::{DataSource, Error, VolumeDriver, driver::qemu_format, transfer};

/// An agent's settings (upstream's `[DEFAULT] host`, `storage_availability_zone` and the backend section).
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub host: String,
    /// The backend's name (`volume_backend_name`); the agent serves as `<host>@<backend_name>`.
    pub backend_name: String,
    pub availability_zone: String,
    pub report_interval: Duration,
    pub max_over_subscription_ratio: f64,
    pub reserved_percentage: u32,
    /// Extra capabilities reported to the scheduler (matched against volume type extra specs).
    pub capabilities: BTreeMap<String, String>,
}

impl AgentConfig {
    pub fn new(host: impl Into<String>) -> Self {
        AgentConfig {
            host: host.into(),
            backend_name: "file".into(),
            availability_zone: "nova".into(),
            report_interval: Duration::from_secs(10),
            max_over_subscription_ratio: 20.0,
            reserved_percentage: 0,
            capabilities: BTreeMap::new(),
        }
    }

    /// The server name on the topic, upstream's `host@backend`.
    pub fn service_host(&self) -> String {
        format!("{}@{}", self.host, self.backend_name)
    }

    fn validate(&self) -> Result<(), Error> {
        if self.report_interval.is_zero() {
            return Err(Error::Config("report_interval must be at least 1 second".into()));
        }
        if self.host.is_empty() || self.backend_name.is_empty() || self.host.contains('@') || self.backend_name.contains('#') {
            return Err(Error::Config("host and backend_name must be non-empty, without '@' or '#'".into()));
        }
        if self.max_over_subscription_ratio < 1.0 {
            return Err(Error::Config("max_over_subscription_ratio must be at least 1.0".into()));
        }
        Ok(())
    }
}

struct Inner {
    config: AgentConfig,
    driver: Arc<dyn VolumeDriver>,
    bus: Bus,
    http: reqwest::Client,
}

/// The volume agent.
pub struct Agent;

impl Agent {
    /// Starts serving and reporting in the background.
    pub async fn start(config: AgentConfig, driver: Arc<dyn VolumeDriver>, bus: Bus) -> Result<AgentHandle, Error> {
        config.validate()?;
        let http = reqwest::Client::builder().build().map_err(|e| Error::Config(e.to_string()))?;
        let inner = Arc::new(Inner { config, driver, bus, http });
        let server = inner.bus.serve(VOLUME_TOPIC, &inner.config.service_host(), dispatcher(&inner)).await?;
        let (stop, stopped) = watch::channel(false);
        tracing::info!(host = %inner.config.service_host(), driver = inner.driver.name(), "volume agent started");
        let reporter = tokio::spawn(report_loop(inner.clone(), stopped));
        Ok(AgentHandle { inner, stop, reporter: Some(reporter), server: Some(server) })
    }
}

/// A running agent; [`AgentHandle::stop`] stops it.
#[must_use = "dropping the handle stops the agent's reports"]
pub struct AgentHandle {
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    reporter: Option<JoinHandle<()>>,
    server: Option<ServerHandle>,
}

impl std::fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHandle").field("host", &self.inner.config.service_host()).finish_non_exhaustive()
    }
}

impl AgentHandle {
    /// `<host>@<backend>`.
    pub fn service_host(&self) -> String {
        self.inner.config.service_host()
    }

    /// Sends a report now (tests; the loop sends one at start and every interval).
    pub async fn report_now(&self) -> Result<(), Error> {
        report(&self.inner).await
    }

    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.reporter.take() {
            let _ = task.await;
        }
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

async fn report(inner: &Inner) -> Result<(), Error> {
    let c = inner.driver.capacity().await?;
    let config = &inner.config;
    let msg = BackendReport {
        host: config.service_host(),
        backend_name: config.backend_name.clone(),
        availability_zone: config.availability_zone.clone(),
        driver: inner.driver.name().into(),
        vendor_name: "Open Source".into(),
        storage_protocol: inner.driver.storage_protocol().into(),
        total_capacity_gb: c.total_gb,
        free_capacity_gb: c.free_gb,
        provisioned_capacity_gb: c.provisioned_gb,
        thin_provisioning_support: inner.driver.thin_provisioning(),
        max_over_subscription_ratio: config.max_over_subscription_ratio,
        reserved_percentage: config.reserved_percentage,
        capabilities: config.capabilities.clone(),
    };
    inner.bus.cast(&Target::topic(SCHEDULER_TOPIC), &msg).await?;
    Ok(())
}

async fn report_loop(inner: Arc<Inner>, mut stopped: watch::Receiver<bool>) {
    loop {
        if let Err(error) = report(&inner).await {
            tracing::warn!(%error, "volume backend report failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(inner.config.report_interval) => {}
            _ = stopped.changed() => return,
        }
        if *stopped.borrow() {
            return;
        }
    }
}

/// A temporary file in the driver's scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(inner: &Inner, what: &str) -> Self {
        Scratch(inner.driver.scratch_dir().join(format!("{what}-{}", uuid::Uuid::new_v4().simple())))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn logged<T>(what: &str, r: Result<T, Error>) -> Result<T, RemoteError> {
    r.map_err(|error| {
        tracing::warn!(%error, "volume agent: {what} failed");
        RemoteError::from(error)
    })
}

async fn create_volume(inner: &Inner, m: CreateVolume) -> Result<(), Error> {
    let d = &inner.driver;
    match m.source {
        VolumeSource::Empty => d.create(&m.volume_id, m.size_gb).await,
        VolumeSource::Snapshot { snapshot_id } => d.create_from(&m.volume_id, m.size_gb, DataSource::Snapshot(&snapshot_id)).await,
        VolumeSource::Volume { volume_id } => d.create_from(&m.volume_id, m.size_gb, DataSource::Volume(&volume_id)).await,
        VolumeSource::Image { image_url, image_id, disk_format, auth_token } => {
            let tmp = Scratch::new(inner, "image");
            transfer::download_image(&inner.http, &image_url, &image_id, &auth_token.0, &tmp.0).await?;
            d.create_from_file(&m.volume_id, m.size_gb, &tmp.0, qemu_format(&disk_format)).await
        }
    }
}

async fn upload(inner: &Inner, m: UploadToImage) -> Result<(), Error> {
    let tmp = Scratch::new(inner, "upload");
    inner.driver.export(DataSource::Volume(&m.volume_id), &tmp.0, qemu_format(&m.disk_format)).await?;
    transfer::upload_image(&inner.http, &m.image_url, &m.image_id, &m.auth_token.0, &tmp.0).await
}

async fn backup(inner: &Inner, m: BackupVolume) -> Result<BackupWritten, Error> {
    let tmp = Scratch::new(inner, "backup");
    let source = match &m.snapshot_id {
        Some(s) => DataSource::Snapshot(s),
        None => DataSource::Volume(&m.volume_id),
    };
    inner.driver.export(source, &tmp.0, "raw").await?;
    let (object_count, bytes) =
        transfer::write_backup(&inner.http, &m.target, &m.prefix, m.chunk_size, &tmp.0, &m.backup_id, &m.volume_id).await?;
    Ok(BackupWritten { object_count, bytes })
}

async fn restore(inner: &Inner, m: RestoreBackup) -> Result<(), Error> {
    let tmp = Scratch::new(inner, "restore");
    transfer::read_backup(&inner.http, &m.target, &m.prefix, m.object_count, &tmp.0).await?;
    inner.driver.import(&m.volume_id, &tmp.0, "raw").await
}

fn dispatcher(inner: &Arc<Inner>) -> Dispatcher {
    let i = inner.clone();
    let d = Dispatcher::new().on(move |m: CreateVolume| {
        let i = i.clone();
        async move { logged("create_volume", create_volume(&i, m).await) }
    });
    let i = inner.clone();
    let d = d.on(move |m: DeleteVolume| {
        let i = i.clone();
        async move { logged("delete_volume", i.driver.delete(&m.volume_id).await) }
    });
    let i = inner.clone();
    let d = d.on(move |m: ExtendVolume| {
        let i = i.clone();
        async move { logged("extend_volume", i.driver.extend(&m.volume_id, m.new_size_gb).await) }
    });
    let i = inner.clone();
    let d = d.on(move |m: CreateSnapshot| {
        let i = i.clone();
        async move { logged("create_snapshot", i.driver.create_snapshot(&m.snapshot_id, &m.volume_id).await) }
    });
    let i = inner.clone();
    let d = d.on(move |m: RevertToSnapshot| {
        let i = i.clone();
        async move { logged("revert_to_snapshot", i.driver.revert_to_snapshot(&m.volume_id, &m.snapshot_id, m.size_gb).await) }
    });
    let i = inner.clone();
    let d = d.on(move |m: DeleteSnapshot| {
        let i = i.clone();
        async move { logged("delete_snapshot", i.driver.delete_snapshot(&m.snapshot_id).await) }
    });
    let i = inner.clone();
    let d = d.on(move |m: UploadToImage| {
        let i = i.clone();
        async move { logged("copy_volume_to_image", upload(&i, m).await) }
    });
    let i = inner.clone();
    let d = d.on(move |m: InitializeConnection| {
        let i = i.clone();
        async move { logged("initialize_connection", i.driver.connection_info(&m.volume_id, &m.connector).await) }
    });
    let i = inner.clone();
    let d = d.on(move |m: TerminateConnection| {
        let i = i.clone();
        async move { logged("terminate_connection", i.driver.terminate_connection(&m.volume_id, &m.connector).await) }
    });
    let i = inner.clone();
    let d = d.on(move |m: BackupVolume| {
        let i = i.clone();
        async move { logged("create_backup", backup(&i, m).await) }
    });
    let i = inner.clone();
    let d = d.on(move |m: RestoreBackup| {
        let i = i.clone();
        async move { logged("restore_backup", restore(&i, m).await) }
    });
    let i = inner.clone();
    d.on(move |m: DeleteBackup| {
        let i = i.clone();
        async move { logged("delete_backup", transfer::delete_backup(&i.http, &m.target, &m.prefix, m.object_count).await) }
    })
}
