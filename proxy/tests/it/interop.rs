//! Interop: a Python grpcio client and a grpc-go client call real greeter
//! backends through the proxy binary and check answers, metadata, streaming,
//! deadlines, large messages and status codes.
//!
//! The clients are installed by `scripts/install-interop-clients` (part of
//! `scripts/install-test-deps`); a missing client fails the test and says so.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use grpc_balancer_greeter::{BackendOptions, LoadOptions, RunningBackend, run_load, spawn_server};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

const INSTALL_HINT: &str =
    "run scripts/install-interop-clients (scripts/install-test-deps runs it)";
const BACKENDS: usize = 3;
/// Unary calls of the spread check; round robin gives each backend a third.
const SPREAD_CALLS: u64 = 30;
/// SayHello calls of a full suite besides the spread: metadata, NOT_FOUND,
/// deadline, large messages.
const OTHER_UNARY_CALLS: u64 = 4;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

fn interop_cache() -> PathBuf {
    let root = std::env::var_os("GRPC_BALANCER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            Path::new(&home).join(".cache/grpc-balancer")
        });
    root.join("interop")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the proxy crate sits in the repository")
        .to_path_buf()
}

/// The command line of one interop client, or a failure naming the installer.
fn client_command(client: Client, target: SocketAddr, suite: &str) -> Command {
    let cache = interop_cache();
    let mut command = match client {
        Client::Python => {
            let python = cache.join("python/bin/python");
            let stubs = cache.join("python-stubs");
            assert!(
                python.is_file() && stubs.join("greeter_pb2_grpc.py").is_file(),
                "the Python grpcio interop client is not installed ({} or its stubs are missing): {INSTALL_HINT}",
                python.display()
            );
            let mut command = Command::new(python);
            command
                .arg(repo_root().join("interop/python/greeter_interop.py"))
                .arg("--stubs")
                .arg(stubs);
            command
        }
        Client::Go => {
            let binary = cache.join("bin/greeter-interop-go");
            assert!(
                binary.is_file(),
                "the grpc-go interop client is not installed ({} is missing): {INSTALL_HINT}",
                binary.display()
            );
            Command::new(binary)
        }
    };
    command
        .arg("--target")
        .arg(target.to_string())
        .arg("--suite")
        .arg(suite)
        .arg("--calls")
        .arg(SPREAD_CALLS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

#[derive(Debug, Clone, Copy)]
enum Client {
    Python,
    Go,
}

/// An unused loopback address (bound, then released).
fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address")
}

/// The proxy binary with a one-balancing round-robin config from flags.
struct ProxyProcess {
    child: Child,
    listen: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ProxyProcess {
    async fn start(endpoints: &[SocketAddr]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("proxy.log");
        let listen = free_addr();
        let admin = free_addr();
        let mut command = Command::new(env!("CARGO_BIN_EXE_grpc-balancer-proxy"));
        command
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--admin")
            .arg(admin.to_string())
            .arg("--policy")
            .arg("round_robin");
        for endpoint in endpoints {
            command.arg("--endpoint").arg(endpoint.to_string());
        }
        let child = command
            .env("GRPC_BALANCER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("proxy log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("the proxy binary starts");
        let mut proxy = Self {
            child,
            listen,
            log,
            _dir: dir,
        };
        proxy.wait_ready(admin).await;
        proxy
    }

    /// Polls `/ready` on the admin port until it answers 200.
    async fn wait_ready(&mut self, admin: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the proxy exited with {status}:\n{}", self.log_text());
            }
            if http_status(admin, "/ready").await == Some(200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the proxy was not ready within 20 s:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Status code of a plain HTTP/1.1 GET, or None when nothing answers.
async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

async fn start_backends() -> Vec<RunningBackend> {
    let mut backends = Vec::new();
    for index in 0..BACKENDS {
        let backend = spawn_server(
            "127.0.0.1:0".parse().expect("loopback"),
            BackendOptions::named(format!("backend-{index}")),
        )
        .await
        .expect("greeter backend starts");
        backends.push(backend);
    }
    backends
}

/// Calls through the proxy until every backend has answered, so the checks
/// start with every endpoint connected; then zeroes the backend counters.
async fn warm_up(proxy: &ProxyProcess, backends: &[RunningBackend]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = run_load(LoadOptions::new(
            proxy.listen.to_string(),
            3 * BACKENDS as u64,
        ))
        .await;
        if let Ok(report) = &report
            && report.by_backend.len() == backends.len()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "calls through the proxy did not reach every backend within 20 s (last: {report:?}):\n{}",
            proxy.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for backend in backends {
        backend.reset_counts();
    }
}

/// Runs a client to completion and returns its JSON report, failing with
/// everything it printed when it did not pass.
async fn run_client(client: Client, target: SocketAddr, suite: &str, proxy_log: &str) -> Value {
    let child = client_command(client, target, suite)
        .spawn()
        .unwrap_or_else(|error| {
            panic!("{client:?} interop client does not start ({error}): {INSTALL_HINT}")
        });
    let output = tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{client:?} client did not finish within {CLIENT_TIMEOUT:?}"))
        .expect("client output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|error| {
        panic!("{client:?} client printed no JSON report ({error}):\nstdout: {stdout}\nstderr: {stderr}")
    });
    let failed: Vec<&Value> = report["checks"]
        .as_array()
        .map(|checks| {
            checks
                .iter()
                .filter(|check| check["ok"] != Value::Bool(true))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        output.status.success()
            && failed.is_empty()
            && report["checks"].as_array().is_some_and(|c| !c.is_empty()),
        "{client:?} client, suite {suite}: {}\nfailed checks: {failed:#?}\nstderr: {stderr}\nproxy log:\n{proxy_log}",
        output.status
    );
    report
}

async fn full_suite_through_the_proxy(client: Client) {
    let backends = start_backends().await;
    let addrs: Vec<SocketAddr> = backends.iter().map(RunningBackend::addr).collect();
    let proxy = ProxyProcess::start(&addrs).await;
    warm_up(&proxy, &backends).await;

    let report = run_client(client, proxy.listen, "full", &proxy.log_text()).await;

    // The spread the client saw over its one connection.
    let spread = &report["unary_backends"];
    let per_backend = SPREAD_CALLS / BACKENDS as u64;
    for backend in &backends {
        let calls = spread[backend.name()].as_u64().unwrap_or(0);
        assert!(
            calls.abs_diff(per_backend) <= 2,
            "{client:?}: {} answered {calls} of {SPREAD_CALLS} calls over one connection, want {per_backend} ± 2 (spread {spread})",
            backend.name()
        );
    }
    // What the backends themselves received: every call of the suite arrived
    // exactly once, and each stream was served by one backend only.
    let counts: Vec<_> = backends.iter().map(RunningBackend::counts).collect();
    let unary: u64 = counts.iter().map(|c| c.say_hello).sum();
    assert_eq!(
        unary,
        SPREAD_CALLS + OTHER_UNARY_CALLS,
        "{client:?}: SayHello calls received: {counts:?}"
    );
    for (method, received) in [
        (
            "SayHelloStream",
            counts.iter().map(|c| c.say_hello_stream).sum::<u64>(),
        ),
        (
            "CollectHellos",
            counts.iter().map(|c| c.collect_hellos).sum(),
        ),
        ("Chat", counts.iter().map(|c| c.chat).sum()),
    ] {
        assert_eq!(
            received, 1,
            "{client:?}: {method} calls received: {counts:?}"
        );
    }
}

async fn unavailable_without_endpoints(client: Client) {
    // An endpoint nobody listens on: no endpoint can ever be ready.
    let proxy = ProxyProcess::start(&[free_addr()]).await;
    run_client(client, proxy.listen, "unavailable", &proxy.log_text()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_through_the_proxy() {
    full_suite_through_the_proxy(Client::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_go_client_through_the_proxy() {
    full_suite_through_the_proxy(Client::Go).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_gets_unavailable_when_no_endpoint_is_ready() {
    unavailable_without_endpoints(Client::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_go_client_gets_unavailable_when_no_endpoint_is_ready() {
    unavailable_without_endpoints(Client::Go).await;
}
