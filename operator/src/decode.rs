//! GrpcBalancings are watched untyped and decoded one by one.
//!
//! A typed watch decodes a whole list page at once: one stored object that
//! the Rust types reject (the schema cannot say everything they say, e.g. a
//! duration Go accepts but the proxy does not) would fail every listing, so
//! no balancing of the watch would ever be reconciled. Decoding each object
//! here lets a bad one be reported (on its own status, with the reason, and
//! in the error metric) and left out of the store while the others go on.

use std::sync::Arc;

use grpc_balancer_crds::v1alpha1::{ConditionReason, GrpcBalancing, READY_CONDITION};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt as _};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::kube_util::dirty::DirtySet;
use crate::metrics::{ErrorKind, ErrorLabels, GRPC_BALANCING_CONTROLLER, Metrics};
use crate::names::FIELD_MANAGER;

/// Label of the error metric for an object that cannot be decoded.
pub const UNDECODABLE: ErrorKind = ErrorKind::Undecodable;

/// A balancing that cannot be decoded, to be reported on its status.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Undecodable {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub message: String,
}

/// The resource GrpcBalancings are served as.
pub fn api_resource() -> ApiResource {
    ApiResource::erase::<GrpcBalancing>(&())
}

/// Turns a watch event on untyped objects into one on balancings. An object
/// that fails to decode is queued on `reports` (unless its status already
/// says so) and taken out of the store if an earlier version was in it.
pub fn decode_event(
    event: watcher::Event<DynamicObject>,
    store: &Store<GrpcBalancing>,
    reports: &DirtySet<Undecodable>,
    metrics: &Metrics,
) -> Option<watcher::Event<GrpcBalancing>> {
    use watcher::Event;
    match event {
        Event::Init => Some(Event::Init),
        Event::InitDone => Some(Event::InitDone),
        // Left out of the new listing: it is gone from the store at InitDone.
        Event::InitApply(obj) => decode(obj, reports, metrics).map(Event::InitApply),
        Event::Apply(obj) => {
            let key = key_of(&obj);
            match decode(obj, reports, metrics) {
                Some(gb) => Some(Event::Apply(gb)),
                // An older version may be stored: it no longer says what
                // the object says.
                None => store.get(&key?).map(|old| Event::Delete((*old).clone())),
            }
        }
        Event::Delete(obj) => {
            let key = key_of(&obj);
            match obj.try_parse::<GrpcBalancing>() {
                Ok(gb) => Some(Event::Delete(gb)),
                Err(_) => store.get(&key?).map(|old| Event::Delete((*old).clone())),
            }
        }
    }
}

fn key_of(obj: &DynamicObject) -> Option<ObjectRef<GrpcBalancing>> {
    let name = obj.metadata.name.as_deref()?;
    let ns = obj.metadata.namespace.as_deref()?;
    Some(ObjectRef::new(name).within(ns))
}

fn decode(
    obj: DynamicObject,
    reports: &DirtySet<Undecodable>,
    metrics: &Metrics,
) -> Option<GrpcBalancing> {
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let generation = obj.metadata.generation;
    let reported = already_reported(&obj);
    match obj.try_parse::<GrpcBalancing>() {
        Ok(gb) => Some(gb),
        Err(e) => {
            let message = format!("the operator cannot read this GrpcBalancing: {e}");
            tracing::warn!(namespace = %namespace, balancing = %name, error = %e, "skipping a GrpcBalancing that cannot be decoded");
            metrics
                .errors
                .get_or_create(&ErrorLabels {
                    controller: GRPC_BALANCING_CONTROLLER,
                    error: UNDECODABLE,
                })
                .inc();
            if reported.as_deref() != Some(message.as_str()) {
                reports.mark(Undecodable {
                    namespace,
                    name,
                    generation,
                    message,
                });
            }
            None
        }
    }
}

/// The message of an `InvalidSpec` Ready condition written for the
/// object's current generation, if any.
fn already_reported(obj: &DynamicObject) -> Option<String> {
    let status = obj.data.get("status")?;
    let generation = obj.metadata.generation;
    if status.get("observedGeneration").and_then(|g| g.as_i64()) != generation {
        return None;
    }
    let ready = status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(|t| t.as_str()) == Some(READY_CONDITION))?;
    if ready.get("reason").and_then(|r| r.as_str()) != Some(ConditionReason::InvalidSpec.as_str()) {
        return None;
    }
    ready.get("message")?.as_str().map(str::to_owned)
}

/// Writes the status of undecodable balancings until `stop`. Best effort:
/// a failed write is logged and tried again on the object's next event.
pub async fn report(
    client: kube::Client,
    reports: Arc<DirtySet<Undecodable>>,
    stop: CancellationToken,
) {
    let resource = api_resource();
    loop {
        let batch = tokio::select! {
            () = stop.cancelled() => return,
            batch = reports.take() => batch,
        };
        for bad in batch {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &bad.namespace, &resource);
            let status = json!({
                "apiVersion": GrpcBalancing::api_version(&()),
                "kind": GrpcBalancing::kind(&()),
                "status": {
                    "observedGeneration": bad.generation,
                    "conditions": [{
                        "type": READY_CONDITION,
                        "status": "False",
                        "reason": ConditionReason::InvalidSpec.as_str(),
                        "message": bad.message,
                        "observedGeneration": bad.generation,
                        "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().round(k8s_openapi::jiff::Unit::Second).unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now()),
                    }],
                },
            });
            match api
                .patch_status(
                    &bad.name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&status),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(namespace = %bad.namespace, balancing = %bad.name, "reported an undecodable GrpcBalancing on its status")
                }
                Err(e) => {
                    tracing::warn!(namespace = %bad.namespace, balancing = %bad.name, error = %e, "cannot report an undecodable GrpcBalancing")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::reflector;

    use super::*;
    use crate::metrics::ApiRequestCounter;

    fn object(name: &str, dns_refresh: &str, status: serde_json::Value) -> DynamicObject {
        let mut obj = DynamicObject::new(name, &api_resource()).within("demo");
        obj.metadata.generation = Some(2);
        obj.data = json!({
            "spec": {
                "selector": { "app": "a" },
                "port": 50051,
                "listenerPort": 15001,
                "dnsRefreshInterval": dns_refresh,
            },
            "status": status,
        });
        obj
    }

    fn count(metrics: &Metrics) -> u64 {
        metrics
            .errors
            .get_or_create(&ErrorLabels {
                controller: GRPC_BALANCING_CONTROLLER,
                error: UNDECODABLE,
            })
            .get()
    }

    #[test]
    fn good_objects_pass_and_bad_ones_are_reported_and_skipped() {
        let (store, mut writer) = reflector::store::<GrpcBalancing>();
        let reports = DirtySet::default();
        let metrics = Metrics::new(ApiRequestCounter::default());

        let good = decode_event(
            watcher::Event::InitApply(object("a", "5s", json!(null))),
            &store,
            &reports,
            &metrics,
        );
        let Some(watcher::Event::InitApply(gb)) = good else {
            panic!("a good object decodes: {good:?}");
        };
        assert_eq!(gb.spec.listener_port, Some(15001));

        let bad = decode_event(
            watcher::Event::InitApply(object("b", "300000h", json!(null))),
            &store,
            &reports,
            &metrics,
        );
        assert!(bad.is_none(), "a bad object is left out of the listing");
        assert_eq!(count(&metrics), 1);
        let reported = reports.try_take();
        assert_eq!(reported.len(), 1);
        assert_eq!(reported[0].name, "b");
        assert_eq!(reported[0].generation, Some(2));
        assert!(
            reported[0].message.contains("too long"),
            "{:?}",
            reported[0]
        );

        // Once its status says so, it is not reported again.
        let status = json!({
            "observedGeneration": 2,
            "conditions": [{
                "type": "Ready", "status": "False", "reason": "InvalidSpec",
                "message": reported[0].message,
            }],
        });
        let again = decode_event(
            watcher::Event::Apply(object("b", "300000h", status)),
            &store,
            &reports,
            &metrics,
        );
        assert!(again.is_none());
        assert!(reports.try_take().is_empty());

        // A stored object that turns bad is taken out of the store.
        writer.apply_watcher_event(&watcher::Event::Apply(gb));
        let turned_bad = decode_event(
            watcher::Event::Apply(object("a", "300000h", json!(null))),
            &store,
            &reports,
            &metrics,
        );
        let Some(watcher::Event::Delete(old)) = turned_bad else {
            panic!("an object that turned bad is deleted from the store: {turned_bad:?}");
        };
        assert_eq!(old.metadata.name.as_deref(), Some("a"));
    }
}
