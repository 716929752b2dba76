//! What the mount remembers about names for a short while: entries (negative
//! ones too) and directory listings, each valid for the attribute TTL; and
//! the local overlay of times the cluster does not keep (a directory's mtime
//! when something is created or removed in it, ctimes).
//!
//! A plain struct with the clock passed in; no I/O. Every change made through
//! this mount invalidates what it touches, so only changes made elsewhere are
//! seen late, and never later than the TTL. An answer from the cluster that
//! was asked for before a change made here (a listing fetched while a
//! written-back file went up) cannot undo that change: the change is laid
//! over it, or the answer is not kept.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use scs_common::{name, Entry};

/// Past this many remembered names, expired ones are dropped.
const PRUNE_AT: usize = 50_000;
/// Past this many time overlays, the oldest half is dropped.
const MAX_TIMES: usize = 100_000;

/// Local times that override or complement a name's stored ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Times {
    /// A directory's contents changed here at this time.
    pub mtime_ns: Option<i64>,
    /// The inode changed here at this time (attributes, rename, contents).
    pub ctime_ns: Option<i64>,
}

/// Local changes remembered for answers still on their way; an answer
/// asked for before the oldest of them is not kept.
const CHANGES_KEPT: usize = 4096;

/// A change made through this mount.
#[derive(Clone, Debug)]
enum Change {
    /// `path` is now this (`None`: gone).
    Put(String, Option<Entry>),
    /// What is known of `path` (and below it, for a tree) was dropped,
    /// with its parent's listing.
    Forget { path: String, tree: bool },
    /// The entry of `path` alone was dropped.
    ForgetEntry(String),
}

impl Change {
    /// Whether it drops the listing of `dir`.
    fn forgets_listing(&self, dir: &str) -> bool {
        match self {
            Change::Put(..) | Change::ForgetEntry(_) => false,
            Change::Forget { path, tree } => {
                name::parent(path) == dir || (*tree && (path == dir || name::is_inside(dir, path)))
            }
        }
    }

    /// Whether it drops the entry of `p`.
    fn forgets_entry(&self, p: &str) -> bool {
        match self {
            Change::Put(..) => false,
            Change::Forget { path, tree } => path == p || (*tree && name::is_inside(p, path)),
            Change::ForgetEntry(path) => path == p,
        }
    }
}

/// Taken before asking the cluster; says which local changes came after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Asked(u64);

/// Entries and listings with a TTL, plus the time overlay.
#[derive(Debug)]
pub struct MetaCache {
    ttl: Duration,
    entries: HashMap<String, (Instant, Option<Entry>)>,
    listings: HashMap<String, (Instant, Arc<Vec<Entry>>)>,
    times: HashMap<String, Times>,
    /// The latest local changes, numbered from `next - changes.len()`.
    changes: VecDeque<Change>,
    next: u64,
}

impl MetaCache {
    pub fn new(ttl: Duration) -> MetaCache {
        MetaCache {
            ttl,
            entries: HashMap::new(),
            listings: HashMap::new(),
            times: HashMap::new(),
            changes: VecDeque::new(),
            next: 0,
        }
    }

    /// To be taken before asking the cluster for what goes in here.
    pub fn asking(&self) -> Asked {
        Asked(self.next)
    }

    fn record(&mut self, change: Change) {
        if self.changes.len() == CHANGES_KEPT {
            self.changes.pop_front();
        }
        self.changes.push_back(change);
        self.next += 1;
    }

    /// The local changes made since `asked`, or `None` if some of them are
    /// no longer remembered.
    fn since(&self, asked: Asked) -> Option<impl Iterator<Item = &Change>> {
        let first = self.next - self.changes.len() as u64;
        (asked.0 >= first).then(|| self.changes.iter().skip((asked.0 - first) as usize))
    }

    /// The remembered entry of `path` (`Some(None)`: known not to exist),
    /// or `None` when nothing fresh is known.
    pub fn entry(&self, path: &str, now: Instant) -> Option<Option<Entry>> {
        match self.entries.get(path) {
            Some((at, e)) if now.saturating_duration_since(*at) < self.ttl => Some(e.clone()),
            _ => None,
        }
    }

    /// This mount changed `path` to `entry` (`None`: removed it).
    pub fn put_entry(&mut self, path: &str, entry: Option<Entry>, now: Instant) {
        self.record(Change::Put(path.to_string(), entry.clone()));
        self.keep_entry(path, entry, now);
    }

    fn keep_entry(&mut self, path: &str, entry: Option<Entry>, now: Instant) {
        self.prune(now);
        self.entries.insert(path.to_string(), (now, entry));
    }

    /// What the cluster said about `path` when `asked`; kept unless this
    /// mount changed `path` since, in which case the newer word is returned.
    pub fn put_asked_entry(&mut self, path: &str, entry: Option<Entry>, now: Instant, asked: Asked) -> Option<Entry> {
        let (mut newest, mut keep) = (entry, true);
        match self.since(asked) {
            None => keep = false,
            Some(changes) => {
                for c in changes {
                    match c {
                        Change::Put(p, e) if p == path => {
                            newest = e.clone();
                            keep = false;
                        }
                        c if c.forgets_entry(path) => keep = false,
                        _ => {}
                    }
                }
            }
        }
        if keep {
            self.keep_entry(path, newest.clone(), now);
        }
        newest
    }

    /// The remembered children of `dir`, when fresh.
    pub fn listing(&self, dir: &str, now: Instant) -> Option<Arc<Vec<Entry>>> {
        match self.listings.get(dir) {
            Some((at, l)) if now.saturating_duration_since(*at) < self.ttl => Some(l.clone()),
            _ => None,
        }
    }

    /// The listing of `dir` the cluster gave when `asked`, with the changes
    /// made here since laid over it; kept unless one of them dropped it.
    pub fn put_asked_listing(
        &mut self,
        dir: &str,
        mut children: Vec<Entry>,
        now: Instant,
        asked: Asked,
    ) -> Arc<Vec<Entry>> {
        let mut keep = true;
        match self.since(asked) {
            None => keep = false,
            Some(changes) => {
                for c in changes {
                    match c {
                        Change::Put(p, e) if name::parent(p) == dir && !p.is_empty() => {
                            children.retain(|x| x.name != *p);
                            children.extend(e.clone());
                        }
                        c if c.forgets_listing(dir) => keep = false,
                        _ => {}
                    }
                }
            }
        }
        if keep {
            self.put_listing(dir, children, now)
        } else {
            Arc::new(children)
        }
    }

    /// Remembers a listing, and each child's entry with it (so `ls -l`
    /// costs one request, not one per file).
    pub fn put_listing(&mut self, dir: &str, children: Vec<Entry>, now: Instant) -> Arc<Vec<Entry>> {
        self.prune(now);
        for e in &children {
            self.entries.insert(e.name.clone(), (now, Some(e.clone())));
        }
        let l = Arc::new(children);
        self.listings.insert(dir.to_string(), (now, l.clone()));
        l
    }

    /// What the parent's fresh listing says about `path` (`Some(None)`:
    /// not there), or `None` without one. The root has no parent: its own
    /// listing does not name it.
    pub fn child(&self, path: &str, now: Instant) -> Option<Option<Entry>> {
        if path.is_empty() {
            return None;
        }
        let l = self.listing(name::parent(path), now)?;
        Some(l.iter().find(|e| e.name == path).cloned())
    }

    /// This mount stored `path` as `entry` (`None`: removed it): remember
    /// that, in its parent's listing too, which keeps its age (a listing
    /// never looks fresher than what the cluster last said).
    pub fn put_child(&mut self, path: &str, entry: Option<Entry>, now: Instant) {
        self.put_entry(path, entry.clone(), now);
        if let Some((_, l)) = self.listings.get_mut(name::parent(path)) {
            let l = Arc::make_mut(l);
            l.retain(|e| e.name != path);
            l.extend(entry);
        }
    }

    /// How many children the last listing of `dir` had, fresh or not.
    pub fn listed_len(&self, dir: &str) -> Option<usize> {
        self.listings.get(dir).map(|(_, l)| l.len())
    }

    /// Forgets the entry of `path` alone.
    pub fn forget_entry(&mut self, path: &str) {
        self.record(Change::ForgetEntry(path.to_string()));
        self.entries.remove(path);
    }

    /// `path` changed here: forget its entry and its parent's listing.
    pub fn invalidate(&mut self, path: &str) {
        self.record(Change::Forget { path: path.to_string(), tree: false });
        self.entries.remove(path);
        self.listings.remove(name::parent(path));
    }

    /// `path` and everything below it changed here (a directory moved).
    pub fn invalidate_tree(&mut self, path: &str) {
        self.record(Change::Forget { path: path.to_string(), tree: true });
        let below = |p: &str| p == path || name::is_inside(p, path);
        self.entries.retain(|p, _| !below(p));
        self.listings.retain(|p, _| !below(p));
        self.listings.remove(name::parent(path));
    }

    /// Something was created in or removed from `dir` at `now_ns`.
    pub fn touch_dir(&mut self, dir: &str, now_ns: i64) {
        self.bound_times();
        let t = self.times.entry(dir.to_string()).or_default();
        t.mtime_ns = Some(now_ns);
        t.ctime_ns = Some(now_ns);
    }

    /// The attributes of `path` changed at `now_ns`.
    pub fn touch_ctime(&mut self, path: &str, now_ns: i64) {
        self.bound_times();
        self.times.entry(path.to_string()).or_default().ctime_ns = Some(now_ns);
    }

    /// An explicit mtime was stored for `path`: it wins over the overlay.
    pub fn clear_mtime(&mut self, path: &str) {
        if let Some(t) = self.times.get_mut(path) {
            t.mtime_ns = None;
        }
    }

    /// The local times of `path`.
    pub fn times(&self, path: &str) -> Times {
        self.times.get(path).copied().unwrap_or_default()
    }

    /// `from` (and everything below it) is now called `to`.
    pub fn rename_times(&mut self, from: &str, to: &str) {
        let below = |p: &str| p == from || name::is_inside(p, from);
        let moved: Vec<(String, Times)> =
            self.times.iter().filter(|(p, _)| below(p)).map(|(p, t)| (p.clone(), *t)).collect();
        self.times.retain(|p, _| !(p == to || name::is_inside(p, to)));
        for (old, t) in moved {
            self.times.remove(&old);
            self.times.insert(format!("{to}{}", &old[from.len()..]), t);
        }
    }

    /// `path` is gone: its overlay goes with it.
    pub fn forget_times(&mut self, path: &str) {
        self.times.remove(path);
    }

    fn prune(&mut self, now: Instant) {
        if self.entries.len() + self.listings.len() < PRUNE_AT {
            return;
        }
        let ttl = self.ttl;
        self.entries.retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
        self.listings.retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
    }

    fn bound_times(&mut self) {
        if self.times.len() < MAX_TIMES {
            return;
        }
        let mut all: Vec<(i64, String)> =
            self.times.iter().map(|(p, t)| (t.mtime_ns.unwrap_or(0).max(t.ctime_ns.unwrap_or(0)), p.clone())).collect();
        all.sort();
        for (_, p) in all.into_iter().take(MAX_TIMES / 2) {
            self.times.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scs_common::{ContentHash, Kind, Version};

    fn file(name: &str, size: u64) -> Entry {
        Entry {
            name: name.into(),
            version: Version::ZERO,
            kind: Kind::File,
            size,
            hash: ContentHash::default(),
            mode: 0o644,
            mtime_ns: 1,
            deleted: false,
            holders: Vec::new(),
        }
    }

    #[test]
    fn entries_expire_after_the_ttl_and_negative_answers_are_remembered() {
        let t0 = Instant::now();
        let mut c = MetaCache::new(Duration::from_secs(1));
        c.put_entry("a", Some(file("a", 3)), t0);
        c.put_entry("gone", None, t0);
        assert_eq!(c.entry("a", t0 + Duration::from_millis(999)).unwrap().unwrap().size, 3);
        assert_eq!(c.entry("gone", t0), Some(None));
        assert_eq!(c.entry("a", t0 + Duration::from_secs(1)), None, "stale after the TTL");
        assert_eq!(c.entry("never", t0), None);
    }

    #[test]
    fn a_listing_fills_the_entries_of_its_children() {
        let t0 = Instant::now();
        let mut c = MetaCache::new(Duration::from_secs(1));
        c.put_listing("d", vec![file("d/x", 1), file("d/y", 2)], t0);
        assert_eq!(c.entry("d/y", t0).unwrap().unwrap().size, 2);
        assert_eq!(c.listing("d", t0).unwrap().len(), 2);
    }

    #[test]
    fn the_root_listing_says_nothing_about_the_root_itself() {
        // It once answered "the root does not exist" (the root's listing
        // does not name it), and the kernel then failed every path in the
        // mount with ENOENT until the listing expired.
        let t0 = Instant::now();
        let mut c = MetaCache::new(Duration::from_secs(1));
        c.put_listing("", vec![file("x", 1)], t0);
        assert_eq!(c.child("", t0), None);
        assert_eq!(c.child("y", t0), Some(None));
        assert_eq!(c.child("x", t0).unwrap().unwrap().size, 1);
    }

    #[test]
    fn a_local_change_forgets_the_name_and_its_parent_listing() {
        let t0 = Instant::now();
        let mut c = MetaCache::new(Duration::from_secs(1));
        c.put_listing("d", vec![file("d/x", 1)], t0);
        c.put_listing("e", vec![file("e/z", 1)], t0);
        c.invalidate("d/x");
        assert_eq!(c.entry("d/x", t0), None);
        assert!(c.listing("d", t0).is_none());
        assert!(c.listing("e", t0).is_some());
    }

    #[test]
    fn a_moved_tree_is_forgotten_whole() {
        let t0 = Instant::now();
        let mut c = MetaCache::new(Duration::from_secs(1));
        c.put_listing("d", vec![file("d/x", 1)], t0);
        c.put_listing("d/sub", vec![file("d/sub/y", 1)], t0);
        c.put_entry("dd", Some(file("dd", 1)), t0);
        c.invalidate_tree("d");
        assert!(c.listing("d", t0).is_none() && c.listing("d/sub", t0).is_none());
        assert_eq!(c.entry("d/sub/y", t0), None);
        assert!(c.entry("dd", t0).is_some(), "a sibling sharing the prefix stays");
    }

    #[test]
    fn a_listing_asked_for_before_a_file_went_up_here_still_shows_the_file() {
        let t0 = Instant::now();
        let mut c = MetaCache::new(Duration::from_secs(1));
        let asked = c.asking();
        // Meanwhile this mount stores d/new and removes d/old.
        c.put_child("d/new", Some(file("d/new", 4)), t0);
        c.put_child("d/old", None, t0);
        // The cluster's answer, from before both.
        let l = c.put_asked_listing("d", vec![file("d/old", 1), file("d/x", 1)], t0, asked);
        let names: Vec<&str> = l.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["d/x", "d/new"]);
        assert_eq!(c.child("d/new", t0).unwrap().unwrap().size, 4, "kept, with the change");
        assert_eq!(c.child("d/old", t0), Some(None));
        // An answer asked for after the changes is taken as it is.
        let asked = c.asking();
        c.put_asked_listing("d", vec![file("d/x", 1)], t0, asked);
        assert_eq!(c.listing("d", t0).unwrap().len(), 1);
    }

    #[test]
    fn an_answer_asked_for_before_a_name_was_dropped_here_is_not_kept() {
        let t0 = Instant::now();
        let mut c = MetaCache::new(Duration::from_secs(1));
        let asked = c.asking();
        c.invalidate("d/moved");
        let l = c.put_asked_listing("d", vec![file("d/moved", 1)], t0, asked);
        assert_eq!(l.len(), 1, "returned to the asker");
        assert!(c.listing("d", t0).is_none(), "but not kept");
        assert_eq!(c.put_asked_entry("d/moved", Some(file("d/moved", 1)), t0, asked).unwrap().size, 1);
        assert_eq!(c.entry("d/moved", t0), None);
    }

    #[test]
    fn an_entry_asked_for_before_a_local_store_gives_way_to_it() {
        let t0 = Instant::now();
        let mut c = MetaCache::new(Duration::from_secs(1));
        let asked = c.asking();
        c.put_child("f", Some(file("f", 9)), t0);
        assert_eq!(c.put_asked_entry("f", None, t0, asked).unwrap().size, 9);
        assert_eq!(c.entry("f", t0).unwrap().unwrap().size, 9);
        // An unrelated name is kept as the cluster said.
        assert_eq!(c.put_asked_entry("g", None, t0, asked), None);
        assert_eq!(c.entry("g", t0), Some(None));
    }

    #[test]
    fn an_answer_older_than_every_remembered_change_is_not_kept() {
        let t0 = Instant::now();
        let mut c = MetaCache::new(Duration::from_secs(1));
        let asked = c.asking();
        for i in 0..=CHANGES_KEPT {
            c.put_entry(&format!("e/{i}"), None, t0);
        }
        c.put_asked_listing("d", vec![file("d/x", 1)], t0, asked);
        assert!(c.listing("d", t0).is_none());
    }

    #[test]
    fn directory_times_follow_renames_and_yield_to_an_explicit_mtime() {
        let mut c = MetaCache::new(Duration::from_secs(1));
        c.touch_dir("a/b", 5);
        c.touch_ctime("a/b/f", 7);
        c.rename_times("a", "z");
        assert_eq!(c.times("z/b"), Times { mtime_ns: Some(5), ctime_ns: Some(5) });
        assert_eq!(c.times("z/b/f").ctime_ns, Some(7));
        assert_eq!(c.times("a/b"), Times::default());
        c.clear_mtime("z/b");
        assert_eq!(c.times("z/b"), Times { mtime_ns: None, ctime_ns: Some(5) });
    }
}
