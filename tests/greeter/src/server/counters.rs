//! Calls a backend received, per method, and how they ended.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Live counters, shared by the service and the [`super::RunningBackend`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) say_hello: AtomicU64,
    pub(crate) say_hello_stream: AtomicU64,
    pub(crate) collect_hellos: AtomicU64,
    pub(crate) chat: AtomicU64,
    pub(crate) answered_ok: AtomicU64,
    pub(crate) answered_error: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CallCounts {
    pub say_hello: u64,
    pub say_hello_stream: u64,
    pub collect_hellos: u64,
    pub chat: u64,
    /// Calls that ended with status OK.
    pub answered_ok: u64,
    /// Calls the backend ended with an error status (injected or invalid input).
    pub answered_error: u64,
}

impl CallCounts {
    /// Calls received, all methods together.
    pub fn total(&self) -> u64 {
        self.say_hello + self.say_hello_stream + self.collect_hellos + self.chat
    }
}

impl Counters {
    pub(crate) fn snapshot(&self) -> CallCounts {
        CallCounts {
            say_hello: self.say_hello.load(Ordering::Relaxed),
            say_hello_stream: self.say_hello_stream.load(Ordering::Relaxed),
            collect_hellos: self.collect_hellos.load(Ordering::Relaxed),
            chat: self.chat.load(Ordering::Relaxed),
            answered_ok: self.answered_ok.load(Ordering::Relaxed),
            answered_error: self.answered_error.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn reset(&self) {
        for counter in [
            &self.say_hello,
            &self.say_hello_stream,
            &self.collect_hellos,
            &self.chat,
            &self.answered_ok,
            &self.answered_error,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    pub(crate) fn count<T>(&self, result: &Result<T, tonic::Status>) {
        let counter = if result.is_ok() {
            &self.answered_ok
        } else {
            &self.answered_error
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
