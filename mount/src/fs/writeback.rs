//! Write-back (`scs-mount --write-back`): closing a small file writes it to
//! a journal in the cache directory, which is synced to the local disk when
//! the file's last descriptor is released, and it goes up to the cluster in
//! the background. What is in the journal when the mount stops (a crash, a
//! lost cluster) goes up when it next starts.
//!
//! - [`Journal`]: one record per closed snapshot, in `pending/`: a header
//!   (sequence number and the whole [`UploadSpec`]: which file, its mode,
//!   owner, times and extended attributes), the content and a SHA-256 over
//!   both (in a reusable slot of one file, or a file of its own when big), written
//!   before close returns and synced at the release that follows; a record
//!   torn by a power cut fails its hash and is dropped. The header is
//!   versioned: records a previous release left (path-based) still go up.
//! - [`Queue`]: the records waiting or going up. Records of one file go up
//!   in order, one at a time; a newer record of a file replaces one still
//!   waiting. A change of a new file whose record waits (chmod, times,
//!   rename) rewrites the record instead ([`Queue::amend`],
//!   [`Journal::rewrite`]), and deleting it withdraws the record. Other
//!   namespace changes on this mount first wait for the records they touch
//!   ([`Queue::wait_clear`], by inode, and by directory for files not on
//!   the cluster yet), so the cluster sees this mount's changes of any one
//!   file in the order made.
//!
//! Knows nothing of open files: a job carries back whatever its owner gave
//! it (`T`).

use std::collections::{HashSet, VecDeque};
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
use scs_common::proto::rpc::{Target, UploadSpec};
use scs_common::Ino;

use super::lock;

/// Files up to this size are written back; bigger ones stream to the
/// cluster as they are written and are stored by close, as without
/// write-back.
pub const WRITE_BACK_MAX: u64 = scs_common::CHUNK_SIZE as u64;
/// A record waits this long before it goes up, unless someone waits for it:
/// a file closed twice in a row (`cmd > file` closes the empty file, then
/// the written one) goes up once.
const COALESCE: Duration = Duration::from_millis(20);
/// A record that waited this long may go up early, with one that waited
/// [`COALESCE`] ([`Queue::take_more`]): by then the changes that follow a
/// close (rsync's chmod, times and rename) have usually gone into it.
const COMPANION_WAIT: Duration = Duration::from_millis(10);
/// Records waiting at most; closing another one waits for room. (Each
/// holds its staging copy open: a descriptor.)
const MAX_WAITING: usize = 2_000;
/// Bytes waiting at most.
const MAX_WAITING_BYTES: u64 = 256 << 20;
/// Records of the release before inodes: a path-based header ([`HeaderV1`]).
const MAGIC_V1: &[u8; 8] = b"SCSWB01\n";
/// Records with a whole [`UploadSpec`] ([`Header`]).
const MAGIC: &[u8; 8] = b"SCSWB02\n";
/// Largest header accepted when reading a record back (an upload spec may
/// carry 256 KiB of extended attributes).
const MAX_HEADER: usize = 512 << 10;

/// The header of a record: what to store, and in which order.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Header {
    seq: u64,
    /// Its `size` is the content's exact length.
    spec: UploadSpec,
}

/// The header the release before inodes wrote: a file by path.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct HeaderV1 {
    seq: u64,
    name: String,
    size: u64,
    mode: u32,
    mtime_ns: i64,
    exclusive: bool,
}

impl HeaderV1 {
    /// The upload it stands for: the path, owned by whoever runs the mount
    /// now (that release showed every file as the mounting user's).
    fn into_header(self) -> Header {
        let mut spec = UploadSpec::new(Target::Path(self.name), Some(self.size), self.mode, self.mtime_ns);
        spec.exclusive = self.exclusive;
        Header { seq: self.seq, spec }
    }
}

/// One closed snapshot of a file, durable in the journal.
#[derive(Debug, Clone)]
pub struct Record {
    pub seq: u64,
    pub spec: UploadSpec,
    /// Where the content starts in the record.
    data_at: u64,
    at: Place,
}

/// Where a record is.
#[derive(Debug, Clone)]
enum Place {
    /// Slot `i` of the slots file.
    Slot(Arc<File>, usize),
    /// A file of its own (a big record, or one in a slot file of the
    /// release before the slots file).
    Own(PathBuf),
}

impl Record {
    /// Opens the content for an upload (again on each retry).
    pub fn content(&self) -> std::io::Result<Box<dyn Read + Send>> {
        let size = self.spec.size.unwrap_or(0);
        match &self.at {
            Place::Slot(..) => {
                let mut buf = vec![0; size as usize];
                self.read_at(&mut buf)?;
                Ok(Box::new(std::io::Cursor::new(buf)))
            }
            Place::Own(path) => {
                let mut f = File::open(path)?;
                f.seek(SeekFrom::Start(self.data_at))?;
                Ok(Box::new(f.take(size)))
            }
        }
    }

    /// Reads the start of the content into `buf`.
    fn read_at(&self, buf: &mut [u8]) -> std::io::Result<()> {
        match &self.at {
            Place::Slot(file, i) => file.read_exact_at(buf, slot_offset(*i) + self.data_at),
            Place::Own(path) => File::open(path)?.read_exact_at(buf, self.data_at),
        }
    }
}

/// The journal directory.
///
/// A record that fits goes into a *slot*: [`SLOT_SIZE`] bytes of one file
/// (`slots`) that were written in full once and synced, so writing a
/// record is one `pwrite`, and one `fdatasync` of blocks that already exist
/// (no metadata to commit) puts every record written so far on the disk.
/// A slot is freed by zeroing its magic. Bigger records get a file of
/// their own (created, fsynced, and the directory fsynced).
pub struct Journal {
    dir: PathBuf,
    /// Failed records are kept here for the user.
    unsent: PathBuf,
    next: AtomicU64,
    /// The slots file, open for the mount's life.
    file: Arc<File>,
    slots: Mutex<Slots>,
    /// Wakes the slot maker ([`Journal::make_spares`]).
    need: Condvar,
    /// Sequence numbers of the records written to slots and not synced yet.
    written: Mutex<HashSet<u64>>,
    /// Records replaced by a rewrite not synced yet ([`Journal::supersede`]).
    superseded: Mutex<Vec<Record>>,
}

#[derive(Default)]
struct Slots {
    free: Vec<usize>,
    made: usize,
    /// The slot maker is to end.
    stopped: bool,
    /// A slot was freed, or a record of its own removed, since the last
    /// [`Journal::sync`].
    freed: bool,
    removed_own: bool,
}

/// Bytes of one slot: a header, a file of up to about 60 KiB and its hash.
const SLOT_SIZE: usize = 64 << 10;
/// Slots at most (32 MiB): past them records get files of their own.
const MAX_SLOTS: usize = 512;
/// Free slots the slot maker keeps ready (it starts when half are used), so
/// a close seldom waits while a slot is made (a disk flush).
const SPARE_SLOTS: usize = 64;
/// Slots made at a time, with one sync.
const SLOT_BATCH: usize = 8;
/// Bytes of a record besides its header and content: magic, header length, hash.
const OVERHEAD: usize = MAGIC.len() + 4 + 32;
/// The slots file in the journal directory.
const SLOTS_FILE: &str = "slots";

fn slot_offset(i: usize) -> u64 {
    (i * SLOT_SIZE) as u64
}

impl Journal {
    /// Opens (creating) the journal in `dir` and returns the records a
    /// previous mount left, oldest first. Torn records are dropped.
    pub fn open(dir: &Path) -> std::io::Result<(Journal, Vec<Record>)> {
        std::fs::create_dir_all(dir)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(SLOTS_FILE))?;
        let made = (file.metadata()?.len() / SLOT_SIZE as u64) as usize;
        // Slots being made when the last mount stopped: none was used.
        file.set_len(slot_offset(made))?;
        let file = Arc::new(file);
        let mut found = Vec::new();
        let mut slots = Slots { made, ..Slots::default() };
        let mut buf = vec![0; SLOT_SIZE];
        for i in 0..made {
            file.read_exact_at(&mut buf, slot_offset(i))?;
            match parse_record(&buf, false) {
                Ok((seq, spec, data_at)) => found.push(Record { seq, spec, data_at, at: Place::Slot(file.clone(), i) }),
                Err(_) => slots.free.push(i),
            }
        }
        for item in std::fs::read_dir(dir)? {
            let path = item?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // A record of its own, or a slot of its own as the release
            // before the slots file kept them (a record, then junk).
            let own = name.parse::<u64>().is_ok();
            let old_slot = name.strip_prefix("slot-").is_some_and(|n| n.parse::<usize>().is_ok());
            if name == SLOTS_FILE {
                continue;
            }
            if !own && !old_slot {
                // A temp file or something foreign: not ours to upload.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            match std::fs::read(&path).and_then(|buf| parse_record(&buf, own)) {
                Ok((seq, spec, data_at)) => found.push(Record { seq, spec, data_at, at: Place::Own(path) }),
                Err(e) => {
                    if own {
                        log::warn!("dropping the torn write-back record {} ({e})", path.display());
                    }
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        // What was read is what is on disk from now on: a slot freed (in the
        // page cache) by the last run must not come back after a power cut
        // with a sequence number the new records reuse.
        file.sync_all()?;
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
            file,
            slots: Mutex::new(slots),
            need: Condvar::new(),
            written: Mutex::new(HashSet::new()),
            superseded: Mutex::new(Vec::new()),
        };
        Ok((journal, found))
    }

    /// Writes `size` bytes of `content` as the new version of the file `spec` stores.
    /// A record in a slot is in the page cache on return (a killed mount
    /// loses nothing) and on the disk after the next [`Journal::sync_written`]
    /// (a file's last release calls it: `cmd > file` closes the file twice,
    /// and only the second version needs the disk flush); a record of its
    /// own is synced before returning.
    pub fn write(&self, spec: &UploadSpec, content: &File, size: u64) -> std::io::Result<Record> {
        self.put(spec, size, |buf| content.read_exact_at(buf, 0))
    }

    /// A record of `rec`'s content as `spec` stores it (a name or the
    /// attributes changed while it waited), under a new sequence number.
    /// [`Journal::write`]'s rules apply; `rec` is for [`Journal::supersede`].
    pub fn rewrite(&self, rec: &Record, spec: &UploadSpec) -> std::io::Result<Record> {
        let size = rec.spec.size.unwrap_or(0);
        self.put(spec, size, |buf| rec.read_at(buf))
    }

    /// `rec` was replaced by a record from [`Journal::rewrite`]. If `rec` is
    /// on the disk, it goes once its replacement is too
    /// ([`Journal::sync_written`]), so that a power cut in between leaves
    /// one of the two, never neither (if both come back, the newer one
    /// replaces the older in the queue). If it is not, it goes now: the
    /// replacement is as durable as it was.
    pub fn supersede(&self, rec: Record) {
        let synced = !lock(&self.written).contains(&rec.seq);
        if synced {
            lock(&self.superseded).push(rec);
        } else {
            self.remove(&rec);
        }
    }

    /// Writes a record of `size` bytes that `fill` puts in place.
    fn put(
        &self,
        spec: &UploadSpec,
        size: u64,
        fill: impl FnOnce(&mut [u8]) -> std::io::Result<()>,
    ) -> std::io::Result<Record> {
        let seq = self.next.fetch_add(1, Ordering::SeqCst);
        let spec = UploadSpec { size: Some(size), ..spec.clone() };
        let header = Header { seq, spec };
        let head = rmp_serde::to_vec(&header).map_err(std::io::Error::other)?;
        if head.len() > MAX_HEADER {
            return Err(std::io::Error::other("the file's attributes are too big for the journal"));
        }
        let spec = header.spec;
        let mut buf = Vec::with_capacity(OVERHEAD + head.len() + size as usize);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&(head.len() as u32).to_le_bytes());
        buf.extend_from_slice(&head);
        let data_at = buf.len() as u64;
        buf.resize(buf.len() + size as usize, 0);
        fill(&mut buf[data_at as usize..])?;
        let sum = Sha256::digest(&buf);
        buf.extend_from_slice(&sum);
        if buf.len() <= SLOT_SIZE {
            if let Some(slot) = self.take_slot() {
                return match self.file.write_all_at(&buf, slot_offset(slot)) {
                    Ok(()) => {
                        lock(&self.written).insert(seq);
                        Ok(Record { seq, spec, data_at, at: Place::Slot(self.file.clone(), slot) })
                    }
                    Err(e) => {
                        self.free_slot(slot);
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
        Ok(Record { seq, spec, data_at, at: Place::Own(path) })
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
        match self.make_slots(new..new + 1) {
            Ok(()) => Some(new),
            Err(e) => {
                log::warn!("cannot make write-back slot {new}: {e}");
                None
            }
        }
    }

    /// Writes the slots `range` in full and syncs them (and the file's
    /// length), so later records only overwrite blocks that exist.
    fn make_slots(&self, range: std::ops::Range<usize>) -> std::io::Result<()> {
        let zeros = vec![0u8; range.len() * SLOT_SIZE];
        self.file.write_all_at(&zeros, slot_offset(range.start))?;
        self.file.sync_all()
    }

    /// The slot maker: whenever half the spare slots are used, makes more
    /// (in batches, one sync each) until [`SPARE_SLOTS`] are free or
    /// [`MAX_SLOTS`] exist; returns at [`Journal::stop`] or when a slot
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
                if let Err(e) = self.make_slots(batch.clone()) {
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
        let room = SPARE_SLOTS.saturating_sub(st.free.len()).min(MAX_SLOTS.saturating_sub(st.made)).min(SLOT_BATCH);
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

    fn free_slot(&self, slot: usize) {
        match self.file.write_all_at(&[0u8; 8], slot_offset(slot)) {
            Ok(()) => {
                let mut slots = lock(&self.slots);
                slots.free.push(slot);
                slots.freed = true;
            }
            // Left taken: it is read back (and uploaded) at the next start.
            Err(e) => log::warn!("cannot free write-back slot {slot}: {e}"),
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
        match &rec.at {
            Place::Slot(_, slot) => self.free_slot(*slot),
            Place::Own(path) => match std::fs::remove_file(path) {
                Ok(()) => lock(&self.slots).removed_own = true,
                Err(e) => log::warn!("cannot remove the write-back record {}: {e}", path.display()),
            },
        }
    }

    /// Puts the records written so far on the disk, then removes those
    /// they superseded.
    pub fn sync_written(&self) {
        self.flush(false);
    }

    /// Makes the records written and the removals so far durable.
    pub fn sync(&self) {
        self.flush(true);
    }

    /// One `fdatasync` of the slots file for whatever was written (and, with
    /// `removals`, freed) before it; then the directory for removed records
    /// of their own, and the removal of records superseded before it.
    fn flush(&self, removals: bool) {
        // Taken first: each one's replacement is among the records written by now.
        let superseded = std::mem::take(&mut *lock(&self.superseded));
        let written = {
            let mut w = lock(&self.written);
            let any = !w.is_empty();
            w.clear();
            any
        };
        let (freed, removed_own) = if removals {
            let mut st = lock(&self.slots);
            (std::mem::take(&mut st.freed), std::mem::take(&mut st.removed_own))
        } else {
            (false, false)
        };
        // With only superseded records to remove it syncs too: a slot
        // zeroed now could otherwise reach the disk before the record
        // replacing it, if that was written before another sync began.
        if written || freed || !superseded.is_empty() {
            if let Err(e) = self.file.sync_data() {
                log::warn!("cannot sync the write-back journal {}: {e}", self.dir.display());
                // Kept: read back at the next start, the newer ones replace them.
                lock(&self.superseded).extend(superseded);
                lock(&self.slots).freed |= freed;
                return;
            }
        }
        if removed_own {
            if let Err(e) = sync_dir(&self.dir) {
                log::warn!("cannot sync the write-back journal {}: {e}", self.dir.display());
            }
        }
        for rec in superseded {
            self.remove(&rec);
        }
    }

    /// A closed file that could not be stored and is not in the journal
    /// (too big for it): its staging file `path` moves to `unsent/`, under
    /// a new serial and `name`; returns where.
    pub fn keep_unsent_file(&self, path: &Path, name: &str) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.unsent)?;
        let serial = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dest = self.unsent.join(format!("{serial}-{}", name.replace('/', "%2F")));
        if std::fs::rename(path, &dest).is_err() {
            std::fs::copy(path, &dest)?;
        }
        File::open(&dest)?.sync_all()?;
        sync_dir(&self.unsent)?;
        Ok(dest)
    }

    /// The cluster refused the record for good: its content is kept in
    /// `unsent/` for the user; returns where.
    pub fn keep_unsent(&self, rec: &Record) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.unsent)?;
        let base = match &rec.spec.target {
            Target::Path(p) => p.replace('/', "%2F"),
            Target::New { name, .. } => name.clone(),
            Target::Ino(ino) => format!("inode-{ino}"),
        };
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

/// Reads the record at the start of `buf` (a slot holds one, then junk;
/// a record of its own is `exact`ly one), of either header version:
/// its sequence number, spec and where its content starts.
fn parse_record(buf: &[u8], exact: bool) -> std::io::Result<(u64, UploadSpec, u64)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    if buf.len() < OVERHEAD {
        return Err(bad("not a write-back record"));
    }
    let v1 = match &buf[..MAGIC.len()] {
        m if m == MAGIC => false,
        m if m == MAGIC_V1 => true,
        _ => return Err(bad("not a write-back record")),
    };
    let hlen = u32::from_le_bytes(buf[8..12].try_into().map_err(|_| bad("short header"))?) as usize;
    if hlen > MAX_HEADER || OVERHEAD + hlen > buf.len() {
        return Err(bad("header out of bounds"));
    }
    let head = &buf[12..12 + hlen];
    let header = if v1 {
        rmp_serde::from_slice::<HeaderV1>(head).map(HeaderV1::into_header)
    } else {
        rmp_serde::from_slice::<Header>(head)
    }
    .map_err(|e| bad(&e.to_string()))?;
    let size = header.spec.size.ok_or_else(|| bad("no size"))?;
    let data_at = 12 + hlen;
    let end = usize::try_from(size).ok().and_then(|n| data_at.checked_add(n)).ok_or_else(|| bad("size"))?;
    if end + 32 > buf.len() || (exact && end + 32 != buf.len()) {
        return Err(bad("size mismatch"));
    }
    if Sha256::digest(&buf[..end]).as_slice() != &buf[end..end + 32] {
        return Err(bad("checksum mismatch"));
    }
    match &header.spec.target {
        Target::Path(p) => name::validate(p).map(|_| ()),
        Target::New { name, .. } => name::validate_component(name).map(|_| ()),
        Target::Ino(_) => Ok(()),
    }
    .map_err(|e| bad(&e.to_string()))?;
    Ok((header.seq, header.spec, data_at as u64))
}

/// Writes a record as the release before inodes did (for the tests of an
/// upgrade): the path-based header, the content, the hash of both.
#[cfg(test)]
pub(crate) fn write_v1_record(dir: &Path, seq: u64, name: &str, content: &[u8]) {
    let size = content.len() as u64;
    let header = HeaderV1 { seq, name: name.into(), size, mode: 0o640, mtime_ns: 99, exclusive: false };
    let head = rmp_serde::to_vec(&header).unwrap();
    let mut buf = MAGIC_V1.to_vec();
    buf.extend_from_slice(&(head.len() as u32).to_le_bytes());
    buf.extend_from_slice(&head);
    buf.extend_from_slice(content);
    let sum = Sha256::digest(&buf);
    buf.extend_from_slice(&sum);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{seq:020}")), &buf).unwrap();
}

/// The file a record stores: records of one file go up one at a time, and
/// a newer one replaces an older one still waiting.
#[derive(Clone, Debug, PartialEq, Eq)]
enum FileKey {
    Ino(Ino),
    /// A record of the release before inodes.
    Path(String),
}

impl FileKey {
    fn of(target: &Target) -> FileKey {
        match target {
            Target::Ino(ino) | Target::New { ino, .. } => FileKey::Ino(*ino),
            Target::Path(p) => FileKey::Path(p.clone()),
        }
    }
}

/// What a namespace change about to be made touches: it first waits for
/// the records that could land after it otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Records of this inode.
    File(Ino),
    /// Records of files to be made in this directory (`Target::New`).
    In(Ino),
    /// Every record (unmount, start-up).
    All,
}

impl Scope {
    fn covers(self, target: &Target) -> bool {
        match (self, target) {
            (Scope::All, _) => true,
            // A path from an earlier release may be anywhere: everything
            // waits for it (such records only exist just after an upgrade).
            (_, Target::Path(_)) => true,
            (Scope::File(x), Target::Ino(ino) | Target::New { ino, .. }) => *ino == x,
            (Scope::In(d), Target::New { parent, .. }) => *parent == d,
            (Scope::In(_), Target::Ino(_)) => false,
        }
    }
}

/// What [`Queue::amend`] did.
#[derive(Debug)]
pub enum Amend {
    /// The waiting record was replaced; here is the one it replaced.
    Done(Record),
    /// No record of the file is waiting or going up.
    Nothing,
    /// A record of the file is going up: a change must wait for it.
    Going,
    /// The new record could not be written.
    Failed(std::io::Error),
}

/// Whether a record may go up with others in one exchange
/// (`Cluster::upload_many`): a file by inode of at most
/// [`scs_common::inode::INLINE_MAX`] bytes.
pub fn is_small(rec: &Record) -> bool {
    rec.spec.size.is_some_and(|s| s <= scs_common::inode::INLINE_MAX) && !matches!(rec.spec.target, Target::Path(_))
}

/// Whether small records go up together: not for a while after the
/// leader refused an exchange of many as such (a leader of an earlier
/// release, or a cluster that takes small files one at a time).
#[derive(Default)]
pub struct Batching {
    off_until: Mutex<Option<Instant>>,
}

/// How long small records go up one at a time after an exchange of many failed.
const BATCHING_PAUSE: Duration = Duration::from_secs(30);

impl Batching {
    pub fn allowed(&self) -> bool {
        lock(&self.off_until).is_none_or(|until| Instant::now() >= until)
    }

    /// An exchange of many failed with `e`: if the leader refused it as
    /// such, small files go one at a time for a while. (After any other
    /// failure, a failover say, the next exchange is tried as usual.)
    pub fn failed(&self, e: &scs_common::Error) {
        if matches!(e, scs_common::Error::Protocol(_) | scs_common::Error::Invalid(_)) {
            log::info!("small files go up one at a time for {}s ({e})", BATCHING_PAUSE.as_secs());
            *lock(&self.off_until) = Some(Instant::now() + BATCHING_PAUSE);
        }
    }
}

/// A record to upload, and what its owner wants back with it (the staging
/// copy it came from; nothing for records left by an earlier mount).
pub struct Job<T> {
    pub rec: Record,
    pub owner: Option<T>,
    /// The staging copy's write generation when the snapshot was taken.
    pub gen: u64,
    /// Queued since (the first unsent version of the file, if it replaced
    /// some).
    since: Instant,
    /// Someone waits for it: it goes at once.
    hurry: bool,
}

impl<T> Job<T> {
    pub fn new(rec: Record, owner: Option<T>, gen: u64) -> Job<T> {
        Job { rec, owner, gen, since: Instant::now(), hurry: false }
    }
}

struct QState<T> {
    waiting: VecDeque<Job<T>>,
    /// Files going up right now.
    going: Vec<Target>,
    bytes: u64,
    stopped: bool,
    /// When a job last ended.
    progress: Option<Instant>,
}

impl<T> Default for QState<T> {
    fn default() -> Self {
        QState { waiting: VecDeque::new(), going: Vec::new(), bytes: 0, stopped: false, progress: None }
    }
}

impl<T> QState<T> {
    /// Whether a record of the file `key` is going up.
    fn is_going(&self, key: &FileKey) -> bool {
        self.going.iter().any(|t| FileKey::of(t) == *key)
    }

    /// A close waits for room ([`Queue::push`]).
    fn is_full(&self) -> bool {
        self.waiting.len() >= MAX_WAITING || self.bytes >= MAX_WAITING_BYTES
    }

    fn related(&self, scopes: &[Scope]) -> bool {
        let touches = |t: &Target| scopes.iter().any(|s| s.covers(t));
        self.going.iter().any(touches) || self.waiting.iter().any(|j| touches(&j.rec.spec.target))
    }
}

/// Records waiting for an uploader, in order.
pub struct Queue<T> {
    state: Mutex<QState<T>>,
    /// Wakes one idle uploader ([`Queue::take`]): a job came, or one that
    /// waited for its file's upload may go. Each uploader that takes a job
    /// passes the wake-up on while jobs are left, so a new job costs one
    /// thread's wake-up, not every uploader's.
    work: Condvar,
    /// Wakes those waiting for jobs to end or for room ([`Queue::wait_clear`],
    /// [`Queue::push`], [`Queue::pause`]).
    changed: Condvar,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue { state: Mutex::new(QState::default()), work: Condvar::new(), changed: Condvar::new() }
    }
}

impl<T> Queue<T> {
    /// Adds a job, waiting until `deadline` for room. A job of the same file
    /// still waiting is replaced: it is returned so its record can go.
    ///
    /// # Errors
    /// The job back, when there was no room in time.
    pub fn push(&self, job: Job<T>, deadline: Instant) -> Result<Vec<Job<T>>, Box<Job<T>>> {
        let mut st = lock(&self.state);
        while st.is_full() {
            let now = Instant::now();
            if now >= deadline {
                return Err(Box::new(job));
            }
            st = self.changed.wait_timeout(st, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        Ok(self.add(st, job))
    }

    /// Adds a job whatever the queue holds (records an earlier mount left).
    pub fn push_unbounded(&self, job: Job<T>) -> Vec<Job<T>> {
        self.add(lock(&self.state), job)
    }

    fn add(&self, mut st: std::sync::MutexGuard<'_, QState<T>>, mut job: Job<T>) -> Vec<Job<T>> {
        let key = FileKey::of(&job.rec.spec.target);
        let mut replaced = Vec::new();
        let mut i = 0;
        while i < st.waiting.len() {
            if FileKey::of(&st.waiting[i].rec.spec.target) == key {
                if let Some(old) = st.waiting.remove(i) {
                    st.bytes -= old.rec.spec.size.unwrap_or(0);
                    replaced.push(old);
                }
            } else {
                i += 1;
            }
        }
        // A replaced record that had to create the file passes that on: its
        // replacement is the first to go up. So does its age, so a file
        // closed again and again still goes up.
        for old in &replaced {
            let spec = &mut job.rec.spec;
            spec.exclusive |= old.rec.spec.exclusive;
            if matches!(old.rec.spec.target, Target::New { .. }) && matches!(spec.target, Target::Ino(_)) {
                let old = &old.rec.spec;
                spec.target = old.target.clone();
                (spec.mode, spec.uid, spec.gid, spec.atime_ns) = (old.mode, old.uid, old.gid, old.atime_ns);
                spec.xattrs = old.xattrs.clone();
            }
            job.since = job.since.min(old.since);
            job.hurry |= old.hurry;
        }
        st.bytes += job.rec.spec.size.unwrap_or(0);
        st.waiting.push_back(job);
        self.work.notify_one();
        replaced
    }

    /// The oldest job whose file is not going up already and that waited
    /// [`COALESCE`] (or is awaited); `None` once stopped.
    pub fn take(&self) -> Option<Job<T>> {
        let mut st = lock(&self.state);
        loop {
            if st.stopped {
                return None;
            }
            let now = Instant::now();
            let mut soonest: Option<Instant> = None;
            let mut pos = None;
            for (i, j) in st.waiting.iter().enumerate() {
                let key = FileKey::of(&j.rec.spec.target);
                if st.is_going(&key) {
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
                let was_full = st.is_full();
                st.bytes -= job.rec.spec.size.unwrap_or(0);
                st.going.push(job.rec.spec.target.clone());
                if !st.waiting.is_empty() {
                    self.work.notify_one();
                }
                if was_full {
                    self.changed.notify_all();
                }
                return Some(job);
            }
            st = match soonest {
                Some(t) => self.work.wait_timeout(st, t - now).unwrap_or_else(|p| p.into_inner()).0,
                None => self.work.wait(st).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }

    /// Up to `max` more jobs that `fits` takes, to go up with one just
    /// taken: of files not going up, that waited at least
    /// [`COMPANION_WAIT`] (or are awaited). Never waits.
    pub fn take_more(&self, max: usize, fits: impl Fn(&Record) -> bool) -> Vec<Job<T>> {
        let mut st = lock(&self.state);
        let was_full = st.is_full();
        let now = Instant::now();
        let mut taken = Vec::new();
        let mut i = 0;
        while i < st.waiting.len() && taken.len() < max {
            let j = &st.waiting[i];
            let key = FileKey::of(&j.rec.spec.target);
            let free = !st.is_going(&key);
            if free && (j.hurry || j.since + COMPANION_WAIT <= now) && fits(&j.rec) {
                if let Some(job) = st.waiting.remove(i) {
                    st.bytes -= job.rec.spec.size.unwrap_or(0);
                    st.going.push(job.rec.spec.target.clone());
                    taken.push(job);
                }
            } else {
                i += 1;
            }
        }
        if was_full && !taken.is_empty() {
            self.changed.notify_all();
        }
        taken
    }

    /// The job of `target` taken by [`Queue::take`] is over.
    pub fn done(&self, target: &Target) {
        let key = FileKey::of(target);
        let mut st = lock(&self.state);
        if let Some(i) = st.going.iter().position(|t| FileKey::of(t) == key) {
            st.going.swap_remove(i);
        }
        st.progress = Some(Instant::now());
        if !st.waiting.is_empty() {
            self.work.notify_one();
        }
        self.changed.notify_all();
    }

    /// Waits until no job within any of `scopes` is waiting or going up,
    /// moving those jobs to the front of the queue; false once no job at all
    /// has ended for `idle` (the cluster is unreachable), or the queue stopped.
    pub fn wait_clear(&self, scopes: &[Scope], idle: Duration) -> bool {
        let started = Instant::now();
        let mut st = lock(&self.state);
        if st.related(scopes) {
            let touches = |j: &Job<T>| scopes.iter().any(|s| s.covers(&j.rec.spec.target));
            let (mut first, rest): (VecDeque<Job<T>>, VecDeque<Job<T>>) = st.waiting.drain(..).partition(touches);
            for j in first.iter_mut() {
                j.hurry = true;
            }
            st.waiting = first;
            st.waiting.extend(rest);
            self.work.notify_all();
        }
        while st.related(scopes) {
            let now = Instant::now();
            let since = st.progress.map_or(started, |p| p.max(started));
            if now >= since + idle || st.stopped {
                return false;
            }
            st = self.changed.wait_timeout(st, since + idle - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }

    /// Replaces the record waiting for `ino` with what `rewrite` makes of it
    /// (the same content under a new name or attributes), in its place in
    /// the queue; no uploader takes it meanwhile.
    pub fn amend(&self, ino: Ino, rewrite: impl FnOnce(&Record) -> std::io::Result<Record>) -> Amend {
        let key = FileKey::Ino(ino);
        let mut st = lock(&self.state);
        if st.is_going(&key) {
            return Amend::Going;
        }
        let Some(job) = st.waiting.iter_mut().find(|j| FileKey::of(&j.rec.spec.target) == key) else {
            return Amend::Nothing;
        };
        match rewrite(&job.rec) {
            Ok(new) => Amend::Done(std::mem::replace(&mut job.rec, new)),
            Err(e) => Amend::Failed(e),
        }
    }

    /// Takes the job waiting for `ino` out of the queue (its file is gone
    /// before it went up); `None` when none waits.
    pub fn withdraw(&self, ino: Ino) -> Option<Job<T>> {
        let key = FileKey::Ino(ino);
        let mut st = lock(&self.state);
        let i = st.waiting.iter().position(|j| FileKey::of(&j.rec.spec.target) == key)?;
        let job = st.waiting.remove(i)?;
        st.bytes -= job.rec.spec.size.unwrap_or(0);
        self.changed.notify_all();
        Some(job)
    }

    /// Whether a record within `scope` is waiting or going up.
    pub fn holds(&self, scope: Scope) -> bool {
        lock(&self.state).related(&[scope])
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
        self.work.notify_all();
        self.changed.notify_all();
    }
}

#[cfg(test)]
impl Record {
    fn slot(&self) -> Option<usize> {
        match self.at {
            Place::Slot(_, i) => Some(i),
            Place::Own(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spec for a new file `name` in the root, as inode 1000 + the
    /// name's first byte: one file per first letter.
    fn spec(name: &str) -> UploadSpec {
        let ino = Ino(1000 + u64::from(name.as_bytes()[0]));
        UploadSpec::new(Target::New { parent: Ino::ROOT, name: name.into(), ino }, None, 0o644, 7)
    }

    fn name_of(spec: &UploadSpec) -> &str {
        match &spec.target {
            Target::New { name, .. } => name,
            Target::Path(p) => p,
            Target::Ino(_) => "",
        }
    }

    fn content(dir: &Path, bytes: &[u8]) -> File {
        let p = dir.join("staging");
        std::fs::write(&p, bytes).unwrap();
        File::open(p).unwrap()
    }

    fn job(j: &Journal, dir: &Path, name: &str, bytes: &[u8]) -> Job<()> {
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
        let mut with_attrs = spec("b.txt");
        (with_attrs.uid, with_attrs.gid, with_attrs.mode) = (1000, 100, 0o4750);
        with_attrs.xattrs.insert("user.k".into(), scs_common::inode::Bytes(vec![0, 1, 2]));
        let b = j.write(&with_attrs, &content(dir.path(), b"second!"), 7).unwrap();
        drop(j);
        let (j2, found) = Journal::open(&jdir).unwrap();
        assert_eq!(found.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![a.seq, b.seq]);
        assert_eq!(found[1].spec, UploadSpec { size: Some(7), ..with_attrs }, "the whole spec comes back");
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
        let slots = std::fs::OpenOptions::new().write(true).open(jdir.join(SLOTS_FILE)).unwrap();
        slots.write_all_at(&[0u8; 100], slot_offset(torn.slot().unwrap()) + 3000).unwrap();
        std::fs::write(jdir.join("00000000000000000099"), b"garbage").unwrap();
        drop(j);
        let (j, found) = Journal::open(&jdir).unwrap();
        assert_eq!(found.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![good.seq]);
        assert!(!jdir.join("00000000000000000099").exists());
        // The torn record's slot is free again: the next record takes it.
        let next = j.write(&spec("next"), &content(dir.path(), b"n"), 1).unwrap();
        assert_eq!(next.slot(), torn.slot());
    }

    #[test]
    fn a_slot_file_of_the_release_before_and_a_half_made_slot_are_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("pending");
        let (j, _) = Journal::open(&jdir).unwrap();
        let kept = j.write(&spec("kept"), &content(dir.path(), b"in a slot"), 9).unwrap();
        j.sync();
        drop(j);
        // That release kept each slot in a file of its own: a record, then
        // whatever an older record left.
        let mut old = Vec::new();
        let head = rmp_serde::to_vec(&Header { seq: 3, spec: UploadSpec { size: Some(3), ..spec("old") } }).unwrap();
        old.extend_from_slice(MAGIC);
        old.extend_from_slice(&(head.len() as u32).to_le_bytes());
        old.extend_from_slice(&head);
        old.extend_from_slice(b"old");
        let sum = Sha256::digest(&old);
        old.extend_from_slice(&sum);
        old.resize(SLOT_SIZE, 7);
        std::fs::write(jdir.join("slot-00002"), &old).unwrap();
        std::fs::write(jdir.join("slot-00005"), vec![0u8; SLOT_SIZE]).unwrap();
        // A batch of slots cut short by a crash while it was being made.
        let slots = std::fs::OpenOptions::new().append(true).open(jdir.join(SLOTS_FILE)).unwrap();
        slots.write_all_at(&[0u8; 1000], 0).unwrap();
        drop(slots);
        let len = std::fs::metadata(jdir.join(SLOTS_FILE)).unwrap().len();
        assert_eq!(len % SLOT_SIZE as u64, 1000);
        let (j, found) = Journal::open(&jdir).unwrap();
        assert_eq!(found.iter().map(|r| name_of(&r.spec)).collect::<Vec<_>>(), ["kept", "old"], "by sequence");
        assert_eq!(found[0].slot(), kept.slot());
        let mut got = String::new();
        found[1].content().unwrap().read_to_string(&mut got).unwrap();
        assert_eq!(got, "old");
        assert!(!jdir.join("slot-00005").exists(), "an empty old slot is not kept");
        assert_eq!(std::fs::metadata(jdir.join(SLOTS_FILE)).unwrap().len() % SLOT_SIZE as u64, 0);
        // Gone up: the old slot file goes.
        j.remove(&found[1]);
        j.sync();
        assert!(!jdir.join("slot-00002").exists());
        let next = j.write(&spec("n"), &content(dir.path(), b"n"), 1).unwrap();
        assert!(next.seq > 3, "new records number on from the old ones");
    }

    #[test]
    fn a_big_record_gets_a_file_of_its_own_and_freed_slots_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("pending");
        let (j, _) = Journal::open(&jdir).unwrap();
        let big = vec![9u8; SLOT_SIZE];
        let b = j.write(&spec("big"), &content(dir.path(), &big), big.len() as u64).unwrap();
        let Place::Own(path) = &b.at else { panic!("{b:?} is in a slot") };
        assert!(path.file_name().unwrap().to_str().unwrap().parse::<u64>().is_ok());
        let a = j.write(&spec("a"), &content(dir.path(), b"a"), 1).unwrap();
        j.remove(&a);
        let c = j.write(&spec("c"), &content(dir.path(), b"c"), 1).unwrap();
        assert_eq!(c.slot(), a.slot(), "a freed slot is written again");
        j.sync();
        drop(j);
        let (_, found) = Journal::open(&jdir).unwrap();
        let names: Vec<&str> = found.iter().map(|r| name_of(&r.spec)).collect();
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
            let mut v: Vec<u64> = lock(&j.written).iter().copied().collect();
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
        let slots_made = || std::fs::metadata(jdir.join(SLOTS_FILE)).unwrap().len() / SLOT_SIZE as u64;
        assert_eq!(slots_made(), SPARE_SLOTS as u64);
        assert_eq!(std::fs::read_dir(&jdir).unwrap().count(), 1, "all in one file");
        // Records take ready slots; past half of them more are made.
        let recs: Vec<Record> = (0..SPARE_SLOTS / 2 + 1)
            .map(|i| j.write(&spec(&format!("f{i}")), &content(dir.path(), b"x"), 1).unwrap())
            .collect();
        assert!(recs.iter().all(|r| r.slot().is_some()));
        while free() < SPARE_SLOTS {
            assert!(Instant::now() < until, "the maker did not make more ({} free)", free());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(slots_made(), (SPARE_SLOTS + recs.len()) as u64);
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

    fn ino_of(name: &str) -> Ino {
        match spec(name).target {
            Target::New { ino, .. } => ino,
            _ => unreachable!(),
        }
    }

    fn file(name: &str) -> Scope {
        Scope::File(ino_of(name))
    }

    #[test]
    fn a_newer_record_replaces_a_waiting_one_and_files_go_up_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(&dir.path().join("pending")).unwrap();
        let q = Queue::default();
        let later = Instant::now() + Duration::from_secs(5);
        assert!(q.push(job(&j, dir.path(), "a", b"1"), later).ok().unwrap().is_empty());
        assert!(q.push(job(&j, dir.path(), "b", b"2"), later).ok().unwrap().is_empty());
        let first = q.take().unwrap();
        assert_eq!(name_of(&first.rec.spec), "a");
        // "a" is going up: a newer "a" waits behind it, "b" goes first.
        assert!(q.push(job(&j, dir.path(), "a", b"3"), later).ok().unwrap().is_empty());
        let replaced = q.push(job(&j, dir.path(), "a", b"4"), later).ok().unwrap();
        assert_eq!(replaced.len(), 1);
        let b = q.take().unwrap();
        assert_eq!(name_of(&b.rec.spec), "b");
        assert!(!q.wait_clear(&[file("a")], Duration::from_millis(20)));
        q.done(&first.rec.spec.target);
        let again = q.take().unwrap();
        assert_eq!(name_of(&again.rec.spec), "a");
        let mut got = String::new();
        again.rec.content().unwrap().read_to_string(&mut got).unwrap();
        assert_eq!(got, "4");
        q.done(&again.rec.spec.target);
        q.done(&b.rec.spec.target);
        assert!(q.wait_clear(&[file("a"), file("b")], Duration::ZERO));
        assert!(q.is_empty());
    }

    #[test]
    fn waiting_for_a_directory_covers_the_new_files_in_it_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(&dir.path().join("pending")).unwrap();
        let q = Queue::default();
        let docs = Ino(50);
        let mut new = spec("x");
        new.target = Target::New { parent: docs, name: "x".into(), ino: Ino(77) };
        let rec = j.write(&new, &content(dir.path(), b"1"), 1).unwrap();
        q.push(Job::<()>::new(rec, None, 0), Instant::now()).ok().unwrap();
        let mut old = spec("y");
        old.target = Target::Ino(Ino(78));
        let rec = j.write(&old, &content(dir.path(), b"2"), 1).unwrap();
        q.push(Job::<()>::new(rec, None, 0), Instant::now()).ok().unwrap();
        let soon = || Duration::from_millis(10);
        assert!(q.holds(Scope::In(docs)) && !q.wait_clear(&[Scope::In(docs)], soon()));
        assert!(!q.wait_clear(&[Scope::File(Ino(77))], soon()));
        assert!(!q.wait_clear(&[Scope::File(Ino(78))], soon()));
        assert!(q.wait_clear(&[Scope::In(Ino(51)), Scope::File(Ino(79)), Scope::In(Ino(78))], soon()));
        for _ in 0..2 {
            let job = q.take().unwrap();
            q.done(&job.rec.spec.target);
        }
        assert!(q.wait_clear(&[Scope::All], soon()));
    }

    #[test]
    fn a_record_an_earlier_release_left_is_waited_for_by_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(&dir.path().join("pending")).unwrap();
        let q = Queue::default();
        let mut legacy = spec("p");
        legacy.target = Target::Path("docs/p.txt".into());
        let rec = j.write(&legacy, &content(dir.path(), b"1"), 1).unwrap();
        q.push_unbounded(Job::<()>::new(rec, None, 0));
        assert!(q.holds(Scope::File(Ino(5))) && q.holds(Scope::In(Ino(9))));
    }

    #[test]
    fn small_files_go_one_at_a_time_for_a_while_only_after_the_leader_refused_many() {
        let b = Batching::default();
        b.failed(&scs_common::Error::Unavailable("no leader reachable".into()));
        b.failed(&scs_common::Error::NotLeader(None));
        assert!(b.allowed(), "a failover says nothing of what the leader takes");
        b.failed(&scs_common::Error::Protocol("unknown request".into()));
        assert!(!b.allowed(), "a leader of the release before");
        let b = Batching::default();
        b.failed(&scs_common::Error::Invalid("small files go one at a time here".into()));
        assert!(!b.allowed(), "a cluster whose nodes count max_files");
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
    fn waiting_for_a_file_moves_it_to_the_front_and_gives_up_only_without_progress() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(&dir.path().join("pending")).unwrap();
        let q = Arc::new(Queue::default());
        let later = Instant::now() + Duration::from_secs(5);
        for n in ["a", "b", "c"] {
            q.push(job(&j, dir.path(), n, b"x"), later).ok().unwrap();
        }
        assert!(!q.wait_clear(&[file("c")], Duration::from_millis(10)));
        let c = q.take().unwrap();
        assert_eq!(name_of(&c.rec.spec), "c", "the awaited record goes first");
        // A slow uploader still making progress keeps the waiter waiting.
        let q2 = q.clone();
        let uploader = std::thread::spawn(move || {
            q2.done(&c.rec.spec.target);
            for _ in 0..2 {
                let job = q2.take().unwrap();
                std::thread::sleep(Duration::from_millis(60));
                q2.done(&job.rec.spec.target);
            }
        });
        assert!(q.wait_clear(&[Scope::All], Duration::from_millis(100)), "each record ended within the idle limit");
        uploader.join().unwrap();
    }

    #[test]
    fn a_record_replacing_one_that_makes_the_file_makes_it_too() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(&dir.path().join("pending")).unwrap();
        let q = Queue::default();
        let mut first = job(&j, dir.path(), "new.txt", b"1");
        first.rec.spec.exclusive = true;
        first.rec.spec.uid = 1234;
        q.push_unbounded(first);
        let mut second = job(&j, dir.path(), "new.txt", b"2");
        second.rec.spec.target = Target::Ino(ino_of("new.txt"));
        let replaced = q.push_unbounded(second);
        assert_eq!(replaced.len(), 1);
        let got = q.take().unwrap().rec.spec;
        assert!(got.exclusive, "it is the one that creates the name");
        assert!(matches!(got.target, Target::New { .. }) && got.uid == 1234, "with the owner it was made with");
    }

    #[test]
    fn a_record_of_the_release_before_inodes_still_goes_up_by_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("pending");
        std::fs::create_dir_all(&jdir).unwrap();
        // What that release wrote, byte for byte: magic, header length, the
        // path-based header, the content, the hash of all of it.
        let header =
            HeaderV1 { seq: 41, name: "photos/cat.txt".into(), size: 4, mode: 0o640, mtime_ns: 99, exclusive: true };
        let head = rmp_serde::to_vec(&header).unwrap();
        let mut buf = MAGIC_V1.to_vec();
        buf.extend_from_slice(&(head.len() as u32).to_le_bytes());
        buf.extend_from_slice(&head);
        buf.extend_from_slice(b"meow");
        let sum = Sha256::digest(&buf);
        buf.extend_from_slice(&sum);
        std::fs::write(jdir.join(format!("{:020}", 41)), &buf).unwrap();
        let (j, found) = Journal::open(&jdir).unwrap();
        assert_eq!(found.len(), 1);
        let spec = &found[0].spec;
        assert_eq!(spec.target, Target::Path("photos/cat.txt".into()));
        assert_eq!((spec.size, spec.mode, spec.mtime_ns, spec.exclusive), (Some(4), 0o640, 99, true));
        let mut got = String::new();
        found[0].content().unwrap().read_to_string(&mut got).unwrap();
        assert_eq!(got, "meow");
        let next = j.write(&spec.clone(), &content(dir.path(), b"x"), 1).unwrap();
        assert!(next.seq > 41, "new records number on from it");
    }

    #[test]
    fn an_amended_record_takes_the_waiting_ones_place_and_the_old_one_goes_once_it_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let jdir = dir.path().join("pending");
        let (j, _) = Journal::open(&jdir).unwrap();
        let q: Queue<()> = Queue::default();
        q.push_unbounded(job(&j, dir.path(), "a.tmp", b"aaa"));
        q.push_unbounded(job(&j, dir.path(), "b", b"bbb"));
        j.sync_written();
        let ino = Ino(1000 + u64::from(b'a'));
        // Amended twice: the first amendment, never synced, goes at once.
        let Amend::Done(first) = q.amend(ino, |rec| j.rewrite(rec, &rec.spec)) else { panic!("not amended") };
        j.supersede(first);
        let amended = q.amend(ino, |rec| {
            let mut spec = rec.spec.clone();
            spec.target = Target::New { parent: Ino::ROOT, name: "a".into(), ino };
            spec.mode = 0o600;
            j.rewrite(rec, &spec)
        });
        let Amend::Done(old) = amended else { panic!("{amended:?}") };
        assert_eq!(name_of(&old.spec), "a.tmp");
        j.supersede(old);
        // Before the sync both records are on file: the newer one wins the queue.
        let (_, found) = Journal::open(&jdir).unwrap();
        assert_eq!(found.iter().map(|r| name_of(&r.spec)).collect::<Vec<_>>(), ["a.tmp", "b", "a"]);
        let again: Queue<()> = Queue::default();
        for rec in found {
            again.push_unbounded(Job::new(rec, None, 0));
        }
        let first = again.take().unwrap();
        assert_eq!((name_of(&first.rec.spec), first.rec.spec.mode), ("b", 0o644));
        let second = again.take().unwrap();
        assert_eq!((name_of(&second.rec.spec), second.rec.spec.mode), ("a", 0o600));
        let mut got = String::new();
        second.rec.content().unwrap().read_to_string(&mut got).unwrap();
        assert_eq!(got, "aaa");
        // Synced: the superseded record is gone.
        j.sync_written();
        let (_, found) = Journal::open(&jdir).unwrap();
        assert_eq!(found.iter().map(|r| name_of(&r.spec)).collect::<Vec<_>>(), ["b", "a"]);
        // The queue kept its order: "a" still goes first.
        assert_eq!(name_of(&q.take().unwrap().rec.spec), "a");
    }

    #[test]
    fn a_record_going_up_or_missing_is_not_amended() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(&dir.path().join("pending")).unwrap();
        let q: Queue<()> = Queue::default();
        let ino = Ino(1000 + u64::from(b'a'));
        assert!(matches!(q.amend(ino, |_| panic!("nothing to rewrite")), Amend::Nothing));
        q.push_unbounded(job(&j, dir.path(), "a", b"x"));
        let going = q.take().unwrap();
        assert!(matches!(q.amend(ino, |_| panic!("it is going up")), Amend::Going));
        q.done(&going.rec.spec.target);
        assert!(matches!(q.amend(ino, |_| panic!("nothing waits")), Amend::Nothing));
    }
}
