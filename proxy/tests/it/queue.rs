//! The bounded queue of calls waiting for a ready endpoint: a call waits and
//! goes through once an endpoint connects; `maxWait` bounds the wait;
//! `maxPending` bounds the waiting calls, and more fail at once.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::*;
use grpc_balancer_crds::config::{self, Balancing, PolicyKind};
use grpc_balancer_greeter::BackendOptions;
use tokio::time::Instant;
use tonic::Code;

/// A balancing whose one endpoint is `addr`, where nothing listens yet: the
/// endpoint exists but is never ready, so calls queue.
fn waiting_on(addr: SocketAddr, max_pending: u32, max_wait: Duration) -> Balancing {
    let mut b = balancing(
        "greeter",
        PolicyKind::RoundRobin,
        vec![static_subset("all", 1, &[addr])],
    );
    b.queue.max_pending = max_pending;
    b.queue.max_wait = config::Duration::from(max_wait);
    b.outlier_detection.consecutive_failures = 0;
    b
}

fn queued(proxy: &Proxy) -> u32 {
    proxy
        .running
        .as_ref()
        .expect("running")
        .view()
        .queued_calls()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_call_goes_through_once_an_endpoint_connects() {
    let addr = free_addr();
    let proxy = start_proxy(config(vec![waiting_on(addr, 10, Duration::from_secs(5))])).await;
    let mut client = proxy.client("greeter").await;
    let call = tokio::spawn(async move { say_hello(&mut client).await });
    eventually(
        Duration::from_secs(5),
        "the call waits in the queue",
        || {
            let n = queued(&proxy);
            async move { n == 1 }
        },
    )
    .await;
    let (_, endpoints) = admin_get(proxy.admin(), "/endpoints").await;
    assert!(endpoints.contains("\"queuedCalls\":1"), "{endpoints}");
    // The backend comes up: the waiting call goes to it.
    let _backend = grpc_balancer_greeter::spawn_server(addr, BackendOptions::named("late"))
        .await
        .expect("backend on the reserved address");
    let answer = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the queued call ends")
        .expect("task");
    assert_eq!(answer.expect("the queued call succeeds"), "late");
    assert_eq!(queued(&proxy), 0);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_wait_bounds_the_wait() {
    let max_wait = Duration::from_millis(400);
    let proxy = start_proxy(config(vec![waiting_on(free_addr(), 10, max_wait)])).await;
    let mut client = proxy.client("greeter").await;
    let started = Instant::now();
    let status = say_hello(&mut client)
        .await
        .expect_err("no endpoint ever connects");
    let waited = started.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("no ready endpoint"), "{status:?}");
    assert!(
        waited >= max_wait && waited < max_wait + Duration::from_secs(2),
        "waited {waited:?}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_pending_overflow_fails_at_once() {
    let max_wait = Duration::from_secs(2);
    let proxy = start_proxy(config(vec![waiting_on(free_addr(), 2, max_wait)])).await;
    let client = proxy.client("greeter").await;
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let mut c = client.clone();
        waiting.push(tokio::spawn(async move { say_hello(&mut c).await }));
    }
    eventually(Duration::from_secs(5), "two calls queued", || {
        let n = queued(&proxy);
        async move { n == 2 }
    })
    .await;
    let mut c = client.clone();
    let started = Instant::now();
    let status = say_hello(&mut c).await.expect_err("the queue is full");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("too many calls waiting"),
        "{status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "the overflow waited {:?}",
        started.elapsed()
    );
    for w in waiting {
        let status = w.await.expect("task").expect_err("no endpoint");
        assert!(status.message().contains("no ready endpoint"), "{status:?}");
    }
    let (_, metrics) = admin_get(proxy.admin(), "/metrics").await;
    assert!(
        metrics.contains("grpc_balancer_calls_total{balancing=\"greeter\",subset=\"\",endpoint=\"\",grpc_status=\"14\"} 3"),
        "{metrics}"
    );
    proxy.stop().await;
}
