//! Accepted connections that a fault can close abruptly.
//!
//! Each accepted socket is duplicated: tonic serves one handle, and the other
//! stays with a [`ConnectionHandle`] that reaches the handlers through the
//! request extensions. Shutting the duplicate down ends the TCP connection
//! under hyper's feet, exactly like a backend that dies mid-call.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::Connected;

/// A way to close one accepted connection; cloned into request extensions.
#[derive(Debug, Clone)]
pub struct ConnectionHandle {
    remote: SocketAddr,
    socket: Arc<std::net::TcpStream>,
}

impl ConnectionHandle {
    /// Address of the peer (the proxy, or a client).
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// Ends the TCP connection without any HTTP/2 goodbye.
    pub fn close(&self) {
        // The peer may already be gone; either way the connection is over.
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

/// The connections a backend has open, so all can be closed at once.
#[derive(Debug, Default)]
pub(crate) struct ConnectionRegistry {
    open: Mutex<Vec<Weak<std::net::TcpStream>>>,
}

impl ConnectionRegistry {
    fn register(&self, socket: &Arc<std::net::TcpStream>) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        open.retain(|weak| weak.strong_count() > 0);
        open.push(Arc::downgrade(socket));
    }

    /// Closes every open connection; returns how many were open.
    pub(crate) fn close_all(&self) -> usize {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut closed = 0;
        for socket in open.drain(..).filter_map(|weak| weak.upgrade()) {
            let _ = socket.shutdown(Shutdown::Both);
            closed += 1;
        }
        closed
    }
}

/// An accepted connection as tonic serves it.
#[derive(Debug)]
pub(crate) struct TrackedStream {
    io: TcpStream,
    handle: ConnectionHandle,
}

impl TrackedStream {
    fn accept(
        stream: TcpStream,
        remote: SocketAddr,
        registry: &ConnectionRegistry,
    ) -> io::Result<Self> {
        stream.set_nodelay(true)?;
        let std_stream = stream.into_std()?;
        let duplicate = Arc::new(std_stream.try_clone()?);
        let io = TcpStream::from_std(std_stream)?;
        registry.register(&duplicate);
        Ok(Self {
            io,
            handle: ConnectionHandle {
                remote,
                socket: duplicate,
            },
        })
    }
}

impl Connected for TrackedStream {
    type ConnectInfo = ConnectionHandle;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.handle.clone()
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The stream of accepted connections. Accept errors (a peer that reset
/// before accept, descriptors exhausted) are logged and accepting goes on.
pub(crate) fn incoming(
    listener: TcpListener,
    registry: Arc<ConnectionRegistry>,
) -> impl Stream<Item = io::Result<TrackedStream>> {
    futures::stream::unfold((listener, registry), |(listener, registry)| async move {
        loop {
            match listener.accept().await {
                Ok((stream, remote)) => match TrackedStream::accept(stream, remote, &registry) {
                    Ok(tracked) => return Some((Ok(tracked), (listener, registry))),
                    Err(error) => tracing::warn!(%remote, %error, "dropping accepted connection"),
                },
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    // Back off so an exhausted descriptor table does not spin the loop.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    })
}
