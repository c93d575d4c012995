//! The `grpcbalancer.discovery.v1.Discovery` gRPC service: authenticate the
//! caller, hold it to its own namespace, then stream the hub's snapshot and
//! changes. Served over TLS with the webhook's certificate (the proxies
//! trust the CA the webhook hands them at injection).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::{Future as _, Stream};
use grpc_balancer_discovery_api::AUTHORIZATION;
use grpc_balancer_discovery_api::incoming::incoming;
use grpc_balancer_discovery_api::v1::discovery_server::{Discovery, DiscoveryServer};
use grpc_balancer_discovery_api::v1::{WatchRequest, WatchResponse};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::auth::{AuthError, Authenticator};
use super::hub::{Hub, StreamEnd, Subscription, unix_ms};
use crate::metrics::{DiscoveryMetrics, RefusalReason};

/// Largest request accepted (a WatchRequest is two short strings).
const MAX_REQUEST_BYTES: usize = 4 * 1024;
/// Longest a namespace name can be (a DNS label).
const MAX_NAMESPACE_LEN: usize = 63;
/// HTTP/2 streams per connection: a proxy needs one.
const MAX_STREAMS_PER_CONNECTION: u32 = 8;
/// Keepalive pings find dead peers (a node gone) without waiting for TCP.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct DiscoveryService {
    hub: Arc<Hub>,
    auth: Arc<Authenticator>,
    streams: Arc<Semaphore>,
    max_streams: usize,
    metrics: Arc<DiscoveryMetrics>,
}

impl DiscoveryService {
    /// At most `max_streams` streams at once; more are refused.
    pub fn new(
        hub: Arc<Hub>,
        auth: Arc<Authenticator>,
        max_streams: usize,
        metrics: Arc<DiscoveryMetrics>,
    ) -> Self {
        DiscoveryService {
            hub,
            auth,
            streams: Arc::new(Semaphore::new(max_streams)),
            max_streams,
            metrics,
        }
    }

    fn refuse(&self, reason: RefusalReason, status: Status) -> Status {
        self.metrics.refused(reason);
        tracing::debug!(
            ?reason,
            message = status.message(),
            "discovery stream refused"
        );
        status
    }
}

impl From<&AuthError> for RefusalReason {
    fn from(e: &AuthError) -> Self {
        match e {
            AuthError::Missing => RefusalReason::NoToken,
            AuthError::Malformed(_) => RefusalReason::Malformed,
            AuthError::Refused(_) | AuthError::NotServiceAccount(_) => RefusalReason::BadToken,
            AuthError::Unavailable(_) => RefusalReason::ReviewFailed,
        }
    }
}

#[tonic::async_trait]
impl Discovery for DiscoveryService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let header = request
            .metadata()
            .get(AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        let identity = match self.auth.authenticate(header.as_deref()).await {
            Ok(identity) => identity,
            Err(e) => {
                let status = match &e {
                    AuthError::Unavailable(_) => Status::unavailable(e.to_string()),
                    _ => Status::unauthenticated(e.to_string()),
                };
                return Err(self.refuse((&e).into(), status));
            }
        };
        let request = request.into_inner();
        if request.namespace.is_empty() || request.namespace.len() > MAX_NAMESPACE_LEN {
            return Err(self.refuse(
                RefusalReason::Malformed,
                Status::invalid_argument("namespace must be a namespace name (1 to 63 characters)"),
            ));
        }
        if request.namespace != identity.namespace {
            return Err(self.refuse(
                RefusalReason::OtherNamespace,
                Status::permission_denied(format!(
                    "the token is of namespace {:?}; it may watch that namespace only",
                    identity.namespace
                )),
            ));
        }
        let Ok(permit) = self.streams.clone().try_acquire_owned() else {
            return Err(self.refuse(
                RefusalReason::TooManyStreams,
                Status::resource_exhausted(format!(
                    "this server holds {} streams already; try another replica or later",
                    self.max_streams
                )),
            ));
        };
        self.hub.wait_ready().await;
        tracing::debug!(
            namespace = %identity.namespace,
            pod = identity.pod_name.as_deref().unwrap_or(&request.pod_name),
            "discovery stream opened"
        );
        self.metrics.streams.inc();
        let expires = identity.expires_at.map(|at| {
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            Box::pin(tokio::time::sleep(left))
        });
        Ok(Response::new(WatchStream {
            subscription: self.hub.subscribe(&identity.namespace),
            metrics: self.metrics.clone(),
            expires,
            expired: false,
            _permit: permit,
        }))
    }
}

/// A subscription as tonic streams it; counts itself in the metrics.
pub struct WatchStream {
    subscription: Subscription,
    metrics: Arc<DiscoveryMetrics>,
    /// The token's expiry: the stream ends then, and the proxy comes back
    /// with its renewed token.
    expires: Option<Pin<Box<Sleep>>>,
    expired: bool,
    _permit: OwnedSemaphorePermit,
}

impl Stream for WatchStream {
    type Item = Result<WatchResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if let Some(expires) = &mut self.expires
            && expires.as_mut().poll(cx).is_ready()
        {
            self.expires = None;
            self.expired = true;
            return Poll::Ready(Some(Err(Status::unauthenticated(
                "the token this stream was opened with has expired: reconnect with the current one",
            ))));
        }
        match Pin::new(&mut self.subscription).poll_next(cx) {
            Poll::Ready(Some(Ok(message))) => {
                if !message.snapshot {
                    let delay = unix_ms(SystemTime::now()) - message.observed_at_unix_ms;
                    self.metrics
                        .fanout
                        .observe(Duration::from_millis(delay.max(0).unsigned_abs()).as_secs_f64());
                }
                Poll::Ready(Some(Ok((*message).clone())))
            }
            // Counted when the hub dropped it, which may be long before a
            // reader that stopped reading gets here.
            Poll::Ready(Some(Err(end @ StreamEnd::TooSlow(_)))) => {
                Poll::Ready(Some(Err(Status::resource_exhausted(end.to_string()))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.metrics.streams.dec();
    }
}

/// Serves the discovery service on `listener` until `stop`. `tls`: the
/// server config (the webhook's certificate); `None` serves plaintext h2c
/// (tests of the service alone, never the chart).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    service: DiscoveryService,
    stop: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .tcp_nodelay(true)
        .add_service(DiscoveryServer::new(service).max_decoding_message_size(MAX_REQUEST_BYTES));
    let connections = incoming(listener, tls, stop.clone());
    router
        .serve_with_incoming_shutdown(connections, stop.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;

    use super::*;

    #[tokio::test]
    async fn a_stream_ends_unauthenticated_when_its_token_expires() {
        let hub = Hub::new("e".into(), 4);
        let permit = Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .expect("a free permit");
        let mut stream = WatchStream {
            subscription: hub.subscribe("a"),
            metrics: Arc::new(DiscoveryMetrics::new()),
            expires: Some(Box::pin(tokio::time::sleep(Duration::from_millis(200)))),
            expired: false,
            _permit: permit,
        };
        let first = stream.next().await.expect("an item").expect("the snapshot");
        assert!(first.snapshot);
        let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("the stream ends in time")
            .expect("an item")
            .expect_err("an error status");
        assert_eq!(end.code(), tonic::Code::Unauthenticated, "{end:?}");
        assert!(end.message().contains("expired"), "{end:?}");
        assert!(stream.next().await.is_none());
    }
}
