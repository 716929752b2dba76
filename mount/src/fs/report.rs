//! What `scs-mount --metrics-listen` serves: `/metrics`, Prometheus text
//! of this mount's side (write-back uploads waiting, files stored, uploads
//! refused, requests answered EIO, the content cache), and `/health`, 200
//! while the cluster answers with a quorum.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use scs_common::http::{self, Page};

use super::counts::IO_ERRORS;
use super::lock;
use super::ops::Core;

/// How long `/health` waits for the cluster's status.
const HEALTH_WAIT: Duration = Duration::from_secs(3);

/// The answer to `path`, or `None` (404).
pub fn route(core: &Core, path: &str) -> Option<Page> {
    match path {
        "/metrics" => Some(Page::ok(http::PROMETHEUS, render(core))),
        "/health" => Some(match core.cluster.status_within(HEALTH_WAIT) {
            Some(s) if s.quorum => Page::ok(http::TEXT, format!("ok: the cluster answers, term {}\n", s.term)),
            Some(_) => Page::unavailable("the cluster has no quorum\n".into()),
            None => Page::unavailable("the cluster does not answer\n".into()),
        }),
        _ => None,
    }
}

/// The whole `/metrics` page.
pub fn render(core: &Core) -> String {
    let mut out = String::with_capacity(2048);
    let staged = lock(&core.handles).all_staged().len();
    let gauge = |out: &mut String, name: &str, help: &str, value: f64| http::gauge(out, name, help, value);
    gauge(
        &mut out,
        "scs_mount_uploads_pending",
        "Written-back files closed here and not on the cluster yet (waiting or going up).",
        core.queue.len() as f64,
    );
    gauge(&mut out, "scs_mount_files_open_for_writing", "Files with a staging copy here.", staged as f64);
    gauge(&mut out, "scs_mount_cache_bytes", "Bytes of file contents cached here.", core.content.used() as f64);
    gauge(&mut out, "scs_mount_resident_bytes", "The mount's resident memory.", http::resident_bytes() as f64);
    let counter = |out: &mut String, name: &str, help: &str, value: &AtomicU64| {
        http::counter(out, name, help, value.load(Ordering::Relaxed));
    };
    counter(
        &mut out,
        "scs_mount_files_stored_total",
        "Files stored on the cluster from this mount.",
        &core.counts.stored,
    );
    counter(
        &mut out,
        "scs_mount_uploads_refused_total",
        "Written-back files the cluster refused for good (kept in unsent/ in the cache dir).",
        &core.counts.refused,
    );
    counter(
        &mut out,
        "scs_mount_io_errors_total",
        "Requests answered EIO: the cluster failed them or could not be reached.",
        &IO_ERRORS,
    );
    out
}
