//! Bodies on both sides of the proxy. Request bodies stream from the caller to
//! the endpoint (optionally through a replay buffer); response bodies stream
//! back while a [`CallRecord`] accounts for the call when it ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::endpoint::Endpoint;
use crate::grpc_status::{self, code};
use crate::transport::replay::ReplayBody;
use crate::util::now_nanos;

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

/// Bookkeeping of one call on one endpoint; settles metrics, the latency
/// estimate and outlier detection exactly once, when dropped.
pub struct CallRecord {
    endpoint: Arc<Endpoint>,
    /// When the call reached the proxy (for the duration histogram).
    accepted_at: u64,
    /// When the request went to the endpoint (for the latency estimate).
    dispatched_at: u64,
    rtt_sampled: bool,
    status: Option<u32>,
    /// The endpoint or its connection failed the call (counts for ejection).
    upstream_failed: bool,
    /// The request never reached the endpoint: only the in-flight count.
    unsent: bool,
}

impl CallRecord {
    /// Starts accounting; the endpoint's in-flight count rises until drop.
    pub fn start(endpoint: Arc<Endpoint>, accepted_at: u64) -> Self {
        endpoint.call_started();
        CallRecord {
            endpoint,
            accepted_at,
            dispatched_at: now_nanos(),
            rtt_sampled: false,
            status: None,
            upstream_failed: false,
            unsent: false,
        }
    }

    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// First response DATA frame (or a trailers-only end): the latency sample
    /// of peak-EWMA, so long streams do not look like permanent load.
    pub fn first_response(&mut self) {
        if !self.rtt_sampled {
            self.rtt_sampled = true;
            self.endpoint
                .observe_rtt(now_nanos().saturating_sub(self.dispatched_at));
        }
    }

    pub fn set_status(&mut self, status: u32) {
        self.status = Some(status);
    }

    /// Ends the record of an attempt that never reached the endpoint.
    pub fn not_sent(mut self) {
        self.unsent = true;
    }

    pub fn upstream_failed(&mut self, status: u32) {
        self.upstream_failed = true;
        self.status = Some(status);
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        let ep = &self.endpoint;
        ep.call_ended();
        if self.unsent {
            return;
        }
        // No status and no end: the caller went away (reset or deadline).
        let status = self.status.unwrap_or(code::CANCELLED);
        ep.counters.inc(status);
        ep.subset
            .duration
            .observe_nanos(now_nanos().saturating_sub(self.accepted_at));
        if self.upstream_failed || status == code::UNAVAILABLE {
            ep.record_failure();
        } else if status != code::CANCELLED {
            ep.record_success();
        }
    }
}

/// The body the caller receives.
pub struct ResponseBody {
    upstream: Option<Incoming>,
    record: Option<CallRecord>,
    deadline: Option<(Pin<Box<Sleep>>, Duration)>,
    /// Trailers the proxy sends in place of the upstream's, then ends.
    pending_trailers: Option<HeaderMap>,
}

impl ResponseBody {
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
        body: Incoming,
        mut record: CallRecord,
        head: &HeaderMap,
        deadline: Option<(Pin<Box<Sleep>>, Duration)>,
    ) -> Self {
        if let Some(status) = grpc_status::status_of(head) {
            record.set_status(status);
        }
        if body.is_end_stream() {
            record.first_response();
            if record.status.is_none() {
                record.set_status(code::UNKNOWN);
            }
        }
        ResponseBody {
            upstream: Some(body),
            record: Some(record),
            deadline,
            pending_trailers: None,
        }
    }

    fn cut_short(&mut self, trailers: HeaderMap) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Dropping the upstream body resets the upstream stream (CANCEL).
        self.upstream = None;
        self.deadline = None;
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }
}

impl Body for ResponseBody {
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
        if let Some((sleep, after)) = &mut this.deadline
            && sleep.as_mut().poll(cx).is_ready()
        {
            let message = format!("deadline exceeded after {after:?}");
            if let Some(r) = &mut this.record {
                r.set_status(code::DEADLINE_EXCEEDED);
            }
            return this.cut_short(grpc_status::trailers(code::DEADLINE_EXCEEDED, &message));
        }
        let Some(upstream) = &mut this.upstream else {
            this.record = None;
            return Poll::Ready(None);
        };
        match Pin::new(upstream).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(r) = &mut this.record {
                    if frame.is_data() {
                        r.first_response();
                    } else if let Some(t) = frame.trailers_ref() {
                        r.first_response();
                        r.set_status(grpc_status::status_of(t).unwrap_or(code::UNKNOWN));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.upstream = None;
                if let Some(r) = &mut this.record
                    && r.status.is_none()
                {
                    r.set_status(code::UNKNOWN);
                }
                this.record = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                // The endpoint reset the stream or its connection died mid-call:
                // end the call with a proper status instead of a bare reset.
                let status = grpc_status::code_for_upstream_error(&e);
                let endpoint = this.record.as_ref().map(|r| r.endpoint.addr);
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
