//! The handle table: open files, open directory listings, and the staging
//! copy of each inode open for writing. Plain bookkeeping behind one mutex;
//! what the copies do is [`super::staged`]'s business.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, Mutex};

use scs_common::{Ino, Inode, Kind};

use super::content::Item;
use super::staged::Staged;

/// One open file handle.
pub struct OpenFile {
    pub ino: Ino,
    /// The staging copy, when open for writing.
    pub staged: Option<Arc<Staged>>,
    /// O_APPEND: every write goes to the end.
    pub append: bool,
    /// What a reader reads when nothing is staged: the inode seen at open
    /// (the file's last word once its last name is gone).
    pub opened: Option<Inode>,
    /// The cache item of the content read, once read.
    pub item: Mutex<Option<Arc<Item>>>,
    /// Something was written through this handle (see `Core::flush`).
    pub wrote: AtomicBool,
    /// The process (thread) that last wrote through it; 0: none yet.
    pub writer: AtomicU32,
}

impl OpenFile {
    pub fn new(ino: Ino, staged: Option<Arc<Staged>>, append: bool, opened: Option<Inode>) -> OpenFile {
        OpenFile {
            ino,
            staged,
            append,
            opened,
            item: Mutex::new(None),
            wrote: AtomicBool::new(false),
            writer: AtomicU32::new(0),
        }
    }
}

/// One entry of an open directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirItem {
    pub ino: Ino,
    pub kind: Kind,
    pub name: String,
}

/// Open files, open directories, and the staging copy of each inode.
#[derive(Default)]
pub struct Handles {
    files: HashMap<u64, Arc<OpenFile>>,
    dirs: HashMap<u64, Arc<Vec<DirItem>>>,
    staged: HashMap<Ino, Arc<Staged>>,
    next: u64,
}

impl Handles {
    fn next_fh(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    pub fn add_file(&mut self, of: OpenFile) -> u64 {
        let fh = self.next_fh();
        self.files.insert(fh, Arc::new(of));
        fh
    }

    /// The inode an open descriptor of `ino` was opened on (an unlinked
    /// file's last word: fstat(2) carries no descriptor to FUSE).
    pub fn opened(&self, ino: Ino) -> Option<Inode> {
        self.files.values().filter(|of| of.ino == ino).find_map(|of| of.opened.clone())
    }

    pub fn file(&self, fh: u64) -> Option<Arc<OpenFile>> {
        self.files.get(&fh).cloned()
    }

    pub fn remove_file(&mut self, fh: u64) -> Option<Arc<OpenFile>> {
        self.files.remove(&fh)
    }

    pub fn add_dir(&mut self, items: Vec<DirItem>) -> u64 {
        let fh = self.next_fh();
        self.dirs.insert(fh, Arc::new(items));
        fh
    }

    pub fn dir(&self, fh: u64) -> Option<Arc<Vec<DirItem>>> {
        self.dirs.get(&fh).cloned()
    }

    pub fn remove_dir(&mut self, fh: u64) {
        self.dirs.remove(&fh);
    }

    /// The staging copy of `ino`, if it is open for writing or owed.
    pub fn staged(&self, ino: Ino) -> Option<Arc<Staged>> {
        self.staged.get(&ino).cloned()
    }

    pub fn put_staged(&mut self, s: Arc<Staged>) {
        self.staged.insert(s.ino, s);
    }

    /// Drops the staging copy of its inode, if it is still this one.
    pub fn retire_staged(&mut self, s: &Arc<Staged>) {
        if self.staged.get(&s.ino).is_some_and(|cur| Arc::ptr_eq(cur, s)) {
            self.staged.remove(&s.ino);
        }
    }

    /// Every staging copy.
    pub fn all_staged(&self) -> Vec<Arc<Staged>> {
        self.staged.values().cloned().collect()
    }
}
