//! The discovery state of every namespace and the streams watching it.
//!
//! Each namespace has one [`NamespaceState`] and a version that grows by one
//! per change. A watcher gets the state as a snapshot, then every change as
//! a diff, through a bounded buffer: publishing never waits for a stream. A
//! stream whose buffer is full has fallen behind; it is dropped (the proxy
//! reconnects and gets a fresh snapshot) rather than let its backlog grow
//! the operator's memory. Messages are shared (`Arc`) by every stream of a
//! namespace, so a change costs one message however many proxies watch.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::Stream;
use grpc_balancer_discovery_api::v1::{Endpoint, EndpointSet, WatchResponse};
use tokio::sync::{mpsc, watch};

/// What the proxies of one namespace are told.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceState {
    /// The proxy config document ("" when the namespace has no balancing).
    pub config: String,
    /// Endpoints by the headless Service's DNS name, sorted by address.
    pub endpoint_sets: BTreeMap<String, Vec<Endpoint>>,
}

/// Why a watch stream ended without the server shutting down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamEnd {
    #[error("the stream fell more than {0} messages behind; reconnect for a fresh snapshot")]
    TooSlow(usize),
}

/// Shared by the feed (publishing) and the server (subscribing).
/// What one publication did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The namespace's new version.
    pub version: u64,
    /// Streams dropped because their buffer was full.
    pub slow_dropped: u64,
}

pub struct Hub {
    epoch: String,
    buffer: usize,
    namespaces: Mutex<HashMap<String, Namespace>>,
    ready: watch::Sender<bool>,
}

#[derive(Default)]
struct Namespace {
    version: u64,
    state: NamespaceState,
    observed_at_unix_ms: i64,
    subscribers: Vec<Subscriber>,
}

struct Subscriber {
    tx: mpsc::Sender<Arc<WatchResponse>>,
    too_slow: Arc<AtomicBool>,
}

/// One proxy's view of its namespace: the snapshot, then changes.
pub struct Subscription {
    rx: mpsc::Receiver<Arc<WatchResponse>>,
    too_slow: Arc<AtomicBool>,
    buffer: usize,
    ended: bool,
}

impl Hub {
    /// `epoch` names this server instance in every message; `buffer` is the
    /// per-stream limit of waiting messages.
    pub fn new(epoch: String, buffer: usize) -> Hub {
        Hub {
            epoch,
            buffer: buffer.max(1),
            namespaces: Mutex::new(HashMap::new()),
            ready: watch::Sender::new(false),
        }
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Called once the feed has listed everything: before that a snapshot
    /// would tell proxies of endpoints missing that are only not listed yet.
    pub fn set_ready(&self) {
        self.ready.send_replace(true);
    }

    pub async fn wait_ready(&self) {
        let mut ready = self.ready.subscribe();
        // An Err means the sender is gone, which `self` being alive rules out.
        let _ = ready.wait_for(|r| *r).await;
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Namespace>> {
        // A panic while holding the lock leaves a valid map behind: every
        // update of it is a single assignment or push.
        self.namespaces
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Namespaces that have a state or a watcher.
    pub fn namespaces(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Streams currently watching.
    pub fn streams(&self) -> usize {
        self.lock().values().map(|n| n.subscribers.len()).sum()
    }

    /// The namespace's version (0: nothing published yet).
    pub fn version(&self, namespace: &str) -> u64 {
        self.lock().get(namespace).map_or(0, |n| n.version)
    }

    /// Makes `state` the namespace's state, observed at `observed_at`, and
    /// sends the difference to its watchers. Returns the new version, or
    /// `None` when nothing changed. Streams that cannot take the message
    /// are dropped (counted in the answer).
    pub fn publish(
        &self,
        namespace: &str,
        state: NamespaceState,
        observed_at: SystemTime,
    ) -> Option<Published> {
        let mut namespaces = self.lock();
        let entry = namespaces.entry(namespace.to_owned()).or_default();
        let diff = diff(&entry.state, &state)?;
        entry.version += 1;
        entry.state = state;
        entry.observed_at_unix_ms = unix_ms(observed_at);
        let message = Arc::new(WatchResponse {
            epoch: self.epoch.clone(),
            version: entry.version,
            snapshot: false,
            config: diff.config,
            endpoint_sets: diff.upserts,
            removed_services: diff.removed,
            observed_at_unix_ms: entry.observed_at_unix_ms,
        });
        let mut slow_dropped = 0;
        entry
            .subscribers
            .retain(|s| match s.tx.try_send(message.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    s.too_slow.store(true, Ordering::Relaxed);
                    slow_dropped += 1;
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        let version = entry.version;
        if entry.subscribers.is_empty() && entry.state == NamespaceState::default() {
            // Nothing to remember: a namespace that had balancings and has
            // none now keeps no entry (its next state starts a new count,
            // which watchers never see: they would be in `subscribers`).
            namespaces.remove(namespace);
        }
        Some(Published {
            version,
            slow_dropped,
        })
    }

    /// Starts a stream of `namespace`: its first message is the snapshot.
    pub fn subscribe(&self, namespace: &str) -> Subscription {
        let (tx, rx) = mpsc::channel(self.buffer);
        let too_slow = Arc::new(AtomicBool::new(false));
        let mut namespaces = self.lock();
        let entry = namespaces.entry(namespace.to_owned()).or_default();
        let snapshot = WatchResponse {
            epoch: self.epoch.clone(),
            version: entry.version,
            snapshot: true,
            config: Some(entry.state.config.clone()),
            endpoint_sets: entry
                .state
                .endpoint_sets
                .iter()
                .map(|(service, endpoints)| EndpointSet {
                    service: service.clone(),
                    endpoints: endpoints.clone(),
                })
                .collect(),
            removed_services: Vec::new(),
            observed_at_unix_ms: entry.observed_at_unix_ms,
        };
        // The channel is new and holds at least one message.
        if tx.try_send(Arc::new(snapshot)).is_ok() {
            entry.subscribers.push(Subscriber {
                tx,
                too_slow: too_slow.clone(),
            });
        }
        Subscription {
            rx,
            too_slow,
            buffer: self.buffer,
            ended: false,
        }
    }

    /// Ends every stream (the server is stopping: its proxies reconnect to
    /// another replica, and the graceful shutdown does not wait on streams
    /// that never end by themselves).
    pub fn close_all(&self) {
        for namespace in self.lock().values_mut() {
            namespace.subscribers.clear();
        }
    }

    /// Drops streams whose receiver is gone (their proxies disconnected
    /// while nothing was published), so a namespace without changes does
    /// not keep dead senders.
    pub fn prune(&self) {
        let mut namespaces = self.lock();
        namespaces.retain(|_, n| {
            n.subscribers.retain(|s| !s.tx.is_closed());
            !n.subscribers.is_empty() || n.state != NamespaceState::default()
        });
    }
}

impl Stream for Subscription {
    type Item = Result<Arc<WatchResponse>, StreamEnd>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(message)) => Poll::Ready(Some(Ok(message))),
            Poll::Ready(None) => {
                self.ended = true;
                if self.too_slow.load(Ordering::Relaxed) {
                    Poll::Ready(Some(Err(StreamEnd::TooSlow(self.buffer))))
                } else {
                    Poll::Ready(None)
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// What changed between two states.
#[derive(Debug, Default, PartialEq)]
struct Diff {
    config: Option<String>,
    upserts: Vec<EndpointSet>,
    removed: Vec<String>,
}

fn diff(old: &NamespaceState, new: &NamespaceState) -> Option<Diff> {
    let mut diff = Diff::default();
    if old.config != new.config {
        diff.config = Some(new.config.clone());
    }
    for (service, endpoints) in &new.endpoint_sets {
        if old.endpoint_sets.get(service) != Some(endpoints) {
            diff.upserts.push(EndpointSet {
                service: service.clone(),
                endpoints: endpoints.clone(),
            });
        }
    }
    diff.removed = old
        .endpoint_sets
        .keys()
        .filter(|s| !new.endpoint_sets.contains_key(*s))
        .cloned()
        .collect();
    (diff != Diff::default()).then_some(diff)
}

pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis()
        .try_into()
        .unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;

    use super::*;

    fn endpoint(address: &str) -> Endpoint {
        Endpoint {
            address: address.into(),
            pod_name: format!("pod-{address}"),
            zone: "z1".into(),
            ready: true,
            serving: true,
            terminating: false,
        }
    }

    fn state(config: &str, sets: &[(&str, &[&str])]) -> NamespaceState {
        NamespaceState {
            config: config.into(),
            endpoint_sets: sets
                .iter()
                .map(|(s, addrs)| (s.to_string(), addrs.iter().map(|a| endpoint(a)).collect()))
                .collect(),
        }
    }

    async fn next(sub: &mut Subscription) -> Arc<WatchResponse> {
        tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("a message in time")
            .expect("stream open")
            .expect("not dropped")
    }

    #[tokio::test]
    async fn snapshot_then_changes_with_growing_versions() {
        let hub = Hub::new("e1".into(), 8);
        let now = SystemTime::now();
        assert_eq!(
            hub.publish("a", state("cfg1", &[("s1", &["10.0.0.1:1"])]), now),
            Some(Published {
                version: 1,
                slow_dropped: 0
            })
        );
        let mut sub = hub.subscribe("a");
        let snap = next(&mut sub).await;
        assert!(snap.snapshot);
        assert_eq!((snap.epoch.as_str(), snap.version), ("e1", 1));
        assert_eq!(snap.config.as_deref(), Some("cfg1"));
        assert_eq!(snap.endpoint_sets.len(), 1);

        // Endpoints change, config does not: only the set is sent.
        hub.publish(
            "a",
            state("cfg1", &[("s1", &["10.0.0.1:1", "10.0.0.2:1"])]),
            now,
        );
        let change = next(&mut sub).await;
        assert!(!change.snapshot);
        assert_eq!(change.version, 2);
        assert_eq!(change.config, None);
        assert_eq!(change.endpoint_sets[0].endpoints.len(), 2);

        // The same state again is no change and no message.
        assert_eq!(
            hub.publish(
                "a",
                state("cfg1", &[("s1", &["10.0.0.1:1", "10.0.0.2:1"])]),
                now
            ),
            None
        );
        // A removed service and a new config.
        hub.publish("a", state("cfg2", &[]), now);
        let change = next(&mut sub).await;
        assert_eq!(change.version, 3);
        assert_eq!(change.config.as_deref(), Some("cfg2"));
        assert_eq!(change.removed_services, vec!["s1".to_string()]);
    }

    #[tokio::test]
    async fn a_stream_sees_only_its_namespace() {
        let hub = Hub::new("e".into(), 8);
        let mut a = hub.subscribe("a");
        let snap = next(&mut a).await;
        assert_eq!((snap.version, snap.config.as_deref()), (0, Some("")));
        hub.publish(
            "b",
            state("secret", &[("b-svc", &["10.1.1.1:1"])]),
            SystemTime::now(),
        );
        hub.publish("a", state("mine", &[]), SystemTime::now());
        let change = next(&mut a).await;
        assert_eq!(change.config.as_deref(), Some("mine"));
        assert!(change.endpoint_sets.is_empty());
    }

    #[tokio::test]
    async fn a_slow_reader_is_dropped_and_the_others_go_on() {
        let hub = Hub::new("e".into(), 4);
        let mut slow = hub.subscribe("a");
        let mut fast = hub.subscribe("a");
        let mut dropped = 0;
        for i in 0..20 {
            let published = hub
                .publish("a", state(&format!("cfg{i}"), &[]), SystemTime::now())
                .expect("a change");
            dropped += published.slow_dropped;
            // The fast reader keeps up.
            let _ = next(&mut fast).await;
            if i == 0 {
                let _ = next(&mut fast).await; // the snapshot was first
            }
        }
        // The slow one gets what was buffered, then a clear end.
        let mut got = 0;
        let end = loop {
            match tokio::time::timeout(Duration::from_secs(5), slow.next())
                .await
                .expect("no hang")
            {
                Some(Ok(_)) => got += 1,
                Some(Err(e)) => break e,
                None => panic!("ended without saying why"),
            }
        };
        assert_eq!(end, StreamEnd::TooSlow(4));
        assert_eq!(got, 4, "exactly the buffer's worth was kept");
        assert_eq!(dropped, 1, "counted once, when it was dropped");
        assert!(slow.next().await.is_none());
        assert_eq!(hub.streams(), 1, "only the fast stream is left");
    }

    #[tokio::test]
    async fn closed_streams_are_pruned() {
        let hub = Hub::new("e".into(), 4);
        let sub = hub.subscribe("a");
        assert_eq!(hub.streams(), 1);
        drop(sub);
        hub.prune();
        assert_eq!(hub.streams(), 0);
        assert!(hub.namespaces().is_empty());
    }
}
