//! The mount's one way to the cluster: a small trait, implemented by the
//! client library ([`super::remote::Remote`]: real sessions, retries and a
//! time limit on every call) and by an in-memory fake in tests, so the
//! file-system rules (an open file unlinked or renamed over, hard links,
//! owners, write-back order) are tested without /dev/fuse.
//!
//! Every call blocks (FUSE worker threads call it) and ends within a
//! bounded time; errors are `scs_common::Error`, mapped to errno in one
//! place ([`super::errno`]).

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use scs_common::inode::{Changed, Inode, Listed, NewNode, Removal, RenameMode, SetAttrs, XattrMode};
use scs_common::locks::{FileLock, LockAnswer, SessionId};
use scs_common::proto::rpc::{StatusReport, TrashItem, UploadSpec};
use scs_common::{DirStep, Error, Ino, Result};

/// Opens the bytes of an upload; called again for each retry.
pub type Opener = Box<dyn Fn() -> std::io::Result<Box<dyn Read + Send>> + Send + Sync>;

/// An upload whose bytes are pushed as they are written. Dropping it
/// unfinished abandons it: nothing is stored.
pub trait UploadStream: Send {
    /// Queues bytes (any length), waiting for room.
    ///
    /// # Errors
    /// The stream broke off: nothing will be stored by it.
    fn push(&mut self, data: Bytes) -> Result<()>;

    /// Ends the stream and waits until the file is stored.
    fn finish(self: Box<Self>) -> Result<Uploaded>;
}

/// What an upload stored: the file's inode, and the steps of the
/// directories whose entries it changed (a new file's name), which keep
/// their listings here fresh (see `MetaCache::dir_stepped`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uploaded {
    pub inode: Inode,
    pub dirs: Vec<DirStep>,
}

impl Uploaded {
    /// An upload's answer as the cluster gives it: the file's inode first.
    ///
    /// # Errors
    /// An answer without an inode (a protocol error).
    pub fn from_changed(changed: Changed) -> Result<Uploaded> {
        let Changed { inodes, dirs } = changed;
        let inode =
            inodes.into_iter().next().ok_or_else(|| Error::Protocol("an upload's answer has no inode".into()))?;
        Ok(Uploaded { inode, dirs })
    }
}

/// What the mount asks of the cluster. Inode numbers are the cluster's
/// (the root is [`Ino::ROOT`]), so every mount and the command line agree
/// on them.
pub trait Cluster: Send + Sync {
    /// The inode `name` in `parent` leads to; `None` if there is no such name.
    fn lookup(&self, parent: Ino, name: &str) -> Result<Option<Inode>>;
    /// An inode by number; `None` once it is gone.
    fn getattr(&self, ino: Ino) -> Result<Option<Inode>>;
    /// The children of a directory with their inodes, in name order, and
    /// the version of the directory they are of.
    fn readdir(&self, dir: Ino) -> Result<Listed>;
    // A namespace change answers with every inode it touched that is still
    // there, as the cluster stamped them (times, link counts): the one made
    // or linked first, then the directories and the rest. The mount shows
    // those, so every mount agrees on them. With them come the steps of
    // the directories whose entries changed, which keep a listing fresh.
    /// Makes a directory, symlink, FIFO, socket, device or empty file.
    fn make(&self, parent: Ino, name: &str, node: &NewNode) -> Result<Changed>;
    /// A new name for `ino` (link(2)).
    fn link(&self, ino: Ino, parent: Ino, name: &str) -> Result<Changed>;
    /// unlink(2), rmdir(2), or either.
    fn remove(&self, parent: Ino, name: &str, what: Removal) -> Result<Changed>;
    /// rename(2) and renameat2(2).
    fn rename(&self, parent: Ino, name: &str, new_parent: Ino, new_name: &str, mode: RenameMode) -> Result<Changed>;
    /// Mode, owner and times; the ctime moves to the leader's clock.
    fn set_attr(&self, ino: Ino, set: &SetAttrs) -> Result<Inode>;
    fn set_xattr(&self, ino: Ino, name: &str, value: &[u8], mode: XattrMode) -> Result<Inode>;
    fn remove_xattr(&self, ino: Ino, name: &str) -> Result<Inode>;
    /// `count` inode numbers for files made here and stored later
    /// (`Target::New`): the first, and how many were given.
    fn reserve_inodes(&self, count: u32) -> Result<(Ino, u32)>;
    fn status(&self) -> Result<StatusReport>;
    /// The status if the cluster gives it within `limit`; says nothing
    /// about whether the cluster is down.
    fn status_within(&self, limit: Duration) -> Option<StatusReport>;
    /// Stores `spec.size` bytes read from `open()` (called again on each
    /// retry through a failover).
    fn upload(&self, spec: UploadSpec, open: Opener) -> Result<Uploaded>;
    /// Stores several small files (each of a known size up to
    /// `scs_common::inode::INLINE_MAX`, by inode) in one exchange: each
    /// file's answer, in order. One attempt: on an error, store them one
    /// at a time with [`Cluster::upload`] (storing a file again is safe).
    /// The steps given with each file are those of the change that stored
    /// it, which may have stored others of them too.
    fn upload_many(&self, files: &[(UploadSpec, Vec<u8>)]) -> Result<Vec<Result<Uploaded>>>;
    /// Starts a streaming upload (finding the leader is retried; the
    /// stream is not: upload again with [`Cluster::upload`] if it fails).
    fn start_stream(&self, spec: UploadSpec) -> Result<Box<dyn UploadStream>>;
    /// Downloads the whole content of `ino` to `dest`, checked against its hash.
    fn download_to(&self, ino: Ino, dest: &Path) -> Result<Inode>;
    /// `len` bytes of `ino` from `offset` (fewer at the end), into `buf`
    /// (emptied first; a buffer used before needs no new pages), with the
    /// inode they were read from.
    fn read_range(&self, ino: Ino, offset: u64, len: u64, buf: Vec<u8>) -> Result<(Inode, Vec<u8>)>;

    // Advisory locks of this mount's `session`, kept by the leader (see
    // `scs_common::locks` and [`super::locks`]).
    /// Takes or changes a lock.
    fn lock(&self, session: SessionId, lock: FileLock) -> Result<LockAnswer>;
    /// Gives back bytes `start..=end` of `owner`'s locks on `ino`.
    fn unlock(&self, session: SessionId, ino: Ino, owner: u64, start: u64, end: u64) -> Result<LockAnswer>;
    /// The lock of another owner in the way of `lock`, if any (`Granted` when none).
    fn test_lock(&self, session: SessionId, lock: FileLock) -> Result<LockAnswer>;
    /// Renews the session's lease.
    fn keep_alive(&self, session: SessionId) -> Result<LockAnswer>;
    /// Sets the session's locks to `locks`: those refused (held by another mount).
    fn reclaim(&self, session: SessionId, locks: Vec<FileLock>) -> Result<Vec<FileLock>>;

    /// Everything in the trash, with the paths the items had (see
    /// [`super::trash`]).
    fn trash(&self) -> Result<Vec<TrashItem>>;
}

/// Uploads the first `spec.size` bytes of the local file `path`.
pub fn upload_file(cluster: &dyn Cluster, spec: UploadSpec, path: &Path) -> Result<Uploaded> {
    let size = spec.size.unwrap_or(0);
    let path = path.to_path_buf();
    cluster.upload(
        spec,
        Box::new(move || std::fs::File::open(&path).map(|f| Box::new(f.take(size)) as Box<dyn Read + Send>)),
    )
}
