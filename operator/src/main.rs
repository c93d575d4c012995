//! `grpc-balancer-operator`: the GrpcBalancing controller and the injection
//! webhook in one binary. Every replica serves the webhook; the Lease holder
//! also runs the controller.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use grpc_balancer_operator::metrics::ApiRequestCounter;
use grpc_balancer_operator::{OperatorArgs, client_with_counter, telemetry};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "grpc-balancer-operator", version, about)]
struct Cli {
    #[command(flatten)]
    operator: OperatorArgs,
    #[command(flatten)]
    webhook: grpc_balancer_webhook::Args,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init();
    let config = match &cli.operator.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("finding the Kubernetes API")?,
    };
    let counter = ApiRequestCounter::default();
    let client = client_with_counter(config, &counter)?;
    let webhook_metrics = Arc::new(grpc_balancer_webhook::WebhookMetrics::default());
    let settings = cli
        .operator
        .settings(counter, &webhook_metrics, cli.webhook.proxy_admin_port);

    let stop = CancellationToken::new();
    tokio::spawn(signal_stop(stop.clone()));
    grpc_balancer_operator::with_webhook::run(client, settings, cli.webhook, webhook_metrics, stop)
        .await
}

/// Cancels `stop` on SIGTERM (Kubernetes) or SIGINT (a terminal).
async fn signal_stop(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
    stop.cancel();
}
