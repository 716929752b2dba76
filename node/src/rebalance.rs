//! Moving copies to emptier members (after `scs node add`, a new member
//! holds nothing): the leader's rebalancer, paced at
//! `rebalance_bytes_per_sec`, and at a quarter of it while clients are at
//! work (a client's request in progress on the leader, or one within
//! [`crate::metrics::CLIENT_QUIET`]).
//!
//! A copy moves in two commits, so that no file ever has fewer than its
//! target of copies: first the emptiest member is added to the file's
//! holders (it fetches the blob, as after any repair); once it and every
//! other holder that stays say they keep the blob (`Request::Holds`), the
//! fullest holder (usually the one the copy moved from) is dropped from
//! the list, and lets its copy go. The same trim brings any file with more
//! copies than its target back to it.
//! Members count as balanced when their fullness (see
//! [`crate::leader::placement`]) is within [`BALANCED`] of each other.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use scs_common::proto::rpc::Moving;
use scs_common::{Ino, Inode, NodeId, Result};

use crate::copies::{confirmed, give_holders, LiveFiles};
use crate::leader::placement::{fullness, has_room};
use crate::leader::LeaderState;
use crate::node::Node;

/// Members within this many thousandths of fullness of each other are balanced.
pub const BALANCED: u32 = 100;
/// A move stops once the pair is this close: well inside [`BALANCED`], so
/// that the next file added does not tip it over again.
const CLOSE: u32 = BALANCED / 2;
/// Files moved or trimmed per round at most.
const PER_ROUND: usize = 256;
/// While clients are at work, copies move at this fraction of
/// `rebalance_bytes_per_sec`: clients come first, and the members still
/// even out under a steady load.
const BUSY_SHARE: u64 = 4;

/// How long moving a copy of `size` bytes takes of the rebalancer's time:
/// its size at `rate` bytes a second, or at a [`BUSY_SHARE`] of it while
/// clients are `busy`. A copy counts as at least 4 KiB (what a file costs
/// the disks beyond its bytes).
fn pace(size: u64, rate: u64, busy: bool) -> Duration {
    let rate = if busy { rate / BUSY_SHARE } else { rate }.max(1);
    Duration::from_secs_f64(size.max(4096) as f64 / rate as f64)
}

/// What a member holds and has room for, as the rebalancer counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Load {
    files: u64,
    max_files: Option<u64>,
    free: u64,
    total: u64,
}

impl Load {
    fn fullness(&self) -> u32 {
        fullness(self.files, self.max_files, self.free, self.total)
    }

    fn has_room(&self) -> bool {
        has_room(self.files, self.max_files)
    }

    fn take(&mut self, size: u64) {
        self.files += 1;
        self.free = self.free.saturating_sub(size);
    }

    fn give(&mut self, size: u64) {
        self.files = self.files.saturating_sub(1);
        self.free = (self.free + size).min(self.total);
    }
}

/// The fullest and the emptiest member (with room), when they are further
/// apart than `apart`.
fn pair(loads: &BTreeMap<NodeId, Load>, apart: u32) -> Option<(NodeId, NodeId)> {
    let (from, full) = loads.iter().max_by_key(|(id, l)| (l.fullness(), **id))?;
    let (to, empty) = loads.iter().filter(|(_, l)| l.has_room()).min_by_key(|(id, l)| (l.fullness(), **id))?;
    (full.fullness() > empty.fullness() + apart).then_some((*from, *to))
}

/// Which files of `files` (held by `from`, not by `to`) to move so that the
/// two are close; stops at `PER_ROUND` files.
fn plan_moves(loads: &BTreeMap<NodeId, Load>, from: NodeId, to: NodeId, files: &[Inode]) -> Vec<usize> {
    let (Some(mut f), Some(mut t)) = (loads.get(&from).copied(), loads.get(&to).copied()) else { return Vec::new() };
    let mut out = Vec::new();
    for (i, file) in files.iter().enumerate() {
        if f.fullness() <= t.fullness() + CLOSE || !t.has_room() || out.len() >= PER_ROUND {
            break;
        }
        f.give(file.size);
        t.take(file.size);
        out.push(i);
    }
    out
}

/// One round of the leader's rebalancer: trims files with copies beyond
/// their target, then, when nothing is in flight, moves copies from the
/// fullest member to the emptiest. Returns what is left to move. Does
/// nothing while a member is down, draining or fetching, or a file is below
/// its target: repair comes first. Reads the files taking at most `share`
/// of a core.
pub async fn round(node: &Arc<Node>, state: &Arc<LeaderState>, interval: Duration, share: f64) -> Result<Moving> {
    let rate = node.cfg().rebalance_bytes_per_sec;
    let members = node.members();
    let view = node.view();
    let me = node.me();
    let target = node.replica_target();
    let mut loads = BTreeMap::new();
    for &id in members.nodes.keys() {
        if !members.takes_copies(id) {
            return Ok(Moving::default());
        }
        let load = if id == me {
            let store = node.store();
            let (free, total) = store.room();
            Load { files: store.files() + store.wanted_count(), max_files: node.cfg().max_files, free, total }
        } else {
            match view.members.get(&id) {
                Some(m) if m.alive => Load {
                    files: m.info.files + m.info.wanted,
                    max_files: m.info.max_files,
                    free: m.info.disk_free,
                    total: m.info.disk_total,
                },
                _ => return Ok(Moving::default()),
            }
        };
        loads.insert(id, load);
    }
    if rate == 0 || loads.len() < 2 {
        return Ok(Moving::default());
    }
    let pair = pair(&loads, BALANCED);
    // One scan: the files with copies beyond the target, and those the
    // fullest member could give the emptiest.
    let mut over: Vec<Inode> = Vec::new();
    let mut movable: Vec<Inode> = Vec::new();
    let mut pages = LiveFiles::new(share);
    while let Some(page) = pages.next(node).await? {
        for entry in page {
            let copies = entry.holders.iter().filter(|h| members.takes_copies(**h)).count();
            if copies > target {
                over.push(entry);
            } else if let Some((from, to)) = pair {
                if copies == target && entry.holders.contains(&from) && !entry.holders.contains(&to) {
                    movable.push(entry);
                }
            }
        }
    }
    let trimmed = trim(node, state, &mut loads, &over).await?;
    let in_flight = over.len() - trimmed;
    let Some((from, to)) = pair else {
        return Ok(Moving { files: in_flight as u64, ..Moving::default() });
    };
    let plan = plan_moves(&loads, from, to, &movable);
    let left = Moving {
        files: (in_flight + plan.len()) as u64,
        bytes: plan.iter().map(|i| movable[*i].size).sum(),
        bytes_per_sec: 0,
    };
    // One move at a time per file: new ones only once the last have landed.
    let fetching = if to == me {
        node.store().wanted_count() > 0
    } else {
        view.members.get(&to).is_some_and(|m| m.info.wanted > 0)
    };
    if in_flight > 0 || fetching {
        return Ok(left);
    }
    // When the next copy may be handed out, counted from the round's
    // start: each copy moves it on (see `pace`). The emptiest member is
    // handed copies to fetch at that pace, not the round's share at once,
    // which it would fetch at full speed while clients wait on the same
    // disks. A round ends at `interval` (one big file may end it).
    let mut due = Duration::ZERO;
    let mut spent = 0u64;
    let mut moved = 0;
    let started = Instant::now();
    for i in plan {
        if due >= interval {
            break;
        }
        let entry = &movable[i];
        let mut holders = entry.holders.clone();
        holders.push(to);
        holders.sort();
        if give_holders(node, state, entry, holders).await? {
            spent += entry.size;
            moved += 1;
            due += pace(entry.size, rate, node.health().clients.busy(Instant::now()));
        }
        tokio::select! {
            _ = node.shutdown().cancelled() => break,
            _ = tokio::time::sleep(due.min(interval).saturating_sub(started.elapsed())) => {}
        }
    }
    if moved > 0 {
        log::info!("node {me}: moving {moved} copies from node {from} to node {to} ({spent} bytes)");
    }
    Ok(left)
}

/// Drops one copy of each file in `over` (the fullest holder's), once the
/// holders that stay all say they keep it. Returns how many were trimmed.
async fn trim(
    node: &Arc<Node>,
    state: &Arc<LeaderState>,
    loads: &mut BTreeMap<NodeId, Load>,
    over: &[Inode],
) -> Result<usize> {
    let members = node.members();
    // Which holder of each file goes: the fullest member among them.
    let mut files = Vec::new();
    let mut drops: BTreeMap<Ino, NodeId> = BTreeMap::new();
    for e in over.iter().take(PER_ROUND) {
        let fullest = e
            .holders
            .iter()
            .filter(|h| members.takes_copies(**h))
            .max_by_key(|h| (loads.get(h).map_or(0, Load::fullness), **h));
        if let Some(drop) = fullest {
            drops.insert(e.ino, *drop);
            files.push(e.clone());
        }
    }
    let staying = |e: &Inode| -> Vec<NodeId> {
        let drop = drops.get(&e.ino).copied();
        e.holders.iter().copied().filter(|h| Some(*h) != drop && members.takes_copies(*h)).collect()
    };
    let kept = confirmed(node, &files, staying).await?;
    let target = node.replica_target();
    let mut trimmed = 0;
    for (e, kept) in files.iter().zip(kept) {
        let Some(drop) = drops.get(&e.ino).copied() else { continue };
        if kept < target {
            continue;
        }
        let holders: Vec<NodeId> = e.holders.iter().copied().filter(|h| *h != drop).collect();
        if give_holders(node, state, e, holders).await? {
            if let Some(l) = loads.get_mut(&drop) {
                l.give(e.size);
            }
            trimmed += 1;
        }
    }
    Ok(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `files` of `max` on a disk that is all but empty.
    fn load(files: u64, max: u64) -> Load {
        Load { files, max_files: Some(max), free: 1 << 30, total: 1 << 30 }
    }

    fn file(size: u64) -> Inode {
        let mut i = Inode::new(Ino(7), scs_common::Kind::File, 0o644, 0, 0, 0);
        i.size = size;
        i
    }

    #[test]
    fn copies_move_at_the_rate_and_slower_while_clients_are_at_work() {
        let mib = 1 << 20;
        assert_eq!(pace(32 * mib, 32 * mib, false), Duration::from_secs(1));
        assert_eq!(pace(32 * mib, 32 * mib, true), Duration::from_secs(BUSY_SHARE));
        assert_eq!(pace(0, 4096, false), Duration::from_secs(1), "a file costs at least 4 KiB");
        assert!(pace(mib, 1, true) > Duration::from_secs(1000), "a rate under the share still paces");
    }

    #[test]
    fn the_fullest_gives_to_the_emptiest_until_they_are_close() {
        let loads: BTreeMap<NodeId, Load> = [(1, load(30, 40)), (2, load(30, 40)), (3, load(30, 40)), (4, load(0, 40))]
            .map(|(id, l)| (NodeId(id), l))
            .into();
        assert_eq!(pair(&loads, BALANCED), Some((NodeId(3), NodeId(4))), "the highest id among equals gives");
        let files: Vec<Inode> = (0..30).map(|_| file(10)).collect();
        let plan = plan_moves(&loads, NodeId(3), NodeId(4), &files);
        // 30/40 and 0/40 meet at 15 (375 per mille each), within 50.
        assert_eq!(plan.len(), 14, "{plan:?}");
        let balanced: BTreeMap<NodeId, Load> =
            [(1, load(23, 40)), (2, load(22, 40)), (3, load(20, 40))].map(|(id, l)| (NodeId(id), l)).into();
        assert_eq!(pair(&balanced, BALANCED), None, "within a tenth of each other");
    }

    #[test]
    fn a_small_member_is_filled_no_further_than_the_others() {
        // Node 2 keeps at most 3 files: two make it as full as node 1.
        let loads: BTreeMap<NodeId, Load> = [(1, load(30, 40)), (2, load(0, 3))].map(|(id, l)| (NodeId(id), l)).into();
        assert_eq!(pair(&loads, BALANCED), Some((NodeId(1), NodeId(2))));
        let files: Vec<Inode> = (0..30).map(|_| file(10)).collect();
        assert_eq!(plan_moves(&loads, NodeId(1), NodeId(2), &files).len(), 2);
    }
}
