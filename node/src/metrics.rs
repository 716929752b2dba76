//! What the node measures about itself, and the HTTP endpoint that serves
//! it (`metrics_listen`, off by default).
//!
//! - `GET /metrics`: Prometheus text (format 0.0.4): the node's role, term,
//!   quorum and members alive, files and bytes it holds, copies it still has
//!   to fetch and bad copies found (the figures `scs status` shows), and
//!   latency histograms: requests by kind, the journal's `fdatasync`, the
//!   index commit after it, and a leader's commit split in its own commit
//!   and the wait for a majority.
//! - `GET /health`: 200 when the node is in a cluster with quorum, 503
//!   otherwise.
//!
//! The histograms are process-wide (one node per process) and lock-free:
//! recording one costs a few atomic adds.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use scs_common::proto::gossip::Role;

use crate::net::handler;
use crate::node::Node;

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
/// [`handler::request_name`]); anything else counts as "other".
const REQUEST_KINDS: [&str; 32] = [
    "upload",
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
    "status",
    "report-corrupt",
    "digests",
    "bucket-versions",
    "records-for",
    "offer",
    "purge",
    "replicate",
    "apply",
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
}

pub static METRICS: Metrics = Metrics {
    requests: [const { Histogram::new() }; REQUEST_KINDS.len()],
    journal_sync: Histogram::new(),
    index_apply: Histogram::new(),
    store_commit: Histogram::new(),
    leader_local: Histogram::new(),
    leader_majority: Histogram::new(),
};

impl Metrics {
    /// The histogram of requests of kind `name`.
    pub fn request(&self, name: &str) -> &Histogram {
        let i = REQUEST_KINDS.iter().position(|k| *k == name).unwrap_or(REQUEST_KINDS.len() - 1);
        &self.requests[i]
    }
}

/// The whole `/metrics` page of `node`: its status, then the histograms.
pub fn render(node: &Node) -> String {
    let s = handler::status(node);
    let me = s.nodes.iter().find(|n| n.id == s.node);
    let mut out = String::with_capacity(16 << 10);
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    };
    let role = me.and_then(|n| n.role);
    gauge("scs_node_id", "This node's id.", f64::from(s.node.0));
    gauge("scs_leader", "1 when this node leads the cluster.", f64::from(u8::from(role == Some(Role::Leader))));
    gauge("scs_term", "The election term this node is in.", s.term.0 as f64);
    gauge("scs_quorum", "1 when a leader with a quorum serves the cluster.", f64::from(u8::from(s.quorum)));
    gauge("scs_cluster_size", "Members of the cluster.", f64::from(s.cluster_size));
    gauge(
        "scs_members_alive",
        "Members this node hears (itself included).",
        s.nodes.iter().filter(|n| n.alive).count() as f64,
    );
    gauge("scs_files", "Files whose content this node holds.", me.map_or(0.0, |n| n.files as f64));
    gauge("scs_disk_free_bytes", "Bytes free on the data disk.", me.map_or(0.0, |n| n.disk_free as f64));
    gauge("scs_disk_total_bytes", "Bytes in all on the data disk.", me.map_or(0.0, |n| n.disk_total as f64));
    gauge(
        "scs_wanted_copies",
        "Copies this node should hold and has yet to fetch (its repair backlog).",
        me.map_or(0.0, |n| n.wanted as f64),
    );
    gauge("scs_corrupt_copies", "Bad copies found here since the node started.", me.map_or(0.0, |n| n.corrupt as f64));
    gauge(
        "scs_under_replicated_files",
        "Files with fewer copies than the replica target (the leader's last count).",
        s.under_replicated as f64,
    );

    gauge(
        "scs_tasks_alive",
        "Tasks alive in the node's runtime (a count that only grows is a leak).",
        tokio::runtime::Handle::try_current().map_or(0.0, |h| h.metrics().num_alive_tasks() as f64),
    );
    gauge("scs_resident_bytes", "The node's resident memory.", resident_bytes() as f64);

    let m = &METRICS;
    let name = "scs_request_seconds";
    let _ = writeln!(out, "# HELP {name} Requests served, by kind, from the request to the last byte of the answer.");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (kind, h) in REQUEST_KINDS.iter().zip(&m.requests) {
        if h.count() > 0 {
            h.render(&mut out, name, &format!("kind=\"{kind}\""));
        }
    }
    let mut histogram = |name: &str, help: &str, h: &Histogram| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        h.render(&mut out, name, "");
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
    out
}

/// The process's resident memory, from /proc (0 where there is none).
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Requests served at once; more wait for a slot.
const MAX_SCRAPES: usize = 8;
/// How long a scraper may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a request read: its first line is all that counts.
const MAX_REQUEST: usize = 8 << 10;

/// Serves `/metrics` and `/health` on `listener` until the node shuts down.
pub async fn serve(node: Arc<Node>, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let (stream, _) = tokio::select! {
            _ = node.shutdown().cancelled() => return,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    log::warn!("node {}: metrics accept failed: {e}", node.me());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let node = node.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = answer(&node, stream).await {
                log::debug!("node {}: metrics request: {e}", node.me());
            }
        });
    }
}

/// Reads one HTTP request and answers it; the connection then closes.
async fn answer(node: &Node, mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return Ok(());
    }
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, kind, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render(node)),
        ("GET" | "HEAD", "/health") => {
            let s = handler::status(node);
            if s.quorum {
                ("200 OK", "text/plain; charset=utf-8", format!("ok: node {} in term {} with quorum\n", s.node, s.term))
            } else {
                ("503 Service Unavailable", "text/plain; charset=utf-8", format!("no quorum: node {}\n", s.node))
            }
        }
        ("GET" | "HEAD", _) => ("404 Not Found", "text/plain; charset=utf-8", "try /metrics or /health\n".into()),
        _ => ("405 Method Not Allowed", "text/plain; charset=utf-8", "only GET\n".into()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
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
    fn every_request_kind_has_a_histogram_of_its_own() {
        assert_eq!(METRICS.request("apply") as *const _, &METRICS.requests[24] as *const _);
        assert_eq!(METRICS.request("no such kind") as *const _, &METRICS.requests[31] as *const _);
    }
}
