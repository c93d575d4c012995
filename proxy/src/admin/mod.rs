//! The admin HTTP server: `/live`, `/ready`, `/metrics`, `/config`,
//! `/endpoints`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::endpoint::ConnState;
use crate::metrics::{BalancingLabels, EndpointStateLabels};

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(listener: TcpListener, state: Arc<AppState>, stop: CancellationToken) {
    let app = router(state);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "admin server failed");
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/config", get(config))
        .route("/endpoints", get(endpoints))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
}

/// Ready once a config is loaded and its listeners are bound, whatever the
/// endpoints: the application must be able to start before its backends.
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else if state.loaded.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no valid config loaded yet\n",
        )
            .into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    refresh_gauges(&state);
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}\n"),
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Gauges derived from endpoint state are computed at scrape time: ejections
/// expire without an event, and the call path stays free of gauge updates.
fn refresh_gauges(state: &AppState) {
    let m = &state.metrics;
    m.endpoints.clear();
    m.calls_in_flight.clear();
    for (_, b) in state.balancings() {
        let mut in_flight = 0i64;
        for s in &b.subsets {
            let mut counts = [0i64; 5];
            for e in &s.set.load().endpoints {
                in_flight += i64::from(e.in_flight());
                let slot = match e.state() {
                    ConnState::Ready if e.is_ejected() => 3,
                    ConnState::Ready if !e.is_healthy() => 4,
                    ConnState::Ready => 1,
                    ConnState::Connecting => 0,
                    ConnState::Failed | ConnState::Removed => 2,
                };
                counts[slot] += 1;
            }
            for (slot, name) in ["connecting", "ready", "failed", "ejected", "unhealthy"]
                .iter()
                .enumerate()
            {
                m.endpoints
                    .get_or_create(&EndpointStateLabels {
                        balancing: b.name().to_owned(),
                        subset: s.shared.name.to_string(),
                        state: (*name).to_owned(),
                    })
                    .set(counts[slot]);
            }
        }
        m.calls_in_flight
            .get_or_create(&BalancingLabels {
                balancing: b.name().to_owned(),
            })
            .set(in_flight);
    }
}

async fn config(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(state.config.load_full().as_ref().clone()).into_response()
}

#[derive(Serialize)]
struct EndpointsView {
    balancings: Vec<BalancingView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BalancingView {
    name: String,
    listen: String,
    policy: String,
    queued_calls: u32,
    subsets: Vec<SubsetView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SubsetView {
    name: String,
    weight: u32,
    discovered: bool,
    endpoints: Vec<EndpointView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EndpointView {
    address: String,
    state: ConnState,
    available: bool,
    ejected: bool,
    healthy: bool,
    in_flight: u32,
    latency_ewma_ms: f64,
}

async fn endpoints(State(state): State<Arc<AppState>>) -> Response {
    let balancings = state
        .balancings()
        .into_iter()
        .map(|(addr, b)| BalancingView {
            name: b.name().to_owned(),
            listen: addr.to_string(),
            policy: b.config.policy.kind.to_string(),
            queued_calls: b.pending(),
            subsets: b
                .subsets
                .iter()
                .map(|s| SubsetView {
                    name: s.shared.name.to_string(),
                    weight: s.weight,
                    discovered: s.shared.discovered.load(Ordering::Acquire),
                    endpoints: s
                        .set
                        .load()
                        .endpoints
                        .iter()
                        .map(|e| EndpointView {
                            address: e.addr.to_string(),
                            state: e.state(),
                            available: e.is_available(),
                            ejected: e.is_ejected(),
                            healthy: e.is_healthy(),
                            in_flight: e.in_flight(),
                            latency_ewma_ms: e.rtt_estimate_nanos() / 1e6,
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    axum::Json(EndpointsView { balancings }).into_response()
}
