//! The history checker: replays each client's operations into the set of
//! states its part of the namespace may be in (see [`World`]), flags reads
//! and final views that no such state explains, and checks what is on every
//! node's disk against the final state.
//!
//! A command the leader refused on its checks (see [`is_refusal`]) took no
//! effect. Any other failed or hung write may or may not have taken effect (or only its
//! first steps: `mv` makes directories before it renames), and may still
//! take effect later, after the client's next operations: its records may
//! sit on a minority of nodes until a new leader catches up from them. So it
//! adds its results to the possible states, and stays pending in the states
//! it did not change, able to take effect before any later operation for
//! [`LATE_MS`]. An acknowledged write maps every state to its result, and
//! drops the states it could not have succeeded in. A read never narrows the
//! set, it is only checked against it; the one exception is the read of a
//! restored name right after its restore, which says which of the removals
//! or versions the restore may have brought back it brought back.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::action::{Action, Seen};
use super::workload::{Op, Outcome};
use super::world::World;

/// Kinds reported without failing the run (unless it is strict): disk
/// hygiene, not a promise a user sees broken.
pub const WARNING_KINDS: [&str; 1] = ["stray-blob"];

/// How long after a failed write ended it may still take effect: a fault's
/// longest hold, a failover and a catch-up, with room to spare.
pub const LATE_MS: i64 = 30_000;

/// More possible states than this for one client is a history the checker
/// cannot follow: reported, not silently narrowed.
const MAX_WORLDS: usize = 20_000;

/// One broken promise, with the operations that show it.
#[derive(Clone, Debug)]
pub struct Violation {
    /// `lost`, `corrupt`, `resurrected`, `stale-read`, …
    pub kind: &'static str,
    /// The name, term or node it is about.
    pub subject: String,
    pub what: String,
    /// The relevant history, one line each.
    pub history: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  [{}] {}: {}", self.kind, self.subject, self.what)?;
        for h in &self.history {
            writeln!(f, "      {h}")?;
        }
        Ok(())
    }
}

/// What each client's names may hold after the history.
#[derive(Debug, Default)]
pub struct Model {
    /// Per client: every state its names may be in.
    worlds: BTreeMap<u32, BTreeSet<World>>,
    /// Every file name that some state had at some point.
    seen_names: BTreeSet<String>,
    /// Every content ever uploaded: sha → the name it was uploaded to.
    uploaded: BTreeMap<String, String>,
    /// Per client, its operations' indexes in the history, in order.
    ops: BTreeMap<u32, Vec<usize>>,
}

/// Whether a failed command's error is the leader refusing it on its
/// checks (the name is missing, taken, not empty …): no attempt of it took
/// effect, as a retry that finds an earlier attempt done counts that as its
/// success. Any other failure (no leader, no quorum, a timeout, a full disk)
/// may have taken effect.
pub fn is_refusal(error: &str) -> bool {
    const REFUSALS: [&str; 8] = [
        "no such file: ",
        "already exists: ",
        "not a directory: ",
        "is a directory: ",
        "directory not empty: ",
        "bad name: ",
        "invalid request: ",
        "not permitted: ",
    ];
    error.strip_prefix("scs: ").is_some_and(|e| REFUSALS.iter().any(|r| e.starts_with(r)))
}

/// The client a name belongs to (`c<k>/…`).
fn client_of(name: &str) -> u32 {
    name.split('/').next().and_then(|c| c.strip_prefix('c')).and_then(|k| k.parse().ok()).unwrap_or(0)
}

impl Model {
    /// Replays `history` (all clients; each name belongs to one client, so
    /// only each client's own order matters). Reads outside the possible
    /// states are reported into `out`.
    pub fn replay(history: &[Op], out: &mut Vec<Violation>) -> Model {
        let mut m = Model::default();
        for op in history {
            if let Action::Upload { name, sha, .. } = &op.action {
                m.uploaded.insert(sha.clone(), name.clone());
            }
        }
        let mut order: Vec<usize> = (0..history.len()).collect();
        order.sort_by_key(|&i| (history[i].client, history[i].seq));
        for i in order {
            let op = &history[i];
            m.ops.entry(op.client).or_default().push(i);
            if let (Action::Read { name }, Some(seen)) = (&op.action, &op.seen) {
                let worlds = m.worlds.remove(&op.client).unwrap_or_else(|| [World::default()].into());
                let worlds = m.land(op.client, worlds, Some(op.start_ms), out);
                m.worlds.insert(op.client, worlds);
                if let Some(kind) = m.classify(name, seen) {
                    let kind = if kind == "corrupt" { "corrupt" } else { "stale-read" };
                    let what = format!(
                        "c{}#{} read {seen}, but {name} may only be {}",
                        op.client,
                        op.seq,
                        m.show_possible(name)
                    );
                    out.push(m.violation(history, kind, name, what));
                }
                continue;
            }
            if !op.action.is_write() {
                continue;
            }
            let worlds = m.worlds.remove(&op.client).unwrap_or_else(|| [World::default()].into());
            let worlds = m.land(op.client, worlds, Some(op.start_ms), out);
            let acked = op.outcome == Outcome::Ok;
            let refused = op.outcome == Outcome::Failed && is_refusal(&op.error);
            let mut next = BTreeSet::new();
            for w in worlds.iter() {
                let mut effect = w.apply(i, &op.action);
                if acked {
                    if effect.done {
                        next.extend(effect.steps.into_iter().last());
                        next.extend(effect.also);
                    }
                } else if refused {
                    // Nothing of it took effect but the directories `mv`
                    // made on the way (their own commits), and nothing will.
                    next.insert(w.clone());
                    if effect.done {
                        effect.steps.pop();
                    }
                    next.extend(effect.steps);
                } else {
                    next.insert(w.clone());
                    next.extend(w.with_pending(i, &op.action, op.end_ms + LATE_MS));
                    next.extend(effect.steps);
                    next.extend(effect.also);
                }
            }
            if next.is_empty() {
                // Acknowledged, but it could not have succeeded from any
                // state the history allows: keep the states to go on.
                let subject = op.action.names()[0].to_string();
                let what =
                    format!("c{}#{} {} was acknowledged, but cannot succeed here", op.client, op.seq, op.action.kind());
                out.push(m.violation(history, "phantom-write", &subject, what));
                m.worlds.insert(op.client, worlds);
                continue;
            }
            m.worlds.insert(op.client, next);
            if let (Some(seen), Action::Restore { name } | Action::Revert { name }) = (&op.seen, &op.action) {
                m.read_back(history, i, name, seen, out);
            }
        }
        // The heal: whatever is still pending may take effect in it.
        for k in m.worlds.keys().copied().collect::<Vec<_>>() {
            let worlds = m.worlds.remove(&k).unwrap_or_default();
            let worlds = m.land(k, worlds, None, out);
            m.worlds.insert(k, worlds);
        }
        m
    }

    /// Keeps the states after restore `i` that show what `name` read right
    /// after it: which removal or version came back. A read no state
    /// explains is reported as any read is, and narrows nothing.
    fn read_back(&mut self, history: &[Op], i: usize, name: &str, seen: &Seen, out: &mut Vec<Violation>) {
        let op = &history[i];
        let worlds = self.worlds.remove(&op.client).unwrap_or_default();
        let worlds = self.land(op.client, worlds, None, out);
        let shown: BTreeSet<World> = worlds.iter().filter(|w| w.read(name) == *seen).cloned().collect();
        self.worlds.insert(op.client, if shown.is_empty() { worlds } else { shown });
        if let Some(kind) = self.classify(name, seen) {
            let what = format!(
                "c{}#{} restored {name} and read {seen}, but it may only be {}",
                op.client,
                op.seq,
                self.show_possible(name)
            );
            out.push(self.violation(history, if kind == "corrupt" { kind } else { "lost" }, name, what));
        }
    }

    /// `worlds` and every state reached from them by pending writes taking
    /// effect (any of them, in any order), after dropping those whose time is
    /// up at `now_ms` (`None`: none is).
    fn land(
        &mut self,
        client: u32,
        worlds: BTreeSet<World>,
        now_ms: Option<i64>,
        out: &mut Vec<Violation>,
    ) -> BTreeSet<World> {
        let mut done = BTreeSet::new();
        let mut todo: Vec<World> = worlds.into_iter().map(|w| now_ms.map_or(w.clone(), |t| w.expire(t))).collect();
        while let Some(w) = todo.pop() {
            if done.contains(&w) {
                continue;
            }
            for p in w.pending() {
                todo.extend(w.land(p));
            }
            self.seen_names.extend(w.file_names().cloned());
            done.insert(w);
            if done.len() > MAX_WORLDS {
                let what = format!("more than {MAX_WORLDS} possible states of client {client}'s names");
                out.push(Violation { kind: "checker", subject: format!("c{client}"), what, history: Vec::new() });
                break;
            }
        }
        done
    }

    fn worlds_of(&self, name: &str) -> Vec<&World> {
        match self.worlds.get(&client_of(name)) {
            Some(ws) => ws.iter().collect(),
            None => Vec::new(),
        }
    }

    /// The states `name` may be in.
    pub fn possible(&self, name: &str) -> BTreeSet<Seen> {
        let ws = self.worlds_of(name);
        if ws.is_empty() {
            return [Seen::Absent].into();
        }
        ws.iter().map(|w| w.read(name)).collect()
    }

    /// Every file name the history may have made: the names to read at the end.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.seen_names.iter()
    }

    /// Whether `sha` is the content of some upload.
    pub fn is_known(&self, sha: &str) -> bool {
        self.uploaded.contains_key(sha)
    }

    /// Whether some possible state has `names` as names of one file.
    pub fn may_be_one_file(&self, names: &[&str]) -> bool {
        let Some(first) = names.first() else { return true };
        self.worlds_of(first).iter().any(|w| names.iter().all(|n| w.same_file(first, n)))
    }

    /// `None` if `seen` is a state `name` may be in, else what is wrong:
    /// `lost` (an acknowledged content is gone or replaced by an older one),
    /// `resurrected` (a deleted or renamed-away name is back), `corrupt`
    /// (content no upload ever wrote).
    pub fn classify(&self, name: &str, seen: &Seen) -> Option<&'static str> {
        let possible = self.possible(name);
        if possible.contains(seen) {
            return None;
        }
        Some(match seen {
            Seen::Absent => "lost",
            Seen::Present(x) if !self.is_known(x) => "corrupt",
            Seen::Present(_) if possible.iter().all(|p| *p == Seen::Absent) => "resurrected",
            Seen::Present(_) => "lost",
        })
    }

    pub fn show_possible(&self, name: &str) -> String {
        let v: Vec<String> = self.possible(name).iter().map(|s| s.to_string()).collect();
        format!("{{{}}}", v.join(", "))
    }

    /// A violation about `name` with the history of its client's operations
    /// that touched it, a directory above it, or a name it was linked with,
    /// and its failed writes.
    pub fn violation(&self, history: &[Op], kind: &'static str, name: &str, what: String) -> Violation {
        let ops = self.ops.get(&client_of(name)).map(Vec::as_slice).unwrap_or_default();
        let mut related: BTreeSet<&str> = [name].into();
        for &i in ops {
            if let Action::Link { from, to } = &history[i].action {
                if related.contains(from.as_str()) || related.contains(to.as_str()) {
                    related.extend([from.as_str(), to.as_str()]);
                }
            }
        }
        let lines = ops
            .iter()
            .filter(|&&i| {
                let o = &history[i];
                // Failed writes too: one may have taken effect late, on a
                // file that had another name then.
                (o.action.is_write() && o.outcome != Outcome::Ok) || related.iter().any(|n| o.action.touches(n))
            })
            .map(|&i| history[i].to_string())
            .collect();
        Violation { kind, subject: name.to_string(), what, history: lines }
    }
}

/// Checks one view of the final state (`label`: "cli", "mount" …): every
/// name reads as a state it may be in. Returns the names with a problem.
pub fn check_view(
    m: &Model,
    history: &[Op],
    label: &str,
    seen: &BTreeMap<String, Result<Seen, String>>,
    out: &mut Vec<Violation>,
) -> BTreeMap<String, &'static str> {
    let mut bad = BTreeMap::new();
    for (name, s) in seen {
        let s = match s {
            Err(e) => {
                // A name that may be absent and cannot be read is no loss
                // unless it must exist.
                let must_exist = !m.possible(name).contains(&Seen::Absent);
                let kind = if must_exist { "lost" } else { "unreadable" };
                let what =
                    format!("{label} view: cannot read it after the heal ({e}); may be {}", m.show_possible(name));
                out.push(m.violation(history, kind, name, what));
                bad.insert(name.clone(), kind);
                continue;
            }
            Ok(s) => s,
        };
        if let Some(kind) = m.classify(name, s) {
            let what = format!("{label} view: reads {s} after the heal, but may only be {}", m.show_possible(name));
            out.push(m.violation(history, kind, name, what));
            bad.insert(name.clone(), kind);
        }
    }
    // Atomic renames: one upload's content lives under one name at most,
    // unless those names may be links of one file.
    let mut holders: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, s) in seen {
        if let Ok(Seen::Present(sha)) = s {
            holders.entry(sha).or_default().push(name);
        }
    }
    for (sha, names) in holders.into_iter().filter(|(_, n)| n.len() > 1 && !m.may_be_one_file(n)) {
        let what = format!("{label} view: content {} is under {} names: {names:?}", &sha[..12], names.len());
        let mut v = m.violation(history, "non-atomic-rename", names[0], what);
        for n in &names[1..] {
            v.history.extend(m.violation(history, "", n, String::new()).history);
        }
        out.push(v);
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(seq: u32, action: Action, outcome: Outcome, seen: Option<Seen>) -> Op {
        Op { client: 1, seq, action, start_ms: 0, end_ms: 0, outcome, error: String::new(), seen }
    }

    fn up(seq: u32, name: &str, sha: &str, outcome: Outcome) -> Op {
        op(seq, Action::Upload { name: name.into(), sha: sha.into(), size: 1 }, outcome, None)
    }

    fn p(sha: &str) -> Seen {
        Seen::Present(sha.into())
    }

    #[test]
    fn an_acknowledged_write_replaces_the_states_and_a_failed_one_adds_to_them() {
        let h = vec![
            up(0, "c1/d0/a", "x".repeat(64).as_str(), Outcome::Ok),
            up(1, "c1/d0/a", "y".repeat(64).as_str(), Outcome::Failed),
            op(2, Action::Delete { name: "c1/d0/b".into() }, Outcome::Hung, None),
        ];
        let mut v = Vec::new();
        let m = Model::replay(&h, &mut v);
        assert!(v.is_empty());
        assert_eq!(m.possible("c1/d0/a"), [p(&"x".repeat(64)), p(&"y".repeat(64))].into());
        assert_eq!(m.possible("c1/d0/b"), [Seen::Absent].into());
        assert_eq!(m.classify("c1/d0/a", &Seen::Absent), Some("lost"));
        assert_eq!(m.classify("c1/d0/a", &p(&"z".repeat(64))), Some("corrupt"));
    }

    #[test]
    fn a_rename_moves_the_content_and_a_deleted_name_that_returns_is_resurrected() {
        let x = "x".repeat(64);
        let h = vec![
            up(0, "c1/d0/a", &x, Outcome::Ok),
            op(1, Action::Rename { from: "c1/d0/a".into(), to: "c1/d0/b".into() }, Outcome::Ok, None),
            op(2, Action::Read { name: "c1/d0/a".into() }, Outcome::Ok, Some(p(&x))),
        ];
        let mut v = Vec::new();
        let m = Model::replay(&h, &mut v);
        assert_eq!(m.possible("c1/d0/b"), [p(&x)].into());
        assert_eq!(m.possible("c1/d0/a"), [Seen::Absent].into());
        assert_eq!(v.len(), 1, "the read of a after the rename is stale: {v:?}");
        assert_eq!(v[0].kind, "stale-read");
        assert_eq!(m.classify("c1/d0/a", &p(&x)), Some("resurrected"));
    }

    #[test]
    fn a_content_under_two_names_is_a_non_atomic_rename() {
        let x = "x".repeat(64);
        let h = vec![
            up(0, "c1/d0/a", &x, Outcome::Ok),
            op(1, Action::Rename { from: "c1/d0/a".into(), to: "c1/d0/b".into() }, Outcome::Failed, None),
        ];
        let mut v = Vec::new();
        let m = Model::replay(&h, &mut v);
        let seen: BTreeMap<String, Result<Seen, String>> =
            [("c1/d0/a".to_string(), Ok(p(&x))), ("c1/d0/b".to_string(), Ok(p(&x)))].into();
        let bad = check_view(&m, &h, "cli", &seen, &mut v);
        assert!(bad.is_empty(), "each name alone may hold x after a failed rename");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].kind, "non-atomic-rename");
    }

    #[test]
    fn a_write_through_a_link_shows_through_the_other_name_and_a_lost_one_is_found() {
        let (x, y) = ("x".repeat(64), "y".repeat(64));
        let h = vec![
            up(0, "c1/d0/a", &x, Outcome::Ok),
            op(1, Action::Link { from: "c1/d0/a".into(), to: "c1/d0/b".into() }, Outcome::Ok, None),
            up(2, "c1/d0/b", &y, Outcome::Ok),
            op(3, Action::Read { name: "c1/d0/a".into() }, Outcome::Ok, Some(p(&x))),
        ];
        let mut v = Vec::new();
        let m = Model::replay(&h, &mut v);
        assert_eq!(m.possible("c1/d0/a"), [p(&y)].into(), "one file, two names");
        assert_eq!(v.len(), 1, "reading the old content through the other name is stale: {v:?}");
        assert_eq!(v[0].kind, "stale-read");
        assert!(v[0].history.iter().any(|l| l.contains("upload c1/d0/b")), "the history shows the linked name");
        let seen: BTreeMap<String, Result<Seen, String>> =
            [("c1/d0/a".to_string(), Ok(p(&y))), ("c1/d0/b".to_string(), Ok(p(&y)))].into();
        let mut v = Vec::new();
        assert!(check_view(&m, &h, "cli", &seen, &mut v).is_empty() && v.is_empty(), "links share content: {v:?}");
    }

    #[test]
    fn a_directory_rename_moves_the_names_below_it_and_a_file_left_behind_is_resurrected() {
        let x = "x".repeat(64);
        let h = vec![
            up(0, "c1/d0/a", &x, Outcome::Ok),
            op(1, Action::RenameDir { from: "c1/d0".into(), to: "c1/d1".into() }, Outcome::Ok, None),
        ];
        let mut v = Vec::new();
        let m = Model::replay(&h, &mut v);
        assert!(v.is_empty());
        assert_eq!(m.possible("c1/d1/a"), [p(&x)].into());
        assert!(m.names().any(|n| n == "c1/d1/a"), "the final views read the moved name");
        assert_eq!(m.classify("c1/d0/a", &p(&x)), Some("resurrected"));
        assert_eq!(m.classify("c1/d1/a", &Seen::Absent), Some("lost"));
    }

    #[test]
    fn an_acknowledged_write_that_cannot_succeed_is_flagged() {
        let h = vec![op(0, Action::Link { from: "c1/d0/a".into(), to: "c1/d0/b".into() }, Outcome::Ok, None)];
        let mut v = Vec::new();
        Model::replay(&h, &mut v);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].kind, "phantom-write");
    }

    #[test]
    fn a_failed_rename_may_take_effect_after_later_writes_but_not_after_its_time_is_up() {
        let (x, y) = ("x".repeat(64), "y".repeat(64));
        let at = |seq: u32, ms: i64, mut o: Op| {
            (o.seq, o.start_ms, o.end_ms) = (seq, ms, ms + 100);
            o
        };
        let rename = Action::Rename { from: "c1/d0/a".into(), to: "c1/d0/b".into() };
        let h = vec![
            at(0, 0, up(0, "c1/d0/a", &x, Outcome::Ok)),
            at(1, 1000, op(1, rename, Outcome::Failed, None)),
            at(2, 2000, up(2, "c1/d0/a", &y, Outcome::Ok)),
        ];
        let mut v = Vec::new();
        let m = Model::replay(&h, &mut v);
        assert!(v.is_empty(), "{v:?}");
        assert!(m.possible("c1/d0/b").contains(&p(&y)), "the rename landed after the overwrite of its file");
        assert!(m.possible("c1/d0/a").contains(&Seen::Absent));
        let mut late = h.clone();
        late[2] = at(2, 2000 + LATE_MS, up(2, "c1/d0/a", &y, Outcome::Ok));
        let m = Model::replay(&late, &mut v);
        assert_eq!(m.possible("c1/d0/a"), [p(&y)].into(), "too late to land: {v:?}");
    }

    #[test]
    fn a_refused_command_took_no_effect_and_never_will() {
        let x = "x".repeat(64);
        let mut rmdir = op(1, Action::RemoveDir { name: "c1/d0".into() }, Outcome::Failed, None);
        rmdir.error = "scs: directory not empty: d0".into();
        let h = vec![up(0, "c1/d0/a", &x, Outcome::Ok), rmdir.clone()];
        let mut v = Vec::new();
        let m = Model::replay(&h, &mut v);
        assert_eq!(m.possible("c1/d0/a"), [p(&x)].into());
        assert_eq!(m.worlds[&1].len(), 1, "no pending landing either");
        assert!(is_refusal(&rmdir.error) && !is_refusal("scs: cluster unavailable: no leader reachable within 5s"));
    }

    #[test]
    fn the_read_after_a_restore_says_which_removal_came_back_and_a_wrong_one_is_lost() {
        let (x, y) = ("x".repeat(64), "y".repeat(64));
        let rm = |seq| op(seq, Action::Delete { name: "c1/d0/a".into() }, Outcome::Ok, None);
        let restore = |seq, seen: Option<Seen>| op(seq, Action::Restore { name: "c1/d0/a".into() }, Outcome::Ok, seen);
        let mut h = vec![up(0, "c1/d0/a", &x, Outcome::Ok), rm(1), up(2, "c1/d0/a", &y, Outcome::Ok), rm(3)];
        let mut v = Vec::new();
        let unread = Model::replay(&[h.clone(), vec![restore(4, None)]].concat(), &mut v);
        assert_eq!(unread.possible("c1/d0/a"), [p(&x), p(&y)].into(), "the last removal, or an earlier one");
        h.push(restore(4, Some(p(&y))));
        let m = Model::replay(&h, &mut v);
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(m.possible("c1/d0/a"), [p(&y)].into());
        assert_eq!(m.worlds[&1].len(), 1, "one state left to follow");
        h[4] = restore(4, Some(Seen::Absent));
        Model::replay(&h, &mut v);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].kind, "lost");
    }
}
