//! The choice between subsets: keyed by the ring-hash key (affinity across
//! subsets and across proxies), and correct for any number of subsets.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::*;
use grpc_balancer_crds::config::{self, Balancing, PolicyKind};
use grpc_balancer_greeter::pb::greeter_client::GreeterClient;
use tonic::transport::Channel;

async fn call_with_key(c: &mut GreeterClient<Channel>, key: &str) -> String {
    let mut req = tonic::Request::new(hello("key"));
    req.metadata_mut()
        .insert("x-user", key.parse().expect("ascii"));
    c.say_hello(req)
        .await
        .unwrap_or_else(|s| panic!("call with key {key}: {s:?}"))
        .into_inner()
        .backend
}

fn hashed(bs: &[grpc_balancer_greeter::RunningBackend], weights: [u32; 2]) -> Balancing {
    let mut b = balancing(
        "greeter",
        PolicyKind::RingHash,
        vec![
            static_subset("v1", weights[0], &[bs[0].addr(), bs[1].addr()]),
            static_subset("v2", weights[1], &[bs[2].addr(), bs[3].addr()]),
        ],
    );
    b.policy.header = Some("x-user".into());
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_hash_keeps_a_key_on_one_backend_across_subsets_and_proxies() {
    let bs = backends(4).await;
    let first = start_proxy(config(vec![hashed(&bs, [1, 1])])).await;
    let second = start_proxy(config(vec![hashed(&bs, [1, 1])])).await;
    wait_ready(&first, "greeter", 4).await;
    wait_ready(&second, "greeter", 4).await;
    let mut c1 = first.client("greeter").await;
    let mut c2 = second.client("greeter").await;
    let mut by_key = BTreeMap::new();
    for k in 0..40 {
        let key = format!("user-{k}");
        let mut seen = BTreeSet::new();
        for _ in 0..5 {
            seen.insert(call_with_key(&mut c1, &key).await);
            seen.insert(call_with_key(&mut c2, &key).await);
        }
        assert_eq!(seen.len(), 1, "key {key} went to {seen:?}");
        by_key.insert(key, seen.into_iter().next().expect("one"));
    }
    // Both subsets get keys (weights 1:1).
    let used: BTreeSet<&String> = by_key.values().collect();
    assert!(
        used.iter().any(|b| *b == "b0" || *b == "b1")
            && used.iter().any(|b| *b == "b2" || *b == "b3"),
        "{by_key:?}"
    );
    first.stop().await;
    second.stop().await;

    // Same weights, a new proxy: the same answers. Other weights move keys
    // towards the heavier subset, and keep the others where they were.
    let third = start_proxy(config(vec![hashed(&bs, [1, 1])])).await;
    wait_ready(&third, "greeter", 4).await;
    let mut c3 = third.client("greeter").await;
    for (key, backend) in &by_key {
        assert_eq!(&call_with_key(&mut c3, key).await, backend, "{key}");
    }
    third.stop().await;
    let heavy = start_proxy(config(vec![hashed(&bs, [1, 9])])).await;
    wait_ready(&heavy, "greeter", 4).await;
    let mut c4 = heavy.client("greeter").await;
    let mut moved_to_v2 = 0;
    for (key, backend) in &by_key {
        let now = call_with_key(&mut c4, key).await;
        let was_v2 = backend == "b2" || backend == "b3";
        let is_v2 = now == "b2" || now == "b3";
        assert!(!was_v2 || is_v2, "{key} left the subset that got heavier");
        if !was_v2 && is_v2 {
            moved_to_v2 += 1;
        }
    }
    assert!(moved_to_v2 > 0, "no key moved to the heavier subset");
    heavy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_subset_count_is_reachable() {
    // 64 subsets without endpoints, then one with: subset 64 used to share
    // its "already tried" bit with subset 0.
    let bs = backends(1).await;
    let mut subsets: Vec<_> = (0..64)
        .map(|i| static_subset(&format!("empty-{i}"), 1, &[]))
        .collect();
    subsets.push(static_subset("last", 1, &[bs[0].addr()]));
    let mut b = balancing("greeter", PolicyKind::RoundRobin, subsets);
    b.queue.max_wait = config::Duration::from_millis(1);
    let proxy = start_proxy(config(vec![b])).await;
    wait_ready(&proxy, "greeter", 1).await;
    let mut c = proxy.client("greeter").await;
    let mut failed = 0;
    for _ in 0..100 {
        if say_hello(&mut c).await.is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "calls failed though subset 64 has an endpoint");
    proxy.stop().await;
}
