//! Blob files: written to a temp file while hashing, checked, fsynced and
//! renamed into place; read back with the hash checked on whole reads.
//! Blocking code: callers run it in `spawn_blocking`.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use scs_common::{ContentHash, Error, Result};

/// A blob being written. Dropping it unfinished removes the temp file.
pub struct BlobWriter {
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
    hasher: Sha256,
    written: u64,
    /// `None` when the size is not known in advance.
    expected_size: Option<u64>,
}

impl BlobWriter {
    /// Starts a blob of `expected_size` bytes (when known) that will land at `dest`.
    pub(crate) fn create(tmp: PathBuf, dest: PathBuf, expected_size: Option<u64>) -> Result<BlobWriter> {
        let file = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        Ok(BlobWriter { file: Some(file), tmp, dest, hasher: Sha256::new(), written: 0, expected_size })
    }

    /// Appends bytes, hashing them.
    ///
    /// # Errors
    /// `Invalid` if more bytes arrive than announced; `NoSpace`/`Io` from the disk.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if let Some(max) = self.expected_size.filter(|&max| self.written + data.len() as u64 > max) {
            return Err(Error::Invalid(format!("more bytes than the announced size of {max}")));
        }
        let file = self.file.as_mut().ok_or_else(|| Error::Internal("blob already finished".into()))?;
        file.write_all(data)?;
        self.hasher.update(data);
        self.written += data.len() as u64;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks size and hash, fsyncs, renames into place and fsyncs the directory.
    /// Returns the content hash.
    ///
    /// # Errors
    /// `Invalid` on a short blob, `Corrupt` on a hash mismatch (nothing lands).
    pub fn finish(mut self, expected: Option<ContentHash>) -> Result<ContentHash> {
        if let Some(want) = self.expected_size.filter(|&want| want != self.written) {
            return Err(Error::Invalid(format!("got {} bytes, {want} were announced", self.written)));
        }
        let hash = ContentHash(std::mem::take(&mut self.hasher).finalize().into());
        if let Some(want) = expected {
            if want != hash {
                return Err(Error::Corrupt(format!("content hash {hash:?} does not match {want:?}")));
            }
        }
        let file = self.file.take().ok_or_else(|| Error::Internal("blob already finished".into()))?;
        file.sync_all()?;
        drop(file);
        if let Some(dir) = self.dest.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::rename(&self.tmp, &self.dest)?;
        sync_dir(self.dest.parent().unwrap_or(Path::new(".")))?;
        Ok(hash)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// fsync a directory so that a rename or link in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads a range of a blob in chunks, for streaming. It does not hash: the
/// reader at the other end checks whole files end to end (DESIGN section 4)
/// and reports a bad copy, which is then re-hashed here before it is moved aside.
pub struct BlobReader {
    file: File,
    remaining: u64,
}

impl BlobReader {
    pub(crate) fn open(path: &Path, offset: u64, len: u64) -> Result<BlobReader> {
        let mut file = File::open(path)?;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))?;
        }
        Ok(BlobReader { file, remaining: len })
    }

    /// Reads the next chunk of at most `max` bytes; empty at the end.
    ///
    /// # Errors
    /// `Corrupt` if the blob is shorter than the index says.
    pub fn next_chunk(&mut self, max: usize) -> Result<Vec<u8>> {
        let want = self.remaining.min(max as u64) as usize;
        // read_to_end fills spare capacity directly: no zeroing of the buffer first.
        let mut buf = Vec::with_capacity(want);
        (&mut self.file).take(want as u64).read_to_end(&mut buf)?;
        if buf.len() < want {
            return Err(Error::Corrupt("blob is shorter than its entry says".into()));
        }
        self.remaining -= want as u64;
        Ok(buf)
    }

    pub fn remaining(&self) -> u64 {
        self.remaining
    }
}

/// The sha256 of a whole file (scrub, startup checks).
pub fn hash_file(path: &Path) -> Result<(ContentHash, u64)> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((ContentHash(h.finalize().into()), total))
}
