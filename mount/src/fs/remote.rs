//! The mount's way to the cluster: the client library on a runtime the mount
//! owns, with every call bounded in time so no file system request can hang.
//!
//! FUSE worker threads are not runtime threads: they block on these calls.
//! Metadata calls end within the client's retry window (plus a margin);
//! transfers end when they stop making progress for [`STALL`].

use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::runtime::Handle;

use scs_common::proto::rpc::{StatusReport, UploadSpec};
use scs_common::{Entry, Error, Kind, Result};

use crate::client::{Client, Sink, UploadStream};

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

    pub fn stat(&self, name: &str) -> Result<Option<Entry>> {
        self.call("stat", self.client.stat(name))
    }

    pub fn list(&self, dir: &str) -> Result<Vec<Entry>> {
        self.call("list", self.client.list(dir))
    }

    pub fn mkdir(&self, name: &str, mode: u32) -> Result<Entry> {
        self.call("mkdir", self.client.mkdir(name, mode, false))
    }

    pub fn delete(&self, name: &str, kind: Kind) -> Result<()> {
        self.call("delete", self.client.delete(name, Some(kind)))
    }

    pub fn rename(&self, from: &str, to: &str, replace: bool) -> Result<()> {
        self.call("rename", self.client.rename(from, to, replace))
    }

    pub fn setattr(&self, name: &str, mode: Option<u32>, mtime_ns: Option<i64>) -> Result<Entry> {
        self.call("setattr", self.client.setattr(name, mode, mtime_ns))
    }

    pub fn status(&self) -> Result<StatusReport> {
        self.call("status", self.client.status())
    }

    /// The status if the cluster gives it within `limit`; a quick look
    /// that says nothing about whether the cluster is down.
    pub fn status_within(&self, limit: Duration) -> Option<StatusReport> {
        self.rt.block_on(async { tokio::time::timeout(limit, self.client.status()).await }).ok()?.ok()
    }

    /// A range of a file, read straight from the cluster.
    pub fn read_range(&self, name: &str, offset: u64, len: u64) -> Result<(Entry, Vec<u8>)> {
        self.rt.block_on(read_range(&self.client, name, offset, len, Vec::new()))
    }

    /// Uploads the first `spec.size` bytes of the local file `path`
    /// (retried through a failover by the client, re-reading the file).
    pub fn upload_file(&self, spec: UploadSpec, path: &Path) -> Result<Entry> {
        let size = spec.size.unwrap_or(0);
        let path: PathBuf = path.to_path_buf();
        self.upload_from(spec, move || {
            std::fs::File::open(&path).map(|f| Box::new(f.take(size)) as Box<dyn Read + Send>)
        })
    }

    /// Uploads `spec.size` bytes read from `open()` (called again on each retry).
    pub fn upload_from<F>(&self, spec: UploadSpec, open: F) -> Result<Entry>
    where
        F: Fn() -> std::io::Result<Box<dyn Read + Send>> + Send + Sync,
    {
        let watch = Watch::new();
        let tick = |_: u64| watch.tick();
        let what = format!("upload of {}", spec.name);
        self.rt.block_on(watch.guard(&what, self.client.upload(spec, open, Some(&tick))))
    }

    /// Downloads a whole file to `dest` (checked against its hash).
    pub fn download_to(&self, name: &str, dest: &Path) -> Result<Entry> {
        let watch = Watch::new();
        let tick = |_: u64| watch.tick();
        let what = format!("download of {name}");
        self.rt.block_on(watch.guard(&what, self.client.download(name, Sink::File(dest.to_path_buf()), Some(&tick))))
    }

    /// Opens a streaming upload (finding the leader is retried; the stream is not).
    pub fn start_stream(&self, spec: UploadSpec) -> Result<UploadStream> {
        self.call("upload", self.client.upload_stream(spec))
    }

    /// Queues bytes on a streaming upload, waiting for room.
    pub fn push(&self, stream: &mut UploadStream, data: Bytes) -> Result<()> {
        self.rt.block_on(async {
            match tokio::time::timeout(PUSH_LIMIT, stream.write(data)).await {
                Ok(r) => r,
                Err(_) => Err(Error::Unavailable("the streaming upload made no progress".into())),
            }
        })
    }

    /// Ends a streaming upload and waits until the file is stored.
    pub fn finish(&self, stream: UploadStream) -> Result<Entry> {
        self.rt.block_on(async {
            match tokio::time::timeout(FINISH_LIMIT, stream.finish()).await {
                Ok(r) => r,
                Err(_) => Err(Error::Unavailable("the nodes did not confirm the upload in time".into())),
            }
        })
    }
}

/// A ranged read bounded by [`READ_LIMIT`] (async: also used by cache fills).
pub async fn read_range(client: &Client, name: &str, offset: u64, len: u64, buf: Vec<u8>) -> Result<(Entry, Vec<u8>)> {
    match tokio::time::timeout(READ_LIMIT, client.read(name, offset, len, buf)).await {
        Ok(r) => r,
        Err(_) => Err(Error::Unavailable(format!("reading {name}: no data within {}s", READ_LIMIT.as_secs()))),
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
