//! `scripts/control-plane up`/`down` as a user runs them, and the owner watcher that
//! tears a control plane down when its owner process ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use grpc_balancer_test_support::control_plane::{script, tool};
use grpc_balancer_test_support::poll_until;

fn up(extra: &[&str]) -> PathBuf {
    let out = Command::new(script())
        .arg("up")
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run control-plane up");
    assert!(
        out.status.success(),
        "up failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// PIDs of etcd, kube-apiserver and kube-controller-manager recorded by `up`.
fn component_pids(state: &Path) -> Vec<u32> {
    let pids = std::fs::read_to_string(state.join("pids")).expect("read pids");
    let pids: Vec<u32> = pids
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(name, _)| *name != "watcher")
        .map(|(_, pid)| pid.trim().parse().expect("pid"))
        .collect();
    assert_eq!(pids.len(), 3, "etcd, apiserver, controller-manager");
    pids
}

fn running(pid: u32) -> bool {
    // A process that is gone (or a zombie awaiting reaping) has no usable cmdline.
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

#[tokio::test]
async fn up_readyz_down_leaves_nothing() {
    let kubeconfig = up(&[]);
    let state = kubeconfig.parent().expect("state dir").to_path_buf();
    let pids = component_pids(&state);
    assert!(pids.iter().all(|p| running(*p)));

    let out = Command::new(tool("kubectl"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "--raw", "/readyz"])
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");

    // The apiserver reports the real version (the webhook decides features from it).
    let out = Command::new(tool("kubectl"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "--raw", "/version"])
        .output()
        .expect("run kubectl");
    let version: serde_json::Value = serde_json::from_slice(&out.stdout).expect("version json");
    assert_eq!(version["gitVersion"], "v1.34.4");

    let out = Command::new(script())
        .arg("down")
        .arg(&kubeconfig)
        .output()
        .expect("run down");
    assert!(
        out.status.success(),
        "down failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `down` waits for the processes to exit.
    for p in &pids {
        assert!(!running(*p), "pid {p} still running after down");
    }
    assert!(!state.exists(), "state dir {} not removed", state.display());
}

#[tokio::test]
async fn control_plane_stops_when_owner_exits() {
    // The owner stands in for a test binary that dies without cleaning up.
    let mut owner = Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("spawn owner");
    let kubeconfig = up(&["--owner-pid", &owner.id().to_string()]);
    let state = kubeconfig.parent().expect("state dir").to_path_buf();
    let pids = component_pids(&state);
    assert!(pids.iter().all(|p| running(*p)));

    owner.kill().expect("kill owner");
    owner.wait().expect("reap owner");
    poll_until(
        "watcher tears down the control plane",
        Duration::from_secs(30),
        || async {
            let alive: Vec<u32> = pids.iter().copied().filter(|p| running(*p)).collect();
            if alive.is_empty() && !state.exists() {
                Ok(())
            } else {
                Err(format!("alive {alive:?}, state exists {}", state.exists()))
            }
        },
    )
    .await;
}

/// A built install is reused: every later `install` finds each component
/// cached and builds nothing. Its checks once piped a binary's version into
/// `grep -q` under pipefail, and grep leaving early made a good cache look
/// broken on some runs (SIGPIPE), so installs rebuilt Kubernetes at random.
#[test]
fn a_built_install_is_reused() {
    for run in 1..=5 {
        let out = Command::new(script())
            .arg("install")
            .stdin(Stdio::null())
            .output()
            .expect("run control-plane install");
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "install failed:\n{log}");
        let built: Vec<&str> = log.lines().filter(|l| l.contains("building ")).collect();
        assert!(
            built.is_empty(),
            "run {run}: a cached component was built again: {built:?}\n{log}"
        );
    }
}
