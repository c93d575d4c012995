//! Paced calls for as long as asked, reported window by window: when each
//! backend got its first and its last call of the window, by the wall clock.
//! A measurement on one machine compares these times with the moments it saw
//! pods turn Ready or get deleted (the same clock), so it can tell how long a
//! new pod waited for its first call and how long a deleted one kept getting
//! new ones.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};

use crate::client::{ClientError, LoadOptions, connect, failure_message, one_call, parse_metadata};

/// How a timeline run is paced and how long it lasts.
#[derive(Debug, Clone)]
pub struct TimelineOptions {
    /// Calls started per second.
    pub rate: u32,
    /// Length of a reported window.
    pub window: Duration,
    /// The run ends after this long.
    pub duration: Duration,
}

/// Calls to one backend within a window. Times are when the call was sent
/// (Unix milliseconds): "the last new call" to a pod is the last one sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BackendWindow {
    pub calls: u64,
    pub first_sent_ms: u64,
    pub last_sent_ms: u64,
}

/// One window of a timeline run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TimelineWindow {
    /// Unix milliseconds at the window's end.
    pub at_ms: u64,
    pub ok: u64,
    pub failed: u64,
    /// Calls not started because `concurrency` calls were still in flight.
    pub skipped: u64,
    pub by_backend: BTreeMap<String, BackendWindow>,
    /// One entry per distinct failure (code and message).
    pub failure_messages: BTreeMap<String, u64>,
    /// The longest call that ended in the window, from sent to its outcome
    /// (milliseconds): a stall shows here before calls start to fail.
    pub max_latency_ms: u64,
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl TimelineWindow {
    fn record(&mut self, sent_ms: u64, ended_ms: u64, outcome: crate::client::CallOutcome) {
        self.max_latency_ms = self.max_latency_ms.max(ended_ms.saturating_sub(sent_ms));
        match outcome {
            Ok(mut backends) => {
                self.ok += 1;
                backends.dedup();
                for backend in backends {
                    let w = self.by_backend.entry(backend).or_default();
                    if w.calls == 0 || sent_ms < w.first_sent_ms {
                        w.first_sent_ms = sent_ms;
                    }
                    w.last_sent_ms = w.last_sent_ms.max(sent_ms);
                    w.calls += 1;
                }
            }
            Err(status) => {
                self.failed += 1;
                *self
                    .failure_messages
                    .entry(failure_message(&status))
                    .or_default() += 1;
            }
        }
    }
}

/// Sends calls at `timeline.rate` per second (at most `options.concurrency`
/// in flight) until `timeline.duration` has passed, and hands each window to
/// `emit`; a `false` from `emit` (its reader is gone) ends the run.
pub async fn run_timeline(
    options: LoadOptions,
    timeline: TimelineOptions,
    mut emit: impl FnMut(&TimelineWindow) -> bool,
) -> Result<(), ClientError> {
    if options.concurrency == 0 || options.connections == 0 {
        return Err(ClientError::ZeroConcurrency);
    }
    if timeline.rate == 0 || timeline.window.is_zero() {
        return Err(ClientError::ZeroRate);
    }
    let metadata = parse_metadata(&options.metadata)?;
    let mut clients = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        clients.push(connect(&options.target).await?);
    }
    let options = Arc::new(options);
    let in_flight = Arc::new(Semaphore::new(options.concurrency));
    let (outcomes, mut outcome_receiver) = mpsc::unbounded_channel();
    let mut pace = tokio::time::interval(Duration::from_secs(1) / timeline.rate);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut windows = tokio::time::interval(timeline.window);
    windows.tick().await;
    let ends = Instant::now() + timeline.duration;
    let mut window = TimelineWindow::default();
    let mut next_client = 0;
    loop {
        tokio::select! {
            _ = pace.tick() => {
                let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                    window.skipped += 1;
                    continue;
                };
                let client = clients[next_client % clients.len()].clone();
                next_client += 1;
                let (options, metadata, outcomes) =
                    (Arc::clone(&options), Arc::clone(&metadata), outcomes.clone());
                tokio::spawn(async move {
                    let sent_ms = unix_ms(SystemTime::now());
                    let outcome = one_call(client, &options, &metadata).await;
                    let ended_ms = unix_ms(SystemTime::now());
                    drop(permit);
                    // The receiver outlives every call task but the last few.
                    let _ = outcomes.send((sent_ms, ended_ms, outcome));
                });
            }
            Some((sent_ms, ended_ms, outcome)) = outcome_receiver.recv() => {
                window.record(sent_ms, ended_ms, outcome);
            }
            _ = windows.tick() => {
                window.at_ms = unix_ms(SystemTime::now());
                if !emit(&window) || Instant::now() >= ends {
                    return Ok(());
                }
                window = TimelineWindow::default();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;

    #[test]
    fn a_window_keeps_each_backends_first_and_last_send_time() {
        let mut w = TimelineWindow::default();
        w.record(200, 210, Ok(vec!["a".into()]));
        w.record(100, 105, Ok(vec!["a".into()]));
        w.record(300, 301, Ok(vec!["a".into(), "a".into()]));
        w.record(150, 190, Ok(vec!["b".into()]));
        w.record(160, 230, Err(Status::unavailable("gone")));
        assert_eq!(
            w.by_backend["a"],
            BackendWindow {
                calls: 3,
                first_sent_ms: 100,
                last_sent_ms: 300
            }
        );
        assert_eq!(w.by_backend["b"].calls, 1);
        assert_eq!((w.ok, w.failed), (4, 1));
        assert_eq!(w.failure_messages["UNAVAILABLE: gone"], 1);
        assert_eq!(w.max_latency_ms, 70, "the failed call took longest");
    }
}
