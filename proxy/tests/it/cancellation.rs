//! Callers that cancel many calls at once must not cost the other calls their
//! upstream connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use grpc_balancer_crds::config::PolicyKind;

/// An HTTP/2 backend with h2's default rapid-reset protection that is slow
/// to accept streams (one every 5 ms) and answers each 100 ms after
/// accepting it. It records its connections and connection errors.
struct SlowBackend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    errors: Arc<Mutex<Vec<String>>>,
}

async fn slow_backend() -> SlowBackend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let (c, a, e) = (connections.clone(), answered.clone(), errors.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let (a, e) = (a.clone(), e.clone());
            tokio::spawn(async move {
                let mut conn = match h2::server::handshake(tcp).await {
                    Ok(conn) => conn,
                    Err(err) => {
                        e.lock().expect("errors").push(err.to_string());
                        return;
                    }
                };
                loop {
                    match conn.accept().await {
                        Some(Ok((_request, mut respond))) => {
                            let a = a.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                let response = http::Response::builder()
                                    .header("content-type", "application/grpc")
                                    .header("grpc-status", "0")
                                    .body(())
                                    .expect("response");
                                if respond.send_response(response, true).is_ok() {
                                    a.fetch_add(1, Ordering::SeqCst);
                                }
                            });
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Some(Err(err)) => {
                            e.lock().expect("errors").push(err.to_string());
                            return;
                        }
                        None => return,
                    }
                }
            });
        }
    });
    SlowBackend {
        addr,
        connections,
        answered,
        errors,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_cancelled_calls_keeps_the_upstream_connection() {
    let backend = slow_backend().await;
    let proxy = start_proxy(config(vec![balancing(
        "greeter",
        PolicyKind::RoundRobin,
        vec![static_subset("all", 1, &[backend.addr])],
    )]))
    .await;
    wait_ready(&proxy, "greeter", 1).await;

    // 60 calls in flight, most still queued unaccepted at the backend...
    let client = proxy.client("greeter").await;
    let calls: Vec<_> = (0..60)
        .map(|_| {
            let mut c = client.clone();
            tokio::spawn(async move { say_hello(&mut c).await })
        })
        .collect();
    let admin = proxy.admin();
    eventually(
        Duration::from_secs(5),
        "60 calls in flight upstream",
        || async move {
            admin_get(admin, "/metrics")
                .await
                .1
                .contains("grpc_balancer_calls_in_flight{balancing=\"greeter\"} 60")
        },
    )
    .await;
    // ...then the caller goes away: all 60 are cancelled at once.
    for call in &calls {
        call.abort();
    }
    drop(client);

    // The backend gets to answer every abandoned call, and none of the
    // cancellations looked like a rapid-reset attack to it.
    let answered = backend.answered.clone();
    let failed = backend.errors.clone();
    eventually(
        Duration::from_secs(5),
        "the backend answered all 60 calls or closed the connection",
        || {
            let done =
                answered.load(Ordering::SeqCst) >= 60 || !failed.lock().expect("errors").is_empty();
            async move { done }
        },
    )
    .await;
    let errors = backend.errors.lock().expect("errors").clone();
    assert!(
        errors.is_empty(),
        "the backend closed the connection: {errors:?}"
    );
    assert_eq!(
        backend.connections.load(Ordering::SeqCst),
        1,
        "the proxy had to reconnect"
    );
    proxy.stop().await;
}
