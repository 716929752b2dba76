//! The clients: each runs a seeded sequence of bounded random uploads,
//! overwrites, reads, deletes, restores (from the trash and of earlier
//! versions), renames, hard links, directory renames and
//! directory removals on names of its own, one `scs` command at a time, and
//! records every operation with its result.
//!
//! Names are owned by one client each (`c<k>/d<j>/f<nn>`, and whatever a
//! directory rename makes of them), so the history of a client's names is
//! sequential and the checker needs no linearizability search; the clients
//! still run concurrently against the same cluster. Every upload writes
//! content no other upload writes, so a content found under two names is
//! either one file with two links or a rename that was not atomic.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::action::{Action, Seen};
use super::cluster::{NsCluster, Ran};
use super::rng::Rng;
use super::world::World;
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
    /// File names per client, spread over [`DIRS`] directories.
    pub names_per_client: u32,
    /// Hard links, directory renames and rmdir besides the file operations.
    pub namespace_ops: bool,
    /// `scs restore --version` besides the other restores.
    pub version_restores: bool,
}

/// Directories per client (`c<k>/d0` …).
pub const DIRS: u32 = 5;

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
            Action::Link { from, to } => format!("link {from} -> {to}"),
            Action::RenameDir { from, to } => format!("rename dir {from} -> {to}"),
            Action::RemoveDir { name } => format!("rmdir {name}"),
            Action::Restore { name } => format!("restore {name}"),
            Action::Revert { name } => format!("revert {name} to its newest version"),
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

impl Op {
    /// The operation a history line (as [`Op`]'s `Display` writes it) shows,
    /// with contents as their first 12 hex digits, as the line has them.
    pub fn parse(line: &str) -> Result<Op, String> {
        let bad = |why: &str| format!("{why}: {line}");
        let mut words = line.split_whitespace();
        let (times, who) =
            (words.next().ok_or_else(|| bad("no times"))?, words.next().ok_or_else(|| bad("no client"))?);
        let (start, end) = times.split_once('-').ok_or_else(|| bad("no start-end"))?;
        let ms = |t: &str| t.parse::<f64>().map(|s| (s * 1000.0).round() as i64).map_err(|_| bad("bad time"));
        let (client, seq) = who.strip_prefix('c').and_then(|w| w.split_once('#')).ok_or_else(|| bad("bad client"))?;
        let rest: Vec<&str> = words.collect();
        let arrow = |i: usize| rest.get(i).copied() == Some("->");
        let word = |i: usize| rest.get(i).map(|w| w.to_string()).ok_or_else(|| bad("too short"));
        let (action, used) = match rest.first().copied() {
            Some("upload") if rest.get(2).copied() == Some("=") => {
                let size = word(4)?.trim_start_matches('(').parse().map_err(|_| bad("bad size"))?;
                (Action::Upload { name: word(1)?, sha: word(3)?, size }, 6)
            }
            Some("read") => (Action::Read { name: word(1)? }, 2),
            Some("delete") => (Action::Delete { name: word(1)? }, 2),
            Some("rmdir") => (Action::RemoveDir { name: word(1)? }, 2),
            Some("restore") => (Action::Restore { name: word(1)? }, 2),
            Some("revert") => (Action::Revert { name: word(1)? }, 6),
            Some("rename") if rest.get(1).copied() == Some("dir") && arrow(3) => {
                (Action::RenameDir { from: word(2)?, to: word(4)? }, 5)
            }
            Some("rename") if arrow(2) => (Action::Rename { from: word(1)?, to: word(3)? }, 4),
            Some("link") if arrow(2) => (Action::Link { from: word(1)?, to: word(3)? }, 4),
            _ => return Err(bad("unknown operation")),
        };
        if !arrow(used) {
            return Err(bad("no result"));
        }
        let result = rest[used + 1..].join(" ");
        let seen = |s: &str| match s {
            "absent" => Seen::Absent,
            sha => Seen::Present(sha.to_string()),
        };
        let (outcome, error, seen) = if let Some(err) = result.strip_prefix("FAILED: ") {
            (Outcome::Failed, err.to_string(), None)
        } else if let Some(err) = result.strip_prefix("HUNG: ") {
            (Outcome::Hung, err.to_string(), None)
        } else if let Some(saw) = result.strip_prefix("ok, saw ") {
            (Outcome::Ok, String::new(), Some(seen(saw)))
        } else if result == "ok" {
            (Outcome::Ok, String::new(), None)
        } else if let Some((saw, err)) = result.strip_prefix("saw ").and_then(|r| r.split_once(" (")) {
            (Outcome::Failed, err.strip_suffix(')').unwrap_or(err).to_string(), Some(seen(saw)))
        } else {
            return Err(bad("unknown result"));
        };
        Ok(Op {
            client: client.parse().map_err(|_| bad("bad client"))?,
            seq: seq.parse().map_err(|_| bad("bad sequence number"))?,
            action,
            start_ms: ms(start)?,
            end_ms: ms(end)?,
            outcome,
            error,
            seen,
        })
    }
}

/// File name `i` of client `c`: in directory `i % DIRS`.
pub fn name_of(client: u32, i: u32) -> String {
    format!("c{client}/d{}/f{:02}", i % DIRS, i / DIRS)
}

/// Directory `j` of client `c`.
fn dir_of(client: u32, j: u32) -> String {
    format!("c{client}/d{j}")
}

/// Runs client `client` until `stop` is set; returns its history.
pub fn run_client(c: &NsCluster, cfg: &WorkloadConfig, client: u32, stop: &AtomicBool) -> Vec<Op> {
    let mut rng = Rng::fork(cfg.seed, 1000 + u64::from(client));
    // What the client believes exists, to pick sensible operations; the
    // checker does not use it.
    let mut believed = World::default();
    let mut ops = Vec::new();
    let mut seq = 0u32;
    // Bounded in count too: at most one operation per 20 ms of a long run.
    while !stop.load(Ordering::Relaxed) && seq < 100_000 && !c.expired() {
        let action = pick(&mut rng, cfg, client, &believed, seq);
        let op = perform(c, cfg.seed, client, seq, action);
        if op.outcome == Outcome::Ok {
            let effect = believed.apply(seq as usize, &op.action);
            if effect.done {
                believed = effect.steps.into_iter().last().unwrap_or(believed);
            }
        }
        ops.push(op);
        seq += 1;
    }
    ops
}

/// A content size: mostly small files, some of a few chunks' worth.
fn size(rng: &mut Rng) -> u64 {
    match rng.below(100) {
        0..=69 => rng.between(64, 4 << 10),
        70..=94 => rng.between(4 << 10, 128 << 10),
        _ => rng.between(128 << 10, 2 << 20),
    }
}

fn pick(rng: &mut Rng, cfg: &WorkloadConfig, client: u32, believed: &World, seq: u32) -> Action {
    let n = cfg.names_per_client;
    let any = |rng: &mut Rng| name_of(client, rng.below(u64::from(n)) as u32);
    let files: Vec<&String> = believed.file_names().collect();
    let existing = |rng: &mut Rng| if files.is_empty() { any(rng) } else { rng.pick(&files).to_string() };
    let upload = |rng: &mut Rng| {
        let name = any(rng);
        let len = size(rng);
        let sha = content_sha(cfg.seed, client, seq, len);
        Action::Upload { name, sha, size: len }
    };
    // A name nothing has, in a directory that exists (a few tries).
    let free_in_existing_dir = |rng: &mut Rng| {
        (0..8).map(|_| any(rng)).find(|to| {
            let dir = to.rsplit_once('/').map_or("", |(d, _)| d);
            believed.is_dir(dir) && !believed.is_file(to)
        })
    };
    let top_dirs = |present: bool| -> Vec<String> {
        (0..DIRS).map(|j| dir_of(client, j)).filter(|d| believed.is_dir(d) == present).collect()
    };
    let roll = rng.below(100);
    if !cfg.namespace_ops && roll >= 82 {
        return upload(rng);
    }
    match roll {
        0..=39 => upload(rng),
        40..=54 => Action::Read { name: existing(rng) },
        // A file's content before its last overwrite, back.
        55..=56 => {
            let kept: Vec<&String> =
                files.iter().copied().filter(|f| cfg.version_restores && believed.has_versions(f)).collect();
            match kept.is_empty() {
                true => Action::Read { name: existing(rng) },
                false => Action::Revert { name: rng.pick(&kept).to_string() },
            }
        }
        57..=65 => {
            let name = if rng.chance(90) { existing(rng) } else { any(rng) };
            Action::Delete { name }
        }
        // A file removed earlier, back from the trash (if its name is free).
        66..=68 => {
            let trash = believed.trash_paths();
            let removed: Vec<&String> = trash.iter().filter(|p| !believed.is_file(p)).collect();
            match removed.is_empty() {
                true => upload(rng),
                false => Action::Restore { name: rng.pick(&removed).to_string() },
            }
        }
        _ if files.is_empty() => upload(rng),
        69..=81 => {
            let from = existing(rng);
            let to = (0..8).map(|_| any(rng)).find(|t| *t != from).unwrap_or_else(|| any(rng));
            Action::Rename { from, to }
        }
        82..=89 => match free_in_existing_dir(rng) {
            Some(to) => Action::Link { from: existing(rng), to },
            None => upload(rng),
        },
        // A directory (any depth) to a free top-level slot, or into another
        // top-level directory: nesting frees slots, moving out uses them.
        90..=96 => {
            let dirs: Vec<&String> = believed.dir_names().filter(|d| d.contains('/')).collect();
            if dirs.is_empty() {
                return upload(rng);
            }
            let from = rng.pick(&dirs).to_string();
            let (free, taken) = (top_dirs(false), top_dirs(true));
            let into: Vec<&String> =
                taken.iter().filter(|d| **d != from && !scs_common::name::is_inside(d, &from)).collect();
            let to = match (free.is_empty(), into.is_empty()) {
                (true, true) => return upload(rng),
                (false, true) => rng.pick(&free).clone(),
                (true, false) => rng.pick(&into).to_string(),
                (false, false) if rng.chance(60) => rng.pick(&free).clone(),
                (false, false) => rng.pick(&into).to_string(),
            };
            Action::RenameDir { from, to }
        }
        _ => {
            let empty: Vec<&String> = believed.dir_names().filter(|d| !believed.has_children(d)).collect();
            if empty.is_empty() {
                return upload(rng);
            }
            Action::RemoveDir { name: rng.pick(&empty).to_string() }
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
        Action::Delete { name } | Action::RemoveDir { name } => (c.scs(&["rm".into(), name.into()], OP_DEADLINE), None),
        Action::Rename { from, to } | Action::RenameDir { from, to } => {
            (c.scs(&["mv".into(), from.into(), to.into()], OP_DEADLINE), None)
        }
        Action::Link { from, to } => (c.scs(&["ln".into(), from.into(), to.into()], OP_DEADLINE), None),
        Action::Restore { name } => {
            let ran = c.scs(&["trash".into(), "restore".into(), name.into()], OP_DEADLINE);
            read_back(c, name, ran)
        }
        Action::Revert { name } => read_back(c, name, revert(c, name)),
    };
    let outcome = match (ran.ok(), ran.timed_out()) {
        (true, _) => Outcome::Ok,
        (false, true) => Outcome::Hung,
        (false, false) => Outcome::Failed,
    };
    let error = if ran.ok() { String::new() } else { ran.error_line() };
    Op { client, seq, action, start_ms, end_ms: clock.now_ms(), outcome, error, seen }
}

/// A restore that succeeded, with what `name` reads right after it: a
/// restore may bring back one of several removals or versions (an earlier
/// one when the cluster made room and took the later), and the checker
/// follows only those the read allows instead of every one from then on.
fn read_back(c: &NsCluster, name: &str, restored: Ran) -> (Ran, Option<Seen>) {
    match restored.ok() {
        true => (restored, read(c, name).1),
        false => (restored, None),
    }
}

/// `scs versions NAME --json`, then `scs restore NAME --version N` of the
/// last version listed (the newest). A listing that fails or lists none
/// ends it as the refusal the restore itself would give: a listing
/// changes nothing, so nothing took effect.
fn revert(c: &NsCluster, name: &str) -> Ran {
    let listed = c.scs(&["versions".into(), name.into(), "--json".into()], OP_DEADLINE);
    let newest = if listed.ok() {
        match serde_json::from_slice::<Vec<serde_json::Value>>(&listed.stdout) {
            Ok(v) => v.len().checked_sub(1).ok_or_else(|| "none is kept".to_string()),
            Err(e) => Err(format!("the listing is not JSON: {e}")),
        }
    } else {
        Err(listed.error_line())
    };
    match newest {
        Ok(k) => {
            let n = (k + 1).to_string();
            c.scs(&["restore".into(), name.into(), "--version".into(), n.into()], OP_DEADLINE)
        }
        Err(why) => Ran {
            status: Some(std::process::ExitStatus::from_raw(1 << 8)),
            stdout: Vec::new(),
            stderr: format!("scs: no such file: no version of {name} listed ({why})\n"),
            elapsed: listed.elapsed,
        },
    }
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
    fn a_history_line_reads_back_as_the_operation_it_shows() {
        let sha = "0123456789abcdef0123";
        let ops = [
            (Action::Upload { name: "c1/d0/f01".into(), sha: sha.into(), size: 4096 }, Outcome::Ok, "", None),
            (Action::Read { name: "c1/d0/f01".into() }, Outcome::Ok, "", Some(Seen::Present(sha[..12].into()))),
            (
                Action::Read { name: "c1/d0/f02".into() },
                Outcome::Failed,
                "scs: no such file: c1/d0/f02",
                Some(Seen::Absent),
            ),
            (Action::Delete { name: "c1/d0/f01".into() }, Outcome::Failed, "scs: no quorum (2 of 5) -> retry", None),
            (Action::Rename { from: "c1/d0/f01".into(), to: "c1/d1/f03".into() }, Outcome::Ok, "", None),
            (Action::RenameDir { from: "c1/d0".into(), to: "c1/d1".into() }, Outcome::Hung, "killed", None),
            (Action::Link { from: "c1/d0/f01".into(), to: "c1/d1/f03".into() }, Outcome::Ok, "", None),
            (Action::RemoveDir { name: "c1/d2".into() }, Outcome::Ok, "", None),
            (Action::Restore { name: "c1/d2/f04".into() }, Outcome::Ok, "", None),
            (Action::Revert { name: "c1/d2/f04".into() }, Outcome::Ok, "", None),
        ];
        for (i, (action, outcome, error, seen)) in ops.into_iter().enumerate() {
            let op = Op {
                client: 3,
                seq: i as u32,
                action,
                start_ms: 1234,
                end_ms: 98765,
                outcome,
                error: error.into(),
                seen,
            };
            let line = op.to_string();
            let back = Op::parse(&line).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back.to_string(), line);
            assert_eq!((back.start_ms, back.end_ms, back.outcome, &back.error), (1234, 98765, outcome, &op.error));
            assert_eq!(back.seen, op.seen);
        }
        assert!(Op::parse("   1.000-2.000    c1#0    frobnicate c1/d0 -> ok").is_err());
        assert!(Op::parse("").is_err());
    }

    #[test]
    fn a_seed_picks_the_same_operations() {
        let cfg =
            WorkloadConfig { seed: 9, clients: 2, names_per_client: 50, namespace_ops: true, version_restores: true };
        let mut believed = World::default();
        for i in 0..10 {
            let up = Action::Upload { name: name_of(1, i), sha: "x".into(), size: 1 };
            believed = believed.apply(i as usize, &up).steps.pop().unwrap();
        }
        let picks = |seed| {
            let mut rng = Rng::fork(seed, 1001);
            (0..200).map(|i| pick(&mut rng, &cfg, 1, &believed, i)).collect::<Vec<_>>()
        };
        assert_eq!(picks(9), picks(9));
        assert!(picks(9).iter().all(|a| a.names().iter().all(|n| n.starts_with("c1/d"))));
        let kinds: std::collections::BTreeSet<&str> = picks(9).iter().map(|a| a.kind()).collect();
        assert!(kinds.contains("link") && kinds.contains("rename-dir"), "{kinds:?}");
    }
}
