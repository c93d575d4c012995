//! Binding listeners: `[::]` means both address families (dual-stack, with
//! `IPV6_V6ONLY` off), falling back to `0.0.0.0` where the kernel has no
//! IPv6; and the peer checks of the admin server.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// Pending connections the kernel queues per listener.
const BACKLOG: i32 = 1024;

/// Binds `addr`. An unspecified IPv6 address (`[::]:port`) listens on both
/// families; where IPv6 is missing (no IPv6 in the kernel, or disabled) it
/// falls back to `0.0.0.0:port`, so one setting works on IPv4-only,
/// dual-stack and IPv6-only nodes.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    bind_with(addr, bind_socket)
}

/// [`bind`] with the socket binding passed in, so tests can make the IPv6
/// attempt fail as it does on a kernel without IPv6.
pub fn bind_with(
    addr: SocketAddr,
    bind_one: impl Fn(SocketAddr) -> io::Result<std::net::TcpListener>,
) -> io::Result<TcpListener> {
    let listener = match bind_one(addr) {
        Ok(l) => l,
        Err(e) if is_any_v6(addr) && !blocks_any_family(&e) => {
            let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port());
            tracing::info!(%addr, error = %e, fallback = %v4, "no IPv6 here; listening on IPv4 only");
            bind_one(v4)?
        }
        Err(e) => return Err(e),
    };
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

fn is_any_v6(addr: SocketAddr) -> bool {
    matches!(addr.ip(), IpAddr::V6(ip) if ip.is_unspecified())
}

/// Errors that IPv4 would hit as well: no point in falling back.
fn blocks_any_family(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
    )
}

/// One socket: `SO_REUSEADDR` (as tokio sets it: a restarted proxy rebinds
/// while old connections linger in TIME_WAIT), dual-stack for `[::]`.
pub fn bind_socket(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if is_any_v6(addr) {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Whether a peer is on this host's loopback. A dual-stack listener sees
/// IPv4 peers as IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`), which
/// `Ipv6Addr::is_loopback` does not count as loopback.
pub fn is_loopback_peer(peer: IpAddr) -> bool {
    peer.to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    #[test]
    fn loopback_peers_include_ipv4_mapped_ones() {
        for ip in ["127.0.0.1", "127.0.0.9", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback_peer(ip.parse().expect("ip")), "{ip}");
        }
        for ip in [
            "10.0.0.7",
            "fd00::2",
            "::ffff:10.0.0.7",
            "0.0.0.0",
            "::",
            "fe80::1",
        ] {
            assert!(!is_loopback_peer(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[tokio::test]
    async fn any_v6_falls_back_to_ipv4_without_ipv6() {
        let no_ipv6 = |a: SocketAddr| {
            if a.is_ipv6() {
                // EAFNOSUPPORT, what socket(AF_INET6) answers without IPv6.
                Err(io::Error::from_raw_os_error(97))
            } else {
                bind_socket(a)
            }
        };
        let l = bind_with("[::]:0".parse().expect("addr"), no_ipv6).expect("falls back");
        let addr = l.local_addr().expect("addr");
        assert_eq!(addr.ip(), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        tokio::net::TcpStream::connect(("127.0.0.1", addr.port()))
            .await
            .expect("IPv4 reaches the fallback");
        // A specific IPv6 address does not fall back: it is not "anywhere".
        assert!(bind_with("[::1]:0".parse().expect("addr"), no_ipv6).is_err());
        // Nor does a port in use, which IPv4 would hit too.
        let in_use = |_: SocketAddr| Err(io::Error::from(io::ErrorKind::AddrInUse));
        assert!(bind_with("[::]:0".parse().expect("addr"), in_use).is_err());
    }

    #[tokio::test]
    async fn any_v6_is_dual_stack() {
        if std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_err() {
            eprintln!("no IPv6 loopback here; the fallback test covers this host");
            return;
        }
        let l = bind("[::]:0".parse().expect("addr")).expect("binds");
        let port = l.local_addr().expect("addr").port();
        assert!(l.local_addr().expect("addr").is_ipv6());
        for peer in ["127.0.0.1", "::1"] {
            let ip: IpAddr = peer.parse().expect("ip");
            tokio::net::TcpStream::connect((ip, port))
                .await
                .unwrap_or_else(|e| panic!("{peer} reaches [::]: {e}"));
            let (_, from) = l.accept().await.expect("accept");
            assert!(is_loopback_peer(from.ip()), "{from}");
        }
    }
}
