//! The clients: each runs a seeded sequence of bounded random uploads,
//! overwrites, reads, deletes and renames on names of its own, one `scs`
//! command at a time, and records every operation with its result.
//!
//! Names are owned by one client each (`c<k>/f<nnn>`), so the history of a
//! name is sequential and the checker needs no linearizability search; the
//! clients still run concurrently against the same cluster. Every upload
//! writes content no other upload writes, so a content found under two names
//! is a rename that was not atomic.

use std::ffi::OsString;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::cluster::{NsCluster, Ran};
use super::rng::Rng;
use crate::data::seeded_bytes;

/// How long one `scs` command may take before it counts as a hang (the
/// client's own retry window is 5 s; a 2 MiB upload over the slowest link
/// the nemesis makes takes a few seconds more).
pub const OP_DEADLINE: Duration = Duration::from_secs(60);

/// The workload of one seed.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub seed: u64,
    pub clients: u32,
    pub names_per_client: u32,
}

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create or overwrite `name` with content hashing to `sha`.
    Upload {
        name: String,
        sha: String,
        size: u64,
    },
    Read {
        name: String,
    },
    Delete {
        name: String,
    },
    /// `mv from to` (replaces `to`).
    Rename {
        from: String,
        to: String,
    },
}

impl Action {
    /// The names it touches.
    pub fn names(&self) -> Vec<&str> {
        match self {
            Action::Upload { name, .. } | Action::Read { name } | Action::Delete { name } => vec![name],
            Action::Rename { from, to } => vec![from, to],
        }
    }

    pub fn is_write(&self) -> bool {
        !matches!(self, Action::Read { .. })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Action::Upload { .. } => "upload",
            Action::Read { .. } => "read",
            Action::Delete { .. } => "delete",
            Action::Rename { .. } => "rename",
        }
    }
}

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0: acknowledged.
    Ok,
    /// Exit 1 with `scs: …`: it may or may not have taken effect.
    Failed,
    /// Killed at [`OP_DEADLINE`]: it may or may not have taken effect.
    Hung,
}

/// What a read saw.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seen {
    Absent,
    Present(String),
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seen::Absent => write!(f, "absent"),
            Seen::Present(sha) => write!(f, "{}", &sha[..12.min(sha.len())]),
        }
    }
}

/// One operation of the history.
#[derive(Clone, Debug)]
pub struct Op {
    pub client: u32,
    /// Its number within its client's sequence.
    pub seq: u32,
    pub action: Action,
    /// When it was invoked and when it returned, ms since the cluster started.
    pub start_ms: i64,
    pub end_ms: i64,
    pub outcome: Outcome,
    /// The `scs: …` line of a failure.
    pub error: String,
    /// What a read saw (`None`: the read failed and saw nothing).
    pub seen: Option<Seen>,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.action {
            Action::Upload { name, sha, size } => format!("upload {name} = {} ({size} B)", &sha[..12]),
            Action::Read { name } => format!("read {name}"),
            Action::Delete { name } => format!("delete {name}"),
            Action::Rename { from, to } => format!("rename {from} -> {to}"),
        };
        let result = match (self.outcome, &self.seen) {
            (Outcome::Ok, Some(seen)) => format!("ok, saw {seen}"),
            (Outcome::Ok, None) => "ok".into(),
            (Outcome::Failed, Some(seen)) => format!("saw {seen} ({})", self.error),
            (Outcome::Failed, None) => format!("FAILED: {}", self.error),
            (Outcome::Hung, _) => format!("HUNG: {}", self.error),
        };
        write!(
            f,
            "{:>8.3}-{:<8.3} c{}#{:<4} {what} -> {result}",
            self.start_ms as f64 / 1000.0,
            self.end_ms as f64 / 1000.0,
            self.client,
            self.seq
        )
    }
}

/// The name `i` of client `c`.
pub fn name_of(client: u32, i: u32) -> String {
    format!("c{client}/f{i:03}")
}

/// Runs client `client` until `stop` is set; returns its history.
pub fn run_client(c: &NsCluster, cfg: &WorkloadConfig, client: u32, stop: &AtomicBool) -> Vec<Op> {
    let mut rng = Rng::fork(cfg.seed, 1000 + u64::from(client));
    // What the client believes exists, to pick sensible operations; the
    // checker does not use it.
    let mut present = vec![false; cfg.names_per_client as usize];
    let mut ops = Vec::new();
    let mut seq = 0u32;
    // Bounded in count too: at most one operation per 20 ms of a long run.
    while !stop.load(Ordering::Relaxed) && seq < 100_000 && !c.expired() {
        let action = pick(&mut rng, cfg, client, &present, seq);
        let op = perform(c, cfg.seed, client, seq, action);
        if op.outcome == Outcome::Ok {
            believe(&mut present, &op.action, op.seen.as_ref());
        }
        ops.push(op);
        seq += 1;
    }
    ops
}

fn index_of(name: &str) -> usize {
    name.rsplit('f').next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn believe(present: &mut [bool], a: &Action, seen: Option<&Seen>) {
    match a {
        Action::Upload { name, .. } => present[index_of(name)] = true,
        Action::Delete { name } => present[index_of(name)] = false,
        Action::Read { name } => present[index_of(name)] = matches!(seen, Some(Seen::Present(_))),
        Action::Rename { from, to } => {
            present[index_of(from)] = false;
            present[index_of(to)] = true;
        }
    }
}

/// A content size: mostly small files, some of a few chunks' worth.
fn size(rng: &mut Rng) -> u64 {
    match rng.below(100) {
        0..=69 => rng.between(64, 4 << 10),
        70..=94 => rng.between(4 << 10, 128 << 10),
        _ => rng.between(128 << 10, 2 << 20),
    }
}

fn pick(rng: &mut Rng, cfg: &WorkloadConfig, client: u32, present: &[bool], seq: u32) -> Action {
    let n = cfg.names_per_client;
    let any = |rng: &mut Rng| rng.below(u64::from(n)) as u32;
    let existing: Vec<u32> = (0..n).filter(|&i| present[i as usize]).collect();
    let some_existing = |rng: &mut Rng| if existing.is_empty() { any(rng) } else { *rng.pick(&existing) };
    let upload = |rng: &mut Rng| {
        let name = name_of(client, any(rng));
        let len = size(rng);
        let sha = content_sha(cfg.seed, client, seq, len);
        Action::Upload { name, sha, size: len }
    };
    match rng.below(100) {
        0..=44 => upload(rng),
        45..=64 => Action::Read { name: name_of(client, some_existing(rng)) },
        65..=79 => {
            let i = if rng.chance(90) { some_existing(rng) } else { any(rng) };
            Action::Delete { name: name_of(client, i) }
        }
        _ if existing.is_empty() => upload(rng),
        _ => {
            let from = *rng.pick(&existing);
            let to = (from + 1 + rng.below(u64::from(n - 1)) as u32) % n;
            Action::Rename { from: name_of(client, from), to: name_of(client, to) }
        }
    }
}

/// The content of upload `seq` of `client`: a header naming it, then seeded
/// bytes. No two uploads of a run have the same content.
pub fn content(seed: u64, client: u32, seq: u32, len: u64) -> Vec<u8> {
    let mut bytes = format!("scs-faults seed {seed} client {client} op {seq}\n").into_bytes();
    let rest = (len as usize).saturating_sub(bytes.len());
    bytes.extend(seeded_bytes(seed ^ (u64::from(client) << 48) ^ (u64::from(seq) << 20), rest));
    bytes
}

fn content_sha(seed: u64, client: u32, seq: u32, len: u64) -> String {
    hex(&Sha256::digest(content(seed, client, seq, len)))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn perform(c: &NsCluster, seed: u64, client: u32, seq: u32, action: Action) -> Op {
    let clock = c.clock();
    let start_ms = clock.now_ms();
    let (ran, seen) = match &action {
        Action::Upload { name, size, .. } => {
            let local = c.scratch_path("up");
            std::fs::write(&local, content(seed, client, seq, *size)).expect("write the upload's local file");
            let ran = c.scs(&["upload".into(), local.clone().into(), name.into()], OP_DEADLINE);
            let _ = std::fs::remove_file(local);
            (ran, None)
        }
        Action::Read { name } => read(c, name),
        Action::Delete { name } => (c.scs(&["rm".into(), name.into()], OP_DEADLINE), None),
        Action::Rename { from, to } => (c.scs(&["mv".into(), from.into(), to.into()], OP_DEADLINE), None),
    };
    let outcome = match (ran.ok(), ran.timed_out()) {
        (true, _) => Outcome::Ok,
        (false, true) => Outcome::Hung,
        (false, false) => Outcome::Failed,
    };
    let error = if ran.ok() { String::new() } else { ran.error_line() };
    Op { client, seq, action, start_ms, end_ms: clock.now_ms(), outcome, error, seen }
}

/// `scs download NAME LOCAL`: what it saw. `scs: no such file: NAME` is a
/// definite observation that the name is absent; any other error is none.
pub fn read(c: &NsCluster, name: &str) -> (Ran, Option<Seen>) {
    let local = c.scratch_path("down");
    let args: Vec<OsString> = vec!["download".into(), name.into(), local.clone().into()];
    let ran = c.scs(&args, OP_DEADLINE);
    let seen = if ran.ok() {
        std::fs::read(&local).ok().map(|b| Seen::Present(hex(&Sha256::digest(b))))
    } else if is_missing(&ran, name) {
        Some(Seen::Absent)
    } else {
        None
    };
    let _ = std::fs::remove_file(local);
    (ran, seen)
}

/// Whether `ran` failed saying exactly that `name` does not exist (not a
/// wrapped "no such file" about a blob on some holder).
pub fn is_missing(ran: &Ran, name: &str) -> bool {
    !ran.ok() && ran.error_line() == format!("scs: no such file: {name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_of_different_operations_differ_and_have_the_asked_size() {
        let a = content(1, 1, 1, 5000);
        assert_eq!(a.len(), 5000);
        assert_ne!(a, content(1, 1, 2, 5000));
        assert_ne!(a, content(1, 2, 1, 5000));
        assert_ne!(a, content(2, 1, 1, 5000));
        assert_eq!(content(1, 1, 1, 10), b"scs-faults seed 1 client 1 op 1\n", "the header is never cut");
    }

    #[test]
    fn a_seed_picks_the_same_operations() {
        let cfg = WorkloadConfig { seed: 9, clients: 2, names_per_client: 10 };
        let present = vec![true; 10];
        let picks = |seed| {
            let mut rng = Rng::fork(seed, 1001);
            (0..20).map(|i| pick(&mut rng, &cfg, 1, &present, i)).collect::<Vec<_>>()
        };
        assert_eq!(picks(9), picks(9));
        assert!(picks(9).iter().all(|a| a.names().iter().all(|n| n.starts_with("c1/f"))));
    }
}
