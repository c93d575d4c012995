//! A tiny cluster DNS server, since the test control plane has no CoreDNS: it answers A
//! queries for `<svc>.<ns>.svc.cluster.local` (also `<svc>.<ns>.svc` and `<svc>.<ns>`) of
//! headless Services with the ready addresses of the Service's EndpointSlices, watched
//! through kube-runtime reflectors.
//!
//! - names of no headless Service → NXDOMAIN (ClusterIP Services are not answered: their
//!   virtual IPs route nowhere here, there is no kube-proxy);
//! - a headless Service with no ready endpoint, or a non-A query for it → NOERROR, no
//!   answers;
//! - TTL 5 s; UDP only (answers are small; a resolver retries over TCP only on truncation).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context as _;
use futures::StreamExt as _;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// TTL of the answers, short so that resolvers see endpoint changes quickly.
pub const TTL: u32 = 5;

/// A running cluster DNS server; stops when dropped.
#[derive(Debug)]
pub struct ClusterDns {
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl ClusterDns {
    /// Starts on 127.0.0.1 with a port the kernel picks (no race: the socket stays bound).
    pub async fn start(client: Client) -> anyhow::Result<ClusterDns> {
        Self::start_on(client, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Starts on `addr`; returns once the Service and EndpointSlice caches have synced, so
    /// the first query already sees the cluster's state.
    pub async fn start_on(client: Client, addr: SocketAddr) -> anyhow::Result<ClusterDns> {
        let socket = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("binding DNS socket {addr}"))?;
        let addr = socket.local_addr()?;
        let (services, svc_task) = reflect::<Service>(client.clone());
        let (slices, slice_task) = reflect::<EndpointSlice>(client);
        let synced = async {
            services.wait_until_ready().await?;
            slices.wait_until_ready().await
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), synced)
            .await
            .context("Service/EndpointSlice caches did not sync within 30 s")?
            .context("reflector stopped")?;
        let resolver = Arc::new(Resolver { services, slices });
        let serve = tokio::spawn(serve(Arc::new(socket), resolver));
        Ok(ClusterDns {
            addr,
            tasks: vec![svc_task, slice_task, serve],
        })
    }

    /// The UDP address to send queries to (the proxy's `--dns-server`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until the tasks end (for the binary).
    pub async fn run_forever(mut self) {
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for ClusterDns {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn reflect<K>(client: Client) -> (Store<K>, JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
    K: serde::de::DeserializeOwned,
{
    let (reader, writer) = reflector::store();
    let api: Api<K> = Api::all(client);
    // default_backoff: a watch error (apiserver restart, expired resourceVersion) retries
    // instead of ending the stream and freezing the cache.
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    let task = tokio::spawn(async move {
        stream
            .for_each(|ev| async move {
                if let Err(e) = ev {
                    tracing::warn!(error = %e, "cluster-dns watch error");
                }
            })
            .await;
    });
    (reader, task)
}

struct Resolver {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
}

/// What a name resolves to.
#[derive(Debug, PartialEq, Eq)]
enum Lookup {
    Unknown,
    Headless(BTreeSet<Ipv4Addr>),
}

impl Resolver {
    fn lookup(&self, qname: &str) -> Lookup {
        let Some((svc, ns)) = parse_name(qname) else {
            return Lookup::Unknown;
        };
        let (svc, ns) = (svc.as_str(), ns.as_str());
        let headless = self.services.state().iter().any(|s| {
            s.metadata.name.as_deref() == Some(svc)
                && s.metadata.namespace.as_deref() == Some(ns)
                && s.spec.as_ref().and_then(|sp| sp.cluster_ip.as_deref()) == Some("None")
        });
        if !headless {
            return Lookup::Unknown;
        }
        let mut ips = BTreeSet::new();
        for slice in self.slices.state() {
            let owned = slice.metadata.namespace.as_deref() == Some(ns)
                && slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name"))
                    .map(String::as_str)
                    == Some(svc);
            if !owned || slice.address_type != "IPv4" {
                continue;
            }
            for ep in &slice.endpoints {
                // A missing ready condition means ready (EndpointSlice API semantics).
                if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                ips.extend(
                    ep.addresses
                        .iter()
                        .filter_map(|a| a.parse::<Ipv4Addr>().ok()),
                );
            }
        }
        Lookup::Headless(ips)
    }

    fn answer(&self, query: &Message) -> Message {
        let mut resp = Message::new(
            query.metadata.id,
            MessageType::Response,
            query.metadata.op_code,
        );
        resp.metadata.recursion_desired = query.metadata.recursion_desired;
        resp.metadata.authoritative = true;
        if query.metadata.op_code != OpCode::Query || query.queries.len() != 1 {
            resp.metadata.response_code = ResponseCode::NotImp;
            resp.add_queries(query.queries.iter().cloned());
            return resp;
        }
        let q = &query.queries[0];
        resp.add_query(q.clone());
        let name = q.name().to_ascii();
        match self.lookup(&name) {
            Lookup::Unknown => resp.metadata.response_code = ResponseCode::NXDomain,
            Lookup::Headless(ips) => {
                if q.query_type() == RecordType::A {
                    for ip in ips {
                        resp.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::from(ip)));
                    }
                }
            }
        }
        resp
    }
}

/// `<svc>.<ns>[.svc[.cluster.local]][.]` → (svc, ns). DNS names are case-insensitive and
/// Kubernetes names are lowercase, so the query is lowercased.
fn parse_name(qname: &str) -> Option<(String, String)> {
    let name = qname
        .strip_suffix('.')
        .unwrap_or(qname)
        .to_ascii_lowercase();
    let labels: Vec<&str> = name.split('.').collect();
    match labels.as_slice() {
        [svc, ns] | [svc, ns, "svc"] | [svc, ns, "svc", "cluster", "local"]
            if !svc.is_empty() && !ns.is_empty() =>
        {
            Some(((*svc).to_owned(), (*ns).to_owned()))
        }
        _ => None,
    }
}

async fn serve(socket: Arc<UdpSocket>, resolver: Arc<Resolver>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(v) => v,
            Err(e) => {
                // e.g. ICMP port unreachable reported on the socket; keep serving.
                tracing::debug!(error = %e, "cluster-dns recv");
                continue;
            }
        };
        let reply = match Message::from_vec(&buf[..n]) {
            Ok(q) if q.metadata.message_type == MessageType::Query => resolver.answer(&q),
            Ok(_) => continue,
            Err(_) => {
                // Unparseable: answer FORMERR when at least the ID is there.
                if n < 2 {
                    continue;
                }
                let id = u16::from_be_bytes([buf[0], buf[1]]);
                Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
            }
        };
        match reply.to_vec() {
            Ok(bytes) => {
                if let Err(e) = socket.send_to(&bytes, peer).await {
                    tracing::debug!(error = %e, %peer, "cluster-dns send");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cluster-dns encode"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_name;

    #[test]
    fn parses_service_names() {
        let some = |a: &str, b: &str| Some((a.to_owned(), b.to_owned()));
        assert_eq!(
            parse_name("web.prod.svc.cluster.local."),
            some("web", "prod")
        );
        assert_eq!(
            parse_name("Web.PROD.svc.Cluster.local"),
            some("web", "prod")
        );
        assert_eq!(parse_name("web.prod.svc"), some("web", "prod"));
        assert_eq!(parse_name("web.prod"), some("web", "prod"));
        assert_eq!(parse_name(".prod"), None);
        assert_eq!(parse_name("web"), None);
        assert_eq!(parse_name("web.prod.example.com"), None);
        assert_eq!(parse_name("x.web.prod.svc.cluster.local"), None);
    }
}
