//! Blob files: written to a temp file while hashing, checked, fsynced and
//! renamed into place; read back with the hash checked on whole reads.
//! Blocking code: callers run it in `spawn_blocking`.
//!
//! A big blob goes to the disk while it arrives (write-behind): every
//! [`WRITE_BEHIND`] bytes the stretch just written is handed to the disk,
//! and the one before it waited for. The disk then writes while the
//! network delivers, the final `fsync` has at most two stretches left to
//! write, and a node holds no more than that of it in dirty pages.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
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
    /// Bytes handed to the disk so far (see [`WRITE_BEHIND`])...
    handed: u64,
    /// ... and how many of them were waited for.
    waited: u64,
}

/// How many bytes of a blob are written between hand-offs to the disk.
const WRITE_BEHIND: u64 = 8 << 20;

/// Starts the disk writing `len` bytes of `file` from `offset`, and with
/// `wait`, waits until they are written. Only a hint of order: the final
/// `fsync` is what makes the blob durable, and reports any error; one here
/// is logged.
fn write_behind(file: &File, offset: u64, len: u64, wait: bool) {
    let flags = if wait {
        libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER
    } else {
        libc::SYNC_FILE_RANGE_WRITE
    };
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else { return };
    // SAFETY: a plain syscall on a descriptor `file` keeps open.
    if unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) } != 0 {
        log::debug!("sync_file_range: {}", io::Error::last_os_error());
    }
}

impl BlobWriter {
    /// Starts a blob of `expected_size` bytes (when known) that will land at `dest`.
    pub(crate) fn create(tmp: PathBuf, dest: PathBuf, expected_size: Option<u64>) -> Result<BlobWriter> {
        let file = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        Ok(BlobWriter {
            file: Some(file),
            tmp,
            dest,
            hasher: Sha256::new(),
            written: 0,
            expected_size,
            handed: 0,
            waited: 0,
        })
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
        if self.written - self.handed >= WRITE_BEHIND {
            // The stretch handed over last time: wait for it, then hand
            // over this one. (A length of 0 would mean "to the end of the
            // file".)
            if self.handed > self.waited {
                write_behind(file, self.waited, self.handed - self.waited, true);
                self.waited = self.handed;
            }
            write_behind(file, self.handed, self.written - self.handed, false);
            self.handed = self.written;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_written_behind_in_uneven_pieces_lands_whole_with_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, dest) = (dir.path().join("t"), dir.path().join("b/blob"));
        // Three stretches and a bit, in pieces that straddle their ends.
        let len = 3 * WRITE_BEHIND as usize + 12_345;
        let content: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4093) as u8).collect();
        let mut w = BlobWriter::create(tmp.clone(), dest.clone(), Some(len as u64)).unwrap();
        for piece in content.chunks(1_000_003) {
            w.write(piece).unwrap();
        }
        // Handed over after pieces 9 and 18; the second waited for the first.
        assert_eq!((w.handed, w.waited), (18 * 1_000_003, 9 * 1_000_003));
        let want = ContentHash(Sha256::digest(&content).into());
        assert_eq!(w.finish(Some(want)).unwrap(), want);
        assert_eq!(fs::read(&dest).unwrap(), content);
        assert!(!tmp.exists());
        assert_eq!(hash_file(&dest).unwrap(), (want, len as u64));
    }
}
