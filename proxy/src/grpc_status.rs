//! The one place where the proxy's own failures become gRPC statuses.
//!
//! Answers the proxy makes itself are trailers-only responses: HTTP 200,
//! `content-type: application/grpc`, and `grpc-status` / `grpc-message` in the
//! only HEADERS frame, which every gRPC client understands.

use std::fmt::Write as _;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};

// Pre-parsed names: a `&str` key is parsed and validated on every lookup.
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

use crate::transport::body::ResponseBody;

/// gRPC status codes the proxy produces or inspects.
pub mod code {
    pub const OK: u32 = 0;
    pub const CANCELLED: u32 = 1;
    pub const UNKNOWN: u32 = 2;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
}

/// Why the proxy answers a call itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no ready endpoint for balancing {balancing}: it has no endpoints")]
    NoEndpoints { balancing: String },
    #[error("no ready endpoint for balancing {balancing} within {waited:?}")]
    NoReadyEndpoint { balancing: String, waited: Duration },
    #[error("balancing {balancing} has too many calls waiting for an endpoint")]
    QueueFull { balancing: String },
    #[error("deadline exceeded after {after:?} in balancing {balancing}")]
    DeadlineExceeded { balancing: String, after: Duration },
    #[error("{endpoint}: {reason}")]
    Upstream {
        endpoint: std::net::SocketAddr,
        code: u32,
        reason: String,
    },
    #[error("the proxy is shutting down")]
    ShuttingDown,
}

impl ProxyError {
    pub fn code(&self) -> u32 {
        match self {
            ProxyError::NoEndpoints { .. }
            | ProxyError::NoReadyEndpoint { .. }
            | ProxyError::QueueFull { .. }
            | ProxyError::ShuttingDown => code::UNAVAILABLE,
            ProxyError::DeadlineExceeded { .. } => code::DEADLINE_EXCEEDED,
            ProxyError::Upstream { code, .. } => *code,
        }
    }

    pub fn into_response(self) -> Response<ResponseBody> {
        trailers_only(self.code(), &self.to_string())
    }
}

/// The status a caller should see when the upstream stream failed, following
/// the gRPC HTTP/2 mapping of RST_STREAM codes.
pub fn code_for_upstream_error(err: &hyper::Error) -> u32 {
    match h2_error(err) {
        Some(e) if e.is_go_away() || e.is_io() => code::UNAVAILABLE,
        Some(e) => match e.reason() {
            Some(h2::Reason::REFUSED_STREAM) => code::UNAVAILABLE,
            Some(h2::Reason::CANCEL) => code::CANCELLED,
            Some(h2::Reason::ENHANCE_YOUR_CALM) => code::RESOURCE_EXHAUSTED,
            Some(h2::Reason::INADEQUATE_SECURITY) => 7, // PERMISSION_DENIED
            _ => code::INTERNAL,
        },
        None => code::UNAVAILABLE,
    }
}

/// The `h2::Error` inside a hyper error, if any.
pub fn h2_error(err: &hyper::Error) -> Option<&h2::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return Some(h2);
        }
        source = e.source();
    }
    None
}

/// A trailers-only gRPC response.
pub fn trailers_only(code: u32, message: &str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    put_status(headers, code, message);
    response
}

/// Trailers ending a response the proxy has to cut short.
pub fn trailers(code: u32, message: &str) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(2);
    put_status(&mut headers, code, message);
    headers
}

fn put_status(headers: &mut HeaderMap, code: u32, message: &str) {
    headers.insert(&GRPC_STATUS, HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert(&GRPC_MESSAGE, v);
    }
}

/// grpc-message is percent-encoded UTF-8 (the gRPC HTTP/2 spec).
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Reads `grpc-status` from headers or trailers.
pub fn status_of(headers: &HeaderMap) -> Option<u32> {
    let v = headers.get(&GRPC_STATUS)?.as_bytes();
    if v.is_empty() || v.len() > 3 {
        return None;
    }
    let mut n = 0u32;
    for b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(b - b'0');
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailers_only_response_is_well_formed() {
        let r = ProxyError::NoEndpoints {
            balancing: "greeter".into(),
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "application/grpc");
        assert_eq!(status_of(r.headers()), Some(code::UNAVAILABLE));
        assert_eq!(
            r.headers()["grpc-message"],
            "no ready endpoint for balancing greeter: it has no endpoints"
        );
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("a%b\né"), "a%25b%0A%C3%A9");
    }

    #[test]
    fn malformed_status_values_are_ignored() {
        for bad in ["", "x", "1234", "-1"] {
            let mut h = HeaderMap::new();
            h.insert("grpc-status", HeaderValue::from_str(bad).expect("ascii"));
            assert_eq!(status_of(&h), None, "{bad:?}");
        }
    }
}
