//! The fuzz targets' bodies: each takes the bytes libFuzzer makes up and
//! panics only when a property of the parser under test breaks. The binaries
//! in `fuzz_targets/` hand them to libFuzzer (`scripts/fuzz`); the test in
//! `tests/` replays the checked-in seeds and every past finding through the
//! same functions in the normal build, so a finding stays fixed.

/// Every target by the name of its binary and of its seed directory.
pub const TARGETS: &[(&str, fn(&[u8]))] =
    &[("proxy_config", proxy_config), ("grpc_wire", grpc_wire)];

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
/// trailer, and a length-prefixed health-check answer. The input is split at
/// its first two newlines into the three. No panic; a timeout that parses
/// renders back to one at least as long (a peer never gets a shorter
/// deadline than the client asked for); a status is at most three digits.
pub fn grpc_wire(data: &[u8]) {
    use grpc_balancer_proxy::fuzzing::{
        decode_health_status, grpc_status_of, parse_grpc_timeout, render_grpc_timeout,
    };
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let timeout = parts.next().unwrap_or_default();
    let status = parts.next().unwrap_or_default();
    let health = parts.next().unwrap_or_default();

    if let Ok(value) = http::HeaderValue::from_bytes(timeout) {
        if let Some(d) = parse_grpc_timeout(&value) {
            let rendered = render_grpc_timeout(d);
            match parse_grpc_timeout(&rendered) {
                Some(back) => assert!(back >= d, "{value:?} -> {d:?} -> {rendered:?} -> {back:?}"),
                None => panic!("{d:?} rendered as {rendered:?}, which does not parse"),
            }
        }
    }
    if let Ok(value) = http::HeaderValue::from_bytes(status) {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", value);
        if let Some(code) = grpc_status_of(&headers) {
            assert!(code.value() <= 999, "{code:?} from {status:?}");
        }
    }
    let _ = decode_health_status(health);
}
