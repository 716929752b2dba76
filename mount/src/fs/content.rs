//! The local content cache: file contents on local disk, one file per
//! content hash (so a renamed or chmod-ed file is still cached, and a changed
//! file never matches), bounded in size with least-recently-used eviction.
//!
//! A cache file fills in the background with sequential ranged reads of
//! the file's inode, a few MiB each, three in flight (each on a thread:
//! the cluster's calls block); a read is answered as soon as its range has
//! arrived. A fill runs only a window ahead of the furthest read, so `head`
//! of a huge file does not fetch all of it. A read far beyond what has
//! arrived goes straight to the cluster instead of waiting.
//!
//! Files are `<hash>` when complete and checked against the hash, and
//! `<hash>.<n>.part` while filling; complete files are reused after a restart.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fuser::Errno;
use sha2::{Digest, Sha256};

use scs_common::{ContentHash, Error, Ino, Inode, Result};

use super::cluster::Cluster;
use super::errno::{errno, io_errno};
use super::lock;

/// Bytes asked for in one ranged read.
const PIECE: u64 = 8 << 20;
/// Ranged reads in flight per fill.
const DEPTH: usize = 3;
/// How far a fill runs ahead of the furthest read.
const WINDOW: u64 = 64 << 20;
/// A read this far beyond what has arrived is fetched directly.
const FAR: u64 = 16 << 20;
/// A fill with nothing wanted for this long stops (it resumes on demand).
const IDLE: Duration = Duration::from_secs(15);
/// Longest a read waits for its range to arrive: twice what one ranged
/// read of a piece may take through the cluster's time limits.
const WAIT_LIMIT: Duration = Duration::from_secs(80);

/// Cached contents, shared with the fills.
pub struct ContentCache {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    limit: u64,
    index: Mutex<Index>,
    clock: AtomicU64,
    serial: AtomicU64,
}

#[derive(Default)]
struct Index {
    items: HashMap<ContentHash, Arc<Item>>,
    /// Sum of the sizes of the indexed items.
    used: u64,
}

/// One content, complete or filling.
pub struct Item {
    hash: ContentHash,
    size: u64,
    file: File,
    part: PathBuf,
    done_path: PathBuf,
    fill: Mutex<Fill>,
    arrived: Condvar,
    /// Wakes an idle fill when a reader wants more.
    wake: Condvar,
    last_used: AtomicU64,
}

#[derive(Default)]
struct Fill {
    /// Bytes from the start that are on disk.
    have: u64,
    /// How far the fill should run.
    want: u64,
    done: bool,
    failed: Option<Errno>,
    running: bool,
    /// The hash of the first `have` bytes, kept while a fill sleeps.
    hasher: Option<Sha256>,
}

impl ContentCache {
    /// Opens (creating) the cache in `dir`, keeping complete files from
    /// earlier runs and removing partial ones.
    pub fn open(dir: &Path, limit: u64) -> io::Result<ContentCache> {
        std::fs::create_dir_all(dir)?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            limit,
            index: Mutex::new(Index::default()),
            clock: AtomicU64::new(1),
            serial: AtomicU64::new(0),
        });
        let mut found = Vec::new();
        for f in std::fs::read_dir(dir)?.flatten() {
            let path = f.path();
            let name = f.file_name().to_string_lossy().into_owned();
            match (ContentHash::from_hex(&name), f.metadata()) {
                (Some(hash), Ok(meta)) if meta.is_file() => {
                    found.push((meta.modified().ok(), hash, meta.len(), path));
                }
                _ => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        found.sort_by_key(|(t, ..)| *t);
        for (_, hash, size, path) in found {
            if let Ok(file) = File::open(&path) {
                shared.insert(Item::complete(hash, size, file, path, shared.tick()));
            }
        }
        shared.make_room(None);
        Ok(ContentCache { shared })
    }

    /// The cache item for a content, new (empty) if it is not cached.
    pub fn item(&self, hash: ContentHash, size: u64) -> io::Result<Arc<Item>> {
        if let Some(item) = lock(&self.shared.index).items.get(&hash) {
            if item.size == size {
                item.last_used.store(self.shared.tick(), Ordering::Relaxed);
                return Ok(item.clone());
            }
        }
        let n = self.shared.serial.fetch_add(1, Ordering::Relaxed);
        let part = self.shared.dir.join(format!("{}.{n}.part", hash.to_hex()));
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&part)?;
        let item = Arc::new(Item {
            hash,
            size,
            file,
            part,
            done_path: self.shared.dir.join(hash.to_hex()),
            fill: Mutex::new(Fill { hasher: Some(Sha256::new()), ..Fill::default() }),
            arrived: Condvar::new(),
            wake: Condvar::new(),
            last_used: AtomicU64::new(self.shared.tick()),
        });
        let mut index = lock(&self.shared.index);
        // Another reader may have created it meanwhile: use theirs.
        if let Some(theirs) = index.items.get(&hash).filter(|i| i.size == size) {
            let theirs = theirs.clone();
            drop(index);
            let _ = std::fs::remove_file(&item.part);
            return Ok(theirs);
        }
        if let Some(old) = index.items.remove(&hash) {
            index.used = index.used.saturating_sub(old.size);
        }
        index.used += size;
        index.items.insert(hash, item.clone());
        drop(index);
        self.shared.make_room(Some(hash));
        Ok(item)
    }

    /// Reads `len` bytes at `offset` of `item` (the content of inode
    /// `ino` on the cluster), starting or waking its fill. `Ok(None)`: the
    /// range is far beyond what has arrived; read it from the cluster directly.
    pub fn read(
        &self,
        item: &Arc<Item>,
        cluster: &Arc<dyn Cluster>,
        ino: Ino,
        offset: u64,
        len: u64,
    ) -> std::result::Result<Option<Vec<u8>>, Errno> {
        let end = offset.saturating_add(len).min(item.size);
        if offset >= end {
            return Ok(Some(Vec::new()));
        }
        item.last_used.store(self.shared.tick(), Ordering::Relaxed);
        let deadline = Instant::now() + WAIT_LIMIT;
        let mut fill = lock(&item.fill);
        loop {
            if fill.done || fill.have >= end {
                break;
            }
            if let Some(e) = fill.failed {
                return Err(e);
            }
            if offset > fill.have + FAR {
                return Ok(None);
            }
            fill.want = fill.want.max(end.saturating_add(WINDOW)).min(item.size);
            if !fill.running {
                let (shared, it, cluster) = (self.shared.clone(), item.clone(), cluster.clone());
                let started = std::thread::Builder::new()
                    .name("scs-fill".into())
                    .spawn(move || run_fill(shared, it, cluster, ino));
                if let Err(e) = started {
                    log::warn!("cannot start a thread to read inode {ino}: {e}");
                    return Err(Errno::EIO);
                }
                fill.running = true;
            } else {
                item.wake.notify_all();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!("reading inode {ino}: the cache fill made no progress in time");
                return Err(Errno::EIO);
            }
            fill = item.arrived.wait_timeout(fill, left).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
        drop(fill);
        let mut buf = super::buffers::take((end - offset) as usize);
        item.file.read_exact_at(&mut buf, offset).map_err(|e| io_errno(&e))?;
        Ok(Some(buf))
    }

    /// A file just uploaded with this content (`inode`'s) becomes a cached
    /// copy (a hard link, so the staging file can go).
    pub fn adopt(&self, inode: &Inode, path: &Path) {
        if lock(&self.shared.index).items.contains_key(&inode.hash) {
            return;
        }
        let done_path = self.shared.dir.join(inode.hash.to_hex());
        let _ = std::fs::remove_file(&done_path);
        if let Err(e) = std::fs::hard_link(path, &done_path) {
            log::debug!("cannot keep the content of inode {} in the cache: {e}", inode.ino);
            return;
        }
        match File::open(&done_path) {
            Ok(file) => {
                let item = Item::complete(inode.hash, inode.size, file, done_path, self.shared.tick());
                self.shared.insert(item);
                self.shared.make_room(Some(inode.hash));
            }
            Err(_) => {
                let _ = std::fs::remove_file(&done_path);
            }
        }
    }

    /// Copies a complete cached content to `dest`; false if it is not cached.
    pub fn copy_to(&self, hash: ContentHash, size: u64, dest: &Path) -> bool {
        let item = match lock(&self.shared.index).items.get(&hash) {
            Some(i) if i.size == size && lock(&i.fill).done => i.clone(),
            _ => return false,
        };
        item.last_used.store(self.shared.tick(), Ordering::Relaxed);
        match copy_out(&item.file, size, dest) {
            Ok(()) => true,
            Err(e) => {
                log::debug!("copy from the cache failed: {e}");
                let _ = std::fs::remove_file(dest);
                false
            }
        }
    }

    /// Bytes the indexed contents take (for tests and logs).
    pub fn used(&self) -> u64 {
        lock(&self.shared.index).used
    }

    /// Whether this content is cached completely.
    pub fn has(&self, hash: &ContentHash) -> bool {
        lock(&self.shared.index).items.get(hash).is_some_and(|i| lock(&i.fill).done)
    }
}

impl Item {
    fn complete(hash: ContentHash, size: u64, file: File, path: PathBuf, tick: u64) -> Arc<Item> {
        Arc::new(Item {
            hash,
            size,
            file,
            part: path.clone(),
            done_path: path,
            fill: Mutex::new(Fill { have: size, want: size, done: true, ..Fill::default() }),
            arrived: Condvar::new(),
            wake: Condvar::new(),
            last_used: AtomicU64::new(tick),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn hash(&self) -> ContentHash {
        self.hash
    }
}

impl Shared {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    fn insert(&self, item: Arc<Item>) {
        let mut index = lock(&self.index);
        if let Some(old) = index.items.remove(&item.hash) {
            index.used = index.used.saturating_sub(old.size);
        }
        index.used += item.size;
        index.items.insert(item.hash, item);
    }

    /// Evicts least recently used contents (not `keep`, not filling) until
    /// the cache fits its limit. Open readers keep their file descriptors.
    fn make_room(&self, keep: Option<ContentHash>) {
        let mut index = lock(&self.index);
        while index.used > self.limit {
            let victim = index
                .items
                .values()
                .filter(|i| Some(i.hash) != keep && !lock(&i.fill).running)
                .min_by_key(|i| i.last_used.load(Ordering::Relaxed))
                .map(|i| i.hash);
            let Some(hash) = victim else { break };
            if let Some(item) = index.items.remove(&hash) {
                index.used = index.used.saturating_sub(item.size);
                let _ = std::fs::remove_file(&item.part);
                let _ = std::fs::remove_file(&item.done_path);
            }
        }
    }

    /// A fill failed: its item leaves the index so the next reader starts over.
    fn drop_item(&self, item: &Arc<Item>) {
        let mut index = lock(&self.index);
        if index.items.get(&item.hash).is_some_and(|i| Arc::ptr_eq(i, item)) {
            index.items.remove(&item.hash);
            index.used = index.used.saturating_sub(item.size);
        }
        drop(index);
        let _ = std::fs::remove_file(&item.part);
    }
}

type Piece = (u64, u64, JoinHandle<Result<(Inode, Vec<u8>)>>);

/// Fills `item` from the cluster until it is complete, fails, or nobody
/// wanted more for [`IDLE`]. Runs on a thread of its own; each piece in
/// flight on another (the cluster's calls block).
fn run_fill(shared: Arc<Shared>, item: Arc<Item>, cluster: Arc<dyn Cluster>, ino: Ino) {
    let (mut next, mut hasher) = {
        let mut f = lock(&item.fill);
        (f.have, f.hasher.take().unwrap_or_default())
    };
    let mut inflight: VecDeque<Piece> = VecDeque::new();
    // Piece buffers, used again: a new 8 MiB buffer is a fresh mapping the
    // kernel faults in and zeroes page by page.
    let mut spare: Vec<Vec<u8>> = Vec::new();
    loop {
        let want = lock(&item.fill).want;
        while inflight.len() < DEPTH && next < item.size && next < want {
            let n = PIECE.min(item.size - next);
            let (c, off, buf) = (cluster.clone(), next, spare.pop().unwrap_or_default());
            match std::thread::Builder::new().name("scs-piece".into()).spawn(move || c.read_range(ino, off, n, buf)) {
                Ok(h) => inflight.push_back((off, n, h)),
                Err(e) => {
                    log::warn!("cannot start a thread to read inode {ino}: {e}");
                    fail_fill(&shared, &item, Errno::EIO);
                    return;
                }
            }
            next += n;
        }
        let Some((off, n, piece)) = inflight.pop_front() else {
            if next >= item.size {
                finish_fill(&shared, &item, hasher);
                return;
            }
            // Caught up with the readers: wait for one to want more.
            let deadline = Instant::now() + IDLE;
            let mut f = lock(&item.fill);
            while f.want <= next {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    f.running = false;
                    f.hasher = Some(hasher);
                    return;
                }
                f = item.wake.wait_timeout(f, left).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
            }
            continue;
        };
        let got = piece.join().unwrap_or_else(|_| Err(Error::Internal("a read thread panicked".into())));
        let data = match got {
            Ok((inode, data)) if inode.hash == item.hash && data.len() as u64 == n => data,
            Ok((inode, _)) => {
                log::info!("inode {ino} changed while it was being read (now {:?})", inode.version);
                fail_fill(&shared, &item, Errno::EIO);
                return;
            }
            Err(e) => {
                log::warn!("reading inode {ino} at {off}: {e}");
                fail_fill(&shared, &item, errno(&e));
                return;
            }
        };
        // Readers are let in as soon as the piece is on disk.
        if let Err(e) = item.file.write_all_at(&data, off) {
            log::warn!("cannot write the cache file of inode {ino}: {e}");
            fail_fill(&shared, &item, io_errno(&e));
            return;
        }
        {
            let mut f = lock(&item.fill);
            f.have = off + n;
            item.arrived.notify_all();
        }
        // The pieces still in flight keep the network busy meanwhile.
        hasher.update(&data);
        spare.push(data);
    }
}

fn finish_fill(shared: &Shared, item: &Arc<Item>, hasher: Sha256) {
    let ours = ContentHash(hasher.finalize().into());
    if ours != item.hash {
        log::warn!("a cached copy did not match its hash {:?}; dropped it", item.hash);
        fail_fill(shared, item, Errno::EIO);
        return;
    }
    if let Err(e) = std::fs::rename(&item.part, &item.done_path) {
        log::debug!("cannot finish the cache file {}: {e}", item.part.display());
    }
    let mut f = lock(&item.fill);
    f.done = true;
    f.running = false;
    f.have = item.size;
    item.arrived.notify_all();
}

/// Pieces still in flight end by themselves (the cluster's calls are
/// bounded); what they bring is dropped with their threads.
fn fail_fill(shared: &Shared, item: &Arc<Item>, e: Errno) {
    shared.drop_item(item);
    let mut f = lock(&item.fill);
    f.failed = Some(e);
    f.running = false;
    item.arrived.notify_all();
}

/// Copies `size` bytes of `from` (by offset, not moving any cursor) to a new file.
fn copy_out(from: &File, size: u64, dest: &Path) -> io::Result<()> {
    let out = File::create(dest)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(buf.len() as u64) as usize;
        from.read_exact_at(&mut buf[..n], off)?;
        out.write_all_at(&buf[..n], off)?;
        off += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::fake::Fake;
    use scs_common::Kind;

    fn inode_of(bytes: &[u8]) -> Inode {
        let mut i = Inode::new(Ino(9), Kind::File, 0o644, 0, 0, 0);
        i.size = bytes.len() as u64;
        i.hash = ContentHash(Sha256::digest(bytes).into());
        i
    }

    fn adopt_bytes(cache: &ContentCache, scratch: &Path, bytes: &[u8]) -> Inode {
        let e = inode_of(bytes);
        let staged = scratch.join(format!("staged-{}", bytes.len()));
        std::fs::write(&staged, bytes).unwrap();
        cache.adopt(&e, &staged);
        std::fs::remove_file(&staged).unwrap();
        e
    }

    #[test]
    fn a_read_fills_the_cache_from_the_cluster_in_pieces_and_checks_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ContentCache::open(&dir.path().join("content"), 1 << 30).unwrap();
        let fake = Arc::new(Fake::new());
        let bytes: Vec<u8> = (0..(PIECE * 2 + 12345)).map(|i| (i % 251) as u8).collect();
        let stored = fake.put_file(Ino::ROOT, "big", &bytes);
        let cluster: Arc<dyn Cluster> = fake.clone();
        let item = cache.item(stored.hash, stored.size).unwrap();
        let got = cache.read(&item, &cluster, stored.ino, PIECE + 10, 100).unwrap().unwrap();
        assert_eq!(got, &bytes[(PIECE + 10) as usize..(PIECE + 110) as usize]);
        let tail = cache.read(&item, &cluster, stored.ino, PIECE * 2, 1 << 20).unwrap().unwrap();
        assert_eq!(tail, &bytes[(PIECE * 2) as usize..]);
        let until = Instant::now() + Duration::from_secs(30);
        while !cache.has(&stored.hash) {
            assert!(Instant::now() < until, "the fill did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
        let out = dir.path().join("whole");
        assert!(cache.copy_to(stored.hash, stored.size, &out));
        assert_eq!(std::fs::read(&out).unwrap(), bytes, "complete and checked against its hash");
    }

    #[test]
    fn a_content_changed_under_a_fill_fails_the_read_instead_of_mixing_versions() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ContentCache::open(&dir.path().join("content"), 1 << 30).unwrap();
        let fake = Arc::new(Fake::new());
        let old = fake.put_file(Ino::ROOT, "f", b"old content");
        fake.put_file(Ino::ROOT, "f", b"new content!");
        let cluster: Arc<dyn Cluster> = fake.clone();
        let item = cache.item(old.hash, old.size).unwrap();
        assert_eq!(cache.read(&item, &cluster, old.ino, 0, 5), Err(Errno::EIO));
        assert!(!cache.has(&old.hash), "nothing half-right is kept");
    }

    #[test]
    fn an_adopted_upload_is_served_locally_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("content");
        let cache = ContentCache::open(&cache_dir, 1 << 20).unwrap();
        let e = adopt_bytes(&cache, dir.path(), b"hello cache");
        assert!(cache.has(&e.hash));
        let out = dir.path().join("copy");
        assert!(cache.copy_to(e.hash, e.size, &out));
        assert_eq!(std::fs::read(&out).unwrap(), b"hello cache");
        drop(cache);
        let again = ContentCache::open(&cache_dir, 1 << 20).unwrap();
        assert!(again.has(&e.hash), "complete files are kept across restarts");
        assert_eq!(again.used(), e.size);
    }

    #[test]
    fn the_least_recently_used_content_is_evicted_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ContentCache::open(&dir.path().join("content"), 250).unwrap();
        let a = adopt_bytes(&cache, dir.path(), &[1u8; 100]);
        let b = adopt_bytes(&cache, dir.path(), &[2u8; 101]);
        // Touch a, so b is the oldest when c arrives.
        assert!(cache.copy_to(a.hash, a.size, &dir.path().join("x")));
        let c = adopt_bytes(&cache, dir.path(), &[3u8; 102]);
        assert!(cache.has(&a.hash) && cache.has(&c.hash));
        assert!(!cache.has(&b.hash));
        assert!(cache.used() <= 250);
        assert!(!dir.path().join("content").join(b.hash.to_hex()).exists(), "its file is removed");
    }

    #[test]
    fn partial_files_from_an_earlier_run_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("content");
        std::fs::create_dir_all(&cache_dir).unwrap();
        let part = cache_dir.join(format!("{}.3.part", "ab".repeat(32)));
        std::fs::write(&part, b"half").unwrap();
        let cache = ContentCache::open(&cache_dir, 1 << 20).unwrap();
        assert!(!part.exists());
        assert_eq!(cache.used(), 0);
    }
}
