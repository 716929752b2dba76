//! What the node logs (debug level) say about leaders and acknowledged
//! writes, and the checks on it: one leader acknowledges writes per term, a
//! leader cut off from the majority acknowledges nothing, and no leader of an
//! older term acknowledges a write begun after a newer term's first one.

use std::collections::{BTreeMap, BTreeSet};

use super::check::Violation;
use super::cluster::Clock;
use super::nemesis::FaultEvent;

/// A line of interest in a node log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Said {
    /// `node N: leader of term T`.
    Leads { term: u64 },
    /// `node N: upload "NAME" (…) vT.S to […]`: the leader begins a write.
    Upload { name: String, term: u64, seq: u64 },
    /// `node N: stored "NAME" vT.S on […]`: committed on a majority, acked.
    Stored { name: String, term: u64, seq: u64 },
}

/// A line with its node and time (ms since the cluster started).
#[derive(Clone, Debug)]
pub struct Line {
    pub node: u32,
    pub at_ms: i64,
    pub said: Said,
    pub text: String,
}

/// The lines of interest in one node's log.
pub fn parse(node: u32, text: &str, clock: &Clock) -> Vec<Line> {
    text.lines()
        .filter_map(|l| {
            let said = said(l)?;
            let at_ms = clock.from_unix_ms(timestamp_ms(l)?);
            Some(Line { node, at_ms, said, text: l.to_string() })
        })
        .collect()
}

fn said(line: &str) -> Option<Said> {
    let (_, rest) = line.split_once("] node ")?;
    let (_, msg) = rest.split_once(": ")?;
    if let Some(t) = msg.strip_prefix("leader of term ") {
        return Some(Said::Leads { term: t.trim().parse().ok()? });
    }
    let (verb, rest) = msg.split_once(" \"")?;
    let (name, rest) = rest.split_once('"')?;
    let version = rest.split_whitespace().find(|w| w.starts_with('v') && w.contains('.'))?;
    let (term, seq) = version[1..].split_once('.')?;
    let (term, seq) = (term.parse().ok()?, seq.parse().ok()?);
    let name = name.to_string();
    match verb {
        "upload" => Some(Said::Upload { name, term, seq }),
        "stored" => Some(Said::Stored { name, term, seq }),
        _ => None,
    }
}

/// `[2026-11-24T12:02:05.120Z …` → Unix ms.
pub fn timestamp_ms(line: &str) -> Option<i64> {
    let ts = line.strip_prefix('[')?.split_whitespace().next()?;
    let (date, time) = ts.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, mo, da) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, ms) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (h, mi, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let ms: i64 = format!("{ms:0<3}")[..3].parse().ok()?;
    Some((days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + s) * 1000 + ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Figures from the logs for the report.
#[derive(Clone, Debug, Default)]
pub struct LeaderStats {
    /// Terms in which some node became leader.
    pub terms: usize,
    /// Writes the logs show acknowledged.
    pub stored: usize,
}

/// Runs the leader checks over every node's lines.
pub fn check(lines: &[Line], faults: &[FaultEvent], out: &mut Vec<Violation>) -> LeaderStats {
    let mut stored: Vec<(&Line, String, u64, u64)> = Vec::new();
    let mut begun: BTreeMap<(u32, String, u64, u64), i64> = BTreeMap::new();
    let mut terms = BTreeSet::new();
    for l in lines {
        match &l.said {
            Said::Leads { term } => {
                terms.insert(*term);
            }
            Said::Upload { name, term, seq } => {
                begun.entry((l.node, name.clone(), *term, *seq)).or_insert(l.at_ms);
            }
            Said::Stored { name, term, seq } => stored.push((l, name.clone(), *term, *seq)),
        }
    }
    // One node acknowledges writes per term.
    let mut by_term: BTreeMap<u64, BTreeMap<u32, Vec<&Line>>> = BTreeMap::new();
    for (l, _, term, _) in &stored {
        by_term.entry(*term).or_default().entry(l.node).or_default().push(l);
    }
    for (term, nodes) in &by_term {
        if nodes.len() > 1 {
            let history = nodes.values().flat_map(|ls| ls.iter().take(3).map(|l| l.text.clone())).collect();
            out.push(Violation {
                kind: "two-leaders-in-a-term",
                subject: format!("term {term}"),
                what: format!("nodes {:?} all acknowledged writes in term {term}", nodes.keys().collect::<Vec<_>>()),
                history,
            });
        }
    }
    let start_of = |l: &Line, name: &String, term: u64, seq: u64| {
        begun.get(&(l.node, name.clone(), term, seq)).copied().unwrap_or(l.at_ms)
    };
    // A leader cut off from the majority acknowledges nothing it began
    // after the cut (a short grace for the fault to take hold).
    for f in faults.iter().filter(|f| f.error.is_none() && !f.minority.is_empty()) {
        for (l, name, term, seq) in &stored {
            let began = start_of(l, name, *term, *seq);
            if f.minority.contains(&l.node) && began >= f.start_ms + 200 && l.at_ms <= f.end_ms {
                out.push(Violation {
                    kind: "minority-ack",
                    subject: format!("node {} term {term}", l.node),
                    what: format!(
                        "node {} acknowledged {name} v{term}.{seq} (begun at {:.3} s) while cut off from the majority",
                        l.node,
                        began as f64 / 1000.0
                    ),
                    history: vec![f.to_string(), l.text.clone()],
                });
            }
        }
    }
    // No write of an older term is acknowledged if it began after a newer
    // term had acknowledged one: the majority that took the newer term
    // refuses the older one.
    let mut by_time: Vec<&(&Line, String, u64, u64)> = stored.iter().collect();
    by_time.sort_by_key(|(l, ..)| l.at_ms);
    let mut newest: Vec<(i64, u64, &Line)> = Vec::new();
    for s in &by_time {
        let (l, _, term, _) = s;
        if newest.last().is_none_or(|(_, t, _)| term > t) {
            newest.push((l.at_ms, *term, l));
        }
    }
    for (l, name, term, seq) in &stored {
        let began = start_of(l, name, *term, *seq);
        if let Some((_, t, first)) = newest.iter().rev().find(|(at, t, _)| *at < began - 50 && t > term) {
            out.push(Violation {
                kind: "stale-leader-ack",
                subject: format!("node {} term {term}", l.node),
                what: format!(
                    "node {} acknowledged {name} v{term}.{seq}, begun at {:.3} s, after term {t} had acknowledged writes",
                    l.node,
                    began as f64 / 1000.0
                ),
                history: vec![first.text.clone(), l.text.clone()],
            });
        }
    }
    LeaderStats { terms: terms.len(), stored: stored.len() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_of_interest_are_parsed() {
        let up = r#"[2026-11-24T12:02:05.120Z DEBUG scs_node::leader::upload] node 5: upload "a/b.txt" (Some(5000) bytes) v1.1 to [(n5, "10.0.0.5:7000")]"#;
        let st =
            r#"[2026-11-24T12:02:05.142Z DEBUG scs_node::leader::upload] node 5: stored "a/b.txt" v3.17 on [n1, n2]"#;
        let le = "[2026-11-24T12:02:02.593Z INFO  scs_node::cluster::election] node 5: leader of term 1";
        assert_eq!(said(up), Some(Said::Upload { name: "a/b.txt".into(), term: 1, seq: 1 }));
        assert_eq!(said(st), Some(Said::Stored { name: "a/b.txt".into(), term: 3, seq: 17 }));
        assert_eq!(said(le), Some(Said::Leads { term: 1 }));
        assert_eq!(said("[2026-11-24T12:02:02.593Z INFO  x] node 5: leading term 1; catching up"), None);
        assert_eq!(timestamp_ms("[1970-01-02T00:00:01.5Z INFO"), Some(86_401_500));
        assert_eq!(timestamp_ms(st).map(|t| t % 1000), Some(142));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    fn stored(node: u32, at_ms: i64, term: u64, seq: u64) -> Line {
        Line { node, at_ms, said: Said::Stored { name: "n".into(), term, seq }, text: format!("n{node} t{term}") }
    }

    #[test]
    fn two_nodes_storing_in_one_term_and_an_older_term_after_a_newer_are_violations() {
        let mut v = Vec::new();
        check(&[stored(5, 100, 2, 1), stored(4, 200, 2, 2)], &[], &mut v);
        assert_eq!(v.iter().map(|v| v.kind).collect::<Vec<_>>(), ["two-leaders-in-a-term"]);
        let mut v = Vec::new();
        check(&[stored(4, 100, 3, 1), stored(5, 1000, 2, 9)], &[], &mut v);
        assert_eq!(v.iter().map(|v| v.kind).collect::<Vec<_>>(), ["stale-leader-ack"]);
        let mut v = Vec::new();
        check(&[stored(5, 100, 2, 1), stored(4, 1000, 3, 1), stored(4, 1100, 3, 2)], &[], &mut v);
        assert!(v.is_empty(), "{v:?}");
    }
}
