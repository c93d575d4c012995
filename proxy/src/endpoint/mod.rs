//! One backend endpoint: its connection handle and the lock-free state the
//! balancer reads on every call (connection state, calls in flight, latency
//! estimate, outlier ejection, health); keeping it connected ([`upkeep`]);
//! and the record that settles each call on it ([`record`]).

pub mod record;
mod subset;
pub mod upkeep;

pub use subset::SubsetShared;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;

use crate::metrics::{CallCounters, SubsetLabels};
use crate::transport::upstream::Upstream;
use crate::util::now_nanos;

/// Connection state of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum ConnState {
    Connecting = 0,
    Ready = 1,
    Failed = 2,
    /// Removed by discovery; calls in flight finish on the old connection.
    Removed = 3,
}

impl ConnState {
    fn from_u8(v: u8) -> ConnState {
        match v {
            1 => ConnState::Ready,
            2 => ConnState::Failed,
            3 => ConnState::Removed,
            _ => ConnState::Connecting,
        }
    }
}

/// Outlier-ejection settings of a balancing, as plain values.
#[derive(Debug, Clone, Copy)]
pub struct OutlierSettings {
    pub consecutive_failures: u32,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

impl From<&grpc_balancer_crds::config::OutlierDetection> for OutlierSettings {
    fn from(o: &grpc_balancer_crds::config::OutlierDetection) -> Self {
        OutlierSettings {
            consecutive_failures: o.consecutive_failures,
            base_ejection_time: o.base_ejection_time.as_std(),
            max_ejection_time: o.max_ejection_time.as_std(),
            max_ejection_percent: o.max_ejection_percent,
        }
    }
}

/// Latency estimates decay with this time constant (as in Linkerd).
const EWMA_DECAY_NANOS: f64 = 10e9;

pub struct Endpoint {
    pub addr: SocketAddr,
    pub subset: Arc<SubsetShared>,
    state: AtomicU8,
    sender: ArcSwapOption<Upstream>,
    /// Held while the handle and the state change together, so the
    /// upkeep's and a call's changes do not interleave. Never taken on a
    /// call's usual path.
    publishing: Mutex<()>,
    in_flight: AtomicU32,
    /// Calls sent (or about to be) to it since it was added: with the
    /// in-flight count, what an operator needs to bound the calls a dead
    /// backend could have taken with it (Envoy's per-host `rq_total`).
    calls_started: AtomicU64,
    /// Peak-EWMA latency estimate in nanoseconds (f64 bits) and when it was
    /// last updated.
    rtt_estimate: AtomicU64,
    rtt_stamp: AtomicU64,
    consecutive_failures: AtomicU32,
    /// `now_nanos()` until which the endpoint is ejected; 0 = not ejected.
    ejected_until: AtomicU64,
    ejections: AtomicU32,
    unhealthy: AtomicBool,
    pub counters: CallCounters,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, subset: Arc<SubsetShared>, initial_rtt_nanos: f64) -> Self {
        let counters = CallCounters::new(
            &subset.metrics,
            &subset.balancing,
            &subset.name,
            &addr.to_string(),
        );
        Endpoint {
            addr,
            subset,
            state: AtomicU8::new(ConnState::Connecting as u8),
            sender: ArcSwapOption::empty(),
            publishing: Mutex::new(()),
            in_flight: AtomicU32::new(0),
            calls_started: AtomicU64::new(0),
            rtt_estimate: AtomicU64::new(initial_rtt_nanos.to_bits()),
            rtt_stamp: AtomicU64::new(now_nanos()),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            unhealthy: AtomicBool::new(false),
            counters,
        }
    }

    pub fn state(&self) -> ConnState {
        ConnState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub fn set_state(&self, state: ConnState) {
        self.state.store(state as u8, Ordering::Release);
        if state == ConnState::Ready {
            self.subset.ready.notify_waiters();
        }
    }

    /// A fresh connection: the ejection multiplier starts over.
    pub fn connected(&self, sender: Upstream) {
        let _publishing = lock(&self.publishing);
        self.sender.store(Some(Arc::new(sender)));
        self.start_over();
        self.set_state(ConnState::Ready);
    }

    /// Forgets past failures and ejections: the next ejection lasts the base
    /// time again.
    fn start_over(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.ejections.store(0, Ordering::Relaxed);
    }

    pub fn disconnected(&self, state: ConnState) {
        let _publishing = lock(&self.publishing);
        // The state first: a pick that sees the endpoint ready finds its
        // handle.
        self.set_state(state);
        self.sender.store(None);
    }

    /// A call found the connection `connection` (an
    /// [`Upstream::connection_id`]) closing before its upkeep did (h2 knows
    /// of a GOAWAY the moment it reads it): take it out now, if it is still
    /// the published one, so the call's next pick goes elsewhere at once.
    pub fn connection_closing(&self, connection: usize) {
        let _publishing = lock(&self.publishing);
        let published = self.sender.load();
        if published
            .as_ref()
            .is_some_and(|s| s.connection_id() == connection)
        {
            // The upkeep reconnects when it sees the end itself.
            self.set_state(ConnState::Connecting);
            self.sender.store(None);
        }
    }

    /// A clone of the connection's request handle, if connected.
    pub fn sender(&self) -> Option<Upstream> {
        let guard = self.sender.load();
        guard.as_ref().map(|s| Upstream::clone(s))
    }

    /// Whether the balancer may pick this endpoint now.
    pub fn is_available(&self) -> bool {
        self.state.load(Ordering::Acquire) == ConnState::Ready as u8
            && !self.unhealthy.load(Ordering::Relaxed)
            && !self.is_ejected()
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn calls_started(&self) -> u64 {
        self.calls_started.load(Ordering::Relaxed)
    }

    pub fn call_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.calls_started.fetch_add(1, Ordering::Relaxed);
    }

    pub fn call_ended(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Peak-EWMA cost: the latency estimate scaled by the calls waiting on it.
    pub fn ewma_cost(&self) -> f64 {
        let rtt = f64::from_bits(self.rtt_estimate.load(Ordering::Relaxed));
        rtt * f64::from(self.in_flight() + 1)
    }

    pub fn rtt_estimate_nanos(&self) -> f64 {
        f64::from_bits(self.rtt_estimate.load(Ordering::Relaxed))
    }

    /// Records a latency sample: a slower sample replaces the estimate at
    /// once (the peak), faster ones pull it down with a time-based decay.
    pub fn observe_rtt(&self, rtt_nanos: u64) {
        let now = now_nanos();
        let last = self.rtt_stamp.swap(now, Ordering::Relaxed);
        let old = f64::from_bits(self.rtt_estimate.load(Ordering::Relaxed));
        let rtt = rtt_nanos as f64;
        let new = if rtt > old {
            rtt
        } else {
            let elapsed = now.saturating_sub(last) as f64;
            let w = (-elapsed / EWMA_DECAY_NANOS).exp();
            old * w + rtt * (1.0 - w)
        };
        // Racing updates may lose a sample; an estimate needs no exactness.
        self.rtt_estimate.store(new.to_bits(), Ordering::Relaxed);
    }

    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        if now_nanos() < until {
            return true;
        }
        // Ejection over: the first reader to notice releases the slot.
        if self
            .ejected_until
            .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.subset.ejected.fetch_sub(1, Ordering::AcqRel);
            tracing::info!(balancing = %self.subset.balancing, endpoint = %self.addr, "endpoint back from ejection");
        }
        false
    }

    pub fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failure (connect error, UNAVAILABLE, reset) and ejects the
    /// endpoint when it reaches the consecutive-failure threshold.
    pub fn record_failure(&self) {
        let threshold = self.subset.outlier.consecutive_failures;
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if threshold == 0 || n < threshold || self.is_ejected() {
            return;
        }
        let size = self.subset.size.load(Ordering::Relaxed);
        let max = size * self.subset.outlier.max_ejection_percent / 100;
        let ejected = &self.subset.ejected;
        let mut current = ejected.load(Ordering::Acquire);
        loop {
            if current >= max {
                tracing::debug!(endpoint = %self.addr, "not ejected: max ejection percent reached");
                return;
            }
            match ejected.compare_exchange(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        let times = self.ejections.fetch_add(1, Ordering::Relaxed).min(20);
        let o = &self.subset.outlier;
        let duration = o
            .base_ejection_time
            .saturating_mul(1u32 << times)
            .min(o.max_ejection_time);
        let until =
            now_nanos().saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
        self.ejected_until.store(until, Ordering::Release);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.subset
            .metrics
            .ejections
            .get_or_create(&SubsetLabels {
                balancing: self.subset.balancing.to_string(),
                subset: self.subset.name.to_string(),
            })
            .inc();
        tracing::warn!(
            balancing = %self.subset.balancing,
            endpoint = %self.addr,
            failures = n,
            duration = ?duration,
            "endpoint ejected after consecutive failures"
        );
    }

    pub fn set_healthy(&self, healthy: bool) {
        let was_unhealthy = self.unhealthy.swap(!healthy, Ordering::Relaxed);
        if was_unhealthy == healthy {
            tracing::info!(balancing = %self.subset.balancing, endpoint = %self.addr, healthy, "health changed");
            if healthy {
                self.subset.ready.notify_waiters();
            }
        }
    }

    pub fn is_healthy(&self) -> bool {
        !self.unhealthy.load(Ordering::Relaxed)
    }

    /// Removes this endpoint's ejection from the subset count (it left the set).
    pub fn release_ejection(&self) {
        if self.ejected_until.swap(0, Ordering::AcqRel) != 0 {
            self.subset.ejected.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Nothing the lock guards can be left half-done by a panic.
fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    //! The ejection state machine on tokio's paused clock: `now_nanos()`
    //! reads `tokio::time::Instant`, so `advance` moves ejections forward
    //! without waiting.

    use tokio::sync::Notify;
    use tokio::time::advance;

    use super::*;
    use crate::metrics::Metrics;

    fn subset(
        size: u32,
        consecutive: u32,
        base_s: u64,
        max_s: u64,
        percent: u32,
    ) -> Arc<SubsetShared> {
        let (metrics, _registry) = Metrics::new();
        let shared = SubsetShared::new(
            "b",
            "s",
            OutlierSettings {
                consecutive_failures: consecutive,
                base_ejection_time: Duration::from_secs(base_s),
                max_ejection_time: Duration::from_secs(max_s),
                max_ejection_percent: percent,
            },
            Arc::new(Notify::new()),
            metrics,
        );
        shared.size.store(size, Ordering::Relaxed);
        Arc::new(shared)
    }

    fn endpoint(subset: &Arc<SubsetShared>, n: u16) -> Endpoint {
        Endpoint::new(
            SocketAddr::from(([127, 0, 0, 1], 40000 + n)),
            subset.clone(),
            1e6,
        )
    }

    fn fail(e: &Endpoint, times: u32) {
        for _ in 0..times {
            e.record_failure();
        }
    }

    /// Ejected now, still ejected just before `expected` and back just after.
    async fn assert_ejected_for(e: &Endpoint, expected: Duration) {
        let slack = Duration::from_millis(1);
        assert!(e.is_ejected(), "ejected at once");
        advance(expected - slack).await;
        assert!(e.is_ejected(), "still ejected just before {expected:?}");
        advance(slack * 2).await;
        assert!(!e.is_ejected(), "back just after {expected:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_time_doubles_up_to_the_maximum() {
        let s = subset(1, 3, 10, 35, 100);
        let e = endpoint(&s, 1);
        fail(&e, 2);
        assert!(!e.is_ejected(), "below the threshold");
        fail(&e, 1);
        assert_eq!(s.ejected.load(Ordering::Relaxed), 1);
        assert_ejected_for(&e, Duration::from_secs(10)).await;
        assert_eq!(s.ejected.load(Ordering::Relaxed), 0, "slot released");

        fail(&e, 3);
        assert_ejected_for(&e, Duration::from_secs(20)).await;
        // 40 s would exceed the 35 s maximum.
        fail(&e, 3);
        assert_ejected_for(&e, Duration::from_secs(35)).await;
        fail(&e, 3);
        assert_ejected_for(&e, Duration::from_secs(35)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_consecutive_count() {
        let s = subset(1, 3, 10, 300, 100);
        let e = endpoint(&s, 1);
        fail(&e, 2);
        e.record_success();
        fail(&e, 2);
        assert!(!e.is_ejected(), "failures were not consecutive");
        fail(&e, 1);
        assert!(e.is_ejected());
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_starts_the_back_off_over() {
        let s = subset(1, 1, 10, 300, 100);
        let e = endpoint(&s, 1);
        fail(&e, 1);
        assert_ejected_for(&e, Duration::from_secs(10)).await;
        fail(&e, 1);
        assert_ejected_for(&e, Duration::from_secs(20)).await;
        e.start_over();
        fail(&e, 1);
        assert_ejected_for(&e, Duration::from_secs(10)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn ejections_stay_within_the_max_percent() {
        let s = subset(4, 2, 10, 300, 50);
        let eps: Vec<_> = (0..4).map(|n| endpoint(&s, n)).collect();
        for e in &eps {
            fail(e, 2);
        }
        let ejected = |eps: &[Endpoint]| eps.iter().filter(|e| e.is_ejected()).count();
        assert_eq!(ejected(&eps), 2, "50% of 4");
        assert_eq!(s.ejected.load(Ordering::Relaxed), 2);

        // Once the first two are back, the other two may go in their place.
        advance(Duration::from_secs(10)).await;
        assert_eq!(ejected(&eps), 0);
        assert_eq!(s.ejected.load(Ordering::Relaxed), 0);
        fail(&eps[2], 2);
        fail(&eps[3], 2);
        fail(&eps[0], 2);
        assert!(eps[2].is_ejected() && eps[3].is_ejected());
        assert!(!eps[0].is_ejected(), "the cap holds");

        // An endpoint leaving the set gives its slot back.
        eps[2].release_ejection();
        assert_eq!(s.ejected.load(Ordering::Relaxed), 1);
        fail(&eps[0], 2);
        assert!(eps[0].is_ejected());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_endpoint_is_never_ejected_below_one_whole_slot() {
        // 50% of one endpoint rounds down to none.
        let s = subset(1, 1, 10, 300, 50);
        let e = endpoint(&s, 1);
        fail(&e, 5);
        assert!(!e.is_ejected());
        assert_eq!(s.ejected.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_off_never_ejects() {
        let s = subset(1, 0, 10, 300, 100);
        let e = endpoint(&s, 1);
        fail(&e, 100);
        assert!(!e.is_ejected());
    }

    /// A call that finds a connection closing takes out only that one, not
    /// the successor the upkeep may have published meanwhile.
    #[tokio::test]
    async fn a_closing_connection_is_taken_out_only_while_published() {
        use crate::transport::client::{ConnectSettings, connect};
        // A peer that accepts and keeps the sockets: the h2 handshake does
        // not wait for its answer.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let (old, _old_driver) = connect(addr, ConnectSettings::default())
            .await
            .expect("connect");
        let (new, _new_driver) = connect(addr, ConnectSettings::default())
            .await
            .expect("connect");
        let (old_id, new_id) = (old.connection_id(), new.connection_id());
        assert_ne!(old_id, new_id);
        let e = endpoint(&subset(1, 5, 30, 300, 100), 1);
        e.connected(new);
        e.connection_closing(old_id);
        assert_eq!(e.state(), ConnState::Ready);
        assert!(e.sender().is_some());
        e.connection_closing(new_id);
        assert_eq!(e.state(), ConnState::Connecting);
        assert!(e.sender().is_none());
        drop(old);
    }
}
