//! What a node does while it leads: hands out versions, picks holders,
//! commits entries on a majority, and first catches up from a majority.
//!
//! # Layout
//! - this file: [`LeaderState`], holder choice and the majority commit.
//! - [`upload`]: streaming a file to the holders with a pipelined fan-out.
//! - [`meta`]: mkdir, delete, rename, setattr: checks, then a majority commit.

pub mod meta;
pub mod upload;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;

use scs_common::proto::rpc::{Request, Response};
use scs_common::{Entry, Error, Key, NodeId, Result, Term, Version};

use crate::node::Node;

/// How long a follower may take to commit an `Apply`.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Serializes the check-then-commit of namespace changes.
    pub ns: tokio::sync::Mutex<()>,
    /// Names with an upload in flight (by key, how many): repair leaves
    /// them alone, since a new version of the old content committed by it
    /// would make the upload's commit stale.
    uploading: Mutex<HashMap<Key, usize>>,
}

impl LeaderState {
    pub fn new(term: Term) -> LeaderState {
        LeaderState {
            term,
            started: std::time::Instant::now(),
            next_seq: AtomicU64::new(1),
            inflight: Mutex::new(BTreeSet::new()),
            ns: Default::default(),
            uploading: Mutex::new(HashMap::new()),
        }
    }

    /// Marks an upload to `key` in flight until the mark is dropped.
    pub fn mark_upload(self: &Arc<Self>, key: Key) -> UploadMark {
        *self.uploads().entry(key).or_insert(0) += 1;
        UploadMark { state: self.clone(), key }
    }

    /// Whether an upload to `key` is in flight.
    pub fn is_uploading(&self, key: &Key) -> bool {
        self.uploads().contains_key(key)
    }

    fn uploads(&self) -> std::sync::MutexGuard<'_, HashMap<Key, usize>> {
        self.uploading.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new version, in flight until the returned guard is dropped.
    pub fn allocate(self: &Arc<Self>) -> VersionGuard {
        let version = Version::new(self.term, self.next_seq.fetch_add(1, Ordering::SeqCst));
        self.lock().insert(version);
        VersionGuard { state: self.clone(), version }
    }

    /// The highest version at or below which nothing is in flight: a
    /// follower that has pulled everything up to it has every committed entry.
    pub fn safe_watermark(&self) -> Version {
        let next = self.next_seq.load(Ordering::SeqCst);
        let lowest = self.lock().iter().next().copied();
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

/// The nodes that will keep a new blob for `key`: this node first when it
/// has room, then the other live nodes with room, least loaded first, up to
/// `replicas`.
///
/// # Errors
/// `NoSpace` when no node has room.
pub fn pick_holders(node: &Node, key: &Key) -> Result<Vec<(NodeId, String)>> {
    let view = node.view();
    let mut out = Vec::new();
    if node.store.has_room_for(key)? {
        out.push((node.me(), node.cfg.advertise.to_string()));
    }
    let mut others: Vec<(u64, NodeId, String)> = view
        .alive_others()
        .filter(|(_, m)| !m.info.addr.is_empty())
        .filter(|(_, m)| m.info.max_files.is_none_or(|max| m.info.files < max))
        .map(|(id, m)| (m.info.files, id, m.info.addr.clone()))
        .collect();
    others.sort();
    out.extend(others.into_iter().map(|(_, id, addr)| (id, addr)));
    out.truncate(node.cfg.replicas as usize);
    if out.is_empty() {
        return Err(Error::NoSpace("every node is at its max_files".into()));
    }
    Ok(out)
}

/// The smallest majority of `n`.
pub fn majority_of(n: usize) -> usize {
    n / 2 + 1
}

/// Commits `batch`, built under the namespace lock `ns`, here and on every
/// live node at once; releases the lock once the local commit is done (the
/// next change is checked against it) and returns once a majority of the
/// cluster, counting this node, has committed.
///
/// # Errors
/// `Stale` if this node was deposed; `Unavailable` if no majority committed.
pub async fn commit_and_spread<G>(node: &Arc<Node>, state: &Arc<LeaderState>, batch: Batch, ns: G) -> Result<()> {
    let entries = batch.entries.clone();
    // The followers start committing while we do: one disk flush of latency, not two.
    let set = apply_to_others(node, state, entries.clone());
    node.commit(state.term, node.me(), entries, Vec::new()).await?;
    // Only now are the batch's versions out of flight: until the local
    // commit, a pull must not be told everything up to them is here
    // ([`LeaderState::safe_watermark`]), or a follower skips them for good.
    drop(batch);
    drop(ns);
    await_majority(node, state, set).await
}

/// Waits until this node (already committed) and the Apply tasks in `set`
/// make a majority; the rest finish in the background.
async fn await_majority(
    node: &Arc<Node>,
    state: &Arc<LeaderState>,
    mut set: JoinSet<(NodeId, Result<()>)>,
) -> Result<()> {
    let need = node.cfg.majority();
    let mut acks = 1;
    let mut failures = Vec::new();
    while acks < need {
        let Some(res) = join_while_leading(node, state, &mut set).await? else { break };
        match res {
            Ok((_, Ok(()))) => acks += 1,
            Ok((id, Err(e))) => failures.push(format!("node {id}: {e}")),
            Err(e) => failures.push(e.to_string()),
        }
    }
    detach(set);
    if acks >= need {
        return Ok(());
    }
    Err(Error::Unavailable(format!(
        "committed on {acks} of {} nodes, {need} needed ({})",
        node.cfg.cluster_size,
        failures.join("; ")
    )))
}

fn apply_to_others(node: &Arc<Node>, state: &Arc<LeaderState>, entries: Vec<Entry>) -> JoinSet<(NodeId, Result<()>)> {
    let mut set = JoinSet::new();
    // A big batch (a directory rename) goes as several messages under the
    // frame limit; a node counts once it has committed all of them.
    let reqs: Arc<Vec<Request>> = Arc::new(
        split_by_size(entries, APPLY_BYTES)
            .into_iter()
            .map(|entries| Request::Apply { term: state.term, leader: node.me(), entries })
            .collect(),
    );
    for (id, m) in node.view().alive_others() {
        let (node, reqs, addr) = (node.clone(), reqs.clone(), m.info.addr.clone());
        set.spawn(async move {
            let mut res = Ok(());
            for req in reqs.iter() {
                res = match tokio::time::timeout(APPLY_TIMEOUT, node.peers.call(&addr, req)).await {
                    Ok(Ok(Response::Done)) => Ok(()),
                    Ok(Ok(other)) => Err(Error::Protocol(format!("unexpected answer to apply: {other:?}"))),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(Error::Unavailable("apply timed out".into())),
                };
                if res.is_err() {
                    break;
                }
            }
            if let Err(e) = &res {
                log::debug!("node {}: apply on node {id} failed: {e}", node.me());
            }
            (id, res)
        });
    }
    set
}

/// Lets the remaining tasks of a set run to completion on their own.
pub fn detach<T: Send + 'static>(mut set: JoinSet<T>) {
    if set.is_empty() {
        return;
    }
    tokio::spawn(async move { while set.join_next().await.is_some() {} });
}

/// The entries of one namespace change, with their versions held in flight
/// until the batch is committed.
pub struct Batch {
    state: Arc<LeaderState>,
    pub entries: Vec<Entry>,
    guards: Vec<VersionGuard>,
}

impl Batch {
    pub fn new(state: &Arc<LeaderState>) -> Batch {
        Batch { state: state.clone(), entries: Vec::new(), guards: Vec::new() }
    }

    /// A fresh version for an entry of this batch.
    pub fn version(&mut self) -> Version {
        let g = self.state.allocate();
        let v = g.version;
        self.guards.push(g);
        v
    }

    /// Adds `entry` with a fresh version.
    pub fn push(&mut self, entry: Entry) {
        let version = self.version();
        self.entries.push(Entry { version, ..entry });
    }

    /// Records a create or remove inside `dir`: an explicit directory gets
    /// its mtime set to `now_ns`, as POSIX directories do. The root and
    /// directories implied by file paths have no entry to update.
    pub fn touch_dir(&mut self, store: &crate::store::Store, dir: &str, now_ns: i64) -> Result<()> {
        if dir.is_empty() || self.entries.iter().any(|e| e.name == dir) {
            return Ok(());
        }
        if let crate::store::Lookup::Live(e) = store.lookup(dir)? {
            if e.kind == scs_common::Kind::Dir {
                self.push(Entry { mtime_ns: now_ns, ..e });
            }
        }
        Ok(())
    }
}

/// Nanoseconds since the epoch, for mtimes the leader sets.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// Fails once this node may no longer write in `state`'s term: it lost its
/// quorum or its lead. Writes in flight then fail at once (the client retries
/// elsewhere) instead of waiting out their stragglers' timeouts.
pub fn still_leading(node: &Node, state: &LeaderState) -> Result<()> {
    let current = node.writable()?;
    if current.term != state.term {
        return Err(Error::Stale(format!("term {} has ended", state.term)));
    }
    Ok(())
}

/// The next finished task of `set`, checking every 100 ms that this node
/// still leads with a quorum.
pub async fn join_while_leading<T: 'static>(
    node: &Node,
    state: &LeaderState,
    set: &mut JoinSet<T>,
) -> Result<Option<Result<T, tokio::task::JoinError>>> {
    let mut check = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            r = set.join_next() => return Ok(r),
            _ = check.tick() => still_leading(node, state)?,
        }
    }
}

/// Encoded bytes per `Apply` message, well under the frame limit.
const APPLY_BYTES: usize = 2 << 20;

/// Cuts `entries` into runs whose encoding stays under about `max` bytes.
pub fn split_by_size(entries: Vec<Entry>, max: usize) -> Vec<Vec<Entry>> {
    let mut out: Vec<Vec<Entry>> = Vec::new();
    let mut size = 0;
    for e in entries {
        // An entry is its name plus well under 200 bytes of fixed fields and holders.
        let cost = e.name.len() + 200 + 8 * e.holders.len();
        if out.is_empty() || size + cost > max {
            out.push(Vec::new());
            size = 0;
        }
        size += cost;
        if let Some(last) = out.last_mut() {
            last.push(e);
        }
    }
    if out.is_empty() {
        out.push(Vec::new());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use scs_common::{ContentHash, Kind};

    fn entry(name: String) -> Entry {
        Entry {
            name,
            version: Version::new(Term(1), 1),
            kind: Kind::File,
            size: 0,
            hash: ContentHash::default(),
            mode: 0o644,
            mtime_ns: 0,
            deleted: false,
            holders: vec![NodeId(1), NodeId(2), NodeId(3)],
        }
    }

    #[test]
    fn big_batches_are_cut_under_the_frame_limit() {
        let entries: Vec<Entry> = (0..40_000).map(|i| entry(format!("{}/{i}", "d".repeat(200)))).collect();
        let parts = split_by_size(entries, APPLY_BYTES);
        assert!(parts.len() > 1);
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 40_000);
        for p in &parts {
            let bytes =
                rmp_serde::to_vec(&Request::Apply { term: Term(1), leader: NodeId(1), entries: p.clone() }).unwrap();
            assert!(bytes.len() < scs_common::proto::frame::MAX_MESSAGE, "{} bytes", bytes.len());
        }
        assert_eq!(split_by_size(Vec::new(), APPLY_BYTES).len(), 1, "an empty batch is still one message");
    }
}
