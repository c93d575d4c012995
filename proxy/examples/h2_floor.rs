//! The least a gRPC proxy built on the `h2` crate can cost per call: a bare
//! forwarder with none of the proxy's features (no deadlines, retries,
//! health, metrics, discovery, or flow control beyond h2's own buffering),
//! one task per call and the `h2` API driven directly, round robin over
//! fixed endpoints. The benchmark runs it as the peer `h2-floor` to show how
//! much of grpc-balancer's per-call CPU is the HTTP/2 library's and how much
//! is the proxy's own. Not for production use.
//!
//!   h2_floor --listen 127.0.0.1:PORT --endpoint 127.0.0.1:A --endpoint 127.0.0.1:B

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use http::{Request, Response};
use tokio::net::{TcpListener, TcpStream};

const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Upstreams {
    senders: Vec<h2::client::SendRequest<Bytes>>,
    next: AtomicUsize,
}

fn main() -> Result<(), Error> {
    let mut listen = None;
    let mut endpoints = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value: SocketAddr = args
            .next()
            .ok_or_else(|| format!("{flag} needs an address"))?
            .parse()?;
        match flag.as_str() {
            "--listen" => listen = Some(value),
            "--endpoint" => endpoints.push(value),
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    let listen = listen.ok_or("--listen is required")?;
    if endpoints.is_empty() {
        return Err("at least one --endpoint is required".into());
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(listen, endpoints))
}

async fn run(listen: SocketAddr, endpoints: Vec<SocketAddr>) -> Result<(), Error> {
    let mut senders = Vec::new();
    for addr in endpoints {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake(tcp)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("h2_floor: upstream {addr}: {e}");
            }
        });
        senders.push(sender);
    }
    let upstreams = Arc::new(Upstreams {
        senders,
        next: AtomicUsize::new(0),
    });
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let upstreams = upstreams.clone();
        tokio::spawn(async move {
            let mut connection = match h2::server::Builder::new()
                .initial_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .max_concurrent_streams(1024)
                .handshake::<_, Bytes>(tcp)
                .await
            {
                Ok(c) => c,
                Err(e) => return eprintln!("h2_floor: handshake: {e}"),
            };
            while let Some(accepted) = connection.accept().await {
                let Ok((request, respond)) = accepted else {
                    return;
                };
                let upstreams = upstreams.clone();
                tokio::spawn(async move {
                    if let Err(e) = forward(&upstreams, request, respond).await {
                        eprintln!("h2_floor: call: {e}");
                    }
                });
            }
        });
    }
}

/// One call: the request head to the next endpoint, then the request body
/// up and the response down side by side, in this one task.
async fn forward(
    upstreams: &Upstreams,
    request: Request<RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) -> Result<(), Error> {
    let i = upstreams.next.fetch_add(1, Ordering::Relaxed) % upstreams.senders.len();
    let mut sender = upstreams.senders[i].clone().ready().await?;
    let (head, body) = request.into_parts();
    let end = body.is_end_stream();
    let (response, send_body) = sender.send_request(Request::from_parts(head, ()), end)?;
    let up = async move {
        if !end {
            pump(body, send_body).await?;
        }
        Ok::<_, Error>(())
    };
    let down = async move {
        let (head, body) = response.await?.into_parts();
        let end = body.is_end_stream();
        let send = respond.send_response(Response::from_parts(head, ()), end)?;
        if !end {
            pump(body, send).await?;
        }
        Ok::<_, Error>(())
    };
    let (up, down) = tokio::join!(up, down);
    up.and(down)
}

/// Copies DATA frames and trailers from one stream to the other, giving the
/// window back as each frame is passed on.
async fn pump(mut from: RecvStream, mut to: SendStream<Bytes>) -> Result<(), Error> {
    while let Some(data) = from.data().await {
        let data = data?;
        let _ = from.flow_control().release_capacity(data.len());
        to.send_data(data, false)?;
    }
    match from.trailers().await? {
        Some(trailers) => to.send_trailers(trailers)?,
        None => to.send_data(Bytes::new(), true)?,
    }
    Ok(())
}
