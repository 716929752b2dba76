//! Faults that loopback can stage without namespaces: a node frozen with
//! SIGSTOP is, to the others, a node behind a partition that still holds
//! its sockets and wakes up later believing what it believed.
//!
//! What a user must see: a frozen leader is replaced, writes fail fast
//! (never hang) without a majority, and no acknowledged write is ever lost
//! or served stale, before or after the frozen nodes wake.

use std::time::{Duration, Instant};

use scs_tests::{seeded_bytes, Cluster, Output};

/// The errors a write may end with when no majority can be reached.
#[track_caller]
fn assert_unavailable_write(out: &Output) {
    assert_eq!(out.code(), Some(1), "{out}");
    let line = out.error_line();
    assert!(
        line.starts_with("scs: no quorum") || line.starts_with("scs: cluster unavailable"),
        "expected `no quorum` or `cluster unavailable`:\n{out}"
    );
    assert!(
        out.elapsed <= Duration::from_secs(10),
        "a write without a majority took {:?} to fail:\n{out}",
        out.elapsed
    );
}

#[test]
fn a_frozen_leader_is_replaced_and_serves_nothing_stale_when_it_wakes() {
    let c = Cluster::start(3);
    c.upload_bytes("a.txt", b"version 1");
    c.upload_bytes("b.txt", b"deleted while node 3 sleeps");
    let old_addr = c.node_addr(3);

    c.pause(3);
    let took = c.upload_within("c.txt", b"written while node 3 sleeps", Duration::from_secs(15));
    println!("node 3 frozen: first upload succeeded after {took:.2?}");
    let s = c.wait_leader(2, Duration::from_secs(5));
    assert!(!s.node(3).alive, "{s:?}");
    c.upload_bytes("a.txt", b"version 2");
    c.scs(&["rm", "b.txt"]).assert_ok();

    // A client pointed at the frozen node does not hang.
    let out = c.scs_at(&old_addr, &["status"]);
    println!("status from the frozen node: exit {:?} after {:.2?}", out.code(), out.elapsed);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.elapsed <= Duration::from_secs(10), "{out}");

    // Wake it: from the first moment on, nobody may be served the old
    // content, neither through the group nor straight from the old leader.
    c.resume(3);
    let woke = Instant::now();
    let mut reads = 0;
    while woke.elapsed() < Duration::from_secs(3) {
        for out in [c.scs_at(&old_addr, &["download", "a.txt", "-"]), c.scs(&["download", "a.txt", "-"])] {
            if out.success() {
                assert_eq!(out.stdout, b"version 2", "stale read after the wake-up:\n{out}");
            }
            reads += 1;
        }
        let out = c.scs_at(&old_addr, &["download", "b.txt", "-"]);
        assert!(!out.success(), "the deleted file was served after the wake-up:\n{out}");
    }
    println!("{reads} reads in the 3 s after the wake-up, none stale");

    // A write sent to the old leader either lands for good or is refused.
    let local = c.local_file(b"sent to the old leader");
    let local = local.to_string_lossy().into_owned();
    let via_old = c.scs_at(&old_addr, &["upload", &local, "d.txt"]);
    println!("upload via the old leader: exit {:?}: {}", via_old.code(), via_old.error_line());

    let s = c.wait_for("one leader with quorum and all three alive", Duration::from_secs(10), |s| {
        s.leader.is_some() && s.quorum && s.alive_ids() == [1, 2, 3]
    });
    println!("after the wake-up node {:?} leads term {}", s.leader, s.term);
    let leaders: Vec<u32> = s.nodes.iter().filter(|n| n.role == "leader").map(|n| n.id).collect();
    assert_eq!(leaders.len(), 1, "exactly one node says it leads: {s:?}");

    c.assert_content("a.txt", b"version 2");
    c.assert_missing("b.txt");
    c.assert_content("c.txt", b"written while node 3 sleeps");
    if via_old.success() {
        c.assert_content("d.txt", b"sent to the old leader");
    }
    // And it stays that way once node 3 leads again.
    c.wait_leader(3, Duration::from_secs(10));
    c.assert_content("a.txt", b"version 2");
    c.assert_missing("b.txt");
    c.assert_content("c.txt", b"written while node 3 sleeps");
}

/// Five nodes with four files stored.
fn five_with_files() -> (Cluster, Vec<(String, Vec<u8>)>) {
    let c = Cluster::start(5);
    let files: Vec<(String, Vec<u8>)> =
        (0..4).map(|i| (format!("kept/{i}.bin"), seeded_bytes(500 + i, 20_000))).collect();
    for (name, bytes) in &files {
        c.upload_bytes(name, bytes);
    }
    (c, files)
}

/// Wakes `frozen` and checks that node 5 leads all five again, every file
/// in `files` is intact, and writes work.
fn heal(c: &Cluster, frozen: &[u32], files: &[(String, Vec<u8>)]) {
    for &id in frozen {
        c.resume(id);
    }
    let healed = Instant::now();
    c.wait_for("node 5 to lead all five", Duration::from_secs(10), |s| s.is_settled(5, &[1, 2, 3, 4, 5]));
    println!("healed: node 5 leads all five after {:.2?}", healed.elapsed());
    for (name, bytes) in files {
        c.assert_content(name, bytes);
    }
    c.upload_bytes("after.txt", b"after the heal");
    c.assert_content("after.txt", b"after the heal");
}

#[test]
fn a_leader_that_lost_its_majority_refuses_writes_with_no_quorum_and_loses_nothing() {
    let (c, files) = five_with_files();
    // Node 5 keeps leading node 4 only.
    let frozen = [1, 2, 3];
    for &id in &frozen {
        c.pause(id);
    }
    let s = c.wait_for("the leader to report it lost quorum", Duration::from_secs(15), |s| !s.quorum);
    println!("status without a majority: leader {:?}, alive {:?}", s.leader, s.alive_ids());

    let up = c.try_upload_bytes("refused.txt", b"no majority");
    println!("write refused after {:.2?}: {}", up.elapsed, up.error_line());
    assert_unavailable_write(&up);
    assert!(up.error_line().starts_with("scs: no quorum"), "{up}");
    let rm = c.scs(&["rm", "kept/0.bin"]);
    assert_unavailable_write(&rm);
    let mkdir = c.scs(&["mkdir", "refused-dir"]);
    assert_unavailable_write(&mkdir);

    heal(&c, &frozen, &files);
    // What was refused did not happen.
    c.assert_missing("refused.txt");
    c.scs(&["ls", "refused-dir"]).assert_error(1, "no such file");
}

#[test]
fn a_write_in_flight_when_the_majority_vanishes_fails_within_seconds() {
    let (c, files) = five_with_files();
    let frozen = [1, 2, 3];
    for &id in &frozen {
        c.pause(id);
    }
    // At once: the leader's lease has not run out yet, so it starts the
    // upload towards holders that will never answer.
    let out = c.try_upload_bytes("in-flight.txt", b"no majority");
    println!("in-flight write ended after {:.2?}: {}", out.elapsed, out.error_line());
    assert_unavailable_write(&out);
    heal(&c, &frozen, &files);
}

#[test]
fn a_minority_without_its_leader_refuses_writes_quickly_and_loses_nothing() {
    let (c, files) = five_with_files();
    // Nodes 1 and 2 are left: no one may lead them.
    let frozen = [3, 4, 5];
    for &id in &frozen {
        c.pause(id);
    }
    let up = c.try_upload_bytes("refused.txt", b"no majority");
    println!("write without a majority failed after {:.2?}: {}", up.elapsed, up.error_line());
    assert_unavailable_write(&up);
    let rm = c.scs(&["rm", "kept/0.bin"]);
    assert_unavailable_write(&rm);

    heal(&c, &frozen, &files);
    c.assert_missing("refused.txt");
}

/// A leader whose change reaches no majority gives the term up and leads
/// the next one itself, with the change in its index: a retry of the
/// command finds it done there (and is answered "ok"), and the leader's
/// later changes are checked against it. So the change must be on a
/// majority before that leader serves anything, or the next leader, which
/// catches up from a majority, serves the state from before it (the fault
/// suite saw a removed name come back there, counted by no link count).
#[test]
fn what_a_leader_serves_after_a_change_reached_no_majority_survives_its_replacement() {
    let mut c = Cluster::start(3);
    c.wait_leader(3, Duration::from_secs(10));
    c.upload_bytes("kept.txt", b"kept");
    c.upload_bytes("b.txt", b"removed while the followers are down");
    // The followers go: the leader's lease has not run out yet, so it
    // commits the removal itself, fails to send it, gives the term up and
    // leads the next one, once the followers are back to catch up from.
    c.kill(1);
    c.kill(2);
    let mut args = c.cluster_flags(c.key_file());
    args.extend(["rm".into(), "b.txt".into()]);
    let rm = std::process::Command::new(scs_tests::bins::bin("scs"))
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("scs rm starts");
    std::thread::sleep(Duration::from_millis(800));
    c.restart(1);
    c.restart(2);
    let rm = rm.wait_with_output().expect("scs rm ends");
    println!("rm while the followers were down: {:?}: {}", rm.status, String::from_utf8_lossy(&rm.stderr).trim());
    let staged = std::fs::read_to_string(c.log_path(3)).unwrap_or_default().contains("reached no majority");
    println!("node 3 gave a term up for a change that reached no majority: {staged}");
    // Node 3 leads again; what it serves now …
    let before = served(&c, "b.txt");
    if rm.status.success() {
        assert_eq!(before, None, "an acknowledged rm, yet b.txt is served");
    }
    // … the next leader serves too, at once (before any anti-entropy round).
    c.pause(3);
    c.wait_leader(2, Duration::from_secs(10));
    let after = served(&c, "b.txt");
    assert_eq!(after, before, "node 2 serves b.txt otherwise than node 3 did before it froze");
    c.assert_content("kept.txt", b"kept");
    c.resume(3);
    c.wait_leader(3, Duration::from_secs(15));
    assert_eq!(served(&c, "b.txt"), before);
    c.assert_content("kept.txt", b"kept");
}

/// A deposed leader keeps in its index what it committed alone before it
/// was cut off (a change whose client gave up on it). When it wakes it
/// follows the new leader, and soon takes over again as the highest id: it
/// must drop that change first, not serve it mixed with the changes made
/// without it (here a removed name that hides a file written since).
#[test]
fn a_deposed_leader_drops_what_reached_no_majority_before_it_takes_over_again() {
    let mut c = Cluster::start(3);
    c.wait_leader(3, Duration::from_secs(10));
    c.upload_bytes("b.txt", b"version 1");
    // Node 3 removes b.txt on its own: the followers are gone, and the
    // client gives up. Node 3 is frozen before anyone catches up from it.
    c.kill(1);
    c.kill(2);
    let mut args = c.cluster_flags(c.key_file());
    args.extend(["rm".into(), "b.txt".into()]);
    let mut rm = std::process::Command::new(scs_tests::bins::bin("scs"))
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("scs rm starts");
    std::thread::sleep(Duration::from_millis(600));
    let _ = rm.kill();
    let _ = rm.wait();
    c.pause(3);
    let staged = std::fs::read_to_string(c.log_path(3)).unwrap_or_default().contains("reached no majority");
    println!("node 3 committed the rm alone: {staged}");
    // The others lead on without it: b.txt is there, with new content.
    c.restart(1);
    c.restart(2);
    c.wait_leader(2, Duration::from_secs(15));
    c.upload_bytes("b.txt", b"version 2");
    c.assert_content("b.txt", b"version 2");
    // Node 3 wakes, follows, and takes over again.
    c.resume(3);
    c.wait_leader(3, Duration::from_secs(20));
    assert_eq!(served(&c, "b.txt").as_deref(), Some(&b"version 2"[..]), "the acknowledged upload is lost");
}

/// The content the leader serves for `name`, `None` for "no such file".
#[track_caller]
fn served(c: &Cluster, name: &str) -> Option<Vec<u8>> {
    let (out, bytes) = c.try_download(name);
    if !out.success() {
        assert!(out.error_line().starts_with("scs: no such file"), "{out}");
    }
    bytes
}
