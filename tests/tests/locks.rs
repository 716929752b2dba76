//! Advisory locks across mounts: flock and fcntl byte ranges taken through
//! one mount of a three-node cluster exclude the processes of another
//! mount; F_GETLK sees them; a mount killed with -9 loses its locks within
//! the lease; a lock held through a failover of the leader is reclaimed and
//! still excludes.
//!
//! The holder is this test process (plain syscalls through mount A); the
//! other side is `flock(1)` or syscalls through mount B. A new leader lets
//! no lock be taken for its grace period (10 s) after it starts serving, so
//! the first lock of each test may wait that long.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use scs_tests::cli::{die_with_parent, run, wait_until};
use scs_tests::mount::Mount;
use scs_tests::{eventually, Cluster, Output};

/// One lock request may wait out a grace period (10 s) and then some.
const LOCK_DEADLINE: Duration = Duration::from_secs(40);
/// The exit code `flock -n -E` gives when the lock is taken.
const TAKEN: i32 = 42;
/// The lease (10 s), a keep-alive period (2 s), and room for a slow machine.
const LEASE_BOUND: Duration = Duration::from_secs(20);

fn open_rw(p: &Path) -> File {
    OpenOptions::new().read(true).write(true).open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
}

/// A file written through `a`, once `b` sees it too.
fn shared_file(a: &Mount, b: &Mount, name: &str) {
    std::fs::write(a.join(name), b"locked content\n").expect("write through mount A");
    eventually(&format!("mount B to see {name}"), Duration::from_secs(10), || b.join(name).exists());
}

/// flock(2) on `f`: 0 or the errno.
fn flock(f: &File, op: libc::c_int) -> i32 {
    // SAFETY: flock on a descriptor this File owns.
    let rc = unsafe { libc::flock(f.as_raw_fd(), op) };
    errno_of(rc)
}

fn errno_of(rc: libc::c_int) -> i32 {
    if rc == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    }
}

fn flock_struct(typ: libc::c_int, start: i64, len: i64) -> libc::flock {
    // SAFETY: a plain C struct; all zeroes is a valid value.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = typ as libc::c_short;
    l.l_whence = libc::SEEK_SET as libc::c_short;
    l.l_start = start;
    l.l_len = len;
    l
}

/// fcntl F_SETLK (F_SETLKW with `wait`) of `len` bytes from `start` (0 = to
/// the end): 0 or the errno.
fn setlk(f: &File, typ: libc::c_int, start: i64, len: i64, wait: bool) -> i32 {
    let l = flock_struct(typ, start, len);
    let cmd = if wait { libc::F_SETLKW } else { libc::F_SETLK };
    // SAFETY: fcntl with a pointer to a live flock struct.
    errno_of(unsafe { libc::fcntl(f.as_raw_fd(), cmd, &l) })
}

/// fcntl F_GETLK: the lock in the way (`l_type` F_UNLCK for none).
fn getlk(f: &File, typ: libc::c_int, start: i64, len: i64) -> libc::flock {
    let mut l = flock_struct(typ, start, len);
    // SAFETY: fcntl with a pointer to a live flock struct.
    let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut l) };
    assert_eq!(errno_of(rc), 0, "F_GETLK failed");
    l
}

/// `flock -n -E 42 [extra] FILE true`: exits 0 if it got the lock, 42 if it
/// is taken.
fn flock_cmd(path: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<OsString> = vec!["-n".into(), "-E".into(), TAKEN.to_string().into()];
    args.extend(extra.iter().map(OsString::from));
    args.push(path.into());
    args.push("true".into());
    run(Path::new("flock"), &args, LOCK_DEADLINE)
}

#[track_caller]
fn assert_taken(out: &Output) {
    assert_eq!(out.code(), Some(TAKEN), "expected the lock to be taken elsewhere:\n{out}");
}

#[track_caller]
fn assert_got(out: &Output) {
    assert_eq!(out.code(), Some(0), "expected to get the lock:\n{out}");
}

/// The kernel sends the release of a closed file after close(2) returns:
/// the flock of that file goes a moment later.
#[track_caller]
fn assert_got_soon(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = flock_cmd(path, &[]);
        if out.success() || Instant::now() > deadline {
            return assert_got(&out);
        }
        assert_taken(&out);
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn flock_from_two_mounts_excludes_until_released() {
    let c = Cluster::start(3);
    let a = Mount::start(&c);
    let b = Mount::start(&c);
    shared_file(&a, &b, "f");
    let held = open_rw(&a.join("f"));

    assert_eq!(flock(&held, libc::LOCK_EX | libc::LOCK_NB), 0, "the first flock is granted");
    assert_taken(&flock_cmd(&b.join("f"), &[]));
    assert_taken(&flock_cmd(&b.join("f"), &["-s"]));
    // A second open file of the same mount is another owner, as on a local disk.
    let other = File::open(a.join("f")).expect("open again through A");
    assert_eq!(flock(&other, libc::LOCK_SH | libc::LOCK_NB), libc::EWOULDBLOCK);

    assert_eq!(flock(&held, libc::LOCK_UN), 0);
    assert_got(&flock_cmd(&b.join("f"), &[]));

    // Shared locks share across mounts; an exclusive one waits for them.
    assert_eq!(flock(&held, libc::LOCK_SH | libc::LOCK_NB), 0);
    assert_got(&flock_cmd(&b.join("f"), &["-s"]));
    assert_taken(&flock_cmd(&b.join("f"), &[]));

    // Closing the last descriptor of the open file gives its flock back.
    drop(held);
    assert_got_soon(&b.join("f"));
    drop(other);
}

#[test]
fn fcntl_byte_ranges_conflict_across_mounts_only_where_they_overlap() {
    let c = Cluster::start(3);
    let a = Mount::start(&c);
    let b = Mount::start(&c);
    shared_file(&a, &b, "db");
    let fa = open_rw(&a.join("db"));
    let fb = open_rw(&b.join("db"));

    assert_eq!(setlk(&fa, libc::F_WRLCK, 0, 100, false), 0);
    assert_eq!(setlk(&fb, libc::F_WRLCK, 50, 10, false), libc::EAGAIN, "overlapping write lock");
    assert_eq!(setlk(&fb, libc::F_RDLCK, 99, 1, false), libc::EAGAIN, "a read lock on the last byte");
    assert_eq!(setlk(&fb, libc::F_WRLCK, 100, 100, false), 0, "the next byte is free");

    // F_GETLK through B names A's lock and its range.
    let l = getlk(&fb, libc::F_RDLCK, 0, 0);
    assert_eq!(
        (l.l_type as libc::c_int, l.l_start, l.l_len),
        (libc::F_WRLCK, 0, 100),
        "F_GETLK across mounts reports the other mount's lock"
    );
    let l = getlk(&fb, libc::F_WRLCK, 300, 10);
    assert_eq!(l.l_type as libc::c_int, libc::F_UNLCK, "nothing in the way past both locks");

    // Unlocking the middle of A's range frees just that.
    assert_eq!(setlk(&fa, libc::F_UNLCK, 40, 20, false), 0);
    assert_eq!(setlk(&fb, libc::F_WRLCK, 45, 10, false), 0);
    assert_eq!(setlk(&fb, libc::F_WRLCK, 30, 20, false), libc::EAGAIN);

    // Readers share.
    assert_eq!(setlk(&fa, libc::F_RDLCK, 1000, 10, false), 0);
    assert_eq!(setlk(&fb, libc::F_RDLCK, 1005, 10, false), 0);
    assert_eq!(setlk(&fb, libc::F_WRLCK, 1000, 1, false), libc::EAGAIN);

    // F_SETLKW through B waits until A gives the range back.
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let started = Instant::now();
        let rc = setlk(&fb, libc::F_WRLCK, 0, 10, true);
        let _ = tx.send((rc, started.elapsed()));
        fb
    });
    assert!(rx.recv_timeout(Duration::from_secs(2)).is_err(), "F_SETLKW returned while A holds the range");
    // Closing any descriptor of the file gives back the process's locks (POSIX).
    let again = File::open(a.join("db")).expect("open again through A");
    drop(again);
    let (rc, waited) = rx.recv_timeout(Duration::from_secs(10)).expect("F_SETLKW granted once A closed");
    assert_eq!(rc, 0);
    println!("F_SETLKW through B granted {waited:.2?} after it asked (A closed after 2 s)");
    let fb = waiter.join().expect("the waiter");
    assert_eq!(setlk(&fa, libc::F_RDLCK, 0, 1, false), libc::EAGAIN, "B holds it now");
    drop(fb);

    // What A writes under a lock is on the cluster once A gives the lock
    // back, with the file still open: B reads it (within the attribute TTL).
    assert_eq!(setlk(&fa, libc::F_WRLCK, 0, 0, false), 0);
    fa.write_all_at(b"written under the lock\n", 0).expect("write through A");
    assert_eq!(setlk(&fa, libc::F_UNLCK, 0, 0, false), 0);
    eventually("B to read what A wrote under the lock", Duration::from_secs(5), || {
        std::fs::read(b.join("db")).is_ok_and(|d| d.starts_with(b"written under the lock\n"))
    });
    drop(fa);
}

#[test]
fn a_lock_taken_through_another_mount_reads_what_was_written_under_the_last_one() {
    let c = Cluster::start(3);
    let a = Mount::start(&c);
    let b = Mount::start(&c);
    shared_file(&a, &b, "counter");
    let fa = open_rw(&a.join("counter"));
    // Taken first: the new leader's grace period is waited out here, not
    // between B's reads below.
    assert_eq!(flock(&fa, libc::LOCK_EX), 0);
    // B has read the file just now, through a descriptor open for writing
    // (as sqlite keeps one) and one for reading.
    let (fb, fr) = (open_rw(&b.join("counter")), File::open(b.join("counter")).expect("open through B"));
    let read = |f: &File| {
        let mut buf = vec![0u8; 64];
        let n = f.read_at(&mut buf, 0).expect("read through B");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!((read(&fb), read(&fr)), ("locked content\n".to_string(), "locked content\n".to_string()));

    fa.set_len(0).expect("truncate through A");
    fa.write_all_at(b"1\n", 0).expect("write through A");
    assert_eq!(flock(&fa, libc::LOCK_UN), 0);
    // Right after the lock is B's: A's content, not what B had.
    assert_eq!(flock(&fb, libc::LOCK_EX), 0);
    assert_eq!(read(&fb), "1\n", "read under flock through a descriptor open for writing");
    assert_eq!(flock(&fb, libc::LOCK_UN), 0);

    assert_eq!(setlk(&fa, libc::F_WRLCK, 0, 0, true), 0);
    fa.write_all_at(b"2\n", 0).expect("write through A");
    assert_eq!(setlk(&fa, libc::F_UNLCK, 0, 0, false), 0);
    assert_eq!(setlk(&fr, libc::F_RDLCK, 0, 0, true), 0);
    assert_eq!(read(&fr), "2\n", "read under a read lock through a descriptor open for reading");
    assert_eq!(read(&fb), "2\n", "and through the one open for writing");
    assert_eq!(setlk(&fr, libc::F_UNLCK, 0, 0, false), 0);
    drop((fa, fb, fr));
}

#[test]
fn a_process_waiting_for_a_lock_can_be_killed() {
    let c = Cluster::start(3);
    let a = Mount::start(&c);
    let b = Mount::start(&c);
    shared_file(&a, &b, "f");
    let held = open_rw(&a.join("f"));
    assert_eq!(flock(&held, libc::LOCK_EX | libc::LOCK_NB), 0);

    let mut cmd = Command::new("flock");
    cmd.arg(b.join("f")).arg("true").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    die_with_parent(&mut cmd);
    let mut waiting = cmd.spawn().expect("start flock");
    thread::sleep(Duration::from_secs(2));
    assert!(waiting.try_wait().expect("poll flock").is_none(), "flock did not wait for the lock");
    // SAFETY: kill(2) on the child we started.
    unsafe { libc::kill(waiting.id() as libc::pid_t, libc::SIGTERM) };
    let status = wait_until(&mut waiting, Instant::now() + Duration::from_secs(5));
    if status.is_none() {
        let _ = waiting.kill();
        let _ = waiting.wait();
    }
    assert!(status.is_some(), "a process waiting for a lock did not die of SIGTERM within 5 s");

    // The lock was never given to it, and both mounts still work.
    assert_taken(&flock_cmd(&b.join("f"), &[]));
    assert_eq!(flock(&held, libc::LOCK_UN), 0);
    assert_got(&flock_cmd(&b.join("f"), &[]));
}

#[test]
fn a_mount_killed_with_sigkill_loses_its_locks_within_the_lease() {
    let c = Cluster::start(3);
    let a = Mount::start(&c);
    let b = Mount::start(&c);
    // A flock and an fcntl lock of one file exclude each other here (as on
    // NFS: the README says why), so each has a file of its own.
    shared_file(&a, &b, "f");
    shared_file(&a, &b, "r");
    let held = open_rw(&a.join("f"));
    let ranged = open_rw(&a.join("r"));
    assert_eq!(flock(&held, libc::LOCK_EX | libc::LOCK_NB), 0);
    assert_eq!(setlk(&ranged, libc::F_WRLCK, 0, 10, false), 0);
    assert_taken(&flock_cmd(&b.join("f"), &[]));

    // SAFETY: kill(2) on the mount process the harness started.
    unsafe { libc::kill(a.pid() as libc::pid_t, libc::SIGKILL) };
    let killed = Instant::now();
    // The leader heard from it at most a keep-alive ago: the lease runs on.
    assert_taken(&flock_cmd(&b.join("f"), &[]));
    let fb = open_rw(&b.join("r"));
    assert_eq!(setlk(&fb, libc::F_WRLCK, 0, 10, false), libc::EAGAIN);
    loop {
        let out = flock_cmd(&b.join("f"), &[]);
        if out.success() {
            break;
        }
        assert_taken(&out);
        assert!(
            killed.elapsed() < LEASE_BOUND,
            "the dead mount's flock still held {:?} after the kill",
            killed.elapsed()
        );
        thread::sleep(Duration::from_millis(200));
    }
    println!("the killed mount's locks went {:.2?} after the kill", killed.elapsed());
    assert_eq!(setlk(&fb, libc::F_WRLCK, 0, 10, false), 0, "its fcntl lock went too");
    drop((held, ranged));
}

#[test]
fn a_lock_held_through_a_failover_of_the_leader_is_reclaimed_and_still_excludes() {
    let c = Cluster::start(3);
    let a = Mount::start(&c);
    let b = Mount::start(&c);
    shared_file(&a, &b, "f");
    shared_file(&a, &b, "r");
    let held = open_rw(&a.join("f"));
    let ranged = open_rw(&a.join("r"));
    assert_eq!(flock(&held, libc::LOCK_EX | libc::LOCK_NB), 0);
    assert_eq!(setlk(&ranged, libc::F_WRLCK, 0, 10, false), 0);
    let fb = open_rw(&b.join("r"));
    assert_eq!(setlk(&fb, libc::F_WRLCK, 5, 1, false), libc::EAGAIN);

    let before = c.status();
    let leader = before.leader.expect("a leader");
    c.kill(leader);
    let killed = Instant::now();
    let after = c.wait_for("a new leader", Duration::from_secs(15), |s| s.leader.is_some_and(|l| l != leader));
    println!("node {} leads term {} (was node {leader}, term {})", after.leader.unwrap_or(0), after.term, before.term);

    // Through the new leader's grace period and after it, B never gets the locks.
    let mut tries = 0;
    while killed.elapsed() < Duration::from_secs(25) {
        let out = flock_cmd(&b.join("f"), &[]);
        assert_taken(&out);
        if tries == 0 {
            println!("the first flock -n through B took {:.2?} (the new leader's grace period)", out.elapsed);
        }
        tries += 1;
    }
    assert_eq!(setlk(&fb, libc::F_WRLCK, 5, 1, false), libc::EAGAIN, "the fcntl range is still A's");
    println!("{tries} tries of flock -n through B failed over {:.2?} after the failover", killed.elapsed());
    assert!(a.log().contains("reclaimed"), "mount A did not say it reclaimed:\n{}", a.log());

    // Given back, they are B's.
    drop((held, ranged));
    assert_got_soon(&b.join("f"));
    assert_eq!(setlk(&fb, libc::F_WRLCK, 5, 1, false), 0);
}
