//! Behavioural tests of the bus.
//!
//! Every test in `rpc`, `cast` and `notifications` is written once and runs against both
//! transports, as `<test>::memory` and `<test>::amqp`. The AMQP variants use
//! `STRATUS_TEST_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`) and are skipped with a
//! note when RabbitMQ is unreachable, unless `STRATUS_TEST_REQUIRE_AMQP=1`. `amqp` holds tests
//! that only make sense on RabbitMQ (connection recovery, malformed wire messages).
//!
//! Topics and pools are unique per test, so tests run in parallel on one broker; queues are
//! auto-deleted or deleted by the test, so nothing is left behind.

/// Defines each test once and instantiates it per transport as `<name>::memory` and
/// `<name>::amqp`. The body gets the bus URL as `$url: &str`.
macro_rules! bus_tests {
    ($(async fn $name:ident($url:ident) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($url: &str) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                crate::support::bounded(run("memory://")).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn amqp() {
                if let Some(url) = crate::support::reachable_amqp_url().await {
                    crate::support::bounded(run(&url)).await
                }
            }
        }
    )*};
}

mod amqp;
mod cast;
mod notifications;
mod rpc;
mod support;
