//! What the EndpointSlices of the headless Services say: ready endpoints and
//! the backends' port number (a named target port arrives here resolved).

use std::collections::HashMap;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::names::SERVICE_PORT_NAME;

/// The endpoints of one Service, summed over its slices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceEndpoints {
    pub ready: i32,
    /// The port of the slice with the most ready endpoints (ties: lowest
    /// port): the proxy resolves one port per subset, so when backends
    /// disagree on a named port's number the majority wins.
    pub port: Option<u16>,
}

/// Endpoints by Service name, for one namespace.
#[derive(Debug, Clone, Default)]
pub struct EndpointIndex {
    services: HashMap<String, ServiceEndpoints>,
}

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The Service an EndpointSlice of `namespace` belongs to; `None` for a
/// slice of another namespace or without the Service label.
pub fn slice_service<'a>(slice: &'a EndpointSlice, namespace: &str) -> Option<&'a str> {
    if slice.metadata.namespace.as_deref() != Some(namespace) {
        return None;
    }
    slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .map(String::as_str)
}

impl EndpointIndex {
    /// Indexes the slices of `namespace` among `slices`.
    pub fn new<'a>(namespace: &str, slices: impl IntoIterator<Item = &'a EndpointSlice>) -> Self {
        // (service) -> (port -> ready endpoints on slices with that port)
        let mut by_port: HashMap<String, (i32, HashMap<u16, i32>)> = HashMap::new();
        for slice in slices {
            let Some(service) = slice_service(slice, namespace) else {
                continue;
            };
            let ready = i32::try_from(
                slice
                    .endpoints
                    .iter()
                    // An absent `ready` means ready (EndpointConditions API).
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
                    .count(),
            )
            .unwrap_or(i32::MAX);
            let port = slice.ports.iter().flatten().find_map(|p| {
                let named_ours = p.name.as_deref().is_none_or(|n| n == SERVICE_PORT_NAME);
                p.port
                    .filter(|_| named_ours)
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| *n != 0)
            });
            let entry = by_port.entry(service.to_owned()).or_default();
            entry.0 = entry.0.saturating_add(ready);
            if let Some(port) = port {
                let weight = entry.1.entry(port).or_default();
                *weight = weight.saturating_add(ready);
            }
        }
        let services = by_port
            .into_iter()
            .map(|(service, (ready, ports))| {
                let port = ports
                    .into_iter()
                    .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
                    .map(|(port, _)| port);
                (service, ServiceEndpoints { ready, port })
            })
            .collect();
        EndpointIndex { services }
    }

    pub fn get(&self, service: &str) -> ServiceEndpoints {
        self.services.get(service).cloned().unwrap_or_default()
    }
}
