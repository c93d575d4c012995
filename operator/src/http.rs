//! `/metrics`, `/healthz` and `/readyz`.
//!
//! `/healthz` answers while the process serves requests. `/readyz` turns
//! ready once the Kubernetes API has been reached (the first Lease read) and
//! the webhook answers (its TLS listener accepts with a certificate loaded):
//! the webhook Service sends admission requests only to ready replicas.
//! Every replica serves the webhook, so readiness does not wait for
//! leadership.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use grpc_balancer_webhook::Serving;

use crate::metrics::Metrics;

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    reachable: watch::Receiver<bool>,
    webhook: Option<Serving>,
}

/// Binds `addr` (so a taken port fails at start-up) and returns the server
/// future, which ends on `stop`.
pub async fn bind(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    reachable: watch::Receiver<bool>,
    webhook: Option<Serving>,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready_handler))
        .with_state(AppState {
            metrics,
            reachable,
            webhook,
        });
    let server = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    };
    Ok((local, server))
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn ready_handler(State(state): State<AppState>) -> impl IntoResponse {
    if !*state.reachable.borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the Kubernetes API has not been reached yet",
        );
    }
    if state.webhook.as_ref().is_some_and(|w| !w.is_serving()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the admission webhook does not answer yet",
        );
    }
    (StatusCode::OK, "ok")
}
