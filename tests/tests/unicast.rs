//! A cluster on a network without multicast, as most cloud networks and
//! VPNs are: three nodes in network namespaces of their own, joined by a
//! bridge that drops every multicast datagram, each listing the others in
//! `peers`. What an operator notices: the cluster forms, takes writes, fails
//! over when its leader dies and takes the old leader back; clients given
//! the nodes' addresses find the leader, and listening on the multicast
//! group hears nothing.
//!
//! Needs root and nft (namespaces, the multicast block); skips otherwise.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use scs_tests::faults::cluster::{run_in, NsCluster, NsConfig};
use scs_tests::{bins::bin, netns, seeded_bytes};

/// Every step's deadline.
const STEP: Duration = Duration::from_secs(30);

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Uploads `bytes` as `name` through the cluster's clients, retrying for up
/// to `within`; returns how long it took to succeed.
fn upload_within(c: &NsCluster, name: &str, bytes: &[u8], within: Duration) -> Duration {
    let local = c.scratch_path(name);
    std::fs::write(&local, bytes).expect("write the local file");
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < within {
        let ran = c.scs(&[OsString::from("upload"), local.clone().into(), name.into()], STEP);
        if ran.ok() {
            return started.elapsed();
        }
        last = ran.error_line();
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("upload of {name} did not succeed within {within:?}: {last}");
}

fn download(c: &NsCluster, name: &str) -> Vec<u8> {
    let ran = c.scs(&os(&["download", name, "-"]), STEP);
    assert!(ran.ok(), "download {name}: {}", ran.error_line());
    ran.stdout
}

#[test]
fn a_cluster_with_multicast_blocked_forms_fails_over_and_takes_its_old_leader_back() {
    if let Some(why) = netns::unavailable_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    if !netns::have_nft() {
        println!("SKIPPED: nft (Debian package nftables) is needed to block multicast");
        return;
    }
    let cfg = NsConfig {
        run: 0,
        nodes: 3,
        members: 3,
        node_toml: String::new(),
        tmpfs_node: None,
        tmpfs_mib: 0,
        hard_limit: Duration::from_secs(240),
        unicast: true,
    };
    // Waits until node 3 leads all three, asking through --node.
    let c = NsCluster::start(&cfg).expect("a unicast cluster comes up");

    // Nothing travels by multicast: a client listening on the group hears no node.
    let key = c.dir().join("cluster.key");
    let mut by_group = os(&["--group", &c.group().to_string(), "--iface", &c.net().client_ip().to_string()]);
    by_group.extend([OsString::from("--secret-file"), key.into(), "status".into()]);
    let heard = run_in(c.net().client_ns(), &bin("scs"), &by_group, STEP);
    assert!(!heard.ok(), "multicast discovery found the cluster: {}", String::from_utf8_lossy(&heard.stdout));
    assert!(heard.error_line().contains("no node heard"), "{}", heard.error_line());

    let files: Vec<(String, Vec<u8>)> =
        (0..4).map(|i| (format!("before-{i}.bin"), seeded_bytes(70 + i, 30_000 + 7 * i as usize))).collect();
    for (name, bytes) in &files {
        upload_within(&c, name, bytes, STEP);
    }

    // The leader dies: nodes 1 and 2 elect node 2 over unicast alone.
    let term = c.status().expect("a status").term;
    c.kill(3);
    let took = upload_within(&c, "after-kill.bin", b"written while node 3 was dead", STEP);
    println!("leader killed: next upload succeeded {took:.2?} later");
    let s = c.wait_for(STEP, |s| s.is_settled(2, &[1, 2])).expect("node 2 leads nodes 1 and 2");
    assert!(s.term > term, "a new term: {s:?}");

    // Node 3 comes back, is heard again, catches up and leads once more.
    c.spawn(3);
    c.wait_for(STEP, |s| s.is_settled(3, &[1, 2, 3])).expect("node 3 leads all three again");
    for (name, bytes) in &files {
        assert_eq!(download(&c, name), *bytes, "{name} after the failover and back");
    }
    assert_eq!(download(&c, "after-kill.bin"), b"written while node 3 was dead");
}
