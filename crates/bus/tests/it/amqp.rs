//! RabbitMQ only: recovery after the broker drops connections, and malformed wire messages.
//!
//! Connections are closed broker-side with `rabbitmqctl`, or through the management HTTP API
//! (`STRATUS_TEST_RABBITMQ_API`, default `http://guest:guest@127.0.0.1:15672`) where
//! `rabbitmqctl` is not available. Only this test's connections are closed, found by the
//! `connection_name` the test gives them, so other users of the broker are not disturbed.

use std::time::Duration;

use bus::{Bus, Error, Target};
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

use crate::support::{
    Echo, Note, Sleep, bounded, dispatcher, reachable_amqp_url, skip_amqp, unique,
};

/// `url` with `connection_name=name` added to its query.
fn named(url: &str, name: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}connection_name={name}")
}

/// Closes broker connections by client-provided name.
enum Killer {
    Rabbitmqctl,
    Management(Management),
}

impl Killer {
    async fn find() -> Option<Killer> {
        let probe = Command::new("rabbitmqctl")
            .args(["-q", "list_connections", "pid"])
            .output()
            .await;
        if probe.is_ok_and(|out| out.status.success()) {
            return Some(Killer::Rabbitmqctl);
        }
        let management = Management::from_env()?;
        match management.request("GET", "/api/overview").await {
            Ok((200, _)) => Some(Killer::Management(management)),
            _ => None,
        }
    }

    /// The broker's ids of the connections called `name`.
    async fn connections(&self, name: &str) -> Vec<String> {
        match self {
            Killer::Rabbitmqctl => {
                let out = Command::new("rabbitmqctl")
                    .args(["-q", "list_connections", "pid", "client_properties"])
                    .output()
                    .await
                    .expect("run rabbitmqctl list_connections");
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|line| line.contains(name))
                    .filter_map(|line| Some(line.split_whitespace().next()?.to_owned()))
                    .collect()
            }
            Killer::Management(api) => {
                let (status, body) = api
                    .request("GET", "/api/connections")
                    .await
                    .expect("list connections");
                assert_eq!(status, 200, "{body}");
                let connections: Vec<Value> = serde_json::from_str(&body).expect("connection list");
                connections
                    .iter()
                    .filter(|c| c["client_properties"]["connection_name"] == name)
                    .filter_map(|c| Some(c["name"].as_str()?.to_owned()))
                    .collect()
            }
        }
    }

    /// Closes a connection broker-side, as an operator or a broker failure would.
    async fn close(&self, connection: &str) {
        match self {
            Killer::Rabbitmqctl => {
                let status = Command::new("rabbitmqctl")
                    .args(["-q", "close_connection", connection, "test"])
                    .status()
                    .await
                    .expect("run rabbitmqctl close_connection");
                assert!(
                    status.success(),
                    "rabbitmqctl close_connection {connection} failed"
                );
            }
            Killer::Management(api) => {
                let path = format!("/api/connections/{}", percent_encode(connection));
                let (status, body) = api
                    .request("DELETE", &path)
                    .await
                    .expect("close connection");
                assert!(
                    status == 204 || status == 200,
                    "closing {connection}: {status} {body}"
                );
            }
        }
    }
}

/// Minimal client for the RabbitMQ management HTTP API (HTTP/1.0, basic auth, loopback).
struct Management {
    address: String,
    authorization: String,
}

impl Management {
    fn from_env() -> Option<Management> {
        let url = std::env::var("STRATUS_TEST_RABBITMQ_API")
            .unwrap_or_else(|_| "http://guest:guest@127.0.0.1:15672".into());
        let rest = url.strip_prefix("http://")?.trim_end_matches('/');
        let (credentials, address) = rest.rsplit_once('@')?;
        Some(Management {
            address: address.to_owned(),
            authorization: base64(credentials.as_bytes()),
        })
    }

    async fn request(&self, method: &str, path: &str) -> std::io::Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(&self.address),
        )
        .await??;
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: {}\r\nAuthorization: Basic {}\r\nX-Reason: test\r\n\r\n",
            self.address, self.authorization
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await??;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok((status, body.to_owned()))
    }
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let bytes = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn test_helpers() {
    assert_eq!(base64(b"guest:guest"), "Z3Vlc3Q6Z3Vlc3Q=");
    assert_eq!(base64(b"ab"), "YWI=");
    assert_eq!(
        percent_encode("127.0.0.1:5 -> x"),
        "127.0.0.1%3A5%20-%3E%20x"
    );
    assert_eq!(named("amqp://h/%2f", "n"), "amqp://h/%2f?connection_name=n");
    assert_eq!(
        named("amqp://h/%2f?heartbeat=5", "n"),
        "amqp://h/%2f?heartbeat=5&connection_name=n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_after_the_broker_drops_connections() {
    let Some(url) = reachable_amqp_url().await else {
        return;
    };
    let Some(killer) = Killer::find().await else {
        skip_amqp("neither rabbitmqctl nor the management API is available to close connections");
        return;
    };
    bounded(async {
        let name = unique("it-reconnect");
        let url = named(&url, &name);
        let (server_bus, client) = (
            Bus::connect(&url).await.unwrap(),
            Bus::connect(&url).await.unwrap(),
        );
        let topic = unique("reconnect");
        let target = Target::topic(&topic);
        let (tx, mut notes) = mpsc::unbounded_channel();
        let server = server_bus
            .serve(&topic, "host1", dispatcher("host1", tx))
            .await
            .unwrap();
        let pool = unique("pool");
        let mut stream = client.subscribe_notifications(&pool).await.unwrap();
        assert_eq!(
            client
                .call(
                    &target,
                    &Echo {
                        text: "before".into()
                    },
                    Duration::from_secs(10)
                )
                .await
                .unwrap(),
            "before"
        );

        let connections = killer.connections(&name).await;
        assert_eq!(
            connections.len(),
            2,
            "expected the two buses' connections, found {connections:?}"
        );

        // A call in flight while the connections go away: its handler outlasts the closing.
        let in_flight = tokio::spawn({
            let (client, target) = (client.clone(), target.clone());
            async move {
                client
                    .call(&target, &Sleep { ms: 4_000 }, Duration::from_secs(6))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Checked before the closing starts: on a loaded host the broker's management API may take seconds.
        assert!(
            !in_flight.is_finished(),
            "the in-flight call should still be running when the connections close"
        );
        for connection in &connections {
            killer.close(connection).await;
        }
        let outage = Instant::now();

        // It ends by its own timeout at the latest, whatever the outcome.
        let outcome = timeout(Duration::from_secs(7), in_flight)
            .await
            .expect("in-flight call outlived its timeout");
        eprintln!("call in flight during the outage: {:?}", outcome.unwrap());

        // Calls succeed again once both sides are back.
        let mut attempts = Vec::new();
        let recovered = loop {
            if outage.elapsed() > Duration::from_secs(30) {
                break false;
            }
            match client
                .call(
                    &target,
                    &Echo {
                        text: "after".into(),
                    },
                    Duration::from_secs(2),
                )
                .await
            {
                Ok(reply) => {
                    assert_eq!(reply, "after");
                    break true;
                }
                Err(error) => {
                    attempts.push(error.to_string());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        assert!(
            recovered,
            "no successful call within 30 s of the outage; errors: {attempts:?}"
        );
        eprintln!(
            "recovered after {:?} ({} failed attempts)",
            outage.elapsed(),
            attempts.len()
        );

        // Casts, fan-outs and notification pools are back too.
        client.cast(&target, &Note { seq: 1 }).await.unwrap();
        client.fanout(&topic, &Note { seq: 2 }).await.unwrap();
        let got = crate::support::collect(
            &mut notes,
            2,
            Duration::from_secs(10),
            Duration::from_millis(200),
        )
        .await;
        let mut seqs: Vec<u32> = got.iter().map(|(_, seq)| *seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, [1, 2]);

        let publisher = unique("reconnect");
        server_bus
            .notify(&publisher, "test.recovered", &json!({}))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let next = tokio::time::timeout_at(deadline, stream.next())
                .await
                .expect("notification after recovery");
            if next.expect("stream still open").publisher_id == publisher {
                break;
            }
        }

        client.delete_notification_pool(&pool).await.unwrap();
        server.stop().await;
        client.close().await;
        server_bus.close().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_rejected_not_fatal() {
    let Some(url) = reachable_amqp_url().await else {
        return;
    };
    bounded(async {
        let bus = Bus::connect(&url).await.unwrap();
        let topic = unique("malformed");
        let server = bus
            .serve(
                &topic,
                "host1",
                dispatcher("host1", mpsc::unbounded_channel().0),
            )
            .await
            .unwrap();
        let pool = unique("pool");
        let mut stream = bus.subscribe_notifications(&pool).await.unwrap();

        let raw = Connection::connect(&url, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = raw.create_channel().await.unwrap();
        let garbage: [&[u8]; 3] = [
            b"{not json",
            br#"{"version":"9.0","method":"test.echo","args":{}}"#,
            b"\xff\xfe",
        ];
        for body in garbage {
            for (exchange, key) in [
                ("stratus", topic.as_str()),
                ("stratus.notifications", "notifications.info"),
            ] {
                channel
                    .basic_publish(
                        exchange.into(),
                        key.into(),
                        BasicPublishOptions::default(),
                        body,
                        BasicProperties::default(),
                    )
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        }

        let target = Target::topic(&topic);
        assert_eq!(
            bus.call(
                &target,
                &Echo {
                    text: "still here".into()
                },
                Duration::from_secs(10)
            )
            .await
            .unwrap(),
            "still here"
        );

        let publisher = unique("malformed");
        bus.notify(&publisher, "test.valid", &json!({"ok": true}))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let next = tokio::time::timeout_at(deadline, stream.next())
                .await
                .expect("valid notification");
            let notification = next.expect("stream still open");
            if notification.publisher_id == publisher {
                assert_eq!(notification.payload, json!({"ok": true}));
                break;
            }
        }

        let _ = raw.close(200, "OK".into()).await;
        let result = bus
            .call(
                &Target::topic(unique("none")),
                &Echo { text: "x".into() },
                Duration::from_secs(5),
            )
            .await;
        assert!(matches!(result, Err(Error::NoListener(_))), "{result:?}");
        bus.delete_notification_pool(&pool).await.unwrap();
        server.stop().await;
        bus.close().await;
    })
    .await
}
