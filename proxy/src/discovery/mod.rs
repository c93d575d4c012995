//! Endpoint discovery. A source yields [`Update`]s for one subset; DNS and
//! static lists are built in, and anything else (a push source streaming
//! EndpointSlices, a test double) implements [`Discover`].

pub mod dns;
pub mod push;
pub mod static_list;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use grpc_balancer_crds::config::{Discovery, DiscoverySource};
use tokio::sync::Notify;

/// A change of a subset's endpoint set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    Add(Vec<SocketAddr>),
    Remove(Vec<SocketAddr>),
    /// The complete set, replacing whatever was known.
    Reset(Vec<SocketAddr>),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DiscoveryError {
    #[error("resolving {name}: {message}")]
    Resolve { name: String, message: String },
    #[error("DNS resolver unavailable: {0}")]
    Resolver(String),
    #[error("{0}")]
    Invalid(String),
}

pub type UpdateStream = Pin<Box<dyn Stream<Item = Result<Update, DiscoveryError>> + Send>>;

/// What one subset asks discovery for.
pub struct Target {
    pub discovery: Discovery,
    /// Notified when a connection to an endpoint failed: resolve again now.
    pub refresh_now: Arc<Notify>,
}

pub trait Discover: Send + Sync + 'static {
    fn discover(&self, target: Target) -> UpdateStream;
}

/// DNS names through hickory-resolver, static lists as they are.
pub struct SystemDiscover {
    dns: dns::DnsResolver,
}

impl SystemDiscover {
    /// `dns_server` replaces the nameservers of /etc/resolv.conf.
    pub fn new(dns_server: Option<SocketAddr>) -> Self {
        SystemDiscover {
            dns: dns::DnsResolver::new(dns_server),
        }
    }
}

impl Discover for SystemDiscover {
    fn discover(&self, target: Target) -> UpdateStream {
        match target.discovery.source() {
            Some(DiscoverySource::Dns(d)) => self.dns.watch(
                d.name.clone(),
                d.port,
                d.refresh_interval.as_std(),
                target.refresh_now,
            ),
            Some(DiscoverySource::Static(addrs)) => static_list::watch(addrs),
            None => Box::pin(futures::stream::once(async {
                Err(DiscoveryError::Invalid(
                    "set exactly one of dns and static".into(),
                ))
            })),
        }
    }
}
