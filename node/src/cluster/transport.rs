//! Where gossip travels: to the multicast group (the default, on a LAN), or
//! by unicast UDP to each member's address (`peers`), for networks that carry
//! no multicast. Datagrams are the same either way, and so are their checks
//! (the cluster key, the replay guard): only the addressing differs.
//!
//! In unicast each node receives on the UDP port of its own `listen`
//! address. It sends every datagram to each address in `peers` (names looked
//! up again every [`RESOLVE_EVERY`], so a machine may change its address)
//! and to the address each member was last heard from, so that a node whose
//! `peers` leaves some members out still reaches them once they have spoken.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use scs_common::config::NodeConfig;
use scs_common::{multicast, Error, NodeId, Result};

/// How often the names in `peers` are looked up again.
const RESOLVE_EVERY: Duration = Duration::from_secs(30);
/// How soon a lookup that failed is tried again.
const RESOLVE_RETRY: Duration = Duration::from_secs(2);
/// How long one lookup may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

pub enum Transport {
    Multicast { recv: UdpSocket, send: UdpSocket, group: SocketAddr },
    Unicast(Unicast),
}

pub struct Unicast {
    sock: UdpSocket,
    /// The addresses `peers` names, as last looked up.
    configured: Arc<Mutex<Vec<SocketAddr>>>,
    /// Where each member's last admitted datagram came from.
    learned: BTreeMap<NodeId, SocketAddr>,
    /// Our own address, never sent to.
    me: SocketAddr,
    /// Stops the lookups when the transport goes.
    resolver: CancellationToken,
}

impl Drop for Unicast {
    fn drop(&mut self) {
        self.resolver.cancel();
    }
}

impl Transport {
    /// Opens the sockets `cfg` asks for. Fails before anything is sent if
    /// the group cannot be joined or the UDP port is taken.
    pub fn open(cfg: &NodeConfig) -> Result<Transport> {
        if !cfg.unicast() {
            return Ok(Transport::Multicast {
                recv: multicast::receiver(cfg.group, cfg.iface)?,
                send: multicast::sender(cfg.iface)?,
                group: SocketAddr::V4(cfg.group),
            });
        }
        let std_sock = std::net::UdpSocket::bind(cfg.listen).map_err(|e| {
            Error::Config(format!("cannot receive gossip on UDP {} (the port of listen): {e}", cfg.listen))
        })?;
        std_sock.set_nonblocking(true)?;
        let sock = UdpSocket::from_std(std_sock)?;
        let configured = Arc::new(Mutex::new(Vec::new()));
        let resolver = CancellationToken::new();
        tokio::spawn(resolve(cfg.id, cfg.peers.clone(), cfg.listen, configured.clone(), resolver.clone()));
        Ok(Transport::Unicast(Unicast { sock, configured, learned: BTreeMap::new(), me: cfg.advertise, resolver }))
    }

    /// Says where gossip goes, for the start-up line of the log.
    pub fn describe(&self, cfg: &NodeConfig) -> String {
        match self {
            Transport::Multicast { group, .. } => format!("gossip on {group} via {}", cfg.iface),
            Transport::Unicast(_) => format!("gossip by unicast on UDP {} to {}", cfg.listen, cfg.peers.join(", ")),
        }
    }

    fn receiver(&self) -> &UdpSocket {
        match self {
            Transport::Multicast { recv, .. } => recv,
            Transport::Unicast(u) => &u.sock,
        }
    }

    pub async fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        self.receiver().recv_from(buf).await
    }

    pub fn try_recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        self.receiver().try_recv_from(buf)
    }

    /// Notes where an admitted datagram of member (or candidate) `id` came from, unless
    /// it is reached at an address of `peers` already: its `advertised`
    /// one (gossip uses the port of listen), where a node on a machine of
    /// several addresses may not send from.
    pub fn heard(&mut self, id: NodeId, from: SocketAddr, advertised: &str) {
        if let Transport::Unicast(u) = self {
            let configured = lock(&u.configured);
            if advertised.parse().is_ok_and(|a: SocketAddr| configured.contains(&a)) {
                drop(configured);
                u.learned.remove(&id);
            } else {
                drop(configured);
                u.learned.insert(id, from);
            }
        }
    }

    /// Stops sending to the address learnt for `id`.
    pub fn forget(&mut self, id: NodeId) {
        if let Transport::Unicast(u) = self {
            u.learned.remove(&id);
        }
    }

    /// Sends one datagram to every member (the group, or each address).
    /// Returns the first failure, naming its address, after trying every
    /// address.
    pub async fn send(&self, bytes: &[u8]) -> std::result::Result<(), String> {
        match self {
            Transport::Multicast { send, group, .. } => {
                send.send_to(bytes, group).await.map(|_| ()).map_err(|e| format!("to {group}: {e}"))
            }
            Transport::Unicast(u) => {
                let mut first_error = None;
                for to in u.targets() {
                    if let Err(e) = u.sock.send_to(bytes, to).await {
                        first_error.get_or_insert(format!("to {to}: {e}"));
                    }
                }
                first_error.map_or(Ok(()), Err)
            }
        }
    }
}

impl Unicast {
    /// Every address to send to, each once, ours left out.
    fn targets(&self) -> BTreeSet<SocketAddr> {
        let configured = lock(&self.configured).clone();
        let family = self.sock.local_addr().map(|a| a.is_ipv4()).unwrap_or(true);
        configured
            .into_iter()
            .chain(self.learned.values().copied())
            .filter(|a| a.is_ipv4() == family && *a != self.me)
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Looks up the addresses in `peers` now and every [`RESOLVE_EVERY`] (every
/// [`RESOLVE_RETRY`] while one fails), publishing them in `into`. A name
/// that fails keeps its last addresses. Each failure is logged once, until
/// the name resolves again.
async fn resolve(
    me: NodeId,
    peers: Vec<String>,
    listen: SocketAddr,
    into: Arc<Mutex<Vec<SocketAddr>>>,
    stop: CancellationToken,
) {
    let mut last: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
    let mut failing = BTreeSet::new();
    loop {
        for p in &peers {
            let found = match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(p.as_str())).await {
                Ok(Ok(addrs)) => Ok(addrs.filter(|a| a.is_ipv4() == listen.is_ipv4()).collect::<Vec<_>>()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer in {RESOLVE_TIMEOUT:?}")),
            };
            match found {
                Ok(addrs) if !addrs.is_empty() => {
                    if failing.remove(p) {
                        log::info!("node {me}: peer {p} resolves again, to {addrs:?}");
                    }
                    last.insert(p.clone(), addrs);
                }
                Ok(_) | Err(_) => {
                    if failing.insert(p.clone()) {
                        let why = found.err().unwrap_or_else(|| "no address of the family of listen".into());
                        log::warn!("node {me}: cannot look up peer {p}: {why}; trying again");
                    }
                }
            }
        }
        let all: BTreeSet<SocketAddr> = last.values().flatten().copied().collect();
        *lock(&into) = all.into_iter().collect();
        let pause = if failing.is_empty() { RESOLVE_EVERY } else { RESOLVE_RETRY };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scs_common::config::NodeSettings;

    fn unicast(id: u32, peers: &[&str]) -> NodeConfig {
        NodeConfig::resolve(NodeSettings {
            id: Some(id),
            cluster_size: Some(5),
            listen: Some("127.0.0.1:0".into()),
            peers: Some(peers.iter().map(|p| p.to_string()).collect()),
            ..Default::default()
        })
        .unwrap()
    }

    /// A transport on a free port, and that port's address.
    fn bound(id: u32, peers: &[&str]) -> (Transport, SocketAddr) {
        let t = Transport::open(&unicast(id, peers)).unwrap();
        let addr = t.receiver().local_addr().unwrap();
        (t, addr)
    }

    /// Waits (bounded) until the background lookup found some address.
    async fn wait_resolved(t: &Transport) {
        let Transport::Unicast(u) = t else { panic!("a unicast transport") };
        for _ in 0..500 {
            if !lock(&u.configured).is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no peer address resolved within 5 s");
    }

    async fn recv(t: &Transport) -> Vec<u8> {
        let mut buf = [0u8; 16];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), t.recv_from(&mut buf))
            .await
            .expect("a datagram within 5 s")
            .unwrap();
        buf[..n].to_vec()
    }

    #[tokio::test]
    async fn a_datagram_reaches_every_configured_peer_and_then_whoever_spoke() {
        let (b, b_addr) = bound(2, &["127.0.0.1:9"]);
        let (c, c_addr) = bound(3, &["127.0.0.1:9"]);
        let (mut a, _) = bound(1, &[&b_addr.to_string()]);
        wait_resolved(&a).await;
        a.send(b"one").await.unwrap();
        assert_eq!(recv(&b).await, b"one");
        assert!(c.try_recv_from(&mut [0u8; 16]).is_err(), "c is not a peer of a's, and was not heard from");
        // c is not in a's peers: it is sent to once a has heard from it.
        a.heard(NodeId(3), c_addr, &c_addr.to_string());
        // b, reached at its address in peers, is not learned again from
        // another source address (a machine of several addresses).
        let (d, d_addr) = bound(4, &["127.0.0.1:9"]);
        a.heard(NodeId(2), d_addr, &b_addr.to_string());
        a.send(b"two").await.unwrap();
        assert_eq!(recv(&c).await, b"two");
        assert_eq!(recv(&b).await, b"two");
        assert!(d.try_recv_from(&mut [0u8; 16]).is_err(), "b was sent to twice");
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_leaves_the_other_peers_reached() {
        let (b, b_addr) = bound(2, &["127.0.0.1:9"]);
        let (a, _) = bound(1, &["no-such-host.invalid:7000", &b_addr.to_string()]);
        wait_resolved(&a).await;
        a.send(b"x").await.unwrap();
        assert_eq!(recv(&b).await, b"x");
    }
}
