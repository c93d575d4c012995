//! Tests of the test infrastructure, linked as one binary: the acceptance
//! tests run against the real control plane (one for the binary, see
//! `ControlPlane::shared`); `script` runs `scripts/control-plane` as a user
//! does, with control planes of its own.

mod cluster_dns;
mod endpointslices;
mod kubelet;
mod pod_security;
mod script;
mod webhook;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Service, ServicePort, ServiceSpec};
use kube::api::{ObjectMeta, PostParams};

/// A pod as a workload controller would create it; nothing runs it but the kubelet
/// stand-in.
pub fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(to_map(labels)),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("registry.invalid/backend:1".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A headless Service selecting `selector`.
pub fn headless_service(name: &str, selector: &[(&str, &str)]) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(to_map(selector)),
            ports: Some(vec![ServicePort {
                name: Some("grpc".into()),
                port: 50051,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn to_map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub fn pp() -> PostParams {
    PostParams::default()
}
