#!/bin/sh
# Installs the Debian packages SCS needs for its tests, the demo and the
# mount, when they are missing: fuse3 (fusermount3), iproute2 (ip, tc) and
# nftables (nft) for the namespace fault tests, systemd (systemd-analyze) for
# the unit checks, and the everyday tools the mount tests run through the
# mount: rsync, attr (getfattr, setfattr), git, python3 with venv. Needs
# root to install; says what to do otherwise.
set -eu
missing=""
command -v fusermount3 >/dev/null 2>&1 || missing="$missing fuse3"
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
command -v tc >/dev/null 2>&1 || missing="$missing iproute2"
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || missing="$missing nftables"
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
command -v rsync >/dev/null 2>&1 || missing="$missing rsync"
command -v getfattr >/dev/null 2>&1 || missing="$missing attr"
command -v git >/dev/null 2>&1 || missing="$missing git"
command -v python3 >/dev/null 2>&1 || missing="$missing python3 python3-venv"
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$missing python3-venv"
[ -z "$missing" ] && exit 0
missing=$(echo $missing | tr ' ' '\n' | sort -u | tr '\n' ' ')
if [ "$(id -u)" -ne 0 ]; then
    echo "scs: missing Debian packages:$missing; run: sudo apt-get install -y $missing" >&2
    exit 1
fi
echo "scs: installing $missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends $missing >/dev/null 2>&1 || {
    apt-get update >/dev/null 2>&1
    apt-get install -y --no-install-recommends $missing >/dev/null
}
