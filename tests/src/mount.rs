//! [`Mount`]: a real `scs-mount` of a test [`Cluster`] on a fresh temp
//! directory. Dropping it (also on a panic) runs `fusermount3 -u -z` (or
//! `umount -l`) on the mountpoint and kills the mount process by pid, so a
//! failing test never leaves a mount or a process behind.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use scs_common::mounts;

use crate::bins::bin;
use crate::cli::{self, Output};
use crate::cluster::Cluster;

/// How long a mount may take to come up (the cluster check included).
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `scs-mount` may take to exit after an unmount or a signal.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// How to start a mount.
#[derive(Clone, Debug, Default)]
pub struct MountOptions {
    /// Run as a daemon (the default way) instead of `--foreground`.
    pub daemon: bool,
    /// Reuse this mountpoint (a remount; canonical) instead of a fresh one.
    pub mountpoint: Option<PathBuf>,
    /// Reuse this cache root instead of a fresh one.
    pub cache_root: Option<PathBuf>,
    /// Extra arguments (`--node ADDR`, say).
    pub extra: Vec<OsString>,
}

/// A live mount of a cluster.
pub struct Mount {
    /// Owns the mountpoint and cache root when they were made here.
    _dir: Option<tempfile::TempDir>,
    mountpoint: PathBuf,
    cache_root: PathBuf,
    log: PathBuf,
    /// A foreground mount's process.
    child: Option<Child>,
    /// The mount process (foreground child or daemon).
    pid: u32,
}

impl Mount {
    /// Mounts `cluster` in the foreground and waits until it is live.
    #[track_caller]
    pub fn start(cluster: &Cluster) -> Mount {
        Mount::start_with(cluster, MountOptions::default())
    }

    /// Mounts `cluster` as `opts` say and waits until it is live.
    #[track_caller]
    pub fn start_with(cluster: &Cluster, opts: MountOptions) -> Mount {
        let dir =
            tempfile::Builder::new().prefix("scs-mount-test-").tempdir().expect("create a temp dir for the mount");
        // mountinfo shows the canonical path. A given mountpoint is used as
        // it is (it may be a dead mount that scs-mount is to clear).
        let mountpoint = match opts.mountpoint.clone() {
            Some(given) => {
                // Gone with an earlier mount's temp dir, say; fails on a dead mount.
                let _ = std::fs::create_dir_all(&given);
                given
            }
            None => {
                let fresh = dir.path().join("mnt");
                std::fs::create_dir_all(&fresh).expect("create the mountpoint");
                fresh.canonicalize().expect("canonical mountpoint")
            }
        };
        let cache_root = opts.cache_root.clone().unwrap_or_else(|| dir.path().join("cache"));
        let log = dir.path().join("mount.log");
        let mut args = mount_args(cluster, &mountpoint, &cache_root);
        args.extend(opts.extra.iter().cloned());
        if opts.daemon {
            let out = cli::run(&bin("scs-mount"), &args, MOUNT_TIMEOUT);
            assert!(out.success(), "scs-mount failed:\n{out}");
            assert!(is_mounted(&mountpoint), "scs-mount exited 0 but {} is not mounted:\n{out}", mountpoint.display());
            let pid = find_mount_process(&mountpoint).expect("the daemon's pid");
            return Mount { _dir: Some(dir), mountpoint, cache_root, log, child: None, pid };
        }
        args.push("--foreground".into());
        let log_file = File::create(&log).expect("create the mount log");
        let mut cmd = Command::new(bin("scs-mount"));
        cmd.args(&args)
            .env("RUST_LOG", std::env::var("SCS_MOUNT_LOG").unwrap_or_else(|_| "info,scs_mount=debug".into()))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone the log handle"))
            .stderr(log_file);
        cli::die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("start scs-mount");
        let pid = child.id();
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        // Mounted and answering: a dead mount there (for scs-mount to clear) does not count.
        while !(is_mounted(&mountpoint) && std::fs::read_dir(&mountpoint).is_ok()) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("scs-mount exited with {status} before mounting:\n{}", read_log(&log));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} was not mounted within {MOUNT_TIMEOUT:?}:\n{}", mountpoint.display(), read_log(&log));
            }
            thread::sleep(Duration::from_millis(20));
        }
        Mount { _dir: Some(dir), mountpoint, cache_root, log, child: Some(child), pid }
    }

    /// The mountpoint.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// A path inside the mount.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mountpoint.join(rel)
    }

    /// The cache root given to `scs-mount --cache-dir`.
    pub fn cache_root(&self) -> &Path {
        &self.cache_root
    }

    /// The mount process's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The mount's log (foreground mounts).
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Peak resident memory of the mount process so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Unmounts with `fusermount3 -u` and asserts the process exits 0.
    #[track_caller]
    pub fn unmount(mut self) {
        let out = cli::run(Path::new("fusermount3"), &["-u".into(), self.mountpoint.clone().into()], EXIT_TIMEOUT);
        assert!(out.success(), "fusermount3 -u failed:\n{out}");
        self.wait_exit_ok();
    }

    /// Sends `sig` to the mount process and asserts it exits 0 and unmounts.
    #[track_caller]
    pub fn stop_with(mut self, sig: libc::c_int) {
        // SAFETY: kill(2) on the mount process we started.
        unsafe { libc::kill(self.pid as libc::pid_t, sig) };
        self.wait_exit_ok();
        assert!(!is_mounted(&self.mountpoint), "still mounted after the mount process exited");
    }

    #[track_caller]
    fn wait_exit_ok(&mut self) {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        match self.child.as_mut() {
            Some(child) => {
                let status = cli::wait_until(child, deadline);
                self.child = None;
                match status {
                    Some(s) => assert!(s.success(), "scs-mount exited with {s}:\n{}", read_log(&self.log)),
                    None => panic!("scs-mount did not exit within {EXIT_TIMEOUT:?}:\n{}", read_log(&self.log)),
                }
            }
            None => {
                while process_alive(self.pid) {
                    assert!(Instant::now() < deadline, "the scs-mount daemon did not exit within {EXIT_TIMEOUT:?}");
                    thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // fusermount3, or (as root, without fuse3 installed) umount.
        for (cmd, lazy) in [("fusermount3", "-uz"), ("umount", "-l")] {
            if is_mounted(&self.mountpoint) {
                let _ = Command::new(cmd)
                    .arg(lazy)
                    .arg(&self.mountpoint)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        match self.child.take() {
            Some(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            None if process_alive(self.pid) && is_scs_mount(self.pid, &self.mountpoint) => {
                // SAFETY: kill(2) on the daemon of this mount (checked by its command line).
                unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
            }
            None => {}
        }
        if thread::panicking() {
            eprintln!("----- scs-mount log ({}) -----\n{}", self.mountpoint.display(), read_log(&self.log));
        }
    }
}

/// The arguments that point `scs-mount` at `cluster`.
pub fn mount_args(cluster: &Cluster, mountpoint: &Path, cache_root: &Path) -> Vec<OsString> {
    vec![
        mountpoint.into(),
        "--group".into(),
        cluster.group().to_string().into(),
        "--iface".into(),
        "127.0.0.1".into(),
        "--secret-file".into(),
        cluster.key_file().into(),
        "--cache-dir".into(),
        cache_root.into(),
    ]
}

/// Runs `scs-mount` with `args` to its end (a start that should fail).
pub fn run_scs_mount(args: &[OsString], deadline: Duration) -> Output {
    cli::run(&bin("scs-mount"), args, deadline)
}

/// Whether `path` is a mountpoint of a FUSE file system right now.
pub fn is_mounted(path: &Path) -> bool {
    mounts::mounts_at(&mounts::read_mountinfo(), path).any(|m| m.fstype.starts_with("fuse"))
}

fn process_alive(pid: u32) -> bool {
    // A zombie still has /proc/PID; its state is Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

fn is_scs_mount(pid: u32, mountpoint: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let mp = mountpoint.as_os_str().as_encoded_bytes();
    args.first().is_some_and(|a| a.ends_with(b"scs-mount")) && args.contains(&mp)
}

/// The pid of the `scs-mount` process serving `mountpoint`.
pub fn find_mount_process(mountpoint: &Path) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .find(|&pid| process_alive(pid) && is_scs_mount(pid, mountpoint))
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
