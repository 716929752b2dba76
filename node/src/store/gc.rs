//! Removing what nothing needs any more, and placing blobs from what is
//! already on this disk: the orphan sweep, released blobs, late replicas.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;

use scs_common::{Inode, Key, Result, Version};

use super::index::{read_version, HELD, RECORDS, WANTED};
use super::{decided_without, hash_file, layout, link_into_place, Store};

/// Free room kept beyond a new blob's size before released blobs give way
/// (index commits need some too).
const ROOM_MARGIN: u64 = 4 << 20;
/// A blob file this old belongs to no upload still running: the leader
/// gives a holder two minutes to finish after the last byte, and an
/// upload whose client stops sending fails long before.
const UPLOADS_OVER: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// How sure the sweep may be that a blob no entry keeps is garbage.
#[derive(Clone, Copy)]
enum Judged {
    /// Young: only if its upload was decided without this node.
    Decided,
    /// No upload that began with it can still be running: also if its
    /// inode changed since, to something this node does not keep.
    MovedOn,
    /// Old enough that an upload that never committed left it.
    AnyGarbage,
}

impl Store {
    /// Removes what nothing needs any more: blob files no entry of this
    /// node refers to (at once when their upload was decided without this
    /// node; after [`UPLOADS_OVER`] when their inode changed since to
    /// something this node does not keep; after `undecided_age` otherwise:
    /// an upload that never committed), and released blobs older than
    /// `released_age`. Ages count
    /// from the last change of the file (ctime, which a hard link or a
    /// rename also sets). Each removal is re-checked against the index in a
    /// write transaction, so it is ordered with [`Store::apply`].
    pub fn sweep_orphans(
        &self,
        undecided_age: std::time::Duration,
        released_age: std::time::Duration,
    ) -> Result<usize> {
        let kept: HashSet<(Key, Version)> = self.held_blobs()?.into_iter().collect();
        let wanted: HashSet<(Key, Version)> =
            self.wanted(usize::MAX)?.into_iter().map(|i| (i.key(), i.content)).collect();
        let mut removed = 0;
        for shard in fs::read_dir(self.layout.blobs_dir())? {
            let shard = shard?.path();
            if !shard.is_dir() {
                continue;
            }
            for f in fs::read_dir(&shard)? {
                let f = f?;
                let Some((key, version)) = f.file_name().to_str().and_then(layout::parse_blob_file_name) else {
                    continue;
                };
                if kept.contains(&(key, version)) || wanted.contains(&(key, version)) {
                    continue;
                }
                let age = age(&f.metadata()?);
                let judged = if age >= undecided_age {
                    Judged::AnyGarbage
                } else if age >= UPLOADS_OVER {
                    Judged::MovedOn
                } else {
                    Judged::Decided
                };
                if self.remove_if_garbage(&key, version, judged)? {
                    removed += 1;
                }
            }
        }
        for f in fs::read_dir(self.layout.released_dir())? {
            let f = f?;
            if age(&f.metadata()?) >= released_age && fs::remove_file(f.path()).is_ok() {
                removed += 1;
            }
        }
        self.count_released();
        Ok(removed)
    }

    /// Released blobs are a cache, and give way to anything that needs the
    /// room: removes them, least recently changed first, until `need`
    /// bytes and [`ROOM_MARGIN`] are free on the data dir's file system, or
    /// none is left. Returns how many were removed.
    pub fn make_room(&self, need: u64) -> usize {
        let want = need.saturating_add(ROOM_MARGIN);
        let free = || self.disk_space().0;
        if free() >= want {
            return 0;
        }
        let Ok(dir) = fs::read_dir(self.layout.released_dir()) else { return 0 };
        // One linked back into place (a file stored again) frees nothing.
        let mut spares: Vec<(std::time::Duration, u64, std::path::PathBuf)> = dir
            .flatten()
            .filter_map(|f| f.metadata().ok().filter(|m| m.nlink() == 1).map(|m| (age(&m), m.len(), f.path())))
            .collect();
        // Oldest first: a recent one is the likeliest to be stored again.
        spares.sort_by_key(|s| std::cmp::Reverse(s.0));
        let mut removed = 0;
        for (_, size, path) in spares {
            if free() >= want {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                self.forget_released(size);
                removed += 1;
            }
        }
        if removed > 0 {
            log::info!("node {}: removed {removed} released blob(s) to make room", self.me);
        }
        removed
    }

    /// Removes the blob `(key, version)` if this node does not keep or want
    /// it and `judged` finds it garbage.
    fn remove_if_garbage(&self, key: &Key, version: Version, judged: Judged) -> Result<bool> {
        let tx = self.db()?.begin_write().map_err(|e| self.db_err(e))?;
        let garbage = {
            let records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
            let held = tx.open_table(HELD).map_err(|e| self.db_err(e))?;
            let wanted = tx.open_table(WANTED).map_err(|e| self.db_err(e))?;
            let needed = read_version(&held, key)? == Some(version) || read_version(&wanted, key)? == Some(version);
            !needed
                && match judged {
                    Judged::Decided => decided_without(&records, key, version, self.me, false)?,
                    Judged::MovedOn => decided_without(&records, key, version, self.me, true)?,
                    Judged::AnyGarbage => true,
                }
        };
        let removed = garbage && fs::remove_file(self.layout.blob(key, version)).is_ok();
        tx.abort().map_err(|e| self.db_err(e))?;
        Ok(removed)
    }

    /// Places a wanted blob from a local copy of the same content, if one is
    /// at hand (released a moment ago: a file deleted and stored again, say).
    pub fn place_from_local(&self, entry: &Inode) -> Result<bool> {
        let spare = self.layout.released(&entry.hash);
        if !fs::metadata(&spare).is_ok_and(|m| m.len() == entry.size) {
            return Ok(false);
        }
        // The spare is checked like any fetched copy: it may be a blob that
        // went bad on this disk before it was released, and placing it
        // again would only have the scrub find it again, forever.
        if !hash_file(&spare).is_ok_and(|(h, n)| h == entry.hash && n == entry.size) {
            log::warn!("node {}: a released copy of inode {} failed its hash; removed", self.me, entry.ino);
            let counted = fs::metadata(&spare).is_ok_and(|m| m.nlink() == 1);
            if fs::remove_file(&spare).is_ok() && counted {
                self.forget_released(entry.size);
            }
            return Ok(false);
        }
        let (key, content) = (entry.key(), entry.content);
        let counted = fs::metadata(&spare).is_ok_and(|m| m.nlink() == 1);
        if link_into_place(&spare, &self.layout.blob(&key, content)).is_err() {
            return Ok(false);
        }
        // In use again: its room is not free any more.
        if counted && fs::metadata(&spare).is_ok_and(|m| m.nlink() > 1) {
            self.forget_released(entry.size);
        }
        self.apply(&[scs_common::Record::Inode(entry.clone())], &[(key, content)])?;
        self.holds(&key, content)
    }
}

/// Time since a file last changed (the later of mtime and ctime).
fn age(m: &fs::Metadata) -> std::time::Duration {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let changed = m.mtime().max(m.ctime());
    std::time::Duration::from_secs(now.saturating_sub(changed).max(0) as u64)
}

impl Store {
    /// Called when a replicated blob has just landed: if its inode has
    /// meanwhile been committed without this node as a holder, or moved on
    /// to other content, the blob is garbage already and is removed (in a
    /// write transaction, so it is ordered with [`Store::apply`]).
    pub fn settle_replicated(&self, key: &Key, version: Version) -> Result<bool> {
        let tx = self.db()?.begin_write().map_err(|e| self.db_err(e))?;
        let garbage = {
            let records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
            let held = tx.open_table(HELD).map_err(|e| self.db_err(e))?;
            decided_without(&records, key, version, self.me, false)? && read_version(&held, key)? != Some(version)
        };
        if garbage {
            let _ = fs::remove_file(self.layout.blob(key, version));
        }
        tx.abort().map_err(|e| self.db_err(e))?;
        Ok(garbage)
    }
}
