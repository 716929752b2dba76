//! Advisory locks (fcntl byte ranges and flock) that hold across every mount
//! of a cluster: the wire types, and the rules as pure code with no clock of
//! its own (the time is passed in).
//!
//! - [`LockSet`]: locks of any number of sessions on any number of inodes,
//!   with the POSIX rules: read locks share, a write lock excludes, and one
//!   owner's locks never conflict with each other: a new lock replaces the
//!   owner's own locks where it overlaps them (an upgrade or a downgrade),
//!   merges with its touching ranges of the same kind, and an unlock of a
//!   sub-range splits what it cuts through. The mount keeps its own
//!   session's locks in one (what it asks the leader to hold); the leader
//!   keeps everybody's.
//! - [`LockTable`]: the leader's table: a [`LockSet`] plus sessions with a
//!   lease (a mount not heard from for [`LEASE`] loses its locks) and a
//!   grace period after a new leader starts serving (for [`GRACE`] only
//!   reclaims are granted, so every mount re-asserts the locks it held
//!   before anyone else can take them). The mount's in-memory fake of the
//!   cluster runs the same table.
//!
//! A flock arrives from the kernel as a lock of the whole file owned by the
//! open file (the kernel's FUSE emulation of flock, as NFS does it): fuser
//! 0.18 does not pass the flag that tells one from a whole-file fcntl lock.
//! So here flock and fcntl locks of one file do exclude each other (as on
//! NFS, unlike a local Linux file system), and flock gets exactly the rules
//! of a whole-file POSIX lock of its open file: shared or exclusive, a
//! conversion is in place, and the lock goes when the open file is released.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{Error, Ino, Result};

/// A mount not heard from for this long loses its locks: it died, or it
/// cannot reach the leader (and its processes are told nothing: the README
/// says so).
pub const LEASE: Duration = Duration::from_secs(10);
/// After a new leader starts serving, only reclaims are granted for this
/// long. A mount holding locks sends a keep-alive every couple of seconds
/// and reclaims at its first answer from the new leader, well within it.
pub const GRACE: Duration = Duration::from_secs(10);
/// Locks the leader keeps at most. Checks are linear in the locks of an
/// inode, so this also bounds the work one request can cost the leader.
pub const MAX_LOCKS: usize = 10_000;
/// Sessions (mounts) the leader keeps at most.
pub const MAX_SESSIONS: usize = 10_000;

/// One mount process, chosen at random when it starts: the leader keeps
/// locks by session, and forgets a session with its lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub u64);

impl SessionId {
    /// A fresh random session id.
    pub fn random() -> SessionId {
        SessionId(rand::random())
    }
}

/// A shared (read) or exclusive (write) lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LockKind {
    Read,
    Write,
}

/// One lock: bytes `start..=end` of inode `ino` held by `owner`, a lock
/// owner of the kernel (a process's descriptor table for fcntl locks, an
/// open file for flock and OFD locks), unique within its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileLock {
    pub ino: Ino,
    pub owner: u64,
    pub start: u64,
    /// Inclusive; the kernel's "to the end of the file" is `i64::MAX`.
    pub end: u64,
    pub kind: LockKind,
    /// The process that took it, reported by F_GETLK within its own mount.
    pub pid: u32,
}

impl FileLock {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start <= end && start <= self.end
    }

    /// Whether the two ranges are next to each other with no byte between.
    fn touches(&self, other: &FileLock) -> bool {
        self.end.checked_add(1) == Some(other.start) || other.end.checked_add(1) == Some(self.start)
    }

    fn same_owner(&self, session: SessionId, held: &Held) -> bool {
        held.session == session && held.lock.owner == self.owner
    }

    /// Checks the range the kernel gave.
    ///
    /// # Errors
    /// `Invalid` when the range ends before it starts.
    pub fn check(&self) -> Result<()> {
        check_range(self.start, self.end)
    }
}

fn check_range(start: u64, end: u64) -> Result<()> {
    if start > end {
        return Err(Error::Invalid(format!("lock range {start}..={end} ends before it starts")));
    }
    Ok(())
}

/// The leader's answer to a lock request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockAnswer {
    /// Granted (a lock, an unlock, a keep-alive), or nothing in the way (a test).
    Granted,
    /// This lock of another owner is in the way; `ours` when it belongs to
    /// the asking session (another process of the same mount).
    Conflict { lock: FileLock, ours: bool },
    /// A new leader lets every mount reclaim first: ask again in `retry_ms`.
    Grace { retry_ms: u64 },
    /// The leader does not know this session (it is new to this leader, or
    /// its lease ran out): reclaim, then ask again. Nothing was changed.
    UnknownSession,
}

/// A lock with the session holding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Held {
    session: SessionId,
    lock: FileLock,
}

/// Locks of any number of sessions, with the POSIX rules (module doc).
#[derive(Clone, Debug, Default)]
pub struct LockSet {
    by_ino: HashMap<Ino, Vec<Held>>,
    count: usize,
}

impl LockSet {
    pub fn new() -> LockSet {
        LockSet::default()
    }

    /// Locks held, counting each range once.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The first lock of another owner that `lock` cannot be held with:
    /// any overlapping lock when either is a write lock. The holder's
    /// session comes with it.
    pub fn conflict(&self, session: SessionId, lock: &FileLock) -> Option<(SessionId, FileLock)> {
        self.by_ino
            .get(&lock.ino)?
            .iter()
            .find(|h| {
                !lock.same_owner(session, h)
                    && h.lock.overlaps(lock.start, lock.end)
                    && (lock.kind == LockKind::Write || h.lock.kind == LockKind::Write)
            })
            .map(|h| (h.session, h.lock))
    }

    /// Sets `lock` for its owner, whatever the owner held there before
    /// (the caller checked [`LockSet::conflict`]).
    pub fn set(&mut self, session: SessionId, lock: FileLock) {
        self.change(lock.ino, |held| {
            cut(held, session, lock.owner, lock.start, lock.end);
            // The owner's ranges are disjoint now: at most one ends right
            // before the new one and one starts right after it.
            let mut merged = lock;
            held.retain(|h| {
                let joins = lock.same_owner(session, h) && h.lock.kind == lock.kind && h.lock.touches(&merged);
                if joins {
                    merged.start = merged.start.min(h.lock.start);
                    merged.end = merged.end.max(h.lock.end);
                }
                !joins
            });
            held.push(Held { session, lock: merged });
        });
    }

    /// Gives back bytes `start..=end` of `owner`'s locks on `ino`.
    pub fn unlock(&mut self, session: SessionId, ino: Ino, owner: u64, start: u64, end: u64) {
        self.change(ino, |held| cut(held, session, owner, start, end));
    }

    /// Every lock of `session` goes.
    pub fn drop_session(&mut self, session: SessionId) {
        let inos: Vec<Ino> = self
            .by_ino
            .iter()
            .filter(|(_, held)| held.iter().any(|h| h.session == session))
            .map(|(ino, _)| *ino)
            .collect();
        for ino in inos {
            self.change(ino, |held| held.retain(|h| h.session != session));
        }
    }

    /// The locks `session` holds, by inode, owner and start.
    pub fn of_session(&self, session: SessionId) -> Vec<FileLock> {
        let mut out: Vec<FileLock> =
            self.by_ino.values().flatten().filter(|h| h.session == session).map(|h| h.lock).collect();
        out.sort_by_key(|l| (l.ino, l.owner, l.start));
        out
    }

    /// Whether `owner` of `session` holds any lock on `ino`.
    pub fn holds(&self, session: SessionId, ino: Ino, owner: u64) -> bool {
        self.by_ino.get(&ino).is_some_and(|held| held.iter().any(|h| h.session == session && h.lock.owner == owner))
    }

    /// Runs `f` on the locks of `ino`, keeping the count and dropping an
    /// inode left with none.
    fn change(&mut self, ino: Ino, f: impl FnOnce(&mut Vec<Held>)) {
        let held = self.by_ino.entry(ino).or_default();
        let before = held.len();
        f(held);
        let after = held.len();
        if after == 0 {
            self.by_ino.remove(&ino);
        }
        self.count = self.count - before + after;
    }
}

/// Removes bytes `start..=end` from `owner`'s locks in `held`, splitting a
/// lock that reaches past the range on either side.
fn cut(held: &mut Vec<Held>, session: SessionId, owner: u64, start: u64, end: u64) {
    let mut out = Vec::with_capacity(held.len() + 1);
    for h in held.drain(..) {
        if h.session != session || h.lock.owner != owner || !h.lock.overlaps(start, end) {
            out.push(h);
            continue;
        }
        // `start > h.start >= 0` and `end < h.end <= u64::MAX`: no overflow.
        if h.lock.start < start {
            out.push(Held { lock: FileLock { end: start - 1, ..h.lock }, ..h });
        }
        if h.lock.end > end {
            out.push(Held { lock: FileLock { start: end + 1, ..h.lock }, ..h });
        }
    }
    *held = out;
}

/// The lease, grace period and size of a [`LockTable`] (smaller in tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub lease: Duration,
    pub grace: Duration,
    pub max_locks: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { lease: LEASE, grace: GRACE, max_locks: MAX_LOCKS }
    }
}

/// The leader's locks: every session's, with leases and the grace period
/// (module doc). Kept in memory only: a new leader starts with an empty
/// table and is refilled by the mounts' reclaims.
#[derive(Debug)]
pub struct LockTable {
    limits: Limits,
    locks: LockSet,
    /// When each known session was last heard from.
    sessions: HashMap<SessionId, Instant>,
    /// Until when only reclaims are granted; set once serving starts.
    grace_until: Option<Instant>,
}

impl LockTable {
    pub fn new(limits: Limits) -> LockTable {
        LockTable { limits, locks: LockSet::new(), sessions: HashMap::new(), grace_until: None }
    }

    /// The leader starts serving at `now`: the grace period starts.
    pub fn serve(&mut self, now: Instant) {
        self.grace_until = Some(now + self.limits.grace);
    }

    /// Locks held, and sessions known.
    pub fn len(&self) -> usize {
        self.locks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Takes or changes a lock: granted, in the way of another owner's
    /// lock, or not yet (grace period, unknown session).
    ///
    /// # Errors
    /// `Invalid` for a range that ends before it starts; `NoSpace` when the
    /// table is full.
    pub fn lock(&mut self, now: Instant, session: SessionId, lock: FileLock) -> Result<LockAnswer> {
        lock.check()?;
        if let Some(wait) = self.before(now, session) {
            return Ok(wait);
        }
        if let Some(left) = self.grace_left(now) {
            return Ok(LockAnswer::Grace { retry_ms: left });
        }
        if let Some((holder, lock)) = self.locks.conflict(session, &lock) {
            return Ok(LockAnswer::Conflict { lock, ours: holder == session });
        }
        // A set adds one lock and may split one of the owner's: two more at most.
        if self.locks.len() + 2 > self.limits.max_locks {
            return Err(Error::NoSpace(format!("the leader keeps {} locks, its limit", self.locks.len())));
        }
        self.locks.set(session, lock);
        Ok(LockAnswer::Granted)
    }

    /// Gives back bytes `start..=end` of `owner`'s locks on `ino` (all of
    /// them with `0..=u64::MAX`). Allowed in the grace period: giving back
    /// takes nothing from anyone.
    ///
    /// # Errors
    /// `Invalid` for a range that ends before it starts.
    pub fn unlock(
        &mut self,
        now: Instant,
        session: SessionId,
        ino: Ino,
        owner: u64,
        start: u64,
        end: u64,
    ) -> Result<LockAnswer> {
        check_range(start, end)?;
        if let Some(wait) = self.before(now, session) {
            return Ok(wait);
        }
        self.locks.unlock(session, ino, owner, start, end);
        Ok(LockAnswer::Granted)
    }

    /// The lock that would stand in the way of `lock` (F_GETLK), if any. In
    /// the grace period the table is not complete yet: asked again later.
    ///
    /// # Errors
    /// `Invalid` for a range that ends before it starts.
    pub fn test(&mut self, now: Instant, session: SessionId, lock: &FileLock) -> Result<LockAnswer> {
        lock.check()?;
        if let Some(wait) = self.before(now, session) {
            return Ok(wait);
        }
        if let Some(left) = self.grace_left(now) {
            return Ok(LockAnswer::Grace { retry_ms: left });
        }
        Ok(match self.locks.conflict(session, lock) {
            Some((holder, lock)) => LockAnswer::Conflict { lock, ours: holder == session },
            None => LockAnswer::Granted,
        })
    }

    /// Renews the session's lease.
    pub fn keep_alive(&mut self, now: Instant, session: SessionId) -> LockAnswer {
        self.before(now, session).unwrap_or(LockAnswer::Granted)
    }

    /// Sets the session's locks to `locks`, those that no other session's
    /// lock is in the way of, and (re)starts its lease. In the grace period
    /// and after it alike: what the mount holds is the truth for its own
    /// session, so a repeated reclaim changes nothing. Returns the locks
    /// refused (another mount took them meanwhile: the holder lost them).
    ///
    /// # Errors
    /// `Invalid` for a bad range or too many locks; `NoSpace` when the
    /// leader keeps as many sessions as it can.
    pub fn reclaim(&mut self, now: Instant, session: SessionId, locks: Vec<FileLock>) -> Result<Vec<FileLock>> {
        let max = self.limits.max_locks;
        if locks.len() > max {
            return Err(Error::Invalid(format!("{} locks reclaimed at once, {max} at most", locks.len())));
        }
        for l in &locks {
            l.check()?;
        }
        self.expire(now);
        if !self.sessions.contains_key(&session) && self.sessions.len() >= MAX_SESSIONS {
            return Err(Error::NoSpace(format!("the leader keeps {MAX_SESSIONS} mount sessions, its limit")));
        }
        // A table that was not told to serve starts its grace now (see grace_left).
        self.grace_until.get_or_insert(now + self.limits.grace);
        self.sessions.insert(session, now);
        self.locks.drop_session(session);
        let mut refused = Vec::new();
        for l in locks {
            if self.locks.conflict(session, &l).is_some() || self.locks.len() + 2 > max {
                refused.push(l);
            } else {
                self.locks.set(session, l);
            }
        }
        Ok(refused)
    }

    /// Drops the sessions whose lease ran out, then renews `session`'s:
    /// `Some(UnknownSession)` when it is not (or no longer) known.
    fn before(&mut self, now: Instant, session: SessionId) -> Option<LockAnswer> {
        self.expire(now);
        match self.sessions.get_mut(&session) {
            Some(seen) => {
                *seen = now;
                None
            }
            None => Some(LockAnswer::UnknownSession),
        }
    }

    /// Every session not heard from for a lease loses its locks.
    fn expire(&mut self, now: Instant) {
        let lease = self.limits.lease;
        let dead: Vec<SessionId> =
            self.sessions.iter().filter(|(_, seen)| now.duration_since(**seen) >= lease).map(|(s, _)| *s).collect();
        for s in dead {
            self.sessions.remove(&s);
            self.locks.drop_session(s);
        }
    }

    /// Milliseconds of grace left (at least 1), or `None` once it is over.
    /// A table asked before it was told to serve starts its grace now: a
    /// leader never grants a lock before the mounts could reclaim theirs.
    fn grace_left(&mut self, now: Instant) -> Option<u64> {
        let until = *self.grace_until.get_or_insert(now + self.limits.grace);
        let left = until.saturating_duration_since(now);
        (!left.is_zero()).then(|| (left.as_millis() as u64).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S1: SessionId = SessionId(1);
    const S2: SessionId = SessionId(2);
    const EOF: u64 = i64::MAX as u64;

    fn lk(owner: u64, start: u64, end: u64, kind: LockKind) -> FileLock {
        FileLock { ino: Ino(7), owner, start, end, kind, pid: 100 + owner as u32 }
    }

    fn ranges(set: &LockSet, session: SessionId) -> Vec<(u64, u64, u64, LockKind)> {
        set.of_session(session).iter().map(|l| (l.owner, l.start, l.end, l.kind)).collect()
    }

    use LockKind::{Read, Write};

    #[test]
    fn read_locks_share_and_a_write_lock_excludes_on_overlap_only() {
        let mut s = LockSet::new();
        s.set(S1, lk(1, 0, 99, Read));
        assert_eq!(s.conflict(S2, &lk(2, 50, 150, Read)), None, "two readers share");
        let (holder, l) = s.conflict(S2, &lk(2, 50, 150, Write)).expect("a writer is refused");
        assert_eq!((holder, l.start, l.end, l.kind), (S1, 0, 99, Read));
        assert_eq!(s.conflict(S2, &lk(2, 100, 150, Write)), None, "no overlap, no conflict");
        assert_eq!(s.conflict(S1, &lk(2, 50, 50, Write)).map(|c| c.0), Some(S1), "another owner of the same mount");
        s.set(S2, lk(2, 200, EOF, Write));
        assert!(s.conflict(S1, &lk(1, EOF, EOF, Read)).is_some(), "a lock to the end covers the last byte");
    }

    #[test]
    fn an_owner_never_conflicts_with_itself_and_upgrades_in_place() {
        let mut s = LockSet::new();
        s.set(S1, lk(1, 0, 99, Read));
        assert_eq!(s.conflict(S1, &lk(1, 0, 99, Write)), None);
        s.set(S1, lk(1, 10, 19, Write));
        assert_eq!(ranges(&s, S1), [(1, 0, 9, Read), (1, 10, 19, Write), (1, 20, 99, Read)]);
        // Another owner's read lock stands in the way of an upgrade.
        s.set(S2, lk(2, 50, 50, Read));
        assert!(s.conflict(S1, &lk(1, 0, 99, Write)).is_some());
    }

    #[test]
    fn touching_and_overlapping_ranges_of_one_kind_merge() {
        let mut s = LockSet::new();
        s.set(S1, lk(1, 0, 9, Write));
        s.set(S1, lk(1, 20, 29, Write));
        s.set(S1, lk(1, 10, 19, Write));
        assert_eq!(ranges(&s, S1), [(1, 0, 29, Write)]);
        s.set(S1, lk(1, 25, 40, Write));
        assert_eq!(ranges(&s, S1), [(1, 0, 40, Write)]);
        // Of another kind or another owner: kept apart.
        s.set(S1, lk(1, 41, 50, Read));
        s.set(S1, lk(2, 51, 60, Read));
        assert_eq!(ranges(&s, S1), [(1, 0, 40, Write), (1, 41, 50, Read), (2, 51, 60, Read)]);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn unlocking_a_sub_range_splits_the_lock() {
        let mut s = LockSet::new();
        s.set(S1, lk(1, 0, EOF, Write));
        s.unlock(S1, Ino(7), 1, 100, 199);
        assert_eq!(ranges(&s, S1), [(1, 0, 99, Write), (1, 200, EOF, Write)]);
        assert_eq!(s.conflict(S2, &lk(2, 100, 199, Write)), None, "the hole is free");
        assert!(s.conflict(S2, &lk(2, 99, 100, Write)).is_some());
        // Another owner's unlock gives back nothing of ours.
        s.unlock(S1, Ino(7), 2, 0, u64::MAX);
        s.unlock(S2, Ino(7), 1, 0, u64::MAX);
        assert_eq!(s.len(), 2);
        s.unlock(S1, Ino(7), 1, 0, u64::MAX);
        assert!(s.is_empty());
        assert!(!s.holds(S1, Ino(7), 1));
    }

    #[test]
    fn ranges_at_the_very_end_of_u64_do_not_overflow() {
        let mut s = LockSet::new();
        s.set(S1, lk(1, u64::MAX, u64::MAX, Write));
        s.set(S1, lk(1, 0, u64::MAX - 1, Write));
        assert_eq!(ranges(&s, S1), [(1, 0, u64::MAX, Write)]);
        s.unlock(S1, Ino(7), 1, u64::MAX, u64::MAX);
        s.unlock(S1, Ino(7), 1, 0, 0);
        assert_eq!(ranges(&s, S1), [(1, 1, u64::MAX - 1, Write)]);
    }

    #[test]
    fn a_flock_is_a_whole_file_lock_of_its_open_file() {
        // Two open files (owners 10 and 11) of one mount, one of another.
        let mut s = LockSet::new();
        s.set(S1, lk(10, 0, EOF, Read));
        s.set(S1, lk(11, 0, EOF, Read));
        assert!(s.conflict(S1, &lk(10, 0, EOF, Write)).is_some(), "LOCK_EX while another holds LOCK_SH");
        s.unlock(S1, Ino(7), 11, 0, u64::MAX);
        s.set(S1, lk(10, 0, EOF, Write));
        assert!(
            s.conflict(S2, &lk(10, 0, EOF, Read)).is_some(),
            "the same owner number in another mount is another owner"
        );
    }

    /// An owner's locks as one entry per byte of `0..BYTES`.
    const BYTES: usize = 48;
    type Bytes = [Option<LockKind>; BYTES];

    proptest::proptest! {
        #[test]
        fn a_lock_set_agrees_with_a_byte_by_byte_model(
            ops in proptest::collection::vec((0u8..3, 0u64..2, 0u64..3, 0u64..BYTES as u64, 0u64..BYTES as u64, proptest::bool::ANY), 0..80)
        ) {
            let mut set = LockSet::new();
            let mut model: HashMap<(u64, u64), Bytes> = HashMap::new();
            for (op, sess, owner, a, b, write) in ops {
                let (start, end) = (a.min(b), a.max(b));
                let session = SessionId(sess);
                let kind = if write { Write } else { Read };
                let bytes = start as usize..=end as usize;
                if op < 2 {
                    let lock = FileLock { ino: Ino(7), owner, start, end, kind, pid: 0 };
                    let expected = model.iter().any(|(who, held)| {
                        *who != (sess, owner) && held[bytes.clone()].iter().flatten().any(|k| *k == Write || kind == Write)
                    });
                    proptest::prop_assert_eq!(set.conflict(session, &lock).is_some(), expected);
                    if !expected {
                        set.set(session, lock);
                        model.entry((sess, owner)).or_insert([None; BYTES])[bytes].fill(Some(kind));
                    }
                } else {
                    set.unlock(session, Ino(7), owner, start, end);
                    if let Some(held) = model.get_mut(&(sess, owner)) {
                        held[bytes].fill(None);
                    }
                }
                // Each owner's ranges cover exactly its bytes, disjoint and
                // as few as can be (no two touching of one kind).
                let mut seen: HashMap<(u64, u64), Bytes> = HashMap::new();
                let mut count = 0;
                for s in 0..2 {
                    let mine = set.of_session(SessionId(s));
                    count += mine.len();
                    for pair in mine.windows(2) {
                        if pair[0].owner == pair[1].owner {
                            proptest::prop_assert!(pair[0].end < pair[1].start, "overlap: {:?}", pair);
                            proptest::prop_assert!(pair[0].end + 1 < pair[1].start || pair[0].kind != pair[1].kind, "unmerged: {:?}", pair);
                        }
                    }
                    for l in mine {
                        seen.entry((s, l.owner)).or_insert([None; BYTES])[l.start as usize..=l.end as usize].fill(Some(l.kind));
                    }
                }
                model.retain(|_, held| held.iter().any(Option::is_some));
                proptest::prop_assert_eq!(&seen, &model);
                proptest::prop_assert_eq!(set.len(), count);
            }
        }
    }

    fn table() -> (LockTable, Instant) {
        let mut t =
            LockTable::new(Limits { lease: Duration::from_secs(10), grace: Duration::from_secs(5), max_locks: 100 });
        let now = Instant::now();
        t.serve(now);
        (t, now)
    }

    fn after(now: Instant, secs: u64) -> Instant {
        now + Duration::from_secs(secs)
    }

    #[test]
    fn only_reclaims_are_granted_in_the_grace_period() {
        let (mut t, now) = table();
        assert_eq!(t.reclaim(now, S1, vec![lk(1, 0, 9, Write)]), Ok(vec![]));
        assert_eq!(t.reclaim(now, S2, vec![]), Ok(vec![]));
        assert_eq!(t.lock(after(now, 1), S2, lk(2, 100, 109, Write)), Ok(LockAnswer::Grace { retry_ms: 4000 }));
        assert!(matches!(t.test(after(now, 1), S2, &lk(2, 0, 0, Read)), Ok(LockAnswer::Grace { .. })));
        assert_eq!(t.unlock(after(now, 1), S1, Ino(7), 1, 5, 9), Ok(LockAnswer::Granted), "giving back is allowed");
        // A second mount reclaiming what the first reclaimed is refused it.
        assert_eq!(
            t.reclaim(after(now, 2), S2, vec![lk(2, 0, 0, Read), lk(2, 50, 60, Read)]),
            Ok(vec![lk(2, 0, 0, Read)])
        );
        let later = after(now, 5);
        assert_eq!(t.lock(later, S2, lk(2, 100, 109, Write)), Ok(LockAnswer::Granted));
        let l1 = lk(1, 0, 4, Write);
        assert_eq!(t.lock(later, S2, lk(2, 0, 0, Read)), Ok(LockAnswer::Conflict { lock: l1, ours: false }));
    }

    #[test]
    fn a_table_asked_before_it_serves_starts_its_grace_then() {
        let mut t =
            LockTable::new(Limits { lease: Duration::from_secs(10), grace: Duration::from_secs(5), max_locks: 100 });
        let now = Instant::now();
        t.reclaim(now, S1, vec![]).unwrap();
        assert!(matches!(t.lock(after(now, 4), S1, lk(1, 0, 0, Write)), Ok(LockAnswer::Grace { .. })));
        assert_eq!(t.lock(after(now, 5), S1, lk(1, 0, 0, Write)), Ok(LockAnswer::Granted));
    }

    #[test]
    fn a_session_unknown_to_the_leader_must_reclaim_first_and_changes_nothing() {
        let (mut t, now) = table();
        let later = after(now, 6);
        assert_eq!(t.lock(later, S1, lk(1, 0, 9, Write)), Ok(LockAnswer::UnknownSession));
        assert_eq!(t.keep_alive(later, S1), LockAnswer::UnknownSession);
        assert_eq!(t.unlock(later, S1, Ino(7), 1, 0, 9), Ok(LockAnswer::UnknownSession));
        assert!(t.is_empty());
        assert_eq!(t.sessions(), 0);
        t.reclaim(later, S1, vec![]).unwrap();
        assert_eq!(t.lock(later, S1, lk(1, 0, 9, Write)), Ok(LockAnswer::Granted));
        assert_eq!(t.keep_alive(later, S1), LockAnswer::Granted);
    }

    #[test]
    fn a_mount_not_heard_from_for_a_lease_loses_its_locks() {
        let (mut t, now) = table();
        t.reclaim(after(now, 5), S1, vec![lk(1, 0, EOF, Write)]).unwrap();
        t.reclaim(after(now, 5), S2, vec![]).unwrap();
        // S2 keeps its lease; S1 is last heard at 5 s.
        assert!(matches!(t.lock(after(now, 14), S2, lk(2, 0, 0, Write)), Ok(LockAnswer::Conflict { .. })));
        assert_eq!(t.keep_alive(after(now, 14), S2), LockAnswer::Granted);
        assert_eq!(t.lock(after(now, 15), S2, lk(2, 0, 0, Write)), Ok(LockAnswer::Granted));
        assert_eq!(t.sessions(), 1);
        assert_eq!(t.keep_alive(after(now, 15), S1), LockAnswer::UnknownSession);
        // Back, it reclaims: what another took meanwhile is refused.
        let refused = t.reclaim(after(now, 16), S1, vec![lk(1, 0, EOF, Write)]).unwrap();
        assert_eq!(refused, [lk(1, 0, EOF, Write)]);
    }

    #[test]
    fn a_keep_alive_keeps_the_locks_past_the_lease() {
        let (mut t, now) = table();
        t.reclaim(after(now, 5), S1, vec![lk(1, 0, 9, Write)]).unwrap();
        for s in (7..40).step_by(2) {
            assert_eq!(t.keep_alive(after(now, s), S1), LockAnswer::Granted);
        }
        t.reclaim(after(now, 40), S2, vec![]).unwrap();
        assert!(matches!(t.lock(after(now, 40), S2, lk(2, 0, 0, Read)), Ok(LockAnswer::Conflict { .. })));
    }

    #[test]
    fn a_reclaim_replaces_what_the_session_held() {
        let (mut t, now) = table();
        let later = after(now, 5);
        t.reclaim(later, S1, vec![lk(1, 0, 9, Write), lk(2, 20, 29, Read)]).unwrap();
        t.reclaim(later, S1, vec![lk(2, 20, 29, Read)]).unwrap();
        assert_eq!(t.len(), 1);
        t.reclaim(later, S2, vec![]).unwrap();
        assert_eq!(t.lock(later, S2, lk(3, 0, 9, Write)), Ok(LockAnswer::Granted));
        assert_eq!(t.reclaim(later, S1, vec![]), Ok(vec![]), "an unmount gives everything back");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn bad_ranges_and_a_full_table_are_refused() {
        let (mut t, now) = table();
        let later = after(now, 5);
        assert!(matches!(t.lock(later, S1, lk(1, 9, 0, Write)), Err(Error::Invalid(_))));
        assert!(matches!(t.unlock(later, S1, Ino(7), 1, 9, 0), Err(Error::Invalid(_))));
        assert!(matches!(t.reclaim(later, S1, vec![lk(1, 9, 0, Write)]), Err(Error::Invalid(_))));
        t.reclaim(later, S1, vec![]).unwrap();
        let many: Vec<FileLock> = (0..101).map(|i| lk(1, 2 * i, 2 * i, Write)).collect();
        assert!(matches!(t.reclaim(later, S1, many.clone()), Err(Error::Invalid(_))), "more than the table holds");
        // Room is kept for a split: a set may add two locks.
        assert_eq!(t.reclaim(later, S1, many[..100].to_vec()).unwrap(), [many[99]], "the last one does not fit");
        assert!(matches!(t.lock(later, S1, lk(1, u64::MAX, u64::MAX, Write)), Err(Error::NoSpace(_))));
        assert_eq!(t.unlock(later, S1, Ino(7), 1, 0, 0), Ok(LockAnswer::Granted), "giving back always works");
    }
}
