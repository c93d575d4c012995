//! The CRD's CEL validation rules evaluated here, without an apiserver:
//! each rule is read from the CRD as generated (not copied), run with the
//! `cel` crate on values it must accept and values it must refuse. The
//! apiserver-backed test (`operator/tests/it/crd_validation.rs`) checks the
//! same rules where they really run; this one is quick to run and points at
//! the rule that broke.
//!
//! Values are given as JSON and converted as the apiserver sees them:
//! integers as CEL `int`, objects as maps.

use std::collections::HashMap;

use serde_json::{Value as Json, json};

use super::crd;

/// The rules at `path` of the schema (`[]` steps into array items).
fn rules_at(path: &[&str]) -> Vec<String> {
    let crd = serde_json::to_value(crd()).expect("the CRD serializes");
    let mut node = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    for step in path {
        node = match *step {
            "[]" => &node["items"],
            field => &node["properties"][field],
        };
        assert!(!node.is_null(), "no schema at {path:?}");
    }
    node["x-kubernetes-validations"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .map(|r| r["rule"].as_str().expect("a rule").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn cel_value(json: &Json) -> cel::Value {
    match json {
        Json::Null => cel::Value::Null,
        Json::Bool(b) => cel::Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => cel::Value::Float(n.as_f64().unwrap_or_default()),
        },
        Json::String(s) => cel::Value::from(s.clone()),
        Json::Array(items) => cel::Value::from(items.iter().map(cel_value).collect::<Vec<_>>()),
        Json::Object(fields) => cel::Value::from(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), cel_value(v)))
                .collect::<HashMap<_, _>>(),
        ),
    }
}

/// Whether every rule at `path` accepts `value` as `self`; an evaluation
/// error fails the test.
fn accepts(path: &[&str], value: Json) -> bool {
    let rules = rules_at(path);
    assert!(!rules.is_empty(), "no rule at {path:?}");
    rules.iter().all(|rule| {
        let program = cel::Program::compile(rule)
            .unwrap_or_else(|e| panic!("rule {rule:?} does not compile: {e}"));
        let mut context = cel::Context::default();
        context.add_variable_from_value("self", cel_value(&value));
        match program.execute(&context) {
            Ok(cel::Value::Bool(ok)) => ok,
            other => panic!("rule {rule:?} on {value}: {other:?}"),
        }
    })
}

#[test]
fn port_is_a_number_or_a_container_port_name() {
    let port = ["spec", "port"];
    for good in [
        json!(1),
        json!(50051),
        json!(65535),
        json!("grpc"),
        json!("grpc-web-1"),
    ] {
        assert!(accepts(&port, good.clone()), "{good} refused");
    }
    for bad in [
        json!(0),
        json!(65536),
        json!(-1),
        json!("GRPC"),
        json!("1234"),
        json!("-grpc"),
        json!("grpc_web"),
        json!("a-name-of-16-chr"),
    ] {
        assert!(!accepts(&port, bad.clone()), "{bad} accepted");
    }
}

#[test]
fn subsets_have_unique_names_and_a_weight() {
    let subsets = ["spec", "subsets"];
    let subset = |name: &str, weight: i64| json!({ "name": name, "labels": {}, "weight": weight });
    assert!(accepts(
        &subsets,
        json!([subset("v1", 75), subset("v2", 25)])
    ));
    assert!(accepts(&subsets, json!([subset("v1", 0), subset("v2", 1)])));
    assert!(accepts(&subsets, json!([])));
    assert!(!accepts(
        &subsets,
        json!([subset("v1", 1), subset("v1", 1)])
    ));
    assert!(!accepts(
        &subsets,
        json!([subset("v1", 0), subset("v2", 0)])
    ));
}

#[test]
fn durations_have_their_floors() {
    assert!(accepts(&["spec", "timeout"], json!("1ms")));
    assert!(!accepts(&["spec", "timeout"], json!("0s")));
    assert!(accepts(&["spec", "dnsRefreshInterval"], json!("100ms")));
    assert!(accepts(&["spec", "dnsRefreshInterval"], json!("1m30s")));
    assert!(!accepts(&["spec", "dnsRefreshInterval"], json!("99ms")));
    let health =
        |interval: &str, timeout: &str| json!({ "interval": interval, "timeout": timeout });
    assert!(accepts(&["spec", "healthCheck"], health("100ms", "1s")));
    assert!(!accepts(&["spec", "healthCheck"], health("50ms", "1s")));
    assert!(!accepts(&["spec", "healthCheck"], health("1s", "0s")));
    let ejection =
        |base: &str, max: &str| json!({ "baseEjectionTime": base, "maxEjectionTime": max });
    assert!(accepts(
        &["spec", "outlierDetection"],
        ejection("30s", "300s")
    ));
    assert!(accepts(
        &["spec", "outlierDetection"],
        ejection("30s", "30s")
    ));
    assert!(!accepts(
        &["spec", "outlierDetection"],
        ejection("5m", "30s")
    ));
}

#[test]
fn ring_hash_needs_a_header() {
    let policy = ["spec", "policy"];
    assert!(accepts(
        &policy,
        json!({ "kind": "ring_hash", "header": "x-user" })
    ));
    assert!(accepts(&policy, json!({ "kind": "round_robin" })));
    assert!(!accepts(&policy, json!({ "kind": "ring_hash" })));
}

#[test]
fn the_listener_keeps_off_the_admin_port() {
    assert!(accepts(&["spec", "listenerPort"], json!(15001)));
    assert!(!accepts(
        &["spec", "listenerPort"],
        json!(crate::config::DEFAULT_ADMIN_PORT)
    ));
}

#[test]
fn a_balancing_is_reached_by_a_listener_port_or_a_service() {
    let spec = ["spec"];
    assert!(accepts(&spec, json!({ "listenerPort": 15001 })));
    assert!(accepts(&spec, json!({ "service": "greeter" })));
    assert!(!accepts(
        &spec,
        json!({ "listenerPort": 15001, "service": "greeter" })
    ));
    assert!(!accepts(&spec, json!({ "port": 50051 })));
}

#[test]
fn the_name_is_a_short_dns_label() {
    let named = |name: &str| json!({ "metadata": { "name": name } });
    assert!(accepts(&[], named("greeter")));
    assert!(accepts(&[], named(&"a".repeat(super::MAX_NAME_LEN))));
    assert!(!accepts(&[], named(&"a".repeat(super::MAX_NAME_LEN + 1))));
    assert!(!accepts(&[], named("greeter.v1")));
    assert!(!accepts(&[], named("Greeter")));
}

#[test]
fn every_rule_of_the_crd_is_tested_here() {
    // A rule added to the CRD must get a test above: the paths tested here
    // and the rules found there must agree.
    let tested = [
        vec![],
        vec!["spec", "port"],
        vec!["spec", "subsets"],
        vec!["spec", "timeout"],
        vec!["spec", "dnsRefreshInterval"],
        vec!["spec", "healthCheck"],
        vec!["spec", "outlierDetection"],
        vec!["spec", "policy"],
        vec!["spec", "listenerPort"],
        vec!["spec"],
    ];
    let tested_rules: usize = tested.iter().map(|p| rules_at(p).len()).sum();
    let crd = serde_json::to_string(&crd()).expect("the CRD serializes");
    let all_rules = crd.matches("\"rule\":").count();
    assert_eq!(
        tested_rules, all_rules,
        "a CEL rule of the CRD has no test here"
    );
}
