//! Advisory locks that hold across every mount: fcntl byte-range locks,
//! flock and OFD locks, kept by the leader (`scs_common::locks` has the
//! rules; the leader's table is in memory only).
//!
//! The kernel hands every lock request to us (FUSE_POSIX_LOCKS and
//! FUSE_FLOCK_LOCKS), with its lock owner: a process's descriptor table for
//! fcntl locks, the open file for flock and OFD locks. This mount is one
//! session of the leader's (a random id per mount process) and keeps a copy
//! of what the leader holds for it (`held`): that copy is what it reclaims
//! when a new leader starts (or its lease ran out), and what it keeps alive
//! every [`KEEP_ALIVE`] while it holds anything. So a mount that dies loses
//! its locks after the lease, and a failover keeps them.
//!
//! A lock that must wait (F_SETLKW, or any request in a new leader's grace
//! period) is asked again from a thread of its own at a bounded interval, so
//! that no FUSE worker and no lock of `Core` is held while it waits. fuser
//! 0.18 does not pass FUSE_INTERRUPT on (and the kernel would keep even a
//! killed process waiting for our answer), so a signal to the waiting
//! process is seen in `/proc` instead: the wait then ends with EINTR, which
//! the kernel restarts or returns as for any lock.
//!
//! Ordering: lock calls hold `gate` shared across their call to the leader
//! and the change to `held`; a reclaim holds it alone. So the copy a reclaim
//! sends is never missing a lock the leader granted meanwhile, nor holding
//! one given back. A call that got no answer may or may not have been done:
//! `stale` then makes the next keep-alive reclaim, which sets the leader's
//! view to ours.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use fuser::Errno;

use scs_common::locks::{FileLock, LockAnswer, LockKind, LockSet, SessionId, GRACE};
use scs_common::{Error, Ino, Result};

use super::cluster::Cluster;
use super::lock;

/// How often a mount holding locks tells the leader it is alive (the lease
/// is 10 s: four keep-alives can be lost before the locks are).
pub const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// How often a mount holding locks reclaims them all even when the leader
/// knows it: a lock request whose answer was lost long ago cannot leave the
/// leader holding a lock this mount does not know of.
const RESYNC: Duration = Duration::from_secs(30);
/// A waiting lock is asked again after this, doubling up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(20);
const MAX_PAUSE: Duration = Duration::from_millis(250);
/// A request that may not wait (F_SETLK, F_GETLK) still waits out a new
/// leader's grace period, up to this, then fails with ENOLCK.
const GRACE_WAIT: Duration = Duration::from_secs(GRACE.as_secs() + 10);

/// The kernel's lock types.
const F_RDLCK: i32 = libc::F_RDLCK;
const F_WRLCK: i32 = libc::F_WRLCK;
const F_UNLCK: i32 = libc::F_UNLCK;
/// The kernel's "to the end of the file": the largest offset it takes back.
const OFFSET_MAX: u64 = i64::MAX as u64;

/// What F_GETLK reports: the lock in the way, or `typ` F_UNLCK for none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub start: u64,
    pub end: u64,
    pub typ: i32,
    pub pid: u32,
}

/// Called once with the outcome of a request that may have had to wait.
pub type Done<T> = Box<dyn FnOnce(std::result::Result<T, Errno>) + Send>;

/// The advisory locks of one mount. Dropping it stops its keep-alives.
pub struct Locks {
    inner: Arc<Inner>,
    /// Dropped with `Locks`: the keep-alive thread then ends.
    _stop: mpsc::Sender<()>,
}

struct Inner {
    cluster: Arc<dyn Cluster>,
    session: SessionId,
    /// What the leader holds for this session, as far as this mount knows.
    held: Mutex<LockSet>,
    /// Shared by lock calls, alone by a reclaim (module doc).
    gate: RwLock<()>,
    /// A call got no answer: reclaim at the next keep-alive.
    stale: AtomicBool,
    /// Unmounting: waiting locks give up rather than take a lock nobody
    /// would give back.
    closed: AtomicBool,
    last_reclaim: Mutex<Instant>,
    /// By open file (file handle): the owners that locked through it and
    /// those that flushed it (module doc of [`Locks::release`]).
    files: Mutex<HashMap<u64, Owners>>,
}

#[derive(Default)]
struct Owners {
    ino: u64,
    locked: BTreeSet<u64>,
    flushed: BTreeSet<u64>,
}

/// What a request asks of the leader.
#[derive(Clone, Copy, Debug)]
enum Ask {
    Set(FileLock),
    Test(FileLock),
}

/// The outcome of one round of asking.
enum Step {
    Done(std::result::Result<LockAnswer, Errno>),
    /// Ask again later (a conflict for F_SETLKW, a grace period, a leader
    /// that does not answer right now).
    Wait,
}

impl Locks {
    /// Starts the locks of a mount on `cluster`, with a fresh session.
    pub fn start(cluster: Arc<dyn Cluster>) -> Locks {
        Locks::start_with(cluster, KEEP_ALIVE)
    }

    fn start_with(cluster: Arc<dyn Cluster>, every: Duration) -> Locks {
        let inner = Arc::new(Inner {
            cluster,
            session: SessionId::random(),
            held: Mutex::new(LockSet::new()),
            gate: RwLock::new(()),
            stale: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            last_reclaim: Mutex::new(Instant::now()),
            files: Mutex::new(HashMap::new()),
        });
        let (stop, stopped) = mpsc::channel::<()>();
        let keeper = inner.clone();
        let started = std::thread::Builder::new().name("scs-keepalive".into()).spawn(move || loop {
            match stopped.recv_timeout(every) {
                Err(RecvTimeoutError::Timeout) => keeper.tick(),
                _ => return,
            }
        });
        if let Err(e) = started {
            // Locks still work; a lease may run out while they are held.
            log::error!("cannot start the lock keep-alive thread: {e}; held locks may be lost after 10 s");
        }
        Locks { inner, _stop: stop }
    }

    /// F_GETLK: the lock of another owner in the way of `typ` on
    /// `start..=end`, or F_UNLCK. `done` may be called later, from another
    /// thread (a new leader's grace period).
    #[allow(clippy::too_many_arguments)]
    pub fn getlk(&self, ino: u64, owner: u64, start: u64, end: u64, typ: i32, pid: u32, done: Done<Probe>) {
        let kind = match kind_of(typ) {
            Ok(Some(k)) => k,
            Ok(None) | Err(_) => return done(Err(Errno::EINVAL)),
        };
        let lock = FileLock { ino: Ino(ino), owner, start, end, kind, pid };
        self.run(Ask::Test(lock), false, pid, done, move |answer| match answer {
            LockAnswer::Conflict { lock: l, ours } => Probe {
                start: l.start,
                end: l.end.min(OFFSET_MAX),
                typ: if l.kind == LockKind::Write { F_WRLCK } else { F_RDLCK },
                // Another mount's process numbers mean nothing here.
                pid: if ours { l.pid } else { 0 },
            },
            _ => Probe { start, end, typ: F_UNLCK, pid: 0 },
        });
    }

    /// F_SETLK / F_SETLKW (`sleep`), flock and OFD locks: takes, changes or
    /// gives back a lock through open file `fh`. `done` may be called
    /// later, from another thread.
    #[allow(clippy::too_many_arguments)]
    pub fn setlk(
        &self,
        ino: u64,
        fh: u64,
        owner: u64,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        done: Done<()>,
    ) {
        let kind = match kind_of(typ) {
            Ok(Some(k)) => k,
            Ok(None) => return done(self.inner.unlock(Ino(ino), owner, start, end)),
            Err(e) => return done(Err(e)),
        };
        {
            let mut files = lock(&self.inner.files);
            let o = files.entry(fh).or_default();
            o.ino = ino;
            o.locked.insert(owner);
        }
        let lock = FileLock { ino: Ino(ino), owner, start, end, kind, pid };
        self.run(Ask::Set(lock), sleep, pid, done, |_| ());
    }

    /// A descriptor of open file `fh` was closed by lock owner `owner` (a
    /// process's descriptor table): its fcntl locks on the file go, as
    /// POSIX says (whichever descriptor took them).
    pub fn flush(&self, ino: u64, fh: u64, owner: u64) {
        if let Some(o) = lock(&self.inner.files).get_mut(&fh) {
            o.flushed.insert(owner);
        }
        if lock(&self.inner.held).holds(self.inner.session, Ino(ino), owner) {
            let _ = self.inner.unlock(Ino(ino), owner, 0, u64::MAX);
        }
    }

    /// Open file `fh` is released (its last descriptor closed): the locks
    /// it owns go, flock and OFD locks. The kernel names the flock owner
    /// (`flock_owner`) but not that of OFD locks: those are the owners that
    /// locked through `fh` and never closed a descriptor of it (a process
    /// closing one flushes with its own owner, and its fcntl locks went
    /// then; one that locked again since keeps them until its next close).
    ///
    /// An owner is the open file's address, which the kernel hands to the
    /// next open file once this one is let go, before this release may
    /// arrive: an owner that a file opened since locked with is that
    /// file's, not this one's to give back (or a process that closed and
    /// opened the file again would lose the lock it just took, while
    /// believing it holds it). `files` stays locked until the unlocks are
    /// done, so no lock of such an owner is asked for in between.
    pub fn release(&self, ino: u64, fh: u64, flock_owner: Option<u64>) {
        let mut files = lock(&self.inner.files);
        let owners = files.remove(&fh).unwrap_or_default();
        let mut gone: BTreeSet<u64> = owners.locked.difference(&owners.flushed).copied().collect();
        gone.extend(flock_owner);
        gone.retain(|owner| !files.values().any(|o| o.ino == ino && o.locked.contains(owner)));
        for owner in gone {
            if lock(&self.inner.held).holds(self.inner.session, Ino(ino), owner) {
                let _ = self.inner.unlock(Ino(ino), owner, 0, u64::MAX);
            }
        }
    }

    /// Gives back every lock at once (at unmount), rather than after the lease.
    pub fn release_all(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let had = lock(&self.inner.held).len();
        *lock(&self.inner.held) = LockSet::new();
        if had > 0 || self.inner.stale.load(Ordering::SeqCst) {
            if let Err(e) = self.inner.reclaim() {
                log::warn!("could not give back {had} locks at unmount ({e}); the leader frees them within 10 s");
            }
        }
    }

    /// Asks once on this thread; if the answer means waiting, asks again
    /// from a thread of its own until it is final, then calls `done`.
    fn run<T: Send + 'static>(
        &self,
        ask: Ask,
        sleep: bool,
        pid: u32,
        done: Done<T>,
        answer: impl Fn(LockAnswer) -> T + Send + 'static,
    ) {
        let deadline = Instant::now() + GRACE_WAIT;
        if let Step::Done(r) = self.inner.step(ask, sleep, deadline) {
            return done(r.map(answer));
        }
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new().name("scs-lockwait".into()).spawn(move || {
            let r = inner.wait(ask, sleep, pid, deadline);
            done(r.map(answer))
        });
        if let Err(e) = spawned {
            // `done` went with the closure: nothing can be answered from here,
            // and fuser answers a dropped reply with EIO.
            log::error!("cannot start a thread to wait for a lock: {e}");
        }
    }
}

impl Inner {
    /// Asks until the answer is final, pausing between rounds; ends early
    /// with EINTR once the process `pid` has a signal to handle or is gone,
    /// or the mount is going away.
    fn wait(&self, ask: Ask, sleep: bool, pid: u32, deadline: Instant) -> std::result::Result<LockAnswer, Errno> {
        let mut pause = FIRST_PAUSE;
        loop {
            if interrupted(pid) || self.closed.load(Ordering::SeqCst) {
                return Err(Errno::EINTR);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(MAX_PAUSE);
            if let Step::Done(r) = self.step(ask, sleep, deadline) {
                return r;
            }
        }
    }

    /// One round: the leader's answer, final or to wait on.
    fn step(&self, ask: Ask, sleep: bool, deadline: Instant) -> Step {
        let may_wait = sleep || Instant::now() < deadline;
        match self.ask(ask) {
            Ok(LockAnswer::Granted) => Step::Done(Ok(LockAnswer::Granted)),
            Ok(c @ LockAnswer::Conflict { .. }) => match ask {
                Ask::Set(_) if sleep => Step::Wait,
                Ask::Set(_) => Step::Done(Err(Errno::EAGAIN)),
                Ask::Test(_) => Step::Done(Ok(c)),
            },
            Ok(LockAnswer::Grace { .. } | LockAnswer::UnknownSession) if may_wait => Step::Wait,
            Ok(LockAnswer::Grace { .. } | LockAnswer::UnknownSession) => Step::Done(Err(Errno::ENOLCK)),
            // A lock that may wait keeps waiting through a failover, as on a
            // hard NFS mount; a signal still ends it.
            Err(e) if sleep && e.is_retryable() => Step::Wait,
            Err(e) => {
                log::warn!("lock request on inode {} failed: {e}", ask.lock().ino);
                Step::Done(Err(lock_errno(&e)))
            }
        }
    }

    /// Asks the leader once; a session it does not know reclaims first and
    /// asks again.
    fn ask(&self, ask: Ask) -> Result<LockAnswer> {
        for _ in 0..2 {
            let answer = {
                let _shared = self.gate.read().unwrap_or_else(|p| p.into_inner());
                match ask {
                    Ask::Set(l) => {
                        let a = self.cluster.lock(self.session, l);
                        match &a {
                            Ok(LockAnswer::Granted) => lock(&self.held).set(self.session, l),
                            // Maybe granted, maybe not: the next keep-alive settles it.
                            Err(_) => self.stale.store(true, Ordering::SeqCst),
                            Ok(_) => {}
                        }
                        a?
                    }
                    Ask::Test(l) => self.cluster.test_lock(self.session, l)?,
                }
            };
            if answer != LockAnswer::UnknownSession {
                return Ok(answer);
            }
            self.reclaim()?;
        }
        Ok(LockAnswer::UnknownSession)
    }

    /// Gives back `start..=end` of `owner`'s locks. Done here whatever the
    /// leader says: a leader that did not hear it is set right by the next
    /// keep-alive's reclaim, or lets the lock go with our lease.
    fn unlock(&self, ino: Ino, owner: u64, start: u64, end: u64) -> std::result::Result<(), Errno> {
        if start > end {
            return Err(Errno::EINVAL);
        }
        let answer = {
            let _shared = self.gate.read().unwrap_or_else(|p| p.into_inner());
            lock(&self.held).unlock(self.session, ino, owner, start, end);
            self.cluster.unlock(self.session, ino, owner, start, end)
        };
        match answer {
            Ok(LockAnswer::UnknownSession) => {
                if self.reclaim().is_err() {
                    self.stale.store(true, Ordering::SeqCst);
                }
            }
            Ok(_) => {}
            Err(e) => {
                log::warn!("giving back a lock on inode {ino} failed ({e}); retried at the next keep-alive");
                self.stale.store(true, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    /// Sets the leader's locks of this session to `held`. Locks it refuses
    /// were taken by another mount while this one could not reach the
    /// leader: they are lost, and said so.
    fn reclaim(&self) -> Result<()> {
        let _alone = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let mine = lock(&self.held).of_session(self.session);
        let count = mine.len();
        let refused = match self.cluster.reclaim(self.session, mine) {
            Ok(r) => r,
            Err(e) => {
                self.stale.store(true, Ordering::SeqCst);
                return Err(e);
            }
        };
        self.stale.store(false, Ordering::SeqCst);
        *lock(&self.last_reclaim) = Instant::now();
        let mut held = lock(&self.held);
        for l in &refused {
            held.unlock(self.session, l.ino, l.owner, l.start, l.end);
            log::error!(
                "lost a lock on inode {} (bytes {}..={}, process {}): another mount took it while this one could not reach the leader",
                l.ino,
                l.start,
                l.end,
                l.pid
            );
        }
        if count > 0 {
            log::info!("reclaimed {} of {count} locks from the leader", count - refused.len());
        }
        Ok(())
    }

    /// Every [`KEEP_ALIVE`]: renews the lease while anything is held, and
    /// reclaims when the leader does not know this session (a new leader,
    /// or a lease that ran out), when a call went unanswered, or every
    /// [`RESYNC`].
    fn tick(&self) {
        let holding = !lock(&self.held).is_empty();
        let due = holding && lock(&self.last_reclaim).elapsed() >= RESYNC;
        if self.stale.load(Ordering::SeqCst) || due {
            if let Err(e) = self.reclaim() {
                log::debug!("reclaiming locks failed: {e}");
            }
            return;
        }
        if !holding {
            return;
        }
        match self.cluster.keep_alive(self.session) {
            Ok(LockAnswer::UnknownSession) => {
                log::info!(
                    "the leader does not know this mount's locks (a new leader, or the lease ran out): reclaiming"
                );
                if let Err(e) = self.reclaim() {
                    log::warn!("reclaiming locks failed: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => log::debug!("keep-alive failed: {e}"),
        }
    }
}

impl Ask {
    fn lock(&self) -> &FileLock {
        match self {
            Ask::Set(l) | Ask::Test(l) => l,
        }
    }
}

/// The kind of a kernel lock type; `None` for F_UNLCK.
fn kind_of(typ: i32) -> std::result::Result<Option<LockKind>, Errno> {
    match typ {
        F_RDLCK => Ok(Some(LockKind::Read)),
        F_WRLCK => Ok(Some(LockKind::Write)),
        F_UNLCK => Ok(None),
        _ => Err(Errno::EINVAL),
    }
}

/// The errno of a failed lock request: fcntl(2)'s ENOLCK ("a remote
/// locking protocol failed") unless the request itself was wrong.
fn lock_errno(e: &Error) -> Errno {
    match e {
        Error::Invalid(_) => Errno::EINVAL,
        _ => Errno::ENOLCK,
    }
}

/// Whether process (thread) `pid` has a signal to handle, or is gone: a
/// waiting lock then gives up (module doc). Pid 0 is nobody to ask about.
fn interrupted(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return true };
    let mask = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    (mask("SigPnd:") | mask("ShdPnd:")) & !mask("SigBlk:") != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::fake::Fake;
    use scs_common::locks::Limits;

    const WHOLE: u64 = OFFSET_MAX;

    /// Runs a request and waits for its answer.
    fn answer<T: Send + 'static>(f: impl FnOnce(Done<T>)) -> std::result::Result<T, Errno> {
        let (tx, rx) = mpsc::channel();
        f(Box::new(move |r| {
            let _ = tx.send(r);
        }));
        rx.recv_timeout(Duration::from_secs(20)).expect("an answer within 20 s")
    }

    fn set(l: &Locks, ino: u64, owner: u64, range: (u64, u64), typ: i32) -> std::result::Result<(), Errno> {
        answer(|d| l.setlk(ino, 1, owner, range.0, range.1, typ, 0, false, d))
    }

    fn probe(l: &Locks, ino: u64, owner: u64, range: (u64, u64), typ: i32) -> Probe {
        answer(|d| l.getlk(ino, owner, range.0, range.1, typ, std::process::id(), d)).expect("getlk answers")
    }

    fn two_mounts() -> (Fake, Locks, Locks) {
        let fake = Fake::new();
        let a = Locks::start_with(Arc::new(fake.clone()), Duration::from_millis(50));
        let b = Locks::start_with(Arc::new(fake.clone()), Duration::from_millis(50));
        (fake, a, b)
    }

    #[test]
    fn a_write_lock_in_one_mount_excludes_an_overlapping_lock_in_another() {
        let (_fake, a, b) = two_mounts();
        set(&a, 7, 1, (0, 99), F_WRLCK).unwrap();
        assert_eq!(set(&b, 7, 1, (50, 60), F_RDLCK), Err(Errno::EAGAIN));
        assert_eq!(set(&b, 7, 1, (100, WHOLE), F_WRLCK), Ok(()), "no overlap, no conflict");
        assert_eq!(set(&b, 8, 1, (0, WHOLE), F_WRLCK), Ok(()), "another file");
        set(&a, 7, 1, (0, 99), F_UNLCK).unwrap();
        assert_eq!(set(&b, 7, 1, (50, 60), F_RDLCK), Ok(()));
    }

    #[test]
    fn getlk_reports_the_other_mounts_lock_without_its_pid() {
        let (_fake, a, b) = two_mounts();
        answer(|d| a.setlk(7, 1, 1, 10, 19, F_WRLCK, 4242, false, d)).unwrap();
        let p = probe(&b, 7, 1, (0, WHOLE), F_RDLCK);
        assert_eq!(p, Probe { start: 10, end: 19, typ: F_WRLCK, pid: 0 });
        // Another owner of the same mount sees the process.
        assert_eq!(probe(&a, 7, 2, (15, 15), F_RDLCK).pid, 4242);
        assert_eq!(probe(&a, 7, 1, (0, WHOLE), F_WRLCK).typ, F_UNLCK, "an owner is never in its own way");
        assert_eq!(probe(&b, 7, 1, (20, 30), F_WRLCK).typ, F_UNLCK);
    }

    #[test]
    fn a_waiting_lock_is_granted_once_the_holder_gives_it_back() {
        let (_fake, a, b) = two_mounts();
        set(&a, 7, 1, (0, WHOLE), F_WRLCK).unwrap();
        let (tx, rx) = mpsc::channel();
        b.setlk(
            7,
            1,
            1,
            0,
            WHOLE,
            F_WRLCK,
            0,
            true,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "granted while the other mount holds it");
        set(&a, 7, 1, (0, WHOLE), F_UNLCK).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(Ok(())));
        assert_eq!(set(&a, 7, 1, (0, 0), F_RDLCK), Err(Errno::EAGAIN));
    }

    #[test]
    fn a_close_gives_back_the_fcntl_locks_of_the_closing_process_only() {
        let (fake, a, b) = two_mounts();
        // Processes 1 and 2 lock through one open file (after a fork, say).
        set(&a, 7, 1, (0, 9), F_WRLCK).unwrap();
        set(&a, 7, 2, (20, 29), F_WRLCK).unwrap();
        a.flush(7, 1, 1);
        assert_eq!(set(&b, 7, 9, (0, 9), F_WRLCK), Ok(()));
        assert_eq!(set(&b, 7, 9, (20, 29), F_WRLCK), Err(Errno::EAGAIN));
        a.flush(7, 1, 2);
        assert_eq!(set(&b, 7, 9, (20, 29), F_WRLCK), Ok(()));
        a.release(7, 1, None);
        assert_eq!(fake.lock_count(), 2, "only the other mount's two locks are left");
    }

    #[test]
    fn a_release_gives_back_the_flock_and_ofd_locks_of_the_open_file() {
        let (fake, a, b) = two_mounts();
        // Open file 5 (owner 500) flocks; process 1 locks bytes through it too.
        answer(|d| a.setlk(7, 5, 500, 0, WHOLE, F_WRLCK, 0, false, d)).unwrap();
        answer(|d| a.setlk(8, 5, 1, 0, 0, F_WRLCK, 0, false, d)).unwrap();
        a.flush(8, 5, 1);
        answer(|d| a.setlk(8, 5, 1, 0, 0, F_WRLCK, 0, false, d)).unwrap();
        a.release(7, 5, Some(500));
        assert_eq!(set(&b, 7, 9, (0, WHOLE), F_WRLCK), Ok(()), "the flock went with the open file");
        assert_eq!(set(&b, 8, 9, (0, 0), F_WRLCK), Err(Errno::EAGAIN), "a lock taken after a close stays");
        assert_eq!(fake.lock_count(), 2);
    }

    #[test]
    fn a_late_release_leaves_the_flock_of_a_file_opened_since_with_the_same_owner() {
        let (_fake, a, b) = two_mounts();
        // Open file 5 flocks as owner 500 and is closed. The kernel gives
        // the next open file (6) the same address, so the same owner, and
        // it flocks before the release of file 5 arrives.
        answer(|d| a.setlk(7, 5, 500, 0, WHOLE, F_WRLCK, 0, false, d)).unwrap();
        answer(|d| a.setlk(7, 6, 500, 0, WHOLE, F_WRLCK, 0, false, d)).unwrap();
        a.release(7, 5, Some(500));
        assert_eq!(set(&b, 7, 9, (0, WHOLE), F_WRLCK), Err(Errno::EAGAIN), "file 6 still holds the flock");
        a.release(7, 6, Some(500));
        assert_eq!(set(&b, 7, 9, (0, WHOLE), F_WRLCK), Ok(()), "and gives it back when it is released");
    }

    #[test]
    fn after_a_failover_the_mount_reclaims_its_locks_before_anyone_takes_them() {
        let (fake, a, b) = two_mounts();
        set(&a, 7, 1, (0, WHOLE), F_WRLCK).unwrap();
        set(&b, 8, 1, (0, WHOLE), F_RDLCK).unwrap();
        fake.new_lock_leader(Limits { grace: Duration::from_millis(600), ..Limits::default() });
        assert_eq!(fake.lock_count(), 0);
        // A non-blocking lock waits out the grace period, then meets the reclaimed lock.
        let started = Instant::now();
        assert_eq!(set(&b, 7, 2, (0, 0), F_RDLCK), Err(Errno::EAGAIN));
        assert!(started.elapsed() >= Duration::from_millis(400), "answered within the grace period");
        assert_eq!(fake.lock_count(), 2, "both mounts reclaimed");
        assert_eq!(set(&a, 8, 2, (0, 0), F_WRLCK), Err(Errno::EAGAIN));
    }

    #[test]
    fn a_lock_given_back_while_the_cluster_was_down_is_given_back_once_it_is_up() {
        let (fake, a, b) = two_mounts();
        set(&a, 7, 1, (0, WHOLE), F_WRLCK).unwrap();
        fake.set_down(true);
        set(&a, 7, 1, (0, WHOLE), F_UNLCK).unwrap();
        assert_eq!(set(&b, 7, 1, (0, 0), F_WRLCK), Err(Errno::ENOLCK), "no leader, no lock");
        fake.set_down(false);
        let deadline = Instant::now() + Duration::from_secs(5);
        while fake.lock_count() > 0 {
            assert!(Instant::now() < deadline, "the keep-alive did not give the lock back");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(set(&b, 7, 1, (0, 0), F_WRLCK), Ok(()));
    }

    #[test]
    fn an_unmount_gives_back_every_lock_at_once() {
        let (fake, a, b) = two_mounts();
        set(&a, 7, 1, (0, 9), F_WRLCK).unwrap();
        set(&a, 8, 2, (0, 9), F_RDLCK).unwrap();
        a.release_all();
        drop(a);
        assert_eq!(fake.lock_count(), 0);
        assert_eq!(set(&b, 7, 1, (0, WHOLE), F_WRLCK), Ok(()));
    }

    #[test]
    fn a_waiting_lock_ends_with_eintr_when_its_process_is_gone() {
        let (_fake, a, b) = two_mounts();
        set(&a, 7, 1, (0, WHOLE), F_WRLCK).unwrap();
        // A pid no process has (above the kernel's pid_max).
        let r = answer(|d| b.setlk(7, 1, 1, 0, 0, F_WRLCK, 4_194_305, true, d));
        assert_eq!(r, Err(Errno::EINTR));
    }

    #[test]
    fn bad_lock_types_and_ranges_are_refused() {
        let (_fake, a, _b) = two_mounts();
        assert_eq!(set(&a, 7, 1, (0, 9), 99), Err(Errno::EINVAL));
        assert_eq!(set(&a, 7, 1, (9, 0), F_WRLCK), Err(Errno::EINVAL));
        assert_eq!(set(&a, 7, 1, (9, 0), F_UNLCK), Err(Errno::EINVAL));
        assert_eq!(answer(|d| a.getlk(7, 1, 0, 0, F_UNLCK, 0, d)), Err(Errno::EINVAL));
    }
}
