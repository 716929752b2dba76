//! The mount against ext4, call by call: one scripted sequence of file-system
//! calls (`tests/scripts/errno_vs_ext4.py`: create and open flags, read and
//! write, truncate, mkdir and rmdir, unlink, every kind of rename, links,
//! symlinks, FIFOs, sockets and devices, chmod and chown rules, set-id bits,
//! sticky and setgid directories, the umask, utimensat, ctime and directory
//! times, xattrs, fallocate, long names) runs in a directory on ext4 and in
//! an `allow_other` scs mount, as root and as a user (uid and gid 65534 with
//! one supplementary group, through `setpriv`), and each call must end the
//! same way in both: success, or the same errno, with the same attributes
//! where the script prints them. The few calls where scs differs by design
//! are listed in [`BY_DESIGN`], each with the answer scs must give instead.
//!
//! These need root (fixtures owned by other users, `setpriv`, devices),
//! /dev/fuse and a python3 that every user may run. Every mount and loop
//! device is removed when its test ends, also on failure.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use scs_tests::cli::run;
use scs_tests::mount::{Mount, MountOptions};
use scs_tests::Cluster;

/// The script both runs follow.
const SCRIPT: &str = include_str!("../scripts/errno_vs_ext4.py");
/// One run of the script (about a thousand calls, each pause included).
const RUN_DEADLINE: Duration = Duration::from_secs(120);
/// The user of the unprivileged runs...
const USER: u32 = 65534;
/// ... and the supplementary group it has (`SUPP` in the script).
const USER_SUPPLEMENTARY_GROUP: u32 = 65532;
/// statfs(2) f_type of ext2/3/4.
const EXT4_MAGIC: i64 = 0xEF53;

/// Lines where scs differs from ext4 by design: (line, what scs must answer
/// instead, why). Not compared with ext4, but still checked. The script
/// leaves out by construction what differs by design everywhere: atime after
/// reads (scs is noatime), directory sizes, inode numbers and clock times.
const BY_DESIGN: &[(&str, &str, &str)] = &[
    (
        "xattr.posix_acl_get",
        "EOPNOTSUPP",
        "POSIX ACLs are not supported (README); ext4 answers ENODATA for a file without one",
    ),
    (
        "xattr.value_64k",
        "ok",
        "ext4 keeps every xattr of an inode in one 4 KiB block (ENOSPC); scs allows Linux's 64 KiB per value",
    ),
    ("fallocate.keep_size", "EOPNOTSUPP", "scs has fallocate mode 0 only (issue 10, README)"),
    ("fallocate.punch_hole", "EOPNOTSUPP", "scs has fallocate mode 0 only (issue 10, README)"),
    ("open.o_tmpfile", "EOPNOTSUPP", "O_TMPFILE is not supported (README)"),
    ("names.not_utf8", "EINVAL", "names that are not UTF-8 are not supported (README)"),
    ("names.symlink_target_not_utf8", "EINVAL", "symlink targets that are not UTF-8 are not supported (README)"),
];

#[test]
fn every_call_ends_as_on_ext4_for_root() {
    compare(Who::Root);
}

#[test]
fn every_call_ends_as_on_ext4_for_a_user_through_allow_other() {
    compare(Who::User);
}

/// Who runs the script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Root,
    User,
}

fn compare(who: Who) {
    if let Some(why) = unavailable(who) {
        println!("skipped: {why}");
        return;
    }
    let Some(python) = python() else {
        println!("skipped: no python3 with ctypes that every user may run");
        return;
    };
    let work = tempfile::Builder::new().prefix("scs-errno-").tempdir().expect("create a temp dir");
    // uid 65534 reads the script and reaches the ext4 directory through it.
    fs::set_permissions(work.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let script = work.path().join("errno_vs_ext4.py");
    fs::write(&script, SCRIPT).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
    let ext4 = match Ext4::make(work.path()) {
        Ok(e) => e,
        Err(why) => {
            println!("skipped: no ext4 directory to compare with: {why}");
            return;
        }
    };
    let runner = Runner { python, script, who };
    let on_ext4 = runner.run_in(&ext4.dir.join("t"));

    let c = Cluster::start(3);
    let m =
        Mount::start_with(&c, MountOptions { extra: vec!["-o".into(), "allow_other".into()], ..Default::default() });
    // The harness's temp dir (0700) holds the mountpoint: let the user through.
    let above = m.path().parent().expect("the mountpoint has a parent");
    fs::set_permissions(above, fs::Permissions::from_mode(0o755)).unwrap();
    let on_scs = runner.run_in(&m.join("t"));

    let report = Comparison::of(&on_ext4, &on_scs);
    if !report.differences.is_empty() {
        eprintln!("----- every call, as {who:?} -----\n{}", report.side_by_side());
        panic!(
            "{} of {} calls end differently in scs than on ext4 (as {who:?}):\n{}",
            report.differences.len(),
            report.compared,
            report.differences.join("\n")
        );
    }
    assert!(report.compared > 500, "the script stopped early:\n{on_scs}");
}

/// Why this comparison cannot run here, if it cannot.
fn unavailable(who: Who) -> Option<&'static str> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: the fixtures belong to other users");
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse");
    }
    if who == Who::User && Command::new("setpriv").arg("--version").stdout(Stdio::null()).status().is_err() {
        return Some("setpriv is missing (util-linux)");
    }
    None
}

/// A python3 every user may run (root's own may live under /root).
fn python() -> Option<PathBuf> {
    ["/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"].into_iter().map(PathBuf::from).find(|p| {
        fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
            && Command::new(p).args(["-c", "import ctypes"]).status().is_ok_and(|s| s.success())
    })
}

/// Runs the script: the fixtures as root, then the calls as `who`.
struct Runner {
    python: PathBuf,
    script: PathBuf,
    who: Who,
}

impl Runner {
    /// The script's lines for a run in `dir` (made fresh, owned by root).
    fn run_in(&self, dir: &Path) -> String {
        fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        let (uid, gid) = match self.who {
            Who::Root => (0, 0),
            Who::User => (USER, USER),
        };
        let ids = [uid.to_string(), gid.to_string()];
        let setup = self.python_args(&["setup".as_ref(), dir.as_os_str(), ids[0].as_ref(), ids[1].as_ref()]);
        let out = run(&self.python, &setup, RUN_DEADLINE);
        assert!(out.success(), "the fixtures could not be made in {}:\n{out}", dir.display());
        let calls = self.python_args(&["run".as_ref(), dir.as_os_str()]);
        let out = match self.who {
            Who::Root => run(&self.python, &calls, RUN_DEADLINE),
            Who::User => {
                let mut args: Vec<OsString> = [
                    format!("--reuid={USER}"),
                    format!("--regid={USER}"),
                    format!("--groups={USER_SUPPLEMENTARY_GROUP}"),
                    "--".into(),
                ]
                .into_iter()
                .map(OsString::from)
                .collect();
                args.push(self.python.clone().into());
                args.extend(calls);
                run(Path::new("setpriv"), &args, RUN_DEADLINE)
            }
        };
        assert!(out.success(), "the script failed in {} as {:?}:\n{out}", dir.display(), self.who);
        out.stdout_text()
    }

    /// `-I -B script args`: no environment, no user site, no bytecode written.
    fn python_args(&self, args: &[&std::ffi::OsStr]) -> Vec<OsString> {
        let mut all: Vec<OsString> = vec!["-I".into(), "-B".into(), self.script.clone().into()];
        all.extend(args.iter().map(OsString::from));
        all
    }
}

/// Two runs' lines, matched by name.
struct Comparison {
    /// (name, ext4's answer, scs's answer, verdict) in the script's order.
    rows: Vec<(String, String, String, &'static str)>,
    /// Lines compared (and checked, for those by design).
    compared: usize,
    /// One line per call that ends differently.
    differences: Vec<String>,
}

impl Comparison {
    fn of(ext4: &str, scs: &str) -> Comparison {
        let (ext4, scs) = (parse(ext4), parse(scs));
        let by_name: HashMap<&str, &str> = scs.iter().map(|(n, r)| (n.as_str(), r.as_str())).collect();
        let mut names: Vec<&str> = ext4.iter().map(|(n, _)| n.as_str()).collect();
        // Lines only scs printed (the script took another path there).
        let known: std::collections::HashSet<&str> = names.iter().copied().collect();
        names.extend(scs.iter().map(|(n, _)| n.as_str()).filter(|n| !known.contains(n)));
        let ext4_by_name: HashMap<&str, &str> = ext4.iter().map(|(n, r)| (n.as_str(), r.as_str())).collect();
        let mut c = Comparison { rows: Vec::new(), compared: 0, differences: Vec::new() };
        for name in names {
            let e = ext4_by_name.get(name).copied().unwrap_or("(no line)");
            let s = by_name.get(name).copied().unwrap_or("(no line)");
            let design = BY_DESIGN.iter().find(|(n, _, _)| *n == name);
            let verdict = match design {
                Some((_, want, _)) if s == *want => "by design",
                Some((_, want, why)) => {
                    c.differences.push(format!("{name}: scs {s}, wanted {want} ({why})"));
                    "DIFFERS"
                }
                None if e == s => "",
                None => {
                    c.differences.push(format!("{name}: ext4 {e}, scs {s}"));
                    "DIFFERS"
                }
            };
            c.compared += 1;
            c.rows.push((name.to_string(), e.to_string(), s.to_string(), verdict));
        }
        c
    }

    /// Every line of both runs next to each other.
    fn side_by_side(&self) -> String {
        let short = |s: &str| {
            if s.chars().count() > 70 {
                format!("{}...", s.chars().take(67).collect::<String>())
            } else {
                s.to_string()
            }
        };
        let mut out = format!("{:<60} {:<72} {:<72}\n", "call", "ext4", "scs");
        for (name, e, s, verdict) in &self.rows {
            out.push_str(&format!("{:<60} {:<72} {:<72} {verdict}\n", short(name), short(e), short(s)));
        }
        out
    }
}

/// `name: result` lines, in order.
fn parse(out: &str) -> Vec<(String, String)> {
    out.lines()
        .map(|l| match l.split_once(": ") {
            Some((n, r)) => (n.to_string(), r.to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

/// A directory on ext4: in the temp dir when that is ext4, else on a small
/// ext4 image loop-mounted there. Dropping it (also on a panic) unmounts the
/// image, which frees its loop device.
struct Ext4 {
    dir: PathBuf,
    /// The image's mountpoint, while mounted.
    mounted: Option<PathBuf>,
}

impl Ext4 {
    fn make(work: &Path) -> Result<Ext4, String> {
        let dir = work.join("ext4");
        fs::create_dir(&dir).map_err(|e| e.to_string())?;
        if fs_type(work)? == EXT4_MAGIC {
            return Ok(Ext4 { dir, mounted: None });
        }
        let image = work.join("ext4.img");
        let file = fs::File::create(&image).map_err(|e| e.to_string())?;
        file.set_len(64 << 20).map_err(|e| e.to_string())?;
        // As a disk's file system is made: a small image would get 1 KiB
        // blocks, and with them shorter symlink targets and less xattr room.
        let mkfs: Vec<OsString> = vec!["-q".into(), "-F".into(), "-b".into(), "4096".into(), "-I".into(), "256".into()];
        let out = run(Path::new("mkfs.ext4"), &[mkfs, vec![image.clone().into()]].concat(), RUN_DEADLINE);
        if !out.success() {
            return Err(format!("mkfs.ext4 failed:\n{out}"));
        }
        // Guarded before mounting: a mount that half worked goes too.
        let mut e = Ext4 { dir: dir.clone(), mounted: Some(dir.clone()) };
        let out =
            run(Path::new("mount"), &["-o".into(), "loop".into(), image.into(), dir.clone().into()], RUN_DEADLINE);
        if !out.success() {
            e.mounted = None;
            return Err(format!("cannot loop-mount an ext4 image:\n{out}"));
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        match fs_type(&dir)? {
            EXT4_MAGIC => Ok(e),
            other => Err(format!("the image mounted as file system type {other:#x}")),
        }
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        if let Some(mp) = self.mounted.take() {
            // `mount -o loop` made the loop device autoclear: unmounting frees it.
            let ok = Command::new("umount").arg(&mp).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&mp).stderr(Stdio::null()).status();
            }
        }
    }
}

/// statfs(2) f_type of the file system holding `path`.
// f_type is i64 on x86_64 but narrower elsewhere.
#[allow(clippy::unnecessary_cast)]
fn fs_type(path: &Path) -> Result<i64, String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: statfs is plain data, for which all zeroes is a valid value.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string; statfs writes only into `s`, which we own.
    if unsafe { libc::statfs(c.as_ptr(), &mut s) } != 0 {
        return Err(format!("statfs {}: {}", path.display(), std::io::Error::last_os_error()));
    }
    Ok(s.f_type as i64)
}
