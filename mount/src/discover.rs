//! Finding the leader: listen to the cluster's authenticated heartbeats on
//! the multicast group and remember which node leads and serves.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use scs_common::auth::ClusterKey;
use scs_common::multicast;
use scs_common::proto::gossip::{self, Gossip, ReplayGuard, Role, MAX_DATAGRAM};
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

/// What the listener has heard so far.
#[derive(Clone, Debug, Default)]
pub struct Hearing {
    pub nodes: HashMap<NodeId, Heard>,
    /// Datagrams that failed authentication (another key on this group).
    pub rejected: u64,
    /// The cluster size the nodes announce.
    pub cluster_size: u32,
}

/// Heartbeats older than this do not count.
const FRESH: Duration = Duration::from_millis(1500);

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
}

/// A background listener on the group.
pub struct Discovery {
    rx: watch::Receiver<Hearing>,
    task: JoinHandle<()>,
    group: SocketAddrV4,
    iface: Ipv4Addr,
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
    pub fn start(group: SocketAddrV4, iface: Ipv4Addr, key: Arc<ClusterKey>) -> Result<Discovery> {
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
        Ok(Discovery { rx, task, group, iface })
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
                // Only datagrams under another key for a second: that is not
                // going to change by waiting.
                if h.nodes.is_empty() && h.rejected >= 3 && started.elapsed() > Duration::from_secs(1) {
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

    /// Why no leader can be found, from what was heard.
    pub fn explain(&self) -> Error {
        let h = self.rx.borrow();
        let (g, i) = (self.group, self.iface);
        if h.nodes.is_empty() && h.rejected > 0 {
            Error::Auth(format!("nodes on group {g} use a different cluster key (check --secret-file)"))
        } else if h.nodes.is_empty() {
            Error::Unavailable(format!(
                "no node heard on group {g} via {i} (is the cluster running, with this --group and --iface?)"
            ))
        } else {
            let now = Instant::now();
            let mut ids: Vec<_> =
                h.nodes.values().filter(|n| now.duration_since(n.at) < FRESH).map(|n| n.id.0).collect();
            ids.sort();
            let up: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
            let need = h.cluster_size / 2 + 1;
            if (ids.len() as u32) < need {
                Error::Unavailable(format!(
                    "only node(s) {} of {} are up; a leader needs a majority ({need})",
                    up.join(", "),
                    h.cluster_size
                ))
            } else {
                Error::Unavailable(format!("no leader elected yet among nodes {}", up.join(", ")))
            }
        }
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

    #[test]
    fn a_silent_leader_is_forgotten() {
        let now = Instant::now();
        let mut h = Hearing::default();
        let old = heard(3, 6, Role::Leader, true, now);
        h.nodes.insert(old.id, old);
        assert!(h.leader(now + Duration::from_secs(2)).is_none());
    }
}
