//! The greeter backend against a real tonic client: replies, faults, echo,
//! health and shutdown behave as the proxy tests rely on.

use std::net::SocketAddr;
use std::time::Duration;

use grpc_balancer_greeter::pb::HelloRequest;
use grpc_balancer_greeter::{
    BackendOptions, ECHO_TRAILER_PREFIX, Faults, LoadOptions, Mode, RunningBackend, connect,
    fault_headers, run_load, spawn_server,
};
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const LOOPBACK: &str = "127.0.0.1:0";

async fn backend(name: &str) -> RunningBackend {
    let addr: SocketAddr = LOOPBACK.parse().expect("loopback address");
    spawn_server(addr, BackendOptions::named(name).with_version("v2"))
        .await
        .expect("greeter backend starts")
}

fn hello(name: &str, count: u32) -> HelloRequest {
    HelloRequest {
        name: name.to_owned(),
        count,
        ..HelloRequest::default()
    }
}

#[tokio::test]
async fn every_rpc_kind_answers_with_the_backend_name_and_is_counted() {
    let backend = backend("alpha").await;
    let mut client = connect(&backend.addr().to_string()).await.expect("connect");

    let reply = client
        .say_hello(hello("ann", 1))
        .await
        .expect("unary")
        .into_inner();
    assert_eq!(
        (reply.backend.as_str(), reply.version.as_str()),
        ("alpha", "v2")
    );
    assert_eq!(reply.message, "Hello ann from alpha");

    let mut stream = client
        .say_hello_stream(hello("bob", 5))
        .await
        .expect("server stream")
        .into_inner();
    let mut sequences = Vec::new();
    while let Some(reply) = stream.message().await.expect("stream reply") {
        sequences.push(reply.sequence);
    }
    assert_eq!(sequences, vec![0, 1, 2, 3, 4]);

    let requests = futures::stream::iter(vec![hello("a", 1), hello("b", 1), hello("c", 1)]);
    let collected = client
        .collect_hellos(requests)
        .await
        .expect("client stream")
        .into_inner();
    assert_eq!(collected.requests_received, 3);
    assert_eq!(collected.message, "Hello a, b, c from alpha");

    let chat = futures::stream::iter((0..4).map(|_| hello("chat", 1)));
    let mut replies = client.chat(chat).await.expect("bidi").into_inner();
    let mut received = 0;
    while let Some(reply) = replies.message().await.expect("chat reply") {
        assert_eq!(reply.requests_received, received + 1);
        received += 1;
    }
    assert_eq!(received, 4);

    let counts = backend.counts();
    assert_eq!(
        (
            counts.say_hello,
            counts.say_hello_stream,
            counts.collect_hellos,
            counts.chat
        ),
        (1, 1, 1, 1)
    );
    assert_eq!((counts.answered_ok, counts.answered_error), (4, 0));
}

#[tokio::test]
async fn injected_status_comes_from_options_or_from_request_metadata() {
    let backend = backend("beta").await;
    let mut client = connect(&backend.addr().to_string()).await.expect("connect");

    let mut request = Request::new(hello("x", 1));
    request
        .metadata_mut()
        .insert(fault_headers::FAIL_CODE, "5".parse().expect("ascii"));
    let status = client
        .say_hello(request)
        .await
        .expect_err("NOT_FOUND requested");
    assert_eq!(status.code(), Code::NotFound);

    let mut request = Request::new(hello("x", 1));
    request
        .metadata_mut()
        .insert(fault_headers::FAIL_CODE, "five".parse().expect("ascii"));
    let status = client
        .say_hello(request)
        .await
        .expect_err("bad header value");
    assert_eq!(status.code(), Code::InvalidArgument);

    backend.set_faults(Faults::fail(Code::ResourceExhausted, "full"));
    let status = client
        .say_hello(hello("x", 1))
        .await
        .expect_err("configured fault");
    assert_eq!(
        (status.code(), status.message()),
        (Code::ResourceExhausted, "full")
    );
    let status = client.say_hello_stream(hello("x", 3)).await;
    let status = match status {
        Ok(response) => response
            .into_inner()
            .message()
            .await
            .expect_err("stream fails"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::ResourceExhausted);

    backend.set_faults(Faults::default());
    client
        .say_hello(hello("x", 1))
        .await
        .expect("healthy again");
    assert_eq!(backend.counts().answered_error, 4);
}

#[tokio::test]
async fn request_metadata_is_echoed_in_headers_and_trailers() {
    let backend = backend("gamma").await;
    let mut client = connect(&backend.addr().to_string()).await.expect("connect");
    let mut request = Request::new(hello("x", 3));
    request
        .metadata_mut()
        .insert("x-request-id", "abc-123".parse().expect("ascii"));
    request.metadata_mut().insert_bin(
        "x-blob-bin",
        tonic::metadata::MetadataValue::from_bytes(&[0, 1, 2, 255]),
    );
    let response = client.say_hello_stream(request).await.expect("stream");
    assert_eq!(
        response
            .metadata()
            .get("x-request-id")
            .map(|v| v.to_str().expect("ascii")),
        Some("abc-123")
    );
    let mut stream = response.into_inner();
    while stream.message().await.expect("reply").is_some() {}
    let trailers = stream
        .trailers()
        .await
        .expect("trailers")
        .expect("trailers present");
    let trailer = format!("{ECHO_TRAILER_PREFIX}x-request-id");
    assert_eq!(
        trailers
            .get(trailer.as_str())
            .map(|v| v.to_str().expect("ascii")),
        Some("abc-123")
    );
    let blob = format!("{ECHO_TRAILER_PREFIX}x-blob-bin");
    assert_eq!(
        trailers
            .get_bin(blob.as_str())
            .map(|v| v.to_bytes().expect("base64").to_vec()),
        Some(vec![0, 1, 2, 255])
    );
}

#[tokio::test]
async fn large_payloads_travel_both_ways() {
    let backend = backend("delta").await;
    let mut client = connect(&backend.addr().to_string()).await.expect("connect");
    let reply = client
        .say_hello(HelloRequest {
            name: "big".to_owned(),
            payload: vec![7; 5 * 1024 * 1024],
            reply_payload_bytes: 6 * 1024 * 1024,
            ..HelloRequest::default()
        })
        .await
        .expect("large call")
        .into_inner();
    assert_eq!(reply.payload_bytes_received, 5 * 1024 * 1024);
    assert_eq!(reply.payload.len(), 6 * 1024 * 1024);

    let status = client
        .say_hello(HelloRequest {
            reply_payload_bytes: u32::MAX,
            ..HelloRequest::default()
        })
        .await
        .expect_err("reply larger than the message limit");
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_connection_closed_mid_stream_fails_the_call_after_the_replies_sent() {
    let backend = backend("epsilon").await;
    backend.set_faults(Faults {
        close_connection_after: Some(2),
        ..Faults::default()
    });
    let mut client = connect(&backend.addr().to_string()).await.expect("connect");
    let mut stream = client
        .say_hello_stream(hello("x", 10))
        .await
        .expect("stream starts")
        .into_inner();
    let mut replies = 0;
    let error = loop {
        match stream.message().await {
            Ok(Some(_)) => replies += 1,
            Ok(None) => panic!("the stream ended cleanly after {replies} replies"),
            Err(status) => break status,
        }
    };
    assert_eq!(replies, 2, "replies before the close");
    assert_ne!(error.code(), Code::Ok);
    // The backend itself keeps serving new connections.
    backend.set_faults(Faults::default());
    let mut fresh = connect(&backend.addr().to_string())
        .await
        .expect("reconnect");
    fresh
        .say_hello(hello("again", 1))
        .await
        .expect("served after the close");
}

#[tokio::test]
async fn health_status_follows_set_serving() {
    let backend = backend("zeta").await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", backend.addr()))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel);
    let check = |service: &str| HealthCheckRequest {
        service: service.to_owned(),
    };
    for service in ["", "greeter.v1.Greeter"] {
        let status = health
            .check(check(service))
            .await
            .expect("check")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
    backend.set_serving(false).await;
    let status = health
        .check(check("greeter.v1.Greeter"))
        .await
        .expect("check")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::NotServing as i32);
}

#[tokio::test]
async fn graceful_shutdown_lets_a_stream_in_flight_finish() {
    let backend = backend("eta").await;
    let mut client = connect(&backend.addr().to_string()).await.expect("connect");
    let mut request = Request::new(hello("slow", 5));
    request
        .metadata_mut()
        .insert(fault_headers::INTERVAL_MS, "40".parse().expect("ascii"));
    let mut stream = client
        .say_hello_stream(request)
        .await
        .expect("stream")
        .into_inner();
    stream
        .message()
        .await
        .expect("first reply")
        .expect("a reply");

    let shutdown = tokio::spawn(backend.shutdown(Duration::from_secs(10)));
    let mut rest = 0;
    while stream
        .message()
        .await
        .expect("reply during drain")
        .is_some()
    {
        rest += 1;
    }
    assert_eq!(rest, 4);
    let counts = shutdown.await.expect("join").expect("clean shutdown");
    assert_eq!(counts.answered_ok, 1);
}

#[tokio::test]
async fn the_load_client_counts_calls_per_backend_for_every_mode() {
    let backend = backend("theta").await;
    for mode in [Mode::Unary, Mode::Stream, Mode::Bidi] {
        let report = run_load(LoadOptions {
            concurrency: 4,
            mode,
            messages_per_call: 3,
            ..LoadOptions::new(backend.addr().to_string(), 40)
        })
        .await
        .expect("load run");
        assert_eq!(
            (report.calls, report.ok, report.failed),
            (40, 40, 0),
            "{mode:?}"
        );
        assert_eq!(report.by_backend.get("theta"), Some(&40));
    }
    let report = run_load(LoadOptions {
        metadata: vec![(fault_headers::FAIL_CODE.to_owned(), "14".to_owned())],
        ..LoadOptions::new(backend.addr().to_string(), 5)
    })
    .await
    .expect("load run");
    assert_eq!(report.failures.get("UNAVAILABLE"), Some(&5));

    let unused = std::net::TcpListener::bind(LOOPBACK).expect("bind");
    let closed = unused.local_addr().expect("addr");
    drop(unused);
    assert!(
        run_load(LoadOptions::new(closed.to_string(), 1))
            .await
            .is_err()
    );
    assert!(
        run_load(LoadOptions::new("not an address", 1))
            .await
            .is_err()
    );
}
