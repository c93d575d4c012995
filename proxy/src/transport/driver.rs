//! Drives one upstream HTTP/2 connection: the `h2` connection future, the
//! keepalive pings (see [`super::DEFAULT_PING_INTERVAL`] for why so few),
//! and noticing a GOAWAY at once.
//!
//! Keepalive without a clock read per frame: the socket marks a flag on
//! every read that returns bytes, and a timer checks it once per ping
//! interval. A tick that finds no read since the last one, with calls open
//! on the connection, sends a ping; so a ping goes out after one to two
//! intervals of silence (hyper's: exactly one), never more often than one
//! per interval, and never on an idle connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::client::{Connection, SendRequest};
use h2::{Ping, PingPong};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// What the driver and the calls on a connection share.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    /// Bytes came in since the keepalive timer last looked.
    heard: AtomicBool,
    /// Streams opened and not yet done with.
    open_streams: AtomicUsize,
}

impl Liveness {
    /// Counts a stream as open until the guard drops.
    pub(crate) fn stream_opened(self: Arc<Self>) -> StreamGuard {
        self.open_streams.fetch_add(1, Ordering::Relaxed);
        StreamGuard(self)
    }
}

/// One open stream, for the keepalive's "calls open" test.
#[derive(Debug)]
pub(crate) struct StreamGuard(Arc<Liveness>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The TCP stream, marking [`Liveness::heard`] on every read with bytes.
pub(crate) struct HeardStream {
    tcp: TcpStream,
    liveness: Arc<Liveness>,
}

impl HeardStream {
    pub(crate) fn new(tcp: TcpStream, liveness: Arc<Liveness>) -> Self {
        HeardStream { tcp, liveness }
    }
}

impl AsyncRead for HeardStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.liveness.heard.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for HeardStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum DriverError {
    #[error("{0}")]
    H2(#[from] h2::Error),
    #[error("keepalive ping not answered within {0:?}")]
    PingTimeout(Duration),
}

impl DriverError {
    /// The HTTP/2 cause, for logs.
    pub(crate) fn h2(&self) -> Option<&h2::Error> {
        match self {
            DriverError::H2(e) => Some(e),
            DriverError::PingTimeout(_) => None,
        }
    }
}

/// How the connection's useful life ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The endpoint sent GOAWAY (or the connection can open no more
    /// streams): no new calls; the driver must still run for the calls in
    /// flight.
    GoingAway,
    /// The connection is over.
    Closed(Result<(), DriverError>),
}

pub(crate) struct Keepalive {
    pong: PingPong,
    interval: Duration,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    /// The timer runs only while calls are open: an idle connection must not
    /// wake the proxy every interval (a sidecar with 100 endpoints would
    /// wake a third of the times a second). A new stream's frames wake the
    /// driver, which arms it again.
    armed: bool,
    awaiting_pong: bool,
}

impl Keepalive {
    pub(crate) fn new(pong: PingPong, interval: Duration, timeout: Duration) -> Self {
        Keepalive {
            pong,
            interval,
            timeout,
            timer: Box::pin(tokio::time::sleep(interval)),
            armed: false,
            awaiting_pong: false,
        }
    }

    /// `Err` when a ping went unanswered for the timeout.
    fn poll(&mut self, liveness: &Liveness, cx: &mut Context<'_>) -> Result<(), DriverError> {
        loop {
            if self.awaiting_pong {
                match self.pong.poll_pong(cx) {
                    Poll::Ready(Ok(_)) => {
                        self.awaiting_pong = false;
                        // The pong itself was a read: the next tick skips.
                        self.rearm(self.interval);
                        continue;
                    }
                    // The connection is closing; its own poll reports why.
                    Poll::Ready(Err(_)) => return Ok(()),
                    Poll::Pending => {}
                }
                if self.timer.as_mut().poll(cx).is_ready() {
                    return Err(DriverError::PingTimeout(self.timeout));
                }
                return Ok(());
            }
            let open = liveness.open_streams.load(Ordering::Relaxed);
            if !self.armed {
                if open == 0 {
                    return Ok(());
                }
                // What came in while idle says nothing about this call.
                liveness.heard.store(false, Ordering::Relaxed);
                self.armed = true;
                self.rearm(self.interval);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            if open == 0 {
                // Idle again: no timer until a call opens a stream.
                self.armed = false;
                return Ok(());
            }
            if liveness.heard.swap(false, Ordering::Relaxed) {
                self.rearm(self.interval);
                continue;
            }
            if self.pong.send_ping(Ping::opaque()).is_err() {
                // Closing, or a ping already out: look again next interval.
                self.rearm(self.interval);
                return Ok(());
            }
            self.awaiting_pong = true;
            self.rearm(self.timeout);
        }
    }

    fn rearm(&mut self, after: Duration) {
        self.timer.as_mut().reset(Instant::now() + after);
    }
}

/// The connection future with its keepalive and GOAWAY watch.
pub(crate) struct Driver {
    conn: Connection<HeardStream, Bytes>,
    liveness: Arc<Liveness>,
    keepalive: Option<Keepalive>,
    /// A request handle kept only to learn of a GOAWAY: h2 fails
    /// `poll_ready` after one but wakes no one, so the driver, woken by the
    /// GOAWAY frame itself, asks. Dropped then, so the connection can close
    /// once its calls are done.
    watch: Option<SendRequest<Bytes>>,
}

impl Driver {
    pub(crate) fn new(
        conn: Connection<HeardStream, Bytes>,
        liveness: Arc<Liveness>,
        keepalive: Option<Keepalive>,
        watch: SendRequest<Bytes>,
    ) -> Self {
        Driver {
            conn,
            liveness,
            keepalive,
            watch: Some(watch),
        }
    }

    /// Runs the connection until it ends or can take no new calls.
    pub(crate) fn poll_ended(&mut self, cx: &mut Context<'_>) -> Poll<Ended> {
        if let Poll::Ready(r) = self.poll_conn(cx) {
            self.watch = None;
            return Poll::Ready(Ended::Closed(r));
        }
        if let Some(watch) = &mut self.watch
            && let Poll::Ready(Err(_)) = watch.poll_ready(cx)
        {
            self.watch = None;
            return Poll::Ready(Ended::GoingAway);
        }
        Poll::Pending
    }

    fn poll_conn(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), DriverError>> {
        if let Poll::Ready(r) = Pin::new(&mut self.conn).poll(cx) {
            return Poll::Ready(r.map_err(DriverError::from));
        }
        if let Some(k) = &mut self.keepalive
            && let Err(e) = k.poll(&self.liveness, cx)
        {
            // Dropping the connection fails its streams.
            return Poll::Ready(Err(e));
        }
        Poll::Pending
    }
}

/// Runs the connection to its end, for the calls still in flight.
impl Future for Driver {
    type Output = Result<(), DriverError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // No new calls come now: the watch must not keep it open.
        this.watch = None;
        this.poll_conn(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::transport::body::RequestBody;
    use crate::transport::client::{ConnectSettings, connect};

    const PING: u8 = 0x6;
    const SETTINGS: u8 = 0x4;

    /// An HTTP/2 endpoint that acknowledges SETTINGS and nothing else (no
    /// answers, no PING ACKs), and notes the type of every frame it gets.
    async fn mute_endpoint() -> (std::net::SocketAddr, Arc<Mutex<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let frames = seen.clone();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.expect("accept");
            let mut preface = [0u8; 24];
            tcp.read_exact(&mut preface).await.expect("preface");
            tcp.write_all(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0])
                .await
                .expect("settings");
            loop {
                let mut header = [0u8; 9];
                if tcp.read_exact(&mut header).await.is_err() {
                    return;
                }
                let len = usize::from(header[0]) << 16
                    | usize::from(header[1]) << 8
                    | usize::from(header[2]);
                let mut payload = vec![0u8; len];
                if tcp.read_exact(&mut payload).await.is_err() {
                    return;
                }
                frames.lock().expect("lock").push(header[3]);
                if header[3] == SETTINGS && header[4] & 1 == 0 {
                    let ack = [0, 0, 0, SETTINGS, 1, 0, 0, 0, 0];
                    if tcp.write_all(&ack).await.is_err() {
                        return;
                    }
                }
            }
        });
        (addr, seen)
    }

    fn settings(interval: Duration, timeout: Duration) -> ConnectSettings {
        ConnectSettings {
            ping_interval: Some(interval),
            ping_timeout: timeout,
            ..ConnectSettings::default()
        }
    }

    fn request() -> http::Request<RequestBody> {
        let mut req = http::Request::new(RequestBody::Full(Some(Bytes::from_static(b"x"))));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = http::Uri::from_static("http://backend/greeter.Greeter/SayHello");
        req
    }

    #[tokio::test]
    async fn an_idle_connection_is_never_pinged() {
        let (addr, seen) = mute_endpoint().await;
        let interval = Duration::from_millis(50);
        let (_upstream, mut driver) = connect(addr, settings(interval, interval))
            .await
            .expect("connect");
        let ended = tokio::time::timeout(interval * 8, poll_fn(|cx| driver.poll_ended(cx))).await;
        assert!(ended.is_err(), "the connection ended: {ended:?}");
        assert!(!seen.lock().expect("lock").contains(&PING));
    }

    /// No timer runs while no call is open: the driver of an idle
    /// connection is not woken at all, not even once per interval.
    #[tokio::test]
    async fn an_idle_connection_never_wakes_its_driver() {
        let (addr, _seen) = mute_endpoint().await;
        let interval = Duration::from_millis(20);
        let (_upstream, mut driver) = connect(addr, settings(interval, interval))
            .await
            .expect("connect");
        // The SETTINGS exchange settles first.
        let settle = tokio::time::timeout(interval * 3, poll_fn(|cx| driver.poll_ended(cx))).await;
        assert!(settle.is_err(), "the connection ended: {settle:?}");
        let mut polls = 0u32;
        let idle = tokio::time::timeout(
            interval * 15,
            poll_fn(|cx| {
                polls += 1;
                driver.poll_ended(cx)
            }),
        )
        .await;
        assert!(idle.is_err(), "the connection ended: {idle:?}");
        // The first poll starts the wait; the timeout's own end polls once
        // more. Anything else was a wake-up of the idle driver.
        assert_eq!(polls, 2, "the idle driver was woken {} times", polls - 2);
    }

    #[tokio::test]
    async fn a_silent_endpoint_with_calls_open_is_pinged_and_dropped() {
        let (addr, seen) = mute_endpoint().await;
        let interval = Duration::from_millis(50);
        let (upstream, mut driver) = connect(addr, settings(interval, interval))
            .await
            .expect("connect");
        let Ok(head) = upstream.send(request()) else {
            panic!("not sent");
        };
        let ended = tokio::time::timeout(interval * 8, poll_fn(|cx| driver.poll_ended(cx)))
            .await
            .expect("the connection ends");
        assert!(
            matches!(ended, Ended::Closed(Err(DriverError::PingTimeout(_)))),
            "{ended:?}"
        );
        assert!(seen.lock().expect("lock").contains(&PING));
        // The call on it fails as a lost connection.
        drop(driver);
        let Err(error) = head.await else {
            panic!("an answer from a mute endpoint");
        };
        assert!(error.is_io(), "{error:?}");
    }
}
