//! What the node measures about itself: latency histograms of requests by
//! kind, the journal's `fdatasync`, the index transaction after it, a
//! batch's whole commit, and a leader's commit split in its own commit and
//! the wait for a majority; and the process's memory and tasks. Written as
//! Prometheus text for [`crate::net::http`], which adds the node's status.
//!
//! The histograms are process-wide (one node per process) and lock-free:
//! recording one costs a few atomic adds. This module depends on nothing
//! of the node's, so the store and the leader can record into it.
//! [`ClientWork`] tells the background work whether clients are waiting.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use scs_common::http::{counter, gauge, resident_bytes};

/// Upper bounds of the histogram buckets, in microseconds (a last bucket,
/// `+Inf`, takes the rest).
const BOUNDS_US: [u64; 16] =
    [50, 100, 200, 300, 500, 750, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000];
const BUCKETS: usize = BOUNDS_US.len() + 1;

/// A latency histogram with Prometheus' cumulative buckets.
pub struct Histogram {
    counts: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram { counts: [const { AtomicU64::new(0) }; BUCKETS], sum_ns: AtomicU64::new(0) }
    }

    pub fn record(&self, took: Duration) {
        let us = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = BOUNDS_US.iter().position(|&b| us <= b).unwrap_or(BOUNDS_US.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(took.as_nanos().min(u128::from(u64::MAX)) as u64, Ordering::Relaxed);
    }

    /// Records the time since `started`.
    pub fn since(&self, started: Instant) {
        self.record(started.elapsed());
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Appends the histogram's lines, `labels` (like `kind="chmod"`, or
    /// empty) on each.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let le = BOUNDS_US.get(i).map_or("+Inf".to_string(), |&us| format!("{}", us as f64 / 1e6));
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
        }
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

/// The request kinds counted apart (the names of
/// [`crate::net::handler::request_name`]); anything else counts as "other",
/// the last.
const REQUEST_KINDS: [&str; 40] = [
    "upload",
    "upload-many",
    "download",
    "read",
    "read-blob",
    "resolve",
    "lookup",
    "getattr",
    "readdir",
    "make",
    "link",
    "remove",
    "rename",
    "setattr",
    "setxattr",
    "removexattr",
    "reserve-inodes",
    "trash-list",
    "trash-restore",
    "trash-purge",
    "versions",
    "restore-version",
    "status",
    "change-members",
    "report-corrupt",
    "digests",
    "bucket-versions",
    "records-for",
    "offer",
    "purge",
    "replicate",
    "apply",
    "holds",
    "pull",
    "lock",
    "unlock",
    "test-lock",
    "keep-alive",
    "reclaim",
    "other",
];

/// Every latency the node records.
pub struct Metrics {
    requests: [Histogram; REQUEST_KINDS.len()],
    /// One `fdatasync` of the journal (shared by the batches of a group commit).
    pub journal_sync: Histogram,
    /// The index transaction that takes a journaled batch (no sync).
    pub index_apply: Histogram,
    /// A batch's whole commit on this node: journal, index and the wait
    /// for the sync.
    pub store_commit: Histogram,
    /// A leader's commit of a batch here (journal and index).
    pub leader_local: Histogram,
    /// A leader's wait, after its own commit, for a majority.
    pub leader_majority: Histogram,
    /// Records received in pulls (catching up), new here or not.
    pub records_pulled: AtomicU64,
}

pub static METRICS: Metrics = Metrics {
    requests: [const { Histogram::new() }; REQUEST_KINDS.len()],
    journal_sync: Histogram::new(),
    index_apply: Histogram::new(),
    store_commit: Histogram::new(),
    leader_local: Histogram::new(),
    leader_majority: Histogram::new(),
    records_pulled: AtomicU64::new(0),
};

impl Metrics {
    /// The histogram of requests of kind `name`.
    pub fn request(&self, name: &str) -> &Histogram {
        let i = REQUEST_KINDS.iter().position(|k| *k == name).unwrap_or(REQUEST_KINDS.len() - 1);
        &self.requests[i]
    }

    /// Appends the process's gauges and every histogram, as Prometheus text.
    pub fn render(&self, out: &mut String) {
        gauge(
            out,
            "scs_tasks_alive",
            "Tasks alive in the node's runtime (a count that only grows is a leak).",
            tokio::runtime::Handle::try_current().map_or(0.0, |h| h.metrics().num_alive_tasks() as f64),
        );
        gauge(out, "scs_resident_bytes", "The node's resident memory.", resident_bytes() as f64);
        let m = self;
        counter(
            out,
            "scs_records_pulled_total",
            "Records received from other nodes to catch up (from the leader, or a new leader's from a majority), new here or not.",
            m.records_pulled.load(Ordering::Relaxed),
        );
        let name = "scs_request_seconds";
        let _ =
            writeln!(out, "# HELP {name} Requests served, by kind, from the request to the last byte of the answer.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (kind, h) in REQUEST_KINDS.iter().zip(&m.requests) {
            if h.count() > 0 {
                h.render(out, name, &format!("kind=\"{kind}\""));
            }
        }
        let mut histogram = |name: &str, help: &str, h: &Histogram| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            h.render(out, name, "");
        };
        histogram("scs_journal_fdatasync_seconds", "One fdatasync of the journal.", &m.journal_sync);
        histogram("scs_index_apply_seconds", "The index transaction that takes a journaled batch.", &m.index_apply);
        histogram(
            "scs_store_commit_seconds",
            "A batch's whole commit here: journal write, index transaction, wait for the sync.",
            &m.store_commit,
        );
        histogram("scs_leader_commit_local_seconds", "A leader's commit of a change on its own disk.", &m.leader_local);
        histogram(
            "scs_leader_commit_majority_seconds",
            "A leader's wait, after its own commit, for a majority to commit a change.",
            &m.leader_majority,
        );
    }
}

/// Clients' requests in progress on this node, and when the last one
/// ended: while clients are at work, background work that competes with
/// them for the disks (the rebalancer) slows down.
#[derive(Debug)]
pub struct ClientWork {
    /// The zero of `last_end_ms`.
    since: Instant,
    in_flight: AtomicU64,
    /// When the last request ended, in milliseconds since `since`, plus one
    /// (0: none yet).
    last_end_ms: AtomicU64,
}

impl Default for ClientWork {
    fn default() -> ClientWork {
        ClientWork { since: Instant::now(), in_flight: AtomicU64::new(0), last_end_ms: AtomicU64::new(0) }
    }
}

/// How long after a client's request clients still count as at work: the
/// pause between one request and the next of a client doing many.
pub const CLIENT_QUIET: Duration = Duration::from_millis(250);

/// A client's request in progress; counted until dropped.
pub struct ClientRequest<'a>(&'a ClientWork);

impl Drop for ClientRequest<'_> {
    fn drop(&mut self) {
        let ms = self.0.since.elapsed().as_millis() as u64 + 1;
        self.0.last_end_ms.fetch_max(ms, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ClientWork {
    /// Counts a client's request from now until the guard is dropped.
    pub fn begin(&self) -> ClientRequest<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        ClientRequest(self)
    }

    /// Whether a client's request is in progress, or one ended within
    /// [`CLIENT_QUIET`] of `now`.
    pub fn busy(&self, now: Instant) -> bool {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return true;
        }
        match self.last_end_ms.load(Ordering::Relaxed) {
            0 => false,
            ms => {
                let ended = self.since + Duration::from_millis(ms - 1);
                now.saturating_duration_since(ended) < CLIENT_QUIET
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_puts_each_latency_in_the_first_bucket_that_holds_it() {
        let h = Histogram::new();
        for us in [10, 50, 51, 700, 2_000_000, 9_000_000] {
            h.record(Duration::from_micros(us));
        }
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "kind=\"t\"");
        let count = |le: &str| -> u64 {
            let prefix = format!("x_seconds_bucket{{kind=\"t\",le=\"{le}\"}} ");
            out.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap().parse().unwrap()
        };
        assert_eq!(count("0.00005"), 2);
        assert_eq!(count("0.0001"), 3);
        assert_eq!(count("0.00075"), 4);
        assert_eq!(count("5"), 5);
        assert_eq!(count("+Inf"), 6);
        assert!(out.contains("x_seconds_count{kind=\"t\"} 6\n"), "{out}");
        let sum: f64 = out.lines().find_map(|l| l.strip_prefix("x_seconds_sum{kind=\"t\"} ")).unwrap().parse().unwrap();
        assert!((sum - 11.000811).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn clients_are_at_work_while_a_request_is_in_progress_and_shortly_after() {
        let work = ClientWork::default();
        let start = Instant::now();
        assert!(!work.busy(start), "no request yet");
        let one = work.begin();
        let two = work.begin();
        drop(one);
        assert!(work.busy(start + Duration::from_secs(3600)), "a request still in progress");
        drop(two);
        let ended = Instant::now();
        assert!(work.busy(ended), "just ended");
        assert!(work.busy(ended + CLIENT_QUIET / 2));
        assert!(!work.busy(ended + CLIENT_QUIET + Duration::from_millis(2)), "quiet since");
    }

    #[test]
    fn every_request_kind_has_a_histogram_of_its_own() {
        assert_eq!(METRICS.request("apply") as *const _, &METRICS.requests[31] as *const _);
        assert_eq!(METRICS.request("no such kind") as *const _, &METRICS.requests[39] as *const _);
    }
}
