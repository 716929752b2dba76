//! The final state as each client sees it: the CLI through discovery, the
//! CLI pointed at each node in turn, and a real `scs-mount` run from the
//! clients' namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::action::Seen;
use super::cluster::NsCluster;
use super::workload::{self, hex};
use crate::bins::bin;
use crate::cli;
use crate::mount::is_mounted;
use crate::report::LsEntry;

/// How many reads run at once (the machine has two cores).
const READERS: usize = 4;
/// Attempts of one final read before it counts as unreadable.
const ATTEMPTS: u32 = 3;
/// How long reading everything through the mount may take.
const MOUNT_DEADLINE: Duration = Duration::from_secs(120);

/// A view: every name and what it reads as (`Err`: it could not be read).
pub type View = BTreeMap<String, Result<Seen, String>>;

/// Downloads every name through discovery, a few at a time.
pub fn cli_view(c: &NsCluster, names: &[String]) -> View {
    let chunks: Vec<&[String]> = names.chunks(names.len().div_ceil(READERS).max(1)).collect();
    thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                s.spawn(move || chunk.iter().map(|n| (n.clone(), read_with_retries(c, n))).collect::<Vec<_>>())
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a reader thread")).collect()
    })
}

fn read_with_retries(c: &NsCluster, name: &str) -> Result<Seen, String> {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            thread::sleep(Duration::from_secs(1));
        }
        let (ran, seen) = workload::read(c, name);
        match seen {
            Some(s) => return Ok(s),
            None => last = ran.error_line(),
        }
    }
    Err(last)
}

/// How deep below a client's directory the listings look (directory
/// renames nest a client's five directories at most that deep).
const MAX_DEPTH: usize = 8;

/// The file names listed below each client's directory, through discovery
/// (`None`) or through node `Some(id)`.
pub fn listing(c: &NsCluster, clients: u32, via: Option<u32>) -> Result<BTreeSet<String>, String> {
    let mut names = BTreeSet::new();
    let mut todo: Vec<(String, usize)> = (1..=clients).map(|k| (format!("c{k}"), 0)).collect();
    while let Some((dir, depth)) = todo.pop() {
        let args: Vec<OsString> = vec!["ls".into(), dir.clone().into(), "--json".into()];
        let ran = match via {
            None => c.scs(&args, workload::OP_DEADLINE),
            Some(id) => c.scs_at(&c.net().node_addr(id), &args, workload::OP_DEADLINE),
        };
        if !ran.ok() {
            // A client that never made a file has no directory.
            if depth == 0 && workload::is_missing(&ran, &dir) {
                continue;
            }
            return Err(format!("ls {dir}: {}", ran.error_line()));
        }
        let entries: Vec<LsEntry> = serde_json::from_slice(&ran.stdout)
            .map_err(|e| format!("ls {dir} --json is not the documented JSON: {e}"))?;
        for e in entries {
            match e.kind.as_str() {
                "file" => {
                    names.insert(e.name);
                }
                "dir" if depth < MAX_DEPTH => todo.push((e.name, depth + 1)),
                "dir" => return Err(format!("{} is deeper than any directory rename makes", e.name)),
                other => return Err(format!("{}: a {other}, which no client made", e.name)),
            }
        }
    }
    Ok(names)
}

/// A `scs-mount` in the clients' namespace; unmounted and killed on drop.
struct MountGuard {
    path: PathBuf,
    child: Child,
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(&self.path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Why a mount cannot be tried here (`None`: it can).
pub fn mount_unavailable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    let has =
        |p: &str| std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).any(|d| d.join(p).is_file());
    if !has("fusermount3") {
        return Some("no fusermount3 (Debian package fuse3)".into());
    }
    None
}

/// Mounts the cluster from the clients' namespace and reads every name and
/// each client's directory through the file system.
///
/// # Errors
/// When the mount does not come up or reading hangs.
pub fn mount_view(c: &NsCluster, names: &[String], clients: u32) -> Result<(View, BTreeSet<String>), String> {
    let path = c.dir().join("mnt");
    let cache = c.dir().join("mount-cache");
    std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
    let path = path.canonicalize().map_err(|e| e.to_string())?;
    let log = std::fs::File::create(c.dir().join("mount.log")).map_err(|e| e.to_string())?;
    let key = c.dir().join("cluster.key");
    let mut cmd = Command::new(bin("scs-mount"));
    cmd.arg(&path)
        .args(c.client_flags())
        .arg("--secret-file")
        .arg(&key)
        .arg("--cache-dir")
        .arg(&cache)
        .arg("--foreground")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    c.net().client_ns().enter(&mut cmd);
    cli::die_with_parent(&mut cmd);
    let child = cmd.spawn().map_err(|e| format!("cannot start scs-mount: {e}"))?;
    let mut guard = MountGuard { path: path.clone(), child };
    let start = Instant::now();
    while !is_mounted(&path) {
        if let Ok(Some(st)) = guard.child.try_wait() {
            let log = std::fs::read_to_string(c.dir().join("mount.log")).unwrap_or_default();
            return Err(format!("scs-mount exited with {st}: {}", log.trim()));
        }
        if start.elapsed() > Duration::from_secs(20) {
            return Err("scs-mount did not mount within 20 s".into());
        }
        thread::sleep(Duration::from_millis(50));
    }
    // Read in a thread of its own: a hung FUSE read is ended by the lazy
    // unmount and kill of the guard.
    let (tx, rx) = mpsc::channel();
    let (root, todo) = (path.clone(), names.to_vec());
    let reader = thread::spawn(move || {
        let view: View = todo.iter().map(|n| (n.clone(), read_file(&root.join(n)))).collect();
        let mut listed = BTreeSet::new();
        let mut err = None;
        let mut todo: Vec<(String, usize)> = (1..=clients).map(|k| (format!("c{k}"), 0)).collect();
        while let Some((dir, depth)) = todo.pop() {
            let rd = match std::fs::read_dir(root.join(&dir)) {
                Ok(rd) => rd,
                Err(e) if depth == 0 && e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    err = Some(format!("readdir {dir}: {e}"));
                    continue;
                }
            };
            for e in rd {
                let e = match e {
                    Ok(e) => e,
                    Err(e) => {
                        err = Some(format!("readdir {dir}: {e}"));
                        continue;
                    }
                };
                let name = format!("{dir}/{}", e.file_name().to_string_lossy());
                match e.file_type() {
                    Ok(t) if t.is_file() => {
                        listed.insert(name);
                    }
                    Ok(t) if t.is_dir() && depth < MAX_DEPTH => todo.push((name, depth + 1)),
                    Ok(_) => err = Some(format!("{name}: not a file or directory, or too deep")),
                    Err(e) => err = Some(format!("stat {name}: {e}")),
                }
            }
        }
        let _ = tx.send(match err {
            None => Ok((view, listed)),
            Some(e) => Err(e),
        });
    });
    let result =
        rx.recv_timeout(MOUNT_DEADLINE).map_err(|_| format!("reading through the mount took over {MOUNT_DEADLINE:?}"));
    drop(guard);
    let _ = reader.join();
    result?
}

fn read_file(path: &Path) -> Result<Seen, String> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Seen::Present(hex(&Sha256::digest(bytes)))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Seen::Absent),
        Err(e) => Err(e.to_string()),
    }
}
