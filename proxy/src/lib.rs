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
//!
//! Modules are crate-private unless something outside uses them: the binary
//! (`cli`, `telemetry`, `lifecycle_hooks`), the tests and embedders ([`run`]
//! with its [`Settings`], [`ProxyView`] to watch endpoints, `discovery` to
//! plug in a source, `transport::client::ConnectSettings`, `admin`'s access
//! rule), and the demo's dashboard (`metrics`, its names and labels).

pub mod admin;
pub(crate) mod app;
pub(crate) mod balancer;
pub(crate) mod call;
pub mod cli;
pub(crate) mod config_watch;
pub mod discovery;
pub(crate) mod endpoint;
pub(crate) mod error;
pub(crate) mod grpc_status;
pub mod lifecycle_hooks;
pub mod metrics;
pub(crate) mod net;
pub(crate) mod policy;
pub(crate) mod resilience;
pub mod telemetry;
pub mod transport;
mod util;

#[cfg(test)]
mod layering;

/// The parsers of bytes that come from peers, for the fuzz targets
/// (`fuzz/`); not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::grpc_status::status_of as grpc_status_of;
    pub use crate::resilience::deadline::{
        parse as parse_grpc_timeout, render as render_grpc_timeout,
    };

    /// `HealthCheckResponse.status` from one length-prefixed message.
    pub fn decode_health_status(framed: &[u8]) -> Result<u64, String> {
        crate::resilience::health::decode_status(framed).map_err(|e| e.to_string())
    }
}

pub use app::{ConfigSource, EndpointStatus, ProxyView, RunningProxy, Settings, run};
