//! `scs-node`: one storage node of an SCS cluster.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use scs_common::config::{LogFormat, NodeConfig, NodeSettings};

/// A storage node of an SCS cluster. Flags override the config file.
#[derive(Parser, Debug)]
#[command(name = "scs-node", version, about, long_about = None)]
struct Args {
    /// TOML config file (keys: id, data_dir, listen, group, iface, peers, cluster_size, members,
    /// max_files, replicas, secret_file, heartbeat_ms, leader_timeout_ms,
    /// metrics_listen, log_format, and the limits the README lists)
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// This node's id: 1 to cluster_size, or one of members (the highest
    /// live id leads)
    #[arg(long, value_name = "N")]
    id: Option<u32>,
    /// Where blobs and the index live
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// TCP address to serve on (default: IFACE:7780+ID)
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<String>,
    /// Multicast group for heartbeats and elections
    #[arg(long, value_name = "MCAST_IP:PORT")]
    group: Option<String>,
    /// The members' listen addresses, for gossip by unicast UDP where the
    /// network carries no multicast (comma-separated; default: multicast)
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',', num_args = 1..)]
    peers: Option<Vec<String>>,
    /// IPv4 address of the interface multicast uses (default 127.0.0.1)
    #[arg(long, value_name = "IP")]
    iface: Option<String>,
    /// Number of nodes in the cluster (their ids are 1 to N)
    #[arg(long, value_name = "N")]
    cluster_size: Option<u32>,
    /// The members' ids, when they are not 1 to cluster_size
    /// (comma-separated, this node's included)
    #[arg(long, value_name = "ID,...", value_delimiter = ',', num_args = 1..)]
    members: Option<Vec<u32>>,
    /// Most files this node keeps (default: no limit)
    #[arg(long, value_name = "N")]
    max_files: Option<u64>,
    /// Copies of each file (default: every node)
    #[arg(long, value_name = "N")]
    replicas: Option<u32>,
    /// The cluster key (created with mode 0600 if missing)
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// Heartbeat interval
    #[arg(long, value_name = "MS")]
    heartbeat_ms: Option<u64>,
    /// Silence after which the leader is presumed dead
    #[arg(long, value_name = "MS")]
    leader_timeout_ms: Option<u64>,
    /// Serve Prometheus metrics at /metrics and a health check at /health
    /// here (default: off)
    #[arg(long, value_name = "IP:PORT")]
    metrics_listen: Option<String>,
    /// Log lines as text (default) or as one JSON object each
    #[arg(long, value_name = "text|json")]
    log_format: Option<String>,
}

impl Args {
    fn settings(&self) -> NodeSettings {
        NodeSettings {
            id: self.id,
            data_dir: self.data_dir.clone(),
            listen: self.listen.clone(),
            group: self.group.clone(),
            iface: self.iface.clone(),
            cluster_size: self.cluster_size,
            max_files: self.max_files,
            replicas: self.replicas,
            secret_file: self.secret_file.clone(),
            heartbeat_ms: self.heartbeat_ms,
            leader_timeout_ms: self.leader_timeout_ms,
            metrics_listen: self.metrics_listen.clone(),
            log_format: self.log_format.clone(),
            peers: self.peers.clone(),
            members: self.members.clone(),
            ..Default::default()
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    scs_common::raise_fd_limit();
    let file = match &args.config {
        Some(path) => match NodeSettings::from_file(path) {
            Ok(s) => s,
            Err(e) => return fail(&e),
        },
        None => NodeSettings::default(),
    };
    let cfg = match NodeConfig::resolve(file.overlay(args.settings())) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    start_logging(cfg.log_format);
    bound_the_heap();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        spawn_signal_handler(shutdown.clone())?;
        if let Some(every) = watchdog_interval() {
            tokio::spawn(feed_the_watchdog(every));
        }
        scs_node::run(cfg, shutdown, notify_ready).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Malloc arenas a node uses at most. glibc gives each thread that
/// allocates under contention an arena of its own (up to 8 per core) and
/// keeps what is freed in it for that arena: with the runtime's worker and
/// blocking threads that was a node's memory growing with every file stored
/// (the leader at 151 MiB with 50,000 files, against 99 MiB with 2 arenas,
/// the upload rate unchanged).
const MALLOC_ARENAS: libc::c_int = 2;
/// How often freed heap memory goes back to the system. glibc keeps what a
/// request freed for the next one; a leader storing file after file kept
/// a few hundred bytes per file that way (86 MiB with 40,000 files, where
/// a trim brought it back to its followers' 61 MiB).
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Bounds the node's heap: fewer malloc arenas, and a thread that hands
/// freed memory back to the system every [`TRIM_EVERY`].
fn bound_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets a malloc tunable, before any thread starts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
        let trim = || loop {
            std::thread::sleep(TRIM_EVERY);
            // SAFETY: malloc_trim only releases free heap pages; it takes
            // malloc's own locks.
            unsafe {
                libc::malloc_trim(0);
            }
        };
        if let Err(e) = std::thread::Builder::new().name("scs-trim".into()).spawn(trim) {
            log::warn!("cannot start the memory trim thread: {e}");
        }
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("scs-node: {e}");
    ExitCode::FAILURE
}

/// SIGTERM (systemd) and SIGINT (Ctrl-C) both start a clean shutdown.
fn spawn_signal_handler(shutdown: CancellationToken) -> scs_common::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        shutdown.cancel();
    });
    Ok(())
}

/// Logs go to stderr (the journal under systemd), filtered by `RUST_LOG`
/// (default `info`): as text, or as one JSON object per line.
fn start_logging(format: LogFormat) {
    let mut logger = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    match format {
        LogFormat::Text => logger.format_timestamp_millis(),
        LogFormat::Json => logger.format(|buf, record| {
            let line = serde_json::json!({
                "ts": buf.timestamp_millis().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "msg": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        }),
    };
    logger.init();
}

/// Tells systemd (Type=notify) that the node has joined the cluster.
fn notify_ready() {
    if let Err(e) = sd_notify(b"READY=1") {
        log::warn!("could not notify systemd of readiness: {e}");
    }
}

/// How often to tell systemd's watchdog (`WatchdogSec=` in the unit) that
/// the node is alive: half its limit, as sd_watchdog_enabled(3) advises.
/// `None` when no watchdog watches this process.
fn watchdog_interval() -> Option<std::time::Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| std::time::Duration::from_micros(usec / 2))
}

/// Pings the watchdog every `every` while both the async runtime and its
/// blocking pool (where the store's disk work runs) answer within that
/// time. A node stuck in either stops pinging, and systemd restarts it.
async fn feed_the_watchdog(every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match tokio::time::timeout(every, tokio::task::spawn_blocking(|| ())).await {
            Ok(Ok(())) => {
                if let Err(e) = sd_notify(b"WATCHDOG=1") {
                    log::warn!("could not ping the systemd watchdog: {e}");
                }
            }
            _ => log::warn!("the node's blocking work did not answer within {every:?}; not pinging the watchdog"),
        }
    }
}

/// Sends `msg` to systemd's notification socket (`NOTIFY_SOCKET`); nothing
/// when not run by systemd.
fn sd_notify(msg: &[u8]) -> std::io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let path = PathBuf::from(path);
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes.first() == Some(&b'@') {
        // An abstract socket address.
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&bytes[1..])?;
        sock.send_to_addr(msg, &addr).map(drop)
    } else {
        sock.send_to(msg, &path).map(drop)
    }
}
