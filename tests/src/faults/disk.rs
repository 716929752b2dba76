//! After the heal: is every file back at its replica target, with the same
//! version and the right bytes on every node, and nothing else kept? With
//! `replicas` = cluster size every node holds every live file, so equal blob
//! sets on every disk are the nodes' indexes agreeing on each live key.
//! Files of at most `INLINE_MAX` bytes keep their content in the index, not
//! in a blob: for them only the counts in the status and the reads speak,
//! and a blob of one is left over.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::action::Seen;
use super::cluster::{brief_status, NsCluster};
use super::workload::hex;
use crate::data::key_hex;
use crate::report::Status;

/// Hashes of blob files already read: (path, length, mtime) → sha256.
#[derive(Default)]
pub struct HashCache(HashMap<(PathBuf, u64, Option<SystemTime>), String>);

impl HashCache {
    fn sha(&mut self, path: &PathBuf) -> Option<String> {
        let meta = std::fs::metadata(path).ok()?;
        let id = (path.clone(), meta.len(), meta.modified().ok());
        if let Some(h) = self.0.get(&id) {
            return Some(h.clone());
        }
        let h = hex(&Sha256::digest(std::fs::read(path).ok()?));
        self.0.insert(id, h.clone());
        Some(h)
    }
}

/// What keeps the disks from matching: a missing, extra or wrong copy of a
/// live file, or a node's status off ([`Problem::Replicas`]); or a blob of a
/// name that is gone, or of no name at all, left on a disk ([`Problem::Stray`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    Replicas(String),
    Stray(String),
}

/// Everything that keeps the disks from matching `expected` (name → final
/// state); empty when every node agrees.
pub fn problems(c: &NsCluster, expected: &BTreeMap<String, Seen>, cache: &mut HashCache) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut stray = Vec::new();
    // Blobs are named by inode: the live names' inodes, from the cluster.
    let inos = match inos(c, expected) {
        Ok(i) => i,
        Err(e) => return vec![Problem::Replicas(e)],
    };
    let mut keys: BTreeMap<String, &String> = inos.iter().map(|(n, (i, _))| (key_hex(*i), n)).collect();
    // Removed files, and the content overwrites replaced, stay in the
    // trash until it expires: kept, not stray, and counted in every node's
    // files.
    let trashed = match trashed_files(c) {
        Ok(t) => t,
        Err(e) => return vec![Problem::Replicas(e)],
    };
    let in_trash = String::from("(in the trash)");
    keys.extend(trashed.iter().map(|ino| (key_hex(*ino), &in_trash)));
    // Files, not names: hard links are names of one file.
    let live = expected
        .iter()
        .filter(|(_, s)| matches!(s, Seen::Present(_)))
        .filter_map(|(n, _)| inos.get(n).map(|(i, _)| i))
        .collect::<BTreeSet<_>>()
        .len() as u64;
    match c.status() {
        None => out.push("no status answered".into()),
        Some(s) => status_problems(&s, c.size(), live + trashed.len() as u64, &mut out),
    }
    // name → (node, version) of every copy, to compare versions.
    let mut versions: BTreeMap<&String, BTreeSet<(u64, u64)>> = BTreeMap::new();
    let mut disks = Vec::new();
    for id in 1..=c.size() {
        let mut by_key: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for b in c.blobs(id) {
            by_key.entry(b.key.clone()).or_default().push(b);
        }
        disks.push((id, by_key));
    }
    // A small file is stored in the index, unless a member was unknown to
    // the leader when it went up (it may have a max_files): then in blobs,
    // as a big one. Some good copy on some disk tells which.
    let small_in_blobs: BTreeSet<&String> = expected
        .iter()
        .filter_map(|(name, state)| match (state, inos.get(name)) {
            (Seen::Present(want), Some((ino, size))) if *size <= scs_common::inode::INLINE_MAX => {
                let key = key_hex(*ino);
                let mut copies = disks.iter().filter_map(|(_, d)| d.get(&key)).flatten();
                copies.any(|b| cache.sha(&b.path).as_ref() == Some(want)).then_some(name)
            }
            _ => None,
        })
        .collect();
    for (id, by_key) in &disks {
        let id = *id;
        for (key, blobs) in by_key {
            if !keys.contains_key(key) {
                stray.push(format!(
                    "node {id} keeps {} blob(s) of key {}… that no name of the run has",
                    blobs.len(),
                    &key[..12]
                ));
            }
        }
        for (name, state) in expected {
            match state {
                // A gone file's blobs are kept by no live inode: the stray
                // check above finds them.
                Seen::Absent => {}
                Seen::Present(want) => {
                    let Some((ino, size)) = inos.get(name) else {
                        out.push(format!("{name} is not listed by the cluster"));
                        continue;
                    };
                    let copies = by_key.get(&key_hex(*ino)).map(Vec::as_slice).unwrap_or_default();
                    if *size <= scs_common::inode::INLINE_MAX && !small_in_blobs.contains(name) {
                        if !copies.is_empty() {
                            stray.push(format!(
                                "node {id} keeps {} blob(s) of {name}, whose {size} bytes are in the index",
                                copies.len()
                            ));
                        }
                        continue;
                    }
                    // The current copy: the newest with the right bytes;
                    // any other copy of the key is left over.
                    let mut good: Vec<_> =
                        copies.iter().filter(|b| cache.sha(&b.path).as_ref() == Some(want)).collect();
                    good.sort_by_key(|b| (b.term, b.seq));
                    let Some(current) = good.last() else {
                        let versions: Vec<String> = copies.iter().map(|b| format!("v{}.{}", b.term, b.seq)).collect();
                        out.push(format!(
                            "node {id} has no good copy of {name} (want {}; has {})",
                            &want[..12],
                            if versions.is_empty() { "none".to_string() } else { versions.join(" ") }
                        ));
                        continue;
                    };
                    versions.entry(name).or_default().insert((current.term, current.seq));
                    let old: Vec<String> = copies
                        .iter()
                        .filter(|b| (b.term, b.seq) != (current.term, current.seq))
                        .map(|b| format!("v{}.{}", b.term, b.seq))
                        .collect();
                    if !old.is_empty() {
                        stray.push(format!(
                            "node {id} keeps {} of {name} beside its current v{}.{}",
                            old.join(" "),
                            current.term,
                            current.seq
                        ));
                    }
                }
            }
        }
    }
    for (name, v) in versions.into_iter().filter(|(_, v)| v.len() > 1) {
        out.push(format!("the nodes keep {name} at different versions: {v:?}"));
    }
    let mut all: Vec<Problem> = out.into_iter().map(Problem::Replicas).collect();
    all.extend(stray.into_iter().map(Problem::Stray));
    all
}

/// The inode number and size of every live name, from `scs ls DIR --json`
/// of the directories the names are in.
fn inos(c: &NsCluster, expected: &BTreeMap<String, Seen>) -> Result<BTreeMap<String, (u64, u64)>, String> {
    let dirs: BTreeSet<&str> = expected.keys().filter_map(|n| n.rsplit_once('/').map(|(d, _)| d)).collect();
    let mut out = BTreeMap::new();
    for dir in dirs {
        let args: Vec<std::ffi::OsString> = vec!["ls".into(), dir.into(), "--json".into()];
        let ran = c.scs(&args, super::workload::OP_DEADLINE);
        if !ran.ok() {
            if super::workload::is_missing(&ran, dir) {
                continue;
            }
            return Err(format!("ls {dir}: {}", ran.error_line()));
        }
        let listed: Vec<crate::report::LsEntry> = serde_json::from_slice(&ran.stdout)
            .map_err(|e| format!("ls {dir} --json is not the documented JSON: {e}"))?;
        for e in listed.into_iter().filter(|e| e.kind == "file") {
            if let Some(ino) = e.ino {
                out.insert(e.name, (ino, e.size));
            }
        }
    }
    Ok(out)
}

/// The inode numbers of the files in the trash, earlier versions of files
/// included, from `scs trash ls --all --versions --json`.
fn trashed_files(c: &NsCluster) -> Result<BTreeSet<u64>, String> {
    #[derive(serde::Deserialize)]
    struct Item {
        kind: String,
        ino: u64,
    }
    let args: Vec<std::ffi::OsString> =
        vec!["trash".into(), "ls".into(), "--all".into(), "--versions".into(), "--json".into()];
    let ran = c.scs(&args, super::workload::OP_DEADLINE);
    if !ran.ok() {
        return Err(format!("trash ls: {}", ran.error_line()));
    }
    let items: Vec<Item> = serde_json::from_slice(&ran.stdout)
        .map_err(|e| format!("trash ls --all --json is not the documented JSON: {e}"))?;
    Ok(items.into_iter().filter(|i| i.kind == "file").map(|i| i.ino).collect())
}

fn status_problems(s: &Status, size: u32, live: u64, out: &mut Vec<String>) {
    let all: Vec<u32> = (1..=size).collect();
    if s.leader.is_none() || !s.quorum || s.alive_ids() != all {
        out.push(format!("not one leader with quorum over all nodes: {}", brief_status(s)));
    }
    if s.under_replicated != 0 {
        out.push(format!("{} file(s) below the replica target: {}", s.under_replicated, brief_status(s)));
    }
    for n in &s.nodes {
        if n.files != live || n.wanted != 0 {
            out.push(format!("node {} holds {} files and wants {} more; {live} are live", n.id, n.files, n.wanted));
        }
    }
}
