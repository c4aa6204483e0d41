//! What a transport provides to the [`crate::Bus`]: moving encoded envelopes to servers, replies
//! back to callers, and notifications to pools. Encoding, call bookkeeping and dispatch are
//! shared by all transports and live outside this module.

pub(crate) mod amqp;
pub(crate) mod memory;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

use crate::{Error, wire};

/// Where a request goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Destination<'a> {
    /// One server of the topic, round robin.
    Topic(&'a str),
    /// The named server of the topic.
    Server(&'a str, &'a str),
    /// Every server of the topic.
    Fanout(&'a str),
}

impl std::fmt::Display for Destination<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Topic(topic) => f.write_str(topic),
            Destination::Server(topic, server) => write!(f, "{topic}.{server}"),
            Destination::Fanout(topic) => write!(f, "{topic} (fanout)"),
        }
    }
}

/// What a listener receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Listen {
    /// Requests for the topic, for the named server, and the topic's fan-outs.
    Server { topic: String, server: String },
    /// Notifications, shared with the pool's other subscribers.
    Pool(String),
}

/// Identifies one listener of a transport.
pub(crate) type ListenId = u64;

/// A received envelope, settled once decoded: accepted, or rejected (and dropped) as malformed.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub body: Vec<u8>,
    acker: Option<lapin::Acker>,
}

impl Incoming {
    pub fn local(body: Vec<u8>) -> Self {
        Self { body, acker: None }
    }

    pub fn with_acker(body: Vec<u8>, acker: lapin::Acker) -> Self {
        Self {
            body,
            acker: Some(acker),
        }
    }

    pub async fn accept(&self) {
        if let Some(acker) = &self.acker
            && let Err(error) = acker.ack(BasicAckOptions::default()).await
        {
            tracing::debug!(%error, "cannot acknowledge message");
        }
    }

    pub async fn reject(&self) {
        if let Some(acker) = &self.acker
            && let Err(error) = acker.reject(BasicRejectOptions { requeue: false }).await
        {
            tracing::debug!(%error, "cannot reject message");
        }
    }
}

#[async_trait]
pub(crate) trait Transport: Send + Sync + 'static {
    /// For logs and `Debug`.
    fn kind(&self) -> &'static str;
    /// Where servers send replies meant for this bus.
    fn reply_address(&self) -> &str;
    /// Delivers a request. `ttl` is how long a call's caller waits; a request still undelivered by
    /// then may be dropped.
    async fn send(
        &self,
        to: Destination<'_>,
        body: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), Error>;
    /// Delivers a reply to the bus whose [`Transport::reply_address`] is `address`.
    async fn reply(&self, address: &str, body: Vec<u8>) -> Result<(), Error>;
    /// Delivers a notification to every pool.
    async fn notify(&self, body: Vec<u8>) -> Result<(), Error>;
    /// Starts delivering what `what` describes to `sink`, until [`Transport::unlisten`].
    async fn listen(
        &self,
        what: Listen,
        sink: UnboundedSender<Incoming>,
    ) -> Result<ListenId, Error>;
    async fn unlisten(&self, id: ListenId);
    /// Deletes a notification pool and ends this transport's subscriptions to it.
    async fn delete_pool(&self, pool: &str) -> Result<(), Error>;
    async fn close(&self);
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Calls waiting for their reply, by message id.
#[derive(Default)]
pub(crate) struct Pending {
    waiters: Mutex<HashMap<String, oneshot::Sender<wire::Reply>>>,
}

impl Pending {
    pub fn register(self: &Arc<Self>, msg_id: String) -> Waiter {
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert(msg_id.clone(), tx);
        Waiter {
            pending: self.clone(),
            msg_id,
            rx,
        }
    }

    /// Hands a received reply to its caller; replies nobody waits for (any more) are dropped.
    pub fn deliver(&self, body: &[u8]) {
        let reply = match wire::Reply::decode(body) {
            Ok(reply) => reply,
            Err(error) => {
                tracing::warn!(%error, "dropping malformed reply");
                return;
            }
        };
        match lock(&self.waiters).remove(&reply.msg_id) {
            Some(waiter) => {
                let _ = waiter.send(reply);
            }
            None => {
                tracing::debug!(msg_id = %reply.msg_id, "dropping reply to a call that has ended")
            }
        }
    }

    /// Ends every waiting call with [`Error::Closed`].
    pub fn fail_all(&self) {
        lock(&self.waiters).clear();
    }
}

/// A call's claim on its reply; unregisters when dropped (on timeout or cancellation).
pub(crate) struct Waiter {
    pending: Arc<Pending>,
    msg_id: String,
    rx: oneshot::Receiver<wire::Reply>,
}

impl Waiter {
    pub async fn wait(mut self) -> Result<wire::Reply, Error> {
        (&mut self.rx).await.map_err(|_| Error::Closed)
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        lock(&self.pending.waiters).remove(&self.msg_id);
    }
}
