//! Log files of processes a test depends on, printed when a test fails.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static LOGS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Registers a log file (e.g. of a backend process a test started) so that
/// [`print_registered_tails`] includes it.
pub fn register_log(path: impl Into<PathBuf>) {
    let path = path.into();
    // A poisoned lock only means another test panicked while holding it; the list is fine.
    let mut logs = LOGS.lock().unwrap_or_else(|p| p.into_inner());
    if !logs.contains(&path) {
        logs.push(path);
    }
}

/// The last `lines` lines of a file, or a note why it could not be read.
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Prints the tails of the given files to stderr (captured per test by the test harness).
pub fn print_tails<'a>(paths: impl IntoIterator<Item = &'a Path>, lines: usize) {
    for p in paths {
        eprintln!(
            "==> {} (last {lines} lines) <==\n{}",
            p.display(),
            tail(p, lines)
        );
    }
}

/// Prints the tails of the control plane's logs (when this process started it or
/// `GRPC_BALANCER_KUBECONFIG` names a state dir) and of every registered log.
pub fn print_registered_tails(lines: usize) {
    let mut paths: Vec<PathBuf> = crate::control_plane::started_log_files();
    paths.extend(
        LOGS.lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned(),
    );
    print_tails(paths.iter().map(PathBuf::as_path), lines);
}

/// Prints [`print_registered_tails`] when dropped during a panic: keep one alive in a test
/// to get the logs exactly when it fails. [`crate::TestNamespace`] embeds one.
#[derive(Debug, Default)]
pub struct LogsOnPanic;

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_registered_tails(40);
        }
    }
}
