//! Push discovery cost: the operator as its own process with 1,000 proxy
//! streams (each its own TLS connection, as 1,000 proxies), and one
//! endpoint change fanned out to all of them, 20 times. Reports delivery
//! latency from the EndpointSlice write to each stream's receipt (p50, p99,
//! max over every delivery), the operator's RSS and CPU, and its
//! TokenReviews (one per token, cached). Run it with:
//!
//! ```sh
//! cargo build --release -p grpc-balancer-operator
//! GRPC_BALANCER_OPERATOR_BIN=$PWD/target/release/grpc-balancer-operator \
//!   cargo test -p grpc-balancer-operator --test it bench_discovery -- --ignored --nocapture
//! ```
//!
//! Without `GRPC_BALANCER_OPERATOR_BIN` it runs the debug binary built for
//! the tests (and says so). `GRPC_BALANCER_DISCOVERY_STREAMS` changes the
//! number of streams.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::discovery::{SPEC, endpoint, slice, token};
use crate::support::install_crd;
use futures::StreamExt as _;
use grpc_balancer_crds::v1alpha1::GrpcBalancing;
use grpc_balancer_discovery_api::channel::{client_config, tls_channel};
use grpc_balancer_discovery_api::v1::WatchRequest;
use grpc_balancer_discovery_api::v1::discovery_client::DiscoveryClient;
use grpc_balancer_discovery_api::{AUTHORIZATION, TOKEN_AUDIENCE};
use grpc_balancer_operator::render::fixtures::with_spec;
use grpc_balancer_test_support::{ControlPlane, TestNamespace, poll_until};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use tokio::sync::Mutex;

const CHANGES: usize = 20;
const TIMEOUT: Duration = Duration::from_secs(120);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(field))?.to_owned();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// User + system CPU seconds of `pid` (clock ticks of 1/100 s, Linux's USER_HZ).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after ")".
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly (see the module docs)"]
async fn bench_discovery_fan_out_to_a_thousand_streams() {
    let streams: usize = std::env::var("GRPC_BALANCER_DISCOVERY_STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let (bin, kind) = match std::env::var_os("GRPC_BALANCER_OPERATOR_BIN") {
        Some(bin) => (bin, "release binary"),
        None => (
            env!("CARGO_BIN_EXE_grpc-balancer-operator").into(),
            "DEBUG binary (set GRPC_BALANCER_OPERATOR_BIN for release figures)",
        ),
    };
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "bench-push").await;
    let gbs: Api<GrpcBalancing> = Api::namespaced(client.clone(), ns.name());
    gbs.create(&PostParams::default(), &with_spec("greeter", SPEC))
        .await
        .expect("balancing");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns.name());
    slices
        .create(
            &PostParams::default(),
            &slice(
                "grpcb-greeter-v1-a",
                "grpcb-greeter-v1",
                vec![
                    endpoint("10.1.0.1", "g-1", false),
                    endpoint("10.1.0.2", "g-2", false),
                ],
            ),
        )
        .await
        .expect("slice");

    let discovery_port = free_port();
    let mut child = tokio::process::Command::new(&bin)
        .arg("--kubeconfig")
        .arg(cp.kubeconfig())
        .args(["--watch-namespace", ns.name()])
        .args(["--leader-election-namespace", ns.name()])
        .args(["--leader-election-lease-name", "bench-push"])
        .args(["--pod-name", "bench-push"])
        .arg(format!("--metrics-listen=127.0.0.1:{}", free_port()))
        .arg(format!("--webhook-listen=127.0.0.1:{}", free_port()))
        .arg(format!("--discovery-listen=127.0.0.1:{discovery_port}"))
        .args(["--webhook-namespace", ns.name()])
        .args(["--sidecar-mode", "native"])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("the operator binary starts");
    let pid = child.id().expect("pid");

    // The webhook's self-signed CA, as the webhook would inject it.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    let ca = poll_until("the webhook certificate Secret", TIMEOUT, || {
        let secrets = secrets.clone();
        async move {
            let list = secrets
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .iter()
                .find_map(|s| s.data.as_ref()?.get("ca.crt").map(|b| b.0.clone()))
                .ok_or_else(|| "no CA yet".to_owned())
        }
    })
    .await;
    let token = token(&client, ns.name(), "proxy", TOKEN_AUDIENCE).await;
    let tls = client_config(&ca).expect("CA");

    // Every stream: its snapshot version, then (version, receipt) of changes.
    type Received = Vec<(u64, Instant)>;
    let received: Arc<Vec<Mutex<(u64, Received)>>> =
        Arc::new((0..streams).map(|_| Mutex::new((0, Vec::new()))).collect());
    let ready = Arc::new(AtomicUsize::new(0));
    let opened = Instant::now();
    for batch in (0..streams).collect::<Vec<_>>().chunks(50) {
        let mut opening = Vec::new();
        for &i in batch {
            let channel = tls_channel(
                &format!("127.0.0.1:{discovery_port}"),
                "localhost",
                tls.clone(),
            )
            .expect("channel");
            let (received, ready, token, namespace) = (
                received.clone(),
                ready.clone(),
                token.clone(),
                ns.name().to_owned(),
            );
            opening.push(tokio::spawn(async move {
                let stream = poll_until("a stream", TIMEOUT, || {
                    let channel = channel.clone();
                    let token = token.clone();
                    let namespace = namespace.clone();
                    async move {
                        let mut request = tonic::Request::new(WatchRequest {
                            namespace,
                            pod_name: format!("bench-{i}"),
                        });
                        request.metadata_mut().insert(
                            AUTHORIZATION,
                            format!("Bearer {token}")
                                .parse()
                                .map_err(|_| "token".to_owned())?,
                        );
                        DiscoveryClient::new(channel)
                            .watch(request)
                            .await
                            .map(|r| r.into_inner())
                            .map_err(|s| s.to_string())
                    }
                })
                .await;
                tokio::spawn(async move {
                    let mut stream = stream;
                    while let Some(Ok(message)) = stream.next().await {
                        let now = Instant::now();
                        let mut slot = received[i].lock().await;
                        if message.snapshot {
                            slot.0 = message.version;
                            ready.fetch_add(1, Ordering::SeqCst);
                        } else {
                            slot.1.push((message.version, now));
                        }
                    }
                });
            }));
        }
        for o in opening {
            o.await.expect("stream opened");
        }
    }
    poll_until("every stream's snapshot", TIMEOUT, || {
        let ready = ready.clone();
        async move {
            let n = ready.load(Ordering::SeqCst);
            if n >= streams {
                Ok(())
            } else {
                Err(format!("{n} of {streams}"))
            }
        }
    })
    .await;
    println!("{streams} streams open in {:?} ({kind})", opened.elapsed());
    let rss_streams = proc_kib(pid, "VmRSS:");
    let cpu_before = cpu_seconds(pid);

    let mut latencies = Vec::with_capacity(streams * CHANGES);
    let mut written = Vec::new();
    let fanout = Instant::now();
    for change in 0..CHANGES {
        let terminating = change % 2 == 0;
        let started = Instant::now();
        slices
            .patch(
                "grpcb-greeter-v1-a",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({
                    "endpoints": [
                        {"addresses": ["10.1.0.1"], "conditions": {"ready": !terminating, "serving": true, "terminating": terminating},
                         "targetRef": {"kind": "Pod", "name": "g-1"}},
                        {"addresses": ["10.1.0.2"], "conditions": {"ready": true, "serving": true, "terminating": false},
                         "targetRef": {"kind": "Pod", "name": "g-2"}}
                    ]
                })),
            )
            .await
            .expect("patched");
        written.push(started);
        // Every stream has it before the next change.
        poll_until("every stream got the change", TIMEOUT, || {
            let received = received.clone();
            async move {
                let mut behind = 0;
                for slot in received.iter() {
                    let slot = slot.lock().await;
                    if !slot.1.iter().any(|(v, _)| *v > slot.0 + change as u64) {
                        behind += 1;
                    }
                }
                if behind == 0 {
                    Ok(())
                } else {
                    Err(format!("{behind} streams behind"))
                }
            }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu = cpu_seconds(pid) - cpu_before;
    let took = fanout.elapsed();
    for slot in received.iter() {
        let slot = slot.lock().await;
        for (change, started) in written.iter().enumerate() {
            let target = slot.0 + change as u64 + 1;
            if let Some((_, at)) = slot.1.iter().find(|(v, _)| *v >= target) {
                latencies.push(at.saturating_duration_since(*started));
            }
        }
    }
    latencies.sort();
    println!(
        "{CHANGES} changes x {streams} streams: {} deliveries; from the EndpointSlice write to receipt: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or_default()
    );
    println!(
        "operator process: RSS with {streams} streams {rss_streams} KiB, peak {} KiB; CPU {cpu:.2} s over the {CHANGES} fan-outs ({took:?})",
        proc_kib(pid, "VmHWM:")
    );
    assert_eq!(
        latencies.len(),
        streams * CHANGES,
        "every stream got every change"
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
}
