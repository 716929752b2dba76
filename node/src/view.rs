//! [`ClusterView`]: the node's picture of the cluster, published by the
//! election driver after every step and read by request handlers.

use std::collections::BTreeMap;

use scs_common::proto::gossip::{NodeInfo, Role};
use scs_common::{NodeId, Term};

/// What this node last heard from another member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Member {
    pub info: NodeInfo,
    /// Heard within the leader timeout.
    pub alive: bool,
    pub role: Option<Role>,
    pub term: Term,
    /// When it was presumed dead (last heard plus the leader timeout); `None` while alive.
    pub down_since: Option<std::time::Instant>,
}

/// A snapshot of the election and membership state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    pub me: NodeId,
    /// The highest term this node has seen.
    pub term: Term,
    /// The leader this node accepted for `term` (it takes writes only from it).
    pub accepted: Option<NodeId>,
    pub role: Role,
    /// The live leader, if any (this node when it leads).
    pub leader: Option<NodeId>,
    /// As leader: a majority supports us.
    pub quorum: bool,
    /// As leader: caught up from a majority, so we may serve requests
    /// (writes also need `quorum`).
    pub ready: bool,
    /// Every other member we have heard from.
    pub members: BTreeMap<NodeId, Member>,
    /// Nodes with the cluster key that are not members, heard within the
    /// leader timeout: what they say of themselves, and their `cluster_size`.
    pub candidates: BTreeMap<NodeId, (NodeInfo, u32)>,
    /// A node heard with a newer membership than ours: where to learn it.
    pub newer_members: Option<String>,
}

impl ClusterView {
    pub fn new(me: NodeId) -> ClusterView {
        ClusterView {
            me,
            term: Term(0),
            accepted: None,
            role: Role::Follower,
            leader: None,
            quorum: false,
            ready: false,
            members: BTreeMap::new(),
            candidates: BTreeMap::new(),
            newer_members: None,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// Whether this node leads `term` with a majority's support (serving
    /// or still catching up).
    pub fn leads_in(&self, term: Term) -> bool {
        self.is_leader() && self.term == term && self.quorum
    }

    /// Where another member's TCP server listens, as last advertised.
    pub fn addr_of(&self, id: NodeId) -> Option<&str> {
        self.members.get(&id).map(|m| m.info.addr.as_str()).filter(|a| !a.is_empty())
    }

    /// Other members heard from recently.
    pub fn alive_others(&self) -> impl Iterator<Item = (NodeId, &Member)> {
        self.members.iter().filter(|(_, m)| m.alive).map(|(id, m)| (*id, m))
    }

    /// The live leader's address, when it is another node.
    pub fn leader_addr(&self) -> Option<String> {
        self.leader.filter(|l| *l != self.me).and_then(|l| self.addr_of(l).map(str::to_string))
    }
}
