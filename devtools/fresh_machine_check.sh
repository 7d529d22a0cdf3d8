#!/usr/bin/env bash
# The README's test command on a fresh machine: a new Debian bookworm root (debootstrap) with
# only what the development machines start with (Python 3.11, Java 17 with Maven, Node.js, git),
# a clean clone of this repository inside it, and `bash .ci/run` there. Everything else (Redis,
# PostgreSQL, Chromium, Kafka's jars, the Python packages) must be installed by the suite itself.
#
#   sudo devtools/fresh_machine_check.sh [ROOT_DIR]     # default /srv/streamwise-fresh-<time>
#
# Needs root, debootstrap (installed with apt-get if missing) and the network to Debian, PyPI
# and Maven Central. The host's CA bundles are copied in (networks that inspect TLS need them).
# The mounts it makes are undone on exit; the root directory is left for inspection.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
root=${1:-/srv/streamwise-fresh-$(date +%Y%m%d%H%M%S)}
if [ "$(id -u)" != 0 ]; then echo "run as root" >&2; exit 2; fi
command -v debootstrap >/dev/null || apt-get install -y -q debootstrap
if [ -e "$root" ]; then echo "$root exists: a fresh machine needs a new directory" >&2; exit 2; fi

echo "building $root …" >&2
debootstrap --variant=minbase \
  --include=python3,python3-venv,git,ca-certificates,openjdk-17-jdk-headless,maven,nodejs,procps \
  bookworm "$root" http://deb.debian.org/debian >"$root.debootstrap.log" 2>&1 \
  || { tail -20 "$root.debootstrap.log" >&2; exit 1; }

cp /etc/resolv.conf "$root/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
[ -d /usr/local/share/ca-certificates ] && cp -r /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
[ -f /etc/ssl/certs/java/cacerts ] && cp /etc/ssl/certs/java/cacerts "$root/etc/ssl/certs/java/cacerts"
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"

mounted=()
cleanup() {
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -R "${mounted[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
mount -t proc proc "$root/proc" && mounted+=("$root/proc")
mount --rbind /sys "$root/sys" && mounted+=("$root/sys")
mount --bind /dev "$root/dev" && mounted+=("$root/dev")
mount --bind /dev/pts "$root/dev/pts" && mounted+=("$root/dev/pts")
mount -t tmpfs -o size=4g tmpfs "$root/dev/shm" && mounted+=("$root/dev/shm")

git clone -q "$repo" "$root/root/streamwise"
echo "running the README's test command in $root (a clean clone of $(git -C "$repo" rev-parse --short HEAD)) …" >&2
chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DEFAULT_TIMEOUT=180 \
  bash -c 'cd /root/streamwise && bash .ci/run'
