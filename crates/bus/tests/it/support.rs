//! Shared test plumbing: transports under test, test messages, a recording server.

use std::future::Future;
use std::time::Duration;

use bus::{Bus, Dispatcher, RemoteError, Rpc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// No test may take longer than this.
const TEST_LIMIT: Duration = Duration::from_secs(120);

pub fn amqp_url() -> String {
    std::env::var("STRATUS_TEST_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned())
}

pub fn amqp_required() -> bool {
    std::env::var("STRATUS_TEST_REQUIRE_AMQP").is_ok_and(|v| v == "1")
}

/// Skips (returns false) with a note, or fails when AMQP is required.
pub fn skip_amqp(why: &str) -> bool {
    assert!(!amqp_required(), "STRATUS_TEST_REQUIRE_AMQP=1 but {why}");
    eprintln!("note: skipping AMQP test: {why} (set STRATUS_TEST_REQUIRE_AMQP=1 to fail instead)");
    false
}

/// The AMQP URL if RabbitMQ answers there; `None` (skip) if not, unless AMQP is required.
pub async fn reachable_amqp_url() -> Option<String> {
    let url = amqp_url();
    let why = match timeout(Duration::from_secs(15), Bus::connect(&url)).await {
        Ok(Ok(bus)) => {
            bus.close().await;
            return Some(url);
        }
        Ok(Err(error)) => error.to_string(),
        Err(_) => "connecting timed out".to_owned(),
    };
    skip_amqp(&format!("RabbitMQ is unreachable ({why})"));
    None
}

pub async fn bounded(test: impl Future<Output = ()>) {
    timeout(TEST_LIMIT, test)
        .await
        .expect("test did not finish in time");
}

pub async fn connect(url: &str) -> Bus {
    Bus::connect(url).await.expect("connect to the bus")
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Echoes its text.
#[derive(Debug, Serialize, Deserialize)]
pub struct Echo {
    pub text: String,
}
impl Rpc for Echo {
    const METHOD: &'static str = "test.echo";
    type Reply = String;
}

/// Same method as [`Echo`], arguments of the wrong shape.
#[derive(Debug, Serialize, Deserialize)]
pub struct EchoBadArgs {
    pub text: Vec<u64>,
}
impl Rpc for EchoBadArgs {
    const METHOD: &'static str = "test.echo";
    type Reply = String;
}

/// Sleeps, then replies.
#[derive(Debug, Serialize, Deserialize)]
pub struct Sleep {
    pub ms: u64,
}
impl Rpc for Sleep {
    const METHOD: &'static str = "test.sleep";
    type Reply = ();
}

/// Fails with the given error.
#[derive(Debug, Serialize, Deserialize)]
pub struct Fail {
    pub kind: String,
    pub message: String,
}
impl Rpc for Fail {
    const METHOD: &'static str = "test.fail";
    type Reply = ();
}

/// Replies with the server's name.
#[derive(Debug, Serialize, Deserialize)]
pub struct WhoAmI {}
impl Rpc for WhoAmI {
    const METHOD: &'static str = "test.whoami";
    type Reply = String;
}

/// Reported to the test as `(server, seq)` by whichever server gets it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Note {
    pub seq: u32,
}
impl Rpc for Note {
    const METHOD: &'static str = "test.note";
    type Reply = ();
}

/// No server handles this.
#[derive(Debug, Serialize, Deserialize)]
pub struct Unhandled {}
impl Rpc for Unhandled {
    const METHOD: &'static str = "test.unhandled";
    type Reply = ();
}

/// A server named `name` handling every test message; [`Note`]s are reported on `notes`.
pub fn dispatcher(name: &str, notes: mpsc::UnboundedSender<(String, u32)>) -> Dispatcher {
    let who = name.to_owned();
    let me = name.to_owned();
    Dispatcher::new()
        .on(|m: Echo| async move { Ok(m.text) })
        .on(|m: Sleep| async move {
            tokio::time::sleep(Duration::from_millis(m.ms)).await;
            Ok(())
        })
        .on(|m: Fail| async move { Err(RemoteError::new(m.kind, m.message)) })
        .on(move |_: WhoAmI| {
            let who = who.clone();
            async move { Ok(who) }
        })
        .on(move |m: Note| {
            let _ = notes.send((me.clone(), m.seq));
            async { Ok(()) }
        })
}

/// Receives until `expected` items arrived or `within` passed, then keeps listening for `grace`
/// to catch extra (duplicate) deliveries.
pub async fn collect<T>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    expected: usize,
    within: Duration,
    grace: Duration,
) -> Vec<T> {
    let mut got = Vec::new();
    let deadline = Instant::now() + within;
    while got.len() < expected {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(item)) => got.push(item),
            Ok(None) | Err(_) => return got,
        }
    }
    let deadline = Instant::now() + grace;
    while let Ok(Some(item)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        got.push(item);
    }
    got
}
