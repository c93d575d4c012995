//! cert-manager mode: the certificate is a mounted Secret (`tls.crt`,
//! `tls.key`); the kubelet rewrites the files when cert-manager renews, and
//! the webhook picks them up by polling.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    current: CertFiles,
    serving: Arc<ServingCert>,
    poll_interval: Duration,
) {
    follow_counted(dir, current, serving, poll_interval, Arc::default()).await;
}

/// [`follow`], counting in `checks` each look at the files once it is
/// done, so a caller can tell a pair was seen (and kept or refused) without
/// guessing how long that takes.
pub async fn follow_counted(
    dir: PathBuf,
    mut current: CertFiles,
    serving: Arc<ServingCert>,
    poll_interval: Duration,
    checks: Arc<AtomicU64>,
) {
    let mut tick = tokio::time::interval(poll_interval);
    loop {
        tick.tick().await;
        check_once(&dir, &mut current, &serving).await;
        checks.fetch_add(1, Ordering::SeqCst);
    }
}

async fn check_once(dir: &Path, current: &mut CertFiles, serving: &ServingCert) {
    let files = match CertFiles::read(dir).await {
        Ok(files) if files == *current => return,
        Ok(files) => files,
        Err(e) => {
            tracing::warn!(error = %e, "certificate files unreadable; serving the previous ones");
            return;
        }
    };
    match files.certified_key(dir) {
        Ok(key) => {
            serving.replace(key);
            *current = files;
            tracing::info!(dir = %dir.display(), "serving the renewed certificate");
        }
        Err(e) => {
            tracing::warn!(error = %e, "new certificate files refused; serving the previous ones")
        }
    }
}
