//! The greeter backend: start it, observe it, make it misbehave, stop it.

mod connection;
mod counters;
mod echo;
mod options;
mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

pub use connection::ConnectionHandle;
pub use counters::CallCounts;
pub use options::{BackendOptions, DEFAULT_MAX_MESSAGE_BYTES, Faults};
pub use service::ReplyStream;

use connection::ConnectionRegistry;
use counters::Counters;
use echo::EchoLayer;
use service::{BackendState, GreeterService};

use crate::pb::greeter_server::GreeterServer;

/// The gRPC service name the health service reports for.
pub const SERVICE_NAME: &str = "greeter.v1.Greeter";

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot use the given listener")]
    Listener(#[source] std::io::Error),
    #[error("the greeter server failed")]
    Serve(#[source] tonic::transport::Error),
    #[error("the greeter server task ended abnormally")]
    Task(#[source] tokio::task::JoinError),
    /// Calls were still in flight (or peers kept their connections open) when
    /// the drain time was over; the backend was then stopped abruptly.
    #[error("the greeter server did not finish within {timeout:?}")]
    ShutdownTimeout {
        timeout: Duration,
        counts: CallCounts,
    },
}

/// A greeter backend serving on a local address. Dropping it stops it at once
/// and closes its connections.
#[derive(Debug)]
pub struct RunningBackend {
    addr: SocketAddr,
    state: Arc<BackendState>,
    connections: Arc<ConnectionRegistry>,
    health: HealthReporter,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

/// Binds `addr` (port 0 picks a free port) and serves the greeter on it.
pub async fn spawn_server(
    addr: SocketAddr,
    options: BackendOptions,
) -> Result<RunningBackend, BackendError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| BackendError::Bind { addr, source })?;
    serve(listener, options).await
}

/// Serves the greeter on a listener bound by the caller (e.g. a test that
/// reserved an address before publishing it).
pub async fn serve_listener(
    listener: std::net::TcpListener,
    options: BackendOptions,
) -> Result<RunningBackend, BackendError> {
    listener
        .set_nonblocking(true)
        .map_err(BackendError::Listener)?;
    let listener = TcpListener::from_std(listener).map_err(BackendError::Listener)?;
    serve(listener, options).await
}

async fn serve(
    listener: TcpListener,
    options: BackendOptions,
) -> Result<RunningBackend, BackendError> {
    let addr = listener.local_addr().map_err(BackendError::Listener)?;
    let state = Arc::new(BackendState {
        name: options.name,
        version: options.version,
        max_message_bytes: options.max_message_bytes,
        counters: Counters::default(),
        faults: ArcSwap::from_pointee(options.faults),
    });
    let greeter = GreeterServer::new(GreeterService {
        state: Arc::clone(&state),
    })
    .max_decoding_message_size(options.max_message_bytes)
    .max_encoding_message_size(options.max_message_bytes);

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(SERVICE_NAME, ServingStatus::Serving)
        .await;
    health.set_service_status("", ServingStatus::Serving).await;

    let mut builder = Server::builder();
    if let Some(age) = options.max_connection_age {
        builder = builder.max_connection_age(age);
    }
    let router = builder
        .layer(EchoLayer {
            enabled: options.echo_metadata,
        })
        .add_service(health_service)
        .add_service(greeter);

    let connections = Arc::new(ConnectionRegistry::default());
    let incoming = connection::incoming(listener, Arc::clone(&connections));
    let (shutdown, shutdown_signal) = oneshot::channel::<()>();
    let name = state.name.clone();
    let task = tokio::spawn(async move {
        tracing::debug!(%addr, backend = %name, "greeter serving");
        router
            .serve_with_incoming_shutdown(incoming, async {
                // A dropped sender also means: stop.
                let _ = shutdown_signal.await;
            })
            .await
    });
    Ok(RunningBackend {
        addr,
        state,
        connections,
        health,
        shutdown: Some(shutdown),
        task: Some(task),
    })
}

impl RunningBackend {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name it puts in its replies.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Calls received so far.
    pub fn counts(&self) -> CallCounts {
        self.state.counters.snapshot()
    }

    /// Starts counting from zero.
    pub fn reset_counts(&self) {
        self.state.counters.reset();
    }

    /// Faults for the calls that start from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.state.faults.store(Arc::new(faults));
    }

    /// What `grpc.health.v1` answers, for the greeter service and for the server
    /// as a whole (the empty service name).
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.health.set_service_status(SERVICE_NAME, status).await;
        self.health.set_service_status("", status).await;
    }

    /// Closes every open connection abruptly (no GOAWAY), as a crash would; the
    /// backend keeps accepting new ones. Returns how many were closed.
    pub fn close_connections(&self) -> usize {
        self.connections.close_all()
    }

    /// Graceful shutdown: stops accepting, sends GOAWAY on every connection, lets
    /// the calls in flight finish, and waits up to `timeout` for all that.
    pub async fn shutdown(mut self, timeout: Duration) -> Result<CallCounts, BackendError> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.as_mut() {
            let finished = tokio::time::timeout(timeout, task).await.map_err(|_| {
                BackendError::ShutdownTimeout {
                    timeout,
                    counts: self.counts(),
                }
            })?;
            self.task = None;
            finished
                .map_err(BackendError::Task)?
                .map_err(BackendError::Serve)?;
        }
        Ok(self.counts())
    }

    /// Stops at once: the listener and every connection close without GOAWAY.
    pub fn kill(self) -> CallCounts {
        self.counts()
        // Drop does the rest.
    }
}

impl Drop for RunningBackend {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.connections.close_all();
    }
}
