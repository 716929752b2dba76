//! The HTTP endpoint of `metrics_listen` (off by default):
//!
//! - `GET /metrics`: Prometheus text (format 0.0.4): the node's role, term,
//!   quorum and members alive, files it holds, disk, copies it still has to
//!   fetch and bad copies found (the figures `scs status` shows), then
//!   [`crate::metrics`].
//! - `GET /health`: 200 when the node is in a cluster with quorum, 503
//!   otherwise.

use std::sync::Arc;

use tokio::net::TcpListener;

use scs_common::http::{self, Page};
use scs_common::proto::gossip::Role;
use scs_common::MemberState;

use crate::metrics::METRICS;
use crate::net::handler;
use crate::node::Node;

/// The whole `/metrics` page of `node`: its status, then the histograms.
pub fn render(node: &Node) -> String {
    let s = handler::status(node);
    let me = s.nodes.iter().find(|n| n.id == s.node);
    let mut out = String::with_capacity(16 << 10);
    let mut gauge = |name: &str, help: &str, value: f64| http::gauge(&mut out, name, help, value);
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
    gauge(
        "scs_members_draining",
        "Members draining (scs node drain): their copies are being made on the others.",
        s.nodes.iter().filter(|n| n.state == MemberState::Draining).count() as f64,
    );
    gauge(
        "scs_candidates",
        "Nodes heard with the cluster key that are not members (see scs status).",
        s.candidates.len() as f64,
    );
    gauge("scs_files", "Files whose content this node holds.", me.map_or(0.0, |n| n.files as f64));
    gauge(
        "scs_bytes",
        "Bytes of the files whose content this node holds (counted every few seconds).",
        me.map_or(0.0, |n| n.bytes as f64),
    );
    gauge(
        "scs_disk_free_bytes",
        "Bytes free on the data disk, old content kept for reuse included (it gives way on demand).",
        me.map_or(0.0, |n| n.disk_free as f64),
    );
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
        "scs_moving_files",
        "Copies still to move off draining members or to emptier ones (the leader's rebalance backlog).",
        s.moving.files as f64,
    );
    gauge("scs_moving_bytes", "Bytes of the copies still to move.", s.moving.bytes as f64);
    METRICS.render(&mut out);
    out
}

/// Serves `/metrics` and `/health` on `listener` until the node shuts down.
pub async fn serve(node: Arc<Node>, listener: TcpListener) {
    let stop = node.shutdown().clone();
    http::serve(listener, async move { stop.cancelled().await }, move |path| route(&node, path)).await;
}

fn route(node: &Node, path: &str) -> Option<Page> {
    match path {
        "/metrics" => Some(Page::ok(http::PROMETHEUS, render(node))),
        "/health" => {
            let s = handler::status(node);
            Some(if s.quorum {
                Page::ok(http::TEXT, format!("ok: node {} in term {} with quorum\n", s.node, s.term))
            } else {
                Page::unavailable(format!("no quorum: node {}\n", s.node))
            })
        }
        _ => None,
    }
}
