//! The injection itself: a pure function from a Pod to the JSON Patch that
//! adds the proxy. No I/O, so it is tested by applying its patch.

use std::collections::BTreeMap;

use json_patch::{AddOperation, Patch, PatchOperation};
use jsonptr::PointerBuf;
use jsonptr::Token;
use k8s_openapi::api::core::v1::{Container, HostAlias, Pod, PodSpec};
use serde_json::Value;

use crate::annotations;
use crate::balancings::LocalBalancing;
use crate::overrides::effective_proxy;
use crate::settings::{ProxySettings, SidecarMode};
use crate::sidecar::{self, CONFIG_VOLUME_NAME, PROXY_CONTAINER_NAME};

/// What one injection needs besides the pod: the settings and the balancings
/// of the pod's namespace at the time of the review.
#[derive(Debug, Clone, Copy)]
pub struct InjectionContext<'a> {
    pub settings: &'a ProxySettings,
    pub balancings: &'a [LocalBalancing],
    /// The discovery server's CA (PEM), once the webhook has it: with
    /// `settings.discovery_address`, proxies are set up for push discovery.
    pub discovery_ca: Option<&'a str>,
}

/// Why a pod that asked for the proxy cannot get it. The pod is refused with
/// this message, so it names what to change.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("annotation {annotation}: {value:?} is not valid: {why}")]
    InvalidAnnotation {
        annotation: &'static str,
        value: String,
        why: String,
    },
    #[error(
        "annotation {} is not allowed: the webhook's settings do not allow per-pod proxy images",
        annotations::PROXY_IMAGE
    )]
    ImageOverrideNotAllowed,
    #[error("the proxy's {resource} request {request} is above its limit {limit}")]
    RequestAboveLimit {
        resource: &'static str,
        request: String,
        limit: String,
    },
    #[error("the pod has no spec")]
    MissingSpec,
    #[error("container {container:?} already uses port {port}, the proxy's admin port")]
    AdminPortTaken { container: String, port: u16 },
    #[error("the pod already has a volume named {0:?}, the name of the proxy's config volume")]
    VolumeNameTaken(&'static str),
    #[error("could not serialise the injected objects: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// Whether the pod asks for the proxy: exactly `"true"`, as documented.
pub fn wants_injection(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::INJECT))
        .is_some_and(|v| v == annotations::INJECT_ENABLED)
}

/// Whether the proxy is already in the pod (in either sidecar mode).
pub fn already_injected(spec: &PodSpec) -> bool {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == PROXY_CONTAINER_NAME)
}

/// The patch that injects the proxy, or `None` when the pod did not ask for
/// it. A pod that has the proxy already is being reviewed again
/// (`reinvocationPolicy: IfNeeded`, after a later webhook changed it): its
/// containers that lack a balancing's env var get it, nothing else changes,
/// and `None` once none is missing.
pub fn mutate(pod: &Pod, ctx: &InjectionContext<'_>) -> Result<Option<Patch>, InjectError> {
    if !wants_injection(pod) {
        return Ok(None);
    }
    let spec = pod.spec.as_ref().ok_or(InjectError::MissingSpec)?;
    let empty = BTreeMap::new();
    let pod_annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let opted_out = pod_annotations
        .get(annotations::SERVICE_ALIASES)
        .is_some_and(|v| v == annotations::SERVICE_ALIASES_DISABLED);
    if already_injected(spec) {
        // Host aliases are added on the first injection only; a balancing
        // that came later is served here if the pod has its alias already.
        let has_alias = |b: &LocalBalancing| {
            b.aliases
                .as_ref()
                .is_some_and(|a| spec.host_aliases.iter().flatten().any(|h| h.ip == a.ip))
        };
        let served: Vec<&LocalBalancing> = ctx
            .balancings
            .iter()
            .filter(|b| b.aliases.is_none() || opted_out || has_alias(b))
            .collect();
        let wanted = wanted_env(ctx.balancings, ctx.balancings.iter().any(has_alias));
        let mut ops = missing_env(spec, &wanted);
        if !ops.is_empty() {
            let recorded = pod_annotations
                .get(annotations::BALANCINGS)
                .map(|v| v.split(',').filter(|n| !n.is_empty()).collect::<Vec<_>>())
                .unwrap_or_default();
            let mut names: Vec<&str> = recorded;
            names.extend(served.iter().map(|b| b.name.as_str()));
            names.sort_unstable();
            names.dedup();
            ops.push(add(
                pointer(["metadata", "annotations", annotations::BALANCINGS]),
                Value::String(names.join(",")),
            ));
        }
        return Ok(Some(Patch(ops)).filter(|p| !p.0.is_empty()));
    }
    check_conflicts(spec, ctx.settings)?;
    let proxy = effective_proxy(ctx.settings, pod_annotations)?;

    let mut ops = Vec::new();
    let app_ports = declared_ports(spec);
    let aliases = if opted_out {
        Vec::new()
    } else {
        host_aliases(spec, ctx.balancings, &app_ports)
    };
    annotate(
        &mut ops,
        pod_annotations,
        proxy.image,
        ctx.settings.admin_port,
        ctx.balancings,
    );
    for (i, alias) in aliases.iter().enumerate() {
        // The first one creates the list when the pod has none.
        add_to_list(
            &mut ops,
            &["spec", "hostAliases"],
            spec.host_aliases.is_some() || i > 0,
            serde_json::to_value(alias)?,
        );
    }
    let wanted = wanted_env(ctx.balancings, !aliases.is_empty());
    add_to_list(
        &mut ops,
        &["spec", "volumes"],
        spec.volumes.is_some(),
        serde_json::to_value(sidecar::config_volume())?,
    );
    // Env vars first: inserting the proxy below shifts container indices.
    for (i, container) in spec.containers.iter().enumerate() {
        add_env(&mut ops, "containers", i, container, &wanted);
    }
    if ctx.settings.mode == SidecarMode::Native {
        // Init containers after the native sidecar start once it is ready,
        // so they can use the balancings too.
        for (i, container) in spec.init_containers.iter().flatten().enumerate() {
            add_env(&mut ops, "initContainers", i, container, &wanted);
        }
    }
    let mut container = sidecar::proxy_container(ctx.settings, &proxy);
    // The proxy never stands in for a Service on a port the pod's own
    // containers listen on: its listener would take the port from the app.
    for port in &app_ports {
        container
            .args
            .get_or_insert_with(Vec::new)
            .extend(["--app-port".to_owned(), port.to_string()]);
    }
    if let (Some(address), Some(ca), true) = (
        ctx.settings.discovery_address.as_deref(),
        ctx.discovery_ca,
        proxy.push_discovery,
    ) {
        if spec
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name == sidecar::DISCOVERY_TOKEN_VOLUME_NAME)
        {
            return Err(InjectError::VolumeNameTaken(
                sidecar::DISCOVERY_TOKEN_VOLUME_NAME,
            ));
        }
        // The config volume above made the list exist.
        add_to_list(
            &mut ops,
            &["spec", "volumes"],
            true,
            serde_json::to_value(sidecar::discovery_token_volume())?,
        );
        sidecar::add_discovery(&mut container, address, ca);
    }
    let container = serde_json::to_value(container)?;
    let list = match ctx.settings.mode {
        SidecarMode::Native => ("initContainers", spec.init_containers.is_some()),
        SidecarMode::Legacy => ("containers", true),
    };
    insert_first(&mut ops, list.0, list.1, container);
    Ok(Some(Patch(ops)))
}

/// The env ops a reinvocation adds: every app container, and in a native
/// sidecar pod the init containers after the proxy (they start once it is
/// ready); init containers before it run without the proxy.
fn missing_env(spec: &PodSpec, wanted: &[(String, String)]) -> Vec<PatchOperation> {
    let mut ops = Vec::new();
    for (i, container) in spec.containers.iter().enumerate() {
        if container.name != PROXY_CONTAINER_NAME {
            add_env(&mut ops, "containers", i, container, wanted);
        }
    }
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    if let Some(proxy) = inits.iter().position(|c| c.name == PROXY_CONTAINER_NAME) {
        for (i, container) in inits.iter().enumerate().skip(proxy + 1) {
            add_env(&mut ops, "initContainers", i, container, wanted);
        }
    }
    ops
}

/// The env vars app containers get: each balancing's address and, when
/// the pod got host aliases, the switch that makes gRPC C-core (Python,
/// C++, Ruby, PHP) resolve with the system resolver, which reads
/// `/etc/hosts` (see [`DNS_RESOLVER_ENV`]). A container that sets a
/// variable itself keeps its own value.
fn wanted_env(balancings: &[LocalBalancing], aliased: bool) -> Vec<(String, String)> {
    let mut wanted: Vec<(String, String)> = balancings
        .iter()
        .map(|b| (b.env_name.clone(), b.address.clone()))
        .collect();
    if aliased {
        wanted.push((DNS_RESOLVER_ENV.into(), DNS_RESOLVER_NATIVE.into()));
    }
    wanted
}

/// gRPC C-core's choice of resolver (`ares` or `native`), documented in
/// gRPC's `doc/environment_variables.md`. `native` resolves through
/// `getaddrinfo`, which honours `/etc/hosts` and `nsswitch.conf`
/// everywhere; the c-ares resolver's reading of the hosts file depends on
/// the c-ares version gRPC was built with.
pub const DNS_RESOLVER_ENV: &str = "GRPC_DNS_RESOLVER";
pub const DNS_RESOLVER_NATIVE: &str = "native";

/// The TCP ports the pod's containers declare, sorted, each once.
fn declared_ports(spec: &PodSpec) -> Vec<u16> {
    let mut ports: Vec<u16> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.protocol.as_deref().is_none_or(|proto| proto == "TCP"))
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The `hostAliases` entries of the balancings that name a Service. A name
/// the pod maps itself already is left to the pod's own entry; a balancing
/// whose ports the pod's containers listen on gets none (the app's own
/// listener would answer the name, and the proxy does not listen there).
fn host_aliases(
    spec: &PodSpec,
    balancings: &[LocalBalancing],
    app_ports: &[u16],
) -> Vec<HostAlias> {
    let own: Vec<&str> = spec
        .host_aliases
        .iter()
        .flatten()
        .flat_map(|h| h.hostnames.iter().flatten())
        .map(String::as_str)
        .collect();
    balancings
        .iter()
        .filter_map(|b| {
            let aliases = b.aliases.as_ref()?;
            if aliases.ports.iter().any(|p| app_ports.contains(p)) {
                return None;
            }
            let hostnames: Vec<String> = aliases
                .hostnames
                .iter()
                .filter(|n| !own.contains(&n.as_str()))
                .cloned()
                .collect();
            (!hostnames.is_empty()).then(|| HostAlias {
                ip: aliases.ip.clone(),
                hostnames: Some(hostnames),
            })
        })
        .collect()
}

/// The value of the `grpcbalancer.io/injected` annotation: the proxy image's
/// tag or digest, `latest` when the reference names neither.
pub fn injected_version(image: &str) -> &str {
    if let Some((_, digest)) = image.split_once('@') {
        return digest;
    }
    let last_segment = image.rsplit('/').next().unwrap_or(image);
    match last_segment.split_once(':') {
        Some((_, tag)) if !tag.is_empty() => tag,
        _ => "latest",
    }
}

fn check_conflicts(spec: &PodSpec, settings: &ProxySettings) -> Result<(), InjectError> {
    if spec
        .volumes
        .iter()
        .flatten()
        .any(|v| v.name == CONFIG_VOLUME_NAME)
    {
        return Err(InjectError::VolumeNameTaken(CONFIG_VOLUME_NAME));
    }
    let admin_port = i32::from(settings.admin_port);
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for container in containers {
        if container
            .ports
            .iter()
            .flatten()
            .any(|p| p.container_port == admin_port)
        {
            return Err(InjectError::AdminPortTaken {
                container: container.name.clone(),
                port: settings.admin_port,
            });
        }
    }
    Ok(())
}

fn annotate(
    ops: &mut Vec<PatchOperation>,
    existing: &BTreeMap<String, String>,
    image: &str,
    admin_port: u16,
    balancings: &[LocalBalancing],
) {
    let mut names: Vec<&str> = balancings.iter().map(|b| b.name.as_str()).collect();
    names.sort_unstable();
    let mut wanted = vec![
        (annotations::INJECTED, injected_version(image).to_owned()),
        (annotations::BALANCINGS, names.join(",")),
    ];
    let scrape_hints = [
        annotations::PROMETHEUS_SCRAPE,
        annotations::PROMETHEUS_PORT,
        annotations::PROMETHEUS_PATH,
    ];
    if !scrape_hints.iter().any(|k| existing.contains_key(*k)) {
        wanted.extend([
            (annotations::PROMETHEUS_SCRAPE, "true".to_owned()),
            (annotations::PROMETHEUS_PORT, admin_port.to_string()),
            (annotations::PROMETHEUS_PATH, "/metrics".to_owned()),
        ]);
    }
    // Annotations are only absent on pods that do not ask for injection, but
    // the parent is still created rather than assumed.
    if existing.is_empty() {
        let map: serde_json::Map<String, Value> = wanted
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v)))
            .collect();
        ops.push(add(
            pointer(["metadata", "annotations"]),
            Value::Object(map),
        ));
    } else {
        for (key, value) in wanted {
            // `add` on an existing member replaces it.
            ops.push(add(
                pointer(["metadata", "annotations", key]),
                Value::String(value),
            ));
        }
    }
}

fn add_env(
    ops: &mut Vec<PatchOperation>,
    list: &str,
    index: usize,
    container: &Container,
    wanted: &[(String, String)],
) {
    let existing = container.env.as_deref().unwrap_or_default();
    let missing: Vec<Value> = wanted
        .iter()
        .filter(|(name, _)| !existing.iter().any(|e| &e.name == name))
        .map(|(name, value)| env_value(name, value))
        .collect();
    if missing.is_empty() {
        return;
    }
    let index = index.to_string();
    if container.env.is_none() {
        ops.push(add(
            pointer(["spec", list, &index, "env"]),
            Value::Array(missing),
        ));
    } else {
        for value in missing {
            ops.push(add(pointer(["spec", list, &index, "env", "-"]), value));
        }
    }
}

fn env_value(name: &str, value: &str) -> Value {
    serde_json::json!({ "name": name, "value": value })
}

/// Appends to a list, creating it when the pod has none.
fn add_to_list(ops: &mut Vec<PatchOperation>, path: &[&str; 2], exists: bool, value: Value) {
    if exists {
        ops.push(add(pointer([path[0], path[1], "-"]), value));
    } else {
        ops.push(add(pointer(*path), Value::Array(vec![value])));
    }
}

/// Inserts at the front of `spec.<list>`, creating it when the pod has none.
fn insert_first(ops: &mut Vec<PatchOperation>, list: &str, exists: bool, value: Value) {
    if exists {
        ops.push(add(pointer(["spec", list, "0"]), value));
    } else {
        ops.push(add(pointer(["spec", list]), Value::Array(vec![value])));
    }
}

fn pointer<const N: usize>(tokens: [&str; N]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.map(Token::new))
}

fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_image_references() {
        assert_eq!(injected_version("ghcr.io/a/proxy:0.1.0"), "0.1.0");
        assert_eq!(injected_version("localhost:5000/proxy"), "latest");
        assert_eq!(injected_version("localhost:5000/proxy:dev"), "dev");
        assert_eq!(injected_version("proxy@sha256:abcd"), "sha256:abcd");
        assert_eq!(injected_version("proxy"), "latest");
    }

    #[test]
    fn pointers_escape_slash_and_tilde() {
        assert_eq!(
            pointer(["metadata", "annotations", "a.io/b~c"]).as_str(),
            "/metadata/annotations/a.io~1b~0c"
        );
    }
}
