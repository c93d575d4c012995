//! HTTP/2 on both sides: the h2c listener the application talks to, and one
//! multiplexed connection per endpoint.

mod accept;
pub(crate) mod body;
pub mod client;
pub(crate) mod driver;
pub(crate) mod relay;
pub(crate) mod replay;
pub(crate) mod server;
pub mod upstream;

use std::time::Duration;

/// Flow-control windows: large enough that one 4 MiB message does not stall
/// on WINDOW_UPDATE round trips, small enough to bound memory per stream.
pub const STREAM_WINDOW: u32 = 1024 * 1024;
pub const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;
/// HTTP/2 pings upstream, only while calls are open on the connection.
/// gRPC servers police pings: grpc-go and grpc-java by default allow one per
/// 5 minutes, and none on a connection without calls; C-core counts pings
/// without data against the same 5 minutes. Two pings too many and they
/// answer GOAWAY `too_many_pings`, which would cut the calls in flight. So
/// pings come no more often than that, never on an idle connection, and
/// only after 5 minutes without any frame from the endpoint (a quiet long
/// stream). Dead peers are found by TCP keepalive instead, which servers do
/// not see: linkerd2-proxy and Envoy send no HTTP/2 pings upstream by
/// default either.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(300);
/// How long a ping may go unanswered before the connection is closed
/// (grpc-go's client default).
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// TCP keepalive on upstream connections: idle time before the first probe,
/// then the gap between probes; `TCP_KEEPALIVE_PROBES` unanswered ones close
/// the connection (about 40 s for a peer that vanished without a FIN).
pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(10);
pub const TCP_KEEPALIVE_PROBES: u32 = 3;
