//! Everything about one namespace's balancings that depends on more than one
//! object: which balancing keeps a contested listener port, and the
//! namespace's proxy config. Both the per-balancing status and the ConfigMap
//! come from here, so they always agree.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use grpc_balancer_crds::config::{Balancing, DEFAULT_ADMIN_PORT, ProxyConfig};
use grpc_balancer_crds::v1alpha1::{ConditionReason, GrpcBalancing, SubsetStatus};
use k8s_openapi::api::core::v1::Service;

use super::balancing::{balancing, balancing_with_front, numeric_port, subset_targets};
use super::endpoints::EndpointIndex;
use super::front::{assign_addresses, front};

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
    /// `spec.service` → name of the balancing that keeps it
    service_claims: HashMap<&'a str, &'a str>,
    /// Loopback address of each balancing that keeps its `spec.service`
    /// (one left out found the pool exhausted).
    addresses: HashMap<&'a str, Ipv4Addr>,
    /// The namespace's Services, by name (those `spec.service` names).
    services: HashMap<&'a str, &'a Service>,
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
    /// With `spec.service`: the balancing's loopback address, once it has one.
    pub address: Option<Ipv4Addr>,
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
        let mut service_claims = HashMap::new();
        let mut address_claims = Vec::new();
        for gb in by_age {
            let name = gb.metadata.name.as_deref().unwrap_or_default();
            if let Some(port) = gb.spec.listener_port {
                listener_owners.entry(port).or_insert(name);
            }
            // The older balancing keeps a Service named twice; only the
            // ones that keep theirs take an address from the pool.
            if let Some(service) = gb.spec.service.as_deref()
                && *service_claims.entry(service).or_insert(name) == name
            {
                let recorded = gb.status.as_ref().and_then(|s| s.address.as_deref());
                address_claims.push((name, recorded));
            }
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
            service_claims,
            addresses: assign_addresses(&address_claims),
            services: HashMap::new(),
        }
    }

    /// The view with the namespace's Services, which `spec.service` names
    /// (without them, every such balancing finds its Service missing).
    pub fn with_services(mut self, services: impl IntoIterator<Item = &'a Service>) -> Self {
        self.services = services
            .into_iter()
            .filter_map(|s| Some((s.metadata.name.as_deref()?, s)))
            .collect();
        self
    }

    /// The loopback address of balancing `name`, if it names a Service and
    /// has one.
    pub fn address_of(&self, name: &str) -> Option<Ipv4Addr> {
        self.addresses.get(name).copied()
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
        let address = self.address_of(name);
        let not_rendered = |reason, message| Outcome::NotRendered { reason, message };
        let outcome = if let Some(port) = gb
            .spec
            .listener_port
            .filter(|p| *p == self.proxy_admin_port)
        {
            not_rendered(
                ConditionReason::InvalidSpec,
                format!(
                    "listenerPort {port} is the injected proxy's admin port: the proxy could not start; choose another port"
                ),
            )
        } else if let Some((service, owner)) = self.service_taken_from(gb) {
            not_rendered(
                ConditionReason::ServiceNameConflict,
                format!(
                    "headless Service {service} is already that of the older GrpcBalancing {owner:?}; rename one of them"
                ),
            )
        } else if let Some(service) = gb.spec.service.as_deref() {
            match (self.service_claims.get(service), address) {
                (Some(owner), _) if *owner != name => not_rendered(
                    ConditionReason::ServiceConflict,
                    format!(
                        "Service {service:?} is already balanced by the older GrpcBalancing {owner:?}: one Service, one balancing"
                    ),
                ),
                (_, None) => not_rendered(
                    ConditionReason::AddressPoolExhausted,
                    format!(
                        "every loopback address of {}-{} is taken by an older GrpcBalancing of the namespace that names a Service",
                        super::front::POOL_FIRST,
                        super::front::POOL_LAST
                    ),
                ),
                (_, Some(address)) => {
                    let found = self.services.get(service).copied();
                    match front(gb, service, found, address, self.cluster_domain).and_then(
                        |front| balancing_with_front(gb, &ports, self.cluster_domain, Some(front)),
                    ) {
                        Ok(balancing) => rendered(balancing, &targets),
                        Err(e) => not_rendered(e.reason(), e.to_string()),
                    }
                }
            }
        } else {
            match gb.spec.listener_port.and_then(|p| self.listener_owner(p)) {
                Some(owner) if owner != name => not_rendered(
                    ConditionReason::ListenerPortConflict,
                    format!(
                        "listener port {} is used by the older GrpcBalancing {owner:?}",
                        gb.spec.listener_port.unwrap_or_default()
                    ),
                ),
                _ => match balancing(gb, &ports, self.cluster_domain) {
                    Ok(balancing) => rendered(balancing, &targets),
                    Err(e) => not_rendered(e.reason(), e.to_string()),
                },
            }
        };
        Evaluation {
            outcome,
            subsets,
            ready_endpoints,
            address,
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

/// A rendered balancing, with the subsets left out for an unresolved port.
fn rendered(balancing: Balancing, targets: &[super::balancing::SubsetTarget]) -> Outcome {
    let names: Vec<&str> = balancing.subsets.iter().map(|s| s.name.as_str()).collect();
    let missing = targets
        .iter()
        .filter(|t| !names.contains(&t.name.as_str()))
        .map(|t| t.name.clone())
        .collect();
    Outcome::Rendered {
        balancing: Box::new(balancing),
        missing,
    }
}
