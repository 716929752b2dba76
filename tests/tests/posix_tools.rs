//! Everyday tools through a real mount, as issue 10's "Done when" names them:
//! rsync, cp and tar of a tree with every kind of file, python's venv, and a
//! git clone that stays clean across a remount; then a second mount and the
//! CLI checked against the first (inode numbers, owners, modes, links,
//! xattrs, times) and hard links used across mounts.
//!
//! These need /dev/fuse and root (the tree has files of several owners and
//! a device node). Every mount is unmounted and its process killed by pid
//! when its test ends, also on failure; every command has a deadline.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;

use scs_tests::cli::run;
use scs_tests::mount::{Mount, MountOptions};
use scs_tests::{eventually, write_seeded_file, Cluster, Output};

/// A tool run on the mount must finish within this (a venv with pip's
/// ~1,600 files takes seconds).
const CMD_DEADLINE: Duration = Duration::from_secs(120);
/// The mount's attribute TTL (1 s), and a little more: after this, every
/// change made through another mount must be visible.
const TTL_PLUS: Duration = Duration::from_millis(2500);
/// The clusters of the long tests (venv, rsync of a tree) get this long
/// before their watchdog kills them.
const LONG_TEST_LIMIT: Duration = Duration::from_secs(300);

// ----- running tools -----

/// `program args...` (strings or paths) with the deadline.
fn tool(program: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_owned()).collect();
    run(Path::new(program), &args, CMD_DEADLINE)
}

/// Like [`tool`]; panics with the tool's output unless it exits 0.
#[track_caller]
fn tool_ok(program: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let out = tool(program, args);
    assert!(out.success(), "{program} failed:\n{out}");
    out
}

/// `sh -c SCRIPT sh DIR`: a script run with `$1` = `dir`; panics unless it exits 0.
#[track_caller]
fn sh_in(dir: &Path, script: &str) -> Output {
    tool_ok("sh", &[&"-c", &script, &"sh", &dir])
}

/// git with no system or global config of this machine's, so a user's
/// settings cannot change what the test sees.
fn git(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"GIT_CONFIG_NOSYSTEM=1",
        &"GIT_CONFIG_GLOBAL=/dev/null",
        &"GIT_AUTHOR_DATE=2024-01-02T03:04:05Z",
        &"GIT_COMMITTER_DATE=2024-01-02T03:04:05Z",
        &"git",
        &"-c",
        &"user.name=t",
        &"-c",
        &"user.email=t@t",
    ];
    all.extend_from_slice(args);
    tool("env", &all)
}

#[track_caller]
fn git_ok(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let out = git(args);
    assert!(out.success(), "git failed:\n{out}");
    out
}

/// A temp dir on the local disk, for the trees and the local copies.
fn local_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().expect("create a local temp dir")
}

// ----- the tree every copy test uses -----

/// Builds, under `root` (made here), a tree with what a real one has:
/// regular files of several sizes (empty, one page and a byte, over 1 MiB),
/// nested directories, relative, absolute, dangling and directory symlinks,
/// a group of three hard links across directories, `user.*` xattrs on files
/// and a directory, a FIFO, a character device, several owners, modes with
/// setuid, setgid and sticky, and mtimes with nanoseconds.
fn build_tree(root: &Path) {
    for dir in ["a/b/c", "hard", "links", "private", "shared", "sticky"] {
        fs::create_dir_all(root.join(dir)).expect("create a tree directory");
    }
    let files: [(&str, u64, u64); 8] = [
        ("empty", 1, 0),
        ("small.txt", 2, 13),
        ("page.bin", 3, 4097),
        ("big.bin", 4, (3 << 20) + 17),
        ("a/readme.md", 5, 2000),
        ("a/b/c/deep.txt", 6, 100),
        ("hard/one", 7, 70_000),
        ("private/secret", 8, 42),
    ];
    for (rel, seed, len) in files {
        write_seeded_file(&root.join(rel), seed, len);
    }
    // Owners before modes: a chown clears setuid and setgid, as on Linux.
    // Every time in the past: rsync compares whole seconds, and skips
    // setting the time of a FIFO made in the second its source was.
    // Directory times last, once nothing changes inside.
    sh_in(
        root,
        r#"set -e
        cd "$1"
        printf '#!/bin/sh\necho tool\n' > tool.sh
        chmod 0755 tool.sh
        cp tool.sh setuid-tool && chown 1001:1001 setuid-tool && chmod 4755 setuid-tool
        cp tool.sh setgid-tool && chown 0:50 setgid-tool && chmod 2750 setgid-tool
        chown 1001:1001 small.txt && chmod 0600 small.txt
        chown 1002:100 page.bin && chmod 0640 page.bin
        chmod 0444 big.bin
        chmod 1777 sticky
        echo scratch > sticky/left-by-1003 && chown 1003:1003 sticky/left-by-1003
        chown 0:1003 shared && chmod 2775 shared
        echo shared > shared/inherits-the-group
        chown -R 1001:1001 private && chmod 0600 private/secret && chmod 0700 private
        ln -s ../a/readme.md links/relative
        ln -s /etc/hostname links/absolute
        ln -s ../no/such/file links/dangling
        ln -s ../a/b links/to-dir
        chown -h 1002:1002 links/relative
        ln hard/one hard/two
        ln hard/one a/b/three
        chown 1001:1002 hard/one && chmod 0664 hard/one
        setfattr -n user.comment -v 'made for the copy tests' small.txt
        setfattr -n user.binary -v 0x00ff10 big.bin
        setfattr -n user.empty page.bin
        setfattr -n user.on-a-dir -v yes a
        setfattr -n user.shared -v 'by three names' hard/one
        mkfifo -m 0620 fifo && chown 1002:1003 fifo
        mknod -m 0660 null-device c 1 3
        find . ! -type d -exec touch -h -d '2020-01-01 00:00:00.123456789 +0000' {} +
        touch -d '2001-02-03 04:05:06.123456789 +0000' small.txt
        touch -d '1999-12-31 23:59:59.999999999 +0000' big.bin
        touch -d '2030-01-01 00:00:00.000000001 +0000' a/b/c/deep.txt
        touch -d '2015-05-05 05:05:05.5 +0000' hard/two
        touch -h -d '2010-10-10 10:10:10.010101010 +0000' links/relative
        find . -depth -type d -exec touch -d '2022-06-01 12:00:00.25 +0000' {} +
        "#,
    );
}

/// `find DIR -printf '%y %m %u %g %n %s %T@ %P %l'`, sorted: kind, mode,
/// owner, group, links, size, mtime with nanoseconds, path and symlink target
/// of everything below `dir`.
///
/// ext4 shows a directory's size (4096 for a small one); on another local
/// file system that size means nothing to compare, so it is left out there.
fn listing(dir: &Path) -> Vec<String> {
    let out = tool_ok("find", &[&dir, &"-mindepth", &"1", &"-printf", &"%y %m %u %g %n %s %T@ %P %l\\n"]);
    let ext4 = local_is_ext4();
    let mut lines: Vec<String> = out
        .stdout_text()
        .lines()
        .map(|l| {
            let mut fields: Vec<&str> = l.splitn(7, ' ').collect();
            if !ext4 && fields[0] == "d" {
                fields[5] = "-";
            }
            fields.join(" ")
        })
        .collect();
    lines.sort();
    lines
}

/// Whether the local disk (the temp dir) is ext4, the file system the
/// listings are compared with.
fn local_is_ext4() -> bool {
    const EXT4_SUPER_MAGIC: i64 = 0xEF53;
    let tmp = std::ffi::CString::new(std::env::temp_dir().as_os_str().as_encoded_bytes()).expect("no NUL");
    // SAFETY: statfs(2) on a NUL-terminated path into a zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(tmp.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == EXT4_SUPER_MAGIC
}

/// Every xattr of everything below `dir` (symlinks themselves, not their
/// targets), as `getfattr -d -m - -e hex` shows them, by relative path.
fn xattrs(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let out = sh_in(dir, r#"cd "$1" && getfattr -R -h -d -m - -e hex ."#);
    let mut all = BTreeMap::new();
    for block in out.stdout_text().split("\n\n") {
        let mut lines = block.lines().filter(|l| !l.trim().is_empty());
        let Some(head) = lines.next() else { continue };
        let path = head.strip_prefix("# file: ").unwrap_or(head).to_string();
        let mut attrs: Vec<String> = lines.map(str::to_string).collect();
        attrs.sort();
        all.insert(path, attrs);
    }
    all
}

/// `-` lines only in `want`, `+` lines only in `got`.
fn diff(want: &[String], got: &[String]) -> String {
    let mut text = String::new();
    for w in want.iter().filter(|w| !got.contains(w)) {
        text.push_str(&format!("- {w}\n"));
    }
    for g in got.iter().filter(|g| !want.contains(g)) {
        text.push_str(&format!("+ {g}\n"));
    }
    text
}

/// Asserts the copy in the mount lists as the local copy does, xattrs included.
#[track_caller]
fn assert_same_tree(how: &str, local: &Path, mounted: &Path) {
    let (want, got) = (listing(local), listing(mounted));
    assert!(
        want == got,
        "{how}: the mount's copy differs from the local one (- local, + mount):\n{}\nlocal:\n{}\nmount:\n{}",
        diff(&want, &got),
        want.join("\n"),
        got.join("\n")
    );
    let (want, got) = (xattrs(local), xattrs(mounted));
    assert!(want == got, "{how}: xattrs differ:\nlocal: {want:#?}\nmount: {got:#?}");
}

// ----- attributes as a user sees them -----

/// One item of `scs ls --json`, the fields this file checks.
#[derive(Debug, Deserialize)]
struct CliEntry {
    name: String,
    ino: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime_ns: i64,
    ctime_ns: i64,
    #[serde(default)]
    target: Option<String>,
}

/// What `stat` (and `getfattr`, `readlink`) show of one path, without
/// following a symlink: what must be the same in every mount and the CLI.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    ino: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime_ns: i64,
    ctime_ns: i64,
    target: Option<String>,
    xattrs: Vec<String>,
}

/// [`seen`], or `None` while `path` is not there (yet).
fn seen_if_there(path: &Path) -> Option<Seen> {
    fs::symlink_metadata(path).is_ok().then(|| seen(path))
}

fn seen(path: &Path) -> Seen {
    let meta = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    let target = meta
        .file_type()
        .is_symlink()
        .then(|| fs::read_link(path).expect("readlink").into_os_string().into_string().expect("a UTF-8 target"));
    // user.* xattrs are not allowed on a symlink (as on ext4), so it has none.
    let xattrs = if meta.file_type().is_symlink() {
        Vec::new()
    } else {
        let out = tool_ok("getfattr", &[&"-h", &"-d", &"-m", &"-", &"-e", &"hex", &"--absolute-names", &path]);
        let mut attrs: Vec<String> =
            out.stdout_text().lines().filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect();
        attrs.sort();
        attrs
    };
    Seen {
        ino: meta.ino(),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        nlink: meta.nlink() as u32,
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        target,
        xattrs,
    }
}

/// What [`seen_if_there`] shows of each of `paths` (relative) in mount `m`.
fn view(m: &Mount, paths: &[&'static str]) -> Vec<(&'static str, Option<Seen>)> {
    paths.iter().map(|rel| (*rel, seen_if_there(&m.join(rel)))).collect()
}

/// The paths whose views differ, for a message (`None`: none do).
fn differences(want: &[(&'static str, Option<Seen>)], got: &[(&'static str, Option<Seen>)]) -> Option<String> {
    let differ: Vec<String> = want
        .iter()
        .zip(got)
        .filter(|(w, g)| w != g)
        .map(|((path, w), (_, g))| format!("{path}:\n  want {w:?}\n  got  {g:?}"))
        .collect();
    (!differ.is_empty()).then(|| differ.join("\n"))
}

/// Polls `got` until it equals `want`; after [`TTL_PLUS`] panics showing
/// the paths that still differ.
#[track_caller]
fn same_within_ttl(
    what: &str,
    want: &[(&'static str, Option<Seen>)],
    mut got: impl FnMut() -> Vec<(&'static str, Option<Seen>)>,
) {
    let start = Instant::now();
    while let Some(differ) = differences(want, &got()) {
        assert!(start.elapsed() < TTL_PLUS, "waited {TTL_PLUS:?} for {what}; still different:\n{differ}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The CLI's view of `path` (relative to the cluster root): its entry in
/// the listing of its parent.
fn cli_entry(c: &Cluster, path: &str) -> CliEntry {
    let (parent, _) = path.rsplit_once('/').unwrap_or(("", path));
    let mut args = vec!["ls"];
    if !parent.is_empty() {
        args.push(parent);
    }
    args.push("--json");
    let out = c.scs(&args);
    out.assert_ok();
    let entries: Vec<CliEntry> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ls --json is not the documented JSON ({e}):\n{out}"));
    entries.into_iter().find(|e| e.name == path).unwrap_or_else(|| panic!("scs ls lists no {path}:\n{out}"))
}

/// Asserts the CLI shows `path` as `want` (a mount's view) does; xattrs
/// aside, which the CLI does not show.
#[track_caller]
fn assert_cli_sees(c: &Cluster, path: &str, want: &Seen) {
    let e = cli_entry(c, path);
    let got = Seen {
        ino: e.ino,
        mode: e.mode & 0o7777,
        uid: e.uid,
        gid: e.gid,
        nlink: e.nlink,
        mtime_ns: e.mtime_ns,
        ctime_ns: e.ctime_ns,
        target: e.target,
        xattrs: want.xattrs.clone(),
    };
    assert_eq!(&got, want, "scs ls (left) shows {path} otherwise than the mount (right)");
}

/// A fresh mount of `c` at `mountpoint` (a remount there).
fn remount_at(c: &Cluster, mountpoint: &Path) -> Mount {
    Mount::start_with(c, MountOptions { mountpoint: Some(mountpoint.to_path_buf()), ..MountOptions::default() })
}

// ----- the tests -----

#[test]
fn rsync_ahax_of_a_real_tree_exits_0_and_a_second_run_has_nothing_to_change() {
    let c = Cluster::builder(3).hard_limit(LONG_TEST_LIMIT).start();
    let m = Mount::start(&c);
    let local = local_dir("scs-posix-rsync-");
    let tree = local.path().join("tree");
    build_tree(&tree);
    let src = format!("{}/", tree.display());
    let dest = format!("{}/", m.join("tree").display());

    let out = tool("rsync", &[&"-aHAX", &src, &dest]);
    assert!(out.success(), "rsync -aHAX into the mount failed:\n{out}");
    let out = tool_ok("rsync", &[&"-aHAXn", &"--itemize-changes", &src, &dest]);
    assert!(out.stdout.is_empty(), "a second rsync would still change things:\n{out}");
    // Same contents too, not only the same sizes and times.
    let out = tool_ok("rsync", &[&"-aHAXn", &"--checksum", &"--itemize-changes", &src, &dest]);
    assert!(out.stdout.is_empty(), "rsync --checksum finds different contents:\n{out}");
    assert_same_tree("rsync -aHAX", &tree, &m.join("tree"));
}

#[test]
fn rsync_ahax_through_a_write_back_mount_lands_every_file_under_its_name_with_its_attributes() {
    let c = Cluster::builder(3).hard_limit(LONG_TEST_LIMIT).start();
    let opts = MountOptions { extra: vec![OsString::from("--write-back")], ..MountOptions::default() };
    let m = Mount::start_with(&c, opts);
    let local = local_dir("scs-posix-rsync-wb-");
    let tree = local.path().join("tree");
    build_tree(&tree);
    let src = format!("{}/", tree.display());
    let out = tool("rsync", &[&"-aHAX", &src, &format!("{}/", m.join("tree").display())]);
    assert!(out.success(), "rsync -aHAX into the write-back mount failed:\n{out}");
    // Unmounting waits until everything is on the cluster; a default mount
    // then sees what rsync made, and no temporary name.
    let mountpoint = m.path().to_path_buf();
    m.unmount();
    let plain = remount_at(&c, &mountpoint);
    let dest = format!("{}/", plain.join("tree").display());
    let out = tool_ok("rsync", &[&"-aHAXn", &"--checksum", &"--itemize-changes", &src, &dest]);
    assert!(out.stdout.is_empty(), "the cluster differs from what rsync wrote:\n{out}");
    assert_same_tree("rsync -aHAX through --write-back", &tree, &plain.join("tree"));
}

#[test]
fn cp_a_and_tar_xp_into_the_mount_give_the_same_tree_as_into_a_local_dir() {
    let c = Cluster::builder(3).hard_limit(LONG_TEST_LIMIT).start();
    let m = Mount::start(&c);
    let local = local_dir("scs-posix-cp-tar-");
    let tree = local.path().join("tree");
    build_tree(&tree);

    let (local_cp, mount_cp) = (local.path().join("cp"), m.join("cp"));
    tool_ok("cp", &[&"-a", &tree, &local_cp]);
    let out = tool("cp", &[&"-a", &tree, &mount_cp]);
    assert!(out.success(), "cp -a into the mount failed:\n{out}");
    assert_same_tree("cp -a", &local_cp, &mount_cp);

    let archive = local.path().join("tree.tar");
    tool_ok("tar", &[&"--xattrs", &"--xattrs-include=*", &"-cpf", &archive, &"-C", &tree, &"."]);
    let (local_tar, mount_tar) = (local.path().join("tar"), m.join("tar"));
    fs::create_dir(&local_tar).unwrap();
    fs::create_dir(&mount_tar).unwrap();
    tool_ok("tar", &[&"--xattrs", &"--xattrs-include=*", &"-xpf", &archive, &"-C", &local_tar]);
    let out = tool("tar", &[&"--xattrs", &"--xattrs-include=*", &"-xpf", &archive, &"-C", &mount_tar]);
    assert!(out.success(), "tar -xpf into the mount failed:\n{out}");
    assert_same_tree("tar --xattrs -xpf", &local_tar, &mount_tar);
}

#[test]
fn python_venv_in_the_mount_works_and_its_python_runs() {
    let probe = local_dir("scs-posix-venv-probe-");
    let out = tool("python3", &[&"-m", &"venv", &"--without-pip", &probe.path().join("venv")]);
    if !out.success() {
        println!("skipped: python3 -m venv fails even on the local disk (python3-venv missing?):\n{out}");
        return;
    }
    let c = Cluster::builder(3).hard_limit(LONG_TEST_LIMIT).start();
    let m = Mount::start(&c);
    let venv = m.join("venv");
    let out = tool("python3", &[&"-m", &"venv", &venv]);
    assert!(out.success(), "python3 -m venv in the mount failed:\n{out}");

    let python = venv.join("bin/python");
    let out = tool_ok(&python.display().to_string(), &[&"-c", &"import sys; print(sys.prefix)"]);
    assert_eq!(out.stdout_text().trim_end(), venv.display().to_string(), "the venv's python runs in another prefix");
    // pip came in with it, and runs from the mount.
    let out = tool_ok(&python.display().to_string(), &[&"-m", &"pip", &"--version"]);
    assert!(out.stdout_text().contains(&venv.display().to_string()), "pip runs from outside the venv:\n{out}");
}

#[test]
fn a_git_clone_in_the_mount_is_clean_and_stays_clean_after_a_remount() {
    let c = Cluster::start(3);
    let m = Mount::start(&c);
    let local = local_dir("scs-posix-git-");
    let origin = local.path().join("origin");
    fs::create_dir_all(origin.join("src/nested")).unwrap();
    fs::write(origin.join("README.md"), "# a repository\n").unwrap();
    fs::write(origin.join("src/lib.rs"), "pub fn answer() -> u32 { 42 }\n").unwrap();
    fs::write(origin.join("src/nested/data.txt"), "x".repeat(100_000)).unwrap();
    fs::write(origin.join("run.sh"), "#!/bin/sh\necho run\n").unwrap();
    sh_in(&origin, r#"set -e; cd "$1"; chmod 0755 run.sh; ln -s src/lib.rs lib-link; ln -s ../README.md src/up-link"#);
    git_ok(&[&"init", &"-q", &"-b", &"main", &origin]);
    git_ok(&[&"-C", &origin, &"add", &"-A"]);
    git_ok(&[&"-C", &origin, &"commit", &"-q", &"-m", &"first"]);

    let clone = m.join("clone");
    let out = git(&[&"clone", &"-q", &origin, &clone]);
    assert!(out.success(), "git clone into the mount failed:\n{out}");
    assert_eq!(fs::read_link(clone.join("lib-link")).unwrap(), Path::new("src/lib.rs"), "the symlink came as one");
    assert_eq!(fs::metadata(clone.join("run.sh")).unwrap().mode() & 0o777, 0o755, "run.sh is executable");
    let clean = |dir: &Path, when: &str| {
        // diff-files trusts the index's stat data (inode, ctime, mtime, owner,
        // size) and hashes nothing: any change there shows as a modified file.
        let out = git_ok(&[&"-C", &dir, &"diff-files", &"--name-status"]);
        let index = git(&[&"-C", &dir, &"ls-files", &"--debug"]);
        assert!(out.stdout.is_empty(), "{when}: the index's stat data no longer matches:\n{out}\n{index}");
        let out = git_ok(&[&"-C", &dir, &"status", &"--porcelain"]);
        assert!(out.stdout.is_empty(), "{when}: git status is not clean:\n{out}");
    };
    clean(&clone, "after the clone");

    // Work as a user does: change, add, commit (index.lock renamed over the index).
    fs::write(clone.join("src/lib.rs"), "pub fn answer() -> u32 { 43 }\n").unwrap();
    fs::write(clone.join("new.txt"), "new\n").unwrap();
    let out = git_ok(&[&"-C", &clone, &"status", &"--porcelain"]);
    assert_eq!(out.stdout_text(), " M src/lib.rs\n?? new.txt\n", "git status shows the changes");
    git_ok(&[&"-C", &clone, &"add", &"-A"]);
    git_ok(&[&"-C", &clone, &"commit", &"-q", &"-m", &"second"]);
    clean(&clone, "after a commit");

    let mountpoint = m.path().to_path_buf();
    m.unmount();
    let again = remount_at(&c, &mountpoint);
    clean(&again.join("clone"), "after a remount at the same place");
    let elsewhere = Mount::start(&c);
    clean(&elsewhere.join("clone"), "in a second mount elsewhere");
    let out = git_ok(&[&"-C", &elsewhere.join("clone"), &"log", &"--format=%s"]);
    assert_eq!(out.stdout_text(), "second\nfirst\n");
}

#[test]
fn a_second_mount_and_the_cli_see_the_same_inodes_owners_modes_links_xattrs_and_times() {
    let c = Cluster::start(3);
    let a = Mount::start(&c);
    let b = Mount::start(&c);
    fs::create_dir(a.join("d")).unwrap();
    fs::write(a.join("d/file"), b"a file").unwrap();
    fs::write(a.join("linked"), b"two names").unwrap();
    sh_in(
        a.path(),
        r#"set -e
        cd "$1"
        ln linked d/second-name
        ln -s d/file sym
        chown 1001:1002 d/file && chmod 0640 d/file
        chown 1003:1003 d && chmod 2750 d
        chown -h 1004:1005 sym
        chown 1006:1007 linked && chmod 4755 linked
        setfattr -n user.file -v 'on a file' d/file
        setfattr -n user.dir -v 'on a dir' d
        setfattr -n user.linked -v 0x00ff linked
        touch -d '2001-02-03 04:05:06.123456789 +0000' d/file
        touch -h -d '2002-02-03 04:05:06.5 +0000' sym
        touch -d '2003-02-03 04:05:06.000000007 +0000' linked
        touch -d '2004-02-03 04:05:06.999999999 +0000' d
        "#,
    );
    let paths = ["d", "d/file", "sym", "linked", "d/second-name"];
    let cli_agrees = |when: &str, want: &[(&'static str, Option<Seen>)]| {
        for (rel, seen) in want {
            let seen = seen.as_ref().unwrap_or_else(|| panic!("{when}: mount A has no {rel}"));
            assert_cli_sees(&c, rel, seen);
        }
    };
    // B started before A made these: its listing of the root may be a TTL old.
    let want = view(&a, &paths);
    same_within_ttl("mount B to see what mount A made", &want, || view(&b, &paths));
    cli_agrees("first look", &want);
    let first = seen(&a.join("d/file"));
    assert_eq!((first.uid, first.gid, first.mode), (1001, 1002, 0o640), "d/file as made");
    assert_eq!(seen(&a.join("linked")).nlink, 2);
    assert_eq!(seen(&a.join("linked")).ino, seen(&a.join("d/second-name")).ino, "two names, one inode");

    // B has all of it cached now; changes in A show there within the TTL.
    // A new entry in d changes d's mtime and ctime, a rename the ctime of
    // the file renamed: as the cluster stamped them, everywhere.
    sh_in(
        a.path(),
        r#"set -e
        cd "$1"
        chown 2001:2002 d/file && chmod 0604 d/file
        setfattr -n user.file -v 'changed' d/file && setfattr -n user.more -v more d/file
        setfattr -x user.dir d
        touch -d '2011-01-01 00:00:00.000000011 +0000' d/file
        chmod 0700 d
        ln linked d/third-name
        mv sym sym-renamed && mv sym-renamed sym
        "#,
    );
    let want = view(&a, &paths);
    same_within_ttl("mount B to see mount A's changes", &want, || view(&b, &paths));
    cli_agrees("after changes in mount A", &want);
    assert_eq!(seen(&b.join("linked")).nlink, 3);

    // A remount shows what was shown before it.
    let mountpoint = a.path().to_path_buf();
    a.unmount();
    let again = remount_at(&c, &mountpoint);
    if let Some(differ) = differences(&want, &view(&again, &paths)) {
        panic!("after a remount stat shows otherwise than before it (want: before, got: after):\n{differ}");
    }
}

#[test]
fn st_ino_stays_with_a_file_across_renames_and_remounts() {
    let c = Cluster::start(3);
    let a = Mount::start(&c);
    let b = Mount::start(&c);
    fs::create_dir_all(a.join("dir/sub")).unwrap();
    fs::create_dir(a.join("elsewhere")).unwrap();
    fs::write(a.join("dir/sub/file"), b"content").unwrap();
    fs::hard_link(a.join("dir/sub/file"), a.join("other-name")).unwrap();
    std::os::unix::fs::symlink("sub/file", a.join("dir/sym")).unwrap();
    let before = [
        ("dir/sub/file", "elsewhere/moved/sub/renamed"),
        ("dir", "elsewhere/moved"),
        ("dir/sym", "elsewhere/moved/sym"),
        ("other-name", "other-name"),
    ];
    let inos: Vec<u64> = before.iter().map(|(old, _)| seen(&a.join(old)).ino).collect();
    let cli_inos = |paths: &[&str]| paths.iter().map(|p| cli_entry(&c, p).ino).collect::<Vec<u64>>();
    assert_eq!(cli_inos(&before.map(|(old, _)| old)), inos, "the CLI shows other inode numbers than the mount");
    eventually("mount B to see the files", TTL_PLUS, || {
        before.iter().zip(&inos).all(|((old, _), ino)| seen_if_there(&b.join(old)).is_some_and(|s| s.ino == *ino))
    });

    // A file renamed, then its directory moved into another.
    fs::rename(a.join("dir/sub/file"), a.join("dir/sub/renamed")).unwrap();
    fs::rename(a.join("dir"), a.join("elsewhere/moved")).unwrap();
    let after = before.map(|(_, new)| new);
    let now: Vec<u64> = after.iter().map(|p| seen(&a.join(p)).ino).collect();
    assert_eq!(now, inos, "a rename changed st_ino in the mount that made it ({after:?})");
    assert_eq!(cli_inos(&after), inos, "a rename changed the inode number the CLI shows");
    eventually("mount B to see the renamed files with their inode numbers", TTL_PLUS, || {
        after.iter().zip(&inos).all(|(p, ino)| seen_if_there(&b.join(p)).is_some_and(|s| s.ino == *ino))
    });
    assert_eq!(fs::read(b.join("elsewhere/moved/sym")).unwrap(), b"content", "the symlink still leads to the file");

    // After a remount at the same place, and in a new mount: the same inodes.
    let mountpoint = a.path().to_path_buf();
    a.unmount();
    let again = remount_at(&c, &mountpoint);
    let fresh = Mount::start(&c);
    for m in [&again, &fresh] {
        let now: Vec<u64> = after.iter().map(|p| seen(&m.join(p)).ino).collect();
        assert_eq!(now, inos, "st_ino changed in a new mount at {}", m.path().display());
    }
    assert_eq!(seen(&fresh.join("other-name")).nlink, 2, "the hard link is still counted");
}

#[test]
fn a_hard_link_written_in_one_mount_reads_through_its_other_name_in_another() {
    let c = Cluster::start(3);
    let a = Mount::start(&c);
    let b = Mount::start(&c);
    fs::create_dir(a.join("dir")).unwrap();
    fs::write(a.join("first"), b"version one").unwrap();
    fs::hard_link(a.join("first"), a.join("dir/second")).unwrap();
    eventually("mount B to read the second name", TTL_PLUS, || {
        fs::read(b.join("dir/second")).is_ok_and(|bytes| bytes == b"version one")
    });
    assert_eq!(fs::metadata(b.join("first")).unwrap().ino(), fs::metadata(b.join("dir/second")).unwrap().ino());

    // A write through one name in A reads through the other in B.
    fs::write(a.join("first"), b"version two, longer than one").unwrap();
    eventually("mount B to read A's write through the other name", TTL_PLUS, || {
        fs::read(b.join("dir/second")).is_ok_and(|bytes| bytes == b"version two, longer than one")
    });
    // ... and the other way round, appending.
    {
        use std::io::Write;
        let mut f = fs::OpenOptions::new().append(true).open(b.join("dir/second")).unwrap();
        f.write_all(b" + B").unwrap();
    }
    eventually("mount A to read B's append through the first name", TTL_PLUS, || {
        fs::read(a.join("first")).is_ok_and(|bytes| bytes == b"version two, longer than one + B")
    });

    // Unlinking one name in A leaves the other working in B, with one link.
    fs::remove_file(a.join("first")).unwrap();
    eventually("mount B to see one name gone and one link left", TTL_PLUS, || {
        fs::symlink_metadata(b.join("first")).is_err()
            && fs::metadata(b.join("dir/second")).is_ok_and(|m| m.nlink() == 1)
    });
    assert_eq!(fs::read(b.join("dir/second")).unwrap(), b"version two, longer than one + B");
    assert_eq!(fs::metadata(a.join("dir/second")).unwrap().nlink(), 1, "mount A counts one link too");
    assert_eq!(cli_entry(&c, "dir/second").nlink, 1, "the CLI counts one link");
    c.assert_content("dir/second", b"version two, longer than one + B");
}
