//! Upgrading an index of format 1 (one entry per full path, from before
//! inodes) to format 2, in place, when the store opens.
//!
//! Every node upgrades its own index, so the result must not depend on the
//! node: an inode number is derived from the path (a hash, with the top bit
//! set, far above the numbers leaders hand out), and every record keeps the
//! version of the entry it comes from. A node that lagged behind before the
//! upgrade then catches up as it always did: the highest version wins.
//! Directories that only existed because files were below them become real
//! ones. Files had no owner: they get the owner of the data directory.
//!
//! Blobs are hard-linked to their new names before the one transaction that
//! replaces the tables, and the old names go after it, so a crash at any
//! point leaves either the old index with its blobs or the new one with its.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use scs_common::inode::NextIno;
use scs_common::{name, ContentHash, Dentry, Error, Ino, Inode, Key, Kind, NodeId, Record, Result, Term, Version};

use super::index::{db_err, FORMAT, FORMAT_KEY, HELD, META, WANTED};
use super::{link_into_place, Store};

/// The tables of format 1 that format 2 does not have.
const V1_ENTRIES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("entries");
const V1_NAMES: TableDefinition<&str, ()> = TableDefinition::new("names");
const V1_VERSIONS: TableDefinition<&[u8; 16], &[u8; 32]> = TableDefinition::new("versions");
/// The meta key of the bucket digests (rebuilt after the upgrade).
const DIGESTS: &str = "digests";

/// An index entry of format 1, field for field as it was encoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryV1 {
    pub name: String,
    pub version: Version,
    /// `File` or `Dir`: the first two kinds, encoded as they were.
    pub kind: Kind,
    pub size: u64,
    pub hash: ContentHash,
    pub mode: u32,
    pub mtime_ns: i64,
    pub deleted: bool,
    pub holders: Vec<NodeId>,
}

/// A blob as the index names it: inode (or format 1 path) key and version.
type Blob = (Key, Version);

/// The version given to what format 1 did not record: the root, the
/// counter of inode numbers, and directories implied by paths.
const UPGRADE: Version = Version { term: Term(0), seq: 1 };

/// Whether the index has the tables of format 1.
pub(super) fn has_format_1(tx: &redb::ReadTransaction) -> std::result::Result<bool, redb::Error> {
    match tx.open_table(V1_ENTRIES) {
        Ok(_) => Ok(true),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The inode number of a path of format 1: the root is the root; any other
/// path hashes to a number with the top bit set.
pub fn ino_of_path(path: &str) -> Ino {
    if path.is_empty() {
        return Ino::ROOT;
    }
    let d = Sha256::new().chain_update(b"scs-v1-path\0").chain_update(path.as_bytes()).finalize();
    let mut n = [0u8; 8];
    n.copy_from_slice(&d[..8]);
    Ino(u64::from_be_bytes(n) | 1 << 63)
}

/// The records of format 2 that stand for these entries of format 1.
pub fn records_of(entries: &[EntryV1], uid: u32, gid: u32) -> Vec<Record> {
    let live: Vec<&EntryV1> = entries.iter().filter(|e| !e.deleted).collect();
    // Every directory: explicit ones, and the ancestors of every live entry.
    let explicit: BTreeMap<&str, &EntryV1> =
        live.iter().filter(|e| e.kind == Kind::Dir).map(|e| (e.name.as_str(), *e)).collect();
    let mut implied: BTreeMap<&str, (Version, i64)> = BTreeMap::new();
    for e in &live {
        for dir in name::ancestors(&e.name) {
            if explicit.contains_key(dir) {
                continue;
            }
            // The newest entry below a directory dates it: newer than any
            // deletion of an explicit directory of that name before it.
            let slot = implied.entry(dir).or_insert((UPGRADE, 0));
            slot.0 = slot.0.max(e.version);
            slot.1 = slot.1.max(e.mtime_ns);
        }
    }
    let mut out = Vec::new();
    let mut root = super::new_root(0);
    root.version = UPGRADE;
    (root.uid, root.gid) = (uid, gid);
    out.push(Record::Inode(root));
    out.push(Record::NextIno(NextIno { version: UPGRADE, next: Ino(2), stamp_ns: 0 }));
    let named = |path: &str, mut inode: Inode, out: &mut Vec<Record>| {
        let parent = ino_of_path(name::parent(path));
        out.push(Record::Dentry(Dentry {
            parent,
            name: name::base(path).to_string(),
            version: inode.version,
            child: inode.ino,
            kind: inode.kind,
            deleted: false,
            stamp_ns: inode.ctime_ns,
        }));
        if inode.kind == Kind::Dir {
            inode.parent = parent;
            inode.nlink = 2;
        }
        out.push(Record::Inode(inode));
    };
    for (path, (version, mtime_ns)) in &implied {
        let mut d = Inode::new(ino_of_path(path), Kind::Dir, 0o755, uid, gid, *mtime_ns);
        d.version = *version;
        named(path, d, &mut out);
    }
    for e in &live {
        let mut i = Inode::new(ino_of_path(&e.name), e.kind, e.mode, uid, gid, e.mtime_ns);
        i.version = e.version;
        if e.kind == Kind::File {
            (i.size, i.hash, i.content, i.holders) = (e.size, e.hash, e.version, e.holders.clone());
        }
        named(&e.name, i, &mut out);
    }
    let shadowed: BTreeSet<&str> = implied.keys().copied().collect();
    for e in entries.iter().filter(|e| e.deleted && !shadowed.contains(e.name.as_str())) {
        out.push(Record::Dentry(Dentry {
            parent: ino_of_path(name::parent(&e.name)),
            name: name::base(&e.name).to_string(),
            version: e.version,
            child: Ino::NONE,
            kind: e.kind,
            deleted: true,
            stamp_ns: e.mtime_ns,
        }));
        let mut gone = Inode::new(ino_of_path(&e.name), e.kind, e.mode, uid, gid, e.mtime_ns);
        gone.version = e.version;
        out.push(Record::Inode(gone.tombstone(e.mtime_ns)));
    }
    out
}

impl Store {
    /// Upgrades an index of format 1 in place; the number of records made.
    pub(super) fn upgrade_from_format_1(&self) -> Result<usize> {
        // Wanted blobs need nothing: their inodes name this node a holder
        // with no blob in place, so the new index wants them again.
        let (entries, held) = self.read_format_1()?;
        let meta = fs::metadata(self.layout.root())?;
        let records = records_of(&entries, meta.uid(), meta.gid());
        let by_name: BTreeMap<Key, &EntryV1> = entries.iter().map(|e| (Key::of_name(&e.name), e)).collect();
        // The blobs this node held, under their new names.
        let mut moved = Vec::new();
        for (old_key, version) in &held {
            let Some(e) = by_name.get(old_key).filter(|e| !e.deleted && e.version == *version) else { continue };
            let new_key = Key::of_ino(ino_of_path(&e.name));
            let (from, to) = (self.layout.blob(old_key, *version), self.layout.blob(&new_key, *version));
            if fs::metadata(&from).is_ok() {
                link_into_place(&from, &to)?;
                moved.push(from);
            }
        }
        let tx = self.begin_durable()?;
        tx.delete_table(V1_ENTRIES).map_err(|e| self.db_err(e))?;
        tx.delete_table(HELD).map_err(|e| self.db_err(e))?;
        tx.delete_table(WANTED).map_err(|e| self.db_err(e))?;
        tx.delete_table(V1_NAMES).map_err(|e| self.db_err(e))?;
        tx.delete_table(V1_VERSIONS).map_err(|e| self.db_err(e))?;
        {
            let mut m = tx.open_table(META).map_err(|e| self.db_err(e))?;
            m.remove(DIGESTS).map_err(|e| self.db_err(e))?;
            m.insert(FORMAT_KEY, FORMAT.to_be_bytes().as_slice()).map_err(|e| self.db_err(e))?;
        }
        let (applied, files) = self.apply_in(&tx, &records, &[])?;
        tx.commit()?;
        self.let_go(files);
        for old in moved {
            let _ = fs::remove_file(old);
        }
        log::info!(
            "node {}: upgraded the index {} from format 1 to {FORMAT}: {} entries became {} records",
            self.me,
            self.layout.index().display(),
            entries.len(),
            applied.applied
        );
        Ok(applied.applied)
    }

    /// The entries and held blobs of an index of format 1.
    fn read_format_1(&self) -> Result<(Vec<EntryV1>, Vec<Blob>)> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let table = tx.open_table(V1_ENTRIES).map_err(|e| self.db_err(e))?;
        let mut entries = Vec::new();
        for row in table.iter().map_err(|e| self.db_err(e))? {
            let (_, v) = row.map_err(|e| self.db_err(e))?;
            let e: EntryV1 = rmp_serde::from_slice(v.value())
                .map_err(|e| Error::Internal(format!("an entry of the index of format 1 does not decode: {e}")))?;
            entries.push(e);
        }
        let pairs = |def: TableDefinition<&[u8; 32], &[u8; 16]>| -> Result<Vec<Blob>> {
            let mut out = Vec::new();
            match tx.open_table(def) {
                Ok(t) => {
                    for row in t.iter().map_err(db_err)? {
                        let (k, v) = row.map_err(db_err)?;
                        out.push((Key(*k.value()), Version::from_be_bytes(*v.value())));
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(db_err(e)),
            }
            Ok(out)
        };
        Ok((entries, pairs(HELD)?))
    }
}
