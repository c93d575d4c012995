//! The chart's Grafana dashboard and the metrics the processes export must
//! agree both ways: every series a panel queries exists, and every metric
//! family has a panel. A renamed metric otherwise leaves an empty panel that
//! nobody notices until an incident.

use std::collections::BTreeSet;
use std::time::Duration;

use grpc_balancer_operator::metrics::{
    ApiRequestCounter, Controller, ErrorKind, Metrics as OperatorMetrics,
};
use grpc_balancer_proxy::metrics::{
    BalancingLabels, CallLabels, DiscoveryLabels, EndpointStateLabels, HealthLabels,
    Metrics as ProxyMetrics, ResultLabels, RetryLabels, SubsetLabels,
};
use grpc_balancer_webhook::{Outcome, WebhookMetrics};
use prometheus_client::registry::Registry;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../charts/grpc-balancer/dashboards/grpc-balancer.json"
);

/// One metric family: its name and OpenMetrics type, from the `# TYPE` lines.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Family {
    name: String,
    kind: String,
}

impl Family {
    /// The sample names a query may use for this family.
    fn series(&self) -> Vec<String> {
        let n = &self.name;
        match self.kind.as_str() {
            "counter" => vec![format!("{n}_total")],
            "histogram" => ["bucket", "count", "sum"]
                .iter()
                .map(|s| format!("{n}_{s}"))
                .collect(),
            _ => vec![n.clone()],
        }
    }
}

fn families(registry: &Registry) -> Vec<Family> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encodes");
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| Family {
            name: name.to_owned(),
            kind: kind.to_owned(),
        })
        .collect()
}

/// Registers every metric of the proxy, the operator and the webhook, with
/// one series each: an empty family is not encoded at all.
fn exported() -> Vec<Family> {
    let (proxy, proxy_registry) = ProxyMetrics::new();
    let s = String::new;
    let _ = proxy.calls.get_or_create(&CallLabels {
        balancing: s(),
        subset: s(),
        endpoint: s(),
        grpc_status: s(),
    });
    let subset = SubsetLabels {
        balancing: s(),
        subset: s(),
    };
    let _ = proxy.call_duration.get_or_create(&subset);
    let _ = proxy.ejections.get_or_create(&subset);
    let balancing = BalancingLabels { balancing: s() };
    let _ = proxy.calls_in_flight.get_or_create(&balancing);
    let _ = proxy.downstream_connections.get_or_create(&balancing);
    let _ = proxy.listener_bind_errors.get_or_create(&balancing);
    let _ = proxy.unbalanced_connections.get_or_create(&balancing);
    let _ = proxy.endpoints.get_or_create(&EndpointStateLabels {
        balancing: s(),
        subset: s(),
        state: s(),
    });
    let _ = proxy.retries.get_or_create(&RetryLabels {
        balancing: s(),
        outcome: s(),
    });
    let _ = proxy.discovery_refreshes.get_or_create(&DiscoveryLabels {
        balancing: s(),
        subset: s(),
        result: s(),
    });
    let _ = proxy.health_checks.get_or_create(&HealthLabels {
        balancing: s(),
        subset: s(),
        result: s(),
    });
    let _ = proxy
        .config_reloads
        .get_or_create(&ResultLabels { result: s() });

    let api_requests = ApiRequestCounter::default();
    api_requests.record("get", "pods");
    let mut operator = OperatorMetrics::new(api_requests);
    operator.observe(
        Controller::GrpcBalancing,
        Duration::ZERO,
        Some(ErrorKind::ApplyService),
    );
    let webhook = WebhookMetrics::default();
    webhook.register(&mut operator.registry);
    webhook.observe(Outcome::Injected, Duration::ZERO);

    let mut all = Vec::new();
    for registry in [&proxy_registry, &operator.registry] {
        let found = families(registry);
        // Every registered metric must have been given a series above, or
        // the checks below would silently skip it. The count comes from the
        // registry's Debug output (one `Descriptor` per metric); should a
        // prometheus-client release print it differently, this fails loudly.
        let registered = format!("{registry:?}").matches("Descriptor {").count();
        assert_eq!(
            found.len(),
            registered,
            "a metric was registered but not populated by this test: {found:?}"
        );
        all.extend(found);
    }
    all
}

/// Every `grpc_balancer_…` name in the dashboard's queries.
fn queried() -> BTreeSet<String> {
    let text = std::fs::read_to_string(DASHBOARD).expect("the dashboard is readable");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut names = BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for target in panels
        .iter()
        .filter_map(|p| p["targets"].as_array())
        .flatten()
    {
        let expr = target["expr"].as_str().expect("a query");
        let mut rest = expr;
        while let Some(at) = rest.find("grpc_balancer_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names
}

#[test]
fn every_panel_queries_an_exported_series() {
    let series: BTreeSet<String> = exported().iter().flat_map(Family::series).collect();
    let unknown: Vec<_> = queried().difference(&series).cloned().collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries series no process exports: {unknown:?}\nexported: {series:?}"
    );
}

#[test]
fn every_exported_metric_has_a_panel() {
    let queried = queried();
    let missing: Vec<_> = exported()
        .into_iter()
        .filter(|f| !f.series().iter().any(|s| queried.contains(s)))
        .map(|f| f.name)
        .collect();
    assert!(
        missing.is_empty(),
        "metrics without a dashboard panel: {missing:?}"
    );
}

#[test]
fn the_check_sees_both_processes() {
    // Guards the two tests above against passing on an empty list.
    let names: Vec<_> = exported().into_iter().map(|f| f.name).collect();
    for expected in [
        "grpc_balancer_calls",
        "grpc_balancer_operator_reconciles",
        "grpc_balancer_operator_webhook_admission_reviews",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }
}
