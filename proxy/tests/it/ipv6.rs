//! IPv6 end to end: listeners, static and DNS endpoints on `::1` with real
//! tonic backends, and the admin server on `[::]` (dual-stack), which is
//! what the webhook injects so the kubelet can probe an IPv6 pod IP.

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use crate::dns::{dns_answers, dns_server};
use crate::support::*;
use grpc_balancer_crds::config::{self, Discovery, DnsDiscovery, PolicyKind, Subset};
use grpc_balancer_greeter::BackendOptions;
use grpc_balancer_proxy::ConfigSource;

fn ipv6_loopback() -> bool {
    std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

fn free_v6() -> SocketAddr {
    let l = std::net::TcpListener::bind("[::1]:0").expect("bind [::1]");
    l.local_addr().expect("addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_listener_static_and_dns_endpoints_end_to_end() {
    if !ipv6_loopback() {
        eprintln!("skipped: no IPv6 loopback on this host");
        return;
    }
    let static_backend = grpc_balancer_greeter::spawn_server(
        "[::1]:0".parse().expect("addr"),
        BackendOptions::named("static6"),
    )
    .await
    .expect("backend on ::1");
    let dns_backend = grpc_balancer_greeter::spawn_server(
        "[::1]:0".parse().expect("addr"),
        BackendOptions::named("dns6"),
    )
    .await
    .expect("backend on ::1");
    let mut b = balancing(
        "v6",
        PolicyKind::RoundRobin,
        vec![
            static_subset("static", 1, &[static_backend.addr()]),
            Subset {
                name: "dns".into(),
                weight: 1,
                discovery: Discovery::dns(DnsDiscovery {
                    name: "greeter.v6.test".into(),
                    port: dns_backend.addr().port(),
                    refresh_interval: config::Duration::from_secs(1),
                }),
            },
        ],
    );
    b.listen = free_v6().to_string();
    assert!(b.listen.starts_with("[::1]:"), "{}", b.listen);
    // What the proxy gets from the file goes through the shared parser.
    let cfg = config::parse_yaml(&config::to_yaml(&config(vec![b])).expect("yaml"))
        .expect("IPv6 listener and endpoints are valid");
    let mut settings = test_settings(ConfigSource::Fixed(cfg));
    // AAAA queries get `::1`, A queries nothing: an IPv6-only Service.
    let dns = dns_server(
        dns_answers([Ipv6Addr::LOCALHOST]),
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    settings.dns_server = Some(dns);
    settings.admin = "[::]:0".parse().expect("addr");
    let proxy = start(settings).await;
    wait_ready(&proxy, "v6", 2).await;
    let listen = proxy.addr("v6");
    assert!(listen.is_ipv6(), "{listen}");

    let mut client = proxy.client("v6").await;
    let counts = spread(&mut client, 40).await;
    assert!(
        counts.get("static6").copied().unwrap_or(0) > 0
            && counts.get("dns6").copied().unwrap_or(0) > 0,
        "both IPv6 endpoints answer: {counts:?}"
    );

    // The admin server on [::] answers both families.
    let port = proxy.admin().port();
    for ip in ["::1", "127.0.0.1"] {
        let addr = SocketAddr::new(ip.parse().expect("ip"), port);
        let (status, body) = admin_get(addr, "/ready").await;
        assert_eq!(status, 200, "{ip}: {body}");
        let (_, endpoints) = admin_get(addr, "/endpoints").await;
        assert!(
            endpoints.contains(&format!("\"{}\"", static_backend.addr())),
            "{ip}: {endpoints}"
        );
    }
    let (_, metrics) = admin_get(proxy.admin(), "/metrics").await;
    assert!(
        metrics.contains(&format!("endpoint=\"{}\"", dns_backend.addr())),
        "{metrics}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_with_ipv6_flags() {
    if !ipv6_loopback() {
        eprintln!("skipped: no IPv6 loopback on this host");
        return;
    }
    let backend = grpc_balancer_greeter::spawn_server(
        "[::1]:0".parse().expect("addr"),
        BackendOptions::named("cli6"),
    )
    .await
    .expect("backend on ::1");
    let listen = free_v6();
    let admin_port = free_addr().port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_grpc-balancer-proxy"))
        .args(["--listen", &listen.to_string()])
        .args(["--endpoint", &backend.addr().to_string()])
        .args(["--admin", &format!("[::]:{admin_port}")])
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the proxy");
    let admin: SocketAddr = SocketAddr::new("::1".parse().expect("ip"), admin_port);
    eventually(
        Duration::from_secs(10),
        "the proxy answers",
        || async move {
            match grpc_balancer_greeter::connect(&listen.to_string()).await {
                Ok(mut c) => say_hello(&mut c).await.is_ok_and(|b| b == "cli6"),
                Err(_) => false,
            }
        },
    )
    .await;
    assert_eq!(admin_get(admin, "/ready").await.0, 200);
    assert_eq!(
        admin_get(SocketAddr::from(([127, 0, 0, 1], admin_port)), "/live")
            .await
            .0,
        200
    );
    child.start_kill().expect("kill");
    let _ = child.wait().await;
}
