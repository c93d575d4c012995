//! `GrpcBalancing` v1alpha1: the custom resource users apply.
//!
//! ```yaml
//! apiVersion: grpcbalancer.io/v1alpha1
//! kind: GrpcBalancing
//! metadata: { name: greeter, namespace: demo }
//! spec:
//!   selector: { app: greeter }
//!   port: grpc              # or 50051
//!   listenerPort: 15001     # the injected proxy listens on 127.0.0.1:15001
//!   policy: { kind: peak_ewma }
//!   subsets:
//!     - { name: v1, labels: { version: v1 }, weight: 75 }
//!     - { name: v2, labels: { version: v2 }, weight: 25 }
//! ```

mod config_schema;
mod spec;
mod status;
mod validation;

pub use spec::{
    GrpcBalancing, GrpcBalancingSpec, HealthCheck, OutlierDetection, Policy, Queue, Retries, Subset,
};
pub use status::{ConditionReason, GrpcBalancingStatus, READY_CONDITION, SubsetStatus};
pub use validation::{crd, crd_yaml};

/// API group of the CRD.
pub const GROUP: &str = "grpcbalancer.io";
/// API version of these types.
pub const VERSION: &str = "v1alpha1";
/// Longest `GrpcBalancing` name: `grpcb-<name>-<subset>` must fit the
/// 63-character limit of a Service name.
pub const MAX_NAME_LEN: usize = 40;
/// Longest subset name (see [`MAX_NAME_LEN`]).
pub const MAX_SUBSET_NAME_LEN: usize = 16;
/// Most subsets in one `GrpcBalancing` (bounds the cost of the CEL rules).
pub const MAX_SUBSETS: usize = 16;
