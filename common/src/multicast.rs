//! Multicast sockets for gossip: a receiver joined to the group on one
//! interface (several on one machine share the port), and a sender pinned to
//! that interface with TTL 1, so nothing leaves the link it is meant for.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::error::{Error, Result};

/// Multicast TTL: datagrams never cross a router.
pub const TTL: u32 = 1;

/// A socket that receives the group's datagrams on `iface`.
///
/// # Errors
/// `Config` when the group cannot be joined on that interface.
pub fn receiver(group: SocketAddrV4, iface: Ipv4Addr) -> Result<UdpSocket> {
    let fail = |what: &str, e: std::io::Error| {
        Error::Config(format!("cannot {what} multicast group {group} on interface {iface}: {e}"))
    };
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(|e| fail("open a socket for", e))?;
    s.set_reuse_address(true).map_err(|e| fail("share", e))?;
    s.set_reuse_port(true).map_err(|e| fail("share", e))?;
    // Bound to the group address, the socket sees only this group's datagrams.
    s.bind(&SocketAddr::V4(group).into()).map_err(|e| fail("bind to", e))?;
    s.join_multicast_v4(group.ip(), &iface).map_err(|e| fail("join", e))?;
    s.set_nonblocking(true).map_err(|e| fail("set up", e))?;
    UdpSocket::from_std(s.into()).map_err(|e| fail("register", e))
}

/// A socket that sends to the group out of `iface` only, with TTL 1.
pub fn sender(iface: Ipv4Addr) -> Result<UdpSocket> {
    let fail = |e: std::io::Error| Error::Config(format!("cannot send multicast on interface {iface}: {e}"));
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(fail)?;
    s.set_multicast_if_v4(&iface).map_err(fail)?;
    s.set_multicast_ttl_v4(TTL).map_err(fail)?;
    // Other nodes on this machine must hear us too.
    s.set_multicast_loop_v4(true).map_err(fail)?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(iface, 0)).into()).map_err(fail)?;
    s.set_nonblocking(true).map_err(fail)?;
    UdpSocket::from_std(s.into()).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_receivers_on_one_machine_both_hear_a_datagram() {
        let group: SocketAddrV4 =
            format!("239.255.91.{}:{}", 1 + std::process::id() % 250, 20000 + std::process::id() % 20000)
                .parse()
                .unwrap();
        let a = receiver(group, Ipv4Addr::LOCALHOST).unwrap();
        let b = receiver(group, Ipv4Addr::LOCALHOST).unwrap();
        let tx = sender(Ipv4Addr::LOCALHOST).unwrap();
        tx.send_to(b"hello", group).await.unwrap();
        let mut buf = [0u8; 16];
        for r in [a, b] {
            let (n, _) = tokio::time::timeout(std::time::Duration::from_secs(5), r.recv_from(&mut buf))
                .await
                .expect("datagram arrives")
                .unwrap();
            assert_eq!(&buf[..n], b"hello");
        }
    }
}
