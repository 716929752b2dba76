//! Earlier versions (issue 13): with the trash on, the content an overwrite
//! replaces stays as a version for `trash_hours`; `scs versions` lists
//! them, `scs download --version` reads one and `scs restore --version`
//! makes one current again, keeping what it replaces.

use std::fs;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use scs_tests::cli::run;
use scs_tests::mount::Mount;
use scs_tests::{eventually, seeded_bytes, Cluster};

/// One line of `scs versions --json`.
#[derive(Debug, Deserialize)]
struct Version {
    version: String,
    size: u64,
    mtime_ns: i64,
    replaced_ns: i64,
}

fn versions(c: &Cluster, path: &str) -> Vec<Version> {
    let out = c.scs(&["versions", path, "--json"]);
    serde_json::from_str(&out.assert_ok().stdout_text()).unwrap_or_else(|e| panic!("versions --json: {e}\n{out}"))
}

/// The sizes of the versions kept, the oldest first.
fn kept_sizes(c: &Cluster, path: &str) -> Vec<u64> {
    versions(c, path).iter().map(|v| v.size).collect()
}

fn download_version(c: &Cluster, path: &str, v: &str) -> Vec<u8> {
    let local = c.scratch_path("v");
    c.scs(&["download", path, local.to_str().unwrap(), "--version", v]).assert_ok();
    let bytes = fs::read(&local).unwrap();
    let _ = fs::remove_file(local);
    bytes
}

/// Waits for each of the three nodes to keep exactly `contents` in its
/// blobs, each once and whole.
fn every_node_holds(c: &Cluster, contents: &[Vec<u8>]) {
    let mut want = contents.to_vec();
    want.sort();
    for id in 1..=3 {
        eventually(&format!("node {id} to hold the {} contents", want.len()), Duration::from_secs(30), || {
            let mut held: Vec<Vec<u8>> = c.blob_files(id).iter().filter_map(|p| fs::read(p).ok()).collect();
            held.sort();
            held == want
        });
    }
}

#[test]
fn three_overwrites_then_version_1_comes_back_and_what_it_replaced_is_kept() {
    let c = Cluster::start(3);
    // Over 8 KiB (content in blobs on the holders) and small (inline) alike.
    for (path, len) in [("big.bin", 100_000usize), ("note.txt", 300)] {
        let drafts: Vec<Vec<u8>> = (0..4).map(|n| seeded_bytes(10 + n, len + n as usize)).collect();
        for d in &drafts {
            c.upload_bytes(path, d);
        }
        let listed = versions(&c, path);
        let numbers: Vec<&str> = listed.iter().map(|v| v.version.as_str()).collect();
        assert_eq!(numbers, ["1", "2", "3"], "{path}: three kept, the oldest first");
        assert_eq!(kept_sizes(&c, path), [len as u64, len as u64 + 1, len as u64 + 2]);
        assert!(listed.windows(2).all(|w| w[0].replaced_ns < w[1].replaced_ns), "{listed:?}");
        assert!(listed[0].replaced_ns >= listed[0].mtime_ns);
        for v in &listed {
            let n: usize = v.version.parse().unwrap();
            assert_eq!(download_version(&c, path, &v.version), drafts[n - 1], "{path} version {n}");
        }
        // People read a table: the versions, and the current content last.
        let table = c.scs(&["versions", path]).assert_ok().stdout_text();
        assert_eq!(table.lines().count(), 5, "{table}");
        assert!(table.lines().last().unwrap().trim_start().starts_with("current"), "{table}");

        c.scs(&["restore", path, "--version", "1"]).assert_ok();
        c.assert_content(path, &drafts[0]);
        assert_eq!(
            kept_sizes(&c, path),
            [len as u64 + 1, len as u64 + 2, len as u64 + 3],
            "{path}: version 1 is current again, and the content it replaced is the newest version"
        );
        assert_eq!(download_version(&c, path, "3"), drafts[3]);
    }
    // Every node keeps each of big.bin's four contents once, whole: the
    // current one (version 1's, again) and the three versions.
    c.wait_for("nothing to be wanted", Duration::from_secs(20), |s| s.nodes.iter().all(|n| n.wanted == 0));
    let want: Vec<Vec<u8>> = (0..4).map(|n| seeded_bytes(10 + n, 100_000 + n as usize)).collect();
    every_node_holds(&c, &want);

    // The trash lists them only when asked, by their file's path; a purge
    // of that path lets them go and leaves the file.
    let listed = c.scs(&["trash", "ls", "--json"]).assert_ok().stdout_text();
    assert_eq!(listed.trim(), "[]", "nothing was removed");
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&c.scs(&["trash", "ls", "--versions", "--json"]).assert_ok().stdout_text()).unwrap();
    let big: Vec<&serde_json::Value> = listed.iter().filter(|v| v["path"] == "big.bin").collect();
    assert_eq!(big.len(), 3, "{listed:?}");
    assert!(big.iter().all(|v| v["version_of"].is_u64()), "{big:?}");
    c.scs(&["trash", "purge", "note.txt"]).assert_ok();
    assert!(kept_sizes(&c, "note.txt").is_empty());
    c.assert_content("note.txt", &seeded_bytes(10, 300));

    c.scs(&["download", "big.bin", "-", "--version", "9"]).assert_one_line_error("versions 1 to 3 are kept");
    c.scs(&["restore", "big.bin", "--version", "0"]).assert_one_line_error("no version 0");
    c.scs(&["mkdir", "d"]).assert_ok();
    c.scs(&["versions", "d"]).assert_one_line_error("a directory has no versions");
    c.scs(&["versions", "nothing-here"]).assert_one_line_error("no such file");
}

#[test]
fn an_editor_rewriting_a_file_through_the_mount_leaves_its_versions() {
    let c = Cluster::start(3);
    let m = Mount::start(&c);
    let path = m.join("draft.md");
    for text in ["# one\n", "# two\n", "# three\n"] {
        // As editors write: truncate and write the whole again.
        fs::write(&path, text).unwrap();
    }
    assert_eq!(kept_sizes(&c, "draft.md"), [6, 6], "two overwrites, two versions");
    assert_eq!(download_version(&c, "draft.md", "1"), b"# one\n");
    c.scs(&["restore", "draft.md", "--version", "1"]).assert_ok();
    eventually("the mount to read version 1", Duration::from_secs(10), || {
        fs::read(&path).is_ok_and(|b| b == b"# one\n")
    });
    assert_eq!(kept_sizes(&c, "draft.md"), [6, 8]);
}

#[test]
fn the_mount_shows_versions_in_its_trash_and_cp_brings_version_1_back() {
    let c = Cluster::start(3);
    let m = Mount::start(&c);
    fs::create_dir(m.join("notes")).unwrap();
    let path = m.join("notes/todo.txt");
    for text in ["one\n", "two\n", "three\n", "four\n"] {
        fs::write(&path, text).unwrap();
    }
    let trash = m.join(".scs-trash/notes");
    let listed = || -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&trash)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    };
    eventually("the trash to show three versions", Duration::from_secs(10), || listed().len() == 3);
    assert_eq!(listed(), ["todo.txt~v1", "todo.txt~v2", "todo.txt~v3"], "numbered as scs versions numbers them");
    assert_eq!(fs::read(trash.join("todo.txt~v1")).unwrap(), b"one\n");
    assert_eq!(fs::read(trash.join("todo.txt~v3")).unwrap(), b"three\n");
    let e = fs::remove_file(trash.join("todo.txt~v2")).expect_err("a version is read-only");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");

    // cp brings version 1 back, and what it replaced is kept in its turn.
    let out = run(Path::new("cp"), &[trash.join("todo.txt~v1").into(), path.clone().into()], Duration::from_secs(30));
    assert!(out.success(), "cp: {out}");
    assert_eq!(fs::read(&path).unwrap(), b"one\n");
    c.assert_content("notes/todo.txt", b"one\n");
    assert_eq!(kept_sizes(&c, "notes/todo.txt"), [4, 4, 6, 5], "one, two, three and four are kept");
    eventually("the trash to show the fourth version", Duration::from_secs(10), || listed().len() == 4);
    assert_eq!(fs::read(trash.join("todo.txt~v4")).unwrap(), b"four\n");
}

#[test]
fn versions_expire_with_the_trash_and_go_with_their_file_when_it_is_purged() {
    let c = Cluster::builder(3).config("trash_hours = 0.002\n").start();
    let big = |n: u64| seeded_bytes(20 + n, 50_000);
    for n in 0..3 {
        c.upload_bytes("a.bin", &big(n));
    }
    assert_eq!(kept_sizes(&c, "a.bin").len(), 2);
    // 0.002 hours: 7.2 s, and the versions are gone, content and all.
    eventually("a.bin's versions to expire", Duration::from_secs(30), || kept_sizes(&c, "a.bin").is_empty());
    for id in 1..=3 {
        eventually(&format!("node {id} to keep one blob"), Duration::from_secs(20), || c.blob_files(id).len() == 1);
    }
    c.assert_content("a.bin", &big(2));

    let c = Cluster::start(3);
    for n in 0..3 {
        c.upload_bytes("b.bin", &big(n));
    }
    c.scs(&["rm", "b.bin"]).assert_ok();
    c.scs(&["trash", "restore", "b.bin"]).assert_ok();
    assert_eq!(kept_sizes(&c, "b.bin").len(), 2, "a file back from the trash has its versions");
    c.scs(&["rm", "b.bin"]).assert_ok();
    c.scs(&["trash", "purge", "b.bin"]).assert_ok();
    for id in 1..=3 {
        eventually(&format!("node {id} to drop every blob"), Duration::from_secs(20), || c.blob_files(id).is_empty());
    }
    c.wait_for("the trash to count nothing", Duration::from_secs(20), |s| s.nodes.iter().all(|n| n.trash_bytes == 0));
}

/// A node at its `max_files` is short of room (it needs one more place for
/// the next file): the oldest version goes, and the newer stays once there
/// is a place again.
#[test]
fn a_full_node_lets_the_oldest_version_go_first() {
    let c = Cluster::builder(3).max_files(1, 4).max_files(2, 4).max_files(3, 4).start();
    let big = |n: u64| seeded_bytes(30 + n, 20_000);
    for n in 0..3 {
        c.upload_bytes("a.bin", &big(n));
    }
    assert_eq!(kept_sizes(&c, "a.bin").len(), 2, "three places of four taken: the file and two versions");
    c.upload_bytes("b.bin", &big(3));
    eventually("the oldest version to make room", Duration::from_secs(20), || kept_sizes(&c, "a.bin").len() == 1);
    assert_eq!(download_version(&c, "a.bin", "1"), big(1), "the newer version stays");
    c.assert_content("a.bin", &big(2));
    c.assert_content("b.bin", &big(3));
}

#[test]
fn with_the_trash_off_an_overwrite_keeps_nothing() {
    let c = Cluster::builder(3).config("trash_hours = 0\n").start();
    c.upload_bytes("x.txt", b"one");
    c.upload_bytes("x.txt", b"two");
    assert!(kept_sizes(&c, "x.txt").is_empty());
    c.scs(&["restore", "x.txt", "--version", "1"]).assert_one_line_error("no earlier version of x.txt is kept");
}

#[test]
fn past_max_versions_the_oldest_version_of_a_file_leaves_every_disk() {
    let c = Cluster::builder(3).config("max_versions = 2\n").start();
    let drafts: Vec<Vec<u8>> = (0..4).map(|n| seeded_bytes(40 + n, 60_000)).collect();
    for d in &drafts {
        c.upload_bytes("db.bin", d);
    }
    assert_eq!(kept_sizes(&c, "db.bin").len(), 2, "two kept, the oldest gone");
    assert_eq!(download_version(&c, "db.bin", "1"), drafts[1]);
    assert_eq!(download_version(&c, "db.bin", "2"), drafts[2]);
    every_node_holds(&c, &drafts[1..]);
    // Another file has versions of its own.
    c.upload_bytes("other.bin", &drafts[0]);
    c.upload_bytes("other.bin", &drafts[3]);
    assert_eq!(kept_sizes(&c, "other.bin"), [60_000]);
    assert_eq!(kept_sizes(&c, "db.bin").len(), 2);
}

#[test]
fn restoring_a_version_with_the_bytes_the_file_has_keeps_its_content_on_every_node() {
    let c = Cluster::start(3);
    let (a, b) = (seeded_bytes(50, 70_000), seeded_bytes(51, 70_000));
    for d in [&a, &b, &a] {
        c.upload_bytes("same.bin", d);
    }
    assert_eq!(kept_sizes(&c, "same.bin").len(), 2, "a, then b");
    // Version 1 has the bytes the file has: nothing new to keep.
    c.scs(&["restore", "same.bin", "--version", "1"]).assert_ok();
    c.assert_content("same.bin", &a);
    assert_eq!(download_version(&c, "same.bin", "1"), b);
    every_node_holds(&c, &[a.clone(), b.clone()]);
    // Uploading the same bytes again keeps nothing either.
    c.upload_bytes("same.bin", &a);
    assert_eq!(kept_sizes(&c, "same.bin").len(), 1);
}

#[test]
fn a_restore_of_a_version_across_a_failover_happens_once() {
    let mut c = Cluster::start(3);
    let drafts: Vec<Vec<u8>> = (0..4).map(|n| seeded_bytes(40 + n, 30_000 + n as usize)).collect();
    for d in &drafts {
        c.upload_bytes("doc.bin", d);
    }
    let leader = c.status().leader.expect("a leader");
    let first = std::thread::scope(|s| {
        let restore = s.spawn(|| c.scs(&["restore", "doc.bin", "--version", "1"]));
        // Killed as soon as it has the request: before or after it
        // committed the change, the client goes on with the next leader.
        eventually("the leader to get the restore", Duration::from_secs(10), || {
            fs::read_to_string(c.log_path(leader)).is_ok_and(|log| log.contains("restore-version from"))
        });
        c.kill(leader);
        restore.join().expect("the restore thread")
    });
    c.wait_for("a new leader", Duration::from_secs(10), |s| s.leader.is_some_and(|l| l != leader) && s.quorum);
    first.assert_ok();
    c.assert_content("doc.bin", &drafts[0]);
    let sizes: Vec<u64> = drafts[1..].iter().map(|d| d.len() as u64).collect();
    assert_eq!(kept_sizes(&c, "doc.bin"), sizes, "the replaced content kept once, version 1 gone once");

    // The old leader, back, agrees; every node keeps each content whole.
    c.restart(leader);
    c.wait_for("all three up, nothing wanted", Duration::from_secs(30), |s| {
        s.alive_ids() == [1, 2, 3] && s.nodes.iter().all(|n| n.wanted == 0)
    });
    every_node_holds(&c, &drafts);
}

/// A program started while a file is being written inherits its descriptor
/// and closes it at exec: that close is not the writer's, and stores
/// nothing. It used to store what was written so far, which the file's
/// real close then replaced, leaving a half-written version (and, on a full
/// cluster, a half-written file in the way of the whole one).
#[test]
fn a_program_started_while_a_file_is_written_does_not_store_it_half_written() {
    use std::io::Write;
    let c = Cluster::start(3);
    let m = Mount::start(&c);
    let (first, rest) = (seeded_bytes(7, 3 << 20), seeded_bytes(8, 2 << 20));
    let mut f = fs::File::create(m.join("log.bin")).unwrap();
    f.write_all(&first).unwrap();
    // The child gets the descriptor (without O_CLOEXEC's effect until its
    // exec), and the exec closes it: a flush from another process.
    let status = std::process::Command::new("true").status().unwrap();
    assert!(status.success());
    f.write_all(&rest).unwrap();
    drop(f);
    let whole = [first, rest].concat();
    c.assert_content("log.bin", &whole);
    assert_eq!(kept_sizes(&c, "log.bin"), Vec::<u64>::new(), "stored once, whole: no earlier version");
}
