//! The client library: finds the leader, opens authenticated sessions, and
//! runs every command with retries that ride through a failover.
//!
//! Files stream in 1 MiB chunks with disk and network overlapped; nothing
//! holds a whole file in memory. Downloads are checked against the file's
//! sha256, and a bad or unreachable copy makes the client try the next holder.

use std::collections::HashSet;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use scs_common::auth::ClusterKey;
use scs_common::conn::{Chunk, Connection};
use scs_common::inode::{self, Changed, DirEntry, Inode, Listed, NewNode, Removal, RenameMode, SetAttrs, XattrMode};
use scs_common::locks::{FileLock, LockAnswer, SessionId};
use scs_common::proto::rpc::{
    HolderAddr, MemberChange, Message, Peer, PurgeTrash, Request, Response, StatusReport, Target, TrashItem, UploadSpec,
};
use scs_common::{ContentHash, Error, Ino, Kind, Result, CHUNK_SIZE};

use crate::discover::{Discovery, Heard, LeaderWatch};

/// How long a command keeps retrying through a failover before it gives up.
pub const RETRY_WINDOW: Duration = Duration::from_secs(5);
/// How long to wait for a node to accept a session.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A node that sends nothing for this long in the middle of a reply is dead.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the leader may take to answer after the last byte of an upload
/// (its holders' fsyncs, with their timeouts, come first).
const STORE_TIMEOUT: Duration = Duration::from_secs(150);
/// Chunks queued between the disk and the network.
const QUEUE: usize = 8;
/// Uploads of known size up to this are read on the uploading task.
const SMALL_READ: u64 = 64 << 10;

/// Where the cluster is and how to prove we belong to it.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub group: SocketAddrV4,
    pub iface: Ipv4Addr,
    /// Ask these nodes (HOST:PORT), and the members they name, where the
    /// leader is, instead of listening for heartbeats on the group.
    pub nodes: Vec<String>,
    pub secret_file: PathBuf,
    pub retry_window: Duration,
}

/// Called with the number of bytes moved so far.
pub type Progress<'a> = Option<&'a (dyn Fn(u64) + Send + Sync)>;

type Attempt<'a, T> = Pin<Box<dyn Future<Output = (Option<Connection>, Result<T>)> + Send + 'a>>;

/// Where a download goes.
pub enum Sink {
    /// A path. A regular file (new, or replaced: a symlink's target) is
    /// written to a temp file beside it and renamed into place when
    /// complete and checked, keeping the mode of the file it replaces;
    /// anything else there (a device, a FIFO) is written into, as `cp` does.
    File(PathBuf),
    Stdout,
}

pub struct Client {
    opts: ClientOptions,
    key: Arc<ClusterKey>,
    discovery: Discovery,
    /// Where we believe the leader is, and idle sessions to it.
    state: Mutex<LeaderCache>,
}

#[derive(Default)]
struct LeaderCache {
    addr: Option<String>,
    idle: Vec<Connection>,
}

impl Client {
    /// Loads the key and starts listening for the cluster (or polling the
    /// nodes named).
    ///
    /// # Errors
    /// `Config` for a missing or unreadable key file or an unusable group.
    pub fn new(opts: ClientOptions) -> Result<Client> {
        let key = Arc::new(ClusterKey::load(&opts.secret_file)?);
        let discovery = match opts.nodes.as_slice() {
            [] => Discovery::listen(opts.group, opts.iface, key.clone())?,
            nodes => Discovery::poll(nodes.to_vec(), key.clone()),
        };
        Ok(Client { opts, key, discovery, state: Mutex::new(LeaderCache::default()) })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, LeaderCache> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watches the heartbeats (or status polls) for a leader gone silent.
    fn watch(&self) -> LeaderWatch {
        self.discovery.watch()
    }

    /// Whether the user named `addr` (`--node`, `node=`, or the config file).
    fn named(&self, addr: &str) -> bool {
        self.opts.nodes.iter().any(|n| n == addr)
    }

    /// A session to the leader (pooled or new).
    async fn session(&self, deadline: Instant) -> Result<Connection> {
        let watch = self.watch();
        let known = {
            let mut c = self.cache();
            // The leader we knew went silent and another serves: go there.
            let peer = c.addr.as_deref().and_then(|a| a.parse::<SocketAddr>().ok());
            if let Some(l) = peer.and_then(|peer| watch.replacement_for(peer)) {
                c.addr = Some(l.addr);
                c.idle.clear();
            }
            if let Some(conn) = c.idle.pop() {
                return Ok(conn);
            }
            c.addr.clone()
        };
        let addr = match known {
            Some(a) => a,
            None => self.discovery.leader(deadline).await?.addr,
        };
        let conn = self.dial(&addr).await?;
        self.cache().addr = Some(addr);
        Ok(conn)
    }

    /// A new session to `addr`. An address we only heard of (in a
    /// heartbeat, or from a node) that fails the handshake is not, or no
    /// longer, a node of this cluster: its node died and another cluster's
    /// node took the port, say, while its old heartbeats are still heard.
    /// That is `Unavailable`, so the caller looks elsewhere; only the nodes
    /// the user named (`--node`, `node=`, the config file) are taken at
    /// their word.
    async fn dial(&self, addr: &str) -> Result<Connection> {
        match Connection::connect(addr, &self.key, Peer::Client, CONNECT_TIMEOUT).await {
            Ok((mut conn, _)) => {
                conn.set_read_timeout(Some(READ_TIMEOUT));
                Ok(conn)
            }
            Err(e @ (Error::Auth(_) | Error::Protocol(_))) if !self.named(addr) => {
                Err(Error::Unavailable(format!("{addr} is not a node of this cluster ({e})")))
            }
            Err(e) => Err(e),
        }
    }

    fn give_back(&self, conn: Connection) {
        let mut c = self.cache();
        if c.idle.len() < 8 && c.addr.is_some() {
            c.idle.push(conn);
        }
    }

    fn forget_leader(&self, next: Option<String>) {
        let mut c = self.cache();
        c.addr = next;
        c.idle.clear();
    }

    /// Runs `op` against the leader, retrying on a new leader or session
    /// for up to the retry window. `op` is told how many earlier attempts
    /// reached a leader and failed in a way that may have left them applied
    /// (a lost answer), so that a non-idempotent request can recognise its
    /// own earlier success.
    async fn with_leader<'a, T: Send + 'a>(
        &'a self,
        mut op: impl FnMut(Connection, u32) -> Attempt<'a, T>,
    ) -> Result<T> {
        let deadline = Instant::now() + self.opts.retry_window;
        let mut attempt = 0u32;
        let mut maybe_applied = 0u32;
        let mut last: Option<Error>;
        loop {
            match self.session(deadline).await {
                Ok(conn) => {
                    let peer = conn.peer_addr();
                    let (back, res) = self.unless_replaced(peer, op(conn, maybe_applied)).await;
                    match res {
                        Ok(v) => {
                            if let Some(c) = back {
                                self.give_back(c);
                            }
                            return Ok(v);
                        }
                        Err(Error::NotLeader(next)) => {
                            self.forget_leader(next.clone());
                            last = Some(Error::NotLeader(next));
                        }
                        Err(e) if retryable(&e) => {
                            log::debug!("retrying after: {e}");
                            self.forget_leader(None);
                            maybe_applied += 1;
                            last = Some(e);
                        }
                        Err(e) => {
                            if let Some(c) = back {
                                self.give_back(c);
                            }
                            return Err(e);
                        }
                    }
                }
                Err(e @ (Error::Auth(_) | Error::Config(_) | Error::Protocol(_))) => return Err(e),
                Err(e) => {
                    self.forget_leader(None);
                    last = Some(e);
                }
            }
            attempt += 1;
            if Instant::now() >= deadline {
                return Err(give_up(last, self.opts.retry_window));
            }
            let pause = Duration::from_millis((50 * attempt as u64).min(250));
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }

    /// Runs `work` on a session with the leader at `peer`, unless that
    /// leader goes silent meanwhile and another node serves (it froze or
    /// died with the request in hand): then the session is dropped and the
    /// request fails as retryable, to go to the new leader.
    async fn unless_replaced<T>(
        &self,
        peer: SocketAddr,
        work: impl Future<Output = (Option<Connection>, Result<T>)>,
    ) -> (Option<Connection>, Result<T>) {
        tokio::select! {
            biased;
            r = work => r,
            l = self.watch().replaced(peer) => (None, Err(replaced(peer, &l))),
        }
    }

    /// One request, one response.
    async fn call(&self, req: Request) -> Result<Response> {
        self.with_leader(|mut conn, _| {
            let req = req.clone();
            Box::pin(async move {
                let res = exchange(&mut conn, req).await;
                (Some(conn), res)
            })
        })
        .await
    }

    /// A request answered with an inode or `Missing`.
    async fn attr_or_missing(&self, req: Request) -> Result<Option<Inode>> {
        match self.call(req).await? {
            Response::Attr(i) => Ok(Some(i)),
            Response::Missing => Ok(None),
            other => Err(unexpected(&other)),
        }
    }

    /// The inode at a path ("" = the root), following symlinks on the way
    /// and, with `follow`, at the end; `None` when the last component does
    /// not exist.
    pub async fn resolve(&self, path: &str, follow: bool) -> Result<Option<Inode>> {
        self.attr_or_missing(Request::Resolve { path: path.to_string(), follow }).await
    }

    /// The inode `name` in directory `parent` leads to.
    pub async fn lookup(&self, parent: Ino, name: &str) -> Result<Option<Inode>> {
        self.attr_or_missing(Request::Lookup { parent, name: name.to_string() }).await
    }

    /// An inode by number; `None` once it is gone.
    pub async fn getattr(&self, ino: Ino) -> Result<Option<Inode>> {
        self.attr_or_missing(Request::GetAttr { ino }).await
    }

    /// The children of a directory with their inodes, in name order.
    /// With the version of the directory's inode they are of.
    pub async fn readdir(&self, dir: Ino) -> Result<Listed> {
        let pages = self
            .call_batches(Request::ReadDir { dir }, |r| match r {
                Response::Listing { entries, more, version } => Ok((vec![Listed { entries, version }], more)),
                other => Err(unexpected(&other)),
            })
            .await?;
        // Every page is of one snapshot.
        let version = pages.last().and_then(|p| p.version);
        Ok(Listed { entries: pages.into_iter().flat_map(|p| p.entries).collect(), version })
    }

    /// A request answered with a run of batches: `batch` takes each apart
    /// into its items and whether another follows.
    async fn call_batches<T: Send + 'static>(
        &self,
        req: Request,
        batch: fn(Response) -> Result<(Vec<T>, bool)>,
    ) -> Result<Vec<T>> {
        self.with_leader(|mut conn, _| {
            let req = req.clone();
            Box::pin(async move {
                let res = async {
                    conn.send(&Message::Request(req)).await?;
                    let mut out = Vec::new();
                    loop {
                        let (items, more) = batch(conn.recv_response().await?)?;
                        out.extend(items);
                        if !more {
                            return Ok(out);
                        }
                    }
                }
                .await;
                (Some(conn), res)
            })
        })
        .await
    }

    /// Everything in the trash, with the paths the items had, sorted by path.
    pub async fn trash_list(&self) -> Result<Vec<TrashItem>> {
        self.call_batches(Request::TrashList, |r| match r {
            Response::Trash { items, more } => Ok((items, more)),
            other => Err(unexpected(&other)),
        })
        .await
    }

    /// Brings trashed inode `ino` back with everything that was in it, to
    /// its old place or to `to` (a directory and a name): the inode back,
    /// how many came back, and how many stayed in the trash. Asking again
    /// after a failover goes on where the first attempt stopped.
    pub async fn trash_restore(&self, ino: Ino, to: Option<(Ino, String)>) -> Result<(Inode, u64, u64)> {
        match self.call(Request::TrashRestore { ino, to }).await? {
            Response::Restored { inode, items, left } => Ok((inode, items, left)),
            other => Err(unexpected(&other)),
        }
    }

    /// Removes items from the trash for good: items and bytes removed.
    pub async fn trash_purge(&self, what: PurgeTrash) -> Result<(u64, u64)> {
        // A retry that finds a named item gone: the first attempt took it.
        let named = matches!(what, PurgeTrash::Items(_));
        match self.call_once_semantics(Request::TrashPurge(what), |e| named && matches!(e, Error::NotFound(_))).await? {
            Some(Response::Purged { items, bytes }) => Ok((items, bytes)),
            None => Ok((0, 0)),
            Some(other) => Err(unexpected(&other)),
        }
    }

    /// The earlier versions kept of file `ino`, the oldest first.
    pub async fn versions(&self, ino: Ino) -> Result<Vec<Inode>> {
        match self.call(Request::Versions { ino }).await? {
            Response::Kept(v) => Ok(v),
            other => Err(unexpected(&other)),
        }
    }

    /// Makes the kept version `version` of file `ino` its content again:
    /// the file as it is then. A retry that finds the version gone took
    /// it the first time, if the file has its content now.
    pub async fn restore_version(&self, ino: Ino, version: &Inode) -> Result<Inode> {
        let req = Request::RestoreVersion { ino, version: version.ino };
        match self.call_once_semantics(req, |e| matches!(e, Error::NotFound(_))).await? {
            Some(Response::Attr(i)) => Ok(i),
            None => match self.getattr(ino).await? {
                Some(i) if i.hash == version.hash => Ok(i),
                Some(_) => Err(Error::Unavailable(format!(
                    "the restore was cut short and version inode {} is gone (expired or purged meanwhile), \
                     but the file does not have its content: it may not have been restored",
                    version.ino
                ))),
                None => Err(Error::NotFound(format!("inode {ino}"))),
            },
            Some(other) => Err(unexpected(&other)),
        }
    }

    /// The directory at `path` and its children ("" = root); a path that
    /// names anything else lists that one item, as `ls` does.
    pub async fn list(&self, path: &str) -> Result<(Inode, Vec<DirEntry>)> {
        let at = self.resolve(path, true).await?.ok_or_else(|| Error::NotFound(path.to_string()))?;
        if !at.is_dir() {
            let name = scs_common::name::base(path).to_string();
            return Ok((at.clone(), vec![DirEntry { name, inode: at }]));
        }
        let children = self.readdir(at.ino).await?.entries;
        Ok((at, children))
    }

    /// The directory holding `path` and its last component.
    ///
    /// # Errors
    /// `NotFound` or `NotDir` for the directory; `BadName` for the root.
    pub async fn parent_of(&self, path: &str) -> Result<(Inode, String)> {
        let base = scs_common::name::base(path);
        if base.is_empty() {
            return Err(Error::BadName("the root has no parent".into()));
        }
        let dir = scs_common::name::parent(path);
        let parent = self.resolve(dir, true).await?.ok_or_else(|| Error::NotFound(dir.to_string()))?;
        if !parent.is_dir() {
            return Err(Error::NotDir(dir.to_string()));
        }
        Ok((parent, base.to_string()))
    }

    /// Makes a directory, symlink, FIFO, socket, device or empty file. A
    /// retry that finds the name taken by an inode of that kind and owner
    /// made in the meantime takes it as its own earlier success.
    pub async fn make(&self, parent: Ino, name: &str, node: &NewNode) -> Result<Changed> {
        let req = Request::Make { parent, name: name.to_string(), node: node.clone() };
        match self.call_once_semantics(req, |e| matches!(e, Error::Exists(_))).await? {
            Some(r) => made(r),
            None => match self.lookup(parent, name).await? {
                Some(i) if i.kind == node.kind && i.uid == node.uid => {
                    Ok(Changed { inodes: vec![i], dirs: Vec::new() })
                }
                _ => Err(Error::Exists(name.to_string())),
            },
        }
    }

    /// Makes the directory `path`; with `parents`, its missing ancestors
    /// too and no error if it exists (mkdir -p).
    pub async fn mkdir(&self, path: &str, mode: u32, parents: bool) -> Result<Inode> {
        let node =
            |mode| NewNode { kind: Kind::Dir, mode, uid: own_uid(), gid: own_gid(), rdev: 0, target: String::new() };
        if !parents {
            let (parent, name) = self.parent_of(path).await?;
            return first(self.make(parent.ino, &name, &node(mode)).await?);
        }
        let mut at = self.resolve("", false).await?.ok_or_else(|| Error::Internal("no root".into()))?;
        for (i, c) in path.split('/').filter(|c| !c.is_empty()).enumerate() {
            at = match self.lookup(at.ino, c).await? {
                Some(next) if next.is_dir() => next,
                Some(next) if next.kind == Kind::Symlink => {
                    let so_far: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).take(i + 1).collect();
                    match self.resolve(&so_far.join("/"), true).await? {
                        Some(d) if d.is_dir() => d,
                        _ => return Err(Error::NotDir(c.to_string())),
                    }
                }
                Some(_) => return Err(Error::NotDir(c.to_string())),
                None => match self.make(at.ino, c, &node(mode)).await.and_then(first) {
                    Ok(d) => d,
                    // Made by someone else meanwhile: fine for mkdir -p.
                    Err(Error::Exists(_)) => self
                        .lookup(at.ino, c)
                        .await?
                        .filter(|d| d.is_dir())
                        .ok_or_else(|| Error::NotDir(c.to_string()))?,
                    Err(e) => return Err(e),
                },
            };
        }
        Ok(at)
    }

    /// A new name `name` in `parent` for `ino` (link(2)).
    pub async fn link(&self, ino: Ino, parent: Ino, name: &str) -> Result<Changed> {
        let req = Request::Link { ino, parent, name: name.to_string() };
        match self.call_once_semantics(req, |e| matches!(e, Error::Exists(_))).await? {
            Some(r) => made(r),
            None => match self.lookup(parent, name).await? {
                Some(i) if i.ino == ino => Ok(Changed { inodes: vec![i], dirs: Vec::new() }),
                _ => Err(Error::Exists(name.to_string())),
            },
        }
    }

    /// Removes a name: unlink(2), rmdir(2), or either; every inode still
    /// there the change touched (none when a retry found it done).
    pub async fn remove(&self, parent: Ino, name: &str, what: Removal) -> Result<Changed> {
        let req = Request::Remove { parent, name: name.to_string(), what };
        match self.call_once_semantics(req, |e| matches!(e, Error::NotFound(_))).await? {
            Some(r) => made(r),
            None => Ok(Changed::default()),
        }
    }

    /// Removes a file or an empty directory by path.
    pub async fn delete(&self, path: &str, what: Removal) -> Result<()> {
        let (parent, name) = self.parent_of(path).await?;
        self.remove(parent.ino, &name, what).await.map(|_| ())
    }

    /// rename(2) and renameat2(2) flags.
    pub async fn rename(
        &self,
        parent: Ino,
        name: &str,
        new_parent: Ino,
        new_name: &str,
        mode: RenameMode,
    ) -> Result<Changed> {
        let req = Request::Rename { parent, name: name.to_string(), new_parent, new_name: new_name.to_string(), mode };
        match self.call_once_semantics(req, |e| matches!(e, Error::NotFound(_))).await? {
            Some(r) => made(r),
            // A retry found the source gone: an earlier attempt moved it if
            // the target is there now.
            None if self.lookup(new_parent, new_name).await?.is_some() => Ok(Changed::default()),
            None => Err(Error::NotFound(name.to_string())),
        }
    }

    /// Moves `from` to `to` by path; `to` naming a directory receives it, as
    /// mv does, and missing directories on the way to `to` are made, as an
    /// upload makes them.
    pub async fn mv(&self, from: &str, to: &str) -> Result<()> {
        let (src_parent, src_name) = self.parent_of(from).await?;
        let Some(src) = self.lookup(src_parent.ino, &src_name).await? else {
            return Err(Error::NotFound(from.to_string()));
        };
        // Refused before any directory on the way is made.
        if src.is_dir() && scs_common::name::is_inside(to, from) {
            return Err(Error::Invalid(format!("cannot move {from} into itself ({to})")));
        }
        let to_dir = scs_common::name::parent(to);
        let mut dst_parent = self.mkdir(to_dir, 0o755, true).await?;
        let mut dst_name = scs_common::name::base(to).to_string();
        if let Some(d) = self.lookup(dst_parent.ino, &dst_name).await? {
            let src = self.lookup(src_parent.ino, &src_name).await?;
            if d.is_dir() && src.is_some_and(|s| s.ino != d.ino) {
                dst_parent = d;
                dst_name = src_name.clone();
            }
        }
        self.rename(src_parent.ino, &src_name, dst_parent.ino, &dst_name, RenameMode::Replace).await.map(|_| ())
    }

    /// Changes mode, owner and times.
    pub async fn set_attr(&self, ino: Ino, set: &SetAttrs) -> Result<Inode> {
        match self.call(Request::SetAttr { ino, set: set.clone() }).await? {
            Response::Attr(i) => Ok(i),
            other => Err(unexpected(&other)),
        }
    }

    /// Sets an extended attribute. A retried XATTR_CREATE that finds the
    /// attribute with exactly this value takes it as its own.
    pub async fn set_xattr(&self, ino: Ino, name: &str, value: &[u8], mode: XattrMode) -> Result<Inode> {
        let req = Request::SetXattr { ino, name: name.to_string(), value: inode::Bytes(value.to_vec()), mode };
        match self.call_once_semantics(req, |e| matches!(e, Error::Exists(_))).await? {
            Some(Response::Attr(i)) => Ok(i),
            Some(other) => Err(unexpected(&other)),
            None => match self.getattr(ino).await? {
                Some(i) if i.xattrs.get(name).is_some_and(|v| v.0 == value) => Ok(i),
                _ => Err(Error::Exists(format!("attribute {name}"))),
            },
        }
    }

    /// Removes an extended attribute.
    pub async fn remove_xattr(&self, ino: Ino, name: &str) -> Result<Inode> {
        let req = Request::RemoveXattr { ino, name: name.to_string() };
        match self.call_once_semantics(req, |e| matches!(e, Error::NoAttr(_))).await? {
            Some(Response::Attr(i)) => Ok(i),
            Some(other) => Err(unexpected(&other)),
            None => self.getattr(ino).await?.ok_or_else(|| Error::NotFound(format!("inode {ino}"))),
        }
    }

    /// `count` inode numbers for new files made later: the first, and how many.
    pub async fn reserve_inodes(&self, count: u32) -> Result<(Ino, u32)> {
        match self.call(Request::ReserveInodes { count }).await? {
            Response::Inodes { first, count } => Ok((first, count)),
            other => Err(unexpected(&other)),
        }
    }

    /// An advisory lock request (`Lock`, `Unlock`, `TestLock`, `KeepAlive`):
    /// the leader's answer. Retrying one is safe: each is idempotent for its
    /// session (a lock asked twice by one owner is granted once).
    pub async fn lock_request(&self, req: Request) -> Result<LockAnswer> {
        match self.call(req).await? {
            Response::Lock(answer) => Ok(answer),
            other => Err(unexpected(&other)),
        }
    }

    /// Sets this mount's locks at the leader to `locks`: those refused.
    pub async fn reclaim(&self, session: SessionId, locks: Vec<FileLock>) -> Result<Vec<FileLock>> {
        match self.call(Request::Reclaim { session, locks }).await? {
            Response::Reclaimed(refused) => Ok(refused),
            other => Err(unexpected(&other)),
        }
    }

    /// The cluster's status: from the first node the user named that
    /// answers, else from the leader when there is one, else from any node
    /// that answers (so a cluster without a leader can still be inspected).
    /// A node that was heard but does not answer (it died, and its last
    /// heartbeats, or replays of them, are still about) does not end the
    /// search: nodes heard later are tried too, up to the retry window.
    pub async fn status(&self) -> Result<StatusReport> {
        let started = Instant::now();
        let deadline = started + self.opts.retry_window;
        let d = &self.discovery;
        let mut candidates: Vec<String> = self.opts.nodes.clone();
        let mut tried = HashSet::new();
        let mut last = None;
        let mut asked_leader = false;
        loop {
            if !asked_leader && candidates.is_empty() {
                asked_leader = true;
                match d.leader(deadline.min(Instant::now() + Duration::from_millis(1500))).await {
                    Ok(l) => candidates.push(l.addr),
                    Err(e @ (Error::Auth(_) | Error::Protocol(_))) => return Err(e),
                    Err(_) => {}
                }
            }
            candidates.extend(d.heard().by_preference(Instant::now()).into_iter().map(|h| h.addr));
            for addr in candidates.drain(..) {
                if !tried.insert(addr.clone()) {
                    continue;
                }
                let attempt = async {
                    let mut c = self.dial(&addr).await?;
                    exchange(&mut c, Request::Status).await
                };
                match attempt.await {
                    Ok(Response::Status(s)) => return Ok(s),
                    Ok(other) => last = Some(unexpected(&other)),
                    // Only a node the user named gets here with these (see `dial`).
                    Err(e @ (Error::Auth(_) | Error::Protocol(_))) => return Err(e),
                    Err(e) => last = Some(e),
                }
            }
            if let Some(e) = d.refused_since(started) {
                return Err(e);
            }
            if Instant::now() >= deadline {
                // What the listener or poller heard says more than one failed dial.
                if last.is_none() || d.heard().nodes.is_empty() {
                    return Err(d.explain());
                }
                break;
            }
            d.changed(deadline.min(Instant::now() + Duration::from_millis(100))).await;
        }
        Err(match last {
            Some(e @ Error::Unavailable(_)) => e,
            Some(e) => Error::Unavailable(e.to_string()),
            None => Error::Unavailable("no node answered".into()),
        })
    }

    /// The leader's own status, asked through the same retries as any
    /// request to the leader. Unlike [`Client::status`], it never comes from
    /// a follower, whose view of the membership may lag the leader's by a
    /// pull and which does not know what is left to move off draining members.
    pub async fn leader_status(&self) -> Result<StatusReport> {
        self.with_leader(|mut conn, _| {
            Box::pin(async move {
                let res = match exchange(&mut conn, Request::Status).await {
                    Ok(Response::Status(s)) if s.leader == Some(s.node) => Ok(s),
                    // Every node answers `Status`: one that stepped down
                    // (removed, or deposed) names the leader it follows, if any.
                    Ok(Response::Status(s)) => Err(Error::NotLeader(leader_addr(&s))),
                    Ok(other) => Err(unexpected(&other)),
                    Err(e) => Err(e),
                };
                (Some(conn), res)
            })
        })
        .await
    }

    /// Changes the membership by one node; returns once the leader has
    /// committed the change. Retrying through a failover is safe: the leader
    /// takes adding a member or draining a draining one as done. A removal
    /// is not idempotent, so a retried `Remove` that finds the node gone
    /// takes that as its own earlier success, but only when an earlier
    /// attempt reached a leader and its answer was lost; otherwise the node
    /// was never a member and `NotFound` is the answer.
    ///
    /// # Errors
    /// What the leader refuses with (a node that is not a candidate, a
    /// removal that would lose copies, no quorum), or `Unavailable` once the
    /// retry window has passed without a leader.
    pub async fn change_members(&self, change: MemberChange) -> Result<()> {
        let removal = matches!(change, MemberChange::Remove { .. });
        let done_already = |e: &Error| removal && matches!(e, Error::NotFound(_));
        match self.call_once_semantics(Request::ChangeMembers(change), done_already).await? {
            Some(Response::Done) | None => Ok(()),
            Some(other) => Err(unexpected(&other)),
        }
    }

    /// A request that is not idempotent: if an earlier attempt may have been
    /// applied before the leader failed, an error that `done_already` accepts
    /// on a retry means that attempt took effect (`Ok(None)`).
    async fn call_once_semantics(
        &self,
        req: Request,
        done_already: impl Fn(&Error) -> bool + Send + Sync,
    ) -> Result<Option<Response>> {
        let done_already = &done_already;
        self.with_leader(|mut conn, attempt| {
            let req = req.clone();
            Box::pin(async move {
                let res = exchange(&mut conn, req).await;
                let res = match res {
                    Err(e) if attempt > 0 && done_already(&e) => Ok(None),
                    other => other.map(Some),
                };
                (Some(conn), res)
            })
        })
        .await
    }

    /// Uploads a local file to the path `remote`, returning the stored inode.
    ///
    /// A regular file is read again on a retry. Anything else (a pipe, a
    /// device) is read once, to its end; so is a regular file that says it
    /// is empty (as the files of /proc do), read whole first.
    pub async fn upload_file(&self, local: &Path, remote: &str, progress: Progress<'_>) -> Result<Inode> {
        let cannot = |e: std::io::Error| Error::Local(format!("cannot read {}: {e}", local.display()));
        let meta = std::fs::metadata(local).map_err(cannot)?;
        if meta.is_dir() {
            return Err(Error::IsDir(local.display().to_string()));
        }
        use std::os::unix::fs::MetadataExt;
        let mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
        let mut spec = UploadSpec::new(Target::Path(remote.to_string()), None, meta.mode() & 0o7777, mtime_ns);
        spec.atime_ns = meta.atime() * 1_000_000_000 + meta.atime_nsec();
        if !meta.is_file() {
            let source = std::fs::File::open(local).map_err(cannot)?;
            return self.upload_once_read(spec, Box::new(source), progress).await;
        }
        if meta.len() == 0 {
            let bytes = std::fs::read(local).map_err(cannot)?;
            spec.size = Some(bytes.len() as u64);
            let bytes = Bytes::from(bytes);
            let open = move || Ok(Box::new(std::io::Cursor::new(bytes.clone())) as Box<dyn Read + Send>);
            return first(self.upload(spec, open, progress).await?);
        }
        spec.size = Some(meta.len());
        let path = local.to_path_buf();
        let open = move || std::fs::File::open(&path).map(|f| Box::new(f) as Box<dyn Read + Send>);
        first(self.upload(spec, open, progress).await?)
    }

    /// Uploads what `source` gives up to its end (a pipe, stdin, a device):
    /// read once, so an attempt that fails after reading some of it is not
    /// made again.
    pub async fn upload_once_read(
        &self,
        mut spec: UploadSpec,
        source: Box<dyn Read + Send>,
        progress: Progress<'_>,
    ) -> Result<Inode> {
        spec.size = None;
        let source = Arc::new(OnceSource { inner: Mutex::new(source), started: AtomicBool::new(false) });
        let open = move || {
            if source.started.load(Ordering::SeqCst) {
                return Err(std::io::Error::other(
                    "the upload broke off after part of the input was sent, and a pipe cannot be read again",
                ));
            }
            Ok(Box::new(OnceReader(source.clone())) as Box<dyn Read + Send>)
        };
        first(self.upload(spec, open, progress).await?)
    }

    /// Uploads `spec.size` bytes read from `open()` (called again on each
    /// retry). Retries are safe: an upload to a path or inode only replaces
    /// the content again, and one of a new file carries its inode number,
    /// which the leader recognizes if an earlier attempt stored it.
    pub async fn upload<F>(&self, spec: UploadSpec, open: F, progress: Progress<'_>) -> Result<Changed>
    where
        F: Fn() -> std::io::Result<Box<dyn Read + Send>> + Send + Sync,
    {
        let open = &open;
        let spec = &spec;
        self.with_leader(|mut conn, _| {
            Box::pin(async move {
                let res = upload_once(&mut conn, spec, open, progress).await;
                // After a failed stream the session may be mid-frame: do not reuse it.
                let back = res.is_ok().then_some(conn);
                (back, res)
            })
        })
        .await
    }

    /// Stores several small files (see `Request::UploadMany`) in one
    /// exchange with the leader: each file's answer, in order. One attempt,
    /// not retried: on an error the caller stores the files one at a time
    /// (storing one again is safe, as for [`Client::upload`]).
    pub async fn upload_many(&self, files: &[(UploadSpec, Vec<u8>)]) -> Result<Vec<Result<Changed>>> {
        let mut conn = self.session(Instant::now() + self.opts.retry_window).await?;
        match upload_many_once(&mut conn, files).await {
            Ok(answers) => {
                self.give_back(conn);
                Ok(answers)
            }
            Err(e) => {
                if let Error::NotLeader(next) = &e {
                    self.forget_leader(next.clone());
                }
                Err(e)
            }
        }
    }

    /// Starts an upload whose bytes are pushed as they come (a file being
    /// written through the mount); the size may be unknown. Finding the
    /// leader is retried; the stream itself is not: if it fails, upload the
    /// data again with [`Client::upload`].
    pub async fn upload_stream(&self, spec: UploadSpec) -> Result<UploadStream> {
        let spec = &spec;
        let conn = self
            .with_leader(|mut conn, _| {
                Box::pin(async move {
                    let res = async {
                        conn.send(&Message::Request(Request::Upload(spec.clone()))).await?;
                        match conn.recv_response().await? {
                            Response::Ready => Ok(()),
                            other => Err(unexpected(&other)),
                        }
                    }
                    .await;
                    match res {
                        Ok(()) => (None, Ok(conn)),
                        Err(e) => (Some(conn), Err(e)),
                    }
                })
            })
            .await?;
        let (tx, rx) = mpsc::channel::<Push>(QUEUE);
        let (peer, watch) = (conn.peer_addr(), self.watch());
        let task = tokio::spawn(async move {
            tokio::select! {
                biased;
                r = stream_out(conn, rx) => r,
                l = watch.replaced(peer) => Err(replaced(peer, &l)),
            }
        });
        Ok(UploadStream { tx: Some(tx), task })
    }

    /// Downloads the file at path `remote` (following symlinks) to `sink`,
    /// checked against its hash.
    pub async fn download(&self, remote: &str, sink: Sink, progress: Progress<'_>) -> Result<Inode> {
        let what = Request::Download { path: remote.to_string(), offset: 0, len: None };
        self.download_with(what, sink, progress).await
    }

    /// Downloads the content of inode `ino` to `sink`, checked against its hash.
    pub async fn download_ino(&self, ino: Ino, sink: Sink, progress: Progress<'_>) -> Result<Inode> {
        self.download_with(Request::Read { ino, offset: 0, len: None }, sink, progress).await
    }

    async fn download_with(&self, req: Request, sink: Sink, progress: Progress<'_>) -> Result<Inode> {
        // A destination that cannot be written is the caller's to fix, at
        // once: not a cluster to retry for the next seconds.
        let sink = &Destination::of(&sink)?;
        if matches!(sink, Destination::Replace { .. }) {
            drop(open_sink(sink)?);
        }
        let req = &req;
        let streamed = !matches!(sink, Destination::Replace { .. });
        let written = &std::sync::atomic::AtomicBool::new(false);
        self.with_leader(|mut conn, _| {
            Box::pin(async move {
                // Bytes already on stdout (or a device) cannot be taken back:
                // no retry after them.
                if streamed && written.load(std::sync::atomic::Ordering::Relaxed) {
                    return (None, Err(Error::Invalid("the download broke off after part of it was written".into())));
                }
                let mut out = match open_sink(sink) {
                    Ok(o) => o,
                    Err(e) => return (Some(conn), Err(e)),
                };
                let res = self.fetch(&mut conn, req.clone(), &mut out, progress).await;
                if out.written() {
                    written.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                let res = match res {
                    Ok(inode) => out.commit().map(|_| inode),
                    Err(e) => Err(e),
                };
                (None, res)
            })
        })
        .await
    }

    /// Reads `len` bytes of inode `ino` from `offset` into memory (for the
    /// mount), into `buf` (emptied first; a buffer used before needs no new pages).
    pub async fn read(&self, ino: Ino, offset: u64, len: u64, buf: Vec<u8>) -> Result<(Inode, Vec<u8>)> {
        let mut buf = Some(buf);
        self.with_leader(|mut conn, _| {
            let mut buf = buf.take().unwrap_or_default();
            buf.clear();
            buf.reserve(len.min(16 << 20) as usize);
            Box::pin(async move {
                let mut out = Output::Memory(buf);
                let res = self.fetch(&mut conn, Request::Read { ino, offset, len: Some(len) }, &mut out, None).await;
                let res = res.map(|i| match &mut out {
                    Output::Memory(v) => (i, std::mem::take(v)),
                    _ => (i, Vec::new()),
                });
                let back = res.is_ok().then_some(conn);
                (back, res)
            })
        })
        .await
    }

    /// Asks the leader for a range (`Download` or `Read`); follows a
    /// redirect to the holders.
    async fn fetch(
        &self,
        conn: &mut Connection,
        req: Request,
        out: &mut Output,
        progress: Progress<'_>,
    ) -> Result<Inode> {
        let range = match &req {
            Request::Download { offset, len, .. } | Request::Read { offset, len, .. } => (*offset, *len),
            _ => (0, None),
        };
        conn.send(&Message::Request(req)).await?;
        match conn.recv_response().await? {
            Response::Content { inode, offset, len } => {
                let (ino, content) = (inode.ino, inode.content);
                match receive_content(conn, inode, offset, len, out, progress).await {
                    Err(Error::Corrupt(m)) => {
                        // The leader re-checks its copy and moves it aside if bad;
                        // the retry is then sent to another holder.
                        let _ = exchange(conn, Request::ReportCorrupt { ino, content }).await;
                        Err(Error::Unavailable(format!("{m}; trying another copy")))
                    }
                    other => other,
                }
            }
            Response::Redirect { inode, holders } => {
                self.fetch_from_holders(inode, holders, range, out, progress).await
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn fetch_from_holders(
        &self,
        inode: Inode,
        holders: Vec<HolderAddr>,
        (offset, len): (u64, Option<u64>),
        out: &mut Output,
        progress: Progress<'_>,
    ) -> Result<Inode> {
        let mut last = Error::Unavailable(format!("no holder of inode {} answered", inode.ino));
        for h in holders {
            out.reset()?;
            let attempt = async {
                let mut c = self.dial(&h.addr).await?;
                let req = Request::ReadBlob { ino: inode.ino, content: inode.content, offset, len };
                c.send(&Message::Request(req)).await?;
                match c.recv_response().await? {
                    Response::Content { inode, offset, len } => {
                        let (ino, content) = (inode.ino, inode.content);
                        let res = receive_content(&mut c, inode, offset, len, out, progress).await;
                        if matches!(res, Err(Error::Corrupt(_))) {
                            let _ = exchange(&mut c, Request::ReportCorrupt { ino, content }).await;
                        }
                        res
                    }
                    other => Err(unexpected(&other)),
                }
            };
            match attempt.await {
                Ok(i) => return Ok(i),
                Err(e) => {
                    log::info!("holder node {} could not serve inode {}: {e}", h.id, inode.ino);
                    last = e;
                }
            }
        }
        // A copy that failed its hash everywhere is an error, not a retry.
        match last {
            e @ Error::Corrupt(_) => Err(e),
            e => Err(Error::Unavailable(e.to_string())),
        }
    }
}

/// What a namespace change touched, from its answer.
fn made(r: Response) -> Result<Changed> {
    match r {
        Response::Changed(changed) => Ok(changed),
        other => Err(unexpected(&other)),
    }
}

/// The inode a change was for: the first it touched.
fn first(changed: Changed) -> Result<Inode> {
    changed.inodes.into_iter().next().ok_or_else(|| Error::Protocol("a change touched no inode".into()))
}

/// The caller's user id: the owner of what the command line makes.
pub fn own_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The caller's group id.
pub fn own_gid() -> u32 {
    // SAFETY: getgid has no preconditions and cannot fail.
    unsafe { libc::getgid() }
}

/// The address of the leader a status report names, when it has one.
fn leader_addr(s: &StatusReport) -> Option<String> {
    s.nodes.iter().find(|n| Some(n.id) == s.leader).map(|n| n.addr.clone()).filter(|a| !a.is_empty())
}

/// Why work on the leader at `peer` was dropped for the leader `now`.
fn replaced(peer: SocketAddr, now: &Heard) -> Error {
    Error::Unavailable(format!("the leader at {peer} went silent; node {} leads now", now.id))
}

fn retryable(e: &Error) -> bool {
    e.is_retryable() || matches!(e, Error::Io(_))
}

/// The error to show after the retry window ran out.
fn give_up(last: Option<Error>, window: Duration) -> Error {
    match last {
        Some(e @ (Error::NoQuorum(_) | Error::Auth(_))) => e,
        Some(Error::Unavailable(m)) => {
            Error::Unavailable(format!("no leader reachable within {}s ({m})", window.as_secs()))
        }
        Some(e) => Error::Unavailable(format!("no leader reachable within {}s ({e})", window.as_secs())),
        None => Error::Unavailable(format!("no leader reachable within {}s", window.as_secs())),
    }
}

fn unexpected(r: &Response) -> Error {
    Error::Protocol(format!("unexpected response: {r:?}"))
}

async fn exchange(conn: &mut Connection, req: Request) -> Result<Response> {
    conn.send(&Message::Request(req)).await?;
    conn.recv_response().await
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// An upload's input that can be read only once (see [`Client::upload_once_read`]).
struct OnceSource {
    inner: Mutex<Box<dyn Read + Send>>,
    /// Some of it was read: an attempt that fails now cannot be made again.
    started: AtomicBool,
}

/// A reader of a [`OnceSource`], one per attempt.
struct OnceReader(Arc<OnceSource>);

impl Read for OnceReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.inner.lock().unwrap_or_else(|p| p.into_inner()).read(buf)?;
        if n > 0 {
            self.0.started.store(true, Ordering::SeqCst);
        }
        Ok(n)
    }
}

/// Why an upload stopped when its file had fewer bytes than at the start.
const SHRANK: &str = "the file shrank while it was being uploaded (something changed it)";

/// One attempt at an upload on an open session.
async fn upload_once<F>(conn: &mut Connection, spec: &UploadSpec, open: &F, progress: Progress<'_>) -> Result<Changed>
where
    F: Fn() -> std::io::Result<Box<dyn Read + Send>> + Send + Sync,
{
    let mut source = open().map_err(|e| Error::Local(format!("cannot read the file for {}: {e}", spec.describe())))?;
    conn.send(&Message::Request(Request::Upload(spec.clone()))).await?;
    match conn.recv_response().await? {
        Response::Ready => {}
        other => return Err(unexpected(&other)),
    }
    let size = spec.size;
    if let Some(n) = size.filter(|&n| n <= SMALL_READ) {
        // Read here: a hand-off to a thread costs more than the read.
        let mut buf = vec![0u8; n as usize];
        let got = fill(&mut source, &mut buf).map_err(|e| Error::Local(format!("cannot read the file: {e}")))?;
        if got < buf.len() {
            return Err(Error::Local(SHRANK.into()));
        }
        let hash = ContentHash(Sha256::digest(&buf).into());
        if n > 0 {
            conn.write_data(&buf).await?;
            if let Some(p) = progress {
                p(n);
            }
        }
        return finish_upload(conn, hash).await;
    }
    // A thread reads and hashes the source while we send.
    let (tx, mut rx) = mpsc::channel::<Result<Bytes>>(QUEUE);
    let reader = tokio::task::spawn_blocking(move || {
        let mut source = source;
        let mut hasher = Sha256::new();
        // With a known size, exactly that many bytes; otherwise up to EOF.
        let mut left = size.unwrap_or(u64::MAX);
        while left > 0 {
            let mut buf = vec![0u8; left.min(CHUNK_SIZE as u64) as usize];
            let n = match fill(&mut source, &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.blocking_send(Err(Error::Local(format!("cannot read the file: {e}"))));
                    return None;
                }
            };
            if n < buf.len() && size.is_some() {
                let _ = tx.blocking_send(Err(Error::Local(SHRANK.into())));
                return None;
            }
            buf.truncate(n);
            if n == 0 {
                break;
            }
            hasher.update(&buf);
            left -= n as u64;
            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                return None;
            }
        }
        Some(ContentHash(hasher.finalize().into()))
    });
    let mut sent = 0u64;
    while let Some(chunk) = rx.recv().await {
        let chunk = chunk?;
        conn.write_data(&chunk).await?;
        sent += chunk.len() as u64;
        if let Some(p) = progress {
            p(sent);
        }
    }
    let hash = reader
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .ok_or_else(|| Error::Io("reading the file failed".into()))?;
    finish_upload(conn, hash).await
}

/// One exchange of [`Client::upload_many`].
async fn upload_many_once(conn: &mut Connection, files: &[(UploadSpec, Vec<u8>)]) -> Result<Vec<Result<Changed>>> {
    let specs = files.iter().map(|(spec, _)| spec.clone()).collect();
    conn.send(&Message::Request(Request::UploadMany(specs))).await?;
    match conn.recv_response().await? {
        Response::Ready => {}
        other => return Err(unexpected(&other)),
    }
    for (_, bytes) in files {
        if !bytes.is_empty() {
            conn.write_data(bytes).await?;
        }
        conn.write_message(&Message::End { hash: ContentHash(Sha256::digest(bytes).into()) }).await?;
    }
    conn.flush().await?;
    // As for one upload: the nodes sync before the leader answers.
    conn.set_read_timeout(Some(STORE_TIMEOUT));
    let answer = conn.recv_response().await;
    conn.set_read_timeout(Some(READ_TIMEOUT));
    match answer? {
        Response::Many(answers) if answers.len() == files.len() => Ok(answers
            .into_iter()
            .map(|a| match a {
                Response::Changed(c) => Ok(c),
                Response::Error(w) => Err(Error::from_wire(w)),
                other => Err(unexpected(&other)),
            })
            .collect()),
        other => Err(unexpected(&other)),
    }
}

/// Ends an upload whose bytes are sent: the hash, then the cluster's answer.
async fn finish_upload(conn: &mut Connection, hash: ContentHash) -> Result<Changed> {
    conn.write_message(&Message::End { hash }).await?;
    conn.flush().await?;
    // The nodes fsync (and the leader waits for its holders) before answering.
    conn.set_read_timeout(Some(STORE_TIMEOUT));
    let stored = conn.recv_response().await;
    conn.set_read_timeout(Some(READ_TIMEOUT));
    made(stored?)
}

/// Where a download goes, looked at once before the first attempt.
enum Destination {
    Stdout,
    /// A regular file, new or replaced (`mode`: the replaced file's).
    Replace {
        dest: PathBuf,
        mode: Option<std::fs::Permissions>,
    },
    /// Something else, opened once and written into (a device, a FIFO:
    /// opening a FIFO again would end its reader's stream).
    Into(Arc<std::fs::File>),
}

impl Destination {
    fn of(sink: &Sink) -> Result<Destination> {
        let given = match sink {
            Sink::Stdout => return Ok(Destination::Stdout),
            Sink::File(dest) => dest,
        };
        let cannot = |why: &dyn std::fmt::Display| Error::Local(format!("cannot write {}: {why}", given.display()));
        // A symlink: what it points to is the file written, as with `cp`.
        let dest = match std::fs::symlink_metadata(given) {
            Ok(m) if m.file_type().is_symlink() => {
                std::fs::canonicalize(given).map_err(|_| cannot(&"not writing through a dangling symlink"))?
            }
            _ => given.clone(),
        };
        match std::fs::metadata(&dest) {
            Ok(m) if m.is_dir() => Err(Error::IsDir(given.display().to_string())),
            Ok(m) if m.is_file() => Ok(Destination::Replace { dest, mode: Some(m.permissions()) }),
            Ok(_) => {
                let file = std::fs::OpenOptions::new().write(true).open(&dest).map_err(|e| cannot(&e))?;
                Ok(Destination::Into(Arc::new(file)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Destination::Replace { dest, mode: None }),
            Err(e) => Err(cannot(&e)),
        }
    }
}

/// Where downloaded bytes go.
enum Output {
    File {
        file: std::fs::File,
        tmp: TempPath,
        dest: PathBuf,
        mode: Option<std::fs::Permissions>,
    },
    /// Stdout or a device: what is written stays written.
    Stream {
        out: Box<dyn Write + Send>,
        written: bool,
    },
    Memory(Vec<u8>),
}

/// A failed write of downloaded bytes here: "no space" for a full disk,
/// else the caller's own I/O error (not the cluster's, so not retried).
fn local_write(e: std::io::Error) -> Error {
    match Error::from(e) {
        Error::Io(m) => Error::Local(m),
        other => other,
    }
}

/// A file shared by the attempts of a download, written through `&File`.
struct SharedFile(Arc<std::fs::File>);

impl Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        (&*self.0).flush()
    }
}

fn open_sink(target: &Destination) -> Result<Output> {
    match target {
        Destination::Stdout => Ok(Output::Stream { out: Box::new(std::io::stdout()), written: false }),
        Destination::Into(file) => Ok(Output::Stream { out: Box::new(SharedFile(file.clone())), written: false }),
        Destination::Replace { dest, mode } => {
            let dir = dest.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let base = dest.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let tmp = dir.join(format!(".{base}.scs-partial-{}", std::process::id()));
            let file = std::fs::File::create(&tmp)
                .map_err(|e| Error::Local(format!("cannot write {}: {e}", dest.display())))?;
            Ok(Output::File { file, tmp: TempPath(Some(tmp)), dest: dest.clone(), mode: mode.clone() })
        }
    }
}

impl Output {
    /// Whether bytes went to stdout (or a device) already.
    fn written(&self) -> bool {
        matches!(self, Output::Stream { written: true, .. })
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        let res = match self {
            Output::File { file, .. } => file.write_all(data),
            Output::Stream { out, written } => {
                *written = true;
                out.write_all(data)
            }
            Output::Memory(v) => {
                v.extend_from_slice(data);
                Ok(())
            }
        };
        res.map_err(local_write)
    }

    /// Starts over (a retry from another holder).
    fn reset(&mut self) -> Result<()> {
        match self {
            Output::File { file, .. } => {
                use std::io::Seek;
                file.set_len(0)?;
                file.seek(std::io::SeekFrom::Start(0))?;
            }
            Output::Memory(v) => v.clear(),
            Output::Stream { written: false, .. } => {}
            // Bytes already written cannot be taken back.
            Output::Stream { written: true, .. } => {
                return Err(Error::Invalid("the download broke off after part of it was written".into()))
            }
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        match self {
            Output::File { file, tmp, dest, mode } => {
                let cannot = |e: std::io::Error| Error::Local(format!("cannot write {}: {e}", dest.display()));
                if let Some(mode) = mode {
                    file.set_permissions(mode.clone()).map_err(cannot)?;
                }
                file.sync_all().map_err(local_write)?;
                let path = tmp.0.as_ref().ok_or_else(|| Error::Internal("download committed twice".into()))?;
                std::fs::rename(path, &*dest).map_err(cannot)?;
                // In place: nothing left to remove.
                tmp.0 = None;
                Ok(())
            }
            Output::Stream { out, .. } => out.flush().map_err(local_write),
            Output::Memory(_) => Ok(()),
        }
    }
}

/// A temp file removed on drop unless it was renamed into place.
struct TempPath(Option<PathBuf>);

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Receives a `Content` stream into `out`, checking its hash.
async fn receive_content(
    conn: &mut Connection,
    inode: Inode,
    offset: u64,
    len: u64,
    out: &mut Output,
    progress: Progress<'_>,
) -> Result<Inode> {
    // Whole reads are checked against the file's hash, end to end.
    let whole = offset == 0 && len == inode.size;
    let mut got = 0u64;
    if let Output::Memory(_) = out {
        let mut hasher = whole.then(Sha256::new);
        while let Some(b) = next_data(conn, &mut got, len, progress).await? {
            if let Some(h) = hasher.as_mut() {
                h.update(&b);
            }
            out.write(&b)?;
        }
        let hash = hasher.map(|h| ContentHash(h.finalize().into()));
        return check_received(inode, got, len, hash);
    }
    // To a file or stdout: hashing and writing run on a thread of their own,
    // overlapped with receiving.
    let mut owned = std::mem::replace(out, Output::Memory(Vec::new()));
    let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
    let worker = tokio::task::spawn_blocking(move || {
        let mut hasher = whole.then(Sha256::new);
        let mut result = Ok(());
        while let Some(b) = rx.blocking_recv() {
            if let Some(h) = hasher.as_mut() {
                h.update(&b);
            }
            if result.is_ok() {
                result = owned.write(&b);
            }
        }
        (owned, result, hasher.map(|h| ContentHash(h.finalize().into())))
    });
    let received = async {
        while let Some(b) = next_data(conn, &mut got, len, progress).await? {
            // The worker only goes away by panicking; the join below reports that.
            if tx.send(b).await.is_err() {
                break;
            }
        }
        Ok::<(), Error>(())
    }
    .await;
    drop(tx);
    let (owned, written, hash) = worker.await.map_err(|e| Error::Internal(format!("download writer: {e}")))?;
    *out = owned;
    received?;
    written?;
    check_received(inode, got, len, hash)
}

/// The next data chunk of a `Content` stream of `len` bytes, or `None` at its `End`.
async fn next_data(conn: &mut Connection, got: &mut u64, len: u64, progress: Progress<'_>) -> Result<Option<Bytes>> {
    match conn.recv_chunk().await? {
        Chunk::Data(b) => {
            *got += b.len() as u64;
            if *got > len {
                return Err(Error::Protocol(format!("the node sent more than the {len} bytes it announced")));
            }
            if let Some(p) = progress {
                p(*got);
            }
            Ok(Some(b))
        }
        Chunk::End(_) => Ok(None),
    }
}

/// The verdict on a received stream: complete, and for a whole read, intact.
fn check_received(inode: Inode, got: u64, len: u64, hash: Option<ContentHash>) -> Result<Inode> {
    if got != len {
        return Err(Error::Corrupt(format!("inode {} arrived short ({got} of {len} bytes)", inode.ino)));
    }
    if hash.is_some_and(|h| h != inode.hash) {
        return Err(Error::Corrupt(format!("inode {} does not match its stored hash", inode.ino)));
    }
    Ok(inode)
}

/// Reads until `buf` is full or the source ends; the number of bytes read.
fn fill(source: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// An upload in progress whose bytes are pushed one chunk at a time.
/// Dropping it unfinished abandons the upload: nothing is stored.
pub struct UploadStream {
    tx: Option<mpsc::Sender<Push>>,
    task: tokio::task::JoinHandle<Result<Changed>>,
}

impl UploadStream {
    /// Queues the next bytes (any length; they are re-chunked for the wire).
    ///
    /// # Errors
    /// The stream has failed: [`UploadStream::finish`] says why.
    pub async fn write(&mut self, data: Bytes) -> Result<()> {
        let tx = self.tx.as_ref().ok_or_else(|| Error::Internal("upload stream already finished".into()))?;
        if tx.send(Push::Data(data)).await.is_err() {
            self.tx = None;
            return Err(Error::Unavailable("the upload stream broke off".into()));
        }
        Ok(())
    }

    /// Ends the stream and waits until the file is stored.
    pub async fn finish(mut self) -> Result<Changed> {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Push::Finish).await;
        }
        (&mut self.task).await.map_err(|e| Error::Internal(format!("upload task: {e}")))?
    }
}

impl Drop for UploadStream {
    fn drop(&mut self) {
        if self.tx.is_some() {
            self.task.abort();
        }
    }
}

/// What the writer of an [`UploadStream`] sends its task.
enum Push {
    Data(Bytes),
    Finish,
}

/// Sends pushed bytes as data frames, then `End`, then waits for `Stored`.
/// If the writer goes away without `Finish`, the session is dropped without
/// `End`, so the leader stores nothing.
async fn stream_out(mut conn: Connection, mut rx: mpsc::Receiver<Push>) -> Result<Changed> {
    let mut hasher = Sha256::new();
    loop {
        match rx.recv().await {
            Some(Push::Data(data)) => {
                hasher.update(&data);
                for chunk in data.chunks(CHUNK_SIZE) {
                    conn.write_data(chunk).await?;
                }
            }
            Some(Push::Finish) => break,
            None => return Err(Error::Unavailable("upload abandoned".into())),
        }
    }
    let hash = ContentHash(hasher.finalize().into());
    conn.write_message(&Message::End { hash }).await?;
    conn.flush().await?;
    // The nodes fsync before answering: give big files time.
    conn.set_read_timeout(Some(STORE_TIMEOUT));
    made(conn.recv_response().await?)
}
