//! cert-manager mode: the served certificate follows the mounted files, and a
//! broken or half-written pair keeps the previous one.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use std::sync::atomic::{AtomicU64, Ordering};

use grpc_balancer_webhook::cert_files::{CertFiles, follow_counted};
use grpc_balancer_webhook::certs::{generate, serving_names};
use grpc_balancer_webhook::tls::ServingCert;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

fn write_pair(dir: &std::path::Path, cert: &str, key: &str) {
    std::fs::write(dir.join("tls.crt"), cert).expect("writes tls.crt");
    std::fs::write(dir.join("tls.key"), key).expect("writes tls.key");
}

/// Waits until the follower has looked at the files twice more (so at
/// least once wholly after the caller's change); false after a deadline.
async fn files_seen(checks: &AtomicU64) -> bool {
    let wanted = checks.load(Ordering::SeqCst) + 2;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if checks.load(Ordering::SeqCst) >= wanted {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

async fn served_becomes(serving: &ServingCert, expected: &CertificateDer<'_>) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if serving.current().cert.first() == Some(expected) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn follows_renewed_files_and_ignores_broken_ones() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let names = serving_names("grpc-balancer-webhook", "grpc-balancer", &[]);
    let first = generate(&names, SystemTime::now()).expect("certificates");
    write_pair(dir.path(), &first.cert_pem, &first.key_pem);

    let files = CertFiles::read(dir.path()).await.expect("readable");
    let serving = Arc::new(ServingCert::new(
        files.certified_key(dir.path()).expect("valid"),
    ));
    let checks = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(follow_counted(
        dir.path().to_owned(),
        files,
        serving.clone(),
        Duration::from_millis(50),
        checks.clone(),
    ));

    let second = generate(&names, SystemTime::now()).expect("certificates");
    write_pair(dir.path(), &second.cert_pem, &second.key_pem);
    let second_der = CertificateDer::from_pem_slice(second.cert_pem.as_bytes()).expect("pem");
    assert!(
        served_becomes(&serving, &second_der).await,
        "the renewed pair is served"
    );

    // A key that does not match (cert-manager mid-write) keeps the second pair.
    let third = generate(&names, SystemTime::now()).expect("certificates");
    write_pair(dir.path(), &third.cert_pem, &second.key_pem);
    assert!(files_seen(&checks).await, "the follower looks at the files");
    assert_eq!(serving.current().cert.first(), Some(&second_der));
    // Missing files too.
    std::fs::remove_file(dir.path().join("tls.key")).expect("removes");
    assert!(files_seen(&checks).await, "the follower looks at the files");
    assert_eq!(serving.current().cert.first(), Some(&second_der));

    // Once complete again, it is served.
    write_pair(dir.path(), &third.cert_pem, &third.key_pem);
    let third_der = CertificateDer::from_pem_slice(third.cert_pem.as_bytes()).expect("pem");
    assert!(served_becomes(&serving, &third_der).await);
    task.abort();
}

#[tokio::test]
async fn missing_files_are_a_clear_error() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let err = CertFiles::read(dir.path()).await.expect_err("no files");
    assert!(err.to_string().contains("tls.crt"), "{err}");
}
