//! What the reflector stores keep of each object: only the fields the
//! operator reads. Applied to every watch event before it reaches a store,
//! so a cache of thousands of objects does not carry their managedFields,
//! the last-applied annotation or the addresses of every endpoint.

use std::collections::BTreeMap;

use grpc_balancer_crds::annotations::{BALANCINGS, INJECT, INJECTED};
use grpc_balancer_crds::v1alpha1::GrpcBalancing;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;

/// Written by `kubectl apply`: a copy of the whole object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn trim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
    }
}

/// Spec, status and identity are read; the rest of the metadata is not.
pub fn balancing(gb: &mut GrpcBalancing) {
    trim_meta(&mut gb.metadata);
}

/// Labels, owner references and the spec fields the operator compares.
pub fn service(svc: &mut Service) {
    trim_meta(&mut svc.metadata);
    svc.metadata.annotations = None;
    svc.status = None;
}

/// Only readiness per endpoint and the ports are read.
pub fn endpoint_slice(slice: &mut EndpointSlice) {
    trim_meta(&mut slice.metadata);
    slice.metadata.annotations = None;
    slice.metadata.owner_references = None;
    for endpoint in &mut slice.endpoints {
        endpoint.addresses = Vec::new();
        endpoint.target_ref = None;
        endpoint.node_name = None;
        endpoint.hints = None;
        endpoint.zone = None;
        endpoint.deprecated_topology = None;
    }
}

/// Pods matter only for the injection annotations.
pub fn pod(pod: &mut PartialObjectMeta<Pod>) {
    let meta = &mut pod.metadata;
    trim_meta(meta);
    meta.labels = None;
    meta.owner_references = None;
    meta.finalizers = None;
    meta.generate_name = None;
    meta.annotations = meta.annotations.take().map(|annotations| {
        annotations
            .into_iter()
            .filter(|(k, _)| k == INJECT || k == INJECTED || k == BALANCINGS)
            .collect::<BTreeMap<_, _>>()
    });
}

/// The data is compared with the rendered config; the rest is not read.
pub fn config_map(cm: &mut ConfigMap) {
    trim_meta(&mut cm.metadata);
    cm.metadata.annotations = None;
    cm.binary_data = None;
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    use super::*;

    fn meta_with_noise() -> ObjectMeta {
        ObjectMeta {
            name: Some("x".into()),
            namespace: Some("ns".into()),
            managed_fields: Some(vec![ManagedFieldsEntry::default()]),
            annotations: Some(BTreeMap::from([
                (LAST_APPLIED.to_owned(), "{}".to_owned()),
                (INJECT.to_owned(), "true".to_owned()),
                ("other".to_owned(), "1".to_owned()),
            ])),
            labels: Some(BTreeMap::from([("app".to_owned(), "a".to_owned())])),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn pods_keep_only_identity_and_the_injection_annotations() {
        let mut p = PartialObjectMeta::<Pod> {
            types: None,
            metadata: meta_with_noise(),
            _phantom: std::marker::PhantomData,
        };
        pod(&mut p);
        assert_eq!(p.metadata.name.as_deref(), Some("x"));
        assert_eq!(p.metadata.managed_fields, None);
        assert_eq!(p.metadata.labels, None);
        let annotations: Vec<_> = p.metadata.annotations.iter().flatten().collect();
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations[0].0, INJECT);
    }

    #[test]
    fn slices_keep_readiness_and_labels() {
        let mut s = EndpointSlice {
            metadata: meta_with_noise(),
            address_type: "IPv4".into(),
            endpoints: vec![Endpoint {
                addresses: vec!["127.0.0.1".into()],
                conditions: Some(EndpointConditions {
                    ready: Some(false),
                    ..EndpointConditions::default()
                }),
                node_name: Some("n".into()),
                ..Endpoint::default()
            }],
            ports: None,
        };
        endpoint_slice(&mut s);
        assert!(s.metadata.labels.is_some());
        assert_eq!(s.metadata.managed_fields, None);
        assert!(s.endpoints[0].addresses.is_empty());
        assert_eq!(s.endpoints[0].node_name, None);
        assert_eq!(
            s.endpoints[0].conditions.as_ref().and_then(|c| c.ready),
            Some(false)
        );
    }

    #[test]
    fn balancings_lose_managed_fields_and_the_last_applied_copy() {
        let mut gb = GrpcBalancing::new(
            "x",
            serde_yaml::from_str("selector: { app: a }\nport: 50051\nlistenerPort: 1\n")
                .expect("test spec parses"),
        );
        gb.metadata = meta_with_noise();
        balancing(&mut gb);
        assert_eq!(gb.metadata.managed_fields, None);
        let annotations = gb.metadata.annotations.clone().unwrap_or_default();
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert!(annotations.contains_key("other"));
    }
}
