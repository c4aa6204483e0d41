//! Calls: replies, timeouts, errors, concurrency, and servers going away.

use std::time::Duration;

use bus::{Error, Target};
use futures::future::join_all;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::support::{
    Echo, EchoBadArgs, Fail, Sleep, Unhandled, WhoAmI, connect, dispatcher, unique,
};

const WAIT: Duration = Duration::from_secs(10);

bus_tests! {
    async fn call_returns_the_reply(url) {
        let (server_bus, client) = (connect(url).await, connect(url).await);
        let topic = unique("rpc");
        let server = server_bus.serve(&topic, "host1", dispatcher("host1", mpsc::unbounded_channel().0)).await.unwrap();

        let reply = client.call(&Target::topic(&topic), &Echo { text: "héllo".into() }, WAIT).await.unwrap();
        assert_eq!(reply, "héllo");
        let reply = client.call(&Target::server(&topic, "host1"), &WhoAmI {}, WAIT).await.unwrap();
        assert_eq!(reply, "host1");
        // Unit replies travel as well.
        client.call(&Target::topic(&topic), &Sleep { ms: 0 }, WAIT).await.unwrap();

        server.stop().await;
        client.close().await;
        server_bus.close().await;
    }

    async fn call_times_out_when_no_reply_comes(url) {
        let bus = connect(url).await;
        let topic = unique("rpc");
        let server = bus.serve(&topic, "host1", dispatcher("host1", mpsc::unbounded_channel().0)).await.unwrap();

        let started = Instant::now();
        let result = bus.call(&Target::topic(&topic), &Sleep { ms: 3_000 }, Duration::from_millis(300)).await;
        assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2), "{elapsed:?}");

        // The late reply is dropped, and the bus keeps working.
        assert_eq!(bus.call(&Target::topic(&topic), &Echo { text: "after".into() }, WAIT).await.unwrap(), "after");
        server.stop().await;
        bus.close().await;
    }

    async fn handler_errors_reach_the_caller(url) {
        let (server_bus, client) = (connect(url).await, connect(url).await);
        let topic = unique("rpc");
        let server = server_bus.serve(&topic, "host1", dispatcher("host1", mpsc::unbounded_channel().0)).await.unwrap();
        let target = Target::topic(&topic);

        let fail = Fail { kind: "NotFound".into(), message: "no such instance".into() };
        match client.call(&target, &fail, WAIT).await {
            Err(Error::Remote { kind, message }) => {
                assert_eq!(kind, "NotFound");
                assert_eq!(message, "no such instance");
            }
            other => panic!("expected a remote error, got {other:?}"),
        }
        match client.call(&target, &Unhandled {}, WAIT).await {
            Err(Error::Remote { kind, .. }) => assert_eq!(kind, "NoSuchMethod"),
            other => panic!("expected NoSuchMethod, got {other:?}"),
        }
        match client.call(&target, &EchoBadArgs { text: vec![1] }, WAIT).await {
            Err(Error::Remote { kind, .. }) => assert_eq!(kind, "InvalidArguments"),
            other => panic!("expected InvalidArguments, got {other:?}"),
        }
        // None of that hurt the server.
        assert_eq!(client.call(&target, &Echo { text: "ok".into() }, WAIT).await.unwrap(), "ok");

        server.stop().await;
        client.close().await;
        server_bus.close().await;
    }

    async fn call_without_listener_fails_fast(url) {
        let bus = connect(url).await;
        let topic = unique("nobody");
        let started = Instant::now();
        for target in [Target::topic(&topic), Target::server(&topic, "host1")] {
            let result = bus.call(&target, &Echo { text: "x".into() }, WAIT).await;
            assert!(matches!(result, Err(Error::NoListener(_))), "{target}: {result:?}");
        }
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        bus.close().await;
    }

    async fn concurrent_calls_are_all_answered(url) {
        let (server_bus, client) = (connect(url).await, connect(url).await);
        let topic = unique("rpc");
        let server = server_bus.serve(&topic, "host1", dispatcher("host1", mpsc::unbounded_channel().0)).await.unwrap();
        let target = Target::topic(&topic);

        let calls = (0..200).map(|i| {
            let (client, target) = (client.clone(), target.clone());
            async move { (i, client.call(&target, &Echo { text: format!("message {i}") }, Duration::from_secs(30)).await) }
        });
        for (i, reply) in join_all(calls).await {
            assert_eq!(reply.unwrap(), format!("message {i}"));
        }

        server.stop().await;
        client.close().await;
        server_bus.close().await;
    }

    async fn slow_handler_does_not_block_others(url) {
        let (server_bus, client) = (connect(url).await, connect(url).await);
        let topic = unique("rpc");
        let server = server_bus.serve(&topic, "host1", dispatcher("host1", mpsc::unbounded_channel().0)).await.unwrap();
        let target = Target::topic(&topic);

        let slow = tokio::spawn({
            let (client, target) = (client.clone(), target.clone());
            async move { client.call(&target, &Sleep { ms: 3_000 }, WAIT).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        assert_eq!(client.call(&target, &Echo { text: "quick".into() }, WAIT).await.unwrap(), "quick");
        assert!(started.elapsed() < Duration::from_secs(1), "quick call waited {:?}", started.elapsed());
        assert!(!slow.is_finished());
        slow.await.unwrap().unwrap();

        server.stop().await;
        client.close().await;
        server_bus.close().await;
    }

    async fn stopped_server_no_longer_answers(url) {
        let (server_bus, client) = (connect(url).await, connect(url).await);
        let topic = unique("rpc");
        let server = server_bus.serve(&topic, "host1", dispatcher("host1", mpsc::unbounded_channel().0)).await.unwrap();
        let target = Target::topic(&topic);
        assert_eq!(client.call(&target, &Echo { text: "up".into() }, WAIT).await.unwrap(), "up");

        // Stopping waits for the handlers already running, which still reply.
        let running = tokio::spawn({
            let (client, target) = (client.clone(), target.clone());
            async move { client.call(&target, &Sleep { ms: 500 }, WAIT).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stopping = Instant::now();
        server.stop().await;
        assert!(stopping.elapsed() >= Duration::from_millis(200), "stop returned after {:?}, before the handler finished", stopping.elapsed());
        running.await.unwrap().unwrap();

        for target in [target, Target::server(&topic, "host1")] {
            let result = client.call(&target, &Echo { text: "down".into() }, Duration::from_secs(1)).await;
            assert!(matches!(result, Err(Error::NoListener(_) | Error::Timeout)), "{target}: {result:?}");
        }
        client.close().await;
        server_bus.close().await;
    }

    async fn closed_bus_refuses_work(url) {
        let bus = connect(url).await;
        let topic = unique("rpc");
        let server = bus.serve(&topic, "host1", dispatcher("host1", mpsc::unbounded_channel().0)).await.unwrap();
        let pending = tokio::spawn({
            let bus = bus.clone();
            let target = Target::topic(&topic);
            async move { bus.call(&target, &Sleep { ms: 1_500 }, WAIT).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        bus.close().await;

        let result = pending.await.unwrap();
        assert!(matches!(result, Err(Error::Closed)), "{result:?}");
        let result = bus.cast(&Target::topic(&topic), &Echo { text: "x".into() }).await;
        assert!(matches!(result, Err(Error::Closed)), "{result:?}");
        assert!(matches!(bus.serve(&topic, "host2", crate::support::dispatcher("host2", mpsc::unbounded_channel().0)).await, Err(Error::Closed)));
        server.stop().await;
    }
}
