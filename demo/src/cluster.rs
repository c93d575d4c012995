//! The Kubernetes objects of the demo, written through the real apiserver.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use grpc_balancer_crds::annotations;
use grpc_balancer_crds::config::{CONFIG_MAP_KEY, CONFIG_MAP_NAME};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

const FIELD_MANAGER: &str = "grpc-balancer-demo";

/// Label of every object the demo creates, so a glance at the cluster tells them apart.
pub const DEMO_LABEL: (&str, &str) = ("app.kubernetes.io/part-of", "grpc-balancer-demo");

/// Installs the chart's CRD (server-side apply) and waits until it serves.
pub async fn install_crd(client: &Client, chart_crd: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(chart_crd)
        .with_context(|| format!("reading {}", chart_crd.display()))?;
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", chart_crd.display()))?;
    grpc_balancer_test_support::crd::apply_crd(client, &crd, FIELD_MANAGER, Duration::from_secs(30))
        .await
}

pub async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { DEMO_LABEL.0: DEMO_LABEL.1 } }
    }))?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating namespace {name}")),
    }
}

/// Starts deleting a namespace (the control plane finishes it in the background).
pub async fn delete_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting namespace {name}")),
    }
}

/// A greeter backend pod as a Deployment would create it.
pub async fn create_backend_pod(
    client: &Client,
    ns: &str,
    name: &str,
    version: &str,
    port: u16,
) -> anyhow::Result<()> {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": { "app": "greeter", "version": version, DEMO_LABEL.0: DEMO_LABEL.1 },
        },
        "spec": {
            "containers": [{
                "name": "greeter",
                "image": format!("greeter:{version}"),
                "ports": [{ "name": "grpc", "containerPort": port }],
            }],
        },
    }))?;
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("creating pod {ns}/{name}"))?;
    Ok(())
}

/// Plays the kubelet: the pod runs on `ip` and is Ready.
pub async fn set_running(
    client: &Client,
    ns: &str,
    name: &str,
    ip: Ipv4Addr,
) -> anyhow::Result<()> {
    grpc_balancer_test_support::kubelet::set_pod_running(client, ns, name, ip, true).await
}

pub async fn delete_pod(client: &Client, ns: &str, name: &str) -> anyhow::Result<()> {
    grpc_balancer_test_support::kubelet::delete_pod(client, ns, name).await
}

/// A client pod that asks for the sidecar; returns the pod the apiserver
/// stored, i.e. after the webhook mutated it.
pub async fn create_client_pod(client: &Client, ns: &str, name: &str) -> anyhow::Result<Pod> {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": { "app": "greeter-client", DEMO_LABEL.0: DEMO_LABEL.1 },
            "annotations": { annotations::INJECT: "true" },
        },
        "spec": {
            "containers": [{
                "name": "app",
                "image": "greeter-client:demo",
                "args": ["--target", "$(GRPC_BALANCER_GREETER_ADDR)"],
            }],
        },
    }))?;
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("creating pod {ns}/{name}"))
}

fn balancing_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("grpcbalancer.io", "v1alpha1", "GrpcBalancing");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "grpcbalancings");
    Api::namespaced_with(client.clone(), ns, &resource)
}

/// Server-side applies a `GrpcBalancing` given as JSON (name in metadata).
pub async fn apply_balancing(client: &Client, ns: &str, object: &Value) -> anyhow::Result<()> {
    let name = object["metadata"]["name"]
        .as_str()
        .context("the GrpcBalancing has no name")?;
    let object: DynamicObject = serde_json::from_value(object.clone())?;
    balancing_api(client, ns)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .with_context(|| format!("applying GrpcBalancing {ns}/{name}"))?;
    Ok(())
}

/// The `status` of a `GrpcBalancing` (Null until the operator wrote one).
pub async fn balancing_status(client: &Client, ns: &str, name: &str) -> anyhow::Result<Value> {
    let object = balancing_api(client, ns).get(name).await?;
    Ok(object.data.get("status").cloned().unwrap_or(Value::Null))
}

/// The proxy config the operator rendered for the namespace.
pub async fn proxy_config(client: &Client, ns: &str) -> anyhow::Result<String> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get(CONFIG_MAP_NAME)
        .await
        .with_context(|| format!("getting ConfigMap {ns}/{CONFIG_MAP_NAME}"))?;
    cm.data
        .and_then(|mut d| d.remove(CONFIG_MAP_KEY))
        .with_context(|| format!("ConfigMap {ns}/{CONFIG_MAP_NAME} has no key {CONFIG_MAP_KEY}"))
}

/// Server-side applies a MutatingWebhookConfiguration given as YAML (the
/// chart's, rendered by `helm template`); returns its name.
pub async fn apply_webhook_configuration(client: &Client, yaml: &str) -> anyhow::Result<String> {
    let mwc: MutatingWebhookConfiguration =
        serde_yaml::from_str(yaml).context("parsing the rendered MutatingWebhookConfiguration")?;
    let name = mwc
        .metadata
        .name
        .clone()
        .context("the MutatingWebhookConfiguration has no name")?;
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&mwc),
        )
        .await
        .with_context(|| format!("applying MutatingWebhookConfiguration {name}"))?;
    Ok(name)
}

/// Whether every webhook of the configuration has a `caBundle`.
pub async fn webhook_ca_bundle_set(client: &Client, name: &str) -> anyhow::Result<bool> {
    let mwc = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get(name)
        .await
        .with_context(|| format!("getting MutatingWebhookConfiguration {name}"))?;
    let webhooks = mwc.webhooks.unwrap_or_default();
    Ok(!webhooks.is_empty()
        && webhooks.iter().all(|w| {
            w.client_config
                .ca_bundle
                .as_ref()
                .is_some_and(|b| !b.0.is_empty())
        }))
}
