//! Casts and fan-outs: who receives what.

use std::collections::BTreeMap;
use std::time::Duration;

use bus::{Error, Target};
use tokio::sync::mpsc;

use crate::support::{Note, collect, connect, dispatcher, unique};

const WITHIN: Duration = Duration::from_secs(10);
const GRACE: Duration = Duration::from_millis(300);

/// How many notes each server received.
fn per_server(notes: &[(String, u32)]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for (server, _) in notes {
        *counts.entry(server.as_str()).or_default() += 1;
    }
    counts
}

bus_tests! {
    async fn cast_round_robins_between_servers(url) {
        let (server_bus, client) = (connect(url).await, connect(url).await);
        let topic = unique("cast");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let one = server_bus.serve(&topic, "host1", dispatcher("host1", tx.clone())).await.unwrap();
        let two = server_bus.serve(&topic, "host2", dispatcher("host2", tx)).await.unwrap();

        for seq in 0..20 {
            client.cast(&Target::topic(&topic), &Note { seq }).await.unwrap();
        }
        let notes = collect(&mut rx, 20, WITHIN, GRACE).await;
        let mut seqs: Vec<u32> = notes.iter().map(|(_, seq)| *seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (0..20).collect::<Vec<_>>(), "each cast is handled exactly once");
        // Servers take turns.
        assert_eq!(per_server(&notes), BTreeMap::from([("host1", 10), ("host2", 10)]), "{notes:?}");

        one.stop().await;
        two.stop().await;
        client.close().await;
        server_bus.close().await;
    }

    async fn cast_to_a_named_server(url) {
        let (server_bus, client) = (connect(url).await, connect(url).await);
        let topic = unique("cast");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let one = server_bus.serve(&topic, "host1", dispatcher("host1", tx.clone())).await.unwrap();
        let two = server_bus.serve(&topic, "host2", dispatcher("host2", tx)).await.unwrap();

        for seq in 0..6 {
            client.cast(&Target::server(&topic, "host2"), &Note { seq }).await.unwrap();
        }
        let notes = collect(&mut rx, 6, WITHIN, GRACE).await;
        assert_eq!(per_server(&notes), BTreeMap::from([("host2", 6)]), "{notes:?}");

        let result = client.cast(&Target::server(&topic, "host3"), &Note { seq: 99 }).await;
        assert!(matches!(result, Err(Error::NoListener(_))), "{result:?}");

        one.stop().await;
        two.stop().await;
        client.close().await;
        server_bus.close().await;
    }

    async fn fanout_reaches_every_server(url) {
        let (server_bus, other_bus, client) = (connect(url).await, connect(url).await, connect(url).await);
        let topic = unique("fanout");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let servers = vec![
            server_bus.serve(&topic, "host1", dispatcher("host1", tx.clone())).await.unwrap(),
            server_bus.serve(&topic, "host2", dispatcher("host2", tx.clone())).await.unwrap(),
            other_bus.serve(&topic, "host3", dispatcher("host3", tx)).await.unwrap(),
        ];
        // A server of another topic hears nothing.
        let (other_tx, mut other_rx) = mpsc::unbounded_channel();
        let bystander = server_bus.serve(&unique("fanout"), "host1", dispatcher("host1", other_tx)).await.unwrap();

        client.fanout(&topic, &Note { seq: 7 }).await.unwrap();
        let notes = collect(&mut rx, 3, WITHIN, GRACE).await;
        assert_eq!(per_server(&notes), BTreeMap::from([("host1", 1), ("host2", 1), ("host3", 1)]), "{notes:?}");
        assert!(notes.iter().all(|(_, seq)| *seq == 7));
        assert!(other_rx.try_recv().is_err());

        // Nobody listening is not an error for a fan-out.
        client.fanout(&unique("fanout"), &Note { seq: 8 }).await.unwrap();

        for server in servers {
            server.stop().await;
        }
        bystander.stop().await;
        for bus in [client, other_bus, server_bus] {
            bus.close().await;
        }
    }
}
