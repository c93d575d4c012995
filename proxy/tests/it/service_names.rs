//! Unmodified clients that dial a Service by name, balanced per call: the
//! proxy listens on a loopback address of its own (as the operator renders
//! a balancing with `spec.service`), and each client runs in a mount
//! namespace whose `/etc/hosts` maps the Service's four names there (what
//! the kubelet writes from the pod's `hostAliases`) and whose
//! `/etc/resolv.conf` is a pod's (search path, `ndots:5`). The clients are
//! the real libraries with their default resolvers: grpc-go (`dns` and
//! `passthrough`), Python grpcio (c-ares, and the native resolver the
//! webhook switches it to), tonic; a TLS client (curl) dialling the same
//! name and port is relayed to the "Service" (an `openssl s_server`)
//! untouched.
//!
//! Needs root (`unshare --mount`), the interop clients
//! (`scripts/install-interop-clients`), the greeter client binary (built by
//! `cargo test --workspace`), `curl` and `openssl`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use grpc_balancer_crds::config::{PolicyKind, ServiceFront};
use grpc_balancer_greeter::RunningBackend;
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::support::{backends, balancing, config, start_proxy, static_subset, wait_ready};

/// The balancing's own loopback address (in the operator's pool).
const ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 10, 77);
const NAMESPACE: &str = "demo";
// Enough calls that 75 % ± 7 is five standard deviations of a weighted
// random pick: the check does not flake.
const CALLS: u64 = 1000;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);
const INSTALL_HINT: &str =
    "run scripts/install-interop-clients (scripts/install-test-deps runs it)";

fn names() -> [String; 4] {
    [
        "greeter".to_owned(),
        format!("greeter.{NAMESPACE}"),
        format!("greeter.{NAMESPACE}.svc"),
        format!("greeter.{NAMESPACE}.svc.cluster.local"),
    ]
}

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

/// The greeter crate's client binary, next to this test binary's directory.
fn greeter_client() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let bin = dir.join("greeter-client");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p grpc-balancer-greeter --bins` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// A port free on [`ADDRESS`] (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind((ADDRESS, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a port on the balancing's loopback address")
}

/// The files a pod would have: `/etc/hosts` with the kubelet's header and
/// the aliases, `/etc/resolv.conf` as the kubelet writes it for
/// `ClusterFirst` (its nameserver here is a port where nobody answers).
struct PodFiles {
    dir: tempfile::TempDir,
}

impl PodFiles {
    fn new(aliases: bool) -> PodFiles {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut hosts = "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.244.0.9\tclient-0\n".to_owned();
        if aliases {
            hosts.push_str("\n# Entries added by HostAliases.\n");
            hosts.push_str(&format!("{ADDRESS}\t{}\n", names().join("\t")));
        }
        std::fs::write(dir.path().join("hosts"), hosts).expect("hosts");
        std::fs::write(
            dir.path().join("resolv.conf"),
            format!(
                "search {NAMESPACE}.svc.cluster.local svc.cluster.local cluster.local\nnameserver 127.0.0.53\noptions ndots:5\n"
            ),
        )
        .expect("resolv.conf");
        PodFiles { dir }
    }

    /// `program args...` in a new mount namespace with these files over
    /// the host's.
    fn command(&self, program: &Path, args: &[&str]) -> Command {
        assert!(
            nix_is_root(),
            "this test needs root: it runs each client in its own mount namespace (unshare --mount) with a pod's /etc/hosts"
        );
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && shift 2 && exec "$@""#)
            .arg("sh")
            .arg(self.dir.path().join("hosts"))
            .arg(self.dir.path().join("resolv.conf"))
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Runs a client to completion: `(success, stdout, stderr)`.
async fn run(mut command: Command, what: &str) -> (bool, String, String) {
    let child: Child = command
        .spawn()
        .unwrap_or_else(|e| panic!("{what} does not start ({e})"));
    let output = tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {CLIENT_TIMEOUT:?}"))
        .expect("client output");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The v1 share (percent) of `by_backend`, with every call answered by v1
/// or v2 backends.
fn v1_share(by_backend: &BTreeMap<String, u64>, v1: &[&str], v2: &[&str], what: &str) -> f64 {
    let sum = |names: &[&str]| -> u64 {
        names
            .iter()
            .map(|n| by_backend.get(*n).copied().unwrap_or(0))
            .sum()
    };
    let (ones, twos) = (sum(v1), sum(v2));
    let total: u64 = by_backend.values().sum();
    assert_eq!(
        ones + twos,
        total,
        "{what}: calls answered by unknown backends: {by_backend:?}"
    );
    assert!(total > 0, "{what}: no call answered");
    for name in v1.iter().chain(v2) {
        assert!(
            by_backend.get(*name).copied().unwrap_or(0) > 0,
            "{what}: backend {name} got no call over the client's one connection: {by_backend:?}"
        );
    }
    100.0 * ones as f64 / total as f64
}

fn assert_75_25(share: f64, what: &str) {
    eprintln!("{what}: v1 {share:.1} %");
    assert!(
        (share - 75.0).abs() <= 7.0,
        "{what}: v1 got {share:.1} % of the calls, want 75 % ± 7"
    );
}

/// A gRPC interop client's report: every check passed; the spread.
fn interop_report(ok: bool, stdout: &str, stderr: &str, what: &str) -> BTreeMap<String, u64> {
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("{what}: no JSON report ({e}):\nstdout: {stdout}\nstderr: {stderr}")
    });
    let failed: Vec<&Value> = report["checks"]
        .as_array()
        .map(|c| c.iter().filter(|c| c["ok"] != Value::Bool(true)).collect())
        .unwrap_or_default();
    assert!(
        ok && failed.is_empty(),
        "{what}: failed checks {failed:#?}\nstderr: {stderr}"
    );
    report["unary_backends"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

struct Setup {
    _backends: Vec<RunningBackend>,
    _proxy: crate::support::Proxy,
    v1: Vec<String>,
    v2: Vec<String>,
    port: u16,
    /// What TLS clients reach through the proxy: the "Service".
    tls_service: Child,
    _tls_dir: tempfile::TempDir,
}

/// Three greeter backends (v1 ×2, v2 ×1) behind a 75/25 balancing that
/// listens on [`ADDRESS`] and passes everything that is not h2c to an
/// `openssl s_server` standing in for the Service's cluster IP.
async fn setup() -> Setup {
    let bs = backends(3).await;
    let v1: Vec<SocketAddr> = bs[..2].iter().map(RunningBackend::addr).collect();
    let v2 = [bs[2].addr()];
    let port = free_port();
    let tls_dir = tempfile::tempdir().expect("temp dir");
    let tls_port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let key = tls_dir.path().join("key.pem");
    let cert = tls_dir.path().join("cert.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=greeter",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs (install it with apt-get install openssl)");
    assert!(
        made.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let tls_service = Command::new("openssl")
        .args(["s_server", "-www", "-quiet", "-accept"])
        .arg(format!("127.0.0.1:{tls_port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl s_server starts");
    crate::support::eventually(
        Duration::from_secs(10),
        "openssl s_server listening",
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", tls_port))
                .await
                .is_ok()
        },
    )
    .await;

    let mut b = balancing(
        "greeter",
        PolicyKind::RoundRobin,
        vec![static_subset("v1", 75, &v1), static_subset("v2", 25, &v2)],
    );
    b.listen = SocketAddr::from((ADDRESS, port)).to_string();
    b.service = Some(ServiceFront {
        hostnames: names().to_vec(),
        passthrough: format!("127.0.0.1:{tls_port}"),
        forwards: Vec::new(),
    });
    let proxy = start_proxy(config(vec![b])).await;
    wait_ready(&proxy, "greeter", 3).await;
    Setup {
        v1: bs[..2].iter().map(|b| b.name().to_owned()).collect(),
        v2: vec![bs[2].name().to_owned()],
        _backends: bs,
        _proxy: proxy,
        port,
        tls_service,
        _tls_dir: tls_dir,
    }
}

impl Setup {
    fn v1(&self) -> Vec<&str> {
        self.v1.iter().map(String::as_str).collect()
    }
    fn v2(&self) -> Vec<&str> {
        self.v2.iter().map(String::as_str).collect()
    }
}

#[derive(Clone, Copy, Debug)]
enum Interop {
    Go,
    Python,
}

async fn interop(
    setup: &Setup,
    files: &PodFiles,
    client: Interop,
    target: &str,
    resolver: Option<&str>,
) -> BTreeMap<String, u64> {
    let cache = interop_cache();
    let (program, mut args) = match client {
        Interop::Go => (cache.join("bin/greeter-interop-go"), Vec::new()),
        Interop::Python => (
            cache.join("python/bin/python"),
            vec![
                repo_root()
                    .join("interop/python/greeter_interop.py")
                    .display()
                    .to_string(),
                "--stubs".to_owned(),
                cache.join("python-stubs").display().to_string(),
            ],
        ),
    };
    assert!(
        program.is_file(),
        "the {client:?} interop client is missing ({}): {INSTALL_HINT}",
        program.display()
    );
    args.extend([
        "--target".to_owned(),
        target.to_owned(),
        "--calls".to_owned(),
        CALLS.to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut command = files.command(&program, &args);
    command.env_remove("GRPC_DNS_RESOLVER");
    if let Some(r) = resolver {
        command.env("GRPC_DNS_RESOLVER", r);
    }
    let what = format!("{client:?} client, target {target}, GRPC_DNS_RESOLVER={resolver:?}");
    let (ok, out, err) = run(command, &what).await;
    let spread = interop_report(ok, &out, &err, &what);
    assert_75_25(v1_share(&spread, &setup.v1(), &setup.v2(), &what), &what);
    spread
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmodified_clients_dialling_the_service_name_are_balanced_per_call() {
    let setup = setup().await;
    let files = PodFiles::new(true);
    let port = setup.port;
    let fqdn = format!("greeter.{NAMESPACE}.svc.cluster.local:{port}");
    let short = format!("greeter:{port}");

    // grpc-go: the default `dns` resolver of grpc.NewClient, and
    // `passthrough` (the target handed to the dialer as it is).
    for target in [
        short.clone(),
        fqdn.clone(),
        format!("passthrough:///greeter:{port}"),
        format!("dns:///greeter.{NAMESPACE}:{port}"),
    ] {
        interop(&setup, &files, Interop::Go, &target, None).await;
    }
    // Python grpcio: C-core's default resolver (c-ares), and `native`,
    // which the webhook sets in pods with host aliases.
    for (target, resolver) in [
        (&short, None),
        (&fqdn, None),
        (&short, Some("native")),
        (&fqdn, Some("native")),
    ] {
        interop(&setup, &files, Interop::Python, target, resolver).await;
    }
    // tonic (hyper's resolver: getaddrinfo), one HTTP/2 connection.
    for target in [
        format!("http://greeter:{port}"),
        format!("http://greeter.{NAMESPACE}.svc:{port}"),
    ] {
        let command = files.command(
            &greeter_client(),
            &["--target", &target, "--calls", &CALLS.to_string(), "--json"],
        );
        let what = format!("tonic client, target {target}");
        let (ok, out, err) = run(command, &what).await;
        assert!(ok, "{what}: {out}\n{err}");
        let report: Value =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{what}: {e}: {out}"));
        assert_eq!(report["failed"].as_u64(), Some(0), "{what}: {out}");
        let by_backend: BTreeMap<String, u64> = report["by_backend"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(by_backend.values().sum::<u64>(), CALLS, "{what}: {out}");
        assert_75_25(
            v1_share(&by_backend, &setup.v1(), &setup.v2(), &what),
            &what,
        );
    }

    // A TLS client dialling the same name and port: its ClientHello is not
    // the HTTP/2 preface, so the proxy relays it to the Service untouched
    // and the TLS server answers it.
    for name in ["greeter", "greeter.demo.svc.cluster.local"] {
        let url = format!("https://{name}:{port}/");
        let command = files.command(
            Path::new("curl"),
            &["-sS", "--insecure", "--max-time", "20", &url],
        );
        let what = format!("curl {url}");
        let (ok, out, err) = run(command, &what).await;
        assert!(
            ok && out.contains("s_server -www"),
            "{what}: the TLS server did not answer: {out}\n{err}"
        );
    }
    // Counted as unbalanced, for whoever watches how much traffic bypasses
    // the balancing.
    let (_, metrics) = crate::support::admin_get(setup._proxy.admin(), "/metrics").await;
    assert!(
        metrics.contains("grpc_balancer_unbalanced_connections_total{balancing=\"greeter\"} 2"),
        "two TLS connections counted: {}",
        metrics
            .lines()
            .filter(|l| l.contains("unbalanced"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(setup.tls_service);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_aliases_the_names_do_not_reach_the_proxy() {
    // The control: the same clients and names in a pod without the host
    // aliases resolve nothing (no cluster DNS here), so the test above
    // depends on the aliases, not on something else answering the names.
    let setup = setup().await;
    let files = PodFiles::new(false);
    let target = format!("greeter:{}", setup.port);
    let command = files.command(
        &greeter_client(),
        &[
            "--target",
            &format!("http://{target}"),
            "--calls",
            "3",
            "--timeout-ms",
            "2000",
        ],
    );
    let (ok, out, err) = run(command, "tonic client without aliases").await;
    assert!(!ok, "the name resolved without the aliases: {out}\n{err}");
    let cache = interop_cache();
    let program = cache.join("bin/greeter-interop-go");
    assert!(
        program.is_file(),
        "the grpc-go interop client is missing: {INSTALL_HINT}"
    );
    let command = files.command(
        &program,
        &[
            "--target",
            &target,
            "--suite",
            "unavailable",
            "--timeout",
            "5s",
        ],
    );
    let (ok, out, err) = run(command, "grpc-go client without aliases").await;
    let report: Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert!(
        ok,
        "grpc-go: calls to an unresolvable name fail with UNAVAILABLE: {report}\n{err}"
    );
}

/// A TCP server that answers every connection with `tag` and closes it.
async fn tagged_server(tag: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt as _;
                let _ = s.write_all(tag.as_bytes()).await;
            });
        }
    });
    (addr, task)
}

/// What a TCP client connecting to `addr` reads before the server closes.
async fn read_tag(addr: SocketAddr) -> Result<String, String> {
    use tokio::io::AsyncReadExt as _;
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let mut got = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut got))
        .await
        .map_err(|_| "no answer".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_other_ports_are_relayed_and_a_removed_front_keeps_relaying() {
    use grpc_balancer_crds::config::{Forward, to_yaml};
    use grpc_balancer_proxy::ConfigSource;

    // b0 behind the balancing; b1 stands in for the Service's cluster IP.
    let bs = backends(2).await;
    let (metrics_one, _t1) = tagged_server("one").await;
    let (metrics_two, _t2) = tagged_server("two").await;
    let address = Ipv4Addr::new(127, 0, 10, 78);
    let grpc_port = TcpListener::bind((address, 0))
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port();
    let relayed = SocketAddr::from((
        address,
        TcpListener::bind((address, 0))
            .and_then(|l| l.local_addr())
            .expect("a port")
            .port(),
    ));
    let front = |to: SocketAddr| {
        let mut b = balancing(
            "greeter",
            PolicyKind::RoundRobin,
            vec![static_subset("all", 1, &[bs[0].addr()])],
        );
        b.listen = SocketAddr::from((address, grpc_port)).to_string();
        b.service = Some(ServiceFront {
            hostnames: vec!["greeter".into()],
            passthrough: bs[1].addr().to_string(),
            forwards: vec![Forward {
                listen: relayed.to_string(),
                to: to.to_string(),
            }],
        });
        b
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    let write = |b: Vec<grpc_balancer_crds::config::Balancing>| {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, to_yaml(&config(b)).expect("yaml")).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
    };
    write(vec![front(metrics_one)]);
    let proxy = crate::support::start(crate::support::test_settings(ConfigSource::File(
        path.clone(),
    )))
    .await;
    crate::support::eventually(
        Duration::from_secs(10),
        "the port relayed to one",
        || async move { read_tag(relayed).await.as_deref() == Ok("one") },
    )
    .await;
    // The gRPC port still balances beside it.
    let mut client =
        grpc_balancer_greeter::connect(&SocketAddr::from((address, grpc_port)).to_string())
            .await
            .expect("connects");
    crate::support::say_hello(&mut client)
        .await
        .expect("a call through the gRPC port");

    // Another cluster IP for the port (a Service recreated): the relay
    // follows; the port is bound again, not left to the old relay.
    write(vec![front(metrics_two)]);
    crate::support::eventually(
        Duration::from_secs(10),
        "the port relayed to two",
        || async move { read_tag(relayed).await.as_deref() == Ok("two") },
    )
    .await;

    // The balancing removed: pods created with its alias still map the
    // Service's names to its address, so the address keeps relaying to the
    // Service (unbalanced): a gRPC call gets through to the "cluster IP"
    // (b1), the other port to its target.
    let grpc = SocketAddr::from((address, grpc_port));
    write(Vec::new());
    crate::support::eventually(
        Duration::from_secs(10),
        "the removed front relayed to the Service",
        || async move {
            let Ok(mut c) = grpc_balancer_greeter::connect(&grpc.to_string()).await else {
                return false;
            };
            crate::support::say_hello(&mut c)
                .await
                .is_ok_and(|b| b == "b1")
        },
    )
    .await;
    assert_eq!(read_tag(relayed).await.as_deref(), Ok("two"));
    // The balancing back: the relays step aside, calls are balanced again.
    write(vec![front(metrics_one)]);
    crate::support::eventually(
        Duration::from_secs(10),
        "balanced again on the address",
        || async move {
            let Ok(mut c) = grpc_balancer_greeter::connect(&grpc.to_string()).await else {
                return false;
            };
            crate::support::say_hello(&mut c)
                .await
                .is_ok_and(|b| b == "b0")
                && read_tag(relayed).await.as_deref() == Ok("one")
        },
    )
    .await;
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_port_the_app_listens_on_is_left_to_the_app() {
    use grpc_balancer_proxy::ConfigSource;

    let bs = backends(1).await;
    let address = Ipv4Addr::new(127, 0, 10, 79);
    let port = TcpListener::bind((address, 0))
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port();
    let mut b = balancing(
        "greeter",
        PolicyKind::RoundRobin,
        vec![static_subset("all", 1, &[bs[0].addr()])],
    );
    b.listen = SocketAddr::from((address, port)).to_string();
    b.service = Some(ServiceFront {
        hostnames: vec!["greeter".into()],
        passthrough: "127.0.0.1:9".into(),
        forwards: Vec::new(),
    });
    let mut other = balancing(
        "env-var",
        PolicyKind::RoundRobin,
        vec![static_subset("all", 1, &[bs[0].addr()])],
    );
    other.listen = format!("127.0.0.1:{port}");
    let mut settings = crate::support::test_settings(ConfigSource::Fixed(config(vec![b, other])));
    // The app's container declares the port (the webhook passes it on).
    settings.app_ports = vec![port];
    let proxy = crate::support::start(settings).await;
    let admin = proxy.admin();
    crate::support::eventually(Duration::from_secs(10), "ready", || async move {
        crate::support::admin_get(admin, "/ready").await.0 == 200
    })
    .await;
    // The Service's address is not taken; the app could bind the port on
    // every address but 127.0.0.1, where an env-var listener (whose port
    // the user chose) still runs as before.
    assert!(
        TcpListener::bind((address, port)).is_ok(),
        "the proxy took {address}:{port} from the app"
    );
    let mut client = grpc_balancer_greeter::connect(&format!("127.0.0.1:{port}"))
        .await
        .expect("the env-var listener runs");
    crate::support::say_hello(&mut client)
        .await
        .expect("a call");
    drop(proxy);
}
