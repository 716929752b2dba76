//! The FUSE file system: the cluster as a local directory.
//!
//! # Layout
//! - this file: the [`fuser::Filesystem`] impl. Each callback is an adapter:
//!   it calls the matching function of [`ops::Core`] and replies. A panic
//!   there is caught and answered with EIO; the mount never dies of one.
//! - [`ops`]: [`ops::Core`], names, attributes and namespace changes, each
//!   returning `Result<_, Errno>`; [`files`]: open files, and how a closed
//!   file reaches the cluster (at close, and the write-back uploaders).
//! - [`cluster`]: the one trait the mount reaches the cluster through;
//!   [`remote`] implements it over the client library (with a time limit
//!   on every call), `fake` in memory for the tests; [`trash`] wraps it
//!   to show the trash, read-only, at `.scs-trash`.
//! - [`staged`]: a file's staging copy and the choice of how its content
//!   goes up (streamed, uploaded whole, or journaled).
//! - [`writeback`]: the journal and queue of `--write-back`.
//! - [`handles`]: open files, open listings, staging copies (a table).
//! - [`inodes`]: the kernel's lookup counts, files made here and not
//!   stored yet, and reserved inode numbers (pure, unit-tested).
//! - [`cache`]: inodes, names and listings with the 1 s TTL (pure).
//! - [`content`]: the local content cache, filled by ranged reads.
//! - [`caller`]: whether a closing process still holds the file open.
//! - [`locks`]: advisory locks (fcntl, flock) kept by the leader for every
//!   mount: this mount's copy, keep-alives, reclaims, waiting locks.
//! - [`errno`]: the one mapping from `scs_common::Error` to errno.
//! - [`time`]: nanosecond times to and from FUSE's.
//! - [`session`]: mounting, signals, unmounting; [`mountpoint`]: checks
//!   before mounting.
//!
//! Nothing imports in a loop: `staged` knows the journal but not the
//! queue's users; `writeback` knows neither; `ops`/`files` use them all.

pub mod buffers;
pub mod cache;
pub mod caller;
pub mod cluster;
pub mod content;
pub mod counts;
pub mod errno;
#[cfg(test)]
pub(crate) mod fake;
pub mod files;
pub mod handles;
pub mod inodes;
pub mod locks;
pub mod mountpoint;
pub mod ops;
pub mod remote;
pub mod report;
pub mod session;
pub mod staged;
#[cfg(test)]
mod tests;
pub mod time;
pub mod trash;
pub mod writeback;

use std::ffi::OsStr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyLock, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use ops::{Core, Owner, SetAttr, Who, XattrReply, TTL};

/// Largest write and read-ahead the kernel is asked for.
const MAX_IO: u32 = 1 << 20;

/// Locks a mutex, recovering it if a panicking thread poisoned it (the data
/// behind our locks stays consistent between statements).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs a request; a panic becomes EIO instead of killing a FUSE thread.
fn guard<T>(f: impl FnOnce() -> Result<T, Errno>) -> Result<T, Errno> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        log::error!("a file system request panicked; answered EIO");
        Err(Errno::EIO)
    })
}

/// The caller of a request: the owner of what it makes.
fn owner(req: &Request) -> Owner {
    Owner { uid: req.uid(), gid: req.gid() }
}

/// The mounted file system: FUSE callbacks over a shared [`Core`].
pub struct ScsFs {
    core: Arc<Core>,
    locks: locks::Locks,
}

impl ScsFs {
    pub fn new(core: Arc<Core>) -> ScsFs {
        let locks = locks::Locks::start(core.cluster.clone());
        ScsFs { core, locks }
    }
}

impl Filesystem for ScsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Each is a wish: the kernel may allow less, and that is fine.
        let _ = config.set_max_write(MAX_IO);
        let _ = config.set_max_readahead(MAX_IO).or_else(|max| config.set_max_readahead(max));
        // O_TRUNC comes with open (no download of content about to be
        // dropped); cached pages go when another client changes a file;
        // listings come with attributes (`ls -l` asks nothing more).
        // Not FUSE_DONT_MASK: the kernel applies the umask.
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        let _ = config.add_capabilities(InitFlags::FUSE_AUTO_INVAL_DATA);
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        // fcntl and flock locks come to us, to hold across every mount.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_POSIX_LOCKS | InitFlags::FUSE_FLOCK_LOCKS) {
            log::warn!("the kernel keeps some locks to this mount ({missing:?}): they will not hold across mounts");
        }
        Ok(())
    }

    fn destroy(&mut self) {
        self.core.flush_all();
        self.locks.release_all();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match guard(|| self.core.lookup(parent.0, name)) {
            Ok((attr, attr_ttl)) => reply.entry_with_ttls(&attr_ttl, &TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let _ = guard(|| self.core.forget(ino.0, nlookup));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match guard(|| self.core.getattr(ino.0, fh.map(|f| f.0))) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let by = Some(Who { uid: req.uid(), gid: req.gid(), pid: req.pid() });
        let set = SetAttr { mode, uid, gid, size, atime, mtime, by };
        match guard(|| self.core.setattr(ino.0, set, fh.map(|f| f.0))) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match guard(|| self.core.readlink(ino.0)) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        match guard(|| self.core.mknod(parent.0, name, mode, rdev, owner(req))) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, _umask: u32, reply: ReplyEntry) {
        match guard(|| self.core.mkdir(parent.0, name, mode, owner(req))) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match guard(|| self.core.unlink(parent.0, name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match guard(|| self.core.rmdir(parent.0, name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(&self, req: &Request, parent: INodeNo, name: &OsStr, target: &Path, reply: ReplyEntry) {
        match guard(|| self.core.symlink(parent.0, name, target, owner(req))) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match guard(|| self.core.rename(parent.0, name, newparent.0, newname, flags.bits())) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        match guard(|| self.core.link(ino.0, newparent.0, newname)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match guard(|| self.core.open(ino.0, flags.0)) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match guard(|| self.core.read(fh.0, offset, size)) {
            Ok(data) => {
                reply.data(&data);
                buffers::give_back(data);
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let who = Who { uid: req.uid(), gid: req.gid(), pid: req.pid() };
        match guard(|| self.core.before_write(fh.0, who).and_then(|_| self.core.write(fh.0, offset, data))) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, req: &Request, ino: INodeNo, fh: FileHandle, lock_owner: LockOwner, reply: ReplyEmpty) {
        let stored = guard(|| self.core.flush(fh.0, req.pid()));
        // After the content: the next holder of the lock reads what was written under it.
        let _ = guard(|| {
            self.locks.flush(ino.0, fh.0, lock_owner.0);
            Ok(())
        });
        match stored {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _ = guard(|| self.core.release(fh.0));
        // The kernel names the owner of the file's flock (FUSE_RELEASE_FLOCK_UNLOCK).
        let _ = guard(|| {
            self.locks.release(ino.0, fh.0, lock_owner.map(|o| o.0));
            Ok(())
        });
        reply.ok();
    }

    fn getlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let done: locks::Done<locks::Probe> = Box::new(move |r| match r {
            Ok(p) => reply.locked(p.start, p.end, p.typ, p.pid),
            Err(e) => reply.error(e),
        });
        // A panic drops the reply: fuser then answers EIO.
        let _ = guard(|| {
            self.locks.getlk(ino.0, lock_owner.0, start, end, typ, pid, done);
            Ok(())
        });
    }

    fn setlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        if typ == libc::F_UNLCK {
            // What was written under the lock goes up before another mount can take it.
            if let Err(e) = guard(|| self.core.fsync(fh.0)) {
                log::debug!("storing inode {ino} before an unlock failed: {e:?}");
            }
        }
        let core = self.core.clone();
        let done: locks::Done<()> = Box::new(move |r| match r {
            Ok(()) => {
                if typ != libc::F_UNLCK {
                    // Before the answer: the holder reads right after it.
                    let _ = guard(|| {
                        core.revalidate(ino.0);
                        Ok(())
                    });
                }
                reply.ok()
            }
            Err(e) => reply.error(e),
        });
        let _ = guard(|| {
            self.locks.setlk(ino.0, fh.0, lock_owner.0, start, end, typ, pid, sleep, done);
            Ok(())
        });
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match guard(|| self.core.fsync(fh.0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match guard(|| self.core.opendir(ino.0)) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let add = |item: &handles::DirItem, next: u64| {
            reply.add(INodeNo(item.ino.0), next, ops::file_type(item.kind), &item.name)
        };
        match guard(|| self.core.readdir_from(fh.0, offset, add)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let add = |item: &handles::DirItem, next: u64, attr: &fuser::FileAttr| {
            reply.add(INodeNo(item.ino.0), next, &item.name, &TTL, attr, Generation(0))
        };
        match guard(|| self.core.readdirplus(fh.0, offset, add)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        let _ = guard(|| self.core.releasedir(fh.0));
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        // Directory changes are stored on the cluster when they are made.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match guard(|| self.core.statfs()) {
            Ok(s) => reply.statfs(s.blocks, s.bfree, s.bfree, s.files, s.ffree, s.bsize, 255, s.bsize),
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        match guard(|| self.core.setxattr(ino.0, name, value, flags, position)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match guard(|| self.core.getxattr(ino.0, name, size)) {
            Ok(x) => reply_xattr(reply, x),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match guard(|| self.core.listxattr(ino.0, size, req.uid())) {
            Ok(x) => reply_xattr(reply, x),
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match guard(|| self.core.removexattr(ino.0, name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // The kernel checks permissions itself (default_permissions).
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match guard(|| self.core.create(parent.0, name, mode, flags, owner(req))) {
            Ok((attr, fh)) => reply.created(&TTL, &attr, Generation(0), FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match guard(|| self.core.fallocate(fh.0, offset, length, mode)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        // The kernel then seeks by itself (SEEK_DATA/SEEK_HOLE see no holes).
        reply.error(Errno::ENOSYS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // Programs fall back to read and write.
        reply.error(Errno::ENOSYS);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::ENOSYS);
    }
}

fn reply_xattr(reply: ReplyXattr, x: XattrReply) {
    match x {
        XattrReply::Size(n) => reply.size(n),
        XattrReply::Data(d) => reply.data(&d),
    }
}
