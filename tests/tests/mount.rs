//! The FUSE mount end to end: real mounts of real three-node clusters, used
//! through ordinary programs (cp, cat, ls, truncate) and plain syscalls, and
//! checked against the cluster with the `scs` command line.
//!
//! These need /dev/fuse and root (or fusermount3). Every mount is unmounted
//! and its process killed when its test ends, also on failure.

use std::ffi::{CString, OsString};
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::io::IntoRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use scs_tests::cli::{run, wait_until};
use scs_tests::mount::{mount_args, run_scs_mount, Mount, MountOptions};
use scs_tests::{eventually, seeded_bytes, sha256_hex, write_random_key, write_seeded_file, Cluster};

/// The mount's attribute TTL, and a little more: after this, every change
/// made elsewhere must be visible.
const TTL_PLUS: Duration = Duration::from_millis(2500);
/// Ordinary commands on the mount must finish within this.
const CMD_DEADLINE: Duration = Duration::from_secs(90);

fn errno_of<T: std::fmt::Debug>(what: &str, r: std::io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("{what} succeeded ({v:?}) but should have failed"),
        Err(e) => e.raw_os_error().unwrap_or_else(|| panic!("{what}: no errno in {e}")),
    }
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in test paths")
}

/// The errno of a libc call returning -1, or 0 on success.
fn libc_errno(rc: libc::c_int) -> i32 {
    if rc == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    }
}

/// Exit 1 and exactly one stderr line, `scs-mount: ...needle...`.
#[track_caller]
fn assert_mount_error(out: &scs_tests::Output, needle: &str) {
    assert_eq!(out.code(), Some(1), "wrong exit code:\n{out}");
    let lines: Vec<&str> = out.stderr.trim_end().lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("scs-mount: ") && lines[0].contains(needle),
        "expected one line `scs-mount: ...{needle}...`:\n{out}"
    );
}

fn cmd_ok(program: &str, args: &[&Path]) {
    let args: Vec<OsString> = args.iter().map(|a| a.as_os_str().to_owned()).collect();
    let out = run(Path::new(program), &args, CMD_DEADLINE);
    assert!(out.success(), "{program} failed:\n{out}");
}

#[test]
fn files_copied_in_and_out_of_the_mount_are_byte_for_byte_equal() {
    let c = Cluster::start(3);
    let m = Mount::start(&c);
    let cases: [(&str, u64); 3] = [("empty", 0), ("small.bin", 4096), ("big.bin", 64 << 20)];
    for (i, (name, len)) in cases.iter().enumerate() {
        let local = c.scratch_path(name);
        let hash = write_seeded_file(&local, i as u64 + 1, *len);
        cmd_ok("cp", &[&local, &m.join(name)]);
        let back = c.scratch_path("back");
        cmd_ok("cp", &[&m.join(name), &back]);
        assert_eq!(sha256_hex(&back), hash, "{name} came back different");
        // Once cp returned, the cluster has it (close-to-open).
        let stored = c.scratch_path("stored");
        c.scs_os(&["download".into(), (*name).into(), stored.clone().into()]).assert_ok();
        assert_eq!(sha256_hex(&stored), hash, "{name} is stored differently");
        assert_eq!(fs::metadata(m.join(name)).unwrap().len(), *len);
    }
    // A second mount has nothing cached: a cold read goes to the cluster.
    let cold = Mount::start(&c);
    let back = c.scratch_path("cold");
    cmd_ok("cp", &[&cold.join("big.bin"), &back]);
    assert_eq!(sha256_hex(&back), sha256_hex(&m.join("big.bin")));
    // Reading it again is served from the local cache, and still right.
    cmd_ok("cp", &[&cold.join("big.bin"), &back]);
    assert_eq!(sha256_hex(&back), sha256_hex(&m.join("big.bin")));
}

#[test]
fn ls_and_stat_show_what_the_cluster_holds() {
    let c = Cluster::start(3);
    // A local file with a nanosecond mtime, uploaded with the CLI.
    let local = c.local_file(b"twelve bytes");
    let when = libc::timespec { tv_sec: 1_600_000_000, tv_nsec: 123_456_789 };
    let times = [when, when];
    // SAFETY: a valid path and two timespecs.
    assert_eq!(unsafe { libc::utimensat(libc::AT_FDCWD, cstr(&local).as_ptr(), times.as_ptr(), 0) }, 0);
    fs::set_permissions(&local, fs::Permissions::from_mode(0o640)).unwrap();
    c.scs_os(&["upload".into(), local.into(), "docs/a.txt".into()]).assert_ok();
    c.scs(&["mkdir", "empty"]).assert_ok();
    let m = Mount::start(&c);

    let mut names: Vec<String> =
        fs::read_dir(m.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["docs", "empty"]);
    let out = run(Path::new("ls"), &["-la".into(), m.join("docs").into()], CMD_DEADLINE);
    assert!(out.stdout_text().contains("a.txt"), "ls -la shows no a.txt:\n{out}");

    let meta = fs::metadata(m.join("docs/a.txt")).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.len(), 12);
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_600_000_000, 123_456_789), "nanosecond mtime");
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    assert_eq!((meta.uid(), meta.gid()), (uid, gid), "files belong to the mounting user");
    assert!(fs::metadata(m.join("docs")).unwrap().is_dir(), "a directory implied by a file");
    assert!(fs::metadata(m.join("empty")).unwrap().is_dir());
    assert!(fs::read_dir(m.join("empty")).unwrap().next().is_none());

    // statfs reports the cluster's space.
    // SAFETY: statvfs fills the struct; zeroed is a valid start.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid path and out pointer.
    assert_eq!(unsafe { libc::statvfs(cstr(m.path()).as_ptr(), &mut st) }, 0);
    assert!(st.f_blocks > 0 && st.f_bavail > 0 && st.f_bavail <= st.f_blocks, "statfs: no space reported");
    assert_eq!(st.f_namemax, 255);
}

#[test]
fn the_cli_and_the_mount_see_each_others_files() {
    let c = Cluster::start(3);
    let m = Mount::start(&c);
    fs::write(m.join("from-mount.txt"), b"written through the mount").unwrap();
    c.assert_content("from-mount.txt", b"written through the mount");

    c.upload_bytes("from-cli.txt", b"version one");
    eventually("the CLI's file to appear in the mount", TTL_PLUS, || {
        fs::read(m.join("from-cli.txt")).is_ok_and(|b| b == b"version one")
    });
    // A new version is never served stale once the TTL has passed.
    c.upload_bytes("from-cli.txt", b"version two, longer");
    thread::sleep(TTL_PLUS);
    assert_eq!(fs::read(m.join("from-cli.txt")).unwrap(), b"version two, longer");
    c.scs(&["rm", "from-cli.txt"]).assert_ok();
    thread::sleep(TTL_PLUS);
    assert_eq!(errno_of("reading a file deleted elsewhere", fs::read(m.join("from-cli.txt"))), libc::ENOENT);
}

/// A close while the process holds the file open in another descriptor is
/// not the file's last (the mount stores at the last one); whatever the
/// order, the stored file is whole once the last descriptor is closed.
#[test]
fn a_file_held_in_two_descriptors_is_stored_whole_at_the_last_close() {
    let c = Cluster::start(3);
    let m = Mount::start(&c);
    // A shell redirection: open, duplicate onto stdout, close, write, close.
    let f = m.join("redirected.txt");
    let out = Command::new("sh")
        .args(["-c", "printf 'one two' > \"$1\"; cat \"$1\" > \"$1.copy\"", "sh"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    c.assert_content("redirected.txt", b"one two");
    c.assert_content("redirected.txt.copy", b"one two");

    let first = fs::File::create(m.join("dup.bin")).unwrap();
    let mut second = first.try_clone().unwrap();
    (&first).write_all(b"written before the first close, ").unwrap();
    drop(first);
    second.write_all(b"and after it").unwrap();
    drop(second);
    c.assert_content("dup.bin", b"written before the first close, and after it");
    assert_eq!(fs::read(m.join("dup.bin")).unwrap(), b"written before the first close, and after it");
}

#[test]
fn append_truncate_and_overwrite_in_place_change_the_stored_file() {
    let c = Cluster::start(3);
    let m = Mount::start(&c);
    let f = m.join("f.txt");
    fs::write(&f, b"hello").unwrap();
    OpenOptions::new().append(true).open(&f).unwrap().write_all(b" world").unwrap();
    c.assert_content("f.txt", b"hello world");

    // Overwrite in place: write at an offset of an existing file.
    let mut h = OpenOptions::new().write(true).open(&f).unwrap();
    h.seek(SeekFrom::Start(6)).unwrap();
    h.write_all(b"WORLD").unwrap();
    drop(h);
    c.assert_content("f.txt", b"hello WORLD");

    // ftruncate on an open file, then truncate(2) by path, shorter and longer.
    OpenOptions::new().write(true).open(&f).unwrap().set_len(5).unwrap();
    c.assert_content("f.txt", b"hello");
    cmd_ok("truncate", &[Path::new("-s"), Path::new("2"), &f]);
    c.assert_content("f.txt", b"he");
    cmd_ok("truncate", &[Path::new("-s"), Path::new("4"), &f]);
    c.assert_content("f.txt", b"he\0\0");
    assert_eq!(fs::read(&f).unwrap(), b"he\0\0");

    // O_TRUNC replaces the content; reading and writing one handle works.
    let mut h = OpenOptions::new().read(true).write(true).truncate(true).open(&f).unwrap();
    h.write_all(b"abc").unwrap();
    h.seek(SeekFrom::Start(0)).unwrap();
    let mut back = String::new();
    h.read_to_string(&mut back).unwrap();
    assert_eq!(back, "abc");
    drop(h);
    c.assert_content("f.txt", b"abc");
}

#[test]
fn directories_are_made_removed_and_renamed_with_their_contents() {
    let c = Cluster::start(3);
    let m = Mount::start(&c);
    fs::create_dir(m.join("a")).unwrap();
    fs::create_dir(m.join("a/b")).unwrap();
    fs::write(m.join("a/b/f.txt"), b"deep").unwrap();
    fs::create_dir(m.join("elsewhere")).unwrap();
    let ino = fs::metadata(m.join("a/b/f.txt")).unwrap().ino();

    // A directory moves with what is in it, into another directory.
    fs::rename(m.join("a"), m.join("elsewhere/a2")).unwrap();
    assert_eq!(fs::read(m.join("elsewhere/a2/b/f.txt")).unwrap(), b"deep");
    assert_eq!(fs::metadata(m.join("elsewhere/a2/b/f.txt")).unwrap().ino(), ino, "inode numbers survive a rename");
    assert_eq!(errno_of("stat of the old name", fs::metadata(m.join("a"))), libc::ENOENT);
    c.assert_content("elsewhere/a2/b/f.txt", b"deep");
    c.assert_missing("a/b/f.txt");

    // A file moves across directories and replaces an existing target.
    fs::write(m.join("target.txt"), b"old").unwrap();
    fs::rename(m.join("elsewhere/a2/b/f.txt"), m.join("target.txt")).unwrap();
    assert_eq!(fs::read(m.join("target.txt")).unwrap(), b"deep");
    c.assert_content("target.txt", b"deep");
    assert_eq!(fs::metadata(m.join("target.txt")).unwrap().ino(), ino);

    // Empty directories go; the emptied one stays even though the CLI made nothing.
    fs::remove_dir(m.join("elsewhere/a2/b")).unwrap();
    fs::remove_dir(m.join("elsewhere/a2")).unwrap();
    assert!(fs::read_dir(m.join("elsewhere")).unwrap().next().is_none());

    // Removing the last file of a directory implied by an upload keeps the directory.
    c.upload_bytes("implied/only.txt", b"x");
    thread::sleep(TTL_PLUS);
    fs::remove_file(m.join("implied/only.txt")).unwrap();
    assert!(fs::metadata(m.join("implied")).unwrap().is_dir());
    fs::remove_dir(m.join("implied")).unwrap();
}

#[test]
fn chmod_x_survives_a_remount() {
    let c = Cluster::start(3);
    let m = Mount::start(&c);
    let script = m.join("hello.sh");
    fs::write(&script, b"#!/bin/sh\necho ran from scs\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(fs::metadata(&script).unwrap().mode() & 0o7777, 0o755);
    let mountpoint = m.path().to_path_buf();
    let cache = m.cache_root().to_path_buf();
    m.unmount();

    let again = Mount::start_with(
        &c,
        MountOptions { mountpoint: Some(mountpoint), cache_root: Some(cache), ..MountOptions::default() },
    );
    assert_eq!(fs::metadata(again.join("hello.sh")).unwrap().mode() & 0o7777, 0o755);
    let out = Command::new(again.join("hello.sh")).output().expect("run the script from the mount");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran from scs\n");
}

#[test]
fn mistakes_get_the_errno_a_local_file_system_gives() {
    let c = Cluster::start(3);
    let m = Mount::start(&c);
    fs::create_dir(m.join("dir")).unwrap();
    fs::write(m.join("dir/inner"), b"x").unwrap();
    fs::create_dir(m.join("empty")).unwrap();
    fs::write(m.join("file"), b"content").unwrap();

    let e = |what: &str, r: std::io::Result<()>| errno_of(what, r);
    assert_eq!(errno_of("stat missing", fs::metadata(m.join("missing"))), libc::ENOENT);
    assert_eq!(errno_of("open missing", fs::File::open(m.join("missing"))), libc::ENOENT);
    assert_eq!(e("unlink missing", fs::remove_file(m.join("missing"))), libc::ENOENT);
    assert_eq!(e("rmdir missing", fs::remove_dir(m.join("missing"))), libc::ENOENT);
    assert_eq!(e("rename missing", fs::rename(m.join("missing"), m.join("x"))), libc::ENOENT);
    assert_eq!(e("create in a missing dir", fs::write(m.join("nodir/f"), b"")), libc::ENOENT);

    assert_eq!(e("mkdir over a dir", fs::create_dir(m.join("dir"))), libc::EEXIST);
    assert_eq!(e("mkdir over a file", fs::create_dir(m.join("file"))), libc::EEXIST);
    let excl = OpenOptions::new().write(true).create_new(true).open(m.join("file"));
    assert_eq!(errno_of("O_EXCL over a file", excl), libc::EEXIST);

    assert_eq!(errno_of("open below a file", fs::File::open(m.join("file/x"))), libc::ENOTDIR);
    assert_eq!(e("mkdir below a file", fs::create_dir(m.join("file/x"))), libc::ENOTDIR);
    assert_eq!(e("rmdir of a file", fs::remove_dir(m.join("file"))), libc::ENOTDIR);
    assert_eq!(e("rename a dir onto a file", fs::rename(m.join("empty"), m.join("file"))), libc::ENOTDIR);

    let w = OpenOptions::new().write(true).open(m.join("dir"));
    assert_eq!(errno_of("open a dir for writing", w), libc::EISDIR);
    assert_eq!(e("unlink a dir", fs::remove_file(m.join("dir"))), libc::EISDIR);
    assert_eq!(e("rename a file onto a dir", fs::rename(m.join("file"), m.join("empty"))), libc::EISDIR);

    assert_eq!(e("rmdir a non-empty dir", fs::remove_dir(m.join("dir"))), libc::ENOTEMPTY);
    assert_eq!(e("rename onto a non-empty dir", fs::rename(m.join("empty"), m.join("dir"))), libc::ENOTEMPTY);

    let long = "n".repeat(256);
    assert_eq!(e("a 256-byte name", fs::write(m.join(&long), b"")), libc::ENAMETOOLONG);
    assert_eq!(errno_of("stat a 256-byte name", fs::metadata(m.join(&long))), libc::ENAMETOOLONG);
    assert_eq!(e("mkdir a 256-byte name", fs::create_dir(m.join(&long))), libc::ENAMETOOLONG);
    fs::write(m.join("n".repeat(255)), b"").expect("a 255-byte name is fine");
    // A file whose whole path is over PATH_MAX, reached relative to a deep
    // directory: fine, as on ext4 (PATH_MAX bounds a path given to a call,
    // not how deep a tree may go).
    let mut deep = m.path().to_path_buf();
    for i in 0..16 {
        deep.push(format!("{i:02}{}", "d".repeat(248)));
        fs::create_dir(&deep).unwrap();
    }
    let dirfd = fs::File::open(&deep).unwrap();
    let name = CString::new("f".repeat(100)).unwrap();
    // SAFETY: openat with a directory we hold open and a valid name.
    let fd = unsafe {
        use std::os::unix::io::AsRawFd;
        libc::openat(dirfd.as_raw_fd(), name.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644)
    };
    assert!(fd >= 0, "openat deep in the tree: {}", std::io::Error::last_os_error());
    // SAFETY: fd was just opened here.
    unsafe { libc::close(fd) };

    assert_eq!(e("rename a dir into itself", fs::rename(m.join("dir"), m.join("dir/sub"))), libc::EINVAL);
    let (a, b) = (cstr(&m.join("file")), cstr(&m.join("empty")));
    let renameat2 = |flags| {
        // SAFETY: valid paths relative to the working directory (they are absolute).
        libc_errno(unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), flags) })
    };
    assert_eq!(renameat2(libc::RENAME_NOREPLACE), libc::EEXIST);
    let gone = cstr(&m.join("gone"));
    // SAFETY: as above.
    let rc =
        unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, gone.as_ptr(), libc::RENAME_EXCHANGE) };
    assert_eq!(libc_errno(rc), libc::ENOENT, "RENAME_EXCHANGE with nothing to exchange with");
    fs::write(m.join("other"), b"o").unwrap();
    let o = cstr(&m.join("other"));
    // SAFETY: as above.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, o.as_ptr(), libc::RENAME_NOREPLACE) };
    assert_eq!(libc_errno(rc), libc::EEXIST, "RENAME_NOREPLACE onto a file");

    // Links, nodes and attributes: the errors of a local file system.
    assert_eq!(e("hard link of a directory", fs::hard_link(m.join("dir"), m.join("link"))), libc::EPERM);
    assert_eq!(e("hard link onto a name", fs::hard_link(m.join("file"), m.join("empty"))), libc::EEXIST);
    assert_eq!(e("symlink onto a name", std::os::unix::fs::symlink("file", m.join("dir"))), libc::EEXIST);
    // SAFETY: valid path.
    assert_eq!(libc_errno(unsafe { libc::mkfifo(cstr(&m.join("file")).as_ptr(), 0o644) }), libc::EEXIST);
    assert_eq!(errno_of("readlink of a file", fs::read_link(m.join("file"))), libc::EINVAL);
    let f = cstr(&m.join("file"));
    // SAFETY: valid path, name and value.
    let rc = unsafe { libc::setxattr(f.as_ptr(), c"user.x".as_ptr(), c"v".as_ptr().cast(), 1, libc::XATTR_REPLACE) };
    assert_eq!(libc_errno(rc), libc::ENODATA, "XATTR_REPLACE of a missing attribute");
    let mut buf = [0u8; 8];
    // SAFETY: valid path, name and buffer.
    let rc = unsafe { libc::getxattr(f.as_ptr(), c"user.none".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(libc_errno(rc as i32), libc::ENODATA, "getxattr of a missing attribute");

    // None of it changed anything.
    assert_eq!(fs::read(m.join("file")).unwrap(), b"content");
    c.assert_content("file", b"content");
    c.assert_content("dir/inner", b"x");
}

#[test]
fn parent_directory_times_change_on_create_and_remove() {
    let c = Cluster::start(3);
    let m = Mount::start(&c);
    fs::create_dir(m.join("d")).unwrap();
    let stamp = |p: &Path| {
        let md = fs::metadata(p).unwrap();
        ((md.mtime(), md.mtime_nsec()), (md.ctime(), md.ctime_nsec()))
    };
    let before = stamp(&m.join("d"));
    thread::sleep(Duration::from_millis(20));
    fs::write(m.join("d/f"), b"x").unwrap();
    let created = stamp(&m.join("d"));
    assert!(created.0 > before.0 && created.1 > before.1, "create: {before:?} -> {created:?}");
    thread::sleep(Duration::from_millis(20));
    fs::remove_file(m.join("d/f")).unwrap();
    let removed = stamp(&m.join("d"));
    assert!(removed.0 > created.0 && removed.1 > created.1, "remove: {created:?} -> {removed:?}");
    // utimens sets an explicit mtime, kept with nanoseconds.
    let when = libc::timespec { tv_sec: 1_500_000_000, tv_nsec: 5 };
    // SAFETY: valid path and two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, cstr(&m.join("d")).as_ptr(), [when, when].as_ptr(), 0) };
    assert_eq!(rc, 0);
    assert_eq!(stamp(&m.join("d")).0, (1_500_000_000, 5));
}

#[test]
fn a_file_being_written_is_visible_here_with_its_size_before_it_is_stored() {
    let c = Cluster::start(3);
    let m = Mount::start(&c);
    let mut h = fs::File::create(m.join("growing.bin")).unwrap();
    assert_eq!(fs::metadata(m.join("growing.bin")).unwrap().len(), 0, "visible from create on");
    h.write_all(&seeded_bytes(1, 3000)).unwrap();
    assert_eq!(fs::metadata(m.join("growing.bin")).unwrap().len(), 3000);
    let names: Vec<_> = fs::read_dir(m.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(names.iter().any(|n| n == "growing.bin"), "readdir lists it: {names:?}");
    assert_eq!(fs::read(m.join("growing.bin")).unwrap(), seeded_bytes(1, 3000));
    h.sync_all().unwrap();
    c.assert_content("growing.bin", &seeded_bytes(1, 3000));
    h.write_all(b"more").unwrap();
    drop(h);
    let mut want = seeded_bytes(1, 3000);
    want.extend_from_slice(b"more");
    c.assert_content("growing.bin", &want);
}

#[test]
fn two_mounts_see_each_others_closed_files() {
    let c = Cluster::start(3);
    let one = Mount::start(&c);
    let two = Mount::start(&c);
    fs::write(one.join("from-one"), b"1").unwrap();
    eventually("mount two to see mount one's file", TTL_PLUS, || {
        fs::read(two.join("from-one")).is_ok_and(|b| b == b"1")
    });
    fs::create_dir(two.join("dir-two")).unwrap();
    fs::write(two.join("dir-two/from-two"), b"2").unwrap();
    eventually("mount one to see mount two's file", TTL_PLUS, || {
        fs::read(one.join("dir-two/from-two")).is_ok_and(|b| b == b"2")
    });
    fs::write(one.join("from-one"), b"changed").unwrap();
    eventually("mount two to see the change", TTL_PLUS, || {
        fs::read(two.join("from-one")).is_ok_and(|b| b == b"changed")
    });
    fs::remove_file(two.join("from-one")).unwrap();
    eventually("mount one to see the removal", TTL_PLUS, || fs::metadata(one.join("from-one")).is_err());
}

#[test]
fn killing_the_leader_during_a_copy_never_hangs_and_leaves_no_partial_file() {
    let c = Cluster::start(3);
    let m = Mount::start(&c);
    let local = c.scratch_path("big");
    let hash = write_seeded_file(&local, 9, 192 << 20);
    let mut cp = Command::new("cp")
        .arg(&local)
        .arg(m.join("big.bin"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cp");
    thread::sleep(Duration::from_millis(400));
    let leader = c.status().leader.expect("a leader");
    c.kill(leader);
    let started = Instant::now();
    let status = wait_until(&mut cp, Instant::now() + CMD_DEADLINE).unwrap_or_else(|| {
        let _ = cp.kill();
        let _ = cp.wait();
        panic!("cp into the mount hung after the leader was killed");
    });
    println!("cp ended {:?} after the leader was killed: {status}", started.elapsed());
    thread::sleep(TTL_PLUS);
    if status.success() {
        assert_eq!(sha256_hex(&m.join("big.bin")), hash, "the copy succeeded: the file is whole");
        let stored = c.scratch_path("stored");
        c.scs_os(&["download".into(), "big.bin".into(), stored.clone().into()]).assert_ok();
        assert_eq!(sha256_hex(&stored), hash);
    } else {
        // No partial file: either nothing, or (an earlier complete store) the whole file.
        match fs::metadata(m.join("big.bin")) {
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOENT)),
            Ok(_) => assert_eq!(sha256_hex(&m.join("big.bin")), hash, "a partial file is visible"),
        }
    }
}

#[test]
fn a_frozen_leader_is_left_for_the_new_one_while_it_stays_frozen() {
    // SIGSTOP: the leader keeps its sockets (connections open, requests
    // accepted) but answers nothing. The mount's sessions to it must not
    // keep failing until it thaws: the others elect a new leader, and the
    // mount goes there.
    struct Thaw<'a>(&'a Cluster, u32);
    impl Drop for Thaw<'_> {
        fn drop(&mut self) {
            self.0.resume(self.1);
        }
    }
    let c = Cluster::start(3);
    let m = Mount::start(&c);
    fs::write(m.join("before.txt"), b"before").unwrap();
    let leader = c.status().leader.expect("a leader");
    c.pause(leader);
    let thaw = Thaw(&c, leader);
    let started = Instant::now();
    // fsync, unlike a drop's close, reports a failure to store.
    let mut f = fs::File::create(m.join("during.txt")).expect("create while the old leader is frozen");
    f.write_all(b"during").unwrap();
    f.sync_all().expect("fsync while the old leader is frozen");
    drop(f);
    println!("stored through the mount {:?} after the leader froze", started.elapsed());
    c.assert_content("during.txt", b"during");
    thread::sleep(TTL_PLUS);
    let mut names: Vec<String> =
        fs::read_dir(m.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["before.txt", "during.txt"]);
    assert_eq!(fs::read(m.join("before.txt")).unwrap(), b"before");
    drop(thaw);
}

#[test]
fn with_the_cluster_gone_commands_fail_within_seconds_and_close_reports_it() {
    let c = Cluster::start(3);
    let m = Mount::start(&c);
    fs::write(m.join("f.txt"), b"stored").unwrap();
    let mut pending = fs::File::create(m.join("pending.txt")).unwrap();
    pending.write_all(b"not stored yet").unwrap();
    for id in 1..=3 {
        c.kill(id);
    }
    // close(2) returns the upload's failure instead of dropping the data silently.
    let fd = pending.into_raw_fd();
    let started = Instant::now();
    // SAFETY: closing a descriptor we own.
    let rc = unsafe { libc::close(fd) };
    assert_eq!(libc_errno(rc), libc::EIO, "close of an unstored file with no cluster");
    assert!(started.elapsed() < Duration::from_secs(30));
    thread::sleep(Duration::from_millis(1100));
    // (No descriptor of ours is open in the mount: a child's close-on-exec
    // would flush it and wait for the upload.)
    for (program, arg) in [("ls", m.path().to_path_buf()), ("cat", m.join("f.txt")), ("stat", m.join("new"))] {
        let out = run(Path::new(program), &[arg.into()], Duration::from_secs(30));
        println!("{program} failed after {:?}", out.elapsed);
        assert!(!out.success(), "{program} succeeded with the whole cluster down:\n{out}");
        assert!(out.elapsed < Duration::from_secs(12), "{program} took {:?} to fail", out.elapsed);
    }
}

#[test]
fn a_daemonized_mount_works_when_the_command_returns_and_stores_open_files_on_sigterm() {
    let c = Cluster::start(3);
    let m = Mount::start_with(&c, MountOptions { daemon: true, ..MountOptions::default() });
    assert!(fs::read_dir(m.path()).unwrap().next().is_none(), "usable as soon as scs-mount returned");
    // A writer keeps its file open while the mount is told to stop.
    let mut holder = Command::new("sh")
        .arg("-c")
        .arg("exec 3>\"$1\"; printf pending >&3; exec sleep 60")
        .arg("sh")
        .arg(m.join("open.txt"))
        .spawn()
        .expect("start the writer");
    eventually("the writer's bytes to show", Duration::from_secs(10), || {
        fs::metadata(m.join("open.txt")).is_ok_and(|md| md.len() == 7)
    });
    // SAFETY: kill(2) on the mount daemon.
    unsafe { libc::kill(m.pid() as libc::pid_t, libc::SIGTERM) };
    eventually("the open file to be stored on SIGTERM", Duration::from_secs(15), || {
        c.try_download("open.txt").1.is_some_and(|b| b == b"pending")
    });
    let _ = holder.kill();
    let _ = holder.wait();
    let pid = m.pid();
    eventually("the daemon to exit once nothing uses the mount", Duration::from_secs(20), || {
        fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
    });
    assert!(!scs_tests::mount::is_mounted(m.path()));
}

#[test]
fn the_mount_root_stays_there_while_its_listing_is_fresh() {
    // `rm -rf` of a directory whose files came from elsewhere: the last
    // rmdir failed with ENOENT (rm -f then says nothing, and the directory
    // stays on the cluster), because the mount took its root for missing
    // when the root's listing was fresher than the root's own attributes.
    use std::os::unix::io::AsRawFd;
    let c = Cluster::start(1);
    c.upload_bytes("many/f1", b"1");
    c.upload_bytes("many/f2", b"2");
    let m = Mount::start(&c);
    assert_eq!(fs::read_dir(m.path()).unwrap().count(), 1, "the root is listed");
    let dir = fs::File::open(m.join("many")).unwrap();
    // Everything the mount and the kernel know goes stale; then a removal
    // through the directory's descriptor (no path walk through the root)
    // lists the root again, and the root itself is asked for right after.
    thread::sleep(TTL_PLUS);
    // SAFETY: unlinkat(2) on a descriptor we own and a NUL-terminated name.
    let rc = unsafe { libc::unlinkat(dir.as_raw_fd(), c"f1".as_ptr(), 0) };
    assert_eq!(libc_errno(rc), 0, "unlink many/f1");
    fs::metadata(m.path()).expect("the mount's root is there");
    // SAFETY: as above.
    let rc = unsafe { libc::unlinkat(dir.as_raw_fd(), c"f2".as_ptr(), 0) };
    assert_eq!(libc_errno(rc), 0, "unlink many/f2");
    drop(dir);
    fs::remove_dir(m.join("many")).expect("rmdir many");
    assert!(c.ls_names("").is_empty(), "the directory is gone from the cluster too");
}

#[test]
fn a_full_cluster_refuses_a_new_file_at_create_and_still_takes_overwrites() {
    // `echo hi > new` must fail where the shell sees it: bash does not
    // check close, where the upload's ENOSPC used to be the first word.
    let c = Cluster::builder(1).max_files(1, 2).start();
    let m = Mount::start(&c);
    fs::write(m.join("a"), b"a").unwrap();
    fs::write(m.join("b"), b"b").unwrap();
    let out =
        run(Path::new("sh"), &["-c".into(), format!("echo hi > '{}'", m.join("c").display()).into()], CMD_DEADLINE);
    assert!(!out.success(), "the shell saw the refusal:\n{out}");
    assert!(out.stderr.contains("No space left on device"), "ENOSPC:\n{out}");
    assert_eq!(errno_of("create of a new file", fs::File::create(m.join("d"))), libc::ENOSPC);
    fs::write(m.join("a"), b"overwritten").expect("an overwrite needs no room");
    c.assert_content("a", b"overwritten");
    c.assert_missing("c");
}

#[test]
fn a_reader_sees_the_file_rewritten_under_it_never_a_mix() {
    // The same mount: a reader opened before a rewrite reads what a reader
    // of a local file reads, the new content; it used to read the old
    // bytes, cut to the new length (a content that never existed).
    let c = Cluster::start(1);
    let m = Mount::start(&c);
    for (before, after) in [(&b"0123456789"[..], &b"ab"[..]), (b"0123", b"abcdefgh"), (b"0123456789", b"abcdefghij")] {
        let f = m.join("f");
        fs::write(&f, before).unwrap();
        let mut reader = fs::File::open(&f).unwrap();
        fs::write(&f, after).unwrap();
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(after), "rewritten from {before:?}");
    }
}

/// fstat and read through `f`, whose name is gone, still give `want`.
#[track_caller]
fn assert_still_reads(mut f: fs::File, want: &str, what: &str) {
    assert_eq!(f.metadata().unwrap_or_else(|e| panic!("fstat of {what}: {e}")).len(), want.len() as u64);
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap_or_else(|e| panic!("read of {what}: {e}"));
    assert_eq!(s, want, "{what}");
}

#[test]
fn an_open_file_outlives_its_name() {
    // As on a local disk: fstat and read answer after an unlink or a rename
    // over the name (bash reads a here-document's temp file after removing it).
    let c = Cluster::start(1);
    let m = Mount::start(&c);
    fs::write(m.join("u"), b"data1234").unwrap();
    let f = fs::File::open(m.join("u")).unwrap();
    fs::remove_file(m.join("u")).unwrap();
    assert_still_reads(f, "data1234", "an unlinked file");

    fs::write(m.join("r"), b"old").unwrap();
    let g = fs::File::open(m.join("r")).unwrap();
    fs::write(m.join("r.new"), b"newer").unwrap();
    fs::rename(m.join("r.new"), m.join("r")).unwrap();
    assert_still_reads(g, "old", "a replaced file");
    assert_eq!(fs::read(m.join("r")).unwrap(), b"newer");

    // Also when the descriptor was opened long after the file was stored.
    fs::write(m.join("late"), b"stored earlier").unwrap();
    thread::sleep(TTL_PLUS);
    let f = fs::File::open(m.join("late")).unwrap();
    fs::remove_file(m.join("late")).unwrap();
    assert_still_reads(f, "stored earlier", "a file unlinked long after it was stored");
}

#[test]
fn a_second_mount_on_a_mount_is_refused_and_a_dead_mount_is_cleared_by_the_next() {
    let c = Cluster::start(1);
    let m = Mount::start(&c);
    fs::write(m.join("a"), b"kept").unwrap();
    let other_cache = c.scratch_path("other-cache");
    let args = mount_args(&c, m.path(), &other_cache);
    assert_mount_error(&run_scs_mount(&args, Duration::from_secs(30)), "already an scs mount");
    assert_eq!(fs::read(m.join("a")).unwrap(), b"kept", "the first mount is untouched");

    // The mount process dies (a crash, kill -9): the directory is a dead
    // mount, and the next scs-mount there clears it and works.
    // SAFETY: kill(2) on the mount process this test started.
    unsafe { libc::kill(m.pid() as libc::pid_t, libc::SIGKILL) };
    eventually("the directory to be a dead mount", Duration::from_secs(10), || {
        fs::read_dir(m.path()).is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN))
    });
    let again = Mount::start_with(
        &c,
        MountOptions {
            mountpoint: Some(m.path().to_path_buf()),
            cache_root: Some(other_cache),
            ..MountOptions::default()
        },
    );
    assert_eq!(fs::read(again.join("a")).unwrap(), b"kept");
    fs::write(again.join("b"), b"new").unwrap();
    c.assert_content("b", b"new");
    again.unmount();
    assert!(!scs_tests::mount::is_mounted(m.path()), "nothing stays mounted under the cleared mount");
}

#[test]
fn sigint_to_a_foreground_mount_unmounts_it_cleanly() {
    let c = Cluster::start(3);
    let m = Mount::start(&c);
    fs::write(m.join("a"), b"a").unwrap();
    m.stop_with(libc::SIGINT);
    c.assert_content("a", b"a");
}

#[test]
fn start_up_mistakes_are_one_line_errors_with_exit_1() {
    let c = Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let cache = dir.path().join("cache");
    let deadline = Duration::from_secs(30);

    let mut args = mount_args(&c, &dir.path().join("no-such-dir"), &cache);
    assert_mount_error(&run_scs_mount(&args, deadline), "does not exist");

    args = mount_args(&c, &mnt, &cache);
    args[6] = dir.path().join("no-key").into();
    assert_mount_error(&run_scs_mount(&args, deadline), "key");
    let short_key = dir.path().join("short.key");
    fs::write(&short_key, b"abc").unwrap();
    fs::set_permissions(&short_key, fs::Permissions::from_mode(0o600)).unwrap();
    args[6] = short_key.into();
    assert_mount_error(&run_scs_mount(&args, deadline), "key");

    // A group nobody is on: the cluster check fails within the retry window.
    let lonely_key = dir.path().join("lonely.key");
    write_random_key(&lonely_key);
    let lonely: Vec<OsString> = vec![
        mnt.clone().into(),
        "--group".into(),
        "239.255.254.253:31999".into(),
        "--secret-file".into(),
        lonely_key.into(),
        "--cache-dir".into(),
        cache.clone().into(),
    ];
    let out = run_scs_mount(&lonely, deadline);
    assert_mount_error(&out, "cannot reach the cluster");
    assert!(out.elapsed < Duration::from_secs(15), "took {:?}", out.elapsed);
    assert!(!scs_tests::mount::is_mounted(&mnt));

    for flag in ["--help", "--version"] {
        let out = run_scs_mount(&[flag.into()], deadline);
        assert!(out.success() && !out.stdout.is_empty(), "{flag}:\n{out}");
    }
}

#[test]
fn memory_stays_bounded_while_a_big_file_goes_in_and_out() {
    // 2 GiB with SCS_MOUNT_BIG_MIB=2048; 512 MiB by default to keep the suite quick.
    let mib: u64 = std::env::var("SCS_MOUNT_BIG_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(512);
    let c = Cluster::builder(3).hard_limit(Duration::from_secs(600)).start();
    let m = Mount::start(&c);
    let local = c.scratch_path("huge");
    let hash = write_seeded_file(&local, 5, mib << 20);
    let started = Instant::now();
    cmd_ok("cp", &[&local, &m.join("huge.bin")]);
    println!("{mib} MiB into the mount in {:?}", started.elapsed());
    fs::remove_file(&local).unwrap();
    // A second mount reads it cold.
    let cold = Mount::start(&c);
    let back: PathBuf = c.scratch_path("huge-back");
    let started = Instant::now();
    cmd_ok("cp", &[&cold.join("huge.bin"), &back]);
    println!("{mib} MiB out of a cold mount in {:?}", started.elapsed());
    assert_eq!(sha256_hex(&back), hash);
    for (what, mount) in [("writing", &m), ("reading", &cold)] {
        let peak = mount.peak_rss_kib();
        println!("peak RSS of the mount while {what}: {} MiB", peak / 1024);
        assert!(peak > 0 && peak < 128 * 1024, "the mount used {} MiB while {what}", peak / 1024);
    }
}

/// A mount keeps its listing of a directory fresh through its own changes
/// there only while no one else changes the directory: a name another
/// client adds shows within the TTL, though this mount renames a file in
/// that directory again and again meanwhile.
#[test]
fn a_name_added_elsewhere_shows_in_a_directory_this_mount_keeps_changing() {
    let c = Cluster::start(3);
    let m = Mount::start(&c);
    fs::create_dir(m.join("d")).unwrap();
    for i in 0..50 {
        fs::write(m.join(format!("d/f{i:02}")), b"x").unwrap();
    }
    // Listed from the cluster, not from what this mount made.
    thread::sleep(TTL_PLUS);
    assert_eq!(fs::read_dir(m.join("d")).unwrap().count(), 50, "listed");
    c.upload_bytes("d/theirs", b"theirs").assert_ok();
    let added = Instant::now();
    let (a, b) = (m.join("d/f00"), m.join("d/moved"));
    let mut renames = 0;
    while !m.join("d/theirs").exists() {
        assert!(
            added.elapsed() < TTL_PLUS,
            "d/theirs not shown {:?} after it was added elsewhere ({renames} renames here meanwhile)",
            added.elapsed()
        );
        let (from, to) = if renames % 2 == 0 { (&a, &b) } else { (&b, &a) };
        fs::rename(from, to).unwrap();
        renames += 1;
    }
    assert!(renames > 0, "the mount changed the directory while it waited");
    let names: Vec<String> =
        fs::read_dir(m.join("d")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().any(|n| n == "theirs"), "{names:?}");
    assert_eq!(fs::read(m.join("d/theirs")).unwrap(), b"theirs");
}
