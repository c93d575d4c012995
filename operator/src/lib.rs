//! The grpc-balancer operator: reconciles `GrpcBalancing` resources into
//! headless Services, the namespace's proxy ConfigMap and status.
//!
//! [`run`] is the whole operator minus the webhook: leader election, the
//! controllers (on the leader only), metrics and health probes. The binary
//! and the integration tests both drive it.

pub mod config_map;
pub mod controller;
pub mod dirty;
pub mod error;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod render;
pub mod settings;
pub mod telemetry;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use error::{Error, Result};
pub use settings::{OperatorArgs, Settings};

use crate::leader::LeaderElector;
use crate::metrics::{ApiRequestCounter, CountApiRequests};

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
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    });
    let metrics = settings.metrics.clone();
    let (leading_tx, mut leading) = watch::channel(false);
    let (reachable_tx, reachable) = watch::channel(false);

    let server = match settings.metrics_listen {
        Some(addr) => {
            let (local, server) = http::bind(addr, metrics.clone(), reachable, stop.clone())
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for metrics: {e}"))?;
            tracing::info!(%local, "serving /metrics, /healthz and /readyz");
            Some(tokio::spawn(server))
        }
        None => None,
    };

    let elector = tokio::spawn(
        LeaderElector::new(client.clone(), settings.leader.clone()).run(
            leading_tx,
            reachable_tx,
            stop.clone(),
        ),
    );

    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            changed = leading.wait_for(|l| *l) => if changed.is_err() { break },
        }
        metrics.leader.set(1);
        let term = stop.child_token();
        let controllers = tokio::spawn(controller::run(
            client.clone(),
            settings.clone(),
            term.clone(),
        ));
        tokio::select! {
            () = stop.cancelled() => {}
            _ = leading.wait_for(|l| !*l) => tracing::warn!("leadership lost; stopping the controllers"),
        }
        term.cancel();
        if let Err(e) = controllers.await {
            tracing::error!(error = %e, "the controllers ended abnormally");
        }
        metrics.leader.set(0);
    }

    stop.cancel();
    if let Err(e) = elector.await {
        tracing::error!(error = %e, "leader election ended abnormally");
    }
    LeaderElector::release(client, &settings.leader).await;
    if let Some(server) = server {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics server failed"),
            Err(e) => tracing::warn!(error = %e, "metrics server ended abnormally"),
        }
    }
    Ok(())
}
