//! The node's store: blobs on disk and the index in redb (DESIGN sections 2
//! and 5). The only code that knows paths.
//!
//! Durability order for a new blob: temp file, hashed while written, fsync,
//! rename into place, fsync the directory, then commit the index. Anything on
//! disk that the index does not reference is garbage from a crash and is
//! removed when the store opens.

mod blobs;
pub mod digest;
mod entropy;
mod gc;
mod index;
pub mod layout;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use scs_common::name;
use scs_common::{ContentHash, Entry, Error, Key, Kind, NodeId, Result, Term, Version};

pub use blobs::{hash_file, BlobReader, BlobWriter};
use entropy::{read_digests, DIGESTS};
use index::{
    db_err, decode_entry, encode_entry, read_entry, read_version, ENTRIES, HELD, META, NAMES, VERSIONS, WANTED,
};
use layout::Layout;

/// What a name stands for right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A live file or an explicit directory.
    Live(Entry),
    /// No entry, but files below it: a directory implied by their paths.
    Implied(Entry),
    Absent,
}

impl Lookup {
    pub fn entry(self) -> Option<Entry> {
        match self {
            Lookup::Live(e) | Lookup::Implied(e) => Some(e),
            Lookup::Absent => None,
        }
    }

    pub fn is_dir(&self) -> bool {
        match self {
            Lookup::Live(e) => e.kind == Kind::Dir,
            Lookup::Implied(_) => true,
            Lookup::Absent => false,
        }
    }
}

/// What opening the store found and fixed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub temp_files_removed: usize,
    pub orphan_blobs_removed: usize,
    /// Blobs the index says we hold that were missing or the wrong size: now wanted.
    pub blobs_missing: usize,
    pub blobs_held: u64,
}

/// The outcome of [`Store::apply`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Entries that were newer than ours and are now committed.
    pub applied: usize,
    /// Entries we already had at that version or newer.
    pub stale: usize,
    /// Blobs we should hold but lack (to fetch from another holder).
    pub wanted: usize,
}

/// How often a failed index is tried again.
const REOPEN_EVERY: Duration = Duration::from_secs(1);
/// Terms led that the store remembers (an older one's entries were
/// reconciled long ago).
pub const LED_TERMS_KEPT: usize = 256;

pub struct Store {
    layout: Layout,
    /// The index; `None` only while it is being reopened (see [`Store::db`]).
    db: RwLock<Option<Arc<Database>>>,
    /// Set when redb met an I/O error (a full disk, say): it refuses all work
    /// until it is closed and opened again, which [`Store::db`] does.
    index_failed: AtomicBool,
    /// When the last reopen was tried, so that a disk still full is not
    /// hammered.
    last_reopen: Mutex<Option<Instant>>,
    me: NodeId,
    max_files: Option<u64>,
    tmp_counter: AtomicU64,
    held: AtomicU64,
    wanted: AtomicU64,
    /// Bad copies found (scrub, readers' reports) since the store opened.
    corrupt: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.layout.root()).field("me", &self.me).finish()
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`: removes stale temp files,
    /// checks the index against the blobs and removes unreferenced blobs.
    ///
    /// # Errors
    /// `Io` if the directory or the index cannot be opened.
    pub fn open(dir: &Path, me: NodeId, max_files: Option<u64>) -> Result<(Store, OpenReport)> {
        let layout = Layout::new(dir);
        for d in [
            layout.root().to_path_buf(),
            layout.blobs_dir(),
            layout.tmp_dir(),
            layout.corrupt_dir(),
            layout.released_dir(),
        ] {
            fs::create_dir_all(&d).map_err(|e| Error::Io(format!("cannot create {}: {e}", d.display())))?;
        }
        // Every shard directory exists, durably, before any blob goes in one.
        for b in 0..=255u8 {
            let mut k = [0u8; 32];
            k[0] = b;
            fs::create_dir_all(layout.shard_dir(&Key(k)))?;
        }
        for d in [layout.blobs_dir(), layout.root().to_path_buf()] {
            blobs::sync_dir(&d)?;
        }
        let db = Database::create(layout.index())
            .map_err(|e| Error::Io(format!("cannot open the index {}: {e}", layout.index().display())))?;
        let store = Store {
            layout,
            db: RwLock::new(Some(Arc::new(db))),
            index_failed: AtomicBool::new(false),
            last_reopen: Mutex::new(None),
            me,
            max_files,
            tmp_counter: AtomicU64::new(rand::random::<u64>() >> 16),
            held: AtomicU64::new(0),
            wanted: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
        };
        // Create every table so that readers never meet a missing one.
        let tx = store.db()?.begin_write().map_err(|e| store.db_err(e))?;
        {
            tx.open_table(ENTRIES).map_err(|e| store.db_err(e))?;
            tx.open_table(NAMES).map_err(|e| store.db_err(e))?;
            tx.open_table(VERSIONS).map_err(|e| store.db_err(e))?;
            tx.open_table(HELD).map_err(|e| store.db_err(e))?;
            tx.open_table(WANTED).map_err(|e| store.db_err(e))?;
            tx.open_table(META).map_err(|e| store.db_err(e))?;
        }
        tx.commit().map_err(|e| store.db_err(e))?;
        let report = store.recover()?;
        store.rebuild_digests()?;
        Ok((store, report))
    }

    /// The index, opened again first if redb met an I/O error since (it then
    /// refuses all work until reopened). A reopen waits briefly for the
    /// transactions still running on the old handle and is tried at most
    /// once per [`REOPEN_EVERY`] while it fails (a disk still full).
    fn db(&self) -> Result<Arc<Database>> {
        if self.index_failed.load(Ordering::Acquire) {
            self.reopen_index();
        }
        let slot = self.db.read().unwrap_or_else(|p| p.into_inner());
        slot.clone().ok_or_else(|| Error::Io("index: closed after an I/O error, not yet reopened".into()))
    }

    fn reopen_index(&self) {
        {
            let mut last = self.last_reopen.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < REOPEN_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        if !self.index_failed.load(Ordering::Acquire) {
            return;
        }
        drop(slot.take());
        let path = self.layout.index();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match Database::create(&path) {
                Ok(db) => {
                    *slot = Some(Arc::new(db));
                    break;
                }
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => {
                    log::warn!("cannot reopen the index {} yet: {e}", path.display());
                    return;
                }
            }
        }
        self.index_failed.store(false, Ordering::Release);
        drop(slot);
        log::warn!("reopened the index {} after an I/O error", path.display());
        if let Err(e) = self.rebuild_digests() {
            log::warn!("after reopening the index: {e}");
        }
    }

    /// A redb error as ours; an I/O error marks the index for reopening.
    pub(super) fn db_err(&self, e: impl Into<redb::Error>) -> Error {
        let e: redb::Error = e.into();
        if matches!(e, redb::Error::PreviousIo | redb::Error::Io(_)) {
            self.index_failed.store(true, Ordering::Release);
        }
        db_err(e)
    }

    /// Start-up checks: temp files, missing blobs, orphan blobs.
    fn recover(&self) -> Result<OpenReport> {
        let mut report = OpenReport::default();
        for f in fs::read_dir(self.layout.tmp_dir())? {
            if fs::remove_file(f?.path()).is_ok() {
                report.temp_files_removed += 1;
            }
        }
        // Every blob file on disk, by (key, version).
        let mut on_disk: HashSet<(Key, Version)> = HashSet::new();
        for shard in fs::read_dir(self.layout.blobs_dir())? {
            let shard = shard?.path();
            if !shard.is_dir() {
                continue;
            }
            for f in fs::read_dir(&shard)? {
                let f = f?;
                match f.file_name().to_str().and_then(layout::parse_blob_file_name) {
                    Some(kv) => {
                        on_disk.insert(kv);
                    }
                    None => log::warn!("ignoring a stray file in the blob store: {}", f.path().display()),
                }
            }
        }
        let tx = self.db()?.begin_write().map_err(|e| self.db_err(e))?;
        {
            let entries = tx.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
            let mut held = tx.open_table(HELD).map_err(|e| self.db_err(e))?;
            let mut wanted = tx.open_table(WANTED).map_err(|e| self.db_err(e))?;
            let mut lost = Vec::new();
            let mut keep: HashSet<(Key, Version)> = HashSet::new();
            for row in held.iter().map_err(|e| self.db_err(e))? {
                let (k, v) = row.map_err(|e| self.db_err(e))?;
                let (key, version) = (Key(*k.value()), Version::from_be_bytes(*v.value()));
                let size_ok = read_entry(&entries, &key)?
                    .filter(|e| e.version == version)
                    .map(|e| fs::metadata(self.layout.blob(&key, version)).map(|m| m.len() == e.size).unwrap_or(false))
                    .unwrap_or(false);
                if size_ok {
                    keep.insert((key, version));
                } else {
                    lost.push((key, version));
                }
            }
            for (key, version) in &lost {
                log::warn!("blob {key:?} {version:?} is missing or damaged: it will be fetched again");
                held.remove(&key.0).map_err(|e| self.db_err(e))?;
                let _ = fs::remove_file(self.layout.blob(key, *version));
                wanted.insert(&key.0, &version.to_be_bytes()).map_err(|e| self.db_err(e))?;
            }
            report.blobs_missing = lost.len();
            // A wanted blob that made it to disk before a crash is adopted if whole.
            let mut adopted = Vec::new();
            for row in wanted.iter().map_err(|e| self.db_err(e))? {
                let (k, v) = row.map_err(|e| self.db_err(e))?;
                let (key, version) = (Key(*k.value()), Version::from_be_bytes(*v.value()));
                if on_disk.contains(&(key, version)) {
                    if let Some(e) = read_entry(&entries, &key)?.filter(|e| e.version == version) {
                        if let Ok((hash, size)) = hash_file(&self.layout.blob(&key, version)) {
                            if hash == e.hash && size == e.size {
                                adopted.push((key, version));
                            }
                        }
                    }
                }
            }
            for (key, version) in adopted {
                wanted.remove(&key.0).map_err(|e| self.db_err(e))?;
                held.insert(&key.0, &version.to_be_bytes()).map_err(|e| self.db_err(e))?;
                keep.insert((key, version));
            }
            // A blob without an entry may be a replica whose Apply has not
            // arrived yet (the leader counted it): only remove the ones whose
            // entry was decided without this node; the sweep judges the rest.
            for (key, version) in on_disk.difference(&keep) {
                let decided = read_entry(&entries, key)?.is_some_and(|e| e.version >= *version);
                if decided && fs::remove_file(self.layout.blob(key, *version)).is_ok() {
                    report.orphan_blobs_removed += 1;
                }
            }
            report.blobs_held = held.len().map_err(|e| self.db_err(e))?;
            self.held.store(report.blobs_held, Ordering::Relaxed);
            self.wanted.store(wanted.len().map_err(|e| self.db_err(e))?, Ordering::Relaxed);
        }
        tx.commit().map_err(|e| self.db_err(e))?;
        Ok(report)
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    pub fn max_files(&self) -> Option<u64> {
        self.max_files
    }

    /// Free and total bytes of the disk the store is on (zeros if unknown).
    pub fn disk_space(&self) -> (u64, u64) {
        match scs_common::mounts::statvfs(self.layout.root()) {
            Ok(st) => (st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize),
            Err(_) => (0, 0),
        }
    }

    /// Blobs this node keeps.
    pub fn files(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Blobs this node should keep but still has to fetch.
    pub fn wanted_count(&self) -> u64 {
        self.wanted.load(Ordering::Relaxed)
    }

    /// Whether this node can take one more blob for `key` (replacing its
    /// current blob for that key does not need room).
    pub fn has_room_for(&self, key: &Key) -> Result<bool> {
        let Some(max) = self.max_files else {
            return Ok(true);
        };
        let used = self.files() + self.wanted_count();
        if used < max {
            return Ok(true);
        }
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let held = tx.open_table(HELD).map_err(|e| self.db_err(e))?;
        let wanted = tx.open_table(WANTED).map_err(|e| self.db_err(e))?;
        Ok(held.get(&key.0).map_err(|e| self.db_err(e))?.is_some()
            || wanted.get(&key.0).map_err(|e| self.db_err(e))?.is_some())
    }

    /// The entry of a key, tombstones included.
    pub fn entry(&self, key: &Key) -> Result<Option<Entry>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let entries = tx.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
        read_entry(&entries, key)
    }

    /// What `name` ("" = the root) stands for.
    pub fn lookup(&self, name: &str) -> Result<Lookup> {
        if name.is_empty() {
            return Ok(Lookup::Implied(dir_entry("", 0)));
        }
        if let Some(e) = self.entry(&Key::of_name(name))? {
            if !e.deleted {
                return Ok(Lookup::Live(e));
            }
        }
        match self.first_child(name)? {
            Some(child) => Ok(Lookup::Implied(dir_entry(name, child.mtime_ns))),
            None => Ok(Lookup::Absent),
        }
    }

    /// Whether a directory has any live entry below it.
    pub fn has_children(&self, dir: &str) -> Result<bool> {
        Ok(self.first_child(dir)?.is_some())
    }

    fn first_child(&self, dir: &str) -> Result<Option<Entry>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let names = tx.open_table(NAMES).map_err(|e| self.db_err(e))?;
        let entries = tx.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
        let (lo, hi) = child_range(dir);
        let mut range = names.range(lo.as_str()..hi.as_str()).map_err(|e| self.db_err(e))?;
        match range.next() {
            Some(row) => {
                let (n, _) = row.map_err(|e| self.db_err(e))?;
                read_entry(&entries, &Key::of_name(n.value()))
            }
            None => Ok(None),
        }
    }

    /// The direct children of `dir` ("" = root): files, explicit directories,
    /// and directories implied by deeper files, in name order.
    pub fn list(&self, dir: &str) -> Result<Vec<Entry>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let names = tx.open_table(NAMES).map_err(|e| self.db_err(e))?;
        let entries = tx.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
        let (lo, hi) = child_range(dir);
        let prefix_len = lo.len();
        let mut out = Vec::new();
        let mut dirs_seen: HashSet<String> = HashSet::new();
        let mut start = lo.clone();
        'scan: loop {
            let mut range = names.range(start.as_str()..hi.as_str()).map_err(|e| self.db_err(e))?;
            while let Some(row) = range.next() {
                let (n, _) = row.map_err(|e| self.db_err(e))?;
                let full = n.value();
                let rest = &full[prefix_len..];
                match rest.find('/') {
                    None => {
                        if let Some(e) = read_entry(&entries, &Key::of_name(full))? {
                            if e.kind == Kind::Dir {
                                dirs_seen.insert(full.to_string());
                            }
                            out.push(e);
                        }
                    }
                    Some(i) => {
                        // A deeper file: its top directory under `dir` is a child.
                        let child = &full[..prefix_len + i];
                        if dirs_seen.insert(child.to_string()) {
                            let mtime = read_entry(&entries, &Key::of_name(full))?.map(|e| e.mtime_ns).unwrap_or(0);
                            out.push(dir_entry(child, mtime));
                        }
                        // Skip the rest of that subtree: '0' sorts right after '/'.
                        start = format!("{child}0");
                        drop(range);
                        continue 'scan;
                    }
                }
            }
            break;
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Every live entry strictly inside `dir`, in name order.
    pub fn descendants(&self, dir: &str) -> Result<Vec<Entry>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let names = tx.open_table(NAMES).map_err(|e| self.db_err(e))?;
        let entries = tx.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
        let (lo, hi) = child_range(dir);
        let mut out = Vec::new();
        for row in names.range(lo.as_str()..hi.as_str()).map_err(|e| self.db_err(e))? {
            let (n, _) = row.map_err(|e| self.db_err(e))?;
            if let Some(e) = read_entry(&entries, &Key::of_name(n.value()))? {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Up to `limit` entries with a version above `since`, oldest first.
    pub fn since(&self, since: Version, limit: usize) -> Result<Vec<Entry>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let versions = tx.open_table(VERSIONS).map_err(|e| self.db_err(e))?;
        let entries = tx.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        let lo = since.to_be_bytes();
        for row in versions.range::<&[u8; 16]>(&lo..).map_err(|e| self.db_err(e))? {
            let (v, k) = row.map_err(|e| self.db_err(e))?;
            if Version::from_be_bytes(*v.value()) == since {
                continue;
            }
            if let Some(e) = read_entry(&entries, &Key(*k.value()))? {
                out.push(e);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The highest version in the index.
    pub fn max_version(&self) -> Result<Version> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let versions = tx.open_table(VERSIONS).map_err(|e| self.db_err(e))?;
        let last = versions.last().map_err(|e| self.db_err(e))?.map(|(v, _)| Version::from_be_bytes(*v.value()));
        Ok(last.unwrap_or(Version::ZERO))
    }

    /// The number of entries (tombstones included).
    pub fn entry_count(&self) -> Result<u64> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        tx.open_table(ENTRIES).map_err(|e| self.db_err(e))?.len().map_err(|e| self.db_err(e))
    }

    /// Whether this node keeps the blob of `key` at `version`.
    pub fn holds(&self, key: &Key, version: Version) -> Result<bool> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let held = tx.open_table(HELD).map_err(|e| self.db_err(e))?;
        Ok(read_version(&held, key)? == Some(version))
    }

    /// Starts writing the blob of `key` at `version`, `size` bytes long when known.
    pub fn new_blob(&self, key: &Key, version: Version, size: Option<u64>) -> Result<BlobWriter> {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        BlobWriter::create(self.layout.tmp(n), self.layout.blob(key, version), size)
    }

    /// Opens `len` bytes from `offset` of a blob this node keeps; the reader
    /// hashes what it reads so the caller can check a whole read.
    ///
    /// # Errors
    /// `NotFound` when this node does not keep that version.
    pub fn read_blob(&self, key: &Key, version: Version, offset: u64, len: u64) -> Result<BlobReader> {
        if !self.holds(key, version)? {
            return Err(Error::NotFound(format!("blob {key:?} {version:?} is not kept here")));
        }
        BlobReader::open(&self.layout.blob(key, version), offset, len)
    }

    /// Re-hashes a blob this node keeps: true when it matches its entry.
    /// A blob that is not kept here counts as good (nothing to do).
    pub fn check_blob(&self, key: &Key, version: Version) -> Result<bool> {
        if !self.holds(key, version)? {
            return Ok(true);
        }
        let Some(entry) = self.entry(key)?.filter(|e| e.version == version) else { return Ok(true) };
        let path = self.layout.blob(key, version);
        if !path.exists() {
            return Ok(false);
        }
        // A read error (EMFILE, EIO) is not a verdict on the content: it is returned.
        let (hash, size) = hash_file(&path)?;
        Ok(hash == entry.hash && size == entry.size)
    }

    /// Bad copies found since the store opened.
    pub fn corrupt_count(&self) -> u64 {
        self.corrupt.load(Ordering::Relaxed)
    }

    /// Moves a blob that failed its hash aside and wants a good copy instead.
    pub fn quarantine(&self, key: &Key, version: Version) -> Result<()> {
        self.corrupt.fetch_add(1, Ordering::Relaxed);
        let tx = self.db()?.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut held = tx.open_table(HELD).map_err(|e| self.db_err(e))?;
            let mut wanted = tx.open_table(WANTED).map_err(|e| self.db_err(e))?;
            if read_version(&held, key)? == Some(version) {
                held.remove(&key.0).map_err(|e| self.db_err(e))?;
                wanted.insert(&key.0, &version.to_be_bytes()).map_err(|e| self.db_err(e))?;
            }
            let _ = fs::rename(self.layout.blob(key, version), self.layout.corrupt(key, version));
            self.held.store(held.len().map_err(|e| self.db_err(e))?, Ordering::Relaxed);
            self.wanted.store(wanted.len().map_err(|e| self.db_err(e))?, Ordering::Relaxed);
        }
        tx.commit().map_err(|e| self.db_err(e))?;
        log::error!(
            "node {}: blob {key:?} {version:?} failed its hash; moved to {}",
            self.me,
            self.layout.corrupt_dir().display()
        );
        Ok(())
    }

    /// Entries whose blob this node should keep but lacks (oldest first).
    pub fn wanted(&self, limit: usize) -> Result<Vec<Entry>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let wanted = tx.open_table(WANTED).map_err(|e| self.db_err(e))?;
        let entries = tx.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in wanted.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            let key = Key(*k.value());
            if let Some(e) = read_entry(&entries, &key)?.filter(|e| e.version == Version::from_be_bytes(*v.value())) {
                out.push(e);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Commits entries in one transaction, each only if newer than ours.
    ///
    /// `written` lists blobs the caller has just put in place for some of
    /// these entries. Blobs of superseded versions are removed, or reused
    /// (hard-linked) when a new entry in the batch has the same content, as a
    /// rename does. A new live file this node should hold, with no blob at
    /// hand, is recorded as wanted.
    pub fn apply(&self, batch: &[Entry], written: &[(Key, Version)]) -> Result<Applied> {
        let mut out = Applied::default();
        // Old blobs released by this batch, by content: candidates for reuse.
        let mut pool: HashMap<ContentHash, PathBuf> = HashMap::new();
        // Blobs of superseded versions, with their content: moved aside for reuse.
        let mut released: Vec<(PathBuf, ContentHash)> = Vec::new();
        let mut useless: Vec<PathBuf> = Vec::new();
        let tx = self.db()?.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut entries = tx.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
            let mut names = tx.open_table(NAMES).map_err(|e| self.db_err(e))?;
            let mut versions = tx.open_table(VERSIONS).map_err(|e| self.db_err(e))?;
            let mut held = tx.open_table(HELD).map_err(|e| self.db_err(e))?;
            let mut wanted = tx.open_table(WANTED).map_err(|e| self.db_err(e))?;
            let mut meta = tx.open_table(META).map_err(|e| self.db_err(e))?;
            let mut digests = read_digests(&meta)?;

            // Pass 1: which entries win, and which of our blobs they release.
            let mut winners: Vec<(&Entry, Option<Entry>)> = Vec::new();
            for e in batch {
                let key = e.key();
                let old = read_entry(&entries, &key)?;
                if old.as_ref().is_some_and(|o| o.version >= e.version) {
                    out.stale += 1;
                    let path = self.layout.blob(&key, e.version);
                    let in_place =
                        written.contains(&(key, e.version)) || fs::metadata(&path).is_ok_and(|m| m.len() == e.size);
                    if in_place
                        && old.as_ref().is_some_and(|o| o.version == e.version)
                        && read_version(&wanted, &key)? == Some(e.version)
                    {
                        // The blob we were waiting for (a fetch or a retried replication): keep it.
                        wanted.remove(&key.0).map_err(|e| self.db_err(e))?;
                        held.insert(&key.0, &e.version.to_be_bytes()).map_err(|e| self.db_err(e))?;
                    } else if e.has_blob()
                        && old.as_ref().is_some_and(|o| o.version > e.version)
                        && read_version(&held, &key)? != Some(e.version)
                    {
                        // A version that lost to a newer one: its blob, if one
                        // was replicated here, is garbage.
                        useless.push(path);
                    }
                    continue;
                }
                if let Some(hv) = read_version(&held, &key)? {
                    let path = self.layout.blob(&key, hv);
                    match old.as_ref().filter(|o| o.version == hv && o.has_blob()) {
                        Some(o) => {
                            pool.insert(o.hash, path.clone());
                            released.push((path, o.hash));
                        }
                        None => useless.push(path),
                    }
                    held.remove(&key.0).map_err(|e| self.db_err(e))?;
                }
                wanted.remove(&key.0).map_err(|e| self.db_err(e))?;
                winners.push((e, old));
            }

            // Pass 2: commit them, placing or wanting their blobs.
            for (e, old) in winners {
                let key = e.key();
                if let Some(o) = &old {
                    versions.remove(&o.version.to_be_bytes()).map_err(|e| self.db_err(e))?;
                    if !o.deleted {
                        names.remove(o.name.as_str()).map_err(|e| self.db_err(e))?;
                    }
                    digests.toggle(&key, o.version);
                }
                digests.toggle(&key, e.version);
                entries.insert(&key.0, encode_entry(e).as_slice()).map_err(|e| self.db_err(e))?;
                versions.insert(&e.version.to_be_bytes(), &key.0).map_err(|e| self.db_err(e))?;
                if !e.deleted {
                    names.insert(e.name.as_str(), ()).map_err(|e| self.db_err(e))?;
                }
                out.applied += 1;
                if !(e.has_blob() && e.holders.contains(&self.me)) {
                    continue;
                }
                let dest = self.layout.blob(&key, e.version);
                let placed = if written.contains(&(key, e.version)) {
                    true
                } else if let Some(src) = pool.get(&e.hash) {
                    // Same content as a blob this batch releases (a rename):
                    // link it; the old name is moved aside after the commit.
                    link_into_place(src, &dest).is_ok()
                } else {
                    // Anything else is wanted; a copy released by an earlier
                    // batch (the tombstone half of a rename came first) is
                    // then placed by the fetcher, once checked, outside this
                    // transaction ([`Store::place_from_local`]).
                    fs::metadata(&dest).is_ok_and(|m| m.len() == e.size)
                };
                if placed {
                    held.insert(&key.0, &e.version.to_be_bytes()).map_err(|e| self.db_err(e))?;
                } else {
                    wanted.insert(&key.0, &e.version.to_be_bytes()).map_err(|e| self.db_err(e))?;
                    out.wanted += 1;
                }
            }
            if out.applied > 0 {
                meta.insert(DIGESTS, digests.to_bytes().as_slice()).map_err(|e| self.db_err(e))?;
            }
            self.held.store(held.len().map_err(|e| self.db_err(e))?, Ordering::Relaxed);
            self.wanted.store(wanted.len().map_err(|e| self.db_err(e))?, Ordering::Relaxed);
        }
        tx.commit().map_err(|e| self.db_err(e))?;
        for (path, hash) in released {
            // Same content already waiting there: ours is not needed.
            if fs::rename(&path, self.layout.released(&hash)).is_err() {
                let _ = fs::remove_file(&path);
            }
        }
        for p in &useless {
            let _ = fs::remove_file(p);
        }
        Ok(out)
    }

    /// A named value in the meta table.
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let meta = tx.open_table(META).map_err(|e| self.db_err(e))?;
        Ok(meta.get(name).map_err(|e| self.db_err(e))?.map(|v| v.value().to_vec()))
    }

    pub fn set_meta(&self, name: &str, value: &[u8]) -> Result<()> {
        let tx = self.db()?.begin_write().map_err(|e| self.db_err(e))?;
        tx.open_table(META).map_err(|e| self.db_err(e))?.insert(name, value).map_err(|e| self.db_err(e))?;
        tx.commit().map_err(|e| self.db_err(e))
    }

    /// The highest term this node has recorded.
    pub fn saved_term(&self) -> Result<Term> {
        let stored = self.meta("term")?.and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok()).map(u64::from_be_bytes);
        Ok(Term(stored.unwrap_or(0).max(self.max_version()?.term.0)))
    }

    pub fn save_term(&self, term: Term) -> Result<()> {
        self.set_meta("term", &term.0.to_be_bytes())
    }

    /// The terms this node has led (the last [`LED_TERMS_KEPT`]), oldest first.
    pub fn led_terms(&self) -> Result<Vec<Term>> {
        let raw = self.meta("led_terms")?.unwrap_or_default();
        Ok(raw
            .chunks_exact(8)
            .filter_map(|c| <[u8; 8]>::try_from(c).ok())
            .map(|b| Term(u64::from_be_bytes(b)))
            .collect())
    }

    /// Records, durably, that this node leads `term`: after a restart it
    /// still knows which unacknowledged entries were its own.
    pub fn add_led_term(&self, term: Term) -> Result<()> {
        let mut terms = self.led_terms()?;
        terms.push(term);
        terms.sort();
        terms.dedup();
        let drop = terms.len().saturating_sub(LED_TERMS_KEPT);
        let bytes: Vec<u8> = terms[drop..].iter().flat_map(|t| t.0.to_be_bytes()).collect();
        self.set_meta("led_terms", &bytes)
    }

    /// The version up to which this node is known to have every entry.
    pub fn watermark(&self) -> Result<Version> {
        Ok(self
            .meta("watermark")?
            .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
            .map(Version::from_be_bytes)
            .unwrap_or(Version::ZERO))
    }

    pub fn set_watermark(&self, v: Version) -> Result<()> {
        self.set_meta("watermark", &v.to_be_bytes())
    }

    /// Decodes an entry (for callers that got raw bytes); kept here so the
    /// encoding stays private to the store.
    pub fn decode(bytes: &[u8]) -> Result<Entry> {
        decode_entry(bytes)
    }
}

/// A directory entry for a directory implied by the files below it.
fn dir_entry(name: &str, mtime_ns: i64) -> Entry {
    Entry {
        name: name.to_string(),
        version: Version::ZERO,
        kind: Kind::Dir,
        size: 0,
        hash: ContentHash::default(),
        mode: 0o755,
        mtime_ns,
        deleted: false,
        holders: Vec::new(),
    }
}

/// The name range of everything below `dir`: `[dir/, dir0)`, or all for the root.
fn child_range(dir: &str) -> (String, String) {
    if dir.is_empty() {
        (String::new(), "\u{10FFFF}".to_string())
    } else {
        (format!("{dir}/"), format!("{dir}0"))
    }
}

/// Hard-links `src` at `dest` and makes the link durable.
fn link_into_place(src: &Path, dest: &Path) -> std::io::Result<()> {
    if let Some(dir) = dest.parent() {
        fs::create_dir_all(dir)?;
    }
    match fs::hard_link(src, dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    blobs::sync_dir(dest.parent().unwrap_or(Path::new(".")))
}

/// Whether `name`'s ancestors are free of files: the check before creating it.
///
/// # Errors
/// `NotDir` naming the first ancestor that is a file.
pub fn check_ancestors(store: &Store, name: &str) -> Result<()> {
    for dir in name::ancestors(name) {
        if let Lookup::Live(e) = store.lookup(dir)? {
            if e.kind == Kind::File {
                return Err(Error::NotDir(dir.to_string()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
