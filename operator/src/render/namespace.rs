//! Everything about one namespace's balancings that depends on more than one
//! object: which balancing keeps a contested listener port, and the
//! namespace's proxy config. Both the per-balancing status and the ConfigMap
//! come from here, so they always agree.

use std::collections::{HashMap, HashSet};

use grpc_balancer_crds::config::{Balancing, DEFAULT_ADMIN_PORT, ProxyConfig};
use grpc_balancer_crds::v1alpha1::{ConditionReason, GrpcBalancing, SubsetStatus};

use super::balancing::{balancing, numeric_port, subset_targets};
use super::endpoints::EndpointIndex;

/// The balancings of one namespace and their endpoints.
pub struct NamespaceView<'a> {
    /// Sorted by name; objects being deleted are left out.
    balancings: Vec<&'a GrpcBalancing>,
    endpoints: &'a EndpointIndex,
    cluster_domain: &'a str,
    /// listener port → name of the balancing that keeps it
    listener_owners: HashMap<u16, &'a str>,
    /// headless Service name → name of the balancing that keeps it
    service_owners: HashMap<String, &'a str>,
    /// The injected proxies' admin port, which no listener may take.
    proxy_admin_port: u16,
}

/// Whether a balancing made it into the proxy config, and why not.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// In the proxy config. `missing` names subsets left out for an
    /// unresolved named port.
    Rendered {
        balancing: Box<Balancing>,
        missing: Vec<String>,
    },
    NotRendered {
        reason: ConditionReason,
        message: String,
    },
}

/// What the operator knows about one balancing.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub outcome: Outcome,
    pub subsets: Vec<SubsetStatus>,
    pub ready_endpoints: i32,
}

impl<'a> NamespaceView<'a> {
    pub fn new(
        balancings: impl IntoIterator<Item = &'a GrpcBalancing>,
        endpoints: &'a EndpointIndex,
        cluster_domain: &'a str,
    ) -> Self {
        let mut balancings: Vec<&GrpcBalancing> = balancings
            .into_iter()
            .filter(|gb| gb.metadata.deletion_timestamp.is_none() && gb.metadata.name.is_some())
            .collect();
        balancings.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        // The older balancing keeps a contested port: the earlier
        // creationTimestamp, then the smaller name (timestamps have
        // one-second resolution, so ties happen).
        let mut by_age = balancings.clone();
        by_age.sort_by(|a, b| {
            let created = |gb: &GrpcBalancing| gb.metadata.creation_timestamp.clone().map(|t| t.0);
            created(a)
                .cmp(&created(b))
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        });
        let mut listener_owners = HashMap::new();
        let mut service_owners = HashMap::new();
        for gb in by_age {
            let name = gb.metadata.name.as_deref().unwrap_or_default();
            listener_owners.entry(gb.spec.listener_port).or_insert(name);
            // Service names are not injective (`a-b` and `a` + subset `b`
            // give the same one): the same rule as for ports keeps one
            // Service from being applied by two balancings in turn.
            for target in subset_targets(gb) {
                service_owners.entry(target.service).or_insert(name);
            }
        }
        NamespaceView {
            balancings,
            endpoints,
            cluster_domain,
            listener_owners,
            service_owners,
            proxy_admin_port: DEFAULT_ADMIN_PORT,
        }
    }

    /// The view for proxies whose admin port is `port` (a chart setting).
    pub fn with_proxy_admin_port(mut self, port: u16) -> Self {
        self.proxy_admin_port = port;
        self
    }

    /// The balancing that keeps the headless Service `service`, if any.
    pub fn service_owner(&self, service: &str) -> Option<&str> {
        self.service_owners.get(service).copied()
    }

    /// The Service names kept by balancings other than `name`.
    pub fn services_kept_by_others(&self, name: &str) -> HashSet<String> {
        self.service_owners
            .iter()
            .filter(|(_, owner)| **owner != name)
            .map(|(service, _)| service.clone())
            .collect()
    }

    /// The first of `gb`'s Service names that an older balancing keeps,
    /// with that balancing's name.
    pub fn service_taken_from(&self, gb: &GrpcBalancing) -> Option<(String, &str)> {
        let name = gb.metadata.name.as_deref().unwrap_or_default();
        subset_targets(gb).into_iter().find_map(|t| {
            let owner = self.service_owner(&t.service)?;
            (owner != name).then_some((t.service, owner))
        })
    }

    /// The balancing that keeps `port`, if any.
    pub fn listener_owner(&self, port: u16) -> Option<&str> {
        self.listener_owners.get(&port).copied()
    }

    pub fn evaluate(&self, gb: &GrpcBalancing) -> Evaluation {
        let name = gb.metadata.name.as_deref().unwrap_or_default();
        let targets = subset_targets(gb);
        let numeric = numeric_port(&gb.spec.port);
        let mut ports = Vec::with_capacity(targets.len());
        let mut subsets = Vec::with_capacity(targets.len());
        let mut ready_endpoints = 0i32;
        for target in &targets {
            let endpoints = self.endpoints.get(&target.service);
            let port = numeric.or(endpoints.port);
            ports.push(port);
            ready_endpoints = ready_endpoints.saturating_add(endpoints.ready);
            subsets.push(SubsetStatus {
                name: target.name.clone(),
                service: target.service.clone(),
                port: port.map(i32::from),
                ready_endpoints: endpoints.ready,
            });
        }
        let outcome = if gb.spec.listener_port == self.proxy_admin_port {
            Outcome::NotRendered {
                reason: ConditionReason::InvalidSpec,
                message: format!(
                    "listenerPort {} is the injected proxy's admin port: the proxy could not start; choose another port",
                    gb.spec.listener_port
                ),
            }
        } else if let Some((service, owner)) = self.service_taken_from(gb) {
            Outcome::NotRendered {
                reason: ConditionReason::ServiceNameConflict,
                message: format!(
                    "headless Service {service} is already that of the older GrpcBalancing {owner:?}; rename one of them"
                ),
            }
        } else {
            match self.listener_owner(gb.spec.listener_port) {
                Some(owner) if owner != name => Outcome::NotRendered {
                    reason: ConditionReason::ListenerPortConflict,
                    message: format!(
                        "listener port {} is used by the older GrpcBalancing {owner:?}",
                        gb.spec.listener_port
                    ),
                },
                _ => match balancing(gb, &ports, self.cluster_domain) {
                    Ok(balancing) => {
                        let balancing = Box::new(balancing);
                        let rendered: Vec<&str> =
                            balancing.subsets.iter().map(|s| s.name.as_str()).collect();
                        let missing = targets
                            .iter()
                            .filter(|t| !rendered.contains(&t.name.as_str()))
                            .map(|t| t.name.clone())
                            .collect();
                        Outcome::Rendered { balancing, missing }
                    }
                    Err(e) => Outcome::NotRendered {
                        reason: e.reason(),
                        message: e.to_string(),
                    },
                },
            }
        };
        Evaluation {
            outcome,
            subsets,
            ready_endpoints,
        }
    }

    /// The namespace's proxy config: every rendered balancing, by name.
    pub fn proxy_config(&self) -> ProxyConfig {
        let balancings = self
            .balancings
            .iter()
            .filter_map(|gb| match self.evaluate(gb).outcome {
                Outcome::Rendered { balancing, .. } => Some(*balancing),
                Outcome::NotRendered { .. } => None,
            })
            .collect();
        ProxyConfig { balancings }
    }

    /// Whether the namespace has any balancing (the ConfigMap exists while
    /// it does).
    pub fn is_empty(&self) -> bool {
        self.balancings.is_empty()
    }
}
