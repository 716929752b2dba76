//! The cluster key and bad input: clients and nodes without the key are
//! refused and obeyed in nothing; garbage on the TCP port or the multicast
//! group is dropped while the cluster goes on serving.
//!
//! Every packet here goes to 127.0.0.1 or to the cluster's own group on the
//! loopback interface (IP_MULTICAST_IF 127.0.0.1, TTL 1).

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use scs_common::auth::ClusterKey;
use scs_common::proto::gossip;
use scs_common::NodeId;
use scs_tests::bins::bin;
use scs_tests::cli::run;
use scs_tests::{seeded_bytes, write_random_key, Cluster, Status};

/// Asserts the leader and term did not move and every node is still alive.
#[track_caller]
fn assert_undisturbed(c: &Cluster, before: &Status) {
    let now = c.status();
    assert_eq!(now.leader, before.leader, "the leader changed: {now:?}");
    assert_eq!(now.term, before.term, "the term changed: {now:?}");
    assert_eq!(now.alive_ids(), before.alive_ids(), "{now:?}");
    assert!(now.quorum, "{now:?}");
    c.assert_no_node_died();
}

#[test]
fn a_client_with_the_wrong_key_is_told_authentication_failed() {
    let c = Cluster::start(3);
    c.upload_bytes("secret.txt", b"only for key holders");
    let wrong = c.dir().join("wrong.key");
    write_random_key(&wrong);

    for args in [&["status"][..], &["rm", "secret.txt"]] {
        let out = c.scs_with_key(&wrong, args);
        println!("wrong key, scs {args:?}: refused after {:.2?}", out.elapsed);
        out.assert_one_line_error("authentication failed");
        assert!(out.stdout.is_empty(), "{out}");
        assert!(out.elapsed <= Duration::from_secs(10), "{out}");
    }
    // Straight to a node, the handshake fails at once.
    let addr = c.node_addr(3);
    let mut args = vec!["--node".into(), addr.into(), "--secret-file".into()];
    args.push(wrong.clone().into_os_string());
    args.extend(["download".into(), "secret.txt".into(), "-".into()]);
    let out = c.run_cli(&args);
    out.assert_one_line_error("authentication failed");
    assert!(out.elapsed < Duration::from_secs(5), "{out}");

    // Nothing was changed by the refused client.
    c.assert_content("secret.txt", b"only for key holders");
}

#[test]
fn a_key_file_readable_by_others_is_refused_with_the_chmod_fix() {
    let c = Cluster::start(3);
    let loose = c.dir().join("loose.key");
    std::fs::copy(c.key_file(), &loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();

    let out = c.scs_with_key(&loose, &["status"]);
    let line = out.assert_one_line_error("chmod");
    assert!(line.contains("chmod 600"), "{out}");

    // A node refuses to start with it too, before joining anything.
    let node_args = vec![
        "--id".into(),
        "1".into(),
        "--cluster-size".into(),
        "3".into(),
        "--data-dir".into(),
        c.dir().join("never").into_os_string(),
        "--secret-file".into(),
        loose.into_os_string(),
        "--group".into(),
        c.group().to_string().into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    let out = run(&bin("scs-node"), &node_args, Duration::from_secs(20));
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("chmod 600"), "{out}");
}

#[test]
fn a_node_with_the_wrong_key_and_a_higher_id_cannot_take_the_lead() {
    // Ids 1..3 of a cluster of 4 run (3 is a majority); the rogue claims 4.
    let mut c = Cluster::builder(4).running(&[1, 2, 3]).start();
    c.upload_bytes("before.txt", b"before the rogue");
    let before = c.status();
    assert_eq!(before.leader, Some(3));

    let wrong = c.dir().join("rogue.key");
    write_random_key(&wrong);
    c.start_rogue(4, &wrong);
    // Several leader timeouts: long enough for the rogue to run and
    // "win" an election of its own.
    let until = Instant::now() + Duration::from_secs(4);
    let mut n = 0;
    while Instant::now() < until {
        c.upload_bytes(&format!("during/{n}.txt"), format!("{n}").as_bytes());
        let s = c.status();
        assert_eq!((s.leader, s.term), (Some(3), before.term), "{s:?}");
        assert!(!s.node(4).alive, "the rogue counts as a member: {s:?}");
        n += 1;
    }
    println!("{n} uploads while the rogue ran; leader and term never moved");
    assert_undisturbed(&c, &before);
    for i in 0..n {
        c.assert_content(&format!("during/{i}.txt"), format!("{i}").as_bytes());
    }
    c.assert_content("before.txt", b"before the rogue");
    // The rogue, for its part, heard nobody: it cannot list our files.
    let rogue_blobs = std::fs::read_dir(c.dir().join("rogue-4").join("blobs"))
        .map(|shards| {
            shards.filter_map(|s| s.ok()).filter_map(|s| std::fs::read_dir(s.path()).ok()).map(|d| d.count()).sum()
        })
        .unwrap_or(0);
    assert_eq!(rogue_blobs, 0, "the rogue received blobs");
}

/// Sends `bytes` on a fresh connection to `addr` and expects the node to
/// close it (EOF or reset) within the handshake timeout and some slack.
#[track_caller]
fn assert_closes_on(addr: &str, what: &str, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The node may close before it has read everything: a reset is fine.
    let _ = s.write_all(bytes);
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                panic!("{addr} kept the connection open 10 s after {what}")
            }
            Err(_) => break,
        }
    }
    println!("{addr} closed the connection {:.2?} after {what}", start.elapsed());
}

#[test]
fn garbage_on_a_node_tcp_port_closes_that_connection_and_nothing_else() {
    let c = Cluster::start(3);
    c.upload_bytes("kept.bin", &seeded_bytes(300, 100_000));
    let before = c.status();
    let leader = c.node_addr(3);
    let follower = c.node_addr(1);

    // Connections that never finish a handshake, held open throughout.
    let mut idle: Vec<TcpStream> = Vec::new();
    for i in 0..50 {
        let addr = if i % 2 == 0 { &leader } else { &follower };
        idle.push(TcpStream::connect(addr).unwrap());
    }
    // A header announcing the largest allowed message, then silence.
    let mut partial = TcpStream::connect(&leader).unwrap();
    partial.write_all(&[0x00, 0x40, 0x00, 0x00, 1, 0x93]).unwrap();

    for addr in [&leader, &follower] {
        assert_closes_on(addr, "64 KiB of random bytes", &seeded_bytes(301, 64 << 10));
        assert_closes_on(addr, "a 4 GiB length prefix", &[0xff, 0xff, 0xff, 0xff, 1, 0, 0]);
        assert_closes_on(addr, "a 2 GiB data frame", &[0x7f, 0xff, 0xff, 0xff, 2, 1, 2, 3]);
        assert_closes_on(addr, "an unknown frame kind", &[0, 0, 0, 4, 9, 1, 2, 3, 4]);
        assert_closes_on(addr, "a message that is not msgpack", &[0, 0, 0, 4, 1, 0xc1, 0xc1, 0xc1, 0xc1]);
        assert_closes_on(addr, "an HTTP request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    }

    // Everyone else is served as before, while the idle ones still hang on.
    let fresh = seeded_bytes(302, 3 << 20);
    c.upload_bytes("fresh.bin", &fresh);
    c.assert_content("fresh.bin", &fresh);
    c.assert_content("kept.bin", &seeded_bytes(300, 100_000));
    assert_undisturbed(&c, &before);
    drop(idle);
    drop(partial);
}

/// A UDP socket that sends to the group out of 127.0.0.1 only, TTL 1.
fn group_sender() -> UdpSocket {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
    s.set_multicast_ttl_v4(1).unwrap();
    s.set_multicast_loop_v4(true).unwrap();
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).into()).unwrap();
    s.into()
}

/// A UDP socket that hears the group on 127.0.0.1, as the nodes do.
fn group_listener(group: SocketAddrV4) -> UdpSocket {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_reuse_port(true).unwrap();
    s.bind(&SocketAddr::V4(group).into()).unwrap();
    s.join_multicast_v4(group.ip(), &Ipv4Addr::LOCALHOST).unwrap();
    let s: UdpSocket = s.into();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    s
}

/// The group's datagrams from node `from`, as sent, for `for_how_long`.
fn capture(key: &Path, group: SocketAddrV4, from: u32, for_how_long: Duration) -> Vec<Vec<u8>> {
    let key = ClusterKey::load(key).expect("load the cluster key");
    let sock = group_listener(group);
    let until = Instant::now() + for_how_long;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < until {
        let Ok(n) = sock.recv(&mut buf) else { continue };
        if let Ok(env) = gossip::decode(&key, &buf[..n]) {
            if env.from == NodeId(from) {
                got.push(buf[..n].to_vec());
            }
        }
    }
    got
}

#[test]
fn random_datagrams_on_the_group_change_nothing() {
    let c = Cluster::start(3);
    c.upload_bytes("a.txt", b"before the noise");
    let before = c.status();
    let sock = group_sender();
    let noise = seeded_bytes(400, 1 << 20);
    let mut sent = 0;
    let mut offset = 0;
    // Sizes from empty to the largest UDP payload, some starting with the
    // real magic and version so they get as far as the MAC check.
    for (i, len) in [0usize, 1, 5, 6, 37, 100, 700, 1399, 1400, 1401, 9000, 65_507].iter().cycle().take(600).enumerate()
    {
        let mut d = noise[offset..offset + len].to_vec();
        offset = (offset + 7919) % (noise.len() - 70_000);
        if i % 3 == 0 && d.len() >= 6 {
            d[..4].copy_from_slice(gossip::MAGIC);
            d[4..6].copy_from_slice(&1u16.to_be_bytes());
        }
        sock.send_to(&d, c.group()).unwrap();
        sent += 1;
        if i % 50 == 0 {
            c.upload_bytes(&format!("noise/{i}.txt"), b"during the noise");
        }
    }
    println!("sent {sent} garbage datagrams to {}", c.group());
    assert_undisturbed(&c, &before);
    c.assert_content("a.txt", b"before the noise");
    assert_eq!(c.ls_json("noise").len(), 12);
}

/// Runs `during` while `recorded` datagrams go to the group again and
/// again (a round every 20 ms); returns what it returned and how many
/// datagrams were sent. The replays stop even if `during` panics.
fn while_replaying<T>(c: &Cluster, recorded: &[Vec<u8>], during: impl FnOnce() -> T) -> (T, u64) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let sock = group_sender();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let replayer = scope.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for d in recorded {
                    sock.send_to(d, c.group()).unwrap();
                    n += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            n
        });
        let stopper = scs_tests::StopOnDrop(&stop);
        let out = during();
        drop(stopper);
        (out, replayer.join().unwrap())
    })
}

#[test]
fn replayed_heartbeats_of_a_dead_leader_do_not_keep_it_in_office() {
    let c = Cluster::start(3);
    c.upload_bytes("a.txt", b"before the replay");
    let recorded = capture(c.key_file(), c.group(), 3, Duration::from_millis(800));
    assert!(recorded.len() >= 3, "heard only {} datagrams of node 3 in 800 ms", recorded.len());
    c.kill(3);
    // Node 3's genuine datagrams, replayed while the others should notice
    // it is gone and elect node 2.
    let killed = Instant::now();
    let (s, sent) = while_replaying(&c, &recorded, || {
        let s = c.wait_for("node 2 to lead despite the replays", Duration::from_secs(10), |s| {
            s.leader == Some(2) && s.quorum
        });
        c.upload_bytes("b.txt", b"after the failover");
        s
    });
    println!("node 2 leads term {} {:.2?} after the kill, through {sent} replayed datagrams", s.term, killed.elapsed());
    assert!(killed.elapsed() < Duration::from_secs(5), "failover was delayed by replays");
    c.assert_content("a.txt", b"before the replay");
    c.assert_content("b.txt", b"after the failover");
}

#[test]
fn clients_look_past_a_dead_leaders_address_taken_by_another_clusters_node() {
    // Node 3 leads and dies; its port goes to a node of another cluster
    // (tests and users start nodes on free ports) while its last heartbeats
    // are still heard. A client that takes the stale heartbeat's address
    // meets the wrong key there: it must go on to the real leader rather
    // than report an authentication failure.
    let mut c = Cluster::start(3);
    c.upload_bytes("a.txt", b"before the replay");
    let addr3 = c.node_addr(3);
    let recorded = capture(c.key_file(), c.group(), 3, Duration::from_millis(800));
    assert!(recorded.len() >= 3, "heard only {} datagrams of node 3 in 800 ms", recorded.len());
    c.kill(3);
    let other = c.dir().join("other-cluster.key");
    write_random_key(&other);
    c.start_rogue_at(3, &other, &addr3);
    let until = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&addr3).is_err() {
        assert!(Instant::now() < until, "the other cluster's node never listened on {addr3}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = Instant::now();
    let ((), sent) = while_replaying(&c, &recorded, || {
        c.wait_for("node 2 to lead", Duration::from_secs(10), |s| s.leader == Some(2) && s.quorum);
        for i in 0..5 {
            c.upload_bytes(&format!("after/{i}.txt"), format!("after the failover {i}").as_bytes());
            let ls = c.scs(&["ls", "after"]);
            ls.assert_ok();
            let cat = c.scs(&["download", "a.txt", "-"]);
            cat.assert_ok();
            assert_eq!(cat.stdout, b"before the replay");
        }
    });
    println!(
        "15 commands served through node 2 within {:.2?} of the kill, through {sent} replayed datagrams",
        killed.elapsed()
    );
    for i in 0..5 {
        c.assert_content(&format!("after/{i}.txt"), format!("after the failover {i}").as_bytes());
    }
}

#[test]
fn a_second_node_started_with_a_taken_id_is_named_in_the_logs_of_both() {
    // A copied config: two node 3s with the cluster's key take turns at
    // leading, and nothing said why.
    let mut c = Cluster::start(3);
    let key = c.key_file().to_path_buf();
    c.start_rogue(3, &key);
    let said = |log: &Path| {
        std::fs::read_to_string(log).unwrap_or_default().lines().any(|l| l.contains("another node runs with id 3"))
    };
    let twin_log = c.dir().join("rogue-3.log");
    scs_tests::eventually("both node 3s to name the other", Duration::from_secs(20), || {
        said(&c.log_path(3)) && said(&twin_log)
    });
    c.kill_rogue(3);
}
