//! The namespace audit: what the index says that the namespace's own rules
//! forbid. The leader keeps every change consistent, but records merged from
//! a deposed leader's unacknowledged changes (which catch-up may bring in,
//! as it must bring in every acknowledged one) can leave an inode that no
//! name leads to, a link count that is off, a name whose inode is gone, or
//! a name in a directory that is gone.
//! The leader repairs what this finds (see `repair::namespace`).

use std::collections::HashMap;

use redb::{ReadableDatabase, ReadableTable};

use scs_common::{Dentry, Ino, Inode, Key, Kind, Record, Result};

use super::index::{decode_record, parse_child_value, read_whole, CHILDREN, INLINE_DATA, RECORDS};
use super::Store;

/// What the audit keeps of each live inode while it reads the index.
struct Seen {
    ino: Ino,
    kind: Kind,
    nlink: u32,
    parent: Ino,
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
    pub fn audit(&self) -> Result<Audit> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let children = tx.open_table(CHILDREN).map_err(|e| self.db_err(e))?;
        let records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
        // Every name, by the inode it leads to.
        let mut names: HashMap<Ino, Vec<(Ino, String)>> = HashMap::new();
        for row in children.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            let k = k.value();
            let (Some(parent), Ok(name)) =
                (k.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()), std::str::from_utf8(&k[8..]))
            else {
                continue;
            };
            if let Some((child, _)) = parse_child_value(v.value()) {
                names.entry(child).or_default().push((Ino(u64::from_be_bytes(parent)), name.to_string()));
            }
        }
        // What the rules need of each live inode, not the inode: a small
        // file's content and any inode's attributes stay in the index (the
        // few reported are read again whole, below).
        let mut inodes = Vec::new();
        let mut dirs = std::collections::HashSet::new();
        // What each inode record says, for the reasons of stray names.
        let mut states: HashMap<Ino, String> = HashMap::new();
        let mut trashed_files = std::collections::HashSet::new();
        for row in records.iter().map_err(|e| self.db_err(e))? {
            let (_, v) = row.map_err(|e| self.db_err(e))?;
            let Record::Inode(i) = decode_record(v.value())? else { continue };
            states.insert(i.ino, state_of(&i));
            // What is in the trash has no name on purpose: not an orphan,
            // and no name leads into it.
            if i.is_trashed() && i.kind != Kind::Dir && i.version_of().is_none() {
                trashed_files.insert(i.ino);
            }
            if i.deleted || i.is_trashed() {
                continue;
            }
            if i.kind == Kind::Dir {
                dirs.insert(i.ino);
            }
            inodes.push(Seen { ino: i.ino, kind: i.kind, nlink: i.nlink, parent: i.parent });
        }
        let data = tx.open_table(INLINE_DATA).map_err(|e| self.db_err(e))?;
        let whole = |ino: Ino| -> Result<Option<Inode>> {
            Ok(read_whole(&records, &data, &Key::of_ino(ino))?.and_then(|r| r.as_inode().cloned()))
        };
        let mut out = Audit::default();
        let why = |d: &Dentry| -> String {
            let of = |ino: Ino| states.get(&ino).cloned().unwrap_or_else(|| "missing".to_string());
            format!("directory {}: {}; child {}: {}", d.parent, of(d.parent), d.child, of(d.child))
        };
        // A name in a directory that is gone leads nowhere a path can reach
        // (the directory's own name lost to a newer one in a merge): it goes,
        // and counts for nothing below.
        for refs in names.values_mut() {
            for (parent, name) in refs.iter().filter(|(p, _)| !dirs.contains(p)) {
                if let Some(Record::Dentry(d)) = self.read(&records, &Key::of_dentry(*parent, name))? {
                    out.why.insert(d.key(), format!("in a directory that is not live ({})", why(&d)));
                    out.stray_names.push(d);
                }
            }
            refs.retain(|(p, _)| dirs.contains(p));
        }
        let live: std::collections::HashSet<Ino> = inodes.iter().map(|i| i.ino).collect();
        for i in inodes {
            if i.ino == Ino::ROOT {
                continue;
            }
            let mine = names.get(&i.ino).map(Vec::as_slice).unwrap_or_default();
            if mine.is_empty() {
                out.orphans.extend(whole(i.ino)?);
            } else if i.kind == Kind::Dir {
                if mine.len() > 1 {
                    // Keep the name in the directory the inode names as its parent.
                    let keep = mine.iter().position(|(p, _)| *p == i.parent).unwrap_or(0);
                    for (parent, name) in mine.iter().enumerate().filter(|(n, _)| *n != keep).map(|(_, pn)| pn) {
                        if let Some(Record::Dentry(d)) = self.read(&records, &Key::of_dentry(*parent, name))? {
                            let w = format!("a second name of a directory whose parent is {} ({})", i.parent, why(&d));
                            out.why.insert(d.key(), w);
                            out.stray_names.push(d);
                        }
                    }
                }
            } else if mine.len() as u32 != i.nlink {
                let n = mine.len() as u32;
                out.miscounted.extend(whole(i.ino)?.map(|i| (i, n)));
            }
        }
        for (child, refs) in &names {
            if live.contains(child) {
                continue;
            }
            if trashed_files.contains(child) && !refs.is_empty() {
                out.named_in_trash.extend(whole(*child)?.map(|i| (i, refs.len() as u32)));
                continue;
            }
            for (parent, name) in refs {
                if let Some(Record::Dentry(d)) = self.read(&records, &Key::of_dentry(*parent, name))? {
                    out.why.insert(d.key(), format!("leads to an inode that is not live ({})", why(&d)));
                    out.stray_names.push(d);
                }
            }
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
