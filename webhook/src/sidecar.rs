//! The proxy container and the volume of its config, as injected into a pod.

use std::collections::BTreeMap;

use grpc_balancer_crds::config::{CONFIG_MAP_KEY, CONFIG_MAP_NAME, CONFIG_MOUNT_DIR};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    ExecAction, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, ObjectFieldSelector, Probe,
    ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::overrides::EffectiveProxy;
use crate::settings::{ProxyResources, ProxySettings, SidecarMode};

/// Name of the injected container.
pub const PROXY_CONTAINER_NAME: &str = grpc_balancer_crds::annotations::PROXY_CONTAINER_NAME;
/// Name of the volume holding the namespace's proxy config.
pub const CONFIG_VOLUME_NAME: &str = "grpc-balancer-proxy-config";
/// Name of the proxy's admin port (`/live`, `/ready`, `/metrics`).
pub const ADMIN_PORT_NAME: &str = "grpcb-admin";
/// Environment variable the proxy reads its log filter from.
pub const PROXY_LOG_ENV: &str = "GRPC_BALANCER_LOG";
/// The proxy's binary inside its image (`images/proxy.Containerfile`). The
/// image is `FROM scratch`: no shell and no `PATH`, so exec hooks name the
/// binary by its absolute path. The container itself sets no `command` and
/// runs the image's entrypoint, which is this binary.
pub const PROXY_BINARY_PATH: &str = "/grpc-balancer-proxy";

/// UID and GID the proxy runs as. A numeric UID lets the kubelet check
/// `runAsNonRoot` whatever the image's `USER` says; 65532 is the `nonroot`
/// user of distroless images (the proxy image is built on one), far from the
/// low UIDs apps and host users usually get, so it owns nothing of the app's.
pub const PROXY_UID: i64 = 65532;

/// The config volume: the namespace's proxy ConfigMap, `optional` so pods
/// start before any `GrpcBalancing` exists (a missing file is an empty config
/// to the proxy). Mounted as a directory, not a `subPath`, so the kubelet
/// updates the file in place and the proxy reloads it.
pub fn config_volume() -> Volume {
    Volume {
        name: CONFIG_VOLUME_NAME.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: CONFIG_MAP_NAME.to_owned(),
            items: Some(vec![KeyToPath {
                key: CONFIG_MAP_KEY.to_owned(),
                path: CONFIG_MAP_KEY.to_owned(),
                mode: None,
            }]),
            optional: Some(true),
            default_mode: None,
        }),
        ..Volume::default()
    }
}

/// Name of the volume holding the proxy's discovery token.
pub const DISCOVERY_TOKEN_VOLUME_NAME: &str = "grpc-balancer-discovery-token";
/// Where the proxy finds it.
pub const DISCOVERY_TOKEN_DIR: &str = "/var/run/secrets/grpcbalancer.io/discovery";
/// Token lifetime: the shortest the apiserver issues. The kubelet renews it
/// at 80% of that, and the proxy reads it at every connect.
pub const DISCOVERY_TOKEN_SECONDS: i64 = 600;
/// Environment variable carrying the discovery server's CA (PEM).
pub const DISCOVERY_CA_ENV: &str = "GRPC_BALANCER_DISCOVERY_CA";

/// A projected ServiceAccount token for the discovery server alone: its
/// own audience (useless against the apiserver, and the apiserver's token
/// is useless against discovery), short-lived and bound to the pod.
pub fn discovery_token_volume() -> Volume {
    Volume {
        name: DISCOVERY_TOKEN_VOLUME_NAME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(grpc_balancer_discovery_api::TOKEN_AUDIENCE.to_owned()),
                    expiration_seconds: Some(DISCOVERY_TOKEN_SECONDS),
                    path: "token".to_owned(),
                }),
                ..VolumeProjection::default()
            }]),
            default_mode: None,
        }),
        ..Volume::default()
    }
}

/// Points the proxy at the discovery server: its address, the CA to trust
/// (as PEM text in the pod spec, like Linkerd's trust anchors: the CA is
/// public, and no Secret has to be copied into every namespace), the token
/// mount, and the pod's namespace and name from the downward API.
pub fn add_discovery(container: &mut Container, address: &str, ca_pem: &str) {
    container.args.get_or_insert_with(Vec::new).extend([
        "--discovery-address".to_owned(),
        address.to_owned(),
        "--discovery-token-file".to_owned(),
        format!("{DISCOVERY_TOKEN_DIR}/token"),
    ]);
    let field = |path: &str| {
        Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        })
    };
    container.env.get_or_insert_with(Vec::new).extend([
        EnvVar {
            name: DISCOVERY_CA_ENV.to_owned(),
            value: Some(ca_pem.to_owned()),
            value_from: None,
        },
        EnvVar {
            name: "POD_NAMESPACE".to_owned(),
            value: None,
            value_from: field("metadata.namespace"),
        },
        EnvVar {
            name: "POD_NAME".to_owned(),
            value: None,
            value_from: field("metadata.name"),
        },
    ]);
    container
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .push(VolumeMount {
            name: DISCOVERY_TOKEN_VOLUME_NAME.to_owned(),
            mount_path: DISCOVERY_TOKEN_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
}

/// The proxy container for `mode`.
pub fn proxy_container(settings: &ProxySettings, proxy: &EffectiveProxy<'_>) -> Container {
    let admin_port = settings.admin_port;
    let config_path = format!("{CONFIG_MOUNT_DIR}/{CONFIG_MAP_KEY}");
    let mut container = Container {
        name: PROXY_CONTAINER_NAME.to_owned(),
        image: Some(proxy.image.to_owned()),
        image_pull_policy: settings.image_pull_policy.clone(),
        // Only args: the image's entrypoint is the proxy.
        args: Some(vec![
            "--config".to_owned(),
            config_path,
            "--admin".to_owned(),
            // The kubelet probes the pod IP, IPv6 on IPv6-only and
            // IPv6-primary clusters: every address of both families (the
            // proxy falls back to IPv4 where the node has no IPv6).
            format!("[::]:{admin_port}"),
        ]),
        env: Some(vec![EnvVar {
            name: PROXY_LOG_ENV.to_owned(),
            value: Some(proxy.log_level.as_str().to_owned()),
            value_from: None,
        }]),
        ports: Some(vec![ContainerPort {
            name: Some(ADMIN_PORT_NAME.to_owned()),
            container_port: i32::from(admin_port),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        resources: resource_requirements(&proxy.resources),
        volume_mounts: Some(vec![VolumeMount {
            name: CONFIG_VOLUME_NAME.to_owned(),
            mount_path: CONFIG_MOUNT_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        readiness_probe: Some(admin_probe("/ready", 5, 3)),
        liveness_probe: Some(admin_probe("/live", 10, 3)),
        security_context: Some(restricted_security_context()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    };
    if settings.admin_debug_from_any
        && let Some(args) = container.args.as_mut()
    {
        // /config and /endpoints for every peer, not only loopback ones.
        args.extend(["--admin-debug".to_owned(), "any".to_owned()]);
    }
    match settings.mode {
        SidecarMode::Native => {
            // `Always` on an init container makes it a sidecar: the kubelet
            // starts the next container only once the startup probe passed,
            // and stops the proxy after the app's containers have exited.
            container.restart_policy = Some("Always".to_owned());
            let ready_timeout = settings.ready_timeout.as_secs().clamp(1, 3600);
            container.startup_probe = Some(admin_probe(
                "/ready",
                1,
                i32::try_from(ready_timeout).unwrap_or(i32::MAX),
            ));
        }
        SidecarMode::Legacy => {
            container.lifecycle = Some(Lifecycle {
                // The kubelet starts containers in order and waits for each
                // postStart hook, so the app starts after the proxy is ready.
                post_start: Some(exec_handler(vec![
                    PROXY_BINARY_PATH.to_owned(),
                    "wait-ready".to_owned(),
                    "--admin".to_owned(),
                    format!("127.0.0.1:{admin_port}"),
                    "--timeout".to_owned(),
                    format!("{}s", settings.ready_timeout.as_secs()),
                ])),
                // Every container gets SIGTERM at once; holding the proxy's
                // back lets the app's last calls go through.
                pre_stop: Some(exec_handler(vec![
                    PROXY_BINARY_PATH.to_owned(),
                    "sleep".to_owned(),
                    format!("{}s", settings.drain_delay.as_secs()),
                ])),
                stop_signal: None,
            });
        }
    }
    container
}

/// A security context that passes Pod Security "restricted".
pub fn restricted_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(PROXY_UID),
        run_as_group: Some(PROXY_UID),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

fn admin_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(ADMIN_PORT_NAME.to_owned()),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(1),
        ..Probe::default()
    }
}

fn exec_handler(command: Vec<String>) -> LifecycleHandler {
    LifecycleHandler {
        exec: Some(ExecAction {
            command: Some(command),
        }),
        ..LifecycleHandler::default()
    }
}

fn resource_requirements(resources: &ProxyResources) -> Option<ResourceRequirements> {
    let map = |entries: [(&str, &Option<crate::quantity::Quantity>); 2]| {
        let map: BTreeMap<String, K8sQuantity> = entries
            .into_iter()
            .filter_map(|(name, q)| {
                q.as_ref()
                    .map(|q| (name.to_owned(), K8sQuantity(q.as_str().to_owned())))
            })
            .collect();
        Some(map).filter(|m| !m.is_empty())
    };
    let requests = map([
        ("cpu", &resources.cpu_request),
        ("memory", &resources.memory_request),
    ]);
    let limits = map([
        ("cpu", &resources.cpu_limit),
        ("memory", &resources.memory_limit),
    ]);
    if requests.is_none() && limits.is_none() {
        return None;
    }
    Some(ResourceRequirements {
        requests,
        limits,
        claims: None,
    })
}
