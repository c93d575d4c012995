//! DNS answers as the proxy's DNS discovery gets them: the proxy's resolver
//! (hickory, with the proxy's settings) asks the canned nameserver for the
//! A and AAAA records of a backend's headless Service name, and the proxy
//! turns what it learns into the subset's endpoint set.
//!
//! The input is the answer to the A query and the answer to the AAAA query:
//! a big-endian u16 length, that many bytes for A, the rest for AAAA (when
//! the length does not fit, the whole rest answers both). Over TCP (after a
//! truncated answer) the same bytes come back without the TC bit.

use std::net::{IpAddr, SocketAddr};

use grpc_balancer_proxy::discovery::Update;
use grpc_balancer_proxy::fuzzing::resolve_dns;
use hickory_resolver::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

use crate::canned_dns::{Answers, Canned};

/// The name and port a subset resolves (as the operator renders them).
pub const NAME: &str = "grpcb-greeter-v1.demo.svc.cluster.local";
pub const PORT: u16 = 50051;
/// The nameserver's address (never dialled: the canned one answers).
const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(10, 96, 0, 10)), 53);

/// No panic. What resolves is a complete set (a reset) of the configured
/// port, sorted and without duplicates, whose every address is an A (IPv4)
/// or AAAA (IPv6) record of the asked name, or of a name it is an alias of,
/// in the answer section of the answer to that question type. An empty set
/// (every endpoint removed) comes only from definite answers to both
/// questions: NXDOMAIN, or NOERROR without an address of the name. A
/// message that does not parse, a server failure, a timeout on either
/// question is an error (the subset keeps its endpoints), never an empty set.
pub fn dns_answer(data: &[u8]) {
    let answers = split(data);
    let nameserver = Canned::new(answers.clone());
    let resolved = crate::runtime().block_on(async {
        let resolved = resolve_dns(nameserver.clone(), SERVER, NAME, PORT).await;
        nameserver.stop();
        // Lets the stopped tasks go (and what they hold with them).
        tokio::task::yield_now().await;
        resolved
    });
    let asked = name(NAME);
    let addrs = match resolved {
        Ok(Update::Reset(addrs)) => addrs,
        Ok(other) => panic!("DNS discovery yields only complete sets, got {other:?}"),
        Err(_) => return,
    };
    assert!(
        addrs.windows(2).all(|w| w[0] < w[1]),
        "not sorted or with duplicates: {addrs:?}"
    );
    if addrs.is_empty() {
        assert!(
            definitely_none(&answers.a, &asked, RecordType::A)
                && definitely_none(&answers.aaaa, &asked, RecordType::AAAA),
            "every endpoint removed without a definite answer to both questions"
        );
    }
    for addr in &addrs {
        assert_eq!(addr.port(), PORT, "{addr} is not of the configured port");
        let (answer, rtype) = match addr.ip() {
            IpAddr::V4(_) => (&answers.a, RecordType::A),
            IpAddr::V6(_) => (&answers.aaaa, RecordType::AAAA),
        };
        assert!(
            addresses_in(answer, &asked, rtype).contains(&addr.ip()),
            "{addr} is not a {rtype} record of {asked} in the answer to that question"
        );
    }
}

fn split(data: &[u8]) -> Answers {
    let (Some(len), Some(rest)) = (data.get(..2), data.get(2..)) else {
        return Answers {
            a: data.to_vec(),
            aaaa: data.to_vec(),
        };
    };
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    match (rest.get(..len), rest.get(len..)) {
        (Some(a), Some(aaaa)) => Answers {
            a: a.to_vec(),
            aaaa: aaaa.to_vec(),
        },
        _ => Answers {
            a: rest.to_vec(),
            aaaa: rest.to_vec(),
        },
    }
}

/// The addresses of type `rtype` that the answer section of `answer` gives
/// `name`, directly or through a chain of CNAMEs.
fn addresses_in(answer: &[u8], name: &Name, rtype: RecordType) -> Vec<IpAddr> {
    let Ok(message) = Message::from_vec(answer) else {
        return Vec::new();
    };
    let mut names = vec![name.clone()];
    for _ in 0..message.answers.len() {
        for record in &message.answers {
            if let RData::CNAME(CNAME(target)) = &record.data
                && names.contains(&record.name)
                && !names.contains(target)
            {
                names.push(target.clone());
            }
        }
    }
    message
        .answers
        .iter()
        .filter(|r| names.contains(&r.name))
        .filter_map(|r| match (&r.data, rtype) {
            (RData::A(A(ip)), RecordType::A) => Some(IpAddr::V4(*ip)),
            (RData::AAAA(AAAA(ip)), RecordType::AAAA) => Some(IpAddr::V6(*ip)),
            _ => None,
        })
        .collect()
}

/// Whether `answer` says for sure that `name` has no address of `rtype`.
fn definitely_none(answer: &[u8], name: &Name, rtype: RecordType) -> bool {
    let Ok(message) = Message::from_vec(answer) else {
        return false;
    };
    match message.metadata.response_code {
        ResponseCode::NXDomain => true,
        ResponseCode::NoError => addresses_in(answer, name, rtype).is_empty(),
        _ => false,
    }
}

/// Real answers, as the target's input: (file name, bytes).
pub fn seeds() -> crate::Seeds {
    let v4 = |a: [u8; 4]| RData::A(A(a.into()));
    let v6 = |s: &str| RData::AAAA(AAAA(s.parse().unwrap_or(std::net::Ipv6Addr::LOCALHOST)));
    let asked = name(NAME);
    let other = name("grpcb-greeter-v2.demo.svc.cluster.local");
    let alias = name("greeter-canonical.demo.svc.cluster.local");
    let ok = ResponseCode::NoError;
    let a = RecordType::A;
    let aaaa = RecordType::AAAA;
    vec![
        (
            "ipv4-two-pods",
            input(
                &answer(
                    a,
                    ok,
                    &[
                        (&asked, 5, v4([10, 244, 0, 7])),
                        (&asked, 5, v4([10, 244, 1, 3])),
                    ],
                ),
                &answer(aaaa, ok, &[]),
            ),
        ),
        (
            "ipv6-one-pod",
            input(
                &answer(a, ok, &[]),
                &answer(aaaa, ok, &[(&asked, 30, v6("fd00:10:244::5"))]),
            ),
        ),
        (
            "dual-stack",
            input(
                &answer(a, ok, &[(&asked, 0, v4([10, 244, 0, 7]))]),
                &answer(aaaa, ok, &[(&asked, 0, v6("fd00:10:244::7"))]),
            ),
        ),
        (
            "cname-and-a-stranger",
            input(
                &answer(
                    a,
                    ok,
                    &[
                        (&asked, 60, RData::CNAME(CNAME(alias.clone()))),
                        (&alias, 60, v4([10, 244, 2, 9])),
                        (&other, 60, v4([10, 244, 3, 1])),
                    ],
                ),
                &answer(
                    aaaa,
                    ok,
                    &[(&asked, 60, RData::CNAME(CNAME(alias.clone())))],
                ),
            ),
        ),
        (
            "nxdomain",
            input(
                &answer(a, ResponseCode::NXDomain, &[]),
                &answer(aaaa, ResponseCode::NXDomain, &[]),
            ),
        ),
        (
            "servfail-and-aaaa",
            input(
                &answer(a, ResponseCode::ServFail, &[]),
                &answer(aaaa, ok, &[(&asked, 5, v6("fd00:10:244::9"))]),
            ),
        ),
        (
            "empty-a-servfail-aaaa",
            input(
                &answer(a, ok, &[]),
                &answer(aaaa, ResponseCode::ServFail, &[]),
            ),
        ),
        ("truncated", {
            let mut truncated = answer(a, ok, &[(&asked, 5, v4([10, 244, 0, 8]))]);
            if let Some(flags) = truncated.get_mut(2) {
                *flags |= 0x02;
            }
            input(&truncated, &answer(aaaa, ok, &[]))
        }),
        (
            "wrong-name-only",
            input(
                &answer(a, ok, &[(&other, 5, v4([10, 244, 3, 1]))]),
                &answer(aaaa, ok, &[]),
            ),
        ),
    ]
}

/// `s` as a fully qualified name (as names in answers are).
fn name(s: &str) -> Name {
    match Name::from_ascii(s) {
        Ok(mut n) => {
            n.set_fqdn(true);
            n
        }
        Err(e) => panic!("the harness's name {s} does not parse: {e}"),
    }
}

/// An answer to the `rtype` question about [`NAME`].
fn answer(rtype: RecordType, code: ResponseCode, records: &[(&Name, u32, RData)]) -> Vec<u8> {
    let mut message = Message::new(0, MessageType::Response, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.metadata.recursion_available = true;
    message.metadata.authoritative = true;
    message.metadata.response_code = code;
    message.add_query(Query::query(name(NAME), rtype));
    for (owner, ttl, data) in records {
        message.add_answer(Record::from_rdata((*owner).clone(), *ttl, data.clone()));
    }
    match message.to_vec() {
        Ok(bytes) => bytes,
        Err(e) => panic!("a seed answer does not encode: {e}"),
    }
}

fn input(a: &[u8], aaaa: &[u8]) -> Vec<u8> {
    let len = u16::try_from(a.len()).unwrap_or(u16::MAX);
    let mut bytes = len.to_be_bytes().to_vec();
    bytes.extend_from_slice(a);
    bytes.extend_from_slice(aaaa);
    bytes
}
