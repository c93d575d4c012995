//! The operator binary and the webhook it serves, as one process: a replica
//! is Ready only once its webhook answers over TLS, and a webhook that
//! cannot serve takes the process down (non-zero exit, a logged reason)
//! instead of leaving it up and Ready.

use std::time::{Duration, SystemTime};

use crate::support::process::{OperatorProcess, free_port, webhook_request};
use crate::support::{TIMEOUT, install_crd};
use grpc_balancer_test_support::{ControlPlane, TestNamespace, poll_until};
use grpc_balancer_webhook::certs::{generate, serving_names};

/// `GET /healthz` on the webhook over TLS, trusting `ca_pem`.
async fn webhook_health(port: u16, ca_pem: &str) -> Result<String, String> {
    webhook_request(
        port,
        ca_pem,
        b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n",
    )
    .await
}

#[tokio::test]
async fn a_replica_is_ready_only_once_its_webhook_answers() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "op-readyz").await;
    // cert-manager mode with the Secret not mounted yet: the webhook has no
    // certificate to serve with until the files appear.
    let cert_dir = tempfile::tempdir().expect("a temp dir");
    let names = serving_names("grpc-balancer-webhook", ns.name(), &[]);
    let certs = generate(&names, SystemTime::now()).expect("certificates");
    let webhook_port = free_port();
    let op = OperatorProcess::start(
        cp,
        ns.name(),
        "op-readyz",
        &[
            format!("--webhook-listen=127.0.0.1:{webhook_port}"),
            "--webhook-cert-source=cert-manager".into(),
            format!("--webhook-cert-dir={}", cert_dir.path().display()),
            "--sidecar-mode=native".into(),
        ],
    );

    // The API was reached: this replica leads.
    poll_until("the operator to lead", TIMEOUT, || async {
        let (_, metrics) = op.get("/metrics").await?;
        if metrics
            .lines()
            .any(|l| l == "grpc_balancer_operator_leader 1")
        {
            Ok(())
        } else {
            Err("not leading yet".to_owned())
        }
    })
    .await;
    let (code, body) = op.get("/readyz").await.expect("/readyz answers");
    assert_eq!(
        code,
        503,
        "Ready while the webhook has no certificate and does not answer: {body:?}\nlogs:\n{}",
        op.logs()
    );
    assert!(body.contains("webhook"), "{body:?}");
    assert!(
        webhook_health(webhook_port, &certs.ca_pem).await.is_err(),
        "the webhook answers before its certificate is mounted?"
    );

    // The certificate is mounted: the webhook serves, then the replica is Ready.
    std::fs::write(cert_dir.path().join("tls.crt"), &certs.cert_pem).expect("tls.crt");
    std::fs::write(cert_dir.path().join("tls.key"), &certs.key_pem).expect("tls.key");
    poll_until("/readyz 200", TIMEOUT, || async {
        match op.get("/readyz").await? {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Ready means it answers, at once.
    let answer = webhook_health(webhook_port, &certs.ca_pem)
        .await
        .expect("the webhook answers over TLS once the replica is Ready");
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
}

#[tokio::test]
async fn a_webhook_that_cannot_serve_takes_the_process_down() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "op-webhook-down").await;
    // Its port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().expect("an address").port();
    let mut op = OperatorProcess::start(
        cp,
        ns.name(),
        "op-webhook-down",
        &[
            format!("--webhook-listen=127.0.0.1:{port}"),
            "--sidecar-mode=native".into(),
        ],
    );
    let exit = op.wait_exit(Duration::from_secs(30)).await;
    let logs = op.logs();
    let exit = exit.unwrap_or_else(|| {
        panic!("the process stays up without its webhook (30 s); logs:\n{logs}")
    });
    assert!(!exit.success(), "exit {exit}; logs:\n{logs}");
    assert!(
        logs.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "the reason is not in the logs:\n{logs}"
    );
    drop(taken);
}
