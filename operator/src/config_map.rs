//! The proxy ConfigMap of each namespace, keyed by namespace.
//!
//! Why a separate loop rather than one more child of each balancing: the
//! ConfigMap is a function of every balancing of the namespace, so a
//! per-balancing reconcile would rewrite it once per balancing (a burst of
//! N applies grows it N times: O(N²) bytes written). Here, changes only mark
//! the namespace dirty; marks are deduplicated and a short debounce folds a
//! burst into one render, and the ConfigMap is written only when its
//! content differs from the stored one.
//!
//! The ConfigMap has no owner: it belongs to all balancings of the
//! namespace. Owner references to each of them would make every add and
//! remove a metadata rewrite of a list that grows with the namespace;
//! instead this loop deletes the ConfigMap when the last balancing is gone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpc_balancer_crds::annotations::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use grpc_balancer_crds::config::{CONFIG_MAP_KEY, CONFIG_MAP_NAME, to_yaml};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use tokio_util::sync::CancellationToken;

use crate::backoff::Failures;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::metrics::CONFIG_MAP_CONTROLLER;
use crate::names::FIELD_MANAGER;
use crate::render::NamespaceView;

/// How long a burst of changes is collected before rendering.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Renders dirty namespaces until `stop`.
pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    tokio::select! {
        () = stop.cancelled() => return,
        () = ctx.wait_ready() => {}
    }
    let failures = Failures::<String>::default();
    loop {
        let first = tokio::select! {
            () = stop.cancelled() => return,
            batch = ctx.config_dirty.take() => batch,
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(DEBOUNCE) => {}
        }
        let mut namespaces = first;
        namespaces.extend(ctx.config_dirty.try_take());
        namespaces.sort();
        namespaces.dedup();
        for ns in namespaces {
            let started = Instant::now();
            let result = sync_namespace(&ctx, &ns).await;
            ctx.metrics.observe(
                CONFIG_MAP_CONTROLLER,
                started.elapsed(),
                result.as_ref().err().map(Error::metric_label),
            );
            match result {
                Ok(()) => failures.succeeded(&ns),
                Err(e) => {
                    let delay = failures.failed(ns.clone());
                    tracing::warn!(namespace = %ns, error = %e, retry_in = ?delay, "proxy ConfigMap sync failed");
                    let dirty = ctx.config_dirty.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            () = stop.cancelled() => {}
                            () = tokio::time::sleep(delay) => dirty.mark(ns),
                        }
                    });
                }
            }
        }
    }
}

/// The ConfigMap a namespace should have; `None` when it has no balancing.
pub fn desired_config_map(ctx: &Context, namespace: &str) -> Result<Option<ConfigMap>> {
    let balancings = ctx.balancings_in(namespace);
    let endpoints = ctx.endpoints_in(namespace);
    let services = ctx.services_in(namespace);
    let view = NamespaceView::new(
        balancings.iter().map(|b| b.as_ref()),
        &endpoints,
        &ctx.cluster_domain,
    )
    .with_proxy_admin_port(ctx.proxy_admin_port)
    .with_services(services.iter().map(|s| s.as_ref()));
    if view.is_empty() {
        return Ok(None);
    }
    let text = to_yaml(&view.proxy_config()).map_err(Error::RenderConfig)?;
    Ok(Some(ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIG_MAP_NAME.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_owned(),
                MANAGED_BY_VALUE.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(CONFIG_MAP_KEY.to_owned(), text)])),
        ..ConfigMap::default()
    }))
}

async fn sync_namespace(ctx: &Context, namespace: &str) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    let existing = ctx
        .config_maps
        .get(&ObjectRef::new(CONFIG_MAP_NAME).within(namespace));
    match desired_config_map(ctx, namespace)? {
        None => {
            if existing.is_some() {
                match api.delete(CONFIG_MAP_NAME, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(source) => {
                        return Err(Error::DeleteConfigMap {
                            namespace: namespace.into(),
                            source,
                        });
                    }
                }
                tracing::info!(
                    namespace,
                    "deleted the proxy ConfigMap: no GrpcBalancing left"
                );
            }
        }
        Some(desired) => {
            let up_to_date = existing.as_deref().is_some_and(|cm| {
                cm.data.as_ref().and_then(|d| d.get(CONFIG_MAP_KEY))
                    == desired.data.as_ref().and_then(|d| d.get(CONFIG_MAP_KEY))
                    && cm
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(MANAGED_BY_LABEL))
                        == Some(&MANAGED_BY_VALUE.to_owned())
            });
            if !up_to_date {
                api.patch(
                    CONFIG_MAP_NAME,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&desired),
                )
                .await
                .map_err(|source| Error::ApplyConfigMap {
                    namespace: namespace.into(),
                    source,
                })?;
                tracing::info!(namespace, "applied the proxy ConfigMap");
            }
        }
    }
    Ok(())
}
