//! In-process transport (`memory://[name]`).
//!
//! Every bus connected to the same name in a process shares one broker, so the services of a
//! single-process deployment talk to each other as they would over RabbitMQ. Routing mirrors the
//! AMQP transport: a topic's servers take turns, a named server gets its own messages, a fan-out
//! reaches every server of the topic, and each notification pool gets each notification once.
//! Unlike AMQP nothing is buffered for absent listeners: sending to a topic nobody serves fails
//! with [`Error::NoListener`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc::UnboundedSender;

use super::{Destination, Incoming, Listen, ListenId, Pending, Transport, lock};
use crate::Error;

/// Brokers by name. Weak, so a broker goes away with the last bus using it.
fn brokers() -> &'static Mutex<HashMap<String, Weak<Broker>>> {
    static BROKERS: OnceLock<Mutex<HashMap<String, Weak<Broker>>>> = OnceLock::new();
    BROKERS.get_or_init(Default::default)
}

#[derive(Default)]
struct Broker {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_id: ListenId,
    /// Ordered by id, so round robin follows subscription order.
    listeners: BTreeMap<ListenId, Listener>,
    /// Round-robin position per routing key.
    turns: HashMap<String, usize>,
    /// Reply addresses of the connected buses.
    replies: HashMap<String, Weak<Pending>>,
}

struct Listener {
    what: Listen,
    sink: UnboundedSender<Incoming>,
}

impl State {
    /// Delivers `body` to one of the listeners `pick` selects, taking turns per `key`.
    /// Returns false if none could take it.
    fn deliver_one(&mut self, key: &str, body: &[u8], pick: impl Fn(&Listen) -> bool) -> bool {
        let sinks: Vec<_> = self
            .listeners
            .values()
            .filter(|l| pick(&l.what))
            .map(|l| l.sink.clone())
            .collect();
        if sinks.is_empty() {
            return false;
        }
        let turn = self.turns.entry(key.to_owned()).or_default();
        let start = *turn;
        *turn = turn.wrapping_add(1);
        // A listener whose receiver is gone is on its way out; try the next one.
        (0..sinks.len()).any(|i| {
            sinks[(start + i) % sinks.len()]
                .send(Incoming::local(body.to_vec()))
                .is_ok()
        })
    }

    /// Removes listeners, and the turn counters nobody needs any more.
    fn remove(&mut self, gone: impl Fn(ListenId, &Listen) -> bool) {
        self.listeners.retain(|id, l| !gone(*id, &l.what));
        let listeners = &self.listeners;
        self.turns.retain(|key, _| {
            listeners.values().any(|l| match &l.what {
                Listen::Server { topic, server } => {
                    key == topic
                        || key
                            .strip_prefix(topic.as_str())
                            .and_then(|k| k.strip_prefix('.'))
                            == Some(server)
                }
                Listen::Pool(pool) => key.strip_prefix("pool ") == Some(pool),
            })
        });
    }
}

pub(crate) struct MemoryTransport {
    broker: Arc<Broker>,
    address: String,
    own: Mutex<HashSet<ListenId>>,
    closed: AtomicBool,
}

impl MemoryTransport {
    pub fn connect(name: &str, pending: Arc<Pending>) -> Self {
        let broker = {
            let mut brokers = lock(brokers());
            brokers.retain(|_, broker| broker.strong_count() > 0);
            match brokers.get(name).and_then(Weak::upgrade) {
                Some(broker) => broker,
                None => {
                    let broker = Arc::new(Broker::default());
                    brokers.insert(name.to_owned(), Arc::downgrade(&broker));
                    broker
                }
            }
        };
        let address = format!("reply_{}", uuid::Uuid::new_v4().simple());
        lock(&broker.state)
            .replies
            .insert(address.clone(), Arc::downgrade(&pending));
        Self {
            broker,
            address,
            own: Mutex::default(),
            closed: AtomicBool::new(false),
        }
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn reply_address(&self) -> &str {
        &self.address
    }

    async fn send(
        &self,
        to: Destination<'_>,
        body: Vec<u8>,
        _ttl: Option<Duration>,
    ) -> Result<(), Error> {
        self.check_open()?;
        let mut state = lock(&self.broker.state);
        let delivered = match to {
            Destination::Topic(topic) => {
                state.deliver_one(topic, &body, |l| matches!(l, Listen::Server { topic: t, .. } if t == topic))
            }
            Destination::Server(topic, server) => state.deliver_one(&format!("{topic}.{server}"), &body, |l| {
                matches!(l, Listen::Server { topic: t, server: s } if t == topic && s == server)
            }),
            Destination::Fanout(topic) => {
                for listener in state.listeners.values() {
                    if matches!(&listener.what, Listen::Server { topic: t, .. } if t == topic) {
                        let _ = listener.sink.send(Incoming::local(body.clone()));
                    }
                }
                true
            }
        };
        if delivered {
            Ok(())
        } else {
            Err(Error::NoListener(to.to_string()))
        }
    }

    async fn reply(&self, address: &str, body: Vec<u8>) -> Result<(), Error> {
        let pending = lock(&self.broker.state)
            .replies
            .get(address)
            .and_then(Weak::upgrade);
        match pending {
            Some(pending) => pending.deliver(&body),
            None => tracing::debug!("dropping reply to a bus that is gone"),
        }
        Ok(())
    }

    async fn notify(&self, body: Vec<u8>) -> Result<(), Error> {
        self.check_open()?;
        let mut state = lock(&self.broker.state);
        let pools: HashSet<String> = state
            .listeners
            .values()
            .filter_map(|l| match &l.what {
                Listen::Pool(pool) => Some(pool.clone()),
                Listen::Server { .. } => None,
            })
            .collect();
        for pool in pools {
            state.deliver_one(
                &format!("pool {pool}"),
                &body,
                |l| matches!(l, Listen::Pool(p) if *p == pool),
            );
        }
        Ok(())
    }

    async fn listen(
        &self,
        what: Listen,
        sink: UnboundedSender<Incoming>,
    ) -> Result<ListenId, Error> {
        self.check_open()?;
        let mut state = lock(&self.broker.state);
        state.next_id += 1;
        let id = state.next_id;
        state.listeners.insert(id, Listener { what, sink });
        lock(&self.own).insert(id);
        Ok(id)
    }

    async fn unlisten(&self, id: ListenId) {
        if lock(&self.own).remove(&id) {
            lock(&self.broker.state).remove(|other, _| other == id);
        }
    }

    async fn delete_pool(&self, pool: &str) -> Result<(), Error> {
        self.check_open()?;
        let mut state = lock(&self.broker.state);
        state.remove(|_, what| matches!(what, Listen::Pool(p) if p == pool));
        Ok(())
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.detach();
    }
}

impl MemoryTransport {
    /// Removes this bus's listeners and reply address from the broker.
    fn detach(&self) {
        let own = std::mem::take(&mut *lock(&self.own));
        let mut state = lock(&self.broker.state);
        state.remove(|id, _| own.contains(&id));
        state.replies.remove(&self.address);
    }
}

impl Drop for MemoryTransport {
    fn drop(&mut self) {
        self.detach();
    }
}
