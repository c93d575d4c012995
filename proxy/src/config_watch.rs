//! Loads the config file and watches it for changes by polling its content.
//!
//! Polling the content (not inotify on the file) is what works with
//! Kubernetes ConfigMap volumes: the kubelet swaps a `..data` symlink, so the
//! watched inode never changes. Reading a small file once a second is cheap.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use grpc_balancer_crds::config::{self, ConfigError, Partial};
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
}

/// The file's state as last read.
#[derive(Debug)]
pub enum Loaded {
    /// A readable config. Balancings with errors are left out of it (and
    /// listed), so one broken balancing does not hold back the others.
    Config(Partial),
    /// No file (yet): a pod can start before its ConfigMap has a key.
    Missing,
    Failed(LoadError),
}

/// How long a changed content must stay the same before it applies.
const SETTLE: Duration = Duration::from_millis(100);

fn content_hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Reads and parses the file once; returns its content hash too.
pub async fn load(path: &Path) -> (Option<u64>, Loaded) {
    match tokio::fs::read(path).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, Loaded::Missing),
        Err(source) => (
            None,
            Loaded::Failed(LoadError::Unreadable {
                path: path.to_owned(),
                source,
            }),
        ),
        Ok(bytes) => {
            let hash = content_hash(&bytes);
            let parsed = match String::from_utf8(bytes) {
                Ok(text) => {
                    config::parse_yaml_partial(&text).map_err(|source| LoadError::Invalid {
                        path: path.to_owned(),
                        source,
                    })
                }
                Err(_) => Err(LoadError::Invalid {
                    path: path.to_owned(),
                    source: ConfigError {
                        errors: vec![config::FieldError {
                            path: String::new(),
                            message: "the file is not UTF-8 text".into(),
                        }],
                    },
                }),
            };
            (
                Some(hash),
                match parsed {
                    Ok(c) => Loaded::Config(c),
                    Err(e) => Loaded::Failed(e),
                },
            )
        }
    }
}

/// Polls `path` every `interval` and sends what changed. `last` is the hash
/// of the content already applied.
pub fn watch(path: PathBuf, interval: Duration, mut last: Option<u64>) -> mpsc::Receiver<Loaded> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut missing_reported = false;
        loop {
            ticker.tick().await;
            let (hash, loaded) = load(&path).await;
            match (&loaded, hash) {
                (Loaded::Missing, _) => {
                    // A file that disappears keeps the last config: a
                    // ConfigMap update never removes it, so this is a mistake
                    // to log, not a reason to drop every balancing.
                    if !missing_reported && last.is_some() {
                        tracing::warn!(path = %path.display(), "config file disappeared; keeping the last config");
                    }
                    missing_reported = true;
                    continue;
                }
                (_, Some(h)) if Some(h) == last => continue,
                _ => {}
            }
            // A writer that truncates and rewrites in place can be read half
            // way (an empty file would drop every balancing): a new content
            // applies only once two reads a moment apart agree.
            if hash.is_some() {
                tokio::time::sleep(SETTLE).await;
                if load(&path).await.0 != hash {
                    continue;
                }
            }
            missing_reported = false;
            if hash.is_some() {
                last = hash;
            }
            if tx.send(loaded).await.is_err() {
                return;
            }
        }
    });
    rx
}
