//! Playing the kubelet: there is no kubelet in the test control plane, so tests set pod
//! status themselves, and then run the real backend process on the pod's 127.0.0.x IP.
//!
//! Pods are bound to the fake Node [`crate::NODE_NAME`] (there is no scheduler either):
//! the EndpointSlice controller skips pods whose Node does not exist.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::NODE_NAME;

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Binds the pod to the fake Node if it is not bound yet (what the scheduler would do).
pub async fn bind_pod(client: &Client, ns: &str, name: &str) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = pods
        .get(name)
        .await
        .with_context(|| format!("getting pod {ns}/{name}"))?;
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
    {
        return Ok(());
    }
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ns.to_owned()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(NODE_NAME.into()),
            ..Default::default()
        },
    };
    let _: Value = pods
        .create_subresource("binding", name, &PostParams::default(), &binding)
        .await
        .with_context(|| format!("binding pod {ns}/{name} to node {NODE_NAME}"))?;
    Ok(())
}

/// Marks a pod as running on `ip` (which must be in 127.0.0.0/8, since tests may only
/// send traffic there), with all containers started and ready or not per `ready`.
pub async fn set_pod_running(
    client: &Client,
    ns: &str,
    name: &str,
    ip: Ipv4Addr,
    ready: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(ip.is_loopback(), "pod IP {ip} is not in 127.0.0.0/8");
    bind_pod(client, ns, name).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = pods
        .get(name)
        .await
        .with_context(|| format!("getting pod {ns}/{name}"))?;
    report_running(&pods, ns, name, &pod, ip, ready).await
}

/// Flips readiness of a pod that [`set_pod_running`] has set running.
pub async fn set_pod_ready(
    client: &Client,
    ns: &str,
    name: &str,
    ready: bool,
) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = pods
        .get(name)
        .await
        .with_context(|| format!("getting pod {ns}/{name}"))?;
    let ip: Ipv4Addr = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .context("pod has no podIP; call set_pod_running first")?
        .parse()
        .context("pod has a non-IPv4 podIP")?;
    report_running(&pods, ns, name, &pod, ip, ready).await
}

/// Writes the status a kubelet would report for `pod` running on `ip`.
async fn report_running(
    pods: &Api<Pod>,
    ns: &str,
    name: &str,
    pod: &Pod,
    ip: Ipv4Addr,
    ready: bool,
) -> anyhow::Result<()> {
    let status = running_status(pod, ip, ready, &now());
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": status })),
    )
    .await
    .with_context(|| format!("setting status of pod {ns}/{name}"))?;
    Ok(())
}

/// The status a kubelet would report for a running pod.
fn running_status(pod: &Pod, ip: Ipv4Addr, ready: bool, now: &str) -> Value {
    let spec = pod.spec.clone().unwrap_or_default();
    let prev = pod.status.clone().unwrap_or_default();
    // Keep transition times stable when a condition does not change, as a kubelet does.
    let since = |ty: &str, status: &str| {
        prev.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == ty && c.status == status)
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| now.to_owned())
    };
    let started_at = prev
        .start_time
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_else(|| now.to_owned());
    let cond = |ty: &str, ok: bool| {
        let s = if ok { "True" } else { "False" };
        json!({ "type": ty, "status": s, "lastProbeTime": null, "lastTransitionTime": since(ty, s) })
    };
    let containers: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "containerID": format!("fake://{}", c.name),
                "ready": ready, "started": true, "restartCount": 0,
                "state": { "running": { "startedAt": started_at } },
            })
        })
        .collect();
    // Native sidecars (init containers with restartPolicy Always) keep running and count
    // for readiness; plain init containers have completed.
    let init: Vec<Value> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| {
            let sidecar = c.restart_policy.as_deref() == Some("Always");
            let state = if sidecar {
                json!({ "running": { "startedAt": started_at } })
            } else {
                json!({ "terminated": { "exitCode": 0, "reason": "Completed", "startedAt": started_at, "finishedAt": started_at } })
            };
            json!({
                "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "containerID": format!("fake://{}", c.name),
                "ready": if sidecar { ready } else { true }, "started": sidecar, "restartCount": 0,
                "state": state,
            })
        })
        .collect();
    json!({
        "phase": "Running",
        "hostIP": "127.0.0.1",
        "hostIPs": [{ "ip": "127.0.0.1" }],
        "podIP": ip.to_string(),
        "podIPs": [{ "ip": ip.to_string() }],
        "startTime": started_at,
        "qosClass": prev.qos_class.clone().unwrap_or_else(|| "BestEffort".into()),
        "conditions": [
            cond("PodReadyToStartContainers", true),
            cond("Initialized", true),
            cond("Ready", ready),
            cond("ContainersReady", ready),
            cond("PodScheduled", true),
        ],
        "containerStatuses": containers,
        "initContainerStatuses": init,
    })
}

/// Deletes a pod with grace period 0 and waits until it is gone. A graceful deletion
/// would never finish here: only a kubelet confirms that containers stopped.
pub async fn delete_pod(client: &Client, ns: &str, name: &str) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    match pods
        .delete(
            name,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("deleting pod {ns}/{name}")),
    }
    crate::poll::try_poll_until(Duration::from_secs(30), || async {
        match pods.get_opt(name).await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(anyhow::anyhow!("pod {ns}/{name} still exists")),
            Err(e) => Err(e.into()),
        }
    })
    .await
}

/// Finishes the termination of every pod in `ns` that something (a ReplicaSet scaling
/// down, a namespace deletion) deleted gracefully, as the kubelet would once the
/// containers stopped. Returns the names of the pods removed.
pub async fn finish_terminating_pods(client: &Client, ns: &str) -> anyhow::Result<Vec<String>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut done = Vec::new();
    for p in pods.list(&ListParams::default()).await?.items {
        if p.metadata.deletion_timestamp.is_some()
            && let Some(name) = p.metadata.name
        {
            delete_pod(client, ns, &name).await?;
            done.push(name);
        }
    }
    Ok(done)
}
