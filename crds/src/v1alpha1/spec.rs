//! The spec of `GrpcBalancing`. Every field has a default that works, except
//! the ones that say what to balance: `selector`, `port`, and where clients
//! reach it: `listenerPort` or `service`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::GrpcBalancingStatus;
use crate::config::{Duration, PolicyKind};

/// Calls from client pods to a set of gRPC backend pods, balanced per
/// request by the injected proxy, optionally split by weight into subsets.
// Several printer columns share a type, which the lint takes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "grpcbalancer.io",
    version = "v1alpha1",
    kind = "GrpcBalancing",
    plural = "grpcbalancings",
    shortname = "grpcb",
    namespaced,
    status = "GrpcBalancingStatus",
    derive = "PartialEq",
    doc = "Per-request balancing of gRPC calls from client pods to backend pods, by the injected grpc-balancer proxy.",
    printcolumn(
        name = "Policy",
        type_ = "string",
        description = "How an endpoint is chosen per call",
        json_path = ".spec.policy.kind"
    ),
    printcolumn(
        name = "Subsets",
        type_ = "string",
        description = "Subsets and their weights",
        json_path = ".status.subsetWeights"
    ),
    printcolumn(
        name = "Listener",
        type_ = "integer",
        description = "Loopback port of the proxy listener in client pods",
        json_path = ".spec.listenerPort"
    ),
    printcolumn(
        name = "Service",
        type_ = "string",
        description = "Service whose names client pods resolve to the proxy",
        json_path = ".spec.service"
    ),
    printcolumn(
        name = "Address",
        type_ = "string",
        description = "Loopback address of the proxy listener for the Service's names",
        json_path = ".status.address"
    ),
    printcolumn(
        name = "Endpoints",
        type_ = "integer",
        description = "Ready backend endpoints over all subsets",
        json_path = ".status.readyEndpoints"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        description = "Whether the balancing is in the proxy config and has endpoints",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.listenerPort) != has(self.service)",
    "message": "set exactly one of listenerPort (the app dials 127.0.0.1:listenerPort) and service (the app dials that Service by name)"
}]))]
pub struct GrpcBalancingSpec {
    /// Labels of the backend pods (equality only, like a Service selector).
    #[schemars(extend("minProperties" = 1, "maxProperties" = 16))]
    pub selector: BTreeMap<String, String>,

    /// gRPC port of the backend pods: a number, or the name of a container
    /// port (resolved from the backends' EndpointSlices).
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "type(self) == int ? (self >= 1 && self <= 65535) : (size(self) <= 15 && self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && self.matches('[a-z]'))",
        "message": "port must be a number 1-65535 or a container port name (at most 15 of a-z, 0-9, '-', with a letter)"
    }]))]
    pub port: IntOrString,

    /// Port the injected proxy listens on at 127.0.0.1 in client pods for
    /// this balancing (the app dials `GRPC_BALANCER_<NAME>_ADDR`); unique
    /// within the namespace. Exactly one of `listenerPort` and `service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub listener_port: Option<u16>,

    /// The Service of this namespace that the clients already dial by name
    /// (`greeter`, `greeter.<ns>`, `greeter.<ns>.svc`, the full name): client
    /// pods resolve those names to a loopback address of this balancing's
    /// own, where the injected proxy listens on the Service's port, so an
    /// unmodified client is balanced per call. Exactly one of `listenerPort`
    /// and `service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend(
        "maxLength" = 63,
        "pattern" = "^[a-z]([-a-z0-9]*[a-z0-9])?$"
    ))]
    pub service: Option<String>,

    #[serde(default)]
    pub policy: Policy,

    /// Weighted subsets of the backend pods, e.g. one per version. Empty:
    /// all selected pods form one subset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend(
        "maxItems" = 16,
        "x-kubernetes-validations" = [
            {
                "rule": "self.all(a, self.exists_one(b, b.name == a.name))",
                "message": "subset names must be unique"
            },
            {
                "rule": "size(self) == 0 || self.exists(s, s.weight > 0)",
                "message": "at least one subset needs a weight above 0"
            }
        ]
    ))]
    pub subsets: Vec<Subset>,

    /// Deadline the proxy puts on each call. Absent: none beyond the
    /// caller's own `grpc-timeout`, so long-lived streams are not cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "duration(self) > duration('0s')",
        "message": "timeout must be above 0 (leave it out for no proxy deadline)"
    }]))]
    pub timeout: Option<Duration>,

    #[serde(default)]
    pub retries: Retries,

    #[serde(default)]
    pub outlier_detection: OutlierDetection,

    /// Active `grpc.health.v1` checks of every endpoint; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,

    /// How often the proxy re-resolves the headless Services.
    #[serde(default = "default_dns_refresh_interval")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "duration(self) >= duration('100ms')",
        "message": "dnsRefreshInterval must be at least 100ms"
    }]))]
    pub dns_refresh_interval: Duration,

    #[serde(default)]
    pub queue: Queue,
}

fn default_dns_refresh_interval() -> Duration {
    Duration::from_secs(5)
}

/// How an endpoint is chosen for each call within a subset.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.kind != 'ring_hash' || has(self.header)",
    "message": "ring_hash needs header: the request header whose value is hashed"
}]))]
pub struct Policy {
    #[serde(default)]
    pub kind: PolicyKind,
    /// Request header hashed by `ring_hash` (lower case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = "^[a-z0-9!#$%&'*+^_`|~.-]+$", "maxLength" = 128))]
    pub header: Option<String>,
}

/// A weighted group of the backend pods, selected by extra labels.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    /// Names the subset's headless Service `grpcb-<balancing>-<subset>`.
    #[schemars(extend("pattern" = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength" = 16))]
    pub name: String,
    /// Labels added to the spec's selector to select this subset's pods.
    #[schemars(extend("minProperties" = 1, "maxProperties" = 16))]
    pub labels: BTreeMap<String, String>,
    /// Relative share of calls; 0 sends none (e.g. to drain a version).
    #[serde(default = "default_weight")]
    #[schemars(range(max = 1_000_000))]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// Retries of calls that never reached a backend, bounded by a budget.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Retries {
    /// Attempts per call including the first; 1 disables retries.
    #[schemars(range(min = 1, max = 10))]
    pub max_attempts: u32,
    /// Retries may add at most this percentage on top of original calls...
    #[schemars(range(max = 100))]
    pub budget_percent: u32,
    /// ...but this many retries per second are always allowed.
    #[schemars(range(max = 100_000))]
    pub min_retries_per_second: u32,
    /// Full method paths (`/pkg.Service/Method`) that are safe to retry
    /// after a backend answered UNAVAILABLE.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("maxItems" = 64, "items" = { "type": "string", "pattern": "^/[^/]+/[^/]+$", "maxLength": 256 }))]
    pub idempotent_methods: Vec<String>,
    /// Requests up to this size are buffered so they can be replayed.
    #[schemars(range(max = 16_777_216))]
    pub max_buffered_bytes: u32,
}

impl Default for Retries {
    fn default() -> Self {
        let proxy = crate::config::Retries::default();
        Retries {
            max_attempts: proxy.max_attempts,
            budget_percent: proxy.budget_percent,
            min_retries_per_second: proxy.min_retries_per_second,
            idempotent_methods: proxy.idempotent_methods,
            max_buffered_bytes: proxy.max_buffered_bytes,
        }
    }
}

/// Passive ejection of endpoints that fail calls in a row.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "duration(self.maxEjectionTime) >= duration(self.baseEjectionTime)",
    "message": "maxEjectionTime must not be below baseEjectionTime"
}]))]
pub struct OutlierDetection {
    /// Failures in a row that eject an endpoint; 0 disables ejection.
    #[schemars(range(max = 10_000))]
    pub consecutive_failures: u32,
    /// First ejection time; each repeat doubles it...
    pub base_ejection_time: Duration,
    /// ...up to this.
    pub max_ejection_time: Duration,
    /// Never eject more than this percentage of a subset's endpoints.
    #[schemars(range(max = 100))]
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        let proxy = crate::config::OutlierDetection::default();
        OutlierDetection {
            consecutive_failures: proxy.consecutive_failures,
            base_ejection_time: proxy.base_ejection_time,
            max_ejection_time: proxy.max_ejection_time,
            max_ejection_percent: proxy.max_ejection_percent,
        }
    }
}

/// Active `grpc.health.v1.Health/Check` probes of every endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "duration(self.interval) >= duration('100ms')",
        "message": "healthCheck.interval must be at least 100ms"
    },
    {
        "rule": "duration(self.timeout) > duration('0s')",
        "message": "healthCheck.timeout must be above 0"
    }
]))]
pub struct HealthCheck {
    /// Service name sent in the check ("" asks about the whole server).
    #[schemars(extend("maxLength" = 253))]
    pub service: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Failed checks in a row that mark an endpoint unhealthy.
    #[schemars(range(min = 1, max = 100))]
    pub unhealthy_threshold: u32,
    /// Passed checks in a row that mark it healthy again.
    #[schemars(range(min = 1, max = 100))]
    pub healthy_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            service: String::new(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            unhealthy_threshold: 2,
            healthy_threshold: 1,
        }
    }
}

/// The bounded queue of calls waiting for an endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Queue {
    /// Calls that may wait for a ready endpoint; more fail with UNAVAILABLE.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_pending: u32,
    /// How long a call waits for an endpoint before failing.
    pub max_wait: Duration,
}

impl Default for Queue {
    fn default() -> Self {
        let proxy = crate::config::Queue::default();
        Queue {
            max_pending: proxy.max_pending,
            max_wait: proxy.max_wait,
        }
    }
}
