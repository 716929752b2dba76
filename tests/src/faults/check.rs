//! The history checker: replays each name's operations into the set of
//! states the name may be in, flags reads and final views outside that set,
//! and checks what is on every node's disk against the final state.
//!
//! A failed or hung write may or may not have taken effect, so it adds its
//! result to the possible states; an acknowledged write replaces them. A read
//! never narrows the set (a failed write may still land later), it is only
//! checked against it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::workload::{Action, Op, Outcome, Seen};

/// Kinds reported without failing the run (unless it is strict): disk
/// hygiene, not a promise a user sees broken.
pub const WARNING_KINDS: [&str; 1] = ["stray-blob"];

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

/// What each name may hold after the history, and which operations touched it.
#[derive(Debug, Default)]
pub struct Model {
    names: BTreeMap<String, NameState>,
    /// Every content ever uploaded: sha → the name it was uploaded to.
    uploaded: BTreeMap<String, String>,
}

#[derive(Debug)]
struct NameState {
    possible: BTreeSet<Seen>,
    ops: Vec<usize>,
}

impl Default for NameState {
    fn default() -> NameState {
        NameState { possible: [Seen::Absent].into(), ops: Vec::new() }
    }
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
            for n in op.action.names() {
                m.names.entry(n.to_string()).or_default().ops.push(i);
            }
            let acked = op.outcome == Outcome::Ok;
            match &op.action {
                Action::Upload { name, sha, .. } => m.write(name, Seen::Present(sha.clone()), acked),
                Action::Delete { name } => m.write(name, Seen::Absent, acked),
                Action::Rename { from, to } => {
                    let moved: BTreeSet<Seen> =
                        m.possible(from).iter().filter(|s| matches!(s, Seen::Present(_))).cloned().collect();
                    if acked && moved.is_empty() {
                        out.push(m.violation(
                            history,
                            "phantom-rename",
                            from,
                            format!("a rename of {from} was acknowledged, but {from} cannot exist"),
                        ));
                    }
                    let to_state = m.names.entry(to.clone()).or_default();
                    if acked {
                        to_state.possible = moved;
                    } else {
                        to_state.possible.extend(moved);
                    }
                    m.write(from, Seen::Absent, acked);
                }
                Action::Read { name } => {
                    if let Some(seen) = &op.seen {
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
                    }
                }
            }
        }
        m
    }

    fn write(&mut self, name: &str, state: Seen, acked: bool) {
        let s = self.names.entry(name.to_string()).or_default();
        if acked {
            s.possible = [state].into();
        } else {
            s.possible.insert(state);
        }
    }

    /// The states `name` may be in.
    pub fn possible(&self, name: &str) -> BTreeSet<Seen> {
        self.names.get(name).map(|s| s.possible.clone()).unwrap_or_else(|| [Seen::Absent].into())
    }

    /// Every name the history touched.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.names.keys()
    }

    /// Whether `sha` is the content of some upload.
    pub fn is_known(&self, sha: &str) -> bool {
        self.uploaded.contains_key(sha)
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

    /// A violation about `name` with the history of the name.
    pub fn violation(&self, history: &[Op], kind: &'static str, name: &str, what: String) -> Violation {
        let lines =
            self.names.get(name).map(|s| s.ops.iter().map(|&i| history[i].to_string()).collect()).unwrap_or_default();
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
    // Atomic renames: one upload's content lives under one name at most.
    let mut holders: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, s) in seen {
        if let Ok(Seen::Present(sha)) = s {
            holders.entry(sha).or_default().push(name);
        }
    }
    for (sha, names) in holders.into_iter().filter(|(_, n)| n.len() > 1) {
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
            up(0, "a", "x".repeat(64).as_str(), Outcome::Ok),
            up(1, "a", "y".repeat(64).as_str(), Outcome::Failed),
            op(2, Action::Delete { name: "b".into() }, Outcome::Hung, None),
        ];
        let mut v = Vec::new();
        let m = Model::replay(&h, &mut v);
        assert!(v.is_empty());
        assert_eq!(m.possible("a"), [p(&"x".repeat(64)), p(&"y".repeat(64))].into());
        assert_eq!(m.possible("b"), [Seen::Absent].into());
        assert_eq!(m.classify("a", &Seen::Absent), Some("lost"));
        assert_eq!(m.classify("a", &p(&"z".repeat(64))), Some("corrupt"));
    }

    #[test]
    fn a_rename_moves_the_content_and_a_deleted_name_that_returns_is_resurrected() {
        let x = "x".repeat(64);
        let h = vec![
            up(0, "a", &x, Outcome::Ok),
            op(1, Action::Rename { from: "a".into(), to: "b".into() }, Outcome::Ok, None),
            op(2, Action::Read { name: "a".into() }, Outcome::Ok, Some(p(&x))),
        ];
        let mut v = Vec::new();
        let m = Model::replay(&h, &mut v);
        assert_eq!(m.possible("b"), [p(&x)].into());
        assert_eq!(m.possible("a"), [Seen::Absent].into());
        assert_eq!(v.len(), 1, "the read of a after the rename is stale: {v:?}");
        assert_eq!(v[0].kind, "stale-read");
        assert_eq!(m.classify("a", &p(&x)), Some("resurrected"));
    }

    #[test]
    fn a_content_under_two_names_is_a_non_atomic_rename() {
        let x = "x".repeat(64);
        let h = vec![
            up(0, "a", &x, Outcome::Ok),
            op(1, Action::Rename { from: "a".into(), to: "b".into() }, Outcome::Failed, None),
        ];
        let mut v = Vec::new();
        let m = Model::replay(&h, &mut v);
        let seen: BTreeMap<String, Result<Seen, String>> =
            [("a".to_string(), Ok(p(&x))), ("b".to_string(), Ok(p(&x)))].into();
        let bad = check_view(&m, &h, "cli", &seen, &mut v);
        assert!(bad.is_empty(), "each name alone may hold x after a failed rename");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].kind, "non-atomic-rename");
    }
}
