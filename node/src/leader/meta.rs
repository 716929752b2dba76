//! Namespace changes at the leader: mkdir, delete, rename and setattr. Each
//! checks the request against the index under the namespace lock, builds the
//! new entries (tombstones included) with fresh versions, commits them here,
//! and then on a majority of the cluster.

use std::sync::Arc;

use scs_common::name;
use scs_common::{ContentHash, Entry, Error, Kind, Result, Version};

use super::{commit_and_spread, now_ns, Batch};
use crate::node::Node;
use crate::store::{check_ancestors, Lookup};

/// Makes a directory (and with `parents` its missing ancestors, succeeding
/// if it exists).
pub async fn mkdir(node: &Arc<Node>, name: &str, mode: u32, mtime_ns: i64, parents: bool) -> Result<Entry> {
    let state = node.writable()?;
    name::validate(name)?;
    let ns = state.ns.lock().await;
    let mut missing = Vec::new();
    for dir in name::ancestors(name) {
        match node.store.lookup(dir)? {
            Lookup::Live(e) if e.kind == Kind::File => return Err(Error::NotDir(dir.to_string())),
            Lookup::Absent if parents => missing.push(dir.to_string()),
            Lookup::Absent => return Err(Error::NotFound(dir.to_string())),
            _ => {}
        }
    }
    match node.store.lookup(name)? {
        Lookup::Absent => {}
        l if l.is_dir() && parents => return l.entry().ok_or_else(|| Error::Internal("lost entry".into())),
        _ => return Err(Error::Exists(name.to_string())),
    }
    missing.push(name.to_string());
    let mut batch = Batch::new(&state);
    for dir in &missing {
        batch.push(new_dir(dir, mode, mtime_ns));
    }
    batch.touch_dir(&node.store, name::parent(&missing[0]), now_ns())?;
    let made = batch.entries.iter().find(|e| e.name == name).cloned();
    let made = made.ok_or_else(|| Error::Internal("no entry".into()))?;
    commit_and_spread(node, &state, batch, ns).await?;
    Ok(made)
}

fn new_dir(name: &str, mode: u32, mtime_ns: i64) -> Entry {
    Entry {
        name: name.to_string(),
        version: Version::ZERO,
        kind: Kind::Dir,
        size: 0,
        hash: ContentHash::default(),
        mode: mode & 0o7777,
        mtime_ns,
        deleted: false,
        holders: Vec::new(),
    }
}

/// Deletes a file or an empty directory by writing a tombstone.
/// `expect` gives unlink (`File`) or rmdir (`Dir`) semantics.
pub async fn delete(node: &Arc<Node>, name: &str, expect: Option<Kind>) -> Result<()> {
    let state = node.writable()?;
    name::validate(name)?;
    let ns = state.ns.lock().await;
    let entry = match node.store.lookup(name)? {
        Lookup::Absent => return Err(Error::NotFound(name.to_string())),
        Lookup::Live(e) if e.kind == Kind::File => {
            if expect == Some(Kind::Dir) {
                return Err(Error::NotDir(name.to_string()));
            }
            e
        }
        Lookup::Live(e) => {
            if expect == Some(Kind::File) {
                return Err(Error::IsDir(name.to_string()));
            }
            if node.store.has_children(name)? {
                return Err(Error::NotEmpty(name.to_string()));
            }
            e
        }
        Lookup::Implied(_) => {
            if expect == Some(Kind::File) {
                return Err(Error::IsDir(name.to_string()));
            }
            return Err(Error::NotEmpty(name.to_string()));
        }
    };
    let now = now_ns();
    let mut batch = Batch::new(&state);
    batch.push(entry.tombstone(Version::ZERO, now));
    batch.touch_dir(&node.store, name::parent(name), now)?;
    commit_and_spread(node, &state, batch, ns).await
}

/// Moves a file or a directory with everything below it. With `replace`, an
/// existing target is replaced as rename(2) does (a file by a file, an empty
/// directory by a directory).
pub async fn rename(node: &Arc<Node>, from: &str, to: &str, replace: bool) -> Result<()> {
    let state = node.writable()?;
    name::validate(from)?;
    name::validate(to)?;
    let ns = state.ns.lock().await;
    let src = node.store.lookup(from)?;
    if src == Lookup::Absent {
        return Err(Error::NotFound(from.to_string()));
    }
    if from == to {
        return Ok(());
    }
    if src.is_dir() && name::is_inside(to, from) {
        return Err(Error::Invalid(format!("cannot move {from} into itself ({to})")));
    }
    check_ancestors(&node.store, to)?;
    let dst = node.store.lookup(to)?;
    match (&src, &dst) {
        (_, Lookup::Absent) => {}
        (_, _) if !replace => return Err(Error::Exists(to.to_string())),
        (Lookup::Live(s), d) if s.kind == Kind::File && d.is_dir() => return Err(Error::IsDir(to.to_string())),
        (s, Lookup::Live(d)) if s.is_dir() && d.kind == Kind::File => return Err(Error::NotDir(to.to_string())),
        (s, d) if s.is_dir() && d.is_dir() && node.store.has_children(to)? => {
            return Err(Error::NotEmpty(to.to_string()))
        }
        _ => {}
    }
    let now = now_ns();
    let mut batch = Batch::new(&state);
    // Each moved entry: a tombstone at the old name, the same content at the new.
    let mut moved = |old: &Entry, new_name: String| {
        batch.push(old.tombstone(Version::ZERO, now));
        batch.push(Entry { name: new_name, ..old.clone() });
    };
    if let Lookup::Live(e) = &src {
        moved(e, to.to_string());
    }
    if src.is_dir() {
        for d in node.store.descendants(from)? {
            let new_name = format!("{to}{}", &d.name[from.len()..]);
            name::validate(&new_name)?;
            moved(&d, new_name);
        }
    }
    batch.touch_dir(&node.store, name::parent(from), now)?;
    batch.touch_dir(&node.store, name::parent(to), now)?;
    commit_and_spread(node, &state, batch, ns).await
}

/// Changes the stored mode bits and/or mtime of a file or directory.
pub async fn setattr(node: &Arc<Node>, name: &str, mode: Option<u32>, mtime_ns: Option<i64>) -> Result<Entry> {
    let state = node.writable()?;
    name::validate(name)?;
    let ns = state.ns.lock().await;
    let current = match node.store.lookup(name)? {
        Lookup::Absent => return Err(Error::NotFound(name.to_string())),
        Lookup::Live(e) | Lookup::Implied(e) => e,
    };
    let mut batch = Batch::new(&state);
    batch.push(Entry {
        mode: mode.map(|m| m & 0o7777).unwrap_or(current.mode),
        mtime_ns: mtime_ns.unwrap_or(current.mtime_ns),
        ..current
    });
    let updated = batch.entries[0].clone();
    commit_and_spread(node, &state, batch, ns).await?;
    Ok(updated)
}
