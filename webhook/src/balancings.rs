//! What a pod gets of each balancing: the env var that tells the app where
//! it listens (`GRPC_BALANCER_<NAME>_ADDR=127.0.0.1:<port>`) and, for one
//! that names a Service, the host aliases that send the Service's names to
//! the listener.

use std::net::SocketAddr;

use grpc_balancer_crds::config::ProxyConfig;

/// One balancing as the app sees it: an env var name and a loopback address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalBalancing {
    /// The `GrpcBalancing`'s name.
    pub name: String,
    pub env_name: String,
    pub address: String,
    /// With `spec.service`: the names to map to the listener's address.
    pub aliases: Option<HostAliases>,
}

/// One `hostAliases` entry of a pod: `hostnames` resolve to `ip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAliases {
    pub ip: String,
    pub hostnames: Vec<String>,
    /// The ports the proxy takes on `ip`: the Service's gRPC port and the
    /// ports it relays. A pod whose containers listen on one of them gets
    /// no alias (the proxy could not listen there).
    pub ports: Vec<u16>,
}

/// `GRPC_BALANCER_<NAME>_ADDR`, the name upper-cased with `-` and `.` as `_`.
pub fn env_name(balancing_name: &str) -> String {
    let name: String = balancing_name
        .chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    format!("GRPC_BALANCER_{name}_ADDR")
}

/// The address the app dials: the listener itself when it is a loopback
/// address, else `127.0.0.1` on its port (a wildcard listener answers there too).
pub fn local_address(listen: &SocketAddr) -> String {
    if listen.ip().is_loopback() {
        listen.to_string()
    } else {
        format!("127.0.0.1:{}", listen.port())
    }
}

/// The balancings of one namespace's proxy config, in config order. A
/// listener that does not parse is skipped: the proxy refuses such a config
/// anyway, and an env var pointing nowhere would only mislead.
pub fn local_balancings(config: &ProxyConfig) -> Vec<LocalBalancing> {
    config
        .balancings
        .iter()
        .filter_map(|b| {
            let listen: SocketAddr = b.listen.parse().ok()?;
            Some(LocalBalancing {
                name: b.name.clone(),
                env_name: env_name(&b.name),
                address: local_address(&listen),
                // Only a loopback listener: a name mapped anywhere else
                // would send the pod's calls off the pod.
                aliases: b
                    .service
                    .as_ref()
                    .filter(|_| listen.ip().is_loopback())
                    .map(|s| HostAliases {
                        ip: listen.ip().to_string(),
                        hostnames: s.hostnames.clone(),
                        ports: std::iter::once(listen.port())
                            .chain(
                                s.forwards
                                    .iter()
                                    .filter_map(|f| f.listen.parse::<SocketAddr>().ok())
                                    .map(|a| a.port()),
                            )
                            .collect(),
                    }),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_env_var_names() {
        assert_eq!(env_name("greeter"), "GRPC_BALANCER_GREETER_ADDR");
        assert_eq!(
            env_name("my-svc.v2_beta"),
            "GRPC_BALANCER_MY_SVC_V2_BETA_ADDR"
        );
    }

    #[test]
    fn addresses_are_loopback() {
        let at = |s: &str| local_address(&s.parse().expect("a socket address"));
        assert_eq!(at("127.0.0.1:15001"), "127.0.0.1:15001");
        assert_eq!(at("127.0.0.2:15001"), "127.0.0.2:15001");
        assert_eq!(at("0.0.0.0:15002"), "127.0.0.1:15002");
        assert_eq!(at("[::1]:15003"), "[::1]:15003");
    }

    #[test]
    fn reads_a_rendered_config() {
        let config = grpc_balancer_crds::config::parse_yaml(
            "balancings:\n\
             - name: greeter\n  listen: 127.0.0.1:15001\n  subsets:\n  - name: all\n    discovery: { static: [127.0.0.3:50051] }\n\
             - name: orders.v2\n  listen: 0.0.0.0:15002\n  subsets:\n  - name: all\n    discovery: { static: [127.0.0.4:50051] }\n",
        )
        .expect("a valid config");
        assert_eq!(
            local_balancings(&config),
            vec![
                LocalBalancing {
                    name: "greeter".into(),
                    env_name: "GRPC_BALANCER_GREETER_ADDR".into(),
                    address: "127.0.0.1:15001".into(),
                    aliases: None,
                },
                LocalBalancing {
                    name: "orders.v2".into(),
                    env_name: "GRPC_BALANCER_ORDERS_V2_ADDR".into(),
                    address: "127.0.0.1:15002".into(),
                    aliases: None,
                },
            ]
        );
    }

    #[test]
    fn a_service_front_becomes_host_aliases() {
        let config = grpc_balancer_crds::config::parse_yaml(
            "balancings:\n\
             - name: greeter\n  listen: 127.0.10.1:50051\n  subsets:\n  - name: all\n    discovery: { static: [127.0.0.3:50051] }\n  service:\n    hostnames: [greeter, greeter.demo]\n    passthrough: 10.96.0.20:50051\n\
             - name: away\n  listen: 0.0.0.0:50052\n  subsets:\n  - name: all\n    discovery: { static: [127.0.0.3:50051] }\n  service:\n    hostnames: [away]\n    passthrough: 10.96.0.21:50052\n",
        )
        .expect("a valid config");
        let local = local_balancings(&config);
        assert_eq!(
            local[0].aliases,
            Some(HostAliases {
                ip: "127.0.10.1".into(),
                hostnames: vec!["greeter".into(), "greeter.demo".into()],
                ports: vec![50051],
            })
        );
        assert_eq!(local[0].address, "127.0.10.1:50051");
        assert_eq!(local[1].aliases, None, "a wildcard listener gets no alias");
    }
}
