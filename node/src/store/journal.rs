//! The index's journal: every batch of records is appended here and made
//! durable with one `fdatasync` before the index takes it, so the index
//! itself commits without a sync of its own (a redb commit syncs a dozen
//! scattered pages; an append syncs one). Writers that arrive while a sync
//! runs share the next one (group commit).
//!
//! ```text
//! <data>/journal   JOURNAL_BYTES, zero-filled once, then overwritten in place
//! frame:  len u32 | generation u64 | check [u8; 8] | payload (len bytes)
//! ```
//!
//! A thread of the journal's own runs the syncs: a writer puts its frame
//! in the file, takes it into the index while the sync runs, then waits
//! for the sync ([`Journal::write`], [`Journal::wait_durable`]), so a
//! commit costs the longer of the two rather than both. A writer with
//! nothing to do meanwhile runs the sync on its own thread instead
//! ([`Journal::write_unsynced`], [`Journal::try_sync`]), sparing the two
//! thread wake-ups of the hand-off; either way one sync at a time runs,
//! and it covers every frame written before it began.
//!
//! A *generation* is the run of frames since the last durable commit of
//! the index. That commit records the next generation number in the index
//! (see `Store::begin_durable`), so frames of older generations, left
//! further on in the file, are never replayed over what came after them.
//! Replay reads frames of the current generation from the start until the
//! first that is absent, torn or of another generation. Applying a record
//! twice is harmless (the highest version wins), so a replay may repeat
//! what the index already has.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use scs_common::{Error, Result};

/// The journal's size. A checkpoint starts it over once it is
/// [`CHECKPOINT_AT`] full; a batch larger than the room left goes to the
/// index with a durable commit of its own.
pub const JOURNAL_BYTES: u64 = 16 << 20;
/// How full the journal gets before a checkpoint starts it over.
pub const CHECKPOINT_AT: u64 = JOURNAL_BYTES / 2;
const HEADER: usize = 4 + 8 + 8;

#[derive(Debug)]
struct State {
    generation: u64,
    /// Where the next frame goes in the file.
    tail: u64,
    /// Bytes appended since the journal opened (over every generation):
    /// positions on this scale say what a sync covered.
    appended: u64,
    /// Every frame that ends at or before this position is durable.
    synced: u64,
    /// A write or sync failed: what was written since is in doubt, and
    /// nothing more is accepted until the next generation.
    failed: bool,
    /// The journal is being dropped: the syncer makes what was written
    /// durable and stops.
    closing: bool,
}

/// What the writers and the syncer share.
#[derive(Debug)]
struct Shared {
    file: File,
    state: Mutex<State>,
    /// Told when a sync ends (writers wait on it).
    synced: Condvar,
    /// Told when a frame is written (the syncer waits on it).
    written: Condvar,
    /// `synced` and `failed`, for writers that wait without a thread
    /// ([`Journal::durable`]); set under the state's lock.
    seen: tokio::sync::watch::Sender<(u64, bool)>,
    /// Held through each sync, by the syncer or a writer ([`sync_holding`]).
    syncing: Mutex<()>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the writers waiting for `s` to be durable (call with the lock held).
    fn tell(&self, s: &State) {
        self.synced.notify_all();
        self.seen.send_replace((s.synced, s.failed));
    }
}

#[derive(Debug)]
pub struct Journal {
    shared: Arc<Shared>,
    syncer: Option<JoinHandle<()>>,
}

/// One frame read back.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub payload: Vec<u8>,
}

fn check(generation: u64, payload: &[u8]) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(generation.to_le_bytes());
    h.update(payload);
    let d = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[..8]);
    out
}

impl Journal {
    /// Opens the journal at `path`, creating and zero-filling it (durably)
    /// when missing, and returns it with the frames of `generation` found
    /// in it, in order. Appends then go after those frames.
    ///
    /// # Errors
    /// `Io` when the file cannot be created, read or synced.
    pub fn open(path: &Path, generation: u64) -> Result<(Journal, Vec<Frame>)> {
        let io = |what: &str, e: std::io::Error| Error::Io(format!("journal {}: {what}: {e}", path.display()));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io("open", e))?;
        let len = file.metadata().map_err(|e| io("stat", e))?.len();
        if len < JOURNAL_BYTES {
            // Written once, so that later overwrites change no file metadata
            // and a sync has only the data to flush.
            file.seek(SeekFrom::Start(len)).map_err(|e| io("seek", e))?;
            let zeros = vec![0u8; 1 << 20];
            let mut left = JOURNAL_BYTES - len;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                file.write_all(&zeros[..n]).map_err(|e| io("fill", e))?;
                left -= n as u64;
            }
            file.sync_all().map_err(|e| io("sync", e))?;
            if let Some(dir) = path.parent() {
                super::blobs::sync_dir(dir)?;
            }
        }
        let (frames, tail) = scan(&file, generation).map_err(|e| io("read", e))?;
        let state = State { generation, tail, appended: 0, synced: 0, failed: false, closing: false };
        let shared = Arc::new(Shared {
            file,
            state: Mutex::new(state),
            synced: Condvar::new(),
            written: Condvar::new(),
            seen: tokio::sync::watch::Sender::new((0, false)),
            syncing: Mutex::new(()),
        });
        let syncer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("journal-sync".into())
                .spawn(move || run_syncer(&shared))
                .map_err(|e| io("start its sync thread", e))?
        };
        Ok((Journal { shared, syncer: Some(syncer) }, frames))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state()
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.state().generation
    }

    /// Bytes of the current generation.
    pub fn used(&self) -> u64 {
        self.state().tail
    }

    /// The frames of the current generation, read back (to replay them
    /// into an index that lost its commits since the last durable one).
    ///
    /// # Errors
    /// `Io` when the file cannot be read.
    pub fn frames(&self) -> Result<Vec<Frame>> {
        let generation = self.generation();
        scan(&self.shared.file, generation).map(|(f, _)| f).map_err(|e| Error::Io(format!("journal: read: {e}")))
    }

    /// Appends `payload` as one frame and returns once it is durable, sharing
    /// the sync with concurrent appends. `Ok(false)` when it does not fit
    /// or the journal is out of use until the next generation (the caller
    /// then commits durably without it).
    ///
    /// # Errors
    /// `Io` when the write or the sync fails: the frame may or may not be
    /// there, and the journal takes nothing more until the next generation.
    #[cfg(test)]
    pub fn append(&self, payload: &[u8]) -> Result<bool> {
        match self.write(payload)? {
            Some(end) => self.wait_durable(end).map(|()| true),
            None => Ok(false),
        }
    }

    /// Writes `payload` as one frame and has the syncer make it durable;
    /// returns where it ends, for [`Journal::wait_durable`]. `Ok(None)`
    /// when it does not fit or the journal is out of use until the next
    /// generation.
    ///
    /// # Errors
    /// `Io` when the write fails: the journal takes nothing more until the
    /// next generation.
    pub fn write(&self, payload: &[u8]) -> Result<Option<u64>> {
        let end = self.write_unsynced(payload)?;
        if end.is_some() {
            self.shared.written.notify_one();
        }
        Ok(end)
    }

    /// [`Journal::write`] without waking the syncer: the caller makes the
    /// frame durable itself with [`Journal::try_sync`] (or another writer's
    /// sync covers it).
    ///
    /// # Errors
    /// As [`Journal::write`].
    pub fn write_unsynced(&self, payload: &[u8]) -> Result<Option<u64>> {
        let end = {
            let mut s = self.state();
            let size = (HEADER + payload.len()) as u64;
            if s.failed || s.tail + size > JOURNAL_BYTES {
                return Ok(None);
            }
            let mut frame = Vec::with_capacity(size as usize);
            frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            frame.extend_from_slice(&s.generation.to_le_bytes());
            frame.extend_from_slice(&check(s.generation, payload));
            frame.extend_from_slice(payload);
            // Under the lock: a sync that starts after this returns covers it.
            if let Err(e) = self.shared.file.write_all_at(&frame, s.tail) {
                s.failed = true;
                self.shared.tell(&s);
                return Err(Error::Io(format!("journal: write: {e}")));
            }
            s.tail += size;
            s.appended += size;
            s.appended
        };
        Ok(Some(end))
    }

    /// Makes everything up to `end` durable on this thread, unless a sync
    /// is running (`None`): the syncer is then woken to follow it with the
    /// next, and the caller waits for that with [`Journal::durable`] rather
    /// than hold its thread meanwhile. (The running sync may be another
    /// writer's, begun before this frame was written, and the syncer, never
    /// woken for a frame written with [`Journal::write_unsynced`], might
    /// sleep on.) Runs no sync if one that covers `end` ran already.
    ///
    /// # Errors
    /// `Io` when a sync failed: the frame may or may not be there, and the
    /// journal takes nothing more until the next generation.
    pub fn try_sync(&self, end: u64) -> Option<Result<()>> {
        let one = match self.shared.syncing.try_lock() {
            Ok(one) => one,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                self.shared.written.notify_one();
                return None;
            }
        };
        Some(sync_holding(&self.shared, end, one))
    }

    /// Waits until everything up to `end` (from [`Journal::write`]) is durable.
    ///
    /// # Errors
    /// `Io` when a sync failed first: the frame may or may not be there.
    pub fn wait_durable(&self, end: u64) -> Result<()> {
        let mut s = self.state();
        loop {
            if s.synced >= end {
                return Ok(());
            }
            if s.failed {
                return Err(Error::Io("journal: a sync failed".into()));
            }
            s = self.shared.synced.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// [`Journal::wait_durable`] for an async caller, without a thread.
    ///
    /// # Errors
    /// As [`Journal::wait_durable`].
    pub async fn durable(&self, end: u64) -> Result<()> {
        let mut seen = self.shared.seen.subscribe();
        let (synced, _) = *seen
            .wait_for(|&(synced, failed)| synced >= end || failed)
            .await
            .map_err(|_| Error::Io("journal: closed".into()))?;
        if synced >= end {
            Ok(())
        } else {
            Err(Error::Io("journal: a sync failed".into()))
        }
    }

    /// Starts generation `generation` at the beginning of the file: the
    /// index committed durably everything of the one before (and recorded
    /// this number). The caller makes sure nothing is appended meanwhile.
    pub fn restart(&self, generation: u64) {
        let mut s = self.state();
        s.generation = generation;
        s.tail = 0;
        s.failed = false;
        // Positions already appended count as synced: the index has them.
        s.synced = s.appended;
        self.shared.tell(&s);
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.state().closing = true;
        self.shared.written.notify_one();
        if let Some(t) = self.syncer.take() {
            let _ = t.join();
        }
    }
}

/// The syncer: syncs whenever frames were written since the last sync, so
/// that the writers meanwhile share the next one (group commit); makes the
/// rest durable and stops once the journal is dropped.
fn run_syncer(shared: &Shared) {
    raise_priority();
    let mut s = shared.state();
    loop {
        let pending = s.appended > s.synced && !s.failed;
        if !pending {
            if s.closing {
                return;
            }
            s = shared.written.wait(s).unwrap_or_else(|p| p.into_inner());
            continue;
        }
        let target = s.appended;
        drop(s);
        // A failure is kept in the state, for the writers.
        let one = shared.syncing.lock().unwrap_or_else(|p| p.into_inner());
        let _ = sync_holding(shared, target, one);
        s = shared.state();
    }
}

/// Makes the frames up to `end` durable, if no sync did yet, holding
/// `_one` (the journal's `syncing`): one sync at a time, which covers every
/// frame written before it began.
fn sync_holding(shared: &Shared, end: u64, _one: std::sync::MutexGuard<'_, ()>) -> Result<()> {
    let target = {
        let s = shared.state();
        if s.synced >= end {
            return Ok(());
        }
        if s.failed {
            return Err(Error::Io("journal: a sync failed".into()));
        }
        s.appended
    };
    let started = std::time::Instant::now();
    let res = shared.file.sync_data();
    crate::metrics::METRICS.journal_sync.since(started);
    let mut s = shared.state();
    let out = match res {
        Ok(()) => {
            s.synced = s.synced.max(target);
            Ok(())
        }
        Err(e) => {
            log::error!("journal: sync failed: {e}");
            s.failed = true;
            Err(Error::Io(format!("journal: sync failed: {e}")))
        }
    };
    shared.tell(&s);
    out
}

/// The syncer's nice value: it runs for a few microseconds per sync, and
/// every commit waits for it.
const SYNCER_NICE: libc::c_int = -10;

/// Puts this thread (the syncer) ahead of the node's other threads. A
/// writer wakes it, then takes its batch into the index meanwhile; at
/// normal priority, on a machine whose cores are busy (two cores, three
/// nodes and a mount), the syncer often got a core only once that index
/// transaction ended, so the two ran one after the other instead of side
/// by side. Measured through a mount, three runs each in turn: a chmod
/// 0.71 → 0.65 ms, a leader's own commit 0.29 → 0.23 ms. Needs
/// CAP_SYS_NICE (root, as the systemd unit runs); without it the syncer
/// keeps the normal priority.
fn raise_priority() {
    // SAFETY: gettid and setpriority take no pointers; this sets the nice
    // value of the calling thread only.
    let failed = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, SYNCER_NICE) } != 0;
    if failed {
        log::debug!("journal: the sync thread keeps the normal priority ({})", std::io::Error::last_os_error());
    }
}

/// The frames of `generation` at the start of the file, and where they end.
fn scan(file: &File, generation: u64) -> std::io::Result<(Vec<Frame>, u64)> {
    let mut frames = Vec::new();
    let mut at = 0u64;
    let mut header = [0u8; HEADER];
    while at + HEADER as u64 <= JOURNAL_BYTES {
        file.read_exact_at(&mut header, at)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as u64;
        let mut gen = [0u8; 8];
        gen.copy_from_slice(&header[4..12]);
        let gen = u64::from_le_bytes(gen);
        let start = at + HEADER as u64;
        if len == 0 || gen != generation || start + len > JOURNAL_BYTES {
            break;
        }
        let mut payload = vec![0u8; len as usize];
        file.read_exact_at(&mut payload, start)?;
        if check(gen, &payload) != header[12..HEADER] {
            break;
        }
        frames.push(Frame { payload });
        at = start + len;
    }
    Ok((frames, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn payloads(frames: &[Frame]) -> Vec<&[u8]> {
        frames.iter().map(|f| f.payload.as_slice()).collect()
    }

    #[test]
    fn frames_come_back_in_order_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (j, frames) = Journal::open(&path, 7).unwrap();
        assert!(frames.is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), JOURNAL_BYTES, "zero-filled once");
        assert!(j.append(b"one").unwrap());
        assert!(j.append(b"two").unwrap());
        drop(j);
        let (j, frames) = Journal::open(&path, 7).unwrap();
        assert_eq!(payloads(&frames), vec![&b"one"[..], b"two"]);
        assert!(j.append(b"three").unwrap(), "appends go after the frames found");
        drop(j);
        let (_, frames) = Journal::open(&path, 7).unwrap();
        assert_eq!(payloads(&frames), vec![&b"one"[..], b"two", b"three"]);
    }

    #[test]
    fn a_writer_that_syncs_itself_covers_the_frames_before_it_and_tells_the_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (j, _) = Journal::open(&path, 2).unwrap();
        let early = j.write_unsynced(b"early").unwrap().unwrap();
        let mine = j.write_unsynced(b"mine").unwrap().unwrap();
        assert!(j.shared.state().synced < early, "the syncer was not woken");
        j.try_sync(mine).expect("no sync running").unwrap();
        assert!(j.shared.state().synced >= mine);
        j.wait_durable(early).unwrap();
        j.try_sync(early).expect("no sync running").unwrap();
        // Another writer's sync runs, begun before this frame: the syncer
        // follows it with one that covers the frame.
        let running = j.shared.syncing.lock().unwrap();
        let last = j.write_unsynced(b"last").unwrap().unwrap();
        assert!(j.try_sync(last).is_none(), "a sync is running: wait for it rather than hold the thread");
        drop(running);
        let s = j.shared.synced.wait_timeout_while(j.shared.state(), Duration::from_secs(10), |s| s.synced < last);
        assert!(s.unwrap().0.synced >= last, "the syncer was woken and synced it");
        // The syncer still serves the writers that hand the sync to it.
        let later = j.write(b"later").unwrap().unwrap();
        j.wait_durable(later).unwrap();
        drop(j);
        let (_, frames) = Journal::open(&path, 2).unwrap();
        assert_eq!(payloads(&frames), vec![&b"early"[..], b"mine", b"last", b"later"]);
    }

    #[test]
    fn an_async_writer_is_told_once_its_frame_is_synced_and_is_replayed_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (j, _) = Journal::open(&path, 3).unwrap();
        let ends: Vec<u64> =
            [&b"first"[..], b"second", b"third"].iter().map(|p| j.write(p).unwrap().unwrap()).collect();
        rt.block_on(async {
            // In reverse: the last one's sync covers the others.
            for end in ends.iter().rev() {
                tokio::time::timeout(Duration::from_secs(10), j.durable(*end)).await.expect("synced").unwrap();
            }
        });
        assert!(j.shared.state().synced >= ends[2]);
        // A writer after a restart (a checkpoint) is durable at once.
        let end = j.write(b"fourth").unwrap().unwrap();
        j.restart(4);
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), j.durable(end)).await }).unwrap().unwrap();
        drop(j);
        let (_, frames) = Journal::open(&path, 3).unwrap();
        assert_eq!(payloads(&frames), vec![&b"first"[..], b"second", b"third", b"fourth"]);
    }

    #[test]
    fn frames_of_an_older_generation_are_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (j, _) = Journal::open(&path, 1).unwrap();
        for p in [&b"a-long-frame-of-gen-1"[..], b"b", b"c"] {
            j.append(p).unwrap();
        }
        j.restart(2);
        j.append(b"x").unwrap();
        drop(j);
        let (_, frames) = Journal::open(&path, 2).unwrap();
        assert_eq!(payloads(&frames), vec![&b"x"[..]], "gen 1's frames after x are left alone");
        let (_, frames) = Journal::open(&path, 3).unwrap();
        assert!(frames.is_empty(), "a checkpoint that recorded gen 3 replays nothing");
    }

    #[test]
    fn a_torn_or_damaged_frame_ends_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (j, _) = Journal::open(&path, 1).unwrap();
        j.append(b"kept").unwrap();
        j.append(b"damaged").unwrap();
        j.append(b"after").unwrap();
        drop(j);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 4 + HEADER + 2] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (j, frames) = Journal::open(&path, 1).unwrap();
        assert_eq!(payloads(&frames), vec![&b"kept"[..]]);
        j.append(b"new").unwrap();
        drop(j);
        let (_, frames) = Journal::open(&path, 1).unwrap();
        assert_eq!(payloads(&frames), vec![&b"kept"[..], b"new"], "the new frame overwrote the damaged one");
    }

    #[test]
    fn a_frame_that_does_not_fit_is_refused_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(&dir.path().join("journal"), 1).unwrap();
        let big = vec![1u8; (JOURNAL_BYTES as usize) - HEADER - 10];
        assert!(j.append(&big).unwrap());
        assert!(!j.append(b"no room for this one").unwrap());
        j.restart(2);
        assert!(j.append(b"room again").unwrap());
    }

    #[test]
    fn a_frame_written_is_made_durable_by_the_syncer_while_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (j, _) = Journal::open(&path, 1).unwrap();
        let first = j.write(b"first").unwrap().expect("fits");
        let second = j.write(b"second").unwrap().expect("fits");
        assert!(second > first);
        j.wait_durable(second).unwrap();
        j.wait_durable(first).unwrap();
        // Written and never waited for: the syncer still makes it durable
        // before the journal is gone.
        j.write(b"third").unwrap().expect("fits");
        drop(j);
        let (_, frames) = Journal::open(&path, 1).unwrap();
        assert_eq!(payloads(&frames), vec![&b"first"[..], b"second", b"third"]);
    }

    #[test]
    fn concurrent_appends_share_syncs_and_all_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let (j, _) = Journal::open(&path, 1).unwrap();
        let j = std::sync::Arc::new(j);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let j = j.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        assert!(j.append(format!("{t}-{i}").as_bytes()).unwrap());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(j);
        let (_, frames) = Journal::open(&path, 1).unwrap();
        assert_eq!(frames.len(), 400);
        for t in 0..8 {
            let mine: Vec<String> = frames
                .iter()
                .map(|f| String::from_utf8(f.payload.clone()).unwrap())
                .filter(|s| s.starts_with(&format!("{t}-")))
                .collect();
            let want: Vec<String> = (0..50).map(|i| format!("{t}-{i}")).collect();
            assert_eq!(mine, want, "each writer's frames in its order");
        }
    }
}
