//! A GrpcBalancing the API server accepts but the operator's types reject
//! (a duration Go parses and the proxy refuses) is reported on its own
//! status and skipped; the other balancings of the namespace reconcile as
//! usual, and the bad one joins them once it is fixed.

use std::time::Duration;

use crate::support::{RunningOperator, TIMEOUT, install_crd};
use grpc_balancer_crds::config::{self, CONFIG_MAP_KEY, CONFIG_MAP_NAME};
use grpc_balancer_crds::v1alpha1::GrpcBalancing;
use grpc_balancer_operator::api_resource;
use grpc_balancer_operator::render::fixtures::with_spec;
use grpc_balancer_test_support::{ControlPlane, TestNamespace, poll_until};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

/// Within Go's duration range (the schema's CEL rule parses it), beyond
/// what the proxy accepts.
const TOO_LONG: &str = "300000h";

async fn names_in_config(client: &kube::Client, ns: &str) -> Result<Vec<String>, String> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(CONFIG_MAP_NAME)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no ConfigMap yet")?;
    let text = cm
        .data
        .and_then(|mut d| d.remove(CONFIG_MAP_KEY))
        .ok_or("no config key")?;
    let parsed = config::parse_yaml(&text).map_err(|e| e.to_string())?;
    Ok(parsed.balancings.into_iter().map(|b| b.name).collect())
}

/// The Ready reason and message of an object, read untyped.
async fn ready_of(api: &Api<DynamicObject>, name: &str) -> Result<(String, String), String> {
    let obj = api.get(name).await.map_err(|e| e.to_string())?;
    let ready = obj.data["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .ok_or("no Ready condition yet")?;
    Ok((
        ready["reason"].as_str().unwrap_or_default().to_owned(),
        ready["message"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// Waits until `balancing`'s Ready reason is `reason` and the namespace's
/// proxy config holds exactly `names`.
async fn wait_for_state(
    what: &str,
    (api, client, ns): (&Api<DynamicObject>, &kube::Client, &str),
    (balancing, reason): (&str, &str),
    names: &[&str],
) {
    poll_until(what, TIMEOUT, || async {
        let (got, _) = ready_of(api, balancing).await?;
        let have = names_in_config(client, ns).await?;
        if got == reason && have == names {
            Ok(())
        } else {
            Err(format!("Ready {got}, config has {have:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_balancing_is_reported_and_skipped() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "undecodable").await;
    let typed: Api<GrpcBalancing> = Api::namespaced(client.clone(), ns.name());
    let untyped: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns.name(), &api_resource());

    typed
        .create(
            &PostParams::default(),
            &with_spec(
                "good",
                "selector: { app: good }\nport: 50051\nlistenerPort: 15001\n",
            ),
        )
        .await
        .expect("the good balancing is created");
    let mut bad = DynamicObject::new("bad", &api_resource()).within(ns.name());
    bad.data = json!({ "spec": {
        "selector": { "app": "bad" },
        "port": 50051,
        "listenerPort": 15002,
        "dnsRefreshInterval": TOO_LONG,
    }});
    untyped
        .create(&PostParams::default(), &bad)
        .await
        .expect("the API server accepts the bad balancing (it passes the schema)");
    // The premise: the Rust types reject it, so a typed list fails outright.
    assert!(
        typed.list(&Default::default()).await.is_err(),
        "a typed list of the namespace fails on the bad object"
    );

    let op = RunningOperator::start(
        cp,
        ns.name(),
        "undecodable",
        "op-0",
        Duration::from_secs(15),
    )
    .await;

    poll_until(
        "the bad balancing to be reported on its status",
        TIMEOUT,
        || async {
            let (reason, message) = ready_of(&untyped, "bad").await?;
            if reason == "InvalidSpec" && message.contains("too long") {
                Ok(())
            } else {
                Err(format!("Ready {reason}: {message}"))
            }
        },
    )
    .await;
    poll_until("the good balancing to be reconciled", TIMEOUT, || async {
        let (reason, _) = ready_of(&untyped, "good").await?;
        Api::<Service>::namespaced(client.clone(), ns.name())
            .get_opt("grpcb-good")
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no Service grpcb-good yet")?;
        let names = names_in_config(&client, ns.name()).await?;
        if reason == "NoEndpoints" && names == ["good"] {
            Ok(())
        } else {
            Err(format!("Ready {reason}, config has {names:?}"))
        }
    })
    .await;

    // Fixed: it is read and reconciled like any other.
    untyped
        .patch(
            "bad",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "dnsRefreshInterval": "5s" } })),
        )
        .await
        .expect("the bad balancing is fixed");
    wait_for_state(
        "the fixed balancing to be reconciled",
        (&untyped, &client, ns.name()),
        ("bad", "NoEndpoints"),
        &["bad", "good"],
    )
    .await;

    // Broken after it was read: it leaves the proxy config, is reported.
    untyped
        .patch(
            "good",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "dnsRefreshInterval": TOO_LONG } })),
        )
        .await
        .expect("the good balancing is broken");
    wait_for_state(
        "the broken balancing to leave the config and be reported",
        (&untyped, &client, ns.name()),
        ("good", "InvalidSpec"),
        &["bad"],
    )
    .await;

    op.shutdown().await;
}
