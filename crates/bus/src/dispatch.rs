//! Server side: handler registry ([`Dispatcher`]) and the loop that runs handlers for a server.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::transport::{Incoming, ListenId, Transport};
use crate::{Rpc, wire};

/// Most handlers of one server running at once; further messages wait (on AMQP, in the broker).
const MAX_IN_FLIGHT: usize = 256;

/// An error a handler reports back to the caller, who sees it as [`crate::Error::Remote`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct RemoteError {
    /// Error class, e.g. `NotFound` or `Conflict`.
    pub kind: String,
    /// Human-readable detail.
    pub message: String,
}

impl RemoteError {
    /// An error of class `kind`.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

type Handler = Arc<dyn Fn(Value) -> BoxFuture<'static, Result<Value, RemoteError>> + Send + Sync>;

/// The handlers a server offers, one per [`Rpc::METHOD`].
#[derive(Clone, Default)]
pub struct Dispatcher {
    handlers: HashMap<&'static str, Handler>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.handlers.keys()).finish()
    }
}

impl Dispatcher {
    /// A dispatcher without handlers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles messages of type `M` with `f`, replacing any earlier handler for `M::METHOD`.
    pub fn on<M, F, Fut>(mut self, f: F) -> Self
    where
        M: Rpc,
        F: Fn(M) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<M::Reply, RemoteError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let handler: Handler = Arc::new(move |args| {
            let f = f.clone();
            Box::pin(async move {
                let msg = M::deserialize(args).map_err(|e| {
                    RemoteError::new(
                        "InvalidArguments",
                        format!("cannot decode arguments of {}: {e}", M::METHOD),
                    )
                })?;
                let reply = f(msg).await?;
                serde_json::to_value(reply).map_err(|e| {
                    RemoteError::new(
                        "InternalError",
                        format!("cannot encode reply of {}: {e}", M::METHOD),
                    )
                })
            })
        });
        self.handlers.insert(M::METHOD, handler);
        self
    }

    /// Runs the handler for `method`; unknown methods and panics become remote errors.
    async fn dispatch(&self, method: &str, args: Value) -> Result<Value, RemoteError> {
        let Some(handler) = self.handlers.get(method).cloned() else {
            return Err(RemoteError::new(
                "NoSuchMethod",
                format!("no handler for method {method:?}"),
            ));
        };
        AssertUnwindSafe(async move { handler(args).await })
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                Err(RemoteError::new(
                    "InternalError",
                    format!("handler of {method:?} panicked"),
                ))
            })
    }
}

/// A running server. Stop it with [`ServerHandle::stop`]; dropping the handle also stops it, in
/// the background.
#[must_use = "dropping the handle stops the server"]
#[derive(Debug)]
pub struct ServerHandle {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// Stops receiving messages and waits for the handlers already running to finish (and reply).
    pub async fn stop(mut self) {
        self.stop.take();
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
        {
            tracing::error!(%error, "bus server task failed");
        }
    }
}

pub(crate) fn spawn_server(
    incoming: UnboundedReceiver<Incoming>,
    dispatcher: Dispatcher,
    transport: Arc<dyn Transport>,
    id: ListenId,
) -> ServerHandle {
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(serve(
        incoming,
        Arc::new(dispatcher),
        transport,
        id,
        stopped,
    ));
    ServerHandle {
        stop: Some(stop),
        task: Some(task),
    }
}

async fn serve(
    mut incoming: UnboundedReceiver<Incoming>,
    dispatcher: Arc<Dispatcher>,
    transport: Arc<dyn Transport>,
    id: ListenId,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut running = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            // Either an explicit stop or the handle was dropped.
            _ = &mut stopped => break,
            Some(done) = running.join_next() => {
                if let Err(error) = done {
                    tracing::error!(%error, "bus handler task failed");
                }
            }
            message = incoming.recv(), if running.len() < MAX_IN_FLIGHT => {
                let Some(message) = message else { break };
                let request = match wire::Request::decode(&message.body) {
                    Ok(request) => request,
                    Err(error) => {
                        tracing::warn!(%error, "rejecting malformed bus message");
                        message.reject().await;
                        continue;
                    }
                };
                message.accept().await;
                running.spawn(handle(request, dispatcher.clone(), transport.clone()));
            }
        }
    }
    // Unacknowledged messages go back to the broker for the topic's other servers.
    transport.unlisten(id).await;
    drop(incoming);
    while let Some(done) = running.join_next().await {
        if let Err(error) = done {
            tracing::error!(%error, "bus handler task failed");
        }
    }
}

async fn handle(
    request: wire::Request,
    dispatcher: Arc<Dispatcher>,
    transport: Arc<dyn Transport>,
) {
    let wire::Request {
        method,
        args,
        msg_id,
        reply_to,
        ..
    } = request;
    let outcome = dispatcher.dispatch(&method, args).await;
    let (Some(msg_id), Some(reply_to)) = (msg_id, reply_to) else {
        if let Err(error) = outcome {
            tracing::warn!(%method, %error, "cast handler failed");
        }
        return;
    };
    let sent = match wire::Reply::encode(&msg_id, outcome) {
        Ok(body) => transport.reply(&reply_to, body).await,
        Err(error) => Err(error),
    };
    if let Err(error) = sent {
        tracing::warn!(%method, %error, "cannot send reply");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Add {
        a: i64,
        b: i64,
    }
    impl Rpc for Add {
        const METHOD: &'static str = "add";
        type Reply = i64;
    }

    #[derive(Serialize, Deserialize)]
    struct Boom;
    impl Rpc for Boom {
        const METHOD: &'static str = "boom";
        type Reply = ();
    }

    fn dispatcher() -> Dispatcher {
        Dispatcher::new()
            .on(|m: Add| async move { Ok(m.a + m.b) })
            .on(|_: Boom| async move { panic!("boom") })
    }

    #[tokio::test]
    async fn dispatches_by_method() {
        let out = dispatcher()
            .dispatch("add", serde_json::json!({"a": 2, "b": 3}))
            .await;
        assert_eq!(out, Ok(Value::from(5)));
    }

    #[tokio::test]
    async fn unknown_methods_bad_arguments_and_panics_become_remote_errors() {
        let d = dispatcher();
        assert_eq!(
            d.dispatch("nope", Value::Null).await.unwrap_err().kind,
            "NoSuchMethod"
        );
        assert_eq!(
            d.dispatch("add", serde_json::json!({"a": "x"}))
                .await
                .unwrap_err()
                .kind,
            "InvalidArguments"
        );
        assert_eq!(
            d.dispatch("boom", Value::Null).await.unwrap_err().kind,
            "InternalError"
        );
    }
}
