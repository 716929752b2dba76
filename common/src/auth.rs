//! The cluster key: loading and creating the key file, MACs over datagrams,
//! and the proofs of the TCP challenge-response handshake.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::types::{hex, unhex};

type HmacSha256 = Hmac<Sha256>;

/// The 32-byte secret every node and client of a cluster shares.
#[derive(Clone)]
pub struct ClusterKey([u8; 32]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> ClusterKey {
        ClusterKey(bytes)
    }

    /// The raw key (for the Noise pre-shared key).
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A fresh random key.
    pub fn generate() -> ClusterKey {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        ClusterKey(bytes)
    }

    /// Reads a key file: 32 raw bytes, or 64 hex digits (surrounding
    /// whitespace allowed). The file must not be readable by group or others.
    ///
    /// # Errors
    /// [`Error::Config`] with the path and what to do about it.
    pub fn load(path: &Path) -> Result<ClusterKey> {
        let shown = path.display();
        let meta =
            fs::metadata(path).map_err(|e| Error::Config(format!("cannot read the cluster key file {shown}: {e}")))?;
        if meta.is_dir() {
            return Err(Error::Config(format!("the cluster key file {shown} is a directory; name the key file in it")));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(Error::Config(format!(
                "the cluster key file {shown} is readable by others; run: chmod 600 {shown}"
            )));
        }
        let data =
            fs::read(path).map_err(|e| Error::Config(format!("cannot read the cluster key file {shown}: {e}")))?;
        Self::parse(&data).ok_or_else(|| {
            Error::Config(format!(
                "the cluster key file {shown} must hold 32 bytes or 64 hex digits ({} bytes found)",
                data.len()
            ))
        })
    }

    fn parse(data: &[u8]) -> Option<ClusterKey> {
        if let Ok(raw) = <[u8; 32]>::try_from(data) {
            return Some(ClusterKey(raw));
        }
        let text = std::str::from_utf8(data).ok()?.trim();
        let bytes = unhex(text)?;
        Some(ClusterKey(bytes.try_into().ok()?))
    }

    /// Loads the key file, creating it (32 random bytes, mode 0600, parent
    /// directories as needed) when it does not exist. Returns whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(ClusterKey, bool)> {
        if path.exists() {
            return Ok((Self::load(path)?, false));
        }
        let key = ClusterKey::generate();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)
                .map_err(|e| Error::Config(format!("cannot create {} for the cluster key: {e}", dir.display())))?;
        }
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
            f.write_all(&key.0)?;
            f.sync_all()
        };
        match write() {
            Ok(()) => Ok((key, true)),
            // Another node sharing the file created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((Self::load(path)?, false)),
            Err(e) => Err(Error::Config(format!("cannot create the cluster key file {}: {e}", path.display()))),
        }
    }

    /// A short fingerprint for logs: the first 8 hex digits of sha256(key),
    /// safe to show (tells whether two machines share a key).
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        hex(&Sha256::digest(self.0)[..4])
    }

    /// HMAC-SHA256 over the concatenation of `parts`.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(&self.0).expect("hmac takes any key length");
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    /// Constant-time check of a MAC made by [`ClusterKey::mac`].
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(&self.0).expect("hmac takes any key length");
        for p in parts {
            m.update(p);
        }
        m.verify_slice(tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_file_is_private_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cluster.key");
        let (key, created) = ClusterKey::load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read(&path).unwrap().len(), 32);
        let (again, created) = ClusterKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again.0, key.0);
    }

    #[test]
    fn a_key_readable_by_others_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(&path, [7u8; 32]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = ClusterKey::load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn a_directory_named_as_the_key_file_is_refused_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = ClusterKey::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
    }

    #[test]
    fn hex_keys_are_accepted_and_junk_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(&path, format!("{}\n", hex(&[0xab; 32]))).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(ClusterKey::load(&path).unwrap().0, [0xab; 32]);
        fs::write(&path, b"short").unwrap();
        assert!(ClusterKey::load(&path).unwrap_err().to_string().contains("32 bytes"));
        assert!(ClusterKey::load(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn macs_depend_on_key_and_bytes() {
        let a = ClusterKey::from_bytes([1; 32]);
        let b = ClusterKey::from_bytes([2; 32]);
        assert!(a.verify(&[b"x", b"y"], &a.mac(&[b"xy"])));
        assert!(!a.verify(&[b"x"], &b.mac(&[b"x"])));
        assert!(!a.verify(&[b"x"], &a.mac(&[b"y"])));
    }
}
