//! The operator binary as its own process (as the kubelet runs it), its
//! HTTP endpoints over plain HTTP/1.0, and its logs in a file.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use grpc_balancer_test_support::ControlPlane;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, Command};

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}

/// A running `grpc-balancer-operator`, killed when dropped.
pub struct OperatorProcess {
    pub child: Child,
    pub metrics_port: u16,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl OperatorProcess {
    /// Starts the binary cargo built for this test against `cp`, scoped to
    /// `namespace` (its Lease there too), metrics on a free port; `extra`
    /// flags come last and win.
    pub fn start(cp: &ControlPlane, namespace: &str, identity: &str, extra: &[String]) -> Self {
        let metrics_port = free_port();
        let mut args: Vec<String> = vec![
            "--kubeconfig".into(),
            cp.kubeconfig().display().to_string(),
            format!("--watch-namespace={namespace}"),
            format!("--leader-election-namespace={namespace}"),
            format!("--leader-election-lease-name={identity}"),
            format!("--pod-name={identity}"),
            "--lease-duration=4s".into(),
            format!("--metrics-listen=127.0.0.1:{metrics_port}"),
            format!("--discovery-listen=127.0.0.1:{}", free_port()),
            format!("--webhook-namespace={namespace}"),
        ];
        args.extend_from_slice(extra);
        Self::spawn(metrics_port, &args, &[])
    }

    /// Starts the binary with exactly `args` and `env`; `metrics_port` is
    /// the port its `--metrics-listen` names.
    pub fn spawn(metrics_port: u16, args: &[String], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let log = dir.path().join("operator.log");
        let out = std::fs::File::create(&log).expect("a log file");
        let err = out.try_clone().expect("the log file twice");
        let child = Command::new(env!("CARGO_BIN_EXE_grpc-balancer-operator"))
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .expect("the operator binary starts");
        OperatorProcess {
            child,
            metrics_port,
            log,
            _dir: dir,
        }
    }

    /// `GET path` on the metrics port: status code and body.
    pub async fn get(&self, path: &str) -> Result<(u16, String), String> {
        http_get(self.metrics_port, path).await
    }

    pub fn logs(&self) -> String {
        read_log(&self.log)
    }

    /// SIGTERM, as the kubelet stops a pod; true when it exited within
    /// `timeout`.
    pub async fn terminate(&mut self, timeout: Duration) -> bool {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        self.wait_exit(timeout).await.is_some()
    }

    /// Exit status, if it ended within `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `GET path` on 127.0.0.1:`port` over HTTP/1.0: status code and body.
pub async fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_string(&mut text))
        .await
        .map_err(|_| format!("no answer from {path}"))?
        .map_err(|e| e.to_string())?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {head:?}"))?;
    Ok((code, body.to_owned()))
}

/// Sends `request` (a whole HTTP/1.0 request) to the webhook on
/// 127.0.0.1:`port` over TLS, trusting `ca_pem` for the name `localhost`,
/// and returns the whole answer. Every step is bounded in time.
pub async fn webhook_request(port: u16, ca_pem: &str, request: &[u8]) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut tls = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| "TLS handshake timed out".to_owned())?
    .map_err(|e| format!("TLS handshake: {e}"))?;
    tls.write_all(request).await.map_err(|e| e.to_string())?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_string(&mut text))
        .await
        .map_err(|_| "no answer".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(text)
}
