//! A mount from start to end: the runtime and the client, the check that the
//! cluster answers, the cache directory, the FUSE session, and a clean end
//! on unmount or SIGTERM/SIGINT (what is still owed is uploaded first).

use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::MountOption;
use sha2::{Digest, Sha256};

use scs_common::http;

use super::cluster::Cluster;
use super::content::ContentCache;
use super::ops::Core;
use super::remote::Remote;
use super::report;
use super::trash::TrashView;
use super::writeback::Journal;
use super::ScsFs;
use crate::client::{Client, ClientOptions};

/// The content cache never takes more than this much disk...
const CACHE_MAX: u64 = 2 << 30;
/// ... nor more than this share of the disk it is on (1/n).
const CACHE_DISK_SHARE: u64 = 10;
/// Records a previous run left go up before the directory appears, unless
/// none went up for this long.
const LEFTOVER_IDLE: Duration = Duration::from_secs(10);
/// FUSE worker threads (each may block on the cluster): enough that the
/// changes of concurrent writers reach the leader together and share its
/// commit rounds.
const FUSE_THREADS: usize = 16;

/// What a mount needs to know.
#[derive(Clone, Debug)]
pub struct Settings {
    /// An existing directory, canonical.
    pub mountpoint: PathBuf,
    pub client: ClientOptions,
    /// This mount's own cache directory (staging files, cached contents).
    pub cache_dir: PathBuf,
    /// Closing a small file stores it durably in the cache directory and
    /// uploads it in the background (see [`super::writeback`]).
    pub write_back: bool,
    /// Other users may use the mount too (FUSE `allow_other`); the kernel
    /// still checks their access against owners and modes.
    pub allow_other: bool,
    /// Mounted read-only: the kernel answers EROFS to every change.
    pub read_only: bool,
    /// Where `/metrics` and `/health` are served (off when unset).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// `$XDG_CACHE_HOME/scs`, else `~/.cache/scs`.
pub fn default_cache_root() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("scs");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache/scs"),
        None => std::env::temp_dir().join("scs-cache"),
    }
}

/// The subdirectory of `root` that belongs to the mount at `mountpoint`.
pub fn cache_dir_for(root: &Path, mountpoint: &Path) -> PathBuf {
    let digest = Sha256::digest(mountpoint.as_os_str().as_bytes());
    root.join(format!("mount-{}", &scs_common::types::hex(&digest)[..16]))
}

/// Mounts, calls `on_ready` once the directory works, and serves until it
/// is unmounted (`fusermount3 -u`, or SIGTERM/SIGINT to this process).
///
/// # Errors
/// A one-line message: the cluster cannot be reached, the key is bad, the
/// cache directory is taken, FUSE is unavailable, or the session failed.
pub fn run(settings: Settings, on_ready: impl FnOnce()) -> Result<(), String> {
    bound_allocator();
    scs_common::raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .thread_name("scs-mount-io")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let window = settings.client.retry_window;
    let client = {
        let _in = rt.enter();
        Client::new(settings.client.clone()).map_err(|e| e.to_string())?
    };
    let client = Arc::new(client);
    // The directory only appears if the cluster answers.
    let checked = rt.block_on(async {
        tokio::time::timeout(window + Duration::from_secs(3), client.getattr(scs_common::Ino::ROOT)).await
    });
    match checked {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("cannot reach the cluster: {e}")),
        Err(_) => return Err("cannot reach the cluster: no answer".into()),
    }

    let _lock = lock_cache_dir(&settings.cache_dir)?;
    let staging = settings.cache_dir.join("staging");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
    let content_dir = settings.cache_dir.join("content");
    let content = ContentCache::open(&content_dir, cache_limit(&settings.cache_dir))
        .map_err(|e| format!("cannot use the cache {}: {e}", content_dir.display()))?;
    let pending = settings.cache_dir.join("pending");
    let (journal, left) =
        Journal::open(&pending).map_err(|e| format!("cannot use the write-back journal {}: {e}", pending.display()))?;
    let remote: Arc<dyn Cluster> = Arc::new(Remote::new(rt.handle().clone(), client, window));
    let remote: Arc<dyn Cluster> = Arc::new(TrashView::new(remote));
    let core = Arc::new(Core::new(
        remote,
        content,
        staging.clone(),
        settings.mountpoint.clone(),
        journal,
        settings.write_back,
    ));
    core.reserve_ahead();
    let leftovers = !left.is_empty();
    core.start_uploaders(left).map_err(|e| format!("cannot start the uploaders: {e}"))?;
    if leftovers && !core.wait_written_back(LEFTOVER_IDLE) {
        log::warn!("some files written back before the last stop are not on the cluster yet; they keep going up");
    }

    if let Some(addr) = settings.metrics_listen {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|e| format!("cannot serve metrics at {addr}: {e}"))?;
        let core = core.clone();
        rt.spawn(http::serve(listener, std::future::pending(), move |path| report::route(&core, path)));
    }

    let mut config = fuser::Config::default();
    config.n_threads = Some(FUSE_THREADS);
    config.mount_options = vec![
        MountOption::FSName(super::mountpoint::FS_NAME.into()),
        MountOption::Subtype("scs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if settings.allow_other {
        // fuser's name for the `allow_other` mount option.
        config.acl = fuser::SessionACL::All;
    }
    if settings.read_only {
        config.mount_options.push(MountOption::RO);
    }
    let mountpoint = settings.mountpoint.clone();
    let mut session = fuser::Session::new(ScsFs::new(core.clone()), &mountpoint, &config)
        .map_err(|e| mount_error(&mountpoint, &e))?;
    core.set_kernel(session.notifier());
    let unmounter = session.unmount_callable();
    watch_signals(&rt, core, unmounter, mountpoint.clone())?;
    log::info!("mounted the cluster at {} (cache {})", mountpoint.display(), settings.cache_dir.display());
    on_ready();

    let res = session.run();
    log::info!("unmounted {}", mountpoint.display());
    let _ = std::fs::remove_dir_all(&staging);
    rt.shutdown_timeout(Duration::from_secs(2));
    res.map_err(|e| format!("the mount at {} ended with an error: {e}", mountpoint.display()))
}

/// Transfers pass through buffers of a few MiB on many threads. glibc would
/// keep freed ones in per-thread arenas (and raise its mmap threshold after
/// the first free), so the mount's memory would settle far above what it
/// uses: keep big buffers mmapped (returned on free) and arenas few.
fn bound_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// SIGTERM or SIGINT: store what is owed, then unmount (the session then ends).
fn watch_signals(
    rt: &tokio::runtime::Runtime,
    core: Arc<Core>,
    mut unmounter: fuser::SessionUnmounter,
    mountpoint: PathBuf,
) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = rt
        .block_on(async {
            Ok::<_, std::io::Error>((signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?))
        })
        .map_err(|e| format!("cannot watch for signals: {e}"))?;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    rt.spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = tx.send(());
    });
    // Uploads block on the runtime: they run on a thread of their own.
    std::thread::Builder::new()
        .name("scs-mount-stop".into())
        .spawn(move || {
            if rx.recv().is_err() {
                return;
            }
            log::info!("stopping: storing pending files, then unmounting {}", mountpoint.display());
            core.flush_all();
            if let Err(e) = unmounter.unmount() {
                log::warn!("unmount of {} failed ({e}); detaching it", mountpoint.display());
                if let Err(e) = super::mountpoint::detach(&mountpoint) {
                    log::error!("cannot detach {}: {e}", mountpoint.display());
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start a thread: {e}"))
}

/// Takes the cache directory for this process (two mounts must not share
/// staging files). The lock lasts as long as the returned file is open.
fn lock_cache_dir(dir: &Path) -> Result<File, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the cache dir {}: {e}", dir.display()))?;
    let path = dir.join("lock");
    let f = File::create(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(format!("the cache dir {} is in use by another scs-mount (pass --cache-dir)", dir.display()));
    }
    Ok(f)
}

/// 2 GiB, or a tenth of the cache's disk if that is less.
fn cache_limit(dir: &Path) -> u64 {
    let Ok(st) = scs_common::mounts::statvfs(dir) else { return CACHE_MAX };
    let disk = st.f_blocks.saturating_mul(st.f_frsize);
    CACHE_MAX.min(disk / CACHE_DISK_SHARE).max(64 << 20)
}

fn mount_error(mountpoint: &Path, e: &std::io::Error) -> String {
    if !Path::new("/dev/fuse").exists() {
        return "FUSE is not available: /dev/fuse is missing (load the fuse module)".into();
    }
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            format!("cannot mount {}: FUSE is not available to this user ({e})", mountpoint.display())
        }
        Some(libc::ENODEV) => format!("cannot mount {}: FUSE is not available ({e})", mountpoint.display()),
        _ => format!("cannot mount {}: {e}", mountpoint.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mountpoint_gets_its_own_cache_dir() {
        let root = Path::new("/cache");
        let a = cache_dir_for(root, Path::new("/home/me/scs"));
        let b = cache_dir_for(root, Path::new("/home/me/scs2"));
        assert_ne!(a, b);
        assert_eq!(a, cache_dir_for(root, Path::new("/home/me/scs")));
        assert!(a.starts_with(root));
    }

    #[test]
    fn a_cache_dir_is_taken_by_one_mount_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_cache_dir(dir.path()).unwrap();
        // flock is per open file: a second open is refused while the first holds it.
        assert!(lock_cache_dir(dir.path()).is_err());
        drop(held);
        assert!(lock_cache_dir(dir.path()).is_ok());
    }
}
