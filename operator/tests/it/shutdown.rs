//! Shutdown on the real control plane: the controllers stop on their own,
//! whenever the stop comes (while the stores still list, in the middle of a
//! burst of reconciles, in a steady state), well within the grace period
//! after which they would be dropped.

use std::time::{Duration, Instant};

use crate::support::{RunningOperator, install_crd};
use futures::{StreamExt as _, TryStreamExt as _};
use grpc_balancer_crds::v1alpha1::GrpcBalancing;
use grpc_balancer_operator::render::fixtures::with_spec;
use grpc_balancer_test_support::{ControlPlane, TestNamespace, poll_until};
use kube::api::{Api, ListParams, PostParams};

/// Enough balancings that the first listing and the first burst of
/// reconciles take a while.
const COUNT: usize = 300;

/// A clean stop takes a few API round trips; the forced drop waits 5 s.
const CLEAN_STOP: Duration = Duration::from_secs(3);

async fn create_balancings(api: &Api<GrpcBalancing>) {
    futures::stream::iter(0..COUNT)
        .map(|i| {
            let api = api.clone();
            async move {
                let mut gb = with_spec(
                    &format!("s{i:03}"),
                    "selector: { app: shutdown }\nport: 50051\nlistenerPort: 1\n",
                );
                gb.spec.listener_port = Some(20000 + i as u16);
                api.create(&PostParams::default(), &gb).await.map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("balancings created");
}

async fn stop_cleanly(op: RunningOperator, when: &str) {
    let metrics = op.metrics.clone();
    let started = Instant::now();
    op.shutdown().await;
    let took = started.elapsed();
    assert_eq!(
        metrics.forced_stops.get(),
        0,
        "stopped {when}: the controllers had to be dropped after the grace period"
    );
    assert!(
        took < CLEAN_STOP,
        "stopped {when}: shutdown took {took:?}, more than {CLEAN_STOP:?}"
    );
}

async fn wait_for_leadership(op: &RunningOperator) {
    poll_until("the operator to lead", Duration::from_secs(30), || async {
        if op.is_leader() {
            Ok(())
        } else {
            Err("not the leader yet")
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_stop_cleanly_whenever_the_stop_comes() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "shutdown").await;
    let gbs: Api<GrpcBalancing> = Api::namespaced(client.clone(), ns.name());
    create_balancings(&gbs).await;
    let lease = Duration::from_secs(15);

    // Right at the start of the term, while the stores are still listing.
    for (round, delay) in [0u64, 0, 5, 20, 50].into_iter().enumerate() {
        let op =
            RunningOperator::start(cp, ns.name(), "shutdown", &format!("early-{round}"), lease)
                .await;
        wait_for_leadership(&op).await;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        stop_cleanly(op, &format!("{delay} ms into the term")).await;
    }

    // In the middle of the first burst of reconciles.
    let op = RunningOperator::start(cp, ns.name(), "shutdown", "burst", lease).await;
    poll_until(
        "the first statuses to be written",
        Duration::from_secs(60),
        || async {
            if op.writes() > 20 {
                Ok(())
            } else {
                Err(format!("{} writes so far", op.writes()))
            }
        },
    )
    .await;
    stop_cleanly(op, "during a burst of reconciles").await;

    // In a steady state.
    let op = RunningOperator::start(cp, ns.name(), "shutdown", "steady", lease).await;
    poll_until(
        "every balancing to have a status",
        Duration::from_secs(120),
        || async {
            let list = gbs
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let done = list.items.iter().filter(|g| g.status.is_some()).count();
            if done == COUNT {
                Ok(())
            } else {
                Err(format!("{done} of {COUNT} with a status"))
            }
        },
    )
    .await;
    stop_cleanly(op, "in a steady state").await;
}
