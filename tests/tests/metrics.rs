//! `metrics_listen`: Prometheus text at `/metrics` whose figures match
//! `scs status`, latency histograms that count what was done, and
//! `/health` answering 200 with quorum and 503 without. Also what watches
//! a node from outside: systemd's readiness and watchdog messages, and
//! logs as JSON lines.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use scs_tests::bins::bin;
use scs_tests::cli::run;
use scs_tests::mount::{Mount, MountOptions};
use scs_tests::{eventually, free_port, seeded_bytes, Cluster, Output};

/// One HTTP request to `addr`; the status code and the body.
fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to the metrics port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).expect("send the request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no end of headers: {answer:?}"));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{head:?}"));
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
    // A HEAD answer announces the body it leaves out.
    if !request.starts_with("HEAD ") {
        assert_eq!(length, body.len(), "Content-Length against the body");
    }
    (code, body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, &format!("GET {path} HTTP/1.1\r\nHost: scs\r\n\r\n"))
}

/// The samples of a Prometheus text page, by name with labels; panics on
/// any line that is not a comment, a blank or `name{labels} value`.
fn parse(page: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    let mut typed = Vec::new();
    for line in page.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut w = rest.split_whitespace();
            let (what, name) = (w.next(), w.next());
            assert!(matches!(what, Some("HELP" | "TYPE")) && name.is_some(), "bad comment line {line:?}");
            if what == Some("TYPE") {
                let kind = w.next().unwrap_or_default();
                assert!(matches!(kind, "gauge" | "counter" | "histogram"), "bad type in {line:?}");
                typed.push(name.unwrap_or_default().to_string());
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line:?}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "bad labels in {line:?}");
                for pair in labels[1..labels.len() - 1].split(',') {
                    let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("bad label in {line:?}"));
                    assert!(!k.is_empty() && v.starts_with('"') && v.ends_with('"'), "bad label in {line:?}");
                }
            }
        }
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        assert!(typed.iter().any(|t| t == name || t == base), "{name} has no TYPE line before it");
        assert!(samples.insert(series.to_string(), value).is_none(), "{series} twice");
    }
    samples
}

fn metrics(c: &Cluster, id: u32) -> BTreeMap<String, f64> {
    let (code, body) = get(c.metrics_addr(id), "/metrics");
    assert_eq!(code, 200, "{body}");
    parse(&body)
}

fn value(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series).unwrap_or_else(|| panic!("no {series} in {:?}", m.keys().collect::<Vec<_>>()))
}

#[test]
fn metrics_match_the_status_and_count_the_requests_served() {
    let c = Cluster::builder(3).metrics().start();
    for i in 0..5 {
        c.upload_bytes(&format!("m/{i}.bin"), &seeded_bytes(i, 4096));
    }
    c.scs(&["mkdir", "m/sub"]);
    c.scs(&["mv", "m/0.bin", "m/sub/0.bin"]);

    // Every node's own figures, as `scs status` shows them (the files each
    // holds reach the others by heartbeat, and the bytes are counted every
    // few seconds: waited for).
    eventually("each node's files and bytes in the status", Duration::from_secs(15), || {
        let s = c.status();
        (1..=3).all(|id| s.node(id).files == 5 && s.node(id).bytes == 5 * 4096)
    });
    let s = c.status();
    for id in 1..=3 {
        let m = metrics(&c, id);
        assert_eq!(value(&m, "scs_node_id"), f64::from(id));
        assert_eq!(value(&m, "scs_leader"), f64::from(u8::from(s.leader == Some(id))), "node {id}");
        assert_eq!(value(&m, "scs_term"), s.term as f64, "node {id}");
        assert_eq!(value(&m, "scs_quorum"), 1.0, "node {id}");
        assert_eq!(value(&m, "scs_cluster_size"), 3.0);
        assert_eq!(value(&m, "scs_members_alive"), 3.0, "node {id}");
        assert_eq!(value(&m, "scs_candidates"), 0.0, "node {id}");
        assert_eq!(value(&m, "scs_members_draining"), 0.0, "node {id}");
        assert_eq!(value(&m, "scs_moving_files"), 0.0, "node {id}");
        assert_eq!(value(&m, "scs_files"), s.node(id).files as f64, "node {id}");
        assert_eq!(value(&m, "scs_bytes"), s.node(id).bytes as f64, "node {id}");
        assert_eq!(value(&m, "scs_wanted_copies"), s.node(id).wanted as f64, "node {id}");
        assert_eq!(value(&m, "scs_corrupt_copies"), 0.0, "node {id}");
        assert_eq!(value(&m, "scs_under_replicated_files"), s.under_replicated as f64, "node {id}");
        assert!(value(&m, "scs_disk_total_bytes") >= value(&m, "scs_disk_free_bytes"));
        // Every change was journaled with a sync here, leader or not.
        assert!(value(&m, "scs_journal_fdatasync_seconds_count") >= 1.0, "node {id}");
        assert!(value(&m, "scs_index_apply_seconds_count") >= 1.0, "node {id}");
        assert!(
            value(&m, "scs_store_commit_seconds_count") >= value(&m, "scs_index_apply_seconds_count"),
            "node {id}: every journaled commit is a commit"
        );
    }

    // The leader served the uploads and committed each change on a majority.
    let leader = s.leader.expect("a leader");
    let m = metrics(&c, leader);
    assert_eq!(value(&m, "scs_request_seconds_count{kind=\"upload\"}"), 5.0);
    assert_eq!(value(&m, "scs_request_seconds_bucket{kind=\"upload\",le=\"+Inf\"}"), 5.0);
    assert!(value(&m, "scs_request_seconds_count{kind=\"rename\"}") >= 1.0);
    assert!(value(&m, "scs_request_seconds_sum{kind=\"upload\"}") > 0.0);
    let local = value(&m, "scs_leader_commit_local_seconds_count");
    assert!(local >= 7.0, "five uploads, a mkdir and a mv: {local} commits");
    assert_eq!(value(&m, "scs_leader_commit_majority_seconds_count"), local);
    // A follower applied what the leader sent it, and served no upload.
    let follower = if leader == 1 { 2 } else { 1 };
    let f = metrics(&c, follower);
    assert!(value(&f, "scs_request_seconds_count{kind=\"apply\"}") >= 2.0);
    assert!(!f.contains_key("scs_request_seconds_count{kind=\"upload\"}"));
    assert_eq!(value(&f, "scs_leader_commit_local_seconds_count"), 0.0);
}

#[test]
fn health_answers_200_with_quorum_and_503_without() {
    let c = Cluster::builder(3).metrics().start();
    for id in 1..=3 {
        let (code, body) = get(c.metrics_addr(id), "/health");
        assert_eq!(code, 200, "node {id}: {body}");
        // HEAD: the same status line and headers, without the body.
        let (code, body) = http(c.metrics_addr(id), "HEAD /health HTTP/1.1\r\n\r\n");
        assert_eq!((code, body.as_str()), (200, ""), "node {id}");
    }
    assert_eq!(get(c.metrics_addr(1), "/nothing").0, 404);
    assert_eq!(http(c.metrics_addr(1), "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").0, 405);
    // A connection that sends nothing holds nobody up.
    let _silent = TcpStream::connect(c.metrics_addr(1)).expect("connect");
    assert_eq!(get(c.metrics_addr(1), "/health").0, 200);

    c.kill(3);
    c.kill(2);
    eventually("node 1 to report no quorum", Duration::from_secs(10), || get(c.metrics_addr(1), "/health").0 == 503);
    assert_eq!(value(&metrics(&c, 1), "scs_quorum"), 0.0);
    assert_eq!(value(&metrics(&c, 1), "scs_members_alive"), 1.0);
}

/// `scs-node` with `extra` flags on a fresh data dir; it must end by itself.
fn node_refuses(extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<OsString> = vec![
        "--data-dir".into(),
        dir.path().join("d").into(),
        "--secret-file".into(),
        dir.path().join("key").into(),
        "--group".into(),
        "239.255.200.2:20002".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    run(&bin("scs-node"), &args, Duration::from_secs(20))
}

#[test]
fn a_bad_or_taken_metrics_address_is_refused_before_the_node_starts() {
    let out = node_refuses(&["--metrics-listen", "localhost"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("metrics_listen must be IP:PORT"), "{out}");
    assert_eq!(out.stderr.lines().count(), 1, "one line: {out}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = node_refuses(&["--metrics-listen", &addr]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains(&format!("cannot serve metrics on {addr}")), "{out}");
}

#[test]
fn status_check_exits_0_healthy_1_degraded_2_without_quorum() {
    let c = Cluster::start(3);
    let check = || {
        let out = c.scs(&["status", "--check"]);
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.code(), line)
    };
    let (code, line) = check();
    assert_eq!(code, Some(0), "{line}");
    assert!(line.starts_with("OK: node 3 leads term"), "{line}");
    assert_eq!(line.lines().count(), 1, "{line}");

    c.kill(1);
    eventually("the check to see node 1 down", Duration::from_secs(10), || check().0 == Some(1));
    let (_, line) = check();
    assert!(line.starts_with("DEGRADED: node(s) 1 down"), "{line}");
    // Plain status keeps its exit code.
    assert_eq!(c.scs(&["status"]).code(), Some(0));

    c.kill(2);
    eventually("the check to see no quorum", Duration::from_secs(10), || check().0 == Some(2));
    let (_, line) = check();
    assert!(line.starts_with("CRITICAL: no leader with a quorum"), "{line}");

    c.kill(3);
    let (code, line) = check();
    assert_eq!(code, Some(2), "{line}");
    assert!(line.starts_with("CRITICAL: no answer from the cluster"), "{line}");
}

/// The messages a node sent to `sock` (its `NOTIFY_SOCKET`) within `within`.
fn notifications(sock: &UnixDatagram, within: Duration) -> Vec<String> {
    let until = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
            Err(e) => panic!("reading the notify socket: {e}"),
        }
    }
    got
}

#[test]
fn under_systemd_a_node_says_ready_once_joined_then_keeps_pinging_the_watchdog() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    // WatchdogSec=0.4: a ping every 0.2 s.
    let c = Cluster::builder(1).node_env("NOTIFY_SOCKET", &path).node_env("WATCHDOG_USEC", "400000").start();
    let got = notifications(&sock, Duration::from_millis(1500));
    let ready = got.iter().position(|m| m == "READY=1").unwrap_or_else(|| panic!("no READY=1 in {got:?}"));
    let pings_after = got[ready..].iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(pings_after >= 4, "{pings_after} watchdog pings in 1.5 s after joining, 0.2 s apart: {got:?}");
    assert!(got.iter().all(|m| m == "READY=1" || m == "WATCHDOG=1"), "{got:?}");
    // Frozen, it stops pinging (systemd would restart it); thawed, it goes on.
    c.pause(1);
    let _ = notifications(&sock, Duration::from_millis(300));
    assert!(notifications(&sock, Duration::from_millis(800)).is_empty(), "pings from a frozen node");
    c.resume(1);
    assert!(notifications(&sock, Duration::from_millis(1500)).contains(&"WATCHDOG=1".to_string()));
}

#[test]
fn a_watchdog_meant_for_another_process_is_not_pinged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    let _c = Cluster::builder(1)
        .node_env("NOTIFY_SOCKET", &path)
        .node_env("WATCHDOG_USEC", "400000")
        .node_env("WATCHDOG_PID", "1")
        .start();
    let got = notifications(&sock, Duration::from_millis(1200));
    assert_eq!(got, ["READY=1"], "WATCHDOG_PID names another process");
}

#[test]
fn with_log_format_json_every_log_line_is_one_json_object() {
    let c = Cluster::builder(3).config("log_format = \"json\"\n").start();
    c.upload_bytes("a.txt", b"logged");
    c.stop(1);
    let log = std::fs::read_to_string(c.log_path(1)).unwrap();
    let mut lines = 0;
    for line in log.lines().filter(|l| !l.starts_with("===== harness")) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"));
        for key in ["ts", "level", "target", "msg"] {
            assert!(v[key].is_string(), "no {key} in {line}");
        }
        lines += 1;
    }
    assert!(lines >= 3, "only {lines} log lines:\n{log}");
    assert!(log.contains("leader") || log.contains("lead"), "{log}");
    // A wrong value stops the node at start with a one-line error.
    let out = node_refuses(&["--log-format", "xml"]);
    assert!(out.stderr.contains(r#"log_format must be "text" or "json", not "xml""#), "{out}");
}

#[test]
fn a_mount_serves_its_pending_uploads_and_whether_the_cluster_answers() {
    let c = Cluster::start(3);
    let addr = free_port();
    let extra = vec![OsString::from("--write-back"), OsString::from("--metrics-listen"), addr.to_string().into()];
    let m = Mount::start_with(&c, MountOptions { extra, ..MountOptions::default() });
    assert_eq!(get(addr, "/health").0, 200);
    std::fs::create_dir(m.join("docs")).unwrap();
    // The cluster freezes: files closed here wait in the journal.
    for id in 1..=3 {
        c.pause(id);
    }
    for i in 0..5 {
        std::fs::write(m.join(format!("docs/f{i}")), format!("file {i}")).unwrap();
    }
    let page = parse(&get(addr, "/metrics").1);
    assert_eq!(value(&page, "scs_mount_uploads_pending"), 5.0, "{page:?}");
    assert!(value(&page, "scs_mount_resident_bytes") > 0.0);
    let (code, body) = get(addr, "/health");
    assert_eq!(code, 503, "{body}");
    for id in 1..=3 {
        c.resume(id);
    }
    c.wait_for("a leader after the freeze", Duration::from_secs(20), |s| s.quorum);
    eventually("the 5 files to go up", Duration::from_secs(20), || {
        value(&parse(&get(addr, "/metrics").1), "scs_mount_uploads_pending") == 0.0
    });
    let page = parse(&get(addr, "/metrics").1);
    assert!(value(&page, "scs_mount_files_stored_total") >= 5.0, "{page:?}");
    assert_eq!(value(&page, "scs_mount_uploads_refused_total"), 0.0);
    eventually("the mount's health to come back", Duration::from_secs(20), || get(addr, "/health").0 == 200);
}

#[test]
fn a_follower_restarted_after_a_crash_counts_the_records_it_pulls_to_catch_up() {
    let mut c = Cluster::builder(3).metrics().start();
    c.upload_bytes("before", b"made with all three up");
    c.kill(1);
    const MADE: usize = 30;
    for i in 0..MADE {
        c.upload_bytes(&format!("while-1-was-down/{i}"), &seeded_bytes(i as u64, 100));
    }
    c.restart(1);
    c.wait_for("node 1 back, with every file", Duration::from_secs(15), |s| {
        s.is_settled(3, &[1, 2, 3]) && s.node(1).files == MADE as u64 + 1
    });
    let pulled = value(&metrics(&c, 1), "scs_records_pulled_total");
    println!("node 1 pulled {pulled} records catching up");
    // Each file is at least two records (the file and its name); what was
    // there before it went down is not pulled again.
    assert!(pulled >= (2 * MADE) as f64, "node 1 pulled {pulled} records; {MADE} files were made without it");
    assert!(pulled <= (4 * MADE + 10) as f64, "node 1 pulled {pulled} records for {MADE} files made without it");
}

#[test]
fn a_leader_restarted_after_a_crash_pulls_only_what_changed_since_a_majority_had_its_changes() {
    let mut c = Cluster::builder(3).metrics().start();
    const MADE: usize = 60;
    for i in 0..MADE {
        c.upload_bytes(&format!("made-by-3/{i}"), &seeded_bytes(i as u64, 100));
    }
    // The followers pull every second; from their pulls the leader stores,
    // every 5 s at most, how far a majority has its changes: this leaves
    // time for two stores after the last file.
    std::thread::sleep(Duration::from_secs(11));
    c.kill(3);
    c.wait_leader(2, Duration::from_secs(10));
    c.upload_bytes("while-3-was-down", b"one change");
    c.restart(3);
    c.wait_for("node 3 to lead again with all three alive", Duration::from_secs(15), |s| s.is_settled(3, &[1, 2, 3]));
    let pulled = value(&metrics(&c, 3), "scs_records_pulled_total");
    println!("node 3 pulled {pulled} records catching up");
    // Each file it made is two records (the file and its name): pulling
    // them all again is what a leader that kept the watermark of its
    // term's start did.
    assert!(pulled < MADE as f64, "node 3 pulled {pulled} records; it made {} itself", 2 * MADE);
    c.assert_content("while-3-was-down", b"one change");
    assert_eq!(c.ls_names("made-by-3").len(), MADE);
}

/// The requests of `kind` node `id` has served.
fn served(c: &Cluster, id: u32, kind: &str) -> f64 {
    metrics(c, id).get(&format!("scs_request_seconds_count{{kind=\"{kind}\"}}")).copied().unwrap_or(0.0)
}

/// Writing, then removing, every file of a directory too big to be listed
/// again for each name (more than 4,096) through a mount, over longer than
/// the mount trusts a listing. Each upload and each removal says the
/// directory went from the version the mount listed to the next, so the
/// listing stays fresh and the names are looked up in it, not asked for
/// one at a time: writing 20,000 files asked for about 15,500 names
/// before, and `rm -rf` of them (which reads a directory of 10,000 files
/// or more first, as here) about 15,000.
#[test]
fn writing_and_removing_a_big_directory_through_a_mount_asks_the_cluster_for_no_name() {
    const FILES: usize = 8_100;
    let c = Cluster::builder(3).metrics().start();
    let leader = c.status().leader.expect("a leader");
    let lookups = served(&c, leader, "lookup");
    let started = Instant::now();
    {
        let extra = vec![OsString::from("--write-back")];
        let m = Mount::start_with(&c, MountOptions { extra, ..MountOptions::default() });
        std::fs::create_dir(m.join("big")).unwrap();
        for i in 0..FILES {
            std::fs::write(m.join(format!("big/f{i:05}")), b"x").unwrap();
        }
        // Unmounting waits until every file is on the cluster.
        m.unmount();
    }
    assert_eq!(c.status().leader, Some(leader), "the same leader throughout");
    let asked = served(&c, leader, "lookup") - lookups;
    let took = started.elapsed();
    assert!(asked < 50.0, "{asked} names asked for while writing {FILES} files took {took:?}");
    let m = Mount::start(&c);
    let lookups = served(&c, leader, "lookup");
    let started = Instant::now();
    let names: Vec<_> = std::fs::read_dir(m.join("big")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(names.len(), FILES);
    for path in &names {
        std::fs::remove_file(path).unwrap();
    }
    std::fs::remove_dir(m.join("big")).unwrap();
    let took = started.elapsed();
    assert_eq!(served(&c, leader, "remove"), (FILES + 1) as f64, "one removal per name");
    let asked = served(&c, leader, "lookup") - lookups;
    assert!(asked < 50.0, "{asked} names asked for while removing {FILES} files took {took:?}");
    assert_eq!(c.scs(&["ls", ""]).stdout_text().trim(), "", "nothing left");
}
