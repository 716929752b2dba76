use super::*;
use sha2::{Digest, Sha256};

fn v(term: u64, seq: u64) -> Version {
    Version::new(Term(term), seq)
}

/// Inode `ino` as a file with `content` at content version `version`
/// (the record's version too), kept by `holders`.
fn file(ino: u64, version: Version, content: &[u8], holders: &[u32]) -> Inode {
    let mut i = Inode::new(Ino(ino), Kind::File, 0o644, 1000, 1000, 1);
    i.version = version;
    i.content = version;
    i.size = content.len() as u64;
    i.hash = ContentHash(Sha256::digest(content).into());
    i.holders = holders.iter().map(|&i| NodeId(i)).collect();
    i
}

fn dir(ino: u64, version: Version) -> Inode {
    let mut i = Inode::new(Ino(ino), Kind::Dir, 0o755, 1000, 1000, 1);
    i.version = version;
    i
}

fn entry(parent: u64, name: &str, child: &Inode, version: Version) -> Record {
    Record::Dentry(Dentry {
        parent: Ino(parent),
        name: name.into(),
        version,
        child: child.ino,
        kind: child.kind,
        deleted: false,
        stamp_ns: 1,
    })
}

fn gone(parent: u64, name: &str, version: Version) -> Record {
    Record::Dentry(Dentry {
        parent: Ino(parent),
        name: name.into(),
        version,
        child: Ino::NONE,
        kind: Kind::File,
        deleted: true,
        stamp_ns: 5,
    })
}

fn r(i: &Inode) -> Record {
    Record::Inode(i.clone())
}

/// Writes the blob of `i`, as a holder receiving it does, committing nothing.
fn land(store: &Store, i: &Inode, content: &[u8]) {
    let mut w = store.new_blob(i.ino, i.content, Some(content.len() as u64)).unwrap();
    w.write(content).unwrap();
    w.finish(Some(i.hash)).unwrap();
}

/// Writes the blob and commits the inode, as a holder does on upload.
fn put(store: &Store, i: &Inode, content: &[u8]) -> Applied {
    land(store, i, content);
    store.apply(&[r(i)], &[(i.key(), i.content)]).unwrap()
}

fn read_all(store: &Store, i: &Inode) -> Vec<u8> {
    let mut rd = store.read_blob(i.ino, i.content, 0, i.size).unwrap();
    let mut out = Vec::new();
    loop {
        let c = rd.next_chunk(7).unwrap();
        if c.is_empty() {
            break;
        }
        out.extend(c);
    }
    assert_eq!(ContentHash(Sha256::digest(&out).into()), i.hash);
    out
}

fn open(dir: &Path) -> Store {
    Store::open(dir, NodeId(1), None).unwrap().0
}

fn blob_files(dir: &Path) -> usize {
    walk(&dir.join("blobs"))
}

fn walk(p: &Path) -> usize {
    fs::read_dir(p).unwrap().map(|e| e.unwrap().path()).map(|p| if p.is_dir() { walk(&p) } else { 1 }).sum()
}

#[test]
fn a_committed_file_survives_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let f = file(7, v(1, 1), b"meow", &[1, 2]);
    {
        let s = open(tmp.path());
        assert_eq!(put(&s, &f, b"meow"), Applied { applied: 1, stale: 0, wanted: 0 });
        s.apply(&[entry(1, "cat.png", &f, v(1, 2))], &[]).unwrap();
    }
    let (s, report) = Store::open(tmp.path(), NodeId(1), None).unwrap();
    assert_eq!(report, OpenReport { blobs_held: 1, ..Default::default() });
    assert_eq!(s.inode(Ino(7)).unwrap(), Some(f.clone()));
    assert_eq!(s.dentry(Ino(1), "cat.png").unwrap().unwrap().child, Ino(7));
    assert_eq!(read_all(&s, &f), b"meow");
    assert_eq!(s.files(), 1);
}

#[test]
fn an_older_version_never_replaces_a_newer_one() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let new = file(7, v(2, 1), b"new", &[1]);
    let old = file(7, v(1, 9), b"old", &[1]);
    put(&s, &new, b"new");
    assert_eq!(put(&s, &old, b"old").stale, 1);
    assert_eq!(read_all(&s, &new), b"new");
    assert_eq!(blob_files(tmp.path()), 1, "the stale blob was removed");
    assert_eq!(s.apply(&[r(&new)], &[]).unwrap().stale, 1, "re-applying is a no-op");
}

#[test]
fn records_held_already_are_left_out_of_a_pull_but_newer_ones_and_stale_blob_inodes_stay() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let (small, blob) = (inline_file(5, v(1, 2), b"abc"), file(6, v(1, 3), b"blob", &[1]));
    let d = dir(2, v(1, 1));
    s.apply(&[r(&d), r(&small), entry(2, "a", &small, v(1, 4))], &[]).unwrap();
    put(&s, &blob, b"blob");
    let mut newer = small.clone();
    newer.version = v(1, 9);
    newer.mode = 0o600;
    let pulled =
        vec![r(&d), r(&small), entry(2, "a", &small, v(1, 4)), r(&blob), r(&newer), entry(2, "b", &small, v(1, 8))];
    let kept: Vec<(Key, Version)> = s.not_held(pulled).unwrap().iter().map(|r| (r.key(), r.version())).collect();
    assert_eq!(
        kept,
        vec![(blob.key(), v(1, 3)), (newer.key(), v(1, 9)), (entry(2, "b", &small, v(1, 8)).key(), v(1, 8))],
        "the directory, the small file and its entry are held at those versions"
    );
    assert!(s.not_held(vec![r(&d), r(&small)]).unwrap().is_empty());
}

#[test]
fn new_content_replaces_the_blob_and_a_metadata_change_keeps_it() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    put(&s, &file(7, v(1, 1), b"one", &[1]), b"one");
    let two = file(7, v(1, 2), b"two!", &[1]);
    put(&s, &two, b"two!");
    assert_eq!(read_all(&s, &two), b"two!");
    assert_eq!(blob_files(tmp.path()), 1);
    // chmod: a new record version, the same content version.
    let chmod = Inode { mode: 0o600, version: v(1, 3), ..two.clone() };
    assert_eq!(s.apply(&[r(&chmod)], &[]).unwrap(), Applied { applied: 1, stale: 0, wanted: 0 });
    assert_eq!(read_all(&s, &chmod), b"two!");
    assert_eq!((blob_files(tmp.path()), s.files()), (1, 1));
}

#[test]
fn a_tombstone_removes_the_blob_and_entries_go_with_theirs() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let d = dir(5, v(1, 1));
    let f = file(7, v(1, 2), b"x", &[1]);
    s.apply(&[r(&d), entry(1, "d", &d, v(1, 3))], &[]).unwrap();
    put(&s, &f, b"x");
    s.apply(&[entry(5, "a", &f, v(1, 4))], &[]).unwrap();
    assert!(s.has_children(Ino(5)).unwrap());
    let t = Inode { version: v(1, 6), ..f.tombstone(5) };
    s.apply(&[gone(5, "a", v(1, 5)), r(&t)], &[]).unwrap();
    assert!(s.dentry(Ino(5), "a").unwrap().is_none());
    assert!(!s.has_children(Ino(5)).unwrap());
    assert!(s.inode(Ino(7)).unwrap().is_none());
    assert!(s.inode_record(Ino(7)).unwrap().unwrap().deleted, "the tombstone is kept");
    assert_eq!((blob_files(tmp.path()), s.files()), (0, 0));
    // The delayed upload of the old version cannot bring it back.
    assert_eq!(s.apply(&[r(&f)], &[]).unwrap().stale, 1);
    assert!(s.inode(Ino(7)).unwrap().is_none());
}

#[test]
fn a_file_we_should_hold_but_lack_is_wanted() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let mine = file(7, v(1, 1), b"m", &[1, 2]);
    let theirs = file(8, v(1, 2), b"t", &[2, 3]);
    assert_eq!(s.apply(&[r(&mine), r(&theirs)], &[]).unwrap().wanted, 1);
    assert_eq!(s.wanted(10).unwrap(), vec![mine.clone()]);
    put(&s, &mine, b"m");
    assert!(s.wanted(10).unwrap().is_empty());
    assert_eq!(s.files(), 1);
}

#[test]
fn listings_follow_entries_and_directories_count_their_subdirectories() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let (a, b, f) = (dir(2, v(1, 1)), dir(3, v(1, 2)), file(4, v(1, 3), b"", &[]));
    let root = {
        let mut root = new_root(0);
        root.version = v(1, 0);
        root
    };
    s.apply(
        &[
            r(&root),
            r(&a),
            r(&b),
            r(&f),
            entry(1, "b", &b, v(1, 4)),
            entry(1, "a", &a, v(1, 5)),
            entry(1, "f", &f, v(1, 6)),
        ],
        &[],
    )
    .unwrap();
    let names: Vec<String> = s.read_dir(Ino(1)).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["a", "b", "f"]);
    assert_eq!(s.inode(Ino(1)).unwrap().unwrap().nlink, 4, "two subdirectories");
    assert!(s.read_dir(Ino(2)).unwrap().is_empty());
    // Moving b into a: the counts follow the entries.
    s.apply(&[gone(1, "b", v(1, 7)), entry(2, "b", &b, v(1, 8))], &[]).unwrap();
    assert_eq!(s.inode(Ino(1)).unwrap().unwrap().nlink, 3);
    assert_eq!(s.inode(Ino(2)).unwrap().unwrap().nlink, 3);
    assert!(s.has_children(Ino(2)).unwrap() && !s.has_children(Ino(3)).unwrap());
    // A name pointing elsewhere: a file replaced by a directory there.
    s.apply(&[entry(1, "f", &b, v(1, 9))], &[]).unwrap();
    assert_eq!(s.inode(Ino(1)).unwrap().unwrap().nlink, 4);
    assert_eq!(namespace_path(&s, "a/b").unwrap().ino, Ino(3));
}

fn namespace_path(s: &Store, path: &str) -> Option<Inode> {
    scs_common::namespace::resolve(s, path, false).unwrap()
}

#[test]
fn since_returns_newer_records_in_version_order() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    s.apply(&[r(&file(2, v(2, 1), b"", &[])), r(&file(1, v(1, 5), b"", &[])), r(&file(3, v(2, 7), b"", &[]))], &[])
        .unwrap();
    let inos = |since, limit| {
        s.since(since, limit).unwrap().into_iter().map(|r| r.as_inode().unwrap().ino.0).collect::<Vec<_>>()
    };
    assert_eq!(inos(Version::ZERO, 10), vec![1, 2, 3]);
    assert_eq!(inos(v(1, 5), 10), vec![2, 3]);
    assert_eq!(inos(v(1, 6), 1), vec![2]);
    assert_eq!(s.max_version().unwrap(), v(2, 7));
    // A newer version of inode 1 moves it to the end.
    s.apply(&[r(&file(1, v(3, 1), b"", &[]))], &[]).unwrap();
    assert_eq!(inos(Version::ZERO, 10), vec![2, 3, 1]);
}

#[test]
fn pages_of_records_sharing_a_version_lose_none() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let records: Vec<Record> = (10..20).map(|n| r(&file(n, v(1, 1), b"", &[]))).collect();
    s.apply(&records, &[]).unwrap();
    let mut cursor = (Version::ZERO, Key([0xff; 32]));
    let mut seen = 0;
    for _ in 0..20 {
        let page = s.after(cursor, 3).unwrap();
        let Some(last) = page.last() else { break };
        cursor = (last.version(), last.key());
        seen += page.len();
    }
    assert_eq!(seen, 10);
}

#[test]
fn reopening_cleans_temp_files_orphans_and_notices_missing_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let kept = file(7, v(1, 1), b"k", &[1]);
    let lost = file(8, v(1, 2), b"l", &[1]);
    let orphan = file(9, v(1, 4), b"o", &[1]);
    {
        let s = open(tmp.path());
        put(&s, &kept, b"k");
        put(&s, &lost, b"l");
        // A crash mid-upload leaves a temp file, and one after the rename but
        // before the commit leaves an orphan blob.
        let mut w = s.new_blob(Ino(10), v(1, 3), Some(10)).unwrap();
        w.write(b"12345").unwrap();
        std::mem::forget(w);
        let mut w = s.new_blob(orphan.ino, orphan.content, Some(1)).unwrap();
        w.write(b"o").unwrap();
        w.finish(None).unwrap();
    }
    fs::remove_file(Layout::new(tmp.path()).blob(&lost.key(), lost.content)).unwrap();
    let (s, report) = Store::open(tmp.path(), NodeId(1), None).unwrap();
    // A blob without its inode may be an acknowledged replica whose Apply
    // is still on its way: it is kept, and the inode finds it when it comes.
    assert_eq!(
        report,
        OpenReport { temp_files_removed: 1, orphan_blobs_removed: 0, blobs_missing: 1, blobs_held: 1, upgraded: 0 }
    );
    assert_eq!(s.wanted(10).unwrap(), vec![lost]);
    assert_eq!(read_all(&s, &kept), b"k");
    assert_eq!(s.apply(&[r(&orphan)], &[]).unwrap(), Applied { applied: 1, stale: 0, wanted: 0 });
    assert_eq!(read_all(&s, &orphan), b"o");
}

#[test]
fn a_released_copy_is_placed_again_only_when_it_checks_out() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let a = file(7, v(1, 1), b"content", &[1, 2]);
    put(&s, &a, b"content");
    s.apply(&[r(&Inode { version: v(1, 2), ..a.tombstone(9) })], &[]).unwrap();
    // The same content stored again as another file, which this node wants.
    let b = file(8, v(1, 3), b"content", &[1, 2]);
    s.apply(&[r(&b)], &[]).unwrap();
    assert!(!s.holds(&b.key(), b.content).unwrap());
    assert!(s.place_from_local(&b).unwrap(), "the released copy serves");
    assert_eq!(read_all(&s, &b), b"content");
    // A copy that rotted on disk before it was released is never placed.
    let c = file(9, v(1, 4), b"other", &[1]);
    put(&s, &c, b"other");
    std::fs::write(Layout::new(tmp.path()).blob(&c.key(), c.content), b"0ther").unwrap();
    s.apply(&[r(&Inode { version: v(1, 5), ..c.tombstone(9) })], &[]).unwrap();
    let d = file(10, v(1, 6), b"other", &[1]);
    s.apply(&[r(&d)], &[]).unwrap();
    assert!(!s.place_from_local(&d).unwrap(), "a bad released copy was placed");
    assert!(!Layout::new(tmp.path()).released(&c.hash).exists(), "the bad copy was kept");
}

#[test]
fn released_copies_count_as_room_until_they_are_removed_or_used_again() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let a = file(7, v(1, 1), &[7u8; 5000], &[1]);
    put(&s, &a, &[7u8; 5000]);
    assert_eq!(s.released_bytes(), 0);
    s.apply(&[r(&Inode { version: v(1, 2), ..a.tombstone(9) })], &[]).unwrap();
    assert_eq!(s.released_bytes(), 5000, "a deleted file's copy is room");
    // Stored again: the copy is placed from the released one, in use again.
    let b = file(8, v(1, 3), &[7u8; 5000], &[1]);
    s.apply(&[r(&b)], &[]).unwrap();
    assert!(s.place_from_local(&b).unwrap());
    assert_eq!(s.released_bytes(), 0, "a copy in use again is not room");
    // Deleted again, then swept when old enough: gone, and counted again.
    s.apply(&[r(&Inode { version: v(1, 4), ..b.tombstone(9) })], &[]).unwrap();
    assert_eq!(s.released_bytes(), 5000);
    s.sweep_orphans(Duration::from_secs(3600), Duration::ZERO).unwrap();
    assert_eq!(s.released_bytes(), 0, "removed by the sweep");
    drop(s);
    // Counted from the disk when the store opens.
    let c = file(9, v(1, 5), b"abc", &[1]);
    let s = open(tmp.path());
    put(&s, &c, b"abc");
    s.apply(&[r(&Inode { version: v(1, 6), ..c.tombstone(9) })], &[]).unwrap();
    drop(s);
    assert_eq!(open(tmp.path()).released_bytes(), 3);
    let (free, total) = open(tmp.path()).room();
    assert!(free <= total && total > 0);
}

#[test]
fn content_that_does_not_match_its_hash_never_lands() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let e = file(7, v(1, 1), b"right", &[1]);
    let mut w = s.new_blob(e.ino, e.content, Some(5)).unwrap();
    w.write(b"wrong").unwrap();
    assert!(matches!(w.finish(Some(e.hash)), Err(Error::Corrupt(_))));
    let mut w = s.new_blob(e.ino, e.content, Some(5)).unwrap();
    assert!(matches!(w.write(b"toolong"), Err(Error::Invalid(_))));
    drop(w);
    assert_eq!(blob_files(tmp.path()), 0);
    assert_eq!(fs::read_dir(tmp.path().join("tmp")).unwrap().count(), 0);
}

#[test]
fn capacity_counts_held_and_wanted_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _) = Store::open(tmp.path(), NodeId(1), Some(2)).unwrap();
    let a = file(7, v(1, 1), b"a", &[1]);
    put(&s, &a, b"a");
    s.apply(&[r(&file(8, v(1, 2), b"b", &[1]))], &[]).unwrap();
    assert!(!s.has_room_for(Ino(9)).unwrap());
    assert!(s.has_room_for(a.ino).unwrap(), "new content for a held file needs no room");
}

#[test]
fn the_bytes_held_are_counted_again_after_the_held_set_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let a = file(7, v(1, 1), b"abc", &[1]);
    put(&s, &a, b"abc");
    put(&s, &file(8, v(1, 2), b"hello", &[1]), b"hello");
    s.apply(&[r(&file(9, v(1, 3), b"wanted, not held", &[1]))], &[]).unwrap();
    assert_eq!(s.held_bytes(), 0, "not counted yet");
    assert_eq!(s.tally_held_bytes().unwrap(), 8, "held blobs only");
    s.quarantine(&a.key(), a.content).unwrap();
    assert_eq!(s.held_bytes(), 8, "kept until counted again");
    assert_eq!(s.tally_held_bytes().unwrap(), 5);
}

/// A small file with its content in its record, as the leader stores it.
fn inline_file(ino: u64, version: Version, content: &[u8]) -> Inode {
    let mut i = file(ino, version, content, &[]);
    i.inline = Some(scs_common::inode::Bytes(content.to_vec()));
    i
}

#[test]
fn inline_files_count_as_kept_with_no_blob_and_stop_counting_once_replaced_or_withdrawn() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    put(&s, &file(7, v(1, 1), b"abc", &[1]), b"abc");
    let small = inline_file(8, v(1, 2), b"small");
    s.apply(&[r(&small)], &[]).unwrap();
    assert_eq!((s.files(), s.wanted_count()), (2, 0), "kept here, nothing to fetch");
    assert_eq!(s.tally_held_bytes().unwrap(), 8);
    assert!(s.live_files(None, 10).unwrap().0.iter().all(|i| i.ino != small.ino), "no blob to place or repair");
    assert_eq!(s.inode(small.ino).unwrap().unwrap().inline, small.inline, "the content is in the index");

    // New content as a blob: no longer inline.
    let bigger = file(8, v(1, 3), b"now a blob", &[1]);
    put(&s, &bigger, b"now a blob");
    assert_eq!(s.files(), 2);
    assert_eq!(s.tally_held_bytes().unwrap(), 13);
    // And inline again: the blob is let go.
    let again = inline_file(8, v(1, 4), b"again");
    s.apply(&[r(&again)], &[]).unwrap();
    assert_eq!(s.files(), 2);
    assert_eq!(s.tally_held_bytes().unwrap(), 8);
    assert!(!s.holds(&again.key(), bigger.content).unwrap());

    // Counted from the table when the store opens again.
    drop(s);
    let s = open(tmp.path());
    assert_eq!(s.files(), 2);
    assert!(s.withdraw(&again.key(), again.version).unwrap());
    assert_eq!(s.files(), 1, "a withdrawn record's content is not kept");
    s.apply(&[r(&inline_file(9, v(1, 5), b"x"))], &[]).unwrap();
    assert_eq!(s.files(), 2);
    s.apply(&[r(&Inode { version: v(1, 6), ..inline_file(9, v(1, 5), b"x").tombstone(9) })], &[]).unwrap();
    assert_eq!(s.files(), 1, "a removed file's content is not kept");
}

#[test]
fn a_record_whose_inline_content_fails_its_hash_is_refused_with_its_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let mut bad = inline_file(8, v(1, 2), b"small");
    bad.inline.as_mut().unwrap().0[0] ^= 1;
    let good = inline_file(9, v(1, 3), b"fine");
    let e = s.apply(&[r(&good), r(&bad)], &[]).unwrap_err();
    assert!(matches!(e, Error::Corrupt(_)), "{e}");
    assert!(s.inode(good.ino).unwrap().is_none(), "nothing of the batch was taken");
    assert_eq!(s.files(), 0);
    assert_eq!(s.journal.used(), 0, "nor journaled, to be replayed at the next start");
    // And the node starts again, without it.
    drop(s);
    let s = open(tmp.path());
    assert!(s.inode(good.ino).unwrap().is_none());
}

#[test]
fn a_quarantined_blob_is_moved_aside_and_wanted() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let e = file(7, v(1, 1), b"abc", &[1]);
    put(&s, &e, b"abc");
    s.quarantine(&e.key(), e.content).unwrap();
    assert!(!s.holds(&e.key(), e.content).unwrap());
    assert_eq!(s.wanted(10).unwrap(), vec![e]);
    assert_eq!(fs::read_dir(tmp.path().join("corrupt")).unwrap().count(), 1);
}

#[test]
fn entries_at_or_below_the_watermark_are_taken_as_late_copies() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let (old, vouched, new) = (file(7, v(1, 3), b"a", &[]), file(8, v(1, 4), b"b", &[]), file(9, v(1, 5), b"c", &[]));
    let all = vec![r(&old), r(&vouched), r(&new)];
    assert_eq!(s.newer_than_vouched(all.clone()).unwrap(), all, "no watermark yet: all are new");
    s.set_watermark(v(1, 4)).unwrap();
    assert_eq!(s.newer_than_vouched(all).unwrap(), vec![r(&new)]);
}

#[test]
fn the_term_and_watermark_are_remembered() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = open(tmp.path());
        s.save_term(Term(7)).unwrap();
        s.set_watermark(v(7, 3)).unwrap();
    }
    let s = open(tmp.path());
    assert_eq!(s.saved_term().unwrap(), Term(7));
    assert_eq!(s.watermark().unwrap(), v(7, 3));
}

#[test]
fn raising_the_watermark_never_lowers_it_and_lasts() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = open(tmp.path());
        s.raise_watermark(v(7, 3)).unwrap();
        s.raise_watermark(v(6, 90)).unwrap();
        assert_eq!(s.watermark().unwrap(), v(7, 3), "an older one leaves it");
        s.raise_watermark(v(7, 8)).unwrap();
    }
    assert_eq!(open(tmp.path()).watermark().unwrap(), v(7, 8));
}

#[test]
fn two_stores_with_the_same_records_have_the_same_digests() {
    let (t1, t2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(t1.path()), open(t2.path()));
    let e1 = file(7, v(1, 1), b"1", &[]);
    let e2 = file(7, v(1, 2), b"2", &[]);
    let e3 = file(8, v(1, 3), b"3", &[]);
    a.apply(&[r(&e1), r(&e2), r(&e3)], &[]).unwrap();
    b.apply(&[r(&e3)], &[]).unwrap();
    assert_ne!(a.digests().unwrap(), b.digests().unwrap());
    b.apply(&[r(&e2), r(&e1)], &[]).unwrap();
    assert_eq!(a.digests().unwrap(), b.digests().unwrap(), "order does not matter, stale records do not count");
    let bucket = digest::bucket_of(&e3.key());
    assert!(a.bucket(bucket).unwrap().contains(&(e3.key(), e3.version)));
    assert_eq!(a.records_for(&[e3.key(), Key::of_ino(Ino(99))]).unwrap(), vec![r(&e3)]);
}

#[test]
fn only_tombstones_are_purged_and_digests_follow() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let live = file(7, v(1, 1), b"", &[]);
    let doomed = file(8, v(1, 2), b"", &[]);
    s.apply(&[r(&live), r(&doomed)], &[]).unwrap();
    let before = s.digests().unwrap();
    let tomb = Inode { version: v(1, 3), ..doomed.tombstone(5) };
    s.apply(&[r(&tomb)], &[]).unwrap();
    assert_eq!(s.old_tombstones(10, 10).unwrap(), vec![(tomb.key(), tomb.version)]);
    assert_eq!(s.purge(&[(live.key(), live.version), (tomb.key(), v(1, 9)), (tomb.key(), tomb.version)]).unwrap(), 1);
    assert!(s.record(&tomb.key()).unwrap().is_none());
    assert!(s.record(&live.key()).unwrap().is_some());
    let mut expected = before;
    expected.toggle(&doomed.key(), doomed.version);
    assert_eq!(s.digests().unwrap(), expected);
    assert_eq!(s.since(Version::ZERO, 10).unwrap(), vec![r(&live)]);
}

#[test]
fn digests_survive_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let d = {
        let s = open(tmp.path());
        s.apply(&[r(&file(7, v(1, 1), b"", &[])), r(&file(8, v(1, 2), b"", &[]))], &[]).unwrap();
        s.digests().unwrap()
    };
    assert_eq!(open(tmp.path()).digests().unwrap(), d);
}

#[test]
fn a_replicated_blob_of_content_that_lost_is_removed_when_its_inode_arrives() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let older = file(7, v(1, 1), b"old", &[1]);
    let newer = file(7, v(1, 2), b"new", &[1]);
    // Both blobs were replicated here; the newer inode committed first.
    for (i, c) in [(&older, b"old"), (&newer, b"new")] {
        let mut w = s.new_blob(i.ino, i.content, Some(3)).unwrap();
        w.write(c).unwrap();
        w.finish(Some(i.hash)).unwrap();
    }
    s.apply(&[r(&newer)], &[]).unwrap();
    assert_eq!(s.apply(&[r(&older)], &[]).unwrap().stale, 1);
    assert_eq!(blob_files(tmp.path()), 1);
    assert_eq!(read_all(&s, &newer), b"new");
}

#[test]
fn the_sweep_removes_only_old_unreferenced_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let kept = file(7, v(1, 1), b"k", &[1]);
    put(&s, &kept, b"k");
    let mut w = s.new_blob(Ino(8), v(1, 2), Some(1)).unwrap();
    w.write(b"s").unwrap();
    w.finish(None).unwrap();
    let ten_minutes = std::time::Duration::from_secs(600);
    assert_eq!(s.sweep_orphans(ten_minutes, ten_minutes).unwrap(), 0, "too young");
    assert_eq!(s.sweep_orphans(std::time::Duration::ZERO, ten_minutes).unwrap(), 1);
    assert_eq!(blob_files(tmp.path()), 1);
    assert_eq!(read_all(&s, &kept), b"k");
}

#[test]
fn a_replicated_blob_that_lands_after_its_inode_left_it_out_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let e = file(7, v(1, 1), b"abc", &[2, 3]);
    s.apply(&[r(&e)], &[]).unwrap();
    let mut w = s.new_blob(e.ino, e.content, Some(3)).unwrap();
    w.write(b"abc").unwrap();
    w.finish(Some(e.hash)).unwrap();
    assert!(s.settle_replicated(&e.key(), e.content).unwrap());
    assert_eq!(blob_files(tmp.path()), 0);
    // Before its inode exists, a landed blob is kept (the Apply will follow).
    let f = file(8, v(1, 2), b"x", &[1]);
    let mut w = s.new_blob(f.ino, f.content, Some(1)).unwrap();
    w.write(b"x").unwrap();
    w.finish(Some(f.hash)).unwrap();
    assert!(!s.settle_replicated(&f.key(), f.content).unwrap());
    assert_eq!(blob_files(tmp.path()), 1);
}

#[test]
fn a_replicated_blob_is_kept_when_its_inode_changed_before_the_upload_committed() {
    // `cmd > file` through a write-back mount: the content streams to the
    // holders while the empty first close goes up and commits.
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let streamed = file(7, v(1, 4), b"content", &[1, 2, 3]);
    let mut empty = Inode::new(Ino(7), Kind::File, 0o644, 1000, 1000, 1);
    empty.version = v(1, 7);
    s.apply(&[r(&empty)], &[]).unwrap();
    land(&s, &streamed, b"content");
    assert!(!s.settle_replicated(&streamed.key(), streamed.content).unwrap(), "the upload may still commit");
    let week = std::time::Duration::from_secs(7 * 24 * 3600);
    assert_eq!(s.sweep_orphans(week, week).unwrap(), 0);
    assert_eq!(blob_files(tmp.path()), 1);
    // It does, over the empty file: this copy counts, and is not fetched again.
    let committed = Inode { version: v(1, 9), ..streamed.clone() };
    s.apply(&[r(&committed)], &[]).unwrap();
    assert!(s.wanted(10).unwrap().is_empty());
    assert_eq!(read_all(&s, &committed), b"content");
    // A copy of content whose inode is gone is garbage at once.
    let doomed = file(8, v(1, 10), b"x", &[1, 2]);
    let gone_inode = Inode { version: v(1, 11), deleted: true, ..doomed.clone() };
    s.apply(&[r(&gone_inode)], &[]).unwrap();
    land(&s, &doomed, b"x");
    assert!(s.settle_replicated(&doomed.key(), doomed.content).unwrap());
    assert_eq!(blob_files(tmp.path()), 1);
    // So is one whose inode changed in a later term (its upload's leader
    // is gone, and it never commits).
    let orphaned = file(9, v(1, 12), b"y", &[1, 2]);
    let later = file(9, v(2, 1), b"z", &[2, 3]);
    s.apply(&[r(&later)], &[]).unwrap();
    land(&s, &orphaned, b"y");
    assert!(s.settle_replicated(&orphaned.key(), orphaned.content).unwrap());
    assert_eq!(blob_files(tmp.path()), 1);
}

#[test]
fn a_withdrawn_record_goes_and_the_older_one_can_come_back() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let old = file(7, v(1, 1), b"old", &[1]);
    let unacked = file(7, v(2, 1), b"new", &[1]);
    put(&s, &unacked, b"new");
    let name = entry(1, "w", &unacked, v(2, 2));
    s.apply(std::slice::from_ref(&name), &[]).unwrap();
    assert!(!s.withdraw(&unacked.key(), v(2, 9)).unwrap(), "only at that exact version");
    assert!(s.withdraw(&unacked.key(), unacked.version).unwrap());
    assert!(s.withdraw(&name.key(), name.version()).unwrap());
    assert!(s.inode(Ino(7)).unwrap().is_none() && s.dentry(Ino(1), "w").unwrap().is_none());
    assert_eq!(s.files(), 0);
    put(&s, &old, b"old");
    assert_eq!(s.inode(Ino(7)).unwrap(), Some(old));
}

/// Writes an index of format 1 as the previous release did, with blobs.
fn write_format_1(dir: &Path, entries: &[(upgrade::EntryV1, Option<&[u8]>)]) {
    use redb::TableDefinition;
    const ENTRIES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("entries");
    const NAMES: TableDefinition<&str, ()> = TableDefinition::new("names");
    const VERSIONS: TableDefinition<&[u8; 16], &[u8; 32]> = TableDefinition::new("versions");
    let layout = Layout::new(dir);
    fs::create_dir_all(layout.blobs_dir()).unwrap();
    let db = Database::create(layout.index()).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_table(ENTRIES).unwrap();
        let mut names = tx.open_table(NAMES).unwrap();
        let mut versions = tx.open_table(VERSIONS).unwrap();
        let mut held = tx.open_table(HELD).unwrap();
        let mut meta = tx.open_table(META).unwrap();
        for (e, content) in entries {
            let key = Key::of_name(&e.name);
            t.insert(&key.0, rmp_serde::to_vec(e).unwrap().as_slice()).unwrap();
            versions.insert(&e.version.to_be_bytes(), &key.0).unwrap();
            if !e.deleted {
                names.insert(e.name.as_str(), ()).unwrap();
            }
            if let Some(c) = content {
                let path = layout.blob(&key, e.version);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(&path, c).unwrap();
                held.insert(&key.0, &e.version.to_be_bytes()).unwrap();
            }
        }
        meta.insert("term", 4u64.to_be_bytes().as_slice()).unwrap();
    }
    tx.commit().unwrap();
}

fn v1(name: &str, version: Version, kind: Kind, content: &[u8], deleted: bool) -> upgrade::EntryV1 {
    upgrade::EntryV1 {
        name: name.into(),
        version,
        kind,
        size: content.len() as u64,
        hash: ContentHash(Sha256::digest(content).into()),
        mode: 0o640,
        mtime_ns: 1_700_000_000_000_000_007,
        deleted,
        holders: vec![NodeId(1), NodeId(2)],
    }
}

#[test]
fn an_index_of_format_1_is_upgraded_with_its_tree_its_blobs_and_its_deletions() {
    let tmp = tempfile::tempdir().unwrap();
    write_format_1(
        tmp.path(),
        &[
            (v1("docs", v(1, 1), Kind::Dir, b"", false), None),
            (v1("docs/report.txt", v(1, 2), Kind::File, b"report", false), Some(b"report")),
            (v1("photos/2024/cat.jpg", v(2, 1), Kind::File, b"meow", false), Some(b"meow")),
            (v1("gone.txt", v(2, 2), Kind::File, b"", true), None),
            (v1("wanted.bin", v(2, 3), Kind::File, b"later", false), None),
        ],
    );
    let (s, report) = Store::open(tmp.path(), NodeId(1), None).unwrap();
    assert!(report.upgraded > 0, "{report:?}");
    assert_eq!(s.saved_term().unwrap(), Term(4), "the term survives");
    let at = |p: &str| namespace_path(&s, p);
    let report_txt = at("docs/report.txt").unwrap();
    assert_eq!((report_txt.kind, report_txt.mode, report_txt.size), (Kind::File, 0o640, 6));
    assert_eq!(read_all(&s, &report_txt), b"report");
    assert_eq!(read_all(&s, &at("photos/2024/cat.jpg").unwrap()), b"meow");
    assert!(at("photos/2024").unwrap().is_dir(), "a directory implied by a path became a real one");
    assert_eq!(at("photos").unwrap().nlink, 3);
    assert!(at("gone.txt").is_none());
    assert!(s.dentry(Ino::ROOT, "gone.txt").unwrap().is_none());
    assert!(matches!(s.record(&Key::of_dentry(Ino::ROOT, "gone.txt")).unwrap(), Some(Record::Dentry(d)) if d.deleted));
    assert_eq!(s.wanted(10).unwrap().len(), 1, "a file it should hold but lacked is still wanted");
    let names: Vec<String> = s.read_dir(Ino::ROOT).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["docs", "photos", "wanted.bin"]);
    let owner = fs::metadata(tmp.path()).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((report_txt.uid, report_txt.gid), (owner.uid(), owner.gid()));
    assert_eq!(blob_files(tmp.path()), 2, "the old names of the blobs are gone");
    drop(s);
    // Opening again changes nothing.
    let (s, again) = Store::open(tmp.path(), NodeId(1), None).unwrap();
    assert_eq!(again.upgraded, 0);
    assert_eq!(read_all(&s, &at2(&s, "docs/report.txt")), b"report");
}

fn at2(s: &Store, p: &str) -> Inode {
    namespace_path(s, p).unwrap()
}

#[test]
fn two_nodes_upgrading_the_same_entries_agree_on_every_record() {
    let entries = vec![
        v1("a/b/c.txt", v(3, 1), Kind::File, b"x", false),
        v1("a", v(1, 1), Kind::Dir, b"", false),
        v1("old", v(2, 1), Kind::File, b"", true),
    ];
    let one = upgrade::records_of(&entries, 7, 7);
    let mut reversed = entries.clone();
    reversed.reverse();
    let mut two = upgrade::records_of(&reversed, 7, 7);
    let mut one_sorted = one.clone();
    one_sorted.sort_by_key(|r| r.key().0);
    two.sort_by_key(|r| r.key().0);
    assert_eq!(one_sorted, two);
    assert!(upgrade::ino_of_path("a").0 >= 1 << 63, "far above the numbers leaders hand out");
}

#[test]
fn an_index_of_an_unknown_format_is_refused_with_both_formats_named() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = open(tmp.path());
        s.set_meta(FORMAT_KEY, &9u32.to_be_bytes()).unwrap();
    }
    let e = Store::open(tmp.path(), NodeId(1), None).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Config(_)) && msg.contains("format 9") && msg.contains("format 6"), "{msg}");
}

#[test]
fn the_audit_finds_orphans_miscounted_links_and_names_that_lead_nowhere() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let mut root = new_root(0);
    root.version = v(1, 0);
    let named = file(2, v(1, 1), b"", &[]);
    // Small files, whole: the leader commits what the audit reports, so a
    // report without the content would lose it.
    let orphan = inline_file(3, v(1, 2), b"no name leads here");
    let twice = Inode { nlink: 1, ..inline_file(4, v(1, 3), b"two names") };
    let gone = file(5, v(1, 4), b"", &[]);
    s.apply(
        &[
            r(&root),
            r(&named),
            r(&orphan),
            r(&twice),
            entry(1, "named", &named, v(1, 5)),
            entry(1, "a", &twice, v(1, 6)),
            entry(1, "b", &twice, v(1, 7)),
            entry(1, "nowhere", &gone, v(1, 8)),
        ],
        &[],
    )
    .unwrap();
    let audit = s.audit().unwrap();
    assert_eq!(audit.orphans, vec![orphan]);
    assert_eq!(audit.miscounted, vec![(twice, 2)]);
    assert_eq!(audit.stray_names.len(), 1);
    assert_eq!(audit.stray_names[0].name, "nowhere");
}

#[test]
fn the_audit_removes_a_name_in_a_directory_that_is_gone_and_the_file_only_it_named() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let mut root = new_root(0);
    root.version = v(1, 0);
    // A merge kept the file and its name, but the directory lost its own name
    // to a newer one and was removed as an orphan since.
    let lost = file(2, v(1, 1), b"", &[]);
    let kept = file(3, v(1, 2), b"", &[]);
    s.apply(&[r(&root), r(&lost), r(&kept), entry(9, "f04", &lost, v(1, 3)), entry(1, "kept", &kept, v(1, 4))], &[])
        .unwrap();
    let audit = s.audit().unwrap();
    assert_eq!(audit.stray_names.len(), 1, "{audit:?}");
    assert_eq!((audit.stray_names[0].parent, audit.stray_names[0].name.as_str()), (Ino(9), "f04"));
    let why = &audit.why[&audit.stray_names[0].key()];
    assert!(why.contains("in a directory that is not live") && why.contains("directory 9: missing"), "{why}");
    assert_eq!(audit.orphans, vec![lost], "found in the same pass, not one audit later");
    assert!(audit.miscounted.is_empty());
}

#[test]
fn the_audit_keeps_one_name_of_a_directory_the_one_in_its_parent_when_there_is_one() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let mut root = new_root(0);
    root.version = v(1, 0);
    let mut a = dir(2, v(1, 1));
    a.parent = Ino(1);
    // Its parent holds one of its three names: that one stays.
    let mut b = dir(3, v(1, 2));
    b.parent = Ino(2);
    // Its parent (inode 9) is gone: one name stays, whichever.
    let mut c = dir(4, v(1, 3));
    c.parent = Ino(9);
    s.apply(
        &[
            r(&root),
            r(&a),
            r(&b),
            r(&c),
            entry(1, "a", &a, v(1, 4)),
            entry(1, "b-too", &b, v(1, 5)),
            entry(2, "b", &b, v(1, 6)),
            entry(2, "b-again", &b, v(1, 7)),
            entry(1, "c", &c, v(1, 8)),
            entry(2, "c-too", &c, v(1, 9)),
        ],
        &[],
    )
    .unwrap();
    let audit = s.audit().unwrap();
    assert!(audit.orphans.is_empty() && audit.miscounted.is_empty(), "{audit:?}");
    let mut stray: Vec<(u64, &str)> = audit.stray_names.iter().map(|d| (d.parent.0, d.name.as_str())).collect();
    stray.sort();
    let b_stray: Vec<(u64, &str)> = stray.iter().filter(|(_, n)| n.starts_with('b')).copied().collect();
    assert_eq!(b_stray, [(1, "b-too"), (2, "b-again")]);
    assert_eq!(stray.len() - b_stray.len(), 1, "one of c's two names stays: {stray:?}");
    let why = &audit.why[&audit.stray_names.iter().find(|d| d.name == "b-too").unwrap().key()];
    assert!(why.contains("a second name of a directory whose parent is 2"), "{why}");
}

#[test]
fn a_directory_is_read_a_page_at_a_time_in_name_order_until_the_reader_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let mut root = new_root(0);
    root.version = v(1, 0);
    let mut batch = vec![r(&root), r(&dir(2, v(1, 1))), entry(1, "empty", &dir(2, v(1, 1)), v(1, 2))];
    for n in 0..25u64 {
        let f = file(100 + n, v(2, n), b"", &[]);
        batch.push(r(&f));
        batch.push(entry(1, &format!("f{n:02}"), &f, v(3, n)));
    }
    s.apply(&batch, &[]).unwrap();
    let mut pages: Vec<Vec<String>> = Vec::new();
    s.read_dir_pages(Ino::ROOT, 10, |p, _| {
        pages.push(p.into_iter().map(|e| e.name).collect());
        true
    })
    .unwrap();
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 6]);
    let whole: Vec<String> = pages.concat();
    assert_eq!(whole, s.read_dir(Ino::ROOT).unwrap().into_iter().map(|e| e.name).collect::<Vec<_>>());
    assert_eq!(whole.first().map(String::as_str), Some("empty"));
    let mut taken = 0;
    s.read_dir_pages(Ino::ROOT, 10, |_, _| {
        taken += 1;
        false
    })
    .unwrap();
    assert_eq!(taken, 1, "stops when told");
    let mut empty = Vec::new();
    s.read_dir_pages(Ino(2), 10, |p, _| {
        empty.push(p.len());
        true
    })
    .unwrap();
    assert_eq!(empty, [0], "an empty directory is one empty page");
}

#[test]
fn live_files_pages_by_records_read_and_goes_on_where_the_last_page_ended() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let mut root = new_root(0);
    root.version = v(1, 0);
    let mut batch = vec![r(&root)];
    // Blob files among many records that are not: small files and names.
    for n in 0..40u64 {
        let f = file(100 + n, v(1, 1 + n), b"", &[1]);
        let f = Inode { size: 1 << 20, ..f };
        batch.push(r(&f));
        batch.push(entry(1, &format!("f{n}"), &f, v(2, n)));
        let small = inline_file(200 + n, v(3, n), b"small");
        batch.push(r(&small));
        batch.push(entry(1, &format!("s{n}"), &small, v(4, n)));
    }
    s.apply(&batch, &[]).unwrap();
    let (mut seen, mut after, mut pages) = (Vec::new(), None, 0);
    loop {
        let (page, next) = s.live_files(after, 7).unwrap();
        pages += 1;
        assert!(page.len() <= 7);
        seen.extend(page.iter().map(|i| i.ino.0));
        match next {
            Some(k) => after = Some(k),
            None => break,
        }
        assert!(pages < 100, "the pages never end");
    }
    assert!(pages >= 161 / 7, "each page reads at most 7 records: {pages} pages");
    seen.sort();
    assert_eq!(seen, (100..140).collect::<Vec<u64>>(), "every blob file once, nothing else");
}

/// The data dir as a crash would leave it: the index as of its last durable
/// commit (`index_then`), the journal as it is now.
fn crash_copy(dir: &Path, index_then: &[u8]) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    std::fs::write(copy.path().join("index.redb"), index_then).unwrap();
    std::fs::copy(dir.join("journal"), copy.path().join("journal")).unwrap();
    copy
}

#[test]
fn batches_in_the_journal_come_back_after_a_crash_that_lost_the_index_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let d = dir(5, v(1, 1));
    s.apply(&[r(&d), entry(1, "docs", &d, v(1, 2))], &[]).unwrap();
    // A durable commit: the index on disk has everything so far.
    s.set_meta("probe", b"1").unwrap();
    let index_then = std::fs::read(tmp.path().join("index.redb")).unwrap();
    let mut moved = d.clone();
    moved.version = v(1, 3);
    moved.mode = 0o700;
    s.apply(&[r(&moved), gone(1, "docs", v(1, 4)), entry(1, "papers", &moved, v(1, 5))], &[]).unwrap();
    let e = dir(6, v(1, 6));
    s.apply(&[r(&e), entry(5, "inner", &e, v(1, 7))], &[]).unwrap();

    let copy = crash_copy(tmp.path(), &index_then);
    let c = open(copy.path());
    assert_eq!(c.inode(Ino(5)).unwrap().map(|i| i.mode), Some(0o700));
    assert!(c.dentry(Ino(1), "docs").unwrap().is_none());
    assert_eq!(c.dentry(Ino(1), "papers").unwrap().map(|d| d.child), Some(Ino(5)));
    assert_eq!(c.dentry(Ino(5), "inner").unwrap().map(|d| d.child), Some(Ino(6)));
    assert_eq!(c.digests().unwrap(), s.digests().unwrap(), "the replayed index is the same index");
    drop(c);
    let again = open(copy.path());
    assert_eq!(again.dentry(Ino(1), "papers").unwrap().map(|d| d.child), Some(Ino(5)), "replayed once, kept");
}

/// [`Store::journal_ahead`] and its sync, as a follower does before it answers.
fn journal_ahead(s: &Store, batch: Vec<Record>) -> u64 {
    let j = s.journal_ahead(batch).unwrap().expect("it fits the journal");
    s.journal.try_sync(j.end).expect("no sync running").unwrap();
    j.id
}

#[test]
fn a_batch_answered_for_before_the_index_took_it_survives_a_crash_and_shows_once_indexed() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    s.set_meta("probe", b"1").unwrap();
    let index_then = std::fs::read(tmp.path().join("index.redb")).unwrap();
    let d = dir(5, v(1, 1));
    let id = journal_ahead(&s, vec![r(&d), entry(1, "docs", &d, v(1, 2))]);
    assert!(s.dentry(Ino(1), "docs").unwrap().is_none(), "durable, not yet in the index");

    // A crash now: the journal has it, so the next start does too.
    let copy = crash_copy(tmp.path(), &index_then);
    let c = open(copy.path());
    assert_eq!(c.dentry(Ino(1), "docs").unwrap().map(|e| e.child), Some(Ino(5)));
    drop(c);

    let pending = s.index_ahead(id).unwrap().expect("still ahead of the index");
    assert_eq!(s.settle(pending).unwrap().applied, 2);
    assert_eq!(s.dentry(Ino(1), "docs").unwrap().map(|e| e.child), Some(Ino(5)));
    assert!(s.index_ahead(id).unwrap().is_none(), "in once");
}

#[test]
fn a_durable_commit_takes_in_the_batches_ahead_of_the_index_before_the_journal_starts_over() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let d = dir(5, v(1, 1));
    let first = journal_ahead(&s, vec![r(&d), entry(1, "docs", &d, v(1, 2))]);
    let e = dir(6, v(1, 3));
    let second = journal_ahead(&s, vec![r(&e), entry(5, "inner", &e, v(1, 4))]);
    // A durable commit ends the journal's generation: nothing of it is
    // replayed after this, so the batches waiting must be in this commit.
    s.set_meta("probe", b"1").unwrap();
    let index_now = std::fs::read(tmp.path().join("index.redb")).unwrap();
    assert_eq!(s.dentry(Ino(5), "inner").unwrap().map(|e| e.child), Some(Ino(6)), "seen at once");
    assert!(s.index_ahead(second).unwrap().is_none() && s.index_ahead(first).unwrap().is_none(), "taken in");

    let copy = crash_copy(tmp.path(), &index_now);
    let c = open(copy.path());
    assert_eq!(c.dentry(Ino(1), "docs").unwrap().map(|e| e.child), Some(Ino(5)), "in the durable commit");
    assert_eq!(c.dentry(Ino(5), "inner").unwrap().map(|e| e.child), Some(Ino(6)));
}

#[test]
fn a_pull_that_raised_the_term_reads_the_batches_answered_for_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let d = dir(5, v(1, 1));
    let id = journal_ahead(&s, vec![r(&d), entry(1, "docs", &d, v(1, 2))]);
    assert!(s.since(Version::ZERO, 10).unwrap().is_empty(), "not in the index yet");
    s.take_in_ahead().unwrap();
    assert_eq!(s.since(Version::ZERO, 10).unwrap().len(), 2, "what a pull reads has it");
    assert!(s.index_ahead(id).unwrap().is_none(), "in once");
    s.take_in_ahead().unwrap();
}

#[test]
fn indexing_a_batch_takes_the_ones_before_it_along() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let d = dir(5, v(1, 1));
    journal_ahead(&s, vec![r(&d), entry(1, "docs", &d, v(1, 2))]);
    let mut moved = d.clone();
    moved.version = v(1, 3);
    moved.mode = 0o700;
    let second = journal_ahead(&s, vec![r(&moved)]);
    let pending = s.index_ahead(second).unwrap().unwrap();
    assert_eq!(s.settle(pending).unwrap().applied, 3, "both batches, in order");
    assert_eq!(s.inode(Ino(5)).unwrap().map(|i| i.mode), Some(0o700));
    assert_eq!(s.dentry(Ino(1), "docs").unwrap().map(|e| e.child), Some(Ino(5)));
}

#[test]
fn a_withdrawal_is_not_undone_by_the_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let unacked = dir(9, v(2, 1));
    let name = entry(1, "w", &unacked, v(2, 2));
    s.apply(&[r(&unacked), name.clone()], &[]).unwrap();
    assert!(s.withdraw(&name.key(), name.version()).unwrap());
    assert!(s.withdraw(&unacked.key(), unacked.version).unwrap());
    let index_now = std::fs::read(tmp.path().join("index.redb")).unwrap();
    let copy = crash_copy(tmp.path(), &index_now);
    let c = open(copy.path());
    assert!(c.dentry(Ino(1), "w").unwrap().is_none(), "the journal's older batch came back over the withdrawal");
    assert!(c.inode(Ino(9)).unwrap().is_none());
}

#[test]
fn a_full_journal_is_checkpointed_and_every_batch_stays() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    // Names long enough that the batches fill the journal past its checkpoint mark.
    let long = "n".repeat(200);
    let per_batch = 100;
    let batches = (journal::CHECKPOINT_AT as usize / (per_batch * 230)) + 5;
    let mut seq = 0;
    for b in 0..batches {
        let records: Vec<Record> = (0..per_batch)
            .map(|i| {
                seq += 1;
                entry(1, &format!("{long}-{b}-{i}"), &dir(100, v(1, 1)), v(1, seq))
            })
            .collect();
        s.apply(&records, &[]).unwrap();
    }
    assert!(s.journal.used() < journal::CHECKPOINT_AT, "a checkpoint started the journal over");
    drop(s);
    let s = open(tmp.path());
    assert_eq!(s.record_count().unwrap(), seq);
}

/// Rows of `inline_data`, and the stored size of a record.
fn inline_rows(s: &Store) -> u64 {
    let tx = s.db().unwrap().begin_read().unwrap();
    tx.open_table(INLINE_DATA).unwrap().len().unwrap()
}

fn stored_len(s: &Store, key: &Key) -> usize {
    let tx = s.db().unwrap().begin_read().unwrap();
    let records = tx.open_table(RECORDS).unwrap();
    let len = records.get(&key.0).unwrap().unwrap().value().len();
    len
}

#[test]
fn a_change_that_keeps_the_content_keeps_its_inline_bytes_and_new_bytes_of_the_same_size_replace_them() {
    let tmp = tempfile::tempdir().unwrap();
    let inline_of = |s: &Store| s.inode(Ino(8)).unwrap().unwrap().inline;
    let rows = 6000usize.div_ceil(index::INLINE_CHUNK) as u64;
    let f = inline_file(8, v(1, 2), &[7u8; 6000]);
    {
        let s = open(tmp.path());
        s.apply(&[r(&f), entry(1, "f", &f, v(1, 3))], &[]).unwrap();
        // A chmod: a newer record, the same content.
        let chmod = Inode { version: v(1, 4), mode: 0o600, ..f.clone() };
        s.apply(&[r(&chmod)], &[]).unwrap();
        assert_eq!(inline_of(&s), f.inline);
        assert_eq!(s.inode(Ino(8)).unwrap().unwrap().mode, 0o600);
        assert_eq!(inline_rows(&s), rows, "6000 bytes in chunks of {}", index::INLINE_CHUNK);
        // New bytes of the same length (a new content version) replace them.
        let other = Inode { mode: 0o600, ..inline_file(8, v(1, 5), &[9u8; 6000]) };
        s.apply(&[r(&other)], &[]).unwrap();
        assert_eq!(inline_of(&s), other.inline);
        let chmod = Inode { version: v(1, 6), mode: 0o644, ..other.clone() };
        s.apply(&[r(&chmod)], &[]).unwrap();
        assert_eq!(inline_of(&s), other.inline);
        assert_eq!(inline_rows(&s), rows);
    }
    // As the journal's replay finds them at the next start.
    let s = open(tmp.path());
    assert_eq!(inline_of(&s), Some(scs_common::inode::Bytes(vec![9u8; 6000])));
    assert_eq!(s.inode(Ino(8)).unwrap().unwrap().mode, 0o644);
    assert_eq!(inline_rows(&s), rows);
}

#[test]
fn inline_content_is_kept_beside_its_record_and_comes_back_whole_wherever_a_record_is_handed_on() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let big: Vec<u8> = (0..8000u32).map(|n| (n * 7) as u8).collect();
    let f = inline_file(8, v(1, 2), &big);
    s.apply(&[r(&f), entry(1, "f", &f, v(1, 3))], &[]).unwrap();
    assert!(stored_len(&s, &f.key()) < 512, "the record itself stays small");
    assert_eq!(inline_rows(&s), 4, "8000 bytes in chunks of {}", index::INLINE_CHUNK);

    // Whole wherever it is handed on: the leader's view, a record asked
    // for, a page of the sync, anti-entropy's answer.
    assert_eq!(s.inode(f.ino).unwrap().unwrap().inline, f.inline);
    assert_eq!(s.record(&f.key()).unwrap(), Some(r(&f)));
    assert!(s.since(Version::ZERO, 10).unwrap().contains(&r(&f)));
    assert_eq!(s.records_for(&[f.key()]).unwrap(), vec![r(&f)]);
    // A listing only says it is inline.
    let listed = s.read_dir(Ino::ROOT).unwrap();
    assert_eq!(listed[0].inode.inline, Some(scs_common::inode::Bytes(Vec::new())));
    assert_eq!(listed[0].inode.size, 8000);

    // Shorter content leaves no chunk of the old behind; empty content none at all.
    let short = inline_file(8, v(1, 4), b"short");
    s.apply(&[r(&short)], &[]).unwrap();
    assert_eq!(s.record(&f.key()).unwrap(), Some(r(&short)));
    assert_eq!(inline_rows(&s), 1);
    let empty = inline_file(8, v(1, 5), b"");
    s.apply(&[r(&empty)], &[]).unwrap();
    assert_eq!(s.record(&f.key()).unwrap(), Some(r(&empty)));
    assert_eq!(inline_rows(&s), 0);

    // Gone with the record, whether removed or withdrawn.
    let again = inline_file(8, v(1, 6), &big);
    s.apply(&[r(&again)], &[]).unwrap();
    s.apply(&[r(&Inode { version: v(1, 7), ..again.tombstone(9) })], &[]).unwrap();
    assert_eq!(inline_rows(&s), 0, "a removed file's content goes");
    let other = inline_file(10, v(1, 8), &big);
    s.apply(&[r(&other)], &[]).unwrap();
    assert!(s.withdraw(&other.key(), other.version).unwrap());
    assert_eq!(inline_rows(&s), 0, "a withdrawn record's content goes");
}

#[test]
fn a_record_stored_without_its_content_is_never_taken_as_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    // What a listing hands out: the marker, not the bytes.
    let marked = inline_file(8, v(1, 2), b"content").for_client();
    assert!(s.apply(&[r(&marked)], &[]).is_err(), "a marker is not content");
    assert_eq!(s.record(&marked.key()).unwrap(), None);
}

/// Overwrites (or with `None` drops) chunk `n` of the inline content of `key`, as a bad disk would.
fn damage_chunk(s: &Store, key: &Key, n: u8, bytes: Option<&[u8]>) {
    let tx = s.db().unwrap().begin_write().unwrap();
    {
        let mut data = tx.open_table(INLINE_DATA).unwrap();
        match bytes {
            Some(b) => data.insert((&key.0, n), b).unwrap(),
            None => data.remove((&key.0, n)).unwrap(),
        };
    }
    tx.commit().unwrap();
}

#[test]
fn damaged_inline_content_is_found_and_put_back_from_a_good_copy_of_the_same_record_only() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let content: Vec<u8> = (0..5000u32).map(|n| (n % 251) as u8).collect();
    let f = inline_file(8, v(1, 2), &content);
    s.apply(&[r(&f)], &[]).unwrap();
    assert_eq!(s.inline_files().unwrap(), vec![(f.key(), 5000)]);
    assert_eq!(s.check_inline_copy(&f.key()).unwrap(), None);

    damage_chunk(&s, &f.key(), 1, Some(&[0u8; 2000]));
    assert_eq!(s.check_inline_copy(&f.key()).unwrap(), Some(f.version), "a flipped chunk");
    // Only a good copy of this very record is taken.
    let newer = inline_file(8, v(1, 3), &content);
    assert!(!s.restore_inline(&newer).unwrap(), "another version");
    let mut forged = f.clone();
    forged.inline.as_mut().unwrap().0[0] ^= 1;
    assert!(s.restore_inline(&forged).is_err(), "content that fails its hash");
    assert!(s.restore_inline(&f).unwrap());
    assert_eq!(s.check_inline_copy(&f.key()).unwrap(), None);
    assert_eq!(s.record(&f.key()).unwrap(), Some(r(&f)));

    damage_chunk(&s, &f.key(), 2, None);
    assert_eq!(s.check_inline_copy(&f.key()).unwrap(), Some(f.version), "a lost chunk");
    assert!(s.record(&f.key()).is_err(), "never handed on short");
    assert!(s.restore_inline(&f).unwrap());
    assert_eq!(s.record(&f.key()).unwrap(), Some(r(&f)));
}

#[test]
fn a_batch_is_in_the_index_before_it_is_settled_and_durable_once_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let f = inline_file(8, v(1, 2), b"abc");
    let pending = s.apply_visible(&[r(&f), entry(1, "f", &f, v(1, 3))], &[]).unwrap();
    assert_eq!(s.record(&f.key()).unwrap(), Some(r(&f)), "readers see it before its sync is done");
    assert_eq!(s.dentry(Ino::ROOT, "f").unwrap().map(|d| d.child), Some(f.ino));
    assert_eq!(s.settle(pending).unwrap().applied, 2);
    drop(s);
    let s = open(tmp.path());
    assert_eq!(s.record(&f.key()).unwrap(), Some(r(&f)), "durable once settled");
}

#[test]
fn the_trash_keeps_a_removed_file_and_its_blob_oldest_first_until_it_is_restored_or_purged() {
    let tmp = tempfile::tempdir().unwrap();
    let a = file(7, v(1, 1), b"first", &[1, 2]);
    let b = file(8, v(1, 2), b"second", &[2, 3]);
    {
        let s = open(tmp.path());
        put(&s, &a, b"first");
        put(&s, &b, b"second");
        // Removed: b first, then a; both keep their content.
        let mut b_gone = b.trash(Ino(1), "b.txt", 100);
        b_gone.version = v(1, 3);
        let mut a_gone = a.trash(Ino(1), "a.txt", 200);
        a_gone.version = v(1, 4);
        s.apply(&[r(&b_gone), r(&a_gone)], &[]).unwrap();
        let listed: Vec<Ino> = s.trashed(i64::MAX, 10).unwrap().iter().map(|i| i.ino).collect();
        assert_eq!(listed, [Ino(8), Ino(7)], "the oldest first");
        assert_eq!(s.trashed(150, 10).unwrap().len(), 1, "removed before 150: b only");
        assert_eq!(read_all(&s, &a), b"first", "node 1 keeps a's blob while it is in the trash");
        assert_eq!(s.tally_trash_bytes().unwrap(), 5, "a's 5 bytes are node 1's; b is kept by 2 and 3");
    }
    // Through a reopen (the journal replayed), then a restore and a purge.
    let s = open(tmp.path());
    assert_eq!(s.trash_count().unwrap(), 2);
    let mut a_back = s.inode(Ino(7)).unwrap().unwrap();
    assert!(a_back.is_trashed() && a_back.nlink == 0);
    (a_back.trashed, a_back.nlink, a_back.version) = (None, 1, v(2, 1));
    let purged = s.inode(Ino(8)).unwrap().unwrap().tombstone(300);
    let purged = Inode { version: v(2, 2), ..purged };
    s.apply(&[r(&a_back), entry(1, "a.txt", &a_back, v(2, 3)), r(&purged)], &[]).unwrap();
    assert!(s.trashed(i64::MAX, 10).unwrap().is_empty());
    assert_eq!(read_all(&s, &a), b"first");
    // In the trash, no name is no orphan; a file in the trash that a name
    // leads to (left so by a merge) comes back out rather than lose it.
    let c = file(9, v(3, 1), b"", &[]);
    let mut c_gone = c.trash(Ino(1), "c.txt", 400);
    c_gone.version = v(3, 2);
    s.apply(&[r(&dir(1, v(3, 3))), r(&c_gone), entry(1, "still-named", &c_gone, v(3, 4))], &[]).unwrap();
    let audit = s.audit().unwrap();
    assert!(audit.orphans.is_empty(), "{:?}", audit.orphans);
    assert!(audit.stray_names.is_empty(), "{:?}", audit.stray_names);
    let named: Vec<(Ino, u32)> = audit.named_in_trash.iter().map(|(i, n)| (i.ino, *n)).collect();
    assert_eq!(named, [(Ino(9), 1)]);
    // A name into a directory in the trash is stray, and the operator is told why.
    let mut d_gone = dir(10, v(3, 5)).trash(Ino(1), "d", 500);
    d_gone.version = v(3, 5);
    s.apply(&[r(&d_gone), entry(1, "stale-name", &d_gone, v(3, 6))], &[]).unwrap();
    let audit = s.audit().unwrap();
    assert_eq!(audit.stray_names.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["stale-name"]);
    let why = &audit.why[&audit.stray_names[0].key()];
    assert!(why.contains("leads to an inode that is not live") && why.contains("trashed at 500"), "{why}");
    assert_eq!(s.tally_trash_bytes().unwrap(), 0);
}

#[test]
fn an_earlier_version_keeps_the_blob_it_replaced_and_gives_it_back_when_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let one = file(7, v(1, 1), b"first draft", &[1]);
    put(&s, &one, b"first draft");
    // Overwritten: the new content is written as a holder does, and one
    // batch gives the file its new content and keeps the old as inode 20.
    let two = file(7, v(1, 2), b"second draft", &[1]);
    let mut kept = one.as_version(Ino(20), 50);
    kept.version = v(1, 2);
    let mut w = s.new_blob(two.ino, two.content, Some(12)).unwrap();
    w.write(b"second draft").unwrap();
    w.finish(Some(two.hash)).unwrap();
    let applied = s.apply(&[r(&two), r(&kept)], &[(two.key(), two.content)]).unwrap();
    assert_eq!(applied.wanted, 0, "the version's blob is the one the file had: nothing to fetch");
    assert_eq!(read_all(&s, &two), b"second draft");
    assert_eq!(read_all(&s, &kept), b"first draft");
    assert_eq!((blob_files(tmp.path()), s.files()), (2, 2));
    let listed: Vec<Ino> = s.versions(Ino(7)).unwrap().iter().map(|i| i.ino).collect();
    assert_eq!(listed, [Ino(20)]);

    // Restored: the file takes the version's content, the version goes,
    // and what it replaced is kept as inode 21.
    let mut back = Inode { content: kept.content, size: kept.size, hash: kept.hash, ..two.clone() };
    back.version = v(1, 3);
    let mut kept2 = two.as_version(Ino(21), 60);
    kept2.version = v(1, 3);
    let gone = Inode { version: v(1, 3), ..kept.tombstone(60) };
    let applied = s.apply(&[r(&back), r(&gone), r(&kept2)], &[]).unwrap();
    assert_eq!(applied.wanted, 0);
    assert_eq!(read_all(&s, &back), b"first draft");
    assert_eq!(read_all(&s, &kept2), b"second draft");
    assert_eq!((blob_files(tmp.path()), s.files()), (2, 2));
    let listed: Vec<Ino> = s.versions(Ino(7)).unwrap().iter().map(|i| i.ino).collect();
    assert_eq!(listed, [Ino(21)]);
    drop(s);
    let s = open(tmp.path());
    assert_eq!(read_all(&s, &back), b"first draft", "through a reopen");
    assert_eq!(s.versions(Ino(7)).unwrap().len(), 1);

    // Restored with nothing kept of what it replaces (max_versions 0, or
    // the same bytes): the version's blob is still the file's.
    let mut again = Inode { content: kept2.content, size: kept2.size, hash: kept2.hash, ..back.clone() };
    again.version = v(1, 4);
    let gone2 = Inode { version: v(1, 4), ..kept2.tombstone(70) };
    let applied = s.apply(&[r(&again), r(&gone2)], &[]).unwrap();
    assert_eq!(applied.wanted, 0, "nothing to fetch");
    assert_eq!(read_all(&s, &again), b"second draft");
    assert!(s.versions(Ino(7)).unwrap().is_empty());
    assert_eq!(s.files(), 1);
}
