//! What a node does while it leads: hands out versions and inode numbers,
//! picks holders, commits records on a majority, and first catches up from
//! a majority.
//!
//! # Layout
//! - this file: [`LeaderState`], holder choice, inode numbers and the majority commit.
//! - [`upload`]: streaming a file to the holders with a pipelined fan-out.
//! - [`placement`]: which nodes get copies (the most room first).
//! - [`locks`]: advisory locks across mounts, in this term's memory.
//! - [`members`]: changing the membership, one node at a time.
//! - [`meta`]: namespace changes (make, link, remove, rename, attributes):
//!   the rules of `scs_common::namespace` against the index, then a majority commit.
//! - [`outbox`]: changes on their way to a majority, a round at a time (group commit).
//! - [`trash`]: listing, restoring, purging and expiring the trash.

pub mod locks;
pub mod members;
pub mod meta;
pub mod outbox;
pub mod placement;
pub mod state;
pub mod trash;
pub mod upload;

pub use state::{LeaderState, UploadMark, VersionGuard};

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use scs_common::inode::NextIno;
use scs_common::proto::rpc::{Request, Response};
use scs_common::{Error, Ino, Members, NodeId, Record, Result, Term, Version};

use crate::link::Control;
use crate::metrics::METRICS;
use crate::node::Node;

/// How long a follower may take to commit an `Apply`.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The nodes that will keep a new blob of inode `ino`, `size` bytes long
/// when known: the live nodes with room for it (under their `max_files`,
/// and with the bytes free on their disk, as they last said), the emptiest
/// first (see [`placement`]), up to `replicas`.
///
/// # Errors
/// `NoSpace` when no node has room.
pub fn pick_holders(node: &Node, ino: Ino, size: Option<u64>) -> Result<Vec<(NodeId, String)>> {
    let view = node.view();
    let store = node.store();
    let members = node.members();
    let fits = |(free, total): (u64, u64)| size.is_none_or(|s| crate::store::blob_room(free, total) >= s);
    let mut ranked: Vec<(placement::Rank, String)> = Vec::new();
    let mut short_of_bytes = false;
    if members.takes_copies(node.me()) && store.has_room_for(ino)? {
        let room = store.room();
        if fits(room) {
            let used = store.files() + store.wanted_count();
            let mine = placement::Rank::mine(node.me(), used, node.cfg().max_files, room);
            ranked.push((mine, node.cfg().advertise.to_string()));
        } else {
            short_of_bytes = true;
        }
    }
    for (id, m) in view.alive_others() {
        if !members.takes_copies(id) || m.info.addr.is_empty() || !placement::has_room(m.info.files, m.info.max_files) {
            continue;
        }
        if !fits((m.info.disk_free, m.info.disk_total)) {
            short_of_bytes = true;
            continue;
        }
        ranked.push((placement::Rank::of(id, &m.info), m.info.addr.clone()));
    }
    ranked.sort();
    ranked.truncate(node.replica_target());
    if ranked.is_empty() {
        return Err(Error::NoSpace(match size {
            Some(size) if short_of_bytes => format!("no node has {size} bytes free for the file"),
            _ => "every node is at its max_files".into(),
        }));
    }
    Ok(ranked.into_iter().map(|(r, addr)| (r.id(), addr)).collect())
}

/// The smallest majority of `n`.
pub fn majority_of(n: usize) -> usize {
    n / 2 + 1
}

/// Commits `batch`, built under the namespace lock `ns`, here and on every
/// live node, and returns once a majority of the cluster, counting this
/// node, has committed. The lock is released as soon as the batch is in
/// this node's index (or failed to go in, which ends the term first): the
/// next change is checked against it, and goes to the followers in the
/// same or a later round (see [`outbox`]), so it is never on a majority
/// while this one is not. A membership change holds the lock until it is
/// on a majority.
///
/// If this node's commit fails (a full or failing disk), the followers may
/// have committed what this node has not, and every later change would be
/// checked against an index that lacks it; if no majority commits, the
/// change may be here alone. Either way the term is given up: nothing
/// more is served in it, and this node leads a new one, whose catch-up from
/// a majority settles whether the change took effect.
///
/// # Errors
/// `Stale` if this node was deposed or its own commit failed (the change
/// may have been applied); `Unavailable` if no majority committed.
pub async fn commit_and_spread<G>(node: &Arc<Node>, state: &Arc<LeaderState>, batch: Batch, ns: G) -> Result<()> {
    commit_with(node, state, batch, ns, Spread::default()).await
}

/// How a commit goes beyond the live members.
#[derive(Default)]
pub struct Spread {
    /// Nodes to send it to besides the live members (a node being added).
    pub also: Vec<(NodeId, String)>,
    /// Wait for the majority even if this node stops leading meanwhile
    /// (it took itself out of the members, and steps down at once).
    pub outlive_lead: bool,
}

/// [`commit_and_spread`] with a [`Spread`]. A majority is counted on the
/// membership in force when the commit started and on the one in force
/// when it ends, so a commit that overlaps a membership change (or is one)
/// reaches a majority of both.
pub async fn commit_with<G>(
    node: &Arc<Node>,
    state: &Arc<LeaderState>,
    batch: Batch,
    ns: G,
    spread: Spread,
) -> Result<()> {
    if state.has_failed() {
        return Err(term_given_up(node, state));
    }
    if log::log_enabled!(log::Level::Debug) {
        let what: Vec<String> = batch.records.iter().map(detail).collect();
        log::debug!("node {}: commits in term {}: {}", node.me(), state.term, what.join("; "));
    }
    let members = batch.records.iter().any(|r| matches!(r, Record::Members(_)));
    if !members && spread.also.is_empty() && !spread.outlive_lead {
        let records = batch.records.clone();
        let mut outcome = None;
        // Queued at once: the followers may get it while this node takes it.
        let queue = |local| outcome = Some(outbox::send(node, state, batch, local));
        if let Err(e) = node.commit_local(state.term, records, queue).await {
            if outcome.is_none() {
                return Err(give_up_locally(node, state, e).await);
            }
            // Before the lock is free: no change may be checked against an
            // index that lacks this one.
            give_up(node, state, &format!("a commit failed here ({e})")).await;
        }
        drop(ns);
        let Some(outcome) = outcome else { return Err(round_lost()) };
        return outcome.await.unwrap_or_else(|_| Err(round_lost()));
    }
    // A membership change goes alone, after every change before it, and
    // holds the lock until it is on a majority: no other commit while two
    // memberships count, and the next change is planned from this one.
    state.outbox.drained().await;
    if state.has_failed() {
        return Err(term_given_up(node, state));
    }
    let before = node.members();
    let records = batch.records.clone();
    let set = apply_to_others(node, state, split_by_size(records.clone(), RECORDS_BYTES), spread.also);
    let started = Instant::now();
    let committed = node.commit(state.term, node.me(), records, Vec::new()).await.map(drop);
    METRICS.leader_local.since(started);
    let res = on_majority(node, state, set, &before, spread.outlive_lead, committed, batch).await;
    drop(ns);
    res
}

/// Sends `records`, already committed here, to every live node and waits
/// until a majority of the cluster (counting this node) has them: for a new
/// leader before it serves (see `sync::lead`), so it is not tied to the
/// lead it has not taken up yet. Records keep their versions: a node that
/// has a newer one keeps it.
///
/// # Errors
/// `Unavailable` when no majority committed them.
pub async fn spread_committed(node: &Arc<Node>, state: &Arc<LeaderState>, records: Vec<Record>) -> Result<()> {
    let before = node.members();
    let set = apply_to_others(node, state, split_by_size(records, RECORDS_BYTES), Vec::new());
    await_majority(node, state, set, &before, true).await
}

/// The end of a commit sent to the followers as `set`, once this node's
/// own commit came out as `local`: `versions` (the commit's [`Batch`]es)
/// are let go, and the outcome is a majority's. Either failure gives the
/// term up.
async fn on_majority<V>(
    node: &Arc<Node>,
    state: &Arc<LeaderState>,
    set: JoinSet<(NodeId, Result<()>)>,
    before: &Members,
    outlive_lead: bool,
    local: Result<()>,
    versions: V,
) -> Result<()> {
    if let Err(e) = local {
        detach(set);
        return Err(give_up_locally(node, state, e).await);
    }
    // Only now are the versions out of flight: until this node's commit,
    // a pull must not be told everything up to them is here
    // ([`LeaderState::safe_watermark`]), or a follower skips them for good.
    drop(versions);
    let started = Instant::now();
    let res = await_majority(node, state, set, before, outlive_lead).await;
    METRICS.leader_majority.since(started);
    if let Err(e) = &res {
        // It may be on this node alone, and every change after it was
        // checked against it.
        give_up(node, state, &format!("a change reached no majority ({e})")).await;
    }
    res
}

/// A record in a few words, with what the namespace's rules depend on:
/// for an inode its kind, link count, parent and whether it is gone or in
/// the trash; for an entry where it is and what it leads to.
pub fn detail(r: &Record) -> String {
    match r {
        Record::Inode(i) => {
            let state = if i.deleted {
                "gone".to_string()
            } else if let Some(t) = &i.trashed {
                format!("trashed from {:?} in {} at {}", t.name, t.dir, t.at_ns)
            } else {
                format!("nlink {} parent {}", i.nlink, i.parent)
            };
            format!("inode {} {:?} {} {state}", i.ino, i.version, i.kind.as_str())
        }
        Record::Dentry(d) if d.deleted => format!("entry {:?} in {} {:?} gone", d.name, d.parent, d.version),
        Record::Dentry(d) => {
            format!("entry {:?} in {} {:?} -> {} {}", d.name, d.parent, d.version, d.child, d.kind.as_str())
        }
        other => other.describe(),
    }
}

/// The error for a change refused because the term was given up.
pub(super) fn term_given_up(node: &Node, state: &LeaderState) -> Error {
    Error::Unavailable(format!("node {} gave up term {} after a failed commit", node.me(), state.term))
}

/// The error for a change whose round ended without an answer.
pub(super) fn round_lost() -> Error {
    Error::Stale("the leader's commit round for this change ended early; it may have been applied".into())
}

/// This node's own commit of a change failed: the term is given up (see
/// [`commit_and_spread`]), unless it is over already. The error for the caller.
async fn give_up_locally(node: &Arc<Node>, state: &Arc<LeaderState>, e: Error) -> Error {
    if matches!(e, Error::Stale(_)) {
        state.fail();
        return e;
    }
    give_up(node, state, &format!("a commit failed here ({e})")).await;
    Error::Stale(format!("this leader could not commit the change itself ({e}); it may have been applied"))
}

/// Ends the term for `why`: nothing more is served in it, and this node
/// leads a new one to catch up from a majority again.
async fn give_up(node: &Arc<Node>, state: &Arc<LeaderState>, why: &str) {
    if state.fail() {
        log::warn!("node {}: {why} in term {}; leading a new term to catch up again", node.me(), state.term);
        node.tell_driver(Control::Redeclare { term: state.term }).await;
    }
}

/// Waits until this node (already committed) and the Apply tasks in `set`
/// make a majority of `before` and of the membership in force now; the
/// rest finish in the background.
async fn await_majority(
    node: &Arc<Node>,
    state: &Arc<LeaderState>,
    mut set: JoinSet<(NodeId, Result<()>)>,
    before: &Members,
    outlive_lead: bool,
) -> Result<()> {
    let mut acks = BTreeSet::from([node.me()]);
    let mut failures = Vec::new();
    let enough = |acks: &BTreeSet<NodeId>| before.has_majority(acks) && node.members().has_majority(acks);
    while !enough(&acks) {
        let next = if outlive_lead { set.join_next().await } else { join_while_leading(node, state, &mut set).await? };
        let Some(res) = next else { break };
        match res {
            Ok((id, Ok(()))) => {
                acks.insert(id);
            }
            Ok((id, Err(e))) => failures.push(format!("node {id}: {e}")),
            Err(e) => failures.push(e.to_string()),
        }
    }
    detach(set);
    if enough(&acks) {
        return Ok(());
    }
    let now = node.members();
    Err(Error::Unavailable(format!(
        "committed on {} of {} members, {} needed ({})",
        acks.iter().filter(|id| now.contains(**id)).count(),
        now.len(),
        now.majority(),
        failures.join("; ")
    )))
}

/// Sends `messages` (runs of records, each under the frame limit: a big
/// batch goes as several) to every live node and `also`; a node counts once
/// it has committed all of them.
fn apply_to_others(
    node: &Arc<Node>,
    state: &Arc<LeaderState>,
    messages: Vec<Vec<Record>>,
    also: Vec<(NodeId, String)>,
) -> JoinSet<(NodeId, Result<()>)> {
    let mut set = JoinSet::new();
    let reqs: Arc<Vec<Request>> = Arc::new(
        messages.into_iter().map(|records| Request::Apply { term: state.term, leader: node.me(), records }).collect(),
    );
    let view = node.view();
    let members = view.alive_others().map(|(id, m)| (id, m.info.addr.clone()));
    for (id, addr) in members.chain(also) {
        let (node, reqs) = (node.clone(), reqs.clone());
        set.spawn(async move {
            let mut res = Ok(());
            for req in reqs.iter() {
                res = match tokio::time::timeout(APPLY_TIMEOUT, node.peers().call(&addr, req)).await {
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

/// The records of one change, with their versions held in flight until
/// the batch is committed.
pub struct Batch {
    state: Arc<LeaderState>,
    pub records: Vec<Record>,
    guards: Vec<VersionGuard>,
}

impl Batch {
    pub fn new(state: &Arc<LeaderState>) -> Batch {
        Batch { state: state.clone(), records: Vec::new(), guards: Vec::new() }
    }

    /// A fresh version for a record of this batch.
    pub fn version(&mut self) -> Version {
        let g = self.state.allocate();
        let v = g.version;
        self.guards.push(g);
        v
    }

    /// Adds `record` with a fresh version.
    pub fn push(&mut self, mut record: Record) {
        let version = self.version();
        record.set_version(version);
        self.records.push(record);
    }
}

/// Inode numbers handed out at a time: one record on a majority per block.
const INO_BLOCK: u64 = 1 << 16;

/// Makes sure `need` inode numbers are reserved: when fewer are left, the
/// next block is reserved by committing a higher count on a majority
/// before any number of it is handed out, so no later leader hands one out
/// again.
pub async fn ensure_inos(node: &Arc<Node>, state: &Arc<LeaderState>, need: u64) -> Result<()> {
    // Held until the block is handed out: the namespace lock is free
    // before that, and a second caller would reserve a block of its own.
    let _one = state.reserving.lock().await;
    let ns = state.ns.lock().await;
    if state.inos_left() >= need {
        return Ok(());
    }
    let next = node.store().next_ino()?.0;
    let end = next.checked_add(need.max(INO_BLOCK)).ok_or_else(|| Error::NoSpace("inode numbers ran out".into()))?;
    let mut batch = Batch::new(state);
    batch.push(Record::NextIno(NextIno { version: Version::ZERO, next: Ino(end), stamp_ns: now_ns() }));
    commit_and_spread(node, state, batch, ns).await?;
    state.set_inos(next, end);
    Ok(())
}

/// Nanoseconds since the epoch, for mtimes the leader sets.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// Fails once this node may no longer write in `state`'s term: it lost its
/// quorum or its lead. Writes in flight then fail at once (the client retries
/// elsewhere) instead of waiting out their stragglers' timeouts.
pub fn still_leading(node: &Node, state: &LeaderState) -> Result<()> {
    if state.has_failed() {
        return Err(Error::Stale(format!("term {} was given up after a failed commit", state.term)));
    }
    match node.writable() {
        Ok(current) if current.term == state.term => Ok(()),
        // What a new leader commits while it catches up (the root, the
        // membership in its term) comes before it serves: it leads its
        // term with a quorum, and that is enough.
        Err(Error::Unavailable(_)) if !state.served() && catching_up_in(node, state.term) => Ok(()),
        // Asked while a change is on its way (committed here, perhaps
        // elsewhere): the client must hear "it may have been applied", never
        // "not the leader", which says it was not, so that its retry counts
        // a "no such file" or "exists" as its own earlier success.
        Ok(_) | Err(Error::NotLeader(_)) => Err(Error::Stale(format!("term {} has ended", state.term))),
        Err(e) => Err(e),
    }
}

/// Whether this node leads `term` with a quorum and its lease, as the
/// leader state of that term, not yet serving.
fn catching_up_in(node: &Node, term: Term) -> bool {
    node.view().leads_in(term) && node.lease_valid() && node.leader_state().is_some_and(|l| l.term == term)
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

/// Encoded bytes of records per message (`Apply`, `Pulled`, `Records`),
/// well under the frame limit: a record may carry 256 KiB of extended
/// attributes, or a small file's content.
pub const RECORDS_BYTES: usize = 2 << 20;

/// Cuts `items` into runs whose encoding stays under about `max` bytes.
pub fn split_by_size<T: serde::Serialize>(items: Vec<T>, max: usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut size = 0;
    for e in items {
        let cost = rmp_serde::to_vec(&e).map(|b| b.len()).unwrap_or(max) + 16;
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
    use scs_common::{Dentry, Kind, Term};

    fn dentry(name: String) -> Record {
        Record::Dentry(Dentry {
            parent: Ino(7),
            name,
            version: Version::new(Term(1), 1),
            child: Ino(9),
            kind: Kind::File,
            deleted: false,
            stamp_ns: 0,
        })
    }

    #[test]
    fn big_batches_are_cut_under_the_frame_limit() {
        let records: Vec<Record> = (0..40_000).map(|i| dentry(format!("{}{i}", "d".repeat(200)))).collect();
        let parts = split_by_size(records, RECORDS_BYTES);
        assert!(parts.len() > 1);
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 40_000);
        for p in &parts {
            let bytes =
                rmp_serde::to_vec(&Request::Apply { term: Term(1), leader: NodeId(1), records: p.clone() }).unwrap();
            assert!(bytes.len() < scs_common::proto::frame::MAX_MESSAGE, "{} bytes", bytes.len());
        }
        assert_eq!(split_by_size(Vec::<Record>::new(), RECORDS_BYTES).len(), 1, "an empty batch is still one message");
    }

    #[test]
    fn inode_numbers_are_handed_out_once_from_the_reserved_block() {
        let state = LeaderState::new(Term(1));
        assert_eq!(state.take_inos(1), None, "nothing is handed out before a block is reserved");
        state.set_inos(100, 110);
        assert_eq!(state.take_inos(4), Some(Ino(100)));
        assert_eq!(state.take_inos(4), Some(Ino(104)));
        assert_eq!(state.take_inos(4), None, "two are left");
        assert_eq!(state.inos_left(), 2);
    }
}
