//! What the controller and the ConfigMap renderer share: the client, the
//! reflector stores and the operator's own recent writes, and the queries
//! both ask of the stores. Everything here reads; nothing writes to the API.

use std::sync::Arc;

use futures::FutureExt as _;
use grpc_balancer_crds::annotations::{BALANCING_LABEL, BALANCINGS, INJECT, INJECTED};
use grpc_balancer_crds::v1alpha1::{GrpcBalancing, GrpcBalancingStatus};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::PartialObjectMeta;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt as _};

use crate::backoff::Failures;
use crate::kube_util::dirty::DirtySet;
use crate::kube_util::keyed_lock::KeyedLock;
use crate::kube_util::recent_writes::RecentWrites;
use crate::metrics::Metrics;
use crate::render::EndpointIndex;

/// What reconcilers share: the client, the stores and the queues.
pub struct Context {
    pub client: Client,
    pub cluster_domain: String,
    /// Admin port of the injected proxies: no listener may use it.
    pub proxy_admin_port: u16,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub balancings: Store<GrpcBalancing>,
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    pub pods: Store<PartialObjectMeta<Pod>>,
    pub config_maps: Store<ConfigMap>,
    /// Namespaces whose ConfigMap must be re-rendered.
    pub config_dirty: Arc<DirtySet<String>>,
    /// Status writes the balancing store may not show yet.
    pub statuses_written: RecentWrites<ObjectRef<GrpcBalancing>, GrpcBalancingStatus>,
    /// Service applies the Service store may not show yet.
    pub services_written: RecentWrites<ObjectRef<Service>, Service>,
    /// Consecutive failures per balancing, for the error back-off.
    pub(crate) failures: Failures<ObjectRef<GrpcBalancing>>,
    /// Per namespace: held by the reconcile of a balancing that names a
    /// Service, from its evaluation to its status write. Two balancings
    /// evaluated side by side could otherwise both take the address each
    /// saw free.
    pub(crate) address_assignment: KeyedLock<String>,
}

/// The reflector stores a [`Context`] reads.
pub struct Stores {
    pub balancings: Store<GrpcBalancing>,
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    pub pods: Store<PartialObjectMeta<Pod>>,
    pub config_maps: Store<ConfigMap>,
}

impl Context {
    pub fn new(
        client: Client,
        cluster_domain: String,
        metrics: Arc<Metrics>,
        recorder: Recorder,
        stores: Stores,
        config_dirty: Arc<DirtySet<String>>,
    ) -> Context {
        Context {
            client,
            cluster_domain,
            proxy_admin_port: grpc_balancer_crds::config::DEFAULT_ADMIN_PORT,
            metrics,
            recorder,
            balancings: stores.balancings,
            services: stores.services,
            slices: stores.slices,
            pods: stores.pods,
            config_maps: stores.config_maps,
            config_dirty,
            statuses_written: RecentWrites::default(),
            services_written: RecentWrites::default(),
            failures: Failures::default(),
            address_assignment: KeyedLock::default(),
        }
    }

    /// The context with the proxies' admin port moved to `port`.
    pub fn with_proxy_admin_port(mut self, port: u16) -> Context {
        self.proxy_admin_port = port;
        self
    }

    /// Whether every store holds a complete first listing, without waiting.
    /// Reconciling earlier would judge from a partial view (e.g. "no Service
    /// yet") and write things that are already there.
    pub fn is_ready(&self) -> bool {
        self.balancings.wait_until_ready().now_or_never().is_some()
            && self.services.wait_until_ready().now_or_never().is_some()
            && self.slices.wait_until_ready().now_or_never().is_some()
            && self.pods.wait_until_ready().now_or_never().is_some()
            && self.config_maps.wait_until_ready().now_or_never().is_some()
    }

    pub async fn wait_ready(&self) {
        // An Err means the writer is gone: the operator is shutting down and
        // the controller stops on its own.
        let _ = self.balancings.wait_until_ready().await;
        let _ = self.services.wait_until_ready().await;
        let _ = self.slices.wait_until_ready().await;
        let _ = self.pods.wait_until_ready().await;
        let _ = self.config_maps.wait_until_ready().await;
    }

    /// The balancings of one namespace, each with the status this operator
    /// last wrote for it when the store has not shown that write yet.
    /// Statuses record the loopback addresses, and every evaluation reads
    /// those of the neighbours: judged from a store that lags behind a
    /// burst of writes, the balancings still waiting for an address would
    /// get another one at each reconcile, and every rewrite would keep the
    /// store behind (hundreds of rewrites per balancing, and balancings
    /// never reconciled, when 254 were created at once).
    pub fn balancings_in(&self, namespace: &str) -> Vec<Arc<GrpcBalancing>> {
        self.balancings
            .state()
            .into_iter()
            .filter(|gb| gb.metadata.namespace.as_deref() == Some(namespace))
            .map(|gb| {
                let key = ObjectRef::from_obj(gb.as_ref());
                match self
                    .statuses_written
                    .not_yet_cached(&key, gb.metadata.resource_version.as_deref())
                {
                    Some(written) => {
                        let mut newer = GrpcBalancing::clone(&gb);
                        newer.status = Some(written);
                        Arc::new(newer)
                    }
                    None => gb,
                }
            })
            .collect()
    }

    /// The Services of one namespace (those `spec.service` may name, and
    /// the operator's own).
    pub fn services_in(&self, namespace: &str) -> Vec<Arc<Service>> {
        self.services
            .state()
            .into_iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
            .collect()
    }

    /// The EndpointSlice summary of one balancing's Services (their slices
    /// carry the Services' labels).
    pub fn endpoints_of(&self, namespace: &str, balancing: &str) -> EndpointIndex {
        let slices = self.slices.state();
        EndpointIndex::new(
            namespace,
            slices
                .iter()
                .filter(|s| s.labels().get(BALANCING_LABEL).map(String::as_str) == Some(balancing))
                .map(|s| s.as_ref()),
        )
    }

    /// The EndpointSlice summary of one namespace.
    pub fn endpoints_in(&self, namespace: &str) -> EndpointIndex {
        let slices = self.slices.state();
        EndpointIndex::new(namespace, slices.iter().map(|s| s.as_ref()))
    }

    /// Pods of `namespace` that asked for the proxy but were not injected.
    pub fn pods_without_proxy(&self, namespace: &str) -> Vec<String> {
        self.pods
            .state()
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| asks_for_injection(p) && !p.annotations().contains_key(INJECTED))
            .map(|p| p.name_any())
            .collect()
    }

    /// Pods of `namespace` that run the proxy but whose containers did not
    /// get `balancing`'s env var (the webhook records the ones they got).
    /// Pods injected before that record existed say nothing and are not
    /// listed.
    pub fn pods_without_balancing(&self, namespace: &str, balancing: &str) -> Vec<String> {
        self.pods
            .state()
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| asks_for_injection(p) && p.annotations().contains_key(INJECTED))
            .filter(|p| {
                p.annotations()
                    .get(BALANCINGS)
                    .is_some_and(|got| !got.split(',').any(|n| n == balancing))
            })
            .map(|p| p.name_any())
            .collect()
    }
}

/// Whether the pod asked the webhook for the proxy.
pub fn asks_for_injection(pod: &PartialObjectMeta<Pod>) -> bool {
    pod.annotations().get(INJECT).map(String::as_str) == Some("true")
}

/// Whether `other` could have a headless Service of the same name as one
/// of `name`'s, now or with other subsets: `grpcb-<x>[-…]` and
/// `grpcb-<y>[-…]` can only be equal when one name starts with the other.
pub fn may_share_services(other: &GrpcBalancing, name: &str) -> bool {
    let other = other.metadata.name.as_deref().unwrap_or_default();
    other.starts_with(name) || name.starts_with(other)
}

/// Whether `a` and `b` compete for something only one of them can have: a
/// listener port, or (both naming a Service) the Service and the pool of
/// loopback addresses. Either one's change can change the other's status.
pub fn contends_with(a: &GrpcBalancing, b: &GrpcBalancing) -> bool {
    let same_port = a.spec.listener_port.is_some() && a.spec.listener_port == b.spec.listener_port;
    same_port || (a.spec.service.is_some() && b.spec.service.is_some())
}
