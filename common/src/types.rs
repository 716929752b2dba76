//! Newtypes with one meaning each, and the index entry.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A node's id in the cluster: a unique positive integer; the highest live id leads.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// An election generation. Every message carries one; the highest seen wins.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Term(pub u64);

impl Term {
    /// The term after this one.
    pub fn next(self) -> Term {
        Term(self.0 + 1)
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// The version of an index entry: handed out by the leader of `term`, `seq`
/// counting up within the term. Ordered by term, then seq: the highest wins.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    pub term: Term,
    pub seq: u64,
}

impl Version {
    pub const ZERO: Version = Version { term: Term(0), seq: 0 };

    pub fn new(term: Term, seq: u64) -> Version {
        Version { term, seq }
    }

    /// Big-endian bytes, so that byte order is version order (index keys).
    pub fn to_be_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.term.0.to_be_bytes());
        out[8..].copy_from_slice(&self.seq.to_be_bytes());
        out
    }

    pub fn from_be_bytes(b: [u8; 16]) -> Version {
        let mut t = [0u8; 8];
        let mut s = [0u8; 8];
        t.copy_from_slice(&b[..8]);
        s.copy_from_slice(&b[8..]);
        Version { term: Term(u64::from_be_bytes(t)), seq: u64::from_be_bytes(s) }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.term.0, self.seq)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}", self.term.0, self.seq)
    }
}

/// 32 bytes shown as hex; on the wire as a msgpack bin of 32 bytes.
macro_rules! hash_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Lowercase hex of all 32 bytes.
            pub fn to_hex(&self) -> String {
                hex(&self.0)
            }

            /// Parses 64 hex digits.
            pub fn from_hex(s: &str) -> Option<$name> {
                let bytes = unhex(s)?;
                Some($name(bytes.try_into().ok()?))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex()[..8])
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                d.deserialize_bytes(Bytes32Visitor).map($name)
            }
        }
    };
}

hash_newtype!(
    /// The index key of a file: sha256 of its name. Never a path on disk by itself.
    Key
);
hash_newtype!(
    /// The sha256 of a file's content.
    ContentHash
);

impl Key {
    /// The key of a (validated) name: `sha256(name)`.
    pub fn of_name(name: &str) -> Key {
        Key(Sha256::digest(name.as_bytes()).into())
    }
}

impl ContentHash {
    /// The hash of the empty file.
    pub fn of_empty() -> ContentHash {
        ContentHash(Sha256::digest([]).into())
    }
}

struct Bytes32Visitor;

impl<'de> serde::de::Visitor<'de> for Bytes32Visitor {
    type Value = [u8; 32];

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("32 bytes")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> std::result::Result<[u8; 32], E> {
        v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<[u8; 32], A::Error> {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = seq.next_element()?.ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
        }
        if seq.next_element::<u8>()?.is_some() {
            return Err(serde::de::Error::invalid_length(33, &self));
        }
        Ok(out)
    }
}

/// Lowercase hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Bytes from hex digits (either case); `None` on an odd length or a non-hex digit.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            Some((hi * 16 + lo) as u8)
        })
        .collect()
}

/// What an entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
        }
    }
}

/// One index entry: the metadata of one name at one version. Every node keeps
/// every entry (metadata is small); only `holders` keep the content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub version: Version,
    pub kind: Kind,
    pub size: u64,
    pub hash: ContentHash,
    /// Permission bits (0o7777), kept so that exec bits survive.
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// A tombstone: the name was deleted at `version`.
    pub deleted: bool,
    /// The nodes asked to keep the content (files only).
    pub holders: Vec<NodeId>,
}

impl Entry {
    pub fn key(&self) -> Key {
        Key::of_name(&self.name)
    }

    /// Whether this entry's content is a blob on disk (a live file).
    pub fn has_blob(&self) -> bool {
        self.kind == Kind::File && !self.deleted
    }

    /// A tombstone replacing `self` at `version`.
    pub fn tombstone(&self, version: Version, mtime_ns: i64) -> Entry {
        Entry {
            name: self.name.clone(),
            version,
            kind: self.kind,
            size: 0,
            hash: ContentHash::default(),
            mode: self.mode,
            mtime_ns,
            deleted: true,
            holders: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_term_then_seq() {
        assert!(Version::new(Term(2), 1) > Version::new(Term(1), 99));
        assert!(Version::new(Term(2), 2) > Version::new(Term(2), 1));
        let v = Version::new(Term(7), 300);
        assert_eq!(Version::from_be_bytes(v.to_be_bytes()), v);
        assert!(Version::new(Term(2), 1).to_be_bytes() > Version::new(Term(1), 99).to_be_bytes());
    }

    #[test]
    fn hashes_show_hex_and_round_trip_through_msgpack() {
        let k = Key::of_name("photos/cat.png");
        assert_eq!(k.to_hex().len(), 64);
        assert_eq!(format!("{k:?}"), k.to_hex()[..8]);
        assert_eq!(Key::from_hex(&k.to_hex()), Some(k));
        let bytes = rmp_serde::to_vec(&k).unwrap();
        assert_eq!(bytes.len(), 34, "bin8 header + 32 bytes");
        let back: Key = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, k);
    }

    #[test]
    fn a_short_hash_on_the_wire_is_rejected() {
        let bytes = rmp_serde::to_vec(&serde_bytes_like(&[1u8; 31])).unwrap();
        assert!(rmp_serde::from_slice::<ContentHash>(&bytes).is_err());
    }

    fn serde_bytes_like(b: &[u8]) -> rmp::Bin {
        rmp::Bin(b.to_vec())
    }

    mod rmp {
        pub struct Bin(pub Vec<u8>);
        impl serde::Serialize for Bin {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }
    }

    #[test]
    fn empty_hash_is_the_well_known_one() {
        assert_eq!(
            ContentHash::of_empty().to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
