//! A namespace's discovery state from what the watches hold: the proxy
//! config rendered exactly as the ConfigMap renders it, and every headless
//! Service's endpoints with their conditions.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use grpc_balancer_crds::config::to_yaml;
use grpc_balancer_crds::v1alpha1::GrpcBalancing;
use grpc_balancer_discovery_api::v1::Endpoint;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::hub::NamespaceState;
use crate::names::SERVICE_PORT_NAME;
use crate::render::{EndpointIndex, NamespaceView, slice_service};

/// The state of `namespace` from its balancings and the EndpointSlices of
/// their headless Services.
pub fn namespace_state<'a>(
    namespace: &str,
    balancings: impl IntoIterator<Item = &'a GrpcBalancing>,
    slices: &[&'a EndpointSlice],
    services: &[&'a Service],
    cluster_domain: &str,
    proxy_admin_port: u16,
) -> Result<NamespaceState, serde_yaml::Error> {
    let index = EndpointIndex::new(namespace, slices.iter().copied());
    let balancings: Vec<&GrpcBalancing> = balancings.into_iter().collect();
    let view = NamespaceView::new(balancings.iter().copied(), &index, cluster_domain)
        .with_proxy_admin_port(proxy_admin_port)
        .with_services(services.iter().copied());
    let config = if view.is_empty() {
        String::new()
    } else {
        to_yaml(&view.proxy_config())?
    };
    Ok(NamespaceState {
        config,
        endpoint_sets: endpoint_sets(namespace, slices, cluster_domain),
    })
}

/// Endpoints by Service DNS name (`<service>.<namespace>.svc.<domain>`, the
/// name the config's subsets resolve), merged over the Service's slices.
pub fn endpoint_sets(
    namespace: &str,
    slices: &[&EndpointSlice],
    cluster_domain: &str,
) -> BTreeMap<String, Vec<Endpoint>> {
    let mut sets: BTreeMap<String, BTreeMap<String, Endpoint>> = BTreeMap::new();
    for slice in slices {
        let Some(service) = slice_service(slice, namespace) else {
            continue;
        };
        let set = sets
            .entry(format!("{service}.{namespace}.svc.{cluster_domain}"))
            .or_default();
        let Some(port) = slice_port(slice) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            // All addresses of an endpoint are the same pod; the first is
            // the one Kubernetes itself uses.
            let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            // Absent conditions mean ready and serving, not terminating
            // (the EndpointConditions API).
            let ready = conditions.ready != Some(false);
            let serving = conditions.serving.unwrap_or(ready);
            let terminating = conditions.terminating.unwrap_or(false);
            let address = SocketAddr::new(ip, port).to_string();
            let pod_name = endpoint
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| r.name.clone())
                .unwrap_or_default();
            let candidate = Endpoint {
                address: address.clone(),
                pod_name,
                zone: endpoint.zone.clone().unwrap_or_default(),
                ready,
                serving,
                terminating,
            };
            // During a slice hand-over one address can be in two slices:
            // the readier word wins.
            match set.get(&address) {
                Some(known) if (known.ready, known.serving) >= (ready, serving) => {}
                _ => {
                    set.insert(address, candidate);
                }
            }
        }
    }
    sets.into_iter()
        .map(|(service, by_address)| (service, by_address.into_values().collect()))
        .collect()
}

/// The slice's port of the `grpc` Service port (or its only unnamed one).
fn slice_port(slice: &EndpointSlice) -> Option<u16> {
    slice.ports.iter().flatten().find_map(|p| {
        let ours = p
            .name
            .as_deref()
            .is_none_or(|n| n.is_empty() || n == SERVICE_PORT_NAME);
        p.port
            .filter(|_| ours)
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n != 0)
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::{
        Endpoint as SliceEndpoint, EndpointConditions, EndpointPort,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

    fn slice(name: &str, service: &str, port: i32, endpoints: Vec<SliceEndpoint>) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: Some([(SERVICE_NAME_LABEL.to_owned(), service.to_owned())].into()),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints,
            ports: Some(vec![EndpointPort {
                name: Some(SERVICE_PORT_NAME.into()),
                port: Some(port),
                ..EndpointPort::default()
            }]),
        }
    }

    fn ep(ip: &str, pod: &str, c: Option<(bool, bool, bool)>) -> SliceEndpoint {
        SliceEndpoint {
            addresses: vec![ip.into()],
            conditions: c.map(|(ready, serving, terminating)| EndpointConditions {
                ready: Some(ready),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: Some(pod.into()),
                ..ObjectReference::default()
            }),
            zone: Some("zone-a".into()),
            ..SliceEndpoint::default()
        }
    }

    #[test]
    fn endpoints_carry_pod_zone_and_conditions() {
        let a = slice(
            "a",
            "grpcb-g",
            50051,
            vec![
                ep("10.0.0.2", "p2", Some((false, true, true))),
                ep("10.0.0.1", "p1", None),
                ep("not-an-ip", "bad", None),
            ],
        );
        let sets = endpoint_sets("ns", &[&a], "cluster.local");
        let set = &sets["grpcb-g.ns.svc.cluster.local"];
        assert_eq!(set.len(), 2, "the unparsable address is left out");
        assert_eq!(set[0].address, "10.0.0.1:50051");
        assert_eq!(
            (set[0].ready, set[0].serving, set[0].terminating),
            (true, true, false)
        );
        assert_eq!(set[1].pod_name, "p2");
        assert_eq!(set[1].zone, "zone-a");
        assert_eq!(
            (set[1].ready, set[1].serving, set[1].terminating),
            (false, true, true)
        );
    }

    #[test]
    fn slices_of_a_service_merge_and_other_namespaces_are_left_out() {
        let a = slice(
            "a",
            "svc",
            1,
            vec![ep("10.0.0.1", "p1", Some((false, false, false)))],
        );
        let b = slice(
            "b",
            "svc",
            1,
            vec![ep("10.0.0.1", "p1", None), ep("10.0.0.3", "p3", None)],
        );
        let mut other = slice("c", "svc", 1, vec![ep("10.9.9.9", "x", None)]);
        other.metadata.namespace = Some("elsewhere".into());
        let sets = endpoint_sets("ns", &[&a, &b, &other], "cluster.local");
        assert_eq!(sets.len(), 1);
        let set = &sets["svc.ns.svc.cluster.local"];
        assert_eq!(set.len(), 2);
        assert!(set[0].ready, "the ready word of the address wins");
    }

    #[test]
    fn a_service_without_endpoints_has_an_empty_set() {
        let a = slice("a", "svc", 1, vec![]);
        let sets = endpoint_sets("ns", &[&a], "cluster.local");
        assert_eq!(sets["svc.ns.svc.cluster.local"], vec![]);
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let a = slice("a", "svc", 8080, vec![ep("fd00::1", "p", None)]);
        let sets = endpoint_sets("ns", &[&a], "cluster.local");
        assert_eq!(
            sets["svc.ns.svc.cluster.local"][0].address,
            "[fd00::1]:8080"
        );
    }
}
