//! A request body that can be sent again after the first attempt was refused
//! (REFUSED_STREAM, GOAWAY before processing): data frames are kept, up to a
//! limit, while they stream through, so a retry replays them and then
//! continues with the rest of the caller's body.
//!
//! Every attempt gets its own handle. Handles share the source body and the
//! buffer; a handle of an older attempt that is still being polled by its
//! (dying) h2 stream ends at once, so it cannot steal frames from the retry.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

pub struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    generation: u32,
    /// Index of the next buffered chunk this handle replays.
    cursor: usize,
    trailers_sent: bool,
}

struct Shared {
    source: Incoming,
    source_ended: bool,
    chunks: Vec<Bytes>,
    buffered: usize,
    max_buffered: usize,
    /// The buffer no longer holds the whole body sent so far: no replay.
    replay_lost: bool,
    trailers: Option<HeaderMap>,
    generation: u32,
}

/// Held by the call to ask for a replay or release the buffer.
pub struct ReplayControl {
    shared: Arc<Mutex<Shared>>,
}

impl ReplayBody {
    pub fn new(source: Incoming, max_buffered: usize) -> (Self, ReplayControl) {
        let source_ended = source.is_end_stream();
        let shared = Arc::new(Mutex::new(Shared {
            source,
            source_ended,
            chunks: Vec::new(),
            buffered: 0,
            max_buffered,
            replay_lost: false,
            trailers: None,
            generation: 0,
        }));
        let body = ReplayBody {
            shared: shared.clone(),
            generation: 0,
            cursor: 0,
            trailers_sent: false,
        };
        (body, ReplayControl { shared })
    }
}

impl ReplayControl {
    /// A handle for the next attempt, or `None` when the body can no longer
    /// be replayed (too large, failed, or the response already started).
    pub fn replay(&self) -> Option<ReplayBody> {
        let mut shared = lock(&self.shared);
        if shared.replay_lost {
            return None;
        }
        shared.generation = shared.generation.wrapping_add(1);
        Some(ReplayBody {
            shared: self.shared.clone(),
            generation: shared.generation,
            cursor: 0,
            trailers_sent: false,
        })
    }

    /// Whether everything sent so far is still buffered.
    pub fn can_replay(&self) -> bool {
        !lock(&self.shared).replay_lost
    }

    /// Drops the buffer once an answer arrived: no retry will need it.
    pub fn stop_buffering(&self) {
        let mut shared = lock(&self.shared);
        shared.replay_lost = true;
        shared.chunks = Vec::new();
        shared.buffered = 0;
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding the lock cannot leave the buffer half-written in a
    // way that matters more than losing the replay, so poisoning is ignored.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let mut shared = lock(&this.shared);
        if this.generation != shared.generation {
            return Poll::Ready(None);
        }
        if !shared.replay_lost && this.cursor < shared.chunks.len() {
            let chunk = shared.chunks[this.cursor].clone();
            this.cursor += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if shared.source_ended {
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(trailers) = shared.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
            }
            return Poll::Ready(None);
        }
        match Pin::new(&mut shared.source).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                shared.source_ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                shared.replay_lost = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if !shared.replay_lost {
                        if shared.buffered + data.len() <= shared.max_buffered {
                            shared.buffered += data.len();
                            shared.chunks.push(data.clone());
                            this.cursor += 1;
                        } else {
                            shared.replay_lost = true;
                            shared.chunks = Vec::new();
                        }
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    shared.trailers = Some(trailers.clone());
                    shared.source_ended = true;
                    this.trailers_sent = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    /// Accurate end-of-stream matters: it lets hyper put END_STREAM on the
    /// last DATA frame instead of sending an extra empty one, and h2 servers
    /// police streams of small non-final DATA frames.
    fn is_end_stream(&self) -> bool {
        let shared = lock(&self.shared);
        if self.generation != shared.generation {
            return true;
        }
        if !shared.replay_lost && self.cursor < shared.chunks.len() {
            return false;
        }
        if shared.source_ended {
            shared.trailers.is_none() || self.trailers_sent
        } else {
            shared.source.is_end_stream()
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
