#!/usr/bin/env bash
# Builds (once) the minimal Debian 12 root file system that VM case 40-systemd boots with systemd-nspawn, so that the
# unit runs under a real systemd as PID 1 on the VM's kernel. Runs on the host, before the VM boots (scripts/vm-test).
# Prints the rootfs path on stdout and exits 0; on failure (no network, no debootstrap) prints the reason on stdout
# and exits 1, so the caller can hand it to the case, which then skips with that reason.
#
# Usage: scripts/lib/vm-rootfs.sh [DIR]     (default $CHAOS_VM_ROOTFS, else REPO/.cache/rootfs-bookworm; git-ignored)
# A finished tree carries DIR/.chaos-rootfs-ready holding the recipe below; a tree without it (an interrupted build)
# or with another recipe is rebuilt. The build goes to DIR.tmp and is renamed at the end, so a half-built tree is never
# used. Needs root, debootstrap and Debian's mirror (apt's proxy settings apply).
set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dir=${1:-${CHAOS_VM_ROOTFS:-$REPO/.cache/rootfs-bookworm}}
mirror=${CHAOS_VM_MIRROR:-http://deb.debian.org/debian}
pkgs=systemd,systemd-sysv,dbus,procps,iproute2,python3
# Bump the version when the tweaks below change: the cached tree is rebuilt.
recipe="v1 bookworm minbase $pkgs"

if [ ! -f "$dir/.chaos-rootfs-ready" ] || [ "$(cat "$dir/.chaos-rootfs-ready")" != "$recipe" ]; then
  command -v debootstrap >/dev/null 2>&1 || { echo "debootstrap is not installed"; exit 1; }
  [ "$(id -u)" = 0 ] || { echo "building the rootfs needs root"; exit 1; }
  tmp=$dir.tmp
  rm -rf "$tmp" "$dir"
  mkdir -p "$(dirname "$dir")"
  log=$(mktemp "${TMPDIR:-/tmp}/chaos-vm-rootfs.XXXXXX")
  echo "vm-rootfs: debootstrap bookworm into $dir (a few minutes, once; log $log)" >&2
  if ! debootstrap --variant=minbase --include="$pkgs" bookworm "$tmp" "$mirror" >"$log" 2>&1; then
    echo "debootstrap failed (no network?): $(grep -E '^E:|^W:' "$log" | tail -n 1)"
    rm -rf "$tmp"
    exit 1
  fi
  rm -rf "$tmp/var/cache/apt/archives"/*.deb "$tmp/var/lib/apt/lists"/* 2>/dev/null || true
  echo "$recipe" >"$tmp/.chaos-rootfs-ready"
  mv "$tmp" "$dir"
  rm -f "$log"
  echo "vm-rootfs: built $dir ($(du -sh "$dir" | cut -f1))" >&2
fi

# --- Tweaks, applied every time (cheap, idempotent): a quick, quiet boot to multi-user with nothing that waits on
# hardware, a TTY or the network, and nothing the test does not need (every unit costs seconds under TCG).
echo chaos-sd >"$dir/etc/hostname"
: >"$dir/etc/machine-id"   # empty: systemd picks a transient one at each boot
ln -sf /lib/systemd/system/multi-user.target "$dir/etc/systemd/system/default.target"
for u in console-getty.service getty@.service serial-getty@.service getty.target systemd-networkd.service \
  systemd-networkd.socket systemd-networkd-wait-online.service systemd-timesyncd.service apt-daily.timer \
  apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
  systemd-tmpfiles-clean.timer systemd-logind.service systemd-hostnamed.service systemd-journal-flush.service \
  systemd-update-utmp.service systemd-update-utmp-runlevel.service dev-hugepages.mount dev-mqueue.mount \
  sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount sys-fs-fuse-connections.mount \
  systemd-sysctl.service systemd-remount-fs.service systemd-binfmt.service systemd-pcrphase.service \
  systemd-pcrphase-sysinit.service systemd-user-sessions.service systemd-random-seed.service \
  systemd-machine-id-commit.service; do
  ln -sf /dev/null "$dir/etc/systemd/system/$u"
done
# Mount points for what the case binds in: the Swift runtime and the agent binaries.
mkdir -p "$dir/opt/swift" "$dir/opt/chaos-bin"
echo "$dir"
