//! Shared helpers of the control-plane tests: the CRD, an in-process
//! operator with its own counted client, backend pods played by the
//! kubelet stand-in.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use grpc_balancer_crds::v1alpha1::{GrpcBalancing, crd};
use grpc_balancer_operator::LeaderSettings;
use grpc_balancer_operator::Settings;
use grpc_balancer_operator::metrics::{ApiRequestCounter, Controller, ControllerLabels, Metrics};
use grpc_balancer_test_support::{ControlPlane, kubelet, poll_until};
use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub mod process;

pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Installs (or updates) the CRD and waits until the apiserver serves it.
pub async fn install_crd(client: &kube::Client) {
    grpc_balancer_test_support::crd::apply_crd(client, &crd(), "grpc-balancer-tests", TIMEOUT)
        .await
        .expect("the apiserver accepts and establishes the CRD");
    // Established can precede discovery by a moment: wait until a list works.
    poll_until("GrpcBalancings to be listable", TIMEOUT, || {
        let api: Api<GrpcBalancing> = Api::all(client.clone());
        async move { api.list(&Default::default()).await.map(|_| ()) }
    })
    .await;
}

/// An operator running in this process with its own client, whose requests
/// are counted.
pub struct RunningOperator {
    pub identity: String,
    pub metrics: Arc<Metrics>,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningOperator {
    pub async fn start(
        cp: &ControlPlane,
        namespace: &str,
        lease: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> RunningOperator {
        grpc_balancer_operator::telemetry::init();
        let counter = ApiRequestCounter::default();
        let kubeconfig = Kubeconfig::read_from(cp.kubeconfig()).expect("kubeconfig readable");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("kubeconfig usable");
        let client = grpc_balancer_operator::client_with_counter(config, &counter).expect("client");
        let metrics = Arc::new(Metrics::new(counter));
        let settings = Settings {
            cluster_domain: "cluster.local".into(),
            leader: LeaderSettings {
                namespace: namespace.into(),
                lease_name: lease.into(),
                identity: identity.into(),
                lease_duration,
            },
            metrics_listen: None,
            watch_namespace: Some(namespace.into()),
            metrics: metrics.clone(),
            proxy_admin_port: grpc_balancer_crds::config::DEFAULT_ADMIN_PORT,
            webhook: None,
            discovery: None,
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(grpc_balancer_operator::run(
            client,
            settings,
            stop.clone().cancelled_owned(),
        ));
        RunningOperator {
            identity: identity.into(),
            metrics,
            stop,
            task,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.metrics.leader.get() == 1
    }

    pub fn reconciles(&self, controller: Controller) -> u64 {
        self.metrics
            .reconciles
            .get_or_create(&ControllerLabels { controller })
            .get()
    }

    pub fn api(&self) -> &ApiRequestCounter {
        &self.metrics.api_requests
    }

    /// Writes other than Lease renewals.
    pub fn writes(&self) -> u64 {
        self.api().writes_except(&["leases"])
    }

    /// SIGTERM-like: finishes reconciles, releases the Lease. The
    /// controllers must stop by themselves, not by the grace-period drop.
    pub async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("the operator stops within the timeout")
            .expect("the operator task does not panic")
            .expect("the operator ends without error");
        assert_eq!(
            self.metrics.forced_stops.get(),
            0,
            "the controllers of {} had to be dropped after the grace period",
            self.identity
        );
    }

    /// A crash: the task is dropped mid-flight, the Lease is not released.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Creates a backend pod with `labels`, bound and marked running and ready
/// on `ip` by the kubelet stand-in.
pub async fn backend_pod(
    client: &kube::Client,
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
    port_name: &str,
    port: i32,
    ip: Ipv4Addr,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "server".into(),
                image: Some("grpc-balancer-greeter:test".into()),
                ports: Some(vec![ContainerPort {
                    name: Some(port_name.into()),
                    container_port: port,
                    ..ContainerPort::default()
                }]),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    };
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod created");
    kubelet::set_pod_running(client, ns, name, ip, true)
        .await
        .expect("pod set running");
}
