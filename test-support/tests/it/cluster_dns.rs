use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use grpc_balancer_test_support::cluster_dns::{ClusterDns, TTL};
use grpc_balancer_test_support::{ControlPlane, TestNamespace, kubelet, poll_until};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use tokio::net::UdpSocket;

use crate::{headless_service, pod, pp};

/// Sends one A query and returns the response code and the A records' addresses.
async fn query(
    server: SocketAddr,
    name: &str,
) -> anyhow::Result<(ResponseCode, BTreeSet<Ipv4Addr>)> {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    let mut msg = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    sock.send_to(&msg.to_vec()?, server).await?;
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await??;
    let resp = Message::from_vec(&buf[..n])?;
    anyhow::ensure!(resp.metadata.id == msg.metadata.id, "response id mismatch");
    let mut ips = BTreeSet::new();
    for r in &resp.answers {
        anyhow::ensure!(r.ttl == TTL, "ttl {}", r.ttl);
        if let RData::A(a) = &r.data {
            ips.insert(a.0);
        }
    }
    Ok((resp.metadata.response_code, ips))
}

fn rand_id() -> u16 {
    (std::process::id() as u16).wrapping_mul(31).wrapping_add(7)
}

#[tokio::test]
async fn cluster_dns_answers_ready_ips_of_headless_service() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    let ns = TestNamespace::new(&client, "dns").await;
    let pods: Api<Pod> = ns.api();
    let labels = [("app", "greeter")];
    for (name, last, ready) in [("g-1", 31u8, true), ("g-2", 32, true), ("g-3", 33, false)] {
        pods.create(&pp(), &pod(name, &labels))
            .await
            .expect("create pod");
        kubelet::set_pod_running(
            &client,
            ns.name(),
            name,
            Ipv4Addr::new(127, 0, 0, last),
            ready,
        )
        .await
        .expect("run");
    }
    let services: Api<Service> = ns.api();
    services
        .create(&pp(), &headless_service("greeter", &labels))
        .await
        .expect("create service");

    let dns = ClusterDns::start(client.clone())
        .await
        .expect("start cluster dns");
    let fqdn = format!("greeter.{}.svc.cluster.local.", ns.name());
    let want: BTreeSet<Ipv4Addr> =
        [Ipv4Addr::new(127, 0, 0, 31), Ipv4Addr::new(127, 0, 0, 32)].into();
    poll_until(
        "DNS answers the two ready pods",
        Duration::from_secs(30),
        || async {
            let got = query(dns.addr(), &fqdn).await?;
            if got == (ResponseCode::NoError, want.clone()) {
                Ok(())
            } else {
                Err(anyhow::anyhow!("{got:?}"))
            }
        },
    )
    .await;
    // The short forms resolve too.
    for name in [
        format!("greeter.{}.svc.", ns.name()),
        format!("greeter.{}.", ns.name()),
    ] {
        assert_eq!(
            query(dns.addr(), &name).await.expect("query"),
            (ResponseCode::NoError, want.clone()),
            "{name}"
        );
    }
    // Unknown names are NXDOMAIN.
    let unknown = format!("nope.{}.svc.cluster.local.", ns.name());
    assert_eq!(
        query(dns.addr(), &unknown).await.expect("query").0,
        ResponseCode::NXDomain
    );

    // Readiness changes show up.
    kubelet::set_pod_ready(&client, ns.name(), "g-3", true)
        .await
        .expect("ready");
    kubelet::set_pod_ready(&client, ns.name(), "g-1", false)
        .await
        .expect("not ready");
    let want: BTreeSet<Ipv4Addr> =
        [Ipv4Addr::new(127, 0, 0, 32), Ipv4Addr::new(127, 0, 0, 33)].into();
    poll_until("DNS follows readiness", Duration::from_secs(30), || async {
        let got = query(dns.addr(), &fqdn).await?;
        if got == (ResponseCode::NoError, want.clone()) {
            Ok(())
        } else {
            Err(anyhow::anyhow!("{got:?}"))
        }
    })
    .await;
}
