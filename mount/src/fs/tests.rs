//! The file-system rules through [`Core`], with the in-memory cluster
//! ([`Fake`]) in place of the real one: no /dev/fuse, no nodes.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, TimeOrNow};

use scs_common::inode::NewNode;
use scs_common::proto::rpc::{Target, UploadSpec};
use scs_common::types::S_ISGID;
use scs_common::{Ino, Kind};

use super::cluster::Cluster;
use super::content::ContentCache;
use super::fake::Fake;
use super::ops::{Core, Owner, SetAttr, XattrReply};
use super::time::ns_of;
use super::writeback::{write_v1_record, Journal};

const ME: Owner = Owner { uid: 1000, gid: 100 };
const ROOT: u64 = 1;
const WRITE: i32 = libc::O_WRONLY;
const CREATE: i32 = libc::O_WRONLY | libc::O_CREAT;

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// A mount of a fake cluster, with its cache dir; stopped when dropped.
struct Mount {
    core: Arc<Core>,
    fake: Fake,
    /// `None` once killed.
    dir: Option<tempfile::TempDir>,
}

impl Mount {
    fn new(write_back: bool) -> Mount {
        Mount::of(Fake::new(), write_back, tempfile::tempdir().unwrap())
    }

    /// A mount of `fake` (maybe shared with another mount) using the cache dir `dir`.
    fn of(fake: Fake, write_back: bool, dir: tempfile::TempDir) -> Mount {
        let m = Mount::idle(fake, write_back, dir);
        m.core.start_uploaders(Vec::new()).unwrap();
        m
    }

    /// [`Mount::of`] whose uploaders have not started: what is closed waits
    /// in the journal until `start_uploaders`.
    fn idle(fake: Fake, write_back: bool, dir: tempfile::TempDir) -> Mount {
        let cluster: Arc<dyn Cluster> = Arc::new(fake.clone());
        let content = ContentCache::open(&dir.path().join("content"), 1 << 30).unwrap();
        let staging = dir.path().join("staging");
        std::fs::create_dir_all(&staging).unwrap();
        let (journal, left) = Journal::open(&dir.path().join("pending")).unwrap();
        let core = Core::new(cluster, content, staging, dir.path().join("mnt"), journal, write_back);
        let core = Arc::new(core);
        core.reserve_ahead();
        core.queue_left(left);
        Mount { core, fake, dir: Some(dir) }
    }

    fn create(&self, parent: u64, name: &str) -> (FileAttr, u64) {
        self.core.create(parent, os(name), 0o644, CREATE, ME).unwrap()
    }

    /// `echo -n data > name`: create, write, close.
    fn write_file(&self, parent: u64, name: &str, data: &[u8]) -> FileAttr {
        let (attr, fh) = self.create(parent, name);
        self.write_all(fh, data);
        self.close(fh).unwrap();
        attr
    }

    fn write_all(&self, fh: u64, data: &[u8]) {
        for (i, chunk) in data.chunks(128 << 10).enumerate() {
            self.core.write(fh, (i * (128 << 10)) as u64, chunk).unwrap();
        }
    }

    /// close(2) by a process that holds nothing else open, then the release.
    fn close(&self, fh: u64) -> Result<(), Errno> {
        let res = self.core.flush(fh, 0);
        self.core.release(fh).unwrap();
        res
    }

    /// Rewrites the file `ino` as `> name` does.
    fn rewrite(&self, ino: u64, data: &[u8]) {
        let fh = self.core.open(ino, WRITE | libc::O_TRUNC).unwrap();
        self.write_all(fh, data);
        self.close(fh).unwrap();
    }

    fn read_fh(&self, fh: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let got = self.core.read(fh, out.len() as u64, 1 << 16).unwrap();
            if got.is_empty() {
                return out;
            }
            out.extend(got);
        }
    }

    fn read(&self, ino: u64) -> Vec<u8> {
        let fh = self.core.open(ino, libc::O_RDONLY).unwrap();
        let out = self.read_fh(fh);
        self.core.release(fh).unwrap();
        out
    }

    fn lookup(&self, parent: u64, name: &str) -> Result<FileAttr, Errno> {
        self.core.lookup(parent, os(name)).map(|(attr, _)| attr)
    }

    fn ls(&self, dir: u64) -> Vec<String> {
        let fh = self.core.opendir(dir).unwrap();
        let items = self.core.readdir(fh).unwrap();
        self.core.releasedir(fh).unwrap();
        items.iter().map(|i| i.name.clone()).filter(|n| n != "." && n != "..").collect()
    }

    fn mkdir(&self, parent: u64, name: &str) -> FileAttr {
        self.core.mkdir(parent, os(name), 0o755, ME).unwrap()
    }
}

impl Mount {
    /// Stops as a killed mount does, flushing nothing; returns its cache dir.
    fn kill(mut self) -> tempfile::TempDir {
        let dir = self.dir.take().expect("a live mount");
        self.core.stop_uploaders();
        dir
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.dir.is_some() {
            self.core.flush_all();
        }
    }
}

/// Waits up to 10 s for `cond`.
#[track_caller]
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn targets(uploads: &[UploadSpec]) -> Vec<Target> {
    uploads.iter().map(|u| u.target.clone()).collect()
}

#[test]
fn a_new_file_takes_a_reserved_inode_and_goes_up_at_close_as_a_new_file_of_its_owner() {
    let m = Mount::new(false);
    let (attr, fh) = m.create(ROOT, "f");
    let ino = Ino(attr.ino.0);
    assert!(ino.0 > 1 && (attr.uid, attr.gid, attr.perm) == (1000, 100, 0o644));
    assert!(m.fake.at("f").is_none(), "the cluster has nothing before close");
    assert_eq!(m.lookup(ROOT, "f").unwrap().ino, attr.ino, "this mount shows it meanwhile");
    assert_eq!(m.ls(ROOT), ["f"]);
    m.write_all(fh, b"hello");
    assert_eq!(m.core.getattr(ino.0, None).unwrap().size, 5);
    m.close(fh).unwrap();
    assert_eq!(targets(&m.fake.uploads()), [Target::New { parent: Ino::ROOT, name: "f".into(), ino }]);
    let stored = m.fake.at("f").unwrap();
    assert_eq!((stored.ino, stored.uid, stored.gid, stored.mode), (ino, 1000, 100, 0o644));
    assert_eq!(m.fake.content(ino).unwrap(), b"hello");
    assert_eq!(m.lookup(ROOT, "f").unwrap().ino, attr.ino, "the same number once stored");
    assert_eq!(m.ls(ROOT), ["f"]);
    // Rewriting it stores the content of the same inode.
    m.rewrite(ino.0, b"again");
    assert_eq!(m.fake.uploads().last().unwrap().target, Target::Ino(ino));
    assert_eq!(m.fake.content(ino).unwrap(), b"again");
}

#[test]
fn owner_mode_times_and_xattrs_set_on_an_open_new_file_go_up_with_it() {
    // cp -a sets them on the open descriptor before closing it.
    let m = Mount::new(false);
    let (attr, fh) = m.create(ROOT, "copy");
    m.write_all(fh, b"data");
    let t = |ns: u64| TimeOrNow::SpecificTime(UNIX_EPOCH + Duration::from_nanos(ns));
    let set = SetAttr {
        uid: Some(2000),
        gid: Some(300),
        mode: Some(0o100640),
        atime: Some(t(1_500_000_000_000_000_007)),
        mtime: Some(t(1_400_000_000_000_000_009)),
        ..Default::default()
    };
    let shown = m.core.setattr(attr.ino.0, set, Some(fh)).unwrap();
    assert_eq!((shown.uid, shown.gid, shown.perm), (2000, 300, 0o640));
    m.core.setxattr(attr.ino.0, os("user.origin"), b"laptop", 0, 0).unwrap();
    assert!(m.fake.uploads().is_empty(), "nothing went up before close");
    m.close(fh).unwrap();
    assert_eq!(m.fake.uploads().len(), 1, "one upload carries it all");
    let stored = m.fake.at("copy").unwrap();
    assert_eq!((stored.uid, stored.gid, stored.mode), (2000, 300, 0o640));
    assert_eq!((stored.atime_ns, stored.mtime_ns), (1_500_000_000_000_000_007, 1_400_000_000_000_000_009));
    assert_eq!(stored.xattrs["user.origin"].0, b"laptop");
    let attr = m.core.getattr(attr.ino.0, None).unwrap();
    assert_eq!(ns_of(attr.mtime), 1_400_000_000_000_000_009, "with nanoseconds");
}

#[test]
fn a_big_file_written_in_order_streams_and_attributes_set_before_close_still_land() {
    let m = Mount::new(false);
    let data: Vec<u8> = (0..3 << 20).map(|i| (i % 253) as u8).collect();
    let (attr, fh) = m.create(ROOT, "big");
    m.write_all(fh, &data);
    assert_eq!(m.fake.streams(), 1, "the stream opened as the file was written");
    m.core.setattr(attr.ino.0, SetAttr { mode: Some(0o600), ..Default::default() }, Some(fh)).unwrap();
    m.core.setxattr(attr.ino.0, os("user.k"), b"v", 0, 0).unwrap();
    m.close(fh).unwrap();
    let ups = m.fake.uploads();
    assert_eq!((ups.len(), m.fake.streams()), (1, 1), "streamed, not uploaded again");
    assert_eq!(ups[0].size, None, "a stream does not know its size in advance");
    let stored = m.fake.at("big").unwrap();
    assert_eq!((stored.size, stored.mode), (data.len() as u64, 0o600));
    assert_eq!(stored.xattrs["user.k"].0, b"v");
    assert_eq!(m.fake.content(stored.ino).unwrap(), data);
}

#[test]
fn an_open_file_keeps_working_after_its_last_name_is_gone() {
    let m = Mount::new(false);
    let attr = m.write_file(ROOT, "u", b"data1234");
    let reader = m.core.open(attr.ino.0, libc::O_RDONLY).unwrap();
    let writer = m.core.open(attr.ino.0, WRITE).unwrap();
    m.core.unlink(ROOT, os("u")).unwrap();
    assert_eq!(m.lookup(ROOT, "u"), Err(Errno::ENOENT));
    assert!(m.fake.at("u").is_none());
    let shown = m.core.getattr(attr.ino.0, Some(reader)).unwrap();
    assert_eq!((shown.size, shown.nlink), (8, 0));
    assert_eq!(m.read_fh(reader), b"data1234");
    // Writing on goes to the local copy only: there is nowhere to store it.
    m.core.write(writer, 8, b"!").unwrap();
    assert_eq!(m.read_fh(reader), b"data1234!");
    let uploads = m.fake.uploads().len();
    m.close(writer).unwrap();
    assert_eq!(m.fake.uploads().len(), uploads, "nothing goes up for a removed file");
    m.core.release(reader).unwrap();
}

#[test]
fn a_file_renamed_over_while_open_for_reading_still_reads_its_own_content() {
    let m = Mount::new(false);
    let old = m.write_file(ROOT, "r", b"old");
    let reader = m.core.open(old.ino.0, libc::O_RDONLY).unwrap();
    let new = m.write_file(ROOT, "r.new", b"newer");
    m.core.rename(ROOT, os("r.new"), ROOT, os("r"), 0).unwrap();
    assert_eq!(m.read_fh(reader), b"old");
    assert_eq!(m.core.getattr(old.ino.0, Some(reader)).unwrap().nlink, 0);
    assert_eq!(m.lookup(ROOT, "r").unwrap().ino, new.ino, "the name leads to the renamed inode");
    assert_eq!(m.read(new.ino.0), b"newer");
    m.core.release(reader).unwrap();
}

#[test]
fn hard_links_share_one_inode_count_their_names_and_outlive_each_other() {
    let m = Mount::new(false);
    let a = m.write_file(ROOT, "a", b"one");
    let d = m.mkdir(ROOT, "d");
    let b = m.core.link(a.ino.0, d.ino.0, os("b")).unwrap();
    assert_eq!((b.ino, b.nlink), (a.ino, 2));
    assert_eq!(m.lookup(ROOT, "a").unwrap().nlink, 2);
    // A write through one name is read through the other.
    let via_b = m.lookup(d.ino.0, "b").unwrap();
    m.rewrite(via_b.ino.0, b"two");
    assert_eq!(m.read(m.lookup(ROOT, "a").unwrap().ino.0), b"two");
    // Unlinking one name leaves the other working.
    m.core.unlink(ROOT, os("a")).unwrap();
    let left = m.lookup(d.ino.0, "b").unwrap();
    assert_eq!((left.ino, left.nlink), (a.ino, 1));
    assert_eq!(m.read(left.ino.0), b"two");
    assert_eq!(m.fake.content(Ino(a.ino.0)).unwrap(), b"two");
    // A new name for a file made here and still open: it goes up first.
    let (fresh, fh) = m.create(ROOT, "fresh");
    m.write_all(fh, b"x");
    let l = m.core.link(fresh.ino.0, ROOT, os("fresh2")).unwrap();
    assert_eq!((l.ino, l.nlink), (fresh.ino, 2));
    assert_eq!(m.fake.at("fresh2").unwrap().ino.0, fresh.ino.0);
    m.close(fh).unwrap();
}

#[test]
fn a_directory_cannot_be_hard_linked_and_counts_its_subdirectories() {
    let m = Mount::new(false);
    let a = m.mkdir(ROOT, "a");
    assert_eq!(m.core.link(a.ino.0, ROOT, os("b")), Err(Errno::EPERM));
    m.mkdir(a.ino.0, "x");
    m.mkdir(a.ino.0, "y");
    assert_eq!(m.core.getattr(a.ino.0, None).unwrap().nlink, 4);
    assert_eq!(m.core.getattr(ROOT, None).unwrap().nlink, 3);
    assert_eq!(m.core.getattr(a.ino.0, None).unwrap().kind, FileType::Directory);
}

#[test]
fn everything_made_gets_the_callers_owner_and_its_kind() {
    let m = Mount::new(false);
    let root_user = Owner { uid: 0, gid: 0 };
    let d = m.mkdir(ROOT, "d");
    assert_eq!((d.uid, d.gid, d.perm, d.kind), (1000, 100, 0o755, FileType::Directory));
    let fifo = m.core.mknod(ROOT, os("fifo"), libc::S_IFIFO | 0o640, 0, ME).unwrap();
    assert_eq!((fifo.kind, fifo.perm, fifo.uid), (FileType::NamedPipe, 0o640, 1000));
    let sock = m.core.mknod(ROOT, os("sock"), libc::S_IFSOCK | 0o600, 0, ME).unwrap();
    assert_eq!(sock.kind, FileType::Socket);
    let dev = m.core.mknod(ROOT, os("null"), libc::S_IFCHR | 0o666, 0x0103, root_user).unwrap();
    assert_eq!((dev.kind, dev.rdev, dev.uid), (FileType::CharDevice, 0x0103, 0));
    let blk = m.core.mknod(ROOT, os("disk"), libc::S_IFBLK | 0o660, 0x0800, root_user).unwrap();
    assert_eq!(blk.kind, FileType::BlockDevice);
    let reg = m.core.mknod(ROOT, os("empty"), libc::S_IFREG | 0o600, 0, ME).unwrap();
    assert_eq!((reg.kind, reg.size), (FileType::RegularFile, 0));
    assert_eq!(m.fake.at("null").unwrap().rdev, 0x0103, "devices are metadata on the cluster");
    assert_eq!(m.core.mknod(ROOT, os("fifo"), libc::S_IFIFO | 0o640, 0, ME), Err(Errno::EEXIST));
    // Another client's file shows its true owner.
    let theirs = m.fake.put_file(Ino::ROOT, "theirs", b"x");
    let shown = m.lookup(ROOT, "theirs").unwrap();
    assert_eq!((shown.ino.0, shown.uid, shown.gid), (theirs.ino.0, 0, 0));
}

#[test]
fn a_setgid_directory_hands_its_group_down_before_and_after_a_file_is_stored() {
    let m = Mount::new(false);
    let node = NewNode { kind: Kind::Dir, mode: 0o2775, uid: 0, gid: 50, rdev: 0, target: String::new() };
    let shared = m.fake.make_as(Ino::ROOT, "shared", node);
    let (f, fh) = m.create(shared.ino.0, "f");
    assert_eq!((f.uid, f.gid), (1000, 50), "shown with the directory's group at once");
    m.close(fh).unwrap();
    let stored = m.fake.at("shared/f").unwrap();
    assert_eq!((stored.uid, stored.gid), (1000, 50));
    assert_eq!(m.core.getattr(f.ino.0, None).unwrap().gid, 50);
    let sub = m.mkdir(shared.ino.0, "sub");
    assert_eq!((sub.gid, u32::from(sub.perm) & S_ISGID), (50, S_ISGID), "a subdirectory inherits the flag too");
}

#[test]
fn extended_attributes_follow_the_flags_sizes_and_namespaces_of_linux() {
    let m = Mount::new(false);
    let f = m.write_file(ROOT, "f", b"x").ino.0;
    let set = |name: &str, v: &[u8], flags| m.core.setxattr(f, os(name), v, flags, 0);
    assert_eq!(set("user.a", b"1", libc::XATTR_REPLACE), Err(Errno::ENODATA));
    set("user.a", b"1", libc::XATTR_CREATE).unwrap();
    assert_eq!(set("user.a", b"2", libc::XATTR_CREATE), Err(Errno::EEXIST));
    set("user.a", b"22", libc::XATTR_REPLACE).unwrap();
    let both = libc::XATTR_CREATE | libc::XATTR_REPLACE;
    assert_eq!(set("user.a", b"3", both), Err(Errno::EEXIST), "both flags: it exists");
    assert_eq!(set("user.b", b"3", both), Err(Errno::ENODATA), "both flags: it does not");
    assert_eq!(set("user.", b"3", 0), Err(Errno::EINVAL), "a namespace with no name in it");
    assert_eq!(set("system.posix_acl_access", b"3", 0), Err(Errno::EOPNOTSUPP));
    assert_eq!(set("other.x", b"3", 0), Err(Errno::EOPNOTSUPP));
    set("trusted.t", b"secret", 0).unwrap();
    assert_eq!(m.core.getxattr(f, os("user.a"), 0), Ok(XattrReply::Size(2)), "size 0 asks for the size");
    assert_eq!(m.core.getxattr(f, os("user.a"), 1), Err(Errno::ERANGE));
    assert_eq!(m.core.getxattr(f, os("user.a"), 2), Ok(XattrReply::Data(b"22".to_vec())));
    assert_eq!(m.core.getxattr(f, os("user.none"), 10), Err(Errno::ENODATA));
    assert_eq!(m.core.listxattr(f, 0, 0), Ok(XattrReply::Size(17)));
    assert_eq!(m.core.listxattr(f, 100, 0), Ok(XattrReply::Data(b"trusted.t\0user.a\0".to_vec())));
    assert_eq!(m.core.listxattr(f, 100, 1000), Ok(XattrReply::Data(b"user.a\0".to_vec())), "trusted.* is root's");
    assert_eq!(m.core.listxattr(f, 3, 1000), Err(Errno::ERANGE));
    m.core.removexattr(f, os("user.a")).unwrap();
    assert_eq!(m.core.removexattr(f, os("user.a")), Err(Errno::ENODATA));
    assert!(!m.fake.at("f").unwrap().xattrs.contains_key("user.a"), "stored with the inode");
    // Too big for one attribute; and on a directory too.
    assert_eq!(set("user.big", &vec![0; 65537], 0), Err(Errno::E2BIG));
    let d = m.mkdir(ROOT, "d").ino.0;
    m.core.setxattr(d, os("user.dir"), b"yes", 0, 0).unwrap();
    assert_eq!(m.core.getxattr(d, os("user.dir"), 10), Ok(XattrReply::Data(b"yes".to_vec())));
}

#[test]
fn symlinks_keep_their_target_up_to_path_max() {
    let m = Mount::new(false);
    let l = m.core.symlink(ROOT, os("l"), std::path::Path::new("../some/where"), ME).unwrap();
    assert_eq!((l.kind, l.size, l.perm, l.uid), (FileType::Symlink, 13, 0o777, 1000));
    assert_eq!(m.core.readlink(l.ino.0).unwrap(), b"../some/where");
    assert_eq!(m.lookup(ROOT, "l").unwrap().kind, FileType::Symlink);
    let long = "x".repeat(4095);
    let ok = m.core.symlink(ROOT, os("long"), std::path::Path::new(&long), ME).unwrap();
    assert_eq!(m.core.readlink(ok.ino.0).unwrap().len(), 4095);
    let too_long = "x".repeat(4096);
    assert_eq!(m.core.symlink(ROOT, os("toolong"), std::path::Path::new(&too_long), ME), Err(Errno::ENAMETOOLONG));
    let f = m.write_file(ROOT, "f", b"");
    assert_eq!(m.core.readlink(f.ino.0), Err(Errno::EINVAL));
    assert_eq!(m.core.symlink(ROOT, os("f"), std::path::Path::new("t"), ME), Err(Errno::EEXIST));
}

#[test]
fn rename_keeps_inode_numbers_and_follows_noreplace_and_exchange() {
    let m = Mount::new(false);
    let a = m.write_file(ROOT, "a", b"A");
    let b = m.write_file(ROOT, "b", b"B");
    let d = m.mkdir(ROOT, "d");
    let inner = m.write_file(d.ino.0, "inner", b"I");
    let noreplace = libc::RENAME_NOREPLACE;
    let exchange = libc::RENAME_EXCHANGE;
    assert_eq!(m.core.rename(ROOT, os("a"), ROOT, os("b"), noreplace), Err(Errno::EEXIST));
    assert_eq!(m.core.rename(ROOT, os("a"), ROOT, os("b"), libc::RENAME_WHITEOUT), Err(Errno::EINVAL));
    assert_eq!(m.core.rename(ROOT, os("a"), ROOT, os("b"), noreplace | exchange), Err(Errno::EINVAL));
    assert_eq!(m.core.rename(ROOT, os("a"), ROOT, os("none"), exchange), Err(Errno::ENOENT));
    m.core.rename(ROOT, os("a"), ROOT, os("b"), exchange).unwrap();
    assert_eq!(m.lookup(ROOT, "a").unwrap().ino, b.ino);
    assert_eq!(m.lookup(ROOT, "b").unwrap().ino, a.ino);
    assert_eq!(m.read(m.lookup(ROOT, "b").unwrap().ino.0), b"A");
    // A directory moves in one step; what is below keeps its numbers.
    m.core.rename(ROOT, os("d"), ROOT, os("e"), noreplace).unwrap();
    let e = m.lookup(ROOT, "e").unwrap();
    assert_eq!(e.ino, d.ino);
    assert_eq!(m.lookup(e.ino.0, "inner").unwrap().ino, inner.ino);
    assert_eq!(m.lookup(ROOT, "d"), Err(Errno::ENOENT));
    assert_eq!(m.fake.at("e/inner").unwrap().ino.0, inner.ino.0);
    // Onto a directory, into itself, a non-empty one: the errors of Linux.
    assert_eq!(m.core.rename(ROOT, os("a"), ROOT, os("e"), 0), Err(Errno::EISDIR));
    let sub = m.mkdir(e.ino.0, "sub");
    assert_eq!(m.core.rename(ROOT, os("e"), sub.ino.0, os("x"), 0), Err(Errno::EINVAL));
    m.mkdir(ROOT, "full");
    let full = m.lookup(ROOT, "full").unwrap();
    m.write_file(full.ino.0, "f", b"");
    assert_eq!(m.core.rename(ROOT, os("e"), ROOT, os("full"), 0), Err(Errno::ENOTEMPTY));
}

#[test]
fn a_new_file_goes_up_before_it_is_renamed_and_a_new_file_renamed_over_never_does() {
    let m = Mount::new(false);
    let (draft, fh) = m.create(ROOT, "draft");
    m.write_all(fh, b"text");
    m.core.rename(ROOT, os("draft"), ROOT, os("final"), 0).unwrap();
    let stored = m.fake.at("final").unwrap();
    assert_eq!((stored.ino.0, m.fake.content(stored.ino).unwrap()), (draft.ino.0, b"text".to_vec()));
    m.core.write(fh, 4, b" more").unwrap();
    m.close(fh).unwrap();
    assert_eq!(m.fake.content(stored.ino).unwrap(), b"text more", "later writes go to the renamed inode");

    // A file made here and still open is replaced by a rename onto its name.
    let (t, tfh) = m.create(ROOT, "target");
    m.write_all(tfh, b"never stored");
    let s = m.write_file(ROOT, "source", b"kept");
    let before = m.fake.uploads().len();
    m.core.rename(ROOT, os("source"), ROOT, os("target"), 0).unwrap();
    m.close(tfh).unwrap();
    assert_eq!(m.fake.uploads().len(), before, "the replaced new file never went up");
    assert_eq!(m.fake.at("target").unwrap().ino.0, s.ino.0);
    assert_eq!(m.lookup(ROOT, "target").unwrap().ino, s.ino);
    assert_ne!(t.ino, s.ino);
}

#[test]
fn a_new_file_removed_before_it_is_stored_never_reaches_the_cluster() {
    let m = Mount::new(false);
    let (f, fh) = m.create(ROOT, "tmp");
    m.write_all(fh, b"scratch");
    m.core.unlink(ROOT, os("tmp")).unwrap();
    assert_eq!(m.lookup(ROOT, "tmp"), Err(Errno::ENOENT));
    assert!(m.ls(ROOT).is_empty());
    assert_eq!(m.core.getattr(f.ino.0, Some(fh)).unwrap().nlink, 0);
    m.close(fh).unwrap();
    assert!(m.fake.uploads().is_empty());
}

#[test]
fn setattr_changes_mode_owner_times_and_size_and_moves_the_ctime() {
    let m = Mount::new(false);
    let f = m.write_file(ROOT, "f", b"0123456789");
    let ino = f.ino.0;
    std::thread::sleep(Duration::from_millis(2));
    let chmod = m.core.setattr(ino, SetAttr { mode: Some(0o4750), ..Default::default() }, None).unwrap();
    assert_eq!(chmod.perm, 0o4750);
    assert!(chmod.ctime > f.ctime, "chmod moves the ctime");
    let chown = m.core.setattr(ino, SetAttr { uid: Some(7), gid: Some(8), ..Default::default() }, None).unwrap();
    assert_eq!((chown.uid, chown.gid), (7, 8));
    let when = UNIX_EPOCH + Duration::new(1_500_000_000, 5);
    let set = SetAttr { mtime: Some(TimeOrNow::SpecificTime(when)), atime: Some(TimeOrNow::Now), ..Default::default() };
    let times = m.core.setattr(ino, set, None).unwrap();
    assert_eq!(times.mtime, when, "nanoseconds kept");
    assert!(times.atime > when);
    let cut = m.core.setattr(ino, SetAttr { size: Some(4), ..Default::default() }, None).unwrap();
    assert_eq!(cut.size, 4);
    assert_eq!(m.fake.content(Ino(ino)).unwrap(), b"0123");
    let grown = m.core.setattr(ino, SetAttr { size: Some(6), ..Default::default() }, None).unwrap();
    assert_eq!(grown.size, 6);
    assert_eq!(m.read(ino), b"0123\0\0");
    let stored = m.fake.at("f").unwrap();
    assert_eq!((stored.mode, stored.uid, stored.gid), (0o4750, 7, 8), "the inode kept its attributes");
}

#[test]
fn fallocate_extends_a_file_and_refuses_other_modes() {
    let m = Mount::new(false);
    let f = m.write_file(ROOT, "f", b"ab");
    let fh = m.core.open(f.ino.0, WRITE).unwrap();
    m.core.fallocate(fh, 0, 100, 0).unwrap();
    assert_eq!(m.core.getattr(f.ino.0, Some(fh)).unwrap().size, 100);
    m.core.fallocate(fh, 0, 10, 0).unwrap();
    assert_eq!(m.core.getattr(f.ino.0, Some(fh)).unwrap().size, 100, "never shrinks");
    assert_eq!(
        m.core.fallocate(fh, 0, 10, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE),
        Err(Errno::EOPNOTSUPP)
    );
    m.close(fh).unwrap();
    let mut want = b"ab".to_vec();
    want.resize(100, 0);
    assert_eq!(m.fake.content(Ino(f.ino.0)).unwrap(), want);
}

#[test]
fn create_of_a_name_taken_meanwhile_opens_it_or_says_it_exists() {
    let m = Mount::new(false);
    let theirs = m.fake.put_file(Ino::ROOT, "x", b"theirs");
    let excl = m.core.create(ROOT, os("x"), 0o644, CREATE | libc::O_EXCL, ME);
    assert_eq!(excl.unwrap_err(), Errno::EEXIST);
    let (attr, fh) = m.core.create(ROOT, os("x"), 0o644, CREATE | libc::O_TRUNC, ME).unwrap();
    assert_eq!(attr.ino.0, theirs.ino.0, "the existing file, not a new one");
    m.write_all(fh, b"mine");
    m.close(fh).unwrap();
    assert_eq!(m.fake.content(theirs.ino).unwrap(), b"mine");
    assert_eq!(m.fake.at("x").unwrap().uid, 0, "its owner stays");
}

#[test]
fn a_full_cluster_refuses_a_new_file_at_create_and_still_takes_overwrites() {
    let m = Mount::new(false);
    let a = m.write_file(ROOT, "a", b"a");
    m.fake.set_max_files(1);
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(m.core.create(ROOT, os("b"), 0o644, CREATE, ME).unwrap_err(), Errno::ENOSPC);
    m.rewrite(a.ino.0, b"overwritten");
    assert_eq!(m.fake.content(Ino(a.ino.0)).unwrap(), b"overwritten");
}

#[test]
fn an_unreachable_cluster_gives_eio_at_once() {
    let m = Mount::new(false);
    let (_, fh) = m.create(ROOT, "f");
    m.write_all(fh, b"x");
    m.fake.set_down(true);
    assert_eq!(m.lookup(ROOT, "other"), Err(Errno::EIO));
    assert_eq!(m.close(fh), Err(Errno::EIO), "close says the file is not stored");
    assert_eq!(m.core.mkdir(ROOT, os("d"), 0o755, ME), Err(Errno::EIO));
    m.fake.set_down(false);
}

#[test]
fn a_reader_sees_a_rewrite_made_in_this_mount() {
    let m = Mount::new(false);
    let f = m.write_file(ROOT, "f", b"0123456789");
    let reader = m.core.open(f.ino.0, libc::O_RDONLY).unwrap();
    assert_eq!(m.core.read(reader, 0, 3).unwrap(), b"012");
    m.rewrite(f.ino.0, b"ab");
    assert_eq!(m.read_fh(reader), b"ab");
    m.core.release(reader).unwrap();
}

#[test]
fn readdirplus_gives_every_entry_with_attributes_and_counts_them_as_lookups() {
    let m = Mount::new(false);
    let d = m.mkdir(ROOT, "d");
    m.write_file(d.ino.0, "stored", b"12");
    let (fresh, fh) = m.create(d.ino.0, "fresh");
    m.write_all(fh, b"123");
    let dir = m.core.opendir(d.ino.0).unwrap();
    let mut got = Vec::new();
    m.core
        .readdirplus(dir, 0, |item, _, attr| {
            got.push((item.name.clone(), attr.ino, attr.size));
            false
        })
        .unwrap();
    let names: Vec<&str> = got.iter().map(|(n, ..)| n.as_str()).collect();
    assert_eq!(names, [".", "..", "stored", "fresh"]);
    assert_eq!(got[1].1 .0, ROOT, "`..` is the parent");
    assert_eq!((got[3].1, got[3].2), (fresh.ino, 3), "a file not stored yet, with its size");
    assert_eq!(m.core.inodes.lock().unwrap().lookups(Ino(fresh.ino.0)), 2, "create and readdirplus");
    // From an offset, and stopping when the reply is full.
    let mut rest = Vec::new();
    m.core
        .readdirplus(dir, 2, |item, next, _| {
            rest.push((item.name.clone(), next));
            true
        })
        .unwrap();
    assert_eq!(rest, [("stored".to_string(), 3)]);
    m.core.releasedir(dir).unwrap();
    m.close(fh).unwrap();
}

#[test]
fn inode_numbers_are_the_clusters_so_another_mount_sees_the_same_ones() {
    let fake = Fake::new();
    let one = Mount::of(fake.clone(), false, tempfile::tempdir().unwrap());
    let two = Mount::of(fake, false, tempfile::tempdir().unwrap());
    let f = one.write_file(ROOT, "f", b"v1");
    let d = one.mkdir(ROOT, "d");
    one.core.link(f.ino.0, d.ino.0, os("g")).unwrap();
    let seen = two.lookup(ROOT, "f").unwrap();
    assert_eq!((seen.ino, seen.nlink, seen.uid), (f.ino, 2, 1000));
    let via_g = two.lookup(d.ino.0, "g").unwrap();
    assert_eq!(via_g.ino, f.ino);
    // A write through one name in one mount is read through the other in another.
    two.rewrite(via_g.ino.0, b"v2 from two");
    std::thread::sleep(super::ops::TTL);
    assert_eq!(one.read(one.lookup(ROOT, "f").unwrap().ino.0), b"v2 from two");
}

#[test]
fn with_write_back_a_big_file_written_by_a_redirect_streams_even_once_its_empty_record_went_up() {
    // `cmd > file` and dd close the new file once before writing: with
    // write-back the empty file is journaled, and goes up while cmd writes
    // (here once the uploaders start, after the stream opened).
    let m = Mount::idle(Fake::new(), true, tempfile::tempdir().unwrap());
    let data: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
    let (attr, fh) = m.create(ROOT, "dump");
    m.core.flush(fh, 0).unwrap();
    let (first, rest) = data.split_at(2 << 20);
    m.write_all(fh, first);
    assert_eq!(m.fake.streams(), 1, "the stream opened as the file was written");
    assert!(m.fake.at("dump").is_none(), "the empty record waits for the uploaders");
    m.core.start_uploaders(Vec::new()).unwrap();
    eventually("the empty record on the cluster", || m.fake.at("dump").is_some());
    for (i, chunk) in rest.chunks(128 << 10).enumerate() {
        m.core.write(fh, (first.len() + i * (128 << 10)) as u64, chunk).unwrap();
    }
    m.close(fh).unwrap();
    let ups = m.fake.uploads();
    assert_eq!(targets(&ups).len(), 2, "the empty record, then the stream: {ups:?}");
    assert_eq!(ups[1].size, None, "the content went up in the stream it was written into, not again whole at close");
    assert_eq!(m.fake.streams(), 1);
    let stored = m.fake.at("dump").unwrap();
    assert_eq!(stored.ino.0, attr.ino.0);
    assert_eq!(m.fake.content(stored.ino).unwrap(), data);
}

#[test]
fn a_directory_holding_a_file_still_open_is_not_replaced_by_a_rename() {
    for write_back in [false, true] {
        let m = Mount::new(write_back);
        m.mkdir(ROOT, "x");
        let y = m.mkdir(ROOT, "y");
        let (z, fh) = m.create(y.ino.0, "z");
        m.write_all(fh, b"important");
        assert_eq!(m.core.rename(ROOT, os("x"), ROOT, os("y"), 0), Err(Errno::ENOTEMPTY), "write-back {write_back}");
        m.close(fh).unwrap();
        eventually("y/z on the cluster", || m.fake.at("y/z").is_some_and(|i| i.ino.0 == z.ino.0));
        assert_eq!(m.fake.content(Ino(z.ino.0)).unwrap(), b"important");
    }
}

#[test]
fn with_write_back_a_big_file_that_could_not_be_stored_at_close_is_kept_in_unsent() {
    let m = Mount::new(true);
    let data: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    let (_, fh) = m.create(ROOT, "big.bin");
    m.write_all(fh, &data);
    m.fake.set_down(true);
    assert_eq!(m.close(fh), Err(Errno::EIO), "close says the file is not stored");
    m.fake.set_down(false);
    let unsent = m.dir.as_ref().unwrap().path().join("unsent");
    let kept: Vec<_> = std::fs::read_dir(&unsent).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].to_string_lossy().ends_with("-big.bin"), "{kept:?}");
    assert!(std::fs::read(&kept[0]).unwrap() == data, "the whole content is kept");
}

#[test]
fn with_write_back_a_closed_file_goes_up_soon_as_a_new_file_and_orders_what_follows() {
    let m = Mount::new(true);
    let (f, fh) = m.create(ROOT, "draft.txt");
    m.write_all(fh, b"final text");
    m.core.setxattr(f.ino.0, os("user.k"), b"v", 0, 0).unwrap();
    m.close(fh).unwrap();
    assert_eq!(m.read(f.ino.0), b"final text", "readable here at once");
    // Renamed before it went up: it goes up under its new name.
    m.core.rename(ROOT, os("draft.txt"), ROOT, os("final.txt"), 0).unwrap();
    eventually("final.txt on the cluster", || m.fake.at("final.txt").is_some());
    assert!(m.fake.at("draft.txt").is_none());
    let stored = m.fake.at("final.txt").unwrap();
    assert_eq!((stored.ino.0, stored.uid, stored.gid), (f.ino.0, 1000, 100));
    assert_eq!(stored.xattrs["user.k"].0, b"v");
    assert_eq!(m.fake.content(stored.ino).unwrap(), b"final text");
    // Written and removed at once: it never needs to reach the cluster.
    let uploads = m.fake.uploads().len();
    let (_, fh) = m.create(ROOT, "tmp");
    m.write_all(fh, b"scratch");
    m.close(fh).unwrap();
    m.core.unlink(ROOT, os("tmp")).unwrap();
    assert!(m.fake.at("tmp").is_none());
    // Overwritten many times in a row: the last content wins.
    let c = m.write_file(ROOT, "counter", b"round 0");
    for round in 1..30 {
        m.rewrite(c.ino.0, format!("round {round}").as_bytes());
    }
    eventually("the last round on the cluster", || m.fake.content(Ino(c.ino.0)).is_some_and(|b| b == b"round 29"));
    assert!(m.fake.uploads().len() - uploads < 30, "waiting records were replaced, not all sent");
    // Files closed in a directory go up before it can be removed.
    let d = m.mkdir(ROOT, "d");
    m.write_file(d.ino.0, "f", b"x");
    assert_eq!(m.core.rmdir(ROOT, os("d")), Err(Errno::ENOTEMPTY));
    assert!(m.fake.at("d/f").is_some());
}

#[test]
fn a_journal_left_by_a_stopped_mount_goes_up_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    {
        let (journal, _) = Journal::open(&dir.path().join("pending")).unwrap();
        let (first, _) = fake.reserve_inodes(1).unwrap();
        let staged = dir.path().join("content-left");
        std::fs::write(&staged, b"closed before the crash").unwrap();
        let mut spec =
            UploadSpec::new(Target::New { parent: Ino::ROOT, name: "left".into(), ino: first }, None, 0o600, 5);
        (spec.uid, spec.gid) = (1000, 100);
        journal.write(&spec, &std::fs::File::open(&staged).unwrap(), 23).unwrap();
        journal.sync();
    }
    let m = Mount::of(fake, true, dir);
    assert!(m.core.wait_written_back(Duration::from_secs(10)));
    let stored = m.fake.at("left").unwrap();
    assert_eq!((stored.mode, stored.uid, stored.mtime_ns), (0o600, 1000, 5));
    assert_eq!(m.fake.content(stored.ino).unwrap(), b"closed before the crash");
}

#[test]
fn with_write_back_files_closed_in_a_moved_directory_are_on_the_cluster_when_the_move_returns() {
    let m = Mount::new(true);
    let src = m.mkdir(ROOT, "src");
    let sub = m.mkdir(src.ino.0, "sub");
    for i in 0..10 {
        m.write_file(src.ino.0, &format!("f{i}"), format!("{i}").as_bytes());
    }
    m.write_file(sub.ino.0, "deep", b"deep");
    m.core.rename(ROOT, os("src"), ROOT, os("dst"), 0).unwrap();
    for i in 0..10 {
        assert!(m.fake.at(&format!("dst/f{i}")).is_some(), "dst/f{i} moved with its directory");
    }
    assert_eq!(m.fake.content(m.fake.at("dst/sub/deep").unwrap().ino).unwrap(), b"deep");
}

#[test]
fn with_write_back_a_directory_holding_a_file_not_up_yet_is_not_replaced_by_a_rename() {
    let m = Mount::new(true);
    let (x, y) = (m.mkdir(ROOT, "x"), m.mkdir(ROOT, "y"));
    // Closed just before, so its record still waits for its uploader.
    let z = m.write_file(y.ino.0, "z", b"important");
    assert_eq!(m.core.rename(ROOT, os("x"), ROOT, os("y"), 0), Err(Errno::ENOTEMPTY));
    let noreplace = libc::RENAME_NOREPLACE;
    assert_eq!(m.core.rename(ROOT, os("x"), ROOT, os("y"), noreplace), Err(Errno::EEXIST));
    assert_eq!(m.lookup(ROOT, "x").unwrap().ino, x.ino, "the source stays where it was");
    let kept = m.fake.at("y/z").expect("y/z on the cluster, in its directory");
    assert_eq!((kept.ino.0, m.fake.content(kept.ino).unwrap()), (z.ino.0, b"important".to_vec()));
    assert_eq!(m.read(z.ino.0), b"important");
}

#[test]
fn with_write_back_small_files_closed_together_go_up_several_in_one_exchange() {
    // Closed while the uploaders wait, so that however slow this machine
    // is, they find the files waiting together.
    let m = Mount::idle(Fake::new(), true, tempfile::tempdir().unwrap());
    let d = m.mkdir(ROOT, "many");
    for i in 0..40 {
        m.write_file(d.ino.0, &format!("f{i}"), format!("content {i}").as_bytes());
    }
    std::thread::sleep(Duration::from_millis(25));
    m.core.start_uploaders(Vec::new()).unwrap();
    eventually("the 40 files to go up", || (0..40).all(|i| m.fake.at(&format!("many/f{i}")).is_some()));
    assert!(m.fake.exchanges_of_many() > 0, "40 files closed at once went up one at a time");
    for i in 0..40 {
        let f = m.fake.at(&format!("many/f{i}")).unwrap();
        assert_eq!(m.fake.content(f.ino).unwrap(), format!("content {i}").as_bytes());
    }
}

#[test]
fn with_write_back_new_files_are_made_and_closed_while_the_cluster_is_down() {
    let m = Mount::new(true);
    let d = m.mkdir(ROOT, "docs");
    m.fake.set_down(true);
    for i in 0..5 {
        m.write_file(d.ino.0, &format!("n{i}"), format!("content {i}").as_bytes());
    }
    assert_eq!(m.ls(d.ino.0).len(), 5, "shown here at once");
    m.fake.set_down(false);
    eventually("the files to go up once the cluster is back", || m.fake.at("docs/n4").is_some());
    let n4 = m.fake.at("docs/n4").unwrap();
    assert_eq!(m.fake.content(n4.ino).unwrap(), b"content 4");
}

#[test]
fn after_an_upgrade_what_the_previous_release_left_in_its_journal_still_goes_up() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    let node = NewNode { kind: Kind::Dir, mode: 0o755, uid: 0, gid: 0, rdev: 0, target: String::new() };
    let photos = fake.make_as(Ino::ROOT, "photos", node);
    write_v1_record(&dir.path().join("pending"), 7, "photos/cat.txt", b"meow");
    let m = Mount::of(fake, false, dir);
    assert!(m.core.wait_written_back(Duration::from_secs(10)));
    let cat = m.fake.at("photos/cat.txt").unwrap();
    assert_eq!(m.fake.content(cat.ino).unwrap(), b"meow");
    assert_eq!(m.lookup(photos.ino.0, "cat.txt").unwrap().perm, 0o640);
}

/// Closes `name` in the root with `data`, then does to it what rsync does
/// to its temporary file: chmod, set the times, rename it to `to`.
fn rsync_pattern(m: &Mount, name: &str, data: &[u8], to: &str) -> u64 {
    let f = m.write_file(ROOT, name, data);
    let ino = f.ino.0;
    m.core.setattr(ino, SetAttr { mode: Some(0o600), ..Default::default() }, None).unwrap();
    let at = TimeOrNow::SpecificTime(UNIX_EPOCH + Duration::from_secs(1_000_000));
    m.core.setattr(ino, SetAttr { atime: Some(at), mtime: Some(at), ..Default::default() }, None).unwrap();
    m.core.rename(ROOT, os(name), ROOT, os(to), 0).unwrap();
    ino
}

#[test]
fn with_write_back_chmod_times_and_rename_of_a_closed_file_wait_for_nothing_and_it_goes_up_once() {
    let m = Mount::idle(Fake::new(), true, tempfile::tempdir().unwrap());
    m.fake.put_file(Ino::ROOT, "old", b"replaced by the rename");
    let before = m.fake.uploads().len();
    let ino = rsync_pattern(&m, ".f.tmp", b"content", "f");
    m.core.setxattr(ino, os("user.origin"), b"rsync", 0, 0).unwrap();
    // Nothing went up (the uploaders have not started), yet all of it shows here.
    assert_eq!(m.fake.uploads().len(), before);
    let shown = m.lookup(ROOT, "f").unwrap();
    assert_eq!((shown.ino.0, shown.perm, shown.mtime), (ino, 0o600, UNIX_EPOCH + Duration::from_secs(1_000_000)));
    assert_eq!(m.lookup(ROOT, ".f.tmp"), Err(Errno::ENOENT));
    assert_eq!(m.read(ino), b"content");
    // Moved over a file the cluster has: shown in its place at once.
    let g = rsync_pattern(&m, ".g.tmp", b"new", "old");
    assert_eq!(m.lookup(ROOT, "old").unwrap().ino.0, g);
    let mut names = m.ls(ROOT);
    names.sort();
    assert_eq!(names, ["f", "old"]);

    m.core.start_uploaders(Vec::new()).unwrap();
    assert!(m.core.wait_written_back(Duration::from_secs(10)));
    let f = m.fake.at("f").unwrap();
    assert_eq!((f.ino.0, f.mode & 0o7777, f.mtime_ns), (ino, 0o600, 1_000_000_000_000_000));
    assert_eq!(f.xattrs["user.origin"].0, b"rsync");
    assert_eq!(m.fake.content(f.ino).unwrap(), b"content");
    let old = m.fake.at("old").unwrap();
    assert_eq!((old.ino.0, m.fake.content(old.ino).unwrap()), (g, b"new".to_vec()));
    assert!(m.fake.at(".f.tmp").is_none() && m.fake.at(".g.tmp").is_none());
    assert_eq!(m.fake.uploads().len() - before, 2, "each file went up once, under its last name");
}

#[test]
fn with_write_back_a_killed_mount_sends_up_the_renamed_file_with_its_last_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    let m = Mount::idle(fake.clone(), true, dir);
    let ino = rsync_pattern(&m, ".f.tmp", b"content", "f");
    // Killed: nothing is flushed; the journal is as the last operation left it.
    let dir = m.kill();
    let again = Mount::of(fake, true, dir);
    assert!(again.core.wait_written_back(Duration::from_secs(10)));
    let f = again.fake.at("f").unwrap();
    assert_eq!((f.ino.0, f.mode & 0o7777, f.mtime_ns), (ino, 0o600, 1_000_000_000_000_000));
    assert_eq!(again.fake.content(f.ino).unwrap(), b"content");
    assert!(again.fake.at(".f.tmp").is_none(), "the name it was closed under never appears");
}

#[test]
fn with_write_back_a_closed_file_removed_before_it_went_up_never_goes_up() {
    let m = Mount::idle(Fake::new(), true, tempfile::tempdir().unwrap());
    let before = m.fake.uploads().len();
    let f = rsync_pattern(&m, ".s.tmp", b"scratch", "scratch");
    m.core.unlink(ROOT, os("scratch")).unwrap();
    assert_eq!(m.lookup(ROOT, "scratch"), Err(Errno::ENOENT));
    assert!(m.ls(ROOT).is_empty());
    m.core.start_uploaders(Vec::new()).unwrap();
    assert!(m.core.wait_written_back(Duration::from_secs(10)));
    assert_eq!(m.fake.uploads().len(), before, "inode {f} never went up");
}

#[test]
fn selinux_labels_are_not_kept_so_ls_stops_asking_but_other_security_attributes_are() {
    let m = Mount::new(false);
    let f = m.write_file(ROOT, "f", b"x").ino.0;
    // "Not supported", which ls remembers for the whole file system; "no such
    // attribute" would make it ask again for every file it lists.
    assert_eq!(m.core.getxattr(f, os("security.selinux"), 255), Err(Errno::EOPNOTSUPP));
    assert_eq!(m.core.setxattr(f, os("security.selinux"), b"system_u:object_r:x:s0", 0, 0), Err(Errno::EOPNOTSUPP));
    assert_eq!(m.core.getxattr(f, os("security.other"), 255), Err(Errno::ENODATA));
    m.core.setxattr(f, os("security.capability"), b"\x01\x00\x00\x02", 0, 0).unwrap();
    assert_eq!(m.core.getxattr(f, os("security.capability"), 64), Ok(XattrReply::Data(b"\x01\x00\x00\x02".to_vec())));
}

#[test]
fn with_write_back_a_new_file_renamed_over_another_while_still_open_replaces_it() {
    // mkstemp (O_EXCL), write, rename over the real name, then close: as
    // some atomic-save code does.
    let m = Mount::new(true);
    m.fake.put_file(Ino::ROOT, "config", b"old settings");
    let excl = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    let (f, fh) = m.core.create(ROOT, os(".config.XXXXXX"), 0o600, excl, ME).unwrap();
    m.write_all(fh, b"new settings");
    m.core.rename(ROOT, os(".config.XXXXXX"), ROOT, os("config"), 0).unwrap();
    m.close(fh).unwrap();
    assert!(m.core.wait_written_back(Duration::from_secs(10)));
    let stored = m.fake.at("config").unwrap();
    assert_eq!((stored.ino.0, m.fake.content(stored.ino).unwrap()), (f.ino.0, b"new settings".to_vec()));
    assert!(m.fake.at(".config.XXXXXX").is_none());
}

#[test]
fn names_in_a_listed_directory_stay_known_through_this_mounts_changes_in_it_not_past_anothers() {
    let m = Mount::new(false);
    let node = NewNode { kind: Kind::Dir, mode: 0o755, uid: 0, gid: 0, rdev: 0, target: String::new() };
    let d = m.fake.make_as(Ino::ROOT, "big", node);
    for n in 0..4 {
        m.fake.put_file(d.ino, &format!("f{n}"), b"x");
    }
    assert_eq!(m.ls(d.ino.0).len(), 4);
    let half = super::ops::TTL * 6 / 10;
    std::thread::sleep(half);
    m.core.unlink(d.ino.0, os("f0")).unwrap();
    // The listing is older than the TTL now; the unlink that kept it fresh is not.
    std::thread::sleep(half);
    m.fake.set_down(true);
    let (attr, attr_ttl) = m.core.lookup(d.ino.0, os("f1")).expect("answered from the listing, with no request");
    assert_eq!(attr.ino.0, m.fake.at("big/f1").unwrap().ino.0);
    assert_eq!(attr_ttl, Duration::ZERO, "its attributes are to be asked for again");
    assert_eq!(m.core.lookup(d.ino.0, os("f0")).err(), Some(Errno::ENOENT));
    m.fake.set_down(false);
    // Another client adds a name: this mount's next change finds the
    // directory at a version its listing is not of, and keeps it no longer.
    m.fake.put_file(d.ino, "g", b"y");
    m.core.unlink(d.ino.0, os("f1")).unwrap();
    std::thread::sleep(half);
    m.fake.set_down(true);
    assert!(m.core.lookup(d.ino.0, os("g")).is_err(), "the listing expired: only the cluster can say");
    m.fake.set_down(false);
    assert!(m.core.lookup(d.ino.0, os("g")).is_ok());
}

#[test]
fn files_stored_in_a_directory_this_mount_made_keep_it_listed_until_another_client_changes_it() {
    for write_back in [false, true] {
        let m = Mount::new(write_back);
        let d = m.mkdir(ROOT, "untar").ino.0;
        let stored = |name: &str| {
            let path = format!("untar/{name}");
            eventually(&path, || m.fake.at(&path).is_some());
        };
        // Unpacking into it: each file stored a while after the last. The
        // directory's listing (empty when made) is older than the TTL by
        // the end; the steps of the uploads kept it fresh.
        let half = super::ops::TTL * 6 / 10;
        let asked = m.fake.names_asked();
        for n in 0..3 {
            std::thread::sleep(half);
            let name = format!("f{n}");
            m.write_file(d, &name, b"x");
            stored(&name);
        }
        assert_eq!(m.fake.names_asked(), asked, "write-back {write_back}: neither a name nor a listing asked for");
        m.fake.set_down(true);
        assert_eq!(m.core.lookup(d, os("next")).err(), Some(Errno::ENOENT), "write-back {write_back}: no request");
        assert!(m.core.lookup(d, os("f1")).is_ok(), "write-back {write_back}");
        m.fake.set_down(false);
        // Another client adds a name: the next upload finds the directory
        // at a version this mount's listing is not of, and keeps it no longer.
        m.fake.put_file(Ino(d), "theirs", b"y");
        m.write_file(d, "f3", b"x");
        stored("f3");
        std::thread::sleep(super::ops::TTL);
        m.fake.set_down(true);
        assert!(m.core.lookup(d, os("theirs")).is_err(), "write-back {write_back}: the listing expired");
        m.fake.set_down(false);
        assert!(m.core.lookup(d, os("theirs")).is_ok(), "write-back {write_back}");
    }
}
