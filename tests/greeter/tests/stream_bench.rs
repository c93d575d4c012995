//! The streaming benchmark's load against a real greeter backend: what it
//! reports matches what the backend counted, and a failure ends the run with
//! an error instead of being counted.

use std::net::SocketAddr;
use std::time::Duration;

use grpc_balancer_greeter::stream_bench::{
    StreamBenchError, StreamLoad, StreamMode, run_stream_load,
};
use grpc_balancer_greeter::{BackendOptions, Faults, RunningBackend, spawn_server};
use tonic::Code;

async fn backend(faults: Faults) -> RunningBackend {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("loopback address");
    spawn_server(addr, BackendOptions::named("alpha").with_faults(faults))
        .await
        .expect("greeter backend starts")
}

fn load(backend: &RunningBackend, mode: StreamMode) -> StreamLoad {
    StreamLoad {
        target: backend.addr().to_string(),
        mode,
        concurrency: 3,
        connections: 2,
        duration: Duration::from_millis(300),
        messages_per_call: 20,
        payload_bytes: 64 * 1024,
    }
}

#[tokio::test]
async fn server_stream_counts_every_reply_of_calls_the_backend_answered() {
    let backend = backend(Faults::default()).await;
    let report = run_stream_load(load(&backend, StreamMode::ServerStream))
        .await
        .expect("server-stream load");
    let counts = backend.counts();
    assert!(report.calls >= 3, "{report:?}");
    assert_eq!(counts.say_hello_stream, report.calls);
    assert_eq!(
        (counts.answered_ok, counts.answered_error),
        (report.calls, 0)
    );
    assert_eq!(report.messages, report.calls * 20);
    assert_eq!(report.payload_bytes, 0);
    assert_eq!(report.calls_by_backend.get("alpha"), Some(&report.calls));
    assert!(report.messages_per_s > 0.0);
}

#[tokio::test]
async fn ping_pong_reports_round_trips_and_closes_each_stream_cleanly() {
    let backend = backend(Faults::default()).await;
    let report = run_stream_load(load(&backend, StreamMode::PingPong))
        .await
        .expect("ping-pong load");
    let counts = backend.counts();
    // One Chat stream per concurrent task, each ended with OK by the backend.
    assert_eq!((report.calls, counts.chat), (3, 3));
    assert_eq!((counts.answered_ok, counts.answered_error), (3, 0));
    assert!(report.messages >= 3, "{report:?}");
    let p50 = report.round_trip_p50_us.expect("p50");
    let p99 = report.round_trip_p99_us.expect("p99");
    let max = report.round_trip_max_us.expect("max");
    assert!(p50 <= p99 && p99 <= max, "{report:?}");
}

#[tokio::test]
async fn download_and_upload_count_payload_bytes_both_ways() {
    let backend = backend(Faults::default()).await;
    let down = run_stream_load(load(&backend, StreamMode::Download))
        .await
        .expect("download load");
    assert_eq!(down.payload_bytes, down.calls * 20 * 64 * 1024);
    assert_eq!(backend.counts().say_hello_stream, down.calls);

    let up = run_stream_load(load(&backend, StreamMode::Upload))
        .await
        .expect("upload load");
    assert_eq!(up.payload_bytes, up.calls * 20 * 64 * 1024);
    assert_eq!(up.messages, up.calls * 20);
    let counts = backend.counts();
    assert_eq!(counts.collect_hellos, up.calls);
    assert_eq!(counts.answered_error, 0);
    assert!(up.mb_per_s > 0.0 && down.mb_per_s > 0.0);
}

#[tokio::test]
async fn a_failing_backend_fails_every_mode_with_its_status() {
    let backend = backend(Faults::fail(Code::Unavailable, "down for the test")).await;
    for mode in [
        StreamMode::ServerStream,
        StreamMode::PingPong,
        StreamMode::Download,
        StreamMode::Upload,
    ] {
        match run_stream_load(load(&backend, mode)).await {
            Err(StreamBenchError::Call(status)) => {
                assert_eq!(status.code(), Code::Unavailable, "{mode:?}: {status:?}");
            }
            other => panic!("{mode:?}: expected the backend's failure, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_connection_closed_mid_stream_is_an_error_not_a_short_count() {
    let backend = backend(Faults {
        close_connection_after: Some(5),
        ..Faults::default()
    })
    .await;
    for mode in [StreamMode::ServerStream, StreamMode::PingPong] {
        let result = run_stream_load(load(&backend, mode)).await;
        assert!(
            matches!(
                result,
                Err(StreamBenchError::Call(_) | StreamBenchError::WrongReply(_))
            ),
            "{mode:?}: {result:?}"
        );
    }
}

#[tokio::test]
async fn a_payload_above_the_backends_limit_is_refused_loudly() {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("loopback address");
    let mut options = BackendOptions::named("small");
    options.max_message_bytes = 256 * 1024;
    let backend = spawn_server(addr, options).await.expect("backend starts");
    let mut download = load(&backend, StreamMode::Download);
    download.payload_bytes = 1 << 20;
    let result = run_stream_load(download).await;
    assert!(
        matches!(&result, Err(StreamBenchError::Call(status)) if status.code() == Code::InvalidArgument),
        "{result:?}"
    );
}

#[tokio::test]
async fn zero_concurrency_is_refused() {
    let backend = backend(Faults::default()).await;
    let mut zero = load(&backend, StreamMode::ServerStream);
    zero.concurrency = 0;
    assert!(matches!(
        run_stream_load(zero).await,
        Err(StreamBenchError::Zero)
    ));
}
