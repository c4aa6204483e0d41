//! Notifications: the oslo-style envelope and the stream a notification pool delivers.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::Error;
use crate::transport::{Incoming, ListenId, Transport};

/// A notification, in the envelope oslo.messaging uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Unique id of this notification.
    pub message_id: String,
    /// Who sent it, e.g. `compute.host1`.
    pub publisher_id: String,
    /// What happened, e.g. `compute.instance.create.end`.
    pub event_type: String,
    /// Always `INFO` for notifications sent by [`crate::Bus::notify`].
    pub priority: String,
    /// Event-specific body.
    pub payload: Value,
    /// UTC time of sending, formatted `YYYY-MM-DD HH:MM:SS.ffffff` like oslo.
    pub timestamp: String,
}

impl Notification {
    pub(crate) fn new<T: Serialize>(
        publisher_id: &str,
        event_type: &str,
        payload: &T,
    ) -> Result<Self, Error> {
        Ok(Notification {
            message_id: uuid::Uuid::new_v4().to_string(),
            publisher_id: publisher_id.to_owned(),
            event_type: event_type.to_owned(),
            priority: "INFO".to_owned(),
            payload: serde_json::to_value(payload)?,
            timestamp: chrono::Utc::now()
                .format("%Y-%m-%d %H:%M:%S%.6f")
                .to_string(),
        })
    }

    pub(crate) fn encode(&self) -> Result<Vec<u8>, Error> {
        Ok(serde_json::to_vec(self)?)
    }

    /// The payload decoded as `T`.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(T::deserialize(&self.payload)?)
    }
}

/// The notifications of one pool, as received by one subscriber.
///
/// Dropping the stream unsubscribes.
pub struct NotificationStream {
    pool: String,
    incoming: UnboundedReceiver<Incoming>,
    transport: Arc<dyn Transport>,
    id: ListenId,
}

impl std::fmt::Debug for NotificationStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationStream")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl NotificationStream {
    pub(crate) fn new(
        pool: String,
        incoming: UnboundedReceiver<Incoming>,
        transport: Arc<dyn Transport>,
        id: ListenId,
    ) -> Self {
        Self {
            pool,
            incoming,
            transport,
            id,
        }
    }

    /// The next notification, or `None` once the subscription has ended (bus closed or pool
    /// deleted). Malformed messages are logged and dropped.
    pub async fn next(&mut self) -> Option<Notification> {
        loop {
            let incoming = self.incoming.recv().await?;
            match serde_json::from_slice::<Notification>(&incoming.body) {
                Ok(notification) => {
                    incoming.accept().await;
                    return Some(notification);
                }
                Err(error) => {
                    tracing::warn!(pool = %self.pool, %error, "dropping malformed notification");
                    incoming.reject().await;
                }
            }
        }
    }
}

impl Drop for NotificationStream {
    fn drop(&mut self) {
        let transport = self.transport.clone();
        let id = self.id;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { transport.unlisten(id).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_matches_oslo() {
        let n = Notification::new(
            "compute.host1",
            "compute.instance.create.end",
            &serde_json::json!({"id": 7}),
        )
        .unwrap();
        let value: Value = serde_json::from_slice(&n.encode().unwrap()).unwrap();
        for key in [
            "message_id",
            "publisher_id",
            "event_type",
            "priority",
            "payload",
            "timestamp",
        ] {
            assert!(value.get(key).is_some(), "missing {key}");
        }
        assert_eq!(value["priority"], "INFO");
        // e.g. 2025-01-31 12:34:56.123456
        let ts = value["timestamp"].as_str().unwrap();
        assert!(
            chrono::NaiveDateTime::parse_from_str(ts, "%Y-%m-%d %H:%M:%S%.6f").is_ok(),
            "{ts}"
        );
        assert_eq!(ts.len(), 26, "{ts}");
        assert_eq!(
            n.payload_as::<serde_json::Map<String, Value>>().unwrap()["id"],
            7
        );
    }
}
