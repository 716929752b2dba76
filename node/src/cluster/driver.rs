//! The thin async shell around the election machine: owns the multicast
//! sockets and the timer, feeds datagrams, deadlines and control requests to
//! [`Election::step`], sends what it asks, and publishes a [`ClusterView`]
//! after every step.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use scs_common::auth::ClusterKey;
use scs_common::config::NodeConfig;
use scs_common::multicast;
use scs_common::proto::gossip::{self, Envelope, Gossip, NodeInfo, ReplayGuard, Role, MAX_DATAGRAM};
use scs_common::{NodeId, Result, Term};

use crate::cluster::election::{Action, Election, ElectionConfig, Input};
use crate::node::Control;
use crate::store::Store;
use crate::view::{ClusterView, Member};

/// Datagrams older or newer than this (by the sender's clock) are dropped.
const REPLAY_WINDOW_MS: u64 = 30_000;

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Counters of datagrams dropped, for the logs and tests.
#[derive(Debug, Default)]
struct Dropped {
    bad: u64,
    replayed: u64,
    foreign: u64,
}

pub struct Driver {
    cfg: NodeConfig,
    key: ClusterKey,
    store: Arc<Store>,
    machine: Election,
    recv: UdpSocket,
    send: UdpSocket,
    guard: ReplayGuard,
    incarnation: u64,
    seq: u64,
    members: BTreeMap<NodeId, (Member, Instant)>,
    ready_term: Option<Term>,
    dropped: Dropped,
    warned_size: std::collections::HashSet<NodeId>,
    /// When the data disk was last measured, and its free and total bytes.
    disk: (Instant, u64, u64),
}

impl Driver {
    /// Opens the multicast sockets. Fails before anything is sent if the
    /// group cannot be joined.
    pub fn new(cfg: NodeConfig, key: ClusterKey, store: Arc<Store>, initial_term: Term) -> Result<Driver> {
        let recv = multicast::receiver(cfg.group, cfg.iface)?;
        let send = multicast::sender(cfg.iface)?;
        let ecfg = ElectionConfig {
            id: cfg.id,
            cluster_size: cfg.cluster_size,
            heartbeat: cfg.heartbeat,
            leader_timeout: cfg.leader_timeout,
            answer_timeout: cfg.answer_timeout,
            seed: rand::random(),
        };
        let machine = Election::new(ecfg, Instant::now(), initial_term);
        Ok(Driver {
            cfg,
            key,
            store,
            machine,
            recv,
            send,
            guard: ReplayGuard::new(REPLAY_WINDOW_MS),
            incarnation: now_ms(),
            seq: 0,
            members: BTreeMap::new(),
            ready_term: None,
            dropped: Dropped::default(),
            warned_size: Default::default(),
            disk: (Instant::now() - Duration::from_secs(60), 0, 0),
        })
    }

    /// Runs until `shutdown`, publishing the view on `view_tx`.
    pub async fn run(
        mut self,
        view_tx: watch::Sender<ClusterView>,
        mut control: mpsc::Receiver<Control>,
        shutdown: CancellationToken,
    ) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            let deadline = tokio::time::Instant::from_std(self.machine.next_deadline());
            let mut claim_reply = None;
            let actions = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.recv.recv_from(&mut buf) => match r {
                    Ok((n, from)) => self.on_datagram(&buf[..n], from),
                    Err(e) => {
                        log::warn!("node {}: multicast receive failed: {e}", self.cfg.id);
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
                    Some(Control::Ready { term }) => {
                        self.ready_term = Some(term);
                        Vec::new()
                    }
                    None => break,
                },
            };
            self.perform(actions).await;
            // Publish before answering a claim, so that the handler's commit
            // sees the term it was admitted in.
            let view = self.view();
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
            "node {}: gossip stopped (dropped {} bad, {} replayed, {} foreign datagrams)",
            self.cfg.id,
            self.dropped.bad,
            self.dropped.replayed,
            self.dropped.foreign
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
            return Vec::new();
        }
        if !self.guard.admit(&env, now_ms()) {
            self.dropped.replayed += 1;
            log::trace!("node {}: dropped a replayed or stale datagram from node {}", self.cfg.id, env.from);
            return Vec::new();
        }
        if env.cluster_size != self.cfg.cluster_size || env.from.0 == 0 || env.from.0 > self.cfg.cluster_size {
            self.dropped.foreign += 1;
            if self.warned_size.insert(env.from) {
                log::warn!(
                    "node {}: ignoring node {} at {}: it says cluster_size {}, we have {}",
                    self.cfg.id,
                    env.from,
                    env.info.addr,
                    env.cluster_size,
                    self.cfg.cluster_size
                );
            }
            return Vec::new();
        }
        log::trace!("node {}: {:?} from node {}", self.cfg.id, env.msg, env.from);
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

    async fn perform(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Broadcast(msg) => self.broadcast(msg).await,
                Action::RoleChanged { role, term, leader } => {
                    log::debug!("node {}: role {role:?} term {term} leader {leader:?}", self.cfg.id);
                    if role != Role::Leader {
                        self.ready_term = None;
                    }
                }
            }
        }
    }

    async fn broadcast(&mut self, msg: Gossip) {
        self.seq += 1;
        let env = Envelope {
            from: self.cfg.id,
            cluster_size: self.cfg.cluster_size,
            incarnation: self.incarnation,
            seq: self.seq,
            ts_ms: now_ms(),
            info: self.info(),
            msg,
        };
        let bytes = gossip::encode(&self.key, &env);
        if let Err(e) = self.send.send_to(&bytes, self.cfg.group).await {
            log::warn!("node {}: multicast send failed: {e}", self.cfg.id);
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
            let (free, total) = self.store.disk_space();
            self.disk = (Instant::now(), free, total);
        }
        NodeInfo {
            addr: self.cfg.advertise.to_string(),
            files: self.store.files(),
            max_files: self.cfg.max_files,
            ready: self.serving(),
            disk_free: self.disk.1,
            disk_total: self.disk.2,
        }
    }

    fn view(&self) -> ClusterView {
        let now = Instant::now();
        let alive = self.machine.alive(now);
        let mut members = BTreeMap::new();
        for (id, (m, _)) in &self.members {
            let mut m = m.clone();
            m.alive = alive.contains(id);
            members.insert(*id, m);
        }
        ClusterView {
            me: self.cfg.id,
            term: self.machine.term(),
            accepted: self.machine.accepted(),
            role: self.machine.role(),
            leader: self.machine.leader(now),
            quorum: self.machine.role() == Role::Leader && self.machine.has_quorum(now),
            ready: self.caught_up_leader(),
            members,
        }
    }
}
