#!/usr/bin/env python3
"""One scripted sequence of file-system calls, one output line per call:
`name: ok [what it shows]` or `name: ERRNO`. tests/tests/errno_vs_ext4.rs
runs it in a directory on ext4 and in an scs mount, as root and as a user,
and compares the lines.

    errno_vs_ext4.py setup DIR UID GID   as root: fixtures owned by others
    errno_vs_ext4.py run DIR             as the user under test

Only what both file systems should agree on is printed: no inode numbers,
no absolute times (only whether a time advanced, or an exact time that was
set), no directory sizes, no atime after reads.
"""

import ctypes
import errno
import fcntl
import os
import stat
import sys
import time

# Identities (the test runs the user as 65534:65534 with group SUPP).
OTHER = 65533  # owns most fixtures: "another user"
OTHER_G = 65533
FOURTH = 65531  # a third user
SUPP = 65532  # a supplementary group of the user under test
FOREIGN = 65530  # a group the user under test is not in

# Long enough for ext4's timestamps (a clock tick) to move between a snapshot and the change after it.
TICK = 0.02

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
XATTR_CREATE = 1
XATTR_REPLACE = 2

libc = ctypes.CDLL(None, use_errno=True)
libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
libc.getxattr.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
libc.getxattr.restype = ctypes.c_ssize_t
libc.listxattr.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
libc.listxattr.restype = ctypes.c_ssize_t
libc.setxattr.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]


def check(r):
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def b(path):
    return os.fsencode(path)


def renameat2(old, new, flags):
    check(libc.renameat2(AT_FDCWD, b(old), AT_FDCWD, b(new), flags))


def fallocate(fd, mode, offset, length):
    check(libc.fallocate(fd, mode, offset, length))


def getxattr_sized(path, name, size):
    """getxattr(2) with a buffer of `size` bytes: the length it answers."""
    buf = ctypes.create_string_buffer(max(size, 1))
    return check(libc.getxattr(b(path), name.encode(), buf if size else None, size))


def listxattr_sized(path, size):
    buf = ctypes.create_string_buffer(max(size, 1))
    return check(libc.listxattr(b(path), buf if size else None, size))


def setxattr_raw(path, name, value, flags):
    """setxattr(2) with any flags (os.setxattr refuses none, but be explicit)."""
    check(libc.setxattr(b(path), name.encode(), value, len(value), flags))


def utimensat(path, times, nofollow=False):
    """utimensat(2); `times` is None or ((sec, nsec), (sec, nsec))."""
    arr = None
    if times is not None:
        arr = (Timespec * 2)(Timespec(*times[0]), Timespec(*times[1]))
    check(libc.utimensat(AT_FDCWD, b(path), arr, AT_SYMLINK_NOFOLLOW if nofollow else 0))


# ----- output -----

SEEN = set()


def emit(name, result):
    assert name not in SEEN, f"line name used twice: {name}"
    SEEN.add(name)
    print(f"{name}: {result}", flush=True)


def errname(e):
    # Python names 95 ENOTSUP; Linux's own name for it is EOPNOTSUPP.
    if e.errno == errno.EOPNOTSUPP:
        return "EOPNOTSUPP"
    return errno.errorcode.get(e.errno, f"errno{e.errno}")


class Failed:
    """What `op` returns when the call failed."""


FAILED = Failed()


def op(name, fn, *args, show=None, **kw):
    """Runs fn(*args), prints `name: ok` (with show(result) if given) or the errno."""
    try:
        r = fn(*args, **kw)
    except OSError as e:
        emit(name, errname(e))
        return FAILED
    emit(name, "ok" if show is None else f"ok {show(r)}")
    return r


def ok(r):
    return not isinstance(r, Failed)


def attrs_of(st):
    kind = stat.S_IFMT(st.st_mode)
    parts = [f"mode={st.st_mode:o}", f"nlink={st.st_nlink}", f"uid={st.st_uid}", f"gid={st.st_gid}"]
    # A directory's size is the file system's own business (ext4: blocks; scs: a constant).
    if kind != stat.S_IFDIR:
        parts.append(f"size={st.st_size}")
    if kind in (stat.S_IFCHR, stat.S_IFBLK):
        parts.append(f"rdev={os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
    return " ".join(parts)


def attrs(name, path, follow=False):
    op(name, os.stat if follow else os.lstat, path, show=attrs_of)


def open_close(path, flags, mode=0o666):
    os.close(os.open(path, flags, mode))


def create(path, data=b"", mode=0o666):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def write_at(path, data, flags=os.O_WRONLY):
    fd = os.open(path, flags)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


def content(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while True:
            c = os.read(fd, 1 << 16)
            if not c:
                return b"".join(chunks)
            chunks.append(c)
    finally:
        os.close(fd)


def show_bytes(data):
    return repr(data) if len(data) <= 64 else f"{len(data)} bytes, {data[:16]!r}...{data[-16:]!r}"


def read(name, path):
    op(name, content, path, show=show_bytes)


def times(path):
    """ctime and mtime now, then a pause, so what comes next happens later."""
    st = os.lstat(path)
    time.sleep(TICK)
    return (st.st_ctime_ns, st.st_mtime_ns)


def moved(name, path, before, mtime=True):
    """Whether ctime (and mtime) moved on since `before` (from `times`)."""

    def since(now, then):
        return "advanced" if now > then else "same" if now == then else "went back"

    def show(st):
        c = f"ctime={since(st.st_ctime_ns, before[0])}"
        return f"{c} mtime={since(st.st_mtime_ns, before[1])}" if mtime else c

    op(name, os.lstat, path, show=show)


def recent(ns):
    return abs(ns - time.time_ns()) < 10 * 10**9


def exact_times(st):
    return f"atime={st.st_atime_ns} mtime={st.st_mtime_ns}"


# ----- fixtures -----


def setup(top, uid, gid):
    """As root: the directories and files of others the run works against."""
    os.umask(0)
    os.chdir(top)

    def made(path, mode, owner, group, data=None):
        if data is None:
            os.mkdir(path)
        else:
            create(path, data)
        os.lchown(path, owner, group)
        # After chown, which clears set-id bits.
        os.chmod(path, mode)

    made("home", 0o755, uid, gid)
    made("home/foreign_grp", 0o644, uid, FOREIGN, b"mine, group foreign")
    made("home/foreign_grp_sgid", 0o2644, uid, FOREIGN, b"mine, group foreign, sgid")
    made("home/otherdir", 0o755, OTHER, OTHER_G)
    made("home/otherdir2", 0o755, OTHER, OTHER_G)
    made("home/otherfile", 0o644, OTHER, OTHER_G, b"theirs in my dir")
    made("other_file", 0o644, OTHER, OTHER_G, b"hello")
    made("other_trunc", 0o644, OTHER, OTHER_G, b"hello")
    made("other_chmod", 0o644, OTHER, OTHER_G, b"hello")
    made("other_chown", 0o644, OTHER, OTHER_G, b"hello")
    made("other_rw", 0o666, OTHER, OTHER_G, b"hello")
    made("other_rw_times", 0o666, OTHER, OTHER_G, b"hello")
    made("other_suid", 0o6777, OTHER, OTHER_G, b"hello")
    made("other_sgid_noexec", 0o2666, OTHER, OTHER_G, b"hello")
    made("other_suid_trunc", 0o6777, OTHER, OTHER_G, b"hello")
    made("other_none", 0o000, OTHER, OTHER_G, b"hello")
    made("other_grp", 0o604, OTHER, SUPP, b"hello")
    made("other_dir", 0o755, OTHER, OTHER_G)
    made("other_dir/f", 0o644, OTHER, OTHER_G, b"hello")
    made("other_dir_noexec", 0o744, OTHER, OTHER_G)
    made("other_dir_noexec/f", 0o644, OTHER, OTHER_G, b"hello")
    made("other_dir_nolist", 0o711, OTHER, OTHER_G)
    made("other_dir_nolist/f", 0o644, OTHER, OTHER_G, b"hello")
    made("sticky", 0o1777, OTHER, OTHER_G)
    made("sticky/theirs", 0o666, OTHER, OTHER_G, b"theirs")
    made("sticky/theirdir", 0o777, OTHER, OTHER_G)
    made("sticky/fourth", 0o666, FOURTH, FOURTH, b"a third user's")
    made("sticky_mine", 0o1777, uid, gid)
    made("sticky_mine/x", 0o644, OTHER, OTHER_G, b"theirs in my sticky dir")
    made("sgid", 0o2777, OTHER, SUPP)
    made("sgid_foreign", 0o2777, OTHER, FOREIGN)
    os.setxattr("other_file", "user.x", b"1")
    os.setxattr("other_file", "security.s", b"sec")
    os.setxattr("other_rw", "trusted.t", b"root only")
    os.setxattr("other_rw", "user.x", b"1")


# ----- the run -----


def run(top):
    os.chdir(top)
    os.umask(0o022)
    me, my_gid = os.getuid(), os.getgid()
    emit("who", f"uid={me} gid={my_gid} groups={sorted(set(os.getgroups()) - {my_gid})}")
    section_open()
    section_read_write()
    section_truncate()
    section_mkdir_rmdir()
    section_unlink()
    section_rename()
    section_link()
    section_symlink()
    section_special_files()
    section_permissions()
    section_chmod_chown(me, my_gid)
    section_suid_on_write()
    section_sticky()
    section_setgid_dirs()
    section_umask()
    section_utimensat()
    section_ctime()
    section_dir_times()
    section_xattrs()
    section_fallocate()
    section_locks()
    section_names()
    section_tree()


def section_open():
    a = "home/a"
    fd = op("open.creat_excl", os.open, a, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    if ok(fd):
        os.close(fd)
    attrs("open.creat_excl.attrs", a)
    op("open.creat_excl_existing", open_close, a, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    op("open.creat_existing", open_close, a, os.O_WRONLY | os.O_CREAT, 0o600)
    attrs("open.creat_existing.attrs", a)
    op("open.missing", open_close, "home/missing", os.O_RDONLY)
    op("open.creat_missing_parent", open_close, "home/nodir/x", os.O_WRONLY | os.O_CREAT)
    op("open.through_file", open_close, "home/a/x", os.O_RDONLY)
    op("open.file_trailing_slash", open_close, "home/a/", os.O_RDONLY)
    op("open.creat_trailing_slash", open_close, "home/newf/", os.O_WRONLY | os.O_CREAT)
    op("open.dir_wronly", open_close, "home", os.O_WRONLY)
    op("open.dir_rdwr", open_close, "home", os.O_RDWR)
    op("open.dir_creat", open_close, "home", os.O_RDONLY | os.O_CREAT)
    op("open.dir_creat_excl", open_close, "home", os.O_RDONLY | os.O_CREAT | os.O_EXCL)
    op("open.o_directory_on_dir", open_close, "home", os.O_RDONLY | os.O_DIRECTORY)
    op("open.o_directory_on_file", open_close, a, os.O_RDONLY | os.O_DIRECTORY)
    op("open.creat_o_directory", open_close, "home/nf", os.O_RDONLY | os.O_CREAT | os.O_DIRECTORY)
    op("open.creat_mode_0", open_close, "home/zero", os.O_WRONLY | os.O_CREAT, 0)
    attrs("open.creat_mode_0.attrs", "home/zero")
    # The mode applies from the next open: the creating descriptor writes.
    op("open.zero_mode_reopen", open_close, "home/zero", os.O_WRONLY)
    # By design (see the test's exclusions): no O_TMPFILE.
    fd = op("open.o_tmpfile", os.open, "home", os.O_TMPFILE | os.O_WRONLY, 0o600)
    if ok(fd):
        os.close(fd)
    op("open.other_dir_creat", open_close, "other_dir/new", os.O_WRONLY | os.O_CREAT)
    op("open.other_file_rdonly", open_close, "other_file", os.O_RDONLY)
    op("open.other_file_wronly", open_close, "other_file", os.O_WRONLY)
    op("open.other_file_trunc", open_close, "other_trunc", os.O_RDONLY | os.O_TRUNC)
    attrs("open.other_file_trunc.attrs", "other_trunc")


def section_read_write():
    a = "home/rw"
    op("rw.write", write_at, a, b"hello world", os.O_WRONLY | os.O_CREAT, show=str)
    read("rw.read", a)

    def pread(path, n, off):
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.pread(fd, n, off)
        finally:
            os.close(fd)

    op("rw.pread", pread, a, 5, 6, show=repr)
    op("rw.pread_past_eof", pread, a, 5, 100, show=repr)

    def pwrite(path, data, off):
        fd = os.open(path, os.O_WRONLY)
        try:
            return os.pwrite(fd, data, off)
        finally:
            os.close(fd)

    op("rw.pwrite_past_eof", pwrite, a, b"X", 20, show=str)
    read("rw.read_with_hole", a)
    attrs("rw.attrs_with_hole", a)

    def write_on(path, flags):
        fd = os.open(path, flags)
        try:
            return os.write(fd, b"x")
        finally:
            os.close(fd)

    def read_on(path, flags):
        fd = os.open(path, flags)
        try:
            return os.read(fd, 10)
        finally:
            os.close(fd)

    op("rw.write_on_rdonly_fd", write_on, a, os.O_RDONLY)
    op("rw.read_on_wronly_fd", read_on, a, os.O_WRONLY)
    op("rw.read_on_dir_fd", read_on, "home", os.O_RDONLY)
    op("rw.o_trunc", open_close, a, os.O_WRONLY | os.O_TRUNC)
    attrs("rw.o_trunc.attrs", a)
    op("rw.write_abc", write_at, a, b"abc", show=str)
    op("rw.o_append", write_at, a, b"def", os.O_WRONLY | os.O_APPEND, show=str)

    def append_after_seek(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            return os.write(fd, b"ghi")
        finally:
            os.close(fd)

    op("rw.o_append_after_seek", append_after_seek, a, show=str)
    read("rw.o_append.read", a)

    # Permissions are checked at open: a descriptor keeps writing after chmod 0444.
    def write_after_fchmod(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.fchmod(fd, 0o444)
            return os.write(fd, b"still writable")
        finally:
            os.close(fd)

    op("rw.write_after_fchmod_0444", write_after_fchmod, "home/ro", show=str)
    read("rw.write_after_fchmod_0444.read", "home/ro")
    attrs("rw.write_after_fchmod_0444.attrs", "home/ro")
    op("rw.open_0444_for_writing", open_close, "home/ro", os.O_WRONLY)

    # An open file keeps working after its last name is gone.
    def unlinked_open_file(path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"before")
            os.unlink(path)
            os.write(fd, b" after")
            st = os.fstat(fd)
            return f"nlink={st.st_nlink} size={st.st_size} data={os.pread(fd, 100, 0)!r}"
        finally:
            os.close(fd)

    op("rw.unlinked_open_file", unlinked_open_file, "home/gone", show=str)
    op("rw.unlinked_open_file.gone", os.lstat, "home/gone", show=lambda st: "still there")


def section_truncate():
    t = "home/t"
    create(t, b"0123456789")
    op("truncate.shrink", os.truncate, t, 4)
    read("truncate.shrink.read", t)
    op("truncate.grow", os.truncate, t, 100)
    attrs("truncate.grow.attrs", t)
    read("truncate.grow.read", t)
    op("truncate.negative", os.truncate, t, -1)
    op("truncate.dir", os.truncate, "home", 0)
    op("truncate.missing", os.truncate, "home/missing", 0)
    op("truncate.through_file", os.truncate, "home/t/x", 0)

    def ftruncate(path, flags, size):
        fd = os.open(path, flags)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)

    op("truncate.ftruncate_rdonly_fd", ftruncate, t, os.O_RDONLY, 2)
    op("truncate.ftruncate", ftruncate, t, os.O_RDWR, 2)
    read("truncate.ftruncate.read", t)
    op("truncate.other_file", os.truncate, "other_trunc", 1)
    op("truncate.other_rw", os.truncate, "other_rw", 4)
    read("truncate.other_rw.read", "other_rw")
    # A truncate clears set-id bits as a write does (not for root: CAP_FSETID).
    s = "home/suid_trunc"
    create(s, b"0123456789")
    op("truncate.suid.chmod", os.chmod, s, 0o6755)
    op("truncate.suid", os.truncate, s, 3)
    attrs("truncate.suid.attrs", s)
    op("truncate.other_suid", os.truncate, "other_suid_trunc", 3)
    attrs("truncate.other_suid.attrs", "other_suid_trunc")


def section_mkdir_rmdir():
    d = "home/d"
    op("mkdir.new", os.mkdir, d, 0o777)
    attrs("mkdir.new.attrs", d)
    op("mkdir.existing_dir", os.mkdir, d)
    op("mkdir.existing_file", os.mkdir, "home/a")
    op("mkdir.missing_parent", os.mkdir, "home/nodir/x")
    op("mkdir.through_file", os.mkdir, "home/a/x")
    op("mkdir.trailing_slash", os.mkdir, "home/dslash/")
    attrs("mkdir.trailing_slash.attrs", "home/dslash")
    op("mkdir.sub", os.mkdir, d + "/sub")
    attrs("mkdir.sub.parent_attrs", d)
    op("mkdir.sticky_mode", os.mkdir, "home/dsticky", 0o1777)
    attrs("mkdir.sticky_mode.attrs", "home/dsticky")
    # mkdir keeps only the permission and sticky bits it is given.
    op("mkdir.all_mode_bits", os.mkdir, "home/dall", 0o7777)
    attrs("mkdir.all_mode_bits.attrs", "home/dall")
    op("mkdir.in_other_dir", os.mkdir, "other_dir/x")
    create(d + "/file")
    op("rmdir.not_empty", os.rmdir, d)
    op("rmdir.file", os.rmdir, d + "/file")
    op("rmdir.missing", os.rmdir, "home/missing")
    op("rmdir.dot", os.rmdir, d + "/sub/.")
    op("rmdir.dotdot", os.rmdir, d + "/sub/..")
    op("rmdir.sub", os.rmdir, d + "/sub")
    attrs("rmdir.sub.parent_attrs", d)
    op("rmdir.sub.gone", os.lstat, d + "/sub")
    op("rmdir.others_empty_dir_in_mine", os.rmdir, "home/otherdir2")
    op("rmdir.in_other_dir", os.rmdir, "other_dir_noexec")
    op("rmdir.trailing_slash", os.rmdir, "home/dslash/")


def section_unlink():
    u = "home/u"
    create(u, b"x")
    op("unlink.file", os.unlink, u)
    op("unlink.file.gone", os.lstat, u)
    op("unlink.missing", os.unlink, u)
    op("unlink.dir", os.unlink, "home/d")
    op("unlink.trailing_slash_on_file", os.unlink, "home/a/")
    op("unlink.in_other_dir", os.unlink, "other_dir/f")
    op("unlink.others_file_in_my_dir", os.unlink, "home/otherfile")


def section_rename():
    r = "home/r"
    os.mkdir(r)
    create(r + "/f1", b"one")
    create(r + "/f2", b"two")
    create(r + "/f3", b"three")
    os.mkdir(r + "/d1")
    create(r + "/d1/x", b"x")
    os.mkdir(r + "/d2")
    os.mkdir(r + "/d4")
    create(r + "/d4/y", b"y")
    op("rename.plain", os.rename, r + "/f1", r + "/g1")
    op("rename.plain.old_gone", os.lstat, r + "/f1")
    read("rename.plain.read", r + "/g1")
    op("rename.onto_file", os.rename, r + "/g1", r + "/f2")
    read("rename.onto_file.read", r + "/f2")
    attrs("rename.onto_file.attrs", r + "/f2")
    op("rename.file_onto_dir", os.rename, r + "/f2", r + "/d2")
    op("rename.dir_onto_file", os.rename, r + "/d2", r + "/f2")
    op("rename.dir_onto_empty_dir", os.rename, r + "/d1", r + "/d2")
    read("rename.dir_onto_empty_dir.read", r + "/d2/x")
    op("rename.dir_onto_empty_dir.old_gone", os.lstat, r + "/d1")
    op("rename.dir_onto_nonempty_dir", os.rename, r + "/d2", r + "/d4")
    os.mkdir(r + "/d2/sub")
    op("rename.dir_into_itself", os.rename, r + "/d2", r + "/d2/sub/deeper")
    op("rename.dir_onto_own_child", os.rename, r + "/d2", r + "/d2/sub")
    op("rename.child_onto_own_parent", os.rename, r + "/d2/sub", r + "/d2")
    op("rename.same_name", os.rename, r + "/d2", r + "/d2")
    op("rename.missing", os.rename, r + "/missing", r + "/z")
    op("rename.into_missing_dir", os.rename, r + "/f2", r + "/nodir/z")
    op("rename.through_file", os.rename, r + "/f2", r + "/f2/z")
    op("rename.dot", os.rename, r + "/d2/.", r + "/z")
    op("rename.onto_dot", os.rename, r + "/f2", r + "/d2/.")
    os.link(r + "/f2", r + "/f2link")
    # Two names of one inode: rename does nothing and succeeds.
    op("rename.onto_own_hard_link", os.rename, r + "/f2", r + "/f2link")
    attrs("rename.onto_own_hard_link.old", r + "/f2")
    attrs("rename.onto_own_hard_link.new", r + "/f2link")
    op("rename.name_too_long", os.rename, r + "/f2", r + "/" + "n" * 256)
    # renameat2
    op("rename.noreplace_existing", renameat2, r + "/f3", r + "/f2", RENAME_NOREPLACE)
    op("rename.noreplace_new", renameat2, r + "/f3", r + "/f5", RENAME_NOREPLACE)
    op("rename.noreplace_new.old_gone", os.lstat, r + "/f3")
    op("rename.exchange_files", renameat2, r + "/f5", r + "/f2", RENAME_EXCHANGE)
    read("rename.exchange_files.read_a", r + "/f5")
    read("rename.exchange_files.read_b", r + "/f2")
    op("rename.exchange_missing", renameat2, r + "/f5", r + "/missing", RENAME_EXCHANGE)
    op("rename.exchange_file_and_dir", renameat2, r + "/f5", r + "/d2", RENAME_EXCHANGE)
    attrs("rename.exchange_file_and_dir.a", r + "/f5")
    attrs("rename.exchange_file_and_dir.b", r + "/d2")
    op("rename.exchange_with_own_child", renameat2, r + "/f5", r + "/f5/sub", RENAME_EXCHANGE)
    op("rename.exchange_child_with_parent", renameat2, r + "/f5/sub", r + "/f5", RENAME_EXCHANGE)
    op("rename.both_flags", renameat2, r + "/f2", r + "/f6", RENAME_NOREPLACE | RENAME_EXCHANGE)
    op("rename.unknown_flag", renameat2, r + "/f2", r + "/f6", 1 << 8)
    # Across directories: both parents and the moved `..`.
    p1, p2 = r + "/p1", r + "/p2"
    os.mkdir(p1)
    os.mkdir(p2)
    create(p1 + "/file", b"moving")
    os.mkdir(p1 + "/sub")
    create(p1 + "/other", b"other")
    t1, t2, tf = times(p1), times(p2), times(p1 + "/file")
    op("rename.across_dirs_file", os.rename, p1 + "/file", p2 + "/file")
    moved("rename.across_dirs_file.from_times", p1, t1)
    moved("rename.across_dirs_file.to_times", p2, t2)
    moved("rename.across_dirs_file.file_times", p2 + "/file", tf)
    read("rename.across_dirs_file.read", p2 + "/file")
    op("rename.across_dirs_dir", os.rename, p1 + "/sub", p2 + "/sub")
    attrs("rename.across_dirs_dir.from", p1)
    attrs("rename.across_dirs_dir.to", p2)
    op(
        "rename.across_dirs_dir.dotdot",
        os.stat,
        p2 + "/sub/..",
        show=lambda st: "is the new parent" if st.st_ino == os.stat(p2).st_ino else "is not the new parent",
    )
    op("rename.exchange_across_dirs", renameat2, p2 + "/sub", p1 + "/other", RENAME_EXCHANGE)
    attrs("rename.exchange_across_dirs.p1", p1)
    attrs("rename.exchange_across_dirs.p2", p2)
    attrs("rename.exchange_across_dirs.moved_dir", p1 + "/sub" if os.path.lexists(p1 + "/sub") else p1 + "/other")
    # Permissions: names in others' directories; a directory of another
    # user moved to another parent needs write permission on it (its `..`).
    op("rename.in_other_dir", os.rename, "other_dir/f", "other_dir/g")
    op("rename.others_dir_same_parent", os.rename, "home/otherdir", "home/otherdir_renamed")
    op("rename.others_dir_new_parent", os.rename, "home/otherdir_renamed", r + "/otherdir")


def section_link():
    l, l2 = "home/l", "home/l2"
    create(l, b"data")
    tl, th = times(l), times("home")
    op("link.new", os.link, l, l2)
    attrs("link.new.attrs", l)
    op("link.new.same_inode", os.lstat, l2, show=lambda st: str(st.st_ino == os.lstat(l).st_ino))
    moved("link.new.file_times", l, tl)
    moved("link.new.dir_times", "home", th)
    op("link.write_through_other_name", write_at, l2, b"new data", os.O_WRONLY | os.O_TRUNC, show=str)
    read("link.write_through_other_name.read", l)
    op("link.onto_existing", os.link, l, l2)
    op("link.dir", os.link, "home/d", "home/dlink")
    op("link.missing", os.link, "home/missing", "home/l3")
    op("link.into_other_dir", os.link, l, "other_dir/l")
    op("link.through_file", os.link, l, "home/a/x")
    op("link.name_too_long", os.link, l, "home/" + "n" * 256)
    # fs.protected_hardlinks: a user may link only what it could write.
    op("link.others_readonly_file", os.link, "other_file", "home/of")
    op("link.others_rw_file", os.link, "other_rw", "home/orw")
    attrs("link.others_rw_file.attrs", "other_rw")
    os.symlink("l", "home/ls")
    op("link.symlink_itself", os.link, "home/ls", "home/ls2", follow_symlinks=False)
    attrs("link.symlink_itself.attrs", "home/ls2")
    op("link.through_symlink", os.link, "home/ls", "home/ls3", follow_symlinks=True)
    attrs("link.through_symlink.attrs", "home/ls3")
    os.mkfifo("home/lfifo")
    op("link.fifo", os.link, "home/lfifo", "home/lfifo2")
    attrs("link.fifo.attrs", "home/lfifo2")
    tl = times(l)
    op("link.unlink_one_name", os.unlink, l2)
    attrs("link.unlink_one_name.attrs", l)
    moved("link.unlink_one_name.times", l, tl)
    read("link.unlink_one_name.read", l)


def section_symlink():
    s = "home/s"
    op("symlink.new", os.symlink, "a", s)
    op("symlink.readlink", os.readlink, s, show=repr)
    attrs("symlink.lstat", s)
    attrs("symlink.stat", s, follow=True)
    op("symlink.dangling", os.symlink, "nowhere", "home/dangle")
    op("symlink.dangling.stat", os.stat, "home/dangle", show=lambda st: "exists")
    attrs("symlink.dangling.lstat", "home/dangle")
    op("symlink.onto_existing", os.symlink, "x", s)
    op("symlink.onto_dir", os.symlink, "x", "home/d")
    op("symlink.empty_target", os.symlink, "", "home/empty")
    long_ok, too_long = "t" * 4095, "t" * 4096
    op("symlink.target_4095", os.symlink, long_ok, "home/long")
    op("symlink.target_4095.readlink", os.readlink, "home/long", show=lambda t: f"{len(t)} bytes, same: {t == long_ok}")
    attrs("symlink.target_4095.lstat", "home/long")
    op("symlink.target_4096", os.symlink, too_long, "home/toolong")
    target = "/nonexistent/" + "x/" * 20 + "end"
    op("symlink.absolute_target", os.symlink, target, "home/abs")
    op("symlink.absolute_target.readlink", os.readlink, "home/abs", show=lambda t: str(t == target))
    op("symlink.dotdot_target", os.symlink, "../home/a", "home/up")
    attrs("symlink.dotdot_target.stat", "home/up", follow=True)
    op("symlink.loop_a", os.symlink, "loop2", "home/loop1")
    op("symlink.loop_b", os.symlink, "loop1", "home/loop2")
    op("symlink.loop.open", open_close, "home/loop1", os.O_RDONLY)
    op("symlink.loop.stat", os.stat, "home/loop1")
    op("symlink.self", os.symlink, "self", "home/self")
    op("symlink.self.open_creat", open_close, "home/self", os.O_WRONLY | os.O_CREAT)
    # 40 links are followed, the 41st is ELOOP.
    os.mkdir("home/chain")
    create("home/chain/end", b"end of the chain")
    for i in range(41):
        os.symlink("end" if i == 0 else f"c{i - 1}", f"home/chain/c{i}")
    read("symlink.chain_40", "home/chain/c39")
    op("symlink.chain_41", open_close, "home/chain/c40", os.O_RDONLY)
    op("symlink.o_nofollow", open_close, s, os.O_RDONLY | os.O_NOFOLLOW)
    op("symlink.o_nofollow_o_path", open_close, s, os.O_PATH | os.O_NOFOLLOW)
    os.mkdir("home/sdir")
    create("home/sdir/f", b"in sdir")
    os.symlink("sdir", "home/sdl")
    op("symlink.o_nofollow_on_a_middle_component", open_close, "home/sdl/f", os.O_RDONLY | os.O_NOFOLLOW)
    op("symlink.list_through", os.listdir, "home/sdl", show=lambda l: str(sorted(l)))
    op("symlink.o_directory_through", open_close, "home/sdl", os.O_RDONLY | os.O_DIRECTORY)
    op("symlink.o_directory_nofollow", open_close, "home/sdl", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    op("symlink.readlink_file", os.readlink, "home/a")
    op("symlink.readlink_missing", os.readlink, "home/missing")
    op("symlink.in_other_dir", os.symlink, "x", "other_dir/s")
    op("symlink.name_too_long", os.symlink, "x", "home/" + "n" * 256)
    # O_CREAT through a dangling symlink makes its target; O_EXCL refuses.
    os.symlink("created_via_link", "home/dangle2")
    op("symlink.creat_excl_through_dangling", open_close, "home/dangle2", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    op("symlink.creat_through_dangling", open_close, "home/dangle2", os.O_WRONLY | os.O_CREAT)
    attrs("symlink.creat_through_dangling.target", "home/created_via_link")
    op("symlink.trailing_slash_to_file", os.stat, "home/s/", show=lambda st: "exists")
    op("symlink.unlink_keeps_target", os.unlink, s)
    attrs("symlink.unlink_keeps_target.target", "home/a")
    # The link's own owner and times.
    os.symlink("a", "home/s2")
    op("symlink.lchown", os.lchown, "home/s2", os.getuid(), os.getgid())
    attrs("symlink.lchown.attrs", "home/s2")
    times_set = ((1_000_000_001, 11), (1_000_000_002, 22))
    before = os.stat("home/a").st_mtime_ns
    op("symlink.utimensat_nofollow", utimensat, "home/s2", times_set, nofollow=True)
    op("symlink.utimensat_nofollow.lstat", os.lstat, "home/s2", show=lambda st: f"mtime={st.st_mtime_ns}")
    op("symlink.utimensat_nofollow.target", os.stat, "home/a", show=lambda st: str(st.st_mtime_ns == before))


def section_special_files():
    op("special.mkfifo", os.mkfifo, "home/fifo", 0o666)
    attrs("special.mkfifo.attrs", "home/fifo")
    op("special.mkfifo_existing", os.mkfifo, "home/fifo")
    op("special.mkfifo_in_other_dir", os.mkfifo, "other_dir/fifo")
    op("special.fifo_open_writer_without_reader", open_close, "home/fifo", os.O_WRONLY | os.O_NONBLOCK)

    def through_fifo(path):
        r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            w = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            try:
                os.write(w, b"through the pipe")
            finally:
                os.close(w)
            return os.read(r, 100)
        finally:
            os.close(r)

    op("special.fifo_carries_data", through_fifo, "home/fifo", show=repr)
    op("special.mknod_fifo", os.mknod, "home/fifo2", stat.S_IFIFO | 0o640)
    attrs("special.mknod_fifo.attrs", "home/fifo2")
    op("special.socket", os.mknod, "home/sock", stat.S_IFSOCK | 0o644)
    attrs("special.socket.attrs", "home/sock")
    op("special.socket_open", open_close, "home/sock", os.O_RDONLY)
    op("special.chardev", os.mknod, "home/chr", stat.S_IFCHR | 0o644, os.makedev(1, 3))
    attrs("special.chardev.attrs", "home/chr")
    op("special.blockdev", os.mknod, "home/blk", stat.S_IFBLK | 0o600, os.makedev(7, 200))
    attrs("special.blockdev.attrs", "home/blk")
    op("special.chardev_big_numbers", os.mknod, "home/chr2", stat.S_IFCHR | 0o600, os.makedev(300, 70000))
    attrs("special.chardev_big_numbers.attrs", "home/chr2")
    op("special.mknod_regular", os.mknod, "home/reg", stat.S_IFREG | 0o640)
    attrs("special.mknod_regular.attrs", "home/reg")
    op("special.mknod_type_0", os.mknod, "home/reg0", 0o640)
    attrs("special.mknod_type_0.attrs", "home/reg0")
    op("special.mknod_dir", os.mknod, "home/dnod", stat.S_IFDIR | 0o755)
    op("special.mknod_bad_type", os.mknod, "home/bad", 0o170000 | 0o644)
    op("special.mknod_existing", os.mknod, "home/fifo", stat.S_IFIFO | 0o644)
    op("special.mknod_chardev_in_other_dir", os.mknod, "other_dir/chr", stat.S_IFCHR | 0o644, os.makedev(1, 3))
    op("special.unlink_fifo", os.unlink, "home/fifo2")
    op("special.unlink_socket", os.unlink, "home/sock")


def section_permissions():
    for mode, name in ((os.R_OK, "r"), (os.W_OK, "w"), (os.X_OK, "x")):
        emit(f"perm.access_other_file_{name}", str(os.access("other_file", mode)))
        emit(f"perm.access_other_grp_{name}", str(os.access("other_grp", mode)))
        emit(f"perm.access_other_dir_{name}", str(os.access("other_dir", mode)))
    op("perm.open_mode_000", open_close, "other_none", os.O_RDONLY)
    # The group class decides for a member, even when others may read.
    op("perm.open_group_denied", open_close, "other_grp", os.O_RDONLY)
    op("perm.list_dir_without_x", os.listdir, "other_dir_noexec", show=lambda l: str(sorted(l)))
    op("perm.stat_in_dir_without_x", os.stat, "other_dir_noexec/f", show=lambda st: "exists")
    op("perm.list_dir_without_r", os.listdir, "other_dir_nolist", show=lambda l: str(sorted(l)))
    op("perm.stat_in_dir_without_r", os.stat, "other_dir_nolist/f", show=lambda st: "exists")
    read("perm.read_in_dir_without_r", "other_dir_nolist/f")


def section_chmod_chown(me, my_gid):
    c = "home/c"
    create(c, b"c")
    tc = times(c)
    op("chmod.own", os.chmod, c, 0o600)
    attrs("chmod.own.attrs", c)
    moved("chmod.own.times", c, tc)
    op("chmod.own_suid", os.chmod, c, 0o4755)
    attrs("chmod.own_suid.attrs", c)
    op("chmod.own_sgid", os.chmod, c, 0o2755)
    attrs("chmod.own_sgid.attrs", c)
    op("chmod.own_sticky_file", os.chmod, c, 0o1755)
    attrs("chmod.own_sticky_file.attrs", c)
    # The owner outside the file's group: sgid is dropped silently (not for root).
    op("chmod.sgid_outside_group", os.chmod, "home/foreign_grp", 0o2755)
    attrs("chmod.sgid_outside_group.attrs", "home/foreign_grp")
    op("chmod.others_file", os.chmod, "other_chmod", 0o600)
    attrs("chmod.others_file.attrs", "other_chmod")
    op("chmod.missing", os.chmod, "home/missing", 0o600)
    op("chmod.through_symlink", os.chmod, "home/s2", 0o640)
    attrs("chmod.through_symlink.target", "home/a")
    op("chmod.fchmod", lambda: _fd_call(c, os.O_RDONLY, lambda fd: os.fchmod(fd, 0o640)))
    attrs("chmod.fchmod.attrs", c)
    # chown / chgrp
    tc = times(c)
    op("chown.to_other_user", os.chown, c, OTHER, -1)
    attrs("chown.to_other_user.attrs", c)
    moved("chown.to_other_user.times", c, tc)
    d = "home/c2"
    create(d, b"c2")
    op("chown.to_self", os.chown, d, me, -1)
    op("chgrp.to_primary_group", os.chown, d, -1, my_gid)
    op("chgrp.to_supplementary_group", os.chown, d, -1, SUPP)
    attrs("chgrp.to_supplementary_group.attrs", d)
    op("chgrp.to_foreign_group", os.chown, d, -1, FOREIGN)
    attrs("chgrp.to_foreign_group.attrs", d)
    op("chown.nothing", os.chown, d, -1, -1)
    op("chown.others_file_to_me", os.chown, "other_chown", me, -1)
    op("chgrp.others_file_to_my_group", os.chown, "other_chown", -1, my_gid)
    attrs("chown.others_file.attrs", "other_chown")
    op("chown.missing", os.chown, "home/missing", me, -1)
    op("chown.lchown_symlink", os.lchown, "home/s2", me, SUPP)
    attrs("chown.lchown_symlink.attrs", "home/s2")
    # Set-id bits go on chown (set-group-id only with group exec, or for
    # someone outside the group).
    for name, mode, uid, gid in (
        ("chown.clears_suid_sgid", 0o6755, -1, SUPP),
        ("chown.nothing_clears_suid_sgid", 0o6755, -1, -1),
        ("chown.same_ids_clears_suid_sgid", 0o6755, me, my_gid),
        ("chown.keeps_sgid_without_group_exec", 0o2644, -1, SUPP),
    ):
        f = "home/" + name.replace(".", "_")
        create(f, b"x")
        op(name + ".chmod", os.chmod, f, mode)
        op(name, os.chown, f, uid, gid)
        attrs(name + ".attrs", f)
    op("chown.sgid_no_group_exec_outside_group", os.chown, "home/foreign_grp_sgid", -1, my_gid)
    attrs("chown.sgid_no_group_exec_outside_group.attrs", "home/foreign_grp_sgid")
    os.mkdir("home/sgid_dir")
    op("chown.dir_keeps_set_id_bits.chmod", os.chmod, "home/sgid_dir", 0o6755)
    op("chown.dir_keeps_set_id_bits", os.chown, "home/sgid_dir", -1, SUPP)
    attrs("chown.dir_keeps_set_id_bits.attrs", "home/sgid_dir")


def _fd_call(path, flags, fn):
    fd = os.open(path, flags)
    try:
        return fn(fd)
    finally:
        os.close(fd)


def section_suid_on_write():
    # A write clears set-id bits unless the writer has CAP_FSETID (root).
    op("suid_write.others_file", write_at, "other_suid", b"x", show=str)
    attrs("suid_write.others_file.attrs", "other_suid")
    op("suid_write.others_sgid_no_group_exec", write_at, "other_sgid_noexec", b"x", show=str)
    attrs("suid_write.others_sgid_no_group_exec.attrs", "other_sgid_noexec")
    f = "home/suid_own"
    create(f, b"mine")
    os.chmod(f, 0o6755)
    op("suid_write.own_file", write_at, f, b"y", show=str)
    attrs("suid_write.own_file.attrs", f)


def section_sticky():
    op("sticky.create_mine", create, "sticky/mine")
    op("sticky.unlink_mine", os.unlink, "sticky/mine")
    create("sticky/mine2")
    op("sticky.rename_mine", os.rename, "sticky/mine2", "sticky/mine3")
    op("sticky.rename_theirs", os.rename, "sticky/theirs", "sticky/t2")
    op("sticky.rename_mine_onto_theirs", os.rename, "sticky/mine3", "sticky/theirs")
    op("sticky.exchange_mine_with_theirs", renameat2, "sticky/mine3", "sticky/theirs", RENAME_EXCHANGE)
    op("sticky.move_theirs_out", os.rename, "sticky/theirs", "home/theirs")
    op("sticky.write_theirs", write_at, "sticky/theirs", b"written", show=str)
    op("sticky.rmdir_theirs", os.rmdir, "sticky/theirdir")
    op("sticky.unlink_a_third_users", os.unlink, "sticky/fourth")
    op("sticky.setxattr_on_others_sticky_dir", os.setxattr, "sticky", "user.a", b"1")
    op("sticky.unlink_theirs", os.unlink, "sticky/theirs")
    op("sticky.list", os.listdir, "sticky", show=lambda l: str(sorted(l)))
    # The owner of a sticky directory removes anyone's entries.
    op("sticky.dir_owner_unlinks_theirs", os.unlink, "sticky_mine/x")


def section_setgid_dirs():
    g = "sgid"
    op("sgid.create", create, g + "/f")
    attrs("sgid.create.attrs", g + "/f")
    op("sgid.mkdir", os.mkdir, g + "/d")
    attrs("sgid.mkdir.attrs", g + "/d")
    op("sgid.mkdir_in_inherited", os.mkdir, g + "/d/d2", 0o700)
    attrs("sgid.mkdir_in_inherited.attrs", g + "/d/d2")
    op("sgid.create_in_inherited", create, g + "/d/f2")
    attrs("sgid.create_in_inherited.attrs", g + "/d/f2")
    op("sgid.mkfifo", os.mkfifo, g + "/p")
    attrs("sgid.mkfifo.attrs", g + "/p")
    op("sgid.symlink", os.symlink, "f", g + "/s")
    attrs("sgid.symlink.attrs", g + "/s")
    op("sgid.socket", os.mknod, g + "/sock", stat.S_IFSOCK | 0o600)
    attrs("sgid.socket.attrs", g + "/sock")
    op("sgid.create_with_sgid_member", create, g + "/f2", b"", 0o2755)
    attrs("sgid.create_with_sgid_member.attrs", g + "/f2")
    # Someone outside the directory's group: the new file keeps the group
    # but not the set-group-id bit it asked for (root keeps it).
    op("sgid.create_with_sgid_outsider", create, "sgid_foreign/f", b"", 0o2755)
    attrs("sgid.create_with_sgid_outsider.attrs", "sgid_foreign/f")
    op("sgid.mkdir_outsider", os.mkdir, "sgid_foreign/d", 0o755)
    attrs("sgid.mkdir_outsider.attrs", "sgid_foreign/d")
    # Moved or linked in: the group stays what it was.
    create("home/moving", b"m")
    op("sgid.rename_in", os.rename, "home/moving", g + "/moved")
    attrs("sgid.rename_in.attrs", g + "/moved")
    create("home/linking", b"l")
    op("sgid.link_in", os.link, "home/linking", g + "/linked")
    attrs("sgid.link_in.attrs", g + "/linked")


def section_umask():
    old = os.umask(0o077)
    op("umask.077.create", create, "home/um_f")
    attrs("umask.077.create.attrs", "home/um_f")
    op("umask.077.mkdir", os.mkdir, "home/um_d", 0o777)
    attrs("umask.077.mkdir.attrs", "home/um_d")
    op("umask.077.mkfifo", os.mkfifo, "home/um_p", 0o666)
    attrs("umask.077.mkfifo.attrs", "home/um_p")
    op("umask.077.socket", os.mknod, "home/um_s", stat.S_IFSOCK | 0o666)
    attrs("umask.077.socket.attrs", "home/um_s")
    op("umask.077.symlink", os.symlink, "um_f", "home/um_l")
    attrs("umask.077.symlink.attrs", "home/um_l")
    os.umask(0)
    op("umask.0.create", create, "home/um0_f")
    attrs("umask.0.create.attrs", "home/um0_f")
    op("umask.0.mkdir", os.mkdir, "home/um0_d", 0o777)
    attrs("umask.0.mkdir.attrs", "home/um0_d")
    os.umask(0o027)
    op("umask.027.create_excl", open_close, "home/um27", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o777)
    attrs("umask.027.create_excl.attrs", "home/um27")
    # chmod ignores the umask.
    op("umask.027.chmod", os.chmod, "home/um27", 0o777)
    attrs("umask.027.chmod.attrs", "home/um27")
    os.umask(old)


def section_utimensat():
    u = "home/ut"
    create(u, b"t")
    explicit = ((1234567890, 123456789), (1234567891, 987654321))
    tu = times(u)
    op("utimes.explicit_ns", utimensat, u, explicit)
    op("utimes.explicit_ns.times", os.lstat, u, show=exact_times)
    moved("utimes.explicit_ns.ctime", u, tu, mtime=False)
    op("utimes.omit_now", utimensat, u, ((0, UTIME_OMIT), (0, UTIME_NOW)))
    op(
        "utimes.omit_now.times",
        os.lstat,
        u,
        show=lambda st: f"atime={st.st_atime_ns} mtime_recent={recent(st.st_mtime_ns)}",
    )
    op("utimes.explicit_again", utimensat, u, explicit)
    op("utimes.now_omit", utimensat, u, ((0, UTIME_NOW), (0, UTIME_OMIT)))
    op(
        "utimes.now_omit.times",
        os.lstat,
        u,
        show=lambda st: f"atime_recent={recent(st.st_atime_ns)} mtime={st.st_mtime_ns}",
    )
    op("utimes.explicit_third", utimensat, u, explicit)
    tu = times(u)
    op("utimes.omit_omit", utimensat, u, ((0, UTIME_OMIT), (0, UTIME_OMIT)))
    op("utimes.omit_omit.times", os.lstat, u, show=exact_times)
    moved("utimes.omit_omit.ctime", u, tu)
    op("utimes.null", utimensat, u, None)
    op(
        "utimes.null.times",
        os.lstat,
        u,
        show=lambda st: f"atime_recent={recent(st.st_atime_ns)} mtime_recent={recent(st.st_mtime_ns)}",
    )
    op("utimes.before_1970", utimensat, u, ((-1, 500000000), (-1234567890, 1)))
    op("utimes.before_1970.times", os.lstat, u, show=exact_times)
    op("utimes.after_2106", utimensat, u, ((2**32 + 5, 1), (2**32 + 6, 999999999)))
    op("utimes.after_2106.times", os.lstat, u, show=exact_times)
    op("utimes.bad_nsec", utimensat, u, ((0, 1_000_000_000), (0, 0)))
    op("utimes.missing", utimensat, "home/missing", None)
    # Another user's file, writable by all: only "now" for both, or nothing.
    w = "other_rw_times"
    op("utimes.other_writable.null", utimensat, w, None)
    op("utimes.other_writable.now_now", utimensat, w, ((0, UTIME_NOW), (0, UTIME_NOW)))
    op("utimes.other_writable.omit_omit", utimensat, w, ((0, UTIME_OMIT), (0, UTIME_OMIT)))
    op("utimes.other_writable.now_omit", utimensat, w, ((0, UTIME_NOW), (0, UTIME_OMIT)))
    op("utimes.other_writable.explicit", utimensat, w, explicit)
    op("utimes.other_writable.python_utime", os.utime, w, ns=(5 * 10**18, 6 * 10**18))
    # Another user's file, read-only for the others.
    r = "other_file"
    op("utimes.other_readonly.null", utimensat, r, None)
    op("utimes.other_readonly.explicit", utimensat, r, explicit)
    op("utimes.other_readonly.omit_omit", utimensat, r, ((0, UTIME_OMIT), (0, UTIME_OMIT)))


def section_ctime():
    f = "home/ct"
    create(f, b"0123456789")

    def step(name, fn, *args, before=f, after=f):
        t = times(before)
        op(f"ctime.{name}", fn, *args)
        moved(f"ctime.{name}.times", after, t)

    step("read", content, f)
    step("write", write_at, f, b"ab")
    step("truncate", os.truncate, f, 5)
    step("truncate_same_size", os.truncate, f, 5)
    step("chmod", os.chmod, f, 0o640)
    step("chmod_same_mode", os.chmod, f, 0o640)
    step("chown_same_ids", os.chown, f, os.getuid(), os.getgid())
    step("chown_nothing", os.chown, f, -1, -1)
    step("link", os.link, f, "home/ct2")
    step("unlink_other_name", os.unlink, "home/ct2")
    step("rename", os.rename, f, "home/ct3", after="home/ct3")
    step("rename_back", os.rename, "home/ct3", f, before="home/ct3")
    step("setxattr", os.setxattr, f, "user.c", b"1")
    step("removexattr", os.removexattr, f, "user.c")
    step("removexattr_missing", os.removexattr, f, "user.c")
    step("utimes", utimensat, f, None)
    step("fallocate", lambda: _fd_call(f, os.O_RDWR, lambda fd: fallocate(fd, 0, 0, 100)))
    step("open_o_trunc_empty", open_close, "home/ct", os.O_WRONLY | os.O_TRUNC)
    step("open_o_trunc_again", open_close, "home/ct", os.O_WRONLY | os.O_TRUNC)


def section_dir_times():
    d = "home/dt"
    os.mkdir(d)

    def step(name, fn, *args, **kw):
        t = times(d)
        op(f"dirtimes.{name}", fn, *args, **kw)
        moved(f"dirtimes.{name}.times", d, t)
        attrs(f"dirtimes.{name}.attrs", d)

    step("create", create, d + "/f")
    step("write_child", write_at, d + "/f", b"data")
    step("chmod_child", os.chmod, d + "/f", 0o600)
    step("setxattr_child", os.setxattr, d + "/f", "user.a", b"1")
    step("mkdir", os.mkdir, d + "/sub")
    step("mkfifo", os.mkfifo, d + "/p")
    step("symlink", os.symlink, "f", d + "/s")
    step("link", os.link, d + "/f", d + "/f2")
    step("rename_within", os.rename, d + "/f2", d + "/f3")
    step("rename_out", os.rename, d + "/f3", "home/dt_out")
    step("rename_in", os.rename, "home/dt_out", d + "/f4")
    step("unlink", os.unlink, d + "/f4")
    step("rmdir", os.rmdir, d + "/sub")
    step("failed_create", os.mkdir, d + "/f")
    step("lookup_missing", os.lstat, d + "/missing")
    step("list", os.listdir, d, show=lambda l: str(sorted(l)))
    step("chmod_itself", os.chmod, d, 0o750)


def section_xattrs():
    x = "home/x"
    create(x, b"x")
    op("xattr.set", os.setxattr, x, "user.a", b"v1")
    op("xattr.get", os.getxattr, x, "user.a", show=repr)
    op("xattr.create_existing", os.setxattr, x, "user.a", b"v", XATTR_CREATE)
    op("xattr.replace_missing", os.setxattr, x, "user.b", b"v", XATTR_REPLACE)
    op("xattr.replace_existing", os.setxattr, x, "user.a", b"v2", XATTR_REPLACE)
    op("xattr.replace_existing.get", os.getxattr, x, "user.a", show=repr)
    op("xattr.create_new", os.setxattr, x, "user.c", b"", XATTR_CREATE)
    op("xattr.create_new.get_empty", os.getxattr, x, "user.c", show=repr)
    op("xattr.both_flags_existing", setxattr_raw, x, "user.a", b"v3", XATTR_CREATE | XATTR_REPLACE)
    op("xattr.both_flags_missing", setxattr_raw, x, "user.zz", b"v3", XATTR_CREATE | XATTR_REPLACE)
    op("xattr.unknown_flag", setxattr_raw, x, "user.a", b"v3", 4)
    op("xattr.get_missing", os.getxattr, x, "user.missing")
    op("xattr.remove_missing", os.removexattr, x, "user.missing")
    op("xattr.list", os.listxattr, x, show=lambda l: str(sorted(l)))
    op("xattr.get_size_probe", getxattr_sized, x, "user.a", 0, show=str)
    op("xattr.get_small_buffer", getxattr_sized, x, "user.a", 1)
    op("xattr.get_exact_buffer", getxattr_sized, x, "user.a", 2, show=str)
    op("xattr.list_size_probe", listxattr_sized, x, 0, show=str)
    op("xattr.list_small_buffer", listxattr_sized, x, 1)
    op("xattr.remove", os.removexattr, x, "user.c")
    op("xattr.remove.get", os.getxattr, x, "user.c")
    name255 = "user." + "n" * 250
    op("xattr.name_255", os.setxattr, x, name255, b"long name")
    op("xattr.name_255.get", os.getxattr, x, name255, show=repr)
    op("xattr.name_256", os.setxattr, x, name255 + "n", b"v")
    op("xattr.name_256.get", os.getxattr, x, name255 + "n")
    op("xattr.remove_name_255", os.removexattr, x, name255)
    op("xattr.empty_suffix", os.setxattr, x, "user.", b"v")
    op("xattr.empty_suffix.get", os.getxattr, x, "user.")
    op("xattr.empty_name", os.setxattr, x, "", b"v")
    op("xattr.unknown_namespace", os.setxattr, x, "foo.bar", b"v")
    op("xattr.unknown_namespace.get", os.getxattr, x, "foo.bar")
    op("xattr.system_unknown", os.setxattr, x, "system.foo", b"v")
    op("xattr.value_over_64k", os.setxattr, x, "user.big", b"v" * 65537)
    op("xattr.value_3000", os.setxattr, x, "user.v3000", b"w" * 3000)
    op("xattr.value_3000.get", os.getxattr, x, "user.v3000", show=lambda v: f"{len(v)} bytes")
    op("xattr.binary_value", os.setxattr, x, "user.bin", bytes(range(256)) * 2)
    op("xattr.binary_value.get", os.getxattr, x, "user.bin", show=lambda v: str(v == bytes(range(256)) * 2))
    op("xattr.remove_big_ones", lambda: [os.removexattr(x, n) for n in ("user.v3000", "user.bin")])
    # By design (see the test's exclusions): the total size per inode.
    op("xattr.value_64k", os.setxattr, x, "user.v64k", b"v" * 65536)
    try:
        os.removexattr(x, "user.v64k")
    except OSError:
        pass
    # By design: POSIX ACLs.
    op("xattr.posix_acl_get", os.getxattr, x, "system.posix_acl_access")
    os.mkdir("home/xd")
    op("xattr.on_dir", os.setxattr, "home/xd", "user.d", b"dir")
    op("xattr.on_dir.get", os.getxattr, "home/xd", "user.d", show=repr)
    os.symlink("x", "home/xs")
    op("xattr.user_on_symlink", os.setxattr, "home/xs", "user.a", b"1", follow_symlinks=False)
    op("xattr.user_on_symlink.get", os.getxattr, "home/xs", "user.a", follow_symlinks=False)
    op("xattr.through_symlink.get", os.getxattr, "home/xs", "user.a", show=repr)
    op("xattr.list_symlink", os.listxattr, "home/xs", follow_symlinks=False, show=lambda l: str(sorted(l)))
    os.mkfifo("home/xp")
    op("xattr.user_on_fifo", os.setxattr, "home/xp", "user.a", b"1")
    # trusted.* is root's; others neither set, see nor list them.
    op("xattr.trusted_set", os.setxattr, x, "trusted.t", b"t")
    op("xattr.trusted_get", os.getxattr, "other_rw", "trusted.t", show=repr)
    op("xattr.trusted_list", os.listxattr, "other_rw", show=lambda l: str(sorted(l)))
    op("xattr.trusted_remove", os.removexattr, "other_rw", "trusted.t")
    # security.* needs CAP_SYS_ADMIN to write (no LSM), anyone may read.
    op("xattr.security_set", os.setxattr, x, "security.s", b"s")
    op("xattr.security_get_others", os.getxattr, "other_file", "security.s", show=repr)
    op("xattr.list_after_all", os.listxattr, x, show=lambda l: str(sorted(l)))
    # Another user's files: reading needs read permission, writing write permission.
    op("xattr.others_get", os.getxattr, "other_file", "user.x", show=repr)
    op("xattr.others_set", os.setxattr, "other_file", "user.x", b"2")
    op("xattr.others_remove", os.removexattr, "other_file", "user.x")
    op("xattr.others_writable_set", os.setxattr, "other_rw", "user.y", b"2")
    op("xattr.others_writable_remove", os.removexattr, "other_rw", "user.x")
    op("xattr.others_unreadable_get", os.getxattr, "other_none", "user.x")
    op("xattr.others_unreadable_list", os.listxattr, "other_none", show=lambda l: str(sorted(l)))
    op("xattr.missing_file", os.getxattr, "home/missing", "user.a")


def section_fallocate():
    f = "home/fa"
    create(f, b"abc")

    def fa(flags, mode, off, length):
        return _fd_call(f, flags, lambda fd: fallocate(fd, mode, off, length))

    op("fallocate.mode_0", fa, os.O_RDWR, 0, 0, 10000)
    attrs("fallocate.mode_0.attrs", f)
    op("fallocate.mode_0_past_eof", fa, os.O_RDWR, 0, 20000, 100)
    attrs("fallocate.mode_0_past_eof.attrs", f)
    op("fallocate.mode_0_inside", fa, os.O_RDWR, 0, 0, 100)
    attrs("fallocate.mode_0_inside.attrs", f)
    op("fallocate.wronly_fd", fa, os.O_WRONLY, 0, 0, 20200)
    attrs("fallocate.wronly_fd.attrs", f)
    op("fallocate.keeps_data", content, f, show=lambda d: f"{d[:5]!r} zeros after: {d[3:] == bytes(len(d) - 3)}")
    op("fallocate.posix_fallocate", lambda: _fd_call(f, os.O_RDWR, lambda fd: os.posix_fallocate(fd, 0, 30000)))
    attrs("fallocate.posix_fallocate.attrs", f)
    op("fallocate.rdonly_fd", fa, os.O_RDONLY, 0, 0, 40000)
    op("fallocate.zero_length", fa, os.O_RDWR, 0, 0, 0)
    op("fallocate.negative_offset", fa, os.O_RDWR, 0, -1, 10)
    op("fallocate.others_writable", lambda: _fd_call("other_rw", os.O_WRONLY, lambda fd: fallocate(fd, 0, 0, 50)))
    attrs("fallocate.others_writable.attrs", "other_rw")
    # By design: only mode 0 (see the test's exclusions).
    op("fallocate.keep_size", fa, os.O_RDWR, FALLOC_FL_KEEP_SIZE, 0, 50000)
    op("fallocate.punch_hole", fa, os.O_RDWR, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 10)
    attrs("fallocate.after_refusals.attrs", f)


def section_locks():
    f = "home/lock"
    create(f, b"locked")
    fd1 = os.open(f, os.O_RDWR)
    fd2 = os.open(f, os.O_RDWR)
    try:
        # flock locks belong to the open file: two opens conflict.
        op("locks.flock_ex", fcntl.flock, fd1, fcntl.LOCK_EX | fcntl.LOCK_NB)
        op("locks.flock_ex_other_open", fcntl.flock, fd2, fcntl.LOCK_EX | fcntl.LOCK_NB)
        op("locks.flock_sh_other_open", fcntl.flock, fd2, fcntl.LOCK_SH | fcntl.LOCK_NB)
        op("locks.flock_unlock", fcntl.flock, fd1, fcntl.LOCK_UN)
        op("locks.flock_ex_after_unlock", fcntl.flock, fd2, fcntl.LOCK_EX | fcntl.LOCK_NB)
        op("locks.flock_unlock_other", fcntl.flock, fd2, fcntl.LOCK_UN)
        # fcntl locks belong to the process: another process conflicts.
        op("locks.fcntl_write_lock", fcntl.lockf, fd1, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)
        emit("locks.fcntl_other_process_same_range", in_child(lambda: fcntl.lockf(fd2, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 5)))
        emit("locks.fcntl_other_process_other_range", in_child(lambda: fcntl.lockf(fd2, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 20)))
        op("locks.fcntl_unlock", fcntl.lockf, fd1, fcntl.LOCK_UN, 10, 0)
        emit("locks.fcntl_other_process_after_unlock", in_child(lambda: fcntl.lockf(fd2, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 5)))
        rd = os.open(f, os.O_RDONLY)
        try:
            op("locks.fcntl_write_lock_on_read_only_fd", fcntl.lockf, rd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(rd)
    finally:
        os.close(fd1)
        os.close(fd2)


def in_child(fn):
    """fn() in a child process: `ok` or the errno it failed with."""
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn()
        except OSError as e:
            code = e.errno
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return "ok" if code == 0 else errname(OSError(code, os.strerror(code)))


def section_names():
    n255, n256 = "n" * 255, "n" * 256
    op("names.create_255", create, "home/" + n255)
    attrs("names.create_255.attrs", "home/" + n255)
    op("names.create_256", create, "home/" + n256)
    op("names.stat_256", os.lstat, "home/" + n256)
    op("names.mkdir_256", os.mkdir, "home/" + n256)
    op("names.mkfifo_256", os.mkfifo, "home/" + n256)
    op("names.unlink_256", os.unlink, "home/" + n256)
    op("names.rmdir_256", os.rmdir, "home/" + n256)
    op("names.path_over_path_max", os.lstat, "home/" + "a/" * 2100)
    op("names.utf8_254_bytes", create, "home/" + "é" * 127)
    op("names.utf8_256_bytes", create, "home/" + "é" * 128)
    op("names.list", os.listdir, "home", show=lambda l: str(sorted(len(x) for x in l if len(x) > 100)))
    op("names.odd_bytes", create, "home/sp ace\ttab\nnewline*?[")
    attrs("names.odd_bytes.attrs", "home/sp ace\ttab\nnewline*?[")
    # By design (see the test's exclusions): names and targets are UTF-8.
    # What ext4 made is removed again, so the tree below is the same.
    op("names.not_utf8", create, b"home/caf\xe9")
    op("names.symlink_target_not_utf8", os.symlink, b"caf\xe9", b"home/to_cafe")
    for leftover in (b"home/caf\xe9", b"home/to_cafe"):
        try:
            os.unlink(leftover)
        except OSError:
            pass


def section_tree():
    """Every entry left, with its attributes: what all the calls above made."""
    entries = []
    for root, dirs, files in os.walk(".", onerror=lambda e: None):
        for n in dirs + files:
            entries.append(os.path.join(root, n))
    for path in sorted(entries):
        try:
            st = os.lstat(path)
        except OSError as e:
            emit(f"tree {path!r}", errname(e))
            continue
        extra = ""
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(path)
            extra = f" -> {target[:40]!r}" + ("..." if len(target) > 40 else "")
        emit(f"tree {path[2:]!r}", attrs_of(st) + extra)


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "setup":
        setup(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) == 3 and sys.argv[1] == "run":
        run(sys.argv[2])
    else:
        sys.exit(f"usage: {sys.argv[0]} setup DIR UID GID | run DIR")


if __name__ == "__main__":
    main()
