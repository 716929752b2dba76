//! The HTTP endpoint of `metrics_listen` (off by default):
//!
//! - `GET /metrics`: Prometheus text (format 0.0.4): the node's role, term,
//!   quorum and members alive, files it holds, disk, copies it still has to
//!   fetch and bad copies found (the figures `scs status` shows), then
//!   [`crate::metrics`].
//! - `GET /health`: 200 when the node is in a cluster with quorum, 503
//!   otherwise.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use scs_common::proto::gossip::Role;

use crate::metrics::{self, METRICS};
use crate::net::handler;
use crate::node::Node;

/// The whole `/metrics` page of `node`: its status, then the histograms.
pub fn render(node: &Node) -> String {
    let s = handler::status(node);
    let me = s.nodes.iter().find(|n| n.id == s.node);
    let mut out = String::with_capacity(16 << 10);
    let mut gauge = |name: &str, help: &str, value: f64| metrics::gauge(&mut out, name, help, value);
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
    METRICS.render(&mut out);
    out
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
