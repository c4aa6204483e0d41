//! The OCI runtime (runc, or another with its command line: youki, crun) that creates, signals, freezes and
//! deletes the containers, as containerd and CRI-O drive it: one short-lived process per operation, with its
//! state under the driver's own root directory.
//!
//! A container's process is not the agent's child: `create` forks it off and returns, so containers outlive an
//! agent restart, and the runtime's state (`state`, `list`) finds them again.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;

use crate::Error;

/// A container as the runtime reports it (`<runtime> state`).
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct State {
    /// `creating`, `created`, `running`, `paused` or `stopped`.
    pub status: String,
    #[serde(default)]
    pub pid: i32,
}

impl State {
    /// The container has a process (running, or frozen by a pause).
    pub(crate) fn alive(&self) -> bool {
        self.status == "running" || self.status == "paused"
    }
}

pub(crate) struct Runtime {
    binary: PathBuf,
    root: PathBuf,
}

impl Runtime {
    pub(crate) fn new(binary: PathBuf, root: PathBuf) -> Runtime {
        Runtime { binary, root }
    }

    /// The error of a runtime that could not be run at all.
    fn not_run(&self) -> impl FnOnce(std::io::Error) -> Error {
        let context = format!("running {} (scripts/host-tools installs runc)", self.binary.display());
        move |source| Error::Io { context, source }
    }

    fn command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.binary);
        c.arg("--root").arg(&self.root).stdin(Stdio::null()).kill_on_drop(true);
        c
    }

    /// Runs `args`, returning the runtime's standard output; a failure carries what it printed.
    async fn run(&self, args: &[&str]) -> Result<String, Error> {
        let out = self
            .command()
            .args(args)
            .output()
            .await
            .map_err(self.not_run())?;
        if !out.status.success() {
            return Err(Error::Hypervisor(format!(
                "{} {}: {}",
                self.binary.display(),
                args.first().copied().unwrap_or_default(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The runtime's version (`runc version 1.1.5` is 1001005, upstream's encoding).
    pub(crate) fn version(binary: &Path) -> Result<i64, Error> {
        let out = std::process::Command::new(binary).arg("--version").output().map_err(|e| {
            Error::Config(format!("cannot run the container runtime {} ({e}); scripts/host-tools installs runc", binary.display()))
        })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text.lines().next().and_then(|l| l.split_whitespace().find(|w| w.starts_with(|c: char| c.is_ascii_digit())));
        let parts: Vec<i64> = version
            .unwrap_or_default()
            .split(|c: char| !c.is_ascii_digit())
            .take(3)
            .map(|p| p.parse().unwrap_or(0))
            .collect();
        match parts.as_slice() {
            [major, minor, patch, ..] => Ok(major * 1_000_000 + minor * 1_000 + patch),
            _ => Err(Error::Config(format!("cannot read the version of {} from {text:?}", binary.display()))),
        }
    }

    /// Creates container `id` from the bundle in `bundle` (its `config.json` and root filesystem); the
    /// container's standard output and error go to `console` (appended). The runtime's own messages go to
    /// `bundle/runtime.log`, whose last error is the failure's message.
    pub(crate) async fn create(&self, id: &str, bundle: &Path, console: &Path) -> Result<(), Error> {
        let io = |what: &Path| {
            let context = format!("opening {}", what.display());
            move |source| Error::Io { context, source }
        };
        let open = || std::fs::File::options().create(true).append(true).open(console);
        let (stdout, stderr) = (open().map_err(io(console))?, open().map_err(io(console))?);
        let log = bundle.join("runtime.log");
        // The runtime, and the container it forks off, get a process group of their own: signals to the agent's
        // group (a service manager stopping it) do not reach the containers.
        let status = self
            .command()
            .process_group(0)
            .arg("--log")
            .arg(&log)
            .args(["--log-format", "json", "create", "--bundle"])
            .arg(bundle)
            .arg("--pid-file")
            .arg(bundle.join("container.pid"))
            .arg(id)
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .await
            .map_err(self.not_run())?;
        if status.success() {
            return Ok(());
        }
        let message = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["level"] == "error")
            .and_then(|v| v["msg"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("exit status {status}"));
        Err(Error::Hypervisor(format!("the container runtime could not create the container: {message}")))
    }

    /// Runs the process of a created container.
    pub(crate) async fn start(&self, id: &str) -> Result<(), Error> {
        self.run(&["start", id]).await.map(drop)
    }

    /// The container's state; `None` when the runtime has no such container.
    pub(crate) async fn state(&self, id: &str) -> Result<Option<State>, Error> {
        let out = self.command().args(["state", id]).output().await.map_err(self.not_run())?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("does not exist") || err.contains("not found") || err.contains("No such file") {
                return Ok(None);
            }
            return Err(Error::Hypervisor(format!("{} state: {}", self.binary.display(), err.trim())));
        }
        serde_json::from_slice(&out.stdout).map(Some).map_err(|e| Error::Hypervisor(format!("{} state: {e}", self.binary.display())))
    }

    /// Sends `signal` (`TERM`, `KILL`) to the container's first process.
    pub(crate) async fn kill(&self, id: &str, signal: &str) -> Result<(), Error> {
        self.run(&["kill", id, signal]).await.map(drop)
    }

    /// Removes the container (killing it first); a container the runtime does not know is not an error.
    pub(crate) async fn delete(&self, id: &str) -> Result<(), Error> {
        match self.run(&["delete", "--force", id]).await {
            Ok(_) => Ok(()),
            Err(_) if self.state(id).await?.is_none() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Freezes the container's processes (the freezer cgroup).
    pub(crate) async fn pause(&self, id: &str) -> Result<(), Error> {
        self.run(&["pause", id]).await.map(drop)
    }

    pub(crate) async fn resume(&self, id: &str) -> Result<(), Error> {
        self.run(&["resume", id]).await.map(drop)
    }

    /// Changes a running container's limits: memory in bytes, CPU quota per 100 ms period, pids.
    pub(crate) async fn update(&self, id: &str, memory: i64, cpu_quota: i64, pids: i64) -> Result<(), Error> {
        let (memory, quota, pids) = (memory.to_string(), cpu_quota.to_string(), pids.to_string());
        let args = ["update", "--memory", &memory, "--memory-swap", &memory, "--cpu-period", "100000", "--cpu-quota", &quota, "--pids-limit", &pids, id];
        self.run(&args).await.map(drop)
    }

    /// The container's counters (`<runtime> events --stats`): the `data` member of the event.
    pub(crate) async fn stats(&self, id: &str) -> Result<serde_json::Value, Error> {
        let out = self.run(&["events", "--stats", id]).await?;
        let event: serde_json::Value = serde_json::from_str(out.trim()).map_err(|e| Error::Hypervisor(format!("{} events: {e}", self.binary.display())))?;
        Ok(event["data"].clone())
    }

    /// The ids of every container under the driver's root (blocking: used at start-up).
    pub(crate) fn list_blocking(&self) -> Vec<String> {
        let out = std::process::Command::new(&self.binary).arg("--root").arg(&self.root).args(["list", "--quiet"]).output();
        match out {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect(),
            _ => Vec::new(),
        }
    }

    /// Removes a container at start-up (blocking).
    pub(crate) fn delete_blocking(&self, id: &str) {
        let _ = std::process::Command::new(&self.binary).arg("--root").arg(&self.root).args(["delete", "--force", id]).output();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_encoded_as_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("runtime");
        std::fs::write(&fake, "#!/bin/sh\necho 'runc version 1.1.5+ds1'\necho 'spec: 1.0.2-dev'\n").unwrap();
        let mut perms = std::fs::metadata(&fake).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&fake, perms).unwrap();
        assert_eq!(Runtime::version(&fake).unwrap(), 1_001_005);
        assert!(Runtime::version(Path::new("/nonexistent/runc")).is_err());
    }
}
