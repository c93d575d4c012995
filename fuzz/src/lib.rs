//! The fuzz targets' bodies: each takes the bytes libFuzzer makes up and
//! panics only when a property of the parser under test breaks. The binaries
//! in `fuzz_targets/` hand them to libFuzzer (`scripts/fuzz`); the test in
//! `tests/` replays the checked-in seeds and every past finding through the
//! same functions in the normal build, so a finding stays fixed.

pub mod canned_dns;
pub mod cut;
pub mod discovery_update;
pub mod dns_answer;

pub use discovery_update::discovery_update;
pub use dns_answer::dns_answer;

/// A fuzz target's body: the bytes libFuzzer made up.
pub type Target = fn(&[u8]);

/// Every target by the name of its binary and of its seed directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("proxy_config", proxy_config),
    ("grpc_wire", grpc_wire),
    ("admission_review", admission_review),
    ("balancing_render", balancing_render),
    ("dns_answer", dns_answer),
    ("discovery_update", discovery_update),
];

/// A target's seeds, each by file name.
pub type Seeds = Vec<(&'static str, Vec<u8>)>;

/// What makes a target's seeds.
pub type SeedMaker = fn() -> Seeds;

/// The targets whose seeds are made by code (checked in; a test fails when
/// they drift).
pub const GENERATED_SEEDS: &[(&str, SeedMaker)] = &[
    ("dns_answer", dns_answer::seeds),
    ("discovery_update", discovery_update::seeds),
];

/// One runtime for the asynchronous targets: a single thread, and a clock
/// that jumps ahead whenever every task waits, so a timeout in the code
/// under test costs no time.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("no tokio runtime: {e}"),
        }
    })
}

/// The proxy's configuration file, as the mounted ConfigMap may hold it.
/// Parsing never panics, and the strict and the lenient parser agree: a
/// document that passes whole passes balancing by balancing with nothing
/// left out, and what the lenient parser keeps is itself a valid document.
pub fn proxy_config(data: &[u8]) {
    use grpc_balancer_crds::config::{parse_yaml, parse_yaml_partial};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let whole = parse_yaml(text);
    let partial = parse_yaml_partial(text);
    match (&whole, &partial) {
        (Ok(config), Ok(p)) => {
            assert!(p.rejected.is_empty() && p.errors.is_empty(), "{p:?}");
            assert_eq!(config, &p.config);
        }
        (Ok(_), Err(e)) => panic!("the whole document is valid, the lenient parse failed: {e}"),
        (Err(_), _) => {}
    }
    if let Ok(p) = partial {
        let again = match serde_json::to_string(&p.config) {
            Ok(json) => json,
            Err(e) => panic!("a parsed config does not serialize: {e}"),
        };
        if let Err(e) = parse_yaml(&again) {
            panic!("the balancings kept are not a valid document: {e}\n{again}");
        }
    }
}

/// What the proxy reads of a peer's gRPC bytes itself (everything else it
/// passes on untouched): a `grpc-timeout` header, a `grpc-status` header or
/// trailer, and the answer to a health check. The input is split at its
/// first two newlines into the three. The third part is one byte (its low
/// four bits the number of cuts), a big-endian u16 per cut, then the body
/// of the health check's answer, sent in DATA frames cut there; the second
/// part is the answer's `grpc-status` (in its trailers, or in its headers
/// when the body is empty: a trailers-only answer).
///
/// No panic; a timeout that parses renders back to one at least as long (a
/// peer never gets a shorter deadline than the client asked for); a status
/// is at most three digits; the health check reads SERVING exactly when the
/// status is OK and the body's first message decodes (as protobuf, with
/// prost) to a `HealthCheckResponse` with status SERVING, and reads an
/// answer that does not decode as an error.
pub fn grpc_wire(data: &[u8]) {
    use futures::StreamExt as _;
    use grpc_balancer_proxy::fuzzing::{
        grpc_status_of, health_answer, parse_grpc_timeout, render_grpc_timeout,
    };
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let timeout = parts.next().unwrap_or_default();
    let status = parts.next().unwrap_or_default();
    let health = parts.next().unwrap_or_default();

    if let Ok(value) = http::HeaderValue::from_bytes(timeout)
        && let Some(d) = parse_grpc_timeout(&value)
    {
        let rendered = render_grpc_timeout(d);
        match parse_grpc_timeout(&rendered) {
            Some(back) => assert!(back >= d, "{value:?} -> {d:?} -> {rendered:?} -> {back:?}"),
            None => panic!("{d:?} rendered as {rendered:?}, which does not parse"),
        }
    }
    let mut status_headers = http::HeaderMap::new();
    if let Ok(value) = http::HeaderValue::from_bytes(status) {
        status_headers.insert("grpc-status", value);
        if let Some(code) = grpc_status_of(&status_headers) {
            assert!(code.value() <= 999, "{code:?} from {status:?}");
        }
    }

    let (_, chunks, body) = cut::cut(health);
    let frames = chunks.into_iter().map(http_body::Frame::data);
    let mut response = http::Response::new(http_body_util::StreamBody::new(
        futures::stream::iter(frames.map(Ok::<_, std::convert::Infallible>)).chain(
            futures::stream::iter(
                (!body.is_empty()).then(|| Ok(http_body::Frame::trailers(status_headers.clone()))),
            ),
        ),
    ));
    if body.is_empty() {
        *response.headers_mut() = status_headers.clone();
    }
    let read = runtime().block_on(health_answer(response));
    let ok = grpc_status_of(&status_headers).map(|c| c.value()) == Some(0);
    let expected = ok.then(|| serving_per_prost(&body)).flatten();
    match (read, expected) {
        (Ok(serving), Some(want)) => assert_eq!(serving, want, "SERVING misread"),
        (Err(_), None) => {}
        (read, expected) => panic!(
            "the health check read {read:?}; status OK: {ok}, prost reads SERVING: {expected:?}"
        ),
    }
}

/// Whether the first length-prefixed message of `body` is, for prost, a
/// `HealthCheckResponse` with status SERVING (None: it is not one).
fn serving_per_prost(body: &[u8]) -> Option<bool> {
    use prost::Message as _;
    let (&[0], len) = (body.get(..1)?, body.get(1..5)?) else {
        return None;
    };
    let len = usize::try_from(u32::from_be_bytes(len.try_into().ok()?)).ok()?;
    let message = body.get(5..5usize.checked_add(len)?)?;
    let response = tonic_health::pb::HealthCheckResponse::decode(message).ok()?;
    Some(response.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
}

/// An AdmissionReview as the apiserver (or anyone reaching the webhook)
/// may send it. No panic; the answer carries the request's uid; a patch is
/// a JSON patch that applies to the pod under review and leaves a valid
/// pod; and that pod, reviewed again (as on reinvocation), needs no patch.
pub fn admission_review(data: &[u8]) {
    use grpc_balancer_webhook::review::{Reviewer, Verdict};
    use k8s_openapi::api::core::v1::Pod;

    static REVIEWER: std::sync::OnceLock<Reviewer> = std::sync::OnceLock::new();
    let reviewer = REVIEWER.get_or_init(reviewer);
    let (verdict, answer) = reviewer.review(data);
    let Some(response) = answer.response else {
        panic!("an answer without a response: {verdict:?}");
    };
    if verdict == Verdict::Malformed {
        return;
    }
    // serde skips unknown fields without checking their strings are UTF-8,
    // so a review can be decided on bytes that are not JSON text (found by
    // this target; the apiserver never sends such). Nothing to check then.
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    assert_eq!(
        request["request"]["uid"].as_str(),
        Some(response.uid.as_str()),
        "the answer's uid is not the request's"
    );
    let Some(patch_bytes) = response.patch else {
        return;
    };
    let patch: json_patch::Patch = match serde_json::from_slice(&patch_bytes) {
        Ok(p) => p,
        Err(e) => panic!("the patch is not a JSON patch: {e}"),
    };
    let mut pod = request["request"]["object"].clone();
    if let Err(e) = json_patch::patch(&mut pod, &patch) {
        panic!("the patch does not apply to the pod under review: {e}");
    }
    let patched: Pod = match serde_json::from_value(pod.clone()) {
        Ok(p) => p,
        Err(e) => panic!("the patched pod is not a pod: {e}"),
    };
    let mut again = request;
    again["request"]["object"] = serde_json::to_value(&patched).unwrap_or_default();
    let Ok(body) = serde_json::to_vec(&again) else {
        return;
    };
    let (_, second) = reviewer.review(&body);
    if let Some(r) = second.response {
        assert!(
            r.patch.is_none() || !r.allowed,
            "a pod the webhook patched gets another patch on reinvocation"
        );
    }
}

/// The webhook's reviewer with its default flags and one balancing in `demo`.
pub fn reviewer() -> grpc_balancer_webhook::review::Reviewer {
    use grpc_balancer_webhook::proxy_configs::ProxyConfigs;
    use grpc_balancer_webhook::{Args, LocalBalancing, SidecarMode};
    use std::sync::Arc;

    let settings = match Args::defaults() {
        Ok(args) => args.proxy_settings(SidecarMode::Native),
        Err(e) => panic!("the webhook's default flags do not parse: {e}"),
    };
    let configs = ProxyConfigs::new();
    configs.set(
        "demo",
        vec![
            LocalBalancing {
                name: "greeter".into(),
                env_name: "GRPC_BALANCER_GREETER_ADDR".into(),
                address: "127.0.0.1:15001".into(),
                aliases: None,
            },
            // One that names a Service: the host aliases, the resolver
            // switch and the pod's declared ports are reviewed too.
            LocalBalancing {
                name: "orders".into(),
                env_name: "GRPC_BALANCER_ORDERS_ADDR".into(),
                address: "127.0.10.1:50051".into(),
                aliases: Some(grpc_balancer_webhook::HostAliases {
                    ip: "127.0.10.1".into(),
                    hostnames: vec![
                        "orders".into(),
                        "orders.demo".into(),
                        "orders.demo.svc".into(),
                        "orders.demo.svc.cluster.local".into(),
                    ],
                    ports: vec![50051, 9090],
                }),
            },
        ],
    );
    grpc_balancer_webhook::review::Reviewer {
        settings: Arc::new(settings),
        configs: Arc::new(configs),
        discovery_ca: Default::default(),
    }
}

/// A `GrpcBalancing` as a user may write it (the CRD's schema stops much, not
/// all: the operator decodes whatever the apiserver stored). No panic; the
/// operator renders it or says why not, and what it renders is a balancing
/// the proxy accepts.
pub fn balancing_render(data: &[u8]) {
    use grpc_balancer_crds::config::{ProxyConfig, parse_yaml};
    use grpc_balancer_crds::v1alpha1::GrpcBalancing;
    use grpc_balancer_operator::render;

    let Ok(gb) = serde_json::from_slice::<GrpcBalancing>(data) else {
        return;
    };
    let targets = render::subset_targets(&gb);
    // Every backend port known, as once the pods are listed.
    let ports = vec![Some(50051); targets.len()];
    let balancing = match gb.spec.service.as_deref() {
        // A balancing that names a Service: rendered as the operator does,
        // against a Service of that name with a gRPC port and another one.
        Some(service) => {
            let svc: k8s_openapi::api::core::v1::Service =
                match serde_json::from_value(serde_json::json!({
                    "metadata": { "name": service, "namespace": gb.metadata.namespace },
                    "spec": { "clusterIP": "10.96.0.20", "ports": [
                        { "name": "grpc", "port": 50051, "targetPort": 50051, "protocol": "TCP" },
                        { "name": "metrics", "port": 9090, "targetPort": 9090, "protocol": "TCP" }
                    ] }
                })) {
                    Ok(svc) => svc,
                    Err(e) => panic!("the harness's Service does not decode: {e}"),
                };
            let endpoints = render::EndpointIndex::default();
            let view = render::NamespaceView::new([&gb], &endpoints, "cluster.local")
                .with_services([&svc]);
            match view.evaluate(&gb).outcome {
                render::Outcome::Rendered { balancing, .. } => *balancing,
                render::Outcome::NotRendered { .. } => return,
            }
        }
        None => match render::balancing(&gb, &ports, "cluster.local") {
            Ok(b) => b,
            Err(_) => return,
        },
    };
    let config = ProxyConfig {
        balancings: vec![balancing],
    };
    // As the operator writes it into the ConfigMap and the discovery stream.
    let text = match grpc_balancer_crds::config::to_yaml(&config) {
        Ok(t) => t,
        Err(e) => panic!("a rendered config does not serialize: {e}"),
    };
    if let Err(e) = parse_yaml(&text) {
        panic!("the operator rendered a balancing the proxy refuses: {e}\n{text}");
    }
}
