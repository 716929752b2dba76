//! Write-back (`scs-mount --write-back`): closing a small file writes it to
//! a journal in the cache directory, which is synced to the local disk when
//! the file's last descriptor is released, and it goes up to the cluster in
//! the background. What is in the journal when the mount stops (a crash, a
//! lost cluster) goes up when it next starts.
//!
//! - [`Journal`]: one record per closed snapshot, in `pending/`: a header
//!   (sequence number, name, size, mode, mtime, O_EXCL), the content and a
//!   SHA-256 over both (in a reusable slot, or a file of its own when big),
//!   written before close returns and synced at the release that follows;
//!   a record torn by a power cut fails its hash and is dropped.
//! - [`Queue`]: the records waiting or going up. Records of one name go up in
//!   order, one at a time; a newer record of a name replaces one still
//!   waiting. Namespace changes on this mount (rename, unlink, chmod ...)
//!   first wait for the records they touch ([`Queue::wait_clear`]), so the
//!   cluster sees this mount's changes of any one path in the order made.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use scs_common::name;
use scs_common::proto::rpc::UploadSpec;

use super::handles::Staged;
use super::lock;

/// Files up to this size are written back; bigger ones stream to the
/// cluster as they are written and are stored by close, as without
/// write-back.
pub const WRITE_BACK_MAX: u64 = scs_common::CHUNK_SIZE as u64;
/// A record waits this long before it goes up, unless someone waits for it:
/// a file closed twice in a row (`cmd > file` closes the empty file, then
/// the written one) goes up once.
const COALESCE: Duration = Duration::from_millis(20);
/// Records waiting at most; closing another one waits for room. (Each
/// holds its staging copy open: a descriptor.)
const MAX_WAITING: usize = 2_000;
/// Bytes waiting at most.
const MAX_WAITING_BYTES: u64 = 256 << 20;
const MAGIC: &[u8; 8] = b"SCSWB01\n";
/// Largest header accepted when reading a record back.
const MAX_HEADER: usize = 64 << 10;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Header {
    seq: u64,
    name: String,
    size: u64,
    mode: u32,
    mtime_ns: i64,
    exclusive: bool,
}

/// One closed snapshot of a file, durable in the journal.
#[derive(Debug, Clone)]
pub struct Record {
    pub seq: u64,
    pub path: PathBuf,
    pub spec: UploadSpec,
    /// Where the content starts in the record file.
    data_at: u64,
    /// The slot it is in (else a file of its own).
    slot: Option<usize>,
}

impl Record {
    /// Opens the content for an upload (again on each retry).
    pub fn content(&self) -> std::io::Result<impl Read + Send + 'static> {
        let mut f = File::open(&self.path)?;
        f.seek(SeekFrom::Start(self.data_at))?;
        Ok(f.take(self.spec.size.unwrap_or(0)))
    }
}

/// The journal directory.
///
/// A record that fits goes into a *slot*: a file of [`SLOT_SIZE`] bytes
/// written in full once, so writing a record is one `pwrite` and one
/// `fdatasync` of blocks that already exist (no metadata to commit). A slot
/// is freed by zeroing its magic. Bigger records get a file of their own
/// (created, fsynced, and the directory fsynced).
pub struct Journal {
    dir: PathBuf,
    /// Failed records are kept here for the user.
    unsent: PathBuf,
    next: AtomicU64,
    slots: Mutex<Slots>,
    /// Wakes the slot maker ([`Journal::make_spares`]).
    need: Condvar,
    /// Records written to slots and not synced yet, by sequence number.
    written: Mutex<HashMap<u64, PathBuf>>,
}

#[derive(Default)]
struct Slots {
    free: Vec<usize>,
    made: usize,
    /// The slot maker is to end.
    stopped: bool,
    /// Slots freed and loose records removed since the last [`Journal::sync`].
    unsynced: Vec<usize>,
    removed_loose: bool,
}

/// Bytes of one slot: a header, a file of up to about 60 KiB and its hash.
const SLOT_SIZE: usize = 64 << 10;
/// Slots at most (4 MiB each 64): past them records get files of their own.
const MAX_SLOTS: usize = 512;
/// Free slots the slot maker keeps ready (it starts when half are used), so
/// a close seldom waits while a slot is made (three disk flushes).
const SPARE_SLOTS: usize = 64;
/// Slots made between two syncs of the directory.
const SLOT_BATCH: usize = 8;
/// Bytes of a record besides its header and content: magic, header length, hash.
const OVERHEAD: usize = MAGIC.len() + 4 + 32;

fn slot_name(i: usize) -> String {
    format!("slot-{i:05}")
}

impl Journal {
    /// Opens (creating) the journal in `dir` and returns the records a
    /// previous mount left, oldest first. Torn records are dropped.
    pub fn open(dir: &Path) -> std::io::Result<(Journal, Vec<Record>)> {
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        let mut slots = Slots::default();
        let mut slot_ids = Vec::new();
        for item in std::fs::read_dir(dir)? {
            let path = item?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let slot = name.strip_prefix("slot-").and_then(|n| n.parse::<usize>().ok());
            let loose = name.parse::<u64>().is_ok();
            match (slot, loose) {
                (Some(i), _) => match std::fs::metadata(&path) {
                    Ok(m) if m.len() == SLOT_SIZE as u64 => {
                        slot_ids.push(i);
                        match read_record(&path, Some(i)) {
                            Ok(r) => found.push(r),
                            Err(_) => slots.free.push(i),
                        }
                    }
                    // Never finished being made: nothing was ever in it.
                    _ => {
                        let _ = std::fs::remove_file(&path);
                    }
                },
                (None, true) => match read_record(&path, None) {
                    Ok(r) => found.push(r),
                    Err(e) => {
                        log::warn!("dropping the torn write-back record {} ({e})", path.display());
                        let _ = std::fs::remove_file(&path);
                    }
                },
                // A temp file or something foreign: not ours to upload.
                (None, false) => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        // Slot numbers go on from the highest (a gap stays a gap).
        slots.made = slot_ids.iter().max().map_or(0, |m| m + 1);
        // What was read is what is on disk from now on: a slot freed (in the
        // page cache) by the last run must not come back after a power cut
        // with a sequence number the new records reuse.
        for &i in &slots.free {
            File::open(dir.join(slot_name(i)))?.sync_data()?;
        }
        sync_dir(dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        found.sort_by_key(|r| r.seq);
        let next = found.last().map_or(1, |r| r.seq + 1);
        let unsent = dir.with_file_name("unsent");
        let journal = Journal {
            dir: dir.to_path_buf(),
            unsent,
            next: AtomicU64::new(next),
            slots: Mutex::new(slots),
            need: Condvar::new(),
            written: Mutex::new(HashMap::new()),
        };
        Ok((journal, found))
    }

    /// Writes `size` bytes of `content` as the new version of `spec.name`.
    /// A record in a slot is in the page cache on return (a killed mount
    /// loses nothing) and on the disk after the next [`Journal::sync_written`]
    /// (a file's last release calls it: `cmd > file` closes the file twice,
    /// and only the second version needs the disk flush); a record of its
    /// own is synced before returning.
    pub fn write(&self, spec: &UploadSpec, content: &File, size: u64) -> std::io::Result<Record> {
        let seq = self.next.fetch_add(1, Ordering::SeqCst);
        let header = Header {
            seq,
            name: spec.name.clone(),
            size,
            mode: spec.mode,
            mtime_ns: spec.mtime_ns,
            exclusive: spec.exclusive,
        };
        let head = rmp_serde::to_vec(&header).map_err(std::io::Error::other)?;
        let mut buf = Vec::with_capacity(OVERHEAD + head.len() + size as usize);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&(head.len() as u32).to_le_bytes());
        buf.extend_from_slice(&head);
        let data_at = buf.len() as u64;
        buf.resize(buf.len() + size as usize, 0);
        content.read_exact_at(&mut buf[data_at as usize..], 0)?;
        let sum = Sha256::digest(&buf);
        buf.extend_from_slice(&sum);
        let spec = UploadSpec { size: Some(size), ..spec.clone() };
        if buf.len() <= SLOT_SIZE {
            if let Some(slot) = self.take_slot() {
                let path = self.dir.join(slot_name(slot));
                let res = std::fs::OpenOptions::new().write(true).open(&path).and_then(|f| f.write_all_at(&buf, 0));
                return match res {
                    Ok(()) => {
                        lock(&self.written).insert(seq, path.clone());
                        Ok(Record { seq, path, spec, data_at, slot: Some(slot) })
                    }
                    Err(e) => {
                        self.free_slot(slot, &path);
                        Err(e)
                    }
                };
            }
        }
        let path = self.dir.join(format!("{seq:020}"));
        let res = File::create(&path).and_then(|mut f| f.write_all(&buf).and_then(|_| f.sync_data()));
        if let Err(e) = res.and_then(|_| sync_dir(&self.dir)) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Record { seq, path, spec, data_at, slot: None })
    }

    /// A free slot, made if there are fewer than [`MAX_SLOTS`]; `None` if
    /// all are taken (or one cannot be made).
    fn take_slot(&self) -> Option<usize> {
        let new = {
            let mut slots = lock(&self.slots);
            if slots.free.len() <= SPARE_SLOTS / 2 {
                self.need.notify_one();
            }
            if let Some(i) = slots.free.pop() {
                return Some(i);
            }
            if slots.made >= MAX_SLOTS {
                return None;
            }
            slots.made += 1;
            slots.made - 1
        };
        match self.make_slot(new).and_then(|_| sync_dir(&self.dir)) {
            Ok(()) => Some(new),
            Err(e) => {
                log::warn!("cannot make the write-back slot {}: {e}", slot_name(new));
                None
            }
        }
    }

    /// Writes slot `i` in full and syncs it, so later records only
    /// overwrite blocks that exist. Its directory entry is not synced.
    fn make_slot(&self, i: usize) -> std::io::Result<()> {
        let path = self.dir.join(slot_name(i));
        let made = File::create(&path).and_then(|mut f| f.write_all(&[0u8; SLOT_SIZE]).and_then(|_| f.sync_all()));
        if made.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        made
    }

    /// The slot maker: whenever half the spare slots are used, makes more
    /// (in batches, one directory sync each) until [`SPARE_SLOTS`] are free
    /// or [`MAX_SLOTS`] exist; returns at [`Journal::stop`] or when a slot
    /// cannot be made (closes then make their own).
    pub fn make_spares(&self) {
        loop {
            {
                let mut st = lock(&self.slots);
                while !st.stopped && (st.free.len() > SPARE_SLOTS / 2 || st.made >= MAX_SLOTS) {
                    st = self.need.wait(st).unwrap_or_else(|p| p.into_inner());
                }
            }
            while let Some(batch) = self.next_batch() {
                let made = batch.clone().try_for_each(|i| self.make_slot(i)).and_then(|_| sync_dir(&self.dir));
                if let Err(e) = made {
                    log::warn!("cannot make write-back slots ahead ({e}); closes make their own");
                    return;
                }
                lock(&self.slots).free.extend(batch);
            }
            if lock(&self.slots).stopped {
                return;
            }
        }
    }

    /// The numbers of the next slots to make ahead, up to [`SPARE_SLOTS`]
    /// free; `None` when there are enough, or at [`Journal::stop`].
    fn next_batch(&self) -> Option<std::ops::Range<usize>> {
        let mut st = lock(&self.slots);
        let room = SPARE_SLOTS.saturating_sub(st.free.len()).min(MAX_SLOTS - st.made).min(SLOT_BATCH);
        if st.stopped || room == 0 {
            return None;
        }
        st.made += room;
        Some(st.made - room..st.made)
    }

    /// Ends the slot maker.
    pub fn stop(&self) {
        lock(&self.slots).stopped = true;
        self.need.notify_all();
    }

    fn free_slot(&self, slot: usize, path: &Path) {
        let zeroed = std::fs::OpenOptions::new().write(true).open(path).and_then(|f| f.write_all_at(&[0u8; 8], 0));
        match zeroed {
            Ok(()) => {
                let mut slots = lock(&self.slots);
                slots.free.push(slot);
                slots.unsynced.push(slot);
            }
            // Left taken: it is read back (and uploaded) at the next start.
            Err(e) => log::warn!("cannot free the write-back slot {}: {e}", path.display()),
        }
    }

    /// The record went up, or was replaced: it is no longer owed. The
    /// removal is not synced here (that would cost every upload a disk
    /// flush): [`Journal::sync`] makes it durable before this mount changes
    /// the name again (see `Core::settle`) and at unmount. Until then a
    /// power cut could bring it back, to go up again at the next start:
    /// harmless for a replaced record (the newer one follows it), and for
    /// one that went up unless someone else wrote the name meanwhile.
    pub fn remove(&self, rec: &Record) {
        lock(&self.written).remove(&rec.seq);
        match rec.slot {
            Some(slot) => self.free_slot(slot, &rec.path),
            None => match std::fs::remove_file(&rec.path) {
                Ok(()) => lock(&self.slots).removed_loose = true,
                Err(e) => log::warn!("cannot remove the write-back record {}: {e}", rec.path.display()),
            },
        }
    }

    /// Puts the records written so far on the disk.
    pub fn sync_written(&self) {
        let records: Vec<(u64, PathBuf)> = lock(&self.written).drain().collect();
        for (_, path) in records {
            if let Err(e) = File::open(&path).and_then(|f| f.sync_data()) {
                log::warn!("cannot sync the write-back record {}: {e}", path.display());
            }
        }
    }

    /// Makes the records written and the removals so far durable.
    pub fn sync(&self) {
        self.sync_written();
        let (slots, loose) = {
            let mut st = lock(&self.slots);
            (std::mem::take(&mut st.unsynced), std::mem::take(&mut st.removed_loose))
        };
        for slot in slots {
            let path = self.dir.join(slot_name(slot));
            if let Err(e) = File::open(&path).and_then(|f| f.sync_data()) {
                log::warn!("cannot sync the write-back slot {}: {e}", path.display());
            }
        }
        if loose {
            if let Err(e) = sync_dir(&self.dir) {
                log::warn!("cannot sync the write-back journal {}: {e}", self.dir.display());
            }
        }
    }

    /// The cluster refused the record for good: its content is kept in
    /// `unsent/` for the user; returns where.
    pub fn keep_unsent(&self, rec: &Record) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.unsent)?;
        let base = rec.spec.name.replace('/', "%2F");
        let dest = self.unsent.join(format!("{}-{base}", rec.seq));
        let mut out = File::create(&dest)?;
        std::io::copy(&mut rec.content()?, &mut out)?;
        out.sync_all()?;
        self.remove(rec);
        Ok(dest)
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads the record in `path` (a slot holds one at its start, then junk).
fn read_record(path: &Path, slot: Option<usize>) -> std::io::Result<Record> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let buf = std::fs::read(path)?;
    if buf.len() < OVERHEAD || &buf[..MAGIC.len()] != MAGIC {
        return Err(bad("not a write-back record"));
    }
    let hlen = u32::from_le_bytes(buf[8..12].try_into().map_err(|_| bad("short header"))?) as usize;
    if hlen > MAX_HEADER || OVERHEAD + hlen > buf.len() {
        return Err(bad("header out of bounds"));
    }
    let header: Header = rmp_serde::from_slice(&buf[12..12 + hlen]).map_err(|e| bad(&e.to_string()))?;
    let data_at = 12 + hlen;
    let end = usize::try_from(header.size).ok().and_then(|n| data_at.checked_add(n)).ok_or_else(|| bad("size"))?;
    if end + 32 > buf.len() || (slot.is_none() && end + 32 != buf.len()) {
        return Err(bad("size mismatch"));
    }
    if Sha256::digest(&buf[..end]).as_slice() != &buf[end..end + 32] {
        return Err(bad("checksum mismatch"));
    }
    name::validate(&header.name).map_err(|e| bad(&e.to_string()))?;
    let spec = UploadSpec {
        name: header.name,
        size: Some(header.size),
        mode: header.mode,
        mtime_ns: header.mtime_ns,
        exclusive: header.exclusive,
    };
    Ok(Record { seq: header.seq, path: path.to_path_buf(), spec, data_at: data_at as u64, slot })
}

/// A record to upload, and the staging copy it came from (none for records
/// left by an earlier mount).
pub struct Job {
    pub rec: Record,
    pub staged: Option<Arc<Staged>>,
    /// The staging copy's write generation when the snapshot was taken.
    pub gen: u64,
    /// Queued since (the first unsent version of the name, if it replaced
    /// some).
    since: Instant,
    /// Someone waits for it: it goes at once.
    hurry: bool,
}

impl Job {
    pub fn new(rec: Record, staged: Option<Arc<Staged>>, gen: u64) -> Job {
        Job { rec, staged, gen, since: Instant::now(), hurry: false }
    }
}

#[derive(Default)]
struct QState {
    waiting: VecDeque<Job>,
    /// Names going up right now.
    going: Vec<String>,
    bytes: u64,
    stopped: bool,
    /// When a job last ended.
    progress: Option<Instant>,
}

impl QState {
    fn related(&self, paths: &[&str]) -> bool {
        let touches = |n: &str| paths.iter().any(|p| related(n, p));
        self.going.iter().any(|n| touches(n)) || self.waiting.iter().any(|j| touches(&j.rec.spec.name))
    }
}

/// `a` and `b` are the same path, or one is inside the other.
fn related(a: &str, b: &str) -> bool {
    a == b || b.is_empty() || a.is_empty() || name::is_inside(a, b) || name::is_inside(b, a)
}

/// Records waiting for an uploader, in order.
#[derive(Default)]
pub struct Queue {
    state: Mutex<QState>,
    changed: Condvar,
}

impl Queue {
    /// Adds a job, waiting until `deadline` for room. A job of the same name
    /// still waiting is replaced: it is returned so its record can go.
    ///
    /// # Errors
    /// The job back, when there was no room in time.
    pub fn push(&self, job: Job, deadline: Instant) -> Result<Vec<Job>, Box<Job>> {
        let mut st = lock(&self.state);
        while st.waiting.len() >= MAX_WAITING || st.bytes >= MAX_WAITING_BYTES {
            let now = Instant::now();
            if now >= deadline {
                return Err(Box::new(job));
            }
            st = self.changed.wait_timeout(st, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        Ok(self.add(st, job))
    }

    /// Adds a job whatever the queue holds (records an earlier mount left).
    pub fn push_unbounded(&self, job: Job) -> Vec<Job> {
        self.add(lock(&self.state), job)
    }

    fn add(&self, mut st: std::sync::MutexGuard<'_, QState>, mut job: Job) -> Vec<Job> {
        let name = job.rec.spec.name.clone();
        let mut replaced = Vec::new();
        let mut i = 0;
        while i < st.waiting.len() {
            if st.waiting[i].rec.spec.name == name {
                if let Some(old) = st.waiting.remove(i) {
                    st.bytes -= old.rec.spec.size.unwrap_or(0);
                    replaced.push(old);
                }
            } else {
                i += 1;
            }
        }
        // A replaced record that had to create the name (O_EXCL) passes
        // that on: its replacement is the first to go up. So does its age,
        // so a file closed again and again still goes up.
        if replaced.iter().any(|j| j.rec.spec.exclusive) {
            job.rec.spec.exclusive = true;
        }
        for old in &replaced {
            job.since = job.since.min(old.since);
            job.hurry |= old.hurry;
        }
        st.bytes += job.rec.spec.size.unwrap_or(0);
        st.waiting.push_back(job);
        self.changed.notify_all();
        replaced
    }

    /// The oldest job whose name is not going up already and that waited
    /// [`COALESCE`] (or is awaited); `None` once stopped.
    pub fn take(&self) -> Option<Job> {
        let mut st = lock(&self.state);
        loop {
            if st.stopped {
                return None;
            }
            let now = Instant::now();
            let mut soonest: Option<Instant> = None;
            let mut pos = None;
            for (i, j) in st.waiting.iter().enumerate() {
                if st.going.contains(&j.rec.spec.name) {
                    continue;
                }
                let ready = j.since + COALESCE;
                if j.hurry || ready <= now {
                    pos = Some(i);
                    break;
                }
                soonest = Some(soonest.map_or(ready, |t| t.min(ready)));
            }
            if let Some(job) = pos.and_then(|i| st.waiting.remove(i)) {
                st.bytes -= job.rec.spec.size.unwrap_or(0);
                st.going.push(job.rec.spec.name.clone());
                return Some(job);
            }
            st = match soonest {
                Some(t) => self.changed.wait_timeout(st, t - now).unwrap_or_else(|p| p.into_inner()).0,
                None => self.changed.wait(st).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }

    /// The job of `name` taken by [`Queue::take`] is over.
    pub fn done(&self, name: &str) {
        let mut st = lock(&self.state);
        if let Some(i) = st.going.iter().position(|n| n == name) {
            st.going.swap_remove(i);
        }
        st.progress = Some(Instant::now());
        self.changed.notify_all();
    }

    /// Waits until no job at, inside or above any of `paths` is waiting or
    /// going up, moving those jobs to the front of the queue; false once
    /// no job at all has ended for `idle` (the cluster is unreachable), or
    /// the queue stopped.
    pub fn wait_clear(&self, paths: &[&str], idle: Duration) -> bool {
        let started = Instant::now();
        let mut st = lock(&self.state);
        if st.related(paths) {
            let touches = |j: &Job| paths.iter().any(|p| related(&j.rec.spec.name, p));
            let (mut first, rest): (VecDeque<Job>, VecDeque<Job>) = st.waiting.drain(..).partition(|j| touches(j));
            for j in first.iter_mut() {
                j.hurry = true;
            }
            st.waiting = first;
            st.waiting.extend(rest);
            self.changed.notify_all();
        }
        while st.related(paths) {
            let now = Instant::now();
            let since = st.progress.map_or(started, |p| p.max(started));
            if now >= since + idle || st.stopped {
                return false;
            }
            st = self.changed.wait_timeout(st, since + idle - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }

    /// Jobs waiting or going up.
    pub fn len(&self) -> usize {
        let st = lock(&self.state);
        st.waiting.len() + st.going.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sleeps for `d` unless stopped meanwhile; false once stopped.
    pub fn pause(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut st = lock(&self.state);
        while !st.stopped {
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            st = self.changed.wait_timeout(st, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        false
    }

    /// Wakes the uploaders to end (the journal keeps what is left).
    pub fn stop(&self) {
        lock(&self.state).stopped = true;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> UploadSpec {
        UploadSpec { name: name.into(), size: None, mode: 0o644, mtime_ns: 7, exclusive: false }
    }

    fn content(dir: &Path, bytes: &[u8]) -> File {
        let p = dir.join("staging");
        std::fs::write(&p, bytes).unwrap();
        File::open(p).unwrap()
    }

    fn job(j: &Journal, dir: &Path, name: &str, bytes: &[u8]) -> Job {
        let rec = j.write(&spec(name), &content(dir, bytes), bytes.len() as u64).unwrap();
        Job::new(rec, None, 0)
    }

    #[test]
    fn records_come_back_after_a_restart_in_order_with_their_content() {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("pending");
        let (j, old) = Journal::open(&jdir).unwrap();
        assert!(old.is_empty());
        let a = j.write(&spec("a.txt"), &content(dir.path(), b"first"), 5).unwrap();
        let b = j.write(&spec("d/b.txt"), &content(dir.path(), b"second!"), 7).unwrap();
        drop(j);
        let (j2, found) = Journal::open(&jdir).unwrap();
        assert_eq!(found.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![a.seq, b.seq]);
        assert_eq!(found[1].spec.name, "d/b.txt");
        assert_eq!(found[1].spec.size, Some(7));
        let mut got = String::new();
        found[1].content().unwrap().read_to_string(&mut got).unwrap();
        assert_eq!(got, "second!");
        // New records number on from the old ones.
        let c = j2.write(&spec("c"), &content(dir.path(), b""), 0).unwrap();
        assert!(c.seq > b.seq);
    }

    #[test]
    fn a_torn_or_foreign_record_is_dropped_not_uploaded() {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("pending");
        let (j, _) = Journal::open(&jdir).unwrap();
        let good = j.write(&spec("good"), &content(dir.path(), b"kept"), 4).unwrap();
        let torn = j.write(&spec("torn"), &content(dir.path(), &[7u8; 4096]), 4096).unwrap();
        // A crash mid-write: the length is there, the last blocks are zeros.
        let f = std::fs::OpenOptions::new().write(true).open(&torn.path).unwrap();
        f.write_all_at(&[0u8; 100], 3000).unwrap();
        std::fs::write(jdir.join("00000000000000000099"), b"garbage").unwrap();
        drop(j);
        let (j, found) = Journal::open(&jdir).unwrap();
        assert_eq!(found.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![good.seq]);
        assert!(!jdir.join("00000000000000000099").exists());
        // The torn record's slot is free again: the next record takes it.
        let next = j.write(&spec("next"), &content(dir.path(), b"n"), 1).unwrap();
        assert_eq!(next.path, torn.path);
    }

    #[test]
    fn a_big_record_gets_a_file_of_its_own_and_freed_slots_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("pending");
        let (j, _) = Journal::open(&jdir).unwrap();
        let big = vec![9u8; SLOT_SIZE];
        let b = j.write(&spec("big"), &content(dir.path(), &big), big.len() as u64).unwrap();
        assert!(b.slot.is_none() && b.path.file_name().unwrap().to_str().unwrap().parse::<u64>().is_ok());
        let a = j.write(&spec("a"), &content(dir.path(), b"a"), 1).unwrap();
        j.remove(&a);
        let c = j.write(&spec("c"), &content(dir.path(), b"c"), 1).unwrap();
        assert_eq!(c.slot, a.slot, "a freed slot is written again");
        j.sync();
        drop(j);
        let (_, found) = Journal::open(&jdir).unwrap();
        let names: Vec<&str> = found.iter().map(|r| r.spec.name.as_str()).collect();
        assert_eq!(names, ["big", "c"], "the removed record stays gone");
        let mut got = Vec::new();
        found[0].content().unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got, big);
    }

    #[test]
    fn slot_records_are_synced_later_unless_gone_first() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(&dir.path().join("pending")).unwrap();
        let a = j.write(&spec("a"), &content(dir.path(), b"a"), 1).unwrap();
        let b = j.write(&spec("b"), &content(dir.path(), b"b"), 1).unwrap();
        let big = vec![7u8; SLOT_SIZE];
        let c = j.write(&spec("c"), &content(dir.path(), &big), big.len() as u64).unwrap();
        let unsynced = || {
            let mut v: Vec<u64> = lock(&j.written).keys().copied().collect();
            v.sort();
            v
        };
        assert_eq!(unsynced(), [a.seq, b.seq], "a record of its own is synced at once");
        j.remove(&a);
        assert_eq!(unsynced(), [b.seq], "a record gone needs no sync");
        j.sync_written();
        assert!(unsynced().is_empty());
        j.remove(&b);
        j.remove(&c);
    }

    #[test]
    fn the_slot_maker_keeps_spare_slots_ready_and_stops_when_told() {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("pending");
        let (j, _) = Journal::open(&jdir).unwrap();
        let j = Arc::new(j);
        let maker = std::thread::spawn({
            let j = j.clone();
            move || j.make_spares()
        });
        let free = || lock(&j.slots).free.len();
        let until = Instant::now() + Duration::from_secs(30);
        while free() < SPARE_SLOTS {
            assert!(Instant::now() < until, "only {} spare slots after 30 s", free());
            std::thread::sleep(Duration::from_millis(10));
        }
        let slot_files = || std::fs::read_dir(&jdir).unwrap().count();
        assert_eq!(slot_files(), SPARE_SLOTS);
        // Records take ready slots; past half of them more are made.
        let recs: Vec<Record> = (0..SPARE_SLOTS / 2 + 1)
            .map(|i| j.write(&spec(&format!("f{i}")), &content(dir.path(), b"x"), 1).unwrap())
            .collect();
        assert!(recs.iter().all(|r| r.slot.is_some()));
        while free() < SPARE_SLOTS {
            assert!(Instant::now() < until, "the maker did not make more ({} free)", free());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(slot_files(), SPARE_SLOTS + recs.len());
        j.stop();
        maker.join().unwrap();
        // What was made is found again, all free, by the next mount.
        for r in &recs {
            j.remove(r);
        }
        drop(j);
        let (j2, found) = Journal::open(&jdir).unwrap();
        assert!(found.is_empty());
        assert_eq!(lock(&j2.slots).free.len(), SPARE_SLOTS + recs.len());
    }

    #[test]
    fn a_newer_record_replaces_a_waiting_one_and_names_go_up_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(&dir.path().join("pending")).unwrap();
        let q = Queue::default();
        let later = Instant::now() + Duration::from_secs(5);
        assert!(q.push(job(&j, dir.path(), "a", b"1"), later).ok().unwrap().is_empty());
        assert!(q.push(job(&j, dir.path(), "b", b"2"), later).ok().unwrap().is_empty());
        let first = q.take().unwrap();
        assert_eq!(first.rec.spec.name, "a");
        // "a" is going up: a newer "a" waits behind it, "b" goes first.
        assert!(q.push(job(&j, dir.path(), "a", b"3"), later).ok().unwrap().is_empty());
        let replaced = q.push(job(&j, dir.path(), "a", b"4"), later).ok().unwrap();
        assert_eq!(replaced.len(), 1);
        assert_eq!(q.take().unwrap().rec.spec.name, "b");
        assert!(!q.wait_clear(&["a"], Duration::from_millis(20)));
        q.done("a");
        let again = q.take().unwrap();
        assert_eq!(again.rec.spec.name, "a");
        let mut got = String::new();
        again.rec.content().unwrap().read_to_string(&mut got).unwrap();
        assert_eq!(got, "4");
        q.done("a");
        q.done("b");
        assert!(q.wait_clear(&["a", "b"], Duration::ZERO));
        assert!(q.is_empty());
    }

    #[test]
    fn waiting_for_a_directory_covers_what_is_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(&dir.path().join("pending")).unwrap();
        let q = Queue::default();
        q.push(job(&j, dir.path(), "docs/x/a.txt", b"1"), Instant::now()).ok().unwrap();
        let soon = || Duration::from_millis(10);
        assert!(!q.wait_clear(&["docs"], soon()));
        assert!(!q.wait_clear(&["docs/x/a.txt/b"], soon()));
        assert!(q.wait_clear(&["doc", "docs/y", "other"], soon()));
        let job = q.take().unwrap();
        q.done(&job.rec.spec.name);
        assert!(q.wait_clear(&["docs"], soon()));
    }

    #[test]
    fn a_full_queue_makes_the_closer_wait_and_then_give_up() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(&dir.path().join("pending")).unwrap();
        let q = Queue::default();
        lock(&q.state).bytes = MAX_WAITING_BYTES;
        let t0 = Instant::now();
        assert!(q.push(job(&j, dir.path(), "a", b"1"), t0 + Duration::from_millis(50)).is_err());
        assert!(t0.elapsed() >= Duration::from_millis(50));
    }
    #[test]
    fn waiting_for_a_name_moves_it_to_the_front_and_gives_up_only_without_progress() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(&dir.path().join("pending")).unwrap();
        let q = Arc::new(Queue::default());
        let later = Instant::now() + Duration::from_secs(5);
        for n in ["a", "b", "c"] {
            q.push(job(&j, dir.path(), n, b"x"), later).ok().unwrap();
        }
        assert!(!q.wait_clear(&["c"], Duration::from_millis(10)));
        assert_eq!(q.take().unwrap().rec.spec.name, "c", "the awaited record goes first");
        // A slow uploader still making progress keeps the waiter waiting.
        let q2 = q.clone();
        let uploader = std::thread::spawn(move || {
            q2.done("c");
            for _ in 0..2 {
                let job = q2.take().unwrap();
                std::thread::sleep(Duration::from_millis(60));
                q2.done(&job.rec.spec.name);
            }
        });
        assert!(q.wait_clear(&[""], Duration::from_millis(100)), "each record ended within the idle limit");
        uploader.join().unwrap();
    }

    #[test]
    fn a_record_replacing_an_exclusive_one_is_exclusive_too() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(&dir.path().join("pending")).unwrap();
        let q = Queue::default();
        let mut first = job(&j, dir.path(), "new.txt", b"1");
        first.rec.spec.exclusive = true;
        q.push_unbounded(first);
        let replaced = q.push_unbounded(job(&j, dir.path(), "new.txt", b"2"));
        assert_eq!(replaced.len(), 1);
        assert!(q.take().unwrap().rec.spec.exclusive, "it is the one that creates the name");
    }
}
