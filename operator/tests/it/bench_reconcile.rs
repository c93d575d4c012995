//! Reconcile cost: 1,000 GrpcBalancings in one namespace converged by one
//! operator. Reports the time to converge, the operator's API requests by
//! verb and resource, and the process's peak RSS (the operator is the only
//! thing of size in this process). Run it with:
//!
//! ```sh
//! cargo test -p grpc-balancer-operator --release --test it -- bench_reconcile:: --ignored --nocapture
//! ```
//!
//! The second benchmark runs the release binary as its own process, so the
//! peak RSS is the operator's alone; it needs `GRPC_BALANCER_OPERATOR_BIN`
//! (see its docs).

use std::time::{Duration, Instant};

use crate::support::{RunningOperator, install_crd};
use futures::{StreamExt as _, TryStreamExt as _};
use grpc_balancer_crds::config::{self, CONFIG_MAP_KEY, CONFIG_MAP_NAME};
use grpc_balancer_crds::v1alpha1::GrpcBalancing;
use grpc_balancer_operator::render::fixtures::with_spec;
use grpc_balancer_test_support::{ControlPlane, TestNamespace, poll_until};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};

const COUNT: usize = 1000;

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly (see the module docs)"]
async fn converge_one_thousand_balancings() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "bench").await;
    let gbs: Api<GrpcBalancing> = Api::namespaced(client.clone(), ns.name());
    create_balancings(&gbs).await;
    let rss_before = peak_rss_kib();

    let started = Instant::now();
    let op =
        RunningOperator::start(cp, ns.name(), "bench", "bench-op", Duration::from_secs(15)).await;
    wait_converged(&client, &gbs, ns.name()).await;
    let took = started.elapsed();
    let requests = op.api().snapshot();
    println!("converged {COUNT} GrpcBalancings in {took:?}");
    println!(
        "operator API requests: {} total, {} writes",
        op.api().total(),
        op.api().writes_except(&[])
    );
    for (labels, n) in &requests {
        println!("  {:>6} {} {}", n, labels.verb, labels.resource);
    }
    println!(
        "peak RSS of the process: {} KiB (before the operator started: {} KiB)",
        peak_rss_kib().unwrap_or(0),
        rss_before.unwrap_or(0)
    );
    // Nothing changes a balancing's inputs after it is created: one Service
    // apply and one status write each, no more.
    let count_of = |verb: &str, resource: &str| {
        requests
            .iter()
            .filter(|(l, _)| l.verb == verb && l.resource == resource)
            .map(|(_, n)| *n)
            .sum::<u64>()
    };
    assert_eq!(
        count_of("patch", "grpcbalancings/status"),
        COUNT as u64,
        "one status write per balancing"
    );
    assert_eq!(
        count_of("patch", "services"),
        COUNT as u64,
        "one Service apply per balancing"
    );
    // Steady state: nothing more to write.
    let writes = op.writes();
    let reconciles = op.reconciles(grpc_balancer_operator::metrics::GRPC_BALANCING_CONTROLLER);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let late_writes = op.writes() - writes;
    println!(
        "writes in the 5 s after converging: {late_writes} (reconciles {} -> {})",
        reconciles,
        op.reconciles(grpc_balancer_operator::metrics::GRPC_BALANCING_CONTROLLER)
    );
    assert_eq!(late_writes, 0, "a converged namespace makes no writes");
    op.shutdown().await;
}

/// Polls until every balancing has a status and is in the proxy config.
async fn wait_converged(client: &kube::Client, gbs: &Api<GrpcBalancing>, ns: &str) {
    poll_until(
        "all balancings with a status and in the ConfigMap",
        Duration::from_secs(600),
        || async {
            let list = gbs
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let with_status = list.items.iter().filter(|g| g.status.is_some()).count();
            let in_config = match Api::<ConfigMap>::namespaced(client.clone(), ns)
                .get_opt(CONFIG_MAP_NAME)
                .await
            {
                Ok(Some(cm)) => cm
                    .data
                    .and_then(|mut d| d.remove(CONFIG_MAP_KEY))
                    .and_then(|t| config::parse_yaml(&t).ok())
                    .map_or(0, |c| c.balancings.len()),
                _ => 0,
            };
            if with_status == COUNT && in_config == COUNT {
                Ok(())
            } else {
                Err(format!(
                    "{with_status} with status, {in_config} in the ConfigMap"
                ))
            }
        },
    )
    .await;
}

/// Creates the benchmark's balancings, each on its own listener port.
async fn create_balancings(gbs: &Api<GrpcBalancing>) {
    futures::stream::iter(0..COUNT)
        .map(|i| {
            let gbs = gbs.clone();
            async move {
                let mut gb = with_spec(
                    &format!("b{i:04}"),
                    "selector: { app: bench }\nport: 50051\nlistenerPort: 1\n",
                );
                gb.spec.listener_port = Some(20000 + i as u16);
                gbs.create(&PostParams::default(), &gb).await.map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("balancings created");
}

/// Environment variable naming the release binary for the process benchmark.
const OPERATOR_BIN_ENV: &str = "GRPC_BALANCER_OPERATOR_BIN";

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

/// `/proc/<pid>/status` field in KiB.
fn proc_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The operator's `/metrics`, over plain HTTP/1.0.
async fn scrape(port: u16) -> Result<String, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_string(&mut text))
        .await
        .map_err(|_| "no answer from /metrics".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(text)
}

/// Sum of `grpc_balancer_operator_api_requests_total` samples whose labels
/// contain all of `labels`.
fn api_requests(metrics: &str, labels: &[&str]) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("grpc_balancer_operator_api_requests_total{"))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The same convergence with the operator as its own process (build it
/// with `cargo build --release -p grpc-balancer-operator` and name it in
/// `GRPC_BALANCER_OPERATOR_BIN`), so its peak RSS is its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly with GRPC_BALANCER_OPERATOR_BIN set"]
async fn converge_one_thousand_balancings_in_a_release_process() {
    let bin = std::env::var_os(OPERATOR_BIN_ENV).unwrap_or_else(|| {
        panic!(
            "{OPERATOR_BIN_ENV} must name the operator binary: \
             cargo build --release -p grpc-balancer-operator and set it to the absolute path of target/release/grpc-balancer-operator"
        )
    });
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "bench").await;
    let gbs: Api<GrpcBalancing> = Api::namespaced(client.clone(), ns.name());
    create_balancings(&gbs).await;

    let metrics_port = free_port();
    let started = Instant::now();
    let mut child = tokio::process::Command::new(&bin)
        .arg("--kubeconfig")
        .arg(cp.kubeconfig())
        .args(["--watch-namespace", ns.name()])
        .args(["--leader-election-namespace", ns.name()])
        .args(["--leader-election-lease-name", "bench"])
        .args(["--pod-name", "bench-process"])
        .arg("--metrics-listen")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .arg("--webhook-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg(format!("--discovery-listen=127.0.0.1:{}", free_port()))
        .args(["--webhook-namespace", ns.name()])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("the operator binary starts");
    let pid = child.id().expect("the operator has a pid");
    wait_converged(&client, &gbs, ns.name()).await;
    let took = started.elapsed();
    let hwm = proc_kib(pid, "VmHWM:").unwrap_or(0);
    let rss = proc_kib(pid, "VmRSS:").unwrap_or(0);
    let metrics = scrape(metrics_port).await.expect("/metrics answers");
    let status_writes = api_requests(
        &metrics,
        &["verb=\"patch\"", "resource=\"grpcbalancings/status\""],
    );
    let service_writes = api_requests(&metrics, &["verb=\"patch\"", "resource=\"services\""]);
    println!("converged {COUNT} GrpcBalancings in {took:?} (operator process)");
    println!("operator process: peak RSS {hwm} KiB, RSS now {rss} KiB");
    println!("status writes {status_writes}, Service applies {service_writes}");
    assert_eq!(
        status_writes, COUNT as u64,
        "one status write per balancing"
    );
    assert_eq!(
        service_writes, COUNT as u64,
        "one Service apply per balancing"
    );

    // SIGTERM, as Kubernetes stops it.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(term.success(), "SIGTERM delivered");
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the operator exits after SIGTERM")
        .expect("exit status readable");
    println!("operator exited with {exit} in reply to SIGTERM");
}
