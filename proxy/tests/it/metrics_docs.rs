//! The metric tables of README.md and proxy/README.md against what a real
//! proxy exports on /metrics: the same metrics, the same label names, and
//! for labels with a fixed set of values, the same values as the enums the
//! code counts with (and the help text names).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use crate::support::*;
use grpc_balancer_crds::config::{HealthCheck, PolicyKind, to_yaml};
use grpc_balancer_greeter::Faults;
use grpc_balancer_proxy::ConfigSource;
use grpc_balancer_proxy::metrics::{
    DiscoveryResult, EndpointStateLabel, HealthResult, LabelValue, ReloadResult, RetryOutcome,
    SubsetSource,
};
use tonic::Code;

/// Metric (as documented) → its label with a fixed set of values.
fn enumerated() -> BTreeMap<&'static str, (&'static str, Vec<&'static str>)> {
    fn all<T: LabelValue>() -> Vec<&'static str> {
        T::ALL.iter().map(|v| v.as_str()).collect()
    }
    BTreeMap::from([
        ("endpoints", ("state", all::<EndpointStateLabel>())),
        ("retries_total", ("outcome", all::<RetryOutcome>())),
        (
            "discovery_refreshes_total",
            ("result", all::<DiscoveryResult>()),
        ),
        ("health_checks_total", ("result", all::<HealthResult>())),
        ("config_reloads_total", ("result", all::<ReloadResult>())),
        ("discovery_subsets", ("source", all::<SubsetSource>())),
    ])
}

#[derive(Debug, Default, PartialEq)]
struct Documented {
    labels: BTreeSet<String>,
    values: BTreeSet<String>,
}

/// The rows of the proxy's metric table in `file`: the table that follows
/// `heading`.
fn documented(file: &str, heading: &str) -> BTreeMap<String, Documented> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file);
    let text = std::fs::read_to_string(&path).expect("read the README");
    let from = text
        .find(heading)
        .unwrap_or_else(|| panic!("{file}: no {heading:?}"));
    let mut rows = BTreeMap::new();
    let mut in_table = false;
    for line in text[from..].lines().skip(1) {
        if !line.starts_with('|') {
            if in_table {
                break;
            }
            continue;
        }
        in_table = true;
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() != 3 || cells[0] == "metric" || cells[0].starts_with("---") {
            continue;
        }
        let name = cells[0].trim_matches('`').to_owned();
        rows.insert(
            name,
            Documented {
                labels: ticked(cells[1]).collect(),
                values: ticked(cells[2])
                    .filter(|t| !t.contains(['=', ' ']))
                    .collect(),
            },
        );
    }
    assert!(
        !rows.is_empty(),
        "{file}: no metric table after {heading:?}"
    );
    rows
}

fn ticked(cell: &str) -> impl Iterator<Item = String> + '_ {
    cell.split('`').skip(1).step_by(2).map(str::to_owned)
}

#[derive(Debug, Default)]
struct Exported {
    help: String,
    labels: BTreeSet<String>,
    values: BTreeMap<String, BTreeSet<String>>,
}

/// Families of an OpenMetrics text, by documented name (counters with
/// `_total`), without the `grpc_balancer_` prefix.
fn exported(text: &str) -> BTreeMap<String, Exported> {
    let mut kinds: BTreeMap<String, String> = BTreeMap::new();
    let mut out: BTreeMap<String, Exported> = BTreeMap::new();
    let doc_name = |family: &str, kind: &str| {
        let f = family.strip_prefix("grpc_balancer_").expect("prefixed");
        if kind == "counter" {
            format!("{f}_total")
        } else {
            f.to_owned()
        }
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').expect("TYPE line");
            kinds.insert(family.to_owned(), kind.to_owned());
            out.entry(doc_name(family, kind)).or_default();
        }
    }
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (family, help) = rest.split_once(' ').expect("HELP line");
            let kind = &kinds[family];
            out.entry(doc_name(family, kind)).or_default().help = help.to_owned();
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("a sample");
        let sample = &line[..name_end];
        let family = kinds
            .keys()
            .filter(|f| sample.starts_with(f.as_str()))
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("sample of no family: {line}"));
        let entry = out.entry(doc_name(family, &kinds[family])).or_default();
        if line[name_end..].starts_with('{') {
            let body = &line[name_end + 1..line.find('}').expect("closing brace")];
            for (k, v) in labels(body) {
                if k == "le" {
                    continue;
                }
                entry.labels.insert(k.clone());
                entry.values.entry(k).or_default().insert(v);
            }
        }
    }
    out
}

fn labels(body: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some((key, after)) = rest.split_once("=\"") {
        let end = after.find('"').expect("closing quote");
        out.push((
            key.trim_start_matches(',').to_owned(),
            after[..end].to_owned(),
        ));
        rest = &after[end + 1..];
    }
    out
}

/// A proxy whose every metric family has a series: a call, an ejection,
/// health checks, a listener that cannot bind, a reload, a TLS-like
/// connection to a Service front.
async fn scrape_busy_proxy() -> String {
    let bs = backends(2).await;
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut greeter = greeter_balancing(&bs, PolicyKind::RoundRobin);
    greeter.outlier_detection.consecutive_failures = 1;
    greeter.health_check = Some(HealthCheck {
        service: String::new(),
        interval: grpc_balancer_crds::config::Duration::from_millis(100),
        timeout: grpc_balancer_crds::config::Duration::from_millis(500),
        unhealthy_threshold: 2,
        healthy_threshold: 1,
    });
    let mut blocked = greeter_balancing(&bs, PolicyKind::Random);
    blocked.name = "blocked".into();
    blocked.listen = blocker.local_addr().expect("addr").to_string();
    blocked.health_check = None;
    // A balancing standing in for a Service: a connection that is not h2c
    // is relayed (to a port nobody answers: the count is what matters).
    let mut front = greeter_balancing(&bs, PolicyKind::RoundRobin);
    front.name = "front".into();
    front.health_check = None;
    front.service = Some(grpc_balancer_crds::config::ServiceFront {
        hostnames: vec!["greeter".into()],
        passthrough: free_addr().to_string(),
        forwards: Vec::new(),
    });
    let front_addr: std::net::SocketAddr = front.listen.parse().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        to_yaml(&config(vec![greeter, blocked, front])).expect("yaml"),
    )
    .expect("write");
    let proxy = start(test_settings(ConfigSource::File(path))).await;
    wait_ready(&proxy, "greeter", 2).await;
    let mut client = proxy.client("greeter").await;
    bs[0].set_faults(Faults::fail(Code::Unavailable, "sick"));
    for _ in 0..4 {
        let _ = say_hello(&mut client).await;
    }
    let admin = proxy.admin();
    eventually(
        Duration::from_secs(5),
        "the front listening",
        || async move { tokio::net::TcpStream::connect(front_addr).await.is_ok() },
    )
    .await;
    {
        use tokio::io::AsyncWriteExt as _;
        let mut tls = tokio::net::TcpStream::connect(front_addr)
            .await
            .expect("connect");
        tls.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05])
            .await
            .expect("a ClientHello's first bytes");
        eventually(Duration::from_secs(5), "the relay counted", || async move {
            admin_get(admin, "/metrics")
                .await
                .1
                .contains("unbalanced_connections_total{balancing=\"front\"} 1")
        })
        .await;
    }
    eventually(Duration::from_secs(5), "health checks ran", || async move {
        admin_get(admin, "/metrics")
            .await
            .1
            .contains("result=\"serving\"} 1")
    })
    .await;
    let (_, text) = admin_get(admin, "/metrics").await;
    proxy.stop().await;
    drop(blocker);
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_metric_tables_match_what_the_proxy_exports() {
    let text = scrape_busy_proxy().await;
    let exported = exported(&text);
    let enums = enumerated();
    for (file, heading) in [
        ("README.md", "Proxy (prefix `grpc_balancer_`):"),
        ("proxy/README.md", "## Metrics"),
    ] {
        let docs = documented(file, heading);
        assert_eq!(
            docs.keys().collect::<Vec<_>>(),
            exported.keys().collect::<Vec<_>>(),
            "{file}: documented metrics vs exported ones"
        );
        for (name, doc) in &docs {
            let exp = &exported[name];
            assert_eq!(
                doc.labels, exp.labels,
                "{file}: labels of {name} (exported: {text})"
            );
            match enums.get(name.as_str()) {
                Some((label, all)) => {
                    let all: BTreeSet<String> = all.iter().map(|s| (*s).to_owned()).collect();
                    assert_eq!(doc.values, all, "{file}: values of {name}.{label}");
                    assert_eq!(
                        exp.values.get(*label).cloned().unwrap_or_default(),
                        all,
                        "exported values of {name}.{label}"
                    );
                    let listed = all.iter().all(|v| exp.help.contains(v.as_str()));
                    assert!(listed, "help of {name}: {:?}", exp.help);
                }
                None => assert!(
                    doc.values.is_empty(),
                    "{file}: {name} lists values {:?} but has no enumerated label",
                    doc.values
                ),
            }
        }
    }
}
