# The daemon and CLI end to end on the real kernel: a pause fault stops a process, lists as active, reverts itself when
# its TTL runs out; PID 1 is refused (exit 3).
# vm-timeout: 240

start_agent

sleep 600 &
pid=$!
on_exit "{ kill -KILL $pid; wait $pid; } 2>/dev/null"
wait_for "[ \"\$(proc_state $pid)\" = S ]" 10 || fail "sleep $pid never reached state S (state $(proc_state "$pid"))"

# 3 s when the CLI is quick; longer when each CLI call is slow (TCG), so the "active" checks cannot race the expiry.
ttl=$(ttl_for 3)
log "pause TTL: ${ttl}s"
injected=$EPOCHREALTIME
id=$(ctl inject pause --pid "$pid" --ttl "${ttl}s") || fail "inject pause exited $?"
log "inject took $(awk -v a="$injected" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')s"
[ -n "$id" ] || fail "inject printed no fault id"
[[ $id != *[[:space:]]* ]] || fail "inject printed more than an id: '$id'"
log "fault id: $id"

assert_eq T "$(proc_state "$pid")" "state of paused pid $pid"

list=$(ctl --json list) || fail "ctl --json list exited $?"
state=$(json_faults <<<"$list" | jq -r --arg id "$id" '.[] | select(.id == $id) | .state') ||
  fail "cannot parse list output: $list"
assert_eq active "$state" "state of $id in 'ctl --json list'"

# The agent resumes the process by itself when the TTL runs out.
wait_for "[ \"\$(proc_state $pid)\" != T ]" $((ttl + 12)) || fail "pid $pid still stopped 12 s after its ${ttl}s TTL"
resumed=$(awk -v a="$injected" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
log "process resumed ${resumed}s after inject"
assert_ge "$resumed" "$(awk -v t="$ttl" 'BEGIN { print t - 0.1 }')" "seconds from inject until resume (TTL ${ttl}s)"
st=$(proc_state "$pid")
[[ $st == S || $st == R ]] || fail "pid $pid in state '$st' after revert, expected S or R"

wait_for "[ \"\$(ctl --json get $id | jq -r .state)\" = reverted ]" 15 ||
  fail "fault $id not 'reverted': $(ctl --json get "$id")"

# PID 1 is refused with exit status 3.
set +e
out=$(ctl inject pause --pid 1 --ttl 3s 2>&1)
rc=$?
set -e
log "inject pause --pid 1: exit $rc: $out"
assert_eq 3 "$rc" "exit status of 'inject pause --pid 1'"
[ "$(proc_state 1)" != T ] || fail "pid 1 was stopped"
