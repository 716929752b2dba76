//! The rules of the namespace as pure functions: given what is there now (a
//! [`View`]), an operation yields the records that make the change, or the
//! error a local file system gives for the same mistake. No I/O and no
//! clock: the leader runs these against its index under its namespace lock,
//! with the time and fresh inode numbers passed in, and stamps the records
//! with versions; the tests run them against [`Memory`].
//!
//! What the kernel already checks for a mount (permissions with
//! `default_permissions`, sticky directories, chown rules) is not repeated
//! here; what only the cluster can decide (a name taken meanwhile by another
//! client, a directory moved into itself, link counts) is.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::inode::{
    Bytes, Dentry, DirStep, Inode, NewNode, Record, Removal, RenameMode, SetAttrs, TimeSet, XattrMode, XATTR_NAME_MAX,
    XATTR_SIZE_MAX, XATTR_TOTAL_MAX,
};
use crate::name::{self, PATH_MAX};
use crate::types::{Ino, Kind, S_ISGID};

/// Symlinks followed while resolving one path, as Linux's MAXSYMLINKS.
pub const MAX_SYMLINKS: usize = 40;
/// Deepest directory tree a walk up to the root goes through.
const MAX_DEPTH: usize = 4096;

/// Read access to the namespace as it is.
pub trait View {
    /// A live inode. A directory's `nlink` is filled in.
    fn inode(&self, ino: Ino) -> Result<Option<Inode>>;
    /// A live directory entry.
    fn dentry(&self, parent: Ino, name: &str) -> Result<Option<Dentry>>;
    /// Whether a directory has any live entry.
    fn has_children(&self, dir: Ino) -> Result<bool>;
    /// The earlier versions kept of file `of`, the oldest first (none in a
    /// view that keeps no versions).
    fn versions(&self, _of: Ino) -> Result<Vec<Ino>> {
        Ok(Vec::new())
    }
}

/// One change being worked out: reads see what it changed so far.
pub struct Plan<'a, V: View> {
    view: &'a V,
    now_ns: i64,
    /// Whether an inode whose last name goes is put in the trash
    /// ([`Inode::trash`]) rather than removed.
    trash: bool,
    /// Earlier versions kept of one file at most, with the trash on.
    max_versions: usize,
    inodes: BTreeMap<Ino, Inode>,
    dentries: BTreeMap<(Ino, String), Dentry>,
}

impl<'a, V: View> Plan<'a, V> {
    pub fn new(view: &'a V, now_ns: i64) -> Self {
        Plan {
            view,
            now_ns,
            trash: false,
            max_versions: usize::MAX,
            inodes: BTreeMap::new(),
            dentries: BTreeMap::new(),
        }
    }

    /// This plan, putting what loses its last name in the trash when `on`.
    pub fn with_trash(mut self, on: bool) -> Self {
        self.trash = on;
        self
    }

    /// This plan, keeping at most `n` earlier versions of a file (the
    /// oldest go first; 0 keeps none).
    pub fn with_max_versions(mut self, n: u32) -> Self {
        self.max_versions = n as usize;
        self
    }

    /// The time this change happens at.
    pub fn now(&self) -> i64 {
        self.now_ns
    }

    /// A live inode, as changed so far.
    pub fn inode(&self, ino: Ino) -> Result<Option<Inode>> {
        match self.inodes.get(&ino) {
            Some(i) => Ok((!i.deleted).then(|| i.clone())),
            None => self.view.inode(ino),
        }
    }

    /// Inode `ino`, live and not in the trash: what is in the trash is
    /// kept as it was removed (as a removed inode was before the trash).
    ///
    /// # Errors
    /// `NotFound` otherwise.
    pub fn named(&self, ino: Ino) -> Result<Inode> {
        self.inode(ino)?.filter(|i| !i.is_trashed()).ok_or_else(|| Error::NotFound(format!("inode {ino}")))
    }

    /// A live directory entry, as changed so far.
    pub fn dentry(&self, parent: Ino, name: &str) -> Result<Option<Dentry>> {
        match self.dentries.get(&(parent, name.to_string())) {
            Some(d) => Ok((!d.deleted).then(|| d.clone())),
            None => self.view.dentry(parent, name),
        }
    }

    /// Whether `dir` has a live entry, as changed so far. An entry removed
    /// in this change still counts (only a rename replacing a directory asks,
    /// and the kernel has checked it is empty): the answer errs on "not empty".
    fn has_children(&self, dir: Ino) -> Result<bool> {
        if self.dentries.values().any(|d| d.parent == dir && !d.deleted) {
            return Ok(true);
        }
        self.view.has_children(dir)
    }

    /// The directory `ino`.
    ///
    /// # Errors
    /// `NotFound` when it does not exist or is in the trash (as a removed
    /// working directory is to a process still in it), `NotDir` when it is
    /// no directory.
    pub fn dir(&self, ino: Ino) -> Result<Inode> {
        let i = self
            .inode(ino)?
            .filter(|i| !i.is_trashed())
            .ok_or_else(|| Error::NotFound(format!("directory inode {ino}")))?;
        if !i.is_dir() {
            return Err(Error::NotDir(format!("inode {ino}")));
        }
        Ok(i)
    }

    /// Whether this change removes inode `ino` for good.
    fn lets_go(&self, ino: Ino) -> bool {
        self.inodes.get(&ino).is_some_and(|i| i.deleted)
    }

    pub fn put_inode(&mut self, i: Inode) {
        self.inodes.insert(i.ino, i);
    }

    pub fn put_dentry(&mut self, d: Dentry) {
        self.dentries.insert((d.parent, d.name.clone()), d);
    }

    /// A directory had an entry added or removed: its mtime and ctime are now.
    fn touch_dir(&mut self, dir: Ino) -> Result<()> {
        let mut d = self.dir(dir)?;
        d.mtime_ns = self.now_ns;
        d.ctime_ns = self.now_ns;
        self.put_inode(d);
        Ok(())
    }

    /// Points `name` in `parent` at `child`.
    fn link_name(&mut self, parent: Ino, name: &str, child: &Inode) {
        self.put_dentry(Dentry {
            parent,
            name: name.to_string(),
            version: Default::default(),
            child: child.ino,
            kind: child.kind,
            deleted: false,
            stamp_ns: self.now_ns,
        });
    }

    /// Removes `name` from `parent` (the entry only).
    fn unlink_name(&mut self, parent: Ino, name: &str) {
        self.put_dentry(Dentry {
            parent,
            name: name.to_string(),
            version: Default::default(),
            child: Ino::NONE,
            kind: Kind::File,
            deleted: true,
            stamp_ns: self.now_ns,
        });
    }

    /// The name `name` in `dir` no longer leads to `ino`: a directory or a
    /// last link goes, to the trash when it is on.
    fn drop_link(&mut self, ino: Ino, dir: Ino, name: &str) -> Result<()> {
        let Some(mut i) = self.inode(ino)? else { return Ok(()) };
        if i.is_dir() || i.nlink <= 1 {
            let gone = if self.trash { i.trash(dir, name, self.now_ns) } else { i.tombstone(self.now_ns) };
            self.put_inode(gone);
        } else {
            i.nlink -= 1;
            i.ctime_ns = self.now_ns;
            self.put_inode(i);
        }
        Ok(())
    }

    /// Whether directory `dir` is `ancestor` or lies below it.
    fn is_within(&self, dir: Ino, ancestor: Ino) -> Result<bool> {
        let up = |at| -> Result<Option<Ino>> { Ok(self.inode(at)?.map(|i| i.parent)) };
        within(dir, ancestor, up)?
            .ok_or_else(|| Error::Loop(format!("directory {dir} is nested deeper than {MAX_DEPTH}")))
    }

    /// The records of the change: inodes first, then entries, each once.
    pub fn records(self) -> Vec<Record> {
        let mut out: Vec<Record> = self.inodes.into_values().map(Record::Inode).collect();
        out.extend(self.dentries.into_values().map(Record::Dentry));
        out
    }

    /// The records so far, without ending the plan.
    pub fn snapshot_records(&self) -> Vec<Record> {
        let mut out: Vec<Record> = self.inodes.values().cloned().map(Record::Inode).collect();
        out.extend(self.dentries.values().cloned().map(Record::Dentry));
        out
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.inodes.is_empty() && self.dentries.is_empty()
    }
}

/// The step of each directory whose entries `records` change: from its
/// version in `view` (what the records are not in yet) to the one they
/// give it. Every such change gives the directory's inode a new version
/// (its times), so a client that holds the listing of the version before
/// knows the listing after (see [`DirStep`]).
pub fn dir_steps(view: &impl View, records: &[Record]) -> Result<Vec<DirStep>> {
    let mut steps: Vec<DirStep> = Vec::new();
    let parents = records.iter().filter_map(|r| match r {
        Record::Dentry(d) => Some(d.parent),
        _ => None,
    });
    for parent in parents {
        if steps.iter().any(|s| s.dir == parent) {
            continue;
        }
        let after = records.iter().filter_map(Record::as_inode).find(|i| i.ino == parent).map(|i| i.version);
        if let (Some(before), Some(after)) = (view.inode(parent)?.map(|i| i.version), after) {
            steps.push(DirStep { dir: parent, before, after });
        }
    }
    Ok(steps)
}

/// Whether directory `dir` is `top` or lies below it, walking up with
/// `parent_of` (a directory's parent; `None` when it is not known).
/// `Ok(None)` when the walk is deeper than any real tree (a loop).
pub fn within<E>(
    dir: Ino,
    top: Ino,
    mut parent_of: impl FnMut(Ino) -> Result<Option<Ino>, E>,
) -> Result<Option<bool>, E> {
    let mut at = dir;
    for _ in 0..MAX_DEPTH {
        if at == top {
            return Ok(Some(true));
        }
        if at == Ino::ROOT {
            return Ok(Some(false));
        }
        at = match parent_of(at)? {
            Some(p) if p != Ino::NONE => p,
            _ => return Ok(Some(false)),
        };
    }
    Ok(None)
}

/// The group and mode of something new in `parent`: a set-group-id
/// directory hands its group down, and to a new directory its flag too.
fn inherit(parent: &Inode, kind: Kind, gid: u32, mode: u32) -> (u32, u32) {
    if parent.mode & S_ISGID == 0 {
        return (gid, mode);
    }
    let mode = if kind == Kind::Dir { mode | S_ISGID } else { mode };
    (parent.gid, mode)
}

/// Checks a name a change gives something in `parent`: a valid
/// component, and not the trash's name at the top (see [`name::TRASH_DIR`]).
fn new_name(parent: Ino, name: &str) -> Result<()> {
    name::validate_component(name)?;
    if parent == Ino::ROOT && name == name::TRASH_DIR {
        return Err(Error::BadName(format!("{} at the top is where mounts show the trash", name::TRASH_DIR)));
    }
    Ok(())
}

/// Makes `name` in `parent` as inode `ino`: a directory, symlink, FIFO,
/// socket, device or empty file.
///
/// # Errors
/// `BadName`/`NameTooLong`, `NotFound`/`NotDir` for the parent, `Exists`,
/// `NameTooLong` or `NotFound` for a symlink target too long or empty.
pub fn make<V: View>(plan: &mut Plan<'_, V>, parent: Ino, name: &str, node: &NewNode, ino: Ino) -> Result<Inode> {
    new_name(parent, name)?;
    let dir = plan.dir(parent)?;
    if plan.dentry(parent, name)?.is_some() {
        return Err(Error::Exists(name.to_string()));
    }
    if node.kind == Kind::Symlink {
        if node.target.is_empty() {
            return Err(Error::NotFound("a symlink needs a target".into()));
        }
        if node.target.len() > PATH_MAX {
            return Err(Error::NameTooLong(format!(
                "the target is {} bytes, the limit is {PATH_MAX}",
                node.target.len()
            )));
        }
        if node.target.contains('\0') {
            return Err(Error::BadName("the target contains a NUL byte".into()));
        }
    }
    let (gid, mode) = inherit(&dir, node.kind, node.gid, node.mode);
    let mut i = Inode::new(ino, node.kind, mode, node.uid, gid, plan.now());
    match node.kind {
        Kind::Dir => {
            i.nlink = 2;
            i.parent = parent;
        }
        Kind::Symlink => {
            i.target = node.target.clone();
            i.mode = 0o777;
        }
        Kind::CharDev | Kind::BlockDev => i.rdev = node.rdev,
        _ => {}
    }
    plan.link_name(parent, name, &i);
    plan.put_inode(i.clone());
    plan.touch_dir(parent)?;
    Ok(i)
}

/// Makes a new file with content at `name` in `parent` (an upload of a new
/// file): `new` is the inode as it should be, its content set. A file (or
/// anything but a directory) there already is replaced, as by rename(2);
/// an entry that leads to `new.ino` already (a retried upload that was
/// stored) gets the content instead.
///
/// # Errors
/// `Exists` when `exclusive` and the name is taken; `IsDir` when a directory
/// is there; the errors of [`make`] for the name and parent.
pub fn create_file<V: View>(
    plan: &mut Plan<'_, V>,
    parent: Ino,
    name: &str,
    mut new: Inode,
    exclusive: bool,
) -> Result<Inode> {
    new_name(parent, name)?;
    let dir = plan.dir(parent)?;
    if let Some(d) = plan.dentry(parent, name)? {
        if d.child == new.ino {
            return put_content(plan, new.ino, &new, None);
        }
        if exclusive {
            return Err(Error::Exists(name.to_string()));
        }
        if d.kind == Kind::Dir {
            return Err(Error::IsDir(name.to_string()));
        }
        plan.drop_link(d.child, parent, name)?;
    }
    if plan.inode(new.ino)?.is_some() {
        return Err(Error::Invalid(format!("inode {} is in use", new.ino)));
    }
    let (gid, mode) = inherit(&dir, Kind::File, new.gid, new.mode);
    new.gid = gid;
    new.mode = mode;
    new.kind = Kind::File;
    new.nlink = 1;
    new.parent = Ino::NONE;
    new.ctime_ns = plan.now();
    new.deleted = false;
    plan.link_name(parent, name, &new);
    plan.put_inode(new.clone());
    plan.touch_dir(parent)?;
    Ok(new)
}

/// Gives file `ino` the content of `from` (content version, size, hash,
/// holders or inline bytes, mtime); everything else stays. With the trash
/// on, the content it replaces, if any, is kept as an earlier version:
/// inode `keep` (see [`Inode::as_version`]), and the oldest versions go
/// past the plan's `max_versions`.
///
/// # Errors
/// `NotFound`, `IsDir`, or `Invalid` for anything that has no content, or
/// for a `keep` in use.
pub fn put_content<V: View>(plan: &mut Plan<'_, V>, ino: Ino, from: &Inode, keep: Option<Ino>) -> Result<Inode> {
    let mut i = plan.named(ino)?;
    match i.kind {
        Kind::File => {}
        Kind::Dir => return Err(Error::IsDir(format!("inode {ino}"))),
        k => return Err(Error::Invalid(format!("a {} has no content", k.as_str()))),
    }
    // Nothing is replaced by the same bytes again (an upload of them
    // again, or retried after its answer was lost, whichever attempt the
    // index has), and an empty file has nothing to keep.
    let replaced = i.size > 0 && i.hash != from.hash;
    if let Some(v) = keep.filter(|_| plan.trash && plan.max_versions > 0 && replaced) {
        if plan.inode(v)?.is_some() {
            return Err(Error::Invalid(format!("inode {v} is in use")));
        }
        // With the new one, the plan's `max_versions` at most: the oldest
        // go (one this change lets go already, a restored one, counts not).
        let kept: Vec<Ino> = plan.view.versions(ino)?.into_iter().filter(|old| !plan.lets_go(*old)).collect();
        let over = (kept.len() + 1).saturating_sub(plan.max_versions);
        for old in kept.into_iter().take(over) {
            if let Some(o) = plan.inode(old)? {
                plan.put_inode(o.tombstone(plan.now()));
            }
        }
        plan.put_inode(i.as_version(v, plan.now()));
    }
    i.content = from.content;
    i.size = from.size;
    i.hash = from.hash;
    i.holders = from.holders.clone();
    i.inline = from.inline.clone();
    i.mtime_ns = from.mtime_ns;
    i.ctime_ns = plan.now();
    plan.put_inode(i.clone());
    Ok(i)
}

/// A new name `name` in `parent` for inode `ino` (link(2)).
///
/// # Errors
/// `NotFound`, `NotPermitted` for a directory, `Exists`, and the name and
/// parent errors of [`make`].
pub fn link<V: View>(plan: &mut Plan<'_, V>, ino: Ino, parent: Ino, name: &str) -> Result<Inode> {
    new_name(parent, name)?;
    let mut i = plan.inode(ino)?.ok_or_else(|| Error::NotFound(format!("inode {ino}")))?;
    if i.is_dir() {
        return Err(Error::NotPermitted("a directory cannot have a second name".into()));
    }
    // As link(2) of a file with no name left: it stays where it is.
    if i.is_trashed() {
        return Err(Error::NotFound(format!("inode {ino} has no name left (it is in the trash)")));
    }
    plan.dir(parent)?;
    if plan.dentry(parent, name)?.is_some() {
        return Err(Error::Exists(name.to_string()));
    }
    i.nlink += 1;
    i.ctime_ns = plan.now();
    plan.link_name(parent, name, &i);
    plan.put_inode(i.clone());
    plan.touch_dir(parent)?;
    Ok(i)
}

/// Removes `name` from `parent`: unlink(2), rmdir(2), or either.
///
/// # Errors
/// `NotFound`, `IsDir` (unlink of a directory), `NotDir` (rmdir of
/// anything else), `NotEmpty`.
pub fn remove<V: View>(plan: &mut Plan<'_, V>, parent: Ino, name: &str, what: Removal) -> Result<()> {
    name::validate_component(name)?;
    plan.dir(parent)?;
    let d = plan.dentry(parent, name)?.ok_or_else(|| Error::NotFound(name.to_string()))?;
    let is_dir = d.kind == Kind::Dir;
    match what {
        Removal::NonDir if is_dir => return Err(Error::IsDir(name.to_string())),
        Removal::Dir if !is_dir => return Err(Error::NotDir(name.to_string())),
        _ => {}
    }
    if is_dir && plan.has_children(d.child)? {
        return Err(Error::NotEmpty(name.to_string()));
    }
    plan.unlink_name(parent, name);
    plan.drop_link(d.child, parent, name)?;
    plan.touch_dir(parent)
}

/// Brings inode `ino` back from the trash as `name` in `dir`, with
/// everything it had (mode, owner, times, xattrs, content); a directory
/// comes back empty, and what was in it is restored into it one by one.
///
/// # Errors
/// `NotFound` when it is not in the trash or `dir` is not a live
/// directory, `Exists` when the name is taken now, `Invalid` for a
/// directory into itself, and the name errors of [`make`].
pub fn restore<V: View>(plan: &mut Plan<'_, V>, ino: Ino, dir: Ino, name: &str) -> Result<Inode> {
    new_name(dir, name)?;
    let mut i = plan
        .inode(ino)?
        .filter(|i| i.is_trashed() && i.version_of().is_none())
        .ok_or_else(|| Error::NotFound(format!("inode {ino} is not in the trash")))?;
    plan.dir(dir)?;
    if plan.dentry(dir, name)?.is_some() {
        return Err(Error::Exists(format!("{name} exists now")));
    }
    if i.is_dir() && plan.is_within(dir, ino)? {
        return Err(Error::Invalid(format!("cannot restore {name} into itself")));
    }
    i.trashed = None;
    i.nlink = if i.is_dir() { 2 } else { 1 };
    i.ctime_ns = plan.now();
    if i.is_dir() {
        i.parent = dir;
    }
    plan.link_name(dir, name, &i);
    plan.put_inode(i.clone());
    plan.touch_dir(dir)?;
    Ok(i)
}

/// Makes the earlier version `version` of file `ino` its content again
/// (with the version's mtime). The version leaves the trash, and the
/// content it replaces is kept as an earlier version in its turn: inode
/// `keep`, as [`put_content`] keeps it.
///
/// # Errors
/// `NotFound` when `version` is no version of `ino` kept now, and the
/// errors of [`put_content`].
pub fn restore_version<V: View>(plan: &mut Plan<'_, V>, ino: Ino, version: Ino, keep: Option<Ino>) -> Result<Inode> {
    let v = plan
        .inode(version)?
        .filter(|v| v.version_of() == Some(ino))
        .ok_or_else(|| Error::NotFound(format!("inode {version} is no kept version of inode {ino}")))?;
    // Gone first: it no longer counts against `max_versions`.
    plan.put_inode(v.tombstone(plan.now()));
    put_content(plan, ino, &v, keep)
}

/// Removes inode `ino` from the trash for good, its content with it, if
/// it is there from its removal at `removed_ns` (not restored and removed
/// again since).
///
/// # Errors
/// `NotFound` when it is not in the trash from then.
pub fn purge<V: View>(plan: &mut Plan<'_, V>, ino: Ino, removed_ns: i64) -> Result<()> {
    let i = plan
        .inode(ino)?
        .filter(|i| i.is_trashed() && i.trashed.as_ref().is_some_and(|t| t.at_ns == removed_ns))
        .ok_or_else(|| Error::NotFound(format!("inode {ino} is not in the trash")))?;
    plan.put_inode(i.tombstone(plan.now()));
    Ok(())
}

/// Moves `name` in `parent` to `new_name` in `new_parent`, as rename(2) and
/// renameat2(2) do: one change whatever lies below a moved directory.
///
/// # Errors
/// `NotFound` (no source; no target to exchange with), `Exists`
/// (`NoReplace`), `Invalid` (a directory into itself), `NotDir`/`IsDir`
/// (a directory and a non-directory), `NotEmpty` (a directory onto one
/// that is not empty).
pub fn rename<V: View>(
    plan: &mut Plan<'_, V>,
    parent: Ino,
    name: &str,
    new_parent: Ino,
    new_name: &str,
    mode: RenameMode,
) -> Result<()> {
    name::validate_component(name)?;
    self::new_name(new_parent, new_name)?;
    plan.dir(parent)?;
    plan.dir(new_parent)?;
    let src = plan.dentry(parent, name)?.ok_or_else(|| Error::NotFound(name.to_string()))?;
    let dst = plan.dentry(new_parent, new_name)?;
    if parent == new_parent && name == new_name {
        return match mode {
            RenameMode::NoReplace => Err(Error::Exists(new_name.to_string())),
            _ => Ok(()),
        };
    }
    if src.kind == Kind::Dir && plan.is_within(new_parent, src.child)? {
        return Err(Error::Invalid(format!("cannot move {name} into itself")));
    }
    if mode == RenameMode::Exchange {
        let dst = dst.ok_or_else(|| Error::NotFound(new_name.to_string()))?;
        if dst.kind == Kind::Dir && plan.is_within(parent, dst.child)? {
            return Err(Error::Invalid(format!("cannot move {new_name} into itself")));
        }
        let (a, b) = (plan.inode(src.child)?, plan.inode(dst.child)?);
        let (a, b) = a.zip(b).ok_or_else(|| Error::NotFound(name.to_string()))?;
        plan.link_name(parent, name, &b);
        plan.link_name(new_parent, new_name, &a);
        moved(plan, a, new_parent);
        moved(plan, b, parent);
        plan.touch_dir(parent)?;
        return plan.touch_dir(new_parent);
    }
    if let Some(dst) = dst {
        if mode == RenameMode::NoReplace {
            return Err(Error::Exists(new_name.to_string()));
        }
        // Two names of one file: rename(2) does nothing and succeeds.
        if dst.child == src.child {
            return Ok(());
        }
        match (src.kind == Kind::Dir, dst.kind == Kind::Dir) {
            (true, false) => return Err(Error::NotDir(new_name.to_string())),
            (false, true) => return Err(Error::IsDir(new_name.to_string())),
            (true, true) if plan.has_children(dst.child)? => return Err(Error::NotEmpty(new_name.to_string())),
            _ => {}
        }
        plan.drop_link(dst.child, new_parent, new_name)?;
    }
    let i = plan.inode(src.child)?.ok_or_else(|| Error::NotFound(name.to_string()))?;
    plan.unlink_name(parent, name);
    plan.link_name(new_parent, new_name, &i);
    moved(plan, i, new_parent);
    plan.touch_dir(parent)?;
    plan.touch_dir(new_parent)
}

/// `i` now has a name in `dir`: its ctime changes, and a directory's parent.
fn moved<V: View>(plan: &mut Plan<'_, V>, mut i: Inode, dir: Ino) {
    i.ctime_ns = plan.now();
    if i.is_dir() {
        i.parent = dir;
    }
    plan.put_inode(i);
}

/// Changes mode, owner and times; the ctime becomes now.
///
/// # Errors
/// `NotFound`.
pub fn set_attr<V: View>(plan: &mut Plan<'_, V>, ino: Ino, set: &SetAttrs) -> Result<Inode> {
    let mut i = plan.named(ino)?;
    let now = plan.now();
    let at = |t: TimeSet| match t {
        TimeSet::Now => now,
        TimeSet::At(ns) => ns,
    };
    if let Some(m) = set.mode {
        i.mode = m & crate::types::PERMS;
    }
    if let Some(u) = set.uid {
        i.uid = u;
    }
    if let Some(g) = set.gid {
        i.gid = g;
    }
    if let Some(t) = set.atime {
        i.atime_ns = at(t);
    }
    if let Some(t) = set.mtime {
        i.mtime_ns = at(t);
    }
    i.ctime_ns = now;
    plan.put_inode(i.clone());
    Ok(i)
}

/// Checks an extended attribute name as Linux does.
///
/// # Errors
/// `Range` for an empty or too long name (ERANGE, as the VFS answers);
/// `Invalid` for a namespace with nothing after it (`user.`);
/// `NotSupported` outside the `user.`, `trusted.` and `security.`
/// namespaces (POSIX ACLs are `system.`), and for [`SELINUX`].
pub fn check_xattr_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > XATTR_NAME_MAX {
        return Err(Error::Range(format!("attribute names are 1 to {XATTR_NAME_MAX} bytes")));
    }
    let known = ["user.", "trusted.", "security."];
    // A namespace with no name in it, as Linux answers it.
    if known.contains(&name) {
        return Err(Error::Invalid(format!("attribute name {name:?} has nothing after its namespace")));
    }
    if !known.iter().any(|p| name.starts_with(p) && name.len() > p.len()) {
        return Err(Error::NotSupported(format!("extended attribute {name:?} (only user.*, trusted.*, security.*)")));
    }
    if name == SELINUX {
        return Err(Error::NotSupported("SELinux labels are not kept (security.selinux)".into()));
    }
    Ok(())
}

/// The SELinux label: not kept, as on NFS without labels (the policy labels
/// FUSE files as a whole). "Not supported" also tells `ls -l`, which asks
/// every file for it, to stop asking on this file system; "no such
/// attribute" would cost a request per file.
pub const SELINUX: &str = "security.selinux";

/// Sets an extended attribute; the ctime becomes now.
///
/// # Errors
/// The name errors of [`check_xattr_name`]; `TooBig` past XATTR_SIZE_MAX;
/// `Exists` (`Create`) and `NoAttr` (`Replace`); `NoSpace` past the total
/// an inode keeps.
pub fn set_xattr<V: View>(
    plan: &mut Plan<'_, V>,
    ino: Ino,
    name: &str,
    value: &Bytes,
    mode: XattrMode,
) -> Result<Inode> {
    check_xattr_name(name)?;
    if value.0.len() > XATTR_SIZE_MAX {
        return Err(Error::TooBig(format!("attribute values are at most {XATTR_SIZE_MAX} bytes")));
    }
    let mut i = plan.named(ino)?;
    let exists = i.xattrs.contains_key(name);
    match mode {
        XattrMode::Create if exists => return Err(Error::Exists(format!("attribute {name}"))),
        XattrMode::Replace if !exists => return Err(Error::NoAttr(name.to_string())),
        _ => {}
    }
    i.xattrs.insert(name.to_string(), value.clone());
    if i.xattr_bytes() > XATTR_TOTAL_MAX {
        return Err(Error::NoSpace(format!("an inode keeps at most {XATTR_TOTAL_MAX} bytes of attributes")));
    }
    i.ctime_ns = plan.now();
    plan.put_inode(i.clone());
    Ok(i)
}

/// Removes an extended attribute; the ctime becomes now.
///
/// # Errors
/// The name errors of [`check_xattr_name`]; `NoAttr`.
pub fn remove_xattr<V: View>(plan: &mut Plan<'_, V>, ino: Ino, name: &str) -> Result<Inode> {
    check_xattr_name(name)?;
    let mut i = plan.named(ino)?;
    if i.xattrs.remove(name).is_none() {
        return Err(Error::NoAttr(name.to_string()));
    }
    i.ctime_ns = plan.now();
    plan.put_inode(i.clone());
    Ok(i)
}

/// Where a path leads ("" = the root). Symlinks on the way are followed
/// (relative to the directory they are in; an absolute target points
/// outside the cluster and is not found), and at the end when `follow`.
/// `Ok(None)` when the last component does not exist.
///
/// # Errors
/// `NotFound` for a missing directory on the way, `NotDir` for a
/// non-directory on the way, `Loop` after [`MAX_SYMLINKS`] symlinks.
pub fn resolve(view: &impl View, path: &str, follow: bool) -> Result<Option<Inode>> {
    let mut hops = 0;
    let root = view.inode(Ino::ROOT)?.ok_or_else(|| Error::Internal("the root is missing".into()))?;
    // Components still to walk, last first.
    let mut todo: Vec<String> = path.split('/').filter(|c| !c.is_empty()).rev().map(str::to_string).collect();
    let mut at = root;
    while let Some(c) = todo.pop() {
        if !at.is_dir() {
            return Err(Error::NotDir(path.to_string()));
        }
        let next = match c.as_str() {
            "." => continue,
            ".." => view.inode(if at.ino == Ino::ROOT { Ino::ROOT } else { at.parent })?,
            _ => match view.dentry(at.ino, &c)? {
                Some(d) => view.inode(d.child)?,
                None => None,
            },
        };
        let Some(next) = next else {
            if todo.is_empty() {
                return Ok(None);
            }
            return Err(Error::NotFound(path.to_string()));
        };
        if next.kind == Kind::Symlink && (follow || !todo.is_empty()) {
            hops += 1;
            if hops > MAX_SYMLINKS {
                return Err(Error::Loop(path.to_string()));
            }
            if next.target.starts_with('/') {
                return Err(Error::NotFound(format!(
                    "{path} (the symlink points outside the cluster: {})",
                    next.target
                )));
            }
            todo.extend(next.target.split('/').filter(|c| !c.is_empty()).rev().map(str::to_string));
            continue;
        }
        at = next;
    }
    Ok(Some(at))
}

/// The namespace in memory: a [`View`] that records can be applied to, for
/// tests and for in-memory fakes of the cluster.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    inodes: BTreeMap<Ino, Inode>,
    dentries: BTreeMap<(Ino, String), Dentry>,
}

impl Memory {
    /// A namespace with only a root directory owned by `uid`:`gid`.
    pub fn new(uid: u32, gid: u32) -> Memory {
        let mut root = Inode::new(Ino::ROOT, Kind::Dir, 0o755, uid, gid, 0);
        root.parent = Ino::ROOT;
        root.nlink = 2;
        let mut m = Memory::default();
        m.inodes.insert(Ino::ROOT, root);
        m
    }

    /// Applies records (no version check: they come from one plan at a time).
    pub fn apply(&mut self, records: Vec<Record>) {
        for r in records {
            match r {
                Record::Inode(i) if i.deleted => {
                    self.inodes.remove(&i.ino);
                }
                Record::Inode(i) => {
                    self.inodes.insert(i.ino, i);
                }
                Record::Dentry(d) if d.deleted => {
                    self.dentries.remove(&(d.parent, d.name));
                }
                Record::Dentry(d) => {
                    self.dentries.insert((d.parent, d.name.clone()), d);
                }
                Record::NextIno(_) | Record::Members(_) => {}
            }
        }
    }

    /// The live entries of `dir`, in name order.
    pub fn children(&self, dir: Ino) -> Vec<Dentry> {
        self.dentries.values().filter(|d| d.parent == dir).cloned().collect()
    }
}

impl View for Memory {
    fn inode(&self, ino: Ino) -> Result<Option<Inode>> {
        Ok(self.inodes.get(&ino).cloned().map(|mut i| {
            if i.is_dir() {
                let subdirs = self.dentries.values().filter(|d| d.parent == ino && d.kind == Kind::Dir).count();
                i.nlink = 2 + subdirs as u32;
            }
            i
        }))
    }

    fn dentry(&self, parent: Ino, name: &str) -> Result<Option<Dentry>> {
        Ok(self.dentries.get(&(parent, name.to_string())).cloned())
    }

    fn has_children(&self, dir: Ino) -> Result<bool> {
        Ok(self.dentries.values().any(|d| d.parent == dir))
    }

    fn versions(&self, of: Ino) -> Result<Vec<Ino>> {
        let mut kept: Vec<&Inode> = self.inodes.values().filter(|i| i.version_of() == Some(of)).collect();
        kept.sort_by_key(|i| (i.trashed.as_ref().map_or(0, |t| t.at_ns), i.ino));
        Ok(kept.into_iter().map(|i| i.ino).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ContentHash, NodeId, Term, Version};

    /// A namespace and a clock, with helpers that run one operation each.
    struct Fs {
        m: Memory,
        now: i64,
        next: u64,
        trash: bool,
        max_versions: u32,
    }

    impl Fs {
        fn new() -> Fs {
            Fs { m: Memory::new(1000, 1000), now: 100, next: 2, trash: false, max_versions: 100 }
        }

        fn run<T>(&mut self, op: impl FnOnce(&mut Plan<'_, Memory>, Ino) -> Result<T>) -> Result<T> {
            self.now += 10;
            let ino = Ino(self.next);
            let m = self.m.clone();
            let mut plan = Plan::new(&m, self.now).with_trash(self.trash).with_max_versions(self.max_versions);
            let out = op(&mut plan, ino)?;
            self.next += 1;
            self.m.apply(plan.records());
            Ok(out)
        }

        fn mk(&mut self, parent: Ino, name: &str, kind: Kind) -> Result<Inode> {
            let node = NewNode { kind, mode: 0o755, uid: 1000, gid: 1000, rdev: 0, target: "t".into() };
            self.run(|p, ino| make(p, parent, name, &node, ino))
        }

        fn file(&mut self, parent: Ino, name: &str) -> Inode {
            let mut new = Inode::new(Ino(0), Kind::File, 0o644, 1000, 1000, 0);
            new.content = Version::new(Term(1), 1);
            new.size = 5;
            new.hash = ContentHash([1; 32]);
            new.holders = vec![NodeId(1)];
            self.run(|p, ino| create_file(p, parent, name, Inode { ino, ..new }, false)).unwrap()
        }

        fn get(&self, ino: Ino) -> Option<Inode> {
            self.m.inode(ino).unwrap()
        }

        fn at(&self, path: &str) -> Option<Inode> {
            resolve(&self.m, path, false).unwrap()
        }
    }

    #[test]
    fn hard_links_count_and_the_last_unlink_removes_the_inode() {
        let mut fs = Fs::new();
        let f = fs.file(Ino::ROOT, "a");
        let l = fs.run(|p, _| link(p, f.ino, Ino::ROOT, "b")).unwrap();
        assert_eq!(l.nlink, 2);
        assert_eq!(fs.at("b").unwrap().ino, f.ino, "both names lead to one inode");
        fs.run(|p, _| remove(p, Ino::ROOT, "a", Removal::NonDir)).unwrap();
        assert_eq!(fs.get(f.ino).unwrap().nlink, 1, "the other name still works");
        assert!(fs.at("a").is_none());
        fs.run(|p, _| remove(p, Ino::ROOT, "b", Removal::NonDir)).unwrap();
        assert!(fs.get(f.ino).is_none(), "the last name took the inode with it");
    }

    #[test]
    fn with_the_trash_on_a_removed_tree_keeps_its_inodes_and_comes_back_as_a_tree() {
        let mut fs = Fs::new();
        fs.trash = true;
        let photos = fs.mk(Ino::ROOT, "photos", Kind::Dir).unwrap();
        let y2024 = fs.mk(photos.ino, "2024", Kind::Dir).unwrap();
        let a = fs.file(y2024.ino, "a.jpg");
        let latest = fs.mk(photos.ino, "latest", Kind::Symlink).unwrap();
        // rm -rf: the deepest first.
        fs.run(|p, _| remove(p, y2024.ino, "a.jpg", Removal::NonDir)).unwrap();
        fs.run(|p, _| remove(p, photos.ino, "2024", Removal::Dir)).unwrap();
        fs.run(|p, _| remove(p, photos.ino, "latest", Removal::NonDir)).unwrap();
        fs.run(|p, _| remove(p, Ino::ROOT, "photos", Removal::Dir)).unwrap();
        assert!(fs.at("photos").is_none(), "the names are gone");
        let kept = fs.get(a.ino).unwrap();
        assert!(kept.is_trashed() && kept.nlink == 0 && kept.holders == vec![NodeId(1)], "{kept:?}");
        assert_eq!(kept.trashed.as_ref().map(|t| (t.dir, t.name.as_str())), Some((y2024.ino, "a.jpg")));

        // Nothing is made in a directory in the trash, and a file there gets no new name.
        let e = fs.mk(y2024.ino, "new", Kind::File).unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e}");
        let e = fs.run(|p, _| link(p, a.ino, Ino::ROOT, "again")).unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e}");
        // What is in the trash stays as it was removed.
        let chmod = SetAttrs { mode: Some(0o600), ..Default::default() };
        let e = fs.run(|p, _| set_attr(p, a.ino, &chmod)).unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e}");
        let e = fs.run(|p, _| put_content(p, a.ino, &kept, None)).unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e}");

        // The top first, then what was in it, into it.
        fs.run(|p, _| restore(p, photos.ino, Ino::ROOT, "photos")).unwrap();
        fs.run(|p, _| restore(p, y2024.ino, photos.ino, "2024")).unwrap();
        fs.run(|p, _| restore(p, a.ino, y2024.ino, "a.jpg")).unwrap();
        fs.run(|p, _| restore(p, latest.ino, photos.ino, "latest")).unwrap();
        let back = fs.at("photos/2024/a.jpg").unwrap();
        assert_eq!((back.ino, back.nlink, back.trashed.clone()), (a.ino, 1, None));
        assert_eq!(back.holders, vec![NodeId(1)], "with its content");
        assert_eq!(fs.at("photos/latest").unwrap().target, "t");
        assert_eq!(fs.get(photos.ino).unwrap().nlink, 3, "photos counts 2024 again");

        let e = fs.run(|p, _| restore(p, a.ino, y2024.ino, "a.jpg")).unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "a restored inode is no longer in the trash: {e}");
    }

    /// The versions kept of file `ino`, the oldest first.
    fn versions_of(fs: &Fs, ino: Ino) -> Vec<Inode> {
        fs.m.inodes.values().filter(|i| i.version_of() == Some(ino)).cloned().collect()
    }

    /// File `ino` given content number `n` (n bytes).
    fn overwrite(fs: &mut Fs, ino: Ino, n: u64) -> Inode {
        let mut from = Inode::new(Ino(0), Kind::File, 0o644, 1000, 1000, fs.now);
        (from.content, from.size, from.hash) = (Version::new(Term(1), 100 + n), n, ContentHash([n as u8; 32]));
        from.holders = vec![NodeId(2)];
        fs.run(|p, keep| put_content(p, ino, &from, Some(keep))).unwrap()
    }

    #[test]
    fn with_the_trash_on_an_overwrite_keeps_the_content_it_replaces_and_a_version_comes_back() {
        let mut fs = Fs::new();
        fs.trash = true;
        let f = fs.file(Ino::ROOT, "notes");
        let (first, mtime) = (fs.get(f.ino).unwrap(), f.mtime_ns);
        for n in [10, 20, 30] {
            overwrite(&mut fs, f.ino, n);
        }
        let versions = versions_of(&fs, f.ino);
        let sizes: Vec<u64> = versions.iter().map(|v| v.size).collect();
        assert_eq!(sizes, vec![5, 10, 20], "each overwrite kept what it replaced");
        let v1 = &versions[0];
        assert!(v1.is_trashed() && v1.nlink == 0 && v1.content == first.content && v1.holders == first.holders);
        assert_eq!(fs.at("notes").unwrap().size, 30, "the name has the newest");
        // A version is no name's: it is not restored as one, nor changed.
        let e = fs.run(|p, _| restore(p, v1.ino, Ino::ROOT, "v1")).unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e}");

        let back = fs.run(|p, keep| restore_version(p, f.ino, v1.ino, Some(keep))).unwrap();
        assert_eq!((back.ino, back.content, back.size, back.mtime_ns), (f.ino, first.content, 5, mtime));
        assert!(fs.get(v1.ino).is_none(), "version 1 is the current content now");
        let sizes: Vec<u64> = versions_of(&fs, f.ino).iter().map(|i| i.size).collect();
        assert_eq!(sizes, vec![10, 20, 30], "what the restore replaced is kept in its turn");
        let e = fs.run(|p, keep| restore_version(p, f.ino, v1.ino, Some(keep))).unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e}");

        // The same content again (a retried upload, or the same bytes
        // uploaded anew) keeps nothing; nor does the trash off.
        let mut now = fs.get(f.ino).unwrap();
        fs.run(|p, keep| put_content(p, f.ino, &now, Some(keep))).unwrap();
        now.content = Version::new(Term(2), 1);
        let again = fs.run(|p, keep| put_content(p, f.ino, &now, Some(keep))).unwrap();
        assert_eq!(again.content, now.content, "the new upload's content is the file's");
        fs.trash = false;
        overwrite(&mut fs, f.ino, 40);
        assert_eq!(versions_of(&fs, f.ino).len(), 3);
    }

    #[test]
    fn past_max_versions_the_oldest_goes_and_a_restored_version_no_longer_counts() {
        let mut fs = Fs::new();
        (fs.trash, fs.max_versions) = (true, 2);
        let f = fs.file(Ino::ROOT, "log");
        for n in [10, 20, 30] {
            overwrite(&mut fs, f.ino, n);
        }
        let sizes = |fs: &Fs| versions_of(fs, f.ino).iter().map(|v| v.size).collect::<Vec<u64>>();
        assert_eq!(sizes(&fs), [10, 20], "the first content went when the third was kept");
        let oldest = versions_of(&fs, f.ino)[0].ino;
        let back = fs.run(|p, keep| restore_version(p, f.ino, oldest, Some(keep))).unwrap();
        assert_eq!(back.size, 10);
        assert_eq!(sizes(&fs), [20, 30], "the one restored left, so what it replaced fits with no other going");
        // 0 keeps no more (those kept stay until they expire or are purged).
        fs.max_versions = 0;
        overwrite(&mut fs, f.ino, 40);
        assert_eq!(sizes(&fs), [20, 30]);
        assert_eq!(fs.at("log").unwrap().size, 40);
    }

    #[test]
    fn a_restore_never_replaces_a_name_and_a_purge_removes_for_good() {
        let mut fs = Fs::new();
        fs.trash = true;
        let old = fs.file(Ino::ROOT, "report");
        let new = fs.file(Ino::ROOT, "report");
        assert!(fs.get(old.ino).unwrap().is_trashed(), "an upload over a file puts the old one in the trash");
        let e = fs.run(|p, _| restore(p, old.ino, Ino::ROOT, "report")).unwrap_err();
        assert!(matches!(e, Error::Exists(_)), "{e}");
        assert_eq!(fs.at("report").unwrap().ino, new.ino, "the name keeps what it has now");
        let removed = fs.get(old.ino).unwrap().trashed.unwrap().at_ns;
        let e = fs.run(|p, _| purge(p, old.ino, removed - 1)).unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "a purge of an earlier removal leaves a later one: {e}");
        fs.run(|p, _| purge(p, old.ino, removed)).unwrap();
        assert!(fs.get(old.ino).is_none(), "purged");
        let e = fs.run(|p, _| purge(p, new.ino, removed)).unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "only what is in the trash is purged: {e}");
        fs.trash = false;
        fs.run(|p, _| remove(p, Ino::ROOT, "report", Removal::NonDir)).unwrap();
        assert!(fs.get(new.ino).is_none(), "with the trash off a removal is final");
    }

    #[test]
    fn a_directory_cannot_be_hard_linked() {
        let mut fs = Fs::new();
        let d = fs.mk(Ino::ROOT, "d", Kind::Dir).unwrap();
        let e = fs.run(|p, _| link(p, d.ino, Ino::ROOT, "e")).unwrap_err();
        assert!(matches!(e, Error::NotPermitted(_)), "{e}");
    }

    #[test]
    fn renaming_a_directory_is_one_small_change_and_keeps_every_inode() {
        let mut fs = Fs::new();
        let d = fs.mk(Ino::ROOT, "photos", Kind::Dir).unwrap();
        let mut files = Vec::new();
        for i in 0..50 {
            files.push(fs.file(d.ino, &format!("{i}.jpg")).ino);
        }
        let to = fs.mk(Ino::ROOT, "archive", Kind::Dir).unwrap();
        let m = fs.m.clone();
        let mut plan = Plan::new(&m, 2_000);
        rename(&mut plan, Ino::ROOT, "photos", to.ino, "2026", RenameMode::Replace).unwrap();
        let records = plan.records();
        assert!(records.len() <= 6, "{} records for a rename of 50 files", records.len());
        fs.m.apply(records);
        assert_eq!(fs.at("archive/2026/7.jpg").unwrap().ino, files[7]);
        assert!(fs.at("photos").is_none());
        assert_eq!(fs.get(d.ino).unwrap().parent, to.ino, "'..' follows the move");
        assert_eq!(fs.get(to.ino).unwrap().nlink, 3, "the new parent counts its subdirectory");
        assert_eq!(fs.get(Ino::ROOT).unwrap().nlink, 3, "the old parent still has archive only");
    }

    #[test]
    fn a_directory_cannot_move_into_itself() {
        let mut fs = Fs::new();
        let a = fs.mk(Ino::ROOT, "a", Kind::Dir).unwrap();
        let b = fs.mk(a.ino, "b", Kind::Dir).unwrap();
        let e = fs.run(|p, _| rename(p, Ino::ROOT, "a", b.ino, "x", RenameMode::Replace)).unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e}");
        let e = fs.run(|p, _| rename(p, Ino::ROOT, "a", a.ino, "x", RenameMode::Replace)).unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e}");
    }

    #[test]
    fn rename_onto_existing_targets_follows_posix() {
        let mut fs = Fs::new();
        let f = fs.file(Ino::ROOT, "f");
        let g = fs.file(Ino::ROOT, "g");
        let d = fs.mk(Ino::ROOT, "d", Kind::Dir).unwrap();
        let e = fs.mk(Ino::ROOT, "e", Kind::Dir).unwrap();
        fs.file(e.ino, "inside");
        let r = |fs: &mut Fs, a: &str, b: &str, m| fs.run(|p, _| rename(p, Ino::ROOT, a, Ino::ROOT, b, m));
        assert!(matches!(r(&mut fs, "f", "d", RenameMode::Replace), Err(Error::IsDir(_))));
        assert!(matches!(r(&mut fs, "d", "f", RenameMode::Replace), Err(Error::NotDir(_))));
        assert!(matches!(r(&mut fs, "d", "e", RenameMode::Replace), Err(Error::NotEmpty(_))));
        assert!(matches!(r(&mut fs, "f", "g", RenameMode::NoReplace), Err(Error::Exists(_))));
        assert!(matches!(r(&mut fs, "nope", "g", RenameMode::Replace), Err(Error::NotFound(_))));
        r(&mut fs, "f", "g", RenameMode::Replace).unwrap();
        assert_eq!(fs.at("g").unwrap().ino, f.ino);
        assert!(fs.get(g.ino).is_none(), "the replaced file had no other name");
        let empty = fs.mk(Ino::ROOT, "empty", Kind::Dir).unwrap();
        r(&mut fs, "d", "empty", RenameMode::Replace).unwrap();
        assert_eq!(fs.at("empty").unwrap().ino, d.ino);
        assert!(fs.get(empty.ino).is_none());
    }

    #[test]
    fn exchange_swaps_two_names_and_their_parents() {
        let mut fs = Fs::new();
        let a = fs.mk(Ino::ROOT, "a", Kind::Dir).unwrap();
        let f = fs.file(a.ino, "f");
        let d = fs.mk(Ino::ROOT, "d", Kind::Dir).unwrap();
        fs.run(|p, _| rename(p, a.ino, "f", Ino::ROOT, "d", RenameMode::Exchange)).unwrap();
        assert_eq!(fs.at("d").unwrap().ino, f.ino);
        assert_eq!(fs.at("a/f").unwrap().ino, d.ino);
        assert_eq!(fs.get(d.ino).unwrap().parent, a.ino);
        let e = fs.run(|p, _| rename(p, Ino::ROOT, "d", Ino::ROOT, "none", RenameMode::Exchange)).unwrap_err();
        assert!(matches!(e, Error::NotFound(_)));
    }

    #[test]
    fn renaming_one_name_of_a_file_onto_another_does_nothing() {
        let mut fs = Fs::new();
        let f = fs.file(Ino::ROOT, "a");
        fs.run(|p, _| link(p, f.ino, Ino::ROOT, "b")).unwrap();
        fs.run(|p, _| rename(p, Ino::ROOT, "a", Ino::ROOT, "b", RenameMode::Replace)).unwrap();
        assert!(fs.at("a").is_some() && fs.at("b").is_some());
        assert_eq!(fs.get(f.ino).unwrap().nlink, 2);
    }

    #[test]
    fn unlink_and_rmdir_give_the_errors_of_linux() {
        let mut fs = Fs::new();
        fs.file(Ino::ROOT, "f");
        let d = fs.mk(Ino::ROOT, "d", Kind::Dir).unwrap();
        fs.file(d.ino, "x");
        let rm = |fs: &mut Fs, n: &str, w| fs.run(|p, _| remove(p, Ino::ROOT, n, w));
        assert!(matches!(rm(&mut fs, "d", Removal::NonDir), Err(Error::IsDir(_))));
        assert!(matches!(rm(&mut fs, "f", Removal::Dir), Err(Error::NotDir(_))));
        assert!(matches!(rm(&mut fs, "d", Removal::Dir), Err(Error::NotEmpty(_))));
        assert!(matches!(rm(&mut fs, "gone", Removal::Any), Err(Error::NotFound(_))));
        fs.run(|p, _| remove(p, d.ino, "x", Removal::NonDir)).unwrap();
        rm(&mut fs, "d", Removal::Dir).unwrap();
        assert!(fs.get(d.ino).is_none());
    }

    #[test]
    fn setgid_directories_hand_down_their_group() {
        let mut fs = Fs::new();
        let node = NewNode { kind: Kind::Dir, mode: 0o2775, uid: 1000, gid: 50, rdev: 0, target: String::new() };
        let shared = fs.run(|p, ino| make(p, Ino::ROOT, "shared", &node, ino)).unwrap();
        let mine = NewNode { kind: Kind::Dir, mode: 0o755, uid: 2000, gid: 2000, rdev: 0, target: String::new() };
        let sub = fs.run(|p, ino| make(p, shared.ino, "sub", &mine, ino)).unwrap();
        assert_eq!((sub.uid, sub.gid, sub.mode), (2000, 50, 0o2755), "group and flag inherited");
        let f = fs.file(shared.ino, "f");
        assert_eq!((f.gid, f.mode), (50, 0o644), "a file gets the group only");
    }

    #[test]
    fn make_refuses_a_taken_name_and_bad_symlinks() {
        let mut fs = Fs::new();
        fs.mk(Ino::ROOT, "x", Kind::Fifo).unwrap();
        assert!(matches!(fs.mk(Ino::ROOT, "x", Kind::Dir), Err(Error::Exists(_))));
        let long = NewNode { kind: Kind::Symlink, mode: 0o777, uid: 0, gid: 0, rdev: 0, target: "y".repeat(4096) };
        let e = fs.run(|p, ino| make(p, Ino::ROOT, "l", &long, ino)).unwrap_err();
        assert!(matches!(e, Error::NameTooLong(_)));
        let f = fs.file(Ino::ROOT, "file");
        assert!(matches!(fs.mk(f.ino, "y", Kind::File), Err(Error::NotDir(_))));
        assert!(matches!(fs.mk(Ino::ROOT, "..", Kind::File), Err(Error::BadName(_))));
    }

    #[test]
    fn symlinks_are_followed_on_the_way_and_loops_end() {
        let mut fs = Fs::new();
        let d = fs.mk(Ino::ROOT, "real", Kind::Dir).unwrap();
        let f = fs.file(d.ino, "f");
        let to = |t: &str| NewNode { kind: Kind::Symlink, mode: 0, uid: 0, gid: 0, rdev: 0, target: t.into() };
        let l = to("real");
        fs.run(|p, ino| make(p, Ino::ROOT, "link", &l, ino)).unwrap();
        assert_eq!(resolve(&fs.m, "link/f", false).unwrap().unwrap().ino, f.ino);
        let up = to("../real/f");
        fs.run(|p, ino| make(p, d.ino, "up", &up, ino)).unwrap();
        assert_eq!(resolve(&fs.m, "real/up", true).unwrap().unwrap().ino, f.ino);
        assert_eq!(resolve(&fs.m, "real/up", false).unwrap().unwrap().kind, Kind::Symlink);
        let lp = to("loop");
        fs.run(|p, ino| make(p, Ino::ROOT, "loop", &lp, ino)).unwrap();
        assert!(matches!(resolve(&fs.m, "loop", true), Err(Error::Loop(_))));
        assert!(matches!(resolve(&fs.m, "real/f/x", false), Err(Error::NotDir(_))));
        assert_eq!(resolve(&fs.m, "real/none", false).unwrap(), None);
        assert!(matches!(resolve(&fs.m, "none/x", false), Err(Error::NotFound(_))));
    }

    #[test]
    fn xattrs_follow_the_flags_and_limits_of_linux() {
        let mut fs = Fs::new();
        let f = fs.file(Ino::ROOT, "f");
        let v = Bytes(b"v".to_vec());
        let set = |fs: &mut Fs, n: &str, v: &Bytes, m| fs.run(|p, _| set_xattr(p, f.ino, n, v, m));
        assert!(matches!(set(&mut fs, "user.a", &v, XattrMode::Replace), Err(Error::NoAttr(_))));
        set(&mut fs, "user.a", &v, XattrMode::Create).unwrap();
        assert!(matches!(set(&mut fs, "user.a", &v, XattrMode::Create), Err(Error::Exists(_))));
        set(&mut fs, "user.a", &Bytes(b"w".to_vec()), XattrMode::Replace).unwrap();
        assert_eq!(fs.get(f.ino).unwrap().xattrs["user.a"].0, b"w");
        assert!(matches!(set(&mut fs, "system.posix_acl_access", &v, XattrMode::Any), Err(Error::NotSupported(_))));
        assert!(
            matches!(set(&mut fs, SELINUX, &v, XattrMode::Any), Err(Error::NotSupported(_))),
            "labels are not kept"
        );
        assert!(matches!(check_xattr_name("security.capability"), Ok(())));
        assert!(matches!(set(&mut fs, "user.", &v, XattrMode::Any), Err(Error::Invalid(_))));
        assert!(matches!(set(&mut fs, &format!("user.{}", "n".repeat(251)), &v, XattrMode::Any), Err(Error::Range(_))));
        let big = Bytes(vec![0; XATTR_SIZE_MAX + 1]);
        assert!(matches!(set(&mut fs, "user.big", &big, XattrMode::Any), Err(Error::TooBig(_))));
        fs.run(|p, _| remove_xattr(p, f.ino, "user.a")).unwrap();
        assert!(matches!(fs.run(|p, _| remove_xattr(p, f.ino, "user.a")), Err(Error::NoAttr(_))));
    }

    #[test]
    fn every_metadata_change_moves_the_ctime() {
        let mut fs = Fs::new();
        let f = fs.file(Ino::ROOT, "f");
        let set = SetAttrs { mode: Some(0o4700), atime: Some(TimeSet::At(5)), mtime: None, ..Default::default() };
        let after = fs.run(|p, _| set_attr(p, f.ino, &set)).unwrap();
        assert_eq!((after.mode, after.atime_ns, after.mtime_ns), (0o4700, 5, f.mtime_ns));
        assert!(after.ctime_ns > f.ctime_ns);
        let root = fs.get(Ino::ROOT).unwrap();
        fs.run(|p, _| link(p, f.ino, Ino::ROOT, "g")).unwrap();
        assert!(fs.get(f.ino).unwrap().ctime_ns > after.ctime_ns, "link changes the ctime");
        assert!(fs.get(Ino::ROOT).unwrap().mtime_ns > root.mtime_ns, "the directory's mtime too");
    }

    #[test]
    fn a_new_file_replaces_a_file_but_never_a_directory() {
        let mut fs = Fs::new();
        let old = fs.file(Ino::ROOT, "f");
        let new = fs.file(Ino::ROOT, "f");
        assert_ne!(old.ino, new.ino);
        assert!(fs.get(old.ino).is_none());
        fs.mk(Ino::ROOT, "d", Kind::Dir).unwrap();
        let mut n = Inode::new(Ino(0), Kind::File, 0o644, 0, 0, 0);
        let e = fs
            .run(|p, ino| {
                n.ino = ino;
                create_file(p, Ino::ROOT, "d", n.clone(), false)
            })
            .unwrap_err();
        assert!(matches!(e, Error::IsDir(_)));
        let e = fs
            .run(|p, ino| {
                create_file(p, Ino::ROOT, "f", Inode { ino, ..Inode::new(ino, Kind::File, 0, 0, 0, 0) }, true)
            })
            .unwrap_err();
        assert!(matches!(e, Error::Exists(_)));
        // A retry of the upload that made `new` finds its own inode there.
        let mut again = new.clone();
        again.size = 9;
        let got = fs.run(|p, _| create_file(p, Ino::ROOT, "f", again.clone(), true)).unwrap();
        assert_eq!((got.ino, got.size), (new.ino, 9));
    }
}
