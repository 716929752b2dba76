//! Open files: create, open, read, write, close, fsync; and how a closed
//! file reaches the cluster: at close through its staging copy
//! ([`super::staged`] decides: streamed, uploaded whole or journaled), and
//! in the background through the write-back uploaders.
//!
//! A file made here takes an inode number from the block this mount
//! reserved and is shown by this mount ("fresh") until it is stored, as
//! `Target::New` with the owner, mode, times and extended attributes it
//! was given meanwhile. A file that exists is stored as `Target::Ino`.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{Errno, FileAttr};

use scs_common::proto::rpc::{Target, UPLOAD_MANY_MAX};
use scs_common::types::S_ISGID;
use scs_common::{Error, Ino, Inode, Kind};

use super::cluster::Uploaded;
use super::errno::{errno, io_errno, is_final};
use super::handles::OpenFile;
use super::lock;
use super::ops::{checked, child_of, fail, Core, Owner};
use super::staged::{Staged, Start, Synced, WriteBack};
use super::time::now_ns;
use super::writeback::{is_small, Job, Record, Scope};

/// Threads uploading write-back records.
const UPLOADERS: usize = 6;
/// A change waiting for the write-back records it depends on fails with
/// EIO once no record at all went up for this long (the cluster is
/// unreachable); closing a file waits this long for room in the queue.
const SETTLE_LIMIT: Duration = Duration::from_secs(8);
/// Inode numbers reserved at a time for new files ...
const RESERVE: u32 = 256;
/// ... and reserved again in the background when fewer are left.
const RESERVE_LOW: u64 = 64;
/// How long a look at whether the cluster has room for one more file lasts...
const ROOM_TTL: Duration = Duration::from_secs(2);
/// ... and how long a create waits for it.
const ROOM_ASK: Duration = Duration::from_millis(500);
/// Unmounting (and starting) waits for the write-back records to go up
/// until none did for this long; what is left goes up at the next start.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

impl Core {
    // ----- opening -----

    /// open(2) with O_CREAT of a name the kernel did not know.
    pub fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        owner: Owner,
    ) -> Result<(FileAttr, u64), Errno> {
        let parent = Ino(parent);
        let name = checked(name)?;
        if super::trash::is_virtual(parent) {
            return Err(Errno::EROFS);
        }
        let exclusive = flags & libc::O_EXCL != 0;
        // The kernel's view may be stale: the name may be taken, here or on
        // the cluster. Then this opens what is there.
        // (The table's lock is let go before the cluster may be asked.)
        let fresh = lock(&self.inodes).fresh_at(parent, name);
        let existing = match fresh {
            Some(ino) => Some(ino),
            None => self.named_child(parent, name)?.map(|i| i.ino),
        };
        if let Some(ino) = existing {
            if exclusive {
                return Err(Errno::EEXIST);
            }
            let fh = self.open(ino.0, flags)?;
            lock(&self.inodes).looked_up(ino);
            return Ok((self.getattr(ino.0, Some(fh))?, fh));
        }
        let dir = self.inode(parent)?.ok_or(Errno::ENOENT)?;
        if !dir.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        // A full cluster refuses the create, as a full disk would: a shell's
        // `> file` does not look at close. Asked before `opening` is taken,
        // as it may wait on the cluster.
        if !self.room_for_a_new_file() {
            return Err(Errno::ENOSPC);
        }
        let ino = self.new_ino()?;
        // The group of a set-group-id directory, as the leader will give it.
        let gid = if dir.mode & S_ISGID != 0 { dir.gid } else { owner.gid };
        let now = now_ns();
        let meta = Inode::new(ino, Kind::File, mode, owner.uid, gid, now);
        let s = {
            let _g = lock(&self.opening);
            // Another process made the same name here meanwhile: this opens
            // that file, as it would on a local disk.
            let raced = lock(&self.inodes).fresh_at(parent, name);
            match raced.and_then(|other| lock(&self.handles).staged(other)) {
                Some(_) if exclusive => return Err(Errno::EEXIST),
                Some(other) => {
                    other.join_writer();
                    if flags & libc::O_TRUNC != 0 {
                        if let Err(e) = other.truncate(0) {
                            other.leave_writer();
                            return Err(e);
                        }
                    }
                    other
                }
                None => {
                    let start = Start::Fresh { meta, exclusive };
                    let s = Arc::new(Staged::new(ino, self.staging_path(), start).map_err(|e| io_errno(&e))?);
                    lock(&self.handles).put_staged(s.clone());
                    lock(&self.inodes).add_fresh(ino, parent, name);
                    s
                }
            }
        };
        let ino = s.ino;
        lock(&self.meta).touch_dir(parent, now);
        let append = flags & libc::O_APPEND != 0;
        let of = OpenFile::new(ino, Some(s.clone()), append, None);
        let fh = lock(&self.handles).add_file(of);
        lock(&self.inodes).looked_up(ino);
        Ok((self.attr(&s.meta()), fh))
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
        let left = match self.cluster.status_within(ROOM_ASK) {
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

    /// An inode number for a new file, from the block reserved for this
    /// mount; the next block is asked for in the background when this one
    /// runs low, and waited for only when it is used up.
    fn new_ino(&self) -> Result<Ino, Errno> {
        let (got, low) = {
            let mut t = lock(&self.inodes);
            (t.take_spare(), t.spare_left() < RESERVE_LOW)
        };
        if low {
            self.reserve_in_background();
        }
        if let Some(ino) = got {
            return Ok(ino);
        }
        let (first, count) = self.cluster.reserve_inodes(RESERVE).map_err(|e| fail("reserve", Ino::NONE, e))?;
        let mut t = lock(&self.inodes);
        t.add_spare(first, count);
        t.take_spare().ok_or_else(|| {
            log::warn!("the cluster reserved no inode numbers");
            Errno::EIO
        })
    }

    /// Reserves the first block of inode numbers for new files now, so
    /// files can be made (and, with write-back, closed) while the cluster
    /// does not answer later. A failure is logged: the first create asks.
    pub fn reserve_ahead(&self) {
        if lock(&self.inodes).spare_left() > 0 {
            return;
        }
        match self.cluster.reserve_inodes(RESERVE) {
            Ok((first, count)) => lock(&self.inodes).add_spare(first, count),
            Err(e) => log::warn!("cannot reserve inode numbers for new files yet: {e}"),
        }
    }

    fn reserve_in_background(&self) {
        if self.reserving.swap(true, Ordering::SeqCst) {
            return;
        }
        let (cluster, inodes, reserving) = (self.cluster.clone(), self.inodes.clone(), self.reserving.clone());
        let started = std::thread::Builder::new().name("scs-reserve".into()).spawn(move || {
            match cluster.reserve_inodes(RESERVE) {
                Ok((first, count)) => lock(&inodes).add_spare(first, count),
                Err(e) => log::info!("cannot reserve inode numbers ahead: {e}"),
            }
            reserving.store(false, Ordering::SeqCst);
        });
        if started.is_err() {
            self.reserving.store(false, Ordering::SeqCst);
        }
    }

    pub fn open(&self, ino: u64, flags: i32) -> Result<u64, Errno> {
        let ino = Ino(ino);
        let append = flags & libc::O_APPEND != 0;
        // Written back by an earlier run of this mount and not up yet: the
        // cluster's copy is not the newest, so it goes up first.
        if lock(&self.handles).staged(ino).is_none() {
            self.settle(&[Scope::File(ino)])?;
        }
        if flags & libc::O_ACCMODE == libc::O_RDONLY {
            // O_RDONLY|O_TRUNC empties the file, as Linux does (only root
            // gets here for another's file: the kernel checks write access).
            if flags & libc::O_TRUNC != 0 {
                let staged = lock(&self.handles).staged(ino);
                match staged {
                    Some(s) => s.truncate(0)?,
                    None => self.truncate_stored(ino, 0)?,
                }
            }
            let staged = lock(&self.handles).staged(ino);
            let opened = match staged {
                // Read from the staging copy while it lasts; then what it stored.
                Some(s) => s.clean_inode(),
                None => {
                    let i = self.inode(ino)?.ok_or(Errno::ENOENT)?;
                    if i.is_dir() {
                        return Err(Errno::EISDIR);
                    }
                    Some(i)
                }
            };
            let of = OpenFile::new(ino, None, append, opened);
            return Ok(lock(&self.handles).add_file(of));
        }
        // What is in the trash is kept as it was removed.
        if lock(&self.handles).staged(ino).is_none() && self.inode(ino)?.is_some_and(|i| i.is_trashed()) {
            return Err(Errno::EROFS);
        }
        let staged = self.open_writer(ino, flags & libc::O_TRUNC != 0)?;
        let of = OpenFile::new(ino, Some(staged), append, None);
        Ok(lock(&self.handles).add_file(of))
    }

    /// The staging copy of `ino` for one more writer: shared if there is
    /// one; else empty (`trunc`) or the stored file, fetched on first need.
    fn open_writer(&self, ino: Ino, trunc: bool) -> Result<Arc<Staged>, Errno> {
        let _g = lock(&self.opening);
        // Bound first: joining waits on the copy's state, which an upload holds.
        let staged = lock(&self.handles).staged(ino);
        if let Some(s) = staged {
            s.join_writer();
            if trunc {
                if let Err(e) = s.truncate(0) {
                    s.leave_writer();
                    return Err(e);
                }
            }
            return Ok(s);
        }
        let i = self.inode(ino)?.ok_or(Errno::ENOENT)?;
        match i.kind {
            Kind::File => {}
            Kind::Dir => return Err(Errno::EISDIR),
            _ => return Err(Errno::EINVAL),
        }
        let dest = self.staging_path();
        let start = if trunc { Start::Emptied(i) } else { Start::Later(i) };
        let s = match Staged::new(ino, dest.clone(), start) {
            Ok(s) => Arc::new(s),
            Err(err) => {
                let _ = std::fs::remove_file(&dest);
                return Err(io_errno(&err));
            }
        };
        lock(&self.handles).put_staged(s.clone());
        Ok(s)
    }

    /// truncate(2) of a file nobody has open for writing here.
    pub(super) fn truncate_stored(&self, ino: Ino, size: u64) -> Result<(), Errno> {
        let s = self.open_writer(ino, size == 0)?;
        let res = self.fill(&s).and_then(|_| s.truncate(size)).and_then(|_| self.sync_staged(&s));
        self.close_writer(&s);
        res
    }

    /// Fetches the stored content of a staging copy opened without O_TRUNC,
    /// from the content cache when it is there.
    pub(super) fn fill(&self, s: &Staged) -> Result<(), Errno> {
        if !s.needs_fill() {
            return Ok(());
        }
        s.fill_with(|i, dest| {
            if i.size == 0 {
                std::fs::File::create(dest).map_err(|err| io_errno(&err))?;
                return Ok(i.clone());
            }
            if self.content.copy_to(i.hash, i.size, dest) {
                return Ok(i.clone());
            }
            self.cluster.download_to(i.ino, dest).map_err(|e| fail("download", i.ino, e))
        })
    }

    fn staging_path(&self) -> PathBuf {
        let n = self.serial.fetch_add(1, Ordering::Relaxed);
        self.staging.join(format!("w{n}"))
    }

    // ----- reading and writing -----

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let of = lock(&self.handles).file(fh).ok_or(Errno::EBADF)?;
        let staged = of.staged.clone().or_else(|| lock(&self.handles).staged(of.ino));
        if let Some(s) = staged {
            self.fill(&s)?;
            return s.read(offset, u64::from(size));
        }
        let inode = match &of.opened {
            Some(i) => self.newest_of(of.ino, i),
            // Opened while it was being written here; stored since.
            None => self.inode(of.ino)?.ok_or(Errno::ENOENT)?,
        };
        if offset >= inode.size || size == 0 {
            return Ok(Vec::new());
        }
        let len = u64::from(size).min(inode.size - offset);
        let item = {
            let mut slot = lock(&of.item);
            match &*slot {
                Some(i) if i.hash() == inode.hash && i.size() == inode.size => i.clone(),
                _ => {
                    let i = self.content.item(inode.hash, inode.size).map_err(|e| io_errno(&e))?;
                    *slot = Some(i.clone());
                    i
                }
            }
        };
        if let Some(data) = self.content.read(&item, &self.cluster, of.ino, offset, len)? {
            return Ok(data);
        }
        let (got, data) =
            self.cluster.read_range(of.ino, offset, len, Vec::new()).map_err(|e| fail("read", of.ino, e))?;
        if got.hash != inode.hash {
            log::info!("inode {} changed while it was open for reading", of.ino);
            return Err(Errno::EIO);
        }
        Ok(data)
    }

    /// What a reader of `ino` that opened `opened` reads now: a newer
    /// version stored since (here, or elsewhere and seen within the TTL),
    /// as the reader of a local file sees a rewrite; the opened one once
    /// the file is gone, or when it cannot be checked.
    fn newest_of(&self, ino: Ino, opened: &Inode) -> Inode {
        match self.inode(ino) {
            Ok(Some(i)) if i.kind == Kind::File && i.version > opened.version => i,
            _ => opened.clone(),
        }
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let of = lock(&self.handles).file(fh).ok_or(Errno::EBADF)?;
        let s = of.staged.clone().ok_or(Errno::EBADF)?;
        of.wrote.store(true, Ordering::Relaxed);
        self.fill(&s)?;
        let target = self.target_of(&s);
        s.write(self.cluster.as_ref(), target.as_ref(), (!of.append).then_some(offset), data)
    }

    /// Where the content of a staging copy goes: a new file in its
    /// directory, the existing inode, or nowhere once it is gone.
    fn target_of(&self, s: &Staged) -> Option<Target> {
        if s.is_gone() {
            return None;
        }
        match lock(&self.inodes).fresh_place(s.ino) {
            Some((parent, name)) => Some(Target::New { parent, name, ino: s.ino }),
            None => Some(Target::Ino(s.ino)),
        }
    }

    /// fallocate(2): mode 0 makes the file at least `offset + length` long.
    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> Result<(), Errno> {
        if mode != 0 {
            return Err(Errno::EOPNOTSUPP);
        }
        let of = lock(&self.handles).file(fh).ok_or(Errno::EBADF)?;
        let s = of.staged.clone().ok_or(Errno::EBADF)?;
        of.wrote.store(true, Ordering::Relaxed);
        let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
        self.fill(&s)?;
        if end > s.size() {
            s.truncate(end)?;
        }
        Ok(())
    }

    // ----- closing -----

    /// close(2) by process `pid`: store what was written (with write-back:
    /// in the journal here, on the disk at the release, and on the cluster
    /// soon). Without write-back, not if `pid` still has the file open for
    /// writing, as after the first of a shell redirection's two closes: its
    /// last close stores the file (see [`super::caller`]). That first close
    /// comes before anything is written through the handle, so only then
    /// is `/proc` looked at: a close after writing (nearly every close)
    /// stores at once, without the look's thread hand-off and reads. With
    /// write-back the journal record costs less than looking, and a record
    /// replaced within its wait never goes up.
    pub fn flush(&self, fh: u64, pid: u32) -> Result<(), Errno> {
        let of = lock(&self.handles).file(fh).ok_or(Errno::EBADF)?;
        let Some(s) = &of.staged else { return Ok(()) };
        let unwritten = !of.wrote.load(Ordering::Relaxed);
        if !self.write_back && unwritten && self.caller.holds_open_for_writing(pid, of.ino.0) {
            return Ok(());
        }
        // A close by another process than the one writing, which still has
        // the file open for writing: a child closing the descriptor it
        // inherited (at exec, when a thread of the writer starts a program
        // meanwhile). Storing now would store what is written so far, as a
        // version of its own; the writer's close stores the file.
        let writer = of.writer.load(Ordering::Relaxed);
        if writer != 0 && writer != pid && self.caller.writer_holds_open(writer, of.ino.0) {
            return Ok(());
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
        self.settle(&[Scope::File(of.ino)])?;
        match of.staged.clone().or_else(|| lock(&self.handles).staged(of.ino)) {
            Some(s) => s.take_refusal().map_or(Ok(()), Err),
            None => Ok(()),
        }
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

    /// Drops a staging copy nobody writes and nothing is owed for; its
    /// content becomes a cached copy. Only the bookkeeping is under
    /// `opening` (so no writer joins it meanwhile); the file work is not.
    fn retire_if_unused(&self, s: &Arc<Staged>) {
        let place = {
            let _g = lock(&self.opening);
            if s.in_use() || !s.retire_once() {
                return;
            }
            lock(&self.handles).retire_staged(s);
            // Made here and never stored (its upload failed): it is not on
            // the cluster, and now not here either.
            let mut inodes = lock(&self.inodes);
            let place = inodes.fresh_place(s.ino);
            inodes.drop_fresh(s.ino);
            place
        };
        if let Some(i) = s.clean_inode().filter(|_| !s.is_gone()) {
            self.content.adopt(&i, s.path());
        }
        // With write-back, closed means kept: a file too big for the journal
        // whose store failed at close (the cluster was unreachable) keeps
        // its content in `unsent/`, as a refused record does; a shell's
        // `> file` never looks at what close said.
        if self.write_back && s.failed() && !s.is_gone() {
            let name = place.map_or_else(|| format!("inode-{}", s.ino), |(_, name)| name);
            match self.journal.keep_unsent_file(s.path(), &name) {
                Ok(kept) => {
                    log::error!("{name:?} (inode {}) was not stored; its content is kept in {}", s.ino, kept.display())
                }
                Err(e) => {
                    log::error!("{name:?} (inode {}) was not stored, and keeping it in unsent/ failed: {e}", s.ino)
                }
            }
        }
        s.discard();
    }

    // ----- storing -----

    /// Stores what a staging copy owes (see [`Staged::sync`]), and records
    /// what the cluster then has.
    pub(super) fn sync_staged(&self, s: &Arc<Staged>) -> Result<(), Errno> {
        let replaced = RefCell::new(Vec::new());
        let queue = |rec: Record, gen: u64| {
            let job = Job::new(rec, Some(s.clone()), gen);
            match self.queue.push(job, Instant::now() + SETTLE_LIMIT) {
                Ok(old) => {
                    replaced.borrow_mut().extend(old);
                    Ok(())
                }
                Err(job) => {
                    log::warn!("the write-back queue stayed full; {} is not stored", job.rec.spec.describe());
                    self.journal.remove(&job.rec);
                    Err(Errno::EIO)
                }
            }
        };
        let wb = WriteBack { journal: &self.journal, queue: &queue };
        let settle = || self.settle(&[Scope::File(s.ino)]);
        let target = || self.target_of(s);
        let res = s.sync(self.cluster.as_ref(), &target, self.write_back.then_some(&wb), &settle);
        // Outside the staging copy's lock: dropping a record may retire a copy.
        for old in replaced.into_inner() {
            self.journal.remove(&old.rec);
            self.record_dropped(old.owner, None);
        }
        match res? {
            Synced::Stored(s) => self.stored(&s.target, &s.uploaded, s.sent),
            Synced::Gone => lock(&self.meta).put_attr(s.ino, None, Instant::now()),
            Synced::Nothing | Synced::Journaled => {}
        }
        Ok(())
    }

    /// The cluster stored `target` by a request sent at `sent`: remember
    /// the file, and a file made here stops being fresh. Its name goes into
    /// the cache first: a listing taken in between would miss the file,
    /// neither among the fresh ones nor in the cached listing. With the
    /// name laid over it, the directory's listing steps as the upload says.
    fn stored(&self, target: &Target, uploaded: &Uploaded, sent: Instant) {
        self.counts.stored.fetch_add(1, Ordering::Relaxed);
        let ino = uploaded.inode.ino;
        {
            let (now, mut m) = (Instant::now(), lock(&self.meta));
            if let Target::New { parent, name, .. } = target {
                m.put_name(*parent, name, Some(child_of(name, &uploaded.inode)), now);
                m.dir_changed(*parent, now_ns(), 0);
            }
            m.put_attr(ino, Some(uploaded.inode.clone()), now);
            for step in &uploaded.dirs {
                m.dir_stepped(step, sent);
            }
        }
        if matches!(target, Target::New { .. }) {
            lock(&self.inodes).drop_fresh(ino);
        }
    }

    /// Waits until the write-back records within `scopes` are on the
    /// cluster (they go first), so a change made after them lands after
    /// them; and makes the journal's removals durable, so no record of
    /// them comes back after a power cut to undo the change.
    pub(super) fn settle(&self, scopes: &[Scope]) -> Result<(), Errno> {
        if !self.queue.wait_clear(scopes, SETTLE_LIMIT) {
            super::counts::IO_ERRORS.fetch_add(1, Ordering::Relaxed);
            log::warn!("files written here ({scopes:?}) are not stored on the cluster yet; giving up");
            return Err(Errno::EIO);
        }
        self.journal.sync();
        Ok(())
    }

    /// A journaled record of `owner` will not go up.
    pub(super) fn record_dropped(&self, owner: Option<Arc<Staged>>, refused: Option<Errno>) {
        if let Some(s) = owner {
            if s.record_dropped(refused) == 0 {
                self.retire_if_unused(&s);
            }
        }
    }

    /// Stores every file still owed (unmount, SIGTERM), and waits a while
    /// for the write-back records to go up; the uploaders then stop, and
    /// what is left goes up when the mount next starts.
    pub fn flush_all(&self) {
        let all = lock(&self.handles).all_staged();
        for s in all {
            if s.owes_upload() {
                if let Err(e) = self.sync_staged(&s) {
                    log::error!("could not store inode {} before unmounting: {e:?}", s.ino);
                }
            }
        }
        if !self.queue.is_empty() {
            log::info!("uploading {} written-back files before unmounting", self.queue.len());
        }
        if !self.queue.wait_clear(&[Scope::All], DRAIN_LIMIT) {
            log::warn!(
                "{} written-back files are not on the cluster yet; they go up when the mount next starts",
                self.queue.len()
            );
        }
        self.queue.stop();
        self.journal.stop();
        self.journal.sync();
    }

    /// Ends the uploaders and the slot maker, storing and syncing nothing
    /// (as a killed mount would).
    #[cfg(test)]
    pub(super) fn stop_uploaders(&self) {
        self.queue.stop();
        self.journal.stop();
    }

    // ----- write-back uploads -----

    /// Waits while written-back records go up (at the start, before the
    /// directory appears, so it shows the newest content); false if some
    /// are left once none went up for `idle`.
    pub fn wait_written_back(&self, idle: Duration) -> bool {
        self.queue.wait_clear(&[Scope::All], idle)
    }

    /// Queues the records an earlier mount left, oldest first: a newer
    /// record of a file replaces an older one.
    pub fn queue_left(&self, left: Vec<Record>) {
        if !left.is_empty() {
            log::info!("{} files written back before the mount last stopped are going up now", left.len());
        }
        for rec in left {
            for old in self.queue.push_unbounded(Job::new(rec, None, 0)) {
                self.journal.remove(&old.rec);
            }
        }
    }

    /// Queues the records an earlier mount left and starts the uploaders.
    pub fn start_uploaders(self: &Arc<Core>, left: Vec<Record>) -> std::io::Result<()> {
        self.queue_left(left);
        if self.write_back {
            let core = self.clone();
            std::thread::Builder::new().name("scs-slots".into()).spawn(move || core.journal.make_spares())?;
        }
        for i in 0..UPLOADERS {
            let core = self.clone();
            std::thread::Builder::new().name(format!("scs-upload-{i}")).spawn(move || {
                while let Some(job) = core.queue.take() {
                    core.upload_job(job);
                }
            })?;
        }
        Ok(())
    }

    /// Uploads a record taken from the queue: a small one with the other
    /// small ones ready to go, in one exchange, when there are some.
    fn upload_job(&self, job: Job<Arc<Staged>>) {
        if is_small(&job.rec) && self.many.allowed() {
            let more = self.queue.take_more(UPLOAD_MANY_MAX - 1, is_small);
            if !more.is_empty() {
                let mut jobs = vec![job];
                jobs.extend(more);
                return self.upload_many(jobs);
            }
        }
        self.upload_one(job);
    }

    /// Uploads small records in one exchange. Those it did not store, for a
    /// reason that may pass, go up one at a time.
    fn upload_many(&self, jobs: Vec<Job<Arc<Staged>>>) {
        let (mut sending, mut files, mut alone) = (Vec::new(), Vec::new(), Vec::new());
        for job in jobs {
            let Some(job) = self.unless_gone(job) else { continue };
            let mut bytes = Vec::new();
            match job.rec.content().and_then(|mut r| r.read_to_end(&mut bytes)) {
                Ok(_) => {
                    files.push((job.rec.spec.clone(), bytes));
                    sending.push(job);
                }
                // Reported by the upload of its own.
                Err(_) => alone.push(job),
            }
        }
        if !files.is_empty() {
            let sent = Instant::now();
            match self.cluster.upload_many(&files) {
                Ok(answers) => {
                    for (job, res) in sending.into_iter().zip(answers) {
                        match res {
                            Err(e) if !is_final(&e) => alone.push(job),
                            res => self.finish_upload(job, res, sent),
                        }
                    }
                }
                Err(e) => {
                    self.many.failed(&e);
                    alone.extend(sending);
                }
            }
        }
        for job in alone {
            self.upload_one(job);
        }
    }

    /// The job, unless its file was removed here (or refused) after it was
    /// closed: then its record goes.
    fn unless_gone(&self, job: Job<Arc<Staged>>) -> Option<Job<Arc<Staged>>> {
        if !job.owner.as_ref().is_some_and(|s| s.is_gone()) {
            return Some(job);
        }
        self.journal.remove(&job.rec);
        self.queue.done(&job.rec.spec.target);
        self.record_dropped(job.owner, None);
        None
    }

    /// Uploads one record, retrying while the cluster cannot be reached
    /// (until the mount stops: the record stays in the journal then).
    fn upload_one(&self, job: Job<Arc<Staged>>) {
        let Some(job) = self.unless_gone(job) else { return };
        let target = job.rec.spec.target.clone();
        let what = job.rec.spec.describe();
        let mut pause = Duration::from_millis(100);
        let sent = Instant::now();
        let res = loop {
            let rec = job.rec.clone();
            let open = move || rec.content();
            match self.cluster.upload(job.rec.spec.clone(), Box::new(open)) {
                Err(e) if !is_final(&e) => {
                    log::info!("written-back {what} did not go up ({e}); trying again");
                    if !self.queue.pause(pause) {
                        // Stopping: the journal keeps it for the next mount.
                        self.queue.done(&target);
                        return;
                    }
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                other => break other,
            }
        };
        self.finish_upload(job, res, sent);
    }

    /// What follows the upload of a record, sent at `sent`: it is stored,
    /// gone, or refused for good (its content is kept aside then).
    fn finish_upload(&self, job: Job<Arc<Staged>>, res: Result<Uploaded, Error>, sent: Instant) {
        let target = job.rec.spec.target.clone();
        let what = job.rec.spec.describe();
        match res {
            Ok(uploaded) => {
                // In the cache and no longer fresh before `done`: visible to
                // anyone waiting on the queue.
                self.stored(&target, &uploaded, sent);
                self.journal.remove(&job.rec);
                self.queue.done(&target);
                if let Some(s) = &job.owner {
                    if s.record_stored(job.gen, &uploaded.inode) == 0 {
                        self.retire_if_unused(s);
                    }
                }
            }
            Err(Error::NotFound(e)) if matches!(target, Target::Ino(_)) => {
                // Removed elsewhere after it was closed here: nowhere to go,
                // as for a local file removed while open.
                log::info!("written-back {what} is gone from the cluster ({e}); dropped");
                if let Some(s) = &job.owner {
                    s.mark_gone();
                }
                self.journal.remove(&job.rec);
                self.queue.done(&target);
                self.record_dropped(job.owner, None);
            }
            Err(e) => {
                self.counts.refused.fetch_add(1, Ordering::Relaxed);
                match self.journal.keep_unsent(&job.rec) {
                    Ok(p) => log::error!(
                        "the cluster refused written-back {what} ({e}); its content is kept in {}",
                        p.display()
                    ),
                    Err(err) => {
                        log::error!(
                            "the cluster refused written-back {what} ({e}); keeping its content failed too: {err}"
                        )
                    }
                }
                // It is not on the cluster: it is not here either.
                if let Target::New { parent, name, ino } = &target {
                    let was_fresh = {
                        let mut t = lock(&self.inodes);
                        let was = t.is_fresh(*ino);
                        t.drop_fresh(*ino);
                        was
                    };
                    if was_fresh {
                        if let Some(s) = &job.owner {
                            s.mark_gone();
                        }
                        let mut m = lock(&self.meta);
                        m.forget_name(*parent, name);
                        m.touch_dir(*parent, now_ns());
                    }
                }
                self.queue.done(&target);
                self.record_dropped(job.owner, Some(errno(&e)));
            }
        }
    }
}
