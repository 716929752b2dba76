//! Catching up (DESIGN sections 3 and 5): a new leader pulls what it lacks
//! from a majority before it serves; every other node pulls from the leader
//! every second, and every node fetches the blobs it should keep but lacks.
//! Records carry versions and applying one is idempotent (the highest
//! version wins), so a pull can be repeated or overlap live replication.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use scs_common::conn::Connection;
use scs_common::proto::gossip::Role;
use scs_common::proto::rpc::{Message, Request, Response};
use scs_common::{Error, Ino, Inode, Key, Members, NodeId, Record, Result, Term, Version};

use crate::leader::{commit_and_spread, now_ns, Batch, LeaderState};
use crate::link::Control;
use crate::node::Node;
use crate::transfer::BlobSink;

/// Records per `Pulled` batch.
const PULL_BATCH: usize = 500;
/// How often a follower pulls from its leader.
const SYNC_INTERVAL: Duration = Duration::from_millis(1000);
/// How often a leader stores the watermark its followers' pulls settle
/// (see [`store_settled`]).
const SETTLED_INTERVAL: Duration = Duration::from_secs(5);
/// Wanted blobs fetched per round.
const FETCH_BATCH: usize = 64;
/// Bytes per second a node spends fetching copies it lacks.
const FETCH_RATE: u64 = 128 << 20;

/// Answers a `Pull` from node `from`: with a fence, first moves to the new
/// term and waits out commits of older terms; then streams every entry
/// newer than `since`.
pub async fn serve_pull(
    node: &Arc<Node>,
    conn: &mut Connection,
    from: NodeId,
    since: Version,
    fence: Option<(Term, NodeId)>,
) -> Result<()> {
    if let Some((term, leader)) = fence {
        node.admit(term, leader).await?;
        node.fence_barrier().await?;
    }
    // A leader that has not caught up from a majority yet must not be taken
    // as the reference: a follower would skip what it has yet to receive.
    let view = node.view();
    if fence.is_none() && view.role == Role::Leader && !view.ready {
        return Err(Error::Unavailable("the leader is still catching up".into()));
    }
    // Taken before reading: every version at or below it is already committed here.
    let watermark = match node.leader_state() {
        Some(state) if fence.is_none() && state.has_failed() => {
            return Err(Error::Unavailable("the leader is catching up again after a failed commit".into()));
        }
        Some(state) if view.role == Role::Leader && view.ready && state.term == view.term => {
            if fence.is_none() {
                state.note_pull(from, since);
                store_settled(node, &state).await;
            }
            state.safe_watermark()
        }
        // To a new leader catching up: how far this node is known to have
        // every record (see `lead`, which tells from it what never reached
        // a majority).
        _ if fence.is_some() => {
            let stored = node.blocking(|s| s.watermark()).await?;
            node.leader_state().and_then(|s| s.vouched()).map_or(stored, |w| w.max(stored))
        }
        _ => Version::ZERO,
    };
    // Pages go by (version, key): records an upgrade made from one entry
    // of format 1 share its version.
    let mut cursor = (since, Key([0xff; 32]));
    loop {
        let batch = node.blocking(move |s| s.after(cursor, PULL_BATCH)).await?;
        let more = batch.len() == PULL_BATCH;
        if let Some(last) = batch.last() {
            cursor = (last.version(), last.key());
        }
        // Cut by size too: 500 small files with their content would not fit
        // in one message.
        let mut parts = crate::leader::split_by_size(batch, crate::leader::RECORDS_BYTES).into_iter().peekable();
        while let Some(records) = parts.next() {
            let more = more || parts.peek().is_some();
            conn.send_response(Response::Pulled { records, more, watermark }).await?;
        }
        if !more {
            return Ok(());
        }
    }
}

/// Stores, every [`SETTLED_INTERVAL`], the watermark up to which a majority
/// has every record this leader has (see [`settled_now`]), as its followers
/// store theirs from their pulls. Restarted after a crash, it then catches
/// up from there: before, it kept the one it caught up to when its term
/// began, and pulled every record of its whole lead again (200,000 records
/// and 1.9 s after leading the making of 100,000 files). Not what it
/// vouches for itself: that covers its own changes before a majority has
/// them, and a new term of its own catches up from its stored watermark,
/// looking only above it for what may be on no majority (see
/// `spread_unsettled`).
async fn store_settled(node: &Arc<Node>, state: &Arc<LeaderState>) {
    if !state.settled_due(SETTLED_INTERVAL) {
        return;
    }
    let Some(settled) = settled_now(node, state) else { return };
    state.settled_stored();
    if let Err(e) = node.blocking(move |s| s.raise_watermark(settled)).await {
        log::info!("node {}: cannot store the settled watermark {settled:?}: {e}", node.me());
    }
}

/// [`LeaderState::settled`] on the membership in force, unless a change of
/// the membership is on its way to a majority (it holds the namespace lock
/// until then, and a majority of both counts meanwhile) or another change
/// holds the lock: `None` then, and the next pull asks again.
pub fn settled_now(node: &Node, state: &LeaderState) -> Option<Version> {
    let _ns = state.ns.try_lock().ok()?;
    state.settled(node.me(), &node.members())
}

/// What a pull brought: how many records were new here, the sender's
/// watermark, and the version of each record it sent.
pub struct Pulled {
    pub applied: usize,
    pub watermark: Version,
    pub sent: HashMap<Key, Version>,
}

/// Pulls every record newer than `since` from the node at `addr` and applies
/// it here.
pub async fn pull_from(node: &Arc<Node>, addr: &str, since: Version, fence: Option<(Term, NodeId)>) -> Result<Pulled> {
    let mut conn = node.peers().get(addr).await?;
    conn.send(&Message::Request(Request::Pull { since, fence })).await?;
    let mut applied = 0;
    let mut sent = HashMap::new();
    loop {
        match conn.recv_response().await? {
            Response::Pulled { records, more, watermark } => {
                crate::metrics::METRICS
                    .records_pulled
                    .fetch_add(records.len() as u64, std::sync::atomic::Ordering::Relaxed);
                for r in &records {
                    sent.insert(r.key(), r.version());
                }
                applied += node
                    .blocking(move |s| match s.not_held(records)? {
                        news if news.is_empty() => Ok(0),
                        news => s.apply(&news, &[]).map(|a| a.applied),
                    })
                    .await?;
                if !more {
                    node.peers().put(addr, conn);
                    return Ok(Pulled { applied, watermark, sent });
                }
            }
            other => return Err(Error::Protocol(format!("unexpected answer to pull: {other:?}"))),
        }
    }
}

/// A new leader's catch-up: pull from live nodes until a majority (counting
/// itself) has answered, then tell the driver it is ready to serve. If what
/// came in holds a newer membership, it catches up from a majority of that
/// one too: a membership is committed on a majority of the one before, so
/// each step finds the next, up to the one in force.
pub async fn lead(node: Arc<Node>, state: Arc<LeaderState>) {
    let me = node.me();
    let mut attempt = 0u32;
    loop {
        let v = node.view();
        if v.role != Role::Leader || v.term != state.term || node.shutdown().is_cancelled() {
            return;
        }
        let members = node.members();
        let since = node.blocking(|s| s.watermark()).await.unwrap_or(Version::ZERO);
        let mut set = JoinSet::new();
        for (id, m) in v.alive_others() {
            let (node, addr) = (node.clone(), m.info.addr.clone());
            let fence = Some((state.term, me));
            set.spawn(async move { (id, pull_from(&node, &addr, since, fence).await) });
        }
        let mut answered = BTreeSet::from([me]);
        let mut pulled = 0;
        let mut answers = Vec::new();
        // A majority is enough: one slow node must not hold the failover up.
        while !members.has_majority(&answered) {
            let Some(res) = set.join_next().await else { break };
            match res {
                Ok((id, Ok(p))) => {
                    answered.insert(id);
                    pulled += p.applied;
                    answers.push((id, v.addr_of(id).map(str::to_string), p));
                }
                Ok((id, Err(e))) => log::info!("node {me}: catch-up from node {id} failed: {e}"),
                Err(e) => log::warn!("node {me}: catch-up task failed: {e}"),
            }
        }
        // The rest get a moment more: each answer may show that a record
        // only this node has never reached a majority (see
        // `spread_unsettled`). Then they are not waited for, nor applied
        // late: a majority has every change that reached one, and what
        // only the others have never did (anti-entropy withdraws it there).
        if members.has_majority(&answered) {
            let grace = tokio::time::sleep(Duration::from_millis(500));
            tokio::pin!(grace);
            loop {
                tokio::select! {
                    _ = &mut grace => break,
                    res = set.join_next() => match res {
                        Some(Ok((id, Ok(p)))) => {
                            answered.insert(id);
                            pulled += p.applied;
                            answers.push((id, v.addr_of(id).map(str::to_string), p));
                        }
                        Some(_) => {}
                        None => break,
                    },
                }
            }
        }
        set.abort_all();
        if members.has_majority(&answered) && node.members() != members {
            log::info!("node {me}: caught up a newer membership {:?}; catching up from it too", node.members().nodes);
            continue;
        }
        if members.has_majority(&answered) {
            // The other way too, before anything is served: what this node
            // has that a majority may lack goes to one. That is this node's
            // own changes of a term it gave up because they reached no
            // majority (it leads again at once, in a new term): their
            // clients were told they may have been applied, a retry here
            // finds them done, and every change this leader makes is
            // checked against them. Left here alone, the next leader would
            // have those changes without the ones they stand on: a name
            // removed here back there, and a link count that no longer
            // counts it (its last "last" name then sends a named file to
            // the trash).
            match spread_unsettled(&node, &state, since, &answers).await {
                Ok(0) => {}
                Ok(n) => {
                    log::info!("node {me}: settled {n} record(s) newer than {since:?} that only it had before serving")
                }
                Err(e) => {
                    log::info!("node {me}: cannot put what only it may have on a majority yet: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
            // Everything a majority had is here now: the new watermark.
            if let Ok(max) = node.blocking(|s| s.max_version()).await {
                let _ = node.blocking(move |s| s.set_watermark(max)).await;
            }
            // A new cluster gets its root from its first leader; every
            // leader commits the membership in its term.
            if let Err(e) = make_root(&node, &state).await {
                log::info!("node {me}: cannot make the root directory yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            state.mark_served();
            log::info!(
                "node {me}: leader of term {} caught up ({pulled} records from {} nodes); serving",
                state.term,
                answered.len() - 1
            );
            // Mounts may reclaim their locks from now on, before anyone else takes them.
            state.locks().serve(std::time::Instant::now());
            node.tell_driver(Control::Ready { term: state.term }).await;
            return;
        }
        attempt += 1;
        if attempt % 10 == 1 {
            log::info!(
                "node {me}: leader of term {} waits for a majority to catch up from ({} of {} members answered)",
                state.term,
                answered.len(),
                members.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a new leader may hold without a majority, after it pulled from one
/// (the `answers`: each node, its address and what it sent): its records
/// newer than `since`, the watermark it caught up from, that some answering
/// node did not send at that version or a newer one. Each was committed in
/// an earlier term and may be on no majority:
/// - an answering node that a leader of a later term vouched complete past
///   it (its watermark is of a later term, and above it) and that lacks it
///   shows it never reached a majority (that leader caught up from one):
///   it is withdrawn here, and the node's version taken instead;
/// - any other is sent to every live node, each keeping the newer version,
///   and counted once a majority has it (an acknowledged change may be on
///   no answering node but this one: its majority and this one meet here).
///
/// Returns how many records were withdrawn and sent.
async fn spread_unsettled(
    node: &Arc<Node>,
    state: &Arc<LeaderState>,
    since: Version,
    answers: &[(NodeId, Option<String>, Pulled)],
) -> Result<usize> {
    let mut alone = Vec::new();
    let mut cursor = (since, Key([0xff; 32]));
    loop {
        let page = node.blocking(move |s| s.after(cursor, PULL_BATCH)).await?;
        let more = page.len() == PULL_BATCH;
        if let Some(last) = page.last() {
            cursor = (last.version(), last.key());
        }
        let everywhere =
            |r: &Record| answers.iter().all(|(_, _, p)| p.sent.get(&r.key()).is_some_and(|v| *v >= r.version()));
        alone.extend(page.into_iter().filter(|r| !everywhere(r)));
        if !more {
            break;
        }
    }
    let me = node.me();
    let mut spread = Vec::new();
    let mut withdrawn = 0;
    for r in alone {
        let (key, version) = (r.key(), r.version());
        let refuted = answers.iter().find(|(_, _, p)| p.watermark.term > version.term && p.watermark >= version);
        let Some((id, addr, _)) = refuted else {
            spread.push(r);
            continue;
        };
        if key == Key::members() || !node.blocking(move |s| s.withdraw(&key, version)).await? {
            continue;
        }
        withdrawn += 1;
        log::info!("node {me}: withdrew {} of term {}: node {id} never had it", r.describe(), version.term);
        let Some(addr) = addr else { continue };
        let req = Request::RecordsFor { keys: vec![key] };
        if let Response::Records(records) = node.peers().call(addr, &req).await? {
            node.blocking(move |s| s.apply(&records, &[])).await?;
        }
    }
    let n = spread.len();
    if n > 0 {
        crate::leader::spread_committed(node, state, spread).await?;
    }
    Ok(n + withdrawn)
}

/// Commits the root directory if the cluster has none yet (it is new), and
/// the membership record in this term.
async fn make_root(node: &Arc<Node>, state: &Arc<LeaderState>) -> Result<()> {
    let ns = state.ns.lock().await;
    let mut batch = Batch::new(state);
    if node.store().inode_record(Ino::ROOT)?.is_none() {
        batch.push(Record::Inode(crate::store::new_root(now_ns())));
    }
    // The membership is committed again in every term, so that a change
    // an earlier leader left on a minority (its client told it failed)
    // loses to it on version instead of coming back later.
    if node.store().members().is_none_or(|m| m.version.term < state.term) {
        let members = Members { stamp_ns: now_ns(), ..node.members() };
        batch.push(Record::Members(members));
    }
    if batch.records.is_empty() {
        return Ok(());
    }
    let what: Vec<String> = batch.records.iter().map(Record::describe).collect();
    commit_and_spread(node, state, batch, ns).await?;
    log::info!("node {}: committed {} in term {}", node.me(), what.join(" and "), state.term);
    Ok(())
}

/// Learns a newer membership as soon as another node is heard with one:
/// a node back from a long absence, or started afresh under an id that was
/// taken out, must know it before it takes part (see [`Node::members`]).
pub async fn learn_members(node: Arc<Node>) {
    let mut view_rx = node.view_changes();
    loop {
        let addr = tokio::select! {
            _ = node.shutdown().cancelled() => return,
            r = view_rx.changed() => match r {
                Ok(()) => view_rx.borrow_and_update().newer_members.clone(),
                Err(_) => return,
            },
        };
        let Some(addr) = addr else { continue };
        // A leader learns it only by catching up from a majority: a record
        // that reached a minority must not take effect through gossip.
        if node.view().is_leader() {
            continue;
        }
        let req = Request::RecordsFor { keys: vec![Key::members()] };
        let got = tokio::time::timeout(Duration::from_secs(5), node.peers().call(&addr, &req)).await;
        match got {
            Ok(Ok(Response::Records(records))) => {
                let records: Vec<Record> =
                    records.into_iter().filter(|r| matches!(r, Record::Members(m) if m.check().is_ok())).collect();
                if let Err(e) = node.blocking(move |s| s.apply(&records, &[])).await {
                    log::warn!("node {}: cannot record the membership from {addr}: {e}", node.me());
                }
            }
            Ok(Ok(other)) => log::info!("node {}: unexpected answer for the membership: {other:?}", node.me()),
            Ok(Err(e)) => log::info!("node {}: cannot ask {addr} for the membership: {e}", node.me()),
            Err(_) => log::info!("node {}: {addr} did not answer for the membership", node.me()),
        }
        // At most a few asks a second, whatever is heard meanwhile.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The background loop of every node: follow the leader's records, fetch
/// wanted blobs, and say when caught up with a new leader.
pub async fn follow(node: Arc<Node>) {
    let me = node.me();
    let mut view_rx = node.view_changes();
    let mut caught_up_with: Option<(Term, NodeId)> = None;
    let mut was_member = node.members().contains(me);
    let mut failures = 0u32;
    loop {
        // Wake on the interval, or at once when the leader or term changes
        // (not on every change of another node's load figures).
        let deadline = tokio::time::Instant::now() + SYNC_INTERVAL;
        // One borrow: a second one while the first is held deadlocks the
        // moment the driver starts publishing in between.
        let seen = {
            let v = view_rx.borrow();
            (v.term, v.leader)
        };
        loop {
            tokio::select! {
                _ = node.shutdown().cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => break,
                r = view_rx.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let v = view_rx.borrow_and_update();
                    if (v.term, v.leader) != seen {
                        break;
                    }
                }
            }
        }
        let member = node.members().contains(me);
        if member && !was_member {
            // Taken (back) in: deletions whose tombstones were purged while
            // it was out show only in a whole compare with the leader,
            // which it makes again before it may lead.
            caught_up_with = None;
        }
        was_member = member;
        let v = node.view();
        if let (Some(leader), Some(addr)) = (v.leader.filter(|l| *l != me), v.leader_addr()) {
            let since = node.blocking(|s| s.watermark()).await.unwrap_or(Version::ZERO);
            match pull_from(&node, &addr, since, None).await {
                Ok(Pulled { applied: n, watermark, .. }) => {
                    failures = 0;
                    if n > 0 {
                        log::debug!("node {me}: pulled {n} records from leader {leader}");
                    }
                    // Only a leader's watermark vouches for completeness.
                    if watermark > since {
                        let _ = node.blocking(move |s| s.set_watermark(watermark)).await;
                    }
                    if caught_up_with != Some((v.term, leader)) {
                        // Before this node may lead: what it has of an earlier
                        // term that this leader lacks goes (its own changes as
                        // a deposed leader that reached no majority, which this
                        // leader's changes were checked without). Left to the
                        // slow anti-entropy, a node that takes over at once
                        // would serve them mixed with this leader's changes: a
                        // name it removed back there, a link count that no
                        // longer counts one.
                        match crate::repair::reconcile(&node, &addr, v.term, usize::MAX).await {
                            Ok((got, withdrawn)) if got + withdrawn > 0 => log::info!(
                                "node {me}: index reconciled with new leader {leader}: {got} entries in, {withdrawn} withdrawn"
                            ),
                            Ok(_) => {}
                            Err(e) => {
                                log::info!("node {me}: cannot compare indexes with new leader {leader} yet: {e}");
                                continue;
                            }
                        }
                        caught_up_with = Some((v.term, leader));
                        log::info!("node {me}: caught up with leader {leader} (term {})", v.term);
                        node.tell_driver(Control::CaughtUp).await;
                    }
                }
                Err(e) => {
                    failures += 1;
                    if failures.is_power_of_two() {
                        log::info!("node {me}: cannot catch up from leader {leader}: {e}");
                    }
                }
            }
        }
    }
}

/// Every node's loop fetching the blobs it should keep but lacks: as soon
/// as one is wanted, and again every [`SYNC_INTERVAL`] while any is (a
/// holder that was away may be back). Its own task, so a big fetch never
/// holds up metadata catch-up.
pub async fn fetcher(node: Arc<Node>) {
    loop {
        tokio::select! {
            _ = node.shutdown().cancelled() => return,
            _ = node.store().newly_wanted() => {}
            _ = tokio::time::sleep(SYNC_INTERVAL) => {}
        }
        if node.store().wanted_count() > 0 && fetch_wanted(&node).await == 0 {
            // Nothing could be fetched (its holders are away): not again
            // for every new want, but after a pause.
            tokio::select! {
                _ = node.shutdown().cancelled() => return,
                _ = tokio::time::sleep(SYNC_INTERVAL) => {}
            }
        }
    }
}

/// Fetches blobs this node should keep but lacks, from another holder;
/// returns how many it placed.
async fn fetch_wanted(node: &Arc<Node>) -> usize {
    let wanted = match node.blocking(|s| s.wanted(FETCH_BATCH)).await {
        Ok(w) => w,
        Err(e) => {
            log::warn!("node {}: cannot list wanted blobs: {e}", node.me());
            return 0;
        }
    };
    let mut placed = 0;
    for entry in wanted {
        if node.shutdown().is_cancelled() {
            break;
        }
        let started = std::time::Instant::now();
        if let Err(e) = fetch_one(node, &entry).await {
            log::debug!("node {}: cannot fetch the content of inode {} yet: {e}", node.me(), entry.ino);
            continue;
        }
        placed += 1;
        // Repairs are paced so that clients keep their speed.
        let budget = Duration::from_secs_f64(entry.size as f64 / FETCH_RATE as f64);
        tokio::time::sleep(budget.saturating_sub(started.elapsed())).await;
    }
    placed
}

async fn fetch_one(node: &Arc<Node>, entry: &Inode) -> Result<()> {
    // The same content may be at hand locally (released a moment ago).
    let local = entry.clone();
    if node.blocking(move |s| s.place_from_local(&local)).await? {
        return Ok(());
    }
    let view = node.view();
    let mut last = Error::Unavailable("no live holder".into());
    for holder in entry.holders.iter().filter(|h| **h != node.me()) {
        let Some(addr) = view.members.get(holder).filter(|m| m.alive).map(|m| m.info.addr.clone()) else {
            continue;
        };
        match fetch_from(node, &addr, entry).await {
            Ok(()) => {
                log::debug!("node {}: fetched inode {} from node {holder}", node.me(), entry.ino);
                return Ok(());
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn fetch_from(node: &Arc<Node>, addr: &str, entry: &Inode) -> Result<()> {
    let mut conn = node.peers().dial(addr).await?;
    let (key, ino, content) = (entry.key(), entry.ino, entry.content);
    conn.send(&Message::Request(Request::ReadBlob { ino, content, offset: 0, len: None })).await?;
    match conn.recv_response().await? {
        Response::Content { .. } => {}
        other => return Err(Error::Protocol(format!("unexpected answer to read: {other:?}"))),
    }
    let size = entry.size;
    let store = node.store().clone();
    let mut sink = BlobSink::spawn(move || store.new_blob(ino, content, Some(size)));
    crate::transfer::receive_into(&mut conn, &mut sink, Some(size)).await?;
    if let Err(e) = sink.finish(Some(entry.hash)).await {
        if matches!(e, Error::Corrupt(_)) {
            // Tell the holder, which re-checks its copy and moves it aside if bad.
            let _ = node.peers().call(addr, &Request::ReportCorrupt { ino, content }).await;
        }
        return Err(e);
    }
    let r = Record::Inode(entry.clone());
    let applied = node.blocking(move |s| s.apply(&[r], &[(key, content)])).await?;
    if applied.applied > 0 {
        let what = crate::leader::detail(&Record::Inode(entry.clone()));
        log::debug!("node {}: a fetch put back the record it was for: {what}", node.me());
    }
    node.peers().put(addr, conn);
    Ok(())
}
