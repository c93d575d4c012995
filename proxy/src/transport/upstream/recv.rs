//! The endpoint's response body as an [`http_body::Body`]: DATA frames, then
//! trailers. Every DATA frame handed on gives its window back at once (the
//! caller's side paces the endpoint through its own window, as hyper's
//! `Incoming` does).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::RecvStream;
use http_body::{Body, Frame, SizeHint};

use super::pipe::PipeCancel;
use crate::transport::driver::StreamGuard;

pub struct UpstreamBody {
    recv: RecvStream,
    data_done: bool,
    /// Trailers or the end were handed on.
    ended: bool,
    /// The request body's task, reset when the response is dropped.
    _pipe: Option<PipeCancel>,
    _open: StreamGuard,
}

impl UpstreamBody {
    pub(super) fn new(recv: RecvStream, pipe: Option<PipeCancel>, open: StreamGuard) -> Self {
        UpstreamBody {
            recv,
            data_done: false,
            ended: false,
            _pipe: pipe,
            _open: open,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Only fails once the stream is gone; then nothing is owed.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        let trailers = ready!(this.recv.poll_trailers(cx));
        this.ended = true;
        match trailers {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
