//! One `GrpcBalancing` → one `Balancing` of the proxy config.

use std::collections::BTreeMap;

use grpc_balancer_crds::config::{
    self, Balancing, Discovery, DnsDiscovery, Policy, ProxyConfig, ServiceFront, Subset,
};
use grpc_balancer_crds::v1alpha1::{ConditionReason, GrpcBalancing};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::names::{DEFAULT_SUBSET, service_name};

/// Why a balancing is left out of the proxy config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("{0}")]
    InvalidSpec(String),
    #[error("{0}")]
    PortUnresolved(String),
    #[error("{0}")]
    ServiceNotFound(String),
    #[error("{0}")]
    ServiceUnsupported(String),
}

impl RenderError {
    pub fn reason(&self) -> ConditionReason {
        match self {
            RenderError::InvalidSpec(_) => ConditionReason::InvalidSpec,
            RenderError::PortUnresolved(_) => ConditionReason::PortUnresolved,
            RenderError::ServiceNotFound(_) => ConditionReason::ServiceNotFound,
            RenderError::ServiceUnsupported(_) => ConditionReason::ServiceUnsupported,
        }
    }
}

/// One subset as the operator sees it: what its Service selects and how
/// much traffic it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubsetTarget {
    /// Subset name in the proxy config and in the status.
    pub name: String,
    pub service: String,
    pub weight: u32,
    /// The spec's selector plus the subset's labels.
    pub selector: BTreeMap<String, String>,
}

/// The subsets of a balancing, in spec order; one covering every selected
/// pod when the spec has none.
pub fn subset_targets(gb: &GrpcBalancing) -> Vec<SubsetTarget> {
    let name = gb.metadata.name.as_deref().unwrap_or_default();
    if gb.spec.subsets.is_empty() {
        return vec![SubsetTarget {
            name: DEFAULT_SUBSET.to_owned(),
            service: service_name(name, None),
            weight: 1,
            selector: gb.spec.selector.clone(),
        }];
    }
    gb.spec
        .subsets
        .iter()
        .map(|s| {
            let mut selector = gb.spec.selector.clone();
            selector.extend(s.labels.clone());
            SubsetTarget {
                name: s.name.clone(),
                service: service_name(name, Some(&s.name)),
                weight: s.weight,
                selector,
            }
        })
        .collect()
}

/// The backends' port as a number when the spec says one.
pub(crate) fn numeric_port(port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok().filter(|p| *p != 0),
        IntOrString::String(_) => None,
    }
}

/// Renders the balancing. `ports[i]` is the resolved backend port of
/// `subset_targets(gb)[i]` (`None` while a named port is unknown); subsets
/// without a port are left out, and the balancing too when none is left.
/// The result passes the proxy's own validation, or this fails with
/// `InvalidSpec` and the proxy's messages.
pub fn balancing(
    gb: &GrpcBalancing,
    ports: &[Option<u16>],
    cluster_domain: &str,
) -> Result<Balancing, RenderError> {
    balancing_with_front(gb, ports, cluster_domain, None)
}

/// [`balancing`] for a balancing that names a Service: it listens where
/// `front` says (see [`super::front`]) instead of on `listenerPort`.
pub fn balancing_with_front(
    gb: &GrpcBalancing,
    ports: &[Option<u16>],
    cluster_domain: &str,
    front: Option<(String, ServiceFront)>,
) -> Result<Balancing, RenderError> {
    let name = gb
        .metadata
        .name
        .clone()
        .ok_or_else(|| RenderError::InvalidSpec("the object has no name".into()))?;
    let namespace = gb
        .metadata
        .namespace
        .as_deref()
        .ok_or_else(|| RenderError::InvalidSpec("the object has no namespace".into()))?;
    if let IntOrString::Int(n) = gb.spec.port
        && numeric_port(&gb.spec.port).is_none()
    {
        return Err(RenderError::InvalidSpec(format!(
            "spec.port: {n} is not a port number 1-65535"
        )));
    }
    let spec = &gb.spec;
    let targets = subset_targets(gb);
    let mut unresolved = Vec::new();
    let subsets: Vec<Subset> = targets
        .iter()
        .zip(ports.iter().copied().chain(std::iter::repeat(None)))
        .filter_map(|(target, port)| {
            let Some(port) = port else {
                unresolved.push(target.name.as_str());
                return None;
            };
            Some(Subset {
                name: target.name.clone(),
                weight: target.weight,
                discovery: Discovery::dns(DnsDiscovery {
                    name: format!("{}.{namespace}.svc.{cluster_domain}", target.service),
                    port,
                    refresh_interval: spec.dns_refresh_interval,
                }),
            })
        })
        .collect();
    if subsets.is_empty() || subsets.iter().all(|s| s.weight == 0) && !unresolved.is_empty() {
        let port = match &spec.port {
            IntOrString::String(s) => s.as_str(),
            IntOrString::Int(_) => "",
        };
        return Err(RenderError::PortUnresolved(format!(
            "port {port:?} is not a container port of any backend pod of subset(s) {}",
            unresolved.join(", ")
        )));
    }
    let (listen, service) = match (front, spec.listener_port) {
        (Some((listen, front)), _) => (listen, Some(front)),
        (None, Some(port)) => (format!("127.0.0.1:{port}"), None),
        (None, None) => {
            return Err(RenderError::InvalidSpec(
                "set spec.listenerPort or spec.service: the clients reach the proxy through one of them".into(),
            ));
        }
    };
    let balancing = Balancing {
        name,
        listen,
        service,
        policy: Policy {
            kind: spec.policy.kind,
            header: spec.policy.header.clone(),
        },
        subsets,
        timeout: spec.timeout,
        retries: config::Retries {
            max_attempts: spec.retries.max_attempts,
            budget_percent: spec.retries.budget_percent,
            min_retries_per_second: spec.retries.min_retries_per_second,
            idempotent_methods: spec.retries.idempotent_methods.clone(),
            max_buffered_bytes: spec.retries.max_buffered_bytes,
        },
        outlier_detection: config::OutlierDetection {
            consecutive_failures: spec.outlier_detection.consecutive_failures,
            base_ejection_time: spec.outlier_detection.base_ejection_time,
            max_ejection_time: spec.outlier_detection.max_ejection_time,
            max_ejection_percent: spec.outlier_detection.max_ejection_percent,
        },
        health_check: spec.health_check.as_ref().map(|h| config::HealthCheck {
            service: h.service.clone(),
            interval: h.interval,
            timeout: h.timeout,
            unhealthy_threshold: h.unhealthy_threshold,
            healthy_threshold: h.healthy_threshold,
        }),
        queue: config::Queue {
            max_pending: spec.queue.max_pending,
            max_wait: spec.queue.max_wait,
        },
    };
    // The proxy's own checks, so a spec the CRD schema let through (an old
    // CRD, a disabled validation) never reaches a proxy as a bad config.
    let errors = config::validate(&ProxyConfig {
        balancings: vec![balancing.clone()],
    });
    if errors.is_empty() {
        Ok(balancing)
    } else {
        let messages: Vec<String> = errors
            .iter()
            .map(|e| {
                let path = e.path.strip_prefix("balancings[0]").unwrap_or(&e.path);
                format!("{}: {}", path.trim_start_matches('.'), e.message)
            })
            .collect();
        Err(RenderError::InvalidSpec(messages.join("; ")))
    }
}
