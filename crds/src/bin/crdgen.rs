//! Prints the `GrpcBalancing` CRD as YAML.
//!
//! `cargo run -p grpc-balancer-crds --bin crdgen > crds/grpcbalancing.yaml`
//! (and the same into `charts/grpc-balancer/crds/`); the `crd_drift` test
//! fails when either copy is stale.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let yaml = match grpc_balancer_crds::v1alpha1::crd_yaml() {
        Ok(yaml) => yaml,
        Err(e) => {
            eprintln!("crdgen: cannot render the CRD: {e}");
            return ExitCode::FAILURE;
        }
    };
    match std::io::stdout().write_all(yaml.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crdgen: cannot write: {e}");
            ExitCode::FAILURE
        }
    }
}
