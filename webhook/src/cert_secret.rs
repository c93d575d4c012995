//! The self-signed certificate kept in a Secret, shared by every replica.
//!
//! Bootstrap is race-safe: a replica that finds the Secret missing creates
//! it (create fails if another replica was first), one that finds it empty,
//! expiring or for other names replaces it under its `resourceVersion` (fails
//! if another replica wrote first); either way every replica then reads the
//! Secret back and serves what it holds, so they all agree.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::sign::CertifiedKey;

use crate::certs::{self, RENEW_BEFORE};
use crate::tls;

pub const CA_KEY: &str = "ca.crt";
pub const CERT_KEY: &str = "tls.crt";
pub const PRIVATE_KEY_KEY: &str = "tls.key";
/// The names the certificate covers, comma-separated, so a replica can tell
/// without parsing X.509 whether it fits its flags.
pub const NAMES_ANNOTATION: &str = "grpcbalancer.io/cert-names";
/// Expiry of the certificate in seconds since the Unix epoch.
pub const NOT_AFTER_ANNOTATION: &str = "grpcbalancer.io/cert-not-after";

const MAX_ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum CertSecretError {
    #[error("Secret {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Generate(#[from] certs::CertError),
    #[error(
        "Secret {namespace}/{name} kept changing under us; gave up after {MAX_ATTEMPTS} attempts"
    )]
    Contended { namespace: String, name: String },
}

/// What the webhook serves and what the apiserver must trust.
#[derive(Debug, Clone)]
pub struct ServingMaterial {
    pub key: CertifiedKey,
    /// PEM of the CA(s) for `caBundle`.
    pub ca_bundle: String,
}

/// The certificate Secret of the webhook.
#[derive(Clone)]
pub struct CertSecret {
    api: Api<Secret>,
    namespace: String,
    name: String,
    names: Vec<String>,
}

impl CertSecret {
    pub fn new(client: Client, namespace: &str, name: &str, names: Vec<String>) -> Self {
        CertSecret {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            names,
        }
    }

    pub fn api(&self) -> &Api<Secret> {
        &self.api
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the certificate in the Secret, creating or renewing it first
    /// when it is missing, empty, expiring or made for other names.
    pub async fn ensure(&self) -> Result<ServingMaterial, CertSecretError> {
        for _ in 0..MAX_ATTEMPTS {
            let existing = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(|e| self.api_error(e))?;
            match existing {
                Some(secret) => {
                    if let Some(material) = self.usable(&secret, SystemTime::now()) {
                        return Ok(material);
                    }
                    tracing::info!(namespace = %self.namespace, name = %self.name, "certificate Secret is empty, expiring or for other names; writing a new certificate");
                    let next = self.renewed(secret)?;
                    match self
                        .api
                        .replace(&self.name, &PostParams::default(), &next)
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if is_conflict(&e) => {}
                        Err(e) => return Err(self.api_error(e)),
                    }
                }
                None => {
                    tracing::info!(namespace = %self.namespace, name = %self.name, "creating the certificate Secret");
                    let secret = self.renewed(Secret {
                        type_: Some("kubernetes.io/tls".to_owned()),
                        ..Secret::default()
                    })?;
                    match self.api.create(&PostParams::default(), &secret).await {
                        Ok(_) => {}
                        Err(e) if is_conflict(&e) => {}
                        Err(e) => return Err(self.api_error(e)),
                    }
                }
            }
            // Read back: whoever won, everyone serves the same Secret.
        }
        Err(CertSecretError::Contended {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        })
    }

    /// The material of `secret` when it is complete, fits our names and is
    /// not about to expire.
    pub fn usable(&self, secret: &Secret, now: SystemTime) -> Option<ServingMaterial> {
        let annotations = secret.metadata.annotations.as_ref()?;
        let names: Vec<&str> = annotations.get(NAMES_ANNOTATION)?.split(',').collect();
        if !self.names.iter().all(|n| names.contains(&n.as_str())) {
            return None;
        }
        let not_after: u64 = annotations.get(NOT_AFTER_ANNOTATION)?.parse().ok()?;
        let renew_at = not_after.saturating_sub(RENEW_BEFORE.as_secs());
        if certs::unix_seconds(now).ok()? >= renew_at {
            return None;
        }
        let data = secret.data.as_ref()?;
        let cert = &data.get(CERT_KEY)?.0;
        let key = &data.get(PRIVATE_KEY_KEY)?.0;
        let ca = String::from_utf8(data.get(CA_KEY)?.0.clone()).ok()?;
        let key = tls::certified_key(cert, key).ok()?;
        Some(ServingMaterial { key, ca_bundle: ca })
    }

    /// `secret` with a new certificate, keeping its metadata (the chart's
    /// labels, the resourceVersion that makes the write conditional) and
    /// type (immutable). The previous CA stays in `ca.crt` so replicas still
    /// serving the old certificate are trusted until they reload.
    fn renewed(&self, mut secret: Secret) -> Result<Secret, CertSecretError> {
        let generated = certs::generate(&self.names, SystemTime::now())?;
        let previous_ca = secret
            .data
            .as_ref()
            .and_then(|d| d.get(CA_KEY))
            .and_then(|ca| first_certificate_pem(&ca.0));
        let mut ca_bundle = generated.ca_pem.clone();
        if let Some(previous) = previous_ca {
            ca_bundle.push_str(&previous);
        }
        secret.metadata.name = Some(self.name.clone());
        secret.metadata.namespace = Some(self.namespace.clone());
        let annotations = secret
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new);
        annotations.insert(NAMES_ANNOTATION.to_owned(), self.names.join(","));
        annotations.insert(
            NOT_AFTER_ANNOTATION.to_owned(),
            generated.not_after.to_string(),
        );
        secret
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(
                grpc_balancer_crds::annotations::MANAGED_BY_LABEL.to_owned(),
                grpc_balancer_crds::annotations::MANAGED_BY_VALUE.to_owned(),
            );
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        data.insert(CA_KEY.to_owned(), ByteString(ca_bundle.into_bytes()));
        data.insert(
            CERT_KEY.to_owned(),
            ByteString(generated.cert_pem.into_bytes()),
        );
        data.insert(
            PRIVATE_KEY_KEY.to_owned(),
            ByteString(generated.key_pem.into_bytes()),
        );
        secret.string_data = None;
        Ok(secret)
    }

    fn api_error(&self, source: kube::Error) -> CertSecretError {
        CertSecretError::Api {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }
}

/// Pause between two renewals by this replica, so replicas with different
/// names cannot rewrite the Secret in a tight loop.
pub const MIN_RENEWAL_INTERVAL: Duration = Duration::from_secs(10);

/// The first PEM certificate block of `pem`, if it holds a certificate.
fn first_certificate_pem(pem: &[u8]) -> Option<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = std::str::from_utf8(pem).ok()?;
    let start = text.find(BEGIN)?;
    let end = start + text[start..].find(END)? + END.len();
    let block = format!("{}\n", &text[start..end]);
    CertificateDer::from_pem_slice(block.as_bytes()).ok()?;
    Some(block)
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_previous_ca_is_re_encoded_as_the_same_pem() {
        let generated =
            certs::generate(&["a.b.svc".to_owned()], SystemTime::now()).expect("generates");
        let again = first_certificate_pem(generated.ca_pem.as_bytes()).expect("a certificate");
        assert_eq!(
            again.replace("\r\n", "\n"),
            generated.ca_pem.replace("\r\n", "\n")
        );
    }
}
