//! A load client that counts which backend answered each call.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::codes::code_name;
use crate::pb::greeter_client::GreeterClient;
use crate::pb::{HelloReply, HelloRequest};
use crate::server::DEFAULT_MAX_MESSAGE_BYTES;

/// Which RPC each call makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `SayHello`.
    Unary,
    /// `SayHelloStream`, asking for `messages_per_call` replies.
    Stream,
    /// `Chat`, sending `messages_per_call` requests.
    Bidi,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "unary" => Ok(Self::Unary),
            "stream" => Ok(Self::Stream),
            "bidi" => Ok(Self::Bidi),
            other => Err(format!(
                "mode: {other:?} is not valid: expected unary, stream or bidi"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `host:port` or an `http://` URI.
    pub target: String,
    pub calls: u64,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// HTTP/2 connections the calls are spread over.
    pub connections: usize,
    pub mode: Mode,
    /// Replies per `Stream` call, requests per `Bidi` call.
    pub messages_per_call: u32,
    /// Metadata sent with every call.
    pub metadata: Vec<(String, String)>,
    /// Deadline of each call (sent as `grpc-timeout`).
    pub call_timeout: Option<Duration>,
}

impl LoadOptions {
    pub fn new(target: impl Into<String>, calls: u64) -> Self {
        Self {
            target: target.into(),
            calls,
            concurrency: 1,
            connections: 1,
            mode: Mode::Unary,
            messages_per_call: 10,
            metadata: Vec::new(),
            call_timeout: None,
        }
    }
}

/// What a load run saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoadReport {
    pub calls: u64,
    pub ok: u64,
    pub failed: u64,
    /// Successful calls per backend name.
    pub by_backend: BTreeMap<String, u64>,
    /// Failed calls per status code name.
    pub failures: BTreeMap<String, u64>,
    /// One message per distinct failure (code and message), for diagnosis.
    pub failure_messages: BTreeMap<String, u64>,
    /// Streaming calls whose replies came from more than one backend (a stream
    /// must stay on one backend: anything but 0 is a bug).
    pub split_streams: u64,
    pub elapsed_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("target: {0:?} is not a valid address")]
    Target(String, #[source] tonic::transport::Error),
    #[error("cannot connect to {0}")]
    Connect(String, #[source] tonic::transport::Error),
    #[error("metadata: {0:?} is not a valid gRPC metadata entry")]
    Metadata(String),
    #[error("concurrency and connections must be at least 1")]
    ZeroConcurrency,
    #[error("the rate and the report window must be above 0")]
    ZeroRate,
}

fn endpoint(target: &str) -> Result<Endpoint, ClientError> {
    let uri = if target.contains("://") {
        target.to_owned()
    } else {
        format!("http://{target}")
    };
    Endpoint::from_shared(uri)
        .map(|endpoint| endpoint.tcp_nodelay(true))
        .map_err(|error| ClientError::Target(target.to_owned(), error))
}

/// Opens one HTTP/2 connection to `target` with large-message limits.
pub async fn connect(target: &str) -> Result<GreeterClient<Channel>, ClientError> {
    let channel = endpoint(target)?
        .connect()
        .await
        .map_err(|error| ClientError::Connect(target.to_owned(), error))?;
    Ok(GreeterClient::new(channel)
        .max_decoding_message_size(DEFAULT_MAX_MESSAGE_BYTES)
        .max_encoding_message_size(DEFAULT_MAX_MESSAGE_BYTES))
}

pub(crate) type Metadata = Arc<
    Vec<(
        MetadataKey<tonic::metadata::Ascii>,
        MetadataValue<tonic::metadata::Ascii>,
    )>,
>;

/// A failure as reports count it: its code's name and its message.
pub(crate) fn failure_message(status: &Status) -> String {
    format!("{}: {}", code_name(status.code()), status.message())
}

pub(crate) fn parse_metadata(entries: &[(String, String)]) -> Result<Metadata, ClientError> {
    entries
        .iter()
        .map(|(key, value)| {
            let bad = || ClientError::Metadata(format!("{key}={value}"));
            Ok((
                MetadataKey::from_str(key).map_err(|_| bad())?,
                MetadataValue::from_str(value).map_err(|_| bad())?,
            ))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Arc::new)
}

/// The outcome of one call: the backends that answered it, or its status.
pub(crate) type CallOutcome = Result<Vec<String>, Status>;

/// Makes `calls` calls, `concurrency` at a time, over `connections` connections.
pub async fn run_load(options: LoadOptions) -> Result<LoadReport, ClientError> {
    if options.concurrency == 0 || options.connections == 0 {
        return Err(ClientError::ZeroConcurrency);
    }
    let metadata = parse_metadata(&options.metadata)?;
    let mut clients = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        clients.push(connect(&options.target).await?);
    }
    let started = Instant::now();
    let next_call = Arc::new(AtomicU64::new(0));
    let (outcomes, mut outcome_receiver) = mpsc::channel::<CallOutcome>(1024);
    for worker in 0..options.concurrency {
        let client = clients[worker % clients.len()].clone();
        let next_call = Arc::clone(&next_call);
        let outcomes = outcomes.clone();
        let metadata = Arc::clone(&metadata);
        let options = options.clone();
        tokio::spawn(async move {
            while next_call.fetch_add(1, Ordering::Relaxed) < options.calls {
                let outcome = one_call(client.clone(), &options, &metadata).await;
                if outcomes.send(outcome).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(outcomes);

    let mut report = LoadReport::default();
    while let Some(outcome) = outcome_receiver.recv().await {
        report.calls += 1;
        match outcome {
            Ok(mut backends) => {
                report.ok += 1;
                backends.dedup();
                if backends.len() > 1 {
                    report.split_streams += 1;
                }
                for backend in backends {
                    *report.by_backend.entry(backend).or_default() += 1;
                }
            }
            Err(status) => {
                report.failed += 1;
                *report
                    .failures
                    .entry(code_name(status.code()).to_owned())
                    .or_default() += 1;
                *report
                    .failure_messages
                    .entry(failure_message(&status))
                    .or_default() += 1;
            }
        }
    }
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

fn request<T>(message: T, options: &LoadOptions, metadata: &Metadata) -> Request<T> {
    let mut request = Request::new(message);
    for (key, value) in metadata.iter() {
        request.metadata_mut().append(key.clone(), value.clone());
    }
    if let Some(timeout) = options.call_timeout {
        request.set_timeout(timeout);
    }
    request
}

fn hello(count: u32) -> HelloRequest {
    HelloRequest {
        name: "greeter-client".to_owned(),
        count,
        ..HelloRequest::default()
    }
}

pub(crate) async fn one_call(
    mut client: GreeterClient<Channel>,
    options: &LoadOptions,
    metadata: &Metadata,
) -> CallOutcome {
    let backend = |reply: HelloReply| reply.backend;
    match options.mode {
        Mode::Unary => {
            let reply = client
                .say_hello(request(hello(1), options, metadata))
                .await?;
            Ok(vec![backend(reply.into_inner())])
        }
        Mode::Stream => {
            let wanted = options.messages_per_call.max(1);
            let mut replies = client
                .say_hello_stream(request(hello(wanted), options, metadata))
                .await?
                .into_inner();
            let mut backends = Vec::new();
            while let Some(reply) = replies.message().await? {
                backends.push(backend(reply));
            }
            expect_count(backends, wanted)
        }
        Mode::Bidi => {
            let sent = options.messages_per_call.max(1);
            let requests = futures::stream::iter((0..sent).map(|_| hello(1)));
            let mut replies = client
                .chat(request(requests, options, metadata))
                .await?
                .into_inner();
            let mut backends = Vec::new();
            while let Some(reply) = replies.message().await? {
                backends.push(backend(reply));
            }
            expect_count(backends, sent)
        }
    }
}

fn expect_count(backends: Vec<String>, wanted: u32) -> CallOutcome {
    if backends.len() == wanted as usize {
        Ok(backends)
    } else {
        Err(Status::data_loss(format!(
            "expected {wanted} replies, got {}",
            backends.len()
        )))
    }
}
