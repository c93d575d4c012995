//! The apiserver calls a webhook on 127.0.0.1 over TLS and applies its JSONPatch — the
//! way the real webhook is tested.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::{Json, Router, extract::State, routing::post};
use grpc_balancer_test_support::{ControlPlane, TestNamespace, poll_until};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::{pod, pp, to_map};

struct Tls {
    ca_pem: String,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn make_certs() -> Tls {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test webhook CA");
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca cert");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf params");
    leaf_params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let leaf = leaf_params.signed_by(&leaf_key, &ca).expect("leaf cert");
    Tls {
        ca_pem: ca.pem(),
        cert: leaf.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    }
}

/// Admits every pod, adding a label through a JSONPatch.
async fn mutate(State(calls): State<Arc<AtomicUsize>>, Json(review): Json<Value>) -> Json<Value> {
    calls.fetch_add(1, Ordering::SeqCst);
    let uid = review["request"]["uid"].clone();
    let patch =
        json!([{ "op": "add", "path": "/metadata/labels/mutated-by", "value": "test-webhook" }]);
    let patch = serde_json::to_vec(&patch).expect("serialize patch");
    Json(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": uid,
            "allowed": true,
            "patchType": "JSONPatch",
            // ByteString serializes as base64, as AdmissionResponse.patch requires.
            "patch": ByteString(patch),
        }
    }))
}

async fn serve_tls(tls: &Tls, calls: Arc<AtomicUsize>) -> SocketAddr {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("tls versions")
    .with_no_client_auth()
    .with_single_cert(vec![tls.cert.clone()], tls.key.clone_key())
    .expect("server cert");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind webhook");
    let addr = listener.local_addr().expect("local addr");
    let app = Router::new()
        .route("/mutate", post(mutate))
        .with_state(calls);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn apiserver_calls_mutating_webhook_on_loopback_url() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    let ns = TestNamespace::new(&client, "webhook").await;
    let tls = make_certs();
    let calls = Arc::new(AtomicUsize::new(0));
    let addr = serve_tls(&tls, calls.clone()).await;

    let mwc_name = ns.name().to_owned();
    let mwc = MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(mwc_name.clone()),
            ..Default::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: "mutate.test.grpc-balancer.io".into(),
            admission_review_versions: vec!["v1".into()],
            side_effects: "None".into(),
            failure_policy: Some("Fail".into()),
            timeout_seconds: Some(5),
            // Only this test's namespace, so parallel tests are not affected.
            namespace_selector: Some(LabelSelector {
                match_labels: Some(to_map(&[("kubernetes.io/metadata.name", ns.name())])),
                ..Default::default()
            }),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec!["".into()]),
                api_versions: Some(vec!["v1".into()]),
                operations: Some(vec!["CREATE".into()]),
                resources: Some(vec!["pods".into()]),
                scope: Some("Namespaced".into()),
            }]),
            client_config: WebhookClientConfig {
                url: Some(format!("https://{addr}/mutate")),
                ca_bundle: Some(ByteString(tls.ca_pem.clone().into_bytes())),
                service: None,
            },
            ..Default::default()
        }]),
    };
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    mwcs.create(&pp(), &mwc)
        .await
        .expect("create MutatingWebhookConfiguration");

    // The apiserver picks up new webhook configurations asynchronously; keep creating
    // pods until one comes back mutated.
    let pods: Api<Pod> = ns.api();
    let mut attempt = 0;
    let created = poll_until(
        "a pod created after registration is mutated",
        Duration::from_secs(30),
        || {
            attempt += 1;
            let name = format!("p-{attempt}");
            let pods = pods.clone();
            async move {
                let p = pods.create(&pp(), &pod(&name, &[("app", "x")])).await?;
                let label = p
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("mutated-by"))
                    .cloned();
                if label.as_deref() == Some("test-webhook") {
                    Ok(p)
                } else {
                    Err(anyhow::anyhow!("labels {:?}", p.metadata.labels))
                }
            }
        },
    )
    .await;
    assert!(calls.load(Ordering::SeqCst) >= 1, "webhook never called");
    // The stored object carries the patch too.
    let stored = pods
        .get(created.metadata.name.as_deref().unwrap_or_default())
        .await
        .expect("get pod");
    assert_eq!(
        stored
            .metadata
            .labels
            .and_then(|l| l.get("mutated-by").cloned())
            .as_deref(),
        Some("test-webhook")
    );

    mwcs.delete(&mwc_name, &DeleteParams::default())
        .await
        .expect("delete MutatingWebhookConfiguration");
}
