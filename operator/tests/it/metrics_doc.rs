//! The README's table of operator metrics against what the operator binary
//! exports on its real `/metrics`: the same metric names, the same labels,
//! and for each label whose values are a closed set (an enum in the code)
//! exactly those values in the docs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::SystemTime;

use crate::support::process::{OperatorProcess, free_port, webhook_request};
use crate::support::{TIMEOUT, install_crd};
use grpc_balancer_crds::v1alpha1::GrpcBalancing;
use grpc_balancer_operator::metrics::{Controller, ErrorKind, RefusalReason};
use grpc_balancer_operator::render::fixtures::with_spec;
use grpc_balancer_test_support::{ControlPlane, TestNamespace, poll_until};
use grpc_balancer_webhook::Outcome;
use grpc_balancer_webhook::certs::{generate, serving_names};
use kube::api::{Api, PostParams};

const PREFIX: &str = "grpc_balancer_operator_";

/// One row of the README table: metric name, labels, backticked words of
/// the meaning column.
#[derive(Debug)]
struct DocRow {
    labels: BTreeSet<String>,
    words: BTreeSet<String>,
}

fn backticked(cell: &str) -> BTreeSet<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The operator table of README.md: the table after the line introducing
/// the operator's metrics.
fn documented() -> BTreeMap<String, DocRow> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&path).expect("README.md readable");
    let start = text
        .find(&format!("Operator (prefix `{PREFIX}`"))
        .expect("README.md introduces the operator's metrics table");
    text[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = backticked(cells[1])
                .into_iter()
                .next()
                .unwrap_or_else(|| panic!("no metric name in {line:?}"));
            (
                name,
                DocRow {
                    labels: backticked(cells[2]),
                    words: backticked(cells[3]),
                },
            )
        })
        .collect()
}

/// Metric families the process exports (names as documented: counters with
/// `_total`), each with the label names its samples carry.
fn exported(metrics: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut families: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let short = name.strip_prefix(PREFIX).unwrap_or(name).to_owned();
            let documented = if kind == "counter" {
                format!("{short}_total")
            } else {
                short.clone()
            };
            families.insert(short, (documented, BTreeSet::new()));
        } else if !line.starts_with('#') && !line.is_empty() {
            let Some(name_end) = line.find(['{', ' ']) else {
                continue;
            };
            let sample = line[..name_end]
                .strip_prefix(PREFIX)
                .unwrap_or(&line[..name_end]);
            let family = families
                .keys()
                .filter(|f| sample.starts_with(f.as_str()))
                .max_by_key(|f| f.len())
                .cloned();
            let (Some(family), Some(labels)) = (family, line.get(name_end..)) else {
                continue;
            };
            if let Some(inner) = labels.strip_prefix('{').and_then(|l| l.split('}').next()) {
                let entry = &mut families.get_mut(&family).expect("known family").1;
                for pair in inner.split(',') {
                    if let Some((key, _)) = pair.split_once('=')
                        && key != "le"
                    {
                        entry.insert(key.to_owned());
                    }
                }
            }
        }
    }
    families.into_values().collect()
}

/// The label values the code allows, for labels with a closed set.
fn enum_values() -> BTreeMap<&'static str, BTreeSet<String>> {
    BTreeMap::from([
        (
            "controller",
            Controller::ALL
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect(),
        ),
        (
            "error",
            ErrorKind::ALL
                .iter()
                .map(|e| e.as_str().to_owned())
                .collect(),
        ),
        (
            "outcome",
            Outcome::ALL.iter().map(|o| o.as_str().to_owned()).collect(),
        ),
        (
            "reason",
            RefusalReason::ALL
                .iter()
                .map(|r| r.as_str().to_owned())
                .collect(),
        ),
    ])
}

/// A body that is not an AdmissionReview, posted to the webhook over TLS:
/// an `outcome` sample appears.
async fn post_garbage(port: u16, ca_pem: &str) -> Result<String, String> {
    let body = "not a review";
    let request = format!(
        "POST /mutate HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    webhook_request(port, ca_pem, request.as_bytes()).await
}

#[tokio::test]
async fn the_readme_metrics_table_matches_the_operator_process() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "op-metrics-doc").await;
    let cert_dir = tempfile::tempdir().expect("a temp dir");
    let certs = generate(
        &serving_names("grpc-balancer-webhook", ns.name(), &[]),
        SystemTime::now(),
    )
    .expect("certificates");
    std::fs::write(cert_dir.path().join("tls.crt"), &certs.cert_pem).expect("tls.crt");
    std::fs::write(cert_dir.path().join("tls.key"), &certs.key_pem).expect("tls.key");
    let webhook_port = free_port();
    let op = OperatorProcess::start(
        cp,
        ns.name(),
        "op-metrics-doc",
        &[
            format!("--webhook-listen=127.0.0.1:{webhook_port}"),
            "--webhook-cert-source=cert-manager".into(),
            format!("--webhook-cert-dir={}", cert_dir.path().display()),
            "--sidecar-mode=native".into(),
        ],
    );
    // Activity for every labelled family: both controllers reconcile, API
    // requests are counted, the webhook answers a review.
    let gbs: Api<GrpcBalancing> = Api::namespaced(client.clone(), ns.name());
    gbs.create(
        &PostParams::default(),
        &with_spec(
            "doc",
            "selector: { app: doc }\nport: 50051\nlistenerPort: 15001\n",
        ),
    )
    .await
    .expect("created");
    poll_until("the webhook to answer", TIMEOUT, || {
        post_garbage(webhook_port, &certs.ca_pem)
    })
    .await;
    let metrics = poll_until("both controllers to have reconciled", TIMEOUT, || async {
        let (_, text) = op.get("/metrics").await?;
        let seen = |c: Controller| {
            let sample = format!("{PREFIX}reconciles_total{{controller=\"{}\"}} ", c.as_str());
            text.lines()
                .filter_map(|l| l.strip_prefix(&sample))
                .any(|v| v.parse::<f64>().is_ok_and(|v| v > 0.0))
        };
        if Controller::ALL.iter().all(|c| seen(*c)) {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .await;

    let docs = documented();
    let exported = exported(&metrics);
    let mut problems = Vec::new();
    let doc_names: BTreeSet<&String> = docs.keys().collect();
    let exported_names: BTreeSet<&String> = exported.keys().collect();
    for name in exported_names.difference(&doc_names) {
        problems.push(format!("{name}: exported but not in the README table"));
    }
    for name in doc_names.difference(&exported_names) {
        problems.push(format!("{name}: in the README table but not exported"));
    }
    for (name, labels) in &exported {
        if let Some(row) = docs.get(name)
            && !labels.is_empty()
            && &row.labels != labels
        {
            problems.push(format!(
                "{name}: labels {labels:?} exported, {:?} documented",
                row.labels
            ));
        }
    }
    let enums = enum_values();
    for (label, values) in &enums {
        let rows: Vec<&DocRow> = docs
            .values()
            .filter(|r| r.labels.contains(*label))
            .collect();
        let documented: BTreeSet<String> = rows
            .iter()
            .flat_map(|r| r.words.iter())
            .filter(|w| values.contains(*w))
            .cloned()
            .collect();
        if &documented != values {
            problems.push(format!(
                "label {label}: the code has {values:?}, the README documents {documented:?}"
            ));
        }
        // A documented word of a row with only this closed label that is no
        // value of it: a stale value.
        for row in rows.iter().filter(|r| r.labels.len() == 1) {
            for word in row.words.iter().filter(|w| !values.contains(*w)) {
                if word.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    problems.push(format!(
                        "label {label}: the README documents {word:?}, which the code does not have"
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\nscraped:\n{metrics}",
        problems.join("\n")
    );
}
