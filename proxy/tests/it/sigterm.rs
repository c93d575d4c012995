//! The built binary's own signal handling: SIGTERM stops accepting, turns
//! /ready to 503, lets the call in flight finish, and exits 0 well before
//! the drain timeout.

use std::process::Stdio;
use std::time::Duration;

use crate::support::*;
use grpc_balancer_greeter::fault_headers;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_calls_in_flight_and_exits_0() {
    let backend = backend("b0").await;
    let listen = free_addr();
    let admin = free_addr();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_grpc-balancer-proxy"))
        .args(["--listen", &listen.to_string()])
        .args(["--endpoint", &backend.addr().to_string()])
        .args(["--admin", &admin.to_string()])
        .args(["--drain-timeout", "20s"])
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the proxy");
    let pid = child.id().expect("pid");
    eventually(Duration::from_secs(10), "the proxy serves", || async move {
        match grpc_balancer_greeter::connect(&listen.to_string()).await {
            Ok(mut c) => say_hello(&mut c).await.is_ok(),
            Err(_) => false,
        }
    })
    .await;

    // A slow call in flight.
    let mut c = grpc_balancer_greeter::connect(&listen.to_string())
        .await
        .expect("connect");
    let slow = tokio::spawn(async move {
        let mut req = tonic::Request::new(hello("slow"));
        req.metadata_mut()
            .insert(fault_headers::DELAY_MS, "1500".parse().expect("ascii"));
        c.say_hello(req).await.map(|r| r.into_inner().backend)
    });
    eventually(
        Duration::from_secs(5),
        "the call is in flight",
        || async move {
            admin_get(admin, "/metrics")
                .await
                .1
                .contains("grpc_balancer_calls_in_flight{balancing=\"default\"} 1")
        },
    )
    .await;

    let signalled = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    eventually(
        Duration::from_secs(5),
        "/ready is 503 while draining",
        || async move {
            let (status, body) = admin_get(admin, "/ready").await;
            status == 503 && body.contains("draining")
        },
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "the listener is closed",
        || async move { tokio::net::TcpStream::connect(listen).await.is_err() },
    )
    .await;
    assert_eq!(
        slow.await
            .expect("task")
            .expect("the call in flight finishes"),
        "b0"
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the proxy exits after the drain")
        .expect("wait");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "drained in {:?}, not at the timeout",
        signalled.elapsed()
    );
    let mut logs = String::new();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let mut pipe = pipe;
        tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut logs)
            .await
            .expect("read logs");
    }
    assert!(logs.contains("SIGTERM received"), "{logs}");
    assert!(logs.contains("proxy stopped"), "{logs}");
}
