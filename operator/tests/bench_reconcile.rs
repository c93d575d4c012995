//! Reconcile cost: 1,000 GrpcBalancings in one namespace converged by one
//! operator. Reports the time to converge, the operator's API requests by
//! verb and resource, and the process's peak RSS (the operator is the only
//! thing of size in this process). Run it with:
//!
//! ```sh
//! cargo test -p grpc-balancer-operator --release --test bench_reconcile -- --ignored --nocapture
//! ```

mod common;

use std::time::{Duration, Instant};

use common::{RunningOperator, balancing, install_crd};
use futures::{StreamExt as _, TryStreamExt as _};
use grpc_balancer_crds::config::{self, CONFIG_MAP_KEY, CONFIG_MAP_NAME};
use grpc_balancer_crds::v1alpha1::GrpcBalancing;
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
    futures::stream::iter(0..COUNT)
        .map(|i| {
            let gbs = gbs.clone();
            async move {
                let mut gb = balancing(
                    &format!("b{i:04}"),
                    "selector: { app: bench }\nport: 50051\nlistenerPort: 1\n",
                );
                gb.spec.listener_port = 20000 + i as u16;
                gbs.create(&PostParams::default(), &gb).await.map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("balancings created");
    let rss_before = peak_rss_kib();

    let started = Instant::now();
    let op =
        RunningOperator::start(cp, ns.name(), "bench", "bench-op", Duration::from_secs(15)).await;
    poll_until(
        "all balancings with a status and in the ConfigMap",
        Duration::from_secs(600),
        || async {
            let list = gbs
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let with_status = list.items.iter().filter(|g| g.status.is_some()).count();
            let in_config = match Api::<ConfigMap>::namespaced(client.clone(), ns.name())
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
