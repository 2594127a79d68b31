#!/usr/bin/env bash
# Runs inside the VM (as root) booted by scripts/vm-test. Runs every tests/vm/cases/*.sh (sorted) matching --case, each
# in its own bash process with lib.sh sourced, its own temp dir and a timeout; writes the results where the host reads
# them:
#   RESULTS/summary.tsv          one line per case: NAME <TAB> PASS|FAIL|SKIP <TAB> SECONDS <TAB> MESSAGE
#   RESULTS/cases/NAME.log       the case's stdout and stderr
#   RESULTS/guest.txt            kernel, uptime at start, cgroup and module facts
#   RESULTS/dmesg.log            the kernel log at the end
#   RESULTS/done                 written last (its absence means the VM died or was killed mid-run)
# Progress lines start with "[vm] " so the host can show them live. Exit 0 when no case failed.
# A case may set its own timeout with a line "# vm-timeout: SECONDS" (default --case-timeout, 180 s).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
results= case_glob='*' case_timeout=180 bin_dir= bin_share= expect_kernel=
while [ $# -gt 0 ]; do
  case "$1" in
    --results) results=$2; shift 2 ;;
    --case) case_glob=$2; shift 2 ;;
    --case-timeout) case_timeout=$2; shift 2 ;;
    --bin-dir) bin_dir=$2; shift 2 ;;
    --bin-share) bin_share=$2; shift 2 ;;
    --expect-kernel) expect_kernel=$2; shift 2 ;;
    *) echo "run-cases.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[ -n "$results" ] || { echo "run-cases.sh: --results DIR is required" >&2; exit 2; }
mkdir -p "$results/cases"
: >"$results/summary.tsv"

export VM_REPO=${here%/tests/vm}
export VM_RESULTS=$results
export CHAOS_BIN=${bin_dir:-$VM_REPO/.build/debug}
export VM_EXPECT_KERNEL=$expect_kernel
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C
# shellcheck source=tests/vm/lib.sh
. "$here/lib.sh"  # for the helpers' syntax check and log(); cases get a fresh copy each
trap - EXIT TERM INT

now() { printf '%s' "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

ip link set lo up 2>/dev/null || true
# The host passes the bin dir as an extra 9p share (see scripts/vm-test); mounted with cache=loose, binaries start
# about 3x faster than from the uncached root share. Falls back to the root share's path.
export CHAOS_BIN_HOST=$CHAOS_BIN
if [ -n "$bin_share" ]; then
  mkdir -p /run/chaos-bin
  if mount -t 9p -o trans=virtio,version=9p2000.L,cache=loose,ro,msize=512000,access=any "$bin_share" /run/chaos-bin; then
    CHAOS_BIN=/run/chaos-bin
  else
    echo "[vm] warning: cannot mount 9p share $bin_share; using $CHAOS_BIN through the root share"
  fi
fi
{
  echo "kernel: $(uname -r)"
  echo "version: $(cat /proc/version)"
  echo "uptime-at-start: $(cut -d' ' -f1 /proc/uptime)"
  echo "cpus: $(nproc)"
  echo "memory: $(awk '/MemTotal/ { print $2 " kB" }' /proc/meminfo)"
  echo "cgroup-fs: $(stat -fc %T /sys/fs/cgroup 2>/dev/null)"
  echo "cgroup-controllers: $(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null)"
  echo "root-mount: $(awk '$2 == "/" { print $1, $3, $4 }' /proc/mounts)"
} >"$results/guest.txt"
echo "[vm] begin kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)s bin=$CHAOS_BIN"

failed=0 ran=0
for case_file in "$here"/cases/*.sh; do
  [ -e "$case_file" ] || continue
  name=$(basename "$case_file" .sh)
  # shellcheck disable=SC2053  # the glob is meant to match
  [[ $name == $case_glob || $name.sh == $case_glob ]] || continue
  ran=$((ran + 1))
  t=$(sed -n 's/^# *vm-timeout: *\([0-9][0-9]*\).*/\1/p' "$case_file" | head -n 1)
  t=${t:-$case_timeout}
  case_tmp=$(mktemp -d "/tmp/vmcase.$name.XXXXXX")
  log_file=$results/cases/$name.log
  echo "[vm] case $name start (timeout ${t}s)"
  start=$(now)
  (
    cd "$case_tmp" || exit 1
    export CASE_TMP=$case_tmp TMPDIR=$case_tmp CASE_NAME=$name
    exec timeout -k 10 "$t" bash -c 'set -euo pipefail; . "$1"; . "$2"' "$name" "$here/lib.sh" "$case_file"
  ) </dev/null >"$log_file" 2>&1
  rc=$?
  secs=$(elapsed "$start")
  msg=
  case $rc in
    0) status=PASS ;;
    77) status=SKIP; msg=$(grep '^SKIP: ' "$log_file" | tail -n 1 | sed 's/^SKIP: //') ;;
    124 | 137) status=FAIL; msg="timed out after ${t}s" ;;
    *) status=FAIL; msg=$(grep '^FAIL: ' "$log_file" | tail -n 1 | sed 's/^FAIL: //'); msg=${msg:-"exit status $rc"} ;;
  esac
  [ $status = FAIL ] && failed=$((failed + 1))
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$secs" "$(printf '%s' "$msg" | tr '\t\n' '  ' | cut -c1-300)" \
    >>"$results/summary.tsv"
  echo "[vm] case $name $status (${secs}s)${msg:+ - $msg}"
  rm -rf "$case_tmp"
done

dmesg >"$results/dmesg.log" 2>&1 || true
echo "uptime-at-end: $(cut -d' ' -f1 /proc/uptime)" >>"$results/guest.txt"
echo "[vm] end ran=$ran failed=$failed uptime=$(cut -d' ' -f1 /proc/uptime)s"
sync
echo ok >"$results/done"
sync
[ "$failed" -eq 0 ]
