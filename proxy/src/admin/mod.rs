//! The admin HTTP server: `/live`, `/ready`, `/metrics`, `/config`,
//! `/endpoints`, and `POST /shutdown`. It reads the running proxy through
//! `AdminView` only: readiness, the metrics, the current config and
//! balancings; and it can ask it to shut down.
//!
//! The probes and `/metrics` answer every peer: the kubelet probes the pod
//! IP and Prometheus scrapes it. `/config` and `/endpoints` show the
//! balancings and backend addresses of the namespace, so by default they
//! answer loopback peers only (`kubectl port-forward`, `kubectl exec`, the
//! app's own container) and 403 anyone else, as linkerd2-proxy does for its
//! sensitive admin endpoints. One port keeps the pod spec and the probes as
//! they are; the peer address of an accepted TCP connection cannot be
//! forged off-host without a completed handshake, and IPv4-mapped peers of
//! the dual-stack socket are unmapped before the check.
//!
//! `POST /shutdown` drains and stops the proxy as SIGTERM does. It is for an
//! app whose proxy is a plain container (the legacy sidecar mode), which
//! nothing else stops when the app is done: a Job's pod would run forever
//! (Istio's `/quitquitquit`, Linkerd's `/shutdown`). It answers loopback
//! peers only, whatever `--admin-debug` says: the app's own container may
//! stop its proxy, another pod may not.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use grpc_balancer_crds::config::ProxyConfig;
use prometheus_client::registry::Registry;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use grpc_balancer_crds::config::DiscoverySource;

use crate::balancer::Balancing;
use crate::discovery::push::{Freshness, PushState, Source};
use crate::endpoint::ConnState;
use crate::metrics::{
    BalancingLabels, EndpointStateLabel, EndpointStateLabels, LabelValue as _, Metrics,
};

/// Who may read `/config` and `/endpoints`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DebugAccess {
    /// Loopback peers only (the default).
    #[default]
    Loopback,
    /// Every peer that reaches the admin port.
    Any,
}

/// What the admin server may read of the running proxy. The app implements
/// it; the admin server sees nothing else of the app.
pub(crate) trait AdminView: Send + Sync + 'static {
    fn readiness(&self) -> Readiness;
    fn metrics(&self) -> &Metrics;
    fn registry(&self) -> &Registry;
    /// The config last applied.
    fn config(&self) -> Arc<ProxyConfig>;
    /// The current runtime of every balancing, with its listener address.
    fn balancings(&self) -> Vec<(SocketAddr, Arc<Balancing>)>;
    /// Drain and stop, as on SIGTERM.
    fn request_shutdown(&self);
    /// The push discovery stream's view, when one is configured.
    fn push(&self) -> Option<&PushState>;
    /// Where the config in force came from: `push`, `file` or `flags`.
    fn config_source(&self) -> &'static str;
}

/// Whether the proxy is ready, and if not, why.
pub(crate) enum Readiness {
    Ready,
    Draining,
    NoConfigLoaded,
    /// Balancings whose listener is not bound, with the last error.
    Unbound(Vec<(String, String)>),
}

/// What the routes share: the view, and who may read the debug endpoints.
#[derive(Clone)]
struct AdminState {
    view: Arc<dyn AdminView>,
    debug: DebugAccess,
}

/// Binds the admin server; `[::]:PORT` listens on both families (the
/// kubelet probes the pod IP, IPv6 on IPv6-only and IPv6-primary clusters),
/// falling back to `0.0.0.0:PORT` where the kernel has no IPv6.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    crate::net::bind(addr)
}

pub(crate) async fn serve(
    listener: TcpListener,
    view: Arc<dyn AdminView>,
    debug: DebugAccess,
    stop: CancellationToken,
) {
    let app = router(view, debug).into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "admin server failed");
    }
}

/// The routes. Serve them with `ConnectInfo<SocketAddr>` (as [`serve`]
/// does): without a peer address the debug endpoints answer no one.
pub(crate) fn router(view: Arc<dyn AdminView>, debug: DebugAccess) -> Router {
    let state = AdminState { view, debug };
    let debug = Router::new()
        .route("/config", get(config))
        .route("/endpoints", get(endpoints))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            debug_access,
        ));
    Router::new()
        .route("/shutdown", post(shutdown))
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(debug)
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
}

/// Whether `peer` may read the debug endpoints under `access`.
pub fn debug_allowed(access: DebugAccess, peer: Option<SocketAddr>) -> bool {
    match access {
        DebugAccess::Any => true,
        DebugAccess::Loopback => peer.is_some_and(|p| crate::net::is_loopback_peer(p.ip())),
    }
}

/// Loopback peers only, whatever the debug access: see the module comment.
async fn shutdown(State(state): State<AdminState>, req: Request) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    if !debug_allowed(DebugAccess::Loopback, peer) {
        return (
            StatusCode::FORBIDDEN,
            "/shutdown answers loopback peers only (the pod's own containers)\n",
        )
            .into_response();
    }
    tracing::info!("shutdown requested on the admin port");
    state.view.request_shutdown();
    (StatusCode::OK, "shutting down\n").into_response()
}

async fn debug_access(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    if debug_allowed(state.debug, peer) {
        next.run(req).await
    } else {
        (
            StatusCode::FORBIDDEN,
            "this endpoint answers loopback peers only (kubectl port-forward, or the proxy's --admin-debug any)\n",
        )
            .into_response()
    }
}

/// Ready once a config is loaded and every listener of it is bound, whatever
/// the endpoints: the application must be able to start before its
/// backends. A listener that cannot bind (its port taken) keeps the proxy
/// unready, and the body says which and why, until a retry binds it.
async fn ready(State(state): State<AdminState>) -> Response {
    let unbound = match state.view.readiness() {
        Readiness::Ready => return (StatusCode::OK, "ready\n").into_response(),
        Readiness::Draining => {
            return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
        }
        Readiness::NoConfigLoaded => {
            return (StatusCode::SERVICE_UNAVAILABLE, "no config loaded yet\n").into_response();
        }
        Readiness::Unbound(unbound) => unbound,
    };
    let mut body = String::from("listeners not bound (retrying):\n");
    for (name, error) in unbound {
        body.push_str(&format!("  balancing {name}: {error}\n"));
    }
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let state = state.view.as_ref();
    refresh_gauges(state);
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, state.registry()) {
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
fn refresh_gauges(state: &dyn AdminView) {
    let m = state.metrics();
    // The admin server runs on the proxy's one runtime, so the current
    // handle is the one whose tasks are counted.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        m.runtime_tasks
            .set(i64::try_from(runtime.metrics().num_alive_tasks()).unwrap_or(i64::MAX));
    }
    m.endpoints.clear();
    m.calls_in_flight.clear();
    for (_, b) in state.balancings() {
        let mut in_flight = 0i64;
        for s in &b.subsets {
            let mut counts = [0i64; EndpointStateLabel::ALL.len()];
            for e in &s.set.load().endpoints {
                in_flight += i64::from(e.in_flight());
                let state = match e.state() {
                    ConnState::Ready if e.is_ejected() => EndpointStateLabel::Ejected,
                    ConnState::Ready if !e.is_healthy() => EndpointStateLabel::Unhealthy,
                    ConnState::Ready => EndpointStateLabel::Ready,
                    ConnState::Connecting => EndpointStateLabel::Connecting,
                    ConnState::Failed | ConnState::Removed => EndpointStateLabel::Failed,
                };
                counts[state as usize] += 1;
            }
            for (state, count) in EndpointStateLabel::ALL.iter().zip(counts) {
                m.endpoints
                    .get_or_create(&EndpointStateLabels {
                        balancing: b.name().to_owned(),
                        subset: s.shared.name.to_string(),
                        state: state.as_str().to_owned(),
                    })
                    .set(count);
            }
        }
        m.calls_in_flight
            .get_or_create(&BalancingLabels {
                balancing: b.name().to_owned(),
            })
            .set(in_flight);
    }
}

async fn config(State(state): State<AdminState>) -> Response {
    axum::Json(state.view.config().as_ref().clone()).into_response()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EndpointsView {
    /// `push`, `file` or `flags`.
    config_source: &'static str,
    /// The push stream (absent: not configured).
    push: Option<Freshness>,
    balancings: Vec<BalancingView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BalancingView {
    name: String,
    listen: String,
    policy: String,
    queued_calls: u32,
    /// The pushed namespace version this balancing's view is at, and its
    /// age in seconds (absent: not from the push stream).
    version: Option<u64>,
    age_seconds: Option<f64>,
    subsets: Vec<SubsetView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SubsetView {
    name: String,
    weight: u32,
    discovered: bool,
    /// Where its endpoints come from now: `push`, `dns` or `static`.
    source: &'static str,
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
    /// Calls started on it since it was added, cumulative.
    calls_started: u64,
    latency_ewma_ms: f64,
}

async fn endpoints(State(state): State<AdminState>) -> Response {
    let push = state.view.push();
    let freshness = push.map(PushState::freshness);
    let pushed = freshness.as_ref().filter(|f| f.connected);
    let source_of = |b: &Balancing, subset: &str| -> &'static str {
        let discovery = b
            .config
            .subsets
            .iter()
            .find(|s| s.name == subset)
            .and_then(|s| s.discovery.source());
        match discovery {
            Some(DiscoverySource::Static(_)) => Source::Static.as_str(),
            Some(DiscoverySource::Dns(d)) => push
                .and_then(|p| p.source_of(&d.name))
                .unwrap_or(Source::Dns)
                .as_str(),
            None => "none",
        }
    };
    let balancings = state
        .view
        .balancings()
        .into_iter()
        .map(|(addr, b)| BalancingView {
            name: b.name().to_owned(),
            listen: addr.to_string(),
            policy: b.config.policy.kind.to_string(),
            queued_calls: b.pending(),
            version: pushed.map(|f| f.version),
            age_seconds: pushed.and_then(|f| f.age_seconds),
            subsets: b
                .subsets
                .iter()
                .map(|s| SubsetView {
                    name: s.shared.name.to_string(),
                    weight: s.weight,
                    discovered: s.shared.discovered.load(Ordering::Acquire),
                    source: source_of(&b, &s.shared.name),
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
                            calls_started: e.calls_started(),
                            latency_ewma_ms: e.rtt_estimate_nanos() / 1e6,
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    axum::Json(EndpointsView {
        config_source: state.view.config_source(),
        push: freshness,
        balancings,
    })
    .into_response()
}
