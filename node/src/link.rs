//! What the election driver and the rest of the node share, so that
//! neither imports the other: requests to the driver, the leader's lease,
//! and the figures the background loops keep.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use scs_common::config::NodeConfig;
use scs_common::proto::rpc::Moving;
use scs_common::{Members, NodeId, Term};

use crate::metrics::ClientWork;

/// Requests from the rest of the node to the election driver.
#[derive(Debug)]
pub enum Control {
    /// A TCP request from `leader` claiming `term`: may we accept it?
    Claim { term: Term, leader: NodeId, reply: oneshot::Sender<bool> },
    /// Caught up with the current leader: eligible to lead.
    CaughtUp,
    /// As leader of `term`: caught up from a majority, ready to serve.
    Ready { term: Term },
    /// As leader of `term`: a commit failed here after it went out to the
    /// followers, so this node's index may lack what they have. Lead a new
    /// term, whose catch-up from a majority settles it.
    Redeclare { term: Term },
}

/// Figures the background loops keep for heartbeats and `scs status`.
#[derive(Debug, Default)]
pub struct Health {
    /// As leader: files with fewer live copies than `replicas`.
    pub under_replicated: std::sync::atomic::AtomicU64,
    /// As leader: copies still to make elsewhere of files on draining
    /// members, and when that was last counted.
    pub moving: std::sync::Mutex<(Moving, Option<Instant>)>,
    /// Clients' requests here: the rebalancer slows down while they work.
    pub clients: ClientWork,
    /// Beats while the node's runtime runs its tasks (the driver runs on a
    /// thread of its own and must not speak for a node that is stuck).
    pub runtime: Pulse,
}

/// A moment, kept as milliseconds after a fixed origin so that threads
/// set and read it without a lock. It starts at the origin.
#[derive(Debug)]
struct Moment {
    origin: Instant,
    ms: std::sync::atomic::AtomicU64,
}

impl Default for Moment {
    fn default() -> Moment {
        Moment { origin: Instant::now(), ms: std::sync::atomic::AtomicU64::new(0) }
    }
}

impl Moment {
    /// Now, on this moment's scale.
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn get(&self) -> Duration {
        Duration::from_millis(self.ms.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn set(&self, at: Duration) {
        self.ms.store(at.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }
}

/// When something last showed it was alive.
#[derive(Debug, Default)]
pub struct Pulse {
    last: Moment,
}

impl Pulse {
    pub fn beat(&self) {
        self.last.set(self.last.now());
    }

    pub fn silent_for(&self) -> Duration {
        self.last.now().saturating_sub(self.last.get())
    }
}

impl Health {
    /// Records a new count of copies to move; the rate is how fast the
    /// bytes left went down since the last count, smoothed.
    pub fn set_moving(&self, files: u64, bytes: u64, now: Instant) {
        let mut m = self.moving.lock().unwrap_or_else(|p| p.into_inner());
        let (last, at) = &*m;
        let mut rate = last.bytes_per_sec;
        if let Some(at) = at {
            let secs = now.saturating_duration_since(*at).as_secs_f64();
            if secs > 0.0 && bytes <= last.bytes {
                let now_rate = (last.bytes - bytes) as f64 / secs;
                rate = if rate == 0 { now_rate as u64 } else { ((rate as f64 + now_rate) / 2.0) as u64 };
            }
        }
        if files == 0 {
            rate = 0;
        }
        *m = (Moving { files, bytes, bytes_per_sec: rate }, Some(now));
    }

    pub fn moving(&self) -> Moving {
        self.moving.lock().unwrap_or_else(|p| p.into_inner()).0.clone()
    }
}

/// The membership in force: the replicated `record`, else the one the
/// configuration bootstraps.
pub fn members_in_force(cfg: &NodeConfig, record: Option<Members>) -> Members {
    match record {
        Some(m) if m.check().is_ok() => m,
        _ => Members::bootstrap(cfg.members.iter().copied()),
    }
}

/// The leader's lease as request handlers see it: valid only while the
/// driver keeps confirming the quorum. The published view alone would go
/// stale if the process were paused; this expires by itself.
#[derive(Debug, Default)]
pub struct Lease {
    /// Until when writes and reads are allowed.
    until: Moment,
}

impl Lease {
    /// Extends the lease by `span` from now if `quorum`, else ends it.
    pub fn renew(&self, quorum: bool, span: Duration) {
        self.until.set(if quorum { self.until.now() + span } else { Duration::ZERO });
    }

    pub fn valid(&self) -> bool {
        self.until.now() < self.until.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pulse_tells_how_long_since_its_last_beat() {
        let p = Pulse::default();
        std::thread::sleep(Duration::from_millis(60));
        assert!(p.silent_for() >= Duration::from_millis(50), "no beat since it was made: {:?}", p.silent_for());
        p.beat();
        assert!(p.silent_for() < Duration::from_millis(50), "just beat: {:?}", p.silent_for());
    }
}
