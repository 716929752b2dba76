//! Keeping the promise over time (DESIGN section 5): every file back at its
//! replica target after a node is lost, every index in agreement, tombstones
//! forgotten only once every node has them, and every blob re-checked.
//!
//! - [`replicas`] (leader): a file with fewer than `replicas` holders that
//!   are up or gone for less than `repair_delay` gets new holders among the
//!   live nodes with room. That is only a new version of its entry (holders
//!   are added, never dropped); each new holder then fetches the blob from a
//!   live one, as it fetches anything it should keep but lacks ([`crate::sync`]).
//! - [`anti_entropy`] (followers): compares 256 bucket digests of its index
//!   with the leader's, and for a bucket that differs exchanges (key,
//!   version) lists: it takes what it lacks, withdraws what it has of an
//!   earlier term that the leader lacks (a change that never reached a
//!   majority), and offers the rest.
//! - [`tombstones`] (leader): when every configured node is up and every
//!   index digest matches, old tombstones are purged everywhere.
//! - [`scrub`] (every node): re-hashes each blob at a bounded rate; a bad
//!   copy is moved aside and fetched again from a good holder.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use scs_common::proto::rpc::{Moving, Request, Response};
use scs_common::{Error, Inode, Key, MemberState, NodeId, Record, Result, Term, Version};

use crate::copies::{confirmed, give_holders, scan_interval, LiveFiles, ACTIVE_SCAN_SHARE, SCAN_SHARE};
use crate::leader::placement::{self, Rank};
use crate::leader::{commit_and_spread, now_ns, Batch, LeaderState};
use crate::node::Node;
use crate::rebalance;
use crate::store::digest::Digests;
use crate::view::ClusterView;

/// How often the leader checks replica counts.
const REPLICA_INTERVAL: Duration = Duration::from_secs(2);
/// Files given new holders per check: repair is paced, clients come first.
const REPAIRS_PER_ROUND: usize = 256;
/// How often a follower compares its index with the leader's.
const ENTROPY_INTERVAL: Duration = Duration::from_secs(10);
/// Buckets reconciled per comparison.
const BUCKETS_PER_ROUND: usize = 32;
/// How often at most the leader tries to purge tombstones (older than
/// `tombstone_ttl`): every tenth of `tombstone_ttl`, but not more often than
/// this. Each try reads the whole index.
const TOMBSTONE_INTERVAL: Duration = Duration::from_secs(5);
/// A blob file no entry refers to, and whose entry never came, is removed
/// by the scrub after this long (an upload that never committed).
const ORPHAN_AGE: Duration = Duration::from_secs(24 * 3600);
/// Superseded blobs are kept this long for reuse (see store::layout).
const RELEASED_AGE: Duration = Duration::from_secs(600);

/// Whether a member has room for one more file, as it last told us.
fn has_room(view: &ClusterView, id: NodeId) -> bool {
    view.members
        .get(&id)
        .is_some_and(|m| m.alive && placement::has_room(m.info.files + m.info.wanted, m.info.max_files))
}

/// Copies of files on the `leaving` nodes that the other members that take
/// copies lack: fewer of them than the replica target say they keep the
/// blob (asked, not taken from the holder lists: a listed holder may still
/// be fetching). Zero when the leaving nodes can go without a file falling
/// below its target. Reads the index taking at most `share` of a core.
pub async fn copies_to_move(node: &Arc<Node>, leaving: &BTreeSet<NodeId>, share: f64) -> Result<Moving> {
    let members = node.members();
    let staying = |id: NodeId| members.takes_copies(id) && !leaving.contains(&id);
    let takers = members.nodes.keys().filter(|id| staying(**id)).count();
    let target = (node.cfg().replicas as usize).min(takers);
    let mut left = Moving::default();
    let mut pages = LiveFiles::new(share);
    while let Some(page) = pages.next(node).await? {
        let page: Vec<Inode> = page.into_iter().filter(|e| e.holders.iter().any(|h| leaving.contains(h))).collect();
        let kept = confirmed(node, &page, |e| e.holders.iter().copied().filter(|h| staying(*h)).collect()).await?;
        for (entry, kept) in page.iter().zip(kept) {
            if kept < target {
                left.files += 1;
                left.bytes += entry.size;
            }
        }
    }
    Ok(left)
}

/// The leader's replica loop.
pub async fn replicas(node: Arc<Node>) {
    let mut last = Instant::now();
    // Whether the last round gave files new holders: then more may be due,
    // and the next scans faster. (Files below target while their holder's
    // repair delay runs are no work yet.)
    let mut active = false;
    // Whether the last rebalancing round left copies to move.
    let mut moving = false;
    loop {
        // Every interval from the start of the last round (a rebalance
        // round spends most of one pacing its moves), with a pause between.
        let pause = REPLICA_INTERVAL.saturating_sub(last.elapsed()).max(REPLICA_INTERVAL / 10);
        tokio::select! {
            _ = node.shutdown().cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        last = Instant::now();
        let Ok(state) = node.writable() else { continue };
        let members = node.members();
        let draining: BTreeSet<NodeId> =
            members.nodes.iter().filter(|(_, s)| **s == MemberState::Draining).map(|(id, _)| *id).collect();
        if !draining.is_empty() {
            match copies_to_move(&node, &draining, ACTIVE_SCAN_SHARE).await {
                Ok(left) => node.health().set_moving(left.files, left.bytes, Instant::now()),
                Err(e) => log::info!("node {}: cannot count the copies to move: {e}", node.me()),
            }
        }
        let share = if active || !draining.is_empty() { ACTIVE_SCAN_SHARE } else { SCAN_SHARE };
        let repaired = match replica_round(&node, &state, share).await {
            Ok((under, repaired)) => {
                active = repaired > 0;
                node.health().under_replicated.store(under, Ordering::Relaxed);
                if repaired > 0 {
                    log::info!("node {}: gave {repaired} file(s) new holders ({under} below target)", node.me());
                }
                under == 0 && repaired == 0
            }
            Err(e) => {
                log::info!("node {}: replica check stopped: {e}", node.me());
                false
            }
        };
        // Copies move to emptier members once every file is at its target.
        if draining.is_empty() && repaired {
            let share = if moving { ACTIVE_SCAN_SHARE } else { SCAN_SHARE };
            match rebalance::round(&node, &state, REPLICA_INTERVAL, share).await {
                Ok(left) => {
                    moving = left.files > 0;
                    node.health().set_moving(left.files, left.bytes, Instant::now());
                }
                Err(e) => log::info!("node {}: rebalancing stopped: {e}", node.me()),
            }
        }
    }
}

/// One pass over every live file, taking at most `share` of a core;
/// returns (files below target, files repaired).
async fn replica_round(node: &Arc<Node>, state: &Arc<LeaderState>, share: f64) -> Result<(u64, usize)> {
    let view = node.view();
    let now = Instant::now();
    let me = node.me();
    let members = node.members();
    let target = node.replica_target();
    let delay = node.cfg().repair_delay;
    // A holder counts as gone once it has been down longer than repair_delay
    // (members never heard from since we lead: counted from then), and at
    // once when it is draining or no longer a member.
    let gone = |id: NodeId| -> bool {
        if !members.takes_copies(id) {
            return true;
        }
        if id == me {
            return false;
        }
        let down_since = match view.members.get(&id) {
            Some(m) if m.alive => return false,
            Some(m) => m.down_since.unwrap_or(state.started).max(state.started),
            None => state.started,
        };
        now.saturating_duration_since(down_since) >= delay
    };
    let alive = |id: NodeId| id == me || view.members.get(&id).is_some_and(|m| m.alive);
    let mut under = 0u64;
    let mut repaired = 0usize;
    let mut pages = LiveFiles::new(share);
    while let Some(page) = pages.next(node).await? {
        for entry in page {
            let live_copies = entry.holders.iter().filter(|h| members.contains(**h) && alive(**h)).count();
            if live_copies < target {
                under += 1;
            }
            let keep: Vec<NodeId> = entry.holders.iter().copied().filter(|h| !gone(*h)).collect();
            // No live holder left to copy from (a draining one counts): wait
            // for one to return rather than give up on the copies the absent
            // ones still have.
            if !entry.holders.iter().any(|h| members.contains(*h) && alive(*h)) || repaired >= REPAIRS_PER_ROUND {
                continue;
            }
            // Nodes taken out of the membership leave the list once a member
            // that takes copies is up to serve the file, so that a machine
            // that comes back under the same id does not fetch them again.
            let outsiders = entry.holders.iter().any(|h| !members.contains(*h));
            let mut added = Vec::new();
            if keep.len() < target {
                let mut spare: Vec<Rank> = Vec::new();
                let store = node.store();
                if !entry.holders.contains(&me) && members.takes_copies(me) && store.has_room_for(entry.ino)? {
                    let used = store.files() + store.wanted_count();
                    spare.push(Rank::mine(me, used, node.cfg().max_files, store.room()));
                }
                for (id, m) in view.alive_others() {
                    if !entry.holders.contains(&id) && members.takes_copies(id) && has_room(&view, id) {
                        spare.push(Rank::of(id, &m.info));
                    }
                }
                spare.sort();
                added = spare.into_iter().take(target - keep.len()).map(|r| r.id()).collect();
            }
            if added.is_empty() && !outsiders {
                continue;
            }
            // A member must be known to keep the blob before the outsiders'
            // copies are let go: the listed ones may still be fetching.
            let outsiders = outsiders
                && confirmed(node, std::slice::from_ref(&entry), |e| {
                    e.holders.iter().copied().filter(|h| members.contains(*h)).collect()
                })
                .await?[0]
                    > 0;
            if added.is_empty() && !outsiders {
                continue;
            }
            // Members are only ever added here, never dropped: a listed holder
            // may be the only one that really has the bytes (the others may
            // still be fetching), and a node that is dropped throws its copy
            // away when it returns. A node that comes back is one more copy.
            let mut holders: Vec<NodeId> =
                entry.holders.iter().copied().filter(|h| !outsiders || members.contains(*h)).collect();
            holders.extend(added);
            holders.sort();
            if give_holders(node, state, &entry, holders).await? {
                repaired += 1;
            }
        }
    }
    Ok((under, repaired))
}

/// A follower's loop comparing its index with the leader's.
pub async fn anti_entropy(node: Arc<Node>) {
    let me = node.me();
    loop {
        tokio::select! {
            _ = node.shutdown().cancelled() => return,
            _ = tokio::time::sleep(ENTROPY_INTERVAL) => {}
        }
        let view = node.view();
        let (Some(leader), Some(addr)) = (view.leader.filter(|l| *l != me), view.leader_addr()) else { continue };
        // Only a leader that has caught up from a majority is the reference.
        // A node that is not a member compares too: what it kept from before
        // it was taken out, deleted since and its tombstone purged, is
        // withdrawn here before it is a member again.
        if !view.members.get(&leader).is_some_and(|m| m.info.ready) {
            continue;
        }
        match reconcile(&node, &addr, view.term, BUCKETS_PER_ROUND).await {
            Ok((got, withdrawn)) if got + withdrawn > 0 => {
                log::info!("node {me}: index reconciled with leader {leader}: {got} entries in, {withdrawn} withdrawn")
            }
            Ok(_) => {}
            Err(e) => log::debug!("node {me}: cannot compare indexes with leader {leader}: {e}"),
        }
    }
}

async fn call(node: &Node, addr: &str, req: Request) -> Result<Response> {
    tokio::time::timeout(Duration::from_secs(30), node.peers().call(addr, &req))
        .await
        .map_err(|_| Error::Unavailable(format!("{addr} did not answer")))?
}

/// Compares digests with the (caught-up) leader at `addr` and takes its
/// word on what differs. Returns (entries received, entries withdrawn).
///
/// The leader's index is the reference; nothing goes the other way. An
/// entry newer here than at the leader is one the leader never had (a write
/// of an earlier term that reached no majority) or one it let go of (a
/// tombstone purged, the entry being a late copy of what it deleted: an
/// `Apply` that sat in a socket through a partition, say). Handed back to
/// the leader, either would come back to life.
pub async fn reconcile(node: &Arc<Node>, addr: &str, term: Term, buckets: usize) -> Result<(usize, usize)> {
    // Read before the leader's versions: every entry at or below it was
    // committed at the leader before it answers, so it has that entry or a
    // newer one, or purged its tombstone. Read after, it could cover an entry
    // this node pulled after the leader listed its versions. And it must come
    // from this leader or an earlier one: checked below by the term, which
    // moves on before this node follows (and pulls from) another leader.
    let vouched = node.blocking(|s| s.watermark()).await?;
    let theirs = match call(node, addr, Request::Digests).await? {
        Response::Digests(d) => Digests(d),
        other => return Err(Error::Protocol(format!("unexpected answer to digests: {other:?}"))),
    };
    let ours = node.blocking(|s| s.digests()).await?;
    let (mut got, mut withdrawn) = (0, 0);
    for bucket in ours.differing(&theirs).into_iter().take(buckets) {
        let their_versions: HashMap<Key, Version> = match call(node, addr, Request::BucketVersions { bucket }).await? {
            Response::Versions(v) => v.into_iter().collect(),
            other => return Err(Error::Protocol(format!("unexpected answer: {other:?}"))),
        };
        let our_versions: HashMap<Key, Version> = node.blocking(move |s| s.bucket(bucket)).await?.into_iter().collect();
        let need: Vec<Key> =
            their_versions.iter().filter(|(k, v)| our_versions.get(k).is_none_or(|o| o < v)).map(|(k, _)| *k).collect();
        let mut need = need;
        let current = node.view().term;
        if current != term {
            return Err(Error::Unavailable(format!(
                "term {current} began while comparing with the leader of term {term}"
            )));
        }
        for (k, v) in &our_versions {
            if their_versions.get(k).is_some_and(|t| t >= v) {
                continue;
            }
            // The membership record is not withdrawn (a node without one
            // would fall back to its configuration's): the leader commits
            // it again in its term, which supersedes this one.
            if *k == Key::members() {
                continue;
            }
            // Newer here than at the leader, and either from an earlier term
            // (a write that never reached a majority: the leader caught up
            // from a majority, so it has every one that did; its client was
            // told it failed) or vouched for (see above): withdraw it and
            // take the leader's word. Anything else may be a commit the
            // leader made after it listed its versions: left for a later round.
            if v.term < current || (*v <= vouched && v.term == current) {
                let (k, v) = (*k, *v);
                if node.blocking(move |s| s.withdraw(&k, v)).await? {
                    log::info!("node {}: withdrew an entry of term {} the leader does not have", node.me(), v.term);
                    withdrawn += 1;
                }
                if their_versions.contains_key(&k) {
                    need.push(k);
                }
            }
        }
        for keys in need.chunks(500) {
            // An answer holds what fits in a message: ask again for the rest
            // until it holds nothing more (the others were purged meanwhile).
            let mut keys = keys.to_vec();
            while !keys.is_empty() {
                let Response::Records(records) = call(node, addr, Request::RecordsFor { keys: keys.clone() }).await?
                else {
                    break;
                };
                if records.is_empty() {
                    break;
                }
                let answered: BTreeSet<Key> = records.iter().map(Record::key).collect();
                keys.retain(|k| !answered.contains(k));
                got += records.len();
                node.blocking(move |s| s.apply(&records, &[])).await?;
            }
        }
    }
    Ok((got, withdrawn))
}

/// How often the leader audits the namespace.
const AUDIT_INTERVAL: Duration = Duration::from_secs(10);

/// The leader's loop repairing the namespace (see `store::audit`): an inode
/// no name leads to is removed, a link count is set to the number of names,
/// a file in the trash that names lead to comes out of it, a name that
/// leads nowhere (or a directory's second name) goes. Only what
/// two audits in a row found unchanged is repaired, so a change whose
/// records are still arriving is left alone.
pub async fn namespace(node: Arc<Node>) {
    let mut suspects: HashMap<Key, Version> = HashMap::new();
    let mut took = Duration::ZERO;
    loop {
        tokio::select! {
            _ = node.shutdown().cancelled() => return,
            _ = tokio::time::sleep(scan_interval(AUDIT_INTERVAL, took)) => {}
        }
        let Ok(state) = node.writable() else {
            suspects.clear();
            continue;
        };
        match audit_round(&node, &state, &mut suspects, &mut took).await {
            Ok(0) => {}
            Ok(n) => log::info!("node {}: repaired {n} namespace record(s) left inconsistent by a merge", node.me()),
            Err(e) => log::info!("node {}: namespace audit stopped: {e}", node.me()),
        }
    }
}

async fn audit_round(
    node: &Arc<Node>,
    state: &Arc<LeaderState>,
    suspects: &mut HashMap<Key, Version>,
    took: &mut Duration,
) -> Result<usize> {
    let started = Instant::now();
    let audit = node.blocking(|s| s.audit()).await?;
    *took = started.elapsed();
    let now = now_ns();
    let mut fixes: Vec<(Key, Version, Record)> = Vec::new();
    for i in audit.orphans {
        log::info!("node {}: namespace audit: orphan {}", node.me(), crate::leader::detail(&Record::Inode(i.clone())));
        fixes.push((i.key(), i.version, Record::Inode(i.tombstone(now))));
    }
    for (i, names) in audit.miscounted {
        log::info!(
            "node {}: namespace audit: {} has {names} name(s)",
            node.me(),
            crate::leader::detail(&Record::Inode(i.clone()))
        );
        let fixed = Inode { nlink: names, ctime_ns: now, ..i.clone() };
        fixes.push((i.key(), i.version, Record::Inode(fixed)));
    }
    for (i, names) in audit.named_in_trash {
        log::info!(
            "node {}: namespace audit: {} has {names} name(s): out of the trash",
            node.me(),
            crate::leader::detail(&Record::Inode(i.clone()))
        );
        let back = Inode { trashed: None, nlink: names, ctime_ns: now, ..i.clone() };
        fixes.push((i.key(), i.version, Record::Inode(back)));
    }
    for d in audit.stray_names {
        if let Some(why) = audit.why.get(&d.key()) {
            log::info!(
                "node {}: namespace audit: stray entry {:?} in {} -> {}: {why}",
                node.me(),
                d.name,
                d.parent,
                d.child
            );
        }
        let gone = scs_common::Dentry { deleted: true, child: scs_common::Ino::NONE, stamp_ns: now, ..d.clone() };
        fixes.push((d.key(), d.version, Record::Dentry(gone)));
    }
    let found: HashMap<Key, Version> = fixes.iter().map(|(k, v, _)| (*k, *v)).collect();
    let confirmed: Vec<Record> =
        fixes.into_iter().filter(|(k, v, _)| suspects.get(k) == Some(v)).map(|(_, _, r)| r).collect();
    *suspects = found;
    if confirmed.is_empty() {
        return Ok(0);
    }
    let ns = state.ns.lock().await;
    let mut batch = Batch::new(state);
    for r in confirmed {
        // Changed since the audit: left for the next one.
        let current = node.store().record(&r.key())?.map(|c| c.version());
        if current == suspects.get(&r.key()).copied() {
            log::info!("node {}: namespace audit: {}", node.me(), r.describe());
            batch.push(r);
        }
    }
    let n = batch.records.len();
    if n > 0 {
        commit_and_spread(node, state, batch, ns).await?;
    }
    Ok(n)
}

/// The leader's loop purging tombstones every node has.
pub async fn tombstones(node: Arc<Node>) {
    let mut took = Duration::ZERO;
    loop {
        tokio::select! {
            _ = node.shutdown().cancelled() => return,
            _ = tokio::time::sleep(scan_interval(TOMBSTONE_INTERVAL.max(node.cfg().tombstone_ttl / 10), took)) => {}
        }
        let Ok(state) = node.writable() else { continue };
        match purge_round(&node, &state, &mut took).await {
            Ok(0) => {}
            Ok(n) => log::info!("node {}: purged {n} tombstone(s) every node had", node.me()),
            Err(e) => log::debug!("node {}: tombstones kept for now: {e}", node.me()),
        }
    }
}

/// One try at purging; `took` gets how long the index took to scan.
async fn purge_round(node: &Arc<Node>, state: &Arc<LeaderState>, took: &mut Duration) -> Result<usize> {
    let view = node.view();
    let others: Vec<String> = view.alive_others().map(|(_, m)| m.info.addr.clone()).collect();
    if others.len() + 1 < node.members().len() {
        return Err(Error::Unavailable("not every member is up".into()));
    }
    let before = now_ns() - node.cfg().tombstone_ttl.as_nanos() as i64;
    let started = Instant::now();
    let items = node.blocking(move |s| s.old_tombstones(before, 1000)).await?;
    *took = started.elapsed();
    if items.is_empty() {
        return Ok(0);
    }
    // Every index must match ours: then every node has every tombstone, and
    // no node keeps an older live version that could come back.
    let ours = node.blocking(|s| s.digests()).await?;
    for addr in &others {
        match call(node, addr, Request::Digests).await? {
            Response::Digests(d) if d == ours.0 => {}
            _ => return Err(Error::Unavailable(format!("the index at {addr} differs"))),
        }
    }
    let req = Request::Purge { term: state.term, leader: node.me(), items: items.clone() };
    for addr in &others {
        call(node, addr, req.clone()).await?;
    }
    node.blocking(move |s| s.purge(&items)).await
}

/// The most of its time the scrub spends working: after a blob that took
/// `t` to check, it rests at least `t × (1 / SCRUB_SHARE - 1)`. A byte rate
/// alone would let it check thousands of small files a second, each an
/// index read, an open and a hash: a core's worth of work on every node at
/// once, every `scrub_interval`, that the users' requests then wait for.
const SCRUB_SHARE: f64 = 0.1;

/// How long the scrub rests after checking a blob of `size` bytes in
/// `took`: the longer of what `rate` (bytes a second) allows and what
/// keeps it to [`SCRUB_SHARE`] of the time.
fn scrub_pause(size: u64, rate: u64, took: Duration) -> Duration {
    let by_bytes = Duration::from_secs_f64(size as f64 / rate.max(1) as f64);
    let by_share = took.mul_f64(1.0 / SCRUB_SHARE);
    by_bytes.max(by_share).saturating_sub(took)
}

/// Waits out the scrub's pause after `size` bytes checked in `took`;
/// `false` once the node is stopping.
async fn paced(node: &Node, size: u64, rate: u64, took: Duration) -> bool {
    tokio::select! {
        _ = node.shutdown().cancelled() => false,
        _ = tokio::time::sleep(scrub_pause(size, rate, took)) => true,
    }
}

/// Every node's scrub: re-hash held blobs at `scrub_bytes_per_sec`, and
/// with at most [`SCRUB_SHARE`] of its time.
pub async fn scrub(node: Arc<Node>) {
    let rate = node.cfg().scrub_bytes_per_sec;
    if rate == 0 {
        return;
    }
    let me = node.me();
    loop {
        tokio::select! {
            _ = node.shutdown().cancelled() => return,
            _ = tokio::time::sleep(node.cfg().scrub_interval) => {}
        }
        let started = Instant::now();
        let Ok(blobs) = node.blocking(|s| s.held_blobs()).await else { continue };
        let (mut checked, mut bad, mut bytes) = (0usize, 0usize, 0u64);
        for (key, version) in blobs {
            let t = Instant::now();
            let size = node
                .blocking(move |s| Ok(s.live_content(&key, version)?.map(|i| i.size).unwrap_or(0)))
                .await
                .unwrap_or(0);
            match node.blocking(move |s| s.check_blob(&key, version)).await {
                Ok(true) => {}
                Ok(false) => {
                    bad += 1;
                    let _ = node.blocking(move |s| s.quarantine(&key, version)).await;
                }
                Err(e) => log::warn!("node {me}: scrub could not read {key:?}: {e}"),
            }
            checked += 1;
            bytes += size;
            if !paced(&node, size, rate, t.elapsed()).await {
                return;
            }
        }
        // Small files' content, kept in the index by every node.
        let Ok(inline) = node.blocking(|s| s.inline_files()).await else { continue };
        let mut small = 0usize;
        for (key, size) in inline {
            let size = size.min(scs_common::inode::INLINE_MAX);
            let t = Instant::now();
            match node.blocking(move |s| s.check_inline_copy(&key)).await {
                Ok(None) => {}
                Ok(Some(version)) => {
                    bad += 1;
                    node.store().count_corrupt();
                    log::error!("node {me}: the content of small file {key:?} {version:?} failed its hash");
                    restore_inline(&node, key, version).await;
                }
                Err(e) => log::warn!("node {me}: scrub could not read {key:?}: {e}"),
            }
            small += 1;
            bytes += size;
            if !paced(&node, size, rate, t.elapsed()).await {
                return;
            }
        }
        let orphans = node.blocking(|s| s.sweep_orphans(ORPHAN_AGE, RELEASED_AGE)).await.unwrap_or(0);
        log::info!(
            "node {me}: scrub checked {checked} blobs and {small} small files ({} MiB) in {:.0?}: {bad} bad, {orphans} orphans removed",
            bytes >> 20,
            started.elapsed()
        );
    }
}

/// Puts back the content of a small file whose copy here failed its hash,
/// from the first other member (the leader first) that has the same record
/// with content that passes. Every node keeps that content, so one usually does.
async fn restore_inline(node: &Arc<Node>, key: Key, version: Version) {
    let me = node.me();
    let view = node.view();
    let leader = view.leader.filter(|l| *l != me);
    let others = leader.into_iter().chain(view.members.keys().copied().filter(|id| *id != me && Some(*id) != leader));
    for id in others {
        let Some(addr) = view.addr_of(id) else { continue };
        let Ok(Response::Records(records)) = call(node, addr, Request::RecordsFor { keys: vec![key] }).await else {
            continue;
        };
        let good = records.into_iter().find_map(|r| match r {
            Record::Inode(i) if i.key() == key && i.version == version && i.check_inline().is_ok() => Some(i),
            _ => None,
        });
        let Some(good) = good else { continue };
        match node.blocking(move |s| s.restore_inline(&good)).await {
            Ok(true) => {
                log::warn!("node {me}: put back the content of small file {key:?} from node {id}");
                return;
            }
            Ok(false) => return,
            Err(e) => log::warn!("node {me}: cannot put back the content of small file {key:?}: {e}"),
        }
    }
    log::warn!("node {me}: no other node has a good copy of small file {key:?} {version:?} yet");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scrub_rests_for_the_bytes_it_read_or_nine_times_its_work_whichever_is_longer() {
        let rate = 32 << 20;
        // A big blob: the byte rate rules (32 MiB at 32 MiB/s is a second).
        let p = scrub_pause(32 << 20, rate, Duration::from_millis(100));
        assert_eq!(p, Duration::from_millis(900));
        // A small file: its check costs far more than its bytes buy.
        let p = scrub_pause(4096, rate, Duration::from_micros(300));
        assert_eq!(p, Duration::from_micros(2700));
        // A check slower than its whole slot: no rest owed by the bytes,
        // still nine times its work.
        let p = scrub_pause(0, rate, Duration::from_millis(5));
        assert_eq!(p, Duration::from_millis(45));
    }
}
