//! What a mount counts for `--metrics-listen` (see [`super::report`]):
//! bumped where things happen, read when the page is rendered.

use std::sync::atomic::AtomicU64;

/// Requests answered EIO because the cluster failed them or could not be
/// reached (the figure `scs_mount_io_errors_total` shows).
pub static IO_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Counts of what this mount did since it started.
#[derive(Default)]
pub struct Counts {
    /// Files stored on the cluster (closed, or written back and sent up).
    pub stored: AtomicU64,
    /// Written-back files the cluster refused for good (kept in `unsent/`).
    pub refused: AtomicU64,
}
