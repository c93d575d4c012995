//! The push discovery server against a real apiserver: real projected-style
//! ServiceAccount tokens (TokenRequest with the discovery audience), real
//! TokenReviews, real EndpointSlices, a real tonic client over TLS.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::support::{TIMEOUT, install_crd};
use grpc_balancer_crds::annotations::BALANCING_LABEL;
use grpc_balancer_crds::v1alpha1::GrpcBalancing;
use grpc_balancer_discovery_api::channel::{client_config, tls_channel};
use grpc_balancer_discovery_api::v1::discovery_client::DiscoveryClient;
use grpc_balancer_discovery_api::v1::{WatchRequest, WatchResponse};
use grpc_balancer_discovery_api::{AUTHORIZATION, TOKEN_AUDIENCE};
use grpc_balancer_operator::discovery::{Discovery, DiscoverySettings, FeedSettings};
use grpc_balancer_operator::metrics::{ApiRequestCounter, Metrics};
use grpc_balancer_operator::render::fixtures::with_spec;
use grpc_balancer_test_support::{ControlPlane, TestNamespace, poll_until};
use grpc_balancer_webhook::certs::{generate, serving_names};
use grpc_balancer_webhook::tls::{ServingCert, certified_key, server_config};
use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::core::v1::{ObjectReference, ServiceAccount};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

pub(crate) const SPEC: &str = "selector: { app: g }\nport: 50051\nlistenerPort: 15001\nsubsets:\n  - { name: v1, labels: { version: v1 } }\n";

struct Server {
    addr: SocketAddr,
    ca_pem: String,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start_server(client: &kube::Client, watch_namespace: Option<String>) -> Server {
    start_server_with(client, watch_namespace, 100, 8).await
}

async fn start_server_with(
    client: &kube::Client,
    watch_namespace: Option<String>,
    max_streams: usize,
    stream_buffer: usize,
) -> Server {
    let names = serving_names("grpc-balancer", "grpc-balancer", &[]);
    let certs = generate(&names, SystemTime::now()).expect("certificates");
    let key = certified_key(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes()).expect("key");
    let tls = Arc::new(server_config(Arc::new(ServingCert::new(key))).expect("TLS settings"));
    let discovery = Discovery::bind("127.0.0.1:0".parse().expect("addr"), "test-epoch".into(), 8)
        .await
        .expect("bind");
    let addr = discovery.local_addr;
    let metrics = Arc::new(Metrics::new(ApiRequestCounter::default()));
    let stop = CancellationToken::new();
    let settings = DiscoverySettings {
        listen: addr,
        feed: FeedSettings {
            cluster_domain: "cluster.local".into(),
            proxy_admin_port: 9901,
            watch_namespace,
        },
        max_streams,
        stream_buffer,
        epoch: "test-epoch".into(),
    };
    tokio::spawn(discovery.run(
        client.clone(),
        settings,
        Some(tls),
        metrics.clone(),
        stop.clone(),
    ));
    Server {
        addr,
        ca_pem: certs.ca_pem,
        stop,
        metrics,
    }
}

fn channel(server: &Server) -> Channel {
    let tls = client_config(server.ca_pem.as_bytes()).expect("CA");
    tls_channel(
        &server.addr.to_string(),
        "grpc-balancer.grpc-balancer.svc",
        tls,
    )
    .expect("channel")
}

pub(crate) async fn token(client: &kube::Client, ns: &str, sa: &str, audience: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    if sas.get_opt(sa).await.expect("get SA").is_none() {
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(sa.into()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        sas.create(&PostParams::default(), &account)
            .await
            .expect("SA created");
    }
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.into()],
            expiration_seconds: Some(600),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    sas.create_token_request(sa, &PostParams::default(), &request)
        .await
        .expect("token issued")
        .status
        .expect("token status")
        .token
}

async fn watch(
    channel: Channel,
    namespace: &str,
    token: Option<&str>,
) -> Result<tonic::Streaming<WatchResponse>, tonic::Status> {
    let mut request = tonic::Request::new(WatchRequest {
        namespace: namespace.into(),
        pod_name: "test".into(),
    });
    if let Some(token) = token {
        request.metadata_mut().insert(
            AUTHORIZATION,
            format!("Bearer {token}").parse().expect("ASCII token"),
        );
    }
    DiscoveryClient::new(channel)
        .watch(request)
        .await
        .map(|r| r.into_inner())
}

async fn next(stream: &mut tonic::Streaming<WatchResponse>) -> WatchResponse {
    tokio::time::timeout(TIMEOUT, stream.message())
        .await
        .expect("a message in time")
        .expect("stream healthy")
        .expect("stream open")
}

pub(crate) fn slice(name: &str, service: &str, endpoints: Vec<Endpoint>) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/service-name".to_owned(), service.to_owned()),
                (BALANCING_LABEL.to_owned(), "greeter".to_owned()),
            ])),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(vec![EndpointPort {
            name: Some("grpc".into()),
            port: Some(50051),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
    }
}

pub(crate) fn endpoint(ip: &str, pod: &str, terminating: bool) -> Endpoint {
    Endpoint {
        addresses: vec![ip.into()],
        conditions: Some(EndpointConditions {
            ready: Some(!terminating),
            serving: Some(true),
            terminating: Some(terminating),
        }),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            name: Some(pod.into()),
            ..ObjectReference::default()
        }),
        zone: Some("zone-a".into()),
        ..Endpoint::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_gets_its_namespace_snapshot_then_changes() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "push").await;
    let service = balancing_with_slice(&client, ns.name()).await;
    let gbs: Api<GrpcBalancing> = Api::namespaced(client.clone(), ns.name());
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns.name());
    let server = start_server(&client, None).await;
    let token = token(&client, ns.name(), "proxy", TOKEN_AUDIENCE).await;
    let (mut stream, snapshot) = stream_with(&server, ns.name(), &token, &service).await;
    assert!(snapshot.snapshot);
    assert_eq!(snapshot.epoch, "test-epoch");
    let config = snapshot
        .config
        .clone()
        .expect("the snapshot has the config");
    let parsed = grpc_balancer_crds::config::parse_yaml(&config).expect("the file format");
    assert_eq!(parsed.balancings[0].name, "greeter");
    let set = &snapshot.endpoint_sets[0];
    assert_eq!(set.endpoints.len(), 1);
    let e = &set.endpoints[0];
    assert_eq!(
        (e.address.as_str(), e.pod_name.as_str(), e.zone.as_str()),
        ("10.1.0.1:50051", "g-1", "zone-a")
    );
    assert!(e.ready && e.serving && !e.terminating);

    // The pod starts terminating and a new one appears: one change, the
    // next version, endpoints only.
    slices
        .patch(
            "grpcb-greeter-v1-a",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "endpoints": [
                    {"addresses": ["10.1.0.1"], "conditions": {"ready": false, "serving": true, "terminating": true},
                     "targetRef": {"kind": "Pod", "name": "g-1"}},
                    {"addresses": ["10.1.0.2"], "conditions": {"ready": true, "serving": true, "terminating": false},
                     "targetRef": {"kind": "Pod", "name": "g-2"}}
                ]
            })),
        )
        .await
        .expect("patched");
    let change = next(&mut stream).await;
    assert!(!change.snapshot);
    assert_eq!(change.version, snapshot.version + 1);
    assert_eq!(change.config, None, "the config did not change");
    let set = &change.endpoint_sets[0];
    assert_eq!(set.service, service);
    let terminating: Vec<_> = set.endpoints.iter().filter(|e| e.terminating).collect();
    assert_eq!(terminating.len(), 1);
    assert_eq!(terminating[0].pod_name, "g-1");
    assert!(!terminating[0].ready && terminating[0].serving);

    // A config change reaches the stream as the new document.
    gbs.patch(
        "greeter",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"timeout": "3s"}})),
    )
    .await
    .expect("patched");
    let change = next(&mut stream).await;
    let config = change.config.expect("the new config");
    assert!(config.contains("timeout: 3s"), "{config}");

    // The stream is counted; the fan-out histogram saw the changes.
    let text = server.metrics.encode();
    assert!(
        text.contains("grpc_balancer_operator_discovery_streams 1"),
        "{text}"
    );
    assert!(!text.contains("grpc_balancer_operator_discovery_fanout_seconds_count 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_other_namespaces_learn_nothing() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    install_crd(&client).await;
    let mine = TestNamespace::new(&client, "push-mine").await;
    let theirs = TestNamespace::new(&client, "push-theirs").await;
    let gbs: Api<GrpcBalancing> = Api::namespaced(client.clone(), theirs.name());
    gbs.create(&PostParams::default(), &with_spec("greeter", SPEC))
        .await
        .expect("balancing");
    let server = start_server(&client, None).await;

    let good = token(&client, mine.name(), "proxy", TOKEN_AUDIENCE).await;
    let apiserver_audience = token(
        &client,
        mine.name(),
        "proxy",
        "https://kubernetes.default.svc.cluster.local",
    )
    .await;
    let revoked = token(&client, mine.name(), "gone", TOKEN_AUDIENCE).await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), mine.name());
    accounts
        .delete("gone", &DeleteParams::default())
        .await
        .expect("SA deleted");

    // The apiserver itself may honour the revoked token for a moment: wait
    // until it refuses it, so that the server's first review is a refusal.
    let reviews: Api<TokenReview> = Api::all(client.clone());
    poll_until("the apiserver refusing the revoked token", TIMEOUT, || {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(revoked.clone()),
                audiences: Some(vec![TOKEN_AUDIENCE.into()]),
            },
            ..TokenReview::default()
        };
        let reviews = reviews.clone();
        async move {
            let answer = reviews
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| e.to_string())?;
            match answer.status.and_then(|s| s.authenticated) {
                Some(true) => Err("still authenticated".to_owned()),
                _ => Ok(()),
            }
        }
    })
    .await;

    let cases: [(&str, &str, Option<&str>, Code); 6] = [
        ("no token", mine.name(), None, Code::Unauthenticated),
        (
            "garbage token",
            mine.name(),
            Some("not-a-jwt"),
            Code::Unauthenticated,
        ),
        (
            "apiserver audience",
            mine.name(),
            Some(&apiserver_audience),
            Code::Unauthenticated,
        ),
        (
            "revoked token",
            mine.name(),
            Some(&revoked),
            Code::Unauthenticated,
        ),
        (
            "other namespace",
            theirs.name(),
            Some(&good),
            Code::PermissionDenied,
        ),
        ("no namespace", "", Some(&good), Code::InvalidArgument),
    ];
    for (what, namespace, token, code) in cases {
        // A revoked token may be honoured for a moment (the apiserver's
        // own token cache); poll until the refusal.
        let status = poll_until(what, TIMEOUT, || {
            let channel = channel(&server);
            async move {
                match watch(channel, namespace, token).await {
                    Err(status) if status.code() == code => Ok(status),
                    Err(status) => Err(format!("{what}: {status:?}")),
                    Ok(_) => Err(format!("{what}: a stream was opened")),
                }
            }
        })
        .await;
        assert!(!status.message().is_empty(), "{what}: a clear message");
        assert!(
            !status.message().contains("greeter"),
            "{what}: nothing of the other namespace"
        );
    }
    let text = server.metrics.encode();
    for reason in ["no_token", "bad_token", "other_namespace", "malformed"] {
        assert!(
            !text.contains(&format!(
                "grpc_balancer_operator_discovery_refused_streams_total{{reason=\"{reason}\"}} 0"
            )),
            "{reason} counted: {text}"
        );
    }

    // The good token sees its own (empty) namespace only.
    let mut stream = watch(channel(&server), mine.name(), Some(&good))
        .await
        .expect("own namespace");
    let snapshot = next(&mut stream).await;
    assert_eq!(snapshot.config.as_deref(), Some(""));
    assert!(snapshot.endpoint_sets.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_untrusted_clients_are_refused_by_tls() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    let server = start_server(&client, Some("nothing-here".into())).await;
    // h2c to a TLS port: no stream.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    let err = tokio::time::timeout(TIMEOUT, watch(plain, "x", Some("t")))
        .await
        .expect("answer in time")
        .expect_err("refused");
    assert_ne!(err.code(), Code::Ok, "{err:?}");
    // A client trusting another CA: no stream.
    let other = generate(&["x".into()], SystemTime::now()).expect("other CA");
    let tls = client_config(other.ca_pem.as_bytes()).expect("CA");
    let untrusting = tls_channel(
        &server.addr.to_string(),
        "grpc-balancer.grpc-balancer.svc",
        tls,
    )
    .expect("channel");
    let err = watch(untrusting, "x", Some("t"))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}

/// A snapshot that already has `service` (the server's watches may not have
/// caught up with what the test created).
async fn stream_with(
    server: &Server,
    ns: &str,
    token: &str,
    service: &str,
) -> (tonic::Streaming<WatchResponse>, WatchResponse) {
    poll_until("a snapshot with the balancing", TIMEOUT, || async move {
        let mut stream = watch(channel(server), ns, Some(token))
            .await
            .map_err(|e| e.to_string())?;
        let first = next(&mut stream).await;
        if first.endpoint_sets.iter().any(|s| s.service == service) {
            Ok((stream, first))
        } else {
            Err(format!("snapshot without {service}"))
        }
    })
    .await
}

async fn balancing_with_slice(client: &kube::Client, ns: &str) -> String {
    let gbs: Api<GrpcBalancing> = Api::namespaced(client.clone(), ns);
    gbs.create(&PostParams::default(), &with_spec("greeter", SPEC))
        .await
        .expect("balancing");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    slices
        .create(
            &PostParams::default(),
            &slice(
                "grpcb-greeter-v1-a",
                "grpcb-greeter-v1",
                vec![endpoint("10.1.0.1", "g-1", false)],
            ),
        )
        .await
        .expect("slice");
    format!("grpcb-greeter-v1.{ns}.svc.cluster.local")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_stream_cap_a_proxy_is_refused_until_one_leaves() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "push-cap").await;
    let service = balancing_with_slice(&client, ns.name()).await;
    let server = start_server_with(&client, None, 2, 8).await;
    let token = token(&client, ns.name(), "proxy", TOKEN_AUDIENCE).await;

    let (first, _) = stream_with(&server, ns.name(), &token, &service).await;
    let (_second, _) = stream_with(&server, ns.name(), &token, &service).await;
    let refused = watch(channel(&server), ns.name(), Some(&token))
        .await
        .expect_err("a third stream is over the cap");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("2 streams"), "{refused:?}");
    let text = server.metrics.encode();
    assert!(text.contains("reason=\"too_many_streams\"} 1"), "{text}");

    // One proxy goes: its place is free again.
    drop(first);
    let (_third, snapshot) = stream_with(&server, ns.name(), &token, &service).await;
    assert!(snapshot.snapshot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_stops_reading_is_dropped_and_the_others_keep_up() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "push-slow").await;
    let service = balancing_with_slice(&client, ns.name()).await;
    let server = start_server_with(&client, None, 100, 8).await;
    let token = token(&client, ns.name(), "proxy", TOKEN_AUDIENCE).await;

    // The slow proxy reads its snapshot, then nothing more.
    let (mut slow, _) = stream_with(&server, ns.name(), &token, &service).await;
    let (mut fast, _) = stream_with(&server, ns.name(), &token, &service).await;
    // A pod of the fast reader's latest change.
    let (seen, fast_latest) = tokio::sync::watch::channel(String::new());
    tokio::spawn(async move {
        while let Ok(Some(message)) = fast.message().await {
            if let Some(e) = message
                .endpoint_sets
                .first()
                .and_then(|s| s.endpoints.first())
            {
                seen.send_replace(e.pod_name.clone());
            }
        }
    });

    // Changes large enough to fill the slow stream's HTTP/2 windows (a tonic
    // client's default stream window is 2 MiB) and its buffer several times
    // over: 300 endpoints each (about 25 KB a message), 300 times.
    const CHANGES: u64 = 300;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns.name());
    for round in 0..CHANGES {
        let endpoints: Vec<_> = (0..300)
            .map(|i| {
                serde_json::json!({
                    "addresses": [format!("10.{}.{}.{}", 2 + i / 250, round % 250, i % 250 + 1)],
                    "conditions": {"ready": true, "serving": true, "terminating": false},
                    "targetRef": {"kind": "Pod", "name": format!("greeter-v1-7d9f8b6c5d-round{round}-pod{i}")},
                    "zone": "zone-a"
                })
            })
            .collect();
        slices
            .patch(
                "grpcb-greeter-v1-a",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "endpoints": endpoints })),
            )
            .await
            .expect("patched");
    }

    poll_until("the slow stream dropped", TIMEOUT, || async {
        let text = server.metrics.encode();
        if text.contains("grpc_balancer_operator_discovery_slow_streams_dropped_total 1") {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await;
    // What was buffered for the slow one (bounded by its HTTP/2 windows and
    // the per-stream buffer), then a clear end: not 300 changes kept for it.
    let mut buffered = 0;
    let end = loop {
        match tokio::time::timeout(TIMEOUT, slow.message()).await {
            Ok(Ok(Some(_))) => buffered += 1,
            Ok(Ok(None)) => panic!("the slow stream ended without a status after {buffered}"),
            Ok(Err(status)) => break status,
            Err(_) => panic!("the slow stream neither ended nor sent within {TIMEOUT:?}"),
        }
    };
    assert_eq!(end.code(), Code::ResourceExhausted, "{end:?}");
    assert!(
        buffered < CHANGES / 2,
        "{buffered} of {CHANGES} changes were kept for a reader that stopped"
    );

    // The fast one saw the last change (the feed may fold changes that come
    // close together into one version, so look for the last one's content).
    let wanted = format!("-round{}-", CHANGES - 1);
    poll_until("the fast reader at the last change", TIMEOUT, || {
        let latest = fast_latest.borrow().clone();
        let wanted = wanted.clone();
        async move {
            if latest.contains(&wanted) {
                Ok(())
            } else {
                Err(format!("at {latest}, wanted a pod of {wanted}"))
            }
        }
    })
    .await;
}
