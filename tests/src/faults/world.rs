//! One possible state of a client's part of the namespace (its directories,
//! which file each name is, and each file's content) and what each `scs`
//! command does to it, step by step as the CLI commits it.
//!
//! Files and directories have identities, as inodes do: a file is named by
//! the index of the operation that made it, a directory by that index and
//! its depth, so the same file or directory has the same id in every
//! possible state and hard links are names with one id. A state also
//! carries the failed writes that have not taken effect in it but still may
//! ([`World::pending`]). The cluster stores a change as records keyed by
//! inode and by (directory inode, name), so a write that takes effect late
//! acts on the files and directories it named when it was made, wherever
//! they are by then: a late `mv d2/f06 d4/f09` after `mv d2 d7` moves
//! `d7/f06`.

use std::collections::{BTreeMap, BTreeSet};

use scs_common::name::is_inside as inside;

use super::action::{Action, Seen};

/// A file: the index, in the history, of the upload that made it.
pub type FileId = usize;

/// A directory: the index of the operation that made it, and its depth.
pub type DirId = (usize, usize);

/// The cluster's root (above the clients' directories).
const ROOT: DirId = (usize::MAX, 0);

/// A name as a change's records hold it: below a directory, by identity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    dir: DirId,
    /// The rest of the path below `dir` (several components when the change
    /// makes directories on the way).
    rest: String,
}

/// What a failed write does if it takes effect late, fixed when it was made.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Landing {
    /// An upload into an existing file.
    Content { file: FileId, sha: String },
    /// An upload of a new file (and the directories on the way).
    Create { at: Loc, sha: String },
    /// `rm` of a file name or an empty directory.
    Unlink { at: Loc },
    /// A rename of a file or directory, replacing the target.
    Move { from: Loc, to: Loc },
    /// A second name of a file.
    Link { file: FileId, to: Loc },
    /// A file back from the trash, at the place it was removed from.
    Restore { file: FileId },
    /// A file's kept version `sha` its content again.
    Revert { file: FileId, sha: String },
}

/// A file in the trash: its last name (by the directory it was in), its
/// content, and when it went (the history index of the operation).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Trashed {
    at: Loc,
    file: FileId,
    content: String,
    when: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct World {
    dirs: BTreeMap<String, DirId>,
    files: BTreeMap<String, FileId>,
    content: BTreeMap<FileId, String>,
    /// Failed writes (their history index) that have not taken effect in
    /// this state and may still, until the time given (ms of the run).
    pending: BTreeMap<usize, (i64, Landing)>,
    /// Files whose last name went, in the trash.
    trash: Vec<Trashed>,
    /// Directories removed: in the trash, where each was.
    removed_dirs: BTreeMap<DirId, Loc>,
    /// Every content each file's overwrites replaced: a superset of its
    /// earlier versions (with the file when it is in the trash). A version
    /// restored stays in it, so that the states a restore may end in (one
    /// per version) are the same again once the file is written next,
    /// instead of multiplying with every restore.
    versions: BTreeMap<FileId, BTreeSet<String>>,
}

/// What a command did to one state: the state after each step it commits
/// (`mv` may make directories, then renames), and whether it ran to the end
/// (`false`: it failed there, as it would answer). `also` holds other
/// states it may have ended in instead of the last step: a restore brings
/// back the last file removed from a name, or an earlier one if the room
/// the cluster made took the later ones.
#[derive(Debug)]
pub struct Effect {
    pub steps: Vec<World>,
    pub done: bool,
    pub also: Vec<World>,
}

impl Effect {
    fn one(w: World, done: bool) -> Effect {
        Effect { steps: vec![w], done, also: Vec::new() }
    }
}

impl World {
    /// What `scs download name` reads.
    pub fn read(&self, name: &str) -> Seen {
        match self.files.get(name) {
            Some(id) => Seen::Present(self.content[id].clone()),
            None => Seen::Absent,
        }
    }

    pub fn is_file(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }

    pub fn is_dir(&self, name: &str) -> bool {
        self.dirs.contains_key(name)
    }

    /// Whether `a` and `b` are names of one file.
    pub fn same_file(&self, a: &str, b: &str) -> bool {
        self.files.get(a).is_some_and(|x| self.files.get(b) == Some(x))
    }

    /// Every file name.
    pub fn file_names(&self) -> impl Iterator<Item = &String> {
        self.files.keys()
    }

    /// Every directory.
    pub fn dir_names(&self) -> impl Iterator<Item = &String> {
        self.dirs.keys()
    }

    /// Whether directory `dir` has an entry.
    pub fn has_children(&self, dir: &str) -> bool {
        self.files.keys().any(|p| inside(p, dir)) || self.dirs.keys().any(|p| inside(p, dir))
    }

    /// This state with failed write `op` (the history's `action`) able to
    /// take effect until `until_ms`, if it could take effect here at all.
    pub fn with_pending(&self, op: usize, action: &Action, until_ms: i64) -> Option<World> {
        let landing = self.landing_of(action)?;
        let mut w = self.clone();
        w.pending.insert(op, (until_ms, landing));
        Some(w)
    }

    /// The failed writes that may still take effect here.
    pub fn pending(&self) -> impl Iterator<Item = usize> + '_ {
        self.pending.keys().copied()
    }

    /// This state after pending write `op` takes effect (`None`: it cannot
    /// here, as what it names is gone).
    pub fn land(&self, op: usize) -> Option<World> {
        let mut w = self.clone();
        let (_, landing) = w.pending.remove(&op)?;
        let done = match &landing {
            Landing::Content { file, sha } => w.content.contains_key(file) && w.overwrite(*file, sha),
            Landing::Create { at, sha } => w.path_of(at).is_some_and(|p| w.upload(op, &p, sha)),
            Landing::Unlink { at } => w.path_of(at).is_some_and(|p| w.remove(op, &p)),
            Landing::Move { from, to } => match (w.path_of(from), w.path_of(to)) {
                (Some(f), Some(t)) => (w.is_file(&f) || w.is_dir(&f)) && w.make_parents(op, &t) && w.rename(op, &f, &t),
                _ => false,
            },
            Landing::Link { file, to } => match w.path_of(to) {
                Some(t) => match w.files.iter().find(|(_, f)| *f == file).map(|(p, _)| p.clone()) {
                    Some(from) => w.link(&from, &t),
                    None => false,
                },
                None => false,
            },
            Landing::Restore { file } => match w.restored(*file) {
                Some(back) => {
                    w = back;
                    true
                }
                None => false,
            },
            Landing::Revert { file, sha } => w.revert(*file, sha),
        };
        done.then_some(w)
    }

    /// Drops the pending writes whose time is up at `now_ms`.
    pub fn expire(mut self, now_ms: i64) -> World {
        self.pending.retain(|_, (until, _)| *until >= now_ms);
        self
    }

    /// `path` below the deepest directory above it that exists here.
    fn loc(&self, path: &str) -> Loc {
        let mut at = (ROOT, path.to_string());
        for (i, _) in path.match_indices('/') {
            match self.dirs.get(&path[..i]) {
                Some(id) => at = (*id, path[i + 1..].to_string()),
                None => break,
            }
        }
        Loc { dir: at.0, rest: at.1 }
    }

    /// Where `loc` is now (`None`: its directory is gone).
    fn path_of(&self, loc: &Loc) -> Option<String> {
        if loc.dir == ROOT {
            return Some(loc.rest.clone());
        }
        let dir = self.dirs.iter().find(|(_, id)| **id == loc.dir)?.0;
        Some(format!("{dir}/{}", loc.rest))
    }

    /// What `action` would record if it ran from this state (`None`: it
    /// would fail here).
    fn landing_of(&self, action: &Action) -> Option<Landing> {
        match action {
            Action::Read { .. } => None,
            Action::Upload { name, sha, .. } => match self.files.get(name) {
                Some(f) => Some(Landing::Content { file: *f, sha: sha.clone() }),
                None => Some(Landing::Create { at: self.loc(name), sha: sha.clone() }),
            },
            Action::Delete { name } | Action::RemoveDir { name } => {
                (self.is_file(name) || self.is_dir(name)).then(|| Landing::Unlink { at: self.loc(name) })
            }
            Action::Link { from, to } => self.files.get(from).map(|f| Landing::Link { file: *f, to: self.loc(to) }),
            Action::Restore { name } => self.removed_at(name).first().map(|f| Landing::Restore { file: *f }),
            Action::Revert { name } => {
                let file = *self.files.get(name)?;
                let sha = self.earlier(file).pop()?;
                Some(Landing::Revert { file, sha })
            }
            Action::Rename { from, to } | Action::RenameDir { from, to } => {
                if !self.is_file(from) && !self.is_dir(from) {
                    return None;
                }
                Some(Landing::Move { from: self.loc(from), to: self.loc(&self.mv_target(from, to)) })
            }
        }
    }

    /// Where `scs mv from to` puts `from`: a `to` that is a directory receives it.
    fn mv_target(&self, from: &str, to: &str) -> String {
        if self.is_dir(to) && to != from {
            format!("{to}/{}", from.rsplit('/').next().unwrap_or(from))
        } else {
            to.to_string()
        }
    }

    /// What `action` (the history's operation `id`) does to this state.
    pub fn apply(&self, id: FileId, action: &Action) -> Effect {
        let mut w = self.clone();
        match action {
            Action::Read { .. } => Effect::one(w, true),
            Action::Upload { name, sha, .. } => {
                let done = w.upload(id, name, sha);
                Effect::one(w, done)
            }
            Action::Delete { name } | Action::RemoveDir { name } => {
                let done = w.remove(id, name);
                Effect::one(w, done)
            }
            Action::Link { from, to } => {
                let done = w.link(from, to);
                Effect::one(w, done)
            }
            Action::Rename { from, to } | Action::RenameDir { from, to } => self.mv(id, from, to),
            Action::Restore { name } => {
                let mut back: Vec<World> =
                    self.removed_at(name).into_iter().filter_map(|file| self.restored(file)).collect();
                match back.is_empty() || self.is_file(name) || self.is_dir(name) {
                    true => Effect::one(w, false),
                    false => {
                        let last = back.remove(0);
                        Effect { steps: vec![last], done: true, also: back }
                    }
                }
            }
            // Any earlier content: the newest version is not modelled (the
            // room the cluster makes takes blobs, oldest first, so a newer
            // version in a blob can go before an older inline one, and a
            // write landing late makes a version the listing missed).
            Action::Revert { name } => {
                let Some(&file) = self.files.get(name) else { return Effect::one(w, false) };
                let mut back: Vec<World> = self
                    .earlier(file)
                    .into_iter()
                    .filter_map(|sha| {
                        let mut w = self.clone();
                        w.revert(file, &sha).then_some(w)
                    })
                    .collect();
                match back.pop() {
                    None => Effect::one(w, false),
                    Some(one) => Effect { steps: vec![one], done: true, also: back },
                }
            }
        }
    }

    /// Whether an earlier version of the file at `name` may be kept.
    pub fn has_versions(&self, name: &str) -> bool {
        self.files.get(name).is_some_and(|f| !self.earlier(*f).is_empty())
    }

    /// The contents file `f` had before, but the one it has.
    fn earlier(&self, f: FileId) -> Vec<String> {
        let now = self.content.get(&f);
        self.versions.get(&f).map_or_else(Vec::new, |v| v.iter().filter(|s| Some(*s) != now).cloned().collect())
    }

    /// The paths of the files in the trash, as `scs trash ls` shows them.
    pub fn trash_paths(&self) -> Vec<String> {
        let mut out: Vec<String> = self.trash.iter().filter_map(|t| self.trash_path(&t.at)).collect();
        out.sort();
        out.dedup();
        out
    }

    /// The files in the trash whose path is `name`, the last removed first.
    fn removed_at(&self, name: &str) -> Vec<FileId> {
        let mut at: Vec<&Trashed> =
            self.trash.iter().filter(|t| self.trash_path(&t.at).as_deref() == Some(name)).collect();
        at.sort_by_key(|t| std::cmp::Reverse(t.when));
        at.into_iter().map(|t| t.file).collect()
    }

    /// Where `loc` is, through directories in the trash too (`None`: its
    /// directory is gone).
    fn trash_path(&self, loc: &Loc) -> Option<String> {
        let mut rest = loc.rest.clone();
        let mut dir = loc.dir;
        for _ in 0..64 {
            if dir == ROOT {
                return Some(rest);
            }
            if let Some(p) = self.dirs.iter().find(|(_, id)| **id == dir).map(|(p, _)| p) {
                return Some(format!("{p}/{rest}"));
            }
            let up = self.removed_dirs.get(&dir)?;
            rest = format!("{}/{rest}", up.rest);
            dir = up.dir;
        }
        None
    }

    /// This state with `file` back from the trash where it was removed,
    /// with the removed directories above it (themselves only), as one
    /// commit: `None` if it is not in the trash or a name on the way is
    /// taken.
    fn restored(&self, file: FileId) -> Option<World> {
        let mut w = self.clone();
        let k = w.trash.iter().position(|t| t.file == file)?;
        let t = w.trash.remove(k);
        w.bring_back_dir(t.at.dir)?;
        let path = w.path_of(&t.at)?;
        if w.is_file(&path) || w.is_dir(&path) {
            return None;
        }
        w.files.insert(path, t.file);
        w.content.insert(t.file, t.content);
        Some(w)
    }

    /// Directory `dir` live again, with the removed ones above it.
    fn bring_back_dir(&mut self, dir: DirId) -> Option<()> {
        if dir == ROOT || self.dirs.values().any(|d| *d == dir) {
            return Some(());
        }
        let at = self.removed_dirs.remove(&dir)?;
        self.bring_back_dir(at.dir)?;
        let path = self.path_of(&at)?;
        if self.is_file(&path) || self.is_dir(&path) {
            return None;
        }
        self.dirs.insert(path, dir);
        Some(())
    }

    /// `scs upload`: into the file at `name` (every name of it sees the new
    /// content), or a new file with the directories on the way, in one commit.
    fn upload(&mut self, id: FileId, name: &str, sha: &str) -> bool {
        if let Some(&f) = self.files.get(name) {
            return self.overwrite(f, sha);
        }
        if self.is_dir(name) || !self.make_parents(id, name) {
            return false;
        }
        self.files.insert(name.to_string(), id);
        self.content.insert(id, sha.to_string());
        true
    }

    /// File `f`'s content `sha`; what it replaces is kept as a version (an
    /// upload retried after its answer was lost replaces nothing). Every
    /// upload's content has a header, so none is empty.
    fn overwrite(&mut self, f: FileId, sha: &str) -> bool {
        if let Some(old) = self.content.insert(f, sha.to_string()) {
            if old != sha {
                self.versions.entry(f).or_default().insert(old);
            }
        }
        true
    }

    /// `scs restore --version` of live file `f`'s earlier content `sha`:
    /// its content again, and what it replaces a version.
    fn revert(&mut self, f: FileId, sha: &str) -> bool {
        let kept = self.versions.get(&f).is_some_and(|v| v.contains(sha));
        if !kept || self.content.get(&f).is_none_or(|now| now == sha) {
            return false;
        }
        self.overwrite(f, sha)
    }

    /// `mkdir -p` of `name`'s parent by operation `op`; false if a file is
    /// in the way.
    fn make_parents(&mut self, op: usize, name: &str) -> bool {
        let parts: Vec<&str> = name.split('/').collect();
        for n in 1..parts.len() {
            let dir = parts[..n].join("/");
            if self.files.contains_key(&dir) {
                return false;
            }
            self.dirs.entry(dir).or_insert((op, n));
        }
        true
    }

    /// `scs rm` (operation `op`): a file's name, or an empty directory.
    /// What loses its last name goes to the trash.
    fn remove(&mut self, op: usize, name: &str) -> bool {
        let at = self.loc(name);
        if let Some(f) = self.files.remove(name) {
            self.forget_unnamed(op, f, at);
            return true;
        }
        if self.is_dir(name) && !self.has_children(name) {
            self.remove_dir(name, at);
            return true;
        }
        false
    }

    fn remove_dir(&mut self, name: &str, at: Loc) {
        if let Some(d) = self.dirs.remove(name) {
            self.removed_dirs.insert(d, at);
        }
    }

    /// File `f`, whose name at `at` went: to the trash if it was its last.
    fn forget_unnamed(&mut self, op: usize, f: FileId, at: Loc) {
        if !self.files.values().any(|x| *x == f) {
            if let Some(content) = self.content.remove(&f) {
                self.trash.push(Trashed { at, file: f, content, when: op });
            }
        }
    }

    /// `scs ln from to`: a second name of a file, in an existing directory.
    fn link(&mut self, from: &str, to: &str) -> bool {
        let parent_ok = parent(to).is_none_or(|p| self.is_dir(p));
        let taken = self.is_file(to) || self.is_dir(to);
        match self.files.get(from) {
            Some(&f) if parent_ok && !taken => {
                self.files.insert(to.to_string(), f);
                true
            }
            _ => false,
        }
    }

    /// `scs mv`: makes the directories on the way to `to` (a commit of its
    /// own), then renames; a `to` that is a directory receives `from`.
    fn mv(&self, op: usize, from: &str, to: &str) -> Effect {
        let mut w = self.clone();
        let from_dir = w.is_dir(from);
        if !from_dir && !w.is_file(from) {
            return Effect::one(w, false);
        }
        if from_dir && inside(to, from) {
            return Effect::one(w, false);
        }
        let mut steps = Vec::new();
        if !w.make_parents(op, to) {
            return Effect::one(w, false);
        }
        if w != *self {
            steps.push(w.clone());
        }
        let dst = w.mv_target(from, to);
        let done = w.rename(op, from, &dst);
        steps.push(w);
        Effect { steps, done, also: Vec::new() }
    }

    /// rename(2) with replace (operation `op`).
    fn rename(&mut self, op: usize, from: &str, to: &str) -> bool {
        if from == to || self.same_file(from, to) {
            return true;
        }
        let from_dir = self.is_dir(from);
        if from_dir && inside(to, from) {
            return false;
        }
        match (from_dir, self.is_dir(to), self.files.get(to).copied()) {
            (true, false, Some(_)) | (false, true, _) => return false,
            (true, true, _) if self.has_children(to) => return false,
            (true, true, _) => {
                let at = self.loc(to);
                self.remove_dir(to, at);
            }
            (false, false, Some(old)) => {
                let at = self.loc(to);
                self.files.remove(to);
                self.forget_unnamed(op, old, at);
            }
            _ => {}
        }
        if !from_dir {
            let f = self.files.remove(from).expect("checked above");
            self.files.insert(to.to_string(), f);
            return true;
        }
        let moved = |p: &String| (p == from || inside(p, from)).then(|| format!("{to}{}", &p[from.len()..]));
        self.dirs = self.dirs.iter().map(|(p, d)| (moved(p).unwrap_or_else(|| p.clone()), *d)).collect();
        self.files = self.files.iter().map(|(p, f)| (moved(p).unwrap_or_else(|| p.clone()), *f)).collect();
        true
    }
}

fn parent(name: &str) -> Option<&str> {
    name.rsplit_once('/').map(|(d, _)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(name: &str, sha: &str) -> Action {
        Action::Upload { name: name.into(), sha: sha.into(), size: 1 }
    }

    fn run(w: &World, id: FileId, a: Action) -> World {
        let e = w.apply(id, &a);
        assert!(e.done, "{a:?} on {w:?}");
        e.steps.last().cloned().unwrap()
    }

    fn p(s: &str) -> Seen {
        Seen::Present(s.into())
    }

    #[test]
    fn a_write_through_one_name_is_read_through_the_other_and_unlinking_one_keeps_the_other() {
        let w = run(&World::default(), 0, up("c1/d0/f00", "x"));
        assert!(w.is_dir("c1") && w.is_dir("c1/d0"), "the upload makes the directories on the way");
        let w = run(&w, 1, Action::Link { from: "c1/d0/f00".into(), to: "c1/d0/f01".into() });
        let w = run(&w, 2, up("c1/d0/f01", "y"));
        assert_eq!(w.read("c1/d0/f00"), p("y"));
        let w = run(&w, 3, Action::Delete { name: "c1/d0/f00".into() });
        assert_eq!((w.read("c1/d0/f00"), w.read("c1/d0/f01")), (Seen::Absent, p("y")));
        let e = w.apply(4, &Action::Link { from: "c1/d0/f01".into(), to: "c1/d9/f00".into() });
        assert!(!e.done, "ln does not make the directory it links into");
    }

    #[test]
    fn a_directory_rename_moves_everything_below_it_and_an_existing_directory_receives_it() {
        let w = run(&World::default(), 0, up("c1/d0/f00", "x"));
        let w = run(&w, 1, up("c1/d1/f00", "y"));
        let moved = run(&w, 2, Action::RenameDir { from: "c1/d0".into(), to: "c1/d2".into() });
        assert_eq!((moved.read("c1/d2/f00"), moved.read("c1/d0/f00")), (p("x"), Seen::Absent));
        let into = run(&w, 2, Action::RenameDir { from: "c1/d0".into(), to: "c1/d1".into() });
        assert_eq!(into.read("c1/d1/d0/f00"), p("x"), "mv into an existing directory, as mv(1)");
        assert!(!w.apply(3, &Action::RenameDir { from: "c1/d0".into(), to: "c1/d0/x".into() }).done);
        assert!(!w.apply(3, &Action::RemoveDir { name: "c1/d0".into() }).done, "not empty");
    }

    #[test]
    fn a_late_rename_acts_on_the_directories_it_named_wherever_they_are_now() {
        let w = run(&World::default(), 0, up("c1/d2/f06", "x"));
        let w = run(&w, 1, up("c1/d4/f00", "y"));
        let rename = Action::Rename { from: "c1/d2/f06".into(), to: "c1/d4/f09".into() };
        let w = w.with_pending(2, &rename, 1000).expect("it could run here");
        let w = run(&w, 3, up("c1/d2/f06", "z"));
        let w = run(&w, 4, Action::RenameDir { from: "c1/d4".into(), to: "c1/d7".into() });
        let w = run(&w, 5, Action::RenameDir { from: "c1/d2".into(), to: "c1/d4".into() });
        let landed = w.land(2).expect("both directories are still there");
        assert_eq!(landed.read("c1/d7/f09"), p("z"), "the file it named, in the directory it named");
        assert_eq!(landed.read("c1/d4/f06"), Seen::Absent);
        let gone = run(&w, 6, Action::Delete { name: "c1/d4/f06".into() });
        assert!(gone.land(2).is_none(), "the file it named is gone");
    }

    #[test]
    fn a_restore_brings_back_the_last_file_removed_from_a_name_with_the_directory_it_was_in() {
        let w = run(&World::default(), 0, up("c1/d0/f00", "x"));
        let w = run(&w, 1, Action::Delete { name: "c1/d0/f00".into() });
        let w = run(&w, 2, up("c1/d0/f00", "y"));
        let w = run(&w, 3, Action::Delete { name: "c1/d0/f00".into() });
        let w = run(&w, 4, Action::RemoveDir { name: "c1/d0".into() });
        assert_eq!(w.trash_paths(), ["c1/d0/f00"]);
        let restore = Action::Restore { name: "c1/d0/f00".into() };
        let e = w.apply(5, &restore);
        assert!(e.done);
        let back = e.steps.last().unwrap();
        assert_eq!(back.read("c1/d0/f00"), p("y"), "the last removed, its directory back with it");
        assert_eq!(e.also.len(), 1, "or the one before, if room was made of the last");
        assert_eq!(e.also[0].read("c1/d0/f00"), p("x"));
        // Never over a name that exists now.
        let taken = run(&w, 6, up("c1/d0/f00", "z"));
        assert!(!taken.apply(7, &restore).done);
        // A file renamed over leaves its content in the trash too.
        let w = run(&World::default(), 0, up("c1/d0/f00", "x"));
        let w = run(&w, 1, up("c1/d0/f01", "y"));
        let w = run(&w, 2, Action::Rename { from: "c1/d0/f01".into(), to: "c1/d0/f00".into() });
        let w = run(&w, 3, Action::Rename { from: "c1/d0".into(), to: "c1/d5".into() });
        assert_eq!(w.trash_paths(), ["c1/d5/f00"], "by the directory it was in, wherever that is now");
        assert!(!w.apply(4, &Action::Restore { name: "c1/d5/f00".into() }).done, "the name is taken");
        let w = run(&w, 4, Action::Rename { from: "c1/d5/f00".into(), to: "c1/d5/f02".into() });
        let back = run(&w, 5, Action::Restore { name: "c1/d5/f00".into() });
        assert_eq!((back.read("c1/d5/f00"), back.read("c1/d5/f02")), (p("x"), p("y")));
    }

    #[test]
    fn a_revert_brings_back_the_content_before_the_last_overwrite_and_keeps_what_it_replaced() {
        let w = run(&World::default(), 0, up("c1/d0/f00", "x"));
        assert!(!w.has_versions("c1/d0/f00") && !w.apply(1, &Action::Revert { name: "c1/d0/f00".into() }).done);
        let w = run(&w, 1, up("c1/d0/f00", "y"));
        let w = run(&w, 2, up("c1/d0/f00", "z"));
        let w = run(&w, 3, up("c1/d0/f00", "z"));
        assert_eq!(w.earlier(0), ["x", "y"], "the same content again replaces nothing");
        let e = w.apply(4, &Action::Revert { name: "c1/d0/f00".into() });
        assert!(e.done);
        let back = e.steps.last().unwrap();
        assert_eq!(back.read("c1/d0/f00"), p("y"));
        assert_eq!(back.earlier(0), ["x", "z"]);
        assert_eq!(e.also.len(), 1, "or the older one, if room was made of the newer");
        assert_eq!(e.also[0].read("c1/d0/f00"), p("x"));
        // Whichever came back, the states are one again once the file is written.
        let next: BTreeSet<World> =
            [back.clone(), e.also[0].clone()].iter().map(|s| run(s, 5, up("c1/d0/f00", "n"))).collect();
        assert_eq!(next.len(), 1);
        // The versions go to the trash with the file and come back with it.
        let w = run(&w, 5, Action::Delete { name: "c1/d0/f00".into() });
        assert!(!w.apply(6, &Action::Revert { name: "c1/d0/f00".into() }).done);
        let w = run(&w, 6, Action::Restore { name: "c1/d0/f00".into() });
        assert!(w.has_versions("c1/d0/f00"));
        // A revert that lands late lands on the file it named, if the
        // version it named is still kept.
        let revert = Action::Revert { name: "c1/d0/f00".into() };
        let pending = w.with_pending(7, &revert, 1000).expect("a version is kept");
        let moved = run(&pending, 8, Action::Rename { from: "c1/d0/f00".into(), to: "c1/d0/f01".into() });
        assert_eq!(moved.land(7).expect("the file is still there").read("c1/d0/f01"), p("y"));
        let reverted = run(&pending, 8, revert);
        assert!(reverted.land(7).is_none(), "version y is the content now, no longer kept");
    }

    #[test]
    fn a_rename_over_a_name_of_the_same_file_does_nothing_and_mv_commits_its_directories_first() {
        let w = run(&World::default(), 0, up("c1/d0/f00", "x"));
        let w = run(&w, 1, Action::Link { from: "c1/d0/f00".into(), to: "c1/d0/f01".into() });
        let same = run(&w, 2, Action::Rename { from: "c1/d0/f00".into(), to: "c1/d0/f01".into() });
        assert!(same.is_file("c1/d0/f00") && same.is_file("c1/d0/f01"));
        let e = w.apply(3, &Action::Rename { from: "c1/d0/f00".into(), to: "c1/d3/f00".into() });
        assert_eq!(e.steps.len(), 2, "the directory, then the rename");
        assert!(e.steps[0].is_dir("c1/d3") && e.steps[0].is_file("c1/d0/f00"));
    }
}
