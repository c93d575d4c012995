//! Parsing and validation of the proxy config. Every problem is reported with
//! the path of the field it is about, and all of them are reported at once.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;

use super::{
    Balancing, DEFAULT_ADMIN_PORT, DiscoverySource, PolicyKind, ProxyConfig, ServiceFront,
};

/// Ports the injected sidecar uses itself, which no balancing may listen on,
/// with what each is for.
pub const RESERVED_PORTS: &[(u16, &str)] = &[(
    DEFAULT_ADMIN_PORT,
    "the sidecar's admin port (/live, /ready, /metrics)",
)];

/// Documents larger than this are refused before parsing.
pub const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;

/// One problem, e.g. `balancings[0].subsets[1].weight: ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a config document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid config ({} error", self.errors.len())?;
        if self.errors.len() != 1 {
            f.write_str("s")?;
        }
        f.write_str(")")?;
        for e in &self.errors {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn single(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            errors: vec![FieldError {
                path: path.into(),
                message: message.into(),
            }],
        }
    }
}

/// Parses and validates a YAML (or JSON) config document.
pub fn parse_yaml(text: &str) -> Result<ProxyConfig, ConfigError> {
    let config = deserialize(text)?;
    let errors = validate(&config);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError { errors })
    }
}

/// A document whose balancings were checked one by one.
#[derive(Debug, Clone, PartialEq)]
pub struct Partial {
    /// The balancings without any error.
    pub config: ProxyConfig,
    /// Names of the balancings left out (an unnamed one is left out too).
    pub rejected: Vec<String>,
    /// Every error, with its field path.
    pub errors: Vec<FieldError>,
}

/// Parses a document and validates each balancing on its own: the ones with
/// errors are left out and reported, the rest is returned. Only a document
/// that cannot be read as a config at all (syntax, unknown field, too large)
/// is an error. One broken balancing of a namespace must not hold back the
/// others: a proxy applies the rest and keeps what it ran of the broken one.
pub fn parse_yaml_partial(text: &str) -> Result<Partial, ConfigError> {
    let mut config = deserialize(text)?;
    let errors = validate(&config);
    let bad: HashSet<usize> = errors
        .iter()
        .filter_map(|e| balancing_index(&e.path))
        .collect();
    let mut rejected = Vec::new();
    let mut i = 0;
    config.balancings.retain(|b| {
        let keep = !bad.contains(&i);
        i += 1;
        if !keep {
            rejected.push(b.name.clone());
        }
        keep
    });
    // Leaving a balancing out cannot make another one invalid: cross-checks
    // (names, listeners) always blame the later of two.
    debug_assert!(validate(&config).is_empty());
    Ok(Partial {
        config,
        rejected,
        errors,
    })
}

/// `3` of `balancings[3].listen`.
fn balancing_index(path: &str) -> Option<usize> {
    path.strip_prefix("balancings[")?
        .split_once(']')?
        .0
        .parse()
        .ok()
}

fn deserialize(text: &str) -> Result<ProxyConfig, ConfigError> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::single(
            "",
            format!(
                "the document is {} bytes, more than the limit of {MAX_CONFIG_BYTES}",
                text.len()
            ),
        ));
    }
    // An empty file (e.g. a ConfigMap with no balancings yet) is an empty config.
    if text.trim().is_empty() {
        return Ok(ProxyConfig::default());
    }
    let de = serde_yaml::Deserializer::from_str(text);
    let config: ProxyConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        // serde_yaml already prefixes some messages with the path.
        let message = message
            .strip_prefix(&format!("{path}: "))
            .map(str::to_owned)
            .unwrap_or(message);
        ConfigError::single(path, message)
    })?;
    Ok(config)
}

/// Renders a config as YAML (what the operator writes into the ConfigMap).
pub fn to_yaml(config: &ProxyConfig) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(config)
}

/// Semantic checks the types alone cannot express.
pub fn validate(config: &ProxyConfig) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut push = |path: String, message: String| errors.push(FieldError { path, message });
    let mut names = HashSet::new();
    let mut listeners: Vec<(SocketAddr, &str)> = Vec::new();
    for (i, b) in config.balancings.iter().enumerate() {
        let at = format!("balancings[{i}]");
        check_balancing(b, &at, &mut push);
        if !names.insert(b.name.as_str()) {
            push(
                format!("{at}.name"),
                format!("{:?} is used by an earlier balancing", b.name),
            );
        }
        let forwards = b.service.iter().flat_map(|s| s.forwards.iter());
        let addresses = std::iter::once((format!("{at}.listen"), &b.listen)).chain(
            forwards
                .enumerate()
                .map(|(j, f)| (format!("{at}.service.forwards[{j}].listen"), &f.listen)),
        );
        for (path, listen) in addresses {
            let Ok(addr) = listen.parse::<SocketAddr>() else {
                continue;
            };
            if let Some((_, other)) = listeners.iter().find(|(l, _)| listeners_overlap(*l, addr)) {
                push(
                    path,
                    format!(
                        "{listen:?} is not valid: balancing {other:?} listens on the same port"
                    ),
                );
            } else {
                listeners.push((addr, b.name.as_str()));
            }
        }
    }
    errors
}

/// The checks of a balancing's `service`: names a resolver accepts, socket
/// addresses to relay to, listeners like `listen`.
fn check_service_front(service: &ServiceFront, at: &str, push: &mut impl FnMut(String, String)) {
    if service.hostnames.is_empty() {
        push(format!("{at}.hostnames"), "needs at least one name".into());
    }
    for (j, name) in service.hostnames.iter().enumerate() {
        if !is_host_name(name) {
            push(
                format!("{at}.hostnames[{j}]"),
                format!(
                    "{name:?} is not a DNS name (labels of a-z, 0-9, '-', at most 253 characters)"
                ),
            );
        }
    }
    if service.passthrough.parse::<SocketAddr>().is_err() {
        push(
            format!("{at}.passthrough"),
            format!("{:?} is not an ip:port socket address", service.passthrough),
        );
    }
    for (j, f) in service.forwards.iter().enumerate() {
        check_listen(&f.listen, &format!("{at}.forwards[{j}].listen"), push);
        if f.to.parse::<SocketAddr>().is_err() {
            push(
                format!("{at}.forwards[{j}].to"),
                format!("{:?} is not an ip:port socket address", f.to),
            );
        }
    }
}

/// A lower-case DNS name: what `hostAliases` and every resolver accept.
fn is_host_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn check_listen(listen: &str, path: &str, push: &mut impl FnMut(String, String)) {
    match listen.parse::<SocketAddr>() {
        Ok(addr) if addr.port() == 0 => push(
            path.to_owned(),
            format!("{listen:?} needs a port other than 0"),
        ),
        Ok(addr) => {
            if let Some((port, what)) = RESERVED_PORTS.iter().find(|(p, _)| *p == addr.port()) {
                push(
                    path.to_owned(),
                    format!("{listen:?} is not valid: port {port} is {what}"),
                );
            }
        }
        Err(_) => push(
            path.to_owned(),
            format!("{listen:?} is not an ip:port socket address"),
        ),
    }
}

/// Whether two listeners cannot both be bound: the same port on the same
/// address, or on any address when one of them is a wildcard (`0.0.0.0`, and
/// `[::]`, which the proxy binds dual-stack).
pub fn listeners_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn check_balancing(b: &Balancing, at: &str, push: &mut impl FnMut(String, String)) {
    if b.name.is_empty() {
        push(format!("{at}.name"), "must not be empty".into());
    } else if b.name.len() > 253 || !b.name.chars().all(is_name_char) {
        push(
            format!("{at}.name"),
            format!(
                "{:?} must be 1-253 characters of a-z, 0-9, '-', '.' or '_'",
                b.name
            ),
        );
    }
    check_listen(&b.listen, &format!("{at}.listen"), push);
    if let Some(service) = &b.service {
        check_service_front(service, &format!("{at}.service"), push);
    }
    match (b.policy.kind, &b.policy.header) {
        (PolicyKind::RingHash, None) => push(
            format!("{at}.policy.header"),
            "ring_hash needs the name of the request header to hash".into(),
        ),
        (_, Some(h)) if !is_header_name(h) => push(
            format!("{at}.policy.header"),
            format!("{h:?} is not a valid lower-case HTTP/2 header name"),
        ),
        _ => {}
    }
    if b.subsets.is_empty() {
        push(format!("{at}.subsets"), "needs at least one subset".into());
    } else if b.subsets.iter().all(|s| s.weight == 0) {
        push(
            format!("{at}.subsets"),
            "at least one subset needs a weight above 0".into(),
        );
    }
    let mut subset_names = HashSet::new();
    for (j, s) in b.subsets.iter().enumerate() {
        let sat = format!("{at}.subsets[{j}]");
        if s.name.is_empty() || !s.name.chars().all(is_name_char) {
            push(
                format!("{sat}.name"),
                format!("{:?} must be non-empty a-z, 0-9, '-', '.' or '_'", s.name),
            );
        }
        if !subset_names.insert(s.name.as_str()) {
            push(
                format!("{sat}.name"),
                format!("{:?} is used by an earlier subset", s.name),
            );
        }
        if s.weight > 1_000_000 {
            push(
                format!("{sat}.weight"),
                format!("{} is above the maximum of 1000000", s.weight),
            );
        }
        match s.discovery.source() {
            None => push(
                format!("{sat}.discovery"),
                "set exactly one of dns and static".into(),
            ),
            Some(DiscoverySource::Dns(dns)) => {
                if dns.name.is_empty()
                    || dns.name.len() > 253
                    || dns.name.contains(char::is_whitespace)
                {
                    push(
                        format!("{sat}.discovery.dns.name"),
                        format!("{:?} is not a DNS name", dns.name),
                    );
                }
                if dns.port == 0 {
                    push(
                        format!("{sat}.discovery.dns.port"),
                        "must be 1-65535".into(),
                    );
                }
                if dns.refresh_interval.as_std() < std::time::Duration::from_millis(100) {
                    push(
                        format!("{sat}.discovery.dns.refreshInterval"),
                        format!("{} is below the minimum of 100ms", dns.refresh_interval),
                    );
                }
            }
            Some(DiscoverySource::Static(addrs)) => {
                for (k, a) in addrs.iter().enumerate() {
                    if a.parse::<SocketAddr>().is_err() {
                        push(
                            format!("{sat}.discovery.static[{k}]"),
                            format!("{a:?} is not an ip:port socket address"),
                        );
                    }
                }
            }
        }
    }
    if let Some(t) = b.timeout
        && t.as_std().is_zero()
    {
        push(
            format!("{at}.timeout"),
            "must be above 0 (leave it out for no proxy deadline)".into(),
        );
    }
    let r = &b.retries;
    if r.max_attempts == 0 || r.max_attempts > 10 {
        push(
            format!("{at}.retries.maxAttempts"),
            format!("{} must be 1-10 (1 disables retries)", r.max_attempts),
        );
    }
    if r.budget_percent > 100 {
        push(
            format!("{at}.retries.budgetPercent"),
            format!("{} must be 0-100", r.budget_percent),
        );
    }
    for (k, m) in r.idempotent_methods.iter().enumerate() {
        if !m.starts_with('/') || m.matches('/').count() != 2 {
            push(
                format!("{at}.retries.idempotentMethods[{k}]"),
                format!("{m:?} must be a full method path like /pkg.Service/Method"),
            );
        }
    }
    let o = &b.outlier_detection;
    if o.max_ejection_percent > 100 {
        push(
            format!("{at}.outlierDetection.maxEjectionPercent"),
            format!("{} must be 0-100", o.max_ejection_percent),
        );
    }
    if o.consecutive_failures > 0 && o.base_ejection_time.as_std().is_zero() {
        push(
            format!("{at}.outlierDetection.baseEjectionTime"),
            "must be above 0 when ejection is on".into(),
        );
    }
    if o.max_ejection_time < o.base_ejection_time {
        push(
            format!("{at}.outlierDetection.maxEjectionTime"),
            format!(
                "{} is below baseEjectionTime {}",
                o.max_ejection_time, o.base_ejection_time
            ),
        );
    }
    if let Some(h) = &b.health_check {
        if h.interval.as_std() < std::time::Duration::from_millis(100) {
            push(
                format!("{at}.healthCheck.interval"),
                format!("{} is below the minimum of 100ms", h.interval),
            );
        }
        if h.timeout.as_std().is_zero() {
            push(
                format!("{at}.healthCheck.timeout"),
                "must be above 0".into(),
            );
        }
        if h.unhealthy_threshold == 0 || h.healthy_threshold == 0 {
            push(
                format!("{at}.healthCheck"),
                "unhealthyThreshold and healthyThreshold must be at least 1".into(),
            );
        }
    }
    if b.queue.max_pending == 0 {
        push(
            format!("{at}.queue.maxPending"),
            "must be at least 1".into(),
        );
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_')
}

fn is_header_name(h: &str) -> bool {
    !h.is_empty()
        && h.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.!#$%&'*+^`|~".contains(&b)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
balancings:
  - name: greeter
    listen: 127.0.0.1:15001
    policy: { kind: round_robin }
    subsets:
      - name: v1
        weight: 75
        discovery:
          dns: { name: greeter-v1.demo.svc.cluster.local, port: 50051 }
      - name: v2
        weight: 25
        discovery:
          static: [127.0.0.3:50051]
"#;

    #[test]
    fn parses_a_good_config_and_fills_defaults() {
        let c = parse_yaml(GOOD).expect("valid");
        let b = &c.balancings[0];
        assert_eq!(b.policy.kind, PolicyKind::RoundRobin);
        assert_eq!(b.subsets[0].weight, 75);
        match b.subsets[0].discovery.source() {
            Some(DiscoverySource::Dns(d)) => assert_eq!(d.refresh_interval.as_std().as_secs(), 5),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(b.timeout, None);
        assert_eq!(b.retries.max_attempts, 3);
    }

    #[test]
    fn round_trips_through_yaml() {
        let c = parse_yaml(GOOD).expect("valid");
        let text = to_yaml(&c).expect("renders");
        assert_eq!(parse_yaml(&text).expect("reparses"), c);
    }

    #[test]
    fn empty_document_is_an_empty_config() {
        assert_eq!(parse_yaml("").expect("empty ok"), ProxyConfig::default());
        assert_eq!(
            parse_yaml("\n  \n").expect("blank ok"),
            ProxyConfig::default()
        );
    }

    #[test]
    fn syntax_errors_name_the_field() {
        let e = parse_yaml("balancings:\n  - name: a\n    listen: 1\n    subsets: 7\n")
            .expect_err("bad");
        assert_eq!(e.errors.len(), 1);
        assert!(e.errors[0].path.contains("balancings[0].subsets"), "{e}");
        let e = parse_yaml("balancings:\n  - name: a\n    listn: x\n").expect_err("bad");
        assert!(e.to_string().contains("listn"), "{e}");
    }

    #[test]
    fn semantic_errors_are_all_reported_with_paths() {
        let text = r#"
balancings:
  - name: Bad Name
    listen: not-an-address
    policy: { kind: ring_hash }
    subsets:
      - name: a
        weight: 0
        discovery: { static: [nope] }
      - name: a
        weight: 0
        discovery: { dns: { name: "", port: 0, refreshInterval: 1ms } }
    retries: { maxAttempts: 0, budgetPercent: 500 }
    outlierDetection: { maxEjectionPercent: 101 }
"#;
        let e = parse_yaml(text).expect_err("bad");
        let paths: Vec<&str> = e.errors.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "balancings[0].name",
            "balancings[0].listen",
            "balancings[0].policy.header",
            "balancings[0].subsets",
            "balancings[0].subsets[0].discovery.static[0]",
            "balancings[0].subsets[1].name",
            "balancings[0].subsets[1].discovery.dns.name",
            "balancings[0].subsets[1].discovery.dns.port",
            "balancings[0].subsets[1].discovery.dns.refreshInterval",
            "balancings[0].retries.maxAttempts",
            "balancings[0].retries.budgetPercent",
            "balancings[0].outlierDetection.maxEjectionPercent",
        ] {
            assert!(paths.contains(&want), "missing {want} in {paths:?}");
        }
    }

    #[test]
    fn hostile_documents_get_errors_not_panics() {
        let deep = "[".repeat(10_000);
        let huge = "a".repeat(MAX_CONFIG_BYTES + 1);
        for text in [
            "\u{0}\u{1}\u{2}",
            "balancings: !!binary aGVsbG8=",
            "&a [*a]",
            deep.as_str(),
            huge.as_str(),
            "balancings:\n  - *undefined",
            "- 1\n- 2",
            "balancings: [{name: a, listen: '127.0.0.1:1', subsets: [{name: s, weight: -1, discovery: {static: []}}]}]",
        ] {
            assert!(
                parse_yaml(text).is_err(),
                "{:?} should fail",
                &text[..text.len().min(40)]
            );
        }
    }

    #[test]
    fn duplicate_names_and_listeners_are_rejected() {
        let text = r#"
balancings:
  - { name: a, listen: "127.0.0.1:1", subsets: [{ name: s, discovery: { static: [] } }] }
  - { name: a, listen: "127.0.0.1:1", subsets: [{ name: s, discovery: { static: [] } }] }
"#;
        let e = parse_yaml(text).expect_err("bad");
        let paths: Vec<&str> = e.errors.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"balancings[1].name"), "{paths:?}");
        assert!(paths.contains(&"balancings[1].listen"), "{paths:?}");
    }

    fn one(listen: &str, endpoint: &str) -> String {
        format!(
            "balancings:\n  - {{ name: a, listen: \"{listen}\", subsets: [{{ name: s, discovery: {{ static: [\"{endpoint}\"] }} }}] }}\n"
        )
    }

    #[test]
    fn the_admin_port_is_not_a_listener_port() {
        for listen in ["127.0.0.1:9901", "0.0.0.0:9901", "[::1]:9901"] {
            let e = parse_yaml(&one(listen, "127.0.0.1:50051")).expect_err(listen);
            assert_eq!(e.errors.len(), 1, "{e}");
            assert_eq!(
                e.errors[0].to_string(),
                format!(
                    "balancings[0].listen: {listen:?} is not valid: port 9901 is the sidecar's admin port (/live, /ready, /metrics)"
                )
            );
        }
        parse_yaml(&one("127.0.0.1:9902", "127.0.0.1:9901")).expect("a backend may use 9901");
    }

    #[test]
    fn ipv6_listeners_and_endpoints_are_accepted() {
        let c = parse_yaml(&one("[::1]:15001", "[fd00::1]:50051")).expect("IPv6 is valid");
        assert_eq!(c.balancings[0].listen, "[::1]:15001");
        let text = r#"
balancings:
  - { name: a, listen: "[::]:15001", subsets: [{ name: s, discovery: { static: ["[fd00::1]:50051", "10.0.0.1:50051"], } }] }
  - { name: b, listen: "[::1]:15002", subsets: [{ name: s, discovery: { dns: { name: "fd00--1.example", port: 50051 } } }] }
"#;
        parse_yaml(text).expect("dual-stack and IPv6 loopback listeners");
        let e = parse_yaml(&one("::1:15001", "127.0.0.1:1")).expect_err("needs brackets");
        assert_eq!(e.errors[0].path, "balancings[0].listen");
    }

    #[test]
    fn listeners_on_the_same_port_overlap_through_wildcards() {
        for (first, second) in [
            ("127.0.0.1:15001", "0.0.0.0:15001"),
            ("0.0.0.0:15001", "127.0.0.1:15001"),
            ("[::]:15001", "127.0.0.1:15001"),
            ("[::1]:15001", "[::]:15001"),
            ("[::1]:15001", "[::1]:15001"),
        ] {
            let text = format!(
                "balancings:\n  - {{ name: a, listen: \"{first}\", subsets: [{{ name: s, discovery: {{ static: [] }} }}] }}\n  - {{ name: b, listen: \"{second}\", subsets: [{{ name: s, discovery: {{ static: [] }} }}] }}\n"
            );
            let e = parse_yaml(&text).expect_err(&text);
            assert_eq!(
                e.errors[0].to_string(),
                format!(
                    "balancings[1].listen: {second:?} is not valid: balancing \"a\" listens on the same port"
                )
            );
        }
        let text = "balancings:\n  - { name: a, listen: \"127.0.0.1:15001\", subsets: [{ name: s, discovery: { static: [] } }] }\n  - { name: b, listen: \"127.0.0.2:15001\", subsets: [{ name: s, discovery: { static: [] } }] }\n  - { name: c, listen: \"[::1]:15001\", subsets: [{ name: s, discovery: { static: [] } }] }\n";
        parse_yaml(text).expect("distinct addresses share a port");
    }

    #[test]
    fn partial_parsing_keeps_the_valid_balancings() {
        let text = r#"
balancings:
  - { name: good, listen: "127.0.0.1:15001", subsets: [{ name: s, discovery: { static: [] } }] }
  - { name: admin, listen: "127.0.0.1:9901", subsets: [{ name: s, discovery: { static: [] } }] }
  - { name: good, listen: "127.0.0.1:15003", subsets: [{ name: s, discovery: { static: [] } }] }
  - { name: other, listen: "127.0.0.1:15004", subsets: [{ name: s, weight: 0, discovery: { static: [] } }] }
  - { name: fine, listen: "127.0.0.1:15005", subsets: [{ name: s, discovery: { static: [] } }] }
"#;
        let p = parse_yaml_partial(text).expect("readable");
        let names: Vec<&str> = p
            .config
            .balancings
            .iter()
            .map(|b| b.name.as_str())
            .collect();
        assert_eq!(names, ["good", "fine"]);
        assert_eq!(p.rejected, ["admin", "good", "other"]);
        assert_eq!(p.errors.len(), 3, "{:?}", p.errors);
        assert!(validate(&p.config).is_empty());
        assert!(parse_yaml_partial("balancings: 7").is_err());
        let all_good = parse_yaml_partial(GOOD).expect("valid");
        assert!(all_good.errors.is_empty() && all_good.rejected.is_empty());
        assert_eq!(all_good.config, parse_yaml(GOOD).expect("valid"));
    }

    const FRONT: &str = r#"
balancings:
  - name: greeter
    listen: "127.0.10.1:50051"
    subsets: [{ name: s, discovery: { static: ["10.244.0.5:50051"] } }]
    service:
      hostnames: [greeter, greeter.demo, greeter.demo.svc, greeter.demo.svc.cluster.local]
      passthrough: "10.96.0.20:50051"
      forwards: [{ listen: "127.0.10.1:8080", to: "10.96.0.20:8080" }]
"#;

    #[test]
    fn a_service_front_round_trips() {
        let c = parse_yaml(FRONT).expect("valid");
        let front = c.balancings[0].service.as_ref().expect("service");
        assert_eq!(front.hostnames.len(), 4);
        assert_eq!(front.forwards[0].to, "10.96.0.20:8080");
        let again = parse_yaml(&to_yaml(&c).expect("yaml")).expect("valid");
        assert_eq!(again, c);
    }

    #[test]
    fn hostile_service_fronts_are_refused_with_their_paths() {
        let cases = [
            (
                "hostnames: [greeter, greeter.demo",
                "hostnames: [\"\", \"Greeter\", \"a..b\", \"-x\", \"a b\"",
                &[
                    "balancings[0].service.hostnames[0]",
                    "balancings[0].service.hostnames[1]",
                    "balancings[0].service.hostnames[2]",
                    "balancings[0].service.hostnames[3]",
                    "balancings[0].service.hostnames[4]",
                ][..],
            ),
            (
                "passthrough: \"10.96.0.20:50051\"",
                "passthrough: \"greeter:50051\"",
                &["balancings[0].service.passthrough"][..],
            ),
            (
                "to: \"10.96.0.20:8080\"",
                "to: \"nowhere\"",
                &["balancings[0].service.forwards[0].to"][..],
            ),
            (
                "listen: \"127.0.10.1:8080\"",
                "listen: \"127.0.10.1:9901\"",
                &["balancings[0].service.forwards[0].listen"][..],
            ),
            (
                "listen: \"127.0.10.1:8080\"",
                "listen: \"127.0.10.1:50051\"",
                &["balancings[0].service.forwards[0].listen"][..],
            ),
            (
                "listen: \"127.0.10.1:8080\"",
                "listen: \"0.0.0.0:50051\"",
                &["balancings[0].service.forwards[0].listen"][..],
            ),
        ];
        for (from, to, paths) in cases {
            let text = FRONT.replacen(from, to, 1);
            let whole = text.replacen(
                ", greeter.demo.svc, greeter.demo.svc.cluster.local]",
                "]",
                1,
            );
            let e = parse_yaml(&whole).expect_err(to);
            let got: Vec<&str> = e.errors.iter().map(|e| e.path.as_str()).collect();
            assert_eq!(got, paths, "{to}: {e}");
        }
        let empty = FRONT.replacen(
            "[greeter, greeter.demo, greeter.demo.svc, greeter.demo.svc.cluster.local]",
            "[]",
            1,
        );
        let e = parse_yaml(&empty).expect_err("no names");
        assert_eq!(e.errors[0].path, "balancings[0].service.hostnames");
        let long = FRONT.replacen(
            "hostnames: [greeter,",
            &format!("hostnames: [{},", "a".repeat(64)),
            1,
        );
        assert!(parse_yaml(&long).is_err(), "a label of 64 characters");
        let unknown = FRONT.replacen("passthrough:", "sideways: 1\n      passthrough:", 1);
        assert!(parse_yaml(&unknown).is_err(), "unknown fields are refused");
    }
}
