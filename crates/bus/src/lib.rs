//! The message bus between Stratus controllers and per-host agents.
//!
//! It plays the part oslo.messaging plays in OpenStack: typed RPC [`Bus::call`] (with a timeout),
//! [`Bus::cast`] and [`Bus::fanout`] addressed by [`Target`] (a topic, optionally narrowed to one
//! server), plus notifications ([`Bus::notify`], [`Bus::subscribe_notifications`]).
//!
//! One API, two transports, chosen by URL in [`Bus::connect`]:
//!
//! * `memory://` (or `memory://name` for a separate, isolated broker): in-process, for the
//!   single-process deployment and for tests. Every [`Bus`] connected to the same URL in a process
//!   shares one broker.
//! * `amqp://user:pass@host:port/vhost`: RabbitMQ (AMQP 0-9-1). The transport reconnects by
//!   itself with bounded backoff when the broker drops the connection, and re-declares its queues,
//!   exchanges and consumers. An optional `connection_name` query parameter names the connection
//!   as the broker shows it (default `stratus`). This is the only crate that knows about AMQP.
//!
//! Messages implement [`Rpc`]: a serde payload with a stable method name and a reply type.
//! Servers register handlers on a [`Dispatcher`] and start serving with [`Bus::serve`]; each
//! message is handled in its own task so a slow handler does not hold up the others.
//!
//! ```no_run
//! # async fn demo() -> Result<(), bus::Error> {
//! use bus::{Bus, Dispatcher, RemoteError, Rpc, Target};
//! use serde::{Deserialize, Serialize};
//! use std::time::Duration;
//!
//! #[derive(Serialize, Deserialize)]
//! struct Ping { text: String }
//! impl Rpc for Ping { const METHOD: &'static str = "ping"; type Reply = String; }
//!
//! let bus = Bus::connect("memory://").await?;
//! let server = bus
//!     .serve("compute", "host1", Dispatcher::new().on(|m: Ping| async move { Ok::<_, RemoteError>(m.text) }))
//!     .await?;
//! let reply = bus.call(&Target::topic("compute"), &Ping { text: "hi".into() }, Duration::from_secs(5)).await?;
//! assert_eq!(reply, "hi");
//! server.stop().await;
//! # Ok(()) }
//! ```
//!
//! Delivery is at most once, as with oslo.messaging: a call whose reply is lost ends in
//! [`Error::Timeout`], and nothing is retried behind the caller's back.

mod dispatch;
mod error;
mod notification;
mod transport;
mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use dispatch::{Dispatcher, RemoteError, ServerHandle};
pub use error::Error;
pub use notification::{Notification, NotificationStream};

use transport::{Destination, Listen, Pending, Transport};

/// A typed message: a serde payload, a stable method name, and the type of its reply.
///
/// Casts and fan-outs ignore the reply type; use `()` for messages that are never called.
pub trait Rpc: Serialize + DeserializeOwned + Send + 'static {
    /// The method name on the wire; it must stay stable across releases.
    const METHOD: &'static str;
    /// What a [`Bus::call`] of this message returns.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
}

/// Where a message goes: every server of a topic shares its work, or one named server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The service topic, e.g. `compute`.
    pub topic: String,
    /// A single server (usually a host name) within the topic, e.g. `host1`.
    pub server: Option<String>,
}

impl Target {
    /// Any one server of `topic`.
    pub fn topic(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            server: None,
        }
    }

    /// The server `server` of `topic`.
    pub fn server(topic: impl Into<String>, server: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            server: Some(server.into()),
        }
    }

    fn destination(&self) -> Result<Destination<'_>, Error> {
        check_name("topic", &self.topic)?;
        match &self.server {
            Some(server) => {
                check_name("server", server)?;
                Ok(Destination::Server(&self.topic, server))
            }
            None => Ok(Destination::Topic(&self.topic)),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.server {
            Some(server) => write!(f, "{}.{}", self.topic, server),
            None => f.write_str(&self.topic),
        }
    }
}

/// A connection to the message bus. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Bus {
    transport: Arc<dyn Transport>,
    pending: Arc<Pending>,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("transport", &self.transport.kind())
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// Connects to the bus at `url` (`memory://[name]` or `amqp://...`).
    ///
    /// For AMQP the broker must be reachable now; later outages are recovered from in the
    /// background.
    pub async fn connect(url: &str) -> Result<Bus, Error> {
        let pending = Arc::new(Pending::default());
        let transport: Arc<dyn Transport> = if let Some(name) = url.strip_prefix("memory://") {
            Arc::new(transport::memory::MemoryTransport::connect(
                name,
                pending.clone(),
            ))
        } else if url.starts_with("amqp://") {
            Arc::new(transport::amqp::AmqpTransport::connect(url, pending.clone()).await?)
        } else if url.starts_with("amqps://") {
            return Err(Error::InvalidUrl(
                "amqps:// (TLS) is not supported by this build".into(),
            ));
        } else {
            return Err(Error::InvalidUrl(
                "expected a memory:// or amqp:// URL".into(),
            ));
        };
        Ok(Bus { transport, pending })
    }

    /// Sends `msg` to one server of `target` and waits up to `timeout` for its reply.
    ///
    /// Fails with [`Error::Remote`] when the handler returned an error, [`Error::Timeout`] when no
    /// reply came in time, and [`Error::NoListener`] when nothing serves the target.
    pub async fn call<M: Rpc>(
        &self,
        target: &Target,
        msg: &M,
        timeout: Duration,
    ) -> Result<M::Reply, Error> {
        let destination = target.destination()?;
        let msg_id = uuid::Uuid::new_v4().simple().to_string();
        let body = wire::Request::encode(
            M::METHOD,
            msg,
            Some((&msg_id, self.transport.reply_address())),
        )?;
        let waiter = self.pending.register(msg_id);
        let reply = tokio::time::timeout(timeout, async {
            self.transport
                .send(destination, body, Some(timeout))
                .await?;
            waiter.wait().await
        })
        .await
        .map_err(|_| Error::Timeout)??;
        reply.into_result()
    }

    /// Sends `msg` to one server of `target` (round robin among the topic's servers) without
    /// waiting for it to be handled.
    pub async fn cast<M: Rpc>(&self, target: &Target, msg: &M) -> Result<(), Error> {
        let destination = target.destination()?;
        let body = wire::Request::encode(M::METHOD, msg, None)?;
        self.transport.send(destination, body, None).await
    }

    /// Sends `msg` to every server listening on `topic`. Succeeds even when none is listening.
    pub async fn fanout<M: Rpc>(&self, topic: &str, msg: &M) -> Result<(), Error> {
        check_name("topic", topic)?;
        let body = wire::Request::encode(M::METHOD, msg, None)?;
        self.transport
            .send(Destination::Fanout(topic), body, None)
            .await
    }

    /// Publishes an INFO notification in the oslo envelope (`message_id`, `publisher_id`,
    /// `event_type`, `priority`, `payload`, `timestamp`). Every notification pool receives it once;
    /// with no pool subscribed it is dropped.
    pub async fn notify<T: Serialize>(
        &self,
        publisher_id: &str,
        event_type: &str,
        payload: &T,
    ) -> Result<(), Error> {
        let body = Notification::new(publisher_id, event_type, payload)?.encode()?;
        self.transport.notify(body).await
    }

    /// Joins notification pool `pool`. Each pool receives every notification once; the
    /// subscribers of one pool share its notifications between them.
    ///
    /// On AMQP a pool is a durable queue: it keeps collecting notifications while nobody is
    /// subscribed, until it has been unused for a day or [`Bus::delete_notification_pool`] removes
    /// it. In memory a pool exists only while someone is subscribed.
    pub async fn subscribe_notifications(&self, pool: &str) -> Result<NotificationStream, Error> {
        check_name("notification pool", pool)?;
        let (sink, incoming) = tokio::sync::mpsc::unbounded_channel();
        let id = self
            .transport
            .listen(Listen::Pool(pool.to_owned()), sink)
            .await?;
        Ok(NotificationStream::new(
            pool.to_owned(),
            incoming,
            self.transport.clone(),
            id,
        ))
    }

    /// Removes notification pool `pool` with any notifications still queued for it, and ends this
    /// bus's subscriptions to it.
    pub async fn delete_notification_pool(&self, pool: &str) -> Result<(), Error> {
        check_name("notification pool", pool)?;
        self.transport.delete_pool(pool).await
    }

    /// Starts serving `dispatcher` as server `server` of `topic`: it receives calls and casts
    /// sent to the topic (shared with the topic's other servers), those sent to this server by
    /// name, and every fan-out to the topic.
    pub async fn serve(
        &self,
        topic: &str,
        server: &str,
        dispatcher: Dispatcher,
    ) -> Result<ServerHandle, Error> {
        check_name("topic", topic)?;
        check_name("server", server)?;
        let (sink, incoming) = tokio::sync::mpsc::unbounded_channel();
        let listen = Listen::Server {
            topic: topic.to_owned(),
            server: server.to_owned(),
        };
        let id = self.transport.listen(listen, sink).await?;
        Ok(dispatch::spawn_server(
            incoming,
            dispatcher,
            self.transport.clone(),
            id,
        ))
    }

    /// Closes the connection for this bus and all its clones. Pending calls fail with
    /// [`Error::Closed`], servers and notification streams stop receiving.
    pub async fn close(&self) {
        self.transport.close().await;
        self.pending.fail_all();
    }
}

/// Topic, server and pool names become routing keys and queue names: keep them printable and
/// free of AMQP wildcards.
fn check_name(what: &str, name: &str) -> Result<(), Error> {
    let bad = |c: char| c.is_whitespace() || c.is_control() || c == '*' || c == '#';
    if name.is_empty() || name.len() > 200 || name.chars().any(bad) {
        return Err(Error::InvalidName(format!("{what} {name:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("topic", "compute").is_ok());
        assert!(check_name("server", "host-1.example.org").is_ok());
        for bad in ["", "a b", "a*", "#", "x\n", &"x".repeat(201)] {
            assert!(
                matches!(check_name("topic", bad), Err(Error::InvalidName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn target_display() {
        assert_eq!(Target::topic("compute").to_string(), "compute");
        assert_eq!(
            Target::server("compute", "host1").to_string(),
            "compute.host1"
        );
    }

    #[tokio::test]
    async fn rejects_unknown_schemes() {
        for url in ["http://x", "amqps://h", ""] {
            assert!(
                matches!(Bus::connect(url).await, Err(Error::InvalidUrl(_))),
                "{url}"
            );
        }
    }
}
