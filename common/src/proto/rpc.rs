//! TCP messages: the handshake, requests, responses and the end of a data stream.
//!
//! File contents never travel inside these messages: a request or response
//! announces a stream, then raw data frames follow (see [`super::frame`]),
//! then [`Message::End`] with the sha256 of the bytes sent.

use serde::{Deserialize, Serialize};

use crate::error::WireError;
use crate::inode::{
    Bytes, Changed, DirEntry, Inode, MemberState, NewNode, Record, Removal, RenameMode, SetAttrs, XattrMode, Xattrs,
};
use crate::locks::{FileLock, LockAnswer, SessionId};
use crate::proto::gossip::Role;
use crate::types::{ContentHash, Ino, Key, NodeId, Term, Version};

/// Who opened a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Peer {
    Client,
    Node(NodeId),
}

/// Everything that travels in a message frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    Request(Request),
    Response(Response),
    /// The end of a data stream: sha256 of every data byte sent in it.
    End {
        hash: ContentHash,
    },
}

/// Which file an upload stores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// A path (the command line): an existing file there gets the new
    /// content and keeps its inode; otherwise a new file is made, and
    /// missing directories on the way with it.
    Path(String),
    /// The content of an existing file (the mount, writing a file it opened).
    Ino(Ino),
    /// A new file `name` in `parent` with the inode number `ino` that the
    /// caller reserved (`ReserveInodes`); an existing file there is replaced,
    /// as by rename(2). A retry that finds `ino` already there stores the
    /// content into it.
    New { parent: Ino, name: String, ino: Ino },
}

/// What a client wants stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadSpec {
    pub target: Target,
    /// Exact number of bytes that will follow; `None` when the sender does
    /// not know yet (a file being written through the mount): the stream's
    /// `End` then decides.
    pub size: Option<u64>,
    /// The file's times: `mtime_ns` always; the rest only for a new file.
    pub mtime_ns: i64,
    /// For a new file: its permission bits, owner and extended attributes.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime_ns: i64,
    pub xattrs: Xattrs,
    /// Fail with "already exists" if the name is taken (O_EXCL).
    pub exclusive: bool,
}

impl UploadSpec {
    /// A spec for `target` with the caller's owner and the given times and mode.
    pub fn new(target: Target, size: Option<u64>, mode: u32, mtime_ns: i64) -> UploadSpec {
        // SAFETY: getuid/getgid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        UploadSpec {
            target,
            size,
            mtime_ns,
            mode,
            uid,
            gid,
            atime_ns: mtime_ns,
            xattrs: Xattrs::new(),
            exclusive: false,
        }
    }

    /// The target for logs.
    pub fn describe(&self) -> String {
        match &self.target {
            Target::Path(p) => format!("{p:?}"),
            Target::Ino(i) => format!("inode {i}"),
            Target::New { parent, name, ino } => format!("{name:?} in {parent} as inode {ino}"),
        }
    }
}

/// A request, from a client or from another node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    // ----- content -----
    /// Store a file's content. Answered with `Ready`, then the client streams
    /// the bytes and `End`, then `Stored(inode)` once the file is durable.
    Upload(UploadSpec),
    /// Read a file by path, following symlinks (the command line):
    /// `Content` + data + `End`, or `Redirect` to the holders.
    Download {
        path: String,
        offset: u64,
        len: Option<u64>,
    },
    /// Read a file by inode (the mount), as `Download` answers.
    Read {
        ino: Ino,
        offset: u64,
        len: Option<u64>,
    },
    /// Read a blob this node holds, by inode and content version (clients
    /// after a redirect, nodes repairing a copy).
    ReadBlob {
        ino: Ino,
        content: Version,
        offset: u64,
        len: Option<u64>,
    },

    // ----- the namespace: answered with `Attr`, `Missing`, `Listing` or `Done` -----
    /// The inode at a path ("" = root), following symlinks on the way and,
    /// with `follow`, at the end.
    Resolve {
        path: String,
        follow: bool,
    },
    /// The inode `name` in directory `parent` leads to.
    Lookup {
        parent: Ino,
        name: String,
    },
    /// An inode by number.
    GetAttr {
        ino: Ino,
    },
    /// The children of a directory with their inodes, in `Listing` frames.
    ReadDir {
        dir: Ino,
    },
    /// Make a directory, symlink, FIFO, socket, device or empty file `name` in `parent`.
    Make {
        parent: Ino,
        name: String,
        node: NewNode,
    },
    /// A new name for an existing inode (link(2)).
    Link {
        ino: Ino,
        parent: Ino,
        name: String,
    },
    /// Remove a name (unlink(2), rmdir(2), or either).
    Remove {
        parent: Ino,
        name: String,
        what: Removal,
    },
    /// Move a name, replacing, refusing or swapping with what is at the target.
    Rename {
        parent: Ino,
        name: String,
        new_parent: Ino,
        new_name: String,
        mode: RenameMode,
    },
    /// Change mode, owner and times.
    SetAttr {
        ino: Ino,
        set: SetAttrs,
    },
    SetXattr {
        ino: Ino,
        name: String,
        value: Bytes,
        mode: XattrMode,
    },
    RemoveXattr {
        ino: Ino,
        name: String,
    },
    /// Inode numbers for new files the caller makes later (`Target::New`):
    /// answered with `Inodes`.
    ReserveInodes {
        count: u32,
    },

    // ----- the trash (the leader only) -----
    /// Everything in the trash, with the path each item had: answered
    /// with `Trash` frames, the last with `more: false`.
    TrashList,
    /// Bring trashed inode `ino` back (to its old place, or `to`: a
    /// directory and a name) with everything that was in it: answered with
    /// `Restored`. Asked again for an inode that is back already, it
    /// restores what is still in the trash below it.
    TrashRestore {
        ino: Ino,
        to: Option<(Ino, String)>,
    },
    /// Remove items from the trash for good: answered with `Purged`.
    TrashPurge(PurgeTrash),
    /// The earlier versions kept of file `ino` (see `Trashed::version_of`),
    /// the oldest first: answered with `Kept`.
    Versions {
        ino: Ino,
    },
    /// Make the kept version `version` of file `ino` its content again;
    /// what it replaces is kept as a version in its turn: answered with
    /// `Attr`.
    RestoreVersion {
        ino: Ino,
        version: Ino,
    },

    /// Members, leader, term, quorum and load.
    Status,
    /// Change the membership by one node (the leader only): answered with
    /// `Done` once the change is committed on a majority of both the old
    /// and the new membership.
    ChangeMembers(MemberChange),
    /// "Your copy of this blob failed its hash at my end": the node re-checks
    /// it and, if it is bad, moves it aside and fetches a good copy.
    ReportCorrupt {
        ino: Ino,
        content: Version,
    },

    // Anti-entropy between nodes (see the node's store::digest).
    /// The 256 bucket digests of the receiver's index: `Digests`.
    Digests,
    /// Every (key, version) in one bucket: `Versions`.
    BucketVersions {
        bucket: u8,
    },
    /// The records of these keys the receiver has: `Records`.
    RecordsFor {
        keys: Vec<Key>,
    },
    /// Records a follower had and the leader lacked: checked, answered and
    /// ignored. Nodes of earlier versions sent it; a record the leader lacks
    /// may be one whose tombstone it purged, which applying would bring back.
    Offer {
        records: Vec<Record>,
    },
    /// From the leader, once every node has them: forget these tombstones.
    Purge {
        term: Term,
        leader: NodeId,
        items: Vec<(Key, Version)>,
    },

    // Between nodes only.
    /// Store the blob of inode `ino` at content version `content` durably
    /// (bytes + `End` follow) and answer `Done`; the inode itself (with its
    /// final size and hash) is committed later by an `Apply`. `size` is the
    /// exact byte count when known.
    Replicate {
        term: Term,
        leader: NodeId,
        ino: Ino,
        content: Version,
        size: Option<u64>,
    },
    /// Which of these blobs (inode, content version) the receiver keeps:
    /// answered with `Holding`, in the same order.
    Holds {
        items: Vec<(Ino, Version)>,
    },
    /// Commit these records in one transaction.
    Apply {
        term: Term,
        leader: NodeId,
        records: Vec<Record>,
    },
    /// Every record newer than `since`: answered with `Pulled` frames. With
    /// `fence` (a new leader catching up), the receiver first moves to that
    /// term and stops accepting writes from older ones.
    Pull {
        since: Version,
        fence: Option<(Term, NodeId)>,
    },

    // ----- advisory locks, kept by the leader in memory (see crate::locks) -----
    /// Take or change a lock (fcntl, flock): answered with `Lock`.
    Lock {
        session: SessionId,
        lock: FileLock,
    },
    /// Give back bytes `start..=end` of `owner`'s locks on `ino` (all of
    /// them with `0..=u64::MAX`): answered with `Lock`.
    Unlock {
        session: SessionId,
        ino: Ino,
        owner: u64,
        start: u64,
        end: u64,
    },
    /// Which lock of another owner stands in the way of `lock` (F_GETLK):
    /// answered with `Lock` (`Granted` when none does).
    TestLock {
        session: SessionId,
        lock: FileLock,
    },
    /// The mount is alive and keeps its locks: answered with `Lock`.
    KeepAlive {
        session: SessionId,
    },
    /// Sets the session's locks to `locks` (after a failover, a lease that
    /// ran out, or to give everything back): answered with `Reclaimed`.
    Reclaim {
        session: SessionId,
        locks: Vec<FileLock>,
    },
    /// Stores several small files (each of a known size up to
    /// [`crate::inode::INLINE_MAX`], by inode, at most [`UPLOAD_MANY_MAX`],
    /// no file twice) in one exchange: answered with `Ready`, then the
    /// client sends each file's bytes and `End` in order, then `Many` with
    /// each file's answer (`Attr` or `Error`) in order, once those stored
    /// are durable. Only a client that got `Ready` sends bytes, so none
    /// lands after its client is gone.
    UploadMany(Vec<UploadSpec>),
}

/// Files in one `UploadMany` at most.
pub const UPLOAD_MANY_MAX: usize = 64;

/// What `TrashPurge` removes for good.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PurgeTrash {
    /// These items, and everything in the trash below them.
    Items(Vec<Ino>),
    /// Everything removed before this time (nanoseconds since the epoch).
    Before(i64),
    All,
}

/// One item in the trash: an inode (as clients get it: its `trashed` says
/// where it was and when it went) and the path it had. A directory's
/// `items` and `bytes` count everything below it in the trash too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashItem {
    pub path: String,
    pub inode: Inode,
    /// Whether it sits in a directory that is in the trash too.
    pub inside: bool,
    pub items: u64,
    pub bytes: u64,
}

/// One change of the membership (`scs node add/drain/remove`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    /// Admit a node that announces itself with the cluster key.
    Add(NodeId),
    /// Stop giving the member new copies and make its copies again on the
    /// others. Draining a draining member again is not an error.
    Drain(NodeId),
    /// Take the member out. Refused while it holds copies the other
    /// members lack, unless `force` (a machine lost for good: its copies
    /// are made again from the others).
    Remove { id: NodeId, force: bool },
}

/// Copies still to make on other nodes (of files on draining members), as
/// of the leader's last replica check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moving {
    pub files: u64,
    pub bytes: u64,
    /// Bytes per second over the last checks (0 when nothing moved yet).
    pub bytes_per_sec: u64,
}

/// Where a holder of a blob listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderAddr {
    pub id: NodeId,
    pub addr: String,
}

/// One member as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub addr: String,
    pub alive: bool,
    pub role: Option<Role>,
    pub files: u64,
    pub max_files: Option<u64>,
    /// Bytes free and in all on the node's data disk.
    pub disk_free: u64,
    pub disk_total: u64,
    /// Copies it should keep but has yet to fetch (repairs in progress).
    pub wanted: u64,
    /// Bad copies its scrub or readers found since it started.
    pub corrupt: u64,
    /// Active or draining (candidates are listed apart).
    #[serde(default)]
    pub state: MemberState,
    /// Bytes of the files whose content it holds.
    #[serde(default)]
    pub bytes: u64,
    /// Of them, bytes of content in the trash.
    #[serde(default)]
    pub trash_bytes: u64,
}

/// The answer to `Status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The node that answered.
    pub node: NodeId,
    pub leader: Option<NodeId>,
    pub term: Term,
    pub quorum: bool,
    pub cluster_size: u32,
    pub replicas: u32,
    pub nodes: Vec<NodeStatus>,
    /// Files with fewer live copies than `replicas` (as of the leader's last check).
    pub under_replicated: u64,
    /// Nodes that announce themselves with the cluster key but are not
    /// members (another id, or another `cluster_size`), as this node hears them.
    #[serde(default)]
    pub candidates: Vec<Candidate>,
    /// Copies left to move off draining members.
    #[serde(default)]
    pub moving: Moving,
}

/// A node heard with the cluster key that is not a member: what it says
/// of itself (`alive`: heard within the leader timeout, which it always is
/// when listed), and the `cluster_size` it was started with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub node: NodeStatus,
    pub cluster_size: u32,
}

/// A response to a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Done, nothing to report.
    Done,
    /// Go ahead and stream the bytes.
    Ready,
    /// The inode as committed (setattr, xattrs, a restore) or found (lookups).
    Attr(Inode),
    /// A lookup of a name that does not exist.
    Missing,
    /// A namespace change (make, link, remove, rename) or an upload is
    /// committed (an upload's file is its first inode).
    Changed(Changed),
    /// A batch of a directory listing; `more` says another follows.
    /// `version`: of the directory's inode, as of the listing.
    Listing {
        entries: Vec<DirEntry>,
        more: bool,
        version: Option<Version>,
    },
    /// `len` bytes of `inode`'s content from `offset` follow as data frames, then `End`.
    Content {
        inode: Inode,
        offset: u64,
        len: u64,
    },
    /// This node does not keep the content: ask one of these holders with `ReadBlob`.
    Redirect {
        inode: Inode,
        holders: Vec<HolderAddr>,
    },
    Status(StatusReport),
    /// A batch of records newer than the asked version; when `more` is false,
    /// `watermark` is a version up to which the sender had nothing in flight.
    Pulled {
        records: Vec<Record>,
        more: bool,
        watermark: Version,
    },
    Digests(Vec<u64>),
    Versions(Vec<(Key, Version)>),
    Records(Vec<Record>),
    /// Inode numbers `first` .. `first + count` are the caller's to use.
    Inodes {
        first: Ino,
        count: u32,
    },
    Error(WireError),
    /// The answer to a lock request.
    Lock(LockAnswer),
    /// The answer to `Reclaim`: the locks refused (another mount holds them).
    Reclaimed(Vec<FileLock>),
    /// The answer to `Holds`.
    Holding(Vec<bool>),
    /// A batch of the trash; `more` says another follows.
    Trash {
        items: Vec<TrashItem>,
        more: bool,
    },
    /// The answer to `TrashRestore`: the inode back in place, how many
    /// inodes came back with it, and how many stayed in the trash because
    /// their name was taken meanwhile.
    Restored {
        inode: Inode,
        items: u64,
        left: u64,
    },
    /// The answer to `TrashPurge`: items and bytes removed.
    Purged {
        items: u64,
        bytes: u64,
    },
    /// The answer to `Versions`: the versions kept, the oldest first.
    Kept(Vec<Inode>),
    /// The answers to `UploadMany`, one per file, in order.
    Many(Vec<Response>),
}

impl Response {
    pub fn error(e: &crate::Error) -> Response {
        Response::Error(e.to_wire())
    }

    /// This answer with its inodes as clients get them
    /// ([`Inode::for_client`]: no inline bytes). Records between nodes
    /// (`Records`, `Pulled`) are left whole.
    pub fn for_client(self) -> Response {
        match self {
            Response::Attr(i) => Response::Attr(i.for_client()),
            Response::Changed(c) => Response::Changed(Changed {
                inodes: c.inodes.into_iter().map(Inode::for_client).collect(),
                dirs: c.dirs,
            }),
            Response::Listing { entries, more, version } => Response::Listing {
                entries: entries.into_iter().map(|e| DirEntry { inode: e.inode.for_client(), ..e }).collect(),
                more,
                version,
            },
            Response::Content { inode, offset, len } => Response::Content { inode: inode.for_client(), offset, len },
            Response::Redirect { inode, holders } => Response::Redirect { inode: inode.for_client(), holders },
            Response::Trash { items, more } => Response::Trash {
                items: items.into_iter().map(|t| TrashItem { inode: t.inode.for_client(), ..t }).collect(),
                more,
            },
            Response::Restored { inode, items, left } => Response::Restored { inode: inode.for_client(), items, left },
            Response::Kept(v) => Response::Kept(v.into_iter().map(Inode::for_client).collect()),
            Response::Many(v) => Response::Many(v.into_iter().map(Response::for_client).collect()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Kind;

    #[test]
    fn messages_round_trip_through_msgpack() {
        let mut inode = Inode::new(Ino(7), Kind::File, 0o755, 1000, 1000, 1_700_000_000_123_456_789);
        inode.version = Version::new(Term(3), 9);
        inode.holders = vec![NodeId(1), NodeId(3)];
        let msgs = vec![
            Message::Request(Request::Replicate {
                term: Term(3),
                leader: NodeId(3),
                ino: Ino(7),
                content: Version::new(Term(3), 9),
                size: Some(12),
            }),
            Message::Request(Request::Upload(UploadSpec::new(
                Target::New { parent: Ino::ROOT, name: "un été/ça.txt".into(), ino: Ino(7) },
                None,
                0o644,
                5,
            ))),
            Message::Response(Response::Listing {
                entries: vec![DirEntry { name: "ça.txt".into(), inode: inode.clone() }],
                more: false,
                version: Some(Version::new(Term(3), 9)),
            }),
            Message::Response(Response::Pulled {
                records: vec![Record::Inode(inode)],
                more: true,
                watermark: Version::ZERO,
            }),
            Message::End { hash: ContentHash([9; 32]) },
            Message::Request(Request::UploadMany(vec![UploadSpec::new(Target::Ino(Ino(9)), Some(3), 0o600, 1)])),
            Message::Response(Response::Many(vec![
                Response::Attr(Inode::new(Ino(9), Kind::File, 0o600, 0, 0, 1)),
                Response::Error(crate::Error::NotFound("inode 10".into()).to_wire()),
            ])),
        ];
        for m in msgs {
            let bytes = rmp_serde::to_vec(&m).unwrap();
            let back: Message = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(back, m);
        }
    }
}
