//! What the process behind a request still has open, read from `/proc`.
//!
//! A shell redirection (`cmd > file`) opens the file, duplicates the
//! descriptor onto standard output and closes the original before `cmd`
//! writes: the kernel sends a FLUSH for that first close too. Storing the
//! (empty) file then would cost a whole upload for nothing, since the
//! process still holds the file open for writing and its later close is
//! flushed as well. So a close is treated as the file's close only when the
//! caller keeps no other writable descriptor of it: one whose path is in
//! this mount and whose inode (`ino:` in its fdinfo, which is the cluster's
//! inode number) is the file's. A kernel whose fdinfo has no `ino:` line
//! makes every answer "no": the file is stored at each close.
//!
//! Reading another process's `/proc` entries can block: a process in the
//! middle of exec(2) holds a lock those reads wait for, while its exec
//! waits for our answer to the FLUSH of a descriptor it closes. So the
//! looking is done by threads of their own, and a question about the
//! closing process itself that is not answered at once counts as "no"
//! (store the file now).
//!
//! A close by another process than the one that wrote (a child closing the
//! descriptor it inherited, at exit or at its exec) asks about the writer
//! instead. The writer is not the process whose exec waits for this close,
//! so that look does not block on it: it has a lane of its own, never
//! queued behind a look stuck on an exec, and a deadline long enough for a
//! loaded machine. Answered "no" for want of time, it would store a file
//! half written as a version of its own.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::Duration;

/// Descriptors looked at, at most; a process with more is not looked into.
const MAX_FDS: usize = 4096;
/// How long a close waits for the answer about its own process (a look
/// takes tens of µs; longer, the process is most likely in its exec).
const CLOSER_LIMIT: Duration = Duration::from_millis(5);
/// How long a close waits for the answer about the file's writer: a bound
/// for a machine too busy to run the looking thread, not an expected wait.
const WRITER_LIMIT: Duration = Duration::from_secs(1);
/// Questions waiting for a thread, at most (beyond, the answer is "no").
const WAITING: usize = 8;

type Question = (u32, u64, SyncSender<bool>);

/// Asks whether processes still hold files open, with a bound on the wait.
pub struct Caller {
    /// About the process that closes.
    closer: Lane,
    /// About the process that wrote, when another one closes.
    writer: Lane,
}

/// One looking thread and how long an answer from it is waited for.
struct Lane {
    /// `None` if the thread could not start.
    tx: Option<SyncSender<Question>>,
    limit: Duration,
}

impl Caller {
    /// Starts the threads that look at files under `mountpoint`; if one
    /// cannot start, its every answer is "no".
    pub fn start(mountpoint: PathBuf) -> Caller {
        Caller {
            closer: Lane::start("scs-closer", mountpoint.clone(), CLOSER_LIMIT),
            writer: Lane::start("scs-writer", mountpoint, WRITER_LIMIT),
        }
    }

    /// Whether the closing process `pid` still has inode `ino` of this
    /// mount open for writing, if that is known within [`CLOSER_LIMIT`];
    /// false otherwise (and for pid 0, nobody).
    pub fn holds_open_for_writing(&self, pid: u32, ino: u64) -> bool {
        self.closer.ask(pid, ino)
    }

    /// Whether `writer`, which wrote the file and is not the process
    /// closing it, still has inode `ino` of this mount open for writing;
    /// false if that is not known within [`WRITER_LIMIT`].
    pub fn writer_holds_open(&self, writer: u32, ino: u64) -> bool {
        self.writer.ask(writer, ino)
    }
}

impl Lane {
    fn start(name: &str, mountpoint: PathBuf, limit: Duration) -> Lane {
        let (tx, rx) = mpsc::sync_channel::<Question>(WAITING);
        let started = std::thread::Builder::new().name(name.into()).spawn(move || answer(rx, &mountpoint));
        if let Err(e) = &started {
            log::warn!("cannot start the thread that looks at closing processes: {e}");
        }
        Lane { tx: started.ok().map(|_| tx), limit }
    }

    fn ask(&self, pid: u32, ino: u64) -> bool {
        let Some(tx) = self.tx.as_ref().filter(|_| pid != 0) else { return false };
        let (answer_tx, answer_rx) = mpsc::sync_channel(1);
        // A full queue, or a thread that died: no answer is "no".
        let answer = tx
            .try_send((pid, ino, answer_tx))
            .map_err(|_| "its queue is full")
            .and_then(|()| answer_rx.recv_timeout(self.limit).map_err(|_| "no answer in time"));
        answer.unwrap_or_else(|why| {
            log::debug!("cannot tell whether process {pid} holds inode {ino} open ({why}): taken as no");
            false
        })
    }
}

/// Whether process `pid` has `gid` among its supplementary groups (its
/// file-system group the kernel passes with each request). False when it
/// cannot be told (the process is gone).
pub fn has_supplementary_group(pid: u32, gid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .is_some_and(|groups| groups.split_whitespace().any(|g| g.parse() == Ok(gid)))
}

fn answer(rx: Receiver<Question>, mountpoint: &Path) {
    while let Ok((pid, ino, reply)) = rx.recv() {
        // The asker may have stopped waiting: then nobody reads this.
        let _ = reply.try_send(look(pid, mountpoint, ino));
    }
}

/// Whether process (or thread) `pid` has inode `ino` of the file system at
/// `mountpoint` open for writing in some descriptor. False whenever that
/// cannot be told (the process is exiting, is not ours, or has too many
/// descriptors): the caller then stores the file as for a last close,
/// which is always right, only slower. May block (see the module doc):
/// call it through [`Caller`].
fn look(pid: u32, mountpoint: &Path, ino: u64) -> bool {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    for (n, fd) in dir.enumerate() {
        if n >= MAX_FDS {
            return false;
        }
        let Ok(fd) = fd else { return false };
        // The link's text is the file's path as the kernel knows it
        // (without asking this file system anything).
        if !fs::read_link(fd.path()).is_ok_and(|target| target.starts_with(mountpoint)) {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
        if fs::read_to_string(info).is_ok_and(|text| writable(&text) && inode(&text) == Some(ino)) {
            return true;
        }
    }
    false
}

/// Whether an fdinfo text's `flags:` (octal open flags) allow writing.
fn writable(fdinfo: &str) -> bool {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| i32::from_str_radix(f.trim(), 8).ok())
        .is_some_and(|flags| flags & libc::O_ACCMODE != libc::O_RDONLY)
}

/// The inode number in an fdinfo text (Linux 5.14 and later show it).
fn inode(fdinfo: &str) -> Option<u64> {
    fdinfo.lines().find_map(|l| l.strip_prefix("ino:")).and_then(|i| i.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn fdinfo_flags_tell_writers_from_readers_and_give_the_inode() {
        assert!(writable("pos:\t0\nflags:\t0100001\nmnt_id:\t30\n"));
        assert!(writable("pos:\t0\nflags:\t02\n"));
        assert!(!writable("pos:\t0\nflags:\t0100000\n"));
        assert!(!writable("pos:\t0\n"));
        assert_eq!(inode("pos:\t0\nflags:\t02\nmnt_id:\t30\nino:\t4711\n"), Some(4711));
        assert_eq!(inode("pos:\t0\nflags:\t02\n"), None);
    }

    #[test]
    fn a_file_this_process_holds_open_for_writing_is_found_by_its_inode() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let me = std::process::id();
        let reader_path = root.join("r");
        fs::write(&reader_path, b"x").unwrap();
        let reader = fs::File::open(&reader_path).unwrap();
        let r_ino = reader.metadata().unwrap().ino();
        assert!(!look(me, &root, r_ino), "a read-only descriptor does not count");
        let writer = fs::File::create(root.join("f")).unwrap();
        let ino = writer.metadata().unwrap().ino();
        assert!(look(me, &root, ino));
        assert!(!look(me, Path::new("/elsewhere"), ino), "only files under the mountpoint count");
        drop(writer);
        assert!(!look(me, &root, ino), "closed: not held any more");
        drop(reader);
    }

    #[test]
    fn the_caller_thread_answers_and_pid_0_is_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let caller = Caller::start(root.clone());
        let writer = fs::File::create(root.join("f")).unwrap();
        let ino = writer.metadata().unwrap().ino();
        // The first answer may come late while the thread starts.
        let found = (0..100).any(|_| caller.holds_open_for_writing(std::process::id(), ino));
        assert!(found);
        assert!(!caller.holds_open_for_writing(0, ino));
        drop(writer);
        assert!(!caller.holds_open_for_writing(std::process::id(), ino));
    }
}
