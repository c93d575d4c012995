//! The grpc-balancer operator: reconciles `GrpcBalancing` resources into
//! headless Services, the namespace's proxy ConfigMap and status.
//!
//! [`run`] is the whole operator minus the webhook: leader election, the
//! controllers (on the leader only), metrics and health probes. The binary
//! and the integration tests both drive it.

pub mod config_map;
pub mod controller;
pub mod decode;
pub mod dirty;
pub mod discovery;
pub mod error;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod recent_writes;
pub mod render;
pub mod settings;
pub mod telemetry;
pub mod trim;
pub mod until_stopped;
pub mod with_webhook;

#[cfg(test)]
mod controller_tests;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use error::{Error, Result};
pub use settings::{OperatorArgs, Settings};

use crate::leader::LeaderElector;
use crate::metrics::{ApiRequestCounter, CountApiRequests};

/// How long reconciles in flight may run on after the controllers are told
/// to stop.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A client whose requests are counted by `counter`.
pub fn client_with_counter(
    config: kube::Config,
    counter: &ApiRequestCounter,
) -> Result<kube::Client, kube::Error> {
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&CountApiRequests(counter.clone()))
        .build())
}

/// Runs the operator until `shutdown` resolves: every replica takes part in
/// the election and serves the probes; the leader also runs the
/// controllers. On shutdown the controllers finish their reconciles, then a
/// held Lease is released so a standby takes over at once.
pub async fn run(
    client: kube::Client,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Everything runs inside this one future (joined, never spawned), so
    // dropping it stops all of it: that is what a crash looks like to the
    // other replicas, and what the hand-over test relies on.
    let stop = CancellationToken::new();
    let metrics = settings.metrics.clone();
    let (leading_tx, mut leading) = watch::channel(false);
    let (reachable_tx, reachable) = watch::channel(false);

    let server = match settings.metrics_listen {
        Some(addr) => {
            let (local, server) = http::bind(
                addr,
                metrics.clone(),
                reachable,
                settings.webhook.clone(),
                stop.clone(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for metrics: {e}"))?;
            tracing::info!(%local, "serving /metrics, /healthz and /readyz");
            Some(server)
        }
        None => None,
    };
    let server = async move {
        if let Some(server) = server
            && let Err(e) = server.await
        {
            tracing::warn!(error = %e, "metrics server failed");
        }
    };

    let shutdown_watch = {
        let stop = stop.clone();
        async move {
            tokio::select! {
                () = shutdown => stop.cancel(),
                () = stop.cancelled() => {}
            }
        }
    };

    let elector = LeaderElector::new(client.clone(), settings.leader.clone()).run(
        leading_tx,
        reachable_tx,
        stop.clone(),
    );

    let terms = async {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                changed = leading.wait_for(|l| *l) => if changed.is_err() { break },
            }
            metrics.leader.set(1);
            let term = stop.child_token();
            let controllers = controller::run(client.clone(), settings.clone(), term.clone());
            let end_of_term = async {
                // Biased: on shutdown the elector also reports "not leading";
                // that is not a lost leadership.
                tokio::select! {
                    biased;
                    () = stop.cancelled() => {}
                    _ = leading.wait_for(|l| !*l) => tracing::warn!("leadership lost; stopping the controllers"),
                }
                term.cancel();
            };
            let mut controllers = std::pin::pin!(controllers);
            tokio::select! {
                () = &mut controllers => {}
                () = end_of_term => {
                    // The controllers stop by themselves once their reconciles
                    // in flight are done. The grace period is a last resort
                    // against a reconcile stuck in an API call: it must not
                    // keep the process (and the Lease) hanging.
                    if tokio::time::timeout(SHUTDOWN_GRACE, &mut controllers).await.is_err() {
                        metrics.forced_stops.inc();
                        tracing::error!(grace = ?SHUTDOWN_GRACE, "controllers did not stop within the grace period; dropping them");
                    }
                }
            }
            metrics.leader.set(0);
        }
        stop.cancel();
    };

    tokio::join!(shutdown_watch, elector, terms, server);
    LeaderElector::release(client, &settings.leader).await;
    Ok(())
}
