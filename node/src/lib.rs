//! The SCS storage node.
//!
//! # Layout
//! - [`cluster`]: the bully election as a pure state machine
//!   ([`cluster::election`]) and the async driver that runs it over multicast.
//! - [`view`]: the cluster picture the driver publishes for everyone else.
//! - [`node`]: the state all tasks share (behind methods), and the fence on
//!   incoming writes.
//! - [`link`]: what the driver and the rest of the node share (requests to
//!   the driver, the lease, health figures), so neither imports the other.
//! - [`net`]: the TCP accept loop, the request handler, and `/metrics` and `/health` over HTTP.
//! - [`metrics`]: latency histograms and process figures (served by `net::http`).
//! - [`leader`]: what the leader does: uploads with pipelined fan-out and
//!   namespace changes, each committed on a majority.
//! - [`sync`]: catching up: a new leader from a majority, followers from the
//!   leader, everyone fetching the blobs they lack.
//! - [`store`]: blobs on disk and the redb index; the only code that knows paths.
//! - [`transfer`]: overlapping disk and network for file bytes.
//! - [`peers`]: pooled authenticated connections to other nodes.
//! - [`repair`]: re-replication, index anti-entropy, tombstone purge, the
//!   namespace audit, scrub.

pub mod cluster;
pub mod copies;
pub mod leader;
pub mod link;
pub mod metrics;
pub mod net;
pub mod node;
pub mod peers;
pub mod rebalance;
pub mod repair;
pub mod store;
pub mod sync;
pub mod transfer;
pub mod view;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use scs_common::auth::ClusterKey;
use scs_common::config::NodeConfig;
use scs_common::proto::gossip::Role;
use scs_common::{Error, Result, Term, Version};

use crate::cluster::driver::Driver;
use crate::leader::LeaderState;
use crate::link::{Health, Lease};
use crate::node::{DriverLink, Node};
use crate::store::Store;
use crate::view::ClusterView;

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// Runs a node until `shutdown` is cancelled. `ready` is called once the
/// node serves (it has joined: it follows a leader or leads).
///
/// # Errors
/// `Config` for a bad key file, an address in use or a multicast group that
/// cannot be joined; `Io` when the store cannot be opened. All before
/// anything is served.
pub async fn run(cfg: NodeConfig, shutdown: CancellationToken, ready: impl FnOnce() + Send + 'static) -> Result<()> {
    let id = cfg.id;
    let (key, created) = ClusterKey::load_or_create(&cfg.secret_file)?;
    if created {
        log::info!(
            "node {id}: created a new cluster key at {} (fingerprint {}); copy it to every other node and client",
            cfg.secret_file.display(),
            key.fingerprint()
        );
    }
    let (store, report) = {
        let (dir, max) = (cfg.data_dir.clone(), cfg.max_files);
        tokio::task::spawn_blocking(move || Store::open(&dir, id, max))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??
    };
    // Small files keep their content in the index: counted, with no blob.
    log::info!(
        "node {id}: store at {} holds {} files, {} of them in blobs ({} temp files and {} orphan blobs removed, \
         {} blobs to fetch again)",
        cfg.data_dir.display(),
        store.files(),
        report.blobs_held,
        report.temp_files_removed,
        report.orphan_blobs_removed,
        report.blobs_missing
    );
    let store = Arc::new(store);
    let initial_term = store.saved_term()?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", cfg.listen)))?;
    let metrics = match cfg.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr).await.map_err(|e| Error::Config(format!("cannot serve metrics on {addr}: {e}")))?,
        ),
        None => None,
    };
    let mut cfg = cfg;
    if cfg.listen.port() == 0 {
        // Port 0 picks a free port: advertise the one we got.
        let port = listener.local_addr()?.port();
        cfg.listen.set_port(port);
        cfg.advertise.set_port(port);
    }
    let lease = Arc::new(Lease::default());
    let health = Arc::new(Health::default());
    let (view_tx, view_rx) = watch::channel(ClusterView::new(id));
    let (control_tx, control_rx) = mpsc::channel(64);
    let gossip = Gossip { cfg: cfg.clone(), key: key.clone(), store: store.clone(), initial_term };
    let (described, gossip_ended) =
        gossip.start(lease.clone(), health.clone(), view_tx, control_rx, shutdown.clone()).await?;
    let link = DriverLink { view: view_rx, control: control_tx, lease };
    let node = Arc::new(Node::new(cfg.clone(), key.clone(), store, link, health, shutdown.clone()));

    log::info!(
        "node {id}: listening on {} (advertised as {}), {}, members {:?}, key {}",
        cfg.listen,
        cfg.advertise,
        described,
        node.members().ids(),
        key.fingerprint()
    );
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(show_alive(node.clone()));
    tasks.spawn(async move {
        let _ = gossip_ended.await;
    });
    tasks.spawn(net::server::run(node.clone(), listener));
    if let Some(m) = metrics {
        log::info!("node {id}: metrics at http://{}/metrics", m.local_addr()?);
        tasks.spawn(net::http::serve(node.clone(), m));
    }
    tasks.spawn(sync::follow(node.clone()));
    tasks.spawn(sync::learn_members(node.clone()));
    tasks.spawn(sync::fetcher(node.clone()));
    tasks.spawn(roles(node.clone(), ready));
    tasks.spawn(repair::replicas(node.clone()));
    tasks.spawn(repair::anti_entropy(node.clone()));
    tasks.spawn(repair::tombstones(node.clone()));
    tasks.spawn(leader::trash::expire(node.clone()));
    tasks.spawn(repair::namespace(node.clone()));
    tasks.spawn(repair::scrub(node.clone()));
    tasks.spawn(count_held_bytes(node.clone()));

    shutdown.cancelled().await;
    log::info!("node {id}: shutting down");
    let _ = tokio::time::timeout(DRAIN_DEADLINE, async { while tasks.join_next().await.is_some() {} }).await;
    if let Err(e) = node.blocking(|s| s.close()).await {
        log::warn!("node {id}: the index was not closed cleanly (the journal replays at the next start): {e}");
    }
    log::info!("node {id}: stopped");
    Ok(())
}

/// Shows the gossip driver, on its own thread, that this runtime runs its
/// tasks.
async fn show_alive(node: Arc<Node>) {
    loop {
        node.health().runtime.beat();
        tokio::select! {
            _ = node.shutdown().cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// What the gossip driver is made of.
struct Gossip {
    cfg: NodeConfig,
    key: ClusterKey,
    store: Arc<Store>,
    initial_term: Term,
}

impl Gossip {
    /// Opens the gossip sockets and runs the driver on a thread and runtime
    /// of its own, until `shutdown`. Heartbeats and the lease must not wait
    /// behind the node's other work: with the runtime's threads held up by
    /// the disk (several big files written at once), the lease lapsed and
    /// uploads failed with "no quorum" while every node was up. Returns the
    /// driver's description for the log, and a receiver that ends with it.
    async fn start(
        self,
        lease: Arc<Lease>,
        health: Arc<Health>,
        view_tx: watch::Sender<ClusterView>,
        control_rx: mpsc::Receiver<link::Control>,
        shutdown: CancellationToken,
    ) -> Result<(String, tokio::sync::oneshot::Receiver<()>)> {
        let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
        let id = self.cfg.id;
        std::thread::Builder::new()
            .name("scs-gossip".into())
            .spawn(move || {
                // Built here, so the sockets and timers are this runtime's.
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = opened_tx.send(Err(Error::Io(format!("cannot start the gossip runtime: {e}"))));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let Gossip { cfg, key, store, initial_term } = self;
                    match Driver::new(cfg, key, store, initial_term, lease, health) {
                        Ok(driver) => {
                            let _ = opened_tx.send(Ok(driver.describe()));
                            driver.run(view_tx, control_rx, shutdown).await;
                        }
                        Err(e) => {
                            let _ = opened_tx.send(Err(e));
                        }
                    }
                });
                let _ = ended_tx.send(());
            })
            .map_err(|e| Error::Io(format!("node {id}: cannot start the gossip thread: {e}")))?;
        let described = opened_rx.await.map_err(|_| Error::Internal("the gossip thread ended at start".into()))??;
        Ok((described, ended_rx))
    }
}

/// Keeps the count of bytes held (`scs status`, `scs_bytes`) up to date:
/// counted again every 2 s when the held set changed, but never taking more
/// than a twentieth of the time, as the count is a pass over every blob held.
async fn count_held_bytes(node: Arc<Node>) {
    let mut pause = Duration::from_secs(2);
    loop {
        tokio::select! {
            _ = node.shutdown().cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        let started = Instant::now();
        if let Err(e) = node.blocking(|s| s.tally_held_bytes()).await {
            log::warn!("node {}: counting the bytes held: {e}", node.me());
        }
        if let Err(e) = node.blocking(|s| s.tally_trash_bytes()).await {
            log::warn!("node {}: counting the bytes in the trash: {e}", node.me());
        }
        pause = (started.elapsed() * 20).max(Duration::from_secs(2));
    }
}

/// Follows role changes: sets up and tears down the leader state, starts a
/// new leader's catch-up, and reports readiness once.
async fn roles(node: Arc<Node>, ready: impl FnOnce() + Send + 'static) {
    let mut rx = node.view_changes();
    let mut led: Option<Term> = None;
    let mut ready = Some(ready);
    loop {
        let v = rx.borrow_and_update().clone();
        if led.is_some() && (v.role != Role::Leader || led != Some(v.term)) {
            // The term it led is over: that it caught up from a majority
            // stays with it, for the next leader to tell from it what of
            // earlier terms never reached one (see `sync::spread_unsettled`),
            // and so does how far a majority has its own changes. Not what it
            // vouches for: a change of its own may be on no majority yet, and
            // a term it leads next looks for those only above its watermark.
            if let Some(state) = node.leader_state().filter(|s| s.served()) {
                let term_start = Version::new(state.term, 0);
                let w = sync::settled_now(&node, &state).map_or(term_start, |s| s.max(term_start));
                if let Err(e) = node.blocking(move |s| s.raise_watermark(w)).await {
                    log::info!("node {}: cannot store its watermark at the end of term {}: {e}", node.me(), state.term);
                }
            }
        }
        if v.role == Role::Leader && led != Some(v.term) {
            led = Some(v.term);
            let state = Arc::new(LeaderState::new(v.term));
            node.set_leader_state(Some(state.clone()));
            log::info!("node {}: leading term {}; catching up from a majority before serving", node.me(), v.term);
            tokio::spawn(sync::lead(node.clone(), state));
        } else if v.role != Role::Leader && led.is_some() {
            led = None;
            node.set_leader_state(None);
        }
        if v.leader.is_some() && (v.role != Role::Leader || v.ready) {
            if let Some(f) = ready.take() {
                f();
            }
        }
        tokio::select! {
            _ = node.shutdown().cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
    }
}
