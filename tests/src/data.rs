//! Seeded file contents: the same seed gives the same bytes on every run, so a
//! failing test can be replayed exactly.

use std::io::{BufWriter, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// xorshift64*: tiny, fast and good enough for file contents.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        // A zero state would stay zero forever; mix the seed instead.
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// `len` pseudo-random bytes from `seed`.
pub fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    XorShift::new(seed).fill(&mut buf);
    buf
}

/// Writes `len` seeded bytes to `path` without holding them all in memory;
/// returns their sha256 in hex.
pub fn write_seeded_file(path: &Path, seed: u64, len: u64) -> String {
    let mut rng = XorShift::new(seed);
    let mut out = BufWriter::new(std::fs::File::create(path).expect("create the local file"));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).expect("write the local file");
        left -= n as u64;
    }
    out.flush().expect("flush the local file");
    hex(&hasher.finalize())
}

/// The sha256 of a file, in hex, read in chunks.
pub fn sha256_hex(path: &Path) -> String {
    let mut file = std::fs::File::open(path).expect("open the file to hash");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).expect("read the file to hash");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The index key of a name, as the nodes compute it: hex(sha256(name)).
pub fn key_hex(ino: u64) -> String {
    scs_common::Key::of_ino(scs_common::Ino(ino)).to_hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_bytes_and_another_seed_does_not() {
        assert_eq!(seeded_bytes(7, 1001), seeded_bytes(7, 1001));
        assert_ne!(seeded_bytes(7, 64), seeded_bytes(8, 64));
        assert_eq!(seeded_bytes(7, 10), seeded_bytes(7, 1001)[..10]);
    }

    #[test]
    fn a_seeded_file_holds_the_seeded_bytes_and_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let hash = write_seeded_file(&path, 3, 3 << 19);
        assert_eq!(std::fs::read(&path).unwrap(), seeded_bytes(3, 3 << 19));
        assert_eq!(sha256_hex(&path), hash);
    }
}
