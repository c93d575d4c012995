//! The operator's integration tests, one module per area, linked as one
//! binary so that one control plane (`ControlPlane::shared`) serves them
//! all. Most run the operator in this process (see [`support`]); a few
//! spawn the built binary to see what only a process shows (exit codes,
//! probes, the metrics endpoint).

mod support;

mod bench_discovery;
mod bench_reconcile;
mod crd_validation;
mod discovery;
mod env_gaps;
mod metrics_doc;
mod rbac;
mod reconcile;
mod service_front;
mod shutdown;
mod undecodable;
mod webhook_process;
