//! Where things live under the data directory. Pure path arithmetic: the
//! only code that turns keys and versions into paths.
//!
//! ```text
//! <data>/index.redb                          the index
//! <data>/journal                             batches on their way into the index (see `journal`)
//! <data>/blobs/<key[0..2]>/<key>.<term>-<seq> file contents
//! <data>/tmp/<n>.tmp                          uploads in progress
//! <data>/corrupt/<key>.<term>-<seq>           copies that failed their hash
//! <data>/released/<content hash>              superseded blobs, kept a while for reuse
//! ```

use std::path::{Path, PathBuf};

use scs_common::{ContentHash, Key, Term, Version};

#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout { root: root.to_path_buf() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn index(&self) -> PathBuf {
        self.root.join("index.redb")
    }

    pub fn journal(&self) -> PathBuf {
        self.root.join("journal")
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn corrupt_dir(&self) -> PathBuf {
        self.root.join("corrupt")
    }

    /// Where blobs of superseded versions wait a while, by content, so that
    /// an entry with the same content applied later (the other half of a
    /// rename delivered in another batch) can still use them.
    pub fn released_dir(&self) -> PathBuf {
        self.root.join("released")
    }

    pub fn released(&self, hash: &ContentHash) -> PathBuf {
        self.released_dir().join(hash.to_hex())
    }

    /// The fan-out directory of a key: `blobs/<first two hex digits>`.
    pub fn shard_dir(&self, key: &Key) -> PathBuf {
        self.blobs_dir().join(&key.to_hex()[..2])
    }

    pub fn blob(&self, key: &Key, version: Version) -> PathBuf {
        self.shard_dir(key).join(blob_file_name(key, version))
    }

    pub fn tmp(&self, unique: u64) -> PathBuf {
        self.tmp_dir().join(format!("{unique:016x}.tmp"))
    }

    pub fn corrupt(&self, key: &Key, version: Version) -> PathBuf {
        self.corrupt_dir().join(blob_file_name(key, version))
    }
}

/// `<key hex>.<term>-<seq>`
pub fn blob_file_name(key: &Key, version: Version) -> String {
    format!("{}.{}-{}", key.to_hex(), version.term.0, version.seq)
}

/// The key and version a blob file name stands for; `None` for anything else.
pub fn parse_blob_file_name(name: &str) -> Option<(Key, Version)> {
    let (hex, ver) = name.split_once('.')?;
    let key = Key::from_hex(hex)?;
    let (term, seq) = ver.split_once('-')?;
    // Reject "+1", leading zeros and the like, so the parse round-trips exactly.
    let num = |s: &str| -> Option<u64> {
        let n: u64 = s.parse().ok()?;
        (n.to_string() == s).then_some(n)
    };
    Some((key, Version::new(Term(num(term)?), num(seq)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_paths_fan_out_by_the_first_two_hex_digits() {
        let l = Layout::new(Path::new("/data"));
        let k = Key::of_name("photos/cat.png");
        let p = l.blob(&k, Version::new(Term(3), 17));
        let hex = k.to_hex();
        assert_eq!(p, PathBuf::from(format!("/data/blobs/{}/{hex}.3-17", &hex[..2])));
    }

    #[test]
    fn blob_file_names_parse_back_and_nothing_else_does() {
        let k = Key::of_name("x");
        let v = Version::new(Term(12), 4);
        assert_eq!(parse_blob_file_name(&blob_file_name(&k, v)), Some((k, v)));
        for junk in [
            "",
            "abc",
            "x.1-2",
            &format!("{}.1", k.to_hex()),
            &format!("{}.01-2", k.to_hex()),
            &format!("{}.1-2.tmp", k.to_hex()),
        ] {
            assert_eq!(parse_blob_file_name(junk), None, "{junk}");
        }
    }

    #[test]
    fn no_name_becomes_a_path() {
        // Names only reach the layout as keys (hex of a hash), so ".." cannot appear.
        let l = Layout::new(Path::new("/data"));
        let p = l.blob(&Key::of_name("../../etc/passwd"), Version::ZERO);
        assert!(p.starts_with("/data/blobs"));
        assert!(!p.to_string_lossy().contains(".."));
    }
}
