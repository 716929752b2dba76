//! [`NsCluster`]: five `scs-node` processes, each in its own network
//! namespace, and the `scs` client run from the clients' namespace.
//!
//! Processes are controlled by pid only. Dropping the cluster (also on a
//! panic) kills every process, unmounts the small tmpfs one node keeps its
//! data on, deletes the namespaces, and removes the temp dir.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bins::bin;
use crate::cli;
use crate::cluster::write_random_key;
use crate::netns::{Netns, NsHandle, PREFIX};
use crate::report::Status;

/// How long a fresh cluster may take to elect its leader.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start an [`NsCluster`].
#[derive(Clone, Debug)]
pub struct NsConfig {
    /// Distinguishes clusters of one process (namespace names, subnet).
    pub run: u32,
    /// Namespaces made, one per node that may run.
    pub nodes: u32,
    /// The nodes started at first, 1 to `members` (their `cluster_size`);
    /// the others join later with `scs node add` (0: every node).
    pub members: u32,
    /// Keys of every node's `--config` file.
    pub node_toml: String,
    /// This node's data dir is a tmpfs of `tmpfs_mib` MiB (for disk-full faults).
    pub tmpfs_node: Option<u32>,
    pub tmpfs_mib: u64,
    /// The watchdog kills every node after this long.
    pub hard_limit: Duration,
    /// Gossip by unicast (`peers`), clients by `--node`, and every multicast
    /// datagram dropped at the bridge.
    pub unicast: bool,
}

/// Time since the cluster started, and the wall clock (which node logs use).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
    start_unix_ms: i64,
}

impl Clock {
    fn new() -> Clock {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).expect("a clock after 1970");
        Clock { start: Instant::now(), start_unix_ms: unix.as_millis() as i64 }
    }

    /// Milliseconds since the start.
    pub fn now_ms(&self) -> i64 {
        self.start.elapsed().as_millis() as i64
    }

    /// A wall-clock time (Unix ms, as in node logs) as ms since the start.
    pub fn from_unix_ms(&self, unix_ms: i64) -> i64 {
        unix_ms - self.start_unix_ms
    }
}

/// What one command printed and how it ended; `status` is `None` when it
/// outlived its deadline and was killed.
#[derive(Debug)]
pub struct Ran {
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// The last non-empty stderr line (`scs: …`), or how it ended.
    pub fn error_line(&self) -> String {
        match self.status {
            None => format!("killed after {:.1?}: no answer", self.elapsed),
            Some(s) => self
                .stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| format!("{s} with nothing on stderr")),
        }
    }
}

/// Runs `program args` inside `ns` with `deadline`; never panics on the
/// child's behaviour (a hang is killed and reported as `status: None`).
pub fn run_in(ns: &NsHandle, program: &Path, args: &[OsString], deadline: Duration) -> Ran {
    let mut cmd = cli::user_command(program, args);
    ns.enter(&mut cmd);
    cli::die_with_parent(&mut cmd);
    let start = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Ran {
                status: None,
                stdout: Vec::new(),
                stderr: format!("cannot run {}: {e}", program.display()),
                elapsed: start.elapsed(),
            }
        }
    };
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = cli::wait_until(&mut child, start + deadline);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let elapsed = start.elapsed();
    let stdout = out.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    Ran { status, stdout, stderr, elapsed }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// The node processes, shared with the watchdog. A child stays here until
/// it has been reaped, so its pid cannot be reused while we may signal it.
#[derive(Default)]
struct Procs {
    nodes: BTreeMap<u32, Child>,
    expired: bool,
}

struct Watchdog {
    stop: mpsc::Sender<()>,
    thread: thread::JoinHandle<()>,
}

/// A tmpfs mounted as one node's data dir; unmounted on drop.
struct Tmpfs {
    path: PathBuf,
    filler: PathBuf,
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.filler);
        let r = Command::new("umount").arg("-l").arg(&self.path).stdin(Stdio::null()).status();
        if !r.is_ok_and(|s| s.success()) {
            eprintln!("could not unmount the tmpfs at {}", self.path.display());
        }
    }
}

/// A cluster of nodes in namespaces. See the module docs.
///
/// Start and restart nodes from the thread that owns the cluster: a node
/// dies with the thread that spawned it (PR_SET_PDEATHSIG).
pub struct NsCluster {
    procs: Arc<Mutex<Procs>>,
    watchdog: Option<Watchdog>,
    tmpfs: Option<Tmpfs>,
    tmpfs_node: Option<u32>,
    net: Netns,
    /// Removes the temp dir on drop, unless kept.
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    nodes: u32,
    members: u32,
    group: SocketAddrV4,
    key_file: PathBuf,
    config_file: PathBuf,
    /// The config of the nodes beyond `members`: with unicast, its peers
    /// name every node (the first ones learn a joiner from its datagrams).
    join_config_file: PathBuf,
    node_bin: PathBuf,
    cli_bin: PathBuf,
    clock: Clock,
    scratch: AtomicU64,
    unicast: bool,
}

impl NsCluster {
    /// Creates the namespaces, starts every node and waits until the highest
    /// id leads all of them with quorum.
    ///
    /// # Errors
    /// What could not be set up; everything made so far is removed.
    pub fn start(cfg: &NsConfig) -> Result<NsCluster, String> {
        let node_bin = bin("scs-node");
        let cli_bin = bin("scs");
        let net = Netns::create(cfg.run, cfg.nodes)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-{}-", std::process::id(), cfg.run))
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let key_file = dir.path().join("cluster.key");
        write_random_key(&key_file);
        let members = if cfg.members == 0 { cfg.nodes } else { cfg.members.min(cfg.nodes) };
        let config_file = dir.path().join("node.toml");
        let join_config_file = dir.path().join("join.toml");
        let peers = |upto: u32| -> String {
            let peers: Vec<String> = (1..=upto).map(|id| format!("{:?}", net.node_addr(id))).collect();
            format!("\npeers = [{}]\n", peers.join(", "))
        };
        let (mut node_toml, mut join_toml) = (cfg.node_toml.clone(), cfg.node_toml.clone());
        if cfg.unicast {
            net.block_multicast()?;
            node_toml += &peers(members);
            join_toml += &peers(cfg.nodes);
        }
        std::fs::write(&config_file, &node_toml).map_err(|e| format!("node config: {e}"))?;
        std::fs::write(&join_config_file, &join_toml).map_err(|e| format!("node config: {e}"))?;
        let procs = Arc::new(Mutex::new(Procs::default()));
        let watchdog = spawn_watchdog(procs.clone(), cfg.hard_limit);
        let third = net.node_ip(1).octets()[2];
        let mut c = NsCluster {
            procs,
            watchdog: Some(watchdog),
            tmpfs: None,
            tmpfs_node: cfg.tmpfs_node,
            net,
            root: dir.path().to_path_buf(),
            dir: Some(dir),
            nodes: cfg.nodes,
            members,
            group: SocketAddrV4::new([239, 255, 213, third].into(), 7777),
            key_file,
            config_file,
            join_config_file,
            node_bin,
            cli_bin,
            clock: Clock::new(),
            scratch: AtomicU64::new(0),
            unicast: cfg.unicast,
        };
        if let Some(id) = cfg.tmpfs_node {
            let path = c.data_dir(id);
            std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let size = format!("size={}m,mode=0700", cfg.tmpfs_mib);
            let st = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
                .arg(&path)
                .stdin(Stdio::null())
                .status()
                .map_err(|e| format!("mount: {e}"))?;
            if !st.success() {
                return Err(format!("mount -t tmpfs on {} failed: {st}", path.display()));
            }
            c.tmpfs = Some(Tmpfs { filler: path.join("filler"), path });
        }
        for id in 1..=members {
            c.spawn(id);
        }
        let all: Vec<u32> = (1..=members).collect();
        c.wait_for(START_TIMEOUT, |s| s.is_settled(members, &all))
            .map_err(|last| format!("the cluster did not elect node {members} within {START_TIMEOUT:?}: {last}"))?;
        Ok(c)
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    pub fn net(&self) -> &Netns {
        &self.net
    }

    pub fn size(&self) -> u32 {
        self.nodes
    }

    pub fn dir(&self) -> &Path {
        &self.root
    }

    pub fn group(&self) -> SocketAddrV4 {
        self.group
    }

    pub fn data_dir(&self, id: u32) -> PathBuf {
        self.dir().join(format!("node-{id}"))
    }

    pub fn log_path(&self, id: u32) -> PathBuf {
        self.dir().join(format!("node-{id}.log"))
    }

    /// The node whose data dir is a small tmpfs.
    pub fn tmpfs_node(&self) -> Option<u32> {
        self.tmpfs_node
    }

    /// A fresh path in the scratch dir (not created).
    pub fn scratch_path(&self, hint: &str) -> PathBuf {
        let dir = self.dir().join("scratch");
        let _ = std::fs::create_dir_all(&dir);
        dir.join(format!("{}-{hint}", self.scratch.fetch_add(1, Ordering::Relaxed)))
    }

    // ----- processes, by pid only -----

    fn lock(&self) -> MutexGuard<'_, Procs> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the watchdog's limit passed (every node was killed).
    pub fn expired(&self) -> bool {
        self.lock().expired
    }

    /// Starts node `id` in its namespace, same data dir and flags as before.
    pub fn spawn(&self, id: u32) {
        let mut procs = self.lock();
        if procs.expired || procs.nodes.contains_key(&id) {
            return;
        }
        let mut log = OpenOptions::new().create(true).append(true).open(self.log_path(id)).expect("open the node log");
        let _ = writeln!(log, "===== harness: starting node {id} =====");
        let ip = self.net.node_ip(id).to_string();
        let args: Vec<OsString> = vec![
            "--id".into(),
            id.to_string().into(),
            "--cluster-size".into(),
            self.members.to_string().into(),
            "--data-dir".into(),
            self.data_dir(id).into(),
            "--secret-file".into(),
            self.key_file.clone().into(),
            "--group".into(),
            self.group.to_string().into(),
            "--iface".into(),
            ip.into(),
            "--listen".into(),
            self.net.node_addr(id).into(),
            "--config".into(),
            if id <= self.members { self.config_file.clone() } else { self.join_config_file.clone() }.into(),
        ];
        let mut cmd = Command::new(&self.node_bin);
        cmd.args(args)
            .env("RUST_LOG", std::env::var("SCS_NODE_LOG").unwrap_or_else(|_| "info,scs_node=debug".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        self.net.node_ns(id).enter(&mut cmd);
        cli::die_with_parent(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", self.node_bin.display()));
        procs.nodes.insert(id, child);
    }

    /// Removes everything in node `id`'s data dir (the dir itself stays: it
    /// may be a tmpfs mount). The node must not be running.
    ///
    /// # Errors
    /// What could not be removed.
    pub fn empty_data_dir(&self, id: u32) -> Result<(), String> {
        let dir = self.data_dir(id);
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(()) };
        for e in entries.flatten() {
            let path = e.path();
            let res = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            res.map_err(|err| format!("{}: {err}", path.display()))?;
        }
        Ok(())
    }

    /// SIGKILLs node `id` and reaps it (no-op if it is not running).
    pub fn kill(&self, id: u32) {
        if let Some(mut child) = self.lock().nodes.remove(&id) {
            // A stopped process dies of SIGKILL too.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `sig` (SIGSTOP, SIGCONT) to node `id`; false if it is not running.
    pub fn signal(&self, id: u32, sig: libc::c_int) -> bool {
        let procs = self.lock();
        let Some(child) = procs.nodes.get(&id) else { return false };
        let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) on a child we have not reaped, so the pid is ours.
        unsafe { libc::kill(pid, sig) == 0 }
    }

    /// Whether node `id`'s process runs (a paused one too).
    pub fn is_running(&self, id: u32) -> bool {
        self.lock().nodes.contains_key(&id)
    }

    /// Nodes that exited on their own since the last call (crashes), with
    /// how; they are reaped and no longer count as running.
    pub fn take_exited(&self) -> Vec<(u32, ExitStatus)> {
        let mut procs = self.lock();
        let mut gone = Vec::new();
        for (&id, child) in procs.nodes.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                gone.push((id, status));
            }
        }
        for (id, _) in &gone {
            procs.nodes.remove(id);
        }
        gone
    }

    // ----- the CLI, from the clients' namespace -----

    /// How a client finds this cluster: the multicast group and the
    /// clients' interface, or (unicast) every node's address.
    pub fn client_flags(&self) -> Vec<OsString> {
        if self.unicast {
            (1..=self.nodes).flat_map(|id| ["--node".into(), self.net.node_addr(id).into()]).collect()
        } else {
            let (group, iface) = (self.group.to_string(), self.net.client_ip().to_string());
            vec!["--group".into(), group.into(), "--iface".into(), iface.into()]
        }
    }

    /// `scs <args>`, finding the cluster as [`NsCluster::client_flags`] says, with its key.
    pub fn scs(&self, args: &[OsString], deadline: Duration) -> Ran {
        let mut all = self.client_flags();
        all.extend(["--secret-file".into(), self.key_file.clone().into()]);
        all.extend(args.iter().cloned());
        run_in(self.net.client_ns(), &self.cli_bin, &all, deadline)
    }

    /// `scs --node ADDR <args>`: no discovery, straight to that node.
    pub fn scs_at(&self, addr: &str, args: &[OsString], deadline: Duration) -> Ran {
        let mut all: Vec<OsString> =
            vec!["--node".into(), addr.into(), "--secret-file".into(), self.key_file.clone().into()];
        all.extend(args.iter().cloned());
        run_in(self.net.client_ns(), &self.cli_bin, &all, deadline)
    }

    /// `scs status --json`, when it answers.
    pub fn status(&self) -> Option<Status> {
        let out = self.scs(&["status".into(), "--json".into()], Duration::from_secs(15));
        if !out.ok() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Polls the status until `cond` holds; `Err` describes the last status.
    ///
    /// # Errors
    /// The last status seen (or that none answered) after `timeout`.
    pub fn wait_for(&self, timeout: Duration, mut cond: impl FnMut(&Status) -> bool) -> Result<Status, String> {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < timeout && !self.expired() {
            if let Some(s) = self.status() {
                if cond(&s) {
                    return Ok(s);
                }
                last = Some(s);
            }
            thread::sleep(Duration::from_millis(200));
        }
        Err(match last {
            Some(s) => format!("last status: {}", brief_status(&s)),
            None => "no status answered".into(),
        })
    }

    // ----- the disk -----

    /// Fills node `tmpfs_node`'s tmpfs to the last byte; returns the bytes written.
    ///
    /// # Errors
    /// When the cluster has no tmpfs node.
    pub fn fill_disk(&self) -> Result<u64, String> {
        let t = self.tmpfs.as_ref().ok_or("no node keeps its data on a tmpfs")?;
        let mut f = std::fs::File::create(&t.filler).map_err(|e| format!("{}: {e}", t.filler.display()))?;
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0u64;
        // Bounded: the tmpfs is small; a 1 GiB cap guards a mistake.
        while written < 1 << 30 {
            match f.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n as u64,
            }
        }
        let small = [0u8; 512];
        while let Ok(n) = f.write(&small) {
            if n == 0 {
                break;
            }
            written += n as u64;
        }
        Ok(written)
    }

    /// Removes the filler of [`NsCluster::fill_disk`].
    pub fn free_disk(&self) {
        if let Some(t) = &self.tmpfs {
            let _ = std::fs::remove_file(&t.filler);
        }
    }

    /// Blob files of node `id`: (path, key hex, term, seq).
    pub fn blobs(&self, id: u32) -> Vec<Blob> {
        let mut out = Vec::new();
        let Ok(shards) = std::fs::read_dir(self.data_dir(id).join("blobs")) else { return out };
        for shard in shards.flatten() {
            let Ok(files) = std::fs::read_dir(shard.path()) else { continue };
            for f in files.flatten() {
                if let Some(b) = Blob::parse(&f.path()) {
                    out.push(b);
                }
            }
        }
        out.sort_by(|a, b| (&a.key, a.term, a.seq).cmp(&(&b.key, b.term, b.seq)));
        out
    }

    /// Keeps the whole temp dir (data dirs too) instead of removing it on
    /// drop; returns where it is.
    pub fn keep_dir(&mut self) -> Option<PathBuf> {
        // The tmpfs data dir is unmounted on drop: what it held is gone.
        self.dir.take().map(|d| d.keep())
    }

    /// Keeps the node logs of a failed seed under `dest` (the data is not copied).
    pub fn keep_logs(&self, dest: &Path) {
        let _ = std::fs::create_dir_all(dest);
        for id in 1..=self.nodes {
            let _ = std::fs::copy(self.log_path(id), dest.join(format!("node-{id}.log")));
        }
    }
}

/// One blob file on a node's disk.
#[derive(Clone, Debug)]
pub struct Blob {
    pub path: PathBuf,
    pub key: String,
    pub term: u64,
    pub seq: u64,
}

impl Blob {
    fn parse(path: &Path) -> Option<Blob> {
        let name = path.file_name()?.to_str()?;
        let (key, version) = name.split_once('.')?;
        let (term, seq) = version.split_once('-')?;
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Blob { path: path.to_path_buf(), key: key.to_string(), term: term.parse().ok()?, seq: seq.parse().ok()? })
    }
}

/// One line of a status, for messages.
pub fn brief_status(s: &Status) -> String {
    let nodes: Vec<String> = s
        .nodes
        .iter()
        .map(|n| format!("{}{}:{}f{}w{}c", n.id, if n.alive { "" } else { "(dead)" }, n.files, n.wanted, n.corrupt))
        .collect();
    format!(
        "leader {:?} term {} quorum {} under-replicated {} [{}]",
        s.leader,
        s.term,
        s.quorum,
        s.under_replicated,
        nodes.join(" ")
    )
}

impl Drop for NsCluster {
    fn drop(&mut self) {
        if let Some(w) = self.watchdog.take() {
            let _ = w.stop.send(());
            let _ = w.thread.join();
        }
        {
            let mut procs = self.lock();
            for (_, mut child) in std::mem::take(&mut procs.nodes) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // The mount goes before the namespaces and the temp dir under it.
        self.tmpfs = None;
        if thread::panicking() {
            for id in 1..=self.nodes {
                let log = self.log_path(id);
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!(
                    "----- node {id}: last 40 lines -----\n{}",
                    lines[lines.len().saturating_sub(40)..].join("\n")
                );
            }
            if std::env::var_os("SCS_KEEP_TEST_DIR").is_some() {
                if let Some(dir) = self.dir.take() {
                    eprintln!("kept the cluster dir {}", dir.keep().display());
                }
            }
        }
    }
}

fn spawn_watchdog(procs: Arc<Mutex<Procs>>, limit: Duration) -> Watchdog {
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(limit) {
            let mut procs = procs.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!("watchdog: the fault cluster outlived its hard limit of {limit:?}; killing every node");
            procs.expired = true;
            for (_, mut child) in std::mem::take(&mut procs.nodes) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    });
    Watchdog { stop, thread }
}
