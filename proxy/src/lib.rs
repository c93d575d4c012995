//! grpc-balancer-proxy: a per-request gRPC load-balancing sidecar.
//!
//! The application dials a local h2c listener per balancing; every call is
//! routed to one backend endpoint chosen for that call (a stream stays on its
//! endpoint), over one multiplexed HTTP/2 connection per endpoint.
//!
//! [`run`] starts everything in-process and returns the bound addresses, so
//! tests drive the real proxy without a subprocess.

pub mod admin;
pub mod app;
pub mod balance;
pub mod balancing;
pub mod call;
pub mod cli;
pub mod config_watch;
pub mod discovery;
pub mod endpoint;
pub mod error;
pub mod grpc_status;
pub mod lifecycle_hooks;
pub mod metrics;
pub mod net;
pub mod resilience;
pub mod telemetry;
pub mod transport;
mod util;

#[cfg(test)]
mod layering;

pub use app::{ConfigSource, RunningProxy, Settings, run};
