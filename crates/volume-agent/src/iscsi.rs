//! The `iscsi` backend: volumes are raw files in a directory (the `file` driver's storage, so copies, snapshots
//! and images work the same), exported on demand by the userspace iSCSI target `tgt`, as upstream's drivers that
//! pair a store with `tgtadm`. A volume connected to a host is a target `<target_prefix>volume-<id>` whose LUN 1
//! is the volume's file; only the initiators of the connected hosts may log in (tgt's initiator-name ACL, from the
//! connector's `initiator`). QEMU's built-in libiscsi initiator reaches it from any host, so a volume on this host
//! attaches to an instance on another. When the last host disconnects, or the volume is deleted, the target goes.
//!
//! tgt keeps its targets in the daemon, not on disk: an agent restart keeps exports working; a `tgtd` restart loses
//! them until the hosts connect again.

use std::{path::PathBuf, process::Stdio, time::Duration};

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::{Capacity, DataSource, Error, FileConfig, FileDriver, VolumeDriver};

/// The `iscsi` driver's settings (upstream's `target_ip_address`, `target_port`, `target_prefix`).
#[derive(Clone, Debug)]
pub struct IscsiConfig {
    /// The storage: the file driver's settings (the format must be `raw`: tgt exports plain files).
    pub file: FileConfig,
    /// `address:port` initiators reach the target at.
    pub portal: String,
    /// The prefix of target names.
    pub target_prefix: String,
    pub tgtadm: PathBuf,
    pub tgtd: PathBuf,
    /// tgt's control port (`tgtadm -C`, `tgtd -C`): several daemons on one machine each have their own.
    pub control_port: u16,
    /// Start `tgtd` (listening on `portal` only) when none answers on the control port.
    pub start_daemon: bool,
}

impl IscsiConfig {
    pub fn new(file: FileConfig) -> Self {
        IscsiConfig {
            file,
            portal: "127.0.0.1:3260".into(),
            target_prefix: "iqn.2010-10.org.openstack:".into(),
            tgtadm: "tgtadm".into(),
            tgtd: "tgtd".into(),
            control_port: 0,
            start_daemon: true,
        }
    }
}

/// One target as `tgtadm --op show --mode target` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    tid: u32,
    iqn: String,
    acl: Vec<String>,
}

/// Parses `tgtadm --op show --mode target`: `Target <tid>: <iqn>` headers, each followed by indented sections;
/// the initiators allowed are the lines under `ACL information:`.
fn parse_targets(text: &str) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    let mut in_acl = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Target ") {
            if let Some((tid, iqn)) = rest.split_once(": ")
                && let Ok(tid) = tid.trim().parse()
            {
                out.push(Target { tid, iqn: iqn.trim().to_string(), acl: Vec::new() });
            }
            in_acl = false;
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let t = line.trim();
        if indent <= 4 && t.ends_with(':') {
            in_acl = t == "ACL information:";
            continue;
        }
        if in_acl
            && !t.is_empty()
            && let Some(target) = out.last_mut()
        {
            target.acl.push(t.to_string());
        }
    }
    out
}

/// The `iscsi` driver.
pub struct IscsiDriver {
    file: FileDriver,
    config: IscsiConfig,
    /// Target changes are read-modify-write on the daemon's state: one at a time.
    lock: tokio::sync::Mutex<()>,
}

impl IscsiDriver {
    pub fn new(config: IscsiConfig) -> Result<Self, Error> {
        if config.file.format != "raw" {
            return Err(Error::Config(format!("the iscsi driver stores raw volumes, not {}", config.file.format)));
        }
        if !config.target_prefix.starts_with("iqn.") {
            return Err(Error::Config(format!("target_prefix '{}' is not an iSCSI qualified name", config.target_prefix)));
        }
        Ok(IscsiDriver { file: FileDriver::new(config.file.clone())?, config, lock: tokio::sync::Mutex::new(()) })
    }

    fn iqn(&self, id: &str) -> String {
        format!("{}volume-{}", self.config.target_prefix, crate::file::safe(id))
    }

    async fn tgtadm(&self, args: &[&str]) -> Result<String, Error> {
        let port = self.config.control_port.to_string();
        let out = Command::new(&self.config.tgtadm)
            .args(["-C", &port, "--lld", "iscsi"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| Error::Backend(format!("cannot run {}: {e}", self.config.tgtadm.display())))?;
        if !out.status.success() {
            return Err(Error::Backend(format!(
                "tgtadm {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Makes sure a target daemon answers on the control port, starting one if configured to.
    async fn ensure_daemon(&self) -> Result<(), Error> {
        if self.tgtadm(&["--op", "show", "--mode", "system"]).await.is_ok() {
            return Ok(());
        }
        if !self.config.start_daemon {
            return Err(Error::Backend(format!("no iSCSI target daemon answers on control port {}", self.config.control_port)));
        }
        // tgtd daemonizes: it outlives the agent, and its targets with it.
        let status = Command::new(&self.config.tgtd)
            .args(["-C", &self.config.control_port.to_string(), "--iscsi", &format!("portal={}", self.config.portal)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .map_err(|e| Error::Backend(format!("cannot run {}: {e}", self.config.tgtd.display())))?;
        if !status.success() {
            return Err(Error::Backend(format!("tgtd exited with {status}")));
        }
        for _ in 0..50 {
            if self.tgtadm(&["--op", "show", "--mode", "system"]).await.is_ok() {
                tracing::info!(portal = %self.config.portal, control_port = self.config.control_port, "started the iSCSI target daemon");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::Backend("the iSCSI target daemon did not come up".into()))
    }

    async fn targets(&self) -> Result<Vec<Target>, Error> {
        Ok(parse_targets(&self.tgtadm(&["--op", "show", "--mode", "target"]).await?))
    }

    async fn delete_target(&self, tid: u32) -> Result<(), Error> {
        self.tgtadm(&["--op", "delete", "--mode", "target", "--force", "--tid", &tid.to_string()]).await.map(|_| ())
    }

    /// The initiator a connector names (the host's iSCSI qualified name).
    fn initiator(connector: &Value) -> Result<&str, Error> {
        connector["initiator"]
            .as_str()
            .filter(|i| !i.is_empty() && !i.contains(char::is_whitespace))
            .ok_or_else(|| Error::Backend("the connector names no iSCSI initiator".into()))
    }
}

#[async_trait]
impl VolumeDriver for IscsiDriver {
    fn name(&self) -> &'static str {
        "iscsi"
    }
    fn storage_protocol(&self) -> &'static str {
        "iSCSI"
    }
    fn thin_provisioning(&self) -> bool {
        true
    }
    fn scratch_dir(&self) -> PathBuf {
        self.file.scratch_dir()
    }
    async fn capacity(&self) -> Result<Capacity, Error> {
        self.file.capacity().await
    }
    async fn create(&self, id: &str, size_gb: i64) -> Result<(), Error> {
        self.file.create(id, size_gb).await
    }
    async fn create_from_file(&self, id: &str, size_gb: i64, source: &std::path::Path, format: &str) -> Result<(), Error> {
        self.file.create_from_file(id, size_gb, source, format).await
    }
    async fn create_from(&self, id: &str, size_gb: i64, source: DataSource<'_>) -> Result<(), Error> {
        self.file.create_from(id, size_gb, source).await
    }
    async fn delete(&self, id: &str) -> Result<(), Error> {
        {
            let _guard = self.lock.lock().await;
            if self.ensure_daemon().await.is_ok() {
                let iqn = self.iqn(id);
                if let Some(t) = self.targets().await?.into_iter().find(|t| t.iqn == iqn) {
                    self.delete_target(t.tid).await?;
                }
            }
        }
        self.file.delete(id).await
    }
    async fn extend(&self, id: &str, size_gb: i64) -> Result<(), Error> {
        self.file.extend(id, size_gb).await
    }
    async fn create_snapshot(&self, snapshot_id: &str, volume_id: &str) -> Result<(), Error> {
        self.file.create_snapshot(snapshot_id, volume_id).await
    }
    async fn revert_to_snapshot(&self, volume_id: &str, snapshot_id: &str, size_gb: i64) -> Result<(), Error> {
        self.file.revert_to_snapshot(volume_id, snapshot_id, size_gb).await
    }
    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), Error> {
        self.file.delete_snapshot(snapshot_id).await
    }
    async fn export(&self, source: DataSource<'_>, dest: &std::path::Path, format: &str) -> Result<(), Error> {
        self.file.export(source, dest, format).await
    }
    async fn import(&self, id: &str, source: &std::path::Path, format: &str) -> Result<(), Error> {
        self.file.import(id, source, format).await
    }

    async fn connection_info(&self, id: &str, connector: &Value) -> Result<Value, Error> {
        let initiator = Self::initiator(connector)?;
        let path = self.file.volume_file(id)?;
        let iqn = self.iqn(id);
        let _guard = self.lock.lock().await;
        self.ensure_daemon().await?;
        let targets = self.targets().await?;
        let target = match targets.iter().find(|t| t.iqn == iqn) {
            Some(t) => t.clone(),
            None => {
                let tid = targets.iter().map(|t| t.tid).max().unwrap_or(0) + 1;
                let tid_s = tid.to_string();
                self.tgtadm(&["--op", "new", "--mode", "target", "--tid", &tid_s, "-T", &iqn]).await?;
                let backing = path.to_string_lossy();
                let lun = ["--op", "new", "--mode", "logicalunit", "--tid", &tid_s, "--lun", "1", "-b", &backing];
                if let Err(e) = self.tgtadm(&lun).await {
                    let _ = self.delete_target(tid).await;
                    return Err(e);
                }
                Target { tid, iqn: iqn.clone(), acl: Vec::new() }
            }
        };
        if !target.acl.iter().any(|a| a == initiator) {
            self.tgtadm(&["--op", "bind", "--mode", "target", "--tid", &target.tid.to_string(), "-Q", initiator]).await?;
        }
        tracing::info!(volume = %id, target = %iqn, initiator, "volume exported");
        Ok(json!({
            "driver_volume_type": "iscsi",
            "data": {
                "target_discovered": false,
                "target_portal": self.config.portal,
                "target_iqn": iqn,
                "target_lun": 1,
                "format": "raw",
                "access_mode": "rw",
            },
        }))
    }

    async fn terminate_connection(&self, id: &str, connector: &Value) -> Result<(), Error> {
        let initiator = Self::initiator(connector)?;
        let iqn = self.iqn(id);
        let _guard = self.lock.lock().await;
        self.ensure_daemon().await?;
        let Some(target) = self.targets().await?.into_iter().find(|t| t.iqn == iqn) else { return Ok(()) };
        if target.acl.iter().any(|a| a == initiator) {
            self.tgtadm(&["--op", "unbind", "--mode", "target", "--tid", &target.tid.to_string(), "-Q", initiator]).await?;
        }
        if target.acl.iter().all(|a| a == initiator) {
            self.delete_target(target.tid).await?;
            tracing::info!(volume = %id, target = %iqn, "volume export removed");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_their_initiators_are_read_from_tgtadm_output() {
        let text = "Target 1: iqn.2010-10.org.openstack:volume-a\n    System information:\n        Driver: iscsi\n        State: ready\n    I_T nexus information:\n    LUN information:\n        LUN: 0\n            Type: controller\n        LUN: 1\n            Backing store path: /v/volume-a\n    Account information:\n    ACL information:\n        iqn.2026-01.org.stratus:h1\n        iqn.2026-01.org.stratus:h2\nTarget 3: iqn.2010-10.org.openstack:volume-b\n    System information:\n    ACL information:\n";
        let t = parse_targets(text);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0], Target { tid: 1, iqn: "iqn.2010-10.org.openstack:volume-a".into(), acl: vec!["iqn.2026-01.org.stratus:h1".into(), "iqn.2026-01.org.stratus:h2".into()] });
        assert_eq!(t[1].tid, 3);
        assert!(t[1].acl.is_empty());
        assert!(parse_targets("").is_empty());
    }

    #[test]
    fn only_raw_files_and_qualified_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = IscsiConfig::new(FileConfig::new(dir.path()));
        c.file.format = "qcow2".into();
        assert!(IscsiDriver::new(c.clone()).is_err());
        c.file.format = "raw".into();
        c.target_prefix = "volumes:".into();
        assert!(IscsiDriver::new(c).is_err());
    }
}
