//! Prometheus metrics. Handles used per call (counters per endpoint and
//! gRPC status, histograms per subset) are created ahead of the call so the
//! hot path only touches atomics, never a label lookup or a lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::grpc_status::Code;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub balancing: String,
    pub subset: String,
    pub endpoint: String,
    pub grpc_status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BalancingLabels {
    pub balancing: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubsetLabels {
    pub balancing: String,
    pub subset: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointStateLabels {
    pub balancing: String,
    pub subset: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub balancing: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DiscoveryLabels {
    pub balancing: String,
    pub subset: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabels {
    pub balancing: String,
    pub subset: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `push` or `dns`.
    pub source: String,
}

/// The source a subset discovering a DNS name uses now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubsetSource {
    Push,
    Dns,
}

impl LabelValue for SubsetSource {
    const ALL: &'static [Self] = &[SubsetSource::Push, SubsetSource::Dns];
    fn as_str(self) -> &'static str {
        match self {
            SubsetSource::Push => "push",
            SubsetSource::Dns => "dns",
        }
    }
}

/// The push discovery stream's freshness.
#[derive(Clone, Default)]
pub struct PushMetrics {
    /// 1 while the stream is connected.
    pub connected: Gauge,
    pub reconnects: Counter,
    /// The namespace version of the last message applied.
    pub version: Gauge,
    /// Unix time of the last message applied.
    pub last_message: Gauge<f64, AtomicU64>,
    /// Subsets discovering through DNS names, by the source they use now.
    pub subsets: Family<SourceLabels, Gauge>,
}

/// Every metric family of the proxy.
#[derive(Clone)]
pub struct Metrics {
    pub calls: Family<CallLabels, Counter>,
    pub call_duration: Family<SubsetLabels, SharedHistogram>,
    pub calls_in_flight: Family<BalancingLabels, Gauge>,
    pub endpoints: Family<EndpointStateLabels, Gauge>,
    pub ejections: Family<SubsetLabels, Counter>,
    pub retries: Family<RetryLabels, Counter>,
    pub discovery_refreshes: Family<DiscoveryLabels, Counter>,
    pub health_checks: Family<HealthLabels, Counter>,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub downstream_connections: Family<BalancingLabels, Counter>,
    /// Connections to a Service front that were not h2c, relayed to the
    /// Service unbalanced.
    pub unbalanced_connections: Family<BalancingLabels, Counter>,
    pub listeners_unbound: Gauge,
    pub listener_bind_errors: Family<BalancingLabels, Counter>,
    /// Tasks alive on the proxy's runtime, read when `/metrics` is scraped:
    /// a count that keeps growing under steady load is a leak (a connection,
    /// call or watch whose task never ends).
    pub runtime_tasks: Gauge,
    pub push: PushMetrics,
    /// How many live endpoints hold each (balancing, subset, endpoint) call
    /// series. A reload starts new endpoints beside the old ones with the
    /// same labels; a series goes only when its last holder does.
    call_series_holders: Arc<Mutex<HashMap<EndpointSeries, usize>>>,
}

type EndpointSeries = (String, String, String);

impl Metrics {
    pub fn new() -> (Metrics, Registry) {
        let m = Metrics {
            calls: Family::default(),
            call_duration: Family::default(),
            calls_in_flight: Family::default(),
            endpoints: Family::default(),
            ejections: Family::default(),
            retries: Family::default(),
            discovery_refreshes: Family::default(),
            health_checks: Family::default(),
            config_reloads: Family::default(),
            downstream_connections: Family::default(),
            unbalanced_connections: Family::default(),
            listeners_unbound: Gauge::default(),
            listener_bind_errors: Family::default(),
            runtime_tasks: Gauge::default(),
            push: PushMetrics::default(),
            call_series_holders: Arc::default(),
        };
        let mut r = Registry::with_prefix("grpc_balancer");
        r.register(
            "calls",
            "Calls by balancing, subset, endpoint and gRPC status (endpoint \"\" = answered by the proxy)",
            m.calls.clone(),
        );
        r.register(
            "call_duration_seconds",
            "Call duration from the request headers to the end of the response",
            m.call_duration.clone(),
        );
        r.register(
            "calls_in_flight",
            "Calls in flight",
            m.calls_in_flight.clone(),
        );
        r.register(
            "endpoints",
            format!("Endpoints by state ({})", EndpointStateLabel::list()),
            m.endpoints.clone(),
        );
        r.register("ejections", "Outlier ejections", m.ejections.clone());
        r.register(
            "retries",
            format!("Retry decisions by outcome ({})", RetryOutcome::list()),
            m.retries.clone(),
        );
        r.register(
            "discovery_refreshes",
            format!(
                "Discovery refreshes by result ({})",
                DiscoveryResult::list()
            ),
            m.discovery_refreshes.clone(),
        );
        r.register(
            "health_checks",
            format!(
                "Active grpc.health.v1 checks by result ({})",
                HealthResult::list()
            ),
            m.health_checks.clone(),
        );
        r.register(
            "config_reloads",
            format!("Config loads by result ({})", ReloadResult::list()),
            m.config_reloads.clone(),
        );
        r.register(
            "downstream_connections",
            "Connections accepted from the application",
            m.downstream_connections.clone(),
        );
        r.register(
            "unbalanced_connections",
            "Connections to the Service address of a balancing (spec.service) that did not open with the HTTP/2 preface (TLS, HTTP/1), relayed to the Service unbalanced",
            m.unbalanced_connections.clone(),
        );
        r.register(
            "listeners_unbound",
            "Listeners of the config that are not bound (retried until they bind)",
            m.listeners_unbound.clone(),
        );
        r.register(
            "listener_bind_errors",
            "Failed attempts to bind a balancing's listener",
            m.listener_bind_errors.clone(),
        );
        r.register(
            "runtime_tasks",
            "Tasks alive on the proxy's async runtime (connections, calls, discovery, admin)",
            m.runtime_tasks.clone(),
        );
        r.register(
            "discovery_push_connected",
            "1 while the push discovery stream from the operator is connected",
            m.push.connected.clone(),
        );
        r.register(
            "discovery_push_reconnects",
            "Push discovery streams lost (each is reconnected with back-off)",
            m.push.reconnects.clone(),
        );
        r.register(
            "discovery_push_version",
            "Namespace version of the last push discovery message applied",
            m.push.version.clone(),
        );
        r.register(
            "discovery_push_last_message_timestamp_seconds",
            "Unix time of the last push discovery message applied",
            m.push.last_message.clone(),
        );
        r.register(
            "discovery_subsets",
            "Subsets discovering a DNS name, by the source they use now (push, dns)",
            m.push.subsets.clone(),
        );
        for source in SubsetSource::ALL {
            let _ = m.push.subsets.get_or_create(&SourceLabels {
                source: source.as_str().to_owned(),
            });
        }
        // Every result is exported from the start, at 0.
        for result in ReloadResult::ALL {
            let _ = m.config_reloads.get_or_create(&ResultLabels {
                result: result.as_str().to_owned(),
            });
        }
        (m, r)
    }
}

/// A label value set by the code: the one list the help text, the README and
/// the exported series all come from.
pub trait LabelValue: Copy + 'static {
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;

    /// `a, b, c`, for help texts.
    fn list() -> String {
        Self::ALL
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

macro_rules! label_value {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl LabelValue for $name {
            const ALL: &'static [Self] = &[$($name::$variant,)+];
            fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }
    };
}

label_value! {
    /// What became of a config file the proxy read (`config_reloads_total`).
    ReloadResult {
        /// Every balancing of the file runs.
        Applied => "applied",
        /// Some balancings were rejected (errors logged; what ran of them
        /// stays) or their listener is not bound yet (retried).
        Partial => "partial",
        /// No file (yet): no balancings.
        Missing => "missing",
        /// The file is not a config (syntax, unknown field, too large); the
        /// last good config stays.
        Invalid => "invalid",
        /// The file could not be read; the last good config stays.
        Unreadable => "unreadable",
    }
}

label_value! {
    /// State of an endpoint (`endpoints`).
    EndpointStateLabel {
        Connecting => "connecting",
        Ready => "ready",
        Failed => "failed",
        Ejected => "ejected",
        Unhealthy => "unhealthy",
    }
}

label_value! {
    /// Result of a discovery refresh (`discovery_refreshes_total`).
    DiscoveryResult {
        Ok => "ok",
        Error => "error",
    }
}

label_value! {
    /// Result of an active health check (`health_checks_total`).
    HealthResult {
        Serving => "serving",
        NotServing => "not_serving",
        Error => "error",
    }
}

/// Number of gRPC status codes (0 OK ... 16 UNAUTHENTICATED).
pub const GRPC_CODES: usize = Code::UNAUTHENTICATED.value() as usize + 1;

/// The counter slot of a code: one past the last defined code counts as it.
fn slot(code: Code) -> usize {
    (code.value() as usize).min(GRPC_CODES - 1)
}

/// Per-endpoint call counters, one per gRPC status, created on first use.
pub struct CallCounters {
    family: Family<CallLabels, Counter>,
    holders: Arc<Mutex<HashMap<EndpointSeries, usize>>>,
    balancing: String,
    subset: String,
    endpoint: String,
    by_code: [OnceLock<Counter>; GRPC_CODES],
}

impl CallCounters {
    /// Called when an endpoint starts (not per call), so the lock is cheap.
    pub fn new(metrics: &Metrics, balancing: &str, subset: &str, endpoint: &str) -> Self {
        let counters = CallCounters {
            family: metrics.calls.clone(),
            holders: metrics.call_series_holders.clone(),
            balancing: balancing.to_owned(),
            subset: subset.to_owned(),
            endpoint: endpoint.to_owned(),
            by_code: Default::default(),
        };
        *counters
            .holders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(counters.series())
            .or_default() += 1;
        counters
    }

    fn series(&self) -> EndpointSeries {
        (
            self.balancing.clone(),
            self.subset.clone(),
            self.endpoint.clone(),
        )
    }

    fn labels(&self, code: usize) -> CallLabels {
        CallLabels {
            balancing: self.balancing.clone(),
            subset: self.subset.clone(),
            endpoint: self.endpoint.clone(),
            grpc_status: code.to_string(),
        }
    }

    pub fn inc(&self, code: Code) {
        let code = slot(code);
        self.by_code[code]
            .get_or_init(|| self.family.get_or_create_owned(&self.labels(code)))
            .inc();
    }
}

impl Drop for CallCounters {
    fn drop(&mut self) {
        let series = self.series();
        let last = {
            let mut holders = self.holders.lock().unwrap_or_else(PoisonError::into_inner);
            match holders.get_mut(&series) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                _ => {
                    holders.remove(&series);
                    true
                }
            }
        };
        // Endpoints come and go with discovery; their series must go too,
        // but not while a replacement endpoint still counts into them.
        if last {
            for code in 0..GRPC_CODES {
                self.family.remove(&self.labels(code));
            }
        }
    }
}

/// Counters of the calls a balancing answers itself (endpoint ""), one per
/// gRPC status, created on first use. Unlike [`CallCounters`] they are never
/// removed: a reloaded balancing shares its series with the one it replaces.
pub struct LocalCallCounters {
    family: Family<CallLabels, Counter>,
    balancing: String,
    by_code: [OnceLock<Counter>; GRPC_CODES],
}

impl LocalCallCounters {
    pub fn new(family: Family<CallLabels, Counter>, balancing: &str) -> Self {
        LocalCallCounters {
            family,
            balancing: balancing.to_owned(),
            by_code: Default::default(),
        }
    }

    pub fn inc(&self, code: Code) {
        let code = slot(code);
        self.by_code[code]
            .get_or_init(|| {
                self.family.get_or_create_owned(&CallLabels {
                    balancing: self.balancing.clone(),
                    subset: String::new(),
                    endpoint: String::new(),
                    grpc_status: code.to_string(),
                })
            })
            .inc();
    }
}

label_value! {
    /// What became of a call the proxy wanted to retry (`retries_total`).
    RetryOutcome {
        /// Sent again to another endpoint.
        Retried => "retried",
        /// The retry budget had no token left.
        BudgetExhausted => "budget_exhausted",
        /// The request body no longer fit in the replay buffer.
        NotReplayable => "not_replayable",
    }
}

/// The retry counters of one balancing, created with it.
pub struct RetryCounters {
    retried: Counter,
    budget_exhausted: Counter,
    not_replayable: Counter,
}

impl RetryCounters {
    pub fn new(family: &Family<RetryLabels, Counter>, balancing: &str) -> Self {
        let get = |outcome: RetryOutcome| {
            family.get_or_create_owned(&RetryLabels {
                balancing: balancing.to_owned(),
                outcome: outcome.as_str().to_owned(),
            })
        };
        RetryCounters {
            retried: get(RetryOutcome::Retried),
            budget_exhausted: get(RetryOutcome::BudgetExhausted),
            not_replayable: get(RetryOutcome::NotReplayable),
        }
    }

    pub fn inc(&self, outcome: RetryOutcome) {
        match outcome {
            RetryOutcome::Retried => self.retried.inc(),
            RetryOutcome::BudgetExhausted => self.budget_exhausted.inc(),
            RetryOutcome::NotReplayable => self.not_replayable.inc(),
        };
    }
}

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram of atomics: `observe` takes no lock (prometheus-client's own
/// histogram takes a write lock on every observation).
#[derive(Debug)]
pub struct LatencyHistogram {
    /// Last slot counts observations above the largest bound (+Inf).
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: Default::default(),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    pub fn observe_nanos(&self, nanos: u64) {
        let secs = nanos as f64 / 1e9;
        let slot = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// A histogram handle kept by each subset and shared with the registry.
#[derive(Debug, Clone, Default)]
pub struct SharedHistogram(pub Arc<LatencyHistogram>);

impl TypedMetric for SharedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for SharedHistogram {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = [(0.0, 0u64); BUCKETS.len() + 1];
        let mut count = 0;
        for (i, slot) in self.counts.iter().enumerate() {
            let n = slot.load(Ordering::Relaxed);
            count += n;
            buckets[i] = (BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), n);
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn histogram_and_counters_encode() {
        let (m, r) = Metrics::new();
        m.call_duration
            .get_or_create(&SubsetLabels {
                balancing: "b".into(),
                subset: "s".into(),
            })
            .0
            .observe_nanos(3_000_000);
        let counters = CallCounters::new(&m, "b", "s", "127.0.0.1:1");
        counters.inc(Code::new(0));
        counters.inc(Code::new(14));
        counters.inc(Code::new(99));
        let mut out = String::new();
        encode(&mut out, &r).expect("encodes");
        assert!(out.contains("grpc_balancer_call_duration_seconds_bucket{le=\"0.005\",balancing=\"b\",subset=\"s\"} 1") || out.contains("grpc_balancer_call_duration_seconds_bucket{balancing=\"b\",subset=\"s\",le=\"0.005\"} 1"), "{out}");
        assert!(out.contains("grpc_status=\"14\"} 1"), "{out}");
        assert!(out.contains("grpc_status=\"16\"} 1"), "{out}");
        drop(counters);
        let mut out = String::new();
        encode(&mut out, &r).expect("encodes");
        assert!(!out.contains("grpc_status=\"14\""), "{out}");
    }

    #[test]
    fn a_series_stays_while_a_replacement_endpoint_holds_it() {
        let (m, r) = Metrics::new();
        let old = CallCounters::new(&m, "b", "s", "127.0.0.1:1");
        old.inc(Code::new(0));
        // A reload starts the same endpoint anew before the old one goes.
        let new = CallCounters::new(&m, "b", "s", "127.0.0.1:1");
        drop(old);
        new.inc(Code::new(0));
        let mut out = String::new();
        encode(&mut out, &r).expect("encodes");
        assert!(
            out.contains("endpoint=\"127.0.0.1:1\",grpc_status=\"0\"} 2"),
            "{out}"
        );
        drop(new);
        let mut out = String::new();
        encode(&mut out, &r).expect("encodes");
        assert!(!out.contains("127.0.0.1:1"), "{out}");
    }
}
