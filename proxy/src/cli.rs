//! Command line: run with a config file, run a one-balancing config from
//! flags, or check a config file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use grpc_balancer_crds::config::{
    self, Balancing, Discovery, DnsDiscovery, OutlierDetection, Policy, PolicyKind, ProxyConfig,
    Queue, Retries, Subset,
};

use crate::admin::DebugAccess;
use crate::app::{ConfigSource, Settings};
use crate::discovery::push::{CaSource, PushSettings};
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "grpc-balancer-proxy",
    version,
    about = "Per-request gRPC load-balancing proxy"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config file and print every error with its field path.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Wait until the proxy's admin server says it is ready (a postStart hook
    /// where the cluster has no native sidecars).
    WaitReady {
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Sleep, then exit 0 (a preStop hook that keeps the proxy up while the
    /// app finishes its last calls, where the cluster has no native sidecars).
    Sleep {
        #[arg(value_parser = humantime::parse_duration)]
        duration: Duration,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Config file (watched; a missing file means no balancings yet).
    #[arg(long, conflicts_with_all = ["listen", "endpoint"])]
    pub config: Option<PathBuf>,
    /// Listener of a one-balancing config (with --endpoint).
    #[arg(long, requires = "endpoint")]
    pub listen: Option<SocketAddr>,
    /// Backend as ip:port, or host:port resolved to all its addresses and
    /// re-resolved. Repeat for more.
    #[arg(long, requires = "listen")]
    pub endpoint: Vec<String>,
    /// Policy of the one-balancing config.
    #[arg(long, default_value = "peak_ewma")]
    pub policy: PolicyKind,
    /// Request header ring_hash hashes.
    #[arg(long)]
    pub hash_header: Option<String>,
    /// Admin server (/live, /ready, /metrics, /config, /endpoints).
    /// `[::]:PORT` listens on IPv6 and IPv4 (IPv4 only where the kernel has
    /// no IPv6).
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,
    /// Who may read /config and /endpoints: `loopback` peers only, or `any`.
    /// /live, /ready and /metrics answer everyone.
    #[arg(long, value_enum, default_value = "loopback")]
    pub admin_debug: DebugAccess,
    /// HTTP/2 ping to an endpoint after this long without a frame from it,
    /// only while calls are open on the connection; 0s: no pings. gRPC
    /// servers allow one per 5 minutes by default.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub upstream_ping_interval: Duration,
    /// How long such a ping may go unanswered before the connection closes.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub upstream_ping_timeout: Duration,
    /// DNS server (ip:port) used instead of /etc/resolv.conf's.
    #[arg(long)]
    pub dns_server: Option<SocketAddr>,
    /// How long calls in flight may take to finish on shutdown.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Worker threads (1 = a single-threaded runtime, enough for a sidecar).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// The operator's push discovery server (host:port, gRPC over TLS).
    /// While its stream is up, its config and endpoints win over the file
    /// and DNS, which take over while it is down.
    #[arg(long, env = "GRPC_BALANCER_DISCOVERY_ADDRESS", requires_all = ["discovery_token_file", "pod_namespace"])]
    pub discovery_address: Option<String>,
    /// The name on the discovery server's certificate (default: the host
    /// of --discovery-address).
    #[arg(long, env = "GRPC_BALANCER_DISCOVERY_SERVER_NAME")]
    pub discovery_server_name: Option<String>,
    /// PEM file of the CA that signed the discovery server's certificate.
    #[arg(
        long,
        env = "GRPC_BALANCER_DISCOVERY_CA_FILE",
        conflicts_with = "discovery_ca"
    )]
    pub discovery_ca_file: Option<PathBuf>,
    /// The same CA as PEM text (what the webhook injects).
    #[arg(long, env = "GRPC_BALANCER_DISCOVERY_CA", hide_env_values = true)]
    pub discovery_ca: Option<String>,
    /// The projected ServiceAccount token presented to the discovery server.
    #[arg(long, env = "GRPC_BALANCER_DISCOVERY_TOKEN_FILE")]
    pub discovery_token_file: Option<PathBuf>,
    /// This pod's namespace: the one whose balancings are streamed.
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// This pod's name (for the server's logs).
    #[arg(long, env = "POD_NAME", default_value = "")]
    pub pod_name: String,
    /// A port the pod's own containers listen on (repeatable): a balancing
    /// standing in for a Service on it is not started (the webhook passes
    /// the pod's declared container ports).
    #[arg(long = "app-port")]
    pub app_ports: Vec<u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("give --config FILE, or --listen ADDR with --endpoint HOST:PORT")]
    NothingToRun,
    #[error(
        "--endpoint {0:?} is not host:port (an IPv6 address goes in brackets: [fd00::1]:50051)"
    )]
    BadEndpoint(String),
    #[error("{0}")]
    Invalid(config::ConfigError),
}

impl RunArgs {
    pub fn settings(&self) -> Result<Settings, CliError> {
        let source = match (&self.config, self.listen) {
            (Some(path), _) => ConfigSource::File(path.clone()),
            (None, Some(listen)) => ConfigSource::Fixed(self.flags_config(listen)?),
            (None, None) => return Err(CliError::NothingToRun),
        };
        let mut s = Settings::new(source);
        s.admin = self.admin;
        s.admin_debug = self.admin_debug;
        s.connect.ping_interval = Some(self.upstream_ping_interval).filter(|d| !d.is_zero());
        s.connect.ping_timeout = self.upstream_ping_timeout;
        s.dns_server = self.dns_server;
        s.drain_timeout = self.drain_timeout;
        s.push = self.push_settings();
        s.app_ports = self.app_ports.clone();
        Ok(s)
    }

    fn push_settings(&self) -> Option<PushSettings> {
        let address = self.discovery_address.clone()?;
        let host = address
            .rsplit_once(':')
            .map_or(address.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Some(PushSettings {
            server_name: self.discovery_server_name.clone().unwrap_or(host),
            address,
            ca: match (&self.discovery_ca, &self.discovery_ca_file) {
                (Some(pem), _) => CaSource::Pem(pem.clone()),
                (None, Some(file)) => CaSource::File(file.clone()),
                (None, None) => return None,
            },
            token_file: self.discovery_token_file.clone()?,
            namespace: self.pod_namespace.clone()?,
            pod_name: self.pod_name.clone(),
        })
    }

    /// One balancing: literal addresses form one static subset; each DNS
    /// name its own subset (weight 1 per name; the static subset weighs as
    /// many addresses as it lists).
    fn flags_config(&self, listen: SocketAddr) -> Result<ProxyConfig, CliError> {
        let mut statics = Vec::new();
        let mut subsets = Vec::new();
        for e in &self.endpoint {
            if e.parse::<SocketAddr>().is_ok() {
                statics.push(e.clone());
                continue;
            }
            let (host, port) = e
                .rsplit_once(':')
                .filter(|(host, _)| !host.is_empty() && !host.contains(':'))
                .ok_or_else(|| CliError::BadEndpoint(e.clone()))?;
            let port: u16 = port.parse().map_err(|_| CliError::BadEndpoint(e.clone()))?;
            subsets.push(Subset {
                name: format!("dns-{}", subsets.len()),
                weight: 1,
                discovery: Discovery::dns(DnsDiscovery {
                    name: host.to_owned(),
                    port,
                    refresh_interval: config::Duration::from_secs(5),
                }),
            });
        }
        if !statics.is_empty() {
            subsets.insert(
                0,
                Subset {
                    name: "static".into(),
                    weight: statics.len() as u32,
                    discovery: Discovery::static_list(statics),
                },
            );
        }
        let config = ProxyConfig {
            balancings: vec![Balancing {
                name: "default".into(),
                listen: listen.to_string(),
                policy: Policy {
                    kind: self.policy,
                    header: self.hash_header.clone(),
                },
                subsets,
                timeout: None,
                retries: Retries::default(),
                outlier_detection: OutlierDetection::default(),
                health_check: None,
                queue: Queue::default(),
                service: None,
            }],
        };
        let errors = config::validate(&config);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(CliError::Invalid(config::ConfigError { errors }))
        }
    }
}

/// `check --config FILE`: the report to print and whether the file is valid.
pub fn check(path: &std::path::Path) -> (String, bool) {
    let text = match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => {
                return (
                    format!("{}: the file is not UTF-8 text\n", path.display()),
                    false,
                );
            }
        },
        Err(e) => return (format!("{}: cannot read: {e}\n", path.display()), false),
    };
    match config::parse_yaml(&text) {
        Ok(c) => (
            format!(
                "{}: valid, {} balancing(s)\n",
                path.display(),
                c.balancings.len()
            ),
            true,
        ),
        Err(e) => {
            let mut out = String::new();
            for err in &e.errors {
                out.push_str(&format!("{}: {err}\n", path.display()));
            }
            (out, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn settings(args: &[&str]) -> Result<Settings, CliError> {
        let cli =
            Cli::try_parse_from(std::iter::once("grpc-balancer-proxy").chain(args.iter().copied()))
                .expect("flags parse");
        cli.run.settings()
    }

    #[test]
    fn ipv6_listeners_and_endpoints_on_the_command_line() {
        let s = settings(&[
            "--listen",
            "[::1]:15001",
            "--endpoint",
            "[fd00::1]:50051",
            "--endpoint",
            "greeter.local:50051",
            "--admin",
            "[::]:9901",
        ])
        .expect("valid");
        assert_eq!(s.admin, "[::]:9901".parse().expect("addr"));
        let ConfigSource::Fixed(c) = s.config else {
            panic!("a fixed config")
        };
        let b = &c.balancings[0];
        assert_eq!(b.listen, "[::1]:15001");
        assert_eq!(
            b.subsets[0].discovery.static_endpoints.as_deref(),
            Some(&["[fd00::1]:50051".to_owned()][..])
        );
        assert_eq!(
            b.subsets[1].discovery.dns.as_ref().map(|d| d.name.as_str()),
            Some("greeter.local")
        );
    }

    #[test]
    fn an_unbracketed_ipv6_endpoint_is_refused_with_a_hint() {
        for bad in ["fd00::1:50051", "::1", ":50051"] {
            let e = settings(&["--listen", "127.0.0.1:15001", "--endpoint", bad])
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(e.to_string().contains("brackets"), "{bad}: {e}");
        }
    }

    #[test]
    fn upstream_ping_flags() {
        let s =
            settings(&["--listen", "127.0.0.1:15001", "--endpoint", "127.0.0.1:1"]).expect("valid");
        assert_eq!(
            s.connect.ping_interval,
            Some(crate::transport::DEFAULT_PING_INTERVAL)
        );
        assert_eq!(s.admin_debug, DebugAccess::Loopback);
        let s = settings(&[
            "--listen",
            "127.0.0.1:15001",
            "--endpoint",
            "127.0.0.1:1",
            "--upstream-ping-interval",
            "0s",
            "--admin-debug",
            "any",
        ])
        .expect("valid");
        assert_eq!(s.connect.ping_interval, None);
        assert_eq!(s.admin_debug, DebugAccess::Any);
    }
}
