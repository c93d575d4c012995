//! Listener ports handed over between balancings on reload, and listeners
//! that cannot bind: retried until they bind, visible meanwhile.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::support::*;
use grpc_balancer_crds::config::{Balancing, PolicyKind, to_yaml};
use grpc_balancer_greeter::fault_headers;
use grpc_balancer_proxy::ConfigSource;

fn write(path: &Path, balancings: Vec<Balancing>) {
    // Write then rename, as the kubelet swaps a ConfigMap's files.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, to_yaml(&config(balancings)).expect("yaml")).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn named(name: &str, listen: SocketAddr, backend: SocketAddr) -> Balancing {
    let mut b = balancing(
        name,
        PolicyKind::RoundRobin,
        vec![static_subset("all", 1, &[backend])],
    );
    b.listen = listen.to_string();
    b
}

/// The backend that answers a call on `addr`, or why none did.
async fn answer(addr: SocketAddr) -> Result<String, String> {
    let mut c = grpc_balancer_greeter::connect(&addr.to_string())
        .await
        .map_err(|e| e.to_string())?;
    say_hello(&mut c).await.map_err(|s| s.to_string())
}

async fn answered_by(addr: SocketAddr, backend: &str) -> bool {
    answer(addr).await.is_ok_and(|b| b == backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_swapped_between_balancings_and_a_rename_take_effect() {
    let bs = backends(3).await;
    let (p1, p2) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    write(
        &path,
        vec![named("a", p1, bs[0].addr()), named("b", p2, bs[1].addr())],
    );
    let proxy = start(test_settings(ConfigSource::File(path.clone()))).await;
    let admin = proxy.admin();
    eventually(Duration::from_secs(10), "a on p1, b on p2", || async move {
        answered_by(p1, "b0").await && answered_by(p2, "b1").await
    })
    .await;

    // A slow call on "a" is in flight while its port goes to "b".
    let slow = tokio::spawn(async move {
        let mut c = grpc_balancer_greeter::connect(&p1.to_string())
            .await
            .expect("connect");
        let mut req = tonic::Request::new(hello("slow"));
        req.metadata_mut()
            .insert(fault_headers::DELAY_MS, "700".parse().expect("ascii"));
        c.say_hello(req).await.map(|r| r.into_inner().backend)
    });
    tokio::time::sleep(Duration::from_millis(150)).await;

    // Swap the ports.
    write(
        &path,
        vec![named("a", p2, bs[0].addr()), named("b", p1, bs[1].addr())],
    );
    eventually(Duration::from_secs(10), "ports swapped", || async move {
        answered_by(p1, "b1").await && answered_by(p2, "b0").await
    })
    .await;
    assert_eq!(
        slow.await
            .expect("task")
            .expect("the drained call finishes"),
        "b0"
    );
    assert_eq!(proxy.addr("a"), p2);
    assert_eq!(proxy.addr("b"), p1);

    // Rename "a" to "c" on the same port, with another backend.
    write(
        &path,
        vec![named("c", p2, bs[2].addr()), named("b", p1, bs[1].addr())],
    );
    eventually(Duration::from_secs(10), "c took a's port", || async move {
        answered_by(p2, "b2").await
    })
    .await;
    assert_eq!(proxy.addr("c"), p2);
    let (status, body) = admin_get(admin, "/ready").await;
    assert_eq!(status, 200, "{body}");
    let (_, metrics) = admin_get(admin, "/metrics").await;
    assert!(
        metrics.contains("grpc_balancer_config_reloads_total{result=\"applied\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("grpc_balancer_config_reloads_total{result=\"partial\"} 0"),
        "{metrics}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_cannot_bind_is_retried_and_reported_until_it_binds() {
    let bs = backends(2).await;
    // Something else holds the port "late" wants.
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = blocker.local_addr().expect("addr");
    let free = free_addr();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    write(&path, vec![named("early", free, bs[0].addr())]);
    let proxy = start(test_settings(ConfigSource::File(path.clone()))).await;
    let admin = proxy.admin();
    eventually(Duration::from_secs(10), "early serves", || async move {
        answered_by(free, "b0").await
    })
    .await;
    // A balancing's bind-failure counter exists from its start, at 0, so that
    // increase() sees its first failure.
    let (_, metrics) = admin_get(admin, "/metrics").await;
    assert!(
        metrics.contains("grpc_balancer_listener_bind_errors_total{balancing=\"early\"} 0"),
        "{metrics}"
    );

    write(
        &path,
        vec![
            named("early", free, bs[0].addr()),
            named("late", taken, bs[1].addr()),
        ],
    );
    eventually(
        Duration::from_secs(10),
        "/ready reports the unbound listener",
        || async move {
            let (status, body) = admin_get(admin, "/ready").await;
            status == 503 && body.contains("late") && body.contains(&taken.to_string())
        },
    )
    .await;
    let (_, metrics) = admin_get(admin, "/metrics").await;
    assert!(
        metrics.contains("grpc_balancer_listeners_unbound 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("grpc_balancer_listener_bind_errors_total{balancing=\"late\"}"),
        "{metrics}"
    );
    // The other balancing still serves meanwhile.
    assert!(answered_by(free, "b0").await);

    drop(blocker);
    eventually(
        Duration::from_secs(10),
        "late binds once the port is free",
        || async move { answered_by(taken, "b1").await },
    )
    .await;
    eventually(Duration::from_secs(5), "ready again", || async move {
        admin_get(admin, "/ready").await.0 == 200
    })
    .await;
    let (_, metrics) = admin_get(admin, "/metrics").await;
    assert!(
        metrics.contains("grpc_balancer_listeners_unbound 0"),
        "{metrics}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_whose_listener_cannot_bind_does_not_stop_the_proxy() {
    let bs = backends(1).await;
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = blocker.local_addr().expect("addr");
    let free = free_addr();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    write(
        &path,
        vec![
            named("blocked", taken, bs[0].addr()),
            named("fine", free, bs[0].addr()),
        ],
    );
    // Before: run() failed, so the process exited and the pod crash-looped.
    let proxy = start(test_settings(ConfigSource::File(path.clone()))).await;
    let admin = proxy.admin();
    eventually(Duration::from_secs(10), "fine serves", || async move {
        answered_by(free, "b0").await
    })
    .await;
    let (status, body) = admin_get(admin, "/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("blocked"), "{body}");
    drop(blocker);
    eventually(Duration::from_secs(10), "blocked binds", || async move {
        answered_by(taken, "b0").await && admin_get(admin, "/ready").await.0 == 200
    })
    .await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_on_the_admin_port_is_refused_and_the_rest_serves() {
    let bs = backends(2).await;
    let admin_addr = free_addr();
    let good = free_addr();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    // A balancing on the proxy's own admin port: before, it took the port
    // and the admin server then failed to bind, so the proxy exited.
    write(
        &path,
        vec![
            named("clash", admin_addr, bs[0].addr()),
            named("good", good, bs[1].addr()),
        ],
    );
    let mut settings = test_settings(ConfigSource::File(path.clone()));
    settings.admin = admin_addr;
    let proxy = start(settings).await;
    assert_eq!(proxy.admin(), admin_addr);
    eventually(Duration::from_secs(10), "good serves", || async move {
        answered_by(good, "b1").await
    })
    .await;
    let (status, body) = admin_get(admin_addr, "/ready").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        proxy
            .running
            .as_ref()
            .and_then(|r| r.listener_addr("clash"))
            .is_none()
    );
    let (_, metrics) = admin_get(admin_addr, "/metrics").await;
    assert!(
        metrics.contains("grpc_balancer_config_reloads_total{result=\"partial\"} 1"),
        "{metrics}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_balancing_keeps_its_last_good_config_and_the_others_apply() {
    let bs = backends(3).await;
    let (pa, pb) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    write(
        &path,
        vec![named("a", pa, bs[0].addr()), named("b", pb, bs[1].addr())],
    );
    let proxy = start(test_settings(ConfigSource::File(path.clone()))).await;
    let admin = proxy.admin();
    eventually(Duration::from_secs(10), "a and b serve", || async move {
        answered_by(pa, "b0").await && answered_by(pb, "b1").await
    })
    .await;
    // One edit breaks "a" (the sidecar's admin port) and moves "b" to
    // another backend.
    let mut broken = named("a", pa, bs[0].addr());
    broken.listen = "127.0.0.1:9901".into();
    write(&path, vec![broken, named("b", pb, bs[2].addr())]);
    eventually(
        Duration::from_secs(10),
        "b's change applies",
        || async move { answered_by(pb, "b2").await },
    )
    .await;
    assert!(answered_by(pa, "b0").await, "a keeps its last good config");
    let (status, body) = admin_get(admin, "/ready").await;
    assert_eq!(status, 200, "{body}");
    let (_, metrics) = admin_get(admin, "/metrics").await;
    assert!(
        metrics.contains("grpc_balancer_config_reloads_total{result=\"partial\"} 1"),
        "{metrics}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_starting_on_an_unreadable_config_is_ready_and_applies_the_fix() {
    let bs = backends(1).await;
    let listen = free_addr();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, "balancings: [ {").expect("write");
    let proxy = start(test_settings(ConfigSource::File(path.clone()))).await;
    let admin = proxy.admin();
    // Before: /ready stayed 503, so a native sidecar's pod never started
    // its app, until someone fixed the file.
    eventually(Duration::from_secs(5), "ready", || async move {
        admin_get(admin, "/ready").await.0 == 200
    })
    .await;
    write(&path, vec![named("late", listen, bs[0].addr())]);
    eventually(
        Duration::from_secs(10),
        "the fixed file applies",
        || async move { answered_by(listen, "b0").await },
    )
    .await;
    proxy.stop().await;
}
