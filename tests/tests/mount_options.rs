//! The mount as mount(8) and fstab use it: `scs-mount SOURCE DIR -o OPTIONS`,
//! the `mount.scs` helper (also run by the real mount(8) from an fstab line,
//! in a mount namespace of the test's own), `ro`, `allow_other` and its
//! fuse.conf check, and the refusal of unknown options.
//!
//! These need /dev/fuse and root (the other-user checks run through
//! `setpriv` as uid 65534). Every mount is unmounted and its daemon killed by
//! pid when its test ends, also on failure.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use scs_tests::bins::bin;
use scs_tests::cli::run;
use scs_tests::mount::{is_mounted, EXIT_TIMEOUT, MOUNT_TIMEOUT};
use scs_tests::{Cluster, Output};

/// Ordinary commands on the mount must finish within this.
const CMD_DEADLINE: Duration = Duration::from_secs(60);
/// The user the other-user checks run as.
const NOBODY: u32 = 65534;

/// A mountpoint and a cache root in a fresh temp dir that every user may
/// traverse (a temp dir is 0700), so uid 65534 can reach the mount.
struct Place {
    dir: tempfile::TempDir,
    mountpoint: PathBuf,
    cache: PathBuf,
}

fn place() -> Place {
    let dir = tempfile::Builder::new().prefix("scs-mountopts-").tempdir().expect("create a temp dir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod the temp dir");
    let mountpoint = dir.path().join("mnt");
    fs::create_dir(&mountpoint).expect("create the mountpoint");
    let mountpoint = mountpoint.canonicalize().expect("canonical mountpoint");
    let cache = dir.path().join("cache");
    Place { dir, mountpoint, cache }
}

/// A mount made by a command that daemonizes (`scs-mount SOURCE DIR`,
/// `mount.scs`, mount(8)). Dropping it (also on a panic) unmounts lazily and
/// kills the daemon by pid.
struct Daemon {
    mountpoint: PathBuf,
    pid: Option<u32>,
}

impl Daemon {
    /// Guards `mountpoint` before the command that mounts it runs, so a
    /// command that fails half way leaves nothing behind either.
    fn guard(mountpoint: &Path) -> Daemon {
        Daemon { mountpoint: mountpoint.to_path_buf(), pid: None }
    }

    /// Asserts the mounting command succeeded and the mount is there; notes the daemon's pid.
    #[track_caller]
    fn started(&mut self, out: &Output) {
        self.pid = find_daemon(&self.mountpoint);
        assert!(out.success(), "the mount command failed:\n{out}");
        assert!(is_mounted(&self.mountpoint), "exit 0 but {} is not mounted:\n{out}", self.mountpoint.display());
        assert!(self.pid.is_some(), "no daemon serves {}", self.mountpoint.display());
    }

    /// `fusermount3 -u`, then the daemon must exit by itself.
    #[track_caller]
    fn unmount(mut self) {
        let out = run(Path::new("fusermount3"), &["-u".into(), self.mountpoint.clone().into()], EXIT_TIMEOUT);
        assert!(out.success(), "fusermount3 -u failed:\n{out}");
        let pid = self.pid.take().expect("started");
        wait_gone(pid);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if is_mounted(&self.mountpoint) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.mountpoint)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // The pid noted at start, or (a failed start) whichever daemon serves the path now.
        if let Some(pid) = self.pid.take().or_else(|| find_daemon(&self.mountpoint)) {
            if is_daemon_of(pid, &self.mountpoint) {
                // SAFETY: kill(2) on the daemon of this test's mount (checked by its command line).
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}

#[track_caller]
fn wait_gone(pid: u32) {
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while alive(pid) {
        assert!(Instant::now() < deadline, "the mount daemon {pid} did not exit within {EXIT_TIMEOUT:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/PID; its state is Z.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// Whether `pid` is an scs-mount daemon (under either name) for `mountpoint`.
fn is_daemon_of(pid: u32, mountpoint: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let mp = mountpoint.as_os_str().as_encoded_bytes();
    let named = |a: &&[u8]| a.ends_with(b"/scs-mount") || a.ends_with(b"/mount.scs");
    alive(pid) && args.first().is_some_and(named) && args.contains(&mp)
}

fn find_daemon(mountpoint: &Path) -> Option<u32> {
    fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .find(|&pid| pid != std::process::id() && is_daemon_of(pid, mountpoint))
}

/// `dir/mount.scs`, a symlink to the built scs-mount: what `make install` puts in /sbin.
fn helper_in(dir: &Path) -> PathBuf {
    let link = dir.join("mount.scs");
    std::os::unix::fs::symlink(bin("scs-mount"), &link).expect("link mount.scs");
    link
}

/// `-o` words that point a mount at `c` without multicast: its leader, its key, `cache`.
fn cluster_options(c: &Cluster, cache: &Path, key: &Path) -> String {
    let leader = c.status().leader.expect("a leader");
    format!("node={},secret_file={},cache_dir={}", c.node_addr(leader), key.display(), cache.display())
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Exit `code` and exactly one stderr line, `prefix: ...needle...`.
#[track_caller]
fn assert_one_line(out: &Output, code: i32, prefix: &str, needle: &str) {
    assert_eq!(out.code(), Some(code), "wrong exit code:\n{out}");
    let lines: Vec<&str> = out.stderr.trim_end().lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with(&format!("{prefix}: ")) && lines[0].contains(needle),
        "expected one line `{prefix}: ...{needle}...`:\n{out}"
    );
}

/// Runs `program args` as uid/gid 65534 with no groups, or says why it cannot.
fn as_nobody(program: &Path, args: &[OsString]) -> Output {
    let mut all: Vec<OsString> =
        os(&["--reuid", &NOBODY.to_string(), "--regid", &NOBODY.to_string(), "--clear-groups", "--"]);
    all.push(program.into());
    all.extend(args.iter().cloned());
    run(Path::new("setpriv"), &all, CMD_DEADLINE)
}

/// Why the other-user checks cannot run here, if they cannot.
fn nobody_unavailable() -> Option<&'static str> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root, so cannot run commands as uid 65534");
    }
    if Command::new("setpriv").arg("--version").stdout(Stdio::null()).status().is_err() {
        return Some("setpriv is missing (util-linux)");
    }
    None
}

#[test]
fn the_mount8_form_mounts_with_options_from_o_and_daemonizes() {
    let c = Cluster::start(3);
    let p = place();
    c.upload_bytes("before.txt", b"stored before the mount");
    let opts = format!("{},_netdev,defaults,rw", cluster_options(&c, &p.cache, c.key_file()));
    let mut d = Daemon::guard(&p.mountpoint);
    let args = vec!["scs".into(), p.mountpoint.clone().into(), "-o".into(), opts.into()];
    let out = run(&bin("scs-mount"), &args, MOUNT_TIMEOUT);
    d.started(&out);
    assert!(out.stderr.is_empty(), "a good mount says nothing:\n{out}");

    assert_eq!(fs::read(p.mountpoint.join("before.txt")).unwrap(), b"stored before the mount");
    fs::create_dir(p.mountpoint.join("docs")).unwrap();
    fs::write(p.mountpoint.join("docs/new.txt"), b"written through the mount").unwrap();
    c.assert_content("docs/new.txt", b"written through the mount");
    // The cache went where cache_dir= said.
    assert!(fs::read_dir(&p.cache).unwrap().next().is_some(), "nothing in the cache_dir given");
    d.unmount();
}

#[test]
fn mount_scs_runs_as_the_helper_mount8_calls() {
    let c = Cluster::start(3);
    let p = place();
    let helper = helper_in(p.dir.path());
    c.upload_bytes("hello.txt", b"hello from the cluster");
    let good = cluster_options(&c, &p.cache, c.key_file());
    let target: OsString = p.mountpoint.clone().into();

    // -f checks everything, the cluster included, and mounts nothing.
    let out = run(
        &helper,
        &[os(&["scs"]), vec![target.clone()], os(&["-f", "-v", "-o", &format!("{good},allow_other")])].concat(),
        MOUNT_TIMEOUT,
    );
    assert!(out.success(), "mount.scs -f failed:\n{out}");
    assert!(out.stderr.contains("mount.scs: would mount the cluster at"), "-v says what -f checked:\n{out}");
    assert!(!is_mounted(&p.mountpoint), "-f mounted");
    // ... and fails as the mount would when the cluster does not answer.
    let key = c.key_file().display().to_string();
    let nowhere = format!("node=127.0.0.1:9,secret_file={key},cache_dir={}", p.cache.display());
    let out = run(&helper, &[os(&["scs"]), vec![target.clone()], os(&["-f", "-o", &nowhere])].concat(), MOUNT_TIMEOUT);
    assert_one_line(&out, 32, "mount.scs", "cannot reach the cluster");

    // Without -s an unknown option is bad usage (mount(8)'s 1); with -s it is ignored.
    let sloppy = format!("{good},vers=4");
    let out = run(&helper, &[os(&["scs"]), vec![target.clone()], os(&["-o", &sloppy])].concat(), CMD_DEADLINE);
    assert_one_line(&out, 1, "mount.scs", "unknown mount option: vers=4");
    assert!(!is_mounted(&p.mountpoint));

    // What mount(8) runs for `scs DIR scs defaults,_netdev,... 0 0`.
    let mut d = Daemon::guard(&p.mountpoint);
    let out = run(
        &helper,
        &[
            os(&["scs"]),
            vec![target.clone()],
            os(&["-s", "-n", "-v", "-o", &format!("rw,{sloppy},_netdev,defaults,x-systemd.automount"), "-t", "scs"]),
        ]
        .concat(),
        MOUNT_TIMEOUT,
    );
    d.started(&out);
    assert!(out.stderr.contains("options without effect: vers=4,_netdev,defaults,x-systemd.automount"), "{out}");
    assert_eq!(fs::read(p.mountpoint.join("hello.txt")).unwrap(), b"hello from the cluster");
    fs::write(p.mountpoint.join("back.txt"), b"and back").unwrap();
    c.assert_content("back.txt", b"and back");
    // A second mount there is refused as a mount failure.
    let out = run(&helper, &[os(&["scs"]), vec![target], os(&["-o", &good])].concat(), MOUNT_TIMEOUT);
    assert_one_line(&out, 32, "mount.scs", "already an scs mount");
    d.unmount();
}

#[test]
fn a_read_only_mount_refuses_every_change_with_erofs_and_still_reads() {
    let c = Cluster::start(3);
    let p = place();
    c.upload_bytes("f.txt", b"read me");
    c.scs(&["mkdir", "d"]).assert_ok();
    let leader = c.status().leader.expect("a leader");
    // The first form with -o, mixed with flags.
    let mut d = Daemon::guard(&p.mountpoint);
    let args: Vec<OsString> = vec![
        p.mountpoint.clone().into(),
        "-o".into(),
        "ro".into(),
        "--node".into(),
        c.node_addr(leader).into(),
        "--secret-file".into(),
        c.key_file().into(),
        "--cache-dir".into(),
        p.cache.clone().into(),
    ];
    let out = run(&bin("scs-mount"), &args, MOUNT_TIMEOUT);
    d.started(&out);

    let m = |rel: &str| p.mountpoint.join(rel).display().to_string();
    let changes: Vec<(&str, Vec<String>)> = vec![
        ("touch", vec![m("new.txt")]),
        ("touch", vec![m("f.txt")]),
        ("mkdir", vec![m("newdir")]),
        ("rm", vec![m("f.txt")]),
        ("rmdir", vec![m("d")]),
        ("mv", vec![m("f.txt"), m("g.txt")]),
        ("chmod", vec!["600".into(), m("f.txt")]),
        ("ln", vec!["-s".into(), "f.txt".into(), m("link")]),
        ("sh", vec!["-c".into(), format!("echo x > {}", m("f.txt"))]),
        ("sh", vec!["-c".into(), format!("echo x >> {}", m("f.txt"))]),
    ];
    for (program, args) in &changes {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let out = run(Path::new(program), &args, CMD_DEADLINE);
        assert!(
            !out.success() && out.stderr.contains("Read-only file system"),
            "`{program}` on a ro mount should fail with EROFS:\n{out}"
        );
    }
    assert_eq!(fs::read(p.mountpoint.join("f.txt")).unwrap(), b"read me");
    let mut names: Vec<String> =
        fs::read_dir(&p.mountpoint).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["d", "f.txt"]);
    // Nothing reached the cluster either.
    c.assert_content("f.txt", b"read me");
    let mut stored = c.ls_names("");
    stored.sort();
    assert_eq!(stored, ["d", "f.txt"]);
    d.unmount();
}

#[test]
fn an_unknown_or_malformed_option_is_refused_in_one_line_naming_it() {
    let p = place();
    let helper = helper_in(p.dir.path());
    let mp: OsString = p.mountpoint.clone().into();
    let scs_mount = bin("scs-mount");
    let cases: [(&[&str], &str); 5] = [
        (&["-o", "ro,bogus,allow_other"], "unknown mount option: bogus"),
        (&["-o", "ro=1"], "mount option ro takes no value"),
        (&["-o", "node"], "mount option node needs a value (node=...)"),
        (&["-o", "cache_dir="], "mount option cache_dir needs a value"),
        (&["--node", "127.0.0.1:1", "-o", "node=127.0.0.1:2"], "node is given twice: as --node and in -o"),
    ];
    for (extra, needle) in cases {
        // Bad usage: scs-mount's contract says 2, as clap does for a bad flag.
        let out = run(&scs_mount, &[os(&["scs"]), vec![mp.clone()], os(extra)].concat(), CMD_DEADLINE);
        assert_one_line(&out, 2, "scs-mount", needle);
        let out = run(&scs_mount, &[vec![mp.clone()], os(extra)].concat(), CMD_DEADLINE);
        assert_one_line(&out, 2, "scs-mount", needle);
    }
    // mount.scs speaks mount(8)'s codes: 1 is bad usage.
    let out = run(&helper, &[os(&["scs"]), vec![mp.clone()], os(&["-o", "defaults,bogus"])].concat(), CMD_DEADLINE);
    assert_one_line(&out, 1, "mount.scs", "unknown mount option: bogus");
    let out = run(&helper, &[os(&["scs"]), vec![mp.clone()], os(&["-N", "/proc/1/ns/mnt"])].concat(), CMD_DEADLINE);
    assert_one_line(&out, 1, "mount.scs", "-N");
    assert!(!is_mounted(&p.mountpoint));
}

#[test]
fn allow_other_as_a_user_needs_user_allow_other_in_fuse_conf() {
    if let Some(why) = nobody_unavailable() {
        println!("skipped: {why}");
        return;
    }
    let c = Cluster::start(3);
    let p = place();
    let helper = helper_in(p.dir.path());
    // Everything uid 65534 needs of its own: the mountpoint, the cache, a key.
    let key = p.dir.path().join("nobody.key");
    fs::copy(c.key_file(), &key).unwrap();
    fs::create_dir(&p.cache).unwrap();
    for path in [&key, &p.cache, &p.mountpoint] {
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let without = p.dir.path().join("fuse-without.conf");
    fs::write(&without, "# user_allow_other\nmount_max = 1000\n").unwrap();
    let with = p.dir.path().join("fuse-with.conf");
    fs::write(&with, "# let users share mounts\nuser_allow_other\n").unwrap();
    let opts = format!("allow_other,{}", cluster_options(&c, &p.cache, &key));
    let env = |conf: &Path| OsString::from(format!("SCS_FUSE_CONF={}", conf.display()));
    let target: OsString = p.mountpoint.clone().into();

    let _d = Daemon::guard(&p.mountpoint);
    let args =
        [vec![env(&without), bin("scs-mount").into(), "scs".into(), target.clone()], os(&["-o", &opts])].concat();
    let out = as_nobody(Path::new("env"), &args);
    let said = format!("allow_other needs 'user_allow_other' in {} (or mount as root)", without.display());
    assert_one_line(&out, 1, "scs-mount", &said);
    let args = [vec![env(&without), helper.clone().into(), "scs".into(), target.clone()], os(&["-o", &opts])].concat();
    let out = as_nobody(Path::new("env"), &args);
    assert_one_line(&out, 32, "mount.scs", &said);
    assert!(!is_mounted(&p.mountpoint));
    assert!(find_daemon(&p.mountpoint).is_none(), "a refused mount left a process");

    // With the line every check passes (-f: the test does not depend on this
    // machine's real /etc/fuse.conf, which fusermount3 would read).
    let args = [vec![env(&with), helper.into(), "scs".into(), target], os(&["-f", "-v", "-o", &opts])].concat();
    let out = as_nobody(Path::new("env"), &args);
    assert!(
        out.success() && out.stderr.contains("would mount"),
        "mount.scs -f as a user with user_allow_other:\n{out}"
    );
    assert!(!is_mounted(&p.mountpoint));
}

#[test]
fn allow_other_lets_another_user_read_through_the_mount_and_without_it_they_cannot() {
    if let Some(why) = nobody_unavailable() {
        println!("skipped: {why}");
        return;
    }
    let c = Cluster::start(3);
    c.upload_bytes("shared.txt", b"for everyone");
    let cat_as_nobody = |path: PathBuf| as_nobody(Path::new("cat"), &[path.into()]);

    let shared = place();
    let mut d = Daemon::guard(&shared.mountpoint);
    let opts = format!("allow_other,{}", cluster_options(&c, &shared.cache, c.key_file()));
    let args = [os(&["scs"]), vec![shared.mountpoint.clone().into()], os(&["-o", &opts])].concat();
    d.started(&run(&bin("scs-mount"), &args, MOUNT_TIMEOUT));
    fs::set_permissions(shared.mountpoint.join("shared.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(shared.mountpoint.join("private.txt"), b"root only").unwrap();
    fs::set_permissions(shared.mountpoint.join("private.txt"), fs::Permissions::from_mode(0o600)).unwrap();

    let out = cat_as_nobody(shared.mountpoint.join("shared.txt"));
    assert!(out.success() && out.stdout == b"for everyone", "uid 65534 reads through an allow_other mount:\n{out}");
    let out = as_nobody(Path::new("ls"), &[shared.mountpoint.clone().into()]);
    assert!(out.success() && out.stdout_text().contains("shared.txt"), "uid 65534 lists it:\n{out}");
    // allow_other lets them in; modes still decide (default_permissions).
    let out = cat_as_nobody(shared.mountpoint.join("private.txt"));
    assert!(!out.success() && out.stderr.contains("Permission denied"), "a 0600 file stays private:\n{out}");

    let own = place();
    let mut d2 = Daemon::guard(&own.mountpoint);
    let args = [
        os(&["scs"]),
        vec![own.mountpoint.clone().into()],
        os(&["-o", &cluster_options(&c, &own.cache, c.key_file())]),
    ]
    .concat();
    d2.started(&run(&bin("scs-mount"), &args, MOUNT_TIMEOUT));
    assert_eq!(fs::read(own.mountpoint.join("shared.txt")).unwrap(), b"for everyone", "root reads its own mount");
    let out = cat_as_nobody(own.mountpoint.join("shared.txt"));
    assert!(
        !out.success() && out.stderr.contains("Permission denied"),
        "without allow_other uid 65534 gets EACCES:\n{out}"
    );
    d2.unmount();
    d.unmount();
}

#[test]
fn an_fstab_line_mounts_with_plain_mount() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: mount(8) with a helper needs root");
        return;
    }
    if Command::new("unshare").arg("--version").stdout(Stdio::null()).status().is_err() {
        println!("skipped: unshare is missing (util-linux)");
        return;
    }
    let c = Cluster::start(3);
    c.upload_bytes("hello.txt", b"mounted from fstab");
    let p = place();
    // mount(8) looks for helpers in /sbin only: lay one over it with an
    // overlay, in a mount namespace of this test's (nothing outside sees it).
    let sbin = fs::canonicalize("/sbin").expect("/sbin");
    let upper = p.dir.path().join("sbin-upper");
    let work = p.dir.path().join("sbin-work");
    fs::create_dir(&upper).unwrap();
    fs::create_dir(&work).unwrap();
    helper_in(&upper);
    let fstab = p.dir.path().join("fstab");
    let line = format!(
        "scs {} scs defaults,allow_other,_netdev,{} 0 0\n",
        p.mountpoint.display(),
        cluster_options(&c, &p.cache, c.key_file())
    );
    fs::write(&fstab, &line).unwrap();
    let mp = p.mountpoint.display();
    let script = format!(
        "set -e
         mount -t overlay overlay -o lowerdir={sbin},upperdir={upper},workdir={work} {sbin}
         LIBMOUNT_FSTAB={fstab} mount -v {mp}
         findmnt -n -o SOURCE,FSTYPE,OPTIONS {mp}
         LIBMOUNT_FSTAB={fstab} mount -a -v -t scs
         cat {mp}/hello.txt; echo
         echo 'written in the namespace' > {mp}/from-fstab.txt
         umount {mp}",
        sbin = sbin.display(),
        upper = upper.display(),
        work = work.display(),
        fstab = fstab.display(),
    );
    let _d = Daemon::guard(&p.mountpoint);
    let out = run(Path::new("unshare"), &os(&["-m", "--propagation", "private", "sh", "-c", &script]), MOUNT_TIMEOUT);
    if out.stderr.contains("unknown filesystem type 'overlay'") {
        println!("skipped: no overlayfs to lay mount.scs over /sbin");
        return;
    }
    assert!(out.success(), "mount from the fstab line `{}` failed:\n{out}", line.trim());
    let text = out.stdout_text();
    assert!(
        text.starts_with("scs ") && text.contains(" rw,") && text.contains("allow_other"),
        "findmnt shows the mount:\n{out}"
    );
    assert!(text.contains(&format!("{mp}: already mounted")), "mount -a knows the entry is mounted:\n{out}");
    assert!(text.contains("mounted from fstab"), "the file read through it:\n{out}");
    c.assert_content("from-fstab.txt", b"written in the namespace\n");
    // umount ended the session: the daemon exits by itself.
    if let Some(pid) = find_daemon(&p.mountpoint) {
        wait_gone(pid);
    }
}
