#!/usr/bin/env bash
# Installs what chaos-agent needs on a fresh Debian 12 machine. Idempotent and quiet when all is present.
# Usage: scripts/lib/deps.sh [build|test|vm|bench]...   (build is always implied)
set -euo pipefail
want_pkgs=(libmnl-dev libcap-dev pkg-config iproute2 procps util-linux)
want_py=()
for layer in "$@"; do
  case "$layer" in
    build) ;;
    test) want_pkgs+=(systemd python3 curl openssl); want_py+=(pytest:pytest prometheus_client:prometheus-client hypothesis:hypothesis) ;;
    vm) want_pkgs+=(qemu-system-x86 linux-image-amd64 busybox-static kmod iputils-ping python3 python3-venv jq debootstrap systemd-container) ;;
    bench) want_pkgs+=(python3 stress-ng openssl) ;;
    *) echo "deps.sh: unknown layer '$layer'" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${want_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  stamp=/var/lib/apt/periodic/chaos-agent-update-stamp
  if [ ! -e "$stamp" ] || [ -n "$(find "$stamp" -mmin +360 2>/dev/null)" ]; then
    apt-get update -qq >&2
    mkdir -p "$(dirname "$stamp")"; touch "$stamp"
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
# Python modules the host tests import (module:package), from PyPI through pip.
for m in "${want_py[@]}"; do
  python3 -c "import ${m%%:*}" 2>/dev/null || { echo "deps: pip installing ${m#*:}" >&2; python3 -m pip install -q "${m#*:}" >&2; }
done
