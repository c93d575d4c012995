//! Unit tests of the rendering: from balancings and endpoint summaries to
//! the proxy config, the headless Services and the status.

use grpc_balancer_crds::config::{self, DiscoverySource, PolicyKind};
use grpc_balancer_crds::v1alpha1::{ConditionReason, HealthCheck, READY_CONDITION};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::fixtures::{GREETER, balancing, named, slice};
use super::*;

const DOMAIN: &str = "cluster.local";

fn time(s: &str) -> Time {
    Time(s.parse().expect("timestamp"))
}

#[test]
fn two_subsets_give_two_owned_headless_services() {
    let gb = balancing(GREETER);
    let services = desired_services(&gb).expect("renders");
    let names: Vec<_> = services
        .iter()
        .map(|s| s.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, ["grpcb-greeter-v1", "grpcb-greeter-v2"]);
    for (svc, version) in services.iter().zip(["v1", "v2"]) {
        let spec = svc.spec.as_ref().expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        let selector = spec.selector.as_ref().expect("selector");
        assert_eq!(selector.get("app").map(String::as_str), Some("greeter"));
        assert_eq!(selector.get("version").map(String::as_str), Some(version));
        let port = &spec.ports.as_ref().expect("ports")[0];
        assert_eq!(port.port, 50051);
        assert_eq!(port.target_port, Some(IntOrString::Int(50051)));
        let owner = &svc.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(owner.kind, "GrpcBalancing");
        assert_eq!(owner.uid, "0b1c2d3e-0000-4000-8000-000000000001");
        assert_eq!(owner.controller, Some(true));
        let labels = svc.metadata.labels.as_ref().expect("labels");
        assert_eq!(
            labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("grpc-balancer")
        );
        assert_eq!(
            labels.get("grpcbalancer.io/balancing").map(String::as_str),
            Some("greeter")
        );
    }
}

#[test]
fn no_subsets_and_a_named_port_give_one_service_targeting_the_name() {
    let mut gb = balancing(GREETER);
    gb.spec.subsets.clear();
    gb.spec.port = IntOrString::String("grpc".into());
    let services = desired_services(&gb).expect("renders");
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].metadata.name.as_deref(), Some("grpcb-greeter"));
    let spec = services[0].spec.as_ref().expect("spec");
    assert_eq!(spec.selector.as_ref().map(|s| s.len()), Some(1));
    let port = &spec.ports.as_ref().expect("ports")[0];
    assert_eq!(port.target_port, Some(IntOrString::String("grpc".into())));
}

#[test]
fn a_balancing_without_uid_is_not_rendered_into_services() {
    let mut gb = balancing(GREETER);
    gb.metadata.uid = None;
    assert!(desired_services(&gb).is_err());
}

#[test]
fn services_filled_in_by_the_apiserver_need_no_apply() {
    let gb = balancing(GREETER);
    let desired = desired_services(&gb).expect("renders").remove(0);
    let mut stored = desired.clone();
    if let Some(spec) = stored.spec.as_mut() {
        spec.cluster_ips = Some(vec!["None".into()]);
        spec.session_affinity = Some("None".into());
        spec.type_ = Some("ClusterIP".into());
    }
    stored.metadata.resource_version = Some("42".into());
    stored
        .metadata
        .labels
        .get_or_insert_default()
        .insert("team".into(), "a".into());
    assert!(!service_needs_apply(&stored, &desired));

    let mut changed = stored.clone();
    if let Some(spec) = changed.spec.as_mut() {
        spec.selector
            .get_or_insert_default()
            .insert("version".into(), "v9".into());
    }
    assert!(service_needs_apply(&changed, &desired));
    let mut unowned = stored.clone();
    unowned.metadata.owner_references = None;
    assert!(service_needs_apply(&unowned, &desired));
}

#[test]
fn namespace_config_round_trips_through_the_proxy_parser() {
    let greeter = balancing(GREETER);
    let mut echo = named("echo", 15002, "2026-01-02T00:00:00Z");
    echo.spec.subsets.clear();
    echo.spec.policy.kind = PolicyKind::RingHash;
    echo.spec.policy.header = Some("x-user".into());
    echo.spec.timeout = Some(config::Duration::from_secs(2));
    echo.spec.health_check = Some(HealthCheck::default());
    let endpoints = EndpointIndex::default();
    // Given out of order: the config is sorted by name.
    let view = NamespaceView::new([&greeter, &echo], &endpoints, DOMAIN);
    let text = config::to_yaml(&view.proxy_config()).expect("renders");
    let parsed = config::parse_yaml(&text).expect("the proxy accepts what the operator writes");
    let names: Vec<_> = parsed.balancings.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["echo", "greeter"]);

    let g = &parsed.balancings[1];
    assert_eq!(g.listen, "127.0.0.1:15001");
    assert_eq!(g.policy.kind, PolicyKind::RoundRobin);
    let subsets: Vec<_> = g
        .subsets
        .iter()
        .map(|s| (s.name.as_str(), s.weight))
        .collect();
    assert_eq!(subsets, [("v1", 75), ("v2", 25)]);
    match g.subsets[1].discovery.source() {
        Some(DiscoverySource::Dns(dns)) => {
            assert_eq!(dns.name, "grpcb-greeter-v2.demo.svc.cluster.local");
            assert_eq!(dns.port, 50051);
            assert_eq!(dns.refresh_interval, config::Duration::from_secs(5));
        }
        other => panic!("expected dns discovery, got {other:?}"),
    }

    let e = &parsed.balancings[0];
    assert_eq!(e.subsets.len(), 1);
    assert_eq!(e.subsets[0].name, "default");
    assert_eq!(e.policy.header.as_deref(), Some("x-user"));
    assert_eq!(e.timeout, Some(config::Duration::from_secs(2)));
    // The CRD's defaults are the proxy's defaults.
    let proxy_default: config::HealthCheck =
        serde_yaml::from_str("{}").expect("an empty health check parses");
    assert_eq!(e.health_check.as_ref(), Some(&proxy_default));
    assert_eq!(e.retries, config::Retries::default());
    assert_eq!(e.outlier_detection, config::OutlierDetection::default());
    assert_eq!(e.queue, config::Queue::default());
}

#[test]
fn the_older_balancing_keeps_a_contested_listener_port() {
    let old = named("zeta", 15001, "2026-01-01T00:00:00Z");
    let new = named("alpha", 15001, "2026-01-02T00:00:00Z");
    let same_time = named("beta", 15001, "2026-01-01T00:00:00Z");
    let endpoints = EndpointIndex::default();
    let view = NamespaceView::new([&new, &old], &endpoints, DOMAIN);
    assert_eq!(view.listener_owner(15001), Some("zeta"));
    match view.evaluate(&new).outcome {
        Outcome::NotRendered { reason, message } => {
            assert_eq!(reason, ConditionReason::ListenerPortConflict);
            assert!(message.contains("\"zeta\""), "{message}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let names: Vec<_> = view
        .proxy_config()
        .balancings
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, ["zeta"]);

    // Same creation second: the smaller name wins.
    let view = NamespaceView::new([&old, &same_time], &endpoints, DOMAIN);
    assert_eq!(view.listener_owner(15001), Some("beta"));

    // Once the older one is being deleted, the port moves on.
    let mut deleting = old.clone();
    deleting.metadata.deletion_timestamp = Some(time("2026-01-03T00:00:00Z"));
    let view = NamespaceView::new([&deleting, &new], &endpoints, DOMAIN);
    assert_eq!(view.listener_owner(15001), Some("alpha"));
}

#[test]
fn named_ports_are_resolved_from_endpoint_slices() {
    let mut gb = balancing(GREETER);
    gb.spec.port = IntOrString::String("grpc".into());
    let nothing = EndpointIndex::default();
    let view = NamespaceView::new([&gb], &nothing, DOMAIN);
    let eval = view.evaluate(&gb);
    assert!(
        matches!(
            &eval.outcome,
            Outcome::NotRendered {
                reason: ConditionReason::PortUnresolved,
                ..
            }
        ),
        "{eval:?}"
    );
    assert!(view.proxy_config().balancings.is_empty());

    // v1 known, v2 not yet: rendered without v2, reported.
    let slices = [
        slice("demo", "grpcb-greeter-v1", 8443, 2, 0),
        slice("other", "grpcb-greeter-v2", 9000, 1, 0),
    ];
    let index = EndpointIndex::new("demo", &slices);
    let view = NamespaceView::new([&gb], &index, DOMAIN);
    let eval = view.evaluate(&gb);
    match &eval.outcome {
        Outcome::Rendered { balancing, missing } => {
            assert_eq!(balancing.subsets.len(), 1);
            assert_eq!(missing, &["v2".to_owned()]);
        }
        other => panic!("expected a partial render, got {other:?}"),
    }
    let status = desired_status(
        &gb,
        gb.status.as_ref(),
        &eval,
        vec![],
        vec![],
        time("2026-01-01T00:00:00Z"),
    );
    assert_eq!(status.conditions[0].reason, "PortUnresolved");
    assert_eq!(status.subsets[0].port, Some(8443));
    assert_eq!(status.subsets[1].port, None);
}

#[test]
fn endpoint_counts_take_ready_endpoints_and_the_majority_port() {
    let slices = [
        slice("demo", "svc", 50051, 3, 2),
        slice("demo", "svc", 50052, 1, 4),
    ];
    let index = EndpointIndex::new("demo", &slices);
    let svc = index.get("svc");
    assert_eq!(svc.ready, 4);
    assert_eq!(svc.port, Some(50051));
    assert_eq!(index.get("absent"), ServiceEndpoints::default());
}

#[test]
fn specs_the_proxy_rejects_are_invalid_with_its_message() {
    let mut gb = balancing(GREETER);
    gb.spec.policy.kind = PolicyKind::RingHash;
    gb.spec.policy.header = None;
    gb.spec.retries.max_attempts = 0;
    let endpoints = EndpointIndex::default();
    let view = NamespaceView::new([&gb], &endpoints, DOMAIN);
    match view.evaluate(&gb).outcome {
        Outcome::NotRendered { reason, message } => {
            assert_eq!(reason, ConditionReason::InvalidSpec);
            assert!(message.contains("policy.header"), "{message}");
            assert!(message.contains("retries.maxAttempts"), "{message}");
        }
        other => panic!("expected InvalidSpec, got {other:?}"),
    }
    assert!(view.proxy_config().balancings.is_empty());
}

#[test]
fn status_is_ready_once_every_weighted_subset_has_endpoints() {
    let mut gb = balancing(GREETER);
    let services = vec!["grpcb-greeter-v1".to_owned(), "grpcb-greeter-v2".to_owned()];
    let t0 = time("2026-01-01T00:00:00Z");
    let t1 = time("2026-01-01T00:01:00Z");

    let only_v1 = [slice("demo", "grpcb-greeter-v1", 50051, 3, 0)];
    let index = EndpointIndex::new("demo", &only_v1);
    let eval = NamespaceView::new([&gb], &index, DOMAIN).evaluate(&gb);
    let status = desired_status(
        &gb,
        gb.status.as_ref(),
        &eval,
        services.clone(),
        vec![],
        t0.clone(),
    );
    let ready = &status.conditions[0];
    assert_eq!(
        (
            ready.type_.as_str(),
            ready.status.as_str(),
            ready.reason.as_str()
        ),
        (READY_CONDITION, "False", "NoEndpoints")
    );
    assert!(
        ready.message.contains("v2 (Service grpcb-greeter-v2)"),
        "{}",
        ready.message
    );
    assert_eq!(status.observed_generation, Some(3));

    let both = [
        slice("demo", "grpcb-greeter-v1", 50051, 3, 0),
        slice("demo", "grpcb-greeter-v2", 50051, 1, 1),
    ];
    let index = EndpointIndex::new("demo", &both);
    let eval = NamespaceView::new([&gb], &index, DOMAIN).evaluate(&gb);
    gb.status = Some(status);
    let pods = vec!["b".to_owned(), "a".to_owned(), "a".to_owned()];
    let status = desired_status(
        &gb,
        gb.status.as_ref(),
        &eval,
        services.clone(),
        pods,
        t1.clone(),
    );
    assert_eq!(status.conditions[0].status, "True");
    assert_eq!(status.conditions[0].reason, "Reconciled");
    assert_eq!(status.conditions[0].last_transition_time, t1);
    assert_eq!(status.ready_endpoints, 4);
    let counts: Vec<_> = status.subsets.iter().map(|s| s.ready_endpoints).collect();
    assert_eq!(counts, [3, 1]);
    assert_eq!(status.pods_without_proxy, ["a", "b"]);

    // Same inputs later: identical status (the transition time is kept), so no write.
    gb.status = Some(status.clone());
    let again = desired_status(
        &gb,
        gb.status.as_ref(),
        &eval,
        services,
        vec!["a".into(), "b".into()],
        time("2026-01-02T00:00:00Z"),
    );
    assert_eq!(again, status);
}

#[test]
fn a_drained_subset_without_endpoints_does_not_block_ready() {
    let mut gb = balancing(GREETER);
    gb.spec.subsets[1].weight = 0;
    let slices = [slice("demo", "grpcb-greeter-v1", 50051, 1, 0)];
    let index = EndpointIndex::new("demo", &slices);
    let eval = NamespaceView::new([&gb], &index, DOMAIN).evaluate(&gb);
    let status = desired_status(
        &gb,
        gb.status.as_ref(),
        &eval,
        vec![],
        vec![],
        time("2026-01-01T00:00:00Z"),
    );
    assert_eq!(
        status.conditions[0].reason,
        ConditionReason::Reconciled.as_str()
    );
}

#[test]
fn the_older_balancing_keeps_a_contested_service_name() {
    // `a-b` without subsets and `a` with subset `b` both name `grpcb-a-b`.
    let mut older = named("a-b", 15001, "2026-01-01T00:00:00Z");
    older.spec.subsets.clear();
    let mut newer = named("a", 15002, "2026-01-02T00:00:00Z");
    newer.spec.subsets.truncate(1);
    newer.spec.subsets[0].name = "b".into();
    let endpoints = EndpointIndex::default();
    let view = NamespaceView::new([&newer, &older], &endpoints, DOMAIN);
    assert_eq!(view.service_owner("grpcb-a-b"), Some("a-b"));
    match view.evaluate(&newer).outcome {
        Outcome::NotRendered { reason, message } => {
            assert_eq!(reason, ConditionReason::ServiceNameConflict);
            assert!(
                message.contains("grpcb-a-b") && message.contains("\"a-b\""),
                "{message}"
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(
        view.evaluate(&older).outcome,
        Outcome::Rendered { .. }
    ));
    let names: Vec<_> = view
        .proxy_config()
        .balancings
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, ["a-b"]);

    // Deleting the older one hands the name over.
    let mut deleting = older.clone();
    deleting.metadata.deletion_timestamp = Some(time("2026-01-03T00:00:00Z"));
    let view = NamespaceView::new([&deleting, &newer], &endpoints, DOMAIN);
    assert_eq!(view.service_owner("grpcb-a-b"), Some("a"));
    assert!(matches!(
        view.evaluate(&newer).outcome,
        Outcome::Rendered { .. }
    ));
}

#[test]
fn a_listener_on_the_proxy_admin_port_is_refused() {
    let endpoints = EndpointIndex::default();
    // The default admin port, and one the chart moved.
    for (admin_port, listener) in [(None, 9901), (Some(9555), 9555)] {
        let gb = named("greeter", listener, "2026-01-01T00:00:00Z");
        let mut view = NamespaceView::new([&gb], &endpoints, DOMAIN);
        if let Some(port) = admin_port {
            view = view.with_proxy_admin_port(port);
        }
        match view.evaluate(&gb).outcome {
            Outcome::NotRendered { reason, message } => {
                assert_eq!(reason, ConditionReason::InvalidSpec);
                assert!(
                    message.contains(&format!("listenerPort {listener}"))
                        && message.contains("admin port"),
                    "{message}"
                );
            }
            other => panic!("listener {listener}: expected a refusal, got {other:?}"),
        }
        assert!(view.proxy_config().balancings.is_empty());
    }
    // With the admin port moved, 9901 stays reserved: the CRD and the
    // proxy's config format refuse it whatever port the chart picked, so a
    // later move back never strands a balancing.
    let gb = named("greeter", 9901, "2026-01-01T00:00:00Z");
    let view = NamespaceView::new([&gb], &endpoints, DOMAIN).with_proxy_admin_port(9555);
    match view.evaluate(&gb).outcome {
        Outcome::NotRendered { reason, message } => {
            assert_eq!(reason, ConditionReason::InvalidSpec);
            assert!(message.contains("9901"), "{message}");
        }
        other => {
            panic!("listener 9901 with the admin port moved: expected a refusal, got {other:?}")
        }
    }
}
