//! The admission webhook in this process, registered by URL for one test
//! namespace only (its label), so tests sharing a control plane do not see
//! each other's webhooks.

use std::collections::BTreeMap;
use std::sync::Arc;

use clap::Parser as _;
use grpc_balancer_test_support::TestNamespace;
use grpc_balancer_test_support::namespace::unique_name;
use grpc_balancer_webhook::{Serving, StandaloneArgs, WebhookMetrics};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::Api;
use kube::api::DeleteParams;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Namespace label the registered webhook selects.
pub const SELECTOR_LABEL: &str = "grpcbalancer.io/webhook-test";

/// A namespace the webhook of [`InProcessWebhook::start`] will serve.
pub async fn webhook_namespace(client: &kube::Client, prefix: &str) -> (TestNamespace, String) {
    let value = unique_name(prefix);
    let ns = TestNamespace::with_labels(
        client,
        prefix,
        BTreeMap::from([(SELECTOR_LABEL.to_owned(), value.clone())]),
    )
    .await;
    (ns, value)
}

pub struct InProcessWebhook {
    pub configuration: String,
    pub readiness: Serving,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    client: kube::Client,
}

impl InProcessWebhook {
    /// Serves on a loopback port, registers itself for namespaces labelled
    /// `SELECTOR_LABEL=selector` with `failure_policy`.
    pub async fn start(
        client: &kube::Client,
        ns: &TestNamespace,
        selector: &str,
        failure_policy: &str,
    ) -> InProcessWebhook {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let port = listener.local_addr().expect("an address").port();
        let configuration = unique_name("op-webhook-test");
        let argv = [
            "grpc-balancer-webhook".to_owned(),
            format!("--webhook-url=https://127.0.0.1:{port}/mutate"),
            format!("--webhook-configuration={configuration}"),
            format!("--webhook-namespace={}", ns.name()),
            "--webhook-cert-secret=webhook-tls".to_owned(),
            format!("--webhook-namespace-selector={SELECTOR_LABEL}={selector}"),
            format!("--webhook-failure-policy={failure_policy}"),
            "--sidecar-mode=native".to_owned(),
        ];
        let args = StandaloneArgs::try_parse_from(argv)
            .expect("flags parse")
            .webhook;
        let stop = CancellationToken::new();
        let readiness = Serving::default();
        let task = tokio::spawn(grpc_balancer_webhook::run_on(
            client.clone(),
            args,
            listener,
            Arc::new(WebhookMetrics::default()),
            readiness.clone(),
            stop.clone().cancelled_owned(),
        ));
        InProcessWebhook {
            configuration,
            readiness,
            stop,
            task,
            client: client.clone(),
        }
    }

    /// Stops serving and removes the registration.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
        let api: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        let _ = api
            .delete(&self.configuration, &DeleteParams::default())
            .await;
    }
}
