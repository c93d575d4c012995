//! Keeps one endpoint connected: connect, publish the request handle, watch
//! the connection, reconnect with exponential back-off and jitter. A GOAWAY
//! from the endpoint ends the connection's dispatch at once, so new calls go
//! elsewhere while calls in flight finish on it. A connection that ends
//! within [`STABLE_AFTER`] counts as a failed attempt, so an endpoint that
//! answers every connection with GOAWAY (or closes it at once) is redialled
//! with back-off, not once per call.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ConnState, Endpoint};
use crate::transport::client::{ConnectSettings, connect};
use crate::transport::driver::{Driver, Ended};
use crate::util::random_unit;

/// How long a connection must last for the back-off to start over.
const STABLE_AFTER: Duration = Duration::from_secs(1);

/// Runs until `cancel` fires, keeping `endpoint` connected.
pub async fn maintain(
    endpoint: Arc<Endpoint>,
    settings: ConnectSettings,
    cancel: CancellationToken,
) {
    let mut failures: u32 = 0;
    loop {
        endpoint.set_state(ConnState::Connecting);
        let connected = tokio::select! {
            r = connect(endpoint.addr, settings) => r,
            () = cancel.cancelled() => break,
        };
        match connected {
            Ok((sender, mut driver)) => {
                tracing::debug!(endpoint = %endpoint.addr, "connected");
                let since = Instant::now();
                endpoint.connected(sender);
                tokio::select! {
                    ended = poll_fn(|cx| driver.poll_ended(cx)) => {
                        endpoint.disconnected(ConnState::Connecting);
                        match ended {
                            Ended::GoingAway => {
                                tracing::info!(endpoint = %endpoint.addr, "endpoint closed the connection (GOAWAY); reconnecting");
                                // The calls in flight finish on it.
                                tokio::spawn(drain(endpoint.addr, driver));
                            }
                            Ended::Closed(Ok(())) => tracing::info!(endpoint = %endpoint.addr, "endpoint closed the connection; reconnecting"),
                            Ended::Closed(Err(e)) => tracing::warn!(endpoint = %endpoint.addr, error = %e, cause = ?e.h2(), "connection to endpoint failed; reconnecting"),
                        }
                        endpoint.subset.refresh_now.notify_one();
                    }
                    () = cancel.cancelled() => {
                        tokio::spawn(drain(endpoint.addr, driver));
                        break;
                    }
                }
                if since.elapsed() >= STABLE_AFTER {
                    failures = 0;
                    continue;
                }
                failures = failures.saturating_add(1);
                let delay = backoff(settings, failures);
                tracing::warn!(endpoint = %endpoint.addr, lasted = ?since.elapsed(), retry_in = ?delay, "connection to endpoint ended at once");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = cancel.cancelled() => break,
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                endpoint.disconnected(ConnState::Failed);
                endpoint.record_failure();
                endpoint.subset.refresh_now.notify_one();
                let delay = backoff(settings, failures);
                tracing::warn!(endpoint = %endpoint.addr, error = %e, retry_in = ?delay, "cannot connect to endpoint");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = cancel.cancelled() => break,
                }
            }
        }
    }
    // Removed: no new calls; calls in flight finish on the connection,
    // whose driver runs on until they are done.
    endpoint.disconnected(ConnState::Removed);
    endpoint.release_ejection();
}

/// Runs a connection that takes no new calls until the calls on it are
/// done: h2 closes it then.
async fn drain(addr: std::net::SocketAddr, driver: Driver) {
    if let Err(e) = driver.await {
        tracing::debug!(endpoint = %addr, error = %e, "connection closed while calls finished on it");
    }
}

/// `base * 2^(failures-1)`, capped, with full jitter over its upper half so
/// many proxies do not reconnect in lockstep.
fn backoff(settings: ConnectSettings, failures: u32) -> Duration {
    let exp = settings
        .backoff_base
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(settings.backoff_max);
    exp.mul_f64(0.5 + random_unit() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let s = ConnectSettings::default();
        let first = backoff(s, 1);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let later = backoff(s, 30);
        assert!(later >= Duration::from_millis(2500) && later <= Duration::from_secs(5));
    }
}
