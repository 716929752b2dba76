//! The node's store: blobs on disk and the index in redb (DESIGN sections 2
//! and 5). The only code that knows paths.
//!
//! The index holds versioned records: inodes, directory entries, and the
//! count of inode numbers handed out (see `scs_common::inode`). A file's
//! content is a blob named after its inode and its content version; a change
//! of the inode that keeps the content (chmod, a rename, a new link) never
//! touches the blob.
//!
//! Durability order for a new blob: temp file, hashed while written, fsync,
//! rename into place, fsync the directory, then commit the index. Anything on
//! disk that the index does not reference is garbage from a crash and is
//! removed when the store opens.
//!
//! A batch of records is durable once it is in the journal (one append and
//! one `fdatasync`, shared by concurrent batches); the index then commits
//! it without a sync. Every other change to the index is a durable commit
//! that also ends the journal's generation ([`Store::begin_durable`]), and
//! so is a checkpoint once the journal is half full. Opening the store (or
//! reopening the index after an I/O error) replays the journal. A follower
//! answers for a leader's batch once it is durable, before the index has it
//! (see `ahead`).

mod ahead;
pub mod audit;
mod blobs;
pub mod digest;
mod entropy;
mod gc;
mod index;
mod journal;
pub mod layout;
mod trash;
mod upgrade;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use scs_common::inode::{DirEntry, NextIno};
use scs_common::namespace::View;
use scs_common::{ContentHash, Dentry, Error, Ino, Inode, Key, Kind, Members, NodeId, Record, Result, Term, Version};

pub use blobs::{hash_file, BlobReader, BlobWriter};
use entropy::{read_digests, DIGESTS};
use index::{
    attach_inline, child_key, child_value, children_rows, db_err, decode_record, parse_child_row, parse_child_value,
    parse_version_key, put_inline, read_record, read_version, read_whole, stored_form, version_key, BY_VERSION,
    CHILDREN, FORMAT, FORMAT_KEY, HELD, INLINE, INLINE_DATA, META, RECORDS, SUBDIRS, TRASH, VERSIONS, WANTED,
};
use layout::Layout;

/// The most memory redb keeps pages of the index in. Its default (1 GiB)
/// is a ceiling, not a reservation, so a node's memory grew with its index
/// (117 MiB with 20,000 files); past this, pages are read again from the
/// operating system's page cache. A hot working set (the inner pages of
/// each table, the recent records) fits many times over.
const INDEX_CACHE_BYTES: usize = 32 << 20;

fn open_index(path: &Path) -> std::result::Result<Database, redb::DatabaseError> {
    Database::builder().set_cache_size(INDEX_CACHE_BYTES).create(path)
}

/// What opening the store found and fixed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub temp_files_removed: usize,
    pub orphan_blobs_removed: usize,
    /// Blobs the index says we hold that were missing or the wrong size: now wanted.
    pub blobs_missing: usize,
    pub blobs_held: u64,
    /// Records made from an index of format 1 (0 when there was none to upgrade).
    pub upgraded: usize,
}

/// The outcome of [`Store::apply`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Records that were newer than ours and are now committed.
    pub applied: usize,
    /// Records we already had at that version or newer.
    pub stale: usize,
    /// Blobs we should hold but lack (to fetch from another holder).
    pub wanted: usize,
}

/// Room on the data disk that blobs leave to the index and its journal
/// (or a tenth of a smaller disk).
const INDEX_RESERVE: u64 = 64 << 20;

/// The room [`INDEX_RESERVE`] takes on a disk of `total` bytes.
fn index_reserve(total: u64) -> u64 {
    INDEX_RESERVE.min(total / 10)
}

/// The largest blob a disk with `free` bytes (counting released blobs) of
/// `total` takes: blobs leave the index its reserve. Unbounded when the
/// disk is unknown (`total` zero).
pub fn blob_room(free: u64, total: u64) -> u64 {
    if total == 0 {
        return u64::MAX;
    }
    free.saturating_sub(index_reserve(total))
}

/// How often a failed index is tried again.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

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
    /// Files whose content is inline in their record (see [`INLINE`]).
    inline: AtomicU64,
    /// Bytes of the blobs held, as of the last [`Store::tally_held_bytes`];
    /// `held_changed` says the held set changed since.
    held_bytes: AtomicU64,
    held_changed: AtomicBool,
    /// Whether the trash changed since [`Store::tally_trash_bytes`] last counted it.
    trash_changed: AtomicBool,
    /// Bytes of the content in the trash this node keeps, as of the last
    /// [`Store::tally_trash_bytes`].
    trash_bytes: AtomicU64,
    /// Bad copies found (scrub, readers' reports) since the store opened.
    corrupt: AtomicU64,
    /// Bytes of released blobs: room they give back on demand (see
    /// [`Store::make_room`]), so counted as free. Kept up to date as blobs
    /// are released and removed, and counted again by every sweep.
    released_bytes: AtomicU64,
    journal: journal::Journal,
    /// Shared by batches on their way through the journal into the index;
    /// taken alone by a durable commit, which ends the journal's generation.
    gate: RwLock<()>,
    /// Batches durable in the journal, answered for, not yet in the index
    /// (see [`Store::journal_ahead`]).
    ahead: Mutex<ahead::AheadOfIndex>,
    /// The membership record as committed here (`None` before a cluster's
    /// first leader commits one), sent anew whenever a write touches it.
    members: tokio::sync::watch::Sender<Option<Members>>,
    /// Woken when a blob becomes wanted here, for the fetcher.
    newly_wanted: tokio::sync::Notify,
}

/// A write transaction that commits durably and ends the journal's
/// generation, so that no batch from before it is replayed over it. Holds
/// the journal's gate: no batch goes through the journal meanwhile.
pub(crate) struct DurableTx<'a> {
    store: &'a Store,
    tx: redb::WriteTransaction,
    /// The batches that were ahead of the index, taken in first; before
    /// the gate, so that they are put back (uncommitted) while it is held.
    ahead: TakenAhead<'a>,
    _gate: std::sync::RwLockWriteGuard<'a, ()>,
}

/// Batches a durable commit took in from [`Store::ahead`]: put back there
/// unless it commits.
struct TakenAhead<'a> {
    store: &'a Store,
    batches: Vec<ahead::Ahead>,
    /// What taking them in did, for once they are committed.
    done: Pending,
}

impl TakenAhead<'_> {
    /// They are committed: what taking them in did, if there were any.
    fn committed(mut self) -> Option<Pending> {
        let any = !std::mem::take(&mut self.batches).is_empty();
        any.then(|| std::mem::replace(&mut self.done, Pending::committed(Instant::now())))
    }
}

impl Drop for TakenAhead<'_> {
    fn drop(&mut self) {
        if !self.batches.is_empty() {
            self.store.ahead().put_back(std::mem::take(&mut self.batches));
        }
    }
}

impl std::ops::Deref for DurableTx<'_> {
    type Target = redb::WriteTransaction;
    fn deref(&self) -> &redb::WriteTransaction {
        &self.tx
    }
}

impl DurableTx<'_> {
    /// Commits durably (with every batch before it) and starts the
    /// journal's next generation, whose number this commit records.
    pub(crate) fn commit(self) -> Result<()> {
        let next = self.store.journal.generation() + 1;
        {
            let mut meta = self.tx.open_table(META).map_err(|e| self.store.db_err(e))?;
            meta.insert(JOURNAL_GENERATION, next.to_be_bytes().as_slice()).map_err(|e| self.store.db_err(e))?;
        }
        self.tx.commit().map_err(|e| self.store.db_err(e))?;
        self.store.journal.restart(next);
        if let Some(done) = self.ahead.committed() {
            // Committed: what follows failing does not undo that.
            if let Err(e) = self.store.after_commit(done) {
                log::warn!("node {}: after a durable commit: {e}", self.store.me);
            }
        }
        Ok(())
    }
}

/// The journal generation the index expects (see [`DurableTx::commit`]).
const JOURNAL_GENERATION: &str = "journal-generation";
/// The version up to which this node is known to have every record.
const WATERMARK: &str = "watermark";

fn decode_watermark(bytes: &[u8]) -> Version {
    <[u8; 16]>::try_from(bytes).map_or(Version::ZERO, Version::from_be_bytes)
}

/// Whether the inline content `old` has in the index is `new`'s too: the
/// same content version, size and hash (a content version names one set
/// of bytes), so its chunks can stay as they are.
fn same_inline_content(old: Option<&Inode>, new: &Inode) -> bool {
    old.is_some_and(|o| {
        o.is_inline() && new.is_inline() && (o.content, o.size, o.hash) == (new.content, new.size, new.hash)
    })
}

fn journal_generation(db: &Database) -> Result<u64> {
    let tx = db.begin_read().map_err(db_err)?;
    let meta = match tx.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(db_err(e)),
    };
    let stored = meta.get(JOURNAL_GENERATION).map_err(db_err)?;
    Ok(stored.and_then(|v| <[u8; 8]>::try_from(v.value()).ok()).map_or(0, u64::from_be_bytes))
}

/// A batch as the journal keeps it.
fn encode_batch(batch: &[Record], written: &[(Key, Version)]) -> Result<Vec<u8>> {
    rmp_serde::to_vec(&(batch, written)).map_err(|e| Error::Internal(format!("journal: cannot encode a batch: {e}")))
}

/// A batch read back from the journal.
type JournaledBatch = (Vec<Record>, Vec<(Key, Version)>);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.layout.root()).field("me", &self.me).finish()
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`: upgrades an index of format 1,
    /// removes stale temp files, checks the index against the blobs and
    /// removes unreferenced blobs.
    ///
    /// # Errors
    /// `Io` if the directory or the index cannot be opened; `Config` for an
    /// index of a format this code does not know (a newer release wrote it).
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
        let db = open_index(&layout.index())
            .map_err(|e| Error::Io(format!("cannot open the index {}: {e}", layout.index().display())))?;
        let (journal, frames) = journal::Journal::open(&layout.journal(), journal_generation(&db)?)?;
        let store = Store {
            journal,
            gate: RwLock::new(()),
            ahead: Mutex::new(ahead::AheadOfIndex::default()),
            layout,
            db: RwLock::new(Some(Arc::new(db))),
            index_failed: AtomicBool::new(false),
            last_reopen: Mutex::new(None),
            me,
            max_files,
            tmp_counter: AtomicU64::new(rand::random::<u64>() >> 16),
            held: AtomicU64::new(0),
            wanted: AtomicU64::new(0),
            inline: AtomicU64::new(0),
            held_bytes: AtomicU64::new(0),
            held_changed: AtomicBool::new(true),
            trash_changed: AtomicBool::new(true),
            trash_bytes: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            released_bytes: AtomicU64::new(0),
            members: tokio::sync::watch::Sender::new(None),
            newly_wanted: tokio::sync::Notify::new(),
        };
        let upgraded = store.check_format()?;
        // Create every table so that readers never meet a missing one.
        let tx = store.db()?.begin_write().map_err(|e| store.db_err(e))?;
        {
            tx.open_table(RECORDS).map_err(|e| store.db_err(e))?;
            tx.open_table(CHILDREN).map_err(|e| store.db_err(e))?;
            tx.open_table(SUBDIRS).map_err(|e| store.db_err(e))?;
            tx.open_table(BY_VERSION).map_err(|e| store.db_err(e))?;
            tx.open_table(HELD).map_err(|e| store.db_err(e))?;
            tx.open_table(WANTED).map_err(|e| store.db_err(e))?;
            tx.open_table(INLINE_DATA).map_err(|e| store.db_err(e))?;
            tx.open_table(TRASH).map_err(|e| store.db_err(e))?;
            tx.open_table(VERSIONS).map_err(|e| store.db_err(e))?;
            let inline = tx.open_table(INLINE).map_err(|e| store.db_err(e))?;
            store.inline.store(inline.len().map_err(|e| store.db_err(e))?, Ordering::Relaxed);
            let mut meta = tx.open_table(META).map_err(|e| store.db_err(e))?;
            meta.insert(FORMAT_KEY, FORMAT.to_be_bytes().as_slice()).map_err(|e| store.db_err(e))?;
        }
        tx.commit().map_err(|e| store.db_err(e))?;
        store.replay(frames.iter().map(|f| f.payload.as_slice()))?;
        let mut report = store.recover()?;
        report.upgraded = upgraded;
        store.count_released();
        store.rebuild_digests()?;
        store.reload_members()?;
        Ok((store, report))
    }

    /// Reads the index format: upgrades format 1, refuses one it does not know.
    fn check_format(&self) -> Result<usize> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let stored = match tx.open_table(META) {
            Ok(meta) => meta
                .get(FORMAT_KEY)
                .map_err(|e| self.db_err(e))?
                .and_then(|v| <[u8; 4]>::try_from(v.value()).ok())
                .map(u32::from_be_bytes),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(self.db_err(e)),
        };
        let old = upgrade::has_format_1(&tx).map_err(|e| self.db_err(e))?;
        drop(tx);
        match stored {
            Some(FORMAT) | Some(2) | Some(3) | Some(4) | Some(5) => Ok(0),
            Some(other) => Err(Error::Config(format!(
                "the index {} is of format {other}; this scs-node reads format {FORMAT} (and upgrades formats 1 to 5): \
                 run the release that wrote it",
                self.layout.index().display()
            ))),
            None if old => self.upgrade_from_format_1(),
            None => Ok(0),
        }
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
            match open_index(&path) {
                Ok(db) => {
                    // The commits since the last durable one are gone with
                    // the old handle; the journal has them.
                    if let Err(e) = self.replay_into(&db) {
                        log::warn!("cannot reopen the index {} yet: replaying the journal: {e}", path.display());
                        return;
                    }
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

    /// Applies the journal's current generation to `db`, a reopened index
    /// nobody else uses yet, in one durable commit.
    fn replay_into(&self, db: &Database) -> Result<()> {
        let tx = db.begin_write().map_err(|e| self.db_err(e))?;
        let frames = self.journal.frames()?;
        let released = self.replay_in(&tx, frames.iter().map(|f| f.payload.as_slice()))?;
        tx.commit().map_err(|e| self.db_err(e))?;
        for files in released {
            self.let_go(files);
        }
        Ok(())
    }

    /// Applies the journal's batches (`payloads`) inside `tx`; returns the
    /// blob files they let go of, for [`Store::let_go`] once `tx` commits.
    fn replay_in<'p>(
        &self,
        tx: &redb::WriteTransaction,
        payloads: impl Iterator<Item = &'p [u8]>,
    ) -> Result<Vec<Placed>> {
        let mut released = Vec::new();
        for p in payloads {
            let (batch, written): JournaledBatch = rmp_serde::from_slice(p)
                .map_err(|e| Error::Internal(format!("journal: a batch that does not decode: {e}")))?;
            // Batches are checked before they are journaled; one journaled
            // by an earlier release that was not is left out, not a reason
            // for the node not to start.
            if let Err(e) = check_batch(&batch) {
                log::error!("node {}: left out a journaled batch of {} records: {e}", self.me, batch.len());
                continue;
            }
            released.push(self.apply_in(tx, &batch, &written)?.1);
        }
        Ok(released)
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
        // Every blob file on disk, by (key, content version).
        let on_disk = self.blobs_on_disk()?;
        let tx = self.begin_durable()?;
        {
            let records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
            let mut held = tx.open_table(HELD).map_err(|e| self.db_err(e))?;
            let mut wanted = tx.open_table(WANTED).map_err(|e| self.db_err(e))?;
            let mut lost = Vec::new();
            let mut keep: HashSet<(Key, Version)> = HashSet::new();
            for row in held.iter().map_err(|e| self.db_err(e))? {
                let (k, v) = row.map_err(|e| self.db_err(e))?;
                let (key, content) = (Key(*k.value()), Version::from_be_bytes(*v.value()));
                let size_ok = live_content(&records, &key, content)?
                    .map(|i| fs::metadata(self.layout.blob(&key, content)).map(|m| m.len() == i.size).unwrap_or(false))
                    .unwrap_or(false);
                if size_ok {
                    keep.insert((key, content));
                } else {
                    lost.push((key, content));
                }
            }
            for (key, content) in &lost {
                log::warn!("blob {key:?} {content:?} is missing or damaged: it will be fetched again");
                held.remove(&key.0).map_err(|e| self.db_err(e))?;
                let _ = fs::remove_file(self.layout.blob(key, *content));
                wanted.insert(&key.0, &content.to_be_bytes()).map_err(|e| self.db_err(e))?;
            }
            report.blobs_missing = lost.len();
            // A wanted blob that made it to disk before a crash is adopted if whole.
            let mut adopted = Vec::new();
            for row in wanted.iter().map_err(|e| self.db_err(e))? {
                let (k, v) = row.map_err(|e| self.db_err(e))?;
                let (key, content) = (Key(*k.value()), Version::from_be_bytes(*v.value()));
                if !on_disk.contains(&(key, content)) {
                    continue;
                }
                if let Some(i) = live_content(&records, &key, content)? {
                    if let Ok((hash, size)) = hash_file(&self.layout.blob(&key, content)) {
                        if hash == i.hash && size == i.size {
                            adopted.push((key, content));
                        }
                    }
                }
            }
            for (key, content) in adopted {
                wanted.remove(&key.0).map_err(|e| self.db_err(e))?;
                held.insert(&key.0, &content.to_be_bytes()).map_err(|e| self.db_err(e))?;
                keep.insert((key, content));
            }
            // A blob without its inode may be a replica whose Apply has not
            // arrived yet (the leader counted it): only remove the ones whose
            // inode was decided without this node; the sweep judges the rest.
            for (key, content) in on_disk.difference(&keep) {
                if decided_without(&records, key, *content, self.me, false)?
                    && fs::remove_file(self.layout.blob(key, *content)).is_ok()
                {
                    report.orphan_blobs_removed += 1;
                }
            }
            report.blobs_held = self.recount(&held, &wanted)?;
        }
        tx.commit()?;
        Ok(report)
    }

    /// Every blob file on disk, by (key, content version).
    fn blobs_on_disk(&self) -> Result<HashSet<(Key, Version)>> {
        let mut on_disk = HashSet::new();
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
        Ok(on_disk)
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

    /// Room for new content and the disk's size: the free bytes, and those
    /// of released blobs, which give way to anything that needs them. What
    /// the status, `df` and the choice of holders count.
    pub fn room(&self) -> (u64, u64) {
        let (free, total) = self.disk_space();
        (free.saturating_add(self.released_bytes()).min(total), total)
    }

    /// Bytes of released blobs (see [`Store::room`]).
    pub fn released_bytes(&self) -> u64 {
        self.released_bytes.load(Ordering::Relaxed)
    }

    /// Files whose content this node keeps: blobs, and files small enough
    /// to keep theirs in the index (which every node does).
    pub fn files(&self) -> u64 {
        self.held.load(Ordering::Relaxed) + self.inline.load(Ordering::Relaxed)
    }

    /// Blobs this node keeps (files with their content in the index aside).
    pub fn blobs(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Bytes of the files whose content this node keeps (see
    /// [`Store::files`]), as of the last [`Store::tally_held_bytes`].
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes.load(Ordering::Relaxed)
    }

    /// Counts the bytes of the files whose content is held again (from
    /// their inode records, without touching the disk), if the held set
    /// changed since the last count; returns the count. A pass over the
    /// held and inline tables: run it now and then, off the async threads.
    pub fn tally_held_bytes(&self) -> Result<u64> {
        if !self.held_changed.swap(false, Ordering::Relaxed) {
            return Ok(self.held_bytes());
        }
        let counted = (|| {
            let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
            let held = tx.open_table(HELD).map_err(|e| self.db_err(e))?;
            let records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
            let mut bytes = 0u64;
            for entry in held.iter().map_err(|e| self.db_err(e))? {
                let (key, _) = entry.map_err(|e| self.db_err(e))?;
                if let Some(Record::Inode(i)) = read_record(&records, &Key(*key.value()))? {
                    bytes = bytes.saturating_add(i.size);
                }
            }
            let inline = tx.open_table(INLINE).map_err(|e| self.db_err(e))?;
            for entry in inline.iter().map_err(|e| self.db_err(e))? {
                let (_, size) = entry.map_err(|e| self.db_err(e))?;
                bytes = bytes.saturating_add(size.value());
            }
            Ok(bytes)
        })();
        match counted {
            Ok(bytes) => {
                self.held_bytes.store(bytes, Ordering::Relaxed);
                Ok(bytes)
            }
            Err(e) => {
                self.held_changed.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Takes the counts of blobs held and wanted from their tables, inside
    /// the transaction that changed them; returns the held count.
    fn recount<T, U>(&self, held: &T, wanted: &U) -> Result<u64>
    where
        T: ReadableTableMetadata,
        U: ReadableTableMetadata,
    {
        let n = held.len().map_err(|e| self.db_err(e))?;
        self.held.store(n, Ordering::Relaxed);
        self.wanted.store(wanted.len().map_err(|e| self.db_err(e))?, Ordering::Relaxed);
        self.held_changed.store(true, Ordering::Relaxed);
        Ok(n)
    }

    /// Blobs this node should keep but still has to fetch.
    pub fn wanted_count(&self) -> u64 {
        self.wanted.load(Ordering::Relaxed)
    }

    /// Whether this node can take one more blob for inode `ino` (replacing
    /// its current blob of that inode does not need room).
    pub fn has_room_for(&self, ino: Ino) -> Result<bool> {
        let Some(max) = self.max_files else {
            return Ok(true);
        };
        let used = self.files() + self.wanted_count();
        if used < max {
            return Ok(true);
        }
        let key = Key::of_ino(ino);
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let held = tx.open_table(HELD).map_err(|e| self.db_err(e))?;
        let wanted = tx.open_table(WANTED).map_err(|e| self.db_err(e))?;
        Ok(held.get(&key.0).map_err(|e| self.db_err(e))?.is_some()
            || wanted.get(&key.0).map_err(|e| self.db_err(e))?.is_some())
    }

    /// The record of a key, tombstones included.
    pub fn record(&self, key: &Key) -> Result<Option<Record>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
        let data = tx.open_table(INLINE_DATA).map_err(|e| self.db_err(e))?;
        read_whole(&records, &data, key)
    }

    /// The record of inode `ino`, tombstone included.
    pub fn inode_record(&self, ino: Ino) -> Result<Option<Inode>> {
        Ok(match self.record(&Key::of_ino(ino))? {
            Some(Record::Inode(i)) => Some(i),
            _ => None,
        })
    }

    /// A live inode, a directory's link count filled in, inline content
    /// included.
    pub fn inode(&self, ino: Ino) -> Result<Option<Inode>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
        let subdirs = tx.open_table(SUBDIRS).map_err(|e| self.db_err(e))?;
        let mut inode = live_inode(&records, &subdirs, ino)?;
        if let Some(i) = inode.as_mut().filter(|i| i.is_inline()) {
            attach_inline(&tx.open_table(INLINE_DATA).map_err(|e| self.db_err(e))?, i)?;
        }
        Ok(inode)
    }

    /// A live directory entry.
    pub fn dentry(&self, parent: Ino, name: &str) -> Result<Option<Dentry>> {
        match self.record(&Key::of_dentry(parent, name))? {
            Some(Record::Dentry(d)) if !d.deleted => Ok(Some(d)),
            _ => Ok(None),
        }
    }

    /// The live entries of a directory with their inodes, in name order
    /// (by bytes), as clients get them ([`Inode::for_client`]). An entry
    /// whose inode has not arrived yet is left out.
    pub fn read_dir(&self, dir: Ino) -> Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        self.read_dir_pages(dir, usize::MAX, |page, _| {
            out.extend(page);
            true
        })?;
        Ok(out)
    }

    /// [`Store::read_dir`] a page of at most `page` entries at a time,
    /// handed to `take` (from one snapshot of the index) until it says
    /// stop, with the version of the directory's inode in that snapshot;
    /// at least one page, which may be empty. A directory of 100,000
    /// files, whole, was 30 MB held at once (twice over as it was cut into
    /// messages).
    pub fn read_dir_pages(
        &self,
        dir: Ino,
        page: usize,
        mut take: impl FnMut(Vec<DirEntry>, Option<Version>) -> bool,
    ) -> Result<()> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let children = tx.open_table(CHILDREN).map_err(|e| self.db_err(e))?;
        let records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
        let subdirs = tx.open_table(SUBDIRS).map_err(|e| self.db_err(e))?;
        // Of the same snapshot as the entries: what a client's listing is of.
        let version = live_inode(&records, &subdirs, dir)?.map(|i| i.version);
        let rows = children_rows(&children, dir)?;
        let mut out = Vec::new();
        for row in rows {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            let Some((_, name, child)) = parse_child_row(k.value(), v.value()) else { continue };
            // As clients get them: a listing of small files does not carry
            // their content.
            if let Some(inode) = live_inode(&records, &subdirs, child)? {
                out.push(DirEntry { name: name.to_string(), inode: inode.for_client() });
            }
            if out.len() >= page && !take(std::mem::take(&mut out), version) {
                return Ok(());
            }
        }
        take(out, version);
        Ok(())
    }

    /// Whether a directory has any live entry.
    pub fn has_children(&self, dir: Ino) -> Result<bool> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let children = tx.open_table(CHILDREN).map_err(|e| self.db_err(e))?;
        let any = children_rows(&children, dir)?.next().is_some();
        Ok(any)
    }

    /// How far inode numbers have been handed out (2 on a new cluster: 1 is the root).
    pub fn next_ino(&self) -> Result<Ino> {
        Ok(match self.record(&Key::next_ino())? {
            Some(Record::NextIno(n)) => n.next,
            _ => Ino(2),
        })
    }

    /// Up to `limit` records with a version above `since`, oldest first.
    pub fn since(&self, since: Version, limit: usize) -> Result<Vec<Record>> {
        self.after((since, Key([0xff; 32])), limit)
    }

    /// Up to `limit` records after `cursor` in (version, key) order: the
    /// next page after the last record of the previous one.
    pub fn after(&self, cursor: (Version, Key), limit: usize) -> Result<Vec<Record>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let by_version = tx.open_table(BY_VERSION).map_err(|e| self.db_err(e))?;
        let records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
        let data = tx.open_table(INLINE_DATA).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        let lo = version_key(cursor.0, &cursor.1);
        for row in by_version.range::<&[u8; 48]>(&lo..).map_err(|e| self.db_err(e))? {
            let (k, _) = row.map_err(|e| self.db_err(e))?;
            if *k.value() == lo {
                continue;
            }
            let (_, key) = parse_version_key(k.value());
            if let Some(r) = read_whole(&records, &data, &key)? {
                out.push(r);
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
        let by_version = tx.open_table(BY_VERSION).map_err(|e| self.db_err(e))?;
        let last = by_version.last().map_err(|e| self.db_err(e))?.map(|(k, _)| parse_version_key(k.value()).0);
        Ok(last.unwrap_or(Version::ZERO))
    }

    /// The number of records (tombstones included).
    pub fn record_count(&self) -> Result<u64> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        tx.open_table(RECORDS).map_err(|e| self.db_err(e))?.len().map_err(|e| self.db_err(e))
    }

    /// Whether this node keeps the blob of inode key `key` at content version `content`.
    pub fn holds(&self, key: &Key, content: Version) -> Result<bool> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let held = tx.open_table(HELD).map_err(|e| self.db_err(e))?;
        Ok(read_version(&held, key)? == Some(content))
    }

    /// Starts writing the blob of inode `ino` at content version `content`,
    /// `size` bytes long when known.
    pub fn new_blob(&self, ino: Ino, content: Version, size: Option<u64>) -> Result<BlobWriter> {
        // Blobs never take the index's last room: a node whose disk is
        // full cannot commit, not even the purge that would free it.
        let reserve = index_reserve(self.disk_space().1);
        self.make_room(size.unwrap_or(0).saturating_add(reserve));
        let (free, total) = self.disk_space();
        if let Some(size) = size.filter(|s| total > 0 && free < s.saturating_add(reserve)) {
            return Err(Error::NoSpace(format!(
                "{size} bytes would leave less than the {reserve} bytes the index keeps free on node {}",
                self.me
            )));
        }
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        BlobWriter::create(self.layout.tmp(n), self.layout.blob(&Key::of_ino(ino), content), size)
    }

    /// Opens `len` bytes from `offset` of a blob this node keeps.
    ///
    /// # Errors
    /// `NotFound` when this node does not keep that content.
    pub fn read_blob(&self, ino: Ino, content: Version, offset: u64, len: u64) -> Result<BlobReader> {
        let key = Key::of_ino(ino);
        if !self.holds(&key, content)? {
            return Err(Error::NotFound(format!("blob of inode {ino} {content:?} is not kept here")));
        }
        BlobReader::open(&self.layout.blob(&key, content), offset, len)
    }

    /// Re-hashes a blob this node keeps: true when it matches its inode.
    /// A blob that is not kept here counts as good (nothing to do).
    pub fn check_blob(&self, key: &Key, content: Version) -> Result<bool> {
        if !self.holds(key, content)? {
            return Ok(true);
        }
        let Some(i) = self.live_content(key, content)? else { return Ok(true) };
        let path = self.layout.blob(key, content);
        if !path.exists() {
            return Ok(false);
        }
        // A read error (EMFILE, EIO) is not a verdict on the content: it is returned.
        let (hash, size) = hash_file(&path)?;
        Ok(hash == i.hash && size == i.size)
    }

    /// Every file whose content is inline here, with its size, for the scrub.
    pub fn inline_files(&self) -> Result<Vec<(Key, u64)>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let inline = tx.open_table(INLINE).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in inline.iter().map_err(|e| self.db_err(e))? {
            let (k, size) = row.map_err(|e| self.db_err(e))?;
            out.push((Key(*k.value()), size.value()));
        }
        Ok(out)
    }

    /// Re-hashes the inline content of `key`: `None` when it matches its
    /// inode (or is inline no more), else the version of the record whose
    /// content here is bad.
    pub fn check_inline_copy(&self, key: &Key) -> Result<Option<Version>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
        let data = tx.open_table(INLINE_DATA).map_err(|e| self.db_err(e))?;
        let Some(Record::Inode(mut i)) = read_record(&records, key)? else { return Ok(None) };
        if !i.is_inline() {
            return Ok(None);
        }
        let good = match attach_inline(&data, &mut i) {
            Ok(()) => i.check_inline().is_ok(),
            Err(Error::Corrupt(_)) => false,
            Err(e) => return Err(e),
        };
        Ok((!good).then_some(i.version))
    }

    /// Puts back the inline content of a record whose copy here failed its
    /// hash, from `good`: another node's copy of the same record, checked
    /// here. Returns whether it was put back (not if the record here has
    /// moved on meanwhile).
    pub fn restore_inline(&self, good: &Inode) -> Result<bool> {
        good.check_inline()?;
        let Some(content) = good.inline.as_ref().filter(|_| good.is_inline()) else { return Ok(false) };
        let key = good.key();
        let tx = self.begin_durable()?;
        {
            let records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
            let mut data = tx.open_table(INLINE_DATA).map_err(|e| self.db_err(e))?;
            let same = matches!(read_record(&records, &key)?, Some(Record::Inode(i))
                if i.version == good.version && i.hash == good.hash && i.size == good.size && i.is_inline());
            if !same {
                return Ok(false);
            }
            put_inline(&mut data, &key, Some(good.size), Some(&content.0))?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// The live inode of `key` if its content is at `content`.
    pub fn live_content(&self, key: &Key, content: Version) -> Result<Option<Inode>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
        live_content(&records, key, content)
    }

    /// Bad copies found since the store opened.
    pub fn corrupt_count(&self) -> u64 {
        self.corrupt.load(Ordering::Relaxed)
    }

    /// Counts a bad copy found outside the blobs (inline content that
    /// failed its hash).
    pub fn count_corrupt(&self) {
        self.corrupt.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves a blob that failed its hash aside and wants a good copy instead.
    pub fn quarantine(&self, key: &Key, content: Version) -> Result<()> {
        self.corrupt.fetch_add(1, Ordering::Relaxed);
        let tx = self.begin_durable()?;
        {
            let mut held = tx.open_table(HELD).map_err(|e| self.db_err(e))?;
            let mut wanted = tx.open_table(WANTED).map_err(|e| self.db_err(e))?;
            if read_version(&held, key)? == Some(content) {
                held.remove(&key.0).map_err(|e| self.db_err(e))?;
                wanted.insert(&key.0, &content.to_be_bytes()).map_err(|e| self.db_err(e))?;
            }
            let _ = fs::rename(self.layout.blob(key, content), self.layout.corrupt(key, content));
            self.recount(&held, &wanted)?;
        }
        tx.commit()?;
        self.newly_wanted.notify_one();
        log::error!(
            "node {}: blob {key:?} {content:?} failed its hash; moved to {}",
            self.me,
            self.layout.corrupt_dir().display()
        );
        Ok(())
    }

    /// Inodes whose blob this node should keep but lacks.
    pub fn wanted(&self, limit: usize) -> Result<Vec<Inode>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let wanted = tx.open_table(WANTED).map_err(|e| self.db_err(e))?;
        let records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in wanted.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            if let Some(i) = live_content(&records, &Key(*k.value()), Version::from_be_bytes(*v.value()))? {
                out.push(i);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Commits records in one transaction, each only if newer than ours.
    ///
    /// `written` lists blobs (inode key, content version) the caller has
    /// just put in place for some of these inodes. The blob of content an
    /// inode no longer has is released (kept a while for reuse, by its
    /// hash); a new content this node should hold, with no blob at hand, is
    /// recorded as wanted. Directory entries keep the `children` and
    /// `subdirs` tables in step.
    ///
    /// Durable when it returns: through the journal, or (a batch too big
    /// for it) by a durable commit.
    pub fn apply(&self, batch: &[Record], written: &[(Key, Version)]) -> Result<Applied> {
        self.apply_visible(batch, written).and_then(|pending| self.settle(pending))
    }

    /// The first half of [`Store::apply`]: the batch is in the index, where
    /// readers see it, and its journal frame is written; [`Store::settle`]
    /// waits until it is durable. A reader may see it a moment before, as
    /// it may see a change not yet on a majority. The leader checks its
    /// next change against it meanwhile, so that concurrent changes share
    /// a sync (see `leader::outbox`).
    pub fn apply_visible(&self, batch: &[Record], written: &[(Key, Version)]) -> Result<Pending> {
        let started = Instant::now();
        let members = batch.iter().any(|r| matches!(r, Record::Members(_)));
        // Before the journal has it: a batch refused by the index must not
        // be replayed into it at the next start.
        check_batch(batch)?;
        let journaled = {
            let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
            match self.journal.write(&encode_batch(batch, written)?)? {
                // The index takes the batch while the journal's sync runs.
                Some(end) => {
                    let started = Instant::now();
                    let mut tx = self.db()?.begin_write().map_err(|e| self.db_err(e))?;
                    tx.set_durability(redb::Durability::None).map_err(|e| Error::Internal(format!("index: {e}")))?;
                    let done = self.apply_in(&tx, batch, written)?;
                    tx.commit().map_err(|e| self.db_err(e))?;
                    crate::metrics::METRICS.index_apply.since(started);
                    Some((done, end))
                }
                None => None,
            }
        };
        Ok(match journaled {
            Some(((out, files), end)) => Pending { out, files, journal_end: Some(end), members, started },
            None => {
                let tx = self.begin_durable()?;
                let (out, files) = self.apply_in(&tx, batch, written)?;
                tx.commit()?;
                Pending { out, files, journal_end: None, members, started }
            }
        })
    }

    /// Writes a batch to the journal without putting it in the index, for
    /// [`Store::sync_ahead`] and then [`Store::index_ahead`]: a follower
    /// answers the leader's round once it is durable here, and only then
    /// takes it into the index. Meanwhile a reader does not see it; a
    /// durable commit takes it in first (see `ahead`). `None`: it did not
    /// fit in the journal and went into the index with a durable commit of
    /// its own.
    ///
    /// # Errors
    /// As [`Store::apply`]; and `Io` while batches the index refused
    /// earlier wait still and it refuses them again.
    pub fn journal_ahead(&self, batch: Vec<Record>) -> Result<Option<Journaled>> {
        let started = Instant::now();
        check_batch(&batch)?;
        if self.ahead().stuck() {
            self.index_and_settle(u64::MAX)?;
        }
        let gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let Some(end) = self.journal.write_unsynced(&encode_batch(&batch, &[])?)? else {
            drop(gate);
            return self.apply(&batch, &[]).map(|_| None);
        };
        Ok(Some(Journaled { id: self.ahead().push(batch, end, started), end }))
    }

    /// Waits until a batch from [`Store::journal_ahead`] is durable: syncs
    /// the journal on this thread (sparing the two wake-ups of a hand-off
    /// to its syncer), unless a sync is running already, which the syncer
    /// follows with the next.
    ///
    /// # Errors
    /// `Io` when the sync failed. The batch may be durable all the same:
    /// the index takes it, as it would through [`Store::apply`].
    pub async fn sync_ahead(&self, batch: Journaled) -> Result<()> {
        let synced = match self.journal.try_sync(batch.end) {
            Some(res) => res,
            None => self.journal.durable(batch.end).await,
        };
        if synced.is_err() {
            self.index_ahead_now(batch.id);
        }
        synced
    }

    /// Takes every batch ahead of the index in with a durable commit, so
    /// that what is read next has every batch answered for.
    ///
    /// # Errors
    /// As the durable commit.
    pub fn take_in_ahead(&self) -> Result<()> {
        if self.ahead().is_empty() {
            return Ok(());
        }
        self.begin_durable()?.commit()
    }

    /// Takes batch `id` from [`Store::journal_ahead`] into the index, with
    /// any still waiting before it, for [`Store::settle`] (`None`: a
    /// durable commit took them in already). Should that fail, they wait
    /// on for the next batch or durable commit.
    ///
    /// # Errors
    /// As the index's commit in [`Store::apply`].
    pub fn index_ahead(&self, id: u64) -> Result<Option<Pending>> {
        let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let batches = self.ahead().take_through(id);
        let Some(first) = batches.first() else { return Ok(None) };
        let mut done = Pending::committed(first.started);
        // Their frames may be in the journal in another order than theirs.
        done.journal_end = batches.iter().map(|b| b.journal_end).max();
        let started = Instant::now();
        let indexed = self.db().and_then(|db| {
            let mut tx = db.begin_write().map_err(|e| self.db_err(e))?;
            tx.set_durability(redb::Durability::None).map_err(|e| Error::Internal(format!("index: {e}")))?;
            for b in &batches {
                done.add(self.apply_in(&tx, &b.records, &[])?, &b.records);
            }
            tx.commit().map_err(|e| self.db_err(e))
        });
        if let Err(e) = indexed {
            self.ahead().put_back(batches);
            return Err(e);
        }
        crate::metrics::METRICS.index_apply.since(started);
        Ok(Some(done))
    }

    /// [`Store::index_ahead`] and [`Store::settle`] on this thread, for a
    /// caller that has no one to tell of a failure but the log.
    pub fn index_ahead_now(&self, id: u64) {
        if let Err(e) = self.index_and_settle(id) {
            log::warn!("node {}: a batch durable in the journal is not in the index yet: {e}", self.me);
        }
    }

    /// [`Store::index_ahead`] and [`Store::settle`] on this thread.
    fn index_and_settle(&self, id: u64) -> Result<()> {
        match self.index_ahead(id)? {
            Some(pending) => self.settle(pending).map(drop),
            None => Ok(()),
        }
    }

    fn ahead(&self) -> std::sync::MutexGuard<'_, ahead::AheadOfIndex> {
        self.ahead.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The second half of [`Store::apply`]: returns once the batch is
    /// durable (through the journal, or a durable commit of the index
    /// since, which holds it too).
    pub fn settle(&self, pending: Pending) -> Result<Applied> {
        if let Some(end) = pending.journal_end {
            self.journal.wait_durable(end)?;
        }
        self.settled(pending)
    }

    /// [`Store::settle`] for an async caller: waits for the journal's sync
    /// without a thread, and does the rest here unless it may block
    /// (a checkpoint, blob files let go, the membership read again).
    pub async fn settle_async(self: &Arc<Store>, pending: Pending) -> Result<Applied> {
        if let Some(end) = pending.journal_end {
            self.journal.durable(end).await?;
        }
        let checkpoint = pending.journal_end.is_some() && self.journal.used() >= journal::CHECKPOINT_AT;
        if checkpoint || pending.members || !pending.files.is_empty() {
            let store = self.clone();
            return tokio::task::spawn_blocking(move || store.settled(pending))
                .await
                .map_err(|e| Error::Internal(format!("store task: {e}")))?;
        }
        self.settled(pending)
    }

    /// What [`Store::settle`] does once the batch is durable.
    fn settled(&self, pending: Pending) -> Result<Applied> {
        crate::metrics::METRICS.store_commit.since(pending.started);
        if pending.journal_end.is_some() && self.journal.used() >= journal::CHECKPOINT_AT {
            self.checkpoint()?;
        }
        self.after_commit(pending)
    }

    /// What follows a commit: blob files let go of, the fetcher told of
    /// blobs wanted, the membership read again if it changed.
    fn after_commit(&self, pending: Pending) -> Result<Applied> {
        self.let_go(pending.files);
        if pending.out.wanted > 0 {
            self.newly_wanted.notify_one();
        }
        if pending.members {
            self.reload_members()?;
        }
        Ok(pending.out)
    }

    /// Reads the membership record again and tells the watchers if it changed.
    pub(crate) fn reload_members(&self) -> Result<()> {
        let now = match self.record(&Key::members())? {
            Some(Record::Members(m)) => Some(m),
            _ => None,
        };
        self.members.send_if_modified(|old| {
            let changed = *old != now;
            *old = now;
            changed
        });
        Ok(())
    }

    /// The membership record committed here, if any.
    pub fn members(&self) -> Option<Members> {
        self.members.borrow().clone()
    }

    /// Completes once a blob has become wanted here since the last time it
    /// did (at once if one has meanwhile).
    pub async fn newly_wanted(&self) {
        self.newly_wanted.notified().await
    }

    /// A receiver told of every change of the membership record.
    pub fn watch_members(&self) -> tokio::sync::watch::Receiver<Option<Members>> {
        self.members.subscribe()
    }

    /// A write transaction that is durable on its own (see [`DurableTx`]).
    pub(crate) fn begin_durable(&self) -> Result<DurableTx<'_>> {
        let gate = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let tx = self.db()?.begin_write().map_err(|e| self.db_err(e))?;
        let batches = self.ahead().take_all();
        let mut ahead = TakenAhead { store: self, batches, done: Pending::committed(Instant::now()) };
        for b in &ahead.batches {
            let applied = self.apply_in(&tx, &b.records, &[])?;
            ahead.done.add(applied, &b.records);
        }
        Ok(DurableTx { store: self, tx, ahead, _gate: gate })
    }

    /// Commits everything the journal holds durably, on a clean stop: the
    /// index is then whole on its own, and the next start replays nothing.
    pub fn close(&self) -> Result<()> {
        self.begin_durable()?.commit()
    }

    /// Commits everything the journal holds durably and starts it over,
    /// unless another thread just did.
    fn checkpoint(&self) -> Result<()> {
        let tx = self.begin_durable()?;
        if self.journal.used() < journal::CHECKPOINT_AT {
            return Ok(());
        }
        tx.commit()
    }

    /// Applies the journal's batches (`payloads`) to the index in one
    /// durable commit, which starts the journal over.
    fn replay<'p>(&self, payloads: impl Iterator<Item = &'p [u8]>) -> Result<()> {
        let tx = self.begin_durable()?;
        let released = self.replay_in(&tx, payloads)?;
        let count = released.len();
        tx.commit()?;
        for files in released {
            self.let_go(files);
        }
        if count > 0 {
            log::info!("node {}: replayed {count} batch(es) from the journal into the index", self.me);
        }
        Ok(())
    }

    /// [`Store::apply`] inside the caller's transaction; the blob files it
    /// lets go of are for [`Store::let_go`] once that commits.
    fn apply_in(
        &self,
        tx: &redb::WriteTransaction,
        batch: &[Record],
        written: &[(Key, Version)],
    ) -> Result<(Applied, Placed)> {
        let mut out = Applied::default();
        let mut files = Placed::default();
        let mut records = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
        let mut children = tx.open_table(CHILDREN).map_err(|e| self.db_err(e))?;
        let mut subdirs = tx.open_table(SUBDIRS).map_err(|e| self.db_err(e))?;
        let mut by_version = tx.open_table(BY_VERSION).map_err(|e| self.db_err(e))?;
        let mut held = tx.open_table(HELD).map_err(|e| self.db_err(e))?;
        let mut wanted = tx.open_table(WANTED).map_err(|e| self.db_err(e))?;
        let mut inline = tx.open_table(INLINE).map_err(|e| self.db_err(e))?;
        let mut data = tx.open_table(INLINE_DATA).map_err(|e| self.db_err(e))?;
        let mut trash = trash::TrashTables::open(tx).map_err(|e| self.db_err(e))?;
        let mut meta = tx.open_table(META).map_err(|e| self.db_err(e))?;
        let mut digests = read_digests(&meta)?;
        // Blobs the batch's inodes hold now, by content: a version made
        // current again takes its blob from there (a version being kept
        // finds its file's by `version_of`). A version made current leaves
        // as a tombstone, and the batch keeps what it replaced as a version
        // unless that is off or the bytes are the same: only a batch with
        // a version or a tombstone can make one current, and others read
        // nothing more.
        let mut sources = HashMap::new();
        let may_restore = batch.iter().filter_map(Record::as_inode).any(|i| i.deleted || i.version_of().is_some());
        for i in batch.iter().filter_map(Record::as_inode).filter(|_| may_restore) {
            if let Some(o) = read_record(&records, &i.key())?.as_ref().and_then(Record::as_inode) {
                if o.has_blob() && read_version(&held, &o.key())? == Some(o.content) {
                    sources.insert(o.content, o.key());
                }
            }
        }

        for r in batch {
            let key = r.key();
            let old = read_record(&records, &key)?;
            if old.as_ref().is_some_and(|o| o.version() >= r.version()) {
                out.stale += 1;
                if let Record::Inode(i) = r {
                    self.settle_stale_blob(i, old.as_ref(), written, &mut held, &mut wanted, &mut files.useless)?;
                }
                continue;
            }
            if let Some(o) = &old {
                by_version.remove(&version_key(o.version(), &key)).map_err(|e| self.db_err(e))?;
                digests.toggle(&key, o.version());
            }
            digests.toggle(&key, r.version());
            let (stored, content) = stored_form(r);
            records.insert(&key.0, stored.as_slice()).map_err(|e| self.db_err(e))?;
            by_version.insert(&version_key(r.version(), &key), ()).map_err(|e| self.db_err(e))?;
            out.applied += 1;
            match r {
                Record::Inode(i) => {
                    let old_inode = old.as_ref().and_then(Record::as_inode);
                    // A change that keeps the content (chmod, times, a
                    // rename, a link) leaves its bytes where they are:
                    // rewriting them cost every such change of a small file
                    // a page or two of the index.
                    if !same_inline_content(old_inode, i) {
                        self.keep_inline(
                            &mut inline,
                            &mut data,
                            &key,
                            Some(i).filter(|i| i.is_inline()).map(|i| (i, content)),
                        )?;
                    }
                    trash.keep(old_inode, i).map_err(|e| self.db_err(e))?;
                    let placed = self.place_content(i, old_inode, written, &sources, &mut held, &mut wanted)?;
                    files.released.extend(placed.released);
                    files.useless.extend(placed.useless);
                    out.wanted += usize::from(placed.wanted);
                }
                Record::Dentry(d) => set_child(&mut children, &mut subdirs, d).map_err(|e| self.db_err(e))?,
                Record::NextIno(_) | Record::Members(_) => {}
            }
        }
        if out.applied > 0 {
            meta.insert(DIGESTS, digests.to_bytes().as_slice()).map_err(|e| self.db_err(e))?;
        }
        files.trash = trash.changed;
        self.recount(&held, &wanted)?;
        self.inline.store(inline.len().map_err(|e| self.db_err(e))?, Ordering::Relaxed);
        Ok((out, files))
    }

    /// Keeps the [`INLINE`] and [`INLINE_DATA`] tables in step with the
    /// record of `key`: `now` is the inode and its content if it is inline,
    /// `None` if it is not (or gone).
    pub(super) fn keep_inline(
        &self,
        inline: &mut redb::Table<&'static [u8; 32], u64>,
        data: &mut redb::Table<(&'static [u8; 32], u8), &'static [u8]>,
        key: &Key,
        now: Option<(&Inode, Option<&[u8]>)>,
    ) -> Result<()> {
        let old_size = match now {
            Some((i, _)) => inline.insert(&key.0, i.size),
            None => inline.remove(&key.0),
        }
        .map_err(|e| self.db_err(e))?
        .map(|v| v.value());
        put_inline(data, key, old_size, now.and_then(|(_, content)| content))
    }

    /// Blob files a commit let go of: released ones wait by content (a
    /// while, for reuse), the rest are removed.
    fn let_go(&self, files: Placed) {
        if files.trash {
            self.trash_changed.store(true, Ordering::Relaxed);
        }
        for (path, hash) in files.released {
            self.release(&path, &hash);
        }
        for p in &files.useless {
            let _ = fs::remove_file(p);
        }
    }

    /// Moves the blob at `path` among the released ones, by its content
    /// `hash` (one already there, the same content, is replaced), or
    /// removes it if it cannot be moved.
    fn release(&self, path: &Path, hash: &ContentHash) {
        let to = self.layout.released(hash);
        let Ok(blob) = fs::metadata(path) else { return };
        match fs::metadata(&to) {
            // The released copy it was placed from, linked: rename(2) would
            // do nothing; only this name goes, and the copy is room again.
            Ok(there) if there.ino() == blob.ino() && there.dev() == blob.dev() => {
                let _ = fs::remove_file(path);
            }
            replaced => {
                if fs::rename(path, &to).is_err() {
                    let _ = fs::remove_file(path);
                    return;
                }
                // One still linked into place elsewhere was not counted.
                if let Some(old) = replaced.ok().filter(|old| old.nlink() == 1) {
                    self.forget_released(old.len());
                }
            }
        }
        // Room only once no file in use shares it.
        if fs::metadata(&to).is_ok_and(|m| m.nlink() == 1) {
            self.released_bytes.fetch_add(blob.len(), Ordering::Relaxed);
        }
    }

    /// `bytes` of released blobs are gone (removed, or placed again).
    fn forget_released(&self, bytes: u64) {
        let _ =
            self.released_bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(bytes)));
    }

    /// Counts the released blobs' bytes again from the disk (one linked
    /// back into place frees nothing).
    fn count_released(&self) {
        let Ok(dir) = fs::read_dir(self.layout.released_dir()) else { return };
        let bytes = dir.flatten().filter_map(|f| f.metadata().ok()).filter(|m| m.nlink() == 1).map(|m| m.len()).sum();
        self.released_bytes.store(bytes, Ordering::Relaxed);
    }

    /// An inode record that lost to ours (or is the one we have): a blob
    /// we were waiting for arrived (a fetch, or a retried replication), or
    /// a blob replicated for content that never became current is garbage.
    fn settle_stale_blob(
        &self,
        i: &Inode,
        current: Option<&Record>,
        written: &[(Key, Version)],
        held: &mut redb::Table<&'static [u8; 32], &'static [u8; 16]>,
        wanted: &mut redb::Table<&'static [u8; 32], &'static [u8; 16]>,
        useless: &mut Vec<PathBuf>,
    ) -> Result<()> {
        if i.content == Version::ZERO {
            return Ok(());
        }
        let key = i.key();
        let path = self.layout.blob(&key, i.content);
        let in_place = written.contains(&(key, i.content)) || fs::metadata(&path).is_ok_and(|m| m.len() == i.size);
        if in_place && read_version(wanted, &key)? == Some(i.content) {
            wanted.remove(&key.0).map_err(|e| self.db_err(e))?;
            held.insert(&key.0, &i.content.to_be_bytes()).map_err(|e| self.db_err(e))?;
            return Ok(());
        }
        let current_content = current.and_then(Record::as_inode).filter(|c| c.has_blob()).map(|c| c.content);
        if in_place && current_content != Some(i.content) && read_version(held, &key)? != Some(i.content) {
            useless.push(path);
        }
        Ok(())
    }

    /// Keeps, releases, or wants the blob of a winning inode record.
    fn place_content(
        &self,
        i: &Inode,
        old: Option<&Inode>,
        written: &[(Key, Version)],
        sources: &HashMap<Version, Key>,
        held: &mut redb::Table<&'static [u8; 32], &'static [u8; 16]>,
        wanted: &mut redb::Table<&'static [u8; 32], &'static [u8; 16]>,
    ) -> Result<Placed> {
        let key = i.key();
        let mut placed = Placed::default();
        let keep = (i.has_blob() && i.holders.contains(&self.me)).then_some(i.content);
        if let Some(hv) = read_version(held, &key)? {
            if keep != Some(hv) {
                let path = self.layout.blob(&key, hv);
                // Content that leaves the trash was kept a week already:
                // it goes, rather than wait a while longer for reuse.
                match old.filter(|o| o.content == hv && o.has_blob() && !o.is_trashed()) {
                    Some(o) => placed.released.push((path, o.hash)),
                    None => placed.useless.push(path),
                }
                held.remove(&key.0).map_err(|e| self.db_err(e))?;
            }
        }
        if read_version(wanted, &key)?.is_some_and(|wv| keep != Some(wv)) {
            wanted.remove(&key.0).map_err(|e| self.db_err(e))?;
        }
        let Some(content) = keep else { return Ok(placed) };
        if read_version(held, &key)? == Some(content) || read_version(wanted, &key)? == Some(content) {
            return Ok(placed);
        }
        let dest = self.layout.blob(&key, content);
        let here = written.contains(&(key, content))
            || fs::metadata(&dest).is_ok_and(|m| m.len() == i.size)
            || self.adopt(i, &dest, sources);
        if here {
            held.insert(&key.0, &content.to_be_bytes()).map_err(|e| self.db_err(e))?;
        } else {
            wanted.insert(&key.0, &content.to_be_bytes()).map_err(|e| self.db_err(e))?;
            placed.wanted = true;
        }
        Ok(placed)
    }

    /// Links the blob of inode `i` into place at `dest` from the blob of
    /// another inode with the same content on this disk, if there is one:
    /// the file whose earlier version `i` is, or one of the batch's inodes
    /// (`sources`) that holds it until now (a version made current again).
    /// Content versions are unique, so the same one is the same bytes; the
    /// other inode's blob is let go of as usual, after the commit.
    fn adopt(&self, i: &Inode, dest: &Path, sources: &HashMap<Version, Key>) -> bool {
        let of = i.version_of().map(Key::of_ino);
        let from = of.into_iter().chain(sources.get(&i.content).copied()).filter(|k| *k != i.key());
        from.map(|k| self.layout.blob(&k, i.content))
            .any(|src| fs::metadata(&src).is_ok_and(|m| m.len() == i.size) && link_into_place(&src, dest).is_ok())
    }

    /// A named value in the meta table.
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let meta = tx.open_table(META).map_err(|e| self.db_err(e))?;
        Ok(meta.get(name).map_err(|e| self.db_err(e))?.map(|v| v.value().to_vec()))
    }

    pub fn set_meta(&self, name: &str, value: &[u8]) -> Result<()> {
        let tx = self.begin_durable()?;
        tx.open_table(META).map_err(|e| self.db_err(e))?.insert(name, value).map_err(|e| self.db_err(e))?;
        tx.commit()
    }

    /// The highest term this node has recorded.
    pub fn saved_term(&self) -> Result<Term> {
        let stored = self.meta("term")?.and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok()).map(u64::from_be_bytes);
        Ok(Term(stored.unwrap_or(0).max(self.max_version()?.term.0)))
    }

    pub fn save_term(&self, term: Term) -> Result<()> {
        self.set_meta("term", &term.0.to_be_bytes())
    }

    /// The version up to which this node is known to have every record.
    pub fn watermark(&self) -> Result<Version> {
        Ok(self.meta(WATERMARK)?.map_or(Version::ZERO, |b| decode_watermark(&b)))
    }

    pub fn set_watermark(&self, v: Version) -> Result<()> {
        self.set_meta(WATERMARK, &v.to_be_bytes())
    }

    /// Raises the stored watermark to `v`, leaving a higher one as it is:
    /// read and written under the commit gate, so two raises at once never
    /// leave the lower.
    pub fn raise_watermark(&self, v: Version) -> Result<()> {
        if self.watermark()? >= v {
            return Ok(());
        }
        let tx = self.begin_durable()?;
        {
            let mut meta = tx.open_table(META).map_err(|e| self.db_err(e))?;
            let stored = meta.get(WATERMARK).map_err(|e| self.db_err(e))?.map(|b| decode_watermark(b.value()));
            let raised = stored.unwrap_or(Version::ZERO).max(v);
            meta.insert(WATERMARK, raised.to_be_bytes().as_slice()).map_err(|e| self.db_err(e))?;
        }
        tx.commit()
    }

    /// `records` without those at or below the watermark: every committed
    /// entry up to it is here already (or a newer one), or was deleted and
    /// its tombstone purged, so a copy that arrives now is late and stale.
    pub fn newer_than_vouched(&self, mut records: Vec<Record>) -> Result<Vec<Record>> {
        let vouched = self.watermark()?;
        let before = records.len();
        records.retain(|r| r.version() > vouched);
        if records.len() < before {
            log::info!(
                "node {}: ignored {} late entries at or below the watermark {vouched:?}",
                self.me,
                before - records.len()
            );
        }
        Ok(records)
    }

    /// The records of `records` whose applying could change something here:
    /// those newer than the one held for their key, and stale inodes with a
    /// blob (applying one may still settle that blob, see
    /// `settle_stale_blob`). A follower's pull brings every record since its
    /// watermark again, most of them here already by the leader's `Apply`:
    /// they are not journaled, synced and checked a second time.
    pub fn not_held(&self, records: Vec<Record>) -> Result<Vec<Record>> {
        let tx = self.db()?.begin_read().map_err(|e| self.db_err(e))?;
        let table = tx.open_table(RECORDS).map_err(|e| self.db_err(e))?;
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let stale = read_record(&table, &r.key())?.is_some_and(|h| h.version() >= r.version());
            if !stale || r.as_inode().is_some_and(Inode::has_blob) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Decodes a record (for callers that got raw bytes); kept here so the
    /// encoding stays private to the store.
    pub fn decode(bytes: &[u8]) -> Result<Record> {
        decode_record(bytes)
    }
}

/// A batch [`Store::apply_visible`] put in the index, for
/// [`Store::settle`].
#[must_use = "a batch is durable only once settled"]
pub struct Pending {
    out: Applied,
    files: Placed,
    /// Where its journal frame ends; `None`: committed durably already.
    journal_end: Option<u64>,
    /// It changed the membership.
    members: bool,
    /// When [`Store::apply_visible`] began (for the commit's latency).
    started: Instant,
}

impl Pending {
    /// Nothing yet, for batches added with [`Pending::add`]; committed
    /// durably unless `journal_end` is set.
    fn committed(started: Instant) -> Pending {
        Pending { out: Applied::default(), files: Placed::default(), journal_end: None, members: false, started }
    }

    /// Adds what [`Store::apply_in`] did with `records`.
    fn add(&mut self, (out, files): (Applied, Placed), records: &[Record]) {
        self.out.applied += out.applied;
        self.out.stale += out.stale;
        self.out.wanted += out.wanted;
        self.files.released.extend(files.released);
        self.files.useless.extend(files.useless);
        self.files.wanted |= files.wanted;
        self.files.trash |= files.trash;
        self.members |= records.iter().any(|r| matches!(r, Record::Members(_)));
    }
}

/// A batch [`Store::journal_ahead`] wrote to the journal: `id` among the
/// batches ahead of the index, `end` where its frame ends.
#[derive(Debug, Clone, Copy)]
#[must_use = "a batch is durable only once synced"]
pub struct Journaled {
    pub id: u64,
    end: u64,
}

/// What [`Store::place_content`] decided about blobs on disk.
#[derive(Default)]
struct Placed {
    released: Vec<(PathBuf, ContentHash)>,
    useless: Vec<PathBuf>,
    wanted: bool,
    /// Whether the trash changed.
    trash: bool,
}

impl Placed {
    /// No blob file to move or remove.
    fn is_empty(&self) -> bool {
        self.released.is_empty() && self.useless.is_empty()
    }
}

/// The namespace as this node's index has it: what the leader checks its
/// changes against.
impl View for Store {
    fn inode(&self, ino: Ino) -> Result<Option<Inode>> {
        Store::inode(self, ino)
    }

    fn dentry(&self, parent: Ino, name: &str) -> Result<Option<Dentry>> {
        Store::dentry(self, parent, name)
    }

    fn has_children(&self, dir: Ino) -> Result<bool> {
        Store::has_children(self, dir)
    }

    fn versions(&self, of: Ino) -> Result<Vec<Ino>> {
        Ok(Store::versions(self, of)?.into_iter().map(|i| i.ino).collect())
    }
}

/// Refuses a batch with a record the index must not take: inline content
/// that does not match its inode.
fn check_batch(batch: &[Record]) -> Result<()> {
    for r in batch {
        if let Record::Inode(i) = r {
            i.check_inline()?;
        }
    }
    Ok(())
}

/// A live inode from open tables, a directory's link count filled in.
fn live_inode(
    records: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    subdirs: &impl ReadableTable<u64, u32>,
    ino: Ino,
) -> Result<Option<Inode>> {
    let Some(Record::Inode(mut i)) = read_record(records, &Key::of_ino(ino))? else { return Ok(None) };
    if i.deleted {
        return Ok(None);
    }
    if i.kind == Kind::Dir && !i.is_trashed() {
        let n = subdirs.get(ino.0).map_err(db_err)?.map(|v| v.value()).unwrap_or(0);
        i.nlink = 2 + n;
    }
    Ok(Some(i))
}

/// The live inode of `key` if its content is at `content` and has a blob.
fn live_content(
    records: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    key: &Key,
    content: Version,
) -> Result<Option<Inode>> {
    Ok(match read_record(records, key)? {
        Some(Record::Inode(i)) if i.has_blob() && i.content == content => Some(i),
        _ => None,
    })
}

/// Whether the blob `(key, content)` is garbage on node `me` by what the
/// index says: its inode has that content and other nodes keep it; or the
/// inode is gone (inode numbers are never used again); or it changed in a
/// later term than the upload's, to something this node does not keep
/// (an upload commits in the term it began in, or never). Once no upload
/// that began with it can still be running (`uploads_over`), any change of
/// the inode since will do.
///
/// Before that, an inode that merely changed since the upload began, in
/// the same term, is no proof: the upload may still commit after that
/// change. A file closed twice at once does it (`cmd > file` with
/// write-back: the empty first close goes up and commits while the content
/// streams), and a holder that took its copy for garbage then told the
/// leader it had one it had just removed.
fn decided_without(
    records: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    key: &Key,
    content: Version,
    me: NodeId,
    uploads_over: bool,
) -> Result<bool> {
    Ok(match read_record(records, key)? {
        Some(Record::Inode(i)) => {
            let kept_here = i.has_blob() && i.content == content && i.holders.contains(&me);
            let changed_since = i.version >= content;
            !kept_here
                && (i.content == content
                    || (i.deleted && changed_since)
                    || i.version.term > content.term
                    || (uploads_over && changed_since))
        }
        Some(_) => true,
        None => false,
    })
}

/// Brings `children` and `subdirs` in step with a directory entry record.
fn set_child(
    children: &mut redb::Table<&'static [u8], &'static [u8]>,
    subdirs: &mut redb::Table<u64, u32>,
    d: &Dentry,
) -> std::result::Result<(), redb::Error> {
    let k = child_key(d.parent, &d.name);
    let was = children.get(k.as_slice())?.and_then(|v| parse_child_value(v.value()));
    if was.is_some_and(|(_, kind)| kind == Kind::Dir) {
        let n = subdirs.get(d.parent.0)?.map(|v| v.value()).unwrap_or(0);
        if n <= 1 {
            subdirs.remove(d.parent.0)?;
        } else {
            subdirs.insert(d.parent.0, n - 1)?;
        }
    }
    if d.deleted {
        children.remove(k.as_slice())?;
        return Ok(());
    }
    children.insert(k.as_slice(), child_value(d.child, d.kind).as_slice())?;
    if d.kind == Kind::Dir {
        let n = subdirs.get(d.parent.0)?.map(|v| v.value()).unwrap_or(0);
        subdirs.insert(d.parent.0, n + 1)?;
    }
    Ok(())
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

/// The root of a new cluster: world-writable and sticky, as /tmp is, so
/// every user of the cluster can make their own directories in it without
/// removing anyone else's, owned by the user the first leader runs as.
pub fn new_root(now_ns: i64) -> Inode {
    // SAFETY: geteuid/getegid have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let mut root = Inode::new(Ino::ROOT, Kind::Dir, 0o1777, uid, gid, now_ns);
    root.parent = Ino::ROOT;
    root.nlink = 2;
    root
}

/// The counter of inode numbers of a new cluster.
pub fn new_next_ino(now_ns: i64) -> NextIno {
    NextIno { version: Version::ZERO, next: Ino(2), stamp_ns: now_ns }
}

#[cfg(test)]
mod tests;
