//! `max_files`: a full node is skipped as a holder but still knows every
//! file; a cluster with no room left says "no space" instead of storing.

use std::time::Duration;

use scs_tests::{seeded_bytes, Cluster};

fn five_files() -> Vec<(String, Vec<u8>)> {
    (0..5).map(|i| (format!("f{i}.bin"), seeded_bytes(200 + i, 5000 + i as usize))).collect()
}

#[test]
fn a_full_node_is_skipped_as_a_holder_while_the_others_keep_every_file() {
    let c = Cluster::builder(3).max_files(1, 2).start();
    let files = five_files();
    for (name, bytes) in &files {
        c.upload_bytes(name, bytes);
    }
    let s = c.wait_for("nodes 2 and 3 to count all 5 files", Duration::from_secs(10), |s| {
        s.node(2).files == 5 && s.node(3).files == 5
    });
    assert_eq!(s.node(1).max_files, Some(2), "{s:?}");
    assert!(s.node(1).files <= 2, "node 1 is over its limit: {s:?}");
    assert!(c.blob_count(1) <= 2, "node 1 holds {:?}", c.blob_names(1));
    assert_eq!(c.blob_count(2), 5);
    assert_eq!(c.blob_count(3), 5);
    for (name, bytes) in &files {
        c.assert_content(name, bytes);
    }
    assert_eq!(c.ls_json("").len(), 5);

    // Node 2, leading after node 3 dies, knows and serves every file too.
    c.kill(3);
    c.wait_leader(2, Duration::from_secs(10));
    assert_eq!(c.ls_json("").len(), 5);
    for (name, bytes) in &files {
        c.assert_content(name, bytes);
    }
    assert!(c.blob_count(1) <= 2, "node 1 holds {:?}", c.blob_names(1));
}

#[test]
fn a_full_leader_still_lists_every_file_and_sends_readers_to_the_holders() {
    let mut c = Cluster::builder(3).max_files(3, 1).start();
    let files = five_files();
    for (name, bytes) in &files {
        c.upload_bytes(name, bytes);
    }
    assert!(c.blob_count(3) <= 1, "node 3 holds {:?}", c.blob_names(3));
    // Node 3 leads but holds at most one of them: the others come from
    // nodes 1 and 2.
    for (name, bytes) in &files {
        c.assert_content(name, bytes);
    }
    assert_eq!(c.ls_json("").len(), 5);

    // Its index has every entry even without the data: after a restart it
    // leads again and still lists all five.
    c.kill(3);
    c.wait_leader(2, Duration::from_secs(10));
    c.restart(3);
    c.wait_for("node 3 to lead all three", Duration::from_secs(10), |s| s.is_settled(3, &[1, 2, 3]));
    assert_eq!(c.ls_json("").len(), 5);
    c.kill(1);
    for (name, bytes) in &files {
        c.assert_content(name, bytes);
    }
}

#[test]
fn a_cluster_with_every_node_full_refuses_new_files_with_no_space() {
    let c = Cluster::builder(3).max_files(1, 1).max_files(2, 1).max_files(3, 1).start();
    c.upload_bytes("first.txt", b"fits");

    let out = c.try_upload_bytes("second.txt", b"does not fit");
    println!("no space reported after {:.2?}", out.elapsed);
    out.assert_one_line_error("no space");
    assert!(out.elapsed < Duration::from_secs(5), "no space is an answer, not a timeout: {out}");
    c.assert_missing("second.txt");
    assert_eq!(c.ls_names(""), ["first.txt"]);
    c.assert_content("first.txt", b"fits");
    for id in 1..=3 {
        assert_eq!(c.blob_count(id), 1, "node {id}: {:?}", c.blob_names(id));
    }

    // Replacing the one file needs no extra room; deleting it makes room.
    c.upload_bytes("first.txt", b"fits again");
    c.assert_content("first.txt", b"fits again");
    c.scs(&["rm", "first.txt"]).assert_ok();
    c.upload_bytes("second.txt", b"now it fits");
    c.assert_content("second.txt", b"now it fits");
}
