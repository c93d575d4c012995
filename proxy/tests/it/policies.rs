//! Each policy's behaviour against real backends.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::support::*;
use grpc_balancer_crds::config::PolicyKind;
use grpc_balancer_greeter::{BackendOptions, Faults};

/// 8 concurrent workers; returns the share (in %) of calls each backend got.
async fn concurrent_spread(proxy: &Proxy, calls_per_worker: usize) -> BTreeMap<String, f64> {
    let client = proxy.client("greeter").await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            spread(&mut c, calls_per_worker).await
        }));
    }
    let mut total: BTreeMap<String, usize> = BTreeMap::new();
    for t in tasks {
        for (k, v) in t.await.expect("worker") {
            *total.entry(k).or_insert(0) += v;
        }
    }
    let all: usize = total.values().sum();
    total
        .into_iter()
        .map(|(k, v)| (k, v as f64 * 100.0 / all as f64))
        .collect()
}

async fn slow_backend_share(policy: PolicyKind) -> f64 {
    let fast = backends(2).await;
    let slow = grpc_balancer_greeter::spawn_server(
        "127.0.0.1:0".parse().expect("addr"),
        BackendOptions::named("slow").with_faults(Faults {
            delay: Some(Duration::from_millis(40)),
            ..Faults::default()
        }),
    )
    .await
    .expect("slow backend");
    let addrs = vec![fast[0].addr(), fast[1].addr(), slow.addr()];
    let proxy = start_proxy(config(vec![balancing(
        "greeter",
        policy,
        vec![static_subset("all", 1, &addrs)],
    )]))
    .await;
    wait_ready(&proxy, "greeter", 3).await;
    let shares = concurrent_spread(&proxy, 60).await;
    proxy.stop().await;
    shares.get("slow").copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_steers_away_from_a_slow_backend() {
    let share = slow_backend_share(PolicyKind::LeastRequest).await;
    assert!(
        share < 15.0,
        "slow backend got {share:.1}% (fair share 33%)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_steers_away_from_a_slow_backend() {
    let share = slow_backend_share(PolicyKind::PeakEwma).await;
    assert!(
        share < 15.0,
        "slow backend got {share:.1}% (fair share 33%)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_uses_every_backend() {
    let (_bs, proxy) = greeter_proxy(3, PolicyKind::Random).await;
    let mut client = proxy.client("greeter").await;
    let counts = spread(&mut client, 300).await;
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|n| *n >= 60), "{counts:?}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_hash_keeps_a_key_on_one_backend_and_spreads_keys() {
    let bs = backends(3).await;
    let mut b = greeter_balancing(&bs, PolicyKind::RingHash);
    b.policy.header = Some("x-user".into());
    let proxy = start_proxy(config(vec![b])).await;
    wait_ready(&proxy, "greeter", 3).await;
    let mut client = proxy.client("greeter").await;
    let mut owner_of = BTreeMap::new();
    for user in 0..40 {
        let mut seen = BTreeSet::new();
        for _ in 0..10 {
            let mut req = tonic::Request::new(hello("ring"));
            req.metadata_mut().insert(
                "x-user",
                format!("user-{user}").parse().expect("ascii metadata"),
            );
            let reply = client.say_hello(req).await.expect("call").into_inner();
            seen.insert(reply.backend);
        }
        assert_eq!(
            seen.len(),
            1,
            "user-{user} moved between backends: {seen:?}"
        );
        owner_of.insert(user, seen.into_iter().next().expect("one backend"));
    }
    let used: BTreeSet<_> = owner_of.values().collect();
    assert_eq!(
        used.len(),
        3,
        "40 keys should spread over all 3 backends: {owner_of:?}"
    );
    proxy.stop().await;
}
