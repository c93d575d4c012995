//! The host aliases of balancings that name a Service: the pod's
//! `/etc/hosts` maps every name of the Service to the balancing's loopback
//! address, app containers get gRPC C-core's native-resolver switch, and a
//! pod can opt out. Each patch is applied and the resulting Pod checked.

use grpc_balancer_webhook::{
    Args, HostAliases, InjectionContext, LocalBalancing, ProxySettings, SidecarMode, annotations,
    mutate, sidecar::PROXY_CONTAINER_NAME,
};
use k8s_openapi::api::core::v1::{Container, HostAlias, Pod};
use serde_json::{Value, json};

fn settings() -> ProxySettings {
    Args::defaults()
        .expect("default flags parse")
        .proxy_settings(SidecarMode::Native)
}

const NAMES: [&str; 4] = [
    "greeter",
    "greeter.demo",
    "greeter.demo.svc",
    "greeter.demo.svc.cluster.local",
];

fn balancings() -> Vec<LocalBalancing> {
    vec![
        LocalBalancing {
            name: "greeter".into(),
            env_name: "GRPC_BALANCER_GREETER_ADDR".into(),
            address: "127.0.10.1:50051".into(),
            aliases: Some(HostAliases {
                ip: "127.0.10.1".into(),
                hostnames: NAMES.map(String::from).to_vec(),
                ports: vec![50051],
            }),
        },
        LocalBalancing {
            name: "orders".into(),
            env_name: "GRPC_BALANCER_ORDERS_ADDR".into(),
            address: "127.0.0.1:15002".into(),
            aliases: None,
        },
    ]
}

fn pod(annotations: Value, spec: Value) -> Value {
    let mut all = json!({ "grpcbalancer.io/sidecar.inject": "true" });
    if let (Some(a), Some(e)) = (all.as_object_mut(), annotations.as_object()) {
        a.extend(e.clone());
    }
    json!({ "metadata": { "name": "client", "namespace": "demo", "annotations": all }, "spec": spec })
}

/// The pod after the webhook's patch, which must apply; a second review
/// must find nothing to add.
fn injected(pod: Value, balancings: &[LocalBalancing]) -> Pod {
    let settings = settings();
    let ctx = InjectionContext {
        settings: &settings,
        balancings,
        discovery_ca: None,
    };
    let typed: Pod = serde_json::from_value(pod.clone()).expect("a valid pod");
    let patch = mutate(&typed, &ctx).expect("injects").expect("a patch");
    let mut doc = pod;
    json_patch::patch(&mut doc, &patch).expect("the patch applies");
    let after: Pod = serde_json::from_value(doc).expect("still a Pod");
    assert_eq!(
        mutate(&after, &ctx).map_err(|e| e.to_string()).ok(),
        Some(None),
        "a second review patches nothing"
    );
    after
}

fn env<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

fn aliases(pod: &Pod) -> Vec<HostAlias> {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_aliases.clone())
        .unwrap_or_default()
}

fn proxy(pod: &Pod) -> &Container {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == PROXY_CONTAINER_NAME))
        .expect("the proxy")
}

#[test]
fn every_name_of_the_service_resolves_to_the_balancing_in_the_pod() {
    let after = injected(
        pod(
            json!({}),
            json!({ "containers": [{ "name": "app", "image": "a" }, { "name": "side", "image": "b" }] }),
        ),
        &balancings(),
    );
    let got = aliases(&after);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].ip, "127.0.10.1");
    assert_eq!(
        got[0].hostnames.as_deref(),
        Some(&NAMES.map(String::from)[..])
    );
    let spec = after.spec.as_ref().expect("spec");
    for c in &spec.containers {
        assert_eq!(env(c, "GRPC_DNS_RESOLVER"), Some("native"), "{}", c.name);
        assert_eq!(
            env(c, "GRPC_BALANCER_GREETER_ADDR"),
            Some("127.0.10.1:50051")
        );
        assert_eq!(env(c, "GRPC_BALANCER_ORDERS_ADDR"), Some("127.0.0.1:15002"));
    }
    assert_eq!(
        env(proxy(&after), "GRPC_DNS_RESOLVER"),
        None,
        "the proxy resolves on its own"
    );
    let recorded = after
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::BALANCINGS))
        .cloned();
    assert_eq!(recorded.as_deref(), Some("greeter,orders"));
}

#[test]
fn a_resolver_the_app_chose_and_its_own_aliases_are_kept() {
    let after = injected(
        pod(
            json!({}),
            json!({
                "hostAliases": [{ "ip": "10.1.2.3", "hostnames": ["greeter", "db"] }],
                "containers": [{ "name": "app", "image": "a", "env": [{ "name": "GRPC_DNS_RESOLVER", "value": "ares" }] }]
            }),
        ),
        &balancings(),
    );
    let got = aliases(&after);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        got[0].ip, "10.1.2.3",
        "the pod's own entry first, untouched"
    );
    assert_eq!(
        got[1].hostnames.as_deref(),
        Some(&NAMES.map(String::from)[1..]),
        "a name the pod maps itself is left to it"
    );
    let app = &after.spec.as_ref().expect("spec").containers[0];
    assert_eq!(env(app, "GRPC_DNS_RESOLVER"), Some("ares"));
    let count = app
        .env
        .iter()
        .flatten()
        .filter(|e| e.name == "GRPC_DNS_RESOLVER")
        .count();
    assert_eq!(count, 1);
}

#[test]
fn a_pod_can_opt_out_of_the_aliases() {
    let after = injected(
        pod(
            json!({ "grpcbalancer.io/service.aliases": "false" }),
            json!({ "containers": [{ "name": "app", "image": "a" }] }),
        ),
        &balancings(),
    );
    assert!(aliases(&after).is_empty());
    let app = &after.spec.as_ref().expect("spec").containers[0];
    assert_eq!(env(app, "GRPC_DNS_RESOLVER"), None);
    assert_eq!(
        env(app, "GRPC_BALANCER_GREETER_ADDR"),
        Some("127.0.10.1:50051"),
        "the env var still"
    );
    // Any other value keeps them.
    let after = injected(
        pod(
            json!({ "grpcbalancer.io/service.aliases": "False" }),
            json!({ "containers": [{ "name": "app", "image": "a" }] }),
        ),
        &balancings(),
    );
    assert_eq!(aliases(&after).len(), 1);
}

#[test]
fn env_var_balancings_alone_add_no_alias_and_no_switch() {
    let only_env: Vec<LocalBalancing> = balancings().into_iter().skip(1).collect();
    let after = injected(
        pod(
            json!({}),
            json!({ "containers": [{ "name": "app", "image": "a" }] }),
        ),
        &only_env,
    );
    assert!(aliases(&after).is_empty());
    let app = &after.spec.as_ref().expect("spec").containers[0];
    assert_eq!(env(app, "GRPC_DNS_RESOLVER"), None);
}

#[test]
fn a_reinvocation_does_not_claim_an_alias_the_pod_lacks() {
    // Injected while only `orders` existed; reviewed again after `greeter`
    // (with a Service) came: the env var is added, the alias is not (host
    // aliases are set once), so `greeter` is not recorded as served and
    // the operator lists the pod for a restart.
    let first = injected(
        pod(
            json!({}),
            json!({ "containers": [{ "name": "app", "image": "a" }] }),
        ),
        &balancings()[1..],
    );
    let settings = settings();
    let all = balancings();
    let ctx = InjectionContext {
        settings: &settings,
        balancings: &all,
        discovery_ca: None,
    };
    let patch = mutate(&first, &ctx)
        .expect("reviews")
        .expect("adds the env var");
    let mut doc = serde_json::to_value(&first).expect("serialises");
    json_patch::patch(&mut doc, &patch).expect("applies");
    let after: Pod = serde_json::from_value(doc).expect("a Pod");
    assert!(aliases(&after).is_empty());
    let app = &after.spec.as_ref().expect("spec").containers[0];
    assert_eq!(
        env(app, "GRPC_BALANCER_GREETER_ADDR"),
        Some("127.0.10.1:50051")
    );
    let recorded = after
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::BALANCINGS))
        .cloned();
    assert_eq!(recorded.as_deref(), Some("orders"));
}

#[test]
fn a_pod_listening_on_the_services_port_gets_no_alias_and_its_proxy_leaves_the_port_alone() {
    // The app serves on 50051 itself (and calls greeter on 50051): the
    // proxy must not take the port, and the name must not point at the
    // app's own listener.
    let after = injected(
        pod(
            json!({}),
            json!({ "containers": [{ "name": "app", "image": "a", "ports": [
                { "containerPort": 50051 }, { "containerPort": 8080, "protocol": "TCP" }, { "containerPort": 53, "protocol": "UDP" }
            ] }] }),
        ),
        &balancings(),
    );
    assert!(aliases(&after).is_empty());
    let args = proxy(&after).args.clone().unwrap_or_default();
    let tail: Vec<&str> = args.iter().skip(4).map(String::as_str).collect();
    assert_eq!(
        tail,
        ["--app-port", "8080", "--app-port", "50051"],
        "{args:?}"
    );
    let app = &after.spec.as_ref().expect("spec").containers[0];
    assert_eq!(env(app, "GRPC_DNS_RESOLVER"), None);
    // Ports that do not clash change nothing for the alias.
    let after = injected(
        pod(
            json!({}),
            json!({ "containers": [{ "name": "app", "image": "a", "ports": [{ "containerPort": 8080 }] }] }),
        ),
        &balancings(),
    );
    assert_eq!(aliases(&after).len(), 1);
}
