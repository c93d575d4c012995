//! The `GrpcBalancing` reconcile: one balancing's headless Services and
//! its status, judged from the stores of the [`Context`], and the error
//! policy that spaces out its retries. What triggers it is wired in
//! [`crate::runtime`]; the namespace's proxy ConfigMap is rendered by
//! [`crate::config_map`] from the same stores.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpc_balancer_crds::annotations::BALANCING_LABEL;
use grpc_balancer_crds::v1alpha1::{
    ConditionReason, GrpcBalancing, GrpcBalancingStatus, READY_CONDITION,
};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt as _};
use serde_json::json;

use crate::context::{Context, contends_with, may_share_services};
use crate::error::{Error, Result};
use crate::metrics::GRPC_BALANCING_CONTROLLER;
use crate::names::FIELD_MANAGER;
use crate::render::{
    NamespaceView, Outcome, desired_services, desired_status, pod_list, service_needs_apply,
};

#[cfg(test)]
mod tests;

/// How often every balancing is re-checked even without a change: a safety
/// net only (it writes nothing when nothing drifted).
const RESYNC: Duration = Duration::from_secs(300);

/// When a reconcile finds the stores still listing, it comes back this soon.
const STORES_NOT_READY_RETRY: Duration = Duration::from_millis(200);

/// Brings one balancing's Services and status in line with its spec.
pub async fn reconcile(gb: Arc<GrpcBalancing>, ctx: Arc<Context>) -> Result<Action> {
    // Not awaited: the stores fill from the controller's own trigger
    // streams, which a reconcile parked here could keep from being polled.
    if !ctx.is_ready() {
        return Ok(Action::requeue(STORES_NOT_READY_RETRY));
    }
    let started = Instant::now();
    let result = reconcile_inner(&gb, &ctx).await;
    ctx.metrics.observe(
        GRPC_BALANCING_CONTROLLER,
        started.elapsed(),
        result.as_ref().err().map(Error::metric_label),
    );
    if result.is_ok() {
        ctx.failures.succeeded(&ObjectRef::from_obj(gb.as_ref()));
    }
    result
}

async fn reconcile_inner(gb: &GrpcBalancing, ctx: &Context) -> Result<Action> {
    let ns = gb
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingField("namespace"))?;
    let name = gb
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingField("name"))?;
    if gb.metadata.deletion_timestamp.is_some() {
        // Owner references take the Services away; the renderer drops it
        // from the ConfigMap.
        return Ok(Action::await_change());
    }

    // Loopback addresses are assigned from what the evaluation reads (the
    // addresses recorded in the statuses): one such evaluation and status
    // write at a time per namespace.
    let _assigning = match gb.spec.service {
        Some(_) => Some(ctx.address_assignment.lock(&ns.to_owned()).await),
        None => None,
    };

    // Only what this balancing's evaluation reads: the balancings that
    // contend for its listener port or could share a Service name with it,
    // and the slices of its Services.
    let (evaluation, kept_by_others) = {
        let balancings: Vec<_> = ctx
            .balancings_in(ns)
            .into_iter()
            .filter(|b| contends_with(b, gb) || may_share_services(b, name))
            .collect();
        let endpoints = ctx.endpoints_of(ns, name);
        let services = ctx.services_in(ns);
        let view = NamespaceView::new(
            balancings.iter().map(|b| b.as_ref()),
            &endpoints,
            &ctx.cluster_domain,
        )
        .with_proxy_admin_port(ctx.proxy_admin_port)
        .with_services(services.iter().map(|s| s.as_ref()));
        (view.evaluate(gb), view.services_kept_by_others(name))
    };
    let keeps_its_services = !matches!(
        &evaluation.outcome,
        Outcome::NotRendered {
            reason: ConditionReason::ServiceNameConflict,
            ..
        }
    );

    let service_names =
        apply_services(gb, ns, name, ctx, keeps_its_services, &kept_by_others).await?;

    // The status as stored: the store's copy, unless this operator wrote a
    // newer one the store has not shown yet.
    let key = ObjectRef::from_obj(gb);
    let stored = ctx
        .statuses_written
        .not_yet_cached(&key, gb.metadata.resource_version.as_deref())
        .or_else(|| gb.status.clone());
    let mut status = desired_status(
        gb,
        stored.as_ref(),
        &evaluation,
        service_names,
        ctx.pods_without_proxy(ns),
        now_in_seconds(),
    );
    if matches!(evaluation.outcome, Outcome::Rendered { .. }) {
        status.pods_without_balancing = pod_list(ctx.pods_without_balancing(ns, name));
    }
    if stored.as_ref() != Some(&status) {
        write_status(gb, key, stored.as_ref(), &status, ctx).await?;
    }
    Ok(Action::requeue(RESYNC))
}

/// Applies the Services that differ from the desired ones (none when an
/// older balancing keeps one of their names), deletes those of removed
/// subsets unless another balancing keeps the name; returns the applied
/// names.
async fn apply_services(
    gb: &GrpcBalancing,
    ns: &str,
    name: &str,
    ctx: &Context,
    keeps_its_services: bool,
    kept_by_others: &HashSet<String>,
) -> Result<Vec<String>> {
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    let desired = match desired_services(gb) {
        Ok(desired) if keeps_its_services => desired,
        // The status reports why; there is nothing valid to apply.
        Ok(_) | Err(_) => Vec::new(),
    };
    let mut names = Vec::with_capacity(desired.len());
    for svc in &desired {
        let svc_name = svc.metadata.name.clone().unwrap_or_default();
        let key = ObjectRef::new(&svc_name).within(ns);
        let cached = ctx.services.get(&key);
        let cached_version = cached
            .as_ref()
            .and_then(|c| c.metadata.resource_version.as_deref());
        let current = ctx
            .services_written
            .not_yet_cached(&key, cached_version)
            .map(Arc::new)
            .or_else(|| cached.clone());
        if current
            .as_deref()
            .is_none_or(|e| service_needs_apply(e, svc))
        {
            ctx.services_written.forget(&key);
            api.patch(
                &svc_name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(svc),
            )
            .await
            .map_err(|source| Error::ApplyService {
                name: svc_name.clone(),
                source,
            })?;
            ctx.services_written
                .record(key, cached_version, svc.clone());
            tracing::info!(namespace = ns, balancing = name, service = %svc_name, "applied headless Service");
        }
        names.push(svc_name);
    }
    let uid = gb.metadata.uid.as_deref();
    for stale in ctx.services.state() {
        let stale_name = stale.name_any();
        let ours = stale.metadata.namespace.as_deref() == Some(ns)
            && stale.labels().get(BALANCING_LABEL).map(String::as_str) == Some(name)
            && stale
                .owner_references()
                .iter()
                .any(|o| Some(o.uid.as_str()) == uid)
            && !names.contains(&stale_name)
            && !kept_by_others.contains(&stale_name);
        if !ours || stale.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match api.delete(&stale_name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(Error::DeleteService {
                    name: stale_name,
                    source,
                });
            }
        }
        tracing::info!(namespace = ns, balancing = name, service = %stale_name, "deleted the Service of a removed subset");
        publish(
            ctx,
            gb,
            EventType::Normal,
            "ServiceDeleted",
            format!("deleted Service {stale_name} of a removed subset"),
        )
        .await;
    }
    Ok(names)
}

async fn write_status(
    gb: &GrpcBalancing,
    key: ObjectRef<GrpcBalancing>,
    stored: Option<&GrpcBalancingStatus>,
    status: &GrpcBalancingStatus,
    ctx: &Context,
) -> Result<()> {
    let ns = key.namespace.clone().unwrap_or_default();
    let ns = ns.as_str();
    let name = key.name.clone();
    let name = name.as_str();
    let before = ready_reason(stored);
    let after = ready_reason(Some(status));
    tracing::debug!(
        namespace = ns,
        balancing = name,
        from = before.unwrap_or("-"),
        to = after.unwrap_or("-"),
        resource_version = gb.metadata.resource_version.as_deref().unwrap_or("-"),
        "writing the status"
    );
    let api: Api<GrpcBalancing> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({
        "apiVersion": GrpcBalancing::api_version(&()),
        "kind": GrpcBalancing::kind(&()),
        "status": status,
    });
    // Forgotten first: if the write fails, the next reconcile must judge
    // from the store again.
    ctx.statuses_written.forget(&key);
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::PatchStatus)?;
    ctx.statuses_written
        .record(key, gb.metadata.resource_version.as_deref(), status.clone());
    if before != after
        && let Some(condition) = status
            .conditions
            .iter()
            .find(|c| c.type_ == READY_CONDITION)
    {
        let type_ = if condition.status == "True" {
            EventType::Normal
        } else {
            EventType::Warning
        };
        tracing::info!(namespace = ns, balancing = name, reason = %condition.reason, message = %condition.message, "Ready changed");
        publish(ctx, gb, type_, &condition.reason, condition.message.clone()).await;
    }
    Ok(())
}

/// The stored form of a timestamp has whole seconds: a finer one would make
/// the next comparison see a difference that is not there.
fn now_in_seconds() -> Time {
    let now = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

fn ready_reason(status: Option<&GrpcBalancingStatus>) -> Option<&str> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == READY_CONDITION)
        .map(|c| c.reason.as_str())
}

/// Events are best effort: a failure is logged, never fails the reconcile.
async fn publish(ctx: &Context, gb: &GrpcBalancing, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &gb.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish an event");
    }
}

/// Exponential back-off per balancing (see [`crate::backoff`]).
pub fn error_policy(gb: Arc<GrpcBalancing>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.failures.failed(ObjectRef::from_obj(gb.as_ref()));
    tracing::warn!(namespace = gb.namespace().unwrap_or_default(), balancing = gb.name_any(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}
