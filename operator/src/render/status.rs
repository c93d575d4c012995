//! The status a balancing should have. Deterministic: the same inputs give
//! the same status, so comparing it with the stored one tells whether a
//! write is needed (a controller must not trigger itself).

use grpc_balancer_crds::v1alpha1::{
    ConditionReason, GrpcBalancing, GrpcBalancingStatus, READY_CONDITION,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::balancing::subset_targets;
use super::namespace::{Evaluation, Outcome};

/// The status lists at most this many pods without the proxy.
pub const MAX_PODS_WITHOUT_PROXY: usize = 20;

/// The `Ready` reason and message of an evaluation.
fn ready_reason(gb: &GrpcBalancing, eval: &Evaluation) -> (ConditionReason, String) {
    match &eval.outcome {
        Outcome::NotRendered { reason, message } => (*reason, message.clone()),
        Outcome::Rendered { missing, .. } if !missing.is_empty() => (
            ConditionReason::PortUnresolved,
            format!(
                "subset(s) {} left out of the proxy config: port {:?} is not a container port of their backend pods",
                missing.join(", "),
                port_text(gb)
            ),
        ),
        Outcome::Rendered { .. } => {
            let targets = subset_targets(gb);
            let empty: Vec<String> = targets
                .iter()
                .zip(&eval.subsets)
                .filter(|(t, s)| t.weight > 0 && s.ready_endpoints == 0)
                .map(|(t, s)| format!("{} (Service {})", t.name, s.service))
                .collect();
            if empty.is_empty() {
                (
                    ConditionReason::Reconciled,
                    format!(
                        "in the proxy config with {} ready endpoint(s)",
                        eval.ready_endpoints
                    ),
                )
            } else {
                (
                    ConditionReason::NoEndpoints,
                    format!("no ready endpoint in subset(s) {}", empty.join(", ")),
                )
            }
        }
    }
}

fn port_text(gb: &GrpcBalancing) -> String {
    match &gb.spec.port {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => n.to_string(),
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s.clone(),
    }
}

/// The status to store. `lastTransitionTime` is kept from the stored
/// condition (`stored`: what the object says now, which the caller may know
/// better than `gb.status`) unless the condition's status changes; `now` is
/// used then.
pub fn desired_status(
    gb: &GrpcBalancing,
    stored: Option<&GrpcBalancingStatus>,
    eval: &Evaluation,
    services: Vec<String>,
    pods_without_proxy: Vec<String>,
    now: Time,
) -> GrpcBalancingStatus {
    let (reason, message) = ready_reason(gb, eval);
    let status = if reason.is_ready() { "True" } else { "False" };
    let previous = stored.and_then(|s| s.conditions.iter().find(|c| c.type_ == READY_CONDITION));
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => now,
    };
    let pods_without_proxy = pod_list(pods_without_proxy);
    GrpcBalancingStatus {
        observed_generation: gb.metadata.generation,
        conditions: vec![Condition {
            type_: READY_CONDITION.into(),
            status: status.into(),
            reason: reason.as_str().into(),
            message,
            observed_generation: gb.metadata.generation,
            last_transition_time,
        }],
        services,
        subsets: eval.subsets.clone(),
        subset_weights: gb
            .spec
            .subsets
            .iter()
            .map(|s| format!("{}={}", s.name, s.weight))
            .collect::<Vec<_>>()
            .join(","),
        ready_endpoints: eval.ready_endpoints,
        address: eval.address.map(|a| a.to_string()),
        pods_without_proxy,
        pods_without_balancing: Vec::new(),
    }
}

/// A list of pod names as the status holds it: sorted, each once, at most
/// [`MAX_PODS_WITHOUT_PROXY`].
pub fn pod_list(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names.dedup();
    names.truncate(MAX_PODS_WITHOUT_PROXY);
    names
}
