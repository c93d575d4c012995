//! API types of grpc-balancer.
//!
//! - [`config`]: the proxy's config format (serde only; the proxy depends on
//!   this crate with `default-features = false`).
//! - `v1alpha1` (feature `kube`): the `GrpcBalancing` custom resource.

pub mod config;
