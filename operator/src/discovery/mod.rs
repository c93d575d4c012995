//! Push discovery: every replica serves `grpcbalancer.discovery.v1` (see
//! `discovery-api/proto`), streaming each proxy its namespace's proxy
//! config and the endpoints of its subsets, snapshot first, then changes.
//!
//! - [`feed`] watches balancings and EndpointSlices and publishes into
//!   the [`hub`], which versions each namespace and fans changes out
//!   through bounded per-stream buffers;
//! - [`auth`] checks the proxies' projected ServiceAccount tokens
//!   (TokenReview, cached until expiry);
//! - [`server`] is the gRPC service over TLS.

pub mod auth;
pub mod feed;
pub mod hub;
pub mod server;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
pub use crate::settings::{DiscoverySettings, FeedSettings};

/// A discovery server bound and ready to run.
pub struct Discovery {
    pub local_addr: SocketAddr,
    pub hub: Arc<Hub>,
    listener: TcpListener,
}

pub use hub::Hub;

impl Discovery {
    pub async fn bind(listen: SocketAddr, epoch: String, buffer: usize) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        Ok(Discovery {
            local_addr: listener.local_addr()?,
            hub: Arc::new(Hub::new(epoch, buffer)),
            listener,
        })
    }

    /// Feeds and serves until `stop`; `tls: None` serves h2c (tests).
    pub async fn run(
        self,
        client: kube::Client,
        settings: DiscoverySettings,
        tls: Option<Arc<rustls::ServerConfig>>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let auth = Arc::new(auth::Authenticator::new(Arc::new(auth::KubeTokenReviews(
            client.clone(),
        ))));
        let service = server::DiscoveryService::new(
            self.hub.clone(),
            auth,
            settings.max_streams,
            metrics.discovery.clone(),
        );
        let feed = feed::run(
            client,
            settings.feed,
            self.hub.clone(),
            metrics,
            stop.clone(),
        );
        let served = server::serve(self.listener, tls, service, stop.clone());
        let close = {
            let hub = self.hub.clone();
            let stop = stop.clone();
            async move {
                stop.cancelled().await;
                hub.close_all();
            }
        };
        tracing::info!(listen = %self.local_addr, "serving push discovery");
        let (_, served, ()) = tokio::join!(feed, served, close);
        served.map_err(|e| anyhow::anyhow!("discovery server: {e}"))
    }
}
