//! Load for the streaming benchmark: server-streaming message rate, bidi
//! ping-pong round trips, and 1 MiB messages each way.
//!
//! Every reply is checked (count, sequence, payload size) and the first gRPC
//! error or wrong reply ends the run with an error: a failure is never counted
//! as throughput.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use futures::SinkExt;
use futures::channel::mpsc;
use serde::Serialize;
use tokio::task::JoinSet;
use tonic::Status;
use tonic::transport::Channel;

use crate::client::{ClientError, connect};
use crate::pb::greeter_client::GreeterClient;
use crate::pb::{HelloReply, HelloRequest};

/// What the load does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamMode {
    /// SayHelloStream calls each asking for many small replies.
    ServerStream,
    /// Chat streams: one request, wait for its reply, the next request.
    PingPong,
    /// SayHelloStream calls whose replies carry large payloads.
    Download,
    /// CollectHellos calls whose requests carry large payloads.
    Upload,
}

impl StreamMode {
    pub fn name(self) -> &'static str {
        match self {
            StreamMode::ServerStream => "server-stream",
            StreamMode::PingPong => "ping-pong",
            StreamMode::Download => "download",
            StreamMode::Upload => "upload",
        }
    }
}

impl FromStr for StreamMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [
            StreamMode::ServerStream,
            StreamMode::PingPong,
            StreamMode::Download,
            StreamMode::Upload,
        ]
        .into_iter()
        .find(|mode| mode.name() == text)
        .ok_or_else(|| {
            format!("{text:?} is not a mode: expected server-stream, ping-pong, download or upload")
        })
    }
}

/// The load's shape.
#[derive(Debug, Clone)]
pub struct StreamLoad {
    pub target: String,
    pub mode: StreamMode,
    /// Calls (streams) in flight at once.
    pub concurrency: usize,
    /// HTTP/2 connections the calls are spread over.
    pub connections: usize,
    /// How long new calls (or ping-pong requests) are started; calls in
    /// flight then finish and are counted.
    pub duration: Duration,
    /// Messages per call: replies of a server-stream or download call,
    /// requests of an upload call.
    pub messages_per_call: u32,
    /// Payload bytes of each download reply or upload request.
    pub payload_bytes: u32,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamBenchError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("concurrency, connections and messages per call must be at least 1")]
    Zero,
    #[error("a call failed: {}: {}", crate::codes::code_name(.0.code()), .0.message())]
    Call(Status),
    #[error("a wrong reply: {0}")]
    WrongReply(String),
    #[error("a load task panicked or was cancelled: {0}")]
    Task(String),
}

impl From<Status> for StreamBenchError {
    fn from(status: Status) -> Self {
        StreamBenchError::Call(status)
    }
}

/// The result of a run, printed as JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamReport {
    pub mode: String,
    pub concurrency: usize,
    pub connections: usize,
    /// Calls that ended with status OK (all of them: a failure ends the run).
    pub calls: u64,
    /// Messages received (server-stream, ping-pong, download) or sent and
    /// acknowledged (upload).
    pub messages: u64,
    /// Payload bytes received (download) or acknowledged by the backend (upload).
    pub payload_bytes: u64,
    /// From the first call to the end of the last.
    pub elapsed_s: f64,
    pub messages_per_s: f64,
    /// Payload megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// Ping-pong round-trip latency in microseconds, from the sorted samples
    /// of every round trip (exact percentiles, no histogram buckets).
    pub round_trip_p50_us: Option<f64>,
    pub round_trip_p99_us: Option<f64>,
    pub round_trip_max_us: Option<f64>,
    /// Calls per backend, by the name in the replies.
    pub calls_by_backend: BTreeMap<String, u64>,
}

/// What one load task saw.
#[derive(Debug, Default)]
struct TaskTally {
    calls: u64,
    messages: u64,
    payload_bytes: u64,
    round_trips_us: Vec<u32>,
    calls_by_backend: BTreeMap<String, u64>,
}

impl TaskTally {
    fn call_done(&mut self, backend: &str) {
        self.calls += 1;
        if let Some(count) = self.calls_by_backend.get_mut(backend) {
            *count += 1;
        } else {
            self.calls_by_backend.insert(backend.to_owned(), 1);
        }
    }
}

/// Runs the load and reports what it measured, or the first failure.
pub async fn run_stream_load(load: StreamLoad) -> Result<StreamReport, StreamBenchError> {
    if load.concurrency == 0 || load.connections == 0 || load.messages_per_call == 0 {
        return Err(StreamBenchError::Zero);
    }
    let mut clients = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        clients.push(connect(&load.target).await?);
    }
    let started = Instant::now();
    let stop_at = started + load.duration;
    let mut tasks = JoinSet::new();
    for task in 0..load.concurrency {
        let client = clients[task % clients.len()].clone();
        let load = load.clone();
        tasks.spawn(async move {
            let mut tally = TaskTally::default();
            match load.mode {
                StreamMode::PingPong => ping_pong(client, stop_at, &mut tally).await?,
                _ => {
                    while Instant::now() < stop_at {
                        match load.mode {
                            StreamMode::ServerStream => {
                                server_stream(client.clone(), &load, 0, &mut tally).await?
                            }
                            StreamMode::Download => {
                                server_stream(client.clone(), &load, load.payload_bytes, &mut tally)
                                    .await?
                            }
                            StreamMode::Upload => upload(client.clone(), &load, &mut tally).await?,
                            StreamMode::PingPong => {}
                        }
                    }
                }
            }
            Ok::<_, StreamBenchError>(tally)
        });
    }
    let mut total = TaskTally::default();
    while let Some(joined) = tasks.join_next().await {
        let tally = joined.map_err(|error| StreamBenchError::Task(error.to_string()))??;
        total.calls += tally.calls;
        total.messages += tally.messages;
        total.payload_bytes += tally.payload_bytes;
        total.round_trips_us.extend(tally.round_trips_us);
        for (backend, calls) in tally.calls_by_backend {
            *total.calls_by_backend.entry(backend).or_default() += calls;
        }
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    total.round_trips_us.sort_unstable();
    let percentile = |q: f64| -> Option<f64> {
        let samples = &total.round_trips_us;
        let last = samples.len().checked_sub(1)?;
        // Nearest rank: the smallest sample with at least q of them at or below it.
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, last + 1) - 1;
        samples.get(rank).map(|&us| f64::from(us))
    };
    Ok(StreamReport {
        mode: load.mode.name().to_owned(),
        concurrency: load.concurrency,
        connections: load.connections,
        calls: total.calls,
        messages: total.messages,
        payload_bytes: total.payload_bytes,
        elapsed_s,
        messages_per_s: total.messages as f64 / elapsed_s,
        mb_per_s: total.payload_bytes as f64 / 1e6 / elapsed_s,
        round_trip_p50_us: percentile(0.50),
        round_trip_p99_us: percentile(0.99),
        round_trip_max_us: total.round_trips_us.last().map(|&us| f64::from(us)),
        calls_by_backend: total.calls_by_backend,
    })
}

fn wrong(what: String) -> StreamBenchError {
    StreamBenchError::WrongReply(what)
}

/// One SayHelloStream call: `messages_per_call` replies, in sequence, each
/// with `payload_bytes` of payload.
async fn server_stream(
    mut client: GreeterClient<Channel>,
    load: &StreamLoad,
    payload_bytes: u32,
    tally: &mut TaskTally,
) -> Result<(), StreamBenchError> {
    let request = HelloRequest {
        name: "greeter-bench".to_owned(),
        count: load.messages_per_call,
        reply_payload_bytes: payload_bytes,
        ..HelloRequest::default()
    };
    let mut replies = client.say_hello_stream(request).await?.into_inner();
    let mut received = 0u32;
    let mut backend = None;
    while let Some(reply) = replies.message().await? {
        check_reply(&reply, received, payload_bytes)?;
        received += 1;
        tally.messages += 1;
        tally.payload_bytes += reply.payload.len() as u64;
        backend.get_or_insert(reply.backend);
    }
    if received != load.messages_per_call {
        return Err(wrong(format!(
            "a stream ended after {received} of {} replies",
            load.messages_per_call
        )));
    }
    tally.call_done(backend.as_deref().unwrap_or_default());
    Ok(())
}

fn check_reply(
    reply: &HelloReply,
    sequence: u32,
    payload_bytes: u32,
) -> Result<(), StreamBenchError> {
    if reply.sequence != sequence {
        return Err(wrong(format!(
            "reply {sequence} of a stream carries sequence {}",
            reply.sequence
        )));
    }
    if reply.payload.len() != payload_bytes as usize {
        return Err(wrong(format!(
            "reply {sequence} carries {} payload bytes, {payload_bytes} asked",
            reply.payload.len()
        )));
    }
    if reply.backend.is_empty() {
        return Err(wrong(format!("reply {sequence} names no backend")));
    }
    Ok(())
}

/// One CollectHellos call: `messages_per_call` requests of `payload_bytes`
/// each; the reply must count every request and byte.
async fn upload(
    mut client: GreeterClient<Channel>,
    load: &StreamLoad,
    tally: &mut TaskTally,
) -> Result<(), StreamBenchError> {
    let hello = HelloRequest {
        name: "greeter-bench".to_owned(),
        payload: vec![b'u'; load.payload_bytes as usize],
        ..HelloRequest::default()
    };
    let requests = futures::stream::iter((0..load.messages_per_call).map(move |_| hello.clone()));
    let reply = client.collect_hellos(requests).await?.into_inner();
    let sent_bytes = u64::from(load.messages_per_call) * u64::from(load.payload_bytes);
    if reply.requests_received != load.messages_per_call
        || reply.payload_bytes_received != sent_bytes
    {
        return Err(wrong(format!(
            "the backend counted {} requests and {} bytes of {} and {sent_bytes} sent",
            reply.requests_received, reply.payload_bytes_received, load.messages_per_call
        )));
    }
    tally.messages += u64::from(reply.requests_received);
    tally.payload_bytes += reply.payload_bytes_received;
    tally.call_done(&reply.backend);
    Ok(())
}

/// One Chat stream kept open until `stop_at`: a request, its reply, the next.
async fn ping_pong(
    mut client: GreeterClient<Channel>,
    stop_at: Instant,
    tally: &mut TaskTally,
) -> Result<(), StreamBenchError> {
    let (mut requests, request_stream) = mpsc::channel::<HelloRequest>(1);
    let hello = HelloRequest {
        name: "greeter-bench".to_owned(),
        ..HelloRequest::default()
    };
    // The first request goes out before the call so the call's headers and
    // the first message leave together, as a client's first send does.
    let first_sent = Instant::now();
    requests
        .send(hello.clone())
        .await
        .map_err(|_| wrong("the request stream closed before the first request".to_owned()))?;
    let mut replies = client.chat(request_stream).await?.into_inner();
    let mut sent_at = first_sent;
    let mut sequence = 0u32;
    let mut backend = None;
    loop {
        let Some(reply) = replies.message().await? else {
            return Err(wrong(format!(
                "the stream ended after {sequence} replies, before the client closed it"
            )));
        };
        let round_trip = sent_at.elapsed();
        check_reply(&reply, sequence, 0)?;
        if reply.requests_received != sequence + 1 {
            return Err(wrong(format!(
                "reply {sequence} counts {} requests",
                reply.requests_received
            )));
        }
        tally
            .round_trips_us
            .push(u32::try_from(round_trip.as_micros()).unwrap_or(u32::MAX));
        tally.messages += 1;
        sequence += 1;
        backend.get_or_insert(reply.backend);
        if Instant::now() >= stop_at {
            break;
        }
        sent_at = Instant::now();
        requests
            .send(hello.clone())
            .await
            .map_err(|_| wrong("the request stream closed early".to_owned()))?;
    }
    // Half-close: the backend ends the call with OK once the requests end.
    requests.close_channel();
    if let Some(extra) = replies.message().await? {
        return Err(wrong(format!(
            "a reply (sequence {}) to no request",
            extra.sequence
        )));
    }
    tally.call_done(backend.as_deref().unwrap_or_default());
    Ok(())
}
