//! The namespace as the cluster stores it (DESIGN section 2): inodes,
//! directory entries, and the [`Record`]s that carry both through
//! replication. Every record has a key and a version; the highest version of
//! a key wins everywhere, and a deletion is a tombstone (a record with
//! `deleted`), kept until every node has it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::types::{ContentHash, Ino, Key, Kind, NodeId, Version, PERMS};

/// Longest extended attribute name, as Linux's XATTR_NAME_MAX.
pub const XATTR_NAME_MAX: usize = 255;
/// Longest extended attribute value, as Linux's XATTR_SIZE_MAX.
pub const XATTR_SIZE_MAX: usize = 65536;
/// Names and values of one inode's extended attributes together: past it a
/// new one fails with "no space", as a full ext4 inode does.
pub const XATTR_TOTAL_MAX: usize = 256 * 1024;
/// Size a directory shows, as a small ext4 directory does.
pub const DIR_SIZE: u64 = 4096;
/// Files of at most this many bytes keep their content in their inode
/// record ([`Inode::inline`]) instead of a blob: one index commit per node
/// stores them, with no file to create, sync and name on each holder.
pub const INLINE_MAX: u64 = 8192;

/// Bytes that travel as one msgpack bin (an xattr value), not as a list of
/// numbers.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0.len())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }
}

struct BytesVisitor;

impl<'de> serde::de::Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("bytes")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes(v.to_vec()))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes(v))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        let mut out = Vec::new();
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(Bytes(out))
    }
}

/// Extended attributes by name ("user.comment").
pub type Xattrs = BTreeMap<String, Bytes>;

/// One inode: everything about a file but its names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inode {
    pub ino: Ino,
    /// The version of this record (any change of the inode makes a new one).
    pub version: Version,
    pub kind: Kind,
    /// Permission bits with set-user-id, set-group-id and sticky (0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Directory entries that lead to it. A directory's is 2 plus its
    /// subdirectories, worked out by each node from its entries (see the
    /// node's store), not stored.
    pub nlink: u32,
    /// For a directory, the directory that holds it (the root holds
    /// itself): `..`, and the check that a directory is not moved into itself.
    pub parent: Ino,
    pub size: u64,
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// The device of a character or block device.
    pub rdev: u64,
    /// A symlink's target.
    pub target: String,
    pub xattrs: Xattrs,
    /// The version of the content: the blob's name on its holders.
    /// [`Version::ZERO`] when there is no blob (an empty file never written,
    /// or not a file).
    pub content: Version,
    /// The sha256 of the content.
    pub hash: ContentHash,
    /// The nodes asked to keep the content.
    pub holders: Vec<NodeId>,
    /// A tombstone: the inode was removed at `version`.
    pub deleted: bool,
    /// The content itself, for a file of at most [`INLINE_MAX`] bytes: it
    /// travels and is kept with the record, on every node, and there is no
    /// blob (`holders` is empty). In answers to clients the bytes are left
    /// out ([`Inode::for_client`]): `Some` of nothing says only that the
    /// content is inline. Records from before it (index format 3) lack
    /// it and decode as `None`.
    #[serde(default)]
    pub inline: Option<Bytes>,
    /// In the trash: its last name was removed while the trash was on
    /// (`trash_hours`), so it is kept, with no name, until it is restored,
    /// purged, or expires. Its `nlink` is 0. Left out of the encoding when
    /// `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trashed: Option<Box<Trashed>>,
}

/// Where a trashed inode was, and when it went: its last name, as a
/// directory and a name in it. The directory may be in the trash too (a
/// tree removed with everything in it), so a tree comes back as a tree.
///
/// An earlier version of a file is in the trash too: the content an
/// overwrite replaced, as an inode of its own with no name (`dir` is
/// [`Ino::NONE`]), kept as long as anything else in the trash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trashed {
    pub dir: Ino,
    pub name: String,
    /// When it was removed (or, for a version, replaced), nanoseconds
    /// since the epoch.
    pub at_ns: i64,
    /// For an earlier version: the file whose content it was. Left out of
    /// the encoding when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_of: Option<Ino>,
}

impl Inode {
    /// A new inode with no content, its times all `now_ns`.
    pub fn new(ino: Ino, kind: Kind, mode: u32, uid: u32, gid: u32, now_ns: i64) -> Inode {
        Inode {
            ino,
            version: Version::ZERO,
            kind,
            mode: mode & PERMS,
            uid,
            gid,
            nlink: 1,
            parent: Ino::NONE,
            size: 0,
            atime_ns: now_ns,
            mtime_ns: now_ns,
            ctime_ns: now_ns,
            rdev: 0,
            target: String::new(),
            xattrs: Xattrs::new(),
            content: Version::ZERO,
            hash: ContentHash::of_empty(),
            holders: Vec::new(),
            deleted: false,
            inline: None,
            trashed: None,
        }
    }

    pub fn key(&self) -> Key {
        Key::of_ino(self.ino)
    }

    /// Whether its content is a blob on its holders.
    pub fn has_blob(&self) -> bool {
        self.kind == Kind::File && !self.deleted && self.content != Version::ZERO && self.inline.is_none()
    }

    /// Whether its content is kept in the record ([`Inode::inline`]).
    pub fn is_inline(&self) -> bool {
        self.kind == Kind::File && !self.deleted && self.inline.is_some()
    }

    /// Checks content kept in the record against the size and hash it
    /// claims: a record that fails is not taken.
    ///
    /// # Errors
    /// `Corrupt` for bytes that do not match, `Invalid` for inline content
    /// where none belongs.
    pub fn check_inline(&self) -> crate::Result<()> {
        let Some(data) = &self.inline else { return Ok(()) };
        if self.kind != Kind::File || self.deleted || data.0.len() as u64 > INLINE_MAX {
            return Err(crate::Error::Invalid(format!(
                "inode {}: inline content on a {}{} of {} bytes",
                self.ino,
                if self.deleted { "removed " } else { "" },
                self.kind.as_str(),
                data.0.len()
            )));
        }
        if data.0.len() as u64 != self.size || ContentHash::of(&data.0) != self.hash {
            return Err(crate::Error::Corrupt(format!(
                "inode {}: its inline content does not match its size and hash",
                self.ino
            )));
        }
        Ok(())
    }

    /// This inode as clients get it: inline content is theirs to read
    /// with `Read`, not with every lookup and listing.
    pub fn for_client(mut self) -> Inode {
        if let Some(data) = self.inline.as_mut() {
            data.0 = Vec::new();
        }
        self
    }

    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }

    /// The whole `st_mode`: type bits and permission bits.
    pub fn st_mode(&self) -> u32 {
        self.kind.type_bits() | (self.mode & PERMS)
    }

    /// The size it shows: a directory's is [`DIR_SIZE`], a symlink's the
    /// length of its target.
    pub fn st_size(&self) -> u64 {
        match self.kind {
            Kind::File => self.size,
            Kind::Dir => DIR_SIZE,
            Kind::Symlink => self.target.len() as u64,
            _ => 0,
        }
    }

    /// A tombstone of this inode, stamped `now_ns`.
    pub fn tombstone(&self, now_ns: i64) -> Inode {
        Inode {
            nlink: 0,
            size: 0,
            target: String::new(),
            xattrs: Xattrs::new(),
            content: Version::ZERO,
            hash: ContentHash::default(),
            holders: Vec::new(),
            deleted: true,
            inline: None,
            trashed: None,
            ctime_ns: now_ns,
            ..self.clone()
        }
    }

    /// Whether it is in the trash (kept with no name).
    pub fn is_trashed(&self) -> bool {
        !self.deleted && self.trashed.is_some()
    }

    /// This inode put in the trash at `now_ns`: its last name was `name`
    /// in `dir`. Everything else is kept, content included.
    pub fn trash(&self, dir: Ino, name: &str, now_ns: i64) -> Inode {
        Inode {
            nlink: 0,
            ctime_ns: now_ns,
            trashed: Some(Box::new(Trashed { dir, name: name.to_string(), at_ns: now_ns, version_of: None })),
            ..self.clone()
        }
    }

    /// The file this is an earlier version of, if it is one (and is kept).
    pub fn version_of(&self) -> Option<Ino> {
        self.trashed.as_ref().filter(|_| !self.deleted).and_then(|t| t.version_of)
    }

    /// This file's content, replaced at `now_ns`, kept as inode `ino`: an
    /// earlier version of it, in the trash (see [`Trashed`]).
    pub fn as_version(&self, ino: Ino, now_ns: i64) -> Inode {
        let kept = Trashed { dir: Ino::NONE, name: String::new(), at_ns: now_ns, version_of: Some(self.ino) };
        Inode {
            ino,
            version: Version::ZERO,
            nlink: 0,
            parent: Ino::NONE,
            ctime_ns: now_ns,
            trashed: Some(Box::new(kept)),
            ..self.clone()
        }
    }

    /// Total bytes of its extended attributes' names and values.
    pub fn xattr_bytes(&self) -> usize {
        self.xattrs.iter().map(|(k, v)| k.len() + v.0.len()).sum()
    }
}

/// A directory entry: a name in a directory, leading to an inode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dentry {
    pub parent: Ino,
    /// One path component.
    pub name: String,
    pub version: Version,
    /// The inode it leads to ([`Ino::NONE`] in a tombstone).
    pub child: Ino,
    /// The kind of the child, for listings.
    pub kind: Kind,
    pub deleted: bool,
    /// When it was last changed, nanoseconds since the epoch (how old a tombstone is).
    pub stamp_ns: i64,
}

impl Dentry {
    pub fn key(&self) -> Key {
        Key::of_dentry(self.parent, &self.name)
    }
}

/// How far inode numbers have been handed out: every number below `next`
/// may be in use, none at or above it is. A leader reserves a block by
/// committing a higher `next` on a majority before it hands out any number
/// of the block, so a later leader never hands one out again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextIno {
    pub version: Version,
    pub next: Ino,
    pub stamp_ns: i64,
}

/// What a member is doing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// Votes, and takes new copies.
    #[default]
    Active,
    /// Votes, but takes no new copies, and its copies are made again on the
    /// others (`scs node drain`) until it can be removed.
    Draining,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Active => "active",
            MemberState::Draining => "draining",
        }
    }
}

/// The membership in force: replicated like any record, changed one node
/// at a time by the leader, and committed on a majority of both the old
/// and the new membership (so any two memberships in a row share a
/// majority). Until a cluster's first leader commits one, every node uses
/// the one its configuration bootstraps (version zero).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    pub version: Version,
    pub nodes: std::collections::BTreeMap<NodeId, MemberState>,
    pub stamp_ns: i64,
}

impl Members {
    /// The membership a configuration bootstraps.
    pub fn bootstrap(ids: impl IntoIterator<Item = NodeId>) -> Members {
        Members {
            version: Version::ZERO,
            nodes: ids.into_iter().map(|id| (id, MemberState::Active)).collect(),
            stamp_ns: 0,
        }
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.nodes.contains_key(&id)
    }

    pub fn ids(&self) -> std::collections::BTreeSet<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The smallest majority of the members.
    pub fn majority(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    /// Whether `acks` holds a majority of the members.
    pub fn has_majority(&self, acks: &std::collections::BTreeSet<NodeId>) -> bool {
        acks.iter().filter(|id| self.contains(**id)).count() >= self.majority()
    }

    pub fn state(&self, id: NodeId) -> Option<MemberState> {
        self.nodes.get(&id).copied()
    }

    /// Whether `id` is a member that takes new copies.
    pub fn takes_copies(&self, id: NodeId) -> bool {
        self.state(id) == Some(MemberState::Active)
    }

    /// Members that take new copies.
    pub fn active(&self) -> usize {
        self.nodes.values().filter(|s| **s == MemberState::Active).count()
    }

    /// Members at most.
    pub const MAX: usize = 1000;

    /// Checks a record from the network: at least one member, at most
    /// [`Members::MAX`], none with id 0.
    ///
    /// # Errors
    /// `Invalid` saying what is wrong.
    pub fn check(&self) -> crate::Result<()> {
        if self.nodes.is_empty() || self.nodes.len() > Members::MAX || self.contains(NodeId(0)) {
            return Err(crate::Error::Invalid(format!(
                "a membership of {} node(s){} is not valid",
                self.nodes.len(),
                if self.contains(NodeId(0)) { " with id 0" } else { "" }
            )));
        }
        Ok(())
    }
}

/// One replicated item of the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    Inode(Inode),
    Dentry(Dentry),
    NextIno(NextIno),
    Members(Members),
}

impl Record {
    pub fn key(&self) -> Key {
        match self {
            Record::Inode(i) => i.key(),
            Record::Dentry(d) => d.key(),
            Record::NextIno(_) => Key::next_ino(),
            Record::Members(_) => Key::members(),
        }
    }

    pub fn version(&self) -> Version {
        match self {
            Record::Inode(i) => i.version,
            Record::Dentry(d) => d.version,
            Record::NextIno(n) => n.version,
            Record::Members(m) => m.version,
        }
    }

    pub fn set_version(&mut self, v: Version) {
        match self {
            Record::Inode(i) => i.version = v,
            Record::Dentry(d) => d.version = v,
            Record::NextIno(n) => n.version = v,
            Record::Members(m) => m.version = v,
        }
    }

    pub fn is_tombstone(&self) -> bool {
        match self {
            Record::Inode(i) => i.deleted,
            Record::Dentry(d) => d.deleted,
            Record::NextIno(_) | Record::Members(_) => false,
        }
    }

    /// When it was last changed (for a tombstone: when it was deleted).
    pub fn stamp_ns(&self) -> i64 {
        match self {
            Record::Inode(i) => i.ctime_ns,
            Record::Dentry(d) => d.stamp_ns,
            Record::NextIno(n) => n.stamp_ns,
            Record::Members(m) => m.stamp_ns,
        }
    }

    pub fn as_inode(&self) -> Option<&Inode> {
        match self {
            Record::Inode(i) => Some(i),
            _ => None,
        }
    }

    /// A short description for logs.
    pub fn describe(&self) -> String {
        match self {
            Record::Inode(i) => format!("inode {} {:?}{}", i.ino, i.version, if i.deleted { " (gone)" } else { "" }),
            Record::Dentry(d) => format!(
                "entry {:?} in {} -> {} {:?}{}",
                d.name,
                d.parent,
                d.child,
                d.version,
                if d.deleted { " (gone)" } else { "" }
            ),
            Record::NextIno(n) => format!("inode numbers below {} {:?}", n.next, n.version),
            Record::Members(m) => format!("members {:?} {:?}", m.nodes, m.version),
        }
    }
}

/// A child of a directory as a listing gives it: its name and its inode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub inode: Inode,
}

/// A directory's inode went from version `before` to `after` in one
/// change, which added or removed some of its entries. Every change of a
/// directory's entries gives it a new version, so a client whose listing
/// of `dir` is at `before`, with the change laid over it, holds the
/// directory as it was when the change was made (weak cache consistency,
/// as NFS has it): the listing is as fresh as the change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirStep {
    pub dir: Ino,
    pub before: Version,
    pub after: Version,
}

/// What a committed namespace change (make, link, remove, rename) gives
/// back: every inode it touched that is still there, as the leader stamped
/// it (the one made or linked first), and the steps of the directories
/// whose entries it changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    pub inodes: Vec<Inode>,
    pub dirs: Vec<DirStep>,
}

/// A directory's children as one listing gives them, and the version of
/// the directory's inode they are of (`None` from a node that did not say).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listed {
    pub entries: Vec<DirEntry>,
    pub version: Option<Version>,
}

/// What a new inode made by `Make` is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewNode {
    pub kind: Kind,
    /// Permission bits (the caller's umask already applied).
    pub mode: u32,
    /// The caller: the new inode's owner. The group is the parent's instead
    /// when the parent is set-group-id.
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    /// A symlink's target.
    pub target: String,
}

/// A time to set: the leader's clock, or a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeSet {
    Now,
    At(i64),
}

/// What a `SetAttr` changes; `None` leaves it as it is. Every change sets
/// the ctime to the leader's clock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAttrs {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
}

impl SetAttrs {
    pub fn is_empty(&self) -> bool {
        self == &SetAttrs::default()
    }
}

/// How a rename treats an existing target (rename(2) and renameat2 flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RenameMode {
    /// Replace it, as rename(2) does.
    Replace,
    /// Fail with "exists" (RENAME_NOREPLACE).
    NoReplace,
    /// Swap the two names (RENAME_EXCHANGE); the target must exist.
    Exchange,
}

/// What a removal may remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Removal {
    /// Anything but a directory (unlink(2)).
    NonDir,
    /// An empty directory (rmdir(2)).
    Dir,
    /// Either (the command line's `rm`).
    Any,
}

/// How a `SetXattr` treats an existing attribute (setxattr(2) flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum XattrMode {
    Any,
    /// XATTR_CREATE: fail if it exists.
    Create,
    /// XATTR_REPLACE: fail if it does not.
    Replace,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Term, S_IFDIR, S_IFLNK, S_IFREG};

    #[test]
    fn records_round_trip_through_msgpack_with_xattr_values_as_bins() {
        let mut i = Inode::new(Ino(42), Kind::File, 0o4755, 1000, 100, 1_700_000_000_123_456_789);
        i.xattrs.insert("user.comment".into(), Bytes(vec![0, 255, 7]));
        i.holders = vec![NodeId(1), NodeId(3)];
        i.version = Version::new(Term(3), 9);
        let d = Dentry {
            parent: Ino::ROOT,
            name: "un été.txt".into(),
            version: Version::new(Term(3), 10),
            child: Ino(42),
            kind: Kind::File,
            deleted: false,
            stamp_ns: 5,
        };
        for r in [
            Record::Inode(i.clone()),
            Record::Dentry(d),
            Record::NextIno(NextIno { version: Version::new(Term(1), 1), next: Ino(1024), stamp_ns: 0 }),
            Record::Members(Members {
                version: Version::new(Term(2), 1),
                nodes: [(NodeId(1), MemberState::Active), (NodeId(7), MemberState::Draining)].into(),
                stamp_ns: 3,
            }),
        ] {
            let bytes = rmp_serde::to_vec(&r).unwrap();
            assert_eq!(rmp_serde::from_slice::<Record>(&bytes).unwrap(), r);
        }
        let value = rmp_serde::to_vec(&Bytes(vec![200; 100])).unwrap();
        assert_eq!(value.len(), 102, "bin8 header + 100 bytes, not a list of numbers");
    }

    #[test]
    fn a_record_without_inline_content_encodes_as_before_and_one_with_it_round_trips() {
        let mut i = Inode::new(Ino(9), Kind::File, 0o644, 0, 0, 5);
        i.version = Version::new(Term(2), 4);
        // The inode as the release before encoded it: the same fields, none after `deleted`.
        #[derive(Serialize)]
        struct Before<'a> {
            ino: Ino,
            version: Version,
            kind: Kind,
            mode: u32,
            uid: u32,
            gid: u32,
            nlink: u32,
            parent: Ino,
            size: u64,
            atime_ns: i64,
            mtime_ns: i64,
            ctime_ns: i64,
            rdev: u64,
            target: &'a str,
            xattrs: &'a Xattrs,
            content: Version,
            hash: ContentHash,
            holders: &'a [NodeId],
            deleted: bool,
        }
        let before = Before {
            ino: i.ino,
            version: i.version,
            kind: i.kind,
            mode: i.mode,
            uid: i.uid,
            gid: i.gid,
            nlink: i.nlink,
            parent: i.parent,
            size: i.size,
            atime_ns: i.atime_ns,
            mtime_ns: i.mtime_ns,
            ctime_ns: i.ctime_ns,
            rdev: i.rdev,
            target: &i.target,
            xattrs: &i.xattrs,
            content: i.content,
            hash: i.hash,
            holders: &i.holders,
            deleted: i.deleted,
        };
        let before = rmp_serde::to_vec(&before).unwrap();
        assert_eq!(rmp_serde::from_slice::<Inode>(&before).unwrap(), i, "an inode as format 3 encoded it decodes");
        let trashed = i.trash(Ino(9), "gone.txt", 5);
        let back = rmp_serde::from_slice::<Inode>(&rmp_serde::to_vec(&trashed).unwrap()).unwrap();
        assert_eq!(back, trashed, "a trashed inode without inline content keeps its place in the trash");
        assert!(back.is_trashed() && back.nlink == 0);

        let data = b"small file".to_vec();
        (i.size, i.hash, i.inline) = (data.len() as u64, ContentHash::of(&data), Some(Bytes(data)));
        let r = Record::Inode(i.clone());
        assert_eq!(rmp_serde::from_slice::<Record>(&rmp_serde::to_vec(&r).unwrap()).unwrap(), r);
        assert!(i.is_inline() && !i.has_blob());
        assert!(i.check_inline().is_ok());
        let for_client = i.clone().for_client();
        assert_eq!(for_client.inline, Some(Bytes(Vec::new())), "a client learns it is inline, not the bytes");
        assert!(i.tombstone(7).inline.is_none(), "a removed file keeps no content");
    }

    #[test]
    fn inline_content_that_does_not_match_its_hash_or_kind_is_refused() {
        let data = b"twelve bytes".to_vec();
        let mut i = Inode::new(Ino(9), Kind::File, 0o644, 0, 0, 5);
        (i.size, i.hash, i.inline) = (12, ContentHash::of(&data), Some(Bytes(data)));
        assert!(i.check_inline().is_ok());
        let mut flipped = i.clone();
        flipped.inline.as_mut().unwrap().0[0] ^= 1;
        assert!(matches!(flipped.check_inline(), Err(crate::Error::Corrupt(_))));
        let mut longer = i.clone();
        longer.size = 13;
        assert!(matches!(longer.check_inline(), Err(crate::Error::Corrupt(_))));
        let dir = Inode { kind: Kind::Dir, ..i.clone() };
        assert!(matches!(dir.check_inline(), Err(crate::Error::Invalid(_))));
        let mut huge = i.clone();
        huge.inline = Some(Bytes(vec![0; INLINE_MAX as usize + 1]));
        assert!(matches!(huge.check_inline(), Err(crate::Error::Invalid(_))));
    }

    #[test]
    fn modes_and_sizes_show_as_a_local_file_system_shows_them() {
        let f = Inode::new(Ino(2), Kind::File, 0o100644, 0, 0, 0);
        assert_eq!(f.mode, 0o644, "type bits are not kept in mode");
        assert_eq!(f.st_mode(), S_IFREG | 0o644);
        let mut l = Inode::new(Ino(3), Kind::Symlink, 0o777, 0, 0, 0);
        l.target = "../target".into();
        assert_eq!((l.st_mode(), l.st_size()), (S_IFLNK | 0o777, 9));
        let d = Inode::new(Ino(4), Kind::Dir, 0o2755, 0, 0, 0);
        assert_eq!((d.st_mode(), d.st_size()), (S_IFDIR | 0o2755, DIR_SIZE));
        assert!(!f.has_blob(), "a file never written has no blob");
    }

    #[test]
    fn a_membership_from_the_network_has_members_and_no_id_0() {
        let ok = Members::bootstrap([NodeId(1), NodeId(7)]);
        assert!(ok.check().is_ok());
        assert_eq!((ok.len(), ok.majority(), ok.active()), (2, 2, 2));
        let empty = Members::bootstrap([]);
        assert!(empty.check().unwrap_err().to_string().contains("0 node(s)"));
        let zero = Members::bootstrap([NodeId(0), NodeId(1)]);
        assert!(zero.check().unwrap_err().to_string().contains("with id 0"));
        let huge = Members::bootstrap((1..=1001).map(NodeId));
        assert!(huge.check().is_err());
    }

    #[test]
    fn keys_of_inodes_entries_and_the_counter_never_meet() {
        let a = Key::of_ino(Ino(1));
        let b = Key::of_dentry(Ino(1), "");
        let c = Key::next_ino();
        assert!(a != b && b != c && a != c);
        assert!(Key::members() != a && Key::members() != b && Key::members() != c);
        assert_ne!(Key::of_dentry(Ino(1), "ab"), Key::of_dentry(Ino(1), "a"));
        assert_ne!(Key::of_dentry(Ino(1), "x"), Key::of_dentry(Ino(2), "x"));
    }

    #[test]
    fn a_tombstone_keeps_only_what_says_what_it_was() {
        let mut i = Inode::new(Ino(9), Kind::File, 0o600, 1, 1, 0);
        i.xattrs.insert("user.a".into(), Bytes(vec![1]));
        i.content = Version::new(Term(1), 2);
        let t = i.tombstone(77);
        assert!(t.deleted && !t.has_blob() && t.xattrs.is_empty() && t.holders.is_empty());
        assert_eq!((t.ino, t.kind, t.ctime_ns), (Ino(9), Kind::File, 77));
    }
}
