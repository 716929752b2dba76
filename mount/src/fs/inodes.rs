//! The inode table: which inode number stands for which name. A plain struct
//! (the file system keeps it behind a mutex), with no I/O, so it is tested
//! without /dev/fuse.
//!
//! Numbers are never reused and follow a file or directory through renames
//! (descendants of a moved directory keep theirs too). An inode whose name
//! went away (unlink, replaced by a rename) stays as an orphan while the
//! kernel still holds it.

use std::collections::HashMap;

use scs_common::{name, Kind};

/// The root directory's inode, as the kernel knows it.
pub const ROOT: u64 = 1;

#[derive(Debug)]
struct Node {
    /// The name ("" = root); `None` once it was unlinked or replaced.
    path: Option<String>,
    kind: Kind,
    /// Lookups the kernel holds (answered lookups and creates, minus forgets).
    lookups: u64,
}

/// The map between inode numbers and names.
#[derive(Debug)]
pub struct Inodes {
    nodes: HashMap<u64, Node>,
    by_path: HashMap<String, u64>,
    next: u64,
}

impl Default for Inodes {
    fn default() -> Self {
        Inodes::new()
    }
}

impl Inodes {
    /// A table holding only the root.
    pub fn new() -> Inodes {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node { path: Some(String::new()), kind: Kind::Dir, lookups: 1 });
        let mut by_path = HashMap::new();
        by_path.insert(String::new(), ROOT);
        Inodes { nodes, by_path, next: ROOT + 1 }
    }

    /// The current name of `ino`; `None` if unknown or orphaned.
    pub fn path(&self, ino: u64) -> Option<&str> {
        self.nodes.get(&ino).and_then(|n| n.path.as_deref())
    }

    /// What `ino` is, if known (orphans too).
    pub fn kind(&self, ino: u64) -> Option<Kind> {
        self.nodes.get(&ino).map(|n| n.kind)
    }

    /// The inode of `path`, if it has one.
    pub fn ino(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    /// The inode of `path` for an answered lookup (counted until forgotten).
    /// A name now of another kind gets a new inode: the old one is orphaned.
    pub fn lookup(&mut self, path: &str, kind: Kind) -> u64 {
        let ino = self.peek(path, kind);
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.lookups += 1;
        }
        ino
    }

    /// The inode of `path` without counting a lookup (readdir's `d_ino`).
    pub fn peek(&mut self, path: &str, kind: Kind) -> u64 {
        if let Some(&ino) = self.by_path.get(path) {
            match self.nodes.get(&ino) {
                Some(n) if n.kind == kind || ino == ROOT => return ino,
                _ => self.detach(path),
            }
        }
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(ino, Node { path: Some(path.to_string()), kind, lookups: 0 });
        self.by_path.insert(path.to_string(), ino);
        ino
    }

    /// The kernel dropped `n` lookups of `ino`; at zero an orphan is gone,
    /// and a named inode is forgotten (the name gets a new number later)
    /// unless `keep` (its content is only here yet: the name must still
    /// lead to it).
    pub fn forget(&mut self, ino: u64, n: u64, keep: bool) {
        if ino == ROOT {
            return;
        }
        let gone = match self.nodes.get_mut(&ino) {
            Some(node) => {
                node.lookups = node.lookups.saturating_sub(n);
                node.lookups == 0
            }
            None => false,
        };
        if gone && !keep {
            if let Some(Node { path: Some(p), .. }) = self.nodes.remove(&ino) {
                if self.by_path.get(&p) == Some(&ino) {
                    self.by_path.remove(&p);
                }
            }
        }
    }

    /// An inode kept at `forget` (its content was only here) no longer needs
    /// to be: dropped if the kernel holds no lookup of it.
    pub fn drop_if_forgotten(&mut self, ino: u64) {
        if ino != ROOT && self.nodes.get(&ino).is_some_and(|n| n.lookups == 0) {
            self.forget(ino, 0, false);
        }
    }

    /// `path` was removed: its inode (if any) becomes an orphan.
    pub fn unlink(&mut self, path: &str) {
        self.detach(path);
    }

    /// `from` was renamed to `to`: the inode of `from` (and of everything
    /// below it) moves; whatever was at `to` (and below) is orphaned.
    pub fn rename(&mut self, from: &str, to: &str) {
        if from == to || from.is_empty() {
            return;
        }
        self.detach_tree(to);
        let moved: Vec<(String, u64)> = self
            .by_path
            .iter()
            .filter(|(p, _)| p.as_str() == from || name::is_inside(p, from))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        for (old, ino) in moved {
            self.by_path.remove(&old);
            let new = format!("{to}{}", &old[from.len()..]);
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.path = Some(new.clone());
            }
            self.by_path.insert(new, ino);
        }
    }

    /// How many inodes are known (for tests and logs).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether only the root is known.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }

    fn detach(&mut self, path: &str) {
        if path.is_empty() {
            return;
        }
        if let Some(ino) = self.by_path.remove(path) {
            let drop_it = match self.nodes.get_mut(&ino) {
                Some(n) => {
                    n.path = None;
                    n.lookups == 0
                }
                None => false,
            };
            if drop_it {
                self.nodes.remove(&ino);
            }
        }
    }

    fn detach_tree(&mut self, path: &str) {
        let below: Vec<String> =
            self.by_path.keys().filter(|p| p.as_str() == path || name::is_inside(p, path)).cloned().collect();
        for p in below {
            self.detach(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_inode_one_and_is_never_forgotten() {
        let mut t = Inodes::new();
        assert_eq!(t.path(ROOT), Some(""));
        assert_eq!(t.ino(""), Some(ROOT));
        t.forget(ROOT, 100, false);
        assert_eq!(t.path(ROOT), Some(""));
        assert_eq!(t.lookup("", Kind::Dir), ROOT);
    }

    #[test]
    fn a_name_keeps_its_number_until_forgotten_and_numbers_are_never_reused() {
        let mut t = Inodes::new();
        let a = t.lookup("a.txt", Kind::File);
        assert_eq!(t.lookup("a.txt", Kind::File), a);
        assert_eq!(t.peek("a.txt", Kind::File), a);
        t.forget(a, 1, false);
        assert_eq!(t.path(a), Some("a.txt"), "one lookup is still held");
        t.forget(a, 1, false);
        assert_eq!(t.path(a), None);
        // A file whose content is only here keeps its name and number,
        // until it is stored.
        let w = t.lookup("w.txt", Kind::File);
        t.forget(w, 1, true);
        assert_eq!(t.ino("w.txt"), Some(w));
        t.drop_if_forgotten(w);
        assert_eq!(t.ino("w.txt"), None);
        let again = t.lookup("a.txt", Kind::File);
        assert_ne!(again, a, "a forgotten number is not handed out again");
    }

    #[test]
    fn inode_numbers_follow_a_file_through_a_rename() {
        let mut t = Inodes::new();
        let a = t.lookup("a", Kind::File);
        t.rename("a", "dir/b");
        assert_eq!(t.path(a), Some("dir/b"));
        assert_eq!(t.ino("dir/b"), Some(a));
        assert_eq!(t.ino("a"), None);
    }

    #[test]
    fn a_renamed_directory_takes_its_descendants_along() {
        let mut t = Inodes::new();
        let d = t.lookup("d", Kind::Dir);
        let f = t.lookup("d/sub/f", Kind::File);
        let s = t.lookup("d/sub", Kind::Dir);
        let other = t.lookup("dx/f", Kind::File);
        t.rename("d", "e/d2");
        assert_eq!(t.path(d), Some("e/d2"));
        assert_eq!(t.path(s), Some("e/d2/sub"));
        assert_eq!(t.path(f), Some("e/d2/sub/f"));
        assert_eq!(t.path(other), Some("dx/f"), "a sibling with the same prefix stays");
    }

    #[test]
    fn a_replaced_target_becomes_an_orphan_that_lives_until_forgotten() {
        let mut t = Inodes::new();
        let a = t.lookup("a", Kind::File);
        let b = t.lookup("b", Kind::File);
        t.rename("a", "b");
        assert_eq!(t.ino("b"), Some(a));
        assert_eq!(t.path(b), None);
        assert_eq!(t.kind(b), Some(Kind::File), "the kernel may still stat it");
        t.forget(b, 1, false);
        assert_eq!(t.kind(b), None);
    }

    #[test]
    fn unlink_orphans_a_looked_up_inode_and_drops_an_unreferenced_one() {
        let mut t = Inodes::new();
        let held = t.lookup("held", Kind::File);
        let seen = t.peek("seen", Kind::File);
        t.unlink("held");
        t.unlink("seen");
        assert_eq!(t.path(held), None);
        assert_eq!(t.kind(held), Some(Kind::File));
        assert_eq!(t.kind(seen), None);
        assert_eq!(t.ino("held"), None);
    }

    #[test]
    fn a_name_that_changed_kind_gets_a_new_inode() {
        let mut t = Inodes::new();
        let f = t.lookup("x", Kind::File);
        let d = t.lookup("x", Kind::Dir);
        assert_ne!(f, d);
        assert_eq!(t.path(f), None);
        assert_eq!(t.path(d), Some("x"));
    }

    #[test]
    fn renaming_onto_itself_changes_nothing() {
        let mut t = Inodes::new();
        let a = t.lookup("a", Kind::File);
        t.rename("a", "a");
        assert_eq!(t.path(a), Some("a"));
        assert_eq!(t.len(), 2);
    }
}
