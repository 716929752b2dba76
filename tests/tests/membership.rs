//! Runtime membership: `scs node add`, `drain` and `remove`, one node at a
//! time through the leader. What an operator notices: a machine taken in
//! gets copies of new files; a drained one leaves with nothing lost; one
//! lost for good is removed by force and its copies are made again; the
//! leader can be removed; and the membership in force, not the config,
//! decides quorum, also after every node restarts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use scs_tests::{key_hex, seeded_bytes, Cluster, Output, Status};

/// The watchdog's limit for each test's cluster: far past what one needs.
const LIMIT: Duration = Duration::from_secs(120);
/// How long a membership change or a failure may take to show in the status.
const SETTLE: Duration = Duration::from_secs(15);
/// How long copies may take to land where they belong (the leader checks
/// replicas every 2 s).
const COPIES: Duration = Duration::from_secs(20);

/// Names and contents of files this test uploaded.
type Files = Vec<(String, Vec<u8>)>;

/// Uploads `n` files of mixed sizes (1 KB to 150 KB) under `prefix`.
fn upload_files(c: &Cluster, prefix: &str, seed: u64, n: u64) -> Files {
    const SIZES: [usize; 3] = [1_000, 20_000, 150_000];
    let files: Files = (0..n)
        .map(|i| {
            let len = SIZES[i as usize % SIZES.len()] + 13 * i as usize;
            (format!("{prefix}/{i}.bin"), seeded_bytes(seed + i, len))
        })
        .collect();
    for (name, bytes) in &files {
        c.upload_bytes(name, bytes);
    }
    files
}

/// A file of [`Files`] with the index key its blobs are named by, so the
/// disk can be checked without asking the cluster.
struct Stored<'a> {
    name: &'a str,
    bytes: &'a [u8],
    key: String,
}

/// The files of `files` with blobs: those small enough to be kept in
/// every node's index have no copies to place or move.
fn stored<'a>(c: &Cluster, files: &'a Files) -> Vec<Stored<'a>> {
    files
        .iter()
        .filter(|(_, bytes)| bytes.len() as u64 > scs_common::inode::INLINE_MAX)
        .map(|(name, bytes)| Stored { name, bytes, key: key_hex(c.ino_of(name)) })
        .collect()
}

/// The blob files of `f` on node `id` (any content version).
fn blobs_of(c: &Cluster, id: u32, f: &Stored) -> Vec<PathBuf> {
    let dir = c.data_dir(id).join("blobs").join(&f.key[..2]);
    std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{}.", f.key))))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether node `id` keeps an intact copy of `f` on disk.
fn holds(c: &Cluster, id: u32, f: &Stored) -> bool {
    blobs_of(c, id, f).iter().any(|p| std::fs::read(p).is_ok_and(|b| b == f.bytes))
}

/// Which of `ids` keep an intact copy of `f`.
fn holders(c: &Cluster, ids: &[u32], f: &Stored) -> Vec<u32> {
    ids.iter().copied().filter(|&id| holds(c, id, f)).collect()
}

/// Waits until every file has an intact copy on exactly `on` of `ids` nodes
/// (`on` = `ids.len()`: on all of them).
#[track_caller]
fn wait_copies(c: &Cluster, files: &[Stored], ids: &[u32], on: usize) {
    let started = Instant::now();
    loop {
        let short: Vec<(&str, Vec<u32>)> =
            files.iter().map(|f| (f.name, holders(c, ids, f))).filter(|(_, h)| h.len() != on).collect();
        if short.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < COPIES,
            "waited {COPIES:?} for every file to have {on} intact copies among nodes {ids:?}; \
             these are not there yet (file, holders): {short:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts every file downloads with its exact bytes.
#[track_caller]
fn assert_all_readable(c: &Cluster, files: &Files) {
    for (name, bytes) in files {
        c.assert_content(name, bytes);
    }
}

/// Asserts `out` failed the way the CLI fails: non-zero exit, and a last
/// stderr line `scs: ...` containing every one of `needles`.
#[track_caller]
fn assert_refused(out: &Output, needles: &[&str]) -> String {
    assert!(!out.success(), "expected a refusal:\n{out}");
    let line = out.error_line();
    assert!(line.starts_with("scs: "), "expected a last stderr line `scs: ...`:\n{out}");
    for needle in needles {
        assert!(line.contains(needle), "expected the message to mention {needle:?}:\n{out}");
    }
    line
}

/// Whether the status lists exactly `ids` as members, all active, and
/// gives their number as the cluster size.
fn members_are(s: &Status, ids: &[u32]) -> bool {
    s.member_ids() == ids && s.members().all(|n| n.state == "active") && s.cluster_size as usize == ids.len()
}

/// Starts node 4 next to a running cluster of 1-3 (it shows as a
/// candidate), admits it with `scs node add 4`, and waits until it leads
/// all four: the highest id leads once it has caught up.
#[track_caller]
fn grow_to_four(c: &mut Cluster) -> Status {
    c.start_joiner(4);
    let s = c.wait_for("node 4 listed as an alive candidate", SETTLE, |s| s.candidate(4).is_some_and(|n| n.alive));
    // It neither joins nor, with the highest id, takes the lead by itself.
    assert!(
        members_are(&s, &[1, 2, 3]) && s.is_settled(3, &[1, 2, 3]),
        "a node that announces itself is not a member until added: {s:?}"
    );
    let started = Instant::now();
    let out = c.scs(&["node", "add", "4"]);
    out.assert_ok();
    println!("scs node add 4 took {:.2?}:\n{out}", out.elapsed);
    let s = c.wait_for("node 4 to lead active members 1-4 with quorum", SETTLE, |s| {
        s.is_settled(4, &[1, 2, 3, 4]) && members_are(s, &[1, 2, 3, 4]) && s.candidate(4).is_none()
    });
    println!("node 4 leads term {} {:.2?} after `node add` began", s.term, started.elapsed());
    s
}

#[test]
fn a_started_node_is_added_and_takes_copies_of_new_files() {
    let mut c = Cluster::builder(3).hard_limit(LIMIT).start();
    let old = upload_files(&c, "old", 100, 3);

    // Nothing announces itself as node 9: there is nothing to admit, and
    // the operator is told which node.
    let out = c.scs(&["node", "add", "9"]);
    assert_refused(&out, &["node 9"]);
    assert!(members_are(&c.status(), &[1, 2, 3]), "a failed add changed the membership");

    let s = grow_to_four(&mut c);
    assert_eq!(s.replicas, 3, "{s:?}");
    // Adding a member again is not an error, says so, and changes nothing.
    let again = c.scs(&["node", "add", "4"]);
    assert!(again.assert_ok().stdout_text().contains("already a member"), "node add 4 again: {again}");
    let s = c.status();
    assert!(s.is_settled(4, &[1, 2, 3, 4]) && members_are(&s, &[1, 2, 3, 4]), "after adding 4 again: {s:?}");

    // The new, empty node takes a copy of every new file (3 copies of 4).
    let new = upload_files(&c, "new", 200, 4);
    let new_stored = stored(&c, &new);
    wait_copies(&c, &new_stored, &[1, 2, 3, 4], 3);
    let missing: Vec<&str> = new_stored.iter().filter(|f| !holds(&c, 4, f)).map(|f| f.name).collect();
    assert!(missing.is_empty(), "node 4 holds no copy of {missing:?}");

    // Old and new files are served, through the group and through node 4.
    let all: Files = old.iter().chain(&new).cloned().collect();
    assert_all_readable(&c, &all);
    let addr = c.node_addr(4);
    for (name, bytes) in &all {
        let out = c.scs_at(&addr, &["download", name, "-"]);
        assert!(out.assert_ok().stdout == *bytes, "{name} through node 4: other bytes");
    }
}

#[test]
fn a_drained_node_is_removed_and_nothing_is_lost() {
    let mut c = Cluster::builder(3).hard_limit(LIMIT).start();
    grow_to_four(&mut c);
    let files = upload_files(&c, "mixed", 300, 24);
    let all = stored(&c, &files);
    wait_copies(&c, &all, &[1, 2, 3, 4], 3);
    let on_1 = all.iter().filter(|f| holds(&c, 1, f)).count();
    println!("node 1 holds {on_1} of the {} files before its drain", all.len());
    assert!(on_1 > 0, "node 1 holds nothing, so draining it would prove nothing");

    let out = c.scs(&["node", "drain", "1", "--timeout", "60"]);
    out.assert_ok();
    println!("scs node drain 1 took {:.2?}:\n{out}", out.elapsed);
    let s = c.wait_for("node 1 draining with nothing left to move", Duration::from_secs(5), |s| {
        s.node(1).state == "draining" && s.moving.as_ref().is_some_and(|m| m.files == 0 && m.bytes == 0)
    });
    assert_eq!(s.member_ids(), [1, 2, 3, 4], "a drained node is still a member: {s:?}");
    assert!(s.is_settled(4, &[1, 2, 3, 4]), "{s:?}");
    // Drained: 3 active members, 3 replicas, so every file is on each of them.
    wait_copies(&c, &all, &[2, 3, 4], 3);

    // A draining node gets no new copies.
    let late = vec![("after-drain.bin".to_string(), seeded_bytes(399, 30_000))];
    c.upload_bytes(&late[0].0, &late[0].1);
    let late_stored = stored(&c, &late);
    wait_copies(&c, &late_stored, &[2, 3, 4], 3);
    assert!(!holds(&c, 1, &late_stored[0]), "the draining node 1 was given a copy of a new file");

    let out = c.scs(&["node", "remove", "1"]);
    out.assert_ok();
    let s = c.wait_for("members 2-4 led by 4, node 1 listed as a candidate", SETTLE, |s| {
        members_are(s, &[2, 3, 4]) && s.is_settled(4, &[2, 3, 4]) && s.candidate(1).is_some()
    });
    println!("after removing node 1: {s:?}");
    let files: Files = files.into_iter().chain(late).collect();
    assert_all_readable(&c, &files);

    // Node 1 is gone for good: nothing depended on it.
    c.kill(1);
    assert_all_readable(&c, &files);
    let s = c.wait_for("nodes 2-4 to count every file", SETTLE, |s| {
        (2..=4).all(|id| s.node(id).files == files.len() as u64) && s.under_replicated == 0
    });
    assert!(s.is_settled(4, &[2, 3, 4]), "{s:?}");
}

#[test]
fn remove_is_refused_while_the_node_holds_needed_copies_and_force_removes_a_lost_node() {
    // Two copies of each file on three nodes: the leader's and one more.
    // The default repair delay (30 s) keeps the cluster from making the
    // lost node's copies again by itself before the operator acts.
    let c = Cluster::builder(3).replicas(2).hard_limit(LIMIT).start();
    let files = upload_files(&c, "two", 400, 8);
    let all = stored(&c, &files);
    wait_copies(&c, &all, &[1, 2, 3], 2);
    let on_1: Vec<&str> = all.iter().filter(|f| holds(&c, 1, f)).map(|f| f.name).collect();
    println!("node 1 holds {on_1:?}");
    assert!(!on_1.is_empty(), "node 1 holds nothing, so removing it would prove nothing");

    c.kill(1);
    c.wait_for("node 3 to lead nodes 2 and 3", SETTLE, |s| s.is_settled(3, &[2, 3]));
    // Without node 1 those files would be one copy short: not without --force.
    let out = c.scs(&["node", "remove", "1"]);
    let line = assert_refused(&out, &["node 1"]);
    assert!(line.contains("drain") || line.contains("--force"), "the refusal says what to do instead:\n{out}");
    let s = c.status();
    assert_eq!(s.member_ids(), [1, 2, 3], "a refused remove changed the membership: {s:?}");

    let started = Instant::now();
    let out = c.scs(&["node", "remove", "--force", "1"]);
    out.assert_ok();
    let s = c.wait_for("members 2 and 3 led by 3 with quorum", SETTLE, |s| {
        members_are(s, &[2, 3]) && s.is_settled(3, &[2, 3]) && s.listed(1).is_none()
    });
    println!("after force-removing node 1: {s:?}");
    // Two members, two replicas: both hold every file again, well before
    // the repair delay.
    wait_copies(&c, &all, &[2, 3], 2);
    println!("every file back at 2 copies {:.2?} after `node remove --force 1`", started.elapsed());
    c.wait_for("no file below target", SETTLE, |s| s.under_replicated == 0);
    assert_all_readable(&c, &files);
}

#[test]
fn the_leader_can_be_removed_and_another_member_leads() {
    let mut c = Cluster::builder(3).hard_limit(LIMIT).start();
    grow_to_four(&mut c);
    let files = upload_files(&c, "lead", 500, 9);
    let all = stored(&c, &files);
    wait_copies(&c, &all, &[1, 2, 3, 4], 3);

    let on_4 = all.iter().filter(|f| holds(&c, 4, f)).count() as u64;
    assert!(on_4 > 0, "the leader holds nothing, so draining it would prove nothing");

    // --no-wait answers at once; the copies move in the background, and
    // the status says how many are left.
    let out = c.scs(&["node", "drain", "4", "--no-wait"]);
    out.assert_ok();
    println!("scs node drain 4 --no-wait took {:.2?}:\n{out}", out.elapsed);
    let s = c.wait_for("node 4 draining with copies to move", SETTLE, |s| {
        s.node(4).state == "draining" && s.moving.as_ref().is_some_and(|m| m.files > 0)
    });
    let moving = s.moving.clone().expect("the status says what is moving");
    println!("moving off node 4, which holds {on_4} files: {moving:?}");
    assert!(moving.files <= on_4 && moving.bytes > 0, "{moving:?} for {on_4} files");
    wait_copies(&c, &all, &[1, 2, 3], 3);
    c.wait_for("nothing left to move", SETTLE, |s| s.moving.as_ref().is_some_and(|m| m.files == 0));

    let started = Instant::now();
    c.scs(&["node", "remove", "4"]).assert_ok();
    let s = c.wait_for("node 3 to lead members 1-3 with quorum", SETTLE, |s| {
        members_are(s, &[1, 2, 3]) && s.is_settled(3, &[1, 2, 3])
    });
    let took = started.elapsed();
    println!("node 3 leads term {} {took:.2?} after `node remove 4` began", s.term);
    assert!(took < Duration::from_secs(5), "no member led for {took:?} after the leader was removed");
    let took = c.upload_within("after.bin", b"written under node 3", Duration::from_secs(10));
    println!("first write {took:.2?} later");

    // Node 4 still runs, with the highest id, and does not take over: it
    // is a candidate now.
    c.wait_for("node 4 listed as an alive candidate", SETTLE, |s| s.candidate(4).is_some_and(|n| n.alive));
    let s = c.status();
    assert!(s.is_settled(3, &[1, 2, 3]), "{s:?}");
    assert!(!c.has_exited(4), "the removed leader exited");
    assert_all_readable(&c, &files);
    c.assert_content("after.bin", b"written under node 3");
}

#[test]
fn a_grown_membership_survives_a_restart_of_every_node_and_decides_quorum() {
    let mut c = Cluster::builder(3).hard_limit(LIMIT).start();
    grow_to_four(&mut c);
    let files = upload_files(&c, "kept", 600, 3);
    let all = stored(&c, &files);
    wait_copies(&c, &all, &[1, 2, 3, 4], 3);

    // Every node crashes and comes back with its config of three.
    for id in 1..=4 {
        c.kill(id);
    }
    for id in 1..=4 {
        c.restart(id);
    }
    let s = c.wait_for("node 4 to lead members 1-4 again", SETTLE, |s| {
        s.is_settled(4, &[1, 2, 3, 4]) && members_are(s, &[1, 2, 3, 4])
    });
    assert!(s.nodes.iter().all(|n| n.state != "candidate"), "{s:?}");
    assert_all_readable(&c, &files);

    // Two of four is no majority (two of the config's three would be).
    c.kill(4);
    c.kill(3);
    c.wait_for("nodes 1 and 2 to see 3 and 4 down", SETTLE, |s| s.alive_ids() == [1, 2]);
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(3) {
        if let Some(s) = c.try_status() {
            assert!(!s.quorum, "nodes 1 and 2, two of four members, have quorum: {s:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = c.try_upload_bytes("two-of-four.bin", b"must not be stored");
    assert!(!out.success(), "a write succeeded with two of four members alive:\n{out}");

    // Three of four is.
    c.restart(3);
    c.wait_for("node 3 to lead nodes 1-3 of the four", SETTLE, |s| {
        s.is_settled(3, &[1, 2, 3]) && s.member_ids() == [1, 2, 3, 4]
    });
    c.upload_within("three-of-four.bin", b"stored", Duration::from_secs(10));
    c.assert_content("three-of-four.bin", b"stored");
    assert_all_readable(&c, &files);
}

/// A node added to a cluster whose members are nearly full (by
/// `max_files`) gets copies moved to it, at most `rebalance_bytes_per_sec`,
/// until the members are within a tenth of each other in fullness (the
/// larger of the share of `max_files` and of the disk, which the nodes of
/// this test share); each file keeps exactly its three copies, the status
/// says what is left until it is done, and every file stays readable.
#[test]
fn copies_move_to_a_new_member_until_the_members_are_balanced() {
    let mut c = Cluster::builder(3).config("max_files = 31\n").start();
    let files: Vec<(String, Vec<u8>)> =
        (0..30).map(|i| (format!("r-{i:02}.bin"), seeded_bytes(300 + i, 2_000 + i as usize * 100))).collect();
    for (name, bytes) in &files {
        c.upload_bytes(name, bytes);
    }
    c.wait_for("30 files on each node", Duration::from_secs(15), |s| s.nodes.iter().all(|n| n.files == 30));
    c.start_joiner(4);
    let s = c
        .wait_for("node 4 listed as a candidate", Duration::from_secs(15), |s| s.candidate(4).is_some_and(|n| n.alive));
    let (full, empty) = (s.node(3).fullness(), s.candidate(4).unwrap().fullness());
    if full <= empty + 150 {
        println!("SKIPPED: the shared disk is {empty}/1000 full, too close to the members' {full}/1000 to show a move");
        return;
    }
    c.scs(&["node", "add", "4"]).assert_ok();
    let started = Instant::now();
    let mut saw_moving = false;
    let s = c.wait_for("the four members within a tenth of each other", Duration::from_secs(90), |s| {
        let moving = s.moving.as_ref().map_or(0, |m| m.files);
        saw_moving |= moving > 0;
        let fullness: Vec<u64> = s.members().map(|n| n.fullness()).collect();
        fullness.len() == 4
            && fullness.iter().max().unwrap() - fullness.iter().min().unwrap() <= 100
            && s.members().map(|n| n.files).sum::<u64>() == 90
            && s.members().all(|n| n.alive && n.wanted == 0)
            && moving == 0
            && s.under_replicated == 0
    });
    let held: Vec<(u32, u64, u64)> = s.members().map(|n| (n.id, n.files, n.fullness())).collect();
    println!("balanced after {:.2?} (id, files, fullness): {held:?}", started.elapsed());
    assert!(s.node(4).files > 0, "node 4 was given copies");
    assert!(saw_moving, "the status showed copies moving on the way");
    for (name, bytes) in &files {
        c.assert_content(name, bytes);
    }
}
