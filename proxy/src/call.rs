//! One call through the proxy: deadline, endpoint choice, dispatch on the
//! endpoint's connection, retries of attempts that never reached a backend,
//! and the response streamed back.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::balancing::Balancing;
use crate::endpoint::Endpoint;
use crate::grpc_status::{self, ProxyError, code};
use crate::metrics::RetryLabels;
use crate::resilience::deadline;
use crate::transport::body::{CallRecord, RequestBody, ResponseBody};
use crate::transport::replay::{ReplayBody, ReplayControl};
use crate::util::now_nanos;

/// Re-dispatches of a request a connection handed back unsent (it was
/// closing); these cost nothing, but must not loop forever.
const MAX_REDISPATCH: u32 = 8;

static GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

pub async fn proxy(b: Arc<Balancing>, req: Request<Incoming>) -> Response<ResponseBody> {
    let accepted_at = now_nanos();
    let started = Instant::now();
    let caller_timeout = req.headers().get(&GRPC_TIMEOUT).and_then(deadline::parse);
    let timeout = match (b.timeout, caller_timeout) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    };
    let deadline_at = timeout.map(|t| started + t);
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
    let retry_head = retries.then(|| {
        (
            parts.method.clone(),
            parts.uri.clone(),
            parts.headers.clone(),
        )
    });
    b.budget.deposit();

    let mut req = Request::from_parts(parts, body);
    let mut attempt = 1;
    let mut redispatched = 0;
    let mut avoid: Option<Arc<Endpoint>> = None;
    loop {
        let endpoint = match b.pick_or_wait(hash, avoid.as_ref(), deadline_at).await {
            Ok(e) => e,
            Err(e) => return local_answer(&b, e),
        };
        let Some(mut sender) = endpoint.sender() else {
            // Lost its connection between the pick and now.
            redispatched += 1;
            if redispatched > MAX_REDISPATCH {
                return local_answer(&b, unavailable(&endpoint, "connection lost"));
            }
            avoid = Some(endpoint);
            continue;
        };
        let mut record = CallRecord::start(endpoint.clone(), accepted_at);
        let sent = sender.try_send_request(req);
        let result = match deadline_at {
            Some(at) => match tokio::time::timeout_at(at, sent).await {
                Ok(r) => r,
                Err(_) => {
                    // Counted on the endpoint by the record, not again here.
                    record.set_status(code::DEADLINE_EXCEEDED);
                    return ProxyError::DeadlineExceeded {
                        balancing: b.name().to_owned(),
                        after: started.elapsed(),
                    }
                    .into_response();
                }
            },
            None => sent.await,
        };
        match result {
            Ok(response) => {
                if let Some(r) = &replay {
                    r.stop_buffering();
                }
                let (head, body) = response.into_parts();
                let deadline = deadline_at.map(|at| {
                    (
                        Box::pin(tokio::time::sleep_until(at)),
                        timeout.unwrap_or(Duration::ZERO),
                    )
                });
                let body = ResponseBody::upstream(body, record, &head.headers, deadline);
                return Response::from_parts(head, body);
            }
            Err(mut e) => {
                if let Some(unsent) = e.take_message() {
                    // The connection was closing (GOAWAY, failure) before the
                    // request left: it can go elsewhere at no risk.
                    record.not_sent();
                    redispatched += 1;
                    if redispatched > MAX_REDISPATCH {
                        return local_answer(&b, unavailable(&endpoint, "connection closing"));
                    }
                    req = unsent;
                    avoid = Some(endpoint);
                    continue;
                }
                let error = e.into_error();
                let never_processed = never_reached_backend(&error);
                let replayed = if never_processed && attempt < b.retry.max_attempts {
                    replay.as_ref().and_then(ReplayControl::replay)
                } else {
                    None
                };
                let retry = match (replayed, &retry_head) {
                    (Some(body), Some(head)) => {
                        if b.budget.withdraw() {
                            count_retry(&b, "retried");
                            Some((body, head))
                        } else {
                            count_retry(&b, "budget_exhausted");
                            None
                        }
                    }
                    _ => None,
                };
                if let Some((body, (method, uri, headers))) = retry {
                    tracing::debug!(balancing = b.name(), endpoint = %endpoint.addr, error = %error, attempt, "retrying a call the endpoint did not process");
                    record.not_sent();
                    let mut next = Request::new(RequestBody::Replayable(body));
                    *next.method_mut() = method.clone();
                    *next.uri_mut() = uri.clone();
                    *next.headers_mut() = headers.clone();
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

/// REFUSED_STREAM, or a GOAWAY whose last-stream-id excluded this stream:
/// the endpoint guarantees it did not act on the call.
fn never_reached_backend(error: &hyper::Error) -> bool {
    match grpc_status::h2_error(error) {
        Some(e) => {
            e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote())
        }
        None => false,
    }
}

fn unavailable(endpoint: &Endpoint, why: &str) -> ProxyError {
    ProxyError::Upstream {
        endpoint: endpoint.addr,
        code: code::UNAVAILABLE,
        reason: why.to_owned(),
    }
}

fn count_retry(b: &Balancing, outcome: &str) {
    b.metrics()
        .retries
        .get_or_create(&RetryLabels {
            balancing: b.name().to_owned(),
            outcome: outcome.to_owned(),
        })
        .inc();
}

/// An answer from the proxy itself, counted under endpoint "".
fn local_answer(b: &Balancing, error: ProxyError) -> Response<ResponseBody> {
    let status = error.code();
    b.metrics()
        .calls
        .get_or_create(&crate::metrics::CallLabels {
            balancing: b.name().to_owned(),
            subset: String::new(),
            endpoint: String::new(),
            grpc_status: status.to_string(),
        })
        .inc();
    tracing::debug!(balancing = b.name(), error = %error, "answering the call from the proxy");
    error.into_response()
}
