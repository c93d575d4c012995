//! Why the proxy answers a call itself, and the status that answer carries.
//! The balancer (no endpoint, queue full) and the call (deadline, upstream
//! failure) both end calls with one of these.

use std::time::Duration;

use http::Response;

use crate::grpc_status::{self, Code};

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
        code: Code,
        reason: String,
    },
}

impl ProxyError {
    pub fn code(&self) -> Code {
        match self {
            ProxyError::NoEndpoints { .. }
            | ProxyError::NoReadyEndpoint { .. }
            | ProxyError::QueueFull { .. } => Code::UNAVAILABLE,
            ProxyError::DeadlineExceeded { .. } => Code::DEADLINE_EXCEEDED,
            ProxyError::Upstream { code, .. } => *code,
        }
    }

    /// The trailers-only answer; `B::default()` is the empty body.
    pub fn into_response<B: Default>(self) -> Response<B> {
        grpc_status::trailers_only(self.code(), &self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    #[test]
    fn the_answer_carries_the_status_and_the_reason() {
        let r: Response<()> = ProxyError::NoEndpoints {
            balancing: "greeter".into(),
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "application/grpc");
        assert_eq!(grpc_status::status_of(r.headers()), Some(Code::UNAVAILABLE));
        assert_eq!(
            r.headers()["grpc-message"],
            "no ready endpoint for balancing greeter: it has no endpoints"
        );
    }
}
