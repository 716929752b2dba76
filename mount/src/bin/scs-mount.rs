//! `scs-mount MOUNTPOINT`: the cluster as a local directory.
//!
//! Without `--foreground` it forks before anything else starts; the child
//! mounts and tells the parent through a pipe whether the directory works,
//! and the parent exits 0 then (or 1 with the child's one-line error). The
//! daemon's log is `scs-mount.log` in its cache directory.

use std::cell::Cell;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use scs_common::auth::ClusterKey;
use scs_common::config::{self, DEFAULT_GROUP, DEFAULT_IFACE};
use scs_mount::client::{ClientOptions, RETRY_WINDOW};
use scs_mount::fs::mountpoint;
use scs_mount::fs::session::{self, Settings};

/// Mount an SCS cluster as a local directory.
#[derive(Parser, Debug)]
#[command(
    name = "scs-mount",
    version,
    about = "Mount an SCS cluster as a local directory",
    after_help = "Unmount with `fusermount3 -u MOUNTPOINT` (or SIGTERM/SIGINT to a foreground mount)."
)]
struct Args {
    /// Where the cluster appears: an existing directory
    mountpoint: PathBuf,
    /// Multicast group the cluster's heartbeats are on
    #[arg(long, value_name = "G", default_value = DEFAULT_GROUP)]
    group: String,
    /// IPv4 address of the interface to listen for heartbeats on
    #[arg(long, value_name = "I", default_value = DEFAULT_IFACE)]
    iface: String,
    /// Talk to this node (IP:PORT) instead of listening for heartbeats
    #[arg(long, value_name = "IP:PORT")]
    node: Option<String>,
    /// The cluster key [default: /etc/scs/cluster.key as root, else ~/.config/scs/cluster.key]
    #[arg(long, value_name = "F")]
    secret_file: Option<PathBuf>,
    /// Where staging files and cached contents go (one subdirectory per mount)
    /// [default: $XDG_CACHE_HOME/scs or ~/.cache/scs]
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Stay in the foreground (logs on stderr) instead of daemonizing
    #[arg(long)]
    foreground: bool,
    /// Close returns once a small file (up to 1 MiB) is in a journal in the
    /// cache dir (synced to disk as its last descriptor is released); it
    /// reaches the cluster in the background, shortly after (fsync waits for
    /// it). Much faster for many small files; other clients see a file a
    /// moment after it is closed, not at once
    #[arg(long)]
    write_back: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match settings(&args) {
        Ok(s) => s,
        Err(msg) => return fail(&msg),
    };
    if args.foreground {
        init_logs();
        return match session::run(settings, || {}) {
            Ok(()) => ExitCode::SUCCESS,
            Err(msg) => fail(&msg),
        };
    }
    daemonize(settings)
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("scs-mount: {msg}");
    ExitCode::from(1)
}

fn init_logs() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,fuser=warn")).init();
}

/// Checks what can be checked before forking, with one-line errors.
fn settings(args: &Args) -> Result<Settings, String> {
    let mountpoint = mountpoint::prepare(&args.mountpoint)?;
    if !Path::new("/dev/fuse").exists() {
        return Err("FUSE is not available: /dev/fuse is missing (load the fuse module)".into());
    }
    let secret_file = args.secret_file.clone().unwrap_or_else(config::default_secret_file);
    ClusterKey::load(&secret_file).map_err(|e| e.to_string())?;
    let client = ClientOptions {
        group: config::parse_group(&args.group).map_err(|e| e.to_string())?,
        iface: config::parse_iface(&args.iface).map_err(|e| e.to_string())?,
        node: args.node.clone(),
        secret_file,
        retry_window: RETRY_WINDOW,
    };
    let root = args.cache_dir.clone().unwrap_or_else(session::default_cache_root);
    let cache_dir = session::cache_dir_for(&root, &mountpoint);
    std::fs::create_dir_all(&cache_dir)
        .map_err(|e| format!("cannot create the cache dir {}: {e}", cache_dir.display()))?;
    Ok(Settings { mountpoint, client, cache_dir, write_back: args.write_back })
}

/// Forks; the parent waits for the child's word on the mount.
fn daemonize(settings: Settings) -> ExitCode {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills the two descriptors we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return fail(&format!("cannot create a pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors were just created and are owned here only.
    let (mut from_child, to_parent) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    // SAFETY: no thread has been started yet, so the child is a full copy.
    match unsafe { libc::fork() } {
        -1 => fail(&format!("cannot fork: {}", std::io::Error::last_os_error())),
        0 => {
            drop(from_child);
            std::process::exit(serve(settings, to_parent))
        }
        _ => {
            drop(to_parent);
            let mut said = String::new();
            let _ = from_child.read_to_string(&mut said);
            match said.lines().next() {
                Some("ok") => ExitCode::SUCCESS,
                Some(msg) => fail(msg.strip_prefix("error: ").unwrap_or(msg)),
                None => fail(&format!(
                    "the mount process ended before the mount was ready (see {})",
                    log_path(&settings).display()
                )),
            }
        }
    }
}

/// The daemon: detaches, mounts, reports to the parent, serves.
fn serve(settings: Settings, to_parent: File) -> i32 {
    detach_from_terminal(&log_path(&settings));
    init_logs();
    let pipe = Cell::new(Some(to_parent));
    let res = session::run(settings, || {
        if let Some(mut p) = pipe.take() {
            let _ = p.write_all(b"ok\n");
        }
    });
    match res {
        Ok(()) => 0,
        Err(msg) => {
            log::error!("{msg}");
            if let Some(mut p) = pipe.take() {
                let _ = writeln!(p, "error: {msg}");
            }
            1
        }
    }
}

fn log_path(settings: &Settings) -> PathBuf {
    settings.cache_dir.join("scs-mount.log")
}

/// A new session without a terminal; stdin from /dev/null, stdout and
/// stderr to the log (so whoever ran us does not wait on our output).
fn detach_from_terminal(log: &Path) {
    // SAFETY: setsid has no preconditions; failing (already a leader) is harmless.
    unsafe { libc::setsid() };
    if let Ok(null) = File::open("/dev/null") {
        // SAFETY: dup2 onto the standard descriptors, from one we own.
        unsafe { libc::dup2(null.as_raw_fd(), 0) };
    }
    let out = std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(log);
    let out = match out {
        Ok(f) => Some(f),
        Err(_) => std::fs::OpenOptions::new().write(true).open("/dev/null").ok(),
    };
    if let Some(f) = out {
        // SAFETY: as above.
        unsafe {
            libc::dup2(f.as_raw_fd(), 1);
            libc::dup2(f.as_raw_fd(), 2);
        }
    }
}
