//! The nemesis: a seeded schedule of faults, injected one at a time into an
//! [`NsCluster`] and healed after a seeded hold, each recorded with when it
//! started and ended and which nodes it cut off from the majority.

use std::fmt;
use std::time::Duration;

use super::cluster::NsCluster;
use super::rng::Rng;
use crate::netns::Filter;

/// The kinds of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// kill -9 of the leader, restarted (same data dir) at the heal.
    KillLeader,
    /// kill -9 of a follower, restarted at the heal.
    KillFollower,
    /// SIGSTOP of the leader; SIGCONT at the heal (it wakes up stale).
    FreezeLeader,
    /// The leader cut off from every other node (its link down, or a
    /// blackhole that still lets the clients reach it).
    IsolateLeader,
    /// Two nodes cut off from the other three (blackhole; the clients reach
    /// both sides), the leader on either side.
    SplitTwoThree,
    /// 20% loss each way and a slow (token-bucket) link on one node.
    LossyNode,
    /// The tmpfs data dir of one node filled to the last byte.
    DiskFull,
    /// Bytes flipped in a few blob files of one node.
    CorruptBlob,
    /// A machine lost for good and replaced: one node killed and taken out
    /// with `scs node remove --force`, its disk emptied; at the heal it
    /// starts afresh and is added back with `scs node add`.
    ReplaceNode,
    /// Not injected: a node that exited on its own (always a violation).
    Crash,
}

impl FaultKind {
    /// The kinds the nemesis injects.
    pub const INJECTED: [FaultKind; 9] = [
        FaultKind::KillLeader,
        FaultKind::KillFollower,
        FaultKind::FreezeLeader,
        FaultKind::IsolateLeader,
        FaultKind::SplitTwoThree,
        FaultKind::LossyNode,
        FaultKind::DiskFull,
        FaultKind::CorruptBlob,
        FaultKind::ReplaceNode,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillFollower => "kill-follower",
            FaultKind::FreezeLeader => "freeze-leader",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::SplitTwoThree => "split-2-3",
            FaultKind::LossyNode => "lossy-slow-node",
            FaultKind::DiskFull => "disk-full",
            FaultKind::CorruptBlob => "corrupt-blob",
            FaultKind::ReplaceNode => "replace-node",
            FaultKind::Crash => "crash",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One fault of the schedule.
#[derive(Clone, Debug)]
pub struct Planned {
    /// When to inject it, ms after the workload started.
    pub at_ms: i64,
    pub kind: FaultKind,
    /// How long it stays before the heal.
    pub hold_ms: i64,
    /// Seeded choices (target node, mechanism).
    pub pick: u64,
}

/// The faults of a workload of `duration_ms`: one at a time, a seeded
/// rotation through `kinds` (so a few seeds cover them all), holds of 3-8 s
/// and quiet gaps of 1.5-4 s in between.
pub fn schedule(seed: u64, duration_ms: i64, kinds: &[FaultKind]) -> Vec<Planned> {
    let mut rng = Rng::fork(seed, 1);
    let mut order = kinds.to_vec();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut out = Vec::new();
    let mut t = rng.between(1500, 3000) as i64;
    for i in 0..1000 {
        let kind = order[i % order.len()];
        let hold = if kind == FaultKind::CorruptBlob { 0 } else { rng.between(3000, 8000) as i64 };
        // Leave the end of the workload fault-free: writes must resume.
        if t + hold > duration_ms - 2000 {
            break;
        }
        out.push(Planned { at_ms: t, kind, hold_ms: hold, pick: rng.next_u64() });
        t += hold + rng.between(1500, 4000) as i64;
    }
    out
}

/// A fault as it happened.
#[derive(Clone, Debug)]
pub struct FaultEvent {
    pub kind: FaultKind,
    /// Nodes it acted on.
    pub targets: Vec<u32>,
    /// The mechanism and what it found (e.g. "link down", "3 blobs").
    pub detail: String,
    /// The leader and term just before.
    pub leader_before: Option<u32>,
    pub term_before: u64,
    /// Injected and healed, ms since the cluster started.
    pub start_ms: i64,
    pub end_ms: i64,
    /// Nodes cut off from a majority between start and end.
    pub minority: Vec<u32>,
    /// Why the injection did not happen, if it did not.
    pub error: Option<String>,
}

impl fmt::Display for FaultEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>8.3}-{:<8.3} {} on {:?} ({}) [leader before: {:?}, term {}]",
            self.start_ms as f64 / 1000.0,
            self.end_ms as f64 / 1000.0,
            self.kind,
            self.targets,
            self.detail,
            self.leader_before,
            self.term_before
        )?;
        if let Some(e) = &self.error {
            write!(f, " NOT INJECTED: {e}")?;
        }
        Ok(())
    }
}

/// Injects and heals faults on one cluster, keeping what it must undo.
pub struct Nemesis<'a> {
    c: &'a NsCluster,
    /// Nodes killed on purpose (not crashes).
    killed: Vec<u32>,
    frozen: Vec<u32>,
    links_down: Vec<u32>,
    ports_down: Vec<u32>,
    filtered: bool,
    shaped: Vec<u32>,
    disk_full: bool,
    /// Nodes taken out and emptied, to start afresh and add back.
    replaced: Vec<u32>,
}

impl<'a> Nemesis<'a> {
    pub fn new(c: &'a NsCluster) -> Nemesis<'a> {
        Nemesis {
            c,
            killed: Vec::new(),
            frozen: Vec::new(),
            links_down: Vec::new(),
            ports_down: Vec::new(),
            filtered: false,
            shaped: Vec::new(),
            disk_full: false,
            replaced: Vec::new(),
        }
    }

    /// The current leader (from the status), else the highest running node.
    fn leader(&self) -> (Option<u32>, u64, u32) {
        let status = self.c.status();
        let running: Vec<u32> = (1..=self.c.size()).filter(|&id| self.c.is_running(id)).collect();
        let fallback = running.last().copied().unwrap_or(self.c.size());
        match status {
            Some(s) => (s.leader, s.term, s.leader.unwrap_or(fallback)),
            None => (None, 0, fallback),
        }
    }

    /// Injects `p` and returns its record (`end_ms` is set by [`Nemesis::heal`]).
    pub fn inject(&mut self, p: &Planned) -> FaultEvent {
        let (leader_before, term_before, leader) = self.leader();
        let mut rng = Rng::new(p.pick);
        let n = self.c.size();
        let others = |x: &[u32]| -> Vec<u32> { (1..=n).filter(|id| !x.contains(id)).collect() };
        let mut ev = FaultEvent {
            kind: p.kind,
            targets: Vec::new(),
            detail: String::new(),
            leader_before,
            term_before,
            start_ms: 0,
            end_ms: 0,
            minority: Vec::new(),
            error: None,
        };
        let result: Result<(), String> = match p.kind {
            FaultKind::KillLeader => {
                ev.targets = vec![leader];
                self.c.kill(leader);
                self.killed.push(leader);
                Ok(())
            }
            FaultKind::KillFollower => {
                let followers: Vec<u32> = others(&[leader]).into_iter().filter(|&id| self.c.is_running(id)).collect();
                if followers.is_empty() {
                    Err("no running follower".into())
                } else {
                    let id = *rng.pick(&followers);
                    ev.targets = vec![id];
                    self.c.kill(id);
                    self.killed.push(id);
                    Ok(())
                }
            }
            FaultKind::FreezeLeader => {
                ev.targets = vec![leader];
                if self.c.signal(leader, libc::SIGSTOP) {
                    self.frozen.push(leader);
                    Ok(())
                } else {
                    Err(format!("node {leader} is not running"))
                }
            }
            FaultKind::IsolateLeader => {
                ev.targets = vec![leader];
                ev.minority = vec![leader];
                if rng.chance(50) {
                    ev.detail = "its link down".into();
                    self.links_down.push(leader);
                    self.c.net().link_down(leader)
                } else {
                    self.blackhole(&mut ev, vec![leader], others(&[leader]))
                }
            }
            FaultKind::SplitTwoThree => {
                let pool = others(&[leader]);
                let mut two = if rng.chance(50) { vec![leader] } else { Vec::new() };
                for _ in 0..100 {
                    let id = *rng.pick(&pool);
                    if two.len() < 2 && !two.contains(&id) {
                        two.push(id);
                    }
                }
                two.sort_unstable();
                ev.targets = two.clone();
                ev.minority = two.clone();
                let three = others(&two);
                self.blackhole(&mut ev, two, three)
            }
            FaultKind::LossyNode => {
                let id = if rng.chance(50) { leader } else { rng.between(1, u64::from(n)) as u32 };
                ev.targets = vec![id];
                self.lossy(&mut ev, id)
            }
            FaultKind::DiskFull => match self.c.tmpfs_node() {
                None => Err("no tmpfs node".into()),
                Some(id) => {
                    ev.targets = vec![id];
                    self.disk_full = true;
                    self.c.fill_disk().map(|bytes| ev.detail = format!("{} MiB of filler", bytes >> 20))
                }
            },
            FaultKind::CorruptBlob => {
                let id = rng.between(1, u64::from(n)) as u32;
                ev.targets = vec![id];
                let blobs = self.c.blobs(id);
                let mut hit = Vec::new();
                for _ in 0..3.min(blobs.len()) {
                    let b = rng.pick(&blobs);
                    if flip_a_byte(&b.path, &mut rng) {
                        hit.push(format!("{}.{}-{}", &b.key[..8], b.term, b.seq));
                    }
                }
                ev.detail = format!("flipped a byte in {} blob(s): {}", hit.len(), hit.join(" "));
                Ok(())
            }
            FaultKind::ReplaceNode => {
                let id = rng.between(1, u64::from(n)) as u32;
                ev.targets = vec![id];
                self.c.kill(id);
                let removed = self.members_command(&["node", "remove", "--force", &id.to_string()]);
                // Emptied even if the remove failed: the add at the heal then
                // finds it a member already, and it refetches everything.
                self.replaced.push(id);
                let emptied = self.c.empty_data_dir(id);
                match (removed, emptied) {
                    (Ok(took), Ok(())) => {
                        ev.detail = format!("removed in {took:.2?}, disk emptied");
                        Ok(())
                    }
                    (Err(e), _) | (_, Err(e)) => Err(e),
                }
            }
            FaultKind::Crash => Ok(()),
        };
        ev.start_ms = self.c.clock().now_ms();
        ev.end_ms = ev.start_ms;
        if let Err(e) = result {
            ev.error = Some(e);
        }
        ev
    }

    /// Loss (with nft) and a slow link on node `id`.
    fn lossy(&mut self, ev: &mut FaultEvent, id: u32) -> Result<(), String> {
        let mut parts = Vec::new();
        if self.c.net().has_nft() {
            self.filtered = true;
            self.c.net().apply_filter(&Filter { groups: Vec::new(), lossy: vec![(id, 20)] })?;
            parts.push("20% loss each way");
        }
        self.shaped.push(id);
        self.c.net().shape(id, 4096, 200)?;
        parts.push("4 Mbit/s token bucket, 200 ms queue");
        ev.detail = parts.join(", ");
        Ok(())
    }

    /// Cuts `small` off from `big` in the bridge (nft), or, without nft,
    /// takes the bridge ports of `small` down.
    fn blackhole(&mut self, ev: &mut FaultEvent, small: Vec<u32>, big: Vec<u32>) -> Result<(), String> {
        if self.c.net().has_nft() {
            ev.detail = "blackhole between node groups (nft), clients reach both".into();
            self.filtered = true;
            self.c.net().apply_filter(&Filter { groups: vec![small, big], lossy: Vec::new() })
        } else {
            ev.detail = "bridge ports down (no nft)".into();
            for id in small {
                self.ports_down.push(id);
                self.c.net().port_down(id)?;
            }
            Ok(())
        }
    }

    /// Undoes the fault in force (all of them: it is one at a time).
    pub fn heal(&mut self, ev: &mut FaultEvent) {
        self.heal_all();
        ev.end_ms = self.c.clock().now_ms();
    }

    /// Undoes everything: wakes, restarts, reconnects, unshapes, frees.
    pub fn heal_all(&mut self) {
        for id in self.frozen.drain(..) {
            self.c.signal(id, libc::SIGCONT);
        }
        for id in self.links_down.drain(..) {
            let _ = self.c.net().link_up(id);
        }
        for id in self.ports_down.drain(..) {
            let _ = self.c.net().port_up(id);
        }
        if std::mem::take(&mut self.filtered) {
            let _ = self.c.net().apply_filter(&Filter::default());
        }
        for id in self.shaped.drain(..) {
            self.c.net().unshape(id);
        }
        if std::mem::take(&mut self.disk_full) {
            self.c.free_disk();
        }
        for id in self.killed.drain(..) {
            self.c.spawn(id);
        }
        for id in std::mem::take(&mut self.replaced) {
            self.c.spawn(id);
            let heard = self.c.wait_for(Duration::from_secs(20), |s| {
                s.member_ids().contains(&id) || s.candidate(id).is_some_and(|n| n.alive)
            });
            if let Err(e) = heard.and_then(|_| self.members_command(&["node", "add", &id.to_string()])) {
                println!("nemesis: node {id} could not be added back: {e}");
            }
        }
    }

    /// Runs `scs <args>` (a membership change) until it succeeds, for up to
    /// 20 s: a failover may be under way. Returns how long it took.
    fn members_command(&self, args: &[&str]) -> Result<Duration, String> {
        let started = std::time::Instant::now();
        let args: Vec<std::ffi::OsString> = args.iter().map(std::ffi::OsString::from).collect();
        let mut last = String::new();
        for _ in 0..100 {
            if started.elapsed() > Duration::from_secs(20) {
                break;
            }
            let ran = self.c.scs(&args, Duration::from_secs(20));
            if ran.ok() {
                return Ok(started.elapsed());
            }
            last = ran.error_line();
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!("scs {}: {last}", args.join(std::ffi::OsStr::new(" ")).to_string_lossy()))
    }

    /// Checks for nodes that died on their own: each is recorded as a crash
    /// and started again.
    pub fn catch_crashes(&mut self) -> Vec<FaultEvent> {
        let mut out = Vec::new();
        for (id, status) in self.c.take_exited() {
            let now = self.c.clock().now_ms();
            out.push(FaultEvent {
                kind: FaultKind::Crash,
                targets: vec![id],
                detail: format!("node {id} exited on its own: {status}"),
                leader_before: None,
                term_before: 0,
                start_ms: now,
                end_ms: now,
                minority: Vec::new(),
                error: None,
            });
            self.c.spawn(id);
        }
        out
    }

    /// Sleeps until `until_ms` (cluster clock) in short steps, catching crashes.
    pub fn sleep_until(&mut self, until_ms: i64, crashes: &mut Vec<FaultEvent>) {
        // Bounded by the clock; the step keeps crash detection prompt.
        while self.c.clock().now_ms() < until_ms && !self.c.expired() {
            let left = until_ms - self.c.clock().now_ms();
            std::thread::sleep(Duration::from_millis(left.clamp(1, 100) as u64));
            crashes.extend(self.catch_crashes());
        }
    }
}

/// Flips one byte in the middle of `path` in place; false if it could not.
fn flip_a_byte(path: &std::path::Path, rng: &mut Rng) -> bool {
    use std::io::{Read, Seek, SeekFrom, Write};
    let Ok(mut f) = std::fs::OpenOptions::new().read(true).write(true).open(path) else { return false };
    let Ok(len) = f.metadata().map(|m| m.len()) else { return false };
    if len == 0 {
        return false;
    }
    let at = rng.below(len);
    let mut b = [0u8; 1];
    let ok = f.seek(SeekFrom::Start(at)).is_ok() && f.read_exact(&mut b).is_ok();
    b[0] ^= 0x5a;
    ok && f.seek(SeekFrom::Start(at)).is_ok() && f.write_all(&b).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_is_seeded_sequential_and_ends_before_the_workload() {
        let a = schedule(5, 40_000, &FaultKind::INJECTED);
        let b = schedule(5, 40_000, &FaultKind::INJECTED);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert!(a.len() >= 3, "{a:?}");
        for w in a.windows(2) {
            assert!(w[0].at_ms + w[0].hold_ms < w[1].at_ms, "faults overlap: {w:?}");
        }
        let last = a.last().unwrap();
        assert!(last.at_ms + last.hold_ms <= 38_000);
        let kinds: std::collections::BTreeSet<_> = a.iter().map(|p| p.kind).collect();
        assert_eq!(kinds.len(), a.len().min(FaultKind::INJECTED.len()), "a rotation repeats no kind before all came");
    }
}
