//! What the mount remembers of the cluster for a short while, each for the
//! attribute TTL: inodes by number (negative answers too), names by
//! (directory, name), and directory listings by directory; plus the
//! directory times of files made here that the cluster does not have yet.
//!
//! A plain struct with the clock passed in; no I/O. Every change made
//! through this mount is recorded here, so only changes made elsewhere are
//! seen late, and never later than the TTL. An answer from the cluster that
//! was asked for before a change made here (a listing fetched while a
//! written-back file went up) cannot undo that change: the change is laid
//! over it, or the answer is not kept.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use scs_common::{DirStep, Ino, Inode, Kind, Listed, Version};

/// Past this many remembered items, expired ones are dropped; past twice as
/// many as were left fresh then, again (see [`MetaCache::prune`]).
const PRUNE_AT: usize = 50_000;
/// Past this many directory times, the oldest half is dropped.
const MAX_DIR_TIMES: usize = 100_000;
/// Local changes remembered for answers still on their way; an answer
/// asked for before the oldest of them is not kept.
const CHANGES_KEPT: usize = 4096;

/// A name in a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Child {
    pub name: String,
    pub ino: Ino,
    pub kind: Kind,
}

/// A change made through this mount.
#[derive(Clone, Debug)]
enum Change {
    /// `name` in `dir` now leads to `child` (`None`: it is gone).
    Name { dir: Ino, name: String, child: Option<Child> },
    /// What `name` in `dir` leads to is not known any more.
    NameDropped { dir: Ino, name: String },
    /// The inode was set or dropped here.
    Attr(Ino),
    /// The listing of a directory was dropped.
    Listing(Ino),
}

/// Taken before asking the cluster; says which local changes came after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Asked(u64);

/// A directory's children as last listed.
pub type Listing = Arc<Vec<Child>>;

/// A remembered listing: its names as of `at`, of the directory's inode at
/// `version` when that is known (see [`MetaCache::dir_stepped`]); the
/// children's inodes came with it at `listed_at`. `early`: steps of this
/// mount's changes from a later version than `version`, answered before
/// the step that leads to it, with the time each was asked for.
#[derive(Debug)]
struct Held {
    at: Instant,
    listed_at: Instant,
    version: Option<Version>,
    children: Listing,
    early: Vec<(DirStep, Instant)>,
}

/// Steps kept per listing while the one before them is awaited (changes
/// answered out of order, by the write-back uploaders or by several
/// writers at once); beyond, the oldest goes.
const EARLY_STEPS: usize = 32;

/// About how long a walk of a listed directory takes per child (measured:
/// `ls -l` of 100,000 files through a mount, 0.75 s with the listing).
pub const WALK_PER_CHILD: Duration = Duration::from_micros(8);

/// Inodes, names and listings with a TTL, and directory times.
#[derive(Debug)]
pub struct MetaCache {
    ttl: Duration,
    attrs: HashMap<Ino, (Instant, Option<Inode>)>,
    names: HashMap<(Ino, String), (Instant, Option<Ino>)>,
    listings: HashMap<Ino, Held>,
    /// A file was made in or removed from the directory here at this time
    /// and the cluster does not know yet.
    /// Local changes of directories' entries: when (ns), and when it was noted.
    dir_times: HashMap<Ino, (i64, Instant)>,
    /// The latest local changes, numbered from `next - changes.len()`.
    changes: VecDeque<Change>,
    next: u64,
    /// The item count at which the next prune runs...
    prune_at: usize,
    /// ... or at [`PRUNE_AT`] once a TTL has passed since this, the last.
    pruned: Option<Instant>,
}

impl MetaCache {
    pub fn new(ttl: Duration) -> MetaCache {
        MetaCache {
            ttl,
            attrs: HashMap::new(),
            names: HashMap::new(),
            listings: HashMap::new(),
            dir_times: HashMap::new(),
            changes: VecDeque::new(),
            next: 0,
            prune_at: PRUNE_AT,
            pruned: None,
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

    fn fresh(&self, at: Instant, now: Instant) -> bool {
        now.saturating_duration_since(at) < self.ttl
    }

    // ----- inodes -----

    /// The remembered inode `ino` (`Some(None)`: known to be gone), or
    /// `None` when nothing fresh is known.
    pub fn attr(&self, ino: Ino, now: Instant) -> Option<Option<Inode>> {
        match self.attrs.get(&ino) {
            Some((at, i)) if self.fresh(*at, now) => Some(i.clone()),
            _ => None,
        }
    }

    /// This mount changed `ino` to `inode` (`None`: removed it).
    pub fn put_attr(&mut self, ino: Ino, inode: Option<Inode>, now: Instant) {
        self.record(Change::Attr(ino));
        self.prune(now);
        self.attrs.insert(ino, (now, inode));
    }

    /// `ino` changed here in a way only the cluster knows (a link count, a
    /// directory's times): the next look asks.
    pub fn forget_attr(&mut self, ino: Ino) {
        self.record(Change::Attr(ino));
        self.attrs.remove(&ino);
    }

    /// Keeps `inode` unless what is kept is a newer version of it.
    fn keep_attr(&mut self, ino: Ino, inode: Option<Inode>, now: Instant) {
        if let (Some(new), Some((at, Some(old)))) = (&inode, self.attrs.get(&ino)) {
            if self.fresh(*at, now) && old.version > new.version {
                return;
            }
        }
        self.prune(now);
        self.attrs.insert(ino, (now, inode));
    }

    /// What the cluster said about `ino` when `asked`: kept unless this
    /// mount changed `ino` since; returns the newest word.
    pub fn put_asked_attr(&mut self, ino: Ino, inode: Option<Inode>, now: Instant, asked: Asked) -> Option<Inode> {
        if self.changed_attr_since(ino, asked) {
            return match self.attr(ino, now) {
                Some(local) => local,
                None => inode,
            };
        }
        self.keep_attr(ino, inode, now);
        self.attr(ino, now).flatten()
    }

    fn changed_attr_since(&self, ino: Ino, asked: Asked) -> bool {
        match self.since(asked) {
            None => true,
            Some(mut changes) => changes.any(|c| matches!(c, Change::Attr(i) if *i == ino)),
        }
    }

    // ----- names -----

    /// What `name` in `dir` leads to (`Some(None)`: nothing), from a
    /// remembered lookup or the directory's fresh listing; `None` when
    /// nothing fresh is known.
    pub fn name(&self, dir: Ino, name: &str, now: Instant) -> Option<Option<Ino>> {
        if let Some((at, ino)) = self.names.get(&(dir, name.to_string())) {
            if self.fresh(*at, now) {
                return Some(*ino);
            }
        }
        let l = self.listing(dir, now)?;
        Some(l.iter().find(|c| c.name == name).map(|c| c.ino))
    }

    /// This mount made `name` in `dir` lead to `child` (`None`: removed
    /// it). A remembered listing of `dir` is changed too, and keeps its
    /// age (a listing never looks fresher than what the cluster last said).
    pub fn put_name(&mut self, dir: Ino, name: &str, child: Option<Child>, now: Instant) {
        self.record(Change::Name { dir, name: name.to_string(), child: child.clone() });
        self.prune(now);
        self.names.insert((dir, name.to_string()), (now, child.as_ref().map(|c| c.ino)));
        if let Some(held) = self.listings.get_mut(&dir) {
            let l = Arc::make_mut(&mut held.children);
            l.retain(|c| c.name != name);
            l.extend(child);
        }
    }

    /// What `name` in `dir` leads to is not known any more (a change that
    /// failed half way): the next look asks, and the listing goes too.
    pub fn forget_name(&mut self, dir: Ino, name: &str) {
        self.record(Change::NameDropped { dir, name: name.to_string() });
        self.names.remove(&(dir, name.to_string()));
        self.forget_listing(dir);
    }

    /// What the cluster said `name` in `dir` leads to when `asked`: kept
    /// (with the inode) unless this mount changed the name since; returns
    /// the newest word: the inode the name leads to, if any.
    pub fn put_asked_name(
        &mut self,
        dir: Ino,
        name: &str,
        inode: Option<Inode>,
        now: Instant,
        asked: Asked,
    ) -> Option<Ino> {
        let mut keep = true;
        let mut newest = inode.as_ref().map(|i| i.ino);
        match self.since(asked) {
            None => keep = false,
            Some(changes) => {
                for c in changes {
                    match c {
                        Change::Name { dir: d, name: n, child } if *d == dir && n == name => {
                            newest = child.as_ref().map(|c| c.ino);
                            keep = false;
                        }
                        Change::NameDropped { dir: d, name: n } if *d == dir && n == name => keep = false,
                        _ => {}
                    }
                }
            }
        }
        if keep {
            self.prune(now);
            self.names.insert((dir, name.to_string()), (now, newest));
        }
        if let Some(i) = inode.filter(|i| Some(i.ino) == newest) {
            if !self.changed_attr_since(i.ino, asked) {
                self.keep_attr(i.ino, Some(i), now);
            }
        }
        newest
    }

    // ----- listings -----

    /// The remembered children of `dir`, when fresh.
    pub fn listing(&self, dir: Ino, now: Instant) -> Option<Listing> {
        match self.listings.get(&dir) {
            Some(held) if self.fresh(held.at, now) => Some(held.children.clone()),
            _ => None,
        }
    }

    /// The remembered children of `dir` when fresh enough to walk: at least
    /// half the TTL left, and time for a walk that looks at each child
    /// (`ls -l`, about [`WALK_PER_CHILD`] each) before their attributes,
    /// which came with the listing, expire. Otherwise the caller lists
    /// again: one request, where children expiring mid-walk would cost one
    /// each (a second `ls -l` of 100,000 files took 11.5 s that way).
    pub fn listing_to_walk(&self, dir: Ino, now: Instant) -> Option<Listing> {
        // Kept fresh by changes made here or not, the inodes that came with
        // it are as old as the listing.
        let Held { listed_at, children: l, .. } = self.listings.get(&dir)?;
        let age = now.saturating_duration_since(*listed_at);
        let walk = WALK_PER_CHILD.saturating_mul(u32::try_from(l.len()).unwrap_or(u32::MAX));
        (age.saturating_add(walk.max(self.ttl / 2)) < self.ttl).then(|| l.clone())
    }

    /// How many children the last listing of `dir` had, fresh or not.
    pub fn listed_len(&self, dir: Ino) -> Option<usize> {
        self.listings.get(&dir).map(|held| held.children.len())
    }

    /// The listing of `dir` the cluster gave when `asked`, with the name
    /// changes made here since laid over it; kept unless the listing was
    /// dropped here since. Each child's inode is remembered too (so `ls -l`
    /// costs one request, not one per file), unless it changed here since.
    pub fn put_asked_listing(&mut self, dir: Ino, listed: Listed, now: Instant, asked: Asked) -> Listing {
        let Listed { entries, version } = listed;
        let mut keep = true;
        let mut children: Vec<Child> =
            entries.iter().map(|e| Child { name: e.name.clone(), ino: e.inode.ino, kind: e.inode.kind }).collect();
        let mut touched_attrs = Vec::new();
        let mut touched_names = Vec::new();
        match self.since(asked) {
            None => keep = false,
            Some(changes) => {
                for c in changes {
                    match c {
                        Change::Name { dir: d, name, child } if *d == dir => {
                            children.retain(|x| x.name != *name);
                            children.extend(child.clone());
                            touched_names.push(name.clone());
                        }
                        Change::NameDropped { dir: d, .. } | Change::Listing(d) if *d == dir => keep = false,
                        Change::Attr(i) => touched_attrs.push(*i),
                        _ => {}
                    }
                }
            }
        }
        if !keep {
            return Arc::new(children);
        }
        self.prune(now);
        for e in entries {
            if !touched_names.contains(&e.name) {
                self.names.insert((dir, e.name.clone()), (now, Some(e.inode.ino)));
            }
            if !touched_attrs.contains(&e.inode.ino) {
                self.keep_attr(e.inode.ino, Some(e.inode), now);
            }
        }
        let l = Arc::new(children);
        // With changes laid over it, it is of no one version of the cluster's.
        let version = version.filter(|_| touched_names.is_empty());
        self.listings.insert(dir, Held { at: now, listed_at: now, version, children: l.clone(), early: Vec::new() });
        l
    }

    /// A change this mount asked for at `sent` took directory `step.dir`
    /// from version `step.before` to `step.after`. A listing of it at
    /// `before` (this change laid over it, as every change made here is) is
    /// the directory as the change left it: no one else changed it between
    /// the listing and the change, so it is as fresh as the change. Rm -rf
    /// of a big directory so looks its names up here, not one request each.
    ///
    /// Changes made at once may be answered out of order: a step from a
    /// later version waits (a few do) for the one that leads to it. One
    /// from a version nobody here changed never applies.
    pub fn dir_stepped(&mut self, step: &DirStep, sent: Instant) {
        let Some(held) = self.listings.get_mut(&step.dir) else { return };
        let Some(version) = held.version else { return };
        if step.before > version {
            if held.early.len() >= EARLY_STEPS {
                held.early.remove(0);
            }
            held.early.push((*step, sent));
            return;
        }
        if step.before != version {
            return;
        }
        held.version = Some(step.after);
        held.at = held.at.max(sent);
        while let Some(k) = held.early.iter().position(|(s, _)| Some(s.before) == held.version) {
            let (next, sent) = held.early.swap_remove(k);
            held.version = Some(next.after);
            held.at = held.at.max(sent);
        }
    }

    /// The inode `ino` as last remembered, fresh or not (`None` when not
    /// remembered or known to be gone): for a lookup answered from a
    /// fresh listing, with attributes the kernel is told to ask for again.
    pub fn attr_remembered(&self, ino: Ino) -> Option<Inode> {
        self.attrs.get(&ino).and_then(|(_, i)| i.clone())
    }

    /// The children of `dir` changed here in a way not laid over its
    /// listing: the next look asks.
    pub fn forget_listing(&mut self, dir: Ino) {
        self.record(Change::Listing(dir));
        self.listings.remove(&dir);
    }

    // ----- changes the cluster stamps with its own clock -----

    /// This mount changed the entries of directory `dir` at `now_ns`: its
    /// times show at least that, and `subdirs` more (or fewer)
    /// subdirectories count in its remembered link count, so showing it
    /// needs no request (the kernel asks for a changed directory's
    /// attributes at once, even while the cluster does not answer).
    pub fn dir_changed(&mut self, dir: Ino, now_ns: i64, subdirs: i64) {
        self.touch_dir(dir, now_ns);
        if subdirs != 0 {
            self.inode_changed(dir, now_ns, subdirs);
        }
    }

    /// This mount changed `ino` at `now_ns` (a rename, or `links` names
    /// more or fewer): the remembered inode follows, keeping its age.
    pub fn inode_changed(&mut self, ino: Ino, now_ns: i64, links: i64) {
        self.record(Change::Attr(ino));
        if let Some((_, Some(i))) = self.attrs.get_mut(&ino) {
            i.ctime_ns = i.ctime_ns.max(now_ns);
            i.nlink = u32::try_from((i64::from(i.nlink) + links).max(0)).unwrap_or(u32::MAX);
        }
    }

    // ----- directory times -----

    /// A file was made in or removed from `dir` here at `now_ns`, and the
    /// cluster does not know (the file is not on it yet).
    pub fn touch_dir(&mut self, dir: Ino, now_ns: i64) {
        if self.dir_times.len() >= MAX_DIR_TIMES {
            let mut all: Vec<(i64, Ino)> = self.dir_times.iter().map(|(d, (t, _))| (*t, *d)).collect();
            all.sort();
            for (_, d) in all.into_iter().take(MAX_DIR_TIMES / 2) {
                self.dir_times.remove(&d);
            }
        }
        let noted = Instant::now();
        let t = self.dir_times.entry(dir).or_insert((now_ns, noted));
        *t = (t.0.max(now_ns), noted);
    }

    /// The latest local change of `dir`'s entries, noted within the TTL:
    /// after it the cluster's own time of that change (made by the leader's
    /// clock) is what every mount shows, this one too.
    pub fn dir_time(&self, dir: Ino) -> Option<i64> {
        self.dir_times.get(&dir).filter(|(_, noted)| noted.elapsed() < self.ttl).map(|(t, _)| *t)
    }

    /// An explicit mtime was stored for `dir`: it wins over local times.
    pub fn clear_dir_time(&mut self, dir: Ino) {
        self.dir_times.remove(&dir);
    }

    /// The kernel holds `ino` no more: what is remembered of it may go.
    pub fn forgotten(&mut self, ino: Ino) {
        self.attrs.remove(&ino);
        self.listings.remove(&ino);
    }

    /// Drops what has expired, once the items remembered reach
    /// `prune_at`, or [`PRUNE_AT`] a TTL after the last prune (when what
    /// was fresh then has expired); then `prune_at` is twice what is left.
    /// With a fixed threshold alone, a cache full of fresh items (`ls -l`
    /// of directories of thousands of files, one after another) was read
    /// whole at every item added: seconds for each directory.
    fn prune(&mut self, now: Instant) {
        let len = self.len();
        let expired = self.pruned.is_none_or(|at| !self.fresh(at, now));
        if len < self.prune_at && (len < PRUNE_AT || !expired) {
            return;
        }
        self.pruned = Some(now);
        let ttl = self.ttl;
        self.attrs.retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
        self.names.retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
        self.listings.retain(|_, held| now.saturating_duration_since(held.at) < ttl);
        self.prune_at = (2 * self.len()).max(PRUNE_AT);
    }

    /// Items remembered: inodes, names and listings.
    fn len(&self) -> usize {
        self.attrs.len() + self.names.len() + self.listings.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scs_common::{DirEntry, Term};

    fn inode(ino: u64, kind: Kind, seq: u64) -> Inode {
        let mut i = Inode::new(Ino(ino), kind, 0o644, 1000, 1000, 1);
        i.version = Version::new(Term(1), seq);
        i
    }

    fn entry(name: &str, ino: u64) -> DirEntry {
        DirEntry { name: name.into(), inode: inode(ino, Kind::File, 1) }
    }

    fn unversioned(entries: Vec<DirEntry>) -> Listed {
        Listed { entries, version: None }
    }

    fn v(n: u64) -> Version {
        Version::new(Term(1), n)
    }

    #[test]
    fn a_change_from_the_listed_version_keeps_the_listing_fresh_and_no_other_does() {
        let mut c = MetaCache::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let asked = c.asking();
        let listed = Listed { entries: vec![entry("a", 10), entry("b", 11)], version: Some(v(3)) };
        c.put_asked_listing(Ino(5), listed, t0, asked);
        // This mount removes a: the cluster says the directory went from 3 to 4.
        let sent = t0 + Duration::from_millis(900);
        c.put_name(Ino(5), "a", None, sent);
        c.dir_stepped(&DirStep { dir: Ino(5), before: v(3), after: v(4) }, sent);
        let at = t0 + Duration::from_millis(1500);
        assert_eq!(c.name(Ino(5), "b", at), Some(Some(Ino(11))), "as fresh as the change: no request for b");
        assert_eq!(c.name(Ino(5), "a", at), Some(None));
        assert_eq!(c.attr(Ino(11), at), None, "b's attributes are not made fresh by it");
        assert_eq!(c.attr_remembered(Ino(11)).map(|i| i.ino), Some(Ino(11)));
        assert!(c.listing_to_walk(Ino(5), at).is_none(), "a walk (ls -l) lists again, for the inodes");
        // Someone else changed it after (4 -> 5): a step from 5 says nothing of this listing.
        c.dir_stepped(&DirStep { dir: Ino(5), before: v(5), after: v(6) }, at);
        assert_eq!(c.name(Ino(5), "b", t0 + Duration::from_millis(2000)), None, "expired: asked again");
    }

    #[test]
    fn steps_answered_out_of_order_keep_the_listing_fresh_once_they_join_up() {
        let mut c = MetaCache::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let asked = c.asking();
        c.put_asked_listing(Ino(5), Listed { entries: vec![entry("a", 10)], version: Some(v(3)) }, t0, asked);
        let step = |before, after| DirStep { dir: Ino(5), before: v(before), after: v(after) };
        // Three files made here at once, answered 3rd, 1st, 2nd; and a
        // step of before the listing, answered late.
        let sent = t0 + Duration::from_millis(800);
        for (n, ino) in [("b", 11), ("c", 12), ("d", 13)] {
            c.put_name(Ino(5), n, Some(child(n, ino)), sent);
        }
        c.dir_stepped(&step(5, 6), sent);
        c.dir_stepped(&step(3, 4), sent);
        let at = t0 + Duration::from_millis(1500);
        assert_eq!(c.name(Ino(5), "zz", at), Some(None), "3 -> 4 keeps it fresh, 5 -> 6 waits");
        c.dir_stepped(&step(2, 3), at);
        c.dir_stepped(&step(4, 5), at);
        assert_eq!(c.listings[&Ino(5)].version, Some(v(6)), "4 -> 5, then the waiting 5 -> 6");
        assert!(c.listings[&Ino(5)].early.is_empty());
        let later = at + Duration::from_millis(900);
        assert_eq!(c.name(Ino(5), "d", later), Some(Some(Ino(13))), "as fresh as the latest step");
        // A step from a version another client made (6 -> 7, not seen
        // here) never applies, nor does what follows it.
        c.dir_stepped(&step(7, 8), later);
        assert_eq!(c.listings[&Ino(5)].version, Some(v(6)));
        assert_eq!(c.name(Ino(5), "d", at + Duration::from_millis(1500)), None, "expired: asked again");
    }

    #[test]
    fn a_listing_with_changes_laid_over_it_is_of_no_version() {
        let mut c = MetaCache::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let asked = c.asking();
        // A change made here while the listing was on its way.
        c.put_name(Ino(5), "new", Some(child("new", 12)), t0);
        let listed = Listed { entries: vec![entry("a", 10)], version: Some(v(3)) };
        c.put_asked_listing(Ino(5), listed, t0, asked);
        c.dir_stepped(&DirStep { dir: Ino(5), before: v(3), after: v(4) }, t0 + Duration::from_millis(900));
        assert_eq!(c.listing(Ino(5), t0 + Duration::from_millis(1500)), None, "not kept fresh by the step");
    }

    fn child(name: &str, ino: u64) -> Child {
        Child { name: name.into(), ino: Ino(ino), kind: Kind::File }
    }

    fn names(l: &[Child]) -> Vec<&str> {
        l.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn a_cache_full_of_fresh_items_is_not_read_whole_for_each_one_added_and_still_drops_expired_ones() {
        let t0 = Instant::now();
        let mut c = MetaCache::new(Duration::from_secs(1));
        // Listings of thousands of files each, one after another, within the TTL.
        for dir in 0..40u64 {
            let entries = (0..5_000).map(|n| entry(&format!("f{n}"), dir * 10_000 + n + 100)).collect();
            let asked = c.asking();
            c.put_asked_listing(Ino(dir + 2), unversioned(entries), t0, asked);
        }
        assert_eq!(c.len(), 40 * 10_001, "all fresh: all kept");
        assert!(c.prune_at > c.len(), "the next prune waits for more items: {}", c.prune_at);
        // A TTL later, the next item added drops what expired.
        let later = t0 + Duration::from_secs(2);
        c.put_attr(Ino(1_000_000), None, later);
        assert_eq!(c.len(), 1, "expired items dropped");
        assert_eq!(c.attr(Ino(1_000_000), later), Some(None));
    }

    #[test]
    fn inodes_expire_after_the_ttl_and_negative_answers_are_remembered() {
        let t0 = Instant::now();
        let mut c = MetaCache::new(Duration::from_secs(1));
        c.put_attr(Ino(2), Some(inode(2, Kind::File, 1)), t0);
        c.put_attr(Ino(3), None, t0);
        assert!(c.attr(Ino(2), t0 + Duration::from_millis(999)).unwrap().is_some());
        assert_eq!(c.attr(Ino(3), t0), Some(None));
        assert_eq!(c.attr(Ino(2), t0 + Duration::from_secs(1)), None, "stale after the TTL");
        assert_eq!(c.attr(Ino(4), t0), None);
    }

    #[test]
    fn a_listing_answers_names_in_it_and_fills_the_inodes_of_its_children() {
        let t0 = Instant::now();
        let mut c = MetaCache::new(Duration::from_secs(1));
        let asked = c.asking();
        c.put_asked_listing(Ino(5), unversioned(vec![entry("x", 10), entry("y", 11)]), t0, asked);
        assert_eq!(c.name(Ino(5), "y", t0), Some(Some(Ino(11))));
        assert_eq!(c.name(Ino(5), "z", t0), Some(None), "not in a fresh listing: not there");
        assert_eq!(c.name(Ino(6), "y", t0), None, "nothing known of another directory");
        assert!(c.attr(Ino(10), t0).unwrap().is_some());
        assert_eq!(c.listing(Ino(5), t0).unwrap().len(), 2);
    }

    #[test]
    fn a_listing_is_walked_again_only_while_its_children_will_stay_fresh_through_the_walk() {
        let t0 = Instant::now();
        let mut c = MetaCache::new(Duration::from_secs(1));
        let small: Vec<_> = (0..10).map(|k| entry(&format!("s{k}"), 100 + k)).collect();
        let big: Vec<_> = (0..100_000).map(|k| entry(&format!("b{k}"), 1_000 + k)).collect();
        let asked = c.asking();
        c.put_asked_listing(Ino(5), unversioned(small), t0, asked);
        c.put_asked_listing(Ino(6), unversioned(big), t0, asked);
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(c.listing_to_walk(Ino(5), at(400)).is_some(), "a small listing, half its TTL left");
        assert!(c.listing_to_walk(Ino(5), at(600)).is_none(), "less than half left: listed again");
        assert!(c.listing(Ino(5), at(600)).is_some(), "though it still answers names");
        assert!(c.listing_to_walk(Ino(6), at(100)).is_some(), "100,000 children, just listed");
        assert!(c.listing_to_walk(Ino(6), at(300)).is_none(), "their walk would outlast the TTL: listed again");
        assert!(c.listing(Ino(6), at(300)).is_some());
        assert_eq!(c.listing_to_walk(Ino(7), t0), None, "nothing known");
    }

    #[test]
    fn a_listing_asked_for_before_a_file_went_up_here_still_shows_the_file() {
        let t0 = Instant::now();
        let mut c = MetaCache::new(Duration::from_secs(1));
        let asked = c.asking();
        // Meanwhile this mount stores d/new and removes d/old.
        c.put_name(Ino(5), "new", Some(child("new", 20)), t0);
        c.put_name(Ino(5), "old", None, t0);
        // The cluster's answer, from before both.
        let l = c.put_asked_listing(Ino(5), unversioned(vec![entry("old", 12), entry("x", 10)]), t0, asked);
        assert_eq!(names(&l), ["x", "new"]);
        assert_eq!(c.name(Ino(5), "new", t0), Some(Some(Ino(20))), "kept, with the change");
        assert_eq!(c.name(Ino(5), "old", t0), Some(None));
        // An answer asked for after the changes is taken as it is.
        let asked = c.asking();
        c.put_asked_listing(Ino(5), unversioned(vec![entry("x", 10)]), t0, asked);
        assert_eq!(c.listing(Ino(5), t0).unwrap().len(), 1);
    }

    #[test]
    fn an_answer_asked_for_before_a_listing_was_dropped_here_is_not_kept() {
        let t0 = Instant::now();
        let mut c = MetaCache::new(Duration::from_secs(1));
        let asked = c.asking();
        c.forget_listing(Ino(5));
        let l = c.put_asked_listing(Ino(5), unversioned(vec![entry("moved", 10)]), t0, asked);
        assert_eq!(l.len(), 1, "returned to the asker");
        assert!(c.listing(Ino(5), t0).is_none(), "but not kept");
    }

    #[test]
    fn a_name_asked_for_before_a_local_change_gives_way_to_it() {
        let t0 = Instant::now();
        let mut c = MetaCache::new(Duration::from_secs(1));
        let asked = c.asking();
        c.put_name(Ino::ROOT, "f", Some(child("f", 9)), t0);
        let old = inode(3, Kind::File, 1);
        assert_eq!(c.put_asked_name(Ino::ROOT, "f", Some(old), t0, asked), Some(Ino(9)));
        assert_eq!(c.name(Ino::ROOT, "f", t0), Some(Some(Ino(9))));
        assert_eq!(c.attr(Ino(3), t0), None, "the inode the old answer named is not kept for the name");
        // An unrelated name is kept as the cluster said, with its inode.
        assert_eq!(c.put_asked_name(Ino::ROOT, "g", Some(inode(4, Kind::File, 1)), t0, asked), Some(Ino(4)));
        assert!(c.attr(Ino(4), t0).unwrap().is_some());
        assert_eq!(c.put_asked_name(Ino::ROOT, "h", None, t0, asked), None);
        assert_eq!(c.name(Ino::ROOT, "h", t0), Some(None));
    }

    #[test]
    fn an_inode_asked_for_before_a_local_change_gives_way_and_versions_never_go_back() {
        let t0 = Instant::now();
        let mut c = MetaCache::new(Duration::from_secs(1));
        let asked = c.asking();
        let mut mine = inode(2, Kind::File, 5);
        mine.mode = 0o700;
        c.put_attr(Ino(2), Some(mine), t0);
        let got = c.put_asked_attr(Ino(2), Some(inode(2, Kind::File, 4)), t0, asked).unwrap();
        assert_eq!(got.mode, 0o700, "the local word wins");
        // Two answers crossing: the older version does not replace the newer.
        let asked = c.asking();
        c.put_asked_attr(Ino(7), Some(inode(7, Kind::File, 9)), t0, asked);
        let got = c.put_asked_attr(Ino(7), Some(inode(7, Kind::File, 8)), t0, asked).unwrap();
        assert_eq!(got.version.seq, 9);
    }

    #[test]
    fn an_answer_older_than_every_remembered_change_is_not_kept() {
        let t0 = Instant::now();
        let mut c = MetaCache::new(Duration::from_secs(1));
        let asked = c.asking();
        for i in 0..=CHANGES_KEPT {
            c.forget_attr(Ino(100 + i as u64));
        }
        c.put_asked_listing(Ino(5), unversioned(vec![entry("x", 10)]), t0, asked);
        assert!(c.listing(Ino(5), t0).is_none());
        c.put_asked_attr(Ino(9), Some(inode(9, Kind::File, 1)), t0, asked);
        assert!(c.attr(Ino(9), t0).is_none());
    }

    #[test]
    fn a_local_name_change_edits_a_remembered_listing_without_making_it_younger() {
        let t0 = Instant::now();
        let mut c = MetaCache::new(Duration::from_secs(1));
        let asked = c.asking();
        c.put_asked_listing(Ino(5), unversioned(vec![entry("x", 10)]), t0, asked);
        let later = t0 + Duration::from_millis(900);
        c.put_name(Ino(5), "y", Some(child("y", 11)), later);
        assert_eq!(names(&c.listing(Ino(5), later).unwrap()), ["x", "y"]);
        assert!(c.listing(Ino(5), t0 + Duration::from_millis(1001)).is_none(), "expires when the answer does");
    }

    #[test]
    fn changes_made_here_show_in_remembered_inodes_and_win_over_older_answers() {
        let t0 = Instant::now();
        let mut c = MetaCache::new(Duration::from_secs(1));
        let mut d = inode(5, Kind::Dir, 1);
        d.nlink = 2;
        c.put_attr(Ino(5), Some(d), t0);
        let asked = c.asking();
        c.dir_changed(Ino(5), 50, 1);
        let shown = c.attr(Ino(5), t0).unwrap().unwrap();
        assert_eq!((shown.nlink, shown.ctime_ns, c.dir_time(Ino(5))), (3, 50, Some(50)));
        c.put_asked_attr(Ino(5), Some(inode(5, Kind::Dir, 9)), t0, asked);
        assert_eq!(c.attr(Ino(5), t0).unwrap().unwrap().nlink, 3, "an answer from before does not undo it");
        c.put_attr(Ino(6), Some(inode(6, Kind::File, 1)), t0);
        c.inode_changed(Ino(6), 60, -1);
        assert_eq!(c.attr(Ino(6), t0).unwrap().unwrap().nlink, 0);
        c.inode_changed(Ino(7), 60, -1);
        assert_eq!(c.attr(Ino(7), t0), None, "nothing remembered, nothing made up");
    }

    #[test]
    fn directory_times_only_grow_and_yield_to_an_explicit_mtime() {
        let mut c = MetaCache::new(Duration::from_secs(1));
        c.touch_dir(Ino(5), 9);
        c.touch_dir(Ino(5), 7);
        assert_eq!(c.dir_time(Ino(5)), Some(9));
        c.clear_dir_time(Ino(5));
        assert_eq!(c.dir_time(Ino(5)), None);
    }

    #[test]
    fn a_local_directory_time_lasts_the_ttl_then_the_clusters_shows() {
        let mut c = MetaCache::new(Duration::from_millis(30));
        c.touch_dir(Ino(5), 9);
        assert_eq!(c.dir_time(Ino(5)), Some(9));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.dir_time(Ino(5)), None, "every mount agrees once the TTL has passed");
    }
}
