//! Balancings that name the Service their clients already dial
//! (`spec.service`), against the real apiserver with the operator and the
//! webhook in this process: the loopback address in the status (stable,
//! lowest free), the listener on the Service's port(s) in the proxy
//! config, the host aliases of new pods, the pods that need a restart, and
//! the status of a missing Service, a second balancing of one Service, a
//! headless Service and more balancings than the pool has addresses.

use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;

use crate::support::{RunningOperator, TIMEOUT, backend_pod, install_crd};
use grpc_balancer_crds::config::{self, CONFIG_MAP_KEY, CONFIG_MAP_NAME, ProxyConfig};
use grpc_balancer_crds::v1alpha1::GrpcBalancing;
use grpc_balancer_operator::render::fixtures::with_spec;
use grpc_balancer_test_support::{ControlPlane, poll_until};
use grpc_balancer_webhook::test_util::{InProcessWebhook, webhook_namespace};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

const SPEC: &str = "selector: { app: greeter }\nport: 50051\nservice: greeter\nsubsets:\n  - { name: v1, labels: { version: v1 }, weight: 75 }\n  - { name: v2, labels: { version: v2 }, weight: 25 }\n";

fn client_pod(name: &str, extra_annotations: serde_json::Value) -> Pod {
    let mut annotations = json!({ "grpcbalancer.io/sidecar.inject": "true" });
    if let (Some(a), Some(e)) = (annotations.as_object_mut(), extra_annotations.as_object()) {
        a.extend(e.clone());
    }
    serde_json::from_value(json!({
        "metadata": { "name": name, "annotations": annotations },
        "spec": { "containers": [{ "name": "app", "image": "registry.invalid/client:1" }] }
    }))
    .expect("a pod")
}

fn service(name: &str, ports: &[(&str, i32)]) -> Service {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "selector": { "app": name },
            "ports": ports.iter().map(|(n, p)| json!({ "name": n, "port": p, "targetPort": p })).collect::<Vec<_>>()
        }
    }))
    .expect("a Service")
}

/// `(ip, hostnames)` of the pod's host aliases.
fn aliases(pod: &Pod) -> Vec<(String, Vec<String>)> {
    pod.spec
        .iter()
        .flat_map(|s| s.host_aliases.iter().flatten())
        .map(|h| (h.ip.clone(), h.hostnames.clone().unwrap_or_default()))
        .collect()
}

fn app_env(pod: &Pod, name: &str) -> Option<String> {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .find(|c| c.name == "app")
        .and_then(|c| c.env.as_ref())
        .and_then(|env| env.iter().find(|e| e.name == name))
        .and_then(|e| e.value.clone())
}

/// `(Ready reason, address, podsWithoutBalancing)` as stored.
async fn status(
    api: &Api<GrpcBalancing>,
    name: &str,
) -> Result<(String, Option<String>, Vec<String>), String> {
    let gb = api.get(name).await.map_err(|e| e.to_string())?;
    let status = gb.status.ok_or("no status yet")?;
    if status.observed_generation != gb.metadata.generation {
        return Err("status of an older generation".into());
    }
    let reason = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| format!("{}: {}", c.reason, c.message))
        .ok_or("no Ready condition")?;
    Ok((reason, status.address, status.pods_without_balancing))
}

async fn wait_reason(
    api: &Api<GrpcBalancing>,
    name: &str,
    reason: &str,
) -> (String, Option<String>, Vec<String>) {
    poll_until(&format!("{name}: {reason}"), TIMEOUT, || async {
        let got = status(api, name).await?;
        if got.0.starts_with(reason) {
            Ok(got)
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await
}

async fn proxy_config(client: &kube::Client, ns: &str) -> Result<ProxyConfig, String> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(CONFIG_MAP_NAME)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no ConfigMap yet")?;
    let text = cm
        .data
        .unwrap_or_default()
        .remove(CONFIG_MAP_KEY)
        .ok_or("no config key")?;
    config::parse_yaml(&text).map_err(|e| format!("the proxy rejects the config: {e}"))
}

#[tokio::test]
async fn a_balancing_stands_in_for_the_service_its_clients_dial() {
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    install_crd(&client).await;
    let ns = webhook_namespace(&client, "op-front", &[]).await;
    let op = RunningOperator::start(
        cp,
        ns.name(),
        "op-front",
        "op-front",
        Duration::from_secs(4),
    )
    .await;
    let webhook = InProcessWebhook::start(&client, &ns, "Fail", "native").await;
    let pods: Api<Pod> = ns.api();
    let gbs: Api<GrpcBalancing> = ns.api();
    let services: Api<Service> = ns.api();
    for (i, version) in ["v1", "v1", "v2"].into_iter().enumerate() {
        backend_pod(
            &client,
            ns.name(),
            &format!("greeter-{version}-{i}"),
            &[("app", "greeter"), ("version", version)],
            "grpc",
            50051,
            Ipv4Addr::new(127, 0, 62, 10 + i as u8),
        )
        .await;
    }

    // The Service does not exist yet: the status says so, and the
    // address is assigned all the same (the lowest of the pool).
    gbs.create(&PostParams::default(), &with_spec("greeter", SPEC))
        .await
        .expect("created");
    let (reason, address, _) = wait_reason(&gbs, "greeter", "ServiceNotFound").await;
    assert!(reason.contains("\"greeter\" does not exist"), "{reason}");
    assert_eq!(address.as_deref(), Some("127.0.10.1"));
    let early = pods
        .create(
            &PostParams::default(),
            &client_pod("early-client", json!({})),
        )
        .await
        .expect("admitted");
    assert!(
        aliases(&early).is_empty(),
        "no alias before the balancing is rendered"
    );

    // The Service appears: rendered on its port at the address, and the
    // pod created before is listed for a restart.
    let svc = services
        .create(
            &PostParams::default(),
            &service("greeter", &[("grpc", 50051)]),
        )
        .await
        .expect("Service created");
    let cluster_ip = svc.spec.and_then(|s| s.cluster_ip).expect("a cluster IP");
    let (_, address, restart) = wait_reason(&gbs, "greeter", "Reconciled").await;
    assert_eq!(
        address.as_deref(),
        Some("127.0.10.1"),
        "the address did not move"
    );
    let restart = if restart.is_empty() {
        poll_until("the early pod listed", TIMEOUT, || async {
            let (_, _, listed) = status(&gbs, "greeter").await?;
            if listed.is_empty() {
                Err("none listed".to_owned())
            } else {
                Ok(listed)
            }
        })
        .await
    } else {
        restart
    };
    assert_eq!(restart, ["early-client"]);
    let config = poll_until("the listener in the ConfigMap", TIMEOUT, || async {
        let config = proxy_config(&client, ns.name()).await?;
        match config.balancings.first() {
            Some(b) if b.service.is_some() => Ok(config),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let greeter = &config.balancings[0];
    assert_eq!(greeter.listen, "127.0.10.1:50051");
    let front = greeter.service.as_ref().expect("front");
    let n = ns.name();
    assert_eq!(
        front.hostnames,
        [
            "greeter".to_owned(),
            format!("greeter.{n}"),
            format!("greeter.{n}.svc"),
            format!("greeter.{n}.svc.cluster.local"),
        ]
    );
    assert_eq!(front.passthrough, format!("{cluster_ip}:50051"));

    // A pod created now: every name of the Service maps to the address,
    // and the app gets C-core's native resolver; one that opts out gets
    // neither.
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    poll_until("the webhook to add the aliases", TIMEOUT, || async {
        match pods.create(&dry_run, &client_pod("probe", json!({}))).await {
            Ok(p) if !aliases(&p).is_empty() => Ok(()),
            Ok(_) => Err("no alias yet".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    let late = pods
        .create(
            &PostParams::default(),
            &client_pod("late-client", json!({})),
        )
        .await
        .expect("admitted");
    assert_eq!(
        aliases(&late),
        [("127.0.10.1".to_owned(), front.hostnames.clone())]
    );
    assert_eq!(
        app_env(&late, "GRPC_DNS_RESOLVER").as_deref(),
        Some("native")
    );
    assert_eq!(
        app_env(&late, "GRPC_BALANCER_GREETER_ADDR").as_deref(),
        Some("127.0.10.1:50051")
    );
    let out = pods
        .create(
            &PostParams::default(),
            &client_pod(
                "opted-out",
                json!({ "grpcbalancer.io/service.aliases": "false" }),
            ),
        )
        .await
        .expect("admitted");
    assert!(aliases(&out).is_empty());
    assert_eq!(app_env(&out, "GRPC_DNS_RESOLVER"), None);

    // A second balancing of the same Service: a status error on the
    // younger one, never a second listener.
    gbs.create(&PostParams::default(), &with_spec("greeter-again", SPEC))
        .await
        .expect("created");
    let (reason, address, _) = wait_reason(&gbs, "greeter-again", "ServiceConflict").await;
    assert!(
        reason.contains("older GrpcBalancing \"greeter\""),
        "{reason}"
    );
    assert_eq!(address, None);
    let config = proxy_config(&client, ns.name()).await.expect("config");
    assert_eq!(
        config
            .balancings
            .iter()
            .filter(|b| b.service.is_some())
            .count(),
        1
    );

    // Another port on the Service: relayed to the cluster IP.
    services
        .patch(
            "greeter",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "ports": [
                { "name": "grpc", "port": 50051, "targetPort": 50051 },
                { "name": "metrics", "port": 9090, "targetPort": 9090 }
            ] } })),
        )
        .await
        .expect("patched");
    poll_until("the metrics port relayed", TIMEOUT, || async {
        let config = proxy_config(&client, ns.name()).await?;
        let forwards = config
            .balancings
            .iter()
            .find(|b| b.name == "greeter")
            .and_then(|b| b.service.as_ref())
            .map(|s| s.forwards.clone())
            .unwrap_or_default();
        match forwards.as_slice() {
            [f] if f.listen == "127.0.10.1:9090" && f.to == format!("{cluster_ip}:9090") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // A headless Service is refused, saying why.
    services
        .create(&PostParams::default(), &{
            let mut s = service("echo", &[("grpc", 50052)]);
            if let Some(spec) = s.spec.as_mut() {
                spec.cluster_ip = Some("None".into());
            }
            s
        })
        .await
        .expect("Service created");
    gbs.create(
        &PostParams::default(),
        &with_spec(
            "echo",
            "selector: { app: echo }\nport: 50052\nservice: echo\n",
        ),
    )
    .await
    .expect("created");
    let (reason, address, _) = wait_reason(&gbs, "echo", "ServiceUnsupported").await;
    assert!(reason.contains("headless"), "{reason}");
    assert_eq!(
        address.as_deref(),
        Some("127.0.10.2"),
        "the next free address"
    );

    // Addresses are stable: deleting the older balancing does not move
    // the younger one's, and the next one does not get the freed address
    // (pods created before still map the deleted one's names there).
    gbs.delete("greeter", &DeleteParams::default())
        .await
        .expect("deleted");
    wait_reason(&gbs, "greeter-again", "Reconciled").await;
    let (_, echo_address, _) = status(&gbs, "echo").await.expect("status");
    assert_eq!(echo_address.as_deref(), Some("127.0.10.2"));
    let (_, again_address, _) = status(&gbs, "greeter-again").await.expect("status");
    assert_eq!(
        again_address.as_deref(),
        Some("127.0.10.3"),
        "not the freed 127.0.10.1"
    );

    // A balancing with neither a listener port nor a Service, or both, is
    // refused by the apiserver, naming the fields.
    for spec in [
        "selector: { app: greeter }\nport: 50051\n",
        "selector: { app: greeter }\nport: 50051\nlistenerPort: 15001\nservice: greeter\n",
    ] {
        let e = gbs
            .create(&PostParams::default(), &with_spec("both-or-none", spec))
            .await
            .expect_err(spec);
        assert!(e.to_string().contains("exactly one of listenerPort"), "{e}");
    }
    webhook.stop().await;
    op.shutdown().await;
}

/// The pool holds 254 addresses per namespace: a 255th balancing naming a
/// Service is told the pool is exhausted (no address, no listener) while
/// the 254 older ones keep distinct addresses; once one of them is
/// deleted, the waiting one gets the address it held (the pool wrapped).
#[tokio::test]
async fn more_balancings_than_loopback_addresses_leave_the_youngest_waiting() {
    const POOL: usize = 254;
    let cp = ControlPlane::shared().await;
    let client = cp.client().await;
    install_crd(&client).await;
    let ns = webhook_namespace(&client, "op-pool", &[]).await;
    let op =
        RunningOperator::start(cp, ns.name(), "op-pool", "op-pool", Duration::from_secs(4)).await;
    let gbs: Api<GrpcBalancing> = ns.api();
    let name = |i: usize| format!("gb-{i:03}");
    let create = |i: usize| {
        let gbs = gbs.clone();
        async move {
            let spec = format!("selector: {{ app: a{i} }}\nport: 50051\nservice: svc-{i:03}\n");
            gbs.create(&PostParams::default(), &with_spec(&name(i), &spec))
                .await
                .map(|_| ())
        }
    };
    let created: Vec<_> = futures::stream::iter(0..POOL)
        .map(create)
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    // One status write per balancing (each reconcile judges from the
    // statuses the operator wrote, assigning one address at a time); the
    // time it took is printed.
    let started = std::time::Instant::now();
    let addresses = poll_until("254 distinct addresses", TIMEOUT, || async {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..POOL {
            let (reason, address, _) = status(&gbs, &name(i))
                .await
                .map_err(|e| format!("{}: {e}", name(i)))?;
            if !reason.starts_with("ServiceNotFound") {
                return Err(format!("{}: {reason}", name(i)));
            }
            let address = address.ok_or(format!("{} has no address", name(i)))?;
            seen.insert(address.parse::<Ipv4Addr>().map_err(|e| e.to_string())?);
        }
        Ok(seen)
    })
    .await;
    eprintln!(
        "254 balancings created at once held distinct addresses after {:?}",
        started.elapsed()
    );
    assert_eq!(
        addresses.len(),
        POOL,
        "every older balancing has its own address"
    );
    assert_eq!(addresses.first(), Some(&Ipv4Addr::new(127, 0, 10, 1)));
    assert_eq!(addresses.last(), Some(&Ipv4Addr::new(127, 0, 10, 254)));

    // The 255th, created once the others hold their addresses: the
    // youngest by its creation timestamp.
    create(POOL).await.expect("created");
    let youngest = name(POOL);
    let (reason, address, _) = wait_reason(&gbs, &youngest, "AddressPoolExhausted").await;
    assert!(reason.contains("127.0.10.1-127.0.10.254"), "{reason}");
    assert_eq!(address, None);
    // Reconciles run in event order, not age order, so whichever address
    // the deleted one held is the one freed.
    let (_, freed, _) = status(&gbs, &name(0)).await.expect("status");
    assert!(freed.is_some(), "{} has an address", name(0));
    gbs.delete(&name(0), &DeleteParams::default())
        .await
        .expect("deleted");
    let (_, address, _) = wait_reason(&gbs, &youngest, "ServiceNotFound").await;
    assert_eq!(address, freed, "the freed address");
    op.shutdown().await;
}
