//! The self-signed CA and the serving certificate it signs (rcgen). The CA's
//! key is not kept: renewing means a new CA, and the `caBundle` carries the
//! previous CA as well until every replica serves the new certificate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// How long generated certificates are valid.
pub const VALIDITY: Duration = Duration::from_secs(5 * 365 * 24 * 3600);
/// Certificates are renewed once less than this is left.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Start of validity this far in the past, for clocks a little behind ours.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// A generated CA and serving certificate, PEM-encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedCerts {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// Seconds since the Unix epoch.
    pub not_after: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("could not generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the clock is before 1970 or beyond what certificates can say")]
    Clock,
}

/// The names the serving certificate covers: the Service's in-cluster DNS
/// names, `localhost`, 127.0.0.1, and any extra hosts (local mode's URL host).
pub fn serving_names(service: &str, namespace: &str, extra_hosts: &[String]) -> Vec<String> {
    let mut names = vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ];
    for host in extra_hosts {
        if !names.contains(host) {
            names.push(host.clone());
        }
    }
    names
}

/// Generates a CA and a serving certificate for `names`, valid from `now`.
pub fn generate(names: &[String], now: SystemTime) -> Result<GeneratedCerts, CertError> {
    let not_before = to_offset(now.checked_sub(CLOCK_SKEW).ok_or(CertError::Clock)?)?;
    let not_after_time = now.checked_add(VALIDITY).ok_or(CertError::Clock)?;
    let not_after = to_offset(not_after_time)?;

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "grpc-balancer webhook CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    let common_name = names
        .first()
        .cloned()
        .unwrap_or_else(|| "grpc-balancer".into());
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = not_before;
    params.not_after = not_after;
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer)?;

    Ok(GeneratedCerts {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after: unix_seconds(not_after_time)?,
    })
}

pub fn unix_seconds(t: SystemTime) -> Result<u64, CertError> {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| CertError::Clock)
}

fn to_offset(t: SystemTime) -> Result<time::OffsetDateTime, CertError> {
    let secs = i64::try_from(unix_seconds(t)?).map_err(|_| CertError::Clock)?;
    time::OffsetDateTime::from_unix_timestamp(secs).map_err(|_| CertError::Clock)
}
