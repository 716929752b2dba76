//! Checking the mountpoint before mounting: it must be a directory, not
//! already an scs mount; an scs mount whose process died (killed, crashed:
//! every access fails with "Transport endpoint is not connected") is
//! cleared first, so a restart, by hand or by systemd, just works.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if top_mount(&mountinfo, &p).is_some_and(|m| m.is_scs()) {
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

/// statvfs(3) of the file system at `path`.
pub(crate) fn statvfs(path: &Path) -> std::io::Result<libc::statvfs> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: statvfs fills the struct we pass; zeroed is a valid start.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid path and a valid out pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

/// `mp` answers ENOTCONN: if an scs mount is there, its process is gone;
/// unmount it (lazily: whoever still has files open there keeps erroring,
/// the path is free at once). Another file system's broken mount is left
/// alone.
fn clear_dead(mp: &Path, err: &std::io::Error) -> Result<(), String> {
    let abs = std::path::absolute(mp).map_err(|e| format!("cannot use mountpoint {}: {e}", mp.display()))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if !top_mount(&mountinfo, &abs).is_some_and(|m| m.is_scs()) {
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
    if !by_fusermount && !detach(&abs) {
        let p = abs.display();
        return Err(format!("{p} is an scs mount whose scs-mount has stopped; unmount it first: fusermount3 -u {p}"));
    }
    eprintln!("scs-mount: cleared the mount at {} left by an scs-mount that had stopped", abs.display());
    Ok(())
}

/// A lazy unmount (root only); whether it worked.
fn detach(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: umount2 with a valid NUL-terminated path.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) == 0 }
}

/// One line of `/proc/self/mountinfo`, the parts used here.
#[derive(Debug, PartialEq, Eq)]
pub struct MountLine {
    pub mountpoint: PathBuf,
    pub fstype: String,
    pub source: String,
}

impl MountLine {
    fn is_scs(&self) -> bool {
        self.fstype.starts_with("fuse") && self.source == FS_NAME
    }
}

/// The mount on top at `path` (the last one listed there), if any.
pub fn top_mount(mountinfo: &str, path: &Path) -> Option<MountLine> {
    mountinfo.lines().filter_map(parse_line).rfind(|m| m.mountpoint == path)
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`: the
/// fifth field is the mountpoint; after the ` - ` come type and source.
fn parse_line(line: &str) -> Option<MountLine> {
    let (left, right) = line.split_once(" - ")?;
    let mountpoint = left.split(' ').nth(4)?;
    let mut right = right.split(' ');
    let fstype = right.next()?.to_string();
    let source = unescape(right.next()?);
    Some(MountLine { mountpoint: PathBuf::from(unescape(mountpoint)), fstype, source })
}

/// mountinfo writes space, tab, newline and backslash as `\040` and so on.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 4]).ok().and_then(|d| u8::from_str_radix(d, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
61 22 0:50 / /home/me/scs rw,nosuid,nodev,relatime shared:30 - fuse scs rw,user_id=0,group_id=0
62 22 0:51 / /home/me/my\\040drive rw,nosuid,nodev - fuse.sshfs me@host:/ rw
63 61 0:52 / /home/me/scs rw,nosuid,nodev - fuse.sshfs me@host:/ rw
";

    #[test]
    fn the_mount_on_top_of_a_path_is_found() {
        let top = top_mount(INFO, Path::new("/home/me/scs")).unwrap();
        assert_eq!(top.fstype, "fuse.sshfs", "the later line is mounted over the earlier one");
        assert!(!top.is_scs());
        let spaced = top_mount(INFO, Path::new("/home/me/my drive")).unwrap();
        assert_eq!(spaced.source, "me@host:/");
        assert!(top_mount(INFO, Path::new("/home/me")).is_none());
    }

    #[test]
    fn only_a_fuse_mount_named_scs_counts_as_ours() {
        let info = "61 22 0:50 / /m rw - fuse scs rw\n";
        assert!(top_mount(info, Path::new("/m")).unwrap().is_scs());
        let info = "61 22 0:50 / /m rw - fuse.scs scs rw\n";
        assert!(top_mount(info, Path::new("/m")).unwrap().is_scs());
        let info = "61 22 0:50 / /m rw - tmpfs scs rw\n";
        assert!(!top_mount(info, Path::new("/m")).unwrap().is_scs());
        assert_eq!(parse_line("garbage"), None);
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
