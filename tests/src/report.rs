//! The JSON the CLI prints: `scs status --json` and `scs ls --json`.
//! Parsed strictly on the fields of the contract, so a renamed field fails.

use serde::Deserialize;

/// `scs status --json`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub leader: Option<u32>,
    pub term: u64,
    pub quorum: bool,
    pub cluster_size: u32,
    pub replicas: u32,
    pub nodes: Vec<NodeStatus>,
    #[serde(default)]
    pub under_replicated: u64,
    /// Copies still to make elsewhere for draining members; absent from
    /// the output of nodes that predate `scs node drain`.
    #[serde(default)]
    pub moving: Option<Moving>,
}

/// `moving` in [`Status`]: what a drain has left to copy.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Moving {
    pub files: u64,
    pub bytes: u64,
    pub bytes_per_sec: u64,
}

/// One node in [`Status`]: a member (`state` "active", or "draining" while
/// its copies move elsewhere), or a node with the key that is not one
/// ("candidate").
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: u32,
    pub addr: String,
    pub state: String,
    pub alive: bool,
    pub role: String,
    pub files: u64,
    /// Bytes of the files whose content it holds (absent for candidates
    /// from before the field).
    #[serde(default)]
    pub bytes: u64,
    pub max_files: Option<u64>,
    #[serde(default)]
    pub wanted: u64,
    #[serde(default)]
    pub corrupt: u64,
    #[serde(default)]
    pub disk_free: u64,
    #[serde(default)]
    pub disk_total: u64,
    /// Of `bytes`, content in the trash.
    #[serde(default)]
    pub trash_bytes: u64,
}

impl NodeStatus {
    /// How full it is, in thousandths, as placement and the rebalancer
    /// count it: the larger of its share of `max_files` and of its disk.
    pub fn fullness(&self) -> u64 {
        let by_files = self.max_files.map_or(0, |max| (self.files * 1000).checked_div(max).unwrap_or(1000));
        let by_disk = (self.disk_total.saturating_sub(self.disk_free) * 1000).checked_div(self.disk_total).unwrap_or(0);
        by_files.max(by_disk).min(1000)
    }
}

impl Status {
    /// The entry of node `id`.
    ///
    /// # Panics
    /// When the status does not list it.
    #[track_caller]
    pub fn node(&self, id: u32) -> &NodeStatus {
        self.members().find(|n| n.id == id).unwrap_or_else(|| panic!("status lists no member {id}: {self:?}"))
    }

    /// The members, active or draining (not the candidates).
    pub fn members(&self) -> impl Iterator<Item = &NodeStatus> {
        self.nodes.iter().filter(|n| n.state == "active" || n.state == "draining")
    }

    /// Ids of the members, ascending.
    pub fn member_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.members().map(|n| n.id).collect();
        ids.sort_unstable();
        ids
    }

    /// The entry of candidate `id` (a node with the key that is not a
    /// member), if the status lists one.
    pub fn candidate(&self, id: u32) -> Option<&NodeStatus> {
        self.nodes.iter().find(|n| n.id == id && n.state == "candidate")
    }

    /// The entry of node `id`, member or candidate, if listed.
    pub fn listed(&self, id: u32) -> Option<&NodeStatus> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Ids of the members reported alive, ascending.
    pub fn alive_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.members().filter(|n| n.alive).map(|n| n.id).collect();
        ids.sort_unstable();
        ids
    }

    /// Whether `id` leads with quorum and exactly `alive` are alive.
    pub fn is_settled(&self, leader: u32, alive: &[u32]) -> bool {
        self.leader == Some(leader) && self.quorum && self.alive_ids() == alive
    }
}

/// One entry of `scs ls --json`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct LsEntry {
    pub name: String,
    pub size: u64,
    pub mtime: i64,
    pub kind: String,
    #[serde(default)]
    pub mtime_ns: Option<i64>,
    #[serde(default)]
    pub mode: Option<u32>,
    /// The inode number: the same in every mount and command.
    #[serde(default)]
    pub ino: Option<u64>,
    #[serde(default)]
    pub nlink: Option<u32>,
    #[serde(default)]
    pub target: Option<String>,
}
