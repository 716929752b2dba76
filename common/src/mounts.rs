//! What is mounted where (`/proc/self/mountinfo`), and how much room a file
//! system has: for the mount's start-up checks, the nodes' disk figures and
//! the tests.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One line of `/proc/self/mountinfo`, the parts used here.
#[derive(Debug, PartialEq, Eq)]
pub struct MountLine {
    pub mountpoint: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// This process's view of the mounts (empty if it cannot be read).
pub fn read_mountinfo() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
}

/// The mounts at `path`, oldest first: the last one is on top.
pub fn mounts_at<'a>(mountinfo: &'a str, path: &'a Path) -> impl Iterator<Item = MountLine> + 'a {
    mountinfo.lines().filter_map(parse_line).filter(move |m| m.mountpoint == path)
}

/// The mount on top at `path`, if any.
pub fn top_mount(mountinfo: &str, path: &Path) -> Option<MountLine> {
    mounts_at(mountinfo, path).last()
}

/// statvfs(3) of the file system at `path`.
///
/// # Errors
/// What the call says (ENOTCONN for a FUSE mount whose process is gone).
pub fn statvfs(path: &Path) -> std::io::Result<libc::statvfs> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: statvfs fills the struct we pass; zeroed is a valid start.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a valid out pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
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
        assert_eq!(mounts_at(INFO, Path::new("/home/me/scs")).count(), 2);
        let top = top_mount(INFO, Path::new("/home/me/scs")).unwrap();
        assert_eq!(top.fstype, "fuse.sshfs", "the later line is mounted over the earlier one");
        let spaced = top_mount(INFO, Path::new("/home/me/my drive")).unwrap();
        assert_eq!(spaced.source, "me@host:/");
        assert!(top_mount(INFO, Path::new("/home/me")).is_none());
        assert_eq!(parse_line("garbage"), None);
    }

    #[test]
    fn statvfs_of_a_missing_path_is_an_error() {
        assert!(statvfs(Path::new("/")).is_ok());
        assert!(statvfs(Path::new("/no/such/dir/here")).is_err());
    }
}
