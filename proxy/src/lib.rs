//! grpc-balancer-proxy: a per-request gRPC load-balancing sidecar.
//!
//! The application dials a local h2c listener per balancing; every call is
//! routed to one backend endpoint chosen for that call (a stream stays on its
//! endpoint), over one multiplexed HTTP/2 connection per endpoint.
//!
//! [`run`] starts everything in-process and returns the bound addresses, so
//! tests drive the real proxy without a subprocess.
//!
//! The modules form layers, each using only those below it (a test in
//! `layering.rs` holds them to it):
//!
//! - leaves: `util`, `net`, `telemetry`, `grpc_status` (the `Code` type,
//!   `grpc-status` parsing, trailers), `metrics`, `discovery`,
//!   `config_watch`, `lifecycle_hooks`; `error` (why the proxy answers a
//!   call itself);
//! - `transport`: h2 client and server, bodies, connect;
//! - `endpoint`: endpoint state, connection upkeep, call records;
//! - `resilience`: health checks, retry budget, deadlines;
//! - `policy`: the pick of one endpoint in a subset;
//! - `balancer`: a running balancing, its subsets and discovery updates;
//! - `call`: one call through the proxy, retries included;
//! - `admin` (reads the proxy through a narrow view), `app` (wires it all),
//!   `cli`.

pub mod admin;
pub mod app;
pub mod balancer;
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
pub mod policy;
pub mod resilience;
pub mod telemetry;
pub mod transport;
mod util;

#[cfg(test)]
mod layering;

pub use app::{ConfigSource, RunningProxy, Settings, run};
