# IO stress on Debian's kernel: O_DIRECT writers in a lease cgroup, paced by io.max on the disk under --path (an ext4
# on a loop device here, the VM's root being 9p); the write rate and the read rate measured from the lease cgroup's
# io.stat over 5 s are within +-15 % of the target; tmpfs is refused (no disk to pace); revert removes the workers, the
# cgroup and the files.
# vm-timeout: 300

grep -qw io /sys/fs/cgroup/cgroup.controllers || skip "no io controller in cgroup v2"
modprobe loop 2>/dev/null || true
[ -e /dev/loop-control ] || skip "no loop device support in this kernel"
img=$CASE_TMP/disk.img
truncate -s 400M "$img"
dev=$(losetup --find --show "$img") || skip "losetup failed"
on_exit "losetup -d $dev 2>/dev/null"
mkfs.ext4 -q -F "$dev" || fail "mkfs.ext4 $dev"
mnt=$CASE_TMP/mnt
mkdir -p "$mnt"
mount "$dev" "$mnt" || fail "mount $dev"
on_exit "umount -l $mnt 2>/dev/null"
majmin=$(lsblk -dno MAJ:MIN "$dev" | tr -d ' ')
log "loop disk $dev ($majmin) mounted at $mnt"

start_agent

# iobytes KEY - wbytes= or rbytes= of the loop disk in the lease cgroup's io.stat.
iobytes() {
  awk -v d="$majmin" -v k="$1=" '$1 == d { for (i = 2; i <= NF; i++) if (index($i, k) == 1) print substr($i, length(k) + 1) }' \
    "/sys/fs/cgroup$cg/io.stat"
}
workerfiles() { ls -A "$mnt" | grep -c '^\.chaos-agent-io-' || true; }

# stress_io FLAG KEY - injects `io --FLAG 4MiB/s` (writes) or 3MiB/s (reads), checks io.max, measures the rate of KEY
# from io.stat over 5 s (+-15 %), reverts and checks that no worker, cgroup or file is left.
stress_io() {
  local flag=$1 key=$2 mib=$3 rate id f wpid b0 b1 t0 t1 got
  rate=$((mib << 20))
  id=$(ctl inject io --path "$mnt" "--$flag" "${mib}MiB/s" --ttl 60s) || fail "inject io --$flag exited $?"
  f=$(ctl --json get "$id")
  cg=$(jq -r .target.cgroup <<<"$f")
  wpid=$(jq -r .target.pid <<<"$f")
  log "io --$flag: fault $id, cgroup $cg, worker $wpid, io.max: $(cat "/sys/fs/cgroup$cg/io.max")"
  grep -q "^$majmin .*${key:0:1}bps=$rate" "/sys/fs/cgroup$cg/io.max" || fail "io.max of $cg: $(cat "/sys/fs/cgroup$cg/io.max")"
  # A reader first lays its file down (unthrottled writes), then reads it with O_DIRECT under rbps.
  wait_for '[ "$(iobytes '"$key"')" -gt 0 ] 2>/dev/null' 30 || fail "no $key on $majmin in $cg: $(cat "/sys/fs/cgroup$cg/io.stat")"
  sleep 1
  b0=$(iobytes "$key"); t0=$EPOCHREALTIME
  sleep 5
  b1=$(iobytes "$key"); t1=$EPOCHREALTIME
  got=$(awk -v a="$b0" -v b="$b1" -v s="$t0" -v e="$t1" 'BEGIN { printf "%.0f", (b - a) / (e - s) }')
  log "$key rate $got B/s over 5 s (target $rate): $(awk -v g="$got" -v r="$rate" 'BEGIN { printf "%.1f%%", 100 * g / r }')"
  awk -v g="$got" -v r="$rate" 'BEGIN { d = g / r - 1; if (d < 0) d = -d; exit !(d <= 0.15) }' ||
    fail "$key rate $got B/s not within 15 % of $rate"
  assert_ge "$(workerfiles)" 1 "worker files in $mnt"
  ctl revert "$id" >/dev/null || fail "revert $id"
  wait_for "! kill -0 $wpid 2>/dev/null" 5 || fail "io worker $wpid still exists after revert"
  [ ! -d "/sys/fs/cgroup$cg" ] || fail "cgroup $cg still there after revert"
  assert_eq 0 "$(workerfiles)" "worker files left in $mnt"
}

stress_io write-rate wbytes 4
stress_io read-rate rbytes 3

set +e
out=$(ctl inject io --path /dev/shm --write-rate 1MiB/s --ttl 10s 2>&1); rc=$?
set -e
log "inject io on tmpfs: exit $rc: $out"
assert_eq 3 "$rc" "exit status for a tmpfs path"
