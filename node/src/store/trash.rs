//! The trash as the index keeps it: every trashed inode is a live record
//! (see [`Inode::trashed`]); the `trash` table lists them by the time they
//! were removed, so that the oldest are found first without reading every
//! record.

use std::collections::{HashMap, HashSet};

use redb::{ReadableDatabase, ReadableTable};

use std::sync::atomic::Ordering;

use scs_common::{Ino, Inode, Key, Kind, Record, Result};

use super::index::{
    children_rows, parse_child_row, parse_child_value, read_record, CHILDREN, RECORDS, TRASH, VERSIONS,
};
use super::Store;

/// The `trash` and `versions` tables as one change sees them.
pub(super) struct TrashTables<'t> {
    pub trash: redb::Table<'t, (i64, u64), ()>,
    pub versions: redb::Table<'t, (u64, i64, u64), ()>,
    /// Whether anything in the trash changed (its bytes are to be counted again).
    pub changed: bool,
}

impl<'t> TrashTables<'t> {
    pub fn open(tx: &'t redb::WriteTransaction) -> std::result::Result<Self, redb::TableError> {
        Ok(TrashTables { trash: tx.open_table(TRASH)?, versions: tx.open_table(VERSIONS)?, changed: false })
    }

    /// Keeps the tables in step with inode `now`, which replaces `old`.
    pub fn keep(&mut self, old: Option<&Inode>, now: &Inode) -> std::result::Result<(), redb::Error> {
        let (was, is) = (old.and_then(rows), rows(now));
        // A trashed inode's holders may change with its rows the same.
        self.changed |= was.is_some() || is.is_some();
        if was == is {
            return Ok(());
        }
        if let Some(gone) = old {
            self.forget(gone)?;
        }
        if let Some(((at, ino), of)) = is {
            self.trash.insert((at, ino), ())?;
            if let Some(of) = of {
                self.versions.insert((of, at, ino), ())?;
            }
        }
        Ok(())
    }

    /// Takes inode `gone`, whose record goes, out of the tables.
    pub fn forget(&mut self, gone: &Inode) -> std::result::Result<(), redb::Error> {
        if let Some(((at, ino), of)) = rows(gone) {
            self.changed = true;
            self.trash.remove((at, ino))?;
            if let Some(of) = of {
                self.versions.remove((of, at, ino))?;
            }
        }
        Ok(())
    }
}

/// The rows an inode has in the tables: in `trash`, and in `versions` if
/// it is an earlier version of a file.
fn rows(i: &Inode) -> Option<((i64, u64), Option<u64>)> {
    let t = i.trashed.as_ref().filter(|_| !i.deleted)?;
    Some(((t.at_ns, i.ino.0), t.version_of.map(|of| of.0)))
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

    /// The earlier versions kept of file `of`, the oldest first, without
    /// their inline content.
    pub fn versions(&self, of: Ino) -> Result<Vec<Inode>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let versions = tx.open_table(VERSIONS).map_err(|e| self.db_err(e))?;
        let records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in versions.range((of.0, i64::MIN, 0)..=(of.0, i64::MAX, u64::MAX)).map_err(|e| self.db_err(e))? {
            let (k, _) = row.map_err(|e| self.db_err(e))?;
            let (_, at, ino) = k.value();
            if let Some(Record::Inode(i)) = read_record(&records, &Key::of_ino(Ino(ino)))? {
                if i.version_of() == Some(of) && i.trashed.as_ref().is_some_and(|t| t.at_ns == at) {
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

    /// Counts [`Store::trash_bytes`] again if the trash changed since the
    /// last count.
    pub fn tally_trash_bytes(&self) -> Result<u64> {
        if !self.trash_changed.swap(false, Ordering::Relaxed) {
            return Ok(self.trash_bytes());
        }
        let counted = self.count_trash_bytes();
        if counted.is_err() {
            self.trash_changed.store(true, Ordering::Relaxed);
        }
        counted
    }

    fn count_trash_bytes(&self) -> Result<u64> {
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
    #[cfg(test)]
    pub fn trash_count(&self) -> Result<u64> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let trash = tx.open_table(TRASH).map_err(|e| self.db_err(e))?;
        redb::ReadableTableMetadata::len(&trash).map_err(|e| self.db_err(e))
    }
}

impl Store {
    /// A name of each of `files` that has one, as its directory and the
    /// name in it: one pass over every entry, for listings that want the
    /// paths of many.
    pub fn names_of(&self, files: &HashSet<Ino>) -> Result<HashMap<Ino, (Ino, String)>> {
        let mut out = HashMap::new();
        if files.is_empty() {
            return Ok(out);
        }
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let children = tx.open_table(CHILDREN).map_err(|e| self.db_err(e))?;
        for row in children.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            let Some((parent, name, child)) = parse_child_row(k.value(), v.value()) else { continue };
            if files.contains(&child) {
                out.entry(child).or_insert((parent, name.to_string()));
            }
            if out.len() == files.len() {
                break;
            }
        }
        Ok(out)
    }

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
