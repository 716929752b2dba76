#!/bin/bash
# scripts/nsab.sh BIN_A BIN_B [ROUNDS]: namespace operations one at a time
# through a default mount on a local three-node cluster, for two builds
# (directories holding scs-node, scs-mount and scs) in alternating rounds,
# so that a change is measured against the code before it on the same
# machine at the same time. Per round and build: each operation's median
# and p99 (scripts/nsops.py, NSOPS of each) and the CPU each process spent per
# operation (from /proc), then 20 writers of WRITER_FILES 4 KiB files each
# at once and the rsync pattern of 10 times as many (files/s). MOUNT_ARGS
# go to scs-mount (say --write-back). Every process started here is stopped by pid.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
A=$(cd "$1" && pwd); B=$(cd "$2" && pwd)
ROUNDS=${3:-3}
NSOPS=${NSOPS:-300}
WRITER_FILES=${WRITER_FILES:-50}
dir=${NSAB_DIR:-$here/target/nsab}
rm -rf "$dir"; mkdir -p "$dir"
key="$dir/cluster.key"
(umask 077 && head -c 32 /dev/urandom > "$key")
pids=()
mount_pid=""
mnt="$dir/mnt"; mkdir -p "$mnt"

cleanup() {
    if [ -n "$mount_pid" ]; then
        fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -u -z "$mnt" 2>/dev/null || true
        kill "$mount_pid" 2>/dev/null || true
        wait "$mount_pid" 2>/dev/null || true
        mount_pid=""
    fi
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}
trap cleanup EXIT

# CPU seconds (user + system) of a process so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }

run() {  # run BIN_DIR LABEL
    local bin=$1 label=$2 group n i
    group="239.255.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 1)):$((RANDOM % 20000 + 30000))"
    for i in 1 2 3; do
        RUST_LOG=warn "$bin/scs-node" --id "$i" --cluster-size 3 --data-dir "$dir/$label-node-$i" \
            --secret-file "$key" --group "$group" --listen 127.0.0.1:0 >>"$dir/$label-node-$i.log" 2>&1 &
        pids+=($!)
    done
    n=0
    until "$bin/scs" --group "$group" --secret-file "$key" status --json 2>/dev/null | grep -q '"quorum":true'; do
        n=$((n + 1)); [ $n -lt 300 ] || { echo "nsab: no leader after 30 s" >&2; exit 1; }
        sleep 0.1
    done
    "$bin/scs-mount" "$mnt" --group "$group" --secret-file "$key" --cache-dir "$dir/$label-cache" --foreground ${MOUNT_ARGS:-} \
        >>"$dir/mount.log" 2>&1 &
    mount_pid=$!
    n=0
    until mountpoint -q "$mnt"; do n=$((n + 1)); [ $n -lt 100 ] || { echo "nsab: mount failed" >&2; exit 1; }; sleep 0.1; done
    mkdir -p "$mnt/ns"
    local procs=("${pids[@]}" "$mount_pid") before=() after=() ops
    for p in "${procs[@]}"; do before+=("$(cpu "$p")"); done
    ops=$(python3 "$here/scripts/nsops.py" ops "$mnt/ns" "$NSOPS")
    for p in "${procs[@]}"; do after+=("$(cpu "$p")"); done
    # Ten kinds of operation, NSOPS each.
    local total=$((NSOPS * 10)) cpus="" k
    for k in 0 1 2 3; do
        cpus="$cpus $(echo "scale=3; 1000 * (${after[$k]} - ${before[$k]}) / $total" | bc | sed 's/^\./0./')"
    done
    local many pattern
    many=$(python3 "$here/scripts/nsops.py" writers "$mnt/writers" "$WRITER_FILES")
    mkdir -p "$mnt/rsync"
    pattern=$(python3 "$here/scripts/nsops.py" rsync "$mnt/rsync" "$((WRITER_FILES * 10))")
    echo "$label: $(echo "$ops" | awk '{printf "%s %s/%s  ", $1, $2, $3}')| cpu ms/op node1 node2 node3 mount:$cpus | 20 writers: $many files/s | rsync pattern: $pattern files/s"
    cleanup
}

for r in $(seq 1 "$ROUNDS"); do
    run "$A" A
    run "$B" B
done
