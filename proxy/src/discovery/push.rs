//! Push discovery: a stream from the operator (`grpcbalancer.discovery.v1`)
//! carrying this namespace's proxy config and the endpoints of every
//! subset's headless Service.
//!
//! Order of trust: the stream while it is connected; DNS (and the
//! ConfigMap file, see the app) while it is not. Losing the stream never
//! empties a subset: its endpoints stay as pushed until DNS answers, and
//! reconnecting (back-off with jitter) brings the stream's view back. An
//! endpoint that is terminating or not ready is left out of the set at
//! once: it gets no new calls, and its calls in flight finish (a removed
//! endpoint drains).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use grpc_balancer_crds::config::DiscoverySource;
use grpc_balancer_discovery_api::AUTHORIZATION;
use grpc_balancer_discovery_api::channel::{client_config, tls_channel};
use grpc_balancer_discovery_api::v1::discovery_client::DiscoveryClient;
use grpc_balancer_discovery_api::v1::{Endpoint, WatchRequest, WatchResponse};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{Discover, DiscoveryError, Target, Update, UpdateStream};
use crate::metrics::{LabelValue as _, PushMetrics, SourceLabels, SubsetSource};

/// Where the proxy's push stream comes from.
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// `host:port` of the operator's discovery Service.
    pub address: String,
    /// The name on the server's certificate.
    pub server_name: String,
    /// The CA to trust.
    pub ca: CaSource,
    /// The projected ServiceAccount token (re-read on every connect: the
    /// kubelet refreshes it).
    pub token_file: PathBuf,
    /// This pod's namespace and name.
    pub namespace: String,
    pub pod_name: String,
}

/// Where the CA bundle comes from.
#[derive(Debug, Clone)]
pub enum CaSource {
    /// PEM text (the webhook injects it into the pod spec, as Linkerd does
    /// its trust anchors).
    Pem(String),
    /// A PEM file, re-read on every connect.
    File(PathBuf),
}

/// Back-off between connection attempts: doubling from the first to the
/// last, each wait drawn between half and all of it (jitter, so that a
/// thousand proxies cut off together do not come back together).
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long connecting and receiving the snapshot may take.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(15);
/// After a stream that worked ends (its token is renewed, an operator
/// replica goes away), a new one gets this long to deliver its snapshot
/// before subsets fall back to DNS: routine ends do not flap to DNS and back.
const RECONNECT_GRACE: Duration = Duration::from_secs(2);
/// Largest message accepted (a namespace's config and endpoints).
pub(crate) const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Longest service name accepted (a DNS name).
const MAX_NAME_LEN: usize = 253;

/// Which source a subset's endpoints come from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Push,
    Dns,
    Static,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Push => "push",
            Source::Dns => "dns",
            Source::Static => "static",
        }
    }
}

/// What the proxy knows from the stream, shared by the client task, the
/// subsets' discovery streams, the app (config) and the admin server.
pub struct PushState {
    inner: Mutex<Inner>,
    /// Bumped on every change of connection or endpoints: subset streams
    /// wake up and look again.
    changed: watch::Sender<u64>,
    /// The config document last pushed ("" = no balancing).
    config: watch::Sender<Option<String>>,
    metrics: PushMetrics,
}

#[derive(Default)]
struct Inner {
    connected: bool,
    epoch: String,
    version: u64,
    /// When the last message arrived, and when the server had seen it.
    received_at: Option<Instant>,
    observed_at_unix_ms: i64,
    reconnects: u64,
    /// A stream that worked ended and the next one has not delivered yet
    /// (within the grace, subsets stay on what was pushed).
    replacing: bool,
    last_error: Option<String>,
    sets: HashMap<String, Vec<Endpoint>>,
    /// Active source of each subset stream (by stream id: a reload runs
    /// old and new subsets of one name side by side for a moment).
    sources: HashMap<u64, (String, Source)>,
    next_stream: u64,
}

/// Freshness of the pushed view, as `/endpoints` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Freshness {
    pub connected: bool,
    pub epoch: String,
    pub version: u64,
    /// Seconds since the last message (absent: none yet).
    pub age_seconds: Option<f64>,
    /// Seconds from the server seeing the last change to now.
    pub staleness_seconds: Option<f64>,
    pub reconnects: u64,
    pub last_error: Option<String>,
}

impl PushState {
    pub fn new(metrics: PushMetrics) -> Self {
        PushState {
            inner: Mutex::new(Inner::default()),
            changed: watch::Sender::new(0),
            config: watch::Sender::new(None),
            metrics,
        }
    }
}

/// A message the proxy refuses (the stream is then dropped and opened again
/// for a fresh snapshot).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("a change before any snapshot")]
    NoSnapshot,
    #[error("a change of epoch {got:?} on a stream of epoch {expected:?}")]
    Epoch { expected: String, got: String },
    #[error("version {got} after {current}: a change was lost")]
    Gap { current: u64, got: u64 },
    #[error("service name of {0} bytes")]
    ServiceName(usize),
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl PushState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn is_connected(&self) -> bool {
        self.lock().connected
    }

    /// Follows the pushed config document.
    pub fn config(&self) -> watch::Receiver<Option<String>> {
        self.config.subscribe()
    }

    pub fn freshness(&self) -> Freshness {
        let inner = self.lock();
        let now_ms = unix_ms(SystemTime::now());
        Freshness {
            connected: inner.connected,
            epoch: inner.epoch.clone(),
            version: inner.version,
            age_seconds: inner.received_at.map(|t| t.elapsed().as_secs_f64()),
            staleness_seconds: inner
                .received_at
                .filter(|_| inner.observed_at_unix_ms > 0)
                .map(|_| (now_ms - inner.observed_at_unix_ms).max(0) as f64 / 1000.0),
            reconnects: inner.reconnects,
            last_error: inner.last_error.clone(),
        }
    }

    /// The source a subset resolving `name` uses now.
    pub fn source_of(&self, name: &str) -> Option<Source> {
        let name = normalize(name);
        let inner = self.lock();
        inner
            .sources
            .values()
            .filter(|(n, _)| *n == name)
            .map(|(_, s)| *s)
            .max_by_key(|s| *s == Source::Push)
    }

    fn stream_id(&self) -> u64 {
        let mut inner = self.lock();
        inner.next_stream += 1;
        inner.next_stream
    }

    fn set_source(&self, stream: u64, name: &str, source: Option<Source>) {
        let mut inner = self.lock();
        match source {
            Some(source) => inner.sources.insert(stream, (name.to_owned(), source)),
            None => inner.sources.remove(&stream),
        };
        for label in SubsetSource::ALL {
            let s = match label {
                SubsetSource::Push => Source::Push,
                SubsetSource::Dns => Source::Dns,
            };
            let n = inner.sources.values().filter(|(_, v)| *v == s).count();
            self.metrics
                .subsets
                .get_or_create(&SourceLabels {
                    source: label.as_str().to_owned(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The pushed endpoints of `name` to send calls to, while connected.
    pub(crate) fn routable(&self, name: &str) -> Option<Vec<SocketAddr>> {
        let inner = self.lock();
        if !inner.connected {
            return None;
        }
        let set = inner.sets.get(name)?;
        let mut addrs: Vec<SocketAddr> = set
            .iter()
            .filter(|e| e.ready && !e.terminating)
            .filter_map(|e| e.address.parse().ok())
            .collect();
        addrs.sort();
        addrs.dedup();
        Some(addrs)
    }

    /// Applies one message of the stream.
    pub fn apply(&self, message: WatchResponse, now: Instant) -> Result<(), ProtocolError> {
        for set in &message.endpoint_sets {
            if set.service.len() > MAX_NAME_LEN {
                return Err(ProtocolError::ServiceName(set.service.len()));
            }
        }
        {
            let mut inner = self.lock();
            if message.snapshot {
                if inner.replacing {
                    inner.replacing = false;
                    inner.reconnects += 1;
                    self.metrics.reconnects.inc();
                }
                inner.sets.clear();
                inner.epoch = message.epoch.clone();
            } else {
                if !inner.connected {
                    return Err(ProtocolError::NoSnapshot);
                }
                if message.epoch != inner.epoch {
                    return Err(ProtocolError::Epoch {
                        expected: inner.epoch.clone(),
                        got: message.epoch,
                    });
                }
                if message.version != inner.version.wrapping_add(1) {
                    return Err(ProtocolError::Gap {
                        current: inner.version,
                        got: message.version,
                    });
                }
            }
            for service in &message.removed_services {
                inner.sets.remove(&normalize(service));
            }
            for set in message.endpoint_sets {
                inner.sets.insert(normalize(&set.service), set.endpoints);
            }
            inner.version = message.version;
            inner.connected = true;
            inner.received_at = Some(now);
            inner.observed_at_unix_ms = message.observed_at_unix_ms;
            inner.last_error = None;
            self.metrics.connected.set(1);
            self.metrics
                .version
                .set(i64::try_from(inner.version).unwrap_or(i64::MAX));
            self.metrics
                .last_message
                .set(unix_ms(SystemTime::now()) as f64 / 1000.0);
        }
        if let Some(config) = message.config {
            // After a (re)connect the stream's config is in force again even
            // if it did not change meanwhile: the file may have been applied.
            let snapshot = message.snapshot;
            self.config.send_if_modified(|c| {
                let changed = snapshot || c.as_deref() != Some(config.as_str());
                *c = Some(config);
                changed
            });
        }
        self.bump();
        Ok(())
    }

    /// A stream that worked ended; the next one is on its way.
    fn stream_ended(&self, error: String) {
        let mut inner = self.lock();
        inner.replacing = inner.connected;
        inner.last_error = Some(error);
    }

    /// The stream is gone: subsets fall back to DNS, keeping what they have
    /// until it answers.
    pub fn disconnected(&self, error: String) {
        {
            let mut inner = self.lock();
            if inner.connected {
                inner.reconnects += 1;
                self.metrics.reconnects.inc();
            }
            inner.connected = false;
            inner.replacing = false;
            self.metrics.connected.set(0);
            inner.last_error = Some(error);
        }
        self.bump();
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Keeps a stream open until `stop`, feeding `state`.
pub async fn run_client(settings: PushSettings, state: Arc<PushState>, stop: CancellationToken) {
    let mut failures: u32 = 0;
    // The end of a stream that worked, not reported yet: the next attempt
    // starts at once and has `RECONNECT_GRACE` to take over.
    let mut unreported: Option<String> = None;
    loop {
        let delivered_now = AtomicBool::new(false);
        let started = Instant::now();
        let attempt = stream_once(&settings, &state, &delivered_now);
        tokio::pin!(attempt);
        let grace = tokio::time::sleep(RECONNECT_GRACE);
        tokio::pin!(grace);
        let result = loop {
            tokio::select! {
                () = stop.cancelled() => return,
                r = &mut attempt => break r,
                () = &mut grace, if unreported.is_some() => {
                    if let Some(error) = unreported.take()
                        && !delivered_now.load(Ordering::Acquire)
                    {
                        tracing::warn!(error = %error, "push discovery stream lost; DNS and the config file until it is back");
                        state.disconnected(error);
                    }
                }
            }
        };
        unreported = None;
        let (delivered, error) = match result {
            Ok(delivered) => (delivered, "the server ended the stream".to_owned()),
            Err((delivered, e)) => (delivered, e),
        };
        // A server that ends every stream at once gets the back-off, not a
        // reconnect loop.
        if delivered && started.elapsed() >= RECONNECT_GRACE {
            tracing::info!(error = %error, "push discovery stream ended; reconnecting");
            state.stream_ended(error.clone());
            unreported = Some(error);
            failures = 0;
            continue;
        }
        tracing::warn!(error = %error, "push discovery stream lost; DNS and the config file until it is back");
        state.disconnected(error);
        failures = if delivered {
            1
        } else {
            failures.saturating_add(1)
        };
        let wait = backoff(failures, rand::random::<f64>());
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The wait before attempt `failures` (1-based), `unit` in [0, 1).
pub fn backoff(failures: u32, unit: f64) -> Duration {
    let exp = BACKOFF_FIRST.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let cap = exp.min(BACKOFF_MAX);
    cap.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

/// One stream from connect to its end. `Ok(true)`/`Err((true, _))`: a
/// snapshot was applied (the connection worked: back-off starts over).
async fn stream_once(
    settings: &PushSettings,
    state: &PushState,
    delivered_now: &AtomicBool,
) -> Result<bool, (bool, String)> {
    let fail = |e: String| (false, e);
    let ca = match &settings.ca {
        CaSource::Pem(pem) => pem.clone().into_bytes(),
        CaSource::File(path) => tokio::fs::read(path)
            .await
            .map_err(|e| fail(format!("reading the CA {}: {e}", path.display())))?,
    };
    let token = tokio::fs::read_to_string(&settings.token_file)
        .await
        .map_err(|e| {
            fail(format!(
                "reading the token {}: {e}",
                settings.token_file.display()
            ))
        })?;
    let tls = client_config(&ca).map_err(|e| fail(e.to_string()))?;
    let channel = tls_channel(&settings.address, &settings.server_name, tls)
        .map_err(|e| fail(e.to_string()))?;
    let mut request = tonic::Request::new(WatchRequest {
        namespace: settings.namespace.clone(),
        pod_name: settings.pod_name.clone(),
    });
    let header = format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| fail("the token is not printable ASCII".into()))?;
    request.metadata_mut().insert(AUTHORIZATION, header);
    let mut client = DiscoveryClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let stream = tokio::time::timeout(SNAPSHOT_TIMEOUT, client.watch(request))
        .await
        .map_err(|_| fail("no answer in time".into()))?
        .map_err(|s| fail(format!("{:?}: {}", s.code(), s.message())))?
        .into_inner();
    consume(stream, state, delivered_now).await
}

/// Applies a stream's messages to `state` until it ends or one is refused;
/// the first must be a snapshot. `Ok(true)`/`Err((true, _))` as for
/// [`stream_once`].
pub(crate) async fn consume(
    mut stream: tonic::Streaming<WatchResponse>,
    state: &PushState,
    delivered_now: &AtomicBool,
) -> Result<bool, (bool, String)> {
    let fail = |e: String| (false, e);
    let mut delivered = false;
    loop {
        let next = if delivered {
            stream.message().await
        } else {
            tokio::time::timeout(SNAPSHOT_TIMEOUT, stream.message())
                .await
                .map_err(|_| fail("no snapshot in time".into()))?
        };
        match next {
            Ok(Some(message)) => {
                let snapshot = message.snapshot;
                if !delivered && !snapshot {
                    return Err(fail("the stream did not start with a snapshot".into()));
                }
                state
                    .apply(message, Instant::now())
                    .map_err(|e| (delivered, e.to_string()))?;
                if snapshot && !delivered {
                    delivered = true;
                    delivered_now.store(true, Ordering::Release);
                    tracing::info!(
                        version = state.freshness().version,
                        "push discovery connected"
                    );
                }
            }
            Ok(None) => return Ok(delivered),
            Err(s) => return Err((delivered, format!("{:?}: {}", s.code(), s.message()))),
        }
    }
}

/// Discovery that prefers the push stream and falls back to `fallback`
/// (DNS) for subsets the stream does not cover or while it is down.
pub struct PushDiscover {
    state: Arc<PushState>,
    fallback: Arc<dyn Discover>,
}

impl PushDiscover {
    pub fn new(state: Arc<PushState>, fallback: Arc<dyn Discover>) -> Self {
        PushDiscover { state, fallback }
    }
}

impl Discover for PushDiscover {
    fn discover(&self, target: Target) -> UpdateStream {
        let name = match target.discovery.source() {
            Some(DiscoverySource::Dns(d)) => normalize(&d.name),
            // A static list is what it is; nothing to push.
            _ => return self.fallback.discover(target),
        };
        let (tx, rx) = mpsc::channel::<Result<Update, DiscoveryError>>(8);
        tokio::spawn(follow(
            name,
            target,
            self.state.clone(),
            self.fallback.clone(),
            tx,
        ));
        let mut rx = rx;
        Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}

/// One subset's endpoints: the pushed set while the stream has it, DNS
/// otherwise. Ends when the subset stops listening.
async fn follow(
    name: String,
    target: Target,
    state: Arc<PushState>,
    fallback: Arc<dyn Discover>,
    tx: mpsc::Sender<Result<Update, DiscoveryError>>,
) {
    let mut changed = state.changed.subscribe();
    let mut dns: Option<UpdateStream> = None;
    let mut dns_ended = false;
    let id = state.stream_id();
    let _forget = Forget {
        state: state.clone(),
        id,
    };
    let mut last_pushed: Option<Vec<SocketAddr>> = None;
    let mut switch = Switch::default();
    loop {
        changed.borrow_and_update();
        match state.routable(&name) {
            Some(addrs) => {
                dns_ended = false;
                if dns.take().is_some() || last_pushed.is_none() {
                    state.set_source(id, &name, Some(Source::Push));
                }
                if last_pushed.as_ref() != Some(&addrs) {
                    last_pushed = Some(addrs.clone());
                    if tx.send(Ok(switch.set(Source::Push, addrs))).await.is_err() {
                        return;
                    }
                }
            }
            None => {
                if dns.is_none() && !dns_ended {
                    // What was pushed stays until DNS answers.
                    state.set_source(id, &name, Some(Source::Dns));
                    last_pushed = None;
                    dns = Some(fallback.discover(Target {
                        discovery: target.discovery.clone(),
                        refresh_now: target.refresh_now.clone(),
                    }));
                }
            }
        }
        let dns_next = async {
            match dns.as_mut() {
                Some(stream) => stream.next().await,
                None => std::future::pending().await,
            }
        };
        let settle = async {
            match switch.pending_until() {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tx.closed() => return,
            r = changed.changed() => if r.is_err() { return },
            () = settle => {
                if let Some(reset) = switch.settle()
                    && tx.send(Ok(reset)).await.is_err()
                {
                    return;
                }
            }
            update = dns_next => match update {
                Some(update) => {
                    let update = match update {
                        Ok(Update::Reset(addrs)) => Ok(switch.set(Source::Dns, addrs)),
                        other => other,
                    };
                    if tx.send(update).await.is_err() {
                        return;
                    }
                }
                // DNS gave up (it does not, but if it did): wait for the stream.
                None => {
                    dns = None;
                    dns_ended = true;
                }
            },
        }
    }
}

/// How long the endpoints of the previous source stay beside those of the
/// new one after a switch (push to DNS or back): make before break, so the
/// new endpoints connect before the old ones stop taking calls. Within one
/// source a set replaces the previous one at once (a terminating endpoint
/// gets no new call).
const SWITCH_GRACE: Duration = Duration::from_secs(2);

/// Turns sets from either source into updates, adding before removing when
/// the source changes: for [`SWITCH_GRACE`] the previous source's last set
/// stays beside the new source's current one.
#[derive(Default)]
struct Switch {
    source: Option<Source>,
    current: Vec<SocketAddr>,
    /// Until when, and the previous source's set.
    pending: Option<(tokio::time::Instant, Vec<SocketAddr>)>,
}

impl Switch {
    fn set(&mut self, source: Source, addrs: Vec<SocketAddr>) -> Update {
        if self.source.is_some_and(|s| s != source) && self.pending.is_none() {
            let previous = std::mem::take(&mut self.current);
            self.pending = Some((tokio::time::Instant::now() + SWITCH_GRACE, previous));
        }
        self.source = Some(source);
        self.current = addrs;
        match &self.pending {
            Some((_, previous)) => {
                let mut both = previous.clone();
                both.extend(self.current.iter().copied());
                both.sort();
                both.dedup();
                Update::Reset(both)
            }
            None => Update::Reset(self.current.clone()),
        }
    }

    fn pending_until(&self) -> Option<tokio::time::Instant> {
        self.pending.as_ref().map(|(at, _)| *at)
    }

    fn settle(&mut self) -> Option<Update> {
        self.pending
            .take()
            .map(|_| Update::Reset(self.current.clone()))
    }
}

/// Takes a subset's name out of the sources when its stream ends.
struct Forget {
    state: Arc<PushState>,
    id: u64,
}

impl Drop for Forget {
    fn drop(&mut self) {
        self.state.set_source(self.id, "", None);
    }
}

#[cfg(test)]
mod tests {
    use grpc_balancer_discovery_api::v1::EndpointSet;

    use super::*;

    fn endpoint(address: &str, ready: bool, terminating: bool) -> Endpoint {
        Endpoint {
            address: address.into(),
            pod_name: String::new(),
            zone: String::new(),
            ready,
            serving: true,
            terminating,
        }
    }

    fn message(
        epoch: &str,
        version: u64,
        snapshot: bool,
        sets: &[(&str, Vec<Endpoint>)],
    ) -> WatchResponse {
        WatchResponse {
            epoch: epoch.into(),
            version,
            snapshot,
            config: None,
            endpoint_sets: sets
                .iter()
                .map(|(s, e)| EndpointSet {
                    service: s.to_string(),
                    endpoints: e.clone(),
                })
                .collect(),
            removed_services: Vec::new(),
            observed_at_unix_ms: 0,
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn only_ready_endpoints_that_are_not_terminating_are_routable() {
        let state = PushState::new(PushMetrics::default());
        assert_eq!(state.routable("svc"), None, "nothing before a snapshot");
        state
            .apply(
                message(
                    "e",
                    3,
                    true,
                    &[(
                        "Svc.ns.svc.cluster.local.",
                        vec![
                            endpoint("10.0.0.1:1", true, false),
                            endpoint("10.0.0.2:1", false, true),
                            endpoint("10.0.0.3:1", false, false),
                            endpoint("garbage", true, false),
                        ],
                    )],
                ),
                Instant::now(),
            )
            .expect("snapshot");
        // Names match whatever their case or trailing dot.
        assert_eq!(
            state.routable("svc.ns.svc.cluster.local"),
            Some(vec![addr("10.0.0.1:1")])
        );
        assert_eq!(state.routable("other"), None);
        state.disconnected("gone".into());
        assert_eq!(state.routable("svc.ns.svc.cluster.local"), None);
        assert_eq!(state.freshness().reconnects, 1);
    }

    #[test]
    fn changes_must_follow_their_snapshot_in_order() {
        let state = PushState::new(PushMetrics::default());
        assert_eq!(
            state.apply(message("e", 1, false, &[]), Instant::now()),
            Err(ProtocolError::NoSnapshot)
        );
        state
            .apply(message("e", 5, true, &[("a", vec![])]), Instant::now())
            .expect("snapshot");
        assert!(matches!(
            state.apply(message("other", 6, false, &[]), Instant::now()),
            Err(ProtocolError::Epoch { .. })
        ));
        assert_eq!(
            state.apply(message("e", 8, false, &[]), Instant::now()),
            Err(ProtocolError::Gap { current: 5, got: 8 })
        );
        let mut removal = message("e", 6, false, &[]);
        removal.removed_services = vec!["a".into()];
        state.apply(removal, Instant::now()).expect("in order");
        assert_eq!(state.routable("a"), None);
        assert_eq!(state.freshness().version, 6);
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            state.apply(message("e", 7, false, &[(&long, vec![])]), Instant::now()),
            Err(ProtocolError::ServiceName(MAX_NAME_LEN + 1))
        );
    }

    #[test]
    fn a_snapshot_replaces_everything_and_config_changes_are_announced() {
        let state = PushState::new(PushMetrics::default());
        let mut config = state.config();
        let mut first = message(
            "e",
            1,
            true,
            &[("a", vec![endpoint("10.0.0.1:1", true, false)])],
        );
        first.config = Some("balancings: []".into());
        state.apply(first, Instant::now()).expect("snapshot");
        assert!(config.has_changed().expect("open"));
        config.borrow_and_update();
        let mut change = message("e", 2, false, &[]);
        change.config = Some("balancings: []".into());
        state.apply(change, Instant::now()).expect("change");
        assert!(
            !config.has_changed().expect("open"),
            "same document: no news"
        );
        let mut again = message("f", 1, true, &[("b", vec![])]);
        again.config = Some("balancings: []".into());
        state.apply(again, Instant::now()).expect("snapshot");
        assert!(
            config.has_changed().expect("open"),
            "a new snapshot puts its config in force again"
        );
        assert_eq!(
            state.routable("a"),
            None,
            "the new snapshot does not have it"
        );
        assert_eq!(state.routable("b"), Some(vec![]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_switch_adds_before_it_removes() {
        let mut switch = Switch::default();
        let a = addr("10.0.0.1:1");
        let b = addr("10.0.0.2:1");
        let c = addr("10.0.0.3:1");
        assert_eq!(switch.set(Source::Push, vec![a]), Update::Reset(vec![a]));
        // Within the stream: at once.
        assert_eq!(switch.set(Source::Push, vec![b]), Update::Reset(vec![b]));
        // To DNS: the pushed set stays beside DNS's for the grace...
        assert_eq!(switch.set(Source::Dns, vec![c]), Update::Reset(vec![b, c]));
        // ...while DNS's own changes apply at once...
        assert_eq!(switch.set(Source::Dns, vec![a]), Update::Reset(vec![a, b]));
        assert!(switch.pending_until().is_some());
        // ...and then only DNS's set is left.
        assert_eq!(switch.settle(), Some(Update::Reset(vec![a])));
        assert_eq!(switch.settle(), None);
        assert_eq!(switch.set(Source::Dns, vec![c]), Update::Reset(vec![c]));
    }

    #[test]
    fn back_off_doubles_with_jitter_up_to_its_cap() {
        assert_eq!(backoff(1, 0.0), BACKOFF_FIRST / 2);
        assert_eq!(backoff(1, 1.0), BACKOFF_FIRST);
        assert_eq!(backoff(3, 1.0), BACKOFF_FIRST * 4);
        assert_eq!(backoff(100, 1.0), BACKOFF_MAX);
        assert!(backoff(100, 0.0) >= BACKOFF_MAX / 2);
    }
}
