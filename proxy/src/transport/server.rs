//! The h2c listener of a balancing: accepts the application's connections
//! and hands every stream to the handler it was given (the app's: the call
//! path of the balancing currently installed for the listener).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::body::BoxError;
use super::relay::{self, Opening};
use super::{CONNECTION_WINDOW, STREAM_WINDOW};

/// Streams one downstream connection may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// Serves `listener` until `stop` fires, hands the listener back through
/// `handback` (a balancing taking over the address keeps the socket and the
/// connections queued on it; dropping it closes the port), then sends GOAWAY
/// on every open connection and returns once their calls are done.
/// `name` (the balancing's) is for logs; `accepted` counts connections.
/// With `passthrough`, a connection that does not open with the HTTP/2
/// preface is relayed there as plain TCP instead (see [`super::relay`]),
/// counted in its `Counter`.
pub async fn serve<H, F, B>(
    listener: TcpListener,
    name: String,
    accepted: Counter,
    handler: H,
    passthrough: Option<(SocketAddr, Counter)>,
    stop: CancellationToken,
    handback: tokio::sync::oneshot::Sender<TcpListener>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
{
    let builder = builder();
    let graceful = GracefulShutdown::new();
    while let Some((stream, peer)) = super::accept::next(&listener, &name, &stop).await {
        accepted.inc();
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let call = handler(req);
            async move { Ok::<_, Infallible>(call.await) }
        });
        let name = name.clone();
        let Some((to, unbalanced)) = passthrough.clone() else {
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    // Garbage bytes, a client that vanished, a protocol error: only
                    // this connection is affected.
                    tracing::debug!(balancing = %name, %peer, error = %e, "downstream connection ended with an error");
                }
            });
            continue;
        };
        let watcher = graceful.watcher();
        let builder = builder.clone();
        tokio::spawn(async move {
            match relay::sniff(&stream).await {
                Ok(Opening::H2c) => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(balancing = %name, %peer, error = %e, "downstream connection ended with an error");
                    }
                }
                Ok(Opening::Other) => {
                    unbalanced.inc();
                    tracing::debug!(balancing = %name, %peer, %to, "not h2c (TLS?): relayed unbalanced");
                    if let Err(e) = relay::relay(stream, to).await {
                        tracing::debug!(balancing = %name, %peer, %to, error = %e, "relayed connection ended with an error");
                    }
                }
                Ok(Opening::Closed) => {}
                Err(e) => {
                    tracing::debug!(balancing = %name, %peer, error = %e, "connection closed before it could be told apart");
                }
            }
        });
    }
    // Closed at once when nobody takes it over.
    let _ = handback.send(listener);
    tracing::debug!(balancing = %name, connections = graceful.count(), "listener closed; draining connections");
    graceful.shutdown().await;
}

/// No keep-alive pings downstream: the application is in the same pod, on
/// loopback, where the kernel reports a vanished peer at once; and with
/// pings on, hyper reads the clock on every frame received. No `date`
/// header on the proxy's own answers: gRPC has no use for it.
fn builder() -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .auto_date_header(false);
    b
}

/// Binds a listener (`[::]` is dual-stack), with the error naming the address.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    crate::net::bind(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}
