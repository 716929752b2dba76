//! Writes the seed corpus of every fuzz target into `corpus/<target>/`: a
//! few valid encodings each, plus the malformed shapes worth starting from.
//! Run from `fuzz/`: `cargo run --example seed_corpus`. Deterministic, so
//! re-running it changes nothing in the repository.

use std::fs;
use std::path::Path;

use scs_common::auth::ClusterKey;
use scs_common::error::WireError;
use scs_common::proto::frame::{self, FrameKind};
use scs_common::proto::gossip::{self, Envelope, Gossip, Heartbeat, NodeInfo, Role};
use scs_common::inode::{Bytes, DirEntry, NewNode, Removal, RenameMode, SetAttrs, TimeSet, XattrMode};
use scs_common::locks::{FileLock, LockAnswer, LockKind, SessionId};
use scs_common::proto::rpc::{Message, Request, Response, Target, UploadSpec};
use scs_common::{ContentHash, Dentry, Ino, Inode, Key, Kind, NodeId, Record, Term, Version};

fn inode(ino: u64) -> Inode {
    let mut i = Inode::new(Ino(ino), Kind::File, 0o644, 1000, 1000, 1_700_000_000_123_456_789);
    i.version = Version::new(Term(3), 9);
    i.content = i.version;
    i.size = 12;
    i.hash = ContentHash([5; 32]);
    i.holders = vec![NodeId(1), NodeId(3)];
    i.xattrs.insert("user.comment".into(), Bytes(b"hi".to_vec()));
    i
}

fn dentry(name: &str) -> Record {
    Record::Dentry(Dentry {
        parent: Ino::ROOT,
        name: name.into(),
        version: Version::new(Term(3), 10),
        child: Ino(7),
        kind: Kind::File,
        deleted: false,
        stamp_ns: 1,
    })
}

fn messages() -> Vec<(&'static str, Message)> {
    let r = |req| Message::Request(req);
    let spec = |target| UploadSpec::new(target, Some(5), 0o644, 1);
    let node = NewNode { kind: Kind::Symlink, mode: 0o777, uid: 0, gid: 0, rdev: 0, target: "../a".into() };
    vec![
        ("upload-path", r(Request::Upload(spec(Target::Path("photos/cat.png".into()))))),
        ("upload-new", r(Request::Upload(spec(Target::New { parent: Ino(1), name: "n".into(), ino: Ino(9) })))),
        ("upload-ino", r(Request::Upload(spec(Target::Ino(Ino(9)))))),
        ("download", r(Request::Download { path: "un été/ça.txt".into(), offset: 3, len: Some(4) })),
        ("read", r(Request::Read { ino: Ino(7), offset: 0, len: None })),
        ("read-blob", r(Request::ReadBlob { ino: Ino(7), content: Version::new(Term(1), 2), offset: 0, len: None })),
        ("resolve", r(Request::Resolve { path: "a/b".into(), follow: true })),
        ("lookup", r(Request::Lookup { parent: Ino::ROOT, name: "a".into() })),
        ("getattr", r(Request::GetAttr { ino: Ino(7) })),
        ("readdir", r(Request::ReadDir { dir: Ino::ROOT })),
        ("make", r(Request::Make { parent: Ino::ROOT, name: "l".into(), node })),
        ("link", r(Request::Link { ino: Ino(7), parent: Ino::ROOT, name: "h".into() })),
        ("remove", r(Request::Remove { parent: Ino::ROOT, name: "f".into(), what: Removal::NonDir })),
        (
            "rename",
            r(Request::Rename {
                parent: Ino::ROOT,
                name: "a".into(),
                new_parent: Ino(5),
                new_name: "c".into(),
                mode: RenameMode::Exchange,
            }),
        ),
        (
            "setattr",
            r(Request::SetAttr {
                ino: Ino(7),
                set: SetAttrs { mode: Some(0o600), atime: Some(TimeSet::Now), ..Default::default() },
            }),
        ),
        (
            "setxattr",
            r(Request::SetXattr { ino: Ino(7), name: "user.a".into(), value: Bytes(vec![1]), mode: XattrMode::Create }),
        ),
        ("reserve", r(Request::ReserveInodes { count: 256 })),
        ("status", r(Request::Status)),
        ("offer", r(Request::Offer { records: vec![Record::Inode(inode(7)), dentry("y")] })),
        ("purge", r(Request::Purge { term: Term(4), leader: NodeId(3), items: vec![(Key([2; 32]), Version::ZERO)] })),
        (
            "replicate",
            r(Request::Replicate {
                term: Term(3),
                leader: NodeId(3),
                ino: Ino(7),
                content: Version::new(Term(3), 9),
                size: Some(12),
            }),
        ),
        ("apply", r(Request::Apply { term: Term(3), leader: NodeId(3), records: vec![dentry("a")] })),
        ("pull", r(Request::Pull { since: Version::new(Term(2), 7), fence: Some((Term(3), NodeId(3))) })),
        ("attr", Message::Response(Response::Attr(inode(8)))),
        (
            "listing",
            Message::Response(Response::Listing {
                entries: vec![DirEntry { name: "l1".into(), inode: inode(9) }],
                more: true,
                version: Some(Version::new(Term(2), 7)),
            }),
        ),
        ("content", Message::Response(Response::Content { inode: inode(10), offset: 0, len: 12 })),
        ("error", Message::Response(Response::Error(WireError { code: 1, message: "no such file: x".into() }))),
        ("end", Message::End { hash: ContentHash([9; 32]) }),
        ("lock", r(Request::Lock { session: SessionId(0xfeed), lock: file_lock() })),
        ("unlock", r(Request::Unlock { session: SessionId(0xfeed), ino: Ino(7), owner: 3, start: 0, end: u64::MAX })),
        ("test-lock", r(Request::TestLock { session: SessionId(0xfeed), lock: file_lock() })),
        ("keep-alive", r(Request::KeepAlive { session: SessionId(0xfeed) })),
        ("reclaim", r(Request::Reclaim { session: SessionId(0xfeed), locks: vec![file_lock(), file_lock()] })),
        ("lock-conflict", Message::Response(Response::Lock(LockAnswer::Conflict { lock: file_lock(), ours: false }))),
        ("lock-grace", Message::Response(Response::Lock(LockAnswer::Grace { retry_ms: 9000 }))),
        ("reclaimed", Message::Response(Response::Reclaimed(vec![file_lock()]))),
    ]
}

fn file_lock() -> FileLock {
    FileLock { ino: Ino(7), owner: 3, start: 100, end: i64::MAX as u64, kind: LockKind::Write, pid: 4242 }
}

fn envelope(msg: Gossip) -> Envelope {
    Envelope {
        from: NodeId(3),
        cluster_size: 3,
        incarnation: 1000,
        seq: 7,
        ts_ms: 1_700_000_000_000,
        info: NodeInfo {
            addr: "127.0.0.1:7783".into(),
            files: 2,
            max_files: Some(10),
            ready: true,
            disk_free: 1 << 30,
            disk_total: 1 << 40,
            wanted: 0,
            corrupt: 0,
            under_replicated: 0,
            ..NodeInfo::default()
        },
        msg,
    }
}

fn envelopes() -> Vec<(&'static str, Envelope)> {
    let hb = Heartbeat { term: Term(4), leader: Some(NodeId(3)), role: Role::Leader, eligible: true };
    vec![
        ("heartbeat", envelope(Gossip::Heartbeat(hb))),
        ("election", envelope(Gossip::Election { term: Term(5) })),
        ("answer", envelope(Gossip::Answer { term: Term(5), to: NodeId(1) })),
        ("coordinator", envelope(Gossip::Coordinator { term: Term(5) })),
    ]
}

fn framed(kind: FrameKind, body: &[u8]) -> Vec<u8> {
    let mut v = frame::header(kind, body.len()).to_vec();
    v.extend_from_slice(body);
    v
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).unwrap_or_else(|e| panic!("write {name}: {e}"));
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let dirs = ["frame", "message", "datagram", "envelope", "name"].map(|t| {
        let d = root.join(t);
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("create the corpus dir");
        d
    });
    let [frame_dir, message_dir, datagram_dir, envelope_dir, name_dir] = &dirs;

    for (name, m) in messages() {
        let compact = rmp_serde::to_vec(&m).expect("encode");
        write(message_dir, name, &compact);
        write(message_dir, &format!("{name}-named"), &rmp_serde::to_vec_named(&m).expect("encode"));
        write(frame_dir, name, &framed(FrameKind::Message, &compact));
    }
    let end = rmp_serde::to_vec(&Message::End { hash: ContentHash([9; 32]) }).expect("encode");
    let mut stream = framed(FrameKind::Data, b"hello world");
    stream.extend_from_slice(&framed(FrameKind::Message, &end));
    write(frame_dir, "data-then-end", &stream);
    write(frame_dir, "empty-data", &framed(FrameKind::Data, b""));
    write(frame_dir, "truncated", &framed(FrameKind::Message, &end)[..20]);
    write(frame_dir, "oversized", &[0xff, 0xff, 0xff, 0xff, 1]);
    write(frame_dir, "unknown-kind", &[0, 0, 0, 1, 9, 0]);

    // Real datagrams, but sealed under another key than the target's.
    let other = ClusterKey::from_bytes([8; 32]);
    for (name, env) in envelopes() {
        write(datagram_dir, name, &gossip::encode(&other, &env));
        write(envelope_dir, name, &rmp_serde::to_vec(&env).expect("encode"));
    }

    let names: [(&str, &[u8]); 14] = [
        ("plain", b"photos/cat.png"),
        ("unicode", "un été/ça va.txt".as_bytes()),
        ("dotdot", b"a/../b"),
        ("dot", b"./a/./b"),
        ("empty-component", b"a//b/"),
        ("absolute", b"/etc/passwd"),
        ("nul", b"a\0b"),
        ("not-utf8", b"a/\xff\xfe/b"),
        ("hidden", b".hidden/..b"),
        ("empty", b""),
        ("root", b"/"),
        ("long-component", &[b'x'; 256]),
        ("max-component", &[b'x'; 255]),
        ("deep", &[b'a', b'/'].repeat(2100)),
    ];
    for (name, bytes) in names {
        write(name_dir, name, bytes);
    }
    for d in &dirs {
        println!("{}: {} seeds", d.display(), fs::read_dir(d).map(|r| r.count()).unwrap_or(0));
    }
}
