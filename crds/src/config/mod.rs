//! The proxy's config format.
//!
//! The operator renders every `GrpcBalancing` of a namespace into one document
//! of this format (a ConfigMap key), and the proxy parses it. Both sides use
//! these types, so they cannot disagree. This module compiles with serde
//! alone: the proxy links no Kubernetes crates.
//!
//! ```yaml
//! balancings:
//!   - name: greeter
//!     listen: 127.0.0.1:15001
//!     policy: { kind: peak_ewma }
//!     subsets:
//!       - name: v1
//!         weight: 75
//!         discovery:
//!           dns: { name: greeter-v1.demo.svc.cluster.local, port: 50051, refreshInterval: 5s }
//!       - name: v2
//!         weight: 25
//!         discovery:
//!           static: [127.0.0.3:50051]
//! ```

mod duration;
mod parse;

pub use duration::{Duration, DurationError};
pub use parse::{
    ConfigError, FieldError, MAX_CONFIG_BYTES, Partial, RESERVED_PORTS, listeners_overlap,
    parse_yaml, parse_yaml_partial, to_yaml, validate,
};

use serde::{Deserialize, Serialize};

/// Name of the ConfigMap the operator writes in each namespace.
pub const CONFIG_MAP_NAME: &str = "grpc-balancer-proxy-config";
/// Key of the config document inside that ConfigMap.
pub const CONFIG_MAP_KEY: &str = "config.yaml";
/// Where the injected sidecar finds the config file.
pub const CONFIG_MOUNT_DIR: &str = "/etc/grpc-balancer";
/// Admin port of the injected sidecar (`/live`, `/ready`, `/metrics`, ...).
pub const DEFAULT_ADMIN_PORT: u16 = 9901;

/// A whole proxy config: any number of balancings, each with its own listener.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    #[serde(default)]
    pub balancings: Vec<Balancing>,
}

/// One balancing: calls accepted on `listen` are spread over `subsets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Balancing {
    /// Unique within the config; used in metrics labels and logs.
    pub name: String,
    /// Local socket address of the h2c listener, e.g. `127.0.0.1:15001`.
    pub listen: String,
    #[serde(default)]
    pub policy: Policy,
    /// At least one. Weights are relative; a subset of weight 0 gets no calls.
    pub subsets: Vec<Subset>,
    /// Per-call deadline the proxy enforces. Absent: no proxy deadline (the
    /// caller's `grpc-timeout` still applies), so long streams live on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub retries: Retries,
    #[serde(default)]
    pub outlier_detection: OutlierDetection,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub queue: Queue,
    /// Set when the balancing stands in for a Kubernetes Service that
    /// clients dial by name: `listen` is then a loopback address of the
    /// balancing's own on the Service's gRPC port, which client pods resolve
    /// the Service's names to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceFront>,
}

/// A balancing that answers for a Service's names in client pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceFront {
    /// The names client pods resolve to the listener's address (the
    /// webhook writes them as the pod's `hostAliases`).
    pub hostnames: Vec<String>,
    /// Where a connection on `listen` that does not open with the HTTP/2
    /// preface is relayed as plain TCP (a TLS client, an HTTP/1 client):
    /// the Service's cluster IP and port, so such a client keeps working,
    /// unbalanced, as if it had dialled the Service itself.
    pub passthrough: String,
    /// The Service's other ports, relayed as plain TCP to its cluster IP:
    /// a client dialling the name on any of them must still get through.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forwards: Vec<Forward>,
}

/// One relayed port: connections to `listen` are relayed to `to` as TCP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Forward {
    pub listen: String,
    pub to: String,
}

/// How an endpoint is chosen for each call within a subset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub kind: PolicyKind,
    /// Request header hashed by `ring_hash` (required for it, unused otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    RoundRobin,
    LeastRequest,
    /// Power of two choices on a latency EWMA (the default, as in Linkerd).
    #[default]
    PeakEwma,
    Random,
    RingHash,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 5] = [
        PolicyKind::RoundRobin,
        PolicyKind::LeastRequest,
        PolicyKind::PeakEwma,
        PolicyKind::Random,
        PolicyKind::RingHash,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::RoundRobin => "round_robin",
            PolicyKind::LeastRequest => "least_request",
            PolicyKind::PeakEwma => "peak_ewma",
            PolicyKind::Random => "random",
            PolicyKind::RingHash => "ring_hash",
        }
    }
}

impl std::fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PolicyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PolicyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = PolicyKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown policy {s:?}, expected one of {}", names.join(", "))
            })
    }
}

/// A weighted group of endpoints, e.g. the pods of one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    pub name: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    pub discovery: Discovery,
}

fn default_weight() -> u32 {
    1
}

/// Where a subset's endpoints come from: exactly one of `dns` and `static`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Discovery {
    /// A (headless Service) DNS name resolved to all its addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsDiscovery>,
    /// A fixed list of `ip:port` socket addresses.
    #[serde(default, rename = "static", skip_serializing_if = "Option::is_none")]
    pub static_endpoints: Option<Vec<String>>,
}

/// The one discovery source of a valid [`Discovery`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DiscoverySource<'a> {
    Dns(&'a DnsDiscovery),
    Static(&'a [String]),
}

impl Discovery {
    pub fn dns(dns: DnsDiscovery) -> Self {
        Discovery {
            dns: Some(dns),
            static_endpoints: None,
        }
    }

    pub fn static_list(addrs: Vec<String>) -> Self {
        Discovery {
            dns: None,
            static_endpoints: Some(addrs),
        }
    }

    /// The source, or `None` when not exactly one is set (validation rejects that).
    pub fn source(&self) -> Option<DiscoverySource<'_>> {
        match (&self.dns, &self.static_endpoints) {
            (Some(d), None) => Some(DiscoverySource::Dns(d)),
            (None, Some(s)) => Some(DiscoverySource::Static(s)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsDiscovery {
    pub name: String,
    pub port: u16,
    #[serde(default = "default_refresh_interval")]
    pub refresh_interval: Duration,
}

fn default_refresh_interval() -> Duration {
    Duration::from_secs(5)
}

/// Retries of calls that never reached a backend (connect refused,
/// REFUSED_STREAM, GOAWAY before processing), bounded by a budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Retries {
    /// Attempts per call including the first.
    pub max_attempts: u32,
    /// Retries may add at most this percentage on top of original calls...
    pub budget_percent: u32,
    /// ...but this many retries per second are always allowed.
    pub min_retries_per_second: u32,
    /// Also retry UNAVAILABLE answered by a backend, for idempotent methods
    /// (full method paths such as `/pkg.Service/Get`). Only calls whose
    /// request body fits in `max_buffered_bytes` are replayed.
    pub idempotent_methods: Vec<String>,
    pub max_buffered_bytes: u32,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            max_attempts: 3,
            budget_percent: 20,
            min_retries_per_second: 10,
            idempotent_methods: Vec::new(),
            max_buffered_bytes: 64 * 1024,
        }
    }
}

/// Passive outlier ejection on consecutive failures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OutlierDetection {
    /// 0 disables ejection.
    pub consecutive_failures: u32,
    /// First ejection lasts this long; each repeat doubles it...
    pub base_ejection_time: Duration,
    /// ...up to this.
    pub max_ejection_time: Duration,
    /// Never eject more than this percentage of a subset's endpoints.
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

/// Active `grpc.health.v1.Health/Check` probes of every endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// Service name sent in the HealthCheckRequest ("" = the whole server).
    #[serde(default)]
    pub service: String,
    #[serde(default = "default_health_interval")]
    pub interval: Duration,
    #[serde(default = "default_health_timeout")]
    pub timeout: Duration,
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
}

fn default_health_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_health_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_unhealthy_threshold() -> u32 {
    2
}
fn default_healthy_threshold() -> u32 {
    1
}

/// The bounded queue of calls waiting for an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Queue {
    /// Calls that may wait for a ready endpoint; more fail with UNAVAILABLE.
    pub max_pending: u32,
    /// How long a call waits for an endpoint before failing with UNAVAILABLE.
    /// When the balancing has no endpoint at all, calls fail at once.
    pub max_wait: Duration,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            max_pending: 1000,
            max_wait: Duration::from_secs(1),
        }
    }
}
