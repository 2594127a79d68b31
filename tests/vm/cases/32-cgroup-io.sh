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

rate=$((4 << 20))
id=$(ctl inject io --path "$mnt" --write-rate 4MiB/s --ttl 60s) || fail "inject io exited $?"
f=$(ctl --json get "$id")
cg=$(jq -r .target.cgroup <<<"$f")
wpid=$(jq -r .target.pid <<<"$f")
log "io fault $id: cgroup $cg, worker $wpid, io.max: $(cat "/sys/fs/cgroup$cg/io.max")"
grep -q "^$majmin .*wbps=$rate" "/sys/fs/cgroup$cg/io.max" || fail "io.max of $cg: $(cat "/sys/fs/cgroup$cg/io.max")"
wbytes() { awk -v d="$majmin" '$1 == d { for (i = 2; i <= NF; i++) if ($i ~ /^wbytes=/) { sub(/wbytes=/, "", $i); print $i } }' "/sys/fs/cgroup$cg/io.stat"; }
wait_for '[ -n "$(wbytes)" ]' 10 || fail "no writes on $majmin in $cg: $(cat "/sys/fs/cgroup$cg/io.stat")"
sleep 1
b0=$(wbytes); t0=$EPOCHREALTIME
sleep 5
b1=$(wbytes); t1=$EPOCHREALTIME
got=$(awk -v a="$b0" -v b="$b1" -v s="$t0" -v e="$t1" 'BEGIN { printf "%.0f", (b - a) / (e - s) }')
log "write rate $got B/s over 5 s (target $rate): $(awk -v g="$got" -v r="$rate" 'BEGIN { printf "%.1f%%", 100 * g / r }')"
awk -v g="$got" -v r="$rate" 'BEGIN { d = g / r - 1; if (d < 0) d = -d; exit !(d <= 0.15) }' ||
  fail "write rate $got B/s not within 15 % of $rate"
files=$(ls -A "$mnt" | grep -c '^\.chaos-agent-io-' || true)
assert_ge "$files" 1 "worker files in $mnt"
ctl revert "$id" >/dev/null || fail "revert $id"
wait_for "! kill -0 $wpid 2>/dev/null" 5 || fail "io worker $wpid still exists after revert"
[ ! -d "/sys/fs/cgroup$cg" ] || fail "cgroup $cg still there after revert"
assert_eq 0 "$(ls -A "$mnt" | grep -c '^\.chaos-agent-io-' || true)" "worker files left in $mnt"

# Reads: the reader lays its file down once (unthrottled writes), then reads it with O_DIRECT under rbps.
id=$(ctl inject io --path "$mnt" --read-rate 3MiB/s --ttl 60s) || fail "inject io --read-rate exited $?"
f=$(ctl --json get "$id")
cg=$(jq -r .target.cgroup <<<"$f")
rrate=$((3 << 20))
grep -q "^$majmin .*rbps=$rrate" "/sys/fs/cgroup$cg/io.max" || fail "io.max of $cg: $(cat "/sys/fs/cgroup$cg/io.max")"
rbytes() { awk -v d="$majmin" '$1 == d { for (i = 2; i <= NF; i++) if ($i ~ /^rbytes=/) { sub(/rbytes=/, "", $i); print $i } }' "/sys/fs/cgroup$cg/io.stat"; }
wait_for '[ "$(rbytes)" -gt 0 ] 2>/dev/null' 30 || fail "no reads on $majmin in $cg: $(cat "/sys/fs/cgroup$cg/io.stat")"
sleep 1
b0=$(rbytes); t0=$EPOCHREALTIME
sleep 5
b1=$(rbytes); t1=$EPOCHREALTIME
got=$(awk -v a="$b0" -v b="$b1" -v s="$t0" -v e="$t1" 'BEGIN { printf "%.0f", (b - a) / (e - s) }')
log "read rate $got B/s over 5 s (target $rrate): $(awk -v g="$got" -v r="$rrate" 'BEGIN { printf "%.1f%%", 100 * g / r }')"
awk -v g="$got" -v r="$rrate" 'BEGIN { d = g / r - 1; if (d < 0) d = -d; exit !(d <= 0.15) }' ||
  fail "read rate $got B/s not within 15 % of $rrate"
ctl revert "$id" >/dev/null || fail "revert $id"
assert_eq 0 "$(ls -A "$mnt" | grep -c '^\.chaos-agent-io-' || true)" "reader files left in $mnt"

set +e
out=$(ctl inject io --path /dev/shm --write-rate 1MiB/s --ttl 10s 2>&1); rc=$?
set -e
log "inject io on tmpfs: exit $rc: $out"
assert_eq 3 "$rc" "exit status for a tmpfs path"
