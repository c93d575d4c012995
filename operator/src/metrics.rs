//! Prometheus metrics of the operator, and a tower layer that counts the
//! API requests its client sends (by verb and resource): how the operator
//! proves that a steady state makes no writes, and what the reconcile-cost
//! benchmark reports.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A closed set of label values: an enum, its text and the list of all of
/// them, so the docs can be checked against the code (see the metrics-doc
/// test) and a typo cannot create a new series.
macro_rules! label_values {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}

label_values! {
    /// The loop a reconcile metric is about.
    pub enum Controller {
        /// A balancing's Services and status.
        GrpcBalancing => "grpcbalancing",
        /// A namespace's proxy ConfigMap.
        ConfigMap => "configmap",
    }
}

label_values! {
    /// What failed in a reconcile (the `error` label).
    pub enum ErrorKind {
        ApplyService => "apply_service",
        DeleteService => "delete_service",
        PatchStatus => "patch_status",
        ApplyConfigMap => "apply_config_map",
        DeleteConfigMap => "delete_config_map",
        RenderConfig => "render_config",
        MissingField => "missing_field",
        /// A GrpcBalancing the operator's types cannot read.
        Undecodable => "undecodable",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: Controller,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: Controller,
    pub error: ErrorKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ApiRequestLabels {
    /// get, list, watch, create, update, patch, delete.
    pub verb: &'static str,
    /// Plural resource name, with `/status` for the status subresource.
    pub resource: String,
}

pub const GRPC_BALANCING_CONTROLLER: Controller = Controller::GrpcBalancing;
pub const CONFIG_MAP_CONTROLLER: Controller = Controller::ConfigMap;

/// Every metric of the operator, registered in one registry.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Family<ControllerLabels, Histogram>,
    pub leader: Gauge,
    /// Times the controllers outlived the shutdown grace and were dropped.
    pub forced_stops: Counter,
    pub api_requests: ApiRequestCounter,
    pub discovery: Arc<DiscoveryMetrics>,
}

label_values! {
    /// Why a discovery stream was refused (the `reason` label).
    pub enum RefusalReason {
        /// No `authorization` metadata.
        NoToken => "no_token",
        /// A header or request that does not parse.
        Malformed => "malformed",
        /// The apiserver refused the token (invalid, expired, wrong
        /// audience, not a ServiceAccount's).
        BadToken => "bad_token",
        /// The token is another namespace's.
        OtherNamespace => "other_namespace",
        /// The TokenReview itself failed (apiserver unreachable).
        ReviewFailed => "review_failed",
        /// The replica holds its maximum of streams.
        TooManyStreams => "too_many_streams",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub reason: RefusalReason,
}

/// The push discovery server's metrics.
pub struct DiscoveryMetrics {
    /// Proxy streams connected to this replica.
    pub streams: Gauge,
    pub refusals: Family<RefusalLabels, Counter>,
    /// Streams dropped because their buffer was full.
    pub slow_streams_dropped: Counter,
    /// From a change seen by the watch to its message handed to a stream.
    pub fanout: Histogram,
}

impl DiscoveryMetrics {
    pub(crate) fn new() -> Self {
        let refusals = Family::<RefusalLabels, Counter>::default();
        for &reason in RefusalReason::ALL {
            let _ = refusals.get_or_create(&RefusalLabels { reason });
        }
        DiscoveryMetrics {
            streams: Gauge::default(),
            refusals,
            slow_streams_dropped: Counter::default(),
            fanout: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
        }
    }

    pub fn refused(&self, reason: RefusalReason) {
        self.refusals.get_or_create(&RefusalLabels { reason }).inc();
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "discovery_streams",
            "Proxy discovery streams connected to this replica",
            self.streams.clone(),
        );
        registry.register(
            "discovery_refused_streams",
            "Discovery streams refused, by reason",
            self.refusals.clone(),
        );
        registry.register(
            "discovery_slow_streams_dropped",
            "Discovery streams dropped because they fell a full buffer behind",
            self.slow_streams_dropped.clone(),
        );
        registry.register(
            "discovery_fanout_seconds",
            "Time from a change seen by the watch to its message handed to a proxy's stream",
            self.fanout.clone(),
        );
    }
}

impl Metrics {
    pub fn new(api_requests: ApiRequestCounter) -> Self {
        let mut registry = Registry::with_prefix("grpc_balancer_operator");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<ControllerLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))) as fn() -> Histogram,
        );
        let leader = Gauge::default();
        // Every series of a closed label set exists from the start, at 0:
        // `rate()` and alerts see a first increase, and the exported
        // families are the same whatever happened yet.
        for &controller in Controller::ALL {
            let _ = reconciles.get_or_create(&ControllerLabels { controller });
            for &error in ErrorKind::ALL {
                let _ = errors.get_or_create(&ErrorLabels { controller, error });
            }
        }
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error kind",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        let forced_stops = Counter::default();
        registry.register(
            "controller_forced_stops",
            "Times the controllers did not stop within the shutdown grace and were dropped",
            forced_stops.clone(),
        );
        registry.register(
            "api_requests",
            "Requests sent to the Kubernetes API, by verb and resource",
            api_requests.family.clone(),
        );
        let discovery = Arc::new(DiscoveryMetrics::new());
        discovery.register(&mut registry);
        Metrics {
            registry,
            discovery,
            reconciles,
            errors,
            duration,
            leader,
            forced_stops,
            api_requests,
        }
    }

    pub fn observe(&self, controller: Controller, took: Duration, error: Option<ErrorKind>) {
        let labels = ControllerLabels { controller };
        self.reconciles.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if let Some(error) = error {
            self.errors
                .get_or_create(&ErrorLabels { controller, error })
                .inc();
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Counts API requests; cheap to clone, shared by the layer and readers.
#[derive(Clone, Default)]
pub struct ApiRequestCounter {
    family: Family<ApiRequestLabels, Counter>,
    totals: Arc<Mutex<BTreeMap<ApiRequestLabels, u64>>>,
}

impl ApiRequestCounter {
    /// Counts one request of `verb` on `resource` (plural, `/status` for
    /// the status subresource).
    pub fn record(&self, verb: &'static str, resource: &str) {
        self.record_labels(ApiRequestLabels {
            verb,
            resource: resource.to_owned(),
        });
    }

    fn record_labels(&self, labels: ApiRequestLabels) {
        self.family.get_or_create(&labels).inc();
        let mut totals = match self.totals.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        *totals.entry(labels).or_default() += 1;
    }

    /// Requests so far by (verb, resource).
    pub fn snapshot(&self) -> BTreeMap<ApiRequestLabels, u64> {
        match self.totals.lock() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Writes (create, update, patch, delete) so far, except to `excluded`
    /// resources (e.g. `leases`, renewed every few seconds by design).
    pub fn writes_except(&self, excluded: &[&str]) -> u64 {
        self.snapshot()
            .iter()
            .filter(|(l, _)| is_write(l.verb) && !excluded.contains(&l.resource.as_str()))
            .map(|(_, n)| n)
            .sum()
    }

    /// Every request so far.
    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }
}

pub fn is_write(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch" | "delete")
}

/// The (verb, resource) of a request to the Kubernetes API.
pub fn classify<B>(req: &http::Request<B>) -> ApiRequestLabels {
    let path = req.uri().path();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/..., /apis/<group>/<version>/...; then optionally
    // namespaces/<ns>/, then <resource>[/<name>[/<subresource>]].
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..).unwrap_or_default(),
        Some(&"apis") => segments.get(3..).unwrap_or_default(),
        _ => &[][..],
    };
    let rest = match rest {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let resource = match rest {
        [resource, _name, sub, ..] => format!("{resource}/{sub}"),
        [resource, ..] => (*resource).to_owned(),
        [] => "other".to_owned(),
    };
    let has_name = rest.len() >= 2;
    let watch = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match *req.method() {
        http::Method::GET if watch => "watch",
        http::Method::GET if has_name => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    };
    ApiRequestLabels { verb, resource }
}

/// The layer: put it on the kube client's stack
/// (`ClientBuilder::with_layer`).
#[derive(Clone)]
pub struct CountApiRequests(pub ApiRequestCounter);

impl<S> tower::Layer<S> for CountApiRequests {
    type Service = CountingService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CountingService {
            inner,
            counter: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CountingService<S> {
    inner: S,
    counter: ApiRequestCounter,
}

impl<S, B> tower::Service<http::Request<B>> for CountingService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.counter.record_labels(classify(&req));
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(method: &str, uri: &str) -> (&'static str, String) {
        let req = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .expect("request");
        let l = classify(&req);
        (l.verb, l.resource)
    }

    #[test]
    fn requests_are_classified_by_verb_and_resource() {
        assert_eq!(
            labels(
                "GET",
                "/api/v1/namespaces/a/services?watch=true&resourceVersion=1"
            ),
            ("watch", "services".into())
        );
        assert_eq!(
            labels("GET", "/api/v1/pods?limit=500"),
            ("list", "pods".into())
        );
        assert_eq!(
            labels(
                "PATCH",
                "/apis/grpcbalancer.io/v1alpha1/namespaces/a/grpcbalancings/g/status?fieldManager=x"
            ),
            ("patch", "grpcbalancings/status".into())
        );
        assert_eq!(
            labels("PUT", "/apis/coordination.k8s.io/v1/namespaces/a/leases/l"),
            ("update", "leases".into())
        );
        assert_eq!(
            labels("DELETE", "/api/v1/namespaces/a/configmaps/c"),
            ("delete", "configmaps".into())
        );
        assert_eq!(
            labels("GET", "/api/v1/namespaces/a"),
            ("get", "namespaces".into())
        );
        assert_eq!(labels("GET", "/version"), ("list", "other".into()));
    }

    #[test]
    fn writes_exclude_the_named_resources() {
        let counter = ApiRequestCounter::default();
        for (verb, resource) in [
            ("patch", "services"),
            ("update", "leases"),
            ("list", "pods"),
        ] {
            counter.record_labels(ApiRequestLabels {
                verb,
                resource: resource.into(),
            });
        }
        assert_eq!(counter.writes_except(&["leases"]), 1);
        assert_eq!(counter.writes_except(&[]), 2);
        assert_eq!(counter.total(), 3);
    }
}
