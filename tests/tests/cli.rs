//! The `scs` command line end to end on a real cluster: every command, its
//! output, and its errors (exit 1 with one `scs: ...` line, exit 2 on bad
//! usage).

use std::ffi::OsString;
use std::time::Duration;

use scs_tests::bins::bin;
use scs_tests::cli::run;
use scs_tests::{seeded_bytes, Cluster, LsEntry};

fn entry<'a>(entries: &'a [LsEntry], name: &str) -> &'a LsEntry {
    entries.iter().find(|e| e.name == name).unwrap_or_else(|| panic!("ls lists no {name:?}: {entries:#?}"))
}

#[test]
fn uploaded_files_download_byte_for_byte() {
    let c = Cluster::start(3);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("hello.txt", b"hello, world\n".to_vec()),
        ("empty", Vec::new()),
        // Several 1 MiB frames plus a partial one.
        ("photos/big.bin", seeded_bytes(1, 3 * 1024 * 1024 + 17)),
        ("un été/ça va.txt", "bien sûr ✓\n".as_bytes().to_vec()),
        ("a/b/c/d/deep.bin", seeded_bytes(2, 4096)),
    ];
    for (name, bytes) in &cases {
        c.upload_bytes(name, bytes);
    }
    for (name, bytes) in &cases {
        c.assert_content(name, bytes);
    }

    // Overwriting replaces the content, also with a shorter one.
    c.upload_bytes("hello.txt", b"bye");
    c.assert_content("hello.txt", b"bye");

    // `download -` writes the bytes to stdout, nothing else.
    let out = c.scs(&["download", "photos/big.bin", "-"]);
    out.assert_ok();
    assert!(out.stdout == cases[2].1, "download - printed other bytes");
    let out = c.scs(&["download", "un été/ça va.txt", "-"]);
    assert_eq!(out.assert_ok().stdout_text(), "bien sûr ✓\n");

    // Downloading into an existing local directory keeps the base name.
    let into = c.scratch_path("into");
    std::fs::create_dir(&into).unwrap();
    c.scs_os(&["download".into(), "a/b/c/d/deep.bin".into(), into.clone().into()]).assert_ok();
    assert_eq!(std::fs::read(into.join("deep.bin")).unwrap(), cases[4].1);
}

#[test]
fn upload_into_a_directory_keeps_the_local_file_name() {
    let c = Cluster::start(3);
    let local_dir = c.scratch_path("local");
    std::fs::create_dir(&local_dir).unwrap();
    let local = local_dir.join("report 2024.txt");
    std::fs::write(&local, b"numbers").unwrap();

    // REMOTE ending in / is a directory; no REMOTE means the root.
    c.scs_os(&["upload".into(), local.clone().into(), "docs/".into()]).assert_ok();
    c.scs_os(&["upload".into(), local.clone().into()]).assert_ok();
    c.assert_content("docs/report 2024.txt", b"numbers");
    c.assert_content("report 2024.txt", b"numbers");
    assert_eq!(c.ls_names("docs"), ["docs/report 2024.txt"]);
}

#[test]
fn ls_shows_sizes_kinds_and_implied_and_explicit_directories() {
    let c = Cluster::start(3);
    c.upload_bytes("docs/a.txt", b"abcdef");
    c.upload_bytes("docs/sub/b.bin", &seeded_bytes(3, 1000));
    c.upload_bytes("top.txt", b"x");
    c.scs(&["mkdir", "empty"]).assert_ok();
    c.scs(&["mkdir", "-p", "p/q/r"]).assert_ok();

    let root = c.ls_json("");
    let mut names: Vec<&str> = root.iter().map(|e| e.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["docs", "empty", "p", "top.txt"], "{root:#?}");
    assert_eq!(entry(&root, "docs").kind, "dir", "implied by docs/a.txt");
    assert_eq!(entry(&root, "empty").kind, "dir", "made by mkdir");
    let top = entry(&root, "top.txt");
    assert_eq!((top.kind.as_str(), top.size), ("file", 1));
    assert!(top.mtime > 1_600_000_000, "mtime is in seconds since 1970: {top:?}");

    let docs = c.ls_json("docs");
    assert_eq!(docs.len(), 2, "{docs:#?}");
    let a = entry(&docs, "docs/a.txt");
    assert_eq!((a.kind.as_str(), a.size), ("file", 6));
    assert_eq!(entry(&docs, "docs/sub").kind, "dir");
    assert_eq!(c.ls_names("docs/sub"), ["docs/sub/b.bin"]);
    assert_eq!(entry(&c.ls_json("docs/sub"), "docs/sub/b.bin").size, 1000);

    // mkdir -p made every level; an empty directory lists nothing.
    assert_eq!(c.ls_names("p"), ["p/q"]);
    assert_eq!(c.ls_names("p/q"), ["p/q/r"]);
    assert!(c.ls_json("empty").is_empty());

    // The view-directory alias and the table for people.
    let out = c.scs(&["view-directory", "docs"]);
    let table = out.assert_ok().stdout_text();
    assert!(table.contains("a.txt") && table.contains("sub/") && table.contains('6'), "{out}");

    // ls of a file shows that file.
    let one = c.ls_json("docs/a.txt");
    assert_eq!(one.len(), 1);
    assert_eq!((one[0].name.as_str(), one[0].size), ("docs/a.txt", 6));
}

#[test]
fn mkdir_refuses_an_existing_name_unless_told_p() {
    let c = Cluster::start(3);
    c.scs(&["mkdir", "d"]).assert_ok();
    c.scs(&["mkdir", "d"]).assert_one_line_error("already exists");
    c.scs(&["mkdir", "-p", "d"]).assert_ok();
    c.scs(&["mkdir", "x/y"]).assert_one_line_error("no such file");
    c.upload_bytes("f", b"1");
    c.scs(&["mkdir", "f"]).assert_one_line_error("already exists");
    c.scs(&["mkdir", "-p", "f/g"]).assert_one_line_error("not a directory");
}

#[test]
fn mv_moves_files_and_whole_directories() {
    let c = Cluster::start(3);
    let big = seeded_bytes(4, 2 * 1024 * 1024 + 5);
    c.upload_bytes("docs/a.txt", b"aaa");
    c.upload_bytes("docs/sub/big.bin", &big);
    c.upload_bytes("other.txt", b"other");

    // A file, within its directory.
    c.scs(&["mv", "docs/a.txt", "docs/renamed.txt"]).assert_ok();
    c.assert_content("docs/renamed.txt", b"aaa");
    c.assert_missing("docs/a.txt");

    // A file onto an existing file replaces it.
    c.scs(&["mv", "other.txt", "docs/renamed.txt"]).assert_ok();
    c.assert_content("docs/renamed.txt", b"other");
    c.assert_missing("other.txt");

    // A whole directory: everything under it follows.
    c.scs(&["mv", "docs", "archive/2024"]).assert_ok();
    c.assert_content("archive/2024/renamed.txt", b"other");
    c.assert_content("archive/2024/sub/big.bin", &big);
    c.assert_missing("docs/renamed.txt");
    c.assert_missing("docs/sub/big.bin");
    c.scs(&["ls", "docs"]).assert_one_line_error("no such file: docs");
    assert_eq!(c.ls_names(""), ["archive"]);
    assert_eq!(c.ls_names("archive/2024"), ["archive/2024/renamed.txt", "archive/2024/sub"]);

    // The old name is free again.
    c.upload_bytes("docs/a.txt", b"new");
    c.assert_content("docs/a.txt", b"new");

    c.scs(&["mv", "nothing", "x"]).assert_one_line_error("no such file: nothing");
    c.scs(&["mv", "archive", "archive/2024/inside"]).assert_error(1, "");
}

#[test]
fn rm_deletes_files_and_empty_directories_but_not_full_ones() {
    let c = Cluster::start(3);
    c.upload_bytes("dir/f.txt", b"f");
    c.upload_bytes("g.txt", b"g");
    c.scs(&["mkdir", "empty"]).assert_ok();

    c.scs(&["rm", "g.txt"]).assert_ok();
    c.assert_missing("g.txt");
    c.scs(&["rm", "g.txt"]).assert_one_line_error("no such file: g.txt");

    c.scs(&["rm", "empty"]).assert_ok();
    assert_eq!(c.ls_names(""), ["dir"]);

    c.scs(&["rm", "dir"]).assert_one_line_error("directory not empty: dir");
    c.assert_content("dir/f.txt", b"f");
    // `delete` is the long name of `rm`.
    c.scs(&["delete", "dir/f.txt"]).assert_ok();
    c.assert_missing("dir/f.txt");
    // A deleted file can be uploaded again.
    c.upload_bytes("g.txt", b"again");
    c.assert_content("g.txt", b"again");
}

#[test]
fn mistakes_exit_1_with_one_line_naming_the_problem() {
    let c = Cluster::start(3);
    let out = c.scs(&["download", "x", "-"]);
    assert_eq!(out.assert_one_line_error("no such file"), "scs: no such file: x");
    assert!(out.stdout.is_empty(), "{out}");

    c.try_upload_bytes("a/../b", b"1").assert_one_line_error("bad name");
    let long = "n".repeat(256);
    c.try_upload_bytes(&format!("dir/{long}"), b"1").assert_one_line_error("name too long");
    c.scs(&["mkdir", &long]).assert_one_line_error("name too long");
    // 255 bytes is still fine (NAME_MAX).
    let ok = "m".repeat(255);
    c.upload_bytes(&ok, b"255");
    c.assert_content(&ok, b"255");

    c.upload_bytes("f", b"a file");
    c.try_upload_bytes("f/x", b"1").assert_one_line_error("not a directory");
    c.scs(&["download", "f/x", "-"]).assert_error(1, "");
    c.scs(&["mkdir", "d"]).assert_ok();
    c.scs(&["download", "d", "-"]).assert_one_line_error("is a directory");
    // Like cp, an upload onto a directory lands inside it, under the local name.
    let local = c.local_file(b"into d");
    c.scs_os(&["upload".into(), local.clone().into(), "d".into()]).assert_ok();
    let inside = format!("d/{}", local.file_name().and_then(|n| n.to_str()).expect("a utf-8 name"));
    c.assert_content(&inside, b"into d");
    c.scs(&["rm", &inside]).assert_ok();
    c.scs(&["ls", "nope"]).assert_one_line_error("no such file: nope");

    // A local file that does not exist is the user's mistake, not a hang.
    c.scs(&["upload", "/nonexistent/file.txt", "z"]).assert_error(1, "");
    // Nor is a destination that cannot be written: said at once, as such.
    let started = std::time::Instant::now();
    let out = c.scs(&["download", "f", "/nonexistent/dir/f"]);
    out.assert_one_line_error("cannot write /nonexistent/dir/f: No such file or directory");
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "not retried as if the cluster were away: {out}");
    // None of these changed anything.
    let mut names = c.ls_names("");
    names.retain(|n| n != &ok);
    assert_eq!(names, ["d", "f"]);
    c.assert_content("f", b"a file");
}

#[test]
fn a_reader_that_goes_away_ends_scs_quietly() {
    // `scs download big - | head -c 10`: scs ends by SIGPIPE, as cat
    // would, not with a panic and a backtrace on stderr.
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    let c = Cluster::start(1);
    c.upload_bytes("big", &seeded_bytes(3, 4 << 20));
    let mut args = c.cluster_flags(c.key_file());
    args.extend(["download".into(), "big".into(), "-".into()]);
    let mut child =
        Command::new(bin("scs")).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start scs");
    let mut head = [0u8; 10];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = scs_tests::cli::wait_until(&mut child, deadline).expect("scs ends once its reader is gone");
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "ended by SIGPIPE: {status}; stderr: {stderr}");
    assert!(stderr.is_empty(), "nothing on stderr: {stderr}");
}

#[test]
fn bad_usage_exits_2_and_help_and_version_exit_0() {
    let scs = bin("scs");
    let node = bin("scs-node");
    let deadline = Duration::from_secs(20);
    let os = |args: &[&str]| args.iter().map(OsString::from).collect::<Vec<_>>();
    for args in [
        &[][..],
        &["frobnicate"],
        &["upload"],
        &["download"],
        &["ls", "--bogus"],
        &["mv", "only-one"],
        &["status", "extra", "args"],
    ] {
        let out = run(&scs, &os(args), deadline);
        assert_eq!(out.code(), Some(2), "scs {args:?} is bad usage:\n{out}");
        assert!(!out.stderr.is_empty(), "bad usage says why:\n{out}");
    }
    for binary in [&scs, &node] {
        for flag in ["--help", "--version"] {
            let out = run(binary, &os(&[flag]), deadline);
            assert_eq!(out.code(), Some(0), "{out}");
            assert!(!out.stdout.is_empty(), "{out}");
        }
    }
    let out = run(&node, &os(&["--no-such-flag"]), deadline);
    assert_eq!(out.code(), Some(2), "{out}");
}

#[test]
fn scs_node_refuses_a_bad_config_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<OsString> = vec![
        "--id".into(),
        "0".into(),
        "--cluster-size".into(),
        "3".into(),
        "--data-dir".into(),
        dir.path().join("d").into(),
        "--secret-file".into(),
        dir.path().join("key").into(),
        "--group".into(),
        "239.255.200.1:20001".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    let out = run(&bin("scs-node"), &args, Duration::from_secs(20));
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("id must be a positive integer"), "{out}");
}

#[test]
fn status_json_shows_the_leader_the_term_and_every_node() {
    let c = Cluster::start(3);
    c.upload_bytes("one", b"1");
    let s = c.status();
    assert_eq!(s.leader, Some(3));
    assert!(s.term >= 1 && s.quorum, "{s:?}");
    assert_eq!((s.cluster_size, s.replicas), (3, 3));
    let mut ids: Vec<u32> = s.nodes.iter().map(|n| n.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2, 3]);
    let mut addrs = Vec::new();
    for n in &s.nodes {
        assert!(n.alive, "{n:?}");
        assert_eq!(n.role, if n.id == 3 { "leader" } else { "follower" });
        assert!(n.addr.starts_with("127.0.0.1:"), "{n:?}");
        assert_eq!(n.max_files, None);
        addrs.push(n.addr.clone());
    }
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 3, "every node has its own address");
    // Replication to every node: the file counts catch up (the client is
    // acked on a majority, so the last copy may land a moment later).
    c.wait_for("every node to count 1 file", Duration::from_secs(10), |s| s.nodes.iter().all(|n| n.files == 1));

    let out = c.scs(&["status"]);
    let table = out.assert_ok().stdout_text();
    assert!(table.contains("leader 3") && table.contains("quorum yes"), "{out}");
}

/// A fourth machine started next to a three-node cluster, with its key
/// (even one configured for a cluster of four), is not taken in until
/// `scs node add`, but it is not ignored silently either: the status lists
/// it as a candidate, and says how to admit it.
#[test]
fn a_node_that_is_not_a_member_is_listed_as_a_candidate() {
    let mut c = Cluster::start(3);
    c.start_outsider(4, 4);
    let s = c.wait_for("node 4 listed as a candidate", Duration::from_secs(15), |s| {
        s.nodes.iter().any(|n| n.id == 4 && n.state == "candidate" && n.alive)
    });
    assert!(s.is_settled(3, &[1, 2, 3]), "the members are as they were: {s:?}");
    assert_eq!(s.members().count(), 3, "{s:?}");
    let table = c.scs(&["status"]).assert_ok().stdout_text();
    assert!(
        table.contains("candidate: node 4 at 127.0.0.1:")
            && table.contains("is not a member: scs node add 4 makes it one"),
        "{table}"
    );
    // `--check` counts members only: a candidate is not a member down.
    let check = c.scs(&["status", "--check"]);
    assert!(check.stdout_text().starts_with("OK: "), "{check}");

    c.kill_rogue(4);
    c.wait_for("node 4 no longer listed", Duration::from_secs(15), |s| s.nodes.iter().all(|n| n.id != 4));
}

#[test]
fn scs_node_flag_talks_to_one_node_without_multicast() {
    let c = Cluster::start(3);
    c.upload_bytes("a.txt", b"via the group");
    for id in [3, 1] {
        let addr = c.node_addr(id);
        let out = c.scs_at(&addr, &["download", "a.txt", "-"]);
        assert_eq!(out.assert_ok().stdout, b"via the group", "via node {id}");
        let out = c.scs_at(&addr, &["status", "--json"]);
        let s: scs_tests::Status = serde_json::from_slice(&out.assert_ok().stdout).unwrap();
        assert_eq!(s.leader, Some(3));
    }
    let local = c.local_file(b"via node 1");
    let addr = c.node_addr(1);
    let local = local.to_string_lossy().into_owned();
    c.scs_at(&addr, &["upload", &local, "b.txt"]).assert_ok();
    c.assert_content("b.txt", b"via node 1");
}

#[test]
fn a_five_node_cluster_stores_and_serves_files() {
    let c = Cluster::start(5);
    let s = c.status();
    assert_eq!(s.alive_ids(), [1, 2, 3, 4, 5]);
    assert_eq!((s.leader, s.replicas), (Some(5), 3), "three copies by default");
    let files: Vec<(String, Vec<u8>)> =
        (0..5).map(|i| (format!("five/{i}.bin"), seeded_bytes(50 + i, 10_000 * (i as usize + 1)))).collect();
    for (name, bytes) in &files {
        c.upload_bytes(name, bytes);
    }
    for (name, bytes) in &files {
        c.assert_content(name, bytes);
    }
    assert_eq!(c.ls_json("five").len(), 5);
    c.wait_for("15 copies of the 5 files", Duration::from_secs(10), |s| {
        s.nodes.iter().map(|n| n.files).sum::<u64>() == 15
    });
    let blobs: Vec<usize> = (1..=5).map(|id| c.blob_count(id)).collect();
    assert_eq!(blobs.iter().sum::<usize>(), 15, "three copies of each file: {blobs:?}");
    assert!(blobs.iter().all(|n| *n >= 2), "copies are spread over every node: {blobs:?}");
}

/// `sh -c` with `$SCS` standing for `scs` pointed at cluster `c`.
fn sh(c: &Cluster, script: &str) -> scs_tests::cli::Output {
    let mut scs = vec![scs_tests::cli::shell_quote(&bin("scs").to_string_lossy())];
    scs.extend(c.cluster_flags(c.key_file()).iter().map(|a| scs_tests::cli::shell_quote(&a.to_string_lossy())));
    let script = format!("SCS={}; {script}", scs_tests::cli::shell_quote(&scs.join(" ")));
    run(std::path::Path::new("sh"), &["-c".into(), script.into()], Duration::from_secs(60))
}

#[test]
fn download_writes_into_devices_fifos_and_symlink_targets_as_cp_does() {
    // It used to rename a temp file over whatever was there: as root,
    // `scs download f /dev/null` replaced /dev/null with a plain file.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: making a device node needs root");
        return;
    }
    let c = Cluster::start(1);
    c.upload_bytes("h.txt", b"hello\n");
    let dir = c.scratch_path("dl");
    std::fs::create_dir(&dir).unwrap();
    let out = sh(
        &c,
        &format!(
            "cd {} && mknod null c 1 3 && mkfifo fifo && echo old > target && chmod 640 target && ln -s target link \
             && ln -s nowhere dangling \
             && (timeout 20 cat fifo > from-fifo 2>/dev/null &) && $SCS download h.txt fifo \
             && $SCS download h.txt null && $SCS download h.txt link \
             && for i in $(seq 50); do [ -s from-fifo ] && break; sleep 0.1; done \
             && stat -c '%F %a' null fifo link target",
            dir.display()
        ),
    );
    let types = out.assert_ok().stdout_text();
    assert_eq!(
        types.lines().collect::<Vec<_>>(),
        ["character special file 644", "fifo 644", "symbolic link 777", "regular file 640"],
        "{out}"
    );
    assert_eq!(std::fs::read(dir.join("target")).unwrap(), b"hello\n", "the symlink's target was written");
    assert_eq!(std::fs::read(dir.join("from-fifo")).unwrap(), b"hello\n", "the FIFO's reader got the file");

    // Refused at once, with one line and nothing left behind: a dangling
    // symlink (as cp does), a trailing slash on what is not a directory.
    for (dest, needle) in [
        ("dangling", "not writing through a dangling symlink"),
        ("target/", "not a directory"),
        ("missing/", "not a directory"),
    ] {
        let out = c.scs_os(&["download".into(), "h.txt".into(), dir.join(dest).into()]);
        out.assert_one_line_error(needle);
        assert!(out.elapsed < Duration::from_secs(3), "a local error is not retried: {out}");
    }
    let mut left: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, ["dangling", "fifo", "from-fifo", "link", "null", "target"], "leftovers in {}", dir.display());
}

#[test]
fn upload_reads_pipes_and_stdin_to_their_end() {
    // It went by the size stat gives, 0 for a pipe: the file was stored
    // empty, and the command said it had worked.
    let c = Cluster::start(1);
    let out = sh(
        &c,
        "head -c 3000000 /dev/zero | tr '\\0' x | $SCS upload - piped.txt \
         && $SCS upload /proc/self/status status.txt \
         && d=$(mktemp -d) && mkfifo $d/fifo && (timeout 20 sh -c \"printf 'through a fifo' > $d/fifo\" 2>/dev/null &) \
         && $SCS upload $d/fifo fifo.txt \
         && rm -r $d",
    );
    out.assert_ok();
    c.assert_content("piped.txt", &vec![b'x'; 3_000_000]);
    c.assert_content("fifo.txt", b"through a fifo");
    let (_, status) = c.try_download("status.txt");
    assert!(String::from_utf8_lossy(&status.unwrap()).starts_with("Name:"), "a /proc file was stored whole");

    // stdin needs a name to go by.
    sh(&c, "echo x | $SCS upload -").assert_one_line_error("give the REMOTE name");
}

#[test]
fn output_that_cannot_be_written_is_one_line_of_error_not_a_panic() {
    let c = Cluster::start(1);
    c.upload_bytes("h.txt", b"hello\n");
    c.upload_bytes("gone.txt", b"bye\n");
    c.scs(&["rm", "gone.txt"]).assert_ok();
    for cmd in ["ls", "status", "status --json", "trash ls", "versions h.txt"] {
        let out = sh(&c, &format!("$SCS {cmd} > /dev/full"));
        out.assert_one_line_error("cannot write the output");
    }
}

#[test]
fn the_trash_s_name_at_the_top_is_reserved() {
    // A mount shows the trash as .scs-trash at its top, over anything of
    // that name there: a file made there from the command line could be
    // read through the mount but not removed.
    let c = Cluster::start(1);
    c.try_upload_bytes(".scs-trash", b"x").assert_one_line_error("bad name");
    c.scs(&["mkdir", ".scs-trash"]).assert_one_line_error("bad name");
    c.upload_bytes("f", b"x");
    c.scs(&["mv", "f", ".scs-trash"]).assert_one_line_error("bad name");
    c.scs(&["ln", "-s", "f", ".scs-trash"]).assert_one_line_error("bad name");
    // Anywhere else it is a name like any other.
    c.upload_bytes("d/.scs-trash", b"fine");
    c.assert_content("d/.scs-trash", b"fine");
    assert_eq!(c.ls_names(""), ["d", "f"]);
}

#[test]
fn a_trailing_slash_asks_for_a_directory_as_with_the_shell_s_tools() {
    // `scs mv f nonexist/` used to rename f to nonexist, and `scs rm f/`
    // removed the file f.
    let c = Cluster::start(1);
    c.upload_bytes("f", b"x");
    c.scs(&["mkdir", "d"]).assert_ok();
    c.scs(&["mv", "f", "nonexist/"]).assert_one_line_error("not a directory");
    c.scs(&["rm", "f/"]).assert_one_line_error("not a directory");
    c.scs(&["download", "f/", "-"]).assert_one_line_error("not a directory");
    c.scs(&["ln", "f", "nonexist/"]).assert_one_line_error("not a directory");
    assert_eq!(c.ls_names(""), ["d", "f"]);
    // Into a directory that is there, as mv and ln do.
    c.scs(&["ln", "-s", "../f", "d/"]).assert_ok();
    c.scs(&["mv", "f", "d/g"]).assert_ok();
    c.scs(&["ln", "d/g", "d/"]).assert_one_line_error("exists");
    assert_eq!(c.ls_names("d"), ["d/f", "d/g"]);
    c.assert_content("d/g", b"x");
    c.scs(&["rm", "d/f"]).assert_ok();
    c.scs(&["rm", "d/g"]).assert_ok();
    c.scs(&["rm", "d/"]).assert_ok();
    assert!(c.ls_names("").is_empty());
}

#[test]
fn ls_of_a_symlink_lists_the_link_itself() {
    // It followed the link: a dangling one was "no such file".
    let c = Cluster::start(1);
    c.scs(&["ln", "-s", "nowhere", "dangling"]).assert_ok();
    let out = c.scs(&["ls", "dangling"]);
    assert!(out.assert_ok().stdout_text().trim_end().ends_with("dangling -> nowhere"), "{out}");
    c.scs(&["mkdir", "d"]).assert_ok();
    c.upload_bytes("d/f", b"x");
    c.scs(&["ln", "-s", "d", "to-d"]).assert_ok();
    assert!(c.scs(&["ls", "to-d"]).assert_ok().stdout_text().contains("to-d -> d"));
    // With a trailing slash, where it leads.
    assert!(c.scs(&["ls", "to-d/"]).assert_ok().stdout_text().contains(" f\n"));
}
