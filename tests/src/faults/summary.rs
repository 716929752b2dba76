//! What a run prints: a line per seed, the history of a failing seed, and a
//! markdown report over all seeds (counts, faults by kind, unavailability
//! per fault kind).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::nemesis::{FaultEvent, FaultKind};
use super::workload::{Op, Outcome};
use super::{SeedResult, Settings};

/// One line for a seed.
pub fn seed_line(r: &SeedResult) -> String {
    let c = &r.counts;
    let faults: Vec<String> = r
        .faults
        .iter()
        .map(|f| match (f.kind, &f.error) {
            (_, Some(_)) => format!("{}(not injected)", f.kind),
            (FaultKind::Crash, _) => format!("CRASH{:?}", f.targets),
            _ => f.kind.to_string(),
        })
        .collect();
    format!(
        "seed {}: {} ops, {} writes acknowledged ({} restores from the trash, {} of a version), {} failed, {} hung, {} reads; faults [{}]; \
         lost {}, corrupt {}, resurrected {}, stale reads {}, violations {}, warnings {}; {} terms; at target {} after the heal; {:.0?}",
        r.seed,
        c.ops,
        c.acknowledged,
        c.restores,
        c.reverts,
        c.failed,
        c.hung,
        c.reads,
        faults.join(", "),
        c.lost,
        c.corrupt,
        c.resurrected,
        c.stale_reads,
        r.violations.len(),
        r.warnings.len(),
        r.terms,
        r.settle_ms.map_or("NEVER".to_string(), |ms| format!("{:.1} s", ms as f64 / 1000.0)),
        r.wall
    )
}

/// A seed's faults, violations and warnings, readable.
pub fn violations_text(r: &SeedResult) -> String {
    let mut s =
        format!("seed {}: {} violation(s), {} warning(s). Faults:\n", r.seed, r.violations.len(), r.warnings.len());
    for f in &r.faults {
        let _ = writeln!(s, "    {f}");
    }
    for v in &r.violations {
        s += &v.to_string();
    }
    for v in &r.warnings {
        s += &format!("  (warning){}", v.to_string().trim_start_matches(' '));
    }
    s
}

/// Every operation and fault of a seed in time order.
pub fn history_text(ops: &[Op], faults: &[FaultEvent]) -> String {
    let mut lines: Vec<(i64, String)> = ops.iter().map(|o| (o.start_ms, o.to_string())).collect();
    for f in faults {
        lines.push((f.start_ms, format!("NEMESIS {f}")));
    }
    lines.sort_by_key(|(t, _)| *t);
    lines.into_iter().map(|(_, l)| l + "\n").collect()
}

/// The operations of a history [`history_text`] wrote (its faults are
/// skipped): to run the checker again on a kept run.
pub fn parse_history(text: &str) -> Result<Vec<Op>, String> {
    text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("NEMESIS")).map(Op::parse).collect()
}

/// The `q`-quantile (0..=1) of sorted `v`.
fn quantile(v: &[i64], q: f64) -> i64 {
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}

fn secs(ms: i64) -> String {
    format!("{:.2}", ms as f64 / 1000.0)
}

/// The markdown report over `results`.
pub fn report(results: &[SeedResult], s: &Settings, command: &str) -> String {
    let mut out = String::new();
    let seeds: Vec<u64> = results.iter().map(|r| r.seed).collect();
    let _ = writeln!(out, "# Fault suite: {} seed(s)\n", results.len());
    let _ = writeln!(
        out,
        "`{command}` — 5 nodes in network namespaces (replicas 5), {} clients × {} names in {} directories, {:?} of workload \
         per seed ({}), faults one at a time (holds 3-8 s, gaps 1.5-4 s). Seeds: {}.\n",
        s.clients,
        s.names_per_client,
        super::workload::DIRS,
        s.workload,
        match (s.namespace_ops, s.version_restores) {
            (true, true) => "uploads, overwrites, reads, deletes, restores from the trash and of earlier versions, \
                             renames of files and of directories, hard links, rmdir",
            (true, false) => {
                "uploads, overwrites, reads, deletes, restores from the trash, renames of files and of directories, \
                 hard links, rmdir"
            }
            (false, true) => {
                "uploads, overwrites, reads, deletes, restores from the trash and of earlier versions, renames of files"
            }
            (false, false) => "uploads, overwrites, reads, deletes, restores from the trash, renames of files",
        },
        compact(&seeds)
    );
    let sum = |f: fn(&SeedResult) -> usize| results.iter().map(f).sum::<usize>();
    let _ = writeln!(out, "| figure | count |\n|---|---:|");
    let rows: [(&str, usize); 14] = [
        ("operations", sum(|r| r.counts.ops)),
        ("writes acknowledged", sum(|r| r.counts.acknowledged)),
        ("of which restores from the trash", sum(|r| r.counts.restores)),
        ("of which restores of an earlier version", sum(|r| r.counts.reverts)),
        ("writes failed (indeterminate)", sum(|r| r.counts.failed)),
        ("commands hung", sum(|r| r.counts.hung)),
        ("reads acknowledged", sum(|r| r.counts.reads)),
        ("**lost**", sum(|r| r.counts.lost)),
        ("**corrupt**", sum(|r| r.counts.corrupt)),
        ("**resurrected**", sum(|r| r.counts.resurrected)),
        ("**stale reads** (older content after an acknowledged write)", sum(|r| r.counts.stale_reads)),
        ("violations (all kinds)", sum(|r| r.violations.len())),
        ("seeds with a violation", results.iter().filter(|r| !r.violations.is_empty()).count()),
        ("warnings (blobs left over on disk)", sum(|r| r.warnings.len())),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    let terms: usize = sum(|r| r.terms);
    let _ = writeln!(out, "| leader terms | {terms} |\n");

    let mut injected: BTreeMap<FaultKind, (usize, usize)> = BTreeMap::new();
    for f in results.iter().flat_map(|r| &r.faults) {
        let e = injected.entry(f.kind).or_default();
        if f.error.is_none() {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
    let mut unavail: BTreeMap<FaultKind, (Vec<i64>, usize)> = BTreeMap::new();
    for (k, u) in results.iter().flat_map(|r| &r.unavailability) {
        let e = unavail.entry(*k).or_default();
        match u {
            Some(ms) => e.0.push(*ms),
            None => e.1 += 1,
        }
    }
    let _ = writeln!(
        out,
        "Unavailability: time from the fault to the end of the first acknowledged write begun after it \
         (seconds; a write takes about a tenth of a second without faults).\n"
    );
    let _ = writeln!(
        out,
        "| fault | injected | median | p90 | max | no acknowledged write after it |\n|---|---:|---:|---:|---:|---:|"
    );
    for (kind, (n, not)) in &injected {
        let (mut v, none) = unavail.remove(kind).unwrap_or_default();
        v.sort_unstable();
        let n = if *not > 0 { format!("{n} (+{not} not possible)") } else { n.to_string() };
        if v.is_empty() {
            let _ = writeln!(out, "| {kind} | {n} | – | – | – | {none} |");
        } else {
            let _ = writeln!(
                out,
                "| {kind} | {n} | {} | {} | {} | {none} |",
                secs(quantile(&v, 0.5)),
                secs(quantile(&v, 0.9)),
                secs(*v.last().expect("not empty"))
            );
        }
    }
    let mut lat: Vec<i64> = results
        .iter()
        .flat_map(|r| &r.ops)
        .filter(|o| o.action.is_write() && o.outcome == Outcome::Ok)
        .map(|o| o.end_ms - o.start_ms)
        .collect();
    lat.sort_unstable();
    if !lat.is_empty() {
        let _ = writeln!(
            out,
            "\nAcknowledged write latency over all seeds (faults or not): median {} s, p90 {} s, max {} s.",
            secs(quantile(&lat, 0.5)),
            secs(quantile(&lat, 0.9)),
            secs(*lat.last().expect("not empty"))
        );
    }
    let mut settle: Vec<i64> = results.iter().filter_map(|r| r.settle_ms).collect();
    settle.sort_unstable();
    if !settle.is_empty() {
        let _ = writeln!(
            out,
            "From the heal to every file at its target (status; then confirmed on every disk): median {} s, max {} s.",
            secs(quantile(&settle, 0.5)),
            secs(*settle.last().expect("not empty"))
        );
    }
    let failing: Vec<&SeedResult> =
        results.iter().filter(|r| !r.violations.is_empty() || !r.warnings.is_empty()).collect();
    if !failing.is_empty() {
        let _ = writeln!(out, "\n## Violations and warnings\n");
        for r in failing {
            let _ = writeln!(out, "```\n{}```\n", violations_text(r));
        }
    }
    out
}

/// `[1, 2, 3, 5]` → `1-3, 5`.
fn compact(seeds: &[u64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < seeds.len() {
        let mut j = i;
        while j + 1 < seeds.len() && seeds[j + 1] == seeds[j] + 1 {
            j += 1;
        }
        parts.push(if j > i { format!("{}-{}", seeds[i], seeds[j]) } else { seeds[i].to_string() });
        i = j + 1;
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_seed_ranges_read_well() {
        assert_eq!(quantile(&[1, 2, 3, 4, 5], 0.5), 3);
        assert_eq!(quantile(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9), 9);
        assert_eq!(compact(&[1, 2, 3, 5, 7, 8]), "1-3, 5, 7-8");
    }
}
