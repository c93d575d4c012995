//! The accept loop's one step, shared by the balancing listeners and the
//! relays.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The next connection, or `None` once `stop` is cancelled. An accept error
/// (out of file descriptors and the like) is logged and retried after a
/// short pause instead of spinning.
pub(super) async fn next(
    listener: &TcpListener,
    name: &str,
    stop: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => return Some(conn),
                Err(e) => {
                    tracing::warn!(balancing = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = stop.cancelled() => return None,
        }
    }
}
