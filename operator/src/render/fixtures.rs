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
    gb.spec.listener_port = listener_port;
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
