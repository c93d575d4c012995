//! The operator in process against the real control plane: Services,
//! ConfigMap and status of a two-subset balancing through its life; a
//! restart that writes nothing; two replicas and a leader hand-over.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::support::{RunningOperator, TIMEOUT, backend_pod, install_crd};
use grpc_balancer_crds::config::{
    self, CONFIG_MAP_KEY, CONFIG_MAP_NAME, DiscoverySource, ProxyConfig,
};
use grpc_balancer_crds::v1alpha1::GrpcBalancing;
use grpc_balancer_operator::metrics::{CONFIG_MAP_CONTROLLER, GRPC_BALANCING_CONTROLLER};
use grpc_balancer_operator::render::fixtures::{greeter, with_spec};
use grpc_balancer_test_support::{ControlPlane, TestNamespace, assert_eventually, poll_until};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(4);

/// Three v1 and one v2 backend pods, Ready, on 127.0.<net>.x.
async fn backends(client: &kube::Client, ns: &str, net: u8) {
    for (i, version) in ["v1", "v1", "v1", "v2"].into_iter().enumerate() {
        let ip = Ipv4Addr::new(127, 0, net, 10 + i as u8);
        let name = format!("greeter-{version}-{i}");
        backend_pod(
            client,
            ns,
            &name,
            &[("app", "greeter"), ("version", version)],
            "grpc",
            50051,
            ip,
        )
        .await;
    }
}

/// The namespace's proxy config, parsed by the proxy's own parser.
async fn proxy_config(client: &kube::Client, ns: &str) -> Result<ProxyConfig, String> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(CONFIG_MAP_NAME)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no ConfigMap yet")?;
    let labels = cm.metadata.labels.unwrap_or_default();
    if labels
        .get("app.kubernetes.io/managed-by")
        .map(String::as_str)
        != Some("grpc-balancer")
    {
        return Err(format!("ConfigMap lacks the managed-by label: {labels:?}"));
    }
    let text = cm
        .data
        .unwrap_or_default()
        .remove(CONFIG_MAP_KEY)
        .ok_or("no config key")?;
    config::parse_yaml(&text).map_err(|e| format!("the proxy rejects the config: {e}"))
}

fn weights(config: &ProxyConfig, name: &str) -> Vec<(String, u32)> {
    config
        .balancings
        .iter()
        .filter(|b| b.name == name)
        .flat_map(|b| b.subsets.iter().map(|s| (s.name.clone(), s.weight)))
        .collect()
}

async fn ready_counts(
    api: &Api<GrpcBalancing>,
    name: &str,
) -> Result<(String, Vec<i32>, i32), String> {
    let gb = api.get(name).await.map_err(|e| e.to_string())?;
    let status = gb.status.ok_or("no status yet")?;
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .ok_or("no Ready condition")?;
    if status.observed_generation != gb.metadata.generation {
        return Err(format!(
            "status is of generation {:?}",
            status.observed_generation
        ));
    }
    let counts = status.subsets.iter().map(|s| s.ready_endpoints).collect();
    Ok((
        format!("{} {}", ready.status, ready.reason),
        counts,
        status.ready_endpoints,
    ))
}

/// `kubectl get grpcb` in `ns`, split into columns; the age column (which
/// changes with time) as `<age>` once it parses as an age.
fn kubectl_get_grpcb(cp: &ControlPlane, ns: &str) -> Vec<Vec<String>> {
    let out = cp
        .kubectl()
        .args(["get", "grpcb", "-n", ns])
        .output()
        .expect("kubectl runs (scripts/control-plane install provides it)");
    assert!(
        out.status.success(),
        "kubectl get grpcb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let mut cells: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            if i > 0
                && let Some(age) = cells.last_mut()
                && !age.is_empty()
                && age
                    .chars()
                    .all(|c| c.is_ascii_digit() || "smhdy".contains(c))
            {
                *age = "<age>".into();
            }
            cells
        })
        .collect()
}

#[tokio::test]
async fn a_two_subset_balancing_through_its_life() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "op-life").await;
    let op = RunningOperator::start(cp, ns.name(), "op-life", "op-a", LEASE).await;
    backends(&client, ns.name(), 41).await;

    let gbs: Api<GrpcBalancing> = Api::namespaced(client.clone(), ns.name());
    gbs.create(&PostParams::default(), &greeter("greeter"))
        .await
        .expect("created");

    let services: Api<Service> = Api::namespaced(client.clone(), ns.name());
    for (svc, version) in [("grpcb-greeter-v1", "v1"), ("grpcb-greeter-v2", "v2")] {
        let found = poll_until(&format!("Service {svc}"), TIMEOUT, || async {
            services
                .get_opt(svc)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "absent".to_owned())
        })
        .await;
        let spec = found.spec.expect("spec");
        assert_eq!(
            spec.cluster_ip.as_deref(),
            Some("None"),
            "{svc} is headless"
        );
        let selector = spec.selector.unwrap_or_default();
        assert_eq!(selector.get("version").map(String::as_str), Some(version));
        assert_eq!(selector.get("app").map(String::as_str), Some("greeter"));
        let owner = &found.metadata.owner_references.expect("owned")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("GrpcBalancing", "greeter")
        );
    }

    let config = poll_until("the proxy ConfigMap", TIMEOUT, || {
        proxy_config(&client, ns.name())
    })
    .await;
    assert_eq!(
        weights(&config, "greeter"),
        [("v1".into(), 75), ("v2".into(), 25)]
    );
    let greeter = &config.balancings[0];
    assert_eq!(greeter.listen, "127.0.0.1:15001");
    match greeter.subsets[1].discovery.source() {
        Some(DiscoverySource::Dns(dns)) => {
            assert_eq!(
                dns.name,
                format!("grpcb-greeter-v2.{}.svc.cluster.local", ns.name())
            );
            assert_eq!(dns.port, 50051);
        }
        other => panic!("expected DNS discovery, got {other:?}"),
    }

    let (ready, counts, total) =
        poll_until("status Ready with 3 + 1 endpoints", TIMEOUT, || async {
            let got = ready_counts(&gbs, "greeter").await?;
            if got.0 == "True Reconciled" && got.1 == [3, 1] {
                Ok(got)
            } else {
                Err(format!("{got:?}"))
            }
        })
        .await;
    assert_eq!(
        (ready.as_str(), counts, total),
        ("True Reconciled", vec![3, 1], 4)
    );
    // `kubectl get grpcb`: the CRD's printer columns, filled from the spec
    // and from what the operator wrote.
    assert_eq!(
        kubectl_get_grpcb(cp, ns.name()),
        [
            vec![
                "NAME",
                "POLICY",
                "SUBSETS",
                "LISTENER",
                "SERVICE",
                "ADDRESS",
                "ENDPOINTS",
                "READY",
                "AGE"
            ],
            vec![
                "greeter",
                "round_robin",
                "v1=75,v2=25",
                // SERVICE and ADDRESS are empty for a balancing with a
                // listener port: kubectl prints nothing there.
                "15001",
                "4",
                "True",
                "<age>"
            ],
        ]
    );

    // A new weight reaches the ConfigMap.
    let subsets = json!({ "spec": { "subsets": [
        { "name": "v1", "labels": { "version": "v1" }, "weight": 75 },
        { "name": "v2", "labels": { "version": "v2" }, "weight": 50 }
    ] } });
    gbs.patch("greeter", &PatchParams::default(), &Patch::Merge(&subsets))
        .await
        .expect("patched");
    poll_until("weight 50 in the ConfigMap", TIMEOUT, || async {
        let config = proxy_config(&client, ns.name()).await?;
        let w = weights(&config, "greeter");
        if w == [("v1".to_owned(), 75), ("v2".to_owned(), 50)] {
            Ok(())
        } else {
            Err(format!("{w:?}"))
        }
    })
    .await;

    // A removed subset loses its Service and its place in the config.
    let only_v1 = json!({ "spec": { "subsets": [
        { "name": "v1", "labels": { "version": "v1" }, "weight": 75 }
    ] } });
    gbs.patch("greeter", &PatchParams::default(), &Patch::Merge(&only_v1))
        .await
        .expect("patched");
    assert_eventually("Service grpcb-greeter-v2 deleted", TIMEOUT, || async {
        matches!(services.get_opt("grpcb-greeter-v2").await, Ok(None))
    })
    .await;
    poll_until("v2 gone from the ConfigMap", TIMEOUT, || async {
        let config = proxy_config(&client, ns.name()).await?;
        let w = weights(&config, "greeter");
        if w == [("v1".to_owned(), 75)] {
            Ok(())
        } else {
            Err(format!("{w:?}"))
        }
    })
    .await;

    // Deleted: its Services are garbage-collected, the ConfigMap (its last
    // balancing gone) deleted.
    gbs.delete("greeter", &DeleteParams::default())
        .await
        .expect("deleted");
    assert_eventually("the ConfigMap deleted", TIMEOUT, || async {
        matches!(
            Api::<ConfigMap>::namespaced(client.clone(), ns.name())
                .get_opt(CONFIG_MAP_NAME)
                .await,
            Ok(None)
        )
    })
    .await;
    assert_eventually(
        "Service grpcb-greeter-v1 garbage-collected",
        TIMEOUT,
        || async { matches!(services.get_opt("grpcb-greeter-v1").await, Ok(None)) },
    )
    .await;
    op.shutdown().await;
}

#[tokio::test]
async fn a_restarted_operator_converges_without_writing() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "op-restart").await;
    backends(&client, ns.name(), 42).await;
    let gbs: Api<GrpcBalancing> = Api::namespaced(client.clone(), ns.name());
    gbs.create(&PostParams::default(), &greeter("greeter"))
        .await
        .expect("created");
    let mut echo = greeter("echo");
    echo.spec.listener_port = Some(15002);
    echo.spec.subsets.clear();
    gbs.create(&PostParams::default(), &echo)
        .await
        .expect("created");

    let first = RunningOperator::start(cp, ns.name(), "op-restart", "op-first", LEASE).await;
    poll_until("both balancings Ready", TIMEOUT, || async {
        let g = ready_counts(&gbs, "greeter").await?;
        let e = ready_counts(&gbs, "echo").await?;
        if g.0 == "True Reconciled" && g.1 == [3, 1] && e.0 == "True Reconciled" && e.1 == [4] {
            Ok(())
        } else {
            Err(format!("{g:?} {e:?}"))
        }
    })
    .await;
    poll_until("both in the ConfigMap", TIMEOUT, || async {
        let c = proxy_config(&client, ns.name()).await?;
        if c.balancings.len() == 2 {
            Ok(())
        } else {
            Err(format!("{c:?}"))
        }
    })
    .await;
    assert!(first.writes() > 0, "the first operator wrote the objects");
    first.shutdown().await;

    let second = RunningOperator::start(cp, ns.name(), "op-restart", "op-second", LEASE).await;
    poll_until(
        "the restarted operator to reconcile everything",
        TIMEOUT,
        || async {
            let balancings = second.reconciles(GRPC_BALANCING_CONTROLLER);
            let config_maps = second.reconciles(CONFIG_MAP_CONTROLLER);
            if balancings >= 2 && config_maps >= 1 {
                Ok(())
            } else {
                Err(format!(
                    "{balancings} balancing and {config_maps} ConfigMap reconciles"
                ))
            }
        },
    )
    .await;
    assert_eq!(
        second.writes(),
        0,
        "a restart with nothing changed must not write; requests: {:?}",
        second.api().snapshot()
    );
    second.shutdown().await;
}

#[tokio::test]
async fn only_the_leader_writes_and_a_standby_takes_over_within_the_lease() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "op-leader").await;
    let a = RunningOperator::start(cp, ns.name(), "op-leader", "replica-a", LEASE).await;
    let b = RunningOperator::start(cp, ns.name(), "op-leader", "replica-b", LEASE).await;
    poll_until("one leader", TIMEOUT, || async {
        match (a.is_leader(), b.is_leader()) {
            (true, false) | (false, true) => Ok(()),
            other => Err(format!("leader flags {other:?}")),
        }
    })
    .await;
    let (leader, standby) = if a.is_leader() { (a, b) } else { (b, a) };

    let gbs: Api<GrpcBalancing> = Api::namespaced(client.clone(), ns.name());
    gbs.create(&PostParams::default(), &greeter("greeter"))
        .await
        .expect("created");
    poll_until("the proxy ConfigMap", TIMEOUT, || {
        proxy_config(&client, ns.name())
    })
    .await;
    assert!(leader.writes() > 0, "the leader wrote");
    assert_eq!(
        standby.writes(),
        0,
        "the standby wrote: {:?}",
        standby.api().snapshot()
    );
    assert!(!standby.is_leader());

    // A crash: no release, the standby must wait for the Lease to expire.
    let killed = Instant::now();
    leader.kill().await;
    poll_until("the standby to lead", TIMEOUT, || async {
        if standby.is_leader() {
            Ok(())
        } else {
            Err("still standby")
        }
    })
    .await;
    let handover = killed.elapsed();
    // Expiry is at most one lease duration after the last renewal, and the
    // standby looks every retry period (4s * 2/15).
    let bound = LEASE + LEASE.mul_f64(2.0 / 15.0) + Duration::from_millis(500);
    assert!(
        handover <= bound,
        "hand-over took {handover:?}, more than {bound:?}"
    );
    eprintln!("leader hand-over after a crash took {handover:?} (lease {LEASE:?})");

    // The new leader reconciles.
    let patch = json!({ "spec": { "subsets": [
        { "name": "v1", "labels": { "version": "v1" }, "weight": 10 },
        { "name": "v2", "labels": { "version": "v2" }, "weight": 90 }
    ] } });
    gbs.patch("greeter", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patched");
    poll_until(
        "the new leader to update the ConfigMap",
        TIMEOUT,
        || async {
            let config = proxy_config(&client, ns.name()).await?;
            let w = weights(&config, "greeter");
            if w == [("v1".to_owned(), 10), ("v2".to_owned(), 90)] {
                Ok(())
            } else {
                Err(format!("{w:?}"))
            }
        },
    )
    .await;
    assert!(standby.writes() > 0);
    standby.shutdown().await;
}

/// The `Ready` reason and message of a balancing, once its status is of its
/// current generation.
async fn ready_reason(api: &Api<GrpcBalancing>, name: &str) -> Result<(String, String), String> {
    let gb = api.get(name).await.map_err(|e| e.to_string())?;
    let status = gb.status.ok_or("no status yet")?;
    if status.observed_generation != gb.metadata.generation {
        return Err("status of an older generation".into());
    }
    let ready = status
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .ok_or("no Ready condition")?;
    Ok((ready.reason, ready.message))
}

/// The balancing a Service is labelled with and owned by.
async fn service_holder(services: &Api<Service>, name: &str) -> Result<(String, String), String> {
    let svc = services
        .get_opt(name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("absent")?;
    let label = svc
        .metadata
        .labels
        .unwrap_or_default()
        .remove("grpcbalancer.io/balancing")
        .unwrap_or_default();
    let owners: Vec<String> = svc
        .metadata
        .owner_references
        .unwrap_or_default()
        .into_iter()
        .map(|o| o.name)
        .collect();
    Ok((label, owners.join(",")))
}

#[tokio::test]
async fn two_balancings_never_apply_one_service_name() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "op-names").await;
    let op = RunningOperator::start(cp, ns.name(), "op-names", "op-names", LEASE).await;
    let gbs: Api<GrpcBalancing> = Api::namespaced(client.clone(), ns.name());
    let services: Api<Service> = Api::namespaced(client.clone(), ns.name());

    // `a` with subset `b` and `a-b` without subsets: both `grpcb-a-b`. The
    // older keeps it (creation second, then the smaller name: `a` either way).
    let older = with_spec(
        "a",
        "selector: { app: part }\nport: 50051\nlistenerPort: 15001\nsubsets:\n  - { name: b, labels: { version: b } }\n",
    );
    gbs.create(&PostParams::default(), &older)
        .await
        .expect("created");
    poll_until("a to have its Service", TIMEOUT, || {
        service_holder(&services, "grpcb-a-b")
    })
    .await;
    let newer = with_spec(
        "a-b",
        "selector: { app: whole }\nport: 50051\nlistenerPort: 15002\n",
    );
    gbs.create(&PostParams::default(), &newer)
        .await
        .expect("created");

    let (_, message) = poll_until("a-b to report the conflict", TIMEOUT, || async {
        let got = ready_reason(&gbs, "a-b").await?;
        if got.0 == "ServiceNameConflict" {
            Ok(got)
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
    assert!(
        message.contains("grpcb-a-b") && message.contains("\"a\""),
        "{message}"
    );
    // The older one keeps it: its labels, its owner, its selector.
    assert_eq!(
        service_holder(&services, "grpcb-a-b").await,
        Ok(("a".to_owned(), "a".to_owned()))
    );
    let selector = services
        .get("grpcb-a-b")
        .await
        .expect("the Service")
        .spec
        .and_then(|s| s.selector)
        .unwrap_or_default();
    assert_eq!(
        selector,
        [
            ("app".to_owned(), "part".to_owned()),
            ("version".to_owned(), "b".to_owned())
        ]
        .into(),
        "the Service selects a's pods"
    );
    let reason = ready_reason(&gbs, "a").await.expect("a has a status");
    assert_ne!(reason.0, "ServiceNameConflict", "{reason:?}");
    poll_until("only a in the ConfigMap", TIMEOUT, || async {
        let names: Vec<String> = proxy_config(&client, ns.name())
            .await?
            .balancings
            .into_iter()
            .map(|b| b.name)
            .collect();
        if names == ["a"] {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await;

    // Once the older one is gone the name is free for the newer.
    gbs.delete("a", &DeleteParams::default())
        .await
        .expect("deleted");
    poll_until("a-b to take the Service over", TIMEOUT, || async {
        let holder = service_holder(&services, "grpcb-a-b").await?;
        let reason = ready_reason(&gbs, "a-b").await?;
        if holder == ("a-b".to_owned(), "a-b".to_owned()) && reason.0 != "ServiceNameConflict" {
            Ok(())
        } else {
            Err(format!("{holder:?} {reason:?}"))
        }
    })
    .await;
    op.shutdown().await;
}
