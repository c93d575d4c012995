//! A balancing that names a Service (`spec.service`): the loopback address
//! client pods resolve the Service's names to, and what the proxy listens on
//! there. Inside a pod every address of 127.0.0.0/8 is the pod's own
//! loopback, so no privilege is needed to take one: the kubelet writes the
//! names into the pod's `/etc/hosts` from the `hostAliases` the webhook adds.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use grpc_balancer_crds::config::{Forward, ServiceFront};
use grpc_balancer_crds::v1alpha1::GrpcBalancing;
use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::balancing::RenderError;

/// First address of the pool: away from `127.0.0.1`, which the app and
/// the env-var listeners use, and from the low `127.0.0.x` addresses
/// local tools often take.
pub const POOL_FIRST: Ipv4Addr = Ipv4Addr::new(127, 0, 10, 1);
/// Last address of the pool: one /24, 254 balancings naming a Service per
/// namespace.
pub const POOL_LAST: Ipv4Addr = Ipv4Addr::new(127, 0, 10, 254);

/// Whether `ip` is one the operator hands out.
pub fn in_pool(ip: Ipv4Addr) -> bool {
    (POOL_FIRST..=POOL_LAST).contains(&ip)
}

/// The pool's addresses, lowest first.
fn pool() -> impl Iterator<Item = Ipv4Addr> {
    (u32::from(POOL_FIRST)..=u32::from(POOL_LAST)).map(Ipv4Addr::from)
}

/// Addresses for the balancings that name a Service, given oldest first
/// with the address their status records. A recorded address stays with
/// its balancing (pods created with it keep reaching the proxy); the
/// others get the next free one above the highest taken, oldest first,
/// and the lowest free one once the pool's end is reached: an address
/// freed by a deleted balancing is not handed out again before the pool
/// wraps, since pods created while it existed still map its Service's
/// names there. A balancing left out of the result found the pool
/// exhausted.
pub fn assign_addresses<'a>(claims: &[(&'a str, Option<&str>)]) -> HashMap<&'a str, Ipv4Addr> {
    let mut assigned = HashMap::new();
    let mut taken = HashSet::new();
    for (name, recorded) in claims {
        let Some(ip) = recorded.and_then(|r| r.parse::<Ipv4Addr>().ok()) else {
            continue;
        };
        if in_pool(ip) && taken.insert(ip) {
            assigned.insert(*name, ip);
        }
    }
    let highest = taken.iter().max().copied();
    let (above, wrapped): (Vec<Ipv4Addr>, Vec<Ipv4Addr>) = pool()
        .filter(|ip| !taken.contains(ip))
        .partition(|ip| highest.is_none_or(|h| *ip > h));
    let mut free = above.into_iter().chain(wrapped);
    for (name, _) in claims {
        if assigned.contains_key(name) {
            continue;
        }
        match free.next() {
            Some(ip) => {
                assigned.insert(*name, ip);
            }
            None => break,
        }
    }
    assigned
}

/// Every name a client of the namespace may dial the Service by.
pub fn hostnames(service: &str, namespace: &str, cluster_domain: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.{cluster_domain}"),
    ]
}

/// The listener (`address` on the Service's gRPC port) and the front of
/// `gb`, whose `spec.service` is `service` (`None`: not found).
pub fn front(
    gb: &GrpcBalancing,
    service_name: &str,
    service: Option<&Service>,
    address: Ipv4Addr,
    cluster_domain: &str,
) -> Result<(String, ServiceFront), RenderError> {
    let namespace = gb.metadata.namespace.as_deref().unwrap_or_default();
    let Some(service) = service.filter(|s| s.metadata.deletion_timestamp.is_none()) else {
        return Err(RenderError::ServiceNotFound(format!(
            "spec.service: Service {service_name:?} does not exist in namespace {namespace:?}"
        )));
    };
    let unsupported =
        |why: String| RenderError::ServiceUnsupported(format!("Service {service_name:?} {why}"));
    let spec = service.spec.clone().unwrap_or_default();
    match spec.type_.as_deref() {
        None | Some("ClusterIP" | "NodePort" | "LoadBalancer") => {}
        Some(other) => {
            return Err(unsupported(format!(
                "is of type {other}: only a Service with a cluster IP can be stood in for"
            )));
        }
    }
    let cluster_ip = match spec.cluster_ip.as_deref() {
        None | Some("") => {
            return Err(unsupported(
                "has no cluster IP yet: a TLS client could not be passed through".into(),
            ));
        }
        Some("None") => {
            return Err(unsupported(
                "is headless: its clients resolve every pod (and may balance themselves); \
                 name a Service with a cluster IP"
                    .into(),
            ));
        }
        Some(ip) => ip.parse::<IpAddr>().map_err(|_| {
            unsupported(format!(
                "has the cluster IP {ip:?}, which is not an IP address"
            ))
        })?,
    };
    let ports = spec.ports.unwrap_or_default();
    if ports.is_empty() {
        return Err(unsupported("has no port".into()));
    }
    if let Some(p) = ports
        .iter()
        .find(|p| p.protocol.as_deref().is_some_and(|proto| proto != "TCP"))
    {
        return Err(unsupported(format!(
            "has the {} port {}: the proxy relays TCP only, and its clients would lose that port",
            p.protocol.as_deref().unwrap_or_default(),
            p.port
        )));
    }
    let grpc = grpc_port(&ports, &gb.spec.port).ok_or_else(|| {
        unsupported(format!(
            "has no port whose target is spec.port {}; its ports: {}",
            port_text(&gb.spec.port),
            ports
                .iter()
                .map(|p| p.port.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let listen_on = |port: i32| -> Result<String, RenderError> {
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| unsupported(format!("has the port {port}, which is not 1-65535")))?;
        Ok(SocketAddr::from((address, port)).to_string())
    };
    let to = |port: i32| SocketAddr::new(cluster_ip, u16::try_from(port).unwrap_or(0)).to_string();
    let listen = listen_on(grpc.port)?;
    let mut forwards = Vec::new();
    for p in ports.iter().filter(|p| p.port != grpc.port) {
        forwards.push(Forward {
            listen: listen_on(p.port)?,
            to: to(p.port),
        });
    }
    Ok((
        listen,
        ServiceFront {
            hostnames: hostnames(service_name, namespace, cluster_domain),
            passthrough: to(grpc.port),
            forwards,
        },
    ))
}

/// The Service port that carries gRPC: the one whose target is the
/// backends' port; with a single port, that one.
fn grpc_port<'a>(ports: &'a [ServicePort], backend: &IntOrString) -> Option<&'a ServicePort> {
    let targets = |p: &ServicePort| match (&p.target_port, backend) {
        (Some(IntOrString::Int(t)), IntOrString::Int(b)) => t == b,
        (Some(IntOrString::String(t)), IntOrString::String(b)) => t == b,
        // No targetPort: it is the port itself.
        (None, IntOrString::Int(b)) => p.port == *b,
        _ => false,
    };
    ports.iter().find(|p| targets(p)).or(match ports {
        [only] => Some(only),
        _ => None,
    })
}

fn port_text(port: &IntOrString) -> String {
    match port {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => format!("{s:?}"),
    }
}
