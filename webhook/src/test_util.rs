//! The webhook in the test's own process, for tests against a real
//! apiserver (this crate's and the operator's): served on a loopback port,
//! registered by URL for one test namespace only (selected by a label whose
//! value is the namespace's name), so tests sharing a control plane do not
//! see each other's webhooks. Built with the `test-util` feature.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser as _;
use grpc_balancer_test_support::TestNamespace;
use grpc_balancer_test_support::namespace::unique_name;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{Serving, StandaloneArgs, WebhookMetrics};

/// Namespace label the registered webhook selects.
pub const SELECTOR_LABEL: &str = "grpcbalancer.io/webhook-test";

/// How long a stopped webhook may take to end.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A new test namespace labelled with `extra` and with the selector of an
/// [`InProcessWebhook`] started for it.
pub async fn webhook_namespace(
    client: &kube::Client,
    prefix: &str,
    extra: &[(&str, &str)],
) -> TestNamespace {
    // The selector's value is the namespace's own name, known only once
    // created: the label is added right after.
    let ns = TestNamespace::with_labels(client, prefix, BTreeMap::new()).await;
    let mut labels: BTreeMap<String, String> = extra
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.insert(SELECTOR_LABEL.to_owned(), ns.name().to_owned());
    let api: Api<Namespace> = Api::all(client.clone());
    let patch = serde_json::json!({ "metadata": { "labels": labels } });
    api.patch(ns.name(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("labelling the test namespace");
    ns
}

/// A webhook served by this process, registered under its own name.
pub struct InProcessWebhook {
    pub configuration: String,
    pub readiness: Serving,
    pub metrics: Arc<WebhookMetrics>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
    client: kube::Client,
}

impl InProcessWebhook {
    /// Serves `ns` (made by [`webhook_namespace`]) with `failure_policy`
    /// (`Fail` or `Ignore`) and `sidecar_mode` (`auto`, `native`, `legacy`).
    pub async fn start(
        client: &kube::Client,
        ns: &TestNamespace,
        failure_policy: &str,
        sidecar_mode: &str,
    ) -> InProcessWebhook {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let port = listener.local_addr().expect("an address").port();
        let configuration = unique_name("webhook-test");
        let argv = [
            "grpc-balancer-webhook".to_owned(),
            format!("--webhook-url=https://127.0.0.1:{port}/mutate"),
            format!("--webhook-configuration={configuration}"),
            format!("--webhook-namespace={}", ns.name()),
            "--webhook-cert-secret=webhook-tls".to_owned(),
            format!(
                "--webhook-namespace-selector={SELECTOR_LABEL}={}",
                ns.name()
            ),
            format!("--webhook-failure-policy={failure_policy}"),
            "--webhook-timeout-seconds=5".to_owned(),
            format!("--sidecar-mode={sidecar_mode}"),
        ];
        let args = StandaloneArgs::try_parse_from(argv)
            .expect("flags parse")
            .webhook;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let metrics = Arc::new(WebhookMetrics::default());
        let readiness = Serving::default();
        let task = tokio::spawn(crate::run_on(
            client.clone(),
            args,
            listener,
            metrics.clone(),
            readiness.clone(),
            async {
                let _ = stop_rx.await;
            },
        ));
        InProcessWebhook {
            configuration,
            readiness,
            metrics,
            stop: Some(stop_tx),
            task,
            client: client.clone(),
        }
    }

    /// Stops serving, keeping the registration: the apiserver's calls then
    /// fail. Panics unless the webhook ends cleanly and in time.
    pub async fn stop_serving(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(STOP_TIMEOUT, &mut self.task)
            .await
            .expect("the webhook stops")
            .expect("the webhook task did not panic")
            .expect("the webhook ended without error");
    }

    /// Removes the registration.
    pub async fn unregister(&self) {
        let api: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        let _ = api
            .delete(&self.configuration, &DeleteParams::default())
            .await;
    }

    /// Stops serving and removes the registration.
    pub async fn stop(mut self) {
        self.stop_serving().await;
        self.unregister().await;
    }
}
