//! One real control plane per test binary.
//!
//! [`ControlPlane::shared`] starts one with `scripts/control-plane up --owner-pid <this
//! process>` on first use, or uses the one whose kubeconfig `GRPC_BALANCER_KUBECONFIG`
//! names (then it is never stopped by the tests).
//!
//! Teardown: Rust runs no destructors for statics, and a test binary may end by panic,
//! abort or SIGKILL. So the script itself starts a watcher process (in its own session)
//! that polls this process's PID + start time and runs `scripts/control-plane down` once
//! it is gone. That covers every way the test binary can end, without `atexit` tricks.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::OnceCell;

/// Environment variable naming the kubeconfig of an already running control plane.
pub const KUBECONFIG_ENV: &str = "GRPC_BALANCER_KUBECONFIG";

/// A running control plane.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    kubeconfig: PathBuf,
    /// The state dir when it is one made by `scripts/control-plane up` (logs live there).
    state_dir: Option<PathBuf>,
    /// Whether this process started it (then the owner watcher stops it at exit).
    started_here: bool,
}

static SHARED: OnceCell<Result<ControlPlane, String>> = OnceCell::const_new();
/// Set once the shared control plane is known, for log printing from sync contexts.
static STATE_DIR: OnceLock<PathBuf> = OnceLock::new();

/// The repository's `scripts/control-plane`.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/control-plane")
}

/// The command that installs the binaries, for error messages.
pub const INSTALL_HINT: &str = "scripts/control-plane install";

impl ControlPlane {
    /// The control plane shared by all tests of this test binary; starts it on first use.
    ///
    /// Panics (never skips) when it cannot be started, e.g. with a message naming
    /// `scripts/control-plane install` when the binaries are missing.
    pub async fn shared() -> &'static ControlPlane {
        let res = SHARED
            .get_or_init(|| async {
                let cp = match std::env::var_os(KUBECONFIG_ENV) {
                    Some(path) => Self::existing(PathBuf::from(path)),
                    None => Self::start_owned().await,
                };
                cp.map_err(|e| format!("{e:#}"))
            })
            .await;
        match res {
            Ok(cp) => cp,
            Err(e) => panic!("no Kubernetes control plane for the tests: {e}"),
        }
    }

    /// Starts a new control plane owned by this process (stopped when it exits, or by
    /// [`ControlPlane::down`]). Most tests want [`ControlPlane::shared`].
    pub async fn start_owned() -> anyhow::Result<ControlPlane> {
        let script = script();
        let out = tokio::process::Command::new(&script)
            .arg("up")
            .arg("--owner-pid")
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .with_context(|| format!("running {} up", script.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            anyhow::bail!(
                "`{} up` failed ({}); if binaries are missing run `{INSTALL_HINT}`:\n{stderr}",
                script.display(),
                out.status
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let kubeconfig = stdout
            .lines()
            .last()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(PathBuf::from)
            .with_context(|| format!("`up` printed no kubeconfig path; stderr:\n{stderr}"))?;
        let mut cp = Self::existing(kubeconfig)?;
        cp.started_here = true;
        Ok(cp)
    }

    /// A control plane that is already running, named by its kubeconfig.
    pub fn existing(kubeconfig: PathBuf) -> anyhow::Result<ControlPlane> {
        anyhow::ensure!(
            kubeconfig.is_file(),
            "kubeconfig {} does not exist (start a control plane with `scripts/control-plane up`)",
            kubeconfig.display()
        );
        let state_dir = kubeconfig
            .parent()
            .filter(|d| d.join("pids").is_file())
            .map(Path::to_path_buf);
        if let Some(d) = &state_dir {
            // First one wins; it is only used to find logs.
            let _ = STATE_DIR.set(d.clone());
        }
        Ok(ControlPlane {
            kubeconfig,
            state_dir,
            started_here: false,
        })
    }

    /// Path of the admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The state dir of a control plane started by the script (logs are in `logs/`).
    pub fn state_dir(&self) -> Option<&Path> {
        self.state_dir.as_deref()
    }

    /// Whether this process started it.
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// A new client for the admin user. Create one per test: a client is tied to the
    /// tokio runtime it was first used on, and every `#[tokio::test]` has its own.
    pub async fn client(&self) -> kube::Client {
        match client_for(&self.kubeconfig).await {
            Ok(c) => c,
            Err(e) => panic!("kube client for {}: {e:#}", self.kubeconfig.display()),
        }
    }

    /// The log files of the control-plane components.
    pub fn log_files(&self) -> Vec<PathBuf> {
        self.state_dir
            .as_deref()
            .map(log_files_in)
            .unwrap_or_default()
    }

    /// Stops this control plane now (`scripts/control-plane down`).
    pub async fn down(&self) -> anyhow::Result<()> {
        let status = tokio::process::Command::new(script())
            .arg("down")
            .arg(&self.kubeconfig)
            .status()
            .await?;
        anyhow::ensure!(status.success(), "control-plane down failed: {status}");
        Ok(())
    }

    /// `kubectl` with this control plane's kubeconfig, from the cached Kubernetes build.
    pub fn kubectl(&self) -> std::process::Command {
        let mut c = std::process::Command::new(tool("kubectl"));
        c.arg("--kubeconfig").arg(&self.kubeconfig);
        c
    }
}

/// Builds a client from a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

fn log_files_in(state: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(state.join("logs"))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// Log files of the shared control plane, if known.
pub(crate) fn started_log_files() -> Vec<PathBuf> {
    STATE_DIR.get().map(|d| log_files_in(d)).unwrap_or_default()
}

/// The PATH fragment with the cached tools (kubectl, helm, etcd,
/// kube-apiserver, ...), as printed by `scripts/control-plane path`.
pub fn tool_path() -> Vec<PathBuf> {
    let out = std::process::Command::new(script()).arg("path").output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .trim()
            .split(':')
            .map(PathBuf::from)
            .collect(),
        Ok(o) => panic!(
            "scripts/control-plane path failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("running {}: {e}", script().display()),
    }
}

/// Path of a cached tool such as `kubectl` or `helm`. Panics with the
/// install command when it is missing.
pub fn tool(name: &str) -> PathBuf {
    tool_path()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not installed; run `{INSTALL_HINT}`"))
}

impl ControlPlane {
    /// Kubeconfig of the shared control plane if it has been set up in this process.
    pub(crate) fn shared_kubeconfig() -> Option<PathBuf> {
        SHARED
            .get()
            .and_then(|r| r.as_ref().ok())
            .map(|cp| cp.kubeconfig.clone())
    }
}
