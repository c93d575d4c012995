//! Wiring: sidecar mode, proxy config cache, certificate, registration and
//! the HTTPS server, for the life of the operator.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use arc_swap::ArcSwap;
use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::args::{Args, CertSource, SidecarModeArg};
use crate::cert_files::{self, CertFiles};
use crate::cert_secret::{CertSecret, MIN_RENEWAL_INTERVAL, ServingMaterial};
use crate::certs::serving_names;
use crate::http::router;
use crate::metrics::WebhookMetrics;
use crate::proxy_configs::ProxyConfigs;
use crate::registration::{self, CaBundleOutcome, LocalRegistration};
use crate::review::Reviewer;
use crate::server;
use crate::serving::Serving;
use crate::settings::SidecarMode;
use crate::tls::{ServingCert, server_config};

/// How long the first list of proxy ConfigMaps may take before the webhook
/// serves anyway (pods injected meanwhile get no env vars, and say so in logs).
const CONFIG_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Re-check of the certificate's expiry, on top of reacting to changes.
const CERT_RECHECK_INTERVAL: Duration = Duration::from_secs(6 * 3600);
/// Retry of a registration or caBundle update that failed.
const REGISTRATION_RETRY: Duration = Duration::from_secs(10);

/// Serves the webhook on `args.webhook_listen` until `shutdown` resolves;
/// `readiness` says when it answers. An error means it cannot serve at all
/// (the port is taken, no certificate): the caller must not carry on as if
/// it did.
pub async fn run(
    client: Client,
    args: Args,
    metrics: Arc<WebhookMetrics>,
    readiness: Serving,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.webhook_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.webhook_listen))?;
    run_on(client, args, listener, metrics, readiness, shutdown).await
}

/// [`run`] on a listener the caller bound (tests bind port 0).
pub async fn run_on(
    client: Client,
    args: Args,
    listener: TcpListener,
    metrics: Arc<WebhookMetrics>,
    readiness: Serving,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mode = sidecar_mode(&client, args.sidecar_mode).await?;
    let settings = Arc::new(args.proxy_settings(mode));
    let mut tasks = JoinSet::new();

    let configs = Arc::new(ProxyConfigs::new());
    let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
    tasks.spawn({
        let configs = configs.clone();
        let client = client.clone();
        async move {
            if let Err(e) = configs.watch(client, synced_tx).await {
                tracing::error!(error = %e, "proxy ConfigMap watch ended");
            }
            "the proxy ConfigMap watch"
        }
    });

    // The CA the injected proxies trust the discovery server by.
    let discovery_ca: Arc<ArcSwap<Option<String>>> = Arc::default();
    let serving = match args.webhook_cert_source {
        CertSource::SelfSigned => {
            let names = serving_names(
                &args.webhook_service,
                &args.webhook_namespace,
                &url_host(args.webhook_url.as_deref())
                    .into_iter()
                    .collect::<Vec<_>>(),
            );
            if args.webhook_url.is_some() {
                ensure_namespace(&client, &args.webhook_namespace).await?;
            }
            let secret = CertSecret::new(
                client.clone(),
                &args.webhook_namespace,
                &args.webhook_cert_secret,
                names,
            );
            let material = secret.ensure().await.context("webhook certificate")?;
            let serving = Arc::new(ServingCert::new(material.key.clone()));
            let (ca_tx, ca_rx) = watch::channel(material.ca_bundle.clone());
            discovery_ca.store(Arc::new(Some(material.ca_bundle.clone())));
            tasks.spawn(named("the discovery CA follower", {
                let mut ca_rx = ca_rx.clone();
                let discovery_ca = discovery_ca.clone();
                async move {
                    while ca_rx.changed().await.is_ok() {
                        let bundle = ca_rx.borrow_and_update().clone();
                        discovery_ca.store(Arc::new(Some(bundle)));
                    }
                }
            }));
            tasks.spawn(named(
                "the certificate Secret watch",
                follow_secret(secret, serving.clone(), ca_tx),
            ));
            tasks.spawn(named(
                "the webhook registration",
                keep_registered(client.clone(), args.clone(), ca_rx),
            ));
            serving
        }
        CertSource::CertManager => {
            let dir = args.webhook_cert_dir.clone();
            let files = wait_for_files(&dir).await?;
            // cert-manager writes the issuing CA next to the certificate.
            match tokio::fs::read_to_string(dir.join("ca.crt")).await {
                Ok(ca) if !ca.trim().is_empty() => discovery_ca.store(Arc::new(Some(ca))),
                _ => {
                    tracing::warn!(dir = %dir.display(), "no ca.crt next to the certificate: injected proxies get no push discovery")
                }
            }
            let key = files.certified_key(&dir)?;
            let serving = Arc::new(ServingCert::new(key));
            tasks.spawn(named(
                "the certificate files watch",
                cert_files::follow(dir, files, serving.clone(), cert_files::POLL_INTERVAL),
            ));
            serving
        }
    };

    match tokio::time::timeout(CONFIG_SYNC_TIMEOUT, synced_rx).await {
        Ok(Ok(())) => tracing::debug!("proxy ConfigMaps listed"),
        _ => tracing::warn!(
            "proxy ConfigMaps not listed yet; serving without their env vars for now"
        ),
    }

    readiness.set_cert(serving.clone());
    let tls = Arc::new(server_config(serving)?);
    let reviewer = Arc::new(Reviewer {
        settings,
        configs,
        discovery_ca,
    });
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        ?mode,
        local_url = args.webhook_url.as_deref().unwrap_or(""),
        "admission webhook serving"
    );
    let served = server::serve(
        listener,
        tls,
        router(reviewer, metrics.clone()),
        metrics,
        readiness.clone(),
        shutdown,
    );
    // Each task runs for the life of the webhook; one that ends leaves it
    // serving stale configs or certificates, so it ends the webhook too.
    let ended = tokio::select! {
        () = served => None,
        Some(ended) = tasks.join_next() => Some(ended),
    };
    readiness.set(false);
    tasks.abort_all();
    match ended {
        None => Ok(()),
        Some(Ok(task)) => Err(anyhow::anyhow!("{task} ended; the webhook stops")),
        Some(Err(e)) => Err(anyhow::anyhow!("a webhook task failed: {e}")),
    }
}

/// A task of the webhook that says what it was when it ends.
async fn named(name: &'static str, task: impl Future<Output = ()>) -> &'static str {
    task.await;
    name
}

/// The sidecar mode the flags ask for, or the one the apiserver's version allows.
pub async fn sidecar_mode(client: &Client, arg: SidecarModeArg) -> anyhow::Result<SidecarMode> {
    match arg {
        SidecarModeArg::Native => Ok(SidecarMode::Native),
        SidecarModeArg::Legacy => Ok(SidecarMode::Legacy),
        SidecarModeArg::Auto => {
            let info = client
                .apiserver_version()
                .await
                .context("reading the apiserver's /version to choose the sidecar mode")?;
            let number = |s: &str| -> u32 {
                s.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .unwrap_or(0)
            };
            let mode = SidecarMode::for_server_version(number(&info.major), number(&info.minor));
            tracing::info!(version = %info.git_version, ?mode, "sidecar mode from the apiserver version");
            Ok(mode)
        }
    }
}

fn url_host(url: Option<&str>) -> Option<String> {
    let uri: http::Uri = url?.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    Some(host.to_owned())
}

/// Local mode keeps its Secret in a namespace that may not exist yet.
async fn ensure_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await?.is_some() {
        return Ok(());
    }
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.to_owned());
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating namespace {name}")),
    }
}

async fn wait_for_files(dir: &std::path::Path) -> anyhow::Result<CertFiles> {
    // The kubelet may mount the Secret a moment after cert-manager issues it.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match CertFiles::read(dir).await {
            Ok(files) => return Ok(files),
            Err(e) if Instant::now() >= deadline => return Err(e.into()),
            Err(e) => {
                tracing::info!(error = %e, "waiting for the cert-manager certificate files");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Follows the certificate Secret: serves what it holds, and writes a new
/// certificate when it is emptied, deleted or close to expiry.
async fn follow_secret(
    secret: CertSecret,
    serving: Arc<ServingCert>,
    ca_tx: watch::Sender<String>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={}", secret.name()));
    let mut events = watcher(secret.api().clone(), config)
        .default_backoff()
        .boxed();
    let mut recheck = tokio::time::interval(CERT_RECHECK_INTERVAL);
    recheck.tick().await;
    let mut last_renewal: Option<Instant> = None;
    let mut seen_in_list = false;
    loop {
        let needs_ensure = tokio::select! {
            _ = recheck.tick() => true,
            event = events.next() => match event {
                None => return,
                Some(Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s))) => {
                    seen_in_list = true;
                    match secret.usable(&s, SystemTime::now()) {
                        Some(material) => {
                            publish(&serving, &ca_tx, material, &s.name_any());
                            false
                        }
                        None => true,
                    }
                }
                Some(Ok(watcher::Event::Delete(_))) => true,
                Some(Ok(watcher::Event::Init)) => { seen_in_list = false; false }
                Some(Ok(watcher::Event::InitDone)) => !seen_in_list,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watch of the certificate Secret failed");
                    false
                }
            },
        };
        if !needs_ensure {
            continue;
        }
        if let Some(at) = last_renewal {
            let since = at.elapsed();
            if since < MIN_RENEWAL_INTERVAL {
                tokio::time::sleep(MIN_RENEWAL_INTERVAL - since).await;
            }
        }
        last_renewal = Some(Instant::now());
        match secret.ensure().await {
            Ok(material) => publish(&serving, &ca_tx, material, secret.name()),
            Err(e) => tracing::error!(error = %e, "could not restore the webhook certificate"),
        }
    }
}

fn publish(
    serving: &ServingCert,
    ca_tx: &watch::Sender<String>,
    material: ServingMaterial,
    secret: &str,
) {
    let same_cert = serving.current().cert == material.key.cert;
    serving.replace(material.key);
    ca_tx.send_if_modified(|ca| {
        if *ca == material.ca_bundle {
            false
        } else {
            *ca = material.ca_bundle;
            true
        }
    });
    if !same_cert {
        tracing::info!(secret, "serving the certificate from the Secret");
    }
}

/// Keeps the MutatingWebhookConfiguration pointing at this webhook with the
/// current CA: applied whole in local mode, only `caBundle` in-cluster. Also
/// reacts to changes of the configuration itself (a `helm upgrade` resets
/// `caBundle` to the chart's empty value).
async fn keep_registered(client: Client, args: Args, mut ca_rx: watch::Receiver<String>) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let local = args.webhook_url.clone().map(|url| LocalRegistration {
        configuration_name: args.webhook_configuration.clone(),
        url,
        failure_policy: args.webhook_failure_policy,
        timeout_seconds: args.webhook_timeout_seconds,
        namespace_label: args.webhook_namespace_selector.clone(),
    });
    let config =
        watcher::Config::default().fields(&format!("metadata.name={}", args.webhook_configuration));
    let mut events = watcher(api.clone(), config).default_backoff().boxed();
    let mut retry_after: Option<Instant> = Some(Instant::now());
    loop {
        let ca = ca_rx.borrow_and_update().clone();
        if retry_after.is_some_and(|at| Instant::now() >= at) {
            let result = match &local {
                Some(local) => local.apply(&api, &ca).await.map(|()| {
                    tracing::info!(name = %local.configuration_name, url = %local.url, "MutatingWebhookConfiguration applied");
                }),
                None => registration::ensure_ca_bundle(&api, &args.webhook_configuration, &ca)
                    .await
                    .map(|outcome| match outcome {
                        CaBundleOutcome::Updated(n) => tracing::info!(name = %args.webhook_configuration, webhooks = n, "caBundle updated"),
                        CaBundleOutcome::NoConfiguration => tracing::warn!(name = %args.webhook_configuration, "MutatingWebhookConfiguration not found; caBundle not set"),
                        CaBundleOutcome::Unchanged => {}
                    }),
            };
            retry_after = match result {
                Ok(()) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "could not register the webhook; retrying");
                    Some(Instant::now() + REGISTRATION_RETRY)
                }
            };
        }
        let sleep_for = retry_after.map(|at| at.saturating_duration_since(Instant::now()));
        tokio::select! {
            changed = ca_rx.changed() => {
                if changed.is_err() { return; }
                retry_after = Some(Instant::now());
            }
            event = events.next() => match event {
                None => return,
                Some(Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone)) => {
                    retry_after = Some(Instant::now());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::debug!(error = %e, "watch of the MutatingWebhookConfiguration failed"),
            },
            () = sleep_or_forever(sleep_for) => {}
        }
    }
}

async fn sleep_or_forever(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
