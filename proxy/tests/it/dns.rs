//! A small DNS server for the discovery tests: it answers A queries with the
//! IPv4 addresses of a list the test changes while it runs, AAAA queries with
//! the IPv6 ones (TTL 0, so every lookup asks again), and other types with an
//! empty NOERROR answer, as a cluster DNS does for a headless Service.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The addresses a [`dns_server`] answers with.
pub type Answers = Arc<Mutex<Vec<IpAddr>>>;

pub fn dns_answers(ips: impl IntoIterator<Item = impl Into<IpAddr>>) -> Answers {
    Arc::new(Mutex::new(ips.into_iter().map(Into::into).collect()))
}

/// Serves `answers` on a UDP port of 127.0.0.1; `address_queries` counts the
/// A and AAAA queries it answered.
pub async fn dns_server(answers: Answers, address_queries: Arc<AtomicUsize>) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind dns");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            if let Some((reply, is_address_query)) = answer(&buf[..n], &answers) {
                if is_address_query {
                    address_queries.fetch_add(1, Ordering::SeqCst);
                }
                let _ = socket.send_to(&reply, peer).await;
            }
        }
    });
    addr
}

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

/// The reply to `query`, and whether it asked for addresses; `None` for a
/// datagram that is not a whole question.
fn answer(query: &[u8], answers: &Answers) -> Option<(Vec<u8>, bool)> {
    if query.len() < 12 {
        return None;
    }
    // Skip the question name, then QTYPE and QCLASS.
    let mut pos = 12;
    while *query.get(pos)? != 0 {
        pos += 1 + usize::from(query[pos]);
    }
    let qtype = u16::from_be_bytes([*query.get(pos + 1)?, *query.get(pos + 2)?]);
    let question = query.get(12..pos + 5)?;
    let records: Vec<Vec<u8>> = answers
        .lock()
        .expect("answers")
        .iter()
        .filter_map(|ip| match (qtype, ip) {
            (TYPE_A, IpAddr::V4(v4)) => Some(v4.octets().to_vec()),
            (TYPE_AAAA, IpAddr::V6(v6)) => Some(v6.octets().to_vec()),
            _ => None,
        })
        .collect();
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query[..2]); // id
    out.extend_from_slice(&[0x81, 0x80]); // response, recursion available, NOERROR
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    for data in records {
        // A pointer to the question's name, the type, class IN, TTL 0.
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 0]);
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    Some((out, qtype == TYPE_A || qtype == TYPE_AAAA))
}
