//! Repair: lost copies are made again, bad copies are never served and are
//! replaced, and deleted names are forgotten only once every node has them.

use std::path::PathBuf;
use std::time::Duration;

use scs_tests::{eventually, key_hex, seeded_bytes, Cluster};

/// The blob files of `name`'s inode on node `id` (any content version).
fn blobs_of(c: &Cluster, id: u32, name: &str) -> Vec<PathBuf> {
    let key = key_hex(c.ino_of(name));
    let dir = c.data_dir(id).join("blobs").join(&key[..2]);
    std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.to_string_lossy().contains(&key)).collect())
        .unwrap_or_default()
}

/// Flips bytes in the middle of every copy of `name` on node `id`.
fn corrupt(c: &Cluster, id: u32, name: &str) {
    let blobs = blobs_of(c, id, name);
    assert!(!blobs.is_empty(), "node {id} has no copy of {name}");
    for p in blobs {
        let mut bytes = std::fs::read(&p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&p, bytes).unwrap();
    }
}

/// Whether node `id` keeps an intact copy of `name` (content `want`).
fn has_good_copy(c: &Cluster, id: u32, name: &str, want: &[u8]) -> bool {
    blobs_of(c, id, name).iter().any(|p| std::fs::read(p).is_ok_and(|b| b == want))
}

#[test]
fn a_holder_gone_past_the_repair_delay_is_replaced_on_a_node_with_room() {
    let c = Cluster::builder(4).replicas(3).config("repair_delay_ms = 1500\n").start();
    // Over INLINE_MAX: files small enough to live in the index have no copies to repair.
    let files: Vec<(String, Vec<u8>)> = (0..6).map(|i| (format!("r{i}"), seeded_bytes(900 + i, 12_000))).collect();
    for (name, bytes) in &files {
        c.upload_bytes(name, bytes);
    }
    // The leader (4) keeps a copy of everything; losing it loses a copy of each file.
    assert_eq!(c.blob_count(4), 6);
    c.kill(4);
    c.wait_leader(3, Duration::from_secs(10));
    eventually("every file back at 3 copies on nodes 1-3", Duration::from_secs(20), || {
        files.iter().all(|(name, bytes)| (1..=3).filter(|id| has_good_copy(&c, *id, name, bytes)).count() == 3)
    });
    let s = c.wait_for("no file below target", Duration::from_secs(10), |s| s.under_replicated == 0);
    println!("after repair: {s:?}");
    for (name, bytes) in &files {
        c.assert_content(name, bytes);
    }
}

#[test]
fn a_node_that_was_down_briefly_keeps_its_place_and_gets_what_it_missed() {
    let c = Cluster::builder(3).config("repair_delay_ms = 60000\n").start();
    let (before, during) = (seeded_bytes(1, 20_000), seeded_bytes(2, 20_000));
    c.upload_bytes("before", &before);
    c.kill(1);
    c.upload_bytes("during", &during);
    let mut c = c;
    c.restart(1);
    eventually("node 1 holds both files", Duration::from_secs(20), || {
        has_good_copy(&c, 1, "before", &before) && has_good_copy(&c, 1, "during", &during)
    });
}

#[test]
fn a_corrupt_copy_on_the_leader_is_never_served_and_is_replaced() {
    let c = Cluster::start(3);
    let data = seeded_bytes(77, 200_000);
    c.upload_bytes("precious", &data);
    corrupt(&c, 3, "precious");
    // The reader notices, reports it, and gets a good copy from another holder.
    assert_eq!(c.download_bytes("precious"), data);
    eventually("the leader holds a good copy again", Duration::from_secs(15), || {
        has_good_copy(&c, 3, "precious", &data)
    });
    let s = c.status();
    assert!(s.node(3).corrupt >= 1, "the bad copy is counted: {s:?}");
    assert!(
        std::fs::read_dir(c.data_dir(3).join("corrupt")).unwrap().count() >= 1,
        "the bad copy was moved aside, not deleted"
    );
}

#[test]
fn the_scrub_finds_a_corrupt_copy_on_a_follower_and_replaces_it() {
    let c = Cluster::builder(3).config("scrub_interval_ms = 300\n").start();
    let data = seeded_bytes(78, 100_000);
    c.upload_bytes("quiet", &data);
    corrupt(&c, 1, "quiet");
    eventually("node 1's scrub counts the bad copy", Duration::from_secs(15), || {
        c.try_status().is_some_and(|s| s.node(1).corrupt >= 1)
    });
    eventually("node 1 holds a good copy again", Duration::from_secs(15), || has_good_copy(&c, 1, "quiet", &data));
    c.assert_content("quiet", &data);
}

#[test]
fn the_scrub_finds_damaged_small_file_content_in_a_followers_index_and_puts_it_back() {
    let mut c = Cluster::builder(3).config("scrub_interval_ms = 300\n").start();
    // Small enough to live in every node's index, not in a blob.
    let data = seeded_bytes(79, 5000);
    c.upload_bytes("small", &data);
    c.wait_for("node 1 keeps the small file", Duration::from_secs(10), |s| s.node(1).files == 1);
    // Bad sectors under node 1's index while it is stopped: every copy of
    // the content's first bytes in the file gets a flipped byte.
    c.stop(1);
    let index = c.data_dir(1).join("index.redb");
    let mut bytes = std::fs::read(&index).unwrap();
    let needle = &data[..1000];
    let hits: Vec<usize> =
        bytes.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect();
    assert!(!hits.is_empty(), "the content is in node 1's index");
    for at in hits {
        bytes[at + 500] ^= 0xff;
    }
    std::fs::write(&index, bytes).unwrap();
    c.restart(1);
    eventually("node 1's scrub counts the bad content", Duration::from_secs(20), || {
        c.try_status().is_some_and(|s| s.node(1).corrupt >= 1)
    });
    eventually("node 1 puts it back from another node", Duration::from_secs(15), || {
        c.log_tail(1, 400).contains("put back the content of small file")
    });
    // Put back: later scrubs (every 300 ms) find nothing more.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(c.status().node(1).corrupt, 1, "counted once, then good");
    c.assert_content("small", &data);
}

#[test]
fn tombstones_are_purged_once_every_node_has_them_and_the_file_stays_deleted() {
    // With the trash off: in it, the inode would stay (see trash.rs).
    let c = Cluster::builder(3).config("tombstone_ttl_ms = 200\ntrash_hours = 0\n").start();
    c.upload_bytes("doomed", b"x");
    c.scs(&["rm", "doomed"]).assert_ok();
    eventually("the leader purges the tombstone", Duration::from_secs(20), || {
        // The name's entry and its inode: two tombstones.
        c.log_tail(3, 200).contains("purged 2 tombstone")
    });
    c.assert_missing("doomed");
    assert!(c.ls_names("").is_empty());
}
