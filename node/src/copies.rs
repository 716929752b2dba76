//! The copies of files as the leader manages them: paging through every
//! live file, asking holders which blobs they keep, and committing a new
//! list of holders. Shared by repair ([`crate::repair`]) and the
//! rebalancer ([`crate::rebalance`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use scs_common::proto::rpc::{Request, Response};
use scs_common::{Ino, Inode, Key, NodeId, Record, Result, Version};

use crate::leader::{commit_and_spread, Batch, LeaderState};
use crate::node::Node;

/// Index records read per page.
const PAGE: usize = 2000;

/// Every inode with a blob, a page at a time, in key order, taking at most
/// `share` of a core: after a page that took `t` to read, the next waits
/// `t × (1 / share - 1)`.
pub struct LiveFiles {
    after: Option<Key>,
    done: bool,
    share: f64,
    /// How long the last page took to read.
    took: Duration,
}

impl LiveFiles {
    /// A pass taking at most `share` of a core (1: back to back, for a
    /// caller holding a lock).
    pub fn new(share: f64) -> LiveFiles {
        LiveFiles { after: None, done: false, share, took: Duration::ZERO }
    }

    /// The next page (which may hold no file), or `None` once every file
    /// was given.
    pub async fn next(&mut self, node: &Node) -> Result<Option<Vec<Inode>>> {
        if self.done {
            return Ok(None);
        }
        tokio::time::sleep(rest_for(self.took, self.share)).await;
        let after = self.after;
        let started = Instant::now();
        let (page, last) = node.blocking(move |s| s.live_files(after, PAGE)).await?;
        self.took = started.elapsed();
        self.after = last;
        self.done = last.is_none();
        Ok(Some(page))
    }
}

/// The most of a core the leader's scans of the whole index (replica
/// counts, rebalancing, tombstones, the namespace audit) take while nothing
/// needs doing. Run back to back every few seconds, they kept a leader of
/// 100,000 files 10 % busy with no client doing anything, and their cost
/// grows with the index.
pub const SCAN_SHARE: f64 = 0.02;
/// ... and while files are below their replica target or a member drains:
/// repair is paced by the files it gives holders per round, not by this.
pub const ACTIVE_SCAN_SHARE: f64 = 0.25;

/// The rest after work that took `took`, to keep it to `share` of a core.
pub fn rest_for(took: Duration, share: f64) -> Duration {
    took.mul_f64(1.0 / share.clamp(0.01, 1.0) - 1.0)
}

/// The wait before the next whole scan that runs every `interval` and
/// last took `took`: `interval`, or longer to keep to [`SCAN_SHARE`].
pub fn scan_interval(interval: Duration, took: Duration) -> Duration {
    interval.max(rest_for(took, SCAN_SHARE))
}

/// For each file, how many of the holders `who` names say they keep its
/// blob (the inode's content version). Each holder is asked once for all
/// its files; one that cannot be asked keeps none.
pub async fn confirmed(node: &Arc<Node>, files: &[Inode], who: impl Fn(&Inode) -> Vec<NodeId>) -> Result<Vec<usize>> {
    let me = node.me();
    let view = node.view();
    let mut asks: BTreeMap<NodeId, Vec<(usize, Ino, Version)>> = BTreeMap::new();
    for (i, e) in files.iter().enumerate() {
        for h in who(e) {
            asks.entry(h).or_default().push((i, e.ino, e.content));
        }
    }
    let mut kept = vec![0; files.len()];
    for (holder, items) in asks {
        let keys: Vec<(Ino, Version)> = items.iter().map(|(_, ino, v)| (*ino, *v)).collect();
        let held: Vec<bool> = if holder == me {
            node.blocking(move |s| keys.iter().map(|(ino, v)| s.holds(&Key::of_ino(*ino), *v)).collect()).await?
        } else {
            let Some(addr) = view.addr_of(holder).filter(|_| view.members.get(&holder).is_some_and(|m| m.alive)) else {
                continue;
            };
            // A frozen holder must not hold the replica loop up for long.
            let req = Request::Holds { items: keys };
            match tokio::time::timeout(Duration::from_secs(5), node.peers().call(addr, &req)).await {
                Ok(Ok(Response::Holding(held))) if held.len() == items.len() => held,
                Ok(Ok(other)) => {
                    log::info!("node {me}: unexpected answer to holds from node {holder}: {other:?}");
                    continue;
                }
                Ok(Err(e)) => {
                    log::info!("node {me}: node {holder} cannot say what it holds: {e}");
                    continue;
                }
                Err(_) => {
                    log::info!("node {me}: node {holder} did not say what it holds within 5 s");
                    continue;
                }
            }
        };
        for ((i, _, _), yes) in items.iter().zip(held) {
            kept[*i] += usize::from(yes);
        }
    }
    Ok(kept)
}

/// Commits a new version of inode `entry` with `holders`, if the inode has
/// not changed meanwhile. The new holders fetch the blob on their own.
pub async fn give_holders(
    node: &Arc<Node>,
    state: &Arc<LeaderState>,
    entry: &Inode,
    holders: Vec<NodeId>,
) -> Result<bool> {
    let ns = state.ns.lock().await;
    let key = entry.key();
    if state.is_uploading(&key) {
        return Ok(false);
    }
    let current = node.blocking(move |s| s.record(&key)).await?;
    if current.as_ref().map(Record::version) != Some(entry.version) {
        return Ok(false);
    }
    log::debug!("node {}: inode {} now kept by {holders:?} (was {:?})", node.me(), entry.ino, entry.holders);
    let mut batch = Batch::new(state);
    batch.push(Record::Inode(Inode { holders, ..entry.clone() }));
    commit_and_spread(node, state, batch, ns).await?;
    Ok(true)
}
