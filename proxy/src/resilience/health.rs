//! Active `grpc.health.v1.Health/Check` probes over the endpoint's own
//! HTTP/2 connection. The request (one string field) is encoded by hand; the
//! answer is decoded by prost, as protobuf readers do (a hand-written reader
//! disagreed with them on malformed and odd messages).

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Method, Request, header};
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;

use crate::endpoint::{ConnState, Endpoint};
use crate::grpc_status;
use crate::metrics::{HealthLabels, HealthResult, LabelValue as _};
use crate::transport::body::RequestBody;

#[derive(Debug, Clone)]
pub struct HealthSettings {
    pub service: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

impl From<&grpc_balancer_crds::config::HealthCheck> for HealthSettings {
    fn from(h: &grpc_balancer_crds::config::HealthCheck) -> Self {
        HealthSettings {
            service: h.service.clone(),
            interval: h.interval.as_std(),
            timeout: h.timeout.as_std(),
            unhealthy_threshold: h.unhealthy_threshold.max(1),
            healthy_threshold: h.healthy_threshold.max(1),
        }
    }
}

/// `grpc.health.v1.HealthCheckResponse`, of which the proxy reads the
/// status (an enum: an `int32` on the wire).
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: i32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("not connected")]
    NotConnected,
    #[error("timed out")]
    Timeout,
    #[error("request failed: {0}")]
    Http(#[from] h2::Error),
    #[error("HTTP status {0}")]
    HttpStatus(http::StatusCode),
    #[error("grpc-status {0}")]
    GrpcStatus(grpc_status::Code),
    #[error("malformed response: {0}")]
    Malformed(&'static str),
}

/// A body that cannot fail (the fuzz targets' and tests' answers).
impl From<std::convert::Infallible> for CheckError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

/// Probes `endpoint` until `cancel` fires. Endpoints start healthy so a
/// balancing serves before its first probe; `unhealthy_threshold` failed
/// probes in a row take an endpoint out, `healthy_threshold` good ones bring
/// it back.
pub async fn run(endpoint: Arc<Endpoint>, settings: HealthSettings, cancel: CancellationToken) {
    let labels = |result: HealthResult| HealthLabels {
        balancing: endpoint.subset.balancing.to_string(),
        subset: endpoint.subset.name.to_string(),
        result: result.as_str().to_owned(),
    };
    let serving = endpoint
        .subset
        .metrics
        .health_checks
        .get_or_create_owned(&labels(HealthResult::Serving));
    let not_serving = endpoint
        .subset
        .metrics
        .health_checks
        .get_or_create_owned(&labels(HealthResult::NotServing));
    let errors = endpoint
        .subset
        .metrics
        .health_checks
        .get_or_create_owned(&labels(HealthResult::Error));
    let (mut good, mut bad) = (0u32, 0u32);
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = cancel.cancelled() => return,
        }
        if endpoint.state() != ConnState::Ready {
            continue;
        }
        let result =
            match tokio::time::timeout(settings.timeout, check(&endpoint, &settings.service)).await
            {
                Ok(r) => r,
                Err(_) => Err(CheckError::Timeout),
            };
        let healthy = match result {
            Ok(true) => {
                serving.inc();
                true
            }
            Ok(false) => {
                not_serving.inc();
                false
            }
            Err(CheckError::NotConnected) => continue,
            Err(e) => {
                errors.inc();
                tracing::debug!(endpoint = %endpoint.addr, error = %e, "health check failed");
                false
            }
        };
        if healthy {
            bad = 0;
            good = good.saturating_add(1);
            if good >= settings.healthy_threshold {
                endpoint.set_healthy(true);
            }
        } else {
            good = 0;
            bad = bad.saturating_add(1);
            if bad >= settings.unhealthy_threshold {
                endpoint.set_healthy(false);
            }
        }
    }
}

/// One probe: `Ok(true)` when the endpoint answers SERVING.
pub async fn check(endpoint: &Endpoint, service: &str) -> Result<bool, CheckError> {
    let upstream = endpoint.sender().ok_or(CheckError::NotConnected)?;
    let uri = format!("http://{}/grpc.health.v1.Health/Check", endpoint.addr);
    let mut req = Request::new(RequestBody::Full(Some(encode_request(service))));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri
        .parse()
        .map_err(|_| CheckError::Malformed("endpoint address"))?;
    let h = req.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(header::TE, HeaderValue::from_static("trailers"));
    // A connection closing under the probe is no verdict on the endpoint.
    let head = upstream.send(req).map_err(|_| CheckError::NotConnected)?;
    let response = head.await?;
    answer_of(response).await
}

/// Whether a `Check` answer says SERVING: its gRPC status (trailers, or the
/// headers of a trailers-only answer) must be OK, and its body one
/// `HealthCheckResponse`, however its DATA frames cut it.
pub(crate) async fn answer_of<B>(response: http::Response<B>) -> Result<bool, CheckError>
where
    B: http_body::Body<Data = Bytes>,
    CheckError: From<B::Error>,
{
    if !response.status().is_success() {
        return Err(CheckError::HttpStatus(response.status()));
    }
    let (head, body) = response.into_parts();
    let collected = body.collect().await?;
    let status = collected
        .trailers()
        .and_then(grpc_status::status_of)
        .or_else(|| grpc_status::status_of(&head.headers))
        .ok_or(CheckError::Malformed("no grpc-status"))?;
    if status != grpc_status::Code::OK {
        return Err(CheckError::GrpcStatus(status));
    }
    Ok(decode_status(&collected.to_bytes())? == SERVING)
}

/// A length-prefixed `HealthCheckRequest { service = 1 }`.
fn encode_request(service: &str) -> Bytes {
    let mut message = BytesMut::new();
    if !service.is_empty() {
        message.put_u8(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0); // not compressed
    framed.put_u32(message.len() as u32);
    framed.put_slice(&message);
    framed.freeze()
}

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// `HealthCheckResponse.status` from the first length-prefixed message of
/// `framed`; an absent status is UNKNOWN (0).
pub(crate) fn decode_status(framed: &[u8]) -> Result<i32, CheckError> {
    use prost::Message as _;
    let (Some(&flag), Some(len)) = (framed.first(), framed.get(1..5)) else {
        return Err(CheckError::Malformed("short message"));
    };
    if flag != 0 {
        return Err(CheckError::Malformed("compressed message"));
    }
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let message = framed[5..]
        .get(..len)
        .ok_or(CheckError::Malformed("truncated message"))?;
    HealthCheckResponse::decode(message)
        .map(|r| r.status)
        .map_err(|_| CheckError::Malformed("not a HealthCheckResponse"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_request() {
        assert_eq!(&encode_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &encode_request("ab")[..],
            &[0, 0, 0, 0, 4, 0x0a, 2, b'a', b'b']
        );
    }

    #[test]
    fn decodes_status_and_rejects_garbage() {
        assert_eq!(decode_status(&[0, 0, 0, 0, 2, 0x08, 1]).ok(), Some(1));
        assert_eq!(decode_status(&[0, 0, 0, 0, 2, 0x08, 2]).ok(), Some(2));
        assert_eq!(decode_status(&[0, 0, 0, 0, 0]).ok(), Some(0));
        for bad in [
            &[][..],
            &[1, 0, 0, 0, 0],
            &[0, 0, 0, 0, 9, 0x08],
            &[0, 0, 0, 0, 2, 0x08, 0xff],
            &[0, 0, 0, 0, 1, 0x0f],
        ] {
            assert!(decode_status(bad).is_err(), "{bad:?}");
        }
    }

    /// Read as protobuf readers read it (prost; protobuf-go in grpc-go), or
    /// the proxy and the application disagree on whether a backend serves.
    /// Found by the `grpc_wire` fuzz target.
    #[test]
    fn decodes_status_as_protobuf_readers_do() {
        // A fixed64 field cut short is no message.
        assert!(decode_status(&[0, 0, 0, 0, 3, 0x11, 1, 2]).is_err());
        // The status with the wrong wire type is no HealthCheckResponse.
        assert!(decode_status(&[0, 0, 0, 0, 3, 0x0a, 1, 1]).is_err());
        // An int32 written as a 64-bit varint keeps its low 32 bits: SERVING.
        let wide = [0, 0, 0, 0, 6, 0x08, 0x81, 0x80, 0x80, 0x80, 0x10];
        assert_eq!(decode_status(&wide).ok(), Some(SERVING));
    }
}
