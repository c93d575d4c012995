//! Scale-out and scale-in through DNS discovery, against a small DNS server
//! that answers A queries from a list the test changes.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use grpc_balancer_crds::config::{self, Discovery, DnsDiscovery, PolicyKind, Subset};
use grpc_balancer_greeter::BackendOptions;
use grpc_balancer_proxy::ConfigSource;

type Answers = Arc<Mutex<Vec<Ipv4Addr>>>;

/// A UDP DNS server: every A query gets the current list (TTL 0); other
/// types get an empty NOERROR answer.
async fn dns_server(answers: Answers) -> SocketAddr {
    dns_server_counting(answers, Arc::new(AtomicUsize::new(0))).await
}

/// [`dns_server`], counting the A queries it answers.
async fn dns_server_counting(answers: Answers, queries: Arc<AtomicUsize>) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind dns");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            if buf.get(..n).is_some_and(is_a_query) {
                queries.fetch_add(1, Ordering::SeqCst);
            }
            if let Some(reply) = answer(&buf[..n], &answers) {
                let _ = socket.send_to(&reply, peer).await;
            }
        }
    });
    addr
}

fn is_a_query(query: &[u8]) -> bool {
    let mut pos = 12;
    while let Some(&len) = query.get(pos) {
        if len == 0 {
            return query.get(pos + 1..pos + 3) == Some(&[0, 1]);
        }
        pos += 1 + usize::from(len);
    }
    false
}

fn answer(query: &[u8], answers: &Answers) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // Skip the question name, then QTYPE and QCLASS.
    let mut pos = 12;
    while *query.get(pos)? != 0 {
        pos += 1 + usize::from(query[pos]);
    }
    let qtype = u16::from_be_bytes([*query.get(pos + 1)?, *query.get(pos + 2)?]);
    let question_end = pos + 5;
    let ips: Vec<Ipv4Addr> = if qtype == 1 {
        answers.lock().expect("answers").clone()
    } else {
        Vec::new()
    };
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query[..2]); // id
    out.extend_from_slice(&[0x81, 0x80]); // response, recursion available, NOERROR
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&(ips.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(query.get(12..question_end)?);
    for ip in ips {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
        out.extend_from_slice(&ip.octets());
    }
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_scale_out_and_in_without_failed_calls() {
    // Backends on 127.0.0.2-4, one port, as pods of a headless Service.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.2:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut bs = Vec::new();
    for i in 2..=4u8 {
        let addr = SocketAddr::from(([127, 0, 0, i], port));
        bs.push(
            grpc_balancer_greeter::spawn_server(addr, BackendOptions::named(format!("pod-{i}")))
                .await
                .expect("backend"),
        );
    }
    let answers: Answers = Arc::new(Mutex::new(vec![
        Ipv4Addr::new(127, 0, 0, 2),
        Ipv4Addr::new(127, 0, 0, 3),
    ]));
    let dns = dns_server(answers.clone()).await;

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
        .push(Ipv4Addr::new(127, 0, 0, 4));
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
        .retain(|ip| *ip != Ipv4Addr::new(127, 0, 0, 2));
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
    let answers: Answers = Arc::new(Mutex::new(vec![Ipv4Addr::new(127, 0, 0, 5)]));
    let queries = Arc::new(AtomicUsize::new(0));
    let dns = dns_server_counting(answers.clone(), queries.clone()).await;
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
    *answers.lock().expect("answers") = vec![Ipv4Addr::new(127, 0, 0, 6)];
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
