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
use scs_common::{name, Error, Ino, Inode, Kind, Result};

use super::meta::change;
use super::now_ns;
use crate::node::Node;
use crate::store::Store;

/// Inodes restored or purged per committed change.
const BATCH: usize = 256;
/// Where an item whose directory is gone for good is listed.
const LOST: &str = "(lost)";
/// Deepest tree a path is worked out through.
const MAX_DEPTH: usize = 4096;

/// The trash as it is at one moment: every item, and the items each
/// directory held.
struct Snapshot {
    items: HashMap<Ino, Inode>,
    within: HashMap<Ino, Vec<Ino>>,
}

impl Snapshot {
    fn take(store: &Store) -> Result<Snapshot> {
        let all = store.trashed(i64::MAX, usize::MAX)?;
        let mut within: HashMap<Ino, Vec<Ino>> = HashMap::new();
        for i in &all {
            if let Some(t) = &i.trashed {
                within.entry(t.dir).or_default().push(i.ino);
            }
        }
        Ok(Snapshot { items: all.into_iter().map(|i| (i.ino, i)).collect(), within })
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
    fn listing(&self, store: &Store) -> Result<Vec<TrashItem>> {
        let mut memo = HashMap::new();
        let mut out = Vec::with_capacity(self.items.len());
        for (ino, i) in &self.items {
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

/// Everything in the trash, with the paths the items had.
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
    let (steps, mut left) = below(&snap, ino);
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

/// `ino` and the items above it in the trash, the top first, each with
/// the place it goes back to.
fn ancestors(snap: &Snapshot, ino: Ino) -> Vec<(Ino, Ino, String)> {
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

/// What goes back into `top`, parents before children, each to its place:
/// of items that had one name in one directory, the last removed. Also
/// how many stay (the others, with what was in them).
fn below(snap: &Snapshot, top: Ino) -> (Vec<(Ino, Ino, String)>, u64) {
    let mut steps = Vec::new();
    let mut left = 0;
    let mut dirs = vec![top];
    let mut at = 0;
    while at < dirs.len() && dirs.len() <= snap.items.len() + 1 {
        let dir = dirs[at];
        at += 1;
        let mut by_name: BTreeMap<&str, Vec<&Inode>> = BTreeMap::new();
        for i in snap.within.get(&dir).into_iter().flatten().filter_map(|x| snap.items.get(x)) {
            if let Some(t) = &i.trashed {
                by_name.entry(t.name.as_str()).or_default().push(i);
            }
        }
        for (n, mut same) in by_name {
            same.sort_by_key(|i| removed_at(i));
            let Some(last) = same.pop() else { continue };
            left += same.iter().map(|i| snap.tree(i.ino).len() as u64).sum::<u64>();
            steps.push((last.ino, dir, n.to_string()));
            if last.is_dir() {
                dirs.push(last.ino);
            }
        }
    }
    (steps, left)
}

/// What a purge removed: items and bytes of file content.
pub struct Purged {
    pub items: u64,
    pub bytes: u64,
}

/// Removes items from the trash for good, with everything below them.
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
    // Children before their directories: an interrupted purge leaves no
    // item whose directory is gone.
    let mut seen = HashSet::new();
    let mut doomed: Vec<Ino> = tops.iter().flat_map(|t| snap.tree(*t)).filter(|x| seen.insert(*x)).collect();
    doomed.reverse();
    let mut out = Purged { items: 0, bytes: 0 };
    for batch in doomed.chunks(BATCH) {
        let batch = batch.to_vec();
        let c = change(node, 0, move |plan, _| {
            let mut gone = Vec::new();
            for x in batch {
                match namespace::purge(plan, x) {
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
/// `trash_hours` (everything, when the trash is off).
pub async fn expire(node: Arc<Node>) {
    let every = node
        .cfg()
        .trash
        .map_or(Duration::from_secs(60), |keep| (keep / 10).clamp(Duration::from_millis(100), Duration::from_secs(60)));
    loop {
        tokio::select! {
            _ = node.shutdown().cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if node.writable().is_err() {
            continue;
        }
        let keep = node.cfg().trash.map_or(0, |k| k.as_nanos() as i64);
        let before = now_ns() - keep;
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
