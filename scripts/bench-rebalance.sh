#!/bin/bash
# The rebalancer's cost to clients (issue 12): client writes and reads while
# a fourth node is filled with copies, against the same work on the same
# cluster before the node joined and after it was filled. Run by
# scripts/bench.sh (make bench); alone it writes bench-results/rebalance-latest.md.
# Needs release binaries (make build) and root: each node gets a disk of its
# own (an ext4 image on a loop device), as placement counts each node's free
# room. Every process started here is stopped by pid, and every disk
# unmounted, on exit; every packet stays on 127.0.0.1.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/target/release"
dir=${REB_DIR:-$here/target/bench-rebalance}
FILES=${REB_FILES:-600}          # preloaded files of 1 MiB, on every node
DISK_MB=${REB_DISK_MB:-3072}     # each node's disk
RATE=${REB_RATE:-33554432}       # rebalance_bytes_per_sec (the default)
PROBE_FILES=${REB_PROBE_FILES:-200}
PROBE_MB=${REB_PROBE_MB:-32}
out="$here/bench-results/rebalance-latest.md"

if [ "$(id -u)" != 0 ]; then
    echo "bench-rebalance: needs root (a loop-mounted disk per node); skipped" >&2
    exit 0
fi
for m in "$dir"/disk-*; do umount "$m" 2>/dev/null || true; done
rm -rf "$dir"; mkdir -p "$dir"
key="$dir/cluster.key"
(umask 077 && head -c 32 /dev/urandom > "$key")
group="239.255.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 1)):$((RANDOM % 20000 + 30000))"
declare -A pids
mounted=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    for m in "${mounted[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    [ "${BENCH_KEEP:-}" = 1 ] || rm -f "$dir"/disk-*.img
}
trap cleanup EXIT

scs() { "$bin/scs" --group "$group" --secret-file "$key" "$@"; }
now() { date +%s.%N; }
start_node() {
    local i=$1
    truncate -s "${DISK_MB}M" "$dir/disk-$i.img"
    mkfs.ext4 -q -F "$dir/disk-$i.img"
    mkdir -p "$dir/disk-$i"
    mount -o loop "$dir/disk-$i.img" "$dir/disk-$i"
    mounted+=("$dir/disk-$i")
    echo "rebalance_bytes_per_sec = $RATE" > "$dir/node-$i.toml"
    RUST_LOG=${REB_LOG:-warn} "$bin/scs-node" --config "$dir/node-$i.toml" --id "$i" --cluster-size 3 \
        --data-dir "$dir/disk-$i/data" --secret-file "$key" --group "$group" --listen 127.0.0.1:0 \
        >>"$dir/node-$i.log" 2>&1 &
    pids[$i]=$!
}
status_field() {  # status_field PYTHON-EXPR over the status object s
    scs status --json 2>/dev/null | python3 -c "import json, sys; s = json.load(sys.stdin); print($1)"
}
wait_until() {  # wait_until WHAT SECONDS PYTHON-EXPR
    local n=0 limit=$(($2 * 10))
    until [ "$(status_field "$3" 2>/dev/null)" = "True" ]; do
        n=$((n + 1)); [ $n -lt $limit ] || { echo "bench-rebalance: $1 not within $2 s" >&2; scs status >&2 || true; exit 1; }
        sleep 0.1
    done
}
small_files() {  # small_files COUNT SIZE CONCURRENCY DIR -> files/s
    "$bin/examples/small_files" "$group" "$key" "$1" "$2" "$3" "$4" | sed -n 's/files_per_sec=\([0-9]*\).*/\1/p'
}
probe_src="$dir/probe.bin"
head -c $((PROBE_MB << 20)) /dev/urandom > "$probe_src"
round=0
# One measure: small writes (4 KiB, 4 at a time), then a large upload and
# its download. Prints "files/s upload-MB/s download-MB/s".
measure() {
    round=$((round + 1))
    local fps t0 t1 t2
    fps=$(small_files "$PROBE_FILES" 4096 4 "probe-$round")
    t0=$(now); scs upload "$probe_src" "probe-$round.bin"; t1=$(now)
    scs download "probe-$round.bin" - > /dev/null; t2=$(now)
    echo "$fps $(echo "scale=1; $PROBE_MB / ($t1 - $t0)" | bc) $(echo "scale=1; $PROBE_MB / ($t2 - $t1)" | bc)"
}
ratio() { echo "scale=2; $1 / $2" | bc | sed 's/^\./0./'; }
# measure three times; the median of each figure.
measure3() {
    { measure; measure; measure; } | python3 -c '
import sys, statistics
rows = [[float(x) for x in line.split()] for line in sys.stdin]
print(" ".join(str(round(statistics.median(col), 1)) for col in zip(*rows)))'
}

cargo build --release -q -p scs-mount --example small_files
for i in 1 2 3; do start_node "$i"; done
wait_until "a leader" 30 "s['quorum']"
echo "bench-rebalance: $FILES × 1 MiB on 3 nodes"
small_files "$FILES" 1048576 4 data > /dev/null
before=$(measure3)

echo "bench-rebalance: node 4 joins"
start_node 4
wait_until "node 4 as a candidate" 30 "any(n['id'] == 4 and n['state'] == 'candidate' for n in s['nodes'])"
t_add=$(now)
scs node add 4
wait_until "the rebalancer to start" 30 "s['moving']['files'] > 0"
during=$(measure3)
still=$(status_field "s['moving']['files']")
wait_until "the members to balance" 600 \
    "s['moving']['files'] == 0 and all(n['files'] > 0 and n['wanted'] == 0 for n in s['nodes'])"
t_done=$(now)
balance=$(status_field "' / '.join(str(n['files']) for n in s['nodes'])")
moved_mb=$(status_field "round(next(n['bytes'] for n in s['nodes'] if n['id'] == 4) / 1048576)")
after=$(measure3)

read -r b_fps b_up b_down <<< "$before"
read -r d_fps d_up d_down <<< "$during"
read -r a_fps a_up a_down <<< "$after"
secs=$(echo "scale=1; ($t_done - $t_add) / 1" | bc)
inside=$([ "$still" -gt 0 ] && echo "yes, $still copies were still to move when it ended" || echo "no: the rebalance ended first, make REB_FILES larger")
cat > "$out" <<MD
### The rebalancer's cost to clients — $(date -u +%Y-%m-%dT%H:%MZ)

3 nodes hold ${FILES} × 1 MiB files, each node on a ${DISK_MB} MiB disk of its own (ext4 on a loop device); node 4 joins with \`scs node add\` and the rebalancer moves copies to it at \`rebalance_bytes_per_sec\` = $((RATE >> 20)) MiB/s. The same client work runs before the join, while copies move, and after the members are balanced: ${PROBE_FILES} × 4 KiB uploads (4 at a time), then a ${PROBE_MB} MiB upload and its download; each three times, the median shown. The rebalance took ${secs} s (from \`node add\` until the members were balanced at ${balance} files each; node 4 received ${moved_mb} MiB). Measured while copies moved: ${inside}.

| client work | before the join | while copies move | after | while / after | aim |
|---|---|---|---|---|---|
| 4 KiB uploads | ${b_fps} files/s | ${d_fps} files/s | ${a_fps} files/s | $(ratio "$d_fps" "$a_fps") | ≥ 0.8 |
| ${PROBE_MB} MiB upload | ${b_up} MB/s | ${d_up} MB/s | ${a_up} MB/s | $(ratio "$d_up" "$a_up") | ≥ 0.8 |
| ${PROBE_MB} MiB download | ${b_down} MB/s | ${d_down} MB/s | ${a_down} MB/s | $(ratio "$d_down" "$a_down") | ≥ 0.8 |
MD
cat "$out"
