# squeeze, pause and kill by cgroup on Debian's kernel: limits read back during the fault and restored exactly after;
# a second squeeze of the same file is refused (exit 3); a frozen cgroup shows "frozen 1" in cgroup.events and its
# busy process stops accumulating CPU time in /proc/PID/stat, then runs again after the thaw; kill --cgroup empties it.
# vm-timeout: 300

grep -qw cpu /sys/fs/cgroup/cgroup.controllers || skip "no cpu controller in cgroup v2"
start_agent

echo "+cpu +memory +pids +io" >/sys/fs/cgroup/cgroup.subtree_control
svc=/sys/fs/cgroup/chaos-vm-svc
mkdir "$svc"
on_exit "echo 0 >$svc/cgroup.freeze 2>/dev/null; echo 1 >$svc/cgroup.kill 2>/dev/null; sleep 0.2; rmdir $svc 2>/dev/null"
# A service-like cgroup with a busy process and a sleeper; some limits already set (they must come back).
echo "50000 100000" >"$svc/cpu.max"
echo 1073741824 >"$svc/memory.max"
bash -c 'echo $$ >'"$svc"'/cgroup.procs; exec bash -c "while :; do :; done"' &
busy=$!
bash -c 'echo $$ >'"$svc"'/cgroup.procs; exec sleep 600' &
sleeper=$!
wait_for "[ \$(wc -l <$svc/cgroup.procs) = 2 ]" 5 || fail "victims not in $svc: $(cat $svc/cgroup.procs)"

snapshot() { for f in cpu.max memory.high memory.max pids.max; do printf '%s=%s ' "$f" "$(cat "$svc/$f")"; done; }
before=$(snapshot)
log "before: $before"

id=$(ctl inject squeeze --cgroup /chaos-vm-svc --cpu-max 20% --memory-high 64MiB --pids-max 30 --ttl 60s) ||
  fail "inject squeeze exited $?"
during=$(snapshot)
log "during: $during"
assert_eq "20000 100000" "$(cat "$svc/cpu.max")" "cpu.max during"
assert_eq 67108864 "$(cat "$svc/memory.high")" "memory.high during"
assert_eq 30 "$(cat "$svc/pids.max")" "pids.max during"
assert_eq 1073741824 "$(cat "$svc/memory.max")" "memory.max untouched"
# The busy loop is now held to 20 % of a CPU.
u0=$(awk '$1 == "usage_usec" { print $2 }' "$svc/cpu.stat"); t0=$EPOCHREALTIME
sleep 3
u1=$(awk '$1 == "usage_usec" { print $2 }' "$svc/cpu.stat"); t1=$EPOCHREALTIME
got=$(awk -v a="$u0" -v b="$u1" -v s="$t0" -v e="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e6 / (e - s) }')
log "squeezed service used $got CPUs (cap 0.20)"
assert_lt "$got" 0.23 "CPU share under --cpu-max 20%"

set +e
out=$(ctl inject squeeze --cgroup /chaos-vm-svc --pids-max 10 --ttl 10s 2>&1); rc=$?
set -e
log "second squeeze of pids.max: exit $rc: $out"
assert_eq 3 "$rc" "exit status of a conflicting squeeze"
assert_eq 30 "$(cat "$svc/pids.max")" "pids.max after the refused squeeze"

ctl revert "$id" >/dev/null || fail "revert $id"
after=$(snapshot)
log "after: $after"
assert_eq "$before" "$after" "limits after revert"

# --- pause --cgroup: cgroup.freeze ---------------------------------------------------------------------------------
cputime() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
id=$(ctl inject pause --cgroup /chaos-vm-svc --ttl 60s) || fail "inject pause --cgroup exited $?"
grep -qx "frozen 1" "$svc/cgroup.events" || fail "cgroup.events: $(cat "$svc/cgroup.events")"
c0=$(cputime "$busy"); sleep 1.5; c1=$(cputime "$busy")
log "frozen: busy loop CPU ticks $c0 -> $c1; state $(proc_state "$busy"); wchan $(cat /proc/$busy/wchan 2>/dev/null)"
assert_eq "$c0" "$c1" "CPU ticks of the busy process while frozen"
ctl revert "$id" >/dev/null || fail "revert $id"
grep -qx "frozen 0" "$svc/cgroup.events" || fail "not thawed: $(cat "$svc/cgroup.events")"
c0=$(cputime "$busy"); sleep 1; c1=$(cputime "$busy")
log "thawed: busy loop CPU ticks $c0 -> $c1"
assert_lt "$c0" "$c1" "CPU ticks after thaw (must grow)"

# --- kill --cgroup: cgroup.kill --------------------------------------------------------------------------------------
ctl inject kill --cgroup /chaos-vm-svc --ttl 10s >/dev/null || fail "inject kill --cgroup exited $?"
wait_for "[ -z \"\$(cat $svc/cgroup.procs)\" ]" 3 || fail "processes left in $svc: $(cat $svc/cgroup.procs)"
wait "$busy" 2>/dev/null || true
wait "$sleeper" 2>/dev/null || true
log "kill --cgroup emptied $svc"
