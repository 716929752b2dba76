//! `.scs-trash` at the root of the mount: the trash as a read-only tree of
//! the paths its items had. A user browses it and copies files out of it
//! with the usual tools; `scs trash restore` puts them back in place.
//!
//! [`TrashView`] wraps the [`Cluster`] the mount uses. Its directories
//! are made up here, with inode numbers of their own in a range the
//! cluster never hands out ([`is_virtual`]); what is in them is the
//! trash's items: a directory in the trash is one of those made-up
//! directories (with its mode, owner and times), anything else is its own
//! inode, read from the cluster as any file is. The listing is asked again
//! at most once a [`FRESH`]. Nothing in it can be changed: a change in a
//! made-up directory fails with EROFS, and the cluster keeps what is in
//! the trash as it was removed.
//!
//! The earlier versions of a live file sit at its path as `NAME~v1`,
//! `NAME~v2` … numbered as `scs versions` numbers them (1 the oldest
//! kept): `cp .scs-trash/notes.txt~v1 notes.txt` brings one back. Those of
//! a file in the trash carry its removal time too (`NAME~<removed>~v1`), so
//! they never take the names of a live file's versions at the same path.
//!
//! `.scs-trash` is not in the root's listing (a backup of the mount
//! should not take the trash with it), but it is there by name, as
//! `.snapshot` is on NAS file systems.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use scs_common::inode::{Changed, DirEntry, Inode, Listed, NewNode, Removal, RenameMode, SetAttrs, XattrMode};
use scs_common::locks::{FileLock, LockAnswer, SessionId};
use scs_common::proto::rpc::{StatusReport, Target, TrashItem, UploadSpec};
use scs_common::{Error, Ino, Kind, Result};

use super::cluster::{Cluster, Opener, UploadStream, Uploaded};
use super::lock;

/// The name of the trash at the root of the mount.
pub use scs_common::name::TRASH_DIR;
/// How long a listing of the trash is used before it is asked again.
const FRESH: Duration = Duration::from_secs(1);
/// The made-up directories' inode numbers: from 2^62 up to 2^63, where the
/// cluster hands out none (leaders count up from 2, and an index upgraded
/// from paths uses 2^63 and up).
const VIRTUAL_BASE: u64 = 1 << 62;

/// Whether `ino` is one of the trash's made-up directories.
pub fn is_virtual(ino: Ino) -> bool {
    ino.0 & (3 << 62) == VIRTUAL_BASE
}

/// The made-up directory for `path` in the trash ("" for `.scs-trash`).
fn virtual_ino(path: &str) -> Ino {
    let h = Sha256::digest(path.as_bytes());
    let n = u64::from_be_bytes(h[..8].try_into().unwrap_or_default());
    Ino(VIRTUAL_BASE | (n & (VIRTUAL_BASE - 1)))
}

/// The trash as a tree: each made-up directory and what is in it.
#[derive(Default)]
struct Tree {
    dirs: HashMap<Ino, Dir>,
}

struct Dir {
    inode: Inode,
    children: BTreeMap<String, Inode>,
}

impl Tree {
    /// The tree of `items`, its top shown with `top`'s owner and times.
    fn of(items: &[TrashItem], top: &Inode) -> Tree {
        let mut tree = Tree::default();
        let root = virtual_ino("");
        let mut shown = made_dir(root, Ino::ROOT, top);
        shown.mode = 0o555;
        tree.dirs.insert(root, Dir { inode: shown, children: BTreeMap::new() });
        let (versions, removed): (Vec<&TrashItem>, Vec<&TrashItem>) =
            items.iter().partition(|i| i.inode.version_of().is_some());
        // Where the versions of each file removed go, and their name.
        let mut shown_at: HashMap<Ino, (Ino, String)> = HashMap::new();
        // The latest removed of a path gets its name, the others the time
        // they were removed after it: items come sorted by path and time.
        let mut named: HashMap<&str, usize> = HashMap::new();
        for (k, item) in removed.iter().enumerate() {
            named.insert(item.path.as_str(), k);
        }
        for (k, item) in removed.iter().enumerate() {
            let (parent_path, base) = split(&item.path);
            let parent = tree.dir_at(parent_path, top);
            let name = if named.get(item.path.as_str()) == Some(&k) {
                base.to_string()
            } else {
                format!("{base}~{}", removed_label(&item.inode))
            };
            let shown = if item.inode.is_dir() {
                let path = if name == base { item.path.clone() } else { format!("{parent_path}/{name}") };
                let ino = virtual_ino(&path);
                let inode = owner_only(made_dir(ino, parent, &item.inode));
                let d = tree.dirs.entry(ino).or_insert_with(|| Dir { inode: inode.clone(), children: BTreeMap::new() });
                d.inode = inode.clone();
                inode
            } else {
                shown_at.insert(item.inode.ino, (parent, format!("{base}~{}", removed_label(&item.inode))));
                owner_only(item.inode.clone())
            };
            if let Some(p) = tree.dirs.get_mut(&parent) {
                p.children.insert(name, shown);
            }
        }
        tree.add_versions(versions, &shown_at, top);
        tree
    }

    /// Each file's `versions`, oldest first as `scs versions` numbers
    /// them, as `NAME~vN`: for one in the trash, where and as `shown_at`
    /// has it; for a live one, at the path the listing gives them.
    fn add_versions(&mut self, versions: Vec<&TrashItem>, shown_at: &HashMap<Ino, (Ino, String)>, top: &Inode) {
        let mut by_file: BTreeMap<Ino, Vec<&TrashItem>> = BTreeMap::new();
        for v in versions {
            if let Some(of) = v.inode.version_of() {
                by_file.entry(of).or_default().push(v);
            }
        }
        for (of, mut kept) in by_file {
            kept.sort_by_key(|v| (v.inode.trashed.as_ref().map_or(0, |t| t.at_ns), v.inode.ino));
            let (parent, name) = match shown_at.get(&of) {
                Some(at) => at.clone(),
                None => {
                    let (parent_path, base) = split(&kept[0].path);
                    (self.dir_at(parent_path, top), base.to_string())
                }
            };
            let Some(dir) = self.dirs.get_mut(&parent) else { continue };
            for (k, v) in kept.into_iter().enumerate() {
                // A name taken by something removed keeps it.
                dir.children.entry(format!("{name}~v{}", k + 1)).or_insert_with(|| owner_only(v.inode.clone()));
            }
        }
    }

    /// The made-up directory at `path`, made with those above it if need be.
    fn dir_at(&mut self, path: &str, top: &Inode) -> Ino {
        let mut at = virtual_ino("");
        let mut sofar = String::new();
        for c in path.split('/').filter(|c| !c.is_empty()) {
            if !sofar.is_empty() {
                sofar.push('/');
            }
            sofar.push_str(c);
            let ino = virtual_ino(&sofar);
            if !self.dirs.contains_key(&ino) {
                let inode = made_dir(ino, at, top);
                if let Some(p) = self.dirs.get_mut(&at) {
                    // Something removed by that name (not a directory: those
                    // are in `dirs`) makes way, under its removal time.
                    if let Some(removed) = p.children.remove(c) {
                        p.children.entry(format!("{c}~{}", removed_label(&removed))).or_insert(removed);
                    }
                    p.children.insert(c.to_string(), inode.clone());
                }
                self.dirs.insert(ino, Dir { inode, children: BTreeMap::new() });
            }
            at = ino;
        }
        at
    }
}

/// A path's directory and last component.
fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// What is in the trash is its owner's to read (and root's) whatever the
/// directories it was in allowed: they are not there to ask.
const OWNER_ONLY: u32 = 0o500;

/// `i` as the trash shows it: read-only, to its owner.
fn owner_only(mut i: Inode) -> Inode {
    if i.kind != Kind::Symlink {
        i.mode &= OWNER_ONLY;
    }
    i
}

/// A made-up directory `ino` in `parent`, with `like`'s mode, owner and times.
fn made_dir(ino: Ino, parent: Ino, like: &Inode) -> Inode {
    let mut i = Inode::new(ino, Kind::Dir, like.mode & 0o7555, like.uid, like.gid, like.mtime_ns);
    (i.atime_ns, i.ctime_ns, i.parent, i.nlink) = (like.atime_ns, like.ctime_ns, parent, 2);
    i.xattrs = like.xattrs.clone();
    i
}

/// `2026-12-05T16:20:01Z`: when an item was removed, for its name.
fn removed_label(i: &Inode) -> String {
    let (y, m, d, h, mi, sec) = super::time::utc(i.trashed.as_ref().map_or(i.ctime_ns, |t| t.at_ns));
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{sec:02}Z")
}

/// The mount's cluster with the trash shown at `.scs-trash`.
pub struct TrashView {
    inner: Arc<dyn Cluster>,
    tree: Mutex<Option<(Instant, Arc<Tree>)>>,
}

impl TrashView {
    pub fn new(inner: Arc<dyn Cluster>) -> TrashView {
        TrashView { inner, tree: Mutex::new(None) }
    }

    /// The tree, asked of the cluster again once it is older than [`FRESH`].
    fn tree(&self) -> Result<Arc<Tree>> {
        if let Some((at, t)) = lock(&self.tree).as_ref() {
            if at.elapsed() < FRESH {
                return Ok(t.clone());
            }
        }
        let top = self.inner.getattr(Ino::ROOT)?.ok_or_else(|| Error::Internal("the root is missing".into()))?;
        let tree = Arc::new(Tree::of(&self.inner.trash()?, &top));
        *lock(&self.tree) = Some((Instant::now(), tree.clone()));
        Ok(tree)
    }

    fn read_only(what: &str) -> Error {
        Error::ReadOnly(format!("{TRASH_DIR} is read-only ({what}); scs trash restore puts things back"))
    }

    /// Refuses a change in a made-up directory.
    fn writable(ino: Ino, what: &str) -> Result<()> {
        if is_virtual(ino) {
            return Err(Self::read_only(what));
        }
        Ok(())
    }
}

impl Cluster for TrashView {
    fn lookup(&self, parent: Ino, name: &str) -> Result<Option<Inode>> {
        if parent == Ino::ROOT && name == TRASH_DIR {
            let tree = self.tree()?;
            return Ok(tree.dirs.get(&virtual_ino("")).map(|d| d.inode.clone()));
        }
        if is_virtual(parent) {
            return Ok(self.tree()?.dirs.get(&parent).and_then(|d| d.children.get(name).cloned()));
        }
        self.inner.lookup(parent, name)
    }

    fn getattr(&self, ino: Ino) -> Result<Option<Inode>> {
        if is_virtual(ino) {
            return Ok(self.tree()?.dirs.get(&ino).map(|d| d.inode.clone()));
        }
        Ok(self.inner.getattr(ino)?.map(|i| if i.is_trashed() { owner_only(i) } else { i }))
    }

    fn readdir(&self, dir: Ino) -> Result<Listed> {
        if !is_virtual(dir) {
            return self.inner.readdir(dir);
        }
        let tree = self.tree()?;
        let d = tree.dirs.get(&dir).ok_or_else(|| Error::NotFound(format!("{TRASH_DIR}: inode {dir}")))?;
        let entries = d.children.iter().map(|(name, inode)| DirEntry { name: name.clone(), inode: inode.clone() });
        // Made here, of no version the cluster gives.
        Ok(Listed { entries: entries.collect(), version: None })
    }

    fn make(&self, parent: Ino, name: &str, node: &NewNode) -> Result<Changed> {
        Self::writable(parent, "make")?;
        self.inner.make(parent, name, node)
    }

    fn link(&self, ino: Ino, parent: Ino, name: &str) -> Result<Changed> {
        Self::writable(parent, "link")?;
        Self::writable(ino, "link")?;
        self.inner.link(ino, parent, name)
    }

    fn remove(&self, parent: Ino, name: &str, what: Removal) -> Result<Changed> {
        Self::writable(parent, "remove")?;
        self.inner.remove(parent, name, what)
    }

    fn rename(&self, parent: Ino, name: &str, new_parent: Ino, new_name: &str, mode: RenameMode) -> Result<Changed> {
        Self::writable(parent, "rename")?;
        Self::writable(new_parent, "rename")?;
        self.inner.rename(parent, name, new_parent, new_name, mode)
    }

    fn set_attr(&self, ino: Ino, set: &SetAttrs) -> Result<Inode> {
        Self::writable(ino, "setattr")?;
        self.inner.set_attr(ino, set)
    }

    fn set_xattr(&self, ino: Ino, name: &str, value: &[u8], mode: XattrMode) -> Result<Inode> {
        Self::writable(ino, "setxattr")?;
        self.inner.set_xattr(ino, name, value, mode)
    }

    fn remove_xattr(&self, ino: Ino, name: &str) -> Result<Inode> {
        Self::writable(ino, "removexattr")?;
        self.inner.remove_xattr(ino, name)
    }

    fn reserve_inodes(&self, count: u32) -> Result<(Ino, u32)> {
        self.inner.reserve_inodes(count)
    }

    fn status(&self) -> Result<StatusReport> {
        self.inner.status()
    }

    fn status_within(&self, limit: Duration) -> Option<StatusReport> {
        self.inner.status_within(limit)
    }

    fn upload(&self, spec: UploadSpec, open: Opener) -> Result<Uploaded> {
        check_target(&spec)?;
        self.inner.upload(spec, open)
    }

    fn upload_many(&self, files: &[(UploadSpec, Vec<u8>)]) -> Result<Vec<Result<Uploaded>>> {
        for (spec, _) in files {
            check_target(spec)?;
        }
        self.inner.upload_many(files)
    }

    fn start_stream(&self, spec: UploadSpec) -> Result<Box<dyn UploadStream>> {
        check_target(&spec)?;
        self.inner.start_stream(spec)
    }

    fn download_to(&self, ino: Ino, dest: &Path) -> Result<Inode> {
        if is_virtual(ino) {
            return Err(Error::IsDir(format!("{TRASH_DIR}: inode {ino}")));
        }
        self.inner.download_to(ino, dest)
    }

    fn read_range(&self, ino: Ino, offset: u64, len: u64, buf: Vec<u8>) -> Result<(Inode, Vec<u8>)> {
        if is_virtual(ino) {
            return Err(Error::IsDir(format!("{TRASH_DIR}: inode {ino}")));
        }
        self.inner.read_range(ino, offset, len, buf)
    }

    fn trash(&self) -> Result<Vec<TrashItem>> {
        self.inner.trash()
    }

    fn lock(&self, session: SessionId, lock: FileLock) -> Result<LockAnswer> {
        self.inner.lock(session, lock)
    }

    fn unlock(&self, session: SessionId, ino: Ino, owner: u64, start: u64, end: u64) -> Result<LockAnswer> {
        self.inner.unlock(session, ino, owner, start, end)
    }

    fn test_lock(&self, session: SessionId, lock: FileLock) -> Result<LockAnswer> {
        self.inner.test_lock(session, lock)
    }

    fn keep_alive(&self, session: SessionId) -> Result<LockAnswer> {
        self.inner.keep_alive(session)
    }

    fn reclaim(&self, session: SessionId, locks: Vec<FileLock>) -> Result<Vec<FileLock>> {
        self.inner.reclaim(session, locks)
    }
}

/// Refuses an upload into a made-up directory.
fn check_target(spec: &UploadSpec) -> Result<()> {
    match &spec.target {
        Target::Ino(ino) | Target::New { parent: ino, .. } if is_virtual(*ino) => Err(TrashView::read_only("write")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scs_common::Trashed;

    fn item(path: &str, ino: u64, kind: Kind, at_ns: i64) -> TrashItem {
        let mut i = Inode::new(Ino(ino), kind, 0o644, 1000, 1000, 5);
        i.trashed = Some(Box::new(Trashed {
            dir: Ino(1),
            name: path.rsplit('/').next().unwrap().into(),
            at_ns,
            version_of: None,
        }));
        TrashItem { path: path.into(), inode: i, inside: path.contains('/'), items: 1, bytes: 0 }
    }

    #[test]
    fn the_trash_shows_as_the_paths_it_had_the_latest_of_a_path_under_its_name() {
        let top = Inode::new(Ino::ROOT, Kind::Dir, 0o755, 0, 0, 1);
        let items = vec![
            item("docs/a.txt", 10, Kind::File, 1_000_000_000),
            item("docs/a.txt", 11, Kind::File, 86_400_000_000_000),
            item("photos", 12, Kind::Dir, 3),
            item("photos/x.jpg", 13, Kind::File, 2),
        ];
        let tree = Tree::of(&items, &top);
        let root = &tree.dirs[&virtual_ino("")];
        assert_eq!(root.children.keys().collect::<Vec<_>>(), ["docs", "photos"]);
        let docs = &tree.dirs[&virtual_ino("docs")];
        assert_eq!(docs.children.keys().collect::<Vec<_>>(), ["a.txt", "a.txt~1970-01-01T00:00:01Z"]);
        assert_eq!(docs.children["a.txt"].ino, Ino(11), "the latest removed has the name");
        let photos = &root.children["photos"];
        assert!(is_virtual(photos.ino) && photos.is_dir() && photos.mode & 0o277 == 0, "{photos:?}");
        assert_eq!(docs.children["a.txt"].mode, 0o400, "a file there is its owner's to read");
        assert_eq!(tree.dirs[&photos.ino].children["x.jpg"].ino, Ino(13), "a file is its own inode");
        assert!(!is_virtual(Ino(13)) && !is_virtual(Ino(1 << 63 | 5)) && !is_virtual(Ino(2)));
    }

    #[test]
    fn earlier_versions_sit_next_to_their_file_numbered_as_scs_versions_numbers_them() {
        let top = Inode::new(Ino::ROOT, Kind::Dir, 0o755, 0, 0, 1);
        let version = |path: &str, ino: u64, of: u64, at_ns: i64| {
            let mut v = item(path, ino, Kind::File, at_ns);
            v.inode.trashed.as_mut().unwrap().version_of = Some(Ino(of));
            v
        };
        let items = vec![
            item("docs/a.txt", 10, Kind::File, 1_000_000_000),
            item("docs/a.txt", 11, Kind::File, 86_400_000_000_000),
            // Of live file 20 at docs/b.txt, listed newest first here.
            version("docs/b.txt", 31, 20, 9),
            version("docs/b.txt", 30, 20, 8),
            version("docs/a.txt", 32, 11, 7),
            version("docs/a.txt", 33, 10, 6),
            version("notes/c.txt", 34, 21, 5),
        ];
        let tree = Tree::of(&items, &top);
        let docs = &tree.dirs[&virtual_ino("docs")];
        let names: Vec<(&str, u64)> = docs.children.iter().map(|(n, i)| (n.as_str(), i.ino.0)).collect();
        assert_eq!(
            names,
            [
                ("a.txt", 11),
                ("a.txt~1970-01-01T00:00:01Z", 10),
                ("a.txt~1970-01-01T00:00:01Z~v1", 33),
                ("a.txt~1970-01-02T00:00:00Z~v1", 32),
                ("b.txt~v1", 30),
                ("b.txt~v2", 31),
            ],
            "a live file's versions under its name, a removed file's with its removal time"
        );
        let notes = &tree.dirs[&virtual_ino("notes")];
        assert_eq!(notes.children["c.txt~v1"].mode, 0o400, "in a directory made up for it, its owner's to read");

        // A live file at a path that a removed file had (a.txt removed,
        // then a.txt made anew and overwritten), and a live file below a
        // name a removed file had (notes removed, then notes/ made).
        let items = vec![
            item("a.txt", 10, Kind::File, 1_000_000_000),
            version("a.txt", 30, 10, 5),
            item("notes", 11, Kind::File, 2_000_000_000),
            version("a.txt", 31, 20, 8),
            version("notes/todo.txt", 32, 21, 9),
        ];
        let tree = Tree::of(&items, &top);
        let root = &tree.dirs[&virtual_ino("")];
        let names: Vec<(&str, u64)> = root.children.iter().map(|(n, i)| (n.as_str(), i.ino.0)).collect();
        let notes_dir = virtual_ino("notes").0;
        assert_eq!(
            names,
            [
                ("a.txt", 10),
                ("a.txt~1970-01-01T00:00:01Z~v1", 30),
                ("a.txt~v1", 31),
                ("notes", notes_dir),
                ("notes~1970-01-01T00:00:02Z", 11),
            ],
            "v1 is the live file's, as scs versions a.txt says; the removed notes makes way for the directory"
        );
    }
}
