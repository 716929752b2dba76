//! What anti-entropy, repair and the tombstone purge read from and do to
//! the index: bucket digests, per-bucket versions, purges and withdrawals.

use std::fs;
use std::sync::atomic::Ordering;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use scs_common::{Entry, Error, Key, Result, Version};

use super::digest::Digests;
use super::index::{db_err, decode_entry, read_entry, read_version, ENTRIES, HELD, META, NAMES, VERSIONS, WANTED};
use super::Store;

/// The meta key of the bucket digests.
pub(super) const DIGESTS: &str = "digests";

pub(super) fn read_digests(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<Digests> {
    match meta.get(DIGESTS).map_err(db_err)? {
        Some(v) => Digests::from_bytes(v.value()).ok_or_else(|| Error::Internal("damaged index digests".into())),
        None => Ok(Digests::default()),
    }
}

impl Store {
    /// The 256 bucket digests of the index (see [`digest`]).
    pub fn digests(&self) -> Result<Digests> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        read_digests(&tx.open_table(META).map_err(|e| self.db_err(e))?)
    }

    /// Every (key, version) in one bucket, tombstones included.
    pub fn bucket(&self, bucket: u8) -> Result<Vec<(Key, Version)>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let entries = tx.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
        let mut lo = [0u8; 32];
        lo[0] = bucket;
        let mut out = Vec::new();
        for row in entries.range::<&[u8; 32]>(&lo..).map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            if k.value()[0] != bucket {
                break;
            }
            out.push((Key(*k.value()), decode_entry(v.value())?.version));
        }
        Ok(out)
    }

    /// The entries of these keys that exist here.
    pub fn entries_for(&self, keys: &[Key]) -> Result<Vec<Entry>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let entries = tx.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for k in keys {
            if let Some(e) = read_entry(&entries, k)? {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Every tombstone older than `before_ns` (by its mtime), up to `limit`.
    pub fn old_tombstones(&self, before_ns: i64, limit: usize) -> Result<Vec<(Key, Version)>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let entries = tx.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in entries.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            let e = decode_entry(v.value())?;
            if e.deleted && e.mtime_ns < before_ns {
                out.push((Key(*k.value()), e.version));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Forgets tombstones that every node has (the leader checked): each is
    /// removed only if it is still a tombstone at exactly that version.
    pub fn purge(&self, items: &[(Key, Version)]) -> Result<usize> {
        let tx = self.db()?.begin_write().map_err(|e| self.db_err(e))?;
        let mut purged = 0;
        {
            let mut entries = tx.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
            let mut versions = tx.open_table(VERSIONS).map_err(|e| self.db_err(e))?;
            let mut meta = tx.open_table(META).map_err(|e| self.db_err(e))?;
            let mut digests = read_digests(&meta)?;
            for (key, version) in items {
                let Some(e) = read_entry(&entries, key)? else { continue };
                if !e.deleted || e.version != *version {
                    continue;
                }
                entries.remove(&key.0).map_err(|e| self.db_err(e))?;
                versions.remove(&version.to_be_bytes()).map_err(|e| self.db_err(e))?;
                digests.toggle(key, *version);
                purged += 1;
            }
            if purged > 0 {
                meta.insert(DIGESTS, digests.to_bytes().as_slice()).map_err(|e| self.db_err(e))?;
            }
        }
        tx.commit().map_err(|e| self.db_err(e))?;
        Ok(purged)
    }

    /// Every blob this node keeps, for the scrub.
    pub fn held_blobs(&self) -> Result<Vec<(Key, Version)>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let held = tx.open_table(HELD).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in held.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            out.push((Key(*k.value()), Version::from_be_bytes(*v.value())));
        }
        Ok(out)
    }

    /// Every live file entry, for the leader's replica check.
    pub fn live_files(&self, after: Option<Key>, limit: usize) -> Result<Vec<Entry>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let entries = tx.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
        let lo = after.map(|k| k.0).unwrap_or([0; 32]);
        let mut out = Vec::new();
        for row in entries.range::<&[u8; 32]>(&lo..).map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            if Some(Key(*k.value())) == after {
                continue;
            }
            let e = decode_entry(v.value())?;
            if e.has_blob() {
                out.push(e);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Recomputes the digests from the entries (an index from before digests existed).
    pub(super) fn rebuild_digests(&self) -> Result<()> {
        let tx = self.db()?.begin_write().map_err(|e| self.db_err(e))?;
        {
            let entries = tx.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
            let mut meta = tx.open_table(META).map_err(|e| self.db_err(e))?;
            if meta.get(DIGESTS).map_err(|e| self.db_err(e))?.is_some() {
                return Ok(());
            }
            let mut digests = Digests::default();
            for row in entries.iter().map_err(|e| self.db_err(e))? {
                let (k, v) = row.map_err(|e| self.db_err(e))?;
                digests.toggle(&Key(*k.value()), decode_entry(v.value())?.version);
            }
            meta.insert(DIGESTS, digests.to_bytes().as_slice()).map_err(|e| self.db_err(e))?;
        }
        tx.commit().map_err(|e| self.db_err(e))
    }
}

impl Store {
    /// Withdraws this node's entry of `key` if it is still at `version`: an
    /// entry that never reached a majority under a leader that has since
    /// been replaced (this node led that term). Its blob, if kept here, is
    /// released (kept a while for reuse). Returns whether it was withdrawn.
    pub fn withdraw(&self, key: &Key, version: Version) -> Result<bool> {
        let tx = self.db()?.begin_write().map_err(|e| self.db_err(e))?;
        let mut released = None;
        {
            let mut entries = tx.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
            let mut names = tx.open_table(NAMES).map_err(|e| self.db_err(e))?;
            let mut versions = tx.open_table(VERSIONS).map_err(|e| self.db_err(e))?;
            let mut held = tx.open_table(HELD).map_err(|e| self.db_err(e))?;
            let mut wanted = tx.open_table(WANTED).map_err(|e| self.db_err(e))?;
            let mut meta = tx.open_table(META).map_err(|e| self.db_err(e))?;
            let Some(e) = read_entry(&entries, key)?.filter(|e| e.version == version) else {
                return Ok(false);
            };
            entries.remove(&key.0).map_err(|e| self.db_err(e))?;
            versions.remove(&version.to_be_bytes()).map_err(|e| self.db_err(e))?;
            if !e.deleted {
                names.remove(e.name.as_str()).map_err(|e| self.db_err(e))?;
            }
            if read_version(&held, key)? == Some(version) {
                held.remove(&key.0).map_err(|e| self.db_err(e))?;
                released = Some((self.layout.blob(key, version), e.hash));
            }
            wanted.remove(&key.0).map_err(|e| self.db_err(e))?;
            let mut digests = read_digests(&meta)?;
            digests.toggle(key, version);
            meta.insert(DIGESTS, digests.to_bytes().as_slice()).map_err(|e| self.db_err(e))?;
            self.held.store(held.len().map_err(|e| self.db_err(e))?, Ordering::Relaxed);
            self.wanted.store(wanted.len().map_err(|e| self.db_err(e))?, Ordering::Relaxed);
        }
        tx.commit().map_err(|e| self.db_err(e))?;
        if let Some((path, hash)) = released {
            if fs::rename(&path, self.layout.released(&hash)).is_err() {
                let _ = fs::remove_file(&path);
            }
        }
        Ok(true)
    }
}
