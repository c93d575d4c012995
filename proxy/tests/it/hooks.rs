//! The lifecycle-hook subcommands of the binary, as the kubelet runs them in
//! the injected sidecar on clusters without native sidecars.

use std::process::Command;

use crate::support::*;
use grpc_balancer_crds::config::PolicyKind;

const PROXY: &str = env!("CARGO_BIN_EXE_grpc-balancer-proxy");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_ready_returns_once_the_proxy_is_ready() {
    let bs = backends(1).await;
    let proxy = start_proxy(config(vec![balancing(
        "greeter",
        PolicyKind::RoundRobin,
        vec![static_subset("all", 1, &[bs[0].addr()])],
    )]))
    .await;
    let admin = proxy.admin().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(PROXY)
            .args(["wait-ready", "--admin", &admin, "--timeout", "10s"])
            .output()
    })
    .await
    .expect("join")
    .expect("run the proxy binary");
    assert!(
        out.status.success(),
        "wait-ready failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    proxy.stop().await;
}

#[test]
fn wait_ready_fails_with_a_reason_when_nothing_answers() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let out = Command::new(PROXY)
        .args([
            "wait-ready",
            "--admin",
            &addr.to_string(),
            "--timeout",
            "1s",
        ])
        .output()
        .expect("run the proxy binary");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not ready"), "{stderr}");
}

#[test]
fn sleep_exits_zero_and_rejects_bad_durations() {
    let ok = Command::new(PROXY)
        .args(["sleep", "10ms"])
        .status()
        .expect("run the proxy binary");
    assert!(ok.success());
    let bad = Command::new(PROXY)
        .args(["sleep", "soon"])
        .output()
        .expect("run the proxy binary");
    assert_eq!(bad.status.code(), Some(2), "clap's usage error");
}
