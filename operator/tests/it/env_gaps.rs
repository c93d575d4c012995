//! A pod created while its balancing was not in the proxy config gets no
//! `GRPC_BALANCER_<NAME>_ADDR`; the balancing's status names it
//! (`podsWithoutBalancing`) once the balancing is rendered, so the user
//! knows to restart it. Real apiserver, the real webhook and operator in
//! this process.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::support::{RunningOperator, TIMEOUT, backend_pod, install_crd};
use grpc_balancer_crds::v1alpha1::GrpcBalancing;
use grpc_balancer_operator::render::fixtures::with_spec;
use grpc_balancer_test_support::{ControlPlane, poll_until};
use grpc_balancer_webhook::test_util::{InProcessWebhook, webhook_namespace};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use serde_json::{Value, json};

const ENV: &str = "GRPC_BALANCER_LATE_ADDR";

fn client_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": name, "annotations": { "grpcbalancer.io/sidecar.inject": "true" } },
        "spec": { "containers": [{ "name": "app", "image": "registry.invalid/client:1" }] }
    }))
    .expect("a pod")
}

fn has_env(pod: &Pod) -> bool {
    pod.spec.iter().flat_map(|s| &s.containers).any(|c| {
        c.env
            .iter()
            .flatten()
            .any(|e| e.name == ENV && e.value.is_some())
    })
}

fn injected(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .any(|c| c.name == "grpc-balancer-proxy")
}

/// `status.podsWithoutBalancing` as stored (read untyped: what a user's
/// `kubectl get -o yaml` shows).
async fn pods_without_balancing(
    api: &Api<DynamicObject>,
    name: &str,
) -> Result<Vec<String>, String> {
    let object = api.get(name).await.map_err(|e| e.to_string())?;
    let status = object.data.get("status").cloned().unwrap_or(Value::Null);
    Ok(status["podsWithoutBalancing"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect())
}

#[tokio::test]
async fn pods_created_before_their_balancing_was_rendered_are_listed() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    install_crd(&client).await;
    let ns = webhook_namespace(&client, "op-env-gaps", &[]).await;
    let op = RunningOperator::start(
        cp,
        ns.name(),
        "op-env-gaps",
        "op-env-gaps",
        Duration::from_secs(4),
    )
    .await;
    let webhook = InProcessWebhook::start(&client, &ns, "Fail", "native").await;
    let pods: Api<Pod> = ns.api();
    let gbs: Api<GrpcBalancing> = ns.api();
    let untyped: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns.name(),
        &ApiResource::erase::<GrpcBalancing>(&()),
    );

    // A named backend port no backend has yet: not rendered (PortUnresolved).
    gbs.create(
        &PostParams::default(),
        &with_spec(
            "late",
            "selector: { app: late }\nport: grpc\nlistenerPort: 15001\n",
        ),
    )
    .await
    .expect("created");
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    poll_until("the apiserver to call the webhook", TIMEOUT, || async {
        match pods.create(&dry_run, &client_pod("probe")).await {
            Ok(p) if injected(&p) => Ok(()),
            Ok(_) => Err("created without the proxy".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    let early = pods
        .create(&PostParams::default(), &client_pod("early-client"))
        .await
        .expect("admitted");
    assert!(injected(&early), "the proxy is injected");
    assert!(
        !has_env(&early),
        "the env var of a balancing not rendered yet?"
    );

    // A backend shows the port: the balancing is rendered; the early pod
    // lacks its env var and the status says so.
    backend_pod(
        &client,
        ns.name(),
        "late-backend",
        &[("app", "late")],
        "grpc",
        50051,
        Ipv4Addr::new(127, 0, 61, 10),
    )
    .await;
    let listed = poll_until("the early pod listed", TIMEOUT, || async {
        let listed = pods_without_balancing(&untyped, "late").await?;
        if listed.is_empty() {
            Err("none listed".to_owned())
        } else {
            Ok(listed)
        }
    })
    .await;
    assert_eq!(listed, ["early-client"]);

    // A pod created now gets the env var and is not listed.
    poll_until("the webhook to give the env var", TIMEOUT, || async {
        match pods.create(&dry_run, &client_pod("probe")).await {
            Ok(p) if has_env(&p) => Ok(()),
            Ok(_) => Err("no env var yet".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    let later = pods
        .create(&PostParams::default(), &client_pod("later-client"))
        .await
        .expect("admitted");
    assert!(has_env(&later));
    // Restarting the early pod (here: deleting it) empties the list; the
    // later pod, in the store by then, is not in it.
    pods.delete("early-client", &DeleteParams::default().grace_period(0))
        .await
        .expect("deleted");
    poll_until("the list to empty", TIMEOUT, || async {
        let listed = pods_without_balancing(&untyped, "late").await?;
        if listed.is_empty() {
            Ok(())
        } else {
            Err(format!("{listed:?}"))
        }
    })
    .await;
    webhook.stop().await;
    op.shutdown().await;
}
