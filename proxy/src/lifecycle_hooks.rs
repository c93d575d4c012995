//! Subcommands the injected sidecar runs as kubelet lifecycle hooks on
//! clusters without native sidecars. The image holds only this binary (no
//! shell, no curl), so the hooks are the binary itself.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long one probe of `/ready` may take before it counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum WaitReadyError {
    #[error("the proxy at {admin} was not ready within {timeout:?}: {last}")]
    NotReady {
        admin: SocketAddr,
        timeout: Duration,
        last: String,
    },
}

/// Polls the admin server's `/ready` until it answers 200 or `timeout` passes
/// (the postStart hook: the kubelet starts the app container only after it).
pub async fn wait_ready(admin: SocketAddr, timeout: Duration) -> Result<(), WaitReadyError> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match tokio::time::timeout(PROBE_TIMEOUT, probe_ready(admin)).await {
            Ok(Ok(200)) => return Ok(()),
            Ok(Ok(status)) => format!("/ready answered {status}"),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("/ready did not answer within {PROBE_TIMEOUT:?}"),
        };
        if Instant::now() + PROBE_INTERVAL >= deadline {
            return Err(WaitReadyError::NotReady {
                admin,
                timeout,
                last,
            });
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// One plain HTTP/1.1 GET of `/ready`; returns the status code.
async fn probe_ready(admin: SocketAddr) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(admin).await?;
    stream
        .write_all(b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    // The status line fits in the first bytes; the body is not needed.
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < 12 {
        let n = stream.read(&mut head[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
    }
    parse_status(&head[..len]).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the admin server's answer is not HTTP/1.1",
        )
    })
}

fn parse_status(head: &[u8]) -> Option<u16> {
    let rest = head
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| head.strip_prefix(b"HTTP/1.0 "))?;
    let code = std::str::from_utf8(rest.get(..3)?).ok()?;
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 Service"), Some(503));
        assert_eq!(parse_status(b"SSH-2.0-x"), None);
        assert_eq!(parse_status(b"HTTP/1.1 2"), None);
        assert_eq!(parse_status(b""), None);
    }

    #[tokio::test]
    async fn gives_up_with_the_last_reason_when_nothing_listens() {
        // Bind and drop to get a port nobody listens on.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        let err = wait_ready(addr, Duration::from_millis(500))
            .await
            .expect_err("nothing listens");
        assert!(err.to_string().contains("not ready"), "{err}");
    }
}
