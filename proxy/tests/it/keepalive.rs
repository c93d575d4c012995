//! Upstream keepalive against a real grpc-go server with its default
//! enforcement: at most one ping per MinTime (5 minutes by default) while
//! calls are open, none at all on a connection without calls; more and it
//! answers GOAWAY too_many_pings, cutting the calls in flight.
//!
//! Both timers are scaled down (the server's MinTime and the proxy's ping
//! interval, in the ratio of the defaults) so the test takes seconds: an
//! idle connection must not be cut and re-dialled, and a quiet stream must
//! live well past several MinTimes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use grpc_balancer_crds::config::PolicyKind;
use grpc_balancer_proxy::ConfigSource;
use grpc_balancer_proxy::transport::{DEFAULT_PING_INTERVAL, DEFAULT_TCP_KEEPALIVE};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// Idle pings at the scaled interval would be one every MinTime; servers
/// cut the connection on the third strike (the second ping after the
/// first), so watch an idle connection for four intervals and some.
const IDLE_WINDOW: Duration = Duration::from_secs(2 * 4 + 2);

/// grpc-go's MinTime, scaled: 1 s here stands for 150 s there.
const SERVER_MIN_PING: Duration = Duration::from_secs(2);

fn interop_cache() -> PathBuf {
    std::env::var_os("GRPC_BALANCER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("HOME").expect("HOME is set")).join(".cache/grpc-balancer")
        })
        .join("interop")
}

fn server_binary() -> PathBuf {
    let binary = interop_cache().join("bin/grpc-go-health-server");
    assert!(
        binary.is_file(),
        "the grpc-go server is not installed ({} is missing): run scripts/install-interop-clients",
        binary.display()
    );
    binary
}

/// Starts an interop server that first prints `listening on ADDR`; returns
/// the process (killed on drop), the rest of its output and the address.
async fn spawn_listening(
    mut command: tokio::process::Command,
    what: &str,
    within: Duration,
) -> (Child, Lines<BufReader<ChildStdout>>, SocketAddr) {
    let mut child = command
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(within, out.next_line())
        .await
        .unwrap_or_else(|_| panic!("{what} starts"))
        .expect("read")
        .expect("a line");
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .parse()
        .expect("an address");
    (child, out, addr)
}

struct GoServer {
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    _child: tokio::process::Child,
}

impl GoServer {
    async fn start() -> GoServer {
        let mut command = tokio::process::Command::new(server_binary());
        command
            .arg("--min-ping-interval")
            .arg(format!("{}s", SERVER_MIN_PING.as_secs()));
        let (child, mut out, addr) =
            spawn_listening(command, "the grpc-go server", Duration::from_secs(10)).await;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = out.next_line().await {
                sink.lock().expect("lines").push(l);
            }
        });
        GoServer {
            addr,
            lines,
            _child: child,
        }
    }

    fn connections(&self) -> usize {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .filter(|l| l.starts_with("accepted connection"))
            .count()
    }
}

#[test]
fn the_defaults_respect_grpc_servers_default_enforcement() {
    // grpc-go / grpc-java: MinTime 5 min; C-core: 5 min between pings
    // without data.
    assert!(DEFAULT_PING_INTERVAL >= Duration::from_secs(300));
    assert!(DEFAULT_TCP_KEEPALIVE <= Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_go_server_neither_cuts_idle_connections_nor_quiet_streams() {
    let go = GoServer::start().await;
    let b = balancing(
        "go",
        PolicyKind::RoundRobin,
        vec![static_subset("all", 1, &[go.addr])],
    );
    let mut settings = test_settings(ConfigSource::Fixed(config(vec![b])));
    // The default interval in the default ratio to the server's MinTime
    // (5 min to 5 min).
    let scale = SERVER_MIN_PING.as_secs_f64() / Duration::from_secs(300).as_secs_f64();
    settings.connect.ping_interval = Some(DEFAULT_PING_INTERVAL.mul_f64(scale));
    settings.connect.ping_timeout = Duration::from_secs(1);
    let proxy = start(settings).await;
    wait_ready(&proxy, "go", 1).await;
    let mut health = HealthClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{}", proxy.addr("go")))
            .expect("uri")
            .connect()
            .await
            .expect("connect to the proxy"),
    );
    let check = health
        .check(HealthCheckRequest::default())
        .await
        .expect("Check through the proxy");
    assert_eq!(check.into_inner().status, ServingStatus::Serving as i32);
    assert_eq!(go.connections(), 1);

    // Idle: any ping on a connection without calls is a strike, and the
    // third one a GOAWAY.
    tokio::time::sleep(IDLE_WINDOW).await;
    assert_eq!(
        go.connections(),
        1,
        "the idle connection was cut and re-dialled: {:?}",
        go.lines.lock().expect("lines")
    );

    // A quiet stream: Watch answers once, then nothing while the status
    // stays. It must outlive several MinTimes.
    let mut watch = health
        .watch(HealthCheckRequest::default())
        .await
        .expect("Watch through the proxy")
        .into_inner();
    let first = watch.message().await.expect("first status").expect("one");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let quiet = tokio::time::timeout(SERVER_MIN_PING * 4, watch.message()).await;
    assert!(
        quiet.is_err(),
        "the quiet stream ended: {quiet:?}; server: {:?}",
        go.lines.lock().expect("lines")
    );
    assert_eq!(go.connections(), 1, "{:?}", go.lines.lock().expect("lines"));
    health
        .check(HealthCheckRequest::default())
        .await
        .expect("still serving");
    drop(watch);
    proxy.stop().await;
}

/// The proxy in front of one backend, with the ping interval in the default
/// ratio to the server's (scaled) minimum.
async fn proxy_to(backend: std::net::SocketAddr) -> Proxy {
    let b = balancing(
        "up",
        PolicyKind::RoundRobin,
        vec![static_subset("all", 1, &[backend])],
    );
    let mut settings = test_settings(ConfigSource::Fixed(config(vec![b])));
    let scale = SERVER_MIN_PING.as_secs_f64() / Duration::from_secs(300).as_secs_f64();
    settings.connect.ping_interval = Some(DEFAULT_PING_INTERVAL.mul_f64(scale));
    settings.connect.ping_timeout = Duration::from_secs(1);
    let proxy = start(settings).await;
    wait_ready(&proxy, "up", 1).await;
    proxy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_c_core_server_neither_cuts_idle_connections_nor_quiet_streams() {
    let cache = interop_cache();
    let python = cache.join("python/bin/python");
    let stubs = cache.join("python-stubs");
    assert!(
        python.is_file() && stubs.join("greeter_pb2_grpc.py").is_file(),
        "the Python grpcio venv is not installed: run scripts/install-interop-clients"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop/python/quiet_server.py");
    let mut command = tokio::process::Command::new(python);
    command
        .arg(script)
        .arg("--stubs")
        .arg(stubs)
        .arg("--min-ping-interval-ms")
        .arg(SERVER_MIN_PING.as_millis().to_string());
    let (_child, _out, addr) =
        spawn_listening(command, "the grpcio server", Duration::from_secs(20)).await;
    let proxy = proxy_to(addr).await;
    let mut client = proxy.client("up").await;
    // The server answers with its peer: the proxy's end of the connection.
    let peer = |r: grpc_balancer_greeter::pb::HelloReply| r.message;
    let before = peer(
        client
            .say_hello(hello("a"))
            .await
            .expect("call")
            .into_inner(),
    );

    tokio::time::sleep(IDLE_WINDOW).await;
    let after_idle = peer(
        client
            .say_hello(hello("b"))
            .await
            .expect("call")
            .into_inner(),
    );
    assert_eq!(
        before, after_idle,
        "the idle connection was cut and re-dialled"
    );

    let mut stream = client
        .say_hello_stream(hello("quiet"))
        .await
        .expect("a stream through the proxy")
        .into_inner();
    let first = stream.message().await.expect("first reply").expect("one");
    assert_eq!(first.message, "first");
    let quiet = tokio::time::timeout(SERVER_MIN_PING * 4, stream.message()).await;
    assert!(quiet.is_err(), "the quiet stream ended: {quiet:?}");
    let after_stream = peer(
        client
            .say_hello(hello("c"))
            .await
            .expect("call")
            .into_inner(),
    );
    assert_eq!(
        before, after_stream,
        "the connection was cut during the quiet stream"
    );
    drop(stream);
    proxy.stop().await;
}
