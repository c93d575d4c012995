//! One AdmissionReview in, one AdmissionReview out. Every input, however
//! malformed, gets a well-formed v1 answer; the HTTP status says whether the
//! request itself was usable.

use std::sync::Arc;

use arc_swap::ArcSwap;

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{
    AdmissionRequest, AdmissionResponse, AdmissionReview, META_API_VERSION_V1, META_KIND, Operation,
};
use kube::core::{DynamicObject, GroupVersionKind, Status, TypeMeta};
use serde::Deserialize;

use crate::mutate::{InjectionContext, already_injected, mutate, wants_injection};
use crate::proxy_configs::ProxyConfigs;
use crate::settings::ProxySettings;

/// Whether the apiserver should see this answer as a usable review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A decision (allowed, patched or denied): HTTP 200.
    Decided,
    /// The request was not a usable AdmissionReview v1: HTTP 400.
    Malformed,
}

/// Reviews pods with the settings and the cached proxy configs.
#[derive(Debug)]
pub struct Reviewer {
    pub settings: Arc<ProxySettings>,
    pub configs: Arc<ProxyConfigs>,
    /// The CA bundle proxies trust the discovery server by (the webhook's),
    /// once known; it follows renewals.
    pub discovery_ca: Arc<ArcSwap<Option<String>>>,
}

impl Reviewer {
    pub fn review(&self, body: &[u8]) -> (Verdict, AdmissionReview<DynamicObject>) {
        match serde_json::from_slice::<AdmissionReview<Pod>>(body) {
            Ok(review) => self.review_parsed(review),
            Err(e) => (Verdict::Malformed, explain_unparsable(body, &e)),
        }
    }

    fn review_parsed(
        &self,
        review: AdmissionReview<Pod>,
    ) -> (Verdict, AdmissionReview<DynamicObject>) {
        if let Some(problem) = envelope_problem(&review.types) {
            let uid = review.request.as_ref().map(|r| r.uid.clone());
            return (Verdict::Malformed, invalid(uid, problem));
        }
        let Some(request) = review.request else {
            return (
                Verdict::Malformed,
                invalid(None, "the AdmissionReview has no request".into()),
            );
        };
        if !is_pod(&request.kind) {
            let kind = &request.kind;
            let why = format!(
                "only pods are reviewed, not {}/{} {}",
                kind.group, kind.version, kind.kind
            );
            return (Verdict::Malformed, invalid(Some(request.uid.clone()), why));
        }
        if request.operation == Operation::Create && request.object.is_none() {
            let why = "the request has no object".to_owned();
            return (Verdict::Malformed, invalid(Some(request.uid.clone()), why));
        }
        (Verdict::Decided, self.decide(&request))
    }

    fn decide(&self, request: &AdmissionRequest<Pod>) -> AdmissionReview<DynamicObject> {
        let namespace = request
            .namespace
            .clone()
            .or_else(|| {
                request
                    .object
                    .as_ref()
                    .and_then(|p| p.metadata.namespace.clone())
            })
            .unwrap_or_default();
        let name = pod_name(request);
        let allowed = || v1(AdmissionResponse::from(request));

        if request.operation != Operation::Create {
            tracing::info!(%namespace, %name, uid = %request.uid, decision = "allowed", reason = "not a create", "admission review");
            return allowed().into_review();
        }
        let Some(pod) = request.object.as_ref() else {
            return allowed().into_review();
        };

        let balancings = self.configs.balancings(&namespace);
        let discovery_ca = self.discovery_ca.load_full();
        let ctx = InjectionContext {
            settings: &self.settings,
            balancings: &balancings,
            discovery_ca: discovery_ca.as_ref().as_deref(),
        };
        match mutate(pod, &ctx) {
            Ok(None) => {
                let reason = if wants_injection(pod) {
                    "already injected"
                } else {
                    "no injection asked"
                };
                tracing::info!(%namespace, %name, uid = %request.uid, decision = "allowed", reason, "admission review");
                allowed().into_review()
            }
            Ok(Some(patch)) => match allowed().with_patch(patch) {
                Ok(response) => {
                    // A pod with the proxy already is a reinvocation: only
                    // env vars were added.
                    let decision = if pod.spec.as_ref().is_some_and(already_injected) {
                        "env vars added"
                    } else {
                        "injected"
                    };
                    tracing::info!(%namespace, %name, uid = %request.uid, decision, mode = ?self.settings.mode, balancings = balancings.len(), "admission review");
                    response.into_review()
                }
                Err(e) => deny(request, &namespace, &name, &e.to_string()),
            },
            Err(e) => deny(request, &namespace, &name, &e.to_string()),
        }
    }
}

fn deny(
    request: &AdmissionRequest<Pod>,
    namespace: &str,
    name: &str,
    why: &str,
) -> AdmissionReview<DynamicObject> {
    tracing::info!(%namespace, %name, uid = %request.uid, decision = "denied", reason = %why, "admission review");
    let message = format!("grpc-balancer cannot inject its proxy: {why}");
    let mut response = v1(AdmissionResponse::from(request)).deny(&message);
    response.result = Status::failure(&message, "Forbidden").with_code(403);
    response.into_review()
}

/// The pod's name, or its `generateName` prefix before the apiserver picked one.
fn pod_name(request: &AdmissionRequest<Pod>) -> String {
    let meta = request.object.as_ref().map(|p| &p.metadata);
    meta.and_then(|m| m.name.clone())
        .filter(|n| !n.is_empty())
        .or_else(|| Some(request.name.clone()).filter(|n| !n.is_empty()))
        .or_else(|| meta.and_then(|m| m.generate_name.clone()))
        .unwrap_or_default()
}

fn is_pod(kind: &GroupVersionKind) -> bool {
    kind.group.is_empty() && kind.version == "v1" && kind.kind == "Pod"
}

fn envelope_problem(types: &TypeMeta) -> Option<String> {
    if types.kind != META_KIND {
        return Some(format!("kind {:?} is not {META_KIND}", types.kind));
    }
    if types.api_version != META_API_VERSION_V1 {
        return Some(format!(
            "apiVersion {:?} is not supported: only {META_API_VERSION_V1} is (list only v1 in admissionReviewVersions)",
            types.api_version
        ));
    }
    None
}

fn v1(mut response: AdmissionResponse) -> AdmissionResponse {
    response.types = TypeMeta {
        api_version: META_API_VERSION_V1.to_owned(),
        kind: META_KIND.to_owned(),
    };
    response
}

fn invalid(uid: Option<String>, why: String) -> AdmissionReview<DynamicObject> {
    let mut response = AdmissionResponse::invalid(&why);
    response.uid = uid.unwrap_or_default();
    response.result = response.result.with_code(400);
    v1(response).into_review()
}

/// Just enough of a review to say what is wrong with one that did not parse.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Envelope {
    api_version: Option<String>,
    kind: Option<String>,
    request: Option<EnvelopeRequest>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EnvelopeRequest {
    uid: Option<String>,
    kind: Option<GroupVersionKind>,
}

fn explain_unparsable(body: &[u8], error: &serde_json::Error) -> AdmissionReview<DynamicObject> {
    let Ok(envelope) = serde_json::from_slice::<Envelope>(body) else {
        return invalid(None, format!("the body is not an AdmissionReview: {error}"));
    };
    let uid = envelope.request.as_ref().and_then(|r| r.uid.clone());
    let types = TypeMeta {
        api_version: envelope.api_version.unwrap_or_default(),
        kind: envelope.kind.unwrap_or_default(),
    };
    if let Some(problem) = envelope_problem(&types) {
        return invalid(uid, problem);
    }
    let kind = envelope.request.and_then(|r| r.kind);
    match kind {
        Some(kind) if !is_pod(&kind) => invalid(
            uid,
            format!(
                "only pods are reviewed, not {}/{} {}",
                kind.group, kind.version, kind.kind
            ),
        ),
        _ => invalid(uid, format!("the AdmissionReview does not parse: {error}")),
    }
}
