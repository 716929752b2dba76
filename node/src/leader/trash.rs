//! The trash at the leader. While `trash_hours` is set, what loses its last
//! name stays as a trashed inode with its content (see `Inode::trashed`);
//! here the trash is listed with the paths its items had, restored as
//! trees, purged, and expired once older than the retention. Every restore
//! and purge is a namespace change like any other, committed on a majority
//! a batch of inodes at a time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use scs_common::namespace;
use scs_common::proto::rpc::{PurgeTrash, TrashItem};
use scs_common::{name, Error, Ino, Inode, Kind, NodeId, Result};

use super::meta::change;
use super::now_ns;
use crate::node::Node;
use crate::store::Store;

/// Inodes restored or purged per committed change.
const BATCH: usize = 256;
/// One item to restore: the inode, and the directory and name it goes back to.
type Step = (Ino, Ino, String);
/// Where an item whose directory is gone for good is listed.
const LOST: &str = "(lost)";
/// Deepest tree a path is worked out through.
const MAX_DEPTH: usize = 4096;
/// Items purged at a time, the oldest first, when a member is short of room.
const ROOM_BATCH: usize = 64;
/// The oldest items looked through for them.
const ROOM_SCAN: usize = 4096;
/// How often the leader looks for a member short of room.
const ROOM_EVERY: Duration = Duration::from_secs(1);
/// A member with less free disk than this (or than [`SHORT_SHARE`] of its
/// disk, whichever is less) is short of room. The share is for small
/// disks: the index and its journal need room to grow, and a node whose
/// disk is full cannot take in the very purge that would free it.
const SHORT_BYTES: u64 = 1 << 30;
const SHORT_SHARE: f64 = 0.2;
/// After purging for room, how long an upload waits for the holders to
/// say, in their heartbeats, that they have room again.
const ROOM_WAIT: Duration = Duration::from_secs(3);

/// The trash as it is at one moment: every item (earlier versions of
/// files included), the items each directory held, and the versions kept
/// of each file.
struct Snapshot {
    items: HashMap<Ino, Inode>,
    within: HashMap<Ino, Vec<Ino>>,
    versions: HashMap<Ino, Vec<Ino>>,
}

impl Snapshot {
    fn take(store: &Store) -> Result<Snapshot> {
        let all = store.trashed(i64::MAX, usize::MAX)?;
        let (mut within, mut versions): (HashMap<Ino, Vec<Ino>>, HashMap<Ino, Vec<Ino>>) = Default::default();
        for i in &all {
            match (i.version_of(), &i.trashed) {
                (Some(of), _) => versions.entry(of).or_default().push(i.ino),
                (None, Some(t)) => within.entry(t.dir).or_default().push(i.ino),
                (None, None) => {}
            }
        }
        Ok(Snapshot { items: all.into_iter().map(|i| (i.ino, i)).collect(), within, versions })
    }

    /// `top`, everything below it, and the versions kept of each: what
    /// goes when `top` is purged.
    fn doomed(&self, top: Ino) -> Vec<Ino> {
        let tree = self.tree(top);
        let versions = tree.iter().filter_map(|x| self.versions.get(x)).flatten().copied().collect::<Vec<_>>();
        tree.into_iter().chain(versions).collect()
    }

    /// `top` and every item below it, parents before their children.
    fn tree(&self, top: Ino) -> Vec<Ino> {
        let mut out = vec![top];
        let mut at = 0;
        while at < out.len() && out.len() <= self.items.len() {
            if let Some(c) = self.within.get(&out[at]) {
                out.extend(c.iter().copied());
            }
            at += 1;
        }
        out
    }

    /// How many items above `ino` in the trash (0 for one whose directory
    /// is not in the trash).
    fn depth(&self, ino: Ino) -> usize {
        let mut at = ino;
        let mut n = 0;
        while let Some((dir, _)) = self.place(at) {
            if n > MAX_DEPTH || !self.items.contains_key(&dir) {
                break;
            }
            (at, n) = (dir, n + 1);
        }
        n
    }

    /// Where `ino` was: a directory and a name.
    fn place(&self, ino: Ino) -> Option<(Ino, String)> {
        self.items.get(&ino)?.trashed.as_ref().map(|t| (t.dir, t.name.clone()))
    }

    /// The path of `ino`, an item or a live directory: up through the
    /// trash and the live directories to the root, with what is known
    /// already in `memo`. An item whose directory is gone for good is
    /// under [`LOST`].
    fn path(&self, store: &Store, memo: &mut HashMap<Ino, String>, ino: Ino) -> Result<String> {
        let mut chain: Vec<(Ino, String)> = Vec::new();
        let mut at = ino;
        let base = loop {
            if at == Ino::ROOT {
                break String::new();
            }
            if let Some(p) = memo.get(&at) {
                break p.clone();
            }
            let up = match self.place(at) {
                Some(up) => Some(up),
                None => match store.inode(at)? {
                    Some(d) if d.is_dir() && !d.is_trashed() => store.name_in(d.parent, at)?.map(|n| (d.parent, n)),
                    _ => None,
                },
            };
            match up {
                Some((dir, n)) if chain.len() < MAX_DEPTH => {
                    chain.push((at, n));
                    at = dir;
                }
                _ => break LOST.to_string(),
            }
        };
        let mut path = base;
        for (d, n) in chain.into_iter().rev() {
            path = name::join(&path, &n);
            memo.insert(d, path.clone());
        }
        Ok(path)
    }

    /// Every item with its path, sorted by path and then by when it went.
    /// An earlier version has the path of its file, in the trash or not.
    fn listing(&self, store: &Store) -> Result<Vec<TrashItem>> {
        let mut memo = HashMap::new();
        let mut out = Vec::with_capacity(self.items.len());
        let named: HashSet<Ino> = self.versions.keys().filter(|f| !self.items.contains_key(f)).copied().collect();
        let names = store.names_of(&named)?;
        for (ino, i) in &self.items {
            if let Some(of) = i.version_of() {
                let path = match names.get(&of) {
                    Some((dir, n)) => name::join(&self.path(store, &mut memo, *dir)?, n),
                    None if self.items.contains_key(&of) => self.path(store, &mut memo, of)?,
                    None => name::join(LOST, &format!("inode {of}")),
                };
                out.push(TrashItem { path, inode: i.clone(), inside: false, items: 1, bytes: i.size });
                continue;
            }
            let tree = self.tree(*ino);
            let bytes = tree.iter().filter_map(|x| self.items.get(x)).filter(|x| x.kind == Kind::File).map(|x| x.size);
            let inside = i.trashed.as_ref().is_some_and(|t| self.items.contains_key(&t.dir));
            out.push(TrashItem {
                path: self.path(store, &mut memo, *ino)?,
                inode: i.clone(),
                inside,
                items: tree.len() as u64,
                bytes: bytes.sum(),
            });
        }
        out.sort_by(|a, b| (&a.path, removed_at(&a.inode)).cmp(&(&b.path, removed_at(&b.inode))));
        Ok(out)
    }
}

fn removed_at(i: &Inode) -> i64 {
    i.trashed.as_ref().map_or(0, |t| t.at_ns)
}

/// Everything in the trash, with the paths the items had, and the
/// earlier versions of files, with their files' paths.
pub async fn list(node: &Arc<Node>) -> Result<Vec<TrashItem>> {
    node.writable()?;
    node.blocking(|s| Snapshot::take(s)?.listing(s)).await
}

/// What a restore did: the inode back in place, how many inodes came back,
/// and how many stayed in the trash (a name taken meanwhile, or an older
/// copy of a name that came back).
pub struct Restored {
    pub inode: Inode,
    pub items: u64,
    pub left: u64,
}

/// Brings `ino` back from the trash with everything that was in it: to
/// `to` (a directory and a name), or else where it was, with the
/// directories above it that are in the trash too (themselves only).
/// Asked for an inode that is back already (a retry after a failover), it
/// restores what is still in the trash below it.
///
/// # Errors
/// `NotFound` when `ino` is neither in the trash nor live, or its old
/// directory is gone; `Exists` when its name is taken now.
pub async fn restore(node: &Arc<Node>, ino: Ino, to: Option<(Ino, String)>) -> Result<Restored> {
    node.writable()?;
    let snap = node.blocking(Snapshot::take).await?;
    let mut items = 0;
    if snap.items.contains_key(&ino) {
        let steps = match to {
            Some((dir, n)) => vec![(ino, dir, n)],
            None => ancestors(&snap, ino),
        };
        items += steps.len() as u64;
        change(node, 0, move |plan, _| {
            for (k, (x, dir, n)) in steps.iter().enumerate() {
                if k == 0 && plan.inode(*dir)?.is_none_or(|d| !d.is_dir() || d.is_trashed()) {
                    return Err(Error::NotFound(format!(
                        "the directory {n} was in is gone; restore it elsewhere with --to"
                    )));
                }
                namespace::restore(plan, *x, *dir, n).map_err(|e| match e {
                    Error::Exists(_) => Error::Exists(format!("{n} exists now; restore it elsewhere with --to")),
                    e => e,
                })?;
            }
            Ok(())
        })
        .await?;
    } else if node.blocking(move |s| s.inode(ino)).await?.is_none_or(|i| i.is_trashed()) {
        return Err(Error::NotFound(format!("inode {ino} is not in the trash")));
    }
    let (steps, mut left) = node.blocking(move |s| below(&Snapshot::take(s)?, s, ino)).await?;
    for batch in steps.chunks(BATCH) {
        let batch = batch.to_vec();
        let c = change(node, 0, move |plan, _| {
            let (mut done, mut skipped) = (0u64, 0u64);
            for (x, dir, n) in &batch {
                match namespace::restore(plan, *x, *dir, n) {
                    Ok(_) => done += 1,
                    Err(Error::Exists(_) | Error::NotFound(_)) => skipped += 1,
                    Err(e) => return Err(e),
                }
            }
            Ok((done, skipped))
        })
        .await?;
        items += c.value.0;
        left += c.value.1;
    }
    let inode = node.blocking(move |s| s.inode(ino)).await?.ok_or_else(|| Error::NotFound(format!("inode {ino}")))?;
    Ok(Restored { inode, items, left })
}

/// The earlier versions kept of file `ino`, the oldest first.
///
/// # Errors
/// `NotFound` when `ino` is not a file with a name, or in the trash.
pub async fn versions(node: &Arc<Node>, ino: Ino) -> Result<Vec<Inode>> {
    node.writable()?;
    node.blocking(move |s| match s.inode(ino)? {
        Some(i) if i.kind == Kind::File && i.version_of().is_none() => s.versions(ino),
        Some(i) if i.kind == Kind::Dir => Err(Error::IsDir(format!("inode {ino}"))),
        Some(_) => Err(Error::Invalid(format!("inode {ino} is no file: it has no versions"))),
        None => Err(Error::NotFound(format!("inode {ino}"))),
    })
    .await
}

/// Makes the kept version `version` of file `ino` its content again; what
/// it replaces is kept as a version in its turn (with the trash on here).
///
/// # Errors
/// `NotFound` when `version` is no version of `ino` kept now.
pub async fn restore_version(node: &Arc<Node>, ino: Ino, version: Ino) -> Result<Inode> {
    let keep = u64::from(node.cfg().keeps_versions());
    let c = change(node, keep, move |plan, keep| namespace::restore_version(plan, ino, version, keep)).await?;
    Ok(c.value)
}

/// `ino` and the items above it in the trash, the top first, each with
/// the place it goes back to.
fn ancestors(snap: &Snapshot, ino: Ino) -> Vec<Step> {
    let mut out = Vec::new();
    let mut at = ino;
    while let Some((dir, n)) = snap.place(at) {
        out.push((at, dir, n));
        if out.len() > MAX_DEPTH || !snap.items.contains_key(&dir) {
            break;
        }
        at = dir;
    }
    out.reverse();
    out
}

/// What goes back below `top`, a live directory, parents before children,
/// each to its place: of items that had one name in one directory, the
/// last removed. Below `top` means through the trash and through live
/// directories alike, so that a restore cut short and asked again finds
/// what is left inside the directories it brought back already. Also how
/// many stay (the others, with what was in them).
fn below(snap: &Snapshot, store: &Store, top: Ino) -> Result<(Vec<Step>, u64)> {
    let mut depths: HashMap<Ino, Option<usize>> = HashMap::from([(top, Some(0))]);
    let mut by_place: BTreeMap<(usize, Ino, &str), Vec<&Inode>> = BTreeMap::new();
    for i in snap.items.values() {
        let Some(t) = &i.trashed else { continue };
        if let Some(depth) = depth_below(snap, store, &mut depths, t.dir)? {
            by_place.entry((depth, t.dir, t.name.as_str())).or_default().push(i);
        }
    }
    let mut steps = Vec::new();
    let mut left = 0;
    // In order of depth: a directory goes back before what was in it.
    for ((_, dir, n), mut same) in by_place {
        same.sort_by_key(|i| removed_at(i));
        let Some(last) = same.pop() else { continue };
        // What was inside the others stays too: its directory stays.
        left += same.len() as u64;
        steps.push((last.ino, dir, n.to_string()));
    }
    Ok((steps, left))
}

/// How deep directory `dir` lies below `top` (0 for `top`), going up
/// through the trash and the live directories; `None` when it is not
/// below it. Known depths are in `depths`.
fn depth_below(
    snap: &Snapshot,
    store: &Store,
    depths: &mut HashMap<Ino, Option<usize>>,
    dir: Ino,
) -> Result<Option<usize>> {
    let mut chain = Vec::new();
    let mut at = dir;
    let base = loop {
        if let Some(d) = depths.get(&at) {
            break *d;
        }
        if at == Ino::ROOT || chain.len() > MAX_DEPTH {
            break None;
        }
        chain.push(at);
        at = match snap.place(at) {
            Some((up, _)) => up,
            None => match store.inode(at)? {
                Some(i) if i.is_dir() && !i.is_trashed() => i.parent,
                _ => break None,
            },
        };
    };
    let n = chain.len();
    for (k, x) in chain.into_iter().enumerate() {
        depths.insert(x, base.map(|b| b + n - k));
    }
    Ok(depths.get(&dir).copied().flatten())
}

/// What a purge removed: items and bytes of file content.
pub struct Purged {
    pub items: u64,
    pub bytes: u64,
}

/// Removes items from the trash for good, with everything below them and
/// the earlier versions kept of each file among them.
///
/// # Errors
/// `NotFound` for an item named that is not in the trash.
pub async fn purge(node: &Arc<Node>, what: PurgeTrash) -> Result<Purged> {
    node.writable()?;
    let snap = node.blocking(Snapshot::take).await?;
    let tops: Vec<Ino> = match what {
        PurgeTrash::Items(v) => {
            if let Some(x) = v.iter().find(|x| !snap.items.contains_key(x)) {
                return Err(Error::NotFound(format!("inode {x} is not in the trash")));
            }
            v
        }
        PurgeTrash::Before(t) => snap.items.values().filter(|i| removed_at(i) < t).map(|i| i.ino).collect(),
        PurgeTrash::All => snap.items.keys().copied().collect(),
    };
    // Each once, with when it was removed (an item restored and removed
    // again since is not this one), the deepest first: an interrupted
    // purge leaves no item whose directory is gone.
    let mut seen = HashSet::new();
    let mut doomed: Vec<(usize, Ino, i64)> = tops
        .iter()
        .flat_map(|t| snap.doomed(*t))
        .filter(|x| seen.insert(*x))
        .filter_map(|x| snap.items.get(&x).map(|i| (snap.depth(x), x, removed_at(i))))
        .collect();
    doomed.sort_by_key(|d| std::cmp::Reverse(d.0));
    let mut out = Purged { items: 0, bytes: 0 };
    for batch in doomed.chunks(BATCH) {
        let batch = batch.to_vec();
        let c = change(node, 0, move |plan, _| {
            let mut gone = Vec::new();
            for (_, x, removed) in batch {
                match namespace::purge(plan, x, removed) {
                    Ok(()) => gone.push(x),
                    Err(Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(gone)
        })
        .await?;
        out.items += c.value.len() as u64;
        out.bytes += c
            .value
            .iter()
            .filter_map(|x| snap.items.get(x))
            .filter(|i| i.kind == Kind::File)
            .map(|i| i.size)
            .sum::<u64>();
    }
    Ok(out)
}

/// The leader's loop removing what has been in the trash longer than
/// `trash_hours`, and the oldest first while a member is short of room.
/// With the trash off (on this leader) nothing expires: what is in the
/// trash stays until it is purged, or makes room.
pub async fn expire(node: Arc<Node>) {
    let every = node
        .cfg()
        .trash
        .map_or(Duration::from_secs(60), |keep| (keep / 10).clamp(Duration::from_millis(100), Duration::from_secs(60)));
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = node.shutdown().cancelled() => return,
            _ = tokio::time::sleep(every.min(ROOM_EVERY)) => {}
        }
        if node.writable().is_err() {
            continue;
        }
        let short = short_of_room(&node, 0);
        match make_room(&node, &short).await {
            Ok(0) => {}
            Ok(n) => {
                let who: Vec<NodeId> = short.iter().map(|(id, _)| *id).collect();
                log::info!("node {}: {who:?} short of room: {n} oldest item(s) left the trash", node.me());
                // Their next heartbeats tell whether that was enough.
                tokio::time::sleep(node.cfg().heartbeat * 2).await;
            }
            Err(e) => log::debug!("node {}: no room made in the trash now: {e}", node.me()),
        }
        if last.elapsed() < every {
            continue;
        }
        last = tokio::time::Instant::now();
        let Some(keep) = node.cfg().trash else { continue };
        let before = now_ns().saturating_sub(i64::try_from(keep.as_nanos()).unwrap_or(i64::MAX));
        match node.blocking(move |s| s.trashed(before, 1)).await {
            Ok(due) if due.is_empty() => continue,
            Ok(_) => {}
            Err(e) => {
                log::debug!("node {}: the trash is not expired now: {e}", node.me());
                continue;
            }
        }
        match purge(&node, PurgeTrash::Before(before)).await {
            Ok(p) => log::info!(
                "node {}: {} item(s), {} bytes, left the trash for good (expired)",
                node.me(),
                p.items,
                p.bytes
            ),
            Err(e) => log::debug!("node {}: the trash is not expired now: {e}", node.me()),
        }
    }
}

/// What a member short of room needs freed: files (past its
/// `max_files`, and one more to take a new one) and bytes (up to what
/// counts as short of disk, or the room a new file of `want` bytes takes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Need {
    pub files: u64,
    pub bytes: u64,
}

impl Need {
    /// What a member with `used` files of `max` and `free` bytes of
    /// `total` needs; `None` when it is not short.
    fn of(used: u64, max: Option<u64>, (free, total): (u64, u64), want: u64) -> Option<Need> {
        let short_below = SHORT_BYTES.min((total as f64 * SHORT_SHARE) as u64);
        let room = crate::store::blob_room(free, total);
        let need = Need {
            files: max.map_or(0, |m| (used + 1).saturating_sub(m)),
            bytes: if total > 0 { short_below.saturating_sub(free).max(want.saturating_sub(room)) } else { 0 },
        };
        (need != Need::default()).then_some(need)
    }
}

/// The members that take copies and are short of room (at their
/// `max_files`, or short of disk, or of `want` bytes for a new file), as
/// the leader last heard, and what each needs.
fn short_of_room(node: &Node, want: u64) -> Vec<(NodeId, Need)> {
    let members = node.members();
    let store = node.store();
    let mut out = Vec::new();
    if members.takes_copies(node.me()) {
        let used = store.files() + store.wanted_count();
        if let Some(need) = Need::of(used, node.cfg().max_files, store.room(), want) {
            out.push((node.me(), need));
        }
    }
    let view = node.view();
    out.extend(view.alive_others().filter(|(id, _)| members.takes_copies(*id)).filter_map(|(id, m)| {
        let used = m.info.files + m.info.wanted;
        Need::of(used, m.info.max_files, (m.info.disk_free, m.info.disk_total), want).map(|n| (id, n))
    }));
    out
}

/// Purges the oldest items in the trash whose content is in blobs on the
/// members `short` of room until each has what it needs, at most a batch:
/// how many went. An item on several of them counts for each, once: the
/// members' own counts only change with their next heartbeats.
pub async fn make_room(node: &Arc<Node>, short: &[(NodeId, Need)]) -> Result<u64> {
    let mut left: HashMap<NodeId, Need> = short.iter().copied().collect();
    if left.is_empty() {
        return Ok(0);
    }
    let mut oldest = Vec::new();
    for i in node.blocking(|s| s.trashed(i64::MAX, ROOM_SCAN)).await?.into_iter().filter(Inode::has_blob) {
        if left.is_empty() || oldest.len() >= ROOM_BATCH {
            break;
        }
        let mut helps = false;
        for h in &i.holders {
            if let Some(need) = left.get_mut(h) {
                helps = true;
                (need.files, need.bytes) = (need.files.saturating_sub(1), need.bytes.saturating_sub(i.size));
                if *need == Need::default() {
                    left.remove(h);
                }
            }
        }
        if helps {
            oldest.push(i.ino);
        }
    }
    if oldest.is_empty() {
        return Ok(0);
    }
    Ok(purge(node, PurgeTrash::Items(oldest)).await?.items)
}

/// The holders of a new blob of `ino`, `size` bytes long when known
/// ([`super::pick_holders`]); when every node is full, the oldest content
/// in the trash goes first, and the holders get a moment to say they have
/// room again.
///
/// # Errors
/// `NoSpace` when there is still no room.
pub async fn holders_making_room(node: &Arc<Node>, ino: Ino, size: Option<u64>) -> Result<Vec<(NodeId, String)>> {
    let why = match super::pick_holders(node, ino, size) {
        Err(Error::NoSpace(why)) => why,
        other => return other,
    };
    // Only when members are full: not, say, when none is up to take copies.
    let made = make_room(node, &short_of_room(node, size.unwrap_or(0))).await?;
    if made == 0 {
        return Err(Error::NoSpace(why));
    }
    let deadline = tokio::time::Instant::now() + ROOM_WAIT;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        match super::pick_holders(node, ino, size) {
            Err(Error::NoSpace(_)) if tokio::time::Instant::now() < deadline => {}
            other => return other,
        }
    }
}
