//! Unit tests of balancings that name a Service: the loopback address, the
//! listener on the Service's ports, and the status of what cannot be done.

use std::net::Ipv4Addr;

use grpc_balancer_crds::config::Forward;
use grpc_balancer_crds::v1alpha1::{ConditionReason, GrpcBalancingStatus};
use k8s_openapi::api::core::v1::Service;

use super::fixtures::{cluster_service, fronting, named, slice};
use super::*;

const DOMAIN: &str = "cluster.local";
const T0: &str = "2026-01-01T00:00:00Z";

fn time(s: &str) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(s.parse().expect("timestamp"))
}

fn greeter_service() -> Service {
    cluster_service("greeter", "10.96.0.20", &[("grpc", 50051, 50051)])
}

fn endpoints() -> EndpointIndex {
    let slices = [
        slice("demo", "grpcb-greeter-v1", 50051, 2, 0),
        slice("demo", "grpcb-greeter-v2", 50051, 1, 0),
    ];
    EndpointIndex::new("demo", slices.iter())
}

fn rendered(outcome: &Outcome) -> &grpc_balancer_crds::config::Balancing {
    match outcome {
        Outcome::Rendered { balancing, .. } => balancing,
        Outcome::NotRendered { reason, message } => panic!("not rendered: {reason}: {message}"),
    }
}

fn not_rendered(outcome: &Outcome) -> (ConditionReason, String) {
    match outcome {
        Outcome::NotRendered { reason, message } => (*reason, message.clone()),
        Outcome::Rendered { balancing, .. } => panic!("rendered: {balancing:?}"),
    }
}

fn recorded(
    mut gb: grpc_balancer_crds::v1alpha1::GrpcBalancing,
    address: &str,
) -> grpc_balancer_crds::v1alpha1::GrpcBalancing {
    gb.status = Some(GrpcBalancingStatus {
        address: Some(address.into()),
        ..GrpcBalancingStatus::default()
    });
    gb
}

#[test]
fn the_listener_takes_the_service_port_on_a_loopback_address_of_its_own() {
    let gb = fronting("greeter", "greeter", T0);
    let svc = greeter_service();
    let endpoints = endpoints();
    let view = NamespaceView::new([&gb], &endpoints, DOMAIN).with_services([&svc]);
    let eval = view.evaluate(&gb);
    let b = rendered(&eval.outcome);
    assert_eq!(b.listen, "127.0.10.1:50051");
    let front = b.service.as_ref().expect("a service front");
    assert_eq!(
        front.hostnames,
        [
            "greeter",
            "greeter.demo",
            "greeter.demo.svc",
            "greeter.demo.svc.cluster.local"
        ]
    );
    assert_eq!(front.passthrough, "10.96.0.20:50051");
    assert!(front.forwards.is_empty());
    assert_eq!(eval.address, Some(Ipv4Addr::new(127, 0, 10, 1)));
    // The config the proxy gets passes its own checks.
    let config = view.proxy_config();
    assert!(grpc_balancer_crds::config::validate(&config).is_empty());
    assert_eq!(config.balancings[0].listen, "127.0.10.1:50051");
    let status = desired_status(&gb, None, &eval, Vec::new(), Vec::new(), time(T0));
    assert_eq!(status.address.as_deref(), Some("127.0.10.1"));
}

#[test]
fn addresses_are_kept_once_recorded_and_freed_ones_are_not_reused_before_the_pool_wraps() {
    // The oldest recorded .3, the next nothing, the youngest .1: .2 was
    // freed by a deleted balancing, so the new one gets .4.
    let a = recorded(fronting("a", "svc-a", "2026-01-01T00:00:00Z"), "127.0.10.3");
    let b = fronting("b", "svc-b", "2026-01-01T00:00:01Z");
    let c = recorded(fronting("c", "svc-c", "2026-01-01T00:00:02Z"), "127.0.10.1");
    let endpoints = endpoints();
    let view = NamespaceView::new([&c, &b, &a], &endpoints, DOMAIN);
    assert_eq!(view.address_of("a"), Some(Ipv4Addr::new(127, 0, 10, 3)));
    assert_eq!(view.address_of("c"), Some(Ipv4Addr::new(127, 0, 10, 1)));
    assert_eq!(view.address_of("b"), Some(Ipv4Addr::new(127, 0, 10, 4)));
    // With none recorded, the first ones of the pool in age order.
    let fresh = [
        fronting("x", "svc-x", "2026-01-01T00:00:00Z"),
        fronting("y", "svc-y", "2026-01-01T00:00:01Z"),
    ];
    let view_fresh = NamespaceView::new(fresh.iter(), &endpoints, DOMAIN);
    assert_eq!(view_fresh.address_of("x"), Some(POOL_FIRST));
    assert_eq!(
        view_fresh.address_of("y"),
        Some(Ipv4Addr::new(127, 0, 10, 2))
    );
    // Deterministic: the same inputs in another order give the same.
    let again = NamespaceView::new([&a, &b, &c], &endpoints, DOMAIN);
    for name in ["a", "b", "c"] {
        assert_eq!(again.address_of(name), view.address_of(name), "{name}");
    }
    // An address outside the pool (or 127.0.0.1) is not kept.
    let d = recorded(fronting("d", "svc-d", "2026-01-01T00:00:03Z"), "127.0.0.1");
    let e = recorded(
        fronting("e", "svc-e", "2026-01-01T00:00:04Z"),
        "not-an-address",
    );
    let view = NamespaceView::new([&a, &b, &c, &d, &e], &endpoints, DOMAIN);
    assert_eq!(view.address_of("d"), Some(Ipv4Addr::new(127, 0, 10, 5)));
    assert_eq!(view.address_of("e"), Some(Ipv4Addr::new(127, 0, 10, 6)));
    // A balancing with a listener port takes no address.
    let env = named("env", 15001, T0);
    let view = NamespaceView::new([&env], &endpoints, DOMAIN);
    assert_eq!(view.address_of("env"), None);
}

#[test]
fn a_missing_service_is_reported_and_nothing_is_rendered() {
    let gb = fronting("greeter", "greeter", T0);
    let endpoints = endpoints();
    let view = NamespaceView::new([&gb], &endpoints, DOMAIN);
    let eval = view.evaluate(&gb);
    let (reason, message) = not_rendered(&eval.outcome);
    assert_eq!(reason, ConditionReason::ServiceNotFound);
    assert!(message.contains("\"greeter\" does not exist"), "{message}");
    // The address is assigned all the same: it will not move when the
    // Service appears.
    assert_eq!(eval.address, Some(Ipv4Addr::new(127, 0, 10, 1)));
    assert!(view.proxy_config().balancings.is_empty());
}

#[test]
fn a_service_with_several_ports_gets_the_others_relayed() {
    let gb = fronting("greeter", "greeter", T0);
    let svc = cluster_service(
        "greeter",
        "10.96.0.20",
        &[
            ("metrics", 9090, 9090),
            ("grpc", 443, 50051),
            ("http", 8080, 8080),
        ],
    );
    let endpoints = endpoints();
    let view = NamespaceView::new([&gb], &endpoints, DOMAIN).with_services([&svc]);
    let eval = view.evaluate(&gb);
    let b = rendered(&eval.outcome);
    assert_eq!(
        b.listen, "127.0.10.1:443",
        "the port whose target is spec.port"
    );
    let front = b.service.as_ref().expect("front");
    assert_eq!(front.passthrough, "10.96.0.20:443");
    assert_eq!(
        front.forwards,
        [
            Forward {
                listen: "127.0.10.1:9090".into(),
                to: "10.96.0.20:9090".into()
            },
            Forward {
                listen: "127.0.10.1:8080".into(),
                to: "10.96.0.20:8080".into()
            },
        ]
    );
    assert!(grpc_balancer_crds::config::validate(&view.proxy_config()).is_empty());
    // Several ports, none of them for spec.port: refused, naming the ports.
    let svc = cluster_service("greeter", "10.96.0.20", &[("a", 80, 8080), ("b", 81, 8081)]);
    let view = NamespaceView::new([&gb], &endpoints, DOMAIN).with_services([&svc]);
    let (reason, message) = not_rendered(&view.evaluate(&gb).outcome);
    assert_eq!(reason, ConditionReason::ServiceUnsupported);
    assert!(message.contains("80, 81"), "{message}");
    // One port with another target: that one is the gRPC port.
    let svc = cluster_service("greeter", "10.96.0.20", &[("grpc", 80, 8080)]);
    let view = NamespaceView::new([&gb], &endpoints, DOMAIN).with_services([&svc]);
    assert_eq!(
        rendered(&view.evaluate(&gb).outcome).listen,
        "127.0.10.1:80"
    );
}

#[test]
fn services_the_proxy_cannot_stand_in_for_are_refused() {
    let gb = fronting("greeter", "greeter", T0);
    let endpoints = endpoints();
    let headless = cluster_service("greeter", "None", &[("grpc", 50051, 50051)]);
    let mut external = greeter_service();
    if let Some(spec) = external.spec.as_mut() {
        spec.type_ = Some("ExternalName".into());
        spec.cluster_ip = None;
    }
    let mut udp = cluster_service(
        "greeter",
        "10.96.0.20",
        &[("grpc", 50051, 50051), ("dns", 53, 53)],
    );
    if let Some(p) = udp.spec.as_mut().and_then(|s| s.ports.as_mut()) {
        p[1].protocol = Some("UDP".into());
    }
    let no_ip = cluster_service("greeter", "", &[("grpc", 50051, 50051)]);
    let garbage_ip = cluster_service("greeter", "ten.nine", &[("grpc", 50051, 50051)]);
    let no_ports = cluster_service("greeter", "10.96.0.20", &[]);
    let mut deleting = greeter_service();
    deleting.metadata.deletion_timestamp = Some(time(T0));
    for (svc, reason, says) in [
        (&headless, ConditionReason::ServiceUnsupported, "headless"),
        (
            &external,
            ConditionReason::ServiceUnsupported,
            "ExternalName",
        ),
        (&udp, ConditionReason::ServiceUnsupported, "UDP port 53"),
        (&no_ip, ConditionReason::ServiceUnsupported, "no cluster IP"),
        (
            &garbage_ip,
            ConditionReason::ServiceUnsupported,
            "not an IP",
        ),
        (&no_ports, ConditionReason::ServiceUnsupported, "no port"),
        (
            &deleting,
            ConditionReason::ServiceNotFound,
            "does not exist",
        ),
    ] {
        let view = NamespaceView::new([&gb], &endpoints, DOMAIN).with_services([svc]);
        let eval = view.evaluate(&gb);
        let (got, message) = not_rendered(&eval.outcome);
        assert_eq!(got, reason, "{message}");
        assert!(message.contains(says), "{says}: {message}");
        assert!(view.proxy_config().balancings.is_empty());
    }
}

#[test]
fn two_balancings_naming_one_service_leave_the_younger_out() {
    let old = fronting("old", "greeter", "2026-01-01T00:00:00Z");
    let young = fronting("young", "greeter", "2026-01-01T00:00:05Z");
    let svc = greeter_service();
    let endpoints = endpoints();
    let view = NamespaceView::new([&young, &old], &endpoints, DOMAIN).with_services([&svc]);
    rendered(&view.evaluate(&old).outcome);
    let eval = view.evaluate(&young);
    let (reason, message) = not_rendered(&eval.outcome);
    assert_eq!(reason, ConditionReason::ServiceConflict);
    assert!(message.contains("older GrpcBalancing \"old\""), "{message}");
    assert_eq!(eval.address, None, "the younger takes no address");
    let config = view.proxy_config();
    assert_eq!(config.balancings.len(), 1, "one listener, never two");
    assert_eq!(config.balancings[0].name, "old");
}

#[test]
fn past_the_pool_the_younger_balancings_are_refused() {
    let pool = u32::from(POOL_LAST) - u32::from(POOL_FIRST) + 1;
    let all: Vec<_> = (0..=pool)
        .map(|i| {
            fronting(
                &format!("b{i:03}"),
                &format!("svc-{i:03}"),
                &format!("2026-01-01T00:{:02}:{:02}Z", i / 60, i % 60),
            )
        })
        .collect();
    let endpoints = endpoints();
    let view = NamespaceView::new(all.iter(), &endpoints, DOMAIN);
    let last = all.last().expect("one past the pool");
    let (reason, message) = not_rendered(&view.evaluate(last).outcome);
    assert_eq!(reason, ConditionReason::AddressPoolExhausted);
    assert!(message.contains("127.0.10.1-127.0.10.254"), "{message}");
    assert_eq!(view.address_of("b000"), Some(POOL_FIRST));
    assert_eq!(
        view.address_of(&format!("b{:03}", pool - 1)),
        Some(POOL_LAST)
    );
    // The statuses record the addresses; then the oldest is deleted: the
    // others keep theirs, and the one left out gets the freed address (the
    // pool has wrapped: nothing is free above the highest).
    let stored: Vec<_> = all
        .iter()
        .map(|gb| match view.evaluate(gb).address {
            Some(a) => recorded(gb.clone(), &a.to_string()),
            None => gb.clone(),
        })
        .collect();
    let view = NamespaceView::new(stored.iter().skip(1), &endpoints, DOMAIN);
    let name = |gb: &grpc_balancer_crds::v1alpha1::GrpcBalancing| {
        gb.metadata.name.clone().unwrap_or_default()
    };
    assert_eq!(view.address_of(&name(last)), Some(POOL_FIRST));
    assert_eq!(view.address_of("b001"), Some(Ipv4Addr::new(127, 0, 10, 2)));
    assert_eq!(
        view.address_of(&format!("b{:03}", pool - 1)),
        Some(POOL_LAST)
    );
}

#[test]
fn a_balancing_with_neither_port_nor_service_is_invalid() {
    let mut gb = named("greeter", 15001, T0);
    gb.spec.listener_port = None;
    let endpoints = endpoints();
    let view = NamespaceView::new([&gb], &endpoints, DOMAIN);
    let (reason, message) = not_rendered(&view.evaluate(&gb).outcome);
    assert_eq!(reason, ConditionReason::InvalidSpec);
    assert!(
        message.contains("listenerPort or spec.service"),
        "{message}"
    );
}
