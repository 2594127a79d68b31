# The VM runs Debian's kernel and has what the real-kernel tests need: netem with a measurable effect, cgroup v2 with
# the cpu/memory/io/pids controllers usable in a child cgroup, flower and ifb.
# vm-timeout: 180

# --- the kernel ---
release=$(uname -r)
log "kernel: $release"
[[ $release == *-amd64 ]] || fail "not a Debian amd64 kernel: $release"
grep -q 'Debian' /proc/version || fail "/proc/version does not mention Debian: $(cat /proc/version)"
[ -z "${VM_EXPECT_KERNEL:-}" ] || assert_eq "$VM_EXPECT_KERNEL" "$release" "kernel release"
[ -d "/lib/modules/$release/kernel" ] || fail "no modules for $release under /lib/modules"

# ping_rtt [PING ARGS...] - prints "min avg max" in ms for pings to 127.0.0.1
ping_rtt() {
  local out
  out=$(ping -n -q -c 5 -i 0.2 -W 5 "$@" 127.0.0.1) || fail "ping 127.0.0.1 failed: $out"
  awk -F'[ /=]+' '/^(rtt|round-trip)/ { print $(NF-4), $(NF-3), $(NF-2) }' <<<"$out"
}

# --- netem: 50 ms each way on lo => RTT >= 100 ms ---
ip link set lo up
modprobe sch_netem || fail "modprobe sch_netem failed"
read -r bmin bavg bmax < <(ping_rtt)
log "baseline lo RTT min/avg/max: $bmin/$bavg/$bmax ms"
assert_lt "$bavg" 50 "baseline RTT (ms)"
tc qdisc add dev lo root netem delay 50ms || fail "tc qdisc add netem failed"
on_exit 'tc qdisc del dev lo root 2>/dev/null'
grep -q 'netem.*delay 50' <<<"$(tc qdisc show dev lo)" || fail "netem not shown: $(tc qdisc show dev lo)"
read -r nmin navg nmax < <(ping_rtt)
log "netem lo RTT min/avg/max: $nmin/$navg/$nmax ms"
assert_ge "$nmin" 100 "min RTT with 50ms netem each way (ms)"
tc qdisc del dev lo root || fail "tc qdisc del failed"
if grep -q netem <<<"$(tc qdisc show dev lo)"; then fail "netem still on lo after delete"; fi
read -r amin aavg amax < <(ping_rtt)
log "after removal lo RTT min/avg/max: $amin/$aavg/$amax ms"
assert_lt "$aavg" 50 "RTT after removing netem (ms)"

# --- cgroup v2 with controllers ---
if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
  log "cgroup2 not mounted at /sys/fs/cgroup; mounting it"
  mount -t cgroup2 none /sys/fs/cgroup || fail "cannot mount cgroup2"
fi
controllers=$(cat /sys/fs/cgroup/cgroup.controllers)
log "cgroup.controllers: $controllers"
for c in cpu memory io pids; do
  [[ " $controllers " == *" $c "* ]] || fail "controller $c missing from cgroup.controllers ($controllers)"
done
echo '+cpu +memory +io +pids' >/sys/fs/cgroup/cgroup.subtree_control || fail "cannot enable controllers in subtree_control"
cg=/sys/fs/cgroup/vmtest-$$
mkdir "$cg"
on_exit "rmdir $cg 2>/dev/null"
child=$(cat "$cg/cgroup.controllers")
log "child cgroup controllers: $child"
for c in cpu memory io pids; do
  [[ " $child " == *" $c "* ]] || fail "controller $c not delegated to a child cgroup ($child)"
done
for f in cpu.max memory.max memory.high io.max pids.max; do [ -e "$cg/$f" ] || fail "$cg/$f missing"; done
echo '50000 100000' >"$cg/cpu.max"
assert_eq '50000 100000' "$(cat "$cg/cpu.max")" "cpu.max"
rmdir "$cg"

# --- flower and ifb ---
modprobe cls_flower || fail "modprobe cls_flower failed"
modprobe ifb || fail "modprobe ifb failed"
grep -qw '^cls_flower' /proc/modules || fail "cls_flower not in /proc/modules"
grep -qw '^ifb' /proc/modules || fail "ifb not in /proc/modules"
ip link add vmtest-ifb type ifb || fail "cannot create an ifb device"
on_exit 'ip link del vmtest-ifb 2>/dev/null'
ip link del vmtest-ifb
tc qdisc add dev lo clsact || fail "cannot add clsact to lo"
on_exit 'tc qdisc del dev lo clsact 2>/dev/null'
tc filter add dev lo ingress protocol ip flower ip_proto tcp dst_port 9 action pass ||
  fail "cannot add a flower filter"
grep -q flower <<<"$(tc filter show dev lo ingress)" || fail "flower filter not shown: $(tc filter show dev lo ingress)"
tc qdisc del dev lo clsact
log "netem, cgroup v2 (cpu memory io pids), cls_flower and ifb all work"
