//! Several clients at once: parallel uploads all land, racing overwrites of
//! one name end with one whole content, and replaced versions do not pile
//! up on disk.

use std::time::Duration;

use scs_tests::{eventually, seeded_bytes, Cluster};

#[test]
fn parallel_uploads_of_different_names_all_land_intact() {
    let c = Cluster::start(3);
    let files: Vec<(String, Vec<u8>)> =
        (0..10).map(|i| (format!("par/{i}.bin"), seeded_bytes(600 + i, 300_000 + i as usize))).collect();
    std::thread::scope(|s| {
        let uploads: Vec<_> = files.iter().map(|(name, bytes)| s.spawn(|| c.try_upload_bytes(name, bytes))).collect();
        for u in uploads {
            u.join().expect("upload thread").assert_ok();
        }
    });
    for (name, bytes) in &files {
        c.assert_content(name, bytes);
    }
    assert_eq!(c.ls_json("par").len(), 10);
    c.wait_for("every node to count 10 files", Duration::from_secs(10), |s| s.nodes.iter().all(|n| n.files == 10));
}

/// With the trash off (with it on, what an overwrite replaces is kept as
/// an earlier version: see the versions tests).
#[test]
fn an_overwritten_file_leaves_only_its_new_version_on_disk() {
    let c = Cluster::builder(3).config("trash_hours = 0\n").start();
    for round in 0..3 {
        c.upload_bytes("same.bin", &seeded_bytes(700 + round, 50_000));
    }
    c.assert_content("same.bin", &seeded_bytes(702, 50_000));
    for id in 1..=3 {
        eventually(&format!("node {id} to keep one blob"), Duration::from_secs(10), || c.blob_count(id) == 1);
    }
}

#[test]
fn racing_overwrites_of_one_name_end_with_one_whole_content() {
    let c = Cluster::start(3);
    let contents: Vec<Vec<u8>> = (0..4).map(|i| seeded_bytes(800 + i, 300_000)).collect();
    std::thread::scope(|s| {
        let uploads: Vec<_> = contents.iter().map(|bytes| s.spawn(|| c.try_upload_bytes("race.bin", bytes))).collect();
        for u in uploads {
            u.join().expect("upload thread").assert_ok();
        }
    });
    let got = c.download_bytes("race.bin");
    assert!(contents.contains(&got), "race.bin is none of the uploaded contents ({} bytes)", got.len());
    assert_eq!(c.ls_json("").len(), 1);
}

#[test]
fn racing_overwrites_of_one_name_leave_one_blob_per_node() {
    // With the trash on, the files the winner replaced are kept there (see
    // trash.rs): off, nothing of them may be left behind.
    let c = Cluster::builder(3).config("trash_hours = 0\n").start();
    let contents: Vec<Vec<u8>> = (0..4).map(|i| seeded_bytes(900 + i, 300_000)).collect();
    std::thread::scope(|s| {
        let uploads: Vec<_> = contents.iter().map(|bytes| s.spawn(|| c.try_upload_bytes("race.bin", bytes))).collect();
        for u in uploads {
            u.join().expect("upload thread").assert_ok();
        }
    });
    for id in 1..=3 {
        eventually(&format!("node {id} to keep one blob of race.bin"), Duration::from_secs(10), || {
            c.blob_count(id) == 1
        });
    }
}

/// Many clients at once: their changes share the leader's commit rounds,
/// and each acknowledged one is on a majority, so all of them outlive the
/// leader, in the directories and under the names they were given.
#[test]
fn concurrent_changes_from_many_clients_all_outlive_the_leader() {
    let c = Cluster::start(3);
    let (clients, each) = (12u64, 6u64);
    let bytes = |i: u64, j: u64| seeded_bytes(1000 + i * 100 + j, 700 + j as usize);
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..clients)
            .map(|i| {
                let c = &c;
                s.spawn(move || {
                    for j in 0..each {
                        c.try_upload_bytes(&format!("w{i}/f{j}"), &bytes(i, j)).assert_ok();
                    }
                    c.scs(&["mv", &format!("w{i}/f0"), &format!("w{i}/moved")]).assert_ok();
                })
            })
            .collect();
        for w in writers {
            w.join().expect("client thread");
        }
    });
    let leader = c.status().leader.expect("a leader");
    c.kill(leader);
    c.wait_for("another node to lead with quorum", Duration::from_secs(15), |s| {
        s.quorum && s.leader.is_some_and(|l| l != leader)
    });
    for i in 0..clients {
        c.assert_content(&format!("w{i}/moved"), &bytes(i, 0));
        c.assert_missing(&format!("w{i}/f0"));
        for j in 1..each {
            c.assert_content(&format!("w{i}/f{j}"), &bytes(i, j));
        }
        assert_eq!(c.ls_json(&format!("w{i}")).len(), each as usize, "w{i} after the failover");
    }
}
