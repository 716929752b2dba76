//! Open files. A file open for writing has one [`Staged`] copy per inode in
//! the cache dir, shared by every writer, and uploaded when it is flushed
//! (close), fsynced or released, and only when it changed.
//!
//! A file written sequentially from offset 0 (a new or truncated file: `cp`,
//! `dd`, a download) also streams to the cluster while it is being written,
//! so closing it only waits for the tail. Any other write, or a failing
//! stream, drops the stream (the cluster stores nothing from it) and the
//! staging file is uploaded whole on close, with the client's retries.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use fuser::Errno;

use scs_common::proto::rpc::UploadSpec;
use scs_common::{Entry, Kind, CHUNK_SIZE};

use super::content::Item;
use super::errno::{errno, io_errno, is_final};
use super::lock;
use super::remote::Remote;
use super::writeback::{Journal, Record, WRITE_BACK_MAX};
use crate::client::{now_ns, UploadStream};

/// Streaming mtimes this far behind the last write are corrected after upload.
const MTIME_SLACK_NS: i64 = 1_000_000_000;

/// The local copy of a file open for writing.
pub struct Staged {
    pub ino: u64,
    path: PathBuf,
    /// Replaced once, when the stored content is fetched into `path`.
    file: RwLock<File>,
    /// The stored content has not been fetched yet (see [`Staged::fill_with`]).
    unfilled: AtomicBool,
    size: AtomicU64,
    mode: AtomicU32,
    mtime_ns: AtomicI64,
    /// Created here and never uploaded: the cluster does not know it yet.
    fresh: AtomicBool,
    /// Its name was removed (or replaced): nothing is uploaded any more.
    unlinked: AtomicBool,
    writers: AtomicUsize,
    /// Write-back records of it still to go up.
    journaled: AtomicUsize,
    /// Dropped from the handle table (once).
    retired: AtomicBool,
    /// A write-back upload of it was refused; fsync reports it once.
    refused: Mutex<Option<Errno>>,
    io: Mutex<Io>,
}

/// What [`Staged::sync`] did.
pub enum Synced {
    /// Nothing was owed.
    Nothing,
    /// Stored on the cluster.
    Stored(Entry),
    /// In the write-back journal and queued to go up.
    Journaled,
}

/// Where [`Staged::sync`] may put a small file instead of uploading it: the
/// journal, and a `queue(record, write generation)` that hands the record
/// to the uploaders (called with the staging copy's lock held, so records
/// of one copy are queued in the order they were taken).
pub struct WriteBack<'a> {
    pub journal: &'a Journal,
    pub queue: &'a dyn Fn(Record, u64) -> Result<(), Errno>,
}

/// What writes and uploads change, under one lock (held during an upload,
/// so a write waits for it rather than racing it).
struct Io {
    dirty: bool,
    /// The first upload must not replace an existing file (O_EXCL).
    exclusive: bool,
    /// A stream may still carry the content (everything so far was written
    /// in order from offset 0 and went into it).
    stream_ok: bool,
    stream: Option<Streaming>,
    /// Bytes pushed into the stream.
    streamed: u64,
    /// The mtime was set by utimens, not by a write.
    explicit_mtime: bool,
    /// The last upload failed (close reported it); release does not retry.
    failed: bool,
    /// What the last upload stored, while nothing changed since.
    stored: Option<Entry>,
    /// Counts changes (writes, truncates, attributes), so a write-back
    /// upload knows whether it still matches the staging copy.
    gen: u64,
    /// The stored file whose content is still to be fetched: opening an
    /// existing file for writing (`touch` does) costs nothing until a
    /// write, read or truncate needs the bytes.
    unfilled: Option<Entry>,
}

struct Streaming {
    name: String,
    /// Opened once a whole chunk is gathered: a small file goes up in one
    /// piece at close (or into the write-back journal) instead.
    up: Option<UploadStream>,
    spec: UploadSpec,
    mode: u32,
    mtime_ns: i64,
    /// Small writes (8 KiB from a shell redirect) gathered into chunks of
    /// [`CHUNK_SIZE`] before they go on the wire.
    gathered: Vec<u8>,
}

impl Streaming {
    /// Sends the gathered bytes, opening the upload first if need be.
    fn push_gathered(&mut self, remote: &Remote) -> scs_common::Result<()> {
        if self.gathered.is_empty() {
            return Ok(());
        }
        if self.up.is_none() {
            self.up = Some(remote.start_stream(self.spec.clone())?);
            log::debug!("streaming {} to the cluster as it is written", self.name);
        }
        let chunk = std::mem::replace(&mut self.gathered, Vec::with_capacity(CHUNK_SIZE));
        match self.up.as_mut() {
            Some(up) => remote.push(up, Bytes::from(chunk)),
            None => Ok(()),
        }
    }
}

/// How a staging file starts out.
pub enum Start {
    /// Empty, and a change (a new file, or an existing one truncated by open).
    Empty { fresh: bool, exclusive: bool },
    /// The stored file `entry`, fetched on first need.
    Later(Entry),
}

impl Staged {
    /// A staging file at `path` for inode `ino`.
    pub fn new(ino: u64, path: PathBuf, mode: u32, start: Start) -> std::io::Result<Staged> {
        let later = matches!(start, Start::Later(_));
        let (file, size, io, fresh, mtime) = match start {
            Start::Empty { fresh, exclusive } => {
                let file =
                    std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
                let io = Io::new(true, exclusive, true, None);
                (file, 0, io, fresh, now_ns())
            }
            Start::Later(entry) => {
                let file =
                    std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
                let mut io = Io::new(false, false, entry.size == 0, None);
                let (size, mtime) = (entry.size, entry.mtime_ns);
                io.unfilled = Some(entry);
                (file, size, io, false, mtime)
            }
        };
        Ok(Staged {
            ino,
            path,
            file: RwLock::new(file),
            unfilled: AtomicBool::new(later),
            size: AtomicU64::new(size),
            mode: AtomicU32::new(mode & 0o7777),
            mtime_ns: AtomicI64::new(mtime),
            fresh: AtomicBool::new(fresh),
            unlinked: AtomicBool::new(false),
            writers: AtomicUsize::new(1),
            journaled: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            refused: Mutex::new(None),
            io: Mutex::new(io),
        })
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::SeqCst)
    }

    pub fn mode(&self) -> u32 {
        self.mode.load(Ordering::SeqCst)
    }

    pub fn mtime_ns(&self) -> i64 {
        self.mtime_ns.load(Ordering::SeqCst)
    }

    /// Created here and not uploaded yet.
    pub fn is_fresh(&self) -> bool {
        self.fresh.load(Ordering::SeqCst)
    }

    pub fn is_unlinked(&self) -> bool {
        self.unlinked.load(Ordering::SeqCst)
    }

    /// Its name is gone: the content is never uploaded.
    pub fn mark_unlinked(&self) {
        self.unlinked.store(true, Ordering::SeqCst);
    }

    /// Another writer opened the file. Two writers' order is not
    /// sequential: the content goes up whole at close.
    pub fn join_writer(&self) {
        self.writers.fetch_add(1, Ordering::SeqCst);
        let mut io = lock(&self.io);
        io.stream = None;
        io.stream_ok = false;
    }

    /// A writer closed; the number still open.
    pub fn leave_writer(&self) -> usize {
        let before = self.writers.fetch_sub(1, Ordering::SeqCst);
        before.saturating_sub(1)
    }

    /// Whether the stored content still has to be fetched before the
    /// staging file can be written, read or truncated to a non-zero size.
    pub fn needs_fill(&self) -> bool {
        self.unfilled.load(Ordering::SeqCst)
    }

    /// Fetches the stored content into the staging file with `fetch(entry,
    /// path)`, which leaves it at `path` and returns what it fetched.
    pub fn fill_with(&self, fetch: impl FnOnce(&Entry, &Path) -> Result<Entry, Errno>) -> Result<(), Errno> {
        let mut io = lock(&self.io);
        let Some(entry) = io.unfilled.take() else { return Ok(()) };
        let got = match fetch(&entry, &self.path) {
            Ok(got) => got,
            Err(e) => {
                io.unfilled = Some(entry);
                return Err(e);
            }
        };
        // The fetch may have put a new file at the path: use that one.
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&self.path).map_err(|e| io_errno(&e))?;
        let size = file.metadata().map_err(|e| io_errno(&e))?.len();
        *self.file.write().unwrap_or_else(|p| p.into_inner()) = file;
        self.size.store(size, Ordering::SeqCst);
        self.mode.store(got.mode & 0o7777, Ordering::SeqCst);
        self.mtime_ns.store(got.mtime_ns, Ordering::SeqCst);
        io.stored = Some(got);
        self.unfilled.store(false, Ordering::SeqCst);
        Ok(())
    }

    fn file(&self) -> std::sync::RwLockReadGuard<'_, File> {
        self.file.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `data` at `offset` (at the end for `None`: O_APPEND), pushing
    /// it into the upload stream when it continues it. `name` is the file's
    /// current name (`None` once unlinked).
    pub fn write(&self, remote: &Remote, name: Option<&str>, offset: Option<u64>, data: &[u8]) -> Result<u32, Errno> {
        let mut io = lock(&self.io);
        if io.unfilled.is_some() {
            return Err(Errno::EIO);
        }
        let off = offset.unwrap_or_else(|| self.size());
        self.file().write_all_at(data, off).map_err(|e| io_errno(&e))?;
        let end = off + data.len() as u64;
        self.size.fetch_max(end, Ordering::SeqCst);
        self.mtime_ns.store(now_ns(), Ordering::SeqCst);
        io.dirty = true;
        io.gen += 1;
        io.explicit_mtime = false;
        io.stored = None;
        if io.stream_ok {
            match name {
                Some(name) if off == io.streamed => self.stream(&mut io, remote, name, data),
                _ => io.drop_stream(),
            }
        }
        Ok(data.len() as u32)
    }

    /// Gathers `data` for the stream, which opens once a chunk is full.
    fn stream(&self, io: &mut Io, remote: &Remote, name: &str, data: &[u8]) {
        if io.stream.is_none() {
            let spec = UploadSpec {
                name: name.to_string(),
                size: None,
                mode: self.mode(),
                mtime_ns: self.mtime_ns(),
                exclusive: io.exclusive,
            };
            io.stream = Some(Streaming {
                name: name.to_string(),
                up: None,
                spec,
                mode: self.mode(),
                mtime_ns: self.mtime_ns(),
                gathered: Vec::with_capacity(CHUNK_SIZE),
            });
        }
        if let Some(s) = io.stream.as_mut() {
            s.gathered.extend_from_slice(data);
            let sent = if s.gathered.len() >= CHUNK_SIZE { s.push_gathered(remote) } else { Ok(()) };
            match sent {
                Ok(()) => io.streamed += data.len() as u64,
                Err(e) => {
                    log::info!("streaming upload of {name} broke off ({e}); it will be uploaded on close");
                    io.drop_stream();
                }
            }
        }
    }

    /// Sets the size (truncate or extend with zeros).
    pub fn truncate(&self, size: u64) -> Result<(), Errno> {
        let mut io = lock(&self.io);
        if io.unfilled.is_some() {
            if size != 0 {
                return Err(Errno::EIO);
            }
            // Emptied: the stored content is not needed any more.
            io.unfilled = None;
            self.unfilled.store(false, Ordering::SeqCst);
        }
        self.file().set_len(size).map_err(|e| io_errno(&e))?;
        self.size.store(size, Ordering::SeqCst);
        self.mtime_ns.store(now_ns(), Ordering::SeqCst);
        io.dirty = true;
        io.gen += 1;
        io.explicit_mtime = false;
        io.stored = None;
        // The stream still holds exactly the content only if the size is
        // what it carried.
        if size != io.streamed {
            io.drop_stream();
        }
        Ok(())
    }

    /// chmod on the open file: kept for the upload.
    pub fn set_mode(&self, mode: u32) {
        self.mode.store(mode & 0o7777, Ordering::SeqCst);
    }

    /// utimens on the open file: kept for the upload.
    pub fn set_mtime(&self, mtime_ns: i64) {
        self.mtime_ns.store(mtime_ns, Ordering::SeqCst);
        lock(&self.io).explicit_mtime = true;
    }

    /// Reads from the staging file (short at its end).
    pub fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, Errno> {
        if self.needs_fill() {
            return Err(Errno::EIO);
        }
        let size = self.size();
        if offset >= size {
            return Ok(Vec::new());
        }
        let n = len.min(size - offset) as usize;
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match self.file().read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_errno(&e)),
            }
        }
        // A file extended by truncate reads as zeros past its data.
        buf.resize(n, 0);
        Ok(buf)
    }

    /// Whether an upload is still owed (changed, not failed, still named).
    pub fn owes_upload(&self) -> bool {
        let io = lock(&self.io);
        io.dirty && !io.failed && !self.is_unlinked()
    }

    /// The stored entry, when the staging file holds exactly its content.
    pub fn clean_entry(&self) -> Option<Entry> {
        let io = lock(&self.io);
        if io.dirty {
            return None;
        }
        io.stored.clone()
    }

    /// Stores the content if it changed: into the write-back `journal` when
    /// there is one and the file is small (it goes up later), else on the
    /// cluster now, finishing the stream when it carries everything or
    /// uploading the staging file. `before_direct(name)` runs first when the
    /// content goes to the cluster now (it waits for journaled records of
    /// the name, so the newest content lands last).
    ///
    /// # Errors
    /// What the cluster said (EEXIST for O_EXCL, ENOSPC, EIO when it could
    /// not be reached); the file stays dirty.
    pub fn sync(
        &self,
        remote: &Remote,
        name: Option<&str>,
        write_back: Option<&WriteBack<'_>>,
        before_direct: &dyn Fn(&str) -> Result<(), Errno>,
    ) -> Result<Synced, Errno> {
        let mut io = lock(&self.io);
        if !io.dirty {
            return Ok(Synced::Nothing);
        }
        let Some(name) = name.filter(|_| !self.is_unlinked()) else {
            // Nobody can see it any more: nothing to store.
            io.dirty = false;
            io.drop_stream();
            return Ok(Synced::Nothing);
        };
        let size = self.size();
        let streaming = io.stream.as_ref().is_some_and(|s| s.up.is_some());
        if let Some(wb) = write_back.filter(|_| !streaming && size <= WRITE_BACK_MAX) {
            let spec = UploadSpec {
                name: name.to_string(),
                size: Some(size),
                mode: self.mode(),
                mtime_ns: self.mtime_ns(),
                exclusive: io.exclusive,
            };
            match wb.journal.write(&spec, &self.file(), size) {
                Ok(rec) => {
                    self.journaled.fetch_add(1, Ordering::SeqCst);
                    if let Err(e) = (wb.queue)(rec, io.gen) {
                        self.journaled.fetch_sub(1, Ordering::SeqCst);
                        return Err(e);
                    }
                    io.dirty = false;
                    io.exclusive = false;
                    io.failed = false;
                    io.stored = None;
                    if size != 0 {
                        io.drop_stream();
                    }
                    return Ok(Synced::Journaled);
                }
                Err(e) => log::warn!("cannot keep {name} in the write-back journal ({e}); storing it now"),
            }
        }
        before_direct(name)?;
        let mut stored = None;
        if let Some(mut s) = io.stream.take() {
            if s.up.is_some() && s.name == name && io.streamed == size {
                let finished = s.push_gathered(remote).and_then(|_| match s.up.take() {
                    Some(up) => remote.finish(up),
                    None => Err(scs_common::Error::Internal("no stream".into())),
                });
                match finished {
                    Ok(e) => stored = Some(self.fix_streamed(remote, &io, e, s.mode, s.mtime_ns)),
                    Err(e) if is_final(&e) => {
                        io.failed = true;
                        io.drop_stream();
                        log::warn!("cannot store {name}: {e}");
                        return Err(errno(&e));
                    }
                    Err(e) => log::info!("streaming upload of {name} failed ({e}); uploading it again"),
                }
            }
        }
        io.drop_stream();
        let entry = match stored {
            Some(e) => e,
            None => {
                let spec = UploadSpec {
                    name: name.to_string(),
                    size: Some(size),
                    mode: self.mode(),
                    mtime_ns: self.mtime_ns(),
                    exclusive: io.exclusive,
                };
                match remote.upload_file(spec, &self.path) {
                    Ok(e) => e,
                    Err(e) => {
                        io.failed = true;
                        log::warn!("cannot store {name}: {e}");
                        return Err(errno(&e));
                    }
                }
            }
        };
        io.dirty = false;
        io.exclusive = false;
        io.failed = false;
        io.stored = Some(entry.clone());
        if size == 0 {
            // `cmd > file` closes a duplicate right after open: the empty
            // file was stored, and what cmd writes next may still stream.
            io.stream_ok = true;
            io.streamed = 0;
        }
        // Still fresh: the caller says `uploaded` once the entry is in the
        // metadata cache (see there).
        self.mtime_ns.store(entry.mtime_ns, Ordering::SeqCst);
        Ok(Synced::Stored(entry))
    }

    /// A journaled record of it is stored as `entry`: it is on the cluster
    /// now. Returns the write-back records still to go up.
    pub fn record_stored(&self, gen: u64, entry: &Entry) -> usize {
        let mut io = lock(&self.io);
        if io.gen == gen && !io.dirty {
            io.stored = Some(entry.clone());
        }
        drop(io);
        self.journaled.fetch_sub(1, Ordering::SeqCst).saturating_sub(1)
    }

    /// A journaled record of it will not go up (replaced, cancelled or
    /// refused with `refused`). Returns the records still to go up.
    pub fn record_dropped(&self, refused: Option<Errno>) -> usize {
        if let Some(e) = refused {
            *lock(&self.refused) = Some(e);
        }
        self.journaled.fetch_sub(1, Ordering::SeqCst).saturating_sub(1)
    }

    /// The cluster has it now. Called after its entry went into the
    /// metadata cache: a listing taken in between would miss the file,
    /// neither among the fresh ones nor in the cached listing.
    pub fn uploaded(&self) {
        self.fresh.store(false, Ordering::SeqCst);
    }

    /// Write-back records of it still to go up.
    pub fn journaled(&self) -> usize {
        self.journaled.load(Ordering::SeqCst)
    }

    /// Why a write-back upload of it was refused, once.
    pub fn take_refusal(&self) -> Option<Errno> {
        lock(&self.refused).take()
    }

    /// Whether it is still open or still has records to go up.
    pub fn in_use(&self) -> bool {
        self.writers.load(Ordering::SeqCst) > 0 || self.journaled() > 0
    }

    /// True the first time only: the caller drops it from the handle table.
    pub fn retire_once(&self) -> bool {
        !self.retired.swap(true, Ordering::SeqCst)
    }

    /// A streamed file was stored with the mode and mtime of the moment the
    /// stream opened: store the current ones when they differ.
    fn fix_streamed(&self, remote: &Remote, io: &Io, e: Entry, mode: u32, started_ns: i64) -> Entry {
        let new_mode = (self.mode() != mode).then(|| self.mode());
        let late = self.mtime_ns() - started_ns > MTIME_SLACK_NS;
        let new_mtime = (io.explicit_mtime || late).then(|| self.mtime_ns());
        if new_mode.is_none() && new_mtime.is_none() {
            return e;
        }
        match remote.setattr(&e.name, new_mode, new_mtime) {
            Ok(updated) => updated,
            Err(err) => {
                log::info!("could not set the attributes of {}: {err}", e.name);
                e
            }
        }
    }

    /// Removes the staging file (its content is stored or abandoned).
    pub fn discard(&self) {
        lock(&self.io).drop_stream();
        let _ = std::fs::remove_file(&self.path);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Io {
    fn new(dirty: bool, exclusive: bool, stream_ok: bool, stored: Option<Entry>) -> Io {
        Io {
            dirty,
            exclusive,
            stream_ok,
            stream: None,
            streamed: 0,
            explicit_mtime: false,
            failed: false,
            stored,
            unfilled: None,
            gen: 0,
        }
    }

    /// Abandons the stream (the cluster stores nothing from it) for good.
    fn drop_stream(&mut self) {
        self.stream = None;
        self.stream_ok = false;
    }
}

/// One open file handle.
pub struct OpenFile {
    pub ino: u64,
    /// The staging copy, when open for writing.
    pub staged: Option<Arc<Staged>>,
    /// O_APPEND: every write goes to the end.
    pub append: bool,
    /// What a reader reads when nothing is staged: the entry seen at open.
    pub entry: Option<Entry>,
    /// The cache item of `entry`'s content, once read.
    pub item: Mutex<Option<Arc<Item>>>,
}

/// One entry of an open directory listing.
#[derive(Clone, Debug)]
pub struct DirItem {
    pub ino: u64,
    pub kind: Kind,
    pub name: String,
}

/// Open files, open directories, and the staging copy of each inode.
#[derive(Default)]
pub struct Handles {
    files: HashMap<u64, Arc<OpenFile>>,
    dirs: HashMap<u64, Arc<Vec<DirItem>>>,
    staged: HashMap<u64, Arc<Staged>>,
    next: u64,
}

impl Handles {
    fn next_fh(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    pub fn add_file(&mut self, of: OpenFile) -> u64 {
        let fh = self.next_fh();
        self.files.insert(fh, Arc::new(of));
        fh
    }

    /// The entry an open descriptor of `ino` was opened on (an unlinked
    /// file's last word: fstat(2) carries no descriptor to FUSE).
    pub fn opened_entry(&self, ino: u64) -> Option<Entry> {
        self.files.values().filter(|of| of.ino == ino).find_map(|of| of.entry.clone())
    }

    pub fn file(&self, fh: u64) -> Option<Arc<OpenFile>> {
        self.files.get(&fh).cloned()
    }

    pub fn remove_file(&mut self, fh: u64) -> Option<Arc<OpenFile>> {
        self.files.remove(&fh)
    }

    pub fn add_dir(&mut self, items: Vec<DirItem>) -> u64 {
        let fh = self.next_fh();
        self.dirs.insert(fh, Arc::new(items));
        fh
    }

    pub fn dir(&self, fh: u64) -> Option<Arc<Vec<DirItem>>> {
        self.dirs.get(&fh).cloned()
    }

    pub fn remove_dir(&mut self, fh: u64) {
        self.dirs.remove(&fh);
    }

    /// The staging copy of `ino`, if it is open for writing.
    pub fn staged(&self, ino: u64) -> Option<Arc<Staged>> {
        self.staged.get(&ino).cloned()
    }

    pub fn put_staged(&mut self, s: Arc<Staged>) {
        self.staged.insert(s.ino, s);
    }

    /// Drops the staging copy of its inode, if it is still this one.
    pub fn retire_staged(&mut self, s: &Arc<Staged>) {
        if self.staged.get(&s.ino).is_some_and(|cur| Arc::ptr_eq(cur, s)) {
            self.staged.remove(&s.ino);
        }
    }

    /// Every staging copy.
    pub fn all_staged(&self) -> Vec<Arc<Staged>> {
        self.staged.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Client, ClientOptions};
    use scs_common::{ContentHash, Version};

    /// A remote that is never reached: these tests write no named file.
    fn offline(dir: &Path) -> (tokio::runtime::Runtime, Remote) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let key = dir.join("key");
        std::fs::write(&key, [7u8; 32]).unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let opts = ClientOptions {
            group: "239.255.1.1:9".parse().unwrap(),
            iface: "127.0.0.1".parse().unwrap(),
            node: Some("127.0.0.1:9".into()),
            secret_file: key,
            retry_window: std::time::Duration::from_millis(100),
        };
        let client = Arc::new(Client::new(opts).unwrap());
        let remote = Remote::new(rt.handle().clone(), client, std::time::Duration::from_millis(100));
        (rt, remote)
    }

    fn stored(size: u64) -> Entry {
        Entry {
            name: "f".into(),
            version: Version::ZERO,
            kind: Kind::File,
            size,
            hash: ContentHash::default(),
            mode: 0o600,
            mtime_ns: 42,
            deleted: false,
            holders: Vec::new(),
        }
    }

    #[test]
    fn writes_at_offsets_appends_and_truncation_shape_the_staging_copy() {
        let dir = tempfile::tempdir().unwrap();
        let (_rt, remote) = offline(dir.path());
        let s = Staged::new(2, dir.path().join("w"), 0o644, Start::Empty { fresh: true, exclusive: false }).unwrap();
        assert!(s.is_fresh() && s.owes_upload(), "a new file is owed to the cluster even when empty");
        assert_eq!(s.write(&remote, None, Some(0), b"hello").unwrap(), 5);
        s.write(&remote, None, None, b" world").unwrap();
        s.write(&remote, None, Some(0), b"J").unwrap();
        assert_eq!(s.read(0, 100).unwrap(), b"Jello world");
        assert_eq!(s.read(6, 3).unwrap(), b"wor");
        assert!(s.read(11, 10).unwrap().is_empty());
        s.truncate(3).unwrap();
        assert_eq!((s.size(), s.read(0, 100).unwrap()), (3, b"Jel".to_vec()));
        s.truncate(5).unwrap();
        assert_eq!(s.read(0, 100).unwrap(), b"Jel\0\0");
    }

    #[test]
    fn an_unlinked_file_is_never_uploaded() {
        let dir = tempfile::tempdir().unwrap();
        let (_rt, remote) = offline(dir.path());
        let s = Staged::new(2, dir.path().join("w"), 0o644, Start::Empty { fresh: true, exclusive: false }).unwrap();
        s.write(&remote, Some("f"), Some(5), b"x").unwrap();
        s.mark_unlinked();
        assert!(!s.owes_upload());
        let synced = s.sync(&remote, Some("f"), None, &|_| Ok(())).unwrap();
        assert!(matches!(synced, Synced::Nothing), "nothing is sent for a removed name");
        s.discard();
        assert!(!dir.path().join("w").exists());
    }

    #[test]
    fn an_existing_file_is_fetched_only_when_its_bytes_are_needed() {
        let dir = tempfile::tempdir().unwrap();
        let s = Staged::new(3, dir.path().join("w"), 0o644, Start::Later(stored(4))).unwrap();
        assert!(s.needs_fill() && !s.owes_upload());
        assert_eq!((s.size(), s.mode(), s.mtime_ns()), (4, 0o644, 42), "looks like the stored file");
        assert_eq!(s.clean_entry(), None, "an unfetched copy is never cached");
        let failed = s.fill_with(|_, _| Err(Errno::EIO));
        assert_eq!(failed, Err(Errno::EIO));
        assert!(s.needs_fill(), "a failed fetch is tried again later");
        s.fill_with(|e, path| {
            std::fs::write(path, b"data").unwrap();
            Ok(e.clone())
        })
        .unwrap();
        assert_eq!(s.read(0, 10).unwrap(), b"data");
        assert_eq!(s.clean_entry().map(|e| e.size), Some(4));
    }

    #[test]
    fn truncating_an_unfetched_file_to_zero_needs_no_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let s = Staged::new(3, dir.path().join("w"), 0o644, Start::Later(stored(1 << 30))).unwrap();
        assert_eq!(s.truncate(10), Err(Errno::EIO), "a non-zero size needs the content first");
        s.truncate(0).unwrap();
        assert!(!s.needs_fill() && s.owes_upload());
        assert_eq!(s.size(), 0);
    }

    /// A write-back journal in a test dir, and a queue that keeps what it
    /// is handed.
    struct Kept {
        journal: Journal,
        queued: std::cell::RefCell<Vec<(Record, u64)>>,
    }

    impl Kept {
        fn new(dir: &Path) -> Kept {
            Kept { journal: Journal::open(&dir.join("pending")).unwrap().0, queued: Default::default() }
        }

        fn sync(
            &self,
            s: &Staged,
            remote: &Remote,
            name: &str,
            before_direct: &dyn Fn(&str) -> Result<(), Errno>,
        ) -> Result<Synced, Errno> {
            let queue = |rec: Record, gen: u64| {
                self.queued.borrow_mut().push((rec, gen));
                Ok(())
            };
            s.sync(remote, Some(name), Some(&WriteBack { journal: &self.journal, queue: &queue }), before_direct)
        }
    }

    #[test]
    fn with_a_journal_a_small_file_is_kept_here_and_a_big_one_goes_up_now() {
        let dir = tempfile::tempdir().unwrap();
        let (_rt, remote) = offline(dir.path());
        let kept = Kept::new(dir.path());
        let s = Staged::new(2, dir.path().join("w"), 0o640, Start::Empty { fresh: true, exclusive: true }).unwrap();
        s.write(&remote, Some("a.txt"), Some(0), b"small").unwrap();
        let synced = kept.sync(&s, &remote, "a.txt", &|_| panic!("not now")).unwrap();
        assert!(matches!(synced, Synced::Journaled), "a small file goes to the journal");
        let (rec, gen) = kept.queued.borrow_mut().pop().unwrap();
        assert_eq!(
            (rec.spec.name.as_str(), rec.spec.size, rec.spec.mode, rec.spec.exclusive),
            ("a.txt", Some(5), 0o640, true)
        );
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut rec.content().unwrap(), &mut got).unwrap();
        assert_eq!(got, b"small");
        assert!(!s.owes_upload() && s.journaled() == 1 && s.is_fresh(), "owed by the journal now");
        // Stored while unchanged: the staging copy is a clean copy of it.
        let mut e = stored(5);
        e.name = "a.txt".into();
        s.uploaded();
        assert_eq!(s.record_stored(gen, &e), 0);
        assert_eq!(s.clean_entry(), Some(e), "the staging copy is what was stored");
        assert!(!s.is_fresh());

        // Past the write-back size the content goes up at once, after what
        // the journal holds for the name (it fails here: no cluster).
        s.truncate(WRITE_BACK_MAX + 1).unwrap();
        let asked = std::cell::Cell::new(false);
        let res = kept.sync(&s, &remote, "a.txt", &|name| {
            assert_eq!(name, "a.txt");
            asked.set(true);
            Err(Errno::EIO)
        });
        assert!(asked.get() && matches!(res, Err(Errno::EIO)));
        assert!(s.owes_upload(), "still owed after a failure");
    }

    #[test]
    fn a_record_stored_after_newer_writes_does_not_make_the_copy_clean() {
        let dir = tempfile::tempdir().unwrap();
        let (_rt, remote) = offline(dir.path());
        let kept = Kept::new(dir.path());
        let s = Staged::new(2, dir.path().join("w"), 0o644, Start::Empty { fresh: true, exclusive: false }).unwrap();
        s.write(&remote, Some("b"), Some(0), b"one").unwrap();
        assert!(matches!(kept.sync(&s, &remote, "b", &|_| Ok(())), Ok(Synced::Journaled)));
        let gen = kept.queued.borrow()[0].1;
        s.write(&remote, Some("b"), Some(0), b"two").unwrap();
        assert_eq!(s.record_stored(gen, &stored(3)), 0);
        assert_eq!(s.clean_entry(), None, "the copy holds newer bytes than what was stored");
        assert!(s.owes_upload());
    }
}
