//! The local copy of a file open for writing ("staging copy"): one per
//! inode in the cache dir, shared by every writer of the file; and the one
//! place that decides how its content reaches the cluster.
//!
//! - A file written sequentially from offset 0 (a new or truncated file:
//!   `cp`, `dd`, a download) **streams** to the cluster while it is being
//!   written, so closing it only waits for the tail.
//! - Otherwise (any other write, two writers, a broken stream) the copy is
//!   **uploaded whole** at close, with the client's retries.
//! - With write-back, a small file is **journaled** at close instead and
//!   goes up in the background ([`super::writeback`]).
//!
//! A file made here and not stored yet ("fresh", see [`super::inodes`])
//! keeps its whole inode here: mode, owner, times and extended attributes
//! set on it before it is stored go up with its content (`Target::New`).
//!
//! Knows nothing of names, caches or the handle table: the caller says
//! where the content goes (a [`Target`], or nowhere once the file is gone).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use bytes::Bytes;
use fuser::Errno;

use scs_common::inode::{SetAttrs, TimeSet, XattrMode};
use scs_common::proto::rpc::{Target, UploadSpec};
use scs_common::{Error, Ino, Inode, CHUNK_SIZE};

use super::cluster::{upload_file, Cluster, UploadStream, Uploaded};
use super::errno::{errno, io_errno, is_final};
use super::lock;
use super::time::now_ns;
use super::writeback::{Journal, Record, WRITE_BACK_MAX};

/// Streaming mtimes this far behind the last write are corrected after upload.
const MTIME_SLACK_NS: i64 = 1_000_000_000;

/// The local copy of a file open for writing.
pub struct Staged {
    pub ino: Ino,
    path: PathBuf,
    /// Replaced once, when the stored content is fetched into `path`.
    file: RwLock<File>,
    /// The stored content has not been fetched yet (see [`Staged::fill_with`]).
    unfetched: AtomicBool,
    size: AtomicU64,
    /// The file as this mount knows it: for a fresh file all of it (what
    /// goes up with the content); for a stored one the inode it was opened
    /// on, with the mtime of the last write.
    meta: Mutex<Inode>,
    /// Its last name was removed (or replaced): nothing is uploaded any more.
    gone: AtomicBool,
    writers: AtomicUsize,
    /// Write-back records of it still to go up.
    journaled: AtomicUsize,
    /// Dropped from the handle table (once).
    retired: AtomicBool,
    /// A write-back upload of it was refused; fsync reports it once.
    refused: Mutex<Option<Errno>>,
    /// Held during an upload, so a write waits for it rather than racing it.
    state: Mutex<State>,
}

/// Where the copy's content stands with respect to the cluster.
enum Content {
    /// The stored content, not fetched yet: opening an existing file for
    /// writing (`touch` does) costs nothing until a write, read or
    /// truncate needs the bytes.
    Unfetched(Inode),
    /// Nothing is owed: the copy holds what was stored (`Some`), or what
    /// it holds went to the journal (`None`).
    Clean(Option<Inode>),
    /// Changed since it was last stored: owed to the cluster.
    Dirty,
    /// The last upload failed (close reported it); release does not retry.
    Failed,
}

/// The streaming upload of the copy's content.
enum Stream {
    /// The copy is empty: a write at offset 0 may start a stream.
    Ready,
    /// Everything written so far went in order from offset 0 into it.
    Going(Streaming),
    /// Not for the copy's current content (the upload at close sends it).
    Off,
}

struct Streaming {
    target: Target,
    spec: UploadSpec,
    /// Opened once a whole chunk is gathered: a small file goes up in one
    /// piece at close (or into the write-back journal) instead.
    up: Option<Box<dyn UploadStream>>,
    /// Small writes (8 KiB from a shell redirect) gathered into chunks of
    /// [`CHUNK_SIZE`] before they go on the wire.
    gathered: Vec<u8>,
    /// Bytes taken in (sent or gathered).
    taken: u64,
}

impl Streaming {
    /// Sends the gathered bytes, opening the upload first if need be.
    fn push_gathered(&mut self, cluster: &dyn Cluster) -> scs_common::Result<()> {
        if self.gathered.is_empty() {
            return Ok(());
        }
        if self.up.is_none() {
            self.up = Some(cluster.start_stream(self.spec.clone())?);
            log::debug!("streaming {} to the cluster as it is written", self.spec.describe());
        }
        let chunk = std::mem::replace(&mut self.gathered, Vec::with_capacity(CHUNK_SIZE));
        match self.up.as_mut() {
            Some(up) => up.push(Bytes::from(chunk)),
            None => Ok(()),
        }
    }
}

struct State {
    content: Content,
    stream: Stream,
    /// Counts changes (writes, truncates), so a write-back upload knows
    /// whether it still matches the copy.
    gen: u64,
    /// The first upload must not replace an existing file (O_EXCL).
    exclusive: bool,
    /// The mtime was set by utimens, not by a write.
    explicit_mtime: bool,
}

/// What [`Staged::sync`] did.
#[derive(Debug)]
pub enum Synced {
    /// Nothing was owed.
    Nothing,
    /// Stored on the cluster.
    Stored(Box<Stored>),
    /// In the write-back journal and queued to go up.
    Journaled,
    /// The file's inode is gone from the cluster (removed elsewhere): there
    /// is nowhere to store it, as for a local file removed while open.
    Gone,
}

/// A file the cluster stored: at which target, as what, and when the
/// request that stored it went out.
#[derive(Debug)]
pub struct Stored {
    pub target: Target,
    pub uploaded: Uploaded,
    pub sent: Instant,
}

/// Where [`Staged::sync`] may put a small file instead of uploading it: the
/// journal, and a `queue(record, write generation)` that hands the record
/// to the uploaders (called with the copy's lock held, so records of one
/// copy are queued in the order they were taken).
pub struct WriteBack<'a> {
    pub journal: &'a Journal,
    pub queue: &'a dyn Fn(Record, u64) -> Result<(), Errno>,
}

/// How a staging copy starts out.
pub enum Start {
    /// A file made here: empty, owed to the cluster, all of its inode here.
    Fresh { meta: Inode, exclusive: bool },
    /// The stored file, emptied by O_TRUNC: a change already.
    Emptied(Inode),
    /// The stored file, fetched on first need.
    Later(Inode),
}

impl Staged {
    /// A staging file at `path` for inode `ino`.
    pub fn new(ino: Ino, path: PathBuf, start: Start) -> std::io::Result<Staged> {
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path)?;
        let (meta, size, content, stream, exclusive) = match start {
            Start::Fresh { meta, exclusive } => (meta, 0, Content::Dirty, Stream::Ready, exclusive),
            Start::Emptied(mut meta) => {
                meta.mtime_ns = now_ns();
                (meta, 0, Content::Dirty, Stream::Ready, false)
            }
            Start::Later(meta) => {
                let stream = if meta.size == 0 { Stream::Ready } else { Stream::Off };
                (meta.clone(), meta.size, Content::Unfetched(meta), stream, false)
            }
        };
        let unfetched = matches!(content, Content::Unfetched(_));
        Ok(Staged {
            ino,
            path,
            file: RwLock::new(file),
            unfetched: AtomicBool::new(unfetched),
            size: AtomicU64::new(size),
            meta: Mutex::new(meta),
            gone: AtomicBool::new(false),
            writers: AtomicUsize::new(1),
            journaled: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            refused: Mutex::new(None),
            state: Mutex::new(State { content, stream, gen: 0, exclusive, explicit_mtime: false }),
        })
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::SeqCst)
    }

    /// The file as this mount knows it, with the copy's size.
    pub fn meta(&self) -> Inode {
        let mut m = lock(&self.meta).clone();
        m.size = self.size();
        m
    }

    pub fn mtime_ns(&self) -> i64 {
        lock(&self.meta).mtime_ns
    }

    /// Changes what this mount knows of a fresh file (its attributes go up
    /// with its content). `f` gets the inode with the copy's size.
    /// Puts the attributes this mount knows of the file (mode, owner,
    /// times, extended attributes) into `spec`, for a record that makes it.
    pub fn attributes_into(&self, spec: &mut UploadSpec) {
        let m = lock(&self.meta);
        (spec.mode, spec.uid, spec.gid) = (m.mode, m.uid, m.gid);
        (spec.atime_ns, spec.mtime_ns) = (m.atime_ns, m.mtime_ns);
        spec.xattrs = m.xattrs.clone();
    }

    /// Runs `f` while no snapshot of the copy is taken ([`Staged::sync`]
    /// asks where the file goes under the same lock): a change of the
    /// file's name or of its waiting record made in `f` is seen by every
    /// snapshot after it, and applies to every record of one before it.
    pub fn hold<R>(&self, f: impl FnOnce() -> R) -> R {
        let _st = lock(&self.state);
        f()
    }

    pub fn update_meta(&self, f: impl FnOnce(&mut Inode)) {
        let mut m = lock(&self.meta);
        f(&mut m);
    }

    /// utimens on a file with a staging copy: its upload carries this mtime
    /// (a write after it sets the time of the write again).
    pub fn set_mtime(&self, mtime_ns: i64) {
        let mut st = lock(&self.state);
        lock(&self.meta).mtime_ns = mtime_ns;
        st.explicit_mtime = true;
    }

    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }

    /// Its last name is gone: the content is never uploaded.
    pub fn mark_gone(&self) {
        self.gone.store(true, Ordering::SeqCst);
    }

    /// Another writer opened the file. Two writers' order is not
    /// sequential: the content goes up whole at close.
    pub fn join_writer(&self) {
        self.writers.fetch_add(1, Ordering::SeqCst);
        lock(&self.state).stream = Stream::Off;
    }

    /// A writer closed; the number still open.
    pub fn leave_writer(&self) -> usize {
        let before = self.writers.fetch_sub(1, Ordering::SeqCst);
        before.saturating_sub(1)
    }

    /// Whether the stored content still has to be fetched before the
    /// staging file can be written, read or truncated to a non-zero size.
    /// Starts the copy over from `stored`, a newer content another mount
    /// stored since this copy took its own, when nothing here is owed (a
    /// lock was taken: what was written under the last holder's lock must
    /// be what is read under this one). False when it holds writes of its
    /// own, or is already at that content.
    pub fn rebase(&self, stored: &Inode) -> bool {
        let mut st = lock(&self.state);
        let base = match &st.content {
            Content::Unfetched(i) | Content::Clean(Some(i)) => i,
            Content::Clean(None) | Content::Dirty | Content::Failed => return false,
        };
        if stored.content <= base.content || !matches!(st.stream, Stream::Ready | Stream::Off) {
            return false;
        }
        {
            let mut m = lock(&self.meta);
            (m.mtime_ns, m.ctime_ns, m.content, m.hash) =
                (stored.mtime_ns, stored.ctime_ns, stored.content, stored.hash);
        }
        self.size.store(stored.size, Ordering::SeqCst);
        st.stream = if stored.size == 0 { Stream::Ready } else { Stream::Off };
        st.content = Content::Unfetched(stored.clone());
        self.unfetched.store(true, Ordering::SeqCst);
        true
    }

    pub fn needs_fill(&self) -> bool {
        self.unfetched.load(Ordering::SeqCst)
    }

    /// Fetches the stored content into the staging file with `fetch(inode,
    /// path)`, which leaves it at `path` and returns what it fetched.
    pub fn fill_with(&self, fetch: impl FnOnce(&Inode, &Path) -> Result<Inode, Errno>) -> Result<(), Errno> {
        let mut st = lock(&self.state);
        let Content::Unfetched(stored) = &st.content else { return Ok(()) };
        let got = fetch(stored, &self.path)?;
        // The fetch may have put a new file at the path: use that one.
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&self.path).map_err(|e| io_errno(&e))?;
        let size = file.metadata().map_err(|e| io_errno(&e))?.len();
        *self.file.write().unwrap_or_else(|p| p.into_inner()) = file;
        self.size.store(size, Ordering::SeqCst);
        lock(&self.meta).mtime_ns = got.mtime_ns;
        st.content = Content::Clean(Some(got));
        self.unfetched.store(false, Ordering::SeqCst);
        Ok(())
    }

    fn file(&self) -> std::sync::RwLockReadGuard<'_, File> {
        self.file.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `data` at `offset` (at the end for `None`: O_APPEND), pushing
    /// it into the upload stream when it continues it. `target` is where
    /// the content goes now (`None` once the file is gone).
    pub fn write(
        &self,
        cluster: &dyn Cluster,
        target: Option<&Target>,
        offset: Option<u64>,
        data: &[u8],
    ) -> Result<u32, Errno> {
        let mut st = lock(&self.state);
        if matches!(st.content, Content::Unfetched(_)) {
            return Err(Errno::EIO);
        }
        let off = offset.unwrap_or_else(|| self.size());
        self.file().write_all_at(data, off).map_err(|e| io_errno(&e))?;
        self.size.fetch_max(off + data.len() as u64, Ordering::SeqCst);
        self.changed(&mut st);
        st.stream = match std::mem::replace(&mut st.stream, Stream::Off) {
            Stream::Ready if off == 0 => match target {
                Some(t) => {
                    let spec = self.spec(t.clone(), None, st.exclusive);
                    let s = Streaming { target: t.clone(), spec, up: None, gathered: Vec::new(), taken: 0 };
                    self.gather(cluster, s, data)
                }
                None => Stream::Off,
            },
            Stream::Going(s) if off == s.taken && target.is_some_and(|t| still_goes_to(&s.target, t)) => {
                self.gather(cluster, s, data)
            }
            _ => Stream::Off,
        };
        Ok(data.len() as u32)
    }

    /// The content changed: owed, with the time of the change.
    fn changed(&self, st: &mut State) {
        let now = now_ns();
        {
            let mut m = lock(&self.meta);
            m.mtime_ns = now;
            m.ctime_ns = now;
        }
        st.content = Content::Dirty;
        st.gen += 1;
        st.explicit_mtime = false;
    }

    /// Takes `data` into the stream, which opens once a chunk is full.
    fn gather(&self, cluster: &dyn Cluster, mut s: Streaming, data: &[u8]) -> Stream {
        s.gathered.extend_from_slice(data);
        s.taken += data.len() as u64;
        if s.gathered.len() < CHUNK_SIZE {
            return Stream::Going(s);
        }
        match s.push_gathered(cluster) {
            Ok(()) => Stream::Going(s),
            Err(e) => {
                log::info!("streaming upload of {} broke off ({e}); it will be uploaded on close", s.spec.describe());
                Stream::Off
            }
        }
    }

    /// Sets the size (truncate or extend with zeros).
    pub fn truncate(&self, size: u64) -> Result<(), Errno> {
        let mut st = lock(&self.state);
        if matches!(st.content, Content::Unfetched(_)) {
            if size != 0 {
                return Err(Errno::EIO);
            }
            // Emptied: the stored content is not needed any more.
            self.unfetched.store(false, Ordering::SeqCst);
        }
        self.file().set_len(size).map_err(|e| io_errno(&e))?;
        self.size.store(size, Ordering::SeqCst);
        self.changed(&mut st);
        // The stream still carries exactly the content only if the size is
        // what it took in.
        let keeps = match &st.stream {
            Stream::Ready => size == 0,
            Stream::Going(s) => s.taken == size,
            Stream::Off => false,
        };
        if !keeps {
            st.stream = Stream::Off;
        }
        Ok(())
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
        let mut buf = super::buffers::take(n);
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
        buf[got..].fill(0);
        Ok(buf)
    }

    /// Whether an upload is still owed (changed, not failed, not gone).
    pub fn owes_upload(&self) -> bool {
        matches!(lock(&self.state).content, Content::Dirty) && !self.is_gone()
    }

    /// The stored inode, when the staging file holds exactly its content.
    /// Its last store failed (close reported it) and nothing stored since.
    pub fn failed(&self) -> bool {
        matches!(lock(&self.state).content, Content::Failed)
    }

    pub fn clean_inode(&self) -> Option<Inode> {
        match &lock(&self.state).content {
            Content::Clean(i) => i.clone(),
            _ => None,
        }
    }

    /// An upload of the copy's content to `target`, with what this mount
    /// knows of the file.
    fn spec(&self, target: Target, size: Option<u64>, exclusive: bool) -> UploadSpec {
        let m = lock(&self.meta);
        // An existing file takes only content and mtime: its attributes
        // need not travel (nor fill a journal slot).
        let xattrs = match target {
            Target::Ino(_) => Default::default(),
            _ => m.xattrs.clone(),
        };
        UploadSpec {
            target,
            size,
            mtime_ns: m.mtime_ns,
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            atime_ns: m.atime_ns,
            xattrs,
            exclusive,
        }
    }

    /// Stores the content if it changed, to where `target` says then
    /// (`None`: the file is gone, nothing is stored): into the write-back journal when there is
    /// one and the file is small (it goes up later), else on the cluster
    /// now, finishing the stream when it carries everything or uploading
    /// the staging file. `before_direct()` runs first when the content goes
    /// to the cluster now (it waits for journaled records of the file, so
    /// the newest content lands last).
    ///
    /// # Errors
    /// What the cluster said (EEXIST for O_EXCL, ENOSPC, EIO when it could
    /// not be reached); the file is not stored then.
    pub fn sync(
        &self,
        cluster: &dyn Cluster,
        target: &dyn Fn() -> Option<Target>,
        write_back: Option<&WriteBack<'_>>,
        before_direct: &dyn Fn() -> Result<(), Errno>,
    ) -> Result<Synced, Errno> {
        let mut st = lock(&self.state);
        if !matches!(st.content, Content::Dirty) {
            return Ok(Synced::Nothing);
        }
        // Asked under the lock: see [`Staged::hold`].
        let Some(target) = target().filter(|_| !self.is_gone()) else {
            // Nobody can see it any more: nothing to store.
            st.content = Content::Clean(None);
            st.stream = Stream::Off;
            return Ok(Synced::Nothing);
        };
        let size = self.size();
        let streaming = matches!(&st.stream, Stream::Going(s) if s.up.is_some());
        if let Some(wb) = write_back.filter(|_| !streaming && size <= WRITE_BACK_MAX) {
            let spec = self.spec(target.clone(), Some(size), st.exclusive);
            match wb.journal.write(&spec, &self.file(), size) {
                Ok(rec) => {
                    self.journaled.fetch_add(1, Ordering::SeqCst);
                    if let Err(e) = (wb.queue)(rec, st.gen) {
                        self.journaled.fetch_sub(1, Ordering::SeqCst);
                        return Err(e);
                    }
                    st.content = Content::Clean(None);
                    st.exclusive = false;
                    // `cmd > file` journals the empty file at its first
                    // close: what cmd writes next may still stream.
                    if size != 0 {
                        st.stream = Stream::Off;
                    }
                    return Ok(Synced::Journaled);
                }
                Err(e) => log::warn!("cannot keep {} in the write-back journal ({e}); storing it now", spec.describe()),
            }
        }
        before_direct()?;
        let sent = Instant::now();
        let stored = match std::mem::replace(&mut st.stream, Stream::Off) {
            Stream::Going(s) if s.up.is_some() && s.taken == size => match self.finish_stream(cluster, &st, s, &target)
            {
                Ok(stored) => stored,
                Err(e) => {
                    st.content = Content::Failed;
                    return Err(e);
                }
            },
            _ => None,
        };
        let res = match stored {
            Some(u) => Ok(u),
            None => upload_file(cluster, self.spec(target.clone(), Some(size), st.exclusive), &self.path),
        };
        let uploaded = match res {
            Ok(u) => u,
            Err(Error::NotFound(e)) if matches!(target, Target::Ino(_)) => {
                log::info!("{} is gone from the cluster ({e}); its content is not stored", target_name(&target));
                self.mark_gone();
                st.content = Content::Clean(None);
                return Ok(Synced::Gone);
            }
            Err(e) => {
                st.content = Content::Failed;
                log::warn!("cannot store {}: {e}", target_name(&target));
                return Err(errno(&e));
            }
        };
        let inode = &uploaded.inode;
        st.content = Content::Clean(Some(inode.clone()));
        st.exclusive = false;
        if size == 0 {
            // `cmd > file` closes a duplicate right after open: the empty
            // file was stored, and what cmd writes next may still stream.
            st.stream = Stream::Ready;
        }
        lock(&self.meta).mtime_ns = inode.mtime_ns;
        Ok(Synced::Stored(Box::new(Stored { target, uploaded, sent })))
    }

    /// Ends a stream that carries the whole content; `None` when it could
    /// not (the content is then uploaded whole).
    ///
    /// # Errors
    /// What the cluster said about the file itself (the upload would fail too).
    fn finish_stream(
        &self,
        cluster: &dyn Cluster,
        st: &State,
        mut s: Streaming,
        target: &Target,
    ) -> Result<Option<Uploaded>, Errno> {
        let finished = s.push_gathered(cluster).and_then(|_| match s.up.take() {
            Some(up) => up.finish(),
            None => Err(Error::Internal("no stream".into())),
        });
        match finished {
            Ok(Uploaded { inode, dirs }) => {
                Ok(Some(Uploaded { inode: self.fix_streamed(cluster, st, inode, &s.spec, target), dirs }))
            }
            // A stream started while the file was fresh, finished after it
            // was stored: the name may have moved on; the whole upload says.
            Err(e) if is_final(&e) && s.target == *target => {
                log::warn!("cannot store {}: {e}", target_name(target));
                Err(errno(&e))
            }
            Err(e) => {
                log::info!("streaming upload of {} failed ({e}); uploading it again", target_name(target));
                Ok(None)
            }
        }
    }

    /// A streamed file was stored with the attributes of the moment the
    /// stream opened: store the current ones where they differ (cp -a sets
    /// owner, mode, xattrs and times on the open file before closing it).
    fn fix_streamed(
        &self,
        cluster: &dyn Cluster,
        st: &State,
        mut stored: Inode,
        spec: &UploadSpec,
        target: &Target,
    ) -> Inode {
        let m = lock(&self.meta).clone();
        let fresh = matches!(spec.target, Target::New { .. }) && matches!(target, Target::New { .. });
        let mut set = SetAttrs::default();
        if fresh {
            set.mode = (m.mode != spec.mode).then_some(m.mode);
            set.uid = (m.uid != spec.uid).then_some(m.uid);
            set.gid = (m.gid != spec.gid).then_some(m.gid);
            set.atime = (m.atime_ns != spec.atime_ns).then_some(TimeSet::At(m.atime_ns));
        }
        let late = m.mtime_ns - spec.mtime_ns > MTIME_SLACK_NS;
        if (st.explicit_mtime || late) && m.mtime_ns != stored.mtime_ns {
            set.mtime = Some(TimeSet::At(m.mtime_ns));
        }
        let what = target_name(target);
        if !set.is_empty() {
            match cluster.set_attr(self.ino, &set) {
                Ok(i) => stored = i,
                Err(e) => log::info!("could not set the attributes of {what}: {e}"),
            }
        }
        if fresh {
            for (name, value) in m.xattrs.iter().filter(|(n, v)| spec.xattrs.get(*n) != Some(*v)) {
                match cluster.set_xattr(self.ino, name, &value.0, XattrMode::Any) {
                    Ok(i) => stored = i,
                    Err(e) => log::info!("could not set {name} on {what}: {e}"),
                }
            }
            for name in spec.xattrs.keys().filter(|n| !m.xattrs.contains_key(*n)) {
                match cluster.remove_xattr(self.ino, name) {
                    Ok(i) => stored = i,
                    Err(e) => log::info!("could not remove {name} from {what}: {e}"),
                }
            }
        }
        stored
    }

    /// A journaled record of it is stored as `inode`: it is on the cluster
    /// now. Returns the write-back records still to go up.
    pub fn record_stored(&self, gen: u64, inode: &Inode) -> usize {
        let mut st = lock(&self.state);
        if st.gen == gen && matches!(st.content, Content::Clean(_)) {
            st.content = Content::Clean(Some(inode.clone()));
        }
        drop(st);
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

    /// Removes the staging file (its content is stored or abandoned).
    pub fn discard(&self) {
        lock(&self.state).stream = Stream::Off;
        let _ = std::fs::remove_file(&self.path);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether a stream opened for `opened` still carries the file at `now`:
/// the same target, or a new file stored since under its inode number (its
/// empty write-back record went up: `cmd > file` closes the file once before
/// writing). The leader puts a new file's content into its inode when the
/// inode is there by then, whatever its name.
fn still_goes_to(opened: &Target, now: &Target) -> bool {
    opened == now || matches!((opened, now), (Target::New { ino, .. }, Target::Ino(i)) if ino == i)
}

/// A target for logs.
fn target_name(t: &Target) -> String {
    match t {
        Target::Path(p) => format!("{p:?}"),
        Target::Ino(i) => format!("inode {i}"),
        Target::New { name, ino, .. } => format!("{name:?} (inode {ino})"),
    }
}
