use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use grpc_balancer_test_support::{ControlPlane, TestNamespace, kubelet, poll_until};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;

use crate::{headless_service, pod, pp};

/// address → ready, over all slices of the service.
async fn endpoints(
    slices: &Api<EndpointSlice>,
    svc: &str,
) -> anyhow::Result<BTreeMap<String, bool>> {
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={svc}"));
    let mut out = BTreeMap::new();
    for s in slices.list(&lp).await?.items {
        // Produced by the real controller-manager, not by us.
        let managed_by = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("endpointslice.kubernetes.io/managed-by"));
        anyhow::ensure!(
            managed_by.map(String::as_str) == Some("endpointslice-controller.k8s.io"),
            "slice not from controller: {managed_by:?}"
        );
        for ep in s.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            for a in ep.addresses {
                out.insert(a, ready);
            }
        }
    }
    Ok(out)
}

#[tokio::test]
async fn controller_manager_publishes_played_pods_in_endpointslices() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    let ns = TestNamespace::new(&client, "eps").await;
    let pods: Api<Pod> = ns.api();
    let labels = [("app", "backend")];
    for i in 1..=3u8 {
        let name = format!("backend-{i}");
        pods.create(&pp(), &pod(&name, &labels))
            .await
            .expect("create pod");
        kubelet::set_pod_running(
            &client,
            ns.name(),
            &name,
            Ipv4Addr::new(127, 0, 0, 10 + i),
            true,
        )
        .await
        .expect("set pod running");
    }
    // A pod with other labels must not show up.
    pods.create(&pp(), &pod("other", &[("app", "other")]))
        .await
        .expect("create pod");
    kubelet::set_pod_running(
        &client,
        ns.name(),
        "other",
        Ipv4Addr::new(127, 0, 0, 20),
        true,
    )
    .await
    .expect("run");

    let services: Api<Service> = ns.api();
    services
        .create(&pp(), &headless_service("backend", &labels))
        .await
        .expect("create service");

    let slices: Api<EndpointSlice> = ns.api();
    let want: BTreeMap<String, bool> = [
        ("127.0.0.11", true),
        ("127.0.0.12", true),
        ("127.0.0.13", true),
    ]
    .map(|(a, r)| (a.to_owned(), r))
    .into();
    poll_until(
        "EndpointSlice lists the three ready pods",
        Duration::from_secs(30),
        || async {
            let got = endpoints(&slices, "backend").await?;
            if got == want {
                Ok(())
            } else {
                Err(anyhow::anyhow!("{got:?}"))
            }
        },
    )
    .await;

    kubelet::set_pod_ready(&client, ns.name(), "backend-2", false)
        .await
        .expect("flip not ready");
    let mut want_flipped = want.clone();
    want_flipped.insert("127.0.0.12".into(), false);
    poll_until(
        "backend-2 marked not ready in the slice",
        Duration::from_secs(30),
        || async {
            let got = endpoints(&slices, "backend").await?;
            if got == want_flipped {
                Ok(())
            } else {
                Err(anyhow::anyhow!("{got:?}"))
            }
        },
    )
    .await;

    kubelet::set_pod_ready(&client, ns.name(), "backend-2", true)
        .await
        .expect("flip ready");
    kubelet::delete_pod(&client, ns.name(), "backend-3")
        .await
        .expect("delete pod");
    let want_after: BTreeMap<String, bool> = [("127.0.0.11", true), ("127.0.0.12", true)]
        .map(|(a, r)| (a.to_owned(), r))
        .into();
    poll_until(
        "deleted pod leaves the slice",
        Duration::from_secs(30),
        || async {
            let got = endpoints(&slices, "backend").await?;
            if got == want_after {
                Ok(())
            } else {
                Err(anyhow::anyhow!("{got:?}"))
            }
        },
    )
    .await;
}
