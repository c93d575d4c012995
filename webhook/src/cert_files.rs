//! cert-manager mode: the certificate is a mounted Secret (`tls.crt`,
//! `tls.key`); the kubelet rewrites the files when cert-manager renews, and
//! the webhook picks them up by polling.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;

use crate::tls::{self, ServingCert};

/// How often the mounted files are compared with what is served.
pub const POLL_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CertFilesError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate files in {dir}: {source}")]
    Invalid {
        dir: PathBuf,
        #[source]
        source: tls::TlsError,
    },
}

/// The raw files, compared to notice a renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl CertFiles {
    pub async fn read(dir: &Path) -> Result<CertFiles, CertFilesError> {
        let read = |name: &str| {
            let path = dir.join(name);
            async move {
                tokio::fs::read(&path)
                    .await
                    .map_err(|source| CertFilesError::Read { path, source })
            }
        };
        Ok(CertFiles {
            cert: read("tls.crt").await?,
            key: read("tls.key").await?,
        })
    }

    pub fn certified_key(&self, dir: &Path) -> Result<CertifiedKey, CertFilesError> {
        tls::certified_key(&self.cert, &self.key).map_err(|source| CertFilesError::Invalid {
            dir: dir.to_owned(),
            source,
        })
    }
}

/// Serves the files' certificate from each change on, until the task ends.
/// A half-written or broken pair keeps the previous certificate.
pub async fn follow(
    dir: PathBuf,
    mut current: CertFiles,
    serving: Arc<ServingCert>,
    poll_interval: Duration,
) {
    let mut tick = tokio::time::interval(poll_interval);
    loop {
        tick.tick().await;
        let files = match CertFiles::read(&dir).await {
            Ok(files) if files == current => continue,
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(error = %e, "certificate files unreadable; serving the previous ones");
                continue;
            }
        };
        match files.certified_key(&dir) {
            Ok(key) => {
                serving.replace(key);
                current = files;
                tracing::info!(dir = %dir.display(), "serving the renewed certificate");
            }
            Err(e) => {
                tracing::warn!(error = %e, "new certificate files refused; serving the previous ones")
            }
        }
    }
}
