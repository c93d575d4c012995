//! The checked-in CRD YAML (and its copy in the chart) must be exactly what
//! the Rust types generate. Regenerate with:
//!
//! ```sh
//! cargo run -p grpc-balancer-crds --bin crdgen > crds/grpcbalancing.yaml
//! cp crds/grpcbalancing.yaml charts/grpc-balancer/crds/grpcbalancing.yaml
//! ```

use std::path::Path;

const COPIES: [&str; 2] = [
    "grpcbalancing.yaml",
    "../charts/grpc-balancer/crds/grpcbalancing.yaml",
];

#[test]
fn checked_in_crd_yaml_matches_the_types() {
    let generated = grpc_balancer_crds::v1alpha1::crd_yaml().expect("the CRD renders as YAML");
    for copy in COPIES {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(copy);
        let checked_in = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        assert!(
            checked_in == generated,
            "{} is stale: regenerate it with `cargo run -p grpc-balancer-crds --bin crdgen > {copy}` (from crds/)",
            path.display()
        );
    }
}

#[test]
fn crd_has_the_agreed_names() {
    let crd = grpc_balancer_crds::v1alpha1::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("grpcbalancings.grpcbalancer.io")
    );
    assert_eq!(crd.spec.group, "grpcbalancer.io");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.kind, "GrpcBalancing");
    assert_eq!(crd.spec.names.plural, "grpcbalancings");
    assert_eq!(crd.spec.names.short_names, Some(vec!["grpcb".to_owned()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some(),
        "status subresource"
    );
}
