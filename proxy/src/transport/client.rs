//! Dials one HTTP/2 connection to an endpoint address: TCP with nodelay and
//! keepalive, then the h2 handshake with the proxy's windows and ping rules.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::body::RequestBody;
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
    Handshake(#[from] hyper::Error),
}

/// The connection's driver: it runs until the connection ends, and ends
/// with `Ok` on a GOAWAY.
pub(crate) type Connection = http2::Connection<TokioIo<TcpStream>, RequestBody, TokioExecutor>;

/// Connects to `addr`, both the TCP connect and the handshake bounded by the
/// connect timeout.
pub(crate) async fn connect(
    addr: SocketAddr,
    settings: ConnectSettings,
) -> Result<(http2::SendRequest<RequestBody>, Connection), ConnectError> {
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
    let handshake = builder(settings).handshake(TokioIo::new(tcp));
    let (sender, connection) = tokio::time::timeout(settings.connect_timeout, handshake)
        .await
        .map_err(|_| ConnectError::Timeout(settings.connect_timeout))??;
    Ok((sender, connection))
}

fn builder(settings: ConnectSettings) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .keep_alive_interval(settings.ping_interval)
        .keep_alive_timeout(settings.ping_timeout)
        // Never on an idle connection: servers answer that with GOAWAY.
        .keep_alive_while_idle(false)
        .max_concurrent_reset_streams(1024);
    b
}
