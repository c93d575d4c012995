//! Settings of the operator, and the command line that produces them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use grpc_balancer_webhook::{Serving, WebhookMetrics};

use crate::leader::LeaderSettings;
use crate::metrics::{ApiRequestCounter, Metrics};

/// Everything [`crate::run`] needs besides the client.
#[derive(Clone)]
pub struct Settings {
    /// Suffix of the headless Services' DNS names in the proxy config.
    pub cluster_domain: String,
    pub leader: LeaderSettings,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None`: not served.
    pub metrics_listen: Option<SocketAddr>,
    /// Watch and reconcile only this namespace; `None`: all namespaces.
    pub watch_namespace: Option<String>,
    /// The operator's metrics; its API request counter counts the client's
    /// requests when the client was built with [`crate::client_with_counter`].
    pub metrics: Arc<Metrics>,
    /// Admin port of the injected proxies: a balancing listening on it is
    /// refused (the proxy could not start).
    pub proxy_admin_port: u16,
    /// Whether the webhook this process serves answers; `/readyz` waits for
    /// it. `None`: no webhook in this process (tests of the controllers).
    pub webhook: Option<Serving>,
    /// The push discovery server; `None`: not served.
    pub discovery: Option<DiscoverySettings>,
}

/// Discovery streams one replica serves at most.
pub const DEFAULT_MAX_STREAMS: usize = 20_000;
/// Messages a discovery stream may have waiting before it counts as too slow.
pub const DEFAULT_STREAM_BUFFER: usize = 64;

/// Where and how push discovery is served.
#[derive(Debug, Clone)]
pub struct DiscoverySettings {
    pub listen: SocketAddr,
    pub feed: FeedSettings,
    pub max_streams: usize,
    pub stream_buffer: usize,
    /// Names this server instance in every message: versions of different
    /// epochs are not comparable.
    pub epoch: String,
}

/// What the discovery feed needs to render a namespace as the ConfigMap
/// renderer does.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    pub cluster_domain: String,
    pub proxy_admin_port: u16,
    pub watch_namespace: Option<String>,
}

/// Command-line flags of the operator (each with an environment fallback).
#[derive(Debug, Clone, clap::Args)]
pub struct OperatorArgs {
    /// Kubeconfig to use; default: in-cluster config, then `KUBECONFIG`,
    /// then `~/.kube/config`.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(
        long,
        env = "GRPC_BALANCER_METRICS_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_listen: SocketAddr,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub leader_election_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "GRPC_BALANCER_LEASE_NAME",
        default_value = "grpc-balancer-operator"
    )]
    pub leader_election_lease_name: String,
    /// How long the Lease stays valid without renewal (e.g. 15s): the
    /// longest a standby waits after the leader died.
    #[arg(long, env = "GRPC_BALANCER_LEASE_DURATION", default_value = "15s", value_parser = parse_lease_duration)]
    pub lease_duration: Duration,
    /// This replica's identity in the Lease; default: the hostname.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Reconcile only this namespace (default: all namespaces).
    #[arg(long, env = "GRPC_BALANCER_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Cluster DNS domain used in the headless Services' names.
    #[arg(
        long,
        env = "GRPC_BALANCER_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,
    /// Address of the push discovery gRPC server (TLS, the webhook's
    /// certificate), served by every replica.
    #[arg(
        long,
        env = "GRPC_BALANCER_DISCOVERY_LISTEN",
        default_value = "0.0.0.0:15012"
    )]
    pub discovery_listen: SocketAddr,
    /// Discovery streams one replica holds at most; more are refused.
    #[arg(long, env = "GRPC_BALANCER_DISCOVERY_MAX_STREAMS", default_value_t = DEFAULT_MAX_STREAMS)]
    pub discovery_max_streams: usize,
    /// Messages a discovery stream may have waiting; a proxy further
    /// behind is dropped and reconnects for a snapshot.
    #[arg(long, env = "GRPC_BALANCER_DISCOVERY_STREAM_BUFFER", default_value_t = DEFAULT_STREAM_BUFFER)]
    pub discovery_stream_buffer: usize,
}

fn parse_lease_duration(s: &str) -> Result<Duration, String> {
    let d = grpc_balancer_crds::config::Duration::parse(s)
        .map_err(|e| e.to_string())?
        .as_std();
    if d < Duration::from_secs(2) {
        return Err(format!("{s} is below the minimum lease duration of 2s"));
    }
    Ok(d)
}

impl OperatorArgs {
    /// The operator's settings; `webhook`'s metrics join the operator's
    /// registry, since both are served on the one `/metrics`.
    pub fn settings(
        &self,
        api_requests: ApiRequestCounter,
        webhook: &WebhookMetrics,
        proxy_admin_port: u16,
    ) -> Settings {
        let identity = self.pod_name.clone().unwrap_or_else(hostname);
        // A restarted replica keeps its name; its versions start over.
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let epoch = format!("{identity}-{started}");
        let mut metrics = Metrics::new(api_requests);
        webhook.register(&mut metrics.registry);
        Settings {
            cluster_domain: self.cluster_domain.clone(),
            leader: LeaderSettings {
                namespace: self.leader_election_namespace.clone(),
                lease_name: self.leader_election_lease_name.clone(),
                identity,
                lease_duration: self.lease_duration,
            },
            metrics_listen: Some(self.metrics_listen),
            watch_namespace: self.watch_namespace.clone(),
            metrics: Arc::new(metrics),
            proxy_admin_port,
            webhook: None,
            discovery: Some(DiscoverySettings {
                listen: self.discovery_listen,
                feed: FeedSettings {
                    cluster_domain: self.cluster_domain.clone(),
                    proxy_admin_port,
                    watch_namespace: self.watch_namespace.clone(),
                },
                max_streams: self.discovery_max_streams,
                stream_buffer: self.discovery_stream_buffer,
                epoch,
            }),
        }
    }
}

/// The hostname (the pod name in a Deployment); a fixed placeholder only
/// when the kernel does not tell, since the identity must not be empty.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("grpc-balancer-operator-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: OperatorArgs,
    }

    #[test]
    fn defaults_and_bad_lease_durations() {
        let cli = Cli::try_parse_from(["op", "--pod-name", "a"]).expect("defaults parse");
        assert_eq!(cli.args.lease_duration, Duration::from_secs(15));
        assert_eq!(cli.args.cluster_domain, "cluster.local");
        assert_eq!(
            cli.args.leader_election_lease_name,
            "grpc-balancer-operator"
        );
        assert_eq!(cli.args.metrics_listen.port(), 8080);
        for bad in ["1s", "fast", "-3s", ""] {
            assert!(
                Cli::try_parse_from(["op", "--lease-duration", bad]).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
