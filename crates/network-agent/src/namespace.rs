//! Named network namespaces, as `ip netns` keeps them (a bind mount under `/run/netns`), and the commands run in
//! them. iproute2 is what upstream's agents use too; namespaces made here are visible to `ip netns` for operators.

use std::path::Path;

use tokio::process::Command;

use crate::{Error, netlink::NETNS_DIR};

pub(crate) async fn run(ip: &Path, args: &[&str]) -> Result<String, Error> {
    let out = Command::new(ip)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::io(format!("cannot run {}", ip.display()), e))?;
    if !out.status.success() {
        return Err(Error::Command(format!(
            "{} {}: {}",
            ip.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The named namespaces whose names start with `prefix`.
pub fn list(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else { return vec![] };
    let mut out: Vec<String> =
        dir.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.starts_with(prefix)).collect();
    out.sort();
    out
}

pub fn exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

/// Creates namespace `name` unless it exists.
pub async fn ensure(ip: &Path, name: &str) -> Result<(), Error> {
    if !exists(name) {
        run(ip, &["netns", "add", name]).await?;
    }
    Ok(())
}

/// The processes running in namespace `name`.
pub async fn pids(ip: &Path, name: &str) -> Vec<i32> {
    run(ip, &["netns", "pids", name]).await.map(|o| o.split_whitespace().filter_map(|p| p.parse().ok()).collect()).unwrap_or_default()
}

/// Kills what still runs in namespace `name` and deletes it (its devices go with it).
pub async fn delete(ip: &Path, name: &str) -> Result<(), Error> {
    if !exists(name) {
        return Ok(());
    }
    for pid in pids(ip, name).await {
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    run(ip, &["netns", "delete", name]).await?;
    Ok(())
}

/// Starts `program args…` in namespace `name` and waits for it (dnsmasq daemonizes: this returns once it has).
/// Its output goes to `log`, never to a pipe a daemon could hold open.
pub async fn exec(ip: &Path, name: &str, program: &Path, args: &[String], log: &Path) -> Result<(), Error> {
    let out = std::fs::File::create(log).map_err(|e| Error::io(format!("cannot create {}", log.display()), e))?;
    let err = out.try_clone().map_err(|e| Error::io("log file", e))?;
    let status = Command::new(ip)
        .args(["netns", "exec", name])
        .arg(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .await
        .map_err(|e| Error::io(format!("cannot run {}", ip.display()), e))?;
    if !status.success() {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        return Err(Error::Command(format!("{} in {name}: {status}: {}", program.display(), log.trim())));
    }
    Ok(())
}

/// Sets `/proc/sys/net/…` knobs (paths below `/proc/sys/net/`, values) inside namespace `name`, writing only those
/// that differ (a thread enters the namespace: `/proc/sys/net` shows the opener's namespace).
pub fn set_sysctls(name: &str, knobs: &[(&str, &str)]) -> Result<(), Error> {
    let path = format!("{NETNS_DIR}/{name}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = std::fs::File::open(&path).map_err(|e| Error::io(format!("cannot open {path}"), e))?;
            rustix::thread::move_into_link_name_space(std::os::fd::AsFd::as_fd(&fd), Some(rustix::thread::LinkNameSpaceType::Network))
                .map_err(|e| Error::Netlink(format!("cannot enter {path}: {e}")))?;
            for (knob, value) in knobs {
                let knob = format!("/proc/sys/net/{knob}");
                if std::fs::read_to_string(&knob).map_err(|e| Error::io(&knob, e))?.trim() != *value {
                    std::fs::write(&knob, value).map_err(|e| Error::io(format!("cannot write {knob} in {name}"), e))?;
                }
            }
            Ok(())
        })
        .join()
        .map_err(|_| Error::Netlink("namespace thread panicked".into()))?
    })
}

/// Knobs of a namespace the agent makes: IPv6 addresses it adds are usable at once (no duplicate address detection
/// on devices moved in later, as upstream adds them with `nodad`), so dnsmasq and radvd can bind them.
pub const NO_DAD: &[(&str, &str)] = &[("ipv6/conf/default/accept_dad", "0"), ("ipv6/conf/all/accept_dad", "0")];
