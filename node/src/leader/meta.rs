//! Namespace changes at the leader: make, link, remove, rename, attributes
//! and extended attributes. Each runs the rules of `scs_common::namespace`
//! against the index under the namespace lock, stamps the records it yields
//! with fresh versions, commits them here, and then on a majority of the
//! cluster. A rename is a handful of records, whatever lies below it.

use std::sync::Arc;

use scs_common::inode::{Bytes, NewNode, Removal, RenameMode, SetAttrs, XattrMode};
use scs_common::namespace::{self, Plan};
use scs_common::{Changed, DirStep, Error, Ino, Inode, Record, Result};

use super::{commit_and_spread, ensure_inos, now_ns, Batch, LeaderState};
use crate::node::Node;
use crate::store::Store;

/// How often a change retries reserving inode numbers that concurrent
/// changes took first.
const INO_TRIES: usize = 5;

/// What one change yields: its result, the records committed for it and
/// the steps of the directories whose entries it changed.
pub struct Outcome<T> {
    pub value: T,
    pub records: Vec<Record>,
    pub dirs: Vec<DirStep>,
}

/// Runs `op` on a plan against the index under the namespace lock, with
/// `inos` fresh inode numbers at hand (the first, when `inos` > 0), and
/// commits what it planned on a majority. Nothing is committed when `op`
/// fails or plans nothing.
pub async fn change<T>(
    node: &Arc<Node>,
    inos: u64,
    op: impl FnOnce(&mut Plan<'_, Store>, Option<Ino>) -> Result<T>,
) -> Result<Outcome<T>> {
    let state = node.writable()?;
    let (ns, first) = lock_with_inos(node, &state, inos).await?;
    let store = node.store().clone();
    let mut plan =
        Plan::new(&*store, now_ns()).with_trash(node.cfg().trash.is_some()).with_max_versions(node.cfg().max_versions);
    let value = op(&mut plan, first)?;
    if plan.is_empty() {
        return Ok(Outcome { value, records: Vec::new(), dirs: Vec::new() });
    }
    let mut batch = Batch::new(&state);
    for r in plan.records() {
        batch.push(r);
    }
    // Read under the namespace lock, before the batch is in the index.
    let dirs = namespace::dir_steps(&*store, &batch.records)?;
    let records = batch.records.clone();
    commit_and_spread(node, &state, batch, ns).await?;
    Ok(Outcome { value, records, dirs })
}

/// The namespace lock, with `count` inode numbers taken for the caller.
pub(super) async fn lock_with_inos<'a>(
    node: &Arc<Node>,
    state: &'a Arc<LeaderState>,
    count: u64,
) -> Result<(tokio::sync::MutexGuard<'a, ()>, Option<Ino>)> {
    if count == 0 {
        return Ok((state.ns.lock().await, None));
    }
    for _ in 0..INO_TRIES {
        ensure_inos(node, state, count).await?;
        let ns = state.ns.lock().await;
        if let Some(first) = state.take_inos(count) {
            return Ok((ns, Some(first)));
        }
    }
    Err(Error::Unavailable("inode numbers were taken faster than reserved; try again".into()))
}

/// The inode `ino` as a change committed it.
fn committed<T>(c: &Outcome<T>, ino: Ino) -> Result<Inode> {
    c.records
        .iter()
        .rev()
        .find_map(|r| r.as_inode().filter(|i| i.ino == ino).cloned())
        .ok_or_else(|| Error::Internal(format!("the change did not touch inode {ino}")))
}

/// Makes a directory, symlink, FIFO, socket, device or empty file; every
/// inode the change touched, the new one first (see [`touched`]).
pub async fn make(node: &Arc<Node>, parent: Ino, name: &str, spec: &NewNode) -> Result<Changed> {
    // Before a number is taken for it.
    scs_common::name::validate_component(name)?;
    let c = change(node, 1, |plan, ino| {
        let ino = ino.ok_or_else(|| Error::Internal("no inode number".into()))?;
        namespace::make(plan, parent, name, spec, ino).map(|i| i.ino)
    })
    .await?;
    touched(node, &c, Some(c.value))
}

/// A new name for an inode; every inode touched, that one first.
pub async fn link(node: &Arc<Node>, ino: Ino, parent: Ino, name: &str) -> Result<Changed> {
    let c = change(node, 0, |plan, _| namespace::link(plan, ino, parent, name)).await?;
    touched(node, &c, Some(ino))
}

/// unlink(2), rmdir(2), or either; every inode still live it touched.
pub async fn remove(node: &Arc<Node>, parent: Ino, name: &str, what: Removal) -> Result<Changed> {
    let c = change(node, 0, |plan, _| namespace::remove(plan, parent, name, what)).await?;
    touched(node, &c, None)
}

/// Every live inode a committed change touched, as the index has it now
/// (a directory's link count counts the change), `first` first, and the
/// directories' steps: the client shows the times and counts the leader
/// stamped, not its own.
fn touched<T>(node: &Node, c: &Outcome<T>, first: Option<Ino>) -> Result<Changed> {
    let mut inos: Vec<Ino> = first.into_iter().collect();
    for i in c.records.iter().filter_map(Record::as_inode).filter(|i| !i.deleted && !i.is_trashed()) {
        if !inos.contains(&i.ino) {
            inos.push(i.ino);
        }
    }
    let mut out = Vec::with_capacity(inos.len());
    for ino in inos {
        if let Some(i) = node.store().inode(ino)? {
            out.push(i);
        }
    }
    if first.is_some_and(|f| out.first().map(|i| i.ino) != Some(f)) {
        return Err(Error::Internal("the change did not touch the inode it was for".into()));
    }
    Ok(Changed { inodes: out, dirs: c.dirs.clone() })
}

/// rename(2) with its flags.
pub async fn rename(
    node: &Arc<Node>,
    parent: Ino,
    name: &str,
    new_parent: Ino,
    new_name: &str,
    mode: RenameMode,
) -> Result<Changed> {
    let c = change(node, 0, |plan, _| namespace::rename(plan, parent, name, new_parent, new_name, mode)).await?;
    touched(node, &c, None)
}

/// Mode, owner and times.
pub async fn set_attr(node: &Arc<Node>, ino: Ino, set: &SetAttrs) -> Result<Inode> {
    let c = change(node, 0, |plan, _| namespace::set_attr(plan, ino, set)).await?;
    committed(&c, ino)
}

pub async fn set_xattr(node: &Arc<Node>, ino: Ino, name: &str, value: &Bytes, mode: XattrMode) -> Result<Inode> {
    let c = change(node, 0, |plan, _| namespace::set_xattr(plan, ino, name, value, mode)).await?;
    committed(&c, ino)
}

pub async fn remove_xattr(node: &Arc<Node>, ino: Ino, name: &str) -> Result<Inode> {
    let c = change(node, 0, |plan, _| namespace::remove_xattr(plan, ino, name)).await?;
    committed(&c, ino)
}

/// Most inode numbers one `ReserveInodes` hands out.
pub const RESERVE_MAX: u32 = 4096;

/// Inode numbers for a client's new files: the first and how many.
pub async fn reserve(node: &Arc<Node>, count: u32) -> Result<(Ino, u32)> {
    let count = count.clamp(1, RESERVE_MAX);
    let c = change(node, u64::from(count), |_, first| first.ok_or_else(|| Error::Internal("no inode numbers".into())))
        .await?;
    Ok((c.value, count))
}

/// Whether `ino` was handed out by some leader (so a client may name it in
/// an upload of a new file).
pub fn was_reserved(node: &Node, ino: Ino) -> Result<bool> {
    Ok(ino.0 >= 2 && ino < node.store().next_ino()?)
}
