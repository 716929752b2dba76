//! The state of one term of leadership: versions and inode numbers handed
//! out, writes in flight, the namespace lock, and the changes on their way
//! to a majority. Shared by the node (which holds it while it leads) and
//! the leader's work; it knows nothing of either.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, Notify};

use scs_common::{Error, Ino, Key, Members, NodeId, Record, Result, Term, Version};

/// The state of one term of leadership.
#[derive(Debug)]
pub struct LeaderState {
    pub term: Term,
    /// When this node started leading the term (members it has not heard
    /// from since count as down from then).
    pub started: std::time::Instant,
    next_seq: AtomicU64,
    /// Versions handed out whose entries are not committed here yet.
    inflight: Mutex<BTreeSet<Version>>,
    /// Serializes the check of namespace changes and their commit into
    /// this node's index.
    pub ns: tokio::sync::Mutex<()>,
    /// Changes in the index here on their way to a majority.
    pub outbox: Outbox,
    /// Held while a block of inode numbers is reserved.
    pub reserving: tokio::sync::Mutex<()>,
    /// Inodes with an upload in flight (by key, how many): repair leaves
    /// them alone while their content is about to change.
    uploading: Mutex<HashMap<Key, usize>>,
    /// Inode numbers reserved on a majority and not handed out yet: `next..end`.
    inos: Mutex<(u64, u64)>,
    /// Every mount's advisory locks, in this term's memory only (see `super::locks`).
    locks: Mutex<scs_common::locks::LockTable>,
    /// A commit failed here after it went out to the followers: this node's
    /// index may lack what they have, so nothing more is served in the term.
    failed: AtomicBool,
    /// It caught up from a majority and served.
    served: AtomicBool,
    /// The watermark each follower gave in its latest pull in this term:
    /// it has every record this leader had up to there (see [`LeaderState::settled`]).
    pulls: Mutex<HashMap<NodeId, Version>>,
    /// When this leader last stored its settled watermark.
    settled_stored: Mutex<Option<std::time::Instant>>,
}

impl LeaderState {
    pub fn new(term: Term) -> LeaderState {
        LeaderState {
            term,
            started: std::time::Instant::now(),
            next_seq: AtomicU64::new(1),
            inflight: Mutex::new(BTreeSet::new()),
            ns: Default::default(),
            outbox: Default::default(),
            reserving: Default::default(),
            uploading: Mutex::new(HashMap::new()),
            inos: Mutex::new((0, 0)),
            locks: Mutex::new(scs_common::locks::LockTable::new(Default::default())),
            failed: AtomicBool::new(false),
            served: AtomicBool::new(false),
            pulls: Mutex::new(HashMap::new()),
            settled_stored: Mutex::new(None),
        }
    }

    /// Marks the term as one this node can no longer serve in (see
    /// `failed`); whether it was not marked before.
    pub fn fail(&self) -> bool {
        !self.failed.swap(true, Ordering::SeqCst)
    }

    /// Whether a commit failed here in this term.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// The lock table of this term (never held across an await).
    pub fn locks(&self) -> std::sync::MutexGuard<'_, scs_common::locks::LockTable> {
        self.locks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inode numbers left in the reserved block.
    pub fn inos_left(&self) -> u64 {
        let pool = self.inos.lock().unwrap_or_else(|p| p.into_inner());
        pool.1 - pool.0
    }

    /// Hands out `count` inode numbers from the reserved block: the first.
    /// Call it under the namespace lock after [`ensure_inos`].
    pub fn take_inos(&self, count: u64) -> Option<Ino> {
        let mut pool = self.inos.lock().unwrap_or_else(|p| p.into_inner());
        if pool.1 - pool.0 < count {
            return None;
        }
        let first = pool.0;
        pool.0 += count;
        Some(Ino(first))
    }

    /// Inode numbers `next..end` are reserved on a majority: hand them out.
    pub(super) fn set_inos(&self, next: u64, end: u64) {
        *self.inos.lock().unwrap_or_else(|p| p.into_inner()) = (next, end);
    }

    /// Marks an upload to the inode of `key` in flight until the mark is dropped.
    pub fn mark_upload(self: &Arc<Self>, key: Key) -> UploadMark {
        *self.uploads().entry(key).or_insert(0) += 1;
        UploadMark { state: self.clone(), key }
    }

    /// Whether an upload to the inode of `key` is in flight.
    pub fn is_uploading(&self, key: &Key) -> bool {
        self.uploads().contains_key(key)
    }

    fn uploads(&self) -> std::sync::MutexGuard<'_, HashMap<Key, usize>> {
        self.uploading.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new version, in flight until the returned guard is dropped.
    pub fn allocate(self: &Arc<Self>) -> VersionGuard {
        // Under the lock: a version handed out but not yet in flight would
        // let `safe_watermark` vouch for it before it is committed.
        let mut inflight = self.lock();
        let version = Version::new(self.term, self.next_seq.fetch_add(1, Ordering::SeqCst));
        inflight.insert(version);
        drop(inflight);
        VersionGuard { state: self.clone(), version }
    }

    /// This leader caught up from a majority and serves.
    pub fn mark_served(&self) {
        self.served.store(true, Ordering::SeqCst);
    }

    /// Whether this leader caught up and serves (see `mark_served`).
    pub fn served(&self) -> bool {
        self.served.load(Ordering::SeqCst)
    }

    /// The version up to which this node has every record, as this term's
    /// leader: every change committed before the term (it caught up from a
    /// majority) and its own up to [`LeaderState::safe_watermark`] (only the
    /// former once a commit failed here: its index may lack one of its
    /// own). `None` before it served.
    pub fn vouched(&self) -> Option<Version> {
        if !self.served.load(Ordering::SeqCst) {
            return None;
        }
        Some(if self.has_failed() { Version::new(self.term, 0) } else { self.safe_watermark() })
    }

    /// Notes a follower's pull from `since`: it has every record this
    /// leader had up to there, if `since` is of this term (it stored it only
    /// once it had pulled everything up to a watermark this leader gave).
    /// One of an earlier term came from another leader, and is not counted.
    pub fn note_pull(&self, from: NodeId, since: Version) {
        let mut pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
        if since.term == self.term {
            pulls.insert(from, since);
        } else {
            pulls.remove(&from);
        }
    }

    /// The highest version up to which a majority of `members` (this node
    /// among them) has every record this leader has, as Raft's match index
    /// tells it: from what this node vouched for and its followers' latest
    /// pulls. Everything this leader committed up to it is on a majority,
    /// even a change whose round is still out. `None` before it served.
    pub fn settled(&self, me: NodeId, members: &Members) -> Option<Version> {
        let vouched = self.vouched()?;
        let pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
        let mut held: Vec<(NodeId, Version)> =
            pulls.iter().filter(|(id, _)| **id != me).map(|(i, v)| (*i, *v)).collect();
        drop(pulls);
        held.push((me, vouched));
        held.sort_by_key(|(_, version)| std::cmp::Reverse(*version));
        let mut having = BTreeSet::new();
        for (id, version) in held {
            having.insert(id);
            if members.has_majority(&having) {
                return Some(version.min(vouched));
            }
        }
        None
    }

    /// Whether `every` has passed since this leader last stored its settled
    /// watermark (see [`LeaderState::settled_stored`]).
    pub fn settled_due(&self, every: std::time::Duration) -> bool {
        let last = self.settled_stored.lock().unwrap_or_else(|p| p.into_inner());
        last.is_none_or(|t| t.elapsed() >= every)
    }

    /// This leader stores its settled watermark now.
    pub fn settled_stored(&self) {
        *self.settled_stored.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
    }

    /// The highest version at or below which nothing is in flight: a
    /// follower that has pulled everything up to it has every committed entry.
    pub fn safe_watermark(&self) -> Version {
        let inflight = self.lock();
        let next = self.next_seq.load(Ordering::SeqCst);
        let lowest = inflight.iter().next().copied();
        drop(inflight);
        match lowest {
            Some(v) => Version::new(v.term, v.seq - 1),
            None => Version::new(self.term, next - 1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<Version>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A version in flight; dropping it (committed or abandoned) releases it.
#[derive(Debug)]
pub struct VersionGuard {
    state: Arc<LeaderState>,
    pub version: Version,
}

impl Drop for VersionGuard {
    fn drop(&mut self) {
        self.state.lock().remove(&self.version);
    }
}

/// An upload in flight to a name (see [`LeaderState::mark_upload`]).
#[derive(Debug)]
pub struct UploadMark {
    state: Arc<LeaderState>,
    key: Key,
}

impl Drop for UploadMark {
    fn drop(&mut self) {
        let mut uploads = self.state.uploads();
        if let Some(n) = uploads.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                uploads.remove(&self.key);
            }
        }
    }
}

/// This leader's changes in its index on their way to a majority, waiting
/// for their round (see `super::outbox`).
#[derive(Default)]
pub struct Outbox {
    queue: Mutex<Queue>,
    /// Told when the rounds stop for want of changes.
    pub(super) idle: Notify,
}

#[derive(Default)]
pub(super) struct Queue {
    pub changes: Vec<Queued>,
    /// A task is running rounds.
    pub running: bool,
}

/// One change in the index here, waiting for its round.
pub(super) struct Queued {
    pub records: Vec<Record>,
    /// About the bytes of `records`, encoded.
    pub size: usize,
    pub local: Local,
    /// Its versions, in flight until it is durable here.
    pub versions: Vec<VersionGuard>,
    pub answer: oneshot::Sender<Result<()>>,
}

/// This leader's own commit of a change, on its way to the disk (see
/// `Node::commit_local`).
#[must_use = "durable only once awaited"]
pub struct Local(pub(crate) tokio::sync::oneshot::Receiver<Result<Applying>>);

impl Local {
    /// Completes once the records are durable here.
    pub async fn durable(self) -> Result<()> {
        let applying = self.0.await.map_err(|_| Error::Internal("the commit ended early".into()))??;
        applying.durable().await
    }
}

/// A leader's own commit, in its index and on its way to the disk (see
/// `Node::commit_local`); it holds the commit gate until durable.
pub struct Applying {
    store: std::sync::Arc<crate::store::Store>,
    pending: crate::store::Pending,
    _gate: tokio::sync::OwnedRwLockReadGuard<()>,
}

impl Applying {
    pub(crate) fn new(
        store: std::sync::Arc<crate::store::Store>,
        pending: crate::store::Pending,
        gate: tokio::sync::OwnedRwLockReadGuard<()>,
    ) -> Applying {
        Applying { store, pending, _gate: gate }
    }

    /// Completes once the records are durable here.
    pub async fn durable(self) -> Result<()> {
        let Applying { store, pending, _gate } = self;
        store.settle_async(pending).await.map(drop)
    }
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = self.queue();
        f.debug_struct("Outbox").field("queued", &q.changes.len()).field("running", &q.running).finish()
    }
}

impl Outbox {
    pub(super) fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until every queued change has had its round. Under the
    /// namespace lock, nothing is queued meanwhile.
    pub async fn drained(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            {
                let q = self.queue();
                if !q.running && q.changes.is_empty() {
                    return;
                }
            }
            idle.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(seq: u64) -> Version {
        Version::new(Term(7), seq)
    }

    /// A leader of term 7 (node 3) that served and handed out versions up to `seq`.
    fn leader_at(seq: u64) -> Arc<LeaderState> {
        let state = Arc::new(LeaderState::new(Term(7)));
        state.mark_served();
        for _ in 0..seq {
            drop(state.allocate());
        }
        state
    }

    #[test]
    fn the_settled_watermark_is_the_highest_that_a_majority_has_counting_the_leader() {
        let three = Members::bootstrap([1, 2, 3].map(NodeId));
        let me = NodeId(3);
        assert_eq!(LeaderState::new(Term(7)).settled(me, &three), None, "not before it served");
        let state = leader_at(10);
        assert_eq!(state.settled(me, &three), None, "the leader alone is no majority");
        state.note_pull(NodeId(1), v(4));
        assert_eq!(state.settled(me, &three), Some(v(4)));
        state.note_pull(NodeId(2), v(8));
        assert_eq!(state.settled(me, &three), Some(v(8)), "the leader and node 2 have up to 8");
        // A pull is what the follower has now, not the most it ever had.
        state.note_pull(NodeId(2), v(2));
        assert_eq!(state.settled(me, &three), Some(v(4)));

        let five = Members::bootstrap([1, 2, 3, 4, 5].map(NodeId));
        state.note_pull(NodeId(4), v(9));
        assert_eq!(state.settled(me, &five), Some(v(4)), "three of five: the leader (10), node 4 (9), node 1 (4)");
        // A node that is no member does not count.
        state.note_pull(NodeId(9), v(10));
        assert_eq!(state.settled(me, &five), Some(v(4)));
        // Nor does a watermark another leader gave, in an earlier term:
        // node 1's pull from one replaces its pull from this one.
        state.note_pull(NodeId(1), Version::new(Term(6), 900));
        assert_eq!(state.settled(me, &five), Some(v(2)), "the leader (10), node 4 (9), node 2 (2)");
        state.note_pull(NodeId(5), v(3));
        assert_eq!(state.settled(me, &five), Some(v(3)));
    }

    #[test]
    fn the_settled_watermark_never_passes_what_the_leader_vouches_for() {
        let three = Members::bootstrap([1, 2, 3].map(NodeId));
        let me = NodeId(3);
        let state = leader_at(10);
        let in_flight = state.allocate();
        state.note_pull(NodeId(1), v(12));
        state.note_pull(NodeId(2), v(12));
        assert_eq!(state.settled(me, &three), Some(v(10)), "version 11 is not committed here yet");
        drop(in_flight);
        assert!(state.fail());
        assert_eq!(state.settled(me, &three), Some(v(0)), "after a failed commit, none of its own");
    }
}
