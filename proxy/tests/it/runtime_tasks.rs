//! `grpc_balancer_runtime_tasks`: the tasks alive on the proxy's runtime.
//! The soak on the real node reads it to tell a leak (tasks of connections
//! or calls that never end) from steady work, so it must follow the
//! connections the app opens and closes.

use std::time::Duration;

use crate::support::*;
use grpc_balancer_crds::config::PolicyKind;

async fn runtime_tasks(admin: std::net::SocketAddr) -> i64 {
    let (status, text) = admin_get(admin, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("grpc_balancer_runtime_tasks "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no grpc_balancer_runtime_tasks sample in:\n{text}"))
}

#[tokio::test]
async fn the_task_gauge_follows_app_connections_up_and_back_down() {
    let (_backends, proxy) = greeter_proxy(2, PolicyKind::RoundRobin).await;
    let admin = proxy.admin();
    let before = runtime_tasks(admin).await;
    assert!(before > 0, "the proxy runs tasks, the gauge says {before}");

    // Each app connection is served by tasks of its own while it is open.
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut client = proxy.client("greeter").await;
        say_hello(&mut client)
            .await
            .expect("a call through the proxy");
        clients.push(client);
    }
    let open = runtime_tasks(admin).await;
    assert!(
        open >= before + 20,
        "20 open app connections: {open} tasks, {before} before"
    );

    // Closed, their tasks end: the count comes back.
    drop(clients);
    eventually(
        Duration::from_secs(10),
        "the connections' tasks to end",
        || async move { runtime_tasks(admin).await <= before + 2 },
    )
    .await;
    proxy.stop().await;
}
