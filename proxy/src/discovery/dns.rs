//! DNS discovery through hickory-resolver: /etc/resolv.conf and /etc/hosts
//! (or one given nameserver), every address of the name, re-resolved on an
//! interval and at once when a connection to an endpoint failed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::time::Instant;

use tokio::sync::Notify;

use super::{DiscoveryError, Update, UpdateStream};

/// Failures trigger re-resolution, but never more often than this.
const MIN_REFRESH_GAP: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct DnsResolver {
    resolver: Result<Arc<TokioResolver>, String>,
}

impl DnsResolver {
    pub fn new(dns_server: Option<SocketAddr>) -> Self {
        let builder = match dns_server {
            Some(server) => {
                let mut ns = NameServerConfig::udp_and_tcp(server.ip());
                for c in &mut ns.connections {
                    c.port = server.port();
                }
                Ok(TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    TokioRuntimeProvider::default(),
                ))
            }
            None => TokioResolver::builder_tokio().map_err(|e| e.to_string()),
        };
        let resolver = builder.and_then(|mut b| {
            let opts = b.options_mut();
            // Endpoint changes must show within one refresh interval, whatever
            // TTL the cluster DNS hands out.
            opts.positive_max_ttl = Some(Duration::ZERO);
            opts.negative_max_ttl = Some(Duration::ZERO);
            opts.timeout = Duration::from_secs(2);
            opts.attempts = 1;
            opts.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
            b.build().map(Arc::new).map_err(|e| e.to_string())
        });
        if let Err(e) = &resolver {
            tracing::warn!(error = %e, "DNS resolver unavailable; DNS discovery will report errors");
        }
        DnsResolver { resolver }
    }

    pub fn watch(
        &self,
        name: String,
        port: u16,
        interval: Duration,
        refresh_now: Arc<Notify>,
    ) -> UpdateStream {
        let resolver = self.resolver.clone();
        let state = (resolver, name, port, interval, refresh_now, None::<Instant>);
        Box::pin(futures::stream::unfold(
            state,
            |(resolver, name, port, interval, refresh_now, last)| async move {
                if let Some(last) = last {
                    tokio::select! {
                        () = tokio::time::sleep_until(last + interval) => {}
                        () = refresh_now.notified() => {
                            tokio::time::sleep_until(last + MIN_REFRESH_GAP).await;
                        }
                    }
                }
                let started = Instant::now();
                let result = match &resolver {
                    Ok(r) => resolve(r, &name, port).await,
                    Err(e) => Err(DiscoveryError::Resolver(e.clone())),
                };
                Some((
                    result,
                    (resolver, name, port, interval, refresh_now, Some(started)),
                ))
            },
        ))
    }
}

async fn resolve(
    resolver: &TokioResolver,
    name: &str,
    port: u16,
) -> Result<Update, DiscoveryError> {
    match resolver.lookup_ip(name).await {
        Ok(lookup) => {
            let mut addrs: Vec<SocketAddr> =
                lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
            addrs.sort();
            addrs.dedup();
            Ok(Update::Reset(addrs))
        }
        // A definite "no such name / no addresses" means the endpoints are
        // gone (a headless Service scaled to zero), not a failure to keep
        // the last answer for.
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Update::Reset(Vec::new())),
        Err(e) => Err(DiscoveryError::Resolve {
            name: name.to_owned(),
            message: e.to_string(),
        }),
    }
}
