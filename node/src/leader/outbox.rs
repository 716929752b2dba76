//! The leader's changes on their way to a majority, in the order they were
//! checked (group commit).
//!
//! A change is queued here under the namespace lock, and the lock is free
//! once the change is in this node's index, where the next change is
//! checked against it. One *round* at a time takes what is queued and sends
//! it to the followers as one batch, while this node makes the same changes
//! durable; each change is answered once its round is on a majority.
//! Concurrent changes so share one sync on every node and one trip to each
//! follower.
//!
//! Rounds go out one after another, and a follower takes a round's records
//! in one transaction (a round holds one message's worth of changes, or a
//! single change too big for one, as before): a change is never on a
//! majority while one it was checked against is not. A round that fails (no majority, or this node's
//! own commit failed) ends the term: nothing queued after it is sent, every
//! change still waiting is told it may or may not have been applied, and
//! this node leads a new term, whose catch-up from a majority settles what
//! took effect.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use scs_common::{Record, Result};

use super::state::{Local, Queued, VersionGuard};
use super::{apply_to_others, on_majority, round_lost, split_by_size, term_given_up, Batch, LeaderState};
use crate::link::Control;
use crate::metrics::METRICS;
use crate::node::Node;

/// The most changes one round takes; the rest go in the next.
const ROUND_CHANGES: usize = 256;
/// A round takes changes up to about this many bytes of records (at least
/// one change), so that it goes to a follower in one message and one
/// transaction, and no change is cut in two there.
const ROUND_BYTES: usize = super::RECORDS_BYTES;

/// Queues a change already in this node's index (call it under the
/// namespace lock, so the queue keeps the order changes were checked in);
/// the receiver gets its round's outcome.
pub fn send(node: &Arc<Node>, state: &Arc<LeaderState>, batch: Batch, local: Local) -> oneshot::Receiver<Result<()>> {
    let (answer, outcome) = oneshot::channel();
    let Batch { records, guards: versions, .. } = batch;
    let size = records.iter().map(|r| rmp_serde::to_vec(r).map_or(ROUND_BYTES, |b| b.len()) + 16).sum();
    let start = {
        let mut q = state.outbox.queue();
        q.changes.push(Queued { records, size, local, versions, answer });
        !std::mem::replace(&mut q.running, true)
    };
    if start {
        // A task of its own: a change whose caller gives up still has its
        // round, and the changes queued behind it theirs.
        tokio::spawn(run_rounds(node.clone(), state.clone()));
    }
    outcome
}

async fn run_rounds(node: Arc<Node>, state: Arc<LeaderState>) {
    let mut running = Running { node: node.clone(), state: state.clone(), finished: false };
    loop {
        let changes = {
            let mut q = state.outbox.queue();
            if q.changes.is_empty() {
                q.running = false;
                drop(q);
                state.outbox.idle.notify_waiters();
                running.finished = true;
                return;
            }
            let mut bytes = 0;
            let n = q
                .changes
                .iter()
                .take(ROUND_CHANGES)
                .take_while(|c| {
                    bytes += c.size;
                    bytes <= ROUND_BYTES
                })
                .count()
                .max(1);
            q.changes.drain(..n).collect::<Vec<_>>()
        };
        round(&node, &state, changes).await;
    }
}

/// The rounds' task while it runs. Should it end early (a panic, or the
/// runtime stopping), the changes still queued are answered, the term is
/// given up, and the queue takes changes again (which fail at once in the
/// given-up term).
struct Running {
    node: Arc<Node>,
    state: Arc<LeaderState>,
    /// The queue was found empty and the task ends as it should.
    finished: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let first = self.state.fail();
        let queued = {
            let mut q = self.state.outbox.queue();
            q.running = false;
            std::mem::take(&mut q.changes)
        };
        for c in queued {
            let _ = c.answer.send(Err(round_lost()));
        }
        self.state.outbox.idle.notify_waiters();
        if !first || !std::thread::panicking() {
            return; // given up already, or the runtime is stopping (so is the node)
        }
        log::error!("node {}: the commit rounds of term {} ended early", self.node.me(), self.state.term);
        let (node, term) = (self.node.clone(), self.state.term);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { node.tell_driver(Control::Redeclare { term }).await });
        }
    }
}

/// Sends `changes` to the followers as one batch while this node makes them
/// durable, and answers each with the outcome.
async fn round(node: &Arc<Node>, state: &Arc<LeaderState>, changes: Vec<Queued>) {
    let mut locals = Vec::with_capacity(changes.len());
    let mut batches = Vec::with_capacity(changes.len());
    let mut answers = Vec::with_capacity(changes.len());
    let mut records = Vec::new();
    // Sized when queued: under the frame limit, the round is one message
    // and needs no second encoding to cut it.
    let one_message = changes.iter().map(|c| c.size).sum::<usize>() <= ROUND_BYTES;
    for c in changes {
        records.extend(c.records);
        locals.push(c.local);
        batches.push(c.versions);
        answers.push(c.answer);
    }
    let messages = if one_message { vec![records] } else { split_by_size(records, ROUND_BYTES) };
    let outcome = commit_round(node, state, messages, locals, batches).await;
    for a in answers {
        let _ = a.send(outcome.clone());
    }
}

async fn commit_round(
    node: &Arc<Node>,
    state: &Arc<LeaderState>,
    messages: Vec<Vec<Record>>,
    locals: Vec<Local>,
    batches: Vec<Vec<VersionGuard>>,
) -> Result<()> {
    if state.has_failed() {
        // An earlier round failed: these were checked against its changes.
        return Err(term_given_up(node, state));
    }
    let before = node.members();
    // The followers commit while this node makes the round durable.
    let set = apply_to_others(node, state, messages, Vec::new());
    let started = Instant::now();
    let mut settled = Ok(());
    for local in locals {
        // In order: each waits for the sync the next shares.
        settled = settled.and(local.durable().await);
    }
    METRICS.leader_local.since(started);
    on_majority(node, state, set, &before, false, settled, batches).await
}
