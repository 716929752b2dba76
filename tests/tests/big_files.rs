//! Files much larger than a frame: streamed through the leader to every
//! node and back, identical to the byte.

use std::time::{Duration, Instant};

use scs_tests::{sha256_hex, write_seeded_file, Cluster};

const MIB: u64 = 1024 * 1024;

#[test]
fn a_100_mib_file_uploads_and_downloads_identical_and_every_node_keeps_a_copy() {
    let c = Cluster::start(3);
    let size = 100 * MIB;
    let local = c.scratch_path("big.bin");
    let want = write_seeded_file(&local, 100, size);

    let start = Instant::now();
    c.scs_os(&["upload".into(), local.clone().into(), "big/100MiB.bin".into()]).assert_ok();
    let up = start.elapsed();
    std::fs::remove_file(&local).unwrap();

    let back = c.scratch_path("back.bin");
    let start = Instant::now();
    c.scs_os(&["download".into(), "big/100MiB.bin".into(), back.clone().into()]).assert_ok();
    let down = start.elapsed();
    println!(
        "100 MiB: upload {up:.2?} ({:.0} MiB/s), download {down:.2?} ({:.0} MiB/s)",
        100.0 / up.as_secs_f64(),
        100.0 / down.as_secs_f64()
    );
    assert_eq!(std::fs::metadata(&back).unwrap().len(), size);
    assert_eq!(sha256_hex(&back), want, "the downloaded file differs");
    std::fs::remove_file(&back).unwrap();

    let listed = c.ls_json("big");
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].name.as_str(), listed[0].size), ("big/100MiB.bin", size));

    // Replicas = cluster size: all three hold it, in the status and on disk.
    c.wait_for("every node to count the file", Duration::from_secs(20), |s| s.nodes.iter().all(|n| n.files == 1));
    for id in 1..=3 {
        let blobs = c.blob_names(id);
        assert_eq!(blobs.len(), 1, "node {id}: {blobs:?}");
        let key = &blobs[0][..64];
        let path = c.data_dir(id).join("blobs").join(&key[..2]).join(&blobs[0]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size, "node {id}");
    }
}
