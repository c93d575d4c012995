//! Drain, config reload, the admin server and the `check` command.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::*;
use grpc_balancer_crds::config::{PolicyKind, to_yaml};
use grpc_balancer_greeter::fault_headers;
use grpc_balancer_proxy::ConfigSource;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_finishes_calls_in_flight() {
    let (_bs, proxy) = greeter_proxy(2, PolicyKind::RoundRobin).await;
    let client = proxy.client("greeter").await;
    let mut calls = Vec::new();
    for _ in 0..10 {
        let mut c = client.clone();
        calls.push(tokio::spawn(async move {
            let mut req = tonic::Request::new(hello("slow"));
            req.metadata_mut()
                .insert(fault_headers::DELAY_MS, "400".parse().expect("ascii"));
            c.say_hello(req).await
        }));
    }
    let admin = proxy.admin();
    let view = proxy.running.as_ref().expect("running").view();
    eventually(Duration::from_secs(5), "10 calls in flight", || {
        let in_flight: u32 = view.endpoints().iter().map(|e| e.in_flight).sum();
        async move { in_flight == 10 }
    })
    .await;
    let started = tokio::time::Instant::now();
    let stopping = tokio::spawn(proxy.stop());
    // /ready turns 503 while draining: the admin server stays up until the
    // calls in flight are done.
    eventually(
        Duration::from_secs(2),
        "/ready is 503 while draining",
        || async move {
            let (status, body) = admin_get(admin, "/ready").await;
            status == 503 && body.contains("draining")
        },
    )
    .await;
    for c in calls {
        c.await
            .expect("task")
            .expect("calls in flight finish during the drain");
    }
    stopping.await.expect("proxy stops");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "admin server closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reload_under_steady_calls_fails_nothing() {
    let bs = backends(3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    let first = balancing(
        "greeter",
        PolicyKind::RoundRobin,
        vec![static_subset("all", 1, &[bs[0].addr(), bs[1].addr()])],
    );
    let other = balancing(
        "other",
        PolicyKind::Random,
        vec![static_subset("all", 1, &[bs[2].addr()])],
    );
    std::fs::write(
        &path,
        to_yaml(&config(vec![first.clone(), other.clone()])).expect("yaml"),
    )
    .expect("write");
    let proxy = start(test_settings(ConfigSource::File(path.clone()))).await;
    wait_ready(&proxy, "greeter", 2).await;
    wait_ready(&proxy, "other", 1).await;
    let greeter_addr = proxy.addr("greeter");
    let other_addr = proxy.addr("other");

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for target in [greeter_addr, greeter_addr, greeter_addr, other_addr] {
        let (stop, ok) = (stop.clone(), ok.clone());
        workers.push(tokio::spawn(async move {
            let mut c = grpc_balancer_greeter::connect(&target.to_string())
                .await
                .expect("connect");
            let mut failed = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                match say_hello(&mut c).await {
                    Ok(b) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        seen.insert(b);
                    }
                    Err(s) => failed.push(s),
                }
            }
            (failed, seen)
        }));
    }
    let progress = |n: usize| {
        let ok = ok.clone();
        move || {
            let ok = ok.clone();
            async move { ok.load(Ordering::Relaxed) >= n }
        }
    };
    eventually(Duration::from_secs(5), "calls flow", progress(50)).await;

    // Change "greeter" (policy and a third endpoint); leave "other" alone.
    let mut changed = first.clone();
    changed.policy.kind = PolicyKind::LeastRequest;
    changed.subsets = vec![static_subset(
        "all",
        1,
        &[bs[0].addr(), bs[1].addr(), bs[2].addr()],
    )];
    std::fs::write(
        &path,
        to_yaml(&config(vec![changed.clone(), other.clone()])).expect("yaml"),
    )
    .expect("write");
    let admin = proxy.admin();
    eventually(Duration::from_secs(5), "reload applied", || async move {
        admin_get(admin, "/config")
            .await
            .1
            .contains("least_request")
    })
    .await;
    let done = ok.load(Ordering::Relaxed);
    eventually(
        Duration::from_secs(5),
        "calls flow on the new config",
        progress(done + 100),
    )
    .await;

    // An invalid file is refused; the last good config stays.
    std::fs::write(
        &path,
        "balancings:\n  - name: Bad Name\n    listen: nowhere\n",
    )
    .expect("write");
    eventually(
        Duration::from_secs(5),
        "invalid reload counted",
        || async move {
            admin_get(admin, "/metrics")
                .await
                .1
                .contains("grpc_balancer_config_reloads_total{result=\"invalid\"} 1")
        },
    )
    .await;
    let done = ok.load(Ordering::Relaxed);
    eventually(
        Duration::from_secs(5),
        "calls flow after the invalid file",
        progress(done + 50),
    )
    .await;
    assert_eq!(proxy.addr("greeter"), greeter_addr, "listener kept");
    assert_eq!(proxy.addr("other"), other_addr, "untouched balancing kept");
    stop.store(true, Ordering::Relaxed);
    let mut greeter_backends = std::collections::BTreeSet::new();
    for (i, w) in workers.into_iter().enumerate() {
        let (failed, seen) = w.await.expect("worker");
        assert!(
            failed.is_empty(),
            "worker {i}: failed calls during reload: {failed:?}"
        );
        if i < 3 {
            greeter_backends.extend(seen);
        }
    }
    assert!(
        greeter_backends.contains("b2"),
        "the new endpoint got calls: {greeter_backends:?}"
    );
    assert!(ok.load(Ordering::Relaxed) > 100);

    // Removing a balancing closes its listener.
    std::fs::write(&path, to_yaml(&config(vec![changed])).expect("yaml")).expect("write");
    eventually(
        Duration::from_secs(5),
        "removed balancing stops listening",
        || async move { tokio::net::TcpStream::connect(other_addr).await.is_err() },
    )
    .await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_config_file_is_an_empty_config_until_it_appears() {
    let bs = backends(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    let proxy = start(test_settings(ConfigSource::File(path.clone()))).await;
    let (status, _) = admin_get(proxy.admin(), "/ready").await;
    assert_eq!(
        status, 200,
        "ready with no balancings, so the app can start"
    );
    let b = balancing(
        "late",
        PolicyKind::PeakEwma,
        vec![static_subset("all", 1, &[bs[0].addr()])],
    );
    let addr = b.listen.clone();
    std::fs::write(&path, to_yaml(&config(vec![b])).expect("yaml")).expect("write");
    eventually(
        Duration::from_secs(5),
        "balancing started from the new file",
        || {
            // The listener accepts before the proxy has recorded it, so wait
            // for both.
            let recorded = proxy
                .running
                .as_ref()
                .and_then(|r| r.listener_addr("late"))
                .is_some();
            let addr = addr.clone();
            async move { recorded && tokio::net::TcpStream::connect(addr).await.is_ok() }
        },
    )
    .await;
    let mut client = proxy.client("late").await;
    assert_eq!(say_hello(&mut client).await.expect("call"), "b0");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_answer() {
    let (_bs, proxy) = greeter_proxy(2, PolicyKind::RoundRobin).await;
    let mut client = proxy.client("greeter").await;
    spread(&mut client, 10).await;
    let admin = proxy.admin();
    assert_eq!(admin_get(admin, "/live").await.0, 200);
    assert_eq!(admin_get(admin, "/ready").await.0, 200);
    assert_eq!(admin_get(admin, "/nope").await.0, 404);
    let (status, metrics) = admin_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    for want in [
        "grpc_balancer_calls_total{balancing=\"greeter\",subset=\"all\",endpoint=",
        "grpc_status=\"0\"} 5",
        "grpc_balancer_call_duration_seconds_bucket",
        "grpc_balancer_endpoints{balancing=\"greeter\",subset=\"all\",state=\"ready\"} 2",
        "grpc_balancer_calls_in_flight{balancing=\"greeter\"} 0",
        "grpc_balancer_discovery_refreshes_total{balancing=\"greeter\",subset=\"all\",result=\"ok\"} 1",
    ] {
        assert!(metrics.contains(want), "missing {want:?} in\n{metrics}");
    }
    let (_, cfg) = admin_get(admin, "/config").await;
    let cfg: serde_json::Value = serde_json::from_str(&cfg).expect("/config is JSON");
    assert_eq!(cfg["balancings"][0]["name"], "greeter");
    let (_, eps) = admin_get(admin, "/endpoints").await;
    let eps: serde_json::Value = serde_json::from_str(&eps).expect("/endpoints is JSON");
    let list = eps["balancings"][0]["subsets"][0]["endpoints"]
        .as_array()
        .expect("endpoints");
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|e| e["state"] == "ready"), "{eps}");
    proxy.stop().await;
}

#[test]
fn check_reports_every_error_with_its_path() {
    let bin = env!("CARGO_BIN_EXE_grpc-balancer-proxy");
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "balancings:\n  - name: Bad Name\n    listen: nowhere\n    policy: { kind: ring_hash }\n    subsets:\n      - name: a\n        discovery: { static: [nope] }\n",
    )
    .expect("write");
    let out = std::process::Command::new(bin)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .expect("run check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for path in [
        "balancings[0].name",
        "balancings[0].listen",
        "balancings[0].policy.header",
        "balancings[0].subsets[0].discovery.static[0]",
    ] {
        assert!(text.contains(path), "missing {path} in:\n{text}");
    }
    for garbage in [
        "\u{0}\u{1}",
        "balancings: 7",
        "- [",
        "balancings:\n  - listn: x\n",
    ] {
        std::fs::write(&bad, garbage).expect("write");
        let out = std::process::Command::new(bin)
            .args(["check", "--config"])
            .arg(&bad)
            .output()
            .expect("run check");
        assert_eq!(out.status.code(), Some(1), "{garbage:?}");
        assert!(!out.stdout.is_empty(), "{garbage:?} printed nothing");
    }
    let missing = std::process::Command::new(bin)
        .args(["check", "--config", "/nonexistent/config.yaml"])
        .output()
        .expect("run check");
    assert_eq!(missing.status.code(), Some(1));

    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "balancings:\n  - name: greeter\n    listen: 127.0.0.1:15001\n    subsets:\n      - name: all\n        discovery: { static: [127.0.0.1:50051] }\n",
    )
    .expect("write");
    let out = std::process::Command::new(bin)
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .expect("run check");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Weight changes one after another under concurrent calls (what a
/// `GrpcBalancing` edit does): each builds a new balancing and retires the
/// old one, and a call the old one held at that moment must still be served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_weight_changes_under_concurrent_calls_fail_nothing() {
    let bs = backends(3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    let base = balancing(
        "greeter",
        PolicyKind::RoundRobin,
        vec![
            static_subset("v1", 75, &[bs[0].addr(), bs[1].addr()]),
            static_subset("v2", 25, &[bs[2].addr()]),
        ],
    );
    let with_weights = |v1: u32, v2: u32| {
        let mut b = base.clone();
        b.subsets[0].weight = v1;
        b.subsets[1].weight = v2;
        config(vec![b])
    };
    std::fs::write(&path, to_yaml(&with_weights(75, 25)).expect("yaml")).expect("write");
    let proxy = start(test_settings(ConfigSource::File(path.clone()))).await;
    wait_ready(&proxy, "greeter", 3).await;
    let target = proxy.addr("greeter");

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (stop, ok) = (stop.clone(), ok.clone());
        workers.push(tokio::spawn(async move {
            let mut c = grpc_balancer_greeter::connect(&target.to_string())
                .await
                .expect("connect");
            let mut failed = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match say_hello(&mut c).await {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(s) => failed.push(s),
                }
            }
            failed
        }));
    }
    let admin = proxy.admin();
    for round in 1..=30u32 {
        let (v1, v2) = if round % 2 == 0 { (75, 25) } else { (50, 50) };
        std::fs::write(&path, to_yaml(&with_weights(v1, v2)).expect("yaml")).expect("write");
        let wanted = format!(
            "grpc_balancer_config_reloads_total{{result=\"applied\"}} {}",
            round + 1
        );
        eventually(Duration::from_secs(10), "the change applied", || {
            let wanted = wanted.clone();
            async move { admin_get(admin, "/metrics").await.1.contains(&wanted) }
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut failed = Vec::new();
    for w in workers {
        failed.extend(w.await.expect("worker"));
    }
    assert!(ok.load(Ordering::Relaxed) > 100, "the calls ran");
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
    proxy.stop().await;
}
