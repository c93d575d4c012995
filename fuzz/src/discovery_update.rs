//! The push-discovery stream as the proxy's discovery client reads it: the
//! response body of `Watch` (length-prefixed protobuf `WatchResponse`s,
//! arriving in DATA frames cut anywhere, then trailers), decoded by tonic
//! with the client's size limit, each message applied to the proxy's view
//! of endpoints and config by the client's own loop.
//!
//! The input is a body cut into frames as [`crate::cut`] reads it; the
//! two bits above the number of cuts choose the trailers: none,
//! `grpc-status: 0`, `grpc-status: 14` with a message, or an unparseable
//! status.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use grpc_balancer_discovery_api::v1::{Endpoint, EndpointSet, WatchResponse};
use grpc_balancer_proxy::discovery::push::PushState;
use grpc_balancer_proxy::fuzzing::{PUSH_MAX_MESSAGE_BYTES, push_consume, push_routable};
use grpc_balancer_proxy::metrics::PushMetrics;
use http::{HeaderMap, HeaderValue};
use http_body::Frame;
use prost::Message as _;
use tonic::Streaming;

/// No panic. Replayed message by message (as tonic decodes them) on a
/// fresh view: a refused message leaves the view exactly as it was (never
/// lost data), and an applied one puts its version, its config and its
/// endpoint sets in force, with only ready, not terminating endpoints of
/// the message routable. The client's own loop over the same body ends
/// with the same view, and fails exactly when a message was refused, the
/// stream did not start with a snapshot, or tonic reported an error.
pub fn discovery_update(data: &[u8]) {
    let body = body(data);
    let decoded = crate::runtime().block_on(async {
        let mut stream = streaming(body.clone());
        let mut decoded = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(m)) => decoded.push(Ok(m)),
                Ok(None) => break,
                Err(status) => {
                    decoded.push(Err(status));
                    break;
                }
            }
        }
        decoded
    });
    let names = names(&decoded);

    let replayed = PushState::new(PushMetrics::default());
    let mut should_fail = false;
    for (i, message) in decoded.iter().enumerate() {
        let Ok(message) = message else {
            should_fail = true;
            break;
        };
        if i == 0 && !message.snapshot {
            should_fail = true;
            break;
        }
        let before = View::of(&replayed, &names);
        match replayed.apply(message.clone(), Instant::now()) {
            Ok(()) => applied(&replayed, message),
            Err(e) => {
                assert_eq!(
                    View::of(&replayed, &names),
                    before,
                    "a refused message ({e}) changed the view"
                );
                should_fail = true;
                break;
            }
        }
    }

    let consumed = PushState::new(PushMetrics::default());
    let result = crate::runtime().block_on(push_consume(streaming(body), &consumed));
    assert_eq!(
        View::of(&consumed, &names),
        View::of(&replayed, &names),
        "the client's loop and the replay disagree"
    );
    assert_eq!(
        result.is_err(),
        should_fail,
        "the client's loop ended with {result:?}"
    );
}

/// The body's chunks and trailers the input describes.
#[derive(Clone)]
struct Body {
    chunks: Vec<Bytes>,
    trailers: Option<HeaderMap>,
}

fn body(data: &[u8]) -> Body {
    let (head, chunks, _) = crate::cut::cut(data);
    let trailers = |status: &'static str, message: Option<&'static str>| {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static(status));
        if let Some(m) = message {
            t.insert("grpc-message", HeaderValue::from_static(m));
        }
        Some(t)
    };
    let trailers = match (head >> 4) & 0x03 {
        1 => trailers("0", None),
        2 => trailers("14", Some("operator%20going%20away")),
        3 => trailers("x1", None),
        _ => None,
    };
    Body { chunks, trailers }
}

/// The body as the discovery client's `Watch` call decodes it.
fn streaming(body: Body) -> Streaming<WatchResponse> {
    let frames = body.chunks.into_iter().map(Frame::data);
    let frames = frames.chain(body.trailers.map(Frame::trailers));
    let body =
        http_body_util::StreamBody::new(futures::stream::iter(frames.map(Ok::<_, Infallible>)));
    Streaming::new_response(
        tonic_prost::ProstDecoder::<WatchResponse>::default(),
        body,
        http::StatusCode::OK,
        None,
        Some(PUSH_MAX_MESSAGE_BYTES),
    )
}

/// Every service name the messages mention, as the proxy looks them up.
fn names(decoded: &[Result<WatchResponse, tonic::Status>]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for message in decoded.iter().flatten() {
        let sets = message.endpoint_sets.iter().map(|s| &s.service);
        for name in sets.chain(&message.removed_services) {
            names.insert(name.trim_end_matches('.').to_ascii_lowercase());
        }
    }
    names
}

/// What the proxy knows from the stream, but when.
#[derive(Debug, PartialEq)]
struct View {
    connected: bool,
    epoch: String,
    version: u64,
    reconnects: u64,
    last_error: Option<String>,
    config: Option<String>,
    routable: Vec<Option<Vec<SocketAddr>>>,
}

impl View {
    fn of(state: &PushState, names: &BTreeSet<String>) -> View {
        let f = state.freshness();
        View {
            connected: f.connected,
            epoch: f.epoch,
            version: f.version,
            reconnects: f.reconnects,
            last_error: f.last_error,
            config: state.config().borrow().clone(),
            routable: names.iter().map(|n| push_routable(state, n)).collect(),
        }
    }
}

/// What must hold once `message` was applied.
fn applied(state: &PushState, message: &WatchResponse) {
    let f = state.freshness();
    assert!(f.connected);
    assert_eq!(f.version, message.version);
    if message.snapshot {
        assert_eq!(f.epoch, message.epoch);
    }
    if let Some(config) = &message.config {
        assert_eq!(state.config().borrow().as_ref(), Some(config));
    }
    for name in &message.removed_services {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let re_added = message
            .endpoint_sets
            .iter()
            .any(|s| s.service.trim_end_matches('.').eq_ignore_ascii_case(&name));
        if !re_added {
            assert_eq!(push_routable(state, &name), None, "{name} was removed");
        }
    }
    for (i, set) in message.endpoint_sets.iter().enumerate() {
        let name = set.service.trim_end_matches('.').to_ascii_lowercase();
        let last = message.endpoint_sets[i + 1..]
            .iter()
            .all(|s| !s.service.trim_end_matches('.').eq_ignore_ascii_case(&name));
        if !last {
            continue;
        }
        let Some(routable) = push_routable(state, &name) else {
            panic!("{name} was pushed and is not known");
        };
        for addr in routable {
            assert!(
                set.endpoints.iter().any(|e| e.ready
                    && !e.terminating
                    && e.address.parse::<SocketAddr>() == Ok(addr)),
                "{addr} of {name} is routable, and not a ready endpoint of the message"
            );
        }
    }
}

/// Real streams, as the target's input: (file name, bytes).
pub fn seeds() -> crate::Seeds {
    let svc = "grpcb-greeter-v1.demo.svc.cluster.local";
    let config = "balancings:\n  - name: greeter\n    listen: 127.0.0.1:15001\n";
    let snapshot = WatchResponse {
        epoch: "operator-7c9f-1".into(),
        version: 1,
        snapshot: true,
        config: Some(config.into()),
        endpoint_sets: vec![set(
            svc,
            &[
                ("10.244.0.7:50051", true, false),
                ("10.244.1.3:50051", true, false),
                ("10.244.2.5:50051", false, false),
            ],
        )],
        removed_services: Vec::new(),
        observed_at_unix_ms: 1_764_000_000_000,
    };
    let change = WatchResponse {
        snapshot: false,
        version: 2,
        config: None,
        endpoint_sets: vec![set(
            svc,
            &[
                ("10.244.0.7:50051", false, true),
                ("10.244.1.3:50051", true, false),
                ("[fd00:10:244::5]:50051", true, false),
            ],
        )],
        ..snapshot.clone()
    };
    let removal = WatchResponse {
        version: 3,
        endpoint_sets: Vec::new(),
        removed_services: vec![svc.into()],
        ..change.clone()
    };
    let gap = WatchResponse {
        version: 7,
        ..change.clone()
    };
    let stream = |messages: &[&WatchResponse]| -> Vec<u8> {
        let mut body = Vec::new();
        for m in messages {
            let encoded = m.encode_to_vec();
            body.push(0);
            body.extend_from_slice(
                &u32::try_from(encoded.len())
                    .unwrap_or(u32::MAX)
                    .to_be_bytes(),
            );
            body.extend_from_slice(&encoded);
        }
        body
    };
    let input =
        |trailers: u8, cuts: &[u16], body: Vec<u8>| crate::cut::uncut(trailers, cuts, &body);
    vec![
        ("snapshot", input(1, &[], stream(&[&snapshot]))),
        (
            "changes-cut-in-frames",
            // One cut inside the first length prefix, one inside a message.
            input(1, &[3, 40, 200], stream(&[&snapshot, &change, &removal])),
        ),
        ("gap-refused", input(0, &[], stream(&[&snapshot, &gap]))),
        ("change-first", input(0, &[], stream(&[&change]))),
        (
            "unavailable-trailers",
            input(2, &[10], stream(&[&snapshot, &change])),
        ),
        ("compressed-flag", {
            let mut body = stream(&[&snapshot]);
            body[0] = 1;
            input(1, &[], body)
        }),
    ]
}

fn set(service: &str, endpoints: &[(&str, bool, bool)]) -> EndpointSet {
    EndpointSet {
        service: service.into(),
        endpoints: endpoints
            .iter()
            .map(|(address, ready, terminating)| Endpoint {
                address: (*address).into(),
                pod_name: format!("greeter-{}", address.len()),
                zone: "zone-a".into(),
                ready: *ready,
                serving: *ready || *terminating,
                terminating: *terminating,
            })
            .collect(),
    }
}
