//! Newtypes with one meaning each: ids, terms, versions, inode numbers,
//! kinds, keys and hashes.

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
    /// The key of a whole path in the index of format 1 (before inodes):
    /// `sha256(name)`. Only the upgrade of an old data dir uses it.
    pub fn of_name(name: &str) -> Key {
        Key(Sha256::digest(name.as_bytes()).into())
    }

    /// The key of an inode's record (and of its blobs).
    pub fn of_ino(ino: Ino) -> Key {
        let mut h = Sha256::new();
        h.update(b"scs-inode\0");
        h.update(ino.0.to_be_bytes());
        Key(h.finalize().into())
    }

    /// The key of a directory entry: a hash of the parent inode and the name.
    pub fn of_dentry(parent: Ino, name: &str) -> Key {
        let mut h = Sha256::new();
        h.update(b"scs-dentry\0");
        h.update(parent.0.to_be_bytes());
        h.update(name.as_bytes());
        Key(h.finalize().into())
    }

    /// The key of the record of the inode numbers handed out so far.
    pub fn next_ino() -> Key {
        Key(Sha256::digest(b"scs-next-inode").into())
    }

    /// The key of the membership record.
    pub fn members() -> Key {
        Key(Sha256::digest(b"scs-members").into())
    }
}

impl ContentHash {
    /// The hash of the empty file.
    pub fn of_empty() -> ContentHash {
        ContentHash::of(&[])
    }

    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> ContentHash {
        ContentHash(Sha256::digest(bytes).into())
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

/// An inode number: handed out by the leader, never reused within a
/// cluster. [`Ino::ROOT`] is the root directory (as FUSE numbers it too).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ino(pub u64);

impl Ino {
    /// The root directory.
    pub const ROOT: Ino = Ino(1);
    /// No inode (a tombstoned directory entry points nowhere).
    pub const NONE: Ino = Ino(0);
}

impl fmt::Display for Ino {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Ino {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i{}", self.0)
    }
}

/// What an inode is: every file type a Linux file system has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
            Kind::CharDev => "char",
            Kind::BlockDev => "block",
        }
    }

    /// The kind named by the `S_IFMT` bits of a mode; `None` for none.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        match mode & S_IFMT {
            S_IFREG => Some(Kind::File),
            S_IFDIR => Some(Kind::Dir),
            S_IFLNK => Some(Kind::Symlink),
            S_IFIFO => Some(Kind::Fifo),
            S_IFSOCK => Some(Kind::Socket),
            S_IFCHR => Some(Kind::CharDev),
            S_IFBLK => Some(Kind::BlockDev),
            _ => None,
        }
    }

    /// The `S_IFMT` bits of this kind.
    pub fn type_bits(self) -> u32 {
        match self {
            Kind::File => S_IFREG,
            Kind::Dir => S_IFDIR,
            Kind::Symlink => S_IFLNK,
            Kind::Fifo => S_IFIFO,
            Kind::Socket => S_IFSOCK,
            Kind::CharDev => S_IFCHR,
            Kind::BlockDev => S_IFBLK,
        }
    }
}

// The file type bits of a mode, as Linux defines them (the same on every
// architecture), so that the wire does not depend on the libc at hand.
pub const S_IFMT: u32 = 0o170000;
pub const S_IFSOCK: u32 = 0o140000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFIFO: u32 = 0o010000;
/// Permission bits with set-user-id, set-group-id and sticky.
pub const PERMS: u32 = 0o7777;
pub const S_ISUID: u32 = 0o4000;
pub const S_ISGID: u32 = 0o2000;
pub const S_ISVTX: u32 = 0o1000;

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
