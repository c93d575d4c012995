//! Bodies on both sides of the proxy. Request bodies stream from the caller to
//! the endpoint (optionally through a replay buffer); response bodies stream
//! back and report to a [`CallObserver`] what became of the call.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::grpc_status::{self, Code};
use crate::transport::replay::ReplayBody;
use crate::transport::upstream::UpstreamBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the proxy sends upstream.
pub enum RequestBody {
    Streamed(Incoming),
    Replayable(ReplayBody),
    /// A body the proxy made itself (health checks).
    Full(Option<Bytes>),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Streamed(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            RequestBody::Replayable(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            RequestBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Streamed(b) => b.is_end_stream(),
            RequestBody::Replayable(b) => b.is_end_stream(),
            RequestBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Streamed(b) => b.size_hint(),
            RequestBody::Replayable(b) => b.size_hint(),
            RequestBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            RequestBody::Full(None) => SizeHint::with_exact(0),
        }
    }
}

/// What a response body tells about its call while it streams: the first
/// response frame, the status, an upstream failure. The endpoint layer's call
/// record implements it and settles the call when the body drops it.
pub trait CallObserver {
    /// The first DATA frame, or trailers without any.
    fn first_response(&mut self);
    fn status(&self) -> Option<Code>;
    fn set_status(&mut self, status: Code);
    /// The endpoint or its connection failed the call.
    fn upstream_failed(&mut self, status: Code);
    /// Where the call went (for logs and messages).
    fn peer(&self) -> SocketAddr;
}

/// The body the caller receives; `R` hears what became of the call.
pub struct ResponseBody<R> {
    upstream: Option<UpstreamBody>,
    record: Option<R>,
    deadline: Option<(Pin<Box<Sleep>>, Duration)>,
    /// Trailers the proxy sends in place of the upstream's, then ends.
    pending_trailers: Option<HeaderMap>,
}

impl<R: CallObserver> Default for ResponseBody<R> {
    fn default() -> Self {
        ResponseBody::empty()
    }
}

impl<R: CallObserver> ResponseBody<R> {
    /// No body: the response is trailers-only.
    pub fn empty() -> Self {
        ResponseBody {
            upstream: None,
            record: None,
            deadline: None,
            pending_trailers: None,
        }
    }

    pub fn upstream(
        body: UpstreamBody,
        mut record: R,
        head: &HeaderMap,
        deadline: Option<(Pin<Box<Sleep>>, Duration)>,
    ) -> Self {
        if let Some(status) = grpc_status::status_of(head) {
            record.set_status(status);
        }
        if body.is_end_stream() {
            record.first_response();
            if record.status().is_none() {
                record.set_status(Code::UNKNOWN);
            }
        }
        ResponseBody {
            upstream: Some(body),
            record: Some(record),
            deadline,
            pending_trailers: None,
        }
    }

    fn deadline_exceeded(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let after = self
            .deadline
            .as_ref()
            .map_or(Duration::ZERO, |(_, after)| *after);
        let message = format!("deadline exceeded after {after:?}");
        if let Some(r) = &mut self.record {
            r.set_status(Code::DEADLINE_EXCEEDED);
        }
        self.cut_short(grpc_status::trailers(Code::DEADLINE_EXCEEDED, &message))
    }

    fn cut_short(&mut self, trailers: HeaderMap) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Dropping the upstream body resets the upstream stream (CANCEL).
        self.upstream = None;
        self.deadline = None;
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }
}

impl<R: CallObserver + Unpin> Body for ResponseBody<R> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(trailers) = this.pending_trailers.take() {
            return this.cut_short(trailers);
        }
        if let Some((sleep, _)) = &mut this.deadline
            && sleep.as_mut().poll(cx).is_ready()
        {
            return this.deadline_exceeded();
        }
        let Some(upstream) = &mut this.upstream else {
            this.record = None;
            return Poll::Ready(None);
        };
        match Pin::new(upstream).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                // The endpoint's last word at the deadline (it knows it too)
                // may come in before the timer fires: the deadline wins.
                if frame.is_trailers()
                    && this
                        .deadline
                        .as_ref()
                        .is_some_and(|(sleep, _)| sleep.deadline() <= Instant::now())
                {
                    return this.deadline_exceeded();
                }
                if let Some(r) = &mut this.record {
                    if frame.is_data() {
                        r.first_response();
                    } else if let Some(t) = frame.trailers_ref() {
                        r.first_response();
                        r.set_status(grpc_status::status_of(t).unwrap_or(Code::UNKNOWN));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.upstream = None;
                if let Some(r) = &mut this.record
                    && r.status().is_none()
                {
                    r.set_status(Code::UNKNOWN);
                }
                this.record = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                // The endpoint reset the stream or its connection died mid-call:
                // end the call with a proper status instead of a bare reset.
                let status = grpc_status::code_for_upstream_error(&e);
                let endpoint = this.record.as_ref().map(|r| r.peer());
                tracing::debug!(?endpoint, error = %e, "upstream response failed mid-stream");
                if let Some(r) = &mut this.record {
                    r.upstream_failed(status);
                }
                let message = match endpoint {
                    Some(addr) => format!("upstream {addr} failed: {e}"),
                    None => format!("upstream failed: {e}"),
                };
                this.cut_short(grpc_status::trailers(status, &message))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending_trailers.is_none() && self.upstream.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.upstream {
            Some(b) => b.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}
