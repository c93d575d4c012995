//! Push discovery against a real tonic discovery server over TLS (the
//! operator's API, served here by a test implementation the test steers),
//! with real greeter backends and a DNS server for the fallback.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use grpc_balancer_crds::config::{self, Discovery, DnsDiscovery, PolicyKind, Subset};
use grpc_balancer_discovery_api::AUTHORIZATION;
use grpc_balancer_discovery_api::incoming::incoming;
use grpc_balancer_discovery_api::v1::discovery_server::{
    Discovery as DiscoveryApi, DiscoveryServer,
};
use grpc_balancer_discovery_api::v1::{Endpoint, EndpointSet, WatchRequest, WatchResponse};
use grpc_balancer_greeter::pb::greeter_client::GreeterClient;
use grpc_balancer_proxy::ConfigSource;
use grpc_balancer_proxy::discovery::push::{CaSource, PushSettings};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::dns::{dns_answers, dns_server};
use crate::support::*;

const SERVICE: &str = "greeter.push.svc.cluster.local";
const TOKEN: &str = "the-right-token";

type Stream_ = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

/// What the test server pushes: one namespace's state and its watchers.
#[derive(Default)]
struct Namespace {
    version: u64,
    config: String,
    sets: BTreeMap<String, Vec<Endpoint>>,
    watchers: Vec<mpsc::Sender<Result<WatchResponse, Status>>>,
}

#[derive(Clone, Default)]
struct TestDiscovery {
    ns: Arc<Mutex<Namespace>>,
}

impl TestDiscovery {
    fn set(&self, endpoints: Vec<Endpoint>) {
        let mut ns = self.ns.lock().expect("lock");
        ns.version += 1;
        ns.sets.insert(SERVICE.into(), endpoints.clone());
        let message = WatchResponse {
            epoch: "test".into(),
            version: ns.version,
            snapshot: false,
            config: None,
            endpoint_sets: vec![EndpointSet {
                service: SERVICE.into(),
                endpoints,
            }],
            removed_services: Vec::new(),
            observed_at_unix_ms: 0,
        };
        ns.watchers
            .retain(|w| w.try_send(Ok(message.clone())).is_ok());
    }
}

#[tonic::async_trait]
impl DiscoveryApi for TestDiscovery {
    type WatchStream = Stream_;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let token = request
            .metadata()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if token != format!("Bearer {TOKEN}") {
            return Err(Status::unauthenticated("token refused"));
        }
        let (tx, mut rx) = mpsc::channel(64);
        let mut ns = self.ns.lock().expect("lock");
        let snapshot = WatchResponse {
            epoch: "test".into(),
            version: ns.version,
            snapshot: true,
            config: Some(ns.config.clone()),
            endpoint_sets: ns
                .sets
                .iter()
                .map(|(s, e)| EndpointSet {
                    service: s.clone(),
                    endpoints: e.clone(),
                })
                .collect(),
            removed_services: Vec::new(),
            observed_at_unix_ms: 0,
        };
        tx.try_send(Ok(snapshot)).expect("room for the snapshot");
        ns.watchers.push(tx);
        Ok(Response::new(Box::pin(futures::stream::poll_fn(
            move |cx| rx.poll_recv(cx),
        ))))
    }
}

struct Certs {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn certs() -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["discovery.test".to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    server.alpn_protocols = vec![b"h2".to_vec()];
    Certs {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    }
}

/// Serves `discovery` on `addr` until the token is cancelled.
async fn serve(
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    discovery: TestDiscovery,
) -> CancellationToken {
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind discovery");
    let router = tonic::transport::Server::builder().add_service(DiscoveryServer::new(discovery));
    tokio::spawn(router.serve_with_incoming_shutdown(
        incoming(listener, Some(tls), stop.clone()),
        stop.clone().cancelled_owned(),
    ));
    stop
}

fn ready(ip: [u8; 4], port: u16) -> Endpoint {
    Endpoint {
        address: SocketAddr::from((ip, port)).to_string(),
        pod_name: format!("pod-{}", ip[3]),
        zone: "zone-a".into(),
        ready: true,
        serving: true,
        terminating: false,
    }
}

fn terminating(ip: [u8; 4], port: u16) -> Endpoint {
    Endpoint {
        ready: false,
        terminating: true,
        ..ready(ip, port)
    }
}

/// Waits until 10 calls in a row all land on `pod`.
async fn calls_only_on(
    client: &GreeterClient<Channel>,
    pod: &'static str,
    within: Duration,
    what: &str,
) {
    eventually(within, what, || {
        let mut client = client.clone();
        async move { spread(&mut client, 10).await.keys().eq([pod]) }
    })
    .await;
}

async fn endpoints_json(proxy: &Proxy) -> serde_json::Value {
    let (status, body) = admin_get(proxy.admin(), "/endpoints").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("/endpoints is JSON")
}

fn file_config(port: u16, listen: SocketAddr) -> config::ProxyConfig {
    let mut b = balancing(
        "greeter",
        PolicyKind::RoundRobin,
        vec![Subset {
            name: "pods".into(),
            weight: 1,
            discovery: Discovery::dns(DnsDiscovery {
                name: format!("{SERVICE}."),
                port,
                refresh_interval: config::Duration::from(Duration::from_millis(300)),
            }),
        }],
    );
    b.listen = listen.to_string();
    config(vec![b])
}

fn push_settings(dir: &Path, addr: SocketAddr, ca_pem: &str, token: &str) -> PushSettings {
    std::fs::write(dir.join("ca.crt"), ca_pem).expect("CA file");
    std::fs::write(dir.join("token"), token).expect("token file");
    PushSettings {
        address: addr.to_string(),
        server_name: "discovery.test".into(),
        ca: CaSource::File(dir.join("ca.crt")),
        token_file: dir.join("token"),
        namespace: "push".into(),
        pod_name: "client".into(),
    }
}

/// What every push test starts from: greeter pods on 127.0.0.2..5, a DNS
/// server that answers pod-2 (and counts its queries), and a discovery
/// server over TLS that pushes pod-3.
struct World {
    port: u16,
    _pods: Vec<grpc_balancer_greeter::RunningBackend>,
    dns: SocketAddr,
    dns_queries: Arc<AtomicUsize>,
    certs: Certs,
    discovery: TestDiscovery,
    server_addr: SocketAddr,
    stop_server: CancellationToken,
}

impl World {
    async fn new() -> World {
        let (port, pods) = crate::support::loopback_pods(5).await;
        let dns_queries = Arc::new(AtomicUsize::new(0));
        let dns = dns_server(
            dns_answers([Ipv4Addr::new(127, 0, 0, 2)]),
            dns_queries.clone(),
        )
        .await;
        let certs = certs();
        let discovery = TestDiscovery::default();
        discovery.set(vec![ready([127, 0, 0, 3], port)]);
        let server_addr = free_addr();
        let stop_server = serve(server_addr, certs.server.clone(), discovery.clone()).await;
        World {
            port,
            _pods: pods,
            dns,
            dns_queries,
            certs,
            discovery,
            server_addr,
            stop_server,
        }
    }

    /// A proxy of `source`, on this world's DNS and discovery server with
    /// `token`; its token and CA files go to `dir`.
    async fn proxy(&self, source: ConfigSource, dir: &Path, token: &str) -> Proxy {
        let mut settings = test_settings(source);
        settings.dns_server = Some(self.dns);
        settings.push = Some(push_settings(
            dir,
            self.server_addr,
            &self.certs.ca_pem,
            token,
        ));
        start(settings).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_wins_over_dns_and_its_loss_fails_no_call() {
    // DNS says pod-2; the stream will say otherwise.
    let world = World::new().await;
    let (port, discovery) = (world.port, world.discovery.clone());

    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("config.yaml");
    let listen = free_addr();
    let file = file_config(port, listen);
    std::fs::write(&config_path, config::to_yaml(&file).expect("yaml")).expect("config file");
    // The pushed config is the file's plus one balancing: it shows which
    // source is in force.
    let mut pushed = file.clone();
    let mut extra = pushed.balancings[0].clone();
    extra.name = "pushed".into();
    extra.listen = free_addr().to_string();
    pushed.balancings.push(extra);
    discovery.ns.lock().expect("lock").config = config::to_yaml(&pushed).expect("yaml");

    let proxy = world
        .proxy(ConfigSource::File(config_path), dir.path(), TOKEN)
        .await;

    eventually(
        Duration::from_secs(10),
        "the pushed config applied",
        || async { endpoints_json(&proxy).await["configSource"] == "push" },
    )
    .await;
    let mut client = proxy.client("greeter").await;
    calls_only_on(
        &client,
        "pod-3",
        Duration::from_secs(10),
        "calls on the pushed endpoint only",
    )
    .await;
    let view = endpoints_json(&proxy).await;
    assert_eq!(view["push"]["connected"], true, "{view}");
    assert_eq!(
        view["balancings"][0]["subsets"][0]["source"], "push",
        "{view}"
    );
    let version = view["push"]["version"].as_u64().expect("version");

    // Load runs from here to the end; no call may fail.
    let failures = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let load_stop = CancellationToken::new();
    let load = {
        let (mut client, failures, calls, stop) = (
            client.clone(),
            failures.clone(),
            calls.clone(),
            load_stop.clone(),
        );
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                if let Err(s) = say_hello(&mut client).await {
                    eprintln!("failed call: {s:?}");
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                calls.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    // pod-3 starts terminating, pod-4 is new: from the moment the proxy
    // holds that version, pod-3 gets no new call.
    discovery.set(vec![
        terminating([127, 0, 0, 3], port),
        ready([127, 0, 0, 4], port),
    ]);
    eventually(
        Duration::from_secs(10),
        "the next version applied",
        || async { endpoints_json(&proxy).await["push"]["version"].as_u64() == Some(version + 1) },
    )
    .await;
    let after = spread(&mut client, 30).await;
    assert!(
        after.keys().eq(["pod-4"]),
        "no new call to the terminating pod: {after:?}"
    );

    // The control plane goes away: the proxy keeps its endpoints and falls
    // back to DNS (pod-2) for changes.
    world.stop_server.cancel();
    // Its streams end with it (as the operator's do on shutdown).
    discovery.ns.lock().expect("lock").watchers.clear();
    eventually(
        Duration::from_secs(20),
        "DNS in use after the stream is lost",
        || async {
            let view = endpoints_json(&proxy).await;
            view["push"]["connected"] == false
                && view["balancings"][0]["subsets"][0]["source"] == "dns"
        },
    )
    .await;
    calls_only_on(
        &client,
        "pod-2",
        Duration::from_secs(10),
        "calls on the DNS endpoint",
    )
    .await;
    // The file changes meanwhile: it applies now (the stream is down).
    let mut changed = file.clone();
    changed.balancings[0].timeout = Some(config::Duration::from_secs(7));
    std::fs::write(
        dir.path().join("config.yaml"),
        config::to_yaml(&changed).expect("yaml"),
    )
    .expect("config file");
    eventually(
        Duration::from_secs(10),
        "the file's config applied",
        || async { endpoints_json(&proxy).await["configSource"] == "file" },
    )
    .await;

    // It comes back (a new server, same address): the proxy reconnects and
    // converges on what it pushes.
    discovery.set(vec![ready([127, 0, 0, 5], port)]);
    let _server = serve(
        world.server_addr,
        world.certs.server.clone(),
        discovery.clone(),
    )
    .await;
    calls_only_on(
        &client,
        "pod-5",
        Duration::from_secs(40),
        "calls on the newly pushed endpoint",
    )
    .await;
    let view = endpoints_json(&proxy).await;
    assert_eq!(view["push"]["connected"], true, "{view}");
    assert!(view["push"]["reconnects"].as_u64() >= Some(1), "{view}");
    assert_eq!(view["configSource"], "push", "{view}");
    assert!(
        view["balancings"][0]["version"].as_u64().is_some(),
        "{view}"
    );

    load_stop.cancel();
    load.await.expect("load task");
    assert!(calls.load(Ordering::SeqCst) > 100, "the load ran");
    assert_eq!(failures.load(Ordering::SeqCst), 0, "no call failed");
    let (_, metrics) = admin_get(proxy.admin(), "/metrics").await;
    assert!(
        metrics.contains("grpc_balancer_discovery_push_connected 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("grpc_balancer_discovery_push_reconnects_total 1"),
        "{metrics}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_leaves_the_proxy_on_dns_and_says_why() {
    let world = World::new().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let fixed = ConfigSource::Fixed(file_config(world.port, free_addr()));
    let proxy = world.proxy(fixed, dir.path(), "stolen").await;
    eventually(Duration::from_secs(10), "the refusal reported", || async {
        let view = endpoints_json(&proxy).await;
        view["push"]["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("Unauthenticated"))
    })
    .await;
    let mut client = proxy.client("greeter").await;
    calls_only_on(
        &client,
        "pod-2",
        Duration::from_secs(10),
        "calls on the DNS endpoint",
    )
    .await;
    let view = endpoints_json(&proxy).await;
    assert_eq!(view["push"]["connected"], false);
    assert_eq!(view["balancings"][0]["subsets"][0]["source"], "dns");
    let _ = &mut client;
    proxy.stop().await;
}

/// A stream that worked and ends (the operator renews it when its token
/// expires, or a replica goes away) is replaced at once: subsets stay on
/// the pushed endpoints and DNS is not even asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_stream_is_replaced_without_a_detour_through_dns() {
    let world = World::new().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let fixed = ConfigSource::Fixed(file_config(world.port, free_addr()));
    let proxy = world.proxy(fixed, dir.path(), TOKEN).await;
    let mut client = proxy.client("greeter").await;
    calls_only_on(
        &client,
        "pod-3",
        Duration::from_secs(10),
        "calls on the pushed endpoint only",
    )
    .await;
    // Only a stream that lived a while is replaced at once (one that ends
    // right away gets the back-off): let this one reach that age.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let asked_before = world.dns_queries.load(Ordering::SeqCst);

    // The server ends every stream.
    world.discovery.ns.lock().expect("lock").watchers.clear();
    eventually(Duration::from_secs(10), "the stream replaced", || async {
        let view = endpoints_json(&proxy).await;
        view["push"]["connected"] == true && view["push"]["reconnects"] == 1
    })
    .await;
    let after = spread(&mut client, 30).await;
    assert!(after.keys().eq(["pod-3"]), "{after:?}");
    let view = endpoints_json(&proxy).await;
    assert_eq!(
        view["balancings"][0]["subsets"][0]["source"], "push",
        "{view}"
    );
    assert_eq!(
        world.dns_queries.load(Ordering::SeqCst),
        asked_before,
        "DNS was asked while the stream was being replaced"
    );
    proxy.stop().await;
}
