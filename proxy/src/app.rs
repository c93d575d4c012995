//! Wires the proxy together and owns the running balancings.
//!
//! On a config change, balancings whose config is unchanged keep their
//! listener and connections untouched; changed ones get a new runtime that
//! is swapped in (ArcSwap) once it can serve, while calls in flight finish on
//! the old one; removed ones stop accepting and drain.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use grpc_balancer_crds::config::{self, ProxyConfig};
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::balancing::Balancing;
use crate::config_watch::{self, Loaded};
use crate::discovery::{Discover, SystemDiscover};
use crate::metrics::{Metrics, ResultLabels};
use crate::transport::client::ConnectSettings;
use crate::transport::server;

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
    pub admin: SocketAddr,
    /// Replaces the nameservers of /etc/resolv.conf.
    pub dns_server: Option<SocketAddr>,
    pub drain_timeout: Duration,
    pub config_poll_interval: Duration,
    pub connect: ConnectSettings,
    /// How long a reloaded balancing may take to connect before it is swapped in.
    pub warm_up: Duration,
    /// Overrides discovery (tests, or a push source).
    pub discover: Option<Arc<dyn Discover>>,
}

impl Settings {
    pub fn new(config: ConfigSource) -> Self {
        Settings {
            config,
            admin: SocketAddr::from(([127, 0, 0, 1], config::DEFAULT_ADMIN_PORT)),
            dns_server: None,
            drain_timeout: Duration::from_secs(30),
            config_poll_interval: Duration::from_secs(1),
            connect: ConnectSettings::default(),
            warm_up: Duration::from_secs(2),
            discover: None,
        }
    }
}

struct Running {
    config: config::Balancing,
    addr: SocketAddr,
    current: Arc<ArcSwap<Balancing>>,
    stop: CancellationToken,
    server: JoinHandle<()>,
}

/// State the admin server reads.
pub struct AppState {
    running: Mutex<BTreeMap<String, Running>>,
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
}

impl AppState {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current runtime of every balancing, by name.
    pub fn balancings(&self) -> Vec<(SocketAddr, Arc<Balancing>)> {
        self.lock()
            .values()
            .map(|r| (r.addr, r.current.load_full()))
            .collect()
    }

    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.lock().get(name).map(|r| r.addr)
    }

    /// Applies a config. Listeners that cannot be bound are reported and
    /// skipped; everything else applies.
    async fn apply(&self, new: ProxyConfig) -> Vec<String> {
        let mut errors = Vec::new();
        let wanted: BTreeMap<&str, &config::Balancing> = new
            .balancings
            .iter()
            .map(|b| (b.name.as_str(), b))
            .collect();

        // Removed, or moved to another address: stop accepting and drain.
        let gone: Vec<Running> = {
            let mut running = self.lock();
            let names: Vec<String> = running
                .iter()
                .filter(|(name, r)| {
                    wanted
                        .get(name.as_str())
                        .is_none_or(|b| b.listen != r.config.listen)
                })
                .map(|(name, _)| name.clone())
                .collect();
            names
                .into_iter()
                .filter_map(|n| running.remove(&n))
                .collect()
        };
        for r in gone {
            tracing::info!(balancing = %r.config.name, "balancing removed; draining");
            tokio::spawn(drain(r, self.drain_timeout));
        }

        for b in &new.balancings {
            let existing = self
                .lock()
                .get(&b.name)
                .map(|r| (r.config.clone(), r.current.clone()));
            match existing {
                Some((old, _)) if old == *b => {}
                Some((_, current)) => {
                    let fresh = Balancing::start(b, &self.discover, &self.metrics, self.connect);
                    fresh.warm_up(self.warm_up).await;
                    let old = current.swap(fresh);
                    old.stop();
                    if let Some(r) = self.lock().get_mut(&b.name) {
                        r.config = b.clone();
                    }
                    tracing::info!(balancing = %b.name, "balancing updated");
                }
                None => match self.start_listener(b).await {
                    Ok(r) => {
                        tracing::info!(balancing = %b.name, listen = %r.addr, policy = %b.policy.kind, "balancing started");
                        self.lock().insert(b.name.clone(), r);
                    }
                    Err(e) => {
                        tracing::error!(balancing = %b.name, error = %e, "balancing not started");
                        errors.push(format!("balancing {}: {e:#}", b.name));
                    }
                },
            }
        }
        self.config.store(Arc::new(new));
        errors
    }

    async fn start_listener(&self, b: &config::Balancing) -> anyhow::Result<Running> {
        let addr: SocketAddr = b.listen.parse().context("listen address")?;
        let listener = server::bind(addr).await?;
        let addr = listener.local_addr()?;
        let runtime = Balancing::start(b, &self.discover, &self.metrics, self.connect);
        let current = Arc::new(ArcSwap::new(runtime));
        let stop = CancellationToken::new();
        let server = tokio::spawn(server::serve(listener, current.clone(), stop.clone()));
        Ok(Running {
            config: b.clone(),
            addr,
            current,
            stop,
            server,
        })
    }

    fn count_reload(&self, result: &str) {
        self.metrics
            .config_reloads
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    async fn handle(&self, loaded: Loaded) {
        match loaded {
            Loaded::Config(c) => {
                let errors = self.apply(c).await;
                self.loaded.store(true, Ordering::Release);
                self.count_reload(if errors.is_empty() {
                    "applied"
                } else {
                    "partial"
                });
                tracing::info!(balancings = self.lock().len(), "config applied");
            }
            Loaded::Missing => {
                tracing::info!("no config file yet; running with no balancings");
                self.loaded.store(true, Ordering::Release);
                self.count_reload("missing");
            }
            Loaded::Failed(e) => {
                self.count_reload("invalid");
                tracing::error!(error = %e, "config not applied; keeping the last good config");
            }
        }
    }
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
    pub state: Arc<AppState>,
    task: JoinHandle<()>,
}

impl RunningProxy {
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
    let discover = settings
        .discover
        .clone()
        .unwrap_or_else(|| Arc::new(SystemDiscover::new(settings.dns_server)));
    let state = Arc::new(AppState {
        running: Mutex::new(BTreeMap::new()),
        config: ArcSwap::from_pointee(ProxyConfig::default()),
        loaded: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        metrics,
        registry,
        discover,
        connect: settings.connect,
        drain_timeout: settings.drain_timeout,
        warm_up: settings.warm_up,
    });

    let mut updates = None;
    match &settings.config {
        ConfigSource::Fixed(c) => {
            let errors = state.apply(c.clone()).await;
            if !errors.is_empty() {
                anyhow::bail!("{}", errors.join("; "));
            }
            state.loaded.store(true, Ordering::Release);
        }
        ConfigSource::File(path) => {
            let (hash, loaded) = config_watch::load(path).await;
            if let Loaded::Config(c) = &loaded {
                let errors = state.apply(c.clone()).await;
                if !errors.is_empty() {
                    stop_all(&state).await;
                    anyhow::bail!("{}", errors.join("; "));
                }
                state.loaded.store(true, Ordering::Release);
                state.count_reload("applied");
            } else {
                state.handle(loaded).await;
            }
            updates = Some(config_watch::watch(
                path.clone(),
                settings.config_poll_interval,
                hash,
            ));
        }
    }

    let admin = crate::admin::bind(settings.admin)
        .await
        .with_context(|| format!("admin server on {}", settings.admin))?;
    let admin_addr = admin.local_addr()?;
    let admin_stop = CancellationToken::new();
    tokio::spawn(crate::admin::serve(
        admin,
        state.clone(),
        admin_stop.clone(),
    ));
    tracing::info!(admin = %admin_addr, "proxy started");

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
            tokio::select! {
                () = &mut shutdown => break,
                loaded = next => match loaded {
                    Some(l) => task_state.handle(l).await,
                    None => updates = None,
                },
            }
        }
        tracing::info!(timeout = ?task_state.drain_timeout, "shutting down: draining calls in flight");
        task_state.draining.store(true, Ordering::Release);
        stop_all(&task_state).await;
        admin_stop.cancel();
        tracing::info!("proxy stopped");
    });
    Ok(RunningProxy {
        admin_addr,
        state,
        task,
    })
}

async fn stop_all(state: &AppState) {
    let all: Vec<Running> = std::mem::take(&mut *state.lock()).into_values().collect();
    let drains: Vec<_> = all
        .into_iter()
        .map(|r| tokio::spawn(drain(r, state.drain_timeout)))
        .collect();
    for d in drains {
        let _ = d.await;
    }
}
