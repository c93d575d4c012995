//! Loads the config file and watches it for changes.
//!
//! The watch is on the file's directory, not the file (inotify through the
//! `notify` crate): a Kubernetes ConfigMap volume is updated by swapping a
//! `..data` symlink in that directory, so the file's own inode never
//! changes, while the swap is an event in the directory. Any event but a
//! read makes the file read again, and only a new content counts. An idle
//! proxy then does not wake up for its config at all, where polling once a
//! second cost four wake-ups a second (a thread hop for the read, and the
//! timer's two steps); a fleet of sidecars pays that many times over. A slow
//! poll stays on as a safety net for what inotify can miss (an overflowed
//! event queue, a filesystem without it); where the watch cannot be set up
//! at all (the per-user inotify limit reached, say), polling at the given
//! interval takes its place.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use grpc_balancer_crds::config::{self, ConfigError, Partial};
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::{Notify, mpsc};

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

/// How often the file is read while its directory is watched: the safety
/// net only.
pub const SAFETY_POLL: Duration = Duration::from_secs(60);

/// Watches `path` (its directory; every `interval` where that cannot be
/// done) and sends what changed. `last` is the hash of the content already
/// applied.
pub fn watch(path: PathBuf, interval: Duration, mut last: Option<u64>) -> mpsc::Receiver<Loaded> {
    let (tx, rx) = mpsc::channel(4);
    let changed = Arc::new(Notify::new());
    let directory_watch = watch_directory(&path, changed.clone());
    let poll = match &directory_watch {
        Ok(_) => interval.max(SAFETY_POLL),
        Err(e) => {
            tracing::info!(path = %path.display(), error = %e, every = ?interval, "cannot watch the config file's directory; polling the file instead");
            interval
        }
    };
    tokio::spawn(async move {
        // Dropping the watcher ends the watch: it lives as long as this task.
        let _directory_watch = directory_watch;
        let mut ticker = tokio::time::interval(poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut missing_reported = false;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = changed.notified() => {}
            }
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

/// Watches the directory holding `path`; every event in it but a read (the
/// watcher's own reads among them) wakes `changed`. The watcher's thread
/// sleeps until the kernel has an event.
fn watch_directory(
    path: &Path,
    changed: Arc<Notify>,
) -> notify::Result<notify::RecommendedWatcher> {
    let directory = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            Ok(e) if matches!(e.kind, EventKind::Access(_)) => {}
            // An error (an overflowed queue among them) may hide a change.
            _ => changed.notify_one(),
        }
    })?;
    watcher.watch(&directory, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn config_naming(listen_port: u16) -> String {
        format!(
            "balancings:\n  - name: greeter\n    listen: 127.0.0.1:{listen_port}\n    subsets:\n      - name: all\n        discovery: {{ static: [127.0.0.1:50051] }}\n"
        )
    }

    fn listen_port(loaded: &Loaded) -> Option<u16> {
        match loaded {
            Loaded::Config(p) => p
                .config
                .balancings
                .first()
                .and_then(|b| b.listen.rsplit(':').next()?.parse().ok()),
            _ => None,
        }
    }

    /// What the kubelet does to a ConfigMap volume: the new content in a new
    /// timestamped directory, a `..data_tmp` symlink to it renamed over
    /// `..data`; `config.yaml` itself is a symlink through `..data`.
    fn publish(volume: &Path, generation: u32, content: &str) {
        let version = volume.join(format!("..2026_11_30_{generation}"));
        std::fs::create_dir(&version).expect("version dir");
        std::fs::write(version.join("config.yaml"), content).expect("write");
        let tmp = volume.join("..data_tmp");
        symlink(version.file_name().expect("name"), &tmp).expect("symlink");
        std::fs::rename(&tmp, volume.join("..data")).expect("swap");
        if generation == 1 {
            symlink("..data/config.yaml", volume.join("config.yaml")).expect("link");
        }
    }

    async fn next(rx: &mut mpsc::Receiver<Loaded>) -> Loaded {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("no config update within 10 s")
            .expect("the watcher ended")
    }

    #[tokio::test]
    async fn a_configmap_symlink_swap_is_seen_at_once_without_polling() {
        let volume = tempfile::tempdir().expect("tempdir");
        publish(volume.path(), 1, &config_naming(15001));
        let path = volume.path().join("config.yaml");
        let (hash, loaded) = load(&path).await;
        assert_eq!(listen_port(&loaded), Some(15001));
        // A poll this slow never fires within the test: only the directory
        // watch can bring the update.
        let mut rx = watch(path, Duration::from_secs(3600), hash);
        publish(volume.path(), 2, &config_naming(15002));
        assert_eq!(listen_port(&next(&mut rx).await), Some(15002));
        publish(volume.path(), 3, &config_naming(15003));
        assert_eq!(listen_port(&next(&mut rx).await), Some(15003));
    }

    #[tokio::test]
    async fn a_file_rewritten_in_place_is_seen_and_the_same_content_again_is_no_update() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.yaml");
        std::fs::write(&path, config_naming(15001)).expect("write");
        let (hash, _) = load(&path).await;
        let mut rx = watch(path.clone(), Duration::from_secs(3600), hash);
        std::fs::write(&path, config_naming(15002)).expect("rewrite");
        assert_eq!(listen_port(&next(&mut rx).await), Some(15002));
        // The same content written again is no update.
        std::fs::write(&path, config_naming(15002)).expect("same again");
        std::fs::write(&path, config_naming(15004)).expect("rewrite");
        assert_eq!(listen_port(&next(&mut rx).await), Some(15004));
    }

    #[tokio::test]
    async fn without_a_directory_to_watch_the_file_is_polled() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("not-yet");
        let path = dir.join("proxy.yaml");
        let (hash, loaded) = load(&path).await;
        assert!(matches!(loaded, Loaded::Missing));
        let mut rx = watch(path.clone(), Duration::from_millis(50), hash);
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(&path, config_naming(15005)).expect("write");
        assert_eq!(listen_port(&next(&mut rx).await), Some(15005));
    }
}
