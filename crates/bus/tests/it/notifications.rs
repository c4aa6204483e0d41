//! Notifications: envelope, and each pool getting each notification once.

use std::collections::BTreeSet;
use std::time::Duration;

use bus::{Bus, Notification, NotificationStream};
use serde_json::json;
use tokio::sync::mpsc;

use crate::support::{collect, connect, unique};

/// Forwards the notifications of `publisher` that `stream` receives, tagged with `who`.
fn drain(
    mut stream: NotificationStream,
    publisher: String,
    who: &'static str,
) -> mpsc::UnboundedReceiver<(&'static str, Notification)> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        // Ends when the stream does, or when the test drops the receiver.
        while let Some(notification) = stream.next().await {
            // The exchange is shared with every other test: keep only ours.
            if notification.publisher_id == publisher && tx.send((who, notification)).is_err() {
                break;
            }
        }
    });
    rx
}

/// Merges receivers into one.
fn merge<T: Send + 'static>(
    receivers: Vec<mpsc::UnboundedReceiver<T>>,
) -> mpsc::UnboundedReceiver<T> {
    let (tx, rx) = mpsc::unbounded_channel();
    for mut receiver in receivers {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(item) = receiver.recv().await {
                if tx.send(item).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

bus_tests! {
    async fn each_pool_gets_each_notification_once(url) {
        let (publisher_bus, a1_bus, a2_bus, b_bus) = (connect(url).await, connect(url).await, connect(url).await, connect(url).await);
        let publisher = unique("compute.host1");
        let (pool_a, pool_b) = (unique("pool-a"), unique("pool-b"));

        // Pool A has two competing subscribers, pool B one.
        let a1 = drain(a1_bus.subscribe_notifications(&pool_a).await.unwrap(), publisher.clone(), "a1");
        let a2 = drain(a2_bus.subscribe_notifications(&pool_a).await.unwrap(), publisher.clone(), "a2");
        let mut b = drain(b_bus.subscribe_notifications(&pool_b).await.unwrap(), publisher.clone(), "b");
        let mut a = merge(vec![a1, a2]);

        for i in 0..20 {
            publisher_bus.notify(&publisher, "compute.instance.create.end", &json!({"instance_id": i})).await.unwrap();
        }

        let within = Duration::from_secs(10);
        let grace = Duration::from_millis(500);
        for (pool, got) in [("A", collect(&mut a, 20, within, grace).await), ("B", collect(&mut b, 20, within, grace).await)] {
            assert_eq!(got.len(), 20, "pool {pool} got {} notifications", got.len());
            let ids: BTreeSet<&str> = got.iter().map(|(_, n)| n.message_id.as_str()).collect();
            assert_eq!(ids.len(), 20, "pool {pool} got duplicates");
            let mut instances: Vec<u64> = got.iter().map(|(_, n)| n.payload["instance_id"].as_u64().unwrap()).collect();
            instances.sort_unstable();
            assert_eq!(instances, (0..20).collect::<Vec<_>>());
            for (_, n) in &got {
                assert_eq!(n.event_type, "compute.instance.create.end");
                assert_eq!(n.priority, "INFO");
                assert_eq!(n.timestamp.len(), "2025-01-01 00:00:00.000000".len(), "{}", n.timestamp);
            }
            if pool == "A" {
                // Both subscribers of the pool took part.
                let who: BTreeSet<&str> = got.iter().map(|(who, _)| *who).collect();
                assert_eq!(who, BTreeSet::from(["a1", "a2"]));
            }
        }

        for (bus, pool) in [(&a1_bus, &pool_a), (&b_bus, &pool_b)] {
            bus.delete_notification_pool(pool).await.unwrap();
        }
        for bus in [publisher_bus, a1_bus, a2_bus, b_bus] {
            bus.close().await;
        }
    }

    async fn deleting_a_pool_ends_its_streams(url) {
        let bus: Bus = connect(url).await;
        let pool = unique("pool");
        let mut stream = bus.subscribe_notifications(&pool).await.unwrap();
        bus.delete_notification_pool(&pool).await.unwrap();
        let next = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("stream should end");
        assert!(next.is_none());
        // Deleting again is fine.
        bus.delete_notification_pool(&pool).await.unwrap();
        bus.close().await;
    }
}
