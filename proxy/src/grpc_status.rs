//! gRPC statuses as the wire carries them: the [`Code`] type, reading
//! `grpc-status`, writing the trailers and trailers-only answers the proxy
//! makes itself, and the status an HTTP/2 stream error stands for. A leaf:
//! it knows nothing of the proxy's other modules.
//!
//! Answers the proxy makes itself are trailers-only responses: HTTP 200,
//! `content-type: application/grpc`, and `grpc-status` / `grpc-message` in the
//! only HEADERS frame, which every gRPC client understands.

use std::fmt::{self, Write as _};

use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};

// Pre-parsed names: a `&str` key is parsed and validated on every lookup.
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// A gRPC status code. A number rather than an enum: an endpoint may answer
/// with any value, and the proxy counts and passes on what it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code(u32);

impl Code {
    pub const OK: Code = Code(0);
    pub const CANCELLED: Code = Code(1);
    pub const UNKNOWN: Code = Code(2);
    pub const DEADLINE_EXCEEDED: Code = Code(4);
    pub const PERMISSION_DENIED: Code = Code(7);
    pub const RESOURCE_EXHAUSTED: Code = Code(8);
    pub const INTERNAL: Code = Code(13);
    pub const UNAVAILABLE: Code = Code(14);
    /// The highest code gRPC defines.
    pub const UNAUTHENTICATED: Code = Code(16);

    pub const fn new(value: u32) -> Code {
        Code(value)
    }

    pub const fn value(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The status a caller should see when the upstream stream failed, following
/// the gRPC HTTP/2 mapping of RST_STREAM codes.
pub fn code_for_upstream_error(err: &h2::Error) -> Code {
    if err.is_go_away() || err.is_io() {
        return Code::UNAVAILABLE;
    }
    match err.reason() {
        Some(h2::Reason::REFUSED_STREAM) => Code::UNAVAILABLE,
        Some(h2::Reason::CANCEL) => Code::CANCELLED,
        Some(h2::Reason::ENHANCE_YOUR_CALM) => Code::RESOURCE_EXHAUSTED,
        Some(h2::Reason::INADEQUATE_SECURITY) => Code::PERMISSION_DENIED,
        _ => Code::INTERNAL,
    }
}

/// A trailers-only gRPC response; `B::default()` is the empty body.
pub fn trailers_only<B: Default>(code: Code, message: &str) -> Response<B> {
    let mut response = Response::new(B::default());
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
pub fn trailers(code: Code, message: &str) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(2);
    put_status(&mut headers, code, message);
    headers
}

fn put_status(headers: &mut HeaderMap, code: Code, message: &str) {
    headers.insert(&GRPC_STATUS, HeaderValue::from(code.value()));
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
pub fn status_of(headers: &HeaderMap) -> Option<Code> {
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
    Some(Code(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailers_only_response_is_well_formed() {
        let r: Response<()> = trailers_only(
            Code::UNAVAILABLE,
            "no ready endpoint for balancing greeter: it has no endpoints",
        );
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "application/grpc");
        assert_eq!(status_of(r.headers()), Some(Code::UNAVAILABLE));
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
