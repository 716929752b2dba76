#!/usr/bin/env python3
"""Times namespace operations one at a time, from one process.

    nsops.py floor LOCAL_DIR COUNT
        The floor for one durable write: pwrite of 128 bytes into a
        preallocated file, then fdatasync. Prints "floor MEDIAN_MS P99_MS".
    nsops.py ops DIR COUNT
        Each operation COUNT times in DIR (which should be empty): create an
        empty file (open O_CREAT + close), chmod, utime, rename, link,
        symlink, unlink, mkdir, rmdir, and a 4 KiB write + close. Prints
        "OP MEDIAN_MS P99_MS" per operation.

Used by scripts/bench.sh (make bench); the same script runs against a local
directory and the mount, so the figures compare like with like.
"""

import os
import sys
import time


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))]


def report(name, samples):
    ms = [x / 1e6 for x in samples]
    print(f"{name} {pct(ms, 0.5):.3f} {pct(ms, 0.99):.3f}")


def timed(fn, args):
    out = []
    for a in args:
        t0 = time.perf_counter_ns()
        fn(a)
        out.append(time.perf_counter_ns() - t0)
    return out


def floor(d, n):
    path = os.path.join(d, "floor.bin")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.posix_fallocate(fd, 0, 128 * n)
        os.fsync(fd)
        block = b"x" * 128

        def one(i):
            os.pwrite(fd, block, 128 * i)
            os.fdatasync(fd)

        report("floor", timed(one, range(n)))
    finally:
        os.close(fd)
        os.unlink(path)


def ops(d, n):
    p = lambda kind, i: os.path.join(d, f"{kind}{i}")
    idx = range(n)

    def create(i):
        os.close(os.open(p("f", i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))

    report("create", timed(create, idx))
    report("chmod", timed(lambda i: os.chmod(p("f", i), 0o600), idx))
    report("utime", timed(lambda i: os.utime(p("f", i), ns=(1_000_000_000 * i, 1_000_000_000 * i)), idx))
    report("rename", timed(lambda i: os.rename(p("f", i), p("g", i)), idx))
    report("link", timed(lambda i: os.link(p("g", i), p("h", i)), idx))
    report("symlink", timed(lambda i: os.symlink(f"g{i}", p("s", i)), idx))
    report("unlink", timed(lambda i: os.unlink(p("h", i)), idx))
    report("mkdir", timed(lambda i: os.mkdir(p("d", i)), idx))
    report("rmdir", timed(lambda i: os.rmdir(p("d", i)), idx))
    block = b"y" * 4096

    def write4k(i):
        fd = os.open(p("w", i), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, block)
        os.close(fd)

    report("write4k", timed(write4k, idx))
    for kind in ("g", "s", "w"):
        for i in idx:
            os.unlink(p(kind, i))


def rsync_pattern(d, n):
    """What rsync does per file: write a temporary file and close it, chmod
    it, set its times, rename it. Prints files per second."""
    block = b"r" * 4096
    started = time.perf_counter()
    for i in range(n):
        tmp, final = os.path.join(d, f".f{i}.tmp"), os.path.join(d, f"f{i}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, block)
        os.close(fd)
        os.chmod(tmp, 0o644)
        os.utime(tmp, ns=(1_000_000_000 * i, 1_000_000_000 * i))
        os.rename(tmp, final)
    print(f"{n / (time.perf_counter() - started):.0f}")


def writers(d, n, count=20):
    """COUNT threads at once, each writing N files of 4 KiB (each closed
    before the next) in a directory of its own. Prints files per second."""
    import threading
    block = b"w" * 4096

    def one(w):
        sub = os.path.join(d, f"w{w}")
        os.makedirs(sub, exist_ok=True)
        for i in range(n):
            fd = os.open(os.path.join(sub, f"f{i}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, block)
            os.close(fd)

    threads = [threading.Thread(target=one, args=(w,)) for w in range(count)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"{count * n / (time.perf_counter() - started):.0f}")


def main():
    modes = {"floor": floor, "ops": ops, "rsync": rsync_pattern, "writers": writers}
    if len(sys.argv) != 4 or sys.argv[1] not in modes:
        sys.exit("usage: nsops.py floor|ops|rsync|writers DIR COUNT")
    mode, d, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if n < 1:
        sys.exit("nsops.py: COUNT must be at least 1")
    modes[mode](d, n)


if __name__ == "__main__":
    main()
