//! The apiserver itself rejects bad GrpcBalancings, with messages that say
//! what is wrong (schema and CEL rules of the generated CRD).

use grpc_balancer_crds::v1alpha1::GrpcBalancing;
use grpc_balancer_test_support::{ControlPlane, TestNamespace};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};

fn valid_spec() -> Value {
    json!({
        "selector": { "app": "greeter" },
        "port": 50051,
        "listenerPort": 15001,
        "subsets": [
            { "name": "v1", "labels": { "version": "v1" }, "weight": 75 },
            { "name": "v2", "labels": { "version": "v2" }, "weight": 25 }
        ]
    })
}

/// `valid_spec()` with `path` (dot-separated, numbers index arrays) set to `value`.
fn with(path: &str, value: Value) -> Value {
    let mut spec = valid_spec();
    let mut at = &mut spec;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i == parts.len() - 1;
        let next = match part.parse::<usize>() {
            Ok(index) => &mut at[index],
            Err(_) => {
                if at.get(*part).is_none() {
                    at[*part] = json!({});
                }
                &mut at[*part]
            }
        };
        if last {
            *next = value.clone();
            break;
        }
        at = next;
    }
    spec
}

#[tokio::test]
async fn the_apiserver_rejects_invalid_specs_with_clear_messages() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    crate::support::install_crd(&client).await;
    let ns = TestNamespace::new(&client, "crd-validation").await;
    let resource = ApiResource::erase::<GrpcBalancing>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns.name(), &resource);

    let mut without_listener = valid_spec();
    without_listener
        .as_object_mut()
        .expect("object")
        .remove("listenerPort");
    let mut bad_service = without_listener.clone();
    bad_service["service"] = json!("Greeter.v1");
    let cases: Vec<(&str, &str, Value, &[&str])> = vec![
        (
            "listener-range",
            "g",
            with("listenerPort", json!(70000)),
            &["spec.listenerPort", "65535"],
        ),
        (
            "listener-admin",
            "g",
            with("listenerPort", json!(9901)),
            &["listenerPort must not be 9901", "admin port"],
        ),
        (
            "listener-missing",
            "g",
            without_listener.clone(),
            &[
                "spec: Invalid value",
                "set exactly one of listenerPort",
                "and service",
            ],
        ),
        (
            "listener-and-service",
            "g",
            with("service", json!("greeter")),
            &[
                "spec: Invalid value",
                "set exactly one of listenerPort",
                "and service",
            ],
        ),
        (
            "service-not-a-name",
            "g",
            bad_service,
            &["spec.service", "should match"],
        ),
        (
            "port-zero",
            "g",
            with("port", json!(0)),
            &["port must be a number 1-65535"],
        ),
        (
            "port-name",
            "g",
            with("port", json!("Grpc_Port")),
            &["port must be a number 1-65535 or a container port name"],
        ),
        (
            "weight-negative",
            "g",
            with("subsets.0.weight", json!(-1)),
            &["spec.subsets[0].weight", "greater than or equal to 0"],
        ),
        (
            "weights-zero",
            "g",
            with(
                "subsets",
                json!([
                    { "name": "v1", "labels": { "version": "v1" }, "weight": 0 },
                    { "name": "v2", "labels": { "version": "v2" }, "weight": 0 }
                ]),
            ),
            &["at least one subset needs a weight above 0"],
        ),
        (
            "subset-dup",
            "g",
            with("subsets.1.name", json!("v1")),
            &["subset names must be unique"],
        ),
        (
            "ring-hash",
            "g",
            with("policy", json!({ "kind": "ring_hash" })),
            &["ring_hash needs header"],
        ),
        (
            "policy-kind",
            "g",
            with("policy", json!({ "kind": "fastest" })),
            &["spec.policy.kind", "Unsupported value: \"fastest\""],
        ),
        (
            "selector-empty",
            "g",
            with("selector", json!({})),
            &["spec.selector", "at least 1 properties"],
        ),
        (
            "duration-syntax",
            "g",
            with("dnsRefreshInterval", json!("5 sec")),
            &["spec.dnsRefreshInterval", "should match"],
        ),
        (
            "duration-min",
            "g",
            with("dnsRefreshInterval", json!("10ms")),
            &["dnsRefreshInterval must be at least 100ms"],
        ),
        (
            "ejection",
            "g",
            with(
                "outlierDetection",
                json!({ "baseEjectionTime": "1m", "maxEjectionTime": "10s" }),
            ),
            &["maxEjectionTime must not be below baseEjectionTime"],
        ),
        (
            "attempts",
            "g",
            with("retries.maxAttempts", json!(0)),
            &["spec.retries.maxAttempts", "greater than or equal to 1"],
        ),
        (
            "subset-name",
            "g",
            with("subsets.0.name", json!("V1!")),
            &["spec.subsets[0].name", "should match"],
        ),
        ("dotted", "a.b", valid_spec(), &["name must be a DNS label"]),
        (
            "long-name",
            "n123456789012345678901234567890123456789012345",
            valid_spec(),
            &["name must be at most 40 characters"],
        ),
    ];
    assert!(cases.len() >= 8);
    let mut failures = Vec::new();
    for (case, name, spec, expected) in &cases {
        let name = if *name == "g" {
            format!("bad-{case}")
        } else {
            (*name).to_owned()
        };
        let mut object = DynamicObject::new(&name, &resource).within(ns.name());
        object.data = json!({ "spec": spec });
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => failures.push(format!("{case}: accepted, expected a rejection")),
            Err(kube::Error::Api(status)) => {
                let missing: Vec<&&str> = expected
                    .iter()
                    .filter(|e| !status.message.contains(**e))
                    .collect();
                if status.code != 422 || !missing.is_empty() {
                    failures.push(format!(
                        "{case}: got {} {:?}, missing {missing:?}",
                        status.code, status.message
                    ));
                }
            }
            Err(e) => failures.push(format!("{case}: unexpected error {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The valid spec is accepted, and the schema defaults fill in the rest.
    let mut object = DynamicObject::new("good", &resource).within(ns.name());
    object.data = json!({ "spec": valid_spec() });
    api.create(&PostParams::default(), &object)
        .await
        .expect("a valid spec is accepted");
    let stored = Api::<GrpcBalancing>::namespaced(client.clone(), ns.name())
        .get("good")
        .await
        .expect("typed read");
    assert_eq!(stored.spec.retries.max_attempts, 3);
    assert_eq!(stored.spec.policy.kind.as_str(), "peak_ewma");
    assert_eq!(stored.spec.dns_refresh_interval.to_string(), "5s");
}
