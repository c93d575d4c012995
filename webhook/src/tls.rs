//! The serving certificate, swappable while the server runs: each TLS
//! handshake takes whatever certificate is current.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate in the PEM data")]
    NoCertificate,
    #[error("the certificate PEM does not parse: {0}")]
    CertificatePem(rustls::pki_types::pem::Error),
    #[error("the private key PEM does not parse: {0}")]
    KeyPem(rustls::pki_types::pem::Error),
    #[error("the key does not fit the certificate: {0}")]
    Key(rustls::Error),
    #[error("TLS settings refused: {0}")]
    Config(rustls::Error),
}

/// The crypto provider of the webhook, chosen explicitly: with more than one
/// provider compiled into the binary, rustls would not pick one itself.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM certificate chain and key into what rustls serves.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::CertificatePem)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(TlsError::KeyPem)?;
    CertifiedKey::from_der(chain, key, &crypto_provider()).map_err(TlsError::Key)
}

/// The certificate currently served.
#[derive(Debug)]
pub struct ServingCert {
    current: ArcSwap<CertifiedKey>,
}

impl ServingCert {
    pub fn new(initial: CertifiedKey) -> Self {
        ServingCert {
            current: ArcSwap::from_pointee(initial),
        }
    }

    /// Serves `next` from the next handshake on; open connections keep theirs.
    pub fn replace(&self, next: CertifiedKey) {
        self.current.store(Arc::new(next));
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// TLS 1.2 and 1.3 with the current certificate; HTTP/2 and HTTP/1.1.
pub fn server_config(cert: Arc<ServingCert>) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    //! The protocol floor and the cipher suites, checked by feeding the
    //! server's real configuration the ClientHello an old or weak client
    //! sends, byte for byte.
    use std::time::SystemTime;

    use rustls::ServerConnection;

    use super::*;
    use crate::certs;

    fn config() -> Arc<ServerConfig> {
        let names = vec!["webhook.test.svc".to_owned()];
        let generated = certs::generate(&names, SystemTime::now()).expect("certificates");
        let key = certified_key(generated.cert_pem.as_bytes(), generated.key_pem.as_bytes())
            .expect("key fits");
        Arc::new(server_config(Arc::new(ServingCert::new(key))).expect("config"))
    }

    /// A ClientHello record: `version` in the hello, the given cipher suites,
    /// no compression, and `extensions` (already encoded).
    fn client_hello(version: [u8; 2], suites: &[u16], extensions: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&version);
        body.extend_from_slice(&[7; 32]); // random
        body.push(0); // no session id
        body.extend_from_slice(&u16::try_from(suites.len() * 2).expect("few").to_be_bytes());
        for s in suites {
            body.extend_from_slice(&s.to_be_bytes());
        }
        body.extend_from_slice(&[1, 0]); // null compression only
        body.extend_from_slice(
            &u16::try_from(extensions.len())
                .expect("short")
                .to_be_bytes(),
        );
        body.extend_from_slice(extensions);
        let mut handshake = vec![1]; // ClientHello
        handshake.extend_from_slice(&u32::try_from(body.len()).expect("short").to_be_bytes()[1..]);
        handshake.extend_from_slice(&body);
        let mut record = vec![0x16, 0x03, 0x01];
        record.extend_from_slice(&u16::try_from(handshake.len()).expect("short").to_be_bytes());
        record.extend_from_slice(&handshake);
        record
    }

    fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut e = kind.to_be_bytes().to_vec();
        e.extend_from_slice(&u16::try_from(data.len()).expect("short").to_be_bytes());
        e.extend_from_slice(data);
        e
    }

    /// What a TLS 1.2 client needs to send for an ECDSA certificate:
    /// supported groups (x25519, P-256), point formats, signature algorithms.
    fn tls12_extensions() -> Vec<u8> {
        let mut e = extension(0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]);
        e.extend(extension(0x000b, &[1, 0]));
        e.extend(extension(0x000d, &[0, 4, 0x04, 0x03, 0x08, 0x04]));
        e
    }

    /// The server's answer to `hello`: the error it stops with, if any.
    fn answer(hello: &[u8]) -> Result<(), rustls::Error> {
        let mut conn = ServerConnection::new(config()).expect("connection");
        let mut input = hello;
        conn.read_tls(&mut input).expect("read");
        conn.process_new_packets().map(|_| ())
    }

    const ECDHE_ECDSA_AES128_GCM_SHA256: u16 = 0xc02b;
    const ECDHE_ECDSA_AES128_CBC_SHA: u16 = 0xc009;
    const RSA_AES128_CBC_SHA: u16 = 0x002f;
    const RSA_3DES_EDE_CBC_SHA: u16 = 0x000a;
    const RSA_RC4_128_SHA: u16 = 0x0005;

    #[test]
    fn a_tls12_client_with_a_strong_suite_is_served() {
        // The control: the hand-made hello is good enough to be answered.
        let hello = client_hello(
            [3, 3],
            &[ECDHE_ECDSA_AES128_GCM_SHA256],
            &tls12_extensions(),
        );
        assert_eq!(answer(&hello), Ok(()));
    }

    #[test]
    fn tls10_and_tls11_are_refused() {
        for version in [[3, 1], [3, 2]] {
            let hello = client_hello(
                version,
                &[ECDHE_ECDSA_AES128_GCM_SHA256],
                &tls12_extensions(),
            );
            let error = answer(&hello).expect_err("an old protocol version must be refused");
            assert!(
                matches!(error, rustls::Error::PeerIncompatible(_)),
                "TLS {version:?}: {error:?}"
            );
        }
    }

    #[test]
    fn weak_suites_are_refused() {
        for suite in [
            ECDHE_ECDSA_AES128_CBC_SHA,
            RSA_AES128_CBC_SHA,
            RSA_3DES_EDE_CBC_SHA,
            RSA_RC4_128_SHA,
        ] {
            let hello = client_hello([3, 3], &[suite], &tls12_extensions());
            let error = answer(&hello).expect_err("a weak suite must be refused");
            assert!(
                matches!(error, rustls::Error::PeerIncompatible(_)),
                "suite {suite:#06x}: {error:?}"
            );
        }
    }
}
