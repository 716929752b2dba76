//! TCP messages: the handshake, requests, responses and the end of a data stream.
//!
//! File contents never travel inside these messages: a request or response
//! announces a stream, then raw data frames follow (see [`super::frame`]),
//! then [`Message::End`] with the sha256 of the bytes sent.

use serde::{Deserialize, Serialize};

use crate::error::WireError;
use crate::proto::gossip::Role;
use crate::types::{ContentHash, Entry, Key, NodeId, Term, Version};

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

/// What a client wants stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadSpec {
    pub name: String,
    /// Exact number of bytes that will follow; `None` when the sender does
    /// not know yet (a file being written through the mount): the stream's
    /// `End` then decides.
    pub size: Option<u64>,
    pub mode: u32,
    pub mtime_ns: i64,
    /// Fail with "already exists" if the name is taken (O_EXCL).
    pub exclusive: bool,
}

/// A request, from a client or from another node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Store a file. Answered with `Ready`, then the client streams the bytes
    /// and `End`, then `Stored(entry)` once the file is durable.
    Upload(UploadSpec),
    /// Read a file (or a range of it): `Content` + data + `End`, or `Redirect`
    /// to the holders when the node does not keep the content itself.
    Download { name: String, offset: u64, len: Option<u64> },
    /// Read a blob this node holds, by key and version (clients after a
    /// redirect, nodes repairing a copy).
    ReadBlob { key: Key, version: Version, offset: u64, len: Option<u64> },
    /// The entry of a name (a directory implied by files has version 0).
    Stat { name: String },
    /// The children of a directory ("" = root): answered with `Listing` frames.
    List { dir: String },
    /// Make a directory; with `parents`, its missing ancestors too and no error if it exists.
    Mkdir { name: String, mode: u32, mtime_ns: i64, parents: bool },
    /// Remove a file or an empty directory. `expect` makes it unlink (file)
    /// or rmdir (dir) with the matching errors.
    Delete { name: String, expect: Option<crate::types::Kind> },
    /// Move a file or a directory (with everything below it). With `replace`,
    /// an existing target is replaced as rename(2) does.
    Rename { from: String, to: String, replace: bool },
    /// Change the stored mode bits and/or mtime.
    SetAttr { name: String, mode: Option<u32>, mtime_ns: Option<i64> },
    /// Members, leader, term, quorum and load.
    Status,
    /// "Your copy of this blob failed its hash at my end": the node re-checks
    /// it and, if it is bad, moves it aside and fetches a good copy.
    ReportCorrupt { key: Key, version: Version },

    // Anti-entropy between nodes (see the node's store::digest).
    /// The 256 bucket digests of the receiver's index: `Digests`.
    Digests,
    /// Every (key, version) in one bucket: `Versions`.
    BucketVersions { bucket: u8 },
    /// The entries of these keys the receiver has: `Entries`.
    EntriesFor { keys: Vec<Key> },
    /// Entries the sender has and the receiver lacked or had older; applied
    /// if newer (versions decide, so this is safe from anyone in the cluster).
    Offer { entries: Vec<Entry> },
    /// From the leader, once every node has them: forget these tombstones.
    Purge { term: Term, leader: NodeId, items: Vec<(Key, Version)> },

    // Between nodes only.
    /// Store the content of `entry` durably (bytes + `End` follow) and answer
    /// `Done`; the entry itself (with its final size and hash) is committed
    /// later by an `Apply`. `size` is the exact byte count when known.
    Replicate { term: Term, leader: NodeId, entry: Entry, size: Option<u64> },
    /// Commit these entries (metadata) in one transaction.
    Apply { term: Term, leader: NodeId, entries: Vec<Entry> },
    /// Every entry newer than `since`: answered with `Pulled` frames. With
    /// `fence` (a new leader catching up), the receiver first moves to that
    /// term and stops accepting writes from older ones.
    Pull { since: Version, fence: Option<(Term, NodeId)> },
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
}

/// A response to a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Done, nothing to report.
    Done,
    /// Go ahead and stream the bytes.
    Ready,
    /// The entry as committed (upload, mkdir, setattr) or found (stat).
    Stored(Entry),
    /// `Stat` of a name that does not exist.
    Missing,
    /// A batch of a directory listing; `more` says another follows.
    Listing {
        entries: Vec<Entry>,
        more: bool,
    },
    /// `len` bytes of `entry` from `offset` follow as data frames, then `End`.
    Content {
        entry: Entry,
        offset: u64,
        len: u64,
    },
    /// This node does not keep the content: ask one of these holders with `ReadBlob`.
    Redirect {
        entry: Entry,
        holders: Vec<HolderAddr>,
    },
    Status(StatusReport),
    /// A batch of entries newer than the asked version; when `more` is false,
    /// `watermark` is a version up to which the sender had nothing in flight.
    Pulled {
        entries: Vec<Entry>,
        more: bool,
        watermark: Version,
    },
    Digests(Vec<u64>),
    Versions(Vec<(Key, Version)>),
    Entries(Vec<Entry>),
    Error(WireError),
}

impl Response {
    pub fn error(e: &crate::Error) -> Response {
        Response::Error(e.to_wire())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Kind;

    #[test]
    fn messages_round_trip_through_msgpack() {
        let entry = Entry {
            name: "un été/ça.txt".into(),
            version: Version::new(Term(3), 9),
            kind: Kind::File,
            size: 12,
            hash: ContentHash([5; 32]),
            mode: 0o755,
            mtime_ns: 1_700_000_000_123_456_789,
            deleted: false,
            holders: vec![NodeId(1), NodeId(3)],
        };
        let msgs = vec![
            Message::Request(Request::Replicate {
                term: Term(3),
                leader: NodeId(3),
                entry: entry.clone(),
                size: Some(12),
            }),
            Message::Response(Response::Listing { entries: vec![entry], more: false }),
            Message::End { hash: ContentHash([9; 32]) },
        ];
        for m in msgs {
            let bytes = rmp_serde::to_vec(&m).unwrap();
            let back: Message = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(back, m);
        }
    }
}
