//! What the injected proxy looks like: image, resources, log level and the
//! bounds per-pod annotations must stay within. Built once from the flags
//! (see [`crate::Args`]), then shared by every review.

use std::str::FromStr;
use std::time::Duration;

use crate::quantity::Quantity;

/// How the proxy joins the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidecarMode {
    /// First init container with `restartPolicy: Always` (Kubernetes ≥ 1.29):
    /// started and ready before the app, stopped after it, and it does not
    /// keep a Job's pod running.
    Native,
    /// First regular container, with a `postStart` hook that returns once the
    /// proxy is ready (the kubelet starts the next container only then) and a
    /// `preStop` delay so the app's last calls still find the proxy.
    Legacy,
}

impl SidecarMode {
    /// Native sidecars are on by default from Kubernetes 1.29.
    pub fn for_server_version(major: u32, minor: u32) -> Self {
        if (major, minor) >= (1, 29) {
            SidecarMode::Native
        } else {
            SidecarMode::Legacy
        }
    }
}

/// Proxy log level, passed to the proxy as `GRPC_BALANCER_LOG`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "trace" => Ok(LogLevel::Trace),
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" => Ok(LogLevel::Warn),
            "error" => Ok(LogLevel::Error),
            other => Err(format!(
                "{other:?} is not a log level (trace, debug, info, warn, error)"
            )),
        }
    }
}

/// Requests and limits of the proxy container; `None` leaves one unset.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProxyResources {
    pub cpu_request: Option<Quantity>,
    pub cpu_limit: Option<Quantity>,
    pub memory_request: Option<Quantity>,
    pub memory_limit: Option<Quantity>,
}

/// Everything the webhook needs to know to build the proxy container.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySettings {
    pub image: String,
    pub image_pull_policy: Option<String>,
    /// Whether `grpcbalancer.io/proxy-image` is honoured. Off by default: an
    /// annotation should not be a way to run an arbitrary image next to an app.
    pub allow_image_override: bool,
    pub resources: ProxyResources,
    /// Upper bound of any CPU request or limit a pod annotation asks for.
    pub max_cpu: Quantity,
    /// Upper bound of any memory request or limit a pod annotation asks for.
    pub max_memory: Quantity,
    pub log_level: LogLevel,
    pub mode: SidecarMode,
    /// Legacy mode only: how long the proxy outlives the app's SIGTERM.
    pub drain_delay: Duration,
    /// Legacy mode only: how long the `postStart` hook waits for `/ready`.
    pub ready_timeout: Duration,
    pub admin_port: u16,
    /// The proxy's `/config` and `/endpoints` answer every peer, not only
    /// loopback ones (`--admin-debug any`).
    pub admin_debug_from_any: bool,
    /// The push discovery server the proxies connect to (`host:port`).
    pub discovery_address: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_sidecars_from_1_29() {
        assert_eq!(SidecarMode::for_server_version(1, 28), SidecarMode::Legacy);
        assert_eq!(SidecarMode::for_server_version(1, 29), SidecarMode::Native);
        assert_eq!(SidecarMode::for_server_version(1, 34), SidecarMode::Native);
        assert_eq!(SidecarMode::for_server_version(2, 0), SidecarMode::Native);
    }
}
