//! What each file system request does, as plain functions returning
//! `Result<_, Errno>`: the FUSE callbacks in `mod.rs` only call these and
//! reply.
//!
//! Locks: the inode table, the metadata cache and the handle table are each
//! taken alone and briefly (never two at once, never across a call to the
//! cluster). `opening`, which serializes opening and retiring writers, is
//! taken before any of them and may be held across an upload.

use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo, TimeOrNow};

use scs_common::{name, Entry, Error, Kind, Version};

use super::cache::MetaCache;
use super::caller::Caller;
use super::content::ContentCache;
use super::errno::{errno, io_errno, is_final};
use super::handles::{DirItem, Handles, OpenFile, Staged, Start, Synced, WriteBack};
use super::inodes::{Inodes, ROOT};
use super::lock;
use super::remote::Remote;
use super::writeback::{Job, Journal, Queue, Record};
use crate::client::now_ns;

/// How long the kernel and this mount trust attributes, entries and listings.
pub const TTL: Duration = Duration::from_secs(1);
/// `st_blksize`: programs size their buffers by it (cp, cat, stdio).
const BLKSIZE: u32 = 1 << 20;
/// Blocks reported by statfs are this big.
const STATFS_BSIZE: u64 = 4096;
/// Inodes reported by statfs when no node limits its files.
const MANY_FILES: u64 = 1 << 32;
/// A directory listed before with at most this many children is listed
/// again to answer a lookup in it, rather than asking for one name.
const RELIST_MAX: usize = 4096;
/// Threads uploading write-back records.
const UPLOADERS: usize = 6;
/// A change waiting for the write-back records it depends on fails with
/// EIO once no record at all went up for this long (the cluster is
/// unreachable); closing a file waits this long for room in the queue.
const SETTLE_LIMIT: Duration = Duration::from_secs(8);
/// How long a look at whether the cluster has room for one more file lasts...
const ROOM_TTL: Duration = Duration::from_secs(2);
/// ... and how long a create waits for it.
const ROOM_ASK: Duration = Duration::from_millis(500);
/// Unmounting (and starting) waits for the write-back records to go up
/// until none did for this long; what is left goes up at the next start.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// What a file or directory looks like, before it becomes a `FileAttr`.
#[derive(Clone, Copy, Debug)]
struct Shape {
    kind: Kind,
    size: u64,
    perm: u32,
    mtime_ns: i64,
    ctime_ns: i64,
    nlink: u32,
}

/// Free space and inodes, for statfs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Space {
    pub blocks: u64,
    pub bfree: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
}

/// The state of a mount and every operation on it.
pub struct Core {
    remote: Remote,
    content: ContentCache,
    staging: PathBuf,
    /// Where the cluster is mounted (canonical), as `/proc` shows its files.
    mountpoint: PathBuf,
    caller: Caller,
    uid: u32,
    gid: u32,
    started_ns: i64,
    inodes: Mutex<Inodes>,
    meta: Mutex<MetaCache>,
    handles: Mutex<Handles>,
    /// Serializes opening and retiring writers: one staging copy per inode.
    opening: Mutex<()>,
    serial: AtomicU64,
    /// Closing a small file puts it here (with `--write-back`)...
    journal: Journal,
    write_back: bool,
    /// ... and the uploaders take it from here.
    queue: Queue,
    /// When the cluster was last asked how many more files fit, and how
    /// many of those are left after the creates since.
    room: Mutex<Option<(Instant, u64)>>,
}

impl Core {
    /// A mount of the cluster behind `remote`, staging writes in `staging`;
    /// closed small files go to `journal` first when `write_back`.
    pub fn new(
        remote: Remote,
        content: ContentCache,
        staging: PathBuf,
        mountpoint: PathBuf,
        journal: Journal,
        write_back: bool,
    ) -> Core {
        // SAFETY: getuid/getgid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Core {
            remote,
            content,
            staging,
            mountpoint,
            caller: Caller::start(),
            uid,
            gid,
            started_ns: now_ns(),
            inodes: Mutex::new(Inodes::new()),
            meta: Mutex::new(MetaCache::new(TTL)),
            handles: Mutex::new(Handles::default()),
            opening: Mutex::new(()),
            serial: AtomicU64::new(0),
            journal,
            write_back,
            queue: Queue::default(),
            room: Mutex::new(None),
        }
    }

    // ----- names and entries -----

    fn path_of(&self, ino: u64) -> Result<String, Errno> {
        let t = lock(&self.inodes);
        t.path(ino).map(str::to_string).ok_or(Errno::ENOENT)
    }

    /// The name of `name` in directory `parent`, checked.
    fn child_path(&self, parent: u64, name: &OsStr) -> Result<String, Errno> {
        let name = name.to_str().ok_or(Errno::EINVAL)?;
        let dir = self.path_of(parent)?;
        let path = name::join(&dir, name);
        name::validate(&path).map_err(|e| errno(&e))?;
        Ok(path)
    }

    fn staged_of(&self, ino: Option<u64>) -> Option<Arc<Staged>> {
        let ino = ino?;
        let h = lock(&self.handles);
        h.staged(ino).filter(|s| !s.is_unlinked())
    }

    fn ino_of(&self, path: &str) -> Option<u64> {
        lock(&self.inodes).ino(path)
    }

    /// The entry of `path`, from the cache while fresh.
    fn entry(&self, path: &str) -> Result<Option<Entry>, Errno> {
        let now = Instant::now();
        let (cached, listed, asked) = {
            let m = lock(&self.meta);
            (m.entry(path, now).or_else(|| m.child(path, now)), m.listed_len(name::parent(path)), m.asking())
        };
        if let Some(e) = cached {
            return Ok(e);
        }
        // A small directory that was listed (a copy going into it, names
        // looked up one after another): one listing answers them all.
        if !path.is_empty() && listed.is_some_and(|n| n <= RELIST_MAX) {
            let l = self.listing(name::parent(path))?;
            return Ok(l.iter().find(|e| e.name == path).cloned());
        }
        let e = self.remote.stat(path).map_err(|e| fail("stat", path, e))?;
        Ok(lock(&self.meta).put_asked_entry(path, e, now, asked))
    }

    fn listing(&self, dir: &str) -> Result<Arc<Vec<Entry>>, Errno> {
        let now = Instant::now();
        let (cached, asked) = {
            let m = lock(&self.meta);
            (m.listing(dir, now), m.asking())
        };
        if let Some(l) = cached {
            return Ok(l);
        }
        let children = self.remote.list(dir).map_err(|e| fail("list", dir, e))?;
        Ok(lock(&self.meta).put_asked_listing(dir, children, now, asked))
    }

    /// Removing the last child of a directory that only exists because of
    /// its children (made by an upload of "a/b.txt") would make it vanish:
    /// store it as a real directory first, as a local file system keeps it.
    fn keep_parent(&self, path: &str) -> Result<(), Errno> {
        let dir = name::parent(path);
        if dir.is_empty() {
            return Ok(());
        }
        match self.entry(dir)? {
            Some(e) if e.kind == Kind::Dir && e.version == Version::ZERO => {
                let e = self.remote.setattr(dir, None, Some(e.mtime_ns)).map_err(|e| fail("setattr", dir, e))?;
                lock(&self.meta).put_entry(dir, Some(e), Instant::now());
            }
            _ => {}
        }
        Ok(())
    }

    /// Something was created in, removed from, or renamed into `parent_of`'s directory.
    fn touched(&self, path: &str) {
        let now = now_ns();
        let mut m = lock(&self.meta);
        m.invalidate(path);
        m.touch_dir(name::parent(path), now);
    }

    // ----- attributes -----

    fn shape(&self, path: &str, e: &Entry) -> Shape {
        let times = lock(&self.meta).times(path);
        let mut mtime = e.mtime_ns;
        if path.is_empty() && mtime == 0 {
            mtime = self.started_ns;
        }
        if e.kind == Kind::Dir {
            if let Some(m) = times.mtime_ns {
                mtime = mtime.max(m);
            }
        }
        let dir = e.kind == Kind::Dir;
        Shape {
            kind: e.kind,
            size: if dir { 0 } else { e.size },
            perm: e.mode & 0o7777,
            mtime_ns: mtime,
            ctime_ns: times.ctime_ns.map_or(mtime, |c| c.max(mtime)),
            nlink: if dir { 2 } else { 1 },
        }
    }

    fn staged_shape(&self, path: Option<&str>, s: &Staged) -> Shape {
        let ctime = path.and_then(|p| lock(&self.meta).times(p).ctime_ns);
        let mtime = s.mtime_ns();
        Shape {
            kind: Kind::File,
            size: s.size(),
            perm: s.mode(),
            mtime_ns: mtime,
            ctime_ns: ctime.map_or(mtime, |c| c.max(mtime)),
            nlink: if path.is_some() { 1 } else { 0 },
        }
    }

    fn attr(&self, ino: u64, s: &Shape) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: s.size,
            blocks: s.size.div_ceil(512),
            atime: system_time(s.mtime_ns),
            mtime: system_time(s.mtime_ns),
            ctime: system_time(s.ctime_ns),
            crtime: system_time(s.mtime_ns),
            kind: match s.kind {
                Kind::File => FileType::RegularFile,
                Kind::Dir => FileType::Directory,
            },
            perm: s.perm as u16,
            nlink: s.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLKSIZE,
            flags: 0,
        }
    }

    // ----- requests -----

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        // No stored name can be anything but UTF-8.
        let name = name.to_str().ok_or(Errno::ENOENT)?;
        let path = name::join(&self.path_of(parent)?, name);
        name::validate(&path).map_err(|e| errno(&e))?;
        if let Some(s) = self.staged_of(self.ino_of(&path)) {
            let ino = lock(&self.inodes).lookup(&path, Kind::File);
            return Ok(self.attr(ino, &self.staged_shape(Some(&path), &s)));
        }
        let e = self.entry(&path)?.ok_or(Errno::ENOENT)?;
        let ino = lock(&self.inodes).lookup(&path, e.kind);
        Ok(self.attr(ino, &self.shape(&path, &e)))
    }

    pub fn forget(&self, ino: u64, n: u64) -> Result<(), Errno> {
        // A file written here and not on the cluster yet keeps its name.
        let keep = lock(&self.handles).staged(ino).is_some();
        lock(&self.inodes).forget(ino, n, keep);
        Ok(())
    }

    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> Result<FileAttr, Errno> {
        let (path, kind) = {
            let t = lock(&self.inodes);
            (t.path(ino).map(str::to_string), t.kind(ino))
        };
        let kind = kind.ok_or(Errno::ENOENT)?;
        let staged = lock(&self.handles).staged(ino);
        let Some(path) = path else {
            // Unlinked while open: what the handle knows.
            if let Some(s) = staged {
                return Ok(self.attr(ino, &self.staged_shape(None, &s)));
            }
            let e = {
                let h = lock(&self.handles);
                let of = fh.and_then(|fh| h.file(fh));
                of.and_then(|of| of.entry.clone()).or_else(|| h.opened_entry(ino)).ok_or(Errno::ENOENT)?
            };
            let mut shape = self.shape(&e.name, &e);
            shape.nlink = 0;
            return Ok(self.attr(ino, &shape));
        };
        if let Some(s) = staged.filter(|s| !s.is_unlinked()) {
            return Ok(self.attr(ino, &self.staged_shape(Some(&path), &s)));
        }
        let e = self.entry(&path)?.ok_or(Errno::ENOENT)?;
        if e.kind != kind {
            // Replaced by another kind elsewhere: a new lookup gives a new inode.
            return Err(Errno::ENOENT);
        }
        Ok(self.attr(ino, &self.shape(&path, &e)))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        mtime: Option<TimeOrNow>,
        fh: Option<u64>,
    ) -> Result<FileAttr, Errno> {
        // Files belong to the mounting user; only a no-op chown is allowed.
        if uid.is_some_and(|u| u != self.uid) || gid.is_some_and(|g| g != self.gid) {
            return Err(Errno::EPERM);
        }
        let path = lock(&self.inodes).path(ino).map(str::to_string);
        if let Some(p) = &path {
            self.settle(&[p])?;
        }
        let staged = lock(&self.handles).staged(ino);
        if let Some(size) = size {
            match (&staged, &path) {
                (Some(s), _) => {
                    if size != 0 {
                        self.fill(s)?;
                    }
                    s.truncate(size)?
                }
                (None, Some(p)) => self.truncate_path(ino, p, size)?,
                (None, None) => return Err(Errno::ENOENT),
            }
        }
        let mode = mode.map(|m| m & 0o7777);
        let mtime_ns = mtime.map(|t| match t {
            TimeOrNow::Now => now_ns(),
            TimeOrNow::SpecificTime(t) => ns_of(t),
        });
        if mode.is_some() || mtime_ns.is_some() {
            if let Some(s) = &staged {
                if let Some(m) = mode {
                    s.set_mode(m);
                }
                if let Some(t) = mtime_ns {
                    s.set_mtime(t);
                }
            }
            // A file not stored yet takes its attributes with its upload.
            let stored = staged.as_ref().is_none_or(|s| !s.is_fresh() && !s.is_unlinked());
            if let Some(p) = path.as_deref().filter(|p| stored && !p.is_empty()) {
                let e = self.remote.setattr(p, mode, mtime_ns).map_err(|e| fail("setattr", p, e))?;
                let mut m = lock(&self.meta);
                m.put_entry(p, Some(e), Instant::now());
                if mtime_ns.is_some() {
                    m.clear_mtime(p);
                }
            }
        }
        if let Some(p) = &path {
            lock(&self.meta).touch_ctime(p, now_ns());
        }
        self.getattr(ino, fh)
    }

    /// truncate(2) of a file nobody has open for writing here.
    fn truncate_path(&self, ino: u64, path: &str, size: u64) -> Result<(), Errno> {
        let s = self.open_writer(ino, path, size == 0)?;
        let res = self.fill(&s).and_then(|_| s.truncate(size)).and_then(|_| self.sync_staged(&s));
        self.close_writer(&s);
        res
    }

    pub fn mknod(&self, parent: u64, name: &OsStr, mode: u32) -> Result<FileAttr, Errno> {
        // Only regular files exist here: no devices, fifos or sockets.
        if mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Errno::EPERM);
        }
        let (attr, fh) = self.create(parent, name, mode, libc::O_WRONLY | libc::O_EXCL)?;
        let res = self.flush(fh, 0); // pid 0: no process holds it
        let _ = self.release(fh);
        res.map(|_| attr)
    }

    pub fn mkdir(&self, parent: u64, name: &OsStr, mode: u32) -> Result<FileAttr, Errno> {
        let path = self.child_path(parent, name)?;
        let e = self.remote.mkdir(&path, mode & 0o7777).map_err(|e| fail("mkdir", &path, e))?;
        let ino = lock(&self.inodes).lookup(&path, Kind::Dir);
        {
            let (now, mut m) = (Instant::now(), lock(&self.meta));
            m.touch_dir(name::parent(&path), now_ns());
            m.forget_times(&path);
            m.put_child(&path, Some(e.clone()), now);
            // Just made: nothing is in it (names looked up in it next need
            // no request).
            m.put_listing(&path, Vec::new(), now);
        }
        Ok(self.attr(ino, &self.shape(&path, &e)))
    }

    pub fn unlink(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let path = self.child_path(parent, name)?;
        let staged = self.staged_of(self.ino_of(&path));
        // Created here and on the cluster not yet: from now on nothing of it
        // goes up (uploaders drop its waiting records). A stored file is
        // deleted first and only then dropped here, so a failed delete
        // loses nothing.
        let fresh = staged.as_ref().filter(|s| s.is_fresh());
        if let Some(s) = fresh {
            s.mark_unlinked();
        }
        // What is going up finishes first; then the cluster may have it.
        self.settle(&[&path])?;
        if !fresh.is_some_and(|s| s.is_fresh()) {
            self.keep_parent(&path)?;
            self.remote.delete(&path, Kind::File).map_err(|e| fail("unlink", &path, e))?;
        }
        if let Some(s) = &staged {
            s.mark_unlinked();
        }
        lock(&self.inodes).unlink(&path);
        self.touched(&path);
        let mut m = lock(&self.meta);
        m.forget_times(&path);
        m.put_entry(&path, None, Instant::now());
        Ok(())
    }

    pub fn rmdir(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let path = self.child_path(parent, name)?;
        self.settle(&[&path])?;
        if !self.fresh_below(&path).is_empty() {
            return Err(Errno::ENOTEMPTY);
        }
        self.keep_parent(&path)?;
        self.remote.delete(&path, Kind::Dir).map_err(|e| fail("rmdir", &path, e))?;
        lock(&self.inodes).unlink(&path);
        self.touched(&path);
        let mut m = lock(&self.meta);
        m.invalidate_tree(&path);
        m.forget_times(&path);
        m.put_entry(&path, None, Instant::now());
        Ok(())
    }

    /// Staging copies of files created here, not stored yet, below `dir`.
    fn fresh_below(&self, dir: &str) -> Vec<Arc<Staged>> {
        self.staged_below(dir).into_iter().filter(|s| s.is_fresh()).collect()
    }

    /// Live staging copies at `path` or below it.
    fn staged_below(&self, path: &str) -> Vec<Arc<Staged>> {
        let all = lock(&self.handles).all_staged();
        let t = lock(&self.inodes);
        all.into_iter()
            .filter(|s| !s.is_unlinked())
            .filter(|s| t.path(s.ino).is_some_and(|p| p == path || name::is_inside(p, path)))
            .collect()
    }

    pub fn rename(&self, parent: u64, name: &OsStr, newparent: u64, newname: &OsStr, flags: u32) -> Result<(), Errno> {
        // Swapping two names, or whiteouts, cannot be done atomically here.
        if flags & (libc::RENAME_EXCHANGE | libc::RENAME_WHITEOUT) != 0 {
            return Err(Errno::EINVAL);
        }
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let from = self.child_path(parent, name)?;
        let to = self.child_path(newparent, newname)?;
        if from == to {
            return Ok(());
        }
        // What was written here goes up first, so the cluster moves it.
        for s in self.staged_below(&from) {
            if s.owes_upload() {
                self.sync_staged(&s)?;
            }
        }
        self.settle(&[&from, &to])?;
        let from_ino = self.ino_of(&from);
        let target = self.staged_of(self.ino_of(&to)).filter(|t| Some(t.ino) != from_ino);
        if noreplace && target.as_ref().is_some_and(|t| t.is_fresh()) {
            return Err(Errno::EEXIST);
        }
        self.keep_parent(&from)?;
        self.remote.rename(&from, &to, !noreplace).map_err(|e| fail("rename", &from, e))?;
        if let Some(t) = target {
            t.mark_unlinked();
        }
        lock(&self.inodes).rename(&from, &to);
        self.touched(&from);
        self.touched(&to);
        let mut m = lock(&self.meta);
        m.invalidate_tree(&from);
        m.invalidate_tree(&to);
        m.rename_times(&from, &to);
        m.touch_ctime(&to, now_ns());
        Ok(())
    }

    pub fn create(&self, parent: u64, name: &OsStr, mode: u32, flags: i32) -> Result<(FileAttr, u64), Errno> {
        let path = self.child_path(parent, name)?;
        let ino = lock(&self.inodes).peek(&path, Kind::File);
        let append = flags & libc::O_APPEND != 0;
        let exclusive = flags & libc::O_EXCL != 0;
        // A full cluster refuses the create, as a full disk would: a shell's
        // `> file` does not look at close. Asked before `opening` is taken,
        // as it may wait on the cluster.
        let fits = self.staged_of(Some(ino)).is_some() || self.room_for_a_new_file();
        let staged = {
            let _g = lock(&self.opening);
            let existing = self.staged_of(Some(ino));
            match existing {
                // Open for writing here already (the kernel's view was stale).
                Some(_) if exclusive => return Err(Errno::EEXIST),
                Some(s) => {
                    s.join_writer();
                    if flags & libc::O_TRUNC != 0 {
                        s.truncate(0)?;
                    }
                    s
                }
                None => {
                    if !fits {
                        return Err(Errno::ENOSPC);
                    }
                    let start = Start::Empty { fresh: true, exclusive };
                    let s = Staged::new(ino, self.staging_path(), mode, start).map_err(|e| io_errno(&e))?;
                    let s = Arc::new(s);
                    lock(&self.handles).put_staged(s.clone());
                    s
                }
            }
        };
        let of = OpenFile { ino, staged: Some(staged.clone()), append, entry: None, item: Mutex::new(None) };
        let fh = lock(&self.handles).add_file(of);
        lock(&self.inodes).lookup(&path, Kind::File);
        {
            // The cluster's listing stays right: new files show from here.
            let mut m = lock(&self.meta);
            m.forget_entry(&path);
            m.touch_dir(name::parent(&path), now_ns());
            m.forget_times(&path);
        }
        Ok((self.attr(ino, &self.staged_shape(Some(&path), &staged)), fh))
    }

    pub fn open(&self, ino: u64, flags: i32) -> Result<u64, Errno> {
        let path = self.path_of(ino)?;
        let append = flags & libc::O_APPEND != 0;
        // Written back by an earlier run of this mount and not up yet: the
        // cluster's copy is not the newest, so it goes up first.
        if self.staged_of(Some(ino)).is_none() {
            self.settle(&[&path])?;
        }
        if flags & libc::O_ACCMODE == libc::O_RDONLY {
            let entry = match self.staged_of(Some(ino)) {
                // Read from the staging copy while it lasts; then what it stored.
                Some(s) => s.clean_entry(),
                None => {
                    let e = self.entry(&path)?.ok_or(Errno::ENOENT)?;
                    if e.kind == Kind::Dir {
                        return Err(Errno::EISDIR);
                    }
                    Some(e)
                }
            };
            let of = OpenFile { ino, staged: None, append, entry, item: Mutex::new(None) };
            return Ok(lock(&self.handles).add_file(of));
        }
        let staged = self.open_writer(ino, &path, flags & libc::O_TRUNC != 0)?;
        let of = OpenFile { ino, staged: Some(staged), append, entry: None, item: Mutex::new(None) };
        Ok(lock(&self.handles).add_file(of))
    }

    /// The staging copy of `ino` for one more writer: shared if there is
    /// one; else empty (`trunc`) or a copy of the stored file.
    fn open_writer(&self, ino: u64, path: &str, trunc: bool) -> Result<Arc<Staged>, Errno> {
        let _g = lock(&self.opening);
        if let Some(s) = self.staged_of(Some(ino)) {
            s.join_writer();
            if trunc {
                if let Err(e) = s.truncate(0) {
                    s.leave_writer();
                    return Err(e);
                }
            }
            return Ok(s);
        }
        let e = self.entry(path)?.ok_or(Errno::ENOENT)?;
        if e.kind == Kind::Dir {
            return Err(Errno::EISDIR);
        }
        let dest = self.staging_path();
        // The content is fetched when a write, read or truncate needs it.
        let start = if trunc { Start::Empty { fresh: false, exclusive: false } } else { Start::Later(e.clone()) };
        let mode = e.mode;
        let s = match Staged::new(ino, dest.clone(), mode, start) {
            Ok(s) => Arc::new(s),
            Err(err) => {
                let _ = std::fs::remove_file(&dest);
                return Err(io_errno(&err));
            }
        };
        lock(&self.handles).put_staged(s.clone());
        Ok(s)
    }

    /// Fetches the stored content of a staging copy opened without O_TRUNC,
    /// from the content cache when it is there.
    fn fill(&self, s: &Staged) -> Result<(), Errno> {
        if !s.needs_fill() {
            return Ok(());
        }
        let name = lock(&self.inodes).path(s.ino).map(str::to_string);
        s.fill_with(|e, dest| {
            if e.size == 0 {
                std::fs::File::create(dest).map_err(|err| io_errno(&err))?;
                return Ok(e.clone());
            }
            if self.content.copy_to(e.hash, e.size, dest) {
                return Ok(e.clone());
            }
            let name = name.as_deref().unwrap_or(&e.name);
            self.remote.download_to(name, dest).map_err(|err| fail("download", name, err))
        })
    }

    fn staging_path(&self) -> PathBuf {
        let n = self.serial.fetch_add(1, Ordering::Relaxed);
        self.staging.join(format!("w{n}"))
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let of = lock(&self.handles).file(fh).ok_or(Errno::EBADF)?;
        let staged = of.staged.clone().or_else(|| self.staged_of(Some(of.ino)));
        if let Some(s) = staged {
            self.fill(&s)?;
            return s.read(offset, u64::from(size));
        }
        let entry = match &of.entry {
            Some(e) => self.newest_of(of.ino, e),
            // Opened while it was being written here; stored since.
            None => self.entry(&self.path_of(of.ino)?)?.ok_or(Errno::ENOENT)?,
        };
        if offset >= entry.size || size == 0 {
            return Ok(Vec::new());
        }
        let len = u64::from(size).min(entry.size - offset);
        let item = {
            let mut slot = lock(&of.item);
            match &*slot {
                Some(i) if i.hash() == entry.hash && i.size() == entry.size => i.clone(),
                _ => {
                    let i = self.content.item(entry.hash, entry.size).map_err(|e| io_errno(&e))?;
                    *slot = Some(i.clone());
                    i
                }
            }
        };
        let name = lock(&self.inodes).path(of.ino).map(str::to_string).unwrap_or(entry.name.clone());
        let rt = self.remote.handle();
        if let Some(data) = self.content.read(&item, rt, self.remote.client(), &name, offset, len)? {
            return Ok(data);
        }
        let (got, data) = self.remote.read_range(&name, offset, len).map_err(|e| fail("read", &name, e))?;
        if got.hash != entry.hash {
            log::info!("{name} changed while it was open for reading");
            return Err(Errno::EIO);
        }
        Ok(data)
    }

    /// What a reader of `ino` that opened `opened` reads now: a newer
    /// version stored under the name since (here, or elsewhere and seen
    /// within the TTL), as the reader of a local file sees a rewrite; the
    /// opened one once the name is gone, or when it cannot be checked.
    fn newest_of(&self, ino: u64, opened: &Entry) -> Entry {
        let Some(path) = lock(&self.inodes).path(ino).map(str::to_string) else { return opened.clone() };
        match self.entry(&path) {
            Ok(Some(e)) if e.kind == Kind::File && e.version > opened.version => e,
            _ => opened.clone(),
        }
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let of = lock(&self.handles).file(fh).ok_or(Errno::EBADF)?;
        let s = of.staged.clone().ok_or(Errno::EBADF)?;
        self.fill(&s)?;
        let name = lock(&self.inodes).path(of.ino).map(str::to_string);
        s.write(&self.remote, name.as_deref(), (!of.append).then_some(offset), data)
    }

    /// close(2) by process `pid`: store what was written (with write-back:
    /// in the journal here, on the disk at the release, and on the cluster
    /// soon). Without write-back, not if `pid` still has the file open for
    /// writing, as after the first of a shell redirection's two closes: its
    /// last close stores the file (see [`super::caller`]). With write-back
    /// the journal record costs less than looking, and a record replaced
    /// within its wait never goes up.
    pub fn flush(&self, fh: u64, pid: u32) -> Result<(), Errno> {
        let of = lock(&self.handles).file(fh).ok_or(Errno::EBADF)?;
        let Some(s) = &of.staged else { return Ok(()) };
        if !self.write_back {
            let path = lock(&self.inodes).path(of.ino).map(|p| self.mountpoint.join(p));
            if path.is_some_and(|p| self.caller.holds_open_for_writing(pid, &p)) {
                return Ok(());
            }
        }
        self.sync_staged(s)
    }

    /// fsync(2): store what was written on the cluster, now.
    pub fn fsync(&self, fh: u64) -> Result<(), Errno> {
        let of = lock(&self.handles).file(fh).ok_or(Errno::EBADF)?;
        if let Some(s) = &of.staged {
            self.sync_staged(s)?;
        }
        // Also for a descriptor that did not write: what was closed before
        // it goes up first.
        if let Some(path) = lock(&self.inodes).path(of.ino).map(str::to_string) {
            self.settle(&[&path])?;
        }
        match of.staged.clone().or_else(|| lock(&self.handles).staged(of.ino)) {
            Some(s) => s.take_refusal().map_or(Ok(()), Err),
            None => Ok(()),
        }
    }

    fn sync_staged(&self, s: &Arc<Staged>) -> Result<(), Errno> {
        let name = lock(&self.inodes).path(s.ino).map(str::to_string);
        let replaced = RefCell::new(Vec::new());
        let queue = |rec: Record, gen: u64| {
            let job = Job::new(rec, Some(s.clone()), gen);
            match self.queue.push(job, Instant::now() + SETTLE_LIMIT) {
                Ok(old) => {
                    replaced.borrow_mut().extend(old);
                    Ok(())
                }
                Err(job) => {
                    log::warn!("the write-back queue stayed full; {} is not stored", job.rec.spec.name);
                    self.journal.remove(&job.rec);
                    Err(Errno::EIO)
                }
            }
        };
        let wb = WriteBack { journal: &self.journal, queue: &queue };
        let settle = |n: &str| self.settle(&[n]);
        let res = s.sync(&self.remote, name.as_deref(), self.write_back.then_some(&wb), &settle);
        // Outside the staging copy's lock: dropping a record may retire a copy.
        for old in replaced.into_inner() {
            self.journal.remove(&old.rec);
            self.record_dropped(old.staged, None);
        }
        if let Synced::Stored(e) = res? {
            lock(&self.meta).put_child(&e.name, Some(e.clone()), Instant::now());
            s.uploaded();
        }
        Ok(())
    }

    /// Waits until the write-back records at, inside or above `paths` are
    /// on the cluster (they go first), so a change made after them lands
    /// after them; and makes the journal's removals durable, so no record
    /// of them comes back after a power cut to undo the change.
    fn settle(&self, paths: &[&str]) -> Result<(), Errno> {
        if !self.queue.wait_clear(paths, SETTLE_LIMIT) {
            log::warn!("files written to {paths:?} are not stored on the cluster yet; giving up");
            return Err(Errno::EIO);
        }
        self.journal.sync();
        Ok(())
    }

    /// A journaled record of `staged` will not go up.
    fn record_dropped(&self, staged: Option<Arc<Staged>>, refused: Option<Errno>) {
        if let Some(s) = staged {
            if s.record_dropped(refused) == 0 {
                self.retire_if_unused(&s);
            }
        }
    }

    /// Drops a staging copy nobody writes and nothing is owed for; its
    /// content becomes a cached copy. Only the bookkeeping is under
    /// `opening` (so no writer joins it meanwhile); the file work is not.
    fn retire_if_unused(&self, s: &Arc<Staged>) {
        {
            let _g = lock(&self.opening);
            if s.in_use() || !s.retire_once() {
                return;
            }
            lock(&self.handles).retire_staged(s);
        }
        lock(&self.inodes).drop_if_forgotten(s.ino);
        if let Some(e) = s.clean_entry().filter(|_| !s.is_unlinked()) {
            self.content.adopt(&e, s.path());
        }
        s.discard();
    }

    pub fn release(&self, fh: u64) -> Result<(), Errno> {
        let of = lock(&self.handles).remove_file(fh);
        if let Some(s) = of.and_then(|of| of.staged.clone()) {
            self.close_writer(&s);
        }
        Ok(())
    }

    /// One writer fewer; the last one stores what is still owed and turns
    /// the staging file into a cached copy.
    fn close_writer(&self, s: &Arc<Staged>) {
        if s.leave_writer() > 0 {
            return;
        }
        // Not under `opening`: storing may wait for the queue, and a writer
        // opening the file meanwhile simply keeps the copy alive.
        if s.owes_upload() {
            if let Err(e) = self.sync_staged(s) {
                log::warn!("a file closed without being stored: {e:?}");
            }
        }
        // What this file's closes wrote to the journal goes to the disk
        // now, off the path of close(2) (release is not waited for).
        if self.write_back {
            self.journal.sync_written();
        }
        // With records still to go up, the last uploader retires it.
        self.retire_if_unused(s);
    }

    pub fn opendir(&self, ino: u64) -> Result<u64, Errno> {
        let path = self.path_of(ino)?;
        // Taken first: a file that goes up while the listing is fetched is
        // in one or the other.
        let fresh = self.fresh_below(&path);
        let children = self.listing(&path)?;
        let mut seen: HashSet<String> = HashSet::new();
        let mut items = Vec::with_capacity(children.len() + 2);
        {
            let mut t = lock(&self.inodes);
            let up = if path.is_empty() { ROOT } else { t.ino(name::parent(&path)).unwrap_or(ROOT) };
            items.push(DirItem { ino, kind: Kind::Dir, name: ".".into() });
            items.push(DirItem { ino: up, kind: Kind::Dir, name: "..".into() });
            for e in children.iter() {
                let base = name::base(&e.name).to_string();
                items.push(DirItem { ino: t.peek(&e.name, e.kind), kind: e.kind, name: base.clone() });
                seen.insert(base);
            }
        }
        // Files created here that the cluster does not have yet.
        for s in fresh.iter().filter(|s| !s.is_unlinked()) {
            let p = lock(&self.inodes).path(s.ino).map(str::to_string);
            if let Some(p) = p.filter(|p| name::parent(p) == path) {
                let base = name::base(&p).to_string();
                if seen.insert(base.clone()) {
                    items.push(DirItem { ino: s.ino, kind: Kind::File, name: base });
                }
            }
        }
        Ok(lock(&self.handles).add_dir(items))
    }

    pub fn readdir(&self, fh: u64) -> Result<Arc<Vec<DirItem>>, Errno> {
        lock(&self.handles).dir(fh).ok_or(Errno::EBADF)
    }

    pub fn releasedir(&self, fh: u64) -> Result<(), Errno> {
        lock(&self.handles).remove_dir(fh);
        Ok(())
    }

    /// Whether some live node has room for one more file (the leader's
    /// rule for an upload). Without write-back only: there close is where
    /// a failed upload shows, and a shell's `> file` never looks at it; with
    /// write-back a refused file is kept in `unsent/`, and creating must not
    /// wait on a cluster that does not answer. The cluster is asked at most
    /// every [`ROOM_TTL`] (for [`ROOM_ASK`] at most; no answer counts as
    /// room), and the creates since are counted off its answer, so a cluster
    /// close to full is asked again before its last slot goes.
    fn room_for_a_new_file(&self) -> bool {
        if self.write_back {
            return true;
        }
        if let Some((at, left)) = lock(&self.room).as_mut() {
            if at.elapsed() < ROOM_TTL && *left > 0 {
                *left -= 1;
                return true;
            }
        }
        let left = match self.remote.status_within(ROOM_ASK) {
            Some(r) => r
                .nodes
                .iter()
                .filter(|n| n.alive)
                .map(|n| n.max_files.map_or(u64::MAX, |max| max.saturating_sub(n.files)))
                .max()
                .unwrap_or(0),
            None => u64::MAX,
        };
        *lock(&self.room) = Some((Instant::now(), left.saturating_sub(1)));
        left > 0
    }

    pub fn statfs(&self) -> Result<Space, Errno> {
        let r = self.remote.status().map_err(|e| fail("statfs", "", e))?;
        let alive: Vec<_> = r.nodes.iter().filter(|n| n.alive && n.disk_total > 0).collect();
        // Every holder needs room: the fullest node decides.
        let free = alive.iter().map(|n| n.disk_free).min().unwrap_or(0);
        let total = alive.iter().map(|n| n.disk_total).min().unwrap_or(0);
        let limited = r.nodes.iter().filter(|n| n.alive).filter_map(|n| n.max_files.map(|m| (m, n.files)));
        let (files, ffree) = match limited.min_by_key(|(m, f)| m.saturating_sub(*f)) {
            Some((m, f)) => (m, m.saturating_sub(f)),
            None => {
                let most = r.nodes.iter().map(|n| n.files).max().unwrap_or(0);
                (MANY_FILES, MANY_FILES.saturating_sub(most))
            }
        };
        Ok(Space { blocks: total / STATFS_BSIZE, bfree: free / STATFS_BSIZE, files, ffree, bsize: STATFS_BSIZE as u32 })
    }

    /// Stores every file still owed (unmount, SIGTERM), and waits a while
    /// for the write-back records to go up; the uploaders then stop, and
    /// what is left goes up when the mount next starts.
    pub fn flush_all(&self) {
        let all = lock(&self.handles).all_staged();
        for s in all {
            if s.owes_upload() {
                if let Err(e) = self.sync_staged(&s) {
                    let name = lock(&self.inodes).path(s.ino).map(str::to_string);
                    log::error!("could not store {name:?} before unmounting: {e:?}");
                }
            }
        }
        if !self.queue.is_empty() {
            log::info!("uploading {} written-back files before unmounting", self.queue.len());
        }
        if !self.queue.wait_clear(&[""], DRAIN_LIMIT) {
            log::warn!(
                "{} written-back files are not on the cluster yet; they go up when the mount next starts",
                self.queue.len()
            );
        }
        self.queue.stop();
        self.journal.stop();
        self.journal.sync();
    }

    // ----- write-back uploads -----

    /// Waits while written-back records go up (at the start, before the
    /// directory appears, so it shows the newest content); false if some
    /// are left once none went up for `idle`.
    pub fn wait_written_back(&self, idle: Duration) -> bool {
        self.queue.wait_clear(&[""], idle)
    }

    /// Queues the records an earlier mount left and starts the uploaders.
    pub fn start_uploaders(self: &Arc<Core>, left: Vec<Record>) -> std::io::Result<()> {
        if !left.is_empty() {
            log::info!("{} files written back before the mount last stopped are going up now", left.len());
        }
        for rec in left {
            for old in self.queue.push_unbounded(Job::new(rec, None, 0)) {
                self.journal.remove(&old.rec);
            }
        }
        if self.write_back {
            let core = self.clone();
            std::thread::Builder::new().name("scs-slots".into()).spawn(move || core.journal.make_spares())?;
        }
        for i in 0..UPLOADERS {
            let core = self.clone();
            std::thread::Builder::new().name(format!("scs-upload-{i}")).spawn(move || {
                while let Some(job) = core.queue.take() {
                    core.upload_one(job);
                }
            })?;
        }
        Ok(())
    }

    /// Uploads one record, retrying while the cluster cannot be reached
    /// (until the mount stops: the record stays in the journal then).
    fn upload_one(&self, job: Job) {
        let name = job.rec.spec.name.clone();
        // Its file was removed here (or refused) after it was closed.
        if job.staged.as_ref().is_some_and(|s| s.is_unlinked()) {
            self.journal.remove(&job.rec);
            self.queue.done(&name);
            self.record_dropped(job.staged, None);
            return;
        }
        let mut pause = Duration::from_millis(100);
        let res = loop {
            let rec = job.rec.clone();
            let open = move || rec.content().map(|r| Box::new(r) as Box<dyn std::io::Read + Send>);
            match self.remote.upload_from(job.rec.spec.clone(), open) {
                Err(e) if !is_final(&e) => {
                    log::info!("written-back {name:?} did not go up ({e}); trying again");
                    if !self.queue.pause(pause) {
                        // Stopping: the journal keeps it for the next mount.
                        self.queue.done(&name);
                        return;
                    }
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                other => break other,
            }
        };
        match res {
            Ok(entry) => {
                // Listed from the cache before it stops counting as fresh
                // ([`Staged::uploaded`]); both visible to anyone waiting on
                // the queue before `done`.
                lock(&self.meta).put_child(&name, Some(entry.clone()), Instant::now());
                if let Some(s) = &job.staged {
                    s.uploaded();
                }
                self.journal.remove(&job.rec);
                self.queue.done(&name);
                if let Some(s) = &job.staged {
                    if s.record_stored(job.gen, &entry) == 0 {
                        self.retire_if_unused(s);
                    }
                }
            }
            Err(e) => {
                let kept = self.journal.keep_unsent(&job.rec);
                match &kept {
                    Ok(p) => log::error!(
                        "the cluster refused written-back {name:?} ({e}); its content is kept in {}",
                        p.display()
                    ),
                    Err(err) => log::error!(
                        "the cluster refused written-back {name:?} ({e}); keeping its content failed too: {err}"
                    ),
                }
                // It is not on the cluster: it is not here either.
                if let Some(s) = job.staged.as_ref().filter(|s| s.is_fresh()) {
                    s.mark_unlinked();
                    let mut t = lock(&self.inodes);
                    if t.path(s.ino) == Some(name.as_str()) {
                        t.unlink(&name);
                    }
                }
                {
                    let mut m = lock(&self.meta);
                    m.invalidate(&name);
                    m.touch_dir(name::parent(&name), now_ns());
                }
                self.queue.done(&name);
                self.record_dropped(job.staged, Some(errno(&e)));
            }
        }
    }
}

/// Logs an error from the cluster where it is handled, and maps it.
fn fail(what: &str, path: &str, e: Error) -> Errno {
    let n = errno(&e);
    if n == Errno::EIO {
        log::warn!("{what} {path:?}: {e}");
    } else {
        log::debug!("{what} {path:?}: {e}");
    }
    n
}

fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn ns_of(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_convert_both_ways_with_nanoseconds_and_before_the_epoch() {
        for ns in [0, 1, 1_700_000_000_123_456_789, -1_500_000_000] {
            assert_eq!(ns_of(system_time(ns)), ns);
        }
    }
}
