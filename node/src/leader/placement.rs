//! Where copies go: to the nodes with the most room, counting both the
//! bytes free on their disk and their `max_files`, so that a node with a
//! bigger disk, or a higher `max_files`, takes more of the files.

use scs_common::proto::gossip::NodeInfo;
use scs_common::NodeId;

/// How full a node is, in thousandths: the larger of the share of its
/// `max_files` in use (kept and still to fetch) and the share of its disk.
pub fn fullness(files: u64, max_files: Option<u64>, free: u64, total: u64) -> u32 {
    let by_files = max_files.map_or(0, |max| per_mille(files, max));
    let by_bytes = if total == 0 { 0 } else { per_mille(total.saturating_sub(free), total) };
    by_files.max(by_bytes)
}

/// Whether a node with `used` blobs (kept and still to fetch) may take one
/// more under its `max_files`. Bytes are counted apart, against the size
/// of the file (see `leader::pick_holders`).
pub fn has_room(used: u64, max_files: Option<u64>) -> bool {
    max_files.is_none_or(|max| used < max)
}

fn per_mille(part: u64, whole: u64) -> u32 {
    if whole == 0 {
        return 1000;
    }
    (u128::from(part) * 1000 / u128::from(whole)).min(1000) as u32
}

/// A node's place in the order copies go to: the emptiest first, by whole
/// per cent; among equals the leader (its copy costs no network), then
/// fewer files, then the lower id. Per cent, not per mille: nodes that
/// share a disk (or disks others write to) report a fullness that moves
/// from one heartbeat to the next, and the leader's own, measured now,
/// would otherwise put it behind its peers by a thousandth it does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rank {
    /// [`fullness`] in per cent.
    percent: u32,
    elsewhere: bool,
    files: u64,
    id: NodeId,
}

impl Rank {
    /// The leader's own rank, from its store.
    pub fn mine(id: NodeId, files: u64, max_files: Option<u64>, (free, total): (u64, u64)) -> Rank {
        Rank { percent: fullness(files, max_files, free, total) / 10, elsewhere: false, files, id }
    }

    /// Another member's rank, from what it last told us.
    pub fn of(id: NodeId, info: &NodeInfo) -> Rank {
        let used = info.files + info.wanted;
        Rank {
            percent: fullness(used, info.max_files, info.disk_free, info.disk_total) / 10,
            elsewhere: true,
            files: used,
            id,
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(files: u64, max_files: Option<u64>, free: u64, total: u64) -> NodeInfo {
        NodeInfo { files, max_files, disk_free: free, disk_total: total, ..NodeInfo::default() }
    }

    #[test]
    fn the_fuller_of_files_and_bytes_counts() {
        assert_eq!(fullness(50, Some(100), 900, 1000), 500);
        assert_eq!(fullness(10, Some(100), 200, 1000), 800);
        assert_eq!(fullness(10, None, 1000, 1000), 0);
        assert_eq!(fullness(10, None, 0, 0), 0, "an unknown disk counts as empty");
        assert_eq!(fullness(5, Some(0), 1000, 1000), 1000);
    }

    #[test]
    fn copies_go_to_the_emptiest_nodes_the_leader_first_among_equals() {
        let disk = (500, 1000);
        let mut ranks = [
            Rank::of(NodeId(1), &info(10, None, 500, 1000)),
            Rank::of(NodeId(2), &info(3, None, 900, 1000)),
            Rank::mine(NodeId(3), 10, None, disk),
            Rank::of(NodeId(4), &info(2, Some(3), 900, 1000)),
        ];
        ranks.sort();
        let order: Vec<u32> = ranks.iter().map(|r| r.id().0).collect();
        // 2 has the emptiest disk; 3 (the leader) and 1 are as full, the
        // leader first; 4 has two thirds of its max_files used.
        assert_eq!(order, [2, 3, 1, 4]);
    }

    #[test]
    fn a_shared_disk_filling_by_a_thousandth_between_heartbeats_does_not_put_the_leader_last() {
        // Peers told 721.6 per mille used a moment ago; the leader sees 722.4 now.
        let mut ranks = [
            Rank::of(NodeId(1), &info(100, None, 278_400, 1_000_000)),
            Rank::of(NodeId(2), &info(100, None, 278_400, 1_000_000)),
            Rank::mine(NodeId(4), 0, None, (277_600, 1_000_000)),
        ];
        ranks.sort();
        assert_eq!(ranks[0].id(), NodeId(4), "{ranks:?}");
    }
}
