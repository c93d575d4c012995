//! Retries, outlier ejection, health checks and upstream GOAWAY.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::*;
use grpc_balancer_crds::config::{self, HealthCheck, PolicyKind};
use grpc_balancer_greeter::{BackendOptions, Faults};
use tonic::Code;

/// An HTTP/2 server that refuses every stream with REFUSED_STREAM.
async fn refusing_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                }
            });
        }
    });
    addr
}

async fn metric(proxy: &Proxy, needle: &str) -> f64 {
    let (_, text) = admin_get(proxy.admin(), "/metrics").await;
    text.lines()
        .filter(|l| l.starts_with(needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_streams_and_dead_endpoints_are_retried_elsewhere() {
    let good = backends(2).await;
    let refusing = refusing_backend().await;
    let dead = free_addr();
    let addrs = vec![good[0].addr(), good[1].addr(), refusing, dead];
    let mut b = balancing(
        "greeter",
        PolicyKind::RoundRobin,
        vec![static_subset("all", 1, &addrs)],
    );
    // Keep the refusing endpoint in rotation: this tests retries, not ejection.
    b.outlier_detection.consecutive_failures = 0;
    b.retries.min_retries_per_second = 1000;
    let proxy = start_proxy(config(vec![b])).await;
    wait_ready(&proxy, "greeter", 3).await;
    let mut client = proxy.client("greeter").await;
    let counts = spread(&mut client, 200).await;
    assert_eq!(counts.values().sum::<usize>(), 200, "{counts:?}");
    let retried = metric(
        &proxy,
        "grpc_balancer_retries_total{balancing=\"greeter\",outcome=\"retried\"}",
    )
    .await;
    assert!(retried >= 30.0, "REFUSED_STREAM retries: {retried}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_bounds_retries() {
    let refusing = refusing_backend().await;
    let mut b = balancing(
        "greeter",
        PolicyKind::RoundRobin,
        vec![static_subset("all", 1, &[refusing])],
    );
    b.outlier_detection.consecutive_failures = 0;
    b.retries.max_attempts = 3;
    b.retries.budget_percent = 0;
    b.retries.min_retries_per_second = 5;
    let proxy = start_proxy(config(vec![b])).await;
    wait_ready(&proxy, "greeter", 1).await;
    let mut client = proxy.client("greeter").await;
    for _ in 0..20 {
        let status = say_hello(&mut client).await.expect_err("always refused");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    let retried = metric(
        &proxy,
        "grpc_balancer_retries_total{balancing=\"greeter\",outcome=\"retried\"}",
    )
    .await;
    let refused = metric(
        &proxy,
        "grpc_balancer_retries_total{balancing=\"greeter\",outcome=\"budget_exhausted\"}",
    )
    .await;
    // 20 calls would want 40 retries; the budget allows 5 per second.
    assert!(retried <= 15.0, "retried {retried}");
    assert!(refused >= 10.0, "budget refusals {refused}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_endpoint_is_ejected_with_back_off_and_returns() {
    let bs = backends(3).await;
    let mut b = greeter_balancing(&bs, PolicyKind::RoundRobin);
    b.outlier_detection.consecutive_failures = 3;
    b.outlier_detection.base_ejection_time = config::Duration::from_millis(500);
    b.outlier_detection.max_ejection_time = config::Duration::from_secs(5);
    b.outlier_detection.max_ejection_percent = 50;
    let proxy = start_proxy(config(vec![b])).await;
    wait_ready(&proxy, "greeter", 3).await;
    let mut client = proxy.client("greeter").await;

    bs[0].set_faults(Faults::fail(Code::Unavailable, "sick"));
    let mut failures = 0;
    for _ in 0..60 {
        if say_hello(&mut client).await.is_err() {
            failures += 1;
        }
    }
    assert_eq!(
        failures, 3,
        "exactly the failures that trigger the ejection"
    );
    let (_, endpoints) = admin_get(proxy.admin(), "/endpoints").await;
    assert!(endpoints.contains("\"ejected\":true"), "{endpoints}");
    assert!(metric(&proxy, "grpc_balancer_ejections_total").await >= 1.0);

    // Back after the ejection time, healthy again.
    bs[0].set_faults(Faults::default());
    bs[0].reset_counts();
    let admin = proxy.admin();
    eventually(
        Duration::from_secs(3),
        "the ejection expires",
        || async move {
            !admin_get(admin, "/endpoints")
                .await
                .1
                .contains("\"ejected\":true")
        },
    )
    .await;
    let counts = spread(&mut client, 60).await;
    assert!(counts.get("b0").copied().unwrap_or(0) >= 15, "{counts:?}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejection_never_exceeds_max_percent() {
    let bs = backends(2).await;
    for b in &bs {
        b.set_faults(Faults::fail(Code::Unavailable, "all sick"));
    }
    let mut b = greeter_balancing(&bs, PolicyKind::RoundRobin);
    b.outlier_detection.consecutive_failures = 2;
    b.outlier_detection.max_ejection_percent = 50;
    let proxy = start_proxy(config(vec![b])).await;
    wait_ready(&proxy, "greeter", 2).await;
    let mut client = proxy.client("greeter").await;
    for _ in 0..20 {
        let _ = say_hello(&mut client).await;
    }
    let (_, endpoints) = admin_get(proxy.admin(), "/endpoints").await;
    assert_eq!(
        endpoints.matches("\"ejected\":true").count(),
        1,
        "{endpoints}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_a_not_serving_endpoint_out_and_back() {
    let bs = backends(2).await;
    let mut b = greeter_balancing(&bs, PolicyKind::RoundRobin);
    b.health_check = Some(HealthCheck {
        service: String::new(),
        interval: config::Duration::from_millis(100),
        timeout: config::Duration::from_millis(500),
        unhealthy_threshold: 2,
        healthy_threshold: 1,
    });
    let proxy = start_proxy(config(vec![b])).await;
    wait_ready(&proxy, "greeter", 2).await;
    let mut client = proxy.client("greeter").await;

    bs[1].set_serving(false).await;
    let admin = proxy.admin();
    eventually(
        Duration::from_secs(3),
        "endpoint marked unhealthy",
        || async move {
            admin_get(admin, "/endpoints")
                .await
                .1
                .contains("\"healthy\":false")
        },
    )
    .await;
    let counts = spread(&mut client, 50).await;
    assert_eq!(counts.get("b1"), None, "{counts:?}");

    bs[1].set_serving(true).await;
    eventually(
        Duration::from_secs(3),
        "endpoint healthy again",
        || async move {
            !admin_get(admin, "/endpoints")
                .await
                .1
                .contains("\"healthy\":false")
        },
    )
    .await;
    let counts = spread(&mut client, 50).await;
    assert!(counts.get("b1").copied().unwrap_or(0) >= 15, "{counts:?}");
    assert!(metric(&proxy, "grpc_balancer_health_checks_total{balancing=\"greeter\",subset=\"all\",result=\"not_serving\"}").await >= 2.0);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_goaway_and_killed_backends_fail_no_call() {
    // Backends that send GOAWAY every 200ms (max connection age).
    let mut bs = Vec::new();
    for i in 0..3 {
        let mut opts = BackendOptions::named(format!("b{i}"));
        opts.max_connection_age = Some(Duration::from_millis(200));
        bs.push(
            grpc_balancer_greeter::spawn_server("127.0.0.1:0".parse().expect("addr"), opts)
                .await
                .expect("backend"),
        );
    }
    let proxy = start_proxy(config(vec![greeter_balancing(&bs, PolicyKind::PeakEwma)])).await;
    wait_ready(&proxy, "greeter", 3).await;
    let client = proxy.client("greeter").await;
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut failed = Vec::new();
            while started.elapsed() < Duration::from_millis(1500) {
                if let Err(s) = say_hello(&mut c).await {
                    failed.push(s);
                }
            }
            failed
        }));
    }
    for t in tasks {
        let failed = t.await.expect("worker");
        assert!(
            failed.is_empty(),
            "calls failed across upstream GOAWAYs: {failed:?}"
        );
    }

    // Kill one backend outright: after its connection is gone, no call
    // fails and none lands on it.
    let killed = bs.remove(0);
    let killed_name = killed.name().to_owned();
    let killed_addr = killed.addr();
    killed.kill();
    let view = proxy.running.as_ref().expect("running").view();
    eventually(Duration::from_secs(3), "the killed endpoint is out", || {
        let out = view
            .endpoints()
            .iter()
            .filter(|e| e.addr == killed_addr)
            .all(|e| !e.available);
        async move { out }
    })
    .await;
    let mut c = client.clone();
    let counts = spread(&mut c, 200).await;
    assert_eq!(counts.get(&killed_name), None, "{counts:?}");
    proxy.stop().await;
}

/// `/endpoints` counts, per endpoint, every call started on it: the figure
/// that bounds what a backend's death can take with it (calls in flight
/// then, plus those sent before the proxy noticed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_count_the_calls_started_on_each() {
    let (bs, proxy) = greeter_proxy(2, PolicyKind::RoundRobin).await;
    let mut client = proxy.client("greeter").await;
    let counts = spread(&mut client, 25).await;
    let (status, body) = admin_get(proxy.admin(), "/endpoints").await;
    assert_eq!(status, 200, "{body}");
    let view: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    for (i, b) in bs.iter().enumerate() {
        let address = b.addr().to_string();
        let endpoint = view["balancings"][0]["subsets"][0]["endpoints"]
            .as_array()
            .and_then(|eps| eps.iter().find(|e| e["address"] == address.as_str()))
            .unwrap_or_else(|| panic!("{address} not in {body}"));
        let served = counts.get(&format!("b{i}")).copied().unwrap_or(0) as u64;
        assert_eq!(
            endpoint["callsStarted"].as_u64(),
            Some(served),
            "{address}: {body}"
        );
        assert_eq!(endpoint["inFlight"].as_u64(), Some(0), "{address}: {body}");
    }
    proxy.stop().await;
}
