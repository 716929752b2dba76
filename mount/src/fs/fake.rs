//! An in-memory cluster for the tests: the namespace is a
//! [`scs_common::namespace::Memory`] changed by the same rules the leader
//! runs (`make`, `create_file`, `put_content`, `link`, `remove`, `rename`,
//! ...), with versions stamped as a leader stamps them, and contents in
//! memory. It can be taken down (every call then fails as an unreachable
//! cluster does), filled up, and asked what it was sent.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes as Chunk;
use sha2::{Digest, Sha256};

use scs_common::inode::{
    Bytes, Changed, DirEntry, DirStep, Inode, Listed, NewNode, Removal, RenameMode, SetAttrs, XattrMode,
};
use scs_common::locks::{FileLock, Limits, LockAnswer, LockTable, SessionId};
use scs_common::namespace::{self, Memory, Plan, View};
use scs_common::proto::rpc::{NodeStatus, StatusReport, Target, UploadSpec};
use scs_common::{ContentHash, Error, Ino, Kind, NodeId, Result, Term, Version};

use super::cluster::{Cluster, Opener, UploadStream, Uploaded};
use super::lock;
use super::time::now_ns;

/// The fake cluster. Cheap to share: streams hold it too.
#[derive(Clone, Default)]
pub struct Fake {
    state: Arc<Mutex<State>>,
}

struct State {
    ns: Memory,
    /// The content of each file, as last stored.
    blobs: HashMap<Ino, Vec<u8>>,
    seq: u64,
    last_ns: i64,
    next_ino: u64,
    down: bool,
    max_files: Option<u64>,
    uploads: Vec<UploadSpec>,
    streams: usize,
    /// Exchanges of many small files.
    many: usize,
    /// Lookups and listings asked for.
    asked: usize,
    /// The leader's advisory locks, by the leader's rules.
    locks: LockTable,
}

impl Default for State {
    fn default() -> Self {
        State {
            ns: Memory::new(0, 0),
            blobs: HashMap::new(),
            seq: 0,
            last_ns: 0,
            next_ino: 2,
            down: false,
            max_files: None,
            uploads: Vec::new(),
            streams: 0,
            many: 0,
            asked: 0,
            locks: lock_leader(Limits { grace: Duration::ZERO, ..Limits::default() }),
        }
    }
}

impl State {
    fn check_up(&self) -> Result<()> {
        if self.down {
            return Err(Error::Unavailable("the fake cluster is down".into()));
        }
        Ok(())
    }

    /// The leader's clock: never the same time twice.
    fn now(&mut self) -> i64 {
        self.last_ns = now_ns().max(self.last_ns + 1);
        self.last_ns
    }

    fn version(&mut self) -> Version {
        self.seq += 1;
        Version::new(Term(1), self.seq)
    }

    /// Runs one change as the leader does: the rule against what is
    /// there, then its records stamped and applied.
    fn run<T>(&mut self, op: impl FnOnce(&mut Plan<'_, Memory>, i64) -> Result<T>) -> Result<T> {
        self.run_stepped(op).map(|(out, _)| out)
    }

    /// [`State::run`], with the steps of the directories whose entries changed.
    fn run_stepped<T>(
        &mut self,
        op: impl FnOnce(&mut Plan<'_, Memory>, i64) -> Result<T>,
    ) -> Result<(T, Vec<DirStep>)> {
        self.check_up()?;
        let now = self.now();
        let (out, records) = {
            let mut plan = Plan::new(&self.ns, now);
            let out = op(&mut plan, now)?;
            (out, plan.records())
        };
        let mut stamped = Vec::with_capacity(records.len());
        for mut r in records {
            r.set_version(self.version());
            stamped.push(r);
        }
        let steps = namespace::dir_steps(&self.ns, &stamped)?;
        self.ns.apply(stamped);
        Ok((out, steps))
    }

    /// [`State::run`] for a namespace change: also every inode it touched
    /// that is still there, as applied, `first` first (as the leader answers).
    fn change<T>(
        &mut self,
        first: impl FnOnce(&T) -> Option<Ino>,
        op: impl FnOnce(&mut Plan<'_, Memory>, i64) -> Result<T>,
    ) -> Result<(T, Changed)> {
        let mut inos = Vec::new();
        let (out, dirs) = self.run_stepped(|p, now| {
            let out = op(p, now)?;
            let records = p.snapshot_records();
            inos.extend(first(&out));
            for i in records.iter().filter_map(|r| r.as_inode()) {
                if !inos.contains(&i.ino) {
                    inos.push(i.ino);
                }
            }
            Ok(out)
        })?;
        let inodes = inos.into_iter().filter_map(|i| self.ns.inode(i).ok().flatten()).collect();
        Ok((out, Changed { inodes, dirs }))
    }

    fn inode(&self, ino: Ino) -> Result<Inode> {
        self.ns.inode(ino)?.ok_or_else(|| Error::NotFound(format!("inode {ino}")))
    }

    fn files(&self) -> u64 {
        self.blobs.len() as u64
    }

    fn bytes(&self) -> u64 {
        self.blobs.values().map(|b| b.len() as u64).sum()
    }

    /// Stores `data` as `spec` says, as the leader does for an upload.
    fn store(&mut self, spec: UploadSpec, data: Vec<u8>) -> Result<Uploaded> {
        self.check_up()?;
        if let Some(size) = spec.size {
            if size != data.len() as u64 {
                return Err(Error::Protocol(format!("{} bytes announced, {} sent", size, data.len())));
            }
        }
        let existing = match &spec.target {
            Target::Ino(ino) => Some(*ino),
            Target::New { parent, name, ino } => match self.ns.dentry(*parent, name)? {
                Some(d) if d.child == *ino => Some(*ino),
                _ => None,
            },
            Target::Path(p) => namespace::resolve(&self.ns, p, true)?.map(|i| i.ino),
        };
        if existing.is_none() && self.max_files.is_some_and(|max| self.files() >= max) {
            return Err(Error::NoSpace("no node has room for another file".into()));
        }
        self.uploads.push(spec.clone());
        let content = self.version();
        let mut from = Inode::new(Ino::NONE, Kind::File, spec.mode, spec.uid, spec.gid, spec.mtime_ns);
        from.atime_ns = spec.atime_ns;
        from.xattrs = spec.xattrs.clone();
        from.size = data.len() as u64;
        from.hash = ContentHash(Sha256::digest(&data).into());
        from.content = content;
        from.holders = vec![NodeId(1)];
        let (stored, dirs) = match spec.target {
            Target::Ino(ino) => self.run_stepped(|p, _| namespace::put_content(p, ino, &from, None))?,
            // As the leader does: an earlier upload made it (and it may
            // have been renamed since): the content goes into it.
            Target::New { ino, .. } if self.inode(ino).is_ok() => {
                self.run_stepped(|p, _| namespace::put_content(p, ino, &from, None))?
            }
            Target::New { parent, name, ino } => {
                let new = Inode { ino, ..from };
                self.run_stepped(|p, _| namespace::create_file(p, parent, &name, new, spec.exclusive))?
            }
            Target::Path(path) => match existing {
                Some(ino) => self.run_stepped(|p, _| namespace::put_content(p, ino, &from, None))?,
                None => {
                    let (dir, base) = match path.rsplit_once('/') {
                        Some((d, b)) => (d.to_string(), b.to_string()),
                        None => (String::new(), path.clone()),
                    };
                    let parent =
                        namespace::resolve(&self.ns, &dir, true)?.ok_or_else(|| Error::NotFound(dir.clone()))?.ino;
                    let ino = Ino(self.next_ino);
                    self.next_ino += 1;
                    let new = Inode { ino, ..from };
                    self.run_stepped(|p, _| namespace::create_file(p, parent, &base, new, spec.exclusive))?
                }
            },
        };
        self.blobs.insert(stored.ino, data);
        Ok(Uploaded { inode: self.inode(stored.ino)?, dirs })
    }
}

impl Fake {
    pub fn new() -> Fake {
        Fake::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Takes the cluster down (every call fails as "unavailable") or back up.
    pub fn set_down(&self, down: bool) {
        self.state().down = down;
    }

    /// At most `max` files with content fit.
    pub fn set_max_files(&self, max: u64) {
        self.state().max_files = Some(max);
    }

    /// Lookups and listings asked for so far.
    pub fn names_asked(&self) -> usize {
        self.state().asked
    }

    /// Streaming uploads started so far.
    pub fn streams(&self) -> usize {
        self.state().streams
    }

    /// Exchanges that stored several small files.
    pub fn exchanges_of_many(&self) -> usize {
        self.state().many
    }

    /// Every upload stored so far, in order.
    pub fn uploads(&self) -> Vec<UploadSpec> {
        self.state().uploads.clone()
    }

    /// What `path` leads to, not following a last symlink.
    pub fn at(&self, path: &str) -> Option<Inode> {
        namespace::resolve(&self.state().ns, path, false).ok().flatten()
    }

    /// The stored content of `ino`.
    pub fn content(&self, ino: Ino) -> Option<Vec<u8>> {
        let st = self.state();
        st.ns.inode(ino).ok().flatten()?;
        Some(st.blobs.get(&ino).cloned().unwrap_or_default())
    }

    /// Stores `data` at `name` in `dir` as another client would: the
    /// content of the file there, or a new file owned by root.
    pub fn put_file(&self, dir: Ino, name: &str, data: &[u8]) -> Inode {
        let mut st = self.state();
        let target = match st.ns.dentry(dir, name).ok().flatten() {
            Some(d) => Target::Ino(d.child),
            None => {
                let ino = Ino(st.next_ino);
                st.next_ino += 1;
                Target::New { parent: dir, name: name.into(), ino }
            }
        };
        let mut spec = UploadSpec::new(target, Some(data.len() as u64), 0o644, now_ns());
        (spec.uid, spec.gid) = (0, 0);
        st.store(spec, data.to_vec()).expect("the fake stores a file").inode
    }

    /// Makes something as another client would.
    pub fn make_as(&self, dir: Ino, name: &str, node: NewNode) -> Inode {
        self.make(dir, name, &node).expect("the fake makes it").inodes.remove(0)
    }

    /// A failover as the locks see it: a new leader with an empty table,
    /// serving from now with `limits`' grace period.
    pub fn new_lock_leader(&self, limits: Limits) {
        self.state().locks = lock_leader(limits);
    }

    /// Every lock the leader holds now, of every session.
    pub fn lock_count(&self) -> usize {
        self.state().locks.len()
    }
}

fn lock_leader(limits: Limits) -> LockTable {
    let mut t = LockTable::new(limits);
    t.serve(Instant::now());
    t
}

impl Cluster for Fake {
    fn trash(&self) -> Result<Vec<scs_common::proto::rpc::TrashItem>> {
        Ok(Vec::new())
    }

    fn lock(&self, session: SessionId, lock: FileLock) -> Result<LockAnswer> {
        let mut st = self.state();
        st.check_up()?;
        st.locks.lock(Instant::now(), session, lock)
    }

    fn unlock(&self, session: SessionId, ino: Ino, owner: u64, start: u64, end: u64) -> Result<LockAnswer> {
        let mut st = self.state();
        st.check_up()?;
        st.locks.unlock(Instant::now(), session, ino, owner, start, end)
    }

    fn test_lock(&self, session: SessionId, lock: FileLock) -> Result<LockAnswer> {
        let mut st = self.state();
        st.check_up()?;
        st.locks.test(Instant::now(), session, &lock)
    }

    fn keep_alive(&self, session: SessionId) -> Result<LockAnswer> {
        let mut st = self.state();
        st.check_up()?;
        Ok(st.locks.keep_alive(Instant::now(), session))
    }

    fn reclaim(&self, session: SessionId, locks: Vec<FileLock>) -> Result<Vec<FileLock>> {
        let mut st = self.state();
        st.check_up()?;
        st.locks.reclaim(Instant::now(), session, locks)
    }

    fn lookup(&self, parent: Ino, name: &str) -> Result<Option<Inode>> {
        let mut st = self.state();
        st.check_up()?;
        st.asked += 1;
        match st.ns.dentry(parent, name)? {
            Some(d) => st.ns.inode(d.child),
            None => Ok(None),
        }
    }

    fn getattr(&self, ino: Ino) -> Result<Option<Inode>> {
        let st = self.state();
        st.check_up()?;
        st.ns.inode(ino)
    }

    fn readdir(&self, dir: Ino) -> Result<Listed> {
        let mut st = self.state();
        st.check_up()?;
        st.asked += 1;
        let d = st.inode(dir)?;
        if !d.is_dir() {
            return Err(Error::NotDir(format!("inode {dir}")));
        }
        let mut entries = Vec::new();
        for c in st.ns.children(dir) {
            entries.push(DirEntry { name: c.name.clone(), inode: st.inode(c.child)? });
        }
        Ok(Listed { entries, version: Some(d.version) })
    }

    fn make(&self, parent: Ino, name: &str, node: &NewNode) -> Result<Changed> {
        let mut st = self.state();
        st.check_up()?;
        let ino = Ino(st.next_ino);
        let (_, touched) = st.change(|i: &Inode| Some(i.ino), |p, _| namespace::make(p, parent, name, node, ino))?;
        st.next_ino += 1;
        Ok(touched)
    }

    fn link(&self, ino: Ino, parent: Ino, name: &str) -> Result<Changed> {
        let mut st = self.state();
        let (_, touched) = st.change(|_| Some(ino), |p, _| namespace::link(p, ino, parent, name))?;
        Ok(touched)
    }

    fn remove(&self, parent: Ino, name: &str, what: Removal) -> Result<Changed> {
        let mut st = self.state();
        let child = st.ns.dentry(parent, name)?.map(|d| d.child);
        let (_, touched) = st.change(|_| None, |p, _| namespace::remove(p, parent, name, what))?;
        if let Some(c) = child.filter(|c| st.ns.inode(*c).ok().flatten().is_none()) {
            st.blobs.remove(&c);
        }
        Ok(touched)
    }

    fn rename(&self, parent: Ino, name: &str, new_parent: Ino, new_name: &str, mode: RenameMode) -> Result<Changed> {
        let mut st = self.state();
        let replaced = st.ns.dentry(new_parent, new_name)?.map(|d| d.child);
        let (_, touched) =
            st.change(|_| None, |p, _| namespace::rename(p, parent, name, new_parent, new_name, mode))?;
        if let Some(c) = replaced.filter(|c| st.ns.inode(*c).ok().flatten().is_none()) {
            st.blobs.remove(&c);
        }
        Ok(touched)
    }

    fn set_attr(&self, ino: Ino, set: &SetAttrs) -> Result<Inode> {
        let mut st = self.state();
        st.run(|p, _| namespace::set_attr(p, ino, set))?;
        st.inode(ino)
    }

    fn set_xattr(&self, ino: Ino, name: &str, value: &[u8], mode: XattrMode) -> Result<Inode> {
        let mut st = self.state();
        let value = Bytes(value.to_vec());
        st.run(|p, _| namespace::set_xattr(p, ino, name, &value, mode))?;
        st.inode(ino)
    }

    fn remove_xattr(&self, ino: Ino, name: &str) -> Result<Inode> {
        let mut st = self.state();
        st.run(|p, _| namespace::remove_xattr(p, ino, name))?;
        st.inode(ino)
    }

    fn reserve_inodes(&self, count: u32) -> Result<(Ino, u32)> {
        let mut st = self.state();
        st.check_up()?;
        let first = st.next_ino;
        st.next_ino += u64::from(count);
        Ok((Ino(first), count))
    }

    fn status(&self) -> Result<StatusReport> {
        let st = self.state();
        st.check_up()?;
        let node = NodeStatus {
            id: NodeId(1),
            addr: "fake".into(),
            alive: true,
            role: None,
            files: st.files(),
            max_files: st.max_files,
            disk_free: 1 << 30,
            disk_total: 1 << 31,
            wanted: 0,
            corrupt: 0,
            state: Default::default(),
            bytes: st.bytes(),
            trash_bytes: 0,
        };
        Ok(StatusReport {
            node: NodeId(1),
            leader: Some(NodeId(1)),
            term: Term(1),
            quorum: true,
            cluster_size: 1,
            replicas: 1,
            nodes: vec![node],
            under_replicated: 0,
            candidates: Vec::new(),
            moving: Default::default(),
        })
    }

    fn status_within(&self, _limit: Duration) -> Option<StatusReport> {
        self.status().ok()
    }

    fn upload(&self, spec: UploadSpec, open: Opener) -> Result<Uploaded> {
        self.state().check_up()?;
        let mut data = Vec::new();
        open().and_then(|mut r| r.read_to_end(&mut data)).map_err(Error::from)?;
        self.state().store(spec, data)
    }

    fn upload_many(&self, files: &[(UploadSpec, Vec<u8>)]) -> Result<Vec<Result<Uploaded>>> {
        self.state().check_up()?;
        self.state().many += 1;
        Ok(files.iter().map(|(spec, data)| self.state().store(spec.clone(), data.clone())).collect())
    }

    fn start_stream(&self, spec: UploadSpec) -> Result<Box<dyn UploadStream>> {
        let mut st = self.state();
        st.check_up()?;
        st.streams += 1;
        drop(st);
        Ok(Box::new(FakeStream { fake: self.clone(), spec, data: Vec::new() }))
    }

    fn download_to(&self, ino: Ino, dest: &Path) -> Result<Inode> {
        let (inode, data) = {
            let st = self.state();
            st.check_up()?;
            (st.inode(ino)?, st.blobs.get(&ino).cloned().unwrap_or_default())
        };
        std::fs::write(dest, data)?;
        Ok(inode)
    }

    fn read_range(&self, ino: Ino, offset: u64, len: u64, mut buf: Vec<u8>) -> Result<(Inode, Vec<u8>)> {
        let st = self.state();
        st.check_up()?;
        let inode = st.inode(ino)?;
        let data = st.blobs.get(&ino).map(Vec::as_slice).unwrap_or_default();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
        let end = start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX)).min(data.len());
        buf.clear();
        buf.extend_from_slice(&data[start..end]);
        Ok((inode, buf))
    }
}

/// A streaming upload: the bytes are kept until `finish` stores them.
struct FakeStream {
    fake: Fake,
    spec: UploadSpec,
    data: Vec<u8>,
}

impl UploadStream for FakeStream {
    fn push(&mut self, data: Chunk) -> Result<()> {
        self.fake.state().check_up()?;
        self.data.extend_from_slice(&data);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Uploaded> {
        let FakeStream { fake, spec, data } = *self;
        let mut st = fake.state();
        st.store(spec, data)
    }
}
