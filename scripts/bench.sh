#!/bin/bash
# make bench: SCS figures against baselines measured in the same run, on the
# same disk (BENCH_DIR, default target/bench). Results go to
# bench-results/latest.md (and a dated copy). Needs release binaries (make
# build); cold reads need root (to drop the page cache) and the mount needs
# FUSE. Every process started here is stopped by pid on exit, and the data
# removed (BENCH_KEEP=1 keeps it).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/target/release"
BENCH_DIR=${BENCH_DIR:-$here/target/bench}
SIZE_MB=${SIZE_MB:-1024}
MOUNT_MB=${MOUNT_MB:-256}
SMALL_FILES=${SMALL_FILES:-2000}
MOUNT_FILES=${MOUNT_FILES:-500}
MV_FILES=${MV_FILES:-10000}
FAILOVERS=${FAILOVERS:-20}
NSOPS=${NSOPS:-300}
SCALE_FILES=${SCALE_FILES:-20000}
WRITERS=${WRITERS:-20}
WRITER_FILES=${WRITER_FILES:-100}
out_dir="$here/bench-results"
mkdir -p "$out_dir"
rm -rf "$BENCH_DIR"; mkdir -p "$BENCH_DIR"
# The source file, three copies of it on two clusters, and the rebalancer's
# disks (about 12 GB by default): refuse at once rather than fill the disk
# half-way through.
need_mb=$((SIZE_MB * 8 + ${REB_DISK_MB:-3072} + 1024))
free_mb=$(df -Pm "$BENCH_DIR" | awk 'NR == 2 {print $4}')
if [ "$free_mb" -lt "$need_mb" ]; then
    echo "bench: needs about $((need_mb / 1024 + 1)) GB free in $BENCH_DIR, only $((free_mb / 1024)) GB there (BENCH_DIR= elsewhere, or SIZE_MB= smaller)" >&2
    rmdir "$BENCH_DIR" 2>/dev/null || true
    exit 1
fi
key="$BENCH_DIR/cluster.key"
(umask 077 && head -c 32 /dev/urandom > "$key")
declare -A pids mports
mount_pid=""
mnt="$BENCH_DIR/mnt"

new_group() { group="239.255.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 1)):$((RANDOM % 20000 + 30000))"; }
scs() { "$bin/scs" --group "$group" --secret-file "$key" "$@"; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start_node() {  # start_node ID DATA_SUFFIX
    local i=$1
    mports[$i]=$(free_port)
    RUST_LOG=warn "$bin/scs-node" --id "$i" --cluster-size 3 --data-dir "$BENCH_DIR/$2-node-$i" \
        --secret-file "$key" --group "$group" --listen 127.0.0.1:0 --metrics-listen "127.0.0.1:${mports[$i]}" \
        >>"$BENCH_DIR/$2-node-$i.log" 2>&1 &
    pids[$i]=$!
}
scrape() {  # scrape DIR: every node's /metrics into DIR/node-N.prom
    mkdir -p "$1"
    for i in "${!mports[@]}"; do
        python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
            "http://127.0.0.1:${mports[$i]}/metrics" > "$1/node-$i.prom" 2>/dev/null || true
    done
}
stop_cluster() {
    for i in "${!pids[@]}"; do kill "${pids[$i]}" 2>/dev/null || true; done
    for i in "${!pids[@]}"; do wait "${pids[$i]}" 2>/dev/null || true; done
    pids=()
}
unmount() {
    if [ -n "$mount_pid" ]; then
        fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -u -z "$mnt" 2>/dev/null || true
        kill "$mount_pid" 2>/dev/null || true
        wait "$mount_pid" 2>/dev/null || true
        mount_pid=""
    fi
}
cleanup() {  # the data (gigabytes) goes; after a failure the logs stay
    local rc=$?
    unmount
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "${BENCH_KEEP:-}" = 1 ] || mountpoint -q "$mnt"; then return; fi
    if [ "$rc" = 0 ]; then
        rm -rf "$BENCH_DIR"
    else
        find "$BENCH_DIR" -mindepth 1 -maxdepth 1 ! -name '*.log' -exec rm -rf {} +
        echo "bench: failed; the logs are in $BENCH_DIR" >&2
    fi
}
trap cleanup EXIT

wait_quorum() {  # until a leader with quorum answers, at most 30 s
    local n=0
    until scs status --json 2>/dev/null | grep -q '"quorum":true'; do
        n=$((n + 1)); [ $n -lt 300 ] || { echo "bench: no leader after 30 s" >&2; exit 1; }
        sleep 0.1
    done
}
leader() { scs status --json | sed -n 's/.*"leader":\([0-9]*\).*/\1/p'; }
now() { date +%s.%N; }
rate() { echo "scale=1; $1 / ($3 - $2)" | bc; }   # MB / seconds
ratio() { echo "scale=2; $1 / $2" | bc | sed 's/^\./0./'; }
secs() { echo "scale=3; $2 - $1" | bc | sed 's/^\./0./'; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null && echo cold || echo warm; }
hwm_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
size_mb() { awk -v b="$(stat -c %s "$1")" 'BEGIN {printf "%.1f", b / 1048576}'; }
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# idle_cpu SECS PID...: each process's share of one core over SECS seconds, "a / b / c".
idle_cpu() {
    local secs=$1 p before=() out=() hz
    shift
    hz=$(getconf CLK_TCK)
    for p in "$@"; do before+=("$(cpu_ticks "$p")"); done
    sleep "$secs"
    local i=0
    for p in "$@"; do
        out+=("$(awk -v a="${before[$i]}" -v b="$(cpu_ticks "$p")" -v s="$secs" -v hz="$hz" 'BEGIN {printf "%.1f", (b - a) / hz / s * 100}')")
        i=$((i + 1))
    done
    local IFS=/
    echo "${out[*]}" | sed 's|/| / |g'
}
start_cluster() {  # start_cluster NAME
    new_group
    for i in 1 2 3; do start_node "$i" "$1"; done
    wait_quorum
}

echo "bench: ${SIZE_MB} MiB source file"
src="$BENCH_DIR/source.bin"
head -c $((SIZE_MB * 1024 * 1024)) /dev/urandom > "$src"

# --- Large files, encrypted (the default) ---------------------------------
start_cluster enc
t0=$(now); dd if="$src" of="$BENCH_DIR/dd-copy.bin" bs=1M conv=fsync status=none; t1=$(now)
dd_mbs=$(rate "$SIZE_MB" "$t0" "$t1"); rm -f "$BENCH_DIR/dd-copy.bin"
t0=$(now); scs upload "$src" big.bin; t1=$(now)
up_mbs=$(rate "$SIZE_MB" "$t0" "$t1")
state=$(drop_caches)
t0=$(now); dd if="$src" of=/dev/null bs=1M status=none; t1=$(now)
rd_mbs=$(rate "$SIZE_MB" "$t0" "$t1")
drop_caches >/dev/null
t0=$(now); scs download big.bin - > /dev/null; t1=$(now)
down_mbs=$(rate "$SIZE_MB" "$t0" "$t1")
rss="$(hwm_mb "${pids[1]}") / $(hwm_mb "${pids[2]}") / $(hwm_mb "${pids[3]}")"
scs rm big.bin

echo "bench: $SMALL_FILES small files"
cargo build --release -q -p scs-mount --example small_files
small=$("$here/target/release/examples/small_files" "$group" "$key" "$SMALL_FILES" 4096 1)
small8=$("$here/target/release/examples/small_files" "$group" "$key" "$SMALL_FILES" 4096 8)

# --- The mount -----------------------------------------------------------
mount_rows=""
scale_rows=""
stage_rows=""
if [ -e /dev/fuse ] && command -v fusermount3 >/dev/null; then
    echo "bench: the mount"
    local_dir="$BENCH_DIR/local"; mkdir -p "$local_dir" "$mnt"
    mcount=0
    mount_at() {  # mount_at [ARGS]: a fresh foreground mount with an empty cache
        # A new cache dir each time (the bench dir goes at the next run):
        # removing the old one would leave the disk busy for the next phase.
        mcount=$((mcount + 1))
        "$bin/scs-mount" "$mnt" --group "$group" --secret-file "$key" --cache-dir "$BENCH_DIR/mcache-$mcount" --foreground "$@" \
            >>"$BENCH_DIR/mount.log" 2>&1 &
        mount_pid=$!
        local n=0
        until mountpoint -q "$mnt"; do n=$((n + 1)); [ $n -lt 100 ] || { echo "bench: mount failed" >&2; exit 1; }; sleep 0.1; done
    }
    mount_at
    t0=$(now); dd if=/dev/urandom of="$local_dir/w.bin" bs=1M count="$MOUNT_MB" conv=fsync status=none; t1=$(now)
    lw=$(rate "$MOUNT_MB" "$t0" "$t1")
    t0=$(now); dd if="$local_dir/w.bin" of="$mnt/w.bin" bs=1M conv=fsync status=none; t1=$(now)
    mw=$(rate "$MOUNT_MB" "$t0" "$t1")
    unmount; mount_at
    drop_caches >/dev/null
    t0=$(now); dd if="$local_dir/w.bin" of=/dev/null bs=1M status=none; t1=$(now)
    lr=$(rate "$MOUNT_MB" "$t0" "$t1")
    drop_caches >/dev/null
    t0=$(now); dd if="$mnt/w.bin" of=/dev/null bs=1M status=none; t1=$(now)
    mr=$(rate "$MOUNT_MB" "$t0" "$t1")
    mount_rss=$(hwm_mb "$mount_pid")
    small4k=$(head -c 3072 /dev/urandom | base64 -w0)   # 4 KiB of text, held by the shell
    small_ops() {  # small_ops DIR: create, list, read, remove N files; prints four durations
        # Files are written by the shell itself (no process per file), so the
        # figure is the file system's, not fork's.
        local d=$1 t0 t1 t2 t3 t4
        mkdir -p "$d/s"
        t0=$(now); for i in $(seq 1 "$MOUNT_FILES"); do printf '%s' "$small4k" > "$d/s/f$i"; done; t1=$(now)
        ls -l "$d/s" > /dev/null; t2=$(now)
        cat "$d"/s/* > /dev/null; t3=$(now)
        rm -r "$d/s"; t4=$(now)
        echo "$(secs "$t0" "$t1") $(secs "$t1" "$t2") $(secs "$t2" "$t3") $(secs "$t3" "$t4")"
    }
    read -r lc ll lre lrm <<<"$(small_ops "$local_dir")"
    # The disk settles from the local run's removals first (ext4 hands out
    # inodes slowly for a while after many were freed; see below), or the
    # mount's run would pay for them.
    sync; sleep 30
    read -r mc ml mre mrm <<<"$(small_ops "$mnt")"
    unmount
    # The same with --write-back: close returns once the file is durable in
    # the cache dir; then how long until the cluster has all of them. The
    # disk first settles from the removals above (ext4 is slow to hand out
    # inodes for a while after many were freed, which would be charged to
    # this run).
    sync; sleep 30
    # A big file through --write-back streams as without it: the same dd
    # through a write-back and a default mount in turn, three times, the
    # better of each (how fast this disk takes a big write depends on what
    # it wrote before, more than on the mode), the file purged and the
    # disk synced in between. Which goes first alternates: the first dd of
    # all follows the quiet above.
    wbw=0; dfw=0
    cat "$local_dir/w.bin" > /dev/null  # every run reads its source from memory (dropped above)
    better() { echo "$1 $2" | awk '{print ($1 > $2) ? $1 : $2}'; }
    for order in "--write-back default" "default --write-back" "--write-back default"; do
        for args in $order; do
            [ "$args" = default ] && args=""
            mount_at $args
            t0=$(now); dd if="$local_dir/w.bin" of="$mnt/wb.bin" bs=1M conv=fsync status=none; t1=$(now)
            r=$(rate "$MOUNT_MB" "$t0" "$t1")
            echo "bench: dd through a ${args:-default} mount: $r MB/s"
            if [ -n "$args" ]; then wbw=$(better "$wbw" "$r"); else dfw=$(better "$dfw" "$r"); fi
            rm -f "$mnt/wb.bin"
            unmount
            scs trash purge --all > /dev/null
            sync
        done
    done
    mount_at --write-back
    mkdir -p "$mnt/s"
    t0=$(now); for i in $(seq 1 "$MOUNT_FILES"); do printf '%s' "$small4k" > "$mnt/s/f$i"; done; t1=$(now)
    n=0
    until [ "$(scs ls s --json | grep -o '"name"' | wc -l)" -ge "$MOUNT_FILES" ]; do
        n=$((n + 1)); [ $n -lt 600 ] || { echo "bench: written-back files not on the cluster after 60 s" >&2; exit 1; }
        sleep 0.1
    done
    t2=$(now)
    wc_=$(secs "$t0" "$t1"); wup=$(secs "$t0" "$t2")
    t0=$(now); rm -r "$mnt/s"; t1=$(now); wrm=$(secs "$t0" "$t1")
    # What rsync does to each file (write a temporary file, chmod it, set
    # its times, rename it), then rsync -a of a tree of as many 4 KiB files
    # in 10 directories, through this write-back mount; local: the same on
    # the same disk. The mount's time ends when rsync returns; unmounting
    # then waits until the cluster has everything.
    echo "bench: the rsync pattern through --write-back"
    mkdir -p "$mnt/rp" "$local_dir/rp"
    rp_l=$(python3 "$here/scripts/nsops.py" rsync "$local_dir/rp" "$MOUNT_FILES")
    rp_m=$(python3 "$here/scripts/nsops.py" rsync "$mnt/rp" "$MOUNT_FILES")
    rs_src="$BENCH_DIR/rsync-src"; rm -rf "$rs_src" "$local_dir/rp"
    for d in $(seq 1 10); do
        mkdir -p "$rs_src/d$d"
        for i in $(seq 1 $((MOUNT_FILES / 10))); do printf '%s' "$small4k" > "$rs_src/d$d/f$i"; done
    done
    sync
    t0=$(now); rsync -a "$rs_src/" "$local_dir/rs/"; t1=$(now); rs_l=$(secs "$t0" "$t1")
    t0=$(now); rsync -a "$rs_src/" "$mnt/rs/"; t1=$(now); rs_m=$(secs "$t0" "$t1")
    rm -rf "$rs_src" "$local_dir/rs"
    # A directory of MV_FILES files moved, against one file moved: a rename
    # is one change to the cluster whatever is below it. The files go in
    # through this write-back mount; the moves run through a default one.
    echo "bench: mv of a directory of $MV_FILES files"
    mkdir -p "$mnt/big"
    for i in $(seq 1 "$MV_FILES"); do : > "$mnt/big/f$i"; done
    n=0
    until [ "$(scs ls big --json | grep -o '"name"' | wc -l)" -ge "$MV_FILES" ]; do
        n=$((n + 1)); [ $n -lt 1200 ] || { echo "bench: $MV_FILES files not on the cluster after 120 s" >&2; exit 1; }
        sleep 0.1
    done
    unmount; mount_at
    echo x > "$mnt/one"
    mv_times() {  # mv_times A B: five moves back and forth; the median in seconds
        local a=$1 b=$2 t0 t1 k
        for k in 1 2 3 4 5; do
            t0=$(now); mv "$mnt/$a" "$mnt/$b"; t1=$(now); secs "$t0" "$t1"
            local x=$a; a=$b; b=$x
        done | sort -n | sed -n 3p
    }
    mv_dir=$(mv_times big big2)
    mv_one=$(mv_times one one2)
    # Namespace operations one at a time from one process, against the
    # floor for one durable write (pwrite of 128 B + fdatasync, same disk).
    echo "bench: namespace operations, $NSOPS each"
    mkdir -p "$local_dir/ns" "$mnt/ns"
    read -r _ floor_med floor_p99 <<<"$(python3 "$here/scripts/nsops.py" floor "$local_dir" "$NSOPS")"
    declare -A ns_local ns_mount
    while read -r op med p99; do ns_local[$op]="$med $p99"; done < <(python3 "$here/scripts/nsops.py" ops "$local_dir/ns" "$NSOPS")
    scrape "$BENCH_DIR/prom-before"
    while read -r op med p99; do ns_mount[$op]="$med $p99"; done < <(python3 "$here/scripts/nsops.py" ops "$mnt/ns" "$NSOPS")
    scrape "$BENCH_DIR/prom-after"
    stage_rows=$(python3 "$here/scripts/stages.py" "$BENCH_DIR/prom-before" "$BENCH_DIR/prom-after")
    ns_rows=""
    for op in chmod utime rename mkdir rmdir unlink link symlink create write4k; do
        read -r med p99 <<<"${ns_mount[$op]}"
        read -r lmed _ <<<"${ns_local[$op]}"
        case $op in create) aim="median ≤ 4 ×" ;; write4k) aim="median ≤ 0.67 ms (1500 files/s)" ;; *) aim="median ≤ 3 ×, p99 ≤ 10 ×" ;; esac
        ns_rows="$ns_rows
| mount: $op, one at a time | median ${med} ms, p99 ${p99} ms | floor ${floor_med} ms (local fs ${lmed} ms) | median $(ratio "$med" "$floor_med") ×, p99 $(ratio "$p99" "$floor_med") × | $aim |"
    done
    # A directory of 10,000 entries listed through a fresh mount.
    unmount; mount_at
    t0=$(now); ls -l "$mnt/big2" > /dev/null; t1=$(now); ls_big=$(secs "$t0" "$t1")
    rm -rf "$mnt/big2"

    # Concurrent writers of small files, each closing (so storing) one file
    # before the next, against one writer doing the same.
    echo "bench: $WRITERS writers at once"
    writers() {  # writers DIR N: N writers of WRITER_FILES files each, at once; prints seconds
        local d=$1 n=$2 t0 t1 w ws=()
        t0=$(now)
        for w in $(seq 1 "$n"); do
            (mkdir -p "$d/w$w"; for i in $(seq 1 "$WRITER_FILES"); do printf '%s' "$small4k" > "$d/w$w/f$i"; done) &
            ws+=($!)
        done
        for w in "${ws[@]}"; do wait "$w"; done
        t1=$(now)
        secs "$t0" "$t1"
        rm -rf "$d"
    }
    one_writer=$(writers "$mnt/one-writer" 1)
    many_writers=$(writers "$mnt/many-writers" "$WRITERS")
    fps_of() { echo "scale=0; $1 / $2" | bc; }
    one_fps=$(fps_of "$WRITER_FILES" "$one_writer")
    many_fps=$(fps_of "$((WRITERS * WRITER_FILES))" "$many_writers")

    # SCALE_FILES files of 4 KiB in one directory: created, then listed,
    # walked and sized through a fresh mount (against a local directory
    # with a dropped page cache), moved, and removed.
    echo "bench: $SCALE_FILES files in one directory"
    # Not in a subshell: the mount it remounts is this shell's.
    scale_ops() {  # scale_ops DIR [mount]: sets scale_times to create ls find du mv rm seconds
        local d=$1 t0 t1 t2 t3 t4 t5 t6 i created
        mkdir -p "$d/scale"
        t0=$(now); for i in $(seq 1 "$SCALE_FILES"); do printf '%s' "$small4k" > "$d/scale/f$i"; done; t1=$(now)
        created=$(secs "$t0" "$t1")
        if [ "${2:-}" = mount ]; then
            scale_rss="$(rss_mb "${pids[1]}") / $(rss_mb "${pids[2]}") / $(rss_mb "${pids[3]}")"
            scale_index=$(size_mb "$BENCH_DIR/enc-node-1/index.redb")
            scale_journal=$(size_mb "$BENCH_DIR/enc-node-1/journal")
            # The leader's scans of the whole index run while nothing else does.
            sleep 5
            scale_idle=$(idle_cpu 20 "${pids[1]}" "${pids[2]}" "${pids[3]}")
            unmount; mount_at
        else
            drop_caches >/dev/null
        fi
        t1=$(now)
        ls -l "$d/scale" > /dev/null; t2=$(now)
        find "$d/scale" > /dev/null; t3=$(now)
        du -s "$d/scale" > /dev/null; t4=$(now)
        mv "$d/scale" "$d/scale2"; t5=$(now)
        rm -rf "$d/scale2"; t6=$(now)
        scale_times="$created $(secs "$t1" "$t2") $(secs "$t2" "$t3") $(secs "$t3" "$t4") $(secs "$t4" "$t5") $(secs "$t5" "$t6")"
    }
    sync; sleep 10
    scale_ops "$local_dir"
    read -r sc_l sls_l sfind_l sdu_l smv_l srm_l <<<"$scale_times"
    sync; sleep 30
    scale_ops "$mnt" mount
    read -r sc_m sls_m sfind_m sdu_m smv_m srm_m <<<"$scale_times"
    unmount
    fps() { echo "scale=0; $MOUNT_FILES / $1" | bc; }
    sfps() { echo "scale=0; $SCALE_FILES / $1" | bc; }
    scale_rows="
## ${SCALE_FILES} files in one directory

Created through a default mount (4 KiB each, each closed, so stored on a majority, before the next); listed, walked and sized through a fresh mount with an empty cache; then moved and removed. Local: the same on the same disk, the page cache dropped before listing.

| step | mount | local | ratio | aim |
|---|---|---|---|---|
| create | ${sc_m} s ($(sfps "$sc_m") files/s) | ${sc_l} s | $(ratio "$sc_m" "$sc_l") | ≥ 1500 files/s |
| ls -l | ${sls_m} s | ${sls_l} s | $(ratio "$sls_m" "$sls_l") | |
| find | ${sfind_m} s | ${sfind_l} s | $(ratio "$sfind_m" "$sfind_l") | |
| du -s | ${sdu_m} s | ${sdu_l} s | $(ratio "$sdu_m" "$sdu_l") | |
| mv of the directory | ${smv_m} s | ${smv_l} s | | |
| rm -rf | ${srm_m} s ($(sfps "$srm_m") files/s) | ${srm_l} s | $(ratio "$srm_m" "$srm_l") | ≥ 3000 files/s |
| node RSS 1/2/3 with them | ${scale_rss} MiB | | | ≤ 128 MiB |
| node 1's index / journal | ${scale_index} MiB / ${scale_journal} MiB | | | |
| node CPU 1/2/3 with them, no client working (20 s) | ${scale_idle} % of a core | | | |
"
    mount_rows="| mount: ${MOUNT_MB} MiB dd conv=fsync write | ${mw} MB/s | local ${lw} MB/s | $(ratio "$mw" "$lw") | ≥ 0.25 |
| mount --write-back: ${MOUNT_MB} MiB dd conv=fsync write (the better of three, in turn with a default mount) | ${wbw} MB/s | default mount ${dfw} MB/s | $(ratio "$wbw" "$dfw") | ≥ 1 |
| mount: ${MOUNT_MB} MiB cold read | ${mr} MB/s | local ${lr} MB/s | $(ratio "$mr" "$lr") | ≥ 0.5 |
| mount: create ${MOUNT_FILES} × 4 KiB, each closed (so stored) before the next | ${mc} s ($(fps "$mc") files/s) | local ${lc} s | | ≥ 1500 files/s |
| mount: ls -l of them | ${ml} s | local ${ll} s | | |
| mount: read them (cat) | ${mre} s | local ${lre} s | | |
| mount: remove them (rm -r) | ${mrm} s | local ${lrm} s | | |
| mount --write-back: create ${MOUNT_FILES} × 4 KiB, each closed (kept here) before the next | ${wc_} s ($(fps "$wc_") files/s) | local ${lc} s | | ≥ 5000 files/s |
| mount --write-back: all ${MOUNT_FILES} on the cluster, from the first create | ${wup} s ($(fps "$wup") files/s) | | | |
| mount --write-back: remove them (rm -r) | ${wrm} s | local ${lrm} s | | |
| mount --write-back: the rsync pattern (write a temporary 4 KiB file, chmod, set times, rename), ${MOUNT_FILES} files | ${rp_m} files/s | local ${rp_l} files/s | $(ratio "$rp_m" "$rp_l") | ≥ 2000 files/s |
| mount --write-back: rsync -a of ${MOUNT_FILES} × 4 KiB files in 10 directories | ${rs_m} s ($(fps "$rs_m") files/s) | local ${rs_l} s | $(ratio "$rs_l" "$rs_m") | |
| mount: mv of a directory of ${MV_FILES} files (median of 5) | ${mv_dir} s | mv of one file ${mv_one} s | $(ratio "$mv_dir" "$mv_one") | same order |
| mount: peak RSS of scs-mount | ${mount_rss} MiB | | | ≤ 128 MiB |
| mount: ls -l of a directory of ${MV_FILES} entries, fresh mount | ${ls_big} s | | | < 0.2 s |
| mount: ${WRITERS} writers at once, ${WRITER_FILES} × 4 KiB each | ${many_fps} files/s | one writer ${one_fps} files/s | $(ratio "$many_fps" "$one_fps") | ≥ 3 |${ns_rows}"
fi

echo "bench: $FAILOVERS leader kills"
times=()
for k in $(seq 1 "$FAILOVERS"); do
    wait_quorum
    l=$(leader)
    echo "x" > "$BENCH_DIR/probe"
    kill -9 "${pids[$l]}"
    t0=$(now)
    n=0
    until scs upload "$BENCH_DIR/probe" "probe-$k" 2>/dev/null; do
        n=$((n + 1)); [ $n -lt 30 ] || { echo "bench: no upload 30 tries after kill $k" >&2; exit 1; }
    done
    t1=$(now)
    times+=("$(echo "$t1 - $t0" | bc)")
    start_node "$l" enc
    # Let the restarted node catch up and take the lead back before the next kill.
    n=0; until [ "$(leader 2>/dev/null)" = "$l" ] || [ $n -gt 100 ]; do sleep 0.1; n=$((n + 1)); done
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
median=$(echo "$sorted" | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f", (a[NR/2]+a[NR/2+1])/2}')
worst=$(echo "$sorted" | tail -1)
stop_cluster

# --- The same transfers with a plaintext transport, for the cost of encryption.
echo "bench: plaintext transport"
export SCS_PLAINTEXT_TRANSPORT=1
start_cluster plain
t0=$(now); scs upload "$src" big.bin; t1=$(now)
pup_mbs=$(rate "$SIZE_MB" "$t0" "$t1")
drop_caches >/dev/null
t0=$(now); scs download big.bin - > /dev/null; t1=$(now)
pdown_mbs=$(rate "$SIZE_MB" "$t0" "$t1")
stop_cluster
unset SCS_PLAINTEXT_TRANSPORT

echo "bench: the rebalancer's cost to clients"
REB_DIR="$BENCH_DIR/rebalance" "$here/scripts/bench-rebalance.sh" > /dev/null

stamp=$(date -u +%Y-%m-%dT%H:%MZ)
report="$out_dir/latest.md"
cat > "$report" <<MD
# SCS benchmarks — $stamp

Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(df -h "$BENCH_DIR" | awk 'NR==2 {print $1}'); 3 nodes on 127.0.0.1, default timers, release build; every copy and the baselines on the same disk.

| what | SCS | baseline (same run) | ratio | aim |
|---|---|---|---|---|
| upload ${SIZE_MB} MiB (3 durable copies) | ${up_mbs} MB/s | dd conv=fsync ${dd_mbs} MB/s | $(ratio "$up_mbs" "$dd_mbs") | ≥ 0.3 |
| download ${SIZE_MB} MiB (${state} cache) | ${down_mbs} MB/s | local read ${rd_mbs} MB/s | $(ratio "$down_mbs" "$rd_mbs") | ≥ 0.5 |
| peak RSS of nodes 1/2/3 | ${rss} MiB | | | ≤ 64 MiB |
| upload, encrypted vs plaintext transport | ${up_mbs} MB/s | plaintext ${pup_mbs} MB/s | $(ratio "$up_mbs" "$pup_mbs") | ≥ 0.8 |
| download, encrypted vs plaintext transport | ${down_mbs} MB/s | plaintext ${pdown_mbs} MB/s | $(ratio "$down_mbs" "$pdown_mbs") | ≥ 0.8 |
| ${SMALL_FILES} × 4 KiB uploads, one client, sequential | ${small} | | | |
| ${SMALL_FILES} × 4 KiB uploads, one client, 8 at a time | ${small8} | | | |
${mount_rows}
| failover: kill -9 leader → next upload ok (${FAILOVERS} runs) | median ${median} s, worst ${worst} s | | | median < 1 s |
${scale_rows}
MD
if [ -n "$stage_rows" ]; then
    cat >> "$report" <<MD

## Where the namespace operations' time went

From each node's \`/metrics\` before and after the one-at-a-time operations above (leader and followers; a request is counted from its arrival to the last byte of its answer).

| node | what | count | mean ms |
|---|---|---|---|
${stage_rows}
MD
fi
{ echo; sed 's/^### /## /' "$out_dir/rebalance-latest.md"; } >> "$report"
cp "$report" "$out_dir/bench-$stamp.md"
cat "$report"
