//! [`Cluster`]: a cluster of real `scs-node` processes on 127.0.0.1, and the
//! `scs` CLI pointed at it.
//!
//! Every cluster has a fresh temp dir, its own key and its own multicast
//! group and port, so tests running side by side never hear each other.
//! Processes are controlled by pid only, and killed when the cluster is
//! dropped (also on a panic, after printing the tail of every node log) or
//! when its watchdog's hard limit passes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::bins::bin;
use crate::cli::{self, Output, CLI_DEADLINE};
use crate::report::{LsEntry, Status};

/// After this long every process of a cluster is killed, whatever the test
/// is doing, so no test can hang the suite.
pub const HARD_LIMIT: Duration = Duration::from_secs(180);
/// How long a fresh cluster may take to elect its leader.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a SIGTERMed node may take to exit.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of each node log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// Numbers clusters within this process, so each gets its own group and port.
static CLUSTERS: AtomicU64 = AtomicU64::new(0);

/// How to start a cluster; see [`Cluster::builder`].
#[derive(Clone, Debug)]
pub struct ClusterBuilder {
    size: u32,
    running: Vec<u32>,
    max_files: BTreeMap<u32, u64>,
    replicas: Option<u32>,
    timers: Option<(u64, u64)>,
    config: Option<String>,
    hard_limit: Duration,
    metrics: bool,
    env: Vec<(OsString, OsString)>,
    members: Option<Vec<u32>>,
}

impl ClusterBuilder {
    /// Members with these ids instead of 1..=size (a `members` list in
    /// every node's config file); all of them are started.
    pub fn members(mut self, ids: &[u32]) -> ClusterBuilder {
        assert_eq!(ids.len() as u32, self.size, "one id per node");
        self.members = Some(ids.to_vec());
        self.running = ids.to_vec();
        self
    }

    /// Extra TOML for every node's `--config` file, for keys without a flag
    /// (`repair_delay_ms`, `answer_timeout_ms`). Flags still win.
    pub fn config(mut self, toml: &str) -> ClusterBuilder {
        self.config = Some(toml.to_string());
        self
    }

    /// Node `id` keeps at most `k` files.
    pub fn max_files(mut self, id: u32, k: u64) -> ClusterBuilder {
        self.max_files.insert(id, k);
        self
    }

    /// Copies of each file (default: every node).
    pub fn replicas(mut self, r: u32) -> ClusterBuilder {
        self.replicas = Some(r);
        self
    }

    /// Heartbeat interval and leader timeout, in milliseconds.
    pub fn timers(mut self, heartbeat_ms: u64, leader_timeout_ms: u64) -> ClusterBuilder {
        self.timers = Some((heartbeat_ms, leader_timeout_ms));
        self
    }

    /// Every node serves `/metrics` and `/health` on a port of its own
    /// ([`Cluster::metrics_addr`]).
    pub fn metrics(mut self) -> ClusterBuilder {
        self.metrics = true;
        self
    }

    /// Sets `key` to `value` in every node's environment (systemd's
    /// `NOTIFY_SOCKET`, say).
    pub fn node_env(mut self, key: &str, value: impl Into<OsString>) -> ClusterBuilder {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Start only these ids (default: 1..=size); the rest stay down.
    pub fn running(mut self, ids: &[u32]) -> ClusterBuilder {
        self.running = ids.to_vec();
        self
    }

    /// The watchdog's limit for this cluster (default [`HARD_LIMIT`]).
    pub fn hard_limit(mut self, limit: Duration) -> ClusterBuilder {
        self.hard_limit = limit;
        self
    }

    /// Starts the nodes and waits until the highest of them leads with
    /// quorum and sees all the others.
    #[track_caller]
    pub fn start(self) -> Cluster {
        let started = Instant::now();
        let mut cluster = Cluster::create(&self);
        for &id in &self.running {
            cluster.spawn(id);
        }
        let mut alive = self.running.clone();
        alive.sort_unstable();
        let leader = *alive.last().expect("at least one node to run");
        let status =
            cluster.wait_for(&format!("node {leader} to lead nodes {alive:?} with quorum"), START_TIMEOUT, |s| {
                s.is_settled(leader, &alive)
            });
        println!(
            "cluster of {} (running {alive:?}) up in {:?}: leader {leader}, term {}, group {}, dir {}",
            self.size,
            started.elapsed(),
            status.term,
            cluster.group,
            cluster.dir().display()
        );
        cluster
    }
}

/// One node process as the harness started it.
#[derive(Clone, Debug)]
struct NodeSpec {
    id: u32,
    data_dir: PathBuf,
    log: PathBuf,
    secret_file: PathBuf,
    /// The TCP address it listens on (`127.0.0.1:0`: a free port).
    listen: String,
    /// The `cluster_size` it is started with, when not the cluster's.
    cluster_size: Option<u32>,
}

/// The processes of a cluster, shared with its watchdog. A child stays in
/// here until it has been waited for, so its pid cannot be reused while we
/// might still signal it.
#[derive(Default)]
struct Procs {
    children: BTreeMap<String, Child>,
    expired: bool,
}

struct Watchdog {
    stop: mpsc::Sender<()>,
    thread: thread::JoinHandle<()>,
}

/// A running test cluster. See the module docs.
///
/// Start and restart nodes from the thread that owns the cluster (the test
/// thread): a node dies with the thread that spawned it (PR_SET_PDEATHSIG),
/// so one restarted from a short-lived helper thread would die with it.
/// Running the CLI from helper threads is fine (`Cluster` is `Sync`).
pub struct Cluster {
    dir: Option<tempfile::TempDir>,
    size: u32,
    group: SocketAddrV4,
    key_file: PathBuf,
    max_files: BTreeMap<u32, u64>,
    replicas: Option<u32>,
    timers: Option<(u64, u64)>,
    config_file: Option<PathBuf>,
    /// Where each node serves its metrics, when asked to.
    metrics: BTreeMap<u32, SocketAddr>,
    /// Set in every node's environment.
    env: Vec<(OsString, OsString)>,
    specs: BTreeMap<String, NodeSpec>,
    procs: Arc<Mutex<Procs>>,
    watchdog: Option<Watchdog>,
    scratch: AtomicU64,
    node_bin: PathBuf,
    cli_bin: PathBuf,
}

impl Cluster {
    /// A cluster of `n` nodes with default settings, started and settled.
    #[track_caller]
    pub fn start(n: u32) -> Cluster {
        Cluster::builder(n).start()
    }

    /// Settings for a cluster of `n` nodes (ids 1..=n).
    pub fn builder(n: u32) -> ClusterBuilder {
        ClusterBuilder {
            size: n,
            running: (1..=n).collect(),
            max_files: BTreeMap::new(),
            replicas: None,
            timers: None,
            config: None,
            hard_limit: HARD_LIMIT,
            metrics: false,
            env: Vec::new(),
            members: None,
        }
    }

    fn create(b: &ClusterBuilder) -> Cluster {
        let node_bin = bin("scs-node");
        let cli_bin = bin("scs");
        let dir = tempfile::Builder::new().prefix("scs-test-").tempdir().expect("create the cluster's temp dir");
        let key_file = dir.path().join("cluster.key");
        write_key(&key_file, &random_key());
        let members = b.members.as_ref().map(|ids| format!("\nmembers = {ids:?}\n"));
        let config = match (&b.config, members) {
            (None, None) => None,
            (c, m) => Some(format!("{}{}", c.as_deref().unwrap_or(""), m.unwrap_or_default())),
        };
        let config_file = config.map(|toml| {
            let path = dir.path().join("node.toml");
            std::fs::write(&path, toml).expect("write the node config file");
            path
        });
        let procs = Arc::new(Mutex::new(Procs::default()));
        let watchdog = spawn_watchdog(procs.clone(), b.hard_limit);
        Cluster {
            group: fresh_group(),
            dir: Some(dir),
            size: b.size,
            key_file,
            max_files: b.max_files.clone(),
            replicas: b.replicas,
            timers: b.timers,
            config_file,
            metrics: if b.metrics { (1..=b.size).map(|id| (id, free_port())).collect() } else { BTreeMap::new() },
            env: b.env.clone(),
            specs: BTreeMap::new(),
            procs,
            watchdog: Some(watchdog),
            scratch: AtomicU64::new(0),
            node_bin,
            cli_bin,
        }
    }

    /// The cluster's temp dir (data dirs, logs, key, scratch files).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("the temp dir lives as long as the cluster").path()
    }

    /// The cluster's multicast group.
    pub fn group(&self) -> SocketAddrV4 {
        self.group
    }

    /// The cluster's key file.
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    /// The configured cluster size.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Data directory of node `id`.
    pub fn data_dir(&self, id: u32) -> PathBuf {
        self.dir().join(format!("node-{id}"))
    }

    /// Every blob file node `id` keeps (the content of files over 8 KiB).
    pub fn blob_files(&self, id: u32) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.data_dir(id).join("blobs"), &mut out);
        out
    }

    /// Log file (stderr) of node `id`.
    pub fn log_path(&self, id: u32) -> PathBuf {
        self.dir().join(format!("node-{id}.log"))
    }

    // ----- node control, by pid only -----

    fn lock(&self) -> MutexGuard<'_, Procs> {
        let procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        assert!(!procs.expired, "the cluster's watchdog expired and killed every node");
        procs
    }

    /// Starts node `id` of this cluster (its data dir, the cluster key).
    fn spawn(&mut self, id: u32) {
        let spec = NodeSpec {
            id,
            data_dir: self.data_dir(id),
            log: self.log_path(id),
            secret_file: self.key_file.clone(),
            listen: "127.0.0.1:0".into(),
            cluster_size: None,
        };
        self.spawn_spec(format!("node-{id}"), spec);
    }

    fn spawn_spec(&mut self, label: String, spec: NodeSpec) {
        let mut procs = self.lock();
        assert!(!procs.children.contains_key(&label), "{label} is already running");
        let mut log = OpenOptions::new().create(true).append(true).open(&spec.log).expect("open the node log");
        let _ = writeln!(log, "===== harness: starting {label} =====");
        let mut cmd = Command::new(&self.node_bin);
        cmd.args(self.node_args(&spec))
            .env("RUST_LOG", std::env::var("SCS_NODE_LOG").unwrap_or_else(|_| "info,scs_node=debug".into()))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        cli::die_with_parent(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", self.node_bin.display()));
        procs.children.insert(label.clone(), child);
        drop(procs);
        self.specs.insert(label, spec);
    }

    fn node_args(&self, spec: &NodeSpec) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--id".into(),
            spec.id.to_string().into(),
            "--cluster-size".into(),
            spec.cluster_size.unwrap_or(self.size).to_string().into(),
            "--data-dir".into(),
            spec.data_dir.clone().into(),
            "--secret-file".into(),
            spec.secret_file.clone().into(),
            "--group".into(),
            self.group.to_string().into(),
            "--iface".into(),
            "127.0.0.1".into(),
            "--listen".into(),
            spec.listen.clone().into(),
        ];
        if let Some(config) = &self.config_file {
            args.extend(["--config".into(), config.clone().into()]);
        }
        if let Some(k) = self.max_files.get(&spec.id) {
            args.extend(["--max-files".into(), k.to_string().into()]);
        }
        if let Some(r) = self.replicas {
            args.extend(["--replicas".into(), r.to_string().into()]);
        }
        if let Some(m) = self.metrics.get(&spec.id) {
            args.extend(["--metrics-listen".into(), m.to_string().into()]);
        }
        if let Some((hb, timeout)) = self.timers {
            args.extend([
                "--heartbeat-ms".into(),
                hb.to_string().into(),
                "--leader-timeout-ms".into(),
                timeout.to_string().into(),
            ]);
        }
        args
    }

    /// Where node `id` serves `/metrics` and `/health` (see
    /// [`ClusterBuilder::metrics`]).
    pub fn metrics_addr(&self, id: u32) -> SocketAddr {
        *self.metrics.get(&id).expect("the cluster was built with .metrics()")
    }

    /// The pid of node `id`, if the harness runs it.
    pub fn pid(&self, id: u32) -> Option<u32> {
        self.lock().children.get(&format!("node-{id}")).map(|c| c.id())
    }

    /// Ids of the cluster nodes whose process runs (paused ones too).
    pub fn running_ids(&self) -> Vec<u32> {
        let procs = self.lock();
        self.specs
            .iter()
            .filter(|(label, _)| label.starts_with("node-") && procs.children.contains_key(*label))
            .map(|(_, s)| s.id)
            .collect()
    }

    /// SIGKILLs node `id` and reaps it.
    #[track_caller]
    pub fn kill(&self, id: u32) {
        self.kill_label(&format!("node-{id}"));
    }

    fn kill_label(&self, label: &str) {
        let mut procs = self.lock();
        let mut child = procs.children.remove(label).unwrap_or_else(|| panic!("{label} is not running"));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGTERMs node `id` and asserts it exits 0 within [`STOP_TIMEOUT`]
    /// (the systemd stop path).
    #[track_caller]
    pub fn stop(&self, id: u32) {
        let label = format!("node-{id}");
        let mut procs = self.lock();
        let mut child = procs.children.remove(&label).unwrap_or_else(|| panic!("{label} is not running"));
        signal(&child, libc::SIGTERM);
        let status = cli::wait_until(&mut child, Instant::now() + STOP_TIMEOUT);
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        drop(procs);
        match status {
            Some(s) => assert!(s.success(), "node {id} exited with {s} after SIGTERM"),
            None => panic!("node {id} did not exit within {STOP_TIMEOUT:?} of SIGTERM"),
        }
    }

    /// Starts node `id` again: same data dir, same flags. A configured node
    /// that was never started (see [`ClusterBuilder::running`]) starts now.
    #[track_caller]
    pub fn restart(&mut self, id: u32) {
        let label = format!("node-{id}");
        match self.specs.get(&label).cloned() {
            Some(spec) => self.spawn_spec(label, spec),
            None => {
                assert!(id >= 1 && id <= self.size, "node {id} is not in a cluster of {}", self.size);
                self.spawn(id);
            }
        }
    }

    /// Starts node `id` with this cluster's key, group and `cluster_size`,
    /// like the others, but with an id outside the bootstrap membership: a
    /// machine set up to be taken in with `scs node add`. It runs as a
    /// candidate until then. It is `node-{id}` to the harness (own data dir
    /// and log), so kill, stop, restart and the rest work on it as on any node.
    #[track_caller]
    pub fn start_joiner(&mut self, id: u32) {
        assert!(!self.specs.contains_key(&format!("node-{id}")), "node {id} was started before; restart it instead");
        self.spawn(id);
    }

    /// SIGSTOPs node `id`: it holds its sockets but answers nothing.
    #[track_caller]
    pub fn pause(&self, id: u32) {
        let procs = self.lock();
        let child = procs.children.get(&format!("node-{id}")).unwrap_or_else(|| panic!("node {id} is not running"));
        signal(child, libc::SIGSTOP);
    }

    /// SIGCONTs node `id`.
    #[track_caller]
    pub fn resume(&self, id: u32) {
        let procs = self.lock();
        let child = procs.children.get(&format!("node-{id}")).unwrap_or_else(|| panic!("node {id} is not running"));
        signal(child, libc::SIGCONT);
    }

    /// Starts an outsider on this cluster's group: node `id` with its own
    /// data dir and the key in `key_file` (a wrong one, say). It is killed
    /// with the cluster; [`Cluster::kill_rogue`] kills it sooner.
    pub fn start_rogue(&mut self, id: u32, key_file: &Path) {
        self.start_rogue_at(id, key_file, "127.0.0.1:0");
    }

    /// [`Cluster::start_rogue`] listening on `listen` (a dead node's
    /// address, say).
    pub fn start_rogue_at(&mut self, id: u32, key_file: &Path, listen: &str) {
        let spec = NodeSpec {
            id,
            data_dir: self.dir().join(format!("rogue-{id}")),
            log: self.dir().join(format!("rogue-{id}.log")),
            secret_file: key_file.to_path_buf(),
            listen: listen.into(),
            cluster_size: None,
        };
        self.spawn_spec(format!("rogue-{id}"), spec);
    }

    /// Starts a node that is not a member, with this cluster's key: node
    /// `id` of a cluster of `cluster_size` (a fourth machine started next
    /// to three, say). Stopped with [`Cluster::kill_rogue`], or with the cluster.
    pub fn start_outsider(&mut self, id: u32, cluster_size: u32) {
        let spec = NodeSpec {
            id,
            data_dir: self.dir().join(format!("rogue-{id}")),
            log: self.dir().join(format!("rogue-{id}.log")),
            secret_file: self.key_file.clone(),
            listen: "127.0.0.1:0".into(),
            cluster_size: Some(cluster_size),
        };
        self.spawn_spec(format!("rogue-{id}"), spec);
    }

    /// SIGKILLs the rogue node `id`.
    pub fn kill_rogue(&self, id: u32) {
        self.kill_label(&format!("rogue-{id}"));
    }

    /// Whether the process of node `id` has exited by itself (a crash).
    pub fn has_exited(&self, id: u32) -> bool {
        let mut procs = self.lock();
        match procs.children.get_mut(&format!("node-{id}")) {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Asserts that no node the harness runs has exited on its own.
    #[track_caller]
    pub fn assert_no_node_died(&self) {
        let mut procs = self.lock();
        for (label, child) in procs.children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{label} died: {status}");
            }
        }
    }

    // ----- the CLI -----

    /// The flags that point `scs` at this cluster, with the key in `key`.
    pub fn cluster_flags(&self, key: &Path) -> Vec<OsString> {
        vec![
            "--group".into(),
            self.group.to_string().into(),
            "--iface".into(),
            "127.0.0.1".into(),
            "--secret-file".into(),
            key.into(),
        ]
    }

    /// Runs `scs <args>` against this cluster (its group, iface and key).
    pub fn scs(&self, args: &[&str]) -> Output {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        self.scs_os(&args)
    }

    /// [`Cluster::scs`] with arguments that may be paths.
    pub fn scs_os(&self, args: &[OsString]) -> Output {
        let mut all = self.cluster_flags(&self.key_file);
        all.extend(args.iter().cloned());
        self.run_cli(&all)
    }

    /// Runs `scs` on this cluster's group with another key file.
    pub fn scs_with_key(&self, key: &Path, args: &[&str]) -> Output {
        let mut all = self.cluster_flags(key);
        all.extend(args.iter().map(OsString::from));
        self.run_cli(&all)
    }

    /// Runs `scs --node ADDR` (no multicast discovery) with this cluster's key.
    pub fn scs_at(&self, addr: &str, args: &[&str]) -> Output {
        let mut all: Vec<OsString> =
            vec!["--node".into(), addr.into(), "--secret-file".into(), self.key_file.clone().into()];
        all.extend(args.iter().map(OsString::from));
        self.run_cli(&all)
    }

    /// Runs `scs` with exactly these arguments (no cluster flags added).
    pub fn run_cli(&self, args: &[OsString]) -> Output {
        assert!(!self.procs.lock().unwrap_or_else(|e| e.into_inner()).expired, "the cluster's watchdog expired");
        cli::run(&self.cli_bin, args, CLI_DEADLINE)
    }

    /// `scs status --json`, when it succeeds.
    pub fn try_status(&self) -> Option<Status> {
        let out = self.scs(&["status", "--json"]);
        if !out.success() {
            return None;
        }
        Some(
            serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("status --json is not the documented JSON ({e}):\n{out}")),
        )
    }

    /// `scs status --json`; panics when it fails.
    #[track_caller]
    pub fn status(&self) -> Status {
        let out = self.scs(&["status", "--json"]);
        out.assert_ok();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json is not the documented JSON ({e}):\n{out}"))
    }

    /// Polls the status until `cond` holds; panics with the last status
    /// seen after `timeout`. `what` describes the awaited state.
    #[track_caller]
    pub fn wait_for(&self, what: &str, timeout: Duration, mut cond: impl FnMut(&Status) -> bool) -> Status {
        let start = Instant::now();
        let mut last = None;
        loop {
            if let Some(s) = self.try_status() {
                if cond(&s) {
                    return s;
                }
                last = Some(s);
            }
            if start.elapsed() > timeout {
                panic!("waited {timeout:?} for {what}; last status: {last:#?}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until node `id` leads with quorum.
    #[track_caller]
    pub fn wait_leader(&self, id: u32, timeout: Duration) -> Status {
        self.wait_for(&format!("node {id} to lead with quorum"), timeout, |s| s.leader == Some(id) && s.quorum)
    }

    /// The TCP address node `id` (a member or a candidate) advertises, from
    /// the status.
    #[track_caller]
    pub fn node_addr(&self, id: u32) -> String {
        let s = self.status();
        let addr = s.listed(id).unwrap_or_else(|| panic!("status lists no node {id}: {s:?}")).addr.clone();
        assert!(!addr.is_empty(), "node {id} has no address in {s:?}");
        addr
    }

    // ----- files -----

    /// A fresh path in the cluster's scratch dir (not created).
    pub fn scratch_path(&self, hint: &str) -> PathBuf {
        let dir = self.dir().join("scratch");
        std::fs::create_dir_all(&dir).expect("create the scratch dir");
        let n = self.scratch.fetch_add(1, Ordering::Relaxed);
        dir.join(format!("{n}-{hint}"))
    }

    /// Writes `bytes` to a fresh local file and returns its path.
    pub fn local_file(&self, bytes: &[u8]) -> PathBuf {
        let path = self.scratch_path("up");
        std::fs::write(&path, bytes).expect("write the local file");
        path
    }

    /// `scs upload` of `bytes` to `remote`.
    pub fn try_upload_bytes(&self, remote: &str, bytes: &[u8]) -> Output {
        let local = self.local_file(bytes);
        let out = self.scs_os(&["upload".into(), local.clone().into(), remote.into()]);
        let _ = std::fs::remove_file(local);
        out
    }

    /// Uploads `bytes` to `remote`; panics when it fails.
    #[track_caller]
    pub fn upload_bytes(&self, remote: &str, bytes: &[u8]) -> Output {
        let out = self.try_upload_bytes(remote, bytes);
        out.assert_ok();
        out
    }

    /// Retries uploading `bytes` to `remote` until one attempt succeeds;
    /// panics with the last failure after `timeout`. Returns the time taken.
    #[track_caller]
    pub fn upload_within(&self, remote: &str, bytes: &[u8], timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let out = self.try_upload_bytes(remote, bytes);
            if out.success() {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "no upload of {remote} succeeded within {timeout:?}; the last attempt:\n{out}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `scs download remote LOCAL`: the output, and the bytes on success.
    pub fn try_download(&self, remote: &str) -> (Output, Option<Vec<u8>>) {
        let local = self.scratch_path("down");
        let out = self.scs_os(&["download".into(), remote.into(), local.clone().into()]);
        let bytes = if out.success() {
            Some(
                std::fs::read(&local)
                    .unwrap_or_else(|e| panic!("download succeeded but {} is unreadable: {e}\n{out}", local.display())),
            )
        } else {
            None
        };
        let _ = std::fs::remove_file(local);
        (out, bytes)
    }

    /// Downloads `remote`; panics when it fails.
    #[track_caller]
    pub fn download_bytes(&self, remote: &str) -> Vec<u8> {
        match self.try_download(remote) {
            (_, Some(bytes)) => bytes,
            (out, None) => panic!("download of {remote} failed:\n{out}"),
        }
    }

    /// Asserts that `remote` downloads as exactly `want`.
    #[track_caller]
    pub fn assert_content(&self, remote: &str, want: &[u8]) {
        let got = self.download_bytes(remote);
        assert!(got == want, "{remote}: downloaded {} bytes that differ from the {} expected", got.len(), want.len());
    }

    /// Asserts that `remote` does not exist: download fails with "no such file".
    #[track_caller]
    pub fn assert_missing(&self, remote: &str) {
        let (out, _) = self.try_download(remote);
        out.assert_error(1, &format!("no such file: {remote}"));
    }

    /// `scs ls PREFIX --json` ("" = root), parsed; panics when it fails.
    #[track_caller]
    pub fn ls_json(&self, prefix: &str) -> Vec<LsEntry> {
        let mut args = vec!["ls"];
        if !prefix.is_empty() {
            args.push(prefix);
        }
        args.push("--json");
        let out = self.scs(&args);
        out.assert_ok();
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("ls --json is not the documented JSON ({e}):\n{out}"))
    }

    /// The inode number of the file at `path` (its blobs are named by it).
    pub fn ino_of(&self, path: &str) -> u64 {
        let listed = self.ls_json(path);
        listed
            .first()
            .and_then(|e| e.ino)
            .unwrap_or_else(|| panic!("ls {path} --json gave no inode number: {listed:?}"))
    }

    /// Names listed by `scs ls PREFIX --json`, sorted.
    #[track_caller]
    pub fn ls_names(&self, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = self.ls_json(prefix).into_iter().map(|e| e.name).collect();
        names.sort();
        names
    }

    // ----- what is on disk -----

    /// Blob file names (`<64 hex>.<term>-<seq>`) in node `id`'s data dir.
    pub fn blob_names(&self, id: u32) -> Vec<String> {
        let mut names = Vec::new();
        let Ok(shards) = std::fs::read_dir(self.data_dir(id).join("blobs")) else {
            return names;
        };
        for shard in shards.flatten() {
            let Ok(files) = std::fs::read_dir(shard.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if is_blob_name(&name) {
                    names.push(name);
                }
            }
        }
        names.sort();
        names
    }

    /// How many blobs node `id` holds on disk.
    pub fn blob_count(&self, id: u32) -> usize {
        self.blob_names(id).len()
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u32, lines: usize) -> String {
        tail(&self.log_path(id), lines)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(w) = self.watchdog.take() {
            let _ = w.stop.send(());
            let _ = w.thread.join();
        }
        {
            let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
            for (_, mut child) in std::mem::take(&mut procs.children) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if thread::panicking() {
            for (label, spec) in &self.specs {
                eprintln!(
                    "----- {label}: last {LOG_TAIL_LINES} lines of {} -----\n{}",
                    spec.log.display(),
                    tail(&spec.log, LOG_TAIL_LINES)
                );
            }
            if std::env::var_os("SCS_KEEP_TEST_DIR").is_some() {
                if let Some(dir) = self.dir.take() {
                    eprintln!("kept the cluster dir {}", dir.keep().display());
                }
            } else {
                eprintln!("(set SCS_KEEP_TEST_DIR=1 to keep the cluster's dir and full logs)");
            }
        }
    }
}

/// Polls `cond` every 50 ms until it holds; panics after `timeout` saying
/// what was awaited. For conditions the status does not show (files on disk).
#[track_caller]
pub fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "waited {timeout:?} for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Sets its flag when dropped. Threads of a [`std::thread::scope`] that run
/// until a flag is set must get this guard in the scope's body: a panic
/// there (a failed assertion) drops it, so they end and the scope can join
/// them and pass the panic on, instead of waiting for them forever.
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// How long a test may go on after its cluster's watchdog killed the nodes
/// before the watchdog ends the whole test process: a test that outlives
/// its cluster that long is hung (a thread waiting on another that never
/// ends), and would otherwise hold up the suite until `make test`'s own
/// limit, naming nothing.
pub const HUNG_AFTER_EXPIRY: Duration = Duration::from_secs(60);

/// Kills every process of the cluster when `limit` passes, unless the
/// cluster is dropped first; aborts the test process if it is still not
/// dropped [`HUNG_AFTER_EXPIRY`] later.
fn spawn_watchdog(procs: Arc<Mutex<Procs>>, limit: Duration) -> Watchdog {
    let (stop, stopped) = mpsc::channel::<()>();
    // libtest names each test's thread after the test.
    let test = thread::current().name().unwrap_or("a test").to_string();
    let thread = thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(limit) {
            {
                let mut procs = procs.lock().unwrap_or_else(|e| e.into_inner());
                eprintln!(
                    "watchdog: the cluster outlived its hard limit of {limit:?}; killing its {} processes",
                    procs.children.len()
                );
                procs.expired = true;
                for (_, mut child) in std::mem::take(&mut procs.children) {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            if let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(HUNG_AFTER_EXPIRY) {
                // Straight to stderr: what the test harness captures dies with the process.
                let _ = writeln!(
                    std::io::stderr(),
                    "watchdog: {test} is hung {HUNG_AFTER_EXPIRY:?} after its cluster's hard limit of {limit:?}; \
                     aborting the test process"
                );
                std::process::abort();
            }
        }
    });
    Watchdog { stop, thread }
}

fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    // SAFETY: plain kill(2) on a child we have not reaped, so the pid is ours.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}): {}", std::io::Error::last_os_error());
}

/// A multicast group and port of this cluster's own: 239.255.X.Y:P with X
/// from the pid, Y and P from the pid and a counter. The port is what keeps
/// clusters apart on Linux (a socket bound to a port hears every group
/// joined on it), so P is unique per cluster within a process, and differs
/// between processes unless their pids collide modulo 1000.
fn fresh_group() -> SocketAddrV4 {
    let pid = u64::from(std::process::id());
    let n = CLUSTERS.fetch_add(1, Ordering::Relaxed);
    let x = 1 + (pid % 250) as u8;
    let y = (n % 256) as u8;
    let port = 20_000 + ((pid % 1000) * 40 + n % 40) % 40_000;
    SocketAddrV4::new(Ipv4Addr::new(239, 255, x, y), port as u16)
}

/// A TCP port on 127.0.0.1 free a moment ago.
pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("the bound address")
}

fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut key)).expect("read /dev/urandom");
    key
}

/// Writes a 32-byte key file with mode 0600.
pub fn write_key(path: &Path, key: &[u8; 32]) {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create key file {}: {e}", path.display()));
    f.write_all(key).expect("write the key file");
}

/// Writes a fresh random key file with mode 0600 at `path`.
pub fn write_random_key(path: &Path) {
    write_key(path, &random_key());
}

fn is_blob_name(name: &str) -> bool {
    let Some((hex, version)) = name.split_once('.') else {
        return false;
    };
    let Some((term, seq)) = version.split_once('-') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) && digits(term) && digits(seq)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => return format!("(cannot read: {e})"),
    };
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_names_are_recognised_and_temp_files_are_not() {
        let key = "a".repeat(64);
        assert!(is_blob_name(&format!("{key}.1-7")));
        assert!(!is_blob_name(&format!("{key}.1-7.tmp")));
        assert!(!is_blob_name(&format!("{key}.1")));
        assert!(!is_blob_name("0123.1-1"));
    }

    #[test]
    fn every_cluster_of_a_process_gets_its_own_port() {
        let a = fresh_group();
        let b = fresh_group();
        assert_ne!(a.port(), b.port());
        assert!(a.ip().is_multicast() && (20_000..60_000).contains(&a.port()));
        assert_ne!(a.to_string(), scs_common::config::DEFAULT_GROUP);
    }
}
