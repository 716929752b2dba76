#!/bin/bash
# make bench: SCS figures against baselines measured in the same run, on the
# same disk (BENCH_DIR, default target/bench). Results: bench-results/latest.md
# (and a dated copy). Needs release binaries (make build) and, for cold reads,
# root (to drop the page cache).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/target/release"
BENCH_DIR=${BENCH_DIR:-$here/target/bench}
SIZE_MB=${SIZE_MB:-1024}
SMALL_FILES=${SMALL_FILES:-2000}
FAILOVERS=${FAILOVERS:-20}
out_dir="$here/bench-results"
mkdir -p "$out_dir"
rm -rf "$BENCH_DIR"; mkdir -p "$BENCH_DIR"
group="239.255.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 1)):$((RANDOM % 20000 + 30000))"
key="$BENCH_DIR/cluster.key"
(umask 077 && head -c 32 /dev/urandom > "$key")
scs() { "$bin/scs" --group "$group" --secret-file "$key" "$@"; }
declare -A pids

start_node() {
    local i=$1
    RUST_LOG=warn "$bin/scs-node" --id "$i" --cluster-size 3 --data-dir "$BENCH_DIR/node-$i" \
        --secret-file "$key" --group "$group" --listen 127.0.0.1:0 >>"$BENCH_DIR/node-$i.log" 2>&1 &
    pids[$i]=$!
}
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
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
ratio() { echo "scale=2; $1 / $2" | bc; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null && echo cold || echo warm; }
hwm_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

for i in 1 2 3; do start_node "$i"; done
wait_quorum

echo "bench: ${SIZE_MB} MiB source file"
src="$BENCH_DIR/source.bin"
head -c $((SIZE_MB * 1024 * 1024)) /dev/urandom > "$src"

# Baseline: dd of the same file to the same disk with fsync.
t0=$(now); dd if="$src" of="$BENCH_DIR/dd-copy.bin" bs=1M conv=fsync status=none; t1=$(now)
dd_mbs=$(rate "$SIZE_MB" "$t0" "$t1"); rm -f "$BENCH_DIR/dd-copy.bin"

t0=$(now); scs upload "$src" big.bin; t1=$(now)
up_mbs=$(rate "$SIZE_MB" "$t0" "$t1")

# Baseline: a cold read of a local file of the same size.
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
    start_node "$l"
    # Let the restarted node catch up and take the lead back before the next kill.
    n=0; until [ "$(leader 2>/dev/null)" = "$l" ] || [ $n -gt 100 ]; do sleep 0.1; n=$((n + 1)); done
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
median=$(echo "$sorted" | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f", (a[NR/2]+a[NR/2+1])/2}')
worst=$(echo "$sorted" | tail -1)

stamp=$(date -u +%Y-%m-%dT%H:%MZ)
report="$out_dir/latest.md"
cat > "$report" <<MD
# SCS benchmarks — $stamp

Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(df -h "$BENCH_DIR" | awk 'NR==2 {print $1}'); 3 nodes on 127.0.0.1, default timers, release build.

| what | SCS | baseline (same run) | ratio | aim |
|---|---|---|---|---|
| upload ${SIZE_MB} MiB (3 durable copies) | ${up_mbs} MB/s | dd conv=fsync ${dd_mbs} MB/s | $(ratio "$up_mbs" "$dd_mbs") | ≥ 0.3 |
| download ${SIZE_MB} MiB (${state} cache) | ${down_mbs} MB/s | local read ${rd_mbs} MB/s | $(ratio "$down_mbs" "$rd_mbs") | ≥ 0.5 |
| peak RSS of nodes 1/2/3 | ${rss} MiB | | | ≤ 64 MiB |
| ${SMALL_FILES} × 4 KiB uploads, one client, sequential | ${small} | | | |
| ${SMALL_FILES} × 4 KiB uploads, one client, 8 at a time | ${small8} | | | |
| failover: kill -9 leader → next upload ok (${FAILOVERS} runs) | median ${median} s, worst ${worst} s | | | median < 1 s |
MD
cp "$report" "$out_dir/bench-$stamp.md"
cat "$report"
