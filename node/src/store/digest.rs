//! Index digests for anti-entropy: the key space is cut into 256 buckets by
//! the first byte of the key, and each bucket's digest is the XOR of a hash
//! of every (key, version) in it, tombstones included. XOR makes the digest
//! order-free and cheap to keep up to date on every commit: replacing an
//! entry toggles its old and its new item. Two nodes whose digests of a
//! bucket agree hold the same versions there (up to a 64-bit collision).

use sha2::{Digest as _, Sha256};

use scs_common::{Key, Version};

pub const BUCKETS: usize = 256;

/// The bucket of a key.
pub fn bucket_of(key: &Key) -> u8 {
    key.0[0]
}

fn item(key: &Key, version: Version) -> u64 {
    let mut h = Sha256::new();
    h.update(key.0);
    h.update(version.to_be_bytes());
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// The digests of all buckets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests(pub Vec<u64>);

impl Default for Digests {
    fn default() -> Digests {
        Digests(vec![0; BUCKETS])
    }
}

impl Digests {
    /// Adds or removes (the same operation) one (key, version).
    pub fn toggle(&mut self, key: &Key, version: Version) {
        self.0[bucket_of(key) as usize] ^= item(key, version);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|d| d.to_be_bytes()).collect()
    }

    /// `None` unless exactly 256 digests.
    pub fn from_bytes(b: &[u8]) -> Option<Digests> {
        if b.len() != BUCKETS * 8 {
            return None;
        }
        Some(Digests(b.chunks(8).map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8]))).collect()))
    }

    /// The buckets where two digests differ.
    pub fn differing(&self, other: &Digests) -> Vec<u8> {
        (0..BUCKETS).filter(|&b| self.0.get(b) != other.0.get(b)).map(|b| b as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scs_common::Term;

    #[test]
    fn digests_do_not_depend_on_order_and_toggle_back() {
        let (a, b) = (Key::of_name("a"), Key::of_name("b"));
        let v = Version::new(Term(1), 1);
        let mut x = Digests::default();
        x.toggle(&a, v);
        x.toggle(&b, v);
        let mut y = Digests::default();
        y.toggle(&b, v);
        y.toggle(&a, v);
        assert_eq!(x, y);
        y.toggle(&a, v);
        assert_eq!(x.differing(&y), vec![bucket_of(&a)]);
        assert_eq!(Digests::from_bytes(&x.to_bytes()), Some(x));
        assert_eq!(Digests::from_bytes(&[0; 7]), None);
    }
}
