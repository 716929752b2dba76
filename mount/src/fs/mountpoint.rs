//! Checking the mountpoint before mounting: it must be a directory, not
//! already an scs mount; an scs mount whose process died (killed, crashed:
//! every access fails with "Transport endpoint is not connected") is
//! cleared first, so a restart, by hand or by systemd, just works.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use scs_common::mounts::{read_mountinfo, statvfs, top_mount, MountLine};

/// The file system name scs mounts carry (`mount` shows it as the source).
pub const FS_NAME: &str = "scs";

/// Checks `mp` and clears a dead scs mount there; the canonical mountpoint.
///
/// # Errors
/// A one-line message: missing, not a directory, already mounted, or a
/// dead mount that cannot be cleared.
pub fn prepare(mp: &Path) -> Result<PathBuf, String> {
    check(mp, true)
}

fn check(mp: &Path, may_clear: bool) -> Result<PathBuf, String> {
    let dead = |e: &std::io::Error| may_clear && e.raw_os_error() == Some(libc::ENOTCONN);
    match std::fs::metadata(mp) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("mountpoint {} is not a directory", mp.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("mountpoint {} does not exist", mp.display()))
        }
        Err(e) if dead(&e) => {
            clear_dead(mp, &e)?;
            return check(mp, false);
        }
        Err(e) => return Err(format!("cannot use mountpoint {}: {e}", mp.display())),
    }
    let p = mp.canonicalize().map_err(|e| format!("cannot use mountpoint {}: {e}", mp.display()))?;
    if scs_mount_at(&p) {
        // The kernel may still answer stat from its cache for a moment
        // after the mount process died; statfs always asks the process.
        if let Err(e) = statvfs(&p) {
            if dead(&e) {
                clear_dead(&p, &e)?;
                return check(&p, false);
            }
        }
        let p = p.display();
        return Err(format!("{p} is already an scs mount (unmount it first: fusermount3 -u {p})"));
    }
    Ok(p)
}

/// `mp` answers ENOTCONN: if an scs mount is there, its process is gone;
/// unmount it (lazily: whoever still has files open there keeps erroring,
/// the path is free at once). Another file system's broken mount is left
/// alone.
fn clear_dead(mp: &Path, err: &std::io::Error) -> Result<(), String> {
    let abs = std::path::absolute(mp).map_err(|e| format!("cannot use mountpoint {}: {e}", mp.display()))?;
    if !scs_mount_at(&abs) {
        return Err(format!("cannot use mountpoint {}: {err}", mp.display()));
    }
    // fusermount3 is setuid: it may unmount the user's own mounts; root can do it directly.
    let by_fusermount = Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(&abs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !by_fusermount && detach(&abs).is_err() {
        let p = abs.display();
        return Err(format!("{p} is an scs mount whose scs-mount has stopped; unmount it first: fusermount3 -u {p}"));
    }
    eprintln!("scs-mount: cleared the mount at {} left by an scs-mount that had stopped", abs.display());
    Ok(())
}

/// A lazy unmount (root only): the mount goes away once nothing uses it.
pub(crate) fn detach(path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: umount2 with a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the mount on top at `path` is an scs mount.
fn scs_mount_at(path: &Path) -> bool {
    top_mount(&read_mountinfo(), path).is_some_and(|m| is_scs(&m))
}

fn is_scs(m: &MountLine) -> bool {
    m.fstype.starts_with("fuse") && m.source == FS_NAME
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_fuse_mount_named_scs_counts_as_ours() {
        let line = |fstype: &str| MountLine { mountpoint: "/m".into(), fstype: fstype.into(), source: "scs".into() };
        assert!(is_scs(&line("fuse")));
        assert!(is_scs(&line("fuse.scs")));
        assert!(!is_scs(&line("tmpfs")));
        let sshfs = MountLine { source: "me@host:/".into(), ..line("fuse.sshfs") };
        assert!(!is_scs(&sshfs));
    }

    #[test]
    fn a_plain_directory_is_free_and_a_file_or_nothing_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(prepare(dir.path()).unwrap(), dir.path().canonicalize().unwrap());
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(prepare(&file).unwrap_err().contains("is not a directory"));
        assert!(prepare(&dir.path().join("none")).unwrap_err().contains("does not exist"));
    }
}
