//! A nameserver that lives in memory: hickory's resolver, built on a
//! [`Canned`] runtime provider, sends its queries over "UDP" and "TCP"
//! sockets that answer every A query with one canned message and every AAAA
//! query with another (their id set to the query's, as a server does). No
//! socket is opened and nothing waits on the network, so a fuzz target can
//! run the proxy's real resolver thousands of times a second.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::io::{AsyncRead, AsyncWrite};
use hickory_resolver::net::runtime::{
    DnsTcpStream, DnsUdpSocket, RuntimeProvider, Spawn, TokioTime,
};
use hickory_resolver::proto::op::Message;
use hickory_resolver::proto::rr::RecordType;
use tokio::task::AbortHandle;

/// The bytes sent back for each question type.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    pub a: Vec<u8>,
    pub aaaa: Vec<u8>,
}

impl Answers {
    /// The answer to `query` (a DNS message as the resolver sent it), with
    /// the query's id; None for a query of another type (nothing is sent).
    fn to(&self, query: &[u8]) -> Option<Vec<u8>> {
        let query = Message::from_vec(query).ok()?;
        let mut answer = match query.queries.first()?.query_type {
            RecordType::A => self.a.clone(),
            RecordType::AAAA => self.aaaa.clone(),
            _ => return None,
        };
        if let Some(id) = answer.get_mut(..2) {
            id.copy_from_slice(&query.metadata.id.to_be_bytes());
        }
        Some(answer)
    }
}

/// hickory's runtime provider with the canned nameserver in place of the
/// network (timers and background tasks are tokio's).
#[derive(Clone)]
pub struct Canned {
    answers: Arc<Answers>,
    tasks: Tasks,
}

impl Canned {
    pub fn new(answers: Answers) -> Self {
        Canned {
            answers: Arc::new(answers),
            tasks: Tasks::default(),
        }
    }

    /// Stops the resolver's background tasks. They hold the provider, so
    /// without this every resolver a target builds would live on.
    pub fn stop(&self) {
        let tasks =
            std::mem::take(&mut *self.tasks.0.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            task.abort();
        }
    }
}

/// The background tasks hickory spawns, on the current tokio runtime.
#[derive(Clone, Default)]
pub struct Tasks(Arc<Mutex<Vec<AbortHandle>>>);

impl Spawn for Tasks {
    fn spawn_bg(&mut self, future: impl Future<Output = ()> + Send + 'static) {
        let task = tokio::spawn(future).abort_handle();
        let mut tasks = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }
}

impl RuntimeProvider for Canned {
    type Handle = Tasks;
    type Timer = TokioTime;
    type Udp = CannedUdp;
    type Tcp = CannedTcp;

    fn create_handle(&self) -> Self::Handle {
        self.tasks.clone()
    }

    fn connect_tcp(
        &self,
        _server_addr: SocketAddr,
        _bind_addr: Option<SocketAddr>,
        _timeout: Option<Duration>,
    ) -> Pin<Box<dyn Send + Future<Output = Result<Self::Tcp, io::Error>>>> {
        let answers = self.answers.clone();
        Box::pin(async move { Ok(CannedTcp::new(answers)) })
    }

    fn bind_udp(
        &self,
        _local_addr: SocketAddr,
        server_addr: SocketAddr,
    ) -> Pin<Box<dyn Send + Future<Output = Result<Self::Udp, io::Error>>>> {
        let answers = self.answers.clone();
        Box::pin(async move {
            Ok(CannedUdp {
                answers,
                server: server_addr,
                inbox: Mutex::new(Inbox::default()),
            })
        })
    }
}

/// Datagrams waiting to be received, and who waits for one.
#[derive(Default)]
struct Inbox {
    datagrams: VecDeque<Vec<u8>>,
    waker: Option<Waker>,
}

/// A "UDP socket" whose every query is answered at once, from the server.
pub struct CannedUdp {
    answers: Arc<Answers>,
    server: SocketAddr,
    inbox: Mutex<Inbox>,
}

impl CannedUdp {
    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl DnsUdpSocket for CannedUdp {
    type Time = TokioTime;

    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        let mut inbox = self.inbox();
        match inbox.datagrams.pop_front() {
            Some(datagram) => {
                // A datagram longer than the buffer is cut, as recvfrom does.
                let n = datagram.len().min(buf.len());
                buf[..n].copy_from_slice(&datagram[..n]);
                Poll::Ready(Ok((n, self.server)))
            }
            None => {
                inbox.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn poll_send_to(
        &self,
        _cx: &mut Context<'_>,
        buf: &[u8],
        _target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        if let Some(answer) = self.answers.to(buf) {
            let mut inbox = self.inbox();
            inbox.datagrams.push_back(answer);
            if let Some(waker) = inbox.waker.take() {
                waker.wake();
            }
        }
        Poll::Ready(Ok(buf.len()))
    }
}

/// A "TCP connection": two-byte length-prefixed queries in, answers out.
/// An answer goes out without its TC bit (over TCP a server sends it whole).
pub struct CannedTcp {
    answers: Arc<Answers>,
    written: Vec<u8>,
    readable: VecDeque<u8>,
    reader: Option<Waker>,
}

impl CannedTcp {
    fn new(answers: Arc<Answers>) -> Self {
        CannedTcp {
            answers,
            written: Vec::new(),
            readable: VecDeque::new(),
            reader: None,
        }
    }

    /// Answers every complete query written so far.
    fn answer_queries(&mut self) {
        while let Some(len) = self.written.get(..2) {
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            if self.written.len() < 2 + len {
                return;
            }
            let query: Vec<u8> = self.written.drain(..2 + len).skip(2).collect();
            let Some(mut answer) = self.answers.to(&query) else {
                continue;
            };
            if let Some(flags) = answer.get_mut(2) {
                *flags &= !0x02;
            }
            answer.truncate(usize::from(u16::MAX));
            let prefix = u16::try_from(answer.len()).unwrap_or(u16::MAX);
            self.readable.extend(prefix.to_be_bytes());
            self.readable.extend(answer);
            if let Some(waker) = self.reader.take() {
                waker.wake();
            }
        }
    }
}

impl DnsTcpStream for CannedTcp {
    type Time = TokioTime;
}

impl AsyncRead for CannedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.readable.is_empty() {
            this.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = this.readable.len().min(buf.len());
        for (slot, byte) in buf.iter_mut().zip(this.readable.drain(..n)) {
            *slot = byte;
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for CannedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.written.extend_from_slice(buf);
        this.answer_queries();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
