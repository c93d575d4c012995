//! Retries of idempotent methods: a backend answering UNAVAILABLE (or losing
//! the call before answering) is retried on another endpoint when the method
//! is listed, the request body fit in the replay buffer and the budget allows.

use crate::support::*;
use grpc_balancer_crds::config::{self, PolicyKind};
use grpc_balancer_greeter::pb::HelloRequest;
use grpc_balancer_greeter::pb::greeter_client::GreeterClient;
use grpc_balancer_greeter::{Faults, RunningBackend};
use tonic::Code;
use tonic::transport::Channel;

const SAY_HELLO: &str = "/greeter.v1.Greeter/SayHello";
const SAY_HELLO_STREAM: &str = "/greeter.v1.Greeter/SayHelloStream";

async fn metric(proxy: &Proxy, needle: &str) -> f64 {
    let (_, text) = admin_get(proxy.admin(), "/metrics").await;
    text.lines()
        .filter(|l| l.starts_with(needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn retries(proxy: &Proxy, outcome: &str) -> f64 {
    metric(
        proxy,
        &format!("grpc_balancer_retries_total{{balancing=\"greeter\",outcome=\"{outcome}\"}}"),
    )
    .await
}

/// A round-robin balancing over `backends` with the given idempotent
/// methods; ejection is off so failing backends stay in rotation.
fn retrying_balancing(backends: &[RunningBackend], idempotent: &[&str]) -> config::Balancing {
    let mut b = greeter_balancing(backends, PolicyKind::RoundRobin);
    b.outlier_detection.consecutive_failures = 0;
    b.retries.max_attempts = 3;
    b.retries.min_retries_per_second = 1000;
    b.retries.idempotent_methods = idempotent.iter().map(|m| (*m).to_owned()).collect();
    b
}

async fn hello_with_payload(
    client: &mut GreeterClient<Channel>,
    payload_bytes: usize,
) -> Result<String, tonic::Status> {
    let request = HelloRequest {
        payload: vec![7; payload_bytes],
        ..hello("test")
    };
    client
        .say_hello(request)
        .await
        .map(|r| r.into_inner().backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_call_answered_unavailable_is_retried_elsewhere() {
    let bs = backends(2).await;
    bs[0].set_faults(Faults::fail(Code::Unavailable, "sick"));
    let proxy = start_proxy(config(vec![retrying_balancing(
        &bs,
        &[SAY_HELLO, SAY_HELLO_STREAM],
    )]))
    .await;
    wait_ready(&proxy, "greeter", 2).await;
    let mut client = proxy.client("greeter").await;

    // Every call succeeds, answered by the healthy backend: the client sees
    // the retried attempt's response.
    let counts = spread(&mut client, 40).await;
    assert_eq!(counts.get("b1"), Some(&40), "{counts:?}");
    let turned_away = bs[0].counts();
    assert!(
        turned_away.answered_error >= 10,
        "round robin sends about half the first attempts to the failing backend: {turned_away:?}"
    );
    let retried = retries(&proxy, "retried").await;
    assert_eq!(retried, turned_away.answered_error as f64);

    // The greeter fails a server stream after its response headers: the
    // response has started, so even a listed method is not retried.
    let mut failed = 0;
    for _ in 0..10 {
        let outcome = async {
            let mut stream = client
                .say_hello_stream(HelloRequest {
                    count: 3,
                    ..hello("stream")
                })
                .await?
                .into_inner();
            let mut replies = 0;
            while stream.message().await?.is_some() {
                replies += 1;
            }
            Ok::<_, tonic::Status>(replies)
        }
        .await;
        match outcome {
            Ok(replies) => assert_eq!(replies, 3),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert_eq!(status.message(), "sick");
                failed += 1;
            }
        }
    }
    assert!(failed >= 3, "streams reached the failing backend: {failed}");
    assert_eq!(retries(&proxy, "retried").await, retried);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_call_whose_connection_is_lost_before_an_answer_is_retried() {
    let bs = backends(2).await;
    // b0 drops its TCP connection before answering anything.
    bs[0].set_faults(Faults {
        close_connection_after: Some(0),
        ..Faults::default()
    });
    let proxy = start_proxy(config(vec![retrying_balancing(&bs, &[SAY_HELLO])])).await;
    wait_ready(&proxy, "greeter", 2).await;
    let mut client = proxy.client("greeter").await;
    let counts = spread(&mut client, 30).await;
    assert_eq!(counts.get("b1"), Some(&30), "{counts:?}");
    assert!(bs[0].counts().say_hello >= 1, "b0 saw no call");
    assert!(retries(&proxy, "retried").await >= 1.0);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_not_listed_is_not_retried() {
    let bs = backends(2).await;
    bs[0].set_faults(Faults::fail(Code::Unavailable, "sick"));
    // Only the streaming method is listed; unary SayHello is not.
    let proxy = start_proxy(config(vec![retrying_balancing(&bs, &[SAY_HELLO_STREAM])])).await;
    wait_ready(&proxy, "greeter", 2).await;
    let mut client = proxy.client("greeter").await;
    let mut unavailable = 0;
    for _ in 0..20 {
        match say_hello(&mut client).await {
            Ok(backend) => assert_eq!(backend, "b1"),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert_eq!(status.message(), "sick", "the backend's own answer");
                unavailable += 1;
            }
        }
    }
    assert_eq!(unavailable, bs[0].counts().answered_error);
    assert!(unavailable >= 5, "round robin reached the failing backend");
    assert_eq!(retries(&proxy, "retried").await, 0.0);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_larger_than_the_replay_buffer_is_not_retried() {
    let bs = backends(2).await;
    bs[0].set_faults(Faults::fail(Code::Unavailable, "sick"));
    let mut b = retrying_balancing(&bs, &[SAY_HELLO]);
    b.retries.max_buffered_bytes = 1024;
    let proxy = start_proxy(config(vec![b])).await;
    wait_ready(&proxy, "greeter", 2).await;
    let mut client = proxy.client("greeter").await;

    // Small bodies fit and are retried...
    for _ in 0..10 {
        let backend = hello_with_payload(&mut client, 100)
            .await
            .expect("a small body is retried");
        assert_eq!(backend, "b1");
    }
    let retried = retries(&proxy, "retried").await;
    assert!(retried >= 3.0, "retried {retried}");

    // ...large ones are not: the client sees the backend's UNAVAILABLE.
    let mut unavailable = 0;
    for _ in 0..10 {
        if let Err(status) = hello_with_payload(&mut client, 4096).await {
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            assert_eq!(status.message(), "sick");
            unavailable += 1;
        }
    }
    assert!(unavailable >= 3, "large bodies reached the failing backend");
    assert_eq!(retries(&proxy, "retried").await, retried);
    assert_eq!(retries(&proxy, "not_replayable").await, unavailable as f64);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_caps_idempotent_retries() {
    let bs = backends(2).await;
    for b in &bs {
        b.set_faults(Faults::fail(Code::Unavailable, "all sick"));
    }
    let mut b = retrying_balancing(&bs, &[SAY_HELLO]);
    b.retries.budget_percent = 0;
    b.retries.min_retries_per_second = 5;
    let proxy = start_proxy(config(vec![b])).await;
    wait_ready(&proxy, "greeter", 2).await;
    let mut client = proxy.client("greeter").await;
    let started = tokio::time::Instant::now();
    for _ in 0..20 {
        let status = say_hello(&mut client)
            .await
            .expect_err("every backend fails");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    let seconds = started.elapsed().as_secs_f64().ceil() + 1.0;
    let retried = retries(&proxy, "retried").await;
    let refused = retries(&proxy, "budget_exhausted").await;
    // 20 calls of 3 attempts want 40 retries; 5 per second are allowed.
    assert!(retried >= 5.0, "the floor allows some: {retried}");
    assert!(retried <= 5.0 * seconds, "retried {retried} in {seconds}s");
    // A call stops retrying at its first refusal; at most retried/2 calls
    // got both of their retries.
    assert!(refused >= 20.0 - retried / 2.0, "budget refusals {refused}");
    let answered: u64 = bs.iter().map(|b| b.counts().answered_error).sum();
    assert_eq!(
        answered as f64,
        20.0 + retried,
        "one backend answer per attempt"
    );
    proxy.stop().await;
}
