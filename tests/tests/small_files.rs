//! Small files keep their bytes in their inode record, on every node: no
//! blob is written, and they survive failover, restarts and a node that was
//! away, as files with blobs do.

use std::time::Duration;

use scs_tests::mount::Mount;
use scs_tests::{seeded_bytes, Cluster};

const SETTLE: Duration = Duration::from_secs(20);

/// The largest file kept in the index (scs_common's INLINE_MAX).
const INLINE_MAX: usize = scs_common::inode::INLINE_MAX as usize;

#[test]
fn a_small_file_is_stored_in_every_nodes_index_without_a_blob_and_counted_everywhere() {
    let c = Cluster::start(3);
    let one = seeded_bytes(1, 5000);
    c.upload_bytes("notes/one.txt", &one);
    c.upload_bytes("notes/max.bin", &seeded_bytes(2, INLINE_MAX));
    c.upload_bytes("notes/over.bin", &seeded_bytes(3, INLINE_MAX + 1));
    c.assert_content("notes/one.txt", &one);
    c.assert_content("notes/max.bin", &seeded_bytes(2, INLINE_MAX));
    c.assert_content("notes/over.bin", &seeded_bytes(3, INLINE_MAX + 1));

    let bytes = (5000 + INLINE_MAX + INLINE_MAX + 1) as u64;
    let s = c.wait_for("every node to count three files", SETTLE, |s| {
        s.nodes.iter().all(|n| n.files == 3 && n.bytes == bytes && n.wanted == 0)
    });
    assert_eq!(s.under_replicated, 0, "{s:?}");
    for id in 1..=3 {
        assert_eq!(c.blob_count(id), 1, "node {id}: only the file over {INLINE_MAX} bytes has a blob");
    }
}

#[test]
fn small_files_survive_the_loss_of_the_leader_and_a_restart_of_every_node() {
    let mut c = Cluster::start(3);
    let files: Vec<(String, Vec<u8>)> =
        (0..20).map(|i| (format!("d{}/f{i}", i % 3), seeded_bytes(100 + i, 1 + 397 * i as usize))).collect();
    for (name, bytes) in &files {
        c.upload_bytes(name, bytes);
    }
    let leader = c.status().leader.expect("a leader");
    c.kill(leader);
    c.wait_for("another leader with quorum", SETTLE, |s| s.quorum && s.leader.is_some_and(|l| l != leader));
    for (name, bytes) in &files {
        c.assert_content(name, bytes);
    }
    // Overwritten while the old leader is away: small, then large, then small again.
    let (name, _) = &files[5];
    c.upload_bytes(name, &seeded_bytes(7, INLINE_MAX * 3));
    c.assert_content(name, &seeded_bytes(7, INLINE_MAX * 3));
    let last = seeded_bytes(8, 300);
    c.upload_bytes(name, &last);
    c.assert_content(name, &last);

    // Every node stopped and started again: the journal and index keep them.
    c.restart(leader);
    for id in 1..=3 {
        c.stop(id);
    }
    for id in 1..=3 {
        c.restart(id);
    }
    c.wait_for("a leader with quorum after the restart", SETTLE, |s| s.quorum && s.leader.is_some());
    for (i, (name, bytes)) in files.iter().enumerate() {
        c.assert_content(name, if i == 5 { &last } else { bytes });
    }
    // And the two contents the overwrites replaced, kept as versions (one
    // in the index, one in blobs) like any file.
    c.wait_for("every node to count every file and version and hold no stale blob", SETTLE, |s| {
        s.nodes.iter().all(|n| n.files == files.len() as u64 + 2 && n.wanted == 0)
    });
}

#[test]
fn a_node_that_was_away_serves_the_small_files_written_meanwhile() {
    let mut c = Cluster::start(3);
    c.upload_bytes("before.txt", b"written before node 1 went away");
    c.kill(1);
    let during: Vec<(String, Vec<u8>)> = (0..10).map(|i| (format!("during/{i}"), seeded_bytes(i, 2000))).collect();
    for (name, bytes) in &during {
        c.upload_bytes(name, bytes);
    }
    c.restart(1);
    c.wait_for("node 1 back with every file", SETTLE, |s| {
        s.nodes.iter().find(|n| n.id == 1).is_some_and(|n| n.alive && n.files == 11)
    });
    // Read through node 1 itself.
    let addr = c.node_addr(1);
    for (name, bytes) in &during {
        let out = c.scs_at(&addr, &["download", name, "-"]);
        assert_eq!(out.assert_ok().stdout, *bytes, "{name} through node 1");
    }
}

#[test]
fn a_node_catches_up_on_more_small_files_than_one_message_holds() {
    let mut c = Cluster::start(3);
    c.kill(1);
    c.wait_for("nodes 2 and 3 alone", SETTLE, |s| s.is_settled(3, &[2, 3]));
    // 600 small files, each with 30 kB of extended attributes: about 38 kB
    // per inode record, so the records node 1 pulls when it returns need
    // several messages (at most 4 MiB each), not one per 500 records.
    let m = Mount::start(&c);
    let files = 600;
    std::fs::create_dir(m.join("many")).unwrap();
    let note = vec![b'n'; 30_000];
    for i in 0..files {
        let path = m.join(format!("many/{i}"));
        std::fs::write(&path, seeded_bytes(i, 8000)).unwrap();
        set_xattr(&path, "user.note", &note);
    }
    m.unmount();
    c.restart(1);
    c.wait_for("node 1 back, keeping every small file", Duration::from_secs(60), |s| {
        s.is_settled(3, &[1, 2, 3]) && s.node(1).files == files
    });
    for i in [0, 299, 599] {
        c.assert_content(&format!("many/{i}"), &seeded_bytes(i, 8000));
    }
}

fn set_xattr(path: &std::path::Path, name: &str, value: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: both strings are NUL-terminated and live across the call;
    // value is a valid buffer of its length.
    let rc = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(rc, 0, "setxattr {name} on {}: {}", path.display(), std::io::Error::last_os_error());
}
