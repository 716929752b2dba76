use super::*;
use sha2::{Digest, Sha256};

fn v(term: u64, seq: u64) -> Version {
    Version::new(Term(term), seq)
}

fn file(name: &str, version: Version, content: &[u8], holders: &[u32]) -> Entry {
    Entry {
        name: name.into(),
        version,
        kind: Kind::File,
        size: content.len() as u64,
        hash: ContentHash(Sha256::digest(content).into()),
        mode: 0o644,
        mtime_ns: 1,
        deleted: false,
        holders: holders.iter().map(|&i| NodeId(i)).collect(),
    }
}

fn dir(name: &str, version: Version) -> Entry {
    Entry { kind: Kind::Dir, size: 0, hash: ContentHash::default(), holders: vec![], ..file(name, version, b"", &[]) }
}

/// Writes the blob and commits the entry, as a holder does on upload.
fn put(store: &Store, e: &Entry, content: &[u8]) -> Applied {
    let mut w = store.new_blob(&e.key(), e.version, Some(content.len() as u64)).unwrap();
    w.write(content).unwrap();
    w.finish(Some(e.hash)).unwrap();
    store.apply(std::slice::from_ref(e), &[(e.key(), e.version)]).unwrap()
}

fn read_all(store: &Store, e: &Entry) -> Vec<u8> {
    let mut r = store.read_blob(&e.key(), e.version, 0, e.size).unwrap();
    let mut out = Vec::new();
    loop {
        let c = r.next_chunk(7).unwrap();
        if c.is_empty() {
            break;
        }
        out.extend(c);
    }
    assert_eq!(ContentHash(Sha256::digest(&out).into()), e.hash);
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
    let e = file("photos/cat.png", v(1, 1), b"meow", &[1, 2]);
    {
        let s = open(tmp.path());
        assert_eq!(put(&s, &e, b"meow"), Applied { applied: 1, stale: 0, wanted: 0 });
    }
    let (s, report) = Store::open(tmp.path(), NodeId(1), None).unwrap();
    assert_eq!(report, OpenReport { blobs_held: 1, ..Default::default() });
    assert_eq!(s.lookup("photos/cat.png").unwrap(), Lookup::Live(e.clone()));
    assert_eq!(read_all(&s, &e), b"meow");
    assert_eq!(s.files(), 1);
}

#[test]
fn an_older_version_never_replaces_a_newer_one() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let new = file("a", v(2, 1), b"new", &[1]);
    let old = file("a", v(1, 9), b"old", &[1]);
    put(&s, &new, b"new");
    assert_eq!(put(&s, &old, b"old").stale, 1);
    assert_eq!(read_all(&s, &new), b"new");
    assert_eq!(blob_files(tmp.path()), 1, "the stale blob was removed");
    assert_eq!(s.apply(std::slice::from_ref(&new), &[]).unwrap().stale, 1, "re-applying is a no-op");
}

#[test]
fn an_overwrite_replaces_the_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    put(&s, &file("a", v(1, 1), b"one", &[1]), b"one");
    let two = file("a", v(1, 2), b"two!", &[1]);
    put(&s, &two, b"two!");
    assert_eq!(read_all(&s, &two), b"two!");
    assert_eq!(blob_files(tmp.path()), 1);
    assert_eq!(s.files(), 1);
}

#[test]
fn a_tombstone_removes_the_blob_and_the_name() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let e = file("d/a", v(1, 1), b"x", &[1]);
    put(&s, &e, b"x");
    s.apply(&[e.tombstone(v(1, 2), 5)], &[]).unwrap();
    assert_eq!(s.lookup("d/a").unwrap(), Lookup::Absent);
    assert_eq!(s.lookup("d").unwrap(), Lookup::Absent, "the implied directory went with it");
    assert!(s.entry(&e.key()).unwrap().unwrap().deleted, "the tombstone is kept");
    assert_eq!(blob_files(tmp.path()), 0);
    assert_eq!(s.files(), 0);
    // The delayed upload of the old version cannot bring it back.
    assert_eq!(s.apply(std::slice::from_ref(&e), &[]).unwrap().stale, 1);
    assert_eq!(s.lookup("d/a").unwrap(), Lookup::Absent);
}

#[test]
fn a_rename_moves_the_blob_instead_of_fetching_it() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let a = file("a", v(1, 1), b"content", &[1, 2]);
    put(&s, &a, b"content");
    let b = Entry { name: "dir/b".into(), version: v(1, 3), ..a.clone() };
    // The new name first: the blob is still found, since both are in one batch.
    let applied = s.apply(&[b.clone(), a.tombstone(v(1, 2), 9)], &[]).unwrap();
    assert_eq!(applied, Applied { applied: 2, stale: 0, wanted: 0 });
    assert_eq!(read_all(&s, &b), b"content");
    assert_eq!(s.lookup("a").unwrap(), Lookup::Absent);
    assert_eq!(blob_files(tmp.path()), 1);
}

#[test]
fn a_file_we_should_hold_but_lack_is_wanted() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let mine = file("mine", v(1, 1), b"m", &[1, 2]);
    let theirs = file("theirs", v(1, 2), b"t", &[2, 3]);
    assert_eq!(s.apply(&[mine.clone(), theirs], &[]).unwrap().wanted, 1);
    assert_eq!(s.wanted(10).unwrap(), vec![mine.clone()]);
    put(&s, &mine, b"m");
    assert!(s.wanted(10).unwrap().is_empty());
    assert_eq!(s.files(), 1);
}

#[test]
fn listing_shows_files_and_explicit_and_implied_dirs_once() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    s.apply(
        &[
            file("top.txt", v(1, 1), b"", &[]),
            dir("photos", v(1, 2)),
            file("photos/2024/a.jpg", v(1, 3), b"", &[]),
            file("photos/2024/b.jpg", v(1, 4), b"", &[]),
            file("photos/cat.png", v(1, 5), b"", &[]),
            file("photos-old/x", v(1, 6), b"", &[]),
            dir("empty", v(1, 7)),
        ],
        &[],
    )
    .unwrap();
    let names = |d: &str| s.list(d).unwrap().into_iter().map(|e| (e.name, e.kind)).collect::<Vec<_>>();
    assert_eq!(
        names(""),
        vec![
            ("empty".into(), Kind::Dir),
            ("photos".into(), Kind::Dir),
            ("photos-old".into(), Kind::Dir),
            ("top.txt".into(), Kind::File)
        ]
    );
    assert_eq!(names("photos"), vec![("photos/2024".into(), Kind::Dir), ("photos/cat.png".into(), Kind::File)]);
    assert!(names("empty").is_empty());
    assert!(s.has_children("photos").unwrap());
    assert!(!s.has_children("empty").unwrap());
    assert!(matches!(s.lookup("photos/2024").unwrap(), Lookup::Implied(_)));
    assert_eq!(s.descendants("photos").unwrap().len(), 3);
}

#[test]
fn since_returns_newer_entries_in_version_order() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    s.apply(&[file("b", v(2, 1), b"", &[]), file("a", v(1, 5), b"", &[]), file("c", v(2, 7), b"", &[])], &[]).unwrap();
    let names = |since, limit| s.since(since, limit).unwrap().into_iter().map(|e| e.name).collect::<Vec<_>>();
    assert_eq!(names(Version::ZERO, 10), vec!["a", "b", "c"]);
    assert_eq!(names(v(1, 5), 10), vec!["b", "c"]);
    assert_eq!(names(v(1, 6), 1), vec!["b"]);
    assert_eq!(s.max_version().unwrap(), v(2, 7));
    // Overwriting "a" moves it to the end.
    s.apply(&[file("a", v(3, 1), b"", &[])], &[]).unwrap();
    assert_eq!(names(Version::ZERO, 10), vec!["b", "c", "a"]);
}

#[test]
fn reopening_cleans_temp_files_orphans_and_notices_missing_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let kept = file("kept", v(1, 1), b"k", &[1]);
    let lost = file("lost", v(1, 2), b"l", &[1]);
    {
        let s = open(tmp.path());
        put(&s, &kept, b"k");
        put(&s, &lost, b"l");
        // A crash mid-upload leaves a temp file, and one after the rename but
        // before the commit leaves an orphan blob.
        let mut w = s.new_blob(&Key::of_name("half"), v(1, 3), Some(10)).unwrap();
        w.write(b"12345").unwrap();
        std::mem::forget(w);
        let orphan = file("orphan", v(1, 4), b"o", &[1]);
        let mut w = s.new_blob(&orphan.key(), orphan.version, Some(1)).unwrap();
        w.write(b"o").unwrap();
        w.finish(None).unwrap();
    }
    fs::remove_file(Layout::new(tmp.path()).blob(&lost.key(), lost.version)).unwrap();
    let (s, report) = Store::open(tmp.path(), NodeId(1), None).unwrap();
    // A blob without an entry may be an acknowledged replica whose entry is
    // still on its way: it is kept, and its entry finds it when it comes.
    assert_eq!(report, OpenReport { temp_files_removed: 1, orphan_blobs_removed: 0, blobs_missing: 1, blobs_held: 1 });
    assert_eq!(s.wanted(10).unwrap(), vec![lost]);
    assert_eq!(read_all(&s, &kept), b"k");
    let orphan = file("orphan", v(1, 4), b"o", &[1]);
    assert_eq!(s.apply(std::slice::from_ref(&orphan), &[]).unwrap(), Applied { applied: 1, stale: 0, wanted: 0 });
    assert_eq!(read_all(&s, &orphan), b"o");
}

#[test]
fn a_rename_whose_halves_come_in_separate_batches_keeps_the_blob() {
    for tombstone_first in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let s = open(tmp.path());
        let a = file("a", v(1, 1), b"content", &[1, 2]);
        put(&s, &a, b"content");
        let b = Entry { name: "b".into(), version: v(1, 3), ..a.clone() };
        let tomb = a.tombstone(v(1, 2), 9);
        let (first, second) = if tombstone_first { (&tomb, &b) } else { (&b, &tomb) };
        s.apply(std::slice::from_ref(first), &[]).unwrap();
        s.apply(std::slice::from_ref(second), &[]).unwrap();
        if !s.holds(&b.key(), b.version).unwrap() {
            // The new name came first and is wanted: the released copy is at hand.
            assert!(s.place_from_local(&b).unwrap(), "tombstone_first={tombstone_first}");
        }
        assert_eq!(read_all(&s, &b), b"content", "tombstone_first={tombstone_first}");
    }
}

#[test]
fn a_released_copy_that_went_bad_is_never_placed_again() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let a = file("a", v(1, 1), b"content", &[1, 2]);
    put(&s, &a, b"content");
    // The copy rots on disk, then a delete releases it.
    let blob = Layout::new(tmp.path()).blob(&a.key(), a.version);
    std::fs::write(&blob, b"c0ntent").unwrap();
    s.apply(&[a.tombstone(v(1, 2), 9)], &[]).unwrap();
    let b = Entry { name: "b".into(), version: v(1, 3), ..a.clone() };
    s.apply(std::slice::from_ref(&b), &[]).unwrap();
    assert!(!s.holds(&b.key(), b.version).unwrap(), "placed without a check");
    assert!(!s.place_from_local(&b).unwrap(), "a bad released copy was placed");
    assert!(!s.holds(&b.key(), b.version).unwrap());
    assert!(!Layout::new(tmp.path()).released(&a.hash).exists(), "the bad copy was kept");
}

#[test]
fn a_hard_linked_blob_is_not_mistaken_for_an_old_orphan() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let a = file("a", v(1, 1), b"x", &[1]);
    put(&s, &a, b"x");
    // Age the blob's mtime by an hour; a setattr links it under a new version.
    let path = Layout::new(tmp.path()).blob(&a.key(), a.version);
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    fs::File::options().write(true).open(&path).unwrap().set_modified(hour_ago).unwrap();
    let a2 = Entry { mode: 0o600, version: v(1, 2), ..a.clone() };
    s.apply(std::slice::from_ref(&a2), &[]).unwrap();
    assert_eq!(s.sweep_orphans(std::time::Duration::from_secs(600), std::time::Duration::from_secs(600)).unwrap(), 0);
    assert_eq!(read_all(&s, &a2), b"x");
}

#[test]
fn content_that_does_not_match_its_hash_never_lands() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let e = file("a", v(1, 1), b"right", &[1]);
    let mut w = s.new_blob(&e.key(), e.version, Some(5)).unwrap();
    w.write(b"wrong").unwrap();
    assert!(matches!(w.finish(Some(e.hash)), Err(Error::Corrupt(_))));
    let mut w = s.new_blob(&e.key(), e.version, Some(5)).unwrap();
    assert!(matches!(w.write(b"toolong"), Err(Error::Invalid(_))));
    drop(w);
    assert_eq!(blob_files(tmp.path()), 0);
    assert_eq!(fs::read_dir(tmp.path().join("tmp")).unwrap().count(), 0);
}

#[test]
fn capacity_counts_held_and_wanted_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _) = Store::open(tmp.path(), NodeId(1), Some(2)).unwrap();
    let a = file("a", v(1, 1), b"a", &[1]);
    put(&s, &a, b"a");
    s.apply(&[file("b", v(1, 2), b"b", &[1])], &[]).unwrap();
    assert!(!s.has_room_for(&Key::of_name("c")).unwrap());
    assert!(s.has_room_for(&a.key()).unwrap(), "replacing a held file needs no room");
}

#[test]
fn a_quarantined_blob_is_moved_aside_and_wanted() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let e = file("a", v(1, 1), b"abc", &[1]);
    put(&s, &e, b"abc");
    s.quarantine(&e.key(), e.version).unwrap();
    assert!(!s.holds(&e.key(), e.version).unwrap());
    assert_eq!(s.wanted(10).unwrap(), vec![e]);
    assert_eq!(fs::read_dir(tmp.path().join("corrupt")).unwrap().count(), 1);
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
fn two_stores_with_the_same_entries_have_the_same_digests() {
    let (t1, t2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(t1.path()), open(t2.path()));
    let e1 = file("x", v(1, 1), b"1", &[]);
    let e2 = file("x", v(1, 2), b"2", &[]);
    let e3 = file("y", v(1, 3), b"3", &[]);
    a.apply(&[e1.clone(), e2.clone(), e3.clone()], &[]).unwrap();
    b.apply(std::slice::from_ref(&e3), &[]).unwrap();
    assert_ne!(a.digests().unwrap(), b.digests().unwrap());
    b.apply(&[e2.clone(), e1.clone()], &[]).unwrap();
    assert_eq!(a.digests().unwrap(), b.digests().unwrap(), "order does not matter, stale entries do not count");
    let bucket = digest::bucket_of(&e3.key());
    assert!(a.bucket(bucket).unwrap().contains(&(e3.key(), e3.version)));
    assert_eq!(a.entries_for(&[e3.key(), Key::of_name("nope")]).unwrap(), vec![e3.clone()]);
}

#[test]
fn only_tombstones_are_purged_and_digests_follow() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let live = file("live", v(1, 1), b"", &[]);
    let gone = file("gone", v(1, 2), b"", &[]);
    s.apply(&[live.clone(), gone.clone()], &[]).unwrap();
    let before = s.digests().unwrap();
    let tomb = gone.tombstone(v(1, 3), 5);
    s.apply(std::slice::from_ref(&tomb), &[]).unwrap();
    assert_eq!(s.old_tombstones(10, 10).unwrap(), vec![(tomb.key(), tomb.version)]);
    assert_eq!(s.purge(&[(live.key(), live.version), (tomb.key(), v(1, 9)), (tomb.key(), tomb.version)]).unwrap(), 1);
    assert!(s.entry(&tomb.key()).unwrap().is_none());
    assert!(s.entry(&live.key()).unwrap().is_some());
    let mut expected = before;
    expected.toggle(&gone.key(), gone.version);
    assert_eq!(s.digests().unwrap(), expected);
    assert!(s.since(Version::ZERO, 10).unwrap().iter().all(|e| e.name == "live"));
}

#[test]
fn digests_survive_reopening_and_are_rebuilt_when_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = {
        let s = open(tmp.path());
        s.apply(&[file("a", v(1, 1), b"", &[]), file("b", v(1, 2), b"", &[])], &[]).unwrap();
        s.digests().unwrap()
    };
    assert_eq!(open(tmp.path()).digests().unwrap(), d);
}

#[test]
fn a_replicated_blob_of_a_version_that_lost_is_removed_when_its_entry_arrives() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let older = file("race", v(1, 1), b"old", &[1]);
    let newer = file("race", v(1, 2), b"new", &[1]);
    // Both blobs were replicated here; the newer entry committed first.
    for (e, c) in [(&older, b"old"), (&newer, b"new")] {
        let mut w = s.new_blob(&e.key(), e.version, Some(3)).unwrap();
        w.write(c).unwrap();
        w.finish(Some(e.hash)).unwrap();
    }
    s.apply(std::slice::from_ref(&newer), &[]).unwrap();
    assert_eq!(s.apply(&[older], &[]).unwrap().stale, 1);
    assert_eq!(blob_files(tmp.path()), 1);
    assert_eq!(read_all(&s, &newer), b"new");
}

#[test]
fn the_sweep_removes_only_old_unreferenced_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let kept = file("kept", v(1, 1), b"k", &[1]);
    put(&s, &kept, b"k");
    let stray = file("stray", v(1, 2), b"s", &[1]);
    let mut w = s.new_blob(&stray.key(), stray.version, Some(1)).unwrap();
    w.write(b"s").unwrap();
    w.finish(None).unwrap();
    assert_eq!(
        s.sweep_orphans(std::time::Duration::from_secs(600), std::time::Duration::from_secs(600)).unwrap(),
        0,
        "too young"
    );
    assert_eq!(s.sweep_orphans(std::time::Duration::ZERO, std::time::Duration::from_secs(600)).unwrap(), 1);
    assert_eq!(blob_files(tmp.path()), 1);
    assert_eq!(read_all(&s, &kept), b"k");
}

#[test]
fn a_replicated_blob_that_lands_after_its_entry_left_it_out_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let e = file("late", v(1, 1), b"abc", &[2, 3]);
    s.apply(std::slice::from_ref(&e), &[]).unwrap();
    let mut w = s.new_blob(&e.key(), e.version, Some(3)).unwrap();
    w.write(b"abc").unwrap();
    w.finish(Some(e.hash)).unwrap();
    assert!(s.settle_replicated(&e.key(), e.version).unwrap());
    assert_eq!(blob_files(tmp.path()), 0);
    // Before its entry exists, a landed blob is kept (the Apply will follow).
    let f = file("early", v(1, 2), b"x", &[1]);
    let mut w = s.new_blob(&f.key(), f.version, Some(1)).unwrap();
    w.write(b"x").unwrap();
    w.finish(Some(f.hash)).unwrap();
    assert!(!s.settle_replicated(&f.key(), f.version).unwrap());
    assert_eq!(blob_files(tmp.path()), 1);
}

#[test]
fn a_withdrawn_entry_goes_and_the_older_one_can_come_back() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    let old = file("w", v(1, 1), b"old", &[1]);
    let unacked = file("w", v(2, 1), b"new", &[1]);
    put(&s, &unacked, b"new");
    assert!(!s.withdraw(&unacked.key(), v(2, 9)).unwrap(), "only at that exact version");
    assert!(s.withdraw(&unacked.key(), unacked.version).unwrap());
    assert_eq!(s.lookup("w").unwrap(), Lookup::Absent);
    assert_eq!(s.files(), 0);
    s.apply(std::slice::from_ref(&old), &[]).unwrap();
    assert_eq!(s.lookup("w").unwrap(), Lookup::Live(old));
}

#[test]
fn the_terms_a_node_led_survive_a_restart_and_only_the_last_ones_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = open(tmp.path());
        assert!(s.led_terms().unwrap().is_empty());
        s.add_led_term(Term(7)).unwrap();
        s.add_led_term(Term(3)).unwrap();
        s.add_led_term(Term(7)).unwrap();
    }
    let s = open(tmp.path());
    assert_eq!(s.led_terms().unwrap(), vec![Term(3), Term(7)]);
    for t in 10..10 + LED_TERMS_KEPT as u64 {
        s.add_led_term(Term(t)).unwrap();
    }
    let kept = s.led_terms().unwrap();
    assert_eq!(kept.len(), LED_TERMS_KEPT);
    assert_eq!(kept.first(), Some(&Term(10)), "the oldest are dropped first");
}
