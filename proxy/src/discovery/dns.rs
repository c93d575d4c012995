//! DNS discovery through hickory-resolver: /etc/resolv.conf and /etc/hosts
//! (or one given nameserver), every address of the name, re-resolved on an
//! interval and at once when a connection to an endpoint failed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::rdata::CNAME;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::{ConnectionProvider, Resolver, ResolverBuilder, TokioResolver};
use tokio::time::Instant;

use tokio::sync::Notify;

use super::{DiscoveryError, Update, UpdateStream};

/// Failures trigger re-resolution, but never more often than this.
const MIN_REFRESH_GAP: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct DnsResolver {
    resolver: Result<Arc<Resolvers<TokioRuntimeProvider>>, String>,
}

impl DnsResolver {
    pub fn new(dns_server: Option<SocketAddr>) -> Self {
        let resolver = match dns_server {
            Some(server) => build(|| Ok(builder_for(server, TokioRuntimeProvider::default()))),
            None => build(|| TokioResolver::builder_tokio().map_err(|e| e.to_string())),
        }
        .map(Arc::new);
        if let Err(e) = &resolver {
            tracing::warn!(error = %e, "DNS resolver unavailable; DNS discovery will report errors");
        }
        DnsResolver { resolver }
    }

    pub fn watch(
        &self,
        name: String,
        port: u16,
        interval: Duration,
        refresh_now: Arc<Notify>,
    ) -> UpdateStream {
        let resolver = self.resolver.clone();
        let state = (resolver, name, port, interval, refresh_now, None::<Instant>);
        Box::pin(futures::stream::unfold(
            state,
            |(resolver, name, port, interval, refresh_now, last)| async move {
                if let Some(last) = last {
                    tokio::select! {
                        () = tokio::time::sleep_until(last + interval) => {}
                        () = refresh_now.notified() => {
                            tokio::time::sleep_until(last + MIN_REFRESH_GAP).await;
                        }
                    }
                }
                let started = Instant::now();
                let result = match &resolver {
                    Ok(r) => resolve(r, &name, port).await,
                    Err(e) => Err(DiscoveryError::Resolver(e.clone())),
                };
                Some((
                    result,
                    (resolver, name, port, interval, refresh_now, Some(started)),
                ))
            },
        ))
    }
}

/// A resolver asking only `server` (UDP, and TCP for truncated answers).
pub(crate) fn builder_for<P: ConnectionProvider>(
    server: SocketAddr,
    provider: P,
) -> ResolverBuilder<P> {
    let mut ns = NameServerConfig::udp_and_tcp(server.ip());
    for c in &mut ns.connections {
        c.port = server.port();
    }
    Resolver::builder_with_config(ResolverConfig::from_name_servers(vec![ns]), provider)
}

/// One resolver per address family. hickory's dual-stack lookup answers
/// with the first family's error when both fail, so "no A record" beside a
/// failed AAAA query (an IPv6 cluster whose DNS dropped one packet) would
/// read as "no endpoints": asked apart, each family's answer is known.
pub(crate) struct Resolvers<P: ConnectionProvider> {
    v4: Resolver<P>,
    v6: Resolver<P>,
}

/// The proxy's resolvers, with its settings on top of `builder`'s
/// nameservers.
pub(crate) fn build<P: ConnectionProvider>(
    builder: impl Fn() -> Result<ResolverBuilder<P>, String>,
) -> Result<Resolvers<P>, String> {
    let family = |strategy| {
        let mut builder = builder()?;
        let opts = builder.options_mut();
        // Endpoint changes must show within one refresh interval, whatever
        // TTL the cluster DNS hands out.
        opts.positive_max_ttl = Some(Duration::ZERO);
        opts.negative_max_ttl = Some(Duration::ZERO);
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 1;
        opts.ip_strategy = strategy;
        builder.build().map_err(|e| e.to_string())
    };
    Ok(Resolvers {
        v4: family(LookupIpStrategy::Ipv4Only)?,
        v6: family(LookupIpStrategy::Ipv6Only)?,
    })
}

/// Every address of `name`, as the complete endpoint set. The set is
/// emptied only when both families answer for sure that there is none (a
/// headless Service scaled to zero); a family that fails beside one without
/// addresses is an error (the subset keeps its endpoints).
pub(crate) async fn resolve<P: ConnectionProvider>(
    resolvers: &Resolvers<P>,
    name: &str,
    port: u16,
) -> Result<Update, DiscoveryError> {
    let (v4, v6) = futures::join!(
        addresses(&resolvers.v4, name, RecordType::A),
        addresses(&resolvers.v6, name, RecordType::AAAA)
    );
    let addrs = match (v4, v6) {
        (Ok(mut v4), Ok(v6)) => {
            v4.extend(v6);
            v4
        }
        // As hickory's dual-stack lookup does: the addresses one family has.
        (Ok(addrs), Err(_)) | (Err(_), Ok(addrs)) if !addrs.is_empty() => addrs,
        (Err(e), _) | (_, Err(e)) => {
            return Err(DiscoveryError::Resolve {
                name: name.to_owned(),
                message: e.to_string(),
            });
        }
    };
    let mut addrs: Vec<SocketAddr> = addrs
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    addrs.sort();
    addrs.dedup();
    Ok(Update::Reset(addrs))
}

/// The addresses of one family (`rtype`: A or AAAA); none for a definite
/// "no such name / no addresses".
async fn addresses<P: ConnectionProvider>(
    resolver: &Resolver<P>,
    name: &str,
    rtype: RecordType,
) -> Result<Vec<IpAddr>, NetError> {
    match resolver.lookup_ip(name).await {
        Ok(lookup) => Ok(owned_addresses(lookup.as_lookup(), rtype)),
        Err(e) if says_no_addresses(&e) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// A definite "none": NXDOMAIN, or NOERROR without a record. hickory also
/// reports an answer without records under any other response code as "no
/// records found"; such an answer says nothing about the name.
fn says_no_addresses(e: &NetError) -> bool {
    matches!(
        e,
        NetError::Dns(DnsError::NoRecordsFound(NoRecords {
            response_code: ResponseCode::NoError | ResponseCode::NXDomain,
            ..
        }))
    )
}

/// The addresses of the `rtype` records of the name asked, or of a name it
/// is an alias (CNAME) of. hickory hands on every address in an answer
/// that has a CNAME; records of other names or of the other family are no
/// endpoints of this name, whatever a nameserver put beside them.
fn owned_addresses(lookup: &Lookup, rtype: RecordType) -> Vec<IpAddr> {
    let answers = lookup.answers();
    let mut names = vec![lookup.query().name.clone()];
    let owned = |names: &[Name], name: &Name| names.iter().any(|n| n.eq_ignore_root(name));
    let mut grew = true;
    while grew {
        grew = false;
        for record in answers {
            if let RData::CNAME(CNAME(target)) = &record.data
                && owned(&names, &record.name)
                && !owned(&names, target)
            {
                names.push(target.clone());
                grew = true;
            }
        }
    }
    answers
        .iter()
        .filter(|r| r.record_type() == rtype && owned(&names, &r.name))
        .filter_map(|r| r.data.ip_addr())
        .collect()
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Message, MessageType, Query};
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::{A, AAAA};

    use super::*;

    const NAME: &str = "grpcb-greeter-v1.demo.svc.cluster.local";

    /// A nameserver on 127.0.0.1 that answers A questions without a record,
    /// with response code `a_code`, and AAAA questions with "no such record"
    /// (NOERROR, no answer) or not at all (an IPv6 cluster's DNS that lost a
    /// datagram).
    async fn nameserver(a_code: ResponseCode, answers_aaaa: bool) -> SocketAddr {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = socket.local_addr().expect("address");
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Some(question) = query.queries.first() else {
                    continue;
                };
                if question.query_type == RecordType::AAAA && !answers_aaaa {
                    continue;
                }
                let mut answer = Message::response(query.metadata.id, query.metadata.op_code);
                answer.metadata.message_type = MessageType::Response;
                answer.metadata.response_code = if question.query_type == RecordType::A {
                    a_code
                } else {
                    ResponseCode::NoError
                };
                answer.add_query(question.clone());
                let _ = socket
                    .send_to(&answer.to_vec().expect("encode"), peer)
                    .await;
            }
        });
        addr
    }

    fn resolvers(server: SocketAddr) -> Resolvers<TokioRuntimeProvider> {
        build(|| Ok(builder_for(server, TokioRuntimeProvider::default()))).expect("resolvers")
    }

    /// Found by the `dns_answer` fuzz target: hickory's dual-stack lookup
    /// turned this into "no addresses", and the subset lost every endpoint.
    #[tokio::test]
    async fn a_failed_family_beside_one_without_addresses_is_an_error() {
        let server = nameserver(ResponseCode::NoError, false).await;
        let resolved = resolve(&resolvers(server), NAME, 50051).await;
        assert!(
            matches!(resolved, Err(DiscoveryError::Resolve { .. })),
            "{resolved:?}"
        );
    }

    #[tokio::test]
    async fn both_families_without_addresses_empty_the_set() {
        let server = nameserver(ResponseCode::NoError, true).await;
        let resolved = resolve(&resolvers(server), NAME, 50051).await;
        assert_eq!(resolved.ok(), Some(Update::Reset(Vec::new())));
    }

    /// Found by the `dns_answer` fuzz target: an answer without records whose
    /// response code is neither NOERROR nor NXDOMAIN (here one no standard
    /// defines) says nothing about the name, yet it emptied the subset.
    #[tokio::test]
    async fn an_answer_with_an_unknown_response_code_is_an_error() {
        let server = nameserver(ResponseCode::Unknown(13), true).await;
        let resolved = resolve(&resolvers(server), NAME, 50051).await;
        assert!(
            matches!(resolved, Err(DiscoveryError::Resolve { .. })),
            "{resolved:?}"
        );
    }

    /// Found by the `dns_answer` fuzz target: an answer with a CNAME made
    /// every address in it an endpoint, another name's too.
    #[test]
    fn only_records_of_the_name_and_its_aliases_are_endpoints() {
        let name = |s: &str| Name::from_ascii(s).expect("a name");
        let asked = name("grpcb-greeter-v1.demo.svc.cluster.local.");
        let alias = name("greeter-canonical.demo.svc.cluster.local.");
        let other = name("grpcb-greeter-v2.demo.svc.cluster.local.");
        let v6: std::net::Ipv6Addr = "fd00:10:244::7".parse().expect("an address");
        let lookup = Lookup::new_with_max_ttl(
            Query::query(asked.clone(), RecordType::A),
            [
                Record::from_rdata(asked.clone(), 5, RData::CNAME(CNAME(alias.clone()))),
                Record::from_rdata(alias, 5, RData::A(A::new(10, 244, 2, 9))),
                Record::from_rdata(other, 5, RData::A(A::new(10, 244, 3, 1))),
                Record::from_rdata(asked, 5, RData::AAAA(AAAA(v6))),
            ],
        );
        assert_eq!(
            owned_addresses(&lookup, RecordType::A),
            vec![IpAddr::from([10, 244, 2, 9])]
        );
        assert_eq!(
            owned_addresses(&lookup, RecordType::AAAA),
            vec![IpAddr::V6(v6)]
        );
    }
}
