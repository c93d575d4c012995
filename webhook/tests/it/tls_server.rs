//! The HTTPS server over real TCP and TLS: a client that trusts only the
//! generated CA gets reviews answered, and a certificate swapped while the
//! server runs is what the next handshake presents.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use grpc_balancer_test_support::assert_eventually;
use grpc_balancer_webhook::certs::{generate, serving_names};
use grpc_balancer_webhook::http::router;
use grpc_balancer_webhook::proxy_configs::ProxyConfigs;
use grpc_balancer_webhook::review::Reviewer;
use grpc_balancer_webhook::server::serve;
use grpc_balancer_webhook::tls::{ServingCert, certified_key, crypto_provider, server_config};
use grpc_balancer_webhook::{Args, Outcome, SidecarMode, WebhookMetrics};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

fn names() -> Vec<String> {
    serving_names("grpc-balancer-webhook", "grpc-balancer", &[])
}

/// One HTTPS request to `addr`, trusting only `ca_pem`; returns the status
/// and the certificate the server presented.
async fn post(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    server_name: &str,
    path: &str,
    body: &str,
) -> Result<(u16, Vec<u8>, CertificateDer<'static>), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| e.to_string())?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let presented = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .ok_or("no peer certificate")?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = hyper::Request::post(path)
        .header("host", server_name)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, bytes.to_vec(), presented.into_owned()))
}

#[tokio::test]
async fn serves_reviews_over_tls_and_swaps_certificates() {
    let first = generate(&names(), SystemTime::now()).expect("certificates");
    let serving = Arc::new(ServingCert::new(
        certified_key(first.cert_pem.as_bytes(), first.key_pem.as_bytes()).expect("a key"),
    ));
    let settings = Args::defaults()
        .expect("defaults")
        .proxy_settings(SidecarMode::Native);
    let reviewer = Arc::new(Reviewer {
        settings: Arc::new(settings),
        configs: Arc::new(ProxyConfigs::new()),
        discovery_ca: Default::default(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("an address");
    let tls = Arc::new(server_config(serving.clone()).expect("TLS settings"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let metrics = Arc::new(WebhookMetrics::default());
    let server = tokio::spawn(serve(
        listener,
        tls,
        router(reviewer, metrics.clone()),
        metrics.clone(),
        grpc_balancer_webhook::Serving::default(),
        async {
            let _ = stop_rx.await;
        },
    ));

    let review = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"t-1","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE","userInfo":{},"object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","annotations":{"grpcbalancer.io/sidecar.inject":"true"}},"spec":{"containers":[{"name":"app"}]}}}}"#;
    for name in [
        "grpc-balancer-webhook.grpc-balancer.svc",
        "127.0.0.1",
        "localhost",
    ] {
        let (status, body, _) = post(addr, &first.ca_pem, name, "/mutate", review)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(status, 200, "{name}");
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains(r#""uid":"t-1""#) && text.contains("JSONPatch"),
            "{text}"
        );
    }
    let (status, _, _) = post(addr, &first.ca_pem, "127.0.0.1", "/nope", "{}")
        .await
        .expect("answers");
    assert_eq!(status, 404);
    assert_eq!(metrics.reviews(Outcome::Injected), 3, "one per good review");
    assert_eq!(metrics.tls_handshake_failures(), 0);

    // A name outside the certificate fails verification.
    let err = post(addr, &first.ca_pem, "elsewhere.example", "/mutate", review).await;
    assert!(
        err.is_err(),
        "a name the certificate does not cover must not verify"
    );
    // The client aborts the handshake; the server counts it (an apiserver
    // with a stale caBundle shows up this way).
    assert_eventually(
        "the failed handshake to be counted",
        Duration::from_secs(10),
        || async { metrics.tls_handshake_failures() == 1 },
    )
    .await;

    // Swap: the next handshake presents the new certificate, trusted by the new CA only.
    let second = generate(&names(), SystemTime::now()).expect("certificates");
    serving.replace(
        certified_key(second.cert_pem.as_bytes(), second.key_pem.as_bytes()).expect("a key"),
    );
    let (status, _, presented) = post(addr, &second.ca_pem, "127.0.0.1", "/mutate", review)
        .await
        .expect("the new certificate verifies");
    assert_eq!(status, 200);
    let expected = CertificateDer::from_pem_slice(second.cert_pem.as_bytes()).expect("pem");
    assert_eq!(presented, expected);
    assert!(
        post(addr, &first.ca_pem, "127.0.0.1", "/mutate", review)
            .await
            .is_err()
    );

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("the server stops")
        .expect("the server task ends cleanly");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[test]
fn a_key_that_does_not_fit_the_certificate_is_refused() {
    let a = generate(&names(), SystemTime::now()).expect("certificates");
    let b = generate(&names(), SystemTime::now()).expect("certificates");
    assert!(certified_key(a.cert_pem.as_bytes(), b.key_pem.as_bytes()).is_err());
    assert!(certified_key(b"", a.key_pem.as_bytes()).is_err());
    assert!(certified_key(a.cert_pem.as_bytes(), b"not a key").is_err());
}
