//! A backend that misbehaves at the HTTP/2 level, written with raw frames:
//! it completes the handshake (SETTINGS both ways) and then answers every
//! request the way its [`Hostility`] says.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::task::JoinHandle;

use crate::h2_frames::*;

#[derive(Debug, Clone, Copy)]
pub enum Hostility {
    /// Bytes that are no HTTP/2 at all, in place of a response.
    Garbage,
    /// A response header block that never ends: CONTINUATION forever.
    EndlessHeaders,
    /// Response headers, then a small message every 50 ms, never an end.
    NeverEnds,
    /// GOAWAY (nothing processed) on every request, then close.
    GoawayEveryStream,
}

pub struct HostileBackend {
    pub addr: SocketAddr,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// Bytes written in answers (after the handshake).
    pub written: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for HostileBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn spawn(hostility: Hostility) -> HostileBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let written = Arc::new(AtomicUsize::new(0));
    let (c, w) = (connections.clone(), written.clone());
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::Relaxed);
            conns.spawn(serve(stream, hostility, w.clone()));
        }
    });
    HostileBackend {
        addr,
        connections,
        written,
        task,
    }
}

async fn serve(stream: tokio::net::TcpStream, hostility: Hostility, written: Arc<AtomicUsize>) {
    let (mut r, mut w) = stream.into_split();
    let mut preface = [0u8; 24];
    if r.read_exact(&mut preface).await.is_err() || preface != PREFACE {
        return;
    }
    if w.write_all(&settings(&[])).await.is_err() {
        return;
    }
    // Answers run beside the reader, which keeps acknowledging SETTINGS and
    // draining whatever the proxy sends.
    let mut answers = tokio::task::JoinSet::new();
    let w = Arc::new(tokio::sync::Mutex::new(w));
    while let Ok(Some(f)) = read_frame(&mut r).await {
        match f.kind {
            SETTINGS
                if f.flags & ACK == 0
                    && w.lock().await.write_all(&settings_ack()).await.is_err() =>
            {
                return;
            }
            HEADERS => {
                answers.spawn(answer(f.stream, hostility, w.clone(), written.clone()));
            }
            _ => {}
        }
    }
}

async fn answer(
    stream: u32,
    hostility: Hostility,
    w: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    written: Arc<AtomicUsize>,
) {
    let send = |bytes: Vec<u8>| {
        let w = w.clone();
        let written = written.clone();
        async move {
            let ok = w.lock().await.write_all(&bytes).await.is_ok();
            if ok {
                written.fetch_add(bytes.len(), Ordering::Relaxed);
            }
            ok
        }
    };
    match hostility {
        Hostility::Garbage => {
            send(b"HTTP/1.1 502 Bad Gateway\r\n\r\n\xff\xfe\x00garbage".repeat(64)).await;
        }
        Hostility::EndlessHeaders => {
            let mut head = literal(":status", b"200");
            head.extend(literal("content-type", b"application/grpc"));
            if !send(frame(HEADERS, 0, stream, &head)).await {
                return;
            }
            for i in 0u64.. {
                let block = literal(&format!("x-endless-{i}"), &[b'e'; 1000]);
                if !send(frame(CONTINUATION, 0, stream, &block)).await {
                    return;
                }
            }
        }
        Hostility::NeverEnds => {
            let mut head = literal(":status", b"200");
            head.extend(literal("content-type", b"application/grpc"));
            if !send(frame(HEADERS, END_HEADERS, stream, &head)).await {
                return;
            }
            // An empty message: a default reply, 5 bytes on the wire.
            while send(frame(DATA, 0, stream, &[0, 0, 0, 0, 0])).await {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Hostility::GoawayEveryStream => {
            let last = stream.saturating_sub(2);
            send(goaway(last, NO_ERROR)).await;
            let _ = w.lock().await.shutdown().await;
        }
    }
}
