//! Dials one HTTP/2 connection to an endpoint address: TCP with nodelay and
//! keepalive, then the h2 handshake with the proxy's windows; pings are the driver's
//! ([`super::driver`]).

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use tokio::net::TcpStream;

use super::driver::{Driver, HeardStream, Keepalive, Liveness};
use super::upstream::Upstream;
use super::{
    CONNECTION_WINDOW, DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT, DEFAULT_TCP_KEEPALIVE,
    STREAM_WINDOW, TCP_KEEPALIVE_PROBES,
};

#[derive(Debug, Clone, Copy)]
pub struct ConnectSettings {
    pub connect_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// HTTP/2 ping after this long without a frame from the endpoint, only
    /// while calls are open; `None`: no pings. See [`DEFAULT_PING_INTERVAL`].
    pub ping_interval: Option<Duration>,
    pub ping_timeout: Duration,
    /// TCP keepalive idle time and probe gap; `None`: off.
    pub tcp_keepalive: Option<Duration>,
}

impl Default for ConnectSettings {
    fn default() -> Self {
        ConnectSettings {
            connect_timeout: Duration::from_secs(2),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            ping_interval: Some(DEFAULT_PING_INTERVAL),
            ping_timeout: DEFAULT_PING_TIMEOUT,
            tcp_keepalive: Some(DEFAULT_TCP_KEEPALIVE),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP/2 handshake failed: {0}")]
    Handshake(#[from] h2::Error),
}

/// Connects to `addr`, both the TCP connect and the handshake bounded by the
/// connect timeout. The driver must be polled for the connection to work.
pub(crate) async fn connect(
    addr: SocketAddr,
    settings: ConnectSettings,
) -> Result<(Upstream, Driver), ConnectError> {
    let tcp = tokio::time::timeout(settings.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout(settings.connect_timeout))??;
    // gRPC messages are small and latency-bound.
    tcp.set_nodelay(true)?;
    if let Some(idle) = settings.tcp_keepalive {
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(idle)
            .with_retries(TCP_KEEPALIVE_PROBES);
        socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive)?;
    }
    let liveness = Arc::new(Liveness::default());
    let handshake = builder().handshake(HeardStream::new(tcp, liveness.clone()));
    let (sender, mut connection) = tokio::time::timeout(settings.connect_timeout, handshake)
        .await
        .map_err(|_| ConnectError::Timeout(settings.connect_timeout))??;
    // A zero interval would have the timer fire without end: no pings.
    let interval = settings.ping_interval.filter(|d| !d.is_zero());
    let keepalive = interval.and_then(|interval| {
        let pong = connection.ping_pong()?;
        Some(Keepalive::new(pong, interval, settings.ping_timeout))
    });
    let driver = Driver::new(connection, liveness.clone(), keepalive, sender.clone());
    Ok((Upstream::new(sender, liveness), driver))
}

/// hyper's HTTP/2 client settings (hyper 1.x defaults), with the proxy's
/// windows.
fn builder() -> h2::client::Builder {
    let mut b = h2::client::Builder::new();
    b.initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .initial_max_send_streams(100)
        .max_frame_size(16 * 1024)
        .max_header_list_size(16 * 1024)
        .max_send_buffer_size(1024 * 1024)
        .max_local_error_reset_streams(Some(1024))
        .max_concurrent_reset_streams(1024)
        .enable_push(false);
    b
}
