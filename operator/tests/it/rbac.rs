//! The chart's RBAC grants exactly the API calls the operator makes: the
//! operator binary runs with the Deployment's own arguments, as the chart's
//! ServiceAccount (a token), behind an API recorder; a scenario exercises
//! every code path (reconcile, status, events, endpoint counts, pods
//! without the proxy, subset removal, deletion, leader election, the
//! webhook certificate, a push discovery stream); then the recorded calls and the chart's
//! ClusterRole and Role must be the same set, with no call refused.
//!
//! This test has a control plane of its own: the chart's operator watches
//! every namespace and its webhook configuration and CRD are cluster-wide,
//! which the other tests sharing a control plane must not meet.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use grpc_balancer_crds::v1alpha1::GrpcBalancing;
use grpc_balancer_discovery_api::channel::{client_config, tls_channel};
use grpc_balancer_discovery_api::v1::WatchRequest;
use grpc_balancer_discovery_api::v1::discovery_client::DiscoveryClient;
use grpc_balancer_discovery_api::{AUTHORIZATION, TOKEN_AUDIENCE};
use grpc_balancer_operator::render::fixtures::with_spec;
use grpc_balancer_test_support::api_recorder::{ApiRecorder, Record};
use grpc_balancer_test_support::control_plane::tool;
use grpc_balancer_test_support::{ControlPlane, kubelet, poll_until};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

use crate::support::TIMEOUT;
use crate::support::process::{OperatorProcess, free_port};

const RELEASE: &str = "grpc-balancer";
const RELEASE_NS: &str = "grpc-balancer-system";
const SCENARIO_NS: &str = "rbac-scenario";

/// (API group, resource[/subresource], verb), as RBAC rules name them.
type Permission = (String, String, String);

fn helm(cp: &ControlPlane, args: &[&str]) {
    let out = Command::new(tool("helm"))
        .args(args)
        .arg("--kubeconfig")
        .arg(cp.kubeconfig())
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A kubeconfig for `server` (with the control plane's CA) that
/// authenticates with `token`.
fn kubeconfig_with_token(cp: &ControlPlane, token: &str) -> Kubeconfig {
    let admin = Kubeconfig::read_from(cp.kubeconfig()).expect("the control plane's kubeconfig");
    let cluster = admin.clusters[0].cluster.clone().expect("a cluster");
    Kubeconfig::from_yaml(
        &serde_yaml::to_string(&json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": "c", "cluster": {
                "server": cluster.server,
                "certificate-authority-data": cluster.certificate_authority_data,
            }}],
            "users": [{ "name": "sa", "user": { "token": token } }],
            "contexts": [{ "name": "c", "context": { "cluster": "c", "user": "sa", "namespace": RELEASE_NS } }],
            "current-context": "c",
        }))
        .expect("YAML"),
    )
    .expect("a kubeconfig")
}

fn granted(rules: &[PolicyRule]) -> BTreeSet<Permission> {
    let mut out = BTreeSet::new();
    for rule in rules {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    out.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    out
}

fn permission(record: &Record) -> Permission {
    let resource = if record.subresource.is_empty() {
        record.resource.clone()
    } else {
        format!("{}/{}", record.resource, record.subresource)
    };
    (record.group.clone(), resource, record.verb.clone())
}

/// Creates `name` in the scenario namespace and plays the kubelet: Running
/// and Ready on `ip`.
async fn backend(client: &kube::Client, name: &str, version: &str, ip: Ipv4Addr) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "app": "greeter", "version": version } },
        "spec": { "containers": [{
            "name": "greeter", "image": "greeter",
            "ports": [{ "name": "grpc", "containerPort": 50051 }]
        }] }
    }))
    .expect("a pod");
    Api::<Pod>::namespaced(client.clone(), SCENARIO_NS)
        .create(&PostParams::default(), &pod)
        .await
        .expect("backend pod created");
    kubelet::set_pod_running(client, SCENARIO_NS, name, ip, true)
        .await
        .expect("backend pod running");
}

async fn ready_condition(gbs: &Api<GrpcBalancing>) -> Result<(String, String), String> {
    let gb = gbs.get("greeter").await.map_err(|e| e.to_string())?;
    gb.status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone()))
        .ok_or_else(|| "no Ready condition yet".to_owned())
}

async fn wait_ready(gbs: &Api<GrpcBalancing>, status: &str, reason: Option<&str>) {
    poll_until(&format!("Ready {status} {reason:?}"), TIMEOUT, || async {
        let (s, r) = ready_condition(gbs).await?;
        if s == status && reason.is_none_or(|want| want == r) {
            Ok(())
        } else {
            Err(format!("Ready {s} ({r})"))
        }
    })
    .await;
}

#[tokio::test]
async fn the_chart_grants_exactly_the_api_calls_the_operator_makes() {
    let cp = ControlPlane::start_owned()
        .await
        .expect("a control plane of this test's own");
    let admin = cp.client().await;
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/grpc-balancer");
    let chart = chart.to_str().expect("a UTF-8 path");

    // The webhook configuration selects the scenario namespace only: the
    // pods of the release namespace are no business of it.
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    for ns in [RELEASE_NS, SCENARIO_NS] {
        let ns: Namespace =
            serde_json::from_value(json!({ "metadata": { "name": ns } })).expect("a namespace");
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("namespace created");
    }
    helm(
        &cp,
        &[
            "install",
            RELEASE,
            chart,
            "--namespace",
            RELEASE_NS,
            "--set",
            "webhook.namespaceSelectorExpressions[0].key=kubernetes.io/metadata.name",
            "--set",
            "webhook.namespaceSelectorExpressions[0].operator=In",
            "--set",
            &format!("webhook.namespaceSelectorExpressions[0].values={{{SCENARIO_NS}}}"),
        ],
    );

    let token = Api::<ServiceAccount>::namespaced(admin.clone(), RELEASE_NS)
        .create_token_request(
            RELEASE,
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    expiration_seconds: Some(3600),
                    ..TokenRequestSpec::default()
                },
                ..TokenRequest::default()
            },
        )
        .await
        .expect("a token of the chart's ServiceAccount")
        .status
        .expect("a token")
        .token;
    let as_sa = kube::Config::from_custom_kubeconfig(
        kubeconfig_with_token(&cp, &token),
        &KubeConfigOptions::default(),
    )
    .await
    .expect("a config as the ServiceAccount");
    let recorder = ApiRecorder::start(kube::Client::try_from(as_sa).expect("a client"))
        .await
        .expect("the recorder listens");
    let dir = tempfile::tempdir().expect("a temp dir");
    let operator_kubeconfig = dir.path().join("operator.kubeconfig");
    std::fs::write(
        &operator_kubeconfig,
        serde_yaml::to_string(&json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": "recorder", "cluster": { "server": format!("http://{}", recorder.addr()) } }],
            "users": [{ "name": "none", "user": {} }],
            "contexts": [{ "name": "recorder", "context": { "cluster": "recorder", "user": "none", "namespace": RELEASE_NS } }],
            "current-context": "recorder",
        }))
        .expect("YAML"),
    )
    .expect("kubeconfig written");

    // The Deployment's arguments, with loopback listeners instead of 0.0.0.0.
    let deployment = Api::<Deployment>::namespaced(admin.clone(), RELEASE_NS)
        .get(RELEASE)
        .await
        .expect("the chart's Deployment");
    let metrics_port = free_port();
    let webhook_port = free_port();
    let discovery_port = free_port();
    let mut args: Vec<String> = deployment
        .spec
        .and_then(|s| s.template.spec)
        .map(|s| s.containers[0].args.clone().unwrap_or_default())
        .expect("the operator's arguments")
        .into_iter()
        .map(|arg| arg.replace("$(POD_NAMESPACE)", RELEASE_NS))
        .map(|arg| {
            if arg.starts_with("--metrics-listen=") {
                format!("--metrics-listen=127.0.0.1:{metrics_port}")
            } else if arg.starts_with("--webhook-listen=") {
                format!("--webhook-listen=127.0.0.1:{webhook_port}")
            } else if arg.starts_with("--discovery-listen=") {
                format!("--discovery-listen=127.0.0.1:{discovery_port}")
            } else {
                arg
            }
        })
        .collect();
    args.push(format!("--kubeconfig={}", operator_kubeconfig.display()));
    let mut operator = OperatorProcess::spawn(
        metrics_port,
        &args,
        &[
            ("POD_NAMESPACE", RELEASE_NS),
            ("POD_NAME", "grpc-balancer-rbac-test"),
        ],
    );
    poll_until("the operator to be ready", TIMEOUT, || async {
        match operator.get("/readyz").await {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}\n{}", operator.logs())),
        }
    })
    .await;

    // The scenario.
    for (i, (name, version)) in [
        ("greeter-v1-a", "v1"),
        ("greeter-v1-b", "v1"),
        ("greeter-v2-a", "v2"),
    ]
    .into_iter()
    .enumerate()
    {
        backend(
            &admin,
            name,
            version,
            Ipv4Addr::new(127, 0, 0, 41 + i as u8),
        )
        .await;
    }
    let gbs: Api<GrpcBalancing> = Api::namespaced(admin.clone(), SCENARIO_NS);
    gbs.create(
        &PostParams::default(),
        &with_spec(
            "greeter",
            "selector: { app: greeter }\nport: grpc\nlistenerPort: 15001\nsubsets:\n  \
             - { name: v1, labels: { version: v1 }, weight: 75 }\n  \
             - { name: v2, labels: { version: v2 }, weight: 25 }\n",
        ),
    )
    .await
    .expect("GrpcBalancing created");
    wait_ready(&gbs, "True", None).await;

    // Push discovery: a proxy's stream with a token of the discovery
    // audience, over TLS with the webhook's certificate; the operator checks
    // the token with a TokenReview.
    let ca_pem = poll_until("the webhook certificate's CA", TIMEOUT, || async {
        let secret = Api::<Secret>::namespaced(admin.clone(), RELEASE_NS)
            .get(&format!("{RELEASE}-webhook-tls"))
            .await
            .map_err(|e| e.to_string())?;
        match secret.data.and_then(|d| d.get("ca.crt").cloned()) {
            Some(ca) if !ca.0.is_empty() => Ok(ca.0),
            _ => Err("no ca.crt yet".to_owned()),
        }
    })
    .await;
    let discovery_token =
        crate::discovery::token(&admin, SCENARIO_NS, "default", TOKEN_AUDIENCE).await;
    poll_until("a push discovery snapshot", TIMEOUT, || async {
        let tls = client_config(&ca_pem).map_err(|e| e.to_string())?;
        let channel = tls_channel(&format!("127.0.0.1:{discovery_port}"), "localhost", tls)
            .map_err(|e| e.to_string())?;
        let mut request = tonic::Request::new(WatchRequest {
            namespace: SCENARIO_NS.into(),
            pod_name: "rbac-test".into(),
        });
        request.metadata_mut().insert(
            AUTHORIZATION,
            format!("Bearer {discovery_token}")
                .parse()
                .map_err(|e| format!("{e}"))?,
        );
        let mut stream = DiscoveryClient::new(channel)
            .watch(request)
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        match tokio::time::timeout(TIMEOUT, stream.message()).await {
            Ok(Ok(Some(_))) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // The in-cluster webhook Service is unreachable here (no kube-proxy), so
    // the pod is admitted without the proxy (failurePolicy Ignore) and
    // reported.
    let client_pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "client", "annotations": { "grpcbalancer.io/sidecar.inject": "true" } },
        "spec": { "containers": [{ "name": "app", "image": "client" }] }
    }))
    .expect("a pod");
    Api::<Pod>::namespaced(admin.clone(), SCENARIO_NS)
        .create(&PostParams::default(), &client_pod)
        .await
        .expect("client pod admitted");
    poll_until(
        "the un-injected client pod in the status",
        TIMEOUT,
        || async {
            let gb = gbs.get("greeter").await.map_err(|e| e.to_string())?;
            let listed = gb.status.map(|s| s.pods_without_proxy).unwrap_or_default();
            if listed.iter().any(|p| p == "client") {
                Ok(())
            } else {
                Err(format!("{listed:?}"))
            }
        },
    )
    .await;

    // Not ready and back repeats the same Ready event, which the event
    // recorder turns into a patch of the first one.
    kubelet::set_pod_ready(&admin, SCENARIO_NS, "greeter-v2-a", false)
        .await
        .expect("pod not ready");
    wait_ready(&gbs, "False", Some("NoEndpoints")).await;
    kubelet::set_pod_ready(&admin, SCENARIO_NS, "greeter-v2-a", true)
        .await
        .expect("pod ready");
    wait_ready(&gbs, "True", None).await;

    gbs.patch(
        "greeter",
        &PatchParams::default(),
        &Patch::<()>::Json(
            serde_json::from_value(json!([{ "op": "remove", "path": "/spec/subsets/1" }]))
                .expect("a JSON patch"),
        ),
    )
    .await
    .expect("subset removed");
    let services: Api<Service> = Api::namespaced(admin.clone(), SCENARIO_NS);
    poll_until("the removed subset's Service to go", TIMEOUT, || async {
        match services.get_opt("grpcb-greeter-v2").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    gbs.delete("greeter", &DeleteParams::default())
        .await
        .expect("GrpcBalancing deleted");
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), SCENARIO_NS);
    poll_until(
        "the proxy config to drop the balancing",
        TIMEOUT,
        || async {
            let cm = config_maps
                .get_opt("grpc-balancer-proxy-config")
                .await
                .map_err(|e| e.to_string())?;
            let data = cm.and_then(|c| c.data).unwrap_or_default();
            if data.values().any(|v| v.contains("greeter")) {
                Err(format!("{data:?}"))
            } else {
                Ok(())
            }
        },
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), RELEASE_NS);
    poll_until(
        "the operator to fill the chart's certificate Secret",
        TIMEOUT,
        || async {
            let secret = secrets
                .get(&format!("{RELEASE}-webhook-tls"))
                .await
                .map_err(|e| e.to_string())?;
            match secret.data.and_then(|d| d.get("tls.crt").cloned()) {
                Some(crt) if !crt.0.is_empty() => Ok(()),
                _ => Err("no tls.crt yet".to_owned()),
            }
        },
    )
    .await;
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(admin.clone());
    poll_until("the operator to patch the caBundle", TIMEOUT, || async {
        let mwc = webhooks.get(RELEASE).await.map_err(|e| e.to_string())?;
        let ca = mwc
            .webhooks
            .unwrap_or_default()
            .first()
            .and_then(|w| w.client_config.ca_bundle.clone());
        match ca {
            Some(ca) if !ca.0.is_empty() => Ok(()),
            _ => Err("no caBundle yet".to_owned()),
        }
    })
    .await;
    // One /metrics serves the controller's and the webhook's metrics.
    let (code, metrics) = operator.get("/metrics").await.expect("/metrics answers");
    assert_eq!(code, 200);
    assert!(
        metrics.lines().any(|l| l
            .strip_prefix("grpc_balancer_operator_reconciles_total{controller=\"grpcbalancing\"} ")
            .is_some_and(|n| n != "0")),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l
            .starts_with("grpc_balancer_operator_webhook_admission_review_duration_seconds_count")),
        "{metrics}"
    );
    assert!(
        operator.terminate(TIMEOUT).await,
        "the operator stops on SIGTERM"
    );

    // An upgrade keeps the certificate the operator wrote.
    let crt = |s: Secret| s.data.and_then(|d| d.get("tls.crt").cloned());
    let before = crt(secrets
        .get(&format!("{RELEASE}-webhook-tls"))
        .await
        .expect("Secret"));
    helm(
        &cp,
        &[
            "upgrade",
            RELEASE,
            chart,
            "--namespace",
            RELEASE_NS,
            "--reuse-values",
            "--set",
            "operator.replicas=3",
        ],
    );
    let after = crt(secrets
        .get(&format!("{RELEASE}-webhook-tls"))
        .await
        .expect("Secret"));
    assert!(
        before.is_some() && before == after,
        "the certificate changed"
    );

    // The comparison.
    let records = recorder.records();
    let resource_calls: Vec<&Record> = records.iter().filter(|r| !r.resource.is_empty()).collect();
    let used: BTreeSet<Permission> = resource_calls.iter().map(|r| permission(r)).collect();
    let cluster_role = Api::<ClusterRole>::all(admin.clone())
        .get(RELEASE)
        .await
        .expect("the chart's ClusterRole");
    let role = Api::<Role>::namespaced(admin.clone(), RELEASE_NS)
        .get(RELEASE)
        .await
        .expect("the chart's Role");
    let mut allowed = granted(cluster_role.rules.as_deref().unwrap_or_default());
    allowed.extend(granted(role.rules.as_deref().unwrap_or_default()));
    // The Role applies in the release namespace only: a call it alone
    // grants elsewhere would have been refused, which the 403s show.
    let forbidden: Vec<&&Record> = resource_calls.iter().filter(|r| r.status == 403).collect();
    let missing: Vec<_> = used.difference(&allowed).collect();
    let unused: Vec<_> = allowed.difference(&used).collect();
    assert!(
        !resource_calls.is_empty()
            && forbidden.is_empty()
            && missing.is_empty()
            && unused.is_empty(),
        "{} API calls recorded; used {used:#?}\nrefused (403) {forbidden:#?}\nmissing from the chart {missing:#?}\ngranted but unused {unused:#?}\noperator log:\n{}",
        records.len(),
        operator.logs()
    );

    drop(recorder);
    cp.down().await.expect("the control plane stops");
}
