//! What each file system request does, as plain functions returning
//! `Result<_, Errno>`: the FUSE callbacks in `mod.rs` only call these and
//! reply. This file holds [`Core`], names, attributes and namespace changes;
//! [`super::files`] holds open files and how their content reaches the
//! cluster.
//!
//! The cluster is reached only through [`Cluster`], so these rules are
//! tested with an in-memory cluster ([`super::fake`]). Inode numbers are
//! the cluster's; the caller of a request (its uid and gid) is passed in as
//! plain numbers. Permission checks, sticky directories and chown rules
//! are the kernel's (`default_permissions`); the mount reports true owners
//! and modes.
//!
//! Locks: the inode table, the metadata cache and the handle table are each
//! taken alone and briefly (never two at once, never across a call to the
//! cluster). `opening`, which serializes opening and retiring writers, is
//! taken before any of them and may be held across a call.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fuser::{Errno, FileAttr, FileType, INodeNo, TimeOrNow};

use scs_common::inode::{Bytes, Changed, Listed, NewNode, Removal, RenameMode, SetAttrs, TimeSet, XattrMode, DIR_SIZE};
use scs_common::namespace::{self, Plan, View};
use scs_common::proto::rpc::{Target, UploadSpec};
use scs_common::types::S_ISGID;
use scs_common::{name, Dentry, Error, Ino, Inode, Kind};

use super::cache::{Child, Listing, MetaCache};
use super::caller::Caller;
use super::cluster::Cluster;
use super::content::ContentCache;
use super::counts::{Counts, IO_ERRORS};
use super::errno::errno;
use super::handles::{DirItem, Handles};
use super::inodes::Inodes;
use super::lock;
use super::staged::Staged;
use super::time::{now_ns, ns_of_request, system_time};
use super::writeback::{Amend, Batching, Journal, Queue, Scope};

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

/// Who makes something new: its owner (the leader gives the group of a
/// set-group-id directory instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// What a setattr changes; `None` leaves it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
    /// Who asks (for the set-group-id rule); `None` for the mount itself.
    pub by: Option<Who>,
}

/// Who makes a request, as the kernel tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Who {
    pub uid: u32,
    /// The file-system group id.
    pub gid: u32,
    pub pid: u32,
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

/// An extended attribute answer: its size (asked with size 0) or its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XattrReply {
    Size(u32),
    Data(Vec<u8>),
}

/// The state of a mount and every operation on it.
pub struct Core {
    pub(super) cluster: Arc<dyn Cluster>,
    pub(super) content: ContentCache,
    pub(super) staging: PathBuf,
    pub(super) caller: Caller,
    pub(super) inodes: Arc<Mutex<Inodes>>,
    pub(super) meta: Mutex<MetaCache>,
    pub(super) handles: Mutex<Handles>,
    /// Serializes opening and retiring writers: one staging copy per inode.
    pub(super) opening: Mutex<()>,
    pub(super) serial: AtomicU64,
    /// Closing a small file puts it here (with `--write-back`)...
    pub(super) journal: Journal,
    pub(super) write_back: bool,
    /// ... and the uploaders take it from here.
    pub(super) queue: Queue<Arc<Staged>>,
    /// Whether small records go up several at a time.
    pub(super) many: Batching,
    /// When the cluster was last asked how many more files fit, and how
    /// many of those are left after the creates since.
    pub(super) room: Mutex<Option<(Instant, u64)>>,
    /// Inode numbers are being reserved in the background.
    pub(super) reserving: Arc<AtomicBool>,
    /// What `--metrics-listen` counts.
    pub(super) counts: Counts,
    /// Tells the kernel to drop what it cached of an inode (set once the
    /// session is up; unit tests have none).
    pub(super) kernel: std::sync::OnceLock<fuser::Notifier>,
}

impl Core {
    /// A mount of `cluster` at `mountpoint`, staging writes in `staging`;
    /// closed small files go to `journal` first when `write_back`.
    pub fn new(
        cluster: Arc<dyn Cluster>,
        content: ContentCache,
        staging: PathBuf,
        mountpoint: PathBuf,
        journal: Journal,
        write_back: bool,
    ) -> Core {
        Core {
            cluster,
            content,
            staging,
            caller: Caller::start(mountpoint),
            inodes: Arc::new(Mutex::new(Inodes::new())),
            meta: Mutex::new(MetaCache::new(TTL)),
            handles: Mutex::new(Handles::default()),
            opening: Mutex::new(()),
            serial: AtomicU64::new(0),
            journal,
            write_back,
            queue: Queue::default(),
            many: Batching::default(),
            room: Mutex::new(None),
            reserving: Arc::new(AtomicBool::new(false)),
            counts: Counts::default(),
            kernel: std::sync::OnceLock::new(),
        }
    }

    /// Lets the mount tell the kernel to drop what it cached.
    pub fn set_kernel(&self, notifier: fuser::Notifier) {
        let _ = self.kernel.set(notifier);
    }

    /// A lock on `ino` was granted: what another mount stored under the
    /// lock before must be what is read under this one, as NFS has it. The
    /// inode is asked again, a copy open here for writing with nothing owed
    /// starts over from the stored content, and the kernel drops its
    /// cached pages and attributes of it.
    pub fn revalidate(&self, ino: u64) {
        let ino = Ino(ino);
        lock(&self.meta).forget_attr(ino);
        if let Ok(Some(stored)) = self.inode(ino) {
            let staged = lock(&self.handles).staged(ino);
            if stored.kind == Kind::File && staged.is_some_and(|s| s.rebase(&stored)) {
                log::debug!("inode {ino} changed elsewhere before its lock was taken; read again");
            }
        }
        if let Some(k) = self.kernel.get() {
            if let Err(e) = k.inval_inode(fuser::INodeNo(ino.0), 0, 0) {
                log::debug!("the kernel's cache of inode {ino} was not dropped: {e}");
            }
        }
    }

    // ----- names and inodes -----

    /// An inode, from the cache while fresh.
    pub(super) fn inode(&self, ino: Ino) -> Result<Option<Inode>, Errno> {
        let now = Instant::now();
        let (cached, asked) = {
            let m = lock(&self.meta);
            (m.attr(ino, now), m.asking())
        };
        if let Some(i) = cached {
            return Ok(i);
        }
        let got = self.cluster.getattr(ino).map_err(|e| fail("getattr", ino, e))?;
        Ok(lock(&self.meta).put_asked_attr(ino, got, now, asked))
    }

    /// What `name` in `dir` leads to on the cluster, with its inode (files
    /// not on the cluster yet aside: see [`Inodes::fresh_at`]).
    pub(super) fn child(&self, dir: Ino, name: &str) -> Result<Option<Inode>, Errno> {
        // Not in the root's listing, so past the caches of names.
        if dir == Ino::ROOT && name == super::trash::TRASH_DIR {
            return self.cluster.lookup(dir, name).map_err(|e| fail("lookup", dir, e));
        }
        let now = Instant::now();
        let (cached, listed, asked) = {
            let m = lock(&self.meta);
            (m.name(dir, name, now), m.listed_len(dir), m.asking())
        };
        match cached {
            Some(None) => return Ok(None),
            Some(Some(ino)) => {
                if let Some(i) = self.inode(ino)? {
                    return Ok(Some(i));
                }
                // Gone meanwhile: the name may lead elsewhere now.
            }
            None => {}
        }
        // A small directory that was listed (a copy going into it, names
        // looked up one after another): one listing answers them all.
        if cached.is_none() && listed.is_some_and(|n| n <= RELIST_MAX) {
            let l = self.listing(dir)?;
            match l.iter().find(|c| c.name == name) {
                None => return Ok(None),
                Some(c) => {
                    if let Some(i) = self.inode(c.ino)? {
                        return Ok(Some(i));
                    }
                }
            }
        }
        let got = self.cluster.lookup(dir, name).map_err(|e| fail("lookup", dir, e))?;
        let newest = lock(&self.meta).put_asked_name(dir, name, got.clone(), now, asked);
        match (newest, got) {
            (None, _) => Ok(None),
            (Some(ino), Some(i)) if i.ino == ino => Ok(Some(i)),
            (Some(ino), _) => self.inode(ino),
        }
    }

    /// The children of `dir` on the cluster, from the cache while fresh.
    pub(super) fn listing(&self, dir: Ino) -> Result<Listing, Errno> {
        self.listing_with(dir, MetaCache::listing)
    }

    /// [`Core::listing`] for a walk of the directory's entries (opendir):
    /// the cached one only while its children stay fresh through the walk.
    fn listing_to_walk(&self, dir: Ino) -> Result<Listing, Errno> {
        self.listing_with(dir, MetaCache::listing_to_walk)
    }

    fn listing_with(
        &self,
        dir: Ino,
        cached: fn(&MetaCache, Ino, Instant) -> Option<Listing>,
    ) -> Result<Listing, Errno> {
        let now = Instant::now();
        let (cached, asked) = {
            let m = lock(&self.meta);
            (cached(&m, dir, now), m.asking())
        };
        if let Some(l) = cached {
            return Ok(l);
        }
        let listed = self.cluster.readdir(dir).map_err(|e| fail("readdir", dir, e))?;
        Ok(lock(&self.meta).put_asked_listing(dir, listed, now, asked))
    }

    /// A file being written here shows its copy's size and times over the
    /// cluster's inode; a file made here and not stored yet shows what this
    /// mount knows of it; one whose last name is gone has no links.
    pub(super) fn shown(&self, ino: Ino) -> Result<Option<Inode>, Errno> {
        let Some(s) = lock(&self.handles).staged(ino) else { return self.inode(ino) };
        let unlinked = |mut m: Inode| {
            m.nlink = 0;
            Ok(Some(m))
        };
        if s.is_gone() {
            return unlinked(s.meta());
        }
        if lock(&self.inodes).is_fresh(ino) {
            return Ok(Some(s.meta()));
        }
        let Some(mut i) = self.inode(ino)? else { return unlinked(s.meta()) };
        i.size = s.size();
        i.mtime_ns = s.mtime_ns();
        i.ctime_ns = i.ctime_ns.max(i.mtime_ns);
        Ok(Some(i))
    }

    /// The attributes FUSE gets for an inode.
    pub(super) fn attr(&self, i: &Inode) -> FileAttr {
        let (mut mtime, mut ctime) = (i.mtime_ns, i.ctime_ns);
        if i.is_dir() {
            // Files made here and not on the cluster yet changed it too.
            if let Some(t) = lock(&self.meta).dir_time(i.ino) {
                mtime = mtime.max(t);
                ctime = ctime.max(t);
            }
        }
        let size = i.st_size();
        let blocks = match i.kind {
            Kind::File => size.div_ceil(512),
            Kind::Dir => DIR_SIZE / 512,
            _ => 0,
        };
        FileAttr {
            ino: INodeNo(i.ino.0),
            size,
            blocks,
            atime: system_time(i.atime_ns),
            mtime: system_time(mtime),
            ctime: system_time(ctime),
            crtime: system_time(mtime),
            kind: file_type(i.kind),
            perm: (i.mode & 0o7777) as u16,
            nlink: i.nlink,
            uid: i.uid,
            gid: i.gid,
            // FUSE carries 32 bits: the kernel's new_encode_dev form.
            rdev: i.rdev as u32,
            blksize: BLKSIZE,
            flags: 0,
        }
    }

    // ----- requests: names and attributes -----

    /// The attributes `name` in `parent` leads to, and how long the kernel
    /// may keep them: [`TTL`], or none when they are not known fresh (see
    /// [`Core::remembered_child`]), so that it asks again before it shows them.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<(FileAttr, Duration), Errno> {
        // No stored name can be anything but UTF-8.
        let name = name.to_str().ok_or(Errno::ENOENT)?;
        name::validate_component(name).map_err(|e| errno(&e))?;
        let parent = Ino(parent);
        let fresh = lock(&self.inodes).fresh_at(parent, name);
        let (shown, attr_ttl) = match fresh.and_then(|ino| lock(&self.handles).staged(ino)).filter(|s| !s.is_gone()) {
            Some(s) => (s.meta(), TTL),
            None => match self.remembered_child(parent, name) {
                Some(i) => (i, Duration::ZERO),
                None => {
                    let i = self.child(parent, name)?.ok_or(Errno::ENOENT)?;
                    (self.shown(i.ino)?.ok_or(Errno::ENOENT)?, TTL)
                }
            },
        };
        lock(&self.inodes).looked_up(shown.ino);
        Ok((self.attr(&shown), attr_ttl))
    }

    /// What `name` in `dir` leads to, for a change that needs only its
    /// number and kind (which never change): [`Core::remembered_child`],
    /// or else [`Core::child`].
    pub(super) fn named_child(&self, dir: Ino, name: &str) -> Result<Option<Inode>, Errno> {
        match self.remembered_child(dir, name) {
            Some(i) => Ok(Some(i)),
            None => self.child(dir, name),
        }
    }

    /// The inode `name` in `dir` leads to by a fresh listing, as last
    /// remembered, when its own attributes have expired: a listing kept
    /// fresh by this mount's changes in it (see `MetaCache::dir_stepped`)
    /// outlives the attributes that came with it. So `rm -rf` of a big
    /// directory looks each name up here, not with a request per file.
    /// `None` when the cache cannot say so (ask as [`Core::child`] does),
    /// or the file is open here for writing (its copy is what shows).
    fn remembered_child(&self, dir: Ino, name: &str) -> Option<Inode> {
        if dir == Ino::ROOT && name == super::trash::TRASH_DIR {
            return None;
        }
        let now = Instant::now();
        let i = {
            let m = lock(&self.meta);
            match m.name(dir, name, now) {
                Some(Some(ino)) if m.attr(ino, now).is_none() => m.attr_remembered(ino)?,
                _ => return None,
            }
        };
        lock(&self.handles).staged(i.ino).is_none().then_some(i)
    }

    pub fn forget(&self, ino: u64, n: u64) -> Result<(), Errno> {
        if lock(&self.inodes).forget(Ino(ino), n) {
            lock(&self.meta).forgotten(Ino(ino));
        }
        Ok(())
    }

    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> Result<FileAttr, Errno> {
        let ino = Ino(ino);
        if let Some(i) = self.shown(ino)? {
            return Ok(self.attr(&i));
        }
        // Unlinked while open: what the descriptor saw at open.
        let opened = {
            let h = lock(&self.handles);
            fh.and_then(|fh| h.file(fh)).and_then(|of| of.opened.clone()).or_else(|| h.opened(ino))
        };
        let mut i = opened.ok_or(Errno::ENOENT)?;
        i.nlink = 0;
        Ok(self.attr(&i))
    }

    pub fn setattr(&self, ino: u64, mut set: SetAttr, fh: Option<u64>) -> Result<FileAttr, Errno> {
        let ino = Ino(ino);
        // With write-back, a file made here whose closed content waits to go
        // up takes the change into its waiting record (see `amend_attrs`).
        // Anything else: what was closed before goes up first, so that the
        // change lands after it.
        let amendable = set.size.is_none() && self.amendable(ino).is_some();
        if !amendable {
            // A directory's times set now must not be moved on by the
            // files made in it that go up later.
            let scopes = [Scope::File(ino), Scope::In(ino)];
            self.settle(if set.mtime.is_some() { &scopes } else { &scopes[..1] })?;
        }
        let changes_owner_or_size = set.uid.is_some() || set.gid.is_some() || set.size.is_some();
        if let Some(who) = set.by.filter(|_| changes_owner_or_size) {
            if let Some(mode) = self.mode_without_sgid(ino, who)? {
                set.mode = Some(set.mode.map_or(mode, |m| m & !S_ISGID));
            }
        }
        let staged = lock(&self.handles).staged(ino);
        if let Some(size) = set.size {
            match &staged {
                Some(s) => {
                    if size != 0 {
                        self.fill(s)?;
                    }
                    s.truncate(size)?;
                }
                None => self.truncate_stored(ino, size)?,
            }
        }
        let at = |t: TimeOrNow| match t {
            TimeOrNow::Now => TimeSet::Now,
            TimeOrNow::SpecificTime(t) => TimeSet::At(ns_of_request(t)),
        };
        let attrs = SetAttrs {
            mode: set.mode.map(|m| m & 0o7777),
            uid: set.uid,
            gid: set.gid,
            atime: set.atime.map(at),
            mtime: set.mtime.map(at),
        };
        // Nothing to set at all (chown(f, -1, -1)) still moves the ctime, as ext4 does.
        if !attrs.is_empty() || set.size.is_none() {
            match staged.as_ref().filter(|s| self.is_local(s)) {
                // Not on the cluster (yet, or any more): kept with the copy.
                Some(s) => {
                    let i = apply_locally(s, |plan, ino| namespace::set_attr(plan, ino, &attrs))?;
                    if attrs.mtime.is_some() {
                        s.set_mtime(i.mtime_ns);
                    }
                    if amendable && !self.amend_attrs(s) {
                        // Its record is going up right now: the change follows it.
                        self.settle(&[Scope::File(ino)])?;
                        self.set_attr_on_cluster(ino, &attrs, staged.as_ref())?;
                    }
                }
                None => {
                    if amendable {
                        self.settle(&[Scope::File(ino)])?;
                    }
                    self.set_attr_on_cluster(ino, &attrs, staged.as_ref())?;
                }
            }
        }
        self.getattr(ino.0, fh)
    }

    fn set_attr_on_cluster(&self, ino: Ino, attrs: &SetAttrs, staged: Option<&Arc<Staged>>) -> Result<(), Errno> {
        let i = self.cluster.set_attr(ino, attrs).map_err(|e| fail("setattr", ino, e))?;
        if let Some(s) = staged.filter(|_| attrs.mtime.is_some()) {
            s.set_mtime(i.mtime_ns);
        }
        let mut m = lock(&self.meta);
        if attrs.mtime.is_some() {
            m.clear_dir_time(ino);
        }
        m.put_attr(ino, Some(i), Instant::now());
        Ok(())
    }

    /// The staging copy of `ino` when a change of the file can go into its
    /// waiting write-back record: with write-back, for a file made here
    /// and not on the cluster yet.
    fn amendable(&self, ino: Ino) -> Option<Arc<Staged>> {
        if !self.write_back {
            return None;
        }
        let s = lock(&self.handles).staged(ino)?;
        (!s.is_gone() && lock(&self.inodes).is_fresh(ino)).then_some(s)
    }

    /// Gives the waiting write-back record of `s` the attributes `s` now
    /// has: the record is rewritten in the journal, in its place in the
    /// queue, and the one it replaces goes once the new one is on the disk.
    /// True when done, or when no record waits (the next close carries
    /// them); false when a record is going up right now (or the journal
    /// could not take the new one): the change must wait for it.
    fn amend_attrs(&self, s: &Staged) -> bool {
        matches!(self.amend(s, |spec| s.attributes_into(spec), || {}), Amended::Yes | Amended::NoRecord)
    }

    /// Rewrites the waiting record of `s` with `edit` applied to its spec,
    /// then runs `then` while no snapshot of `s` can be taken yet (see
    /// [`Staged::hold`]).
    fn amend(&self, s: &Staged, edit: impl FnOnce(&mut UploadSpec), then: impl FnOnce()) -> Amended {
        let amended = s.hold(|| {
            let amended = self.queue.amend(s.ino, |rec| {
                let mut spec = rec.spec.clone();
                edit(&mut spec);
                self.journal.rewrite(rec, &spec)
            });
            if matches!(amended, Amend::Done(_)) {
                then();
            }
            amended
        });
        match amended {
            Amend::Done(old) => {
                self.journal.supersede(old);
                Amended::Yes
            }
            Amend::Nothing => Amended::NoRecord,
            Amend::Going => Amended::Busy,
            Amend::Failed(e) => {
                log::warn!("cannot rewrite the write-back record of inode {} ({e}); waiting for it instead", s.ino);
                Amended::Busy
            }
        }
    }

    /// The mode `ino` keeps when `who` writes, truncates or chowns it, if
    /// that drops its set-group-id: Linux drops it for anyone but root
    /// outside the file's group. (The kernel's FUSE side only handles the
    /// case with group execute set; the rest is left to the file system.)
    pub(super) fn mode_without_sgid(&self, ino: Ino, who: Who) -> Result<Option<u32>, Errno> {
        if who.uid == 0 {
            return Ok(None);
        }
        let Some(i) = self.shown(ino)? else { return Ok(None) };
        if i.kind != Kind::File || i.mode & S_ISGID == 0 || i.mode & 0o010 != 0 {
            return Ok(None);
        }
        if who.gid == i.gid || super::caller::has_supplementary_group(who.pid, i.gid) {
            return Ok(None);
        }
        Ok(Some(i.mode & !S_ISGID))
    }

    /// Before `who` writes through `fh`: the set-group-id rule of a write.
    pub fn before_write(&self, fh: u64, who: Who) -> Result<(), Errno> {
        let Some(of) = lock(&self.handles).file(fh) else { return Ok(()) };
        of.writer.store(who.pid, std::sync::atomic::Ordering::Relaxed);
        if let Some(mode) = self.mode_without_sgid(of.ino, who)? {
            self.setattr(of.ino.0, SetAttr { mode: Some(mode), ..Default::default() }, Some(fh))?;
        }
        Ok(())
    }

    /// Whether changes of the file with this staging copy stay with the
    /// copy: it is not on the cluster yet, or not any more.
    pub(super) fn is_local(&self, s: &Staged) -> bool {
        s.is_gone() || lock(&self.inodes).is_fresh(s.ino)
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>, Errno> {
        let i = self.inode(Ino(ino))?.ok_or(Errno::ENOENT)?;
        if i.kind != Kind::Symlink {
            return Err(Errno::EINVAL);
        }
        Ok(i.target.into_bytes())
    }

    // ----- requests: namespace changes -----

    /// mknod(2): a regular file, FIFO, socket or device (the kernel sends
    /// nothing else).
    pub fn mknod(&self, parent: u64, name: &OsStr, mode: u32, rdev: u32, owner: Owner) -> Result<FileAttr, Errno> {
        let kind = match Kind::from_mode(mode) {
            Some(Kind::Dir | Kind::Symlink) => return Err(Errno::EINVAL),
            Some(k) => k,
            // Type 0 is a regular file, as mknod(2) says.
            None if mode & libc::S_IFMT == 0 => Kind::File,
            None => return Err(Errno::EINVAL),
        };
        let node = NewNode {
            kind,
            mode: mode & 0o7777,
            uid: owner.uid,
            gid: owner.gid,
            rdev: u64::from(rdev),
            target: String::new(),
        };
        self.make(Ino(parent), name, &node)
    }

    pub fn mkdir(&self, parent: u64, name: &OsStr, mode: u32, owner: Owner) -> Result<FileAttr, Errno> {
        let node = NewNode {
            kind: Kind::Dir,
            mode: mode & 0o7777,
            uid: owner.uid,
            gid: owner.gid,
            rdev: 0,
            target: String::new(),
        };
        self.make(Ino(parent), name, &node)
    }

    pub fn symlink(&self, parent: u64, name: &OsStr, target: &Path, owner: Owner) -> Result<FileAttr, Errno> {
        // The cluster keeps targets as text (the command line prints them).
        let target = target.to_str().ok_or(Errno::EINVAL)?;
        let node = NewNode {
            kind: Kind::Symlink,
            mode: 0o777,
            uid: owner.uid,
            gid: owner.gid,
            rdev: 0,
            target: target.into(),
        };
        self.make(Ino(parent), name, &node)
    }

    fn make(&self, parent: Ino, name: &OsStr, node: &NewNode) -> Result<FileAttr, Errno> {
        let name = checked(name)?;
        // A file made here and not stored yet holds the name already.
        if lock(&self.inodes).fresh_at(parent, name).is_some() {
            return Err(Errno::EEXIST);
        }
        let sent = Instant::now();
        let touched = self.cluster.make(parent, name, node).map_err(|e| fail("make", parent, e))?;
        let i = touched.inodes.first().cloned().ok_or(Errno::EIO)?;
        {
            let (now, mut m) = (Instant::now(), lock(&self.meta));
            took(&mut m, touched, sent, now);
            m.put_name(parent, name, Some(child_of(name, &i)), now);
            if i.is_dir() {
                // Just made: nothing is in it (names looked up in it next
                // need no request), as of its first version, so the
                // changes made in it here keep it so (a copy or an
                // unpacking into it asks for no name).
                let asked = m.asking();
                m.put_asked_listing(i.ino, Listed { entries: Vec::new(), version: Some(i.version) }, now, asked);
            }
        }
        lock(&self.inodes).looked_up(i.ino);
        Ok(self.attr(&i))
    }

    /// link(2): a new name for `ino`.
    pub fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> Result<FileAttr, Errno> {
        let (ino, parent) = (Ino(ino), Ino(newparent));
        let name = checked(newname)?;
        if lock(&self.inodes).fresh_at(parent, name).is_some() {
            return Err(Errno::EEXIST);
        }
        // The cluster can only name what it has.
        self.store_fresh(ino)?;
        self.settle(&[Scope::File(ino)])?;
        let sent = Instant::now();
        let touched = self.cluster.link(ino, parent, name).map_err(|e| fail("link", ino, e))?;
        let i = touched.inodes.first().cloned().ok_or(Errno::EIO)?;
        {
            let (now, mut m) = (Instant::now(), lock(&self.meta));
            took(&mut m, touched, sent, now);
            m.put_name(parent, name, Some(child_of(name, &i)), now);
        }
        lock(&self.inodes).looked_up(ino);
        let shown = self.shown(ino)?.unwrap_or(i);
        Ok(self.attr(&shown))
    }

    /// A file made here goes up now (before the cluster can link, move or
    /// exchange it); nothing to do for any other.
    ///
    /// # Errors
    /// Why it could not be stored; ENOENT if it was dropped meanwhile.
    pub(super) fn store_fresh(&self, ino: Ino) -> Result<(), Errno> {
        if !lock(&self.inodes).is_fresh(ino) {
            return Ok(());
        }
        // Bound first: a guard in the `if let` would hold every handle's
        // lock through the upload.
        let staged = lock(&self.handles).staged(ino);
        if let Some(s) = staged {
            self.sync_staged(&s)?;
        }
        self.settle(&[Scope::File(ino)])?;
        if lock(&self.inodes).is_fresh(ino) {
            log::warn!("inode {ino} made here could not be stored before it was moved or linked");
            return Err(Errno::EIO);
        }
        Ok(())
    }

    pub fn unlink(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let parent = Ino(parent);
        let name = checked(name)?;
        let fresh = lock(&self.inodes).fresh_at(parent, name);
        if let Some(ino) = fresh {
            // From now on nothing of it goes up (uploaders drop its waiting
            // records); one going up finishes first, and then the cluster
            // has it and it is removed there as any other file.
            let staged = lock(&self.handles).staged(ino);
            if let Some(s) = &staged {
                s.mark_gone();
            }
            // A record still waiting goes at once; one going up finishes first.
            if let Some(job) = self.queue.withdraw(ino) {
                self.journal.remove(&job.rec);
                self.record_dropped(job.owner, None);
            }
            self.settle(&[Scope::File(ino)])?;
            let dropped = {
                let mut t = lock(&self.inodes);
                let was = t.is_fresh(ino);
                t.drop_fresh(ino);
                was
            };
            // Not fresh any more: it went up meanwhile, or its records were
            // dropped and its copy retired (then the cluster never had it).
            let went_up = !dropped && self.child(parent, name)?.is_some_and(|i| i.ino == ino);
            if !went_up {
                let mut m = lock(&self.meta);
                m.touch_dir(parent, now_ns());
                m.put_name(parent, name, None, Instant::now());
                return Ok(());
            }
        }
        let i = self.named_child(parent, name)?.ok_or(Errno::ENOENT)?;
        if i.is_dir() {
            return Err(Errno::EISDIR);
        }
        self.settle(&[Scope::File(i.ino)])?;
        let sent = Instant::now();
        let touched = self.cluster.remove(parent, name, Removal::NonDir).map_err(|e| fail("unlink", parent, e))?;
        {
            let (now, mut m) = (Instant::now(), lock(&self.meta));
            m.put_name(parent, name, None, now);
            // A last name gone: the inode is not among those still there.
            if !touched.inodes.iter().any(|t| t.ino == i.ino) {
                m.inode_changed(i.ino, now_ns(), -1);
            }
            took(&mut m, touched, sent, now);
        }
        self.maybe_gone(i.ino);
        Ok(())
    }

    /// `ino` lost a name: if it was its last, a staging copy of it (open
    /// here for writing) is never uploaded.
    fn maybe_gone(&self, ino: Ino) {
        let Some(s) = lock(&self.handles).staged(ino) else { return };
        // Asked, not taken from the cache: another name may have come meanwhile.
        match self.cluster.getattr(ino) {
            Ok(None) => {
                s.mark_gone();
                lock(&self.meta).put_attr(ino, None, Instant::now());
            }
            Ok(Some(i)) => lock(&self.meta).put_attr(ino, Some(i), Instant::now()),
            // Unknown: an upload to a gone inode finds it gone then.
            Err(e) => log::info!("cannot tell whether inode {ino} still has a name: {e}"),
        }
    }

    pub fn rmdir(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let parent = Ino(parent);
        let name = checked(name)?;
        if lock(&self.inodes).fresh_at(parent, name).is_some() {
            return Err(Errno::ENOTDIR);
        }
        let i = self.named_child(parent, name)?.ok_or(Errno::ENOENT)?;
        if !i.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        // Files closed in it go up first: then it is not empty.
        self.settle(&[Scope::In(i.ino)])?;
        if lock(&self.inodes).has_fresh_in(i.ino) {
            return Err(Errno::ENOTEMPTY);
        }
        let sent = Instant::now();
        let touched = self.cluster.remove(parent, name, Removal::Dir).map_err(|e| fail("rmdir", parent, e))?;
        let (now, mut m) = (Instant::now(), lock(&self.meta));
        m.put_name(parent, name, None, now);
        took(&mut m, touched, sent, now);
        m.put_attr(i.ino, None, now);
        m.forget_listing(i.ino);
        Ok(())
    }

    /// rename(2) and renameat2(2) with RENAME_NOREPLACE or RENAME_EXCHANGE.
    pub fn rename(&self, parent: u64, name: &OsStr, newparent: u64, newname: &OsStr, flags: u32) -> Result<(), Errno> {
        let mode = match flags {
            0 => RenameMode::Replace,
            f if f == libc::RENAME_NOREPLACE => RenameMode::NoReplace,
            f if f == libc::RENAME_EXCHANGE => RenameMode::Exchange,
            // Whiteouts belong to overlay file systems; both flags at once
            // contradict each other.
            _ => return Err(Errno::EINVAL),
        };
        let (parent, newparent) = (Ino(parent), Ino(newparent));
        let (name, newname) = (checked(name)?, checked(newname)?);
        let src_fresh = lock(&self.inodes).fresh_at(parent, name);
        if let Some(s) = src_fresh.and_then(|ino| self.amendable(ino)).filter(|_| mode != RenameMode::Exchange) {
            if self.rename_written_back(&s, (parent, name), (newparent, newname), mode)? {
                return Ok(());
            }
        }
        // The cluster moves what it has: a file made here goes up first.
        if let Some(ino) = src_fresh {
            self.store_fresh(ino)?;
        }
        let dst_fresh = lock(&self.inodes).fresh_at(newparent, newname);
        match (dst_fresh, mode) {
            (Some(_), RenameMode::NoReplace) => return Err(Errno::EEXIST),
            (Some(ino), RenameMode::Exchange) => self.store_fresh(ino)?,
            _ => {}
        }
        let src = self.named_child(parent, name)?.ok_or(Errno::ENOENT)?;
        let dst = self.named_child(newparent, newname)?;
        // A file made in it and still open here (so not on the cluster
        // yet) leaves a directory not empty, as rmdir says.
        if let Some(d) = dst.as_ref().filter(|d| d.is_dir() && mode == RenameMode::Replace) {
            if lock(&self.inodes).has_fresh_in(d.ino) {
                return Err(Errno::ENOTEMPTY);
            }
        }
        let mut scopes = vec![Scope::File(src.ino)];
        scopes.extend(dst.as_ref().map(|d| Scope::File(d.ino)));
        // Files closed inside a moved directory go up first, so everyone
        // sees them moved with it (their records name the directory by
        // inode, so they would land right after it anyway).
        let mut moved = vec![&src];
        moved.extend(dst.as_ref().filter(|_| mode == RenameMode::Exchange));
        for dir in moved.into_iter().filter(|i| i.is_dir()) {
            scopes.extend(self.fresh_dirs_within(dir.ino)?.into_iter().map(Scope::In));
        }
        // A directory to be replaced goes up with the files closed in it:
        // the cluster must see it is not empty and refuse, or the move
        // takes the directory and the files' records find no parent.
        if let Some(d) = dst.as_ref().filter(|d| d.is_dir() && mode != RenameMode::Exchange) {
            scopes.push(Scope::In(d.ino));
        }
        self.settle(&scopes)?;
        let sent = Instant::now();
        let touched =
            self.cluster.rename(parent, name, newparent, newname, mode).map_err(|e| fail("rename", parent, e))?;
        {
            let (now, mut m) = (Instant::now(), lock(&self.meta));
            let back = match (&dst, mode) {
                (Some(d), RenameMode::Exchange) => Some(child_of(name, d)),
                _ => None,
            };
            m.put_name(parent, name, back, now);
            m.put_name(newparent, newname, Some(child_of(newname, &src)), now);
            // A replaced inode that lost its last name is not among those
            // still there.
            if let Some(d) = dst.as_ref().filter(|d| !touched.inodes.iter().any(|t| t.ino == d.ino)) {
                m.put_attr(d.ino, None, now);
            }
            took(&mut m, touched, sent, now);
        }
        if mode != RenameMode::Exchange {
            // A file made here at the target, not stored yet, is replaced:
            // it never goes up.
            if let Some(ino) = dst_fresh {
                if let Some(s) = lock(&self.handles).staged(ino) {
                    s.mark_gone();
                }
                lock(&self.inodes).drop_fresh(ino);
            }
            if let Some(d) = dst.filter(|d| d.ino != src.ino) {
                self.maybe_gone(d.ino);
            }
        }
        Ok(())
    }

    /// Moves a file made here and not on the cluster yet (with write-back)
    /// by giving its waiting record the new name: the upload makes it
    /// there, replacing what is there as rename(2) would. False (nothing
    /// done) when no record of it waits (it is still open, not closed: it
    /// goes up first, as without write-back), its record is going up right
    /// now, or what is at the new name must be settled on the cluster
    /// first: a directory, or a file with changes of its own on their way.
    fn rename_written_back(
        &self,
        s: &Staged,
        (parent, name): (Ino, &str),
        (newparent, newname): (Ino, &str),
        mode: RenameMode,
    ) -> Result<bool, Errno> {
        let ino = s.ino;
        let dst_fresh = lock(&self.inodes).fresh_at(newparent, newname);
        if dst_fresh == Some(ino) {
            return Ok(true);
        }
        let dst = match dst_fresh {
            Some(_) => None,
            None => self.child(newparent, newname)?,
        };
        if mode == RenameMode::NoReplace && (dst_fresh.is_some() || dst.is_some()) {
            return Err(Errno::EEXIST);
        }
        if dst_fresh.is_some_and(|other| self.queue.holds(Scope::File(other))) {
            return Ok(false);
        }
        if let Some(d) = &dst {
            let busy = lock(&self.handles).staged(d.ino).is_some() || self.queue.holds(Scope::File(d.ino));
            if d.is_dir() || busy {
                return Ok(false);
            }
        }
        let target = Target::New { parent: newparent, name: newname.to_string(), ino };
        let moved = self.amend(
            s,
            |spec| {
                spec.target = target;
                // What is at the new name is replaced, unless the caller said not to.
                spec.exclusive = mode == RenameMode::NoReplace;
            },
            || lock(&self.inodes).add_fresh(ino, newparent, newname),
        );
        if moved != Amended::Yes {
            return Ok(false);
        }
        let now = now_ns();
        s.update_meta(|m| m.ctime_ns = now);
        {
            let mut m = lock(&self.meta);
            m.touch_dir(parent, now);
            m.touch_dir(newparent, now);
        }
        // A file made here at the new name, not stored yet, never goes up.
        if let Some(other) = dst_fresh {
            if let Some(o) = lock(&self.handles).staged(other) {
                o.mark_gone();
            }
            lock(&self.inodes).drop_fresh(other);
        }
        log::debug!("inode {ino} moved from {parent}/{name} to {newparent}/{newname} in its write-back record");
        Ok(true)
    }

    /// The directories at or below `top` that hold files made here and
    /// not stored yet.
    fn fresh_dirs_within(&self, top: Ino) -> Result<Vec<Ino>, Errno> {
        let dirs = lock(&self.inodes).fresh_dirs();
        let mut out = Vec::new();
        for d in dirs {
            if self.is_within(d, top)? {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Whether directory `dir` is `top` or lies below it.
    fn is_within(&self, dir: Ino, top: Ino) -> Result<bool, Errno> {
        let up = |at| -> Result<Option<Ino>, Errno> { Ok(self.inode(at)?.map(|i| i.parent)) };
        Ok(namespace::within(dir, top, up)?.unwrap_or(false))
    }

    // ----- requests: directories -----

    pub fn opendir(&self, ino: u64) -> Result<u64, Errno> {
        let dir = Ino(ino);
        // Taken first, with their copies here: a file that goes up while the
        // listing is fetched is in one or the other. (Once up, its copy
        // retires: looked up after the listing, it would be in neither.)
        let fresh = lock(&self.inodes).fresh_in(dir);
        let fresh: Vec<(String, Arc<Staged>)> = {
            let h = lock(&self.handles);
            fresh.into_iter().filter_map(|(name, ino)| Some((name, h.staged(ino)?))).collect()
        };
        let this = self.inode(dir)?.ok_or(Errno::ENOENT)?;
        if !this.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let children = self.listing_to_walk(dir)?;
        let up = if dir == Ino::ROOT || this.parent == Ino::NONE { Ino::ROOT } else { this.parent };
        let mut items = Vec::with_capacity(children.len() + fresh.len() + 2);
        items.push(DirItem { ino: dir, kind: Kind::Dir, name: ".".into() });
        items.push(DirItem { ino: up, kind: Kind::Dir, name: "..".into() });
        // Files made here that the cluster does not have yet, over what the
        // cluster has at their names (a file moved here over another one,
        // waiting to go up). Checked now: one unlinked meanwhile (while
        // still open) is gone.
        let fresh: Vec<(String, Ino)> =
            fresh.into_iter().filter(|(_, s)| !s.is_gone()).map(|(name, s)| (name, s.ino)).collect();
        let shadowed: std::collections::HashSet<&str> = fresh.iter().map(|(n, _)| n.as_str()).collect();
        items.extend(children.iter().filter(|c| !shadowed.contains(c.name.as_str())).map(|c| DirItem {
            ino: c.ino,
            kind: c.kind,
            name: c.name.clone(),
        }));
        items.extend(fresh.into_iter().map(|(name, ino)| DirItem { ino, kind: Kind::File, name }));
        Ok(lock(&self.handles).add_dir(items))
    }

    /// The listing taken at opendir.
    pub fn readdir(&self, fh: u64) -> Result<Arc<Vec<DirItem>>, Errno> {
        lock(&self.handles).dir(fh).ok_or(Errno::EBADF)
    }

    /// The listing from `offset` on, handed to `add(item, next offset)`
    /// until it says the reply is full.
    pub fn readdir_from(&self, fh: u64, offset: u64, mut add: impl FnMut(&DirItem, u64) -> bool) -> Result<(), Errno> {
        let items = self.readdir(fh)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, item) in items.iter().enumerate().skip(start) {
            if add(item, (i + 1) as u64) {
                break;
            }
        }
        Ok(())
    }

    /// The listing from `offset` on with each entry's attributes, handed to
    /// `add(item, next offset, attributes)` until it says the reply is full.
    /// Each entry handed over (but `.` and `..`) is a lookup the kernel holds.
    pub fn readdirplus(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(&DirItem, u64, &FileAttr) -> bool,
    ) -> Result<(), Errno> {
        let items = self.readdir(fh)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, item) in items.iter().enumerate().skip(start) {
            let shown = match self.shown(item.ino) {
                Ok(Some(s)) => s,
                // Removed since the listing was taken: left out.
                Ok(None) | Err(Errno::ENOENT) => continue,
                Err(e) if i == start => return Err(e),
                // What was added so far goes; the kernel asks again from there.
                Err(_) => break,
            };
            if add(item, (i + 1) as u64, &self.attr(&shown)) {
                break;
            }
            if item.name != "." && item.name != ".." {
                lock(&self.inodes).looked_up(item.ino);
            }
        }
        Ok(())
    }

    pub fn releasedir(&self, fh: u64) -> Result<(), Errno> {
        lock(&self.handles).remove_dir(fh);
        Ok(())
    }

    // ----- requests: extended attributes -----

    pub fn getxattr(&self, ino: u64, name: &OsStr, size: u32) -> Result<XattrReply, Errno> {
        let name = name.to_str().ok_or(Errno::ENODATA)?;
        namespace::check_xattr_name(name).map_err(|e| errno(&e))?;
        let i = self.shown(Ino(ino))?.ok_or(Errno::ENOENT)?;
        let value = i.xattrs.get(name).ok_or(Errno::ENODATA)?;
        sized(&value.0, size)
    }

    /// The names, each ending in NUL; `trusted.*` only for root, as ext4.
    pub fn listxattr(&self, ino: u64, size: u32, uid: u32) -> Result<XattrReply, Errno> {
        let i = self.shown(Ino(ino))?.ok_or(Errno::ENOENT)?;
        let mut names = Vec::new();
        for name in i.xattrs.keys().filter(|n| uid == 0 || !n.starts_with("trusted.")) {
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        sized(&names, size)
    }

    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32, position: u32) -> Result<(), Errno> {
        let mode = match flags {
            0 => XattrMode::Any,
            libc::XATTR_CREATE => XattrMode::Create,
            libc::XATTR_REPLACE => XattrMode::Replace,
            // Both at once can never succeed; Linux says which one failed.
            f if f == libc::XATTR_CREATE | libc::XATTR_REPLACE => {
                return match self.getxattr(ino, name, 0) {
                    Ok(_) => Err(Errno::EEXIST),
                    Err(e) => Err(e),
                };
            }
            _ => return Err(Errno::EINVAL),
        };
        if position != 0 {
            return Err(Errno::EINVAL);
        }
        let name = name.to_str().ok_or(Errno::EOPNOTSUPP)?;
        let value = Bytes(value.to_vec());
        self.change_xattrs(
            Ino(ino),
            "setxattr",
            |plan, ino| namespace::set_xattr(plan, ino, name, &value, mode),
            |c, ino| c.set_xattr(ino, name, &value.0, mode),
        )
    }

    pub fn removexattr(&self, ino: u64, name: &OsStr) -> Result<(), Errno> {
        let name = name.to_str().ok_or(Errno::ENODATA)?;
        self.change_xattrs(
            Ino(ino),
            "removexattr",
            |plan, ino| namespace::remove_xattr(plan, ino, name),
            |c, ino| c.remove_xattr(ino, name),
        )
    }

    /// Changes the extended attributes of `ino`: with the rule `local` on
    /// a file only this mount has, else with `remote` on the cluster.
    fn change_xattrs(
        &self,
        ino: Ino,
        what: &str,
        local: impl FnOnce(&mut Plan<'_, One>, Ino) -> scs_common::Result<Inode>,
        remote: impl FnOnce(&dyn Cluster, Ino) -> scs_common::Result<Inode>,
    ) -> Result<(), Errno> {
        match self.amendable(ino) {
            // A new file waiting to go up takes them into its record (see `setattr`).
            Some(s) => {
                apply_locally(&s, local)?;
                if self.amend_attrs(&s) {
                    return Ok(());
                }
                // Its record is going up right now: the change follows it.
                self.settle(&[Scope::File(ino)])?;
            }
            None => {
                self.settle(&[Scope::File(ino)])?;
                let staged = lock(&self.handles).staged(ino).filter(|s| self.is_local(s));
                if let Some(s) = staged {
                    return apply_locally(&s, local).map(|_| ());
                }
            }
        }
        let i = remote(self.cluster.as_ref(), ino).map_err(|e| fail(what, ino, e))?;
        lock(&self.meta).put_attr(ino, Some(i), Instant::now());
        Ok(())
    }

    // ----- requests: the file system -----

    pub fn statfs(&self) -> Result<Space, Errno> {
        let r = self.cluster.status().map_err(|e| fail("statfs", Ino::ROOT, e))?;
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
}

/// A name from the kernel, checked as the cluster checks it.
pub(super) fn checked(name: &OsStr) -> Result<&str, Errno> {
    let name = name.to_str().ok_or(Errno::EINVAL)?;
    name::validate_component(name).map_err(|e| errno(&e))
}

/// `name` leading to `i`, as a listing shows it.
pub(super) fn child_of(name: &str, i: &Inode) -> Child {
    Child { name: name.to_string(), ino: i.ino, kind: i.kind }
}

pub(super) fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
    }
}

/// An extended attribute answer for a buffer of `size` bytes (0: the size).
fn sized(data: &[u8], size: u32) -> Result<XattrReply, Errno> {
    let len = u32::try_from(data.len()).map_err(|_| Errno::E2BIG)?;
    match size {
        0 => Ok(XattrReply::Size(len)),
        s if s < len => Err(Errno::ERANGE),
        _ => Ok(XattrReply::Data(data.to_vec())),
    }
}

/// What [`Core::amend`] did with a file's waiting write-back record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Amended {
    /// Rewritten with the change.
    Yes,
    /// None waits or goes up (the file is not closed yet).
    NoRecord,
    /// One is going up right now (or could not be rewritten): the change
    /// must wait for it.
    Busy,
}

/// The namespace of one inode: the leader's rules run on a file only this
/// mount has (attributes set on a file before it is stored).
pub(super) struct One(Inode);

impl View for One {
    fn inode(&self, ino: Ino) -> scs_common::Result<Option<Inode>> {
        Ok((ino == self.0.ino).then(|| self.0.clone()))
    }

    fn dentry(&self, _parent: Ino, _name: &str) -> scs_common::Result<Option<Dentry>> {
        Ok(None)
    }

    fn has_children(&self, _dir: Ino) -> scs_common::Result<bool> {
        Ok(false)
    }
}

/// Runs a namespace rule on the file of staging copy `s` as this mount
/// knows it, and keeps the result there.
fn apply_locally(
    s: &Staged,
    rule: impl FnOnce(&mut Plan<'_, One>, Ino) -> scs_common::Result<Inode>,
) -> Result<Inode, Errno> {
    let mut out = Err(Errno::EIO);
    s.update_meta(|m| {
        let one = One(m.clone());
        let mut plan = Plan::new(&one, now_ns());
        out = match rule(&mut plan, m.ino) {
            Ok(i) => {
                *m = i.clone();
                Ok(i)
            }
            Err(e) => Err(errno(&e)),
        };
    });
    out
}

/// What a change asked for at `sent` touched, as the cluster stamped it:
/// its inodes, and the steps of its directories (which keep their
/// listings fresh; see [`MetaCache::dir_stepped`]).
fn took(m: &mut MetaCache, changed: Changed, sent: Instant, now: Instant) {
    for t in changed.inodes {
        m.put_attr(t.ino, Some(t), now);
    }
    for step in &changed.dirs {
        m.dir_stepped(step, sent);
    }
}

/// Logs an error from the cluster where it is handled, and maps it.
pub(super) fn fail(what: &str, ino: Ino, e: Error) -> Errno {
    let n = errno(&e);
    if n == Errno::EIO {
        IO_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        log::warn!("{what} (inode {ino}): {e}");
    } else {
        log::debug!("{what} (inode {ino}): {e}");
    }
    n
}
