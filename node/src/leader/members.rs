//! Changing the membership (`scs node add/drain/remove`): one node at a
//! time, through the leader, committed on a majority of both the old and
//! the new membership (see [`super::commit_with`]). Any two memberships in
//! a row then share a majority, so a leader that catches up from a majority
//! of the one it knows always finds the next (see [`crate::sync::lead`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use scs_common::proto::gossip::NodeInfo;
use scs_common::proto::rpc::MemberChange;
use scs_common::{Error, MemberState, Members, NodeId, Record, Result, Version};

use super::{commit_with, now_ns, Batch, Spread};
use crate::node::Node;
use crate::repair;

/// Makes `change` and returns once it is committed (at once if there is
/// nothing to do: adding a member, draining a draining one).
///
/// # Errors
/// `NotFound` for a node that is not a member (or, to add, not announcing
/// itself), `Invalid` for a change that would leave no member or drop
/// copies the others lack, and the errors of any commit.
pub async fn change(node: &Arc<Node>, change: MemberChange) -> Result<()> {
    let state = node.writable()?;
    // One change at a time, and no other commit while two memberships count.
    let ns = state.ns.lock().await;
    let old = node.members();
    let view = node.view();
    let candidate = match change {
        MemberChange::Add(id) => view.candidates.get(&id).map(|(info, _)| info),
        _ => None,
    };
    let Some(nodes) = plan(&old, change, candidate)? else { return Ok(()) };
    if let MemberChange::Remove { id, force: false } = change {
        // Under the namespace lock: read back to back.
        let left = repair::copies_to_move(node, &BTreeSet::from([id]), 1.0).await?;
        if left.files > 0 {
            return Err(Error::Invalid(format!(
                "node {id} holds copies of {} file(s) ({} bytes) that the other members lack or are still fetching; \
                 drain it first (scs node drain {id}), or use --force if it is lost for good",
                left.files, left.bytes
            )));
        }
    }
    let also = match (change, candidate) {
        (MemberChange::Add(id), Some(info)) if !info.addr.is_empty() => vec![(id, info.addr.clone())],
        _ => Vec::new(),
    };
    let me = node.me();
    let leaving_myself = !nodes.contains_key(&me) && old.contains(me);
    let new = Members { version: Version::ZERO, nodes, stamp_ns: now_ns() };
    log::info!("node {me}: changing the members from {:?} to {:?} ({change:?})", old.ids(), new.nodes);
    let mut batch = Batch::new(&state);
    batch.push(Record::Members(new));
    let spread = Spread { also, outlive_lead: leaving_myself };
    commit_with(node, &state, batch, ns, spread).await
}

/// The members after `change`, or `None` when it is already made.
/// `candidate` is what the node to add last said of itself, if it was heard.
fn plan(
    old: &Members,
    change: MemberChange,
    candidate: Option<&NodeInfo>,
) -> Result<Option<BTreeMap<NodeId, MemberState>>> {
    let mut nodes = old.nodes.clone();
    let listed: Vec<String> = old.nodes.keys().map(NodeId::to_string).collect();
    let not_member =
        |id: NodeId| Error::NotFound(format!("node {id} is not a member (members: {})", listed.join(", ")));
    match change {
        MemberChange::Add(id) => {
            if old.contains(id) {
                return Ok(None);
            }
            if id.0 == 0 {
                return Err(Error::Invalid("node ids are positive integers, not 0".into()));
            }
            let Some(info) = candidate else {
                return Err(Error::NotFound(format!(
                    "node {id} is not announcing itself with the cluster key: start it first \
                     (scs status lists it as a candidate once it is heard)"
                )));
            };
            // Blobs only: a candidate follows the index, small files kept
            // in it included, from the start.
            if info.blobs > 0 {
                return Err(Error::Invalid(format!(
                    "node {id} still keeps {} file copies from an earlier membership; \
                     stop it, empty its data_dir, and start it again",
                    info.blobs
                )));
            }
            if old.len() >= Members::MAX {
                return Err(Error::Invalid(format!("a cluster has at most {} members", Members::MAX)));
            }
            nodes.insert(id, MemberState::Active);
        }
        MemberChange::Drain(id) => match old.state(id) {
            None => return Err(not_member(id)),
            Some(MemberState::Draining) => return Ok(None),
            Some(MemberState::Active) => {
                if old.active() <= 1 {
                    return Err(Error::Invalid(format!(
                        "node {id} is the only member that takes copies; add another first"
                    )));
                }
                nodes.insert(id, MemberState::Draining);
            }
        },
        MemberChange::Remove { id, force } => {
            if !old.contains(id) {
                return Err(not_member(id));
            }
            nodes.remove(&id);
            if nodes.is_empty() {
                return Err(Error::Invalid(format!("node {id} is the last member")));
            }
            if !force && !nodes.values().any(|s| *s == MemberState::Active) {
                return Err(Error::Invalid(format!(
                    "no member that takes copies would be left after node {id}; add one first"
                )));
            }
        }
    }
    Ok(Some(nodes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use scs_common::Term;

    fn members(ids: &[(u32, MemberState)]) -> Members {
        Members {
            version: Version::new(Term(1), 1),
            nodes: ids.iter().map(|(id, s)| (NodeId(*id), *s)).collect(),
            stamp_ns: 0,
        }
    }

    const A: MemberState = MemberState::Active;
    const D: MemberState = MemberState::Draining;

    fn after(old: &Members, change: MemberChange, candidate: Option<&NodeInfo>) -> Vec<(u32, MemberState)> {
        let nodes = plan(old, change, candidate).unwrap().expect("a change");
        nodes.into_iter().map(|(id, s)| (id.0, s)).collect()
    }

    #[test]
    fn a_heard_empty_candidate_is_added_and_adding_a_member_again_changes_nothing() {
        let old = members(&[(1, A), (2, A), (3, A)]);
        let heard = NodeInfo { addr: "127.0.0.1:7784".into(), ..NodeInfo::default() };
        assert_eq!(after(&old, MemberChange::Add(NodeId(4)), Some(&heard)), [(1, A), (2, A), (3, A), (4, A)]);
        assert_eq!(plan(&old, MemberChange::Add(NodeId(2)), None).unwrap(), None);
        let e = plan(&old, MemberChange::Add(NodeId(9)), None).unwrap_err();
        assert!(matches!(e, Error::NotFound(_)) && e.to_string().contains("node 9 is not announcing"), "{e}");
        let used = NodeInfo { files: 12, blobs: 12, ..heard };
        let e = plan(&old, MemberChange::Add(NodeId(4)), Some(&used)).unwrap_err();
        assert!(e.to_string().contains("12 file copies"), "{e}");
    }

    #[test]
    fn drain_marks_a_member_once_and_never_the_last_that_takes_copies() {
        let old = members(&[(1, A), (2, D)]);
        assert_eq!(plan(&old, MemberChange::Drain(NodeId(2)), None).unwrap(), None, "already draining");
        let e = plan(&old, MemberChange::Drain(NodeId(1)), None).unwrap_err();
        assert!(e.to_string().contains("only member that takes copies"), "{e}");
        let old = members(&[(1, A), (2, A)]);
        assert_eq!(after(&old, MemberChange::Drain(NodeId(1)), None), [(1, D), (2, A)]);
        assert!(matches!(plan(&old, MemberChange::Drain(NodeId(5)), None), Err(Error::NotFound(_))));
    }

    #[test]
    fn remove_keeps_a_member_that_takes_copies_unless_forced_and_never_the_last() {
        let old = members(&[(1, A), (2, D), (3, A)]);
        assert_eq!(after(&old, MemberChange::Remove { id: NodeId(2), force: false }, None), [(1, A), (3, A)]);
        let old = members(&[(1, A), (2, D)]);
        let e = plan(&old, MemberChange::Remove { id: NodeId(1), force: false }, None).unwrap_err();
        assert!(e.to_string().contains("no member that takes copies"), "{e}");
        assert_eq!(after(&old, MemberChange::Remove { id: NodeId(1), force: true }, None), [(2, D)]);
        let e = plan(&members(&[(1, A)]), MemberChange::Remove { id: NodeId(1), force: true }, None).unwrap_err();
        assert!(e.to_string().contains("last member"), "{e}");
        let e = plan(&old, MemberChange::Remove { id: NodeId(7), force: true }, None).unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e}");
    }
}
