//! The trash as the index keeps it: every trashed inode is a live record
//! (see [`Inode::trashed`]); the `trash` table lists them by the time they
//! were removed, so that the oldest are found first without reading every
//! record.

use redb::{ReadableDatabase, ReadableTable};

use std::sync::atomic::Ordering;

use scs_common::{Ino, Inode, Key, Kind, Record, Result};

use super::index::{children_rows, parse_child_value, read_record, CHILDREN, RECORDS, TRASH};
use super::Store;

/// Keeps the `trash` table in step with inode `now`, which replaces `old`.
pub(super) fn keep_trash(
    trash: &mut redb::Table<(i64, u64), ()>,
    old: Option<&Inode>,
    now: &Inode,
) -> std::result::Result<(), redb::Error> {
    let at = |i: &Inode| i.trashed.as_ref().filter(|_| !i.deleted).map(|t| (t.at_ns, i.ino.0));
    let (was, is) = (old.and_then(at), at(now));
    if was == is {
        return Ok(());
    }
    if let Some(k) = was {
        trash.remove(k)?;
    }
    if let Some(k) = is {
        trash.insert(k, ())?;
    }
    Ok(())
}

/// Takes inode `gone`, whose record goes, out of the `trash` table.
pub(super) fn forget_trash(
    trash: &mut redb::Table<(i64, u64), ()>,
    gone: &Inode,
) -> std::result::Result<(), redb::Error> {
    if let Some(t) = gone.trashed.as_ref().filter(|_| !gone.deleted) {
        trash.remove((t.at_ns, gone.ino.0))?;
    }
    Ok(())
}

impl Store {
    /// Up to `limit` inodes in the trash removed before `before_ns`
    /// (everything with `i64::MAX`), the oldest first, without their inline
    /// content.
    pub fn trashed(&self, before_ns: i64, limit: usize) -> Result<Vec<Inode>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let trash = tx.open_table(TRASH).map_err(|e| self.db_err(e))?;
        let records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in trash.range((i64::MIN, 0)..(before_ns, 0)).map_err(|e| self.db_err(e))? {
            if out.len() >= limit {
                break;
            }
            let (k, _) = row.map_err(|e| self.db_err(e))?;
            let (at, ino) = k.value();
            // A row the record no longer matches is left over: not listed.
            if let Some(Record::Inode(i)) = read_record(&records, &Key::of_ino(Ino(ino)))? {
                if i.trashed.as_ref().is_some_and(|t| t.at_ns == at) && i.is_trashed() {
                    out.push(i.for_client());
                }
            }
        }
        Ok(out)
    }

    /// Bytes of content in the trash that this node keeps (in blobs it
    /// holds, or inline), as of the last count.
    pub fn trash_bytes(&self) -> u64 {
        self.trash_bytes.load(Ordering::Relaxed)
    }

    /// Counts [`Store::trash_bytes`] again.
    pub fn tally_trash_bytes(&self) -> Result<u64> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let trash = tx.open_table(TRASH).map_err(|e| self.db_err(e))?;
        let records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
        let mut bytes = 0;
        for row in trash.iter().map_err(|e| self.db_err(e))? {
            let (k, _) = row.map_err(|e| self.db_err(e))?;
            let (at, ino) = k.value();
            if let Some(Record::Inode(i)) = read_record(&records, &Key::of_ino(Ino(ino)))? {
                let listed = i.trashed.as_ref().is_some_and(|t| t.at_ns == at) && i.is_trashed();
                if listed && i.kind == Kind::File && (i.inline.is_some() || i.holders.contains(&self.me)) {
                    bytes += i.size;
                }
            }
        }
        self.trash_bytes.store(bytes, Ordering::Relaxed);
        Ok(bytes)
    }

    /// How many inodes are in the trash.
    pub fn trash_count(&self) -> Result<u64> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let trash = tx.open_table(TRASH).map_err(|e| self.db_err(e))?;
        redb::ReadableTableMetadata::len(&trash).map_err(|e| self.db_err(e))
    }
}

impl Store {
    /// The name that leads to `child` in directory `parent` (a directory's
    /// own name: directories have one), read from `children`.
    pub fn name_in(&self, parent: Ino, child: Ino) -> Result<Option<String>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let children = tx.open_table(CHILDREN).map_err(|e| self.db_err(e))?;
        let rows = children_rows(&children, parent)?;
        for row in rows {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            if parse_child_value(v.value()).is_some_and(|(c, _)| c == child) {
                return Ok(std::str::from_utf8(&k.value()[8..]).ok().map(str::to_string));
            }
        }
        Ok(None)
    }
}
