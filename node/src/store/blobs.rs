//! Blob files: written to a temp file while hashing, checked, fsynced and
//! renamed into place; read back with the hash checked on whole reads.
//! Blocking code: callers run it in `spawn_blocking`.
//!
//! A blob announced at [`DIRECT_MIN`] bytes or more skips the page cache: it is
//! gathered in an aligned buffer and written with `O_DIRECT` a buffer at a
//! time, its last partial block through the page cache. Copying a big
//! upload into fresh page-cache pages took over half of the machine's CPU
//! (three copies of every byte on a node's disks), and left a node's share
//! of it to be written back at the final `fsync`.
//!
//! A blob of a size not known in advance starts through the page cache and
//! turns to direct writes once it has [`DIRECT_MIN`] bytes. Where `O_DIRECT`
//! is refused (a file system without it), a blob goes through the page
//! cache, written behind: every [`WRITE_BEHIND`] bytes the
//! stretch just written is handed to the disk, and the one before it
//! waited for. The disk then writes while the network delivers, the final
//! `fsync` has at most two stretches left to write, and a node holds no
//! more than that of it in dirty pages.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
    /// Where the bytes go around the page cache, if they do.
    direct: Option<Direct>,
    /// A blob of a size not known in advance still goes through the page
    /// cache, and turns to direct writes once it reaches [`DIRECT_MIN`].
    may_turn: bool,
    /// Bytes handed to the disk so far (see [`WRITE_BEHIND`])...
    handed: u64,
    /// ... and how many of them were waited for.
    waited: u64,
}

/// How many bytes of a blob are written between hand-offs to the disk.
const WRITE_BEHIND: u64 = 8 << 20;
/// Blobs announced at least this big are written with `O_DIRECT`.
const DIRECT_MIN: u64 = 1 << 20;
/// Bytes gathered for one direct write.
const DIRECT_BUF: usize = 1 << 20;
/// Alignment of a direct write's memory, offset and length (a page: enough
/// for any disk's logical block).
const ALIGN: usize = 4096;
/// Direct-write buffers kept for the next blobs (each [`DIRECT_BUF`]).
const SPARE_BUFFERS: usize = 4;

/// Buffers of finished blobs, reused: fresh memory costs a page fault per
/// page, on a virtual machine a trip to the host.
static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A blob's bytes on their way around the page cache: gathered in an
/// aligned stretch of `mem`, written out whenever it is full.
struct Direct {
    /// The temp file again, opened with `O_DIRECT`.
    file: File,
    /// Holds `DIRECT_BUF` aligned bytes from `start`.
    mem: Vec<u8>,
    start: usize,
    /// Bytes gathered so far...
    len: usize,
    /// ... and where they go in the file.
    at: u64,
}

impl Direct {
    /// `None` when the file system refuses `O_DIRECT`.
    fn open(tmp: &Path) -> Option<Direct> {
        let file = fs::OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(tmp).ok()?;
        let mem =
            SPARE.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_else(|| vec![0u8; DIRECT_BUF + ALIGN]);
        let start = mem.as_ptr().align_offset(ALIGN);
        (start + DIRECT_BUF <= mem.len()).then_some(Direct { file, mem, start, len: 0, at: 0 })
    }

    fn gathered(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        let mut spare = SPARE.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < SPARE_BUFFERS {
            spare.push(std::mem::take(&mut self.mem));
        }
    }
}

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
        let file = fs::OpenOptions::new().read(true).write(true).create_new(true).open(&tmp)?;
        let direct = expected_size.filter(|&n| n >= DIRECT_MIN).and_then(|_| Direct::open(&tmp));
        Ok(BlobWriter {
            file: Some(file),
            tmp,
            dest,
            hasher: Sha256::new(),
            written: 0,
            expected_size,
            direct,
            may_turn: expected_size.is_none(),
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
        self.hasher.update(data);
        if self.direct.is_some() {
            self.written += data.len() as u64;
            return self.gather(data);
        }
        file.write_all_at(data, self.written)?;
        self.written += data.len() as u64;
        if self.may_turn && self.written >= DIRECT_MIN {
            self.may_turn = false;
            self.turn_direct()?;
            return Ok(());
        }
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

    /// Goes on with direct writes from the block the blob has reached; its
    /// part of that block, written already, is read back to go with them.
    fn turn_direct(&mut self) -> Result<()> {
        let Some(mut d) = Direct::open(&self.tmp) else { return Ok(()) };
        let file = self.file.as_ref().ok_or_else(|| Error::Internal("blob already finished".into()))?;
        d.at = self.written / ALIGN as u64 * ALIGN as u64;
        d.len = (self.written - d.at) as usize;
        file.read_exact_at(&mut d.mem[d.start..d.start + d.len], d.at)?;
        self.direct = Some(d);
        Ok(())
    }

    /// Adds `data` to the direct writes' buffer, writing it out each time
    /// it fills.
    fn gather(&mut self, mut data: &[u8]) -> Result<()> {
        while let Some(d) = self.direct.as_mut() {
            if data.is_empty() {
                break;
            }
            let n = data.len().min(DIRECT_BUF - d.len);
            let from = d.start + d.len;
            d.mem[from..from + n].copy_from_slice(&data[..n]);
            d.len += n;
            data = &data[n..];
            if d.len == DIRECT_BUF {
                self.write_out(DIRECT_BUF)?;
            }
        }
        if !data.is_empty() {
            // Direct writes were refused meanwhile: the rest as usual.
            let file = self.file.as_ref().ok_or_else(|| Error::Internal("blob already finished".into()))?;
            file.write_all_at(data, self.written - data.len() as u64)?;
        }
        Ok(())
    }

    /// Writes the first `n` gathered bytes (a multiple of [`ALIGN`]) around
    /// the page cache, and keeps the rest. Should the file system refuse
    /// (`EINVAL`), they and all that follows go through the page cache.
    fn write_out(&mut self, n: usize) -> Result<()> {
        let Some(d) = self.direct.as_mut() else { return Ok(()) };
        let chunk = &d.mem[d.start..d.start + n];
        match d.file.write_all_at(chunk, d.at) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                log::debug!("O_DIRECT refused for {}: {e}; writing through the page cache", self.tmp.display());
                let Some(d) = self.direct.take() else { return Ok(()) };
                let file = self.file.as_ref().ok_or_else(|| Error::Internal("blob already finished".into()))?;
                file.write_all_at(d.gathered(), d.at)?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        d.mem.copy_within(d.start + n..d.start + d.len, d.start);
        d.len -= n;
        d.at += n as u64;
        Ok(())
    }

    /// Writes out what is gathered for direct writes: the whole blocks
    /// directly, the last partial one through the page cache.
    fn write_gathered(&mut self) -> Result<()> {
        let Some(len) = self.direct.as_ref().map(|d| d.len) else { return Ok(()) };
        self.write_out(len / ALIGN * ALIGN)?;
        if let Some(d) = self.direct.take() {
            let file = self.file.as_ref().ok_or_else(|| Error::Internal("blob already finished".into()))?;
            file.write_all_at(d.gathered(), d.at)?;
        }
        Ok(())
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
        self.write_gathered()?;
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

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
    }

    #[test]
    fn a_blob_written_behind_in_uneven_pieces_lands_whole_with_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, dest) = (dir.path().join("t"), dir.path().join("b/blob"));
        // Three stretches and a bit, in pieces that straddle their ends.
        let len = 3 * WRITE_BEHIND as usize + 12_345;
        let content = content(len);
        // Through the page cache, as where O_DIRECT is refused.
        let mut w = BlobWriter::create(tmp.clone(), dest.clone(), None).unwrap();
        w.may_turn = false;
        assert!(w.direct.is_none());
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

    #[test]
    fn big_blobs_of_any_length_land_whole_around_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        // Whole buffers, a partial block at the end, less than a block past
        // a buffer, and pieces that straddle the buffer's end.
        for (n, len) in [DIRECT_BUF * 2, DIRECT_BUF * 3 + 1, DIRECT_BUF + ALIGN - 1, 5 * DIRECT_BUF / 2 + 777]
            .into_iter()
            .enumerate()
        {
            let (tmp, dest) = (dir.path().join(format!("t{n}")), dir.path().join(format!("b/blob{n}")));
            let content = content(len);
            let mut w = BlobWriter::create(tmp.clone(), dest.clone(), Some(len as u64)).unwrap();
            for piece in content.chunks(300_007) {
                w.write(piece).unwrap();
            }
            let want = ContentHash(Sha256::digest(&content).into());
            assert_eq!(w.finish(Some(want)).unwrap(), want, "length {len}");
            assert_eq!(fs::read(&dest).unwrap(), content, "length {len}");
            assert!(!tmp.exists());
        }
    }

    #[test]
    fn a_blob_of_unknown_size_turns_to_direct_writes_once_big_and_lands_whole() {
        let dir = tempfile::tempdir().unwrap();
        for (n, len) in
            [DIRECT_MIN as usize - 1, DIRECT_MIN as usize + 1, 3 * DIRECT_BUF + 2 * ALIGN + 3].into_iter().enumerate()
        {
            let (tmp, dest) = (dir.path().join(format!("t{n}")), dir.path().join(format!("b/blob{n}")));
            let content = content(len);
            let mut w = BlobWriter::create(tmp.clone(), dest.clone(), None).unwrap();
            // Pieces that leave the turn in the middle of a block.
            for piece in content.chunks(65_537) {
                w.write(piece).unwrap();
            }
            let want = ContentHash(Sha256::digest(&content).into());
            assert_eq!(w.finish(Some(want)).unwrap(), want, "length {len}");
            assert_eq!(fs::read(&dest).unwrap(), content, "length {len}");
        }
    }

    #[test]
    fn a_big_blob_that_arrives_short_or_long_or_changed_lands_nowhere() {
        let dir = tempfile::tempdir().unwrap();
        let len = DIRECT_BUF * 2 + 100;
        let content = content(len);
        let good = ContentHash(Sha256::digest(&content).into());
        let dest = dir.path().join("blob");

        let mut short = BlobWriter::create(dir.path().join("t1"), dest.clone(), Some(len as u64)).unwrap();
        short.write(&content[..len - 1]).unwrap();
        assert!(matches!(short.finish(Some(good)), Err(Error::Invalid(_))));

        let mut long = BlobWriter::create(dir.path().join("t2"), dest.clone(), Some(len as u64)).unwrap();
        long.write(&content).unwrap();
        assert!(matches!(long.write(b"x"), Err(Error::Invalid(_))));
        drop(long);

        let mut changed = content.clone();
        changed[DIRECT_BUF + 5] ^= 1;
        let mut bad = BlobWriter::create(dir.path().join("t3"), dest.clone(), Some(len as u64)).unwrap();
        bad.write(&changed).unwrap();
        assert!(matches!(bad.finish(Some(good)), Err(Error::Corrupt(_))));

        assert!(!dest.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "temp files left behind");
    }
}
