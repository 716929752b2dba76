//! The mount's inode table. Inode numbers are the cluster's (the FUSE
//! number of a file is its cluster inode, the root is 1), so nothing maps
//! numbers to names here. What the table keeps:
//!
//! - the lookups the kernel holds on each inode (`forget` ends them);
//! - where each file made here but not on the cluster yet ("fresh") is:
//!   its directory and name, so lookups and listings show it;
//! - spare inode numbers the cluster reserved for this mount, which new
//!   files take at create (they go up later as `Target::New`).
//!
//! A plain struct with no I/O (the file system keeps it behind a mutex),
//! tested without /dev/fuse.

use std::collections::{BTreeMap, HashMap, VecDeque};

use scs_common::Ino;

/// Lookups, fresh files and spare numbers.
#[derive(Debug, Default)]
pub struct Inodes {
    lookups: HashMap<Ino, u64>,
    /// Fresh files: where each one is ...
    fresh: HashMap<Ino, (Ino, String)>,
    /// ... and, by directory, the names they have.
    by_dir: HashMap<Ino, BTreeMap<String, Ino>>,
    /// Reserved numbers not handed out yet: (first, count) blocks.
    spare: VecDeque<(u64, u64)>,
}

impl Inodes {
    pub fn new() -> Inodes {
        Inodes::default()
    }

    /// The kernel learned of `ino` once more (a lookup, create, mkdir ...).
    pub fn looked_up(&mut self, ino: Ino) {
        *self.lookups.entry(ino).or_default() += 1;
    }

    /// The kernel dropped `n` lookups of `ino`; true when it holds none any
    /// more (what is kept about it may go). The root is never forgotten.
    pub fn forget(&mut self, ino: Ino, n: u64) -> bool {
        if ino == Ino::ROOT {
            return false;
        }
        match self.lookups.get_mut(&ino) {
            Some(count) if *count > n => {
                *count -= n;
                false
            }
            _ => {
                self.lookups.remove(&ino);
                true
            }
        }
    }

    /// Lookups the kernel holds on `ino`.
    pub fn lookups(&self, ino: Ino) -> u64 {
        self.lookups.get(&ino).copied().unwrap_or(0)
    }

    /// A file made here as `ino`, `name` in `dir`, not on the cluster yet.
    pub fn add_fresh(&mut self, ino: Ino, dir: Ino, name: &str) {
        self.drop_fresh(ino);
        self.fresh.insert(ino, (dir, name.to_string()));
        self.by_dir.entry(dir).or_default().insert(name.to_string(), ino);
    }

    /// The fresh file `name` in `dir`, if there is one.
    pub fn fresh_at(&self, dir: Ino, name: &str) -> Option<Ino> {
        self.by_dir.get(&dir)?.get(name).copied()
    }

    /// Where the fresh file `ino` is; `None` if it is not fresh.
    pub fn fresh_place(&self, ino: Ino) -> Option<(Ino, String)> {
        self.fresh.get(&ino).cloned()
    }

    pub fn is_fresh(&self, ino: Ino) -> bool {
        self.fresh.contains_key(&ino)
    }

    /// The fresh files in `dir`, by name.
    pub fn fresh_in(&self, dir: Ino) -> Vec<(String, Ino)> {
        self.by_dir.get(&dir).map(|m| m.iter().map(|(n, i)| (n.clone(), *i)).collect()).unwrap_or_default()
    }

    /// Whether any fresh file is in `dir`.
    pub fn has_fresh_in(&self, dir: Ino) -> bool {
        self.by_dir.get(&dir).is_some_and(|m| !m.is_empty())
    }

    /// The directories holding fresh files.
    pub fn fresh_dirs(&self) -> Vec<Ino> {
        self.by_dir.keys().copied().collect()
    }

    /// `ino` is not fresh any more: stored on the cluster, or gone.
    pub fn drop_fresh(&mut self, ino: Ino) {
        if let Some((dir, name)) = self.fresh.remove(&ino) {
            if let Some(m) = self.by_dir.get_mut(&dir) {
                if m.get(&name) == Some(&ino) {
                    m.remove(&name);
                }
                if m.is_empty() {
                    self.by_dir.remove(&dir);
                }
            }
        }
    }

    /// Numbers `first` .. `first + count` are this mount's to hand out.
    pub fn add_spare(&mut self, first: Ino, count: u32) {
        if count > 0 && first != Ino::NONE {
            self.spare.push_back((first.0, u64::from(count)));
        }
    }

    /// A reserved number for a new file, if any is left.
    pub fn take_spare(&mut self) -> Option<Ino> {
        let (first, count) = self.spare.front_mut()?;
        let ino = Ino(*first);
        *first += 1;
        *count -= 1;
        if *count == 0 {
            self.spare.pop_front();
        }
        Some(ino)
    }

    /// Reserved numbers left.
    pub fn spare_left(&self) -> u64 {
        self.spare.iter().map(|(_, c)| c).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_count_up_and_forget_counts_down_but_never_the_root() {
        let mut t = Inodes::new();
        let f = Ino(7);
        t.looked_up(f);
        t.looked_up(f);
        assert!(!t.forget(f, 1), "one lookup is still held");
        assert_eq!(t.lookups(f), 1);
        assert!(t.forget(f, 1));
        assert_eq!(t.lookups(f), 0);
        assert!(t.forget(Ino(99), 3), "an inode never looked up is not held");
        t.looked_up(Ino::ROOT);
        assert!(!t.forget(Ino::ROOT, 100));
    }

    #[test]
    fn fresh_files_are_found_by_name_and_by_directory_until_stored() {
        let mut t = Inodes::new();
        let d = Ino(5);
        t.add_fresh(Ino(100), d, "a.txt");
        t.add_fresh(Ino(101), d, "b.txt");
        t.add_fresh(Ino(102), Ino::ROOT, "a.txt");
        assert_eq!(t.fresh_at(d, "a.txt"), Some(Ino(100)));
        assert_eq!(t.fresh_at(Ino::ROOT, "a.txt"), Some(Ino(102)));
        assert_eq!(t.fresh_at(d, "c"), None);
        assert_eq!(t.fresh_place(Ino(101)), Some((d, "b.txt".to_string())));
        assert_eq!(t.fresh_in(d), [("a.txt".to_string(), Ino(100)), ("b.txt".to_string(), Ino(101))]);
        let mut dirs = t.fresh_dirs();
        dirs.sort();
        assert_eq!(dirs, [Ino::ROOT, d]);
        t.drop_fresh(Ino(100));
        assert!(!t.is_fresh(Ino(100)) && t.fresh_at(d, "a.txt").is_none());
        t.drop_fresh(Ino(101));
        assert!(!t.has_fresh_in(d));
        assert!(t.has_fresh_in(Ino::ROOT));
    }

    #[test]
    fn a_name_taken_again_by_a_new_fresh_file_leads_to_the_new_one() {
        let mut t = Inodes::new();
        t.add_fresh(Ino(100), Ino::ROOT, "f");
        t.add_fresh(Ino(101), Ino::ROOT, "f");
        assert_eq!(t.fresh_at(Ino::ROOT, "f"), Some(Ino(101)));
        // Dropping the older one leaves the name to the newer.
        t.drop_fresh(Ino(100));
        assert_eq!(t.fresh_at(Ino::ROOT, "f"), Some(Ino(101)));
    }

    #[test]
    fn spare_numbers_are_handed_out_in_order_across_blocks() {
        let mut t = Inodes::new();
        assert_eq!(t.take_spare(), None);
        t.add_spare(Ino(10), 2);
        t.add_spare(Ino(50), 1);
        t.add_spare(Ino(90), 0);
        assert_eq!(t.spare_left(), 3);
        let got: Vec<Ino> = std::iter::from_fn(|| t.take_spare()).collect();
        assert_eq!(got, [Ino(10), Ino(11), Ino(50)]);
        assert_eq!(t.spare_left(), 0);
    }
}
