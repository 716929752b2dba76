#!/bin/sh
# make demo / make demo-stop: three SCS nodes on this machine and a mount.
#   demo.sh start   start nodes 1-3 (127.0.0.1:7781-7783) and mount $MOUNTPOINT
#   demo.sh stop    unmount and stop exactly the processes start started
# Data stays in $DEMO_DIR (rm -rf it to start afresh).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/target/release"
DEMO_DIR=${DEMO_DIR:-$HOME/.local/share/scs-demo}
MOUNTPOINT=${MOUNTPOINT:-$HOME/scs}
if [ "$(id -u)" -eq 0 ]; then key=/etc/scs/cluster.key; else key=$HOME/.config/scs/cluster.key; fi

start() {
    mkdir -p "$DEMO_DIR"
    for i in 1 2 3; do
        if [ -f "$DEMO_DIR/node-$i.pid" ] && kill -0 "$(cat "$DEMO_DIR/node-$i.pid")" 2>/dev/null; then
            echo "demo: node $i is already running (pid $(cat "$DEMO_DIR/node-$i.pid")); make demo-stop first" >&2
            exit 1
        fi
    done
    if [ ! -f "$key" ]; then
        mkdir -p "$(dirname "$key")"
        (umask 077 && head -c 32 /dev/urandom > "$key")
        echo "demo: created the cluster key $key"
    fi
    for i in 1 2 3; do
        RUST_LOG=info nohup "$bin/scs-node" --id "$i" --cluster-size 3 \
            --data-dir "$DEMO_DIR/node-$i" --secret-file "$key" \
            >>"$DEMO_DIR/node-$i.log" 2>&1 &
        echo $! >"$DEMO_DIR/node-$i.pid"
    done
    printf 'demo: waiting for a leader'
    n=0
    until "$bin/scs" --secret-file "$key" status --json 2>/dev/null | grep -q '"quorum":true'; do
        n=$((n + 1))
        if [ $n -gt 40 ]; then
            echo; echo "demo: the cluster did not elect a leader in 20 s; see $DEMO_DIR/node-*.log" >&2
            exit 1
        fi
        printf '.'
        sleep 0.5
    done
    echo
    "$bin/scs" --secret-file "$key" status
    if [ -x "$bin/scs-mount" ]; then
        # After a crash the mountpoint is a dead mount mkdir cannot stat;
        # scs-mount clears it (and says so if the directory is truly missing).
        mkdir -p "$MOUNTPOINT" 2>/dev/null || true
        if mountpoint -q "$MOUNTPOINT"; then
            echo "demo: $MOUNTPOINT is already mounted"
        else
            # shellcheck disable=SC2086 # SCS_MOUNT_FLAGS is a list of flags
            "$bin/scs-mount" "$MOUNTPOINT" --secret-file "$key" --cache-dir "$DEMO_DIR/cache" ${SCS_MOUNT_FLAGS:-}
            echo "$MOUNTPOINT" >"$DEMO_DIR/mountpoint"
            echo "demo: mounted the cluster at $MOUNTPOINT"
        fi
    fi
    cat <<MSG

Try:
  cp /etc/hostname $MOUNTPOINT/           # upload through the mount
  ls -l $MOUNTPOINT                       # view the directory
  $bin/scs ls                  # the same through the command line
  $bin/scs upload README.md docs/
  $bin/scs download docs/README.md -
  $bin/scs status              # who leads, files per node
  kill -9 \$(cat $DEMO_DIR/node-3.pid)   # kill the leader: node 2 takes over in < 1 s
Many small files? make demo-stop; make demo SCS_MOUNT_FLAGS=--write-back
Logs: $DEMO_DIR/node-*.log     Stop: make demo-stop
MSG
}

stop() {
    if [ -f "$DEMO_DIR/mountpoint" ]; then
        mp=$(cat "$DEMO_DIR/mountpoint")
        # Also a dead mount (its scs-mount crashed), which mountpoint(1) does not see.
        if fusermount3 -u "$mp" 2>/dev/null || fusermount3 -u -z "$mp" 2>/dev/null; then
            echo "demo: unmounted $mp"
        fi
        rm -f "$DEMO_DIR/mountpoint"
    fi
    for i in 1 2 3; do
        f="$DEMO_DIR/node-$i.pid"
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        if kill "$pid" 2>/dev/null; then
            n=0
            while kill -0 "$pid" 2>/dev/null && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
            kill -9 "$pid" 2>/dev/null || true
            echo "demo: stopped node $i (pid $pid)"
        fi
        rm -f "$f"
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
