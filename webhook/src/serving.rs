//! Whether the webhook answers: true from the moment its TLS listener
//! accepts connections with a certificate loaded, false before (the
//! certificate or the first list of proxy configs still pending) and once
//! it stopped. The operator's `/readyz` reads it, so a replica takes
//! admission traffic only when it can answer it.

use std::sync::Arc;

use tokio::sync::watch;

/// A latch the webhook sets and readiness probes read; cheap to clone.
#[derive(Debug, Clone)]
pub struct Serving {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Serving {
    fn default() -> Self {
        Serving {
            tx: Arc::new(watch::channel(false).0),
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

    pub(crate) fn set(&self, serving: bool) {
        self.tx.send_replace(serving);
    }
}
