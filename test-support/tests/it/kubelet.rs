use std::net::Ipv4Addr;

use grpc_balancer_test_support::{ControlPlane, NODE_NAME, TestNamespace, kubelet};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::DeleteParams;

use crate::{pod, pp};

#[tokio::test]
async fn played_pod_is_bound_running_and_graceful_deletion_is_finished() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    let ns = TestNamespace::new(&client, "kubelet").await;
    let pods: Api<Pod> = ns.api();
    pods.create(&pp(), &pod("p", &[("app", "x")]))
        .await
        .expect("create pod");
    kubelet::set_pod_running(&client, ns.name(), "p", Ipv4Addr::new(127, 0, 0, 41), true)
        .await
        .expect("run");

    let p = pods.get("p").await.expect("get pod");
    assert_eq!(
        p.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(NODE_NAME)
    );
    let status = p.status.expect("status");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some("127.0.0.41"));
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(ready.status, "True");

    // Non-loopback IPs are refused: tests may only send traffic to 127.0.0.0/8.
    assert!(
        kubelet::set_pod_running(&client, ns.name(), "p", Ipv4Addr::new(10, 0, 0, 1), true)
            .await
            .is_err()
    );

    // A graceful deletion (what a ReplicaSet does) stays pending without a kubelet ...
    pods.delete("p", &DeleteParams::default())
        .await
        .expect("graceful delete");
    let p = pods.get("p").await.expect("pod still there");
    assert!(p.metadata.deletion_timestamp.is_some());
    // ... until the kubelet stand-in finishes it.
    let done = kubelet::finish_terminating_pods(&client, ns.name())
        .await
        .expect("finish");
    assert_eq!(done, vec!["p".to_owned()]);
    assert!(pods.get_opt("p").await.expect("get").is_none());
}
