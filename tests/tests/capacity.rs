//! `max_files`: a full node is skipped as a holder but still knows every
//! file; a cluster with no room left says "no space" instead of storing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use scs_tests::mount::Mount;
use scs_tests::{eventually, seeded_bytes, Cluster, ClusterBuilder};

fn five_files() -> Vec<(String, Vec<u8>)> {
    (0..5).map(|i| (format!("f{i}.bin"), seeded_bytes(200 + i, 5000 + i as usize))).collect()
}

#[test]
fn a_full_node_is_skipped_as_a_holder_while_the_others_keep_every_file() {
    let c = Cluster::builder(3).max_files(1, 2).start();
    let files = five_files();
    for (name, bytes) in &files {
        c.upload_bytes(name, bytes);
    }
    let s = c.wait_for("nodes 2 and 3 to count all 5 files", Duration::from_secs(10), |s| {
        s.node(2).files == 5 && s.node(3).files == 5
    });
    assert_eq!(s.node(1).max_files, Some(2), "{s:?}");
    assert!(s.node(1).files <= 2, "node 1 is over its limit: {s:?}");
    assert!(c.blob_count(1) <= 2, "node 1 holds {:?}", c.blob_names(1));
    assert_eq!(c.blob_count(2), 5);
    assert_eq!(c.blob_count(3), 5);
    for (name, bytes) in &files {
        c.assert_content(name, bytes);
    }
    assert_eq!(c.ls_json("").len(), 5);

    // Node 2, leading after node 3 dies, knows and serves every file too.
    c.kill(3);
    c.wait_leader(2, Duration::from_secs(10));
    assert_eq!(c.ls_json("").len(), 5);
    for (name, bytes) in &files {
        c.assert_content(name, bytes);
    }
    assert!(c.blob_count(1) <= 2, "node 1 holds {:?}", c.blob_names(1));
}

#[test]
fn a_full_leader_still_lists_every_file_and_sends_readers_to_the_holders() {
    let mut c = Cluster::builder(3).max_files(3, 1).start();
    let files = five_files();
    for (name, bytes) in &files {
        c.upload_bytes(name, bytes);
    }
    assert!(c.blob_count(3) <= 1, "node 3 holds {:?}", c.blob_names(3));
    // Node 3 leads but holds at most one of them: the others come from
    // nodes 1 and 2.
    for (name, bytes) in &files {
        c.assert_content(name, bytes);
    }
    assert_eq!(c.ls_json("").len(), 5);

    // Its index has every entry even without the data: after a restart it
    // leads again and still lists all five.
    c.kill(3);
    c.wait_leader(2, Duration::from_secs(10));
    c.restart(3);
    c.wait_for("node 3 to lead all three", Duration::from_secs(10), |s| s.is_settled(3, &[1, 2, 3]));
    assert_eq!(c.ls_json("").len(), 5);
    c.kill(1);
    for (name, bytes) in &files {
        c.assert_content(name, bytes);
    }
}

#[test]
fn a_cluster_with_every_node_full_refuses_new_files_with_no_space() {
    let c = Cluster::builder(3).max_files(1, 1).max_files(2, 1).max_files(3, 1).start();
    c.upload_bytes("first.txt", b"fits");

    let out = c.try_upload_bytes("second.txt", b"does not fit");
    println!("no space reported after {:.2?}", out.elapsed);
    out.assert_one_line_error("no space");
    assert!(out.elapsed < Duration::from_secs(5), "no space is an answer, not a timeout: {out}");
    c.assert_missing("second.txt");
    assert_eq!(c.ls_names(""), ["first.txt"]);
    c.assert_content("first.txt", b"fits");
    for id in 1..=3 {
        assert_eq!(c.blob_count(id), 1, "node {id}: {:?}", c.blob_names(id));
    }
    // An empty file has no content to keep: it takes no node's room.
    c.upload_bytes("empty.txt", b"");
    c.assert_content("empty.txt", b"");
    c.scs(&["rm", "empty.txt"]).assert_ok();

    // Replacing the one file needs no extra room; deleting it makes room.
    c.upload_bytes("first.txt", b"fits again");
    c.assert_content("first.txt", b"fits again");
    c.scs(&["rm", "first.txt"]).assert_ok();
    c.upload_bytes("second.txt", b"now it fits");
    c.assert_content("second.txt", b"now it fits");
}

/// A small tmpfs as one node's data dir, so that its disk can fill up.
/// Unmounted lazily on drop, even while a node still has files open in it.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// `None` when this process may not mount (not root).
    fn mount(path: &Path, mib: u64) -> Option<SmallDisk> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        std::fs::create_dir_all(path).expect("data dir");
        let size = format!("size={mib}m,mode=0700");
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", &size, "tmpfs"]).arg(path).status().ok()?;
        st.success().then(|| SmallDisk { path: path.to_path_buf() })
    }

    /// Writes a filler file until the disk is full.
    fn fill(&self) {
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k", "status=none"])
            .arg(format!("of={}", self.path.join("filler").display()))
            .status();
        let st = nix_statvfs(&self.path);
        assert!(st < 64 * 1024, "the disk still has {st} bytes free");
    }

    fn free(&self) {
        std::fs::remove_file(self.path.join("filler")).expect("remove the filler");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Bytes free for an unprivileged writer on the file system of `path`.
fn nix_statvfs(path: &Path) -> u64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL");
    // SAFETY: statvfs only writes into the struct we pass.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path, st a valid out pointer.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0, "statvfs");
    st.f_bavail as u64 * st.f_frsize as u64
}

/// A three-node cluster whose node 1 keeps its data on a tmpfs of `mib`
/// MiB; `None` (the test is skipped) when this process may not mount.
fn with_node_1_on_small_disk(mib: u64) -> Option<(Cluster, SmallDisk)> {
    with_node_1_on_small_disk_of(Cluster::builder(3), mib)
}

/// [`with_node_1_on_small_disk`] for the cluster `builder` describes.
fn with_node_1_on_small_disk_of(builder: ClusterBuilder, mib: u64) -> Option<(Cluster, SmallDisk)> {
    let mut c = builder.running(&[2, 3]).start();
    let Some(disk) = SmallDisk::mount(&c.data_dir(1), mib) else {
        println!("SKIPPED: mounting a tmpfs needs root");
        return None;
    };
    c.restart(1);
    c.wait_for("node 1 to join", Duration::from_secs(15), |s| s.is_settled(3, &[1, 2, 3]));
    Some((c, disk))
}

/// Writes `bytes` to a new file at `path` and closes it, as `cp` does:
/// the first error of the writes and the close (where a mount reports a
/// file it could not store; dropping a `File` ignores it).
fn write_and_close(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::fd::IntoRawFd;
    let mut f = std::fs::File::create(path)?;
    let written = f.write_all(bytes);
    let fd = f.into_raw_fd();
    // SAFETY: fd is ours (taken from the File) and closed once, here.
    let closed = unsafe { libc::close(fd) };
    written?;
    if closed != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A three-node cluster with every node's data on a tmpfs of `mib` MiB;
/// `None` (the test is skipped) when this process may not mount.
fn with_every_node_on_small_disks(mib: u64) -> Option<(Cluster, Vec<SmallDisk>)> {
    let mut c = Cluster::start(3);
    let mut disks = Vec::new();
    for id in 1..=3 {
        c.kill(id);
        let Some(disk) = SmallDisk::mount(&c.data_dir(id), mib) else {
            println!("SKIPPED: mounting a tmpfs needs root");
            return None;
        };
        disks.push(disk);
    }
    for id in 1..=3 {
        c.restart(id);
    }
    c.wait_for("node 3 to lead all three on their small disks", Duration::from_secs(15), |s| {
        s.is_settled(3, &[1, 2, 3])
    });
    Some((c, disks))
}

/// A file bigger than the room any disk has left is refused with "no
/// space" (ENOSPC through a mount), as a full cluster's answer: it used to
/// be "cluster unavailable: no leader reachable" after the whole retry
/// window, the holders' refusals lost as dropped connections. A file that
/// fits still goes in afterwards.
#[test]
fn a_file_bigger_than_the_room_left_on_every_disk_is_refused_with_no_space() {
    // The index and the 16 MiB journal take about 17 MiB of each disk.
    let Some((c, disks)) = with_every_node_on_small_disks(48) else { return };
    let big = seeded_bytes(90, 40 << 20);

    // Its size known up front (`scs upload`): refused before a byte moves.
    let out = c.try_upload_bytes("big.bin", &big);
    out.assert_one_line_error("no space");
    assert!(out.elapsed < Duration::from_secs(5), "no space is an answer, not a timeout: {out}");

    // Through a mount, which streams a file as it is written, before its
    // size is known: every holder runs out of room on the way.
    let m = Mount::start(&c);
    let started = Instant::now();
    let err = write_and_close(&m.join("big.bin"), &big).expect_err("a file bigger than every disk was stored");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "no space took {:?}", started.elapsed());
    // What went in before the disks ran out may be kept, as a local disk
    // keeps the part written before ENOSPC: gone with it, the rest fits.
    match std::fs::remove_file(m.join("big.bin")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("rm big.bin: {e}"),
        _ => {}
    }

    let fits = seeded_bytes(91, 2 << 20);
    write_and_close(&m.join("fits.bin"), &fits).expect("a file that fits");
    c.assert_content("fits.bin", &fits);
    c.assert_no_node_died();
    drop(m);
    drop(c);
    drop(disks);
}

/// Copies go where there is room, counting bytes as well as `max_files`:
/// with two copies of each file in a cluster of three, a node whose disk
/// is full is passed over, and every file is at its target on the others.
#[test]
fn copies_go_to_the_nodes_with_room_and_pass_over_a_full_disk() {
    let Some((c, disk)) = with_node_1_on_small_disk_of(Cluster::builder(3).replicas(2), 48) else { return };
    disk.fill();
    // The leader hears of node 1's disk in its heartbeats, once a second.
    c.wait_for("node 1 to report its disk full", Duration::from_secs(10), |s| s.node(1).disk_free < (1 << 20));
    let files = five_files();
    for (name, bytes) in &files {
        c.upload_bytes(name, bytes);
    }
    c.wait_for("every file at its 2 copies", Duration::from_secs(10), |s| {
        s.under_replicated == 0 && s.node(2).files == 5 && s.node(3).files == 5
    });
    assert_eq!(c.blob_count(1), 0, "a node with a full disk was given copies");
    for (name, bytes) in &files {
        c.assert_content(name, bytes);
    }
    drop(c);
    drop(disk);
}

#[test]
fn a_node_whose_disk_fills_up_keeps_the_cluster_serving_and_catches_up_once_space_returns() {
    let Some((mut c, disk)) = with_node_1_on_small_disk(48) else { return };
    let before = seeded_bytes(31, 300_000);
    c.upload_bytes("before.bin", &before);
    eventually("node 1 to hold before.bin", Duration::from_secs(10), || c.blob_count(1) == 1);

    disk.fill();
    // The other two holders make every upload durable on a majority.
    let during: Vec<(String, Vec<u8>)> =
        (0..4).map(|i| (format!("during-{i}.bin"), seeded_bytes(40 + i, 200_000 + i as usize))).collect();
    for (name, bytes) in &during {
        c.upload_bytes(name, bytes);
    }
    c.scs(&["rm", "before.bin"]).assert_ok();
    for (name, bytes) in &during {
        c.assert_content(name, bytes);
    }
    c.assert_missing("before.bin");
    c.assert_no_node_died();
    assert!(c.status().node(1).alive, "node 1 stopped answering with a full disk");

    // Room again: node 1 takes the files it missed and drops the deleted one,
    // without a restart.
    disk.free();
    eventually("node 1 to hold exactly the live files", Duration::from_secs(40), || c.blob_count(1) == during.len());
    let tmp: Vec<_> = std::fs::read_dir(c.data_dir(1).join("tmp")).expect("tmp dir").collect();
    assert!(tmp.is_empty(), "half-written files left on node 1: {tmp:?}");
    c.kill(2);
    c.kill(3);
    c.restart(2);
    c.wait_for("nodes 1 and 2 to lead without 3", Duration::from_secs(15), |s| s.is_settled(2, &[1, 2]));
    for (name, bytes) in &during {
        c.assert_content(name, bytes);
    }
    drop(c);
    drop(disk);
}

/// Old versions a node keeps for a while (in case the same content is
/// stored again) give way to the files it must hold: a node whose disk
/// they fill still takes every new version and every new file. (With the
/// trash off: with it on, they are the file's earlier versions, kept.)
#[test]
fn old_versions_kept_for_reuse_make_room_for_new_files() {
    // The index and the 16 MiB journal take about 17 MiB of it.
    let trash_off = Cluster::builder(3).config("trash_hours = 0\n");
    let Some((c, disk)) = with_node_1_on_small_disk_of(trash_off, 40) else { return };
    const MIB: usize = 1 << 20;
    let mut last = Vec::new();
    for v in 0..6 {
        last = seeded_bytes(60 + v, 4 * MIB);
        c.upload_bytes("f.bin", &last);
    }
    let g = seeded_bytes(70, 4 * MIB);
    c.upload_bytes("g.bin", &g);
    eventually("node 1 to hold the newest f.bin and g.bin", Duration::from_secs(30), || c.blob_count(1) == 2);
    c.assert_content("f.bin", &last);
    c.assert_content("g.bin", &g);
    assert!(nix_statvfs(&c.data_dir(1)) > 0, "node 1's disk is full");
    c.assert_no_node_died();
    drop(c);
    drop(disk);
}

/// The content each `mv src-i dst-i` pair starts with.
fn pair_content(i: usize) -> (Vec<u8>, Vec<u8>) {
    (seeded_bytes(500 + i as u64, 3000 + i), seeded_bytes(600 + i as u64, 2000 + i))
}

/// What a reader sees of one pair: `dst-i`'s content, named, and whether
/// `src-i` is still there.
fn pair_state(c: &Cluster, i: usize) -> (&'static str, bool) {
    let (src, dst) = pair_content(i);
    let seen = match c.try_download(&format!("dst-{i}")).1 {
        None => "missing",
        Some(b) if b == src => "the moved content",
        Some(b) if b == dst => "its own content",
        Some(_) => "other content",
    };
    (seen, c.try_download(&format!("src-{i}")).1.is_some())
}

#[test]
fn a_leader_whose_disk_fills_up_gives_no_answer_a_failover_takes_back() {
    let mut c = Cluster::builder(3).running(&[1, 2]).start();
    let Some(disk) = SmallDisk::mount(&c.data_dir(3), 48) else {
        println!("SKIPPED: mounting a tmpfs needs root");
        return;
    };
    c.restart(3);
    c.wait_leader(3, Duration::from_secs(20));
    const PAIRS: usize = 4;
    for i in 0..PAIRS {
        let (src, dst) = pair_content(i);
        c.upload_bytes(&format!("src-{i}"), &src);
        c.upload_bytes(&format!("dst-{i}"), &dst);
    }

    disk.fill();
    // The index has room inside its file for a while: grow it until a
    // commit on the leader fails.
    let pad = "p".repeat(200);
    let grown = (0..400).position(|k| !c.scs(&["mkdir", &format!("{pad}-{k}")]).success());
    println!("the leader's index stopped growing after {grown:?} directories");
    // Each rename replaces a file. The replaced content is never lost
    // without the moved one taking its place, whatever the answer was.
    let moved: Vec<bool> =
        (0..PAIRS).map(|i| c.scs(&["mv", &format!("src-{i}"), &format!("dst-{i}")]).success()).collect();
    println!("mv answers with the leader's disk full: {moved:?}");
    disk.free();
    c.wait_for("a leader with quorum", Duration::from_secs(20), |s| s.leader.is_some() && s.quorum);
    let seen: Vec<_> = (0..PAIRS).map(|i| pair_state(&c, i)).collect();
    for (i, (state, ok)) in seen.iter().zip(&moved).enumerate() {
        let landed = *state == ("the moved content", false);
        let kept = *state == ("its own content", true);
        assert!(
            landed || (!ok && kept),
            "pair {i}: mv answered ok={ok}, then dst-{i} holds {}, src-{i} there: {}",
            state.0,
            state.1
        );
    }

    // What readers saw stays so when another node takes over: a change
    // the old leader answered with an error does not land late.
    c.kill(3);
    c.wait_leader(2, Duration::from_secs(20));
    for (i, before) in seen.iter().enumerate() {
        assert_eq!(&pair_state(&c, i), before, "pair {i} changed when node 2 took over");
    }
    c.assert_no_node_died();
    drop(c);
    drop(disk);
}
