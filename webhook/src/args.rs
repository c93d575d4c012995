//! Command-line flags of the webhook (each with an environment fallback). The
//! operator flattens [`Args`] into its own flags.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::quantity::Quantity;
use crate::settings::{LogLevel, ProxyResources, ProxySettings, SidecarMode};

#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Admission webhook")]
pub struct Args {
    /// Address the HTTPS webhook server listens on.
    #[arg(
        long,
        env = "GRPC_BALANCER_WEBHOOK_LISTEN",
        default_value = "0.0.0.0:9443"
    )]
    pub webhook_listen: SocketAddr,

    /// Local mode (outside a cluster): the URL the apiserver calls, e.g.
    /// `https://127.0.0.1:9443/mutate`. The webhook then registers a `url`-based
    /// MutatingWebhookConfiguration itself. Unset (in-cluster), the chart
    /// creates one with a `service` clientConfig and only its `caBundle` is patched.
    #[arg(long, env = "GRPC_BALANCER_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// Name of the MutatingWebhookConfiguration (created in local mode, its
    /// `caBundle` patched in-cluster with self-signed certificates).
    #[arg(
        long,
        env = "GRPC_BALANCER_WEBHOOK_CONFIGURATION",
        default_value = "grpc-balancer"
    )]
    pub webhook_configuration: String,

    /// Service in front of the webhook; its DNS names go into the certificate.
    #[arg(
        long,
        env = "GRPC_BALANCER_WEBHOOK_SERVICE",
        default_value = "grpc-balancer-webhook"
    )]
    pub webhook_service: String,

    /// Namespace of that Service and of the certificate Secret.
    #[arg(
        long,
        env = "GRPC_BALANCER_WEBHOOK_NAMESPACE",
        default_value = "grpc-balancer"
    )]
    pub webhook_namespace: String,

    /// Where the serving certificate comes from.
    #[arg(
        long,
        env = "GRPC_BALANCER_WEBHOOK_CERT_SOURCE",
        value_enum,
        default_value_t = CertSource::SelfSigned
    )]
    pub webhook_cert_source: CertSource,

    /// Secret holding the self-signed CA and serving certificate (created if
    /// missing or empty).
    #[arg(
        long,
        env = "GRPC_BALANCER_WEBHOOK_CERT_SECRET",
        default_value = "grpc-balancer-webhook-tls"
    )]
    pub webhook_cert_secret: String,

    /// With `--webhook-cert-source cert-manager`: directory of the mounted
    /// cert-manager Secret (`tls.crt`, `tls.key`), re-read when it changes.
    #[arg(
        long,
        env = "GRPC_BALANCER_WEBHOOK_CERT_DIR",
        default_value = "/etc/grpc-balancer/webhook-tls"
    )]
    pub webhook_cert_dir: std::path::PathBuf,

    /// Local mode: `failurePolicy` of the registered webhook. `Ignore` by
    /// default so a stopped developer operator does not block pod creation;
    /// the operator's status lists annotated pods that run without the proxy.
    #[arg(
        long,
        env = "GRPC_BALANCER_WEBHOOK_FAILURE_POLICY",
        value_enum,
        default_value_t = FailurePolicy::Ignore
    )]
    pub webhook_failure_policy: FailurePolicy,

    /// Local mode: only namespaces with this label (`key=value`) are sent to
    /// the webhook (system namespaces never are).
    #[arg(long, env = "GRPC_BALANCER_WEBHOOK_NAMESPACE_SELECTOR", value_parser = parse_label)]
    pub webhook_namespace_selector: Option<(String, String)>,

    /// Local mode: `timeoutSeconds` of the registered webhook.
    #[arg(long, env = "GRPC_BALANCER_WEBHOOK_TIMEOUT_SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(i32).range(1..=30))]
    pub webhook_timeout_seconds: i32,

    /// How the proxy joins the pod: `auto` asks the apiserver's version at
    /// start (native sidecar from 1.29).
    #[arg(long, env = "GRPC_BALANCER_SIDECAR_MODE", value_enum, default_value_t = SidecarModeArg::Auto)]
    pub sidecar_mode: SidecarModeArg,

    /// Image of the injected proxy.
    #[arg(long, env = "GRPC_BALANCER_PROXY_IMAGE", default_value = DEFAULT_PROXY_IMAGE)]
    pub proxy_image: String,

    /// `imagePullPolicy` of the proxy container (empty: the cluster's default).
    #[arg(
        long,
        env = "GRPC_BALANCER_PROXY_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    pub proxy_image_pull_policy: String,

    /// Port of the proxy's admin server (probes, metrics) in client pods. No
    /// balancing may listen on it: the operator refuses one that does.
    #[arg(long, env = "GRPC_BALANCER_PROXY_ADMIN_PORT", default_value_t = grpc_balancer_crds::config::DEFAULT_ADMIN_PORT,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub proxy_admin_port: u16,

    /// Honour the `grpcbalancer.io/proxy-image` pod annotation.
    #[arg(long, env = "GRPC_BALANCER_PROXY_ALLOW_IMAGE_OVERRIDE")]
    pub proxy_allow_image_override: bool,

    #[arg(long, env = "GRPC_BALANCER_PROXY_CPU_REQUEST", default_value = "10m")]
    pub proxy_cpu_request: Option<Quantity>,
    /// No CPU limit by default: CFS throttling shows up as tail latency on
    /// every call through the proxy.
    #[arg(long, env = "GRPC_BALANCER_PROXY_CPU_LIMIT")]
    pub proxy_cpu_limit: Option<Quantity>,
    #[arg(
        long,
        env = "GRPC_BALANCER_PROXY_MEMORY_REQUEST",
        default_value = "32Mi"
    )]
    pub proxy_memory_request: Option<Quantity>,
    #[arg(
        long,
        env = "GRPC_BALANCER_PROXY_MEMORY_LIMIT",
        default_value = "128Mi"
    )]
    pub proxy_memory_limit: Option<Quantity>,

    /// Largest CPU request/limit a pod annotation may ask for.
    #[arg(long, env = "GRPC_BALANCER_PROXY_MAX_CPU", default_value = "2")]
    pub proxy_max_cpu: Quantity,
    /// Largest memory request/limit a pod annotation may ask for.
    #[arg(long, env = "GRPC_BALANCER_PROXY_MAX_MEMORY", default_value = "1Gi")]
    pub proxy_max_memory: Quantity,

    /// Who may read the proxy's `/config` and `/endpoints` (the namespace's
    /// balancings and backend addresses): `loopback` peers only
    /// (`kubectl port-forward`), or `any` pod. Probes and `/metrics` answer
    /// everyone either way.
    #[arg(long, env = "GRPC_BALANCER_PROXY_ADMIN_DEBUG", value_enum, default_value_t = AdminDebugArg::Loopback)]
    pub proxy_admin_debug: AdminDebugArg,

    /// The operator's push discovery server as the injected proxies reach
    /// it (`host:port`, the host on the webhook's certificate, e.g.
    /// `grpc-balancer-webhook.grpc-balancer.svc:15012`). Set: proxies get a
    /// projected ServiceAccount token for it and the webhook's CA. Unset:
    /// they follow the ConfigMap and DNS only.
    #[arg(long, env = "GRPC_BALANCER_PROXY_DISCOVERY_ADDRESS")]
    pub proxy_discovery_address: Option<String>,

    /// Log level of the proxy (`GRPC_BALANCER_LOG`), overridable per pod.
    #[arg(long, env = "GRPC_BALANCER_PROXY_LOG_LEVEL", value_enum, default_value_t = LogLevel::Info)]
    pub proxy_log_level: LogLevel,

    /// Legacy sidecar mode: how long the proxy keeps serving after the pod is
    /// told to stop, so the app's last calls still go through.
    #[arg(long, env = "GRPC_BALANCER_PROXY_DRAIN_DELAY", default_value = "5s", value_parser = humantime::parse_duration)]
    pub proxy_drain_delay: Duration,

    /// How long the proxy may take to become ready: the native sidecar's
    /// startup-probe allowance, or the legacy `postStart` wait.
    #[arg(long, env = "GRPC_BALANCER_PROXY_READY_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub proxy_ready_timeout: Duration,
}

/// Image injected unless `--proxy-image` says otherwise.
pub const DEFAULT_PROXY_IMAGE: &str = concat!(
    "ghcr.io/grpc-balancer/grpc-balancer-proxy:",
    env!("CARGO_PKG_VERSION")
);

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not key=value")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CertSource {
    /// A CA and serving certificate generated on first start, kept in a Secret.
    SelfSigned,
    /// Files mounted from a cert-manager Secret; cert-manager's cainjector
    /// fills the `caBundle`.
    CertManager,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailurePolicy {
    #[value(name = "Ignore")]
    Ignore,
    #[value(name = "Fail")]
    Fail,
}

impl FailurePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Ignore => "Ignore",
            FailurePolicy::Fail => "Fail",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AdminDebugArg {
    Loopback,
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SidecarModeArg {
    Auto,
    Native,
    Legacy,
}

/// Parses [`Args`] on their own (tests, benches, a standalone server).
#[derive(Debug, Parser)]
pub struct StandaloneArgs {
    #[command(flatten)]
    pub webhook: Args,
}

impl Args {
    /// Every flag at its default (environment fallbacks still apply).
    pub fn defaults() -> Result<Args, clap::Error> {
        StandaloneArgs::try_parse_from(["grpc-balancer-webhook"]).map(|a| a.webhook)
    }

    /// The proxy settings these flags describe, for a cluster whose sidecar
    /// mode is already known.
    pub fn proxy_settings(&self, mode: SidecarMode) -> ProxySettings {
        let pull_policy = Some(self.proxy_image_pull_policy.clone()).filter(|p| !p.is_empty());
        ProxySettings {
            image: self.proxy_image.clone(),
            image_pull_policy: pull_policy,
            allow_image_override: self.proxy_allow_image_override,
            resources: ProxyResources {
                cpu_request: self.proxy_cpu_request.clone(),
                cpu_limit: self.proxy_cpu_limit.clone(),
                memory_request: self.proxy_memory_request.clone(),
                memory_limit: self.proxy_memory_limit.clone(),
            },
            max_cpu: self.proxy_max_cpu.clone(),
            max_memory: self.proxy_max_memory.clone(),
            log_level: self.proxy_log_level,
            mode,
            drain_delay: self.proxy_drain_delay,
            ready_timeout: self.proxy_ready_timeout,
            admin_port: self.proxy_admin_port,
            admin_debug_from_any: self.proxy_admin_debug == AdminDebugArg::Any,
            discovery_address: self
                .proxy_discovery_address
                .clone()
                .filter(|a| !a.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let args = Args::defaults().expect("the defaults parse");
        let settings = args.proxy_settings(SidecarMode::Native);
        assert_eq!(settings.image, DEFAULT_PROXY_IMAGE);
        assert!(settings.resources.cpu_limit.is_none());
        assert_eq!(args.webhook_failure_policy, FailurePolicy::Ignore);
        assert!(!settings.admin_debug_from_any);
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [
            ["--proxy-max-cpu", "lots"],
            ["--webhook-listen", "nowhere"],
            ["--proxy-drain-delay", "soon"],
            ["--webhook-timeout-seconds", "99"],
            ["--proxy-admin-port", "0"],
            ["--proxy-admin-port", "65536"],
        ] {
            let argv = std::iter::once("x").chain(bad);
            assert!(StandaloneArgs::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }
}
