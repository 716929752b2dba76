//! UDP gossip: heartbeats and bully-election messages, sealed with the
//! cluster key, and the replay guard that receivers keep.
//!
//! A datagram is `MAGIC | version (u16 BE) | msgpack(Envelope) | HMAC-SHA256`,
//! the MAC taken over everything before it. Decoding is a pure function.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::auth::ClusterKey;
use crate::types::{NodeId, Term, Version};
use crate::PROTOCOL_VERSION;

pub const MAGIC: &[u8; 4] = b"SCSg";
/// Datagrams larger than this are never sent and never accepted.
pub const MAX_DATAGRAM: usize = 1400;
const MAC_LEN: usize = 32;
const HEADER_LEN: usize = 6;

/// What a node is doing in the election.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Follower,
    Candidate,
    Leader,
}

/// The election-level messages (DESIGN section 3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gossip {
    /// Sent by every node every `heartbeat_ms`.
    Heartbeat(Heartbeat),
    /// "I am running for leader": higher ids answer and run themselves.
    Election { term: Term },
    /// "I am higher and alive; wait for my Coordinator."
    Answer { term: Term, to: NodeId },
    /// "I lead `term`."
    Coordinator { term: Term },
}

/// A node's view of the election, sent every heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The highest term the sender has seen.
    pub term: Term,
    /// The leader the sender accepted for `term`, if any.
    pub leader: Option<NodeId>,
    pub role: Role,
    /// Caught up with the current leader, so it may take the lead from a lower id.
    pub eligible: bool,
}

/// What a node tells everyone about itself in every datagram.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Where its TCP server listens.
    pub addr: String,
    /// Blobs it holds.
    pub files: u64,
    /// Its capacity; `None` = unlimited.
    pub max_files: Option<u64>,
    /// As a leader: has quorum and has finished catching up, so serves requests.
    pub ready: bool,
    /// Bytes free and in all on the disk of its data directory.
    pub disk_free: u64,
    pub disk_total: u64,
    /// Copies it should keep but has yet to fetch.
    pub wanted: u64,
    /// Bad copies found since it started.
    pub corrupt: u64,
    /// As leader: files below their replica target.
    pub under_replicated: u64,
    /// The version of the membership it has (zero: the configured one), so
    /// that a node that missed a change learns it from anyone it hears.
    #[serde(default)]
    pub members: Version,
    /// Bytes of the files whose content it holds (counted every few seconds).
    #[serde(default)]
    pub bytes: u64,
    /// Blobs it holds: `files` without the small files every node keeps in
    /// its index.
    #[serde(default)]
    pub blobs: u64,
    /// Bytes of content in the trash that it keeps (counted every few seconds).
    #[serde(default)]
    pub trash_bytes: u64,
}

/// One authenticated datagram.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: NodeId,
    /// How many members the sender counts, so a misconfigured node is noticed.
    pub cluster_size: u32,
    /// The sender's start time (ms); with `seq`, a strictly growing counter.
    pub incarnation: u64,
    pub seq: u64,
    /// Wall-clock send time (ms since the epoch), to bound replays.
    pub ts_ms: u64,
    pub info: NodeInfo,
    pub msg: Gossip,
}

/// Why a datagram was dropped. Counted by the receiver, never obeyed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    #[error("datagram too short ({0} bytes)")]
    TooShort(usize),
    #[error("datagram too long ({0} bytes)")]
    TooLong(usize),
    #[error("not an scs datagram")]
    BadMagic,
    #[error("protocol version {0}, expected {PROTOCOL_VERSION}")]
    BadVersion(u16),
    #[error("bad mac (wrong cluster key or forged)")]
    BadMac,
    #[error("undecodable envelope: {0}")]
    Undecodable(String),
}

/// Seals an envelope into datagram bytes.
pub fn encode(key: &ClusterKey, env: &Envelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    // Serializing our own plain struct into a Vec cannot fail.
    rmp_serde::encode::write(&mut out, env).expect("envelope serializes");
    let mac = key.mac(&[b"gossip", &out]);
    out.extend_from_slice(&mac);
    out
}

/// Checks and opens datagram bytes. Pure: no clock, no replay state.
pub fn decode(key: &ClusterKey, bytes: &[u8]) -> Result<Envelope, DatagramError> {
    if bytes.len() < HEADER_LEN + MAC_LEN {
        return Err(DatagramError::TooShort(bytes.len()));
    }
    if bytes.len() > MAX_DATAGRAM {
        return Err(DatagramError::TooLong(bytes.len()));
    }
    if &bytes[..4] != MAGIC {
        return Err(DatagramError::BadMagic);
    }
    let version = u16::from_be_bytes([bytes[4], bytes[5]]);
    if version != PROTOCOL_VERSION {
        return Err(DatagramError::BadVersion(version));
    }
    let (body, mac) = bytes.split_at(bytes.len() - MAC_LEN);
    if !key.verify(&[b"gossip", body], mac) {
        return Err(DatagramError::BadMac);
    }
    rmp_serde::from_slice(&body[HEADER_LEN..]).map_err(|e| DatagramError::Undecodable(e.to_string()))
}

/// Drops replayed and stale datagrams: each sender's `(incarnation, seq)`
/// must grow, and its timestamp must be within `window_ms` of ours.
#[derive(Debug)]
pub struct ReplayGuard {
    window_ms: u64,
    /// Per sender: its highest (incarnation, seq), and when we last admitted one.
    last: HashMap<NodeId, ((u64, u64), u64)>,
}

impl ReplayGuard {
    pub fn new(window_ms: u64) -> ReplayGuard {
        ReplayGuard { window_ms, last: HashMap::new() }
    }

    /// Whether to accept `env`, received at `now_ms`; remembers it if so.
    pub fn admit(&mut self, env: &Envelope, now_ms: u64) -> bool {
        if env.ts_ms.abs_diff(now_ms) > self.window_ms {
            return false;
        }
        let counter = (env.incarnation, env.seq);
        match self.last.get(&env.from) {
            // Not newer: a replay, unless the sender has been silent longer
            // than the window (it restarted with its clock set back; a real
            // replay that old fails the timestamp check above).
            Some(&(seen, at)) if counter <= seen && now_ms.saturating_sub(at) <= self.window_ms => false,
            _ => {
                self.last.insert(env.from, (counter, now_ms));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> ClusterKey {
        ClusterKey::from_bytes([b; 32])
    }

    fn envelope(seq: u64) -> Envelope {
        Envelope {
            from: NodeId(3),
            cluster_size: 3,
            incarnation: 1000,
            seq,
            ts_ms: 50_000,
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
                members: Version::new(Term(2), 1),
                bytes: 2 << 20,
                blobs: 2,
                trash_bytes: 1 << 20,
            },
            msg: Gossip::Heartbeat(Heartbeat {
                term: Term(4),
                leader: Some(NodeId(3)),
                role: Role::Leader,
                eligible: true,
            }),
        }
    }

    #[test]
    fn a_sealed_datagram_opens_with_the_same_key() {
        let bytes = encode(&key(1), &envelope(1));
        assert!(bytes.len() < 200, "heartbeats stay small: {}", bytes.len());
        assert_eq!(decode(&key(1), &bytes).unwrap(), envelope(1));
    }

    #[test]
    fn a_datagram_under_another_key_is_refused() {
        let bytes = encode(&key(1), &envelope(1));
        assert_eq!(decode(&key(2), &bytes), Err(DatagramError::BadMac));
    }

    #[test]
    fn any_flipped_bit_is_refused() {
        let bytes = encode(&key(1), &envelope(1));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode(&key(1), &b).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        for len in [0, 5, 37, 100, 1400, 5000] {
            let junk: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            assert!(decode(&key(1), &junk).is_err());
        }
    }

    #[test]
    fn replayed_and_old_datagrams_are_dropped() {
        let mut guard = ReplayGuard::new(30_000);
        assert!(guard.admit(&envelope(5), 50_000));
        assert!(!guard.admit(&envelope(5), 50_010), "the same datagram twice");
        assert!(!guard.admit(&envelope(4), 50_010), "an older one");
        assert!(guard.admit(&envelope(6), 50_010));
        let mut restarted = envelope(1);
        restarted.incarnation = 2000;
        assert!(guard.admit(&restarted, 50_010), "a restarted sender starts a new incarnation");
        let mut stepped_back = envelope(1);
        stepped_back.incarnation = 500;
        stepped_back.ts_ms = 50_010 + 31_000;
        assert!(guard.admit(&stepped_back, 50_010 + 31_000), "a sender silent past the window starts afresh");
        let mut stale = envelope(99);
        stale.incarnation = 3000;
        assert!(!guard.admit(&stale, 50_000 + 31_000), "outside the time window");
    }
}
