//! [`Node`]: the state every task of a running node shares, and the fence
//! that decides whose writes this node accepts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, RwLock};
use tokio_util::sync::CancellationToken;

use scs_common::auth::ClusterKey;
use scs_common::config::NodeConfig;
use scs_common::proto::gossip::Role;
use scs_common::{Error, Key, Members, NodeId, Record, Result, Term, Version};

use crate::leader::state::{Applying, LeaderState, Local};
use crate::link::{members_in_force, Control, Health, Lease};
use crate::peers::Peers;
use crate::store::{Applied, Store};
use crate::view::ClusterView;

pub struct Node {
    cfg: NodeConfig,
    key: ClusterKey,
    store: Arc<Store>,
    peers: Peers,
    view: watch::Receiver<ClusterView>,
    control: mpsc::Sender<Control>,
    shutdown: CancellationToken,
    /// Commits hold it shared; a `Pull` takes it exclusively for an instant
    /// after raising the term, so no commit from an older term lands after
    /// the pull has looked (see [`Node::fence_barrier`]).
    commit_gate: Arc<RwLock<()>>,
    /// Valid while the driver keeps confirming our quorum.
    lease: Arc<Lease>,
    health: Arc<Health>,
    /// Terms this node has led (kept in the store too).
    /// Present while this node leads; versions and in-flight writes.
    leader: std::sync::Mutex<Option<Arc<LeaderState>>>,
}

/// What the rest of the node holds of the election driver.
pub struct DriverLink {
    pub view: watch::Receiver<ClusterView>,
    pub control: mpsc::Sender<Control>,
    pub lease: Arc<Lease>,
}

impl Node {
    pub fn new(
        cfg: NodeConfig,
        key: ClusterKey,
        store: Arc<Store>,
        link: DriverLink,
        health: Arc<Health>,
        shutdown: CancellationToken,
    ) -> Node {
        let peers = Peers::new(key.clone(), cfg.id);
        let DriverLink { view, control, lease } = link;
        Node {
            cfg,
            key,
            store,
            peers,
            view,
            control,
            shutdown,
            lease,
            health,
            commit_gate: Arc::new(RwLock::new(())),
            leader: std::sync::Mutex::new(None),
        }
    }

    pub fn me(&self) -> NodeId {
        self.cfg.id
    }

    /// The node's configuration.
    pub fn cfg(&self) -> &NodeConfig {
        &self.cfg
    }

    /// The membership in force here: the replicated record, else the one
    /// the configuration bootstraps.
    pub fn members(&self) -> Members {
        members_in_force(&self.cfg, self.store.members())
    }

    /// Copies each file should have: `replicas`, or every member that
    /// takes copies when there are fewer.
    pub fn replica_target(&self) -> usize {
        (self.cfg.replicas as usize).min(self.members().active()).max(1)
    }

    /// The cluster key sessions are opened with.
    pub fn key(&self) -> &ClusterKey {
        &self.key
    }

    /// Blobs and the index.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Pooled sessions to the other nodes.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// Cancelled when the node shuts down: every loop ends on it.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Figures the background loops keep.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// A receiver of every new cluster view (to wait for a change).
    pub fn view_changes(&self) -> watch::Receiver<ClusterView> {
        self.view.clone()
    }

    /// Tells the election driver something (caught up, ready to serve).
    pub async fn tell_driver(&self, c: Control) {
        let _ = self.control.send(c).await;
    }

    /// Starts or ends this node's leadership state (`None`: not leading).
    pub fn set_leader_state(&self, state: Option<Arc<LeaderState>>) {
        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// A copy of the current cluster view.
    pub fn view(&self) -> ClusterView {
        self.view.borrow().clone()
    }

    /// The leader state if this node leads a term right now.
    pub fn leader_state(&self) -> Option<Arc<LeaderState>> {
        self.leader.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the leader's lease (see [`Lease`]) holds now.
    pub fn lease_valid(&self) -> bool {
        self.lease.valid()
    }

    /// Checks that this node may serve a client write right now.
    ///
    /// # Errors
    /// `NotLeader` (with the leader's address when known), `NoQuorum`, or
    /// `Unavailable` while a new leader is still catching up.
    pub fn writable(&self) -> Result<Arc<LeaderState>> {
        let v = self.view();
        if v.role != Role::Leader {
            return Err(Error::NotLeader(v.leader_addr()));
        }
        if !v.quorum || !self.lease.valid() {
            let members = self.members();
            return Err(Error::NoQuorum(format!(
                "node {} leads but hears fewer than {} of {} members",
                self.me(),
                members.majority(),
                members.len()
            )));
        }
        match self.leader_state() {
            Some(l) if l.has_failed() => Err(Error::Unavailable(format!(
                "node {} could not commit a change itself and is catching up again in a new term",
                self.me()
            ))),
            Some(l) if v.ready && l.term == v.term => Ok(l),
            _ => Err(Error::Unavailable("the new leader is still catching up".into())),
        }
    }

    /// Checks that this node may serve a client read. Reads need the same
    /// lease as writes: a leader cut off from the majority may have been
    /// replaced, and must not serve what might be stale.
    pub fn readable(&self) -> Result<()> {
        self.writable().map(|_| ())
    }

    /// Checks a request from `leader` claiming `term`: accepted when it is the
    /// leader we follow in our term, or when the election driver admits it.
    ///
    /// # Errors
    /// `Stale` naming the term we are in.
    pub async fn admit(&self, term: Term, leader: NodeId) -> Result<()> {
        {
            let v = self.view.borrow();
            if v.term == term && v.accepted == Some(leader) {
                return Ok(());
            }
            if term < v.term {
                return Err(stale(term, leader, v.term));
            }
        }
        let (reply, answer) = oneshot::channel();
        self.control
            .send(Control::Claim { term, leader, reply })
            .await
            .map_err(|_| Error::Unavailable("node is shutting down".into()))?;
        match tokio::time::timeout(Duration::from_secs(2), answer).await {
            Ok(Ok(true)) => Ok(()),
            _ => Err(stale(term, leader, self.view.borrow().term)),
        }
    }

    /// Commits records from `leader` of `term` (or from ourselves as leader),
    /// refusing if that term has been superseded meanwhile.
    pub async fn commit(
        &self,
        term: Term,
        leader: NodeId,
        records: Vec<Record>,
        written: Vec<(Key, Version)>,
    ) -> Result<Applied> {
        self.commit_with(term, leader, move |store| store.apply(&records, &written)).await
    }

    /// [`Node::commit`] of a leader's `Apply`, less the records at or below
    /// this node's watermark (see [`Store::newer_than_vouched`]), in the
    /// same trip to the store: durable here when it returns, and in the
    /// index once the [`Answered`] it returns is done with, after the
    /// leader has its answer (see `store::ahead`).
    ///
    /// Done on this task, not on a blocking thread, the journal's sync
    /// included: a follower takes a leader's rounds one at a time, and its
    /// answer waits for that sync and nothing else. A hand-off to a thread
    /// and back costs more than the transaction, and a hand-off to the
    /// journal's syncer two more wake-ups.
    pub async fn commit_applied(&self, term: Term, leader: NodeId, records: Vec<Record>) -> Result<Answered> {
        let _shared = self.commit_gate.read().await;
        self.check_term(term, leader)?;
        let records = self.store.newer_than_vouched(records)?;
        let ahead = if records.is_empty() { None } else { self.store.journal_ahead(records)? };
        if let Some(batch) = ahead {
            self.store.sync_ahead(batch).await?;
        }
        Ok(Answered { store: self.store.clone(), ahead: ahead.map(|b| b.id) })
    }

    /// This leader's own [`Node::commit`]. `queue` gets the commit's
    /// [`Local`] first (the change is queued for the followers, who may
    /// take it while this node does); returns once the records are in the
    /// index here, where the next change is checked against them (see
    /// [`Store::apply_visible`]). [`Local::durable`] completes once they
    /// are durable too.
    ///
    /// # Errors
    /// `Stale` if this node no longer leads `term` (nothing was queued), or
    /// the index refused the records (the `Local` fails too).
    pub async fn commit_local(&self, term: Term, records: Vec<Record>, queue: impl FnOnce(Local)) -> Result<()> {
        let gate = self.commit_gate.clone().read_owned().await;
        self.check_term(term, self.me())?;
        let (applied, local) = oneshot::channel();
        queue(Local(local));
        // Here rather than on a blocking thread: the caller holds the
        // namespace lock until the records are in, so nothing waits behind
        // this but the next change, and a hand-off costs more than it.
        match self.store.apply_visible(&records, &[]) {
            Ok(pending) => {
                // Until durable: a `Pull` that raised the term waits for it.
                let _ = applied.send(Ok(Applying::new(self.store.clone(), pending, gate)));
                Ok(())
            }
            Err(e) => {
                let _ = applied.send(Err(e.clone()));
                Err(e)
            }
        }
    }

    fn check_term(&self, term: Term, leader: NodeId) -> Result<()> {
        let v = self.view.borrow();
        if v.term != term || v.accepted != Some(leader) {
            return Err(stale(term, leader, v.term));
        }
        Ok(())
    }

    async fn commit_with(
        &self,
        term: Term,
        leader: NodeId,
        apply: impl FnOnce(&Store) -> Result<Applied> + Send + 'static,
    ) -> Result<Applied> {
        let _shared = self.commit_gate.read().await;
        self.check_term(term, leader)?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || apply(&store))
            .await
            .map_err(|e| Error::Internal(format!("commit task: {e}")))?
    }

    /// Waits until every commit that passed the fence before now has
    /// finished, and takes the leader's rounds this node answered for into
    /// the index. Called after the term was raised by a `Pull`, so that what
    /// the pull then reads includes every commit of the older term.
    ///
    /// # Errors
    /// As [`Store::take_in_ahead`]: the pull must not be served.
    pub async fn fence_barrier(&self) -> Result<()> {
        drop(self.commit_gate.write().await);
        self.blocking(|s| s.take_in_ahead()).await
    }

    /// Runs blocking store work off the async threads.
    pub async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Store) -> Result<T> + Send + 'static) -> Result<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store)).await.map_err(|e| Error::Internal(format!("store task: {e}")))?
    }
}

/// A leader's round, durable here and perhaps not in the index yet: the
/// index takes it with [`Answered::index`] (or when this is dropped), or a
/// `Pull` that raised the term first ([`Node::fence_barrier`]).
#[must_use = "the round goes into the index once answered for"]
pub struct Answered {
    store: Arc<Store>,
    /// The batch, if it is ahead of the index (see [`Store::journal_ahead`]).
    ahead: Option<u64>,
}

impl Answered {
    /// Takes the round into the index (what may block, a checkpoint say,
    /// on a blocking thread).
    ///
    /// # Errors
    /// As [`Store::index_ahead`]: the round stays ahead of the index, for
    /// the next one or a durable commit.
    pub async fn index(mut self) -> Result<()> {
        let Some(id) = self.ahead.take() else { return Ok(()) };
        match self.store.index_ahead(id)? {
            Some(pending) => self.store.settle_async(pending).await.map(drop),
            None => Ok(()),
        }
    }
}

impl Drop for Answered {
    fn drop(&mut self) {
        if let Some(id) = self.ahead.take() {
            self.store.index_ahead_now(id);
        }
    }
}

fn stale(term: Term, leader: NodeId, ours: Term) -> Error {
    Error::Stale(format!("node {leader} claims term {term}, but this node is in term {ours}"))
}
