//! Keeps one HTTP/2 connection to an endpoint: connect, publish the request
//! handle, watch the connection, reconnect with exponential back-off and
//! jitter. A GOAWAY from the endpoint ends the connection's dispatch at once,
//! so new calls go elsewhere while calls in flight finish on it.

use std::sync::Arc;
use std::time::Duration;

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::body::RequestBody;
use super::{
    CONNECTION_WINDOW, DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT, DEFAULT_TCP_KEEPALIVE,
    STREAM_WINDOW, TCP_KEEPALIVE_PROBES,
};
use crate::endpoint::{ConnState, Endpoint};
use crate::util::random_unit;

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
pub enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP/2 handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
}

/// Runs until `cancel` fires, keeping `endpoint` connected.
pub async fn maintain(
    endpoint: Arc<Endpoint>,
    settings: ConnectSettings,
    cancel: CancellationToken,
) {
    let mut failures: u32 = 0;
    loop {
        endpoint.set_state(ConnState::Connecting);
        let connected = tokio::select! {
            r = connect(&endpoint, settings) => r,
            () = cancel.cancelled() => break,
        };
        match connected {
            Ok((sender, connection)) => {
                failures = 0;
                tracing::debug!(endpoint = %endpoint.addr, "connected");
                endpoint.connected(sender);
                tokio::select! {
                    r = connection => {
                        endpoint.disconnected(ConnState::Connecting);
                        match r {
                            Ok(()) => tracing::info!(endpoint = %endpoint.addr, "endpoint closed the connection (GOAWAY); reconnecting"),
                            // hyper's own message is only "http2 error"; the h2 cause says which.
                            Err(e) => tracing::warn!(endpoint = %endpoint.addr, error = %e, cause = ?crate::grpc_status::h2_error(&e), "connection to endpoint failed; reconnecting"),
                        }
                        endpoint.subset.refresh_now.notify_one();
                    }
                    () = cancel.cancelled() => break,
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                endpoint.disconnected(ConnState::Failed);
                endpoint.record_failure();
                endpoint.subset.refresh_now.notify_one();
                let delay = backoff(settings, failures);
                tracing::warn!(endpoint = %endpoint.addr, error = %e, retry_in = ?delay, "cannot connect to endpoint");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = cancel.cancelled() => break,
                }
            }
        }
    }
    // Removed: no new calls; calls in flight keep their own handle to the
    // connection, which closes once they are done.
    endpoint.disconnected(ConnState::Removed);
    endpoint.release_ejection();
}

/// `base * 2^(failures-1)`, capped, with full jitter over its upper half so
/// many proxies do not reconnect in lockstep.
fn backoff(settings: ConnectSettings, failures: u32) -> Duration {
    let exp = settings
        .backoff_base
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(settings.backoff_max);
    exp.mul_f64(0.5 + random_unit() * 0.5)
}

type Connection = http2::Connection<TokioIo<TcpStream>, RequestBody, TokioExecutor>;

async fn connect(
    endpoint: &Endpoint,
    settings: ConnectSettings,
) -> Result<(http2::SendRequest<RequestBody>, Connection), ConnectError> {
    let tcp = tokio::time::timeout(settings.connect_timeout, TcpStream::connect(endpoint.addr))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let s = ConnectSettings::default();
        let first = backoff(s, 1);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let later = backoff(s, 30);
        assert!(later >= Duration::from_millis(2500) && later <= Duration::from_secs(5));
    }
}
