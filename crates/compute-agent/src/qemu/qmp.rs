//! A small QMP client (QEMU's machine protocol: one JSON object per line over the instance's unix socket).
//!
//! Why not the `qapi`/`qapi-qmp` crates: they generate bindings for QEMU's whole schema at build time (a large
//! compile for the seven commands the driver uses), their schema trails the QEMU release the driver runs, and
//! their tokio adapter owns the connection in a background task. The driver needs a connect, a handshake and
//! `execute` with a timeout: a few dozen lines over tokio, typed at the call sites.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::Error;

/// How long one QMP exchange may take.
pub(crate) const QMP_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to one QEMU's monitor, past the capabilities negotiation.
pub(crate) struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

fn qmp_error(what: impl std::fmt::Display) -> Error {
    Error::Hypervisor(format!("QMP: {what}"))
}

impl Qmp {
    /// Connects to the socket at `path` and negotiates capabilities.
    pub(crate) async fn connect(path: &Path) -> Result<Qmp, Error> {
        let connect = async {
            let stream = UnixStream::connect(path).await.map_err(|e| qmp_error(format!("{}: {e}", path.display())))?;
            let (read, writer) = stream.into_split();
            let mut qmp = Qmp { reader: BufReader::new(read), writer };
            let greeting = qmp.read().await?;
            if greeting.get("QMP").is_none() {
                return Err(qmp_error(format!("unexpected greeting {greeting}")));
            }
            qmp.execute("qmp_capabilities", None).await?;
            Ok(qmp)
        };
        tokio::time::timeout(QMP_TIMEOUT, connect).await.map_err(|_| qmp_error("the monitor did not answer"))?
    }

    async fn read(&mut self) -> Result<Value, Error> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).await.map_err(qmp_error)?;
        if n == 0 {
            return Err(qmp_error("the monitor closed the connection"));
        }
        serde_json::from_str(&line).map_err(|e| qmp_error(format!("bad message {line:?}: {e}")))
    }

    /// Runs `command` and returns its `return` value; QEMU's `error` becomes [`Error::Hypervisor`]. Events that
    /// arrive meanwhile are skipped.
    pub(crate) async fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, Error> {
        let mut msg = json!({"execute": command});
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let exchange = async {
            let mut line = msg.to_string();
            line.push('\n');
            self.writer.write_all(line.as_bytes()).await.map_err(qmp_error)?;
            loop {
                let reply = self.read().await?;
                if let Some(ret) = reply.get("return") {
                    return Ok(ret.clone());
                }
                if let Some(err) = reply.get("error") {
                    let desc = err.get("desc").and_then(Value::as_str).unwrap_or("unknown error");
                    return Err(qmp_error(format!("{command}: {desc}")));
                }
            }
        };
        tokio::time::timeout(QMP_TIMEOUT, exchange).await.map_err(|_| qmp_error(format!("{command} timed out")))?
    }

    /// The VM's run state (`running`, `paused`, `shutdown`, `guest-panicked`, `inmigrate`, `postmigrate`, …).
    pub(crate) async fn status(&mut self) -> Result<String, Error> {
        let v = self.execute("query-status", None).await?;
        Ok(v.get("status").and_then(Value::as_str).unwrap_or_default().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A monitor that greets, then answers each command from `replies` in order (events first where given).
    async fn fake_monitor(path: &Path, replies: Vec<Vec<Value>>) -> tokio::task::JoinHandle<Vec<Value>> {
        let listener = UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            write.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n").await.unwrap();
            let mut seen = Vec::new();
            for reply in replies {
                let line = lines.next_line().await.unwrap().unwrap();
                seen.push(serde_json::from_str(&line).unwrap());
                for msg in reply {
                    write.write_all(format!("{msg}\n").as_bytes()).await.unwrap();
                }
            }
            seen
        })
    }

    #[tokio::test]
    async fn negotiates_runs_commands_and_skips_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let monitor = fake_monitor(
            &path,
            vec![
                vec![json!({"return": {}})],
                vec![json!({"event": "STOP", "timestamp": {}}), json!({"return": {"status": "paused", "running": false}})],
                vec![json!({"error": {"class": "GenericError", "desc": "no such device"}})],
            ],
        )
        .await;
        let mut qmp = Qmp::connect(&path).await.unwrap();
        assert_eq!(qmp.status().await.unwrap(), "paused");
        let err = qmp.execute("device_del", Some(json!({"id": "x"}))).await.unwrap_err().to_string();
        assert!(err.contains("device_del: no such device"), "{err}");
        let seen = monitor.await.unwrap();
        assert_eq!(seen[0], json!({"execute": "qmp_capabilities"}));
        assert_eq!(seen[2], json!({"execute": "device_del", "arguments": {"id": "x"}}));
    }

    #[tokio::test]
    async fn a_missing_socket_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Qmp::connect(&dir.path().join("none.sock")).await.is_err());
    }
}
