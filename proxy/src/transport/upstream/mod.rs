//! Calls on an upstream connection, with the `h2` crate driven directly:
//! open a stream, start the request body ([`pipe`]), wait for the response
//! head, stream the response body ([`recv`]). The connection itself is run
//! by [`super::driver`].

mod pipe;
mod recv;

pub use recv::UpstreamBody;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use http::{HeaderValue, Method, Request, Response, header};
use http_body::Body as _;

use self::pipe::PipeCancel;
use super::body::RequestBody;
use super::driver::{Liveness, StreamGuard};

/// The handle calls use to open streams on one connection.
#[derive(Clone)]
pub struct Upstream {
    sender: SendRequest<Bytes>,
    liveness: Arc<Liveness>,
}

impl Upstream {
    pub(crate) fn new(sender: SendRequest<Bytes>, liveness: Arc<Liveness>) -> Self {
        Upstream { sender, liveness }
    }

    /// Which connection this is, to tell one from its successor.
    pub fn connection_id(&self) -> usize {
        Arc::as_ptr(&self.liveness) as usize
    }

    /// Opens a stream for `req` and starts its body on the way. `Err` hands
    /// the request back unsent: the connection is closing (GOAWAY, failure)
    /// and h2 would open no stream, so it can go elsewhere at no risk. Any
    /// other failure comes out of the returned [`Head`].
    pub fn send(self, req: Request<RequestBody>) -> Result<Head, Box<Request<RequestBody>>> {
        let mut sender = self.sender;
        // This clone has no stream of its own waiting to open, so this is
        // only h2's check for a connection error (a GOAWAY sets one): never
        // pending. Streams over the endpoint's concurrency limit wait inside
        // h2, in order, and their body waits with them.
        if let Poll::Ready(Err(e)) = sender.poll_ready(&mut Context::from_waker(Waker::noop())) {
            tracing::debug!(error = %e, "connection closing; request not sent");
            // Boxed: the rare path should not size the common one.
            return Err(Box::new(req));
        }
        let (mut head, body) = req.into_parts();
        set_content_length(&mut head, &body);
        let eos = body.is_end_stream();
        // Counted open before h2 can wake the driver for this stream, so the
        // driver arms its keepalive timer on that very wake-up. The call's
        // handle is spent: its reference becomes the stream's.
        let open = self.liveness.stream_opened();
        let (response, send) = match sender.send_request(Request::from_parts(head, ()), eos) {
            Ok(opened) => opened,
            // The connection failed since the check, or h2 refused the head.
            Err(e) => return Ok(Head(HeadState::Failed(e))),
        };
        let pipe = if eos { None } else { pipe::start(body, send) };
        Ok(Head(HeadState::Waiting(Opened {
            response,
            pipe,
            open,
        })))
    }
}

/// As hyper: a body of known length gets a `content-length` (the health
/// check's; a caller's came with its own).
fn set_content_length(head: &mut http::request::Parts, body: &RequestBody) {
    let Some(len) = body.size_hint().exact() else {
        return;
    };
    let payload_method = !matches!(
        head.method,
        Method::GET | Method::HEAD | Method::DELETE | Method::CONNECT
    );
    if (len != 0 || payload_method) && !head.headers.contains_key(header::CONTENT_LENGTH) {
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
}

/// The wait for the response head. Dropping it before the head came (with
/// the request body sent) resets the stream with CANCEL.
pub struct Head(HeadState);

enum HeadState {
    Waiting(Opened),
    Failed(h2::Error),
    Done,
}

struct Opened {
    response: ResponseFuture,
    pipe: Option<PipeCancel>,
    open: StreamGuard,
}

impl Future for Head {
    type Output = Result<Response<UpstreamBody>, h2::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let result = match &mut this.0 {
            HeadState::Waiting(opened) => ready!(Pin::new(&mut opened.response).poll(cx)),
            HeadState::Failed(_) => Err(h2::Error::from(h2::Reason::INTERNAL_ERROR)),
            // Polled after completion: never ready again.
            HeadState::Done => return Poll::Pending,
        };
        Poll::Ready(match std::mem::replace(&mut this.0, HeadState::Done) {
            HeadState::Waiting(Opened { pipe, open, .. }) => {
                result.map(|r| r.map(|recv| UpstreamBody::new(recv, pipe, open)))
            }
            HeadState::Failed(e) => Err(e),
            // Left by the match above, which returned.
            HeadState::Done => Err(h2::Error::from(h2::Reason::INTERNAL_ERROR)),
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use tokio::net::TcpListener;

    use super::*;
    use crate::transport::client::{ConnectSettings, connect};

    /// A request body already in hand (a unary call's, usually) goes out
    /// from the call's own task: no pipe task, no cancel handle.
    #[tokio::test]
    async fn a_body_in_hand_goes_out_without_a_task() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut conn = h2::server::handshake(tcp).await.expect("handshake");
            let (req, mut respond) = conn.accept().await.expect("a request").expect("ok");
            tokio::spawn(async move { while conn.accept().await.is_some() {} });
            let mut body = req.into_body();
            let mut got = BytesMut::new();
            while let Some(data) = body.data().await {
                let data = data.expect("data");
                let _ = body.flow_control().release_capacity(data.len());
                got.extend_from_slice(&data);
            }
            respond
                .send_response(Response::new(()), true)
                .expect("respond");
            got.freeze()
        });
        let (upstream, driver) = connect(addr, ConnectSettings::default())
            .await
            .expect("connect");
        tokio::spawn(driver);
        let mut req = Request::new(RequestBody::Full(Some(Bytes::from_static(b"hello"))));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = http::Uri::from_static("http://backend/greeter.Greeter/SayHello");
        let Ok(head) = upstream.send(req) else {
            panic!("the request was handed back unsent");
        };
        assert!(
            matches!(&head.0, HeadState::Waiting(opened) if opened.pipe.is_none()),
            "the body needed a task"
        );
        let response = head.await.expect("a response");
        assert!(response.body().is_end_stream());
        assert_eq!(server.await.expect("server"), Bytes::from_static(b"hello"));
    }
}
