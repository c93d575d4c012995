//! The greeter service: replies that name the backend, with faults on demand.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::Stream;
use tokio::sync::mpsc;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status, Streaming};

use super::connection::ConnectionHandle;
use super::counters::{Counters, bump};
use super::options::Faults;
use crate::fault_headers;
use crate::pb::greeter_server::Greeter;
use crate::pb::{HelloReply, HelloRequest};

/// State shared by the service and the handle of the running backend.
#[derive(Debug)]
pub(crate) struct BackendState {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) max_message_bytes: usize,
    pub(crate) counters: Counters,
    pub(crate) faults: ArcSwap<Faults>,
}

#[derive(Debug, Clone)]
pub(crate) struct GreeterService {
    pub(crate) state: Arc<BackendState>,
}

pub type ReplyStream = Pin<Box<dyn Stream<Item = Result<HelloReply, Status>> + Send>>;

/// Replies buffered ahead of a slow reader before the producer waits.
const STREAM_BUFFER: usize = 16;

/// The faults that apply to one call: the backend's, overridden by metadata.
#[derive(Debug, Clone, Default)]
struct CallPlan {
    fail: Option<Status>,
    delay: Option<Duration>,
    interval: Option<Duration>,
    close_after: Option<u32>,
    connection: Option<ConnectionHandle>,
}

impl CallPlan {
    fn new<T>(request: &Request<T>, faults: &Faults) -> Result<Self, Status> {
        let metadata = request.metadata();
        let fail = match header_number::<i32>(metadata, fault_headers::FAIL_CODE)? {
            Some(code) => {
                let message = metadata
                    .get(fault_headers::FAIL_MESSAGE)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("failure requested by the caller");
                Some(Status::new(Code::from_i32(code), message))
            }
            None => faults
                .fail_with
                .as_ref()
                .map(|(code, message)| Status::new(*code, message.clone())),
        };
        let millis = |name| -> Result<Option<Duration>, Status> {
            Ok(header_number::<u64>(metadata, name)?.map(Duration::from_millis))
        };
        Ok(Self {
            fail,
            delay: millis(fault_headers::DELAY_MS)?.or(faults.delay),
            interval: millis(fault_headers::INTERVAL_MS)?.or(faults.reply_interval),
            close_after: header_number::<u32>(metadata, fault_headers::CLOSE_AFTER)?
                .or(faults.close_connection_after),
            connection: request.extensions().get::<ConnectionHandle>().cloned(),
        })
    }

    /// Waits, closes the connection or fails, as planned, before the first reply.
    async fn before_first_reply(&self) -> Result<(), Status> {
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        self.close_if_due(0);
        match &self.fail {
            Some(status) => Err(status.clone()),
            None => Ok(()),
        }
    }

    /// Closes the connection once `sent` replies went out, if so planned.
    fn close_if_due(&self, sent: u32) {
        if self.close_after == Some(sent)
            && let Some(connection) = &self.connection
        {
            tracing::info!(remote = %connection.remote_addr(), sent, "closing the connection mid-call");
            connection.close();
        }
    }

    /// Like [`Self::close_if_due`] for a stream: the replies already queued are
    /// first handed to the transport and given a moment to reach the wire, so
    /// the caller sees them before the connection dies.
    async fn close_stream_if_due(
        &self,
        sent: u32,
        replies: &mpsc::Sender<Result<HelloReply, Status>>,
    ) {
        if self.close_after != Some(sent) {
            return;
        }
        let deadline = tokio::time::Instant::now() + FLUSH_GRACE * 10;
        while replies.capacity() < replies.max_capacity() && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(FLUSH_GRACE).await;
        self.close_if_due(sent);
    }
}

/// Time given to queued replies to reach the socket before a planned close.
const FLUSH_GRACE: Duration = Duration::from_millis(50);

fn header_number<N: std::str::FromStr>(
    metadata: &MetadataMap,
    name: &str,
) -> Result<Option<N>, Status> {
    let Some(value) = metadata.get(name) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| Status::invalid_argument(format!("{name}: value is not a valid number")))
}

impl GreeterService {
    fn plan<T>(&self, request: &Request<T>) -> Result<CallPlan, Status> {
        CallPlan::new(request, &self.state.faults.load())
    }

    fn reply(&self, name: &str, sequence: u32) -> HelloReply {
        HelloReply {
            message: format!("Hello {name} from {}", self.state.name),
            backend: self.state.name.clone(),
            version: self.state.version.clone(),
            sequence,
            ..HelloReply::default()
        }
    }

    fn payload(&self, bytes: u32) -> Result<Vec<u8>, Status> {
        let bytes = bytes as usize;
        // The size comes from the caller: refuse what the codec would refuse anyway
        // before allocating it.
        if bytes > self.state.max_message_bytes.saturating_sub(1024) {
            return Err(Status::invalid_argument(format!(
                "reply_payload_bytes: {bytes} is not valid: above the {} byte message limit",
                self.state.max_message_bytes
            )));
        }
        Ok(vec![b'g'; bytes])
    }

    fn counted<T>(&self, result: Result<T, Status>) -> Result<T, Status> {
        self.state.counters.count(&result);
        result
    }

    async fn say_hello_inner(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let plan = self.plan(&request)?;
        plan.before_first_reply().await?;
        let hello = request.into_inner();
        let mut reply = self.reply(&hello.name, 0);
        reply.requests_received = 1;
        reply.payload_bytes_received = hello.payload.len() as u64;
        reply.payload = self.payload(hello.reply_payload_bytes)?;
        Ok(Response::new(reply))
    }

    /// Runs a stream's producer on its own task; the call ends with the
    /// producer's final result, counted when the stream finishes.
    fn spawn_stream<F, Fut>(&self, produce: F) -> ReplyStream
    where
        F: FnOnce(mpsc::Sender<Result<HelloReply, Status>>) -> Fut,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        let (sender, mut receiver) = mpsc::channel(STREAM_BUFFER);
        let producer = produce(sender.clone());
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            let result = producer.await;
            state.counters.count(&result);
            if let Err(status) = result {
                // The caller may be gone already; nothing to tell then.
                let _ = sender.send(Err(status)).await;
            }
        });
        Box::pin(futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)))
    }
}

#[tonic::async_trait]
impl Greeter for GreeterService {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        bump(&self.state.counters.say_hello);
        let result = self.say_hello_inner(request).await;
        self.counted(result)
    }

    type SayHelloStreamStream = ReplyStream;

    async fn say_hello_stream(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<ReplyStream>, Status> {
        bump(&self.state.counters.say_hello_stream);
        let plan = match self.plan(&request) {
            Ok(plan) => plan,
            Err(status) => return self.counted(Err(status)),
        };
        let hello = request.into_inner();
        let payload = self.payload(hello.reply_payload_bytes);
        let service = self.clone();
        let stream = self.spawn_stream(move |sender| async move {
            plan.before_first_reply().await?;
            let payload = payload?;
            for sequence in 0..hello.count.max(1) {
                if sequence > 0
                    && let Some(interval) = plan.interval
                {
                    tokio::time::sleep(interval).await;
                }
                let mut reply = service.reply(&hello.name, sequence);
                reply.requests_received = 1;
                reply.payload = payload.clone();
                if sender.send(Ok(reply)).await.is_err() {
                    return Err(Status::cancelled("the caller went away"));
                }
                plan.close_stream_if_due(sequence + 1, &sender).await;
            }
            Ok(())
        });
        Ok(Response::new(stream))
    }

    async fn collect_hellos(
        &self,
        request: Request<Streaming<HelloRequest>>,
    ) -> Result<Response<HelloReply>, Status> {
        bump(&self.state.counters.collect_hellos);
        let result = async {
            let plan = self.plan(&request)?;
            let mut requests = request.into_inner();
            let mut names = Vec::new();
            let mut received = 0u32;
            let mut payload_bytes = 0u64;
            let mut reply_payload_bytes = 0;
            while let Some(hello) = requests.message().await? {
                received += 1;
                payload_bytes += hello.payload.len() as u64;
                reply_payload_bytes = hello.reply_payload_bytes;
                names.push(hello.name);
            }
            plan.before_first_reply().await?;
            let mut reply = self.reply(&names.join(", "), 0);
            reply.requests_received = received;
            reply.payload_bytes_received = payload_bytes;
            reply.payload = self.payload(reply_payload_bytes)?;
            Ok(Response::new(reply))
        }
        .await;
        self.counted(result)
    }

    type ChatStream = ReplyStream;

    async fn chat(
        &self,
        request: Request<Streaming<HelloRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        bump(&self.state.counters.chat);
        let plan = match self.plan(&request) {
            Ok(plan) => plan,
            Err(status) => return self.counted(Err(status)),
        };
        let mut requests = request.into_inner();
        let service = self.clone();
        let stream = self.spawn_stream(move |sender| async move {
            plan.before_first_reply().await?;
            let mut sequence = 0u32;
            let mut payload_bytes = 0u64;
            while let Some(hello) = requests.message().await? {
                if sequence > 0
                    && let Some(interval) = plan.interval
                {
                    tokio::time::sleep(interval).await;
                }
                payload_bytes += hello.payload.len() as u64;
                let mut reply = service.reply(&hello.name, sequence);
                reply.requests_received = sequence + 1;
                reply.payload_bytes_received = payload_bytes;
                reply.payload = service.payload(hello.reply_payload_bytes)?;
                if sender.send(Ok(reply)).await.is_err() {
                    return Err(Status::cancelled("the caller went away"));
                }
                sequence += 1;
                plan.close_stream_if_due(sequence, &sender).await;
            }
            Ok(())
        });
        Ok(Response::new(stream))
    }
}
