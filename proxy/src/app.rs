//! Wires the proxy together and owns the running balancings.
//!
//! On a config change, balancings whose config is unchanged keep their
//! listener and connections untouched; changed ones get a new runtime that
//! is swapped in (ArcSwap) once it can serve, while calls in flight finish on
//! the old one; removed ones stop accepting and drain.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use grpc_balancer_crds::config::{self, ProxyConfig};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminView, DebugAccess, Readiness};
use crate::balancer::Balancing;
use crate::call;
use crate::config_watch::{self, Loaded};
use crate::discovery::push::{self, PushDiscover, PushSettings, PushState};
use crate::discovery::{Discover, SystemDiscover};
use crate::metrics::{BalancingLabels, LabelValue as _, Metrics, ReloadResult, ResultLabels};
use crate::transport::client::ConnectSettings;
use crate::transport::{relay, server};

/// Where the config comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A file, watched for changes (missing = no balancings yet).
    File(PathBuf),
    /// A fixed config (the `--listen/--endpoint` form).
    Fixed(ProxyConfig),
}

pub struct Settings {
    pub config: ConfigSource,
    /// Admin server. `[::]:PORT` listens on both families (IPv4 only where
    /// the kernel has no IPv6).
    pub admin: SocketAddr,
    /// Who may read `/config` and `/endpoints` (the probes and `/metrics`
    /// answer everyone).
    pub admin_debug: DebugAccess,
    /// Replaces the nameservers of /etc/resolv.conf.
    pub dns_server: Option<SocketAddr>,
    pub drain_timeout: Duration,
    pub config_poll_interval: Duration,
    pub connect: ConnectSettings,
    /// How long a reloaded balancing may take to connect before it is swapped in.
    pub warm_up: Duration,
    /// How often a listener that could not bind is tried again.
    pub bind_retry: Duration,
    /// Overrides discovery (tests).
    pub discover: Option<Arc<dyn Discover>>,
    /// The operator's push discovery stream, trusted over DNS and the
    /// config file while it is connected.
    pub push: Option<PushSettings>,
    /// Ports the pod's own containers listen on: a balancing that stands in
    /// for a Service (`service` in the config) on one of them is not
    /// started, since its listener would take the port from the app (the
    /// webhook gives such a pod no host alias for it either).
    pub app_ports: Vec<u16>,
}

impl Settings {
    pub fn new(config: ConfigSource) -> Self {
        Settings {
            config,
            admin: SocketAddr::from(([127, 0, 0, 1], config::DEFAULT_ADMIN_PORT)),
            admin_debug: DebugAccess::Loopback,
            dns_server: None,
            drain_timeout: Duration::from_secs(30),
            config_poll_interval: Duration::from_secs(1),
            connect: ConnectSettings::default(),
            warm_up: Duration::from_secs(2),
            bind_retry: Duration::from_secs(1),
            discover: None,
            push: None,
            app_ports: Vec::new(),
        }
    }
}

struct Running {
    config: config::Balancing,
    addr: SocketAddr,
    current: Arc<ArcSwap<Balancing>>,
    stop: CancellationToken,
    server: JoinHandle<()>,
    /// The listener, given back once the server stops accepting.
    handback: Option<oneshot::Receiver<TcpListener>>,
    /// The relays of a Service's other ports (`service.forwards`), which
    /// stop with `stop` and close their listeners as they end.
    forwards: Vec<(SocketAddr, JoinHandle<()>)>,
}

/// The address of a removed Service front, still relayed as plain TCP to
/// the Service: pods created while the balancing existed map the Service's
/// names there, and must keep reaching the Service (unbalanced) until they
/// restart. Stopped when a balancing of the config wants the address.
struct Tombstone {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// A balancing of the config whose listener is not bound (yet): tried again
/// every `bind_retry` until it binds or leaves the config.
struct Unbound {
    config: config::Balancing,
    error: String,
    failures: u64,
}

#[derive(Default)]
struct Balancings {
    running: BTreeMap<String, Running>,
    unbound: BTreeMap<String, Unbound>,
}

/// Binding attempts between two warnings about the same listener.
const BIND_WARN_EVERY: u64 = 30;
/// How long a stopped server may take to hand its listener back.
const HANDBACK_TIMEOUT: Duration = Duration::from_secs(2);

/// The running proxy: its balancings and listeners, the config, and what
/// readiness depends on.
pub struct AppState {
    running: Mutex<Balancings>,
    pub config: ArcSwap<ProxyConfig>,
    /// A config was loaded and its listeners bound.
    pub loaded: AtomicBool,
    pub draining: AtomicBool,
    pub metrics: Metrics,
    pub registry: Registry,
    discover: Arc<dyn Discover>,
    connect: ConnectSettings,
    drain_timeout: Duration,
    warm_up: Duration,
    bind_retry: Duration,
    /// The admin server's address, which no balancing may take.
    admin_addr: OnceLock<SocketAddr>,
    /// Cancelled by `POST /shutdown`: stops the proxy as `shutdown` does.
    shutdown_requested: CancellationToken,
    /// The push stream's view, when one is configured.
    push: Option<Arc<PushState>>,
    /// Where the config in force came from (`CONFIG_FROM_*`).
    config_source: std::sync::atomic::AtomicU8,
    /// See [`Settings::app_ports`].
    app_ports: Vec<u16>,
    tombstones: Mutex<Vec<Tombstone>>,
}

impl AdminView for AppState {
    fn readiness(&self) -> Readiness {
        if self.draining.load(Ordering::Acquire) {
            return Readiness::Draining;
        }
        if !self.loaded.load(Ordering::Acquire) {
            return Readiness::NoConfigLoaded;
        }
        let unbound = self.unbound();
        if unbound.is_empty() {
            Readiness::Ready
        } else {
            Readiness::Unbound(unbound)
        }
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn registry(&self) -> &Registry {
        &self.registry
    }

    fn config(&self) -> Arc<ProxyConfig> {
        self.config.load_full()
    }

    fn balancings(&self) -> Vec<(SocketAddr, Arc<Balancing>)> {
        AppState::balancings(self)
    }

    fn request_shutdown(&self) {
        self.shutdown_requested.cancel();
    }

    fn push(&self) -> Option<&PushState> {
        self.push.as_deref()
    }

    fn config_source(&self) -> &'static str {
        match self.config_source.load(Ordering::Acquire) {
            CONFIG_FROM_PUSH => "push",
            CONFIG_FROM_FLAGS => "flags",
            _ => "file",
        }
    }
}

const CONFIG_FROM_FILE: u8 = 0;
const CONFIG_FROM_PUSH: u8 = 1;
const CONFIG_FROM_FLAGS: u8 = 2;

impl AppState {
    /// Whether the config in force came from a connected push stream.
    fn push_config_active(&self) -> bool {
        self.push
            .as_ref()
            .is_some_and(|p| p.is_connected() && p.config().borrow().is_some())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Balancings> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current runtime of every balancing, by name.
    pub fn balancings(&self) -> Vec<(SocketAddr, Arc<Balancing>)> {
        self.lock()
            .running
            .values()
            .map(|r| (r.addr, r.current.load_full()))
            .collect()
    }

    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.lock().running.get(name).map(|r| r.addr)
    }

    /// Balancings whose listener is not bound, with the last error.
    pub fn unbound(&self) -> Vec<(String, String)> {
        self.lock()
            .unbound
            .iter()
            .map(|(name, u)| (name.clone(), u.error.clone()))
            .collect()
    }

    fn has_unbound(&self) -> bool {
        !self.lock().unbound.is_empty()
    }

    fn set_unbound(&self, name: &str, config: config::Balancing, error: String) {
        self.metrics
            .listener_bind_errors
            .get_or_create(&BalancingLabels {
                balancing: name.to_owned(),
            })
            .inc();
        let mut all = self.lock();
        let failures = all
            .unbound
            .get(name)
            .filter(|u| u.config == config)
            .map_or(0, |u| u.failures)
            + 1;
        if failures == 1 || failures.is_multiple_of(BIND_WARN_EVERY) {
            tracing::warn!(balancing = %name, listen = %config.listen, error = %error, failures, retry_every = ?self.bind_retry, "listener not bound; retrying");
        } else {
            tracing::debug!(balancing = %name, error = %error, failures, "listener still not bound");
        }
        all.unbound.insert(
            name.to_owned(),
            Unbound {
                config,
                error,
                failures,
            },
        );
        self.metrics.listeners_unbound.set(all.unbound.len() as i64);
    }

    fn clear_unbound(&self, name: &str) {
        let mut all = self.lock();
        all.unbound.remove(name);
        self.metrics.listeners_unbound.set(all.unbound.len() as i64);
    }

    /// The first port of `b`'s Service front that the pod's own containers
    /// listen on.
    fn app_port_taken(&self, b: &config::Balancing) -> Option<u16> {
        let front = b.service.as_ref()?;
        std::iter::once(&b.listen)
            .chain(front.forwards.iter().map(|f| &f.listen))
            .filter_map(|l| l.parse::<SocketAddr>().ok())
            .map(|a| a.port())
            .find(|p| self.app_ports.contains(p))
    }

    /// Why a balancing cannot run next to the admin server, if it cannot.
    fn admin_conflict(&self, b: &config::Balancing) -> Option<String> {
        let admin = *self.admin_addr.get()?;
        let listen: SocketAddr = b.listen.parse().ok()?;
        config::listeners_overlap(admin, listen).then(|| {
            format!(
                "listen: {:?} is not valid: port {} is the proxy's admin port",
                b.listen,
                admin.port()
            )
        })
    }

    /// Applies a config: `new` holds the valid balancings; `rejected` names
    /// the invalid ones of the file, which keep running as they were (a
    /// broken edit of one balancing must not take it away, nor hold back
    /// the others). Listeners that cannot bind are retried until they bind.
    /// Returns what did not apply.
    async fn apply(&self, mut new: ProxyConfig, rejected: &[String]) -> Vec<String> {
        let mut errors = Vec::new();
        // Keep what ran of the rejected ones, unless a valid balancing now
        // wants their listener.
        for name in rejected {
            if new.balancings.iter().any(|b| &b.name == name) {
                continue;
            }
            let kept = {
                let all = self.lock();
                all.running
                    .get(name)
                    .map(|r| r.config.clone())
                    .or_else(|| all.unbound.get(name).map(|u| u.config.clone()))
            };
            let Some(kept) = kept else { continue };
            let clashes = kept.listen.parse::<SocketAddr>().is_ok_and(|k| {
                new.balancings.iter().any(|b| {
                    b.listen
                        .parse::<SocketAddr>()
                        .is_ok_and(|l| config::listeners_overlap(k, l))
                })
            });
            if clashes {
                tracing::warn!(balancing = %name, "invalid balancing's listener is taken by another; stopping it");
            } else {
                tracing::warn!(balancing = %name, "invalid balancing keeps its last good config");
                new.balancings.push(kept);
            }
        }
        new.balancings.retain(|b| match self.app_port_taken(b) {
            Some(port) => {
                // Not an error: the pod keeps dialling the Service directly.
                tracing::warn!(balancing = %b.name, port, "a container of the pod listens on this port of the Service: not standing in for the Service here");
                false
            }
            None => true,
        });
        new.balancings.retain(|b| match self.admin_conflict(b) {
            Some(why) => {
                tracing::error!(balancing = %b.name, error = %why, "balancing not started");
                errors.push(format!("balancing {}: {why}", b.name));
                false
            }
            None => true,
        });
        let wanted: BTreeMap<&str, &config::Balancing> = new
            .balancings
            .iter()
            .map(|b| (b.name.as_str(), b))
            .collect();

        // Removed, or moved to another address: stop accepting and drain.
        let gone: Vec<Running> = {
            let mut all = self.lock();
            all.unbound
                .retain(|name, u| wanted.get(name.as_str()).is_some_and(|b| **b == u.config));
            self.metrics.listeners_unbound.set(all.unbound.len() as i64);
            let names: Vec<String> = all
                .running
                .iter()
                .filter(|(name, r)| {
                    // The service front belongs to the listeners: a new one
                    // restarts them (the main socket is handed over).
                    wanted.get(name.as_str()).is_none_or(|b| {
                        b.listen != r.config.listen || b.service != r.config.service
                    })
                })
                .map(|(name, _)| name.clone())
                .collect();
            names
                .into_iter()
                .filter_map(|n| all.running.remove(&n))
                .collect()
        };
        // Their listeners come back before anything binds: a balancing that
        // takes over an address (a rename, ports swapped between two) gets
        // the socket itself, with the connections waiting on it; any other
        // is closed, so an overlapping address (0.0.0.0 vs 127.0.0.1) binds.
        let mut returned = Vec::new();
        let mut forwards = Vec::new();
        // Where a removed Service front's addresses keep relaying to.
        let mut fronts_gone: HashMap<SocketAddr, SocketAddr> = HashMap::new();
        for mut r in gone {
            tracing::info!(balancing = %r.config.name, "balancing removed; draining");
            r.stop.cancel();
            if let Some(rx) = r.handback.take() {
                returned.push((r.addr, rx));
            }
            if let Some(front) = &r.config.service {
                if let Ok(to) = front.passthrough.parse() {
                    fronts_gone.insert(r.addr, to);
                }
                for f in &front.forwards {
                    if let (Ok(from), Ok(to)) = (f.listen.parse(), f.to.parse()) {
                        fronts_gone.insert(from, to);
                    }
                }
            }
            forwards.append(&mut r.forwards);
            tokio::spawn(drain(r, self.drain_timeout));
        }
        // A relay's listener is closed once its task ended (on `stop`), so
        // that its address can be bound again below.
        for (addr, task) in forwards {
            if tokio::time::timeout(HANDBACK_TIMEOUT, task).await.is_err() {
                tracing::warn!(%addr, "a stopped relay did not end");
            }
        }
        let wanted_addrs: Vec<SocketAddr> = new
            .balancings
            .iter()
            .flat_map(|b| {
                std::iter::once(&b.listen).chain(
                    b.service
                        .iter()
                        .flat_map(|s| s.forwards.iter().map(|f| &f.listen)),
                )
            })
            .filter_map(|l| l.parse().ok())
            .collect();
        self.bury_wanted(&wanted_addrs).await;
        let mut spare: HashMap<SocketAddr, TcpListener> = HashMap::new();
        for (addr, rx) in returned {
            match tokio::time::timeout(HANDBACK_TIMEOUT, rx).await {
                Ok(Ok(listener)) => {
                    spare.insert(addr, listener);
                }
                _ => tracing::warn!(%addr, "a stopped listener was not handed back"),
            }
        }

        for b in &new.balancings {
            let existing = self
                .lock()
                .running
                .get(&b.name)
                .map(|r| (r.config.clone(), r.current.clone()));
            match existing {
                Some((old, _)) if old == *b => {}
                Some((_, current)) => {
                    let fresh = Balancing::start(b, &self.discover, &self.metrics, self.connect);
                    fresh.warm_up(self.warm_up).await;
                    let old = current.swap(fresh.clone());
                    old.replace_with(fresh);
                    if let Some(r) = self.lock().running.get_mut(&b.name) {
                        r.config = b.clone();
                    }
                    tracing::info!(balancing = %b.name, "balancing updated");
                }
                None => {
                    let handed = b
                        .listen
                        .parse::<SocketAddr>()
                        .ok()
                        .and_then(|a| spare.remove(&a));
                    if let Err(e) = self.start_listener(b, handed) {
                        errors.push(format!("balancing {}: {e:#}", b.name));
                    }
                }
            }
        }
        // What is left of removed Service fronts keeps relaying.
        for (addr, to) in fronts_gone {
            if wanted_addrs
                .iter()
                .any(|w| config::listeners_overlap(*w, addr))
            {
                continue;
            }
            let listener = match spare.remove(&addr) {
                Some(l) => Ok(l),
                None => server::bind(addr),
            };
            match listener {
                Ok(listener) => self.keep_relaying(listener, addr, to),
                Err(e) => {
                    tracing::warn!(%addr, %to, error = %e, "cannot keep relaying a removed Service front")
                }
            }
        }
        drop(spare);
        self.config.store(Arc::new(new));
        errors
    }

    /// Relays `addr` (a removed Service front's) to the Service from now on.
    fn keep_relaying(&self, listener: TcpListener, addr: SocketAddr, to: SocketAddr) {
        let stop = CancellationToken::new();
        let task = tokio::spawn(relay::forward(
            listener,
            to,
            format!("removed Service front {addr}"),
            stop.clone(),
        ));
        tracing::info!(%addr, %to, "Service front removed: its address relays to the Service, unbalanced, for the pods that still map the Service's names here");
        self.tombstones
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Tombstone { addr, stop, task });
    }

    /// Stops the relays of removed Service fronts on the addresses a
    /// balancing now wants, and waits until their listeners are closed.
    async fn bury_wanted(&self, wanted: &[SocketAddr]) {
        let stopped: Vec<Tombstone> = {
            let mut all = self
                .tombstones
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let (stop, keep) = std::mem::take(&mut *all)
                .into_iter()
                .partition(|t| wanted.iter().any(|w| config::listeners_overlap(*w, t.addr)));
            *all = keep;
            stop
        };
        for t in stopped {
            t.stop.cancel();
            if tokio::time::timeout(HANDBACK_TIMEOUT, t.task)
                .await
                .is_err()
            {
                tracing::warn!(addr = %t.addr, "a relay of a removed Service front did not end");
            }
        }
    }

    /// Starts a balancing on `listener` (one handed over) or a new one; one
    /// that cannot bind is recorded as unbound, to be retried.
    fn start_listener(
        &self,
        b: &config::Balancing,
        listener: Option<TcpListener>,
    ) -> anyhow::Result<()> {
        // At 0 before any failure, so increase() counts the first one.
        let _ = self
            .metrics
            .listener_bind_errors
            .get_or_create(&BalancingLabels {
                balancing: b.name.clone(),
            });
        let bound = match listener {
            Some(l) => Ok(l),
            None => b
                .listen
                .parse::<SocketAddr>()
                .context("listen address")
                .and_then(|addr| server::bind(addr).map_err(anyhow::Error::from)),
        };
        let bound = bound.and_then(|listener| Ok((listener, bind_forwards(b)?)));
        let (listener, forward_listeners) = match bound {
            Ok(l) => l,
            Err(e) => {
                self.set_unbound(&b.name, b.clone(), format!("{e:#}"));
                return Err(e);
            }
        };
        let addr = listener.local_addr()?;
        let passthrough = match &b.service {
            Some(front) => Some((
                front
                    .passthrough
                    .parse::<SocketAddr>()
                    .context("service.passthrough")?,
                self.metrics
                    .unbalanced_connections
                    .get_or_create_owned(&BalancingLabels {
                        balancing: b.name.clone(),
                    }),
            )),
            None => None,
        };
        let runtime = Balancing::start(b, &self.discover, &self.metrics, self.connect);
        let current = Arc::new(ArcSwap::new(runtime));
        let stop = CancellationToken::new();
        let (handback_tx, handback) = oneshot::channel();
        let accepted = self
            .metrics
            .downstream_connections
            .get_or_create_owned(&BalancingLabels {
                balancing: b.name.clone(),
            });
        let handler = {
            let current = current.clone();
            // The balancing installed when the stream arrives serves it.
            move |req| call::proxy(current.load_full(), req)
        };
        let server = tokio::spawn(server::serve(
            listener,
            b.name.clone(),
            accepted,
            handler,
            passthrough,
            stop.clone(),
            handback_tx,
        ));
        let forwards = forward_listeners
            .into_iter()
            .map(|(listener, from, to)| {
                let task = tokio::spawn(relay::forward(listener, to, b.name.clone(), stop.clone()));
                tracing::info!(balancing = %b.name, listen = %from, %to, "relaying a Service port");
                (from, task)
            })
            .collect();
        let was_unbound = {
            let mut all = self.lock();
            all.running.insert(
                b.name.clone(),
                Running {
                    config: b.clone(),
                    addr,
                    current,
                    stop,
                    server,
                    handback: Some(handback),
                    forwards,
                },
            );
            all.unbound.contains_key(&b.name)
        };
        if was_unbound {
            self.clear_unbound(&b.name);
            tracing::info!(balancing = %b.name, listen = %addr, "listener bound after retrying; balancing started");
        } else {
            tracing::info!(balancing = %b.name, listen = %addr, policy = %b.policy.kind, "balancing started");
        }
        Ok(())
    }

    /// Tries every unbound listener once more.
    fn retry_unbound(&self) {
        let pending: Vec<config::Balancing> = self
            .lock()
            .unbound
            .values()
            .map(|u| u.config.clone())
            .collect();
        for b in pending {
            let _ = self.start_listener(&b, None);
        }
    }

    fn count_reload(&self, result: ReloadResult) {
        self.metrics
            .config_reloads
            .get_or_create(&ResultLabels {
                result: result.as_str().to_owned(),
            })
            .inc();
    }

    /// Applies what the config file holds. Whatever it holds, the proxy
    /// counts as loaded afterwards: a pod must not stay unready (its app
    /// never started, with native sidecars) because of a file the next
    /// ConfigMap update fixes; the errors are logged and counted.
    async fn handle(&self, loaded: Loaded) {
        match loaded {
            Loaded::Config(c) => {
                for e in &c.errors {
                    tracing::error!(error = %e, "balancing rejected; it keeps its last good config, if it had one");
                }
                let errors = self.apply(c.config, &c.rejected).await;
                self.loaded.store(true, Ordering::Release);
                let result = if errors.is_empty() && c.errors.is_empty() {
                    ReloadResult::Applied
                } else {
                    ReloadResult::Partial
                };
                self.count_reload(result);
                let all = self.lock();
                tracing::info!(
                    balancings = all.running.len(),
                    unbound = all.unbound.len(),
                    result = result.as_str(),
                    "config applied"
                );
            }
            Loaded::Missing => {
                tracing::info!("no config file yet; running with no balancings");
                self.loaded.store(true, Ordering::Release);
                self.count_reload(ReloadResult::Missing);
            }
            Loaded::Failed(e) => {
                self.count_reload(match e {
                    config_watch::LoadError::Unreadable { .. } => ReloadResult::Unreadable,
                    config_watch::LoadError::Invalid { .. } => ReloadResult::Invalid,
                });
                tracing::error!(error = %e, "config not applied; keeping the last good config");
                self.loaded.store(true, Ordering::Release);
            }
        }
    }
}

/// The pushed config document as if read from the file: the same parser,
/// the same partial acceptance. An empty document (the namespace has no
/// balancing) is treated like a missing file: what runs keeps running.
fn parse_pushed(text: &str) -> Loaded {
    if text.is_empty() {
        return Loaded::Missing;
    }
    match config::parse_yaml_partial(text) {
        Ok(partial) => Loaded::Config(partial),
        Err(source) => Loaded::Failed(config_watch::LoadError::Invalid {
            path: "<push discovery>".into(),
            source,
        }),
    }
}

/// Binds the listeners of a balancing's relayed Service ports, all or none.
fn bind_forwards(
    b: &config::Balancing,
) -> anyhow::Result<Vec<(TcpListener, SocketAddr, SocketAddr)>> {
    let mut bound = Vec::new();
    for f in b.service.iter().flat_map(|s| &s.forwards) {
        let from: SocketAddr = f.listen.parse().context("service.forwards.listen")?;
        let to: SocketAddr = f.to.parse().context("service.forwards.to")?;
        bound.push((server::bind(from)?, from, to));
    }
    Ok(bound)
}

/// Stops accepting, sends GOAWAY downstream, waits for calls in flight (up to
/// the drain timeout), then stops discovery and connections.
async fn drain(r: Running, timeout: Duration) {
    r.stop.cancel();
    let mut server = r.server;
    if tokio::time::timeout(timeout, &mut server).await.is_err() {
        tracing::warn!(balancing = %r.config.name, ?timeout, "drain timeout: closing remaining connections");
        server.abort();
    }
    r.current.load().stop();
}

/// A started proxy.
pub struct RunningProxy {
    pub admin_addr: SocketAddr,
    state: Arc<AppState>,
    task: JoinHandle<()>,
}

/// A cloneable read handle on a running proxy's endpoints and queues, for
/// those embedding it (the tests) to watch what the admin server shows.
#[derive(Clone)]
pub struct ProxyView(Arc<AppState>);

/// One endpoint of a running balancing, as of the moment it was read.
#[derive(Debug, Clone)]
pub struct EndpointStatus {
    pub balancing: String,
    pub addr: SocketAddr,
    /// Whether a call could be sent to it now.
    pub available: bool,
    pub in_flight: u32,
}

impl ProxyView {
    /// Every endpoint of every running balancing.
    pub fn endpoints(&self) -> Vec<EndpointStatus> {
        let mut all = Vec::new();
        for (_, b) in self.0.balancings() {
            for s in &b.subsets {
                for e in &s.set.load().endpoints {
                    all.push(EndpointStatus {
                        balancing: b.name().to_owned(),
                        addr: e.addr,
                        available: e.is_available(),
                        in_flight: e.in_flight(),
                    });
                }
            }
        }
        all
    }

    /// Calls waiting for an endpoint, over all balancings.
    pub fn queued_calls(&self) -> u32 {
        self.0.balancings().iter().map(|(_, b)| b.pending()).sum()
    }
}

impl RunningProxy {
    pub fn view(&self) -> ProxyView {
        ProxyView(self.state.clone())
    }

    /// Address of a balancing's listener.
    pub fn listener_addr(&self, balancing: &str) -> Option<SocketAddr> {
        self.state.listener_addr(balancing)
    }

    /// Resolves once the proxy has shut down and drained.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("proxy task failed")
    }
}

/// Starts the proxy: loads the config, binds listeners and the admin server,
/// and runs until `shutdown` resolves; then drains and stops.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunningProxy> {
    let (metrics, registry) = Metrics::new();
    let mut discover = settings
        .discover
        .clone()
        .unwrap_or_else(|| Arc::new(SystemDiscover::new(settings.dns_server)));
    let push_stop = CancellationToken::new();
    let mut pushed_config = None;
    let push = settings.push.clone().map(|push_settings| {
        let state = Arc::new(PushState::new(metrics.push.clone()));
        // Subscribed before the client starts, and looked at once whatever
        // happens: a config pushed before the loop below runs still applies.
        let mut config = state.config();
        config.mark_changed();
        pushed_config = Some(config);
        discover = Arc::new(PushDiscover::new(state.clone(), discover.clone()));
        tokio::spawn(push::run_client(
            push_settings,
            state.clone(),
            push_stop.clone(),
        ));
        state
    });
    let state = Arc::new(AppState {
        running: Mutex::new(Balancings::default()),
        config: ArcSwap::from_pointee(ProxyConfig::default()),
        loaded: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        metrics,
        registry,
        discover,
        connect: settings.connect,
        drain_timeout: settings.drain_timeout,
        warm_up: settings.warm_up,
        bind_retry: settings.bind_retry,
        admin_addr: OnceLock::new(),
        shutdown_requested: CancellationToken::new(),
        push: push.clone(),
        config_source: std::sync::atomic::AtomicU8::new(CONFIG_FROM_FILE),
        app_ports: settings.app_ports.clone(),
        tombstones: Mutex::new(Vec::new()),
    });

    // The admin server first: its port is never lost to a balancing, and
    // /ready answers (503) while the config loads.
    let admin = admin::bind(settings.admin)
        .with_context(|| format!("admin server on {}", settings.admin))?;
    let admin_addr = admin.local_addr()?;
    let _ = state.admin_addr.set(admin_addr);
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(
        admin,
        state.clone(),
        settings.admin_debug,
        admin_stop.clone(),
    ));

    let mut updates = None;
    match &settings.config {
        ConfigSource::Fixed(c) => {
            state
                .config_source
                .store(CONFIG_FROM_FLAGS, Ordering::Release);
            // The command-line form has no file to fix: fail at once.
            let errors = state.apply(c.clone(), &[]).await;
            if !errors.is_empty() {
                stop_all(&state).await;
                admin_stop.cancel();
                let _ = admin_task.await;
                anyhow::bail!("{}", errors.join("; "));
            }
            state.loaded.store(true, Ordering::Release);
        }
        ConfigSource::File(path) => {
            let (hash, loaded) = config_watch::load(path).await;
            state.handle(loaded).await;
            updates = Some(config_watch::watch(
                path.clone(),
                settings.config_poll_interval,
                hash,
            ));
        }
    }
    tracing::info!(admin = %admin_addr, debug_endpoints = ?settings.admin_debug, "proxy started");

    let task_state = state.clone();
    let task = tokio::spawn(async move {
        tokio::pin!(shutdown);
        loop {
            let next = async {
                match &mut updates {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let retry = async {
                if task_state.has_unbound() {
                    tokio::time::sleep(task_state.bind_retry).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            let pushed = async {
                match &mut pushed_config {
                    Some(rx) => rx.changed().await.ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => break,
                () = task_state.shutdown_requested.cancelled() => break,
                loaded = next => match loaded {
                    // The stream is trusted over the file while it is up; a
                    // file change made meanwhile is older news. The next
                    // change after the stream is lost applies.
                    Some(_) if task_state.push_config_active() => {
                        tracing::info!("config file changed; the push stream's config stays in force while connected");
                    }
                    Some(l) => {
                        task_state.config_source.store(CONFIG_FROM_FILE, Ordering::Release);
                        task_state.handle(l).await;
                    }
                    None => updates = None,
                },
                changed = pushed => match changed {
                    Some(()) => {
                        let text = pushed_config.as_mut().and_then(|rx| rx.borrow_and_update().clone());
                        if let Some(text) = text {
                            task_state.config_source.store(CONFIG_FROM_PUSH, Ordering::Release);
                            task_state.handle(parse_pushed(&text)).await;
                        }
                    }
                    None => pushed_config = None,
                },
                () = retry => task_state.retry_unbound(),
            }
        }
        tracing::info!(timeout = ?task_state.drain_timeout, "shutting down: draining calls in flight");
        task_state.draining.store(true, Ordering::Release);
        push_stop.cancel();
        stop_all(&task_state).await;
        admin_stop.cancel();
        // A scraper holding a connection open must not hold the exit.
        let _ = tokio::time::timeout(Duration::from_secs(1), admin_task).await;
        tracing::info!("proxy stopped");
    });
    Ok(RunningProxy {
        admin_addr,
        state,
        task,
    })
}

async fn stop_all(state: &AppState) {
    let all: Vec<Running> = {
        let mut all = state.lock();
        all.unbound.clear();
        state.metrics.listeners_unbound.set(0);
        std::mem::take(&mut all.running).into_values().collect()
    };
    let drains: Vec<_> = all
        .into_iter()
        .map(|r| tokio::spawn(drain(r, state.drain_timeout)))
        .collect();
    for d in drains {
        let _ = d.await;
    }
}
