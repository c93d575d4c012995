//! One `GrpcBalancing` → its headless Services, one per subset.

use grpc_balancer_crds::v1alpha1::GrpcBalancing;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;

use super::balancing::{RenderError, numeric_port, subset_targets};
use crate::names::{SERVICE_PORT_NAME, service_labels};

/// Port of a Service whose target is a named port. A headless Service is
/// never proxied, so this number is only a placeholder; the EndpointSlices
/// carry the backends' real port.
const NAMED_TARGET_SERVICE_PORT: i32 = 50051;

/// The headless Services of a balancing, owned by it.
pub fn desired_services(gb: &GrpcBalancing) -> Result<Vec<Service>, RenderError> {
    let name = gb
        .metadata
        .name
        .as_deref()
        .ok_or_else(|| RenderError::InvalidSpec("the object has no name".into()))?;
    let owner = gb.controller_owner_ref(&()).ok_or_else(|| {
        RenderError::InvalidSpec("the object has no uid yet (not stored by the apiserver)".into())
    })?;
    let port = match &gb.spec.port {
        IntOrString::Int(_) => i32::from(numeric_port(&gb.spec.port).ok_or_else(|| {
            RenderError::InvalidSpec("spec.port must be a port number 1-65535".into())
        })?),
        IntOrString::String(_) => NAMED_TARGET_SERVICE_PORT,
    };
    Ok(subset_targets(gb)
        .into_iter()
        .map(|target| Service {
            metadata: ObjectMeta {
                name: Some(target.service),
                namespace: gb.metadata.namespace.clone(),
                labels: Some(service_labels(name, &target.name)),
                owner_references: Some(vec![owner.clone()]),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                selector: Some(target.selector),
                ports: Some(vec![ServicePort {
                    name: Some(SERVICE_PORT_NAME.into()),
                    port,
                    target_port: Some(gb.spec.port.clone()),
                    protocol: Some("TCP".into()),
                    app_protocol: Some("kubernetes.io/h2c".into()),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        })
        .collect())
}

/// Whether `existing` lacks anything `desired` sets, so an apply is needed.
/// Only the fields the operator owns are compared: the apiserver fills in
/// others (clusterIPs, ipFamilies, sessionAffinity) that must not cause writes.
pub fn service_needs_apply(existing: &Service, desired: &Service) -> bool {
    let labels_match = desired
        .metadata
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| existing.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v));
    let owner_matches = desired
        .metadata
        .owner_references
        .iter()
        .flatten()
        .all(|want| {
            existing
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|have| have.uid == want.uid && have.controller == want.controller)
        });
    let (Some(have), Some(want)) = (&existing.spec, &desired.spec) else {
        return true;
    };
    let ports_match = {
        let have_ports = have.ports.as_deref().unwrap_or_default();
        let want_ports = want.ports.as_deref().unwrap_or_default();
        have_ports.len() == want_ports.len()
            && have_ports.iter().zip(want_ports).all(|(h, w)| {
                h.name == w.name
                    && h.port == w.port
                    && h.target_port == w.target_port
                    && h.protocol == w.protocol
                    && h.app_protocol == w.app_protocol
            })
    };
    !(labels_match
        && owner_matches
        && ports_match
        && have.cluster_ip == want.cluster_ip
        && have.selector == want.selector)
}
