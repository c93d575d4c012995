//! Scale-out and scale-in through DNS discovery, against a small DNS server
//! that answers A queries from a list the test changes ([`crate::dns`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::dns::{dns_answers, dns_server};
use crate::support::*;
use grpc_balancer_crds::config::{self, Discovery, DnsDiscovery, PolicyKind, Subset};
use grpc_balancer_greeter::BackendOptions;
use grpc_balancer_proxy::ConfigSource;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_scale_out_and_in_without_failed_calls() {
    // Backends on 127.0.0.2-4, one port, as pods of a headless Service.
    let (port, mut bs) = crate::support::loopback_pods(4).await;
    let answers = dns_answers([Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)]);
    let dns = dns_server(answers.clone(), Arc::new(AtomicUsize::new(0))).await;

    let refresh = Duration::from_millis(500);
    let mut b = balancing(
        "greeter",
        PolicyKind::RoundRobin,
        vec![Subset {
            name: "pods".into(),
            weight: 1,
            discovery: Discovery::dns(DnsDiscovery {
                name: "greeter.demo.svc.cluster.local.".into(),
                port,
                refresh_interval: config::Duration::from(refresh),
            }),
        }],
    );
    b.outlier_detection.consecutive_failures = 1;
    let mut settings = test_settings(ConfigSource::Fixed(config(vec![b])));
    settings.dns_server = Some(dns);
    let proxy = start(settings).await;
    wait_ready(&proxy, "greeter", 2).await;
    let mut client = proxy.client("greeter").await;
    let counts = spread(&mut client, 60).await;
    assert_eq!(
        counts.keys().cloned().collect::<Vec<_>>(),
        ["pod-2", "pod-3"]
    );

    // Scale out: pod-4 appears in DNS and gets calls within one refresh.
    answers
        .lock()
        .expect("answers")
        .push(Ipv4Addr::new(127, 0, 0, 4).into());
    let started = tokio::time::Instant::now();
    loop {
        let counts = spread(&mut client, 30).await;
        if counts.contains_key("pod-4") {
            break;
        }
        assert!(
            started.elapsed() < refresh * 2 + Duration::from_millis(500),
            "pod-4 got no calls: {counts:?}"
        );
    }

    // Scale in: pod-2 leaves DNS, then dies; no call fails, none lands on it.
    answers
        .lock()
        .expect("answers")
        .retain(|ip| *ip != IpAddr::from(Ipv4Addr::new(127, 0, 0, 2)));
    let admin = proxy.admin();
    eventually(
        refresh * 3,
        "pod-2 removed from the endpoints",
        || async move {
            !admin_get(admin, "/endpoints")
                .await
                .1
                .contains("127.0.0.2:")
        },
    )
    .await;
    bs.remove(0).kill();
    let counts = spread(&mut client, 60).await;
    assert_eq!(
        counts.keys().cloned().collect::<Vec<_>>(),
        ["pod-3", "pod-4"]
    );

    // A pod killed while still in DNS: after its ejection no call fails.
    let pod3 = bs.remove(0);
    pod3.kill();
    let admin = proxy.admin();
    eventually(
        Duration::from_secs(3),
        "pod-3 out of rotation",
        || async move {
            let (_, eps) = admin_get(admin, "/endpoints").await;
            let v: serde_json::Value = serde_json::from_str(&eps).expect("json");
            v["balancings"][0]["subsets"][0]["endpoints"]
                .as_array()
                .expect("endpoints")
                .iter()
                .filter(|e| {
                    e["address"]
                        .as_str()
                        .is_some_and(|a| a.starts_with("127.0.0.3:"))
                })
                .all(|e| e["available"] == false)
        },
    )
    .await;
    let counts = spread(&mut client, 60).await;
    assert_eq!(counts.keys().cloned().collect::<Vec<_>>(), ["pod-4"]);
    let (_, metrics) = admin_get(admin, "/metrics").await;
    assert!(
        metrics.contains("grpc_balancer_discovery_refreshes_total{balancing=\"greeter\",subset=\"pods\",result=\"ok\"}"),
        "{metrics}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connect_re_resolves_at_once() {
    // The name first points at 127.0.0.5, where nothing listens; the pod
    // moved to 127.0.0.6. The refresh interval is far beyond the test: only
    // the re-resolution a failed connect triggers can find the new address.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.6:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let _moved = grpc_balancer_greeter::spawn_server(
        SocketAddr::from(([127, 0, 0, 6], port)),
        BackendOptions::named("moved"),
    )
    .await
    .expect("backend");
    let answers = dns_answers([Ipv4Addr::new(127, 0, 0, 5)]);
    let queries = Arc::new(AtomicUsize::new(0));
    let dns = dns_server(answers.clone(), queries.clone()).await;
    let b = balancing(
        "greeter",
        PolicyKind::RoundRobin,
        vec![Subset {
            name: "pods".into(),
            weight: 1,
            discovery: Discovery::dns(DnsDiscovery {
                name: "greeter.demo.svc.cluster.local.".into(),
                port,
                refresh_interval: config::Duration::from_secs(600),
            }),
        }],
    );
    let mut settings = test_settings(ConfigSource::Fixed(config(vec![b])));
    settings.dns_server = Some(dns);
    let proxy = start(settings).await;
    let admin = proxy.admin();
    eventually(
        Duration::from_secs(5),
        "the stale address is discovered",
        || async move {
            admin_get(admin, "/endpoints")
                .await
                .1
                .contains(&format!("127.0.0.5:{port}"))
        },
    )
    .await;
    let before = queries.load(Ordering::SeqCst);
    *answers.lock().expect("answers") = vec![Ipv4Addr::new(127, 0, 0, 6).into()];
    eventually(
        Duration::from_secs(5),
        "a failed connect re-resolved the name",
        || async move {
            admin_get(admin, "/endpoints")
                .await
                .1
                .contains(&format!("127.0.0.6:{port}"))
        },
    )
    .await;
    assert!(queries.load(Ordering::SeqCst) > before);
    wait_ready(&proxy, "greeter", 1).await;
    let mut client = proxy.client("greeter").await;
    assert_eq!(say_hello(&mut client).await.expect("call"), "moved");
    proxy.stop().await;
}
