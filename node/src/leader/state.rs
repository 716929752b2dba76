//! The state of one term of leadership: versions and inode numbers handed
//! out, writes in flight, the namespace lock, and the changes on their way
//! to a majority. Shared by the node (which holds it while it leads) and
//! the leader's work; it knows nothing of either.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, Notify};

use scs_common::{Error, Ino, Key, Record, Result, Term, Version};

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
