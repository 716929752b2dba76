//! Property tests for everything that decodes bytes from the network or
//! names from a user: arbitrary input never panics, whatever is accepted
//! obeys the rules, and every message survives an encode/decode round trip.
//!
//! The same decoders are fuzzed by `fuzz/` (`make fuzz`); these run in
//! `make test` with proptest's seeded, shrinking generator.

use proptest::collection::vec;
use proptest::prelude::*;

use crate::auth::ClusterKey;
use crate::error::WireError;
use crate::inode::{
    Bytes, Changed, Dentry, DirEntry, DirStep, Inode, MemberState, NewNode, NextIno, Record, Removal, RenameMode,
    SetAttrs, TimeSet, XattrMode, Xattrs,
};
use crate::locks::{FileLock, LockAnswer, LockKind, SessionId};
use crate::name::{self, NAME_MAX, PATH_MAX};
use crate::proto::frame::{self, FrameKind, HEADER_LEN, MAX_DATA, MAX_MESSAGE};
use crate::proto::gossip::{self, DatagramError, Envelope, Gossip, Heartbeat, NodeInfo, Role};
use crate::proto::rpc::{HolderAddr, Message, Moving, NodeStatus, Request, Response, StatusReport, Target, UploadSpec};
use crate::types::{ContentHash, Ino, Key, Kind, NodeId, Term, Version};
use crate::Error;

// ----- strategies -----

/// Names as users type them: mostly plain, sometimes with the tricky parts
/// (spaces, dots, non-ASCII) that must survive the wire.
fn arb_name() -> impl Strategy<Value = String> {
    vec("[a-z0-9 ._-]{1,12}|[éçü日本語]{1,4}", 1..5).prop_map(|parts| parts.join("/"))
}

/// Any string at all, including the ones validation must refuse.
fn arb_hostile_name() -> impl Strategy<Value = String> {
    let component = prop_oneof![
        Just(String::new()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("\0".to_string()),
        Just("a\0b".to_string()),
        "[a-z]{1,8}",
        "\\PC{0,6}",
        (250usize..260).prop_map(|n| "x".repeat(n)),
        (250usize..260).prop_map(|n| "é".repeat(n / 2)),
    ];
    prop_oneof![
        any::<String>(),
        vec(component, 0..24).prop_map(|parts| parts.join("/")),
        (0usize..3, vec("[a-z]{1,8}", 0..4)).prop_map(|(lead, parts)| format!(
            "{}{}",
            "/".repeat(lead),
            parts.join("/")
        )),
        (4090usize..4100).prop_map(|n| "y/".repeat(n / 2).trim_end_matches('/').to_string()),
    ]
}

fn arb_hash() -> impl Strategy<Value = ContentHash> {
    any::<[u8; 32]>().prop_map(ContentHash)
}

fn arb_key() -> impl Strategy<Value = Key> {
    any::<[u8; 32]>().prop_map(Key)
}

fn arb_term() -> impl Strategy<Value = Term> {
    any::<u64>().prop_map(Term)
}

fn arb_node() -> impl Strategy<Value = NodeId> {
    any::<u32>().prop_map(NodeId)
}

fn arb_version() -> impl Strategy<Value = Version> {
    (arb_term(), any::<u64>()).prop_map(|(term, seq)| Version { term, seq })
}

fn arb_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::File),
        Just(Kind::Dir),
        Just(Kind::Symlink),
        Just(Kind::Fifo),
        Just(Kind::Socket),
        Just(Kind::CharDev),
        Just(Kind::BlockDev)
    ]
}

fn arb_role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Follower), Just(Role::Candidate), Just(Role::Leader)]
}

fn arb_ino() -> impl Strategy<Value = Ino> {
    any::<u64>().prop_map(Ino)
}

fn arb_xattrs() -> impl Strategy<Value = Xattrs> {
    proptest::collection::btree_map("user\\.[a-z]{1,8}", vec(any::<u8>(), 0..16).prop_map(Bytes), 0..3)
}

fn arb_inode() -> impl Strategy<Value = Inode> {
    (
        (arb_ino(), arb_version(), arb_kind(), any::<(u32, u32, u32, u32)>(), arb_ino(), any::<u64>()),
        (any::<(i64, i64, i64)>(), any::<u64>(), "\\PC{0,12}", arb_xattrs()),
        (arb_version(), arb_hash(), vec(arb_node(), 0..5), any::<bool>()),
        proptest::option::of(vec(any::<u8>(), 0..64).prop_map(Bytes)),
        proptest::option::of((arb_ino(), "\\PC{0,12}", any::<i64>(), proptest::option::of(arb_ino()))),
    )
        .prop_map(
            |(
                (ino, version, kind, (mode, uid, gid, nlink), parent, size),
                ((atime_ns, mtime_ns, ctime_ns), rdev, target, xattrs),
                (content, hash, holders, deleted),
                inline,
                trashed,
            )| Inode {
                ino,
                version,
                kind,
                mode,
                uid,
                gid,
                nlink,
                parent,
                size,
                atime_ns,
                mtime_ns,
                ctime_ns,
                rdev,
                target,
                xattrs,
                content,
                hash,
                holders,
                deleted,
                inline,
                trashed: trashed.map(|(dir, name, at_ns, version_of)| {
                    Box::new(crate::inode::Trashed { dir, name, at_ns, version_of })
                }),
            },
        )
}

fn arb_record() -> impl Strategy<Value = Record> {
    prop_oneof![
        arb_inode().prop_map(Record::Inode),
        (arb_ino(), arb_name(), arb_version(), arb_ino(), arb_kind(), any::<bool>(), any::<i64>()).prop_map(
            |(parent, name, version, child, kind, deleted, stamp_ns)| Record::Dentry(Dentry {
                parent,
                name,
                version,
                child,
                kind,
                deleted,
                stamp_ns
            })
        ),
        (arb_version(), arb_ino(), any::<i64>()).prop_map(|(version, next, stamp_ns)| Record::NextIno(NextIno {
            version,
            next,
            stamp_ns
        })),
        (arb_version(), vec((any::<u32>(), any::<bool>()), 0..6), any::<i64>()).prop_map(
            |(version, nodes, stamp_ns)| Record::Members(crate::inode::Members {
                version,
                nodes: nodes
                    .into_iter()
                    .map(|(id, draining)| {
                        let state = if draining {
                            crate::inode::MemberState::Draining
                        } else {
                            crate::inode::MemberState::Active
                        };
                        (NodeId(id), state)
                    })
                    .collect(),
                stamp_ns
            })
        ),
    ]
}

fn arb_records() -> impl Strategy<Value = Vec<Record>> {
    vec(arb_record(), 0..4)
}

fn arb_fence() -> impl Strategy<Value = Option<(Term, NodeId)>> {
    proptest::option::of((arb_term(), arb_node()))
}

fn arb_target() -> impl Strategy<Value = Target> {
    prop_oneof![
        arb_name().prop_map(Target::Path),
        arb_ino().prop_map(Target::Ino),
        (arb_ino(), arb_name(), arb_ino()).prop_map(|(parent, name, ino)| Target::New { parent, name, ino }),
    ]
}

fn arb_upload() -> impl Strategy<Value = UploadSpec> {
    (
        arb_target(),
        proptest::option::of(any::<u64>()),
        any::<(u32, u32, u32)>(),
        any::<(i64, i64)>(),
        arb_xattrs(),
        any::<bool>(),
    )
        .prop_map(|(target, size, (mode, uid, gid), (mtime_ns, atime_ns), xattrs, exclusive)| UploadSpec {
            target,
            size,
            mtime_ns,
            mode,
            uid,
            gid,
            atime_ns,
            xattrs,
            exclusive,
        })
}

fn arb_time() -> impl Strategy<Value = Option<TimeSet>> {
    proptest::option::of(prop_oneof![Just(TimeSet::Now), any::<i64>().prop_map(TimeSet::At)])
}

fn arb_session() -> impl Strategy<Value = SessionId> {
    any::<u64>().prop_map(SessionId)
}

fn arb_file_lock() -> impl Strategy<Value = FileLock> {
    (arb_ino(), any::<u64>(), any::<u64>(), any::<u64>(), any::<bool>(), any::<u32>()).prop_map(
        |(ino, owner, start, end, write, pid)| FileLock {
            ino,
            owner,
            start,
            end,
            kind: if write { LockKind::Write } else { LockKind::Read },
            pid,
        },
    )
}

fn arb_lock_answer() -> impl Strategy<Value = LockAnswer> {
    prop_oneof![
        Just(LockAnswer::Granted),
        (arb_file_lock(), any::<bool>()).prop_map(|(lock, ours)| LockAnswer::Conflict { lock, ours }),
        any::<u64>().prop_map(|retry_ms| LockAnswer::Grace { retry_ms }),
        Just(LockAnswer::UnknownSession),
    ]
}

fn arb_request() -> impl Strategy<Value = Request> {
    let opt_u64 = || proptest::option::of(any::<u64>());
    let opt_u32 = || proptest::option::of(any::<u32>());
    prop_oneof![
        arb_upload().prop_map(Request::Upload),
        (arb_name(), any::<u64>(), opt_u64()).prop_map(|(path, offset, len)| Request::Download { path, offset, len }),
        (arb_ino(), any::<u64>(), opt_u64()).prop_map(|(ino, offset, len)| Request::Read { ino, offset, len }),
        (arb_ino(), arb_version(), any::<u64>(), opt_u64()).prop_map(|(ino, content, offset, len)| Request::ReadBlob {
            ino,
            content,
            offset,
            len
        }),
        (arb_name(), any::<bool>()).prop_map(|(path, follow)| Request::Resolve { path, follow }),
        (arb_ino(), arb_name()).prop_map(|(parent, name)| Request::Lookup { parent, name }),
        arb_ino().prop_map(|ino| Request::GetAttr { ino }),
        arb_ino().prop_map(|dir| Request::ReadDir { dir }),
        (arb_ino(), arb_name(), arb_kind(), any::<(u32, u32, u32, u64)>(), "\\PC{0,12}").prop_map(
            |(parent, name, kind, (mode, uid, gid, rdev), target)| Request::Make {
                parent,
                name,
                node: NewNode { kind, mode, uid, gid, rdev, target }
            }
        ),
        (arb_ino(), arb_ino(), arb_name()).prop_map(|(ino, parent, name)| Request::Link { ino, parent, name }),
        (arb_ino(), arb_name(), prop_oneof![Just(Removal::NonDir), Just(Removal::Dir), Just(Removal::Any)])
            .prop_map(|(parent, name, what)| Request::Remove { parent, name, what }),
        (
            arb_ino(),
            arb_name(),
            arb_ino(),
            arb_name(),
            prop_oneof![Just(RenameMode::Replace), Just(RenameMode::NoReplace), Just(RenameMode::Exchange)]
        )
            .prop_map(|(parent, name, new_parent, new_name, mode)| Request::Rename {
                parent,
                name,
                new_parent,
                new_name,
                mode
            }),
        (arb_ino(), opt_u32(), opt_u32(), opt_u32(), arb_time(), arb_time()).prop_map(
            |(ino, mode, uid, gid, atime, mtime)| Request::SetAttr {
                ino,
                set: SetAttrs { mode, uid, gid, atime, mtime }
            }
        ),
        (
            arb_ino(),
            "\\PC{0,12}",
            vec(any::<u8>(), 0..12),
            prop_oneof![Just(XattrMode::Any), Just(XattrMode::Create), Just(XattrMode::Replace)]
        )
            .prop_map(|(ino, name, value, mode)| Request::SetXattr { ino, name, value: Bytes(value), mode }),
        (arb_ino(), "\\PC{0,12}").prop_map(|(ino, name)| Request::RemoveXattr { ino, name }),
        any::<u32>().prop_map(|count| Request::ReserveInodes { count }),
        Just(Request::Status),
        (arb_ino(), arb_version()).prop_map(|(ino, content)| Request::ReportCorrupt { ino, content }),
        Just(Request::Digests),
        any::<u8>().prop_map(|bucket| Request::BucketVersions { bucket }),
        vec(arb_key(), 0..4).prop_map(|keys| Request::RecordsFor { keys }),
        arb_records().prop_map(|records| Request::Offer { records }),
        (arb_term(), arb_node(), vec((arb_key(), arb_version()), 0..4))
            .prop_map(|(term, leader, items)| Request::Purge { term, leader, items }),
        (arb_term(), arb_node(), arb_ino(), arb_version(), opt_u64())
            .prop_map(|(term, leader, ino, content, size)| Request::Replicate { term, leader, ino, content, size }),
        (arb_term(), arb_node(), arb_records()).prop_map(|(term, leader, records)| Request::Apply {
            term,
            leader,
            records
        }),
        (arb_version(), arb_fence()).prop_map(|(since, fence)| Request::Pull { since, fence }),
        (arb_session(), arb_file_lock()).prop_map(|(session, lock)| Request::Lock { session, lock }),
        (arb_session(), arb_ino(), any::<(u64, u64, u64)>())
            .prop_map(|(session, ino, (owner, start, end))| Request::Unlock { session, ino, owner, start, end }),
        (arb_session(), arb_file_lock()).prop_map(|(session, lock)| Request::TestLock { session, lock }),
        arb_session().prop_map(|session| Request::KeepAlive { session }),
        (arb_session(), vec(arb_file_lock(), 0..4)).prop_map(|(session, locks)| Request::Reclaim { session, locks }),
        vec(arb_upload(), 0..4).prop_map(Request::UploadMany),
    ]
}

fn arb_node_status() -> impl Strategy<Value = NodeStatus> {
    (
        arb_node(),
        "[0-9.:]{0,21}",
        any::<bool>(),
        proptest::option::of(arb_role()),
        any::<u64>(),
        proptest::option::of(any::<u64>()),
        any::<(u64, u64, u64, u64)>(),
        (any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |(id, addr, alive, role, files, max_files, (disk_free, disk_total, wanted, corrupt), (draining, bytes))| {
                let state = if draining { MemberState::Draining } else { MemberState::Active };
                NodeStatus {
                    id,
                    addr,
                    alive,
                    role,
                    files,
                    max_files,
                    disk_free,
                    disk_total,
                    wanted,
                    corrupt,
                    state,
                    bytes,
                    trash_bytes: bytes / 2,
                }
            },
        )
}

fn arb_status() -> impl Strategy<Value = StatusReport> {
    (
        arb_node(),
        proptest::option::of(arb_node()),
        arb_term(),
        any::<bool>(),
        any::<(u32, u32)>(),
        vec(arb_node_status(), 0..4),
        any::<u64>(),
    )
        .prop_map(|(node, leader, term, quorum, (cluster_size, replicas), nodes, under_replicated)| StatusReport {
            node,
            leader,
            term,
            quorum,
            cluster_size,
            replicas,
            nodes,
            under_replicated,
            candidates: Vec::new(),
            moving: Moving { files: 1, bytes: 2, bytes_per_sec: 3 },
        })
}

fn arb_response() -> impl Strategy<Value = Response> {
    prop_oneof![
        Just(Response::Done),
        Just(Response::Ready),
        arb_inode().prop_map(Response::Attr),
        Just(Response::Missing),
        (vec(arb_inode(), 0..3), vec((arb_ino(), arb_version(), arb_version()), 0..3)).prop_map(|(inodes, dirs)| {
            let dirs = dirs.into_iter().map(|(dir, before, after)| DirStep { dir, before, after }).collect();
            Response::Changed(Changed { inodes, dirs })
        }),
        (vec((arb_name(), arb_inode()), 0..3), any::<bool>(), proptest::option::of(arb_version())).prop_map(
            |(entries, more, version)| Response::Listing {
                entries: entries.into_iter().map(|(name, inode)| DirEntry { name, inode }).collect(),
                more,
                version
            }
        ),
        (arb_inode(), any::<u64>(), any::<u64>()).prop_map(|(inode, offset, len)| Response::Content {
            inode,
            offset,
            len
        }),
        (arb_inode(), vec((arb_node(), "[0-9.:]{0,21}"), 0..3)).prop_map(|(inode, hs)| Response::Redirect {
            inode,
            holders: hs.into_iter().map(|(id, addr)| HolderAddr { id, addr }).collect(),
        }),
        arb_status().prop_map(Response::Status),
        (arb_records(), any::<bool>(), arb_version()).prop_map(|(records, more, watermark)| Response::Pulled {
            records,
            more,
            watermark
        }),
        vec(any::<u64>(), 0..8).prop_map(Response::Digests),
        vec((arb_key(), arb_version()), 0..4).prop_map(Response::Versions),
        arb_records().prop_map(Response::Records),
        (arb_ino(), any::<u32>()).prop_map(|(first, count)| Response::Inodes { first, count }),
        (any::<u16>(), "\\PC{0,40}").prop_map(|(code, message)| Response::Error(WireError { code, message })),
        arb_lock_answer().prop_map(Response::Lock),
        vec(arb_file_lock(), 0..4).prop_map(Response::Reclaimed),
        vec(arb_inode().prop_map(Response::Attr), 0..3).prop_map(Response::Many),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        4 => arb_request().prop_map(Message::Request),
        4 => arb_response().prop_map(Message::Response),
        1 => arb_hash().prop_map(|hash| Message::End { hash }),
    ]
}

fn arb_envelope() -> impl Strategy<Value = Envelope> {
    let info = (
        "[0-9.:]{0,21}",
        any::<u64>(),
        proptest::option::of(any::<u64>()),
        any::<bool>(),
        any::<(u64, u64, u64, u64, u64, u64)>(),
        arb_version(),
    )
        .prop_map(
            |(
                addr,
                files,
                max_files,
                ready,
                (disk_free, disk_total, wanted, corrupt, under_replicated, bytes),
                members,
            )| {
                NodeInfo {
                    addr,
                    files,
                    max_files,
                    ready,
                    disk_free,
                    disk_total,
                    wanted,
                    corrupt,
                    under_replicated,
                    members,
                    bytes,
                    blobs: files,
                    trash_bytes: bytes / 3,
                }
            },
        );
    let msg = prop_oneof![
        (arb_term(), proptest::option::of(arb_node()), arb_role(), any::<bool>())
            .prop_map(|(term, leader, role, eligible)| Gossip::Heartbeat(Heartbeat { term, leader, role, eligible })),
        arb_term().prop_map(|term| Gossip::Election { term }),
        (arb_term(), arb_node()).prop_map(|(term, to)| Gossip::Answer { term, to }),
        arb_term().prop_map(|term| Gossip::Coordinator { term }),
    ];
    (arb_node(), any::<u32>(), any::<(u64, u64, u64)>(), info, msg).prop_map(
        |(from, cluster_size, (incarnation, seq, ts_ms), info, msg)| Envelope {
            from,
            cluster_size,
            incarnation,
            seq,
            ts_ms,
            info,
            msg,
        },
    )
}

/// Bytes that look like msgpack: mostly random, sometimes a valid encoding
/// with a few bytes flipped, cut or appended, so decoding gets past the
/// first byte and into the fields.
fn arb_msgpack_like() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..256),
        (arb_message(), vec((any::<usize>(), any::<u8>()), 1..4), any::<usize>()).prop_map(|(m, flips, cut)| {
            let mut b = rmp_serde::to_vec(&m).expect("messages encode");
            for (at, x) in flips {
                let i = at % b.len();
                b[i] ^= x | 1;
            }
            b.truncate(b.len() - cut % b.len().max(1) / 2);
            b
        }),
    ]
}

/// The key every datagram property uses.
fn key() -> ClusterKey {
    ClusterKey::from_bytes([7; 32])
}

/// `body` sealed as a datagram with a valid MAC, as a cluster member would
/// send it: what an attacker cannot make, so decoding must hold up anyway.
fn sealed(body: &[u8]) -> Vec<u8> {
    let mut out = gossip::MAGIC.to_vec();
    out.extend_from_slice(&crate::PROTOCOL_VERSION.to_be_bytes());
    out.extend_from_slice(body);
    let mac = key().mac(&[b"gossip", &out]);
    out.extend_from_slice(&mac);
    out
}

/// The rules every accepted name must obey (DESIGN section 2).
fn assert_obeys_the_rules(n: &str) -> Result<(), TestCaseError> {
    prop_assert!(!n.is_empty(), "empty name accepted");
    prop_assert!(n.len() <= PATH_MAX, "{} bytes accepted", n.len());
    prop_assert!(!n.contains('\0'), "NUL accepted: {:?}", n);
    prop_assert!(!n.starts_with('/'), "absolute name accepted: {:?}", n);
    for c in n.split('/') {
        prop_assert!(!c.is_empty() && c != "." && c != "..", "component {:?} accepted in {:?}", c, n);
        prop_assert!(c.len() <= NAME_MAX, "component of {} bytes accepted", c.len());
    }
    Ok(())
}

proptest! {
    // ----- messages -----

    #[test]
    fn every_message_survives_an_encode_decode_round_trip(m in arb_message()) {
        let compact = rmp_serde::to_vec(&m).expect("messages encode");
        prop_assert_eq!(&rmp_serde::from_slice::<Message>(&compact).expect("decodes"), &m);
        // A peer may send structs as maps with field names: same message.
        let named = rmp_serde::to_vec_named(&m).expect("messages encode");
        prop_assert_eq!(&rmp_serde::from_slice::<Message>(&named).expect("decodes"), &m);
    }

    #[test]
    fn decoding_arbitrary_bytes_as_a_message_never_panics_and_what_decodes_re_encodes(bytes in arb_msgpack_like()) {
        if let Ok(m) = rmp_serde::from_slice::<Message>(&bytes) {
            // Whatever a peer got through is a value we can send on, unchanged.
            let again = rmp_serde::to_vec(&m).expect("a decoded message encodes");
            prop_assert_eq!(rmp_serde::from_slice::<Message>(&again).expect("and decodes"), m);
        }
    }

    #[test]
    fn a_message_frame_sent_through_the_codec_comes_back_whole(
        msgs in vec(arb_message(), 1..5),
        cuts in vec(any::<usize>(), 0..6),
    ) {
        // Encode as Connection does, then feed the bytes in arbitrary pieces.
        let mut wire = Vec::new();
        for m in &msgs {
            let body = rmp_serde::to_vec(m).expect("messages encode");
            wire.extend_from_slice(&frame::header(FrameKind::Message, body.len()));
            wire.extend_from_slice(&body);
        }
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (wire.len() + 1)).collect();
        cuts.push(wire.len());
        cuts.sort_unstable();
        let (mut buf, mut got, mut fed) = (Vec::new(), Vec::new(), 0);
        for cut in cuts {
            buf.extend_from_slice(&wire[fed..cut]);
            fed = cut;
            while let Some((kind, range)) = frame::decode(&buf).expect("valid frames") {
                prop_assert_eq!(kind, FrameKind::Message);
                got.push(rmp_serde::from_slice::<Message>(&buf[range.clone()]).expect("decodes"));
                buf.drain(..range.end);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, msgs);
    }

    // ----- frames -----

    #[test]
    fn frame_decoding_never_panics_and_never_points_outside_the_buffer(bytes in vec(any::<u8>(), 0..300)) {
        match frame::decode(&bytes) {
            Ok(Some((kind, range))) => {
                prop_assert_eq!(range.start, HEADER_LEN);
                prop_assert!(range.end <= bytes.len());
                let limit = if kind == FrameKind::Message { MAX_MESSAGE } else { MAX_DATA };
                prop_assert!(range.len() <= limit);
            }
            Ok(None) => prop_assert!(bytes.len() < HEADER_LEN || frame::parse_header(&bytes).unwrap().is_some()),
            Err(_) => prop_assert!(bytes.len() >= HEADER_LEN),
        }
    }

    #[test]
    fn a_frame_header_is_judged_on_its_own(len in any::<u32>(), kind in any::<u8>()) {
        let mut h = len.to_be_bytes().to_vec();
        h.push(kind);
        let len = len as usize;
        let res = frame::parse_header(&h);
        match kind {
            1 if len <= MAX_MESSAGE => prop_assert_eq!(res, Ok(Some((FrameKind::Message, len)))),
            2 if len <= MAX_DATA => prop_assert_eq!(res, Ok(Some((FrameKind::Data, len)))),
            1 | 2 => prop_assert!(matches!(res, Err(frame::FrameError::TooLarge { .. })), "{:?}", res),
            k => prop_assert_eq!(res, Err(frame::FrameError::UnknownKind(k))),
        }
    }

    // ----- datagrams -----

    #[test]
    fn every_envelope_survives_sealing_and_opening(env in arb_envelope()) {
        let bytes = gossip::encode(&key(), &env);
        if bytes.len() <= gossip::MAX_DATAGRAM {
            prop_assert_eq!(gossip::decode(&key(), &bytes).expect("opens"), env);
        } else {
            prop_assert_eq!(gossip::decode(&key(), &bytes), Err(DatagramError::TooLong(bytes.len())));
        }
    }

    #[test]
    fn decoding_arbitrary_datagrams_never_panics(mut bytes in vec(any::<u8>(), 0..1500), real_header in any::<bool>()) {
        if real_header && bytes.len() >= 6 {
            bytes[..4].copy_from_slice(gossip::MAGIC);
            bytes[4..6].copy_from_slice(&crate::PROTOCOL_VERSION.to_be_bytes());
        }
        // Nobody without the key gets past the MAC.
        prop_assert!(gossip::decode(&key(), &bytes).is_err());
    }

    #[test]
    fn a_correctly_sealed_datagram_with_a_garbage_body_is_refused_not_obeyed(body in arb_msgpack_like()) {
        let bytes = sealed(&body);
        match gossip::decode(&key(), &bytes) {
            Ok(env) => {
                // Only if the body really is an envelope.
                prop_assert_eq!(rmp_serde::from_slice::<Envelope>(&body).ok(), Some(env));
            }
            Err(DatagramError::Undecodable(_) | DatagramError::TooLong(_)) => {}
            Err(e) => prop_assert!(false, "unexpected {:?}", e),
        }
    }

    // ----- names -----

    #[test]
    fn name_validation_never_panics_and_accepts_only_names_that_obey_the_rules(n in arb_hostile_name()) {
        match name::validate(&n) {
            Ok(v) => {
                prop_assert_eq!(v, n.as_str());
                assert_obeys_the_rules(&n)?;
            }
            Err(Error::BadName(msg) | Error::NameTooLong(msg)) => prop_assert!(!msg.is_empty()),
            Err(e) => prop_assert!(false, "unexpected error {:?}", e),
        }
    }

    #[test]
    fn normalized_names_are_valid_and_normalizing_twice_changes_nothing(n in arb_hostile_name()) {
        if let Ok(norm) = name::normalize(&n) {
            if !norm.is_empty() {
                assert_obeys_the_rules(&norm)?;
            }
            prop_assert_eq!(name::normalize(&norm).expect("a normalized name normalizes"), norm);
        }
    }

    #[test]
    fn path_arithmetic_on_valid_names_is_consistent(n in arb_name()) {
        prop_assume!(name::validate(&n).is_ok());
        prop_assert_eq!(name::join(name::parent(&n), name::base(&n)), n.clone());
        prop_assert!(name::is_inside(&n, name::parent(&n)));
        for a in name::ancestors(&n) {
            prop_assert!(name::validate(a).is_ok());
            prop_assert!(name::is_inside(&n, a));
            prop_assert!(!name::is_inside(a, &n));
        }
        prop_assert!(!name::is_inside(&n, &n));
    }
}

/// A peer cannot make a node recurse without bound: deeply nested msgpack
/// in an ignored field is refused at rmp_serde's depth limit, on a stack as
/// small as a tokio worker's (2 MiB).
#[test]
fn deeply_nested_msgpack_is_refused_on_a_worker_sized_stack() {
    // {"Request": {"Stat": {"name": "a", "x": [[[[...]]]]}}}, nested past the limit.
    let mut b = vec![0x81, 0xa7];
    b.extend_from_slice(b"Request");
    b.extend_from_slice(&[0x81, 0xa4]);
    b.extend_from_slice(b"Stat");
    b.extend_from_slice(&[0x82, 0xa4]);
    b.extend_from_slice(b"name");
    b.extend_from_slice(&[0xa1, b'a', 0xa1, b'x']);
    b.extend(std::iter::repeat_n(0x91, 100_000));
    b.push(0xc0);
    let decoded = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || rmp_serde::from_slice::<Message>(&b).map_err(|e| e.to_string()))
        .expect("spawn")
        .join()
        .expect("decoding did not overflow the stack");
    assert!(decoded.is_err(), "{decoded:?}");
}

#[test]
fn a_message_whose_name_is_not_utf8_is_refused() {
    let mut b = rmp_serde::to_vec(&Message::Request(Request::Resolve { path: "ab".into(), follow: false })).unwrap();
    let at = b.windows(2).position(|w| w == b"ab").unwrap();
    b[at] = 0xff;
    assert!(rmp_serde::from_slice::<Message>(&b).is_err());
}
