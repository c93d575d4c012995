//! One call through the proxy: deadline, endpoint choice, dispatch on the
//! endpoint's connection, retries of attempts that never reached a backend
//! (whether one may go again is decided in [`retry`]), and the response
//! streamed back.

pub mod retry;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::balancer::{Balancing, Pick};
use crate::endpoint::Endpoint;
use crate::endpoint::record::CallRecord;
use crate::error::ProxyError;
use crate::grpc_status::{self, Code};
use crate::metrics::RetryOutcome;
use crate::resilience::deadline;
use crate::transport::body::{RequestBody, ResponseBody};
use crate::transport::replay::{ReplayBody, ReplayControl};

use self::retry::AttemptFailure;
use crate::util::nanos_at;

/// Re-dispatches of a request a connection handed back unsent (it was
/// closing); these cost nothing, but must not loop forever.
const MAX_REDISPATCH: u32 = 8;

static GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// What the caller receives: the endpoint's answer streamed through a body
/// that settles the call's record, or the proxy's own trailers-only answer.
pub type CallResponse = Response<ResponseBody<CallRecord>>;

pub async fn proxy(b: Arc<Balancing>, req: Request<Incoming>) -> CallResponse {
    let started = Instant::now();
    let accepted_at = nanos_at(started);
    let caller_timeout = req.headers().get(&GRPC_TIMEOUT).and_then(deadline::parse);
    let timeout = match (b.timeout, caller_timeout) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    };
    let deadline_at = timeout.map(|t| started + t);
    // One timer per call, shared by the wait for the response head and the
    // response body.
    let mut deadline = deadline_at.map(|at| Box::pin(tokio::time::sleep_until(at)));
    let hash = b.hash_key(req.headers());

    let (mut parts, body) = req.into_parts();
    // The endpoint learns the proxy's deadline when it is the tighter one.
    if let (Some(t), Some(own)) = (timeout, b.timeout)
        && t == own
        && caller_timeout.is_none_or(|c| own < c)
    {
        parts.headers.insert(&GRPC_TIMEOUT, deadline::render(own));
    }
    let retries = b.retry.max_attempts > 1;
    let (body, replay) = if retries {
        let (body, control) = ReplayBody::new(body, b.retry.max_buffered_bytes);
        (RequestBody::Replayable(body), Some(control))
    } else {
        (RequestBody::Streamed(body), None)
    };
    // Headers for a replay after REFUSED_STREAM/GOAWAY, which consume the request.
    let retry_head = retries.then(|| RetryHead {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
    });
    let idempotent = b.retry.is_idempotent(parts.uri.path());
    b.budget.deposit();

    let mut req = Request::from_parts(parts, body);
    let mut attempt = 1;
    let mut redispatched = 0;
    let mut avoid: Option<Arc<Endpoint>> = None;
    loop {
        // The wait for a ready endpoint is boxed so its state does not
        // weigh on every call's future, which is moved into a task.
        let endpoint = match b.pick(hash, avoid.as_ref()) {
            Pick::Ready(e) => e,
            Pick::NotReady | Pick::NoEndpoints => {
                match Box::pin(b.pick_or_wait(hash, avoid.as_ref(), deadline_at)).await {
                    Ok(e) => e,
                    Err(e) => return local_answer(&b, e),
                }
            }
        };
        let Some(upstream) = endpoint.sender() else {
            // Lost its connection between the pick and now.
            redispatched += 1;
            if redispatched > MAX_REDISPATCH {
                return local_answer(&b, unavailable(&endpoint, "connection lost"));
            }
            avoid = Some(endpoint);
            continue;
        };
        let mut record = CallRecord::start(endpoint.clone(), accepted_at);
        let connection = upstream.connection_id();
        let mut sent = match upstream.send(req) {
            Ok(head) => AwaitingHead::new(head),
            Err(unsent) => {
                // The connection was closing (GOAWAY, failure) before the
                // request left: it can go elsewhere at no risk.
                endpoint.connection_closing(connection);
                record.not_sent();
                redispatched += 1;
                if redispatched > MAX_REDISPATCH {
                    return local_answer(&b, unavailable(&endpoint, "connection closing"));
                }
                req = *unsent;
                avoid = Some(endpoint);
                continue;
            }
        };
        let result = match &mut deadline {
            Some(sleep) => {
                let result = tokio::select! {
                    biased;
                    () = sleep.as_mut() => None,
                    r = &mut sent => Some(r),
                };
                // The endpoint knows the deadline too and may answer it at the
                // same moment (a tonic server says CANCELLED): once it has
                // passed, the caller hears DEADLINE_EXCEEDED whatever came in.
                match result {
                    Some(r) if deadline_at.is_none_or(|at| Instant::now() < at) => r,
                    _ => {
                        // The backend stops too: cancel the stream at once.
                        sent.cancel_now();
                        // Counted on the endpoint by the record, not again here.
                        record.set_status(Code::DEADLINE_EXCEEDED);
                        return ProxyError::DeadlineExceeded {
                            balancing: b.name().to_owned(),
                            after: started.elapsed(),
                        }
                        .into_response();
                    }
                }
            }
            None => (&mut sent).await,
        };
        match result {
            Ok(response) => {
                // A listed method the backend turned away without processing
                // it (trailers-only UNAVAILABLE) goes to another endpoint.
                if response.body().is_end_stream()
                    && grpc_status::status_of(response.headers()) == Some(Code::UNAVAILABLE)
                    && AttemptFailure::TurnedAway.retryable(idempotent)
                    && let Some(head) = &retry_head
                    && let Some(body) = retry_body(&b, replay.as_ref(), attempt)
                {
                    tracing::debug!(balancing = b.name(), endpoint = %endpoint.addr, attempt, "retrying an idempotent call the endpoint answered UNAVAILABLE");
                    // The attempt counts on its endpoint (and towards its ejection).
                    record.first_response();
                    record.set_status(Code::UNAVAILABLE);
                    drop(record);
                    req = head.request(body);
                    attempt += 1;
                    avoid = Some(endpoint);
                    continue;
                }
                if let Some(r) = &replay {
                    r.stop_buffering();
                }
                let (head, body) = response.into_parts();
                let deadline = deadline
                    .take()
                    .map(|sleep| (sleep, timeout.unwrap_or(Duration::ZERO)));
                let body = ResponseBody::upstream(body, record, &head.headers, deadline);
                return Response::from_parts(head, body);
            }
            Err(error) => {
                let failure = AttemptFailure::of(&error);
                let retry = if failure.retryable(idempotent) {
                    retry_body(&b, replay.as_ref(), attempt)
                        .and_then(|body| Some(retry_head.as_ref()?.request(body)))
                } else {
                    None
                };
                if let Some(next) = retry {
                    tracing::debug!(balancing = b.name(), endpoint = %endpoint.addr, error = %error, attempt, "retrying a call the endpoint did not answer");
                    if failure == AttemptFailure::NeverReached {
                        record.not_sent();
                    } else {
                        // It may have reached the backend: a failure there.
                        record.upstream_failed(Code::UNAVAILABLE);
                    }
                    req = next;
                    attempt += 1;
                    avoid = Some(endpoint);
                    continue;
                }
                let status = grpc_status::code_for_upstream_error(&error);
                record.upstream_failed(status);
                tracing::debug!(balancing = b.name(), endpoint = %endpoint.addr, error = %error, "call failed upstream");
                return local_answer(
                    &b,
                    ProxyError::Upstream {
                        endpoint: endpoint.addr,
                        code: status,
                        reason: error.to_string(),
                    },
                );
            }
        }
    }
}

/// How long a request whose caller went away may wait for its response head
/// before its stream is reset.
const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// The wait for an upstream response head. If the caller goes away first
/// (its connection closed, say, with a hundred calls in flight), the stream
/// is not reset at once: it may still be queued unaccepted at the backend,
/// and h2 servers treat a burst of resets of such streams as a rapid-reset
/// attack and close the whole connection (`GOAWAY ENHANCE_YOUR_CALM`),
/// failing every other call on it. The wait goes on in a task of its own
/// for up to [`CANCEL_GRACE`]; once answered, a reset is harmless.
struct AwaitingHead<F: Future + Send + 'static> {
    // Boxed (a few dozen bytes) so it can outlive the call on drop.
    response: Option<Pin<Box<F>>>,
}

impl<F: Future + Send + 'static> AwaitingHead<F> {
    fn new(response: F) -> Self {
        AwaitingHead {
            response: Some(Box::pin(response)),
        }
    }

    /// Drops the wait now, resetting the stream.
    fn cancel_now(&mut self) {
        self.response = None;
    }
}

impl<F: Future + Send + 'static> Future for AwaitingHead<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(response) = self.response.as_mut() else {
            // Polled after completion or cancellation: never ready again.
            return Poll::Pending;
        };
        let out = ready!(response.as_mut().poll(cx));
        self.response = None;
        Poll::Ready(out)
    }
}

impl<F: Future + Send + 'static> Drop for AwaitingHead<F> {
    fn drop(&mut self) {
        let Some(response) = self.response.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(CANCEL_GRACE, response).await;
            });
        }
    }
}

/// The request head kept for replays: sending a request consumes it.
struct RetryHead {
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
}

impl RetryHead {
    fn request(&self, body: ReplayBody) -> Request<RequestBody> {
        let mut next = Request::new(RequestBody::Replayable(body));
        *next.method_mut() = self.method.clone();
        *next.uri_mut() = self.uri.clone();
        *next.headers_mut() = self.headers.clone();
        next
    }
}

/// The body of the next attempt, when attempts, the replay buffer and the
/// budget all allow one; counts the decision.
fn retry_body(b: &Balancing, replay: Option<&ReplayControl>, attempt: u32) -> Option<ReplayBody> {
    if attempt >= b.retry.max_attempts {
        return None;
    }
    let replay = replay?;
    if !replay.can_replay() {
        b.retry_counters.inc(RetryOutcome::NotReplayable);
        return None;
    }
    if !b.budget.withdraw() {
        b.retry_counters.inc(RetryOutcome::BudgetExhausted);
        return None;
    }
    match replay.replay() {
        Some(body) => {
            b.retry_counters.inc(RetryOutcome::Retried);
            Some(body)
        }
        None => {
            b.retry_counters.inc(RetryOutcome::NotReplayable);
            None
        }
    }
}

fn unavailable(endpoint: &Endpoint, why: &str) -> ProxyError {
    ProxyError::Upstream {
        endpoint: endpoint.addr,
        code: Code::UNAVAILABLE,
        reason: why.to_owned(),
    }
}

/// An answer from the proxy itself, counted under endpoint "".
fn local_answer(b: &Balancing, error: ProxyError) -> CallResponse {
    b.local_calls.inc(error.code());
    tracing::debug!(balancing = b.name(), error = %error, "answering the call from the proxy");
    error.into_response()
}
