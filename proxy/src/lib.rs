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

    /// Whether a health check's answer says SERVING (the error says why not).
    pub async fn health_answer<B>(response: http::Response<B>) -> Result<bool, String>
    where
        B: http_body::Body<Data = bytes::Bytes, Error = std::convert::Infallible>,
    {
        crate::resilience::health::answer_of(response)
            .await
            .map_err(|e| e.to_string())
    }

    /// What DNS discovery makes of the answers about `name` from the
    /// nameserver `server`, reached through `provider` (in place of the
    /// network): the proxy's resolver settings, hickory's parsing of the
    /// answers, and the proxy's mapping of them to an endpoint set.
    pub async fn resolve_dns<P: hickory_resolver::ConnectionProvider>(
        provider: P,
        server: std::net::SocketAddr,
        name: &str,
        port: u16,
    ) -> Result<crate::discovery::Update, crate::discovery::DiscoveryError> {
        use crate::discovery::dns;
        let resolvers = dns::build(|| Ok(dns::builder_for(server, provider.clone())))
            .map_err(crate::discovery::DiscoveryError::Resolver)?;
        dns::resolve(&resolvers, name, port).await
    }

    /// The pushed endpoints of `name` that calls go to now (None: the
    /// stream does not have the name, or is not connected).
    pub fn push_routable(
        state: &crate::discovery::push::PushState,
        name: &str,
    ) -> Option<Vec<std::net::SocketAddr>> {
        state.routable(name)
    }

    /// The largest push message the discovery client decodes.
    pub const PUSH_MAX_MESSAGE_BYTES: usize = crate::discovery::push::MAX_MESSAGE_BYTES;

    /// The discovery client's loop over a push stream: every message
    /// applied to `state` until the stream ends or one is refused.
    /// `Ok(true)`/`Err((true, _))`: a snapshot was applied.
    pub async fn push_consume(
        stream: tonic::Streaming<grpc_balancer_discovery_api::v1::WatchResponse>,
        state: &crate::discovery::push::PushState,
    ) -> Result<bool, (bool, String)> {
        let delivered = std::sync::atomic::AtomicBool::new(false);
        crate::discovery::push::consume(stream, state, &delivered).await
    }
}

pub use app::{ConfigSource, EndpointStatus, ProxyView, RunningProxy, Settings, run};
