//! HTTP/2 on both sides: the h2c listener the application talks to, and one
//! multiplexed connection per endpoint.

pub mod body;
pub mod client;
pub mod replay;
pub mod server;

use std::time::Duration;

/// Flow-control windows: large enough that one 4 MiB message does not stall
/// on WINDOW_UPDATE round trips, small enough to bound memory per stream.
pub const STREAM_WINDOW: u32 = 1024 * 1024;
pub const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;
/// Pings detect dead peers that vanished without a FIN.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
