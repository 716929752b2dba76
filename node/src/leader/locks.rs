//! Advisory locks at the leader: every mount's fcntl and flock locks, kept
//! in this term's memory only ([`scs_common::locks::LockTable`], the pure
//! rules: POSIX ranges, leases, the grace period).
//!
//! Nothing here is replicated: a new leader starts with an empty table and
//! a grace period, and the mounts refill it by reclaiming what they hold
//! (each mount knows its own locks). A failover thus keeps every lock whose
//! mount reaches the new leader within the grace period. Each request must
//! find this node able to write (leading, with a quorum, caught up), as any
//! other leader request: a leader cut off in a minority must not grant a
//! lock the majority's leader may grant too.

use std::time::Instant;

use scs_common::locks::{FileLock, LockAnswer, SessionId};
use scs_common::{Ino, Result};

use crate::node::Node;

/// Takes or changes a lock.
///
/// # Errors
/// Not writable here (`NotLeader`, `NoQuorum`, `Unavailable`); a bad
/// range; a full table.
pub fn lock(node: &Node, session: SessionId, lock: FileLock) -> Result<LockAnswer> {
    let state = node.writable()?;
    let answer = state.locks().lock(Instant::now(), session, lock)?;
    log::debug!("node {}: lock {lock:?} for session {:x}: {answer:?}", node.me(), session.0);
    Ok(answer)
}

/// Gives back a byte range of one owner's locks on `ino`.
///
/// # Errors
/// Not writable here; a bad range.
pub fn unlock(node: &Node, session: SessionId, ino: Ino, owner: u64, start: u64, end: u64) -> Result<LockAnswer> {
    let state = node.writable()?;
    let answer = state.locks().unlock(Instant::now(), session, ino, owner, start, end)?;
    Ok(answer)
}

/// The lock in the way of `lock`, if any (F_GETLK).
///
/// # Errors
/// Not writable here; a bad range.
pub fn test(node: &Node, session: SessionId, lock: FileLock) -> Result<LockAnswer> {
    let state = node.writable()?;
    let answer = state.locks().test(Instant::now(), session, &lock)?;
    Ok(answer)
}

/// Renews a mount's lease.
///
/// # Errors
/// Not writable here.
pub fn keep_alive(node: &Node, session: SessionId) -> Result<LockAnswer> {
    let state = node.writable()?;
    let answer = state.locks().keep_alive(Instant::now(), session);
    Ok(answer)
}

/// Sets a mount's locks to what it holds: the locks refused.
///
/// # Errors
/// Not writable here; a bad range; too many locks or sessions.
pub fn reclaim(node: &Node, session: SessionId, locks: Vec<FileLock>) -> Result<Vec<FileLock>> {
    let state = node.writable()?;
    let asked = locks.len();
    let refused = state.locks().reclaim(Instant::now(), session, locks)?;
    if refused.is_empty() {
        log::debug!("node {}: session {:x} reclaimed {asked} locks", node.me(), session.0);
    } else {
        log::info!(
            "node {}: session {:x} reclaimed {asked} locks, {} refused (held by another mount now)",
            node.me(),
            session.0,
            refused.len()
        );
    }
    Ok(refused)
}
