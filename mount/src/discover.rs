//! Finding the leader: listen to the cluster's authenticated heartbeats on
//! the multicast group, or, where there is no multicast (cloud networks,
//! VPNs), ask known nodes for their status and learn the other members from
//! their answers. Either way the result is one [`Hearing`]: which node leads
//! and serves. The failover logic built on it lives in the client.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use scs_common::auth::ClusterKey;
use scs_common::conn::Connection;
use scs_common::multicast;
use scs_common::proto::gossip::{self, Gossip, ReplayGuard, Role, MAX_DATAGRAM};
use scs_common::proto::rpc::{Message, Peer, Request, Response, StatusReport};
use scs_common::{Error, NodeId, Result, Term};

/// A node's last heartbeat, as heard by the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heard {
    pub id: NodeId,
    pub addr: String,
    pub term: Term,
    pub role: Role,
    /// Leads, has caught up and has a quorum.
    pub ready: bool,
    pub at: Instant,
}

/// What the listener or the poller has heard so far.
#[derive(Clone, Debug, Default)]
pub struct Hearing {
    pub nodes: HashMap<NodeId, Heard>,
    /// Datagrams, or status polls, that failed authentication (another key).
    pub rejected: u64,
    /// The cluster size the nodes announce.
    pub cluster_size: u32,
    /// Polling only: the addresses to ask, those configured first, then the
    /// members' addresses learned from their answers.
    pub known: Vec<String>,
    /// Polling only: the last refusal of a polled address that speaks
    /// another protocol (another version of SCS, or not SCS at all).
    pub mismatch: Option<String>,
}

/// Heartbeats older than this do not count.
const FRESH: Duration = Duration::from_millis(1500);
/// How often the poller asks each known address for its status.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// How long one status poll may take, a new session's handshake included.
const POLL_TIMEOUT: Duration = Duration::from_secs(1);
/// Addresses polled at most: the members of a cluster, with room for
/// addresses that changed; no answer can make a client poll more.
const MAX_KNOWN: usize = 64;
/// Only refusals (another key, another protocol) for this long: waiting
/// longer will not change that.
const REFUSED_FOR: Duration = Duration::from_secs(1);

impl Hearing {
    /// The serving leader with the highest term, else any node that says it leads.
    pub fn leader(&self, now: Instant) -> Option<&Heard> {
        let fresh = || self.nodes.values().filter(move |h| now.duration_since(h.at) < FRESH);
        fresh()
            .filter(|h| h.role == Role::Leader && h.ready)
            .max_by_key(|h| (h.term, h.id))
            .or_else(|| fresh().filter(|h| h.role == Role::Leader).max_by_key(|h| (h.term, h.id)))
    }

    /// A serving leader to go to instead of the node at `peer`, which has
    /// gone silent (died, froze, or was cut off from us): `None` while
    /// `peer` is still heard, or while no other node serves.
    pub fn replacement_for(&self, peer: SocketAddr, now: Instant) -> Option<&Heard> {
        let at_peer = |h: &Heard| h.addr.parse::<SocketAddr>().is_ok_and(|a| a == peer);
        if self.nodes.values().any(|h| at_peer(h) && now.duration_since(h.at) < FRESH) {
            return None;
        }
        self.leader(now).filter(|l| l.ready && !at_peer(l))
    }

    /// Every node heard, in the order to ask them: fresh before silent, a
    /// serving leader first, then leaders, then the highest term and id.
    pub fn by_preference(&self, now: Instant) -> Vec<Heard> {
        let mut all: Vec<Heard> = self.nodes.values().cloned().collect();
        all.sort_by_key(|h| {
            let fresh = now.duration_since(h.at) < FRESH;
            let leads = h.role == Role::Leader;
            std::cmp::Reverse((fresh, leads && h.ready, leads, h.term, h.id))
        });
        all
    }

    /// Takes in the status the node reached at `addr` reported: it is heard
    /// (leading and serving when it leads with a quorum), and the members it
    /// names are asked from now on. A node already heard at another address
    /// keeps that one while it answers there, so that its address does not
    /// flap between two polls (its own address and, say, the one a NAT shows).
    pub fn record(&mut self, addr: &str, report: &StatusReport, now: Instant) {
        let id = report.node;
        let elsewhere = self.nodes.get(&id).is_some_and(|h| h.addr != addr && now.duration_since(h.at) < FRESH);
        if !elsewhere {
            let leads = report.leader == Some(id);
            let own = report.nodes.iter().find(|n| n.id == id).and_then(|n| n.role);
            let role = own.unwrap_or(if leads { Role::Leader } else { Role::Follower });
            let heard =
                Heard { id, addr: addr.to_string(), term: report.term, role, ready: leads && report.quorum, at: now };
            self.nodes.insert(id, heard);
            self.cluster_size = report.cluster_size;
        }
        for member in report.nodes.iter().filter(|n| n.id != id && !n.addr.is_empty()) {
            let asked = self.known.contains(&member.addr) || self.nodes.values().any(|h| h.addr == member.addr);
            if !asked && self.known.len() < MAX_KNOWN {
                self.known.push(member.addr.clone());
            }
        }
    }

    /// Nothing heard, only refusals, since `started` and for a while: another
    /// key or another protocol, which waiting will not change.
    fn only_refusals(&self, started: Instant) -> bool {
        self.nodes.is_empty() && (self.rejected >= 3 || self.mismatch.is_some()) && started.elapsed() > REFUSED_FOR
    }

    /// Why no leader can be found among the nodes heard (some were).
    fn no_leader(&self, now: Instant) -> Error {
        let mut ids: Vec<_> =
            self.nodes.values().filter(|n| now.duration_since(n.at) < FRESH).map(|n| n.id.0).collect();
        ids.sort();
        let up: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        let need = self.cluster_size / 2 + 1;
        if (ids.len() as u32) < need {
            Error::Unavailable(format!(
                "only node(s) {} of {} are up; a leader needs a majority ({need})",
                up.join(", "),
                self.cluster_size
            ))
        } else {
            Error::Unavailable(format!("no leader elected yet among nodes {}", up.join(", ")))
        }
    }
}

/// Where a [`Discovery`] hears the cluster from.
#[derive(Clone, Debug)]
enum Source {
    /// The nodes' heartbeats on a multicast group, joined on an interface.
    Group { group: SocketAddrV4, iface: Ipv4Addr },
    /// Status polls of the addresses in [`Hearing::known`].
    Polls,
}

/// A background listener on the group, or poller of known nodes.
pub struct Discovery {
    rx: watch::Receiver<Hearing>,
    task: JoinHandle<()>,
    source: Source,
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Discovery {
    /// Joins the group and starts listening.
    ///
    /// # Errors
    /// `Config` if the group cannot be joined on that interface.
    pub fn listen(group: SocketAddrV4, iface: Ipv4Addr, key: Arc<ClusterKey>) -> Result<Discovery> {
        let sock = multicast::receiver(group, iface)?;
        let (tx, rx) = watch::channel(Hearing::default());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM + 1];
            let mut guard = ReplayGuard::new(30_000);
            loop {
                let Ok((n, _)) = sock.recv_from(&mut buf).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let env = match gossip::decode(&key, &buf[..n]) {
                    Ok(env) => env,
                    Err(_) => {
                        tx.send_modify(|h| h.rejected += 1);
                        continue;
                    }
                };
                if !guard.admit(&env, now_ms()) {
                    continue;
                }
                let size = env.cluster_size;
                if let Gossip::Heartbeat(hb) = env.msg {
                    let heard = Heard {
                        id: env.from,
                        addr: env.info.addr,
                        term: hb.term,
                        role: hb.role,
                        ready: env.info.ready,
                        at: Instant::now(),
                    };
                    tx.send_modify(|h| {
                        h.nodes.insert(heard.id, heard);
                        h.cluster_size = size;
                    });
                }
            }
        });
        Ok(Discovery { rx, task, source: Source::Group { group, iface } })
    }

    /// Starts asking `nodes` (HOST:PORT), and every member they name, for
    /// their status, each every [`POLL_EVERY`] on a session of its own that
    /// stays open between polls. One node that answers is enough to find
    /// them all; a node that stops answering ages out as a silent one does.
    pub fn poll(nodes: Vec<String>, key: Arc<ClusterKey>) -> Discovery {
        let mut known = Vec::new();
        for n in nodes {
            if !known.contains(&n) {
                known.push(n);
            }
        }
        let tx = Arc::new(watch::Sender::new(Hearing { known, ..Hearing::default() }));
        let rx = tx.subscribe();
        let task = tokio::spawn(poll_all(tx, key));
        Discovery { rx, task, source: Source::Polls }
    }

    /// Everything heard so far.
    pub fn heard(&self) -> Hearing {
        self.rx.borrow().clone()
    }

    /// A handle that can wait for the leader at an address to be replaced.
    pub fn watch(&self) -> LeaderWatch {
        LeaderWatch { rx: self.rx.clone() }
    }

    /// Waits until a leader is heard (a serving one preferred), up to `deadline`.
    ///
    /// # Errors
    /// `Unavailable` saying what was heard instead (nothing, other keys, no leader).
    pub async fn leader(&self, deadline: Instant) -> Result<Heard> {
        let mut rx = self.rx.clone();
        let started = Instant::now();
        loop {
            {
                let h = rx.borrow_and_update();
                if h.only_refusals(started) {
                    drop(h);
                    return Err(self.explain());
                }
                if let Some(l) = h.leader(Instant::now()) {
                    // Prefer a serving leader; give an unready one a moment.
                    if l.ready || Instant::now() + Duration::from_millis(300) >= deadline {
                        return Ok(l.clone());
                    }
                }
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return Err(self.explain());
            }
            let _ = tokio::time::timeout(wait.min(Duration::from_millis(100)), rx.changed()).await;
        }
    }

    /// Waits until something new is heard, or `until`.
    pub async fn changed(&self, until: Instant) {
        let mut rx = self.rx.clone();
        rx.mark_unchanged();
        let _ = tokio::time::timeout(until.saturating_duration_since(Instant::now()), rx.changed()).await;
    }

    /// Nothing but refusals (another key, another protocol) heard since
    /// `started`, for long enough to say so: then why, else `None`.
    pub fn refused_since(&self, started: Instant) -> Option<Error> {
        // One borrow at a time: a second one while a sender waits could deadlock.
        let refused = self.rx.borrow().only_refusals(started);
        refused.then(|| self.explain())
    }

    /// Why no leader can be found, from what was heard.
    pub fn explain(&self) -> Error {
        explain(&self.source, &self.rx.borrow(), Instant::now())
    }
}

/// Why no leader can be found, from what `source` let us hear by `now`.
fn explain(source: &Source, h: &Hearing, now: Instant) -> Error {
    if !h.nodes.is_empty() {
        return h.no_leader(now);
    }
    match source {
        Source::Group { group, .. } if h.rejected > 0 => {
            Error::Auth(format!("nodes on group {group} use a different cluster key (check --secret-file)"))
        }
        Source::Group { group, iface } => Error::Unavailable(format!(
            "no node heard on group {group} via {iface} (is the cluster running, with this --group and --iface? \
             On a network without multicast, name the nodes with --node)"
        )),
        Source::Polls if h.rejected > 0 => {
            Error::Auth(format!("nodes at {} use a different cluster key (check --secret-file)", h.known.join(", ")))
        }
        Source::Polls => match &h.mismatch {
            Some(why) => Error::Protocol(why.clone()),
            None => Error::Unavailable(format!(
                "no node answered at {} (is the cluster running and reachable?)",
                h.known.join(", ")
            )),
        },
    }
}

/// The poller: one task per known address, and a new one for each address
/// learned, until the [`Discovery`] is dropped (which drops the tasks too).
async fn poll_all(tx: Arc<watch::Sender<Hearing>>, key: Arc<ClusterKey>) {
    let mut rx = tx.subscribe();
    let mut asked = HashSet::new();
    let mut pollers = JoinSet::new();
    loop {
        let known = rx.borrow_and_update().known.clone();
        for addr in known.into_iter().filter(|a| asked.insert(a.clone())) {
            log::debug!("asking {addr} for the cluster's status");
            pollers.spawn(poll_one(addr, key.clone(), tx.clone()));
        }
        // The sender lives in this task: changes end only with it.
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Asks the node at `addr` for its status every [`POLL_EVERY`], forever,
/// on one session kept open between polls (a handshake costs the node more
/// than a status does) and dropped on any error.
async fn poll_one(addr: String, key: Arc<ClusterKey>, tx: Arc<watch::Sender<Hearing>>) {
    let mut session = None;
    loop {
        let asked = tokio::time::timeout(POLL_TIMEOUT, ask_status(&mut session, &addr, &key)).await;
        match asked {
            Ok(Ok((at, report))) => tx.send_modify(|h| h.record(&at, &report, Instant::now())),
            Ok(Err(e)) => {
                log::trace!("status poll of {addr}: {e}");
                session = None;
                match e {
                    Error::Auth(_) => tx.send_modify(|h| h.rejected += 1),
                    Error::Protocol(m) => {
                        let m = if m.contains(addr.as_str()) { m } else { format!("{addr}: {m}") };
                        tx.send_modify(|h| h.mismatch = Some(m))
                    }
                    _ => {}
                }
            }
            // Cut off in the middle of an exchange: the session is out of step.
            Err(_) => session = None,
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// One status poll of `addr` on `session`, opened first if need be: the
/// address the node answered at (as the client's sessions see it, so that
/// [`Hearing::replacement_for`] recognises it) and its report.
async fn ask_status(session: &mut Option<Connection>, addr: &str, key: &ClusterKey) -> Result<(String, StatusReport)> {
    let conn = match session {
        Some(conn) => conn,
        None => session.insert(Connection::connect(addr, key, Peer::Client, POLL_TIMEOUT).await?.0),
    };
    conn.send(&Message::Request(Request::Status)).await?;
    match conn.recv_response().await? {
        Response::Status(report) => Ok((conn.peer_addr().to_string(), report)),
        other => Err(Error::Protocol(format!("a status poll was answered with {other:?}"))),
    }
}

/// Watches the heartbeats for a leader that has gone silent.
#[derive(Clone)]
pub struct LeaderWatch {
    rx: watch::Receiver<Hearing>,
}

impl LeaderWatch {
    /// A serving leader other than `peer`, if `peer` has gone silent.
    pub fn replacement_for(&self, peer: SocketAddr) -> Option<Heard> {
        self.rx.borrow().replacement_for(peer, Instant::now()).cloned()
    }

    /// Resolves once the leader at `peer` has gone silent and another node
    /// serves: work waiting on `peer` is then better done again there.
    /// Never resolves otherwise.
    pub async fn replaced(mut self, peer: SocketAddr) -> Heard {
        loop {
            if let Some(l) = self.rx.borrow_and_update().replacement_for(peer, Instant::now()) {
                return l.clone();
            }
            // Heartbeats arrive every few hundred milliseconds at most; a
            // silent node also ages out without one, so look again anyway
            // (also once the listener is gone: waiting, not spinning).
            let look = Duration::from_millis(250);
            if let Ok(Err(_)) = tokio::time::timeout(look, self.rx.changed()).await {
                tokio::time::sleep(look).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heard(id: u32, term: u64, role: Role, ready: bool, at: Instant) -> Heard {
        Heard { id: NodeId(id), addr: format!("127.0.0.1:{id}"), term: Term(term), role, ready, at }
    }

    #[test]
    fn the_serving_leader_of_the_highest_term_is_chosen() {
        let now = Instant::now();
        let mut h = Hearing::default();
        for x in [
            heard(1, 5, Role::Follower, false, now),
            heard(2, 5, Role::Leader, true, now),
            heard(3, 6, Role::Leader, false, now),
        ] {
            h.nodes.insert(x.id, x);
        }
        assert_eq!(h.leader(now).unwrap().id, NodeId(2), "a leader still catching up is not preferred");
        h.nodes.get_mut(&NodeId(3)).unwrap().ready = true;
        assert_eq!(h.leader(now).unwrap().id, NodeId(3));
    }

    #[test]
    fn nodes_are_asked_serving_leader_first_and_silent_ones_last() {
        let now = Instant::now();
        let mut h = Hearing::default();
        for x in [
            heard(1, 5, Role::Follower, false, now),
            heard(2, 6, Role::Leader, true, now - Duration::from_secs(3)),
            heard(3, 5, Role::Leader, true, now),
            heard(4, 6, Role::Leader, false, now),
            heard(5, 5, Role::Follower, false, now),
        ] {
            h.nodes.insert(x.id, x);
        }
        let order: Vec<u32> = h.by_preference(now).iter().map(|h| h.id.0).collect();
        assert_eq!(order, [3, 4, 5, 1, 2]);
    }

    #[test]
    fn a_silent_leader_is_replaced_only_once_another_node_serves() {
        let now = Instant::now();
        let peer: SocketAddr = "127.0.0.1:3".parse().unwrap();
        let mut h = Hearing::default();
        let frozen = heard(3, 6, Role::Leader, true, now - Duration::from_secs(2));
        h.nodes.insert(frozen.id, frozen);
        assert!(h.replacement_for(peer, now).is_none(), "nobody else serves yet");
        let candidate = heard(2, 7, Role::Leader, false, now);
        h.nodes.insert(candidate.id, candidate);
        assert!(h.replacement_for(peer, now).is_none(), "the new leader is still catching up");
        h.nodes.get_mut(&NodeId(2)).unwrap().ready = true;
        assert_eq!(h.replacement_for(peer, now).unwrap().id, NodeId(2));
        // A leader still heard is not replaced, even by one of a newer term
        // (it answers for itself: not the leader any more).
        h.nodes.get_mut(&NodeId(3)).unwrap().at = now;
        assert!(h.replacement_for(peer, now).is_none());
    }

    /// What node `me` of three answers to a status poll; members with an
    /// address at 10.0.0.ID:7781.
    fn report(me: u32, leader: Option<u32>, quorum: bool, term: u64) -> StatusReport {
        use scs_common::proto::rpc::NodeStatus;
        let role = |id| match leader {
            Some(l) if l == id => Role::Leader,
            _ => Role::Follower,
        };
        let nodes = (1..=3)
            .map(|id| NodeStatus {
                id: NodeId(id),
                addr: format!("10.0.0.{id}:7781"),
                alive: true,
                role: Some(role(id)),
                files: 0,
                max_files: None,
                disk_free: 0,
                disk_total: 0,
                wanted: 0,
                corrupt: 0,
                state: Default::default(),
                bytes: 0,
                trash_bytes: 0,
            })
            .collect();
        StatusReport {
            node: NodeId(me),
            leader: leader.map(NodeId),
            term: Term(term),
            quorum,
            cluster_size: 3,
            replicas: 3,
            nodes,
            under_replicated: 0,
            candidates: Vec::new(),
            moving: Default::default(),
        }
    }

    fn polling(known: &[&str]) -> Hearing {
        Hearing { known: known.iter().map(|k| k.to_string()).collect(), ..Hearing::default() }
    }

    #[test]
    fn a_polled_leader_serves_only_with_a_quorum() {
        let now = Instant::now();
        let mut h = polling(&["10.0.0.3:7781"]);
        h.record("10.0.0.3:7781", &report(3, Some(3), false, 4), now);
        let heard = h.nodes[&NodeId(3)].clone();
        assert_eq!(
            heard,
            Heard {
                id: NodeId(3),
                addr: "10.0.0.3:7781".into(),
                term: Term(4),
                role: Role::Leader,
                ready: false,
                at: now
            }
        );
        h.record("10.0.0.3:7781", &report(3, Some(3), true, 4), now);
        assert!(h.leader(now).unwrap().ready);
        assert_eq!(h.cluster_size, 3);
    }

    #[test]
    fn a_polled_follower_is_heard_as_one_and_never_as_the_leader_it_names() {
        let now = Instant::now();
        let mut h = polling(&["10.0.0.1:7781"]);
        // It reports a leader with a quorum: that says nothing of itself.
        h.record("10.0.0.1:7781", &report(1, Some(3), true, 4), now);
        assert_eq!(h.nodes.len(), 1, "only the node that answered is heard: {h:?}");
        let heard = &h.nodes[&NodeId(1)];
        assert_eq!((heard.role, heard.ready), (Role::Follower, false));
        assert!(h.leader(now).is_none());
    }

    #[test]
    fn the_members_a_polled_node_names_are_asked_from_then_on() {
        let now = Instant::now();
        let mut h = polling(&["127.0.0.1:9", "10.0.0.1:7781"]);
        h.record("10.0.0.1:7781", &report(1, Some(3), true, 4), now);
        assert_eq!(h.known, ["127.0.0.1:9", "10.0.0.1:7781", "10.0.0.2:7781", "10.0.0.3:7781"]);
        // Learning them again adds nothing.
        h.record("10.0.0.3:7781", &report(3, Some(3), true, 4), now);
        assert_eq!(h.known.len(), 4);
        assert_eq!(h.leader(now).unwrap().id, NodeId(3));
    }

    #[test]
    fn a_node_answering_at_a_second_address_keeps_the_first_while_it_answers() {
        let now = Instant::now();
        let mut h = polling(&["node-3.example:7781"]);
        h.record("192.168.1.3:7781", &report(3, Some(3), true, 4), now);
        h.record("10.0.0.3:7781", &report(3, Some(3), true, 4), now);
        assert_eq!(h.nodes[&NodeId(3)].addr, "192.168.1.3:7781");
        // Once the first address falls silent, the second one counts.
        let later = now + Duration::from_secs(2);
        h.record("10.0.0.3:7781", &report(3, Some(3), true, 4), later);
        assert_eq!(h.nodes[&NodeId(3)].addr, "10.0.0.3:7781");
    }

    #[test]
    fn polling_explains_silence_other_keys_and_other_protocols_naming_the_addresses() {
        let now = Instant::now();
        let mut h = polling(&["10.0.0.1:7000", "10.0.0.2:7000"]);
        assert_eq!(
            explain(&Source::Polls, &h, now).to_string(),
            "cluster unavailable: no node answered at 10.0.0.1:7000, 10.0.0.2:7000 \
             (is the cluster running and reachable?)"
        );
        h.mismatch = Some("10.0.0.2:7000: protocol version 9 is not supported".into());
        assert_eq!(
            explain(&Source::Polls, &h, now),
            Error::Protocol("10.0.0.2:7000: protocol version 9 is not supported".into())
        );
        h.rejected = 1;
        assert_eq!(
            explain(&Source::Polls, &h, now).to_string(),
            "authentication failed: nodes at 10.0.0.1:7000, 10.0.0.2:7000 use a different cluster key \
             (check --secret-file)"
        );
        // Once a node answers, what it says is the story.
        h.record("10.0.0.1:7000", &report(1, None, false, 4), now);
        assert_eq!(
            explain(&Source::Polls, &h, now).to_string(),
            "cluster unavailable: only node(s) 1 of 3 are up; a leader needs a majority (2)"
        );
    }

    #[test]
    fn refusals_end_the_wait_only_when_nothing_else_was_heard_for_a_while() {
        let long_ago = Instant::now() - Duration::from_secs(2);
        let mut h = polling(&["10.0.0.1:7000"]);
        assert!(!h.only_refusals(long_ago), "silence may yet end");
        h.rejected = 3;
        assert!(h.only_refusals(long_ago));
        assert!(!h.only_refusals(Instant::now()), "give the others a moment");
        h.record("10.0.0.1:7000", &report(1, None, false, 4), Instant::now());
        assert!(!h.only_refusals(long_ago), "a node answered under our key");
    }

    #[test]
    fn a_silent_leader_is_forgotten() {
        let now = Instant::now();
        let mut h = Hearing::default();
        let old = heard(3, 6, Role::Leader, true, now);
        h.nodes.insert(old.id, old);
        assert!(h.leader(now + Duration::from_secs(2)).is_none());
    }
}
