//! Hostile and malformed input, from the network and from users: every bad
//! input gets a clear error and changes nothing (the namespace, the blob
//! files on every node, no temp file left behind), and garbage or
//! slow-loris connections leave the cluster serving everyone else.
//!
//! Most cases speak the protocol directly through `scs_common::conn`,
//! authenticated with the cluster key, to send what the `scs` CLI never
//! would: malformed frames, half uploads, wrong hashes, names with NUL,
//! inode numbers nobody handed out, records only nodes may send.
//! Every packet goes to 127.0.0.1.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::ffi::OsStringExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use scs_common::auth::ClusterKey;
use scs_common::conn::{Chunk, Connection};
use scs_common::inode::{Bytes, NewNode, Removal, RenameMode, SetAttrs, TimeSet, XattrMode};
use scs_common::proto::frame::{self, FrameKind};
use scs_common::proto::rpc::{Message, Peer, Request, Response, Target, UploadSpec};
use scs_common::{name, secure, ErrorCode};
use scs_common::{ContentHash, Dentry, Error, Ino, Inode, Key, Kind, NodeId, Record, Term, Version};
use scs_tests::{eventually, seeded_bytes, Cluster, StopOnDrop};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a node may take to clean up after a broken transfer.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);
/// An inode number far past any a leader of these tests hands out.
const NEVER_HANDED_OUT: Ino = Ino(1 << 50);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
}

fn key(c: &Cluster) -> ClusterKey {
    ClusterKey::load(c.key_file()).expect("load the cluster key")
}

fn hash(bytes: &[u8]) -> ContentHash {
    ContentHash(Sha256::digest(bytes).into())
}

/// A client session with node `addr`, authenticated with the cluster key.
async fn session(addr: &str, key: &ClusterKey) -> Connection {
    session_as(addr, key, Peer::Client).await
}

/// A session with node `addr` as `peer`: anyone with the cluster key may
/// say it is a node.
async fn session_as(addr: &str, key: &ClusterKey, peer: Peer) -> Connection {
    let (conn, _) = Connection::connect(addr, key, peer, CONNECT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr} as {peer:?}: {e}"));
    conn
}

/// Sends one request on a fresh session and returns the answer.
async fn call(addr: &str, key: &ClusterKey, req: Request) -> Result<Response, Error> {
    let mut conn = session(addr, key).await;
    conn.send(&Message::Request(req)).await?;
    conn.recv_response().await
}

/// What the CLI sends to upload `size` bytes to `path`.
fn path_spec(path: &str, size: Option<u64>) -> UploadSpec {
    UploadSpec::new(Target::Path(path.into()), size, 0o644, 1)
}

/// What `Make` makes: a `kind` owned by root, with a symlink's `target`.
fn new_node(kind: Kind, target: &str) -> NewNode {
    NewNode { kind, mode: 0o755, uid: 0, gid: 0, rdev: 0, target: target.into() }
}

/// Sends `spec`, then `bytes` and their hash, on a fresh session: the
/// stored inode, or the error (refused before `Ready` or after the bytes).
async fn store(addr: &str, key: &ClusterKey, spec: UploadSpec, bytes: &[u8]) -> Result<Inode, Error> {
    let (mut conn, _) = Connection::connect(addr, key, Peer::Client, CONNECT_TIMEOUT).await?;
    conn.send(&Message::Request(Request::Upload(spec))).await?;
    match conn.recv_response().await? {
        Response::Ready => {}
        other => panic!("expected Ready, got {other:?}"),
    }
    for chunk in bytes.chunks(scs_common::CHUNK_SIZE) {
        conn.write_data(chunk).await?;
    }
    conn.send(&Message::End { hash: hash(bytes) }).await?;
    let answer = conn.recv_response().await?;
    match stored_inode(&answer) {
        Some(i) => Ok(i.clone()),
        None => panic!("expected the stored inode, got {answer:?}"),
    }
}

/// The file an upload's answer says it stored (its first inode).
fn stored_inode(answer: &Response) -> Option<&Inode> {
    match answer {
        Response::Changed(c) => c.inodes.first(),
        _ => None,
    }
}

/// Uploads `bytes` to `path` on a fresh session, as the CLI does.
async fn upload(addr: &str, key: &ClusterKey, path: &str, bytes: &[u8]) -> Result<Inode, Error> {
    store(addr, key, path_spec(path, Some(bytes.len() as u64)), bytes).await
}

/// Receives a `Content` answer and its bytes.
async fn receive_content(conn: &mut Connection) -> Result<Vec<u8>, Error> {
    let want = match conn.recv_response().await? {
        Response::Content { len, .. } => len,
        other => panic!("expected Content, got {other:?}"),
    };
    let mut got = Vec::new();
    while let Chunk::Data(d) = conn.recv_chunk().await? {
        got.extend_from_slice(&d);
    }
    assert_eq!(got.len() as u64, want, "Content announced {want} bytes, {} came", got.len());
    Ok(got)
}

/// Downloads `path` (or a range of it) on a fresh session.
async fn download(addr: &str, key: &ClusterKey, path: &str, offset: u64, len: Option<u64>) -> Result<Vec<u8>, Error> {
    let (mut conn, _) = Connection::connect(addr, key, Peer::Client, CONNECT_TIMEOUT).await?;
    conn.send(&Message::Request(Request::Download { path: path.into(), offset, len })).await?;
    receive_content(&mut conn).await
}

/// The inode at `path` on node `addr` (a symlink at the end not followed).
async fn resolve(addr: &str, key: &ClusterKey, path: &str) -> Option<Inode> {
    match call(addr, key, Request::Resolve { path: path.into(), follow: false }).await {
        Ok(Response::Attr(i)) => Some(i),
        Ok(Response::Missing) => None,
        other => panic!("resolve {path:?}: {other:?}"),
    }
}

/// Every live inode reachable from the root on node `addr`, with its path
/// ("" for the root itself), walked by inode number as the mount walks it.
async fn namespace(addr: &str, key: &ClusterKey) -> Vec<(String, Inode)> {
    let mut conn = session(addr, key).await;
    conn.send(&Message::Request(Request::Resolve { path: String::new(), follow: false })).await.expect("send Resolve");
    let root = match conn.recv_response().await.expect("Resolve answered") {
        Response::Attr(i) => i,
        other => panic!("expected the root's Attr, got {other:?}"),
    };
    let mut dirs = vec![(String::new(), root.ino)];
    let mut all = vec![(String::new(), root)];
    while let Some((dir, ino)) = dirs.pop() {
        conn.send(&Message::Request(Request::ReadDir { dir: ino })).await.expect("send ReadDir");
        loop {
            match conn.recv_response().await.expect("ReadDir answered") {
                Response::Listing { entries, more, .. } => {
                    for e in entries {
                        let path = name::join(&dir, &e.name);
                        if e.inode.is_dir() {
                            dirs.push((path.clone(), e.inode.ino));
                        }
                        all.push((path, e.inode));
                    }
                    if !more {
                        break;
                    }
                }
                other => panic!("expected Listing, got {other:?}"),
            }
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// What a bad input must not change: every inode reachable from the root
/// with its path (with its version, so even a touched mtime or ctime
/// shows), and the blob files of every node.
#[derive(Debug, PartialEq)]
struct Snapshot {
    entries: Vec<(String, Inode)>,
    blobs: BTreeMap<u32, Vec<String>>,
}

fn temp_files(c: &Cluster, id: u32) -> Vec<String> {
    std::fs::read_dir(c.data_dir(id).join("tmp"))
        .map(|d| d.flatten().map(|f| f.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

fn snapshot(c: &Cluster, rt: &tokio::runtime::Runtime, addr: &str) -> Snapshot {
    let entries = rt.block_on(namespace(addr, &key(c)));
    let blobs = (1..=c.size()).map(|id| (id, c.blob_names(id))).collect();
    Snapshot { entries, blobs }
}

/// Waits for every node's temp dir to empty, then asserts that nothing
/// else changed since `before` (as node `addr` sees it), and that no node died.
#[track_caller]
fn assert_unchanged(c: &Cluster, rt: &tokio::runtime::Runtime, addr: &str, before: &Snapshot, after_what: &str) {
    for id in 1..=c.size() {
        eventually(&format!("node {id}'s temp files to be removed after {after_what}"), CLEANUP_TIMEOUT, || {
            temp_files(c, id).is_empty()
        });
    }
    let now = snapshot(c, rt, addr);
    assert_eq!(now.entries, before.entries, "the namespace changed after {after_what}");
    assert_eq!(now.blobs, before.blobs, "blob files changed after {after_what}");
    c.assert_no_node_died();
}

/// Asserts `res` is the error `code` with a message containing `needle`.
#[track_caller]
fn assert_error<T: std::fmt::Debug>(res: Result<T, Error>, code: ErrorCode, needle: &str, what: &str) {
    match res {
        Err(e) if e.code() == code && e.to_string().contains(needle) => println!("{what}: {e}"),
        other => panic!("{what}: expected a {code:?} error containing {needle:?}, got {other:?}"),
    }
}

/// Whether the peer closed `conn` (EOF, reset, or only an error then EOF)
/// within `within`.
async fn closed_within(conn: &mut Connection, within: Duration) -> bool {
    conn.set_read_timeout(Some(within));
    loop {
        match conn.read_frame().await {
            Ok(None) => return true,
            Ok(Some(_)) => continue,
            Err(Error::Unavailable(m)) if m.contains("sent nothing") => return false,
            Err(_) => return true,
        }
    }
}

/// A request's kind, for messages (its Debug may hold a 4 KiB name).
fn request_name(r: &Request) -> String {
    let debug = format!("{r:?}");
    debug.split([' ', '(']).next().unwrap_or_default().to_string()
}

/// The 256 bucket digests of node `addr`'s whole index, asked as a node.
async fn digests(addr: &str, key: &ClusterKey) -> Vec<u64> {
    let mut conn = session_as(addr, key, Peer::Node(NodeId(1))).await;
    conn.send(&Message::Request(Request::Digests)).await.expect("send Digests");
    match conn.recv_response().await {
        Ok(Response::Digests(d)) => d,
        other => panic!("Digests of {addr}: {other:?}"),
    }
}

/// The inode numbers a new file's upload may name: `count` from the leader.
fn reserve_inodes(rt: &tokio::runtime::Runtime, leader: &str, key: &ClusterKey, count: u32) -> (Ino, u32) {
    match rt.block_on(call(leader, key, Request::ReserveInodes { count })) {
        Ok(Response::Inodes { first, count }) => (first, count),
        other => panic!("ReserveInodes {{ count: {count} }}: {other:?}"),
    }
}

/// Paths that break a rule of DESIGN section 2, with the error each gets:
/// what `Resolve`, `Download` and an upload to a path are checked against.
fn bad_paths() -> Vec<(String, ErrorCode)> {
    use ErrorCode::{BadName, NameTooLong};
    vec![
        (String::new(), BadName),
        ("/etc/passwd".into(), BadName),
        ("a//b".into(), BadName),
        ("a/".into(), BadName),
        ("a/./b".into(), BadName),
        ("a/../b".into(), BadName),
        ("..".into(), BadName),
        (".".into(), BadName),
        ("a\0b".into(), BadName),
        ("dir/\0".into(), BadName),
        ("n".repeat(256), NameTooLong),
        (format!("d/{}", "é".repeat(128)), NameTooLong),
        (vec!["p".repeat(200); 21].join("/"), NameTooLong),
    ]
}

/// Names that are no single path component, with the error each gets:
/// what every request naming a directory and a name in it is checked against.
fn bad_components() -> Vec<(String, ErrorCode)> {
    use ErrorCode::{BadName, NameTooLong};
    vec![
        (String::new(), BadName),
        (".".into(), BadName),
        ("..".into(), BadName),
        ("/".into(), BadName),
        ("a/b".into(), BadName),
        // A path where a name belongs is not walked.
        ("kept/a.txt".into(), BadName),
        ("/etc".into(), BadName),
        ("a/".into(), BadName),
        ("a\0b".into(), BadName),
        ("\0".into(), BadName),
        ("n".repeat(256), NameTooLong),
        ("é".repeat(128), NameTooLong),
        (format!("x/{}", "y".repeat(300)), NameTooLong),
    ]
}

#[test]
fn bad_names_are_refused_by_the_cli_and_by_the_node_and_change_nothing() {
    let c = Cluster::start(3);
    let rt = runtime();
    let k = key(&c);
    let leader = c.node_addr(3);
    c.upload_bytes("kept/a.txt", b"kept");
    c.scs(&["mkdir", "empty"]).assert_ok();
    let kept = rt.block_on(resolve(&leader, &k, "kept")).expect("kept exists");
    let a = rt.block_on(resolve(&leader, &k, "kept/a.txt")).expect("kept/a.txt exists");
    // A number really reserved, so a new file's upload is refused for its name alone.
    let (reserved, _) = reserve_inodes(&rt, &leader, &k, 1);
    let before = snapshot(&c, &rt, &leader);

    // What a user can type. (argv cannot hold a NUL: those go by protocol below.)
    c.try_upload_bytes("a/../b", b"1").assert_one_line_error("bad name");
    c.try_upload_bytes("..", b"1").assert_one_line_error("bad name");
    c.try_upload_bytes(&"n".repeat(256), b"1").assert_one_line_error("name too long");
    c.try_upload_bytes(&vec!["p".repeat(200); 21].join("/"), b"1").assert_one_line_error("name too long");
    c.scs(&["mkdir", "x/../.."]).assert_one_line_error("bad name");
    c.scs(&["mv", "kept/a.txt", "../a.txt"]).assert_one_line_error("bad name");
    c.scs(&["mv", "kept/a.txt", "/"]).assert_one_line_error("bad name");
    c.scs(&["rm", "kept/.."]).assert_one_line_error("bad name");
    // Bytes that are not UTF-8 are refused as bad usage before anything is sent.
    let mut args: Vec<OsString> = vec!["mv".into(), "kept/a.txt".into()];
    args.push(OsString::from_vec(b"bad-\xff\xfe.txt".to_vec()));
    let out = c.scs_os(&args);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("UTF-8"), "{out}");

    // What only a hostile or buggy client sends, straight to the leader,
    // which must check names itself. First every request that takes a path.
    let mut refused = 0;
    let mut expect_refusal = |req: Request, code: ErrorCode, bad: &str| {
        let what = format!("{} of {:?}", request_name(&req), bad.get(..40).unwrap_or(bad));
        match rt.block_on(call(&leader, &k, req)) {
            Err(e) if e.code() == code => refused += 1,
            other => panic!("{what}: expected {code:?}, got {other:?}"),
        }
    };
    for (bad, code) in bad_paths() {
        expect_refusal(Request::Upload(path_spec(&bad, Some(1))), code, &bad);
        // "" is the root for these two: answered below.
        if !bad.is_empty() {
            expect_refusal(Request::Download { path: bad.clone(), offset: 0, len: None }, code, &bad);
            expect_refusal(Request::Resolve { path: bad.clone(), follow: false }, code, &bad);
            expect_refusal(Request::Resolve { path: bad.clone(), follow: true }, code, &bad);
        }
    }
    // Then every request that takes a name in a directory: one component.
    for (bad, code) in bad_components() {
        let rename = |parent: Ino, name: &str, new_parent: Ino, new_name: &str, mode: RenameMode| Request::Rename {
            parent,
            name: name.into(),
            new_parent,
            new_name: new_name.into(),
            mode,
        };
        let new_file = Target::New { parent: Ino::ROOT, name: bad.clone(), ino: reserved };
        let reqs = [
            Request::Lookup { parent: Ino::ROOT, name: bad.clone() },
            Request::Lookup { parent: kept.ino, name: bad.clone() },
            Request::Make { parent: Ino::ROOT, name: bad.clone(), node: new_node(Kind::Dir, "") },
            Request::Make { parent: Ino::ROOT, name: bad.clone(), node: new_node(Kind::File, "") },
            Request::Make { parent: kept.ino, name: bad.clone(), node: new_node(Kind::Symlink, "a.txt") },
            Request::Link { ino: a.ino, parent: Ino::ROOT, name: bad.clone() },
            Request::Remove { parent: Ino::ROOT, name: bad.clone(), what: Removal::Any },
            Request::Remove { parent: kept.ino, name: bad.clone(), what: Removal::NonDir },
            Request::Remove { parent: Ino::ROOT, name: bad.clone(), what: Removal::Dir },
            rename(Ino::ROOT, "kept", Ino::ROOT, &bad, RenameMode::Replace),
            rename(Ino::ROOT, &bad, Ino::ROOT, "elsewhere", RenameMode::Replace),
            rename(kept.ino, "a.txt", Ino::ROOT, &bad, RenameMode::NoReplace),
            rename(Ino::ROOT, "empty", kept.ino, &bad, RenameMode::Exchange),
            Request::Upload(UploadSpec::new(new_file, Some(1), 0o644, 0)),
        ];
        for req in reqs {
            expect_refusal(req, code, &bad);
        }
    }
    println!("the leader refused {refused} requests with bad paths or names, each with BadName or NameTooLong");

    // "" is the root: found, and no file to download.
    let root = rt.block_on(call(&leader, &k, Request::Resolve { path: String::new(), follow: true }));
    assert!(matches!(&root, Ok(Response::Attr(i)) if i.ino == Ino::ROOT && i.is_dir()), "Resolve of \"\": {root:?}");
    assert_error(
        rt.block_on(download(&leader, &k, "", 0, None)),
        ErrorCode::IsDir,
        "is a directory",
        "Download of \"\"",
    );

    // A path or a name that is not UTF-8 on the wire: the message does not
    // decode, the session is told so and closed.
    let not_utf8 = [
        Request::Resolve { path: "kept/XY".into(), follow: false },
        Request::Lookup { parent: kept.ino, name: "XY".into() },
        Request::Make { parent: Ino::ROOT, name: "XY".into(), node: new_node(Kind::Dir, "") },
    ];
    for req in not_utf8 {
        let what = format!("a name that is not UTF-8 in {}", request_name(&req));
        let res = rt.block_on(async {
            let mut body = rmp_serde::to_vec(&Message::Request(req)).unwrap();
            let at = body.windows(2).position(|w| w == b"XY").unwrap();
            body[at..at + 2].copy_from_slice(&[0xff, 0xfe]);
            let mut conn = session(&leader, &k).await;
            conn.send_raw(&[&frame::header(FrameKind::Message, body.len())[..], &body].concat()).await?;
            let res = conn.recv_response().await;
            assert!(closed_within(&mut conn, Duration::from_secs(5)).await, "{what}: the session stayed open");
            res
        });
        assert_error(res, ErrorCode::Protocol, "undecodable message", &what);
    }

    assert_unchanged(&c, &rt, &leader, &before, "bad names");
    c.assert_content("kept/a.txt", b"kept");
}

#[test]
fn malformed_frames_and_messages_get_a_protocol_error_and_close_only_that_session() {
    let c = Cluster::start(3);
    let rt = runtime();
    let k = key(&c);
    let leader = c.node_addr(3);
    c.upload_bytes("kept.bin", &seeded_bytes(500, 200_000));
    let before = snapshot(&c, &rt, &leader);
    let before_status = c.status();

    let message = |m: &Message| {
        let body = rmp_serde::to_vec(m).unwrap();
        [&frame::header(FrameKind::Message, body.len())[..], &body].concat()
    };
    let raw_message = |body: &[u8]| [&frame::header(FrameKind::Message, body.len())[..], body].concat();
    let resolve_kept = Message::Request(Request::Resolve { path: "kept.bin".into(), follow: false });
    // {"Request": {"Frobnicate": []}}: a well-formed message of a kind nobody knows.
    let mut unknown_request = vec![0x81, 0xa7];
    unknown_request.extend_from_slice(b"Request");
    unknown_request.extend_from_slice(&[0x81, 0xaa]);
    unknown_request.extend_from_slice(b"Frobnicate");
    unknown_request.push(0x90);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("an unknown frame kind", vec![0, 0, 0, 4, 9, 1, 2, 3, 4], "unknown frame kind 9"),
        ("a 4 GiB message length", vec![0xff, 0xff, 0xff, 0xff, 1], "over the limit"),
        (
            "a message 1 byte over the limit",
            frame::header(FrameKind::Message, frame::MAX_MESSAGE + 1).to_vec(),
            "over the limit",
        ),
        ("a data frame over the limit", frame::header(FrameKind::Data, frame::MAX_DATA + 1).to_vec(), "over the limit"),
        ("a message that is not msgpack", raw_message(&[0xc1, 0xc1, 0xc1]), "undecodable message"),
        ("an unknown request", raw_message(&unknown_request), "undecodable message"),
        (
            "an unknown top-level message",
            raw_message(&[0x81, 0xa5, b'H', b'e', b'l', b'l', b'o', 0xc0]),
            "undecodable message",
        ),
        ("an empty message", raw_message(&[]), "undecodable message"),
        (
            "a message cut short inside its body",
            {
                let mut m = message(&resolve_kept);
                let body_len = m.len() - frame::HEADER_LEN;
                m.truncate(m.len() - 3);
                m[..4].copy_from_slice(&((body_len - 3) as u32).to_be_bytes());
                m
            },
            "undecodable message",
        ),
        (
            "a data frame instead of a request",
            [&frame::header(FrameKind::Data, 3)[..], b"abc"].concat(),
            "expected a request",
        ),
        ("a response instead of a request", message(&Message::Response(Response::Done)), "expected a request"),
        ("an End instead of a request", message(&Message::End { hash: hash(b"x") }), "expected a request"),
    ];
    for (what, bytes, needle) in &cases {
        let res = rt.block_on(async {
            let mut conn = session(&leader, &k).await;
            conn.send_raw(bytes).await?;
            let res = conn.recv_response().await;
            assert!(closed_within(&mut conn, Duration::from_secs(5)).await, "{what}: the session stayed open");
            res
        });
        assert_error(res, ErrorCode::Protocol, needle, what);
    }

    // Requests only nodes may send, from a client: refused, session kept.
    // The records would make a file "forged.txt" in the root.
    let forged = NEVER_HANDED_OUT;
    let mut inode = Inode::new(forged, Kind::File, 0o644, 0, 0, 0);
    inode.version = Version::new(Term(999), 1);
    inode.holders = vec![NodeId(1)];
    let dentry = Dentry {
        parent: Ino::ROOT,
        name: "forged.txt".into(),
        version: Version::new(Term(999), 2),
        child: forged,
        kind: Kind::File,
        deleted: false,
        stamp_ns: 0,
    };
    let records = vec![Record::Inode(inode.clone()), Record::Dentry(dentry.clone())];
    let node_only = [
        Request::Apply { term: Term(999), leader: NodeId(3), records: records.clone() },
        Request::Offer { records },
        Request::Purge { term: Term(999), leader: NodeId(3), items: vec![(dentry.key(), dentry.version)] },
        Request::Replicate { term: Term(999), leader: NodeId(3), ino: forged, content: inode.version, size: Some(0) },
        Request::Pull { since: Version::ZERO, fence: Some((Term(999), NodeId(3))) },
        Request::Digests,
        Request::BucketVersions { bucket: 0 },
        Request::RecordsFor { keys: vec![Key::of_ino(Ino::ROOT), dentry.key()] },
    ];
    rt.block_on(async {
        let mut conn = session(&leader, &k).await;
        for req in node_only {
            let what = request_name(&req);
            conn.send(&Message::Request(req)).await.unwrap();
            assert_error(conn.recv_response().await, ErrorCode::Invalid, "only nodes", &what);
        }
        // The same session still serves ordinary requests.
        conn.send(&Message::Request(Request::Status)).await.unwrap();
        assert!(matches!(conn.recv_response().await, Ok(Response::Status(_))));
    });

    // A frame cut off by the client going away: the node notes it and moves on.
    rt.block_on(async {
        let mut conn = session(&leader, &k).await;
        let m = message(&resolve_kept);
        conn.send_raw(&m[..m.len() - 4]).await.unwrap();
    });
    // Noted at debug level, which the harness logs unless SCS_NODE_LOG says otherwise.
    if std::env::var_os("SCS_NODE_LOG").is_none() {
        eventually("the leader to log the frame cut short", Duration::from_secs(5), || {
            c.log_tail(3, 200).contains("closed the connection in the middle of a frame")
        });
    }

    assert_unchanged(&c, &rt, &leader, &before, "malformed frames");
    let s = c.status();
    assert_eq!((s.leader, s.term), (before_status.leader, before_status.term), "{s:?}");
    c.assert_content("kept.bin", &seeded_bytes(500, 200_000));
}

#[test]
fn a_peer_speaking_another_protocol_version_gets_ours_and_is_closed() {
    let c = Cluster::start(3);
    let leader = c.node_addr(3);
    let before = c.status();
    let ours = scs_common::PROTOCOL_VERSION;
    for version in [0u16, ours - 1, ours + 1, 0xffff] {
        let mut s = TcpStream::connect(&leader).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut preamble = secure::MAGIC.to_vec();
        preamble.extend_from_slice(&version.to_be_bytes());
        s.write_all(&preamble).unwrap();
        let mut theirs = [0u8; secure::PREAMBLE_LEN];
        s.read_exact(&mut theirs).unwrap();
        assert_eq!(theirs, secure::preamble(), "the node did not say which version it speaks");
        let mut rest = [0u8; 64];
        match s.read(&mut rest) {
            Ok(0) => {}
            Err(e) if e.kind() != ErrorKind::WouldBlock && e.kind() != ErrorKind::TimedOut => {}
            other => panic!("version {version}: the connection stayed open ({other:?})"),
        }
        println!("version {version}: the node answered with version {ours} and closed the connection");
    }
    // The other way round: a "node" that speaks the next version gets a
    // client that says so and gives up at once.
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fake_addr = fake.local_addr().unwrap().to_string();
    let answered = thread::spawn(move || {
        let (mut s, _) = fake.accept().unwrap();
        let mut theirs = [0u8; secure::PREAMBLE_LEN];
        s.read_exact(&mut theirs).unwrap();
        let mut next = secure::MAGIC.to_vec();
        next.extend_from_slice(&(ours + 1).to_be_bytes());
        s.write_all(&next).unwrap();
        theirs
    });
    let out = c.scs_at(&fake_addr, &["status"]);
    out.assert_one_line_error(&format!("protocol version {} is not supported", ours + 1));
    assert!(out.elapsed < Duration::from_secs(5), "{out}");
    assert_eq!(answered.join().unwrap(), secure::preamble());

    // The CLI, which speaks our version, is served as before.
    c.upload_bytes("after.txt", b"after");
    c.assert_content("after.txt", b"after");
    let now = c.status();
    assert_eq!((now.leader, now.term), (before.leader, before.term));
    c.assert_no_node_died();
}

#[test]
fn records_a_peer_node_sends_are_checked_and_a_stale_or_forged_leader_is_refused() {
    let c = Cluster::start(3);
    let rt = runtime();
    let k = key(&c);
    let leader = c.node_addr(3);
    let follower = c.node_addr(2);
    c.upload_bytes("kept.bin", b"kept");
    let status = c.status();
    assert_eq!(status.leader, Some(3), "{status:?}");
    let term = Term(status.term);
    let before = snapshot(&c, &rt, &leader);
    // A follower serves no reads to clients: its whole index is compared
    // through the digests it gives nodes, once it has caught up.
    eventually("the follower to catch up with the leader", Duration::from_secs(10), || {
        rt.block_on(digests(&follower, &k)) == rt.block_on(digests(&leader, &k))
    });
    let before_digests = rt.block_on(digests(&follower, &k));

    // Records that would make a file in the root, under a name that is no
    // single component, at a version that would win everywhere.
    let forged = NEVER_HANDED_OUT;
    let mut inode = Inode::new(forged, Kind::File, 0o644, 0, 0, 0);
    inode.version = Version::new(Term(term.0 + 1000), 1);
    let dentry = |name: &str| Dentry {
        parent: Ino::ROOT,
        name: name.into(),
        version: Version::new(Term(term.0 + 1000), 2),
        child: forged,
        kind: Kind::File,
        deleted: false,
        stamp_ns: 0,
    };
    // What a node holds of these keys, asked as a node.
    let records_for = |addr: &str, keys: Vec<Key>| {
        rt.block_on(async {
            let mut conn = session_as(addr, &k, Peer::Node(NodeId(1))).await;
            conn.send(&Message::Request(Request::RecordsFor { keys })).await.unwrap();
            match conn.recv_response().await {
                Ok(Response::Records(r)) => r,
                other => panic!("RecordsFor: {other:?}"),
            }
        })
    };

    rt.block_on(async {
        for addr in [&leader, &follower] {
            let mut conn = session_as(addr, &k, Peer::Node(NodeId(1))).await;
            for (bad, code) in bad_components() {
                // The valid inode goes first: it must not be applied either.
                let records = vec![Record::Inode(inode.clone()), Record::Dentry(dentry(&bad))];
                let what = format!("Offer of an entry named {:?}", bad.get(..40).unwrap_or(&bad));
                conn.send(&Message::Request(Request::Offer { records: records.clone() })).await.unwrap();
                assert_error(conn.recv_response().await, code, "", &what);
                // Checked before the term: refused even from the leader of this term.
                let what = format!("Apply of an entry named {:?}", bad.get(..40).unwrap_or(&bad));
                conn.send(&Message::Request(Request::Apply { term, leader: NodeId(3), records })).await.unwrap();
                assert_error(conn.recv_response().await, code, "", &what);
            }
        }
    });
    for addr in [&leader, &follower] {
        let mut keys = vec![Key::of_ino(forged)];
        keys.extend(bad_components().iter().map(|(bad, _)| Key::of_dentry(Ino::ROOT, bad)));
        let found = records_for(addr, keys);
        assert!(found.is_empty(), "{addr} applied part of a refused batch: {found:?}");
    }

    // Well-formed records from a leader that is not the leader of this
    // term, or from an earlier term: refused by the follower.
    let records = vec![Record::Inode(inode.clone()), Record::Dentry(dentry("forged.txt"))];
    rt.block_on(async {
        let mut conn = session_as(&follower, &k, Peer::Node(NodeId(1))).await;
        let stale = Term(term.0.checked_sub(1).expect("a leader's term is at least 1"));
        for (what, req) in [
            (
                "Apply from node 1 as leader of the current term",
                Request::Apply { term, leader: NodeId(1), records: records.clone() },
            ),
            ("Apply from an earlier term", Request::Apply { term: stale, leader: NodeId(3), records: records.clone() }),
            (
                "Purge from an earlier term",
                Request::Purge { term: stale, leader: NodeId(3), items: vec![(Key::of_ino(Ino::ROOT), Version::ZERO)] },
            ),
        ] {
            conn.send(&Message::Request(req)).await.unwrap();
            assert_error(conn.recv_response().await, ErrorCode::Stale, "", what);
        }
        // A blob from an earlier term: refused before a byte is read, and
        // the session closed (the bytes would follow right behind).
        let req =
            Request::Replicate { term: stale, leader: NodeId(3), ino: forged, content: inode.version, size: Some(4) };
        conn.send(&Message::Request(req)).await.unwrap();
        assert_error(conn.recv_response().await, ErrorCode::Stale, "", "Replicate from an earlier term");
        assert!(closed_within(&mut conn, Duration::from_secs(5)).await, "the session stayed open after Replicate");
    });
    let found = records_for(&follower, vec![Key::of_ino(forged), Key::of_dentry(Ino::ROOT, "forged.txt")]);
    assert!(found.is_empty(), "the follower applied records of a stale or forged leader: {found:?}");

    assert_unchanged(&c, &rt, &leader, &before, "records refused from a peer node");
    for addr in [&leader, &follower] {
        assert!(rt.block_on(digests(addr, &k)) == before_digests, "the index of {addr} changed");
    }
    // The election noticed nothing: same leader, same term.
    let now = c.status();
    assert_eq!((now.leader, now.term), (status.leader, status.term), "{now:?}");
    c.assert_content("kept.bin", b"kept");
}

/// The records of `keys` node `addr` holds, asked as a node.
async fn records_for(addr: &str, key: &ClusterKey, keys: Vec<Key>) -> Vec<Record> {
    let mut conn = session_as(addr, key, Peer::Node(NodeId(1))).await;
    conn.send(&Message::Request(Request::RecordsFor { keys })).await.unwrap();
    match conn.recv_response().await {
        Ok(Response::Records(r)) => r,
        other => panic!("RecordsFor: {other:?}"),
    }
}

/// A leader's `Apply` can sit in a socket through a partition and reach a
/// follower long after the change it carried was undone: the file deleted,
/// its tombstones purged on every node. Applied then, it would make the
/// deleted file live on that follower, and from there on the leader (found
/// by a fault seed: an upload landed in a file deleted 20 s earlier).
#[test]
fn a_late_copy_of_a_deleted_file_arriving_after_its_tombstones_were_purged_does_not_bring_it_back() {
    let c = Cluster::builder(3).config("tombstone_ttl_ms = 300\n").start();
    let rt = runtime();
    let k = key(&c);
    c.upload_bytes("gone.txt", b"deleted for good");
    c.upload_bytes("kept.txt", b"kept");
    let status = c.status();
    let (leader, term) = (status.leader.expect("a leader"), Term(status.term));
    let follower = if leader == 1 { 2 } else { 1 };
    let inode = rt.block_on(resolve(&c.node_addr(leader), &k, "gone.txt")).expect("gone.txt is there");
    let keys = vec![Key::of_dentry(Ino::ROOT, "gone.txt"), Key::of_ino(inode.ino)];
    // What the leader sent every node when the file was made.
    let late = rt.block_on(records_for(&c.node_addr(leader), &k, keys.clone()));
    assert_eq!(late.len(), 2, "{late:?}");

    let rm = c.scs(&["rm", "gone.txt"]);
    assert!(rm.status.success(), "{}", rm.stderr);
    // Gone for good: out of the trash too.
    c.scs(&["trash", "purge", "gone.txt"]).assert_ok();
    eventually("every node to purge the file's tombstones", Duration::from_secs(30), || {
        (1..=3).all(|id| rt.block_on(records_for(&c.node_addr(id), &k, keys.clone())).is_empty())
    });
    rt.block_on(async {
        let mut conn = session_as(&c.node_addr(follower), &k, Peer::Node(NodeId(leader))).await;
        conn.send(&Message::Request(Request::Apply { term, leader: NodeId(leader), records: late })).await.unwrap();
        assert!(matches!(conn.recv_response().await, Ok(Response::Done)), "a late Apply is answered");
    });
    let held = rt.block_on(records_for(&c.node_addr(follower), &k, keys.clone()));
    assert!(held.is_empty(), "the follower took the late copy of a deleted file: {held:?}");
    // Nor does it reach anyone later (the indexes are compared every 10 s).
    let deadline = Instant::now() + Duration::from_secs(12);
    while Instant::now() < deadline {
        let listed = c.ls_names("");
        assert!(listed.contains(&"kept.txt".to_string()) && !listed.contains(&"gone.txt".to_string()), "{listed:?}");
        thread::sleep(Duration::from_millis(500));
    }
    for id in 1..=3 {
        assert!(rt.block_on(records_for(&c.node_addr(id), &k, keys.clone())).is_empty(), "node {id}");
    }
    c.assert_no_node_died();
}

#[test]
fn a_stream_of_a_new_file_stored_and_removed_while_its_bytes_were_on_their_way_does_not_bring_it_back() {
    // What a write-back mount does for `cmd > file`: the empty file goes up
    // from its journal while the content streams under the same inode.
    // With the trash on, the removed file waits there; with it off, only its
    // tombstone is left.
    stream_over_a_removal(Cluster::start(3));
    stream_over_a_removal(Cluster::builder(3).config("trash_hours = 0\n").start());
}

fn stream_over_a_removal(c: Cluster) {
    let rt = runtime();
    let k = key(&c);
    let leader = c.node_addr(c.status().leader.expect("a leader"));
    let data = seeded_bytes(951, 3 << 20);
    let (first, second) = {
        let (ino, count) = reserve_inodes(&rt, &leader, &k, 2);
        assert_eq!(count, 2);
        (ino, Ino(ino.0 + 1))
    };
    let new = |name: &str, ino: Ino, size: Option<u64>| {
        UploadSpec::new(Target::New { parent: Ino::ROOT, name: name.into(), ino }, size, 0o644, 1)
    };
    let outcome = |ino: Ino, name: &'static str, remove: bool| {
        rt.block_on(async {
            let mut stream = session(&leader, &k).await;
            stream.send(&Message::Request(Request::Upload(new(name, ino, None)))).await.unwrap();
            assert!(matches!(stream.recv_response().await, Ok(Response::Ready)), "{name}: the stream opens");
            let (head, tail) = data.split_at(data.len() / 2);
            for chunk in head.chunks(scs_common::CHUNK_SIZE) {
                stream.write_data(chunk).await.unwrap();
            }
            stream.flush().await.unwrap();
            let empty = store(&leader, &k, new(name, ino, Some(0)), b"").await.expect("the empty file is stored");
            assert_eq!(empty.ino, ino);
            if remove {
                let rm = Request::Remove { parent: Ino::ROOT, name: name.into(), what: Removal::NonDir };
                assert!(matches!(call(&leader, &k, rm).await, Ok(Response::Changed(_))), "{name} removed");
            }
            for chunk in tail.chunks(scs_common::CHUNK_SIZE) {
                stream.write_data(chunk).await.unwrap();
            }
            stream.send(&Message::End { hash: hash(&data) }).await.unwrap();
            stream.recv_response().await
        })
    };
    // Stored meanwhile: the stream's content goes into that inode.
    let kept = outcome(first, "kept.bin", false);
    let stored = kept.as_ref().ok().and_then(stored_inode);
    assert!(stored.is_some_and(|i| i.ino == first && i.size == data.len() as u64), "{kept:?}");
    assert_eq!(rt.block_on(download(&leader, &k, "kept.bin", 0, None)).unwrap(), data);
    // Stored and removed meanwhile: it stays removed.
    assert_error(outcome(second, "gone.bin", true), ErrorCode::NotFound, "removed", "a stream into a removed file");
    assert!(rt.block_on(resolve(&leader, &k, "gone.bin")).is_none(), "the removed file came back");
    c.assert_no_node_died();
}

#[test]
fn requests_naming_missing_inodes_or_the_wrong_kind_get_a_clear_error_and_change_nothing() {
    let c = Cluster::start(3);
    let rt = runtime();
    let k = key(&c);
    let leader = c.node_addr(3);
    c.upload_bytes("kept/a.txt", b"kept");
    c.scs(&["mkdir", "empty"]).assert_ok();
    let make = Request::Make { parent: Ino::ROOT, name: "link".into(), node: new_node(Kind::Symlink, "kept/a.txt") };
    assert!(matches!(rt.block_on(call(&leader, &k, make)), Ok(Response::Changed(t)) if !t.inodes.is_empty()));
    let kept = rt.block_on(resolve(&leader, &k, "kept")).expect("kept exists");
    let a = rt.block_on(resolve(&leader, &k, "kept/a.txt")).expect("kept/a.txt exists");
    let link = rt.block_on(resolve(&leader, &k, "link")).expect("link exists");
    let (reserved, _) = reserve_inodes(&rt, &leader, &k, 1);
    let before = snapshot(&c, &rt, &leader);
    use ErrorCode::{
        Exists, Invalid, IsDir, NoAttr, NotDir, NotEmpty, NotFound, NotPermitted, NotSupported, Range, TooBig,
    };

    let none = NEVER_HANDED_OUT;
    let dir = || new_node(Kind::Dir, "");
    let rename = |parent: Ino, name: &str, new_parent: Ino, new_name: &str, mode: RenameMode| Request::Rename {
        parent,
        name: name.into(),
        new_parent,
        new_name: new_name.into(),
        mode,
    };
    let touch = SetAttrs { mode: Some(0o777), mtime: Some(TimeSet::Now), ..SetAttrs::default() };
    let xattr = |ino: Ino, name: &str, len: usize| Request::SetXattr {
        ino,
        name: name.into(),
        value: Bytes(vec![7; len]),
        mode: XattrMode::Any,
    };
    let read = |ino: Ino| Request::Read { ino, offset: 0, len: None };
    let cases: Vec<(&str, Request, ErrorCode)> = vec![
        ("ReadDir of an inode never handed out", Request::ReadDir { dir: none }, NotFound),
        ("ReadDir of inode 0", Request::ReadDir { dir: Ino::NONE }, NotFound),
        ("ReadDir of a file", Request::ReadDir { dir: a.ino }, NotDir),
        ("Read of an inode never handed out", read(none), NotFound),
        ("Read of the root", read(Ino::ROOT), IsDir),
        ("Read of a symlink", read(link.ino), Invalid),
        (
            "ReadBlob of a content version never stored",
            Request::ReadBlob { ino: a.ino, content: Version::new(Term(999), 1), offset: 0, len: None },
            NotFound,
        ),
        (
            "ReadBlob of an inode never handed out",
            Request::ReadBlob { ino: none, content: a.content, offset: 0, len: None },
            NotFound,
        ),
        (
            "Make in a directory never handed out",
            Request::Make { parent: none, name: "x".into(), node: dir() },
            NotFound,
        ),
        ("Make in inode 0", Request::Make { parent: Ino::NONE, name: "x".into(), node: dir() }, NotFound),
        ("Make in a file", Request::Make { parent: a.ino, name: "x".into(), node: dir() }, NotDir),
        ("Make in a symlink", Request::Make { parent: link.ino, name: "x".into(), node: dir() }, NotDir),
        ("Make over an existing name", Request::Make { parent: Ino::ROOT, name: "kept".into(), node: dir() }, Exists),
        (
            "Link of an inode never handed out",
            Request::Link { ino: none, parent: Ino::ROOT, name: "l".into() },
            NotFound,
        ),
        ("Link of a directory", Request::Link { ino: kept.ino, parent: Ino::ROOT, name: "l".into() }, NotPermitted),
        ("Link into a file", Request::Link { ino: a.ino, parent: a.ino, name: "l".into() }, NotDir),
        (
            "Remove in a directory never handed out",
            Request::Remove { parent: none, name: "a.txt".into(), what: Removal::Any },
            NotFound,
        ),
        ("Remove in a file", Request::Remove { parent: a.ino, name: "a.txt".into(), what: Removal::Any }, NotDir),
        (
            "Remove of a missing name",
            Request::Remove { parent: Ino::ROOT, name: "nope".into(), what: Removal::Any },
            NotFound,
        ),
        (
            "unlink of a directory",
            Request::Remove { parent: Ino::ROOT, name: "empty".into(), what: Removal::NonDir },
            IsDir,
        ),
        ("rmdir of a file", Request::Remove { parent: kept.ino, name: "a.txt".into(), what: Removal::Dir }, NotDir),
        (
            "rmdir of a directory with a child",
            Request::Remove { parent: Ino::ROOT, name: "kept".into(), what: Removal::Dir },
            NotEmpty,
        ),
        (
            "Rename from a directory never handed out",
            rename(none, "a.txt", Ino::ROOT, "x", RenameMode::Replace),
            NotFound,
        ),
        ("Rename into a file", rename(Ino::ROOT, "empty", a.ino, "x", RenameMode::Replace), NotDir),
        ("Rename of a missing name", rename(Ino::ROOT, "nope", Ino::ROOT, "x", RenameMode::Replace), NotFound),
        ("Exchange with a missing name", rename(kept.ino, "a.txt", Ino::ROOT, "nope", RenameMode::Exchange), NotFound),
        (
            "Rename of a directory onto a file",
            rename(Ino::ROOT, "empty", kept.ino, "a.txt", RenameMode::Replace),
            NotDir,
        ),
        (
            "Rename of a file onto a directory",
            rename(kept.ino, "a.txt", Ino::ROOT, "empty", RenameMode::Replace),
            IsDir,
        ),
        (
            "Rename onto a directory with a child",
            rename(Ino::ROOT, "empty", Ino::ROOT, "kept", RenameMode::Replace),
            NotEmpty,
        ),
        ("Rename without replacing", rename(Ino::ROOT, "link", Ino::ROOT, "empty", RenameMode::NoReplace), Exists),
        ("SetAttr of an inode never handed out", Request::SetAttr { ino: none, set: touch.clone() }, NotFound),
        ("SetAttr of inode 0", Request::SetAttr { ino: Ino::NONE, set: touch }, NotFound),
        ("SetXattr of an inode never handed out", xattr(none, "user.x", 1), NotFound),
        ("SetXattr with an empty name", xattr(a.ino, "", 1), Range),
        ("SetXattr with a 256-byte name", xattr(a.ino, &format!("user.{}", "x".repeat(251)), 1), Range),
        ("SetXattr of a system. attribute", xattr(a.ino, "system.posix_acl_access", 1), NotSupported),
        ("SetXattr with no namespace", xattr(a.ino, "comment", 1), NotSupported),
        ("SetXattr of a value over 64 KiB", xattr(a.ino, "user.big", 65537), TooBig),
        ("RemoveXattr of a missing attribute", Request::RemoveXattr { ino: a.ino, name: "user.nope".into() }, NoAttr),
        (
            "Upload into an inode never handed out",
            Request::Upload(UploadSpec::new(Target::Ino(none), Some(1), 0o644, 0)),
            NotFound,
        ),
        ("Upload into a directory", Request::Upload(UploadSpec::new(Target::Ino(kept.ino), Some(1), 0o644, 0)), IsDir),
        ("Upload into a symlink", Request::Upload(UploadSpec::new(Target::Ino(link.ino), Some(1), 0o644, 0)), Invalid),
        (
            "Upload of a new file with a number never reserved",
            Request::Upload(UploadSpec::new(
                Target::New { parent: Ino::ROOT, name: "new".into(), ino: none },
                Some(1),
                0o644,
                0,
            )),
            Invalid,
        ),
        (
            "Upload of a new file as the root",
            Request::Upload(UploadSpec::new(
                Target::New { parent: Ino::ROOT, name: "new".into(), ino: Ino::ROOT },
                Some(1),
                0o644,
                0,
            )),
            Invalid,
        ),
        (
            "Upload of a new file in a directory never handed out",
            Request::Upload(UploadSpec::new(
                Target::New { parent: none, name: "new".into(), ino: reserved },
                Some(1),
                0o644,
                0,
            )),
            NotFound,
        ),
        (
            "Upload of a new file in a file",
            Request::Upload(UploadSpec::new(
                Target::New { parent: a.ino, name: "new".into(), ino: reserved },
                Some(1),
                0o644,
                0,
            )),
            NotDir,
        ),
        ("Upload to a path through a file", Request::Upload(path_spec("kept/a.txt/new", Some(1))), NotDir),
        ("Upload to a path that is a directory", Request::Upload(path_spec("kept", Some(1))), IsDir),
    ];
    for (what, req, code) in cases {
        assert_error(rt.block_on(call(&leader, &k, req)), code, "", what);
    }
    // Lookups of what is not there answer "missing", not an error.
    for (what, req) in [
        ("GetAttr of an inode never handed out", Request::GetAttr { ino: none }),
        ("GetAttr of inode 0", Request::GetAttr { ino: Ino::NONE }),
        ("Lookup in a directory never handed out", Request::Lookup { parent: none, name: "a.txt".into() }),
        ("Lookup in a file", Request::Lookup { parent: a.ino, name: "a.txt".into() }),
    ] {
        let res = rt.block_on(call(&leader, &k, req));
        assert!(matches!(res, Ok(Response::Missing)), "{what}: {res:?}");
    }
    // A client asking for four billion inode numbers gets a bounded block.
    let (_, count) = reserve_inodes(&rt, &leader, &k, u32::MAX);
    assert!((1..=4096).contains(&count), "ReserveInodes of u32::MAX handed out {count}");

    assert_unchanged(&c, &rt, &leader, &before, "requests naming missing inodes or the wrong kind");
    c.assert_content("kept/a.txt", b"kept");
}

#[test]
fn symlinks_that_loop_or_point_outside_the_cluster_lead_nowhere() {
    let c = Cluster::start(3);
    let rt = runtime();
    let k = key(&c);
    let leader = c.node_addr(3);
    c.upload_bytes("kept/a.txt", b"kept");
    let symlink = |name: &str, target: &str| {
        let make = Request::Make { parent: Ino::ROOT, name: name.into(), node: new_node(Kind::Symlink, target) };
        rt.block_on(call(&leader, &k, make))
    };
    for (name, target) in [
        ("loop", "loop"),
        ("ping", "pong"),
        ("pong", "./ping"),
        ("escape", "/etc"),
        ("up", "../../.."),
        ("deep", "kept/../kept/../loop"),
    ] {
        assert!(matches!(symlink(name, target), Ok(Response::Changed(_))), "symlink {name} -> {target}");
    }
    let before = snapshot(&c, &rt, &leader);
    // Targets no symlink may have.
    assert_error(symlink("empty", ""), ErrorCode::NotFound, "", "a symlink with an empty target");
    assert_error(symlink("nul", "a\0b"), ErrorCode::BadName, "", "a symlink whose target holds a NUL");
    assert_error(symlink("long", &"t".repeat(4096)), ErrorCode::NameTooLong, "", "a symlink target of 4096 bytes");
    use ErrorCode::{Loop, NotFound};

    for (path, code, needle) in [
        ("loop", Loop, ""),
        ("ping", Loop, ""),
        ("loop/x", Loop, ""),
        ("deep", Loop, ""),
        ("escape", NotFound, "outside the cluster"),
        ("escape/passwd", NotFound, "outside the cluster"),
    ] {
        assert_error(rt.block_on(download(&leader, &k, path, 0, None)), code, needle, &format!("Download of {path}"));
        let res = rt.block_on(call(&leader, &k, Request::Resolve { path: path.into(), follow: true }));
        assert_error(res, code, needle, &format!("Resolve of {path}"));
    }
    // Not followed at the end, a loop is only a symlink.
    let res = rt.block_on(call(&leader, &k, Request::Resolve { path: "loop".into(), follow: false }));
    assert!(matches!(&res, Ok(Response::Attr(i)) if i.kind == Kind::Symlink && i.target == "loop"), "{res:?}");
    // The root is its own parent: climbing out of it stays in the cluster.
    assert_eq!(rt.block_on(download(&leader, &k, "up/kept/a.txt", 0, None)).unwrap(), b"kept");
    assert_eq!(rt.block_on(download(&leader, &k, "up/up/up/kept/a.txt", 0, None)).unwrap(), b"kept");
    // An upload through a loop is refused before a byte is sent.
    assert_error(
        rt.block_on(call(&leader, &k, Request::Upload(path_spec("loop/x", Some(1))))),
        Loop,
        "",
        "an upload through a loop",
    );
    // And the CLI says so in a line.
    c.try_download("loop").0.assert_one_line_error("too many levels of symbolic links: loop");
    c.try_download("escape/passwd").0.assert_one_line_error("points outside the cluster: /etc");

    assert_unchanged(&c, &rt, &leader, &before, "symlinks that loop or lead outside");
    c.assert_content("kept/a.txt", b"kept");
}

/// Starts an upload to `path` announcing `size`: the session, after Ready.
async fn start_upload(addr: &str, key: &ClusterKey, path: &str, size: Option<u64>) -> Connection {
    let mut conn = session(addr, key).await;
    conn.send(&Message::Request(Request::Upload(path_spec(path, size)))).await.unwrap();
    match conn.recv_response().await {
        Ok(Response::Ready) => conn,
        other => panic!("upload to {path}: expected Ready, got {other:?}"),
    }
}

/// Streams `data` and an End carrying `end_hash`, returns the answer.
async fn finish_upload(conn: &mut Connection, data: &[u8], end_hash: ContentHash) -> Result<Response, Error> {
    for chunk in data.chunks(scs_common::CHUNK_SIZE) {
        conn.write_data(chunk).await?;
    }
    conn.send(&Message::End { hash: end_hash }).await?;
    conn.recv_response().await
}

/// After a refused upload to `path`: the session is still usable, and
/// `path` is as before (`kept`, an existing file, keeps its content; any
/// other path is missing, with not even a directory made on the way).
async fn assert_left_alone(conn: &mut Connection, path: &str, kept: (&str, ContentHash), what: &str) {
    conn.send(&Message::Request(Request::Resolve { path: path.into(), follow: false })).await.unwrap();
    let found = conn.recv_response().await;
    if path == kept.0 {
        assert!(matches!(&found, Ok(Response::Attr(i)) if i.hash == kept.1), "{what}: {found:?}");
    } else if path.contains('/') {
        assert_error(found, ErrorCode::NotFound, "", &format!("{what}: {path} after the refusal"));
    } else {
        assert!(matches!(found, Ok(Response::Missing)), "{what}: {path} exists after the refusal: {found:?}");
    }
}

/// What is announced and sent, and the error expected: (what, path, size
/// announced, bytes sent, hash in End, error code, text in the message).
type BadUpload<'a> = (&'a str, &'a str, Option<u64>, &'a [u8], ContentHash, ErrorCode, &'a str);

#[test]
fn uploads_whose_bytes_do_not_match_their_size_or_hash_commit_nothing() {
    let c = Cluster::start(3);
    let rt = runtime();
    let k = key(&c);
    let leader = c.node_addr(3);
    let kept = seeded_bytes(600, 300_000);
    c.upload_bytes("kept.bin", &kept);
    let before = snapshot(&c, &rt, &leader);
    let data = seeded_bytes(601, 2_500_000);
    use ErrorCode::{Corrupt, Invalid};

    let cases: Vec<BadUpload> = vec![
        ("fewer bytes than announced", "short.bin", Some(3_000_000), &data, hash(&data), Invalid, "were announced"),
        (
            "more bytes than announced",
            "long.bin",
            Some(1_000_000),
            &data,
            hash(&data),
            Invalid,
            "more than the announced",
        ),
        ("nothing where 5 bytes were announced", "none.bin", Some(5), b"", hash(b""), Invalid, "were announced"),
        ("the wrong hash", "wrong-hash.bin", Some(data.len() as u64), &data, hash(b"other"), Corrupt, "does not match"),
        ("the wrong hash, size unknown", "wrong-hash-2.bin", None, &data, hash(b"other"), Corrupt, ""),
        (
            "the wrong hash over an existing file",
            "kept.bin",
            Some(data.len() as u64),
            &data,
            hash(b"other"),
            Corrupt,
            "",
        ),
        ("the wrong size over an existing file", "kept.bin", Some(10), &data[..20], hash(&data[..20]), Invalid, ""),
        (
            "the wrong hash into a new directory",
            "new-dir/wrong-hash.bin",
            Some(data.len() as u64),
            &data,
            hash(b"other"),
            Corrupt,
            "",
        ),
    ];
    for (what, path, size, bytes, end_hash, code, needle) in cases {
        let res = rt.block_on(async {
            let mut conn = start_upload(&leader, &k, path, size).await;
            let res = finish_upload(&mut conn, bytes, end_hash).await;
            assert_left_alone(&mut conn, path, ("kept.bin", hash(&kept)), what).await;
            res
        });
        assert_error(res, code, needle, what);
        assert_unchanged(&c, &rt, &leader, &before, what);
    }
    // An absurd announced size is refused before a byte is sent: no disk
    // has the room for it.
    let res = rt.block_on(call(&leader, &k, Request::Upload(path_spec("huge.bin", Some(u64::MAX)))));
    assert_error(res, ErrorCode::NoSpace, "bytes free", "an absurd announced size");
    assert_unchanged(&c, &rt, &leader, &before, "an absurd announced size");
    // Something other than data in the middle of the stream breaks the
    // session: the upload is dropped and the session closed.
    let res = rt.block_on(async {
        let mut conn = start_upload(&leader, &k, "interrupted.bin", Some(data.len() as u64)).await;
        conn.write_data(&data[..1 << 20]).await.unwrap();
        conn.send(&Message::Request(Request::Status)).await.unwrap();
        let res = conn.recv_response().await;
        assert!(closed_within(&mut conn, Duration::from_secs(5)).await, "the session stayed open");
        res
    });
    assert_error(res, ErrorCode::Protocol, "expected data", "a request in the middle of the data");
    assert_unchanged(&c, &rt, &leader, &before, "a request in the middle of the data");
    c.assert_content("kept.bin", &kept);
    // And a correct upload of the same names works right after.
    rt.block_on(upload(&leader, &k, "short.bin", b"fine")).unwrap();
    c.assert_content("short.bin", b"fine");
}

#[test]
fn a_client_that_disconnects_mid_upload_leaves_nothing_visible_and_no_temp_file() {
    let c = Cluster::start(3);
    let rt = runtime();
    let k = key(&c);
    let leader = c.node_addr(3);
    let kept = seeded_bytes(700, 100_000);
    c.upload_bytes("kept.bin", &kept);
    let before = snapshot(&c, &rt, &leader);
    let data = seeded_bytes(701, 4 << 20);

    for (what, path, size, sent) in [
        ("size announced, half sent", "half.bin", Some(data.len() as u64), data.len() / 2),
        ("size unknown, 3 MiB sent", "unknown.bin", None, 3 << 20),
        ("over an existing file", "kept.bin", Some(data.len() as u64), 1 << 20),
        ("into a new directory", "new-dir/half.bin", Some(data.len() as u64), 1 << 20),
        // Over INLINE_MAX: a small file's bytes wait in the leader's memory, not in a temp file.
        ("right after Ready", "nothing.bin", Some(100_000), 0),
    ] {
        rt.block_on(async {
            let mut conn = start_upload(&leader, &k, path, size).await;
            for chunk in data[..sent].chunks(scs_common::CHUNK_SIZE) {
                conn.write_data(chunk).await.unwrap();
            }
            conn.flush().await.unwrap();
            // The upload is under way: a temp file on the leader, and on
            // every holder once the first batch of bytes has gone out.
            let holders: &[u32] = if sent >= 1 << 20 { &[1, 2, 3] } else { &[3] };
            let started = Instant::now();
            while !holders.iter().all(|&id| !temp_files(&c, id).is_empty()) {
                assert!(started.elapsed() < Duration::from_secs(5), "{what}: no temp file on nodes {holders:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            drop(conn);
        });
        let cut = Instant::now();
        assert_unchanged(&c, &rt, &leader, &before, what);
        println!("{what}: nothing visible, temp files gone {:.2?} after the disconnect", cut.elapsed());
    }
    c.assert_content("kept.bin", &kept);
    // The names are free for a real upload.
    c.upload_bytes("half.bin", b"whole");
    c.assert_content("half.bin", b"whole");
    c.upload_bytes("new-dir/half.bin", b"whole too");
    c.assert_content("new-dir/half.bin", b"whole too");
}

#[test]
fn a_client_that_stalls_mid_upload_holds_up_nobody_else() {
    let c = Cluster::start(3);
    let rt = runtime();
    let k = key(&c);
    let leader = c.node_addr(3);
    let before = snapshot(&c, &rt, &leader);
    let data = seeded_bytes(750, 4 << 20);
    let stalled = rt.block_on(async {
        let mut conn = start_upload(&leader, &k, "stalled.bin", Some(data.len() as u64)).await;
        conn.write_data(&data[..1 << 20]).await.unwrap();
        conn.flush().await.unwrap();
        conn
    });
    // While it sits there, others upload, read and rename as usual.
    for i in 0..5 {
        let path = format!("others/{i}.txt");
        let out = c.upload_bytes(&path, path.as_bytes());
        assert!(out.elapsed < Duration::from_secs(3), "an upload took {:?} beside a stalled one", out.elapsed);
        c.assert_content(&path, path.as_bytes());
    }
    c.scs(&["mv", "others/0.txt", "others/moved.txt"]).assert_ok();
    assert!(!c.ls_names("").contains(&"stalled.bin".to_string()), "a half upload is visible");
    // The stalled client goes away: its temp files go with it.
    drop(stalled);
    for id in 1..=c.size() {
        eventually(&format!("node {id}'s temp files to be removed"), CLEANUP_TIMEOUT, || temp_files(&c, id).is_empty());
    }
    assert!(!c.ls_names("").contains(&"stalled.bin".to_string()));
    let now = snapshot(&c, &rt, &leader);
    let paths: Vec<&str> = now.entries.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths.iter().filter(|p| p.starts_with("others/")).count(), 5, "{paths:?}");
    assert_eq!(now.entries.len(), before.entries.len() + 6, "others, and its 5 files: {paths:?}");
    c.assert_no_node_died();
}

#[test]
fn a_download_range_past_the_end_is_refused_and_ranges_inside_are_clamped() {
    let c = Cluster::start(3);
    let rt = runtime();
    let k = key(&c);
    let leader = c.node_addr(3);
    let kept = seeded_bytes(800, 1_500_000);
    c.upload_bytes("kept.bin", &kept);
    let size = kept.len() as u64;
    let before = snapshot(&c, &rt, &leader);
    let inode = rt.block_on(resolve(&leader, &k, "kept.bin")).expect("kept.bin exists");
    use ErrorCode::Invalid;

    // By path, by inode, and a blob by inode and content version.
    let ranges = |offset, len| {
        [
            Request::Download { path: "kept.bin".into(), offset, len },
            Request::Read { ino: inode.ino, offset, len },
            Request::ReadBlob { ino: inode.ino, content: inode.content, offset, len },
        ]
    };
    for (offset, len) in [(size + 1, None), (size + 1, Some(0)), (u64::MAX, None), (u64::MAX, Some(u64::MAX))] {
        for req in ranges(offset, len) {
            let what = format!("{} from {offset} ({len:?} bytes)", request_name(&req));
            assert_error(rt.block_on(call(&leader, &k, req)), Invalid, "past the end", &what);
        }
    }
    // Inside the file, a range is clamped to it.
    let cases =
        [(0, None), (size, None), (size, Some(10)), (size - 10, Some(u64::MAX)), (1000, Some(5000)), (7, Some(0))];
    for (offset, len) in cases {
        let end = len.map_or(size, |l| offset.saturating_add(l).min(size));
        for req in ranges(offset, len) {
            let what = format!("{} of {offset}+{len:?}", request_name(&req));
            let got = rt.block_on(async {
                let mut conn = session(&leader, &k).await;
                conn.send(&Message::Request(req)).await.unwrap();
                receive_content(&mut conn).await
            });
            let got = got.unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(got == kept[offset as usize..end as usize], "{what}: wrong bytes");
        }
    }
    assert_unchanged(&c, &rt, &leader, &before, "ranges past the end");
    // A range of something that is not a file.
    c.scs(&["mkdir", "d"]).assert_ok();
    let before = snapshot(&c, &rt, &leader);
    assert_error(
        rt.block_on(download(&leader, &k, "d", 0, None)),
        ErrorCode::IsDir,
        "is a directory",
        "download of a directory",
    );
    assert_error(
        rt.block_on(download(&leader, &k, "nope", size + 1, None)),
        ErrorCode::NotFound,
        "nope",
        "download of a missing file",
    );
    c.try_download("d").0.assert_one_line_error("is a directory");
    assert_unchanged(&c, &rt, &leader, &before, "downloads of a directory and a missing file");
}

#[test]
fn renames_onto_themselves_or_into_their_own_subtree_change_nothing() {
    let c = Cluster::start(3);
    let rt = runtime();
    let k = key(&c);
    let leader = c.node_addr(3);
    c.upload_bytes("f.txt", b"file");
    c.upload_bytes("d/sub/g.txt", b"deep");
    // A deep child, which must come through every refused rename.
    let long_child = format!("d/{}", vec!["y".repeat(200); 19].join("/"));
    c.upload_bytes(&long_child, b"long");
    let d = rt.block_on(resolve(&leader, &k, "d")).expect("d exists");
    let sub = rt.block_on(resolve(&leader, &k, "d/sub")).expect("d/sub exists");
    let before = snapshot(&c, &rt, &leader);

    // Onto itself: rename(2) says success and nothing happens; nothing does,
    // not even a new version or a touched ctime.
    for (from, to) in [("f.txt", "f.txt"), ("d", "d"), ("d", "d/"), ("./f.txt", "f.txt")] {
        c.scs(&["mv", from, to]).assert_ok();
    }
    assert_unchanged(&c, &rt, &leader, &before, "renames onto themselves");

    // Into its own subtree: refused.
    for to in ["d/sub", "d/sub/deeper", "d/new"] {
        c.scs(&["mv", "d", to]).assert_one_line_error("cannot move d into itself");
    }
    // A file is no directory to move things under.
    c.scs(&["mv", "f.txt", "f.txt/inside"]).assert_one_line_error("not a directory");
    c.scs(&["mv", "d", "f.txt/d"]).assert_one_line_error("not a directory");
    // A target past PATH_MAX.
    c.scs(&["mv", "d", &vec!["e".repeat(200); 21].join("/")]).assert_one_line_error("name too long");

    // The same straight to the leader, without the client's help.
    let rename = |parent: Ino, name: &str, new_parent: Ino, new_name: &str, mode: RenameMode| {
        let req = Request::Rename { parent, name: name.into(), new_parent, new_name: new_name.into(), mode };
        rt.block_on(call(&leader, &k, req))
    };
    use RenameMode::{Exchange, NoReplace, Replace};
    for (what, res) in [
        ("d into d/sub", rename(Ino::ROOT, "d", sub.ino, "x", NoReplace)),
        ("d into d", rename(Ino::ROOT, "d", d.ino, "d", Replace)),
        ("d exchanged with d/sub/g.txt", rename(Ino::ROOT, "d", sub.ino, "g.txt", Exchange)),
        ("d/sub/g.txt exchanged with d", rename(sub.ino, "g.txt", Ino::ROOT, "d", Exchange)),
    ] {
        assert_error(res, ErrorCode::Invalid, "into itself", what);
    }
    // A directory onto its own parent, which is not empty.
    assert_error(rename(d.ino, "sub", Ino::ROOT, "d", Replace), ErrorCode::NotEmpty, "", "d/sub onto d");
    // Onto itself: done and nothing changes, or "exists" when told not to replace.
    for mode in [Replace, Exchange] {
        let res = rename(Ino::ROOT, "d", Ino::ROOT, "d", mode);
        assert!(
            matches!(&res, Ok(Response::Changed(t)) if t.inodes.is_empty()),
            "rename of d onto itself ({mode:?}): {res:?}"
        );
    }
    assert_error(rename(Ino::ROOT, "d", Ino::ROOT, "d", NoReplace), ErrorCode::Exists, "", "d onto itself, NoReplace");

    assert_unchanged(&c, &rt, &leader, &before, "refused renames");
    c.assert_content("d/sub/g.txt", b"deep");
    c.assert_content(&long_child, b"long");
}

// `scs mv` makes the missing directories on the way to its target before
// it asks for the rename (mount/src/client.rs, `Client::mv`), and keeps
// them when the rename is refused.
#[test]
fn a_refused_move_leaves_no_directory_made_on_the_way() {
    let c = Cluster::start(3);
    let rt = runtime();
    let leader = c.node_addr(3);
    c.upload_bytes("d/sub/g.txt", b"deep");
    let before = snapshot(&c, &rt, &leader);
    c.scs(&["mv", "d", "d/new/deeper"]).assert_one_line_error("cannot move d into itself");
    assert_unchanged(&c, &rt, &leader, &before, "a refused move of d into d/new/deeper");
}

/// Uploads that pass every check made before `Ready` and are refused only
/// when committed, after the holders stored the bytes, each on the leader
/// of a fresh cluster: the cluster, what was there before, and what each
/// left once the temp files were gone.
fn uploads_refused_at_the_commit(rt: &tokio::runtime::Runtime) -> (Cluster, Snapshot, Vec<(&'static str, Snapshot)>) {
    let c = Cluster::start(3);
    let k = key(&c);
    let leader = c.node_addr(3);
    c.upload_bytes("kept/a.txt", b"kept");
    let make = Request::Make { parent: Ino::ROOT, name: "escape".into(), node: new_node(Kind::Symlink, "/etc") };
    assert!(matches!(rt.block_on(call(&leader, &k, make)), Ok(Response::Changed(t)) if !t.inodes.is_empty()));
    let (reserved, _) = reserve_inodes(rt, &leader, &k, 1);
    let before = snapshot(&c, rt, &leader);
    let data = seeded_bytes(950, 1 << 20);
    let size = Some(data.len() as u64);
    let with_xattr = |name: &str, len: usize| {
        let mut spec = path_spec("x.bin", size);
        spec.xattrs.insert(name.into(), Bytes(vec![1; len]));
        spec
    };
    let over_dir =
        UploadSpec::new(Target::New { parent: Ino::ROOT, name: "kept".into(), ino: reserved }, size, 0o644, 1);
    use ErrorCode::{IsDir, NotFound, NotSupported, TooBig};
    let mut left = Vec::new();
    for (what, spec, code) in [
        ("a new file over a directory", over_dir, IsDir),
        ("a path through a symlink that leads outside", path_spec("escape/x.bin", size), NotFound),
        ("an extended attribute outside user., trusted. and security.", with_xattr("system.x", 1), NotSupported),
        ("an extended attribute over 64 KiB", with_xattr("user.big", 65537), TooBig),
    ] {
        assert_error(rt.block_on(store(&leader, &k, spec, &data)), code, "", what);
        for id in 1..=c.size() {
            eventually(&format!("node {id}'s temp files to be removed after {what}"), CLEANUP_TIMEOUT, || {
                temp_files(&c, id).is_empty()
            });
        }
        left.push((what, snapshot(&c, rt, &leader)));
    }
    c.assert_no_node_died();
    (c, before, left)
}

#[test]
fn uploads_refused_at_the_commit_get_a_clear_error_and_change_no_name() {
    let rt = runtime();
    let (c, before, left) = uploads_refused_at_the_commit(&rt);
    for (what, now) in left {
        assert_eq!(now.entries, before.entries, "the namespace changed after {what}");
    }
    c.assert_content("kept/a.txt", b"kept");
}

// The leader checks these only at the commit (node/src/leader/upload.rs,
// `run`: `create_file`, `dirs_for`, `check_xattrs`), after every holder
// placed the blob, and nothing removes it then: the orphan sweep keeps a
// blob of an inode it has no record of for ORPHAN_AGE (24 h).
#[test]
fn uploads_refused_at_the_commit_leave_no_blob_behind() {
    let rt = runtime();
    let (_c, before, left) = uploads_refused_at_the_commit(&rt);
    for (what, now) in left {
        assert_eq!(now.blobs, before.blobs, "blob files changed after {what}");
    }
}

// ----- floods -----

/// Raises this process's open-file limit to its hard limit (the flood holds
/// over a thousand sockets; the nodes raise their own).
fn raise_fd_limit(want: u64) {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
        assert!(lim.rlim_cur >= want, "the open-file limit is {} (need {want})", lim.rlim_cur);
    }
}

/// What a normal client got done in a window.
#[derive(Debug, Default)]
struct Served {
    requests: u64,
    failed: u64,
    slowest: Duration,
    first_error: Option<String>,
}

/// A normal client for `window`: a fresh session per request, as the CLI
/// opens one, alternating 4 KiB uploads and downloads of what it uploaded.
async fn normal_client(addr: &str, key: &ClusterKey, tag: &str, window: Duration) -> Served {
    let until = Instant::now() + window;
    let mut served = Served::default();
    let mut i = 0u64;
    while Instant::now() < until {
        let name = format!("{tag}/{i}.bin");
        let bytes = seeded_bytes(900 + i, 4096);
        i += 1;
        let t = Instant::now();
        let res = match bounded(upload(addr, key, &name, &bytes)).await {
            Ok(_) => {
                served.requests += 1;
                bounded(download(addr, key, &name, 0, None)).await
            }
            Err(e) => Err(e),
        };
        served.slowest = served.slowest.max(t.elapsed());
        match res {
            Ok(got) => {
                assert!(got == bytes, "{name} came back different");
                served.requests += 1;
            }
            Err(e) => {
                served.failed += 1;
                served.first_error.get_or_insert_with(|| format!("{name}: {e}"));
                // A refused client would retry after a moment, as the CLI does.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    served
}

/// How long one request of the normal client may take before it counts as
/// failed (a request hung by the flood must fail the test, not hang it).
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

async fn bounded<T>(request: impl std::future::Future<Output = Result<T, Error>>) -> Result<T, Error> {
    match tokio::time::timeout(REQUEST_LIMIT, request).await {
        Ok(res) => res,
        Err(_) => Err(Error::Unavailable(format!("no answer in {REQUEST_LIMIT:?}"))),
    }
}

/// Whether the peer has closed non-blocking `s`, reading (and dropping)
/// whatever it sent (checked without waiting).
fn peer_closed(mut s: &TcpStream) -> bool {
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() != ErrorKind::WouldBlock,
        }
    }
}

/// Counts of what the flood did.
#[derive(Default)]
struct FloodStats {
    idle_opened: AtomicU64,
    idle_cut: AtomicU64,
    loris_opened: AtomicU64,
    loris_bytes: AtomicU64,
    garbage: AtomicU64,
}

const IDLE_CONNS: usize = 1000;
const LORIS_CONNS: usize = 100;
/// Garbage connections per second (each: connect, 4 KiB of junk, close).
const GARBAGE_PER_SEC: u64 = 100;
/// The flood ends by itself after this long, whatever the test does.
const FLOOD_LIMIT: Duration = Duration::from_secs(150);
/// A flood connection not set up in this long is given up (a node's
/// accept queue may be full: the kernel then drops SYNs, and an unbounded
/// connect would wait out every retry).
const FLOOD_CONNECT_LIMIT: Duration = Duration::from_millis(500);

fn flood_connect(target: &str) -> Option<TcpStream> {
    let addr = target.parse().ok()?;
    TcpStream::connect_timeout(&addr, FLOOD_CONNECT_LIMIT).ok()
}

/// Keeps `idle` silent connections open (reopening those the nodes
/// cut), `LORIS_CONNS` that send one byte a second, and a stream of garbage
/// connections, until `stop` (or [`FLOOD_LIMIT`]). Most go to the leader,
/// the rest to the others.
fn flood(targets: &[String], idle: usize, stop: &AtomicBool, stats: &FloodStats) {
    let until = Instant::now() + FLOOD_LIMIT;
    let stop = &|| stop.load(Ordering::Relaxed) || Instant::now() > until;
    thread::scope(|s| {
        // Silent connections: the handshake never starts.
        s.spawn(|| {
            let mut conns: Vec<(usize, TcpStream)> = Vec::new();
            while !stop() {
                conns.retain(|(_, c)| {
                    let closed = peer_closed(c);
                    if closed {
                        stats.idle_cut.fetch_add(1, Ordering::Relaxed);
                    }
                    !closed
                });
                let mut n = conns.len();
                while n < idle && !stop() {
                    // 4 of 5 to the leader, the rest to the others.
                    let t = if n % 5 == 4 { 1 + n % (targets.len() - 1) } else { 0 };
                    if let Some(c) = flood_connect(&targets[t]) {
                        c.set_nonblocking(true).unwrap();
                        conns.push((t, c));
                        stats.idle_opened.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
                thread::sleep(Duration::from_millis(200));
            }
        });
        // Slow-loris: a valid preamble and a handshake record header that
        // promises 64 KiB, then one byte a second.
        s.spawn(|| {
            let mut prefix = secure::preamble().to_vec();
            prefix.extend_from_slice(&[0xff, 0xff]);
            let mut conns: Vec<(TcpStream, usize)> = Vec::new();
            while !stop() {
                conns.retain(|(c, _)| !peer_closed(c));
                while conns.len() < LORIS_CONNS {
                    let t = conns.len() % targets.len();
                    let Some(c) = flood_connect(&targets[t]) else { break };
                    c.set_nonblocking(true).unwrap();
                    conns.push((c, 0));
                    stats.loris_opened.fetch_add(1, Ordering::Relaxed);
                }
                for (c, sent) in conns.iter_mut() {
                    let byte = prefix.get(*sent).copied().unwrap_or(0x42);
                    if c.write(&[byte]).is_ok() {
                        *sent += 1;
                        stats.loris_bytes.fetch_add(1, Ordering::Relaxed);
                    }
                }
                thread::sleep(Duration::from_secs(1));
            }
        });
        // Garbage: connect, a burst of junk, hang up.
        s.spawn(|| {
            let junk = seeded_bytes(999, 4096);
            let mut i = 0u64;
            while !stop() {
                let started = Instant::now();
                for _ in 0..GARBAGE_PER_SEC / 10 {
                    if let Some(mut c) = flood_connect(&targets[(i % 2) as usize]) {
                        let _ = c.write_all(&junk[(i % 64) as usize..]);
                        stats.garbage.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
                thread::sleep(Duration::from_millis(100).saturating_sub(started.elapsed()));
            }
        });
    });
}

/// The flood tests compare two windows of one client: one running beside
/// the other would skew both (the machine may have two cores).
static ONE_FLOOD_AT_A_TIME: Mutex<()> = Mutex::new(());
/// Flood windows measured at most: a rate under half the quiet one in every
/// one of them is a node starved by the flood, not a moment of a busy machine.
const FLOOD_WINDOWS: usize = 3;

/// Floods the cluster (`idle` silent connections, slow-loris and garbage)
/// while a normal client works, and compares what it got done with a
/// quiet window of the same length. Asserts at least half the normal rate
/// (in the best of up to [`FLOOD_WINDOWS`] windows), no failed or slow
/// request in any window, and a cluster that noticed nothing.
fn serves_through_a_flood(idle: usize) {
    let _alone = ONE_FLOOD_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = Cluster::start(3);
    raise_fd_limit((idle + LORIS_CONNS + 200) as u64);
    let rt = runtime();
    let k = key(&c);
    let before = c.status();
    let leader = c.node_addr(3);
    let targets = vec![leader.clone(), c.node_addr(1), c.node_addr(2)];
    let window = Duration::from_secs(5);

    // Warm up, then the baseline.
    rt.block_on(normal_client(&leader, &k, "warmup", Duration::from_millis(500)));
    let quiet = rt.block_on(normal_client(&leader, &k, "quiet", window));
    assert_eq!(quiet.failed, 0, "requests failed without any flood: {quiet:?}");

    let stop = AtomicBool::new(false);
    let stats = FloodStats::default();
    let (windows, held) = thread::scope(|s| {
        let flooder = s.spawn(|| flood(&targets, idle, &stop, &stats));
        // Ends the flood on a failed assertion below too.
        let _stopper = StopOnDrop(&stop);
        // Let the flood reach its full size before measuring.
        eventually("the flood to open its connections", Duration::from_secs(20), || {
            stats.idle_opened.load(Ordering::Relaxed) >= idle as u64
        });
        let mut windows = Vec::new();
        for n in 1..=FLOOD_WINDOWS {
            let served = rt.block_on(normal_client(&leader, &k, &format!("flood{n}"), window));
            let enough = served.requests * 2 >= quiet.requests;
            windows.push(served);
            if enough {
                break;
            }
        }
        let held = stats.idle_opened.load(Ordering::Relaxed) - stats.idle_cut.load(Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        flooder.join().expect("the flood threads");
        (windows, held)
    });
    let per_sec = |n: u64| n as f64 / window.as_secs_f64();
    println!(
        "normal client: {:.1} requests/s without the flood (slowest {:.2?})",
        per_sec(quiet.requests),
        quiet.slowest
    );
    for (n, flooded) in windows.iter().enumerate() {
        println!(
            "  during it, window {}: {:.1} requests/s (slowest {:.2?}, {} failed): {:.0}%",
            n + 1,
            per_sec(flooded.requests),
            flooded.slowest,
            flooded.failed,
            100.0 * flooded.requests as f64 / quiet.requests as f64
        );
    }
    println!(
        "the flood: {} silent connections opened ({} cut by the nodes' handshake timeout, {held} open at the end), \
         {} slow-loris connections ({} bytes, one a second each), {} garbage connections",
        stats.idle_opened.load(Ordering::Relaxed),
        stats.idle_cut.load(Ordering::Relaxed),
        stats.loris_opened.load(Ordering::Relaxed),
        stats.loris_bytes.load(Ordering::Relaxed),
        stats.garbage.load(Ordering::Relaxed),
    );
    for flooded in &windows {
        assert_eq!(flooded.failed, 0, "requests failed during the flood: {flooded:?}");
        assert!(flooded.slowest < Duration::from_secs(2), "a request took {:?} during the flood", flooded.slowest);
    }
    let best = windows.iter().map(|w| w.requests).max().unwrap_or(0);
    assert!(
        best * 2 >= quiet.requests,
        "served at most {best} requests in {} windows during the flood, {} without: under half the normal rate",
        windows.len(),
        quiet.requests
    );

    // The cluster did not notice: same leader, same term, every file there.
    let now = c.status();
    assert_eq!((now.leader, now.term, now.alive_ids()), (before.leader, before.term, before.alive_ids()));
    c.assert_no_node_died();
    for (n, flooded) in windows.iter().enumerate() {
        let files = c.ls_names(&format!("flood{}", n + 1));
        assert_eq!(files.len() as u64, flooded.requests / 2, "{files:?}");
    }
}

#[test]
fn garbage_and_slow_loris_connections_leave_the_cluster_serving_at_normal_speed() {
    serves_through_a_flood(IDLE_CONNS);
}

#[test]
fn more_silent_connections_than_handshake_slots_still_leave_room_for_clients() {
    // 4 of 5 go to the leader: 4,800, past its 4,096 handshakes in progress.
    serves_through_a_flood(6000);
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("a VmRSS line");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS in kB")
}

#[test]
fn half_sent_handshakes_cannot_inflate_a_nodes_memory() {
    let c = Cluster::start(3);
    raise_fd_limit(4200);
    let leader = c.node_addr(3);
    let pid = c.pid(3).expect("node 3 runs");
    let before = rss_kib(pid);
    // A valid preamble and all but the last byte of a 64 KiB handshake record.
    let mut record = secure::preamble().to_vec();
    record.extend_from_slice(&[0xff, 0xff]);
    record.extend(std::iter::repeat_n(0x41u8, 0xffff - 1));
    let mut conns = Vec::new();
    for _ in 0..4000 {
        let mut s = TcpStream::connect(&leader).expect("connect");
        let _ = s.write_all(&record);
        conns.push(s);
    }
    thread::sleep(Duration::from_millis(1500));
    let held = rss_kib(pid);
    drop(conns);
    // Past the handshake timeout: every one of them is gone.
    thread::sleep(scs_common::conn::HANDSHAKE_TIMEOUT + Duration::from_secs(1));
    let after = rss_kib(pid);
    println!(
        "node 3 resident memory: {before} KiB before, {held} KiB with 4,000 half-sent handshakes, {after} KiB after"
    );
    c.status();
    c.assert_no_node_died();
    assert!(held < before + 64 * 1024, "4,000 half-sent handshakes grew node 3 from {before} KiB to {held} KiB");
    assert!(after < before + 16 * 1024, "node 3 kept {after} KiB (from {before} KiB) after the connections were cut");
}

#[test]
fn a_client_over_its_request_rate_is_slowed_down_not_refused() {
    let c = Cluster::builder(3).config("client_requests_per_sec = 20\n").start();
    let rt = runtime();
    let k = key(&c);
    let leader = c.node_addr(3);
    let (took, answered) = rt.block_on(async {
        let mut conn = session(&leader, &k).await;
        let started = Instant::now();
        let mut answered = 0;
        // A second's worth passes at once; the next 40 come at 20 a second.
        for _ in 0..60 {
            conn.send(&Message::Request(Request::Status)).await.expect("send Status");
            if matches!(conn.recv_response().await, Ok(Response::Status(_))) {
                answered += 1;
            }
        }
        (started.elapsed(), answered)
    });
    println!("60 requests at a limit of 20 a second: {took:.2?}");
    assert_eq!(answered, 60, "every request is answered");
    assert!(took >= Duration::from_millis(1700), "60 requests took only {took:?} at 20 a second");
    // Nodes are not held to it: the cluster stays healthy.
    c.assert_no_node_died();
    assert_eq!(c.status().leader, Some(3));
}

/// Sends `UploadMany(specs)` on `conn`; once `Ready`, each of `sent` (its
/// bytes, then an End with its hash); returns the answer.
async fn store_many(
    conn: &mut Connection,
    specs: Vec<UploadSpec>,
    sent: &[(&[u8], ContentHash)],
) -> Result<Response, Error> {
    conn.send(&Message::Request(Request::UploadMany(specs))).await?;
    match conn.recv_response().await? {
        Response::Ready => {}
        other => panic!("expected Ready, got {other:?}"),
    }
    for (bytes, end_hash) in sent {
        if !bytes.is_empty() {
            conn.write_data(bytes).await?;
        }
        conn.send(&Message::End { hash: *end_hash }).await?;
    }
    conn.recv_response().await
}

#[test]
fn an_upload_of_many_refuses_what_it_must_and_answers_each_file_on_its_own() {
    let c = Cluster::start(3);
    let rt = runtime();
    let k = key(&c);
    let leader = c.node_addr(3);
    c.upload_bytes("kept.txt", b"kept");
    let kept = rt.block_on(resolve(&leader, &k, "kept.txt")).expect("kept.txt");
    let (first, _) = reserve_inodes(&rt, &leader, &k, 8);
    let new = |i: u64, name: &str, size: u64| {
        UploadSpec::new(
            Target::New { parent: Ino::ROOT, name: name.into(), ino: Ino(first.0 + i) },
            Some(size),
            0o640,
            7,
        )
    };
    let before = snapshot(&c, &rt, &leader);
    use ErrorCode::{Corrupt, Invalid, NotFound};

    // Refused as a whole, before any byte is taken.
    let max = scs_common::inode::INLINE_MAX;
    let too_many: Vec<UploadSpec> = (0..65).map(|i| new(i % 8, &format!("f{i}"), 1)).collect();
    let whole: Vec<(&str, Vec<UploadSpec>, &str)> = vec![
        ("no file", vec![], "1 to 64"),
        ("65 files", too_many, "1 to 64"),
        ("a file over the size for many", vec![new(0, "big", max + 1)], "up to 8192 bytes"),
        ("a file of unknown size", vec![UploadSpec::new(Target::Ino(kept.ino), None, 0o644, 1)], "up to 8192 bytes"),
        ("a file by path", vec![path_spec("by-path.txt", Some(1))], "by inode"),
        ("one file twice", vec![new(0, "a", 1), new(0, "b", 1)], "twice"),
    ];
    for (what, specs, needle) in whole {
        let res = rt.block_on(call(&leader, &k, Request::UploadMany(specs)));
        assert_error(res, Invalid, needle, what);
        assert_unchanged(&c, &rt, &leader, &before, what);
    }
    let res = rt.block_on(call(&c.node_addr(1), &k, Request::UploadMany(vec![new(0, "a", 1)])));
    assert_error(res, ErrorCode::NotLeader, "", "an upload of many to a follower");
    assert_unchanged(&c, &rt, &leader, &before, "an upload of many to a follower");

    // Each file gets its own answer: the good ones are stored.
    let specs = vec![
        new(0, "good.txt", 3),
        new(1, "wrong-hash.txt", 3),
        new(2, "short.txt", 5),
        UploadSpec::new(Target::Ino(NEVER_HANDED_OUT), Some(1), 0o644, 1),
        UploadSpec::new(
            Target::New { parent: Ino::ROOT, name: "unreserved".into(), ino: Ino(NEVER_HANDED_OUT.0 + 1) },
            Some(1),
            0o644,
            1,
        ),
        UploadSpec::new(Target::Ino(kept.ino), Some(4), 0o644, 1),
        new(3, "empty.txt", 0),
    ];
    let sent: Vec<(&[u8], ContentHash)> = vec![
        (b"aaa", hash(b"aaa")),
        (b"bbb", hash(b"other")),
        (b"ccc", hash(b"ccc")),
        (b"x", hash(b"x")),
        (b"y", hash(b"y")),
        (b"new!", hash(b"new!")),
        (b"", hash(b"")),
    ];
    let answer = rt.block_on(async {
        let mut conn = session(&leader, &k).await;
        store_many(&mut conn, specs, &sent).await
    });
    let Ok(Response::Many(answers)) = answer else { panic!("expected Many, got {answer:?}") };
    assert_eq!(answers.len(), 7, "{answers:?}");
    let code = |i: usize| match &answers[i] {
        Response::Error(w) => Some(Error::from_wire(w.clone()).code()),
        _ => None,
    };
    let stored = |i: usize| stored_inode(&answers[i]);
    assert!(stored(0).is_some_and(|i| i.size == 3 && i.mode & 0o777 == 0o640), "{:?}", answers[0]);
    assert_eq!(code(1), Some(Corrupt), "the wrong hash: {:?}", answers[1]);
    assert_eq!(code(2), Some(Invalid), "fewer bytes than announced: {:?}", answers[2]);
    assert_eq!(code(3), Some(NotFound), "an inode nobody has: {:?}", answers[3]);
    assert_eq!(code(4), Some(Invalid), "an inode never reserved: {:?}", answers[4]);
    assert!(stored(5).is_some_and(|i| i.ino == kept.ino && i.size == 4), "{:?}", answers[5]);
    assert!(stored(6).is_some_and(|i| i.size == 0), "{:?}", answers[6]);
    assert_eq!(rt.block_on(download(&leader, &k, "good.txt", 0, None)).unwrap(), b"aaa");
    assert_eq!(rt.block_on(download(&leader, &k, "kept.txt", 0, None)).unwrap(), b"new!");
    assert_eq!(rt.block_on(download(&leader, &k, "empty.txt", 0, None)).unwrap(), b"");
    for refused in ["wrong-hash.txt", "short.txt", "unreserved"] {
        assert!(rt.block_on(resolve(&leader, &k, refused)).is_none(), "{refused} was stored");
    }
    c.assert_content("good.txt", b"aaa");

    // More bytes than a file announced: the stream cannot be followed, so
    // the session closes and nothing of it is stored.
    let before = snapshot(&c, &rt, &leader);
    let (res, closed) = rt.block_on(async {
        let mut conn = session(&leader, &k).await;
        let res = store_many(
            &mut conn,
            vec![new(4, "long.txt", 2), new(5, "next.txt", 1)],
            &[(b"too long", hash(b"too long")), (b"n", hash(b"n"))],
        )
        .await;
        (res, closed_within(&mut conn, CLEANUP_TIMEOUT).await)
    });
    assert_error(res, Invalid, "more than the announced", "more bytes than announced in an upload of many");
    assert!(closed, "the session stays open after a stream it cannot follow");
    assert_unchanged(&c, &rt, &leader, &before, "more bytes than announced in an upload of many");
}
