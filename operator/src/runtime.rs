//! Starts and stops everything the operator runs, and wires the watches to
//! what they trigger: every replica takes part in the leader election and
//! serves the probes; the leader, for its term, runs the watches, the
//! controller, the ConfigMap renderer and the report of undecodable
//! balancings. A server the leader alone should run (a discovery server)
//! starts here, in the same term, so that it stops with the rest.
//!
//! Each kind is watched once, into a reflector store the reconcilers read
//! (no API reads while reconciling), and the watch streams are fanned out:
//! - balancings: trigger their own reconcile, mark their namespace's
//!   ConfigMap dirty, and re-trigger the balancings that share their
//!   listener port (a deleted older one hands the port to a newer one);
//! - Services: trigger their owner (the managed ones), or the balancings
//!   naming them in `spec.service`, and mark their ConfigMap dirty;
//! - EndpointSlices of those Services (they carry the Service's labels):
//!   trigger the balancing named by the label, and mark the ConfigMap dirty
//!   (a named port may have been resolved);
//! - pods, metadata only: an annotated pod triggers the balancings of its
//!   namespace (their status lists pods without the proxy).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use grpc_balancer_crds::annotations::BALANCING_LABEL;
use grpc_balancer_crds::v1alpha1::GrpcBalancing;
use grpc_balancer_webhook::tls::server_config;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::context::{Context, Stores, asks_for_injection, contends_with, may_share_services};
use crate::controller;
use crate::decode::{self, Undecodable, decode_event};
use crate::discovery::Discovery;
use crate::http;
use crate::kube_util::dirty::DirtySet;
use crate::kube_util::scoped_api;
use crate::kube_util::trim;
use crate::kube_util::until_stopped::{drain_until, until_stopped};
use crate::leader::LeaderElector;
use crate::names::{CONTROLLER_NAME, managed_by_selector};
use crate::settings::Settings;

/// How long reconciles in flight may run on after the controllers are told
/// to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Reconciles in flight at once: a burst of thousands of changes must not
/// start thousands of them together. Measured on 1,000 balancings, 64
/// converged in 15 s at 39 MiB peak RSS; 256 converged in 4.5 s at 52 MiB
/// but starved the apiserver's other requests (list and watch calls timed
/// out, and an operator started during the burst made no progress).
const RECONCILE_CONCURRENCY: u16 = 64;

/// Runs the operator until `shutdown` resolves: every replica takes part in
/// the election and serves the probes; the leader also runs the
/// controllers. On shutdown the controllers finish their reconciles, then a
/// held Lease is released so a standby takes over at once.
pub async fn run(
    client: kube::Client,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Everything runs inside this one future (joined, never spawned), so
    // dropping it stops all of it: that is what a crash looks like to the
    // other replicas, and what the hand-over test relies on.
    let stop = CancellationToken::new();
    let metrics = settings.metrics.clone();
    let (leading_tx, mut leading) = watch::channel(false);
    let (reachable_tx, reachable) = watch::channel(false);

    let server = match settings.metrics_listen {
        Some(addr) => {
            let (local, server) = http::bind(
                addr,
                metrics.clone(),
                reachable,
                settings.webhook.clone(),
                stop.clone(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for metrics: {e}"))?;
            tracing::info!(%local, "serving /metrics, /healthz and /readyz");
            Some(server)
        }
        None => None,
    };
    let server = async move {
        if let Some(server) = server
            && let Err(e) = server.await
        {
            tracing::warn!(error = %e, "metrics server failed");
        }
    };

    let discovery = match settings.discovery.clone() {
        Some(discovery) => {
            let bound = Discovery::bind(
                discovery.listen,
                discovery.epoch.clone(),
                discovery.stream_buffer,
            )
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot listen on {} for discovery: {e}", discovery.listen)
            })?;
            Some((bound, discovery))
        }
        None => None,
    };
    // Every replica serves discovery, leader or not, with the webhook's
    // certificate (plaintext only without a webhook: the controller tests).
    let discovery = {
        let client = client.clone();
        let webhook = settings.webhook.clone();
        let metrics = metrics.clone();
        let stop = stop.clone();
        async move {
            let Some((bound, discovery)) = discovery else {
                return;
            };
            let tls = match webhook {
                None => None,
                Some(webhook) => {
                    let cert = tokio::select! {
                        () = stop.cancelled() => return,
                        cert = webhook.serving_cert() => cert,
                    };
                    match cert.map(server_config) {
                        Some(Ok(config)) => Some(Arc::new(config)),
                        Some(Err(e)) => {
                            tracing::error!(error = %e, "discovery: TLS settings refused; stopping");
                            stop.cancel();
                            return;
                        }
                        None => return,
                    }
                }
            };
            if let Err(e) = bound
                .run(client, discovery, tls, metrics, stop.clone())
                .await
            {
                tracing::error!(
                    error = format!("{e:#}"),
                    "discovery server failed; stopping"
                );
                stop.cancel();
            }
        }
    };

    let shutdown_watch = {
        let stop = stop.clone();
        async move {
            tokio::select! {
                () = shutdown => stop.cancel(),
                () = stop.cancelled() => {}
            }
        }
    };

    let elector = LeaderElector::new(client.clone(), settings.leader.clone()).run(
        leading_tx,
        reachable_tx,
        stop.clone(),
    );

    let terms = async {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                changed = leading.wait_for(|l| *l) => if changed.is_err() { break },
            }
            metrics.leader.set(1);
            let term = stop.child_token();
            let controllers = run_controllers(client.clone(), settings.clone(), term.clone());
            let end_of_term = async {
                // Biased: on shutdown the elector also reports "not leading";
                // that is not a lost leadership.
                tokio::select! {
                    biased;
                    () = stop.cancelled() => {}
                    _ = leading.wait_for(|l| !*l) => tracing::warn!("leadership lost; stopping the controllers"),
                }
                term.cancel();
            };
            let mut controllers = std::pin::pin!(controllers);
            tokio::select! {
                () = &mut controllers => {}
                () = end_of_term => {
                    // The controllers stop by themselves once their reconciles
                    // in flight are done. The grace period is a last resort
                    // against a reconcile stuck in an API call: it must not
                    // keep the process (and the Lease) hanging.
                    if tokio::time::timeout(SHUTDOWN_GRACE, &mut controllers).await.is_err() {
                        metrics.forced_stops.inc();
                        tracing::error!(grace = ?SHUTDOWN_GRACE, "controllers did not stop within the grace period; dropping them");
                    }
                }
            }
            metrics.leader.set(0);
        }
        stop.cancel();
    };

    tokio::join!(shutdown_watch, elector, terms, server, discovery);
    LeaderElector::release(client, &settings.leader).await;
    Ok(())
}

/// The watch streams, started together, and the stores they fill.
struct Watches<GS, SS, ES, PS, CS> {
    balancings: GS,
    services: SS,
    slices: ES,
    pods: PS,
    config_maps: CS,
}

/// Runs the controller, the ConfigMap renderer and the report of
/// undecodable balancings until `stop` (leadership lost or shutdown).
/// Reconciles in flight finish first.
async fn run_controllers(client: Client, settings: Settings, stop: CancellationToken) {
    let ns = settings.watch_namespace.as_deref();
    let config_dirty = Arc::new(DirtySet::<String>::default());
    let siblings = Arc::new(DirtySet::<ObjectRef<GrpcBalancing>>::default());

    let (gb_store, gb_writer) = reflector::store();
    let (svc_store, svc_writer) = reflector::store();
    let (slice_store, slice_writer) = reflector::store();
    let (pod_store, pod_writer) = reflector::store();
    let (cm_store, cm_writer) = reflector::store();

    let managed = watcher::Config::default().labels(&managed_by_selector());
    let undecodable = Arc::new(DirtySet::<Undecodable>::default());
    let gb_api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &decode::api_resource()),
        None => Api::all_with(client.clone(), &decode::api_resource()),
    };
    let watches = Watches {
        // Untyped, decoded one object at a time (see `decode`).
        balancings: watcher(gb_api, watcher::Config::default())
            .default_backoff()
            .filter_map({
                let store = gb_store.clone();
                let reports = undecodable.clone();
                let metrics = settings.metrics.clone();
                move |event| {
                    futures::future::ready(match event {
                        Ok(event) => decode_event(event, &store, &reports, &metrics).map(Ok),
                        Err(e) => Some(Err(e)),
                    })
                }
            })
            .modify(trim::balancing)
            .reflect(gb_writer)
            .touched_objects(),
        // Every Service, not only the managed ones: `spec.service` names
        // the users' own.
        services: watcher(
            scoped_api::<Service>(&client, ns),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(trim::service)
        .reflect(svc_writer)
        .touched_objects(),
        slices: watcher(
            scoped_api::<EndpointSlice>(&client, ns),
            watcher::Config::default().labels(BALANCING_LABEL),
        )
        .default_backoff()
        .modify(trim::endpoint_slice)
        .reflect(slice_writer)
        .touched_objects(),
        // Metadata only: `Api<PartialObjectMeta<_>>` asks the API server for
        // metadata alone (no spec or status); the annotations are all it needs.
        pods: watcher(
            scoped_api::<PartialObjectMeta<Pod>>(&client, ns),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(trim::pod)
        .reflect(pod_writer)
        .touched_objects(),
        config_maps: watcher(
            scoped_api::<ConfigMap>(&client, ns),
            managed.fields(&format!(
                "metadata.name={}",
                grpc_balancer_crds::config::CONFIG_MAP_NAME
            )),
        )
        .default_backoff()
        .modify(trim::config_map)
        .reflect(cm_writer)
        .touched_objects(),
    };

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: CONTROLLER_NAME.into(),
            instance: Some(settings.leader.identity.clone()),
        },
    );
    let ctx = Arc::new(
        Context::new(
            client,
            settings.cluster_domain.clone(),
            settings.metrics.clone(),
            recorder,
            Stores {
                balancings: gb_store.clone(),
                services: svc_store,
                slices: slice_store,
                pods: pod_store,
                config_maps: cm_store,
            },
            config_dirty.clone(),
        )
        .with_proxy_admin_port(settings.proxy_admin_port),
    );

    let balancings = until_stopped(watches.balancings, stop.clone()).inspect({
        let dirty = config_dirty.clone();
        let siblings = siblings.clone();
        let store = gb_store.clone();
        move |event| {
            if let Ok(gb) = event {
                on_balancing_event(gb, &store, &dirty, &siblings);
            }
        }
    });
    let slices = until_stopped(watches.slices, stop.clone()).inspect({
        let dirty = config_dirty.clone();
        move |event| {
            if let Ok(slice) = event
                && let Some(ns) = &slice.metadata.namespace
            {
                dirty.mark(ns.clone());
            }
        }
    });
    // A Service some balancing names: its cluster IP and ports are in the
    // proxy config, and whether it exists is in the balancing's status.
    let services = until_stopped(watches.services, stop.clone()).inspect({
        let dirty = config_dirty.clone();
        let siblings = siblings.clone();
        let store = gb_store.clone();
        move |event| {
            if let Ok(svc) = event {
                on_service_event(svc, &store, &dirty, &siblings);
            }
        }
    });
    let config_maps = until_stopped(watches.config_maps, stop.clone()).inspect({
        let dirty = config_dirty.clone();
        move |event| {
            if let Ok(cm) = event
                && let Some(ns) = &cm.metadata.namespace
            {
                dirty.mark(ns.clone());
            }
        }
    });

    let pods_mapper = {
        let store = gb_store.clone();
        move |pod: PartialObjectMeta<Pod>| -> Vec<ObjectRef<GrpcBalancing>> {
            if !asks_for_injection(&pod) {
                return Vec::new();
            }
            let ns = pod.metadata.namespace.clone();
            store
                .state()
                .iter()
                .filter(|gb| gb.metadata.namespace == ns)
                .map(|gb| ObjectRef::from_obj(gb.as_ref()))
                .collect()
        }
    };

    let controller = Controller::for_stream(balancings, gb_store)
        .with_config(
            kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY),
        )
        .owns_stream(services)
        .watches_stream(slices, |slice: EndpointSlice| {
            let name = slice.labels().get(BALANCING_LABEL).cloned();
            let ns = slice.metadata.namespace.clone();
            name.zip(ns)
                .map(|(name, ns)| ObjectRef::new(&name).within(&ns))
        })
        .watches_stream(until_stopped(watches.pods, stop.clone()), pods_mapper)
        .reconcile_on(until_stopped(siblings.stream(), stop.clone()))
        // No `graceful_shutdown_on`: every trigger stream above ends on
        // `stop` by itself and drops its reflector writer (see
        // `until_stopped`); the controller then finishes the reconciles in
        // flight and ends.
        .run(controller::reconcile, controller::error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile not run");
            }
        });

    let renderer = crate::config_map::run(ctx.clone(), stop.clone());
    let reporter = decode::report(ctx.client.clone(), undecodable, stop.clone());
    let config_map_watch = drain_until(config_maps, stop.clone());
    tokio::join!(controller, renderer, config_map_watch, reporter);
}

fn on_balancing_event(
    gb: &GrpcBalancing,
    store: &Store<GrpcBalancing>,
    config_dirty: &DirtySet<String>,
    siblings: &DirtySet<ObjectRef<GrpcBalancing>>,
) {
    let Some(ns) = gb.metadata.namespace.as_deref() else {
        return;
    };
    config_dirty.mark(ns.to_owned());
    let name = gb.metadata.name.as_deref().unwrap_or_default();
    for other in store.state() {
        if other.metadata.namespace.as_deref() == Some(ns)
            && (contends_with(&other, gb) || may_share_services(&other, name))
            && other.metadata.name != gb.metadata.name
        {
            siblings.mark(ObjectRef::from_obj(other.as_ref()));
        }
    }
}

fn on_service_event(
    svc: &Service,
    store: &Store<GrpcBalancing>,
    config_dirty: &DirtySet<String>,
    siblings: &DirtySet<ObjectRef<GrpcBalancing>>,
) {
    let Some(ns) = svc.metadata.namespace.as_deref() else {
        return;
    };
    let mut named = false;
    for gb in store.state() {
        if gb.metadata.namespace.as_deref() == Some(ns)
            && gb.spec.service.is_some()
            && gb.spec.service == svc.metadata.name
        {
            named = true;
            siblings.mark(ObjectRef::from_obj(gb.as_ref()));
        }
    }
    if named {
        config_dirty.mark(ns.to_owned());
    }
}
