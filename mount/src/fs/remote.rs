//! The mount's way to the cluster: the client library on a runtime the mount
//! owns, with every call bounded in time so no file system request can hang.
//! It implements [`Cluster`], the trait the file system is written against.
//!
//! FUSE worker threads are not runtime threads: they block on these calls.
//! Metadata calls end within the client's retry window (plus a margin);
//! transfers end when they stop making progress for [`STALL`].

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::runtime::Handle;

use scs_common::inode::{Changed, Inode, Listed, NewNode, Removal, RenameMode, SetAttrs, XattrMode};
use scs_common::locks::{FileLock, LockAnswer, SessionId};
use scs_common::proto::rpc::{Request, StatusReport, TrashItem, UploadSpec};
use scs_common::{Error, Ino, Result};

use super::cluster::{Cluster, Opener, UploadStream, Uploaded};
use crate::client::{Client, Sink};

/// A transfer that moves no byte for this long is abandoned.
pub const STALL: Duration = Duration::from_secs(60);
/// Longest wait for room in a streaming upload's queue.
const PUSH_LIMIT: Duration = Duration::from_secs(30);
/// Longest wait for the nodes to store a streamed file after its last byte
/// (they fsync first; the client itself waits up to 120 s).
const FINISH_LIMIT: Duration = Duration::from_secs(130);
/// Longest a ranged read of a few MiB may take.
pub const READ_LIMIT: Duration = Duration::from_secs(40);
/// Added to the retry window for one metadata call.
const MARGIN: Duration = Duration::from_secs(3);
/// While the cluster is down, a metadata call waits this long at most: a
/// file manager or shell would otherwise wait the whole retry window for
/// every request (and one command makes several).
const PROBE: Duration = Duration::from_millis(1500);

/// The client library, its runtime, and the time limits.
pub struct Remote {
    rt: Handle,
    client: Arc<Client>,
    call_limit: Duration,
    /// Set when a call found no leader for its whole retry window; cleared
    /// by any call that gets an answer.
    down: AtomicBool,
}

impl Remote {
    pub fn new(rt: Handle, client: Arc<Client>, retry_window: Duration) -> Remote {
        Remote { rt, client, call_limit: retry_window + MARGIN, down: AtomicBool::new(false) }
    }

    /// The runtime the transfers run on.
    pub fn handle(&self) -> &Handle {
        &self.rt
    }

    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// Runs one metadata call to its end or the call limit (a short one
    /// while the cluster is known to be down).
    fn call<T>(&self, what: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let down = self.down.load(Ordering::Relaxed);
        let limit = if down { PROBE } else { self.call_limit };
        let res = self.rt.block_on(async {
            match tokio::time::timeout(limit, fut).await {
                Ok(r) => r,
                Err(_) => Err(Error::Unavailable(format!("{what}: no answer within {:.1}s", limit.as_secs_f32()))),
            }
        });
        match &res {
            Err(Error::Unavailable(_) | Error::NoQuorum(_)) => {
                if !self.down.swap(true, Ordering::Relaxed) {
                    log::warn!("the cluster is unreachable; requests fail fast until it answers again");
                }
            }
            _ => {
                if self.down.swap(false, Ordering::Relaxed) {
                    log::info!("the cluster answers again");
                }
            }
        }
        res
    }

    /// The status if the cluster gives it within `limit`; a quick look
    /// that says nothing about whether the cluster is down.
    pub fn status_within(&self, limit: Duration) -> Option<StatusReport> {
        self.rt.block_on(async { tokio::time::timeout(limit, self.client.status()).await }).ok()?.ok()
    }
}

impl Cluster for Remote {
    fn lookup(&self, parent: Ino, name: &str) -> Result<Option<Inode>> {
        self.call("lookup", self.client.lookup(parent, name))
    }

    fn getattr(&self, ino: Ino) -> Result<Option<Inode>> {
        self.call("getattr", self.client.getattr(ino))
    }

    fn readdir(&self, dir: Ino) -> Result<Listed> {
        self.call("readdir", self.client.readdir(dir))
    }

    fn make(&self, parent: Ino, name: &str, node: &NewNode) -> Result<Changed> {
        self.call("make", self.client.make(parent, name, node))
    }

    fn link(&self, ino: Ino, parent: Ino, name: &str) -> Result<Changed> {
        self.call("link", self.client.link(ino, parent, name))
    }

    fn remove(&self, parent: Ino, name: &str, what: Removal) -> Result<Changed> {
        self.call("remove", self.client.remove(parent, name, what))
    }

    fn rename(&self, parent: Ino, name: &str, new_parent: Ino, new_name: &str, mode: RenameMode) -> Result<Changed> {
        self.call("rename", self.client.rename(parent, name, new_parent, new_name, mode))
    }

    fn set_attr(&self, ino: Ino, set: &SetAttrs) -> Result<Inode> {
        self.call("setattr", self.client.set_attr(ino, set))
    }

    fn set_xattr(&self, ino: Ino, name: &str, value: &[u8], mode: XattrMode) -> Result<Inode> {
        self.call("setxattr", self.client.set_xattr(ino, name, value, mode))
    }

    fn remove_xattr(&self, ino: Ino, name: &str) -> Result<Inode> {
        self.call("removexattr", self.client.remove_xattr(ino, name))
    }

    fn reserve_inodes(&self, count: u32) -> Result<(Ino, u32)> {
        self.call("reserve", self.client.reserve_inodes(count))
    }

    fn status(&self) -> Result<StatusReport> {
        self.call("status", self.client.status())
    }

    fn status_within(&self, limit: Duration) -> Option<StatusReport> {
        Remote::status_within(self, limit)
    }

    fn upload(&self, spec: UploadSpec, open: Opener) -> Result<Uploaded> {
        let watch = Watch::new();
        let tick = |_: u64| watch.tick();
        let what = format!("upload of {}", spec.describe());
        self.rt
            .block_on(watch.guard(&what, self.client.upload(spec, open, Some(&tick))))
            .and_then(Uploaded::from_changed)
    }

    fn upload_many(&self, files: &[(UploadSpec, Vec<u8>)]) -> Result<Vec<Result<Uploaded>>> {
        // Not through `call`: a cluster that takes small files one at a
        // time says so with `Unavailable`, which does not mean it is down.
        let limit = self.call_limit;
        let answers = self.rt.block_on(async {
            tokio::time::timeout(limit, self.client.upload_many(files)).await.unwrap_or_else(|_| {
                Err(Error::Unavailable(format!("upload of many: no answer within {:.1}s", limit.as_secs_f32())))
            })
        })?;
        Ok(answers.into_iter().map(|a| a.and_then(Uploaded::from_changed)).collect())
    }

    fn start_stream(&self, spec: UploadSpec) -> Result<Box<dyn UploadStream>> {
        let stream = self.call("upload", self.client.upload_stream(spec))?;
        Ok(Box::new(Streaming { rt: self.rt.clone(), stream }))
    }

    fn download_to(&self, ino: Ino, dest: &Path) -> Result<Inode> {
        let watch = Watch::new();
        let tick = |_: u64| watch.tick();
        let what = format!("download of inode {ino}");
        self.rt.block_on(watch.guard(&what, self.client.download_ino(ino, Sink::File(dest.to_path_buf()), Some(&tick))))
    }

    fn read_range(&self, ino: Ino, offset: u64, len: u64, buf: Vec<u8>) -> Result<(Inode, Vec<u8>)> {
        self.rt.block_on(read_range(&self.client, ino, offset, len, buf))
    }

    fn lock(&self, session: SessionId, lock: FileLock) -> Result<LockAnswer> {
        self.call("lock", self.client.lock_request(Request::Lock { session, lock }))
    }

    fn unlock(&self, session: SessionId, ino: Ino, owner: u64, start: u64, end: u64) -> Result<LockAnswer> {
        self.call("unlock", self.client.lock_request(Request::Unlock { session, ino, owner, start, end }))
    }

    fn test_lock(&self, session: SessionId, lock: FileLock) -> Result<LockAnswer> {
        self.call("test lock", self.client.lock_request(Request::TestLock { session, lock }))
    }

    fn keep_alive(&self, session: SessionId) -> Result<LockAnswer> {
        self.call("keep-alive", self.client.lock_request(Request::KeepAlive { session }))
    }

    fn reclaim(&self, session: SessionId, locks: Vec<FileLock>) -> Result<Vec<FileLock>> {
        self.call("reclaim", self.client.reclaim(session, locks))
    }

    fn trash(&self) -> Result<Vec<TrashItem>> {
        self.call("trash", self.client.trash_list())
    }
}

/// A streaming upload driven from a FUSE thread.
struct Streaming {
    rt: Handle,
    stream: crate::client::UploadStream,
}

impl UploadStream for Streaming {
    fn push(&mut self, data: Bytes) -> Result<()> {
        let stream = &mut self.stream;
        self.rt.block_on(async {
            match tokio::time::timeout(PUSH_LIMIT, stream.write(data)).await {
                Ok(r) => r,
                Err(_) => Err(Error::Unavailable("the streaming upload made no progress".into())),
            }
        })
    }

    fn finish(self: Box<Self>) -> Result<Uploaded> {
        let Streaming { rt, stream } = *self;
        rt.block_on(async {
            match tokio::time::timeout(FINISH_LIMIT, stream.finish()).await {
                Ok(r) => r.and_then(Uploaded::from_changed),
                Err(_) => Err(Error::Unavailable("the nodes did not confirm the upload in time".into())),
            }
        })
    }
}

/// A ranged read bounded by [`READ_LIMIT`] (async: also used by cache fills).
pub async fn read_range(client: &Client, ino: Ino, offset: u64, len: u64, buf: Vec<u8>) -> Result<(Inode, Vec<u8>)> {
    match tokio::time::timeout(READ_LIMIT, client.read(ino, offset, len, buf)).await {
        Ok(r) => r,
        Err(_) => Err(Error::Unavailable(format!("reading inode {ino}: no data within {}s", READ_LIMIT.as_secs()))),
    }
}

/// Watches a transfer's progress: it fails once no byte moved for [`STALL`].
struct Watch {
    start: Instant,
    last_ms: AtomicU64,
}

impl Watch {
    fn new() -> Watch {
        Watch { start: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn tick(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        self.start.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }

    async fn guard<T>(&self, what: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                r = &mut fut => return r,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    if self.idle() > STALL {
                        return Err(Error::Unavailable(format!("{what} stalled for {}s", STALL.as_secs())));
                    }
                }
            }
        }
    }
}
