//! Clients that find the cluster without multicast (issue 12): several
//! `--node` addresses, or `nodes = [...]` in `client.toml`, the other
//! members learned from the nodes that answer, and a long-running client
//! that keeps working when the very node it was given dies.
//!
//! The clients here are never given the cluster's group (the mount's
//! harness adds `--group`, but named nodes win over it), so everything they
//! find they find by asking the nodes. Each test has the cluster's hard
//! limit, and the harness kills nodes and unmounts by pid, also on failure.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use scs_tests::bins::bin;
use scs_tests::cli::{run, run_with_env, CLI_DEADLINE};
use scs_tests::mount::{Mount, MountOptions};
use scs_tests::{free_port, seeded_bytes, Cluster, Output, Status};

/// How long a new leader may take to be elected and serve after a kill -9,
/// with the client's own retries on top.
const FAILOVER: Duration = Duration::from_secs(20);
/// Ordinary commands on the mount must finish within this.
const CMD_DEADLINE: Duration = Duration::from_secs(60);

/// `scs --node N1 --node N2 ... --secret-file KEY ARGS`: no group given.
fn scs_nodes(c: &Cluster, nodes: &[&str], args: &[OsString]) -> Output {
    let mut all: Vec<OsString> = Vec::new();
    for n in nodes {
        all.extend(["--node".into(), OsString::from(n)]);
    }
    all.extend(["--secret-file".into(), c.key_file().into()]);
    all.extend(args.iter().cloned());
    c.run_cli(&all)
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// `scs upload LOCAL REMOTE` of `bytes` through `nodes`, retried (each run
/// has the client's own retry window) until it succeeds or `within` passes.
#[track_caller]
fn upload_through(c: &Cluster, nodes: &[&str], remote: &str, bytes: &[u8], within: Duration) -> Duration {
    let local = c.local_file(bytes);
    let start = Instant::now();
    loop {
        let out = scs_nodes(c, nodes, &[os(&["upload"]), vec![local.clone().into(), remote.into()]].concat());
        if out.success() {
            return start.elapsed();
        }
        println!("upload of {remote} through {nodes:?} failed after {:.2?}: {}", start.elapsed(), out.error_line());
        assert!(start.elapsed() < within, "no upload through {nodes:?} succeeded within {within:?}:\n{out}");
    }
}

#[test]
fn a_dead_address_among_the_nodes_given_is_skipped() {
    let c = Cluster::start(3);
    let nowhere = free_port().to_string();
    let follower = c.node_addr(1);
    let bytes = seeded_bytes(1, 300_000);

    let took = upload_through(&c, &[&nowhere, &follower], "a.bin", &bytes, Duration::from_secs(1));
    println!("upload through a dead address and a follower took {took:.2?}");
    // The comma-separated form, the dead address first again.
    let out = scs_nodes(&c, &[&format!("{nowhere},{follower}")], &os(&["download", "a.bin", "-"]));
    assert_eq!(out.assert_ok().stdout, bytes, "{out}");
    assert!(out.elapsed < Duration::from_secs(5), "the dead address held the client up:\n{out}");
    // What they stored is the cluster's, as seen through the group.
    c.assert_content("a.bin", &bytes);

    // Nothing listening anywhere: one line naming every address asked.
    let other = free_port().to_string();
    let out = scs_nodes(&c, &[&nowhere, &other], &os(&["ls"]));
    out.assert_one_line_error(&format!("no node answered at {nowhere}, {other}"));
}

#[test]
fn one_follower_given_is_enough_to_follow_a_failover() {
    let c = Cluster::start(3);
    let follower = c.node_addr(1);
    upload_through(&c, &[&follower], "before.txt", b"before the kill", Duration::from_secs(1));

    c.kill(3);
    // Node 1 still answers; it names node 2 once node 2 leads.
    let took = upload_through(&c, &[&follower], "after.txt", b"after the kill", FAILOVER);
    println!("leader killed: the first upload through node 1 alone succeeded {took:.2?} later");
    let s = c.wait_leader(2, Duration::from_secs(5));
    assert_eq!(s.alive_ids(), [1, 2], "{s:?}");
    c.assert_content("before.txt", b"before the kill");
    c.assert_content("after.txt", b"after the kill");
}

/// Writes `bytes` to `path` with `cp` from a local file (a process of its
/// own, so a hang fails the test instead of blocking it), retried until it
/// succeeds or `within` passes. How long it took.
#[track_caller]
fn write_through_mount(c: &Cluster, path: &Path, bytes: &[u8], within: Duration) -> Duration {
    let local = c.local_file(bytes);
    let start = Instant::now();
    loop {
        let out = run(Path::new("cp"), &[local.clone().into(), path.into()], CMD_DEADLINE);
        if out.success() {
            return start.elapsed();
        }
        println!("cp to {} failed after {:.2?}: {}", path.display(), start.elapsed(), out.error_line());
        assert!(start.elapsed() < within, "no write to {} succeeded within {within:?}:\n{out}", path.display());
    }
}

#[test]
fn a_mount_given_only_the_leader_keeps_working_after_that_node_is_killed() {
    let c = Cluster::start(3);
    // The highest id leads: the one node the mount is given is the leader.
    assert_eq!(c.status().leader, Some(3));
    let named = c.node_addr(3);
    let opts = MountOptions { extra: os(&["-o", &format!("node={named}")]), ..MountOptions::default() };
    let m = Mount::start_with(&c, opts);
    write_through_mount(&c, &m.join("before.txt"), b"written through node 3", Duration::from_secs(1));
    c.assert_content("before.txt", b"written through node 3");

    c.kill(3);
    let took = write_through_mount(&c, &m.join("after.txt"), b"written after node 3 died", FAILOVER);
    println!("node 3 (the only node named) killed: the first write through the mount succeeded {took:.2?} later");
    c.wait_leader(2, Duration::from_secs(5));
    c.assert_content("after.txt", b"written after node 3 died");
    // The mount goes on: more writes, and reads of what was there before.
    write_through_mount(&c, &m.join("later.txt"), b"and later", Duration::from_secs(1));
    c.assert_content("later.txt", b"and later");
    let out = run(Path::new("cat"), &[m.join("before.txt").into()], CMD_DEADLINE);
    assert_eq!(out.assert_ok().stdout, b"written through node 3");
    m.unmount();
}

/// A config home holding `scs/client.toml` with `text`; the dir and the file.
fn config_home(c: &Cluster, text: &str) -> (PathBuf, PathBuf) {
    let home = c.scratch_path("config-home");
    std::fs::create_dir_all(home.join("scs")).expect("create the config dir");
    let file = home.join("scs/client.toml");
    std::fs::write(&file, text).expect("write client.toml");
    (home, file)
}

#[test]
fn client_toml_nodes_are_honoured_and_an_unknown_key_is_refused_naming_the_file() {
    let c = Cluster::start(3);
    let nowhere = free_port().to_string();
    let toml =
        format!("nodes = [\"{nowhere}\", \"{}\"]\nsecret_file = \"{}\"\n", c.node_addr(1), c.key_file().display());
    let (home, _) = config_home(&c, &toml);
    let env = [("XDG_CONFIG_HOME", home.as_path())];
    let scs = bin("scs");

    // No flag at all: the nodes and the key come from the file.
    let out = run_with_env(&scs, &os(&["status", "--json"]), &env, CLI_DEADLINE);
    let s: Status = serde_json::from_slice(&out.assert_ok().stdout).unwrap_or_else(|e| panic!("{e}:\n{out}"));
    assert_eq!((s.leader, s.quorum), (Some(3), true), "{out}");
    let local = c.local_file(b"found through client.toml");
    let up = [os(&["upload"]), vec![local.into(), "from-file.txt".into()]].concat();
    run_with_env(&scs, &up, &env, CLI_DEADLINE).assert_ok();
    c.assert_content("from-file.txt", b"found through client.toml");
    // A flag overrides its key: a key file that does not exist is refused.
    let flag = os(&["--secret-file", "/nonexistent/cluster.key", "status"]);
    run_with_env(&scs, &flag, &env, CLI_DEADLINE).assert_one_line_error("/nonexistent/cluster.key");

    // An unknown key: one line naming the file and the key (a bad config is
    // exit 1, as a bad key file is).
    let (home, file) = config_home(&c, &format!("{toml}bogus = 1\n"));
    let env = [("XDG_CONFIG_HOME", home.as_path())];
    let out = run_with_env(&scs, &os(&["status"]), &env, CLI_DEADLINE);
    let line = out.assert_one_line_error(&file.display().to_string());
    assert!(line.contains("unknown field `bogus`"), "{out}");
    // scs-mount reads the same file, and refuses it the same way, before mounting.
    let mountpoint = c.scratch_path("mnt");
    std::fs::create_dir_all(&mountpoint).expect("create the mountpoint");
    let out = run_with_env(&bin("scs-mount"), &[mountpoint.into(), "--foreground".into()], &env, CLI_DEADLINE);
    assert_eq!(out.code(), Some(1), "{out}");
    let lines: Vec<&str> = out.stderr.trim_end().lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("scs-mount: ") && lines[0].contains("unknown field `bogus`"),
        "expected one line `scs-mount: ...` naming the key:\n{out}"
    );
    assert!(lines[0].contains(&file.display().to_string()), "{out}");
}
