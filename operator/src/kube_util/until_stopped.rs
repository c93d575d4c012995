//! Ending a watch stream on shutdown by dropping it, and polling one that
//! nobody else consumes until then.
//!
//! A reflector's `Writer` lives inside its watch stream, and
//! `Store::wait_until_ready` resolves only when the first listing is in or
//! the writer is dropped. `StreamExt::take_until` (and with it the
//! controller's `graceful_shutdown_on`) stops polling a stream but keeps it,
//! writer included: a stop that arrives while the first listing is still
//! running leaves the controller's runner waiting for readiness forever.
//! Dropping the stream when the stop comes lets that wait end.

use futures::{Stream, StreamExt as _};
use tokio_util::sync::CancellationToken;

/// `stream` until `stop`; then it ends, and the stream is dropped at once.
pub fn until_stopped<S>(
    stream: S,
    stop: CancellationToken,
) -> impl Stream<Item = S::Item> + Send + 'static
where
    S: Stream + Send + 'static,
    S::Item: Send,
{
    futures::stream::unfold(Some((Box::pin(stream), stop)), |state| async move {
        let (mut stream, stop) = state?;
        tokio::select! {
            biased;
            () = stop.cancelled() => None,
            item = stream.next() => item.map(|item| (item, Some((stream, stop)))),
        }
    })
}

/// Polls a watch stream (so its store stays current) until `stop`.
pub async fn drain_until<S: Stream + Send>(stream: S, stop: CancellationToken) {
    let mut stream = std::pin::pin!(stream);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            item = stream.next() => if item.is_none() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    /// Flags its own drop.
    struct DropFlag(Arc<AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn the_stream_ends_and_is_dropped_when_stopped() {
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = DropFlag(dropped.clone());
        // A stream that yields once and then never again, owning the flag
        // as a reflector stream owns its writer.
        let inner = futures::stream::once(async { 1 })
            .chain(futures::stream::pending())
            .map(move |n| {
                let _owned = &flag;
                n
            });
        let stop = CancellationToken::new();
        let mut stream = std::pin::pin!(until_stopped(inner, stop.clone()));
        assert_eq!(stream.next().await, Some(1));
        stop.cancel();
        let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("the stream ends once stopped");
        assert_eq!(end, None);
        assert!(
            dropped.load(Ordering::SeqCst),
            "the inner stream is dropped"
        );
    }
}
