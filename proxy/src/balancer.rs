//! A running balancing: its subsets, their endpoint sets kept current by
//! discovery, the policy, and the settings every call of it uses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use futures::StreamExt;
use grpc_balancer_crds::config;
use http::{HeaderMap, HeaderName};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::discovery::{Discover, Target, Update};
use crate::endpoint::{ConnState, Endpoint, OutlierSettings, SubsetShared, upkeep};
use crate::error::ProxyError;
use crate::metrics::{
    DiscoveryLabels, DiscoveryResult, LabelValue as _, LocalCallCounters, Metrics, RetryCounters,
};
use crate::policy::{EndpointSet, Policy};
use crate::resilience::health::{self, HealthSettings};
use crate::resilience::retry_budget::RetryBudget;
use crate::transport::client::ConnectSettings;
use crate::util::{random_u64, stable_hash};

/// Latency estimate of an endpoint with no sample and no peers to copy from.
const DEFAULT_RTT_NANOS: f64 = 1e6;
/// While waiting for an endpoint, re-check this often (ejections expire
/// without a wake-up).
const QUEUE_RECHECK: Duration = Duration::from_millis(50);

pub struct Subset {
    pub shared: Arc<SubsetShared>,
    pub weight: u32,
    /// Hash of the subset's name: its identity in the rendezvous order.
    seed: u64,
    pub set: Arc<ArcSwap<EndpointSet>>,
}

pub struct RetrySettings {
    pub max_attempts: u32,
    pub max_buffered_bytes: usize,
    /// Full method paths (`/pkg.Service/Method`), sorted: calls to them are
    /// also retried when a backend answers UNAVAILABLE or loses the stream
    /// before answering.
    pub idempotent_methods: Box<[Box<str>]>,
}

impl RetrySettings {
    pub fn is_idempotent(&self, path: &str) -> bool {
        !self.idempotent_methods.is_empty()
            && self
                .idempotent_methods
                .binary_search_by(|m| (**m).cmp(path))
                .is_ok()
    }
}

pub struct Balancing {
    name: Arc<str>,
    pub config: config::Balancing,
    policy: Policy,
    hash_header: Option<HeaderName>,
    pub subsets: Vec<Subset>,
    pub timeout: Option<Duration>,
    pub retry: RetrySettings,
    pub budget: RetryBudget,
    pub retry_counters: RetryCounters,
    /// Calls the proxy answers itself.
    pub local_calls: LocalCallCounters,
    max_pending: u32,
    max_wait: Duration,
    pending: AtomicU32,
    ready: Arc<Notify>,
    cancel: CancellationToken,
    /// The balancing that replaced this one (a config change): calls that
    /// still hold this one pick from it, so one that was about to redispatch
    /// or wait when the swap came does not wait on endpoints that are gone.
    successor: ArcSwapOption<Balancing>,
}

/// Result of one pick attempt.
pub enum Pick {
    Ready(Arc<Endpoint>),
    /// Endpoints exist (or discovery has not answered yet) but none is usable.
    NotReady,
    /// Discovery answered and no subset has any endpoint.
    NoEndpoints,
}

impl Balancing {
    /// Builds the balancing and starts discovery and connections; they stop
    /// with [`Balancing::stop`].
    pub fn start(
        cfg: &config::Balancing,
        discover: &Arc<dyn Discover>,
        metrics: &Metrics,
        connect: ConnectSettings,
    ) -> Arc<Balancing> {
        let name: Arc<str> = cfg.name.as_str().into();
        let ready = Arc::new(Notify::new());
        let cancel = CancellationToken::new();
        let outlier = OutlierSettings::from(&cfg.outlier_detection);
        let health = cfg.health_check.as_ref().map(HealthSettings::from);
        let mut subsets = Vec::with_capacity(cfg.subsets.len());
        for s in &cfg.subsets {
            let shared = Arc::new(SubsetShared::new(
                &name,
                &s.name,
                outlier,
                ready.clone(),
                metrics.clone(),
            ));
            let set = Arc::new(ArcSwap::from_pointee(EndpointSet::default()));
            let target = Target {
                discovery: s.discovery.clone(),
                refresh_now: shared.refresh_now.clone(),
            };
            let updates = discover.discover(target);
            tokio::spawn(run_subset(
                shared.clone(),
                set.clone(),
                updates,
                cfg.policy.kind,
                connect,
                health.clone(),
                cancel.child_token(),
            ));
            subsets.push(Subset {
                shared,
                weight: s.weight,
                seed: stable_hash(s.name.as_bytes()),
                set,
            });
        }
        Arc::new(Balancing {
            name,
            config: cfg.clone(),
            policy: Policy::new(cfg.policy.kind),
            hash_header: cfg
                .policy
                .header
                .as_deref()
                .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
            subsets,
            timeout: cfg.timeout.map(|t| t.as_std()),
            retry: RetrySettings {
                max_attempts: cfg.retries.max_attempts.max(1),
                max_buffered_bytes: cfg.retries.max_buffered_bytes as usize,
                idempotent_methods: {
                    let mut m: Vec<Box<str>> = cfg
                        .retries
                        .idempotent_methods
                        .iter()
                        .map(|m| m.as_str().into())
                        .collect();
                    m.sort_unstable();
                    m.dedup();
                    m.into_boxed_slice()
                },
            },
            budget: RetryBudget::new(
                cfg.retries.budget_percent,
                cfg.retries.min_retries_per_second,
            ),
            retry_counters: RetryCounters::new(&metrics.retries, &cfg.name),
            local_calls: LocalCallCounters::new(metrics.calls.clone(), &cfg.name),
            max_pending: cfg.queue.max_pending,
            max_wait: cfg.queue.max_wait.as_std(),
            pending: AtomicU32::new(0),
            ready,
            cancel,
            successor: ArcSwapOption::empty(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stops discovery, connections and health checks. Calls in flight keep
    /// their connections until they end.
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// Stops this balancing in favour of `next`, which takes its calls.
    pub fn replace_with(&self, next: Arc<Balancing>) {
        self.successor.store(Some(next));
        self.ready.notify_waiters();
        self.stop();
    }

    /// The ring-hash key of a call, if the policy uses one.
    pub fn hash_key(&self, headers: &HeaderMap) -> Option<u64> {
        let h = self.hash_header.as_ref()?;
        headers.get(h).map(|v| stable_hash(v.as_bytes()))
    }

    /// Picks a subset by weight among those with a usable endpoint, then an
    /// endpoint in it with the policy.
    pub fn pick(&self, hash: Option<u64>, avoid: Option<&Arc<Endpoint>>) -> Pick {
        if let Some(next) = &*self.successor.load() {
            return next.pick(hash, avoid);
        }
        if let [only] = self.subsets.as_slice() {
            let set = only.set.load();
            return match self.policy.pick(&set, hash, avoid) {
                Some(e) => Pick::Ready(e.clone()),
                None if set.endpoints.is_empty()
                    && only.shared.discovered.load(Ordering::Acquire) =>
                {
                    Pick::NoEndpoints
                }
                None => Pick::NotReady,
            };
        }
        // Subsets in the order of a weighted rendezvous hash of the call's
        // key: the ring-hash key when there is one, so every proxy sends a
        // key to the same subset while the weights stay; a random one
        // otherwise, which picks each subset with probability weight/total.
        // The next subset in that order takes over when one has nothing
        // usable, as far as needed, without any cap on the subset count.
        let key = hash.unwrap_or_else(random_u64);
        let mut last: Option<(f64, usize)> = None;
        for _ in 0..self.subsets.len() {
            let Some((score, i)) = self.next_subset(key, last) else {
                break;
            };
            last = Some((score, i));
            if let Some(e) = self.policy.pick(&self.subsets[i].set.load(), hash, avoid) {
                return Pick::Ready(e.clone());
            }
        }
        let all_empty = self.subsets.iter().filter(|s| s.weight > 0).all(|s| {
            s.shared.discovered.load(Ordering::Acquire) && s.set.load().endpoints.is_empty()
        });
        if all_empty {
            Pick::NoEndpoints
        } else {
            Pick::NotReady
        }
    }

    /// The subset after `after` in the rendezvous order of `key` (lowest
    /// score first, ties by index); the first one when `after` is `None`.
    fn next_subset(&self, key: u64, after: Option<(f64, usize)>) -> Option<(f64, usize)> {
        let mut best: Option<(f64, usize)> = None;
        for (i, s) in self.subsets.iter().enumerate() {
            if s.weight == 0 {
                continue;
            }
            let score = rendezvous_score(key, s.seed, s.weight);
            let later = after.is_none_or(|a| (score, i) > a);
            if later && best.is_none_or(|b| (score, i) < b) {
                best = Some((score, i));
            }
        }
        best
    }

    /// Picks an endpoint, waiting in the bounded queue while endpoints exist
    /// but none is ready, up to the queue's max wait or `deadline`.
    pub async fn pick_or_wait(
        &self,
        hash: Option<u64>,
        avoid: Option<&Arc<Endpoint>>,
        deadline: Option<Instant>,
    ) -> Result<Arc<Endpoint>, ProxyError> {
        // A pick that settles the wait: an endpoint, or none to wait for.
        let settled = || match self.pick(hash, avoid) {
            Pick::Ready(e) => Some(Ok(e)),
            Pick::NoEndpoints => Some(Err(ProxyError::NoEndpoints {
                balancing: self.name.to_string(),
            })),
            Pick::NotReady => None,
        };
        if let Some(result) = settled() {
            return result;
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(ProxyError::QueueFull {
                balancing: self.name.to_string(),
            });
        }
        let _slot = PendingSlot(&self.pending);
        let started = Instant::now();
        let give_up = started + self.max_wait;
        let until = deadline.map_or(give_up, |d| d.min(give_up));
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(result) = settled() {
                return result;
            }
            let now = Instant::now();
            if now >= until {
                return Err(if deadline.is_some_and(|d| d <= give_up) {
                    ProxyError::DeadlineExceeded {
                        balancing: self.name.to_string(),
                        after: now - started,
                    }
                } else {
                    ProxyError::NoReadyEndpoint {
                        balancing: self.name.to_string(),
                        waited: self.max_wait,
                    }
                });
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(until.min(now + QUEUE_RECHECK)) => {}
            }
        }
    }

    /// Waits (bounded) until every subset has heard from discovery and has a
    /// ready endpoint or no endpoint still connecting: a reloaded balancing
    /// is swapped in only once it can serve.
    pub async fn warm_up(&self, max: Duration) {
        let until = Instant::now() + max;
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let warm = self.subsets.iter().all(|s| {
                let set = s.set.load();
                s.shared.discovered.load(Ordering::Acquire)
                    && (set.endpoints.iter().any(|e| e.is_available())
                        || set
                            .endpoints
                            .iter()
                            .all(|e| e.state() != ConnState::Connecting))
            });
            if warm || Instant::now() >= until {
                return;
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(QUEUE_RECHECK) => {}
            }
        }
    }

    /// Calls waiting in the queue.
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }
}

impl Drop for Balancing {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Weighted rendezvous (highest random weight) score of a subset for a key:
/// `-ln(u) / weight` with `u` uniform in (0, 1) from the key and the subset.
/// The lowest score wins; these are exponential variables of rate `weight`,
/// so over random keys subset `i` wins with probability `w_i / sum(w)`, and
/// a weight change moves only the keys it must.
fn rendezvous_score(key: u64, seed: u64, weight: u32) -> f64 {
    let h = stable_hash(&(key ^ seed).to_le_bytes());
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -u.ln() / f64::from(weight)
}

struct PendingSlot<'a>(&'a AtomicU32);

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Running {
    endpoint: Arc<Endpoint>,
    stop: CancellationToken,
}

/// Applies discovery updates to a subset's endpoint set until cancelled.
async fn run_subset(
    shared: Arc<SubsetShared>,
    set: Arc<ArcSwap<EndpointSet>>,
    mut updates: crate::discovery::UpdateStream,
    policy: config::PolicyKind,
    connect: ConnectSettings,
    health: Option<HealthSettings>,
    cancel: CancellationToken,
) {
    let labels = |result: DiscoveryResult| DiscoveryLabels {
        balancing: shared.balancing.to_string(),
        subset: shared.name.to_string(),
        result: result.as_str().to_owned(),
    };
    let ok = shared
        .metrics
        .discovery_refreshes
        .get_or_create_owned(&labels(DiscoveryResult::Ok));
    let failed = shared
        .metrics
        .discovery_refreshes
        .get_or_create_owned(&labels(DiscoveryResult::Error));
    let mut running: BTreeMap<SocketAddr, Running> = BTreeMap::new();
    loop {
        let update = tokio::select! {
            u = updates.next() => u,
            () = cancel.cancelled() => break,
        };
        let update = match update {
            None => break,
            Some(Ok(u)) => {
                ok.inc();
                u
            }
            Some(Err(e)) => {
                failed.inc();
                tracing::warn!(balancing = %shared.balancing, subset = %shared.name, error = %e, "discovery failed; keeping the last endpoints");
                continue;
            }
        };
        let mut wanted: std::collections::BTreeSet<SocketAddr> = running.keys().copied().collect();
        match update {
            Update::Reset(addrs) => wanted = addrs.into_iter().collect(),
            Update::Add(addrs) => wanted.extend(addrs),
            Update::Remove(addrs) => {
                for a in addrs {
                    wanted.remove(&a);
                }
            }
        }
        let before = running.len();
        let removed: Vec<SocketAddr> = running
            .keys()
            .filter(|a| !wanted.contains(a))
            .copied()
            .collect();
        for addr in &removed {
            if let Some(r) = running.remove(addr) {
                r.stop.cancel();
            }
        }
        let initial_rtt = {
            let known: Vec<f64> = running
                .values()
                .map(|r| r.endpoint.rtt_estimate_nanos())
                .collect();
            if known.is_empty() {
                DEFAULT_RTT_NANOS
            } else {
                known.iter().sum::<f64>() / known.len() as f64
            }
        };
        let mut added = Vec::new();
        for addr in wanted {
            if running.contains_key(&addr) {
                continue;
            }
            let endpoint = Arc::new(Endpoint::new(addr, shared.clone(), initial_rtt));
            let stop = cancel.child_token();
            tokio::spawn(upkeep::maintain(endpoint.clone(), connect, stop.clone()));
            if let Some(h) = &health {
                tokio::spawn(health::run(endpoint.clone(), h.clone(), stop.clone()));
            }
            running.insert(addr, Running { endpoint, stop });
            added.push(addr);
        }
        shared.size.store(running.len() as u32, Ordering::Release);
        if !added.is_empty()
            || !removed.is_empty()
            || before != running.len()
            || !shared.discovered.load(Ordering::Acquire)
        {
            let endpoints = running.values().map(|r| r.endpoint.clone()).collect();
            set.store(Arc::new(EndpointSet::new(endpoints, policy)));
            if !added.is_empty() || !removed.is_empty() {
                tracing::info!(
                    balancing = %shared.balancing,
                    subset = %shared.name,
                    added = ?added,
                    removed = ?removed,
                    endpoints = running.len(),
                    "endpoints changed"
                );
            }
        }
        shared.discovered.store(true, Ordering::Release);
        shared.ready.notify_waiters();
    }
    for r in running.values() {
        r.stop.cancel();
    }
}

#[cfg(test)]
mod rendezvous_tests {
    use super::*;

    fn winner(key: u64, subsets: &[(u64, u32)]) -> usize {
        subsets
            .iter()
            .enumerate()
            .filter(|(_, (_, w))| *w > 0)
            .map(|(i, (seed, w))| (rendezvous_score(key, *seed, *w), i))
            .min_by(|a, b| a.partial_cmp(b).expect("scores are finite"))
            .map(|(_, i)| i)
            .expect("a subset with weight")
    }

    #[test]
    fn random_keys_follow_the_weights() {
        let subsets = [
            (stable_hash(b"v1"), 1),
            (stable_hash(b"v2"), 3),
            (stable_hash(b"off"), 0),
        ];
        let mut wins = [0u32; 3];
        for _ in 0..40_000 {
            wins[winner(random_u64(), &subsets)] += 1;
        }
        assert_eq!(wins[2], 0, "{wins:?}");
        let share = f64::from(wins[0]) / 40_000.0;
        assert!((0.23..0.27).contains(&share), "{wins:?}");
    }

    #[test]
    fn a_weight_change_moves_keys_only_towards_the_heavier_subset() {
        let before = [(stable_hash(b"v1"), 1), (stable_hash(b"v2"), 1)];
        let after = [(stable_hash(b"v1"), 1), (stable_hash(b"v2"), 4)];
        for key in 0..10_000u64 {
            let key = stable_hash(&key.to_le_bytes());
            let (b, a) = (winner(key, &before), winner(key, &after));
            assert!(b == a || a == 1, "key {key} moved from {b} to {a}");
            assert_eq!(winner(key, &before), b, "stable for a key");
        }
    }
}
