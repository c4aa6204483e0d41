//! AMQP 0-9-1 transport on RabbitMQ (`amqp://user:pass@host:port/vhost[?connection_name=name]`).
//!
//! Topology, close to oslo.messaging's rabbit driver:
//!
//! * `stratus`: durable topic exchange for requests. Each topic has a queue `<topic>` (key
//!   `<topic>`) shared by its servers, and each server a queue `<topic>.<server>` (key
//!   `<topic>.<server>`); both are durable and deleted with their last consumer.
//! * `<topic>_fanout`: fanout exchange per topic, declared by its servers and deleted with the
//!   last of them, with an exclusive queue `<topic>_fanout_<uuid>` per server. A fan-out to a
//!   topic without servers is dropped.
//! * `reply_<uuid>`: exclusive, auto-delete reply queue of each bus, addressed through the
//!   default exchange; calls carry its name in `reply_to`.
//! * `stratus.notifications`: durable topic exchange; notifications go out with routing key
//!   `notifications.info`, and each pool has a durable queue `stratus.notifications.<pool>` that
//!   the broker drops after a day without consumers.
//!
//! Everything is published with publisher confirms. Calls and casts are `mandatory`, so a
//! request no queue takes is reported as [`Error::NoListener`] instead of vanishing; calls also
//! carry their timeout as message expiration so stale requests are not executed.
//!
//! A supervisor task owns the connection. When the connection or one of its channels fails (or a
//! consumer is cancelled by the broker) it marks the link down, reconnects with backoff between
//! [`BACKOFF_MIN`] and [`BACKOFF_MAX`], re-declares the exchanges and queues and restarts every
//! consumer, feeding the same server loops and notification streams as before. Publishing waits
//! at most [`LINK_WAIT`] for the link to come back; calls are bounded by their own timeout.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer,
    ExchangeKind,
};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::{Destination, Incoming, Listen, ListenId, Pending, Transport, lock};
use crate::Error;

const RPC_EXCHANGE: &str = "stratus";
const NOTIFY_EXCHANGE: &str = "stratus.notifications";
const NOTIFY_KEY: &str = "notifications.info";
/// A notification pool nobody consumed for this long is deleted by the broker.
const POOL_EXPIRY_MS: i32 = 24 * 60 * 60 * 1000;
/// Unacknowledged deliveries per listener.
const PREFETCH: u16 = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for opening a connection and declaring everything on it.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an operation waits for a lost connection to come back, or for a publish confirm.
const LINK_WAIT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const HEALTH_CHECK: Duration = Duration::from_millis(500);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

fn amqp(error: lapin::Error) -> Error {
    Error::Transport(error.to_string())
}

fn is_not_found(error: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(e) if *e.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
}

fn pool_queue(pool: &str) -> String {
    format!("{NOTIFY_EXCHANGE}.{pool}")
}

fn json_properties() -> BasicProperties {
    BasicProperties::default().with_content_type("application/json".into())
}

/// The `connection_name` query parameter, taken verbatim.
fn connection_name(url: &str) -> String {
    url.split_once('?')
        .and_then(|(_, query)| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix("connection_name="))
        })
        .filter(|name| !name.is_empty())
        .unwrap_or("stratus")
        .to_owned()
}

pub(crate) struct AmqpTransport {
    shared: Arc<Shared>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    url: String,
    connection_name: String,
    reply_queue: String,
    pending: Arc<Pending>,
    link: watch::Sender<Link>,
    shutdown: watch::Sender<bool>,
    /// Held while (re)attaching listeners, so a listener is never half set up on a session.
    registry: tokio::sync::Mutex<Registry>,
    next_id: AtomicU64,
}

#[derive(Clone)]
enum Link {
    Down,
    Up(Arc<Session>),
    Closed,
}

#[derive(Default)]
struct Registry {
    /// The session listeners are attached to; `None` while the link is down.
    session: Option<Arc<Session>>,
    listeners: BTreeMap<ListenId, Listener>,
}

struct Listener {
    what: Listen,
    sink: UnboundedSender<Incoming>,
    attached: Option<Attached>,
}

/// A listener's channel and consumers on the current session.
struct Attached {
    channel: Channel,
    /// Set before we close the channel ourselves, so its consumers ending is not taken for a
    /// lost connection.
    stopping: Arc<AtomicBool>,
}

impl Attached {
    async fn detach(self) {
        self.stopping.store(true, Ordering::Release);
        if let Ok(Err(error)) = timeout(CLOSE_TIMEOUT, self.channel.close(200, "OK".into())).await {
            tracing::debug!(%error, "closing listener channel");
        }
    }
}

/// One connection to the broker with the channels every bus needs.
struct Session {
    connection: Connection,
    publisher: Channel,
    _replies: Channel,
    /// Notified by anything that sees the session fail.
    lost: Arc<Notify>,
}

impl Session {
    fn healthy(&self) -> bool {
        self.connection.status().connected() && self.publisher.status().connected()
    }

    async fn close(&self) {
        if self.connection.status().connected() {
            let _ = timeout(CLOSE_TIMEOUT, self.connection.close(200, "OK".into())).await;
        }
    }
}

impl AmqpTransport {
    pub async fn connect(url: &str, pending: Arc<Pending>) -> Result<Self, Error> {
        url.parse::<lapin::uri::AMQPUri>()
            .map_err(|e| Error::InvalidUrl(format!("bad AMQP URL: {e}")))?;
        let shared = Arc::new(Shared {
            url: url.to_owned(),
            connection_name: connection_name(url),
            reply_queue: format!("reply_{}", uuid::Uuid::new_v4().simple()),
            pending,
            link: watch::Sender::new(Link::Down),
            shutdown: watch::Sender::new(false),
            registry: Default::default(),
            next_id: AtomicU64::new(1),
        });
        let session = match timeout(ESTABLISH_TIMEOUT, establish(&shared)).await {
            Ok(Ok(session)) => session,
            // Declaring or consuming failed on a fresh connection: the broker is not usable.
            Ok(Err(Error::Transport(reason))) => return Err(Error::Unavailable(reason)),
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                return Err(Error::Unavailable(
                    "timed out connecting to the message broker".into(),
                ));
            }
        };
        let supervisor = tokio::spawn(supervise(shared.clone(), session));
        Ok(Self {
            shared,
            supervisor: Mutex::new(Some(supervisor)),
        })
    }

    /// The live session, waiting up to [`LINK_WAIT`] for a lost connection to come back.
    async fn session(&self) -> Result<Arc<Session>, Error> {
        let mut link = self.shared.link.subscribe();
        match timeout(LINK_WAIT, link.wait_for(|l| !matches!(l, Link::Down))).await {
            Err(_) => Err(Error::Unavailable(
                "the connection to the message broker is down".into(),
            )),
            Ok(Err(_)) => Err(Error::Closed),
            Ok(Ok(link)) => match &*link {
                Link::Up(session) => Ok(session.clone()),
                Link::Down | Link::Closed => Err(Error::Closed),
            },
        }
    }

    /// Publishes with a confirm; returns whether a queue took the message (always true unless
    /// `mandatory`).
    async fn publish(
        &self,
        session: &Session,
        exchange: &str,
        key: &str,
        body: &[u8],
        mandatory: bool,
        properties: BasicProperties,
    ) -> Result<bool, Error> {
        let options = BasicPublishOptions {
            mandatory,
            immediate: false,
        };
        let confirmed = timeout(LINK_WAIT, async {
            session
                .publisher
                .basic_publish(exchange.into(), key.into(), options, body, properties)
                .await?
                .await
        })
        .await;
        match confirmed {
            Ok(Ok(Confirmation::Ack(None) | Confirmation::NotRequested)) => Ok(true),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Ok(false),
            Ok(Ok(Confirmation::Nack(_))) => {
                Err(Error::Transport("the broker refused the message".into()))
            }
            Ok(Err(error)) => {
                if !session.healthy() {
                    session.lost.notify_one();
                }
                Err(amqp(error))
            }
            Err(_) => Err(Error::Unavailable(
                "no confirm from the message broker".into(),
            )),
        }
    }
}

impl Drop for AmqpTransport {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}

#[async_trait]
impl Transport for AmqpTransport {
    fn kind(&self) -> &'static str {
        "amqp"
    }

    fn reply_address(&self) -> &str {
        &self.shared.reply_queue
    }

    async fn send(
        &self,
        to: Destination<'_>,
        body: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), Error> {
        let session = self.session().await?;
        let mut properties = json_properties().with_delivery_mode(1);
        if let Some(ttl) = ttl {
            properties = properties.with_expiration(ttl.as_millis().max(1).to_string().into());
        }
        let routed = match to {
            Destination::Topic(topic) => {
                self.publish(&session, RPC_EXCHANGE, topic, &body, true, properties)
                    .await?
            }
            Destination::Server(topic, server) => {
                let key = format!("{topic}.{server}");
                self.publish(&session, RPC_EXCHANGE, &key, &body, true, properties)
                    .await?
            }
            Destination::Fanout(topic) => {
                fanout(&session, &format!("{topic}_fanout"), &body, properties)
                    .await
                    .map_err(amqp)?;
                true
            }
        };
        if routed {
            Ok(())
        } else {
            Err(Error::NoListener(to.to_string()))
        }
    }

    async fn reply(&self, address: &str, body: Vec<u8>) -> Result<(), Error> {
        let session = self.session().await?;
        self.publish(
            &session,
            "",
            address,
            &body,
            false,
            json_properties().with_delivery_mode(1),
        )
        .await?;
        Ok(())
    }

    async fn notify(&self, body: Vec<u8>) -> Result<(), Error> {
        let session = self.session().await?;
        let properties = json_properties().with_delivery_mode(2);
        self.publish(
            &session,
            NOTIFY_EXCHANGE,
            NOTIFY_KEY,
            &body,
            false,
            properties,
        )
        .await?;
        Ok(())
    }

    async fn listen(
        &self,
        what: Listen,
        sink: UnboundedSender<Incoming>,
    ) -> Result<ListenId, Error> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        // The link may drop between waiting for it and taking the lock; give it a few chances.
        for _ in 0..3 {
            self.session().await?;
            let mut registry = self.shared.registry.lock().await;
            let Some(session) = registry.session.clone() else {
                continue;
            };
            let attached = attach(&session, &what, &sink).await?;
            registry.listeners.insert(
                id,
                Listener {
                    what,
                    sink,
                    attached: Some(attached),
                },
            );
            return Ok(id);
        }
        Err(Error::Unavailable(
            "the connection to the message broker keeps failing".into(),
        ))
    }

    async fn unlisten(&self, id: ListenId) {
        let attached = self
            .shared
            .registry
            .lock()
            .await
            .listeners
            .remove(&id)
            .and_then(|l| l.attached);
        if let Some(attached) = attached {
            attached.detach().await;
        }
    }

    async fn delete_pool(&self, pool: &str) -> Result<(), Error> {
        let detached: Vec<Attached> = {
            let mut registry = self.shared.registry.lock().await;
            let ids: Vec<ListenId> = registry
                .listeners
                .iter()
                .filter(|(_, l)| matches!(&l.what, Listen::Pool(p) if p == pool))
                .map(|(id, _)| *id)
                .collect();
            ids.iter()
                .filter_map(|id| registry.listeners.remove(id)?.attached)
                .collect()
        };
        for attached in detached {
            attached.detach().await;
        }
        let session = self.session().await?;
        // A channel of its own, so a failure cannot take the publisher down.
        let channel = session.connection.create_channel().await.map_err(amqp)?;
        let deleted = channel
            .queue_delete(pool_queue(pool).into(), QueueDeleteOptions::default())
            .await;
        let _ = timeout(CLOSE_TIMEOUT, channel.close(200, "OK".into())).await;
        deleted.map(|_| ()).map_err(amqp)
    }

    async fn close(&self) {
        self.shared.shutdown.send_replace(true);
        let supervisor = lock(&self.supervisor).take();
        if let Some(supervisor) = supervisor
            && let Err(error) = supervisor.await
        {
            tracing::error!(%error, "message bus supervisor failed");
        }
    }
}

/// Connects and attaches every registered listener; publishes the session as the live link.
async fn establish(shared: &Arc<Shared>) -> Result<Arc<Session>, Error> {
    let mut registry = shared.registry.lock().await;
    for listener in registry.listeners.values_mut() {
        listener.attached = None;
    }
    let properties =
        ConnectionProperties::default().with_connection_name(shared.connection_name.clone().into());
    let connection = match timeout(
        CONNECT_TIMEOUT,
        Connection::connect(&shared.url, properties),
    )
    .await
    {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => return Err(Error::Unavailable(error.to_string())),
        Err(_) => {
            return Err(Error::Unavailable(
                "timed out connecting to the message broker".into(),
            ));
        }
    };
    let lost = Arc::new(Notify::new());
    let channels = open_channels(shared, &connection, &lost).await;
    let (publisher, replies) = match channels {
        Ok(channels) => channels,
        Err(error) => {
            let _ = timeout(CLOSE_TIMEOUT, connection.close(200, "OK".into())).await;
            return Err(amqp(error));
        }
    };
    let session = Arc::new(Session {
        connection,
        publisher,
        _replies: replies,
        lost,
    });

    let mut failure = None;
    for listener in registry.listeners.values_mut() {
        match attach(&session, &listener.what, &listener.sink).await {
            Ok(attached) => listener.attached = Some(attached),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    if let Some(error) = failure {
        for listener in registry.listeners.values_mut() {
            if let Some(attached) = listener.attached.take() {
                attached.stopping.store(true, Ordering::Release);
            }
        }
        session.close().await;
        return Err(error);
    }
    registry.session = Some(session.clone());
    shared.link.send_replace(Link::Up(session.clone()));
    Ok(session)
}

/// Opens the publisher channel (with confirms) and starts consuming the reply queue.
async fn open_channels(
    shared: &Shared,
    connection: &Connection,
    lost: &Arc<Notify>,
) -> Result<(Channel, Channel), lapin::Error> {
    let publisher = connection.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for exchange in [RPC_EXCHANGE, NOTIFY_EXCHANGE] {
        publisher
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
    }

    let replies = connection.create_channel().await?;
    let queue = shared.reply_queue.as_str();
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    replies
        .queue_declare(queue.into(), exclusive, FieldTable::default())
        .await?;
    let options = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let consumer = replies
        .basic_consume(queue.into(), "".into(), options, FieldTable::default())
        .await?;
    tokio::spawn(forward_replies(
        consumer,
        shared.pending.clone(),
        lost.clone(),
    ));
    Ok((publisher, replies))
}

/// Publishes to a fan-out exchange if it exists, i.e. if any server listens.
///
/// Uses a channel of its own: publishing to a missing exchange is a channel error, and the
/// exchange may vanish with its last server at any moment. Closing the channel waits until the
/// broker has processed the publish.
async fn fanout(
    session: &Session,
    exchange: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), lapin::Error> {
    let channel = session.connection.create_channel().await?;
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    match channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Fanout,
            passive,
            FieldTable::default(),
        )
        .await
    {
        Ok(()) => {}
        // Not found (the broker closed the channel): nobody listens.
        Err(error) if is_not_found(&error) => return Ok(()),
        Err(error) => return Err(error),
    }
    channel
        .basic_publish(
            exchange.into(),
            "".into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await?;
    channel.close(200, "OK".into()).await
}

async fn declare_fanout(channel: &Channel, exchange: &str) -> Result<(), lapin::Error> {
    let options = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Fanout,
            options,
            FieldTable::default(),
        )
        .await
}

async fn declare_bound(
    channel: &Channel,
    queue: &str,
    options: QueueDeclareOptions,
    arguments: FieldTable,
    exchange: &str,
    key: &str,
) -> Result<(), lapin::Error> {
    channel
        .queue_declare(queue.into(), options, arguments)
        .await?;
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Declares a listener's queues on a channel of its own and starts forwarding to its sink.
async fn attach(
    session: &Session,
    what: &Listen,
    sink: &UnboundedSender<Incoming>,
) -> Result<Attached, Error> {
    let channel = session.connection.create_channel().await.map_err(amqp)?;
    let stopping = Arc::new(AtomicBool::new(false));
    let started = async {
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await?;
        let queues = match what {
            Listen::Server { topic, server } => {
                // Durable so they do not count as transient queues; they still go with their last consumer.
                let shared = QueueDeclareOptions {
                    durable: true,
                    auto_delete: true,
                    ..Default::default()
                };
                let own = format!("{topic}.{server}");
                declare_bound(
                    &channel,
                    topic,
                    shared,
                    FieldTable::default(),
                    RPC_EXCHANGE,
                    topic,
                )
                .await?;
                declare_bound(
                    &channel,
                    &own,
                    shared,
                    FieldTable::default(),
                    RPC_EXCHANGE,
                    &own,
                )
                .await?;
                let exchange = format!("{topic}_fanout");
                declare_fanout(&channel, &exchange).await?;
                let fanout = format!("{exchange}_{}", uuid::Uuid::new_v4().simple());
                let exclusive = QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                };
                declare_bound(
                    &channel,
                    &fanout,
                    exclusive,
                    FieldTable::default(),
                    &exchange,
                    "",
                )
                .await?;
                vec![topic.clone(), own, fanout]
            }
            Listen::Pool(pool) => {
                let queue = pool_queue(pool);
                let mut arguments = FieldTable::default();
                arguments.insert("x-expires".into(), AMQPValue::LongInt(POOL_EXPIRY_MS));
                let durable = QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                };
                declare_bound(
                    &channel,
                    &queue,
                    durable,
                    arguments,
                    NOTIFY_EXCHANGE,
                    NOTIFY_KEY,
                )
                .await?;
                vec![queue]
            }
        };
        for queue in queues {
            let consumer = channel
                .basic_consume(
                    queue.into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            tokio::spawn(forward(
                consumer,
                sink.clone(),
                stopping.clone(),
                session.lost.clone(),
            ));
        }
        Ok::<_, lapin::Error>(())
    }
    .await;
    let attached = Attached { channel, stopping };
    match started {
        Ok(()) => Ok(attached),
        Err(error) => {
            attached.detach().await;
            Err(amqp(error))
        }
    }
}

/// Moves deliveries from a consumer to a listener's sink until either side ends.
async fn forward(
    mut consumer: Consumer,
    sink: UnboundedSender<Incoming>,
    stopping: Arc<AtomicBool>,
    lost: Arc<Notify>,
) {
    while let Some(delivery) = consumer.next().await {
        match delivery {
            Ok(Delivery { data, acker, .. }) => {
                if sink.send(Incoming::with_acker(data, acker)).is_err() {
                    // The listener is gone; the channel close requeues what it had not taken.
                    return;
                }
            }
            Err(error) => {
                if !stopping.load(Ordering::Acquire) {
                    tracing::warn!(queue = %consumer.queue(), %error, "message bus consumer failed");
                    lost.notify_one();
                }
                return;
            }
        }
    }
    if !stopping.load(Ordering::Acquire) {
        tracing::warn!(queue = %consumer.queue(), "message bus consumer cancelled by the broker");
        lost.notify_one();
    }
}

async fn forward_replies(mut consumer: Consumer, pending: Arc<Pending>, lost: Arc<Notify>) {
    while let Some(delivery) = consumer.next().await {
        match delivery {
            Ok(delivery) => pending.deliver(&delivery.data),
            Err(error) => {
                tracing::debug!(%error, "reply consumer ended");
                break;
            }
        }
    }
    lost.notify_one();
}

/// Returns once the session looks unhealthy.
async fn unhealthy(session: &Session) {
    let mut tick = tokio::time::interval(HEALTH_CHECK);
    loop {
        tick.tick().await;
        if !session.healthy() {
            return;
        }
    }
}

/// Watches the live session and replaces it when it fails, until shutdown.
async fn supervise(shared: Arc<Shared>, mut session: Arc<Session>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let closing = tokio::select! {
            biased;
            _ = shutting_down(&mut shutdown) => true,
            _ = session.lost.notified() => false,
            _ = unhealthy(&session) => false,
        };
        {
            let mut registry = shared.registry.lock().await;
            registry.session = None;
            for listener in registry.listeners.values_mut() {
                if let Some(attached) = listener.attached.take() {
                    attached.stopping.store(true, Ordering::Release);
                }
            }
            if closing {
                // Dropping the sinks ends the server loops and notification streams.
                registry.listeners.clear();
                shared.link.send_replace(Link::Closed);
            } else {
                shared.link.send_replace(Link::Down);
            }
        }
        session.close().await;
        if closing {
            return;
        }
        tracing::warn!("lost the connection to the message broker; reconnecting");

        let mut backoff = BACKOFF_MIN;
        session = loop {
            let attempt = tokio::select! {
                biased;
                _ = shutting_down(&mut shutdown) => None,
                attempt = timeout(ESTABLISH_TIMEOUT, establish(&shared)) => Some(attempt),
            };
            let error = match attempt {
                None => {
                    shut_down(&shared).await;
                    return;
                }
                Some(Ok(Ok(session))) => break session,
                Some(Ok(Err(error))) => error,
                Some(Err(_)) => Error::Unavailable("timed out reconnecting".into()),
            };
            tracing::warn!(%error, retry_in = ?backoff, "cannot reconnect to the message broker");
            tokio::select! {
                biased;
                _ = shutting_down(&mut shutdown) => {
                    shut_down(&shared).await;
                    return;
                }
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        };
        tracing::info!("reconnected to the message broker");
    }
}

/// Returns once shutdown has been requested (or everyone who could request it is gone).
async fn shutting_down(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|closing| *closing).await;
}

/// Final state when shutdown arrives while the link is down.
async fn shut_down(shared: &Shared) {
    let mut registry = shared.registry.lock().await;
    registry.session = None;
    registry.listeners.clear();
    shared.link.send_replace(Link::Closed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_name_from_query() {
        assert_eq!(connection_name("amqp://h/%2f"), "stratus");
        assert_eq!(
            connection_name("amqp://h/%2f?heartbeat=10&connection_name=api-1"),
            "api-1"
        );
        assert_eq!(connection_name("amqp://h/%2f?connection_name="), "stratus");
    }

    #[tokio::test]
    async fn unreachable_broker_is_unavailable() {
        // Port 1 on loopback: nothing listens there.
        let result =
            AmqpTransport::connect("amqp://guest:guest@127.0.0.1:1/%2f", Arc::default()).await;
        assert!(
            matches!(result, Err(Error::Unavailable(_))),
            "{:?}",
            result.err()
        );
    }
}
