//! Pure functions from `GrpcBalancing`s (and what the cluster reports) to the
//! objects the operator writes. No I/O here, so all of it is unit-tested.

mod balancing;
mod endpoints;
mod front;
mod namespace;
mod services;
mod status;

pub use balancing::{RenderError, SubsetTarget, balancing, balancing_with_front, subset_targets};
pub use endpoints::{EndpointIndex, ServiceEndpoints, slice_service};
pub use front::{POOL_FIRST, POOL_LAST, assign_addresses, hostnames, in_pool};
pub use namespace::{Evaluation, NamespaceView, Outcome};
pub use services::{desired_services, service_needs_apply};
pub use status::{MAX_PODS_WITHOUT_PROXY, desired_status, pod_list};

#[cfg(any(test, feature = "test-util"))]
pub mod fixtures;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_front;
