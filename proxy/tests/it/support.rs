//! Shared helpers of the proxy's integration tests: real greeter backends,
//! the real proxy started in-process, and polling with a deadline.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use grpc_balancer_crds::config::{
    Balancing, Discovery, OutlierDetection, Policy, PolicyKind, ProxyConfig, Queue, Retries, Subset,
};
use grpc_balancer_greeter::pb::HelloRequest;
use grpc_balancer_greeter::pb::greeter_client::GreeterClient;
use grpc_balancer_greeter::{BackendOptions, RunningBackend};
use grpc_balancer_proxy::transport::client::ConnectSettings;
use grpc_balancer_proxy::{ConfigSource, RunningProxy, Settings};
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// An unused loopback address (bound, then released), from below the
/// kernel's ephemeral range (32768 and up on Linux): everything else the
/// tests bind asks for port 0 and gets an ephemeral port, which could be
/// this very port once it is released (the proxy then refuses a listener on
/// its own admin port). A counter keeps the picks of one run apart.
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    for _ in 0..SPAN {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN;
        let port = u16::try_from(FIRST + offset).expect("below 32000");
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().expect("local addr");
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN)
}

pub async fn backend(name: &str) -> RunningBackend {
    grpc_balancer_greeter::spawn_server(
        "127.0.0.1:0".parse().expect("addr"),
        BackendOptions::named(name),
    )
    .await
    .expect("backend starts")
}

/// Backends `pod-2`..`pod-{last}` on 127.0.0.2..=127.0.0.{last}, all on one
/// port, as the pods of a Service: returns that port and the backends.
pub async fn loopback_pods(last: u8) -> (u16, Vec<RunningBackend>) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.2:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut bs = Vec::new();
    for i in 2..=last {
        let addr = SocketAddr::from(([127, 0, 0, i], port));
        bs.push(
            grpc_balancer_greeter::spawn_server(addr, BackendOptions::named(format!("pod-{i}")))
                .await
                .expect("backend"),
        );
    }
    (port, bs)
}

pub async fn backends(n: usize) -> Vec<RunningBackend> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(backend(&format!("b{i}")).await);
    }
    v
}

pub fn static_subset(name: &str, weight: u32, addrs: &[SocketAddr]) -> Subset {
    Subset {
        name: name.into(),
        weight,
        discovery: Discovery::static_list(addrs.iter().map(|a| a.to_string()).collect()),
    }
}

pub fn balancing(name: &str, policy: PolicyKind, subsets: Vec<Subset>) -> Balancing {
    Balancing {
        name: name.into(),
        listen: free_addr().to_string(),
        policy: Policy {
            kind: policy,
            header: None,
        },
        subsets,
        timeout: None,
        retries: Retries::default(),
        outlier_detection: OutlierDetection::default(),
        health_check: None,
        queue: Queue::default(),
        service: None,
    }
}

pub fn config(balancings: Vec<Balancing>) -> ProxyConfig {
    ProxyConfig { balancings }
}

pub struct Proxy {
    pub running: Option<RunningProxy>,
    stop: Option<oneshot::Sender<()>>,
}

impl Proxy {
    pub fn addr(&self, balancing: &str) -> SocketAddr {
        self.running
            .as_ref()
            .and_then(|r| r.listener_addr(balancing))
            .expect("balancing is running")
    }

    pub fn admin(&self) -> SocketAddr {
        self.running.as_ref().expect("running").admin_addr
    }

    pub async fn client(&self, balancing: &str) -> GreeterClient<Channel> {
        grpc_balancer_greeter::connect(&self.addr(balancing).to_string())
            .await
            .expect("connect to the proxy")
    }

    /// Sends the shutdown signal and waits for the drain to finish.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(r) = self.running.take() {
            r.wait().await.expect("proxy stops cleanly");
        }
    }
}

pub fn test_settings(source: ConfigSource) -> Settings {
    let mut s = Settings::new(source);
    s.admin = "127.0.0.1:0".parse().expect("addr");
    s.drain_timeout = Duration::from_secs(5);
    s.config_poll_interval = Duration::from_millis(100);
    s.connect = ConnectSettings {
        connect_timeout: Duration::from_secs(1),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..ConnectSettings::default()
    };
    s
}

pub async fn start(settings: Settings) -> Proxy {
    if std::env::var_os(grpc_balancer_proxy::telemetry::LOG_ENV).is_some() {
        grpc_balancer_proxy::telemetry::init(grpc_balancer_proxy::telemetry::LogFormat::Text);
    }
    let (tx, rx) = oneshot::channel();
    let running = grpc_balancer_proxy::run(settings, async move {
        let _ = rx.await;
    })
    .await
    .expect("proxy starts");
    Proxy {
        running: Some(running),
        stop: Some(tx),
    }
}

pub async fn start_proxy(config: ProxyConfig) -> Proxy {
    start(test_settings(ConfigSource::Fixed(config))).await
}

/// `n` backends behind one balancing "greeter" (one static subset), with
/// every endpoint ready. Keep the backends alive: dropping them kills them.
pub async fn greeter_proxy(n: usize, policy: PolicyKind) -> (Vec<RunningBackend>, Proxy) {
    let bs = backends(n).await;
    let proxy = start_proxy(config(vec![greeter_balancing(&bs, policy)])).await;
    wait_ready(&proxy, "greeter", n).await;
    (bs, proxy)
}

pub fn hello(name: &str) -> HelloRequest {
    HelloRequest {
        name: name.into(),
        count: 1,
        reply_payload_bytes: 0,
        payload: Vec::new(),
    }
}

/// One unary call; the name of the backend that answered.
pub async fn say_hello(client: &mut GreeterClient<Channel>) -> Result<String, tonic::Status> {
    client
        .say_hello(hello("test"))
        .await
        .map(|r| r.into_inner().backend)
}

/// Counts which backend answered `n` sequential unary calls.
pub async fn spread(client: &mut GreeterClient<Channel>, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for i in 0..n {
        let backend = say_hello(client)
            .await
            .unwrap_or_else(|s| panic!("call {i} failed: {s:?}"));
        *counts.entry(backend).or_insert(0) += 1;
    }
    counts
}

/// Polls `check` until it returns true, failing after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the proxy reports `n` ready endpoints in balancing `name`.
pub async fn wait_ready(proxy: &Proxy, name: &str, n: usize) {
    let view = proxy.running.as_ref().expect("running").view();
    let name = name.to_owned();
    eventually(Duration::from_secs(10), "endpoints ready", || {
        let view = view.clone();
        let name = name.clone();
        async move {
            view.endpoints()
                .iter()
                .filter(|e| e.balancing == name && e.available)
                .count()
                >= n
        }
    })
    .await;
}

/// GET on the admin server: (status, body).
pub async fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    admin_request(addr, "GET", path).await
}

/// A bodiless request on the admin server: (status, body).
pub async fn admin_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("admin connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("admin write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("admin read");
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("HTTP status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A balancing named "greeter" with `policy` over `backends`, as one subset.
pub fn greeter_balancing(backends: &[RunningBackend], policy: PolicyKind) -> Balancing {
    let addrs: Vec<_> = backends.iter().map(|b| b.addr()).collect();
    balancing("greeter", policy, vec![static_subset("all", 1, &addrs)])
}
