//! `scs-mount --write-back`: a closed small file is durable in the mount's
//! cache directory at once and reaches the cluster soon after; fsync,
//! rename, delete and unmount wait for it; nothing is lost when the mount
//! is killed or the cluster freezes, and what is left goes up at the next
//! start.
//!
//! These need /dev/fuse and root (or fusermount3). Every mount is unmounted
//! and its process killed when its test ends, also on failure.

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use scs_tests::mount::{Mount, MountOptions};
use scs_tests::{eventually, Cluster};

/// Written-back files reach the cluster within this (generous: CI is slow).
const UP_WITHIN: Duration = Duration::from_secs(20);

fn write_back(mountpoint: Option<PathBuf>, cache_root: Option<PathBuf>) -> MountOptions {
    MountOptions { mountpoint, cache_root, extra: vec![OsString::from("--write-back")], ..MountOptions::default() }
}

fn content(i: usize) -> Vec<u8> {
    format!("file {i}: {}\n", "x".repeat(i % 97)).into_bytes()
}

/// The journal of the one mount whose cache root is `root`.
fn pending_dir(root: &Path) -> PathBuf {
    let mut dirs: Vec<PathBuf> = fs::read_dir(root)
        .expect("the cache root")
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("mount-")))
        .collect();
    assert_eq!(dirs.len(), 1, "one mount's cache dir under {}", root.display());
    dirs.remove(0).join("pending")
}

/// Records in the journal: the 64 KiB slots of its `slots` file, and files
/// of their own, that start with the record magic (a freed slot starts
/// with zeros).
fn pending_records(root: &Path) -> usize {
    const MAGIC: &[u8] = b"SCSWB02\n";
    let Ok(dir) = fs::read_dir(pending_dir(root)) else { return 0 };
    let mut records = 0;
    for path in dir.map(|e| e.unwrap().path()) {
        let Ok(bytes) = fs::read(&path) else { continue };
        records += if path.file_name().is_some_and(|n| n == "slots") {
            bytes.chunks(64 << 10).filter(|slot| slot.starts_with(MAGIC)).count()
        } else {
            usize::from(bytes.starts_with(MAGIC))
        };
    }
    records
}

#[test]
fn written_back_files_are_readable_here_at_once_and_on_the_cluster_soon_after() {
    let c = Cluster::start(3);
    let m = Mount::start_with(&c, write_back(None, None));
    fs::create_dir(m.join("many")).unwrap();
    for i in 0..200 {
        fs::write(m.join(format!("many/f{i}")), content(i)).unwrap();
        // Listed at once, while earlier ones go up under the listing.
        if i % 5 == 0 {
            let listed = fs::read_dir(m.join("many")).unwrap().count();
            assert_eq!(listed, i + 1, "files listed after writing {}", i + 1);
            assert!(m.join(format!("many/f{}", i / 2)).exists(), "many/f{} is missing", i / 2);
        }
    }
    // Here, at once: listing and content.
    assert_eq!(fs::read_dir(m.join("many")).unwrap().count(), 200);
    for i in (0..200).step_by(17) {
        assert_eq!(fs::read(m.join(format!("many/f{i}"))).unwrap(), content(i));
    }
    // On the cluster, soon.
    eventually("all 200 files to be on the cluster", UP_WITHIN, || c.ls_names("many").len() == 200);
    for i in (0..200).step_by(13) {
        c.assert_content(&format!("many/f{i}"), &content(i));
    }
    eventually("the journal to empty", UP_WITHIN, || pending_records(m.cache_root()) == 0);

    // fsync returns once the cluster has the file.
    let mut f = fs::File::create(m.join("synced.txt")).unwrap();
    f.write_all(b"on the cluster when fsync returns").unwrap();
    f.sync_all().unwrap();
    c.assert_content("synced.txt", b"on the cluster when fsync returns");
    drop(f);

    // A mount without write-back sees them like any other file.
    let plain = Mount::start(&c);
    assert_eq!(fs::read(plain.join("many/f42")).unwrap(), content(42));
}

#[test]
fn renames_deletes_and_overwrites_land_in_the_order_they_were_made() {
    let c = Cluster::start(3);
    let m = Mount::start_with(&c, write_back(None, None));
    // Written, then renamed at once: it goes up under its new name only.
    fs::write(m.join("draft.txt"), b"final text").unwrap();
    fs::rename(m.join("draft.txt"), m.join("final.txt")).unwrap();
    assert_eq!(fs::read(m.join("final.txt")).unwrap(), b"final text");
    eventually("final.txt on the cluster", UP_WITHIN, || c.try_download("final.txt").1.is_some());
    c.assert_content("final.txt", b"final text");
    c.assert_missing("draft.txt");
    // Written and removed at once: it never needs to reach the cluster.
    fs::write(m.join("tmp.txt"), b"scratch").unwrap();
    fs::remove_file(m.join("tmp.txt")).unwrap();
    assert!(!m.join("tmp.txt").exists());
    // Overwritten many times in a row: the last content wins.
    for round in 0..30 {
        fs::write(m.join("counter.txt"), format!("round {round}")).unwrap();
    }
    assert_eq!(fs::read(m.join("counter.txt")).unwrap(), b"round 29");
    eventually("the last overwrite to be on the cluster", UP_WITHIN, || {
        c.try_download("counter.txt").1.is_some_and(|b| b == b"round 29")
    });
    // A directory moved right after files were written into it.
    fs::create_dir(m.join("src")).unwrap();
    for i in 0..20 {
        fs::write(m.join(format!("src/f{i}")), content(i)).unwrap();
    }
    fs::rename(m.join("src"), m.join("dst")).unwrap();
    assert_eq!(c.ls_names("dst").len(), 20, "the files moved with their directory");
    c.assert_content("dst/f7", &content(7));
    assert!(!c.ls_names("").contains(&"src".to_string()));
    // chmod after close applies to the stored file.
    fs::write(m.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(m.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(fs::metadata(m.join("run.sh")).unwrap().permissions().mode() & 0o777, 0o755);
    eventually("run.sh on the cluster", UP_WITHIN, || c.try_download("run.sh").1.is_some());
    let plain = Mount::start(&c);
    assert_eq!(fs::metadata(plain.join("run.sh")).unwrap().permissions().mode() & 0o777, 0o755);
    c.assert_missing("tmp.txt");
}

#[test]
fn unmounting_waits_until_every_written_back_file_is_on_the_cluster() {
    let c = Cluster::start(3);
    let m = Mount::start_with(&c, write_back(None, None));
    for i in 0..100 {
        fs::write(m.join(format!("u{i}")), content(i)).unwrap();
    }
    m.unmount();
    assert_eq!(c.ls_names("").len(), 100, "all there once the mount has exited");
    c.assert_content("u99", &content(99));
}

#[test]
fn files_written_back_while_the_cluster_is_frozen_survive_a_killed_mount() {
    let c = Cluster::start(3);
    let root = c.scratch_path("cache");
    let mountpoint = c.scratch_path("mnt");
    let opts = write_back(Some(mountpoint), Some(root.clone()));
    let m = Mount::start_with(&c, opts.clone());
    fs::create_dir(m.join("docs")).unwrap();
    // The cluster freezes; names in the directory just made are known to be
    // free, so files can still be written (and closed) here.
    for id in 1..=3 {
        c.pause(id);
    }
    // Written twice: the first version starts going up (and hangs), the
    // second waits behind it.
    fs::write(m.join("docs/x"), b"first").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    fs::write(m.join("docs/x"), b"second").unwrap();
    for i in 0..20 {
        fs::write(m.join(format!("docs/n{i}")), content(i)).unwrap();
    }
    assert_eq!(pending_records(&root), 22, "every closed file is in the journal");
    // What rsync does to each file, with the cluster still frozen: a closed
    // temporary file is chmodded, its times set, and renamed. None of it
    // waits for the cluster.
    fs::write(m.join("docs/.r.tmp"), b"rsynced").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(m.join("docs/.r.tmp"), fs::Permissions::from_mode(0o600)).unwrap();
    let touched = std::process::Command::new("touch").arg("-d").arg("@1000000000").arg(m.join("docs/.r.tmp")).status();
    assert!(touched.unwrap().success());
    fs::rename(m.join("docs/.r.tmp"), m.join("docs/r")).unwrap();
    assert_eq!(fs::read(m.join("docs/r")).unwrap(), b"rsynced");
    // The mount dies (kill -9); the cluster wakes up.
    drop(m);
    for id in 1..=3 {
        c.resume(id);
    }
    c.wait_for("a leader after the freeze", UP_WITHIN, |s| s.quorum);
    assert!(c.ls_names("docs").is_empty(), "nothing went up while frozen");
    // The next mount of the same directory sends them up.
    let again = Mount::start_with(&c, opts.clone());
    eventually("the 22 files to reach the cluster after the restart", UP_WITHIN, || c.ls_names("docs").len() == 22);
    c.assert_content("docs/r", b"rsynced");
    c.assert_missing("docs/.r.tmp");
    let r = fs::metadata(again.join("docs/r")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((r.mode() & 0o7777, r.mtime()), (0o600, 1_000_000_000), "its last mode and times went up with it");
    for i in 0..20 {
        c.assert_content(&format!("docs/n{i}"), &content(i));
    }
    c.assert_content("docs/x", b"second");
    assert_eq!(fs::read(again.join("docs/n3")).unwrap(), content(3));
    eventually("the journal to empty", UP_WITHIN, || pending_records(&root) == 0);
    // Nothing older comes back at a later start over what was written since.
    c.upload_bytes("docs/x", b"third, from elsewhere");
    drop(again);
    let _third = Mount::start_with(&c, opts);
    c.assert_content("docs/x", b"third, from elsewhere");
}

/// Files closed quickly go up several to an exchange (`UploadMany`); the
/// leader is killed while they do. Every file reaches the cluster once,
/// under its name, with its content, through the new leader; none is
/// reported as refused; and the old leader, back, has them too.
#[test]
fn files_written_back_in_batches_all_land_through_a_failover_of_the_leader() {
    const FILES: usize = 400;
    let mut c = Cluster::start(3);
    let m = Mount::start_with(&c, write_back(None, None));
    fs::create_dir(m.join("fo")).unwrap();
    let leader = c.status().leader.expect("a leader");
    for i in 0..FILES {
        fs::write(m.join(format!("fo/f{i}")), content(i)).unwrap();
        if i == FILES / 3 {
            c.kill(leader);
        }
    }
    // Each close returned at once; here they are all, as written.
    assert_eq!(fs::read_dir(m.join("fo")).unwrap().count(), FILES);
    c.wait_for("a new leader", UP_WITHIN, |s| s.quorum && s.leader.is_some_and(|l| l != leader));
    eventually("every file to reach the cluster", UP_WITHIN * 3, || c.ls_names("fo").len() >= FILES);
    let mut names = c.ls_names("fo");
    names.sort();
    let mut want: Vec<String> = (0..FILES).map(|i| format!("fo/f{i}")).collect();
    want.sort();
    assert_eq!(names, want, "each file once, under its own name");
    eventually("the journal to empty", UP_WITHIN, || pending_records(m.cache_root()) == 0);
    // No close was told its file was refused: fsync after the fact is clean.
    for i in (0..FILES).step_by(37) {
        let f = fs::OpenOptions::new().write(true).open(m.join(format!("fo/f{i}"))).unwrap();
        f.sync_all().unwrap_or_else(|e| panic!("fsync of fo/f{i}: {e}"));
    }
    // Every content, as another mount reads it.
    let plain = Mount::start(&c);
    for i in 0..FILES {
        assert_eq!(fs::read(plain.join(format!("fo/f{i}"))).unwrap(), content(i), "fo/f{i}");
    }
    // The old leader comes back and catches up on what went up without it.
    c.restart(leader);
    c.wait_for("the old leader to hold every file again", UP_WITHIN * 3, |s| {
        s.quorum && s.nodes.iter().find(|n| n.id == leader).is_some_and(|n| n.alive && n.files >= FILES as u64)
    });
    c.assert_no_node_died();
}

#[test]
fn a_big_file_closed_twice_at_once_is_on_a_majority_of_disks_when_fsync_returns() {
    // As `cmd > file` does it: the shell opens the file, moves the
    // descriptor (closing the empty file once), then the command writes.
    // The empty file's record goes up while the content streams to the
    // holders; each holder must keep the copy it tells the leader it has.
    const SIZE: usize = 48 << 20;
    let c = Cluster::start(3);
    let m = Mount::start_with(&c, write_back(None, None));
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 31 % 251) as u8).collect();
    let leader = c.status().leader.expect("a leader");
    {
        let first = fs::File::create(m.join("big")).unwrap();
        let mut f = first.try_clone().unwrap();
        drop(first);
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
    }
    // Stored means on a majority's disks now, not fetched from the leader
    // later (a follower slower than the majority may still be finishing).
    c.pause(leader);
    let holding: Vec<u32> = (1..=3)
        .filter(|&id| c.blob_files(id).iter().any(|p| fs::metadata(p).is_ok_and(|m| m.len() == SIZE as u64)))
        .collect();
    assert!(holding.len() >= 2, "the stored file is on nodes {holding:?} alone (leader {leader})");
    c.wait_for("a new leader", UP_WITHIN, |s| s.quorum && s.leader.is_some_and(|l| l != leader));
    assert_eq!(c.download_bytes("big"), data, "the file, with its first leader frozen");
    c.resume(leader);
    c.assert_no_node_died();
}
