//! Feeds the hub from watches of its own: every replica serves discovery,
//! while the controller's watches run on the leader only. Balancings and
//! the EndpointSlices of the managed headless Services are watched; a change
//! marks its namespace, and marked namespaces are re-rendered after a short
//! debounce (a rollout touches many slices at once) and published.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use grpc_balancer_crds::annotations::BALANCING_LABEL;
use grpc_balancer_crds::v1alpha1::GrpcBalancing;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::hub::Hub;
use super::state::namespace_state;
use crate::decode::{self, Undecodable, decode_event};
use crate::kube_util::dirty::DirtySet;
use crate::kube_util::trim;
use crate::metrics::Metrics;
use crate::settings::FeedSettings;

/// How long changes are collected before a namespace is rendered.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// How often streams whose proxies left are forgotten.
const PRUNE_INTERVAL: Duration = Duration::from_secs(30);

/// Namespaces to render, each with when its first change was seen.
#[derive(Default)]
struct Marks {
    namespaces: Mutex<HashMap<String, SystemTime>>,
    notify: Notify,
}

impl Marks {
    fn mark(&self, namespace: &str) {
        let mut marks = self.namespaces.lock().unwrap_or_else(|p| p.into_inner());
        marks
            .entry(namespace.to_owned())
            .or_insert_with(SystemTime::now);
        self.notify.notify_one();
    }

    async fn take(&self) -> HashMap<String, SystemTime> {
        loop {
            let notified = self.notify.notified();
            {
                let mut marks = self.namespaces.lock().unwrap_or_else(|p| p.into_inner());
                if !marks.is_empty() {
                    return std::mem::take(&mut *marks);
                }
            }
            notified.await;
        }
    }
}

/// Marks the namespace an event is about (all known ones after a relist).
fn on_event<K: Resource>(event: &watcher::Event<K>, marks: &Marks, hub: &Hub) {
    match event {
        watcher::Event::Apply(obj)
        | watcher::Event::Delete(obj)
        | watcher::Event::InitApply(obj) => {
            if let Some(ns) = namespace_of(obj) {
                marks.mark(ns);
            }
        }
        // A relist may have dropped objects: every namespace known is
        // looked at again.
        watcher::Event::InitDone => {
            for ns in hub.namespaces() {
                marks.mark(&ns);
            }
        }
        watcher::Event::Init => {}
    }
}

fn namespace_of<K: Resource>(obj: &K) -> Option<&str> {
    obj.meta().namespace.as_deref()
}

/// Watches until `stop`, publishing into `hub`; marks it ready once both
/// watches have listed.
pub async fn run(
    client: Client,
    settings: FeedSettings,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let ns = settings.watch_namespace.as_deref();
    let (gb_store, gb_writer) = reflector::store::<GrpcBalancing>();
    let (slice_store, slice_writer) = reflector::store::<EndpointSlice>();
    let (svc_store, svc_writer) = reflector::store::<Service>();
    let marks = Arc::new(Marks::default());
    let undecodable = Arc::new(DirtySet::<Undecodable>::default());

    let gb_api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &decode::api_resource()),
        None => Api::all_with(client.clone(), &decode::api_resource()),
    };
    let slice_api: Api<EndpointSlice> = match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let svc_api: Api<Service> = match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };

    let balancings = watcher(gb_api, watcher::Config::default())
        .default_backoff()
        .filter_map({
            let store = gb_store.clone();
            let metrics = metrics.clone();
            // The controller reports undecodable balancings; here they are
            // only left out.
            let reports = undecodable.clone();
            move |event| {
                futures::future::ready(match event {
                    Ok(event) => decode_event(event, &store, &reports, &metrics).map(Ok),
                    Err(e) => Some(Err(e)),
                })
            }
        })
        .modify(trim::balancing)
        .reflect(gb_writer);
    let slices = watcher(
        slice_api,
        watcher::Config::default().labels(BALANCING_LABEL),
    )
    .default_backoff()
    .modify(trim_slice)
    .reflect(slice_writer);
    // The Services `spec.service` names: their cluster IP and ports are
    // part of the proxy config.
    let services = watcher(svc_api, watcher::Config::default())
        .default_backoff()
        .modify(trim::service)
        .reflect(svc_writer);

    let watch_balancings = {
        let (marks, hub) = (marks.clone(), hub.clone());
        balancings.for_each(move |event| {
            match &event {
                Ok(e) => on_event(e, &marks, &hub),
                Err(e) => tracing::warn!(error = %e, "discovery: balancing watch failed; retrying"),
            }
            futures::future::ready(())
        })
    };
    let watch_slices = {
        let (marks, hub) = (marks.clone(), hub.clone());
        slices.for_each(move |event| {
            match &event {
                Ok(e) => on_event(e, &marks, &hub),
                Err(e) => {
                    tracing::warn!(error = %e, "discovery: EndpointSlice watch failed; retrying")
                }
            }
            futures::future::ready(())
        })
    };

    let watch_services = {
        let (marks, hub) = (marks.clone(), hub.clone());
        services.for_each(move |event| {
            match &event {
                Ok(e) => on_event(e, &marks, &hub),
                Err(e) => tracing::warn!(error = %e, "discovery: Service watch failed; retrying"),
            }
            futures::future::ready(())
        })
    };
    let stores = Stores {
        balancings: gb_store.clone(),
        slices: slice_store.clone(),
        services: svc_store.clone(),
    };

    let render = async {
        let _ = gb_store.wait_until_ready().await;
        let _ = slice_store.wait_until_ready().await;
        let _ = svc_store.wait_until_ready().await;
        publish(&hub, &settings, &metrics, &stores, marks.take().await);
        hub.set_ready();
        tracing::info!("discovery: watches listed; serving snapshots");
        loop {
            let batch = marks.take().await;
            tokio::time::sleep(DEBOUNCE).await;
            let mut batch = batch;
            for (ns, at) in marks.take_now() {
                batch.entry(ns).or_insert(at);
            }
            publish(&hub, &settings, &metrics, &stores, batch);
        }
    };
    let prune = async {
        let mut tick = tokio::time::interval(PRUNE_INTERVAL);
        loop {
            tick.tick().await;
            hub.prune();
        }
    };
    tokio::select! {
        () = stop.cancelled() => {}
        () = watch_balancings => tracing::error!("discovery: the balancing watch ended"),
        () = watch_slices => tracing::error!("discovery: the EndpointSlice watch ended"),
        () = watch_services => tracing::error!("discovery: the Service watch ended"),
        () = render => {}
        () = prune => {}
    }
}

impl Marks {
    fn take_now(&self) -> HashMap<String, SystemTime> {
        std::mem::take(&mut *self.namespaces.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// What the feed renders from.
struct Stores {
    balancings: Store<GrpcBalancing>,
    slices: Store<EndpointSlice>,
    services: Store<Service>,
}

fn publish(
    hub: &Hub,
    settings: &FeedSettings,
    metrics: &Metrics,
    stores: &Stores,
    batch: HashMap<String, SystemTime>,
) {
    if batch.is_empty() {
        return;
    }
    let all_balancings = stores.balancings.state();
    let all_slices = stores.slices.state();
    let all_services = stores.services.state();
    for (namespace, observed_at) in batch {
        let ns_slices: Vec<&EndpointSlice> = all_slices
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(namespace.as_str()))
            .map(|s| s.as_ref())
            .collect();
        let ns_balancings = all_balancings
            .iter()
            .filter(|b| b.metadata.namespace.as_deref() == Some(namespace.as_str()))
            .map(|b| b.as_ref());
        let ns_services: Vec<&Service> = all_services
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(namespace.as_str()))
            .map(|s| s.as_ref())
            .collect();
        match namespace_state(
            &namespace,
            ns_balancings,
            &ns_slices,
            &ns_services,
            &settings.cluster_domain,
            settings.proxy_admin_port,
        ) {
            Ok(state) => {
                if let Some(published) = hub.publish(&namespace, state, observed_at) {
                    tracing::debug!(%namespace, version = published.version, "discovery: published");
                    if published.slow_dropped > 0 {
                        tracing::warn!(%namespace, streams = published.slow_dropped, "discovery: dropped streams a full buffer behind; their proxies reconnect once they read again");
                        metrics
                            .discovery
                            .slow_streams_dropped
                            .inc_by(published.slow_dropped);
                    }
                }
            }
            Err(e) => {
                tracing::error!(%namespace, error = %e, "discovery: cannot render the proxy config")
            }
        }
    }
}

/// What discovery reads of a slice: labels, ports, and per endpoint its
/// addresses, conditions, pod and zone.
fn trim_slice(slice: &mut EndpointSlice) {
    let meta = &mut slice.metadata;
    meta.annotations = None;
    meta.managed_fields = None;
    meta.owner_references = None;
    for endpoint in &mut slice.endpoints {
        endpoint.node_name = None;
        endpoint.hints = None;
        endpoint.deprecated_topology = None;
        if let Some(target) = &mut endpoint.target_ref {
            target.uid = None;
            target.resource_version = None;
            target.api_version = None;
            target.field_path = None;
            target.namespace = None;
        }
    }
}
