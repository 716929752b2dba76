//! The index tables in redb, and how entries are stored in them.
//!
//! - `entries`: key → msgpack [`Entry`] (tombstones included): the truth.
//! - `names`: live name → () in byte order, for listings.
//! - `versions`: version → key, for "everything newer than v".
//! - `held`: key → version of the blob this node keeps.
//! - `wanted`: key → version of a blob this node should keep but lacks.
//! - `meta`: small named values (the highest term seen, the sync watermark).

use redb::{ReadableTable, TableDefinition};

use scs_common::{Entry, Error, Key, Result, Version};

pub const ENTRIES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("entries");
pub const NAMES: TableDefinition<&str, ()> = TableDefinition::new("names");
pub const VERSIONS: TableDefinition<&[u8; 16], &[u8; 32]> = TableDefinition::new("versions");
pub const HELD: TableDefinition<&[u8; 32], &[u8; 16]> = TableDefinition::new("held");
pub const WANTED: TableDefinition<&[u8; 32], &[u8; 16]> = TableDefinition::new("wanted");
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

pub fn encode_entry(e: &Entry) -> Vec<u8> {
    rmp_serde::to_vec(e).expect("entries serialize")
}

pub fn decode_entry(bytes: &[u8]) -> Result<Entry> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::Internal(format!("undecodable index entry: {e}")))
}

/// Reads one entry from an open `entries` table.
pub fn read_entry(table: &impl ReadableTable<&'static [u8; 32], &'static [u8]>, key: &Key) -> Result<Option<Entry>> {
    match table.get(&key.0).map_err(db_err)? {
        Some(v) => Ok(Some(decode_entry(v.value())?)),
        None => Ok(None),
    }
}

pub fn read_version(
    table: &impl ReadableTable<&'static [u8; 32], &'static [u8; 16]>,
    key: &Key,
) -> Result<Option<Version>> {
    Ok(table.get(&key.0).map_err(db_err)?.map(|v| Version::from_be_bytes(*v.value())))
}

/// Any redb error, as ours.
pub fn db_err(e: impl std::fmt::Display) -> Error {
    Error::Io(format!("index: {e}"))
}
