# A wall-clock step (NTP, `date -s`, a clock fault) changes no lease's real length: deadlines run on CLOCK_BOOTTIME.
# Stepped back an hour, a 12 s pause still ends ~12 s after inject (not an hour later); stepped forward an hour, a
# 30 s pause does not end at once. The VM has its own clock, so stepping it touches nothing outside.
# vm-timeout: 240

start_agent
restore_clock() { date -s "@$(( $(date +%s) + ${shift_back:-0} ))" >/dev/null; }
on_exit restore_clock

sleep 600 &
pid=$!
on_exit "{ kill -KILL $pid; wait $pid; } 2>/dev/null"
wait_for "[ \"\$(proc_state $pid)\" = S ]" 10 || fail "sleep $pid never reached state S"

# --- back: without the fix the deadline would be an hour away in wall time
t0=$(awk '{ print $1 }' /proc/uptime)
id=$(ctl inject pause --pid "$pid" --ttl 12s) || fail "inject pause exited $?"
assert_eq T "$(proc_state "$pid")" "state of paused pid $pid"
date -s "@$(( $(date +%s) - 3600 ))" >/dev/null; shift_back=3600
wait_for "[ \"\$(proc_state $pid)\" != T ]" 40 || fail "a 12 s pause still holds 40 s later after the clock stepped back 1 h"
t1=$(awk '{ print $1 }' /proc/uptime)
took=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
log "clock stepped back 1 h: the 12 s pause ended after ${took} s of real (boot) time"
assert_ge "$took" 11.9 "seconds of real time the 12 s pause lasted"
date -s "@$(( $(date +%s) + 3600 ))" >/dev/null; shift_back=0

# --- forward: without the fix the fault would be reverted at once
id=$(ctl inject pause --pid "$pid" --ttl 30s) || fail "inject pause exited $?"
date -s "@$(( $(date +%s) + 3600 ))" >/dev/null; shift_back=-3600
# A second, short fault makes the scheduler wake (and look at every deadline) while the first still has ~25 s.
sleep 600 &
pid2=$!
on_exit "{ kill -KILL $pid2; wait $pid2; } 2>/dev/null"
wait_for "[ \"\$(proc_state $pid2)\" = S ]" 10 || fail "sleep $pid2 never reached state S"
ctl inject pause --pid "$pid2" --ttl 2s >/dev/null || fail "inject the short pause exited $?"
wait_for "[ \"\$(proc_state $pid2)\" != T ]" 20 || fail "the 2 s pause on $pid2 did not end"
assert_eq T "$(proc_state "$pid")" "state of the 30 s pause after the clock jumped forward 1 h and the scheduler woke"
assert_eq active "$(ctl --json get "$id" | jq -r .state)" "state of the 30 s pause after the forward step"
ctl revert "$id" >/dev/null || fail "revert $id"
wait_for "[ \"\$(proc_state $pid)\" != T ]" 10 || fail "pid $pid still stopped after revert"
log "clock stepped forward 1 h: the 30 s pause stayed active until reverted"
