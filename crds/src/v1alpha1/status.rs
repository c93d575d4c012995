//! The status of `GrpcBalancing`, written by the operator only.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Type of the one condition the operator maintains.
pub const READY_CONDITION: &str = "Ready";

/// What the operator found, as of `observedGeneration`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrpcBalancingStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`: in the proxy config and with ready endpoints.
    #[serde(default)]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["type"]
    ))]
    pub conditions: Vec<Condition>,

    /// Names of the headless Services the operator keeps for this balancing.
    #[serde(default)]
    pub services: Vec<String>,

    /// One entry per subset, in spec order.
    #[serde(default)]
    pub subsets: Vec<SubsetStatus>,

    /// The subsets and their weights, `v1=75,v2=25` (absent without
    /// subsets), for `kubectl get`: a printer column shows only the first
    /// value of a list.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subset_weights: String,

    /// Ready endpoints over all subsets.
    #[serde(default)]
    pub ready_endpoints: i32,

    /// With `spec.service`: the loopback address (`127.0.10.x`) client pods
    /// resolve the Service's names to, where the proxy listens on the
    /// Service's port. Kept for the balancing's life: pods created with it
    /// keep reaching the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,

    /// Pods of the namespace annotated `grpcbalancer.io/sidecar.inject: "true"`
    /// that run without the proxy (created before the webhook was up, or
    /// while it was failing open). Sorted, at most 20 names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods_without_proxy: Vec<String>,

    /// Pods of the namespace that run the proxy but were created while this
    /// balancing was not in the proxy config (not rendered yet, or created
    /// before it), so their containers lack its `GRPC_BALANCER_<NAME>_ADDR`
    /// env var and, with `spec.service`, the host aliases that send the
    /// Service's names to the proxy: restart them to get both. Listed only while the balancing is
    /// in the proxy config. Sorted, at most 20 names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods_without_balancing: Vec<String>,
}

/// What the operator found for one subset.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubsetStatus {
    pub name: String,
    /// The subset's headless Service.
    pub service: String,
    /// The backends' port number (a named port resolved); absent while a
    /// named port has not been seen on any backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Ready endpoints in the Service's EndpointSlices.
    pub ready_endpoints: i32,
}

/// Reasons of the `Ready` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionReason {
    /// Services and proxy config are in place and every subset with weight
    /// has ready endpoints.
    Reconciled,
    /// In the proxy config, but some subset with weight has no ready endpoint.
    NoEndpoints,
    /// The spec cannot be rendered into a proxy config.
    InvalidSpec,
    /// An older balancing of the namespace uses the same listener port.
    ListenerPortConflict,
    /// A named backend port is not (yet) known on any backend pod.
    PortUnresolved,
    /// An older balancing of the namespace already has a headless Service of
    /// the name one of this balancing's would get (`grpcb-a-b` is both
    /// balancing `a-b` and subset `b` of balancing `a`).
    ServiceNameConflict,
    /// `spec.service` names no Service of the namespace.
    ServiceNotFound,
    /// `spec.service` names a Service the proxy cannot stand in for
    /// (headless, `ExternalName`, a UDP or SCTP port, no port for
    /// `spec.port`).
    ServiceUnsupported,
    /// An older balancing of the namespace already names the same Service.
    ServiceConflict,
    /// Every loopback address of the pool is taken by older balancings of
    /// the namespace that name a Service.
    AddressPoolExhausted,
}

impl ConditionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionReason::Reconciled => "Reconciled",
            ConditionReason::NoEndpoints => "NoEndpoints",
            ConditionReason::InvalidSpec => "InvalidSpec",
            ConditionReason::ListenerPortConflict => "ListenerPortConflict",
            ConditionReason::PortUnresolved => "PortUnresolved",
            ConditionReason::ServiceNameConflict => "ServiceNameConflict",
            ConditionReason::ServiceNotFound => "ServiceNotFound",
            ConditionReason::ServiceUnsupported => "ServiceUnsupported",
            ConditionReason::ServiceConflict => "ServiceConflict",
            ConditionReason::AddressPoolExhausted => "AddressPoolExhausted",
        }
    }

    /// `Ready` is `True` only when everything works.
    pub fn is_ready(self) -> bool {
        self == ConditionReason::Reconciled
    }
}

impl std::fmt::Display for ConditionReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
