//! The trash (issue 13): what is removed stays for `trash_hours` and comes
//! back with `scs trash restore`, as a whole tree with its metadata; a
//! restore never replaces a name; `purge` and the retention let it go for
//! good, content and all.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use scs_tests::cli::run;
use scs_tests::mount::Mount;
use scs_tests::{eventually, seeded_bytes, Cluster};

/// One item of `scs trash ls --json`.
#[derive(Debug, Deserialize)]
struct Item {
    path: String,
    kind: String,
    size: u64,
    deleted_ns: i64,
    items: u64,
    bytes: u64,
}

fn trash_ls(c: &Cluster, prefix: &str) -> Vec<Item> {
    let mut args = vec!["trash", "ls", "--json"];
    if !prefix.is_empty() {
        args.insert(2, prefix);
    }
    let out = c.scs(&args);
    serde_json::from_str(&out.assert_ok().stdout_text()).unwrap_or_else(|e| panic!("trash ls --json: {e}\n{out}"))
}

fn paths(items: &[Item]) -> Vec<&str> {
    items.iter().map(|i| i.path.as_str()).collect()
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let rc = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(rc, 0, "setxattr {}: {}", path.display(), std::io::Error::last_os_error());
}

fn get_xattr(path: &Path, name: &str) -> Vec<u8> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: as above; the kernel writes at most buf.len() bytes.
    let rc = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(rc >= 0, "getxattr {}: {}", path.display(), std::io::Error::last_os_error());
    buf.truncate(rc as usize);
    buf
}

#[test]
fn a_tree_removed_with_rm_rf_comes_back_whole_with_its_metadata() {
    let c = Cluster::start(3);
    let m = Mount::start(&c);
    let photos = m.join("photos");
    fs::create_dir_all(photos.join("2024/summer")).unwrap();
    let big = seeded_bytes(1, 300_000);
    let small = seeded_bytes(2, 3000);
    fs::write(photos.join("2024/summer/beach.jpg"), &big).unwrap();
    fs::write(photos.join("2024/notes.txt"), &small).unwrap();
    fs::write(photos.join("empty"), b"").unwrap();
    fs::set_permissions(photos.join("2024/notes.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(photos.join("2024"), fs::Permissions::from_mode(0o750)).unwrap();
    set_xattr(&photos.join("2024/summer/beach.jpg"), "user.camera", b"x100");
    std::os::unix::fs::symlink("2024/summer/beach.jpg", photos.join("latest")).unwrap();
    let mtime = fs::metadata(photos.join("2024/notes.txt")).unwrap().mtime();

    let out = run(Path::new("rm"), &["-rf".into(), photos.clone().into()], Duration::from_secs(60));
    assert!(out.success(), "rm -rf: {out}");
    assert!(!photos.exists());

    // At the top, the tree as one item; below it, everything that was in it.
    let top = trash_ls(&c, "");
    assert_eq!(paths(&top), ["photos"], "{top:#?}");
    assert_eq!((top[0].kind.as_str(), top[0].items), ("dir", 7), "{top:#?}");
    assert_eq!(top[0].bytes, (big.len() + small.len()) as u64);
    let all = trash_ls(&c, "photos");
    assert_eq!(
        paths(&all),
        [
            "photos",
            "photos/2024",
            "photos/2024/notes.txt",
            "photos/2024/summer",
            "photos/2024/summer/beach.jpg",
            "photos/empty",
            "photos/latest"
        ],
        "{all:#?}"
    );
    let notes = &all[2];
    assert_eq!((notes.kind.as_str(), notes.size), ("file", 3000));
    assert!(notes.deleted_ns <= all[0].deleted_ns, "what was inside went first");

    // Text for people: when, how big, what.
    let text = c.scs(&["trash", "ls"]).assert_ok().stdout_text();
    assert!(text.contains("photos/") && text.contains("6 items inside"), "{text}");

    c.scs(&["trash", "restore", "/photos"]).assert_ok();
    assert!(trash_ls(&c, "").is_empty(), "the trash is empty once it is all back");
    eventually("the mount sees photos again", Duration::from_secs(10), || photos.join("latest").exists());
    assert_eq!(fs::read(photos.join("2024/summer/beach.jpg")).unwrap(), big);
    assert_eq!(fs::read(photos.join("2024/notes.txt")).unwrap(), small);
    assert_eq!(fs::read(photos.join("empty")).unwrap(), b"");
    assert_eq!(fs::read_link(photos.join("latest")).unwrap(), Path::new("2024/summer/beach.jpg"));
    let notes = fs::metadata(photos.join("2024/notes.txt")).unwrap();
    assert_eq!((notes.mode() & 0o7777, notes.mtime()), (0o600, mtime), "mode and times come back");
    assert_eq!(fs::metadata(photos.join("2024")).unwrap().mode() & 0o7777, 0o750);
    assert_eq!(get_xattr(&photos.join("2024/summer/beach.jpg"), "user.camera"), b"x100");
    assert_eq!(fs::metadata(&photos).unwrap().nlink(), 3, "photos counts its subdirectory again");
    c.assert_content("photos/2024/summer/beach.jpg", &big);
}

#[test]
fn a_restore_never_replaces_a_name_and_to_puts_it_elsewhere() {
    let c = Cluster::start(3);
    c.upload_bytes("report.txt", b"first draft");
    c.scs(&["rm", "report.txt"]).assert_ok();
    c.upload_bytes("report.txt", b"second draft");

    let out = c.scs(&["trash", "restore", "report.txt"]);
    out.assert_one_line_error("report.txt exists now");
    c.assert_content("report.txt", b"second draft");

    // --to a name that is taken is refused as well, before anything moves.
    c.upload_bytes("old/taken.txt", b"x");
    c.scs(&["trash", "restore", "report.txt", "--to", "old/taken.txt"]).assert_one_line_error("exists now");
    c.scs(&["trash", "restore", "report.txt", "--to", "old/report.txt"]).assert_ok();
    c.assert_content("old/report.txt", b"first draft");
    c.assert_content("report.txt", b"second draft");

    c.scs(&["trash", "restore", "report.txt"]).assert_one_line_error("not in the trash");
    c.scs(&["trash", "restore", "never-there"]).assert_one_line_error("not in the trash");

    // A file removed from a directory that went later comes back with the
    // directory (only it: not what else was in it).
    c.upload_bytes("a/b/keep.txt", b"keep");
    c.upload_bytes("a/other.txt", b"other");
    c.scs(&["rm", "a/b/keep.txt"]).assert_ok();
    c.scs(&["rm", "a/b"]).assert_ok();
    c.scs(&["trash", "restore", "a/b/keep.txt"]).assert_ok();
    c.assert_content("a/b/keep.txt", b"keep");
    c.assert_content("a/other.txt", b"other");
}

#[test]
fn purge_and_the_retention_let_content_go_for_good() {
    let c = Cluster::builder(3).config("trash_hours = 0.002\n").start();
    // Over 8 KiB: kept in blobs on the holders.
    let big = seeded_bytes(3, 100_000);
    c.upload_bytes("a.bin", &big);
    c.upload_bytes("b.bin", &big);
    c.scs(&["rm", "a.bin"]).assert_ok();
    assert_eq!(paths(&trash_ls(&c, "")), ["a.bin"]);
    assert_eq!(c.blob_files(1).len(), 2, "the content stays while it is in the trash");

    // 0.002 hours: 7.2 s, and it is gone, content and all, on every node.
    eventually("a.bin to expire", Duration::from_secs(30), || trash_ls(&c, "").is_empty());
    for id in 1..=3 {
        eventually(&format!("node {id} to drop a.bin's blob"), Duration::from_secs(20), || c.blob_files(id).len() == 1);
    }
    c.scs(&["trash", "restore", "a.bin"]).assert_one_line_error("not in the trash");
    c.assert_content("b.bin", &big);
}

#[test]
fn purge_takes_a_path_an_age_or_everything() {
    let c = Cluster::start(3);
    let big = seeded_bytes(4, 50_000);
    for n in ["x.bin", "d/y.bin", "d/z.bin", "w.bin"] {
        c.upload_bytes(n, &big);
    }
    for n in ["x.bin", "d/y.bin", "d/z.bin", "d", "w.bin"] {
        c.scs(&["rm", n]).assert_ok();
    }
    assert_eq!(paths(&trash_ls(&c, "")), ["d", "w.bin", "x.bin"]);
    c.scs(&["trash", "purge", "d"]).assert_ok();
    assert_eq!(paths(&trash_ls(&c, "d")), Vec::<&str>::new(), "the directory went with what was in it");
    c.scs(&["trash", "purge", "--older-than", "1h"]).assert_ok();
    assert_eq!(paths(&trash_ls(&c, "")), ["w.bin", "x.bin"], "nothing is an hour old");
    c.scs(&["trash", "purge", "nothing-here"]).assert_one_line_error("not in the trash");
    let out = c.scs(&["trash", "purge"]);
    assert_eq!(out.code(), Some(2), "purge needs a path, an age or --all: {out}");
    c.wait_for("every node to count two files in the trash", Duration::from_secs(20), |s| {
        s.nodes.iter().all(|n| n.trash_bytes == 2 * big.len() as u64)
    });
    c.scs(&["trash", "purge", "--all"]).assert_ok();
    assert!(trash_ls(&c, "").is_empty());
    c.wait_for("the trash to count nothing", Duration::from_secs(20), |s| s.nodes.iter().all(|n| n.trash_bytes == 0));
    eventually("every blob to go", Duration::from_secs(20), || (1..=3).all(|id| c.blob_files(id).is_empty()));
}

#[test]
fn a_full_node_lets_the_oldest_in_the_trash_go_before_it_refuses_a_file() {
    let c = Cluster::builder(3).max_files(1, 3).max_files(2, 3).max_files(3, 3).start();
    let big = seeded_bytes(6, 20_000);
    c.upload_bytes("a.bin", &big);
    c.upload_bytes("b.bin", &big);
    c.scs(&["rm", "a.bin"]).assert_ok();
    c.scs(&["rm", "b.bin"]).assert_ok();
    assert_eq!(paths(&trash_ls(&c, "")), ["a.bin", "b.bin"], "two of three places taken, by the trash");

    // The third file fills every node: the oldest in the trash makes room.
    c.upload_bytes("c.bin", &big);
    eventually("a.bin, the oldest, to leave the trash", Duration::from_secs(20), || {
        paths(&trash_ls(&c, "")) == ["b.bin"]
    });
    c.upload_bytes("d.bin", &big);
    eventually("b.bin to leave the trash", Duration::from_secs(20), || trash_ls(&c, "").is_empty());
    c.upload_bytes("e.bin", &big);
    // Full, and nothing left in the trash: refused as before.
    c.try_upload_bytes("f.bin", &big).assert_one_line_error("max_files");
    for n in ["c.bin", "d.bin", "e.bin"] {
        c.assert_content(n, &big);
    }
}

#[test]
fn with_the_trash_off_a_removal_is_final() {
    let c = Cluster::builder(3).config("trash_hours = 0\n").start();
    c.upload_bytes("gone.txt", b"bye");
    c.scs(&["rm", "gone.txt"]).assert_ok();
    assert!(trash_ls(&c, "").is_empty());
    c.scs(&["trash", "restore", "gone.txt"]).assert_one_line_error("not in the trash");
}

#[test]
fn a_restore_cut_short_by_a_failover_is_finished_by_running_it_again() {
    let c = Cluster::start(3);
    let m = Mount::start(&c);
    // Enough items for several of the restore's committed batches.
    let many = m.join("many");
    let mut files = Vec::new();
    for d in 0..4 {
        fs::create_dir_all(many.join(format!("d{d}"))).unwrap();
        for f in 0..400 {
            let rel = format!("many/d{d}/f{f}.txt");
            fs::write(m.join(&rel), format!("{rel}\n")).unwrap();
            files.push(rel);
        }
    }
    let out = run(Path::new("rm"), &["-rf".into(), many.clone().into()], Duration::from_secs(120));
    assert!(out.success(), "rm -rf: {out}");
    m.unmount();
    assert_eq!(trash_ls(&c, "")[0].items, 1605);

    let leader = c.status().leader.expect("a leader");
    let first = std::thread::scope(|s| {
        let restore = s.spawn(|| c.scs(&["trash", "restore", "many"]));
        // Killed as soon as the leader has the request: its batches take
        // tens of milliseconds.
        eventually("the leader to get the restore", Duration::from_secs(10), || {
            fs::read_to_string(c.log_path(leader)).is_ok_and(|log| log.contains("trash-restore from"))
        });
        c.kill(leader);
        restore.join().expect("the restore thread")
    });
    c.wait_for("a new leader", Duration::from_secs(10), |s| s.leader.is_some_and(|l| l != leader) && s.quorum);
    // Whatever the first attempt did, running it again finishes it, and
    // nothing comes back twice.
    let left = trash_ls(&c, "");
    eprintln!(
        "after the failover: the first restore {}, {} item(s) left in the trash",
        first.code().map_or("was killed".into(), |c| format!("exited {c}")),
        left.len()
    );
    if !left.is_empty() {
        c.scs(&["trash", "restore", "many"]).assert_ok();
    } else {
        first.assert_ok();
    }
    assert!(trash_ls(&c, "").is_empty(), "everything is back");
    for d in 0..4 {
        let listed = c.ls_json(&format!("many/d{d}"));
        assert_eq!(listed.len(), 400, "many/d{d}");
    }
    for rel in files.iter().step_by(97) {
        c.assert_content(rel, format!("{rel}\n").as_bytes());
    }
}

#[test]
fn a_removal_and_a_purge_made_while_a_node_was_down_do_not_come_back_with_it() {
    let mut c = Cluster::start(3);
    let big = seeded_bytes(7, 30_000);
    c.upload_bytes("kept.bin", &big);
    c.upload_bytes("purged.bin", &big);
    c.kill(1);
    c.wait_for("nodes 2 and 3 alone", Duration::from_secs(10), |s| s.is_settled(3, &[2, 3]));
    c.scs(&["rm", "kept.bin"]).assert_ok();
    c.scs(&["rm", "purged.bin"]).assert_ok();
    c.scs(&["trash", "purge", "purged.bin"]).assert_ok();
    c.restart(1);
    c.wait_for("node 1 to be back", Duration::from_secs(10), |s| s.is_settled(3, &[1, 2, 3]));
    // Node 1 still has both files as they were; it takes the cluster's word.
    c.wait_for("node 1 to keep only what is in the trash", Duration::from_secs(20), |s| {
        s.nodes.iter().all(|n| n.files == 1 && n.trash_bytes == big.len() as u64)
    });
    assert!(c.ls_json("").is_empty(), "neither name comes back");
    assert_eq!(paths(&trash_ls(&c, "")), ["kept.bin"]);
    // Node 1 serves the restore in its turn, with node 3 gone.
    c.kill(3);
    c.wait_for("nodes 1 and 2", Duration::from_secs(10), |s| s.is_settled(2, &[1, 2]));
    c.scs(&["trash", "restore", "kept.bin"]).assert_ok();
    c.assert_content("kept.bin", &big);
}

#[test]
fn the_mount_shows_the_trash_read_only_at_scs_trash_for_cp_to_copy_out() {
    let c = Cluster::start(3);
    let m = Mount::start(&c);
    let big = seeded_bytes(8, 200_000);
    fs::create_dir_all(m.join("docs/old")).unwrap();
    fs::write(m.join("docs/old/report.pdf"), &big).unwrap();
    fs::write(m.join("docs/notes.txt"), b"first").unwrap();
    std::os::unix::fs::symlink("old/report.pdf", m.join("docs/latest")).unwrap();
    fs::remove_file(m.join("docs/notes.txt")).unwrap();
    fs::write(m.join("docs/notes.txt"), b"second").unwrap();
    fs::remove_file(m.join("docs/notes.txt")).unwrap();
    let out = run(Path::new("rm"), &["-rf".into(), m.join("docs/old").into()], Duration::from_secs(60));
    assert!(out.success(), "rm -rf: {out}");

    let trash = m.join(".scs-trash");
    eventually("the trash to show docs/old", Duration::from_secs(10), || trash.join("docs/old/report.pdf").exists());
    // Not in the root's listing (a backup of the mount leaves it out), but there by name.
    let root: Vec<String> =
        fs::read_dir(m.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!root.iter().any(|n| n == ".scs-trash"), "{root:?}");
    let mut names: Vec<String> = fs::read_dir(trash.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "old, notes.txt and the earlier notes.txt: {names:?}");
    assert_eq!(names[0], "notes.txt");
    assert!(names[1].starts_with("notes.txt~20"), "the earlier one carries when it was removed: {names:?}");
    assert_eq!(fs::read(trash.join("docs/notes.txt")).unwrap(), b"second", "the last removed has the name");
    assert_eq!(fs::read(trash.join("docs").join(&names[1])).unwrap(), b"first");

    // cp copies out of it.
    let local = tempfile::tempdir().unwrap();
    let out = run(
        Path::new("cp"),
        &["-r".into(), trash.join("docs/old").into(), local.path().join("old").into()],
        Duration::from_secs(60),
    );
    assert!(out.success(), "cp -r: {out}");
    assert_eq!(fs::read(local.path().join("old/report.pdf")).unwrap(), big);

    // Nothing in it changes.
    for (what, res) in [
        ("create", fs::write(trash.join("docs/new.txt"), b"x").err()),
        ("write", fs::OpenOptions::new().append(true).open(trash.join("docs/notes.txt")).err()),
        ("unlink", fs::remove_file(trash.join("docs/notes.txt")).err()),
        ("mkdir", fs::create_dir(trash.join("docs/d")).err()),
        ("rename", fs::rename(trash.join("docs/notes.txt"), m.join("back.txt")).err()),
    ] {
        let e = res.unwrap_or_else(|| panic!("{what} in .scs-trash succeeded"));
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
    }
    assert_eq!(fs::read(trash.join("docs/notes.txt")).unwrap(), b"second");

    // Restored, it leaves the trash's view.
    c.scs(&["trash", "restore", "docs/old"]).assert_ok();
    // (The mount's view of docs is a second old at most.)
    eventually("the mount to see docs/old again", Duration::from_secs(10), || m.join("docs/old/report.pdf").exists());
    assert_eq!(fs::read(m.join("docs/old/report.pdf")).unwrap(), big);
    eventually("docs/old to leave .scs-trash", Duration::from_secs(10), || !trash.join("docs/old").exists());
}
