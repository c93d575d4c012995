//! The injection on a table of pod shapes. Each case's patch is compared with
//! `tests/fixtures/<case>.patch.json`, then applied with `json-patch` and the
//! resulting Pod checked.
//!
//! After an intended change of the patch, regenerate the fixtures and review
//! the diff:
//!
//! ```sh
//! UPDATE_FIXTURES=1 cargo test -p grpc-balancer-webhook --test it mutate_fixtures::
//! ```

use std::path::PathBuf;

use grpc_balancer_webhook::{
    Args, InjectionContext, LocalBalancing, ProxySettings, SidecarMode, annotations, mutate,
    sidecar::{CONFIG_VOLUME_NAME, PROXY_CONTAINER_NAME},
};
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

fn settings(mode: SidecarMode) -> ProxySettings {
    let mut settings = Args::defaults()
        .expect("default flags parse")
        .proxy_settings(mode);
    // Fixed so the fixtures do not change with the crate version.
    settings.image = "ghcr.io/grpc-balancer/grpc-balancer-proxy:1.2.3".to_owned();
    settings
}

fn balancings() -> Vec<LocalBalancing> {
    vec![
        LocalBalancing {
            name: "greeter".into(),
            env_name: "GRPC_BALANCER_GREETER_ADDR".into(),
            address: "127.0.0.1:15001".into(),
            aliases: None,
        },
        LocalBalancing {
            name: "orders-v2".into(),
            env_name: "GRPC_BALANCER_ORDERS_V2_ADDR".into(),
            address: "127.0.0.1:15002".into(),
            aliases: None,
        },
    ]
}

fn app(name: &str) -> Value {
    json!({ "name": name, "image": "example.com/app:1" })
}

fn annotated(extra: Value) -> Value {
    let mut annotations = json!({ "grpcbalancer.io/sidecar.inject": "true" });
    if let (Some(a), Some(e)) = (annotations.as_object_mut(), extra.as_object()) {
        a.extend(e.clone());
    }
    annotations
}

struct Case {
    name: &'static str,
    pod: Value,
    mode: SidecarMode,
    injected: bool,
}

fn cases() -> Vec<Case> {
    let native = SidecarMode::Native;
    vec![
        Case {
            name: "no-annotations",
            pod: json!({ "metadata": { "name": "plain" }, "spec": { "containers": [app("app")] } }),
            mode: native,
            injected: false,
        },
        Case {
            name: "other-annotation-value-false",
            pod: json!({
                "metadata": { "name": "off", "annotations": { "grpcbalancer.io/sidecar.inject": "false" } },
                "spec": { "containers": [app("app")] }
            }),
            mode: native,
            injected: false,
        },
        Case {
            name: "other-annotation-value-capitalised",
            pod: json!({
                "metadata": { "name": "caps", "annotations": { "grpcbalancer.io/sidecar.inject": "True" } },
                "spec": { "containers": [app("app")] }
            }),
            mode: native,
            injected: false,
        },
        Case {
            name: "minimal",
            pod: json!({
                "metadata": { "name": "client", "namespace": "demo", "annotations": annotated(json!({})) },
                "spec": { "containers": [app("app")] }
            }),
            mode: native,
            injected: true,
        },
        Case {
            name: "existing-volumes-init-containers-and-sidecars",
            pod: json!({
                "metadata": { "name": "busy", "annotations": annotated(json!({})) },
                "spec": {
                    "volumes": [{ "name": "data", "emptyDir": {} }],
                    "initContainers": [
                        app("migrate"),
                        { "name": "log-shipper", "image": "example.com/shipper:1", "restartPolicy": "Always" }
                    ],
                    "containers": [app("app"), app("helper")]
                }
            }),
            mode: native,
            injected: true,
        },
        Case {
            name: "existing-env",
            pod: json!({
                "metadata": { "name": "env", "annotations": annotated(json!({})) },
                "spec": { "containers": [{
                    "name": "app", "image": "example.com/app:1",
                    "env": [
                        { "name": "GRPC_BALANCER_GREETER_ADDR", "value": "10.0.0.1:50051" },
                        { "name": "OTHER", "value": "x" }
                    ]
                }] }
            }),
            mode: native,
            injected: true,
        },
        Case {
            name: "already-injected",
            pod: json!({
                "metadata": { "name": "again", "annotations": annotated(json!({ "grpcbalancer.io/injected": "1.2.3" })) },
                "spec": {
                    "initContainers": [{ "name": PROXY_CONTAINER_NAME, "image": "x", "restartPolicy": "Always" }],
                    // Reviewed again with nothing missing (a reinvocation
                    // that adds env vars is tested on its own below).
                    "containers": [{
                        "name": "app", "image": "example.com/app:1",
                        "env": [
                            { "name": "GRPC_BALANCER_GREETER_ADDR", "value": "127.0.0.1:15001" },
                            { "name": "GRPC_BALANCER_ORDERS_V2_ADDR", "value": "127.0.0.1:15002" }
                        ]
                    }]
                }
            }),
            mode: native,
            injected: false,
        },
        Case {
            name: "job-pod",
            pod: json!({
                "metadata": {
                    "generateName": "batch-28123456-",
                    "labels": { "batch.kubernetes.io/job-name": "batch-28123456" },
                    "ownerReferences": [{
                        "apiVersion": "batch/v1", "kind": "Job", "name": "batch-28123456",
                        "uid": "8b0b5cbc-5f39-4a2a-9b39-6f1d7e0a4d31", "controller": true
                    }],
                    "annotations": annotated(json!({}))
                },
                "spec": { "restartPolicy": "Never", "containers": [app("work")] }
            }),
            mode: native,
            injected: true,
        },
        Case {
            name: "generate-name-only",
            pod: json!({
                "metadata": { "generateName": "client-7d9f8-", "annotations": annotated(json!({})) },
                "spec": { "containers": [app("app")] }
            }),
            mode: native,
            injected: true,
        },
        Case {
            name: "keys-with-slash-and-tilde",
            pod: json!({
                "metadata": {
                    "name": "keys",
                    "annotations": annotated(json!({
                        "example.com/a~b": "1",
                        "example.com/c/d": "2",
                        "prometheus.io/port": "8080"
                    }))
                },
                "spec": { "containers": [app("app")] }
            }),
            mode: native,
            injected: true,
        },
        Case {
            name: "per-pod-overrides",
            pod: json!({
                "metadata": {
                    "name": "tuned",
                    "annotations": annotated(json!({
                        "grpcbalancer.io/proxy-cpu-request": "50m",
                        "grpcbalancer.io/proxy-cpu-limit": "500m",
                        "grpcbalancer.io/proxy-memory-limit": "256Mi",
                        "grpcbalancer.io/log-level": "debug"
                    }))
                },
                "spec": { "containers": [app("app")] }
            }),
            mode: native,
            injected: true,
        },
        Case {
            name: "legacy-mode",
            pod: json!({
                "metadata": { "name": "old", "annotations": annotated(json!({})) },
                "spec": { "initContainers": [app("migrate")], "containers": [app("app"), app("helper")] }
            }),
            mode: SidecarMode::Legacy,
            injected: true,
        },
    ]
}

fn fixture_path(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{case}.patch.json"))
}

/// Compares with the fixture, or rewrites it under `UPDATE_FIXTURES=1`.
fn check_fixture(case: &str, patch: &Value) -> Option<String> {
    let path = fixture_path(case);
    let rendered = serde_json::to_string_pretty(patch).expect("a patch serialises") + "\n";
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, &rendered).expect("the fixture is writable");
        return None;
    }
    match std::fs::read_to_string(&path) {
        Ok(expected) if expected == rendered => None,
        Ok(expected) => Some(format!(
            "{case}: the patch differs from {}\n--- expected\n{expected}\n--- actual\n{rendered}",
            path.display()
        )),
        Err(e) => Some(format!("{case}: cannot read {}: {e}", path.display())),
    }
}

#[test]
fn pod_shapes_match_their_fixtures_and_inject_correctly() {
    let balancings = balancings();
    let mut failures = Vec::new();
    for case in cases() {
        let settings = settings(case.mode);
        let ctx = InjectionContext {
            settings: &settings,
            balancings: &balancings,
            discovery_ca: None,
        };
        let pod: Pod = serde_json::from_value(case.pod.clone()).expect("case pods are valid");
        let patch = mutate(&pod, &ctx).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let patch_json = serde_json::to_value(&patch).expect("a patch serialises");
        failures.extend(check_fixture(case.name, &patch_json));

        let Some(patch) = patch else {
            assert!(
                !case.injected,
                "{}: no patch, but injection expected",
                case.name
            );
            continue;
        };
        assert!(
            case.injected,
            "{}: patched, but no injection expected",
            case.name
        );
        let mut doc = case.pod.clone();
        json_patch::patch(&mut doc, &patch)
            .unwrap_or_else(|e| panic!("{}: the patch does not apply: {e}", case.name));
        let result: Pod = serde_json::from_value(doc)
            .unwrap_or_else(|e| panic!("{}: the patched pod is not a Pod: {e}", case.name));
        check_injected(case.name, &pod, &result, case.mode, &balancings);
        assert_eq!(
            mutate(&result, &ctx).map_err(|e| e.to_string()).ok(),
            Some(None),
            "{}: a second review must not patch again",
            case.name
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// What every injected pod must look like, whatever its shape.
fn check_injected(
    case: &str,
    before: &Pod,
    after: &Pod,
    mode: SidecarMode,
    balancings: &[LocalBalancing],
) {
    let spec_before = before.spec.as_ref().expect("case pods have a spec");
    let spec = after.spec.as_ref().expect("still a spec");
    let init_before = spec_before.init_containers.clone().unwrap_or_default();
    let init_after = spec.init_containers.clone().unwrap_or_default();

    let (proxy, apps_after, inits_after): (&Container, &[Container], &[Container]) = match mode {
        SidecarMode::Native => {
            assert_eq!(init_after.len(), init_before.len() + 1, "{case}");
            assert_eq!(
                spec.containers.len(),
                spec_before.containers.len(),
                "{case}"
            );
            let proxy = &init_after[0];
            assert_eq!(proxy.restart_policy.as_deref(), Some("Always"), "{case}");
            let probe = proxy.startup_probe.as_ref().expect("a startup probe");
            let http = probe.http_get.as_ref().expect("an HTTP startup probe");
            assert_eq!(http.path.as_deref(), Some("/ready"), "{case}");
            (proxy, &spec.containers, &init_after[1..])
        }
        SidecarMode::Legacy => {
            assert_eq!(
                spec.containers.len(),
                spec_before.containers.len() + 1,
                "{case}"
            );
            let proxy = &spec.containers[0];
            let lifecycle = proxy.lifecycle.as_ref().expect("hooks in legacy mode");
            assert!(
                lifecycle.post_start.is_some() && lifecycle.pre_stop.is_some(),
                "{case}"
            );
            (proxy, &spec.containers[1..], &init_after[..])
        }
    };
    assert_eq!(proxy.name, PROXY_CONTAINER_NAME, "{case}");
    assert_eq!(
        proxy.args.as_deref().expect("proxy args"),
        [
            "--config",
            "/etc/grpc-balancer/config.yaml",
            "--admin",
            "[::]:9901"
        ],
        "{case}"
    );
    let port = &proxy.ports.as_ref().expect("the admin port")[0];
    assert_eq!(
        (port.name.as_deref(), port.container_port),
        (Some("grpcb-admin"), 9901)
    );
    let sc = proxy.security_context.as_ref().expect("a security context");
    assert_eq!(sc.run_as_non_root, Some(true), "{case}");
    assert_eq!(sc.run_as_user, Some(65532), "{case}");
    assert_eq!(sc.read_only_root_filesystem, Some(true), "{case}");
    assert_eq!(sc.allow_privilege_escalation, Some(false), "{case}");
    let drop = sc.capabilities.as_ref().and_then(|c| c.drop.clone());
    assert_eq!(drop, Some(vec!["ALL".to_owned()]), "{case}");
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault"),
        "{case}"
    );

    // The pod's own containers are unchanged apart from env, in their order.
    for (before, after) in spec_before.containers.iter().zip(apps_after) {
        check_same_apart_from_env(case, before, after, balancings);
    }
    let inits_before = &init_before[..];
    assert_eq!(inits_before.len(), inits_after.len(), "{case}");
    for (before, after) in inits_before.iter().zip(inits_after) {
        if mode == SidecarMode::Native {
            check_same_apart_from_env(case, before, after, balancings);
        } else {
            assert_eq!(
                before, after,
                "{case}: legacy mode leaves init containers alone"
            );
        }
    }

    let volumes = spec.volumes.as_ref().expect("volumes");
    let config_volumes: Vec<_> = volumes
        .iter()
        .filter(|v| v.name == CONFIG_VOLUME_NAME)
        .collect();
    assert_eq!(config_volumes.len(), 1, "{case}");
    let cm = config_volumes[0]
        .config_map
        .as_ref()
        .expect("a ConfigMap volume");
    assert_eq!(
        (cm.name.as_str(), cm.optional),
        ("grpc-balancer-proxy-config", Some(true))
    );
    for v in spec_before.volumes.iter().flatten() {
        assert!(volumes.contains(v), "{case}: volume {} kept", v.name);
    }

    let annotations_before = before.metadata.annotations.clone().unwrap_or_default();
    let annotations_after = after.metadata.annotations.clone().expect("annotations");
    assert_eq!(
        annotations_after
            .get(annotations::INJECTED)
            .map(String::as_str),
        Some("1.2.3"),
        "{case}"
    );
    // The balancings the pod got, for the operator to tell which it lacks.
    let mut names: Vec<&str> = balancings.iter().map(|b| b.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        annotations_after
            .get(annotations::BALANCINGS)
            .map(String::as_str),
        Some(names.join(",").as_str()),
        "{case}"
    );
    for (k, v) in &annotations_before {
        assert_eq!(
            annotations_after.get(k),
            Some(v),
            "{case}: annotation {k} kept"
        );
    }
    let had_scrape_hints = annotations_before
        .keys()
        .any(|k| k.starts_with("prometheus.io/"));
    let scrape = annotations_after
        .get(annotations::PROMETHEUS_SCRAPE)
        .map(String::as_str);
    assert_eq!(scrape.is_some(), !had_scrape_hints, "{case}");
    if !had_scrape_hints {
        assert_eq!(scrape, Some("true"), "{case}");
        assert_eq!(
            annotations_after
                .get(annotations::PROMETHEUS_PORT)
                .map(String::as_str),
            Some("9901"),
            "{case}"
        );
    }
    assert_eq!(before.metadata.name, after.metadata.name, "{case}");
    assert_eq!(
        before.metadata.generate_name, after.metadata.generate_name,
        "{case}"
    );
}

fn check_same_apart_from_env(
    case: &str,
    before: &Container,
    after: &Container,
    balancings: &[LocalBalancing],
) {
    let mut without_env = after.clone();
    without_env.env = before.env.clone();
    assert_eq!(
        before, &without_env,
        "{case}: container {} changed",
        before.name
    );
    let env_before = before.env.clone().unwrap_or_default();
    let env_after = after.env.clone().unwrap_or_default();
    for var in &env_before {
        assert!(
            env_after.contains(var),
            "{case}: env {} kept as it was",
            var.name
        );
    }
    for b in balancings {
        let matching: Vec<_> = env_after.iter().filter(|e| e.name == b.env_name).collect();
        assert_eq!(
            matching.len(),
            1,
            "{case}: {} once in {}",
            b.env_name,
            before.name
        );
        if !env_before.iter().any(|e| e.name == b.env_name) {
            assert_eq!(
                matching[0].value.as_deref(),
                Some(b.address.as_str()),
                "{case}"
            );
        }
    }
}

#[test]
fn per_pod_overrides_reach_the_proxy() {
    let settings = settings(SidecarMode::Native);
    let ctx = InjectionContext {
        settings: &settings,
        balancings: &[],
        discovery_ca: None,
    };
    let pod = cases()
        .into_iter()
        .find(|c| c.name == "per-pod-overrides")
        .expect("the case exists")
        .pod;
    let typed: Pod = serde_json::from_value(pod.clone()).expect("a pod");
    let patch = mutate(&typed, &ctx).expect("injects").expect("a patch");
    let mut doc = pod;
    json_patch::patch(&mut doc, &patch).expect("applies");
    let result: Pod = serde_json::from_value(doc).expect("a pod");
    let proxy = &result.spec.expect("spec").init_containers.expect("init")[0];
    let resources = proxy.resources.as_ref().expect("resources");
    let get = |m: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
               k: &str| { m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone()) };
    assert_eq!(get(&resources.requests, "cpu").as_deref(), Some("50m"));
    assert_eq!(get(&resources.limits, "cpu").as_deref(), Some("500m"));
    assert_eq!(get(&resources.requests, "memory").as_deref(), Some("32Mi"));
    assert_eq!(get(&resources.limits, "memory").as_deref(), Some("256Mi"));
    let log = proxy
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "GRPC_BALANCER_LOG");
    assert_eq!(log.and_then(|e| e.value.as_deref()), Some("debug"));
}

#[test]
fn refused_pods_say_why() {
    let mut allow_images = settings(SidecarMode::Native);
    allow_images.allow_image_override = true;
    let strict = settings(SidecarMode::Native);
    let pod_with = |annotations: Value, spec: Value| -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": "p", "annotations": annotated(annotations) },
            "spec": spec
        }))
        .expect("a pod")
    };
    let plain_spec = json!({ "containers": [app("app")] });
    let cases: Vec<(&str, Pod, &ProxySettings, &str)> = vec![
        (
            "memory above the bound",
            pod_with(
                json!({ "grpcbalancer.io/proxy-memory-limit": "64Gi" }),
                plain_spec.clone(),
            ),
            &strict,
            "grpcbalancer.io/proxy-memory-limit",
        ),
        (
            "cpu not a quantity",
            pod_with(
                json!({ "grpcbalancer.io/proxy-cpu-request": "lots" }),
                plain_spec.clone(),
            ),
            &strict,
            "grpcbalancer.io/proxy-cpu-request",
        ),
        (
            "request above limit",
            pod_with(
                json!({ "grpcbalancer.io/proxy-memory-request": "512Mi" }),
                plain_spec.clone(),
            ),
            &strict,
            "above its limit",
        ),
        (
            "unknown log level",
            pod_with(
                json!({ "grpcbalancer.io/log-level": "loud" }),
                plain_spec.clone(),
            ),
            &strict,
            "grpcbalancer.io/log-level",
        ),
        (
            "image not allowed",
            pod_with(
                json!({ "grpcbalancer.io/proxy-image": "evil:1" }),
                plain_spec.clone(),
            ),
            &strict,
            "not allowed",
        ),
        (
            "blank image",
            pod_with(
                json!({ "grpcbalancer.io/proxy-image": " " }),
                plain_spec.clone(),
            ),
            &allow_images,
            "not an image",
        ),
        (
            "admin port taken",
            pod_with(
                json!({}),
                json!({ "containers": [{ "name": "app", "ports": [{ "containerPort": 9901 }] }] }),
            ),
            &strict,
            "9901",
        ),
        (
            "volume name taken",
            pod_with(
                json!({}),
                json!({ "containers": [app("app")], "volumes": [{ "name": CONFIG_VOLUME_NAME, "emptyDir": {} }] }),
            ),
            &strict,
            CONFIG_VOLUME_NAME,
        ),
        (
            "no spec",
            serde_json::from_value(
                json!({ "metadata": { "name": "p", "annotations": annotated(json!({})) } }),
            )
            .expect("a pod"),
            &strict,
            "no spec",
        ),
    ];
    for (what, pod, settings, needle) in cases {
        let ctx = InjectionContext {
            settings,
            balancings: &[],
            discovery_ca: None,
        };
        match mutate(&pod, &ctx) {
            Err(e) => assert!(e.to_string().contains(needle), "{what}: {e}"),
            Ok(patch) => panic!("{what}: accepted with {patch:?}"),
        }
    }
    // Allowed, the image annotation is honoured.
    let pod = pod_with(
        json!({ "grpcbalancer.io/proxy-image": "registry.local/proxy:dev" }),
        plain_spec,
    );
    let ctx = InjectionContext {
        settings: &allow_images,
        balancings: &[],
        discovery_ca: None,
    };
    let patch = serde_json::to_string(&mutate(&pod, &ctx).expect("allowed")).expect("json");
    assert!(patch.contains("registry.local/proxy:dev"), "{patch}");
    assert!(
        patch.contains(r#""/metadata/annotations/grpcbalancer.io~1injected","value":"dev""#),
        "{patch}"
    );
}

/// The pod as the apiserver holds it after our injection and a later
/// webhook's change, then our reinvocation's patch applied.
fn reinvoked(mode: SidecarMode, later_webhook: impl FnOnce(&mut Value)) -> (Value, Option<Value>) {
    let balancings = balancings();
    let settings = settings(mode);
    let ctx = InjectionContext {
        settings: &settings,
        balancings: &balancings,
        discovery_ca: None,
    };
    let mut doc = json!({
        "metadata": { "name": "client", "annotations": annotated(json!({})) },
        "spec": { "initContainers": [app("migrate")], "containers": [app("app")] }
    });
    let pod: Pod = serde_json::from_value(doc.clone()).expect("a pod");
    let first = mutate(&pod, &ctx).expect("injected").expect("a patch");
    json_patch::patch(&mut doc, &first).expect("the first patch applies");
    later_webhook(&mut doc);
    let before = doc.clone();
    let pod: Pod = serde_json::from_value(doc.clone()).expect("still a pod");
    let Some(again) = mutate(&pod, &ctx).expect("a reinvocation is answered") else {
        return (before, None);
    };
    json_patch::patch(&mut doc, &again).expect("the reinvocation's patch applies");
    let pod: Pod = serde_json::from_value(doc.clone()).expect("still a pod");
    assert_eq!(
        mutate(&pod, &ctx).map_err(|e| e.to_string()).ok(),
        Some(None),
        "a second reinvocation must change nothing"
    );
    (before, Some(doc))
}

fn env_names(container: &Value) -> Vec<String> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_reinvocation_gives_containers_added_by_later_webhooks_the_env_vars() {
    let wanted: Vec<String> = balancings().into_iter().map(|b| b.env_name).collect();
    for mode in [SidecarMode::Native, SidecarMode::Legacy] {
        let (before, after) = reinvoked(mode, |doc| {
            let containers = doc["spec"]["containers"]
                .as_array_mut()
                .expect("containers");
            containers.push(app("late"));
            containers.push(json!({
                "name": "late-with-env", "image": "example.com/app:1",
                "env": [{ "name": "GRPC_BALANCER_GREETER_ADDR", "value": "set-by-the-user" }]
            }));
            if mode == SidecarMode::Native {
                // One init container after the native sidecar (it can use
                // the proxy), one before it (it runs before the proxy does).
                let inits = doc["spec"]["initContainers"].as_array_mut().expect("inits");
                inits.push(app("late-init"));
                inits.insert(0, app("early-init"));
            }
        });
        let after = after.unwrap_or_else(|| panic!("{mode:?}: the reinvocation patched nothing"));
        let container = |list: &str, name: &str| -> Value {
            after["spec"][list]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["name"] == name)
                .cloned()
                .unwrap_or_else(|| panic!("{mode:?}: {name} missing from {list}"))
        };
        assert_eq!(
            env_names(&container("containers", "late")),
            wanted,
            "{mode:?}"
        );
        // A value the pod set itself is kept; only the missing one is added.
        let late_with_env = container("containers", "late-with-env");
        assert_eq!(env_names(&late_with_env), wanted, "{mode:?}");
        assert_eq!(late_with_env["env"][0]["value"], "set-by-the-user");
        if mode == SidecarMode::Native {
            assert_eq!(env_names(&container("initContainers", "late-init")), wanted);
            assert!(env_names(&container("initContainers", "early-init")).is_empty());
        }

        // Nothing else changed: the same pod once the new env vars are removed.
        let mut stripped = after.clone();
        for list in ["containers", "initContainers"] {
            for c in stripped["spec"][list].as_array_mut().into_iter().flatten() {
                if c["name"] == "late" || c["name"] == "late-init" {
                    c.as_object_mut().expect("an object").remove("env");
                }
                if c["name"] == "late-with-env" {
                    c["env"].as_array_mut().expect("env").truncate(1);
                }
            }
        }
        assert_eq!(
            stripped, before,
            "{mode:?}: the reinvocation changed more than env"
        );
    }

    // A reinvocation with nothing missing changes nothing.
    let (_, after) = reinvoked(SidecarMode::Native, |doc| {
        doc["metadata"]["labels"] = json!({ "added": "later" });
    });
    assert_eq!(after, None, "nothing was missing, yet a patch came back");
}
