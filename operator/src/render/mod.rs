//! Pure functions from `GrpcBalancing`s (and what the cluster reports) to the
//! objects the operator writes. No I/O here, so all of it is unit-tested.

mod balancing;
mod endpoints;
mod namespace;
mod services;
mod status;

pub use balancing::{RenderError, SubsetTarget, balancing, subset_targets};
pub use endpoints::{EndpointIndex, ServiceEndpoints, slice_service};
pub use namespace::{Evaluation, NamespaceView, Outcome};
pub use services::{desired_services, service_needs_apply};
pub use status::{MAX_PODS_WITHOUT_PROXY, desired_status, pod_list};

#[cfg(any(test, feature = "test-util"))]
pub mod fixtures;

#[cfg(test)]
mod tests;
