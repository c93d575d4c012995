//! The operator and its admission webhook as one process: both run until
//! the stop, and whichever ends first ends the other. A webhook that fails
//! (its port taken, no certificate, a watch that died) must not leave a
//! process behind that looks healthy but refuses every admission call: the
//! error is returned, so the binary exits non-zero and the kubelet restarts
//! it, visibly.

use std::sync::Arc;

use anyhow::Context as _;
use grpc_balancer_webhook::{Serving, WebhookMetrics};
use tokio_util::sync::CancellationToken;

use crate::settings::Settings;

/// Runs the operator ([`crate::runtime::run`]) and the webhook until `stop` is
/// cancelled or either of them ends; then stops the other and returns the
/// first error.
pub async fn run(
    client: kube::Client,
    mut settings: Settings,
    webhook_args: grpc_balancer_webhook::Args,
    webhook_metrics: Arc<WebhookMetrics>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let readiness = Serving::default();
    settings.webhook = Some(readiness.clone());
    let mut webhook = tokio::spawn(grpc_balancer_webhook::run(
        client.clone(),
        webhook_args,
        webhook_metrics,
        readiness,
        stop.clone().cancelled_owned(),
    ));
    let operator = crate::runtime::run(client, settings, stop.clone().cancelled_owned());
    let mut operator = std::pin::pin!(operator);
    tokio::select! {
        result = &mut operator => {
            // Whatever ended the operator ends the webhook too.
            stop.cancel();
            let webhook = webhook.await.context("the webhook task")?;
            result.and(webhook)
        }
        joined = &mut webhook => {
            let failure = match joined {
                Ok(Ok(())) if stop.is_cancelled() => None,
                Ok(Ok(())) => Some(anyhow::anyhow!("the webhook stopped serving")),
                Ok(Err(e)) => Some(e.context("the webhook failed")),
                Err(e) => Some(anyhow::anyhow!("the webhook task failed: {e}")),
            };
            if let Some(e) = &failure {
                tracing::error!(error = format!("{e:#}"), "the webhook ended; stopping the operator");
            }
            stop.cancel();
            let result = operator.await;
            match failure {
                Some(e) => Err(e),
                None => result,
            }
        }
    }
}
