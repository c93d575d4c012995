//! Who may read what on the admin port: the probes and /metrics answer every
//! peer (the kubelet, Prometheus); /config and /endpoints (the balancings
//! and backend addresses of the namespace) answer loopback peers only,
//! unless the proxy runs with `--admin-debug any`.

use std::net::{IpAddr, SocketAddr};

use crate::support::*;
use grpc_balancer_crds::config::PolicyKind;
use grpc_balancer_proxy::ConfigSource;
use grpc_balancer_proxy::admin::DebugAccess;

/// A non-loopback address of this host, if it has one: the source address
/// of a route to the outside (nothing is sent).
fn own_address(v6: bool) -> Option<IpAddr> {
    let (bind, target) = if v6 {
        ("[::]:0", "[2001:db8::1]:9")
    } else {
        ("0.0.0.0:0", "192.0.2.1:9")
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(target).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

async fn start_with(debug: DebugAccess) -> (Vec<grpc_balancer_greeter::RunningBackend>, Proxy) {
    let bs = backends(1).await;
    let mut settings = test_settings(ConfigSource::Fixed(config(vec![greeter_balancing(
        &bs,
        PolicyKind::RoundRobin,
    )])));
    // As injected: every address, both families.
    settings.admin = "[::]:0".parse().expect("addr");
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        settings.admin = "0.0.0.0:0".parse().expect("addr");
    }
    settings.admin_debug = debug;
    let proxy = start(settings).await;
    (bs, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_endpoints_answer_loopback_peers_only_by_default() {
    let (_bs, proxy) = start_with(DebugAccess::Loopback).await;
    let port = proxy.admin().port();
    let mut peers: Vec<IpAddr> = vec!["127.0.0.1".parse().expect("ip")];
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        peers.push("::1".parse().expect("ip"));
    }
    // Loopback peers (IPv4 ones arrive IPv4-mapped on the dual-stack socket).
    for ip in &peers {
        let addr = SocketAddr::new(*ip, port);
        for path in ["/live", "/ready", "/metrics", "/config", "/endpoints"] {
            let (status, body) = admin_get(addr, path).await;
            assert_eq!(status, 200, "{ip} {path}: {body}");
        }
    }
    // The pod network: this host's own non-loopback addresses.
    let outside: Vec<IpAddr> = [own_address(false), own_address(true)]
        .into_iter()
        .flatten()
        .collect();
    if outside.is_empty() {
        eprintln!("no non-loopback address here; the unit tests cover the peer check");
    }
    for ip in outside {
        let addr = SocketAddr::new(ip, port);
        for path in ["/live", "/ready", "/metrics"] {
            let (status, body) = admin_get(addr, path).await;
            assert_eq!(status, 200, "{ip} {path}: {body}");
        }
        for path in ["/config", "/endpoints"] {
            let (status, body) = admin_get(addr, path).await;
            assert_eq!(status, 403, "{ip} {path}: {body}");
            assert!(!body.contains("greeter"), "{ip} {path} leaks: {body}");
        }
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_debug_any_opens_them_to_the_pod_network() {
    let (_bs, proxy) = start_with(DebugAccess::Any).await;
    let port = proxy.admin().port();
    let Some(ip) = own_address(false).or_else(|| own_address(true)) else {
        eprintln!("skipped: no non-loopback address here");
        return;
    };
    let (status, body) = admin_get(SocketAddr::new(ip, port), "/config").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("greeter"), "{body}");
    proxy.stop().await;
}

#[test]
fn the_peer_check() {
    use grpc_balancer_proxy::admin::debug_allowed;
    let peer = |s: &str| Some(s.parse::<SocketAddr>().expect("addr"));
    for p in [
        "127.0.0.1:1",
        "127.1.2.3:1",
        "[::1]:1",
        "[::ffff:127.0.0.1]:1",
    ] {
        assert!(debug_allowed(DebugAccess::Loopback, peer(p)), "{p}");
    }
    for p in [
        "10.0.0.7:1",
        "[fd00::2]:1",
        "[::ffff:10.0.0.7]:1",
        "0.0.0.0:1",
    ] {
        assert!(!debug_allowed(DebugAccess::Loopback, peer(p)), "{p}");
        assert!(debug_allowed(DebugAccess::Any, peer(p)), "{p}");
    }
    assert!(!debug_allowed(DebugAccess::Loopback, None));
}

/// `POST /shutdown` stops the proxy (for a legacy sidecar whose app is done),
/// from loopback only, even with `--admin-debug any`; GET does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_from_loopback_only_stops_the_proxy() {
    let (_bs, mut proxy) = start_with(DebugAccess::Any).await;
    let port = proxy.admin().port();
    let loopback = SocketAddr::new("127.0.0.1".parse().expect("ip"), port);
    let (status, _) = admin_request(loopback, "GET", "/shutdown").await;
    assert_eq!(status, 405, "GET /shutdown must not stop the proxy");
    for ip in [own_address(false), own_address(true)]
        .into_iter()
        .flatten()
    {
        let (status, body) = admin_request(SocketAddr::new(ip, port), "POST", "/shutdown").await;
        assert_eq!(status, 403, "{ip}: {body}");
    }
    // Still serving after the refused requests.
    let (status, body) = admin_get(loopback, "/ready").await;
    assert_eq!(status, 200, "{body}");
    let mut client = proxy.client("greeter").await;
    say_hello(&mut client)
        .await
        .expect("a call before the shutdown");

    let (status, body) = admin_request(loopback, "POST", "/shutdown").await;
    assert_eq!(status, 200, "{body}");
    let running = proxy.running.take().expect("running");
    tokio::time::timeout(std::time::Duration::from_secs(10), running.wait())
        .await
        .expect("the proxy stops within 10 s of POST /shutdown")
        .expect("the proxy stops cleanly");
}
