//! The injected proxy's admin arguments: every address of both families
//! (the kubelet probes an IPv6 pod IP on IPv6 clusters), and the debug
//! endpoints opened to the pod network only when the setting says so.

use clap::Parser;
use grpc_balancer_webhook::sidecar::PROXY_CONTAINER_NAME;
use grpc_balancer_webhook::{Args, InjectionContext, SidecarMode, StandaloneArgs, mutate};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

fn proxy_args(argv: &[&str]) -> Vec<String> {
    let args =
        StandaloneArgs::try_parse_from(std::iter::once("webhook").chain(argv.iter().copied()))
            .expect("flags parse")
            .webhook;
    let settings = args.proxy_settings(SidecarMode::Native);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "app", "annotations": { "grpcbalancer.io/sidecar.inject": "true" } },
        "spec": { "containers": [{ "name": "app", "image": "example.com/app:1" }] }
    }))
    .expect("a pod");
    let ctx = InjectionContext {
        settings: &settings,
        balancings: &[],
        discovery_ca: None,
    };
    let patch = mutate(&pod, &ctx).expect("injects").expect("a patch");
    let patch = serde_json::to_value(&patch).expect("json");
    proxy_container_args(&patch).expect("the proxy container's args in the patch")
}

fn proxy_container_args(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Object(o) => {
            if o.get("name").and_then(Value::as_str) == Some(PROXY_CONTAINER_NAME)
                && let Some(args) = o.get("args")
            {
                return serde_json::from_value(args.clone()).ok();
            }
            o.values().find_map(proxy_container_args)
        }
        Value::Array(a) => a.iter().find_map(proxy_container_args),
        _ => None,
    }
}

#[test]
fn the_admin_server_listens_on_both_families() {
    let args = proxy_args(&[]);
    let at = args.iter().position(|a| a == "--admin").expect("--admin");
    assert_eq!(args[at + 1], "[::]:9901", "{args:?}");
    assert!(!args.iter().any(|a| a == "--admin-debug"), "{args:?}");
}

#[test]
fn admin_debug_any_reaches_the_proxy() {
    let _ = Args::defaults();
    let args = proxy_args(&["--proxy-admin-debug", "any"]);
    let at = args
        .iter()
        .position(|a| a == "--admin-debug")
        .expect("--admin-debug");
    assert_eq!(args[at + 1], "any", "{args:?}");
    let loopback = proxy_args(&["--proxy-admin-debug", "loopback"]);
    assert!(
        !loopback.iter().any(|a| a == "--admin-debug"),
        "{loopback:?}"
    );
}
