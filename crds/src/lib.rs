//! API types of grpc-balancer.
//!
//! - [`config`]: the proxy's config format (serde only; the proxy depends on
//!   this crate with `default-features = false`).
//! - [`annotations`]: pod annotations and labels shared by the operator, the
//!   webhook and the chart (plain constants).
//! - `v1alpha1` (feature `kube`): the `GrpcBalancing` custom resource.

pub mod annotations;
pub mod config;
#[cfg(feature = "kube")]
pub mod v1alpha1;
