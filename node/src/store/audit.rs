//! The namespace audit: what the index says that the namespace's own rules
//! forbid. The leader keeps every change consistent, but records merged from
//! a deposed leader's unacknowledged changes (which catch-up may bring in,
//! as it must bring in every acknowledged one) can leave an inode that no
//! name leads to, a link count that is off, a name whose inode is gone, or
//! a name in a directory that is gone.
//! The leader repairs what this finds (see `repair::namespace`).

use std::collections::{HashMap, HashSet};

use redb::{ReadableDatabase, ReadableTable};

use scs_common::{Dentry, Ino, Inode, Key, Kind, Record, Result};

use super::index::{decode_record, parse_child_row, read_whole, CHILDREN, INLINE_DATA, RECORDS};
use super::Store;

/// What the audit keeps of each live inode while it reads the index: what
/// the rules need, not the inode (a small file's content and any inode's
/// attributes stay in the index; the few reported are read again whole).
struct Seen {
    kind: Kind,
    nlink: u32,
    parent: Ino,
    /// Names in live directories that lead to it.
    names: u32,
}

/// What an audit found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Audit {
    /// Live inodes no name leads to.
    pub orphans: Vec<Inode>,
    /// Non-directories whose link count is not their number of names: the
    /// inode and how many names lead to it.
    pub miscounted: Vec<(Inode, u32)>,
    /// Names that lead to no live inode, names in a directory that is gone,
    /// and extra names of a directory (a directory has one name: the one in
    /// the directory its inode says holds it).
    pub stray_names: Vec<Dentry>,
    /// Files in the trash that names in live directories lead to, and how
    /// many: a name is what makes a file reachable, so the file comes back
    /// out of the trash rather than the names go (which would lose it).
    pub named_in_trash: Vec<(Inode, u32)>,
    /// Why each stray name is stray (by its key): what the directory it is
    /// in and the inode it leads to are in the index, for the operator.
    pub why: HashMap<Key, String>,
}

impl Audit {
    pub fn is_empty(&self) -> bool {
        self.orphans.is_empty()
            && self.miscounted.is_empty()
            && self.stray_names.is_empty()
            && self.named_in_trash.is_empty()
    }
}

impl Store {
    /// Reads the whole index and reports what breaks the namespace's rules.
    ///
    /// Two passes, and a third in the rare case of a directory with two
    /// names: the inodes, then the names, counted. What it holds meanwhile
    /// is a few dozen bytes per live inode, not per name or per record (a
    /// leader audits every few seconds, with 100,000 files and more).
    pub fn audit(&self) -> Result<Audit> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let children = tx.open_table(CHILDREN).map_err(|e| self.db_err(e))?;
        let records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
        let data = tx.open_table(INLINE_DATA).map_err(|e| self.db_err(e))?;
        let mut live: HashMap<Ino, Seen> = HashMap::new();
        // Files in the trash have no name on purpose: not orphans, and no
        // name leads into them (one that does brings the file back).
        let mut trashed_files = HashSet::new();
        for row in records.iter().map_err(|e| self.db_err(e))? {
            let (_, v) = row.map_err(|e| self.db_err(e))?;
            let Record::Inode(i) = decode_record(v.value())? else { continue };
            if i.is_trashed() && i.kind != Kind::Dir && i.version_of().is_none() {
                trashed_files.insert(i.ino);
            }
            if !i.deleted && !i.is_trashed() {
                live.insert(i.ino, Seen { kind: i.kind, nlink: i.nlink, parent: i.parent, names: 0 });
            }
        }
        let whole = |ino: Ino| -> Result<Option<Inode>> {
            Ok(read_whole(&records, &data, &Key::of_ino(ino))?.and_then(|r| r.as_inode().cloned()))
        };
        // Why a name is stray, for the operator: what its directory and the
        // inode it leads to are in the index.
        let why = |d: &Dentry| -> Result<String> {
            let state = |ino: Ino| -> Result<String> {
                Ok(match self.read(&records, &Key::of_ino(ino))? {
                    Some(Record::Inode(i)) => state_of(&i),
                    _ => "missing".to_string(),
                })
            };
            Ok(format!("directory {}: {}; child {}: {}", d.parent, state(d.parent)?, d.child, state(d.child)?))
        };
        let mut out = Audit::default();
        let mut stray = |d: Dentry, because: String| {
            out.why.insert(d.key(), because);
            out.stray_names.push(d);
        };
        let is_live_dir = |ino: &Ino, live: &HashMap<Ino, Seen>| live.get(ino).is_some_and(|s| s.kind == Kind::Dir);
        let mut named_in_trash: HashMap<Ino, u32> = HashMap::new();
        for row in children.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            let Some((parent, name, child)) = parse_child_row(k.value(), v.value()) else { continue };
            if !is_live_dir(&parent, &live) {
                // A name in a directory that is gone leads nowhere a path
                // can reach (the directory's own name lost to a newer one
                // in a merge): it goes, and counts for nothing.
                if let Some(Record::Dentry(d)) = self.read(&records, &Key::of_dentry(parent, name))? {
                    let because = format!("in a directory that is not live ({})", why(&d)?);
                    stray(d, because);
                }
            } else if let Some(seen) = live.get_mut(&child) {
                seen.names += 1;
            } else if trashed_files.contains(&child) {
                *named_in_trash.entry(child).or_default() += 1;
            } else if let Some(Record::Dentry(d)) = self.read(&records, &Key::of_dentry(parent, name))? {
                let because = format!("leads to an inode that is not live ({})", why(&d)?);
                stray(d, because);
            }
        }
        // A directory has one name: the one in the directory its inode says
        // holds it.
        let mut second_names: HashSet<Ino> = HashSet::new();
        for (&ino, seen) in &live {
            if ino == Ino::ROOT {
                continue;
            }
            if seen.names == 0 {
                out.orphans.extend(whole(ino)?);
            } else if seen.kind == Kind::Dir {
                if seen.names > 1 {
                    second_names.insert(ino);
                }
            } else if seen.names != seen.nlink {
                out.miscounted.extend(whole(ino)?.map(|i| (i, seen.names)));
            }
        }
        if !second_names.is_empty() {
            let mut kept: HashSet<Ino> = HashSet::new();
            let mut extra = Vec::new();
            for row in children.iter().map_err(|e| self.db_err(e))? {
                let (k, v) = row.map_err(|e| self.db_err(e))?;
                let Some((parent, name, child)) = parse_child_row(k.value(), v.value()) else { continue };
                if !second_names.contains(&child) || !is_live_dir(&parent, &live) {
                    continue;
                }
                if live.get(&child).is_some_and(|s| s.parent == parent) && kept.insert(child) {
                    continue;
                }
                extra.push((parent, name.to_string(), child));
            }
            // A directory whose parent holds none of its names keeps the first.
            for (parent, name, child) in extra {
                if kept.insert(child) {
                    continue;
                }
                if let Some(Record::Dentry(d)) = self.read(&records, &Key::of_dentry(parent, &name))? {
                    let of = live.get(&child).map_or(Ino::NONE, |s| s.parent);
                    let because = format!("a second name of a directory whose parent is {of} ({})", why(&d)?);
                    stray(d, because);
                }
            }
        }
        for (child, names) in named_in_trash {
            out.named_in_trash.extend(whole(child)?.map(|i| (i, names)));
        }
        Ok(out)
    }

    fn read(
        &self,
        records: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
        key: &Key,
    ) -> Result<Option<Record>> {
        super::index::read_record(records, key)
    }
}

/// What an inode record says, in a few words: its kind, version and
/// whether it is gone or in the trash (and since when, from where).
fn state_of(i: &Inode) -> String {
    let mut s = format!("{} {:?}", i.kind.as_str(), i.version);
    if i.deleted {
        s.push_str(" tombstoned");
    } else if let Some(t) = i.trashed.as_ref() {
        s.push_str(&format!(" trashed at {} from {:?} in {}", t.at_ns, t.name, t.dir));
    } else {
        s.push_str(&format!(" live, nlink {}, parent {}", i.nlink, i.parent));
    }
    s
}
