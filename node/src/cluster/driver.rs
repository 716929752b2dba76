//! The thin async shell around the election machine: owns the gossip
//! transport (multicast or unicast) and the timer, feeds datagrams, deadlines and control requests to
//! [`Election::step`], sends what it asks, and publishes a [`ClusterView`]
//! after every step.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use scs_common::auth::ClusterKey;
use scs_common::config::NodeConfig;
use scs_common::proto::gossip::{self, Envelope, Gossip, NodeInfo, ReplayGuard, Role, MAX_DATAGRAM};
use scs_common::{Members, NodeId, Result, Term, Version};

use crate::cluster::election::{Action, Election, ElectionConfig, Input};
use crate::cluster::transport::Transport;
use crate::link::{members_in_force, Control, Health, Lease};
use crate::store::Store;
use crate::view::{ClusterView, Member};

/// Candidates remembered at most; past it the one heard longest ago goes.
const MAX_CANDIDATES: usize = 64;

/// Datagrams older or newer than this (by the sender's clock) are dropped.
const REPLAY_WINDOW_MS: u64 = 30_000;
/// How long the node's runtime may go without running its tasks before the
/// driver, on a thread of its own, stops speaking for it. Far above the
/// stalls a busy disk causes (the lease lapsed on those when the driver
/// shared the runtime), far below forever.
const RUNTIME_STUCK: Duration = Duration::from_secs(3);

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Counters of datagrams dropped, for the logs and tests.
#[derive(Debug, Default)]
struct Dropped {
    bad: u64,
    replayed: u64,
    foreign: u64,
    late: u64,
    /// Datagrams we could not send.
    unsent: u64,
    /// Datagrams not sent while the node's runtime was stuck.
    stuck: u64,
    /// Datagrams with this node's id from another address: a second node
    /// runs with the same id.
    twin: u64,
}

/// Tells datagrams that arrive late from ones sent late, without assuming
/// synchronized clocks: for each sender it keeps the smallest (our clock −
/// its timestamp) seen, which is its clock offset plus the fastest delivery,
/// and calls a datagram late when it took `limit_ms` longer than that.
/// A queue that built up while we were paused drains in a burst of
/// milliseconds; a sender whose clock was stepped back keeps looking late
/// for as long as it sends, so after a second of that the baseline moves.
#[derive(Debug)]
struct Delays {
    limit_ms: i64,
    /// Per sender: the baseline delay, and since when (our clock) it has looked late.
    base: std::collections::HashMap<NodeId, (i64, Option<u64>)>,
}

impl Delays {
    fn new(limit: Duration) -> Delays {
        Delays { limit_ms: limit.as_millis() as i64, base: Default::default() }
    }

    fn is_late(&mut self, from: NodeId, sent_ms: u64, now_ms: u64) -> bool {
        let delay = now_ms as i64 - sent_ms as i64;
        let slot = self.base.entry(from).or_insert((delay, None));
        if delay <= slot.0 {
            *slot = (delay, None);
            return false;
        }
        if delay - slot.0 <= self.limit_ms {
            slot.1 = None;
            return false;
        }
        let since = *slot.1.get_or_insert(now_ms);
        if now_ms.saturating_sub(since) > 1000 {
            // Late for a whole second of steady arrivals: the clock moved.
            *slot = (delay, None);
            return false;
        }
        true
    }
}

pub struct Driver {
    cfg: NodeConfig,
    key: ClusterKey,
    store: Arc<Store>,
    machine: Election,
    transport: Transport,
    guard: ReplayGuard,
    incarnation: u64,
    seq: u64,
    members: BTreeMap<NodeId, (Member, Instant)>,
    /// The membership in force (the replicated record, else the bootstrap).
    membership: Members,
    /// The newest membership version heard from another node, its address,
    /// and when: the last node to say so is asked, while it keeps saying so.
    newer_members: Option<(Version, String, Instant)>,
    /// Nodes with the key that are not members: what they say of
    /// themselves, their cluster size, when last heard (at most
    /// [`MAX_CANDIDATES`]).
    candidates: BTreeMap<NodeId, (NodeInfo, u32, Instant)>,
    ready_term: Option<Term>,
    dropped: Dropped,
    warned: std::collections::HashSet<NodeId>,
    /// The highest term recorded on disk.
    saved_term: Term,
    /// Shared with the request handlers.
    lease: Arc<Lease>,
    /// Figures the repair loop keeps, for heartbeats.
    health: Arc<Health>,
    delays: Delays,
    /// When the data disk was last measured, and its free and total bytes.
    disk: (Instant, u64, u64),
}

impl Driver {
    /// Opens the gossip sockets. Fails before anything is sent if the group
    /// cannot be joined or the unicast port is taken.
    pub fn new(
        cfg: NodeConfig,
        key: ClusterKey,
        store: Arc<Store>,
        initial_term: Term,
        lease: Arc<Lease>,
        health: Arc<Health>,
    ) -> Result<Driver> {
        let transport = Transport::open(&cfg)?;
        let membership = members_in_force(&cfg, store.members());
        if !membership.contains(cfg.id) {
            log::info!(
                "node {}: not a member (members {:?}); following the leader until `scs node add {}`",
                cfg.id,
                membership.ids(),
                cfg.id
            );
        }
        let ecfg = ElectionConfig {
            id: cfg.id,
            members: membership.ids(),
            heartbeat: cfg.heartbeat,
            leader_timeout: cfg.leader_timeout,
            answer_timeout: cfg.answer_timeout,
            seed: rand::random(),
        };
        let machine = Election::new(ecfg, Instant::now(), initial_term);
        Ok(Driver {
            delays: Delays::new(cfg.leader_timeout / 2),
            cfg,
            key,
            store,
            machine,
            transport,
            guard: ReplayGuard::new(REPLAY_WINDOW_MS),
            incarnation: now_ms(),
            seq: 0,
            members: BTreeMap::new(),
            membership,
            newer_members: None,
            candidates: BTreeMap::new(),
            ready_term: None,
            dropped: Dropped::default(),
            warned: Default::default(),
            disk: (Instant::now() - Duration::from_secs(60), 0, 0),
            saved_term: initial_term,
            lease,
            health,
        })
    }

    /// Where gossip goes, for the log.
    pub fn describe(&self) -> String {
        self.transport.describe(&self.cfg)
    }

    /// Runs until `shutdown`, publishing the view on `view_tx`.
    pub async fn run(
        mut self,
        view_tx: watch::Sender<ClusterView>,
        mut control: mpsc::Receiver<Control>,
        shutdown: CancellationToken,
    ) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut members_rx = self.store.watch_members();
        loop {
            let deadline = tokio::time::Instant::from_std(self.machine.next_deadline());
            let mut claim_reply = None;
            let actions = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.transport.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        let mut actions = self.on_datagram(&buf[..n], from);
                        // Take in everything already queued before publishing:
                        // after a pause (SIGSTOP, a VM stall) the queue holds
                        // the news that we were replaced, and no request may
                        // be served on the picture from before it.
                        for _ in 0..1024 {
                            match self.transport.try_recv_from(&mut buf) {
                                Ok((n, from)) => {
                                    let more = self.on_datagram(&buf[..n], from);
                                    self.perform(actions).await;
                                    actions = more;
                                }
                                Err(_) => break,
                            }
                        }
                        actions
                    }
                    Err(e) => {
                        log::warn!("node {}: gossip receive failed: {e}", self.cfg.id);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Vec::new()
                    }
                },
                _ = tokio::time::sleep_until(deadline) => self.machine.step(Instant::now(), Input::Tick),
                c = control.recv() => match c {
                    Some(Control::Claim { term, leader, reply }) => {
                        let actions = self.machine.step(Instant::now(), Input::Claim { term, leader });
                        claim_reply = Some((reply, self.machine.term() == term && self.machine.accepted() == Some(leader)));
                        actions
                    }
                    Some(Control::CaughtUp) => self.machine.step(Instant::now(), Input::CaughtUp),
                    Some(Control::Redeclare { term }) => self.machine.step(Instant::now(), Input::Redeclare { term }),
                    Some(Control::Ready { term }) => {
                        self.ready_term = Some(term);
                        Vec::new()
                    }
                    None => break,
                },
                changed = members_rx.changed() => match changed {
                    Ok(()) => {
                        let record = members_rx.borrow_and_update().clone();
                        self.set_members(members_in_force(&self.cfg, record))
                    }
                    Err(_) => break,
                },
            };
            self.perform(actions).await;
            // Publish before answering a claim, so that the handler's commit
            // sees the term it was admitted in.
            let view = self.view();
            self.lease.renew(view.quorum && !self.runtime_stuck(), self.cfg.heartbeat * 2);
            view_tx.send_if_modified(|old| {
                if *old != view {
                    *old = view;
                    true
                } else {
                    false
                }
            });
            if let Some((reply, ok)) = claim_reply {
                let _ = reply.send(ok);
            }
        }
        log::debug!(
            "node {}: gossip stopped (dropped {} bad, {} replayed, {} foreign, {} late datagrams; {} unsent)",
            self.cfg.id,
            self.dropped.bad,
            self.dropped.replayed,
            self.dropped.foreign,
            self.dropped.late,
            self.dropped.unsent
        );
    }

    fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr) -> Vec<Action> {
        let env = match gossip::decode(&self.key, bytes) {
            Ok(env) => env,
            Err(e) => {
                self.dropped.bad += 1;
                if self.dropped.bad.is_power_of_two() {
                    log::warn!(
                        "node {}: dropped a datagram from {from}: {e} ({} so far)",
                        self.cfg.id,
                        self.dropped.bad
                    );
                }
                return Vec::new();
            }
        };
        if env.from == self.cfg.id {
            self.heard_own_id(&env.info.addr);
            return Vec::new();
        }
        if !self.guard.admit(&env, now_ms()) {
            self.dropped.replayed += 1;
            log::trace!("node {}: dropped a replayed or stale datagram from node {}", self.cfg.id, env.from);
            return Vec::new();
        }
        if self.delays.is_late(env.from, env.ts_ms, now_ms()) {
            // Sat in a queue while we were paused: news too old to count as
            // a sign of life (it would make us believe in a stale quorum).
            self.dropped.late += 1;
            return Vec::new();
        }
        if env.info.members > self.membership.version
            && self.newer_members.as_ref().is_none_or(|(v, _, _)| env.info.members >= *v)
        {
            if self.newer_members.is_none() {
                log::info!(
                    "node {}: node {} has a newer membership ({:?}); fetching it",
                    self.cfg.id,
                    env.from,
                    env.info.members
                );
            }
            self.newer_members = Some((env.info.members, env.info.addr.clone(), Instant::now()));
        }
        if !self.membership.contains(env.from) {
            self.dropped.foreign += 1;
            // Heard back by unicast too, so that it follows the leader and
            // catches up before it is added.
            if env.from.0 != 0 {
                self.transport.heard(env.from, from, &env.info.addr);
            }
            self.heard_candidate(env.from, env.info.clone(), env.cluster_size);
            if self.warned.len() < MAX_CANDIDATES && self.warned.insert(env.from) {
                log::warn!(
                    "node {}: node {} at {} has the key but is not a member; `scs node add {}` admits it",
                    self.cfg.id,
                    env.from,
                    env.info.addr,
                    env.from
                );
            }
            return Vec::new();
        }
        log::trace!("node {}: {:?} from node {}", self.cfg.id, env.msg, env.from);
        self.transport.heard(env.from, from, &env.info.addr);
        let now = Instant::now();
        let member = &mut self.members.entry(env.from).or_insert_with(|| (Member::default(), now));
        member.0.info = env.info;
        member.1 = now;
        if let Gossip::Heartbeat(hb) = &env.msg {
            member.0.role = Some(hb.role);
            member.0.term = hb.term;
        }
        self.machine.step(now, Input::Receive { from: env.from, msg: env.msg })
    }

    /// Takes a new membership: non-members' news is dropped, members'
    /// majorities are counted on it from now on.
    fn set_members(&mut self, membership: Members) -> Vec<Action> {
        if membership == self.membership {
            return Vec::new();
        }
        if membership.nodes != self.membership.nodes {
            log::info!("node {}: members {:?} ({:?})", self.cfg.id, membership.nodes, membership.version);
            self.warned.clear();
        }
        self.members.retain(|id, _| membership.contains(*id));
        self.newer_members.take_if(|(v, _, _)| *v <= membership.version);
        self.candidates.retain(|id, _| !membership.contains(*id));
        let ids = membership.ids();
        self.membership = membership;
        self.machine.set_members(Instant::now(), ids)
    }

    /// Notes a node with the key that is not a member, for the status.
    /// A datagram with this node's id: its own, come back, or one of a
    /// second node started with the same id (a copied config), which takes
    /// turns at leading with this one and goes unnoticed otherwise. Said
    /// from the third on (one from a previous run of this node may still
    /// arrive just after a restart), then less and less often.
    fn heard_own_id(&mut self, addr: &str) {
        if addr.is_empty() || addr == self.cfg.advertise.to_string() {
            return;
        }
        self.dropped.twin += 1;
        let n = self.dropped.twin;
        if n >= 3 && n.is_multiple_of(3) && (n / 3).is_power_of_two() {
            log::error!(
                "node {me}: another node runs with id {me}, at {addr} (this one is at {}): give each node an id of its \
                 own; until one of them stops, the two take turns and the cluster keeps changing leader",
                self.cfg.advertise,
                me = self.cfg.id,
            );
        }
    }

    fn heard_candidate(&mut self, id: NodeId, info: NodeInfo, cluster_size: u32) {
        if id.0 == 0 {
            return;
        }
        if self.candidates.len() >= MAX_CANDIDATES && !self.candidates.contains_key(&id) {
            let oldest = self.candidates.iter().min_by_key(|(_, c)| c.2).map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.candidates.remove(&oldest);
                self.transport.forget(oldest);
            }
        }
        self.candidates.insert(id, (info, cluster_size, Instant::now()));
    }

    async fn perform(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                // A node whose runtime has not run for this long cannot
                // serve: it says nothing, as a frozen one would, so the
                // others go on without it (and the lease lapses).
                Action::Broadcast(_) if self.runtime_stuck() => {
                    self.dropped.stuck += 1;
                    if self.dropped.stuck.is_power_of_two() {
                        log::warn!(
                            "node {}: its runtime has not run for {:?}; silent until it does ({} datagrams held back)",
                            self.cfg.id,
                            self.health.runtime.silent_for(),
                            self.dropped.stuck
                        );
                    }
                }
                Action::Broadcast(msg) => self.broadcast(msg).await,
                Action::RoleChanged { role, term, leader } => {
                    log::debug!("node {}: role {role:?} term {term} leader {leader:?}", self.cfg.id);
                    // The term goes to disk before anything is said in it: a
                    // node that restarts must not accept a second leader in a
                    // term it may already have accepted one in.
                    if term > self.saved_term {
                        let store = self.store.clone();
                        // On the driver's own thread: nothing else waits.
                        match store.save_term(term) {
                            Ok(()) => self.saved_term = term,
                            Err(e) => log::error!("node {}: cannot record term {term}: {e}", self.cfg.id),
                        }
                    }
                    if role != Role::Leader {
                        self.ready_term = None;
                    }
                }
            }
        }
    }

    fn runtime_stuck(&self) -> bool {
        self.health.runtime.silent_for() > RUNTIME_STUCK
    }

    async fn broadcast(&mut self, msg: Gossip) {
        self.seq += 1;
        let env = Envelope {
            from: self.cfg.id,
            cluster_size: self.membership.len() as u32,
            incarnation: self.incarnation,
            seq: self.seq,
            ts_ms: now_ms(),
            info: self.info(),
            msg,
        };
        let bytes = gossip::encode(&self.key, &env);
        if let Err(e) = self.transport.send(&bytes).await {
            // A link down fails every heartbeat: say so, not ten times a second.
            self.dropped.unsent += 1;
            if self.dropped.unsent.is_power_of_two() {
                log::warn!("node {}: gossip send failed: {e} ({} so far)", self.cfg.id, self.dropped.unsent);
            }
        }
    }

    /// Leading and caught up from a majority.
    fn caught_up_leader(&self) -> bool {
        self.machine.role() == Role::Leader && self.ready_term == Some(self.machine.term())
    }

    /// Leading, caught up, and with a majority behind us: clients may write.
    fn serving(&self) -> bool {
        self.caught_up_leader() && self.machine.has_quorum(Instant::now())
    }

    fn info(&mut self) -> NodeInfo {
        // statvfs at most once a second, not on every datagram.
        if self.disk.0.elapsed() > Duration::from_secs(1) {
            let (free, total) = self.store.room();
            self.disk = (Instant::now(), free, total);
        }
        NodeInfo {
            addr: self.cfg.advertise.to_string(),
            files: self.store.files(),
            blobs: self.store.blobs(),
            max_files: self.cfg.max_files,
            ready: self.serving(),
            disk_free: self.disk.1,
            disk_total: self.disk.2,
            wanted: self.store.wanted_count(),
            corrupt: self.store.corrupt_count(),
            under_replicated: self.health.under_replicated.load(std::sync::atomic::Ordering::Relaxed),
            members: self.membership.version,
            bytes: self.store.held_bytes(),
            trash_bytes: self.store.trash_bytes(),
        }
    }

    fn view(&self) -> ClusterView {
        let now = Instant::now();
        let alive = self.machine.alive(now);
        let mut members = BTreeMap::new();
        for (id, (m, heard)) in &self.members {
            let mut m = m.clone();
            m.alive = alive.contains(id);
            m.down_since = (!m.alive).then_some(*heard + self.cfg.leader_timeout);
            members.insert(*id, m);
        }
        let heard_lately = |at: &Instant| now.duration_since(*at) < self.cfg.leader_timeout;
        let candidates = (self.candidates.iter())
            .filter(|(_, (_, _, at))| heard_lately(at))
            .map(|(id, (info, size, _))| (*id, (info.clone(), *size)))
            .collect();
        ClusterView {
            me: self.cfg.id,
            term: self.machine.term(),
            accepted: self.machine.accepted(),
            role: self.machine.role(),
            leader: self.machine.leader(now),
            quorum: self.machine.role() == Role::Leader && self.machine.has_quorum(now),
            ready: self.caught_up_leader(),
            members,
            candidates,
            newer_members: (self.newer_members.as_ref())
                .filter(|(_, _, at)| heard_lately(at))
                .map(|(_, addr, _)| addr.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_held_up_in_a_queue_is_late_whatever_the_clock_offset() {
        let mut d = Delays::new(Duration::from_millis(300));
        let n = NodeId(2);
        // The sender's clock runs 5 s behind ours; deliveries take 1-3 ms.
        assert!(!d.is_late(n, 10_000, 15_001));
        assert!(!d.is_late(n, 10_100, 15_103));
        assert!(!d.is_late(n, 10_200, 15_250), "50 ms of jitter is fine");
        assert!(d.is_late(n, 10_300, 16_000), "700 ms in a queue is late");
        // Another sender, ahead of us, is judged on its own baseline.
        assert!(!d.is_late(NodeId(3), 20_000, 15_000));
    }

    #[test]
    fn a_sender_whose_clock_stepped_back_is_believed_again_after_a_second() {
        let mut d = Delays::new(Duration::from_millis(300));
        let n = NodeId(2);
        assert!(!d.is_late(n, 1_000, 1_000));
        // Its clock steps back 1 s: its datagrams look late for a moment…
        assert!(d.is_late(n, 1_100, 2_100));
        assert!(d.is_late(n, 1_600, 2_600));
        // …until they have kept coming like that for a second.
        assert!(!d.is_late(n, 2_200, 3_200));
        assert!(!d.is_late(n, 2_300, 3_300));
    }
}
