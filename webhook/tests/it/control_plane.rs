//! The webhook against a real kube-apiserver (`scripts/control-plane`): the
//! apiserver calls it over TLS through a `url`-based MutatingWebhookConfiguration
//! it registered itself, with the CA it generated into a Secret.
//!
//! Each test registers its own configuration, limited by a namespace label to
//! its own namespace, so tests sharing a control plane cannot see each other.

use std::sync::Arc;
use std::time::Duration;

use grpc_balancer_crds::config::{CONFIG_MAP_KEY, CONFIG_MAP_NAME};
use grpc_balancer_test_support::namespace::unique_name;
use grpc_balancer_test_support::{ControlPlane, TestNamespace, poll_until};
use grpc_balancer_webhook::cert_secret::{CA_KEY, CERT_KEY, CertSecret};
use grpc_balancer_webhook::certs::serving_names;
use grpc_balancer_webhook::test_util::{InProcessWebhook, SELECTOR_LABEL, webhook_namespace};
use grpc_balancer_webhook::{Outcome, WebhookMetrics, annotations};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TIMEOUT: Duration = Duration::from_secs(60);

fn pod(name: &str, inject: bool, restricted: bool) -> Pod {
    let mut annotations = serde_json::Map::new();
    if inject {
        annotations.insert(annotations::INJECT.to_owned(), json!("true"));
    }
    let security = if restricted {
        json!({
            "runAsNonRoot": true, "runAsUser": 1000, "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] }, "seccompProfile": { "type": "RuntimeDefault" }
        })
    } else {
        json!(null)
    };
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "annotations": annotations },
        "spec": { "containers": [{
            "name": "app", "image": "registry.invalid/client:1", "securityContext": security
        }] }
    }))
    .expect("a pod")
}

fn has_proxy(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.name == "grpc-balancer-proxy"))
}

/// Waits until the apiserver injects through this webhook: a dry-run create
/// of an annotated pod comes back with the proxy.
async fn wait_until_injecting(pods: &Api<Pod>, restricted: bool) {
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    poll_until("the apiserver to call the webhook", TIMEOUT, || async {
        match pods.create(&dry_run, &pod("probe", true, restricted)).await {
            Ok(p) if has_proxy(&p) => Ok(()),
            Ok(_) => Err("created without the proxy".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
}

const GREETER_CONFIG: &str = "balancings:\n- name: greeter\n  listen: 127.0.0.1:15001\n  subsets:\n  - name: all\n    discovery: { static: [127.0.0.3:50051] }\n";

async fn write_proxy_config(ns: &TestNamespace) {
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {
            "name": CONFIG_MAP_NAME,
            "labels": { "app.kubernetes.io/managed-by": "grpc-balancer" }
        },
        "data": { CONFIG_MAP_KEY: GREETER_CONFIG }
    }))
    .expect("a ConfigMap");
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &cm)
        .await
        .expect("creating the proxy ConfigMap");
}

#[tokio::test]
async fn annotated_pods_get_the_proxy_and_others_are_untouched() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    let ns = webhook_namespace(&client, "webhook-inject", &[]).await;
    write_proxy_config(&ns).await;
    let webhook = InProcessWebhook::start(&client, &ns, "Fail", "auto").await;
    let pods: Api<Pod> = ns.api();
    wait_until_injecting(&pods, false).await;

    let injected_before = webhook.metrics.reviews(Outcome::Injected);
    let created = pods
        .create(&PostParams::default(), &pod("client", true, false))
        .await
        .expect("the annotated pod is admitted");
    assert_eq!(
        webhook.metrics.reviews(Outcome::Injected),
        injected_before + 1,
        "the apiserver's call is counted once"
    );
    let stored = pods.get("client").await.expect("the pod is stored");
    for p in [&created, &stored] {
        let spec = p.spec.as_ref().expect("a spec");
        let proxy = &spec.init_containers.as_ref().expect("init containers")[0];
        assert_eq!(proxy.name, "grpc-balancer-proxy");
        assert_eq!(
            proxy.restart_policy.as_deref(),
            Some("Always"),
            "a native sidecar on 1.34"
        );
        let app = &spec.containers[0];
        let env: Vec<_> = app
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.as_deref()))
            .collect();
        assert_eq!(
            env,
            [("GRPC_BALANCER_GREETER_ADDR", Some("127.0.0.1:15001"))]
        );
        let annotations = p.metadata.annotations.as_ref().expect("annotations");
        assert!(
            annotations.contains_key(annotations::INJECTED),
            "{annotations:?}"
        );
        assert!(
            spec.volumes
                .iter()
                .flatten()
                .any(|v| v.name == "grpc-balancer-proxy-config")
        );
    }

    // A balancing added later reaches pods created from then on (the watch,
    // not only the first list, feeds the cache).
    let second = format!(
        "{}- name: orders.v2\n  listen: 127.0.0.1:15002\n  subsets:\n  - name: all\n    discovery: {{ static: [127.0.0.4:50051] }}\n",
        GREETER_CONFIG
    );
    let patch = json!({ "data": { CONFIG_MAP_KEY: second } });
    ns.api::<ConfigMap>()
        .patch(
            CONFIG_MAP_NAME,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("updating the proxy ConfigMap");
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    poll_until(
        "the new balancing's env var in injected pods",
        TIMEOUT,
        || async {
            let p = pods
                .create(&dry_run, &pod("later", true, false))
                .await
                .map_err(|e| e.to_string())?;
            let env = p
                .spec
                .and_then(|s| s.containers[0].env.clone())
                .unwrap_or_default();
            if env.iter().any(|e| {
                e.name == "GRPC_BALANCER_ORDERS_V2_ADDR"
                    && e.value.as_deref() == Some("127.0.0.1:15002")
            }) {
                Ok(())
            } else {
                Err(format!("env so far: {env:?}"))
            }
        },
    )
    .await;

    let plain = pod("plain", false, false);
    let created = pods
        .create(&PostParams::default(), &plain)
        .await
        .expect("the plain pod is admitted");
    let spec = created.spec.as_ref().expect("a spec");
    assert!(spec.init_containers.is_none(), "untouched: {spec:?}");
    assert!(spec.containers[0].env.is_none());
    assert!(
        spec.volumes
            .iter()
            .flatten()
            .all(|v| v.name != "grpc-balancer-proxy-config")
    );
    assert!(created.metadata.annotations.unwrap_or_default().is_empty());

    webhook.stop().await;
}

#[tokio::test]
async fn injected_pods_pass_pod_security_restricted() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    let ns = webhook_namespace(
        &client,
        "webhook-restricted",
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    )
    .await;
    let webhook = InProcessWebhook::start(&client, &ns, "Fail", "auto").await;
    let pods: Api<Pod> = ns.api();
    wait_until_injecting(&pods, true).await;

    // The namespace does enforce: a pod that is not restricted is refused.
    let refused = pods
        .create(&PostParams::default(), &pod("lax", false, false))
        .await;
    assert!(
        refused.is_err(),
        "Pod Security must refuse a non-restricted pod"
    );

    let admitted = pods
        .create(&PostParams::default(), &pod("strict", true, true))
        .await
        .expect("the injected pod passes Pod Security restricted");
    assert!(has_proxy(&admitted));

    webhook.stop().await;
}

#[tokio::test]
async fn with_the_webhook_down_and_failure_policy_ignore_pods_are_still_created() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    let ns = webhook_namespace(&client, "webhook-down", &[]).await;
    let mut webhook = InProcessWebhook::start(&client, &ns, "Ignore", "auto").await;
    let pods: Api<Pod> = ns.api();
    wait_until_injecting(&pods, false).await;
    webhook.stop_serving().await;

    let created = tokio::time::timeout(
        Duration::from_secs(30),
        pods.create(&PostParams::default(), &pod("orphan", true, false)),
    )
    .await
    .expect("creation does not hang")
    .expect("the pod is admitted without the webhook");
    assert!(!has_proxy(&created));
    let annotations = created.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations.get(annotations::INJECT).map(String::as_str),
        Some("true")
    );
    assert!(
        !annotations.contains_key(annotations::INJECTED),
        "the operator lists such pods by the missing {} annotation",
        annotations::INJECTED
    );
    webhook.unregister().await;
}

#[tokio::test]
async fn the_certificate_is_bootstrapped_from_an_empty_secret_and_renewed_when_emptied() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    let ns = webhook_namespace(&client, "webhook-certs", &[]).await;
    let secrets: Api<Secret> = ns.api();
    let empty: Secret = serde_json::from_value(json!({
        "metadata": { "name": "webhook-tls", "labels": { "from": "chart" } }, "type": "Opaque"
    }))
    .expect("a Secret");
    secrets
        .create(&PostParams::default(), &empty)
        .await
        .expect("creating the empty Secret");

    let webhook = InProcessWebhook::start(&client, &ns, "Fail", "auto").await;
    let pods: Api<Pod> = ns.api();
    wait_until_injecting(&pods, false).await;

    let secret = secrets.get("webhook-tls").await.expect("the Secret");
    let data = secret.data.clone().expect("filled");
    assert!(data.contains_key(CERT_KEY) && data.contains_key("tls.key"));
    assert_eq!(
        secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("from"))
            .map(String::as_str),
        Some("chart"),
        "the chart's metadata is kept"
    );
    let ca = data.get(CA_KEY).expect("a CA").0.clone();
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let registered = mwcs.get(&webhook.configuration).await.expect("registered");
    let webhook_entry = &registered.webhooks.as_ref().expect("webhooks")[0];
    assert_eq!(
        webhook_entry
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.clone()),
        Some(ca.clone())
    );
    assert!(
        webhook_entry
            .client_config
            .url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://127.0.0.1:"))
    );

    // Emptied while running: a new certificate is written, served and trusted.
    let old_cert = data.get(CERT_KEY).cloned();
    let patch = json!({ "data": null });
    secrets
        .patch(
            "webhook-tls",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("emptying the Secret");
    poll_until("a new certificate in the Secret", TIMEOUT, || async {
        let s = secrets
            .get("webhook-tls")
            .await
            .map_err(|e| e.to_string())?;
        let cert = s.data.as_ref().and_then(|d| d.get(CERT_KEY)).cloned();
        if cert.is_some() && cert != old_cert {
            Ok(())
        } else {
            Err("not renewed yet".to_owned())
        }
    })
    .await;
    poll_until("the new CA in the caBundle", TIMEOUT, || async {
        let s = secrets
            .get("webhook-tls")
            .await
            .map_err(|e| e.to_string())?;
        let ca = s
            .data
            .as_ref()
            .and_then(|d| d.get(CA_KEY))
            .map(|b| b.0.clone());
        let m = mwcs
            .get(&webhook.configuration)
            .await
            .map_err(|e| e.to_string())?;
        let bundle = m
            .webhooks
            .as_ref()
            .and_then(|w| w[0].client_config.ca_bundle.as_ref())
            .map(|b| b.0.clone());
        if ca.is_some() && bundle == ca {
            Ok(())
        } else {
            Err("caBundle differs".to_owned())
        }
    })
    .await;
    wait_until_injecting(&pods, false).await;
    webhook.stop().await;
}

#[tokio::test]
async fn replicas_racing_on_a_missing_secret_agree_on_one_certificate() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    let ns = webhook_namespace(&client, "webhook-race", &[]).await;
    let names = serving_names("grpc-balancer-webhook", ns.name(), &[]);
    let replicas: Vec<_> = (0..4)
        .map(|_| CertSecret::new(client.clone(), ns.name(), "raced", names.clone()))
        .collect();
    let results = futures::future::join_all(replicas.iter().map(|r| r.ensure())).await;
    let certs: Vec<_> = results
        .into_iter()
        .map(|r| r.expect("every replica gets a certificate").key.cert)
        .collect();
    assert!(
        certs.windows(2).all(|w| w[0] == w[1]),
        "replicas serve different certificates"
    );
    let stored = ns.api::<Secret>().get("raced").await.expect("one Secret");
    assert_eq!(stored.type_.as_deref(), Some("kubernetes.io/tls"));
}

#[tokio::test]
async fn legacy_mode_puts_the_proxy_first_among_the_containers() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    let ns = webhook_namespace(
        &client,
        "webhook-legacy",
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    )
    .await;
    let webhook = InProcessWebhook::start(&client, &ns, "Fail", "legacy").await;
    let pods: Api<Pod> = ns.api();
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    poll_until("the apiserver to call the webhook", TIMEOUT, || async {
        let p = pods
            .create(&dry_run, &pod("probe", true, true))
            .await
            .map_err(|e| e.to_string())?;
        let spec = p.spec.ok_or("no spec")?;
        if spec.containers.len() == 2 {
            Ok(spec)
        } else {
            Err("not injected yet".to_owned())
        }
    })
    .await;
    let admitted = pods
        .create(&PostParams::default(), &pod("old-style", true, true))
        .await
        .expect("admitted under Pod Security restricted");
    let spec = admitted.spec.expect("a spec");
    assert_eq!(spec.containers[0].name, "grpc-balancer-proxy");
    assert_eq!(spec.containers[1].name, "app");
    assert!(spec.init_containers.is_none());
    let lifecycle = spec.containers[0].lifecycle.as_ref().expect("hooks");
    assert!(lifecycle.post_start.is_some() && lifecycle.pre_stop.is_some());
    webhook.stop().await;
}

/// A second mutating webhook, called after ours (its configuration's name
/// sorts after it): it adds a container `late` to every pod it sees.
struct LaterWebhook {
    configuration: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl LaterWebhook {
    async fn start(client: &Client, ns: &TestNamespace) -> LaterWebhook {
        use grpc_balancer_webhook::certs::generate;
        use grpc_balancer_webhook::tls::{ServingCert, certified_key, server_config};
        use kube::core::admission::{AdmissionResponse, AdmissionReview};

        let certs = generate(
            &serving_names("later", "test", &[]),
            std::time::SystemTime::now(),
        )
        .expect("certificates");
        let key = certified_key(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes())
            .expect("a usable key");
        let tls = Arc::new(server_config(Arc::new(ServingCert::new(key))).expect("TLS settings"));
        let router = axum::Router::new().route(
            "/mutate",
            axum::routing::post(|body: axum::body::Bytes| async move {
                let review: AdmissionReview<Pod> = match serde_json::from_slice(&body) {
                    Ok(r) => r,
                    Err(e) => return axum::Json(json!({ "error": e.to_string() })),
                };
                let Ok(request) = review.try_into() else {
                    return axum::Json(json!({ "error": "no request" }));
                };
                let request: kube::core::admission::AdmissionRequest<Pod> = request;
                let mut response = AdmissionResponse::from(&request);
                let has_late = request
                    .object
                    .as_ref()
                    .and_then(|p| p.spec.as_ref())
                    .is_some_and(|s| s.containers.iter().any(|c| c.name == "late"));
                if !has_late {
                    let patch: json_patch::Patch = serde_json::from_value(json!([{
                        "op": "add", "path": "/spec/containers/-",
                        "value": { "name": "late", "image": "registry.invalid/late:1" }
                    }]))
                    .expect("a patch");
                    response = response.with_patch(patch).expect("a patch response");
                }
                axum::Json(serde_json::to_value(response.into_review()).expect("serialises"))
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let port = listener.local_addr().expect("an address").port();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            grpc_balancer_webhook::server::serve(
                listener,
                tls,
                router,
                Arc::new(WebhookMetrics::default()),
                grpc_balancer_webhook::Serving::default(),
                async {
                    let _ = stop_rx.await;
                },
            )
            .await;
        });
        let configuration = format!("zzz-{}", unique_name("later"));
        let mwc: MutatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": { "name": configuration },
            "webhooks": [{
                "name": "later.grpcbalancer.io",
                "admissionReviewVersions": ["v1"],
                "clientConfig": {
                    "url": format!("https://127.0.0.1:{port}/mutate"),
                    "caBundle": k8s_openapi::ByteString(certs.ca_pem.clone().into_bytes()),
                },
                "rules": [{ "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"] }],
                "namespaceSelector": { "matchLabels": { SELECTOR_LABEL: ns.name() } },
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "reinvocationPolicy": "Never",
            }]
        }))
        .expect("a configuration");
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .create(&PostParams::default(), &mwc)
            .await
            .expect("registering the later webhook");
        LaterWebhook {
            configuration,
            stop: Some(stop_tx),
            task,
        }
    }

    async fn stop(mut self, client: &Client) {
        let _ = Api::<MutatingWebhookConfiguration>::all(client.clone())
            .delete(&self.configuration, &DeleteParams::default())
            .await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }
}

#[tokio::test]
async fn a_container_added_by_a_later_webhook_gets_the_env_vars() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    let ns = webhook_namespace(&client, "webhook-reinvoke", &[]).await;
    write_proxy_config(&ns).await;
    let webhook = InProcessWebhook::start(&client, &ns, "Fail", "auto").await;
    let later = LaterWebhook::start(&client, &ns).await;
    let pods: Api<Pod> = ns.api();
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let has_env = |c: &k8s_openapi::api::core::v1::Container| {
        c.env.iter().flatten().any(|e| {
            e.name == "GRPC_BALANCER_GREETER_ADDR" && e.value.as_deref() == Some("127.0.0.1:15001")
        })
    };
    let created = poll_until("both webhooks to be called", TIMEOUT, || async {
        let p = pods
            .create(&dry_run, &pod("client", true, false))
            .await
            .map_err(|e| e.to_string())?;
        let spec = p.spec.clone().unwrap_or_default();
        if has_proxy(&p) && spec.containers.iter().any(|c| c.name == "late") {
            Ok(p)
        } else {
            Err(format!(
                "containers so far: {:?}",
                spec.containers.iter().map(|c| &c.name).collect::<Vec<_>>()
            ))
        }
    })
    .await;
    let spec = created.spec.expect("a spec");
    let late = spec
        .containers
        .iter()
        .find(|c| c.name == "late")
        .expect("the later webhook's container");
    assert!(
        has_env(late),
        "the reinvoked webhook did not give the later container the env var: {late:?}"
    );
    assert!(has_env(&spec.containers[0]), "{:?}", spec.containers[0]);
    let proxies = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.name == "grpc-balancer-proxy")
        .count();
    assert_eq!(proxies, 1, "one proxy");
    later.stop(&client).await;
    webhook.stop().await;
}
