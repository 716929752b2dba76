//! Changing the members of a running cluster of separate machines, under a
//! steady writer: network namespaces act as the machines, joined by a
//! bridge; once with multicast, once with `peers` and multicast dropped at
//! the bridge. The cluster grows from three nodes to five with two
//! `scs node add`, drains and removes node 1, loses node 2 for good and
//! takes it out with `remove --force`. At the end no acknowledged write is
//! lost and every file is on every remaining member (three copies, three
//! members).
//!
//! Needs root (namespaces) and, for the unicast run, nft; skips otherwise.

use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use scs_tests::faults::cluster::{NsCluster, NsConfig, Ran};
use scs_tests::{netns, seeded_bytes, Status};

/// Every step's deadline.
const STEP: Duration = Duration::from_secs(60);

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn scs(c: &NsCluster, args: &[&str]) -> Ran {
    c.scs(&os(args), STEP)
}

#[track_caller]
fn assert_ok(ran: &Ran, what: &str) {
    assert!(ran.ok(), "{what}: {}\n{}", ran.error_line(), String::from_utf8_lossy(&ran.stdout));
}

fn wait(c: &NsCluster, what: &str, cond: impl FnMut(&Status) -> bool) -> Status {
    c.wait_for(STEP, cond).unwrap_or_else(|last| panic!("{what} within {STEP:?}; last status: {last}"))
}

/// Acknowledged writes: name and bytes.
type Acked = Mutex<Vec<(String, Vec<u8>)>>;

/// Uploads a new small file every few dozen milliseconds until `stop`,
/// keeping the ones the cluster acknowledged; counts the refusals.
fn write_steadily(c: &NsCluster, stop: &AtomicBool, acked: &Acked) -> u32 {
    let mut refused = 0;
    for i in 0..100_000u64 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let name = format!("w/{i:05}.bin");
        let bytes = seeded_bytes(1000 + i, 4_000 + (i as usize * 997) % 28_000);
        let local = c.scratch_path("w");
        std::fs::write(&local, &bytes).expect("write the local file");
        let ran = c.scs(&[OsString::from("upload"), local.into(), name.clone().into()], STEP);
        if ran.ok() {
            acked.lock().unwrap().push((name, bytes));
        } else {
            refused += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    refused
}

/// Waits until node `id` is heard as a candidate, then adds it.
fn add(c: &NsCluster, id: u32) {
    c.spawn(id);
    wait(c, &format!("node {id} listed as a candidate"), |s| s.candidate(id).is_some_and(|n| n.alive));
    let started = Instant::now();
    assert_ok(&scs(c, &["node", "add", &id.to_string()]), &format!("node add {id}"));
    let s = wait(c, &format!("node {id} to be an active member with quorum"), |s| {
        s.quorum && s.member_ids().contains(&id) && s.node(id).state == "active" && s.node(id).alive
    });
    println!("node {id} added in {:.2?}: members {:?}, leader {:?}", started.elapsed(), s.member_ids(), s.leader);
}

fn grow_drain_and_replace(unicast: bool, run: u32) {
    if let Some(why) = netns::unavailable_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    if unicast && !netns::have_nft() {
        println!("SKIPPED: nft (Debian package nftables) is needed to block multicast");
        return;
    }
    let cfg = NsConfig {
        run,
        nodes: 5,
        members: 3,
        node_toml: "repair_delay_ms = 2000\n".into(),
        tmpfs_node: None,
        tmpfs_mib: 0,
        hard_limit: Duration::from_secs(400),
        unicast,
    };
    let c = NsCluster::start(&cfg).expect("three nodes come up");
    let stop = AtomicBool::new(false);
    let acked = Acked::default();
    let refused = std::thread::scope(|scope| {
        let writer = scope.spawn(|| write_steadily(&c, &stop, &acked));
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // Grow to five.
            add(&c, 4);
            add(&c, 5);
            let before = acked.lock().unwrap().len();
            wait(&c, "new files on nodes 4 and 5", |s| {
                acked.lock().unwrap().len() > before + 5 && s.node(4).files > 0 && s.node(5).files > 0
            });

            // Drain node 1, then take it out.
            let started = Instant::now();
            assert_ok(&scs(&c, &["node", "drain", "1", "--timeout", "50"]), "node drain 1");
            println!("node 1 drained in {:.2?}", started.elapsed());
            assert_ok(&scs(&c, &["node", "remove", "1"]), "node remove 1");
            wait(&c, "members 2 to 5", |s| s.quorum && s.member_ids() == [2, 3, 4, 5]);
            c.kill(1);

            // Node 2 is lost for good: refused without --force, taken out with it.
            c.kill(2);
            let refused = scs(&c, &["node", "remove", "2"]);
            assert!(!refused.ok(), "removing a lost node that holds copies without --force");
            assert!(refused.error_line().contains("--force"), "{}", refused.error_line());
            assert_ok(&scs(&c, &["node", "remove", "--force", "2"]), "node remove --force 2");
            wait(&c, "members 3 to 5", |s| s.quorum && s.member_ids() == [3, 4, 5]);
            std::thread::sleep(Duration::from_secs(1));
        }));
        stop.store(true, Ordering::Relaxed);
        let refused = writer.join().expect("the writer thread");
        if let Err(panic) = done {
            std::panic::resume_unwind(panic);
        }
        refused
    });
    let acked = acked.into_inner().unwrap();
    println!("{} writes acknowledged, {refused} refused or failed while the members changed", acked.len());
    assert!(acked.len() >= 20, "the writer got through: {} acknowledged", acked.len());

    // Every file at its target: three copies on the three members.
    let s = wait(&c, "every file on every remaining member", |s| {
        s.under_replicated == 0
            && s.members().all(|n| n.alive && n.wanted == 0 && n.files >= acked.len() as u64)
            && s.moving.as_ref().is_none_or(|m| m.files == 0)
    });
    assert_eq!(s.member_ids(), [3, 4, 5]);
    for (name, bytes) in &acked {
        let ran = scs(&c, &["download", name, "-"]);
        assert_ok(&ran, &format!("download {name}"));
        assert!(ran.stdout == *bytes, "{name}: {} bytes, not the {} acknowledged", ran.stdout.len(), bytes.len());
    }
}

#[test]
fn members_change_under_a_steady_writer_with_multicast() {
    grow_drain_and_replace(false, 0);
}

#[test]
fn members_change_under_a_steady_writer_with_peers_and_no_multicast() {
    grow_drain_and_replace(true, 1);
}
