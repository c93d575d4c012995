//! What passes through intact, and what the proxy answers itself.

use std::time::{Duration, Instant};

use crate::support::*;
use grpc_balancer_crds::config::{self, PolicyKind};
use grpc_balancer_greeter::fault_headers;
use grpc_balancer_greeter::pb::HelloReply;
use tokio::io::AsyncWriteExt;
use tonic::{Code, Status, Streaming};

/// Counts a stream's replies until it fails; a clean end fails the test.
async fn replies_until_error(stream: &mut Streaming<HelloReply>, clean_end: &str) -> (u32, Status) {
    let mut got = 0;
    loop {
        match stream.message().await {
            Ok(Some(_)) => got += 1,
            Ok(None) => panic!("{clean_end} after {got} replies"),
            Err(status) => return (got, status),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_pass_both_ways() {
    let (_bs, proxy) = greeter_proxy(2, PolicyKind::RoundRobin).await;
    let mut client = proxy.client("greeter").await;
    let size = 5 * 1024 * 1024;
    let mut req = hello("big");
    req.payload = vec![7u8; size];
    req.reply_payload_bytes = size as u32;
    let reply = client
        .say_hello(req)
        .await
        .expect("large call")
        .into_inner();
    assert_eq!(reply.payload_bytes_received, size as u64);
    assert_eq!(reply.payload.len(), size);
    // A server stream of large replies too.
    let mut req = hello("big-stream");
    req.count = 3;
    req.reply_payload_bytes = size as u32;
    let mut stream = client
        .say_hello_stream(req)
        .await
        .expect("stream")
        .into_inner();
    let mut n = 0;
    while let Some(r) = stream.message().await.expect("reply") {
        assert_eq!(r.payload.len(), size);
        n += 1;
    }
    assert_eq!(n, 3);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_trailers_and_status_codes_pass_intact() {
    let (bs, proxy) = greeter_proxy(2, PolicyKind::RoundRobin).await;
    let mut client = proxy.client("greeter").await;
    let mut req = tonic::Request::new(hello("meta"));
    req.metadata_mut()
        .insert("x-request-id", "abc-123".parse().expect("ascii"));
    let response = client.say_hello(req).await.expect("call");
    assert_eq!(
        response
            .metadata()
            .get("x-request-id")
            .map(|v| v.to_str().ok()),
        Some(Some("abc-123")),
        "echoed header: {:?}",
        response.metadata()
    );
    // Trailers: a server stream ends with the echoed trailer.
    let mut req = tonic::Request::new(hello("meta-stream"));
    req.metadata_mut()
        .insert("x-trace", "t-9".parse().expect("ascii"));
    let mut stream = client
        .say_hello_stream(req)
        .await
        .expect("stream")
        .into_inner();
    while stream.message().await.expect("reply").is_some() {}
    let trailers = stream
        .trailers()
        .await
        .expect("trailers")
        .expect("some trailers");
    assert_eq!(
        trailers.get("trailer-x-trace").map(|v| v.to_str().ok()),
        Some(Some("t-9")),
        "{trailers:?}"
    );
    // Status codes and messages the backend chose: the same as directly.
    let mut direct = grpc_balancer_greeter::connect(&bs[0].addr().to_string())
        .await
        .expect("direct connection");
    for (code, want) in [
        (5, Code::NotFound),
        (7, Code::PermissionDenied),
        (13, Code::Internal),
        (3, Code::InvalidArgument),
    ] {
        let request = || {
            let mut req = tonic::Request::new(hello("fail"));
            req.metadata_mut().insert(
                fault_headers::FAIL_CODE,
                code.to_string().parse().expect("ascii"),
            );
            req.metadata_mut().insert(
                fault_headers::FAIL_MESSAGE,
                "on purpose".parse().expect("ascii"),
            );
            req
        };
        let through = client.say_hello(request()).await.expect_err("fails");
        let straight = direct.say_hello(request()).await.expect_err("fails");
        assert_eq!(through.code(), want, "{through:?}");
        assert_eq!(through.message(), straight.message());
        assert!(!through.message().is_empty());
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_and_the_balancing_timeout_give_deadline_exceeded() {
    let bs = backends(1).await;
    let mut b = balancing(
        "greeter",
        PolicyKind::RoundRobin,
        vec![static_subset("all", 1, &[bs[0].addr()])],
    );
    b.timeout = Some(config::Duration::from_millis(300));
    let proxy = start_proxy(config(vec![b])).await;
    wait_ready(&proxy, "greeter", 1).await;
    let mut client = proxy.client("greeter").await;

    // The balancing's timeout, no caller deadline.
    let mut req = tonic::Request::new(hello("slow"));
    req.metadata_mut()
        .insert(fault_headers::DELAY_MS, "3000".parse().expect("ascii"));
    let started = Instant::now();
    let status = client.say_hello(req).await.expect_err("times out");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // A caller deadline shorter than the balancing's passes through.
    let mut req = tonic::Request::new(hello("slow"));
    req.set_timeout(Duration::from_millis(100));
    req.metadata_mut()
        .insert(fault_headers::DELAY_MS, "3000".parse().expect("ascii"));
    let started = Instant::now();
    let status = client.say_hello(req).await.expect_err("times out");
    // tonic enforces the same deadline on its side; whichever fires first
    // answers, and neither waits for the balancing's 300ms.
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(290),
        "{:?}",
        started.elapsed()
    );

    // A stream that outlives the timeout is ended with DEADLINE_EXCEEDED.
    let mut req = tonic::Request::new(hello("long-stream"));
    req.get_mut().count = 50;
    req.metadata_mut()
        .insert(fault_headers::INTERVAL_MS, "50".parse().expect("ascii"));
    let mut stream = client
        .say_hello_stream(req)
        .await
        .expect("stream")
        .into_inner();
    let (got, end) =
        replies_until_error(&mut stream, "a stream past its deadline ended normally").await;
    assert_eq!(end.code(), Code::DeadlineExceeded, "{end:?}");
    assert!(got > 0 && got < 50, "{got}");

    // Calls without a deadline problem still work.
    assert!(say_hello(&mut client).await.is_ok());
    proxy.stop().await;
}

/// The endpoint learns the balancing's deadline and may give up at the same
/// moment as the proxy (a tonic server answers CANCELLED then): the caller
/// must still get DEADLINE_EXCEEDED, whichever answer the proxy sees first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balancing_timeout_wins_over_the_endpoints_own_answer_to_it() {
    let bs = backends(1).await;
    let mut b = balancing(
        "greeter",
        PolicyKind::RoundRobin,
        vec![static_subset("all", 1, &[bs[0].addr()])],
    );
    b.timeout = Some(config::Duration::from_millis(20));
    let proxy = start_proxy(config(vec![b])).await;
    wait_ready(&proxy, "greeter", 1).await;
    let client = proxy.client("greeter").await;
    // Rounds of many calls at once, so that the proxy's timer and the
    // endpoint's answer often become ready in the same poll.
    let mut wrong = Vec::new();
    for _ in 0..10 {
        let calls = (0..100).map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut req = tonic::Request::new(hello("slow"));
                req.metadata_mut()
                    .insert(fault_headers::DELAY_MS, "2000".parse().expect("ascii"));
                client.say_hello(req).await
            })
        });
        for call in futures::future::join_all(calls).await {
            match call.expect("call task") {
                Err(status) if status.code() == Code::DeadlineExceeded => {}
                other => wrong.push(format!("{other:?}")),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of 1,000 calls: {:?}",
        wrong.len(),
        wrong.first()
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_endpoint_fails_fast_with_unavailable() {
    let proxy = start_proxy(config(vec![balancing(
        "empty",
        PolicyKind::PeakEwma,
        vec![static_subset("none", 1, &[])],
    )]))
    .await;
    let mut client = proxy.client("empty").await;
    let started = Instant::now();
    let status = say_hello(&mut client).await.expect_err("no endpoint");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status
            .message()
            .contains("no ready endpoint for balancing empty"),
        "{status:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_only_affects_its_own_call() {
    let (bs, proxy) = greeter_proxy(2, PolicyKind::RoundRobin).await;
    let addr = proxy.addr("greeter");
    let mut client = proxy.client("greeter").await;

    // Not HTTP/2 at all.
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0xffu8; 64][..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00",
    ] {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(garbage).await.expect("write");
        drop(s);
    }

    // A client that resets its stream mid-call.
    let mut req = tonic::Request::new(hello("abandoned"));
    req.get_mut().count = 100;
    req.metadata_mut()
        .insert(fault_headers::INTERVAL_MS, "20".parse().expect("ascii"));
    let mut stream = client
        .say_hello_stream(req)
        .await
        .expect("stream")
        .into_inner();
    stream.message().await.expect("first reply");
    drop(stream);

    // A backend that closes its connection mid-stream.
    let mut req = tonic::Request::new(hello("cut"));
    req.get_mut().count = 10;
    req.metadata_mut()
        .insert(fault_headers::CLOSE_AFTER, "2".parse().expect("ascii"));
    req.metadata_mut()
        .insert(fault_headers::INTERVAL_MS, "10".parse().expect("ascii"));
    let mut stream = client
        .say_hello_stream(req)
        .await
        .expect("stream")
        .into_inner();
    let (_, end) = replies_until_error(&mut stream, "a cut stream ended cleanly").await;
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");

    // Everything else keeps working, on the same client connection.
    let mut ok = 0;
    for _ in 0..100 {
        if say_hello(&mut client).await.is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 100);
    drop(bs);
    proxy.stop().await;
}
