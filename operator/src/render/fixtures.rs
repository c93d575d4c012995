//! Test objects, for the unit tests and (with the `test-util` feature)
//! the integration tests.

use grpc_balancer_crds::v1alpha1::GrpcBalancing;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

/// The two-subset balancing of the docs: v1 75, v2 25, port 50051, listener 15001.
pub const GREETER: &str = r#"
apiVersion: grpcbalancer.io/v1alpha1
kind: GrpcBalancing
metadata:
  name: greeter
  namespace: demo
  uid: 0b1c2d3e-0000-4000-8000-000000000001
  generation: 3
  creationTimestamp: "2026-01-01T00:00:00Z"
spec:
  selector: { app: greeter }
  port: 50051
  listenerPort: 15001
  policy: { kind: round_robin }
  subsets:
    - { name: v1, labels: { version: v1 }, weight: 75 }
    - { name: v2, labels: { version: v2 }, weight: 25 }
"#;

/// A balancing parsed from YAML (as the apiserver would store it, minus defaults).
pub fn balancing(yaml: &str) -> GrpcBalancing {
    serde_yaml::from_str(yaml).expect("fixture is a valid GrpcBalancing")
}

/// A balancing as a user writes it: a name and the YAML of its spec.
pub fn with_spec(name: &str, spec_yaml: &str) -> GrpcBalancing {
    let spec = serde_yaml::from_str(spec_yaml).expect("test spec parses");
    GrpcBalancing::new(name, spec)
}

/// [`GREETER`]'s spec under another name, nothing else set.
pub fn greeter(name: &str) -> GrpcBalancing {
    GrpcBalancing::new(name, balancing(GREETER).spec)
}

/// A balancing with the given name, listener port and creation time.
pub fn named(name: &str, listener_port: u16, created: &str) -> GrpcBalancing {
    let mut gb = balancing(GREETER);
    gb.metadata.name = Some(name.into());
    gb.metadata.uid = Some(format!("uid-{name}"));
    gb.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        created.parse().expect("fixture timestamp"),
    ));
    gb.spec.listener_port = Some(listener_port);
    gb
}

/// An EndpointSlice of `service` with `ready` ready and `not_ready`
/// not-ready endpoints on `port`.
pub fn slice(
    namespace: &str,
    service: &str,
    port: i32,
    ready: usize,
    not_ready: usize,
) -> EndpointSlice {
    let endpoint = |i: usize, is_ready: bool| Endpoint {
        addresses: vec![format!("127.0.1.{i}")],
        conditions: Some(EndpointConditions {
            ready: Some(is_ready),
            ..EndpointConditions::default()
        }),
        ..Endpoint::default()
    };
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{service}-abcde")),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_owned(),
                service.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: (0..ready)
            .map(|i| endpoint(i, true))
            .chain((0..not_ready).map(|i| endpoint(100 + i, false)))
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("grpc".into()),
            port: Some(port),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
    }
}

/// [`GREETER`] reached through the Service `service` instead of a
/// listener port, created at `created`.
pub fn fronting(name: &str, service: &str, created: &str) -> GrpcBalancing {
    let mut gb = named(name, 1, created);
    gb.spec.listener_port = None;
    gb.spec.service = Some(service.into());
    gb
}

/// A ClusterIP Service of namespace `demo` with `ports` as
/// `(name, port, targetPort)`.
pub fn cluster_service(
    name: &str,
    cluster_ip: &str,
    ports: &[(&str, i32, i32)],
) -> k8s_openapi::api::core::v1::Service {
    use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("demo".into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.into()),
            type_: Some("ClusterIP".into()),
            ports: Some(
                ports
                    .iter()
                    .map(|(port_name, port, target)| ServicePort {
                        name: Some((*port_name).into()),
                        port: *port,
                        target_port: Some(IntOrString::Int(*target)),
                        protocol: Some("TCP".into()),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
