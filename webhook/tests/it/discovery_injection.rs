//! Push discovery set up at injection: a projected token of the discovery
//! audience, short-lived; the CA as PEM text; the server's address; the
//! pod's namespace and name from the downward API. Nothing of it without an
//! address or before the CA is known.

use clap::Parser;
use grpc_balancer_discovery_api::TOKEN_AUDIENCE;
use grpc_balancer_webhook::sidecar::{
    DISCOVERY_CA_ENV, DISCOVERY_TOKEN_VOLUME_NAME, PROXY_CONTAINER_NAME,
};
use grpc_balancer_webhook::{InjectionContext, SidecarMode, StandaloneArgs, mutate};
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

const ADDRESS: &str = "grpc-balancer-webhook.grpc-balancer.svc:15012";
const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn pod(volumes: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": "app", "annotations": { "grpcbalancer.io/sidecar.inject": "true" } },
        "spec": { "containers": [{ "name": "app", "image": "example.com/app:1" }], "volumes": volumes }
    }))
    .expect("a pod")
}

/// The patch's ops as (path, value).
fn injected(argv: &[&str], ca: Option<&str>, pod: &Pod) -> Result<Vec<(String, Value)>, String> {
    let args =
        StandaloneArgs::try_parse_from(std::iter::once("webhook").chain(argv.iter().copied()))
            .expect("flags parse")
            .webhook;
    let settings = args.proxy_settings(SidecarMode::Native);
    let ctx = InjectionContext {
        settings: &settings,
        balancings: &[],
        discovery_ca: ca,
    };
    let patch = mutate(pod, &ctx)
        .map_err(|e| e.to_string())?
        .expect("a patch");
    let ops = serde_json::to_value(&patch).expect("json");
    Ok(ops
        .as_array()
        .expect("ops")
        .iter()
        .map(|op| {
            (
                op["path"].as_str().unwrap_or_default().to_owned(),
                op["value"].clone(),
            )
        })
        .collect())
}

fn proxy(ops: &[(String, Value)]) -> Container {
    let value = ops
        .iter()
        .find(|(_, v)| v["name"] == PROXY_CONTAINER_NAME)
        .or_else(|| {
            ops.iter()
                .find(|(_, v)| v[0]["name"] == PROXY_CONTAINER_NAME)
        })
        .map(|(_, v)| {
            if v.is_array() {
                v[0].clone()
            } else {
                v.clone()
            }
        })
        .expect("the proxy container");
    serde_json::from_value(value).expect("a container")
}

fn token_volume(ops: &[(String, Value)]) -> Option<Value> {
    ops.iter().find_map(|(_, v)| {
        let candidates = if v.is_array() {
            v.as_array().cloned().unwrap_or_default()
        } else {
            vec![v.clone()]
        };
        candidates
            .into_iter()
            .find(|c| c["name"] == DISCOVERY_TOKEN_VOLUME_NAME)
    })
}

#[test]
fn proxies_get_a_short_lived_token_of_their_own_audience_and_the_ca() {
    let ops = injected(
        &["--proxy-discovery-address", ADDRESS],
        Some(CA),
        &pod(json!(null)),
    )
    .expect("injects");
    let volume = token_volume(&ops).expect("the token volume");
    let token = &volume["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], TOKEN_AUDIENCE);
    assert_eq!(token["expirationSeconds"], 600);
    let proxy = proxy(&ops);
    let args = proxy.args.clone().unwrap_or_default();
    let at = args
        .iter()
        .position(|a| a == "--discovery-address")
        .expect("--discovery-address");
    assert_eq!(args[at + 1], ADDRESS);
    assert!(args.iter().any(|a| a.ends_with("/token")), "{args:?}");
    let env = proxy.env.clone().unwrap_or_default();
    let value = |name: &str| env.iter().find(|e| e.name == name).cloned();
    assert_eq!(
        value(DISCOVERY_CA_ENV).and_then(|e| e.value).as_deref(),
        Some(CA)
    );
    let namespace = value("POD_NAMESPACE")
        .and_then(|e| e.value_from)
        .and_then(|f| f.field_ref);
    assert_eq!(
        namespace.map(|f| f.field_path).as_deref(),
        Some("metadata.namespace")
    );
    let mounts = proxy.volume_mounts.clone().unwrap_or_default();
    assert!(
        mounts
            .iter()
            .any(|m| m.name == DISCOVERY_TOKEN_VOLUME_NAME && m.read_only == Some(true)),
        "{mounts:?}"
    );
}

#[test]
fn without_an_address_or_a_ca_nothing_of_discovery_is_injected() {
    for (argv, ca) in [
        (&[][..], Some(CA)),
        (&["--proxy-discovery-address", ADDRESS][..], None),
        (&["--proxy-discovery-address", ""][..], Some(CA)),
    ] {
        let ops = injected(argv, ca, &pod(json!(null))).expect("injects");
        assert!(token_volume(&ops).is_none(), "{argv:?} {ca:?}");
        let args = proxy(&ops).args.unwrap_or_default();
        assert!(!args.iter().any(|a| a == "--discovery-address"), "{args:?}");
    }
}

#[test]
fn a_pod_volume_of_the_token_volume_name_is_refused() {
    let taken = pod(json!([{ "name": DISCOVERY_TOKEN_VOLUME_NAME, "emptyDir": {} }]));
    let err =
        injected(&["--proxy-discovery-address", ADDRESS], Some(CA), &taken).expect_err("refused");
    assert!(err.contains(DISCOVERY_TOKEN_VOLUME_NAME), "{err}");
}

fn annotated(discovery: &str) -> Pod {
    let mut pod = pod(json!(null));
    pod.metadata
        .annotations
        .get_or_insert_default()
        .insert("grpcbalancer.io/discovery".into(), discovery.into());
    pod
}

#[test]
fn a_pod_can_ask_for_dns_alone_or_say_push_explicitly() {
    let argv = ["--proxy-discovery-address", ADDRESS];
    let dns = injected(&argv, Some(CA), &annotated("dns")).expect("injects");
    assert!(token_volume(&dns).is_none());
    let args = proxy(&dns).args.unwrap_or_default();
    assert!(!args.iter().any(|a| a == "--discovery-address"), "{args:?}");
    assert!(
        !proxy(&dns)
            .env
            .unwrap_or_default()
            .iter()
            .any(|e| e.name == DISCOVERY_CA_ENV)
    );

    let push = injected(&argv, Some(CA), &annotated("push")).expect("injects");
    assert!(token_volume(&push).is_some());
    let args = proxy(&push).args.unwrap_or_default();
    assert!(args.iter().any(|a| a == "--discovery-address"), "{args:?}");
}

#[test]
fn an_unknown_discovery_mode_is_refused_with_the_annotation_named() {
    let argv = ["--proxy-discovery-address", ADDRESS];
    for value in ["", "DNS", "push,dns", "file", "dns\n"] {
        let err = injected(&argv, Some(CA), &annotated(value)).expect_err(value);
        assert!(
            err.contains("grpcbalancer.io/discovery") && err.contains("push or dns"),
            "{value:?}: {err}"
        );
    }
}
