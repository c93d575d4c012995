//! A client channel to the discovery server over TLS, trusting only the
//! CA handed to the proxy (the webhook's), with the server name checked.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("the CA bundle has no certificate")]
    NoCa,
    #[error("the CA bundle does not parse: {0}")]
    CaPem(rustls::pki_types::pem::Error),
    #[error("the CA bundle is refused: {0}")]
    Ca(rustls::Error),
    #[error("{0:?} is not a host name or IP address")]
    ServerName(String),
    #[error("{0:?} is not host:port")]
    Address(String),
    #[error("TLS settings refused: {0}")]
    Tls(rustls::Error),
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
}

/// How long connecting (TCP and TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The TLS client settings trusting `ca_pem` alone, speaking h2.
pub fn client_config(ca_pem: &[u8]) -> Result<rustls::ClientConfig, ChannelError> {
    let mut roots = rustls::RootCertStore::empty();
    let mut any = false;
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(cert.map_err(ChannelError::CaPem)?)
            .map_err(ChannelError::Ca)?;
        any = true;
    }
    if !any {
        return Err(ChannelError::NoCa);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ChannelError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A lazy channel to `address` (`host:port`) over TLS: connects on first
/// use and again after a failure. `server_name` must be on the server's
/// certificate.
pub fn tls_channel(
    address: &str,
    server_name: &str,
    tls: rustls::ClientConfig,
) -> Result<Channel, ChannelError> {
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|_| ChannelError::ServerName(server_name.to_owned()))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let target = address.to_owned();
    let endpoint = Endpoint::from_shared(format!("https://{address}"))
        .map_err(|_| ChannelError::Address(address.to_owned()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
            let connector = connector.clone();
            let name = name.clone();
            let target = target.clone();
            async move {
                let tcp =
                    tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&target))
                        .await
                        .map_err(|_| {
                            std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                        })??;
                tcp.set_nodelay(true)?;
                let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
                    })??;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        })),
    )
}
