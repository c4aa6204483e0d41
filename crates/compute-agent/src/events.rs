//! Waits for external events, as upstream's `InstanceEvents`: a build registers the events it expects
//! (`network-vif-plugged` of each port that was not `ACTIVE`) before it starts the guest, so an event that
//! arrives while the guest starts is not missed; the event's status is handed to the waiter. Events nobody
//! waits for are dropped (upstream logs them as unexpected).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio::sync::oneshot;

/// The event a build waits for per port.
pub const VIF_PLUGGED: &str = "network-vif-plugged";

/// The waiters of this agent, by instance and `<name>-<tag>`.
#[derive(Default)]
pub(crate) struct InstanceEvents {
    waiting: Mutex<HashMap<(String, String), oneshot::Sender<String>>>,
}

fn key(name: &str, tag: Option<&str>) -> String {
    match tag {
        Some(t) => format!("{name}-{t}"),
        None => name.to_owned(),
    }
}

impl InstanceEvents {
    /// Registers a wait for `name` of each of `tags` on instance `uuid`; each receiver gets the event's status.
    pub(crate) fn prepare(&self, uuid: &str, name: &str, tags: &[String]) -> Vec<(String, oneshot::Receiver<String>)> {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        tags.iter()
            .map(|t| {
                let (tx, rx) = oneshot::channel();
                waiting.insert((uuid.to_owned(), key(name, Some(t))), tx);
                (t.clone(), rx)
            })
            .collect()
    }

    /// Hands an event to its waiter; `false` when nobody waited for it.
    pub(crate) fn deliver(&self, uuid: &str, name: &str, tag: Option<&str>, status: &str) -> bool {
        let tx = self.waiting.lock().unwrap_or_else(PoisonError::into_inner).remove(&(uuid.to_owned(), key(name, tag)));
        tx.is_some_and(|tx| tx.send(status.to_owned()).is_ok())
    }

    /// Forgets every wait of `uuid` (the build ended).
    pub(crate) fn clear(&self, uuid: &str) {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner).retain(|(u, _), _| u != uuid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_event_reaches_its_waiter_only() {
        let events = InstanceEvents::default();
        let mut waits = events.prepare("i1", VIF_PLUGGED, &["p1".into(), "p2".into()]);
        assert!(!events.deliver("i2", VIF_PLUGGED, Some("p1"), "completed"));
        assert!(!events.deliver("i1", "network-vif-unplugged", Some("p1"), "completed"));
        assert!(events.deliver("i1", VIF_PLUGGED, Some("p1"), "completed"));
        assert!(!events.deliver("i1", VIF_PLUGGED, Some("p1"), "completed"), "delivered once");
        let (tag, rx) = waits.remove(0);
        assert_eq!((tag.as_str(), rx.await.unwrap().as_str()), ("p1", "completed"));
        events.clear("i1");
        assert!(!events.deliver("i1", VIF_PLUGGED, Some("p2"), "completed"));
        assert!(waits.remove(0).1.await.is_err(), "a cleared wait ends");
    }
}
