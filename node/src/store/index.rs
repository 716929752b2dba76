//! The index tables in redb, and how records are stored in them.
//!
//! - `records`: key → msgpack [`Record`] (tombstones included): the truth.
//! - `children`: parent inode (8 bytes, big-endian) + name → child inode (8
//!   bytes) + kind (1 byte), live entries only, for listings and lookups.
//! - `subdirs`: directory inode → how many live subdirectories it has (a
//!   directory's link count, worked out here from the entries this node
//!   has, so it is never stored in a record that could disagree).
//! - `by_version`: version + key → (), for "everything newer than v" (a
//!   version names one record, except the records an upgrade made from one
//!   entry of format 1, which share its version).
//! - `held`: inode key → content version of the blob this node keeps.
//! - `wanted`: inode key → content version of a blob this node should keep but lacks.
//! - `inline`: inode key → size, for every file whose content is inline.
//! - `inline_data`: (inode key, chunk number) → that content, in chunks of
//!   [`INLINE_CHUNK`] bytes. Kept apart from `records`, where an inline
//!   inode holds an empty marker instead ([`Inode::for_client`]), so that
//!   the records stay small and their pages stay in the cache; and in
//!   chunks, because a value just over a page (a 4 KiB file) takes two.
//! - `meta`: small named values (format, the highest term seen, the sync
//!   watermark, the terms led, the bucket digests).

use redb::{ReadableTable, TableDefinition};

use scs_common::inode::{Bytes, INLINE_MAX};
use scs_common::{Error, Ino, Inode, Key, Kind, Record, Result, Version};

pub const RECORDS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("records");
pub const CHILDREN: TableDefinition<&[u8], &[u8]> = TableDefinition::new("children");
pub const SUBDIRS: TableDefinition<u64, u32> = TableDefinition::new("subdirs");
pub const BY_VERSION: TableDefinition<&[u8; 48], ()> = TableDefinition::new("by_version");
pub const HELD: TableDefinition<&[u8; 32], &[u8; 16]> = TableDefinition::new("held");
pub const WANTED: TableDefinition<&[u8; 32], &[u8; 16]> = TableDefinition::new("wanted");
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Files whose content is inline in their record, by key, with their size:
/// counted with the blobs held, as every node keeps them.
pub const INLINE: TableDefinition<&[u8; 32], u64> = TableDefinition::new("inline");
/// The content of inline files, in chunks (see the module's head).
pub const INLINE_DATA: TableDefinition<(&[u8; 32], u8), &[u8]> = TableDefinition::new("inline_data");
/// What is in the trash, oldest first: (when it was removed, inode) →
/// nothing. Kept in step with the records, like `children`.
pub const TRASH: TableDefinition<(i64, u64), ()> = TableDefinition::new("trash");
/// The earlier versions kept of each file (see `Trashed::version_of`):
/// (the file, when the version was replaced, the version's inode) →
/// nothing. Kept in step with the records, like `trash`.
pub const VERSIONS: TableDefinition<(u64, i64, u64), ()> = TableDefinition::new("versions");
/// The size of a chunk of inline content: two and their keys fit a page.
pub const INLINE_CHUNK: usize = 2000;

/// The index format this code writes. Format 1 (before inodes) kept one
/// entry per path; it is upgraded when the store opens. Format 2 is format
/// 3 without the journal: complete on its own, so it only needs the new
/// number (which keeps an older release from reading a format-3 index that
/// lacks what is still in the journal). Format 3 is format 4 without
/// inline content: it gains the empty `inline` tables when it opens, and
/// the new number keeps an older release from reading records it cannot
/// decode. Format 4 is format 5 without the trash: it gains the empty
/// `trash` table, and its records decode as they are. Format 5 is format 6
/// without earlier versions: it gains the empty `versions` table.
pub const FORMAT: u32 = 6;
/// The meta key of the format.
pub const FORMAT_KEY: &str = "format";

pub fn encode_record(r: &Record) -> Vec<u8> {
    rmp_serde::to_vec(r).expect("records serialize")
}

/// A record as `records` keeps it, and the inline content that goes to
/// `inline_data` instead.
pub fn stored_form(r: &Record) -> (Vec<u8>, Option<&[u8]>) {
    match r {
        Record::Inode(i) if i.inline.as_ref().is_some_and(|d| !d.0.is_empty()) => {
            let marked = Inode { inline: Some(Bytes(Vec::new())), ..i.clone() };
            (encode_record(&Record::Inode(marked)), i.inline.as_ref().map(|d| d.0.as_slice()))
        }
        _ => (encode_record(r), None),
    }
}

pub fn decode_record(bytes: &[u8]) -> Result<Record> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::Internal(format!("undecodable index record: {e}")))
}

/// Reads one record from an open `records` table.
pub fn read_record(table: &impl ReadableTable<&'static [u8; 32], &'static [u8]>, key: &Key) -> Result<Option<Record>> {
    match table.get(&key.0).map_err(db_err)? {
        Some(v) => Ok(Some(decode_record(v.value())?)),
        None => Ok(None),
    }
}

/// Gives an inode read from `records` its inline content back from
/// `inline_data` (a no-op for any other inode).
pub fn attach_inline(data: &impl ReadableTable<(&'static [u8; 32], u8), &'static [u8]>, i: &mut Inode) -> Result<()> {
    if !i.inline.as_ref().is_some_and(|d| d.0.is_empty()) || i.size == 0 {
        return Ok(());
    }
    if i.size > INLINE_MAX {
        return Err(Error::Corrupt(format!("index: inode {} of {} bytes is marked inline", i.ino, i.size)));
    }
    let key = i.key();
    let mut bytes = Vec::with_capacity(i.size as usize);
    for n in 0..chunks(i.size) {
        match data.get((&key.0, n)).map_err(db_err)? {
            Some(chunk) => bytes.extend_from_slice(chunk.value()),
            None => break,
        }
    }
    if bytes.len() as u64 != i.size {
        return Err(Error::Corrupt(format!("index: the inline content of inode {} is missing", i.ino)));
    }
    i.inline = Some(Bytes(bytes));
    Ok(())
}

/// Reads one record from open tables, inline content included.
pub fn read_whole(
    records: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    data: &impl ReadableTable<(&'static [u8; 32], u8), &'static [u8]>,
    key: &Key,
) -> Result<Option<Record>> {
    let mut r = read_record(records, key)?;
    if let Some(Record::Inode(i)) = r.as_mut() {
        attach_inline(data, i)?;
    }
    Ok(r)
}

/// Replaces the inline content of `key` (of `old_size` bytes, if any) with
/// `now` (none: the file has no inline content any more).
pub fn put_inline(
    data: &mut redb::Table<(&'static [u8; 32], u8), &'static [u8]>,
    key: &Key,
    old_size: Option<u64>,
    now: Option<&[u8]>,
) -> Result<()> {
    for n in 0..old_size.map(chunks).unwrap_or(0) {
        data.remove((&key.0, n)).map_err(db_err)?;
    }
    for (n, chunk) in now.unwrap_or_default().chunks(INLINE_CHUNK).enumerate() {
        let n = u8::try_from(n).map_err(|_| Error::Invalid(format!("inode {}: inline content too large", key)))?;
        data.insert((&key.0, n), chunk).map_err(db_err)?;
    }
    Ok(())
}

/// How many chunks inline content of `size` bytes takes.
fn chunks(size: u64) -> u8 {
    size.div_ceil(INLINE_CHUNK as u64).min(u64::from(u8::MAX)) as u8
}

pub fn read_version(
    table: &impl ReadableTable<&'static [u8; 32], &'static [u8; 16]>,
    key: &Key,
) -> Result<Option<Version>> {
    Ok(table.get(&key.0).map_err(db_err)?.map(|v| Version::from_be_bytes(*v.value())))
}

/// The `by_version` key of a record.
pub fn version_key(version: Version, key: &Key) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..16].copy_from_slice(&version.to_be_bytes());
    k[16..].copy_from_slice(&key.0);
    k
}

/// The version and record key of a `by_version` key.
pub fn parse_version_key(k: &[u8; 48]) -> (Version, Key) {
    let mut v = [0u8; 16];
    v.copy_from_slice(&k[..16]);
    let mut key = [0u8; 32];
    key.copy_from_slice(&k[16..]);
    (Version::from_be_bytes(v), Key(key))
}

/// The `children` key of `name` in `parent`.
pub fn child_key(parent: Ino, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + name.len());
    k.extend_from_slice(&parent.0.to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

/// The range of `children` keys of one directory: its 8-byte prefix.
pub fn children_of(parent: Ino) -> ([u8; 8], Option<[u8; 8]>) {
    let lo = parent.0.to_be_bytes();
    let hi = parent.0.checked_add(1).map(u64::to_be_bytes);
    (lo, hi)
}

/// The rows of `children` of one directory, in name order (by bytes).
pub fn children_rows<'t>(
    children: &'t impl ReadableTable<&'static [u8], &'static [u8]>,
    dir: Ino,
) -> Result<redb::Range<'t, &'static [u8], &'static [u8]>> {
    let (lo, hi) = children_of(dir);
    match &hi {
        Some(hi) => children.range::<&[u8]>(lo.as_slice()..hi.as_slice()),
        None => children.range::<&[u8]>(lo.as_slice()..),
    }
    .map_err(db_err)
}

/// The `children` value: the child inode and its kind.
pub fn child_value(child: Ino, kind: Kind) -> [u8; 9] {
    let mut v = [0u8; 9];
    v[..8].copy_from_slice(&child.0.to_be_bytes());
    v[8] = kind_byte(kind);
    v
}

pub fn parse_child_value(v: &[u8]) -> Option<(Ino, Kind)> {
    let ino = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    Some((Ino(ino), kind_of_byte(*v.get(8)?)?))
}

/// A row of `children`: the directory, the name and the inode it leads to;
/// `None` for a row that does not parse.
pub fn parse_child_row<'k>(key: &'k [u8], value: &[u8]) -> Option<(Ino, &'k str, Ino)> {
    let parent = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let name = std::str::from_utf8(&key[8..]).ok()?;
    let (child, _) = parse_child_value(value)?;
    Some((Ino(parent), name, child))
}

fn kind_byte(k: Kind) -> u8 {
    match k {
        Kind::File => 0,
        Kind::Dir => 1,
        Kind::Symlink => 2,
        Kind::Fifo => 3,
        Kind::Socket => 4,
        Kind::CharDev => 5,
        Kind::BlockDev => 6,
    }
}

fn kind_of_byte(b: u8) -> Option<Kind> {
    Some(match b {
        0 => Kind::File,
        1 => Kind::Dir,
        2 => Kind::Symlink,
        3 => Kind::Fifo,
        4 => Kind::Socket,
        5 => Kind::CharDev,
        6 => Kind::BlockDev,
        _ => return None,
    })
}

/// Any redb error, as ours.
pub fn db_err(e: impl std::fmt::Display) -> Error {
    Error::Io(format!("index: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_of_a_directory_sort_together_and_values_round_trip() {
        let (lo, hi) = children_of(Ino(7));
        let k = child_key(Ino(7), "zzz");
        assert!(k.as_slice() >= lo.as_slice() && k.as_slice() < hi.unwrap().as_slice());
        assert!(child_key(Ino(8), "").as_slice() >= hi.unwrap().as_slice());
        for kind in [Kind::File, Kind::Dir, Kind::Symlink, Kind::Fifo, Kind::Socket, Kind::CharDev, Kind::BlockDev] {
            assert_eq!(parse_child_value(&child_value(Ino(9), kind)), Some((Ino(9), kind)));
        }
        assert_eq!(parse_child_value(&[0; 3]), None);
    }
}
