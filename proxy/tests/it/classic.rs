//! The classic experiment: what kube-proxy's per-connection balancing does to
//! gRPC, and what the proxy does instead.

use std::collections::BTreeMap;

use crate::support::*;
use grpc_balancer_crds::config::PolicyKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_direct_lands_on_one_backend_and_the_proxy_spreads_it() {
    let bs = backends(3).await;
    let addrs: Vec<_> = bs.iter().map(|b| b.addr()).collect();

    // Directly: one HTTP/2 connection, every call on the backend it reached.
    let mut direct = grpc_balancer_greeter::connect(&addrs[0].to_string())
        .await
        .expect("connect directly");
    let counts = spread(&mut direct, 300).await;
    assert_eq!(counts.len(), 1, "direct calls spread: {counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 300);

    // Through the proxy with round robin, still over ONE client connection.
    let proxy = start_proxy(config(vec![greeter_balancing(&bs, PolicyKind::RoundRobin)])).await;
    wait_ready(&proxy, "greeter", 3).await;
    let mut client = proxy.client("greeter").await;
    let counts = spread(&mut client, 300).await;
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (backend, n) in &counts {
        assert!(
            (90..=110).contains(n),
            "{backend} got {n} of 300: {counts:?}"
        );
    }
    // The backends agree with what the replies said.
    for b in &bs {
        let seen = counts.get(b.name()).copied().unwrap_or(0) as u64;
        let own = b.counts().say_hello - if b.addr() == addrs[0] { 300 } else { 0 };
        assert_eq!(
            own,
            seen,
            "backend {} counted {own}, replies said {seen}",
            b.name()
        );
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bidi_stream_stays_on_one_backend() {
    let (_bs, proxy) = greeter_proxy(3, PolicyKind::RoundRobin).await;
    let mut client = proxy.client("greeter").await;
    for _ in 0..3 {
        let requests = futures::stream::iter((0..100).map(|i| hello(&format!("m{i}"))));
        let mut replies = client
            .chat(requests)
            .await
            .expect("chat starts")
            .into_inner();
        let mut backends = BTreeMap::new();
        let mut n = 0;
        while let Some(reply) = replies.message().await.expect("chat reply") {
            assert_eq!(reply.sequence, n, "replies in order");
            n += 1;
            *backends.entry(reply.backend).or_insert(0) += 1;
        }
        assert_eq!(n, 100, "every message answered");
        assert_eq!(
            backends.len(),
            1,
            "stream moved between backends: {backends:?}"
        );
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_subsets_split_75_25() {
    let v1 = backends(2).await;
    let v2 = [backend("v2-a").await, backend("v2-b").await];
    let proxy = start_proxy(config(vec![balancing(
        "greeter",
        PolicyKind::PeakEwma,
        vec![
            static_subset("v1", 75, &v1.iter().map(|b| b.addr()).collect::<Vec<_>>()),
            static_subset("v2", 25, &v2.iter().map(|b| b.addr()).collect::<Vec<_>>()),
        ],
    )]))
    .await;
    wait_ready(&proxy, "greeter", 4).await;
    let client = proxy.client("greeter").await;
    // Concurrent calls, as a real client would make them.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move { spread(&mut c, 500).await }));
    }
    let mut total: BTreeMap<String, usize> = BTreeMap::new();
    for t in tasks {
        for (k, v) in t.await.expect("task") {
            *total.entry(k).or_insert(0) += v;
        }
    }
    let v2_calls: usize = total
        .iter()
        .filter(|(k, _)| k.starts_with("v2"))
        .map(|(_, v)| v)
        .sum();
    let all: usize = total.values().sum();
    assert_eq!(all, 4000);
    let share = v2_calls as f64 * 100.0 / all as f64;
    assert!(
        (22.0..=28.0).contains(&share),
        "v2 got {share:.1}% ({total:?})"
    );
    proxy.stop().await;
}
