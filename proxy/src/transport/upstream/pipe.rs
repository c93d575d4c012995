//! The request body's way upstream: the frames already in hand go out at
//! once from the call's own task (a unary request has usually arrived
//! whole with its head); only a body that has to be waited for, or that
//! waits for flow-control window, gets a task of its own.
//!
//! A new stream has no window yet (h2 grants it once the connection task
//! has opened it), so the frames in hand go to h2's buffer as they are, up
//! to [`INLINE_BUDGET`] bytes a stream: what any endpoint accepts before
//! its first WINDOW_UPDATE, and the bound on what h2 may hold for it.
//! Past that the pacing is hyper's: a DATA frame is taken from the body only
//! when the previous one went out, and goes out once the stream has any
//! window (h2 buffers the rest), so a slow endpoint slows the caller down.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use h2::{Reason, SendStream};
use http_body::Body as _;
use tokio::sync::oneshot;

use crate::transport::body::RequestBody;

/// Held by the call while the pipe task runs: dropping it (the call is over
/// or abandoned) resets the stream and ends the task.
pub(crate) struct PipeCancel {
    _cancel: oneshot::Sender<()>,
}

/// HTTP/2's default initial stream window.
const INLINE_BUDGET: usize = 65_535;

struct Pipe {
    body: RequestBody,
    send: SendStream<Bytes>,
    /// A DATA frame taken from the body, waiting for window; and whether it
    /// ends the stream.
    held: Option<(Bytes, bool)>,
    /// Bytes that may still go out without waiting for window: only while
    /// the call's own task sends.
    budget: usize,
}

/// Sends what the body has ready now; spawns a task for the rest, if any.
pub(super) fn start(body: RequestBody, send: SendStream<Bytes>) -> Option<PipeCancel> {
    let mut pipe = Pipe {
        body,
        send,
        held: None,
        budget: INLINE_BUDGET,
    };
    // Polled without a waker: what is not ready now the task polls again.
    if pipe
        .poll_pump(&mut Context::from_waker(Waker::noop()))
        .is_ready()
    {
        return None;
    }
    pipe.budget = 0;
    let (cancel, mut cancelled) = oneshot::channel::<()>();
    tokio::spawn(async move {
        poll_fn(|cx| {
            if Pin::new(&mut cancelled).poll(cx).is_ready() {
                pipe.send.send_reset(Reason::CANCEL);
                return Poll::Ready(());
            }
            pipe.poll_pump(cx)
        })
        .await;
    });
    Some(PipeCancel { _cancel: cancel })
}

impl Pipe {
    /// Ready when the body is sent, or can no longer be: the stream was
    /// reset (the response says why), or the body failed (the stream is
    /// reset with CANCEL).
    fn poll_pump(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            // The endpoint may reset the stream while the body is awaited.
            if self.send.poll_reset(cx).is_ready() {
                return Poll::Ready(());
            }
            if let Some((data, eos)) = self.held.take() {
                let in_budget = data.len() <= self.budget;
                // Past the budget once, always past it: frames keep order.
                self.budget = if in_budget {
                    self.budget - data.len()
                } else {
                    0
                };
                while !in_budget && self.send.capacity() == 0 {
                    match self.send.poll_capacity(cx) {
                        Poll::Pending => {
                            self.held = Some((data, eos));
                            return Poll::Pending;
                        }
                        Poll::Ready(Some(Ok(0))) => {}
                        Poll::Ready(Some(Ok(_))) => break,
                        Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                    }
                }
                if self.send.send_data(data, eos).is_err() || eos {
                    return Poll::Ready(());
                }
                continue;
            }
            let frame = match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    // No END_STREAM went out with the last frame.
                    let _ = self.send.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(error = %e, "request body failed; resetting the upstream stream");
                    self.send.send_reset(Reason::CANCEL);
                    return Poll::Ready(());
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            match frame.into_data() {
                Ok(data) => {
                    let eos = self.body.is_end_stream();
                    if data.is_empty() {
                        // Needs no window.
                        if self.send.send_data(data, eos).is_err() || eos {
                            return Poll::Ready(());
                        }
                        continue;
                    }
                    // A claim of one byte, as hyper: h2 raises it to the
                    // buffered length, and a full claim would pin window
                    // other streams could use.
                    self.send.reserve_capacity(1);
                    self.held = Some((data, eos));
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        self.send.reserve_capacity(0);
                        let _ = self.send.send_trailers(trailers);
                        return Poll::Ready(());
                    }
                    // Another kind of frame: nothing HTTP/2 can carry.
                }
            }
        }
    }
}
