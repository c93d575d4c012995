//! Whether the webhook answers: true from the moment its TLS listener
//! accepts connections with a certificate loaded, false before (the
//! certificate or the first list of proxy configs still pending) and once
//! it stopped. The operator's `/readyz` reads it, so a replica takes
//! admission traffic only when it can answer it.

use std::sync::Arc;

use tokio::sync::watch;

use crate::tls::ServingCert;

/// A latch the webhook sets and readiness probes read; cheap to clone. It
/// also hands out the webhook's serving certificate, which the operator's
/// discovery server serves too (the proxies trust the same CA).
#[derive(Debug, Clone)]
pub struct Serving {
    tx: Arc<watch::Sender<bool>>,
    cert: Arc<watch::Sender<Option<Arc<ServingCert>>>>,
}

impl Default for Serving {
    fn default() -> Self {
        Serving {
            tx: Arc::new(watch::channel(false).0),
            cert: Arc::new(watch::channel(None).0),
        }
    }
}

impl Serving {
    /// Whether the webhook answers now.
    pub fn is_serving(&self) -> bool {
        *self.tx.borrow()
    }

    /// Follows the state from now on.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// The serving certificate, once the webhook has one (renewals swap
    /// what it holds, so a server built on it follows them).
    pub async fn serving_cert(&self) -> Option<Arc<ServingCert>> {
        let mut rx = self.cert.subscribe();
        rx.wait_for(Option::is_some).await.ok()?.clone()
    }

    pub(crate) fn set_cert(&self, cert: Arc<ServingCert>) {
        self.cert.send_replace(Some(cert));
    }

    pub(crate) fn set(&self, serving: bool) {
        self.tx.send_replace(serving);
    }
}
