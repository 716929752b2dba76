//! What anti-entropy, repair and the tombstone purge read from and do to
//! the index: bucket digests, per-bucket versions, purges and withdrawals.

use std::sync::atomic::Ordering;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use scs_common::{Error, Inode, Key, Record, Result, Version};

use super::digest::Digests;
use super::index::{
    db_err, decode_record, read_record, read_version, read_whole, version_key, BY_VERSION, CHILDREN, HELD, INLINE,
    INLINE_DATA, META, RECORDS, SUBDIRS, WANTED,
};
use super::{set_child, Store};

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
        let records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
        let mut lo = [0u8; 32];
        lo[0] = bucket;
        let mut out = Vec::new();
        for row in records.range::<&[u8; 32]>(&lo..).map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            if k.value()[0] != bucket {
                break;
            }
            out.push((Key(*k.value()), decode_record(v.value())?.version()));
        }
        Ok(out)
    }

    /// The records of these keys that exist here.
    pub fn records_for(&self, keys: &[Key]) -> Result<Vec<Record>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
        let data = tx.open_table(INLINE_DATA).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for k in keys {
            if let Some(r) = read_whole(&records, &data, k)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Every tombstone deleted before `before_ns`, up to `limit`.
    pub fn old_tombstones(&self, before_ns: i64, limit: usize) -> Result<Vec<(Key, Version)>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in records.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            let r = decode_record(v.value())?;
            if r.is_tombstone() && r.stamp_ns() < before_ns {
                out.push((Key(*k.value()), r.version()));
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
        let tx = self.begin_durable()?;
        let mut purged = 0;
        {
            let mut records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
            let mut by_version = tx.open_table(BY_VERSION).map_err(|e| self.db_err(e))?;
            let mut meta = tx.open_table(META).map_err(|e| self.db_err(e))?;
            let mut digests = read_digests(&meta)?;
            for (key, version) in items {
                let Some(r) = read_record(&records, key)? else { continue };
                if !r.is_tombstone() || r.version() != *version {
                    continue;
                }
                records.remove(&key.0).map_err(|e| self.db_err(e))?;
                by_version.remove(&version_key(*version, key)).map_err(|e| self.db_err(e))?;
                digests.toggle(key, *version);
                purged += 1;
            }
            if purged > 0 {
                meta.insert(DIGESTS, digests.to_bytes().as_slice()).map_err(|e| self.db_err(e))?;
            }
        }
        tx.commit()?;
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

    /// The inodes with a blob among the next `rows` records after `after`
    /// (in key order), for the leader's scans of every file (replicas,
    /// rebalancing); also where to go on from: the last key looked at, or
    /// `None` once the end was reached. A page is bounded by the records
    /// read, not by the files found: where most records are names or small
    /// files, a page of files would read the whole index.
    pub fn live_files(&self, after: Option<Key>, rows: usize) -> Result<(Vec<Inode>, Option<Key>)> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
        let lo = after.map(|k| k.0).unwrap_or([0; 32]);
        let mut out = Vec::new();
        let (mut read, mut last) = (0, None);
        for row in records.range::<&[u8; 32]>(&lo..).map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            let key = Key(*k.value());
            if Some(key) == after {
                continue;
            }
            if read == rows.max(1) {
                return Ok((out, last));
            }
            read += 1;
            last = Some(key);
            if let Record::Inode(i) = decode_record(v.value())? {
                if i.has_blob() {
                    out.push(i);
                }
            }
        }
        Ok((out, None))
    }

    /// Recomputes the digests from the records (after an upgrade, or an
    /// index whose digests were lost).
    pub(super) fn rebuild_digests(&self) -> Result<()> {
        let tx = self.db()?.begin_write().map_err(|e| self.db_err(e))?;
        {
            let records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
            let mut meta = tx.open_table(META).map_err(|e| self.db_err(e))?;
            if meta.get(DIGESTS).map_err(|e| self.db_err(e))?.is_some() {
                return Ok(());
            }
            let mut digests = Digests::default();
            for row in records.iter().map_err(|e| self.db_err(e))? {
                let (k, v) = row.map_err(|e| self.db_err(e))?;
                digests.toggle(&Key(*k.value()), decode_record(v.value())?.version());
            }
            meta.insert(DIGESTS, digests.to_bytes().as_slice()).map_err(|e| self.db_err(e))?;
        }
        tx.commit().map_err(|e| self.db_err(e))
    }
}

impl Store {
    /// Withdraws this node's record of `key` if it is still at `version`:
    /// a change that never reached a majority under a leader that has since
    /// been replaced (this node led that term). Its blob, if kept here, is
    /// released (kept a while for reuse). Returns whether it was withdrawn.
    pub fn withdraw(&self, key: &Key, version: Version) -> Result<bool> {
        let tx = self.begin_durable()?;
        let mut released = None;
        let mut trashed = false;
        {
            let mut records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
            let mut children = tx.open_table(CHILDREN).map_err(|e| self.db_err(e))?;
            let mut subdirs = tx.open_table(SUBDIRS).map_err(|e| self.db_err(e))?;
            let mut by_version = tx.open_table(BY_VERSION).map_err(|e| self.db_err(e))?;
            let mut held = tx.open_table(HELD).map_err(|e| self.db_err(e))?;
            let mut wanted = tx.open_table(WANTED).map_err(|e| self.db_err(e))?;
            let mut inline = tx.open_table(INLINE).map_err(|e| self.db_err(e))?;
            let mut data = tx.open_table(INLINE_DATA).map_err(|e| self.db_err(e))?;
            let mut trash = super::trash::TrashTables::open(&tx).map_err(|e| self.db_err(e))?;
            let mut meta = tx.open_table(META).map_err(|e| self.db_err(e))?;
            let Some(r) = read_record(&records, key)?.filter(|r| r.version() == version) else {
                return Ok(false);
            };
            records.remove(&key.0).map_err(|e| self.db_err(e))?;
            by_version.remove(&version_key(version, key)).map_err(|e| self.db_err(e))?;
            match &r {
                Record::Dentry(d) if !d.deleted => {
                    let gone = scs_common::Dentry { deleted: true, ..d.clone() };
                    set_child(&mut children, &mut subdirs, &gone).map_err(|e| self.db_err(e))?;
                }
                Record::Inode(i) => {
                    if i.has_blob() && read_version(&held, key)? == Some(i.content) {
                        held.remove(&key.0).map_err(|e| self.db_err(e))?;
                        released = Some((self.layout.blob(key, i.content), i.hash));
                    }
                    wanted.remove(&key.0).map_err(|e| self.db_err(e))?;
                    self.keep_inline(&mut inline, &mut data, key, None)?;
                    trash.forget(i).map_err(|e| self.db_err(e))?;
                    trashed = trash.changed;
                }
                _ => {}
            }
            let mut digests = read_digests(&meta)?;
            digests.toggle(key, version);
            meta.insert(DIGESTS, digests.to_bytes().as_slice()).map_err(|e| self.db_err(e))?;
            self.recount(&held, &wanted)?;
            self.inline.store(inline.len().map_err(|e| self.db_err(e))?, Ordering::Relaxed);
        }
        tx.commit()?;
        if trashed {
            self.trash_changed.store(true, Ordering::Relaxed);
        }
        if let Some((path, hash)) = released {
            self.release(&path, &hash);
        }
        if *key == Key::members() {
            self.reload_members()?;
        }
        Ok(true)
    }
}
