//! Test support for grpc-balancer: a real local Kubernetes control plane
//! (etcd, kube-apiserver, kube-controller-manager started by `scripts/control-plane`),
//! a fresh namespace per test, a kubelet stand-in that sets pod status, and a small
//! cluster DNS server answering headless Services from their EndpointSlices.
//!
//! ```no_run
//! # async fn t() {
//! use grpc_balancer_test_support::{ControlPlane, TestNamespace};
//! let cp = ControlPlane::shared().await;
//! let client = cp.client().await;
//! let ns = TestNamespace::new(&client, "example").await;
//! # }
//! ```

pub mod api_recorder;
pub mod cluster_dns;
pub mod control_plane;
pub mod crd;
pub mod kubelet;
pub mod logs;
pub mod namespace;
pub mod poll;

pub use control_plane::ControlPlane;
pub use namespace::TestNamespace;
pub use poll::{assert_eventually, poll_until};

/// Name of the fake Node that `scripts/control-plane up` registers (see the script): the
/// EndpointSlice controller skips pods bound to a Node that does not exist, so
/// [`kubelet::set_pod_running`] binds pods to it.
pub const NODE_NAME: &str = "grpc-balancer-node";
