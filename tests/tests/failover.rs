//! Leader failure: kill -9 and SIGTERM of the leader, the next id taking
//! over, and the old leader catching up before it leads again. What a user
//! notices: no acknowledged file is lost, writes resume within seconds.

use std::time::{Duration, Instant};

use scs_tests::{eventually, seeded_bytes, Cluster};

/// Files uploaded before the failure: name and content.
fn upload_some(c: &Cluster, prefix: &str, seed: u64, n: u64) -> Vec<(String, Vec<u8>)> {
    let files: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            // Over INLINE_MAX, so that each has a blob on its holders.
            let len = 9000 * (i as usize + 1) + 3 * i as usize;
            (format!("{prefix}/{i}.bin"), seeded_bytes(seed + i, len))
        })
        .collect();
    for (name, bytes) in &files {
        c.upload_bytes(name, bytes);
    }
    files
}

#[test]
fn a_killed_leader_is_replaced_by_node_2_and_no_file_is_lost() {
    let c = Cluster::start(3);
    let before = upload_some(&c, "before", 10, 5);
    let term = c.status().term;

    let killed = Instant::now();
    c.kill(3);
    let took = c.upload_within("after.txt", b"written after the kill", Duration::from_secs(15));
    println!("leader killed: first successful upload {took:.2?} after the kill");
    assert!(took < Duration::from_secs(5), "writes resumed only {took:?} after the leader died");

    let s = c.wait_leader(2, Duration::from_secs(5));
    println!("node 2 leads term {} (was {term}), {:.2?} after the kill", s.term, killed.elapsed());
    assert!(s.term > term, "a new leader has a new term: {s:?}");
    assert_eq!(s.alive_ids(), [1, 2], "{s:?}");
    assert!(s.quorum);
    for (name, bytes) in &before {
        c.assert_content(name, bytes);
    }
    c.assert_content("after.txt", b"written after the kill");
    assert_eq!(c.ls_json("before").len(), 5);
}

/// Node ids are any distinct numbers (a `members` list), not only 1 to N:
/// the highest live one leads, and the next one takes over when it dies.
#[test]
fn members_with_any_ids_elect_the_highest_and_fail_over_to_the_next() {
    let c = Cluster::builder(3).members(&[10, 20, 30]).start();
    let s = c.status();
    assert_eq!((s.leader, s.alive_ids(), s.cluster_size), (Some(30), vec![10, 20, 30], 3), "{s:?}");
    let before = upload_some(&c, "ids", 60, 3);
    c.kill(30);
    c.upload_within("after.txt", b"written after node 30 died", Duration::from_secs(15));
    let s = c.wait_leader(20, Duration::from_secs(10));
    assert_eq!(s.alive_ids(), [10, 20], "{s:?}");
    for (name, bytes) in &before {
        c.assert_content(name, bytes);
    }
    c.assert_content("after.txt", b"written after node 30 died");
}

/// An empty file is only an inode (no blob on any holder), and emptying a
/// file lets its copies go (with the trash off: with it on, they stay as
/// the file's earlier version); both read back empty from the next leader.
#[test]
fn empty_files_keep_no_copies_and_read_back_empty_after_a_failover() {
    let c = Cluster::builder(3).config("trash_hours = 0\n").start();
    let full = seeded_bytes(40, 100_000);
    c.upload_bytes("was-full.bin", &full);
    let with_one: Vec<usize> = (1..=3).map(|id| c.blob_count(id)).collect();
    assert_eq!(with_one, [1, 1, 1], "every node holds the one file");

    c.upload_bytes("empty", b"");
    c.upload_bytes("was-full.bin", b"");
    c.assert_content("empty", b"");
    c.assert_content("was-full.bin", b"");
    eventually("every copy of the emptied file is let go", Duration::from_secs(10), || {
        (1..=3).all(|id| c.blob_count(id) == 0)
    });

    c.kill(3);
    c.wait_leader(2, Duration::from_secs(10));
    c.assert_content("empty", b"");
    c.assert_content("was-full.bin", b"");
    c.upload_bytes("empty", b"now with content");
    c.assert_content("empty", b"now with content");
}

#[test]
fn a_returning_leader_catches_up_then_leads_with_every_change_made_while_it_was_down() {
    let mut c = Cluster::start(3);
    let before = upload_some(&c, "old", 20, 4);
    c.upload_bytes("doomed.txt", b"delete me while node 3 is down");
    c.upload_bytes("changed.txt", b"first version");

    c.kill(3);
    c.wait_leader(2, Duration::from_secs(10));
    let during = upload_some(&c, "new", 30, 3);
    c.upload_bytes("changed.txt", b"second version, longer than the first");
    c.scs(&["rm", "doomed.txt"]).assert_ok();
    c.scs(&["mv", "old/0.bin", "moved/0.bin"]).assert_ok();
    let term_of_2 = c.status().term;

    let back = Instant::now();
    c.restart(3);
    let s = c.wait_for("node 3 to lead again with all three alive", Duration::from_secs(10), |s| {
        s.is_settled(3, &[1, 2, 3])
    });
    println!("node 3 leads again {:.2?} after its restart (term {} → {})", back.elapsed(), term_of_2, s.term);
    assert!(s.term > term_of_2, "{s:?}");

    // Every change made while node 3 was down is there, served by node 3.
    c.assert_content("changed.txt", b"second version, longer than the first");
    c.assert_missing("doomed.txt");
    c.assert_missing("old/0.bin");
    c.assert_content("moved/0.bin", &before[0].1);
    for (name, bytes) in before.iter().skip(1).chain(&during) {
        c.assert_content(name, bytes);
    }
    let mut root = c.ls_names("");
    root.sort();
    assert_eq!(root, ["changed.txt", "moved", "new", "old"]);

    // What node 3 held before and is now gone, it no longer keeps on disk.
    let blobs = c.blob_names(3);
    let doomed_key = sha256_hex_of(b"doomed.txt");
    assert!(
        !blobs.iter().any(|b| b.starts_with(&doomed_key)),
        "node 3 still keeps the blob of the deleted file: {blobs:?}"
    );
}

#[test]
fn a_returning_node_gets_copies_of_the_files_written_while_it_was_down() {
    // A short repair delay, so neither catch-up nor repair has an excuse.
    let mut c = Cluster::builder(3).config("repair_delay_ms = 1000\n").start();
    c.upload_bytes("before.txt", &seeded_bytes(69, 10_000));
    c.kill(1);
    c.wait_for("nodes 2 and 3 alone", Duration::from_secs(10), |s| s.is_settled(3, &[2, 3]));
    let during = upload_some(&c, "during", 70, 3);
    c.restart(1);
    c.wait_for("node 1 to be back", Duration::from_secs(10), |s| s.is_settled(3, &[1, 2, 3]));
    // replicas = cluster size, so node 1 must end up with every file.
    let started = Instant::now();
    c.wait_for("node 1 to count all 4 files", Duration::from_secs(15), |s| s.node(1).files == 4);
    eventually("node 1 to hold 4 blobs", Duration::from_secs(15), || c.blob_count(1) == 4);
    println!("node 1 had every copy {:.2?} after its return", started.elapsed());
    // The copies are real: with node 2 gone, node 1 and 3 still serve all.
    c.kill(2);
    for (name, bytes) in &during {
        c.assert_content(name, bytes);
    }
}

fn sha256_hex_of(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_leader_stopped_with_sigterm_exits_0_and_hands_over() {
    let mut c = Cluster::start(3);
    c.upload_bytes("a.txt", b"before the stop");
    let stopped = Instant::now();
    c.stop(3);
    println!("node 3 exited 0 {:.2?} after SIGTERM", stopped.elapsed());
    let took = c.upload_within("b.txt", b"after the stop", Duration::from_secs(15));
    println!("first upload {took:.2?} after the stopped leader exited");
    c.wait_leader(2, Duration::from_secs(5));
    c.assert_content("a.txt", b"before the stop");

    c.restart(3);
    c.wait_for("node 3 to lead all three", Duration::from_secs(10), |s| s.is_settled(3, &[1, 2, 3]));

    // A follower stopped and restarted keeps what it had, and the cluster
    // serves what was written while it was away.
    c.wait_for("node 1 to keep a.txt and b.txt", Duration::from_secs(10), |s| s.node(1).files == 2);
    c.stop(1);
    c.upload_bytes("c.txt", b"while node 1 was stopped");
    c.restart(1);
    c.wait_for("node 1 back, keeping all three files", Duration::from_secs(10), |s| {
        s.is_settled(3, &[1, 2, 3]) && s.node(1).files == 3
    });
    c.assert_content("a.txt", b"before the stop");
    c.assert_content("b.txt", b"after the stop");
    c.assert_content("c.txt", b"while node 1 was stopped");
}

#[test]
fn in_a_five_node_cluster_each_killed_leader_is_replaced_by_the_next_highest() {
    let c = Cluster::start(5);
    let before = upload_some(&c, "five", 40, 5);
    let mut expect_alive = vec![1, 2, 3, 4, 5];
    for (dead, next) in [(5, 4), (4, 3)] {
        let killed = Instant::now();
        c.kill(dead);
        expect_alive.retain(|&id| id != dead);
        let took = c.upload_within(
            &format!("after-{dead}.txt"),
            format!("after {dead} died").as_bytes(),
            Duration::from_secs(15),
        );
        let s = c.wait_for(&format!("node {next} to lead {expect_alive:?}"), Duration::from_secs(10), |s| {
            s.is_settled(next, &expect_alive)
        });
        println!(
            "node {dead} killed: first upload after {took:.2?}, node {next} leads term {} after {:.2?}",
            s.term,
            killed.elapsed()
        );
    }
    for (name, bytes) in &before {
        c.assert_content(name, bytes);
    }
    c.assert_content("after-5.txt", b"after 5 died");
    c.assert_content("after-4.txt", b"after 4 died");
}

#[test]
fn killing_a_follower_in_the_middle_of_a_big_upload_does_not_fail_it() {
    let c = Cluster::start(3);
    let local = c.scratch_path("big");
    let want = scs_tests::write_seeded_file(&local, 60, 120 << 20);
    let (out, killed_mid_stream) = std::thread::scope(|s| {
        let upload = s.spawn(|| c.scs_os(&["upload".into(), local.clone().into(), "big.bin".into()]));
        // Kill node 1 once node 3 (the leader) has started writing.
        eventually("the upload to reach the leader", Duration::from_secs(10), || {
            std::fs::read_dir(c.data_dir(3).join("tmp")).map(|d| d.count() > 0).unwrap_or(false) || upload.is_finished()
        });
        let mid = !upload.is_finished();
        c.kill(1);
        (upload.join().expect("upload thread"), mid)
    });
    println!("node 1 killed while the upload was running: {killed_mid_stream}");
    out.assert_ok();
    let back = c.scratch_path("back");
    c.scs_os(&["download".into(), "big.bin".into(), back.clone().into()]).assert_ok();
    assert_eq!(scs_tests::sha256_hex(&back), want);
    let s = c.status();
    assert_eq!((s.leader, s.quorum), (Some(3), true), "{s:?}");
}

#[test]
fn killing_the_leader_in_the_middle_of_an_upload_never_leaves_a_wrong_file() {
    let c = Cluster::start(3);
    let local = c.scratch_path("big");
    let want = scs_tests::write_seeded_file(&local, 61, 150 << 20);
    let (out, killed_mid_stream) = std::thread::scope(|s| {
        let upload = s.spawn(|| c.scs_os(&["upload".into(), local.clone().into(), "big.bin".into()]));
        eventually("the upload to reach the leader", Duration::from_secs(10), || {
            std::fs::read_dir(c.data_dir(3).join("tmp")).map(|d| d.count() > 0).unwrap_or(false) || upload.is_finished()
        });
        let mid = !upload.is_finished();
        c.kill(3);
        (upload.join().expect("upload thread"), mid)
    });
    println!(
        "leader killed mid-upload ({killed_mid_stream}): exit {:?} after {:.2?} {}",
        out.code(),
        out.elapsed,
        out.error_line()
    );
    c.wait_leader(2, Duration::from_secs(10));
    // Either the upload went through (the client retried with the new
    // leader) and the file is whole, or it failed cleanly and there is no
    // file: never a truncated or mixed one.
    if out.success() {
        let back = c.scratch_path("back");
        c.scs_os(&["download".into(), "big.bin".into(), back.clone().into()]).assert_ok();
        assert_eq!(scs_tests::sha256_hex(&back), want, "a partial file was stored");
    } else {
        out.assert_error(1, "");
        c.assert_missing("big.bin");
    }
}

#[test]
fn a_whole_cluster_killed_at_once_comes_back_with_every_file() {
    let mut c = Cluster::start(3);
    let files = upload_some(&c, "durable", 80, 6);
    c.scs(&["mkdir", "empty-dir"]).assert_ok();
    for id in 1..=3 {
        c.kill(id);
    }
    let back = Instant::now();
    for id in 1..=3 {
        c.restart(id);
    }
    c.wait_for("node 3 to lead all three again", Duration::from_secs(15), |s| s.is_settled(3, &[1, 2, 3]));
    println!("all three killed and restarted: leading again after {:.2?}", back.elapsed());
    for (name, bytes) in &files {
        c.assert_content(name, bytes);
    }
    assert_eq!(c.ls_names(""), ["durable", "empty-dir"]);
    for id in 1..=3 {
        assert_eq!(c.blob_count(id), files.len(), "node {id}");
    }
}
