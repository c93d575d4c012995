//! Plain TCP relaying for a balancing that stands in for a Service
//! (`service` in the config): the listener on the Service's gRPC port tells
//! an h2c client (balanced per call) from anything else by the first bytes
//! the client sends, and relays the rest (a TLS ClientHello, an HTTP/1
//! request) untouched to the Service's cluster IP, so a client the proxy
//! cannot balance keeps working as if it had dialled the Service. The
//! Service's other ports are relayed the same way.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// What an HTTP/2 client with prior knowledge (h2c, as gRPC clients speak
/// it in plain text) sends first (RFC 9113, section 3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a new connection may take to send enough bytes to be told
/// apart; a client that says nothing for this long is closed.
pub const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to the relay target may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Between two looks at a connection that sent part of the preface only.
const PARTIAL_RETRY: Duration = Duration::from_millis(2);

/// What a client opened its connection with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// The HTTP/2 preface: a gRPC client in plain text.
    H2c,
    /// Anything else (a TLS ClientHello starts with 0x16).
    Other,
    /// Closed before sending a byte.
    Closed,
}

/// Looks at the first bytes without consuming them, so whoever gets the
/// connection next reads it from its start.
pub async fn sniff(stream: &TcpStream) -> io::Result<Opening> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let look = async {
        loop {
            let n = stream.peek(&mut buf).await?;
            if n == 0 {
                return Ok(Opening::Closed);
            }
            if !H2_PREFACE.starts_with(&buf[..n]) {
                return Ok(Opening::Other);
            }
            if n == H2_PREFACE.len() {
                return Ok(Opening::H2c);
            }
            // A peek answers at once while any byte is waiting: wait a
            // little for the rest of the preface instead of spinning.
            tokio::time::sleep(PARTIAL_RETRY).await;
        }
    };
    tokio::time::timeout(SNIFF_TIMEOUT, look)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the client sent nothing"))?
}

/// Relays `client` to `to` until either side closes; returns the bytes
/// relayed each way.
pub async fn relay(mut client: TcpStream, to: SocketAddr) -> io::Result<(u64, u64)> {
    let mut upstream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {to}")))??;
    let _ = upstream.set_nodelay(true);
    let _ = client.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await
}

/// Accepts on `listener` and relays every connection to `to` until `stop`;
/// connections relayed so far live on until their peers close them.
pub async fn forward(listener: TcpListener, to: SocketAddr, name: String, stop: CancellationToken) {
    while let Some((stream, peer)) = super::accept::next(&listener, &name, &stop).await {
        let name = name.clone();
        tokio::spawn(async move {
            if let Err(e) = relay(stream, to).await {
                tracing::debug!(balancing = %name, %peer, %to, error = %e, "relayed connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), l.accept());
        (client.expect("connect"), accepted.expect("accept").0)
    }

    #[tokio::test]
    async fn the_preface_is_told_from_tls_and_http1_and_nothing_is_consumed() {
        let tls_hello = [0x16u8, 0x03, 0x01, 0x00, 0xc8, 0x01];
        for (first, want) in [
            (H2_PREFACE, Opening::H2c),
            (&tls_hello[..], Opening::Other),
            (
                b"POST /greeter.Greeter/SayHello HTTP/1.1\r\n",
                Opening::Other,
            ),
            (b"PRX", Opening::Other),
        ] {
            let (mut client, server) = pair().await;
            client.write_all(first).await.expect("write");
            assert_eq!(sniff(&server).await.expect("sniff"), want, "{first:?}");
            let mut again = vec![0u8; first.len()];
            let mut server = server;
            server.read_exact(&mut again).await.expect("read");
            assert_eq!(again, first, "the bytes are still there");
        }
        let (client, server) = pair().await;
        drop(client);
        assert_eq!(sniff(&server).await.expect("sniff"), Opening::Closed);
    }

    #[tokio::test]
    async fn a_preface_sent_in_pieces_is_still_h2c() {
        let (mut client, server) = pair().await;
        let writer = tokio::spawn(async move {
            for chunk in H2_PREFACE.chunks(5) {
                client.write_all(chunk).await.expect("write");
                client.flush().await.expect("flush");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            client
        });
        assert_eq!(sniff(&server).await.expect("sniff"), Opening::H2c);
        drop(writer.await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_times_out() {
        let (_client, server) = pair().await;
        let e = sniff(&server).await.expect_err("silent");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_relay_carries_both_ways_and_ends_with_the_peers() {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let to = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.expect("accept");
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.expect("read");
            s.write_all(&buf).await.expect("echo");
        });
        let (mut client, server) = pair().await;
        let relayed = tokio::spawn(relay(server, to));
        client.write_all(b"hello").await.expect("write");
        let mut back = [0u8; 5];
        client.read_exact(&mut back).await.expect("read");
        assert_eq!(&back, b"hello");
        drop(client);
        let (up, down) = relayed.await.expect("joined").expect("relayed");
        assert_eq!((up, down), (5, 5));
    }

    #[tokio::test]
    async fn a_relay_to_a_closed_port_fails_and_closes_the_client() {
        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let to = closed.local_addr().expect("addr");
        drop(closed);
        let (mut client, server) = pair().await;
        assert!(relay(server, to).await.is_err());
        let mut buf = [0u8; 1];
        assert_eq!(client.read(&mut buf).await.expect("read"), 0, "closed");
    }
}
